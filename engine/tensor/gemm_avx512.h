/*
 * gemm_avx512.h - the AVX-512 vector macros of gemm_impl.h, shared by the AVX-512 float32 set
 * (gemm_avx512.c) and the AVX512-BF16 one (gemm_avx512bf16.c); each file sets the block entries'
 * names and includes gemm_impl.h after this.
 */
#include <immintrin.h>
#include <stdint.h>

// Halves to floats, 16 at a time (exact).
static inline void gemm_avx512_cvt_f16(float *dst, const uint16_t *src, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i,
                         _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    for (; i < n; i++)
        dst[i] = _cvtsh_ss(src[i]);
}

#define GEMM_V __m512
#define GEMM_VL 16
#define GEMM_VZERO() _mm512_setzero_ps()
#define GEMM_VLOAD(p) _mm512_loadu_ps(p)
#define GEMM_VSTORE(p, v) _mm512_storeu_ps((p), (v))
#define GEMM_VSET1(x) _mm512_set1_ps(x)
#define GEMM_VFMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define GEMM_VMUL(a, b) _mm512_mul_ps((a), (b))
#define GEMM_VADD(a, b) _mm512_add_ps((a), (b))
#define GEMM_CVT_F16(dst, src, n) gemm_avx512_cvt_f16((dst), (src), (n))
