/*
 * fuzz_prompt.c - libFuzzer harness for the prompt syntax (tokenizer/prompt.c and the text
 * normalisation of tokenizer.c) with CLIP's real vocabulary: emphasis "(a:1.3)", "(a)", "[a]",
 * escapes "\(", "BREAK", windows of 77, and invalid UTF-8 (refused with SDG_ERR_INVALID_ARG). The
 * first byte caps the windows (0 = no cap), the rest is the prompt (up to its first NUL). Every
 * window must be BOS + ids + EOS + padding with ids inside the vocabulary, and every weight
 * finite (zero and negative weights are allowed, as in A1111).
 */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "tokenizer/prompt.h"

static sdg_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char *path = g_build_filename(fuzz_reference_dir(), "vocab", "bpe_simple_vocab_16e6.txt.gz",
                                  NULL);
    sdg_error err;
    tok = sdg_tokenizer_load(path, &err);
    if (!tok) {
        fprintf(stderr, "fuzz_prompt: %s\n", err.message);
        abort();
    }
    g_free(path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int max_windows = data[0] % 5;
    char *text = g_strndup((const char *)data + 1, size - 1);
    int32_t eos = sdg_tokenizer_eos(tok), bos = sdg_tokenizer_bos(tok);
    int vocab = sdg_tokenizer_vocab_size(tok);
    sdg_prompt p;
    sdg_error err;
    sdg_status st = sdg_prompt_parse(tok, text, eos, max_windows, &p, &err);
    bool utf8 = g_utf8_validate(text, -1, NULL);
    CHECK((st == SDG_OK) == utf8);
    if (st == SDG_OK) {
        CHECK(p.n_windows >= 1 && (max_windows == 0 || p.n_windows <= max_windows));
        for (int w = 0; w < p.n_windows; w++) {
            const int32_t *ids = p.ids + (size_t)w * SDG_TOKENIZER_CTX;
            const float *wt = p.weights + (size_t)w * SDG_TOKENIZER_CTX;
            CHECK(ids[0] == bos);
            int t = 1;
            for (; t < SDG_TOKENIZER_CTX && ids[t] != eos; t++)
                CHECK(ids[t] >= 0 && ids[t] < vocab && ids[t] != bos);
            CHECK(t < SDG_TOKENIZER_CTX);
            for (; t < SDG_TOKENIZER_CTX; t++)
                CHECK(ids[t] == eos);
            for (t = 0; t < SDG_TOKENIZER_CTX; t++)
                CHECK(isfinite(wt[t]));
        }
        sdg_prompt_clear(&p);
    }
    int32_t ids77[SDG_TOKENIZER_CTX];
    int n = sdg_tokenizer_tokenize77(tok, text, eos, ids77, &err);
    CHECK((n >= 0) == utf8);
    g_free(text);
    return 0;
}
