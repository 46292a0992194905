/*
 * schedule.c - the SD noise schedule and the per-run step schedules (see sampler.h).
 *
 * Not here: the sampler loops (samplers.c) and the noise generator (rng.c).
 *
 * The k-diffusion parts follow DiscreteSchedule / CompVisDenoiser (k_diffusion/external.py
 * @4601bf0) operation by operation in float32, the way the reference computes them, so that the
 * fractional timesteps fed to the UNet match the goldens to float rounding. The ComfyUI parts
 * follow comfy/model_sampling.py (ModelSamplingDiscrete, ModelSamplingDiscreteDistilled) and
 * comfy/samplers.py (simple_scheduler, normal_scheduler, ddim_scheduler) @3cd7b32f the same way:
 * its table and the float32 log distances decide which integer timestep the UNet gets, and
 * sgm_uniform's 4-step t = 499.5 is a near-tie that only this evaluation order lands on 500.
 * diffusers' trailing spacing: schedulers/scheduling_euler_discrete.py and scheduling_ddim.py
 * set_timesteps (timestep_spacing "trailing").
 */
#include "sampler.h"

#include <math.h>

// torch.linspace(start, end, n) for float32: the first half counts up from start, the second
// half down from end (RangeFactoriesKernel.cpp), so both ends are exact.
static float linspace_f32(float start, float end, int n, int i)
{
    if (n == 1)
        return start;
    float step = (end - start) / (float)(n - 1);
    if (i < n / 2)
        return start + step * (float)i;
    return end - step * (float)(n - 1 - i);
}

// ComfyUI ModelSamplingDiscrete._register_schedule + set_sigmas: the same float64 betas and
// cumprod, then ((1 - ac) / ac) ** 0.5 and its log in float64, each rounded to float32.
static void comfy_set(sdg_noise_schedule *s, int i, double ac)
{
    double sg = sqrt((1.0 - ac) / ac);
    s->comfy_sigmas[i] = (float)sg;
    s->comfy_log_sigmas[i] = (float)log(sg);
}

// ModelSamplingDiscreteDistilled: sigmas_valid (float32) = sigmas[999 - 20 x], x = 0..49, then
// set_sigmas takes their log in float32.
static void lcm_set(sdg_noise_schedule *s)
{
    for (int j = 0; j < 50; j++)
        s->lcm_log_sigmas[j] = logf(s->comfy_sigmas[19 + 20 * j]);
}

void sched_init_sd(sdg_noise_schedule *s)
{
    // ldm make_beta_schedule("linear") + register_schedule: float64 linspace of sqrt(beta),
    // squared, then np.cumprod(1 - betas) in float64, stored as float32.
    const int n = SCHED_T;
    double start = sqrt(0.00085), end = sqrt(0.012);
    double step = (end - start) / (double)(n - 1);
    double prod = 1.0;
    for (int i = 0; i < n; i++) {
        double sb = i < n / 2 ? start + step * (double)i : end - step * (double)(n - 1 - i);
        prod *= 1.0 - sb * sb;
        s->alphas_cumprod[i] = (float)prod;
        comfy_set(s, i, prod);
    }
    lcm_set(s);
    // CompVisDenoiser: ((1 - ac) / ac) ** 0.5 on the float32 buffer.
    for (int i = 0; i < n; i++) {
        float ac = s->alphas_cumprod[i];
        s->sigmas[i] = sqrtf((1.0f - ac) / ac);
        s->log_sigmas[i] = logf(s->sigmas[i]);
    }
}

void sched_rescale_zero_snr(sdg_noise_schedule *s)
{
    // ComfyUI (comfy/model_sampling.py rescale_zero_terminal_snr_sigmas), from the sigmas:
    //   ac = 1 / (sigmas^2 + 1); r = sqrt(ac); r -= r[-1]; r *= r[0] / (r[0] - r[-1]) (old values);
    //   ac = r^2; ac[-1] = 4.8973451890853435e-08
    // ComfyUI's own table (comfy_sigmas) is made from the same double ac here, i.e. from the
    // float k-diffusion sigmas rather than its double ones: within an ulp or so of its values.
    const int n = SCHED_T;
    double r[SCHED_T];
    for (int i = 0; i < n; i++)
        r[i] = sqrt(1.0 / ((double)s->sigmas[i] * s->sigmas[i] + 1.0));
    double r0 = r[0], rt = r[n - 1];
    for (int i = 0; i < n; i++) {
        double v = (r[i] - rt) * (r0 / (r0 - rt));
        s->alphas_cumprod[i] = (float)(v * v);
        comfy_set(s, i, i < n - 1 ? v * v : 4.8973451890853435e-08);
    }
    s->alphas_cumprod[n - 1] = 4.8973451890853435e-08f;
    lcm_set(s);
    for (int i = 0; i < n; i++) {
        float ac = s->alphas_cumprod[i];
        s->sigmas[i] = sqrtf((1.0f - ac) / ac);
        s->log_sigmas[i] = logf(s->sigmas[i]);
    }
}

float sched_sigma_to_t(const sdg_noise_schedule *s, float sigma)
{
    float ls = logf(sigma);
    // low = the last index whose log-sigma is <= ls (0 when none), as dists.ge(0).cumsum().argmax();
    // log_sigmas ascend strictly, so a binary search finds it
    int low = 0, lo_i = 0, hi_i = SCHED_T - 1;
    while (lo_i <= hi_i) {
        int mid = (lo_i + hi_i) / 2;
        if (ls >= s->log_sigmas[mid]) {
            low = mid;
            lo_i = mid + 1;
        } else {
            hi_i = mid - 1;
        }
    }
    if (low > SCHED_T - 2)
        low = SCHED_T - 2;
    int high = low + 1;
    float lo = s->log_sigmas[low], hi = s->log_sigmas[high];
    float w = (lo - ls) / (lo - hi);
    // clamp; a NaN sigma falls to t = 0 rather than poisoning the UNet's embedding
    if (!(w > 0.0f))
        w = 0.0f;
    if (w > 1.0f)
        w = 1.0f;
    return (1.0f - w) * (float)low + w * (float)high;
}

float sched_t_to_sigma(const sdg_noise_schedule *s, float t)
{
    if (!(t > 0.0f))
        t = 0.0f;
    if (t > (float)(SCHED_T - 1))
        t = (float)(SCHED_T - 1);
    int lo = (int)floorf(t), hi = (int)ceilf(t);
    float w = t - truncf(t);
    float ls = (1.0f - w) * s->log_sigmas[lo] + w * s->log_sigmas[hi];
    return expf(ls);
}

// ---------------------------------------------------------------------------------------------
// Timesteps

sched_timing sched_timing_of(sdg_sampler sampler, sdg_schedule kind, sdg_model_sampling ms)
{
    if (ms == SDG_MODEL_SAMPLING_LCM)
        return SCHED_TIMING_LCM;
    if (sampler == SDG_SAMPLER_DDIM)
        return SCHED_TIMING_KDIFF;
    if (sampler == SDG_SAMPLER_LCM || kind == SDG_SCHEDULE_SIMPLE ||
        kind == SDG_SCHEDULE_SGM_UNIFORM || kind == SDG_SCHEDULE_DDIM_UNIFORM ||
        kind == SDG_SCHEDULE_TRAILING)
        return SCHED_TIMING_COMFY;
    return SCHED_TIMING_KDIFF;
}

// A ComfyUI model sampling's table: entry j has log sigma logs[j] and stands for timestep
// skip j + skip - 1 (ModelSamplingDiscrete: skip 1; Distilled: skip 20 = 1000 / 50).
typedef struct comfy_table {
    const float *logs;
    int n, skip;
} comfy_table;

static comfy_table comfy_table_of(const sdg_noise_schedule *s, sched_timing timing)
{
    if (timing == SCHED_TIMING_LCM)
        return (comfy_table){s->lcm_log_sigmas, 50, SCHED_T / 50};
    return (comfy_table){s->comfy_log_sigmas, SCHED_T, 1};
}

// Entry j's sigma: the float32 table value (the distilled table holds comfy_sigmas' values).
static float comfy_entry(const sdg_noise_schedule *s, comfy_table c, int j)
{
    return s->comfy_sigmas[c.skip * j + c.skip - 1];
}

// ModelSampling.timestep: dists = log(sigma) - log_sigmas, argmin of |dists| (the first of equal
// ones), all float32. The float32 evaluation decides near-ties: sgm_uniform's 4-step t = 499.5
// lands on 500 by 2 ulp in ComfyUI, and so it must here.
static int comfy_argmin(comfy_table c, float sigma)
{
    float ls = logf(sigma);
    int best = 0;
    float bd = fabsf(ls - c.logs[0]);
    for (int j = 1; j < c.n; j++) {
        float d = fabsf(ls - c.logs[j]);
        if (d < bd) {
            bd = d;
            best = j;
        }
    }
    return best;
}

// ModelSampling.sigma(t): u = (t - (skip - 1)) / skip clamped to the table, then exp of the
// float32 lerp of the logs at floor(u), ceil(u) with w = frac(u).
static float comfy_sigma(comfy_table c, float t)
{
    float u = (t - (float)(c.skip - 1)) / (float)c.skip;
    if (!(u > 0.0f))
        u = 0.0f;
    if (u > (float)(c.n - 1))
        u = (float)(c.n - 1);
    int lo = (int)floorf(u), hi = (int)ceilf(u);
    float w = u - truncf(u);
    return expf((1.0f - w) * c.logs[lo] + w * c.logs[hi]);
}

float sched_timestep(const sdg_noise_schedule *s, sched_timing timing, float sigma)
{
    if (timing == SCHED_TIMING_KDIFF)
        return sched_sigma_to_t(s, sigma);
    comfy_table c = comfy_table_of(s, timing);
    return (float)(c.skip * comfy_argmin(c, sigma) + c.skip - 1);
}

float sched_sigma_max(const sdg_noise_schedule *s, sched_timing timing)
{
    return timing == SCHED_TIMING_KDIFF ? s->sigmas[SCHED_T - 1] : s->comfy_sigmas[SCHED_T - 1];
}

// ---------------------------------------------------------------------------------------------
// Step schedules

// Table indices 1, 1 + c, 1 + 2c, ... below len (c = len / steps, at least 1), from the largest
// down: CompVis make_ddim_timesteps("uniform") (range(0, 1000, c) + 1) and ComfyUI's
// ddim_scheduler alike. Fills idx[] and returns the count, capped to the steps+1 largest (see
// sampler.h).
static int ddim_indices(int len, int steps, int *idx)
{
    int c = len / steps > 1 ? len / steps : 1;
    int count = 0;
    while (count * c + 1 <= len - 1)
        count++;
    int m = count < steps + 1 ? count : steps + 1;
    for (int i = 0; i < m; i++)
        idx[i] = (count - 1 - i) * c + 1;
    return m;
}

// diffusers set_timesteps, timestep_spacing "trailing":
//   step_ratio = 1000 / steps
//   timesteps = np.round(np.arange(1000, 0, -step_ratio)).astype(np.float32) - 1
// in double, np.round halving to even (rint in the default rounding mode); arange has
// ceil((0 - 1000) / -step_ratio) elements, element k = 1000 + k * -step_ratio.
static int trailing_timesteps(int steps, int *t)
{
    double ratio = (double)SCHED_T / (double)steps;
    int len = (int)ceil((0.0 - (double)SCHED_T) / -ratio);
    if (len > steps + 1)
        len = steps + 1;   // cannot happen for steps <= 1000; keeps the buffer contract
    int m = 0;
    for (int k = 0; k < len; k++) {
        int v = (int)rint((double)SCHED_T + (double)k * -ratio) - 1;
        if (v >= 0)
            t[m++] = v;
    }
    return m;
}

int sched_build(const sdg_noise_schedule *s, sdg_sampler sampler, sdg_schedule kind,
                sched_timing timing, int steps, float *sigmas, float *ts)
{
    if (steps < 1 || steps > SCHED_T || (int)sampler < 0 || sampler >= SDG_SAMPLER_COUNT ||
        (int)kind < 0 || kind >= SDG_SCHEDULE_COUNT || (int)timing < 0 ||
        timing > SCHED_TIMING_LCM)
        return 0;
    comfy_table c = comfy_table_of(s, timing);
    int idx[SCHED_T + 1];
    int n = steps;

    if (sampler == SDG_SAMPLER_DDIM) {
        n = ddim_indices(SCHED_T, steps, idx);
        for (int i = 0; i < n; i++) {
            sigmas[i] = s->sigmas[idx[i]];
            ts[i] = timing == SCHED_TIMING_LCM ? sched_timestep(s, timing, sigmas[i])
                                               : (float)idx[i];
        }
        sigmas[n] = s->sigmas[0];
        return n;
    }

    switch (kind) {
    case SDG_SCHEDULE_SIMPLE: {
        // ComfyUI simple_scheduler: ss = len(sigmas) / steps;
        //   sigs = [sigmas[-(1 + int(x * ss))] for x in range(steps)] + [0]
        // = sgm's LegacyDDPMDiscretization (t = 999, 749, 499, 249 for 4 steps).
        double ss = (double)c.n / (double)steps;
        for (int i = 0; i < steps; i++)
            sigmas[i] = comfy_entry(s, c, c.n - 1 - (int)((double)i * ss));
        break;
    }
    case SDG_SCHEDULE_SGM_UNIFORM: {
        // ComfyUI normal_scheduler(sgm=True): start = timestep(sigma_max), end =
        // timestep(sigma_min), timesteps = torch.linspace(start, end, steps + 1)[:-1] (float32),
        // sigma(t) each.
        float t0 = sched_timestep(s, timing, comfy_entry(s, c, c.n - 1));
        float t1 = sched_timestep(s, timing, comfy_entry(s, c, 0));
        for (int i = 0; i < steps; i++)
            sigmas[i] = comfy_sigma(c, linspace_f32(t0, t1, steps + 1, i));
        break;
    }
    case SDG_SCHEDULE_DDIM_UNIFORM:
        // ComfyUI ddim_scheduler: sigs = [0] + sigmas[1::ss], reversed (its variant for tables
        // whose sigmas[1] is ~0 does not arise for these schedules).
        n = ddim_indices(c.n, steps, idx);
        for (int i = 0; i < n; i++)
            sigmas[i] = comfy_entry(s, c, idx[i]);
        break;
    case SDG_SCHEDULE_TRAILING:
        // diffusers: sigma = the table's at each integer timestep (np.interp at integers), then
        // 0 (final_sigmas_type "zero").
        n = trailing_timesteps(steps, idx);
        for (int i = 0; i < n; i++)
            sigmas[i] = s->comfy_sigmas[idx[i]];
        break;
    case SDG_SCHEDULE_EXPONENTIAL: {
        // k-diffusion get_sigmas_exponential: torch.linspace(math.log(sigma_max),
        // math.log(sigma_min), n).exp(): the logs in double, rounded to float32 for the float32
        // linspace, then exp in float32.
        float lmax = (float)log((double)s->sigmas[SCHED_T - 1]);
        float lmin = (float)log((double)s->sigmas[0]);
        for (int i = 0; i < steps; i++)
            sigmas[i] = expf(linspace_f32(lmax, lmin, steps, i));
        break;
    }
    case SDG_SCHEDULE_KARRAS: {
        // Karras et al. 2022 eq. (5), k-diffusion get_sigmas_karras, in the reference's precisions:
        // sigma_min/max are Python floats, so the 1/rho roots and their difference are double;
        // the ramp is a float32 tensor, so the lerp and the power are float32. Computing it all in
        // double differs from the reference by 1-2 ulp; this matches it bit for bit.
        const double rho = 7.0;
        double min_inv = pow((double)s->sigmas[0], 1.0 / rho);
        double max_inv = pow((double)s->sigmas[SCHED_T - 1], 1.0 / rho);
        float base = (float)max_inv, span = (float)(min_inv - max_inv);
        for (int i = 0; i < steps; i++) {
            float ramp = linspace_f32(0.0f, 1.0f, steps, i);
            sigmas[i] = powf(base + ramp * span, (float)rho);
        }
        break;
    }
    default:
        // CompVisDenoiser.get_sigmas(n): t = linspace(999, 0, n), sigma = t_to_sigma(t).
        for (int i = 0; i < steps; i++)
            sigmas[i] = sched_t_to_sigma(s, linspace_f32((float)(SCHED_T - 1), 0.0f, steps, i));
        break;
    }
    sigmas[n] = 0.0f;
    for (int i = 0; i < n; i++)
        ts[i] = sched_timestep(s, timing, sigmas[i]);
    return n;
}
