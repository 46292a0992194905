/*
 * sd.c - the public entry points of sdg.h: names, images, loading a checkpoint into its three
 * networks and tokenizer, contexts, checking a generation request, tensor files.
 *
 * Not here: the generation itself (pipeline/pipeline.c) and any network arithmetic.
 */
#include "memory.h"
#include "tensor/gemm.h"
#include "pipeline/pipeline.h"
#include "lora/lora.h"

#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------------
// Names

static const char *const sampler_names[SDG_SAMPLER_COUNT] = {
    [SDG_SAMPLER_EULER] = "euler",       [SDG_SAMPLER_EULER_A] = "euler_a",
    [SDG_SAMPLER_HEUN] = "heun",         [SDG_SAMPLER_DPMPP_2M] = "dpmpp_2m",
    [SDG_SAMPLER_LMS] = "lms",           [SDG_SAMPLER_DDIM] = "ddim",
    [SDG_SAMPLER_LCM] = "lcm",           [SDG_SAMPLER_DPMPP_2M_SDE] = "dpmpp_2m_sde",
    [SDG_SAMPLER_DPMPP_SDE] = "dpmpp_sde",
};
static const char *const schedule_names[SDG_SCHEDULE_COUNT] = {
    [SDG_SCHEDULE_DEFAULT] = "default", [SDG_SCHEDULE_KARRAS] = "karras",
    [SDG_SCHEDULE_SIMPLE] = "simple", [SDG_SCHEDULE_EXPONENTIAL] = "exponential",
    [SDG_SCHEDULE_SGM_UNIFORM] = "sgm_uniform", [SDG_SCHEDULE_DDIM_UNIFORM] = "ddim_uniform",
    [SDG_SCHEDULE_TRAILING] = "trailing",
};
static const char *const model_sampling_names[SDG_MODEL_SAMPLING_COUNT] = {
    [SDG_MODEL_SAMPLING_DEFAULT] = "default", [SDG_MODEL_SAMPLING_LCM] = "lcm",
};

static const char *const precision_names[SDG_PRECISION_COUNT] = {
    [SDG_PRECISION_DEFAULT] = "default", [SDG_PRECISION_EXACT] = "exact",
    [SDG_PRECISION_FAST] = "fast",
};

static const char *const family_names[SDG_FAMILY_COUNT] = {
    [SDG_FAMILY_SD1] = "SD 1.x", [SDG_FAMILY_SD2] = "SD 2.x", [SDG_FAMILY_SDXL] = "SDXL",
};

static const char *const prediction_names[SDG_PREDICTION_COUNT] = {
    [SDG_PREDICTION_AUTO] = "auto", [SDG_PREDICTION_EPS] = "eps", [SDG_PREDICTION_V] = "v",
};

static const char *const decoder_names[SDG_DECODER_COUNT] = {
    [SDG_DECODER_VAE] = "vae", [SDG_DECODER_TAESD] = "taesd",
};

static const char *const hires_upscale_names[SDG_HIRES_UPSCALE_COUNT] = {
    [SDG_HIRES_LATENT] = "latent", [SDG_HIRES_PIXEL] = "pixel",
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

const char *sdg_model_sampling_name(sdg_model_sampling m)
{
    return (unsigned)m < SDG_MODEL_SAMPLING_COUNT ? model_sampling_names[m] : "unknown";
}

bool sdg_model_sampling_from_name(const char *name, sdg_model_sampling *out)
{
    int i = name_index(model_sampling_names, SDG_MODEL_SAMPLING_COUNT, name);
    if (i >= 0 && out)
        *out = (sdg_model_sampling)i;
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

const char *sdg_family_name(sdg_family f)
{
    return (unsigned)f < SDG_FAMILY_COUNT ? family_names[f] : "unknown";
}

const char *sdg_prediction_name(sdg_prediction p)
{
    return (unsigned)p < SDG_PREDICTION_COUNT ? prediction_names[p] : "unknown";
}

bool sdg_prediction_from_name(const char *name, sdg_prediction *out)
{
    int i = name_index(prediction_names, SDG_PREDICTION_COUNT, name);
    if (i >= 0 && out)
        *out = (sdg_prediction)i;
    return i >= 0;
}

const char *sdg_decoder_name(sdg_decoder d)
{
    return (unsigned)d < SDG_DECODER_COUNT ? decoder_names[d] : "unknown";
}

bool sdg_decoder_from_name(const char *name, sdg_decoder *out)
{
    int i = name_index(decoder_names, SDG_DECODER_COUNT, name);
    if (i >= 0 && out)
        *out = (sdg_decoder)i;
    return i >= 0;
}

const char *sdg_hires_upscale_name(sdg_hires_upscale u)
{
    return (unsigned)u < SDG_HIRES_UPSCALE_COUNT ? hires_upscale_names[u] : "unknown";
}

bool sdg_hires_upscale_from_name(const char *name, sdg_hires_upscale *out)
{
    int i = name_index(hires_upscale_names, SDG_HIRES_UPSCALE_COUNT, name);
    if (i >= 0 && out)
        *out = (sdg_hires_upscale)i;
    return i >= 0;
}

const char *sdg_kernels_name(sdg_precision p)
{
    return sdg_gemm_kernels_label(sdg__precision_is_fast(p));
}

// ---------------------------------------------------------------------------------------------
// Images

#define SDG_MAX_SIDE 4096
// SDXL's size conditioning: sizes the model may be told about (trained up to 4096 or so).
#define SDG_MAX_SIZE_COND 16384

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
    for (int i = 0; i < FAMILY_MAX_ENCODERS; i++)
        clip_free(m->te[i]);
    unet_free(m->unet);
    vae_free(m->vae);
    taesd_free(m->taesd);
    sdg_wb_free(m->taesd_wb);
    st_close(m->taesd_file);
    sdg_tokenizer_free(m->tok);
    sdg_wb_free(m->wb);
    st_close(m->file);
    diffusers_info_clear(&m->dinfo);
    g_free(m->path);
    g_free(m->base);
    g_free(m->embeddings_dir);
    g_free(m->models_dir);
    free(m);
}

// Binds m's text encoders and UNet to wb: the model's own binder, or a LoRA overlay of it
// (which must see the same calls, so that it shares every tensor it does not patch).
static sdg_status bind_conditioning(const sdg_model *m, sdg_weights *wb, clip_model **te,
                                    unet_model **unet, sdg_error *err)
{
    sdg_status st;
    const family_hparams *hp = &m->hparams;
    for (int i = 0; i < m->spec->n_encoders; i++) {
        const char *prefix = m->layout->te[i];
        bool open_clip = sdg_wb_find(wb, "%stoken_embedding.weight", prefix) != NULL;
        // diffusers' configs name the activation (transformers' layout for every encoder).
        clip_act act = !m->diffusers ? CLIP_ACT_LAYOUT
                       : m->dinfo.gelu[i] ? CLIP_ACT_GELU : CLIP_ACT_QUICK_GELU;
        int heads = m->diffusers ? m->dinfo.heads[i]
                    : open_clip ? hp->openclip_heads : hp->clip_heads;
        te[i] = clip_load(wb, prefix, heads, act);
        if ((st = sdg_wb_status(wb, err)) != SDG_OK)
            return st;
    }
    int heads = hp->unet_heads, head_dim = hp->unet_head_dim;
    if (!heads && !head_dim) {
        heads = m->spec->unet_heads;
        head_dim = m->spec->unet_head_dim;
    }
    *unet = unet_load(wb, m->layout->unet, heads, head_dim);
    return sdg_wb_status(wb, err);
}

// Binds the networks to m->file under the layout's prefixes; shapes_only checks and counts
// without converting; slab_bytes > 0 puts the converted copies in one block of that size
// (sdg_wb_reserve).
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
    if ((st = bind_conditioning(m, m->wb, m->te, &m->unet, err)) != SDG_OK)
        return st;
    m->vae = vae_load(m->wb, m->layout->vae);
    if ((st = sdg_wb_status(m->wb, err)) != SDG_OK)
        return st;
    if (!m->te[0] || !m->unet || !m->vae)
        return sdg__fail(err, SDG_ERR_NOMEM, "out of memory loading %s", m->path);
    m->copy_bytes = sdg_wb_owned_bytes(m->wb);
    m->mapped_bytes = sdg_wb_mapped_bytes(m->wb);
    return SDG_OK;
}

static void unbind_networks(sdg_model *m)
{
    for (int i = 0; i < FAMILY_MAX_ENCODERS; i++) {
        clip_free(m->te[i]);
        m->te[i] = NULL;
    }
    unet_free(m->unet);
    vae_free(m->vae);
    sdg_wb_free(m->wb);
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
    char need_s[32], avail_s[32];
    sdg__mem_format(need, need_s, sizeof need_s);
    sdg__mem_format(avail, avail_s, sizeof avail_s);
    return sdg__fail(err, SDG_ERR_NOMEM, "loading %s needs %s (its weights, packed for the matrix products) but only %s "
                     "is available%s; close other programs or use a smaller model", m->base, need_s,
                     avail_s, sdg__mem_source_phrase(source));
}

// Which family and layout the file is, or a sentence saying why it is none the engine runs.
static sdg_status identify(sdg_model *m, sdg_error *err)
{
    if (m->diffusers) {
        // diffusers_open found the family in model_index.json and renamed every tensor.
        m->layout = family_diffusers_layout(m->dinfo.family);
        m->spec = family_get(m->layout->family);
        m->enc = family_encoders(m->layout, m->spec);
        memset(&m->hparams, 0, sizeof m->hparams);
        m->hparams.unet_heads = m->dinfo.unet_heads;
        m->hparams.unet_head_dim = m->dinfo.unet_head_dim;
        return SDG_OK;
    }
    const char *foreign = family_unsupported(m->file);
    if (foreign)
        return sdg__fail(err, SDG_ERR_UNSUPPORTED, "%s: this is %s, which the engine does not "
                         "run (it runs SD 1.x, SD 2.x and SDXL)", m->base, foreign);
    m->layout = family_detect(m->file);
    if (!m->layout)
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: not a Stable Diffusion checkpoint: no text "
                         "encoder of a known layout (for SD 1.x, tensor '%s' is missing)", m->base,
                         "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight");
    m->spec = family_get(m->layout->family);
    m->enc = family_encoders(m->layout, m->spec);
    char unet_key[256];
    snprintf(unet_key, sizeof unet_key, "%sinput_blocks.0.0.weight", m->layout->unet);
    if (!st_find(m->file, unet_key))
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: the text encoder is %s's, but there is no UNet "
                         "(tensor '%s' is missing)", m->base, sdg_family_name(m->spec->id),
                         unet_key);
    return family_read_hparams(m->file, &m->hparams, err);
}

// Every size the networks take from a shape must be the size the pipeline gives them: the
// networks trust their config, so a file that disagrees would read or write past the
// pipeline's buffers (found by fuzzing mutated headers, tests/fuzz/). Also: the parts of one
// family, not of two.
static sdg_status check_networks(sdg_model *m, sdg_error *err)
{
    const family_spec *spec = m->spec;
    const unet_config *uc = unet_get_config(m->unet);
    const vae_config *vc = vae_get_config(m->vae);
    const char *fam = sdg_family_name(spec->id);
    int ctx_width = 0;
    for (int i = 0; i < spec->n_encoders; i++) {
        const clip_config *cc = clip_get_config(m->te[i]);
        ctx_width += cc->width;
        if (cc->n_pos != SDG_TOKENIZER_CTX)
            return sdg__fail(err, SDG_ERR_SHAPE, "%s: the text encoder %s has %d positions, but "
                             "prompts are encoded in windows of %d tokens", m->base,
                             m->layout->te[i], cc->n_pos, SDG_TOKENIZER_CTX);
        if (cc->n_layers <= m->enc[i].from_end)
            return sdg__fail(err, SDG_ERR_SHAPE, "%s: the text encoder %s has %d layers; %s "
                             "takes the output of layer %d from the end", m->base,
                             m->layout->te[i], cc->n_layers, fam, m->enc[i].from_end + 1);
        if (m->enc[i].pooled && cc->proj_dim == 0)
            return sdg__fail(err, SDG_ERR_SHAPE, "%s: the text encoder %s has no projection "
                             "(text_projection) of its %d-wide output", m->base,
                             m->layout->te[i], cc->width);
    }
    if (uc->context_dim != ctx_width)
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: the UNet expects a %d-wide text context but "
                         "the %s text encoder%s %d wide: the file mixes the parts of two "
                         "families", m->base, uc->context_dim, fam,
                         spec->n_encoders > 1 ? "s are together" : " is", ctx_width);
    if (spec->size_cond) {
        int pooled = clip_get_config(m->te[spec->n_encoders - 1])->proj_dim;
        int want = pooled + 6 * FAMILY_SIZE_EMB_DIM;
        if (uc->adm_in == 0)
            return sdg__fail(err, SDG_ERR_SHAPE, "%s: the text encoders are SDXL's but the UNet "
                             "has no label_emb (it is an SD 1.x/2.x UNet): the file mixes the "
                             "parts of two families", m->base);
        if (uc->adm_in != want)
            return sdg__fail(err, SDG_ERR_SHAPE, "%s: the UNet's label_emb takes a %d-wide "
                             "vector, but the pooled text embedding (%d) and the six size "
                             "embeddings (%d each) make %d", m->base, uc->adm_in, pooled,
                             FAMILY_SIZE_EMB_DIM, want);
    } else if (uc->adm_in != 0) {
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: the UNet has a label_emb (an SDXL UNet) but "
                         "the text encoder is %s's: the file mixes the parts of two families",
                         m->base, fam);
    }
    if (vc->in_ch != 3 || vc->out_ch != 3)
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: the autoencoder maps %d-channel images to "
                         "%d-channel images; pictures have 3 (RGB)", m->base, vc->in_ch,
                         vc->out_ch);
    if (vc->z_ch != SDG_LATENT_CHANNELS)
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: the autoencoder has %d latent channels; %s "
                         "latents have %d", m->base, vc->z_ch, fam, SDG_LATENT_CHANNELS);
    if (uc->out_ch != vc->z_ch || (uc->in_ch != vc->z_ch && uc->in_ch != 2 * vc->z_ch + 1))
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: UNet channels %d->%d do not fit the "
                         "autoencoder's %d latent channels", m->base, uc->in_ch, uc->out_ch,
                         vc->z_ch);
    return SDG_OK;
}

// A1111's test for SD 2.x files that do not say (modules/sd_models_config.py
// is_using_v_parameterization_for_sd2): x = 0.5 everywhere [1,4,8,8], context 0.5 [1,2,dim],
// t = 999; a v model's mean(out - x) is below -1, an eps model's is not.
static sdg_status probe_v_prediction(sdg_model *m, bool *is_v, sdg_error *err)
{
    const unet_config *uc = unet_get_config(m->unet);
    enum { H = 8, W = 8, N_CTX = 2 };
    size_t n_x = (size_t)uc->in_ch * H * W, n_out = (size_t)uc->out_ch * H * W;
    size_t n_ctx = (size_t)N_CTX * uc->context_dim;
    float *x = malloc(n_x * sizeof *x), *out = malloc(n_out * sizeof *out);
    float *ctx = malloc(n_ctx * sizeof *ctx);
    float t = 999.0f;
    sdg_status st = SDG_OK;
    if (!x || !out || !ctx) {
        st = sdg__fail(err, SDG_ERR_NOMEM, "out of memory testing %s", m->base);
        goto done;
    }
    for (size_t i = 0; i < n_x; i++)
        x[i] = 0.5f;
    for (size_t i = 0; i < n_ctx; i++)
        ctx[i] = 0.5f;
    long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
    sdg_exec ex;
    sdg__exec_init(&ex, n_cpu > 0 ? (int)(n_cpu < 256 ? n_cpu : 256) : 1);
    unet_cond cond = { ctx, N_CTX, NULL };   // SD 2.x: no vector y
    ex.dry = true;
    unet_forward(&ex, m->unet, x, 1, H, W, &t, &cond, out);
    ex.dry = false;
    st = sdg__exec_reserve(&ex, ex.arena.peak, err);
    if (st == SDG_OK) {
        ex.arena.used = 0;
        unet_forward(&ex, m->unet, x, 1, H, W, &t, &cond, out);
        double mean = 0.0;
        for (size_t i = 0; i < n_out; i++)
            mean += (double)out[i] - 0.5;
        *is_v = mean / (double)n_out < -1.0;
    }
    sdg__exec_free(&ex);
done:
    free(x);
    free(out);
    free(ctx);
    return st;
}

// What the UNet predicts: the option, else what the file states, else (SD 2.x) the test
// evaluation, else the family's. An option that contradicts the file is followed, and the
// source says so.
static sdg_status choose_prediction(sdg_model *m, sdg_prediction option, sdg_error *err)
{
    sdg_prediction stated = m->dinfo.prediction;
    const char *source = "scheduler/scheduler_config.json prediction_type";
    sdg_status st = SDG_OK;
    if (!m->diffusers)
        st = family_file_prediction(m->file, m->path, &stated, &source, m->source_buf,
                                    sizeof m->source_buf, err);
    if (st != SDG_OK)
        return st;
    if (option != SDG_PREDICTION_AUTO) {
        // The option wins (a mislabelled file can be run as what it is), and says what it
        // overrode: the CLI and the plug-in show this sentence.
        m->prediction = option;
        m->prediction_source = "option";
        if (stated != SDG_PREDICTION_AUTO && stated != option) {
            char said[200];
            snprintf(said, sizeof said, "%s", source);
            snprintf(m->source_buf, sizeof m->source_buf, "option, overriding %s, which says %s",
                     said, sdg_prediction_name(stated));
            m->prediction_source = m->source_buf;
        }
        return SDG_OK;
    }
    if (stated != SDG_PREDICTION_AUTO) {
        m->prediction = stated;
        m->prediction_source = source;
        return SDG_OK;
    }
    if (m->spec->id == SDG_FAMILY_SD2 && !m->header_only) {
        bool is_v = false;
        if ((st = probe_v_prediction(m, &is_v, err)) != SDG_OK)
            return st;
        m->prediction = is_v ? SDG_PREDICTION_V : SDG_PREDICTION_EPS;
        m->prediction_source = "test evaluation";
        return SDG_OK;
    }
    m->prediction = m->spec->prediction;
    m->prediction_source = "family default";
    return SDG_OK;
}

// The family's TAESD decoder: the explicit path (a file, or a diffusers AutoencoderTiny folder),
// else <stem>_decoder.safetensors or <stem>/diffusion_pytorch_model.safetensors (stem taesd, or
// taesdxl for SDXL) beside the model, then in models_dir. NULL when none is there.
static char *find_taesd(const sdg_model *m, const char *explicit_path, const char *models_dir)
{
    if (explicit_path)
        return g_file_test(explicit_path, G_FILE_TEST_IS_DIR)
                   ? g_build_filename(explicit_path, "diffusion_pytorch_model.safetensors", NULL)
                   : g_strdup(explicit_path);
    const char *stem = m->spec->id == SDG_FAMILY_SDXL ? "taesdxl" : "taesd";
    char *beside = g_path_get_dirname(m->path);
    const char *dirs[2] = { beside, models_dir };
    char *found = NULL;
    for (int d = 0; d < 2 && !found; d++) {
        if (!dirs[d] || !*dirs[d])
            continue;
        char *file = g_strdup_printf("%s_decoder.safetensors", stem);
        char *cands[2] = { g_build_filename(dirs[d], file, NULL),
                           g_build_filename(dirs[d], stem, "diffusion_pytorch_model.safetensors",
                                            NULL) };
        for (int c = 0; c < 2; c++) {
            if (!found && g_file_test(cands[c], G_FILE_TEST_IS_REGULAR))
                found = g_strdup(cands[c]);
            g_free(cands[c]);
        }
        g_free(file);
    }
    g_free(beside);
    return found;
}

// The released encoder beside a released decoder: taesd_decoder.safetensors ->
// taesd_encoder.safetensors, when it exists (else NULL).
static char *taesd_sibling_encoder(const char *decoder_path)
{
    const char *suffix = "_decoder.safetensors";
    if (!g_str_has_suffix(decoder_path, suffix))
        return NULL;
    char *p = g_strdup_printf("%.*s_encoder.safetensors",
                              (int)(strlen(decoder_path) - strlen(suffix)), decoder_path);
    if (g_file_test(p, G_FILE_TEST_IS_REGULAR))
        return p;
    g_free(p);
    return NULL;
}

// The released decoder and encoder as one view: "decoder.<key>", "encoder.<key>".
static char *taesd_pair_name(int part, const char *name, int n_dims, int64_t *shape,
                             int *new_n_dims, void *user)
{
    (void)n_dims, (void)shape, (void)user;
    *new_n_dims = n_dims;
    size_t n = strlen(name) + 10;
    char *out = malloc(n);   // freed by st_close
    if (out)
        snprintf(out, n, "%s%s", part == 0 ? "decoder." : "encoder.", name);
    return out;
}

// Finds a TAESD network's prefix in wb among prefixes: the one whose first and second layers
// (first_key, "<prefix>N.conv.0.weight") are there, or NULL.
static const char *taesd_prefix(sdg_weights *wb, const char *const *prefixes, int n,
                                const char *first_key, const char *block_key)
{
    for (int i = 0; i < n; i++)
        if (sdg_wb_find(wb, "%s%s", prefixes[i], first_key) &&
            sdg_wb_find(wb, "%s%s", prefixes[i], block_key))
            return prefixes[i];
    return NULL;
}

// Loads the TAESD decoder at path (keys of the released file, of diffusers' AutoencoderTiny
// "decoder.layers.*", or "decoder.*") and the encoder when there is one: in the same file
// ("encoder.layers.*", "encoder.*": an AutoencoderTiny folder, a combined file), or the released
// taesd_encoder.safetensors beside a released taesd_decoder.safetensors.
static sdg_status load_taesd(sdg_model *m, const char *path, sdg_error *err)
{
    m->taesd_file = st_open(path, err);
    if (!m->taesd_file)
        return err ? err->status : SDG_ERR_IO;
    char *enc_path = NULL;
    if (!st_find(m->taesd_file, "encoder.0.weight") &&
        !st_find(m->taesd_file, "encoder.layers.0.weight") &&
        (enc_path = taesd_sibling_encoder(path))) {
        st_file *parts[2] = { m->taesd_file, st_open(enc_path, err) };
        g_free(enc_path);
        m->taesd_file = NULL;
        if (!parts[1]) {
            st_close(parts[0]);
            return err ? err->status : SDG_ERR_IO;
        }
        m->taesd_file = st_compose(path, parts, 2, taesd_pair_name, NULL, err);
        if (!m->taesd_file)
            return err ? err->status : SDG_ERR_FORMAT;
    }
    m->taesd_wb = sdg_wb_new(m->taesd_file, err);
    if (!m->taesd_wb)
        return SDG_ERR_NOMEM;
    sdg_wb_set_shapes_only(m->taesd_wb, m->header_only);
    static const char *const dec_prefixes[] = { "", "decoder.layers.", "decoder." };
    static const char *const enc_prefixes[] = { "encoder.layers.", "encoder." };
    const char *prefix = taesd_prefix(m->taesd_wb, dec_prefixes, 3, "1.weight", "3.conv.0.weight");
    if (!prefix)
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: not a TAESD decoder (no tensors 1.weight, "
                         "3.conv.0.weight, with or without a decoder. prefix)", path);
    const char *enc = taesd_prefix(m->taesd_wb, enc_prefixes, 2, "0.weight", "1.conv.0.weight");
    m->taesd = taesd_load(m->taesd_wb, prefix, enc);
    sdg_status st = sdg_wb_status(m->taesd_wb, err);
    if (st == SDG_OK && !m->header_only)
        st = sdg_wb_read(m->taesd_wb, err);
    if (st != SDG_OK)
        return st;
    if (taesd_latent_channels(m->taesd) != SDG_LATENT_CHANNELS)
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: the TAESD decoder takes %d latent channels; "
                         "%s latents have %d", path, taesd_latent_channels(m->taesd),
                         sdg_family_name(m->spec->id), SDG_LATENT_CHANNELS);
    m->copy_bytes += sdg_wb_owned_bytes(m->taesd_wb);
    return SDG_OK;
}

// A model with its file (or diffusers folder) opened and its family and layout identified,
// nothing bound yet; NULL with err's sentence otherwise. The start of sdg_model_load, and all
// that sdg_checkpoint_family needs.
static sdg_model *open_model(const char *path, sdg_error *err)
{
    bool folder = g_file_test(path, G_FILE_TEST_IS_DIR);
    if (folder && !diffusers_is_folder(path)) {
        sdg__fail(err, SDG_ERR_UNSUPPORTED, "%s is a folder but not a diffusers pipeline (it has "
                  "no model_index.json); give a .safetensors checkpoint or a diffusers folder",
                  path);
        return NULL;
    }
    sdg_model *m = calloc(1, sizeof *m);
    if (!m) {
        sdg__fail(err, SDG_ERR_NOMEM, "out of memory loading %s", path);
        return NULL;
    }
    m->path = g_strdup(path);
    m->base = g_path_get_basename(path);
    m->diffusers = folder;
    m->file = folder ? diffusers_open(path, &m->dinfo, err) : st_open(path, err);
    if (!m->file || identify(m, err) != SDG_OK) {
        sdg_model_free(m);
        return NULL;
    }
    return m;
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
    if ((unsigned)params->prediction >= SDG_PREDICTION_COUNT) {
        sdg__fail(err, SDG_ERR_INVALID_ARG, "unknown prediction type %d", (int)params->prediction);
        return NULL;
    }
    sdg_model *m = open_model(path, err);
    if (!m)
        return NULL;

    m->header_only = params->header_only;
    m->embeddings_dir = params->embeddings_dir && *params->embeddings_dir
                            ? g_strdup(params->embeddings_dir) : NULL;
    m->models_dir = g_strdup(params->models_dir ? params->models_dir : SDG_MODELS_DIR);
    size_t slab_bytes = 0;
    if (!m->header_only && check_load_memory(m, &slab_bytes, err) != SDG_OK)
        goto fail;
    if (bind_networks(m, m->header_only, slab_bytes, err) != SDG_OK ||
        check_networks(m, err) != SDG_OK)
        goto fail;

    // A diffusers folder brings its own (tokenizer/vocab.json + merges.txt).
    const char *vocab_path = params->vocab_path;
    if (!vocab_path && m->diffusers)
        vocab_path = m->dinfo.tokenizer;
    char *vocab = sdg_tokenizer_find(vocab_path, path,
                                     params->models_dir ? params->models_dir : SDG_MODELS_DIR, err);
    if (!vocab)
        goto fail;
    m->tok = sdg_tokenizer_load(vocab, err);
    g_free(vocab);
    if (!m->tok)
        goto fail;
    for (int i = 0; i < m->spec->n_encoders; i++) {
        const clip_config *cc = clip_get_config(m->te[i]);
        if (sdg_tokenizer_vocab_size(m->tok) > cc->vocab) {
            sdg__fail(err, SDG_ERR_SHAPE, "%s: the vocabulary has %d tokens but the text encoder "
                      "%s only %d", path, sdg_tokenizer_vocab_size(m->tok), m->layout->te[i],
                      cc->vocab);
            goto fail;
        }
        m->pad_id[i] = m->enc[i].pad_zero ? 0 : sdg_tokenizer_eos(m->tok);
    }
    // Every check above looks at names and shapes only; now the data: converted, scanned for
    // NaN and infinite values, in one pass over the file.
    if (sdg_wb_read(m->wb, err) != SDG_OK)
        goto fail;
    if (choose_prediction(m, params->prediction, err) != SDG_OK)
        goto fail;
    {
        char *tpath = find_taesd(m, params->taesd_path,
                                 params->models_dir ? params->models_dir : SDG_MODELS_DIR);
        sdg_status st = tpath ? load_taesd(m, tpath, err) : SDG_OK;
        g_free(tpath);
        if (st != SDG_OK)
            goto fail;
    }

    sched_init_sd(&m->sched);
    bool ztsnr = m->diffusers ? m->dinfo.ztsnr : family_file_ztsnr(m->file);
    if (ztsnr)
        sched_rescale_zero_snr(&m->sched);
    const unet_config *uc = unet_get_config(m->unet);
    const clip_config *cc = clip_get_config(m->te[0]);
    m->info = (sdg_model_info){
        .unet_in_channels = uc->in_ch,
        .unet_model_channels = uc->model_ch,
        .context_dim = uc->context_dim,
        .text_width = cc->width,
        .text_layers = cc->n_layers,
        .vae_scale = vae_get_config(m->vae)->downscale,
        .native_size = m->prediction == SDG_PREDICTION_V ? m->spec->native_size_v
                                                          : m->spec->native_size,
        .scale_factor = m->spec->scale_factor,
        .family = m->spec->id,
        .prediction = m->prediction,
        .prediction_source = m->prediction_source,
        .zero_terminal_snr = ztsnr,
        .has_taesd = m->taesd != NULL,
        .has_taesd_encoder = m->taesd && taesd_has_encoder(m->taesd),
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

sdg_status sdg_checkpoint_family(const char *path, sdg_family *out, sdg_error *err)
{
    sdg__error_clear(err);
    if (!path || !*path || !out)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "sdg_checkpoint_family needs a file and a "
                         "family to fill");
    // Its own error record: the status is wanted even when the caller passes no sdg_error.
    sdg_error local;
    sdg_error *e = err ? err : &local;
    sdg_model *m = open_model(path, e);
    if (!m)
        return e->status;
    *out = m->spec->id;
    sdg_model_free(m);
    return SDG_OK;
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
    return sdg_tokenizer_tokenize77(model->tok, text ? text : "", model->pad_id[0], ids, NULL);
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
    ctx->embeddings = embs_cache_new();
    sdg__exec_init(&ctx->ex, n_threads);
    atomic_init(&ctx->cancel, 0);
    return ctx;
}

static void lora_nets_free(sdg_lora_nets *n)
{
    if (!n)
        return;
    for (int i = 0; i < FAMILY_MAX_ENCODERS; i++)
        clip_free(n->te[i]);
    unet_free(n->unet);
    sdg_wb_free(n->wb);
    g_free(n->key);
    g_free(n->notes);
    g_free(n);
}

void sdg_ctx_free(sdg_ctx *ctx)
{
    if (!ctx)
        return;
    lora_nets_free(ctx->lora);
    sdg__exec_free(&ctx->ex);
    embs_cache_free(ctx->embeddings);
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
        .hires_strength = 0.7f,
        .inpaint_blend = true,
        .model_sampling = SDG_MODEL_SAMPLING_DEFAULT,
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
    if ((unsigned)p->model_sampling >= SDG_MODEL_SAMPLING_COUNT)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "unknown model sampling %d",
                         (int)p->model_sampling);
    if ((unsigned)p->precision >= SDG_PRECISION_COUNT)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "unknown precision %d", (int)p->precision);
    if ((unsigned)p->decoder >= SDG_DECODER_COUNT)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "unknown decoder %d", (int)p->decoder);
    if (p->decoder == SDG_DECODER_TAESD && !ctx->model->taesd)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "the TAESD decoder was asked for but %s has "
                         "none: put %s_decoder.safetensors beside the model or in the models "
                         "folder, or give its path", ctx->model->base,
                         ctx->model->spec->id == SDG_FAMILY_SDXL ? "taesdxl" : "taesd");
    if (p->steps < 1 || p->steps > 1000)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "steps must be between 1 and 1000 (got %d)",
                         p->steps);
    if (!isfinite(p->cfg_scale) || p->cfg_scale < 0.0f || p->cfg_scale > 100.0f)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "the CFG scale must be between 0 and 100");
    if (p->batch_count < 1 || p->batch_count > 256)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "the batch count must be between 1 and 256 "
                         "(got %d)", p->batch_count);
    // Clip skip k takes the hidden state k - 1 layers before the family's own: at most down to
    // the first layer of the shallowest encoder.
    const sdg_model *m = ctx->model;
    int max_skip = 1 << 30;
    for (int e = 0; e < m->spec->n_encoders; e++) {
        int layers = clip_get_config(m->te[e])->n_layers - m->enc[e].from_end;
        max_skip = layers < max_skip ? layers : max_skip;
    }
    if (p->clip_skip < 1 || p->clip_skip > max_skip)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "clip skip must be between 1 and %d (got %d)",
                         max_skip, p->clip_skip);
    if (p->original_width < 0 || p->original_height < 0 || p->target_width < 0 ||
        p->target_height < 0 || p->crop_left < 0 || p->crop_top < 0 ||
        p->original_width > SDG_MAX_SIZE_COND || p->original_height > SDG_MAX_SIZE_COND ||
        p->target_width > SDG_MAX_SIZE_COND || p->target_height > SDG_MAX_SIZE_COND ||
        p->crop_left > SDG_MAX_SIZE_COND || p->crop_top > SDG_MAX_SIZE_COND)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "the SDXL size conditioning must be sizes and "
                         "crop offsets between 0 and %d pixels (0: the picture's size); got "
                         "original %dx%d, crop %d,%d, target %dx%d", SDG_MAX_SIZE_COND,
                         p->original_width, p->original_height, p->crop_left, p->crop_top,
                         p->target_width, p->target_height);
    if (p->mask && !p->init_image)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "a mask needs an init image to inpaint");
    if (p->hires_width || p->hires_height) {
        int hw = p->hires_width, hh = p->hires_height;
        if (p->init_image)
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "the hires fix is for text-to-image (there "
                             "is an init image)");
        if (hw < p->width || hh < p->height || hw > SDG_MAX_SIDE || hh > SDG_MAX_SIDE ||
            hw % ds || hh % ds)
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "the hires size must be multiples of %d "
                             "from the picture's size %dx%d to %d (got %dx%d)", ds, p->width,
                             p->height, SDG_MAX_SIDE, hw, hh);
        if ((unsigned)p->hires_upscale >= SDG_HIRES_UPSCALE_COUNT)
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "unknown hires upscale %d",
                             (int)p->hires_upscale);
        if (p->hires_upscale == SDG_HIRES_PIXEL && !p->hires_resize)
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "the pixel hires upscale needs a "
                             "resampler (hires_resize)");
        if (!isfinite(p->hires_strength) || p->hires_strength < 0.0f || p->hires_strength > 1.0f)
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "the hires strength must be between 0 and "
                             "1 (got %g)", (double)p->hires_strength);
        if (p->hires_steps < 0 || p->hires_steps > 1000)
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "hires steps must be between 0 (the "
                             "steps) and 1000 (got %d)", p->hires_steps);
    }
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

// ---------------------------------------------------------------------------------------------
// LoRAs of a request

// A request's LoRA list, resolved: params' own, then the prompt's tags found by name.
typedef struct lora_request {
    GArray *loras;        // sdg_lora
    GPtrArray *paths;     // the found files' paths (owned)
    char *prompt;         // the prompt without its tags (owned)
    char *key;            // what identifies the list (lora_nets.key)
} lora_request;

static void lora_request_clear(lora_request *r)
{
    if (r->loras)
        g_array_free(r->loras, TRUE);
    if (r->paths)
        g_ptr_array_free(r->paths, TRUE);
    g_free(r->prompt);
    g_free(r->key);
    memset(r, 0, sizeof *r);
}

static sdg_status lora_request_make(const sdg_ctx *ctx, const sdg_gen_params *p, lora_request *r,
                                    sdg_error *err)
{
    memset(r, 0, sizeof *r);
    r->loras = g_array_new(FALSE, FALSE, sizeof(sdg_lora));
    r->paths = g_ptr_array_new_with_free_func(g_free);
    if (p->n_loras < 0 || p->n_loras > 64 || (p->n_loras && !p->loras))
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "n_loras must be between 0 and 64, with loras "
                         "set (got %d)", p->n_loras);
    g_array_append_vals(r->loras, p->loras, (guint)p->n_loras);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    GArray *weights = g_array_new(FALSE, FALSE, sizeof(float));
    sdg_status st = lora_prompt_tags(p->prompt, &r->prompt, names, weights, err);
    if (st == SDG_OK && names->len) {
        char *model_dir = g_path_get_dirname(ctx->model->path);
        char *parent = g_path_get_dirname(model_dir);
        char *dirs[4] = {
            g_strdup(p->lora_dir), g_build_filename(parent, "loras", NULL),
            g_build_filename(parent, "Lora", NULL), g_build_filename(model_dir, "loras", NULL),
        };
        for (guint i = 0; i < names->len && st == SDG_OK; i++) {
            char *path = NULL;
            st = lora_find(names->pdata[i], (const char *const *)dirs, 4, &path, err);
            if (st == SDG_OK) {
                g_ptr_array_add(r->paths, path);
                sdg_lora l = { path, g_array_index(weights, float, i) };
                g_array_append_val(r->loras, l);
            }
        }
        for (int i = 0; i < 4; i++)
            g_free(dirs[i]);
        g_free(parent);
        g_free(model_dir);
    }
    g_ptr_array_free(names, TRUE);
    g_array_free(weights, TRUE);
    if (st != SDG_OK)
        return st;
    // The key: a file changed on disk since (same path) is applied again.
    GString *key = g_string_new(NULL);
    for (guint i = 0; i < r->loras->len; i++) {
        const sdg_lora *l = &g_array_index(r->loras, sdg_lora, i);
        GStatBuf sb;
        bool ok = l->path && g_stat(l->path, &sb) == 0;
        g_string_append_printf(key, "%s\t%lld\t%lld\t%a\n", l->path ? l->path : "",
                               ok ? (long long)sb.st_size : -1LL,
                               ok ? (long long)sb.st_mtime : -1LL, (double)l->weight);
    }
    r->key = g_string_free(key, FALSE);
    return SDG_OK;
}

// Binds the text encoders and UNet again on an overlay holding set's patched copies.
static sdg_status lora_nets_build(const sdg_model *m, lora_set *set, sdg_lora_nets **out,
                                  sdg_error *err)
{
    sdg_lora_nets *n = g_new0(sdg_lora_nets, 1);
    sdg_status st;
    n->wb = sdg_wb_new_overlay(m->wb, lora_set_patched(set), lora_set_patch, set, err);
    // One block for the copies, as the loader does (a block each would round every tensor up
    // to whole 2 MiB pages).
    int n_patched = 0;
    for (int i = 0; i < st_count(m->file); i++)
        n_patched += lora_set_patched(set)[i];
    if (!n->wb)
        st = err ? err->status : SDG_ERR_NOMEM;
    else if ((st = sdg_wb_reserve(n->wb, lora_set_patched_bytes(set) +
                                  (uint64_t)n_patched * SDG_ARENA_ALIGN, err)) == SDG_OK &&
             (st = bind_conditioning(m, n->wb, n->te, &n->unet, err)) == SDG_OK)
        st = sdg_wb_read(n->wb, err);
    if (st != SDG_OK) {
        lora_nets_free(n);
        return st;
    }
    n->bytes = sdg_wb_owned_bytes(n->wb);
    n->notes = g_strdup(lora_set_notes(set));
    *out = n;
    return SDG_OK;
}

// Plans the request's LoRAs when they differ from what ctx holds (*set, NULL when the ctx's
// networks already are the request's), sizing ctx->lora_new_bytes for the memory guard.
static sdg_status lora_request_plan(sdg_ctx *ctx, const lora_request *r, bool read,
                                    lora_set **set, sdg_error *err)
{
    *set = NULL;
    ctx->lora_new_bytes = 0;
    bool same = ctx->lora ? strcmp(ctx->lora->key, r->key) == 0 : r->loras->len == 0;
    if (same)
        return SDG_OK;
    if (r->loras->len == 0)
        return SDG_OK;   // lora_request_apply drops the ctx's
    sdg_status st = lora_set_plan(ctx->model, (const sdg_lora *)r->loras->data,
                                  (int)r->loras->len, read, set, err);
    if (st == SDG_OK)
        ctx->lora_new_bytes = lora_set_patched_bytes(*set);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Recommendations

static void recommend_from(const family_distilled *row, int steps, sdg_recommendation *out)
{
    *out = (sdg_recommendation){ row->name, row->sampler, row->schedule, steps, row->cfg_scale,
                                 row->model_sampling };
}

const char *sdg_recommend(const sdg_model *model, const sdg_gen_params *params,
                          sdg_recommendation *out)
{
    sdg_gen_params d = sdg_gen_default_params();
    *out = (sdg_recommendation){ NULL, d.sampler, d.schedule, d.steps, d.cfg_scale,
                                 d.model_sampling };
    if (!model)
        return NULL;
    int fam = (int)model->spec->id, steps;
    const family_distilled *row = family_find_distilled(
        model->path, model->diffusers ? NULL : st_metadata(model->file, "modelspec.title"), fam,
        false, &steps);
    if (row)
        recommend_from(row, steps, out);
    if (!params)
        return out->source;
    // LoRAs: the listed ones, then the prompt's tags (their names are file stems).
    for (int i = 0; params->loras && i < params->n_loras; i++)
        if ((row = family_find_distilled(params->loras[i].path, NULL, fam, true, &steps)))
            recommend_from(row, steps, out);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    GArray *weights = g_array_new(FALSE, FALSE, sizeof(float));
    char *clean = NULL;
    if (lora_prompt_tags(params->prompt, &clean, names, weights, NULL) == SDG_OK)
        for (guint i = 0; i < names->len; i++)
            if ((row = family_find_distilled(names->pdata[i], NULL, fam, true, &steps)))
                recommend_from(row, steps, out);
    g_free(clean);
    g_ptr_array_free(names, TRUE);
    g_array_free(weights, TRUE);
    return out->source;
}

// ---------------------------------------------------------------------------------------------
// Hires fix

// PyTorch's F.interpolate(mode="bilinear", align_corners=False, antialias=False), A1111's
// "Latent" upscale: src[c, h, w] -> dst[c, oh, ow]; each output pixel's centre mapped back to
// the source ((o + 0.5) * in / out - 0.5, negatives to 0) and interpolated between its
// neighbours (clamped at the far edge).
void sdg__upscale_bilinear(const float *src, int c, int h, int w, float *dst, int oh, int ow)
{
    for (int y = 0; y < oh; y++) {
        float sy = ((float)y + 0.5f) * (float)h / (float)oh - 0.5f;
        sy = sy < 0.0f ? 0.0f : sy;
        int y0 = (int)sy, y1 = y0 + 1 < h ? y0 + 1 : h - 1;
        float ly = sy - (float)y0;
        for (int x = 0; x < ow; x++) {
            float sx = ((float)x + 0.5f) * (float)w / (float)ow - 0.5f;
            sx = sx < 0.0f ? 0.0f : sx;
            int x0 = (int)sx, x1 = x0 + 1 < w ? x0 + 1 : w - 1;
            float lx = sx - (float)x0;
            for (int k = 0; k < c; k++) {
                const float *s = src + (size_t)k * h * w;
                float top = s[y0 * w + x0] * (1.0f - lx) + s[y0 * w + x1] * lx;
                float bot = s[y1 * w + x0] * (1.0f - lx) + s[y1 * w + x1] * lx;
                dst[((size_t)k * oh + y) * ow + x] = top * (1.0f - ly) + bot * ly;
            }
        }
    }
}

// Progress over both passes: each pass reports its own steps, shifted by what ran before.
typedef struct hires_progress {
    sdg_progress_fn fn;
    void *data;
    int offset, total;
} hires_progress;

static bool hires_report(int step, int total, const sdg_image *preview, void *user)
{
    (void)total;
    const hires_progress *hp = user;
    int s = hp->offset + step;
    return hp->fn(s < hp->total ? s : hp->total, hp->total, preview, hp->data);
}

// The second pass's parameters for picture i of p.
static sdg_gen_params hires_pass2(const sdg_gen_params *p, int i)
{
    sdg_gen_params q = *p;
    q.width = p->hires_width;
    q.height = p->hires_height;
    q.steps = p->hires_steps > 0 ? p->hires_steps : p->steps;
    q.strength = p->hires_strength;
    q.batch_count = 1;
    q.seed = p->seed + (uint64_t)i;
    q.noise = NULL;
    q.hires_width = q.hires_height = 0;
    return q;
}

// Both passes of a hires fix (parameters checked, LoRAs applied): the first at width x height,
// then per picture the upscale and the second pass.
static sdg_status generate_hires(sdg_ctx *ctx, const sdg_gen_params *p, sdg_result **out,
                                 sdg_error *err)
{
    int n = p->batch_count;
    sdg_gen_params first = *p;
    first.hires_width = first.hires_height = 0;
    sdg_gen_params second = hires_pass2(p, 0);
    // Steps, as the pipeline counts them: strength * steps of the second pass's schedule.
    int run2 = (int)(second.strength * (float)second.steps);
    hires_progress hp = { p->progress, p->progress_data, 0, p->steps * n + run2 * n };
    if (p->progress) {
        first.progress = hires_report;
        first.progress_data = &hp;
    }
    sdg_result *r1 = NULL;
    sdg_status st = sdg__pipeline_generate(ctx, &first, &r1, err);
    if (st != SDG_OK)
        return st;
    int ds = ctx->model->info.vae_scale, c = SDG_LATENT_CHANNELS;
    int h1 = p->height / ds, w1 = p->width / ds, h2 = p->hires_height / ds, w2 = p->hires_width / ds;
    size_t n2 = (size_t)c * h2 * w2;
    sdg_result *res = calloc(1, sizeof *res);
    float *up = p->hires_upscale == SDG_HIRES_LATENT ? malloc(n2 * sizeof *up) : NULL;
    if (res) {
        res->images = calloc((size_t)n, sizeof *res->images);
        res->latents = malloc((size_t)n * n2 * sizeof(float));
    }
    if (!res || !res->images || !res->latents || (p->hires_upscale == SDG_HIRES_LATENT && !up))
        st = sdg__fail(err, SDG_ERR_NOMEM, "out of memory for the hires fix");
    else {
        res->n_images = n;
        res->latent_channels = c;
        res->latent_height = h2;
        res->latent_width = w2;
    }
    for (int i = 0; i < n && st == SDG_OK; i++) {
        sdg_gen_params q = hires_pass2(p, i);
        sdg_image *big = NULL;
        if (p->hires_upscale == SDG_HIRES_LATENT) {
            sdg__upscale_bilinear(r1->latents + (size_t)i * c * h1 * w1, c, h1, w1, up, h2, w2);
            ctx->init_latent = up;
        } else {
            big = p->hires_resize(r1->images[i], q.width, q.height, p->hires_resize_data);
            if (!big || big->width != q.width || big->height != q.height || big->channels != 3) {
                sdg_image_free(big);
                st = sdg__fail(err, SDG_ERR_INVALID_ARG, "the hires resampler did not give a "
                               "%dx%d RGB picture", q.width, q.height);
                break;
            }
            q.init_image = big;
        }
        hp.offset = p->steps * n + run2 * i;
        if (p->progress) {
            q.progress = hires_report;
            q.progress_data = &hp;
        }
        sdg_result *r2 = NULL;
        st = sdg__pipeline_generate(ctx, &q, &r2, err);
        ctx->init_latent = NULL;
        sdg_image_free(big);
        if (st != SDG_OK)
            break;
        res->images[i] = r2->images[0];
        r2->images[0] = NULL;
        memcpy(res->latents + (size_t)i * n2, r2->latents, n2 * sizeof(float));
        sdg_result_free(r2);
    }
    free(up);
    sdg_result_free(r1);
    if (st != SDG_OK) {
        sdg_result_free(res);
        return st;
    }
    *out = res;
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
    lora_request r;
    lora_set *set = NULL;
    st = lora_request_make(ctx, params, &r, err);
    if (st == SDG_OK)
        st = lora_request_plan(ctx, &r, true, &set, err);
    sdg_gen_params q = *params;
    q.prompt = r.prompt;
    if (st == SDG_OK && (set || (ctx->lora && r.loras->len == 0))) {
        // A new list: the old copies go first, then the guard sees the new ones as still to make.
        lora_nets_free(ctx->lora);
        ctx->lora = NULL;
        sdg_memory_estimate e;
        if (set && (st = sdg__pipeline_estimate(ctx, &q, &e, err)) == SDG_OK &&
            (st = lora_nets_build(ctx->model, set, &ctx->lora, err)) == SDG_OK)
            ctx->lora->key = g_strdup(r.key);
        ctx->lora_new_bytes = 0;
    }
    lora_set_free(set);
    if (st == SDG_OK)
        st = q.hires_width || q.hires_height ? generate_hires(ctx, &q, out, err)
                                             : sdg__pipeline_generate(ctx, &q, out, err);
    if (st == SDG_OK && ctx->lora && ctx->lora->notes)
        (*out)->notes = strdup(ctx->lora->notes);
    lora_request_clear(&r);
    return st;
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
    lora_request r;
    lora_set *set = NULL;
    st = lora_request_make(ctx, params, &r, err);
    // A header-only model cannot take LoRAs (no weights to patch): sized without them.
    if (st == SDG_OK && !ctx->model->header_only)
        st = lora_request_plan(ctx, &r, false, &set, err);   // sizes: shapes only
    if (st == SDG_OK) {
        sdg_gen_params q = *params;
        q.prompt = r.prompt;
        sdg_lora_nets *held = ctx->lora;
        if (set || (held && r.loras->len == 0))
            ctx->lora = NULL;   // sized as the request would run: without the ctx's old copies
        if (q.hires_width || q.hires_height) {
            // The second pass is the larger: text-to-image at the hires size (its latent start
            // needs no encoder; a picture start's encoder takes less than the decoder), holding
            // the whole batch's pictures.
            q.width = q.hires_width;
            q.height = q.hires_height;
            q.hires_width = q.hires_height = 0;
        }
        st = sdg__pipeline_estimate(ctx, &q, out, err);
        ctx->lora = held;
    }
    ctx->lora_new_bytes = 0;
    lora_set_free(set);
    lora_request_clear(&r);
    return st;
}

void sdg_result_free(sdg_result *res)
{
    if (!res)
        return;
    for (int i = 0; i < res->n_images; i++)
        sdg_image_free(res->images ? res->images[i] : NULL);
    free(res->images);
    free(res->latents);
    free(res->notes);
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
