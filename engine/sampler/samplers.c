/*
 * samplers.c - the sampler loops of k-diffusion (sampling.py @4601bf0) over a flat float vector:
 * euler, euler ancestral (eta 1), heun, dpm++ 2m, lms (order 4), dpm++ 2m sde and dpm++ sde (eta
 * 1), DDIM eta 0 run as Euler in sigma space (see sampler.h for why that is exact), and
 * ComfyUI's lcm (comfy/k_diffusion/sampling.py sample_lcm @3cd7b32f).
 *
 * Not here: schedules (schedule.c), the model (behind the denoise hook), noise (behind the noise
 * hook; the engine's generator is in rng.c). Nothing here allocates.
 *
 * The vector arithmetic is float32 in the reference's order of operations (each PyTorch tensor op
 * rounds to float), so replaying the reference denoised tensors reproduces its trajectories to
 * float rounding. Per-step scalars (dt, sigma_up, dpm++ ratios) are float as the reference's 0-dim
 * tensors are; only the LMS coefficients, which the reference integrates with scipy in double,
 * are double.
 */
#include "sampler.h"

#include <math.h>
#include <string.h>

size_t sampler_scratch_floats(sdg_sampler sampler, size_t n)
{
    switch (sampler) {
    case SDG_SAMPLER_EULER:
    case SDG_SAMPLER_DDIM: return n;          // denoised
    case SDG_SAMPLER_EULER_A: return 2 * n;   // denoised, noise
    case SDG_SAMPLER_HEUN: return 3 * n;      // denoised, x2, denoised2
    case SDG_SAMPLER_DPMPP_2M: return 2 * n;  // denoised, old denoised
    case SDG_SAMPLER_LMS: return 5 * n;       // denoised, 4 derivatives
    case SDG_SAMPLER_LCM: return 2 * n;       // denoised, noise
    case SDG_SAMPLER_DPMPP_2M_SDE: return 3 * n;   // denoised, old denoised, noise
    case SDG_SAMPLER_DPMPP_SDE: return 4 * n; // denoised, x2, denoised2, noise
    default: return 0;
    }
}

// ---------------------------------------------------------------------------------------------
// Steps

// x += (x - denoised) / sigma * dt, i.e. to_d() then x + d * dt.
static void euler_update(float *x, const float *den, size_t n, float sigma, float dt)
{
    for (size_t j = 0; j < n; j++) {
        float d = (x[j] - den[j]) / sigma;
        x[j] = x[j] + d * dt;
    }
}

// k-diffusion get_ancestral_step(sigma_from, sigma_to, eta 1): the part of a step from sg to sn
// that fresh noise replaces (up) and the deterministic part left (down), float32 like the
// reference's 0-dim tensors.
static void ancestral_step(float sg, float sn, float *down, float *up)
{
    float u = sqrtf(sn * sn * (sg * sg - sn * sn) / (sg * sg));
    if (!(u <= sn))
        u = sn;
    *up = u;
    *down = sqrtf(sn * sn - u * u);
}

// The Lagrange basis polynomial j of the nodes t[i], t[i-1], .., t[i-order+1] integrated from
// t[i] to t[i+1] (k-diffusion linear_multistep_coeff). The integrand has degree order-1 <= 3,
// so 4-point Gauss-Legendre (exact to degree 7) gives the integral exactly, in double.
static double lms_coeff(int order, const float *t, int i, int j)
{
    static const double node[4] = {-0.86113631159405257522, -0.33998104358485626480,
                                   0.33998104358485626480, 0.86113631159405257522};
    static const double weight[4] = {0.34785484513745385737, 0.65214515486254614263,
                                     0.65214515486254614263, 0.34785484513745385737};
    double a = (double)t[i], b = (double)t[i + 1];
    double half = 0.5 * (b - a), mid = 0.5 * (a + b);
    double sum = 0.0;
    for (int q = 0; q < 4; q++) {
        double tau = mid + half * node[q];
        double prod = 1.0;
        for (int k = 0; k < order; k++) {
            if (k == j)
                continue;
            prod *= (tau - (double)t[i - k]) / ((double)t[i - j] - (double)t[i - k]);
        }
        sum += weight[q] * prod;
    }
    return sum * half;
}

#define LMS_ORDER 4

sdg_status sampler_run(sdg_sampler sampler, const sdg_noise_schedule *s, sched_timing timing,
                       const float *sigmas, const float *ts, int n_steps, float *x, size_t n,
                       float *scratch, const sampler_hooks *hooks)
{
    if ((int)sampler < 0 || sampler >= SDG_SAMPLER_COUNT || !sigmas || !ts || n_steps < 1 ||
        !x || !scratch || !hooks || !hooks->denoise)
        return SDG_ERR_INVALID_ARG;
    bool stochastic = sampler == SDG_SAMPLER_EULER_A || sampler == SDG_SAMPLER_LCM ||
                      sampler == SDG_SAMPLER_DPMPP_2M_SDE || sampler == SDG_SAMPLER_DPMPP_SDE;
    if (stochastic && !hooks->noise)
        return SDG_ERR_INVALID_ARG;
    if ((sampler == SDG_SAMPLER_HEUN || sampler == SDG_SAMPLER_DPMPP_SDE) && !s)
        return SDG_ERR_INVALID_ARG;

    void *user = hooks->user;
    float *den = scratch;
    float *old = scratch + n;   // dpm++ 2m (sde): the previous step's denoised
    float h_last = 0.0f;        // dpm++ 2m sde: the previous step's h
    sdg_status st;

    for (int i = 0; i < n_steps; i++) {
        float sg = sigmas[i], sn = sigmas[i + 1];
        if ((st = hooks->denoise(user, x, sg, ts[i], den)) != SDG_OK)
            return st;

        switch (sampler) {
        case SDG_SAMPLER_EULER:
        case SDG_SAMPLER_DDIM:
            euler_update(x, den, n, sg, sn - sg);
            break;

        case SDG_SAMPLER_EULER_A: {
            float down, up;
            ancestral_step(sg, sn, &down, &up);
            euler_update(x, den, n, sg, down - sg);
            if (sn > 0.0f) {
                float *noise = scratch + n;
                hooks->noise(user, i, noise, n);
                for (size_t j = 0; j < n; j++)
                    x[j] = x[j] + noise[j] * up;
            }
            break;
        }

        case SDG_SAMPLER_HEUN: {
            float dt = sn - sg;
            if (sn == 0.0f) {
                euler_update(x, den, n, sg, dt);
                break;
            }
            float *x2 = scratch + n, *den2 = scratch + 2 * n;
            for (size_t j = 0; j < n; j++)
                x2[j] = x[j] + (x[j] - den[j]) / sg * dt;
            if ((st = hooks->denoise(user, x2, sn, sched_timestep(s, timing, sn), den2)) != SDG_OK)
                return st;
            for (size_t j = 0; j < n; j++) {
                float d = (x[j] - den[j]) / sg;
                float d2 = (x2[j] - den2[j]) / sn;
                x[j] = x[j] + (d + d2) / 2.0f * dt;
            }
            break;
        }

        case SDG_SAMPLER_DPMPP_2M: {
            // t = -log(sigma); x = (sigma_next/sigma) x - expm1(-h) D, where sigma_next/sigma is
            // taken as exp(-t_next)/exp(-t) like the reference (0 when sigma_next = 0).
            float t = -logf(sg), tn = -logf(sn);
            float h = tn - t;
            float ratio = expf(-tn) / expf(-t);
            float em = expm1f(-h);
            if (i == 0 || sn == 0.0f) {
                for (size_t j = 0; j < n; j++)
                    x[j] = ratio * x[j] - em * den[j];
            } else {
                float h_last = t - (-logf(sigmas[i - 1]));
                float r = h_last / h;
                float c2 = 1.0f / (2.0f * r);
                float c1 = 1.0f + c2;
                for (size_t j = 0; j < n; j++) {
                    float dd = c1 * den[j] - c2 * old[j];
                    x[j] = ratio * x[j] - em * dd;
                }
            }
            // this step's denoised becomes the old one; swap the buffers rather than copy
            float *tmp = old;
            old = den;
            den = tmp;
            break;
        }

        case SDG_SAMPLER_LMS: {
            float *ds = scratch + n;   // ring of LMS_ORDER derivatives, step i in slot i % order
            float *d = ds + (size_t)(i % LMS_ORDER) * n;
            for (size_t j = 0; j < n; j++)
                d[j] = (x[j] - den[j]) / sg;
            int order = i + 1 < LMS_ORDER ? i + 1 : LMS_ORDER;
            float c[LMS_ORDER];
            const float *dj[LMS_ORDER];
            for (int k = 0; k < order; k++) {
                c[k] = (float)lms_coeff(order, sigmas, i, k);
                dj[k] = ds + (size_t)((i - k) % LMS_ORDER) * n;   // k steps back
            }
            for (size_t j = 0; j < n; j++) {
                float acc = c[0] * dj[0][j];
                for (int k = 1; k < order; k++)
                    acc = acc + c[k] * dj[k][j];
                x[j] = x[j] + acc;
            }
            break;
        }

        case SDG_SAMPLER_LCM: {
            // sample_lcm: x = denoised, then noise_scaling(sigma_next, noise, x) = noise *
            // sigma_next + x while sigma_next > 0.
            if (sn == 0.0f) {
                memcpy(x, den, n * sizeof(float));
                break;
            }
            float *noise = scratch + n;
            hooks->noise(user, i, noise, n);
            for (size_t j = 0; j < n; j++)
                x[j] = noise[j] * sn + den[j];
            break;
        }

        case SDG_SAMPLER_DPMPP_2M_SDE: {
            if (sn == 0.0f) {
                // the denoising step
                memcpy(x, den, n * sizeof(float));
            } else {
                // t, s = -log(sigma), -log(sigma_next); h = s - t; eta_h = h (eta 1):
                //   x = s_next / s * exp(-eta_h) * x + -expm1(-h - eta_h) * denoised
                //   midpoint: x += 0.5 * -expm1(-h - eta_h) * (1 / r) * (denoised - old)
                //   x += noise * s_next * sqrt(-expm1(-2 eta_h))
                float t = -logf(sg), tn = -logf(sn);
                float h = tn - t;
                float a = sn / sg * expf(-h);
                float b = -expm1f(-h - h);
                for (size_t j = 0; j < n; j++)
                    x[j] = a * x[j] + b * den[j];
                if (i > 0) {
                    float r = h_last / h;
                    float c = 0.5f * b * (1.0f / r);
                    for (size_t j = 0; j < n; j++)
                        x[j] = x[j] + c * (den[j] - old[j]);
                }
                float *noise = scratch + 2 * n;
                float q = sqrtf(-expm1f(-2.0f * h));
                hooks->noise(user, i, noise, n);
                for (size_t j = 0; j < n; j++)
                    x[j] = x[j] + noise[j] * sn * q;
                h_last = h;
            }
            float *tmp = old;
            old = den;
            den = tmp;
            break;
        }

        case SDG_SAMPLER_DPMPP_SDE: {
            if (sn == 0.0f) {
                euler_update(x, den, n, sg, sn - sg);
                break;
            }
            // t = -log(sigma); s = t + h r (r = 1/2), fac = 1/(2r) = 1; sigma_fn(t) = exp(-t)
            // taken as the reference does (not sigma itself).
            float t = -logf(sg), tn = -logf(sn);
            float h = tn - t;
            float sm = t + h * 0.5f;
            float sig_t = expf(-t), sig_s = expf(-sm), sig_tn = expf(-tn);
            float *x2 = scratch + n, *den2 = scratch + 2 * n, *noise = scratch + 3 * n;
            // step 1: ancestral DPM-Solver++(1) to s
            float down, up;
            ancestral_step(sig_t, sig_s, &down, &up);
            float s_ = -logf(down);
            float ratio = expf(-s_) / sig_t, em = expm1f(t - s_);
            hooks->noise(user, 2 * i, noise, n);
            for (size_t j = 0; j < n; j++) {
                float v = ratio * x[j] - em * den[j];
                x2[j] = v + noise[j] * up;
            }
            if ((st = hooks->denoise(user, x2, sig_s, sched_timestep(s, timing, sig_s), den2)) !=
                SDG_OK)
                return st;
            // step 2: from t to t_next on (1 - fac) denoised + fac denoised_2 = denoised_2
            ancestral_step(sig_t, sig_tn, &down, &up);
            float tn_ = -logf(down);
            ratio = expf(-tn_) / sig_t;
            em = expm1f(t - tn_);
            hooks->noise(user, 2 * i + 1, noise, n);
            for (size_t j = 0; j < n; j++) {
                float v = ratio * x[j] - em * den2[j];
                x[j] = v + noise[j] * up;
            }
            break;
        }

        default:
            return SDG_ERR_INVALID_ARG;
        }

        // dpm++ 2m and 2m sde swapped: this step's denoised is now in `old`
        const float *step_den =
            sampler == SDG_SAMPLER_DPMPP_2M || sampler == SDG_SAMPLER_DPMPP_2M_SDE ? old : den;
        if (hooks->on_step && (st = hooks->on_step(user, i + 1, n_steps, x, sn, step_den)) != SDG_OK)
            return st;
    }
    return SDG_OK;
}
