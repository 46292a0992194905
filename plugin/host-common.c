/*
 * host-common.c - the parts of host.h whose libgimp calls are the same in GIMP 2.10 and 3.0
 * (displays, progress, messages, preferences). Compiled into each front end next to its own
 * gimpN/host.c, which holds everything that differs between the two APIs.
 */
#include <stdlib.h>

#include <libgimp/gimp.h>

#include "plugin/host.h"

void
sdgp_host_flush (void)
{
  gimp_displays_flush ();
}

void
sdgp_host_progress_init (const char *text)
{
  gimp_progress_init (text);
}

void
sdgp_host_progress_update (double fraction)
{
  gimp_progress_update (CLAMP (fraction, 0.0, 1.0));
}

void
sdgp_host_message (const char *text)
{
  gimp_message (text);
}

int
sdgp_host_num_threads (void)
{
  gchar *value = gimp_gimprc_query ("num-processors");
  int    n     = value ? atoi (value) : 0;

  g_free (value);
  return n > 0 && n <= 256 ? n : 0;
}
