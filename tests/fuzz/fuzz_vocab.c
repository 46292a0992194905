/*
 * fuzz_vocab.c - libFuzzer harness for the CLIP vocabulary formats (tokenizer/tokenizer.c): the
 * first input byte picks the format, the rest is the file(s):
 *   even: an OpenAI merges file (bpe_simple_vocab_16e6.txt: "#version" line, then merges);
 *   odd:  Hugging Face vocab.json, a NUL byte, then merges.txt.
 * When the vocabulary loads, a few texts are encoded (plain, emphasis-free, long, non-ASCII) and
 * every id must name a vocabulary entry. Files go to a private temporary folder (the loader finds
 * merges.txt beside vocab.json by name, so an in-memory file cannot stand in).
 * Seeds: a cut-down OpenAI file and the default model's vocab.json + merges.txt (make-corpus.py).
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "tokenizer/tokenizer.h"

static char *dir, *openai_path, *json_path, *merges_path;

static void remove_dir(void)
{
    g_unlink(openai_path);
    g_unlink(json_path);
    g_unlink(merges_path);
    g_rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    dir = g_dir_make_tmp("sdg-fuzz-vocab-XXXXXX", NULL);
    CHECK(dir);
    openai_path = g_build_filename(dir, "bpe_simple_vocab_16e6.txt", NULL);
    json_path = g_build_filename(dir, "vocab.json", NULL);
    merges_path = g_build_filename(dir, "merges.txt", NULL);
    atexit(remove_dir);
    return 0;
}

static void put(const char *path, const uint8_t *data, size_t n)
{
    CHECK(g_file_set_contents(path, (const char *)data, (gssize)n, NULL));
}

static const char *const texts[] = {
    "a photograph of an astronaut riding a horse",
    "",
    "   Hello,   WORLD!!! 1234567 don't can't &amp; \xe2\x80\x9cquoted\xe2\x80\x9d",
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80 caf\xc3\xa9 \xef\xac\x81",
    ("a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a "
     "a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a a"),
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *path;
    if (data[0] % 2 == 0) {
        g_unlink(json_path);
        g_unlink(merges_path);
        put(openai_path, data + 1, size - 1);
        path = openai_path;
    } else {
        g_unlink(openai_path);
        const uint8_t *nul = memchr(data + 1, 0, size - 1);
        size_t a = nul ? (size_t)(nul - (data + 1)) : size - 1;
        put(json_path, data + 1, a);
        put(merges_path, nul ? nul + 1 : data + size, nul ? size - 1 - a - 1 : 0);
        path = json_path;
    }
    sdg_error err;
    sdg_tokenizer *tok = sdg_tokenizer_load(path, &err);
    if (!tok) {
        CHECK(err.status != SDG_OK && err.message[0]);
        return 0;
    }
    int vocab = sdg_tokenizer_vocab_size(tok);
    CHECK(vocab > 0);
    CHECK(sdg_tokenizer_token(tok, sdg_tokenizer_bos(tok)) != NULL);
    CHECK(sdg_tokenizer_token(tok, sdg_tokenizer_eos(tok)) != NULL);
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    for (size_t k = 0; k < G_N_ELEMENTS(texts); k++) {
        g_array_set_size(ids, 0);
        int n = sdg_tokenizer_encode(tok, texts[k], ids, &err);
        CHECK(n == (int)ids->len);
        for (guint i = 0; i < ids->len; i++) {
            int32_t id = g_array_index(ids, int32_t, i);
            CHECK(id >= 0 && id < vocab && sdg_tokenizer_token(tok, id) != NULL);
        }
        int32_t win[SDG_TOKENIZER_CTX];
        CHECK(sdg_tokenizer_tokenize77(tok, texts[k], sdg_tokenizer_eos(tok), win, &err) == n);
    }
    g_array_free(ids, TRUE);
    sdg_tokenizer_free(tok);
    return 0;
}
