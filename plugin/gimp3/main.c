/*
 * main.c - the GIMP 3.0 front end of gimp-diffusion: a GimpPlugIn that registers the same three
 * procedures as the GIMP 2.10 one (names, Filters > Diffusion menu entries, arguments, icons),
 * turns their GimpProcedureConfig into sdgp_params and hands the run to the version-neutral core
 * (core.h). GIMP 3 keeps the last values itself (the config is loaded for RUN_INTERACTIVE and
 * RUN_WITH_LAST_VALS and stored after a successful interactive run; save_last_values() stores
 * them after a successful non-interactive one too, as GIMP 2.10 does); the dialog-only values
 * (models folder, "New seed each run", "Match colours", precision, prediction, fast decode,
 * schedule, model sampling, the hires fix) are auxiliary arguments so
 * they are remembered too, without changing the procedures' signatures.
 *
 * GIMP 3 differences the callers see: the drawable is an array of drawables ("drawables",
 * exactly one accepted), and arguments may be named.
 *
 * Interactive runs use the shared dialog (ui/dialog.h, GTK 3 under GIMP 3), the same as 2.10's:
 * its live preview, progress and Cancel do not fit GIMP's generated procedure dialog.
 *
 * Not here: pixels, layers, undo (host.c), regions and the engine (core.c), the dialog (ui/).
 */
#include <string.h>

#include <gio/gio.h>
#include <libgimp/gimp.h>
#include <libgimp/gimpui.h>

#include "plugin/core.h"
#include "plugin/params.h"
#include "ui/dialog.h"

#ifndef SDGP_ICONS_DIR
#define SDGP_ICONS_DIR "/usr/local/share/gimp-diffusion/icons"
#endif
#ifndef SDGP_VERSION
#define SDGP_VERSION "unknown"
#endif

#define SDGP_BINARY "gimp-diffusion"
#define SDGP_AUTHOR "GIMP Diffusion authors"
#define SDGP_DATE "2025"
#define SDGP_MENU "<Image>/Filters/Diffusion"

// Where this executable lives: icons and models may sit beside it (user-local install).
static char *plugin_dir;

typedef struct _SdgpPlugIn      { GimpPlugIn parent_instance; } SdgpPlugIn;
typedef struct _SdgpPlugInClass { GimpPlugInClass parent_class; } SdgpPlugInClass;

static GType sdgp_plug_in_get_type (void);
G_DEFINE_TYPE (SdgpPlugIn, sdgp_plug_in, GIMP_TYPE_PLUG_IN)

// ---------------------------------------------------------------------------------------------
// Registration

static gboolean
mode_of (const char *name,
         sdgp_mode  *mode)
{
  for (int m = 0; m < SDGP_MODE_COUNT; m++)
    if (strcmp (name, sdgp_mode_procedure ((sdgp_mode) m)) == 0)
      {
        *mode = (sdgp_mode) m;
        return TRUE;
      }
  return FALSE;
}

static GFile *
icon_file (const char *icon)
{
  char  *file = g_strconcat (icon, ".png", NULL);
  char  *path = plugin_dir ? g_build_filename (plugin_dir, "icons", file, NULL) : NULL;
  GFile *result = NULL;

  // A user-local install keeps its icons beside the executable; else the installed datadir.
  if (! path || ! g_file_test (path, G_FILE_TEST_IS_REGULAR))
    {
      g_free (path);
      path = g_build_filename (SDGP_ICONS_DIR, file, NULL);
    }
  if (g_file_test (path, G_FILE_TEST_IS_REGULAR))
    result = g_file_new_for_path (path);
  g_free (path);
  g_free (file);
  return result;
}

static GimpValueArray *run (GimpProcedure *procedure, GimpRunMode run_mode, GimpImage *image,
                            GimpDrawable **drawables, GimpProcedureConfig *config,
                            gpointer run_data);

static GList *
sdgp_query_procedures (GimpPlugIn *plug_in)
{
  GList *list = NULL;

  (void) plug_in;
  for (int m = SDGP_MODE_COUNT - 1; m >= 0; m--)
    list = g_list_prepend (list, g_strdup (sdgp_mode_procedure ((sdgp_mode) m)));
  return list;
}

static GimpProcedure *
sdgp_create_procedure (GimpPlugIn  *plug_in,
                       const gchar *name)
{
  GimpProcedure *procedure;
  GFile         *icon;
  sdgp_params    d;
  sdgp_mode      mode;
  const sdgp_mode_texts *texts;
  gchar         *sampler_names, *sampler_doc;

  if (! mode_of (name, &mode))
    return NULL;
  sdgp_params_init (&d, mode);
  texts = sdgp_mode_info (mode);

  procedure = gimp_image_procedure_new (plug_in, name, GIMP_PDB_PROC_TYPE_PLUGIN, run,
                                        NULL, NULL);
  gimp_procedure_set_image_types (procedure, "RGB*, GRAY*");
  gimp_procedure_set_sensitivity_mask (procedure, GIMP_PROCEDURE_SENSITIVE_DRAWABLE);
  gimp_procedure_set_menu_label (procedure, texts->label);
  gimp_procedure_add_menu_path (procedure, SDGP_MENU);
  gimp_procedure_set_documentation (procedure, texts->blurb, texts->help, name);
  gimp_procedure_set_attribution (procedure, SDGP_AUTHOR, SDGP_AUTHOR, SDGP_DATE);
  icon = icon_file (texts->icon);
  if (icon)
    {
      gimp_procedure_set_icon_file (procedure, icon);
      g_object_unref (icon);
    }

  // The arguments of the GIMP 2.10 procedures, in the same order, after run-mode, image and
  // drawables (which GIMP 3 adds itself).
  gimp_procedure_add_string_argument (procedure, "prompt", "_Prompt",
                                      "What to paint (UTF-8; emphasis: (words:1.3), (words), [words])",
                                      d.prompt, G_PARAM_READWRITE);
  gimp_procedure_add_string_argument (procedure, "negative-prompt", "_Negative prompt",
                                      "What to avoid (may be empty)",
                                      d.negative_prompt, G_PARAM_READWRITE);
  gimp_procedure_add_string_argument (procedure, "model", "_Model",
                                      "Checkpoint file (.safetensors: SD 1.x, SD 2.x or SDXL) or "
                                      "diffusers folder; empty = the default model "
                                      "sdg-default.safetensors in the models folder",
                                      d.model, G_PARAM_READWRITE);
  // A plain string, not a GimpChoice: GIMP 3.0 quietly replaces an unknown choice with the
  // default, where a script naming a sampler that does not exist must get an error (as in 2.10).
  sampler_names = sdgp_sampler_names ();
  sampler_doc = g_strdup_printf ("Sampler: one of %s", sampler_names);
  gimp_procedure_add_string_argument (procedure, "sampler", "Sa_mpler", sampler_doc,
                                      d.sampler, G_PARAM_READWRITE);
  g_free (sampler_doc);
  g_free (sampler_names);
  gimp_procedure_add_int_argument (procedure, "steps", "S_teps", "Sampling steps (1 to 1000)",
                                   1, 1000, d.steps, G_PARAM_READWRITE);
  gimp_procedure_add_double_argument (procedure, "cfg-scale", "_CFG scale",
                                      "Classifier-free guidance scale (0 to 100; 1 = no guidance)",
                                      0.0, 100.0, d.cfg_scale, G_PARAM_READWRITE);
  gimp_procedure_add_int_argument (procedure, "seed", "_Seed",
                                   "Random seed (0 to 2147483647; -1 = random)",
                                   -1, G_MAXINT32, d.seed, G_PARAM_READWRITE);
  gimp_procedure_add_int_argument (procedure, "batch-count", "_Batch count",
                                   "Number of pictures, one layer each (1 to 16)",
                                   1, SDGP_MAX_BATCH, d.batch_count, G_PARAM_READWRITE);
  if (mode != SDGP_TEXT_TO_IMAGE)
    gimp_procedure_add_double_argument (procedure, "strength", "St_rength",
                                        "How much to change: 0 keeps the image, 1 ignores it "
                                        "(0 to 1)",
                                        0.0, 1.0, d.strength, G_PARAM_READWRITE);
  // Last, as in 2.10, where arguments are positional.
  gimp_procedure_add_string_argument (procedure, "loras", "_LoRAs",
                                      "LoRAs to apply: FILE or FILE:WEIGHT entries (weight -10 "
                                      "to 10, 1 when left out) separated by newlines or ';'; "
                                      "empty = none. The prompt's <lora:NAME:WEIGHT> tags add more",
                                      d.loras, G_PARAM_READWRITE);

  // Remembered between runs but not part of the PDB call (the dialog's own settings).
  gimp_procedure_add_string_aux_argument (procedure, "models-dir", "Models _folder",
                                          "Folder the dialog lists checkpoints from; empty = the "
                                          "default", d.models_dir, G_PARAM_READWRITE);
  gimp_procedure_add_boolean_aux_argument (procedure, "random-seed", "New seed each _run",
                                           "Draw a new seed for every run", d.random_seed,
                                           G_PARAM_READWRITE);
  gimp_procedure_add_boolean_aux_argument (procedure, "color-match", "Match c_olours",
                                           "Inpaint: match colours to the surroundings",
                                           d.color_match, G_PARAM_READWRITE);
  // A plain string like the sampler (an unknown name is an error, not the default). Auxiliary:
  // an extra argument would break every script that calls the procedures positionally in 2.10,
  // so precision is the dialog's setting and calls run the engine's default.
  gimp_procedure_add_string_aux_argument (procedure, "precision", "Prec_ision",
                                          "Arithmetic of the networks: default (the engine's "
                                          "choice, exact), exact (float32) or fast (bfloat16 "
                                          "products where the CPU has AVX512-BF16)",
                                          d.precision, G_PARAM_READWRITE);
  gimp_procedure_add_boolean_aux_argument (procedure, "fast-decode", "Fast deco_de",
                                           "Make the picture with TAESD, the tiny autoencoder, "
                                           "instead of the model's VAE", d.fast_decode,
                                           G_PARAM_READWRITE);
  gimp_procedure_add_string_aux_argument (procedure, "prediction", "Pre_diction",
                                          "What the model predicts: auto (what the file says), "
                                          "eps or v",
                                          d.prediction, G_PARAM_READWRITE);
  // Plain strings like the sampler (an unknown name is an error, not the default).
  gimp_procedure_add_string_aux_argument (procedure, "schedule", "Sc_hedule",
                                          "The sigma schedule: default, karras, simple, "
                                          "exponential, sgm_uniform, ddim_uniform or trailing",
                                          d.schedule, G_PARAM_READWRITE);
  gimp_procedure_add_string_aux_argument (procedure, "model-sampling", "Model samplin_g",
                                          "How the model was trained to be sampled: default or "
                                          "lcm (latent-consistency-distilled)",
                                          d.model_sampling, G_PARAM_READWRITE);
  // The hires fix (text to image; the other procedures keep and ignore it).
  gimp_procedure_add_boolean_aux_argument (procedure, "hires", "_Hires fix",
                                           "Refine the picture at a bigger size in a second pass",
                                           d.hires, G_PARAM_READWRITE);
  gimp_procedure_add_double_aux_argument (procedure, "hires-scale", "_Upscale by",
                                          "The second pass's size: the first's times this, at "
                                          "most the region's size (1 to 4)",
                                          1.0, 4.0, d.hires_scale, G_PARAM_READWRITE);
  gimp_procedure_add_string_aux_argument (procedure, "hires-upscale", "Upscale _mode",
                                          "How the picture is made bigger: latent or pixel",
                                          d.hires_upscale, G_PARAM_READWRITE);
  gimp_procedure_add_double_aux_argument (procedure, "hires-strength", "Hires stre_ngth",
                                          "Strength of the second pass (0 to 1)",
                                          0.0, 1.0, d.hires_strength, G_PARAM_READWRITE);
  gimp_procedure_add_int_aux_argument (procedure, "hires-steps", "Hires ste_ps",
                                       "Steps of the second pass (0: the steps)",
                                       0, 1000, d.hires_steps, G_PARAM_READWRITE);
  gimp_procedure_add_string_aux_argument (procedure, "recommended", "Recommended",
                                          "The source of the recommended settings the dialog "
                                          "applied last (empty: none)",
                                          d.recommended, G_PARAM_READWRITE);
  return procedure;
}

static void
sdgp_plug_in_class_init (SdgpPlugInClass *klass)
{
  GimpPlugInClass *plug_in_class = GIMP_PLUG_IN_CLASS (klass);

  plug_in_class->query_procedures = sdgp_query_procedures;
  plug_in_class->create_procedure = sdgp_create_procedure;
  plug_in_class->set_i18n = NULL;
}

static void
sdgp_plug_in_init (SdgpPlugIn *self)
{
  (void) self;
}

// ---------------------------------------------------------------------------------------------
// Arguments <-> sdgp_params

static gboolean
copy_string (char       *dst,
             gsize       size,
             const char *src,
             const char *what,
             GError    **error)
{
  if (! src)
    src = "";
  if (strlen (src) >= size)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID, "The %s is too long (at most %d bytes).",
                   what, (int) size - 1);
      return FALSE;
    }
  g_strlcpy (dst, src, size);
  return TRUE;
}

static gboolean
params_from_config (sdgp_mode            mode,
                    GimpProcedureConfig *config,
                    sdgp_params         *p,
                    GError             **error)
{
  gchar   *prompt = NULL, *negative = NULL, *model = NULL, *sampler = NULL, *models_dir = NULL;
  gchar   *precision = NULL, *prediction = NULL, *loras = NULL;
  gchar   *schedule = NULL, *model_sampling = NULL, *hires_upscale = NULL, *recommended = NULL;
  gboolean ok;

  sdgp_params_init (p, mode);
  g_object_get (config,
                "prompt", &prompt, "negative-prompt", &negative, "model", &model,
                "sampler", &sampler, "steps", &p->steps, "cfg-scale", &p->cfg_scale,
                "seed", &p->seed, "batch-count", &p->batch_count,
                "models-dir", &models_dir, "random-seed", &p->random_seed,
                "color-match", &p->color_match, "precision", &precision,
                "prediction", &prediction, "fast-decode", &p->fast_decode, "loras", &loras,
                "schedule", &schedule, "model-sampling", &model_sampling, "hires", &p->hires,
                "hires-scale", &p->hires_scale, "hires-upscale", &hires_upscale,
                "hires-strength", &p->hires_strength, "hires-steps", &p->hires_steps,
                "recommended", &recommended, NULL);
  if (mode != SDGP_TEXT_TO_IMAGE)
    g_object_get (config, "strength", &p->strength, NULL);
  ok = copy_string (p->prompt, sizeof p->prompt, prompt, "prompt", error) &&
       copy_string (p->negative_prompt, sizeof p->negative_prompt, negative, "negative prompt",
                    error) &&
       copy_string (p->model, sizeof p->model, model, "model path", error) &&
       copy_string (p->sampler, sizeof p->sampler, sampler, "sampler name", error) &&
       copy_string (p->models_dir, sizeof p->models_dir, models_dir, "models folder", error) &&
       copy_string (p->precision, sizeof p->precision, precision, "precision name", error) &&
       copy_string (p->prediction, sizeof p->prediction, prediction, "prediction name", error) &&
       copy_string (p->loras, sizeof p->loras, loras, "LoRA list", error) &&
       copy_string (p->schedule, sizeof p->schedule, schedule, "schedule name", error) &&
       copy_string (p->model_sampling, sizeof p->model_sampling, model_sampling,
                    "model sampling name", error) &&
       copy_string (p->hires_upscale, sizeof p->hires_upscale, hires_upscale,
                    "hires upscale name", error) &&
       copy_string (p->recommended, sizeof p->recommended, recommended, "recommendation",
                    error);
  g_free (schedule);
  g_free (model_sampling);
  g_free (hires_upscale);
  g_free (recommended);
  g_free (prompt);
  g_free (negative);
  g_free (model);
  g_free (sampler);
  g_free (models_dir);
  g_free (precision);
  g_free (prediction);
  g_free (loras);
  return ok;
}

// What the dialog changed goes back into the config, which GIMP stores as the last values.
static void
params_to_config (sdgp_mode            mode,
                  const sdgp_params   *p,
                  GimpProcedureConfig *config)
{
  g_object_set (config,
                "prompt", p->prompt, "negative-prompt", p->negative_prompt, "model", p->model,
                "sampler", p->sampler, "steps", p->steps, "cfg-scale", p->cfg_scale,
                "seed", p->seed, "batch-count", p->batch_count, "models-dir", p->models_dir,
                "random-seed", p->random_seed, "color-match", p->color_match,
                "precision", p->precision, "prediction", p->prediction,
                "fast-decode", p->fast_decode, "loras", p->loras, "schedule", p->schedule,
                "model-sampling", p->model_sampling, "hires", p->hires,
                "hires-scale", p->hires_scale, "hires-upscale", p->hires_upscale,
                "hires-strength", p->hires_strength, "hires-steps", p->hires_steps,
                "recommended", p->recommended, NULL);
  if (mode != SDGP_TEXT_TO_IMAGE)
    g_object_set (config, "strength", p->strength, NULL);
}

// libgimp 3.0 stores the last values only after a successful INTERACTIVE run
// (gimp_procedure_config_end_run). The GIMP 2.10 plug-in remembers every successful run, so that
// Filters > Repeat (RUN_WITH_LAST_VALS) after a script's call repeats that call; to keep that,
// a successful NONINTERACTIVE run writes the file libgimp's begin_run reads for
// RUN_WITH_LAST_VALS and RUN_INTERACTIVE: <profile>/plug-in-settings/<config type>.last, in
// GimpConfig's own format (libgimp 3.0.4 exports no save-last call). A failure only costs the
// remembered values, so it is reported and the run still succeeds.
static void
save_last_values (GimpProcedureConfig *config)
{
  gchar  *name = g_strconcat (G_OBJECT_TYPE_NAME (config), ".last", NULL);
  GFile  *dir  = gimp_directory_file ("plug-in-settings", NULL);
  GFile  *file = g_file_get_child (dir, name);
  GError *error = NULL;

  if (! g_file_make_directory_with_parents (dir, NULL, &error) &&
      ! g_error_matches (error, G_IO_ERROR, G_IO_ERROR_EXISTS))
    g_printerr ("gimp-diffusion: could not create %s: %s\n", g_file_peek_path (dir),
                error->message);
  else
    {
      g_clear_error (&error);
      if (! gimp_config_serialize_to_file (GIMP_CONFIG (config), file, "settings",
                                           "end of settings", NULL, &error))
        g_printerr ("gimp-diffusion: could not store the last values: %s\n", error->message);
    }
  g_clear_error (&error);
  g_object_unref (file);
  g_object_unref (dir);
  g_free (name);
}

// ---------------------------------------------------------------------------------------------
// Runs


static GimpValueArray *
run (GimpProcedure        *procedure,
     GimpRunMode           run_mode,
     GimpImage            *image,
     GimpDrawable        **drawables,
     GimpProcedureConfig  *config,
     gpointer              run_data)
{
  GimpPDBStatusType status = GIMP_PDB_SUCCESS;
  sdgp_target       t = { SDGP_TEXT_TO_IMAGE, -1, -1 };
  sdgp_params       p;
  GError           *error = NULL;
  gsize             n_drawables;

  (void) run_data;
  if (! mode_of (gimp_procedure_get_name (procedure), &t.mode))
    return gimp_procedure_new_return_values (procedure, GIMP_PDB_CALLING_ERROR, NULL);
  n_drawables = drawables ? gimp_core_object_array_get_length ((GObject **) drawables) : 0;
  if (! image || n_drawables != 1)
    {
      g_set_error (&error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "%s works on exactly one drawable.", gimp_procedure_get_name (procedure));
      return gimp_procedure_new_return_values (procedure, GIMP_PDB_CALLING_ERROR, error);
    }
  t.image = gimp_image_get_id (image);
  t.drawable = gimp_item_get_id (GIMP_ITEM (drawables[0]));

  gegl_init (NULL, NULL);
  if (! sdgp_core_check_image (t.mode, t.image, t.drawable, &error))
    status = GIMP_PDB_EXECUTION_ERROR;
  else if (! params_from_config (t.mode, config, &p, &error))
    status = GIMP_PDB_CALLING_ERROR;
  else switch (run_mode)
    {
    case GIMP_RUN_INTERACTIVE:
      gimp_ui_init (SDGP_BINARY);
      // libgimp stores the config as the last values after this (successful) run.
      if (sdgp_dialog_run (t.mode, &p, sdgp_core_run_dialog, sdgp_core_estimate_dialog,
                           sdgp_core_recommend_dialog, &t))
        params_to_config (t.mode, &p, config);
      else
        status = GIMP_PDB_CANCEL;
      break;

    case GIMP_RUN_NONINTERACTIVE:
      // The PDB caller names the model explicitly and chooses the seed; the dialog's folder and
      // "New seed each run" do not apply. Precision is no argument of the call: it runs the
      // engine's default (libgimp leaves auxiliary arguments at their defaults here; said again
      // so that the two GIMPs cannot drift apart).
      p.models_dir[0] = '\0';
      p.random_seed = p.seed < 0;
      g_strlcpy (p.precision, "default", sizeof p.precision);
      g_strlcpy (p.prediction, "auto", sizeof p.prediction);
      p.fast_decode = FALSE;
      g_strlcpy (p.schedule, "default", sizeof p.schedule);
      g_strlcpy (p.model_sampling, "default", sizeof p.model_sampling);
      p.hires = FALSE;
      p.recommended[0] = '\0';   // the dialog may apply the model's recommendation
      if (! sdgp_core_check_params (t.mode, &p, &error))
        status = GIMP_PDB_CALLING_ERROR;
      else if (! sdgp_core_run_params (&t, &p, &error))
        status = GIMP_PDB_EXECUTION_ERROR;
      else
        {
          g_object_set (config, "random-seed", p.random_seed, "precision", p.precision,
                        "prediction", p.prediction, "fast-decode", p.fast_decode,
                        "schedule", p.schedule, "model-sampling", p.model_sampling,
                        "hires", p.hires, "recommended", p.recommended, NULL);
          save_last_values (config);
        }
      break;

    case GIMP_RUN_WITH_LAST_VALS:
      if (! sdgp_core_run_params (&t, &p, &error))
        status = GIMP_PDB_EXECUTION_ERROR;
      break;

    default:
      status = GIMP_PDB_CALLING_ERROR;
      break;
    }
  sdgp_core_shutdown ();

  if (error && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    {
      g_clear_error (&error);
      status = GIMP_PDB_CANCEL;
    }
  if (error && run_mode == GIMP_RUN_INTERACTIVE)
    gimp_message (error->message);
  // GIMP takes the error: its message goes back to the caller with the status.
  return gimp_procedure_new_return_values (procedure, status, error);
}

int
main (int   argc,
      char *argv[])
{
  int ret;

  if (argc > 0 && argv[0] && g_path_is_absolute (argv[0]))
    plugin_dir = g_path_get_dirname (argv[0]);
  // A user-local install may keep its models beside the plug-in.
  if (plugin_dir && ! g_getenv ("SDG_MODELS_DIR"))
    {
      char *models = g_build_filename (plugin_dir, "models", NULL);

      if (g_file_test (models, G_FILE_TEST_IS_DIR))
        g_setenv ("SDG_MODELS_DIR", models, FALSE);
      g_free (models);
    }
  ret = gimp_main (sdgp_plug_in_get_type (), argc, argv);
  g_free (plugin_dir);
  return ret;
}
