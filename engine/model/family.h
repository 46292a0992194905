/*
 * family.h - the model families (sdg_family) and the checkpoint layouts they come in: one table
 * says per family what its text encoders are and how their outputs combine, its latent scale,
 * native size, attention heads and default prediction; another says per layout which key
 * identifies it and under which prefixes its networks' tensors live. Loading (sd.c) and the
 * pipeline read these tables instead of testing for families here and there.
 *
 * Also here: what a file says about itself beyond its shapes (the prediction type and the
 * hyper-parameters of its configs in __metadata__), and the names of families the engine does
 * not run, so that their files are refused with a sentence naming them.
 *
 * Not here: the networks (model/clip.c, unet.c, vae.c), the test evaluation that tells a v model
 * from an eps one when the file is silent (sd.c: it runs the UNet).
 */
#ifndef SDG_FAMILY_H
#define SDG_FAMILY_H

#include <stdbool.h>

#include "../common.h"
#include "../loader/safetensors.h"

#define FAMILY_MAX_ENCODERS 2
// Width of each of SDXL's six size embeddings (ConcatTimestepEmbedderND outdim 256).
#define FAMILY_SIZE_EMB_DIM 256

// One text encoder of a family and what the UNet gets from it.
typedef struct family_encoder {
    int from_end;       // the hidden state after n_layers - from_end layers (0: the last)
    bool final_norm;    // with the final LayerNorm applied to it
    bool pooled;        // its pooled projection starts the vector y (SDXL's bigG)
    bool pad_zero;      // windows are padded with 0 (open_clip's tokenizer), else <|endoftext|>
} family_encoder;

typedef struct family_spec {
    sdg_family id;
    int n_encoders;     // their outputs are concatenated on the feature axis, in this order
    family_encoder enc[FAMILY_MAX_ENCODERS];
    float scale_factor; // latent scale
    int native_size;    // eps models
    int native_size_v;  // v-prediction models (SD 2.x 768-v)
    int unet_heads;     // heads per transformer (SD1), or
    int unet_head_dim;  // channels per head (SD2, SDXL)
    sdg_prediction prediction;  // when the file does not say
    bool size_cond;     // the vector y also holds the size conditioning (SDXL)
} family_spec;

typedef struct family_layout {
    sdg_family family;
    const char *name;                      // "CompVis", "SGM", "diffusers"
    const char *marker;                    // a key that identifies the layout (NULL: diffusers
                                           // folders, whose family model_index.json gives)
    const char *unet, *vae;                // tensor-name prefixes of the networks
    const char *te[FAMILY_MAX_ENCODERS];   // of the text encoders, in the family's order
    const family_encoder *enc;             // the encoders' outputs when the layout's encoders
                                           // differ from the family's (NULL: the family's)
} family_layout;

const family_spec *family_get(sdg_family f);

// Settings a model's (or a LoRA's) makers recommend: a distilled model runs a few steps without
// guidance. One row per kind, found by a keyword of the file's name (or modelspec.title); the
// rows are sdg_recommendation's source (sdg.h).
typedef struct family_distilled {
    const char *keyword;   // in the lower-cased file stem or title
    int family;            // the family it applies to (an sdg_family), or -1: any
    bool lora;             // a LoRA's row (else a checkpoint's)
    const char *name;      // "SDXL-Turbo", "LCM-LoRA", ...
    sdg_sampler sampler;
    sdg_schedule schedule;
    int steps;             // 0: from "<N>step" in the name, else 4
    float cfg_scale;
    sdg_model_sampling model_sampling;
} family_distilled;

// The row of the file name (a path; its stem is searched) and title (may be NULL) of a model of
// family fam (a LoRA's with lora), or NULL; *steps gets its steps ("8step" in the name: 8).
const family_distilled *family_find_distilled(const char *path, const char *title, int fam,
                                              bool lora, int *steps);

// The layout of a single-file checkpoint (from its text encoders' keys), or NULL.
const family_layout *family_detect(const st_file *f);

// The layout of a diffusers folder of family f, seen through diffusers_open's naming.
const family_layout *family_diffusers_layout(sdg_family f);

// What the UNet gets from each text encoder of layout l (of family spec).
static inline const family_encoder *family_encoders(const family_layout *l,
                                                    const family_spec *spec)
{
    return l->enc ? l->enc : spec->enc;
}

// The name of a family the engine does not run when the file's keys show one ("SD 3", "Flux",
// "Stable Cascade", "Kolors", "PixArt", "a TAESD autoencoder"), else NULL.
const char *family_unsupported(const st_file *f);

// Hyper-parameters the shapes do not tell, from configs a file may carry in its __metadata__
// (ldm's "unet_config" num_head_channels / num_heads, open_clip's "open_clip_config"
// text_cfg.heads, transformers' "clip_l_config" num_attention_heads): 0 where the file says
// nothing (the family's rule applies).
typedef struct family_hparams {
    int unet_heads, unet_head_dim;
    int clip_heads;        // HF CLIP text encoders
    int openclip_heads;    // open_clip text towers
} family_hparams;

// SDG_ERR_FORMAT naming the file and key when such a config is not JSON or holds a value that
// is not a positive integer.
sdg_status family_read_hparams(const st_file *f, family_hparams *hp, sdg_error *err);

// The prediction type a file states (sdg_model_params.prediction's AUTO order, without the test
// evaluation): SDG_PREDICTION_AUTO when it states none. *source (static, or written into
// source_buf for a sidecar) says where it was found. A statement that is neither eps nor v is an
// SDG_ERR_FORMAT naming it.
sdg_status family_file_prediction(const st_file *f, const char *path, sdg_prediction *out,
                                  const char **source, char *source_buf, size_t source_len,
                                  sdg_error *err);

// Whether the file asks for a zero-terminal-SNR schedule (a `ztsnr` key, as ComfyUI reads it).
bool family_file_ztsnr(const st_file *f);

#endif // SDG_FAMILY_H
