/*
 * test-vae.c - the autoencoder against the tiny-sd1 goldens, plus loading errors.
 *
 * Golden: vae.enc.moments for vae.enc.image [1,3,32,32], vae.dec.image for vae.dec.z [1,4,8,8],
 * also as a batch of two, and with tiny band/chunk budgets that force the banded upsampling and
 * chunked attention paths. Every forward runs twice (dry run, then for real in an arena of exactly
 * the measured size) and must peak identically; results must be bit-identical with 1 and 2
 * threads. Bad checkpoints are modified copies of the golden VAE written with st_write.
 * Not here: posterior sampling and the latent scale (pipeline), the ops (test-ops).
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

#include "golden.h"
#include "loader/weights.h"
#include "model/vae.h"
#include "tensor/gemm.h"

#define PREFIX "first_stage_model."

static char *tmpdir;   // removed at the end of main

// ---------------------------------------------------------------------------------------------
// Helpers

typedef struct run_args {
    const vae_model *m;
    bool decode;
    const float *in;
    int n, h, w;
    float *out;
} run_args;

static void run_once(sdg_exec *ex, const void *args)
{
    const run_args *a = args;
    if (a->decode)
        vae_decode(ex, a->m, a->in, a->n, a->h, a->w, a->out);
    else
        vae_encode(ex, a->m, a->in, a->n, a->h, a->w, a->out);
}

// Dry run, then the real run in exactly the measured memory (golden_run_measured).
static size_t run_measured(const run_args *a, int n_threads)
{
    run_args none = *a;
    none.in = NULL;
    none.out = NULL;
    return golden_run_measured(run_once, a, &none, n_threads);
}

typedef struct loaded {
    st_file *f;
    sdg_weights *wb;
    vae_model *m;
} loaded;

static loaded load_path(const char *path)
{
    loaded l;
    sdg_error err;
    l.f = st_open(path, &err);
    if (!l.f)
        g_error("st_open %s: %s", path, err.message);
    l.wb = sdg_wb_new(l.f, &err);
    g_assert_nonnull(l.wb);
    l.m = vae_load(l.wb, PREFIX);
    if (!l.m) {
        sdg_wb_status(l.wb, &err);
        g_error("vae_load: %s", err.message);
    }
    return l;
}

static loaded load_golden(void)
{
    char *path = golden_path("golden/tiny-sd1.safetensors");
    loaded l = load_path(path);
    g_free(path);
    return l;
}

static void unload(loaded *l)
{
    vae_free(l->m);
    sdg_wb_free(l->wb);
    st_close(l->f);
}

// Tolerances: about 5x the worst relative error measured (golden.h).
#define TOL_ENC 9e-6    // vae.enc.moments: measured 1.7e-6
#define TOL_DEC 1.5e-5  // vae.dec.image: measured 2.1e-6

// Runs a golden case with 1 and 2 threads, n copies of the input; every copy must match the
// golden within tol.
static void golden_case(const vae_model *m, const st_file *ref, bool decode, int n,
                        const char *in_name, const char *out_name, double tol)
{
    const vae_config *c = vae_get_config(m);
    size_t n_in, n_out;
    float *in1 = golden_f32(ref, in_name, &n_in);
    float *want = golden_f32(ref, out_name, &n_out);
    const st_tensor *t = st_find(ref, in_name);
    int h = (int)t->shape[2], w = (int)t->shape[3];
    g_assert_cmpuint(n_out, ==, decode ? n_in / c->z_ch * 3 * c->downscale * c->downscale
                                       : n_in / 3 * 2 * c->z_ch / c->downscale / c->downscale);
    float *in = g_new(float, n * n_in);
    for (int b = 0; b < n; b++)
        memcpy(in + b * n_in, in1, n_in * sizeof *in);
    float *got1 = g_new0(float, n * n_out), *got2 = g_new0(float, n * n_out);
    run_args a = {m, decode, in, n, h, w, got1};
    size_t peak = run_measured(&a, 1);
    a.out = got2;
    g_assert_cmpuint(run_measured(&a, 2), ==, peak);
    g_test_message("%s (batch %d): arena peak %zu bytes", out_name, n, peak);
    g_assert_cmpmem(got1, n * n_out * sizeof *got1, got2, n * n_out * sizeof *got2);
    for (int b = 0; b < n; b++)
        golden_check(out_name, got1 + b * n_out, want, n_out, tol);
    g_free(in1);
    g_free(in);
    g_free(want);
    g_free(got1);
    g_free(got2);
}

// ---------------------------------------------------------------------------------------------
// Golden

static void test_config(void)
{
    loaded l = load_golden();
    const vae_config *c = vae_get_config(l.m);
    g_assert_cmpint(c->in_ch, ==, 3);
    g_assert_cmpint(c->out_ch, ==, 3);
    g_assert_cmpint(c->ch, ==, 32);
    g_assert_cmpint(c->n_levels, ==, 4);
    g_assert_cmpint(c->ch_mult[0], ==, 1);
    g_assert_cmpint(c->ch_mult[1], ==, 1);
    g_assert_cmpint(c->ch_mult[2], ==, 2);
    g_assert_cmpint(c->ch_mult[3], ==, 2);
    g_assert_cmpint(c->num_res_blocks, ==, 1);
    g_assert_cmpint(c->z_ch, ==, 4);
    g_assert_cmpint(c->downscale, ==, 8);
    unload(&l);
}

static void test_golden(void)
{
    loaded l = load_golden();
    st_file *ref = golden_open("golden/tiny-sd1-reference.safetensors");
    golden_case(l.m, ref, false, 1, "vae.enc.image", "vae.enc.moments", TOL_ENC);
    golden_case(l.m, ref, true, 1, "vae.dec.z", "vae.dec.image", TOL_DEC);
    golden_case(l.m, ref, false, 2, "vae.enc.image", "vae.enc.moments", TOL_ENC);
    golden_case(l.m, ref, true, 2, "vae.dec.z", "vae.dec.image", TOL_DEC);
    st_close(ref);
    unload(&l);
}

// The SD 2.x (ch_mult 1,2,2,2) and SDXL (num_res_blocks 2) autoencoders of the other goldens.
static void test_golden_families(void)
{
    static const struct {
        const char *model, *ref;
        int mult1, nrb;
        double tol;
    } cases[] = {
        // measured (best kernels / portable C) 2.5e-6 / 2.6e-6 and 2.7e-6 / 2.9e-6
        { "golden/tiny-sd2.safetensors", "golden/tiny-sd2-reference.safetensors", 2, 1, 1.5e-5 },
        { "golden/tiny-sdxl.safetensors", "golden/tiny-sdxl-reference.safetensors", 1, 2, 1.5e-5 },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *path = golden_path(cases[i].model);
        loaded l = load_path(path);
        const vae_config *c = vae_get_config(l.m);
        g_assert_cmpint(c->ch_mult[1], ==, cases[i].mult1);
        g_assert_cmpint(c->num_res_blocks, ==, cases[i].nrb);
        st_file *ref = golden_open(cases[i].ref);
        golden_case(l.m, ref, true, 1, "vae.dec.z", "vae.dec.image", cases[i].tol);
        st_close(ref);
        unload(&l);
        g_free(path);
    }
}

// Tiny budgets: one-row upsampling bands and one-query attention chunks, then a few rows.
static void test_chunked(void)
{
    loaded l = load_golden();
    st_file *ref = golden_open("golden/tiny-sd1-reference.safetensors");
    const size_t budgets[] = {1, 3000};
    for (size_t i = 0; i < G_N_ELEMENTS(budgets); i++) {
        vae_set_chunk_floats(budgets[i]);
        golden_case(l.m, ref, false, 1, "vae.enc.image", "vae.enc.moments", TOL_ENC);
        golden_case(l.m, ref, true, 1, "vae.dec.z", "vae.dec.image", TOL_DEC);
    }
    vae_set_chunk_floats(0);
    st_close(ref);
    unload(&l);
}

// ---------------------------------------------------------------------------------------------
// Loading errors, on modified copies of the golden VAE

typedef enum edit_kind {
    EDIT_NONE, EDIT_DROP, EDIT_SHRINK, EDIT_ATTN_2D, EDIT_TRANSPOSE
} edit_kind;

// Copies the PREFIX tensors of the golden model to a temporary file, applying one edit to the
// tensors whose name contains `match`: drop them, take one off their first dimension, store
// 1x1 conv weights [c,c,1,1] as [c,c], or swap the two spatial axes of 3x3 kernels.
static char *copy_vae(const char *file, edit_kind kind, const char *match)
{
    char *gpath = golden_path("golden/tiny-sd1.safetensors");
    sdg_error err;
    st_file *f = st_open(gpath, &err);
    g_assert_nonnull(f);
    g_free(gpath);
    int n = st_count(f);
    st_write_tensor *wt = g_new0(st_write_tensor, n);
    float **data = g_new0(float *, n);
    int k = 0;
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_at(f, i);
        if (strncmp(t->name, PREFIX, strlen(PREFIX)) != 0)
            continue;
        bool hit = match && strstr(t->name, match);
        if (hit && kind == EDIT_DROP)
            continue;
        data[k] = g_new(float, t->n_elements);
        g_assert_cmpint(st_read_f32(f, t, data[k], &err), ==, SDG_OK);
        wt[k].name = t->name;
        wt[k].dtype = ST_F32;
        wt[k].n_dims = t->n_dims;
        memcpy(wt[k].shape, t->shape, sizeof t->shape);
        wt[k].data = data[k];
        if (hit && kind == EDIT_SHRINK)
            wt[k].shape[0]--;   // the data keeps its first elements
        if (hit && kind == EDIT_ATTN_2D && t->n_dims == 4)
            wt[k].n_dims = 2;
        if (hit && kind == EDIT_TRANSPOSE && t->n_dims == 4 && t->shape[2] > 1) {
            size_t kk = (size_t)t->shape[2];
            for (int64_t o = 0; o < t->shape[0] * t->shape[1]; o++) {
                float *kern = data[k] + o * kk * kk;
                for (size_t y = 0; y < kk; y++)
                    for (size_t x = y + 1; x < kk; x++) {
                        float tmp = kern[y * kk + x];
                        kern[y * kk + x] = kern[x * kk + y];
                        kern[x * kk + y] = tmp;
                    }
            }
        }
        k++;
    }
    char *path = g_build_filename(tmpdir, file, NULL);
    if (st_write(path, wt, k, NULL, &err) != SDG_OK)
        g_error("st_write: %s", err.message);
    for (int i = 0; i < k; i++)
        g_free(data[i]);
    g_free(data);
    g_free(wt);
    st_close(f);
    return path;
}

static void expect_fail(const char *path, sdg_status status, const char *needle)
{
    sdg_error err;
    st_file *f = st_open(path, &err);
    if (!f)
        g_error("st_open %s: %s", path, err.message);
    sdg_weights *wb = sdg_wb_new(f, &err);
    g_assert_nonnull(wb);
    vae_model *m = vae_load(wb, PREFIX);
    g_assert_null(m);
    g_assert_cmpint(sdg_wb_status(wb, &err), ==, status);
    g_test_message("%s", err.message);
    g_assert_cmpint(err.status, ==, status);
    if (!strstr(err.message, needle))
        g_error("message '%s' lacks '%s'", err.message, needle);
    sdg_wb_free(wb);
    st_close(f);
}

static void test_bad_weights(void)
{
    char *p = copy_vae("drop.safetensors", EDIT_DROP, "decoder.up.1.block.1.conv2.bias");
    expect_fail(p, SDG_ERR_SHAPE, PREFIX "decoder.up.1.block.1.conv2.bias");
    g_free(p);
    p = copy_vae("shrink.safetensors", EDIT_SHRINK, "encoder.mid.attn_1.k.weight");
    expect_fail(p, SDG_ERR_SHAPE, PREFIX "encoder.mid.attn_1.k.weight");
    g_free(p);
    p = copy_vae("nin.safetensors", EDIT_DROP, "decoder.up.1.block.0.nin_shortcut.weight");
    expect_fail(p, SDG_ERR_SHAPE, PREFIX "decoder.up.1.block.0.nin_shortcut.weight");
    g_free(p);
    p = copy_vae("quant.safetensors", EDIT_DROP, "first_stage_model.quant_conv.weight");
    expect_fail(p, SDG_ERR_SHAPE, PREFIX "quant_conv.weight");
    g_free(p);
    p = copy_vae("noenc.safetensors", EDIT_DROP, "encoder.");
    expect_fail(p, SDG_ERR_SHAPE, PREFIX "encoder.conv_in.weight");
    g_free(p);
    // The last level has no downsample in ldm; the second-to-last must have one.
    p = copy_vae("down.safetensors", EDIT_DROP, "encoder.down.2.downsample.conv.weight");
    expect_fail(p, SDG_ERR_SHAPE, PREFIX "encoder.down.2.downsample.conv.weight");
    g_free(p);
}

// q/k/v/proj_out stored as Linear [c,c] (diffusers-converted files) give the same result.
static void test_attn_2d(void)
{
    char *p = copy_vae("attn2d.safetensors", EDIT_ATTN_2D, ".mid.attn_1.");
    loaded l = load_path(p);
    st_file *ref = golden_open("golden/tiny-sd1-reference.safetensors");
    golden_case(l.m, ref, false, 1, "vae.enc.image", "vae.enc.moments", TOL_ENC);
    golden_case(l.m, ref, true, 1, "vae.dec.z", "vae.dec.image", TOL_DEC);
    st_close(ref);
    unload(&l);
    g_free(p);
}

// [nc, h, w] -> [nc, w, h]
static float *transpose_hw(const float *x, int nc, int h, int w)
{
    float *y = g_new(float, (size_t)nc * h * w);
    for (int c = 0; c < nc; c++)
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++)
                y[((size_t)c * w + j) * h + i] = x[((size_t)c * h + i) * w + j];
    return y;
}

// Non-square sizes, checked by symmetry: with every 3x3 kernel transposed, the network maps the
// transposed input to the transposed output (the downsampling pad is right and bottom, so it
// transposes too; GroupNorm and attention do not care about pixel order).
static void non_square_case(void)
{
    loaded a = load_golden();
    char *p = copy_vae("transposed.safetensors", EDIT_TRANSPOSE, PREFIX);
    loaded b = load_path(p);
    GRand *r = g_rand_new_with_seed(3);
    const int zh = 3, zw = 5, ih = 16, iw = 40;   // decode 3x5 -> 24x40; encode 16x40 -> 2x5
    float *z = g_new(float, 4 * zh * zw), *img = g_new(float, 3 * ih * iw);
    for (int i = 0; i < 4 * zh * zw; i++)
        z[i] = (float)g_rand_double_range(r, -2, 2);
    for (int i = 0; i < 3 * ih * iw; i++)
        img[i] = (float)g_rand_double_range(r, -1, 1);
    float *zt = transpose_hw(z, 4, zh, zw), *imgt = transpose_hw(img, 3, ih, iw);

    const int oh = zh * 8, ow = zw * 8;
    float *out = g_new(float, 3 * oh * ow), *outt = g_new(float, 3 * oh * ow);
    run_args ra = {a.m, true, z, 1, zh, zw, out};
    run_measured(&ra, 2);
    run_args rb = {b.m, true, zt, 1, zw, zh, outt};
    run_measured(&rb, 2);
    float *back = transpose_hw(outt, 3, ow, oh);
    // Not goldens: the same network on transposed data, where only the summation order of the
    // convolutions differs. Measured 2.2e-6 (decode) and 1.1e-6 (encode).
    golden_check("decode 3x5 vs transposed", back, out, 3 * oh * ow, 1.5e-5);
    g_free(back);

    const int mh = ih / 8, mw = iw / 8;
    float *mom = g_new(float, 8 * mh * mw), *momt = g_new(float, 8 * mh * mw);
    run_args ea = {a.m, false, img, 1, ih, iw, mom};
    run_measured(&ea, 2);
    run_args eb = {b.m, false, imgt, 1, iw, ih, momt};
    run_measured(&eb, 2);
    back = transpose_hw(momt, 8, mw, mh);
    golden_check("encode 16x40 vs transposed", back, mom, 8 * mh * mw, 6e-6);
    g_free(back);

    g_free(z);
    g_free(zt);
    g_free(img);
    g_free(imgt);
    g_free(out);
    g_free(outt);
    g_free(mom);
    g_free(momt);
    g_rand_free(r);
    unload(&b);
    unload(&a);
    g_free(p);
}

static void test_non_square(void)
{
    non_square_case();
    vae_set_chunk_floats(1);   // one-row bands, one-query attention chunks
    non_square_case();
    vae_set_chunk_floats(0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    // Which matrix products the goldens go through (meson runs them with the best set and with
    // SDG_KERNELS=c).
    g_test_message("kernels: %s", sdg_gemm_kernels_label(false));
    tmpdir = golden_tmpdir("test-vae");
    g_test_add_func("/vae/config", test_config);
    g_test_add_func("/vae/golden", test_golden);
    g_test_add_func("/vae/golden-families", test_golden_families);
    g_test_add_func("/vae/chunked", test_chunked);
    g_test_add_func("/vae/bad-weights", test_bad_weights);
    g_test_add_func("/vae/attn-2d", test_attn_2d);
    g_test_add_func("/vae/non-square", test_non_square);
    int rc = g_test_run();
    golden_tmpdir_remove(tmpdir);
    return rc;
}
