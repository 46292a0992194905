/*
 * test-sampler.c - the sampling room against the k-diffusion / CompVis goldens, without a UNet:
 * schedules and model timesteps are compared directly, and whole trajectories are replayed by a
 * denoise hook that returns the reference's own denoised tensors, so every x[i] must match
 * (Heun's unsaved second calls are reconstructed from the reference x, see heun_second_call).
 * Also: the Philox known-answer vectors of Random123, and properties of the noise generator.
 *
 * Not here: anything that needs the network (test-api runs the samplers with the tiny UNet).
 */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "golden.h"
#include "sampler/sampler.h"

#define REF_FILE "golden/tiny-sd1-reference.safetensors"
// Tolerances (relative, see golden.h). The replays run the reference's own float32 operations
// on the reference's own denoised tensors, so only rounding separates us, and 1e-6 (~16 float
// ulps) is a floor rather than 5x the measured error: it leaves room for a compiler that fuses
// a*b+c into one FMA, where an exact replay would fail for nothing.
#define SCHED_TOL 1e-6   // sigmas, alphas_cumprod, model t: measured 0; DDIM alphas_prev 6e-8
#define TRAJ_TOL 1e-6    // x over a trajectory: measured 0 (euler, euler_a) to 1.7e-7 (ddim6)
// k-diffusion's timesteps (the tiny-sd1 goldens' and every request without ComfyUI's rules)
#define KD SCHED_TIMING_KDIFF

static const char *const K_SAMPLERS[] = {"euler", "heun", "dpmpp_2m", "lms", "euler_ancestral"};
static const sdg_sampler K_IDS[] = {SDG_SAMPLER_EULER, SDG_SAMPLER_HEUN, SDG_SAMPLER_DPMPP_2M,
                                    SDG_SAMPLER_LMS, SDG_SAMPLER_EULER_A};
static const char *const K_SCHEDULES[] = {"default", "karras"};

// ---------------------------------------------------------------------------------------------
// Replaying the reference through the hooks

typedef struct replay {
    size_t n;
    const float *den;      // [steps, n] reference denoised of each step's first model call
    const float *noise;    // [steps-1, n] ancestral noise, or NULL
    const float *x_ref;    // [steps+1, n] reference x (k space, or x_t space when ddim)
    bool ddim;             // compare x / sqrt(1 + sigma^2) (DDIM's x_t) against x_ref
    float *tmp;            // n
    int step;              // steps done
    int calls_in_step;
    int calls;
    float t_seen[64];
    double max_err;        // worst relative error of x over the steps
    int cancel_at_call;    // > 0: denoise returns SDG_ERR_CANCELLED at this call (1-based)
    int cancel_at_step;    // > 0: on_step returns SDG_ERR_CANCELLED at this step
    const float *heun_sigmas;   // set for heun: second calls are reconstructed from x_ref
    double heun_x2_err;         // worst relative error of heun's x2 over the steps
    const char *name;           // the run, to name the comparisons
    bool two_draws;             // dpmpp_sde: noise draws 2 step and 2 step + 1
} replay;

// Heun's second model call is not in the goldens, but x[i+1] = x[i] + (d + d2)/2 dt pins it
// down: d2 = 2 (x[i+1] - x[i]) / dt - d and the denoised that gives it at x2 is x2 - d2 sigma_next.
// Replaying that checks the step's structure (x2, the average, the plain last step).
static void heun_second_call(replay *r, const float *x2, float *out)
{
    size_t n = r->n;
    int i = r->step;
    float sg = r->heun_sigmas[i], sn = r->heun_sigmas[i + 1], dt = sn - sg;
    const float *xi = r->x_ref + (size_t)i * n, *xn = r->x_ref + (size_t)(i + 1) * n;
    const float *den = r->den + (size_t)i * n;
    double worst = 0, scale = 0;
    for (size_t j = 0; j < n; j++) {
        double d = ((double)xi[j] - den[j]) / sg;
        double want_x2 = xi[j] + d * dt;
        worst = fmax(worst, fabs(x2[j] - want_x2));
        scale = fmax(scale, fabs(want_x2));
        double d2 = 2.0 * ((double)xn[j] - xi[j]) / dt - d;
        out[j] = (float)(x2[j] - d2 * sn);
    }
    r->heun_x2_err = fmax(r->heun_x2_err, worst / scale);
}


static sdg_status replay_denoise(void *user, const float *x, float sigma, float t, float *out)
{
    (void)x;
    (void)sigma;
    replay *r = user;
    if (r->calls < 64)
        r->t_seen[r->calls] = t;
    r->calls++;
    if (r->cancel_at_call > 0 && r->calls == r->cancel_at_call)
        return SDG_ERR_CANCELLED;
    // heun's second call is not in the goldens: any plausible x0 will do for its t and count
    int k = r->step + (r->calls_in_step > 0);
    r->calls_in_step++;
    if (k > r->step && r->heun_sigmas)
        heun_second_call(r, x, out);
    else
        memcpy(out, r->den + (size_t)k * r->n, r->n * sizeof(float));
    return SDG_OK;
}

static void replay_noise(void *user, int draw, float *out, size_t n)
{
    replay *r = user;
    // one draw per step (euler_a, lcm, dpmpp_2m_sde), two for dpmpp_sde
    g_assert_cmpint(draw / (r->two_draws ? 2 : 1), ==, r->step);
    g_assert_nonnull(r->noise);
    memcpy(out, r->noise + (size_t)draw * n, n * sizeof(float));
}

static sdg_status replay_on_step(void *user, int step, int n_steps, float *x, float sigma_next,
                                 const float *denoised)
{
    replay *r = user;
    g_assert_cmpint(step, ==, r->step + 1);
    g_assert_true(step <= n_steps);
    // the denoised handed back is the step's first model call
    g_assert_true(memcmp(denoised, r->den + (size_t)r->step * r->n, r->n * sizeof(float)) == 0);
    r->step = step;
    r->calls_in_step = 0;
    if (r->x_ref) {
        const float *got = x;
        if (r->ddim) {
            float scale = 1.0f / sqrtf(1.0f + sigma_next * sigma_next);
            for (size_t j = 0; j < r->n; j++)
                r->tmp[j] = x[j] * scale;
            got = r->tmp;
        }
        char what[96];
        snprintf(what, sizeof what, "%s x[%d]", r->name ? r->name : "replay", step);
        double e = golden_check(what, got, r->x_ref + (size_t)step * r->n, r->n, TRAJ_TOL);
        if (e > r->max_err || isnan(e))
            r->max_err = isnan(e) ? INFINITY : e;
    }
    if (r->cancel_at_step > 0 && step == r->cancel_at_step)
        return SDG_ERR_CANCELLED;
    return SDG_OK;
}

static const sampler_hooks REPLAY_HOOKS = {replay_denoise, replay_noise, replay_on_step, NULL};

// ---------------------------------------------------------------------------------------------
// Noise schedule

static void test_schedule_tables(void)
{
    sdg_noise_schedule s;
    sched_init_sd(&s);
    st_file *f = golden_open(REF_FILE);
    size_t n;
    float *ac = golden_f32(f, "sched.alphas_cumprod", &n);
    g_assert_cmpuint(n, ==, 1000);
    golden_check("alphas_cumprod", s.alphas_cumprod, ac, n, SCHED_TOL);
    float *sg = golden_f32(f, "sched.sigmas", &n);
    g_assert_cmpuint(n, ==, 1000);
    // sigmas span 0.03..14.6: check each value relative to itself too
    double worst = 0;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)s.sigmas[i] - sg[i]) / sg[i]);
    printf("# sigmas: worst per-value relative error %.3g\n", worst);
    g_assert_cmpfloat(worst, <=, SCHED_TOL);
    for (int i = 1; i < 1000; i++)
        g_assert_true(s.log_sigmas[i] > s.log_sigmas[i - 1]);   // sigma_to_t's search relies on it
    // t_to_sigma and sigma_to_t are inverse on the integer timesteps
    for (int t = 0; t < 1000; t++) {
        g_assert_cmpfloat(fabsf(sched_t_to_sigma(&s, (float)t) - s.sigmas[t]), <=, 1e-6f * s.sigmas[t]);
        g_assert_cmpfloat(fabsf(sched_sigma_to_t(&s, s.sigmas[t]) - (float)t), <=, 1e-3f);
    }
    g_free(ac);
    g_free(sg);
    st_close(f);
}

// ---------------------------------------------------------------------------------------------
// k-diffusion samplers

static void run_k_golden(gconstpointer data)
{
    int which = GPOINTER_TO_INT(data);
    int si = which / 2, ki = which % 2;
    const char *name = K_SAMPLERS[si], *sched = K_SCHEDULES[ki];
    sdg_sampler sampler = K_IDS[si];
    sdg_noise_schedule s;
    sched_init_sd(&s);
    st_file *f = golden_open(REF_FILE);
    char key[128];
    size_t n;

    float sigmas[8], ts[8];
    int steps = sched_build(&s, sampler, (sdg_schedule)ki, KD, 6, sigmas, ts);
    g_assert_cmpint(steps, ==, 6);
    g_snprintf(key, sizeof key, "k.%s.%s.sigmas", name, sched);
    float *ref_sigmas = golden_f32(f, key, &n);
    g_assert_cmpuint(n, ==, 7);
    golden_check(key, sigmas, ref_sigmas, 7, SCHED_TOL);
    g_assert_cmpfloat(sigmas[6], ==, 0.0f);

    g_snprintf(key, sizeof key, "k.%s.%s.unet_t", name, sched);
    size_t n_t;
    float *ref_t = golden_f32(f, key, &n_t);
    g_snprintf(key, sizeof key, "k.%s.%s.x", name, sched);
    float *x_ref = golden_f32(f, key, &n);
    size_t len = n / 7;
    g_snprintf(key, sizeof key, "k.%s.%s.denoised", name, sched);
    float *den = golden_f32(f, key, &n);
    g_assert_cmpuint(n, ==, 6 * len);
    float *noise = NULL;
    if (sampler == SDG_SAMPLER_EULER_A) {
        noise = golden_f32(f, "sample.euler_ancestral_noise", &n);
        g_assert_cmpuint(n, ==, 5 * len);
    }

    float *x = g_new(float, len);
    float *scratch = g_new(float, sampler_scratch_floats(sampler, len));
    memcpy(x, x_ref, len * sizeof(float));
    char run[64];
    g_snprintf(run, sizeof run, "k.%s.%s", name, sched);
    replay r = {.n = len, .den = den, .noise = noise, .x_ref = x_ref,
                .heun_sigmas = sampler == SDG_SAMPLER_HEUN ? sigmas : NULL, .name = run};
    sampler_hooks hooks = REPLAY_HOOKS;
    hooks.user = &r;
    g_assert_cmpint(sampler_run(sampler, &s, KD, sigmas, ts, steps, x, len, scratch,
                                &hooks), ==, SDG_OK);
    g_assert_cmpint(r.step, ==, 6);

    // the t of every model call, in order (heun: 2 per step but the last = 11)
    g_assert_cmpint(r.calls, ==, (int)n_t);
    g_assert_cmpint(r.calls, ==, sampler == SDG_SAMPLER_HEUN ? 11 : 6);
    g_snprintf(key, sizeof key, "%s.%s unet_t", name, sched);
    golden_check(key, r.t_seen, ref_t, n_t, SCHED_TOL);
    // sched_build's ts are the first call of each step
    for (int i = 0, c = 0; i < 6; i++) {
        g_assert_cmpfloat(fabsf(ts[i] - ref_t[c]), <=, 1e-6f * 999.0f);
        c += sampler == SDG_SAMPLER_HEUN && i < 5 ? 2 : 1;
    }
    printf("# %s.%s: worst x error over the trajectory %.3g\n", name, sched, r.max_err);
    if (sampler == SDG_SAMPLER_HEUN) {
        printf("# %s.%s: worst x2 error of the second calls %.3g\n", name, sched, r.heun_x2_err);
        g_assert_cmpfloat(r.heun_x2_err, <=, TRAJ_TOL);
    }

    g_free(x);
    g_free(scratch);
    g_free(noise);
    g_free(den);
    g_free(x_ref);
    g_free(ref_t);
    g_free(ref_sigmas);
    st_close(f);
}

// k-diffusion's exponential schedule (the few-step golden's k.*.exponential runs, 6 steps): the
// sigmas and the fractional timesteps the UNet gets (whole runs: test-api).
static void test_exponential_schedule(void)
{
    sdg_noise_schedule s;
    sched_init_sd(&s);
    st_file *f = golden_open("golden/tiny-sd1-fewstep-reference.safetensors");
    float sigmas[8], ts[8];
    g_assert_cmpint(sched_build(&s, SDG_SAMPLER_EULER, SDG_SCHEDULE_EXPONENTIAL, KD,
                                6, sigmas, ts), ==, 6);
    size_t n;
    float *ref = golden_f32(f, "k.euler.exponential.sigmas", &n);
    g_assert_cmpuint(n, ==, 7);
    golden_check("exponential sigmas", sigmas, ref, 7, SCHED_TOL);
    float *ref_t = golden_f32(f, "k.euler.exponential.unet_t", &n);
    golden_check("exponential unet_t", ts, ref_t, 6, SCHED_TOL);
    g_free(ref);
    g_free(ref_t);
    st_close(f);
}

// ---------------------------------------------------------------------------------------------
// Few-step goldens: ComfyUI's LCM runs (integer timesteps, the distilled model sampling) and
// k-diffusion's dpm++ 2m sde, replayed with their stored denoised tensors and noise

#define FEWSTEP_FILE "golden/tiny-sd1-fewstep-reference.safetensors"

typedef struct fewstep_case {
    const char *run;
    sdg_sampler sampler;
    sdg_schedule schedule;
    sdg_model_sampling ms;
    int steps;
} fewstep_case;

static const fewstep_case FEWSTEP_RUNS[] = {
    {"lcm.simple", SDG_SAMPLER_LCM, SDG_SCHEDULE_SIMPLE, SDG_MODEL_SAMPLING_DEFAULT, 4},
    {"lcm.sgm_uniform", SDG_SAMPLER_LCM, SDG_SCHEDULE_SGM_UNIFORM, SDG_MODEL_SAMPLING_DEFAULT, 4},
    {"lcm_distilled.sgm_uniform", SDG_SAMPLER_LCM, SDG_SCHEDULE_SGM_UNIFORM,
     SDG_MODEL_SAMPLING_LCM, 4},
    {"k.dpmpp_2m_sde.karras", SDG_SAMPLER_DPMPP_2M_SDE, SDG_SCHEDULE_KARRAS,
     SDG_MODEL_SAMPLING_DEFAULT, 6},
};

// ComfyUI's tables: ModelSamplingDiscrete's (float64 alphas_cumprod) and the distilled 50.
static void test_comfy_tables(void)
{
    sdg_noise_schedule s;
    sched_init_sd(&s);
    st_file *f = golden_open(FEWSTEP_FILE);
    size_t n;
    float *cs = golden_f32(f, "comfy.sigmas", &n);
    g_assert_cmpuint(n, ==, 1000);
    golden_check("comfy.sigmas", s.comfy_sigmas, cs, n, SCHED_TOL);
    int differ = 0;
    for (int i = 0; i < 1000; i++)
        differ += s.comfy_sigmas[i] != cs[i];
    printf("# comfy.sigmas: %d of 1000 entries differ in their bits\n", differ);
    g_assert_cmpint(differ, ==, 0);
    float *ls = golden_f32(f, "comfy_lcm.sigmas", &n);
    g_assert_cmpuint(n, ==, 50);
    for (int j = 0; j < 50; j++) {
        g_assert_cmpfloat(s.comfy_sigmas[19 + 20 * j], ==, ls[j]);
        g_assert_cmpfloat(s.lcm_log_sigmas[j], ==, logf(ls[j]));
    }
    // every table entry is its own timestep under both timings
    for (int t = 0; t < 1000; t++)
        g_assert_cmpfloat(sched_timestep(&s, SCHED_TIMING_COMFY, s.comfy_sigmas[t]), ==, (float)t);
    for (int j = 0; j < 50; j++)
        g_assert_cmpfloat(sched_timestep(&s, SCHED_TIMING_LCM, ls[j]), ==, (float)(20 * j + 19));
    g_free(cs);
    g_free(ls);
    st_close(f);
}

static void run_fewstep_golden(gconstpointer data)
{
    const fewstep_case *c = data;
    sdg_noise_schedule s;
    sched_init_sd(&s);
    st_file *f = golden_open(FEWSTEP_FILE);
    char key[128];
    size_t n;
    sched_timing tm = sched_timing_of(c->sampler, c->schedule, c->ms);
    g_assert_cmpint(tm, ==, c->ms == SDG_MODEL_SAMPLING_LCM ? SCHED_TIMING_LCM
                            : c->sampler == SDG_SAMPLER_LCM ? SCHED_TIMING_COMFY : KD);

    float sigmas[16], ts[16];
    int steps = sched_build(&s, c->sampler, c->schedule, tm, c->steps, sigmas, ts);
    g_assert_cmpint(steps, ==, c->steps);
    g_snprintf(key, sizeof key, "%s.sigmas", c->run);
    float *ref_sigmas = golden_f32(f, key, &n);
    g_assert_cmpuint(n, ==, (size_t)steps + 1);
    golden_check(key, sigmas, ref_sigmas, n, SCHED_TOL);
    int differ = 0;
    for (size_t i = 0; i < n; i++)
        differ += sigmas[i] != ref_sigmas[i];
    printf("# %s: %d sigmas differ in their bits\n", key, differ);

    g_snprintf(key, sizeof key, "%s.unet_t", c->run);
    size_t n_t;
    float *ref_t = golden_f32(f, key, &n_t);
    g_assert_cmpint((int)n_t, ==, steps);
    g_snprintf(key, sizeof key, "%s.x", c->run);
    float *x_ref = golden_f32(f, key, &n);
    size_t len = n / (size_t)(steps + 1);
    g_snprintf(key, sizeof key, "%s.denoised", c->run);
    float *den = golden_f32(f, key, &n);
    g_assert_cmpuint(n, ==, (size_t)steps * len);
    g_snprintf(key, sizeof key, "%s.noise", c->run);
    float *noise = golden_f32(f, key, &n);
    g_assert_cmpuint(n, ==, (size_t)(steps - 1) * len);

    if (c->sampler == SDG_SAMPLER_LCM) {
        // ComfyUI's start: max_denoise, noise * sqrt(1 + sigma_0^2) of lcm.noise
        float *n0 = golden_f32(f, "lcm.noise", NULL);
        float k = sqrtf(1.0f + sigmas[0] * sigmas[0]);
        float *x0 = g_new(float, len);
        for (size_t j = 0; j < len; j++)
            x0[j] = n0[j] * k;
        g_snprintf(key, sizeof key, "%s x[0]", c->run);
        golden_check(key, x0, x_ref, len, TRAJ_TOL);
        g_free(x0);
        g_free(n0);
    }

    float *x = g_new(float, len);
    float *scratch = g_new(float, sampler_scratch_floats(c->sampler, len));
    memcpy(x, x_ref, len * sizeof(float));
    replay r = {.n = len, .den = den, .noise = noise, .x_ref = x_ref, .name = c->run};
    sampler_hooks hooks = REPLAY_HOOKS;
    hooks.user = &r;
    g_assert_cmpint(sampler_run(c->sampler, &s, tm, sigmas, ts, steps, x, len, scratch, &hooks), ==,
                    SDG_OK);
    g_assert_cmpint(r.calls, ==, steps);
    g_snprintf(key, sizeof key, "%s unet_t", c->run);
    // ComfyUI's are integers and must be the same integers (499.5 -> 500 in lcm.sgm_uniform)
    golden_check(key, r.t_seen, ref_t, n_t, c->sampler == SDG_SAMPLER_LCM ? 0.0 : SCHED_TOL);
    printf("# %s: worst x error over the trajectory %.3g\n", c->run, r.max_err);

    g_free(x);
    g_free(scratch);
    g_free(noise);
    g_free(den);
    g_free(x_ref);
    g_free(ref_t);
    g_free(ref_sigmas);
    st_close(f);
}

// ComfyUI's ddim_uniform and diffusers' trailing have no golden: their timesteps worked out by
// hand from the reference code (comfy/samplers.py ddim_scheduler; diffusers set_timesteps with
// timestep_spacing "trailing"), and the sigmas they take from the table.
static void test_hand_schedules(void)
{
    sdg_noise_schedule s;
    sched_init_sd(&s);
    static const struct {
        sdg_schedule kind;
        int steps, n;
        int t[8];
    } cases[] = {
        // ddim_uniform: sigmas[1::1000 // steps] reversed, then 0
        {SDG_SCHEDULE_DDIM_UNIFORM, 1, 1, {1}},
        {SDG_SCHEDULE_DDIM_UNIFORM, 4, 4, {751, 501, 251, 1}},
        {SDG_SCHEDULE_DDIM_UNIFORM, 6, 7, {997, 831, 665, 499, 333, 167, 1}},   // 1000 // 6 = 166
        // trailing: round(arange(1000, 0, -1000 / steps)) - 1
        {SDG_SCHEDULE_TRAILING, 1, 1, {999}},
        {SDG_SCHEDULE_TRAILING, 4, 4, {999, 749, 499, 249}},
        // 833.33 666.67 500 333.33 166.67 -> 833 667 500 333 167
        {SDG_SCHEDULE_TRAILING, 6, 6, {999, 832, 666, 499, 332, 166}},
        // 16 steps: 937.5 -> 938 and 812.5 -> 812 (numpy rounds halves to even)
        {SDG_SCHEDULE_TRAILING, 16, 8, {999, 937, 874, 811, 749, 687, 624, 561}},
    };
    for (size_t c = 0; c < G_N_ELEMENTS(cases); c++) {
        float sigmas[24], ts[24];
        sdg_schedule kind = cases[c].kind;
        sched_timing tm = sched_timing_of(SDG_SAMPLER_EULER, kind, SDG_MODEL_SAMPLING_DEFAULT);
        g_assert_cmpint(tm, ==, SCHED_TIMING_COMFY);
        int n = sched_build(&s, SDG_SAMPLER_EULER, kind, tm, cases[c].steps, sigmas, ts);
        g_assert_cmpint(n, ==, cases[c].steps == 16 ? 16 : cases[c].n);
        for (int i = 0; i < cases[c].n; i++) {
            g_assert_cmpfloat(ts[i], ==, (float)cases[c].t[i]);
            g_assert_cmpfloat(sigmas[i], ==, s.comfy_sigmas[cases[c].t[i]]);
        }
        g_assert_cmpfloat(sigmas[n], ==, 0.0f);
    }
    // sgm_uniform, 6 steps: t = 999 - 166.5 i; the integer ones are table entries in log
    // (sigma(t) = exp(log_sigmas[t])), the UNet gets those t
    float sigmas[8], ts[8];
    g_assert_cmpint(sched_build(&s, SDG_SAMPLER_LCM, SDG_SCHEDULE_SGM_UNIFORM, SCHED_TIMING_COMFY,
                                6, sigmas, ts), ==, 6);
    const int whole[3][2] = {{0, 999}, {2, 666}, {4, 333}};
    for (int k = 0; k < 3; k++) {
        g_assert_cmpfloat(sigmas[whole[k][0]], ==, expf(s.comfy_log_sigmas[whole[k][1]]));
        g_assert_cmpfloat(ts[whole[k][0]], ==, (float)whole[k][1]);
    }
    // the LCM-distilled timing: every t is 20 j + 19
    g_assert_cmpint(sched_build(&s, SDG_SAMPLER_LCM, SDG_SCHEDULE_TRAILING, SCHED_TIMING_LCM, 6,
                                sigmas, ts), ==, 6);
    for (int i = 0; i < 6; i++)
        g_assert_cmpint(((int)ts[i] - 19) % 20, ==, 0);
    g_assert_cmpfloat(ts[0], ==, 999.0f);
}

// dpmpp_sde has no golden: one step (two model calls, two noise draws) against k-diffusion's
// formulas evaluated in double, with a model whose denoised depends on x and sigma.
typedef struct affine_model {
    int calls;
    float t_seen[4];
} affine_model;

static double affine_d(double x, double sigma)
{
    return 0.8 * x / (1.0 + 0.1 * sigma) + 0.05;
}

static sdg_status affine_denoise(void *user, const float *x, float sigma, float t, float *out)
{
    affine_model *m = user;
    if (m->calls < 4)
        m->t_seen[m->calls] = t;
    m->calls++;
    for (size_t j = 0; j < 16; j++)
        out[j] = (float)affine_d(x[j], sigma);
    return SDG_OK;
}

static void draw_noise(void *user, int draw, float *out, size_t n)
{
    (void)user;
    rng_normal_fill(11, 1, (uint64_t)draw * n, out, n);
}

static void test_dpmpp_sde_step(void)
{
    sdg_noise_schedule s;
    sched_init_sd(&s);
    enum { N = 16 };
    float sigmas[8], ts[8], x[N], x_in[N], scratch[4 * N], noise[2 * N];
    int n = sched_build(&s, SDG_SAMPLER_DPMPP_SDE, SDG_SCHEDULE_KARRAS, KD, 4, sigmas, ts);
    g_assert_cmpint(n, ==, 4);
    rng_normal_fill(3, 0, 0, x_in, N);
    for (int j = 0; j < N; j++)
        x[j] = x_in[j] * sigmas[0];
    memcpy(x_in, x, sizeof x);
    affine_model m = {0};
    sampler_hooks hooks = {affine_denoise, draw_noise, NULL, &m};
    g_assert_cmpint(sampler_run(SDG_SAMPLER_DPMPP_SDE, &s, KD, sigmas, ts, 1, x, N, scratch,
                                &hooks), ==, SDG_OK);
    g_assert_cmpint(m.calls, ==, 2);
    draw_noise(NULL, 0, noise, N);
    draw_noise(NULL, 1, noise + N, N);
    // k-diffusion sample_dpmpp_sde, eta 1, r 1/2, in double
    double sg = sigmas[0], sn = sigmas[1];
    double t = -log(sg), tn = -log(sn), h = tn - t, sm = t + 0.5 * h;
    double st = exp(-t), ss = exp(-sm), stn = exp(-tn);
    double up1 = fmin(ss, sqrt(ss * ss * (st * st - ss * ss) / (st * st)));
    double s1 = -log(sqrt(ss * ss - up1 * up1));
    double up2 = fmin(stn, sqrt(stn * stn * (st * st - stn * stn) / (st * st)));
    double t2 = -log(sqrt(stn * stn - up2 * up2));
    double worst = 0, scale = 0;
    for (int j = 0; j < N; j++) {
        double d1 = affine_d(x_in[j], sg);
        double x2 = exp(-s1) / st * x_in[j] - expm1(t - s1) * d1 + noise[j] * up1;
        double d2 = affine_d(x2, ss);
        double want = exp(-t2) / st * x_in[j] - expm1(t - t2) * d2 + noise[N + j] * up2;
        worst = fmax(worst, fabs(x[j] - want));
        scale = fmax(scale, fabs(want));
    }
    printf("# dpmpp_sde step against double: relative %.3g\n", worst / scale);
    g_assert_cmpfloat(worst / scale, <=, TRAJ_TOL);   // measured 1.3e-7
    // the half step's model call is at sigma(s) = sqrt(sigma sigma_next), its t interpolated
    g_assert_cmpfloat(m.t_seen[0], ==, ts[0]);
    g_assert_cmpfloat(fabsf(m.t_seen[1] - sched_sigma_to_t(&s, (float)ss)), <=, 1e-3f);
}

// ---------------------------------------------------------------------------------------------
// DDIM

static void run_ddim_golden(gconstpointer data)
{
    int S = GPOINTER_TO_INT(data);
    sdg_noise_schedule s;
    sched_init_sd(&s);
    st_file *f = golden_open(REF_FILE);
    char key[64];
    size_t n;

    float sigmas[16], ts[16];
    int steps = sched_build(&s, SDG_SAMPLER_DDIM, SDG_SCHEDULE_DEFAULT, KD, S, sigmas,
                            ts);
    g_snprintf(key, sizeof key, "ddim%d.timesteps", S);
    int32_t *tsteps = golden_i32(f, key, &n);
    g_assert_cmpint(steps, ==, (int)n);
    g_assert_cmpint(steps, ==, S == 6 ? 7 : 5);
    float got_a[16], got_ap[16];
    for (int i = 0; i < steps; i++) {
        // goldens are ascending (per DDIM index), the run descends
        int k = steps - 1 - i;
        g_assert_cmpfloat(ts[k], ==, (float)tsteps[i]);
        got_a[i] = s.alphas_cumprod[(int)ts[k]];
        // a_prev as the sigma the step lands on: a = 1 / (1 + sigma^2)
        got_ap[i] = 1.0f / (1.0f + sigmas[k + 1] * sigmas[k + 1]);
    }
    g_snprintf(key, sizeof key, "ddim%d.alphas", S);
    float *a = golden_f32(f, key, NULL);
    golden_check(key, got_a, a, steps, SCHED_TOL);
    g_snprintf(key, sizeof key, "ddim%d.alphas_prev", S);
    float *ap = golden_f32(f, key, NULL);
    golden_check(key, got_ap, ap, steps, SCHED_TOL);
    g_assert_cmpfloat(sigmas[steps], ==, s.sigmas[0]);

    g_snprintf(key, sizeof key, "ddim%d.unet_t", S);
    float *ref_t = golden_f32(f, key, &n);
    g_assert_cmpint((int)n, ==, steps);
    g_snprintf(key, sizeof key, "ddim%d.x", S);
    float *x_ref = golden_f32(f, key, &n);
    size_t len = n / (size_t)(steps + 1);
    g_snprintf(key, sizeof key, "ddim%d.pred_x0", S);
    float *den = golden_f32(f, key, &n);
    g_assert_cmpuint(n, ==, (size_t)steps * len);

    // x_T is the unscaled noise; into k space: x_k = x_t * sqrt(1 + sigma^2)
    float *x = g_new(float, len), *tmp = g_new(float, len);
    float *scratch = g_new(float, sampler_scratch_floats(SDG_SAMPLER_DDIM, len));
    float up = sqrtf(1.0f + sigmas[0] * sigmas[0]);
    for (size_t j = 0; j < len; j++)
        x[j] = x_ref[j] * up;
    char run[16];
    g_snprintf(run, sizeof run, "ddim%d", S);
    replay r = {.n = len, .den = den, .x_ref = x_ref, .ddim = true, .tmp = tmp, .name = run};
    sampler_hooks hooks = REPLAY_HOOKS;
    hooks.noise = NULL;
    hooks.user = &r;
    g_assert_cmpint(sampler_run(SDG_SAMPLER_DDIM, &s, KD, sigmas, ts, steps, x, len,
                                scratch, &hooks), ==, SDG_OK);
    g_assert_cmpint(r.calls, ==, steps);
    g_snprintf(key, sizeof key, "ddim%d unet_t", S);
    golden_check(key, r.t_seen, ref_t, steps, 0.0);   // integers
    printf("# ddim%d: worst x error over the trajectory %.3g\n", S, r.max_err);

    g_free(x);
    g_free(tmp);
    g_free(scratch);
    g_free(den);
    g_free(x_ref);
    g_free(ref_t);
    g_free(a);
    g_free(ap);
    g_free(tsteps);
    st_close(f);
}

// ---------------------------------------------------------------------------------------------
// Requests, properties, cancellation (no goldens needed)

static void test_bad_requests(void)
{
    sdg_noise_schedule s;
    sched_init_sd(&s);
    float sigmas[1003], ts[1003];
    for (int sm = 0; sm < SDG_SAMPLER_COUNT; sm++) {
        g_assert_cmpint(sched_build(&s, sm, SDG_SCHEDULE_DEFAULT, KD, 0, sigmas, ts), ==, 0);
        g_assert_cmpint(sched_build(&s, sm, SDG_SCHEDULE_DEFAULT, KD, -3, sigmas, ts), ==, 0);
        g_assert_cmpint(sched_build(&s, sm, SDG_SCHEDULE_KARRAS, KD, 1001, sigmas, ts), ==, 0);
        g_assert_cmpint(sched_build(&s, sm, SDG_SCHEDULE_COUNT, KD, 6, sigmas, ts), ==, 0);
    }
    g_assert_cmpint(sched_build(&s, SDG_SAMPLER_COUNT, SDG_SCHEDULE_DEFAULT, KD, 6,
                                sigmas, ts), ==, 0);
    g_assert_cmpint(sched_build(&s, SDG_SAMPLER_EULER, SDG_SCHEDULE_DEFAULT, SCHED_TIMING_LCM + 1,
                                6, sigmas, ts), ==, 0);
    g_assert_cmpuint(sampler_scratch_floats(SDG_SAMPLER_COUNT, 10), ==, 0);

    float x[4] = {0}, scratch[32];
    replay r = {.n = 4};
    sampler_hooks hooks = REPLAY_HOOKS;
    hooks.user = &r;
    int n = sched_build(&s, SDG_SAMPLER_EULER_A, SDG_SCHEDULE_DEFAULT, KD, 3, sigmas, ts);
    g_assert_cmpint(n, ==, 3);
    g_assert_cmpint(sampler_run(SDG_SAMPLER_EULER, &s, KD, sigmas, ts, 0, x, 4, scratch,
                                &hooks), ==, SDG_ERR_INVALID_ARG);
    g_assert_cmpint(sampler_run(SDG_SAMPLER_COUNT, &s, KD, sigmas, ts, n, x, 4, scratch,
                                &hooks), ==, SDG_ERR_INVALID_ARG);
    hooks.noise = NULL;
    const sdg_sampler noisy[] = {SDG_SAMPLER_EULER_A, SDG_SAMPLER_LCM, SDG_SAMPLER_DPMPP_2M_SDE,
                                 SDG_SAMPLER_DPMPP_SDE};
    for (size_t k = 0; k < G_N_ELEMENTS(noisy); k++)
        g_assert_cmpint(sampler_run(noisy[k], &s, KD, sigmas, ts, n, x, 4, scratch, &hooks), ==,
                        SDG_ERR_INVALID_ARG);
    g_assert_cmpint(sampler_run(SDG_SAMPLER_HEUN, NULL, KD, sigmas, ts, n, x, 4, scratch,
                                &hooks), ==, SDG_ERR_INVALID_ARG);
    hooks.denoise = NULL;
    g_assert_cmpint(sampler_run(SDG_SAMPLER_EULER, &s, KD, sigmas, ts, n, x, 4, scratch,
                                &hooks), ==, SDG_ERR_INVALID_ARG);
    g_assert_cmpint(r.calls, ==, 0);
}

// Every step count 1..1000: the run fits in steps+2 values, descends, and ends where it should.
static void test_all_step_counts(void)
{
    sdg_noise_schedule s;
    sched_init_sd(&s);
    enum { GUARD = 4 };
    float *sigmas = g_new(float, 1002 + GUARD), *ts = g_new(float, 1002 + GUARD);
    const sdg_sampler kinds[] = {SDG_SAMPLER_EULER, SDG_SAMPLER_DDIM};
    for (int kk = 0; kk < 2; kk++) {
        for (int sc = 0; sc < SDG_SCHEDULE_COUNT; sc++) {
            for (int steps = 1; steps <= 1000; steps++) {
                for (int i = 0; i < steps + 2 + GUARD; i++)
                    sigmas[i] = ts[i] = -12345.0f;
                int n = sched_build(&s, kinds[kk], sc, sched_timing_of(kinds[kk], sc, 0), steps,
                                    sigmas, ts);
                for (int i = steps + 2; i < steps + 2 + GUARD; i++)
                    g_assert_true(sigmas[i] == -12345.0f && ts[i] == -12345.0f);
                if (kinds[kk] == SDG_SAMPLER_DDIM) {
                    // 1000 steps would reach timestep 1000 in CompVis (out of the table): 999
                    g_assert_true((n >= steps && n <= steps + 1) || (steps == 1000 && n == 999));
                    g_assert_cmpfloat(sigmas[n], ==, s.sigmas[0]);
                    // CompVis gives 998/c + 1 timesteps from 1 up; the cap at steps+1 keeps
                    // the largest
                    int c = 1000 / steps, count = 998 / c + 1;
                    g_assert_cmpint(n, ==, count < steps + 1 ? count : steps + 1);
                    g_assert_cmpfloat(ts[n - 1], ==, (float)((count - n) * c + 1));
                    g_assert_true(ts[0] <= 999.0f && ts[0] >= 999.0f - 1000.0f / steps);
                } else if (sc == SDG_SCHEDULE_DDIM_UNIFORM) {
                    // ComfyUI's ddim_uniform: CompVis' timesteps (and cap), ending at 0
                    int c = 1000 / steps, count = 998 / c + 1;
                    g_assert_cmpint(n, ==, count < steps + 1 ? count : steps + 1);
                    g_assert_cmpfloat(sigmas[n], ==, 0.0f);
                    for (int i = 0; i < n; i++) {
                        int t = (count - 1 - i) * c + 1;
                        g_assert_cmpfloat(ts[i], ==, (float)t);
                        g_assert_cmpfloat(sigmas[i], ==, s.comfy_sigmas[t]);
                    }
                } else {
                    g_assert_cmpint(n, ==, steps);
                    g_assert_cmpfloat(sigmas[n], ==, 0.0f);
                    g_assert_cmpfloat(fabsf(ts[0] - 999.0f), <=, 1e-3f);
                    if (sc == SDG_SCHEDULE_SIMPLE) {
                        // ComfyUI's simple: table entries at integer timesteps 999 - int(i *
                        // 1000 / steps), e.g. 999, 749, 499, 249 for 4 steps.
                        for (int i = 0; i < n; i++) {
                            int idx = 999 - (int)((double)i * (1000.0 / steps));
                            g_assert_cmpfloat(ts[i], ==, (float)idx);
                            g_assert_cmpfloat(sigmas[i], ==, s.comfy_sigmas[idx]);
                        }
                    } else if (sc == SDG_SCHEDULE_TRAILING) {
                        // diffusers' trailing: round(1000 - i * 1000 / steps) - 1, halves to
                        // even (numpy)
                        for (int i = 0; i < n; i++) {
                            double v = 1000.0 - (double)i * (1000.0 / steps);
                            double r = floor(v + 0.5);
                            if (r - v == 0.5 && fmod(r, 2.0) != 0.0)
                                r -= 1.0;
                            g_assert_cmpfloat(ts[i], ==, (float)(r - 1.0));
                            g_assert_cmpfloat(sigmas[i], ==, s.comfy_sigmas[(int)r - 1]);
                        }
                    } else if (sc == SDG_SCHEDULE_SGM_UNIFORM) {
                        // t = 999 - 999 i / steps, the UNet given the nearest table timestep
                        g_assert_cmpfloat(fabsf(sigmas[0] - s.comfy_sigmas[999]), <=,
                                          1e-6f * s.comfy_sigmas[999]);
                        for (int i = 0; i < n; i++)
                            g_assert_cmpfloat(fabsf(ts[i] - (999.0f - 999.0f * i / steps)), <=,
                                              0.5f);
                    } else {
                        g_assert_cmpfloat(fabsf(sigmas[0] - s.sigmas[999]), <=,
                                          1e-6f * s.sigmas[999]);
                        if (n > 1)
                            g_assert_cmpfloat(fabsf(sigmas[n - 1] - s.sigmas[0]), <=, 1e-6f);
                    }
                }
                if (sched_timing_of(kinds[kk], sc, 0) == SCHED_TIMING_COMFY)
                    for (int i = 0; i < n; i++)
                        g_assert_cmpfloat(ts[i], ==, roundf(ts[i]));   // integer timesteps
                for (int i = 0; i < n; i++) {
                    g_assert_true(isfinite(sigmas[i]) && sigmas[i] > sigmas[i + 1]);
                    g_assert_true(ts[i] >= 0.0f && ts[i] <= 999.0f);
                    if (i > 0)
                        g_assert_true(ts[i] <= ts[i - 1]);
                }
            }
        }
    }
    // the CompVis quirk and its cap
    g_assert_cmpint(sched_build(&s, SDG_SAMPLER_DDIM, 0, KD, 6, sigmas, ts), ==, 7);
    g_assert_cmpint(sched_build(&s, SDG_SAMPLER_DDIM, 0, KD, 50, sigmas, ts), ==, 50);
    g_assert_cmpint(sched_build(&s, SDG_SAMPLER_DDIM, 0, KD, 48, sigmas, ts), ==, 49);
    g_assert_cmpint(sched_build(&s, SDG_SAMPLER_DDIM, 0, KD, 1000, sigmas, ts), ==, 999);
    g_free(sigmas);
    g_free(ts);
}

typedef struct constant_model {
    const float *x0;
    size_t n;
    int calls;
} constant_model;

static sdg_status constant_denoise(void *user, const float *x, float sigma, float t, float *out)
{
    (void)x;
    g_assert_true(sigma > 0.0f && t >= 0.0f && t <= 999.0f);
    constant_model *m = user;
    m->calls++;
    memcpy(out, m->x0, m->n * sizeof(float));
    return SDG_OK;
}

static void zero_noise(void *user, int step, float *out, size_t n)
{
    (void)user;
    (void)step;
    memset(out, 0, n * sizeof(float));
}

// Absolute (x0 ~ N(0,1)), over every sampler, schedule and step count: measured 9.5e-7.
#define CONST_TOL 5e-6

// A model that always predicts the same x0 makes every step exact: each sampler must land on
// it (LMS only if its coefficients sum to the step, dpm++ only if its extrapolation is affine).
// The denoiser's scalings: with x = x0 + sigma eps, the ideal network output (eps itself, or
// v = (eps - sigma x0) / sqrt(sigma^2+1), the DDPM v at a = 1/(sigma^2+1)) must give back x0,
// computed in double; the input scaling is the DDPM latent's; and eps's are exactly the formula
// the pipeline had before the denoiser (x - sigma eps, same bits).
static void test_denoiser(void)
{
    const float sigmas[] = {0.0292f, 0.1f, 1.0f, 3.7f, 14.6146f, 80.0f};
    const double x0 = 0.37, eps = -1.21;
    for (size_t i = 0; i < G_N_ELEMENTS(sigmas); i++) {
        double s = sigmas[i], x = x0 + s * eps;
        double v = (eps - s * x0) / sqrt(s * s + 1.0);
        sdg_scalings e = denoiser_scalings(SDG_PREDICTION_EPS, sigmas[i]);
        sdg_scalings w = denoiser_scalings(SDG_PREDICTION_V, sigmas[i]);
        g_assert_cmpfloat_with_epsilon(e.c_in, 1.0 / sqrt(s * s + 1.0), 1e-7 * e.c_in);
        g_assert_cmpfloat(w.c_in, ==, e.c_in);
        double de = e.c_skip * x + e.c_out * eps, dv = w.c_skip * x + w.c_out * v;
        g_test_message("sigma %g: eps gives x0 to %.2e, v to %.2e", s, fabs(de - x0),
                       fabs(dv - x0));
        // float32 scalings: a few ulps of the largest term (|x| up to 97 here)
        g_assert_cmpfloat(fabs(de - x0), <=, 4e-7 * fabs(x) + 1e-7);
        g_assert_cmpfloat(fabs(dv - x0), <=, 4e-7 * fabs(x) + 1e-7);
        float xf = (float)x, ef = (float)eps;
        g_assert_true(e.c_skip * xf + e.c_out * ef == xf - sigmas[i] * ef);
    }
    // LCM's boundary condition (ComfyUI LCM.calculate_denoised) in double: T = 10 t,
    // denoised = T / sqrt(T^2 + 1/4) (x - sigma eps) + 1/4 / (T^2 + 1/4) x
    const float lcm_t[] = {0.0f, 19.0f, 259.0f, 999.0f};
    for (size_t i = 0; i < G_N_ELEMENTS(lcm_t); i++) {
        double s = 2.5, x = x0 + s * eps, T = 10.0 * lcm_t[i];
        double want = T / sqrt(T * T + 0.25) * (x - s * eps) + 0.25 / (T * T + 0.25) * x;
        sdg_scalings l = denoiser_lcm(denoiser_scalings(SDG_PREDICTION_EPS, (float)s), lcm_t[i]);
        double got = l.c_skip * x + l.c_out * eps;
        g_test_message("lcm t %g: %.2e off", lcm_t[i], fabs(got - want));
        g_assert_cmpfloat(fabs(got - want), <=, 4e-7 * fabs(x) + 1e-7);
        g_assert_cmpfloat(l.c_in, ==, denoiser_scalings(SDG_PREDICTION_EPS, (float)s).c_in);
    }
}

static void test_constant_model(void)
{
    sdg_noise_schedule s;
    sched_init_sd(&s);
    enum { N = 64 };
    float x0[N], noise[N], x[N], scratch[5 * N], sigmas[32], ts[32];
    rng_normal_fill(7, 0, 0, noise, N);
    rng_normal_fill(7, 1, 0, x0, N);
    double worst = 0;
    for (int sm = 0; sm < SDG_SAMPLER_COUNT; sm++) {
        for (int sc = 0; sc < SDG_SCHEDULE_COUNT; sc++) {
            for (int steps = 1; steps <= 25; steps += 3) {
                sched_timing tm = sched_timing_of(sm, sc, SDG_MODEL_SAMPLING_DEFAULT);
                int n = sched_build(&s, sm, sc, tm, steps, sigmas, ts);
                g_assert_cmpint(n, >=, 1);
                for (int j = 0; j < N; j++)
                    x[j] = x0[j] + sigmas[0] * noise[j];
                constant_model m = {x0, N, 0};
                sampler_hooks hooks = {constant_denoise, zero_noise, NULL, &m};
                g_assert_cmpuint(sampler_scratch_floats(sm, N), <=, 5 * N);
                g_assert_cmpint(sampler_run(sm, &s, tm, sigmas, ts, n, x, N, scratch, &hooks), ==,
                                SDG_OK);
                bool two = sm == SDG_SAMPLER_HEUN || sm == SDG_SAMPLER_DPMPP_SDE;
                g_assert_cmpint(m.calls, ==, two ? 2 * n - 1 : n);
                // the run ends at sigmas[n]: 0, or the table's smallest sigma for DDIM
                double err = 0;
                for (int j = 0; j < N; j++)
                    err = fmax(err, fabs(x[j] - (x0[j] + sigmas[n] * noise[j])));
                if (err > CONST_TOL)
                    printf("# sampler %d schedule %d steps %d: error %.3g\n", sm, sc, steps, err);
                g_assert_cmpfloat(err, <=, CONST_TOL);
                worst = fmax(worst, err);
            }
        }
    }
    printf("# constant model: worst absolute error %.3g\n", worst);
}

// The random UNet's eps is small next to x, so a wrong LMS order barely shows in the golden x
// (order 3 instead of 4 moves it by 7.5e-5 relative). Test the coefficients on their own: with
// D(x, sigma) = x - sigma p(sigma), the derivative is d = p(sigma), the exact step is the integral
// of p, and a step of order k must be exact when p has degree < k.
typedef struct poly_model {
    int degree;
    const float *sigmas;
    float *x_before;
    size_t n;
    double worst;
    int checked;
} poly_model;

static double poly_p(int degree, double sg)
{
    double v = 0.7;
    for (int k = 1; k <= degree; k++)
        v += (0.3 + 0.1 * k) * pow(sg, k) * (k % 2 ? -1.0 : 1.0);
    return v;
}

static double poly_integral(int degree, double a, double b)
{
    double v = 0.7 * (b - a);
    for (int k = 1; k <= degree; k++)
        v += (0.3 + 0.1 * k) * (pow(b, k + 1) - pow(a, k + 1)) / (k + 1) * (k % 2 ? -1.0 : 1.0);
    return v;
}

static sdg_status poly_denoise(void *user, const float *x, float sigma, float t, float *out)
{
    (void)t;
    poly_model *m = user;
    float p = (float)poly_p(m->degree, sigma);
    for (size_t j = 0; j < m->n; j++)
        out[j] = x[j] - sigma * p;
    memcpy(m->x_before, x, m->n * sizeof(float));
    return SDG_OK;
}

static sdg_status poly_on_step(void *user, int step, int n_steps, float *x, float sigma_next,
                               const float *denoised)
{
    (void)n_steps;
    (void)sigma_next;
    (void)denoised;
    poly_model *m = user;
    int i = step - 1, order = i + 1 < 4 ? i + 1 : 4;
    if (order > m->degree) {
        double want = poly_integral(m->degree, m->sigmas[i], m->sigmas[i + 1]);
        double got = (double)x[0] - m->x_before[0];
        m->worst = fmax(m->worst, fabs(got - want) / fabs(want));
        m->checked++;
    }
    // d does not depend on x, so restart every step from 0: the increment stays exact in float
    memset(x, 0, m->n * sizeof(float));
    return SDG_OK;
}

static void test_lms_order(void)
{
    sdg_noise_schedule s;
    sched_init_sd(&s);
    enum { N = 4 };
    float x[N], xb[N], scratch[5 * N], sigmas[32], ts[32];
    for (int degree = 0; degree <= 3; degree++) {
        for (int sc = 0; sc < SDG_SCHEDULE_COUNT; sc++) {
            int n = sched_build(&s, SDG_SAMPLER_LMS, sc, KD, 12, sigmas, ts);
            memset(x, 0, sizeof x);
            poly_model m = {degree, sigmas, xb, N, 0, 0};
            sampler_hooks hooks = {poly_denoise, NULL, poly_on_step, &m};
            g_assert_cmpint(sampler_run(SDG_SAMPLER_LMS, &s, KD, sigmas, ts, n, x, N, scratch,
                                        &hooks), ==, SDG_OK);
            printf("# lms, p of degree %d, schedule %d: %d exact steps, worst relative error %.3g\n",
                   degree, sc, m.checked, m.worst);
            g_assert_cmpint(m.checked, ==, degree < 3 ? n - degree : n - 3);
            g_assert_cmpfloat(m.worst, <=, 8e-6);   // measured 1.5e-6 (degree 3, karras)
        }
    }
}

static void test_cancel(void)
{
    sdg_noise_schedule s;
    sched_init_sd(&s);
    enum { N = 8 };
    float den[10 * N] = {0}, noise[16 * N] = {0}, x[N] = {0}, scratch[5 * N], sigmas[16], ts[16];
    for (int sm = 0; sm < SDG_SAMPLER_COUNT; sm++) {
        int n = sched_build(&s, sm, SDG_SCHEDULE_DEFAULT, KD, 6, sigmas, ts);
        bool two = sm == SDG_SAMPLER_HEUN || sm == SDG_SAMPLER_DPMPP_SDE;
        replay r = {.n = N, .den = den, .noise = noise, .cancel_at_call = 3,
                    .two_draws = sm == SDG_SAMPLER_DPMPP_SDE};
        sampler_hooks hooks = REPLAY_HOOKS;
        hooks.user = &r;
        g_assert_cmpint(sampler_run(sm, &s, KD, sigmas, ts, n, x, N, scratch, &hooks), ==,
                        SDG_ERR_CANCELLED);
        g_assert_cmpint(r.calls, ==, 3);
        replay r2 = {.n = N, .den = den, .noise = noise, .cancel_at_step = 2,
                     .two_draws = sm == SDG_SAMPLER_DPMPP_SDE};
        hooks.user = &r2;
        g_assert_cmpint(sampler_run(sm, &s, KD, sigmas, ts, n, x, N, scratch, &hooks), ==,
                        SDG_ERR_CANCELLED);
        g_assert_cmpint(r2.step, ==, 2);
        g_assert_cmpint(r2.calls, ==, two ? 4 : 2);
    }
}

// ---------------------------------------------------------------------------------------------
// Noise generator

static void test_philox_kat(void)
{
    // Random123 kat_vectors, philox4x32_10
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
         0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
         0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int v = 0; v < 3; v++) {
        uint32_t out[4];
        rng_philox4x32_10(kat[v], kat[v] + 4, out);
        for (int k = 0; k < 4; k++) {
            if (out[k] != kat[v][6 + k])
                printf("# vector %d word %d: got 0x%08x want 0x%08x\n", v, k, out[k], kat[v][6 + k]);
            g_assert_cmphex(out[k], ==, kat[v][6 + k]);
        }
    }
}

static void test_rng_properties(void)
{
    const size_t N = 1000000;
    float *a = g_new(float, N), *b = g_new(float, N);
    rng_normal_fill(42, 0, 0, a, N);
    rng_normal_fill(42, 0, 0, b, N);
    g_assert_true(memcmp(a, b, N * sizeof(float)) == 0);

    double m1 = 0, m2 = 0, m4 = 0;
    for (size_t i = 0; i < N; i++) {
        g_assert_true(isfinite(a[i]));
        m1 += a[i];
    }
    m1 /= (double)N;
    for (size_t i = 0; i < N; i++) {
        double d = a[i] - m1;
        m2 += d * d;
        m4 += d * d * d * d;
    }
    m2 /= (double)N;
    m4 /= (double)N;
    printf("# mean %.5f variance %.5f kurtosis %.4f over %zu samples\n", m1, m2, m4 / (m2 * m2), N);
    g_assert_cmpfloat(fabs(m1), <=, 0.005);        // 5 standard errors
    g_assert_cmpfloat(fabs(m2 - 1.0), <=, 0.01);
    g_assert_cmpfloat(fabs(m4 / (m2 * m2) - 3.0), <=, 0.05);

    // offsets: a stream read from any point continues the same sequence
    const size_t M = 1031;
    const size_t offsets[] = {1, 2, 3, 4, 5, 7, 8, 13, 512, 1001, 1030};
    for (size_t k = 0; k < G_N_ELEMENTS(offsets); k++) {
        size_t o = offsets[k];
        rng_normal_fill(42, 0, o, b, M - o);
        g_assert_true(memcmp(a + o, b, (M - o) * sizeof(float)) == 0);
        rng_normal_fill(42, 0, o, b, 1);   // single elements too
        g_assert_true(a[o] == b[0]);
    }
    // seeds and streams give different sequences; the high words of both matter
    const uint64_t keys[][2] = {{43, 0}, {42, 1}, {42ull | (1ull << 32), 0}, {42, 1ull << 32}};
    for (size_t k = 0; k < G_N_ELEMENTS(keys); k++) {
        rng_normal_fill(keys[k][0], keys[k][1], 0, b, 64);
        int same = 0;
        for (int i = 0; i < 64; i++)
            same += a[i] == b[i];
        g_assert_cmpint(same, <, 4);
    }
    // the documented construction, written out once for element 5 (block 1, second pair, cos)
    uint32_t ctr[4] = {1, 0, 0, 0}, key[2] = {42, 0}, w[4];
    rng_philox4x32_10(ctr, key, w);
    double u0 = ((double)w[2] + 0.5) / 4294967296.0, u1 = ((double)w[3] + 0.5) / 4294967296.0;
    double r = sqrt(-2.0 * log(u0));
    g_assert_cmpfloat(a[6], ==, (float)(r * cos(2.0 * M_PI * u1)));
    g_assert_cmpfloat(a[7], ==, (float)(r * sin(2.0 * M_PI * u1)));
    g_free(a);
    g_free(b);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/sampler/rng/philox-kat", test_philox_kat);
    g_test_add_func("/sampler/rng/properties", test_rng_properties);
    g_test_add_func("/sampler/schedule/bad-requests", test_bad_requests);
    g_test_add_func("/sampler/schedule/all-step-counts", test_all_step_counts);
    g_test_add_func("/sampler/constant-model", test_constant_model);
    g_test_add_func("/sampler/denoiser", test_denoiser);
    g_test_add_func("/sampler/cancel", test_cancel);
    g_test_add_func("/sampler/lms-order", test_lms_order);
    g_test_add_func("/sampler/golden/schedule", test_schedule_tables);
    g_test_add_func("/sampler/golden/exponential", test_exponential_schedule);
    for (int si = 0; si < (int)G_N_ELEMENTS(K_SAMPLERS); si++) {
        for (int ki = 0; ki < 2; ki++) {
            char *path = g_strdup_printf("/sampler/golden/k/%s/%s", K_SAMPLERS[si], K_SCHEDULES[ki]);
            g_test_add_data_func(path, GINT_TO_POINTER(si * 2 + ki), run_k_golden);
            g_free(path);
        }
    }
    g_test_add_func("/sampler/golden/comfy-tables", test_comfy_tables);
    g_test_add_func("/sampler/schedule/by-hand", test_hand_schedules);
    g_test_add_func("/sampler/dpmpp-sde-step", test_dpmpp_sde_step);
    for (size_t i = 0; i < G_N_ELEMENTS(FEWSTEP_RUNS); i++) {
        char *path = g_strdup_printf("/sampler/golden/fewstep/%s", FEWSTEP_RUNS[i].run);
        g_test_add_data_func(path, &FEWSTEP_RUNS[i], run_fewstep_golden);
        g_free(path);
    }
    g_test_add_data_func("/sampler/golden/ddim6", GINT_TO_POINTER(6), run_ddim_golden);
    g_test_add_data_func("/sampler/golden/ddim5", GINT_TO_POINTER(5), run_ddim_golden);
    return g_test_run();
}
