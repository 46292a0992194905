/*
 * core.h - what a Filters > Diffusion procedure does, independent of the GIMP version: checks the
 * image and the parameters, finds the model, works out the region (region.h), reads pixels and
 * the selection through host.h, runs the engine on a worker thread (worker.h), scales and
 * composites the pictures back and adds them as layers in one undo group.
 *
 * Not here: libgimp (host.h is the boundary), PDB registration and argument parsing (the front
 * end's main.c), the dialog (ui/dialog.h).
 */
#ifndef SDGP_CORE_H
#define SDGP_CORE_H

#include <glib.h>

#include "params.h"

#define SDGP_ERROR (sdgp_error_quark ())

typedef enum sdgp_error_code {
  SDGP_ERROR_INVALID,       // a parameter or the image/drawable is not usable
  SDGP_ERROR_UNSUPPORTED,   // an image the plug-in does not handle (indexed)
  SDGP_ERROR_MODEL,         // the model is missing or cannot be loaded
  SDGP_ERROR_FAILED         // the engine or GIMP failed
} sdgp_error_code;

GQuark sdgp_error_quark (void);

// The persistent layer parasite holding a result's generation parameters: a GKeyFile text,
// group [gimp-diffusion], keys mode, prompt, negative_prompt, model, family (sdg_family_name),
// prediction (what the model ran as: eps or v), sampler, steps, cfg_scale,
// seed, schedule, model_sampling, precision (the setting: default, exact, fast), decoder (vae or taesd), kernels (the matrix kernels it ran with,
// sdg_kernels_name), loras (the loras setting's files as NAME:WEIGHT, e.g.
// "style.safetensors:0.8;", only when there are any; the prompt's <lora:...> tags stay in prompt),
// strength, color_match, width, height (the generated size: the hires fix's first pass), hires
// (only with a hires fix: "WxH,UPSCALE,STRENGTH,STEPS", its second pass's size, latent or pixel,
// strength, steps with 0 for the steps), x, y, region_width, region_height.
#define SDGP_PARASITE_NAME "gimp-diffusion-parameters"
#define SDGP_PARASITE_GROUP "gimp-diffusion"

// The default checkpoint's file name inside the models folder.
#define SDGP_DEFAULT_MODEL "sdg-default.safetensors"

// Batch count limit of one run.
#define SDGP_MAX_BATCH 16

// PDB procedure name of each mode ("plug-in-diffusion-text-to-image", ...).
const char *sdgp_mode_procedure (sdgp_mode mode);

// Menu label, icon name (icons/<icon>.png), blurb and help of each mode's procedure.
typedef struct sdgp_mode_texts {
  const char *label;
  const char *icon;
  const char *blurb;
  const char *help;
} sdgp_mode_texts;
const sdgp_mode_texts *sdgp_mode_info (sdgp_mode mode);

// The models folder: p->models_dir, else $SDG_MODELS_DIR, else the build's datadir one.
// Returns a newly allocated string.
char    *sdgp_core_models_dir (const sdgp_params *p);

// The checkpoint to load: p->model, else the default model in the models folder. NULL and
// error (SDGP_ERROR_MODEL) when that file does not exist.
char    *sdgp_core_model_path (const sdgp_params *p, GError **error);

// FALSE and error when the image cannot be worked on in mode (indexed colour, invalid ids, an
// inpaint without a selection).
gboolean sdgp_core_check_image (sdgp_mode mode, gint32 image, gint32 drawable, GError **error);

// The engine's sampler names, "euler, euler_a, ..." (the procedures' argument docs and errors
// list them from here, so they cannot go stale). g_free it.
gchar   *sdgp_sampler_names (void);

// FALSE and error (SDGP_ERROR_INVALID) naming the first parameter out of range (an unknown
// sampler or precision name, and a LoRA entry sdgp_params_loras refuses, included).
gboolean sdgp_core_check_params (sdgp_mode mode, const sdgp_params *p, GError **error);

// Runs mode on drawable of image with p. fb: the dialog's feedback, or NULL to report through
// GIMP's progress bar. On success the new layers (p->batch_count of them) sit above the active
// layer in one undo group, *seed_used (optional) holds the first seed, and the engine's notes
// (LoRA modules that matched no layer) have gone to the user as a message. On failure or cancel
// (G_IO_ERROR_CANCELLED) the image is unchanged. Main thread only.
gboolean sdgp_core_run (sdgp_mode mode, gint32 image, gint32 drawable, const sdgp_params *p,
                        const sdgp_feedback *fb, gint32 *seed_used, GError **error);

// A zero-filled w x h x channels float buffer (g_free it), or NULL with error set (an empty
// region, or out of memory). Shared by the core and the front ends' pixel reads.
float   *sdgp_core_alloc_pixels (int width, int height, int channels, GError **error);

// What a procedure call runs on; both front ends keep one per call.
typedef struct sdgp_target {
  sdgp_mode mode;
  gint32    image, drawable;
} sdgp_target;

// A run without the dialog (non-interactive, Filters > Repeat): "new seed each run"
// (remembered from the dialog) draws a new seed; reports through GIMP's progress bar.
gboolean sdgp_core_run_params (const sdgp_target *t, const sdgp_params *p, GError **error);

// The dialog's run function (an sdgp_run_fn of ui/dialog.h; target is an sdgp_target): the
// dialog draws its own seed and passes it as a plain number, so p is run as given.
gboolean sdgp_core_run_dialog (const sdgp_params *p, const sdgp_feedback *fb, gpointer target,
                               GError **error);

// The dialog's estimate function (an sdgp_estimate_fn of ui/dialog.h; target is an sdgp_target):
// the generation size and the memory the run would need at its peak (model, the engine's working
// memory, the plug-in's own copies of the region), e.g. "512 × 512, scaled to 1000 × 750 —
// needs 3.1 GB"; *fits FALSE when the machine cannot give that much. Reads the model's header
// only, unless the model is loaded already. NULL and error when there is no model or no usable
// image. Main thread, never during a run.
gchar   *sdgp_core_estimate_dialog (const sdgp_params *p, gpointer target, gboolean *fits,
                                    GError **error);

struct sdg_recommendation;

// The dialog's recommendation function (an sdgp_recommend_fn of ui/dialog.h; target is an
// sdgp_target): sdg_recommend for p's model with p's LoRAs and the prompt's <lora:...> tags,
// on the model the estimate reads (its header only, unless it is loaded). Returns rec->source:
// NULL when nothing recommends settings, or when the model cannot be read. Main thread, never
// during a run.
const char *sdgp_core_recommend_dialog (const sdgp_params *p, gpointer target,
                                        struct sdg_recommendation *rec);

// Frees what runs keep between them (the loaded model). Call once before the plug-in exits.
void     sdgp_core_shutdown (void);

#endif // SDGP_CORE_H
