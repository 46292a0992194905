/*
 * test-taesd.c - the TAESD decoder and encoder against the taesd-random goldens (madebyollin's
 * taesd.py on random weights), plus loading errors.
 *
 * Every run is measured first (dry run, then the real run in exactly that much memory: the peaks
 * must agree) and runs with 1 and 2 threads (same bits).
 */
#include <glib.h>
#include <stdio.h>
#include <string.h>

#include "golden.h"
#include "loader/weights.h"
#include "model/taesd.h"
#include "tensor/gemm.h"

typedef struct run_args {
    const taesd_model *m;
    bool decode;
    const float *in;
    int h, w;
    float *out;
} run_args;

static void run_once(sdg_exec *ex, const void *args)
{
    const run_args *a = args;
    if (a->decode)
        taesd_decode(ex, a->m, a->in, 1, a->h, a->w, a->out);
    else
        taesd_encode(ex, a->m, a->in, 1, a->h, a->w, a->out);
}

static void golden_case(const taesd_model *m, const st_file *ref, bool decode, const char *in_name,
                        const char *out_name, double tol)
{
    size_t n_out;
    float *in = golden_f32(ref, in_name, NULL);
    float *want = golden_f32(ref, out_name, &n_out);
    const st_tensor *t = st_find(ref, in_name);
    int h = (int)t->shape[2], w = (int)t->shape[3];
    float *got1 = g_new0(float, n_out), *got2 = g_new0(float, n_out);
    run_args a = { m, decode, in, h, w, got1 }, none = { m, decode, NULL, h, w, NULL };
    size_t peak = golden_run_measured(run_once, &a, &none, 1);
    a.out = got2;
    g_assert_cmpuint(golden_run_measured(run_once, &a, &none, 2), ==, peak);
    g_assert_cmpmem(got1, n_out * sizeof *got1, got2, n_out * sizeof *got2);
    golden_check(out_name, got1, want, n_out, tol);
    g_free(in);
    g_free(want);
    g_free(got1);
    g_free(got2);
}

static void test_golden(void)
{
    st_file *f = golden_open("golden/taesd-random.safetensors");
    st_file *ref = golden_open("golden/taesd-random-reference.safetensors");
    sdg_error err;
    sdg_weights *wb = sdg_wb_new(f, &err);
    taesd_model *m = taesd_load(wb, "decoder.", "encoder.");
    if (!m) {
        sdg_wb_status(wb, &err);
        g_error("taesd_load: %s", err.message);
    }
    g_assert_cmpint(taesd_latent_channels(m), ==, 4);
    g_assert_true(taesd_has_decoder(m) && taesd_has_encoder(m));
    // Tolerances: about 5x the worst error measured (golden.h).
    // Measured with the best kernels / portable C: 1.24e-6 / 1.18e-6, 1.05e-6 / 1.05e-6,
    // 1.9e-6 / 2.3e-6.
    golden_case(m, ref, true, "taesd.dec.latent", "taesd.dec.image", 7e-6);
    golden_case(m, ref, true, "taesd.dec.latent_b", "taesd.dec.image_b", 6e-6);
    golden_case(m, ref, false, "taesd.enc.image", "taesd.enc.latent", 1.5e-5);
    taesd_free(m);
    sdg_wb_free(wb);
    st_close(ref);
    st_close(f);
}

// The decoder alone under its own prefix; a prefix naming nothing is an error naming it.
static void test_load(void)
{
    st_file *f = golden_open("golden/taesd-random.safetensors");
    sdg_error err;
    sdg_weights *wb = sdg_wb_new(f, &err);
    taesd_model *m = taesd_load(wb, "decoder.", NULL);
    g_assert_nonnull(m);
    g_assert_false(taesd_has_encoder(m));
    taesd_free(m);
    sdg_wb_free(wb);
    wb = sdg_wb_new(f, &err);
    g_assert_null(taesd_load(wb, "first_stage_model.", NULL));
    g_assert_cmpint(sdg_wb_status(wb, &err), ==, SDG_ERR_SHAPE);
    printf("# %s\n", err.message);
    g_assert_nonnull(strstr(err.message, "first_stage_model."));
    sdg_wb_free(wb);
    st_close(f);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_message("kernels: %s", sdg_gemm_kernels_label(false));
    g_test_add_func("/taesd/golden", test_golden);
    g_test_add_func("/taesd/load", test_load);
    return g_test_run();
}
