/*
 * benchmark.c - `sdg-benchmark [--threads N] [--sizes 256,512] [--model PATH] [--quick]`: how
 * close the engine runs to the limit of the machine it runs on.
 *
 * In one run it
 *   1. measures the CPU's peak: float32 FMAs (AVX2 or AVX-512) and, where the CPU has
 *      AVX512-BF16, bfloat16 dot products (vdpbf16ps), from loops that touch no memory, on one
 *      thread and on N;
 *   2. loads a checkpoint (tools/benchmark writes a full-size SD1.5 one with random weights) and
 *      times the networks of one sampling step and one picture: the UNet at batch 2 (one CFG
 *      step), the VAE decoder, the text encoder at batch 2, per size and precision. Each gets a
 *      dry run first (the arena size and the analytic FLOP count, sdg_exec.flops), the arena
 *      reserved, a warm-up, then the best of a few timed runs, rated in GFLOP/s and as a share of
 *      the measured peak;
 *   3. times OpenBLAS (sdg_op_gemm_blas) and our sdg_gemm (sdg_op_gemm) on the very shapes of each
 *      network's matrix products, recorded from its dry run (sdg__gemm_shape_hook), as plain
 *      float32 row-major matrices of random numbers: a like-for-like baseline for the products
 *      alone (not attention, norms, im2col or 16-bit weights).
 *
 * Performance is reported, never asserted: the figures depend on the machine and on whatever
 * else runs on it, so the load average is printed at the start and the end.
 *
 * Not here: pictures, samplers or the pipeline (tools/benchmark.sh times the CLI end to end).
 */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "loader/safetensors.h"
#include "loader/weights.h"
#include "model/clip.h"
#include "model/unet.h"
#include "model/vae.h"
#include "tensor/gemm.h"
#include "tensor/ops.h"

// ---------------------------------------------------------------------------------------------
// Small helpers: clocks, the machine, random numbers.

static double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// CPU seconds this process has used (all threads, user + system). On a machine shared with
// other work, wall time measures the share of the CPUs we got; CPU time measures the work.
static double bench_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec +
           (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

// The first line of a /proc file that starts with key (without the key), or "?" .
static void bench_proc_field(const char *path, const char *key, char *out, size_t size)
{
    snprintf(out, size, "?");
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[4096];
    size_t len = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, len) != 0)
            continue;
        char *v = line + len;
        while (*v == ' ' || *v == '\t' || *v == ':')
            v++;
        v[strcspn(v, "\n")] = '\0';
        snprintf(out, size, "%s", v);
        break;
    }
    fclose(f);
}

// Peak resident memory of this process so far (VmHWM), in GB (10^9 bytes).
static double bench_peak_rss_gb(void)
{
    char v[64];
    bench_proc_field("/proc/self/status", "VmHWM", v, sizeof v);
    return atof(v) * 1024.0 / 1e9;   // "123456 kB"
}

static void bench_print_load(const char *when)
{
    char buf[128] = "?";
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (!fgets(buf, sizeof buf, f))
            snprintf(buf, sizeof buf, "?");
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = '\0';
    // The fourth field is running/total scheduling entities: others running beside us.
    printf("load average (%s): %s  (1, 5, 15 min; running/total; last pid)\n", when, buf);
}

// Uniform [-1, 1) from a per-chunk xorshift stream: the same values at any thread count.
static void bench_fill_random(float *p, size_t n, uint32_t seed)
{
    const size_t chunk = (size_t)1 << 16;
    #pragma omp parallel for schedule(static)
    for (size_t c = 0; c < (n + chunk - 1) / chunk; c++) {
        uint32_t s = (uint32_t)(c * 2654435761u) ^ (seed * 40503u + 12345u);
        s = s ? s : 1;
        size_t end = (c + 1) * chunk < n ? (c + 1) * chunk : n;
        for (size_t i = c * chunk; i < end; i++) {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            p[i] = (float)((s >> 8) * (1.0 / 8388608.0)) - 1.0f;
        }
    }
}

static void *bench_alloc(size_t bytes)
{
    void *p = sdg__alloc_big(bytes ? bytes : 64);
    if (!p) {
        fprintf(stderr, "sdg-benchmark: out of memory (%.2f GB)\n", (double)bytes / 1e9);
        exit(1);
    }
    return p;
}

// ---------------------------------------------------------------------------------------------
// The CPU's peak. Each loop runs independent multiply-add chains held in registers, enough of
// them to hide the instruction's latency on two pipes (4-6 cycles x 2 pipes < 12): nothing but
// the arithmetic units limits it. acc = acc * a + b with a just below 1 stays near 1 (no
// overflow, no denormals); the dot-product chains grow by 32 a b per step and stay small. The
// sum of the chains is returned so the compiler keeps the work.

#define BENCH_X12(s) s(0) s(1) s(2) s(3) s(4) s(5) s(6) s(7) s(8) s(9) s(10) s(11)
#define BENCH_X16(s) BENCH_X12(s) s(12) s(13) s(14) s(15)

typedef float (*bench_peak_fn)(long iters);

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static float bench_peak_avx2(long iters)
{
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-6f);
#define DECL(i) __m256 c##i = _mm256_set1_ps((float)(i));
#define STEP(i) c##i = _mm256_fmadd_ps(c##i, a, b);
#define SUM(i) s = _mm256_add_ps(s, c##i);
    BENCH_X12(DECL)
    for (long it = 0; it < iters; it++) {
        BENCH_X12(STEP)
    }
    __m256 s = _mm256_setzero_ps();
    BENCH_X12(SUM)
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0];
#undef DECL
#undef STEP
#undef SUM
}

__attribute__((target("avx512f"))) static float bench_peak_avx512(long iters)
{
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
#define DECL(i) __m512 c##i = _mm512_set1_ps((float)(i));
#define STEP(i) c##i = _mm512_fmadd_ps(c##i, a, b);
#define SUM(i) s = _mm512_add_ps(s, c##i);
    BENCH_X16(DECL)
    for (long it = 0; it < iters; it++) {
        BENCH_X16(STEP)
    }
    __m512 s = _mm512_setzero_ps();
    BENCH_X16(SUM)
    return _mm512_reduce_add_ps(s);
#undef DECL
#undef STEP
#undef SUM
}

// vdpbf16ps: per float32 lane, acc += a[2i] b[2i] + a[2i+1] b[2i+1] (32 multiply-adds per
// instruction).
__attribute__((target("avx512f,avx512bf16"))) static float bench_peak_bf16(long iters)
{
    const __m512 af = _mm512_set1_ps(1e-3f);
    const __m512bh a = _mm512_cvtne2ps_pbh(af, af), b = a;
#define DECL(i) __m512 c##i = _mm512_set1_ps((float)(i));
#define STEP(i) c##i = _mm512_dpbf16_ps(c##i, a, b);
#define SUM(i) s = _mm512_add_ps(s, c##i);
    BENCH_X16(DECL)
    for (long it = 0; it < iters; it++) {
        BENCH_X16(STEP)
    }
    __m512 s = _mm512_setzero_ps();
    BENCH_X16(SUM)
    return _mm512_reduce_add_ps(s);
#undef DECL
#undef STEP
#undef SUM
}
#endif

static volatile float bench_sink;

// GFLOP/s of fn on `threads` threads, each running `iters` iterations: the best of `reps`,
// by wall time; *per_cpu gets the best rate per CPU second (what one core does while it runs).
static double bench_peak_rate(bench_peak_fn fn, double flops_per_iter, long iters, int threads,
                              int reps, double *per_cpu)
{
    double best = 0.0, best_cpu = 0.0;
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now(), c0 = bench_cpu();
        #pragma omp parallel num_threads(threads)
        {
            float v = fn(iters);
            #pragma omp critical
            bench_sink += v;
        }
        double flops = threads * (double)iters * flops_per_iter;
        double rate = flops / (bench_now() - t0) / 1e9, cpu = bench_cpu() - c0;
        double rate_cpu = cpu > 0 ? flops / cpu / 1e9 : 0;
        best = rate > best ? rate : best;
        best_cpu = rate_cpu > best_cpu ? rate_cpu : best_cpu;
    }
    if (per_cpu)
        *per_cpu = best_cpu;
    return best;
}

typedef struct bench_peak {
    const char *name;           // "avx2 (_mm256_fmadd_ps)", ...
    double one, all;            // GFLOP/s on 1 thread and on N
    double core;                // GFLOP per CPU second of one thread: one core's peak however
                                // busy the machine is
} bench_peak;

// Measures one peak; iterations are chosen for about 0.2 s per run.
static bench_peak bench_measure_peak(const char *name, bench_peak_fn fn, double flops_per_iter,
                                     int threads, int reps)
{
    long iters = 1 << 20;
    double t0 = bench_now();
    bench_sink += fn(iters);
    double t = bench_now() - t0;
    iters = (long)(iters * (0.2 / (t > 1e-6 ? t : 1e-6)));
    iters = iters < 1 << 20 ? 1 << 20 : iters;
    bench_peak p = {name, 0, 0, 0};
    p.one = bench_peak_rate(fn, flops_per_iter, iters, 1, reps, &p.core);
    p.all = bench_peak_rate(fn, flops_per_iter, iters, threads, reps, NULL);
    printf("  %-34s %7.1f GFLOP/s on 1 thread %7.1f on %d  (%.1f per CPU second)\n", p.name,
           p.one, p.all, threads, p.core);
    return p;
}

// ---------------------------------------------------------------------------------------------
// The shapes of a network's matrix products, recorded from its dry run: distinct (m, n, k) with
// how many times each occurs.

typedef struct bench_shape {
    int m, n, k, count;
    double t_blas, t_ours, t_ours_fast;   // seconds per product
    double c_blas, c_ours;                // CPU seconds per product (in the same measurements)
} bench_shape;

typedef struct bench_shapes {
    bench_shape *v;
    int len, cap, calls;
} bench_shapes;

static void bench_shape_hook(int m, int n, int k, bool dry, void *data)
{
    bench_shapes *s = data;
    if (!dry || m == 0 || n == 0 || k == 0)
        return;
    s->calls++;
    for (int i = 0; i < s->len; i++)
        if (s->v[i].m == m && s->v[i].n == n && s->v[i].k == k) {
            s->v[i].count++;
            return;
        }
    if (s->len == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->v = realloc(s->v, (size_t)s->cap * sizeof *s->v);
        if (!s->v)
            exit(1);
    }
    s->v[s->len++] = (bench_shape){m, n, k, 1, 0, 0, 0, 0, 0};
}

// ---------------------------------------------------------------------------------------------
// The networks and their inputs.

#define UNET_PREFIX "model.diffusion_model."
#define CLIP_PREFIX "cond_stage_model.transformer.text_model."
#define SD1_HEADS 8   // v1-inference.yaml num_heads
#define VAE_PREFIX "first_stage_model."

typedef struct bench_model {
    st_file *file;
    sdg_weights *wb;
    clip_model *clip;
    unet_model *unet;
    vae_model *vae;
} bench_model;

// One network at one size, with its inputs and outputs (random numbers: only the time counts).
typedef struct bench_job {
    const char *net;            // "unet", "vae-decoder", "text-encoder"
    const bench_model *model;
    int h, w;                   // latent size (unet, vae)
    float *x, *t, *ctx, *out;
    int32_t *ids;
} bench_job;

static void bench_run(sdg_exec *ex, const bench_job *j)
{
    if (strcmp(j->net, "unet") == 0)
        unet_forward(ex, j->model->unet, j->x, 2, j->h, j->w, j->t,
                     &(unet_cond){j->ctx, 77, NULL}, j->out);
    else if (strcmp(j->net, "vae-decoder") == 0)
        vae_decode(ex, j->model->vae, j->x, 1, j->h, j->w, j->out);
    else
        clip_forward(ex, j->model->clip, j->ids, 2,
                     &(clip_output){clip_get_config(j->model->clip)->n_layers, true}, j->out, NULL);
}

static bench_job bench_job_new(const char *net, const bench_model *model, int h, int w)
{
    bench_job j = {net, model, h, w, NULL, NULL, NULL, NULL, NULL};
    const unet_config *uc = unet_get_config(model->unet);
    const vae_config *vc = vae_get_config(model->vae);
    const clip_config *cc = clip_get_config(model->clip);
    size_t nx = 0, nout = 0, nctx = 0;
    if (strcmp(net, "unet") == 0) {
        nx = (size_t)2 * uc->in_ch * h * w;
        nout = (size_t)2 * uc->out_ch * h * w;
        nctx = (size_t)2 * 77 * uc->context_dim;
    } else if (strcmp(net, "vae-decoder") == 0) {
        nx = (size_t)vc->z_ch * h * w;
        nout = (size_t)vc->out_ch * (h * vc->downscale) * (w * vc->downscale);
    } else {
        nout = (size_t)2 * cc->n_pos * cc->width;
        j.ids = malloc((size_t)2 * cc->n_pos * sizeof *j.ids);
        for (int i = 0; i < 2 * cc->n_pos; i++)   // any ids in the vocabulary will do
            j.ids[i] = (int32_t)(((uint32_t)i * 7919u + 1u) % (uint32_t)cc->vocab);
    }
    j.x = nx ? bench_alloc(nx * sizeof(float)) : NULL;
    j.out = bench_alloc(nout * sizeof(float));
    j.ctx = nctx ? bench_alloc(nctx * sizeof(float)) : NULL;
    j.t = malloc(2 * sizeof(float));
    j.t[0] = j.t[1] = 500.0f;
    if (j.x)
        bench_fill_random(j.x, nx, 1);
    if (j.ctx)
        bench_fill_random(j.ctx, nctx, 2);
    return j;
}

static void bench_job_free(bench_job *j)
{
    free(j->x);
    free(j->out);
    free(j->ctx);
    free(j->t);
    free(j->ids);
}

typedef struct bench_result {
    double seconds;       // best timed run
    double cpu;           // CPU seconds of that run (all threads)
    uint64_t flops;       // the dry run's count (multiply-adds x 2, attention included)
    size_t arena;         // bytes
    bool flops_agree;     // the timed runs counted what the dry run planned
} bench_result;

// Dry run (arena and FLOPs; the products' shapes into `shapes` when given), reserve, warm-up,
// then the best of `reps` runs.
static bench_result bench_time(const bench_job *j, int threads, bool fast, int reps,
                               bench_shapes *shapes)
{
    bench_result r = {0, 0, 0, 0, true};
    sdg_exec ex;
    sdg__exec_init(&ex, threads);
    ex.fast = fast;
    ex.dry = true;
    sdg__gemm_shape_hook = shapes ? bench_shape_hook : NULL;
    sdg__gemm_shape_hook_data = shapes;
    bench_run(&ex, j);
    sdg__gemm_shape_hook = NULL;   // the real runs also call it from threads (attention)
    sdg__gemm_shape_hook_data = NULL;
    r.flops = ex.flops;
    r.arena = ex.arena.peak;
    ex.dry = false;
    sdg_error err;
    if (sdg__exec_reserve(&ex, r.arena, &err) != SDG_OK) {
        fprintf(stderr, "sdg-benchmark: %s\n", err.message);
        exit(1);
    }
    r.seconds = 1e30;
    for (int i = 0; i < 1 + reps; i++) {   // run 0 is the warm-up
        ex.flops = 0;
        ex.arena.used = 0;
        double t0 = bench_now(), c0 = bench_cpu();
        bench_run(&ex, j);
        double t = bench_now() - t0;
        if (i > 0 && t < r.seconds) {
            r.seconds = t;
            r.cpu = bench_cpu() - c0;
        }
        r.flops_agree = r.flops_agree && ex.flops == r.flops;
    }
    sdg__exec_free(&ex);
    return r;
}

// ---------------------------------------------------------------------------------------------
// OpenBLAS against sdg_gemm on a list of shapes.

// Seconds for `calls` calls of one product; their CPU seconds into *cpu.
static double bench_gemm_calls(sdg_exec *ex, bool blas, const bench_shape *s, const float *a,
                               const float *b, float *c, int calls, double *cpu)
{
    double t0 = bench_now(), c0 = bench_cpu();
    for (int i = 0; i < calls; i++) {
        if (blas)
            sdg_op_gemm_blas(ex, false, false, s->m, s->n, s->k, 1.0f, a, s->k, b, s->n, 0.0f, c,
                             s->n);
        else
            sdg_op_gemm(ex, false, false, s->m, s->n, s->k, 1.0f, a, s->k, b, s->n, 0.0f, c, s->n);
    }
    *cpu = bench_cpu() - c0;
    return bench_now() - t0;
}

// Seconds per call of one product: the best of reps measurements, each of enough calls to take
// 20 ms. Small products get at least 5 measurements: on a shared machine one of them can lose a
// whole time slice (a thread of the parallel region waits for its CPU), which is the noise, not
// the product. A single call of a large product needs no warm-up (its operands outgrow the
// caches anyway), so the count-finding call is a measurement.
static double bench_time_gemm(sdg_exec *ex, bool blas, const bench_shape *s, const float *a,
                              const float *b, float *c, int reps, double *cpu_per_call)
{
    int calls = 1;
    double cpu, t = bench_gemm_calls(ex, blas, s, a, b, c, calls, &cpu);
    while (t < 0.02 && calls < (1 << 20)) {
        double want = calls * 0.025 / (t > 1e-6 ? t : 1e-6);
        calls = want > 2.0 * calls ? (int)(want < (1 << 20) ? want : (1 << 20)) : 2 * calls;
        t = bench_gemm_calls(ex, blas, s, a, b, c, calls, &cpu);
    }
    double best = t / calls, best_cpu = cpu / calls;
    if (calls > 1 && reps < 5)
        reps = 5;
    for (int r = 1; r < reps; r++) {
        t = bench_gemm_calls(ex, blas, s, a, b, c, calls, &cpu) / calls;
        if (t < best) {
            best = t;
            best_cpu = cpu / calls;
        }
    }
    if (cpu_per_call)
        *cpu_per_call = best_cpu;
    return best;
}

static int bench_by_loss(const void *pa, const void *pb)
{
    const bench_shape *a = pa, *b = pb;
    double la = a->count * (a->t_ours - a->t_blas), lb = b->count * (b->t_ours - b->t_blas);
    return la < lb ? 1 : la > lb ? -1 : 0;
}

// Times every shape of the list with OpenBLAS and with ours (exact; and fast where the kernel
// set has a bfloat16 product), prints the totals and the shapes where ours loses most.
static void bench_compare(const char *what, bench_shapes *sh, int threads, bool has_bf16, int reps)
{
    size_t na = 0, nb = 0, nc = 0;
    double flops = 0;
    for (int i = 0; i < sh->len; i++) {
        const bench_shape *s = &sh->v[i];
        size_t a = (size_t)s->m * s->k, b = (size_t)s->k * s->n, c = (size_t)s->m * s->n;
        na = a > na ? a : na;
        nb = b > nb ? b : nb;
        nc = c > nc ? c : nc;
        flops += 2.0 * s->m * s->n * s->k * s->count;
    }
    float *a = bench_alloc(na * sizeof(float)), *b = bench_alloc(nb * sizeof(float));
    float *c = bench_alloc(nc * sizeof(float));
    bench_fill_random(a, na, 11);
    bench_fill_random(b, nb, 12);
    bench_fill_random(c, nc, 13);

    sdg_exec ex;
    sdg__exec_init(&ex, threads);
    double t_blas = 0, t_ours = 0, t_fast = 0, c_blas = 0, c_ours = 0;
    for (int i = 0; i < sh->len; i++) {
        bench_shape *s = &sh->v[i];
        ex.fast = false;
        s->t_blas = bench_time_gemm(&ex, true, s, a, b, c, reps, &s->c_blas);
        s->t_ours = bench_time_gemm(&ex, false, s, a, b, c, reps, &s->c_ours);
        if (has_bf16) {
            ex.fast = true;
            s->t_ours_fast = bench_time_gemm(&ex, false, s, a, b, c, reps, NULL);
        }
        t_blas += s->count * s->t_blas;
        t_ours += s->count * s->t_ours;
        t_fast += s->count * s->t_ours_fast;
        c_blas += s->count * s->c_blas;
        c_ours += s->count * s->c_ours;
    }
    sdg__exec_free(&ex);
    free(a);
    free(b);
    free(c);

    printf("%-16s %4d products, %3d shapes, %7.1f GFLOP\n", what, sh->calls, sh->len, flops / 1e9);
    printf("%-16s   OpenBLAS       %8.2f s %6.1f GFLOP/s  (CPU %.2f s)\n", "", t_blas,
           flops / t_blas / 1e9, c_blas);
    printf("%-16s   sdg_gemm exact %8.2f s %6.1f GFLOP/s  (CPU %.2f s)  %.2fx OpenBLAS's time, "
           "%.2fx its CPU\n", "", t_ours, flops / t_ours / 1e9, c_ours, t_ours / t_blas,
           c_ours / c_blas);
    if (has_bf16)
        printf("%-16s   sdg_gemm fast  %8.2f s %6.1f GFLOP/s  %.2fx OpenBLAS's time\n", "", t_fast,
               flops / t_fast / 1e9, t_fast / t_blas);
    qsort(sh->v, (size_t)sh->len, sizeof *sh->v, bench_by_loss);
    int slower = 0;
    for (int i = 0; i < sh->len; i++)
        slower += sh->v[i].t_ours > sh->v[i].t_blas;
    printf("%-16s   exact slower than OpenBLAS on %d of %d shapes", "", slower, sh->len);
    for (int i = 0, shown = 0; i < sh->len && shown < 3; i++) {
        const bench_shape *s = &sh->v[i];
        if (s->t_ours <= s->t_blas)
            break;
        printf("%s %dx%dx%d (x%d) %.1f vs %.1f ms", shown ? ";" : ", most lost:", s->m, s->n,
               s->k, s->count, 1e3 * s->t_ours, 1e3 * s->t_blas);
        shown++;
    }
    printf("\n");
}

// ---------------------------------------------------------------------------------------------

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: sdg-benchmark [--threads N] [--sizes 256,512] [--model PATH] [--quick]\n"
               "  --threads N   threads for the networks, products and the N-thread peak "
               "(default: online CPUs)\n"
               "  --sizes LIST  picture sizes, comma-separated multiples of 8 (256,512)\n"
               "  --model PATH  SD 1.x .safetensors (/tmp/sdg-bench/sd15-random-f16.safetensors;\n"
               "                tools/benchmark writes it)\n"
               "  --quick       one timed run after the warm-up instead of three\n");
}

int main(int argc, char **argv)
{
    int threads = omp_get_num_procs();
    const char *model_path = "/tmp/sdg-bench/sd15-random-f16.safetensors";
    const char *sizes_arg = "256,512";
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--sizes") == 0 && i + 1 < argc)
            sizes_arg = argv[++i];
        else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc)
            model_path = argv[++i];
        else if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else {
            bench_usage(strcmp(argv[i], "--help") == 0 ? stdout : stderr);
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    int sizes[8], n_sizes = 0;
    for (const char *p = sizes_arg; *p && n_sizes < 8;) {
        int s = atoi(p);
        if (s < 8 || s % 8 != 0) {
            fprintf(stderr, "sdg-benchmark: sizes are multiples of 8: %s\n", sizes_arg);
            return 2;
        }
        sizes[n_sizes++] = s;
        p += strcspn(p, ",");
        p += *p == ',';
    }
    if (threads < 1) {
        fprintf(stderr, "sdg-benchmark: --threads must be at least 1\n");
        return 2;
    }
    int reps = quick ? 1 : 3;

    // The machine.
    char cpu[256];
    bench_proc_field("/proc/cpuinfo", "model name", cpu, sizeof cpu);
    unsigned features = sdg__cpu_features();
    bool avx2 = (features & (SDG_CPU_AVX2 | SDG_CPU_FMA)) == (SDG_CPU_AVX2 | SDG_CPU_FMA);
    bool avx512 = features & SDG_CPU_AVX512F;
    bool bf16 = avx512 && (features & SDG_CPU_AVX512BF16);
    printf("sdg-benchmark: %s, %d online CPUs, %d threads%s\n", cpu, omp_get_num_procs(), threads,
           quick ? ", --quick" : "");
    printf("CPU flags: avx2+fma %s, avx512f %s, avx512bf16 %s\n", avx2 ? "yes" : "no",
           avx512 ? "yes" : "no", bf16 ? "yes" : "no");
    bool has_bf16 = strcmp(sdg_gemm_kernels_label(true), sdg_gemm_kernels_label(false)) != 0;
    printf("kernels: %s (exact runs %s, fast runs %s%s)\n", sdg_gemm_kernels_name(sdg_gemm_kernels()),
           sdg_gemm_kernels_label(false), sdg_gemm_kernels_label(true),
           has_bf16 ? "" : ": no bfloat16 product in this set; fast differs from exact by Winograd's"
                           " 3x3 convolutions");
    bench_print_load("start");

    // 1. Peaks.
    // Short runs, the best of 5: on a busy machine one of them may get the CPUs to itself.
    printf("\npeak (register-only loops, best of 5 runs of 0.2 s):\n");
    bench_peak peak32 = {0}, peak_bf16 = {0};
#if defined(__x86_64__)
    if (avx512)
        peak32 = bench_measure_peak("fp32 FMA, avx512 (_mm512_fmadd_ps)", bench_peak_avx512,
                                    16 * 16 * 2, threads, 5);
    else if (avx2)
        peak32 = bench_measure_peak("fp32 FMA, avx2 (_mm256_fmadd_ps)", bench_peak_avx2,
                                    12 * 8 * 2, threads, 5);
    if (bf16)
        peak_bf16 = bench_measure_peak("bf16 dot, avx512bf16 (vdpbf16ps)", bench_peak_bf16,
                                       16 * 32 * 2, threads, 5);
    else
        printf("  %-34s n/a on this CPU\n", "bf16 dot, avx512bf16 (vdpbf16ps)");
#endif
    if (peak32.all == 0)
        printf("  fp32 FMA: no AVX2/AVX-512 on this CPU; the %% columns are left out\n");

    // 2. The model.
    double t0 = bench_now();
    sdg_error err;
    bench_model model = {0};
    model.file = st_open(model_path, &err);
    if (!model.file) {
        fprintf(stderr, "sdg-benchmark: %s\n(tools/benchmark writes a random SD1.5 checkpoint)\n",
                err.message);
        return 1;
    }
    model.wb = sdg_wb_new(model.file, &err);
    if (!model.wb) {
        fprintf(stderr, "sdg-benchmark: %s\n", err.message);
        return 1;
    }
    // As sd.c binds them: every shape checked before any data is read, then one pass over the
    // file that converts and packs the weights.
    sdg_wb_defer(model.wb);
    model.clip = clip_load(model.wb, CLIP_PREFIX, 0, CLIP_ACT_LAYOUT);
    model.unet = model.clip ? unet_load(model.wb, UNET_PREFIX, SD1_HEADS, 0) : NULL;
    model.vae = model.unet ? vae_load(model.wb, VAE_PREFIX) : NULL;
    if (!model.vae || sdg_wb_read(model.wb, &err) != SDG_OK) {
        sdg_wb_status(model.wb, &err);
        fprintf(stderr, "sdg-benchmark: %s: %s\n", model_path, err.message);
        return 1;
    }
    printf("\nmodel: %s, loaded in %.1f s (%.2f GB of packed weights), peak RSS %.2f GB\n",
           model_path, bench_now() - t0, (double)sdg_wb_owned_bytes(model.wb) / 1e9,
           bench_peak_rss_gb());

    // 3. The networks. Text encoder once (its work does not depend on the picture size).
    const int vae_ds = vae_get_config(model.vae)->downscale;
    printf("\nbest of %d timed runs after a warm-up. GFLOP: the dry run's count (products and "
           "attention). %%peak: GFLOP/s\nagainst the %d-thread peak; %%core: GFLOP per CPU second "
           "against one core's, which a busy machine\nchanges less. RSS: the process's peak so "
           "far.\n", reps, threads);
    printf("%-12s %-7s %-5s %-11s %8s %8s %7s %7s %6s %6s %8s %6s\n", "network", "size", "prec",
           "kernels", "seconds", "CPU s", "GFLOP", "GFLOP/s", "%peak", "%core", "arena GB",
           "RSS GB");
    typedef struct { const char *net; int size; } bench_item;
    bench_item items[1 + 2 * 8];
    int n_items = 0;
    items[n_items++] = (bench_item){"text-encoder", 0};
    for (int s = 0; s < n_sizes; s++) {
        items[n_items++] = (bench_item){"unet", sizes[s]};
        items[n_items++] = (bench_item){"vae-decoder", sizes[s]};
    }
    bench_shapes shapes[1 + 2 * 8];
    memset(shapes, 0, sizeof shapes);
    for (int i = 0; i < n_items; i++) {
        int lat = items[i].size / vae_ds;
        bench_job job = bench_job_new(items[i].net, &model, lat, lat);
        char size[32];
        if (items[i].size)
            snprintf(size, sizeof size, "%dx%d", items[i].size, items[i].size);
        else
            snprintf(size, sizeof size, "77 tok");
        for (int p = 0; p < 2; p++) {
            bool fast = p == 1;
            bench_result r = bench_time(&job, threads, fast, reps, fast ? NULL : &shapes[i]);
            double rate = (double)r.flops / r.seconds / 1e9;
            double rate_cpu = (double)r.flops / r.cpu / 1e9;
            // fast is rated against the bfloat16 peak where the CPU runs vdpbf16ps; the c-bf16
            // set (SDG_KERNELS=c-bf16) and sets without a bfloat16 product against float32's.
            const bench_peak *peak = fast && has_bf16 && peak_bf16.all > 0 ? &peak_bf16 : &peak32;
            char pct[16] = "-", pct_core[16] = "-";
            if (peak->all > 0) {
                snprintf(pct, sizeof pct, "%.0f%%", 100.0 * rate / peak->all);
                snprintf(pct_core, sizeof pct_core, "%.0f%%", 100.0 * rate_cpu / peak->core);
            }
            printf("%-12s %-7s %-5s %-11s %8.3f %8.2f %7.1f %7.1f %6s %6s %8.2f %6.2f%s\n",
                   strcmp(items[i].net, "unet") == 0 ? "unet b=2" : items[i].net, size,
                   fast ? "fast" : "exact", sdg_gemm_kernels_label(fast), r.seconds, r.cpu,
                   (double)r.flops / 1e9, rate, pct, pct_core, (double)r.arena / 1e9,
                   bench_peak_rss_gb(),
                   r.flops_agree ? "" : "  (timed runs counted other FLOPs than the dry run!)");
            fflush(stdout);
        }
        bench_job_free(&job);
    }

    // 4. The products alone: OpenBLAS against ours on each network's shapes.
    printf("\nmatrix products alone: every product of a network's dry run, as float32 row-major "
           "random\nmatrices on %d threads (not attention, norms, im2col or 16-bit weights); "
           "seconds for all of them:\n", threads);
    for (int i = 0; i < n_items; i++) {
        char what[64];
        if (items[i].size)
            snprintf(what, sizeof what, "%s %d", items[i].net, items[i].size);
        else
            snprintf(what, sizeof what, "%s", items[i].net);
        bench_compare(what, &shapes[i], threads, has_bf16, reps);
        free(shapes[i].v);
        fflush(stdout);
    }
    printf("\npeak RSS %.2f GB (the products' random matrices included)\n", bench_peak_rss_gb());
    bench_print_load("end");

    clip_free(model.clip);
    unet_free(model.unet);
    vae_free(model.vae);
    sdg_wb_free(model.wb);
    st_close(model.file);
    return 0;
}
