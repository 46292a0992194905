/*
 * gemm_impl.h - packing and micro-kernel of sdg_gemm, written once and compiled once per kernel
 * set: a file defines the vector macros below and includes this (gemm_c.c, gemm_avx2.c,
 * gemm_avx512.c, each built with its own -m flags, so the compiler may use those instructions
 * only there).
 *
 *   GEMM_BLOCK_FN    the name of the block entry (sdg_gemm_block_avx2, ...)
 *   GEMM_V           the vector type, GEMM_VL floats wide
 *   GEMM_VZERO() GEMM_VLOAD(p) GEMM_VSTORE(p, v) GEMM_VSET1(x) GEMM_VFMA(a, b, c) = a*b + c
 *   GEMM_VMUL(a, b) GEMM_VADD(a, b)
 *   GEMM_CVT_F16(dst, src, n)  n halves (uint16_t *) to floats
 *   GEMM_BF16_MICRO, GEMM_BLOCK_BF16_FN (optional)  a bfloat16 micro-kernel with the signature of
 *                    gemm_micro_bf16 below, and the name of the block entry that uses it
 *   GEMM_ONLY_BF16   (optional) define no float32 entry (another file has it)
 *
 * The bfloat16 product (`fast`) packs exactly as the float32 one, then rounds the float32 panels
 * to bfloat16 (to nearest even) in pairs along k, the layout vdpbf16ps reads: A's panel as
 * [k/2][6] pairs, B's as [k/2][16] pairs (an odd k is padded with a zero).
 *
 * The micro-tile is GEMM_MR rows by GEMM_NR = 2 * GEMM_VL columns: 12 accumulators, 2 vector
 * loads of B and 6 broadcasts of A per k. B's panels are 16 columns wide whatever the vector
 * width, so a 32-column tile (AVX-512) reads two panels side by side; packing pads B with
 * zero columns to a whole tile and A with zero rows to a whole panel.
 *
 * Memory: a block packs into two buffers on the calling thread's stack (GEMM_MC x GEMM_KC and
 * GEMM_KC x GEMM_NC floats, 608 KB in all); every thread the engine runs on has the usual 8 MB.
 *
 * ref: K. Goto, R. van de Geijn, "Anatomy of high-performance matrix multiplication" (2008);
 * BLIS's micro-kernel interface (F. Van Zee, R. van de Geijn 2015).
 */
#include <string.h>

#include "gemm.h"

#define GEMM_NV 2
#define GEMM_NR (GEMM_NV * GEMM_VL)

// float32 from bfloat16: the upper half of the bits.
static inline void gemm_cvt_bf16(float *restrict dst, const uint16_t *restrict src, int n)
{
    for (int i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[i] << 16;
        memcpy(dst + i, &u, 4);
    }
}

// n elements of operand o's storage from element offset off, step stride, as floats.
static inline void gemm_load_row(float *restrict dst, const sdg_gemm_operand *o, ptrdiff_t off,
                                 ptrdiff_t stride, int n)
{
    if (o->dtype == SDG_DT_F32) {
        const float *s = (const float *)o->p + off;
        if (stride == 1) {
            memcpy(dst, s, (size_t)n * sizeof *dst);
        } else {
            for (int i = 0; i < n; i++)
                dst[i] = s[(ptrdiff_t)i * stride];
        }
        return;
    }
    const uint16_t *s = (const uint16_t *)o->p + off;
    uint16_t tmp[GEMM_KC];
    if (stride != 1) {
        for (int i = 0; i < n; i++)
            tmp[i] = s[(ptrdiff_t)i * stride];
        s = tmp;
    }
    if (o->dtype == SDG_DT_F16)
        GEMM_CVT_F16(dst, s, n);
    else
        gemm_cvt_bf16(dst, s, n);
}

// ap[panel][k][6] = A[i0 + panel*6 + r][p0 + k], zero rows past mc.
static void gemm_pack_a(float *restrict ap, const sdg_gemm_operand *a, int i0, int mc, int p0,
                        int kc)
{
    float rows[GEMM_MR][GEMM_KC];
    for (int i = 0; i < mc; i += GEMM_MR) {
        int h = mc - i < GEMM_MR ? mc - i : GEMM_MR;
        for (int r = 0; r < h; r++)
            gemm_load_row(rows[r], a, (ptrdiff_t)(i0 + i + r) * a->rs + (ptrdiff_t)p0 * a->cs,
                          a->cs, kc);
        for (int r = h; r < GEMM_MR; r++)
            memset(rows[r], 0, (size_t)kc * sizeof(float));
        float *dst = ap + (size_t)(i / GEMM_MR) * kc * GEMM_MR;
        for (int k = 0; k < kc; k++)
            for (int r = 0; r < GEMM_MR; r++)
                dst[k * GEMM_MR + r] = rows[r][k];
    }
}

// 16 floats (a loop the compiler turns into vector moves: memcpy of so few bytes becomes
// `rep movs`, whose start-up costs more than the copy).
static inline void gemm_copy16(float *restrict dst, const float *restrict src)
{
    for (int c = 0; c < GEMM_NP; c++)
        dst[c] = src[c];
}

// The implicit im2col's rows kk = (ci*k + ky)*k + kx in turn, stepped without divisions.
typedef struct gemm_conv_k {
    int ci, ky, kx;
} gemm_conv_k;

// The position just before row p0 (gemm_conv_k_next moves onto it).
static inline gemm_conv_k gemm_conv_k_at(const sdg_gemm_conv *cv, int p0)
{
    return (gemm_conv_k){p0 / (cv->k * cv->k), p0 / cv->k % cv->k, p0 % cv->k - 1};
}

static inline void gemm_conv_k_next(const sdg_gemm_conv *cv, gemm_conv_k *r)
{
    if (++r->kx == cv->k) {
        r->kx = 0;
        if (++r->ky == cv->k) {
            r->ky = 0;
            r->ci++;
        }
    }
}

// 16 consecutive pixels of input row iy of channel xc from column ix, 0 outside the image.
static inline void gemm_conv_run16(float *restrict d, const float *xc, const sdg_gemm_conv *cv,
                                   int iy, int ix)
{
    if (iy < 0 || iy >= cv->h) {
        memset(d, 0, GEMM_NP * sizeof *d);
        return;
    }
    const float *src = xc + (size_t)iy * cv->w;
    if (ix >= 0 && ix + GEMM_NP <= cv->w) {
        gemm_copy16(d, src + ix);
        return;
    }
    for (int c = 0; c < GEMM_NP; c++)
        d[c] = ix + c >= 0 && ix + c < cv->w ? src[ix + c] : 0.0f;
}

// One 16-column panel of the implicit im2col: dst[k][c] = B(p0 + k, j0 + c) for c < w, else 0.
static void gemm_pack_b_conv(float *restrict dst, const sdg_gemm_conv *cv, const float *x,
                             int p0, int kc, int j0, int w)
{
    int iy0[GEMM_NP], ix0[GEMM_NP];
    for (int c = 0; c < w; c++) {
        int j = j0 + c;
        iy0[c] = j / cv->ow * cv->stride - cv->pad_t;
        ix0[c] = j % cv->ow * cv->stride - cv->pad_l;
    }
    // A panel inside one output row with stride 1 reads 16 consecutive input pixels.
    bool one_row = w == GEMM_NP && cv->stride == 1 && iy0[0] == iy0[GEMM_NP - 1];
    gemm_conv_k r = gemm_conv_k_at(cv, p0);
    for (int k = 0; k < kc; k++) {
        gemm_conv_k_next(cv, &r);
        const float *xc = x + (size_t)r.ci * cv->h * cv->w;
        float *d = dst + (size_t)k * GEMM_NP;
        if (one_row) {
            gemm_conv_run16(d, xc, cv, iy0[0] + r.ky, ix0[0] + r.kx);
            continue;
        }
        for (int c = 0; c < w; c++) {
            int iy = iy0[c] + r.ky, ix = ix0[c] + r.kx;
            d[c] = iy >= 0 && iy < cv->h && ix >= 0 && ix < cv->w
                       ? xc[(size_t)iy * cv->w + ix] : 0.0f;
        }
        for (int c = w; c < GEMM_NP; c++)
            d[c] = 0.0f;
    }
}

// `count` whole panels of the implicit im2col from column j0, for stride 1 and output rows a
// whole number of panels wide (each panel inside one output row): k by k, so that the panels
// of one output row read one run of the input row (as gemm_pack_b's row-major case).
static void gemm_pack_b_conv_rows(float *restrict bp, const sdg_gemm_conv *cv, const float *x,
                                  int p0, int kc, int j0, int count)
{
    gemm_conv_k r = gemm_conv_k_at(cv, p0);
    for (int k = 0; k < kc; k++) {
        gemm_conv_k_next(cv, &r);
        const float *xc = x + (size_t)r.ci * cv->h * cv->w;
        for (int q = 0; q < count; q++) {
            int j = j0 + q * GEMM_NP;
            gemm_conv_run16(bp + ((size_t)q * kc + k) * GEMM_NP, xc, cv,
                            j / cv->ow - cv->pad_t + r.ky, j % cv->ow - cv->pad_l + r.kx);
        }
    }
}

// bp[panel][k][16] = B[p0 + k][j0 + panel*16 + c], zero columns past nc up to a whole tile.
static void gemm_pack_b(float *restrict bp, const sdg_gemm_operand *b, int p0, int kc, int j0,
                        int nc)
{
    int width = (nc + GEMM_NR - 1) / GEMM_NR * GEMM_NR;
    if (!b->conv && b->cs == 1 && b->dtype == SDG_DT_F32 && nc == width) {
        // Rows of B are contiguous and fill whole panels: row by row, each read in one run of
        // nc floats (rows far apart in memory are each a new stream the prefetcher must find;
        // a panel at a time would read 64 bytes of each).
        const float *src = (const float *)b->p + (ptrdiff_t)p0 * b->rs + j0;
        for (int k = 0; k < kc; k++)
            for (int j = 0; j < width; j += GEMM_NP)
                gemm_copy16(bp + ((size_t)(j / GEMM_NP) * kc + k) * GEMM_NP,
                            src + (ptrdiff_t)k * b->rs + j);
        return;
    }
    if (b->conv && b->conv->stride == 1 && b->conv->ow % GEMM_NP == 0 && nc == width) {
        gemm_pack_b_conv_rows(bp, b->conv, (const float *)b->p, p0, kc, j0, width / GEMM_NP);
        return;
    }
    for (int j = 0; j < width; j += GEMM_NP) {
        float *dst = bp + (size_t)(j / GEMM_NP) * kc * GEMM_NP;
        int w = nc - j < GEMM_NP ? nc - j : GEMM_NP;
        if (w <= 0) {
            memset(dst, 0, (size_t)kc * GEMM_NP * sizeof *dst);
        } else if (b->conv) {
            gemm_pack_b_conv(dst, b->conv, (const float *)b->p, p0, kc, j0 + j, w);
        } else if (b->cs == 1 && b->dtype == SDG_DT_F32 && w == GEMM_NP) {
            // Rows of B are contiguous: one run of 16 per k.
            const float *src = (const float *)b->p + (ptrdiff_t)p0 * b->rs + (j0 + j);
            for (int k = 0; k < kc; k++)
                gemm_copy16(dst + (size_t)k * GEMM_NP, src + (ptrdiff_t)k * b->rs);
        } else if (b->cs == 1) {
            for (int k = 0; k < kc; k++) {
                float *d = dst + (size_t)k * GEMM_NP;
                gemm_load_row(d, b, (ptrdiff_t)(p0 + k) * b->rs + (j0 + j), 1, w);
                for (int c = w; c < GEMM_NP; c++)
                    d[c] = 0.0f;
            }
        } else {
            // Columns of B are the contiguous runs (a weight W[out, in] read as W^T): convert
            // each column's run of k, then interleave.
            float cols[GEMM_NP][GEMM_KC];
            for (int c = 0; c < w; c++)
                gemm_load_row(cols[c], b, (ptrdiff_t)p0 * b->rs + (ptrdiff_t)(j0 + j + c) * b->cs,
                              b->rs, kc);
            for (int c = w; c < GEMM_NP; c++)
                memset(cols[c], 0, (size_t)kc * sizeof(float));
            for (int k = 0; k < kc; k++)
                for (int c = 0; c < GEMM_NP; c++)
                    dst[(size_t)k * GEMM_NP + c] = cols[c][k];
        }
    }
}

// c[6, NR] (row stride ldc) = alpha acc + (first ? beta : 1) c, acc = a-panel x b-panels (the
// second B panel, when a tile spans two, starts bstride floats after the first); with
// first && beta == 0, c is not read.
static inline void gemm_micro(int kc, const float *restrict a, const float *restrict b,
                              ptrdiff_t bstride, float *c, ptrdiff_t ldc, float alpha, float beta,
                              bool first)
{
    // Written out register by register: with arrays, GCC distributes the k loop over the two
    // vector columns, which loads every A value twice and halves the speed.
    const float *b0 = b + (0 * GEMM_VL / GEMM_NP) * bstride + 0 * GEMM_VL % GEMM_NP;
    const float *b1 = b + (1 * GEMM_VL / GEMM_NP) * bstride + 1 * GEMM_VL % GEMM_NP;
    GEMM_V c00 = GEMM_VZERO(), c01 = GEMM_VZERO(), c10 = GEMM_VZERO(), c11 = GEMM_VZERO();
    GEMM_V c20 = GEMM_VZERO(), c21 = GEMM_VZERO(), c30 = GEMM_VZERO(), c31 = GEMM_VZERO();
    GEMM_V c40 = GEMM_VZERO(), c41 = GEMM_VZERO(), c50 = GEMM_VZERO(), c51 = GEMM_VZERO();
    for (int k = 0; k < kc; k++, a += GEMM_MR) {
        GEMM_V x0 = GEMM_VLOAD(b0 + (size_t)k * GEMM_NP), x1 = GEMM_VLOAD(b1 + (size_t)k * GEMM_NP);
        GEMM_V ar;
        ar = GEMM_VSET1(a[0]); c00 = GEMM_VFMA(ar, x0, c00); c01 = GEMM_VFMA(ar, x1, c01);
        ar = GEMM_VSET1(a[1]); c10 = GEMM_VFMA(ar, x0, c10); c11 = GEMM_VFMA(ar, x1, c11);
        ar = GEMM_VSET1(a[2]); c20 = GEMM_VFMA(ar, x0, c20); c21 = GEMM_VFMA(ar, x1, c21);
        ar = GEMM_VSET1(a[3]); c30 = GEMM_VFMA(ar, x0, c30); c31 = GEMM_VFMA(ar, x1, c31);
        ar = GEMM_VSET1(a[4]); c40 = GEMM_VFMA(ar, x0, c40); c41 = GEMM_VFMA(ar, x1, c41);
        ar = GEMM_VSET1(a[5]); c50 = GEMM_VFMA(ar, x0, c50); c51 = GEMM_VFMA(ar, x1, c51);
    }
    GEMM_V acc[GEMM_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41},
                              {c50, c51}};
    GEMM_V va = GEMM_VSET1(alpha), vb = GEMM_VSET1(first ? beta : 1.0f);
    bool read_c = !(first && beta == 0.0f);
    for (int r = 0; r < GEMM_MR; r++)
        for (int v = 0; v < 2; v++) {
            float *p = c + (ptrdiff_t)r * ldc + v * GEMM_VL;
            GEMM_V x = GEMM_VMUL(acc[r][v], va);
            if (read_c)
                x = GEMM_VADD(GEMM_VMUL(GEMM_VLOAD(p), vb), x);
            GEMM_VSTORE(p, x);
        }
}

// Panels of a weight packed at load (o->panel = height, k columns in all), from column p0 on:
// F32 ones are read where they are (*stride = k * height); 16-bit ones are converted into buf,
// `count` panels of kc columns (*stride = kc * height).
static const float *gemm_panels(const sdg_gemm_operand *o, int k, int first_panel, int count,
                                int p0, int kc, float *buf, ptrdiff_t *stride)
{
    size_t h = (size_t)o->panel;
    if (o->dtype == SDG_DT_F32) {
        *stride = (ptrdiff_t)k * (ptrdiff_t)h;
        return (const float *)o->p + ((size_t)first_panel * k + p0) * h;
    }
    for (int q = 0; q < count; q++)
        gemm_load_row(buf + (size_t)q * kc * h, o, (ptrdiff_t)(((size_t)(first_panel + q) * k + p0) * h),
                      1, (int)((size_t)kc * h));
    *stride = (ptrdiff_t)kc * (ptrdiff_t)h;
    return buf;
}

#ifdef GEMM_BF16_MICRO
// float32 to bfloat16, rounded to nearest even (NaN stays NaN).
static inline uint32_t gemm_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (u >> 16) | 0x40;
    return (u + 0x7fffu + ((u >> 16) & 1)) >> 16;
}

// count panels of height h (float32, kc columns, panel stride `stride`) to bfloat16 pairs:
// dst[panel][k/2][h] = bf16(p[k][r]) | bf16(p[k+1][r]) << 16.
static void gemm_pairs(uint32_t *restrict dst, const float *src, ptrdiff_t stride, int count,
                       int h, int kc)
{
    int kp = (kc + 1) / 2;
    for (int q = 0; q < count; q++) {
        const float *p = src + q * stride;
        uint32_t *d = dst + (size_t)q * kp * h;
        for (int k = 0; k + 1 < kc; k += 2)
            for (int r = 0; r < h; r++)
                d[(k / 2) * h + r] = gemm_bf16(p[k * h + r]) | gemm_bf16(p[(k + 1) * h + r]) << 16;
        if (kc % 2)
            for (int r = 0; r < h; r++)
                d[(kc / 2) * h + r] = gemm_bf16(p[(kc - 1) * h + r]);
    }
}

#endif

static inline void gemm_block(const sdg_gemm_block *g, int i0, int mi, int j0, int nj, bool bf16)
{
    _Alignas(64) float ap[GEMM_MC * GEMM_KC];
    _Alignas(64) float bp[GEMM_KC * GEMM_NC];
    _Alignas(64) float tile[GEMM_MR * GEMM_NR];
#ifdef GEMM_BF16_MICRO
    _Alignas(64) uint32_t apair[GEMM_MC * GEMM_KC / 2];
    _Alignas(64) uint32_t bpair[GEMM_KC * GEMM_NC / 2];
#else
    SDG_ASSERT(!bf16);
#endif
    SDG_ASSERT(g->a->panel == 0 || (g->a->panel == GEMM_MR && i0 % GEMM_MR == 0));
    SDG_ASSERT(g->b->panel == 0 || (g->b->panel == GEMM_NP && j0 % GEMM_NR_MAX == 0));
    for (int p0 = 0; p0 < g->k; p0 += GEMM_KC) {
        int kc = g->k - p0 < GEMM_KC ? g->k - p0 : GEMM_KC;
        bool first = p0 == 0;
        for (int jc = j0; jc < j0 + nj; jc += GEMM_NC) {
            int nc = j0 + nj - jc < GEMM_NC ? j0 + nj - jc : GEMM_NC;
            const float *bpk;
            ptrdiff_t bstride;
            if (g->b->panel) {
                int np = (nc + GEMM_NR - 1) / GEMM_NR * GEMM_NR / GEMM_NP;
                bpk = gemm_panels(g->b, g->k, jc / GEMM_NP, np, p0, kc, bp, &bstride);
            } else {
                gemm_pack_b(bp, g->b, p0, kc, jc, nc);
                bpk = bp;
                bstride = (ptrdiff_t)kc * GEMM_NP;
            }
            int kp = (kc + 1) / 2;   // k pairs of the bfloat16 product
            (void)kp;
#ifdef GEMM_BF16_MICRO
            if (bf16)
                gemm_pairs(bpair, bpk, bstride, (nc + GEMM_NR - 1) / GEMM_NR * GEMM_NR / GEMM_NP,
                           GEMM_NP, kc);
#endif
            for (int ic = i0; ic < i0 + mi; ic += GEMM_MC) {
                int mc = i0 + mi - ic < GEMM_MC ? i0 + mi - ic : GEMM_MC;
                const float *apk;
                ptrdiff_t astride;
                if (g->a->panel) {
                    apk = gemm_panels(g->a, g->k, ic / GEMM_MR, (mc + GEMM_MR - 1) / GEMM_MR, p0,
                                      kc, ap, &astride);
                } else {
                    gemm_pack_a(ap, g->a, ic, mc, p0, kc);
                    apk = ap;
                    astride = (ptrdiff_t)kc * GEMM_MR;
                }
#ifdef GEMM_BF16_MICRO
                if (bf16)
                    gemm_pairs(apair, apk, astride, (mc + GEMM_MR - 1) / GEMM_MR, GEMM_MR, kc);
#endif
                for (int jr = 0; jr < nc; jr += GEMM_NR) {
                    const float *bpan = bpk + (jr / GEMM_NP) * bstride;
                    int w = nc - jr < GEMM_NR ? nc - jr : GEMM_NR;
                    for (int ir = 0; ir < mc; ir += GEMM_MR) {
                        const float *apan = apk + (ir / GEMM_MR) * astride;
                        int h = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
                        float *cp = g->c + (ptrdiff_t)(ic + ir) * g->ldc + (jc + jr);
                        float *dst = h == GEMM_MR && w == GEMM_NR ? cp : tile;
                        ptrdiff_t ldd = dst == cp ? g->ldc : GEMM_NR;
                        bool read_c = !(first && g->beta == 0.0f);
                        if (dst == tile)   // an edge tile goes through a whole one on the side
                            for (int r = 0; r < GEMM_MR; r++)
                                for (int c = 0; c < GEMM_NR; c++)
                                    tile[r * GEMM_NR + c] = read_c && r < h && c < w
                                                                ? cp[(ptrdiff_t)r * g->ldc + c]
                                                                : 0.0f;
#ifdef GEMM_BF16_MICRO
                        if (bf16)
                            GEMM_BF16_MICRO(kp, apair + (size_t)(ir / GEMM_MR) * kp * GEMM_MR,
                                            bpair + (size_t)(jr / GEMM_NP) * kp * GEMM_NP,
                                            (ptrdiff_t)kp * GEMM_NP, dst, ldd, g->alpha, g->beta,
                                            first);
                        else
#endif
                            gemm_micro(kc, apan, bpan, bstride, dst, ldd, g->alpha, g->beta,
                                       first);
                        if (dst == cp)
                            continue;
                        for (int r = 0; r < h; r++)
                            memcpy(cp + (ptrdiff_t)r * g->ldc, tile + r * GEMM_NR,
                                   (size_t)w * sizeof(float));
                    }
                }
            }
        }
    }
}

#ifndef GEMM_ONLY_BF16
void GEMM_BLOCK_FN(const sdg_gemm_block *g, int i0, int mi, int j0, int nj)
{
    gemm_block(g, i0, mi, j0, nj, false);
}
#endif

#ifdef GEMM_BF16_MICRO
void GEMM_BLOCK_BF16_FN(const sdg_gemm_block *g, int i0, int mi, int j0, int nj)
{
    gemm_block(g, i0, mi, j0, nj, true);
}
#endif
