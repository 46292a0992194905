/*
 * test-loader.c - safetensors indexing, conversion, writing and weight binding.
 *
 * Checks the golden tiny-sd1 checkpoint's index, round-trips every dtype the writer produces,
 * the f16/bf16 conversions (exhaustively where cheap), and that every malformed file we can
 * think of fails with the right status and a message naming the file (and the tensor). Bad
 * files are written byte by byte here from tiny hand-written headers, or made from a copy of the
 * golden model: truncated at many points, shrunk while open, grown into a 100 GB sparse file,
 * given NaN and infinite weights; and paths that are not files (a folder, a FIFO, a device, a
 * symlink loop). Those also go through sdg_model_load, the way a user meets them.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "golden.h"
#include "loader/safetensors.h"
#include "loader/weights.h"
#include "sdg.h"

static char *tmpdir; // removed at the end of main

static char *tmp_path(const char *name)
{
    return g_build_filename(tmpdir, name, NULL);
}

// Writes an 8-byte length (header_len, or strlen(header) when < 0), the header, then data.
static char *write_raw(const char *name, const char *header, int64_t header_len, const void *data,
                       size_t data_len)
{
    char *path = tmp_path(name);
    size_t hl = strlen(header);
    uint64_t n = header_len < 0 ? hl : (uint64_t)header_len;
    GByteArray *b = g_byte_array_new();
    for (int i = 0; i < 8; i++) {
        uint8_t c = (uint8_t)(n >> (8 * i));
        g_byte_array_append(b, &c, 1);
    }
    g_byte_array_append(b, (const guint8 *)header, (guint)hl);
    if (data_len)
        g_byte_array_append(b, data, (guint)data_len);
    g_assert_true(g_file_set_contents(path, (const char *)b->data, b->len, NULL));
    g_byte_array_free(b, TRUE);
    return path;
}

// Opening must fail with status, and the message must name the file and contain `needle`.
static void expect_open_fail(const char *path, sdg_status status, const char *needle)
{
    sdg_error err;
    sdg__error_clear(&err);
    st_file *f = st_open(path, &err);
    if (f)
        g_error("%s: opened, expected failure with '%s'", path, needle ? needle : "");
    g_test_message("%s", err.message);
    g_assert_cmpint(err.status, ==, status);
    g_assert_nonnull(strstr(err.message, path));
    if (needle && !strstr(err.message, needle))
        g_error("message '%s' lacks '%s'", err.message, needle);
}

static void expect_header_fail(const char *header, const char *needle)
{
    static uint8_t zeros[8];
    char *path = write_raw("bad.safetensors", header, -1, zeros, sizeof zeros);
    expect_open_fail(path, SDG_ERR_FORMAT, needle);
    g_unlink(path);
    g_free(path);
}

// ---------------------------------------------------------------------------------------------

static const char *const ddpm_buffers[12] = {
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
};

static void test_golden(void)
{
    char *path = golden_path("golden/tiny-sd1.safetensors");
    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
        g_free(path);
        g_test_skip("tiny-sd1.safetensors not found");
        return;
    }
    sdg_error err;
    gint64 t0 = g_get_monotonic_time();
    st_file *f = st_open(path, &err);
    gint64 t1 = g_get_monotonic_time();
    g_assert_nonnull(f);
    g_test_message("indexed %d tensors in %.2f ms", st_count(f), (t1 - t0) / 1000.0);
    // 424 network tensors + 12 DDPM schedule buffers + position_ids.
    g_assert_cmpint(st_count(f), ==, 437);
    g_assert_cmpstr(st_metadata(f, "format"), ==, "pt");
    g_assert_cmpstr(st_metadata(f, "scale_factor"), ==, "0.18215");
    g_assert_null(st_metadata(f, "nope"));
    g_assert_null(st_find(f, "nope"));

    int n_f32 = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        g_assert_true(st_find(f, t->name) == t);
        n_f32 += t->dtype == ST_F32;
    }
    g_assert_cmpint(n_f32, ==, 436);
    g_assert_null(st_at(f, -1));
    g_assert_null(st_at(f, st_count(f)));

    for (int i = 0; i < 12; i++) {
        const st_tensor *t = st_find(f, ddpm_buffers[i]);
        g_assert_nonnull(t);
        g_assert_cmpint(t->dtype, ==, ST_F32);
        g_assert_cmpint(t->n_dims, ==, 1);
        g_assert_cmpint(t->shape[0], ==, 1000);
    }
    const st_tensor *t = st_find(f, "model.diffusion_model.out.2.weight");
    g_assert_nonnull(t);
    g_assert_cmpint(t->n_dims, ==, 4);
    g_assert_cmpint(t->shape[0], ==, 4);
    g_assert_cmpint(t->shape[1], ==, 32);
    g_assert_cmpint(t->shape[2], ==, 3);
    g_assert_cmpint(t->shape[3], ==, 3);
    g_assert_cmpint(t->n_elements, ==, 4 * 32 * 9);
    g_assert_cmpuint(t->size, ==, 4 * 32 * 9 * 4);
    t = st_find(f, "model.diffusion_model.time_embed.0.weight");
    g_assert_cmpint(t->n_dims, ==, 2);
    g_assert_cmpint(t->shape[0], ==, 128);
    g_assert_cmpint(t->shape[1], ==, 32);
    t = st_find(f, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight");
    g_assert_nonnull(t);
    g_assert_cmpint(t->shape[0], ==, 49408);
    g_assert_cmpint(t->shape[1], ==, 64);

    // position_ids: I64 [1,77] holding 0..76.
    t = st_find(f, "cond_stage_model.transformer.text_model.embeddings.position_ids");
    g_assert_nonnull(t);
    g_assert_cmpint(t->dtype, ==, ST_I64);
    g_assert_cmpint(t->n_dims, ==, 2);
    g_assert_cmpint(t->shape[1], ==, 77);
    size_t n;
    int32_t *ids = golden_i32(f, t->name, &n);
    g_assert_cmpuint(n, ==, 77);
    for (int i = 0; i < 77; i++)
        g_assert_cmpint(ids[i], ==, i);
    g_free(ids);
    float *fids = golden_f32(f, t->name, NULL);
    g_assert_cmpfloat(fids[76], ==, 76.0f);
    g_free(fids);
    float *betas = golden_f32(f, "betas", NULL);
    g_assert_cmpfloat(fabsf(betas[0] - 0.00085f), <, 1e-7f);
    g_assert_cmpfloat(fabsf(betas[999] - 0.012f), <, 1e-6f);
    g_assert_true(st_read_i32(f, st_find(f, "betas"), ids = g_new(int32_t, 1000), &err)
                  == SDG_ERR_UNSUPPORTED);
    g_assert_nonnull(strstr(err.message, "betas"));
    g_free(ids);

    // Binding: F32 data comes straight from the mapping.
    sdg_weights *wb = sdg_wb_new(f, &err);
    g_assert_nonnull(wb);
    const float *w = SDG_WB4(wb, 4, 32, 3, 3, "model.diffusion_model.out.%d.weight", 2);
    t = st_find(f, "model.diffusion_model.out.2.weight");
    g_assert_true(w == st_data(f, t));
    const float *b = SDG_WB1(wb, 1000, "%s", "betas");
    g_assert_nonnull(b);
    g_assert_cmpfloat(b[0], ==, betas[0]);
    g_free(betas);
    g_assert_cmpuint(sdg_wb_owned_bytes(wb), ==, 0);
    g_assert_true(sdg_wb_find(wb, "model.diffusion_model.input_blocks.%d.0.in_layers.0.weight", 1)
                  != NULL);
    g_assert_null(sdg_wb_find(wb, "model.diffusion_model.input_blocks.%d.0.nothing", 1));
    g_assert_cmpint(sdg_wb_status(wb, &err), ==, SDG_OK);

    // Wrong shape: sticky error with the exact message; later gets all return NULL.
    g_assert_null(SDG_WB4(wb, 4, 64, 3, 3, "model.diffusion_model.out.2.weight"));
    g_assert_null(SDG_WB1(wb, 1000, "betas"));
    g_assert_null(SDG_WB1(wb, 1, "missing"));
    g_assert_cmpint(sdg_wb_status(wb, &err), ==, SDG_ERR_SHAPE);
    char *want = g_strdup_printf("%s: tensor 'model.diffusion_model.out.2.weight' has shape "
                                 "[4,32,3,3], expected [4,64,3,3]", path);
    g_assert_cmpstr(err.message, ==, want);
    g_free(want);
    sdg_wb_free(wb);

    // Missing tensor, and a wrong rank.
    wb = sdg_wb_new(f, &err);
    g_assert_null(SDG_WB2(wb, 3, 3, "model.diffusion_model.out.%d.weight", 7));
    g_assert_cmpint(sdg_wb_status(wb, &err), ==, SDG_ERR_SHAPE);
    want = g_strdup_printf("%s: tensor 'model.diffusion_model.out.7.weight' is missing", path);
    g_assert_cmpstr(err.message, ==, want);
    g_free(want);
    sdg_wb_free(wb);
    wb = sdg_wb_new(f, &err);
    g_assert_null(SDG_WB2(wb, 4, 32, "model.diffusion_model.out.2.weight"));
    sdg_wb_status(wb, &err);
    g_assert_nonnull(strstr(err.message, "has shape [4,32,3,3], expected [4,32]"));
    sdg_wb_free(wb);
    // A model's own check, and a name too long to format.
    wb = sdg_wb_new(f, &err);
    sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "%s: odd architecture", st_path(f));
    sdg_wb_set_error(wb, SDG_ERR_FORMAT, "second error is ignored");
    g_assert_cmpint(sdg_wb_status(wb, &err), ==, SDG_ERR_UNSUPPORTED);
    g_assert_nonnull(strstr(err.message, "odd architecture"));
    sdg_wb_free(wb);
    wb = sdg_wb_new(f, &err);
    char longname[400];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    g_assert_null(SDG_WB1(wb, 1, "%s", longname));
    g_assert_cmpint(sdg_wb_status(wb, &err), ==, SDG_ERR_INVALID_ARG);
    g_assert_null(sdg_wb_find(wb, "%s", longname));
    sdg_wb_free(wb);

    st_close(f);
    g_free(path);
}

// ---------------------------------------------------------------------------------------------

// The exact nearest-even f16 of x, found by search over the ordered positive half values.
static uint16_t ref_f32_to_f16(float x)
{
    if (isnan(x))
        return 0x7e00;
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs((double)x);
    if (a >= 65520.0)
        return sign | 0x7c00;
    int lo = 0, hi = 0x7bff; // largest h with value(h) <= a
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if ((double)sdg__f16_to_f32((uint16_t)mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    double below = sdg__f16_to_f32((uint16_t)lo);
    double above = lo == 0x7bff ? 65536.0 : sdg__f16_to_f32((uint16_t)(lo + 1));
    int h = lo;
    if (a - below > above - a || (a - below == above - a && (lo & 1)))
        h = lo + 1;
    return sign | (uint16_t)h;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_half(void)
{
    // Decoding: specials, subnormals, normals.
    g_assert_cmpfloat(sdg__f16_to_f32(0x0000), ==, 0.0f);
    g_assert_true(signbit(sdg__f16_to_f32(0x8000)));
    g_assert_cmpfloat(sdg__f16_to_f32(0x3c00), ==, 1.0f);
    g_assert_cmpfloat(sdg__f16_to_f32(0xc000), ==, -2.0f);
    g_assert_cmpfloat(sdg__f16_to_f32(0x7bff), ==, 65504.0f);
    g_assert_cmpfloat(sdg__f16_to_f32(0x0001), ==, 0x1p-24f);
    g_assert_cmpfloat(sdg__f16_to_f32(0x03ff), ==, 1023 * 0x1p-24f);
    g_assert_cmpfloat(sdg__f16_to_f32(0x0400), ==, 0x1p-14f);
    g_assert_true(isinf(sdg__f16_to_f32(0x7c00)) && sdg__f16_to_f32(0x7c00) > 0);
    g_assert_true(isinf(sdg__f16_to_f32(0xfc00)) && sdg__f16_to_f32(0xfc00) < 0);
    g_assert_true(isnan(sdg__f16_to_f32(0x7e00)));
    g_assert_true(isnan(sdg__f16_to_f32(0x7c01)));

    // Encoding: rounding to nearest even at every boundary.
    g_assert_cmphex(sdg__f32_to_f16(1.0f), ==, 0x3c00);
    g_assert_cmphex(sdg__f32_to_f16(-0.0f), ==, 0x8000);
    g_assert_cmphex(sdg__f32_to_f16(65504.0f), ==, 0x7bff);
    g_assert_cmphex(sdg__f32_to_f16(65519.996f), ==, 0x7bff);
    g_assert_cmphex(sdg__f32_to_f16(65520.0f), ==, 0x7c00);
    g_assert_cmphex(sdg__f32_to_f16(1e10f), ==, 0x7c00);
    g_assert_cmphex(sdg__f32_to_f16(-INFINITY), ==, 0xfc00);
    g_assert_cmphex(sdg__f32_to_f16(NAN) & 0x7c00, ==, 0x7c00);
    g_assert_cmphex(sdg__f32_to_f16(NAN) & 0x03ff, !=, 0);
    g_assert_cmphex(sdg__f32_to_f16(0x1p-24f), ==, 0x0001);
    g_assert_cmphex(sdg__f32_to_f16(0x1p-25f), ==, 0x0000);             // tie -> even (0)
    g_assert_cmphex(sdg__f32_to_f16(bits_f32(0x33000001)), ==, 0x0001); // just above the tie
    g_assert_cmphex(sdg__f32_to_f16(3 * 0x1p-25f), ==, 0x0002);         // tie -> even (2)
    g_assert_cmphex(sdg__f32_to_f16(5 * 0x1p-25f), ==, 0x0002);         // tie -> even (2)
    g_assert_cmphex(sdg__f32_to_f16(1e-10f), ==, 0x0000);
    g_assert_cmphex(sdg__f32_to_f16(-1e-10f), ==, 0x8000);
    g_assert_cmphex(sdg__f32_to_f16(0x1p-14f - 0x1p-26f), ==, 0x0400);  // rounds up to normal
    g_assert_cmphex(sdg__f32_to_f16(1.0f + 0x1p-11f), ==, 0x3c00);      // tie -> even
    g_assert_cmphex(sdg__f32_to_f16(1.0f + 3 * 0x1p-11f), ==, 0x3c02);  // tie -> even
    g_assert_cmphex(sdg__f32_to_f16(2047.5f), ==, sdg__f32_to_f16(2048.0f));

    // Every half survives a round trip.
    for (uint32_t h = 0; h < 0x10000; h++) {
        float x = sdg__f16_to_f32((uint16_t)h);
        if (isnan(x))
            g_assert_true(isnan(sdg__f16_to_f32(sdg__f32_to_f16(x))));
        else if (sdg__f32_to_f16(x) != h)
            g_error("half 0x%04x -> %g -> 0x%04x", h, x, sdg__f32_to_f16(x));
    }
    // Random floats and all midpoints match the exact reference.
    GRand *rng = g_rand_new_with_seed(1234);
    for (int i = 0; i < 200000; i++) {
        uint32_t u = g_rand_int(rng);
        // Bias towards the half range: exponents 100..143.
        if (i % 2)
            u = (u & 0x807fffffu) | ((uint32_t)g_rand_int_range(rng, 100, 144) << 23);
        float x = bits_f32(u);
        if (sdg__f32_to_f16(x) != ref_f32_to_f16(x) && !isnan(x))
            g_error("f32 %a (0x%08x): got 0x%04x, want 0x%04x", x, u, sdg__f32_to_f16(x),
                    ref_f32_to_f16(x));
    }
    g_rand_free(rng);
    for (uint32_t h = 0; h < 0x7bff; h++) {
        float mid = (float)(((double)sdg__f16_to_f32((uint16_t)h)
                             + (double)sdg__f16_to_f32((uint16_t)(h + 1))) / 2);
        g_assert_cmphex(sdg__f32_to_f16(mid), ==, ref_f32_to_f16(mid));
        g_assert_cmphex(sdg__f32_to_f16(-mid), ==, ref_f32_to_f16(-mid));
    }

    g_assert_cmpfloat(sdg__bf16_to_f32(0x3f80), ==, 1.0f);
    g_assert_cmpfloat(sdg__bf16_to_f32(0xc040), ==, -3.0f);
    g_assert_true(isinf(sdg__bf16_to_f32(0x7f80)));
    g_assert_true(isnan(sdg__bf16_to_f32(0x7fc0)));
    g_assert_cmpfloat(sdg__bf16_to_f32(0x0001), ==, 0x1p-133f);
}

// Bulk conversion (F16C or portable) over every bit pattern agrees with the scalar one.
static void test_bulk_f16(void)
{
    const int n = 65536 + 3; // odd tail for the vector loop
    uint16_t *h = g_new(uint16_t, n);
    for (int i = 0; i < n; i++)
        h[i] = (uint16_t)i;
    char header[128];
    snprintf(header, sizeof header,
             "{\"h\":{\"dtype\":\"F16\",\"shape\":[%d],\"data_offsets\":[0,%d]}}", n, 2 * n);
    char *path = write_raw("bulk.safetensors", header, -1, h, 2 * (size_t)n);
    sdg_error err;
    st_file *f = st_open(path, &err);
    g_assert_nonnull(f);
    float *x = g_new(float, n);
    // Twice: the default (F16C where the CPU has it) and the portable path.
    for (int pass = 0; pass < 2; pass++) {
        if (pass)
            g_setenv("SDG_NO_F16C", "1", TRUE);
        g_assert_cmpint(st_read_f32(f, st_find(f, "h"), x, &err), ==, SDG_OK);
        for (int i = 0; i < n; i++) {
            float r = sdg__f16_to_f32(h[i]);
            if (isnan(r))
                g_assert_true(isnan(x[i]));
            else if (memcmp(&r, &x[i], 4) != 0)
                g_error("bulk f16 (pass %d) 0x%04x: got %a, want %a", pass, h[i], x[i], r);
        }
    }
    g_unsetenv("SDG_NO_F16C");
    // The binder refuses it: 2 x 1024 of the 65536 patterns are infinities and NaNs.
    sdg_weights *wb = sdg_wb_new(f, &err);
    g_assert_null(SDG_WB1(wb, n, "h"));
    g_assert_cmpint(sdg_wb_status(wb, &err), ==, SDG_ERR_FORMAT);
    g_assert_nonnull(strstr(err.message, "tensor 'h' has 2048 NaN or infinite values (of 65539)"));
    sdg_wb_free(wb);
    st_close(f);
    g_unlink(path);
    g_free(path);

    // The finite ones through the binder: a 64-byte-aligned copy, counted as owned.
    for (int i = 0; i < n; i++)
        if ((h[i] & 0x7c00) == 0x7c00)
            h[i] = 0x3c00;
    path = write_raw("bulk.safetensors", header, -1, h, 2 * (size_t)n);
    f = st_open(path, &err);
    g_assert_nonnull(f);
    wb = sdg_wb_new(f, &err);
    const float *w = SDG_WB1(wb, n, "h");
    g_assert_nonnull(w);
    g_assert_cmpuint((uintptr_t)w % 64, ==, 0);
    g_assert_cmpuint(sdg_wb_owned_bytes(wb), ==, 4 * (size_t)n);
    g_assert_true(SDG_WB1(wb, n, "h") == w); // converted once
    g_assert_cmpuint(sdg_wb_owned_bytes(wb), ==, 4 * (size_t)n);
    g_assert_cmpfloat(w[0x3c00], ==, 1.0f);
    g_assert_cmpfloat(w[0x7c00], ==, 1.0f);
    sdg_wb_free(wb);
    st_close(f);
    g_unlink(path);
    g_free(path);
    g_free(h);
    g_free(x);
}

// ---------------------------------------------------------------------------------------------

enum { RT_N = 37 }; // odd, so the F16 tensor leaves the following ones 2-byte aligned

static float rt_value(int index, int64_t i)
{
    return (float)(sin(0.37 * (double)i + index) * pow(10.0, (double)(i % 7) - 3));
}

static void rt_fill(void *user, int index, float *dst, int64_t n)
{
    int *calls = user;
    (*calls)++;
    for (int64_t i = 0; i < n; i++)
        dst[i] = index == 3 || index == 4 ? (float)(i * 1000 - 7) : rt_value(index, i);
}

static void check_roundtrip(const char *path, bool streamed)
{
    sdg_error err;
    st_file *f = st_open(path, &err);
    if (!f)
        g_error("%s", err.message);
    g_assert_cmpint(st_count(f), ==, 7);
    g_assert_cmpstr(st_metadata(f, "note"), ==, "round \"trip\"\n\xc3\xa9");
    g_assert_cmpstr(st_metadata(f, "k2"), ==, "v2");
    float got[RT_N];
    int32_t ig[RT_N];

    const st_tensor *t = st_find(f, "f32");
    g_assert_cmpint(t->dtype, ==, ST_F32);
    g_assert_cmpint(t->n_dims, ==, 2);
    g_assert_cmpint(t->n_elements, ==, RT_N);
    g_assert_cmpint(st_read_f32(f, t, got, &err), ==, SDG_OK);
    for (int i = 0; i < RT_N; i++)
        g_assert_cmpfloat(got[i], ==, rt_value(0, i));

    t = st_find(f, "f16");
    g_assert_cmpint(t->dtype, ==, ST_F16);
    g_assert_cmpuint(t->size, ==, 2 * RT_N);
    g_assert_cmpint(st_read_f32(f, t, got, &err), ==, SDG_OK);
    for (int i = 0; i < RT_N; i++)
        g_assert_cmpfloat(got[i], ==, sdg__f16_to_f32(sdg__f32_to_f16(rt_value(1, i))));

    t = st_find(f, "bf16");
    g_assert_cmpint(t->dtype, ==, ST_BF16);
    g_assert_cmpint(st_read_f32(f, t, got, &err), ==, SDG_OK);
    for (int i = 0; i < RT_N; i++) {
        float x = rt_value(2, i);
        g_assert_cmpfloat(fabsf(got[i] - x), <=, fabsf(x) * 0x1p-8f);
        uint32_t u;
        memcpy(&u, &got[i], 4);
        g_assert_cmphex(u & 0xffff, ==, 0);
    }

    t = st_find(f, "i32");
    g_assert_cmpint(t->dtype, ==, ST_I32);
    g_assert_cmpint(st_read_i32(f, t, ig, &err), ==, SDG_OK);
    for (int i = 0; i < RT_N; i++)
        g_assert_cmpint(ig[i], ==, i * 1000 - 7);
    g_assert_cmpint(st_read_f32(f, t, got, &err), ==, SDG_OK);
    g_assert_cmpfloat(got[5], ==, 4993.0f);

    t = st_find(f, "i64");
    g_assert_cmpint(t->dtype, ==, ST_I64);
    g_assert_cmpuint(t->size, ==, 8 * RT_N);
    g_assert_cmpint(st_read_i32(f, t, ig, &err), ==, SDG_OK);
    for (int i = 0; i < RT_N; i++)
        g_assert_cmpint(ig[i], ==, i * 1000 - 7);

    t = st_find(f, "scalar");
    g_assert_cmpint(t->n_dims, ==, 0);
    g_assert_cmpint(t->n_elements, ==, 1);
    g_assert_cmpint(st_read_f32(f, t, got, &err), ==, SDG_OK);
    g_assert_cmpfloat(got[0], ==, streamed ? rt_value(5, 0) : 2.5f);

    t = st_find(f, "empty");
    g_assert_cmpint(t->n_dims, ==, 2);
    g_assert_cmpint(t->n_elements, ==, 0);
    g_assert_cmpuint(t->size, ==, 0);

    // Data starts 8-byte aligned; the F16 tensor is a copy, the F32 one is not.
    sdg_weights *wb = sdg_wb_new(f, &err);
    const float *w32 = SDG_WB2(wb, 1, RT_N, "f32");
    g_assert_true(w32 == st_data(f, st_find(f, "f32")));
    g_assert_cmpuint(sdg_wb_owned_bytes(wb), ==, 0);
    const float *w16 = SDG_WB1(wb, RT_N, "f%d", 16);
    g_assert_nonnull(w16);
    g_assert_true((const void *)w16 != st_data(f, st_find(f, "f16")));
    g_assert_cmpuint(sdg_wb_owned_bytes(wb), ==, RT_N * sizeof(float));
    g_assert_nonnull(sdg_wb_get(wb, 0, NULL, "scalar"));
    g_assert_cmpint(sdg_wb_status(wb, &err), ==, SDG_OK);
    sdg_wb_free(wb);
    st_close(f);
}

static void test_roundtrip(void)
{
    float f32[RT_N], f16[RT_N], bf16[RT_N];
    int32_t i32[RT_N];
    int64_t i64[RT_N];
    for (int i = 0; i < RT_N; i++) {
        f32[i] = rt_value(0, i);
        f16[i] = rt_value(1, i);
        bf16[i] = rt_value(2, i);
        i32[i] = i * 1000 - 7;
        i64[i] = i * 1000 - 7;
    }
    float scalar = 2.5f;
    st_write_tensor ts[7] = {
        { "f32", ST_F32, 2, { 1, RT_N }, f32 },
        { "f16", ST_F16, 1, { RT_N }, f16 },
        { "bf16", ST_BF16, 3, { 1, RT_N, 1 }, bf16 },
        { "i32", ST_I32, 1, { RT_N }, i32 },
        { "i64", ST_I64, 1, { RT_N }, i64 },
        { "scalar", ST_F32, 0, { 0 }, &scalar },
        { "empty", ST_F32, 2, { 0, 5 }, f32 },
    };
    const char *meta = "{\"note\": \"round \\\"trip\\\"\\n\\u00e9\", \"k2\": \"v2\"}";
    sdg_error err;
    char *path = tmp_path("rt.safetensors");
    if (st_write(path, ts, 7, meta, &err) != SDG_OK)
        g_error("%s", err.message);
    check_roundtrip(path, false);

    // Streamed: every tensor produced by the fill function, one at a time.
    for (int i = 0; i < 7; i++)
        ts[i].data = NULL;
    int calls = 0;
    char *path2 = tmp_path("rt-streamed.safetensors");
    if (st_write_streamed(path2, ts, 7, meta, rt_fill, &calls, &err) != SDG_OK)
        g_error("%s", err.message);
    g_assert_cmpint(calls, ==, 7);
    check_roundtrip(path2, true);

    // Truncated copies of a valid file fail cleanly (in the header, then in the data).
    char *bytes;
    gsize len;
    g_assert_true(g_file_get_contents(path, &bytes, &len, NULL));
    char *cut = tmp_path("cut.safetensors");
    g_assert_true(g_file_set_contents(cut, bytes, (gssize)(len / 2), NULL));
    expect_open_fail(cut, SDG_ERR_FORMAT, NULL);
    g_assert_true(g_file_set_contents(cut, bytes, (gssize)(len - 1), NULL));
    expect_open_fail(cut, SDG_ERR_FORMAT, "'scalar'"); // the first tensor reaching the end
    g_assert_true(g_file_set_contents(cut, bytes, 100, NULL));
    expect_open_fail(cut, SDG_ERR_FORMAT, "past the end");
    g_unlink(cut);
    g_free(cut);
    g_free(bytes);

    // Bad writer arguments.
    st_write_tensor bad = { "x", ST_F64, 1, { 1 }, f32 };
    g_assert_cmpint(st_write(path, &bad, 1, NULL, &err), ==, SDG_ERR_INVALID_ARG);
    g_assert_nonnull(strstr(err.message, "'x'"));
    bad.dtype = ST_F32;
    g_assert_cmpint(st_write(path, &bad, 1, "{\"a\": 1}", &err), ==, SDG_ERR_INVALID_ARG);
    g_assert_cmpint(st_write(path, &bad, 1, "{} x", &err), ==, SDG_ERR_INVALID_ARG);
    bad.shape[0] = -1;
    g_assert_cmpint(st_write(path, &bad, 1, NULL, &err), ==, SDG_ERR_INVALID_ARG);
    bad.shape[0] = 1;
    bad.data = NULL;
    g_assert_cmpint(st_write(path, &bad, 1, NULL, &err), ==, SDG_ERR_INVALID_ARG);
    st_write_tensor twice[2] = { { "x", ST_F32, 1, { 1 }, f32 }, { "x", ST_F32, 1, { 1 }, f32 } };
    g_assert_cmpint(st_write(path, twice, 2, NULL, &err), ==, SDG_ERR_INVALID_ARG);
    char *nodir = g_build_filename(tmpdir, "no", "such", "dir.safetensors", NULL);
    g_assert_cmpint(st_write(nodir, twice, 1, NULL, &err), ==, SDG_ERR_IO);
    g_assert_nonnull(strstr(err.message, nodir));
    g_free(nodir);
    // An empty file with only metadata.
    g_assert_cmpint(st_write(path, NULL, 0, "{}", &err), ==, SDG_OK);
    st_file *f = st_open(path, &err);
    g_assert_nonnull(f);
    g_assert_cmpint(st_count(f), ==, 0);
    g_assert_null(st_find(f, "x"));
    st_close(f);

    g_unlink(path);
    g_unlink(path2);
    g_free(path);
    g_free(path2);
}

// ---------------------------------------------------------------------------------------------

static void test_unaligned_and_escapes(void)
{
    // u8 [2] at 0..2, then F32 [2] at 2..10: the F32 data is misaligned in the mapping.
    uint8_t data[10] = { 7, 9 };
    float v[2] = { 1.5f, -3.25f };
    memcpy(data + 2, v, 8);
    const char *h = "{\"a\\u00e9\\ud83d\\ude00\\n\\/\":{\"dtype\":\"U8\",\"shape\":[2],"
                    "\"data_offsets\":[0,2]}, \"b\" : {\"data_offsets\": [2, 10], \"shape\": [2], "
                    "\"dtype\": \"F32\"}, \"__metadata__\": {}}    ";
    // Pad to a multiple of 8 so the data section starts aligned and only 'b' is misaligned.
    GString *hs = g_string_new(h);
    while (hs->len % 8)
        g_string_append_c(hs, ' ');
    char *path = write_raw("unaligned.safetensors", hs->str, -1, data, sizeof data);
    g_string_free(hs, TRUE);
    sdg_error err;
    st_file *f = st_open(path, &err);
    if (!f)
        g_error("%s", err.message);
    g_assert_cmpint(st_count(f), ==, 2);
    const st_tensor *a = st_find(f, "a\xc3\xa9\xf0\x9f\x98\x80\n/");
    g_assert_nonnull(a);
    g_assert_cmpint(a->dtype, ==, ST_U8);
    float fa[2];
    int32_t ia[2];
    g_assert_cmpint(st_read_f32(f, a, fa, &err), ==, SDG_OK);
    g_assert_cmpfloat(fa[1], ==, 9.0f);
    g_assert_cmpint(st_read_i32(f, a, ia, &err), ==, SDG_OK);
    g_assert_cmpint(ia[0], ==, 7);
    const st_tensor *b = st_find(f, "b");
    g_assert_cmpuint((uintptr_t)st_data(f, b) % 4, !=, 0);
    sdg_weights *wb = sdg_wb_new(f, &err);
    const float *w = SDG_WB1(wb, 2, "b");
    g_assert_nonnull(w);
    g_assert_true((const void *)w != st_data(f, b));
    g_assert_cmpfloat(w[0], ==, 1.5f);
    g_assert_cmpfloat(w[1], ==, -3.25f);
    g_assert_cmpuint(sdg_wb_owned_bytes(wb), ==, 8);
    sdg_wb_free(wb);
    st_close(f);
    g_unlink(path);
    g_free(path);

    // Every dtype converts; BOOL does not convert to float; I64 out of int32 range fails.
    double d = -0.125;
    int64_t big = (int64_t)1 << 40;
    int16_t s16 = -300;
    int8_t s8 = -5;
    uint8_t raw[32];
    memcpy(raw, &d, 8);
    memcpy(raw + 8, &big, 8);
    memcpy(raw + 16, &s16, 2);
    memcpy(raw + 18, &s8, 1);
    raw[19] = 1;
    h = "{\"d\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]},"
        "\"big\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[8,16]},"
        "\"s16\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[16,18]},"
        "\"s8\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[18,19]},"
        "\"flag\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[19,20]}}";
    path = write_raw("dtypes.safetensors", h, -1, raw, 20);
    f = st_open(path, &err);
    if (!f)
        g_error("%s", err.message);
    float x;
    int32_t i;
    g_assert_cmpint(st_read_f32(f, st_find(f, "d"), &x, &err), ==, SDG_OK);
    g_assert_cmpfloat(x, ==, -0.125f);
    g_assert_cmpint(st_read_f32(f, st_find(f, "big"), &x, &err), ==, SDG_OK);
    g_assert_cmpfloat(x, ==, 0x1p40f);
    g_assert_cmpint(st_read_i32(f, st_find(f, "big"), &i, &err), ==, SDG_ERR_UNSUPPORTED);
    g_assert_nonnull(strstr(err.message, "'big'"));
    g_assert_nonnull(strstr(err.message, path));
    g_assert_cmpint(st_read_i32(f, st_find(f, "s16"), &i, &err), ==, SDG_OK);
    g_assert_cmpint(i, ==, -300);
    g_assert_cmpint(st_read_f32(f, st_find(f, "s8"), &x, &err), ==, SDG_OK);
    g_assert_cmpfloat(x, ==, -5.0f);
    g_assert_cmpint(st_read_f32(f, st_find(f, "flag"), &x, &err), ==, SDG_ERR_UNSUPPORTED);
    g_assert_nonnull(strstr(err.message, "'flag'"));
    g_assert_cmpint(st_read_i32(f, st_find(f, "flag"), &i, &err), ==, SDG_OK);
    g_assert_cmpint(i, ==, 1);
    g_assert_cmpint(st_read_i32(f, st_find(f, "d"), &i, &err), ==, SDG_ERR_UNSUPPORTED);
    g_assert_cmpstr(st_dtype_name(ST_BF16), ==, "BF16");
    g_assert_cmpuint(st_dtype_size(ST_F64), ==, 8);
    st_close(f);
    g_unlink(path);
    g_free(path);
}

// ---------------------------------------------------------------------------------------------

#define T1(name, dtype, shape, b, e) \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]}"

static void test_bad_files(void)
{
    // Too short to hold the length.
    char *path = tmp_path("empty.safetensors");
    g_assert_true(g_file_set_contents(path, "", 0, NULL));
    expect_open_fail(path, SDG_ERR_FORMAT, "the file is empty (0 bytes)");
    g_assert_true(g_file_set_contents(path, "\x02\0\0\0\0", 5, NULL));
    expect_open_fail(path, SDG_ERR_FORMAT, "too short");
    g_unlink(path);
    g_free(path);
    path = tmp_path("does-not-exist.safetensors");
    expect_open_fail(path, SDG_ERR_IO, "cannot open");
    g_free(path);
    expect_open_fail(tmpdir, SDG_ERR_IO, "is a folder, not a safetensors file");

    // Header length past the end, and absurd.
    path = write_raw("len.safetensors", "{}", 1000, NULL, 0);
    expect_open_fail(path, SDG_ERR_FORMAT, "past the end");
    g_unlink(path);
    g_free(path);
    path = write_raw("len.safetensors", "{}", INT64_MAX, NULL, 0);
    expect_open_fail(path, SDG_ERR_FORMAT, "past the end");
    g_unlink(path);
    g_free(path);

    // Invalid JSON, in many ways.
    static const char *const bad_json[][2] = {
        { "", "end of header" },
        { "   ", "end of header" },
        { "{", "end of header" },
        { "[]", "expected '{'" },
        { "{}x", "trailing characters" },
        { "{} {}", "trailing characters" },
        { "{" T1("a", "F32", "[1]", "0", "4") "} x", "trailing characters" },
        { "{" T1("a", "F32", "[1]", "0", "4") ",}", "expected a string" },
        { "{" T1("a", "F32", "[1]", "0", "4") " " T1("b", "F32", "[1]", "4", "8") "}",
          "expected '}'" },
        { "{\"a\" {}}", "expected ':'" },
        { "{\"a:{}}", "unterminated string" },
        { "{\"a\\", "unterminated string" },
        { "{\"a\\q\":{}}", "bad escape" },
        { "{\"a\\u12G4\":{}}", "bad \\u escape" },
        { "{\"a\\u12\":{}}", "bad \\u escape" },
        { "{\"a\\ud800\":{}}", "high surrogate" },
        { "{\"a\\ud800\\u0041\":{}}", "high surrogate" },
        { "{\"a\\udc00\":{}}", "low surrogate" },
        { "{\"a\\u0000\":{}}", "\\u0000" },
        { "{\"a\tb\":{}}", "control character" },
        { "{\"a\xff\":{}}", "UTF-8" },
        { "{\"a\xc3\":{}}", "UTF-8" },
        { "{\"a\xed\xa0\x80\":{}}", "UTF-8" }, // an encoded surrogate
        { "{\"a\":[]}", "expected '{'" },
        { "{\"a\":{}}", "lacks \"dtype\"" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", "lacks \"data_offsets\"" },
        { "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", "lacks \"shape\"" },
        { "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
          "duplicate field 'dtype'" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}",
          "unknown field 'x'" },
        { "{\"a\":{\"dtype\":F32,\"shape\":[1],\"data_offsets\":[0,4]}}", "expected a string" },
        { "{" T1("a", "F32", "1", "0", "4") "}", "expected '['" },
        { "{" T1("a", "F32", "[1.0]", "0", "4") "}", "fraction" },
        { "{" T1("a", "F32", "[1e0]", "0", "4") "}", "fraction" },
        { "{" T1("a", "F32", "[01]", "0", "4") "}", "leading zero" },
        { "{" T1("a", "F32", "[1,]", "0", "4") "}", "expected an integer" },
        { "{" T1("a", "F32", "[1]", "0", "4.0") "}", "fraction" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", "expected ']'" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", "expected ','" },
        { "{" T1("a", "F32", "[99999999999999999999]", "0", "4") "}", "too large" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad_json); i++)
        expect_header_fail(bad_json[i][0], bad_json[i][1]);

    // A NUL byte inside the header.
    static const char nul_hdr[] = "{\"a\0\":{}}";
    path = tmp_path("nul.safetensors");
    uint8_t nul_file[8 + sizeof nul_hdr - 1] = { sizeof nul_hdr - 1 };
    memcpy(nul_file + 8, nul_hdr, sizeof nul_hdr - 1);
    g_assert_true(g_file_set_contents(path, (const char *)nul_file, sizeof nul_file, NULL));
    expect_open_fail(path, SDG_ERR_FORMAT, "UTF-8");
    g_unlink(path);
    g_free(path);

    // Semantic errors, each naming the tensor.
    static const char *const bad_tensor[][2] = {
        { "{" T1("w.bad", "F8", "[1]", "0", "1") "}", "tensor 'w.bad' has unknown dtype 'F8'" },
        { "{" T1("w.bad", "f32", "[1]", "0", "4") "}", "unknown dtype 'f32'" },
        { "{" T1("w.bad", "F32", "[3]", "0", "8") "}", "tensor 'w.bad' is F32 [3]" },
        { "{" T1("w.bad", "F16", "[2,2]", "0", "4") "}", "span 4 bytes" },
        { "{" T1("w.bad", "F32", "[]", "0", "8") "}", "(1 elements)" },
        { "{" T1("w.bad", "F32", "[0]", "0", "4") "}", "tensor 'w.bad'" },
        { "{" T1("w.bad", "F32", "[4]", "0", "16") "}",
          "the file is truncated: it is 75 bytes but its header describes 83 (tensor 'w.bad' "
          "needs data bytes 0..16, and only 8 are there)" },
        { "{" T1("w.a", "F32", "[1]", "0", "4") "," T1("w.bad", "U8", "[2]", "6", "8") "}",
          "tensor 'w.bad' starts at data byte 6 but the data before it ends at byte 4: the file "
          "has a gap" },
        { "{" T1("w.a", "F32", "[1]", "0", "4") "}",
          "the last 4 bytes belong to no tensor" },
        { "{" T1("w.a", "F32", "[1]", "4", "8") "}", "tensor 'w.a' starts at data byte 4" },
        { "{}", "the last 8 bytes belong to no tensor" },
        { "{" T1("w.bad", "F32", "[1]", "8", "4") "}", "tensor 'w.bad' has data_offsets [8, 4] that end before" },
        { "{" T1("w.bad", "F32", "[1]", "18446744073709551615", "18446744073709551619") "}",
          "too large" },
        { "{" T1("w.bad", "F32", "[1]", "-4", "0") "}", "negative data_offsets" },
        { "{" T1("w.a", "F32", "[1]", "0", "4") "," T1("w.bad", "F32", "[1]", "2", "6") "}",
          "tensor 'w.bad' (bytes 2..6) overlaps tensor 'w.a'" },
        { "{" T1("w.a", "F32", "[2]", "0", "8") "," T1("w.bad", "F32", "[1]", "4", "8") "}",
          "overlaps" },
        { "{" T1("w.a", "F32", "[1]", "4", "8") "," T1("w.bad", "F32", "[1]", "4", "8") "}",
          "overlaps" },
        { "{" T1("w.bad", "F32", "[-1]", "0", "4") "}", "tensor 'w.bad' has a negative dimension" },
        { "{" T1("w.bad", "F32", "[2,-3]", "0", "4") "}", "negative dimension" },
        { "{" T1("w.bad", "F32", "[4294967296,4294967296,4]", "0", "4") "}",
          "tensor 'w.bad' has a shape whose element count overflows" },
        { "{" T1("w.bad", "F32", "[9223372036854775807,2]", "0", "4") "}", "overflows" },
        { "{" T1("w.bad", "F32", "[18446744073709551615]", "0", "4") "}", "overflows" },
        { "{" T1("w.bad", "F32", "[4611686018427387904]", "0", "4") "}", "w.bad" },
        { "{" T1("w.bad", "F32", "[1,1,1,1,1,1,1,1,1]", "0", "4") "}",
          "tensor 'w.bad' has more than 8 dimensions" },
        { "{" T1("w.bad", "F32", "[1]", "0", "4") "," T1("w.bad", "F32", "[1]", "4", "8") "}",
          "duplicate tensor name 'w.bad'" },
        { "{" T1("w\\u002ebad", "F32", "[1]", "0", "4") "," T1("w.bad", "F32", "[1]", "4", "8")
          "}", "duplicate tensor name 'w.bad'" },
        { "{\"__metadata__\":{\"w.bad\":1}}", "__metadata__ value of 'w.bad' is not a string" },
        { "{\"__metadata__\":{\"w.bad\":{}}}", "not a string" },
        { "{\"__metadata__\":{\"w.bad\":null}}", "not a string" },
        { "{\"__metadata__\":\"w.bad\"}", "__metadata__ is not an object" },
        { "{\"__metadata__\":[\"w.bad\"]}", "not an object" },
        { "{\"__metadata__\":{\"w.bad\":\"1\",\"w.bad\":\"2\"}}", "duplicate __metadata__ key" },
        { "{\"__metadata__\":{},\"__metadata__\":{}}", "duplicate __metadata__" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad_tensor); i++)
        expect_header_fail(bad_tensor[i][0], bad_tensor[i][1]);

    // Valid corner cases: touching, empty and out-of-order tensors, blanks everywhere.
    static uint8_t zeros[8];
    const char *good = " {\n\t" T1("b", "F32", "[1]", "4", "8") " , "
                       T1("a", "F32", "[ 1 ]", "0", "4") "," T1("z", "F32", "[0,3]", "4", "4")
                       " ,\"__metadata__\" : { \"k\" : \"\" } }\r\n  ";
    path = write_raw("good.safetensors", good, -1, zeros, sizeof zeros);
    sdg_error err;
    st_file *f = st_open(path, &err);
    if (!f)
        g_error("%s", err.message);
    g_assert_cmpint(st_count(f), ==, 3);
    g_assert_cmpstr(st_at(f, 0)->name, ==, "b"); // header order is kept
    g_assert_cmpstr(st_metadata(f, "k"), ==, "");
    g_assert_cmpint(st_find(f, "z")->n_elements, ==, 0);
    st_close(f);
    g_unlink(path);
    g_free(path);
}

// ---------------------------------------------------------------------------------------------
// Bad files made from the golden tiny model, and paths that are not files.

#define TINY "golden/tiny-sd1.safetensors"
#define UNET_OUT "model.diffusion_model.out.2.weight"
#define VAE_OUT_B "first_stage_model.decoder.conv_out.bias"

static sdg_model *load_model(const char *path, sdg_error *err)
{
    char *vocab = golden_path("vocab/bpe_simple_vocab_16e6.txt.gz");
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab;
    sdg__error_clear(err);
    sdg_model *m = sdg_model_load(path, &mp, err);
    g_free(vocab);
    return m;
}

// sdg_model_load must fail with status and a message naming the file and containing needle.
static void expect_load_fail(const char *path, sdg_status status, const char *needle)
{
    sdg_error err;
    sdg_model *m = load_model(path, &err);
    if (m)
        g_error("%s: loaded, expected failure with '%s'", path, needle);
    g_test_message("load: %s", err.message);
    g_assert_cmpint(err.status, ==, status);
    g_assert_nonnull(strstr(err.message, path));
    if (!strstr(err.message, needle))
        g_error("message '%s' lacks '%s'", err.message, needle);
}

// The golden model's bytes (g_free them), or NULL when the reference data is absent.
static char *tiny_bytes(gsize *len)
{
    char *src = golden_path(TINY);
    char *bytes = NULL;
    if (!g_file_get_contents(src, &bytes, len, NULL))
        bytes = NULL;
    g_free(src);
    return bytes;
}

static uint64_t le64(const char *p)
{
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | (uint8_t)p[i];
    return n;
}

// File offset of element i of tensor name in the golden model's bytes.
static size_t tiny_offset(const char *bytes, const char *name, size_t i)
{
    st_file *f = golden_open(TINY);
    const st_tensor *t = st_find(f, name);
    g_assert_nonnull(t);
    g_assert_cmpint(t->dtype, ==, ST_F32);
    g_assert_cmpuint(i, <, (size_t)t->n_elements);
    size_t off = 8 + (size_t)le64(bytes) + (size_t)t->offset + 4 * i;
    st_close(f);
    return off;
}

static void test_special_paths(void)
{
    // A FIFO: opening it for reading would wait for a writer forever. The alarm turns a
    // regression into a failure (SIGALRM ends the test) instead of a hang until the timeout.
    char *fifo = tmp_path("fifo.safetensors");
    g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
    alarm(20);
    expect_open_fail(fifo, SDG_ERR_IO, "is a named pipe (FIFO), not a safetensors file");
    expect_load_fail(fifo, SDG_ERR_IO, "named pipe");
    alarm(0);
    g_unlink(fifo);
    g_free(fifo);

    // A symlink loop: the system's sentence (ELOOP), with the file named.
    char *a = tmp_path("loop-a.safetensors"), *b = tmp_path("loop-b.safetensors");
    g_assert_cmpint(symlink(b, a), ==, 0);
    g_assert_cmpint(symlink(a, b), ==, 0);
    expect_open_fail(a, SDG_ERR_IO, "cannot open: ");
    expect_load_fail(a, SDG_ERR_IO, "cannot open: ");
    g_unlink(a);
    g_unlink(b);
    g_free(a);
    g_free(b);

    // A device, a folder (sdg_model_load keeps its diffusers-folder sentence), an empty file.
    expect_open_fail("/dev/null", SDG_ERR_IO, "is a device, not a safetensors file");
    expect_load_fail("/dev/null", SDG_ERR_IO, "is a device");
    expect_load_fail(tmpdir, SDG_ERR_UNSUPPORTED, "is a folder but not a diffusers pipeline");
    char *empty = tmp_path("empty.safetensors");
    g_assert_true(g_file_set_contents(empty, "", 0, NULL));
    expect_load_fail(empty, SDG_ERR_FORMAT, "the file is empty (0 bytes)");
    g_unlink(empty);
    g_free(empty);
}

// A copy of the golden model cut at many points fails cleanly at each: in the length, in the
// header, just after it, in the data, one byte short.
static void test_truncated_golden(void)
{
    gsize len;
    char *bytes = tiny_bytes(&len);
    if (!bytes) {
        g_test_skip(TINY " not found");
        return;
    }
    size_t hl = (size_t)le64(bytes);
    char *path = tmp_path("cut.safetensors");
    struct { size_t at; const char *needle; } cuts[] = {
        { 4, "too short" },
        { 8, "header length" },
        { 8 + hl / 2, "header length" },
        { 8 + hl - 1, "header length" },
        { 8 + hl, "the file is truncated" },
        { 8 + hl + 1, "the file is truncated" },
        { 8 + hl + 4096, "the file is truncated" },
        { len / 2, "the file is truncated" },
        { len - 4, "the file is truncated" },
        { len - 1, "the file is truncated" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cuts); i++) {
        g_assert_true(g_file_set_contents(path, bytes, (gssize)cuts[i].at, NULL));
        expect_open_fail(path, SDG_ERR_FORMAT, cuts[i].needle);
        if (cuts[i].at > 8 + hl) {
            char *want = g_strdup_printf("it is %zu bytes but its header describes %zu",
                                         cuts[i].at, (size_t)len);
            expect_open_fail(path, SDG_ERR_FORMAT, want);
            g_free(want);
        }
    }
    expect_load_fail(path, SDG_ERR_FORMAT, "the file is truncated");
    // One byte too many is refused as well (the reference reader's rule).
    GString *more = g_string_new_len(bytes, (gssize)len);
    g_string_append_c(more, 0);
    g_assert_true(g_file_set_contents(path, more->str, (gssize)more->len, NULL));
    expect_open_fail(path, SDG_ERR_FORMAT, "the last 1 byte belongs to no tensor");
    g_string_free(more, TRUE);
    g_unlink(path);
    g_free(path);
    g_free(bytes);
}

// A file that shrinks after st_open: conversions read with pread, so a short read is an error,
// not SIGBUS; F32 data used in place is checked against the file size before it is scanned.
static void test_shrinking(void)
{
    enum { N = 300000 }; // 1.2 MB of F32, 0.6 MB of F16: many pages each
    float *v = g_new(float, N);
    for (int i = 0; i < N; i++)
        v[i] = (float)sin(i * 0.01);
    st_write_tensor ts[2] = { { "a", ST_F32, 1, { N }, v }, { "b", ST_F16, 1, { N }, v } };
    char *path = tmp_path("shrink.safetensors");
    sdg_error err;
    g_assert_cmpint(st_write(path, ts, 2, NULL, &err), ==, SDG_OK);
    GStatBuf sb;
    g_assert_cmpint(g_stat(path, &sb), ==, 0);

    for (int deferred = 0; deferred < 2; deferred++) {
        st_file *f = st_open(path, &err);
        g_assert_nonnull(f);
        g_assert_cmpint(st_check_mapped(f, &err), ==, SDG_OK);
        sdg_weights *wb = sdg_wb_new(f, &err);
        if (deferred) {
            sdg_wb_defer(wb);
            g_assert_nonnull(SDG_WB1(wb, N, "a"));
            g_assert_nonnull(SDG_WB1(wb, N, "b"));
        }
        g_assert_cmpint(truncate(path, 1000), ==, 0);

        g_assert_cmpint(st_check_mapped(f, &err), ==, SDG_ERR_IO);
        g_test_message("%s", err.message);
        char *want = g_strdup_printf("%s: the file shrank from %lld to 1000 bytes", path,
                                     (long long)sb.st_size);
        g_assert_nonnull(strstr(err.message, want));
        g_free(want);
        float *x = g_new(float, N);
        g_assert_cmpint(st_read_f32(f, st_find(f, "b"), x, &err), ==, SDG_ERR_IO);
        g_test_message("%s", err.message);
        g_assert_nonnull(strstr(err.message, "the file ended in the middle of tensor 'b'"));
        g_assert_cmpint(st_read_f32(f, st_find(f, "a"), x, &err), ==, SDG_ERR_IO);
        g_free(x);

        if (deferred) {
            g_assert_cmpint(sdg_wb_read(wb, &err), ==, SDG_ERR_IO);
        } else {
            g_assert_null(SDG_WB1(wb, N, "a"));   // in place: the size check, not a SIGBUS
            g_assert_cmpint(sdg_wb_status(wb, &err), ==, SDG_ERR_IO);
        }
        g_test_message("%s", err.message);
        g_assert_nonnull(strstr(err.message, "shrank"));
        sdg_wb_free(wb);
        st_close(f);
        g_assert_cmpint(st_write(path, ts, 2, NULL, &err), ==, SDG_OK); // whole again
    }
    g_free(v);
    g_unlink(path);
    g_free(path);
}

static void put_f32(char *bytes, size_t off, uint32_t bits)
{
    memcpy(bytes + off, &bits, 4);
}

// NaN and infinite weights: an error naming the first tensor (in file order) and the count,
// for F32 tensors used in place and F16 ones converted; tensors the engine does not bind are
// not checked.
static void test_nonfinite(void)
{
    gsize len;
    char *bytes = tiny_bytes(&len);
    if (!bytes) {
        g_test_skip(TINY " not found");
        return;
    }
    char *path = tmp_path("nan.safetensors");
    sdg_error err;
    // The clean copy loads (and so does one whose unused DDPM buffer holds NaN and Inf).
    put_f32(bytes, tiny_offset(bytes, "betas", 0), 0x7fc00000u);
    put_f32(bytes, tiny_offset(bytes, "alphas_cumprod", 7), 0xff800000u);
    g_assert_true(g_file_set_contents(path, bytes, (gssize)len, NULL));
    sdg_model *m = load_model(path, &err);
    if (!m)
        g_error("%s", err.message);
    sdg_model_free(m);

    // Three NaNs in the UNet's last convolution, an infinity in the VAE's last bias.
    size_t unet_at = tiny_offset(bytes, UNET_OUT, 5);
    size_t vae_at = tiny_offset(bytes, VAE_OUT_B, 0);
    put_f32(bytes, unet_at, 0x7fc00000u);
    put_f32(bytes, unet_at + 4, 0xffc00001u);
    put_f32(bytes, unet_at + 40, 0x7f800001u);   // a signalling NaN
    put_f32(bytes, vae_at, 0x7f800000u);
    g_assert_true(g_file_set_contents(path, bytes, (gssize)len, NULL));
    const char *want = unet_at < vae_at
        ? "tensor '" UNET_OUT "' has 3 NaN or infinite values (of 1152); 1 more tensor has some too"
        : "tensor '" VAE_OUT_B "' has 1 NaN or infinite value (of 3); 1 more tensor has some too";
    expect_load_fail(path, SDG_ERR_FORMAT, want);
    expect_load_fail(path, SDG_ERR_FORMAT, "pictures would come out black");

    // Only the infinity: the other tensor is named, alone.
    put_f32(bytes, unet_at, 0);
    put_f32(bytes, unet_at + 4, 0);
    put_f32(bytes, unet_at + 40, 0);
    g_assert_true(g_file_set_contents(path, bytes, (gssize)len, NULL));
    expect_load_fail(path, SDG_ERR_FORMAT,
                     "tensor '" VAE_OUT_B "' has 1 NaN or infinite value (of 3): the checkpoint");

    // The binder alone, reading at once: the first bad tensor bound stops it.
    st_file *f = st_open(path, &err);
    g_assert_nonnull(f);
    sdg_weights *wb = sdg_wb_new(f, &err);
    g_assert_nonnull(SDG_WB4(wb, 4, 32, 3, 3, UNET_OUT));
    g_assert_null(SDG_WB1(wb, 3, VAE_OUT_B));
    g_assert_cmpint(sdg_wb_status(wb, &err), ==, SDG_ERR_FORMAT);
    g_assert_nonnull(strstr(err.message, "'" VAE_OUT_B "' has 1 NaN"));
    sdg_wb_free(wb);
    st_close(f);

    // F16: the check runs in the conversion. The clean copy loads.
    golden_write_f16_copy(TINY, path, NULL);
    m = load_model(path, &err);
    if (!m)
        g_error("%s", err.message);
    sdg_model_free(m);
    golden_write_f16_copy(TINY, path, UNET_OUT);
    expect_load_fail(path, SDG_ERR_FORMAT,
                     "tensor '" UNET_OUT "' has 1 NaN or infinite value (of 1152): the checkpoint");
    g_unlink(path);
    g_free(path);
    g_free(bytes);
}

// Resident pages of this process (/proc/self/statm, second field), in bytes.
static size_t resident_bytes(void)
{
    size_t size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    g_assert_nonnull(f);
    g_assert_cmpint(fscanf(f, "%zu %zu", &size, &resident), ==, 2);
    fclose(f);
    return resident * (size_t)sysconf(_SC_PAGESIZE);
}

// sdg_wb_drop_pages: the named tensors bound in place leave the resident memory and read back
// unchanged; tensors of other names, and copies, stay as they are.
static void test_drop_pages(void)
{
    enum { BIG = 4 << 20, SMALL = 1 << 20, VEC = 1000 };   // elements: 8 MB and 2 MB of F16
    float *big = g_new(float, BIG), *small = g_new(float, SMALL), *vec = g_new(float, VEC);
    for (int i = 0; i < BIG; i++)
        big[i] = (float)(i % 2048) / 64.0f;
    for (int i = 0; i < SMALL; i++)
        small[i] = (float)(i % 1000) - 500.0f;
    for (int i = 0; i < VEC; i++)
        vec[i] = (float)i * 0.25f;
    st_write_tensor ts[3] = {
        {"enc.big", ST_F16, 2, {BIG / 1024, 1024}, big},
        {"enc.bias", ST_F16, 1, {VEC}, vec},
        {"other.small", ST_F16, 2, {SMALL / 1024, 1024}, small},
    };
    sdg_error err;
    char *path = tmp_path("drop.safetensors");
    if (st_write(path, ts, 3, NULL, &err) != SDG_OK)
        g_error("%s", err.message);
    st_file *f = st_open(path, &err);
    g_assert_nonnull(f);
    sdg_weights *wb = sdg_wb_new(f, &err);
    g_assert_nonnull(wb);
    sdg_weight wbig = SDG_WPLAIN(wb, BIG / 1024, 1024, "enc.big");
    sdg_weight wsmall = SDG_WPLAIN(wb, SMALL / 1024, 1024, "other.small");
    const float *bias = SDG_WB1(wb, VEC, "enc.bias");   // a float32 copy
    g_assert_cmpint(sdg_wb_status(wb, &err), ==, SDG_OK);
    g_assert_true(wbig.dtype == SDG_DT_F16 && wsmall.dtype == SDG_DT_F16);
    g_assert_true(wbig.data == st_data(f, st_find(f, "enc.big")));   // in place
    g_assert_cmpuint(sdg_wb_mapped_bytes(wb), ==, 2 * (BIG + SMALL));

    // Every value read: all pages resident.
    const uint16_t *hb = wbig.data, *hs = wsmall.data;
    for (int i = 0; i < BIG; i++)
        g_assert_cmpfloat(sdg__f16_to_f32(hb[i]), ==, big[i]);
    for (int i = 0; i < SMALL; i++)
        g_assert_cmpfloat(sdg__f16_to_f32(hs[i]), ==, small[i]);
    size_t before = resident_bytes();
    sdg_wb_drop_pages(wb, "enc.");
    size_t after = resident_bytes();
    // enc.big's 8 MB go, other.small's 2 MB stay. The margins (1/16 of enc.big, half of
    // other.small) are for the process's other memory, which moves a little in between (under
    // valgrind, by 32 KB).
    g_test_message("resident %zu -> %zu bytes", before, after);
    g_assert_cmpuint(before - after, >=, (size_t)2 * BIG / 16 * 15);
    g_assert_cmpuint(before - after, <, (size_t)2 * BIG + (size_t)SMALL);
    for (int i = 0; i < VEC; i++)
        g_assert_cmpfloat(bias[i], ==, vec[i]);
    // Read back from the file, bit for bit.
    for (int i = 0; i < BIG; i++)
        g_assert_cmpfloat(sdg__f16_to_f32(hb[i]), ==, big[i]);
    g_assert_cmpuint(resident_bytes(), >=, after + (size_t)2 * BIG / 16 * 15);
    for (int i = 0; i < SMALL; i++)
        g_assert_cmpfloat(sdg__f16_to_f32(hs[i]), ==, small[i]);
    sdg_wb_drop_pages(wb, "nothing.");   // no tensor of that name: nothing happens

    sdg_wb_free(wb);
    st_close(f);
    g_unlink(path);
    g_free(path);
    g_free(big);
    g_free(small);
    g_free(vec);
}

static double elapsed_s(gint64 t0)
{
    return (double)(g_get_monotonic_time() - t0) / 1e6;
}

// 100 GB sparse files (holes cost no disk) answer at once, reading nothing: a valid header
// followed by 100 GB of holes, and a valid header whose token embedding is larger than this
// machine's memory (the model's shapes all agree: only the size is implausible).
static void test_sparse(void)
{
    gsize len;
    char *bytes = tiny_bytes(&len);
    if (!bytes) {
        g_test_skip(TINY " not found");
        return;
    }
    const uint64_t big = (uint64_t)100 << 30;
    char *path = tmp_path("sparse.safetensors");
    g_assert_true(g_file_set_contents(path, bytes, (gssize)len, NULL));
    if (truncate(path, (off_t)big) != 0) {
        g_test_skip("the temporary folder cannot hold a 100 GB sparse file");
        g_unlink(path);
        g_free(path);
        g_free(bytes);
        return;
    }
    gint64 t0 = g_get_monotonic_time();
    char *want = g_strdup_printf("the file is %llu bytes but its header describes only %zu",
                                 (unsigned long long)big, (size_t)len);
    expect_open_fail(path, SDG_ERR_FORMAT, want);
    expect_load_fail(path, SDG_ERR_FORMAT, want);
    g_free(want);
    g_test_message("100 GB of trailing holes refused in %.3f s", elapsed_s(t0));
    g_assert_cmpfloat(elapsed_s(t0), <, 5.0);
    g_unlink(path);

    // The golden header with the token embedding grown to more rows than this machine's memory
    // holds as float32 (and at least 100 GB), every offset moved to match, data all holes.
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    g_assert_cmpint(pages, >, 0);
    uint64_t mem = (uint64_t)pages * (uint64_t)page;
    uint64_t target = mem + ((uint64_t)4 << 30) > big ? mem + ((uint64_t)4 << 30) : big;
    const char *emb = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight";
    st_file *f = golden_open(TINY);
    int n = st_count(f);
    const st_tensor **order = g_new(const st_tensor *, n);
    for (int i = 0; i < n; i++)
        order[i] = st_at(f, i);
    for (int i = 1; i < n; i++) // insertion sort by offset (437 tensors)
        for (int j = i; j > 0 && order[j]->offset < order[j - 1]->offset; j--) {
            const st_tensor *tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    int64_t rows = (int64_t)(target / (64 * 4)) + 1;
    uint64_t off = 0;
    if (rows > INT32_MAX) {
        g_test_message("skipped the huge-embedding case: this machine has %.0f GB of memory",
                       (double)mem / 1e9);
    } else {
        GString *h = g_string_new("{");
        for (int i = 0; i < n; i++) {
            const st_tensor *t = order[i];
            bool grow = strcmp(t->name, emb) == 0;
            g_assert_true(!grow || (t->n_dims == 2 && t->shape[1] == 64 && t->dtype == ST_F32));
            uint64_t size = grow ? (uint64_t)rows * 64 * 4 : t->size;
            g_string_append_printf(h, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "",
                                   t->name, st_dtype_name(t->dtype));
            for (int d = 0; d < t->n_dims; d++)
                g_string_append_printf(h, "%s%lld", d ? "," : "",
                                       (long long)(grow && d == 0 ? rows : t->shape[d]));
            g_string_append_printf(h, "],\"data_offsets\":[%llu,%llu]}",
                                   (unsigned long long)off, (unsigned long long)(off + size));
            off += size;
        }
        g_string_append_c(h, '}');
        char *p = write_raw("sparse.safetensors", h->str, -1, NULL, 0);
        bool made = truncate(p, (off_t)(8 + h->len + off)) == 0;
        g_free(p);
        g_test_message("header of %zu bytes describing %.1f GB", h->len, (double)off / 1e9);
        g_string_free(h, TRUE);
        if (!made) {
            g_test_message("skipped the huge-embedding case: no sparse file of that size here");
            rows = -1;
        }
    }
    if (rows > 0 && rows <= INT32_MAX) {
        t0 = g_get_monotonic_time();
        sdg_error err;
        st_file *big_f = st_open(path, &err); // a valid file as far as the format goes
        if (!big_f)
            g_error("%s", err.message);
        g_assert_cmpint(st_find(big_f, emb)->shape[0], ==, rows);
        st_close(big_f);
        char *needle = g_strdup_printf("with tensor '%s' [%lld,64] the weights come to", emb,
                                       (long long)rows);
        expect_load_fail(path, SDG_ERR_UNSUPPORTED, needle);
        expect_load_fail(path, SDG_ERR_UNSUPPORTED, "of memory: the file is damaged, or the "
                         "model is too large to run here");
        g_free(needle);
        g_test_message("%.0f GB token embedding refused in %.3f s", (double)off / 1e9,
                       elapsed_s(t0));
        g_assert_cmpfloat(elapsed_s(t0), <, 5.0);
    }
    g_unlink(path);
    g_free(order);
    st_close(f);
    g_free(path);
    g_free(bytes);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    GError *gerr = NULL;
    tmpdir = g_dir_make_tmp("sdg-test-loader-XXXXXX", &gerr);
    g_assert_no_error(gerr);
    g_test_add_func("/loader/golden", test_golden);
    g_test_add_func("/loader/half", test_half);
    g_test_add_func("/loader/bulk-f16", test_bulk_f16);
    g_test_add_func("/loader/roundtrip", test_roundtrip);
    g_test_add_func("/loader/unaligned-escapes-dtypes", test_unaligned_and_escapes);
    g_test_add_func("/loader/bad-files", test_bad_files);
    g_test_add_func("/loader/special-paths", test_special_paths);
    g_test_add_func("/loader/truncated-golden", test_truncated_golden);
    g_test_add_func("/loader/shrinking", test_shrinking);
    g_test_add_func("/loader/nonfinite", test_nonfinite);
    g_test_add_func("/loader/sparse-100gb", test_sparse);
    g_test_add_func("/loader/drop-pages", test_drop_pages);
    int rc = g_test_run();
    g_rmdir(tmpdir); // every test removes its own files
    g_free(tmpdir);
    return rc;
}
