/*
 * common.c - errors, status names and the execution context (see common.h).
 */
#include "common.h"

#include <sys/mman.h>

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

// OpenBLAS extensions (declared by OpenBLAS's cblas.h, repeated here for other cblas headers).
extern void openblas_set_num_threads(int num_threads);
extern int openblas_get_num_threads(void);

sdg_status sdg__fail(sdg_error *err, sdg_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

void sdg__error_clear(sdg_error *err)
{
    if (err) {
        err->status = SDG_OK;
        err->message[0] = '\0';
    }
}

void sdg__abort(const char *file, int line, const char *fmt, ...)
{
    fprintf(stderr, "sdg: %s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

const char *sdg_status_name(sdg_status status)
{
    switch (status) {
    case SDG_OK: return "ok";
    case SDG_ERR_INVALID_ARG: return "invalid argument";
    case SDG_ERR_IO: return "input/output error";
    case SDG_ERR_FORMAT: return "malformed file";
    case SDG_ERR_SHAPE: return "wrong tensor shape";
    case SDG_ERR_NOMEM: return "out of memory";
    case SDG_ERR_CANCELLED: return "cancelled";
    case SDG_ERR_UNSUPPORTED: return "unsupported";
    }
    return "unknown status";
}

// ---------------------------------------------------------------------------------------------

// Huge page size on x86-64 and most arm64 kernels: big blocks and arena capacities are whole ones.
#define SDG_HUGE_PAGE ((size_t)2 << 20)

void *sdg__alloc_big(size_t bytes)
{
    const size_t huge = SDG_HUGE_PAGE;
    size_t align = bytes >= huge ? huge : SDG_ARENA_ALIGN;
    if (bytes > SIZE_MAX - align)
        return NULL;   // rounding up would wrap (a size no machine can give anyway)
    size_t size = (bytes + align - 1) & ~(align - 1);
    void *p = NULL;
    if (posix_memalign(&p, align, size ? size : align) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (size >= huge)
        madvise(p, size, MADV_HUGEPAGE);   // advice only: failure changes nothing
#endif
    return p;
}

void sdg__exec_init(sdg_exec *ex, int n_threads)
{
    memset(ex, 0, sizeof *ex);
    ex->n_threads = n_threads > 0 ? n_threads : 1;
}

size_t sdg__exec_reserve_size(size_t bytes)
{
    // Round up so that a few bytes more on the next size do not force a new allocation; to whole
    // huge pages, as sdg__alloc_big rounds big blocks to them anyway (so cap is what is taken).
    return (bytes + SDG_HUGE_PAGE - 1) & ~(SDG_HUGE_PAGE - 1);
}

sdg_status sdg__exec_reserve(sdg_exec *ex, size_t bytes, sdg_error *err)
{
    if (bytes <= ex->arena.cap)
        return SDG_OK;
    free(ex->arena.base);
    ex->arena.base = NULL;
    ex->arena.cap = 0;
    size_t cap = sdg__exec_reserve_size(bytes);
    void *p = sdg__alloc_big(cap);
    if (!p)
        return sdg__fail(err, SDG_ERR_NOMEM, "out of memory: the activations need %.1f MiB",
                         (double)cap / (1 << 20));
    ex->arena.base = p;
    ex->arena.cap = cap;
    ex->arena.used = 0;
    return SDG_OK;
}

void sdg__exec_free(sdg_exec *ex)
{
    if (!ex)
        return;
    free(ex->arena.base);
    memset(&ex->arena, 0, sizeof ex->arena);
}

float *sdg__alloc_f32(sdg_exec *ex, size_t n)
{
    sdg_arena *a = &ex->arena;
    size_t bytes = (n * sizeof(float) + SDG_ARENA_ALIGN - 1) & ~(size_t)(SDG_ARENA_ALIGN - 1);
    size_t at = a->used;
    a->used += bytes;
    if (a->used > a->peak)
        a->peak = a->used;
    if (ex->dry) {
        static float dummy[16];
        return dummy;
    }
    if (a->used > a->cap)
        sdg__abort(__FILE__, __LINE__, "arena overflow: %zu bytes needed, %zu reserved (dry run"
                   " and real run diverged)", a->used, a->cap);
    return (float *)(a->base + at);
}

int sdg__blas_set_threads(int n)
{
    int old = openblas_get_num_threads();
    if (n > 0)
        openblas_set_num_threads(n);
    return old;
}

void sdg__pack_panels(void *dst, const void *src, size_t es, int64_t ld, int64_t first_row,
                      int64_t rows, int64_t total_rows, int64_t cols, int panel)
{
    SDG_ASSERT(panel > 0 && first_row % panel == 0 && (es == 2 || es == 4));
    int64_t end = first_row + rows;
    if (end == total_rows)   // the last rows: pad to a whole multiple with zeros
        end = (total_rows + sdg_panel_pad(panel) - 1) / sdg_panel_pad(panel) * sdg_panel_pad(panel);
    for (int64_t g = first_row; g < end; g += panel) {
        int64_t h = total_rows - g < panel ? (total_rows - g > 0 ? total_rows - g : 0) : panel;
        // out[c][r] = src[g + r][c]; rows past the matrix are zero. Two loops by element size
        // so that each is a plain strided copy the compiler can schedule.
        if (es == 4) {
            uint32_t *out = (uint32_t *)dst + (size_t)g * (size_t)cols;
            const uint32_t *in = (const uint32_t *)src + (size_t)(g - first_row) * (size_t)ld;
            for (int64_t r = 0; r < panel; r++)
                for (int64_t c = 0; c < cols; c++)
                    out[c * panel + r] = r < h ? in[r * ld + c] : 0;
        } else {
            uint16_t *out = (uint16_t *)dst + (size_t)g * (size_t)cols;
            const uint16_t *in = (const uint16_t *)src + (size_t)(g - first_row) * (size_t)ld;
            for (int64_t r = 0; r < panel; r++)
                for (int64_t c = 0; c < cols; c++)
                    out[c * panel + r] = r < h ? in[r * ld + c] : 0;
        }
    }
}

#if defined(__x86_64__)
// The CPU's features from cpuid itself (compilers' __builtin_cpu_supports does not know every
// feature name, clang 14 lacks "f16c" and "avx512bf16"), and whether the OS saves the ymm/zmm
// registers across context switches (XCR0), without which the instructions exist but must not run.
static unsigned cpu_features_query(void)
{
    unsigned a, b, c, d, f = 0;
    if (__get_cpuid_max(0, NULL) < 7 || !__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    bool osxsave = c & (1u << 27), avx = c & (1u << 28);
    if (!osxsave || !avx)
        return 0;
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 0x6) != 0x6) // SSE and AVX state
        return 0;
    bool zmm_state = (xcr0_lo & 0xe0) == 0xe0; // opmask, upper zmm0-15, zmm16-31
    if (c & (1u << 12))
        f |= SDG_CPU_FMA;
    if (c & (1u << 29))
        f |= SDG_CPU_F16C;
    __cpuid_count(7, 0, a, b, c, d);
    if (b & (1u << 5))
        f |= SDG_CPU_AVX2;
    if (zmm_state && (b & (1u << 16)))
        f |= SDG_CPU_AVX512F;
    if (zmm_state && (b & (1u << 30)))
        f |= SDG_CPU_AVX512BW;
    unsigned max_sub = a;
    if (zmm_state && max_sub >= 1) {
        __cpuid_count(7, 1, a, b, c, d);
        if (a & (1u << 5))
            f |= SDG_CPU_AVX512BF16;
    }
    return f;
}

unsigned sdg__cpu_features(void)
{
    static unsigned features = ~0u; // benign race: every thread computes the same value
    unsigned f = __atomic_load_n(&features, __ATOMIC_RELAXED);
    if (f == ~0u) {
        f = cpu_features_query();
        __atomic_store_n(&features, f, __ATOMIC_RELAXED);
    }
    return f;
}
#else
unsigned sdg__cpu_features(void) { return 0; }
#endif
