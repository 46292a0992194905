/*
 * host.c - plugin/host.h on libgimp 3.0: the core's integer ids are turned back into GimpImage /
 * GimpDrawable objects (gimp_image_get_by_id, gimp_drawable_get_by_id, owned by libgimp, never
 * unreffed here); pixels go in and out through gimp_drawable_get_buffer() and babl; the selection
 * is read as a float mask; layers, parasites, undo groups, progress and messages.
 *
 * Not here: registration, arguments and remembered values (main.c), and anything about regions
 * or the engine (core.c). Every function runs on the main thread.
 */
#include <stdlib.h>
#include <string.h>

#include <libgimp/gimp.h>

#include "plugin/host.h"
#include "plugin/core.h"

// NULL unless id names an image/drawable that still exists.
static GimpImage *
host_image (gint32 id)
{
  GimpImage *image = id > 0 ? gimp_image_get_by_id (id) : NULL;

  return image && gimp_image_is_valid (image) ? image : NULL;
}

static GimpDrawable *
host_drawable (gint32 id)
{
  GimpDrawable *drawable = id > 0 ? gimp_drawable_get_by_id (id) : NULL;

  return drawable && gimp_item_is_valid (GIMP_ITEM (drawable)) ? drawable : NULL;
}

// The drawable's own colour space, so that reading and writing "R'G'B'A float" does not move
// colours between spaces (babl converts precision and grey <-> RGB for us).
static const Babl *
host_rgba_format (GimpDrawable *drawable)
{
  const Babl *own = gimp_drawable_get_format (drawable);

  return babl_format_with_space ("R'G'B'A float", own ? babl_format_get_space (own) : NULL);
}

gboolean
sdgp_host_get_info (gint32          image_id,
                    gint32          drawable_id,
                    sdgp_host_info *info,
                    GError        **error)
{
  GimpImage    *image    = host_image (image_id);
  GimpDrawable *drawable = host_drawable (drawable_id);
  gboolean      non_empty = FALSE;
  gint          x1 = 0, y1 = 0, x2 = 0, y2 = 0;

  memset (info, 0, sizeof *info);
  if (! image || ! drawable || gimp_item_get_image (GIMP_ITEM (drawable)) != image)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "The image or drawable given is not valid.");
      return FALSE;
    }

  switch (gimp_image_get_base_type (image))
    {
    case GIMP_RGB:  info->base = SDGP_HOST_RGB; break;
    case GIMP_GRAY: info->base = SDGP_HOST_GRAY; break;
    default:        info->base = SDGP_HOST_INDEXED; break;
    }

  // GIMP 3 has three tone curves per component type (linear, non-linear, perceptual); only the
  // component type matters here.
  switch (gimp_image_get_precision (image))
    {
    case GIMP_PRECISION_U8_LINEAR:
    case GIMP_PRECISION_U8_NON_LINEAR:
    case GIMP_PRECISION_U8_PERCEPTUAL:
      info->bits = 8; break;
    case GIMP_PRECISION_U16_LINEAR:
    case GIMP_PRECISION_U16_NON_LINEAR:
    case GIMP_PRECISION_U16_PERCEPTUAL:
      info->bits = 16; break;
    case GIMP_PRECISION_HALF_LINEAR:
    case GIMP_PRECISION_HALF_NON_LINEAR:
    case GIMP_PRECISION_HALF_PERCEPTUAL:
      info->bits = 16; info->is_float = TRUE; break;
    case GIMP_PRECISION_FLOAT_LINEAR:
    case GIMP_PRECISION_FLOAT_NON_LINEAR:
    case GIMP_PRECISION_FLOAT_PERCEPTUAL:
      info->bits = 32; info->is_float = TRUE; break;
    case GIMP_PRECISION_DOUBLE_LINEAR:
    case GIMP_PRECISION_DOUBLE_NON_LINEAR:
    case GIMP_PRECISION_DOUBLE_PERCEPTUAL:
      info->bits = 64; info->is_float = TRUE; break;
    default:
      info->bits = 32; break;
    }

  info->image_width = gimp_image_get_width (image);
  info->image_height = gimp_image_get_height (image);
  info->is_layer = gimp_item_is_layer (GIMP_ITEM (drawable));
  info->has_alpha = gimp_drawable_has_alpha (drawable);
  gimp_drawable_get_offsets (drawable, &info->x, &info->y);
  info->width = gimp_drawable_get_width (drawable);
  info->height = gimp_drawable_get_height (drawable);

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
sdgp_host_read_rgba (gint32   drawable_id,
                     int      x,
                     int      y,
                     int      width,
                     int      height,
                     GError **error)
{
  GimpDrawable *drawable = host_drawable (drawable_id);
  GeglBuffer   *buffer;
  float        *data;
  gint          off_x = 0, off_y = 0;

  data = sdgp_core_alloc_pixels (width, height, 4, error);
  if (! data)
    return NULL;
  buffer = drawable ? gimp_drawable_get_buffer (drawable) : NULL;
  if (! buffer)
    {
      g_free (data);
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Could not read the drawable's pixels.");
      return NULL;
    }
  gimp_drawable_get_offsets (drawable, &off_x, &off_y);
  // The buffer is in drawable coordinates; GEGL_ABYSS_NONE reads outside it as transparent.
  gegl_buffer_get (buffer, GEGL_RECTANGLE (x - off_x, y - off_y, width, height), 1.0,
                   host_rgba_format (drawable), data, GEGL_AUTO_ROWSTRIDE, GEGL_ABYSS_NONE);
  g_object_unref (buffer);
  return data;
}

float *
sdgp_host_read_selection (gint32   image_id,
                          int      x,
                          int      y,
                          int      width,
                          int      height,
                          GError **error)
{
  GimpImage     *image = host_image (image_id);
  GimpSelection *selection;
  GeglBuffer    *buffer;
  const Babl    *own, *format;
  float         *data;

  data = sdgp_core_alloc_pixels (width, height, 1, error);
  if (! data)
    return NULL;
  if (image && gimp_selection_is_empty (image))
    {
      for (gsize i = 0; i < (gsize) width * (gsize) height; i++)
        data[i] = 1.0f;
      return data;
    }
  selection = image ? gimp_image_get_selection (image) : NULL;
  buffer = selection ? gimp_drawable_get_buffer (GIMP_DRAWABLE (selection)) : NULL;
  if (! buffer)
    {
      g_free (data);
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Could not read the selection.");
      return NULL;
    }
  // Read the mask in its own tone curve, so that a half-selected pixel reads as 0.5 whether the
  // channel is stored as "Y' u8" or linear "Y u16"/"Y float".
  own = gimp_drawable_get_format (GIMP_DRAWABLE (selection));
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
sdgp_host_undo_group_begin (gint32 image_id)
{
  GimpImage *image = host_image (image_id);

  if (image)
    gimp_image_undo_group_start (image);
}

void
sdgp_host_undo_group_end (gint32 image_id)
{
  GimpImage *image = host_image (image_id);

  if (image)
    gimp_image_undo_group_end (image);
}

// Where a layer "above drawable" goes: the drawable's own layer (the layer of a layer mask),
// else the first selected layer, else the top of the stack.
static void
host_place_above (GimpImage     *image,
                  GimpDrawable  *drawable,
                  GimpLayer    **parent,
                  gint          *position)
{
  GimpLayer *layer = NULL;

  if (gimp_item_is_layer (GIMP_ITEM (drawable)))
    layer = GIMP_LAYER (drawable);
  else if (gimp_item_is_layer_mask (GIMP_ITEM (drawable)))
    layer = gimp_layer_from_mask (GIMP_LAYER_MASK (drawable));
  if (! layer)
    {
      GimpLayer **selected = gimp_image_get_selected_layers (image);

      if (selected && selected[0])
        layer = selected[0];
      g_free (selected);
    }

  *parent = NULL;
  *position = 0;
  if (layer)
    {
      GimpItem *p = gimp_item_get_parent (GIMP_ITEM (layer));

      *parent = p && GIMP_IS_LAYER (p) ? GIMP_LAYER (p) : NULL;
      *position = MAX (0, gimp_image_get_item_position (image, GIMP_ITEM (layer)));
    }
}

gint32
sdgp_host_insert_layer (gint32       image_id,
                        gint32       drawable_id,
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
  GimpImage     *image    = host_image (image_id);
  GimpDrawable  *drawable = host_drawable (drawable_id);
  GimpImageType  type;
  GimpParasite  *parasite;
  GeglBuffer    *buffer;
  GimpLayer     *layer, *parent;
  gint           position;

  if (! image || ! drawable)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_INVALID,
                   "The image or drawable given is not valid.");
      return -1;
    }
  type = gimp_image_get_base_type (image) == GIMP_GRAY ? GIMP_GRAYA_IMAGE : GIMP_RGBA_IMAGE;
  layer = gimp_layer_new (image, name, width, height, type, 100.0, GIMP_LAYER_MODE_NORMAL);
  if (! layer)
    {
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED,
                   "Could not create a %dx%d layer.", width, height);
      return -1;
    }
  host_place_above (image, drawable, &parent, &position);
  if (! gimp_image_insert_layer (image, layer, parent, position))
    {
      gimp_item_delete (GIMP_ITEM (layer));
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Could not add the new layer.");
      return -1;
    }
  gimp_layer_set_offsets (layer, x, y);

  buffer = gimp_drawable_get_buffer (GIMP_DRAWABLE (layer));
  if (! buffer)
    {
      gimp_image_remove_layer (image, layer);
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED, "Could not write the new layer.");
      return -1;
    }
  gegl_buffer_set (buffer, GEGL_RECTANGLE (0, 0, width, height), 0,
                   host_rgba_format (GIMP_DRAWABLE (layer)), rgba, GEGL_AUTO_ROWSTRIDE);
  g_object_unref (buffer);   // flushes the tiles to GIMP
  gimp_drawable_update (GIMP_DRAWABLE (layer), 0, 0, width, height);

  parasite = gimp_parasite_new (parasite_name,
                                GIMP_PARASITE_PERSISTENT | GIMP_PARASITE_UNDOABLE,
                                (guint32) strlen (parasite_text) + 1, parasite_text);
  if (! parasite || ! gimp_item_attach_parasite (GIMP_ITEM (layer), parasite))
    {
      gimp_parasite_free (parasite);
      gimp_image_remove_layer (image, layer);
      g_set_error (error, SDGP_ERROR, SDGP_ERROR_FAILED,
                   "Could not store the parameters on the new layer.");
      return -1;
    }
  gimp_parasite_free (parasite);
  return gimp_item_get_id (GIMP_ITEM (layer));
}

void
sdgp_host_remove_layer (gint32 image_id,
                        gint32 layer_id)
{
  GimpImage *image = host_image (image_id);
  GimpLayer *layer = layer_id > 0 ? gimp_layer_get_by_id (layer_id) : NULL;

  if (image && layer)
    gimp_image_remove_layer (image, layer);
}
