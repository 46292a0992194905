/*
 * core.c - the three Filters > Diffusion procedures, version-neutral: validate, find the model,
 * compute the region (region.h), read pixels through host.h, generate on the worker thread,
 * scale and composite back, then add the layers in one undo group.
 *
 * The image is touched only at the very end, after every picture is ready, so an error or a
 * Cancel anywhere before leaves it exactly as it was; a failure while adding layers takes the
 * ones already added out again.
 *
 * Not here: libgimp (host.h), registration and argument parsing (gimp2/main.c), the dialog.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

#include "core.h"
#include "host.h"
#include "region.h"
#include "worker.h"
#include "sdg.h"

#ifndef SDGP_MODELS_DIR
#define SDGP_MODELS_DIR "/usr/local/share/gimp-diffusion/models"
#endif

G_DEFINE_QUARK (sdgp-error-quark, sdgp_error)

static const char *const mode_procedures[SDGP_MODE_COUNT] = {
  "plug-in-diffusion-text-to-image",
  "plug-in-diffusion-image-to-image",
  "plug-in-diffusion-inpaint",
};

static const char *const mode_names[SDGP_MODE_COUNT] = {
  "text-to-image", "image-to-image", "inpaint",
};

const char *
sdgp_mode_procedure (sdgp_mode mode)
{
  return (unsigned) mode < SDGP_MODE_COUNT ? mode_procedures[mode] : NULL;
}

// What the PDB browser and the menus show, the same in every GIMP version.
static const sdgp_mode_texts mode_texts[SDGP_MODE_COUNT] = {
  { "_Text to Image...", "diffusion-text-to-image",
    "Paint a new layer from a text prompt with Stable Diffusion",
    "Generates pictures from the prompt with a Stable Diffusion checkpoint (SD 1.x, SD 2.x, SDXL) "
    "on the CPU and "
    "adds each as a new layer above the active layer, covering the selection bounds, or the "
    "whole image when nothing is selected. The picture is generated at about the model's native "
    "size and scaled to the region. Each layer is named from the prompt and seed and carries "
    "its generation parameters in the 'gimp-diffusion-parameters' parasite. Seed -1 draws a "
    "random seed; batch count N makes N layers with seeds seed..seed+N-1." },
  { "_Image to Image...", "diffusion-image-to-image",
    "Restyle the active layer (or its selected part) with Stable Diffusion",
    "Re-renders the selection bounds of the active layer (the whole layer without a selection) "
    "following the prompt, starting from its pixels: strength 0 keeps the picture, 1 ignores it. "
    "The result is added as a new layer above the active one, over the same region, keeping the "
    "layer's transparency; the source layer is not changed. Layers carry their generation "
    "parameters in the 'gimp-diffusion-parameters' parasite." },
  { "Inpaint _Selection...", "diffusion-inpaint",
    "Repaint the selected part of the active layer with Stable Diffusion",
    "Regenerates the selection following the prompt, looking at a context region around it "
    "(generated at about the model's native size and scaled back). The result is a new layer "
    "over the context region: inside the selection the new pixels (soft selection edges "
    "blended), outside it an exact copy of the original, so nothing outside the selection "
    "changes. Needs a selection. Strength 1 regenerates the selection entirely. Layers carry "
    "their generation parameters in the 'gimp-diffusion-parameters' parasite." },
};

const sdgp_mode_texts *
sdgp_mode_info (sdgp_mode mode)
{
  return (unsigned) mode < SDGP_MODE_COUNT ? &mode_texts[mode] : NULL;
}

// ---------------------------------------------------------------------------------------------
// Checks

char *
sdgp_core_models_dir (const sdgp_params *p)
{
  const char *env = g_getenv ("SDG_MODELS_DIR");

  if (p && p->models_dir[0])
    return g_strdup (p->models_dir);
  if (env && *env)
    return g_strdup (env);
  return g_strdup (SDGP_MODELS_DIR);
}

char *
sdgp_core_model_path (const sdgp_params *p,
                      GError           **error)
{
  char *dir, *path;

  if (p->model[0])
    {
      GStatBuf st;

      /* Whatever is there goes to the engine, whose sentence says what is wrong with it (a
       * folder, a FIFO, a symlink loop, a truncated file); only a missing path is said here. */
      if (g_lstat (p->model, &st) == 0)
        return g_strdup (p->model);
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_MODEL,
                   "The model file '%s' does not exist.", p->model);
      return NULL;
    }
  dir = sdgp_core_models_dir (p);
  path = g_build_filename (dir, SDGP_DEFAULT_MODEL, NULL);
  if (! g_file_test (path, G_FILE_TEST_IS_REGULAR))
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_MODEL,
                   "No model given and the default model '%s' is not installed in %s. "
                   "Choose a Stable Diffusion checkpoint (.safetensors: SD 1.x, SD 2.x or SDXL) "
                   "as the model.",
                   SDGP_DEFAULT_MODEL, dir);
      g_free (path);
      path = NULL;
    }
  g_free (dir);
  return path;
}

gboolean
sdgp_core_check_image (sdgp_mode mode,
                       gint32    image,
                       gint32    drawable,
                       GError  **error)
{
  sdgp_host_info info;

  if (! sdgp_host_get_info (image, drawable, &info, error))
    return FALSE;
  if (info.base == SDGP_HOST_INDEXED)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_UNSUPPORTED,
                   "Diffusion does not work on indexed images. Convert the image to RGB "
                   "(Image > Mode > RGB) and try again.");
      return FALSE;
    }
  if (mode == SDGP_INPAINT && ! info.has_selection)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "Inpaint Selection needs a selection: select the part to repaint first.");
      return FALSE;
    }
  return TRUE;
}

gchar *
sdgp_sampler_names (void)
{
  GString *names = g_string_new (NULL);

  for (int i = 0; i < SDG_SAMPLER_COUNT; i++)
    g_string_append_printf (names, "%s%s", i ? ", " : "", sdg_sampler_name ((sdg_sampler) i));
  return g_string_free (names, FALSE);
}

gboolean
sdgp_core_check_params (sdgp_mode          mode,
                        const sdgp_params *p,
                        GError           **error)
{
  sdg_sampler sampler;

  if ((unsigned) mode >= SDGP_MODE_COUNT)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID, "Unknown mode %d.", (int) mode);
      return FALSE;
    }
  if (! g_utf8_validate (p->prompt, -1, NULL) || ! g_utf8_validate (p->negative_prompt, -1, NULL))
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID, "The prompt is not valid UTF-8.");
      return FALSE;
    }
  if (! sdg_sampler_from_name (p->sampler, &sampler))
    {
      gchar *names = sdgp_sampler_names ();

      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "Unknown sampler '%s' (one of: %s).", p->sampler, names);
      g_free (names);
      return FALSE;
    }
  if (! sdg_schedule_from_name (p->schedule, NULL))
    {
      GString *names = g_string_new (NULL);

      for (int i = 0; i < SDG_SCHEDULE_COUNT; i++)
        g_string_append_printf (names, "%s%s", i ? ", " : "",
                                sdg_schedule_name ((sdg_schedule) i));
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "Unknown schedule '%s' (one of: %s).", p->schedule, names->str);
      g_string_free (names, TRUE);
      return FALSE;
    }
  if (! sdg_model_sampling_from_name (p->model_sampling, NULL))
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "Unknown model sampling '%s' (one of: default, lcm).", p->model_sampling);
      return FALSE;
    }
  if (! sdg_prediction_from_name (p->prediction, NULL))
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "Unknown prediction '%s' (one of: auto, eps, v).", p->prediction);
      return FALSE;
    }
  if (! sdg_precision_from_name (p->precision, NULL))
    {
      GString *names = g_string_new (NULL);

      for (int i = 0; i < SDG_PRECISION_COUNT; i++)
        g_string_append_printf (names, "%s%s", i ? ", " : "",
                                sdg_precision_name ((sdg_precision) i));
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "Unknown precision '%s' (one of: %s).", p->precision, names->str);
      g_string_free (names, TRUE);
      return FALSE;
    }
  if (p->steps < 1 || p->steps > 1000)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "Steps must be from 1 to 1000 (got %d).", p->steps);
      return FALSE;
    }
  if (! isfinite (p->cfg_scale) || p->cfg_scale < 0.0 || p->cfg_scale > 100.0)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "CFG scale must be from 0 to 100 (got %g).", p->cfg_scale);
      return FALSE;
    }
  if (p->seed < -1)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "Seed must be -1 (random) or from 0 to %d (got %d).", G_MAXINT32, p->seed);
      return FALSE;
    }
  if (p->batch_count < 1 || p->batch_count > SDGP_MAX_BATCH)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "Batch count must be from 1 to %d (got %d).", SDGP_MAX_BATCH, p->batch_count);
      return FALSE;
    }
  if (mode != SDGP_TEXT_TO_IMAGE &&
      (! isfinite (p->strength) || p->strength < 0.0 || p->strength > 1.0))
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "Strength must be from 0 to 1 (got %g).", p->strength);
      return FALSE;
    }
  // The hires fix is text-to-image's; other modes ignore its settings.
  if (mode == SDGP_TEXT_TO_IMAGE && p->hires)
    {
      if (! sdg_hires_upscale_from_name (p->hires_upscale, NULL))
        {
          g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                       "Unknown hires fix upscale '%s' (one of: latent, pixel).",
                       p->hires_upscale);
          return FALSE;
        }
      if (! isfinite (p->hires_scale) || p->hires_scale < 1.0 || p->hires_scale > 4.0)
        {
          g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                       "The hires fix's upscale factor must be from 1 to 4 (got %g).",
                       p->hires_scale);
          return FALSE;
        }
      if (! isfinite (p->hires_strength) || p->hires_strength < 0.0 || p->hires_strength > 1.0)
        {
          g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                       "The hires fix's strength must be from 0 to 1 (got %g).",
                       p->hires_strength);
          return FALSE;
        }
      if (p->hires_steps < 0 || p->hires_steps > 1000)
        {
          g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                       "The hires fix's steps must be from 0 (the steps) to 1000 (got %d).",
                       p->hires_steps);
          return FALSE;
        }
    }
  {
    sdg_lora *loras;
    int       n;

    if (! sdgp_params_loras (p, &loras, &n, error))
      return FALSE;
    g_free (loras);
  }
  return TRUE;
}

// ---------------------------------------------------------------------------------------------
// Progress through GIMP when there is no dialog

static void
host_fb_progress (gpointer ui, int step, int total, double seconds_left)
{
  (void) ui;
  (void) seconds_left;
  if (total > 0)
    sdgp_host_progress_update ((double) step / total);
}

// ---------------------------------------------------------------------------------------------
// Results

// The layer's name: the start of the prompt and the seed.
static char *
core_layer_name (const sdgp_params *p,
                 guint64            seed)
{
  char *prompt = g_strstrip (g_strdup (p->prompt));
  char *name;

  for (char *c = prompt; *c; c++)
    if (*c == '\n' || *c == '\r' || *c == '\t')
      *c = ' ';
  if (g_utf8_strlen (prompt, -1) > 48)
    {
      char *cut = g_strndup (prompt, g_utf8_offset_to_pointer (prompt, 47) - prompt);

      g_free (prompt);
      prompt = g_strconcat (cut, "\xe2\x80\xa6", NULL);   // U+2026 HORIZONTAL ELLIPSIS
      g_free (cut);
    }
  name = g_strdup_printf ("%s (seed %" G_GUINT64_FORMAT ")", prompt[0] ? prompt : "Diffusion",
                          seed);
  g_free (prompt);
  return name;
}

static char *
core_parasite_text (sdgp_mode             mode,
                    const sdgp_params    *p,
                    const char           *model,
                    const sdg_model_info *info,
                    const sdg_lora       *loras,
                    int                   n_loras,
                    guint64               seed,
                    int gw, int gh, int hw, int hh, sdgp_rect r)
{
  GKeyFile     *kf = g_key_file_new ();
  const char   *g = SDGP_PARASITE_GROUP;
  char         *text;
  sdg_precision precision = SDG_PRECISION_DEFAULT;

  sdg_precision_from_name (p->precision, &precision);   // checked by sdgp_core_check_params

  g_key_file_set_string (kf, g, "mode", mode_names[mode]);
  g_key_file_set_string (kf, g, "prompt", p->prompt);
  g_key_file_set_string (kf, g, "negative_prompt", p->negative_prompt);
  g_key_file_set_string (kf, g, "model", model);
  // What the model was run as: its family and what its UNet predicts (found from the file or
  // set in the dialog), e.g. "SDXL", "v".
  g_key_file_set_string (kf, g, "family", sdg_family_name (info->family));
  g_key_file_set_string (kf, g, "prediction", sdg_prediction_name (info->prediction));
  g_key_file_set_string (kf, g, "sampler", p->sampler);
  g_key_file_set_string (kf, g, "schedule", p->schedule);
  g_key_file_set_string (kf, g, "model_sampling", p->model_sampling);
  g_key_file_set_integer (kf, g, "steps", p->steps);
  g_key_file_set_double (kf, g, "cfg_scale", p->cfg_scale);
  g_key_file_set_uint64 (kf, g, "seed", seed);
  // The setting, and what it ran as on this CPU: a kernel set ending in -bf16 made bfloat16
  // products; any other, float32 ones.
  g_key_file_set_string (kf, g, "precision", sdg_precision_name (precision));
  g_key_file_set_string (kf, g, "decoder", p->fast_decode ? "taesd" : "vae");
  // The LoRAs of the loras setting as NAME:WEIGHT (file names, as A1111 records them; the
  // prompt's <lora:...> tags are in the prompt already).
  if (n_loras > 0)
    {
      gchar **items = g_new0 (gchar *, n_loras + 1);

      for (int i = 0; i < n_loras; i++)
        {
          gchar  w[G_ASCII_DTOSTR_BUF_SIZE];
          gchar *base = g_path_get_basename (loras[i].path);

          items[i] = g_strconcat (base, ":",
                                  g_ascii_formatd (w, sizeof w, "%g", loras[i].weight), NULL);
          g_free (base);
        }
      g_key_file_set_string_list (kf, g, "loras", (const gchar * const *) items, n_loras);
      g_strfreev (items);
    }
  g_key_file_set_string (kf, g, "kernels", sdg_kernels_name (precision));
  if (mode != SDGP_TEXT_TO_IMAGE)
    g_key_file_set_double (kf, g, "strength", p->strength);
  if (mode == SDGP_INPAINT)
    g_key_file_set_boolean (kf, g, "color_match", p->color_match);
  g_key_file_set_integer (kf, g, "width", gw);
  g_key_file_set_integer (kf, g, "height", gh);
  // The second pass, when there was one: its size, upscale, strength and steps (0: the steps).
  if (hw != gw || hh != gh)
    {
      gchar  strength[G_ASCII_DTOSTR_BUF_SIZE];
      gchar *hires = g_strdup_printf ("%dx%d,%s,%s,%d", hw, hh, p->hires_upscale,
                                      g_ascii_formatd (strength, sizeof strength, "%g",
                                                       p->hires_strength),
                                      p->hires_steps);

      g_key_file_set_string (kf, g, "hires", hires);
      g_free (hires);
    }
  g_key_file_set_integer (kf, g, "x", r.x);
  g_key_file_set_integer (kf, g, "y", r.y);
  g_key_file_set_integer (kf, g, "region_width", r.width);
  g_key_file_set_integer (kf, g, "region_height", r.height);
  text = g_key_file_to_data (kf, NULL, NULL);
  g_key_file_free (kf);
  return text;
}

// ---------------------------------------------------------------------------------------------
// The run

typedef struct core_run {
  sdgp_mode          mode;
  const sdgp_params *p;
  sdgp_host_info     info;
  int                native;         // the model's native side (or $SDG_NATIVE_SIZE)
  sdg_model_info     model_info;     // the model loaded for the run
  sdgp_rect          r;              // the region, image coordinates
  int                gw, gh;         // generation size (the hires fix's first pass)
  int                hw, hh;         // the pictures the engine returns: the hires fix's second
                                     // pass (sdgp_region_hires_size), else gw x gh

  float             *orig_rgba;      // r, as read (img2img, inpaint)
  float             *sel;            // r, the selection (inpaint)
  float             *blend;          // r, the paste-back mask (inpaint)
  sdg_image         *init;           // gw x gh RGB
  sdg_image         *mask;           // gw x gh denoise mask
  float            **outs;           // batch_count RGBA pictures of r's size
  int                n_outs;
  sdg_lora          *loras;          // p->loras read (sdgp_params_loras), one block
  int                n_loras;
  char              *lora_dir;       // where <lora:NAME> tags are looked up first
} core_run;

static void
core_run_clear (core_run *c)
{
  g_free (c->orig_rgba);
  g_free (c->sel);
  g_free (c->blend);
  sdg_image_free (c->init);
  sdg_image_free (c->mask);
  for (int i = 0; i < c->n_outs; i++)
    g_free (c->outs[i]);
  g_free (c->outs);
  g_free (c->loras);
  g_free (c->lora_dir);
}

// The LoRAs of the run: the loras setting, and the folder the prompt's tags are looked up in
// first, `loras` in the models folder (the engine then tries the folders beside the model).
static gboolean
core_loras (core_run   *c,
            const char *models_dir,
            GError    **error)
{
  if (! sdgp_params_loras (c->p, &c->loras, &c->n_loras, error))
    return FALSE;
  c->lora_dir = g_build_filename (models_dir, "loras", NULL);
  return TRUE;
}

float *
sdgp_core_alloc_pixels (int      width,
                        int      height,
                        int      channels,
                        GError **error)
{
  float *data;

  if (width < 1 || height < 1)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID, "Empty region %dx%d.", width, height);
      return NULL;
    }
  data = g_try_malloc0_n ((gsize) width * (gsize) height, sizeof (float) * (gsize) channels);
  if (! data)
    g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED,
                 "Out of memory for a %dx%d region.", width, height);
  return data;
}

static sdg_image *
core_image (int w, int h, int channels, GError **error)
{
  sdg_image *img = sdg_image_new (w, h, channels);

  if (! img)
    g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Out of memory (%dx%d).", w, h);
  return img;
}

static int
core_native_size (const sdg_model_info *info)
{
  const char *env = g_getenv ("SDG_NATIVE_SIZE");

  // For tests and small machines: generate at about this side instead of the model's own.
  if (env && *env)
    {
      long v = strtol (env, NULL, 10);

      if (v >= SDGP_GEN_MIN_SIDE && v <= SDGP_GEN_MAX_SIDE)
        return (int) v;
    }
  return info->native_size > 0 ? info->native_size : 512;
}

// The region and the generation size (no pixels read).
static gboolean
core_region (core_run *c,
             GError  **error)
{
  const sdgp_host_info *in = &c->info;
  sdgp_rect             img = { 0, 0, in->image_width, in->image_height };
  sdgp_rect             layer = { in->x, in->y, in->width, in->height };
  sdgp_rect             sel = { in->sel_x, in->sel_y, in->sel_width, in->sel_height };
  const sdgp_rect      *selp = in->has_selection ? &sel : NULL;
  gboolean              ok = FALSE;

  switch (c->mode)
    {
    case SDGP_TEXT_TO_IMAGE:
      ok = sdgp_region_txt2img (selp, img, &c->r, error);
      break;
    case SDGP_IMAGE_TO_IMAGE:
      ok = sdgp_region_img2img (selp, layer, &c->r, error);
      break;
    default:
      ok = sdgp_region_inpaint_context (sel, layer, c->native, &c->r, error);
      break;
    }
  if (! ok)
    return FALSE;
  if (! sdgp_region_gen_size (c->r.width, c->r.height, c->native, &c->gw, &c->gh))
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "No generation size for %dx%d.",
                   c->r.width, c->r.height);
      return FALSE;
    }
  c->hw = c->gw;
  c->hh = c->gh;
  if (c->mode == SDGP_TEXT_TO_IMAGE && c->p->hires)
    sdgp_region_hires_size (c->gw, c->gh, c->r.width, c->r.height, c->p->hires_scale,
                            &c->hw, &c->hh);
  return TRUE;
}

// sdg_resize_fn for the hires fix's pixel upscale: the plug-in's own GEGL scaling (NoHalo when
// enlarging), as every picture it places gets. Called on the worker thread: GEGL processes a
// graph of its own there.
static sdg_image *
core_hires_resize (const sdg_image *img,
                   int              width,
                   int              height,
                   void            *user)
{
  sdg_image *out = sdg_image_new (width, height, 3);
  GError    *error = NULL;

  (void) user;
  if (out && ! sdgp_resample (img->data, img->width, img->height, 3, width, height, out->data,
                              &error))
    {
      g_printerr ("gimp-diffusion: %s\n", error ? error->message : "resampling failed");
      g_clear_error (&error);
      sdg_image_free (out);
      out = NULL;
    }
  return out;
}

// The engine's parameters for the run c describes (region and sizes set) that the estimate and
// the run share; the caller adds the seed, the init image, mask and its extra bytes.
static void
core_gen_params (const core_run *c,
                 sdg_gen_params *gp)
{
  const sdgp_params *p = c->p;

  // Every name was checked by sdgp_core_check_params.
  gp->prompt = p->prompt;
  gp->negative_prompt = p->negative_prompt;
  gp->width = c->gw;
  gp->height = c->gh;
  sdg_sampler_from_name (p->sampler, &gp->sampler);
  sdg_schedule_from_name (p->schedule, &gp->schedule);
  sdg_model_sampling_from_name (p->model_sampling, &gp->model_sampling);
  gp->steps = p->steps;
  gp->cfg_scale = (float) p->cfg_scale;
  sdg_precision_from_name (p->precision, &gp->precision);
  gp->decoder = p->fast_decode ? SDG_DECODER_TAESD : SDG_DECODER_VAE;
  gp->batch_count = p->batch_count;
  gp->strength = c->mode == SDGP_TEXT_TO_IMAGE ? 1.0f : (float) p->strength;
  gp->loras = c->loras;
  gp->n_loras = c->n_loras;
  gp->lora_dir = c->lora_dir;
  if (c->hw != c->gw || c->hh != c->gh)
    {
      gp->hires_width = c->hw;
      gp->hires_height = c->hh;
      sdg_hires_upscale_from_name (p->hires_upscale, &gp->hires_upscale);
      gp->hires_strength = (float) p->hires_strength;
      gp->hires_steps = p->hires_steps;
      gp->hires_resize = core_hires_resize;
    }
}

// Bytes of the plug-in's own buffers in a run (all floats, see core_prepare and core_finish):
// with `before`, what core_prepare reads before the engine starts (the region's pixels and
// selection, the engine's inputs; its temporaries counted as if held); always, what comes after
// it (every layer's pixels, one picture's temporaries). The memory guard counts what is still to
// come (sdg_gen_params.extra_bytes); the dialog's estimate counts it all.
static guint64
core_buffer_bytes (const core_run *c,
                   gboolean        before)
{
  guint64 region = (guint64) c->r.width * (guint64) c->r.height;
  guint64 gen = (guint64) c->gw * (guint64) c->gh;
  guint64 floats = region * (4 * (guint64) c->p->batch_count + 3);

  if (c->mode == SDGP_INPAINT)
    floats += region * 3;                    // the original's RGB for colour matching
  if (before && c->mode != SDGP_TEXT_TO_IMAGE)
    floats += region * (4 + 3) + gen * 3;    // orig_rgba, its RGB, the init image
  if (before && c->mode == SDGP_INPAINT)
    floats += region * (1 + 1) + gen * 2;    // selection, blend mask; resampled, denoise mask
  return floats * sizeof (float);
}

// The region, the generation size and the engine's inputs.
static gboolean
core_prepare (core_run  *c,
              gint32     image,
              gint32     drawable,
              GError   **error)
{
  gboolean ok = FALSE;
  int      n;

  if (! core_region (c, error))
    return FALSE;
  if (c->mode == SDGP_TEXT_TO_IMAGE)
    return TRUE;

  c->orig_rgba = sdgp_host_read_rgba (drawable, c->r.x, c->r.y, c->r.width, c->r.height, error);
  if (! c->orig_rgba)
    return FALSE;
  n = c->r.width * c->r.height;
  {
    float *rgb = sdgp_core_alloc_pixels (c->r.width, c->r.height, 3, error);

    if (! rgb)
      return FALSE;
    for (int i = 0; i < n; i++)
      memcpy (rgb + 3 * i, c->orig_rgba + 4 * i, 3 * sizeof (float));
    c->init = core_image (c->gw, c->gh, 3, error);
    ok = c->init && sdgp_resample (rgb, c->r.width, c->r.height, 3, c->gw, c->gh,
                                   c->init->data, error);
    g_free (rgb);
    if (! ok)
      return FALSE;
  }
  if (c->mode != SDGP_INPAINT)
    return TRUE;

  c->sel = sdgp_host_read_selection (image, c->r.x, c->r.y, c->r.width, c->r.height, error);
  if (! c->sel)
    return FALSE;
  {
    float *sel_gen = sdgp_core_alloc_pixels (c->gw, c->gh, 1, error);

    if (! sel_gen)
      return FALSE;
    c->mask = core_image (c->gw, c->gh, 1, error);
    ok = c->mask &&
         sdgp_resample (c->sel, c->r.width, c->r.height, 1, c->gw, c->gh, sel_gen, error) &&
         sdgp_mask_denoise (sel_gen, c->gw, c->gh, (float) c->p->strength,
                            (float) c->gw / (float) c->r.width, c->mask->data, error);
    g_free (sel_gen);
    if (! ok)
      return FALSE;
  }
  c->blend = sdgp_core_alloc_pixels (c->r.width, c->r.height, 1, error);
  return c->blend &&
         sdgp_mask_blend (c->sel, c->r.width, c->r.height, SDGP_BLEND_FEATHER_PX, c->blend, error);
}

// One generated picture (gw x gh RGB) -> the layer's RGBA pixels over the region.
static float *
core_finish (core_run        *c,
             const sdg_image *gen,
             GError         **error)
{
  int    w = c->r.width, h = c->r.height, n = w * h;
  float *back, *out;

  if (! gen || gen->width != c->hw || gen->height != c->hh || gen->channels != 3)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "The engine returned a %dx%d picture, "
                   "not %dx%d.", gen ? gen->width : 0, gen ? gen->height : 0, c->hw, c->hh);
      return NULL;
    }
  back = sdgp_core_alloc_pixels (w, h, 3, error);
  out = back ? sdgp_core_alloc_pixels (w, h, 4, error) : NULL;
  if (! out || ! sdgp_resample (gen->data, c->hw, c->hh, 3, w, h, back, error))
    {
      g_free (back);
      g_free (out);
      return NULL;
    }
  if (c->mode == SDGP_INPAINT)
    {
      float *orig_rgb = sdgp_core_alloc_pixels (w, h, 3, error);
      gboolean ok = orig_rgb != NULL;

      if (ok && c->p->color_match)
        {
          for (int i = 0; i < n; i++)
            memcpy (orig_rgb + 3 * i, c->orig_rgba + 4 * i, 3 * sizeof (float));
          ok = sdgp_color_match (orig_rgb, back, c->blend, w, h, back, error);
        }
      // Outside the blend mask the original pixels are copied bit for bit, alpha included.
      ok = ok && sdgp_composite (c->orig_rgba, back, c->blend, w, h, 4, out);
      if (ok == FALSE && error && ! *error)
        g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Compositing failed.");
      g_free (orig_rgb);
      if (! ok)
        {
          g_free (back);
          g_free (out);
          return NULL;
        }
    }
  else
    {
      // Image-to-image keeps the source's transparency; text-to-image is opaque.
      for (int i = 0; i < n; i++)
        {
          memcpy (out + 4 * i, back + 3 * i, 3 * sizeof (float));
          out[4 * i + 3] = c->orig_rgba ? c->orig_rgba[4 * i + 3] : 1.0f;
        }
    }
  g_free (back);
  return out;
}

// Adds every picture as a layer, all or nothing, in one undo group.
static gboolean
core_insert (core_run   *c,
             gint32      image,
             gint32      drawable,
             const char *model,
             guint64     seed,
             GError    **error)
{
  gint32  *layers = g_new0 (gint32, c->n_outs);
  gboolean ok = TRUE;
  int      done = 0;

  sdgp_host_undo_group_begin (image);
  // Each layer goes directly above the source, so the first seed ends up on top.
  for (int i = 0; i < c->n_outs && ok; i++)
    {
      char *name = core_layer_name (c->p, seed + (guint64) i);
      char *text = core_parasite_text (c->mode, c->p, model, &c->model_info, c->loras,
                                       c->n_loras, seed + (guint64) i, c->gw, c->gh, c->hw,
                                       c->hh, c->r);

      layers[done] = sdgp_host_insert_layer (image, drawable, name, c->outs[i], c->r.x, c->r.y,
                                             c->r.width, c->r.height, SDGP_PARASITE_NAME, text,
                                             error);
      ok = layers[done] > 0;
      if (ok)
        done++;
      g_free (name);
      g_free (text);
    }
  if (! ok)
    for (int i = done - 1; i >= 0; i--)
      sdgp_host_remove_layer (image, layers[i]);
  sdgp_host_undo_group_end (image);
  g_free (layers);
  if (ok)
    sdgp_host_flush ();
  return ok;
}

// Sizes the run c describes (mode, p and info set) with the model at model_path: the loaded one
// when it is, else its header only. Sets c's region and generation size and fills est, counting
// every buffer of the plug-in's as still to come (nothing is read yet). TRUE when est is filled,
// with the engine's refusal in *err when the run does not fit (est->fits FALSE); FALSE and
// error when there is no usable model or request.
static gboolean
core_estimate (core_run            *c,
               const char          *model_path,
               const char          *vocab,
               const char          *models_dir,
               sdg_memory_estimate *est,
               sdg_error           *err,
               GError             **error)
{
  const sdg_model *model;
  sdg_model_info   info;
  sdg_prediction   prediction = SDG_PREDICTION_AUTO;
  sdg_gen_params   gp = sdg_gen_default_params ();
  sdg_ctx         *ctx;
  sdg_status       st;
  float            dummy = 0.0f;
  sdg_image        init = { 0, 0, 3, &dummy }, mask = { 0, 0, 1, &dummy };

  sdg_prediction_from_name (c->p->prediction, &prediction);   // checked by sdgp_core_check_params
  model = sdgp_worker_estimate_model (model_path, vocab, models_dir, prediction, error);
  if (! model)
    return FALSE;
  sdg_model_get_info (model, &info);
  c->native = core_native_size (&info);
  if (! core_region (c, error))
    return FALSE;

  // The run core_run makes; the engine reads only the sizes of the init image and mask.
  core_gen_params (c, &gp);
  init.width = mask.width = c->gw;
  init.height = mask.height = c->gh;
  gp.init_image = c->mode != SDGP_TEXT_TO_IMAGE ? &init : NULL;
  gp.mask = c->mode == SDGP_INPAINT ? &mask : NULL;
  gp.extra_bytes = core_buffer_bytes (c, TRUE);
  ctx = sdg_ctx_new (model, sdgp_host_num_threads (), err);
  if (! ctx)
    {
      // est is not filled: a context that cannot be made is an error, never "does not fit".
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "%s", err->message);
      return FALSE;
    }
  st = sdg_ctx_estimate (ctx, &gp, est, err);
  sdg_ctx_free (ctx);
  if (st != SDG_OK && st != SDG_ERR_NOMEM)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "%s", err->message);
      return FALSE;
    }
  return TRUE;
}

// "512 × 512 px", "512 × 512, scaled to 1000 × 750" or, with a hires fix,
// "512 × 512, hires 1024 × 1024 px"
static char *
core_size_text (const core_run *c)
{
  char *first, *text;

  if (c->hw == c->gw && c->hh == c->gh)
    first = g_strdup_printf ("%d \xc3\x97 %d", c->gw, c->gh);
  else
    first = g_strdup_printf ("%d \xc3\x97 %d, hires %d \xc3\x97 %d", c->gw, c->gh, c->hw,
                             c->hh);
  if (c->hw == c->r.width && c->hh == c->r.height)
    text = g_strconcat (first, " px", NULL);
  else
    text = g_strdup_printf ("%s, scaled to %d \xc3\x97 %d", first, c->r.width, c->r.height);
  g_free (first);
  return text;
}

gboolean
sdgp_core_run (sdgp_mode            mode,
               gint32               image,
               gint32               drawable,
               const sdgp_params   *p,
               const sdgp_feedback *fb,
               gint32              *seed_used,
               GError             **error)
{
  sdgp_feedback  host_fb = { host_fb_progress, NULL, NULL, NULL };
  core_run       c;
  sdg_model_info info;
  sdg_prediction prediction = SDG_PREDICTION_AUTO;
  sdg_gen_params gp = sdg_gen_default_params ();
  sdg_result    *res = NULL;
  char          *model = NULL, *models_dir = NULL;
  const char    *vocab = g_getenv ("SDG_VOCAB");
  guint64        seed;
  gboolean       ok = FALSE;

  memset (&c, 0, sizeof c);
  c.mode = mode;
  c.p = p;
  if (! sdgp_core_check_params (mode, p, error) ||
      ! sdgp_core_check_image (mode, image, drawable, error) ||
      ! sdgp_host_get_info (image, drawable, &c.info, error))
    return FALSE;
  model = sdgp_core_model_path (p, error);
  if (! model)
    return FALSE;
  models_dir = sdgp_core_models_dir (p);
  if (! core_loras (&c, models_dir, error))
    goto out;
  if (! fb)
    {
      fb = &host_fb;
      sdgp_host_progress_init ("Diffusion: loading the model");
    }

  // The memory guard before the weights are loaded (seconds, gigabytes): a run that cannot fit
  // is refused with the engine's sentence (sdg_generate checks again once the model is loaded).
  {
    sdg_memory_estimate est;
    sdg_error           err = { 0 };

    if (! core_estimate (&c, model, vocab && *vocab ? vocab : NULL, models_dir, &est, &err,
                         error))
      goto out;
    if (! est.fits)
      {
        g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Not enough memory: %s.", err.message);
        goto out;
      }
  }

  sdg_prediction_from_name (p->prediction, &prediction);   // checked by sdgp_core_check_params
  if (! sdgp_worker_load (model, vocab && *vocab ? vocab : NULL, models_dir, prediction, fb,
                          &info, error))
    goto out;
  c.native = core_native_size (&info);
  c.model_info = info;
  if (! core_prepare (&c, image, drawable, error))
    goto out;

  seed = p->seed >= 0 ? (guint64) p->seed : (guint64) g_random_int_range (0, G_MAXINT32);
  if (seed_used)
    *seed_used = (gint32) seed;
  core_gen_params (&c, &gp);
  gp.seed = seed;
  gp.init_image = c.init;
  gp.mask = c.mask;
  gp.extra_bytes = core_buffer_bytes (&c, FALSE);

  if (fb == &host_fb)
    sdgp_host_progress_init ("Diffusion: generating");
  res = sdgp_worker_generate (&gp, sdgp_host_num_threads (), fb, error);
  if (! res)
    goto out;
  if (res->n_images != p->batch_count)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "The engine made %d pictures, not %d.",
                   res->n_images, p->batch_count);
      goto out;
    }
  c.outs = g_new0 (float *, res->n_images);
  for (int i = 0; i < res->n_images; i++)
    {
      c.outs[i] = core_finish (&c, res->images[i], error);
      if (! c.outs[i])
        goto out;
      c.n_outs++;
    }
  ok = core_insert (&c, image, drawable, model, seed, error);
  // The LoRA modules that matched no layer: the run is made, but not all of what was asked.
  if (ok && res->notes)
    sdgp_host_message (res->notes);

out:
  if (fb == &host_fb)
    sdgp_host_progress_update (1.0);
  sdg_result_free (res);
  core_run_clear (&c);
  g_free (model);
  g_free (models_dir);
  return ok;
}

gchar *
sdgp_core_estimate_dialog (const sdgp_params *p,
                           gpointer           target,
                           gboolean          *fits,
                           GError           **error)
{
  const sdgp_target  *t = target;
  core_run            c;
  sdg_memory_estimate est;
  sdg_error           err = { 0 };
  const char         *vocab = g_getenv ("SDG_VOCAB");
  char               *path, *dir, *size, *total, *avail, *text;
  gboolean            ok;

  *fits = TRUE;
  memset (&c, 0, sizeof c);
  c.mode = t->mode;
  c.p = p;
  if (! sdgp_core_check_params (t->mode, p, error) ||
      ! sdgp_core_check_image (t->mode, t->image, t->drawable, error) ||
      ! sdgp_host_get_info (t->image, t->drawable, &c.info, error))
    return NULL;
  path = sdgp_core_model_path (p, error);
  if (! path)
    return NULL;
  dir = sdgp_core_models_dir (p);
  ok = core_loras (&c, dir, error) &&
       core_estimate (&c, path, vocab && *vocab ? vocab : NULL, dir, &est, &err, error);
  g_free (path);
  g_free (dir);
  core_run_clear (&c);
  if (! ok)
    return NULL;

  size = core_size_text (&c);
  total = g_format_size (est.total_bytes);
  avail = g_format_size (est.available_bytes);
  *fits = est.fits;
  if (est.fits)
    text = g_strdup_printf ("%s \xe2\x80\x94 needs %s", size, total);
  else
    text = g_strdup_printf ("%s \xe2\x80\x94 needs %s,\nbut only %s is available", size, total,
                            avail);
  g_free (size);
  g_free (total);
  g_free (avail);
  return text;
}

const char *
sdgp_core_recommend_dialog (const sdgp_params *p,
                            gpointer           target,
                            sdg_recommendation *rec)
{
  const sdg_model *model;
  sdg_gen_params   gp = sdg_gen_default_params ();
  sdg_prediction   prediction = SDG_PREDICTION_AUTO;
  sdg_lora        *loras = NULL;
  int              n_loras = 0;
  const char      *vocab = g_getenv ("SDG_VOCAB");
  char            *path, *dir;

  (void) target;
  sdg_recommend (NULL, NULL, rec);   // the engine's defaults, source NULL
  path = sdgp_core_model_path (p, NULL);
  if (! path)
    return NULL;
  dir = sdgp_core_models_dir (p);
  // The prediction setting as the estimate passes it, so that the header read is shared.
  if (! sdg_prediction_from_name (p->prediction, &prediction))
    prediction = SDG_PREDICTION_AUTO;
  model = sdgp_worker_estimate_model (path, vocab && *vocab ? vocab : NULL, dir, prediction,
                                      NULL);
  if (model)
    {
      // Only the LoRAs' file names count; a list that cannot be read recommends from the rest
      // (the Size row says what is wrong with it).
      if (! sdgp_params_loras (p, &loras, &n_loras, NULL))
        n_loras = 0;
      gp.prompt = p->prompt;
      gp.loras = loras;
      gp.n_loras = n_loras;
      sdg_recommend (model, &gp, rec);
    }
  g_free (loras);
  g_free (dir);
  g_free (path);
  return rec->source;
}

void
sdgp_core_shutdown (void)
{
  sdgp_worker_shutdown ();
}

gboolean
sdgp_core_run_params (const sdgp_target *t,
                      const sdgp_params *p,
                      GError           **error)
{
  sdgp_params q = *p;

  if (q.random_seed)
    q.seed = -1;
  return sdgp_core_run (t->mode, t->image, t->drawable, &q, NULL, NULL, error);
}

gboolean
sdgp_core_run_dialog (const sdgp_params   *p,
                      const sdgp_feedback *fb,
                      gpointer             target,
                      GError             **error)
{
  const sdgp_target *t = target;

  return sdgp_core_run (t->mode, t->image, t->drawable, p, fb, NULL, error);
}
