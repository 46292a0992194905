/*
 * unet.h - the Stable Diffusion denoising UNet (CompVis ldm `UNetModel` with a
 * SpatialTransformer), loaded from a single-file checkpoint and run on the CPU.
 *
 * The architecture is read from the tensor shapes under the prefix (normally
 * "model.diffusion_model."): levels, channel multipliers, res blocks per level, where the
 * transformers are, their depth, the context width, conv (SD1) or linear (SD2, SDXL)
 * proj_in/out, 4 or 9 input channels (inpainting), and SDXL's label embedding (the vector y added
 * to the time embedding). The head count is not in the shapes: the caller gives it from the
 * family. The forward pass allocates every activation from the sdg_exec arena and supports dry
 * runs (see common.h).
 *
 * Not here: the noise schedule, CFG, the inpainting channel concatenation, building y (the
 * pipeline does all of these).
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
    int n_heads;           // heads of every transformer (SD1: 8), or 0 when head_dim is set
    int head_dim;          // channels per head (SD2, SDXL: 64), or 0 when n_heads is set
    int context_dim, transformer_depth, time_embed_dim;
    int adm_in;            // width of the vector y (SDXL: 2816), 0 without label_emb
    bool linear_proj;      // proj_in/out are Linear (SD2) rather than 1x1 conv (SD1)
} unet_config;

typedef struct unet_model unet_model;

// Binds the UNet's tensors under prefix ("model.diffusion_model.") and reads the architecture
// from their shapes; exactly one of n_heads (heads per transformer) and head_dim (channels per
// head) is > 0. Errors are recorded in wb (sticky, naming the tensor); returns NULL on
// error. The model borrows the weights: wb (and its file) must outlive it.
unet_model *unet_load(sdg_weights *wb, const char *prefix, int n_heads, int head_dim);
void unet_free(unet_model *m);
const unet_config *unet_get_config(const unet_model *m);

// What the UNet is conditioned on besides the timestep: the cross-attention context [n, n_ctx,
// context_dim] (n_ctx = 77 * windows) and, for a UNet with label_emb, the vector y [n, adm_in].
typedef struct unet_cond {
    const float *context;
    int n_ctx;
    const float *y;
} unet_cond;

// x [n, in_ch, h, w], t [n] (float timesteps, may be fractional), cond -> out [n, out_ch, h, w]. Any h, w >= 1: when a
// downsampled size is odd, the upsampling path resizes to the skip's size (nearest x2, then
// crop, as diffusers' forward_upsample_size does). out must not alias x or context.
// Activations come from ex's arena; the allocation sequence depends only on the shapes, so a
// dry run measures the peak exactly. In a dry run x, t, the cond pointers and out may be NULL.
void unet_forward(sdg_exec *ex, const unet_model *m, const float *x, int n, int h, int w,
                  const float *t, const unet_cond *cond, float *out);

// Debugging: the same forward pass, calling fn after the time embedding ("emb", [n, c, 1, 1])
// and after each block ("input_blocks.3", "middle_block", "output_blocks.0", ...) with its
// output [n, c, h, w]. fn is not called in a dry run; data is valid only during the call.
typedef void (*unet_debug_fn)(const char *name, const float *data, int n, int c, int h, int w,
                              void *user);
void unet_forward_debug(sdg_exec *ex, const unet_model *m, const float *x, int n, int h, int w,
                        const float *t, const unet_cond *cond, float *out, unet_debug_fn fn,
                        void *user);

#endif // SDG_UNET_H
