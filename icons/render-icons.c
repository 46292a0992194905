/*
 * render-icons.c - renders the hand-written SVG icons in this folder to the PNGs the plug-in
 * installs. An offline tool, run once by hand after editing an SVG; not part of the build:
 *
 *     cc -o /tmp/render-icons icons/render-icons.c $(pkg-config --cflags --libs gdk-pixbuf-2.0)
 *     /tmp/render-icons 24 icons/diffusion-*.svg
 *
 * It needs gdk-pixbuf's SVG loader (librsvg); each NAME.svg becomes NAME.png beside it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gdk-pixbuf/gdk-pixbuf.h>

int
main (int argc, char **argv)
{
  int size = argc > 1 ? atoi (argv[1]) : 0;

  if (argc < 3 || size < 8 || size > 1024)
    {
      fprintf (stderr, "usage: %s SIZE FILE.svg...\n", argv[0]);
      return 2;
    }
  for (int i = 2; i < argc; i++)
    {
      GError    *error = NULL;
      GdkPixbuf *pb = gdk_pixbuf_new_from_file_at_size (argv[i], size, size, &error);
      size_t     n = strlen (argv[i]);
      char      *out;

      if (! pb)
        {
          fprintf (stderr, "%s: %s\n", argv[i], error->message);
          g_error_free (error);
          return 1;
        }
      out = g_strdup (argv[i]);
      if (n > 4 && strcmp (out + n - 4, ".svg") == 0)
        strcpy (out + n - 4, ".png");
      else
        {
          g_free (out);
          out = g_strconcat (argv[i], ".png", NULL);
        }
      if (! gdk_pixbuf_save (pb, out, "png", &error, NULL))
        {
          fprintf (stderr, "%s: %s\n", out, error->message);
          g_error_free (error);
          g_object_unref (pb);
          g_free (out);
          return 1;
        }
      printf ("%s (%dx%d)\n", out, gdk_pixbuf_get_width (pb), gdk_pixbuf_get_height (pb));
      g_object_unref (pb);
      g_free (out);
    }
  return 0;
}
