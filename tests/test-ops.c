/*
 * test-ops.c - every tensor op of engine/tensor/ops.h against its naive `_ref` twin (ops_ref.c)
 * or its formula in double, on random inputs of awkward sizes.
 *
 * Each op runs the way the networks run it: a dry run first (which must touch no output and
 * leave the arena empty), then a real run in an arena of exactly the measured size (which must
 * peak at that size). Each op runs with 1, 2 and 3 threads, and the results must agree bit for
 * bit: the engine promises the same picture on any thread count.
 *
 * Not here: golden tensors from PyTorch (the model tests use those), or timing.
 */
#include <glib.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "tensor/gemm.h"
#include "tensor/ops.h"

// fp32 op versus double reference: max|got - ref| / max|ref|. Per op, about 5x the worst error
// measured over the cases below (golden.h says how; the error grows with the length of the sums,
// so a new case with longer ones may need the figure measured again).
#define TOL_GEMM 3e-6          // measured 4.8e-7 (67x333x211)
#define TOL_LINEAR 5e-6        // measured 9.3e-7 (154x320->1280)
#define TOL_CONV 4e-6          // measured 6.7e-7 (64x129x129, tiled)
#define TOL_GROUP_NORM 4e-6    // measured 6.8e-7 (offset 50: mean >> std)
#define TOL_LAYER_NORM 3e-6    // measured 5.4e-7 (offset 40)
#define TOL_ELEMENTWISE 5e-7   // measured 9.0e-8 (quick_gelu)
#define TOL_GEGLU 5e-7         // measured 8.0e-8
#define TOL_ATTENTION 5e-6     // measured 8.4e-7 (tq 211, tk 197, dh 40)
#define TOL_WINOGRAD 3e-5      // measured 5.5e-6 (F(4,3), `fast` only; 2x40x36x64->64)

// ---------------------------------------------------------------------------------------------
// Random data (xorshift64*, fixed seed: failures reproduce)

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float rng_uniform(float lo, float hi)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 0x2545F4914F6CDD1Dull;
    return lo + (hi - lo) * (float)((double)(r >> 40) / (double)(1ull << 24));
}

static float *rand_buf(size_t n, float lo, float hi)
{
    float *p = g_new(float, n ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = rng_uniform(lo, hi);
    return p;
}

static double rel_error(const char *what, const float *got, const float *ref, size_t n)
{
    double max_diff = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        if (!(d <= max_diff))      // NaN counts as the largest difference
            max_diff = isnan(d) ? INFINITY : d;
        if (fabs(ref[i]) > max_ref)
            max_ref = fabs(ref[i]);
    }
    double err = max_diff / (max_ref > 0.0 ? max_ref : 1.0);
    g_test_message("%s: n=%zu max|diff|=%.3g max|ref|=%.3g rel=%.3g", what, n, max_diff,
                   max_ref, err);
    return err;
}

// ---------------------------------------------------------------------------------------------
// Running an op the way the engine does

// A test case: run(ex, self) calls the op; out[out_n] is everything it may write. When init is
// set, out starts as a copy of it (in-place ops); otherwise out starts filled with a sentinel
// byte pattern, which the op must leave alone wherever it does not write (strided outputs).
typedef struct op_case op_case;
struct op_case {
    void (*run)(sdg_exec *ex, const op_case *c);
    float *out;
    size_t out_n;
    const float *init;
};

#define SENTINEL_BYTE 0xA5

static void case_reset(const op_case *c)
{
    if (c->init)
        memcpy(c->out, c->init, c->out_n * sizeof *c->out);
    else
        memset(c->out, SENTINEL_BYTE, c->out_n * sizeof *c->out);
}

// One run with n_threads: dry, then real in an arena of the measured size. Returns a copy of
// the output (g_free) and the arena size in *peak.
// The precision the cases run in (sdg_exec.fast).
static bool ops_fast;

static float *case_run_once(const op_case *c, int n_threads, size_t *peak)
{
    float *before = g_new(float, c->out_n);
    case_reset(c);
    memcpy(before, c->out, c->out_n * sizeof *c->out);

    sdg_exec ex;
    sdg__exec_init(&ex, n_threads);
    ex.fast = ops_fast;
    ex.dry = true;
    c->run(&ex, c);
    g_assert_cmpuint(ex.arena.used, ==, 0);
    g_assert_true(memcmp(before, c->out, c->out_n * sizeof *c->out) == 0);  // dry: no writes
    *peak = ex.arena.peak;

    ex.dry = false;
    ex.arena.peak = 0;
    sdg_error err = {0};
    g_assert_cmpint(sdg__exec_reserve(&ex, *peak, &err), ==, SDG_OK);
    c->run(&ex, c);
    g_assert_cmpuint(ex.arena.peak, ==, *peak);     // the dry run measured exactly this
    g_assert_cmpuint(ex.arena.used, ==, 0);         // and the op gave its scratch back
    sdg__exec_free(&ex);

    memcpy(before, c->out, c->out_n * sizeof *c->out);
    return before;
}

// Runs the case with 1, 2 and 3 threads, checks they agree bit for bit and reserve the same
// scratch, and leaves the result in c->out.
static void case_run(const op_case *c)
{
    size_t peak1, peak;
    float *r1 = case_run_once(c, 1, &peak1);
    for (int nt = 2; nt <= 3; nt++) {
        float *r = case_run_once(c, nt, &peak);
        g_assert_cmpuint(peak, ==, peak1);
        if (memcmp(r1, r, c->out_n * sizeof *r1) != 0) {
            size_t i = 0;
            while (memcmp(&r1[i], &r[i], sizeof *r1) == 0)
                i++;
            g_test_message("1 vs %d threads differ first at %zu: %.9g vs %.9g", nt, i, r1[i],
                           r[i]);
            g_test_fail();
        }
        g_free(r);
    }
    g_free(r1);
}

// True when out[i] still holds the sentinel (the op did not write there).
static bool is_sentinel(const float *p)
{
    unsigned char s[sizeof(float)];
    memset(s, SENTINEL_BYTE, sizeof s);
    return memcmp(p, s, sizeof s) == 0;
}

// ---------------------------------------------------------------------------------------------
// GEMM

typedef struct {
    op_case base;
    bool ta, tb;
    int m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const float *a, *b;
} gemm_case;

static void gemm_run(sdg_exec *ex, const op_case *c)
{
    const gemm_case *g = (const gemm_case *)c;
    sdg_op_gemm(ex, g->ta, g->tb, g->m, g->n, g->k, g->alpha, g->a, g->lda, g->b, g->ldb, g->beta,
                g->base.out, g->ldc);
}

static void check_gemm(bool ta, bool tb, int m, int n, int k, int pad, float alpha, float beta)
{
    gemm_case g = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .alpha = alpha, .beta = beta};
    g.lda = (ta ? m : k) + pad;
    g.ldb = (tb ? k : n) + pad;
    g.ldc = n + pad;
    size_t na = (size_t)(ta ? k : m) * g.lda, nb = (size_t)(tb ? n : k) * g.ldb;
    size_t nc = (size_t)m * g.ldc;
    float *a = rand_buf(na, -1, 1), *b = rand_buf(nb, -1, 1), *c0 = rand_buf(nc, -1, 1);
    if (beta == 0.0f)
        for (size_t i = 0; i < nc; i++)
            c0[i] = NAN;                               // beta = 0 must ignore C entirely
    float *out = g_new(float, nc), *ref = g_new(float, (size_t)m * n);
    g.a = a;
    g.b = b;
    g.base = (op_case){gemm_run, out, nc, c0};
    case_run(&g.base);

    float *got = g_new(float, (size_t)m * n);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0.0;
            for (int p = 0; p < k; p++) {
                double av = ta ? a[(size_t)p * g.lda + i] : a[(size_t)i * g.lda + p];
                double bv = tb ? b[(size_t)j * g.ldb + p] : b[(size_t)p * g.ldb + j];
                acc += av * bv;
            }
            double cv = beta == 0.0f ? 0.0 : beta * (double)c0[(size_t)i * g.ldc + j];
            ref[(size_t)i * n + j] = (float)(alpha * acc + cv);
            got[(size_t)i * n + j] = out[(size_t)i * g.ldc + j];
            for (int j2 = n; j2 < g.ldc && j == n - 1; j2++)   // padding columns untouched
                g_assert_true(memcmp(&out[(size_t)i * g.ldc + j2], &c0[(size_t)i * g.ldc + j2],
                                     sizeof(float)) == 0);
        }
    char what[96];
    g_snprintf(what, sizeof what, "gemm ta=%d tb=%d %dx%dx%d", ta, tb, m, n, k);
    g_assert_cmpfloat(rel_error(what, got, ref, (size_t)m * n), <=, TOL_GEMM);
    g_free(a);
    g_free(b);
    g_free(c0);
    g_free(out);
    g_free(ref);
    g_free(got);
}

static void test_gemm(void)
{
    for (int t = 0; t < 4; t++)
        check_gemm(t & 1, t & 2, 23, 17, 31, 3, 0.7f, 0.3f);
    check_gemm(false, false, 5, 7, 1, 0, 1.0f, 0.0f);
    check_gemm(false, true, 1, 9, 13, 2, -1.5f, 1.0f);
    check_gemm(true, false, 11, 1, 13, 2, 1.0f, 0.0f);
    check_gemm(false, false, 4, 6, 0, 1, 1.0f, 0.5f);                 // k = 0: C = beta C
    // Big enough for OpenBLAS to use both threads (it stays on one below m*n*k = 262144).
    check_gemm(false, false, 131, 253, 517, 5, 1.0f, 0.0f);
    check_gemm(false, true, 301, 97, 129, 0, 0.125f, 0.0f);
    check_gemm(true, false, 67, 333, 211, 1, 1.0f, 1.0f);
}

// ---------------------------------------------------------------------------------------------
// Linear

typedef struct {
    op_case base;
    const float *x, *w, *b;
    size_t rows;
    int in, outc;
} linear_case;

static void linear_run(sdg_exec *ex, const op_case *c)
{
    const linear_case *l = (const linear_case *)c;
    sdg_op_linear(ex, l->x, l->rows, l->in, sdg_weight_f32(l->w), l->b, l->outc, l->base.out);
}

static void check_linear(size_t rows, int in, int outc, bool bias)
{
    float *x = rand_buf(rows * in, -1, 1), *w = rand_buf((size_t)outc * in, -0.5f, 0.5f);
    float *b = bias ? rand_buf(outc, -1, 1) : NULL;
    size_t n = rows * outc;
    float *out = g_new(float, n), *ref = g_new(float, n);
    linear_case l = {{linear_run, out, n, NULL}, x, w, b, rows, in, outc};
    case_run(&l.base);
    sdg_op_linear_ref(x, rows, in, w, b, outc, ref);
    char what[64];
    g_snprintf(what, sizeof what, "linear %zux%d->%d bias=%d", rows, in, outc, bias);
    g_assert_cmpfloat(rel_error(what, out, ref, n), <=, TOL_LINEAR);
    g_free(x);
    g_free(w);
    g_free(b);
    g_free(out);
    g_free(ref);
}

static void test_linear(void)
{
    check_linear(37, 19, 23, true);
    check_linear(37, 19, 23, false);
    check_linear(1, 77, 5, true);
    check_linear(154, 320, 1280, true);          // a CLIP/UNet-like shape, threaded
}

// ---------------------------------------------------------------------------------------------
// Convolution

typedef struct {
    op_case base;
    const float *x, *w, *b;
    int n, cin, h, wd, cout, k, stride, pt, pl, pb, pr;
} conv_case;

static void conv_run(sdg_exec *ex, const op_case *c)
{
    const conv_case *v = (const conv_case *)c;
    sdg_op_conv2d(ex, v->x, v->n, v->cin, v->h, v->wd, sdg_weight_f32(v->w), v->b, v->cout, v->k, v->stride,
                  v->pt, v->pl, v->pb, v->pr, v->base.out);
}

static void check_conv_tol(int n, int cin, int h, int w, int cout, int k, int stride, int pt,
                           int pl, int pb, int pr, bool bias, double tol)
{
    int oh = sdg_conv_out_size(h, k, stride, pt, pb), ow = sdg_conv_out_size(w, k, stride, pl, pr);
    size_t ny = (size_t)n * cout * oh * ow;
    float *x = rand_buf((size_t)n * cin * h * w, -1, 1);
    float *wt = rand_buf((size_t)cout * cin * k * k, -0.3f, 0.3f);
    float *b = bias ? rand_buf(cout, -1, 1) : NULL;
    float *out = g_new(float, ny), *ref = g_new(float, ny);
    conv_case v = {{conv_run, out, ny, NULL}, x, wt, b, n, cin, h, w, cout, k, stride,
                   pt, pl, pb, pr};
    case_run(&v.base);
    sdg_op_conv2d_ref(x, n, cin, h, w, wt, b, cout, k, stride, pt, pl, pb, pr, ref);
    char what[128];
    g_snprintf(what, sizeof what, "conv2d n=%d %dx%dx%d->%d k=%d s=%d pad=(%d,%d,%d,%d)", n, cin,
               h, w, cout, k, stride, pt, pl, pb, pr);
    g_assert_cmpfloat(rel_error(what, out, ref, ny), <=, tol);
    g_free(x);
    g_free(wt);
    g_free(b);
    g_free(out);
    g_free(ref);
}

static void check_conv(int n, int cin, int h, int w, int cout, int k, int stride, int pt, int pl,
                       int pb, int pr, bool bias)
{
    check_conv_tol(n, cin, h, w, cout, k, stride, pt, pl, pb, pr, bias, TOL_CONV);
}

static void test_conv3x3(void)
{
    check_conv(2, 5, 9, 7, 6, 3, 1, 1, 1, 1, 1, true);        // ResBlock conv, batch 2
    check_conv(1, 7, 11, 13, 4, 3, 2, 0, 0, 1, 1, true);      // VAE downsample padding
    check_conv(2, 3, 10, 8, 5, 3, 2, 1, 1, 1, 1, false);      // UNet downsample, even size
    check_conv(1, 3, 1, 2, 2, 3, 1, 1, 1, 1, 1, true);        // smaller than the kernel
    check_conv(1, 2, 4, 5, 3, 3, 1, 2, 3, 0, 2, true);        // rows/cols entirely padding
    check_conv(1, 4, 6, 5, 3, 5, 3, 2, 1, 2, 0, true);        // 5x5, stride 3
    check_conv(1, 33, 17, 19, 7, 3, 1, 1, 1, 1, 1, true);     // cin not a multiple of anything
}

static void test_conv1x1(void)
{
    check_conv(2, 13, 5, 6, 9, 1, 1, 0, 0, 0, 0, true);       // straight to GEMM
    check_conv(2, 13, 5, 6, 9, 1, 1, 0, 0, 0, 0, false);
    check_conv(1, 6, 7, 9, 4, 1, 2, 0, 0, 0, 0, true);        // strided 1x1 goes via im2col
    check_conv(1, 5, 4, 4, 3, 1, 1, 1, 0, 0, 1, true);        // padded 1x1 likewise
}

// Winograd F(4,3): the `fast` precision's 3x3 convolution on kernel sets without bfloat16
// products (on a BF16 set, its float32 companion is forced for this test).
static void test_conv_winograd(void)
{
    sdg_kernels set = sdg_gemm_kernels();
    if (sdg_gemm_fast_is_bf16())
        sdg_gemm_force(set == SDG_KERNELS_AVX512_BF16 ? SDG_KERNELS_AVX512 : SDG_KERNELS_C);
    ops_fast = true;
    sdg_exec probe;
    sdg__exec_init(&probe, 1);
    probe.fast = true;
    g_assert_true(sdg__winograd_applies(&probe, 3, 1, 32, 32));
    g_assert_false(sdg__winograd_applies(&probe, 3, 1, 31, 64));
    g_assert_false(sdg__winograd_applies(&probe, 3, 2, 64, 64));
    check_conv_tol(2, 5, 33, 34, 6, 3, 1, 1, 1, 1, 1, true, TOL_WINOGRAD);  // partial tiles
    check_conv_tol(1, 7, 37, 35, 4, 3, 1, 0, 2, 2, 0, false, TOL_WINOGRAD); // uneven padding
    check_conv_tol(2, 40, 36, 64, 64, 3, 1, 1, 1, 1, 1, true, TOL_WINOGRAD); // tile blocks
    // Smaller than 32x32 and strided convolutions keep the direct path, exact-precision error.
    check_conv_tol(1, 3, 16, 16, 5, 3, 1, 1, 1, 1, 1, true, TOL_CONV);
    check_conv_tol(2, 3, 10, 8, 5, 3, 2, 1, 1, 1, 1, false, TOL_CONV);
    ops_fast = false;
    sdg_gemm_force(set);
}

static void test_conv_tiled(void)
{
    // 576 x 129*129 floats is more than an explicit im2col may take: the implicit GEMM packs
    // element by element (odd width), across block and panel seams.
    check_conv(1, 64, 129, 129, 3, 3, 1, 1, 1, 1, 1, true);
    // The implicit GEMM's fast path (stride 1, output rows a multiple of 16 wide): 16 input
    // pixels per panel row, clipped at the left and right padding and the image's edges.
    check_conv(2, 11, 9, 32, 7, 3, 1, 1, 1, 1, 1, true);
    check_conv(1, 3, 5, 16, 20, 3, 1, 0, 2, 2, 0, true);
    // Wide enough for several column blocks and k blocks of the GEMM.
    check_conv(1, 40, 12, 48, 13, 3, 1, 1, 1, 1, 1, false);
}

// ---------------------------------------------------------------------------------------------
// Normalisation

typedef struct {
    op_case base;
    const float *x, *gamma, *beta;
    int n, c, groups;
    size_t hw;
    bool silu;
} gn_case;

static void gn_run(sdg_exec *ex, const op_case *c)
{
    const gn_case *g = (const gn_case *)c;
    // In place when init is set: x is the output buffer itself.
    const float *x = g->base.init ? g->base.out : g->x;
    sdg_op_group_norm(ex, x, g->n, g->c, g->hw, g->groups, g->gamma, g->beta, 1e-5f, g->silu,
                      g->base.out);
}

static void check_group_norm(int n, int c, size_t hw, int groups, bool silu, bool affine,
                             bool in_place, float offset)
{
    size_t nx = (size_t)n * c * hw;
    float *x = rand_buf(nx, -2, 2);
    for (size_t i = 0; i < nx; i++)
        x[i] += offset;
    float *gamma = affine ? rand_buf(c, 0.5f, 1.5f) : NULL;
    float *beta = affine ? rand_buf(c, -1, 1) : NULL;
    float *out = g_new(float, nx), *ref = g_new(float, nx);
    gn_case g = {{gn_run, out, nx, in_place ? x : NULL}, x, gamma, beta, n, c, groups, hw, silu};
    case_run(&g.base);
    sdg_op_group_norm_ref(x, n, c, hw, groups, gamma, beta, 1e-5f, silu, ref);
    char what[128];
    g_snprintf(what, sizeof what, "group_norm n=%d c=%d hw=%zu g=%d silu=%d affine=%d inplace=%d"
               " offset=%g", n, c, hw, groups, silu, affine, in_place, offset);
    g_assert_cmpfloat(rel_error(what, out, ref, nx), <=, TOL_GROUP_NORM);
    g_free(x);
    g_free(gamma);
    g_free(beta);
    g_free(out);
    g_free(ref);
}

static void test_group_norm(void)
{
    check_group_norm(2, 12, 35, 4, false, true, false, 0.0f);
    check_group_norm(2, 12, 35, 4, true, true, false, 0.0f);
    check_group_norm(1, 9, 1, 3, true, false, false, 0.0f);
    check_group_norm(2, 12, 35, 4, true, true, true, 0.0f);       // y aliases x
    check_group_norm(1, 64, 1031, 32, true, true, false, 0.0f);   // threaded
    check_group_norm(1, 64, 257, 32, false, true, false, 50.0f);  // mean >> std
}

typedef struct {
    op_case base;
    const float *x, *gamma, *beta;
    size_t rows;
    int c;
} ln_case;

static void ln_run(sdg_exec *ex, const op_case *c)
{
    const ln_case *l = (const ln_case *)c;
    const float *x = l->base.init ? l->base.out : l->x;
    sdg_op_layer_norm(ex, x, l->rows, l->c, l->gamma, l->beta, 1e-5f, l->base.out);
}

static void check_layer_norm(size_t rows, int c, bool affine, bool in_place, float offset)
{
    size_t nx = rows * c;
    float *x = rand_buf(nx, -3, 3);
    for (size_t i = 0; i < nx; i++)
        x[i] += offset;
    float *gamma = affine ? rand_buf(c, 0.5f, 1.5f) : NULL;
    float *beta = affine ? rand_buf(c, -1, 1) : NULL;
    float *out = g_new(float, nx), *ref = g_new(float, nx);
    ln_case l = {{ln_run, out, nx, in_place ? x : NULL}, x, gamma, beta, rows, c};
    case_run(&l.base);
    sdg_op_layer_norm_ref(x, rows, c, gamma, beta, 1e-5f, ref);
    char what[128];
    g_snprintf(what, sizeof what, "layer_norm %zux%d affine=%d inplace=%d offset=%g", rows, c,
               affine, in_place, offset);
    g_assert_cmpfloat(rel_error(what, out, ref, nx), <=, TOL_LAYER_NORM);
    g_free(x);
    g_free(gamma);
    g_free(beta);
    g_free(out);
    g_free(ref);
}

static void test_layer_norm(void)
{
    check_layer_norm(33, 77, true, false, 0.0f);
    check_layer_norm(33, 77, false, false, 0.0f);
    check_layer_norm(33, 77, true, true, 0.0f);
    check_layer_norm(301, 320, true, false, 0.0f);     // threaded
    check_layer_norm(17, 768, true, false, 40.0f);     // mean >> std
}

// ---------------------------------------------------------------------------------------------
// Element-wise

enum { EW_SILU, EW_GELU, EW_QUICK_GELU, EW_RELU, EW_SCALE, EW_ADD, EW_COUNT };
static const char *const ew_names[EW_COUNT] = {"silu", "gelu", "quick_gelu", "relu", "scale",
                                               "add"};

typedef struct {
    op_case base;
    int kind;
    const float *x, *x2;
    size_t n;
} ew_case;

static void ew_run(sdg_exec *ex, const op_case *c)
{
    const ew_case *e = (const ew_case *)c;
    const float *x = e->base.init ? e->base.out : e->x;   // in place: y aliases x
    float *y = e->base.out;
    switch (e->kind) {
    case EW_SILU: sdg_op_silu(ex, x, e->n, y); break;
    case EW_GELU: sdg_op_gelu(ex, x, e->n, y); break;
    case EW_QUICK_GELU: sdg_op_quick_gelu(ex, x, e->n, y); break;
    case EW_RELU: sdg_op_relu(ex, x, e->n, y); break;
    case EW_SCALE: sdg_op_scale(ex, x, e->n, 0.18215f, y); break;
    case EW_ADD: sdg_op_add(ex, x, e->x2, e->n, y); break;
    }
}

static double ew_formula(int kind, double x, double x2)
{
    switch (kind) {
    case EW_SILU: return x / (1.0 + exp(-x));
    case EW_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case EW_QUICK_GELU: return x / (1.0 + exp(-1.702 * x));
    case EW_RELU: return x > 0.0 ? x : 0.0;
    case EW_SCALE: return x * (double)0.18215f;
    case EW_ADD: return x + x2;
    }
    return 0.0;
}

static void test_elementwise(void)
{
    // Inputs of their own, whatever the tests before drew: a one-element case is only as hard
    // as the element it gets (x * sigmoid(1.702 x) at x = -9 is off by 6e-7 relative in any
    // float32 evaluation: the rounding of 1.702 x, times the exponent's condition number 15).
    rng_state = 0x9E3779B97F4A7C15ull;
    const size_t sizes[] = {1, 7, 100003};   // the last one runs threaded
    for (int kind = 0; kind < EW_COUNT; kind++)
        for (size_t si = 0; si < G_N_ELEMENTS(sizes); si++)
            for (int in_place = 0; in_place < 2; in_place++) {
                size_t n = sizes[si];
                float *x = rand_buf(n, -8, 8), *x2 = rand_buf(n, -8, 8);
                float *out = g_new(float, n), *ref = g_new(float, n);
                ew_case e = {{ew_run, out, n, in_place ? x : NULL}, kind, x, x2, n};
                case_run(&e.base);
                for (size_t i = 0; i < n; i++)
                    ref[i] = (float)ew_formula(kind, x[i], x2[i]);
                char what[64];
                g_snprintf(what, sizeof what, "%s n=%zu inplace=%d", ew_names[kind], n, in_place);
                g_assert_cmpfloat(rel_error(what, out, ref, n), <=, TOL_ELEMENTWISE);
                if (kind == EW_RELU || kind == EW_ADD)          // exact in fp32
                    g_assert_true(memcmp(out, ref, n * sizeof *out) == 0);
                g_free(x);
                g_free(x2);
                g_free(out);
                g_free(ref);
            }
}

// ops.c has its own exp (clamped to [-87, 88]); the activations must still be right far out.
static void test_elementwise_extremes(void)
{
    const float xs[] = {-1000.0f, -200.0f, -90.0f, -88.5f, -87.5f, -87.0f, -60.0f, -20.0f,
                        -1e-30f, 0.0f, 1e-30f, 20.0f, 60.0f, 87.0f, 88.5f, 90.0f, 200.0f, 1e30f};
    size_t n = G_N_ELEMENTS(xs);
    float y[G_N_ELEMENTS(xs)];
    sdg_exec ex;
    sdg__exec_init(&ex, 1);
    for (int kind = EW_SILU; kind <= EW_QUICK_GELU; kind++) {
        ew_case e = {{ew_run, y, n, NULL}, kind, xs, xs, n};
        ew_run(&ex, &e.base);
        for (size_t i = 0; i < n; i++) {
            double want = ew_formula(kind, xs[i], 0.0);
            double tol = 1e-6 * fabs(want) + 1e-30;
            if (!(fabs(y[i] - want) <= tol))
                g_test_message("%s(%g) = %.9g, want %.9g", ew_names[kind], xs[i], y[i], want);
            g_assert_cmpfloat(fabs(y[i] - want), <=, tol);
        }
    }
    sdg__exec_free(&ex);
}

typedef struct {
    op_case base;
    int n, c;
    size_t hw;
    const float *v;
} addch_case;

static void addch_run(sdg_exec *ex, const op_case *c)
{
    const addch_case *a = (const addch_case *)c;
    sdg_op_add_channel(ex, a->base.out, a->n, a->c, a->hw, a->v);
}

static void test_add_channel(void)
{
    int n = 2, c = 37;
    size_t hw = 1031;
    size_t nx = (size_t)n * c * hw;
    float *x = rand_buf(nx, -1, 1), *v = rand_buf((size_t)n * c, -1, 1), *out = g_new(float, nx);
    addch_case a = {{addch_run, out, nx, x}, n, c, hw, v};
    case_run(&a.base);
    for (int b = 0; b < n; b++)
        for (int ch = 0; ch < c; ch++)
            for (size_t i = 0; i < hw; i++) {
                size_t at = ((size_t)b * c + ch) * hw + i;
                g_assert_cmpfloat(out[at], ==, x[at] + v[b * c + ch]);
            }
    g_free(x);
    g_free(v);
    g_free(out);
}

typedef struct {
    op_case base;
    const float *x;
    size_t rows;
    int d;
} geglu_case;

static void geglu_run(sdg_exec *ex, const op_case *c)
{
    const geglu_case *g = (const geglu_case *)c;
    sdg_op_geglu(ex, g->x, g->rows, g->d, g->base.out);
}

static void test_geglu(void)
{
    const size_t rows_list[] = {3, 257};
    for (size_t ri = 0; ri < G_N_ELEMENTS(rows_list); ri++) {
        size_t rows = rows_list[ri];
        int d = 131;
        float *x = rand_buf(rows * 2 * d, -5, 5);
        float *out = g_new(float, rows * d), *ref = g_new(float, rows * d);
        geglu_case g = {{geglu_run, out, rows * d, NULL}, x, rows, d};
        case_run(&g.base);
        for (size_t r = 0; r < rows; r++)
            for (int j = 0; j < d; j++) {
                double a = x[r * 2 * d + j], gate = x[r * 2 * d + d + j];
                ref[r * d + j] = (float)(a * 0.5 * gate * (1.0 + erf(gate / sqrt(2.0))));
            }
        g_assert_cmpfloat(rel_error("geglu", out, ref, rows * d), <=, TOL_GEGLU);
        g_free(x);
        g_free(out);
        g_free(ref);
    }
}

// ---------------------------------------------------------------------------------------------
// Data movement (exact)

typedef struct {
    op_case base;
    const float *x;
    int n, c, h, w;
} up_case;

static void up_run(sdg_exec *ex, const op_case *c)
{
    const up_case *u = (const up_case *)c;
    sdg_op_upsample2x(ex, u->x, u->n, u->c, u->h, u->w, u->base.out);
}

static void test_upsample2x(void)
{
    int n = 2, c = 5, h = 7, w = 9;
    size_t ny = (size_t)n * c * 4 * h * w;
    float *x = rand_buf((size_t)n * c * h * w, -1, 1), *out = g_new(float, ny);
    up_case u = {{up_run, out, ny, NULL}, x, n, c, h, w};
    case_run(&u.base);
    for (int p = 0; p < n * c; p++)
        for (int oy = 0; oy < 2 * h; oy++)
            for (int ox = 0; ox < 2 * w; ox++)
                g_assert_cmpfloat(out[((size_t)p * 2 * h + oy) * 2 * w + ox], ==,
                                  x[((size_t)p * h + oy / 2) * w + ox / 2]);
    g_free(x);
    g_free(out);
}

typedef struct {
    op_case base;
    const float *x;
    int n;
    size_t rows, cols;
} tr_case;

static void tr_run(sdg_exec *ex, const op_case *c)
{
    const tr_case *t = (const tr_case *)c;
    sdg_op_transpose(ex, t->x, t->n, t->rows, t->cols, t->base.out);
}

static void test_transpose(void)
{
    const size_t shapes[][2] = {{1, 1}, {5, 3}, {67, 33}, {320, 257}};
    for (size_t si = 0; si < G_N_ELEMENTS(shapes); si++) {
        int n = 2;
        size_t rows = shapes[si][0], cols = shapes[si][1], nx = n * rows * cols;
        float *x = rand_buf(nx, -1, 1), *out = g_new(float, nx);
        tr_case t = {{tr_run, out, nx, NULL}, x, n, rows, cols};
        case_run(&t.base);
        for (int b = 0; b < n; b++)
            for (size_t i = 0; i < rows; i++)
                for (size_t j = 0; j < cols; j++)
                    g_assert_cmpfloat(out[b * rows * cols + j * rows + i], ==,
                                      x[b * rows * cols + i * cols + j]);
        g_free(x);
        g_free(out);
    }
}

typedef struct {
    op_case base;
    const float *a, *b;
    int ca, cb, n;
    size_t hw;
} cat_case;

static void cat_run(sdg_exec *ex, const op_case *c)
{
    const cat_case *k = (const cat_case *)c;
    sdg_op_concat_channels(ex, k->a, k->ca, k->b, k->cb, k->n, k->hw, k->base.out);
}

static void test_concat(void)
{
    int n = 2, ca = 5, cb = 3;
    size_t hw = 77, ny = (size_t)n * (ca + cb) * hw;
    float *a = rand_buf((size_t)n * ca * hw, -1, 1), *b = rand_buf((size_t)n * cb * hw, -1, 1);
    float *out = g_new(float, ny);
    cat_case k = {{cat_run, out, ny, NULL}, a, b, ca, cb, n, hw};
    case_run(&k.base);
    for (int bi = 0; bi < n; bi++)
        for (int ch = 0; ch < ca + cb; ch++)
            for (size_t i = 0; i < hw; i++) {
                float want = ch < ca ? a[((size_t)bi * ca + ch) * hw + i]
                                     : b[((size_t)bi * cb + ch - ca) * hw + i];
                g_assert_cmpfloat(out[((size_t)bi * (ca + cb) + ch) * hw + i], ==, want);
            }
    g_free(a);
    g_free(b);
    g_free(out);
}

// ---------------------------------------------------------------------------------------------
// Attention

typedef struct {
    op_case base;
    const float *q, *k, *v;
    int ldq, ldk, ldv, ldo, n, tq, tk, heads, dh;
    bool causal;
} attn_case;

static void attn_run(sdg_exec *ex, const op_case *c)
{
    const attn_case *a = (const attn_case *)c;
    sdg_op_attention(ex, a->q, a->ldq, a->k, a->ldk, a->v, a->ldv, a->n, a->tq, a->tk, a->heads,
                     a->dh, 1.0f / sqrtf((float)a->dh), a->causal, a->base.out, a->ldo);
}

// With fused = true, q, k and v are the three column blocks of one [n, t, 3*width + 3] buffer
// (ld > width, the way a fused qkv projection lays them out); otherwise each has its own ld.
static void check_attention(int n, int tq, int tk, int heads, int dh, bool causal, bool fused)
{
    int width = heads * dh;
    attn_case a = {.n = n, .tq = tq, .tk = tk, .heads = heads, .dh = dh, .causal = causal};
    float *qb, *kb, *vb;
    if (fused) {
        g_assert_cmpint(tq, ==, tk);
        int ld = 3 * width + 3;
        qb = rand_buf((size_t)n * tq * ld, -2, 2);
        kb = vb = NULL;
        a.q = qb;
        a.k = qb + width + 1;
        a.v = qb + 2 * width + 2;
        a.ldq = a.ldk = a.ldv = ld;
    } else {
        a.ldq = width + 5;
        a.ldk = width;
        a.ldv = width + 2;
        qb = rand_buf((size_t)n * tq * a.ldq, -2, 2);
        kb = rand_buf((size_t)n * tk * a.ldk, -2, 2);
        vb = rand_buf((size_t)n * tk * a.ldv, -2, 2);
        a.q = qb;
        a.k = kb;
        a.v = vb;
    }
    a.ldo = width + 7;
    size_t no = (size_t)n * tq * a.ldo;
    float *out = g_new(float, no), *ref = g_new(float, no);
    a.base = (op_case){attn_run, out, no, NULL};
    case_run(&a.base);
    // The padding columns of out are the op's to leave alone.
    for (size_t r = 0; r < (size_t)n * tq; r++)
        for (int j = width; j < a.ldo; j++)
            g_assert_true(is_sentinel(&out[r * a.ldo + j]));
    memcpy(ref, out, no * sizeof *ref);
    sdg_op_attention_ref(a.q, a.ldq, a.k, a.ldk, a.v, a.ldv, n, tq, tk, heads, dh,
                         1.0f / sqrtf((float)dh), causal, ref, a.ldo);
    char what[128];
    g_snprintf(what, sizeof what, "attention n=%d tq=%d tk=%d heads=%d dh=%d causal=%d fused=%d",
               n, tq, tk, heads, dh, causal, fused);
    // Padding columns are bit-equal in both (sentinels), so they add nothing to the error.
    for (size_t r = 0; r < (size_t)n * tq; r++)
        for (int j = width; j < a.ldo; j++)
            out[r * a.ldo + j] = ref[r * a.ldo + j] = 0.0f;
    g_assert_cmpfloat(rel_error(what, out, ref, no), <=, TOL_ATTENTION);
    g_free(qb);
    g_free(kb);
    g_free(vb);
    g_free(out);
    g_free(ref);
}

static void test_attention(void)
{
    check_attention(2, 37, 29, 3, 16, false, false);   // cross-attention shape, tq != tk
    check_attention(1, 5, 77, 2, 8, false, false);      // tk > tq (text context)
    check_attention(2, 23, 23, 4, 8, true, true);       // CLIP: causal, fused qkv
    check_attention(1, 19, 13, 2, 5, true, false);      // causal with tq > tk
    check_attention(1, 1, 1, 1, 1, false, false);
    check_attention(1, 211, 197, 2, 40, false, false);  // softmax rows threaded
    check_attention(1, 211, 211, 3, 24, true, true);
    // The tiled (online softmax) path: several key blocks of 256 and query blocks of 64, a last
    // key block of 1, causal rows that see only some blocks, and a head wider than one pass
    // (512 output columns at a time).
    check_attention(1, 130, 513, 2, 40, false, false);
    check_attention(1, 600, 600, 1, 16, true, true);
    check_attention(1, 70, 300, 1, 520, false, false);
}

// A mask that keeps the row maximum huge must not overflow: scores far apart in magnitude.
static void test_attention_large_scores(void)
{
    int tq = 9, tk = 11, dh = 4;
    float *q = rand_buf((size_t)tq * dh, -40, 40), *k = rand_buf((size_t)tk * dh, -40, 40);
    float *v = rand_buf((size_t)tk * dh, -1, 1);
    float *out = g_new(float, (size_t)tq * dh), *ref = g_new(float, (size_t)tq * dh);
    sdg_exec ex;
    sdg__exec_init(&ex, 2);
    g_assert_cmpint(sdg__exec_reserve(&ex, (size_t)tq * tk * sizeof(float) + 64, NULL), ==,
                    SDG_OK);
    sdg_op_attention(&ex, q, dh, k, dh, v, dh, 1, tq, tk, 1, dh, 1.0f, false, out, dh);
    sdg__exec_free(&ex);
    sdg_op_attention_ref(q, dh, k, dh, v, dh, 1, tq, tk, 1, dh, 1.0f, false, ref, dh);
    for (int i = 0; i < tq * dh; i++)
        g_assert_true(isfinite(out[i]));
    // measured 0: op and reference agree bit for bit here; TOL_ATTENTION allows another order
    g_assert_cmpfloat(rel_error("attention large scores", out, ref, (size_t)tq * dh), <=,
                      TOL_ATTENTION);
    g_free(q);
    g_free(k);
    g_free(v);
    g_free(out);
    g_free(ref);
}

// ---------------------------------------------------------------------------------------------

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/tensor/gemm/f32", test_gemm);
    g_test_add_func("/tensor/linear/f32", test_linear);
    g_test_add_func("/tensor/conv2d/3x3", test_conv3x3);
    g_test_add_func("/tensor/conv2d/1x1", test_conv1x1);
    g_test_add_func("/tensor/conv2d/tiled", test_conv_tiled);
    g_test_add_func("/tensor/conv2d/winograd", test_conv_winograd);
    g_test_add_func("/tensor/group_norm/f32", test_group_norm);
    g_test_add_func("/tensor/layer_norm/f32", test_layer_norm);
    g_test_add_func("/tensor/elementwise/f32", test_elementwise);
    g_test_add_func("/tensor/elementwise/extremes", test_elementwise_extremes);
    g_test_add_func("/tensor/add_channel/f32", test_add_channel);
    g_test_add_func("/tensor/geglu/f32", test_geglu);
    g_test_add_func("/tensor/upsample2x/f32", test_upsample2x);
    g_test_add_func("/tensor/transpose/f32", test_transpose);
    g_test_add_func("/tensor/concat_channels/f32", test_concat);
    g_test_add_func("/tensor/attention/f32", test_attention);
    g_test_add_func("/tensor/attention/large_scores", test_attention_large_scores);
    return g_test_run();
}
