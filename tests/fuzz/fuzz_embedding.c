/*
 * fuzz_embedding.c - libFuzzer harness for textual-inversion embeddings (loader/embedding.c) and
 * their placement in prompts (tokenizer/prompt.c): any bytes as an embedding .safetensors file,
 * read with emb_read. A file it refuses must say why; one it accepts must hold 1..75 vectors of
 * finite values in one tensor or the clip_l/clip_g pair, be checked against the widths of SD 1.x,
 * SD 2.x and SDXL without contradiction, and, used as the name "emb" in a prompt with emphasis
 * and a near-full window, be placed whole in one window with the fragment's weight (every vector
 * where the parser says, none past the window's 75 token places).
 * Seeds: small embeddings of every form and a few broken ones (tests/fuzz/make-corpus.py).
 */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "loader/embedding.h"
#include "tokenizer/prompt.h"

static sdg_tokenizer *tok;
static char *prompt;        // 70 words, then "emb (emb:1.5) emb", so placement crosses a window
static int32_t name_ids[8];
static int n_name_ids;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char *path = g_build_filename(fuzz_reference_dir(), "vocab", "bpe_simple_vocab_16e6.txt.gz",
                                  NULL);
    sdg_error err;
    tok = sdg_tokenizer_load(path, &err);
    if (!tok) {
        fprintf(stderr, "fuzz_embedding: %s\n", err.message);
        abort();
    }
    g_free(path);
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    sdg_tokenizer_encode(tok, "emb", ids, NULL);
    CHECK(ids->len >= 1 && ids->len <= G_N_ELEMENTS(name_ids));
    n_name_ids = (int)ids->len;
    memcpy(name_ids, ids->data, ids->len * sizeof(int32_t));
    g_array_free(ids, TRUE);
    GString *s = g_string_new(NULL);
    for (int i = 0; i < 70; i++)
        g_string_append(s, "cat ");
    g_string_append(s, "emb (emb:1.5) emb");
    prompt = g_string_free(s, FALSE);
    return 0;
}

static sdg_status fuzz_resolve(void *user, int i, const float **rows, int *n_rows, int *width,
                               sdg_error *err)
{
    (void)err;
    const emb_file *e = user;
    CHECK(i == 0);
    *rows = emb_vectors(e, 0);
    *n_rows = e->n_vectors;
    *width = e->width[0];
    return SDG_OK;
}

// The parser places the embedding three times, whole, each within one window.
static void check_placement(const emb_file *e)
{
    const int32_t *ids[1] = { name_ids };
    sdg_prompt_dict dict = { 1, ids, &n_name_ids, fuzz_resolve, (void *)e };
    sdg_prompt p;
    sdg_error err;
    CHECK(sdg_prompt_parse_dict(tok, prompt, 0, 0, &dict, &p, &err) == SDG_OK);
    CHECK(p.rows != NULL);
    const float *first = emb_vectors(e, 0);
    int placed = 0;
    for (int w = 0; w < p.n_windows; w++) {
        const float *const *r = p.rows + (size_t)w * SDG_TOKENIZER_CTX;
        const float *wt = p.weights + (size_t)w * SDG_TOKENIZER_CTX;
        CHECK(r[0] == NULL && r[SDG_TOKENIZER_CTX - 1] == NULL);   // BOS, EOS or padding
        for (int t = 1; t < SDG_TOKENIZER_CTX - 1; t++) {
            if (r[t] != first)
                continue;
            // A whole embedding starts here: n vectors in order, one weight.
            CHECK(t + e->n_vectors <= SDG_TOKENIZER_CTX - 1);
            for (int v = 0; v < e->n_vectors; v++) {
                CHECK(r[t + v] == first + (size_t)v * e->width[0]);
                CHECK(wt[t + v] == wt[t] && (wt[t] == 1.0f || wt[t] == 1.5f));
                CHECK(p.ids[(size_t)w * SDG_TOKENIZER_CTX + t + v] == 0);
            }
            placed++;
            t += e->n_vectors - 1;
        }
    }
    CHECK(placed == 3);
    sdg_prompt_clear(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    const void *parts[1] = { data };
    fuzz_memfile(path, parts, &size, 1, 1);
    emb_file e;
    sdg_error err;
    sdg_status st = emb_read(path, &e, &err);
    if (st != SDG_OK) {
        CHECK(err.status == st && err.message[0] && e.n_vectors == 0 && !e.vec[0] && !e.vec[1]);
        return 0;
    }
    CHECK(e.n_vectors >= 1 && e.n_vectors <= EMB_MAX_VECTORS);
    CHECK(e.n_parts == 1 || e.n_parts == 2);
    for (int i = 0; i < e.n_parts; i++) {
        CHECK(e.width[i] >= 1 && e.width[i] <= EMB_MAX_WIDTH && e.vec[i]);
        for (size_t k = 0; k < (size_t)e.n_vectors * e.width[i]; k++)
            CHECK(isfinite(e.vec[i][k]));
    }
    static const int sd1[1] = { 768 }, sd2[1] = { 1024 }, xl[2] = { 768, 1280 };
    sdg_status a = emb_check(&e, path, sd1, 1, &err);
    sdg_status b = emb_check(&e, path, sd2, 1, &err);
    sdg_status c = emb_check(&e, path, xl, 2, &err);
    CHECK(a == SDG_OK || a == SDG_ERR_SHAPE);
    CHECK(!(a == SDG_OK && b == SDG_OK) && !(a == SDG_OK && c == SDG_OK));
    CHECK((c == SDG_OK) == (e.n_parts == 2 && e.width[0] == 768 && e.width[1] == 1280));
    CHECK(emb_check(&e, path, e.width, e.n_parts, &err) == SDG_OK);
    check_placement(&e);
    emb_clear(&e);
    return 0;
}
