/*
 * unet.h - the Stable Diffusion denoising UNet (CompVis ldm `UNetModel` with a
 * SpatialTransformer), loaded from a single-file checkpoint and run on the CPU.
 *
 * The architecture is read from the tensor shapes under the prefix (normally
 * "model.diffusion_model."): levels, channel multipliers, res blocks per level, where the
 * transformers are, their depth, the context width, conv (SD1) or linear (SD2) proj_in/out, and
 * 4 or 9 input channels (inpainting). The forward pass allocates every activation from the
 * sdg_exec arena and supports dry runs (see common.h).
 *
 * Not here: the noise schedule, CFG, or the inpainting channel concatenation (the pipeline
 * builds the 9-channel input); SDXL's label embedding (rejected as unsupported).
 */
#ifndef SDG_UNET_H
#define SDG_UNET_H

#include <stdbool.h>

#include "../common.h"
#include "../loader/weights.h"

typedef struct unet_config {
    int in_ch, out_ch, model_ch, n_levels, ch_mult[8], num_res_blocks;
    bool attn[8];          // attention at level i
    bool attn_mid;
    int n_heads;           // SD1: 8 (not in the shapes); 0 = channels/64 heads per transformer
                           // (SD2's num_head_channels 64, chosen when linear_proj)
    int context_dim, transformer_depth, time_embed_dim;
    bool linear_proj;      // proj_in/out are Linear (SD2) rather than 1x1 conv (SD1)
} unet_config;

typedef struct unet_model unet_model;

// Binds the UNet's tensors under prefix ("model.diffusion_model.") and reads the architecture
// from their shapes. Errors are recorded in wb (sticky, naming the tensor); returns NULL on
// error. The model borrows the weights: wb (and its file) must outlive it.
unet_model *unet_load(sdg_weights *wb, const char *prefix);
void unet_free(unet_model *m);
const unet_config *unet_get_config(const unet_model *m);

// x [n, in_ch, h, w], t [n] (float timesteps, may be fractional), context [n, n_ctx,
// context_dim] (n_ctx = 77 * windows) -> out [n, out_ch, h, w]. Any h, w >= 1: when a
// downsampled size is odd, the upsampling path resizes to the skip's size (nearest x2, then
// crop, as diffusers' forward_upsample_size does). out must not alias x or context.
// Activations come from ex's arena; the allocation sequence depends only on the shapes, so a
// dry run measures the peak exactly. In a dry run x, t, context and out may be NULL.
void unet_forward(sdg_exec *ex, const unet_model *m, const float *x, int n, int h, int w,
                  const float *t, const float *context, int n_ctx, float *out);

// Debugging: the same forward pass, calling fn after the time embedding ("emb", [n, c, 1, 1])
// and after each block ("input_blocks.3", "middle_block", "output_blocks.0", ...) with its
// output [n, c, h, w]. fn is not called in a dry run; data is valid only during the call.
typedef void (*unet_debug_fn)(const char *name, const float *data, int n, int c, int h, int w,
                              void *user);
void unet_forward_debug(sdg_exec *ex, const unet_model *m, const float *x, int n, int h, int w,
                        const float *t, const float *context, int n_ctx, float *out,
                        unet_debug_fn fn, void *user);

#endif // SDG_UNET_H
