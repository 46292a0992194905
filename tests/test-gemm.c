/*
 * test-gemm.c - sdg_gemm (engine/tensor/gemm.h) on its own, with every kernel set this CPU can
 * run, forced one after another with sdg_gemm_force (sets the CPU lacks are skipped, with a
 * message).
 *
 * Per set:
 *   shapes    odd shapes around every tile and block size (6, 16, 32, 96, 256, 384 in M and N;
 *             K = 1, 2, 3, around 256 and 1000), alpha and beta of all kinds (beta 0 never reads
 *             C, which starts as NaN), against a double-precision reference; and bit for bit
 *             against a scalar emulation of the order gemm.h promises (each element's k products
 *             summed in k-blocks of GEMM_KC, each block one chain in ascending k: FMAs on the
 *             FMA sets, a multiply then an add on the portable ones; `fast` on a bfloat16 set:
 *             vdpbf16ps's pairs). C outside the m x n result (ldc padding, rows after it) must
 *             keep its sentinel bytes.
 *   operands  the same product from every form of operand: float32 row-major or transposed
 *             (rs = 1, cs = ld) with leading dimensions wider than the matrix, weights in F32,
 *             F16 and BF16 row-major or packed as SDG_PANEL_A / SDG_PANEL_B panels. The values
 *             are rounded to the 16-bit type first, so every form holds the same numbers and
 *             must give the same bits (exact and fast).
 *   padding   packed weights' padding rows are zeros (sdg__pack_panels); set to NaN they change
 *             no bit of the result.
 *   conv      the implicit im2col operand (sdg_gemm_conv) against an explicit im2col: the same
 *             bits as the explicit one as a float32 operand, and the double reference.
 *   threads   the same bits with 1, 2 and 3 threads on products cut into many blocks.
 *
 * Not here: the ops built on sdg_gemm (test-ops), speed (tools/benchmark).
 */
#include <glib.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "loader/safetensors.h"   // sdg__f32_to_f16, sdg__f16_to_f32
#include "tensor/gemm.h"

// Relative error against the double reference: max|got - ref| / max|ref| (rel_error says when
// the scale is another).
//
// exact: float32 products and sums. About 5x the worst measured over the cases below, per set
// (the sums here are at most 1000 long; the error grows with the length of the sums):
#define TOL_EXACT 4e-6   // measured 7.9e-7 with each of c, avx2, c-bf16 (384x37x300)
//
// fast: the products of bfloat16-rounded operands (8 significant bits: relative rounding error
// at most u = 2^-9 per operand, so at most 2u + u^2 ~ 2^-8 per product), summed in float32. With
// one product (K = 1) the error is at most 2^-8 max|ref|; with K products of random sign it is a
// random walk like the result itself, so error / max|ref| stays about the same whatever K (the
// float32 sums add ~1e-7). The bound is 2x the one-product bound:
#define TOL_FAST 0x1p-7  // = 7.8e-3; measured c-bf16 4.0e-3 (13x1x17), and on 48x48 results
                         // 3.4e-3 (K = 1), 1.8-2.4e-3 (K = 4 .. 4096)

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

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// float32 to bfloat16, round to nearest even (finite values; written here independently of
// the engine's).
static uint16_t to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    uint32_t r = u + 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(r >> 16);
}

static float bf16_value(float f)
{
    return bits_f32((uint32_t)to_bf16(f) << 16);
}

// f rounded to what storage type dt holds.
static float round_to(sdg_dtype dt, float f)
{
    switch (dt) {
    case SDG_DT_F16: return sdg__f16_to_f32(sdg__f32_to_f16(f));
    case SDG_DT_BF16: return bf16_value(f);
    default: return f;
    }
}

// n random values in [-1, 1), rounded to dt.
static float *rand_matrix(size_t n, sdg_dtype dt)
{
    float *p = g_new(float, n ? n : 1);
    for (size_t i = 0; i < n; i++)
        p[i] = round_to(dt, rng_uniform(-1.0f, 1.0f));
    return p;
}

static const char *dtype_name(sdg_dtype dt)
{
    return dt == SDG_DT_F32 ? "f32" : dt == SDG_DT_F16 ? "f16" : "bf16";
}

// ---------------------------------------------------------------------------------------------
// Operands in every form

typedef enum { LAYOUT_ROWS, LAYOUT_COLS, LAYOUT_PANEL } layout;

typedef struct {
    layout lay;
    sdg_dtype dt;
    int pad;          // leading dimension = width + pad (LAYOUT_ROWS, LAYOUT_COLS)
} form;

static const char *form_name(form f, char *buf, size_t size)
{
    static const char *const names[] = {"rows", "cols", "panel"};
    g_snprintf(buf, size, "%s-%s%s", names[f.lay], dtype_name(f.dt), f.pad ? "+pad" : "");
    return buf;
}

// An operand and its storage (g_free mem).
typedef struct {
    void *mem;
    size_t mem_n;      // elements in mem
    int64_t rows, cols;  // LAYOUT_PANEL: the weight W[rows, cols] packed
    int panel;           // LAYOUT_PANEL: its panel height (0: not packed)
    sdg_gemm_operand op;
} stored;

// NaN in storage type dt (where the product must never look: gaps between rows, padding).
static void put_nan(void *mem, sdg_dtype dt, size_t i)
{
    if (dt == SDG_DT_F32)
        ((float *)mem)[i] = NAN;
    else
        ((uint16_t *)mem)[i] = dt == SDG_DT_F16 ? 0x7e00 : 0x7fc0;
}

static void put(void *mem, sdg_dtype dt, size_t i, float v)
{
    if (dt == SDG_DT_F32)
        ((float *)mem)[i] = v;
    else
        ((uint16_t *)mem)[i] = dt == SDG_DT_F16 ? sdg__f32_to_f16(v) : to_bf16(v);
}

// Stores the logical matrix x[rows][cols] (A: rows = m, cols = k; B: rows = k, cols = n) in form
// f. A panel operand is a weight W packed with sdg__pack_panels: W = A as SDG_PANEL_A, W = B^T as
// SDG_PANEL_B; its padding rows are left as sdg__pack_panels writes them (zeros).
static stored store(form f, const float *x, int rows, int cols, bool is_a)
{
    stored s = {0};
    size_t es = sdg_dtype_size(f.dt);
    if (f.lay == LAYOUT_PANEL) {
        int wr = is_a ? rows : cols, wc = is_a ? cols : rows;   // W[wr, wc]
        int panel = is_a ? SDG_PANEL_A : SDG_PANEL_B;
        int64_t padded = (wr + sdg_panel_pad(panel) - 1) / sdg_panel_pad(panel) *
                         sdg_panel_pad(panel);
        void *w = g_malloc((size_t)wr * wc * es);
        for (int r = 0; r < wr; r++)
            for (int c = 0; c < wc; c++)
                put(w, f.dt, (size_t)r * wc + c, is_a ? x[(size_t)r * cols + c]
                                                      : x[(size_t)c * cols + r]);
        s.mem_n = (size_t)padded * wc;
        s.mem = g_malloc(s.mem_n * es);
        memset(s.mem, 0xA5, s.mem_n * es);   // sdg__pack_panels must write every byte
        sdg__pack_panels(s.mem, w, es, wc, 0, wr, wr, wc, panel);
        s.rows = wr;
        s.cols = wc;
        s.panel = panel;
        g_free(w);
        sdg_weight wt = {s.mem, f.dt, panel};
        s.op = is_a ? sdg_gemm_weight_a(wt, wc) : sdg_gemm_weight_b(wt, wc);
        return s;
    }
    bool by_rows = f.lay == LAYOUT_ROWS;
    int outer = by_rows ? rows : cols, inner = by_rows ? cols : rows;
    int ld = inner + f.pad;
    s.mem_n = (size_t)outer * ld;
    s.mem = g_malloc((s.mem_n ? s.mem_n : 1) * es);
    for (int o = 0; o < outer; o++)
        for (int i = 0; i < ld; i++) {
            size_t at = (size_t)o * ld + i;
            if (i >= inner)
                put_nan(s.mem, f.dt, at);
            else
                put(s.mem, f.dt, at, by_rows ? x[(size_t)o * cols + i] : x[(size_t)i * cols + o]);
        }
    s.op = (sdg_gemm_operand){s.mem, f.dt, by_rows ? ld : 1, by_rows ? 1 : ld, 0, NULL};
    return s;
}

// Whether element i of a packed weight is padding: its row, (i / (panel cols)) panel + i % panel,
// is past the weight's rows (the last panel holds some, interleaved with real ones).
static bool is_padding(const stored *s, size_t i)
{
    int64_t row = (int64_t)(i / ((size_t)s->panel * s->cols)) * s->panel + (int64_t)(i % s->panel);
    return row >= s->rows;
}

// The number of padding elements of a packed weight, -1 when one of them is not zero bits.
static int64_t padding_zeros(const stored *s)
{
    size_t es = sdg_dtype_size(s->op.dtype);
    int64_t count = 0;
    for (size_t i = 0; i < s->mem_n; i++)
        if (is_padding(s, i)) {
            for (size_t b = 0; b < es; b++)
                if (((const uint8_t *)s->mem)[i * es + b] != 0)
                    return -1;
            count++;
        }
    return count;
}

static void poison_padding(stored *s)
{
    for (size_t i = 0; i < s->mem_n; i++)
        if (is_padding(s, i))
            put_nan(s->mem, s->op.dtype, i);
}

// ---------------------------------------------------------------------------------------------
// Running a product

#define SENTINEL_BYTE 0xA5
#define GUARD_ROWS 2

static bool is_sentinel(const float *p)
{
    unsigned char s[sizeof(float)];
    memset(s, SENTINEL_BYTE, sizeof s);
    return memcmp(p, s, sizeof s) == 0;
}

// One product: C[m, n] (row stride n + padc) starting as c0 (or NaN when beta == 0), with
// sentinel bytes in the padding columns and GUARD_ROWS rows after it, which must survive.
// Returns the m x n result (g_free).
static float *run(int threads, bool fast, int m, int n, int k, float alpha,
                  const sdg_gemm_operand *a, const sdg_gemm_operand *b, float beta,
                  const float *c0, int padc)
{
    ptrdiff_t ldc = n + padc;
    size_t total = (size_t)(m + GUARD_ROWS) * ldc;
    float *c = g_new(float, total ? total : 1);
    memset(c, SENTINEL_BYTE, total * sizeof *c);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            c[i * ldc + j] = beta == 0.0f ? NAN : c0[(size_t)i * n + j];
    sdg_exec ex;
    sdg__exec_init(&ex, threads);
    ex.fast = fast;
    sdg_gemm(&ex, m, n, k, alpha, a, b, beta, c, ldc);
    g_assert_cmpuint(ex.flops, ==, 2 * (uint64_t)m * n * k);
    sdg__exec_free(&ex);
    float *out = g_new(float, (size_t)m * n + 1);
    size_t outside = 0;
    for (int i = 0; i < m + GUARD_ROWS; i++)
        for (int j = 0; j < ldc; j++) {
            if (i < m && j < n)
                out[(size_t)i * n + j] = c[i * ldc + j];
            else if (!is_sentinel(&c[i * ldc + j]))
                outside++;
        }
    if (outside) {
        g_test_message("%dx%dx%d: %zu floats written outside C", m, n, k, outside);
        g_test_fail();
    }
    g_free(c);
    return out;
}

// The reference: alpha A B + beta c0 in double, from the logical matrices, and the scale errors
// are measured against (see rel_error).
typedef struct {
    double *v;         // [m][n]
    size_t n;
    double scale;      // max(max|v|, max over elements of sqrt(sum_k (alpha a b)^2 + (beta c)^2))
} reference;

static reference reference_new(int m, int n, int k, float alpha, const float *a, const float *b,
                               float beta, const float *c0)
{
    reference r = {g_new0(double, (size_t)m * n + 1), (size_t)m * n, 0.0};
    double *sq = g_new0(double, (size_t)n + 1);
    for (int i = 0; i < m; i++) {
        double *row = r.v + (size_t)i * n;
        memset(sq, 0, (size_t)n * sizeof *sq);
        for (int p = 0; p < k; p++) {
            double av = a[(size_t)i * k + p];
            const float *bp = b + (size_t)p * n;
            for (int j = 0; j < n; j++) {
                row[j] += av * bp[j];
                sq[j] += (av * bp[j]) * (av * bp[j]);
            }
        }
        for (int j = 0; j < n; j++) {
            double cv = beta == 0.0f ? 0.0 : (double)beta * c0[(size_t)i * n + j];
            row[j] = alpha * row[j] + cv;
            double rss = sqrt((double)alpha * alpha * sq[j] + cv * cv);
            r.scale = fmax(r.scale, fmax(fabs(row[j]), rss));
        }
    }
    g_free(sq);
    return r;
}

// max|got - ref| / scale, NaN counting as infinite. The scale is max|ref|, as in test-ops, except
// where cancellation makes every element of a small result much smaller than its terms (one dot
// product of 257 random terms, say): then the root-sum-square of the terms, the typical size of
// a sum of random-sign terms, which is also what its rounding errors scale with. On the larger
// results max|ref| is the greater (about 3-4x the rms of the elements).
static double rel_error(const float *got, const reference *ref)
{
    double max_diff = 0.0;
    for (size_t i = 0; i < ref->n; i++) {
        double d = fabs((double)got[i] - ref->v[i]);
        if (!(d <= max_diff))
            max_diff = isnan(d) ? INFINITY : d;
    }
    return max_diff / (ref->scale > 0.0 ? ref->scale : 1.0);
}

// Index of the first float whose bits differ, or -1.
static ptrdiff_t first_difference(const float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (f32_bits(x[i]) != f32_bits(y[i]))
            return (ptrdiff_t)i;
    return -1;
}

static bool same_bits(const char *what, const float *got, const float *want, int m, int n)
{
    ptrdiff_t d = first_difference(got, want, (size_t)m * n);
    if (d < 0)
        return true;
    g_test_message("%s: differs first at (%td, %td): %.9g vs %.9g", what, d / n, d % n, got[d],
                   want[d]);
    g_test_fail();
    return false;
}

// ---------------------------------------------------------------------------------------------
// The arithmetic gemm.h promises, one element at a time

// Whether the set's float32 product uses FMAs (the portable sets multiply, then add).
static bool set_has_fma(sdg_kernels set)
{
    return set == SDG_KERNELS_AVX2 || set == SDG_KERNELS_AVX512 || set == SDG_KERNELS_AVX512_BF16;
}

// Whether the set's `fast` product is the bfloat16 one (the others run their float32 one).
static bool set_has_bf16(sdg_kernels set)
{
    return set == SDG_KERNELS_AVX512_BF16 || set == SDG_KERNELS_C_BF16;
}

// C[i][j] as the set computes it. Per k-block of GEMM_KC: acc from 0, one chain in ascending k
// (exact: acc = a*b + acc, fused or not; fast: per k pair (k, k+1), acc += bf16(a[k+1])
// bf16(b[k+1]) then acc += bf16(a[k]) bf16(b[k]), an odd block's last pair having a zero high
// half), then c = acc*alpha (first block, beta == 0), c = c*beta + acc*alpha (first block), or
// c = c + acc*alpha.
static float *emulate(sdg_kernels set, bool fast, int m, int n, int k, float alpha, const float *a,
                      const float *b, float beta, const float *c0)
{
    bool bf16 = fast && set_has_bf16(set), fma = set_has_fma(set);
    float *out = g_new(float, (size_t)m * n + 1);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float c = c0 ? c0[(size_t)i * n + j] : 0.0f;
            for (int p0 = 0; p0 < k; p0 += GEMM_KC) {
                int kc = k - p0 < GEMM_KC ? k - p0 : GEMM_KC;
                float acc = 0.0f;
                if (bf16) {
                    for (int p = p0; p < p0 + kc; p += 2) {
                        float ahi = 0.0f, bhi = 0.0f;
                        if (p + 1 < p0 + kc) {
                            ahi = bf16_value(a[(size_t)i * k + p + 1]);
                            bhi = bf16_value(b[(size_t)(p + 1) * n + j]);
                        }
                        float alo = bf16_value(a[(size_t)i * k + p]);
                        float blo = bf16_value(b[(size_t)p * n + j]);
                        float hi = ahi * bhi, lo = alo * blo;   // exact: 8-bit x 8-bit
                        acc = acc + hi;
                        acc = acc + lo;
                    }
                } else {
                    for (int p = p0; p < p0 + kc; p++) {
                        float x = a[(size_t)i * k + p], y = b[(size_t)p * n + j];
                        if (fma) {
                            acc = fmaf(x, y, acc);
                        } else {
                            float prod = x * y;   // -std=c11: no contraction into an FMA
                            acc = prod + acc;
                        }
                    }
                }
                float v = acc * alpha;
                if (p0 == 0)
                    c = beta == 0.0f ? v : c * beta + v;
                else
                    c = c * 1.0f + v;
            }
            if (k == 0)
                c = beta == 0.0f ? 0.0f : beta * c;
            out[(size_t)i * n + j] = c;
        }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Per kernel set

// The worst relative errors measured in the running test, per set and precision.
static double worst[SDG_KERNELS_COUNT][2];

// Forces the set for a test; false (and the test skipped) when the CPU lacks it.
static bool enter_set(sdg_kernels set, sdg_kernels *prev)
{
    if (!sdg_gemm_kernels_supported(set)) {
        char *msg = g_strdup_printf("kernel set %s: not supported by this CPU",
                                    sdg_gemm_kernels_name(set));
        g_test_skip(msg);
        g_free(msg);
        return false;
    }
    *prev = sdg_gemm_force(set);
    rng_state = 0x9E3779B97F4A7C15ull;   // every set sees the same data
    worst[set][0] = worst[set][1] = 0.0;
    return true;
}

static void leave_set(sdg_kernels prev)
{
    sdg_gemm_force(prev);
}

// Checks one product of plain float32 operands (a row-major, b transposed when tb) in both
// precisions: against the double reference and bit for bit against the emulation.
// Returns the error of `fast`.
static double check_product(sdg_kernels set, int m, int n, int k, float alpha, float beta, bool tb,
                            int pad)
{
    double fast_err = 0.0;
    float *a = rand_matrix((size_t)m * k, SDG_DT_F32), *b = rand_matrix((size_t)k * n, SDG_DT_F32);
    float *c0 = rand_matrix((size_t)m * n, SDG_DT_F32);
    stored sa = store((form){LAYOUT_ROWS, SDG_DT_F32, pad}, a, m, k, true);
    stored sb = store((form){tb ? LAYOUT_COLS : LAYOUT_ROWS, SDG_DT_F32, pad}, b, k, n, false);
    reference ref = reference_new(m, n, k, alpha, a, b, beta, c0);
    float *exact_out = NULL;
    for (int fast = 0; fast <= 1; fast++) {
        float *got = run(2, fast, m, n, k, alpha, &sa.op, &sb.op, beta, c0, pad);
        float *emu = emulate(set, fast, m, n, k, alpha, a, b, beta, c0);
        char what[128];
        g_snprintf(what, sizeof what, "%s %s %dx%dx%d alpha %g beta %g%s%s",
                   sdg_gemm_kernels_name(set), fast ? "fast" : "exact", m, n, k, alpha, beta,
                   tb ? " B^T" : "", pad ? " ld+pad" : "");
        double err = rel_error(got, &ref);
        bool bf16 = fast && set_has_bf16(set);
        if (err > worst[set][fast])
            worst[set][fast] = err;
        if (fast)
            fast_err = err;
        if (g_test_verbose() || err > (bf16 ? TOL_FAST : TOL_EXACT))
            g_test_message("%s: rel error %.3g", what, err);
        g_assert_cmpfloat(err, <=, bf16 ? TOL_FAST : TOL_EXACT);
        char w2[160];
        g_snprintf(w2, sizeof w2, "%s vs emulation", what);
        same_bits(w2, got, emu, m, n);
        if (fast && !bf16) {   // no bfloat16 product: `fast` is the float32 one
            g_snprintf(w2, sizeof w2, "%s vs exact", what);
            same_bits(w2, got, exact_out, m, n);
        }
        g_free(emu);
        if (fast)
            g_free(got);
        else
            exact_out = got;
    }
    g_free(exact_out);
    g_free(ref.v);
    g_free(sa.mem);
    g_free(sb.mem);
    g_free(a);
    g_free(b);
    g_free(c0);
    return fast_err;
}

static void report_worst(sdg_kernels set, const char *test)
{
    if (set_has_bf16(set))
        g_test_message("%s %s: worst rel error exact %.3g, fast (bfloat16) %.3g",
                       sdg_gemm_kernels_name(set), test, worst[set][0], worst[set][1]);
    else
        g_test_message("%s %s: worst rel error exact %.3g (fast = exact)",
                       sdg_gemm_kernels_name(set), test, worst[set][0]);
}

// The sizes around which the product changes its way: panel heights (6, 16), micro-tile widths
// (16, 32), GEMM_MC (96), GEMM_NC and GEMM_KC (256), the grid's block height (384).
static const int edges[] = {1, 5, 6, 7, 15, 16, 17, 31, 32, 33, 95, 96, 97, 255, 256, 257, 383,
                            384, 385};
static const int ks[] = {1, 2, 3, 17, 255, 256, 257, 300, 513, 1000};
static const float alphas[] = {1.0f, -1.5f, 0.37f};
static const float betas[] = {0.0f, 1.0f, 0.5f, -0.75f};

static void test_shapes(gconstpointer data)
{
    sdg_kernels set = (sdg_kernels)GPOINTER_TO_INT(data), prev;
    if (!enter_set(set, &prev))
        return;
    int t = 0;
    // Vectors and a single dot product.
    check_product(set, 1, 300, 77, 1.0f, 0.0f, false, 0);
    check_product(set, 1, 45, 1000, 0.5f, 1.0f, true, 3);
    check_product(set, 300, 1, 77, 1.0f, 0.5f, false, 1);
    check_product(set, 45, 1, 1000, -1.0f, 0.0f, true, 0);
    for (size_t i = 0; i < G_N_ELEMENTS(ks); i++)
        check_product(set, 1, 1, ks[i], alphas[i % 3], betas[i % 4], i & 1, (int)(i % 2));
    // Each edge size in M and in N, the other one odd; K, alpha, beta, transposition and padding
    // cycled. Large K only with small M or N (the double reference is slow).
    for (size_t e = 0; e < G_N_ELEMENTS(edges); e++, t++) {
        int k = ks[t % G_N_ELEMENTS(ks)];
        if (edges[e] > 100 && k > 300)
            k = 129;
        check_product(set, edges[e], 37, k, alphas[t % 3], betas[t % 4], t & 1, t % 3);
        check_product(set, 13, edges[e], ks[(t + 3) % G_N_ELEMENTS(ks)], alphas[(t + 1) % 3],
                      betas[(t + 1) % 4], !(t & 1), (t + 1) % 3);
    }
    // Both at once.
    for (size_t e = 0; e < G_N_ELEMENTS(edges); e += 2, t++)
        check_product(set, edges[e], edges[G_N_ELEMENTS(edges) - 1 - e], 33 + e, alphas[t % 3],
                      betas[t % 4], t & 1, t % 2);
    check_product(set, 97, 257, 1000, 1.0f, 0.0f, false, 0);   // 4 k-blocks, the last one odd
    // k = 0: C = beta C.
    check_product(set, 7, 9, 0, 1.0f, 0.5f, false, 2);
    check_product(set, 7, 9, 0, 1.0f, 0.0f, true, 0);
    if (set_has_bf16(set)) {
        // The bfloat16 error against the length of the sums (TOL_FAST: it does not grow).
        GString *line = g_string_new("fast error against K (48x48):");
        for (int k = 1; k <= 4096; k *= 4)
            g_string_append_printf(line, " %d: %.2g", k,
                                   check_product(set, 48, 48, k, 1.0f, 0.0f, false, 0));
        g_test_message("%s", line->str);
        g_string_free(line, TRUE);
    }
    report_worst(set, "shapes");
    leave_set(prev);
}

// The same values in every form of operand must give the same bits, in both precisions.
static void check_forms(sdg_kernels set, sdg_dtype dt, int m, int n, int k, float alpha, float beta)
{
    float *a = rand_matrix((size_t)m * k, dt), *b = rand_matrix((size_t)k * n, dt);
    float *c0 = rand_matrix((size_t)m * n, SDG_DT_F32);
    form forms[8];
    int nf = 0;
    forms[nf++] = (form){LAYOUT_ROWS, SDG_DT_F32, 0};   // the base all others must match
    forms[nf++] = (form){LAYOUT_ROWS, SDG_DT_F32, 3};
    forms[nf++] = (form){LAYOUT_COLS, SDG_DT_F32, 0};
    forms[nf++] = (form){LAYOUT_COLS, SDG_DT_F32, 5};
    forms[nf++] = (form){LAYOUT_PANEL, SDG_DT_F32, 0};
    if (dt != SDG_DT_F32) {
        forms[nf++] = (form){LAYOUT_ROWS, dt, 0};
        forms[nf++] = (form){LAYOUT_COLS, dt, 2};
        forms[nf++] = (form){LAYOUT_PANEL, dt, 0};
    }
    stored sa[8], sb[8];
    for (int f = 0; f < nf; f++) {
        sa[f] = store(forms[f], a, m, k, true);
        sb[f] = store(forms[f], b, k, n, false);
    }
    reference ref = reference_new(m, n, k, alpha, a, b, beta, c0);
    // (Without a bfloat16 product `fast` is the float32 one: test_shapes checks that.)
    for (int fast = 0; fast <= set_has_bf16(set); fast++) {
        bool bf16 = fast && set_has_bf16(set);
        float *base = run(1, fast, m, n, k, alpha, &sa[0].op, &sb[0].op, beta, c0, 0);
        double err = rel_error(base, &ref);
        if (err > worst[set][fast])
            worst[set][fast] = err;
        g_assert_cmpfloat(err, <=, bf16 ? TOL_FAST : TOL_EXACT);
        for (int fa = 0; fa < nf; fa++)
            for (int fb = 0; fb < nf; fb++) {
                if (fa == 0 && fb == 0)
                    continue;
                float *got = run(1 + (fa + fb) % 3, fast, m, n, k, alpha, &sa[fa].op, &sb[fb].op,
                                 beta, c0, (fa + fb) % 4);
                char what[160], na[32], nb[32];
                g_snprintf(what, sizeof what, "%s %s values %s %dx%dx%d: A %s, B %s",
                           sdg_gemm_kernels_name(set), fast ? "fast" : "exact", dtype_name(dt),
                           m, n, k, form_name(forms[fa], na, sizeof na),
                           form_name(forms[fb], nb, sizeof nb));
                same_bits(what, got, base, m, n);
                g_free(got);
            }
        g_free(base);
    }
    for (int f = 0; f < nf; f++) {
        g_free(sa[f].mem);
        g_free(sb[f].mem);
    }
    g_free(ref.v);
    g_free(a);
    g_free(b);
    g_free(c0);
}

static void test_operands(gconstpointer data)
{
    sdg_kernels set = (sdg_kernels)GPOINTER_TO_INT(data), prev;
    if (!enter_set(set, &prev))
        return;
    for (sdg_dtype dt = SDG_DT_F32; dt <= SDG_DT_BF16; dt++) {
        check_forms(set, dt, 29, 45, 301, 1.0f, 0.0f);      // k-blocks 256 + 45 (odd)
        check_forms(set, dt, 97, 67, 257, -0.5f, 1.0f);     // M past GEMM_MC, a 1-wide k-block
        check_forms(set, dt, 5, 33, 3, 2.0f, 0.25f);        // smaller than one panel, odd K
    }
    report_worst(set, "operands");
    leave_set(prev);
}

// Packed weights' padding rows: zeros as packed, and with NaN there not one bit changes.
static void check_padding(sdg_kernels set, sdg_dtype dt, int m, int n, int k)
{
    float *a = rand_matrix((size_t)m * k, dt), *b = rand_matrix((size_t)k * n, dt);
    stored sa = store((form){LAYOUT_PANEL, dt, 0}, a, m, k, true);
    stored sb = store((form){LAYOUT_PANEL, dt, 0}, b, k, n, false);
    // Rows up to a whole panel of 6 (A), a whole pair of panels of 16 (B), all zero.
    g_assert_cmpint(padding_zeros(&sa), ==, (int64_t)((6 - m % 6) % 6) * k);
    g_assert_cmpint(padding_zeros(&sb), ==, (int64_t)((32 - n % 32) % 32) * k);
    for (int fast = 0; fast <= 1; fast++) {
        float *zeros = run(2, fast, m, n, k, 1.0f, &sa.op, &sb.op, 0.0f, NULL, 1);
        for (size_t i = 0; i < (size_t)m * n; i++)
            g_assert_true(isfinite(zeros[i]));
        float *emu = emulate(set, fast, m, n, k, 1.0f, a, b, 0.0f, NULL);
        char what[96];
        g_snprintf(what, sizeof what, "%s %s %s %dx%dx%d padding zero", sdg_gemm_kernels_name(set),
                   fast ? "fast" : "exact", dtype_name(dt), m, n, k);
        same_bits(what, zeros, emu, m, n);
        stored pa = sa, pb = sb;
        pa.mem = g_memdup2(sa.mem, sa.mem_n * sdg_dtype_size(dt));
        pb.mem = g_memdup2(sb.mem, sb.mem_n * sdg_dtype_size(dt));
        pa.op.p = pa.mem;
        pb.op.p = pb.mem;
        poison_padding(&pa);
        poison_padding(&pb);
        float *nans = run(2, fast, m, n, k, 1.0f, &pa.op, &pb.op, 0.0f, NULL, 1);
        g_snprintf(what, sizeof what, "%s %s %s %dx%dx%d padding NaN", sdg_gemm_kernels_name(set),
                   fast ? "fast" : "exact", dtype_name(dt), m, n, k);
        same_bits(what, nans, zeros, m, n);
        g_free(pa.mem);
        g_free(pb.mem);
        g_free(zeros);
        g_free(nans);
        g_free(emu);
    }
    g_free(sa.mem);
    g_free(sb.mem);
    g_free(a);
    g_free(b);
}

static void test_padding(gconstpointer data)
{
    sdg_kernels set = (sdg_kernels)GPOINTER_TO_INT(data), prev;
    if (!enter_set(set, &prev))
        return;
    for (sdg_dtype dt = SDG_DT_F32; dt <= SDG_DT_BF16; dt++) {
        check_padding(set, dt, 1, 1, 5);
        check_padding(set, dt, 7, 17, 40);
        check_padding(set, dt, 101, 289, 263);   // several blocks, threaded
    }
    leave_set(prev);
}

// ---------------------------------------------------------------------------------------------
// Convolutions: the implicit im2col operand

typedef struct {
    int cout, cin, h, w, k, stride, pt, pl, pb, pr;
} conv_shape;

static void check_conv(sdg_kernels set, conv_shape s, sdg_dtype wdt)
{
    int oh = (s.h + s.pt + s.pb - s.k) / s.stride + 1;
    int ow = (s.w + s.pl + s.pr - s.k) / s.stride + 1;
    int kdim = s.cin * s.k * s.k, ohw = oh * ow;
    float *x = rand_matrix((size_t)s.cin * s.h * s.w, SDG_DT_F32);
    float *wt = rand_matrix((size_t)s.cout * kdim, wdt);
    float *c0 = rand_matrix((size_t)s.cout * ohw, SDG_DT_F32);
    // The explicit im2col: col[(ci*k + ky)*k + kx][oy*ow + ox].
    float *col = g_new(float, (size_t)kdim * ohw);
    for (int ci = 0; ci < s.cin; ci++)
        for (int ky = 0; ky < s.k; ky++)
            for (int kx = 0; kx < s.k; kx++)
                for (int oy = 0; oy < oh; oy++)
                    for (int ox = 0; ox < ow; ox++) {
                        int iy = oy * s.stride + ky - s.pt, ix = ox * s.stride + kx - s.pl;
                        bool in = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w;
                        col[((size_t)(ci * s.k + ky) * s.k + kx) * ohw + oy * ow + ox] =
                            in ? x[((size_t)ci * s.h + iy) * s.w + ix] : 0.0f;
                    }
    sdg_gemm_conv geom = {s.cin, s.h, s.w, s.k, s.stride, s.pt, s.pl, oh, ow};
    sdg_gemm_operand implicit = {x, SDG_DT_F32, ohw, 1, 0, &geom};
    sdg_gemm_operand explicit = {col, SDG_DT_F32, ohw, 1, 0, NULL};
    stored sw = store((form){LAYOUT_PANEL, wdt, 0}, wt, s.cout, kdim, true);
    stored sp = store((form){LAYOUT_ROWS, SDG_DT_F32, 0}, wt, s.cout, kdim, true);
    reference ref = reference_new(s.cout, ohw, kdim, 1.0f, wt, col, 1.0f, c0);
    for (int fast = 0; fast <= 1; fast++) {
        bool bf16 = fast && set_has_bf16(set);
        char what[160];
        g_snprintf(what, sizeof what,
                   "%s %s conv %d->%d %dx%d k%d s%d pad %d,%d,%d,%d (out %dx%d) weight %s",
                   sdg_gemm_kernels_name(set), fast ? "fast" : "exact", s.cin, s.cout, s.h, s.w,
                   s.k, s.stride, s.pt, s.pl, s.pb, s.pr, oh, ow, dtype_name(wdt));
        float *want = run(2, fast, s.cout, ohw, kdim, 1.0f, &sp.op, &explicit, 1.0f, c0, 0);
        float *got = run(2, fast, s.cout, ohw, kdim, 1.0f, &sw.op, &implicit, 1.0f, c0, 0);
        float *got2 = run(1, fast, s.cout, ohw, kdim, 1.0f, &sp.op, &implicit, 1.0f, c0, 3);
        double err = rel_error(got, &ref);
        if (err > worst[set][fast])
            worst[set][fast] = err;
        if (g_test_verbose())
            g_test_message("%s: rel error %.3g", what, err);
        g_assert_cmpfloat(err, <=, bf16 ? TOL_FAST : TOL_EXACT);
        same_bits(what, got, want, s.cout, ohw);
        same_bits(what, got2, want, s.cout, ohw);
        g_free(want);
        g_free(got);
        g_free(got2);
    }
    g_free(sw.mem);
    g_free(sp.mem);
    g_free(ref.v);
    g_free(col);
    g_free(x);
    g_free(wt);
    g_free(c0);
}

static void test_conv(gconstpointer data)
{
    sdg_kernels set = (sdg_kernels)GPOINTER_TO_INT(data), prev;
    if (!enter_set(set, &prev))
        return;
    static const conv_shape shapes[] = {
        {7, 37, 9, 16, 3, 1, 1, 1, 1, 1},    // out 16 wide (a panel per row), K = 333 > GEMM_KC
        {20, 5, 7, 32, 3, 1, 1, 1, 1, 1},    // out 32 wide
        {9, 2, 3, 40, 3, 1, 1, 1, 1, 1},     // 40: panels straddling rows and the edges
        {6, 4, 6, 48, 3, 1, 0, 0, 0, 0},     // out 46 wide, no padding
        {33, 3, 11, 13, 3, 2, 1, 1, 1, 1},   // stride 2, out 6x7
        {12, 6, 16, 33, 3, 2, 1, 0, 1, 1},   // stride 2, asymmetric padding, out 8x16
        {5, 31, 9, 17, 5, 1, 2, 2, 2, 2},    // 5x5, K = 775 (k-blocks starting mid-kernel)
        {11, 13, 9, 9, 1, 2, 0, 0, 0, 0},    // 1x1 stride 2
        {4, 3, 5, 5, 3, 1, 2, 3, 0, 2},      // rows and columns entirely padding
    };
    for (size_t i = 0; i < G_N_ELEMENTS(shapes); i++)
        check_conv(set, shapes[i], i % 3 == 0 ? SDG_DT_F16 : i % 3 == 1 ? SDG_DT_F32 : SDG_DT_BF16);
    report_worst(set, "conv");
    leave_set(prev);
}

// ---------------------------------------------------------------------------------------------
// Threads

static void check_threads(sdg_kernels set, const char *what, int m, int n, int k,
                          const sdg_gemm_operand *a, const sdg_gemm_operand *b, const float *c0)
{
    for (int fast = 0; fast <= set_has_bf16(set); fast++) {
        float *r1 = run(1, fast, m, n, k, 0.75f, a, b, 1.0f, c0, 0);
        for (int nt = 2; nt <= 3; nt++) {
            float *r = run(nt, fast, m, n, k, 0.75f, a, b, 1.0f, c0, 0);
            char w[128];
            g_snprintf(w, sizeof w, "%s %s %s 1 vs %d threads", sdg_gemm_kernels_name(set),
                       fast ? "fast" : "exact", what, nt);
            same_bits(w, r, r1, m, n);
            g_free(r);
        }
        g_free(r1);
    }
}

static void test_threads(gconstpointer data)
{
    sdg_kernels set = (sdg_kernels)GPOINTER_TO_INT(data), prev;
    if (!enter_set(set, &prev))
        return;
    // 700 x 900 is cut into a 4 x 4 grid of blocks (gemm.c), each several tiles of each kind.
    int m = 700, n = 900, k = 300;
    float *a = rand_matrix((size_t)m * k, SDG_DT_BF16);
    float *b = rand_matrix((size_t)k * n, SDG_DT_BF16);
    float *c0 = rand_matrix((size_t)m * n, SDG_DT_F32);
    stored sa = store((form){LAYOUT_ROWS, SDG_DT_F32, 0}, a, m, k, true);
    stored sb = store((form){LAYOUT_COLS, SDG_DT_F32, 0}, b, k, n, false);
    stored wa = store((form){LAYOUT_PANEL, SDG_DT_F16, 0}, a, m, k, true);
    stored wb = store((form){LAYOUT_PANEL, SDG_DT_BF16, 0}, b, k, n, false);
    check_threads(set, "700x900x300 f32", m, n, k, &sa.op, &sb.op, c0);
    check_threads(set, "700x900x300 panels", m, n, k, &wa.op, &wb.op, c0);
    g_free(sa.mem);
    g_free(sb.mem);
    g_free(wa.mem);
    g_free(wb.mem);
    g_free(a);
    g_free(b);
    g_free(c0);
    // A convolution the size of a UNet's first level at 256x256 (one block of output channels).
    sdg_gemm_conv geom = {64, 32, 32, 3, 1, 1, 1, 32, 32};
    float *x = rand_matrix((size_t)64 * 32 * 32, SDG_DT_F32);
    float *w = rand_matrix((size_t)96 * 576, SDG_DT_F32);
    float *c1 = rand_matrix((size_t)96 * 1024, SDG_DT_F32);
    sdg_gemm_operand ox = {x, SDG_DT_F32, 1024, 1, 0, &geom};
    stored sw = store((form){LAYOUT_PANEL, SDG_DT_F32, 0}, w, 96, 576, true);
    check_threads(set, "conv 64->96 32x32", 96, 1024, 576, &sw.op, &ox, c1);
    g_free(sw.mem);
    g_free(x);
    g_free(w);
    g_free(c1);
    leave_set(prev);
}

// ---------------------------------------------------------------------------------------------

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    static const struct {
        const char *name;
        GTestDataFunc fn;
    } tests[] = {
        {"shapes", test_shapes}, {"operands", test_operands}, {"padding", test_padding},
        {"conv", test_conv}, {"threads", test_threads},
    };
    for (int set = 0; set < SDG_KERNELS_COUNT; set++)
        for (size_t t = 0; t < G_N_ELEMENTS(tests); t++) {
            char *path = g_strdup_printf("/tensor/gemm/%s/%s",
                                         sdg_gemm_kernels_name((sdg_kernels)set), tests[t].name);
            g_test_add_data_func(path, GINT_TO_POINTER(set), tests[t].fn);
            g_free(path);
        }
    return g_test_run();
}
