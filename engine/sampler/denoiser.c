/*
 * denoiser.c - the scalings that turn a network's prediction into the denoised latent (see
 * sampler.h). With x = x0 + sigma eps in sigma space, the network sees the DDPM latent
 * x_t = c_in x, c_in = 1/sqrt(sigma^2+1), and:
 *   eps: denoised = x - sigma eps                                 (c_skip 1, c_out -sigma)
 *   v:   denoised = x/(sigma^2+1) - sigma/sqrt(sigma^2+1) v       (both exact for the ideal v)
 * ref: k-diffusion @4601bf0 k_diffusion/external.py (CompVisDenoiser, CompVisVDenoiser).
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
