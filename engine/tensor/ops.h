/*
 * ops.h - the tensor operations every network is built from, over flat float arrays.
 *
 * Layouts: feature maps are NCHW, contiguous; token sequences are [N, T, C], contiguous, unless a
 * leading-dimension argument (ld*) says otherwise. Every op takes the execution context first:
 * it reserves its scratch from the arena, then returns at once in a dry run (see common.h).
 * Outputs never alias inputs unless the comment says they may.
 *
 * Matrix products and convolutions go through sdg_gemm (gemm.h; convolutions as implicit GEMMs,
 * without an im2col buffer). Each op has a naive `_ref` twin in ops_ref.c that tests compare against.
 *
 * Not here: anything that knows about a model, a file or a checkpoint name.
 */
#ifndef SDG_OPS_H
#define SDG_OPS_H

#include <stdbool.h>
#include <stddef.h>

#include "../common.h"

// Output size of a convolution along one axis.
static inline int sdg_conv_out_size(int in, int k, int stride, int pad0, int pad1)
{
    return (in + pad0 + pad1 - k) / stride + 1;
}

// C[m,n] = alpha * op(A) op(B) + beta * C, row-major, op = transpose when ta/tb.
// A is m x k (k x m when ta), B is k x n (n x k when tb). sdg_gemm (gemm.h) computes it;
// sdg_op_gemm_blas is the same product by OpenBLAS (blas.c), for tests and the benchmark.
void sdg_op_gemm(sdg_exec *ex, bool ta, bool tb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
void sdg_op_gemm_blas(sdg_exec *ex, bool ta, bool tb, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc);

// y[rows,out] = x[rows,in] w[out,in]^T + b[out] (PyTorch nn.Linear); b may be NULL.
void sdg_op_linear(sdg_exec *ex, const float *x, size_t rows, int in, sdg_weight w,
                   const float *b, int out, float *y);

// y[n,cout,oh,ow] = conv2d(x[n,cin,h,w], w[cout,cin,k,k]) + b[cout] with zero padding
// (top, left, bottom, right) and a square kernel; b may be NULL. An implicit GEMM: the im2col
// matrix is packed straight from x, never stored.
void sdg_op_conv2d(sdg_exec *ex, const float *x, int n, int cin, int h, int w, sdg_weight weight,
                   const float *bias, int cout, int k, int stride, int pad_t, int pad_l, int pad_b,
                   int pad_r, float *y);

// Row `row` of the matrix w[rows, width] as floats into dst (an embedding lookup).
void sdg_weight_row(sdg_weight w, size_t row, int width, float *dst);

// Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions (winograd.c): whether sdg_op_conv2d uses it
// for this shape (the `fast` precision without bfloat16 products, maps of 8x8 and more), and
// the convolution itself (same contract as sdg_op_conv2d with k = 3, stride 1).
bool sdg__winograd_applies(const sdg_exec *ex, int k, int stride, int oh, int ow);
void sdg__conv3x3_winograd(sdg_exec *ex, const float *x, int n, int cin, int h, int w,
                           sdg_weight weight, const float *bias, int cout, int pad_t, int pad_l,
                           int oh, int ow, float *y);

// GroupNorm over x[n,c,hw] with `groups` groups, per-channel affine gamma/beta; y may alias x.
// When silu is true, y = silu(groupnorm(x)) (the pair every ResBlock uses).
void sdg_op_group_norm(sdg_exec *ex, const float *x, int n, int c, size_t hw, int groups,
                       const float *gamma, const float *beta, float eps, bool silu, float *y);

// LayerNorm over the last axis of x[rows,c]; y may alias x.
void sdg_op_layer_norm(sdg_exec *ex, const float *x, size_t rows, int c, const float *gamma,
                       const float *beta, float eps, float *y);

// Element-wise; y may alias x.
void sdg_op_silu(sdg_exec *ex, const float *x, size_t n, float *y);
void sdg_op_gelu(sdg_exec *ex, const float *x, size_t n, float *y);        // exact (erf) GELU
void sdg_op_quick_gelu(sdg_exec *ex, const float *x, size_t n, float *y);  // x * sigmoid(1.702 x)
void sdg_op_relu(sdg_exec *ex, const float *x, size_t n, float *y);
void sdg_op_scale(sdg_exec *ex, const float *x, size_t n, float s, float *y);
// y = a + b; y may alias a or b.
void sdg_op_add(sdg_exec *ex, const float *a, const float *b, size_t n, float *y);

// x[n,c,hw] += v[n,c] broadcast over hw (a ResBlock's time embedding).
void sdg_op_add_channel(sdg_exec *ex, float *x, int n, int c, size_t hw, const float *v);

// GEGLU: x[rows, 2d] = (a, gate) halves in that order; y[rows,d] = a * gelu(gate).
void sdg_op_geglu(sdg_exec *ex, const float *x, size_t rows, int d, float *y);

// Sinusoidal embedding of the n scalars t (timesteps, SDXL's sizes): y[n, dim] =
// [cos(t f_k), sin(t f_k)], f_k = exp(-ln(10000) k / (dim/2)), k < dim/2, in float32 like the
// reference (ldm/sgm util.py timestep_embedding); an odd dim's last column is 0.
void sdg_op_timestep_embedding(const sdg_exec *ex, const float *t, int n, int dim, float *y);

// Nearest-neighbour x2: y[n,c,2h,2w].
void sdg_op_upsample2x(sdg_exec *ex, const float *x, int n, int c, int h, int w, float *y);

// Per batch item, transposes a [rows,cols] matrix into [cols,rows] (NCHW <-> [N, HW, C]).
void sdg_op_transpose(sdg_exec *ex, const float *x, int n, size_t rows, size_t cols, float *y);

// y[n, ca+cb, hw] = concat(a[n,ca,hw], b[n,cb,hw]) along channels.
void sdg_op_concat_channels(sdg_exec *ex, const float *a, int ca, const float *b, int cb, int n,
                            size_t hw, float *y);

// Multi-head attention: for each batch item and head h, out = softmax(scale q k^T [+ causal
// mask]) v, where q is [n, tq, *] with row stride ldq and head h in columns h*dh..h*dh+dh-1;
// likewise k, v ([n, tk, *]) and out ([n, tq, *], row stride ldo). Holds one head's tq x tk score
// matrix at a time. causal: position i attends to j <= i.
void sdg_op_attention(sdg_exec *ex, const float *q, int ldq, const float *k, int ldk,
                      const float *v, int ldv, int n, int tq, int tk, int n_heads, int head_dim,
                      float scale, bool causal, float *out, int ldo);

// ---------------------------------------------------------------------------------------------
// Naive twins for tests (ops_ref.c): same contracts, plain loops, no BLAS, no threads, no arena.
void sdg_op_conv2d_ref(const float *x, int n, int cin, int h, int w, const float *weight,
                       const float *bias, int cout, int k, int stride, int pad_t, int pad_l,
                       int pad_b, int pad_r, float *y);
void sdg_op_linear_ref(const float *x, size_t rows, int in, const float *w, const float *b,
                       int out, float *y);
void sdg_op_group_norm_ref(const float *x, int n, int c, size_t hw, int groups,
                           const float *gamma, const float *beta, float eps, bool silu, float *y);
void sdg_op_layer_norm_ref(const float *x, size_t rows, int c, const float *gamma,
                           const float *beta, float eps, float *y);
void sdg_op_attention_ref(const float *q, int ldq, const float *k, int ldk, const float *v,
                          int ldv, int n, int tq, int tk, int n_heads, int head_dim, float scale,
                          bool causal, float *out, int ldo);

#endif // SDG_OPS_H
