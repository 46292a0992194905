/*
 * clip.h - the CLIP text encoder in the Hugging Face CLIPTextModel layout (SD1's
 * cond_stage_model.transformer.text_model.*), loaded from a single-file checkpoint and run on the
 * CPU.
 *
 * The architecture is read from the tensor shapes under the prefix: vocabulary and width from
 * token_embedding, positions from position_embedding, depth by probing encoder.layers.N, MLP
 * width from fc1; heads = width / 64 (the SD1/SD2/SDXL convention, not in the shapes).
 *
 * Not here: tokenization, prompt weighting, the pooled/projected output, open_clip's packed
 * in_proj layout (SD2) or exact-GELU variants.
 */
#ifndef SDG_CLIP_H
#define SDG_CLIP_H

#include <stdint.h>

#include "../common.h"
#include "../loader/weights.h"

typedef struct clip_config {
    int vocab, n_pos, width, n_layers, n_heads, mlp;
} clip_config;

typedef struct clip_model clip_model;

// Binds the text encoder's tensors under prefix (e.g. "cond_stage_model.transformer.text_model.")
// and reads the architecture from their shapes. Errors are recorded in wb (sticky, naming the
// tensor) and NULL is returned. The model borrows the weights: wb (and its file) must outlive it.
clip_model *clip_load(sdg_weights *wb, const char *prefix);
void clip_free(clip_model *m);
const clip_config *clip_get_config(const clip_model *m);

// ids [n, n_pos] -> out [n, n_pos, width]. clip_skip 1: last_hidden_state (final LayerNorm after
// all layers); clip_skip k >= 2 (at most n_layers): run n_layers-k+1 layers, then the final
// LayerNorm (A1111 "clip skip"). Ids outside the vocabulary are an SDG_ASSERT (the caller
// validates). Scratch comes from ex's arena (released before returning); the allocation sequence
// depends only on n, so a dry run measures the peak exactly. In a dry run ids and out may be
// NULL.
void clip_forward(sdg_exec *ex, const clip_model *m, const int32_t *ids, int n, int clip_skip,
                  float *out);

// The input of layer 0: out [n, n_pos, width] = token_embedding[ids] + position_embedding
// (exposed for tests and debugging).
void clip_embed(sdg_exec *ex, const clip_model *m, const int32_t *ids, int n, float *out);

#endif // SDG_CLIP_H
