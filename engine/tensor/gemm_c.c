/*
 * gemm_c.c - sdg_gemm's portable kernel set: GCC vector extensions, 8 floats wide, lowered to
 * whatever the baseline target has (SSE2 on x86-64). Multiplies and adds separately (no FMA
 * contraction under -std=c11), so its last bits differ from the FMA sets'.
 */
#include <stdint.h>
#include <string.h>

#include "../loader/safetensors.h"   // sdg__f16_to_f32

typedef float gemm_v8 __attribute__((vector_size(32), aligned(4)));

static inline gemm_v8 gemm_c_load(const float *p)
{
    gemm_v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void gemm_c_store(float *p, gemm_v8 v)
{
    memcpy(p, &v, sizeof v);
}

static inline void gemm_c_cvt_f16(float *dst, const uint16_t *src, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = sdg__f16_to_f32(src[i]);
}

#define GEMM_BLOCK_FN sdg_gemm_block_c
#define GEMM_V gemm_v8
#define GEMM_VL 8
#define GEMM_VZERO() ((gemm_v8){0})
#define GEMM_VLOAD(p) gemm_c_load(p)
#define GEMM_VSTORE(p, v) gemm_c_store((p), (v))
#define GEMM_VSET1(x) ((gemm_v8){0} + (x))
#define GEMM_VFMA(a, b, c) ((a) * (b) + (c))
#define GEMM_VMUL(a, b) ((a) * (b))
#define GEMM_VADD(a, b) ((a) + (b))
#define GEMM_CVT_F16(dst, src, n) gemm_c_cvt_f16((dst), (src), (n))

#include "gemm_impl.h"
