/*
 * test-clip.c - the CLIP text encoder against the tiny-sd1 goldens, plus loading errors.
 *
 * Golden: te.embeddings, te.last_hidden_state (clip_skip 1) and te.penultimate_ln (clip_skip 2)
 * for te.input_ids [3,77]. Every forward runs twice (dry run, then for real in an arena of exactly
 * the measured size) and must peak identically; results must be bit-identical with 1 and 2
 * threads. Bad checkpoints are small synthetic files written with st_write. Not here: the
 * tokenizer (test-tokenizer), the ops themselves (test-ops).
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "golden.h"
#include "loader/weights.h"
#include "model/clip.h"
#include "tensor/gemm.h"

#define PREFIX "cond_stage_model.transformer.text_model."

static char *tmpdir;   // removed at the end of main

// ---------------------------------------------------------------------------------------------
// Helpers

typedef struct run_args {
    const clip_model *m;
    const int32_t *ids;
    int n, layer;           // hidden state after `layer` layers
    bool final_norm, embed_only;
    float *out;
    float *pooled;          // open_clip's pooled projection, or NULL
} run_args;

static void run_once(sdg_exec *ex, const void *args)
{
    const run_args *a = args;
    if (a->embed_only)
        clip_embed(ex, a->m, a->ids, a->n, a->out);
    else
        clip_forward(ex, a->m, a->ids, a->n, &(clip_output){a->layer, a->final_norm}, a->out,
                     a->pooled);
}

// Dry run, then the real run in exactly the measured memory (golden_run_measured).
static size_t run_measured(const run_args *a, int n_threads)
{
    run_args none = *a;
    none.ids = NULL;
    none.out = NULL;
    return golden_run_measured(run_once, a, &none, n_threads);
}

static float pooled_dummy[1];   // a dry run's pooled: present, never written

typedef struct loaded {
    st_file *f;
    sdg_weights *wb;
    clip_model *m;
} loaded;

// The text encoder under prefix in a golden model file, with n_heads (0: width / 64).
static loaded load_encoder(const char *file, const char *prefix, int n_heads)
{
    loaded l;
    l.f = golden_open(file);
    sdg_error err;
    l.wb = sdg_wb_new(l.f, &err);
    g_assert_nonnull(l.wb);
    l.m = clip_load(l.wb, prefix, n_heads, CLIP_ACT_LAYOUT);
    if (!l.m) {
        sdg_wb_status(l.wb, &err);
        g_error("clip_load: %s", err.message);
    }
    return l;
}

static loaded load_golden(void)
{
    return load_encoder("golden/tiny-sd1.safetensors", PREFIX, 0);
}

static void unload(loaded *l)
{
    clip_free(l->m);
    sdg_wb_free(l->wb);
    st_close(l->f);
}

// ---------------------------------------------------------------------------------------------
// Golden

static void test_config(void)
{
    loaded l = load_golden();
    const clip_config *c = clip_get_config(l.m);
    g_assert_cmpint(c->vocab, ==, 49408);
    g_assert_cmpint(c->n_pos, ==, 77);
    g_assert_cmpint(c->width, ==, 64);
    g_assert_cmpint(c->n_layers, ==, 2);
    g_assert_cmpint(c->n_heads, ==, 1);
    g_assert_cmpint(c->mlp, ==, 256);
    unload(&l);
}

// Runs one golden case with 1 and 2 threads and checks the 1-thread run against the golden with
// tolerance tol (the 2-thread run must give the same bits).
static void golden_case(const loaded *l, const st_file *ref, const int32_t *ids, int n,
                        int layer, bool final_norm, bool embed_only, const char *name, double tol)
{
    size_t count;
    float *want = golden_f32(ref, name, &count);
    const clip_config *c = clip_get_config(l->m);
    g_assert_cmpuint(count, ==, (size_t)n * c->n_pos * c->width);
    float *got1 = g_new0(float, count), *got2 = g_new0(float, count);
    run_args a = {l->m, ids, n, layer, final_norm, embed_only, got1, NULL};
    size_t peak = run_measured(&a, 1);
    a.out = got2;
    g_assert_cmpuint(run_measured(&a, 2), ==, peak);
    g_test_message("%s: arena peak %zu bytes", name, peak);
    golden_check(name, got1, want, count, tol);
    g_assert_cmpmem(got1, count * sizeof *got1, got2, count * sizeof *got2);
    g_free(want);
    g_free(got1);
    g_free(got2);
}

static void test_golden(void)
{
    loaded l = load_golden();
    st_file *ref = golden_open("golden/tiny-sd1-reference.safetensors");
    size_t n_ids;
    int32_t *ids = golden_i32(ref, "te.input_ids", &n_ids);
    g_assert_cmpuint(n_ids, ==, 3 * 77);
    // Tolerances: about 5x the worst error measured (golden.h). The embeddings are a lookup and
    // one add, exact in float: measured 0.
    golden_case(&l, ref, ids, 3, 2, true, true, "te.embeddings", 0.0);
    golden_case(&l, ref, ids, 3, 2, true, false, "te.last_hidden_state", 3e-6);   // measured 4.6e-7
    golden_case(&l, ref, ids, 3, 1, true, false, "te.penultimate_ln", 3e-6);      // measured 5.2e-7
    // A batch of one gives the same as the first row of the batch of three.
    size_t count;
    float *want = golden_f32(ref, "te.last_hidden_state", &count);
    float *got = g_new(float, 77 * 64);
    run_args a = {l.m, ids + 77, 1, 2, true, false, got, NULL};
    run_measured(&a, 2);
    golden_check("te.last_hidden_state[1]", got, want + 77 * 64, 77 * 64,
                 3e-6);   // measured 5.5e-7
    g_free(got);
    g_free(want);
    g_free(ids);
    st_close(ref);
    unload(&l);
}

// Checks the pooled projection of ids [n,77] against the golden `name` [n, proj_dim] (1 and 2
// threads, same bits).
static void pooled_case(const loaded *l, const st_file *ref, const int32_t *ids, int n,
                        const char *name, double tol)
{
    const clip_config *c = clip_get_config(l->m);
    size_t count;
    float *want = golden_f32(ref, name, &count);
    g_assert_cmpuint(count, ==, (size_t)n * c->proj_dim);
    float *out = g_new(float, (size_t)n * 77 * c->width);
    float *got1 = g_new0(float, count), *got2 = g_new0(float, count);
    run_args a = {l->m, ids, n, c->n_layers - 1, false, false, out, got1};
    run_args none = a;
    none.ids = NULL;
    none.out = NULL;
    none.pooled = pooled_dummy;
    golden_run_measured(run_once, &a, &none, 1);
    a.pooled = got2;
    golden_run_measured(run_once, &a, &none, 2);
    golden_check(name, got1, want, count, tol);
    g_assert_cmpmem(got1, count * sizeof *got1, got2, count * sizeof *got2);
    g_free(want);
    g_free(out);
    g_free(got1);
    g_free(got2);
}

// SD 2.x: open_clip's text tower (packed in_proj, exact GELU), 3 heads of 16 as the file's
// open_clip_config says; SD2 takes ln_final(penultimate).
static void test_golden_sd2(void)
{
    loaded l = load_encoder("golden/tiny-sd2.safetensors", "cond_stage_model.model.", 3);
    const clip_config *c = clip_get_config(l.m);
    g_assert_true(c->open_clip);
    g_assert_cmpint(c->width, ==, 48);
    g_assert_cmpint(c->n_layers, ==, 4);
    g_assert_cmpint(c->mlp, ==, 192);
    g_assert_cmpint(c->proj_dim, ==, 32);
    st_file *ref = golden_open("golden/tiny-sd2-reference.safetensors");
    int32_t *ids = golden_i32(ref, "tok.ids", NULL);
    golden_case(&l, ref, ids, 3, 4, true, true, "te.embeddings", 0.0);
    golden_case(&l, ref, ids, 3, 3, false, false, "te.penultimate", 4e-6);   // measured 6.7e-7
    golden_case(&l, ref, ids, 3, 3, true, false, "te.context", 4e-6);        // measured 7.2e-7
    golden_case(&l, ref, ids, 3, 4, true, false, "te.last_ln", 4e-6);        // measured 7.0e-7
    g_free(ids);
    st_close(ref);
    unload(&l);
}

// SDXL: CLIP-L's hidden_states[3] of 4 without the final norm (2 heads of 16), and bigG's
// penultimate layer without ln_final plus its pooled projection (3 heads of 16).
static void test_golden_sdxl(void)
{
    st_file *ref = golden_open("golden/tiny-sdxl-reference.safetensors");
    loaded l = load_encoder("golden/tiny-sdxl.safetensors",
                            "conditioner.embedders.0.transformer.text_model.", 2);
    g_assert_false(clip_get_config(l.m)->open_clip);
    int32_t *ids = golden_i32(ref, "tok.ids_clip_l", NULL);
    golden_case(&l, ref, ids, 2, 3, false, false, "te0.hidden", 2e-6);   // measured 3.7e-7
    g_free(ids);
    unload(&l);

    l = load_encoder("golden/tiny-sdxl.safetensors", "conditioner.embedders.1.model.", 3);
    g_assert_cmpint(clip_get_config(l.m)->proj_dim, ==, 40);
    ids = golden_i32(ref, "tok.ids_bigg", NULL);
    golden_case(&l, ref, ids, 2, 3, false, false, "te1.penultimate", 3e-6);   // measured 5.4e-7
    golden_case(&l, ref, ids, 2, 4, true, false, "te1.last_ln", 3e-6);        // measured 5.2e-7
    pooled_case(&l, ref, ids, 2, "te1.pooled", 3e-6);                         // measured 5.4e-7
    g_free(ids);
    unload(&l);
    st_close(ref);
}

// ---------------------------------------------------------------------------------------------
// Loading errors, on small synthetic checkpoints

#define SYN_VOCAB 16
#define SYN_POS 8
#define SYN_MLP 96

typedef struct syn_file {
    st_write_tensor t[64];
    float *data[64];
    int n;
} syn_file;

static void syn_add(syn_file *s, const char *name, int n_dims, int64_t d0, int64_t d1, GRand *r)
{
    g_assert_cmpint(s->n, <, 64);
    size_t count = (size_t)d0 * (n_dims == 2 ? (size_t)d1 : 1);
    float *data = g_new(float, count);
    for (size_t i = 0; i < count; i++)
        data[i] = (float)g_rand_double_range(r, -0.5, 0.5);
    st_write_tensor *t = &s->t[s->n];
    memset(t, 0, sizeof *t);
    t->name = g_strdup(name);
    t->dtype = ST_F32;
    t->n_dims = n_dims;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->data = data;
    s->data[s->n++] = data;
}

// A CLIP text model of `layers` layers and the given width under PREFIX; `skip` (if not NULL)
// names a tensor (without prefix) to leave out, `bad` one whose first dimension gets one less.
static char *syn_write(const char *file, int width, int layers, const char *skip, const char *bad)
{
    GRand *r = g_rand_new_with_seed(7);
    syn_file s = {0};
    const char *names1[] = {"layer_norm1.weight", "layer_norm1.bias", "self_attn.q_proj.bias",
                            "self_attn.k_proj.bias", "self_attn.v_proj.bias",
                            "self_attn.out_proj.bias", "layer_norm2.weight", "layer_norm2.bias",
                            "mlp.fc2.bias"};
    const char *names2[] = {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                            "self_attn.v_proj.weight", "self_attn.out_proj.weight"};
    GPtrArray *spec = g_ptr_array_new_with_free_func(g_free);
    // name, dims, d0, d1 packed as "name|n|d0|d1"
    g_ptr_array_add(spec, g_strdup_printf("embeddings.token_embedding.weight|2|%d|%d", SYN_VOCAB,
                                          width));
    g_ptr_array_add(spec, g_strdup_printf("embeddings.position_embedding.weight|2|%d|%d", SYN_POS,
                                          width));
    for (int i = 0; i < layers; i++) {
        for (size_t j = 0; j < G_N_ELEMENTS(names1); j++)
            g_ptr_array_add(spec, g_strdup_printf("encoder.layers.%d.%s|1|%d|0", i, names1[j],
                                                  width));
        for (size_t j = 0; j < G_N_ELEMENTS(names2); j++)
            g_ptr_array_add(spec, g_strdup_printf("encoder.layers.%d.%s|2|%d|%d", i, names2[j],
                                                  width, width));
        g_ptr_array_add(spec, g_strdup_printf("encoder.layers.%d.mlp.fc1.weight|2|%d|%d", i,
                                              SYN_MLP, width));
        g_ptr_array_add(spec, g_strdup_printf("encoder.layers.%d.mlp.fc1.bias|1|%d|0", i,
                                              SYN_MLP));
        g_ptr_array_add(spec, g_strdup_printf("encoder.layers.%d.mlp.fc2.weight|2|%d|%d", i,
                                              width, SYN_MLP));
    }
    g_ptr_array_add(spec, g_strdup_printf("final_layer_norm.weight|1|%d|0", width));
    g_ptr_array_add(spec, g_strdup_printf("final_layer_norm.bias|1|%d|0", width));
    for (guint i = 0; i < spec->len; i++) {
        char **f = g_strsplit(g_ptr_array_index(spec, i), "|", 4);
        if (!skip || strcmp(f[0], skip) != 0) {
            int64_t d0 = g_ascii_strtoll(f[2], NULL, 10), d1 = g_ascii_strtoll(f[3], NULL, 10);
            if (bad && strcmp(f[0], bad) == 0)
                d0--;
            char *full = g_strconcat(PREFIX, f[0], NULL);
            syn_add(&s, full, (int)g_ascii_strtoll(f[1], NULL, 10), d0, d1, r);
            g_free(full);
        }
        g_strfreev(f);
    }
    g_ptr_array_free(spec, TRUE);
    char *path = g_build_filename(tmpdir, file, NULL);
    sdg_error err;
    if (st_write(path, s.t, s.n, NULL, &err) != SDG_OK)
        g_error("st_write: %s", err.message);
    for (int i = 0; i < s.n; i++) {
        g_free((char *)s.t[i].name);
        g_free(s.data[i]);
    }
    g_rand_free(r);
    return path;
}

// Loads path; expects failure with status and a message containing needle (NULL: expects
// success and returns the config).
static void expect_load(const char *path, sdg_status status, const char *needle,
                        clip_config *cfg)
{
    sdg_error err;
    st_file *f = st_open(path, &err);
    if (!f)
        g_error("st_open %s: %s", path, err.message);
    sdg_weights *wb = sdg_wb_new(f, &err);
    g_assert_nonnull(wb);
    clip_model *m = clip_load(wb, PREFIX, 0, CLIP_ACT_LAYOUT);
    sdg_status st = sdg_wb_status(wb, &err);
    if (!needle) {
        if (!m)
            g_error("%s: clip_load failed: %s", path, err.message);
        g_assert_cmpint(st, ==, SDG_OK);
        *cfg = *clip_get_config(m);
        // It runs: ids in range, finite output.
        int32_t ids[SYN_POS];
        for (int i = 0; i < SYN_POS; i++)
            ids[i] = (i * 5) % SYN_VOCAB;
        float *out = g_new(float, SYN_POS * cfg->width);
        run_args a = {m, ids, 1, cfg->n_layers, true, false, out, NULL};
        run_measured(&a, 1);
        for (int i = 0; i < cfg->n_pos * cfg->width; i++)
            g_assert_true(isfinite(out[i]));
        g_free(out);
    } else {
        g_assert_null(m);
        g_test_message("%s", err.message);
        g_assert_cmpint(st, ==, status);
        g_assert_cmpint(err.status, ==, status);
        if (!strstr(err.message, needle))
            g_error("message '%s' lacks '%s'", err.message, needle);
    }
    clip_free(m);
    sdg_wb_free(wb);
    st_close(f);
}

static void test_bad_weights(void)
{
    clip_config c;
    char *p = syn_write("ok.safetensors", 128, 3, NULL, NULL);
    expect_load(p, SDG_OK, NULL, &c);
    g_assert_cmpint(c.vocab, ==, SYN_VOCAB);
    g_assert_cmpint(c.n_pos, ==, SYN_POS);
    g_assert_cmpint(c.width, ==, 128);
    g_assert_cmpint(c.n_layers, ==, 3);
    g_assert_cmpint(c.n_heads, ==, 2);
    g_assert_cmpint(c.mlp, ==, SYN_MLP);
    g_free(p);

    p = syn_write("missing.safetensors", 64, 2, "encoder.layers.1.mlp.fc2.weight", NULL);
    expect_load(p, SDG_ERR_SHAPE, PREFIX "encoder.layers.1.mlp.fc2.weight", NULL);
    g_free(p);
    p = syn_write("shape.safetensors", 64, 2, NULL, "encoder.layers.0.self_attn.k_proj.bias");
    expect_load(p, SDG_ERR_SHAPE, PREFIX "encoder.layers.0.self_attn.k_proj.bias", NULL);
    g_free(p);
    p = syn_write("noembed.safetensors", 64, 1, "embeddings.token_embedding.weight", NULL);
    expect_load(p, SDG_ERR_SHAPE, PREFIX "embeddings.token_embedding.weight", NULL);
    g_free(p);
    p = syn_write("nolayers.safetensors", 64, 0, NULL, NULL);
    expect_load(p, SDG_ERR_SHAPE, "encoder.layers.0", NULL);
    g_free(p);
    p = syn_write("width.safetensors", 96, 1, NULL, NULL);
    expect_load(p, SDG_ERR_UNSUPPORTED, "head size", NULL);
    g_free(p);
    p = syn_write("pos.safetensors", 64, 1, NULL, "embeddings.position_embedding.weight");
    expect_load(p, SDG_OK, NULL, &c);   // fewer positions is a valid (shorter) model
    g_assert_cmpint(c.n_pos, ==, SYN_POS - 1);
    g_free(p);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    // Which matrix products the goldens go through (meson runs them with the best set and with
    // SDG_KERNELS=c).
    g_test_message("kernels: %s", sdg_gemm_kernels_label(false));
    tmpdir = golden_tmpdir("test-clip");
    g_test_add_func("/clip/config", test_config);
    g_test_add_func("/clip/golden", test_golden);
    g_test_add_func("/clip/golden-sd2", test_golden_sd2);
    g_test_add_func("/clip/golden-sdxl", test_golden_sdxl);
    g_test_add_func("/clip/bad-weights", test_bad_weights);
    int rc = g_test_run();
    golden_tmpdir_remove(tmpdir);
    return rc;
}
