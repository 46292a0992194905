/*
 * sampler.h - the sampling room: the SD noise schedule, the step schedules (k-diffusion default,
 * Karras, exponential; ComfyUI simple, sgm_uniform, ddim_uniform; diffusers trailing; CompVis
 * DDIM), the model timesteps (k-diffusion's fractional, ComfyUI's integer, LCM-distilled), the
 * sampler loops (euler, euler ancestral, heun, dpm++ 2m, lms, ddim, lcm, dpm++ 2m sde, dpm++ sde)
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
 * `ldm/models/diffusion/ddim.py` and `ldm/modules/diffusionmodules/util.py` make_ddim_timesteps,
 * ComfyUI @3cd7b32f (`comfy/samplers.py` calculate_sigmas, `comfy/model_sampling.py`
 * ModelSamplingDiscrete[Distilled] and LCM, `comfy/k_diffusion/sampling.py` sample_lcm),
 * diffusers (`schedulers/scheduling_euler_discrete.py` and `scheduling_ddim.py` set_timesteps).
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

// The LCM boundary condition on top of a prediction's scalings (ComfyUI model_sampling.py LCM, the
// "ModelSamplingDiscrete sampling=lcm" node, for latent-consistency-distilled models): with
// T = 10 t (t the model timestep), c_skip = 0.25/(T^2 + 0.25), c_out = T/sqrt(T^2 + 0.25)
// (sigma_data 0.5), denoised = c_out D + c_skip x, D being base's denoised.
sdg_scalings denoiser_lcm(sdg_scalings base, float t);

// ---------------------------------------------------------------------------------------------
// Noise schedule

#define SCHED_T 1000   // training timesteps of every SD family

typedef struct sdg_noise_schedule {
    float alphas_cumprod[1000];   // SD scaled_linear: betas = linspace(sqrt(0.00085), sqrt(0.012),
                                  // 1000)^2 and cumprod(1-betas), both in double, stored as float
    float sigmas[1000];           // sqrt((1-ac)/ac) in float (as CompVisDenoiser), ascending
    float log_sigmas[1000];       // logf(sigmas)
    // ComfyUI's ModelSamplingDiscrete table: sqrt((1-ac)/ac) with ac and the root in double,
    // rounded to float, and its log taken in double too (set_sigmas: sigmas.log().float()).
    // Differs from sigmas by up to 1.3e-5 relative at small t; the integer timesteps a ComfyUI
    // run feeds the UNet are nearest-in-log entries of this table, so it must be ComfyUI's own.
    float comfy_sigmas[1000];
    float comfy_log_sigmas[1000];
    // ModelSamplingDiscreteDistilled (LCM): the 50 entries comfy_sigmas[19 + 20 j], whose logs
    // ComfyUI takes in float32 (set_sigmas on a float32 tensor).
    float lcm_log_sigmas[50];
} sdg_noise_schedule;

void sched_init_sd(sdg_noise_schedule *s);

// Rescales the schedule to zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules
// and Sample Steps are Flawed", Algorithm 1) the way ComfyUI does for models trained with it
// (rescale_zero_terminal_snr_sigmas): sqrt(ac) shifted so its last value is 0 and scaled so its
// first is unchanged, squared; the last ac is then set to 4.8973451890853435e-08 (sigma ~4500)
// so that sigmas stay finite. Recomputes sigmas and log_sigmas.
void sched_rescale_zero_snr(sdg_noise_schedule *s);

// How a run turns a sigma into the UNet's timestep (the rule is sdg.h's, "Timesteps"):
typedef enum sched_timing {
    SCHED_TIMING_KDIFF = 0,   // k-diffusion: fractional t interpolated in log sigma (A1111 too)
    SCHED_TIMING_COMFY,       // ComfyUI ModelSamplingDiscrete: the integer t of the table entry
                              // nearest in log (comfy_sigmas)
    SCHED_TIMING_LCM,         // ComfyUI ModelSamplingDiscreteDistilled: 20 j + 19 for the entry j
                              // of the 50-entry table nearest in log; scalings denoiser_lcm
} sched_timing;

// The timing of a run: LCM for the LCM model sampling; else COMFY for ComfyUI's and diffusers'
// integer-timestep schedules (simple, sgm_uniform, ddim_uniform, trailing) and the lcm sampler;
// else KDIFF (the ddim sampler keeps CompVis' integer timesteps under KDIFF).
sched_timing sched_timing_of(sdg_sampler sampler, sdg_schedule kind, sdg_model_sampling ms);

// The model timestep of sigma under a timing (KDIFF: sched_sigma_to_t).
float sched_timestep(const sdg_noise_schedule *s, sched_timing timing, float sigma);

// The largest sigma of a timing's table (ComfyUI's sigma_max; KDIFF: sigmas[999]).
float sched_sigma_max(const sdg_noise_schedule *s, sched_timing timing);

// k-diffusion DiscreteSchedule.sigma_to_t: linear interpolation in log-sigma between the two
// neighbouring integer timesteps (not rounded); clamps to [0, 999].
float sched_sigma_to_t(const sdg_noise_schedule *s, float sigma);
// DiscreteSchedule.t_to_sigma: exp of the lerp of log_sigmas[floor t], [ceil t] (t in [0, 999]).
float sched_t_to_sigma(const sdg_noise_schedule *s, float t);

// Builds a run: fills sigmas[0..n] (n+1 values, descending) and ts[0..n-1] (the model timestep
// of each step, sched_timestep(timing, sigmas[i])). Buffers must hold steps+2 values. Returns n,
// the number of steps, or 0 on a bad request (steps outside 1..1000, unknown sampler, schedule or
// timing). timing is sched_timing_of(sampler, kind, model sampling).
//
// k-samplers: n = steps; sigmas = CompVisDenoiser.get_sigmas(steps) (DEFAULT: t = linspace(999,
// 0, steps), sigma = t_to_sigma(t)) or get_sigmas_karras(steps, sigmas[0], sigmas[999], rho 7)
// (KARRAS), then 0 appended. Both are computed in the reference's own precisions and match
// k-diffusion's float32 values bit for bit.
//
// EXPONENTIAL (k-diffusion get_sigmas_exponential): exp(linspace(log sigmas[999], log sigmas[0],
// steps)) in float32, then 0.
//
// ComfyUI's schedules (comfy/samplers.py calculate_sigmas) sample the timing's own table
// (COMFY: the 1000 comfy_sigmas, t = index; LCM: the 50 distilled entries, t = 20 index + 19):
// SIMPLE (simple_scheduler, = sgm's LegacyDDPMDiscretization): the entries at index
// last - int(i * len / steps) (in double), then 0.
// SGM_UNIFORM (normal_scheduler(sgm=True)): t = linspace(t(sigma_max), t(sigma_min), steps+1)
// [:-1] in float32, sigma = ModelSampling.sigma(t) (exp of the float32 lerp of the table's logs
// at the fractional index), then 0.
// DDIM_UNIFORM (ddim_scheduler): the entries at index 1, 1 + c, 1 + 2c, ... below len, c =
// len / steps (integer division), from the largest down, then 0; like CompVis DDIM this gives
// steps+1 steps for some counts (6 -> 7), and is capped to the steps+1 largest as DDIM is.
// TRAILING (diffusers timestep_spacing "trailing", EulerDiscreteScheduler / DDIMScheduler
// set_timesteps): t = round(arange(1000, 0, -1000/steps)) - 1 (numpy: double, half to even),
// sigma = comfy_sigmas[t], then 0 (999, 749, 499, 249 for 4 steps). Under the LCM timing its
// sigmas are those of the t, and the UNet gets the distilled table's nearest t.
//
// DDIM (the schedule kind is ignored): CompVis make_ddim_timesteps("uniform"): c = 1000/steps
// (integer division), timesteps k*c + 1 for k*c < 1000 - 1, visited from the largest down, so
// steps=6 gives 7 steps [997, 831, ..., 1] (the quirk: n can be steps+1). When integer division
// would give more than steps+1 timesteps (e.g. steps=48 gives 50 in CompVis), only the steps+1
// largest are kept; steps=1000 would reach timestep 1000, outside the table, so it gives the 999
// timesteps 999..1. ts[i] = the integer timestep, sigmas[i] = the table sigma at it, and the
// final sigmas[n] = the table's sigmas[0] (CompVis uses alphas_cumprod[0] as the last a_prev).
int sched_build(const sdg_noise_schedule *s, sdg_sampler sampler, sdg_schedule kind,
                sched_timing timing, int steps, float *sigmas, float *ts);

// ---------------------------------------------------------------------------------------------
// Samplers

typedef struct sampler_hooks {
    // denoised = D(x, sigma) with the model's timestep t; returns SDG_OK or an error (e.g.
    // SDG_ERR_CANCELLED), which stops the run.
    sdg_status (*denoise)(void *user, const float *x, float sigma, float t, float *denoised);
    // Fills out[n] with standard normal noise for draw `draw` of a stochastic sampler (0-based):
    // euler_a, lcm and dpmpp_2m_sde draw once in step i, draw = i (no draw in a step that ends at
    // sigma 0); dpmpp_sde draws twice, 2i (the half step) and 2i + 1. May be NULL when the
    // sampler adds no noise. (k-diffusion's SDE samplers use a Brownian tree; here every draw is
    // independent normal noise, see sdg.h.)
    void (*noise)(void *user, int draw, float *out, size_t n);
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
// sigmas[0..n_steps] and ts[0..n_steps-1] (from sched_build). Model calls between the schedule's
// sigmas (heun's second, dpmpp_sde's half step) get t = sched_timestep(s, timing, sigma).
// scratch holds sampler_scratch_floats() floats. Allocates nothing. Returns SDG_OK,
// SDG_ERR_INVALID_ARG (bad arguments, or a stochastic sampler without a noise hook) or the first
// error a hook returned.
//
// Arithmetic is float32 in k-diffusion's order of operations (d = (x - denoised) / sigma, then
// x + d * dt); LMS coefficients are integrated exactly in double.
//
// lcm (ComfyUI sample_lcm): x = denoised + noise * sigma_next, and the last step x = denoised.
// dpmpp_2m_sde (k-diffusion sample_dpmpp_2m_sde, midpoint, eta 1): with h = log(s/s_next),
// x = (s_next/s) e^-h x + (1 - e^-2h) D, plus from the second step 0.5 (1 - e^-2h) (D - D_prev)
// h/h_prev, plus noise s_next sqrt(1 - e^-2h); the last step x = D.
// dpmpp_sde (k-diffusion sample_dpmpp_sde, r = 1/2, eta 1): an ancestral DPM-Solver++ half step
// to sqrt(s s_next) with noise, a model call there, then the ancestral DPM-Solver++ step from s
// to s_next on that call's denoised, with noise; the last step is Euler.
sdg_status sampler_run(sdg_sampler sampler, const sdg_noise_schedule *s, sched_timing timing,
                       const float *sigmas, const float *ts, int n_steps, float *x, size_t n,
                       float *scratch, const sampler_hooks *hooks);

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
