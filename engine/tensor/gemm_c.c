/*
 * gemm_c.c - sdg_gemm's portable kernel set: GCC vector extensions, 8 floats wide, lowered to
 * whatever the baseline target has (SSE2 on x86-64). Multiplies and adds separately (no FMA
 * contraction under -std=c11), so its last bits differ from the FMA sets'.
 */
#include <stdbool.h>
#include <stddef.h>
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

// vdpbf16ps's arithmetic, one lane at a time: per k pair, acc += hi(a) hi(b), then
// acc += lo(a) lo(b), each sum rounded to float32 (the products of two bfloat16 values are exact
// in float32). Unlike the instruction it keeps denormals (it does not flush them to zero).
static inline float gemm_c_bf16_lo(uint32_t p)
{
    uint32_t u = p << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float gemm_c_bf16_hi(uint32_t p)
{
    uint32_t u = p & 0xffff0000u;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void gemm_c_micro_bf16(int kp, const uint32_t *a, const uint32_t *b, ptrdiff_t bstride,
                              float *c, ptrdiff_t ldc, float alpha, float beta, bool first)
{
    bool read_c = !(first && beta == 0.0f);
    for (int r = 0; r < 6; r++)
        for (int j = 0; j < 16; j++) {
            const uint32_t *bj = b + (j / 16) * bstride + j % 16;
            float acc = 0.0f;
            for (int p = 0; p < kp; p++) {
                uint32_t x = a[p * 6 + r], y = bj[p * 16];
                acc = acc + gemm_c_bf16_hi(x) * gemm_c_bf16_hi(y);
                acc = acc + gemm_c_bf16_lo(x) * gemm_c_bf16_lo(y);
            }
            float v = acc * alpha;
            float *o = c + (ptrdiff_t)r * ldc + j;
            *o = read_c ? *o * (first ? beta : 1.0f) + v : v;
        }
}

#define GEMM_BF16_MICRO gemm_c_micro_bf16
#define GEMM_BLOCK_BF16_FN sdg_gemm_block_c_bf16
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
