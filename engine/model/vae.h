/*
 * vae.h - the Stable Diffusion autoencoder (CompVis ldm `AutoencoderKL`, first_stage_model.*),
 * loaded from a single-file checkpoint and run on the CPU.
 *
 * The architecture is read from the tensor shapes under the prefix: base channels, levels (probing
 * encoder.down.N), channel multipliers, res blocks per level (probing encoder.down.0.block.M),
 * latent channels from quant_conv / post_quant_conv. GroupNorm uses 32 groups, eps 1e-6.
 *
 * Not here: sampling the posterior, the logvar clamp and the latent scale factor (the pipeline's
 * job), per-level attention (attn_resolutions, unused by SD: rejected as unsupported), tiling,
 * diffusers' key names, TAESD.
 */
#ifndef SDG_VAE_H
#define SDG_VAE_H

#include "../common.h"
#include "../loader/weights.h"

typedef struct vae_config {
    int in_ch, out_ch, ch, n_levels, ch_mult[8], num_res_blocks, z_ch;
    int downscale;   // image pixels per latent pixel: 2^(n_levels-1)
} vae_config;

typedef struct vae_model vae_model;

// Binds the autoencoder's tensors under prefix ("first_stage_model.") and reads the architecture
// from their shapes. Errors are recorded in wb (sticky, naming the tensor); returns NULL on error.
// The model borrows the weights: wb (and its file) must outlive it.
vae_model *vae_load(sdg_weights *wb, const char *prefix);
void vae_free(vae_model *m);
const vae_config *vae_get_config(const vae_model *m);

// image [n, in_ch, h, w] in [-1,1], h and w multiples of downscale -> moments
// [n, 2*z_ch, h/ds, w/ds] = quant_conv(encoder(image)): mean in channels 0..z_ch-1, logvar after
// (raw, not clamped). Activations come from ex's arena and are released before returning; the
// allocation sequence depends only on the shapes, so a dry run measures the peak exactly (the
// buffers may be NULL in a dry run).
void vae_encode(sdg_exec *ex, const vae_model *m, const float *image, int n, int h, int w,
                float *moments);

// z [n, z_ch, h, w] (a VAE latent: already divided by the scale factor) -> image
// [n, out_ch, h*ds, w*ds], raw (about [-1,1], not clamped). Arena use as for vae_encode.
void vae_decode(sdg_exec *ex, const vae_model *m, const float *z, int n, int h, int w,
                float *image);

// Tests only (not thread-safe): the float budget of an upsampling band and of an attention score
// chunk (default 4M); tiny values force the banded and chunked paths at golden sizes. 0 restores
// the default.
void vae_set_chunk_floats(size_t floats);

#endif // SDG_VAE_H
