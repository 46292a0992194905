/*
 * diffusers.h - a diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/,
 * text_encoder_2/, tokenizer/, scheduler/) opened as one st_file in the single-file naming the
 * networks read: the UNet under "model.diffusion_model." and the VAE under "first_stage_model."
 * with CompVis names, the text encoders under "text_encoder.text_model." and
 * "text_encoder_2.text_model." (their projection as "...text_model.text_projection.weight").
 *
 * The renaming is one table per network (diffusers.c), the inverse of diffusers'
 * scripts/convert_diffusers_to_original_stable_diffusion.py (and its SDXL twin), generic in the
 * number of levels and res blocks; the VAE's attention is read in both the current names
 * (group_norm, to_q, to_k, to_v, to_out.0; Linear [C, C], seen as [C, C, 1, 1] kernels) and the
 * older ones (query, key, value, proj_attn).
 *
 * Not here: what the networks are (family.c says which layout row a folder uses), any tensor data.
 */
#ifndef SDG_DIFFUSERS_H
#define SDG_DIFFUSERS_H

#include <stdbool.h>

#include "../common.h"
#include "safetensors.h"

#define DIFFUSERS_MAX_ENCODERS 2

typedef struct diffusers_info {
    sdg_family family;
    sdg_prediction prediction;   // scheduler_config.json prediction_type (AUTO when absent)
    bool ztsnr;                  // scheduler_config.json rescale_betas_zero_snr
    int n_encoders;
    bool gelu[DIFFUSERS_MAX_ENCODERS];    // text_encoder*/config.json hidden_act is "gelu"
    int heads[DIFFUSERS_MAX_ENCODERS];    // its num_attention_heads (0: not given)
    char *tokenizer;             // the tokenizer folder (vocab.json + merges.txt); g_free it
    // unet/config.json's heads (num_attention_heads, else diffusers' misnamed
    // attention_head_dim): a number is the heads of every transformer (SD 1.x: 8), a list the
    // heads per level, which with block_out_channels gives one head width (SD 2.x, SDXL: 64).
    // Both 0 when the config says nothing.
    int unet_heads, unet_head_dim;
} diffusers_info;

// Whether dir looks like a diffusers pipeline folder (it has a model_index.json).
bool diffusers_is_folder(const char *dir);

// Opens the folder's weights (per component the .safetensors file, else its .fp16 variant) as
// one view. Errors name the folder and what is wrong: a family the engine does not run (the
// pipeline class says which), a component missing from the folder or from model_index.json, a
// config that is not JSON, weights that are sharded or not .safetensors.
st_file *diffusers_open(const char *dir, diffusers_info *info, sdg_error *err);

void diffusers_info_clear(diffusers_info *info);

// A UNet module's diffusers path from its CompVis name, both without prefix or parameter
// ("output_blocks.2.1.proj_in" -> "up_blocks.1.attentions.0.proj_in"; nrb: res blocks per
// level), or NULL; g_free it. For LoRA files, which name modules the diffusers way.
char *diffusers_unet_module(const char *ldm, int nrb);

#endif // SDG_DIFFUSERS_H
