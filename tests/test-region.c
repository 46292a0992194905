/*
 * test-region.c - unit tests of the plug-in's region and mask maths (plugin/region.h): bounds,
 * margins, clipping at layer edges, layer offsets, snapping, generation size, grow/feather,
 * denoise and blend masks, colour matching, compositing and GEGL resampling.
 *
 * Not here: anything needing GIMP or the engine. Expected rectangles are worked out by hand in
 * the comments next to them.
 */
#include "plugin/region.h"

#include <gegl.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

static sdgp_rect
R (int x, int y, int w, int h)
{
    sdgp_rect r = {x, y, w, h};
    return r;
}

#define assert_rect(r, X, Y, W, H)                                                              \
    do {                                                                                        \
        sdgp_rect r_ = (r);                                                                     \
        if (r_.x != (X) || r_.y != (Y) || r_.width != (W) || r_.height != (H))                  \
            g_error ("%s:%d: got {%d,%d,%d,%d}, want {%d,%d,%d,%d}", __FILE__, __LINE__, r_.x,  \
                     r_.y, r_.width, r_.height, (X), (Y), (W), (H));                            \
    } while (0)

// A deterministic pseudo-random float in [0,1) (xorshift32).
static float
rnd (guint32 *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return (*s >> 8) * (1.0f / 16777216.0f);
}

// ---------------------------------------------------------------------------------------------
// Rectangles and regions

static void
test_rect (void)
{
    g_assert_true (sdgp_rect_is_empty (R (0, 0, 0, 5)));
    g_assert_true (sdgp_rect_is_empty (R (0, 0, 5, -1)));
    g_assert_false (sdgp_rect_is_empty (R (-3, -3, 1, 1)));
    assert_rect (sdgp_rect_intersect (R (0, 0, 10, 10), R (5, -5, 10, 10)), 5, 0, 5, 5);
    assert_rect (sdgp_rect_intersect (R (0, 0, 10, 10), R (10, 0, 5, 5)), 0, 0, 0, 0);  // touch
    assert_rect (sdgp_rect_intersect (R (0, 0, 10, 10), R (2, 3, 0, 4)), 0, 0, 0, 0);   // empty
    assert_rect (sdgp_rect_intersect (R (-5, -5, 100, 100), R (0, 0, 10, 10)), 0, 0, 10, 10);
    g_assert_true (sdgp_rect_contains (R (0, 0, 10, 10), R (0, 0, 10, 10)));
    g_assert_true (sdgp_rect_contains (R (0, 0, 10, 10), R (50, 50, 0, 0)));
    g_assert_false (sdgp_rect_contains (R (0, 0, 10, 10), R (1, 1, 10, 2)));
}

static void
test_txt2img (void)
{
    sdgp_rect out = R (-1, -1, -1, -1);
    GError *err = NULL;
    sdgp_rect image = R (0, 0, 800, 600);

    g_assert_true (sdgp_region_txt2img (NULL, image, &out, &err));   // no selection: everything
    g_assert_no_error (err);
    assert_rect (out, 0, 0, 800, 600);

    sdgp_rect sel = R (700, -20, 200, 100);                          // sticks out top-right
    g_assert_true (sdgp_region_txt2img (&sel, image, &out, &err));
    assert_rect (out, 700, 0, 100, 80);

    sel = R (900, 0, 10, 10);
    out = R (1, 2, 3, 4);
    g_assert_false (sdgp_region_txt2img (&sel, image, &out, &err));
    g_assert_error (err, SDGP_REGION_ERROR, SDGP_REGION_ERROR_OUTSIDE);
    g_clear_error (&err);
    assert_rect (out, 1, 2, 3, 4);                                   // untouched on error

    sel = R (10, 10, 0, 0);
    g_assert_false (sdgp_region_txt2img (&sel, image, &out, &err));
    g_assert_error (err, SDGP_REGION_ERROR, SDGP_REGION_ERROR_EMPTY);
    g_clear_error (&err);
}

static void
test_img2img (void)
{
    sdgp_rect out;
    GError *err = NULL;
    sdgp_rect layer = R (100, 50, 300, 200);   // offset layer: covers x 100..399, y 50..249

    g_assert_true (sdgp_region_img2img (NULL, layer, &out, &err));
    assert_rect (out, 100, 50, 300, 200);

    sdgp_rect sel = R (80, 40, 100, 100);       // x 80..179 & 100..399 = 100..179; y 50..139
    g_assert_true (sdgp_region_img2img (&sel, layer, &out, &err));
    g_assert_no_error (err);
    assert_rect (out, 100, 50, 80, 90);

    sel = R (0, 0, 100, 50);                    // ends exactly where the layer starts
    g_assert_false (sdgp_region_img2img (&sel, layer, &out, &err));
    g_assert_error (err, SDGP_REGION_ERROR, SDGP_REGION_ERROR_OUTSIDE);
    g_clear_error (&err);

    g_assert_false (sdgp_region_img2img (NULL, R (0, 0, 0, 10), &out, &err));
    g_assert_error (err, SDGP_REGION_ERROR, SDGP_REGION_ERROR_EMPTY);
    g_clear_error (&err);
}

static void
test_margin (void)
{
    // max (ceil (longest / 16), ceil ((w + h) / 4))
    g_assert_cmpint (sdgp_region_margin (100, 60), ==, 40);      // max (7, 40)
    g_assert_cmpint (sdgp_region_margin (512, 512), ==, 256);    // max (32, 256)
    g_assert_cmpint (sdgp_region_margin (1000, 10), ==, 253);    // max (63, ceil (252.5))
    g_assert_cmpint (sdgp_region_margin (1, 1), ==, 1);          // max (1, ceil (0.5))
    g_assert_cmpint (sdgp_region_margin (0, 10), ==, 0);
}

static void
test_inpaint_typical (void)
{
    sdgp_rect out;
    GError *err = NULL;
    // Small selection in a big layer. Margin 40 -> {360,260,180,140}; under 512, so enlarged to
    // 512 centred on the selection's centre (450, 330): x 450-256 = 194, y 330-256 = 74.
    g_assert_true (sdgp_region_inpaint_context (R (400, 300, 100, 60), R (0, 0, 1024, 768), 512,
                                                &out, &err));
    g_assert_no_error (err);
    assert_rect (out, 194, 74, 512, 512);

    // Near the top-left corner: margin ceil (100/4) = 25 -> {-15,-15,100,100} clipped to
    // {0,0,85,85}; enlarged: 35 - 256 < 0, shifted to 0 -> {0,0,512,512}.
    g_assert_true (sdgp_region_inpaint_context (R (10, 10, 50, 50), R (0, 0, 1024, 768), 512,
                                                &out, &err));
    assert_rect (out, 0, 0, 512, 512);

    // Bottom-right corner of the same layer: enlarged then shifted to end at 1024 / 768.
    g_assert_true (sdgp_region_inpaint_context (R (1000, 740, 24, 28), R (0, 0, 1024, 768), 512,
                                                &out, &err));
    assert_rect (out, 512, 256, 512, 512);

    // Large selection: margin ceil (1601/4) = 401 -> {100, 99, 1803, 1402} (inside the layer,
    // over 512). Snap: 1803 -> 1808 (5 more: 2 left, 3 right) x 98; 1402 -> 1408 (6 more: 3
    // above) y 96.
    g_assert_true (sdgp_region_inpaint_context (R (501, 500, 1001, 600), R (0, 0, 3000, 2000), 512,
                                                &out, &err));
    assert_rect (out, 98, 96, 1808, 1408);

    // A wide selection: margin ceil (700/4) = 175 -> {25,225,950,450}; height enlarged to 512
    // around y 450 -> 194.. ; width 950 -> 952 (2 more: 1 left) x 24.
    g_assert_true (sdgp_region_inpaint_context (R (200, 400, 600, 100), R (0, 0, 1200, 1000), 512,
                                                &out, &err));
    assert_rect (out, 24, 194, 952, 512);
}

static void
test_inpaint_offsets (void)
{
    sdgp_rect out;
    GError *err = NULL;
    // Layer at (1000, 2000), 640x480; the selection sticks out of its bottom-right corner.
    // Clipped selection: x 1600..1639 (40), y 2400..2479 (80). Margin max (5, 30) = 30 ->
    // {1570, 2370, 70, 110} after clipping. Width to 512 around x 1620: 1364..1875, past the
    // layer's end 1640 -> shifted to 1128..1639. Height to min (512, 480) = the whole layer.
    g_assert_true (sdgp_region_inpaint_context (R (1600, 2400, 100, 200), R (1000, 2000, 640, 480),
                                                512, &out, &err));
    g_assert_no_error (err);
    assert_rect (out, 1128, 2000, 512, 480);

    // Negative offsets work the same: the layer covers x -300..-1.
    g_assert_true (sdgp_region_inpaint_context (R (-100, 0, 20, 20), R (-300, 0, 300, 600), 512,
                                                &out, &err));
    // Width: layer 300 < 512 -> whole layer, 300 not a multiple of 8 and cannot grow -> 296,
    // covering the selection -100..-81 centred on it: -90 - 148 = -238, clamped to the layer:
    // start in [-300, -296] -> -296. Height: margin 10 -> 0..29 after clipping, to 512 around
    // y 10 -> shifted to 0.
    assert_rect (out, -296, 0, 296, 512);
}

static void
test_inpaint_small_layer (void)
{
    sdgp_rect out;
    GError *err = NULL;
    // Layer 300x200 (smaller than native): the context is the whole layer, snapped: 300 ->
    // 296 (cannot grow), placed over the selection; 200 is already a multiple of 8.
    g_assert_true (sdgp_region_inpaint_context (R (100, 50, 20, 20), R (0, 0, 300, 200), 512,
                                                &out, &err));
    assert_rect (out, 0, 0, 296, 200);
    // Selection on the right edge: the 296 columns end at the layer's end.
    g_assert_true (sdgp_region_inpaint_context (R (290, 50, 10, 20), R (0, 0, 300, 200), 512,
                                                &out, &err));
    assert_rect (out, 4, 0, 296, 200);
    // Select-all on that layer: shrinking would cut the selection, so the width stays 300.
    g_assert_true (sdgp_region_inpaint_context (R (0, 0, 300, 200), R (0, 0, 300, 200), 512,
                                                &out, &err));
    assert_rect (out, 0, 0, 300, 200);
    int gw, gh;
    g_assert_true (sdgp_region_gen_size (out.width, out.height, 512, &gw, &gh));
    g_assert_cmpint (gw % 8, ==, 0);
    g_assert_cmpint (gh % 8, ==, 0);

    // 8x8 layer, one pixel selected: the whole layer.
    g_assert_true (sdgp_region_inpaint_context (R (3, 3, 1, 1), R (0, 0, 8, 8), 512, &out, &err));
    assert_rect (out, 0, 0, 8, 8);
    g_assert_no_error (err);
}

static void
test_inpaint_degenerate (void)
{
    sdgp_rect out = R (7, 7, 7, 7);
    GError *err = NULL;
    g_assert_false (sdgp_region_inpaint_context (R (0, 0, 0, 0), R (0, 0, 100, 100), 512, &out,
                                                 &err));
    g_assert_error (err, SDGP_REGION_ERROR, SDGP_REGION_ERROR_EMPTY);
    g_clear_error (&err);
    g_assert_false (sdgp_region_inpaint_context (R (0, 0, 1, 1), R (0, 0, 1, 1), 512, &out, &err));
    g_assert_error (err, SDGP_REGION_ERROR, SDGP_REGION_ERROR_TOO_SMALL);   // 1-pixel layer
    g_clear_error (&err);
    g_assert_false (sdgp_region_inpaint_context (R (0, 0, 5, 5), R (0, 0, 7, 100), 512, &out,
                                                 &err));
    g_assert_error (err, SDGP_REGION_ERROR, SDGP_REGION_ERROR_TOO_SMALL);
    g_clear_error (&err);
    g_assert_false (sdgp_region_inpaint_context (R (200, 0, 5, 5), R (0, 0, 100, 100), 512, &out,
                                                 &err));
    g_assert_error (err, SDGP_REGION_ERROR, SDGP_REGION_ERROR_OUTSIDE);
    g_clear_error (&err);
    assert_rect (out, 7, 7, 7, 7);

    // Without a native size (<= 0) only the margin counts: 100x60 -> margin 40.
    g_assert_true (sdgp_region_inpaint_context (R (400, 300, 100, 60), R (0, 0, 1024, 768), 0,
                                                &out, &err));
    assert_rect (out, 358, 258, 184, 144);   // {360,260,180,140}: 180 -> 184 (2 more on the
                                             // left), 140 -> 144 (2 more above)
}

static void
test_inpaint_sweep (void)
{
    // Properties over many random cases: inside the layer, contains the clipped selection,
    // at least native where the layer allows, multiples of 8 unless the selection forbids it.
    guint32 s = 12345;
    for (int i = 0; i < 5000; i++) {
        sdgp_rect layer = R ((int) (rnd (&s) * 400) - 200, (int) (rnd (&s) * 400) - 200,
                             8 + (int) (rnd (&s) * 1500), 8 + (int) (rnd (&s) * 1500));
        sdgp_rect sel = R (layer.x - 50 + (int) (rnd (&s) * (layer.width + 50)),
                           layer.y - 50 + (int) (rnd (&s) * (layer.height + 50)),
                           1 + (int) (rnd (&s) * 700), 1 + (int) (rnd (&s) * 700));
        sdgp_rect clipped = sdgp_rect_intersect (sel, layer), out;
        GError *err = NULL;
        gboolean ok = sdgp_region_inpaint_context (sel, layer, 512, &out, &err);
        if (sdgp_rect_is_empty (clipped)) {
            g_assert_false (ok);
            g_assert_error (err, SDGP_REGION_ERROR, SDGP_REGION_ERROR_OUTSIDE);
            g_clear_error (&err);
            continue;
        }
        g_assert_true (ok);
        g_assert_true (sdgp_rect_contains (layer, out));
        g_assert_true (sdgp_rect_contains (out, clipped));
        g_assert_cmpint (out.width, >=, MIN (512, layer.width) / 8 * 8);
        g_assert_cmpint (out.height, >=, MIN (512, layer.height) / 8 * 8);
        g_assert_true (out.width % 8 == 0 || clipped.width > layer.width / 8 * 8);
        g_assert_true (out.height % 8 == 0 || clipped.height > layer.height / 8 * 8);
    }
}

static void
test_snap8 (void)
{
    sdgp_rect out;
    GError *err = NULL;
    sdgp_rect b = R (0, 0, 100, 100);
    // 13 -> 16: 3 more, 1 left (start 2); 10 -> 16: 6 more, 3 above (start 2).
    g_assert_true (sdgp_region_snap8 (R (3, 5, 13, 10), R (3, 5, 13, 10), b, &out, &err));
    assert_rect (out, 2, 2, 16, 16);
    // Against the top-left edge: shifted inside.
    g_assert_true (sdgp_region_snap8 (R (0, 0, 13, 10), R (0, 0, 13, 10), b, &out, &err));
    assert_rect (out, 0, 0, 16, 16);
    // Already multiples of 8: unchanged.
    g_assert_true (sdgp_region_snap8 (R (1, 2, 24, 8), R (1, 2, 24, 8), b, &out, &err));
    assert_rect (out, 1, 2, 24, 8);
    // 99 wide in a 100 layer: cannot grow to 104, shrinks to 96 over keep 80..89 ->
    // start in [max (1, 90-96), min (1+99-96, 80)] = [1, 4], centred 85-48 = 37 -> 4.
    g_assert_true (sdgp_region_snap8 (R (1, 0, 99, 8), R (80, 0, 10, 8), b, &out, &err));
    assert_rect (out, 4, 0, 96, 8);
    // Partly outside: clipped first ({0,0,10,10}), then grown to 16.
    g_assert_true (sdgp_region_snap8 (R (-5, -5, 15, 15), R (-5, -5, 15, 15), b, &out, &err));
    assert_rect (out, 0, 0, 16, 16);
    // Errors.
    g_assert_false (sdgp_region_snap8 (R (0, 0, 5, 5), R (0, 0, 5, 5), R (0, 0, 7, 7), &out, &err));
    g_assert_error (err, SDGP_REGION_ERROR, SDGP_REGION_ERROR_TOO_SMALL);
    g_clear_error (&err);
    g_assert_false (sdgp_region_snap8 (R (200, 0, 5, 5), R (200, 0, 5, 5), b, &out, &err));
    g_assert_error (err, SDGP_REGION_ERROR, SDGP_REGION_ERROR_EMPTY);
    g_clear_error (&err);
}

static void
test_gen_size (void)
{
    int gw = 0, gh = 0;
    g_assert_true (sdgp_region_gen_size (512, 512, 512, &gw, &gh));   // native: 1:1
    g_assert_cmpint (gw, ==, 512);
    g_assert_cmpint (gh, ==, 512);
    // 1024x768: s = 512 / sqrt (786432) = 0.57735 -> 591.2, 443.4 -> 592 x 440.
    g_assert_true (sdgp_region_gen_size (1024, 768, 512, &gw, &gh));
    g_assert_cmpint (gw, ==, 592);
    g_assert_cmpint (gh, ==, 440);
    // 512x768: s = 0.8165 -> 418.0, 627.1 -> 416 x 624.
    g_assert_true (sdgp_region_gen_size (512, 768, 512, &gw, &gh));
    g_assert_cmpint (gw, ==, 416);
    g_assert_cmpint (gh, ==, 624);
    // Tiny region: generated at native area, not below.
    g_assert_true (sdgp_region_gen_size (10, 10, 512, &gw, &gh));
    g_assert_cmpint (gw, ==, 512);
    g_assert_cmpint (gh, ==, 512);
    // Absurd aspect: clamped to [64, 2048].
    g_assert_true (sdgp_region_gen_size (1, 4000, 512, &gw, &gh));
    g_assert_cmpint (gw, ==, SDGP_GEN_MIN_SIDE);
    g_assert_cmpint (gh, ==, SDGP_GEN_MAX_SIDE);
    // Sweep: area within 5% of native^2, aspect within 3.5%, multiples of 8.
    guint32 s = 777;
    for (int i = 0; i < 20000; i++) {
        int w = 16 + (int) (rnd (&s) * 4000);
        int h = (int) (w * (0.25 + rnd (&s) * 3.75));
        if (h < 1)
            h = 1;
        int native = rnd (&s) < 0.5f ? 512 : 768;
        g_assert_true (sdgp_region_gen_size (w, h, native, &gw, &gh));
        g_assert_cmpint (gw % 8, ==, 0);
        g_assert_cmpint (gh % 8, ==, 0);
        double area = (double) gw * gh / ((double) native * native);
        g_assert_cmpfloat (fabs (area - 1.0), <, 0.05);
        double aspect = log ((double) gw / gh) - log ((double) w / h);
        g_assert_cmpfloat (fabs (aspect), <, 0.035);
    }
}

static void
test_hires_size (void)
{
    int hw = 0, hh = 0;
    // A 2048x1536 region generated at 592x440: twice that fits.
    g_assert_true (sdgp_region_hires_size (592, 440, 2048, 1536, 2.0, &hw, &hh));
    g_assert_cmpint (hw, ==, 1184);
    g_assert_cmpint (hh, ==, 880);
    // 1.5: 888 x 660 -> rounded down to 888 x 656.
    g_assert_true (sdgp_region_hires_size (592, 440, 2048, 1536, 1.5, &hw, &hh));
    g_assert_cmpint (hw, ==, 888);
    g_assert_cmpint (hh, ==, 656);
    // 1024x768 region: capped at its size, one factor for both sides (1024/592 = 1.7297):
    // 1024 x 761.1 -> 1024 x 760.
    g_assert_true (sdgp_region_hires_size (592, 440, 1024, 768, 4.0, &hw, &hh));
    g_assert_cmpint (hw, ==, 1024);
    g_assert_cmpint (hh, ==, 760);
    // A region no bigger than the first pass, or a factor of 1: no second pass.
    g_assert_false (sdgp_region_hires_size (512, 512, 512, 512, 2.0, &hw, &hh));
    g_assert_cmpint (hw, ==, 512);
    g_assert_cmpint (hh, ==, 512);
    g_assert_false (sdgp_region_hires_size (512, 512, 10, 10, 2.0, &hw, &hh));
    g_assert_false (sdgp_region_hires_size (512, 512, 4000, 4000, 1.0, &hw, &hh));
    g_assert_false (sdgp_region_hires_size (512, 512, 4000, 4000, NAN, &hw, &hh));
    // A region a few pixels bigger: the rounding leaves the first size, so no second pass.
    g_assert_false (sdgp_region_hires_size (512, 512, 515, 515, 2.0, &hw, &hh));
    // The engine's limit.
    g_assert_true (sdgp_region_hires_size (2048, 1024, 20000, 20000, 4.0, &hw, &hh));
    g_assert_cmpint (hw, ==, SDGP_HIRES_MAX_SIDE);
    g_assert_cmpint (hh, ==, 2048);
    // Sweep: multiples of 8, within the region (or the first size), aspect kept.
    guint32 s = 4242;
    for (int i = 0; i < 20000; i++) {
        int gw = 64 + 8 * (int) (rnd (&s) * 240), gh = 64 + 8 * (int) (rnd (&s) * 240);
        int rw = 1 + (int) (rnd (&s) * 6000), rh = 1 + (int) (rnd (&s) * 6000);
        double f = 1.0 + 3.0 * rnd (&s);
        gboolean on = sdgp_region_hires_size (gw, gh, rw, rh, f, &hw, &hh);
        g_assert_cmpint (hw % 8, ==, 0);
        g_assert_cmpint (hh % 8, ==, 0);
        g_assert_cmpint (hw, >=, gw);
        g_assert_cmpint (hh, >=, gh);
        g_assert_cmpint (MAX (hw, hh), <=, SDGP_HIRES_MAX_SIDE);
        g_assert_true (on == (hw != gw || hh != gh));
        if (on) {
            g_assert_true (hw <= MAX (rw, gw) && hh <= MAX (rh, gh));
            g_assert_cmpfloat (hw, <=, gw * f + 1e-9);
            g_assert_cmpfloat (hh, <=, gh * f + 1e-9);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Masks

static void
test_grow (void)
{
    // One pixel at the centre of 21x21, radius 3: the disc dx^2 + dy^2 <= 9 (29 pixels).
    int w = 21, h = 21;
    float *m = g_new0 (float, w * h), *o = g_new (float, w * h);
    m[10 * w + 10] = 1.0f;
    g_assert_true (sdgp_mask_grow (m, w, h, 3.0f, o));
    int count = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int d2 = (x - 10) * (x - 10) + (y - 10) * (y - 10);
            g_assert_cmpfloat (o[y * w + x], ==, d2 <= 9 ? 1.0f : 0.0f);
            count += o[y * w + x] > 0.0f;
        }
    g_assert_cmpint (count, ==, 29);

    // Soft plateau of 0.3 (a 5x5 block): grows as a 0.3 plateau, never above 0.3.
    memset (m, 0, sizeof (float) * w * h);
    for (int y = 8; y < 13; y++)
        for (int x = 8; x < 13; x++)
            m[y * w + x] = 0.3f;
    g_assert_true (sdgp_mask_grow (m, w, h, 2.0f, o));
    g_assert_cmpfloat (o[10 * w + 6], ==, 0.3f);   // 2 left of the block
    g_assert_cmpfloat (o[10 * w + 5], ==, 0.0f);   // 3 left
    g_assert_cmpfloat (o[6 * w + 6], ==, 0.0f);    // corner: distance sqrt (8) > 2
    for (int i = 0; i < w * h; i++)
        g_assert_true (o[i] == 0.0f || o[i] == 0.3f);
    g_free (m);
    g_free (o);

    // Random soft mask against a brute-force disc max, odd sizes and radii, and in place.
    w = 37;
    h = 23;
    m = g_new (float, w * h);
    o = g_new (float, w * h);
    guint32 s = 99;
    for (int i = 0; i < w * h; i++)
        m[i] = rnd (&s) < 0.05f ? rnd (&s) : 0.0f;
    const float radii[] = {0.0f, 0.7f, 1.0f, 1.5f, 4.5f, 7.0f, 40.0f};
    for (size_t ri = 0; ri < G_N_ELEMENTS (radii); ri++) {
        float r = radii[ri];
        g_assert_true (sdgp_mask_grow (m, w, h, r, o));
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float want = r < 0.5f ? m[y * w + x] : 0.0f;
                for (int yy = 0; yy < h && r >= 0.5f; yy++)
                    for (int xx = 0; xx < w; xx++)
                        if ((double) (xx - x) * (xx - x) + (double) (yy - y) * (yy - y) <=
                            (double) r * r)
                            want = MAX (want, m[yy * w + xx]);
                g_assert_cmpfloat (o[y * w + x], ==, want);
            }
    }
    memcpy (o, m, sizeof (float) * w * h);
    float *o2 = g_new (float, w * h);
    g_assert_true (sdgp_mask_grow (m, w, h, 3.0f, o2));
    g_assert_true (sdgp_mask_grow (o, w, h, 3.0f, o));      // in place
    g_assert_cmpmem (o, sizeof (float) * w * h, o2, sizeof (float) * w * h);
    g_free (o2);
    g_free (m);
    g_free (o);
}

static void
test_feather (void)
{
    GError *err = NULL;
    int w = 64, h = 40;
    float *m = g_new (float, w * h), *o = g_new (float, w * h);
    // A constant stays constant, up to the borders (clamped edges).
    for (int i = 0; i < w * h; i++)
        m[i] = 1.0f;
    g_assert_true (sdgp_mask_feather (m, w, h, 5.0f, o, &err));
    g_assert_no_error (err);
    for (int i = 0; i < w * h; i++)
        g_assert_cmpfloat (fabsf (o[i] - 1.0f), <, 1e-5f);
    // A vertical hard edge at x = 32: 0.5 at the edge (mean of the two pixels beside it), odd
    // symmetry, monotone, sigma 2 -> Phi (0.5/2) = 0.599 on the first pixel inside.
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            m[y * w + x] = x >= 32 ? 1.0f : 0.0f;
    g_assert_true (sdgp_mask_feather (m, w, h, 2.0f, o, &err));
    for (int y = 0; y < h; y++) {
        const float *r = o + y * w;
        g_assert_cmpfloat (fabsf (r[31] + r[32] - 1.0f), <, 1e-4f);
        g_assert_cmpfloat (fabsf (r[32] - 0.5987f), <, 0.01f);
        for (int x = 1; x < w; x++)
            g_assert_cmpfloat (r[x], >=, r[x - 1] - 1e-6f);
        g_assert_cmpfloat (r[0], <, 1e-5f);
        g_assert_cmpfloat (r[w - 1], >, 1.0f - 1e-5f);
    }
    // sigma 0 copies; in place works.
    g_assert_true (sdgp_mask_feather (m, w, h, 0.0f, o, &err));
    g_assert_cmpmem (o, sizeof (float) * w * h, m, sizeof (float) * w * h);
    float *o2 = g_new (float, w * h);
    g_assert_true (sdgp_mask_feather (m, w, h, 3.0f, o2, &err));
    g_assert_true (sdgp_mask_feather (o, w, h, 3.0f, o, &err));
    g_assert_cmpmem (o, sizeof (float) * w * h, o2, sizeof (float) * w * h);
    g_free (o2);
    g_free (m);
    g_free (o);
}

// A hard disc of radius r centred in w x h.
static float *
disc (int w, int h, float r)
{
    float *m = g_new (float, w * h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float dx = x + 0.5f - w / 2.0f, dy = y + 0.5f - h / 2.0f;
            m[y * w + x] = dx * dx + dy * dy <= r * r ? 1.0f : 0.0f;
        }
    return m;
}

static void
test_blend (void)
{
    GError *err = NULL;
    int w = 80, h = 60;
    float *sel = disc (w, h, 20.0f), *b = g_new (float, w * h);
    g_assert_true (sdgp_mask_blend (sel, w, h, SDGP_BLEND_FEATHER_PX, b, &err));
    g_assert_no_error (err);
    int feathered = 0;
    for (int i = 0; i < w * h; i++) {
        if (sel[i] == 0.0f)
            g_assert_true (b[i] == 0.0f);           // exactly: nothing outside may change
        g_assert_cmpfloat (b[i], <=, sel[i]);
        feathered += b[i] > 0.0f && b[i] < 0.99f;
    }
    g_assert_cmpint (feathered, >, 0);              // a ramp inside the edge
    g_assert_cmpfloat (b[30 * w + 40], >, 0.9999f); // deep inside: fully pasted
    // The first pixel inside a hard edge is partly blended, the fourth is (nearly) full.
    int y = h / 2, x0 = 0;
    while (sel[y * w + x0] == 0.0f)
        x0++;
    g_assert_cmpfloat (b[y * w + x0], <, 0.8f);
    g_assert_cmpfloat (b[y * w + x0 + 3], >, 0.95f);
    g_free (sel);

    // A soft selection (GIMP feathered it: a 40-px linear ramp) stays soft: same ramp within a
    // few percent, still exactly 0 where it is 0.
    sel = g_new (float, w * h);
    for (int yy = 0; yy < h; yy++)
        for (int x = 0; x < w; x++)
            sel[yy * w + x] = CLAMP ((x - 20 + 0.5f) / 40.0f, 0.0f, 1.0f);
    g_assert_true (sdgp_mask_blend (sel, w, h, SDGP_BLEND_FEATHER_PX, b, &err));
    for (int i = 0; i < w * h; i++) {
        if (sel[i] == 0.0f)
            g_assert_true (b[i] == 0.0f);
        g_assert_cmpfloat (fabsf (b[i] - sel[i]), <, 0.03f);
    }
    g_assert_cmpfloat (fabsf (b[10 * w + 40] - sel[10 * w + 40]), <, 1e-4f);   // mid-ramp
    g_free (sel);
    g_free (b);
}

static void
test_denoise (void)
{
    GError *err = NULL;
    int w = 128, h = 128;
    float *sel = disc (w, h, 20.0f), *d0 = g_new (float, w * h), *d1 = g_new (float, w * h);
    g_assert_true (sdgp_mask_denoise (sel, w, h, 0.0f, 1.0f, d0, &err));
    g_assert_true (sdgp_mask_denoise (sel, w, h, 1.0f, 1.0f, d1, &err));
    g_assert_no_error (err);
    double s0 = 0, s1 = 0;
    for (int i = 0; i < w * h; i++) {
        g_assert_cmpfloat (d0[i], >=, sel[i]);     // the whole selection is regenerated
        g_assert_cmpfloat (d1[i], >=, sel[i]);
        g_assert_cmpfloat (d0[i], <=, 1.0f);
        s0 += d0[i];
        s1 += d1[i];
    }
    g_assert_cmpfloat (s1, >, s0 * 1.3);            // stronger: wider band
    // Strength 0: sigma 2, grow 8; 8 px outside the disc the band is still ~0.5, 20 px out 0.
    int c = w / 2;
    g_assert_cmpfloat (d0[c * w + c + 20 + 8], >, 0.3f);
    g_assert_cmpfloat (d0[c * w + c + 20 + 8], <, 0.7f);
    g_assert_cmpfloat (d0[c * w + c + 20 + 20], <, 1e-3f);
    g_assert_cmpfloat (d0[c * w + c + 20 + 3], >, 0.97f);   // just outside: nearly free
    // Strength 1: sigma 10, grow 24: 24 px out ~0.5, monotone falloff.
    g_assert_cmpfloat (d1[c * w + c + 20 + 24], >, 0.3f);
    g_assert_cmpfloat (d1[c * w + c + 20 + 24], <, 0.7f);
    for (int x = c + 20; x < w - 1; x++)
        g_assert_cmpfloat (d1[c * w + x + 1], <=, d1[c * w + x] + 1e-6f);

    // scale 2 (generation twice the region): the band is twice as wide in generation px.
    float *d2 = g_new (float, w * h);
    g_assert_true (sdgp_mask_denoise (sel, w, h, 0.0f, 2.0f, d2, &err));
    g_assert_cmpfloat (fabsf (d2[c * w + c + 20 + 16] - d0[c * w + c + 20 + 8]), <, 0.08f);

    // Soft selection (0.4 everywhere in the disc) stays soft: nothing above 0.4.
    for (int i = 0; i < w * h; i++)
        sel[i] *= 0.4f;
    g_assert_true (sdgp_mask_denoise (sel, w, h, 0.5f, 1.0f, d2, &err));
    for (int i = 0; i < w * h; i++) {
        g_assert_cmpfloat (d2[i], <=, 0.4f + 1e-5f);
        g_assert_cmpfloat (d2[i], >=, sel[i]);
    }
    g_free (sel);
    g_free (d0);
    g_free (d1);
    g_free (d2);
}

// ---------------------------------------------------------------------------------------------
// Colour match and compositing

// A textured RGB picture: gradients plus a pattern, values inside [0.1, 0.9].
static float *
picture (int w, int h)
{
    float *p = g_new (float, w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                p[(y * w + x) * 3 + c] =
                    0.5f + 0.2f * sinf (0.15f * x * (c + 1) + 0.1f * y) + 0.15f * (x - w / 2.0f) / w
                    - 0.05f * c * (y - h / 2.0f) / h;
    return p;
}

static double
mean_abs_err (const float *a, const float *b, const float *sel, int n)
{
    double e = 0, cnt = 0;
    for (int i = 0; i < n; i++)
        if (sel[i] > 0.0f) {
            for (int c = 0; c < 3; c++)
                e += fabs (a[3 * i + c] - b[3 * i + c]);
            cnt += 3;
        }
    return e / cnt;
}

static void
test_color_match (void)
{
    GError *err = NULL;
    int w = 128, h = 96, n = w * h;
    float *orig = picture (w, h), *gen = g_new (float, 3 * n), *out = g_new (float, 3 * n);
    float *sel = disc (w, h, 25.0f), *blend = g_new (float, n);
    g_assert_true (sdgp_mask_blend (sel, w, h, SDGP_BLEND_FEATHER_PX, blend, &err));
    // The generated context is the original with a tint (contrast and brightness shift), as a
    // VAE round trip gives.
    for (int i = 0; i < 3 * n; i++)
        gen[i] = orig[i] * 0.8f + 0.1f;
    double before = mean_abs_err (gen, orig, sel, n);
    g_assert_true (sdgp_color_match (orig, gen, blend, w, h, out, &err));
    g_assert_no_error (err);
    double after = mean_abs_err (out, orig, sel, n);
    g_test_message ("tint: mean |error| inside %.5f -> %.6f", before, after);
    g_assert_cmpfloat (before, >, 0.01);
    g_assert_cmpfloat (after, <, before * 0.01);

    // New content inside (what inpainting is for) plus a per-channel tint everywhere: the
    // tint still goes (measured on the ring outside, which keeps the old content).
    for (int i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) {
            float v = sel[i] > 0.0f ? 0.3f + 0.01f * c + 0.1f * (i % 7) / 7.0f : orig[3 * i + c];
            gen[3 * i + c] = v * (0.9f + 0.05f * c) + 0.04f * (c - 1);
        }
    g_assert_true (sdgp_color_match (orig, gen, blend, w, h, out, &err));
    // Inside, out should be the untinted new content: (gen - offset) / gain.
    double e_before = 0, e_after = 0, cnt = 0;
    for (int i = 0; i < n; i++)
        if (sel[i] > 0.0f)
            for (int c = 0; c < 3; c++) {
                float truth = (gen[3 * i + c] - 0.04f * (c - 1)) / (0.9f + 0.05f * c);
                e_before += fabs (gen[3 * i + c] - truth);
                e_after += fabs (out[3 * i + c] - truth);
                cnt++;
            }
    g_test_message ("new content: mean |tint| inside %.5f -> %.6f", e_before / cnt, e_after / cnt);
    g_assert_cmpfloat (e_after, <, e_before * 0.05);

    // In place gives the same.
    float *copy = g_memdup2 (gen, sizeof (float) * 3 * n);
    g_assert_true (sdgp_color_match (orig, copy, blend, w, h, copy, &err));
    g_assert_cmpmem (copy, sizeof (float) * 3 * n, out, sizeof (float) * 3 * n);
    g_free (copy);

    // No ring (everything selected) or no selection: a plain copy.
    for (int i = 0; i < n; i++)
        blend[i] = 1.0f;
    g_assert_true (sdgp_color_match (orig, gen, blend, w, h, out, &err));
    g_assert_cmpmem (out, sizeof (float) * 3 * n, gen, sizeof (float) * 3 * n);
    memset (blend, 0, sizeof (float) * n);
    g_assert_true (sdgp_color_match (orig, gen, blend, w, h, out, &err));
    g_assert_cmpmem (out, sizeof (float) * 3 * n, gen, sizeof (float) * 3 * n);
    // A flat ring: only a shift, no blow-up.
    for (int i = 0; i < 3 * n; i++) {
        orig[i] = 0.5f;
        gen[i] = 0.6f;
    }
    g_free (sel);
    sel = disc (w, h, 25.0f);
    g_assert_true (sdgp_color_match (orig, gen, sel, w, h, out, &err));
    for (int i = 0; i < 3 * n; i++)
        g_assert_cmpfloat (fabsf (out[i] - 0.5f), <, 1e-5f);
    g_free (orig);
    g_free (gen);
    g_free (out);
    g_free (sel);
    g_free (blend);
}

static void
test_composite (void)
{
    int w = 33, h = 17, n = w * h;
    guint32 s = 4242;
    for (int channels = 1; channels <= 4; channels++) {
        int colour = channels >= 3 ? 3 : 1;
        float *orig = g_new (float, n * channels), *gen = g_new (float, n * colour);
        float *blend = g_new (float, n), *out = g_new (float, n * channels);
        for (int i = 0; i < n * channels; i++)
            orig[i] = rnd (&s);
        for (int i = 0; i < n; i++) {
            float r = rnd (&s);
            blend[i] = r < 0.4f ? 0.0f : r < 0.7f ? 1.0f : rnd (&s);
            for (int c = 0; c < colour; c++)
                // Outside the blend, the generated pixels are garbage that must not leak.
                gen[i * colour + c] = blend[i] == 0.0f ? NAN : rnd (&s);
        }
        g_assert_true (sdgp_composite (orig, gen, blend, w, h, channels, out));
        for (int i = 0; i < n; i++) {
            const float *o = orig + i * channels, *d = out + i * channels;
            const float *g = gen + i * colour;
            if (blend[i] == 0.0f) {
                g_assert_cmpmem (d, sizeof (float) * channels, o, sizeof (float) * channels);
                continue;
            }
            for (int c = 0; c < colour; c++) {
                float want = (1.0f - blend[i]) * o[c] + blend[i] * g[c];
                if (blend[i] == 1.0f)
                    g_assert_true (d[c] == g[c]);
                g_assert_cmpfloat (fabsf (d[c] - want), <, 1e-6f);
            }
            if (channels == 2 || channels == 4)
                g_assert_true (d[channels - 1] == o[channels - 1]);   // alpha kept
        }
        // In place (out == orig).
        float *inplace = g_memdup2 (orig, sizeof (float) * n * channels);
        g_assert_true (sdgp_composite (inplace, gen, blend, w, h, channels, inplace));
        size_t bytes = sizeof (float) * n * channels;
        g_assert_cmpmem (inplace, bytes, out, bytes);
        g_free (inplace);
        g_free (orig);
        g_free (gen);
        g_free (blend);
        g_free (out);
    }
}

// ---------------------------------------------------------------------------------------------
// Resampling

static void
test_resample_constant (void)
{
    GError *err = NULL;
    const float value[4] = {0.3f, 0.6f, 0.9f, 1.0f};
    const int sizes[][4] = {{100, 60, 37, 23}, {37, 23, 100, 60}, {64, 64, 512, 512},
                            {517, 389, 64, 48}, {1, 1, 8, 8}, {10, 1, 3, 7}};
    for (int channels = 1; channels <= 4; channels++)
        for (size_t k = 0; k < G_N_ELEMENTS (sizes); k++) {
            int sw = sizes[k][0], sh = sizes[k][1], dw = sizes[k][2], dh = sizes[k][3];
            float *src = g_new (float, sw * sh * channels);
            float *dst = g_new (float, dw * dh * channels + 16);
            for (int i = 0; i < sw * sh; i++)
                for (int c = 0; c < channels; c++)   // alpha (last of 2 or 4) = 1
                    src[i * channels + c] =
                        (channels % 2 == 0 && c == channels - 1) ? 1.0f : value[c];
            for (int i = 0; i < 16; i++)
                dst[dw * dh * channels + i] = -7.0f;   // sentinels: nothing written past the end
            g_assert_true (sdgp_resample (src, sw, sh, channels, dw, dh, dst, &err));
            g_assert_no_error (err);
            double maxe = 0;
            for (int i = 0; i < dw * dh * channels; i++)
                maxe = MAX (maxe, fabs (dst[i] - src[i % channels]));
            if (maxe > 1e-4)
                g_error ("channels %d %dx%d -> %dx%d: constant moved by %g", channels, sw, sh, dw,
                         dh, maxe);
            for (int i = 0; i < 16; i++)
                g_assert_cmpfloat (dst[dw * dh * channels + i], ==, -7.0f);
            g_free (src);
            g_free (dst);
        }
}

static void
test_resample_roundtrip (void)
{
    GError *err = NULL;
    int w = 160, h = 120, gw = 96, gh = 72;
    float *src = g_new (float, w * h * 3), *small = g_new (float, gw * gh * 3);
    float *back = g_new (float, w * h * 3);
    // Smooth content survives a down/up round trip; the mean is kept.
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                src[(y * w + x) * 3 + c] = 0.5f + 0.3f * sinf (0.05f * x + 0.07f * y + c);
    g_assert_true (sdgp_resample (src, w, h, 3, gw, gh, small, &err));
    g_assert_true (sdgp_resample (small, gw, gh, 3, w, h, back, &err));
    g_assert_no_error (err);
    double e = 0, m0 = 0, m1 = 0;
    for (int i = 0; i < w * h * 3; i++) {
        e = MAX (e, fabs (back[i] - src[i]));
        m0 += src[i];
        m1 += back[i];
    }
    g_test_message ("round trip 160x120 -> 96x72 -> back: max error %.4f, mean drift %.5f", e,
                    fabs (m1 - m0) / (w * h * 3));
    g_assert_cmpfloat (e, <, 0.03);
    g_assert_cmpfloat (fabs (m1 - m0) / (w * h * 3), <, 0.005);
    // Same size: an exact copy.
    g_assert_true (sdgp_resample (src, w, h, 3, w, h, back, &err));
    g_assert_cmpmem (back, sizeof (float) * w * h * 3, src, sizeof (float) * w * h * 3);
    // Colour is averaged in linear light (GEGL's way): black and white halve to sRGB 0.735,
    // while a mask is averaged as plain numbers.
    const float bw[6] = {0, 0, 0, 1, 1, 1}, m01[2] = {0, 1};
    float px[3];
    g_assert_true (sdgp_resample (bw, 2, 1, 3, 1, 1, px, &err));
    g_assert_cmpfloat (fabsf (px[0] - 0.7354f), <, 2e-3f);
    g_assert_true (sdgp_resample (m01, 2, 1, 1, 1, 1, px, &err));
    g_assert_cmpfloat (fabsf (px[0] - 0.5f), <, 1e-4f);
    // A hard mask resampled stays within [0,1] (overshoot clamped).
    float *m = disc (w, h, 30.0f), *mb = g_new (float, 333 * 250);
    g_assert_true (sdgp_resample (m, w, h, 1, 333, 250, mb, &err));
    for (int i = 0; i < 333 * 250; i++)
        g_assert_true (mb[i] >= 0.0f && mb[i] <= 1.0f);
    g_assert_cmpfloat (mb[125 * 333 + 166], ==, 1.0f);
    g_assert_cmpfloat (mb[0], ==, 0.0f);
    g_free (m);
    g_free (mb);
    g_free (src);
    g_free (small);
    g_free (back);
}

// ---------------------------------------------------------------------------------------------
// GEGL set-up

#ifndef SDGP_GEGL_PLUGINS_DIR
#define SDGP_GEGL_PLUGINS_DIR ""
#endif

// gegl_init() loads every module in GEGL's folder, among them ffmpeg's, whose libjxl/libhwy
// runs an instruction valgrind cannot decode (rdtscp: SIGILL) - and none of which we need. So,
// unless GEGL_PATH is set already, GEGL gets a private folder linking to the modules holding
// gegl:nop (gegl-core), gegl:buffer-source, gegl:gaussian-blur (gegl-common*) and
// gegl:scale-size (*transformops*).
// Returns the folder to remove at exit, or NULL when GEGL loads its usual modules.
static char *
gegl_modules_only_needed (void)
{
    const char *dir = SDGP_GEGL_PLUGINS_DIR;
    if (g_getenv ("GEGL_PATH") || !*dir || !g_file_test (dir, G_FILE_TEST_IS_DIR))
        return NULL;
    GDir *d = g_dir_open (dir, 0, NULL);
    char *tmp = d ? g_dir_make_tmp ("test-region-gegl-XXXXXX", NULL) : NULL;
    int linked = 0;
    const char *name;
    while (tmp && (name = g_dir_read_name (d))) {
        if (!g_str_has_suffix (name, ".so") ||
            !(g_str_has_prefix (name, "gegl-co") || strstr (name, "transformops")) ||
            g_str_has_prefix (name, "gegl-common-gpl3") ||
            g_str_has_prefix (name, "gegl-common-cxx"))
            continue;
        char *target = g_build_filename (dir, name, NULL);
        char *link = g_build_filename (tmp, name, NULL);
        linked += symlink (target, link) == 0;
        g_free (target);
        g_free (link);
    }
    if (d)
        g_dir_close (d);
    if (tmp && linked >= 2)
        g_setenv ("GEGL_PATH", tmp, TRUE);
    return tmp;
}

static void
remove_dir (char *tmp)
{
    if (!tmp)
        return;
    GDir *d = g_dir_open (tmp, 0, NULL);
    const char *name;
    while (d && (name = g_dir_read_name (d))) {
        char *p = g_build_filename (tmp, name, NULL);
        g_unlink (p);
        g_free (p);
    }
    if (d)
        g_dir_close (d);
    g_rmdir (tmp);
    g_free (tmp);
}

int
main (int argc, char **argv)
{
    g_test_init (&argc, &argv, NULL);
    char *modules = gegl_modules_only_needed ();
    gegl_init (NULL, NULL);
    g_test_add_func ("/region/rect", test_rect);
    g_test_add_func ("/region/txt2img", test_txt2img);
    g_test_add_func ("/region/img2img", test_img2img);
    g_test_add_func ("/region/margin", test_margin);
    g_test_add_func ("/region/inpaint/typical", test_inpaint_typical);
    g_test_add_func ("/region/inpaint/offsets", test_inpaint_offsets);
    g_test_add_func ("/region/inpaint/small-layer", test_inpaint_small_layer);
    g_test_add_func ("/region/inpaint/degenerate", test_inpaint_degenerate);
    g_test_add_func ("/region/inpaint/sweep", test_inpaint_sweep);
    g_test_add_func ("/region/snap8", test_snap8);
    g_test_add_func ("/region/hires-size", test_hires_size);
    g_test_add_func ("/region/gen-size", test_gen_size);
    g_test_add_func ("/mask/grow", test_grow);
    g_test_add_func ("/mask/feather", test_feather);
    g_test_add_func ("/mask/blend", test_blend);
    g_test_add_func ("/mask/denoise", test_denoise);
    g_test_add_func ("/color/match", test_color_match);
    g_test_add_func ("/color/composite", test_composite);
    g_test_add_func ("/resample/constant", test_resample_constant);
    g_test_add_func ("/resample/roundtrip", test_resample_roundtrip);
    int rc = g_test_run ();
    gegl_exit ();
    remove_dir (modules);
    return rc;
}
