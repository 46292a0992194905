/*
 * gemm.c - sdg_gemm's driver: the kernel set from cpuid, C's grid of blocks, and the threads.
 *
 * The grid depends on the shape alone (blocks of at most GEMM_BM x GEMM_NC, cut finer while there
 * are fewer than GEMM_MIN_BLOCKS and the blocks stay big), and threads take blocks dynamically,
 * one at a time: a thread that another process slows down simply takes fewer blocks, and no
 * element's arithmetic depends on which thread computes it.
 */
#include "gemm.h"

#include <stdlib.h>
#include <string.h>

// Rows of C per block (a multiple of GEMM_MR and of GEMM_MC's panels).
#define GEMM_BM 384
// Enough blocks to keep 2-8 threads busy when one of them is slowed down.
#define GEMM_MIN_BLOCKS 16
// Smallest blocks the grid cuts to (packing costs about 1/bm + 1/bn of the arithmetic).
#define GEMM_MIN_BM 48
#define GEMM_MIN_BN 64
// Products smaller than this many multiply-adds run on the calling thread.
#define GEMM_PAR_MIN_FMA ((size_t)1 << 18)

static const char *const gemm_names[SDG_KERNELS_COUNT] = {"c", "avx2", "avx512", "avx512-bf16",
                                                          "c-bf16"};
// Per set: the float32 product, and the bfloat16 one (NULL: `fast` runs the float32 one).
#if defined(__x86_64__)
static const sdg_gemm_block_fn gemm_fns[SDG_KERNELS_COUNT][2] = {
    {sdg_gemm_block_c, NULL},
    {sdg_gemm_block_avx2, NULL},
    {sdg_gemm_block_avx512, NULL},
    {sdg_gemm_block_avx512, sdg_gemm_block_avx512_bf16},
    {sdg_gemm_block_c, sdg_gemm_block_c_bf16},
};
#else
// Only the portable sets are built (engine/meson.build); the others are never supported.
static const sdg_gemm_block_fn gemm_fns[SDG_KERNELS_COUNT][2] = {
    {sdg_gemm_block_c, NULL}, {NULL, NULL}, {NULL, NULL}, {NULL, NULL},
    {sdg_gemm_block_c, sdg_gemm_block_c_bf16},
};
#endif

static int gemm_current = -1;

void (*sdg__gemm_shape_hook)(int m, int n, int k, bool dry, void *data);
void *sdg__gemm_shape_hook_data;

bool sdg_gemm_kernels_supported(sdg_kernels k)
{
#if defined(__x86_64__)
    unsigned f = sdg__cpu_features();
    const unsigned avx2 = SDG_CPU_AVX2 | SDG_CPU_FMA | SDG_CPU_F16C;
    const unsigned avx512 = SDG_CPU_AVX512F | SDG_CPU_FMA | SDG_CPU_F16C;
    const unsigned bf16 = avx512 | SDG_CPU_AVX512BW | SDG_CPU_AVX512BF16;
    switch (k) {
    case SDG_KERNELS_C:
    case SDG_KERNELS_C_BF16:
        return true;
    case SDG_KERNELS_AVX2:
        return (f & avx2) == avx2;
    case SDG_KERNELS_AVX512:
        return (f & avx512) == avx512;
    case SDG_KERNELS_AVX512_BF16:
        return (f & bf16) == bf16;
    default:
        return false;
    }
#else
    return k == SDG_KERNELS_C || k == SDG_KERNELS_C_BF16;
#endif
}

const char *sdg_gemm_kernels_name(sdg_kernels k)
{
    return (int)k >= 0 && k < SDG_KERNELS_COUNT ? gemm_names[k] : "?";
}

sdg_kernels sdg_gemm_kernels(void)
{
    int cur = __atomic_load_n(&gemm_current, __ATOMIC_ACQUIRE);
    if (cur >= 0)
        return (sdg_kernels)cur;
    int best = SDG_KERNELS_C;
    for (int k = SDG_KERNELS_AVX512_BF16; k > SDG_KERNELS_C; k--)
        if (sdg_gemm_kernels_supported((sdg_kernels)k)) {
            best = k;
            break;
        }
    // Tests force a lower set to compare them; an unknown or unsupported name is ignored.
    const char *env = getenv("SDG_KERNELS");
    for (int k = 0; env && k < SDG_KERNELS_COUNT; k++)
        if (strcmp(env, gemm_names[k]) == 0 && sdg_gemm_kernels_supported((sdg_kernels)k))
            best = k;
    __atomic_store_n(&gemm_current, best, __ATOMIC_RELEASE);
    return (sdg_kernels)best;
}

sdg_kernels sdg_gemm_force(sdg_kernels k)
{
    SDG_ASSERT(sdg_gemm_kernels_supported(k));
    sdg_kernels prev = sdg_gemm_kernels();
    __atomic_store_n(&gemm_current, (int)k, __ATOMIC_RELEASE);
    return prev;
}

const char *sdg_gemm_kernels_label(bool fast)
{
    sdg_kernels k = sdg_gemm_kernels();
    if (fast && gemm_fns[k][1])
        return gemm_names[k];
    // The float32 product of a BF16 set is its AVX-512 one.
    return k == SDG_KERNELS_AVX512_BF16 ? gemm_names[SDG_KERNELS_AVX512]
           : k == SDG_KERNELS_C_BF16    ? gemm_names[SDG_KERNELS_C]
                                        : gemm_names[k];
}

bool sdg_gemm_fast_is_bf16(void)
{
    return gemm_fns[sdg_gemm_kernels()][1] != NULL;
}

bool sdg__precision_is_fast(sdg_precision p)
{
    // The default is `fast`: its pictures stay within 51-56 dB PSNR of `exact` ones with
    // bfloat16 products and 86-89 dB with Winograd convolutions (whole 20-step runs of the
    // default model and the golden tiny model, tools/psnr-fast.sh; README, Speed), far above
    // the 30 dB below which `exact` would have to stay the default.
    return p == SDG_PRECISION_FAST || p == SDG_PRECISION_DEFAULT;
}

static inline int gemm_ceil_div(int a, int b)
{
    return (a + b - 1) / b;
}

static inline int gemm_round_up(int a, int b)
{
    return gemm_ceil_div(a, b) * b;
}

// Even blocks of at most `most`, multiples of `align`: returns the block size for `len`.
static int gemm_split(int len, int most, int align)
{
    int parts = gemm_ceil_div(len, most);
    return gemm_round_up(gemm_ceil_div(len, parts), align);
}

void sdg_gemm_count(sdg_exec *ex, int m, int n, int k)
{
    ex->flops += 2 * (uint64_t)m * (uint64_t)n * (uint64_t)k;
    if (sdg__gemm_shape_hook)
        sdg__gemm_shape_hook(m, n, k, ex->dry, sdg__gemm_shape_hook_data);
}

void sdg_gemm(sdg_exec *ex, int m, int n, int k, float alpha, const sdg_gemm_operand *a,
              const sdg_gemm_operand *b, float beta, float *c, ptrdiff_t ldc)
{
    SDG_ASSERT(ex && ex->n_threads >= 1 && a && b);
    SDG_ASSERT(m >= 0 && n >= 0 && k >= 0 && ldc >= n);
    sdg_gemm_count(ex, m, n, k);
    if (ex->dry || m == 0 || n == 0)
        return;
    SDG_ASSERT(c != NULL);
    if (k == 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(ptrdiff_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(ptrdiff_t)i * ldc + j];
        return;
    }
    SDG_ASSERT(a->p && b->p && !a->conv);
    sdg_gemm_block g = {m, n, k, alpha, beta, a, b, c, ldc};
    sdg_kernels set = sdg_gemm_kernels();
    sdg_gemm_block_fn fn = ex->fast && gemm_fns[set][1] ? gemm_fns[set][1] : gemm_fns[set][0];

    int bm = gemm_split(m, GEMM_BM, GEMM_MR), bn = gemm_split(n, GEMM_NC, GEMM_NR_MAX);
    int nbm = gemm_ceil_div(m, bm), nbn = gemm_ceil_div(n, bn);
    size_t fma = (size_t)m * n * k;
    while (nbm * nbn < GEMM_MIN_BLOCKS && fma >= GEMM_PAR_MIN_FMA) {
        bool can_m = bm >= 2 * GEMM_MIN_BM, can_n = bn >= 2 * GEMM_MIN_BN;
        if (can_n && (!can_m || bn >= bm))
            bn = gemm_round_up(gemm_ceil_div(bn, 2), GEMM_NR_MAX);
        else if (can_m)
            bm = gemm_round_up(gemm_ceil_div(bm, 2), GEMM_MR);
        else
            break;
        nbm = gemm_ceil_div(m, bm);
        nbn = gemm_ceil_div(n, bn);
    }
    int blocks = nbm * nbn;
    if (blocks == 1 || ex->n_threads == 1 || fma < GEMM_PAR_MIN_FMA) {
        for (int t = 0; t < blocks; t++) {
            int i0 = t / nbn * bm, j0 = t % nbn * bn;
            fn(&g, i0, m - i0 < bm ? m - i0 : bm, j0, n - j0 < bn ? n - j0 : bn);
        }
        return;
    }
    // Any thread may take any block: the block, not the thread, fixes the arithmetic.
    #pragma omp parallel for num_threads(ex->n_threads) schedule(dynamic, 1)
    for (int t = 0; t < blocks; t++) {
        int i0 = t / nbn * bm, j0 = t % nbn * bn;
        fn(&g, i0, m - i0 < bm ? m - i0 : bm, j0, n - j0 < bn ? n - j0 : bn);
    }
}
