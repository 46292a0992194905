/*
 * region.c - region and mask maths of Filters > Diffusion (see region.h for the contracts).
 *
 * Rectangles, grey-level dilation, colour matching and compositing are plain loops here;
 * Gaussian blur and resampling are GEGL's (gegl:gaussian-blur, gegl:scale-size), run on
 * temporary in-memory GeglBuffers.
 * Not here: libgimp, drawables, the engine.
 */
#include "region.h"

#include <gegl.h>
#include <math.h>
#include <string.h>

G_DEFINE_QUARK (sdgp-region-error-quark, sdgp_region_error)

// ---------------------------------------------------------------------------------------------
// Rectangles

gboolean
sdgp_rect_is_empty (sdgp_rect r)
{
    return r.width <= 0 || r.height <= 0;
}

sdgp_rect
sdgp_rect_intersect (sdgp_rect a, sdgp_rect b)
{
    sdgp_rect none = {0, 0, 0, 0};
    if (sdgp_rect_is_empty (a) || sdgp_rect_is_empty (b))
        return none;
    // 64-bit ends: x + width may overflow int for rectangles from odd callers.
    gint64 x0 = MAX (a.x, b.x), y0 = MAX (a.y, b.y);
    gint64 x1 = MIN ((gint64) a.x + a.width, (gint64) b.x + b.width);
    gint64 y1 = MIN ((gint64) a.y + a.height, (gint64) b.y + b.height);
    if (x1 <= x0 || y1 <= y0)
        return none;
    sdgp_rect r = {(int) x0, (int) y0, (int) (x1 - x0), (int) (y1 - y0)};
    return r;
}

gboolean
sdgp_rect_contains (sdgp_rect outer, sdgp_rect inner)
{
    if (sdgp_rect_is_empty (inner))
        return TRUE;
    if (sdgp_rect_is_empty (outer))
        return FALSE;
    return inner.x >= outer.x && inner.y >= outer.y &&
           (gint64) inner.x + inner.width <= (gint64) outer.x + outer.width &&
           (gint64) inner.y + inner.height <= (gint64) outer.y + outer.height;
}

// ---------------------------------------------------------------------------------------------
// Regions

// Selection bounds clipped to area, or all of area; shared by text- and image-to-image.
static gboolean
region_clip (const sdgp_rect *selection, sdgp_rect area, const char *what, sdgp_rect *out,
             GError **error)
{
    if (sdgp_rect_is_empty (area)) {
        g_set_error (error, SDGP_REGION_ERROR, SDGP_REGION_ERROR_EMPTY, "The %s is empty", what);
        return FALSE;
    }
    if (!selection) {
        *out = area;
        return TRUE;
    }
    if (sdgp_rect_is_empty (*selection)) {
        g_set_error (error, SDGP_REGION_ERROR, SDGP_REGION_ERROR_EMPTY, "The selection is empty");
        return FALSE;
    }
    sdgp_rect r = sdgp_rect_intersect (*selection, area);
    if (sdgp_rect_is_empty (r)) {
        g_set_error (error, SDGP_REGION_ERROR, SDGP_REGION_ERROR_OUTSIDE,
                     "The selection lies outside the %s", what);
        return FALSE;
    }
    *out = r;
    return TRUE;
}

gboolean
sdgp_region_txt2img (const sdgp_rect *selection, sdgp_rect image, sdgp_rect *out, GError **error)
{
    g_return_val_if_fail (out != NULL, FALSE);
    return region_clip (selection, image, "image", out, error);
}

gboolean
sdgp_region_img2img (const sdgp_rect *selection, sdgp_rect layer, sdgp_rect *out, GError **error)
{
    g_return_val_if_fail (out != NULL, FALSE);
    return region_clip (selection, layer, "layer", out, error);
}

int
sdgp_region_margin (int sel_width, int sel_height)
{
    if (sel_width <= 0 || sel_height <= 0)
        return 0;
    gint64 longest = MAX (sel_width, sel_height);
    gint64 by_longest = (longest + 15) / 16;                        // ceil (longest / 16)
    gint64 by_mean = ((gint64) sel_width + sel_height + 3) / 4;     // ceil (mean / 2)
    return (int) MIN (MAX (by_longest, by_mean), G_MAXINT / 4);
}

// One dimension of the native-size enlargement: [*pos, *pos + *size) grows to target, centred
// on the selection's centre, then is shifted back inside [lo, lo + len); target <= len.
static void
region_enlarge_1d (int *pos, int *size, int target, int sel_pos, int sel_size, int lo, int len)
{
    if (*size >= target)
        return;
    gint64 start = (gint64) sel_pos + sel_size / 2 - target / 2;
    if (start + target > (gint64) lo + len)
        start = (gint64) lo + len - target;
    if (start < lo)
        start = lo;
    *pos = (int) start;
    *size = target;
}

gboolean
sdgp_region_inpaint_context (sdgp_rect selection, sdgp_rect layer, int native_size,
                             sdgp_rect *out, GError **error)
{
    g_return_val_if_fail (out != NULL, FALSE);
    if (sdgp_rect_is_empty (selection)) {
        g_set_error (error, SDGP_REGION_ERROR, SDGP_REGION_ERROR_EMPTY, "The selection is empty");
        return FALSE;
    }
    if (layer.width < 8 || layer.height < 8) {
        g_set_error (error, SDGP_REGION_ERROR, SDGP_REGION_ERROR_TOO_SMALL,
                     "The layer (%dx%d) is too small: it needs at least 8x8 pixels",
                     MAX (layer.width, 0), MAX (layer.height, 0));
        return FALSE;
    }
    sdgp_rect sel = sdgp_rect_intersect (selection, layer);
    if (sdgp_rect_is_empty (sel)) {
        g_set_error (error, SDGP_REGION_ERROR, SDGP_REGION_ERROR_OUTSIDE,
                     "The selection lies outside the layer");
        return FALSE;
    }

    int m = sdgp_region_margin (sel.width, sel.height);
    sdgp_rect grown = {sel.x - m, sel.y - m, sel.width + 2 * m, sel.height + 2 * m};
    sdgp_rect ctx = sdgp_rect_intersect (grown, layer);

    // The model only composes well at about its training size: a small selection still gets
    // native_size of surroundings where the layer has them.
    if (native_size > 0) {
        region_enlarge_1d (&ctx.x, &ctx.width, MIN (native_size, layer.width),
                           sel.x, sel.width, layer.x, layer.width);
        region_enlarge_1d (&ctx.y, &ctx.height, MIN (native_size, layer.height),
                           sel.y, sel.height, layer.y, layer.height);
    }
    return sdgp_region_snap8 (ctx, sel, layer, out, error);
}

// One dimension of snap8: [*pos, *pos + *size) inside [lo, lo + len), keep [kpos, kpos + ksize)
// inside it (ksize may be 0: nothing to keep).
static void
region_snap8_1d (int *pos, int *size, int kpos, int ksize, int lo, int len)
{
    if (*size % 8 == 0)
        return;
    gint64 up = ((gint64) *size + 7) / 8 * 8;
    if (up <= len) {
        // Growing never loses a pixel of the region: centred, then shifted inside.
        gint64 start = *pos - (up - *size) / 2;
        if (start + up > (gint64) lo + len)
            start = (gint64) lo + len - up;
        if (start < lo)
            start = lo;
        *pos = (int) start;
        *size = (int) up;
        return;
    }
    int down = *size / 8 * 8;   // >= 8: up > len >= 8 means *size > len - 8 >= 0, and
                                // *size < 8 would give up = 8 <= len
    if (ksize > down)
        return;                 // would cut the selection: stay unsnapped (see region.h)
    // Cover keep, stay inside the old range, and centre on keep where that leaves a choice.
    gint64 lo_ok = MAX ((gint64) *pos, (gint64) kpos + ksize - down);
    gint64 hi_ok = MIN ((gint64) *pos + *size - down, (gint64) kpos);
    if (ksize <= 0) {
        lo_ok = *pos;
        hi_ok = (gint64) *pos + *size - down;
    }
    gint64 start = ksize > 0 ? (gint64) kpos + ksize / 2 - down / 2
                             : (gint64) *pos + (*size - down) / 2;
    start = CLAMP (start, lo_ok, hi_ok);
    *pos = (int) start;
    *size = down;
}

gboolean
sdgp_region_snap8 (sdgp_rect r, sdgp_rect keep, sdgp_rect bounds, sdgp_rect *out, GError **error)
{
    g_return_val_if_fail (out != NULL, FALSE);
    if (bounds.width < 8 || bounds.height < 8) {
        g_set_error (error, SDGP_REGION_ERROR, SDGP_REGION_ERROR_TOO_SMALL,
                     "The layer (%dx%d) is too small: it needs at least 8x8 pixels",
                     MAX (bounds.width, 0), MAX (bounds.height, 0));
        return FALSE;
    }
    sdgp_rect c = sdgp_rect_intersect (r, bounds);
    if (sdgp_rect_is_empty (c)) {
        g_set_error (error, SDGP_REGION_ERROR, SDGP_REGION_ERROR_EMPTY,
                     "The region lies outside the layer");
        return FALSE;
    }
    sdgp_rect k = sdgp_rect_intersect (keep, c);
    region_snap8_1d (&c.x, &c.width, k.x, k.width, bounds.x, bounds.width);
    region_snap8_1d (&c.y, &c.height, k.y, k.height, bounds.y, bounds.height);
    *out = c;
    return TRUE;
}

static int
region_round8 (double v)
{
    double r = floor (v / 8.0 + 0.5) * 8.0;
    return (int) CLAMP (r, SDGP_GEN_MIN_SIDE, SDGP_GEN_MAX_SIDE);
}

gboolean
sdgp_region_gen_size (int w, int h, int native_size, int *gen_w, int *gen_h)
{
    g_return_val_if_fail (w > 0 && h > 0 && native_size > 0, FALSE);
    g_return_val_if_fail (gen_w != NULL && gen_h != NULL, FALSE);
    // Same area as native_size^2, same aspect: s^2 * w * h = native^2.
    double s = native_size / sqrt ((double) w * (double) h);
    *gen_w = region_round8 (w * s);
    *gen_h = region_round8 (h * s);
    return TRUE;
}

gboolean
sdgp_region_hires_size (int gen_w, int gen_h, int region_w, int region_h, double scale,
                        int *hires_w, int *hires_h)
{
    g_return_val_if_fail (gen_w > 0 && gen_h > 0 && region_w > 0 && region_h > 0, FALSE);
    g_return_val_if_fail (hires_w != NULL && hires_h != NULL, FALSE);
    // One factor for both sides, so the cap does not stretch the picture.
    double s = scale > 1.0 ? scale : 1.0;   // NaN too
    s = MIN (s, (double) region_w / gen_w);
    s = MIN (s, (double) region_h / gen_h);
    s = MIN (s, (double) SDGP_HIRES_MAX_SIDE / MAX (gen_w, gen_h));
    *hires_w = gen_w;
    *hires_h = gen_h;
    if (s > 1.0) {
        *hires_w = MAX (gen_w, (int) floor (gen_w * s / 8.0) * 8);
        *hires_h = MAX (gen_h, (int) floor (gen_h * s / 8.0) * 8);
    }
    return *hires_w != gen_w || *hires_h != gen_h;
}

// ---------------------------------------------------------------------------------------------
// GEGL plumbing

static gboolean
region_need_ops (GError **error, const char *op)
{
    if (gegl_has_operation (op))
        return TRUE;
    g_set_error (error, SDGP_REGION_ERROR, SDGP_REGION_ERROR_GEGL,
                 "The GEGL operation %s is missing", op);
    return FALSE;
}

static const Babl *
region_format (int channels)
{
    switch (channels) {
    case 1: return babl_format ("Y float");
    case 2: return babl_format ("Y'A float");
    case 3: return babl_format ("R'G'B' float");
    default: return babl_format ("R'G'B'A float");
    }
}

// A temporary buffer holding a copy of data (w x h, format's channels).
static GeglBuffer *
region_buffer_from (const float *data, int w, int h, const Babl *format)
{
    GeglRectangle ext = {0, 0, w, h};
    GeglBuffer *buf = gegl_buffer_new (&ext, format);
    gegl_buffer_set (buf, &ext, 0, format, data, GEGL_AUTO_ROWSTRIDE);
    return buf;
}

// Sets an enum property by its nick, so private enums (gaussian-blur's) need no header.
static gboolean
region_set_enum (GeglNode *node, const char *op, const char *prop, const char *nick,
                 GError **error)
{
    GParamSpec *ps = gegl_operation_find_property (op, prop);
    if (ps && G_IS_PARAM_SPEC_ENUM (ps)) {
        GEnumValue *ev = g_enum_get_value_by_nick (G_PARAM_SPEC_ENUM (ps)->enum_class, nick);
        if (ev) {
            gegl_node_set (node, prop, ev->value, NULL);
            return TRUE;
        }
    }
    g_set_error (error, SDGP_REGION_ERROR, SDGP_REGION_ERROR_GEGL,
                 "The GEGL operation %s has no %s \"%s\"", op, prop, nick);
    return FALSE;
}

static float
clamp01 (float v)
{
    // NaN falls to 0: a broken pixel must not spread through max/min.
    return v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f;
}

// ---------------------------------------------------------------------------------------------
// Masks

// Running max over [x-k, x+k] of one row (outside counts as 0; masks are >= 0), in O(n) with
// the van Herk / Gil-Werman block trick. pad, g and hh hold n + 2k floats each.
static void
mask_max_1d (const float *row, int n, int k, float *dst, float *pad, float *g, float *hh)
{
    int len = n + 2 * k, win = 2 * k + 1;
    for (int i = 0; i < len; i++)
        pad[i] = (i >= k && i < k + n) ? row[i - k] : 0.0f;
    for (int b = 0; b < len; b += win) {
        int e = MIN (b + win, len);
        g[b] = pad[b];
        for (int i = b + 1; i < e; i++)
            g[i] = MAX (g[i - 1], pad[i]);
        hh[e - 1] = pad[e - 1];
        for (int i = e - 2; i >= b; i--)
            hh[i] = MAX (hh[i + 1], pad[i]);
    }
    for (int x = 0; x < n; x++)   // window [x, x + 2k] of pad
        dst[x] = MAX (hh[x], g[x + 2 * k]);
}

gboolean
sdgp_mask_grow (const float *mask, int w, int h, float radius_px, float *out)
{
    g_return_val_if_fail (mask != NULL && out != NULL && w > 0 && h > 0, FALSE);
    size_t n = (size_t) w * h;
    if (!(radius_px >= 0.5f)) {
        for (size_t i = 0; i < n; i++)
            out[i] = clamp01 (mask[i]);
        return TRUE;
    }
    // A disc is a stack of horizontal runs: row dy has half-width floor (sqrt (r^2 - dy^2)).
    // Max over the disc = max over dy of the row y+dy's running max of that half-width.
    double r2 = (double) radius_px * radius_px;
    int ri = (int) floor (radius_px);
    ri = MIN (ri, MAX (w, h));
    int maxk = MIN (ri, w);
    float *src = g_new (float, n);
    float *acc = g_new (float, n);
    float *hmax = g_new (float, n);
    float *tmp = g_new (float, 3 * ((size_t) w + 2 * maxk));
    for (size_t i = 0; i < n; i++) {
        src[i] = clamp01 (mask[i]);
        acc[i] = 0.0f;
    }
    int prev_k = -1;
    for (int dy = ri; dy >= 0; dy--) {
        int k = (int) floor (sqrt (MAX (0.0, r2 - (double) dy * dy)) + 1e-9);
        k = MIN (k, maxk);
        if (k != prev_k) {
            float *pad = tmp, *g = tmp + w + 2 * k, *hh = g + w + 2 * k;
            for (int y = 0; y < h; y++)
                mask_max_1d (src + (size_t) y * w, w, k, hmax + (size_t) y * w, pad, g, hh);
            prev_k = k;
        }
        for (int y = 0; y < h; y++) {
            float *a = acc + (size_t) y * w;
            for (int s = -1; s <= 1; s += 2) {
                int sy = y + s * dy;
                if (sy >= 0 && sy < h) {
                    const float *hr = hmax + (size_t) sy * w;
                    for (int x = 0; x < w; x++)
                        a[x] = MAX (a[x], hr[x]);
                }
                if (dy == 0)
                    break;
            }
        }
    }
    memcpy (out, acc, n * sizeof (float));
    g_free (src);
    g_free (acc);
    g_free (hmax);
    g_free (tmp);
    return TRUE;
}

gboolean
sdgp_mask_feather (const float *mask, int w, int h, float sigma_px, float *out, GError **error)
{
    g_return_val_if_fail (mask != NULL && out != NULL && w > 0 && h > 0, FALSE);
    size_t n = (size_t) w * h;
    float *src = g_new (float, n);
    for (size_t i = 0; i < n; i++)
        src[i] = clamp01 (mask[i]);
    if (!(sigma_px > 0.0f)) {
        memcpy (out, src, n * sizeof (float));
        g_free (src);
        return TRUE;
    }
    const char *op = "gegl:gaussian-blur";
    if (!region_need_ops (error, op)) {
        g_free (src);
        return FALSE;
    }
    const Babl *fmt = region_format (1);
    GeglBuffer *buf = region_buffer_from (src, w, h, fmt);
    g_free (src);
    GeglNode *graph = gegl_node_new ();
    GeglNode *in = gegl_node_new_child (graph, "operation", "gegl:buffer-source",
                                        "buffer", buf, NULL);
    GeglNode *blur = gegl_node_new_child (graph, "operation", op,
                                          "std-dev-x", (double) sigma_px,
                                          "std-dev-y", (double) sigma_px,
                                          "clip-extent", TRUE, NULL);
    // Clamped edges: a selection running off the region keeps going, so no fade at the border.
    // FIR (exact kernel) for the mask-sized blurs; past that its cost grows with sigma and the
    // IIR's approximate tails no longer matter.
    gboolean ok = region_set_enum (blur, op, "abyss-policy", "clamp", error) &&
                  region_set_enum (blur, op, "filter", sigma_px <= 16.0f ? "fir" : "auto", error);
    if (ok) {
        gegl_node_link (in, blur);
        GeglRectangle roi = {0, 0, w, h};
        gegl_node_blit (blur, 1.0, &roi, fmt, out, GEGL_AUTO_ROWSTRIDE, GEGL_BLIT_DEFAULT);
        for (size_t i = 0; i < n; i++)
            out[i] = clamp01 (out[i]);
    }
    g_object_unref (graph);
    g_object_unref (buf);
    return ok;
}

gboolean
sdgp_mask_denoise (const float *selection, int w, int h, float strength, float scale,
                   float *out, GError **error)
{
    g_return_val_if_fail (selection != NULL && out != NULL && w > 0 && h > 0, FALSE);
    g_return_val_if_fail (scale > 0.0f && isfinite (scale), FALSE);
    size_t n = (size_t) w * h;
    float s = isnan (strength) ? 0.0f : CLAMP (strength, 0.0f, 1.0f);
    float sigma = scale * (2.0f + 8.0f * s);
    float grow = scale * 4.0f + 2.0f * sigma;   // 2 sigma: the feather is still ~0.98 at the
                                                // selection's edge
    float *sel = g_new (float, n);
    float *band = g_new (float, n);
    for (size_t i = 0; i < n; i++)
        sel[i] = clamp01 (selection[i]);
    gboolean ok = sdgp_mask_grow (sel, w, h, grow, band) &&
                  sdgp_mask_feather (band, w, h, sigma, band, error);
    if (ok)
        for (size_t i = 0; i < n; i++)
            out[i] = MAX (sel[i], band[i]);
    g_free (sel);
    g_free (band);
    return ok;
}

gboolean
sdgp_mask_blend (const float *selection, int w, int h, float feather_px, float *out,
                 GError **error)
{
    g_return_val_if_fail (selection != NULL && out != NULL && w > 0 && h > 0, FALSE);
    size_t n = (size_t) w * h;
    float *f = g_new (float, n);
    gboolean ok = sdgp_mask_feather (selection, w, h, feather_px, f, error);
    if (ok)
        for (size_t i = 0; i < n; i++) {
            float s = clamp01 (selection[i]);
            // min: the blur can only lower a value, so outside (s == 0) stays exactly 0 and a
            // soft ramp stays about itself; hard edges get a ramp inside.
            out[i] = s > 0.0f ? MIN (s, f[i]) : 0.0f;
        }
    g_free (f);
    return ok;
}

// ---------------------------------------------------------------------------------------------
// Colour and compositing

gboolean
sdgp_color_match (const float *orig_rgb, const float *gen_rgb, const float *blend, int w, int h,
                  float *out_rgb, GError **error)
{
    g_return_val_if_fail (orig_rgb && gen_rgb && blend && out_rgb && w > 0 && h > 0, FALSE);
    size_t n = (size_t) w * h;
    float *near = g_new (float, n);
    gboolean any = FALSE;
    for (size_t i = 0; i < n; i++) {
        near[i] = blend[i] > 0.0f ? 1.0f : 0.0f;
        any |= blend[i] > 0.0f;
    }
    // Ring weights: the blurred selection, outside it. Reach ~3 sigma = 1/4 of the mean side,
    // about the inpaint margin: wide enough that the band the sampler repainted around the
    // selection (sdgp_mask_denoise) is not all the fit sees.
    float sigma = MAX (1.5f, (float) (w + h) / 24.0f);
    gboolean ok = !any || sdgp_mask_feather (near, w, h, sigma, near, error);
    if (!ok) {
        g_free (near);
        return FALSE;
    }

    double sw = 0.0, so[3] = {0}, sg[3] = {0}, soo[3] = {0}, sgg[3] = {0};
    size_t count = 0;
    if (any)
        for (size_t i = 0; i < n; i++) {
            float wt = near[i];
            if (!(blend[i] <= 0.0f) || !(wt > 1e-3f))
                continue;
            count++;
            sw += wt;
            for (int c = 0; c < 3; c++) {
                double o = orig_rgb[3 * i + c], g = gen_rgb[3 * i + c];
                so[c] += wt * o;
                sg[c] += wt * g;
                soo[c] += wt * o * o;
                sgg[c] += wt * g * g;
            }
        }
    g_free (near);

    float a[3] = {1, 1, 1}, b[3] = {0, 0, 0};
    if (count >= 16 && sw >= 1.0) {
        for (int c = 0; c < 3; c++) {
            double mo = so[c] / sw, mg = sg[c] / sw;
            double vo = MAX (0.0, soo[c] / sw - mo * mo), vg = MAX (0.0, sgg[c] / sw - mg * mg);
            // A flat ring says nothing about contrast: only shift.
            double gain = (vg > 1e-8 && vo > 1e-8) ? sqrt (vo / vg) : 1.0;
            if (!isfinite (gain))
                gain = 1.0;
            // VAE tints are a few percent; a bigger gain means the ring's content changed.
            gain = CLAMP (gain, 0.67, 1.5);
            a[c] = (float) gain;
            b[c] = (float) (mo - gain * mg);
        }
    }
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++)
            out_rgb[3 * i + c] = clamp01 (a[c] * gen_rgb[3 * i + c] + b[c]);
    return TRUE;
}

gboolean
sdgp_composite (const float *orig, const float *gen, const float *blend, int w, int h,
                int channels, float *out)
{
    g_return_val_if_fail (orig && gen && blend && out && w > 0 && h > 0, FALSE);
    g_return_val_if_fail (channels >= 1 && channels <= 4, FALSE);
    int colour = channels >= 3 ? 3 : 1;
    size_t n = (size_t) w * h;
    for (size_t i = 0; i < n; i++) {
        const float *o = orig + i * channels;
        const float *g = gen + i * colour;
        float *d = out + i * channels;
        float t = blend[i];
        if (!(t > 0.0f)) {
            if (d != o)
                memcpy (d, o, channels * sizeof (float));
            continue;
        }
        if (t >= 1.0f) {
            for (int c = 0; c < colour; c++)
                d[c] = g[c];
        } else {
            for (int c = 0; c < colour; c++)
                d[c] = (1.0f - t) * o[c] + t * g[c];
        }
        if (channels > colour)
            d[colour] = o[colour];
    }
    return TRUE;
}

// ---------------------------------------------------------------------------------------------
// Resampling

gboolean
sdgp_resample (const float *src, int sw, int sh, int channels, int dw, int dh, float *dst,
               GError **error)
{
    g_return_val_if_fail (src && dst && sw > 0 && sh > 0 && dw > 0 && dh > 0, FALSE);
    g_return_val_if_fail (channels >= 1 && channels <= 4, FALSE);
    size_t dn = (size_t) dw * dh * channels;
    if (sw == dw && sh == dh) {
        memcpy (dst, src, dn * sizeof (float));
        return TRUE;
    }
    const char *op = "gegl:scale-size";
    if (!region_need_ops (error, op))
        return FALSE;
    const Babl *fmt = region_format (channels);
    GeglBuffer *buf = region_buffer_from (src, sw, sh, fmt);
    // LoHalo is GEGL's sampler for shrinking (it averages over the footprint, no aliasing);
    // NoHalo for enlarging: as sharp as cubic without its overshoot rings at edges.
    gboolean shrink = (double) dw * dh < (double) sw * sh;
    GeglNode *graph = gegl_node_new ();
    GeglNode *in = gegl_node_new_child (graph, "operation", "gegl:buffer-source",
                                        "buffer", buf, NULL);
    GeglNode *scale = gegl_node_new_child (graph, "operation", op,
                                           "x", (double) dw, "y", (double) dh,
                                           "sampler", shrink ? GEGL_SAMPLER_LOHALO
                                                             : GEGL_SAMPLER_NOHALO,
                                           "abyss-policy", GEGL_ABYSS_CLAMP, NULL);
    gegl_node_link (in, scale);
    GeglRectangle roi = {0, 0, dw, dh};
    gegl_node_blit (scale, 1.0, &roi, fmt, dst, GEGL_AUTO_ROWSTRIDE, GEGL_BLIT_DEFAULT);
    g_object_unref (graph);
    g_object_unref (buf);
    for (size_t i = 0; i < dn; i++)
        dst[i] = clamp01 (dst[i]);
    return TRUE;
}
