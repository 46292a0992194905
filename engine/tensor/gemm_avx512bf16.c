/*
 * gemm_avx512bf16.c - sdg_gemm's bfloat16 product (`fast`) for CPUs with AVX512-BF16: a 6x32
 * micro-tile of vdpbf16ps, each taking one k pair of bfloat16 operands into float32 sums. Built
 * with -mavx512f -mavx512bw -mavx512bf16; called only when cpuid reports them (gemm.c). The
 * packing and the loops are gemm_impl.h's, shared with every set; the portable `c-bf16` set does
 * this kernel's arithmetic in C, so tests check the packing and the numbers on any machine. The
 * float32 product of this set is gemm_avx512.c's.
 */
#include <stdbool.h>
#include <stddef.h>

#include "gemm_avx512.h"

#define GEMM_DP(acc, a, b) _mm512_dpbf16_ps((acc), (__m512bh)(a), (__m512bh)(b))

static inline void gemm_avx512_micro_bf16(int kp, const uint32_t *a, const uint32_t *b,
                                          ptrdiff_t bstride, float *c, ptrdiff_t ldc, float alpha,
                                          float beta, bool first)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps();
    __m512 c11 = _mm512_setzero_ps(), c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps();
    __m512 c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps(), c40 = _mm512_setzero_ps();
    __m512 c41 = _mm512_setzero_ps(), c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    const uint32_t *b1 = b + bstride;
    for (int p = 0; p < kp; p++, a += 6) {
        __m512i x0 = _mm512_loadu_si512(b + (size_t)p * 16), x1 = _mm512_loadu_si512(b1 + (size_t)p * 16);
        __m512i ar;
        ar = _mm512_set1_epi32((int)a[0]); c00 = GEMM_DP(c00, ar, x0); c01 = GEMM_DP(c01, ar, x1);
        ar = _mm512_set1_epi32((int)a[1]); c10 = GEMM_DP(c10, ar, x0); c11 = GEMM_DP(c11, ar, x1);
        ar = _mm512_set1_epi32((int)a[2]); c20 = GEMM_DP(c20, ar, x0); c21 = GEMM_DP(c21, ar, x1);
        ar = _mm512_set1_epi32((int)a[3]); c30 = GEMM_DP(c30, ar, x0); c31 = GEMM_DP(c31, ar, x1);
        ar = _mm512_set1_epi32((int)a[4]); c40 = GEMM_DP(c40, ar, x0); c41 = GEMM_DP(c41, ar, x1);
        ar = _mm512_set1_epi32((int)a[5]); c50 = GEMM_DP(c50, ar, x0); c51 = GEMM_DP(c51, ar, x1);
    }
    __m512 acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(first ? beta : 1.0f);
    bool read_c = !(first && beta == 0.0f);
    for (int r = 0; r < 6; r++)
        for (int v = 0; v < 2; v++) {
            float *o = c + (ptrdiff_t)r * ldc + v * 16;
            __m512 x = _mm512_mul_ps(acc[r][v], va);
            if (read_c)
                x = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(o), vb), x);
            _mm512_storeu_ps(o, x);
        }
}

#define GEMM_ONLY_BF16
#define GEMM_BF16_MICRO gemm_avx512_micro_bf16
#define GEMM_BLOCK_BF16_FN sdg_gemm_block_avx512_bf16
#define GEMM_BLOCK_FN sdg_gemm_block_avx512_unused
#include "gemm_impl.h"
