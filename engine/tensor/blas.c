/*
 * blas.c - the one door to OpenBLAS: sdg_op_gemm_blas, a row-major single-precision GEMM.
 *
 * The engine multiplies with its own sdg_gemm (gemm.h); OpenBLAS stays as the reference the
 * tests compare sdg_gemm with and the baseline tools/benchmark measures it against. This is
 * the only file that includes <cblas.h>. It checks its
 * arguments (shapes, leading dimensions, non-NULL data) with SDG_ASSERT before calling
 * cblas_sgemm.
 *
 * Determinism: OpenBLAS's own threading does not give the same bits for 1 and 2 threads (its
 * threaded driver cuts the inner dimension into blocks differently from its serial one; the
 * tests caught it). So OpenBLAS always runs on one thread here, and we split C ourselves into a
 * grid of blocks that depends only on the shape, never on the thread count, and hand the blocks
 * to OpenMP threads. Each element of C is then computed by the same serial sgemm call whatever
 * the thread count, and the picture is the same on any machine size.
 *
 * Not here: any layout conversion, packing or scratch memory (callers arrange their operands),
 * and no fallback BLAS (ops_ref.c holds the naive loops the tests compare against).
 *
 * ref: cblas_sgemm (OpenBLAS interface/gemm.c, driver/level3/level3.c vs level3_thread.c);
 * ggml-blas.cpp for the "assert, then call" shape.
 */
#include "ops.h"

#include <cblas.h>

// OpenBLAS extension (declared by OpenBLAS's cblas.h, repeated for other cblas headers).
extern int openblas_get_num_threads(void);

// A product with fewer multiply-adds than this runs as one call (threads would cost more).
#define GEMM_SPLIT_MIN_FMA ((size_t)1 << 20)
// The grid has at most this many blocks (enough to balance 16 threads or so)...
#define GEMM_MAX_BLOCKS 64
// ...and no block smaller than this: each block packs its own panels of A and B, which costs
// about 1/GEMM_MIN_BN + 1/GEMM_MIN_BM of the arithmetic.
#define GEMM_MIN_BM 64
#define GEMM_MIN_BN 128
// Block edges fall on multiples of these (OpenBLAS's register tiles), sparing edge kernels.
#define GEMM_ALIGN_M 16
#define GEMM_ALIGN_N 16

static inline int gemm_ceil_div(int a, int b)
{
    return (a + b - 1) / b;
}

static inline int gemm_round_up(int a, int b)
{
    return gemm_ceil_div(a, b) * b;
}

// Chooses the block size bm x bn of C's grid from the shape alone: halve the longer block side
// while the grid is small and the blocks stay big enough.
static void gemm_grid(int m, int n, int k, int *bm_out, int *bn_out)
{
    int bm = m, bn = n;
    int nbm = 1, nbn = 1;
    while (nbm * nbn < GEMM_MAX_BLOCKS) {
        if ((size_t)bm * bn * k < 2 * GEMM_SPLIT_MIN_FMA)
            break;
        bool can_m = bm >= 2 * GEMM_MIN_BM, can_n = bn >= 2 * GEMM_MIN_BN;
        if (can_n && (!can_m || bn >= bm)) {
            bn = gemm_round_up(gemm_ceil_div(bn, 2), GEMM_ALIGN_N);
            nbn = gemm_ceil_div(n, bn);
        } else if (can_m) {
            bm = gemm_round_up(gemm_ceil_div(bm, 2), GEMM_ALIGN_M);
            nbm = gemm_ceil_div(m, bm);
        } else {
            break;
        }
    }
    *bm_out = bm;
    *bn_out = bn;
}

// Serial OpenBLAS, once: the threads are ours (see the top of the file). Calling it from
// several OpenMP threads at once is safe: OpenBLAS serialises only its buffer bookkeeping.
static void blas_serial(void)
{
    if (openblas_get_num_threads() != 1)
        sdg__blas_set_threads(1);
}

void sdg_op_gemm_blas(sdg_exec *ex, bool ta, bool tb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    SDG_ASSERT(ex && ex->n_threads >= 1);
    SDG_ASSERT(m >= 0 && n >= 0 && k >= 0);
    // Row-major: A is m x k (stored k x m when ta), B is k x n (stored n x k when tb).
    SDG_ASSERT(lda >= (ta ? m : k) && lda >= 1);
    SDG_ASSERT(ldb >= (tb ? k : n) && ldb >= 1);
    SDG_ASSERT(ldc >= n && ldc >= 1);
    if (ex->dry)
        return;
    if (m == 0 || n == 0)
        return;
    SDG_ASSERT(c != NULL);
    if (k == 0) {
        // Nothing to multiply: C = beta * C (cblas would do the same, but spell it out).
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(size_t)i * ldc + j];
        return;
    }
    SDG_ASSERT(a != NULL && b != NULL);
    blas_serial();
    CBLAS_TRANSPOSE opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;

    int bm, bn;
    gemm_grid(m, n, k, &bm, &bn);
    int nbm = gemm_ceil_div(m, bm), nbn = gemm_ceil_div(n, bn), blocks = nbm * nbn;
    if (blocks == 1) {
        cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    // Any thread may take any block: the block, not the thread, fixes the arithmetic.
    #pragma omp parallel for num_threads(ex->n_threads) schedule(dynamic, 1)
    for (int t = 0; t < blocks; t++) {
        int i0 = t / nbn * bm, j0 = t % nbn * bn;
        int mi = m - i0 < bm ? m - i0 : bm, nj = n - j0 < bn ? n - j0 : bn;
        const float *ab = ta ? a + i0 : a + (size_t)i0 * lda;   // rows i0.. of op(A)
        const float *bb = tb ? b + (size_t)j0 * ldb : b + j0;   // columns j0.. of op(B)
        cblas_sgemm(CblasRowMajor, opa, opb, mi, nj, k, alpha, ab, lda, bb, ldb, beta,
                    c + (size_t)i0 * ldc + j0, ldc);
    }
}
