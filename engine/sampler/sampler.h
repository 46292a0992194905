/*
 * sampler.h - the sampling room: the SD noise schedule, the step schedules (k-diffusion default,
 * Karras, CompVis DDIM), the sampler loops (euler, euler ancestral, heun, dpm++ 2m, lms, ddim)
 * and the engine's seeded noise generator (Philox4x32-10 + Box-Muller).
 *
 * Not here: the model. A sampler sees the network only through the `denoise` hook (which does the
 * input scaling, the UNet call and classifier-free guidance), so this room links nothing but
 * common and libm, and is tested by replaying the reference denoised tensors.
 *
 * Space: every sampler works in k-diffusion "sigma space" on a flat float vector x[n]: with
 * a = alphas_cumprod[t] and the DDPM latent x_t, x = x_t / sqrt(a) and sigma = sqrt((1-a)/a), so
 * x = x0 + sigma * eps. The model is asked for denoised = D(x, sigma) = x - sigma * eps(x /
 * sqrt(sigma^2+1), t) (an eps network; the Denoiser section below has v as well). DDIM with eta 0 is, in this space, exactly an Euler step from sigma_t to
 * sigma_prev (x_prev = x0 + sigma_prev * eps), so it runs as Euler on the sigmas of its timesteps.
 *
 * References: k-diffusion @4601bf0 (`k_diffusion/external.py` DiscreteSchedule / CompVisDenoiser,
 * `k_diffusion/sampling.py`), Karras et al. 2022 eq. (5), CompVis/stable-diffusion @21f890f
 * `ldm/models/diffusion/ddim.py` and `ldm/modules/diffusionmodules/util.py` make_ddim_timesteps.
 */
#ifndef SDG_SAMPLER_H
#define SDG_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "../common.h"

// ---------------------------------------------------------------------------------------------
// Denoiser (denoiser.c): what a network predicts and how its output becomes the denoised latent,
// denoised = c_skip x + c_out out, the network's input being c_in x (k-diffusion's get_scalings,
// CompVisDenoiser for eps and CompVisVDenoiser for v, sigma_data = 1).

typedef struct sdg_scalings {
    float c_skip, c_out, c_in;
} sdg_scalings;

// pred is SDG_PREDICTION_EPS or SDG_PREDICTION_V (sdg.h).
sdg_scalings denoiser_scalings(sdg_prediction pred, float sigma);

// ---------------------------------------------------------------------------------------------
// Noise schedule

#define SCHED_T 1000   // training timesteps of every SD family

typedef struct sdg_noise_schedule {
    float alphas_cumprod[1000];   // SD scaled_linear: betas = linspace(sqrt(0.00085), sqrt(0.012),
                                  // 1000)^2 and cumprod(1-betas), both in double, stored as float
    float sigmas[1000];           // sqrt((1-ac)/ac) in float (as CompVisDenoiser), ascending
    float log_sigmas[1000];       // logf(sigmas)
} sdg_noise_schedule;

void sched_init_sd(sdg_noise_schedule *s);

// Rescales the schedule to zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules
// and Sample Steps are Flawed", Algorithm 1) the way ComfyUI does for models trained with it
// (rescale_zero_terminal_snr_sigmas): sqrt(ac) shifted so its last value is 0 and scaled so its
// first is unchanged, squared; the last ac is then set to 4.8973451890853435e-08 (sigma ~4500)
// so that sigmas stay finite. Recomputes sigmas and log_sigmas.
void sched_rescale_zero_snr(sdg_noise_schedule *s);

// k-diffusion DiscreteSchedule.sigma_to_t: linear interpolation in log-sigma between the two
// neighbouring integer timesteps (not rounded); clamps to [0, 999].
float sched_sigma_to_t(const sdg_noise_schedule *s, float sigma);
// DiscreteSchedule.t_to_sigma: exp of the lerp of log_sigmas[floor t], [ceil t] (t in [0, 999]).
float sched_t_to_sigma(const sdg_noise_schedule *s, float t);

// Builds a run: fills sigmas[0..n] (n+1 values, descending) and ts[0..n-1] (the model timestep
// of each step). Buffers must hold steps+2 values. Returns n, the number of steps, or 0 on a bad
// request (steps outside 1..1000, unknown sampler or schedule).
//
// k-samplers: n = steps; sigmas = CompVisDenoiser.get_sigmas(steps) (DEFAULT: t = linspace(999,
// 0, steps), sigma = t_to_sigma(t)) or get_sigmas_karras(steps, sigmas[0], sigmas[999], rho 7)
// (KARRAS), then 0 appended; ts[i] = sched_sigma_to_t(sigmas[i]). Both are computed in the
// reference's own precisions and match k-diffusion's float32 values bit for bit.
//
// EXPONENTIAL (k-diffusion get_sigmas_exponential): exp(linspace(log sigmas[999], log sigmas[0],
// steps)) in float32, then 0; ts as for KARRAS.
//
// SIMPLE (ComfyUI simple_scheduler, sgm LegacyDDPMDiscretization): sigmas[i] = the table's
// sigma at index 999 - int(i * 1000 / steps) (in double), ts[i] = that index, then 0.
//
// DDIM (the schedule kind is ignored): CompVis make_ddim_timesteps("uniform"): c = 1000/steps
// (integer division), timesteps k*c + 1 for k*c < 1000 - 1, visited from the largest down, so
// steps=6 gives 7 steps [997, 831, ..., 1] (the quirk: n can be steps+1). When integer division
// would give more than steps+1 timesteps (e.g. steps=48 gives 50 in CompVis), only the steps+1
// largest are kept; steps=1000 would reach timestep 1000, outside the table, so it gives the 999
// timesteps 999..1. ts[i] = the integer timestep, sigmas[i] = the table sigma at it, and the
// final sigmas[n] = the table's sigmas[0] (CompVis uses alphas_cumprod[0] as the last a_prev).
int sched_build(const sdg_noise_schedule *s, sdg_sampler sampler, sdg_schedule kind, int steps,
                float *sigmas, float *ts);

// ---------------------------------------------------------------------------------------------
// Samplers

typedef struct sampler_hooks {
    // denoised = D(x, sigma) with the model's timestep t; returns SDG_OK or an error (e.g.
    // SDG_ERR_CANCELLED), which stops the run.
    sdg_status (*denoise)(void *user, const float *x, float sigma, float t, float *denoised);
    // Fills out[n] with standard normal noise for ancestral step `step` (0-based, the index of
    // the step that adds it). May be NULL when the sampler is not ancestral.
    void (*noise)(void *user, int step, float *out, size_t n);
    // After each step: step (1..n_steps), x now at sigma_next (may be modified in place, e.g.
    // inpainting blends the known region), denoised of the step's first model call. Returns
    // non-OK to stop (cancel). May be NULL.
    sdg_status (*on_step)(void *user, int step, int n_steps, float *x, float sigma_next,
                          const float *denoised);
    void *user;
} sampler_hooks;

// Floats of work memory sampler_run needs for a vector of n floats (0 for a bad sampler).
size_t sampler_scratch_floats(sdg_sampler sampler, size_t n);

// Runs n_steps steps on x[n] (x starts at the sigmas[0] noise level, in k-diffusion space) over
// sigmas[0..n_steps] and ts[0..n_steps-1] (from sched_build). For Heun the second model call of
// a step uses t = sched_sigma_to_t(s, sigma_next). scratch holds sampler_scratch_floats() floats.
// Allocates nothing. Returns SDG_OK, SDG_ERR_INVALID_ARG (bad arguments, or an ancestral sampler
// without a noise hook) or the first error a hook returned.
//
// Arithmetic is float32 in k-diffusion's order of operations (d = (x - denoised) / sigma, then
// x + d * dt); LMS coefficients are integrated exactly in double.
sdg_status sampler_run(sdg_sampler sampler, const sdg_noise_schedule *s, const float *sigmas,
                       const float *ts, int n_steps, float *x, size_t n, float *scratch,
                       const sampler_hooks *hooks);

// ---------------------------------------------------------------------------------------------
// Noise generator
//
// Philox4x32-10 (Salmon, Moraes, Dror, Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3";
// the Random123 philox4x32 with 10 rounds):
//   round:  (hi0, lo0) = 0xD2511F53 * c0, (hi1, lo1) = 0xCD9E8D57 * c2  (32x32 -> 64-bit products)
//           c = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)
//   10 rounds; between rounds the key is bumped: k0 += 0x9E3779B9, k1 += 0xBB67AE85 (mod 2^32).
// Keyed by the seed: k0 = low 32 bits, k1 = high 32 bits.
// Element i of stream `stream` (i counts from the stream's start; `offset` is the index of out[0]):
//   block b = i / 4, counter = (b low 32, b high 32, stream low 32, stream high 32);
//   the block's outputs w0..w3 become uniforms u_k = (w_k + 0.5) / 2^32 in (0,1) (double);
//   Box-Muller on the pairs (u0, u1) and (u2, u3): r = sqrt(-2 ln u_even), a = 2 pi u_odd,
//   element 4b+0 = r0 cos a0, 4b+1 = r0 sin a0, 4b+2 = r1 cos a1, 4b+3 = r1 sin a1,
//   computed in double and rounded to float.
// So element i depends only on (seed, stream, i): the same seed gives the same noise on any
// machine and any thread count (libm differences in double are far below float rounding).
void rng_normal_fill(uint64_t seed, uint64_t stream, uint64_t offset, float *out, size_t n);

// The raw generator, for the known-answer tests: ctr and key in Random123's word order.
void rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

#endif // SDG_SAMPLER_H
