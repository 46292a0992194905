/*
 * params.c - the values a Filters > Diffusion run starts from when nothing was remembered.
 *
 * Not here: validation (core.c) or the PDB argument table (the front ends).
 */
#include <string.h>

#include "params.h"

// tests/gimp/test-precision.scm sets the remembered precision through these bytes.
G_STATIC_ASSERT (G_STRUCT_OFFSET (sdgp_params, precision) == 6176);

void
sdgp_params_init (sdgp_params *p,
                  sdgp_mode    mode)
{
  memset (p, 0, sizeof *p);
  g_strlcpy (p->sampler, "euler_a", sizeof p->sampler);
  // The engine's choice (sdg_precision SDG_PRECISION_DEFAULT, today `fast`).
  g_strlcpy (p->precision, "default", sizeof p->precision);
  g_strlcpy (p->prediction, "auto", sizeof p->prediction);
  p->steps = 20;
  p->cfg_scale = 7.0;
  p->seed = -1;
  p->random_seed = TRUE;
  p->batch_count = 1;
  // Inpainting regenerates the hole entirely; image-to-image keeps some of the original.
  p->strength = (mode == SDGP_INPAINT) ? 1.0 : 0.75;
  p->color_match = (mode == SDGP_INPAINT);
}
