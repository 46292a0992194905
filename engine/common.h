/*
 * common.h - what every room of the engine shares: error reporting, assertions, and the execution
 * context (thread count, activation arena, dry runs) that all network code runs under.
 *
 * Not public: only engine/ includes this. Exported internal names carry the `sdg__` prefix.
 */
#ifndef SDG_COMMON_H
#define SDG_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sdg.h"

// ---------------------------------------------------------------------------------------------
// Errors. Runtime failures set an sdg_error (which may be NULL) and return a status; programming
// errors (a broken invariant inside the engine) abort through SDG_ASSERT.

#if defined(__GNUC__)
#define SDG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define SDG_NORETURN __attribute__((noreturn))
#else
#define SDG_PRINTF(a, b)
#define SDG_NORETURN
#endif

// Sets err (if not NULL) and returns status, so callers can write `return sdg__fail(err, ...)`.
sdg_status sdg__fail(sdg_error *err, sdg_status status, const char *fmt, ...) SDG_PRINTF(3, 4);
void sdg__error_clear(sdg_error *err);

SDG_NORETURN void sdg__abort(const char *file, int line, const char *fmt, ...) SDG_PRINTF(3, 4);
#define SDG_ASSERT(x) \
    do { if (!(x)) sdg__abort(__FILE__, __LINE__, "assertion failed: %s", #x); } while (0)

// ---------------------------------------------------------------------------------------------
// Weights as held. A matrix or convolution kernel W[rows, cols] (PyTorch's [out, in, ...], cols =
// in * k * k) is packed once at load into the panels the matrix products read (gemm.h): groups of
// `panel` rows, each stored column by column (element (r, c) at
// [r / panel][c][r % panel]), rows padded with zeros to a multiple of sdg_panel_pad(panel). It
// keeps its file's storage type: F16 and BF16 stay 16-bit (half the memory of float32) and are
// converted as the product reads them. Panels of SDG_PANEL_A rows serve as the left operand
// (a convolution's kernel), of SDG_PANEL_B rows as the right one, transposed (a linear layer's
// weight). panel 0: the file's own row-major layout (an embedding table). Vectors (biases, norm
// scales) are plain float32 arrays.

typedef enum sdg_dtype { SDG_DT_F32 = 0, SDG_DT_F16, SDG_DT_BF16 } sdg_dtype;

#define SDG_PANEL_A 6
#define SDG_PANEL_B 16

static inline size_t sdg_dtype_size(sdg_dtype t)
{
    return t == SDG_DT_F32 ? 4 : 2;
}

// Rows are padded to a multiple of this: whole panels, and for SDG_PANEL_B whole pairs of them
// (the widest micro-tile reads two at once).
static inline int64_t sdg_panel_pad(int panel)
{
    return panel == SDG_PANEL_B ? 2 * SDG_PANEL_B : panel > 0 ? panel : 1;
}

typedef struct sdg_weight {
    const void *data;
    sdg_dtype dtype;
    int panel;          // 0 (row-major), SDG_PANEL_A or SDG_PANEL_B
} sdg_weight;

// Packs `rows` rows of a row-major matrix src[rows, cols] (elements of es bytes: 2 or 4; row
// stride ld elements) into the
// panel layout above, as the rows first_row.. of the whole matrix: dst is the whole packed
// matrix, rows must be a multiple of panel or reach the end, and rows past `total_rows` (up to
// the padding) are written as zeros.
void sdg__pack_panels(void *dst, const void *src, size_t es, int64_t ld, int64_t first_row,
                      int64_t rows, int64_t total_rows, int64_t cols, int panel);

// A float32 row-major matrix as a weight (tests).
static inline sdg_weight sdg_weight_f32(const float *p)
{
    return (sdg_weight){p, SDG_DT_F32, 0};
}

// ---------------------------------------------------------------------------------------------
// Execution context.
//
// Network code allocates every activation from one arena, sized once before a sampling loop, so
// no allocation happens inside the loop. The size comes from a dry run: with `dry` set, the same
// forward code runs, allocations only advance the counters (and return a dummy pointer), and
// every op returns at once without touching memory. Ops reserve their own scratch (im2col
// tiles, attention scores) from the arena in the same way, before checking `dry`.

typedef struct sdg_arena {
    uint8_t *base;     // owned (NULL in a dry run)
    size_t cap;        // bytes
    size_t used;       // bytes in use
    size_t peak;       // high-water mark since the last reset
} sdg_arena;

typedef struct sdg_exec {
    int n_threads;     // >= 1; governs OpenMP loops and OpenBLAS
    bool dry;          // measuring pass: allocate nothing real, compute nothing
    bool fast;         // matrix products in the `fast` precision (gemm.h; sdg_precision)
    uint64_t flops;    // multiply-adds x 2 of the matrix products run (or, dry, planned) so far:
                       // the analytic count tools/benchmark rates speed by
    sdg_arena arena;
} sdg_exec;

// Whether runs in precision p use the `fast` products (SDG_PRECISION_DEFAULT resolves to the
// engine's choice; gemm.c).
bool sdg__precision_is_fast(sdg_precision p);

// The x86 features the kernels use, from cpuid, each only where the OS saves its registers (XCR0);
// 0 elsewhere. One query, cached.
enum {
    SDG_CPU_AVX2 = 1 << 0,
    SDG_CPU_FMA = 1 << 1,
    SDG_CPU_F16C = 1 << 2,
    SDG_CPU_AVX512F = 1 << 3,
    SDG_CPU_AVX512BW = 1 << 4,
    SDG_CPU_AVX512BF16 = 1 << 5,
};
unsigned sdg__cpu_features(void);

// Alignment of every arena allocation (bytes): a cache line, enough for any SIMD load.
#define SDG_ARENA_ALIGN 64

// Allocates bytes aligned to SDG_ARENA_ALIGN (free() it); large blocks are aligned to 2 MiB and
// asked to be backed by huge pages, which makes first touching gigabytes of weights and
// activations several times cheaper (one page fault per 2 MiB instead of per 4 KiB).
void *sdg__alloc_big(size_t bytes);

void sdg__exec_init(sdg_exec *ex, int n_threads);
// Makes the arena hold at least `bytes` (keeps its contents only if no growth is needed).
sdg_status sdg__exec_reserve(sdg_exec *ex, size_t bytes, sdg_error *err);
// The capacity sdg__exec_reserve allocates for `bytes` (whole 2 MiB pages): what an arena of that
// size really takes, for the memory guard.
size_t sdg__exec_reserve_size(size_t bytes);
void sdg__exec_free(sdg_exec *ex);

// Returns n floats from the arena (uninitialised, 64-byte aligned). In a dry run returns a dummy
// non-NULL pointer that must not be dereferenced. Running out of a sized arena is a programming
// error (the dry run must have measured the same sequence) and aborts.
float *sdg__alloc_f32(sdg_exec *ex, size_t n);
static inline size_t sdg__mark(const sdg_exec *ex) { return ex->arena.used; }
static inline void sdg__release(sdg_exec *ex, size_t mark) { ex->arena.used = mark; }

// Sets OpenBLAS's own (process-wide) thread count and returns the previous setting. blas.c keeps
// it at 1: the engine splits products into blocks on its own OpenMP threads so that results do not
// depend on the thread count (OpenBLAS's threaded drivers change the summation order).
int sdg__blas_set_threads(int n);

#endif // SDG_COMMON_H
