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
    int proj_dim;          // width of the pooled projection (0: the file has none)
    bool open_clip;        // open_clip layout (packed in_proj)
    bool gelu;             // exact (erf) GELU in the MLPs, else quick_gelu
    bool proj_transposed;  // the projection is transformers' text_projection.weight [proj,
                           // width] (x W^T), else open_clip's text_projection [width, proj]
} clip_config;

// The MLPs' activation: the layout's (transformers: quick_gelu, open_clip: exact GELU), or as a
// config says (transformers' hidden_act, e.g. diffusers' SD 2.x and SDXL bigG encoders: "gelu").
typedef enum clip_act { CLIP_ACT_LAYOUT = 0, CLIP_ACT_QUICK_GELU, CLIP_ACT_GELU } clip_act;

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
clip_model *clip_load(sdg_weights *wb, const char *prefix, int n_heads, clip_act act);
void clip_free(clip_model *m);
const clip_config *clip_get_config(const clip_model *m);

// ids [n, n_pos] -> out [n, n_pos, width], the hidden state o names. pooled (or NULL; needs
// proj_dim > 0) [n, proj_dim]: the pooled embedding, final norm(output of the last layer) at
// the end-of-text token (the largest id) through the projection, whatever o says. Ids outside the
// vocabulary are an SDG_ASSERT (the caller validates). Scratch comes from ex's arena (released
// before returning); the allocation sequence depends only on n and on whether pooled is given,
// so a dry run measures the peak exactly. In a dry run ids and out may be NULL; pooled must be
// non-NULL exactly when the real run's is.
void clip_forward(sdg_exec *ex, const clip_model *m, const int32_t *ids, int n,
                  const clip_output *o, float *out, float *pooled);

// The same with textual-inversion vectors: emb (or NULL) [n, n_pos] gives, per position, a
// [width] vector that replaces the token embedding there (NULL entries: the token's own), before
// the position embedding is added (A1111's EmbeddingsWithFixes).
void clip_forward_rows(sdg_exec *ex, const clip_model *m, const int32_t *ids,
                       const float *const *emb, int n, const clip_output *o, float *out,
                       float *pooled);

// The input of layer 0: out [n, n_pos, width] = token_embedding[ids] + position_embedding
// (exposed for tests and debugging).
void clip_embed(sdg_exec *ex, const clip_model *m, const int32_t *ids, int n, float *out);
// The same with replacement vectors (rows as clip_forward_rows' emb).
void clip_embed_rows(sdg_exec *ex, const clip_model *m, const int32_t *ids,
                     const float *const *rows, int n, float *out);

#endif // SDG_CLIP_H
