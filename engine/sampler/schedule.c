/*
 * schedule.c - the SD noise schedule and the per-run step schedules (see sampler.h).
 *
 * Not here: the sampler loops (samplers.c) and the noise generator (rng.c).
 *
 * The k-diffusion parts follow DiscreteSchedule / CompVisDenoiser (k_diffusion/external.py
 * @4601bf0) operation by operation in float32, the way the reference computes them, so that the
 * fractional timesteps fed to the UNet match the goldens to float rounding.
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
    }
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
    const int n = SCHED_T;
    double r[SCHED_T];
    for (int i = 0; i < n; i++)
        r[i] = sqrt(1.0 / ((double)s->sigmas[i] * s->sigmas[i] + 1.0));
    double r0 = r[0], rt = r[n - 1];
    for (int i = 0; i < n; i++) {
        double v = (r[i] - rt) * (r0 / (r0 - rt));
        s->alphas_cumprod[i] = (float)(v * v);
    }
    s->alphas_cumprod[n - 1] = 4.8973451890853435e-08f;
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

// CompVis make_ddim_timesteps("uniform", steps, 1000): range(0, 1000, 1000 // steps) + 1. Fills
// ts[] from the largest timestep down; see sampler.h for the cap at steps+1.
static int ddim_timesteps(int steps, float *ts)
{
    int c = SCHED_T / steps;
    int count = 0;
    while (count * c + 1 <= SCHED_T - 1)
        count++;
    int m = count < steps + 1 ? count : steps + 1;
    for (int i = 0; i < m; i++)
        ts[i] = (float)((count - 1 - i) * c + 1);
    return m;
}

int sched_build(const sdg_noise_schedule *s, sdg_sampler sampler, sdg_schedule kind, int steps,
                float *sigmas, float *ts)
{
    if (steps < 1 || steps > SCHED_T || (int)sampler < 0 || sampler >= SDG_SAMPLER_COUNT ||
        (int)kind < 0 || kind >= SDG_SCHEDULE_COUNT)
        return 0;

    if (sampler == SDG_SAMPLER_DDIM) {
        int n = ddim_timesteps(steps, ts);
        for (int i = 0; i < n; i++)
            sigmas[i] = s->sigmas[(int)ts[i]];
        sigmas[n] = s->sigmas[0];
        return n;
    }

    if (kind == SDG_SCHEDULE_SIMPLE) {
        // ComfyUI simple_scheduler: ss = len(sigmas) / steps;
        //   sigs = [sigmas[-(1 + int(x * ss))] for x in range(steps)] + [0]
        // = sgm's LegacyDDPMDiscretization (t = 999, 749, 499, 249 for 4 steps); the UNet gets
        // the table index, an integer.
        double ss = (double)SCHED_T / (double)steps;
        for (int i = 0; i < steps; i++) {
            int idx = SCHED_T - 1 - (int)((double)i * ss);
            sigmas[i] = s->sigmas[idx];
            ts[i] = (float)idx;
        }
        sigmas[steps] = 0.0f;
        return steps;
    }
    if (kind == SDG_SCHEDULE_EXPONENTIAL) {
        // k-diffusion get_sigmas_exponential: torch.linspace(math.log(sigma_max),
        // math.log(sigma_min), n).exp(): the logs in double, rounded to float32 for the float32
        // linspace, then exp in float32.
        float lmax = (float)log((double)s->sigmas[SCHED_T - 1]);
        float lmin = (float)log((double)s->sigmas[0]);
        for (int i = 0; i < steps; i++)
            sigmas[i] = expf(linspace_f32(lmax, lmin, steps, i));
    } else if (kind == SDG_SCHEDULE_KARRAS) {
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
    } else {
        // CompVisDenoiser.get_sigmas(n): t = linspace(999, 0, n), sigma = t_to_sigma(t).
        for (int i = 0; i < steps; i++)
            sigmas[i] = sched_t_to_sigma(s, linspace_f32((float)(SCHED_T - 1), 0.0f, steps, i));
    }
    sigmas[steps] = 0.0f;
    for (int i = 0; i < steps; i++)
        ts[i] = sched_sigma_to_t(s, sigmas[i]);
    return steps;
}
