/*
 * host.c - plugin/host.h on libgimp 2.10: image facts, pixels in and out through
 * gimp_drawable_get_buffer() and babl, the selection as a float mask, layers, parasites, undo
 * groups, progress and messages. This is the only core-facing file that calls libgimp.
 *
 * Not here: registration and argument handling (main.c), and anything about regions or the
 * engine. Every function runs on the main thread.
 */
#include <string.h>

#include <libgimp/gimp.h>

#include "plugin/host.h"
#include "plugin/core.h"

// The drawable's own colour space, so that reading and writing "R'G'B'A float" does not move
// colours between spaces (babl converts precision and grey <-> RGB for us).
static const Babl *
host_rgba_format (gint32 drawable)
{
  const Babl *own = gimp_drawable_get_format (drawable);

  return babl_format_with_space ("R'G'B'A float", own ? babl_format_get_space (own) : NULL);
}

gboolean
sdgp_host_get_info (gint32          image,
                    gint32          drawable,
                    sdgp_host_info *info,
                    GError        **error)
{
  gboolean non_empty = FALSE;
  gint     x1 = 0, y1 = 0, x2 = 0, y2 = 0;

  memset (info, 0, sizeof *info);
  if (! gimp_image_is_valid (image) || ! gimp_item_is_valid (drawable) ||
      ! gimp_item_is_drawable (drawable) || gimp_item_get_image (drawable) != image)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "The image or drawable given is not valid.");
      return FALSE;
    }

  switch (gimp_image_base_type (image))
    {
    case GIMP_RGB:  info->base = SDGP_HOST_RGB; break;
    case GIMP_GRAY: info->base = SDGP_HOST_GRAY; break;
    default:        info->base = SDGP_HOST_INDEXED; break;
    }

  switch (gimp_image_get_precision (image))
    {
    case GIMP_PRECISION_U8_LINEAR:
    case GIMP_PRECISION_U8_GAMMA:
      info->bits = 8; break;
    case GIMP_PRECISION_U16_LINEAR:
    case GIMP_PRECISION_U16_GAMMA:
      info->bits = 16; break;
    case GIMP_PRECISION_HALF_LINEAR:
    case GIMP_PRECISION_HALF_GAMMA:
      info->bits = 16; info->is_float = TRUE; break;
    case GIMP_PRECISION_FLOAT_LINEAR:
    case GIMP_PRECISION_FLOAT_GAMMA:
      info->bits = 32; info->is_float = TRUE; break;
    case GIMP_PRECISION_DOUBLE_LINEAR:
    case GIMP_PRECISION_DOUBLE_GAMMA:
      info->bits = 64; info->is_float = TRUE; break;
    default:
      info->bits = 32; break;
    }

  info->image_width = gimp_image_width (image);
  info->image_height = gimp_image_height (image);
  info->is_layer = gimp_item_is_layer (drawable);
  info->has_alpha = gimp_drawable_has_alpha (drawable);
  gimp_drawable_offsets (drawable, &info->x, &info->y);
  info->width = gimp_drawable_width (drawable);
  info->height = gimp_drawable_height (drawable);

  if (gimp_selection_bounds (image, &non_empty, &x1, &y1, &x2, &y2) && non_empty &&
      x2 > x1 && y2 > y1)
    {
      info->has_selection = TRUE;
      info->sel_x = x1;
      info->sel_y = y1;
      info->sel_width = x2 - x1;
      info->sel_height = y2 - y1;
    }
  return TRUE;
}

float *
sdgp_host_read_rgba (gint32   drawable,
                     int      x,
                     int      y,
                     int      width,
                     int      height,
                     GError **error)
{
  GeglBuffer *buffer;
  float      *data;
  gint        off_x = 0, off_y = 0;

  data = sdgp_core_alloc_pixels (width, height, 4, error);
  if (! data)
    return NULL;
  buffer = gimp_drawable_get_buffer (drawable);
  if (! buffer)
    {
      g_free (data);
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Could not read the drawable's pixels.");
      return NULL;
    }
  gimp_drawable_offsets (drawable, &off_x, &off_y);
  // The buffer is in drawable coordinates; GEGL_ABYSS_NONE reads outside it as transparent.
  gegl_buffer_get (buffer, GEGL_RECTANGLE (x - off_x, y - off_y, width, height), 1.0,
                   host_rgba_format (drawable), data, GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
  g_object_unref (buffer);
  return data;
}

float *
sdgp_host_read_selection (gint32   image,
                          int      x,
                          int      y,
                          int      width,
                          int      height,
                          GError **error)
{
  GeglBuffer *buffer;
  const Babl *own, *format;
  gint32      selection;
  float      *data;

  data = sdgp_core_alloc_pixels (width, height, 1, error);
  if (! data)
    return NULL;
  if (gimp_selection_is_empty (image))
    {
      for (gsize i = 0; i < (gsize) width * (gsize) height; i++)
        data[i] = 1.0f;
      return data;
    }
  selection = gimp_image_get_selection (image);
  buffer = selection > 0 ? gimp_drawable_get_buffer (selection) : NULL;
  if (! buffer)
    {
      g_free (data);
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Could not read the selection.");
      return NULL;
    }
  // Read the mask in its own tone curve, so that a half-selected pixel reads as 0.5 whether the
  // channel is stored as "Y' u8" or linear "Y u16"/"Y float".
  own = gimp_drawable_get_format (selection);
  format = babl_format ("Y float");
  if (own && strcmp (babl_get_name (babl_format_get_model (own)), "Y'") == 0)
    format = babl_format ("Y' float");
  // The selection channel covers the image, so image coordinates are buffer coordinates.
  gegl_buffer_get (buffer, GEGL_RECTANGLE (x, y, width, height), 1.0, format, data,
                   GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
  g_object_unref (buffer);
  for (gsize i = 0; i < (gsize) width * (gsize) height; i++)
    data[i] = CLAMP (data[i], 0.0f, 1.0f);
  return data;
}

void
sdgp_host_undo_group_begin (gint32 image)
{
  gimp_image_undo_group_start (image);
}

void
sdgp_host_undo_group_end (gint32 image)
{
  gimp_image_undo_group_end (image);
}

// Where a layer "above drawable" goes: the drawable's own layer (the layer of a layer mask),
// else the active layer, else the top of the stack.
static void
host_place_above (gint32  image,
                  gint32  drawable,
                  gint32 *parent,
                  gint   *position)
{
  gint32 layer = -1;

  if (gimp_item_is_layer (drawable))
    layer = drawable;
  else if (gimp_item_is_layer_mask (drawable))
    layer = gimp_layer_from_mask (drawable);
  if (layer <= 0)
    layer = gimp_image_get_active_layer (image);

  *parent = 0;
  *position = 0;
  if (layer > 0)
    {
      gint32 p = gimp_item_get_parent (layer);

      *parent = p > 0 ? p : 0;
      *position = MAX (0, gimp_image_get_item_position (image, layer));
    }
}

gint32
sdgp_host_insert_layer (gint32       image,
                        gint32       drawable,
                        const char  *name,
                        const float *rgba,
                        int          x,
                        int          y,
                        int          width,
                        int          height,
                        const char  *parasite_name,
                        const char  *parasite_text,
                        GError     **error)
{
  GimpImageType  type;
  GimpParasite  *parasite;
  GeglBuffer    *buffer;
  gint32         layer, parent;
  gint           position;

  type = gimp_image_base_type (image) == GIMP_GRAY ? GIMP_GRAYA_IMAGE : GIMP_RGBA_IMAGE;
  layer = gimp_layer_new (image, name, width, height, type, 100.0, GIMP_LAYER_MODE_NORMAL);
  if (layer <= 0)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED,
                   "Could not create a %dx%d layer.", width, height);
      return -1;
    }
  host_place_above (image, drawable, &parent, &position);
  if (! gimp_image_insert_layer (image, layer, parent, position))
    {
      gimp_item_delete (layer);
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Could not add the new layer.");
      return -1;
    }
  gimp_layer_set_offsets (layer, x, y);

  buffer = gimp_drawable_get_buffer (layer);
  if (! buffer)
    {
      gimp_image_remove_layer (image, layer);
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Could not write the new layer.");
      return -1;
    }
  gegl_buffer_set (buffer, GEGL_RECTANGLE (0, 0, width, height), 0, host_rgba_format (layer),
                   rgba, GEGL_AUTO_ROWSTRIDE);
  g_object_unref (buffer);   // flushes the tiles to GIMP
  gimp_drawable_update (layer, 0, 0, width, height);

  parasite = gimp_parasite_new (parasite_name,
                                GIMP_PARASITE_PERSISTENT | GIMP_PARASITE_UNDOABLE,
                                (guint32) strlen (parasite_text) + 1, parasite_text);
  if (! parasite || ! gimp_item_attach_parasite (layer, parasite))
    {
      gimp_parasite_free (parasite);
      gimp_image_remove_layer (image, layer);
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED,
                   "Could not store the parameters on the new layer.");
      return -1;
    }
  gimp_parasite_free (parasite);
  return layer;
}

void
sdgp_host_remove_layer (gint32 image,
                        gint32 layer)
{
  gimp_image_remove_layer (image, layer);
}
