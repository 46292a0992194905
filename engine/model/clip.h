/*
 * clip.h - the CLIP text encoders of the Stable Diffusion families, loaded from a checkpoint and
 * run on the CPU: the Hugging Face CLIPTextModel layout (SD1's and SDXL's ViT-L/14 under
 * ...text_model.*: q/k/v_proj, quick_gelu) and open_clip's text tower (SD2's ViT-H/14, SDXL's
 * bigG/14 under ...model.*: packed attn.in_proj, exact GELU, ln_final, text_projection).
 *
 * The architecture is read from the tensor shapes under the prefix: the layout from which
 * embedding name exists, vocabulary and width from the token embedding, positions from the
 * position embedding, depth by probing the layers, MLP width from the first MLP matrix. The head
 * count is not in the shapes: the caller gives it (0: width / 64, the convention of every
 * released SD text encoder).
 *
 * Not here: tokenization, prompt weighting, which hidden state a family takes (the caller says,
 * see clip_output).
 */
#ifndef SDG_CLIP_H
#define SDG_CLIP_H

#include <stdint.h>

#include "../common.h"
#include "../loader/weights.h"

typedef struct clip_config {
    int vocab, n_pos, width, n_layers, n_heads, mlp;
    int proj_dim;          // columns of open_clip's text_projection (0: none, or HF layout)
    bool open_clip;        // open_clip layout (packed in_proj, exact GELU)
} clip_config;

// Which hidden state clip_forward returns: the residual stream after `layer` layers (1..n_layers;
// SD1: all of them, SD2/SDXL: the penultimate), with the final LayerNorm or without (SDXL).
typedef struct clip_output {
    int layer;
    bool final_norm;
} clip_output;

typedef struct clip_model clip_model;

// Binds the text encoder's tensors under prefix (e.g. "cond_stage_model.transformer.text_model."
// or "cond_stage_model.model.") and reads the architecture from their shapes; n_heads 0 means
// width / 64. Errors are recorded in wb (sticky, naming the tensor) and NULL is returned. The
// model borrows the weights: wb (and its file) must outlive it.
clip_model *clip_load(sdg_weights *wb, const char *prefix, int n_heads);
void clip_free(clip_model *m);
const clip_config *clip_get_config(const clip_model *m);

// ids [n, n_pos] -> out [n, n_pos, width], the hidden state o names. pooled (or NULL; needs
// proj_dim > 0) [n, proj_dim]: open_clip's pooled embedding, ln_final(output of the last layer)
// at the end-of-text token (the largest id) @ text_projection, whatever o says. Ids outside the
// vocabulary are an SDG_ASSERT (the caller validates). Scratch comes from ex's arena (released
// before returning); the allocation sequence depends only on n and on whether pooled is given,
// so a dry run measures the peak exactly. In a dry run ids and out may be NULL; pooled must be
// non-NULL exactly when the real run's is.
void clip_forward(sdg_exec *ex, const clip_model *m, const int32_t *ids, int n,
                  const clip_output *o, float *out, float *pooled);

// The input of layer 0: out [n, n_pos, width] = token_embedding[ids] + position_embedding
// (exposed for tests and debugging).
void clip_embed(sdg_exec *ex, const clip_model *m, const int32_t *ids, int n, float *out);

#endif // SDG_CLIP_H
