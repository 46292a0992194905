/*
 * winograd.c - 3x3 stride-1 convolutions as Winograd F(4x4, 3x3): each 4x4 block of outputs from
 * a 6x6 block of inputs with 36 multiplies per (output, input) channel pair instead of 144, so
 * the products do a quarter of the direct convolution's multiply-adds.
 *
 * Used by sdg_op_conv2d in the `fast` precision on kernel sets without a bfloat16 product (AVX2,
 * AVX-512 without BF16): there `fast` means "fastest within bfloat16's error", and F(4,3) in
 * float32 stays far inside it (its error, measured in test-ops, is about 1e-6 of the output's
 * range where bfloat16 products are about 1e-3). `exact` never uses it: its transforms round
 * differently from a direct convolution, and the goldens are the direct one's numbers.
 *
 * The tiles of all images of the batch are taken in blocks (Tb tiles) and the output channels in
 * chunks (Cc):
 * input transform V[36][cin][Tb] once per tile block; weight transform U[36][Cc][cin] per chunk
 * (recomputed per tile block: cout cin 162 flops against cout cin 72 Tb for the products); 36
 * products M[p] = U[p] V[p] side by side on the threads; output transform of M into y.
 * Scratch sizes depend only on the shapes (arena, sized by the dry run).
 *
 * ref: A. Lavin, S. Gray, "Fast Algorithms for Convolutional Neural Networks" (2016), the
 * F(4x4, 3x3) matrices B^T, G, A^T.
 */
#include "ops.h"

#include <limits.h>
#include <string.h>

#include "gemm.h"
#include "../loader/safetensors.h"   // sdg__f16_to_f32, sdg__bf16_to_f32

#define WINO_T 6                     // input tile side
#define WINO_P 36                    // transformed positions
// Scratch budgets (floats): V and U at most about 16 MB each.
#define WINO_V_FLOATS ((size_t)4 << 20)
#define WINO_U_FLOATS ((size_t)4 << 20)
// Smallest output side Winograd is used for (see sdg__winograd_applies).
#define WINO_MIN_SIDE 32

bool sdg__winograd_applies(const sdg_exec *ex, int k, int stride, int oh, int ow)
{
    // The weights are transformed on every call (kept transformed they would take 4x the
    // memory): about 100 cycles per channel pair, which pays off from 32x32 maps on (a direct
    // convolution spends ~1100 cycles per pair there, F(4,3) ~300 plus the transforms).
    return ex->fast && !sdg_gemm_fast_is_bf16() && k == 3 && stride == 1 && oh >= WINO_MIN_SIDE &&
           ow >= WINO_MIN_SIDE;
}

// B^T d for a 6-vector (stride s).
static inline void wino_bt(const float *d, ptrdiff_t s, float *r, ptrdiff_t rs)
{
    float d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s];
    r[0] = 4.0f * d0 - 5.0f * d2 + d4;
    r[rs] = -4.0f * d1 - 4.0f * d2 + d3 + d4;
    r[2 * rs] = 4.0f * d1 - 4.0f * d2 - d3 + d4;
    r[3 * rs] = -2.0f * d1 - d2 + 2.0f * d3 + d4;
    r[4 * rs] = 2.0f * d1 - d2 - 2.0f * d3 + d4;
    r[5 * rs] = 4.0f * d1 - 5.0f * d3 + d5;
}

// G g for a 3-vector.
static inline void wino_g(const float *g, ptrdiff_t s, float *u, ptrdiff_t us)
{
    float g0 = g[0], g1 = g[s], g2 = g[2 * s];
    u[0] = g0 * 0.25f;
    u[us] = -(g0 + g1 + g2) * (1.0f / 6.0f);
    u[2 * us] = -(g0 - g1 + g2) * (1.0f / 6.0f);
    u[3 * us] = g0 * (1.0f / 24.0f) + g1 * (1.0f / 12.0f) + g2 * (1.0f / 6.0f);
    u[4 * us] = g0 * (1.0f / 24.0f) - g1 * (1.0f / 12.0f) + g2 * (1.0f / 6.0f);
    u[5 * us] = g2;
}

// A^T m for a 6-vector.
static inline void wino_at(const float *m, ptrdiff_t s, float *o, ptrdiff_t os)
{
    float m0 = m[0], m1 = m[s], m2 = m[2 * s], m3 = m[3 * s], m4 = m[4 * s], m5 = m[5 * s];
    o[0] = m0 + m1 + m2 + m3 + m4;
    o[os] = m1 - m2 + 2.0f * m3 - 2.0f * m4;
    o[2 * os] = m1 + m2 + 4.0f * m3 + 4.0f * m4;
    o[3 * os] = m1 - m2 + 8.0f * m3 - 8.0f * m4 + m5;
}

// The 9 taps of kernel (co, ci) of a convolution weight [cout, cin, 3, 3], packed in
// SDG_PANEL_A panels or row-major (see common.h), as floats.
static void wino_taps(sdg_weight w, int cin, int co, int ci, float g[9])
{
    size_t kdim = (size_t)cin * 9;
    for (int t = 0; t < 9; t++) {
        size_t col = (size_t)ci * 9 + t, at;
        if (w.panel)
            at = ((size_t)(co / w.panel) * kdim + col) * (size_t)w.panel + (size_t)(co % w.panel);
        else
            at = (size_t)co * kdim + col;
        g[t] = w.dtype == SDG_DT_F32   ? ((const float *)w.data)[at]
               : w.dtype == SDG_DT_F16 ? sdg__f16_to_f32(((const uint16_t *)w.data)[at])
                                       : sdg__bf16_to_f32(((const uint16_t *)w.data)[at]);
    }
}

void sdg__conv3x3_winograd(sdg_exec *ex, const float *x, int n, int cin, int h, int w,
                           sdg_weight weight, const float *bias, int cout, int pad_t, int pad_l,
                           int oh, int ow, float *y)
{
    int th = (oh + 3) / 4, tw = (ow + 3) / 4, T1 = th * tw;
    SDG_ASSERT((size_t)n * T1 <= INT_MAX);
    int T = n * T1;   // tile t: image t / T1, row (t % T1) / tw, column t % tw
    size_t tb_max = WINO_V_FLOATS / ((size_t)WINO_P * cin);
    int Tb = tb_max >= (size_t)T ? T : tb_max < 16 ? 16 : (int)(tb_max / 16 * 16);
    if (Tb > T)
        Tb = T;
    size_t cc_max = WINO_U_FLOATS / ((size_t)WINO_P * cin);
    int Cc = cc_max >= (size_t)cout ? cout : cc_max < 6 ? 6 : (int)(cc_max / 6 * 6);
    if (Cc > cout)
        Cc = cout;
    size_t mark = sdg__mark(ex);
    float *V = sdg__alloc_f32(ex, (size_t)WINO_P * cin * Tb);
    float *U = sdg__alloc_f32(ex, (size_t)WINO_P * Cc * cin);
    float *M = sdg__alloc_f32(ex, (size_t)WINO_P * Cc * Tb);
    // The model's multiply-adds are the direct convolution's, whatever the algorithm: the
    // benchmark rates every precision against the same count (and its OpenBLAS baseline times
    // the direct convolution's product).
    for (int b = 0; b < n; b++)
        sdg_gemm_count(ex, cout, oh * ow, cin * 9);
    if (ex->dry) {
        sdg__release(ex, mark);
        return;
    }
    size_t hw = (size_t)h * w, ohw = (size_t)oh * ow;
    sdg_exec serial;
    sdg__exec_init(&serial, 1);
    {
        for (int t0 = 0; t0 < T; t0 += Tb) {
            int tb = T - t0 < Tb ? T - t0 : Tb;
            // V[p][ci][t] = (B^T d B)[p] for the 6x6 input block d of tile t0 + t.
            #pragma omp parallel for num_threads(ex->n_threads) schedule(dynamic, 4)
            for (int ci = 0; ci < cin; ci++) {
                for (int t = 0; t < tb; t++) {
                    int b = (t0 + t) / T1, ty = (t0 + t) % T1 / tw, tx = (t0 + t) % tw;
                    const float *xc = x + ((size_t)b * cin + ci) * hw;
                    int iy0 = ty * 4 - pad_t, ix0 = tx * 4 - pad_l;
                    float d[WINO_P], r[WINO_P], v[WINO_P];
                    for (int i = 0; i < WINO_T; i++)
                        for (int j = 0; j < WINO_T; j++) {
                            int iy = iy0 + i, ix = ix0 + j;
                            d[i * WINO_T + j] = iy >= 0 && iy < h && ix >= 0 && ix < w
                                                    ? xc[(size_t)iy * w + ix] : 0.0f;
                        }
                    for (int j = 0; j < WINO_T; j++)   // columns: r = B^T d
                        wino_bt(d + j, WINO_T, r + j, WINO_T);
                    for (int i = 0; i < WINO_T; i++)   // rows: v = r B
                        wino_bt(r + i * WINO_T, 1, v + i * WINO_T, 1);
                    for (int p = 0; p < WINO_P; p++)
                        V[((size_t)p * cin + ci) * tb + t] = v[p];
                }
            }
            for (int c0 = 0; c0 < cout; c0 += Cc) {
                int cc = cout - c0 < Cc ? cout - c0 : Cc;
                // U[p][co][ci] = (G g G^T)[p].
                #pragma omp parallel for num_threads(ex->n_threads) schedule(dynamic, 1)
                for (int co = 0; co < cc; co++)
                    for (int ci = 0; ci < cin; ci++) {
                        float g[9], r[18], u[WINO_P];
                        wino_taps(weight, cin, c0 + co, ci, g);
                        for (int j = 0; j < 3; j++)   // columns: r = G g (6x3)
                            wino_g(g + j, 3, r + j, 3);
                        for (int i = 0; i < WINO_T; i++)   // rows: u = r G^T (6x6)
                            wino_g(r + i * 3, 1, u + i * WINO_T, 1);
                        for (int p = 0; p < WINO_P; p++)
                            U[((size_t)p * cc + co) * cin + ci] = u[p];
                    }
                // M[p] = U[p] V[p]: 36 independent products, one per thread at a time.
                #pragma omp parallel for num_threads(ex->n_threads) schedule(dynamic, 1)
                for (int p = 0; p < WINO_P; p++) {
                    sdg_gemm_operand ou = {U + (size_t)p * cc * cin, SDG_DT_F32, cin, 1, 0, NULL};
                    sdg_gemm_operand ov = {V + (size_t)p * cin * tb, SDG_DT_F32, tb, 1, 0, NULL};
                    sdg_exec one = serial;
                    sdg_gemm(&one, cc, tb, cin, 1.0f, &ou, &ov, 0.0f, M + (size_t)p * cc * tb, tb);
                }
                // y block = A^T m A (+ bias), the valid part of each 4x4 block.
                #pragma omp parallel for num_threads(ex->n_threads) schedule(dynamic, 1)
                for (int co = 0; co < cc; co++) {
                    float bv = bias ? bias[c0 + co] : 0.0f;
                    for (int t = 0; t < tb; t++) {
                        float m[WINO_P], r[24], o[16];
                        for (int p = 0; p < WINO_P; p++)
                            m[p] = M[((size_t)p * cc + co) * tb + t];
                        for (int j = 0; j < WINO_T; j++)   // columns: r = A^T m (4x6)
                            wino_at(m + j, WINO_T, r + j, WINO_T);
                        for (int i = 0; i < 4; i++)        // rows: o = r A (4x4)
                            wino_at(r + i * WINO_T, 1, o + i * 4, 1);
                        int b = (t0 + t) / T1, ty = (t0 + t) % T1 / tw, tx = (t0 + t) % tw;
                        float *yc = y + ((size_t)b * cout + c0 + co) * ohw;
                        for (int i = 0; i < 4 && ty * 4 + i < oh; i++)
                            for (int j = 0; j < 4 && tx * 4 + j < ow; j++)
                                yc[(size_t)(ty * 4 + i) * ow + tx * 4 + j] = o[i * 4 + j] + bv;
                    }
                }
            }
        }
    }
    sdg__release(ex, mark);
}
