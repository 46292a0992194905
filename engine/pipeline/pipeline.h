/*
 * pipeline.h - the objects behind the public handles, shared by sd.c (loading, names, the public
 * entry points) and pipeline.c (text-to-image, image-to-image, inpainting).
 *
 * Not public: tests may include it to reach the hooks below; the plug-in and the CLI may not.
 */
#ifndef SDG_PIPELINE_H
#define SDG_PIPELINE_H

#include <stdatomic.h>

#include "../common.h"
#include "../loader/diffusers.h"
#include "../loader/safetensors.h"
#include "../loader/weights.h"
#include "../model/clip.h"
#include "../model/family.h"
#include "../model/taesd.h"
#include "../model/unet.h"
#include "../model/vae.h"
#include "../sampler/sampler.h"
#include "../tokenizer/tokenizer.h"
#include "embeddings.h"

struct sdg_model {
    char *path;
    char *base;                // the file's name, for messages
    st_file *file;             // the mapping F32 weights point into
    const family_layout *layout;   // tensor-name prefixes (the text encoders': sdg_wb_drop_pages)
    const family_spec *spec;   // the family: encoders, scale, sizes
    const family_encoder *enc; // what the UNet gets from each text encoder (family_encoders)
    bool diffusers;            // a diffusers folder (file is diffusers_open's view of it)
    diffusers_info dinfo;      // what its configs say
    family_hparams hparams;    // what the file's metadata says beyond the shapes
    sdg_weights *wb;           // converted copies of F16/BF16 weights
    sdg_tokenizer *tok;
    clip_model *te[FAMILY_MAX_ENCODERS];   // spec->n_encoders text encoders
    int32_t pad_id[FAMILY_MAX_ENCODERS];   // per encoder: <|endoftext|> or 0 (open_clip)
    unet_model *unet;
    vae_model *vae;
    st_file *taesd_file;       // the TAESD decoder (NULL when none was found)
    sdg_weights *taesd_wb;
    taesd_model *taesd;
    sdg_noise_schedule sched;
    sdg_prediction prediction;   // what the UNet predicts: EPS or V
    const char *prediction_source;   // how that was found (sdg_model_info)
    char source_buf[300];      // holds it when it names a sidecar file
    sdg_model_info info;
    bool header_only;          // no weights bound (sdg_model_params.header_only): estimates only
    uint64_t copy_bytes;       // float32 copies of F16/BF16 weights (held, or with header_only
                               // what loading would make)
    uint64_t mapped_bytes;     // F32 weights used in place from the mapping
    char *embeddings_dir;      // owned: sdg_model_params.embeddings_dir (NULL: the default
                               // folders, embeddings/ beside the model, then in models_dir)
    char *models_dir;          // owned: the models folder the model was loaded with
};

// Replaces the engine's seeded noise (tests replay the goldens' noise): `which` is the draw of a
// stochastic sampler (>= 0, see sampler_hooks.noise), SDG_TEST_NOISE_INITIAL (the starting latent) or SDG_TEST_NOISE_VAE (the sample
// of the init image's posterior).
typedef void (*sdg_noise_hook)(void *user, int which, float *out, size_t n);
#define SDG_TEST_NOISE_INITIAL (-1)
#define SDG_TEST_NOISE_VAE (-2)

// A context's networks with LoRAs applied (lora/lora.h): the text encoders and the UNet bound
// again on an overlay of the model's weights (weights.h sdg_wb_new_overlay) that holds patched
// copies of the tensors the LoRAs touch and shares every other tensor. The model is never
// written, so other contexts on it are not affected, and dropping this gives its weights back.
typedef struct sdg_lora_nets {
    char *key;                 // what was applied: path, size, mtime and weight of each file
    sdg_weights *wb;           // the overlay
    clip_model *te[FAMILY_MAX_ENCODERS];
    unet_model *unet;
    uint64_t bytes;            // the patched copies
    char *notes;               // lora_set_notes, or NULL
} sdg_lora_nets;

struct sdg_ctx {
    const sdg_model *model;
    sdg_lora_nets *lora;       // NULL: the model's own networks
    uint64_t lora_new_bytes;   // memory guard: LoRA copies the current request still has to make
    const float *init_latent;  // a hires fix's second pass: its start, the upscaled latent of the
                               // first [4, height/8, width/8], in place of an init image
    int n_threads;
    sdg_exec ex;
    atomic_int cancel;
    sdg_noise_hook test_noise;  // NULL outside tests
    void *test_noise_data;
    embs_cache *embeddings;     // owned: the embedding files this ctx has read
};

// Runs one sdg_generate request (parameters already checked by sdg_generate). Refuses with
// SDG_ERR_NOMEM, before allocating anything, when sdg__pipeline_estimate says it does not fit.
sdg_status sdg__pipeline_generate(sdg_ctx *ctx, const sdg_gen_params *p, sdg_result **out,
                                  sdg_error *err);

// Fills e for one request (parameters already checked) from its plan and dry run; SDG_OK when it
// fits, SDG_ERR_NOMEM with the guard's sentence when not (e filled either way).
sdg_status sdg__pipeline_estimate(sdg_ctx *ctx, const sdg_gen_params *p, sdg_memory_estimate *e,
                                  sdg_error *err);

// Tests: the conditioning of p->prompt alone (the cond side of a run, as the UNet gets it):
// *context [*n_ctx, *ctx_dim], and for SDXL *y [*y_dim] (else NULL and 0); malloc'd (free them).
// Parameters already checked (sdg_ctx_estimate checks them the same way).
sdg_status sdg__pipeline_text(sdg_ctx *ctx, const sdg_gen_params *p, float **context, int *n_ctx,
                              int *ctx_dim, float **y, int *y_dim, sdg_error *err);

// PyTorch's bilinear interpolate (align_corners False, no antialias) of src [c, h, w] into
// dst [c, oh, ow]: the hires fix's latent upscale (A1111's "Latent").
void sdg__upscale_bilinear(const float *src, int c, int h, int w, float *dst, int oh, int ow);

// The noise streams of rng_normal_fill used for a picture with seed `seed`: the initial latent;
// the noise stochastic samplers add (euler_a, lcm, dpmpp_2m_sde, dpmpp_sde), draw k of the run
// (sampler_hooks.noise: k = the step, dpmpp_sde 2 step and 2 step + 1) being elements k*n ..
// k*n + n-1 of stream ANCESTRAL, n the latent's size; the VAE posterior's sample (documented so
// pictures can be reproduced elsewhere).
#define SDG_STREAM_INITIAL 0u
#define SDG_STREAM_ANCESTRAL 1u
#define SDG_STREAM_VAE 2u

// Latent channels of every model the engine runs (SD 1.x, 2.x and SDXL autoencoders): the
// preview's colour map, the CLI's --noise-in shape and the documented latent layout assume it,
// and sdg_model_load refuses other files.
#define SDG_LATENT_CHANNELS 4

#endif // SDG_PIPELINE_H
