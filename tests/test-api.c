/*
 * test-api.c - the whole engine through its public header (plus the pipeline's test hook for
 * replaying the goldens' noise): every sampler's full trajectory and decoded picture against
 * the reference pipelines on the tiny model, img2img, inpainting (4- and 9-channel), emphasis,
 * long prompts, progress, cancel, determinism across runs and thread counts, and bad requests.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "golden.h"
#include "pipeline/pipeline.h"
#include "sdg.h"

#define TINY "golden/tiny-sd1.safetensors"
#define REF "golden/tiny-sd1-reference.safetensors"
#define VOCAB "vocab/bpe_simple_vocab_16e6.txt.gz"

static sdg_model *model;      // the tiny model, loaded once
static st_file *ref;
static char *vocab_path;

static sdg_model *load(const char *path, sdg_error *err)
{
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    return sdg_model_load(path, &mp, err);
}

// ---------------------------------------------------------------------------------------------
// Golden noise replay

typedef struct noise_src {
    const float *initial, *vae, *ancestral;
} noise_src;

static void replay_noise(void *user, int which, float *out, size_t n)
{
    const noise_src *src = user;
    const float *from = which == SDG_TEST_NOISE_INITIAL ? src->initial
                        : which == SDG_TEST_NOISE_VAE ? src->vae
                        : src->ancestral ? src->ancestral + (size_t)which * n : NULL;
    g_assert_nonnull(from);
    memcpy(out, from, n * sizeof(float));
}

typedef struct run_case {
    const char *run;        // golden prefix
    sdg_sampler sampler;
    sdg_schedule schedule;
    int steps;
    const char *final;      // golden name of the final latent (or NULL: last row of <run>.x)
    bool img2img;
    double latent_tol;      // tolerances of the final latent and of the picture (see runs[])
    double picture_tol;
} run_case;

static void check_run(gconstpointer data)
{
    const run_case *rc = data;
    sdg_error err;
    sdg_ctx *ctx = sdg_ctx_new(model, 2, &err);
    g_assert_nonnull(ctx);

    char *prompt = golden_prompt(ref, 0);
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = prompt;
    gp.width = gp.height = 128;
    gp.sampler = rc->sampler;
    gp.schedule = rc->schedule;
    gp.steps = rc->steps;
    gp.cfg_scale = 7.0f;
    gp.precision = SDG_PRECISION_EXACT;   // the goldens' arithmetic (the default is `fast`)

    noise_src src = { 0 };
    float *noise = golden_f32(ref, rc->img2img ? "img2img.noise" : "sample.noise", NULL);
    float *anc = golden_f32(ref, "sample.euler_ancestral_noise", NULL);
    float *vae_noise = golden_f32(ref, "img2img.vae_noise", NULL);
    src.initial = noise;
    src.vae = vae_noise;
    src.ancestral = anc;
    ctx->test_noise = replay_noise;
    ctx->test_noise_data = &src;

    sdg_image *init = NULL;
    if (rc->img2img) {
        int w, h;
        const st_tensor *t = st_find(ref, "img2img.image");
        h = (int)t->shape[2];
        w = (int)t->shape[3];
        float *planar = golden_f32(ref, "img2img.image", NULL);
        init = sdg_image_new(w, h, 3);
        size_t hw = (size_t)w * h;
        for (size_t i = 0; i < hw; i++)
            for (int c = 0; c < 3; c++)
                init->data[i * 3 + c] = (planar[c * hw + i] + 1.0f) * 0.5f;
        g_free(planar);
        gp.init_image = init;
        gp.strength = 0.5f;
    }

    sdg_result *res = NULL;
    sdg_status st = sdg_generate(ctx, &gp, &res, &err);
    if (st != SDG_OK)
        g_error("%s: %s", rc->run, err.message);
    g_assert_cmpint(res->n_images, ==, 1);
    g_assert_cmpint(res->latent_channels, ==, 4);
    g_assert_cmpint(res->latent_height, ==, 16);

    char *name = rc->final ? g_strdup(rc->final) : g_strdup_printf("%s.x", rc->run);
    size_t n;
    float *x = golden_f32(ref, name, &n);
    size_t nl = 4 * 16 * 16;
    const float *want = x + (rc->final ? 0 : n - nl);
    char *what = g_strdup_printf("%s final latent", rc->run);
    golden_check(what, res->latents, want, nl, rc->latent_tol);
    g_free(what);

    char *img_name = g_strdup_printf("%s.image", rc->run);
    if (st_find(ref, img_name)) {
        int w, h;
        float *pic = golden_picture(ref, img_name, &w, &h);
        g_assert_cmpint(res->images[0]->width, ==, w);
        g_assert_cmpint(res->images[0]->height, ==, h);
        char *what2 = g_strdup_printf("%s picture", rc->run);
        golden_check(what2, res->images[0]->data, pic, (size_t)3 * w * h, rc->picture_tol);
        g_free(what2);
        g_free(pic);
    }
    g_free(img_name);
    g_free(name);
    g_free(x);
    g_free(noise);
    g_free(anc);
    g_free(vae_noise);
    g_free(prompt);
    sdg_image_free(init);
    sdg_result_free(res);
    sdg_ctx_free(ctx);
}

// ---------------------------------------------------------------------------------------------
// Other families: whole runs of tiny-sd2 (as v and as eps) and tiny-sdxl against their goldens

typedef struct family_case {
    const char *run;            // golden prefix
    const char *model, *ref;    // golden files
    sdg_prediction prediction;  // the option given (AUTO: what the file says)
    sdg_family family;
    sdg_prediction want;        // what the model must end up with
    sdg_sampler sampler;
    double latent_tol, picture_tol;
    sdg_schedule schedule;      // k-diffusion's runs: karras; sgm's: simple
    float cfg;                  // 0: 7
    sdg_model_sampling ms;      // 0: DEFAULT
} family_case;

static sdg_model *load_with(const char *relpath, sdg_prediction pred, sdg_error *err)
{
    char *path = golden_path(relpath);
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    mp.prediction = pred;
    sdg_model *m = sdg_model_load(path, &mp, err);
    g_free(path);
    return m;
}

static void check_family_run(gconstpointer data)
{
    const family_case *fc = data;
    sdg_error err;
    sdg_model *m = load_with(fc->model, fc->prediction, &err);
    if (!m)
        g_error("%s: %s", fc->model, err.message);
    sdg_model_info info;
    sdg_model_get_info(m, &info);
    g_assert_cmpint(info.family, ==, fc->family);
    g_assert_cmpint(info.prediction, ==, fc->want);
    g_test_message("%s: %s, %s (%s)", fc->model, sdg_family_name(info.family),
                   sdg_prediction_name(info.prediction), info.prediction_source);
    st_file *rf = golden_open(fc->ref);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err);
    g_assert_nonnull(ctx);
    // The few-step golden has one prompt (its "prompt" metadata), the others a list.
    char *prompt = st_metadata(rf, "prompts") ? golden_prompt(rf, 0)
                                              : g_strdup(st_metadata(rf, "prompt"));
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = prompt;
    gp.width = gp.height = 128;
    gp.sampler = fc->sampler;
    gp.schedule = fc->schedule;
    // The trajectory's length: x holds the start of every step and the final latent (DDIM: x_T
    // and after each of its S steps).
    char *x_name = g_strdup_printf("%s.x", fc->run);
    const st_tensor *xt = st_find(rf, x_name);
    g_assert_nonnull(xt);
    gp.steps = (int)xt->shape[0] - 1;
    g_free(x_name);
    gp.cfg_scale = fc->cfg > 0.0f ? fc->cfg : 7.0f;
    gp.model_sampling = fc->ms;
    gp.precision = SDG_PRECISION_EXACT;
    if (fc->family == SDG_FAMILY_SDXL) {
        // cond.sizes: original (768, 1344), crop top-left (0, 64), target (832, 1216), as (h, w)
        gp.original_height = 768;
        gp.original_width = 1344;
        gp.crop_top = 0;
        gp.crop_left = 64;
        gp.target_height = 832;
        gp.target_width = 1216;
    }
    noise_src src = { 0 };
    // The start noise: tiny-sd1's and the other families' sample.noise; in the few-step file
    // ComfyUI's runs have lcm.noise, k-diffusion's k.noise. The noise stochastic samplers add,
    // when there is some: <run>.noise, one draw per step.
    const char *initial = st_find(rf, "sample.noise") ? "sample.noise"
                          : g_str_has_prefix(fc->run, "lcm") ? "lcm.noise" : "k.noise";
    float *noise = golden_f32(rf, initial, NULL);
    src.initial = noise;
    char *anc_name = g_strdup_printf("%s.noise", fc->run);
    float *anc = st_find(rf, anc_name) ? golden_f32(rf, anc_name, NULL) : NULL;
    src.ancestral = anc;
    g_free(anc_name);
    ctx->test_noise = replay_noise;
    ctx->test_noise_data = &src;
    sdg_result *res = NULL;
    if (sdg_generate(ctx, &gp, &res, &err) != SDG_OK)
        g_error("%s: %s", fc->run, err.message);

    char *name = g_strdup_printf("%s.x", fc->run);
    size_t n;
    float *x = golden_f32(rf, name, &n);
    size_t nl = 4 * 16 * 16;
    char *what = g_strdup_printf("%s final latent", fc->run);
    golden_check(what, res->latents, x + n - nl, nl, fc->latent_tol);
    char *img_name = g_strdup_printf("%s.image", fc->run);
    int w, h;
    float *pic = golden_picture(rf, img_name, &w, &h);
    size_t hw = (size_t)w * h;
    char *what2 = g_strdup_printf("%s picture", fc->run);
    golden_check(what2, res->images[0]->data, pic, 3 * hw, fc->picture_tol);
    g_free(what2);
    g_free(pic);
    g_free(img_name);
    g_free(what);
    g_free(x);
    g_free(name);
    g_free(noise);
    g_free(anc);
    g_free(prompt);
    sdg_result_free(res);
    sdg_ctx_free(ctx);
    st_close(rf);
    sdg_model_free(m);
}

#define SD2 "golden/tiny-sd2.safetensors"
#define SD2_REF "golden/tiny-sd2-reference.safetensors"
#define SDXL "golden/tiny-sdxl.safetensors"
#define SDXL_REF "golden/tiny-sdxl-reference.safetensors"
#define FEWSTEP_REF "golden/tiny-sd1-fewstep-reference.safetensors"

// Tolerances: about 5x the worst error measured with the best kernels and with the portable C
// ones (latent / picture in the comments). The golden README's float64 re-runs of these
// pipelines move the pictures by up to 8e-6 themselves.
static const family_case family_runs[] = {
    // tiny-sd2's metadata says parameterization "v"; the same weights run as eps by option.
    { "k.euler.karras", SD2, SD2_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SD2, SDG_PREDICTION_V,
      SDG_SAMPLER_EULER, 3e-5, 7e-5, SDG_SCHEDULE_KARRAS, 0, 0 },   // measured 5.1e-6 / 1.3e-5
    { "k.dpmpp_2m.karras", SD2, SD2_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SD2, SDG_PREDICTION_V,
      SDG_SAMPLER_DPMPP_2M, 4e-5, 7e-5, SDG_SCHEDULE_KARRAS, 0, 0 },   // measured 7.0e-6 / 1.3e-5
    { "eps.k.euler.karras", SD2, SD2_REF, SDG_PREDICTION_EPS, SDG_FAMILY_SD2, SDG_PREDICTION_EPS,
      SDG_SAMPLER_EULER, 1.5e-5, 1.5e-5, SDG_SCHEDULE_KARRAS, 0, 0 },   // measured 2.5e-6 / 2.9e-6
    { "eps.k.dpmpp_2m.karras", SD2, SD2_REF, SDG_PREDICTION_EPS, SDG_FAMILY_SD2,
      SDG_PREDICTION_EPS, SDG_SAMPLER_DPMPP_2M, 1.5e-5, 1.5e-5, SDG_SCHEDULE_KARRAS, 0, 0 },   // measured 2.3e-6 / 2.3e-6
    { "ddim5", SD2, SD2_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SD2, SDG_PREDICTION_V,
      SDG_SAMPLER_DDIM, 2e-5, 4e-5, SDG_SCHEDULE_KARRAS, 0, 0 },   // measured 3.8e-6 / 7.7e-6
    // Both encoders, the pooled embedding, the size conditioning, zeros for the unconditional
    // side (empty negative prompt), label_emb, the 0.13025 scale.
    { "k.euler.karras", SDXL, SDXL_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SDXL, SDG_PREDICTION_EPS,
      SDG_SAMPLER_EULER, 1.5e-5, 2e-5, SDG_SCHEDULE_KARRAS, 0, 0 },   // measured 2.8e-6 / 3.2e-6
    { "k.dpmpp_2m.karras", SDXL, SDXL_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SDXL,
      SDG_PREDICTION_EPS, SDG_SAMPLER_DPMPP_2M, 1.5e-5, 1.5e-5, SDG_SCHEDULE_KARRAS, 0, 0 },   // measured 2.3e-6 / 2.4e-6
    // sgm's own samplers: LegacyDDPMDiscretization (the `simple` schedule), integer timesteps,
    // start noise * sqrt(1 + sigma_0^2). Measured with ComfyUI's sigma table (float64
    // alphas_cumprod), which `simple` samples since the few-step work.
    { "sgm.euler", SDXL, SDXL_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SDXL, SDG_PREDICTION_EPS,
      SDG_SAMPLER_EULER, 1.5e-5, 2e-5, SDG_SCHEDULE_SIMPLE, 0, 0 },   // measured 2.6e-6 / 3.4e-6
    // k-diffusion's exponential schedule on tiny-sd1 (6 steps, CFG 7).
    { "k.euler.exponential", TINY, FEWSTEP_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SD1,
      SDG_PREDICTION_EPS, SDG_SAMPLER_EULER, 3e-5, 4e-5, SDG_SCHEDULE_EXPONENTIAL, 0, 0 },   // 4.8e-6 / 7.6e-6
    { "k.dpmpp_2m.exponential", TINY, FEWSTEP_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SD1,
      SDG_PREDICTION_EPS, SDG_SAMPLER_DPMPP_2M, 2e-5, 4e-5, SDG_SCHEDULE_EXPONENTIAL, 0, 0 },   // 3.9e-6 / 6.3e-6
    { "sgm.dpmpp_2m", SDXL, SDXL_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SDXL, SDG_PREDICTION_EPS,
      SDG_SAMPLER_DPMPP_2M, 1.5e-5, 1.5e-5, SDG_SCHEDULE_SIMPLE, 0, 0 },   // measured 2.4e-6 / 2.6e-6
    // ComfyUI's LCM on tiny-sd1 (4 steps, CFG 1, integer timesteps, start noise * sqrt(1 +
    // sigma_0^2), the per-step noise replayed), plain and with the LCM-distilled model sampling.
    { "lcm.simple", TINY, FEWSTEP_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SD1, SDG_PREDICTION_EPS,
      SDG_SAMPLER_LCM, 3e-6, 7e-6, SDG_SCHEDULE_SIMPLE, 1.0f, 0 },   // 5.4e-7 / 1.4e-6
    { "lcm.sgm_uniform", TINY, FEWSTEP_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SD1,
      SDG_PREDICTION_EPS, SDG_SAMPLER_LCM, 3e-6, 6e-6, SDG_SCHEDULE_SGM_UNIFORM, 1.0f,
      0 },                                                            // 5.1e-7 / 1.1e-6
    { "lcm_distilled.sgm_uniform", TINY, FEWSTEP_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SD1,
      SDG_PREDICTION_EPS, SDG_SAMPLER_LCM, 3e-6, 6e-6, SDG_SCHEDULE_SGM_UNIFORM, 1.0f,
      SDG_MODEL_SAMPLING_LCM },                                       // 5.4e-7 / 1.2e-6
    // k-diffusion's dpm++ 2m sde (karras, 6 steps, CFG 7), its Brownian noise replayed.
    { "k.dpmpp_2m_sde.karras", TINY, FEWSTEP_REF, SDG_PREDICTION_AUTO, SDG_FAMILY_SD1,
      SDG_PREDICTION_EPS, SDG_SAMPLER_DPMPP_2M_SDE, 3e-5, 4e-5, SDG_SCHEDULE_KARRAS, 0,
      0 },                                                            // 4.3e-6 / 6.1e-6
};

// ---------------------------------------------------------------------------------------------
// Behaviour

static sdg_result *generate(int threads, sdg_gen_params *gp, sdg_status want, sdg_error *err)
{
    sdg_ctx *ctx = sdg_ctx_new(model, threads, err);
    g_assert_nonnull(ctx);
    sdg_result *res = NULL;
    sdg_status st = sdg_generate(ctx, gp, &res, err);
    if (st != want)
        g_error("expected %s, got %s: %s", sdg_status_name(want), sdg_status_name(st),
                err->message);
    if (st != SDG_OK)
        g_assert_null(res);
    sdg_ctx_free(ctx);
    return res;
}

static sdg_gen_params small_params(void)
{
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = "a red circle on the left";
    gp.negative_prompt = "blurry";
    gp.width = 64;
    gp.height = 48;
    gp.steps = 3;
    gp.seed = 1234;
    gp.sampler = SDG_SAMPLER_EULER_A;
    return gp;
}

static bool same_result(const sdg_result *a, const sdg_result *b)
{
    if (a->n_images != b->n_images)
        return false;
    for (int i = 0; i < a->n_images; i++) {
        const sdg_image *x = a->images[i], *y = b->images[i];
        if (x->width != y->width || x->height != y->height ||
            memcmp(x->data, y->data, sizeof(float) * 3 * x->width * x->height))
            return false;
    }
    size_t nl = (size_t)a->n_images * a->latent_channels * a->latent_height * a->latent_width;
    return memcmp(a->latents, b->latents, nl * sizeof(float)) == 0;
}

static void test_determinism(void)
{
    sdg_error err;
    sdg_gen_params gp = small_params();
    sdg_result *a = generate(1, &gp, SDG_OK, &err);
    sdg_result *b = generate(1, &gp, SDG_OK, &err);
    sdg_result *c = generate(2, &gp, SDG_OK, &err);
    g_assert_true(same_result(a, b));
    g_assert_true(same_result(a, c));
    g_assert_cmpint(a->images[0]->width, ==, 64);
    g_assert_cmpint(a->images[0]->height, ==, 48);
    // Another seed gives another picture.
    gp.seed = 1235;
    sdg_result *d = generate(2, &gp, SDG_OK, &err);
    g_assert_false(same_result(a, d));
    sdg_result_free(a);
    sdg_result_free(b);
    sdg_result_free(c);
    sdg_result_free(d);
}

// The stochastic samplers' noise is the documented streams of the engine's generator
// (pipeline.h): the start latent is stream INITIAL, draw k of a run elements k*n.. of stream
// ANCESTRAL. A run fed those by the test hook makes the same bits as the seeded run, on another
// thread count.
typedef struct stream_src {
    uint64_t seed;
    int max_draw;
} stream_src;

static void stream_noise(void *user, int which, float *out, size_t n)
{
    stream_src *src = user;
    g_assert_true(which != SDG_TEST_NOISE_VAE);
    if (which == SDG_TEST_NOISE_INITIAL) {
        rng_normal_fill(src->seed, SDG_STREAM_INITIAL, 0, out, n);
        return;
    }
    if (which > src->max_draw)
        src->max_draw = which;
    rng_normal_fill(src->seed, SDG_STREAM_ANCESTRAL, (uint64_t)which * n, out, n);
}

static void test_noise_streams(void)
{
    const sdg_sampler noisy[] = {SDG_SAMPLER_EULER_A, SDG_SAMPLER_LCM, SDG_SAMPLER_DPMPP_2M_SDE,
                                 SDG_SAMPLER_DPMPP_SDE};
    for (size_t k = 0; k < G_N_ELEMENTS(noisy); k++) {
        sdg_error err;
        sdg_gen_params gp = small_params();
        gp.sampler = noisy[k];
        sdg_result *a = generate(1, &gp, SDG_OK, &err);
        sdg_ctx *ctx = sdg_ctx_new(model, 2, &err);
        g_assert_nonnull(ctx);
        stream_src src = { gp.seed, -1 };
        ctx->test_noise = stream_noise;
        ctx->test_noise_data = &src;
        sdg_result *b = NULL;
        g_assert_cmpint(sdg_generate(ctx, &gp, &b, &err), ==, SDG_OK);
        g_test_message("%s: draws 0..%d", sdg_sampler_name(noisy[k]), src.max_draw);
        g_assert_true(same_result(a, b));
        // 3 steps, the last adds no noise: 2 draws (dpmpp_sde: 2 per step)
        g_assert_cmpint(src.max_draw, ==, noisy[k] == SDG_SAMPLER_DPMPP_SDE ? 3 : 1);
        sdg_result_free(a);
        sdg_result_free(b);
        sdg_ctx_free(ctx);
    }
}

// The precisions: `fast` is deterministic across thread counts too, stays close to `exact`
// (its products are bfloat16 on AVX512-BF16 CPUs, Winograd convolutions elsewhere), and
// `default` is `fast`. An unknown precision is refused.
static void test_precision(void)
{
    sdg_error err;
    sdg_gen_params gp = small_params();
    gp.width = gp.height = 256;   // VAE maps of 32x32 and more: Winograd where `fast` uses it
    gp.steps = 2;
    gp.precision = SDG_PRECISION_EXACT;
    sdg_result *ex = generate(1, &gp, SDG_OK, &err);
    gp.precision = SDG_PRECISION_FAST;
    sdg_result *f1 = generate(1, &gp, SDG_OK, &err);
    sdg_result *f2 = generate(2, &gp, SDG_OK, &err);
    g_assert_true(same_result(f1, f2));
    g_assert_false(same_result(ex, f1));   // Winograd or bfloat16: other roundings
    gp.precision = SDG_PRECISION_DEFAULT;
    sdg_result *def = generate(2, &gp, SDG_OK, &err);
    g_assert_true(same_result(f1, def));
    const sdg_image *a = ex->images[0], *b = f1->images[0];
    double se = 0.0;
    size_t n = (size_t)3 * a->width * a->height;
    for (size_t i = 0; i < n; i++)
        se += (double)(a->data[i] - b->data[i]) * (a->data[i] - b->data[i]);
    double psnr = se > 0.0 ? 10.0 * log10((double)n / se) : INFINITY;
    g_test_message("fast (%s kernels) against exact (%s): PSNR %.1f dB",
                   sdg_kernels_name(SDG_PRECISION_FAST), sdg_kernels_name(SDG_PRECISION_EXACT),
                   psnr);
    g_assert_cmpfloat(psnr, >=, 30.0);
    gp.precision = (sdg_precision)SDG_PRECISION_COUNT;
    generate(1, &gp, SDG_ERR_INVALID_ARG, &err);
    g_assert_nonnull(strstr(err.message, "precision"));
    sdg_precision pr;
    g_assert_true(sdg_precision_from_name("fast", &pr));
    g_assert_cmpint(pr, ==, SDG_PRECISION_FAST);
    g_assert_false(sdg_precision_from_name("bf16", &pr));
    g_assert_cmpstr(sdg_precision_name(SDG_PRECISION_EXACT), ==, "exact");
    sdg_result_free(ex);
    sdg_result_free(def);
    sdg_result_free(f1);
    sdg_result_free(f2);
}

static void test_batch_seeds(void)
{
    sdg_error err;
    sdg_gen_params gp = small_params();
    gp.batch_count = 2;
    sdg_result *both = generate(2, &gp, SDG_OK, &err);
    g_assert_cmpint(both->n_images, ==, 2);
    gp.batch_count = 1;
    gp.seed = 1235;
    sdg_result *second = generate(2, &gp, SDG_OK, &err);
    size_t n = (size_t)3 * 64 * 48;
    g_assert_cmpmem(both->images[1]->data, n * sizeof(float), second->images[0]->data,
                    n * sizeof(float));
    sdg_result_free(both);
    sdg_result_free(second);
}

typedef struct progress_log {
    int calls, last_step, total, stop_at;
    int preview_w, preview_h;
    sdg_ctx *cancel_ctx;
} progress_log;

static bool on_progress(int step, int total, const sdg_image *preview, void *user)
{
    progress_log *log = user;
    g_assert_cmpint(step, ==, log->calls);
    log->calls++;
    log->last_step = step;
    log->total = total;
    if (preview) {
        log->preview_w = preview->width;
        log->preview_h = preview->height;
        for (int i = 0; i < preview->width * preview->height * 3; i++)
            g_assert_true(preview->data[i] >= 0.0f && preview->data[i] <= 1.0f);
    }
    if (log->stop_at >= 0 && step == log->stop_at) {
        if (log->cancel_ctx) {
            sdg_ctx_cancel(log->cancel_ctx);   // as another thread would
            return true;
        }
        return false;
    }
    return true;
}

static void test_progress_and_cancel(void)
{
    sdg_error err;
    sdg_gen_params gp = small_params();
    gp.batch_count = 2;
    progress_log log = { .stop_at = -1 };
    gp.progress = on_progress;
    gp.progress_data = &log;
    gp.preview = true;
    sdg_result *res = generate(2, &gp, SDG_OK, &err);
    g_assert_cmpint(log.calls, ==, 7);
    g_assert_cmpint(log.last_step, ==, 6);
    g_assert_cmpint(log.total, ==, 6);
    g_assert_cmpint(log.preview_w, ==, 8);
    g_assert_cmpint(log.preview_h, ==, 6);
    sdg_result_free(res);

    // The callback says stop.
    log = (progress_log){ .stop_at = 2 };
    generate(2, &gp, SDG_ERR_CANCELLED, &err);
    g_assert_cmpint(err.status, ==, SDG_ERR_CANCELLED);
    g_assert_cmpint(log.calls, ==, 3);

    // sdg_ctx_cancel: the run stops before the next network evaluation.
    sdg_ctx *ctx = sdg_ctx_new(model, 2, &err);
    log = (progress_log){ .stop_at = 1, .cancel_ctx = ctx };
    sdg_result *out = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &out, &err), ==, SDG_ERR_CANCELLED);
    g_assert_null(out);
    g_assert_cmpint(log.calls, ==, 2);
    // The flag is cleared by the next run.
    log = (progress_log){ .stop_at = -1 };
    g_assert_cmpint(sdg_generate(ctx, &gp, &out, &err), ==, SDG_OK);
    sdg_result_free(out);
    sdg_ctx_free(ctx);
}

static void test_emphasis_and_long_prompts(void)
{
    sdg_error err;
    sdg_gen_params gp = small_params();
    gp.sampler = SDG_SAMPLER_EULER;
    gp.prompt = "a red circle";
    sdg_result *plain = generate(2, &gp, SDG_OK, &err);
    gp.prompt = "(a red circle:1.0)";
    sdg_result *unit = generate(2, &gp, SDG_OK, &err);
    gp.prompt = "a (red:1.5) circle";
    sdg_result *strong = generate(2, &gp, SDG_OK, &err);
    g_assert_true(same_result(plain, unit));
    g_assert_false(same_result(plain, strong));

    GString *lng = g_string_new(NULL);
    for (int i = 0; i < 60; i++)
        g_string_append(lng, "blue square, ");
    gp.prompt = lng->str;   // 240 tokens: 4 windows
    sdg_result *longp = generate(2, &gp, SDG_OK, &err);
    g_assert_false(same_result(plain, longp));
    g_string_free(lng, TRUE);
    sdg_result_free(plain);
    sdg_result_free(unit);
    sdg_result_free(strong);
    sdg_result_free(longp);
}

static sdg_image *gradient_image(int w, int h)
{
    sdg_image *img = sdg_image_new(w, h, 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                img->data[((size_t)y * w + x) * 3 + c] = (float)((x * (c + 1) + y * 3) % 97) / 96.0f;
    return img;
}

// Inpainting leaves every pixel outside the mask exactly as it was; returns the result.
static sdg_result *inpaint(sdg_model *mdl, bool blend)
{
    sdg_error err;
    int w = 64, h = 64;
    sdg_image *init = gradient_image(w, h);
    sdg_image *mask = sdg_image_new(w, h, 1);
    for (int y = 16; y < 40; y++)
        for (int x = 20; x < 52; x++)
            mask->data[y * w + x] = 1.0f;
    sdg_gen_params gp = small_params();
    gp.init_image = init;
    gp.mask = mask;
    gp.strength = 0.8f;
    gp.inpaint_blend = blend;
    sdg_ctx *ctx = sdg_ctx_new(mdl, 2, &err);
    sdg_result *res = NULL;
    if (sdg_generate(ctx, &gp, &res, &err) != SDG_OK)
        g_error("%s", err.message);
    int changed_inside = 0;
    for (int i = 0; i < w * h; i++)
        for (int c = 0; c < 3; c++) {
            float a = res->images[0]->data[i * 3 + c], b = init->data[i * 3 + c];
            if (mask->data[i] == 0.0f)
                g_assert_cmpfloat(a, ==, b);
            else
                changed_inside += a != b;
        }
    g_assert_cmpint(changed_inside, >, 0);
    sdg_ctx_free(ctx);
    sdg_image_free(init);
    sdg_image_free(mask);
    return res;
}

static bool same_latents(const sdg_result *a, const sdg_result *b)
{
    size_t n = (size_t)a->latent_channels * a->latent_height * a->latent_width;
    return memcmp(a->latents, b->latents, n * sizeof(float)) == 0;
}

static void test_inpaint(void)
{
    // A 4-channel model always blends: the flag changes nothing.
    sdg_result *blended = inpaint(model, true), *flagged = inpaint(model, false);
    g_assert_true(same_latents(blended, flagged));
    sdg_result_free(blended);
    sdg_result_free(flagged);
}

// A 9-channel inpainting model: the tiny model with conv_in widened to 9 inputs.
static void test_inpaint_9ch(void)
{
    sdg_error err;
    char *src = golden_path(TINY);
    st_file *f = st_open(src, &err);
    g_assert_nonnull(f);
    int n = st_count(f);
    st_write_tensor *ts = g_new0(st_write_tensor, n);
    float **bufs = g_new0(float *, n);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_at(f, i);
        ts[i].name = t->name;
        ts[i].n_dims = t->n_dims;
        memcpy(ts[i].shape, t->shape, sizeof t->shape);
        bool is_int = t->dtype == ST_I64 || t->dtype == ST_I32;
        ts[i].dtype = is_int ? ST_I32 : ST_F32;
        bool widen = strcmp(t->name, "model.diffusion_model.input_blocks.0.0.weight") == 0;
        size_t count = (size_t)t->n_elements;
        if (widen) {
            ts[i].shape[1] = 9;
            count = count / 4 * 9;
        }
        bufs[i] = g_new0(float, count ? count : 1);
        if (is_int) {
            g_assert_cmpint(st_read_i32(f, t, (int32_t *)bufs[i], &err), ==, SDG_OK);
        } else if (widen) {
            float *w4 = g_new(float, t->n_elements);
            g_assert_cmpint(st_read_f32(f, t, w4, &err), ==, SDG_OK);
            int cout = (int)t->shape[0];
            for (int o = 0; o < cout; o++)
                for (int c = 0; c < 9; c++)
                    for (int k = 0; k < 9; k++)
                        bufs[i][((size_t)o * 9 + c) * 9 + k] =
                            c < 4 ? w4[((size_t)o * 4 + c) * 9 + k] : 0.05f * (float)((o + c + k) % 5 - 2);
            g_free(w4);
        } else {
            g_assert_cmpint(st_read_f32(f, t, bufs[i], &err), ==, SDG_OK);
        }
        ts[i].data = bufs[i];
    }
    char *dir = g_dir_make_tmp("sdg-test-XXXXXX", NULL);
    char *path = g_build_filename(dir, "tiny-inpainting.safetensors", NULL);
    g_assert_cmpint(st_write(path, ts, n, NULL, &err), ==, SDG_OK);
    for (int i = 0; i < n; i++)
        g_free(bufs[i]);
    g_free(bufs);
    g_free(ts);
    st_close(f);
    g_free(src);

    sdg_model *m9 = load(path, &err);
    if (!m9)
        g_error("%s", err.message);
    sdg_model_info info;
    sdg_model_get_info(m9, &info);
    g_assert_cmpint(info.unet_in_channels, ==, 9);
    // Both ways keep the outside; the blend changes what the hole gets.
    sdg_result *blended = inpaint(m9, true), *unblended = inpaint(m9, false);
    g_assert_false(same_latents(blended, unblended));
    sdg_result_free(blended);
    sdg_result_free(unblended);
    // Text-to-image still works on an inpainting model (everything masked).
    sdg_gen_params gp = small_params();
    sdg_ctx *ctx = sdg_ctx_new(m9, 2, &err);
    sdg_result *res = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_OK);
    sdg_result_free(res);
    sdg_ctx_free(ctx);
    sdg_model_free(m9);
    g_unlink(path);
    g_rmdir(dir);
    g_free(path);
    g_free(dir);
}

static void test_bad_requests(void)
{
    sdg_error err;
    sdg_result *res = NULL;
    sdg_ctx *ctx = sdg_ctx_new(model, 1, &err);
    sdg_image *img = gradient_image(64, 64);
    sdg_image *mask = sdg_image_new(32, 64, 1);
    sdg_image *gray = sdg_image_new(64, 64, 1);
    for (int k = 0; k < 14; k++) {
        sdg_gen_params gp = small_params();
        switch (k) {
        case 0: gp.width = 100; break;
        case 1: gp.width = 0; break;
        case 2: gp.height = 100000; break;
        case 3: gp.steps = 0; break;
        case 4: gp.steps = 5000; break;
        case 5: gp.init_image = img; gp.strength = 1.5f; break;
        case 6: gp.init_image = img; gp.strength = -0.1f; break;
        case 7: gp.init_image = img; gp.mask = mask; break;
        case 8: gp.mask = gray; break;
        case 9: gp.prompt = "bad \xff\xfe utf-8"; break;
        case 10: gp.batch_count = 0; break;
        case 11: gp.clip_skip = 7; break;
        case 12: gp.init_image = gray; break;
        case 13: gp.model_sampling = SDG_MODEL_SAMPLING_COUNT; break;
        }
        g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_ERR_INVALID_ARG);
        g_assert_null(res);
        g_assert_cmpstr(err.message, !=, "");
        printf("# bad request %d: %s\n", k, err.message);
    }
    sdg_gen_params gp = small_params();
    gp.negative_prompt = "\xc3\x28";
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_ERR_INVALID_ARG);
    g_assert_cmpint(sdg_generate(NULL, &gp, &res, &err), ==, SDG_ERR_INVALID_ARG);
    sdg_image_free(img);
    sdg_image_free(mask);
    sdg_image_free(gray);
    sdg_ctx_free(ctx);
}

static void test_bad_models(void)
{
    sdg_error err;
    g_assert_null(load("/nonexistent/model.safetensors", &err));
    g_assert_cmpint(err.status, ==, SDG_ERR_IO);
    g_assert_nonnull(strstr(err.message, "/nonexistent/model.safetensors"));

    // Truncated copy of a real model.
    char *src = golden_path(TINY);
    char *data;
    gsize len;
    g_assert_true(g_file_get_contents(src, &data, &len, NULL));
    char *dir = g_dir_make_tmp("sdg-test-XXXXXX", NULL);
    char *path = g_build_filename(dir, "cut.safetensors", NULL);
    g_assert_true(g_file_set_contents(path, data, (gssize)(len / 2), NULL));
    g_assert_null(load(path, &err));
    g_assert_cmpint(err.status, ==, SDG_ERR_FORMAT);
    g_assert_nonnull(strstr(err.message, "cut.safetensors"));
    printf("# truncated: %s\n", err.message);
    g_unlink(path);
    g_free(path);
    g_free(data);

    // A vocabulary that is not there: the message names the file needed.
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = "/nonexistent/vocab.json";
    g_assert_null(sdg_model_load(src, &mp, &err));
    g_assert_nonnull(strstr(err.message, "vocab"));
    printf("# no vocabulary: %s\n", err.message);
    g_free(src);
    g_rmdir(dir);
    g_free(dir);
}

// ---------------------------------------------------------------------------------------------
// Families: what a file is, what it predicts, files that are none of ours

// The metadata JSON of tiny-sd2's configs (the head counts its shapes cannot tell) plus extra
// "key": "value" pairs (NULL-terminated list of key, value).
static char *sd2_metadata(const char *const *pairs)
{
    st_file *f = golden_open(SD2);
    GString *json = g_string_new("{");
    static const char *const keep[] = { "unet_config", "open_clip_config" };
    for (size_t i = 0; i < G_N_ELEMENTS(keep); i++) {
        char *v = g_strescape(st_metadata(f, keep[i]), NULL);
        g_string_append_printf(json, "%s\"%s\": \"%s\"", i ? ", " : "", keep[i], v);
        g_free(v);
    }
    for (int i = 0; pairs && pairs[i]; i += 2)
        g_string_append_printf(json, ", \"%s\": \"%s\"", pairs[i], pairs[i + 1]);
    g_string_append_c(json, '}');
    st_close(f);
    return g_string_free(json, FALSE);
}

// Loads a copy of tiny-sd2 with the given metadata pairs and extra marker keys (and a sidecar
// yaml when not NULL); returns the model (NULL on failure, err filled).
static sdg_model *load_sd2_variant(const char *dir, const char *const *pairs,
                                   const char *const *extras, const char *yaml,
                                   sdg_prediction option, sdg_error *err)
{
    char *path = g_build_filename(dir, "variant.safetensors", NULL);
    char *yaml_path = g_build_filename(dir, "variant.yaml", NULL);
    char *meta = sd2_metadata(pairs);
    const char *srcs[] = { SD2 };
    golden_write_mixed(path, srcs, 1, NULL, NULL, extras, meta);
    g_unlink(yaml_path);
    if (yaml)
        g_assert_true(g_file_set_contents(yaml_path, yaml, -1, NULL));
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    mp.prediction = option;
    sdg_model *m = sdg_model_load(path, &mp, err);
    g_unlink(path);
    g_unlink(yaml_path);
    g_free(meta);
    g_free(path);
    g_free(yaml_path);
    return m;
}

static void expect_prediction(sdg_model *m, const sdg_error *err, sdg_prediction want,
                              const char *source)
{
    if (!m)
        g_error("%s", err->message);
    sdg_model_info info;
    sdg_model_get_info(m, &info);
    printf("# %s: %s\n", sdg_prediction_name(info.prediction), info.prediction_source);
    g_assert_cmpint(info.prediction, ==, want);
    if (!strstr(info.prediction_source, source))
        g_error("prediction source '%s' lacks '%s'", info.prediction_source, source);
    sdg_model_free(m);
}

static void test_prediction_sources(void)
{
    char *dir = g_dir_make_tmp("sdg-pred-XXXXXX", NULL);
    sdg_error err;
    // Each way a file can say it, in the order they are looked at.
    const char *v_pred[] = { "v_pred", NULL };
    const char *spec_eps[] = { "modelspec.prediction_type", "epsilon", NULL };
    const char *param_v[] = { "parameterization", "v", NULL };
    expect_prediction(load_sd2_variant(dir, spec_eps, v_pred, NULL, SDG_PREDICTION_AUTO, &err),
                      &err, SDG_PREDICTION_V, "key v_pred");
    expect_prediction(load_sd2_variant(dir, spec_eps, NULL, NULL, SDG_PREDICTION_AUTO, &err), &err,
                      SDG_PREDICTION_EPS, "metadata modelspec.prediction_type");
    expect_prediction(load_sd2_variant(dir, param_v, NULL, NULL, SDG_PREDICTION_AUTO, &err), &err,
                      SDG_PREDICTION_V, "metadata parameterization");
    expect_prediction(load_sd2_variant(dir, NULL, NULL,
                                       "model:\n  params:\n    parameterization: \"v\"\n",
                                       SDG_PREDICTION_AUTO, &err),
                      &err, SDG_PREDICTION_V, "sidecar variant.yaml");
    // A yaml without the line is ldm's default, eps.
    expect_prediction(load_sd2_variant(dir, NULL, NULL, "model:\n  params:\n", SDG_PREDICTION_AUTO,
                                       &err), &err, SDG_PREDICTION_EPS, "sidecar variant.yaml");
    // Nothing said: A1111's test evaluation decides (either answer; it is a heuristic for real
    // weights), the same way every time.
    sdg_model *m = load_sd2_variant(dir, NULL, NULL, NULL, SDG_PREDICTION_AUTO, &err);
    g_assert_nonnull(m);
    sdg_model_info info;
    sdg_model_get_info(m, &info);
    sdg_prediction first = info.prediction;
    sdg_model_free(m);
    expect_prediction(load_sd2_variant(dir, NULL, NULL, NULL, SDG_PREDICTION_AUTO, &err), &err,
                      first, "test evaluation");
    // The option wins, and says what it overrode.
    expect_prediction(load_sd2_variant(dir, param_v, NULL, NULL, SDG_PREDICTION_EPS, &err), &err,
                      SDG_PREDICTION_EPS, "option, overriding metadata parameterization");
    expect_prediction(load_sd2_variant(dir, NULL, v_pred, NULL, SDG_PREDICTION_V, &err), &err,
                      SDG_PREDICTION_V, "option");
    // Statements that are neither.
    const char *bad[] = { "parameterization", "x0", NULL };
    g_assert_null(load_sd2_variant(dir, bad, NULL, NULL, SDG_PREDICTION_AUTO, &err));
    printf("# %s\n", err.message);
    g_assert_cmpint(err.status, ==, SDG_ERR_FORMAT);
    g_assert_nonnull(strstr(err.message, "x0"));
    g_assert_null(load_sd2_variant(dir, NULL, NULL, "parameterization: x0\n", SDG_PREDICTION_AUTO,
                                   &err));
    g_assert_cmpint(err.status, ==, SDG_ERR_FORMAT);
    g_assert_nonnull(strstr(err.message, "variant.yaml"));
    // A ztsnr key: the schedule is rescaled to zero terminal SNR, and a run stays finite.
    const char *ztsnr[] = { "v_pred", "ztsnr", NULL };
    m = load_sd2_variant(dir, NULL, ztsnr, NULL, SDG_PREDICTION_AUTO, &err);
    g_assert_nonnull(m);
    sdg_model_get_info(m, &info);
    g_assert_true(info.zero_terminal_snr);
    g_assert_cmpint(info.prediction, ==, SDG_PREDICTION_V);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err);
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = "a lighthouse";
    gp.width = gp.height = 64;
    gp.steps = 3;
    sdg_result *res = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_OK);
    for (size_t i = 0; i < (size_t)4 * 8 * 8; i++)
        g_assert_true(isfinite(res->latents[i]));
    sdg_result_free(res);
    sdg_ctx_free(ctx);
    sdg_model_free(m);
    g_rmdir(dir);
    g_free(dir);
}

// Renames for test_family_errors' mixed files (user: which mix).
static char *mix_rename(int src, const char *name, void *user)
{
    const char *mix = user;
    if (strcmp(mix, "two-families") == 0) {
        // the first file's text encoders and VAE, the second's UNet
        bool unet = g_str_has_prefix(name, "model.diffusion_model.");
        return (src == 0) != unet ? g_strdup(name) : NULL;
    }
    if (strcmp(mix, "refiner") == 0) {
        // bigG alone under embedders.0 and a label_emb: SDXL's refiner layout
        if (g_str_has_prefix(name, "conditioner.embedders.0."))
            return NULL;
        if (g_str_has_prefix(name, "conditioner.embedders.1."))
            return g_strconcat("conditioner.embedders.0.", name + 24, NULL);
        return g_strdup(name);
    }
    if (strcmp(mix, "no-unet") == 0)
        return g_str_has_prefix(name, "model.diffusion_model.") ? NULL : g_strdup(name);
    return g_strdup(name);
}

static void expect_refused(const char *dir, const char *const *srcs, int n, const char *mix,
                           const char *const *extras, const char *meta, sdg_status status,
                           const char *needle)
{
    char *path = g_build_filename(dir, "mixed.safetensors", NULL);
    golden_write_mixed(path, srcs, n, mix_rename, (void *)mix, extras, meta);
    sdg_error err;
    sdg_model *m = load(path, &err);
    g_assert_null(m);
    printf("# %s: %s\n", mix, err.message);
    g_assert_cmpint(err.status, ==, status);
    g_assert_nonnull(strstr(err.message, "mixed.safetensors"));
    if (!strstr(err.message, needle))
        g_error("message '%s' lacks '%s'", err.message, needle);
    g_unlink(path);
    g_free(path);
}

static void test_family_errors(void)
{
    char *dir = g_dir_make_tmp("sdg-family-XXXXXX", NULL);
    const char *xl_sd1[] = { SDXL, TINY }, *sd1_xl[] = { TINY, SDXL }, *xl[] = { SDXL };
    char *xl_meta = NULL;
    {
        st_file *f = golden_open(SDXL);
        GString *json = g_string_new("{");
        static const char *const keep[] = { "unet_config", "open_clip_config", "clip_l_config" };
        for (size_t i = 0; i < G_N_ELEMENTS(keep); i++) {
            char *v = g_strescape(st_metadata(f, keep[i]), NULL);
            g_string_append_printf(json, "%s\"%s\": \"%s\"", i ? ", " : "", keep[i], v);
            g_free(v);
        }
        g_string_append_c(json, '}');
        xl_meta = g_string_free(json, FALSE);
        st_close(f);
    }
    // Parts of two families in one file.
    expect_refused(dir, xl_sd1, 2, "two-families", NULL, xl_meta, SDG_ERR_SHAPE,
                   "mixes the parts of two families");
    expect_refused(dir, sd1_xl, 2, "two-families", NULL, xl_meta, SDG_ERR_SHAPE,
                   "mixes the parts of two families");
    // Families the engine does not run are named.
    expect_refused(dir, xl, 1, "refiner", NULL, xl_meta, SDG_ERR_UNSUPPORTED, "SDXL refiner");
    const char *flux[] = { "double_blocks.0.img_attn.qkv.weight", NULL };
    expect_refused(dir, xl, 1, "flux", flux, NULL, SDG_ERR_UNSUPPORTED, "Flux");
    const char *sd3[] = { "model.diffusion_model.joint_blocks.0.context_block.attn.qkv.weight",
                          NULL };
    expect_refused(dir, xl, 1, "sd3", sd3, NULL, SDG_ERR_UNSUPPORTED, "SD 3");
    // A text encoder without a UNet; a config that is not JSON.
    expect_refused(dir, xl, 1, "no-unet", NULL, xl_meta, SDG_ERR_SHAPE, "no UNet");
    expect_refused(dir, xl, 1, "bad-config", NULL, "{\"unet_config\": \"{num_head_channels\"}",
                   SDG_ERR_FORMAT, "unet_config");
    g_free(xl_meta);
    g_rmdir(dir);
    g_free(dir);
}

// Token ids as each family's first encoder reads them: SD 2.x's open_clip pads with 0, SDXL's
// CLIP-L with <|endoftext|> (its bigG's padding is 0 again: the whole-run goldens see it).
static void test_family_tokens(void)
{
    static const struct {
        const char *model, *ref, *ids;
        int n;
    } cases[] = {
        { SD2, SD2_REF, "tok.ids", 3 },
        { SDXL, SDXL_REF, "tok.ids_clip_l", 2 },
    };
    for (size_t c = 0; c < G_N_ELEMENTS(cases); c++) {
        sdg_error err;
        sdg_model *m = load_with(cases[c].model, SDG_PREDICTION_AUTO, &err);
        g_assert_nonnull(m);
        st_file *rf = golden_open(cases[c].ref);
        int32_t *want = golden_i32(rf, cases[c].ids, NULL);
        for (int i = 0; i < cases[c].n; i++) {
            char *prompt = golden_prompt(rf, i);
            int32_t ids[77];
            g_assert_cmpint(sdg_model_tokenize(m, prompt, ids), >=, 0);
            g_assert_cmpmem(ids, sizeof ids, want + 77 * i, sizeof ids);
            g_free(prompt);
        }
        g_free(want);
        st_close(rf);
        sdg_model_free(m);
    }
}

static void test_sdxl_size_conditioning(void)
{
    sdg_error err;
    sdg_model *m = load_with(SDXL, SDG_PREDICTION_AUTO, &err);
    g_assert_nonnull(m);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err);
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = "a crane";
    gp.width = gp.height = 64;
    gp.steps = 2;
    gp.seed = 3;
    sdg_result *a = NULL, *b = NULL, *c = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &a, &err), ==, SDG_OK);
    // 0 means the picture's size: the same run when given explicitly.
    gp.original_width = gp.original_height = gp.target_width = gp.target_height = 64;
    g_assert_cmpint(sdg_generate(ctx, &gp, &b, &err), ==, SDG_OK);
    g_assert_cmpmem(a->latents, 4 * 8 * 8 * sizeof(float), b->latents, 4 * 8 * 8 * sizeof(float));
    // Another original size changes the picture.
    gp.original_width = 1024;
    g_assert_cmpint(sdg_generate(ctx, &gp, &c, &err), ==, SDG_OK);
    g_assert_true(memcmp(a->latents, c->latents, 4 * 8 * 8 * sizeof(float)) != 0);
    // A Turbo-style run: 1 step, no guidance (one UNet pass, the cond side only).
    {
        sdg_gen_params t = sdg_gen_default_params();
        t.prompt = "a crane";
        t.width = t.height = 64;
        t.steps = 1;
        t.cfg_scale = 1.0f;
        t.sampler = SDG_SAMPLER_EULER_A;
        sdg_result *r = NULL;
        g_assert_cmpint(sdg_generate(ctx, &t, &r, &err), ==, SDG_OK);
        for (size_t i = 0; i < (size_t)4 * 8 * 8; i++)
            g_assert_true(isfinite(r->latents[i]));
        sdg_result_free(r);
    }
    // Negative sizes or crops are refused with a sentence.
    gp.crop_top = -8;
    sdg_result *d = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &d, &err), ==, SDG_ERR_INVALID_ARG);
    printf("# %s\n", err.message);
    g_assert_nonnull(strstr(err.message, "size conditioning"));
    g_assert_null(d);
    sdg_result_free(a);
    sdg_result_free(b);
    sdg_result_free(c);
    sdg_ctx_free(ctx);
    sdg_model_free(m);
}

// SDXL inpainting checkpoints (a 9-channel UNet) are planned like SD1 inpainting models: the
// full-size layout with input_blocks.0.0.weight [320, 9, 3, 3], header only, sized for an
// inpainting run at the native size.
static void test_sdxl_inpaint_layout(void)
{
    char *dir = g_dir_make_tmp("sdg-xl9-XXXXXX", NULL);
    char *src = golden_path("manifests/sdxl-base.tsv");
    char *text = NULL;
    g_assert_true(g_file_get_contents(src, &text, NULL, NULL));
    const char *from = "model.diffusion_model.input_blocks.0.0.weight\tF32\t320,4,3,3";
    char *at = strstr(text, from);
    g_assert_nonnull(at);
    at[strlen(from) - 5] = '9';
    char *manifest = g_build_filename(dir, "sdxl-inpaint.tsv", NULL);
    char *model = g_build_filename(dir, "sdxl-inpaint.safetensors", NULL);
    g_assert_true(g_file_set_contents(manifest, text, -1, NULL));
    golden_write_sparse(manifest, model, NULL, NULL);
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    mp.header_only = true;
    sdg_error err;
    sdg_model *m = sdg_model_load(model, &mp, &err);
    if (!m)
        g_error("%s", err.message);
    sdg_model_info info;
    sdg_model_get_info(m, &info);
    g_assert_cmpint(info.family, ==, SDG_FAMILY_SDXL);
    g_assert_cmpint(info.unet_in_channels, ==, 9);
    g_assert_cmpint(info.native_size, ==, 1024);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err);
    sdg_image *img = sdg_image_new(1024, 1024, 3), *mask = sdg_image_new(1024, 1024, 1);
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = "a cat";
    gp.init_image = img;
    gp.mask = mask;
    sdg_memory_estimate e;
    sdg_status st = sdg_ctx_estimate(ctx, &gp, &e, &err);
    g_assert_true(st == SDG_OK || st == SDG_ERR_NOMEM);
    printf("# SDXL inpainting 1024x1024: weights %.2f GB + working %.2f GB\n",
           (double)e.weights_bytes / 1e9, (double)e.working_bytes / 1e9);
    g_assert_cmpuint(e.weights_bytes, >, 5000000000u);
    sdg_image_free(img);
    sdg_image_free(mask);
    sdg_ctx_free(ctx);
    sdg_model_free(m);
    golden_remove_tree(dir);
    g_free(dir);
    g_free(manifest);
    g_free(model);
    g_free(text);
    g_free(src);
}

// The TAESD decoder in place of the VAE: the picture is TAESD's decode of the run's own final
// latent (the network itself is checked against its golden in test-taesd); without a TAESD the
// request is refused with a sentence saying what to install.
static void taesd_run(sdg_exec *ex, const void *args)
{
    const float *const *a = args;   // { latent, image, model }
    taesd_decode(ex, ((const sdg_model *)a[2])->taesd, a[0], 1, 8, 8, (float *)a[1]);
}

// Records the size of the last preview and that its values are pictures ([0, 1]).
static bool preview_size(int step, int total, const sdg_image *preview, void *user)
{
    (void)step;
    (void)total;
    int *wh = user;
    if (preview) {
        wh[0] = preview->width;
        wh[1] = preview->height;
        for (int i = 0; i < preview->width * preview->height * 3; i++)
            g_assert_true(preview->data[i] >= 0.0f && preview->data[i] <= 1.0f);
    }
    return true;
}

static void test_taesd_decoder(void)
{
    sdg_error err;
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    char *tiny = golden_path(TINY), *taesd = golden_path("golden/taesd-random.safetensors");
    mp.taesd_path = taesd;
    sdg_model *m = sdg_model_load(tiny, &mp, &err);
    if (!m)
        g_error("%s", err.message);
    sdg_model_info info;
    sdg_model_get_info(m, &info);
    g_assert_true(info.has_taesd);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err);
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = "a lighthouse";
    gp.width = gp.height = 64;
    gp.steps = 2;
    gp.decoder = SDG_DECODER_TAESD;
    gp.precision = SDG_PRECISION_EXACT;   // as golden_run_measured runs it
    sdg_result *res = NULL;
    int wh[2] = { 0, 0 };
    gp.progress = preview_size;
    gp.progress_data = wh;
    gp.preview = true;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_OK);
    // With a TAESD decoder the preview is its full-size picture, not the 8x8 latent projection.
    g_assert_cmpint(wh[0], ==, 64);
    g_assert_cmpint(wh[1], ==, 64);
    float *planar = g_new(float, 3 * 64 * 64);
    const void *args[3] = { res->latents, planar, m };
    golden_run_measured(taesd_run, args, NULL, 2);
    float *want = g_new(float, 3 * 64 * 64);
    for (int i = 0; i < 64 * 64; i++)
        for (int c = 0; c < 3; c++) {
            float v = planar[c * 64 * 64 + i];
            want[i * 3 + c] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        }
    // The pipeline keeps pictures in [-1, 1] until the end: 2v - 1 and back rounds by an ulp.
    golden_check("TAESD picture", res->images[0]->data, want, 3 * 64 * 64,
                 1e-7);   // measured 1.5e-8
    sdg_result_free(res);
    sdg_ctx_free(ctx);
    sdg_model_free(m);
    // No TAESD beside the tiny model or in the models folder.
    mp.taesd_path = NULL;
    mp.models_dir = "/nonexistent";
    m = sdg_model_load(tiny, &mp, &err);
    g_assert_nonnull(m);
    ctx = sdg_ctx_new(m, 2, &err);
    res = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_ERR_INVALID_ARG);
    printf("# %s\n", err.message);
    g_assert_nonnull(strstr(err.message, "taesd_decoder.safetensors"));
    sdg_ctx_free(ctx);
    sdg_model_free(m);
    g_free(planar);
    g_free(want);
    g_free(tiny);
    g_free(taesd);
}

// TAESD as the encoder of image-to-image: with strength 0 the run's latent is the init image's
// encoding, which must be TAESD's (no posterior, no scale) when the model has its encoder: from
// a combined file, or the released taesd_encoder.safetensors beside taesd_decoder.safetensors;
// with a decoder alone the VAE encodes, as with the VAE decoder.
static void taesd_encode_run(sdg_exec *ex, const void *args)
{
    const float *const *a = args;   // { image, latent, model }
    taesd_encode(ex, ((const sdg_model *)a[2])->taesd, a[0], 1, 64, 64, (float *)a[1]);
}

static char *taesd_part(int src, const char *name, void *user)
{
    (void)src;
    const char *want = user;   // "decoder." or "encoder."
    return g_str_has_prefix(name, want) ? g_strdup(name + strlen(want)) : NULL;
}

static sdg_result *img2img_taesd(const char *taesd_path, sdg_decoder decoder, bool want_encoder,
                                 const sdg_image *init, sdg_model **keep)
{
    sdg_error err;
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    mp.taesd_path = taesd_path;
    mp.models_dir = "/nonexistent";
    char *tiny = golden_path(TINY);
    sdg_model *m = sdg_model_load(tiny, &mp, &err);
    g_free(tiny);
    if (!m)
        g_error("%s", err.message);
    sdg_model_info info;
    sdg_model_get_info(m, &info);
    g_assert_true(info.has_taesd);
    g_assert_cmpint(info.has_taesd_encoder, ==, want_encoder);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err);
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = "a lighthouse";
    gp.init_image = init;
    gp.strength = 0.0f;
    gp.steps = 2;
    gp.decoder = decoder;
    gp.precision = SDG_PRECISION_EXACT;
    sdg_result *res = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_OK);
    sdg_ctx_free(ctx);
    if (keep)
        *keep = m;
    else
        sdg_model_free(m);
    return res;
}

static void test_taesd_encoder(void)
{
    sdg_image *init = sdg_image_new(64, 64, 3);
    for (int i = 0; i < 64 * 64 * 3; i++)
        init->data[i] = (float)((i * 37) % 101) / 100.0f;
    char *combined = golden_path("golden/taesd-random.safetensors");
    sdg_model *m = NULL;
    sdg_result *a = img2img_taesd(combined, SDG_DECODER_TAESD, true, init, &m);
    // TAESD's own encoding of the picture ([0, 1], planar).
    float *planar = g_new(float, 3 * 64 * 64), *want = g_new(float, 4 * 8 * 8);
    for (int i = 0; i < 64 * 64; i++)
        for (int c = 0; c < 3; c++)
            planar[c * 64 * 64 + i] = init->data[i * 3 + c];
    const void *args[3] = { planar, want, m };
    golden_run_measured(taesd_encode_run, args, NULL, 2);
    golden_check("TAESD-encoded init latent", a->latents, want, 4 * 8 * 8,
                 5e-6);   // measured 1.0e-6: [0,1] -> [-1,1] -> [0,1] rounds the input
    sdg_model_free(m);

    // The released pair, as two files.
    char *dir = golden_tmpdir("taesd-pair");
    char *dec = g_build_filename(dir, "taesd_decoder.safetensors", NULL);
    char *enc = g_build_filename(dir, "taesd_encoder.safetensors", NULL);
    const char *src[1] = { "golden/taesd-random.safetensors" };
    golden_write_mixed(dec, src, 1, taesd_part, "decoder.", NULL, NULL);
    golden_write_mixed(enc, src, 1, taesd_part, "encoder.", NULL, NULL);
    sdg_result *b = img2img_taesd(dec, SDG_DECODER_TAESD, true, init, NULL);
    g_assert_cmpmem(a->latents, 4 * 8 * 8 * sizeof(float), b->latents, 4 * 8 * 8 * sizeof(float));
    // A decoder alone: the VAE encodes, the same latent as a VAE run.
    g_assert_cmpint(g_unlink(enc), ==, 0);
    sdg_result *c = img2img_taesd(dec, SDG_DECODER_TAESD, false, init, NULL);
    sdg_result *d = img2img_taesd(dec, SDG_DECODER_VAE, false, init, NULL);
    g_assert_cmpmem(c->latents, 4 * 8 * 8 * sizeof(float), d->latents, 4 * 8 * 8 * sizeof(float));
    g_assert_true(memcmp(a->latents, c->latents, 4 * 8 * 8 * sizeof(float)) != 0);
    sdg_result_free(a);
    sdg_result_free(b);
    sdg_result_free(c);
    sdg_result_free(d);
    g_free(planar);
    g_free(want);
    g_free(dec);
    g_free(enc);
    g_free(combined);
    golden_tmpdir_remove(dir);
    sdg_image_free(init);
}

// The hires fix: PyTorch's bilinear upscale on a known case, then both passes against the same
// passes run by hand (the first at the base size; per picture the upscaled latent, or the
// resampled picture, as the second pass's start, seed + i), and the refusals.
static sdg_image *nearest_resize(const sdg_image *img, int w, int h, void *user)
{
    int *calls = user;
    (*calls)++;
    sdg_image *out = sdg_image_new(w, h, 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                out->data[((size_t)y * w + x) * 3 + c] =
                    img->data[((size_t)(y * img->height / h) * img->width + x * img->width / w) * 3 + c];
    return out;
}

static bool count_steps(int step, int total, const sdg_image *preview, void *user)
{
    (void)preview;
    int *last = user;   // { last step, total, calls, went back }
    if (step < last[0])
        last[3] = 1;
    last[0] = step;
    last[1] = total;
    last[2]++;
    return true;
}

static void test_hires_fix(void)
{
    // F.interpolate([[1, 2], [3, 4]], size (4, 4), mode="bilinear", align_corners=False)
    const float src[4] = { 1, 2, 3, 4 };
    const float want[16] = { 1, 1.25f, 1.75f, 2, 1.5f, 1.75f, 2.25f, 2.5f,
                             2.5f, 2.75f, 3.25f, 3.5f, 3, 3.25f, 3.75f, 4 };
    float got[16];
    sdg__upscale_bilinear(src, 1, 2, 2, got, 4, 4);
    g_assert_cmpmem(got, sizeof got, want, sizeof want);

    sdg_error err;
    for (int mode = 0; mode < 2; mode++) {
        sdg_ctx *ctx = sdg_ctx_new(model, 2, &err);
        sdg_gen_params gp = small_params();
        gp.batch_count = 2;
        gp.sampler = SDG_SAMPLER_EULER_A;
        gp.hires_width = 96;
        gp.hires_height = 64;
        gp.hires_steps = 4;
        gp.hires_strength = 0.5f;
        gp.hires_upscale = mode ? SDG_HIRES_PIXEL : SDG_HIRES_LATENT;
        int calls = 0, steps[4] = { 0, 0, 0, 0 };
        gp.hires_resize = nearest_resize;
        gp.hires_resize_data = &calls;
        gp.progress = count_steps;
        gp.progress_data = steps;
        sdg_result *res = NULL;
        g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_OK);
        g_assert_cmpint(res->n_images, ==, 2);
        g_assert_cmpint(res->images[1]->width, ==, 96);
        g_assert_cmpint(res->images[1]->height, ==, 64);
        g_assert_cmpint(res->latent_width, ==, 12);
        g_assert_cmpint(calls, ==, mode ? 2 : 0);
        // 3 steps x 2, then 0.5 x 4 = 2 steps x 2, counted to the end, never backwards
        g_assert_cmpint(steps[1], ==, 10);
        g_assert_cmpint(steps[0], ==, 10);
        g_assert_cmpint(steps[3], ==, 0);

        // By hand.
        sdg_gen_params first = small_params();
        first.batch_count = 2;
        sdg_result *r1 = NULL;
        g_assert_cmpint(sdg_generate(ctx, &first, &r1, &err), ==, SDG_OK);
        for (int i = 0; i < 2; i++) {
            sdg_gen_params q = small_params();
            q.width = 96;
            q.height = 64;
            q.steps = 4;
            q.strength = 0.5f;
            q.seed = first.seed + (uint64_t)i;
            float up[4 * 8 * 12];
            sdg_image *big = NULL;
            if (mode) {
                big = nearest_resize(r1->images[i], 96, 64, &calls);
                q.init_image = big;
            } else {
                sdg__upscale_bilinear(r1->latents + (size_t)i * 4 * 6 * 8, 4, 6, 8, up, 8, 12);
                ctx->init_latent = up;
            }
            sdg_result *r2 = NULL;
            g_assert_cmpint(sdg_generate(ctx, &q, &r2, &err), ==, SDG_OK);
            ctx->init_latent = NULL;
            g_assert_cmpmem(r2->latents, sizeof up, res->latents + (size_t)i * 4 * 8 * 12,
                            sizeof up);
            g_assert_cmpmem(r2->images[0]->data, 96 * 64 * 3 * sizeof(float),
                            res->images[i]->data, 96 * 64 * 3 * sizeof(float));
            sdg_result_free(r2);
            sdg_image_free(big);
        }
        sdg_result_free(r1);
        sdg_result_free(res);
        sdg_ctx_free(ctx);
    }

    static const struct {
        int w, h, upscale;
        float strength;
        bool init, resize;
        const char *says;
    } bad[] = {
        { 32, 64, 0, 0.7f, false, false, "from the picture's size" },
        { 100, 64, 0, 0.7f, false, false, "multiples of 8" },
        { 96, 64, 1, 0.7f, false, false, "needs a resampler" },
        { 96, 64, 0, 1.5f, false, false, "between 0 and 1" },
        { 96, 64, 0, 0.7f, true, false, "for text-to-image" },
        { 96, 64, 7, 0.7f, false, false, "unknown hires upscale" },
    };
    sdg_image *init = sdg_image_new(64, 48, 3);
    for (size_t k = 0; k < G_N_ELEMENTS(bad); k++) {
        sdg_gen_params gp = small_params();
        gp.hires_width = bad[k].w;
        gp.hires_height = bad[k].h;
        gp.hires_upscale = (sdg_hires_upscale)bad[k].upscale;
        gp.hires_strength = bad[k].strength;
        gp.init_image = bad[k].init ? init : NULL;
        generate(1, &gp, SDG_ERR_INVALID_ARG, &err);
        g_test_message("%s", err.message);
        g_assert_nonnull(strstr(err.message, bad[k].says));
    }
    sdg_image_free(init);
    sdg_hires_upscale u;
    g_assert_true(sdg_hires_upscale_from_name("pixel", &u) && u == SDG_HIRES_PIXEL);
    g_assert_cmpstr(sdg_hires_upscale_name(SDG_HIRES_LATENT), ==, "latent");
}

// Recommendations by name: a Turbo or LCM checkpoint, SDXL-Lightning's steps from its name, an
// LCM-LoRA by path or by prompt tag (winning over the model's), nothing for ordinary files.
static sdg_model *load_as(const char *dir, const char *relpath, const char *name)
{
    char *src = golden_path(relpath), *dst = g_build_filename(dir, name, NULL);
    g_assert_cmpint(symlink(src, dst), ==, 0);
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    mp.header_only = true;
    sdg_error err;
    sdg_model *m = sdg_model_load(dst, &mp, &err);
    if (!m)
        g_error("%s", err.message);
    g_free(src);
    g_free(dst);
    return m;
}

static void test_recommend(void)
{
    char *dir = golden_tmpdir("recommend");
    sdg_recommendation r;
    sdg_gen_params d = sdg_gen_default_params();
    g_assert_null(sdg_recommend(model, NULL, &r));   // tiny-sd1: ordinary
    g_assert_cmpint(r.steps, ==, d.steps);
    g_assert_cmpint(r.sampler, ==, d.sampler);

    sdg_model *m = load_as(dir, TINY, "SD_Turbo.safetensors");
    g_assert_cmpstr(sdg_recommend(m, NULL, &r), ==, "Turbo");
    g_assert_cmpint(r.steps, ==, 1);
    g_assert_cmpfloat(r.cfg_scale, ==, 1.0f);
    g_assert_cmpint(r.sampler, ==, SDG_SAMPLER_EULER_A);
    g_assert_cmpint(r.schedule, ==, SDG_SCHEDULE_TRAILING);
    // An LCM-LoRA in the prompt wins over the model's own.
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = "a cat <lora:lcm-lora-sdv1-5:1>";
    g_assert_cmpstr(sdg_recommend(m, &gp, &r), ==, "LCM-LoRA");
    g_assert_cmpint(r.sampler, ==, SDG_SAMPLER_LCM);
    g_assert_cmpint(r.schedule, ==, SDG_SCHEDULE_SGM_UNIFORM);
    g_assert_cmpint(r.steps, ==, 4);
    g_assert_cmpint(r.model_sampling, ==, SDG_MODEL_SAMPLING_DEFAULT);
    sdg_model_free(m);

    m = load_as(dir, TINY, "lcm_dreamshaper_v7.safetensors");
    g_assert_cmpstr(sdg_recommend(m, NULL, &r), ==, "LCM");
    g_assert_cmpint(r.model_sampling, ==, SDG_MODEL_SAMPLING_LCM);
    sdg_model_free(m);

    m = load_as(dir, SDXL, "sdxl_lightning_8step.safetensors");
    g_assert_cmpstr(sdg_recommend(m, NULL, &r), ==, "SDXL-Lightning");
    g_assert_cmpint(r.steps, ==, 8);
    g_assert_cmpint(r.sampler, ==, SDG_SAMPLER_EULER);
    sdg_lora l = { "/loras/sdxl_lightning_2step_lora.safetensors", 1.0f };
    gp.prompt = "a cat";
    gp.loras = &l;
    gp.n_loras = 1;
    g_assert_cmpstr(sdg_recommend(m, &gp, &r), ==, "SDXL-Lightning LoRA");
    g_assert_cmpint(r.steps, ==, 2);
    sdg_model_free(m);
    // Lightning is SDXL's: an SD 1.x file so named is ordinary.
    m = load_as(dir, TINY, "my_lightning_4step.safetensors");
    g_assert_null(sdg_recommend(m, NULL, &r));
    sdg_model_free(m);
    golden_tmpdir_remove(dir);
}

static void test_info_and_tokenize(void)
{
    sdg_model_info info;
    sdg_model_get_info(model, &info);
    g_assert_cmpint(info.unet_in_channels, ==, 4);
    g_assert_cmpint(info.unet_model_channels, ==, 32);
    g_assert_cmpint(info.context_dim, ==, 64);
    g_assert_cmpint(info.text_width, ==, 64);
    g_assert_cmpint(info.text_layers, ==, 2);
    g_assert_cmpint(info.vae_scale, ==, 8);
    int32_t *ids = golden_i32(ref, "tok.ids_sd1", NULL);
    for (int p = 0; p < 10; p++) {
        char *prompt = golden_prompt(ref, p);
        int32_t got[77];
        g_assert_cmpint(sdg_model_tokenize(model, prompt, got), >=, 0);
        g_assert_cmpmem(got, sizeof got, ids + p * 77, sizeof got);
        g_free(prompt);
    }
    g_free(ids);
    int32_t got[77];
    g_assert_cmpint(sdg_model_tokenize(model, "\xff", got), ==, -1);
}

static void test_names_and_tensor_files(void)
{
    for (int s = 0; s < SDG_SAMPLER_COUNT; s++) {
        sdg_sampler back;
        g_assert_true(sdg_sampler_from_name(sdg_sampler_name((sdg_sampler)s), &back));
        g_assert_cmpint(back, ==, s);
    }
    for (int s = 0; s < SDG_SCHEDULE_COUNT; s++) {
        sdg_schedule back;
        g_assert_true(sdg_schedule_from_name(sdg_schedule_name((sdg_schedule)s), &back));
        g_assert_cmpint(back, ==, s);
    }
    for (int s = 0; s < SDG_MODEL_SAMPLING_COUNT; s++) {
        sdg_model_sampling back;
        g_assert_true(sdg_model_sampling_from_name(
            sdg_model_sampling_name((sdg_model_sampling)s), &back));
        g_assert_cmpint(back, ==, s);
    }
    g_assert_false(sdg_model_sampling_from_name("LCM", NULL));
    sdg_sampler sm;
    g_assert_false(sdg_sampler_from_name("euler-a", &sm));
    sdg_schedule sc;
    g_assert_true(sdg_schedule_from_name("karras", &sc));
    g_assert_cmpint(sc, ==, SDG_SCHEDULE_KARRAS);
    g_assert_null(sdg_image_new(0, 8, 3));
    g_assert_null(sdg_image_new(8, 8, 2));

    sdg_error err;
    char *dir = g_dir_make_tmp("sdg-test-XXXXXX", NULL);
    char *path = g_build_filename(dir, "noise.safetensors", NULL);
    float data[2 * 3] = { 1, 2, 3, 4, 5, 6 };
    int64_t shape[2] = { 2, 3 };
    g_assert_cmpint(sdg_tensor_write(path, "noise", 2, shape, data, &err), ==, SDG_OK);
    float *back = NULL;
    g_assert_cmpint(sdg_tensor_read(path, "noise", 2, shape, &back, &err), ==, SDG_OK);
    g_assert_cmpmem(back, sizeof data, data, sizeof data);
    free(back);
    int64_t wrong[2] = { 3, 2 };
    g_assert_cmpint(sdg_tensor_read(path, "noise", 2, wrong, &back, &err), ==, SDG_ERR_SHAPE);
    g_assert_cmpint(sdg_tensor_read(path, "latent", 2, shape, &back, &err), ==, SDG_ERR_SHAPE);
    g_unlink(path);
    g_rmdir(dir);
    g_free(path);
    g_free(dir);
}

// Tolerances of the final latent and of the picture: about 5x the worst relative error measured
// (golden.h), which is given in the comment as latent / picture.
static const run_case runs[] = {
    { "k.euler.default", SDG_SAMPLER_EULER, SDG_SCHEDULE_DEFAULT, 6, NULL, false,
      3e-5, 3e-5 },     // measured 4.0e-6 / 5.1e-6
    { "k.euler.karras", SDG_SAMPLER_EULER, SDG_SCHEDULE_KARRAS, 6, NULL, false,
      3e-5, 3e-5 },     // measured 4.3e-6 / 4.7e-6
    { "k.euler_ancestral.default", SDG_SAMPLER_EULER_A, SDG_SCHEDULE_DEFAULT, 6, NULL, false,
      3e-5, 3e-5 },     // measured 4.8e-6 / 5.7e-6
    { "k.euler_ancestral.karras", SDG_SAMPLER_EULER_A, SDG_SCHEDULE_KARRAS, 6, NULL, false,
      3e-5, 3e-5 },     // measured 4.1e-6 / 5.7e-6
    { "k.heun.default", SDG_SAMPLER_HEUN, SDG_SCHEDULE_DEFAULT, 6, NULL, false,
      3e-5, 2e-5 },     // measured 5.1e-6 / 3.9e-6
    { "k.heun.karras", SDG_SAMPLER_HEUN, SDG_SCHEDULE_KARRAS, 6, NULL, false,
      1.5e-5, 2e-5 },   // measured 2.3e-6 / 3.3e-6
    { "k.dpmpp_2m.default", SDG_SAMPLER_DPMPP_2M, SDG_SCHEDULE_DEFAULT, 6, NULL, false,
      2e-5, 3e-5 },     // measured 3.7e-6 / 4.4e-6
    { "k.dpmpp_2m.karras", SDG_SAMPLER_DPMPP_2M, SDG_SCHEDULE_KARRAS, 6, NULL, false,
      1.5e-5, 3e-5 },   // measured 2.5e-6 / 4.2e-6
    { "k.lms.default", SDG_SAMPLER_LMS, SDG_SCHEDULE_DEFAULT, 6, NULL, false,
      3e-5, 3e-5 },     // measured 4.4e-6 / 5.5e-6
    { "k.lms.karras", SDG_SAMPLER_LMS, SDG_SCHEDULE_KARRAS, 6, NULL, false,
      2e-5, 3e-5 },     // measured 3.6e-6 / 4.1e-6
    { "ddim6", SDG_SAMPLER_DDIM, SDG_SCHEDULE_DEFAULT, 6, NULL, false,
      2e-5, 3e-5 },     // measured 3.5e-6 / 4.9e-6
    { "ddim5", SDG_SAMPLER_DDIM, SDG_SCHEDULE_DEFAULT, 5, NULL, false,
      3e-5, 3e-5 },     // measured 4.2e-6 / 4.5e-6
    { "img2img.euler", SDG_SAMPLER_EULER, SDG_SCHEDULE_DEFAULT, 6, NULL, true,
      2e-5, 4e-5 },     // measured 3.5e-6 / 7.8e-6
    { "img2img.ddim", SDG_SAMPLER_DDIM, SDG_SCHEDULE_DEFAULT, 6, "img2img.ddim.out", true,
      1.5e-5, 3e-5 },   // measured 2.9e-6 / 4.8e-6
};

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    vocab_path = golden_path(VOCAB);
    ref = golden_open(REF);
    char *tiny = golden_path(TINY);
    sdg_error err;
    model = load(tiny, &err);
    if (!model)
        g_error("%s", err.message);
    g_free(tiny);

    g_test_add_func("/api/info-and-tokenize", test_info_and_tokenize);
    g_test_add_func("/api/names-and-tensor-files", test_names_and_tensor_files);
    for (size_t i = 0; i < G_N_ELEMENTS(runs); i++) {
        char *name = g_strdup_printf("/api/golden/%s", runs[i].run);
        g_test_add_data_func(name, &runs[i], check_run);
        g_free(name);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(family_runs); i++) {
        const family_case *fc = &family_runs[i];
        char *name = g_strdup_printf("/api/golden/%s/%s", fc->family == SDG_FAMILY_SDXL ? "sdxl"
                                     : fc->family == SDG_FAMILY_SD2 ? "sd2" : "sd1", fc->run);
        g_test_add_data_func(name, fc, check_family_run);
        g_free(name);
    }
    g_test_add_func("/api/determinism", test_determinism);
    g_test_add_func("/api/noise-streams", test_noise_streams);
    g_test_add_func("/api/batch-seeds", test_batch_seeds);
    g_test_add_func("/api/precision", test_precision);
    g_test_add_func("/api/progress-and-cancel", test_progress_and_cancel);
    g_test_add_func("/api/emphasis-and-long-prompts", test_emphasis_and_long_prompts);
    g_test_add_func("/api/inpaint", test_inpaint);
    g_test_add_func("/api/inpaint-9ch", test_inpaint_9ch);
    g_test_add_func("/api/bad-requests", test_bad_requests);
    g_test_add_func("/api/bad-models", test_bad_models);
    g_test_add_func("/api/prediction-sources", test_prediction_sources);
    g_test_add_func("/api/family-errors", test_family_errors);
    g_test_add_func("/api/family-tokens", test_family_tokens);
    g_test_add_func("/api/taesd-decoder", test_taesd_decoder);
    g_test_add_func("/api/taesd-encoder", test_taesd_encoder);
    g_test_add_func("/api/hires-fix", test_hires_fix);
    g_test_add_func("/api/recommend", test_recommend);
    g_test_add_func("/api/sdxl-size-conditioning", test_sdxl_size_conditioning);
    g_test_add_func("/api/sdxl-inpaint-layout", test_sdxl_inpaint_layout);
    int rc = g_test_run();
    sdg_model_free(model);
    st_close(ref);
    g_free(vocab_path);
    return rc;
}
