/*
 * lora.h - LoRA and LyCORIS adapters: the files users download, matched to a loaded model's
 * tensors and merged into copies of the tensors they touch.
 *
 * Formats (what each module of a file may hold; a module is a key's name less its suffix):
 *   - LoRA: kohya/A1111 `<m>.lora_down.weight`, `.lora_up.weight`, optional `.alpha`,
 *     `.lora_mid.weight` (LoCon's Tucker core) and `.dora_scale` (DoRA); diffusers/PEFT
 *     `.lora_A.weight` / `.lora_B.weight`, with the alphas in __metadata__
 *     "lora_adapter_metadata" (lora_alpha, r, alpha_pattern, rank_pattern per component);
 *     diffusers' older `.lora.down.weight` / `_lora.down.weight` (attention processors) and
 *     `.lora_linear_layer.down.weight`.
 *   - LyCORIS LoHa `.hada_w1_a/_b`, `.hada_w2_a/_b`, optional `.hada_t1/_t2` (Tucker), and LoKr
 *     `.lokr_w1` or `.lokr_w1_a/_b`, `.lokr_w2` or `.lokr_w2_a/_b`, optional `.lokr_t2`.
 * Module names: kohya's `lora_unet_<path>` (a diffusers path, or SDXL's CompVis one, '.' -> '_'),
 * `lora_te_<path>` (SD 1.x/2.x) and `lora_te1_` / `lora_te2_` (SDXL's two encoders, transformers
 * paths), PEFT's `unet.<path>`, `text_encoder.<path>`, `text_encoder_2.<path>`, ComfyUI's
 * `diffusion_model.<CompVis path>`. open_clip encoders (SD 2.x, SDXL's bigG) are addressed by
 * transformers' paths: q_proj/k_proj/v_proj are row slices of the packed in_proj_weight.
 *
 * Merge, per patched weight W [out, in (x kh x kw)] and strength m (ComfyUI calculate_weight,
 * kohya LoRAInfModule.merge_to; the order of operations matters only to rounding):
 *   LoRA  W += m * (alpha / rank) * up @ down (rank = down's rows; no alpha: scale 1), convs
 *         flattened to [out, in*kh*kw]; with lora_mid: up @ (mid x down) as a Tucker product;
 *   LoHa  W += m * (alpha / rank) * (w1a @ w1b) .* (w2a @ w2b) (rank = w1b's rows);
 *   LoKr  W += m * s * kron(w1, w2), w1 = lokr_w1 or w1a @ w1b, w2 likewise (or Tucker);
 *         s = alpha / rank of the low-rank factor (the second's when both), else 1;
 *   DoRA  (any kind with dora_scale) Wc = W + s diff, then each column j (an input channel with
 *         its kernel) scaled to norm dora_scale[j] (a [out, 1] scale: each row), W += m (Wc - W).
 *
 * Not here: finding files by name (sd.c), binding networks to the patched copies (sd.c, with
 * weights.h's overlay binder).
 */
#ifndef SDG_LORA_H
#define SDG_LORA_H

#include <glib.h>

#include "../pipeline/pipeline.h"

#define LORA_MAX_WEIGHT 10.0f

typedef struct lora_set lora_set;

// Opens the files of loras[0..n-1] and matches their modules to m's tensors, checking every
// factor's shape against the tensor it patches and its values (finite). Refused with a sentence:
// a file that is not a safetensors LoRA, a LoRA whose metadata names another family, one with
// shapes that do not fit, one of which no module matches. Modules that match nothing while others
// do are listed in lora_set_notes. Reads every factor (LoRA files are small); the files are
// closed on return. Without read only the shapes (and alphas) are read: a plan for sizing
// (lora_set_patched_bytes), which lora_set_patch must not be given.
sdg_status lora_set_plan(const sdg_model *m, const sdg_lora *loras, int n, bool read,
                         lora_set **out, sdg_error *err);
void lora_set_free(lora_set *s);

// One flag per tensor of m's file: whether the set patches it (for sdg_wb_new_overlay).
const bool *lora_set_patched(const lora_set *s);
// Bytes of the tensors it patches, as the model holds them (what applying it adds).
uint64_t lora_set_patched_bytes(const lora_set *s);
// NULL, or sentences about what was left unused (modules that match no layer, unknown keys).
const char *lora_set_notes(const lora_set *s);
// Modules matched, over all files.
int lora_set_modules(const lora_set *s);

// The patch function for sdg_wb_new_overlay (user = the set): adds every patch of tensor to w.
bool lora_set_patch(void *user, int tensor, float *w, int64_t rows, int64_t cols, sdg_error *err);

// A1111's prompt syntax: every `<lora:NAME>` or `<lora:NAME:WEIGHT>` (also `<lyco:...>`) is taken
// out of prompt (*clean, g_free it) and its name and weight (1 when absent) appended to names
// (g_free'd strings) and weights. A malformed tag (no name, a weight that is not a number or
// outside [-10, 10], more fields) is SDG_ERR_INVALID_ARG with a sentence quoting it.
sdg_status lora_prompt_tags(const char *prompt, char **clean, GPtrArray *names, GArray *weights,
                            sdg_error *err);

// Resolves a LoRA name of a prompt tag: <dir>/<name>.safetensors for each dir of dirs (NULL-
// terminated, NULLs and "" skipped). *path is g_free'd by the caller. Not found: SDG_ERR_IO
// naming the name and every folder searched.
sdg_status lora_find(const char *name, const char *const *dirs, int n_dirs, char **path,
                     sdg_error *err);

#endif // SDG_LORA_H
