/*
 * sdg.h - the GIMP Diffusion engine: Stable Diffusion (1.x, 2.x, SDXL) on the CPU, in C.
 *
 * This is the engine's one public header. It exposes opaque handles and plain structs; it pulls in
 * no GLib, GEGL or OpenBLAS types. Everything else under engine/ is private.
 *
 * Basic usage:
 *
 *     sdg_error err;
 *     sdg_model_params mp = sdg_model_default_params();
 *     sdg_model *model = sdg_model_load("v1-5-pruned-emaonly.safetensors", &mp, &err);
 *     if (!model) { fprintf(stderr, "%s\n", err.message); return 1; }
 *     sdg_ctx *ctx = sdg_ctx_new(model, 2, &err);
 *     sdg_gen_params gp = sdg_gen_default_params();
 *     gp.prompt = "a photograph of an astronaut riding a horse";
 *     sdg_result *res = NULL;
 *     if (sdg_generate(ctx, &gp, &res, &err) == SDG_OK)
 *         use(res->images[0]);               // RGB float in [0,1], interleaved
 *     sdg_result_free(res);
 *     sdg_ctx_free(ctx);                      // free in reverse order: result, ctx, model
 *     sdg_model_free(model);
 *
 * Ownership: every object is freed by its own *_free function, which accepts NULL. A ctx must not
 * outlive its model. Results belong to the caller once returned.
 *
 * Threads: a model is immutable after loading and may be shared by several ctx. A ctx must not be
 * used by two threads at once, except for sdg_ctx_cancel(), which any thread may call at any time.
 * The ctx's thread count governs all heavy work: the engine runs OpenBLAS single-threaded inside
 * its own OpenMP threads (and sets OpenBLAS's process-wide thread count to 1), so that a seed gives
 * the same bits whatever the thread count.
 *
 * Errors: functions that can fail return an sdg_status (or NULL) and fill an optional sdg_error with
 * a sentence naming the file, tensor or parameter at fault. The engine never exits the process.
 */
#ifndef SDG_H
#define SDG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define SDG_API __attribute__((visibility("default")))
#else
#define SDG_API
#endif

// NOTE: enums are append-only; existing values never change.
typedef enum sdg_status {
    SDG_OK = 0,
    SDG_ERR_INVALID_ARG = 1,   // a parameter out of range (size, steps, strength, prompt encoding)
    SDG_ERR_IO = 2,            // a file could not be opened, read, mapped or written
    SDG_ERR_FORMAT = 3,        // a file is malformed (header, JSON, offsets, dtype)
    SDG_ERR_SHAPE = 4,         // a tensor is missing or has an unexpected shape
    SDG_ERR_NOMEM = 5,         // an allocation failed
    SDG_ERR_CANCELLED = 6,     // the progress callback or sdg_ctx_cancel() stopped the run
    SDG_ERR_UNSUPPORTED = 7,   // a valid file or request the engine does not handle
} sdg_status;

// Returns a static, lower-case name such as "invalid argument".
SDG_API const char *sdg_status_name(sdg_status status);

// Error report filled by functions taking an `sdg_error *` (which may be NULL).
typedef struct sdg_error {
    sdg_status status;
    char message[512];
} sdg_error;

typedef enum sdg_sampler {
    SDG_SAMPLER_EULER = 0,
    SDG_SAMPLER_EULER_A = 1,
    SDG_SAMPLER_HEUN = 2,
    SDG_SAMPLER_DPMPP_2M = 3,
    SDG_SAMPLER_LMS = 4,
    SDG_SAMPLER_DDIM = 5,
    SDG_SAMPLER_LCM = 6,       // latent consistency (ComfyUI sample_lcm): each step jumps to the
                               // model's denoised and re-noises it to the next sigma with fresh
                               // noise; for LCM-distilled models (see sdg_model_sampling), 2-8 steps
    SDG_SAMPLER_DPMPP_2M_SDE = 7,  // k-diffusion sample_dpmpp_2m_sde (midpoint, eta 1)
    SDG_SAMPLER_DPMPP_SDE = 8, // k-diffusion sample_dpmpp_sde (r 1/2, eta 1): 2 model calls a step
    SDG_SAMPLER_COUNT
} sdg_sampler;

typedef enum sdg_schedule {
    SDG_SCHEDULE_DEFAULT = 0,  // k-diffusion CompVisDenoiser.get_sigmas (DDIM: its own timesteps)
    SDG_SCHEDULE_KARRAS = 1,   // Karras et al. 2022, rho 7
    SDG_SCHEDULE_SIMPLE = 2,   // ComfyUI's "simple" = sgm's LegacyDDPMDiscretization: steps
                               // table timesteps evenly spaced down from 999 (integer t), and
                               // the start latent noise * sqrt(1 + sigma_0^2) as both do
    SDG_SCHEDULE_EXPONENTIAL = 3,  // k-diffusion get_sigmas_exponential: sigmas evenly spaced
                               // in log between the table's largest and smallest
    SDG_SCHEDULE_SGM_UNIFORM = 4,  // ComfyUI's "sgm_uniform": timesteps evenly spaced from 999
                               // down (steps+1 points, the last dropped), the sigmas interpolated
                               // at them; the usual LCM schedule
    SDG_SCHEDULE_DDIM_UNIFORM = 5, // ComfyUI's "ddim_uniform": table timesteps 1, 1+c, 1+2c, ...
                               // (c = 1000/steps), from the largest down (steps+1 for some counts)
    SDG_SCHEDULE_TRAILING = 6, // diffusers' timestep_spacing "trailing": timesteps
                               // round(1000 - i*1000/steps) - 1 (999, 749, 499, 249 for 4), the
                               // spacing SD-Turbo and LCM pipelines use
    SDG_SCHEDULE_COUNT
} sdg_schedule;

// Timesteps: what the UNet is told about the noise level. A run follows one reference:
// - k-diffusion's (A1111's): schedules default, karras and exponential with every sampler but
//   lcm; the UNet gets a fractional t, interpolated in log sigma between table timesteps, and
//   the start latent is noise * sigma_0.
// - ComfyUI's (ModelSamplingDiscrete): schedules simple, sgm_uniform, ddim_uniform and trailing
//   (diffusers' spacing, whose integer timesteps run the same way), and the lcm sampler with
//   any schedule; the UNet gets the integer t of the table entry nearest in log sigma
//   (ComfyUI's table, computed in double), and a run that starts at the largest sigma starts
//   from noise * sqrt(1 + sigma_0^2) (ComfyUI's max_denoise).
// - the ddim sampler keeps CompVis' own integer timesteps and start (noise unscaled in x_t).
// With SDG_MODEL_SAMPLING_LCM every run is ComfyUI's, over the distilled model's 50 timesteps.

// How the model was trained to be sampled (ComfyUI's "ModelSamplingDiscrete" node), a property of
// the checkpoint that a run states: the file does not say it.
typedef enum sdg_model_sampling {
    SDG_MODEL_SAMPLING_DEFAULT = 0, // the 1000 DDPM timesteps, the prediction's own scalings
    SDG_MODEL_SAMPLING_LCM = 1,     // latent-consistency distilled (LCM_Dreamshaper, LCM-LoRA
                               // merges): the 50 timesteps 19, 39, ..., 999 and the consistency
                               // boundary condition (c_skip, c_out of 10 t, sigma_data 0.5);
                               // use it with the lcm sampler, a few steps and CFG 1-2
    SDG_MODEL_SAMPLING_COUNT
} sdg_model_sampling;

// Arithmetic of the matrix products (the networks' multiply-adds).
typedef enum sdg_precision {
    SDG_PRECISION_DEFAULT = 0, // the engine's choice: `fast`, whose pictures measure 51-56 dB
                               // PSNR against exact's (see README, Speed)
    SDG_PRECISION_EXACT = 1,   // float32 products and sums: the reference implementations' numbers
    SDG_PRECISION_FAST = 2,    // bfloat16 products, float32 sums, where the CPU has AVX512-BF16
                               // (about twice the speed); elsewhere float32 products with
                               // Winograd 3x3 convolutions
    SDG_PRECISION_COUNT
} sdg_precision;

// "default", "exact", "fast".
SDG_API const char *sdg_precision_name(sdg_precision p);
SDG_API bool sdg_precision_from_name(const char *name, sdg_precision *out);
// The matrix kernels this CPU runs a precision with, chosen from cpuid when the engine starts:
// "avx512-bf16", "avx512", "avx2" or "c" (portable). For the CLI's --verbose and the layer
// parasite.
SDG_API const char *sdg_kernels_name(sdg_precision p);

// Names used by the CLI and the GIMP procedures: "euler", "euler_a", "heun", "dpmpp_2m", "lms",
// "ddim", "lcm", "dpmpp_2m_sde", "dpmpp_sde"; "default", "karras", "simple", "exponential",
// "sgm_uniform", "ddim_uniform", "trailing"; "default", "lcm" (model sampling). *_from_name
// returns false for an unknown name.
//
// Stochastic samplers (euler_a, lcm, dpmpp_2m_sde, dpmpp_sde) add fresh normal noise from the
// engine's seeded generator at every step, independent per step: k-diffusion's SDE samplers
// draw theirs from a Brownian tree instead, so like every stochastic sampler here they make
// other pictures than ComfyUI or A1111 for the same seed (the same pictures on every machine).
SDG_API const char *sdg_sampler_name(sdg_sampler s);
SDG_API bool sdg_sampler_from_name(const char *name, sdg_sampler *out);
SDG_API const char *sdg_schedule_name(sdg_schedule s);
SDG_API bool sdg_schedule_from_name(const char *name, sdg_schedule *out);
SDG_API const char *sdg_model_sampling_name(sdg_model_sampling m);
SDG_API bool sdg_model_sampling_from_name(const char *name, sdg_model_sampling *out);

// Model families the engine runs (README, "Supported models"): how a checkpoint's text encoders,
// UNet and latent scale fit together.
typedef enum sdg_family {
    SDG_FAMILY_SD1 = 0,        // SD 1.x: CLIP ViT-L/14, 512x512, latent scale 0.18215
    SDG_FAMILY_SD2 = 1,        // SD 2.x: open_clip ViT-H/14 (penultimate layer), 512 or 768
    SDG_FAMILY_SDXL = 2,       // SDXL: CLIP ViT-L/14 + open_clip bigG/14, size conditioning,
                               // 1024x1024, latent scale 0.13025
    SDG_FAMILY_COUNT
} sdg_family;

// What the UNet predicts. AUTO (model parameters only): found from the file (see
// sdg_model_params.prediction).
typedef enum sdg_prediction {
    SDG_PREDICTION_AUTO = 0,
    SDG_PREDICTION_EPS = 1,    // the noise (SD 1.x, SD 2.x base, SD-Turbo, SDXL)
    SDG_PREDICTION_V = 2,      // v = sqrt(a) eps - sqrt(1-a) x0 (SD 2.x 768-v, SDXL v-pred models)
    SDG_PREDICTION_COUNT
} sdg_prediction;

// What turns the final latent into the picture: the model's own VAE, or TAESD (madebyollin's tiny
// autoencoder: a few percent of the VAE's time, a softer picture; see sdg_model_params.taesd_path).
typedef enum sdg_decoder {
    SDG_DECODER_VAE = 0,
    SDG_DECODER_TAESD = 1,
    SDG_DECODER_COUNT
} sdg_decoder;

// "vae", "taesd".
SDG_API const char *sdg_decoder_name(sdg_decoder d);
SDG_API bool sdg_decoder_from_name(const char *name, sdg_decoder *out);

// "SD 1.x", "SD 2.x", "SDXL"; "auto", "eps", "v".
SDG_API const char *sdg_family_name(sdg_family f);
SDG_API const char *sdg_prediction_name(sdg_prediction p);
SDG_API bool sdg_prediction_from_name(const char *name, sdg_prediction *out);

// ---------------------------------------------------------------------------------------------
// Images: interleaved float samples, row-major, top row first. RGB images are in [0,1] (sRGB
// encoded, as PNG files hold them); masks have one channel, 1 = regenerate, 0 = keep.

typedef struct sdg_image {
    int width;
    int height;
    int channels;   // 3 (RGB) or 1 (mask)
    float *data;    // owned, width*height*channels
} sdg_image;

// Returns a zero-filled image, or NULL when the size is invalid or memory runs out.
SDG_API sdg_image *sdg_image_new(int width, int height, int channels);
SDG_API void sdg_image_free(sdg_image *img);

// ---------------------------------------------------------------------------------------------
// Models

typedef struct sdg_model sdg_model;

typedef struct sdg_model_params {
    const char *vocab_path;   // CLIP vocabulary file (bpe_simple_vocab_16e6.txt[.gz] or a folder
                              // or file of vocab.json+merges.txt); NULL = look next to the model,
                              // then in models_dir
    const char *models_dir;   // NULL = SDG_MODELS_DIR from the build
    bool header_only;         // read the file's header (architecture, metadata) and the
                              // vocabulary but no weights: milliseconds and no memory for the
                              // weights, for sizing runs with sdg_ctx_estimate before loading a
                              // multi-GB checkpoint; sdg_generate refuses such a model
    sdg_prediction prediction; // AUTO (default): from the file, in this order: a `v_pred` key;
                              // __metadata__ "modelspec.prediction_type" or "parameterization";
                              // a sidecar <stem>.yaml's `parameterization:` (A1111); for SD 2.x a
                              // test evaluation of the UNet (A1111's); else eps. EPS or V
                              // override the file (sdg_model_info.prediction_source then says
                              // what the file said, when it differs)
    const char *taesd_path;   // TAESD decoder for SDG_DECODER_TAESD: a released
                              // taesd_decoder.safetensors / taesdxl_decoder.safetensors (or a
                              // file with decoder.* keys, or a diffusers AutoencoderTiny folder);
                              // NULL = the family's (taesd_decoder for SD 1.x/2.x, taesdxl_decoder
                              // for SDXL; a file, or a folder taesd/ taesdxl/) next to the model,
                              // then in models_dir; none found is no error until a run asks for it
    const char *embeddings_dir; // textual-inversion embeddings (README, "Embeddings"): a folder of
                              // <name>.safetensors files, each used where a prompt says <name>;
                              // NULL = embeddings/ beside the model file, then embeddings/ in
                              // models_dir (absent folders are no error; an explicit one must
                              // exist when a run starts). Copied: the string need not outlive
                              // sdg_model_load. Files are read when a prompt first names them
                              // and kept by the ctx (read again when they change on disk)
} sdg_model_params;

SDG_API sdg_model_params sdg_model_default_params(void);

// Loads a single-file .safetensors checkpoint of a supported family (sdg_family; CompVis/SGM
// layouts, 4- or 9-channel UNet). The family and architecture are read from the tensor names
// and shapes; files of other families (SD3, Flux, ...) are refused naming what they are. Returns NULL on failure and fills err. F16/BF16
// weights are converted to float32 copies; before converting, the loader checks that the copies
// fit in the memory available (see sdg_ctx_estimate) and refuses with SDG_ERR_NOMEM otherwise.
SDG_API sdg_model *sdg_model_load(const char *path, const sdg_model_params *params, sdg_error *err);
SDG_API void sdg_model_free(sdg_model *model);

typedef struct sdg_model_info {
    int unet_in_channels;     // 4 (plain) or 9 (inpainting)
    int unet_model_channels;  // 320 for SD1.x
    int context_dim;          // 768 for SD1.x
    int text_width;           // text encoder hidden width
    int text_layers;          // text encoder depth
    int vae_scale;            // image pixels per latent pixel (8 for SD; 2^(VAE levels - 1))
    int native_size;          // the size the model was trained at (512 for SD1.x; a file may
                              // say otherwise in its metadata "sdg.native_size")
    float scale_factor;       // latent scale (0.18215 for SD1.x; metadata "sdg.scale_factor")
    sdg_family family;
    sdg_prediction prediction;      // EPS or V, never AUTO
    const char *prediction_source;  // how it was found: "option", "key v_pred", "metadata
                                    // modelspec.prediction_type", "metadata parameterization",
                                    // "sidecar <file>.yaml", "test evaluation", "family default",
                                    // or "option, overriding <source>, which says v" when the
                                    // option contradicts the file; valid while the model lives
    bool zero_terminal_snr;   // the schedule is rescaled to zero terminal SNR (a `ztsnr` key)
    bool has_taesd;           // a TAESD decoder was found (SDG_DECODER_TAESD can run)
    bool has_taesd_encoder;   // and its encoder (in the same file or folder, or the released
                              // taesd_encoder.safetensors beside taesd_decoder.safetensors):
                              // SDG_DECODER_TAESD then encodes init images with it too
} sdg_model_info;

SDG_API void sdg_model_get_info(const sdg_model *model, sdg_model_info *info);

// The family of a checkpoint from its header alone (no weights, no vocabulary: milliseconds, for
// listing models). SDG_ERR_UNSUPPORTED with a sentence naming the family for files of families
// the engine does not run (SD 3, Flux, ...); SDG_ERR_IO, SDG_ERR_FORMAT or SDG_ERR_SHAPE for files
// that cannot be read or are no checkpoint of a known layout.
SDG_API sdg_status sdg_checkpoint_family(const char *path, sdg_family *out, sdg_error *err);

// Tokenizes one prompt into ids[0..76] as the model's first text encoder reads it (BOS, 75
// tokens, EOS, then padding: EOS for CLIP ViT-L/14 (SD 1.x, SDXL), 0 for open_clip (SD 2.x)).
// Returns the number of BPE tokens before truncation, or -1 (invalid UTF-8).
SDG_API int sdg_model_tokenize(const sdg_model *model, const char *text, int32_t ids[77]);

// ---------------------------------------------------------------------------------------------
// Generation

typedef struct sdg_ctx sdg_ctx;

// n_threads <= 0 means the number of online processors.
SDG_API sdg_ctx *sdg_ctx_new(const sdg_model *model, int n_threads, sdg_error *err);
SDG_API void sdg_ctx_free(sdg_ctx *ctx);

// Asks a running sdg_generate to stop; safe from any thread. The run returns SDG_ERR_CANCELLED
// within one network evaluation. The flag is cleared when the next sdg_generate starts.
SDG_API void sdg_ctx_cancel(sdg_ctx *ctx);

// Called after every sampling step (step = 1..total) and once with step 0 before the first.
// preview, when the caller asked for one, is an RGB picture of the current estimate: TAESD's
// (full size) when the model has a TAESD decoder (sdg_model_info.has_taesd), else a small one (a
// linear projection of the latent, 1 pixel per latent pixel) valid only during the call.
// Return false to cancel the run.
typedef bool (*sdg_progress_fn)(int step, int total, const sdg_image *preview, void *user_data);

// How a hires fix makes the picture bigger between its two passes.
typedef enum sdg_hires_upscale {
    SDG_HIRES_LATENT = 0,      // the latent, bilinear (A1111's "Latent"), no decode/encode
    SDG_HIRES_PIXEL = 1,       // the decoded picture, with the caller's resampler (hires_resize),
                               // then encoded again
    SDG_HIRES_UPSCALE_COUNT
} sdg_hires_upscale;

// "latent", "pixel".
SDG_API const char *sdg_hires_upscale_name(sdg_hires_upscale u);
SDG_API bool sdg_hires_upscale_from_name(const char *name, sdg_hires_upscale *out);

// A resampler for SDG_HIRES_PIXEL: img (RGB) scaled to width x height, a new image (freed by the
// engine with sdg_image_free), or NULL on failure. The CLI and the plug-in pass GEGL's.
typedef sdg_image *(*sdg_resize_fn)(const sdg_image *img, int width, int height, void *user);

// A LoRA to apply to a run: the adapters users download, in the forms kohya/A1111 (lora_unet_*,
// lora_te_*, lora_te1_*/lora_te2_* for SDXL; LoRA, LoCon, DoRA), diffusers/PEFT (lora_A/lora_B
// with their lora_adapter_metadata alphas, the older .lora.down naming) and LyCORIS (LoHa,
// LoKr) write. It is merged into copies of the weights it touches, held by the ctx until a
// request asks for a different list: the model is never changed, so other contexts sharing it
// see none of it, and a request without LoRAs runs the model's own weights bit for bit.
typedef struct sdg_lora {
    const char *path;              // a .safetensors file
    float weight;                  // the multiplier (A1111's), -10..10, on the UNet and the text
                                   // encoders
} sdg_lora;

typedef struct sdg_gen_params {
    const char *prompt;            // UTF-8; may be empty. Emphasis: (words:1.3), (words), [words];
                                   // a textual-inversion embedding's name (its file's stem, see
                                   // sdg_model_params.embeddings_dir) stands for its vectors
    const char *negative_prompt;   // UTF-8; NULL or "" = unconditional; embeddings as in prompt
    int width, height;             // multiples of 8, at most 4096 (ignored for img2img/inpaint:
                                   // the init image's size is used)
    sdg_sampler sampler;
    sdg_schedule schedule;
    int steps;                     // 1..1000
    float cfg_scale;               // 1 = no guidance (one UNet pass per step)
    uint64_t seed;
    int batch_count;               // pictures to make, seeds seed..seed+batch_count-1
    int clip_skip;                 // 1 = last text-encoder layer, 2 = penultimate (+ final LN)
    float strength;                // img2img / inpaint: 0 = keep the image, 1 = ignore it
    const sdg_image *init_image;   // RGB; set for img2img and inpaint
    const sdg_image *mask;         // 1 channel, same size as init_image; set for inpaint
    bool inpaint_blend;            // inpaint: after every step put the known region back, re-noised
                                   // to the step's noise level. 4-channel models always do (it is
                                   // how they inpaint); for 9-channel ones true (the default) is
                                   // A1111's and ComfyUI's way, false diffusers' (the UNet's mask
                                   // input alone)
    const float *noise;            // optional initial latent [1,4,H/f,W/f], f = vae_scale,
                                   // unit variance;
                                   // replaces the seeded noise of the first picture
    sdg_progress_fn progress;      // optional
    void *progress_data;
    bool preview;                  // pass a preview to progress
    sdg_precision precision;       // arithmetic of the networks (default: the engine's choice)
    uint64_t extra_bytes;          // memory the caller will still allocate for this run besides
                                   // the engine's (e.g. its own copies of the pictures); counted
                                   // in the estimate's working memory and by the memory guard
    sdg_decoder decoder;           // the VAE (default) or TAESD (sdg_model_info.has_taesd),
                                   // which then also encodes the init image of image-to-image
                                   // and inpainting when its encoder was found
                                   // (has_taesd_encoder; else the VAE's encoder does). A
                                   // 9-channel inpainting UNet's masked-image input is always
                                   // the VAE's: it was trained on it
    // SDXL's size conditioning (ignored by other families), in pixels: the original image size,
    // the crop's top-left corner and the target size the model is told about. 0 (the default)
    // for a size = the picture's size, as A1111 and ComfyUI do; crop 0,0.
    int original_width, original_height;
    int crop_left, crop_top;
    int target_width, target_height;
    sdg_model_sampling model_sampling;  // DEFAULT, or LCM for a latent-consistency-distilled
                                   // checkpoint (ComfyUI "ModelSamplingDiscrete sampling=lcm")
    // LoRAs: loras[0..n_loras-1], then every <lora:NAME> or <lora:NAME:WEIGHT> tag of the prompt
    // (A1111's syntax; the tag is taken out of the text before tokenizing; weight 1 when left
    // out). NAME is a file stem, looked up as NAME.safetensors in lora_dir, then in the folders
    // `loras` and `Lora` beside the folder that holds the model (ComfyUI's and A1111's), then in
    // `loras` inside it. A LoRA of another family, one whose shapes do not fit, an unknown name
    // or a malformed tag is refused with a sentence, before anything runs.
    const sdg_lora *loras;
    int n_loras;
    const char *lora_dir;          // NULL: the folders beside the model only
    // Hires fix (A1111's "Hires. fix"), text-to-image only: the picture is made at width x
    // height (the model's native size, typically), made bigger to hires_width x hires_height
    // (multiples of 8, at least width x height; both 0: no hires fix) by hires_upscale, then
    // refined there by an image-to-image pass of hires_steps steps (0: steps) at hires_strength
    // with the same prompts, sampler, schedule and seed (picture i of a batch: seed + i). The
    // result holds the refined pictures; progress counts both passes.
    int hires_width, hires_height;
    sdg_hires_upscale hires_upscale;
    float hires_strength;          // 0..1 (default 0.7, A1111's)
    int hires_steps;
    sdg_resize_fn hires_resize;    // SDG_HIRES_PIXEL: required
    void *hires_resize_data;
} sdg_gen_params;

SDG_API sdg_gen_params sdg_gen_default_params(void);

typedef struct sdg_result {
    int n_images;
    sdg_image **images;            // owned, n_images RGB pictures
    int latent_channels, latent_height, latent_width;
    float *latents;                // owned, n_images*C*H*W, the final latents before decoding
    char *notes;                   // owned, NULL or sentences for the user about what was
                                   // applied only in part (LoRA modules that match no layer)
} sdg_result;

// Runs text-to-image (no init_image), image-to-image (init_image) or inpainting (init_image and
// mask). On success *out holds the result; on failure *out is NULL and err says why (for an
// embedding the prompt names that cannot be used: the file and why, e.g. SDG_ERR_SHAPE for
// vectors of another width than the model's text encoder, SDG_ERR_UNSUPPORTED for a .pt). Before
// allocating anything it makes the check of sdg_ctx_estimate: a run that does not fit is refused
// with SDG_ERR_NOMEM and the estimate's sentence, and nothing is started.
SDG_API sdg_status sdg_generate(sdg_ctx *ctx, const sdg_gen_params *params, sdg_result **out,
                                sdg_error *err);
SDG_API void sdg_result_free(sdg_result *res);

// Settings recommended for a run: a distilled model runs a few steps without guidance, and so
// does a model with an LCM-LoRA. For the CLI and the dialog, which use them for what the user
// did not set.
typedef struct sdg_recommendation {
    const char *source;            // what recommends them: "Turbo" (SD-Turbo, SDXL-Turbo), "LCM"
                                   // (an LCM-distilled checkpoint), "SDXL-Lightning", "LCM-LoRA",
                                   // "SDXL-Lightning LoRA" (static); NULL: nothing does, and the
                                   // fields hold the engine's defaults
    sdg_sampler sampler;
    sdg_schedule schedule;
    int steps;
    float cfg_scale;
    sdg_model_sampling model_sampling;
} sdg_recommendation;

// Fills *out for a run of model with params' LoRAs and prompt tags (params may be NULL: the model
// alone). Found by name, as A1111 and ComfyUI users name these files: a model file (or its
// modelspec.title) with "turbo" in it runs euler_a, trailing, 1 step, CFG 1 (the model cards');
// "lcm": lcm, sgm_uniform, 4 steps, CFG 1, LCM model sampling; an SDXL one with "lightning":
// euler, trailing, CFG 1 and the steps in its name ("4step"). A LoRA with "lcm" in its file
// stem (--lora, or the name of a <lora:NAME> tag) makes it lcm, sgm_uniform, 4 steps, CFG 1
// (ComfyUI's LCM-LoRA settings); "lightning" (SDXL) euler, trailing, its steps, CFG 1. A LoRA's
// recommendation wins over the model's. Returns out->source.
SDG_API const char *sdg_recommend(const sdg_model *model, const sdg_gen_params *params,
                                  sdg_recommendation *out);

// ---------------------------------------------------------------------------------------------
// Memory: what a run needs at its peak, against what the machine can give.
//
// Available memory is /proc/meminfo's MemAvailable, or less when the cgroup the process runs in
// (or one above it; v1 or v2) leaves less room under its limit; the environment variable
// SDG_MEMORY_LIMIT (bytes, or with a unit: "200M", "6G") replaces that figure. Page cache counts
// as available, so F32 weights used in place from the file's mapping are counted as needed by
// every run; float32 copies already made by the loader are held and are not needed again. Swap
// is not counted. When nothing can be read the figure is unknown and no run is refused. Figures
// in messages are in powers of 1000 ("4.3 GB"); SDG_MEMORY_LIMIT takes K, M, G, T the same way
// and Ki, Mi, Gi, Ti as powers of 1024.

typedef struct sdg_memory_estimate {
    uint64_t weights_bytes;    // the model's weights as held: float32 copies plus the F32 tensors
                               // used in place from the mapping
    uint64_t arena_bytes;      // the networks' working memory, measured by the dry run that
                               // sdg_generate makes: exactly what it reserves
    uint64_t result_bytes;     // the pictures and latents handed back
    uint64_t extra_bytes;      // the caller's own, from sdg_gen_params.extra_bytes
    uint64_t working_bytes;    // arena + result + extra
    uint64_t total_bytes;      // the peak: weights + working
    uint64_t needed_bytes;     // what the run must still get: total less what the process already
                               // holds (float32 weight copies, an arena big enough from an
                               // earlier run)
    uint64_t available_bytes;  // what the machine can give now (0 when unknown)
    bool available_known;      // false: /proc and the cgroup files could not be read
    bool fits;                 // !available_known || needed_bytes <= available_bytes
    int width, height;         // the size of the pictures (the init image's for img2img/inpaint)
} sdg_memory_estimate;

// Sizes the run params describes on ctx without running it: checks params as sdg_generate does,
// plans the run and makes its dry run (every allocation, no arithmetic: under a millisecond for
// SD 1.5 at 2048x2048), then reads the available memory. Only the sizes of init_image and
// mask are read, not their pixels. Works on a model loaded with header_only. Returns SDG_OK when
// the run fits (or the available memory is unknown); SDG_ERR_NOMEM with the sentence sdg_generate
// would refuse with (e.g. "this 2048x2048 run needs 10.9 GB (model 2.1 GB + working memory
// 8.7 GB) but only 6.1 GB is available; lower the size") when it does not;
// *out is filled in both cases. Other errors: a bad request, *out zeroed. The same thread rules as
// sdg_generate apply (not while ctx runs).
SDG_API sdg_status sdg_ctx_estimate(sdg_ctx *ctx, const sdg_gen_params *params,
                                    sdg_memory_estimate *out, sdg_error *err);

// ---------------------------------------------------------------------------------------------
// Tensor files: one float32 tensor read from / written to a .safetensors file (the CLI's
// --noise-in and --latent-out). Reading accepts F32, F16 and BF16 and checks the shape; the
// result is malloc'd (free() it).

SDG_API sdg_status sdg_tensor_read(const char *path, const char *name, int n_dims,
                                   const int64_t *shape, float **out, sdg_error *err);
SDG_API sdg_status sdg_tensor_write(const char *path, const char *name, int n_dims,
                                    const int64_t *shape, const float *data, sdg_error *err);

#ifdef __cplusplus
}
#endif

#endif // SDG_H
