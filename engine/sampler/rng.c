/*
 * rng.c - the engine's seeded noise: Philox4x32-10 counter-based generator + Box-Muller.
 * The exact construction is written down in sampler.h so that it can be reimplemented.
 *
 * Not here: any attempt to reproduce PyTorch's (CPU mt19937 or CUDA Philox) randn streams; this
 * is the engine's own, documented generator.
 *
 * Ref: Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3" (SC'11), and
 * the Random123 philox.h constants and known-answer tests.
 */
#include "sampler.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u   // golden ratio
#define PHILOX_W1 0xBB67AE85u   // sqrt(3) - 1

void rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

// A 32-bit word as a uniform in the open interval (0, 1): never 0, so the log is finite.
static double u01(uint32_t w)
{
    return ((double)w + 0.5) * (1.0 / 4294967296.0);
}

// The four normals of block b of a stream.
static void normal_block(const uint32_t key[2], uint64_t stream, uint64_t b, float z[4])
{
    const double two_pi = 6.283185307179586476925286766559;
    uint32_t ctr[4] = {(uint32_t)b, (uint32_t)(b >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
    uint32_t w[4];
    rng_philox4x32_10(ctr, key, w);
    for (int p = 0; p < 2; p++) {
        double r = sqrt(-2.0 * log(u01(w[2 * p])));
        double a = two_pi * u01(w[2 * p + 1]);
        z[2 * p] = (float)(r * cos(a));
        z[2 * p + 1] = (float)(r * sin(a));
    }
}

void rng_normal_fill(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n)
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    float z[4];
    size_t j = 0;
    uint64_t i = offset;
    // a partial first block when offset is not a multiple of 4
    if (i % 4 != 0 && j < n) {
        normal_block(key, stream, i / 4, z);
        while (i % 4 != 0 && j < n)
            out[j++] = z[i++ % 4];
    }
    while (n - j >= 4) {
        normal_block(key, stream, i / 4, out + j);
        j += 4;
        i += 4;
    }
    if (j < n) {
        normal_block(key, stream, i / 4, z);
        while (j < n)
            out[j++] = z[i++ % 4];
    }
}
