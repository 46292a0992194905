/*
 * denoiser.c - the scalings that turn a network's prediction into the denoised latent (see
 * sampler.h). With x = x0 + sigma eps in sigma space, the network sees the DDPM latent
 * x_t = c_in x, c_in = 1/sqrt(sigma^2+1), and:
 *   eps: denoised = x - sigma eps                                 (c_skip 1, c_out -sigma)
 *   v:   denoised = x/(sigma^2+1) - sigma/sqrt(sigma^2+1) v       (both exact for the ideal v)
 * and, for latent-consistency-distilled models, the LCM boundary condition on top of either.
 * ref: k-diffusion @4601bf0 k_diffusion/external.py (CompVisDenoiser, CompVisVDenoiser);
 * ComfyUI @3cd7b32f comfy/model_sampling.py (LCM.calculate_denoised).
 * Not here: the schedule (schedule.c) or the sampler loops (samplers.c).
 */
#include <math.h>

#include "sampler.h"

sdg_scalings denoiser_scalings(sdg_prediction pred, float sigma)
{
    float s2 = sigma * sigma + 1.0f;   // sigma^2 + sigma_data^2, sigma_data = 1
    float c_in = 1.0f / sqrtf(s2);
    if (pred == SDG_PREDICTION_V)
        return (sdg_scalings){1.0f / s2, -sigma * c_in, c_in};
    return (sdg_scalings){1.0f, -sigma, c_in};
}

sdg_scalings denoiser_lcm(sdg_scalings base, float t)
{
    // LCM: x0 = base denoised; T = timestep * 10 (timestep_scaling), sigma_data = 0.5:
    //   c_skip = sigma_data^2 / (T^2 + sigma_data^2), c_out = T / (T^2 + sigma_data^2) ** 0.5,
    //   denoised = c_out * x0 + c_skip * x
    // so near t = 0 the model's output fades out and x passes through (the consistency
    // function's boundary condition f(x, 0) = x). ComfyUI applies it to eps models; composing
    // with base's scalings applies it to v models the same way. Folding it into one c_skip and
    // c_out rounds differently from x0 first, by an ulp or so of x.
    float T = t * 10.0f;
    float d = T * T + 0.25f;
    float skip = 0.25f / d, out = T / sqrtf(d);
    return (sdg_scalings){out * base.c_skip + skip, out * base.c_out, base.c_in};
}
