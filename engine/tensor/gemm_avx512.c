/*
 * gemm_avx512.c - sdg_gemm's AVX-512 kernel set: a 6x32 micro-tile (two B panels) in 12 zmm
 * accumulators. Built with -mavx512f -mfma -mf16c; called only when cpuid reports AVX-512F.
 * The same source as the AVX2 set (gemm_impl.h), so it is the same arithmetic in the same order
 * per element of C: the AVX2 set's tests cover its logic; the machines CI runs on have no
 * AVX-512, so only a machine that has it runs it (test-gemm forces every supported set).
 */
#include "gemm_avx512.h"

#define GEMM_BLOCK_FN sdg_gemm_block_avx512

#include "gemm_impl.h"
