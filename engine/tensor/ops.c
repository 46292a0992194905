/*
 * ops.c - the tensor operations of ops.h: convolution (an implicit GEMM), linear, attention,
 * normalisations and the element-wise ops, parallelised with OpenMP.
 *
 * Every op follows the same shape: check arguments, reserve scratch from the arena (sizes that
 * depend only on shapes), return at once in a dry run, compute, release the scratch.
 *
 * Determinism: results are bit-identical for any thread count. Loops are split only over
 * independent outputs, and every reduction (a group's or row's mean and variance, a softmax
 * row's sum) is done by one thread in a fixed order. GEMMs go through blas.c, which splits C
 * into blocks fixed by the shape alone.
 *
 * Not here: model knowledge, weight layouts beyond PyTorch's (conv [cout,cin,k,k], linear
 * [out,in]), or any cblas call (blas.c owns those).
 *
 * ref: PyTorch torch.nn.functional (conv2d, linear, group_norm, layer_norm, gelu, silu,
 * scaled_dot_product_attention); Caffe's im2col; ldm/modules/attention.py (GEGLU).
 */
#include "ops.h"

#include "gemm.h"
#include "../loader/safetensors.h"   // sdg__f16_to_f32, sdg__bf16_to_f32

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

// Element-wise loops shorter than this run on one thread (a parallel region costs more).
#define OPS_PAR_MIN 32768


// ---------------------------------------------------------------------------------------------
// Small helpers

// e^x to about 1 ulp (Cephes expf: x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for
// e^r, then 2^n through the exponent bits). Unlike libm's expf it is plain arithmetic, so the
// softmax and SiLU loops vectorise, and a vector lane gives the same bits as the scalar code
// (no libm call on either side), whatever part of a loop a thread gets. x is clamped to
// [-87, 88]: below, the result is e^-87 (1.6e-38) instead of a denormal or 0, which no sum
// here can see.
static inline float ops_exp(float x)
{
    // The clamp works on the bits, with integer compares: GCC will not turn a float compare
    // into a select under its default -ftrapping-math, which would keep the loops scalar.
    int32_t si;
    memcpy(&si, &x, sizeof si);
    si = si > 0x42B00000 ? 0x42B00000 : si;        // x > 88, +inf, +NaN -> 88 (x < 0 is si < 0)
    uint32_t ui;
    memcpy(&ui, &si, sizeof ui);
    ui = ui > 0xC2AE0000u ? 0xC2AE0000u : ui;      // x < -87, -inf, -NaN -> -87
    memcpy(&x, &ui, sizeof x);
    // Round x / ln2 to nearest with the 1.5 * 2^23 trick (floorf would be a libm call).
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;          // ln2 in two parts (Cody-Waite): exact product
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;  // 2^n, n in [-126, 127]
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float ops_silu(float v)
{
    return v / (1.0f + ops_exp(-v));
}

static inline float ops_gelu(float v)
{
    // 1 + erf(x) = erfc(-x): the same value without the cancellation of 1 + erf(x) near -1
    // (for v < -2 the sum lost up to half its digits; found by test-ops' one-element case).
    return 0.5f * v * erfcf(-v * (float)M_SQRT1_2);
}

// Sum of x[0..n) in double, with eight interleaved accumulators combined in a fixed order:
// the same result on every call, and short enough dependency chains to run at full speed.
static double ops_sum(const float *x, size_t n)
{
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += x[i + j];
    for (int j = 0; i < n; i++, j++)
        acc[j] += x[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Sum of (x - mean)^2 over x[0..n) in double, like ops_sum.
static double ops_sum_sq_dev(const float *x, size_t n, double mean)
{
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            double d = x[i + j] - mean;
            acc[j] += d * d;
        }
    for (int j = 0; i < n; i++, j++) {
        double d = x[i] - mean;
        acc[j] += d * d;
    }
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Fills y[n, c, len] with bias[c] broadcast (the starting value for a GEMM with beta = 1).
static void ops_fill_channels(const sdg_exec *ex, float *y, size_t n, int c, size_t len,
                              const float *bias)
{
    size_t nc = n * (size_t)c;
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) \
        if (nc * len >= OPS_PAR_MIN)
    for (size_t i = 0; i < nc; i++) {
        float v = bias[i % (size_t)c];
        float *row = y + i * len;
        for (size_t j = 0; j < len; j++)
            row[j] = v;
    }
}

// ---------------------------------------------------------------------------------------------
// Matrix product and linear

void sdg_op_gemm(sdg_exec *ex, bool ta, bool tb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    SDG_ASSERT(ex && m >= 0 && n >= 0 && k >= 0);
    SDG_ASSERT(lda >= (ta ? m : k) && lda >= 1);
    SDG_ASSERT(ldb >= (tb ? k : n) && ldb >= 1);
    SDG_ASSERT(ldc >= n && ldc >= 1);
    sdg_gemm_operand oa = {a, SDG_DT_F32, ta ? 1 : lda, ta ? lda : 1, 0, NULL};
    sdg_gemm_operand ob = {b, SDG_DT_F32, tb ? 1 : ldb, tb ? ldb : 1, 0, NULL};
    sdg_gemm(ex, m, n, k, alpha, &oa, &ob, beta, c, ldc);
}

void sdg_op_linear(sdg_exec *ex, const float *x, size_t rows, int in, sdg_weight w,
                   const float *b, int out, float *y)
{
    SDG_ASSERT(ex && x && w.data && y);
    SDG_ASSERT(rows <= INT_MAX && in >= 1 && out >= 1);
    if (ex->dry)
        sdg_gemm_count(ex, (int)rows, out, in);   // the product the real run makes
    if (ex->dry || rows == 0)
        return;
    // PyTorch: y = x @ w.T + b
    if (b)
        ops_fill_channels(ex, y, rows, out, 1, b);   // row-major [rows,out]: c = out
    sdg_gemm_operand oa = {x, SDG_DT_F32, in, 1, 0, NULL};
    sdg_gemm_operand ob = sdg_gemm_weight_b(w, in);   // B(k, j) = w[j, k]
    sdg_gemm(ex, (int)rows, out, in, 1.0f, &oa, &ob, b ? 1.0f : 0.0f, y, out);
}

// ---------------------------------------------------------------------------------------------
// Convolution

// im2col for output rows [oy0, oy1) of one image x[cin,h,w]: col[cin*k*k, (oy1-oy0)*ow], row
// (ci*k + ky)*k + kx holding x[ci, oy*stride + ky - pad_t, ox*stride + kx - pad_l] (0 outside).
// The row order matches the weight layout [cout, cin, k, k]. Parallel over the rows of col.
static void conv_im2col(const sdg_exec *ex, const float *x, int cin, int h, int w, int k,
                        int stride, int pad_t, int pad_l, int ow, int oy0, int oy1, float *col)
{
    int kdim = cin * k * k;
    size_t nt = (size_t)(oy1 - oy0) * ow;
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) \
        if ((size_t)kdim * nt >= OPS_PAR_MIN)
    for (int r = 0; r < kdim; r++) {
        int ci = r / (k * k), ky = r / k % k, kx = r % k;
        const float *xc = x + (size_t)ci * h * w;
        float *dst = col + (size_t)r * nt;
        // Output columns whose input column ix = ox*stride + kx - pad_l lies in [0, w).
        int lo = pad_l - kx;                       // ox*stride >= lo
        int ox0 = lo <= 0 ? 0 : (lo + stride - 1) / stride;
        int hi = w - 1 + pad_l - kx;               // ox*stride <= hi
        int ox1 = hi < 0 ? 0 : hi / stride + 1;
        if (ox1 > ow)
            ox1 = ow;
        if (ox0 > ox1)
            ox0 = ox1;
        for (int oy = oy0; oy < oy1; oy++, dst += ow) {
            int iy = oy * stride + ky - pad_t;
            if (iy < 0 || iy >= h) {
                memset(dst, 0, (size_t)ow * sizeof *dst);
                continue;
            }
            const float *src = xc + (size_t)iy * w;
            int ix0 = ox0 * stride + kx - pad_l;
            for (int ox = 0; ox < ox0; ox++)
                dst[ox] = 0.0f;
            if (stride == 1) {
                memcpy(dst + ox0, src + ix0, (size_t)(ox1 - ox0) * sizeof *dst);
            } else {
                for (int ox = ox0, ix = ix0; ox < ox1; ox++, ix += stride)
                    dst[ox] = src[ix];
            }
            for (int ox = ox1; ox < ow; ox++)
                dst[ox] = 0.0f;
        }
    }
}

// A convolution whose packing can read 16 consecutive input pixels per panel row (stride 1,
// output rows a multiple of 16 wide) packs its im2col matrix straight from x (an implicit GEMM).
// Others (strided, or narrow maps where a panel straddles output rows) would pack element by
// element once per block of output channels; for them an explicit im2col of one image, up to
// this many floats (16 MB), is cheaper. Larger ones stay implicit.
#define CONV_IM2COL_FLOATS ((size_t)4 << 20)

void sdg_op_conv2d(sdg_exec *ex, const float *x, int n, int cin, int h, int w, sdg_weight weight,
                   const float *bias, int cout, int k, int stride, int pad_t, int pad_l, int pad_b,
                   int pad_r, float *y)
{
    SDG_ASSERT(ex && x && weight.data && y);
    SDG_ASSERT(n >= 1 && cin >= 1 && h >= 1 && w >= 1 && cout >= 1 && k >= 1 && stride >= 1);
    SDG_ASSERT(pad_t >= 0 && pad_l >= 0 && pad_b >= 0 && pad_r >= 0);
    int oh = sdg_conv_out_size(h, k, stride, pad_t, pad_b);
    int ow = sdg_conv_out_size(w, k, stride, pad_l, pad_r);
    SDG_ASSERT(h + pad_t + pad_b >= k && w + pad_l + pad_r >= k);
    SDG_ASSERT((size_t)oh * ow <= INT_MAX && (size_t)cin * k * k <= INT_MAX);
    if (sdg__winograd_applies(ex, k, stride, oh, ow)) {
        sdg__conv3x3_winograd(ex, x, n, cin, h, w, weight, bias, cout, pad_t, pad_l, oh, ow, y);
        return;
    }
    size_t hw = (size_t)h * w, ohw = (size_t)oh * ow;
    int kdim = cin * k * k;
    bool direct = k == 1 && stride == 1 && pad_t == 0 && pad_l == 0 && pad_b == 0 && pad_r == 0;
    bool explicit = !direct && !(stride == 1 && ow % 16 == 0) &&
                    (size_t)kdim * ohw <= CONV_IM2COL_FLOATS;
    size_t mark = sdg__mark(ex);
    float *col = explicit ? sdg__alloc_f32(ex, (size_t)kdim * ohw) : NULL;
    if (ex->dry) {
        for (int b = 0; b < n; b++)   // the products the real run makes
            sdg_gemm_count(ex, cout, (int)ohw, kdim);
        sdg__release(ex, mark);
        return;
    }

    // The GEMMs accumulate onto the bias (beta = 1), which saves a pass over y.
    float beta = 0.0f;
    if (bias) {
        ops_fill_channels(ex, y, (size_t)n, cout, ohw, bias);
        beta = 1.0f;
    }
    // y[cout, ohw] = W[cout, kdim] B[kdim, ohw] per image: B is x itself for a 1x1 convolution,
    // else x's im2col, packed from x as the product goes or made first (see above).
    sdg_gemm_conv geom = {cin, h, w, k, stride, pad_t, pad_l, oh, ow};
    sdg_gemm_operand oa = sdg_gemm_weight_a(weight, kdim);
    for (int b = 0; b < n; b++) {
        const float *xb = x + (size_t)b * cin * hw;
        sdg_gemm_operand ob = {xb, SDG_DT_F32, (ptrdiff_t)hw, 1, 0, direct ? NULL : &geom};
        if (explicit) {
            conv_im2col(ex, xb, cin, h, w, k, stride, pad_t, pad_l, ow, 0, oh, col);
            ob = (sdg_gemm_operand){col, SDG_DT_F32, (ptrdiff_t)ohw, 1, 0, NULL};
        }
        sdg_gemm(ex, cout, (int)ohw, kdim, 1.0f, &oa, &ob, beta, y + (size_t)b * cout * ohw,
                 (ptrdiff_t)ohw);
    }
    sdg__release(ex, mark);
}

void sdg_weight_row(sdg_weight w, size_t row, int width, float *dst)
{
    SDG_ASSERT(w.data && width >= 0 && dst);
    size_t off = row * (size_t)width;
    if (w.dtype == SDG_DT_F32) {
        memcpy(dst, (const float *)w.data + off, (size_t)width * sizeof *dst);
        return;
    }
    const uint16_t *src = (const uint16_t *)w.data + off;
    for (int j = 0; j < width; j++)
        dst[j] = w.dtype == SDG_DT_F16 ? sdg__f16_to_f32(src[j]) : sdg__bf16_to_f32(src[j]);
}

// ---------------------------------------------------------------------------------------------
// Normalisation

void sdg_op_group_norm(sdg_exec *ex, const float *x, int n, int c, size_t hw, int groups,
                       const float *gamma, const float *beta, float eps, bool silu, float *y)
{
    SDG_ASSERT(ex && x && y);
    SDG_ASSERT(n >= 1 && c >= 1 && groups >= 1 && c % groups == 0 && hw >= 1);
    if (ex->dry)
        return;
    int cpg = c / groups;
    size_t count = (size_t)cpg * hw;
    int ng = n * groups;
    // One group per iteration: its statistics are summed by one thread (determinism), and the
    // group is read completely before it is written (y may alias x).
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) \
        if ((size_t)ng * count >= OPS_PAR_MIN)
    for (int i = 0; i < ng; i++) {
        int g = i % groups;
        size_t off = (size_t)i * count;      // = (b*c + g*cpg) * hw
        const float *xg = x + off;
        float *yg = y + off;
        double mean = ops_sum(xg, count) / (double)count;
        double var = ops_sum_sq_dev(xg, count, mean) / (double)count;
        double inv = 1.0 / sqrt(var + (double)eps);
        float m = (float)mean;
        for (int cc = 0; cc < cpg; cc++) {
            int ch = g * cpg + cc;
            // y = (x - mean) * (inv * gamma) + beta. The mean is subtracted first: folding it
            // into the offset (x * a + (beta - mean * a)) loses digits when |mean| >> std.
            float a = (float)(inv * (gamma ? gamma[ch] : 1.0f));
            float bb = beta ? beta[ch] : 0.0f;
            const float *xr = xg + (size_t)cc * hw;
            float *yr = yg + (size_t)cc * hw;
            if (silu) {
                #pragma omp simd
                for (size_t j = 0; j < hw; j++)
                    yr[j] = ops_silu((xr[j] - m) * a + bb);
            } else {
                #pragma omp simd
                for (size_t j = 0; j < hw; j++)
                    yr[j] = (xr[j] - m) * a + bb;
            }
        }
    }
}

void sdg_op_layer_norm(sdg_exec *ex, const float *x, size_t rows, int c, const float *gamma,
                       const float *beta, float eps, float *y)
{
    SDG_ASSERT(ex && x && y && c >= 1);
    if (ex->dry)
        return;
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) \
        if (rows * (size_t)c >= OPS_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        double mean = ops_sum(xr, (size_t)c) / c;
        double var = ops_sum_sq_dev(xr, (size_t)c, mean) / c;
        float inv = (float)(1.0 / sqrt(var + (double)eps));
        float m = (float)mean;
        for (int j = 0; j < c; j++) {
            float v = (xr[j] - m) * inv;
            yr[j] = v * (gamma ? gamma[j] : 1.0f) + (beta ? beta[j] : 0.0f);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Element-wise

// PyTorch (ldm util.py timestep_embedding):
//   freqs = exp(-log(max_period) * arange(0, half, dtype=float32) / half)
//   args = t[:, None].float() * freqs[None]; emb = cat([cos(args), sin(args)], dim=-1)
void sdg_op_timestep_embedding(const sdg_exec *ex, const float *t, int n, int dim, float *y)
{
    if (ex->dry)
        return;
    int half = dim / 2;
    float neg_log = (float)-log(10000.0);
    for (int b = 0; b < n; b++) {
        for (int k = 0; k < half; k++) {
            float freq = expf(neg_log * (float)k / (float)half);
            float arg = t[b] * freq;
            y[(size_t)b * dim + k] = (float)cos((double)arg);
            y[(size_t)b * dim + half + k] = (float)sin((double)arg);
        }
        if (dim % 2)
            y[(size_t)b * dim + dim - 1] = 0.0f;
    }
}

void sdg_op_silu(sdg_exec *ex, const float *x, size_t n, float *y)
{
    SDG_ASSERT(ex && (n == 0 || (x && y)));
    if (ex->dry)
        return;
    // simd: ops_silu is plain arithmetic, so a vector lane and the scalar tail agree bit for
    // bit, wherever the thread chunks begin.
    #pragma omp parallel for simd num_threads(ex->n_threads) schedule(static) \
        if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = ops_silu(x[i]);
}

void sdg_op_gelu(sdg_exec *ex, const float *x, size_t n, float *y)
{
    SDG_ASSERT(ex && (n == 0 || (x && y)));
    if (ex->dry)
        return;
    // PyTorch: F.gelu(x) = 0.5 * x * (1 + erf(x / sqrt(2)))
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = ops_gelu(x[i]);
}

void sdg_op_quick_gelu(sdg_exec *ex, const float *x, size_t n, float *y)
{
    SDG_ASSERT(ex && (n == 0 || (x && y)));
    if (ex->dry)
        return;
    // PyTorch (CLIP): x * torch.sigmoid(1.702 * x)
    #pragma omp parallel for simd num_threads(ex->n_threads) schedule(static) \
        if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] / (1.0f + ops_exp(-1.702f * x[i]));
}

void sdg_op_relu(sdg_exec *ex, const float *x, size_t n, float *y)
{
    SDG_ASSERT(ex && (n == 0 || (x && y)));
    if (ex->dry)
        return;
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void sdg_op_scale(sdg_exec *ex, const float *x, size_t n, float s, float *y)
{
    SDG_ASSERT(ex && (n == 0 || (x && y)));
    if (ex->dry)
        return;
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] * s;
}

void sdg_op_add(sdg_exec *ex, const float *a, const float *b, size_t n, float *y)
{
    SDG_ASSERT(ex && (n == 0 || (a && b && y)));
    if (ex->dry)
        return;
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) if (n >= OPS_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

void sdg_op_add_channel(sdg_exec *ex, float *x, int n, int c, size_t hw, const float *v)
{
    SDG_ASSERT(ex && n >= 0 && c >= 0 && (n == 0 || c == 0 || hw == 0 || (x && v)));
    if (ex->dry)
        return;
    size_t nc = (size_t)n * c;
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) \
        if (nc * hw >= OPS_PAR_MIN)
    for (size_t i = 0; i < nc; i++) {
        float s = v[i];                       // v[n,c] flat: index b*c + ch = i
        float *row = x + i * hw;
        for (size_t j = 0; j < hw; j++)
            row[j] += s;
    }
}

void sdg_op_geglu(sdg_exec *ex, const float *x, size_t rows, int d, float *y)
{
    SDG_ASSERT(ex && d >= 1 && (rows == 0 || (x && y)));
    if (ex->dry)
        return;
    // PyTorch (ldm GEGLU): a, gate = proj(x).chunk(2, dim=-1); return a * F.gelu(gate)
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) \
        if (rows * (size_t)d >= OPS_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *a = x + r * 2 * d;
        const float *gate = a + d;
        float *yr = y + r * d;
        for (int j = 0; j < d; j++)
            yr[j] = a[j] * ops_gelu(gate[j]);
    }
}

// ---------------------------------------------------------------------------------------------
// Data movement

void sdg_op_upsample2x(sdg_exec *ex, const float *x, int n, int c, int h, int w, float *y)
{
    SDG_ASSERT(ex && n >= 0 && c >= 0 && h >= 1 && w >= 1 && (n == 0 || c == 0 || (x && y)));
    if (ex->dry)
        return;
    // PyTorch: F.interpolate(x, scale_factor=2.0, mode="nearest")
    size_t rows = (size_t)n * c * h;          // input rows; each makes two output rows
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) \
        if (rows * w * 4 >= OPS_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *src = x + r * w;
        float *dst = y + r * 4 * w;           // output rows 2r and 2r+1 of width 2w
        for (int j = 0; j < w; j++) {
            dst[2 * j] = src[j];
            dst[2 * j + 1] = src[j];
        }
        memcpy(dst + 2 * w, dst, (size_t)2 * w * sizeof *dst);
    }
}

#define TRANSPOSE_BLOCK 32

void sdg_op_transpose(sdg_exec *ex, const float *x, int n, size_t rows, size_t cols, float *y)
{
    SDG_ASSERT(ex && n >= 0);
    if (ex->dry || n == 0 || rows == 0 || cols == 0)
        return;
    SDG_ASSERT(x && y && x != y);
    size_t bi = (rows + TRANSPOSE_BLOCK - 1) / TRANSPOSE_BLOCK;
    size_t bj = (cols + TRANSPOSE_BLOCK - 1) / TRANSPOSE_BLOCK;
    size_t tiles = (size_t)n * bi * bj;
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) \
        if (rows * cols * (size_t)n >= OPS_PAR_MIN)
    for (size_t t = 0; t < tiles; t++) {
        size_t b = t / (bi * bj), rest = t % (bi * bj);
        size_t i0 = rest / bj * TRANSPOSE_BLOCK, j0 = rest % bj * TRANSPOSE_BLOCK;
        size_t i1 = i0 + TRANSPOSE_BLOCK < rows ? i0 + TRANSPOSE_BLOCK : rows;
        size_t j1 = j0 + TRANSPOSE_BLOCK < cols ? j0 + TRANSPOSE_BLOCK : cols;
        const float *xb = x + b * rows * cols;
        float *yb = y + b * rows * cols;
        for (size_t j = j0; j < j1; j++)
            for (size_t i = i0; i < i1; i++)
                yb[j * rows + i] = xb[i * cols + j];
    }
}

void sdg_op_concat_channels(sdg_exec *ex, const float *a, int ca, const float *b, int cb, int n,
                            size_t hw, float *y)
{
    SDG_ASSERT(ex && n >= 0 && ca >= 0 && cb >= 0);
    SDG_ASSERT(y && (ca == 0 || a) && (cb == 0 || b));
    if (ex->dry)
        return;
    // PyTorch: torch.cat([a, b], dim=1)
    int c = ca + cb;
    size_t rows = (size_t)n * c;
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) \
        if (rows * hw >= OPS_PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        size_t bi = r / c, ch = r % c;
        const float *src = ch < (size_t)ca ? a + (bi * ca + ch) * hw
                                           : b + (bi * cb + (ch - ca)) * hw;
        memcpy(y + r * hw, src, hw * sizeof *y);
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

// Attention, tiled as FlashAttention does: for a block of ATTN_BQ query rows, the keys are taken
// ATTN_BK at a time; each key block's scores S = scale Q K^T go through an online softmax (the
// running row maximum m and sum l; earlier partial outputs are rescaled by e^(m_old - m_new)) and
// are multiplied into the output O += P V at once, so no score matrix wider than ATTN_BK exists.
// K^T is packed once per head into the GEMM's right-hand panels, shared by every query block.
// Query blocks are the parallel work, fixed by tq alone: the result does not depend on the
// thread count.
#define ATTN_BQ 64
#define ATTN_BK 256
// Output columns per pass: wider heads (none in SD's UNets; the VAE's single 512-wide head is
// one pass) take several, each recomputing the scores.
#define ATTN_DH 512

// One query block [i0, i0 + rows) of one head against all its keys (see above), output columns
// [d0, d0 + dh) of the head. kt: K^T packed (SDG_PANEL_B panels of head_dim columns, tk rounded
// up to whole panel pairs). The working set (scores, partial outputs, running max and sum, about
// 200 KB) is on the stack.
static void attn_block_cols(const float *q, int ldq, const float *kt, const float *v, int ldv,
                            int tk, int head_dim, float scale, bool causal, int i0, int rows,
                            int d0, int dh, float *out, int ldo)
{
    _Alignas(64) float s[ATTN_BQ * ATTN_BK];
    _Alignas(64) float o[ATTN_BQ * ATTN_DH];
    float m[ATTN_BQ];
    double l[ATTN_BQ];
    sdg_exec serial;
    sdg__exec_init(&serial, 1);
    int end = causal && i0 + rows < tk ? i0 + rows : tk;   // keys any row of the block sees
    for (int r = 0; r < rows; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0;
    }
    sdg_gemm_operand oq = {q + (size_t)i0 * ldq, SDG_DT_F32, ldq, 1, 0, NULL};
    for (int j0 = 0; j0 < end; j0 += ATTN_BK) {
        int bk = end - j0 < ATTN_BK ? end - j0 : ATTN_BK;
        // S = scale Q K^T for this key block.
        sdg_gemm_operand ok = {kt + (size_t)j0 * head_dim, SDG_DT_F32, 0, 0, SDG_PANEL_B, NULL};
        sdg_gemm(&serial, rows, bk, head_dim, scale, &oq, &ok, 0.0f, s, ATTN_BK);
        for (int r = 0; r < rows; r++) {
            float *row = s + (size_t)r * ATTN_BK;
            int i = i0 + r;
            int len = causal ? (i + 1 - j0 < bk ? i + 1 - j0 : bk) : bk;
            if (len <= 0) {   // causal: this row sees none of the block
                for (int j = 0; j < bk; j++)
                    row[j] = 0.0f;
                continue;
            }
            // The max is exact in any order, so the compiler may vectorise it freely; the sum
            // is not, so it goes through ops_sum's fixed order rather than a simd reduction.
            float mx = m[r];
            #pragma omp simd reduction(max : mx)
            for (int j = 0; j < len; j++)
                mx = row[j] > mx ? row[j] : mx;
            float corr = ops_exp(m[r] - mx);   // 0 for the first block (m = -inf, clamped)
            m[r] = mx;
            #pragma omp simd
            for (int j = 0; j < len; j++)
                row[j] = ops_exp(row[j] - mx);
            for (int j = len; j < bk; j++)
                row[j] = 0.0f;
            l[r] = l[r] * corr + ops_sum(row, (size_t)len);
            if (j0 > 0) {
                float *orow = o + (size_t)r * dh;
                for (int d = 0; d < dh; d++)
                    orow[d] *= corr;
            }
        }
        // O (+)= P V for this key block.
        sdg_op_gemm(&serial, false, false, rows, dh, bk, 1.0f, s, ATTN_BK,
                    v + (size_t)j0 * ldv + d0, ldv, j0 > 0 ? 1.0f : 0.0f, o, dh);
    }
    for (int r = 0; r < rows; r++) {
        float inv = (float)(1.0 / l[r]);
        const float *orow = o + (size_t)r * dh;
        float *dst = out + (size_t)(i0 + r) * ldo + d0;
        for (int d = 0; d < dh; d++)
            dst[d] = orow[d] * inv;
    }
}

void sdg_op_attention(sdg_exec *ex, const float *q, int ldq, const float *k, int ldk,
                      const float *v, int ldv, int n, int tq, int tk, int n_heads, int head_dim,
                      float scale, bool causal, float *out, int ldo)
{
    SDG_ASSERT(ex && q && k && v && out);
    SDG_ASSERT(n >= 0 && tq >= 1 && tk >= 1 && n_heads >= 1 && head_dim >= 1);
    int width = n_heads * head_dim;
    SDG_ASSERT(ldq >= width && ldk >= width && ldv >= width && ldo >= width);
    size_t mark = sdg__mark(ex);
    int pad = (int)sdg_panel_pad(SDG_PANEL_B), tk_pad = (tk + pad - 1) / pad * pad;
    float *kt = sdg__alloc_f32(ex, (size_t)tk_pad * head_dim);
    int nt = ex->n_threads;
    // The products of every head (counted here: the serial products inside are not).
    ex->flops += 4 * (uint64_t)n * n_heads * (uint64_t)tq * (uint64_t)tk * (uint64_t)head_dim;
    if (ex->dry) {
        sdg__release(ex, mark);
        return;
    }
    int blocks = (tq + ATTN_BQ - 1) / ATTN_BQ;
    bool par = (size_t)tq * tk * head_dim >= OPS_PAR_MIN && nt > 1;
    // PyTorch: out = softmax(scale * q @ k.transpose(-2, -1) [+ mask], dim=-1) @ v, per head
    for (int b = 0; b < n; b++) {
        for (int hd = 0; hd < n_heads; hd++) {
            size_t col = (size_t)hd * head_dim;
            const float *qh = q + (size_t)b * tq * ldq + col;
            const float *kh = k + (size_t)b * tk * ldk + col;
            const float *vh = v + (size_t)b * tk * ldv + col;
            float *oh = out + (size_t)b * tq * ldo + col;
            // K^T as right-hand panels: kt[j / 16][d][j % 16] = k[j][d], zero rows to tk_pad.
            sdg__pack_panels(kt, kh, sizeof(float), ldk, 0, tk, tk, head_dim, SDG_PANEL_B);
            #pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (par)
            for (int blk = 0; blk < blocks; blk++) {
                int i0 = blk * ATTN_BQ;
                int rows = tq - i0 < ATTN_BQ ? tq - i0 : ATTN_BQ;
                for (int d0 = 0; d0 < head_dim; d0 += ATTN_DH)
                    attn_block_cols(qh, ldq, kt, vh, ldv, tk, head_dim, scale, causal, i0, rows, d0,
                                    head_dim - d0 < ATTN_DH ? head_dim - d0 : ATTN_DH, oh, ldo);
            }
        }
    }
    sdg__release(ex, mark);
}
