/*
 * gemm.h - the engine's own matrix product: C = alpha A B + beta C in float32 arithmetic, with
 * operands that may be 16-bit weights (converted inside the product, never widened in memory)
 * or the implicit im2col of a feature map (a convolution without an im2col buffer).
 *
 * The product is Goto's: C is cut into blocks fixed by the shape, each block's slices of A and
 * B are packed into panels (6 rows of A, 16 columns of B, k-major, converted to float32 as they
 * are packed), and a register-tiled micro-kernel multiplies the panels. The packing and the
 * micro-kernel are compiled once per kernel set (gemm_impl.h, included by one file per
 * instruction set), and the set is chosen from cpuid when the engine first multiplies.
 *
 * Determinism: each element of C sums its k products in one fixed order (k-blocks of
 * GEMM_KC in turn, each accumulated in ascending k by one FMA chain), whatever block or thread
 * computes it: the same bits at any thread count, for a given kernel set. Kernel sets may
 * differ from one another in the last bits (the portable one multiplies and adds separately).
 *
 * Not here: model knowledge, or OpenBLAS (blas.c keeps it as the reference the tests and the
 * benchmark compare with).
 */
#ifndef SDG_GEMM_H
#define SDG_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common.h"

// The kernel sets, in order of preference. Each has a float32 product (`exact`); the BF16 ones
// also have a bfloat16 one (`fast`: products of bfloat16-rounded operands, float32 sums), which
// the others replace with their float32 product.
typedef enum sdg_kernels {
    SDG_KERNELS_C = 0,        // portable C (any CPU)
    SDG_KERNELS_AVX2,         // AVX2 + FMA + F16C
    SDG_KERNELS_AVX512,       // AVX-512F (+ F16C)
    SDG_KERNELS_AVX512_BF16,  // AVX-512F + AVX512-BF16 (vdpbf16ps) + AVX512-BW
    SDG_KERNELS_C_BF16,       // tests only, never chosen: portable C with a bfloat16 product
                              // that does vdpbf16ps's arithmetic, to check the `fast` path's
                              // packing and numbers on machines without AVX512-BF16
    SDG_KERNELS_COUNT
} sdg_kernels;

// The kernel set in use: the best the CPU supports, unless SDG_KERNELS (c, avx2, avx512,
// avx512-bf16, c-bf16; tests and measurements only) names one it also supports. Chosen once per
// process.
sdg_kernels sdg_gemm_kernels(void);
const char *sdg_gemm_kernels_name(sdg_kernels k);
// What runs the products of one precision with the set in use: its name, or for `fast` on a set
// without a bfloat16 product, the set's (float32) name.
const char *sdg_gemm_kernels_label(bool fast);
// Whether the set in use has a bfloat16 product (else `fast` products are float32 ones).
bool sdg_gemm_fast_is_bf16(void);
// Whether the CPU can run a kernel set (tests force each one with sdg_gemm_force).
bool sdg_gemm_kernels_supported(sdg_kernels k);
// Tests only: makes k the set in use (must be supported); returns the previous one.
sdg_kernels sdg_gemm_force(sdg_kernels k);

// The geometry of an implicit im2col: B(kk, j) for kk = (ci*k + ky)*k + kx and j = oy*ow + ox is
// x[ci, oy*stride + ky - pad_t, ox*stride + kx - pad_l], 0 outside the image.
typedef struct sdg_gemm_conv {
    int cin, h, w, k, stride, pad_t, pad_l, oh, ow;
} sdg_gemm_conv;

// One operand in storage type dtype: element (r, c) of the matrix at p[r*rs + c*cs] (A: r = i,
// c = k; B: r = k, c = j); or a weight packed at load (panel = SDG_PANEL_A for A, SDG_PANEL_B for
// B, see common.h; rs and cs unused); or, for B with conv set, the implicit im2col of the
// float32 image p.
typedef struct sdg_gemm_operand {
    const void *p;
    sdg_dtype dtype;
    ptrdiff_t rs, cs;
    int panel;
    const sdg_gemm_conv *conv;
} sdg_gemm_operand;

// A weight W[m, k] as A, and a weight W[n, k] as B (B = W^T), packed or row-major.
static inline sdg_gemm_operand sdg_gemm_weight_a(sdg_weight w, int k)
{
    SDG_ASSERT(w.panel == 0 || w.panel == SDG_PANEL_A);
    return (sdg_gemm_operand){w.data, w.dtype, k, 1, w.panel, NULL};
}

static inline sdg_gemm_operand sdg_gemm_weight_b(sdg_weight w, int k)
{
    SDG_ASSERT(w.panel == 0 || w.panel == SDG_PANEL_B);
    return (sdg_gemm_operand){w.data, w.dtype, 1, k, w.panel, NULL};
}

// C[m, n] (row stride ldc) = alpha A[m, k] B[k, n] + beta C; beta == 0 never reads C. The
// product is split over ex->n_threads threads (none when called with ex->n_threads == 1, which
// is safe inside a parallel region). Needs no arena.
void sdg_gemm(sdg_exec *ex, int m, int n, int k, float alpha, const sdg_gemm_operand *a,
              const sdg_gemm_operand *b, float beta, float *c, ptrdiff_t ldc);

// tools/benchmark only: called with the shape of every product (dry or not), to time OpenBLAS on
// the same shapes. NULL otherwise; not thread-safe.
extern void (*sdg__gemm_shape_hook)(int m, int n, int k, bool dry, void *data);
extern void *sdg__gemm_shape_hook_data;

// Counts a product of shape (m, n, k) in ex->flops and shows it to the shape hook. sdg_gemm does
// it for every product; ops that return before reaching sdg_gemm in a dry run (they have no
// operands to describe yet) call it themselves, so that a dry run counts what the real run will.
void sdg_gemm_count(sdg_exec *ex, int m, int n, int k);

// ---------------------------------------------------------------------------------------------
// Inside: the per-kernel-set entry (gemm_impl.h) and the block sizes the packing is laid out in.

#define GEMM_MR SDG_PANEL_A   // rows of A per panel, rows of a micro-tile
#define GEMM_NP SDG_PANEL_B   // columns of B per panel
#define GEMM_NR_MAX 32     // widest micro-tile (two panels)
#define GEMM_KC 256        // k per packed block
#define GEMM_MC 96         // rows of A per packed block (16 panels)
#define GEMM_NC 256        // columns of B per packed block (16 panels)

typedef struct sdg_gemm_block {
    int m, n, k;
    float alpha, beta;
    const sdg_gemm_operand *a, *b;
    float *c;
    ptrdiff_t ldc;
} sdg_gemm_block;

// Computes C rows [i0, i0+mi) and columns [j0, j0+nj) of the product g, all of k.
typedef void (*sdg_gemm_block_fn)(const sdg_gemm_block *g, int i0, int mi, int j0, int nj);

void sdg_gemm_block_c(const sdg_gemm_block *g, int i0, int mi, int j0, int nj);
void sdg_gemm_block_c_bf16(const sdg_gemm_block *g, int i0, int mi, int j0, int nj);
void sdg_gemm_block_avx2(const sdg_gemm_block *g, int i0, int mi, int j0, int nj);
void sdg_gemm_block_avx512(const sdg_gemm_block *g, int i0, int mi, int j0, int nj);
void sdg_gemm_block_avx512_bf16(const sdg_gemm_block *g, int i0, int mi, int j0, int nj);

#endif // SDG_GEMM_H
