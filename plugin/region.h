/*
 * region.h - the region and mask maths of Filters > Diffusion: which rectangle of the layer a run
 * works on, at which size the engine generates it, the masks that drive the sampler and the
 * paste-back, colour matching and compositing. Pure functions over rectangles and flat float
 * arrays; unit-tested without GIMP (tests/test-region.c).
 *
 * Not here: anything of libgimp or GTK, reading/writing drawables, calling the engine.
 *
 * Conventions
 * - Rectangles are in IMAGE coordinates (a layer rectangle is its offsets plus its size).
 * - Pixel arrays are row-major, top row first, interleaved channels, w*h*channels floats.
 * - Colour pixels are perceptual (sRGB-encoded) floats in [0,1], as the engine reads and writes
 *   them (babl "R'G'B' float"). Masks have one channel in [0,1]: 1 = selected / regenerate.
 * - Unless a function says otherwise, out may be the same array as an input (in place).
 * - Functions that run GEGL need gegl_init() to have been called; they return FALSE and set
 *   error (domain SDGP_REGION_ERROR) when GEGL fails, which only happens when its operations are
 *   missing. Arguments that break a documented precondition (NULL arrays, w <= 0, ...) are
 *   programming errors: g_return_val_if_fail() warns and FALSE is returned without an error.
 *
 * Typical inpaint run (the GIMP side does the I/O between the steps):
 *   sdgp_region_inpaint_context (sel_bounds, layer_rect, info.native_size, &ctx, &err);
 *   sdgp_region_gen_size (ctx.width, ctx.height, info.native_size, &gw, &gh);
 *   // read the layer's RGB and the selection mask over ctx: orig (ctx size), sel (ctx size)
 *   sdgp_resample (orig, ctx.width, ctx.height, 3, gw, gh, init, &err);      // engine input
 *   sdgp_resample (sel, ctx.width, ctx.height, 1, gw, gh, sel_gen, &err);
 *   sdgp_mask_denoise (sel_gen, gw, gh, strength, (float) gw / ctx.width, dmask, &err);
 *   // sdg_generate (init, dmask) -> gen (gw x gh)
 *   sdgp_resample (gen, gw, gh, 3, ctx.width, ctx.height, back, &err);
 *   sdgp_mask_blend (sel, ctx.width, ctx.height, SDGP_BLEND_FEATHER_PX, blend, &err);
 *   if (color_match) sdgp_color_match (orig, back, blend, ctx.width, ctx.height, back, &err);
 *   sdgp_composite (orig_rgba, back, blend, ctx.width, ctx.height, 4, out_rgba);
 *   // write out_rgba over ctx
 */
#ifndef SDGP_REGION_H
#define SDGP_REGION_H

#include <glib.h>

G_BEGIN_DECLS

// ---------------------------------------------------------------------------------------------
// Errors

#define SDGP_REGION_ERROR (sdgp_region_error_quark ())

typedef enum sdgp_region_error_code {
    SDGP_REGION_ERROR_EMPTY,       // the selection is empty
    SDGP_REGION_ERROR_OUTSIDE,     // the selection does not touch the layer / image
    SDGP_REGION_ERROR_TOO_SMALL,   // the layer is under 8 pixels wide or high
    SDGP_REGION_ERROR_GEGL         // a GEGL operation is missing or failed
} sdgp_region_error_code;

GQuark sdgp_region_error_quark (void);

// ---------------------------------------------------------------------------------------------
// Rectangles

typedef struct sdgp_rect {
    int x, y, width, height;
} sdgp_rect;

// TRUE when the rectangle holds no pixel (width <= 0 or height <= 0).
gboolean sdgp_rect_is_empty (sdgp_rect r);

// The common part of a and b; {0,0,0,0} when they do not overlap.
sdgp_rect sdgp_rect_intersect (sdgp_rect a, sdgp_rect b);

// TRUE when every pixel of inner lies in outer (an empty inner is contained in anything).
gboolean sdgp_rect_contains (sdgp_rect outer, sdgp_rect inner);

// ---------------------------------------------------------------------------------------------
// Regions: which rectangle a run works on

// Text-to-image: the selection bounds clipped to the image, or the whole image when there is no
// selection (selection == NULL). image is {0, 0, image width, image height}.
// Errors: SDGP_REGION_ERROR_EMPTY (empty selection), SDGP_REGION_ERROR_OUTSIDE (selection off
// the image). On error *out is left unchanged.
gboolean sdgp_region_txt2img (const sdgp_rect *selection, sdgp_rect image, sdgp_rect *out,
                              GError **error);

// Image-to-image: the selection bounds clipped to the layer, or the whole layer when there is no
// selection (selection == NULL). Same errors as sdgp_region_txt2img, for the layer (an empty
// layer is SDGP_REGION_ERROR_EMPTY).
gboolean sdgp_region_img2img (const sdgp_rect *selection, sdgp_rect layer, sdgp_rect *out,
                              GError **error);

// The margin added on every side of a selection of this size by sdgp_region_inpaint_context:
// max (longest side / 16, mean side / 2), rounded up; e.g. 100x60 -> max (7, 40) = 40.
int sdgp_region_margin (int sel_width, int sel_height);

// Inpaint: the context region the engine sees around the selection bounds.
//   1. selection clipped to the layer (error when that is empty),
//   2. grown by sdgp_region_margin() on every side,
//   3. enlarged to at least native_size x native_size (centred on the selection),
//   4. shifted back inside the layer where it sticks out, then clipped to the layer,
//   5. snapped to multiples of 8 with sdgp_region_snap8 (keeping the clipped selection).
// The result always contains the clipped selection and lies inside the layer.
// native_size: sdg_model_info.native_size (512 for SD1.x); <= 0 skips step 3.
// Errors: SDGP_REGION_ERROR_EMPTY, _OUTSIDE, _TOO_SMALL (layer under 8 px in a dimension).
gboolean sdgp_region_inpaint_context (sdgp_rect selection, sdgp_rect layer, int native_size,
                                      sdgp_rect *out, GError **error);

// Makes r's width and height multiples of 8 while staying inside bounds: grows each dimension
// to the next multiple of 8 (centred, shifted to stay inside bounds) where bounds leave room,
// else shrinks it to the multiple of 8 below, placed to cover keep (pass r itself when nothing
// must be kept). The one exception: when the shrunk size cannot cover keep (keep is wider than
// the largest multiple of 8 that fits in bounds), that dimension is left as it is - never cut
// the user's selection - and is then NOT a multiple of 8; sdgp_region_gen_size still gives a
// valid generation size for it. r is clipped to bounds first.
// Errors: SDGP_REGION_ERROR_EMPTY (r misses bounds), SDGP_REGION_ERROR_TOO_SMALL (bounds under
// 8 px in a dimension).
gboolean sdgp_region_snap8 (sdgp_rect r, sdgp_rect keep, sdgp_rect bounds, sdgp_rect *out,
                            GError **error);

// Smallest and largest generated side.
#define SDGP_GEN_MIN_SIDE 64
#define SDGP_GEN_MAX_SIDE 2048

// The size to generate a w x h region at: area about native_size^2 (what the model is trained
// for), the region's aspect ratio kept, both sides multiples of 8 in
// [SDGP_GEN_MIN_SIDE, SDGP_GEN_MAX_SIDE]. A region of exactly native_size x native_size (or any
// region whose sides are multiples of 8 and whose area is native_size^2) is generated 1:1.
// Returns FALSE (programming error) when w, h or native_size is <= 0.
gboolean sdgp_region_gen_size (int w, int h, int native_size, int *gen_w, int *gen_h);

// Largest side of a hires fix's second pass (the engine's limit).
#define SDGP_HIRES_MAX_SIDE 4096

// The size of a hires fix's second pass after a first pass of gen_w x gen_h for a region of
// region_w x region_h: the first size times scale, the scale lowered where that would be bigger
// than the region (a picture is never made bigger than where it is placed) or
// SDGP_HIRES_MAX_SIDE, each side rounded down to a multiple of 8 but never under the first
// pass's. The aspect stays the first pass's. FALSE when that leaves the first size unchanged
// (scale <= 1, or a region no bigger than the first pass): no second pass; *hires_w and *hires_h
// are then the first size.
gboolean sdgp_region_hires_size (int gen_w, int gen_h, int region_w, int region_h, double scale,
                                 int *hires_w, int *hires_h);

// ---------------------------------------------------------------------------------------------
// Masks: one float per pixel in [0,1]; inputs outside [0,1] (resampling overshoot) are clamped.

// Grey-level dilation: out = max of mask over a disc of radius radius_px (pixels whose centre
// is within radius_px). Soft values stay soft: a 0.3 plateau grows as a 0.3 plateau.
// radius_px < 0.5 copies. Always succeeds for valid arguments.
gboolean sdgp_mask_grow (const float *mask, int w, int h, float radius_px, float *out);

// Gaussian feather (gegl:gaussian-blur, edges clamped, so a mask touching the border stays 1
// there). sigma_px <= 0 copies.
gboolean sdgp_mask_feather (const float *mask, int w, int h, float sigma_px, float *out,
                            GError **error);

// The denoise mask for the engine (sdg_gen_params.mask): what the sampler may change.
//   out = max (selection, feather (grow (selection, grow_px), sigma_px))
//   sigma_px = scale * (2 + 8 * strength)     image px: 2 at strength 0 .. 10 at strength 1
//   grow_px  = scale * 4 + 2 * sigma_px
// so the whole selection is fully regenerated and the sampler gets a soft band of about
// 4 + 4*sigma image px around it to join the new pixels to the old ones; the stronger the run,
// the wider the band. selection is at the generation size (resample the region's selection
// with sdgp_resample first); scale = generation px per region px (gen_w / region width).
// strength is clamped to [0,1].
gboolean sdgp_mask_denoise (const float *selection, int w, int h, float strength, float scale,
                            float *out, GError **error);

// Default feather of the blend mask, in region (image) px.
#define SDGP_BLEND_FEATHER_PX 1.5f

// The blend mask that pastes the result back over the region (region size, not generation
// size): out = min (selection, feather (selection, feather_px)). Exactly 0 wherever the
// selection is 0 (nothing outside the selection changes), feathered inside only, soft selections
// stay soft (a feathered selection's ramp is kept), 1 deep inside a hard selection.
gboolean sdgp_mask_blend (const float *selection, int w, int h, float feather_px, float *out,
                          GError **error);

// ---------------------------------------------------------------------------------------------
// Colour and compositing (region size)

// Removes the colour shift (VAE round trip, sampler drift) of a generated region against the
// original before pasting: per RGB channel, fits gen -> a*gen + b so that the weighted mean and
// standard deviation of the generated pixels match the original ones over a ring just outside
// the selection (pixels with blend == 0 within about 1/4 of the region's mean side of a
// blend > 0 pixel, nearer pixels weighing more; both images hold them since the whole context is
// generated), then applies it to every generated pixel (clamped to [0,1]). The gain a is kept
// within [0.67, 1.5]; a flat ring (no contrast to compare) gives a shift only. A ring too small
// to trust (under 16 pixels), or no selection at all, makes it a plain copy. orig_rgb and
// gen_rgb are RGB (3 channels), blend as from sdgp_mask_blend; out_rgb may be gen_rgb.
gboolean sdgp_color_match (const float *orig_rgb, const float *gen_rgb, const float *blend,
                           int w, int h, float *out_rgb, GError **error);

// Pastes gen over orig through blend: out = orig where blend == 0 (bitwise copy, the generated
// pixel is never looked at), gen where blend == 1, (1-b)*orig + b*gen between.
// orig and out have channels (1 Y, 2 YA, 3 RGB, 4 RGBA); gen holds the colour channels only
// (1 for channels 1-2, 3 for channels 3-4). The alpha of orig (channels 2 and 4) is kept as it is.
// out may be orig. Returns FALSE (programming error) for bad arguments.
gboolean sdgp_composite (const float *orig, const float *gen, const float *blend, int w, int h,
                         int channels, float *out);

// ---------------------------------------------------------------------------------------------
// Resampling

// Scales a float image from sw x sh to dw x dh (GEGL gegl:scale-size, edges clamped: LoHalo
// when shrinking, NoHalo when enlarging). channels: 1 = a mask (values interpolated as they
// are), 2 = Y'A, 3 = R'G'B', 4 = R'G'B'A (perceptual; GEGL interpolates them in linear light,
// alpha premultiplied: [0, 1] -> 1 pixel gives 0.735, not 0.5). Results are clamped to [0,1].
// Same size copies. dst must not overlap src.
gboolean sdgp_resample (const float *src, int sw, int sh, int channels, int dw, int dh,
                        float *dst, GError **error);

G_END_DECLS

#endif // SDGP_REGION_H
