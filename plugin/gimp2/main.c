/*
 * main.c - the GIMP 2.10 front end of gimp-diffusion: registers the three procedures under
 * Filters > Diffusion (query), turns PDB arguments or the dialog into sdgp_params, remembers
 * the last values (gimp_get_data/gimp_set_data, Filters > Repeat) and hands the run to the
 * version-neutral core (core.h). The dialog's own settings (models folder, "New seed each run",
 * "Match colours", precision, prediction, fast decode, schedule, model sampling, the hires fix)
 * are not arguments; they are remembered with the rest of
 * sdgp_params. Errors go back to the caller as GIMP_PDB_EXECUTION_ERROR with
 * the message as the second return value, as GIMP 2.10's own plug-ins do.
 *
 * Not here: pixels, layers, undo (host.c), regions and the engine (core.c), the dialog (ui/).
 */
#include <string.h>

#include <gio/gio.h>
#include <libgimp/gimp.h>

#include "plugin/core.h"
#include "plugin/params.h"
#ifdef SDGP_HAVE_DIALOG
#include "ui/dialog.h"
#endif

#ifndef SDGP_ICONS_DIR
#define SDGP_ICONS_DIR "/usr/local/share/gimp-diffusion/icons"
#endif
#ifndef SDGP_VERSION
#define SDGP_VERSION "unknown"
#endif

#define SDGP_AUTHOR "GIMP Diffusion authors"
#define SDGP_DATE "2025"
#define SDGP_MENU "<Image>/Filters/Diffusion"

// Where this executable lives: icons and models may sit beside it (user-local install).
static char *plugin_dir;

static void query (void);
static void run   (const gchar *name, gint nparams, const GimpParam *param,
                   gint *nreturn_vals, GimpParam **return_vals);

const GimpPlugInInfo PLUG_IN_INFO = { NULL, NULL, query, run };

// ---------------------------------------------------------------------------------------------
// Registration

static const GimpParamDef args[] = {
  { GIMP_PDB_INT32, "run-mode", "The run mode { RUN-INTERACTIVE (0), RUN-NONINTERACTIVE (1), "
                                "RUN-WITH-LAST-VALS (2) }" },
  { GIMP_PDB_IMAGE, "image", "Input image" },
  { GIMP_PDB_DRAWABLE, "drawable", "Input drawable (its layer is the source and the new layers "
                                   "go above it)" },
  { GIMP_PDB_STRING, "prompt", "What to paint (UTF-8; emphasis: (words:1.3), (words), [words])" },
  { GIMP_PDB_STRING, "negative-prompt", "What to avoid (may be empty)" },
  { GIMP_PDB_STRING, "model", "Checkpoint file (.safetensors: SD 1.x, SD 2.x or SDXL) or "
                              "diffusers folder; empty = the default model "
                              "sdg-default.safetensors in the models folder" },
  { GIMP_PDB_STRING, "sampler", NULL },   // "Sampler: " and the engine's names (query)
  { GIMP_PDB_INT32, "steps", "Sampling steps (1 to 1000)" },
  { GIMP_PDB_FLOAT, "cfg-scale", "Classifier-free guidance scale (0 to 100; 1 = no guidance)" },
  { GIMP_PDB_INT32, "seed", "Random seed (0 to 2147483647; -1 = random)" },
  { GIMP_PDB_INT32, "batch-count", "Number of pictures, one layer each (1 to 16)" },
  { GIMP_PDB_FLOAT, "strength", "How much to change: 0 keeps the image, 1 ignores it (0 to 1)" },
  { GIMP_PDB_STRING, "loras", "LoRAs to apply: FILE or FILE:WEIGHT entries (weight -10 to 10, "
                              "1 when left out) separated by newlines or ';'; empty = none. The "
                              "prompt's <lora:NAME:WEIGHT> tags add more" },
};
#define ARG_SAMPLER 6
// Every procedure ends with "loras"; text-to-image has no "strength" before it.
#define ARG_STRENGTH 11
#define ARG_LORAS 12
#define N_ARGS_T2I 12
#define N_ARGS_STRENGTH 13
G_STATIC_ASSERT (G_N_ELEMENTS (args) == N_ARGS_STRENGTH);

static void
register_icon (const char *proc,
               const char *icon)
{
  char *file = g_strconcat (icon, ".png", NULL);
  char *path = plugin_dir ? g_build_filename (plugin_dir, "icons", file, NULL) : NULL;

  // A user-local install keeps its icons beside the executable; else the installed datadir.
  if (! path || ! g_file_test (path, G_FILE_TEST_IS_REGULAR))
    {
      g_free (path);
      path = g_build_filename (SDGP_ICONS_DIR, file, NULL);
    }
  if (g_file_test (path, G_FILE_TEST_IS_REGULAR))
    gimp_plugin_icon_register (proc, GIMP_ICON_TYPE_IMAGE_FILE, (const guint8 *) path);
  g_free (path);
  g_free (file);
}

static void
query (void)
{
  GimpParamDef a[G_N_ELEMENTS (args)];
  GimpParamDef t2i_args[N_ARGS_T2I];
  gchar       *names = sdgp_sampler_names ();
  gchar       *sampler_doc = g_strdup_printf ("Sampler: one of %s", names);

  memcpy (a, args, sizeof a);
  a[ARG_SAMPLER].description = sampler_doc;
  memcpy (t2i_args, a, ARG_STRENGTH * sizeof *a);
  t2i_args[ARG_STRENGTH] = a[ARG_LORAS];
  for (int m = 0; m < SDGP_MODE_COUNT; m++)
    {
      const char            *name  = sdgp_mode_procedure ((sdgp_mode) m);
      const sdgp_mode_texts *texts = sdgp_mode_info ((sdgp_mode) m);

      gimp_install_procedure (name, texts->blurb, texts->help, SDGP_AUTHOR, SDGP_AUTHOR,
                              SDGP_DATE, texts->label, "RGB*, GRAY*", GIMP_PLUGIN,
                              m == SDGP_TEXT_TO_IMAGE ? N_ARGS_T2I : N_ARGS_STRENGTH, 0,
                              m == SDGP_TEXT_TO_IMAGE ? t2i_args : a, NULL);
      gimp_plugin_menu_register (name, SDGP_MENU);
      register_icon (name, texts->icon);
    }
  g_free (sampler_doc);
  g_free (names);
}

// ---------------------------------------------------------------------------------------------
// Arguments

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
params_from_pdb (sdgp_mode        mode,
                 gint             nparams,
                 const GimpParam *param,
                 sdgp_params     *p,
                 GError         **error)
{
  int want = mode == SDGP_TEXT_TO_IMAGE ? N_ARGS_T2I : N_ARGS_STRENGTH;

  if (nparams != want)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "%s takes %d arguments, not %d.", sdgp_mode_procedure (mode), want, nparams);
      return FALSE;
    }
  if (! copy_string (p->prompt, sizeof p->prompt, param[3].data.d_string, "prompt", error) ||
      ! copy_string (p->negative_prompt, sizeof p->negative_prompt, param[4].data.d_string,
                     "negative prompt", error) ||
      ! copy_string (p->model, sizeof p->model, param[5].data.d_string, "model path", error) ||
      ! copy_string (p->sampler, sizeof p->sampler, param[6].data.d_string, "sampler name",
                     error))
    return FALSE;
  p->steps = param[7].data.d_int32;
  p->cfg_scale = param[8].data.d_float;
  p->seed = param[9].data.d_int32;
  p->random_seed = p->seed < 0;
  p->batch_count = param[10].data.d_int32;
  if (mode != SDGP_TEXT_TO_IMAGE)
    p->strength = param[ARG_STRENGTH].data.d_float;
  if (! copy_string (p->loras, sizeof p->loras, param[want - 1].data.d_string, "LoRA list",
                     error))
    return FALSE;
  // The PDB caller names the model explicitly; the dialog's folder does not apply. Precision is
  // no procedure argument: a call runs the engine's default, whatever the dialog remembers, so
  // its result depends on its arguments alone (as in GIMP 3, where it is an auxiliary argument).
  p->models_dir[0] = '\0';
  g_strlcpy (p->precision, "default", sizeof p->precision);
  g_strlcpy (p->prediction, "auto", sizeof p->prediction);
  p->fast_decode = FALSE;
  g_strlcpy (p->schedule, "default", sizeof p->schedule);
  g_strlcpy (p->model_sampling, "default", sizeof p->model_sampling);
  p->hires = FALSE;
  // Nothing was recommended to the call: the dialog may apply the model's recommendation.
  p->recommended[0] = '\0';
  return TRUE;
}

// The remembered values of mode, or its defaults.
static void
params_load (sdgp_mode    mode,
             sdgp_params *p)
{
  const char *name = sdgp_mode_procedure (mode);
  gint        size = gimp_get_data_size (name);

  sdgp_params_init (p, mode);
  // Values stored by an earlier version (fields are only ever added at the end; the oldest read
  // has none from loras on) are read as far as they go; the fields after them keep their
  // defaults.
  if (size >= (gint) G_STRUCT_OFFSET (sdgp_params, loras) && size <= (gint) sizeof *p)
    {
      sdgp_params *stored = g_new0 (sdgp_params, 1);

      gimp_get_data (name, stored);
      memcpy (p, stored, size);
      g_free (stored);
      if (size < (gint) (G_STRUCT_OFFSET (sdgp_params, loras) + sizeof p->loras))
        memset (p->loras, 0, sizeof p->loras);
      // Stored bytes come back as they were written, but never trust a string's end.
      p->prompt[sizeof p->prompt - 1] = '\0';
      p->negative_prompt[sizeof p->negative_prompt - 1] = '\0';
      p->model[sizeof p->model - 1] = '\0';
      p->models_dir[sizeof p->models_dir - 1] = '\0';
      p->sampler[sizeof p->sampler - 1] = '\0';
      p->precision[sizeof p->precision - 1] = '\0';
      p->prediction[sizeof p->prediction - 1] = '\0';
      p->loras[sizeof p->loras - 1] = '\0';
      p->schedule[sizeof p->schedule - 1] = '\0';
      p->model_sampling[sizeof p->model_sampling - 1] = '\0';
      p->hires_upscale[sizeof p->hires_upscale - 1] = '\0';
      p->recommended[sizeof p->recommended - 1] = '\0';
    }
}

// ---------------------------------------------------------------------------------------------
// Runs

static void
run (const gchar      *name,
     gint              nparams,
     const GimpParam  *param,
     gint             *nreturn_vals,
     GimpParam       **return_vals)
{
  static GimpParam   values[2];
  static char       *message;
  GimpPDBStatusType  status = GIMP_PDB_SUCCESS;
  GimpRunMode        run_mode;
  sdgp_target        t = { SDGP_TEXT_TO_IMAGE, -1, -1 };
  sdgp_params        p;
  GError            *error = NULL;
  gboolean           found = FALSE;

  *nreturn_vals = 1;
  *return_vals = values;
  values[0].type = GIMP_PDB_STATUS;

  for (int m = 0; m < SDGP_MODE_COUNT; m++)
    if (strcmp (name, sdgp_mode_procedure ((sdgp_mode) m)) == 0)
      {
        t.mode = (sdgp_mode) m;
        found = TRUE;
      }
  if (! found || nparams < 3)
    {
      values[0].data.d_status = GIMP_PDB_CALLING_ERROR;
      return;
    }
  run_mode = (GimpRunMode) param[0].data.d_int32;
  t.image = param[1].data.d_image;
  t.drawable = param[2].data.d_drawable;

  gegl_init (NULL, NULL);
  params_load (t.mode, &p);

  if (! sdgp_core_check_image (t.mode, t.image, t.drawable, &error))
    status = GIMP_PDB_EXECUTION_ERROR;
  else switch (run_mode)
    {
    case GIMP_RUN_INTERACTIVE:
#ifdef SDGP_HAVE_DIALOG
      if (! sdgp_dialog_run (t.mode, &p, sdgp_core_run_dialog, sdgp_core_estimate_dialog,
                             sdgp_core_recommend_dialog, &t))
        status = GIMP_PDB_CANCEL;
#else
      // Built without the dialog: run with the last values.
      if (! sdgp_core_run_params (&t, &p, &error))
        status = GIMP_PDB_EXECUTION_ERROR;
#endif
      break;

    case GIMP_RUN_NONINTERACTIVE:
      if (! params_from_pdb (t.mode, nparams, param, &p, &error))
        status = GIMP_PDB_CALLING_ERROR;
      else if (! sdgp_core_check_params (t.mode, &p, &error))
        status = GIMP_PDB_CALLING_ERROR;
      else if (! sdgp_core_run_params (&t, &p, &error))
        status = GIMP_PDB_EXECUTION_ERROR;
      break;

    case GIMP_RUN_WITH_LAST_VALS:
      if (! sdgp_core_run_params (&t, &p, &error))
        status = GIMP_PDB_EXECUTION_ERROR;
      break;

    default:
      status = GIMP_PDB_CALLING_ERROR;
      break;
    }

  if (status == GIMP_PDB_SUCCESS)
    gimp_set_data (name, &p, sizeof p);
  if (error)
    {
      if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        status = GIMP_PDB_CANCEL;
      else
        {
          if (run_mode == GIMP_RUN_INTERACTIVE)
            gimp_message (error->message);
          g_free (message);
          message = g_strdup (error->message);
          *nreturn_vals = 2;
          values[1].type = GIMP_PDB_STRING;
          values[1].data.d_string = message;
        }
      g_error_free (error);
    }
  values[0].data.d_status = status;
  sdgp_core_shutdown ();
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
  ret = gimp_main (&PLUG_IN_INFO, argc, argv);
  g_free (plugin_dir);
  return ret;
}
