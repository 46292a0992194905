/*
 * params.c - the values a Filters > Diffusion run starts from when nothing was remembered, and
 * the one reader of the loras text (the check and the run in core.c both use it, so what is
 * refused before a run and what the engine gets cannot differ).
 *
 * Not here: the other checks (core.c) or the PDB argument table (the front ends).
 */
#include <math.h>
#include <string.h>

#include "params.h"
#include "core.h"
#include "sdg.h"

// tests/gimp/test-precision.scm sets the remembered precision through these bytes.
G_STATIC_ASSERT (G_STRUCT_OFFSET (sdgp_params, precision) == 6176);
// tests/gimp/test-settings.scm sets these the same way.
G_STATIC_ASSERT (G_STRUCT_OFFSET (sdgp_params, schedule) == 10344);
G_STATIC_ASSERT (G_STRUCT_OFFSET (sdgp_params, model_sampling) == 10360);
G_STATIC_ASSERT (G_STRUCT_OFFSET (sdgp_params, hires) == 10376);
G_STATIC_ASSERT (G_STRUCT_OFFSET (sdgp_params, hires_upscale) == 10400);

void
sdgp_params_init (sdgp_params *p,
                  sdgp_mode    mode)
{
  memset (p, 0, sizeof *p);
  g_strlcpy (p->sampler, "euler_a", sizeof p->sampler);
  // The engine's choice (sdg_precision SDG_PRECISION_DEFAULT, today `fast`).
  g_strlcpy (p->precision, "default", sizeof p->precision);
  g_strlcpy (p->prediction, "auto", sizeof p->prediction);
  g_strlcpy (p->schedule, "default", sizeof p->schedule);
  g_strlcpy (p->model_sampling, "default", sizeof p->model_sampling);
  // A1111's Hires. fix defaults: twice the size, latent upscale, strength 0.7, the same steps.
  p->hires_scale = 2.0;
  p->hires_strength = 0.7;
  g_strlcpy (p->hires_upscale, "latent", sizeof p->hires_upscale);
  p->steps = 20;
  p->cfg_scale = 7.0;
  p->seed = -1;
  p->random_seed = TRUE;
  p->batch_count = 1;
  // Inpainting regenerates the hole entirely; image-to-image keeps some of the original.
  p->strength = (mode == SDGP_INPAINT) ? 1.0 : 0.75;
  p->color_match = (mode == SDGP_INPAINT);
}

// One entry, trimmed and not empty: cut to its file in place with *weight set, or FALSE and error
// naming it.
static gboolean
lora_entry (gchar    *entry,
            double   *weight,
            GError  **error)
{
  gchar *colon = strrchr (entry, ':');

  *weight = 1.0;
  // What follows the last ':' is the weight, unless it is the rest of a path (C:\dir\a.st) or
  // the whole entry names a file (a ':' in a file name).
  if (colon && ! strpbrk (colon + 1, "/\\") && ! g_file_test (entry, G_FILE_TEST_IS_REGULAR))
    {
      gchar *text = g_strstrip (g_strdup (colon + 1));
      gchar *end = NULL;

      *weight = g_ascii_strtod (text, &end);
      if (! text[0] || *end != '\0' || ! isfinite (*weight))
        {
          if (! text[0])
            g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                         "The LoRA entry '%s' has nothing after its ':' (write FILE or "
                         "FILE:WEIGHT, e.g. style.safetensors:0.8).", entry);
          else
            g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                         "The LoRA entry '%s' has '%s' as its weight, not a number (write FILE "
                         "or FILE:WEIGHT, e.g. style.safetensors:0.8).", entry, text);
          g_free (text);
          return FALSE;
        }
      g_free (text);
      if (fabs (*weight) > 10.0)
        {
          g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                       "The weight of the LoRA entry '%s' must be from -10 to 10 (got %g).",
                       entry, *weight);
          return FALSE;
        }
      *colon = '\0';
      g_strchomp (entry);
    }
  if (! entry[0])
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "A LoRA entry names no file (write FILE or FILE:WEIGHT).");
      return FALSE;
    }
  if (! g_file_test (entry, G_FILE_TEST_EXISTS))
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "The LoRA file '%s' does not exist.", entry);
      return FALSE;
    }
  if (! g_file_test (entry, G_FILE_TEST_IS_REGULAR))
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "The LoRA '%s' is not a file (a .safetensors file is needed).", entry);
      return FALSE;
    }
  return TRUE;
}

gboolean
sdgp_params_loras (const sdgp_params *p,
                   sdg_lora         **loras,
                   int               *n_loras,
                   GError           **error)
{
  gchar    **entries;
  GArray    *weights = g_array_new (FALSE, FALSE, sizeof (float));
  GPtrArray *files = g_ptr_array_new ();
  gsize      bytes = 0;
  gboolean   ok = TRUE;

  *loras = NULL;
  *n_loras = 0;
  // A stored or typed text may lack its end; never read past the field.
  {
    gchar *text = g_strndup (p->loras, sizeof p->loras);

    entries = g_strsplit_set (text, "\n;", -1);
    g_free (text);
  }
  for (gchar **e = entries; *e && ok; e++)
    {
      double w;

      g_strstrip (*e);   // "\r" of a pasted Windows line too
      if (! (*e)[0])
        continue;
      ok = lora_entry (*e, &w, error);
      if (ok)
        {
          float f = (float) w;

          g_ptr_array_add (files, *e);
          g_array_append_val (weights, f);
          bytes += strlen (*e) + 1;
        }
    }
  if (ok && files->len > 0)
    {
      // One block: the array, then the paths it points to.
      gsize     head = files->len * sizeof (sdg_lora);
      sdg_lora *out = g_malloc (head + bytes);
      gchar    *str = (gchar *) out + head;

      for (guint i = 0; i < files->len; i++)
        {
          gsize n = strlen (files->pdata[i]) + 1;

          memcpy (str, files->pdata[i], n);
          out[i].path = str;
          out[i].weight = g_array_index (weights, float, i);
          str += n;
        }
      *loras = out;
      *n_loras = (int) files->len;
    }
  g_ptr_array_free (files, TRUE);
  g_array_free (weights, TRUE);
  g_strfreev (entries);
  return ok;
}
