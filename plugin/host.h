/*
 * host.h - the version boundary: everything the plug-in core needs from GIMP, as a dozen plain
 * functions over image and drawable ids. plugin/gimp2/host.c implements it on libgimp 2.10; a
 * GIMP 3 front end implements the same file set over GimpImage/GimpDrawable (which keep integer
 * ids: gimp_image_get_by_id, gimp_drawable_get_by_id).
 *
 * Conventions: rectangles are in IMAGE coordinates (layer offsets are the host's business);
 * pixels are interleaved non-premultiplied float, sRGB-encoded ("R'G'B'A float" in the drawable's
 * colour space), top row first; a returned buffer is g_malloc'd (g_free it). Every function here
 * must be called from the main thread: libgimp is not thread-safe.
 *
 * Not here: registration, argument parsing and the dialog (the front end's main.c), and any
 * region, mask or engine logic (region.h, core.h).
 */
#ifndef SDGP_HOST_H
#define SDGP_HOST_H

#include <glib.h>

typedef enum sdgp_host_base {
  SDGP_HOST_RGB = 0,
  SDGP_HOST_GRAY = 1,
  SDGP_HOST_INDEXED = 2
} sdgp_host_base;

typedef struct sdgp_host_info {
  sdgp_host_base base;          // the image's colour mode
  int            bits;          // 8, 16 or 32 per channel
  gboolean       is_float;      // half/float precision rather than integer
  int            image_width, image_height;
  gboolean       is_layer;      // the drawable is a layer (not a channel or layer mask)
  gboolean       has_alpha;
  int            x, y;          // drawable offsets in the image
  int            width, height; // drawable size
  gboolean       has_selection; // a non-empty selection exists
  int            sel_x, sel_y, sel_width, sel_height;   // its bounds (image coordinates)
} sdgp_host_info;

// Fills info for drawable of image. FALSE (and error) when the ids are invalid.
gboolean sdgp_host_get_info (gint32 image, gint32 drawable, sdgp_host_info *info,
                             GError **error);

// Reads width x height RGBA pixels of drawable starting at image point (x, y); pixels outside the
// drawable read as transparent black. Grey drawables come out as R = G = B.
float   *sdgp_host_read_rgba (gint32 drawable, int x, int y, int width, int height,
                              GError **error);

// Reads the selection of image over the rectangle as one float per pixel in [0,1] (soft edges
// kept); an image without a selection reads as all 1.
float   *sdgp_host_read_selection (gint32 image, int x, int y, int width, int height,
                                   GError **error);

// One undo group around every change a run makes.
void     sdgp_host_undo_group_begin (gint32 image);
void     sdgp_host_undo_group_end   (gint32 image);

// Adds a layer of image's colour mode and precision with alpha, named name, at image point
// (x, y), directly above drawable (above the active layer when drawable is not a layer), filled
// from rgba (width x height, as read above), with a persistent, undoable text parasite
// parasite_name = parasite_text (NUL included). Returns the layer id, or -1 and error.
gint32   sdgp_host_insert_layer (gint32 image, gint32 drawable, const char *name,
                                 const float *rgba, int x, int y, int width, int height,
                                 const char *parasite_name, const char *parasite_text,
                                 GError **error);

// Takes out a layer inserted above (used to roll back a half-done insertion).
void     sdgp_host_remove_layer (gint32 image, gint32 layer);

// Makes new layers show in open displays.
void     sdgp_host_flush (void);

// GIMP's own progress bar (status bar, or the batch console).
void     sdgp_host_progress_init   (const char *text);
void     sdgp_host_progress_update (double fraction);

// A message for the user (error console, message box or stderr in batch mode).
void     sdgp_host_message (const char *text);

// The number of threads the user gave GIMP (Preferences > System Resources), or 0 when unknown.
int      sdgp_host_num_threads (void);

#endif // SDGP_HOST_H
