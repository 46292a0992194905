/*
 * gemm_avx2.c - sdg_gemm's AVX2 kernel set (with FMA and F16C): a 6x16 micro-tile in 12 ymm
 * accumulators. Built with -mavx2 -mfma -mf16c; called only when cpuid reports all three.
 */
#include <immintrin.h>
#include <stdint.h>

// Halves to floats, 8 at a time with vcvtph2ps (exact).
static inline void gemm_avx2_cvt_f16(float *dst, const uint16_t *src, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = _cvtsh_ss(src[i]);
}

#define GEMM_BLOCK_FN sdg_gemm_block_avx2
#define GEMM_V __m256
#define GEMM_VL 8
#define GEMM_VZERO() _mm256_setzero_ps()
#define GEMM_VLOAD(p) _mm256_loadu_ps(p)
#define GEMM_VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define GEMM_VSET1(x) _mm256_set1_ps(x)
#define GEMM_VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define GEMM_VMUL(a, b) _mm256_mul_ps((a), (b))
#define GEMM_VADD(a, b) _mm256_add_ps((a), (b))
#define GEMM_CVT_F16(dst, src, n) gemm_avx2_cvt_f16((dst), (src), (n))

#include "gemm_impl.h"
