/*
 * test-embedding.c - textual-inversion embeddings: the file format (loader/embedding.c), where
 * the parser puts a name's vectors (A1111's tokenize_line: whole in one window, the fragment's
 * weight), and proof on the tiny models that the vectors are used exactly: an embedding whose
 * vectors are the token embeddings of "red fox" gives bit for bit the conditioning of the words
 * "red fox", alone, emphasised, across a window boundary, in the negative prompt, and for SDXL
 * through both text encoders (clip_l, clip_g). No golden exists for embeddings; this identity is
 * the reference.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "golden.h"
#include "loader/embedding.h"
#include "pipeline/pipeline.h"
#include "sdg.h"
#include "tokenizer/prompt.h"

#define CTX SDG_TOKENIZER_CTX
#define TINY "golden/tiny-sd1.safetensors"
#define SDXL "golden/tiny-sdxl.safetensors"
#define SD2 "golden/tiny-sd2.safetensors"
#define VOCAB "vocab/bpe_simple_vocab_16e6.txt.gz"
#define SD1_TOK "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"
#define XL_TOK_L "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"
#define XL_TOK_G "conditioner.embedders.1.model.token_embedding.weight"
#define SD2_TOK "cond_stage_model.model.token_embedding.weight"

static char *vocab_path;
static sdg_tokenizer *tok;

// Writes one F32 tensor (or two: name2 non-NULL) to dir/file.
static char *write_emb(const char *dir, const char *file, const char *name, int rows, int width,
                       const float *data, const char *name2, int width2, const float *data2)
{
    char *path = g_build_filename(dir, file, NULL);
    st_write_tensor t[2] = {
        { name, ST_F32, 2, { rows, width }, data },
        { name2, ST_F32, 2, { rows, width2 }, data2 },
    };
    sdg_error err;
    if (st_write(path, t, name2 ? 2 : 1, NULL, &err) != SDG_OK)
        g_error("%s", err.message);
    return path;
}

static float *ramp(int n, float scale)
{
    float *v = g_new(float, n);
    for (int i = 0; i < n; i++)
        v[i] = scale * (float)((i % 13) - 6);
    return v;
}

// ---------------------------------------------------------------------------------------------
// Files

static void expect_read(const char *path, sdg_status want, const char *needle)
{
    emb_file e;
    sdg_error err;
    sdg_status st = emb_read(path, &e, &err);
    if (st != SDG_OK)
        printf("# %s\n", err.message);
    g_assert_cmpint(st, ==, want);
    if (want != SDG_OK) {
        g_assert_nonnull(strstr(err.message, path));
        if (needle)
            g_assert_nonnull(strstr(err.message, needle));
        g_assert_cmpint(e.n_vectors, ==, 0);
        g_assert_null(e.vec[0]);
    }
    emb_clear(&e);
}

static void test_file_formats(void)
{
    char *dir = golden_tmpdir("emb-files");
    float *v = ramp(76 * 64, 0.01f);
    sdg_error err;
    emb_file e;

    // A1111's SD 1.x file: emb_params [n, width]; a 1-D tensor is one vector; F16 is read too.
    char *p = write_emb(dir, "a.safetensors", "emb_params", 3, 64, v, NULL, 0, NULL);
    g_assert_cmpint(emb_read(p, &e, &err), ==, SDG_OK);
    g_assert_cmpint(e.n_vectors, ==, 3);
    g_assert_cmpint(e.n_parts, ==, 1);
    g_assert_cmpint(e.width[0], ==, 64);
    g_assert_cmpmem(e.vec[0], 3 * 64 * sizeof(float), v, 3 * 64 * sizeof(float));
    int w64 = 64, w2[2] = { 32, 48 };
    g_assert_cmpint(emb_check(&e, p, &w64, 1, &err), ==, SDG_OK);
    g_assert_cmpint(emb_check(&e, p, w2, 2, &err), ==, SDG_ERR_SHAPE);
    printf("# %s\n", err.message);
    g_assert_nonnull(strstr(err.message, "64 wide"));
    g_assert_nonnull(strstr(err.message, "clip_l 32 + clip_g 48"));
    emb_clear(&e);
    g_free(p);

    p = g_build_filename(dir, "one.safetensors", NULL);
    st_write_tensor one = { "string_to_param.*", ST_F16, 1, { 64 }, v };
    g_assert_cmpint(st_write(p, &one, 1, NULL, &err), ==, SDG_OK);
    g_assert_cmpint(emb_read(p, &e, &err), ==, SDG_OK);
    g_assert_cmpint(e.n_vectors, ==, 1);
    g_assert_cmpfloat(e.vec[0][1], ==, sdg__f16_to_f32(sdg__f32_to_f16(v[1])));
    emb_clear(&e);
    g_free(p);

    // The SDXL pair.
    p = write_emb(dir, "xl.safetensors", "clip_g", 2, 48, v, "clip_l", 32, v);
    g_assert_cmpint(emb_read(p, &e, &err), ==, SDG_OK);
    g_assert_cmpint(e.n_parts, ==, 2);
    g_assert_cmpint(e.width[0], ==, 32);   // clip_l first: text encoder 0
    g_assert_cmpint(e.width[1], ==, 48);
    g_assert_cmpint(emb_check(&e, p, w2, 2, &err), ==, SDG_OK);
    g_assert_cmpint(emb_check(&e, p, &w64, 1, &err), ==, SDG_ERR_SHAPE);
    printf("# %s\n", err.message);
    emb_clear(&e);
    g_free(p);

    // Bad files: a sentence each, naming the file, and nothing held.
    float *nan = ramp(2 * 64, 1.0f);
    nan[70] = NAN;
    p = write_emb(dir, "nan.safetensors", "emb_params", 2, 64, nan, NULL, 0, NULL);
    expect_read(p, SDG_ERR_FORMAT, "NaN");
    g_free(p);
    p = write_emb(dir, "zero.safetensors", "emb_params", 0, 64, v, NULL, 0, NULL);
    expect_read(p, SDG_ERR_SHAPE, "no vectors");
    g_free(p);
    p = write_emb(dir, "many.safetensors", "emb_params", 76, 64, v, NULL, 0, NULL);
    expect_read(p, SDG_ERR_SHAPE, "76 vectors");
    g_free(p);
    p = write_emb(dir, "two.safetensors", "a", 1, 64, v, "b", 64, v);
    expect_read(p, SDG_ERR_FORMAT, "2 tensors");
    g_free(p);
    p = write_emb(dir, "unequal.safetensors", "clip_l", 2, 32, v, NULL, 0, NULL);
    g_free(p);
    {
        p = g_build_filename(dir, "unequal.safetensors", NULL);
        st_write_tensor t[2] = { { "clip_l", ST_F32, 2, { 2, 32 }, v },
                                 { "clip_g", ST_F32, 2, { 3, 48 }, v } };
        g_assert_cmpint(st_write(p, t, 2, NULL, &err), ==, SDG_OK);
        expect_read(p, SDG_ERR_SHAPE, "clip_l has 2 vectors but clip_g 3");
        g_free(p);
    }
    {
        p = g_build_filename(dir, "cube.safetensors", NULL);
        st_write_tensor t = { "emb_params", ST_F32, 3, { 1, 2, 32 }, v };
        g_assert_cmpint(st_write(p, &t, 1, NULL, &err), ==, SDG_OK);
        expect_read(p, SDG_ERR_SHAPE, "3 dimensions");
        g_free(p);
        p = g_build_filename(dir, "ints.safetensors", NULL);
        int32_t ints[4] = { 1, 2, 3, 4 };
        st_write_tensor ti = { "emb_params", ST_I32, 2, { 1, 4 }, ints };
        g_assert_cmpint(st_write(p, &ti, 1, NULL, &err), ==, SDG_OK);
        expect_read(p, SDG_ERR_FORMAT, "I32");
        g_free(p);
    }
    p = g_build_filename(dir, "corrupt.safetensors", NULL);
    g_assert_true(g_file_set_contents(p, "\x10\0\0\0\0\0\0\0{\"emb_params\":", 22, NULL));
    expect_read(p, SDG_ERR_FORMAT, NULL);
    g_free(p);
    p = g_build_filename(dir, "easynegative.pt", NULL);
    g_assert_true(g_file_set_contents(p, "PK\x03\x04", 4, NULL));
    expect_read(p, SDG_ERR_UNSUPPORTED, ".safetensors");
    g_free(p);
    p = g_build_filename(dir, "absent.safetensors", NULL);
    expect_read(p, SDG_ERR_IO, NULL);
    g_free(p);

    g_free(v);
    g_free(nan);
    golden_tmpdir_remove(dir);
}

// ---------------------------------------------------------------------------------------------
// The parser, with a dictionary of its own

typedef struct fake_dict {
    int width;
    int n_rows[4];
    float rows[4][75 * 2];
    int resolved[4];
    sdg_status fail;       // resolve answers this (when not SDG_OK)
} fake_dict;

static sdg_status fake_resolve(void *user, int i, const float **rows, int *n_rows, int *width,
                               sdg_error *err)
{
    fake_dict *f = user;
    if (f->fail != SDG_OK)
        return sdg__fail(err, f->fail, "fake embedding %d refused", i);
    f->resolved[i]++;
    *rows = f->rows[i];
    *n_rows = f->n_rows[i];
    *width = f->width;
    return SDG_OK;
}

// names: up to 4 texts; n_rows their vector counts.
typedef struct dict_holder {
    sdg_prompt_dict dict;
    fake_dict fake;
    int32_t *ids[4];
    int n_ids[4];
} dict_holder;

static void dict_make(dict_holder *h, const char *const *names, const int *n_rows, int n)
{
    memset(h, 0, sizeof *h);
    h->fake.width = 2;
    for (int i = 0; i < n; i++) {
        GArray *a = g_array_new(FALSE, FALSE, sizeof(int32_t));
        g_assert_cmpint(sdg_tokenizer_encode(tok, names[i], a, NULL), >, 0);
        h->n_ids[i] = (int)a->len;
        h->ids[i] = (int32_t *)(void *)g_array_free(a, FALSE);
        h->fake.n_rows[i] = n_rows[i];
        for (int k = 0; k < 75 * 2; k++)
            h->fake.rows[i][k] = (float)(100 * i + k);
    }
    h->dict = (sdg_prompt_dict){ n, (const int32_t *const *)h->ids, h->n_ids, fake_resolve,
                                 &h->fake };
}

static void dict_free(dict_holder *h)
{
    for (int i = 0; i < 4; i++)
        g_free(h->ids[i]);
}

static int32_t id_of(const char *word)
{
    GArray *a = g_array_new(FALSE, FALSE, sizeof(int32_t));
    g_assert_cmpint(sdg_tokenizer_encode(tok, word, a, NULL), ==, 1);
    int32_t id = g_array_index(a, int32_t, 0);
    g_array_free(a, TRUE);
    return id;
}

static void test_parse(void)
{
    const char *names[] = { "rfx", "red", "red fox" };
    int n_rows[] = { 2, 1, 3 };
    dict_holder h;
    dict_make(&h, names, n_rows, 3);
    sdg_prompt p;
    sdg_error err;
    int32_t eos = sdg_tokenizer_eos(tok);

    // "a rfx in snow": BOS a [rfx 0] [rfx 1] in snow EOS; ids 0 at the vectors, weights 1.
    g_assert_cmpint(sdg_prompt_parse_dict(tok, "a rfx in snow", eos, 0, &h.dict, &p, &err), ==,
                    SDG_OK);
    g_assert_cmpint(p.n_windows, ==, 1);
    g_assert_nonnull(p.rows);
    g_assert_cmpint(p.ids[1], ==, id_of("a"));
    g_assert_cmpint(p.ids[2], ==, 0);
    g_assert_cmpint(p.ids[3], ==, 0);
    g_assert_cmpint(p.ids[4], ==, id_of("in"));
    g_assert_cmpint(p.ids[6], ==, eos);
    g_assert_true(p.rows[2] == h.fake.rows[0] && p.rows[3] == h.fake.rows[0] + 2);
    for (int t = 0; t < CTX; t++) {
        g_assert_cmpfloat(p.weights[t], ==, 1.0f);
        if (t != 2 && t != 3)
            g_assert_null(p.rows[t]);
    }
    sdg_prompt_clear(&p);

    // The longest name wins ("red fox" over "red"); a name inside a word is no match ("reddish",
    // "rfxy" tokenize differently), nor one that BPE splits otherwise; no name: no rows array.
    g_assert_cmpint(sdg_prompt_parse_dict(tok, "red fox, red", eos, 0, &h.dict, &p, &err), ==,
                    SDG_OK);
    g_assert_true(p.rows[1] == h.fake.rows[2] && p.rows[3] == h.fake.rows[2] + 4);
    g_assert_cmpint(p.ids[4], ==, id_of(","));
    g_assert_true(p.rows[5] == h.fake.rows[1]);
    g_assert_cmpint(p.ids[6], ==, eos);
    sdg_prompt_clear(&p);
    sdg_prompt plain;
    g_assert_cmpint(sdg_prompt_parse_dict(tok, "reddish rfxy", eos, 0, &h.dict, &p, &err), ==,
                    SDG_OK);
    g_assert_cmpint(sdg_prompt_parse(tok, "reddish rfxy", eos, 0, &plain, &err), ==, SDG_OK);
    g_assert_null(p.rows);
    g_assert_cmpmem(p.ids, CTX * sizeof(int32_t), plain.ids, CTX * sizeof(int32_t));
    sdg_prompt_clear(&p);
    sdg_prompt_clear(&plain);

    // Emphasis: the fragment's weight on every vector; nesting multiplies as for words.
    g_assert_cmpint(sdg_prompt_parse_dict(tok, "a (rfx:1.5) ((red fox))", eos, 0, &h.dict, &p,
                                          &err), ==, SDG_OK);
    g_assert_cmpfloat(p.weights[1], ==, 1.0f);
    g_assert_cmpfloat(p.weights[2], ==, 1.5f);
    g_assert_cmpfloat(p.weights[3], ==, 1.5f);
    for (int t = 4; t < 7; t++) {
        g_assert_true(p.rows[t] == h.fake.rows[2] + 2 * (t - 4));
        g_assert_cmpfloat(p.weights[t], ==, (float)(1.1 * 1.1));
    }
    sdg_prompt_clear(&p);

    // Windows: after 73 words the 2 vectors fit (75); after 74 they move to the next window,
    // which starts with them, and the first is closed with EOS and padding.
    for (int words = 73; words <= 74; words++) {
        GString *s = g_string_new(NULL);
        for (int i = 0; i < words; i++)
            g_string_append(s, "cat ");
        g_string_append(s, "rfx dog");
        g_assert_cmpint(sdg_prompt_parse_dict(tok, s->str, 0, 0, &h.dict, &p, &err), ==, SDG_OK);
        g_assert_cmpint(p.n_windows, ==, 2);
        int at = words == 73 ? 74 : CTX + 1;
        g_assert_true(p.rows[at] == h.fake.rows[0] && p.rows[at + 1] == h.fake.rows[0] + 2);
        g_assert_cmpint(p.ids[words + 1], ==, words == 73 ? 0 : eos);
        if (words == 74)
            g_assert_cmpint(p.ids[76], ==, 0);   // padding (pad_id 0) after EOS
        g_assert_cmpint(p.ids[words == 73 ? CTX + 1 : CTX + 3], ==, id_of("dog"));
        for (int t = 0; t < 2 * CTX; t++)
            if (t != at && t != at + 1)
                g_assert_null(p.rows[t]);
        sdg_prompt_clear(&p);
        g_string_free(s, TRUE);
    }

    // Comma backtracking carries the vectors with the words after the comma.
    {
        GString *s = g_string_new(NULL);
        for (int i = 0; i < 70; i++)
            g_string_append(s, "cat ");
        g_string_append(s, ", blue rfx big cat dog");   // , at 70; blue 71, rfx 72-73, ... dog 76
        g_assert_cmpint(sdg_prompt_parse_dict(tok, s->str, eos, 0, &h.dict, &p, &err), ==,
                        SDG_OK);
        g_assert_cmpint(p.n_windows, ==, 2);
        g_assert_cmpint(p.ids[72], ==, eos);   // BOS + 70 cats + comma, then EOS
        g_assert_cmpint(p.ids[CTX + 1], ==, id_of("blue"));
        g_assert_true(p.rows[CTX + 2] == h.fake.rows[0] && p.rows[CTX + 3] == h.fake.rows[0] + 2);
        for (int t = 0; t < CTX; t++)
            g_assert_null(p.rows[t]);
        sdg_prompt_clear(&p);
        g_string_free(s, TRUE);
    }

    // 75 vectors fill a window of their own.
    h.fake.n_rows[0] = 75;
    g_assert_cmpint(sdg_prompt_parse_dict(tok, "cat rfx", eos, 0, &h.dict, &p, &err), ==, SDG_OK);
    g_assert_cmpint(p.n_windows, ==, 2);
    g_assert_true(p.rows[CTX + 1] == h.fake.rows[0] && p.rows[CTX + 75] == h.fake.rows[0] + 148);
    g_assert_cmpint(p.ids[CTX + 76], ==, eos);
    sdg_prompt_clear(&p);

    // A resolve error ends the parse with it; nothing is held.
    h.fake.fail = SDG_ERR_SHAPE;
    g_assert_cmpint(sdg_prompt_parse_dict(tok, "a rfx", eos, 0, &h.dict, &p, &err), ==,
                    SDG_ERR_SHAPE);
    g_assert_null(p.ids);
    g_assert_null(p.rows);
    // ... but only when the name is used.
    g_assert_cmpint(sdg_prompt_parse_dict(tok, "a fox", eos, 0, &h.dict, &p, &err), ==, SDG_OK);
    sdg_prompt_clear(&p);
    dict_free(&h);
}

// ---------------------------------------------------------------------------------------------
// The tiny models

static sdg_model *load(const char *rel, const char *emb_dir, sdg_error *err)
{
    char *path = golden_path(rel);
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    mp.embeddings_dir = emb_dir;
    sdg_model *m = sdg_model_load(path, &mp, err);
    g_free(path);
    return m;
}

// Rows of a token embedding table for the BPE ids of text (n of them, asserted).
static float *token_rows(const char *table, const char *text, int n, int width)
{
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    g_assert_cmpint(sdg_tokenizer_encode(tok, text, ids, NULL), ==, n);
    st_file *f = golden_open(strstr(table, "conditioner") ? SDXL
                             : strstr(table, ".model.token") ? SD2 : TINY);
    size_t count;
    float *all = golden_f32(f, table, &count);
    g_assert_cmpuint(count, ==, (size_t)49408 * width);
    float *out = g_new(float, (size_t)n * width);
    for (int i = 0; i < n; i++)
        memcpy(out + (size_t)i * width, all + (size_t)g_array_index(ids, int32_t, i) * width,
               (size_t)width * sizeof(float));
    g_free(all);
    st_close(f);
    g_array_free(ids, TRUE);
    return out;
}

typedef struct cond {
    float *ctx, *y;
    int n_ctx, dim, y_dim;
} cond;

static sdg_status text_of(sdg_ctx *ctx, const char *prompt, cond *c, sdg_error *err)
{
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = prompt;
    gp.width = gp.height = 64;
    memset(c, 0, sizeof *c);
    return sdg__pipeline_text(ctx, &gp, &c->ctx, &c->n_ctx, &c->dim, &c->y, &c->y_dim, err);
}

static void cond_clear(cond *c)
{
    free(c->ctx);
    free(c->y);
}

// The conditioning of prompts a and b is the same, bit for bit.
static void expect_same(sdg_ctx *ctx, const char *a, const char *b, bool same)
{
    cond ca, cb;
    sdg_error err;
    if (text_of(ctx, a, &ca, &err) != SDG_OK || text_of(ctx, b, &cb, &err) != SDG_OK)
        g_error("%s", err.message);
    g_assert_cmpint(ca.n_ctx, ==, cb.n_ctx);
    g_assert_cmpint(ca.y_dim, ==, cb.y_dim);
    bool eq = memcmp(ca.ctx, cb.ctx, (size_t)ca.n_ctx * ca.dim * sizeof(float)) == 0 &&
              (!ca.y_dim || memcmp(ca.y, cb.y, (size_t)ca.y_dim * sizeof(float)) == 0);
    printf("# \"%.40s\" %s \"%.40s\" (%d tokens)\n", a, eq ? "==" : "!=", b, ca.n_ctx);
    g_assert_true(eq == same);
    cond_clear(&ca);
    cond_clear(&cb);
}

static char *words(int n, const char *tail)
{
    GString *s = g_string_new(NULL);
    for (int i = 0; i < n; i++)
        g_string_append(s, "cat ");
    g_string_append(s, tail);
    return g_string_free(s, FALSE);
}

static void test_sd1_exact(void)
{
    char *dir = golden_tmpdir("emb-sd1");
    float *fox = token_rows(SD1_TOK, "red fox", 2, 64);
    g_free(write_emb(dir, "rfx.safetensors", "emb_params", 2, 64, fox, NULL, 0, NULL));
    // Files no prompt below names are never read: a wrong width, a NaN, a pickle.
    float *wide = ramp(768, 0.01f);
    g_free(write_emb(dir, "wide.safetensors", "emb_params", 1, 768, wide, NULL, 0, NULL));
    float *nan = ramp(64, 1.0f);
    nan[5] = NAN;
    g_free(write_emb(dir, "broken.safetensors", "emb_params", 1, 64, nan, NULL, 0, NULL));
    char *pt = g_build_filename(dir, "pickled.pt", NULL);
    g_assert_true(g_file_set_contents(pt, "PK", 2, NULL));

    sdg_error err;
    sdg_model *m = load(TINY, dir, &err);
    g_assert_nonnull(m);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err);
    expect_same(ctx, "a rfx in snow", "a red fox in snow", true);
    expect_same(ctx, "a rfx in snow", "a red dog in snow", false);   // the test can tell
    expect_same(ctx, "a (rfx:1.5) in snow", "a (red fox:1.5) in snow", true);
    expect_same(ctx, "a (rfx:1.5) in snow", "a red fox in snow", false);
    expect_same(ctx, "[rfx], (rfx)", "[red fox], (red fox)", true);
    // Across the window boundary: after 74 words the embedding starts the next window, as the
    // words would after BREAK; after 73 it fits.
    char *a = words(74, "rfx"), *b = words(74, "BREAK red fox");
    expect_same(ctx, a, b, true);
    g_free(a);
    g_free(b);
    a = words(73, "rfx");
    b = words(73, "red fox");
    expect_same(ctx, a, b, true);
    g_free(a);
    g_free(b);
    // An unknown word stays text: the same as with no embeddings at all.
    {
        sdg_model *plain = load(TINY, NULL, &err);
        sdg_ctx *pc = sdg_ctx_new(plain, 2, &err);
        cond c1, c2;
        g_assert_cmpint(text_of(ctx, "a rfxy in snow, redfox", &c1, &err), ==, SDG_OK);
        g_assert_cmpint(text_of(pc, "a rfxy in snow, redfox", &c2, &err), ==, SDG_OK);
        g_assert_cmpmem(c1.ctx, (size_t)c1.n_ctx * c1.dim * sizeof(float), c2.ctx,
                        (size_t)c2.n_ctx * c2.dim * sizeof(float));
        cond_clear(&c1);
        cond_clear(&c2);
        sdg_ctx_free(pc);
        sdg_model_free(plain);
    }

    // The negative prompt: a whole guided run gives the same latents.
    {
        sdg_gen_params gp = sdg_gen_default_params();
        gp.prompt = "a cat";
        gp.width = gp.height = 64;
        gp.steps = 2;
        gp.seed = 5;
        gp.sampler = SDG_SAMPLER_EULER;
        sdg_result *r1 = NULL, *r2 = NULL;
        gp.negative_prompt = "rfx";
        g_assert_cmpint(sdg_generate(ctx, &gp, &r1, &err), ==, SDG_OK);
        gp.negative_prompt = "red fox";
        g_assert_cmpint(sdg_generate(ctx, &gp, &r2, &err), ==, SDG_OK);
        size_t n = (size_t)r1->latent_channels * r1->latent_height * r1->latent_width;
        g_assert_cmpmem(r1->latents, n * sizeof(float), r2->latents, n * sizeof(float));
        sdg_result_free(r1);
        sdg_result_free(r2);
    }

    // Named bad files: a sentence naming the file and the widths; the run is refused.
    cond c;
    g_assert_cmpint(text_of(ctx, "a wide cat", &c, &err), ==, SDG_ERR_SHAPE);
    printf("# %s\n", err.message);
    g_assert_nonnull(strstr(err.message, "wide.safetensors"));
    g_assert_nonnull(strstr(err.message, "768 wide"));
    g_assert_nonnull(strstr(err.message, "64 wide"));
    g_assert_null(c.ctx);
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = "a cat";
    gp.negative_prompt = "broken";
    gp.width = gp.height = 64;
    gp.steps = 1;
    sdg_result *res = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_ERR_FORMAT);
    printf("# %s\n", err.message);
    g_assert_nonnull(strstr(err.message, "broken.safetensors"));
    g_assert_null(res);
    sdg_memory_estimate est;
    gp.negative_prompt = "pickled";
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &est, &err), ==, SDG_ERR_UNSUPPORTED);
    printf("# %s\n", err.message);
    g_assert_nonnull(strstr(err.message, "pickled.pt"));

    // A file changed on disk is read again (here: 3 vectors, "red fox fur").
    float *fur = token_rows(SD1_TOK, "red fox fur", 3, 64);
    g_free(write_emb(dir, "rfx.safetensors", "emb_params", 3, 64, fur, NULL, 0, NULL));
    expect_same(ctx, "a rfx in snow", "a red fox fur in snow", true);

    sdg_ctx_free(ctx);
    sdg_model_free(m);

    // An explicit folder that does not exist is an error; the default ones may be absent.
    char *missing = g_build_filename(dir, "no-such-folder", NULL);
    m = load(TINY, missing, &err);
    g_assert_nonnull(m);
    ctx = sdg_ctx_new(m, 2, &err);
    g_assert_cmpint(text_of(ctx, "a cat", &c, &err), ==, SDG_ERR_IO);
    printf("# %s\n", err.message);
    g_assert_nonnull(strstr(err.message, "no-such-folder"));
    sdg_ctx_free(ctx);
    sdg_model_free(m);

    g_free(missing);
    g_free(pt);
    g_free(fox);
    g_free(fur);
    g_free(wide);
    g_free(nan);
    golden_tmpdir_remove(dir);
}

// The default folder: embeddings/ beside the model file.
static void test_default_folder(void)
{
    char *dir = golden_tmpdir("emb-beside");
    char *model = g_build_filename(dir, "tiny.safetensors", NULL);
    char *src = golden_path(TINY);
    g_assert_cmpint(symlink(src, model), ==, 0);
    char *edir = g_build_filename(dir, "embeddings", NULL);
    g_assert_cmpint(g_mkdir(edir, 0755), ==, 0);
    float *fox = token_rows(SD1_TOK, "red fox", 2, 64);
    g_free(write_emb(edir, "my-style.safetensors", "emb_params", 2, 64, fox, NULL, 0, NULL));
    sdg_error err;
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    sdg_model *m = sdg_model_load(model, &mp, &err);
    g_assert_nonnull(m);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err);
    expect_same(ctx, "a my-style cat", "a red fox cat", true);
    sdg_ctx_free(ctx);
    sdg_model_free(m);
    g_free(fox);
    g_free(edir);
    g_free(src);
    g_free(model);
    golden_tmpdir_remove(dir);
}

static void test_sdxl_pair(void)
{
    char *dir = golden_tmpdir("emb-sdxl");
    float *l = token_rows(XL_TOK_L, "red fox", 2, 32);
    float *g = token_rows(XL_TOK_G, "red fox", 2, 48);
    g_free(write_emb(dir, "rfx.safetensors", "clip_l", 2, 32, l, "clip_g", 48, g));
    float *one = ramp(2 * 64, 0.01f);
    g_free(write_emb(dir, "sdone.safetensors", "emb_params", 2, 64, one, NULL, 0, NULL));
    sdg_error err;
    sdg_model *m = load(SDXL, dir, &err);
    g_assert_nonnull(m);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err);
    // Context from both encoders and y (clip_g's pooled output): bit for bit.
    expect_same(ctx, "a rfx in snow", "a red fox in snow", true);
    expect_same(ctx, "a (rfx:0.7) in snow", "a (red fox:0.7) in snow", true);
    cond c;
    g_assert_cmpint(text_of(ctx, "a sdone", &c, &err), ==, SDG_ERR_SHAPE);
    printf("# %s\n", err.message);
    g_assert_nonnull(strstr(err.message, "sdone.safetensors"));
    g_assert_nonnull(strstr(err.message, "clip_l 32 + clip_g 48"));
    sdg_ctx_free(ctx);
    sdg_model_free(m);

    // The SDXL pair on SD 1.x is refused the same way.
    m = load(TINY, dir, &err);
    ctx = sdg_ctx_new(m, 2, &err);
    g_assert_cmpint(text_of(ctx, "a rfx", &c, &err), ==, SDG_ERR_SHAPE);
    printf("# %s\n", err.message);
    g_assert_nonnull(strstr(err.message, "rfx.safetensors"));
    sdg_ctx_free(ctx);
    sdg_model_free(m);
    g_free(l);
    g_free(g);
    g_free(one);
    golden_tmpdir_remove(dir);
}

// SD 2.x: open_clip's layout, padding 0 after EOS.
static void test_sd2(void)
{
    char *dir = golden_tmpdir("emb-sd2");
    float *fox = token_rows(SD2_TOK, "red fox", 2, 48);
    g_free(write_emb(dir, "rfx.safetensors", "emb_params", 2, 48, fox, NULL, 0, NULL));
    sdg_error err;
    sdg_model *m = load(SD2, dir, &err);
    g_assert_nonnull(m);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err);
    expect_same(ctx, "a rfx in snow", "a red fox in snow", true);
    char *a = words(74, "(rfx:1.3)"), *b = words(74, "BREAK (red fox:1.3)");
    expect_same(ctx, a, b, true);
    g_free(a);
    g_free(b);
    sdg_ctx_free(ctx);
    sdg_model_free(m);
    g_free(fox);
    golden_tmpdir_remove(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    vocab_path = golden_path(VOCAB);
    sdg_error err;
    tok = sdg_tokenizer_load(vocab_path, &err);
    if (!tok)
        g_error("%s", err.message);
    g_test_add_func("/embedding/file-formats", test_file_formats);
    g_test_add_func("/embedding/parse", test_parse);
    g_test_add_func("/embedding/sd1-exact", test_sd1_exact);
    g_test_add_func("/embedding/default-folder", test_default_folder);
    g_test_add_func("/embedding/sd2", test_sd2);
    g_test_add_func("/embedding/sdxl-pair", test_sdxl_pair);
    int rc = g_test_run();
    sdg_tokenizer_free(tok);
    g_free(vocab_path);
    return rc;
}
