/*
 * test-lora.c - LoRA and LyCORIS adapters (engine/lora/lora.h): the merge of the tiny-sd1 LoRA
 * golden in its kohya and PEFT forms weight by weight, whole runs of the merged model against
 * the golden trajectory and picture, applying and removing (bit-identical base, shared models),
 * A1111's prompt tags and the LoRA folders, LoHa / LoKr / LoCon Tucker / DoRA against their
 * published formulas (written out here in double), and bad input.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "golden.h"
#include "lora/lora.h"

#define TINY "golden/tiny-sd1.safetensors"
#define SDXL "golden/tiny-sdxl.safetensors"
#define KOHYA "golden/tiny-sd1-lora.safetensors"
#define PEFT "golden/tiny-sd1-lora-peft.safetensors"
#define LORA_REF "golden/tiny-sd1-lora-reference.safetensors"
#define VOCAB "vocab/bpe_simple_vocab_16e6.txt.gz"

static sdg_model *model;   // tiny-sd1, loaded once
static char *vocab_path;

static sdg_model *load(const char *relpath)
{
    char *path = golden_path(relpath);
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    sdg_error err;
    sdg_model *m = sdg_model_load(path, &mp, &err);
    if (!m)
        g_error("%s: %s", path, err.message);
    g_free(path);
    return m;
}

static lora_set *plan(const sdg_model *m, const char *path, float weight, sdg_status want,
                      sdg_error *err)
{
    sdg_lora l = { path, weight };
    lora_set *s = NULL;
    sdg_status st = lora_set_plan(m, &l, 1, true, &s, err);
    if (st != want)
        g_error("%s: expected %s, got %s: %s", path, sdg_status_name(want), sdg_status_name(st),
                st ? err->message : "");
    return s;
}

// The model's tensor `name` as float32, patched by s.
static float *patched(const sdg_model *m, const lora_set *s, const char *name, size_t *n)
{
    const st_tensor *t = st_find(m->file, name);
    g_assert_nonnull(t);
    float *w = g_new(float, t->n_elements);
    sdg_error err;
    g_assert_cmpint(st_read_f32(m->file, t, w, &err), ==, SDG_OK);
    int idx = (int)(t - st_at(m->file, 0));
    g_assert_true(lora_set_patched(s)[idx]);
    g_assert_true(lora_set_patch((void *)s, idx, w, t->shape[0], t->n_elements / t->shape[0],
                                 &err));
    *n = (size_t)t->n_elements;
    return w;
}

// Every weight the reference merged (`merged.<key>`, 91 tensors) against the plan's merge, and
// nothing else patched.
static void check_merge(const char *relpath)
{
    char *path = golden_path(relpath);
    sdg_error err;
    lora_set *s = plan(model, path, 0.7f, SDG_OK, &err);
    st_file *ref = golden_open(LORA_REF);
    int n_merged = 0;
    double worst = 0.0;
    for (int i = 0; i < st_count(ref); i++) {
        const char *name = st_at(ref, i)->name;
        if (!g_str_has_prefix(name, "merged."))
            continue;
        size_t n;
        float *w = patched(model, s, name + strlen("merged."), &n);
        float *want = golden_f32(ref, name, NULL);
        double e = golden_check(name, w, want, n, 1e-6);   // measured 1.2e-7 (rounding)
        worst = e > worst ? e : worst;
        g_free(w);
        g_free(want);
        n_merged++;
    }
    g_assert_cmpint(n_merged, ==, 91);
    int n_patched = 0;
    for (int i = 0; i < st_count(model->file); i++)
        n_patched += lora_set_patched(s)[i];
    g_assert_cmpint(n_patched, ==, 91);
    g_assert_cmpint(lora_set_modules(s), ==, 91);
    g_assert_null(lora_set_notes(s));
    g_test_message("%s: 91 merged weights, worst %.2e", relpath, worst);
    st_close(ref);
    lora_set_free(s);
    g_free(path);
}

static void test_merge_kohya(void) { check_merge(KOHYA); }
static void test_merge_peft(void) { check_merge(PEFT); }

typedef struct noise_src {
    const float *initial;
} noise_src;

static void replay_noise(void *user, int which, float *out, size_t n)
{
    const noise_src *src = user;
    g_assert_cmpint(which, ==, SDG_TEST_NOISE_INITIAL);
    memcpy(out, src->initial, n * sizeof(float));
}

// The reference's k-diffusion euler run of the merged model (karras, 4 steps, CFG 7).
static sdg_gen_params golden_params(const st_file *ref)
{
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = st_metadata(ref, "prompt");
    gp.width = gp.height = 128;
    gp.sampler = SDG_SAMPLER_EULER;
    gp.schedule = SDG_SCHEDULE_KARRAS;
    gp.steps = 4;
    gp.cfg_scale = 7.0f;
    gp.precision = SDG_PRECISION_EXACT;
    return gp;
}

static sdg_result *run(sdg_ctx *ctx, const sdg_gen_params *gp, const float *noise)
{
    noise_src src = { noise };
    ctx->test_noise = replay_noise;
    ctx->test_noise_data = &src;
    sdg_result *res = NULL;
    sdg_error err;
    if (sdg_generate(ctx, gp, &res, &err) != SDG_OK)
        g_error("%s", err.message);
    ctx->test_noise = NULL;
    return res;
}

static bool same_result(const sdg_result *a, const sdg_result *b)
{
    size_t np = (size_t)3 * a->images[0]->width * a->images[0]->height;
    size_t nl = (size_t)a->latent_channels * a->latent_height * a->latent_width;
    return a->images[0]->width == b->images[0]->width &&
           memcmp(a->images[0]->data, b->images[0]->data, np * sizeof(float)) == 0 &&
           memcmp(a->latents, b->latents, nl * sizeof(float)) == 0;
}

static void check_golden_run(const sdg_result *res, const st_file *ref, const char *what)
{
    size_t n;
    float *x = golden_f32(ref, "k.euler.karras.x", &n);
    size_t nl = 4 * 16 * 16;
    char *label = g_strdup_printf("%s final latent", what);
    golden_check(label, res->latents, x + n - nl, nl, 3e-5);   // measured 5.1e-6 (C kernels 4.5e-6)
    g_free(label);
    int w, h;
    float *pic = golden_picture(ref, "k.euler.karras.image", &w, &h);
    label = g_strdup_printf("%s picture", what);
    golden_check(label, res->images[0]->data, pic, (size_t)3 * w * h, 3e-5);   // measured 5.5e-6 (C kernels 5.7e-6)
    g_free(label);
    g_free(pic);
    g_free(x);
}

// The merged model's run (text encoder and UNet patched) against the reference, from the kohya
// and the PEFT file; then without the LoRA the model's own bits again, in this ctx and in
// another one sharing the model all along.
static void test_run_apply_remove(void)
{
    st_file *ref = golden_open(LORA_REF);
    float *noise = golden_f32(ref, "sample.noise", NULL);
    sdg_gen_params gp = golden_params(ref);
    sdg_error err;
    sdg_ctx *ctx = sdg_ctx_new(model, 2, &err), *other = sdg_ctx_new(model, 2, &err);
    sdg_result *base = run(ctx, &gp, noise);

    char *kohya = golden_path(KOHYA), *peft = golden_path(PEFT);
    sdg_lora l = { kohya, 0.7f };
    gp.loras = &l;
    gp.n_loras = 1;
    sdg_result *with = run(ctx, &gp, noise);
    check_golden_run(with, ref, "kohya LoRA");
    g_assert_null(with->notes);
    // Memory: the copies are the touched tensors (F32 here, rows padded to whole panels),
    // within what the plan told the memory guard.
    lora_set *s = plan(model, kohya, 0.7f, SDG_OK, &err);
    g_assert_nonnull(ctx->lora);
    uint64_t touched = 0;
    for (int i = 0; i < st_count(model->file); i++)
        touched += lora_set_patched(s)[i] ? st_at(model->file, i)->size : 0;
    g_assert_cmpuint(touched, <=, ctx->lora->bytes);
    g_assert_cmpuint(ctx->lora->bytes, <=, touched * 11 / 10);
    g_assert_cmpuint(ctx->lora->bytes, <=, lora_set_patched_bytes(s));
    g_test_message("LoRA copies: %llu bytes for 91 tensors of %llu bytes",
                   (unsigned long long)ctx->lora->bytes, (unsigned long long)touched);
    lora_set_free(s);

    // The other ctx, same model, no LoRA: the model's own weights.
    gp.loras = NULL;
    gp.n_loras = 0;
    sdg_result *other_base = run(other, &gp, noise);
    g_assert_true(same_result(base, other_base));

    l.path = peft;
    gp.loras = &l;
    gp.n_loras = 1;
    sdg_result *with_peft = run(ctx, &gp, noise);
    check_golden_run(with_peft, ref, "PEFT LoRA");
    g_assert_true(same_result(with, with_peft));   // the same factors and scales

    gp.loras = NULL;
    gp.n_loras = 0;
    sdg_result *again = run(ctx, &gp, noise);
    g_assert_null(ctx->lora);
    g_assert_true(same_result(base, again));
    g_assert_false(same_result(base, with));

    sdg_result_free(base);
    sdg_result_free(with);
    sdg_result_free(other_base);
    sdg_result_free(with_peft);
    sdg_result_free(again);
    sdg_ctx_free(ctx);
    sdg_ctx_free(other);
    g_free(kohya);
    g_free(peft);
    g_free(noise);
    st_close(ref);
}

// A half-precision model (the usual download): the patched copies stay F16 (half the bytes of
// the F32 model's), the text encoder's in-place F16 tensors are patched too, the merged run is
// the F32 merged run's to F16 rounding, and without the LoRA the model's own bits come back.
static void test_f16_model(void)
{
    char *dir = golden_tmpdir("lora-f16");
    char *path = g_build_filename(dir, "tiny-f16.safetensors", NULL);
    golden_write_f16_copy(TINY, path, NULL);
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    sdg_error err;
    sdg_model *m = sdg_model_load(path, &mp, &err);
    g_assert_nonnull(m);
    st_file *ref = golden_open(LORA_REF);
    float *noise = golden_f32(ref, "sample.noise", NULL);
    sdg_gen_params gp = golden_params(ref);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err), *ctx32 = sdg_ctx_new(model, 2, &err);
    sdg_result *base = run(ctx, &gp, noise);
    char *kohya = golden_path(KOHYA);
    sdg_lora l = { kohya, 0.7f };
    gp.loras = &l;
    gp.n_loras = 1;
    sdg_result *with = run(ctx, &gp, noise), *with32 = run(ctx32, &gp, noise);
    g_assert_cmpuint(2 * ctx->lora->bytes, ==, ctx32->lora->bytes);
    size_t np = (size_t)3 * 128 * 128;
    golden_check("F16 model + LoRA against F32 model + LoRA", with->images[0]->data,
                 with32->images[0]->data, np, 5e-3);   // F16 weights: measured 9.2e-4
    gp.loras = NULL;
    gp.n_loras = 0;
    sdg_result *again = run(ctx, &gp, noise);
    g_assert_true(same_result(base, again));
    g_assert_false(same_result(base, with));
    sdg_result_free(base);
    sdg_result_free(with);
    sdg_result_free(with32);
    sdg_result_free(again);
    sdg_ctx_free(ctx);
    sdg_ctx_free(ctx32);
    sdg_model_free(m);
    g_free(kohya);
    g_free(noise);
    st_close(ref);
    g_free(path);
    golden_tmpdir_remove(dir);
}

// The memory guard counts the copies a request's LoRAs will make (sized from the shapes, the
// ctx left as it was), and nothing once the ctx holds them.
static void test_estimate(void)
{
    sdg_error err;
    sdg_ctx *ctx = sdg_ctx_new(model, 2, &err);
    sdg_gen_params gp = sdg_gen_default_params();
    gp.width = gp.height = 64;
    gp.steps = 1;
    sdg_memory_estimate plain, with, held;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &plain, &err), ==, SDG_OK);
    char *kohya = golden_path(KOHYA);
    sdg_lora l = { kohya, 0.7f };
    gp.loras = &l;
    gp.n_loras = 1;
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &with, &err), ==, SDG_OK);
    g_assert_null(ctx->lora);
    lora_set *s = plan(model, kohya, 0.7f, SDG_OK, &err);
    g_assert_cmpuint(with.weights_bytes - plain.weights_bytes, ==, lora_set_patched_bytes(s));
    g_assert_cmpuint(with.needed_bytes - plain.needed_bytes, ==, lora_set_patched_bytes(s));
    lora_set_free(s);
    sdg_result *res = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_OK);
    sdg_result_free(res);
    g_assert_cmpint(sdg_ctx_estimate(ctx, &gp, &held, &err), ==, SDG_OK);
    g_assert_cmpuint(held.weights_bytes - plain.weights_bytes, ==, ctx->lora->bytes);
    g_assert_cmpuint(held.needed_bytes, <=, with.needed_bytes - ctx->lora->bytes);
    sdg_ctx_free(ctx);
    g_free(kohya);
}

// <lora:NAME:WEIGHT> in the prompt: the folders beside the model and lora_dir; the tag leaves
// the text; errors name the tag or the folders.
static void test_prompt_tags(void)
{
    char *dir = golden_tmpdir("lora-tags");
    char *models = g_build_filename(dir, "models", NULL);
    char *loras = g_build_filename(dir, "loras", NULL);
    char *other = g_build_filename(dir, "elsewhere", NULL);
    g_mkdir(models, 0755);
    g_mkdir(loras, 0755);
    g_mkdir(other, 0755);
    char *tiny = golden_path(TINY), *kohya = golden_path(KOHYA);
    char *model_link = g_build_filename(models, "tiny.safetensors", NULL);
    char *lora_link = g_build_filename(loras, "my style.safetensors", NULL);
    char *other_link = g_build_filename(other, "second.safetensors", NULL);
    g_assert_cmpint(symlink(tiny, model_link), ==, 0);
    g_assert_cmpint(symlink(kohya, lora_link), ==, 0);
    g_assert_cmpint(symlink(kohya, other_link), ==, 0);
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    sdg_error err;
    sdg_model *m = sdg_model_load(model_link, &mp, &err);
    g_assert_nonnull(m);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err);

    st_file *ref = golden_open(LORA_REF);
    float *noise = golden_f32(ref, "sample.noise", NULL);
    sdg_gen_params gp = golden_params(ref);
    char *tagged = g_strdup_printf("<lora:my style:0.7>%s", gp.prompt);
    gp.prompt = tagged;
    sdg_result *res = run(ctx, &gp, noise);
    check_golden_run(res, ref, "prompt tag");
    sdg_result_free(res);

    // lora_dir, and two LoRAs adding up: 0.35 + 0.35 = the 0.7 run (to rounding).
    char *two = g_strdup_printf("%s <lora:my style:0.35><lora:second:0.35>",
                                st_metadata(ref, "prompt"));
    gp.prompt = two;
    gp.lora_dir = other;
    res = run(ctx, &gp, noise);
    check_golden_run(res, ref, "two tags");
    sdg_result_free(res);

    static const struct {
        const char *prompt, *says;
    } bad[] = {
        { "a <lora:> b", "malformed LoRA tag '<lora:>'" },
        { "a <lora:my style:11>", "between -10 and 10" },
        { "a <lora:my style:x>", "malformed" },
        { "a <lora:my style:1:2>", "malformed" },
        { "a <lora:my style", "no closing" },
        { "a <lora:nobody:1>", "no LoRA named 'nobody'" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        gp.prompt = bad[i].prompt;
        sdg_result *r = NULL;
        sdg_status st = sdg_generate(ctx, &gp, &r, &err);
        g_assert_cmpint(st, !=, SDG_OK);
        g_assert_null(r);
        g_test_message("%s -> %s", bad[i].prompt, err.message);
        g_assert_nonnull(strstr(err.message, bad[i].says));
    }
    g_assert_nonnull(strstr(err.message, loras));   // the folders searched are named
    g_assert_nonnull(strstr(err.message, other));

    g_free(two);
    g_free(tagged);
    g_free(noise);
    st_close(ref);
    sdg_ctx_free(ctx);
    sdg_model_free(m);
    g_free(model_link);
    g_free(lora_link);
    g_free(other_link);
    g_free(tiny);
    g_free(kohya);
    g_free(models);
    g_free(loras);
    g_free(other);
    golden_tmpdir_remove(dir);
}

// ---------------------------------------------------------------------------------------------
// Formulas: small LyCORIS files against tiny-sd1 layers, expected values in double

#define Q_NAME "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.weight"
#define Q_KOHYA "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q"
#define CONV_NAME "model.diffusion_model.middle_block.0.in_layers.2.weight"
#define CONV_KOHYA "lora_unet_mid_block_resnets_0_conv1"

static float *random_floats(GRand *r, size_t n)
{
    float *x = g_new(float, n);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)g_rand_double_range(r, -0.5, 0.5);
    return x;
}

typedef struct factor {
    const char *suffix;
    int n_dims;
    int64_t shape[4];
    float *data;
} factor;

// Writes module `module` with the factors (and alpha when > 0) to path.
static void write_module(const char *path, const char *module, factor *f, int n, float alpha)
{
    st_write_tensor t[10];
    char *names[10];
    for (int i = 0; i < n; i++) {
        names[i] = g_strconcat(module, f[i].suffix, NULL);
        t[i] = (st_write_tensor){ names[i], ST_F32, f[i].n_dims, { 0 }, f[i].data };
        memcpy(t[i].shape, f[i].shape, sizeof f[i].shape);
    }
    int m = n;
    if (alpha > 0.0f) {
        names[m] = g_strconcat(module, ".alpha", NULL);
        t[m] = (st_write_tensor){ names[m], ST_F32, 0, { 0 }, &alpha };
        m++;
    }
    sdg_error err;
    g_assert_cmpint(st_write(path, t, m, NULL, &err), ==, SDG_OK);
    for (int i = 0; i < m; i++)
        g_free(names[i]);
}

// Applies the file at strength 0.8 to `target` of m and compares with base + 0.8 * delta.
static void check_formula_on(const sdg_model *m, const char *path, const char *target,
                             const double *delta, const char *what)
{
    sdg_error err;
    lora_set *s = plan(m, path, 0.8f, SDG_OK, &err);
    size_t n;
    float *w = patched(m, s, target, &n);
    const st_tensor *t = st_find(m->file, target);
    float *base = g_new(float, n), *want = g_new(float, n);
    g_assert_cmpint(st_read_f32(m->file, t, base, &err), ==, SDG_OK);
    for (size_t i = 0; i < n; i++)
        want[i] = (float)(base[i] + 0.8 * delta[i]);
    golden_check(what, w, want, n, 1e-6);   // measured 1.5e-7
    g_free(w);
    g_free(base);
    g_free(want);
    lora_set_free(s);
}

static void check_formula(const char *path, const char *target, const double *delta,
                          const char *what)
{
    check_formula_on(model, path, target, delta, what);
}

static void test_loha(void)
{
    GRand *r = g_rand_new_with_seed(1);
    char *dir = golden_tmpdir("loha");
    char *path = g_build_filename(dir, "loha.safetensors", NULL);
    // Linear 64x64, rank 2, alpha 1.5: delta = (w1a w1b) .* (w2a w2b) * 1.5 / 2.
    factor f[4] = {
        { ".hada_w1_a", 2, { 64, 2 }, random_floats(r, 128) },
        { ".hada_w1_b", 2, { 2, 64 }, random_floats(r, 128) },
        { ".hada_w2_a", 2, { 64, 2 }, random_floats(r, 128) },
        { ".hada_w2_b", 2, { 2, 64 }, random_floats(r, 128) },
    };
    write_module(path, Q_KOHYA, f, 4, 1.5f);
    double *delta = g_new0(double, 64 * 64);
    for (int o = 0; o < 64; o++)
        for (int i = 0; i < 64; i++) {
            double a = 0, b = 0;
            for (int k = 0; k < 2; k++) {
                a += (double)f[0].data[o * 2 + k] * f[1].data[k * 64 + i];
                b += (double)f[2].data[o * 2 + k] * f[3].data[k * 64 + i];
            }
            delta[o * 64 + i] = a * b * 1.5 / 2.0;
        }
    check_formula(path, Q_NAME, delta, "LoHa linear");
    for (int i = 0; i < 4; i++)
        g_free(f[i].data);

    // Conv 3x3 with Tucker cores: m = einsum("i j k l, j r, i p -> p r k l", t, w_b, w_a).
    factor g[6] = {
        { ".hada_w1_a", 2, { 2, 64 }, random_floats(r, 128) },
        { ".hada_w1_b", 2, { 2, 64 }, random_floats(r, 128) },
        { ".hada_w2_a", 2, { 2, 64 }, random_floats(r, 128) },
        { ".hada_w2_b", 2, { 2, 64 }, random_floats(r, 128) },
        { ".hada_t1", 4, { 2, 2, 3, 3 }, random_floats(r, 36) },
        { ".hada_t2", 4, { 2, 2, 3, 3 }, random_floats(r, 36) },
    };
    write_module(path, CONV_KOHYA, g, 6, 0.0f);   // no alpha: scale 1
    double *dc = g_new0(double, 64 * 64 * 9);
    for (int p = 0; p < 64; p++)
        for (int q = 0; q < 64; q++)
            for (int s = 0; s < 9; s++) {
                double m1 = 0, m2 = 0;
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++) {
                        m1 += (double)g[4].data[(i * 2 + j) * 9 + s] * g[1].data[j * 64 + q] *
                              g[0].data[i * 64 + p];
                        m2 += (double)g[5].data[(i * 2 + j) * 9 + s] * g[3].data[j * 64 + q] *
                              g[2].data[i * 64 + p];
                    }
                dc[(p * 64 + q) * 9 + s] = m1 * m2;
            }
    check_formula(path, CONV_NAME, dc, "LoHa conv Tucker");
    for (int i = 0; i < 6; i++)
        g_free(g[i].data);
    g_free(dc);
    g_free(delta);
    g_free(path);
    golden_tmpdir_remove(dir);
    g_rand_free(r);
}

// torch.kron(a [A0, A1(, 1, 1)], b [B0, B1(, KH, KW)])[i B0 + k, j B1 + l, y, x] = a[i, j] b[k, l, y, x]
static void test_lokr(void)
{
    GRand *r = g_rand_new_with_seed(2);
    char *dir = golden_tmpdir("lokr");
    char *path = g_build_filename(dir, "lokr.safetensors", NULL);
    // Linear: w1 [4, 8] full, w2 = w2a [16, 2] w2b [2, 8], alpha 3: scale 3 / 2.
    factor f[3] = {
        { ".lokr_w1", 2, { 4, 8 }, random_floats(r, 32) },
        { ".lokr_w2_a", 2, { 16, 2 }, random_floats(r, 32) },
        { ".lokr_w2_b", 2, { 2, 8 }, random_floats(r, 16) },
    };
    write_module(path, Q_KOHYA, f, 3, 3.0f);
    double *delta = g_new0(double, 64 * 64);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 8; j++)
            for (int k = 0; k < 16; k++)
                for (int l = 0; l < 8; l++) {
                    double w2 = 0;
                    for (int q = 0; q < 2; q++)
                        w2 += (double)f[1].data[k * 2 + q] * f[2].data[q * 8 + l];
                    delta[(i * 16 + k) * 64 + j * 8 + l] = f[0].data[i * 8 + j] * w2 * 1.5;
                }
    check_formula(path, Q_NAME, delta, "LoKr linear");
    for (int i = 0; i < 3; i++)
        g_free(f[i].data);

    // Conv: w1 [8, 4], w2 [8, 16, 3, 3] both full: alpha ignored, scale 1.
    factor g[2] = {
        { ".lokr_w1", 2, { 8, 4 }, random_floats(r, 32) },
        { ".lokr_w2", 4, { 8, 16, 3, 3 }, random_floats(r, 8 * 16 * 9) },
    };
    write_module(path, CONV_KOHYA, g, 2, 4.0f);
    double *dc = g_new0(double, 64 * 64 * 9);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 8; k++)
                for (int l = 0; l < 16; l++)
                    for (int s = 0; s < 9; s++)
                        dc[((i * 8 + k) * 64 + j * 16 + l) * 9 + s] =
                            (double)g[0].data[i * 4 + j] * g[1].data[(k * 16 + l) * 9 + s];
    check_formula(path, CONV_NAME, dc, "LoKr conv");
    for (int i = 0; i < 2; i++)
        g_free(g[i].data);
    g_free(dc);
    g_free(delta);
    g_free(path);
    golden_tmpdir_remove(dir);
    g_rand_free(r);
}

// LoCon's Tucker core (lora_mid) and DoRA's dora_scale (ComfyUI weight_decompose).
static void test_locon_mid_and_dora(void)
{
    GRand *r = g_rand_new_with_seed(3);
    char *dir = golden_tmpdir("locon");
    char *path = g_build_filename(dir, "locon.safetensors", NULL);
    factor f[3] = {
        { ".lora_up.weight", 4, { 64, 2, 1, 1 }, random_floats(r, 128) },
        { ".lora_mid.weight", 4, { 2, 2, 3, 3 }, random_floats(r, 36) },
        { ".lora_down.weight", 4, { 2, 64, 1, 1 }, random_floats(r, 128) },
    };
    write_module(path, CONV_KOHYA, f, 3, 1.0f);   // scale 1 / 2
    double *dc = g_new0(double, 64 * 64 * 9);
    for (int o = 0; o < 64; o++)
        for (int i = 0; i < 64; i++)
            for (int s = 0; s < 9; s++) {
                double v = 0;
                for (int a = 0; a < 2; a++)
                    for (int b = 0; b < 2; b++)
                        v += (double)f[0].data[o * 2 + a] * f[1].data[(a * 2 + b) * 9 + s] *
                             f[2].data[b * 64 + i];
                dc[(o * 64 + i) * 9 + s] = v * 0.5;
            }
    check_formula(path, CONV_NAME, dc, "LoCon Tucker core");
    for (int i = 0; i < 3; i++)
        g_free(f[i].data);
    g_free(dc);

    // DoRA on the linear layer: wc = W + s up down; each input column j scaled to norm
    // dora[j]; W' = W + m (wc - W).
    factor d[3] = {
        { ".lora_up.weight", 2, { 64, 2 }, random_floats(r, 128) },
        { ".lora_down.weight", 2, { 2, 64 }, random_floats(r, 128) },
        { ".dora_scale", 2, { 1, 64 }, random_floats(r, 64) },
    };
    for (int j = 0; j < 64; j++)
        d[2].data[j] = 1.0f + d[2].data[j];
    write_module(path, Q_KOHYA, d, 3, 1.0f);
    const st_tensor *t = st_find(model->file, Q_NAME);
    float *base = g_new(float, 64 * 64);
    sdg_error err;
    g_assert_cmpint(st_read_f32(model->file, t, base, &err), ==, SDG_OK);
    double *wc = g_new0(double, 64 * 64), *delta = g_new0(double, 64 * 64);
    for (int o = 0; o < 64; o++)
        for (int i = 0; i < 64; i++) {
            double v = 0;
            for (int k = 0; k < 2; k++)
                v += (double)d[0].data[o * 2 + k] * d[1].data[k * 64 + i];
            wc[o * 64 + i] = base[o * 64 + i] + 0.5 * v;
        }
    for (int i = 0; i < 64; i++) {
        double n2 = 0;
        for (int o = 0; o < 64; o++)
            n2 += wc[o * 64 + i] * wc[o * 64 + i];
        for (int o = 0; o < 64; o++)
            delta[o * 64 + i] = wc[o * 64 + i] * d[2].data[i] / sqrt(n2) - base[o * 64 + i];
    }
    check_formula(path, Q_NAME, delta, "DoRA");
    for (int i = 0; i < 3; i++)
        g_free(d[i].data);
    g_free(base);
    g_free(wc);
    g_free(delta);
    g_free(path);
    golden_tmpdir_remove(dir);
    g_rand_free(r);
}

// open_clip encoders (SD 2.x, SDXL's bigG) under transformers' names: v_proj is rows 2W..3W-1 of
// the packed in_proj_weight (the rest untouched), mlp.fc1 is mlp.c_fc.
static void test_openclip_slices(void)
{
    sdg_model *sd2 = load("golden/tiny-sd2.safetensors");
    GRand *r = g_rand_new_with_seed(5);
    char *dir = golden_tmpdir("lora-sd2");
    char *path = g_build_filename(dir, "sd2.safetensors", NULL);
    factor f[2] = {
        { ".lora_up.weight", 2, { 48, 2 }, random_floats(r, 96) },
        { ".lora_down.weight", 2, { 2, 48 }, random_floats(r, 96) },
    };
    write_module(path, "lora_te_text_model_encoder_layers_1_self_attn_v_proj", f, 2, 0.0f);
    const char *qkv = "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight";
    g_assert_cmpint(st_find(sd2->file, qkv)->n_elements, ==, 144 * 48);
    double *want = g_new0(double, 144 * 48);
    for (int o = 0; o < 144; o++)
        for (int i = 0; i < 48; i++) {
            double d = 0;
            if (o >= 96)
                for (int k = 0; k < 2; k++)
                    d += (double)f[0].data[(o - 96) * 2 + k] * f[1].data[k * 48 + i];
            want[o * 48 + i] = d;
        }
    check_formula_on(sd2, path, qkv, want, "open_clip v_proj slice");
    // PEFT's name of mlp.fc1: open_clip's mlp.c_fc [192, 48].
    factor g[2] = {
        { ".lora_B.weight", 2, { 192, 2 }, random_floats(r, 384) },
        { ".lora_A.weight", 2, { 2, 48 }, random_floats(r, 96) },
    };
    write_module(path, "text_encoder.text_model.encoder.layers.0.mlp.fc1", g, 2, 0.0f);
    double *wfc = g_new0(double, 192 * 48);
    for (int o = 0; o < 192; o++)
        for (int i = 0; i < 48; i++)
            for (int k = 0; k < 2; k++)
                wfc[o * 48 + i] += (double)g[0].data[o * 2 + k] * g[1].data[k * 48 + i];
    check_formula_on(sd2, path, "cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.weight",
                     wfc, "open_clip mlp.c_fc");
    for (int i = 0; i < 2; i++) {
        g_free(f[i].data);
        g_free(g[i].data);
    }
    g_free(wfc);
    g_free(want);
    g_free(path);
    golden_tmpdir_remove(dir);
    g_rand_free(r);
    sdg_model_free(sd2);
}

// ---------------------------------------------------------------------------------------------
// Bad input

static void test_bad_input(void)
{
    sdg_error err;
    char *kohya = golden_path(KOHYA), *tiny = golden_path(TINY);
    // An SD 1.x LoRA on SDXL: its metadata says sd_v1.
    sdg_model *xl = load(SDXL);
    plan(xl, kohya, 1.0f, SDG_ERR_UNSUPPORTED, &err);
    g_test_message("%s", err.message);
    g_assert_nonnull(strstr(err.message, "is for SD 1.x"));
    g_assert_nonnull(strstr(err.message, "SDXL"));

    char *dir = golden_tmpdir("lora-bad");
    char *path = g_build_filename(dir, "bad.safetensors", NULL);
    GRand *r = g_rand_new_with_seed(4);
    // The same without metadata on SDXL: its modules do not fit (shapes) or match nothing.
    factor sd1[2] = {
        { ".lora_up.weight", 2, { 64, 4 }, random_floats(r, 256) },
        { ".lora_down.weight", 2, { 4, 64 }, random_floats(r, 256) },
    };
    write_module(path, "lora_te_text_model_encoder_layers_0_self_attn_q_proj", sd1, 2, 0.0f);
    plan(xl, path, 1.0f, SDG_ERR_UNSUPPORTED, &err);
    g_test_message("%s", err.message);
    g_assert_nonnull(strstr(err.message, "another model family"));
    sdg_model_free(xl);

    // Shapes that do not fit: a rank-4 up on a 64x64 layer with a down of 32 inputs.
    factor wrong[2] = {
        { ".lora_up.weight", 2, { 64, 4 }, sd1[0].data },
        { ".lora_down.weight", 2, { 4, 32 }, sd1[1].data },
    };
    write_module(path, Q_KOHYA, wrong, 2, 4.0f);
    plan(model, path, 1.0f, SDG_ERR_SHAPE, &err);
    g_test_message("%s", err.message);
    g_assert_nonnull(strstr(err.message, "does not fit"));

    // Unmatched modules beside matched ones: reported in the notes, and in the result.
    st_write_tensor t[5] = {
        { Q_KOHYA ".lora_up.weight", ST_F32, 2, { 64, 4 }, sd1[0].data },
        { Q_KOHYA ".lora_down.weight", ST_F32, 2, { 4, 64 }, sd1[1].data },
        { "lora_unet_no_such_layer.lora_up.weight", ST_F32, 2, { 64, 4 }, sd1[0].data },
        { "lora_unet_no_such_layer.lora_down.weight", ST_F32, 2, { 4, 64 }, sd1[1].data },
        { "something_else", ST_F32, 2, { 4, 64 }, sd1[1].data },
    };
    g_assert_cmpint(st_write(path, t, 5, NULL, &err), ==, SDG_OK);
    lora_set *s = plan(model, path, 1.0f, SDG_OK, &err);
    g_test_message("%s", lora_set_notes(s));
    g_assert_nonnull(strstr(lora_set_notes(s), "1 of its 2 modules match no layer"));
    g_assert_nonnull(strstr(lora_set_notes(s), "lora_unet_no_such_layer"));
    g_assert_nonnull(strstr(lora_set_notes(s), "'something_else'"));
    lora_set_free(s);
    sdg_ctx *ctx = sdg_ctx_new(model, 2, &err);
    sdg_gen_params gp = sdg_gen_default_params();
    gp.width = gp.height = 64;
    gp.steps = 1;
    sdg_lora l = { path, 1.0f };
    gp.loras = &l;
    gp.n_loras = 1;
    sdg_result *res = NULL;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_OK);
    g_assert_nonnull(res->notes);
    g_assert_nonnull(strstr(res->notes, "lora_unet_no_such_layer"));
    sdg_result_free(res);

    // A checkpoint is no LoRA; a weight out of range; a missing file; NaN in a factor.
    plan(model, tiny, 1.0f, SDG_ERR_FORMAT, &err);
    g_assert_nonnull(strstr(err.message, "no LoRA"));
    l.weight = 10.5f;
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_ERR_INVALID_ARG);
    g_assert_nonnull(strstr(err.message, "between -10 and 10"));
    l.weight = 1.0f;
    l.path = "/nonexistent/x.safetensors";
    g_assert_cmpint(sdg_generate(ctx, &gp, &res, &err), ==, SDG_ERR_IO);
    sd1[0].data[5] = NAN;
    write_module(path, Q_KOHYA, sd1, 2, 4.0f);
    plan(model, path, 1.0f, SDG_ERR_FORMAT, &err);
    g_assert_nonnull(strstr(err.message, "NaN"));
    // A factor without its partner.
    write_module(path, Q_KOHYA, sd1, 1, 4.0f);
    plan(model, path, 1.0f, SDG_ERR_SHAPE, &err);
    g_assert_nonnull(strstr(err.message, "lacks a factor"));
    sdg_ctx_free(ctx);

    g_free(sd1[0].data);
    g_free(sd1[1].data);
    g_rand_free(r);
    g_free(path);
    golden_tmpdir_remove(dir);
    g_free(kohya);
    g_free(tiny);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    vocab_path = golden_path(VOCAB);
    model = load(TINY);
    g_test_add_func("/lora/merge/kohya", test_merge_kohya);
    g_test_add_func("/lora/merge/peft", test_merge_peft);
    g_test_add_func("/lora/run/apply-remove-shared", test_run_apply_remove);
    g_test_add_func("/lora/prompt-tags", test_prompt_tags);
    g_test_add_func("/lora/estimate", test_estimate);
    g_test_add_func("/lora/f16-model", test_f16_model);
    g_test_add_func("/lora/formula/loha", test_loha);
    g_test_add_func("/lora/formula/lokr", test_lokr);
    g_test_add_func("/lora/formula/locon-mid-dora", test_locon_mid_and_dora);
    g_test_add_func("/lora/openclip-slices", test_openclip_slices);
    g_test_add_func("/lora/bad-input", test_bad_input);
    int rc = g_test_run();
    sdg_model_free(model);
    g_free(vocab_path);
    return rc;
}
