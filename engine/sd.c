/*
 * sd.c - the public entry points of sdg.h: names, images, loading a checkpoint into its three
 * networks and tokenizer, contexts, checking a generation request, tensor files.
 *
 * Not here: the generation itself (pipeline/pipeline.c) and any network arithmetic.
 */
#include "memory.h"
#include "tensor/gemm.h"
#include "pipeline/pipeline.h"

#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------------
// Names

static const char *const sampler_names[SDG_SAMPLER_COUNT] = {
    [SDG_SAMPLER_EULER] = "euler",       [SDG_SAMPLER_EULER_A] = "euler_a",
    [SDG_SAMPLER_HEUN] = "heun",         [SDG_SAMPLER_DPMPP_2M] = "dpmpp_2m",
    [SDG_SAMPLER_LMS] = "lms",           [SDG_SAMPLER_DDIM] = "ddim",
};
static const char *const schedule_names[SDG_SCHEDULE_COUNT] = {
    [SDG_SCHEDULE_DEFAULT] = "default", [SDG_SCHEDULE_KARRAS] = "karras",
};

static const char *const precision_names[SDG_PRECISION_COUNT] = {
    [SDG_PRECISION_DEFAULT] = "default", [SDG_PRECISION_EXACT] = "exact",
    [SDG_PRECISION_FAST] = "fast",
};

static int name_index(const char *const *names, int n, const char *name)
{
    for (int i = 0; name && i < n; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

const char *sdg_sampler_name(sdg_sampler s)
{
    return (unsigned)s < SDG_SAMPLER_COUNT ? sampler_names[s] : "unknown";
}

bool sdg_sampler_from_name(const char *name, sdg_sampler *out)
{
    int i = name_index(sampler_names, SDG_SAMPLER_COUNT, name);
    if (i >= 0 && out)
        *out = (sdg_sampler)i;
    return i >= 0;
}

const char *sdg_schedule_name(sdg_schedule s)
{
    return (unsigned)s < SDG_SCHEDULE_COUNT ? schedule_names[s] : "unknown";
}

bool sdg_schedule_from_name(const char *name, sdg_schedule *out)
{
    int i = name_index(schedule_names, SDG_SCHEDULE_COUNT, name);
    if (i >= 0 && out)
        *out = (sdg_schedule)i;
    return i >= 0;
}

const char *sdg_precision_name(sdg_precision p)
{
    return (unsigned)p < SDG_PRECISION_COUNT ? precision_names[p] : "unknown";
}

bool sdg_precision_from_name(const char *name, sdg_precision *out)
{
    int i = name_index(precision_names, SDG_PRECISION_COUNT, name);
    if (i >= 0 && out)
        *out = (sdg_precision)i;
    return i >= 0;
}

const char *sdg_kernels_name(sdg_precision p)
{
    return sdg_gemm_kernels_label(sdg__precision_is_fast(p));
}

// ---------------------------------------------------------------------------------------------
// Images

#define SDG_MAX_SIDE 4096

sdg_image *sdg_image_new(int width, int height, int channels)
{
    if (width < 1 || height < 1 || width > SDG_MAX_SIDE || height > SDG_MAX_SIDE ||
        (channels != 1 && channels != 3))
        return NULL;
    sdg_image *img = calloc(1, sizeof *img);
    if (!img)
        return NULL;
    img->data = calloc((size_t)width * height * channels, sizeof(float));
    if (!img->data) {
        free(img);
        return NULL;
    }
    img->width = width;
    img->height = height;
    img->channels = channels;
    return img;
}

void sdg_image_free(sdg_image *img)
{
    if (!img)
        return;
    free(img->data);
    free(img);
}

// ---------------------------------------------------------------------------------------------
// Models

sdg_model_params sdg_model_default_params(void)
{
    return (sdg_model_params){ .vocab_path = NULL, .models_dir = NULL };
}

void sdg_model_free(sdg_model *m)
{
    if (!m)
        return;
    clip_free(m->clip);
    unet_free(m->unet);
    vae_free(m->vae);
    sdg_tokenizer_free(m->tok);
    sdg_wb_free(m->wb);
    st_close(m->file);
    g_free(m->path);
    free(m);
}

// Names the family of a checkpoint this engine does not run, from its keys, so the error can
// say what the file is rather than listing a missing tensor.
static const char *unsupported_family(const st_file *f)
{
    if (st_find(f, "conditioner.embedders.1.model.ln_final.weight"))
        return "SDXL";
    if (st_find(f, "cond_stage_model.model.ln_final.weight") ||
        st_find(f, "conditioner.embedders.0.model.ln_final.weight"))
        return "SD 2.x";
    if (st_find(f, "decoder.layers.0.weight") || st_find(f, "decoder.1.weight"))
        return "a TAESD autoencoder";
    return NULL;
}

static const char *const unet_prefix = "model.diffusion_model.";
static const char *const clip_prefix = "cond_stage_model.transformer.text_model.";
static const char *const vae_prefix = "first_stage_model.";

// Binds the three networks to m->file; shapes_only checks and counts without converting;
// slab_bytes > 0 puts the converted copies in one block of that size (sdg_wb_reserve).
static sdg_status bind_networks(sdg_model *m, bool shapes_only, size_t slab_bytes, sdg_error *err)
{
    m->wb = sdg_wb_new(m->file, err);
    if (!m->wb)
        return SDG_ERR_NOMEM;   // its only failure with a file given
    sdg_wb_set_shapes_only(m->wb, shapes_only);
    if (!shapes_only)
        sdg_wb_defer(m->wb); // no data is read before every shape is checked (sdg_wb_read)
    sdg_status st = sdg_wb_reserve(m->wb, slab_bytes, err);
    if (st != SDG_OK)
        return st;
    m->clip_prefix = clip_prefix;
    m->clip = clip_load(m->wb, clip_prefix);
    if ((st = sdg_wb_status(m->wb, err)) != SDG_OK)
        return st;
    m->unet = unet_load(m->wb, unet_prefix);
    if ((st = sdg_wb_status(m->wb, err)) != SDG_OK)
        return st;
    m->vae = vae_load(m->wb, vae_prefix);
    if ((st = sdg_wb_status(m->wb, err)) != SDG_OK)
        return st;
    if (!m->clip || !m->unet || !m->vae)
        return sdg__fail(err, SDG_ERR_NOMEM, "out of memory loading %s", m->path);
    m->copy_bytes = sdg_wb_owned_bytes(m->wb);
    m->mapped_bytes = sdg_wb_mapped_bytes(m->wb);
    return SDG_OK;
}

static void unbind_networks(sdg_model *m)
{
    clip_free(m->clip);
    unet_free(m->unet);
    vae_free(m->vae);
    sdg_wb_free(m->wb);
    m->clip = NULL;
    m->unet = NULL;
    m->vae = NULL;
    m->wb = NULL;
}

// The memory guard of loading: the float32 copies the loader makes (the vectors of F16/BF16
// files, and tensors whose data is not aligned in the file) are the one allocation loading makes
// (matrices are used from the mapping in their own type, which costs nothing until a run reads
// them), so they must fit in what is available. The sizes come from a shapes-only binding, which
// also checks every tensor before anything is converted; *slab_bytes is the block to hold the
// copies (their bytes plus 64-byte alignment each).
static sdg_status check_load_memory(sdg_model *m, size_t *slab_bytes, sdg_error *err)
{
    sdg_status st = bind_networks(m, true, 0, err);
    uint64_t need = m->copy_bytes;
    *slab_bytes = need ? (size_t)need + (size_t)st_count(m->file) * SDG_ARENA_ALIGN : 0;
    unbind_networks(m);
    if (st != SDG_OK)
        return st;
    uint64_t avail;
    sdg_mem_source source;
    st = sdg__mem_available(&avail, &source, err);
    if (st != SDG_OK || source == SDG_MEM_UNKNOWN || need <= avail)
        return st;
    char base[256], need_s[32], avail_s[32];
    char *b = g_path_get_basename(m->path);
    snprintf(base, sizeof base, "%s", b);
    g_free(b);
    sdg__mem_format(need, need_s, sizeof need_s);
    sdg__mem_format(avail, avail_s, sizeof avail_s);
    return sdg__fail(err, SDG_ERR_NOMEM, "loading %s needs %s (its weights, packed for the matrix products) but only %s "
                     "is available%s; close other programs or use a smaller model", base, need_s,
                     avail_s, sdg__mem_source_phrase(source));
}

sdg_model *sdg_model_load(const char *path, const sdg_model_params *params, sdg_error *err)
{
    sdg__error_clear(err);
    sdg_model_params defaults = sdg_model_default_params();
    if (!params)
        params = &defaults;
    if (!path || !*path) {
        sdg__fail(err, SDG_ERR_INVALID_ARG, "no model file given");
        return NULL;
    }
    if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
        sdg__fail(err, SDG_ERR_UNSUPPORTED, "%s is a folder: diffusers folders are not supported "
                  "yet; use a single-file .safetensors checkpoint", path);
        return NULL;
    }
    sdg_model *m = calloc(1, sizeof *m);
    if (!m) {
        sdg__fail(err, SDG_ERR_NOMEM, "out of memory loading %s", path);
        return NULL;
    }
    m->path = g_strdup(path);
    m->file = st_open(path, err);
    if (!m->file)
        goto fail;

    char *base = g_path_get_basename(path);
    if (!st_find(m->file, "model.diffusion_model.input_blocks.0.0.weight")) {
        const char *family = unsupported_family(m->file);
        if (family)
            sdg__fail(err, SDG_ERR_UNSUPPORTED, "%s: this is %s, which the engine does not run "
                      "yet (Stable Diffusion 1.x only)", base, family);
        else
            sdg__fail(err, SDG_ERR_SHAPE, "%s: not a Stable Diffusion 1.x checkpoint (tensor "
                      "'model.diffusion_model.input_blocks.0.0.weight' is missing)", base);
        g_free(base);
        goto fail;
    }
    g_free(base);

    m->header_only = params->header_only;
    size_t slab_bytes = 0;
    if (!m->header_only && check_load_memory(m, &slab_bytes, err) != SDG_OK)
        goto fail;
    if (bind_networks(m, m->header_only, slab_bytes, err) != SDG_OK)
        goto fail;

    const clip_config *cc = clip_get_config(m->clip);
    const unet_config *uc = unet_get_config(m->unet);
    const vae_config *vc = vae_get_config(m->vae);
    if (uc->context_dim != cc->width) {
        sdg__fail(err, SDG_ERR_SHAPE, "%s: the UNet expects a %d-wide text context but the text "
                  "encoder is %d wide", path, uc->context_dim, cc->width);
        goto fail;
    }
    // Every size the networks take from a shape must be the size the pipeline gives them: the
    // networks trust their config, so a file that disagrees would read or write past the
    // pipeline's buffers (found by fuzzing mutated headers, tests/fuzz/).
    if (cc->n_pos != SDG_TOKENIZER_CTX) {
        sdg__fail(err, SDG_ERR_SHAPE, "%s: the text encoder has %d positions, but prompts are "
                  "encoded in windows of %d tokens", path, cc->n_pos, SDG_TOKENIZER_CTX);
        goto fail;
    }
    if (vc->in_ch != 3 || vc->out_ch != 3) {
        sdg__fail(err, SDG_ERR_SHAPE, "%s: the autoencoder maps %d-channel images to %d-channel "
                  "images; pictures have 3 (RGB)", path, vc->in_ch, vc->out_ch);
        goto fail;
    }
    if (vc->z_ch != SDG_LATENT_CHANNELS) {
        sdg__fail(err, SDG_ERR_SHAPE, "%s: the autoencoder has %d latent channels; Stable "
                  "Diffusion 1.x latents have %d", path, vc->z_ch, SDG_LATENT_CHANNELS);
        goto fail;
    }
    if (uc->out_ch != vc->z_ch || (uc->in_ch != vc->z_ch && uc->in_ch != 2 * vc->z_ch + 1)) {
        sdg__fail(err, SDG_ERR_SHAPE, "%s: UNet channels %d->%d do not fit the autoencoder's %d "
                  "latent channels", path, uc->in_ch, uc->out_ch, vc->z_ch);
        goto fail;
    }

    char *vocab = sdg_tokenizer_find(params->vocab_path, path,
                                     params->models_dir ? params->models_dir : SDG_MODELS_DIR, err);
    if (!vocab)
        goto fail;
    m->tok = sdg_tokenizer_load(vocab, err);
    g_free(vocab);
    if (!m->tok)
        goto fail;
    if (sdg_tokenizer_vocab_size(m->tok) > cc->vocab) {
        sdg__fail(err, SDG_ERR_SHAPE, "%s: the vocabulary has %d tokens but the text encoder "
                  "only %d", path, sdg_tokenizer_vocab_size(m->tok), cc->vocab);
        goto fail;
    }
    m->pad_id = sdg_tokenizer_eos(m->tok);
    // Every check above looks at names and shapes only; now the data: converted, scanned for
    // NaN and infinite values, in one pass over the file.
    if (sdg_wb_read(m->wb, err) != SDG_OK)
        goto fail;

    sched_init_sd(&m->sched);
    m->prediction = SDG_PREDICT_EPS;   // every SD 1.x checkpoint
    m->info = (sdg_model_info){
        .unet_in_channels = uc->in_ch,
        .unet_model_channels = uc->model_ch,
        .context_dim = uc->context_dim,
        .text_width = cc->width,
        .text_layers = cc->n_layers,
        .vae_scale = vc->downscale,
        .native_size = 512,
        .scale_factor = 0.18215f,
    };
    // Our own small default model records what its shapes cannot tell in the file's metadata:
    // the size it was trained at and its latent scale.
    const char *native = st_metadata(m->file, "sdg.native_size");
    if (native) {
        long v = strtol(native, NULL, 10);
        if (v < 32 || v > 4096 || v % 8) {
            sdg__fail(err, SDG_ERR_FORMAT, "%s: metadata sdg.native_size '%s' is not a size",
                      path, native);
            goto fail;
        }
        m->info.native_size = (int)v;
    }
    const char *scale = st_metadata(m->file, "sdg.scale_factor");
    if (scale) {
        char *end = NULL;
        double v = g_ascii_strtod(scale, &end);
        if (!end || *end || !(v > 1e-4 && v < 1e4)) {
            sdg__fail(err, SDG_ERR_FORMAT, "%s: metadata sdg.scale_factor '%s' is not a scale",
                      path, scale);
            goto fail;
        }
        m->info.scale_factor = (float)v;
    }
    return m;

fail:
    sdg_model_free(m);
    return NULL;
}

void sdg_model_get_info(const sdg_model *model, sdg_model_info *info)
{
    if (model && info)
        *info = model->info;
}

int sdg_model_tokenize(const sdg_model *model, const char *text, int32_t ids[77])
{
    if (!model || !ids)
        return -1;
    return sdg_tokenizer_tokenize77(model->tok, text ? text : "", model->pad_id, ids, NULL);
}

// ---------------------------------------------------------------------------------------------
// Contexts

sdg_ctx *sdg_ctx_new(const sdg_model *model, int n_threads, sdg_error *err)
{
    sdg__error_clear(err);
    if (!model) {
        sdg__fail(err, SDG_ERR_INVALID_ARG, "no model given");
        return NULL;
    }
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 256)
        n_threads = 256;
    sdg_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        sdg__fail(err, SDG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    ctx->model = model;
    ctx->n_threads = n_threads;
    sdg__exec_init(&ctx->ex, n_threads);
    atomic_init(&ctx->cancel, 0);
    return ctx;
}

void sdg_ctx_free(sdg_ctx *ctx)
{
    if (!ctx)
        return;
    sdg__exec_free(&ctx->ex);
    free(ctx);
}

void sdg_ctx_cancel(sdg_ctx *ctx)
{
    if (ctx)
        atomic_store(&ctx->cancel, 1);
}

// ---------------------------------------------------------------------------------------------
// Generation requests

sdg_gen_params sdg_gen_default_params(void)
{
    return (sdg_gen_params){
        .prompt = "",
        .negative_prompt = NULL,
        .width = 512,
        .height = 512,
        .sampler = SDG_SAMPLER_EULER_A,
        .schedule = SDG_SCHEDULE_DEFAULT,
        .steps = 20,
        .cfg_scale = 7.0f,
        .seed = 0,
        .batch_count = 1,
        .clip_skip = 1,
        .strength = 0.75f,
        .inpaint_blend = true,
    };
}

static bool image_ok(const sdg_image *img, int channels)
{
    return img && img->data && img->channels == channels && img->width >= 1 &&
           img->height >= 1 && img->width <= SDG_MAX_SIDE && img->height <= SDG_MAX_SIDE;
}

// Checks everything that does not need the model's tensors, so a bad request fails before any
// work starts.
static sdg_status check_params(const sdg_ctx *ctx, const sdg_gen_params *p, sdg_error *err)
{
    const sdg_model_info *info = &ctx->model->info;
    int ds = info->vae_scale;
    if (p->prompt && !g_utf8_validate(p->prompt, -1, NULL))
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "the prompt is not valid UTF-8 text");
    if (p->negative_prompt && !g_utf8_validate(p->negative_prompt, -1, NULL))
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "the negative prompt is not valid UTF-8 text");
    if ((unsigned)p->sampler >= SDG_SAMPLER_COUNT)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "unknown sampler %d", (int)p->sampler);
    if ((unsigned)p->schedule >= SDG_SCHEDULE_COUNT)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "unknown schedule %d", (int)p->schedule);
    if ((unsigned)p->precision >= SDG_PRECISION_COUNT)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "unknown precision %d", (int)p->precision);
    if (p->steps < 1 || p->steps > 1000)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "steps must be between 1 and 1000 (got %d)",
                         p->steps);
    if (!isfinite(p->cfg_scale) || p->cfg_scale < 0.0f || p->cfg_scale > 100.0f)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "the CFG scale must be between 0 and 100");
    if (p->batch_count < 1 || p->batch_count > 256)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "the batch count must be between 1 and 256 "
                         "(got %d)", p->batch_count);
    if (p->clip_skip < 1 || p->clip_skip > info->text_layers)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "clip skip must be between 1 and %d (got %d)",
                         info->text_layers, p->clip_skip);
    if (p->mask && !p->init_image)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "a mask needs an init image to inpaint");
    int w = p->width, h = p->height;
    if (p->init_image) {
        if (!image_ok(p->init_image, 3))
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "the init image must be an RGB image of "
                             "1 to %d pixels per side", SDG_MAX_SIDE);
        w = p->init_image->width;
        h = p->init_image->height;
        if (!isfinite(p->strength) || p->strength < 0.0f || p->strength > 1.0f)
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "strength must be between 0 and 1 (got %g)",
                             (double)p->strength);
    }
    if (p->mask) {
        if (!image_ok(p->mask, 1))
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "the mask must be a one-channel image");
        if (p->mask->width != w || p->mask->height != h)
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "the mask is %dx%d but the image is %dx%d",
                             p->mask->width, p->mask->height, w, h);
    }
    if (w < ds || h < ds || w > SDG_MAX_SIDE || h > SDG_MAX_SIDE || w % ds || h % ds)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "width and height must be multiples of %d "
                         "between %d and %d (got %dx%d)", ds, ds, SDG_MAX_SIDE, w, h);
    return SDG_OK;
}

sdg_status sdg_generate(sdg_ctx *ctx, const sdg_gen_params *params, sdg_result **out,
                        sdg_error *err)
{
    sdg__error_clear(err);
    if (out)
        *out = NULL;
    if (!ctx || !params || !out)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "sdg_generate needs a context, parameters "
                         "and a result pointer");
    atomic_store(&ctx->cancel, 0);
    if (ctx->model->header_only)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "%s was loaded header-only (for estimates): "
                         "load it without header_only to generate", ctx->model->path);
    sdg_status st = check_params(ctx, params, err);
    if (st != SDG_OK)
        return st;
    return sdg__pipeline_generate(ctx, params, out, err);
}

sdg_status sdg_ctx_estimate(sdg_ctx *ctx, const sdg_gen_params *params, sdg_memory_estimate *out,
                            sdg_error *err)
{
    sdg__error_clear(err);
    if (out)
        memset(out, 0, sizeof *out);
    if (!ctx || !params || !out)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "sdg_ctx_estimate needs a context, parameters "
                         "and an estimate to fill");
    sdg_status st = check_params(ctx, params, err);
    if (st != SDG_OK)
        return st;
    return sdg__pipeline_estimate(ctx, params, out, err);
}

void sdg_result_free(sdg_result *res)
{
    if (!res)
        return;
    for (int i = 0; i < res->n_images; i++)
        sdg_image_free(res->images ? res->images[i] : NULL);
    free(res->images);
    free(res->latents);
    free(res);
}

// ---------------------------------------------------------------------------------------------
// Tensor files

sdg_status sdg_tensor_read(const char *path, const char *name, int n_dims, const int64_t *shape,
                           float **out, sdg_error *err)
{
    sdg__error_clear(err);
    if (!path || !name || !out || n_dims < 0 || n_dims > ST_MAX_DIMS || (n_dims && !shape))
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "sdg_tensor_read: bad arguments");
    *out = NULL;
    st_file *f = st_open(path, err);
    if (!f)
        return err ? err->status : SDG_ERR_IO;
    sdg_status st = SDG_OK;
    const st_tensor *t = st_find(f, name);
    bool same = t && t->n_dims == n_dims;
    for (int i = 0; same && i < n_dims; i++)
        same = t->shape[i] == shape[i];
    if (!t) {
        st = sdg__fail(err, SDG_ERR_SHAPE, "%s: no tensor named '%s'", path, name);
    } else if (!same) {
        GString *want = g_string_new("[");
        for (int i = 0; i < n_dims; i++)
            g_string_append_printf(want, "%s%lld", i ? "," : "", (long long)shape[i]);
        g_string_append_c(want, ']');
        GString *got = g_string_new("[");
        for (int i = 0; i < t->n_dims; i++)
            g_string_append_printf(got, "%s%lld", i ? "," : "", (long long)t->shape[i]);
        g_string_append_c(got, ']');
        st = sdg__fail(err, SDG_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected %s", path, name,
                       got->str, want->str);
        g_string_free(want, TRUE);
        g_string_free(got, TRUE);
    } else if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16) {
        st = sdg__fail(err, SDG_ERR_FORMAT, "%s: tensor '%s' is %s, expected a float tensor", path,
                       name, st_dtype_name(t->dtype));
    } else {
        float *data = malloc((size_t)(t->n_elements ? t->n_elements : 1) * sizeof(float));
        if (!data)
            st = sdg__fail(err, SDG_ERR_NOMEM, "out of memory reading %s", path);
        else if ((st = st_read_f32(f, t, data, err)) != SDG_OK)
            free(data);
        else
            *out = data;
    }
    st_close(f);
    return st;
}

sdg_status sdg_tensor_write(const char *path, const char *name, int n_dims, const int64_t *shape,
                            const float *data, sdg_error *err)
{
    sdg__error_clear(err);
    if (!path || !name || !data || n_dims < 0 || n_dims > ST_MAX_DIMS || (n_dims && !shape))
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "sdg_tensor_write: bad arguments");
    st_write_tensor t = { .name = name, .dtype = ST_F32, .n_dims = n_dims, .data = data };
    for (int i = 0; i < n_dims; i++)
        t.shape[i] = shape[i];
    return st_write(path, &t, 1, NULL, err);
}
