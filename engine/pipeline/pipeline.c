/*
 * pipeline.c - text-to-image, image-to-image and inpainting on the three networks.
 *
 * One request is a "job". Its memory comes from the context's arena, sized by a dry run of the
 * whole job (every allocation and every network in measuring mode), reserved once, then the
 * real run: nothing is allocated inside the sampling loop. The same dry run gives the memory
 * estimate (sdg_ctx_estimate), and a job that does not fit in the memory available is refused
 * before the arena is reserved (memory.h).
 *
 * Conventions follow the public references (shared/reference/manifests/README.md):
 * - k-diffusion sigma space: x = x_t / sqrt(alpha_cumprod), denoised = c_skip x + c_out out(c_in x,
 *   t) with the denoiser's scalings for what the UNet predicts (sampler.h: for eps, x - sigma eps
 *   and c_in = 1/sqrt(sigma^2+1)); CFG on the prediction with batch [uncond, cond].
 * - DDIM (eta 0) is an Euler step in that space between DDIM timesteps; its start latent is the
 *   unscaled noise in x_t space and it ends at sigma(t=0), as CompVis' sampler does.
 * - img2img (A1111/diffusers): strength s runs the last int(s*steps) steps from init + noise;
 *   DDIM follows CompVis scripts/img2img.py (encoded one DDIM step above the first step run).
 * - Inpainting with a 4-channel model re-noises the known region to the current sigma and blends
 *   it in after every step, then composites the decoded picture with a feathered mask; a
 *   9-channel model gets [x, mask, latent of the masked image] as runwayml's reference does,
 *   starts from pure noise whatever the strength, and (inpaint_blend, as A1111 and ComfyUI do)
 *   is blended like a 4-channel one as well. Without the blend, the known region reaches the UNet
 *   only through its mask input, and a model that reads that input weakly fills the hole with a
 *   background of its own (diffusers' pipeline).
 * - Emphasis (A1111): each token's encoding is multiplied by its weight, then the window is
 *   rescaled to keep its mean.
 *
 * Not here: parameter checks (sd.c), the networks, the samplers' arithmetic.
 */
#include "pipeline.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../memory.h"
#include "../tensor/ops.h"
#include "../tokenizer/prompt.h"

// Windows of 75 tokens a prompt may use (A1111 has no limit; 8 = 600 tokens is plenty).
#define MAX_WINDOWS 8
// Feathering of the final inpainting composite (pixels, Gaussian sigma), applied inside the mask
// only so that nothing outside it changes.
#define FEATHER_SIGMA 3.0f

typedef struct job {
    sdg_ctx *ctx;
    const sdg_model *m;
    const sdg_gen_params *p;
    sdg_exec *ex;

    int W, H;                 // picture size
    int h, w, c;              // latent size and channels
    int in_ch;                // UNet input channels (4, or 9 for inpainting models)
    size_t n_lat;             // c*h*w
    bool cfg;                 // two UNet batch items [uncond, cond]
    int nb;                   // 1 or 2
    int n_ctx, ctx_dim;       // context tokens (77 per window) and width (all encoders)
    int y_dim;                // width of the vector y (SDXL), else 0
    bool img2img, inpaint, model9;
    bool zero_uncond;         // SDXL with no negative prompt: the unconditional text is zeros

    // Per text encoder (their paddings differ): token ids and emphasis weights; "" pads the
    // shorter prompt to the longer one's windows.
    sdg_prompt cond[FAMILY_MAX_ENCODERS], uncond[FAMILY_MAX_ENCODERS], empty[FAMILY_MAX_ENCODERS];
    embs_request embs;        // the textual-inversion embeddings the prompts may name

    int n_steps;              // steps of the full schedule
    int start;                // first step run (img2img)
    float *sigmas, *ts;       // [n_steps+1], [n_steps]
    bool ddim;
    sched_timing timing;      // k-diffusion's, ComfyUI's or LCM's timesteps (sdg.h, Timesteps)

    // arena buffers
    float *context;           // [nb, n_ctx, ctx_dim]
    float *y;                 // [nb, y_dim] (SDXL)
    float *unet_in, *unet_t, *eps;
    float *x, *noise, *step_noise;
    float *moments;           // [2c, h, w] posterior of the init image
    float *init_lat;          // [c, h, w]
    float *mask_lat;          // [h*w] 9-ch: the UNet's mask channel (binary)
    float *blend_lat;         // [h*w] latent mask of the known-region blend (soft)
    float *masked_lat;        // [c, h, w] 9-ch: latent of the masked image
    float *masked_moments;
    float *blend;             // [H*W] feathered composite mask
    float *scratch;           // sampler work memory
    float *image;             // [3, H, W] decoded picture, [-1, 1]
    float *preview;           // [h*w*3], or [H*W*3] with a TAESD preview
    bool preview_taesd;       // previews are TAESD's pictures (the model has one)
    bool init_taesd;          // the init image's latent is TAESD's encoding (moments holds it)

    // the picture being made
    int picture;
    uint64_t seed;
    int done_steps, total_steps;
    sdg_status hook_status;
} job;

// The networks a run uses: the ctx's LoRA-patched ones when it has them, else the model's.
static const clip_model *job_te(const job *j, int e)
{
    return j->ctx->lora ? j->ctx->lora->te[e] : j->m->te[e];
}

static const unet_model *job_unet(const job *j)
{
    return j->ctx->lora ? j->ctx->lora->unet : j->m->unet;
}

// ---------------------------------------------------------------------------------------------
// Text

// Encodes the windows of one prompt with text encoder `e` into columns [col, col + width) of
// ctx_out [n_windows*77, j->ctx_dim], applying emphasis; windows past the prompt's own (the other
// prompt is longer) hold the empty prompt's encoding. pooled (the encoder's pooled projection of
// the first window, as A1111 takes it) when not NULL.
static void encode_prompt(job *j, int e, const sdg_prompt *pr, const sdg_prompt *empty,
                          int n_windows, float *ctx_out, int col, float *pooled)
{
    sdg_exec *ex = j->ex;
    const clip_model *te = job_te(j, e);
    const clip_config *cc = clip_get_config(te);
    const family_encoder *fe = &j->m->enc[e];
    int d = cc->width;
    size_t mark = sdg__mark(ex);
    int32_t *ids = (int32_t *)sdg__alloc_f32(ex, (size_t)n_windows * 77);
    float *z = sdg__alloc_f32(ex, (size_t)n_windows * 77 * d);
    float *pw = pooled ? sdg__alloc_f32(ex, (size_t)n_windows * cc->proj_dim) : NULL;
    // Embedding vectors per position, when the prompt names an embedding (pointers taken from
    // the float arena: its blocks are 64-byte aligned).
    const float **rows = pr->rows ? (const float **)(void *)sdg__alloc_f32(
        ex, (size_t)n_windows * 77 * (sizeof *rows / sizeof(float))) : NULL;
    if (!ex->dry)
        for (int wi = 0; wi < n_windows; wi++) {
            const int32_t *src = wi < pr->n_windows ? pr->ids + (size_t)wi * 77 : empty->ids;
            memcpy(ids + (size_t)wi * 77, src, 77 * sizeof(int32_t));
            for (int t = 0; rows && t < 77; t++)
                rows[(size_t)wi * 77 + t] = wi < pr->n_windows ? pr->rows[(size_t)wi * 77 + t]
                                                               : NULL;
        }
    // The family's hidden state; A1111's clip skip k takes the one k - 1 layers before it.
    int layer = cc->n_layers - fe->from_end - (j->p->clip_skip - 1);
    clip_output o = { layer < 1 ? 1 : layer, fe->final_norm };
    clip_forward_rows(ex, te, ids, (const float *const *)rows, n_windows, &o, z, pw);
    if (!ex->dry) {
        for (int wi = 0; wi < pr->n_windows && wi < n_windows; wi++) {
            const float *wt = pr->weights + (size_t)wi * 77;
            bool plain = true;
            for (int t = 0; t < 77; t++)
                plain = plain && wt[t] == 1.0f;
            if (plain)
                continue;
            float *zw = z + (size_t)wi * 77 * d;
            double before = 0, after = 0;
            for (size_t i = 0; i < (size_t)77 * d; i++)
                before += zw[i];
            for (int t = 0; t < 77; t++)
                for (int k = 0; k < d; k++)
                    zw[(size_t)t * d + k] *= wt[t];
            for (size_t i = 0; i < (size_t)77 * d; i++)
                after += zw[i];
            if (after != 0.0) {
                float r = (float)(before / after);
                for (size_t i = 0; i < (size_t)77 * d; i++)
                    zw[i] *= r;
            }
        }
        for (size_t r = 0; r < (size_t)n_windows * 77; r++)
            memcpy(ctx_out + r * j->ctx_dim + col, z + r * d, (size_t)d * sizeof *z);
        if (pooled)
            memcpy(pooled, pw, (size_t)cc->proj_dim * sizeof *pooled);
    }
    sdg__release(ex, mark);
}

// One batch item's conditioning: context [n_ctx, ctx_dim] from every text encoder, and for SDXL
// y [y_dim] = [pooled text embedding, the six size embeddings]. zero: the text parts are zeros
// (SDXL's unconditional side without a negative prompt; the size embeddings stay).
// PyTorch (sgm GeneralConditioner with FrozenCLIPEmbedder, FrozenOpenCLIPEmbedder2 and three
// ConcatTimestepEmbedderND): crossattn = cat(clip_l, bigG, dim=2);
//   vector = cat(pooled, emb(original_size), emb(crop_coords_top_left), emb(target_size), dim=1)
static void encode_conditioning(job *j, sdg_prompt *const *prompts, bool zero, float *ctx,
                                float *y)
{
    sdg_exec *ex = j->ex;
    const family_spec *spec = j->m->spec;
    int windows = j->n_ctx / 77, col = 0;
    float *pooled = y;   // the pooled embedding is y's first part
    for (int e = 0; e < spec->n_encoders; e++) {
        const clip_config *cc = clip_get_config(j->m->te[e]);
        if (zero) {
            if (!ex->dry)
                for (size_t r = 0; r < (size_t)j->n_ctx; r++)
                    memset(ctx + r * j->ctx_dim + col, 0, (size_t)cc->width * sizeof *ctx);
        } else {
            encode_prompt(j, e, prompts[e], &j->empty[e], windows, ctx, col,
                          j->m->enc[e].pooled ? pooled : NULL);
        }
        if (j->m->enc[e].pooled) {
            if (zero && !ex->dry)
                memset(pooled, 0, (size_t)cc->proj_dim * sizeof *pooled);
            pooled += cc->proj_dim;
        }
        col += cc->width;
    }
    if (spec->size_cond) {
        const sdg_gen_params *p = j->p;
        float sizes[6] = {
            (float)(p->original_height ? p->original_height : j->H),
            (float)(p->original_width ? p->original_width : j->W),
            (float)p->crop_top, (float)p->crop_left,
            (float)(p->target_height ? p->target_height : j->H),
            (float)(p->target_width ? p->target_width : j->W),
        };
        sdg_op_timestep_embedding(ex, sizes, 6, FAMILY_SIZE_EMB_DIM, pooled);
    }
}

// ---------------------------------------------------------------------------------------------
// Noise

static void fill_noise(job *j, unsigned stream, int step, float *out, size_t n)
{
    if (j->ctx->test_noise) {
        int which = stream == SDG_STREAM_ANCESTRAL ? step
                    : stream == SDG_STREAM_INITIAL ? SDG_TEST_NOISE_INITIAL : SDG_TEST_NOISE_VAE;
        j->ctx->test_noise(j->ctx->test_noise_data, which, out, n);
        return;
    }
    if (stream == SDG_STREAM_INITIAL && j->picture == 0 && j->p->noise) {
        memcpy(out, j->p->noise, n * sizeof(float));
        return;
    }
    uint64_t offset = stream == SDG_STREAM_ANCESTRAL ? (uint64_t)step * n : 0;
    rng_normal_fill(j->seed, stream, offset, out, n);
}

// ---------------------------------------------------------------------------------------------
// Model evaluation (the sampler's denoise hook)

static sdg_status denoise(void *user, const float *x, float sigma, float t, float *denoised)
{
    job *j = user;
    if (atomic_load(&j->ctx->cancel))
        return SDG_ERR_CANCELLED;
    size_t hw = (size_t)j->h * j->w;
    sdg_scalings sc = denoiser_scalings(j->m->prediction, sigma);
    if (j->timing == SCHED_TIMING_LCM)
        sc = denoiser_lcm(sc, t);
    for (int b = 0; b < j->nb; b++) {
        float *in = j->unet_in + (size_t)b * j->in_ch * hw;
        for (size_t i = 0; i < j->n_lat; i++)
            in[i] = x[i] * sc.c_in;
        if (j->model9) {
            memcpy(in + j->n_lat, j->mask_lat, hw * sizeof(float));
            memcpy(in + j->n_lat + hw, j->masked_lat, j->n_lat * sizeof(float));
        }
        j->unet_t[b] = t;
    }
    unet_cond cond = { j->context, j->n_ctx, j->y };
    unet_forward(j->ex, job_unet(j), j->unet_in, j->nb, j->h, j->w, j->unet_t, &cond, j->eps);
    const float *eu = j->eps, *ec = j->cfg ? j->eps + j->n_lat : j->eps;
    float s = j->p->cfg_scale;
    // Guidance on the prediction (eps or v alike, as A1111, ComfyUI and diffusers do), then the
    // denoiser's scalings.
    for (size_t i = 0; i < j->n_lat; i++) {
        float e = j->cfg ? eu[i] + s * (ec[i] - eu[i]) : ec[i];
        denoised[i] = sc.c_skip * x[i] + sc.c_out * e;
    }
    return SDG_OK;
}

static void ancestral_noise(void *user, int draw, float *out, size_t n)
{
    fill_noise(user, SDG_STREAM_ANCESTRAL, draw, out, n);
}

// Latent to RGB without the VAE: a fixed linear map per latent pixel (the "approx cheap"
// coefficients A1111 uses for SD1 latents), good enough to see a picture form.
static void latent_preview(const job *j, const float *lat, float *rgb)
{
    static const float coef[4][3] = {
        { 0.298f, 0.207f, 0.208f },
        { 0.187f, 0.286f, 0.173f },
        { -0.158f, 0.189f, 0.264f },
        { -0.184f, -0.271f, -0.473f },
    };
    size_t hw = (size_t)j->h * j->w;
    for (size_t i = 0; i < hw; i++)
        for (int k = 0; k < 3; k++) {
            float v = 0.0f;
            for (int ch = 0; ch < 4 && ch < j->c; ch++)
                v += lat[ch * hw + i] * coef[ch][k];
            v = (v + 1.0f) * 0.5f;
            rgb[i * 3 + k] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        }
}

// The preview as TAESD's picture of the current estimate (a diffusion latent), full size,
// interleaved [0, 1], into j->preview; its scratch comes from the arena (the dry run calls it
// too, with lat NULL).
static void taesd_preview(job *j, const float *lat)
{
    sdg_exec *ex = j->ex;
    size_t mark = sdg__mark(ex);
    size_t HW = (size_t)j->W * j->H;
    float *planar = sdg__alloc_f32(ex, 3 * HW);
    taesd_decode(ex, j->m->taesd, lat, 1, j->h, j->w, planar);
    if (!ex->dry)
        for (size_t i = 0; i < HW; i++)
            for (int k = 0; k < 3; k++) {
                float v = planar[k * HW + i];
                j->preview[i * 3 + k] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            }
    sdg__release(ex, mark);
}

static sdg_status report(job *j, const float *denoised)
{
    const sdg_gen_params *p = j->p;
    if (atomic_load(&j->ctx->cancel))
        return SDG_ERR_CANCELLED;
    if (!p->progress)
        return SDG_OK;
    sdg_image preview = { .width = j->w, .height = j->h, .channels = 3, .data = j->preview };
    const sdg_image *pv = NULL;
    if (p->preview && denoised && j->preview_taesd) {
        taesd_preview(j, denoised);
        preview.width = j->W;
        preview.height = j->H;
        pv = &preview;
    } else if (p->preview && denoised) {
        latent_preview(j, denoised, j->preview);
        pv = &preview;
    }
    if (!p->progress(j->done_steps, j->total_steps, pv, p->progress_data))
        return SDG_ERR_CANCELLED;
    return SDG_OK;
}

static sdg_status on_step(void *user, int step, int n_steps, float *x, float sigma_next,
                          const float *denoised)
{
    (void)step;
    (void)n_steps;
    job *j = user;
    if (j->blend_lat) {
        // Keep the known region on the trajectory of the original image at this noise level.
        size_t hw = (size_t)j->h * j->w;
        for (int ch = 0; ch < j->c; ch++)
            for (size_t i = 0; i < hw; i++) {
                size_t k = ch * hw + i;
                float mk = j->blend_lat[i];
                x[k] = mk * x[k] + (1.0f - mk) * (j->init_lat[k] + sigma_next * j->noise[k]);
            }
    }
    j->done_steps++;
    return report(j, denoised);
}

// ---------------------------------------------------------------------------------------------
// Images

// Interleaved [0,1] RGB -> planar [-1,1], optionally zeroing pixels the mask regenerates
// (runwayml's masked image: image * (mask < 0.5)).
static void image_to_planar(const sdg_image *img, const sdg_image *mask, float *out)
{
    size_t hw = (size_t)img->width * img->height;
    for (size_t i = 0; i < hw; i++) {
        bool hole = mask && mask->data[i] >= 0.5f;
        for (int k = 0; k < 3; k++) {
            float v = img->data[i * 3 + k];
            v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
            out[k * hw + i] = hole ? 0.0f : 2.0f * v - 1.0f;
        }
    }
}

// Posterior sample (the references sample, not take the mean): scale * (mean + std * noise).
static void posterior_sample(const job *j, const float *moments, const float *noise, float *z)
{
    float sf = j->m->info.scale_factor;
    for (size_t i = 0; i < j->n_lat; i++) {
        float logvar = moments[j->n_lat + i];
        logvar = logvar < -30.0f ? -30.0f : logvar > 20.0f ? 20.0f : logvar;
        z[i] = sf * (moments[i] + expf(0.5f * logvar) * noise[i]);
    }
}

// 1-D Gaussian blur along rows or columns with clamped edges.
static void blur_axis(const float *src, float *dst, int w, int h, bool vertical, const float *k,
                      int r)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float s = 0.0f;
            for (int i = -r; i <= r; i++) {
                int xx = vertical ? x : x + i, yy = vertical ? y + i : y;
                xx = xx < 0 ? 0 : xx >= w ? w - 1 : xx;
                yy = yy < 0 ? 0 : yy >= h ? h - 1 : yy;
                s += k[i + r] * src[(size_t)yy * w + xx];
            }
            dst[(size_t)y * w + x] = s;
        }
}

// blend = min(mask, gauss(mask)): soft inside the edge, exactly 0 wherever the mask is 0.
static void feather_mask(job *j, const sdg_image *mask, float *blend)
{
    sdg_exec *ex = j->ex;
    size_t mark = sdg__mark(ex);
    size_t n = (size_t)j->W * j->H;
    float *tmp = sdg__alloc_f32(ex, n);
    if (!ex->dry) {
        enum { R = 9 };
        float k[2 * R + 1], sum = 0.0f;
        for (int i = -R; i <= R; i++)
            sum += k[i + R] = expf(-(float)(i * i) / (2.0f * FEATHER_SIGMA * FEATHER_SIGMA));
        for (int i = 0; i < 2 * R + 1; i++)
            k[i] /= sum;
        blur_axis(mask->data, tmp, j->W, j->H, false, k, R);
        blur_axis(tmp, blend, j->W, j->H, true, k, R);
        for (size_t i = 0; i < n; i++) {
            float m = mask->data[i] < 0.0f ? 0.0f : mask->data[i] > 1.0f ? 1.0f : mask->data[i];
            blend[i] = blend[i] < m ? blend[i] : m;
        }
    }
    sdg__release(ex, mark);
}

// Latent masks. The blend's is the mean of each 8x8 cell, which keeps soft edges soft; a 9-ch
// UNet's mask channel is the reference's nearest resize of the binarised mask (all ones
// without a mask).
static void latent_mask(job *j, const sdg_image *mask, bool unet_channel, float *out)
{
    int ds = j->m->info.vae_scale;
    for (int y = 0; y < j->h; y++)
        for (int x = 0; x < j->w; x++) {
            float v;
            if (!mask) {
                v = 1.0f;
            } else if (unet_channel) {
                v = mask->data[(size_t)y * ds * j->W + (size_t)x * ds] >= 0.5f ? 1.0f : 0.0f;
            } else {
                double s = 0.0;
                for (int dy = 0; dy < ds; dy++)
                    for (int dx = 0; dx < ds; dx++) {
                        float mv = mask->data[(size_t)(y * ds + dy) * j->W + x * ds + dx];
                        s += mv < 0.0f ? 0.0f : mv > 1.0f ? 1.0f : mv;
                    }
                v = (float)(s / (ds * ds));
            }
            out[(size_t)y * j->w + x] = v;
        }
}

// Decodes x (a diffusion latent) into j->image ([-1, 1] planar).
static void decode(job *j, const float *lat)
{
    sdg_exec *ex = j->ex;
    if (j->p->decoder == SDG_DECODER_TAESD) {
        // TAESD takes the diffusion latent as is and gives [0, 1].
        taesd_decode(ex, j->m->taesd, lat, 1, j->h, j->w, j->image);
        if (!ex->dry)
            for (size_t i = 0; i < (size_t)3 * j->W * j->H; i++)
                j->image[i] = 2.0f * j->image[i] - 1.0f;
        return;
    }
    size_t mark = sdg__mark(ex);
    float *z = sdg__alloc_f32(ex, j->n_lat);
    if (!ex->dry)
        for (size_t i = 0; i < j->n_lat; i++)
            z[i] = lat[i] / j->m->info.scale_factor;
    vae_decode(ex, j->m->vae, z, 1, j->h, j->w, j->image);
    sdg__release(ex, mark);
}

// Encodes an RGB image (optionally masked) into posterior moments [2c, h, w], or with TAESD
// (taesd) into the diffusion latent [c, h, w] itself (TAESD has no posterior and no scale).
static void encode(job *j, const sdg_image *img, const sdg_image *mask, bool taesd,
                   float *moments)
{
    sdg_exec *ex = j->ex;
    size_t mark = sdg__mark(ex);
    size_t n = (size_t)3 * j->W * j->H;
    float *planar = sdg__alloc_f32(ex, n);
    if (!ex->dry) {
        if (img)
            image_to_planar(img, mask, planar);
        else
            memset(planar, 0, n * sizeof(float));
        if (taesd)   // TAESD reads [0, 1]
            for (size_t i = 0; i < n; i++)
                planar[i] = 0.5f * planar[i] + 0.5f;
    }
    if (taesd)
        taesd_encode(ex, j->m->taesd, planar, 1, j->H, j->W, moments);
    else
        vae_encode(ex, j->m->vae, planar, 1, j->H, j->W, moments);
    sdg__release(ex, mark);
}

// ---------------------------------------------------------------------------------------------
// The job

// The embeddings the prompts may name: the model's explicit folder (which must exist), else
// embeddings/ beside the model file, then embeddings/ in the models folder (either may be absent).
static sdg_status plan_embeddings(job *j, sdg_error *err)
{
    const sdg_model *m = j->m;
    char *beside_dir = g_path_get_dirname(m->path);
    char *beside = g_build_filename(beside_dir, "embeddings", NULL);
    char *in_models = m->models_dir ? g_build_filename(m->models_dir, "embeddings", NULL) : NULL;
    const char *dirs[2] = { beside, in_models && strcmp(in_models, beside) ? in_models : NULL };
    bool required[2] = { false, false };
    if (m->embeddings_dir) {
        dirs[0] = m->embeddings_dir;
        dirs[1] = NULL;
        required[0] = true;
    }
    int widths[FAMILY_MAX_ENCODERS];
    for (int e = 0; e < m->spec->n_encoders; e++)
        widths[e] = clip_get_config(m->te[e])->width;
    sdg_status st = embs_request_init(&j->embs, j->ctx->embeddings, m->tok, dirs, required, 2,
                                      widths, m->spec->n_encoders, err);
    g_free(beside_dir);
    g_free(beside);
    g_free(in_models);
    return st;
}

static sdg_status plan(job *j, const sdg_gen_params *p, sdg_error *err)
{
    const sdg_model *m = j->m;
    const unet_config *uc = unet_get_config(m->unet);
    j->p = p;
    // A hires fix's second pass starts from a latent (ctx->init_latent) instead of a picture.
    bool from_latent = j->ctx->init_latent && !p->init_image;
    j->img2img = (p->init_image || from_latent) && !p->mask;
    j->inpaint = p->init_image && p->mask;
    j->model9 = uc->in_ch != uc->out_ch;
    j->W = p->init_image ? p->init_image->width : p->width;
    j->H = p->init_image ? p->init_image->height : p->height;
    int ds = m->info.vae_scale;
    j->h = j->H / ds;
    j->w = j->W / ds;
    j->c = uc->out_ch;
    j->in_ch = uc->in_ch;
    j->n_lat = (size_t)j->c * j->h * j->w;
    j->cfg = p->cfg_scale != 1.0f;
    j->nb = j->cfg ? 2 : 1;
    j->ctx_dim = uc->context_dim;
    j->y_dim = uc->adm_in;
    j->ddim = p->sampler == SDG_SAMPLER_DDIM;
    j->timing = sched_timing_of(p->sampler, p->schedule, p->model_sampling);
    // A1111 (sd_models_xl.py): an empty negative prompt is zeros for SDXL, as sgm's demo does
    // (force_uc_zero_embeddings=["txt"]).
    j->zero_uncond = m->spec->size_cond && (!p->negative_prompt || !*p->negative_prompt);

    sdg_status est = plan_embeddings(j, err);
    if (est != SDG_OK)
        return est;
    int windows = 1;
    for (int e = 0; e < m->spec->n_encoders; e++) {
        const sdg_prompt_dict *dict = &j->embs.dict[e];
        sdg_status st = sdg_prompt_parse(m->tok, "", m->pad_id[e], 1, &j->empty[e], err);
        if (st == SDG_OK)
            st = sdg_prompt_parse_dict(m->tok, p->prompt ? p->prompt : "", m->pad_id[e],
                                       MAX_WINDOWS, dict, &j->cond[e], err);
        if (st == SDG_OK)
            st = sdg_prompt_parse_dict(m->tok, p->negative_prompt ? p->negative_prompt : "",
                                       m->pad_id[e], MAX_WINDOWS, dict, &j->uncond[e], err);
        if (st != SDG_OK)
            return st;
        if (j->cond[e].n_windows > windows)
            windows = j->cond[e].n_windows;
        if (j->cfg && !j->zero_uncond && j->uncond[e].n_windows > windows)
            windows = j->uncond[e].n_windows;
    }
    j->n_ctx = 77 * windows;

    j->sigmas = malloc((size_t)(p->steps + 2) * sizeof(float));
    j->ts = malloc((size_t)(p->steps + 2) * sizeof(float));
    if (!j->sigmas || !j->ts)
        return sdg__fail(err, SDG_ERR_NOMEM, "out of memory");
    j->n_steps = sched_build(&m->sched, p->sampler, p->schedule, j->timing, p->steps, j->sigmas,
                             j->ts);
    if (j->n_steps < 1)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "cannot build a %d-step %s schedule",
                         p->steps, sdg_schedule_name(p->schedule));
    j->start = 0;
    if (j->img2img || (j->inpaint && !j->model9)) {
        int t_enc = (int)(p->strength * (float)p->steps);
        if (t_enc > j->n_steps)
            t_enc = j->n_steps;
        j->start = j->n_steps - t_enc;
    }
    j->total_steps = (j->n_steps - j->start) * p->batch_count;
    return SDG_OK;
}

// Starting latent of the current picture in sampler space.
static void start_latent(job *j)
{
    const float *sg = j->sigmas;
    if (!j->init_lat || (j->ddim && j->start == 0) || (j->inpaint && j->model9)) {
        // From pure noise (k-diffusion scales by sigma_0; DDIM starts from unscaled x_T, and so
        // do sgm and ComfyUI when the run starts at the largest sigma: noise_scaling with
        // max_denoise, math.isclose(sigma_max, sigma_0, rel_tol=1e-5) or sigma_0 > sigma_max).
        float s0 = sg[0];
        float smax = sched_sigma_max(&j->m->sched, j->timing);
        bool max_denoise = j->timing != SCHED_TIMING_KDIFF &&
                           (fabsf(s0 - smax) <= 1e-5f * fmaxf(s0, smax) || s0 > smax);
        bool unscaled = j->ddim || max_denoise;
        float k = unscaled ? sqrtf(1.0f + s0 * s0) : s0;
        for (size_t i = 0; i < j->n_lat; i++)
            j->x[i] = j->noise[i] * k;
        return;
    }
    if (j->start >= j->n_steps) {
        memcpy(j->x, j->init_lat, j->n_lat * sizeof(float));
        return;
    }
    if (j->ddim) {
        // CompVis img2img: encode at the DDIM timestep one above the first one run.
        float se = j->start > 0 ? sg[j->start - 1] : sg[0];
        float s1 = sg[j->start];
        float k = sqrtf(1.0f + s1 * s1) / sqrtf(1.0f + se * se);
        for (size_t i = 0; i < j->n_lat; i++)
            j->x[i] = (j->init_lat[i] + se * j->noise[i]) * k;
    } else {
        float s = sg[j->start];
        for (size_t i = 0; i < j->n_lat; i++)
            j->x[i] = j->init_lat[i] + s * j->noise[i];
    }
}

static sdg_status run(job *j, sdg_result *res, sdg_error *err)
{
    sdg_exec *ex = j->ex;
    const sdg_gen_params *p = j->p;
    size_t hw = (size_t)j->h * j->w;
    size_t HW = (size_t)j->W * j->H;
    ex->arena.used = 0;
    ex->arena.peak = 0;

    j->context = sdg__alloc_f32(ex, (size_t)j->nb * j->n_ctx * j->ctx_dim);
    j->y = j->y_dim ? sdg__alloc_f32(ex, (size_t)j->nb * j->y_dim) : NULL;
    j->unet_in = sdg__alloc_f32(ex, (size_t)j->nb * j->in_ch * hw);
    j->unet_t = sdg__alloc_f32(ex, (size_t)j->nb);
    j->eps = sdg__alloc_f32(ex, (size_t)j->nb * j->n_lat);
    j->x = sdg__alloc_f32(ex, j->n_lat);
    j->noise = sdg__alloc_f32(ex, j->n_lat);
    j->step_noise = sdg__alloc_f32(ex, j->n_lat);
    j->scratch = sdg__alloc_f32(ex, sampler_scratch_floats(p->sampler, j->n_lat));
    j->image = sdg__alloc_f32(ex, 3 * HW);
    // With a TAESD decoder the preview is its picture (full size), else the latent projection.
    j->preview_taesd = p->preview && j->m->taesd;
    j->preview = sdg__alloc_f32(ex, 3 * (j->preview_taesd ? HW : hw));
    // The init image's latent (img2img, the known-region blend), and for 9-ch models the latent
    // of the masked image (everything masked without a mask: nothing of the image is given).
    bool blend_known = j->inpaint && (!j->model9 || p->inpaint_blend);
    bool need_init = j->img2img || blend_known;
    bool from_latent = j->ctx->init_latent && !p->init_image;
    if (need_init) {
        if (!from_latent)
            j->moments = sdg__alloc_f32(ex, 2 * j->n_lat);
        j->init_lat = sdg__alloc_f32(ex, j->n_lat);
    }
    if (j->model9) {
        j->masked_moments = sdg__alloc_f32(ex, 2 * j->n_lat);
        j->mask_lat = sdg__alloc_f32(ex, hw);
        j->masked_lat = sdg__alloc_f32(ex, j->n_lat);
    }
    if (blend_known)
        j->blend_lat = sdg__alloc_f32(ex, hw);
    if (j->inpaint)
        j->blend = sdg__alloc_f32(ex, HW);

    // Text: [uncond, cond] (cond only without guidance).
    size_t per = (size_t)j->n_ctx * j->ctx_dim;
    sdg_prompt *uncond[FAMILY_MAX_ENCODERS] = { &j->uncond[0], &j->uncond[1] };
    sdg_prompt *cond[FAMILY_MAX_ENCODERS] = { &j->cond[0], &j->cond[1] };
    if (j->cfg)
        encode_conditioning(j, uncond, j->zero_uncond, j->context, j->y);
    encode_conditioning(j, cond, false, j->context + (j->cfg ? per : 0),
                        j->y ? j->y + (j->cfg ? j->y_dim : 0) : NULL);
    // The text encoders' weights are not read again in this run: out of the resident memory
    // while the UNet and the VAE run (they come back from the page cache for the next prompt).
    if (!ex->dry)
        for (int e = 0; e < j->m->spec->n_encoders; e++)
            sdg_wb_drop_pages(j->m->wb, j->m->layout->te[e]);

    // Images: posteriors (once), masks.
    j->init_taesd = need_init && !from_latent && p->decoder == SDG_DECODER_TAESD && j->m->taesd &&
                    taesd_has_encoder(j->m->taesd);
    if (need_init && !from_latent)
        encode(j, p->init_image, NULL, j->init_taesd, j->moments);
    if (j->model9)
        encode(j, j->inpaint ? p->init_image : NULL, p->mask, false, j->masked_moments);
    if (j->mask_lat && !ex->dry)
        latent_mask(j, p->mask, true, j->mask_lat);
    if (j->blend_lat && !ex->dry)
        latent_mask(j, p->mask, false, j->blend_lat);
    if (j->inpaint)
        feather_mask(j, p->mask, j->blend);

    sampler_hooks hooks = {
        .denoise = denoise,
        .noise = ancestral_noise,
        .on_step = on_step,
        .user = j,
    };
    for (int pic = 0; pic < p->batch_count; pic++) {
        j->picture = pic;
        j->seed = p->seed + (uint64_t)pic;
        if (ex->dry) {
            // One of each network in measuring mode sizes the arena.
            unet_cond c = { j->context, j->n_ctx, j->y };
            unet_forward(ex, job_unet(j), j->unet_in, j->nb, j->h, j->w, j->unet_t, &c, j->eps);
            if (j->preview_taesd)
                taesd_preview(j, NULL);
            decode(j, j->x);
            break;
        }
        if (pic == 0 && report(j, NULL) != SDG_OK)
            return sdg__fail(err, SDG_ERR_CANCELLED, "cancelled");
        fill_noise(j, SDG_STREAM_INITIAL, 0, j->noise, j->n_lat);
        if ((need_init && !from_latent) || j->model9)
            fill_noise(j, SDG_STREAM_VAE, 0, j->step_noise, j->n_lat);
        if (from_latent)
            memcpy(j->init_lat, j->ctx->init_latent, j->n_lat * sizeof(float));
        else if (j->init_taesd)
            memcpy(j->init_lat, j->moments, j->n_lat * sizeof(float));
        else if (need_init)
            posterior_sample(j, j->moments, j->step_noise, j->init_lat);
        if (j->model9)
            posterior_sample(j, j->masked_moments, j->step_noise, j->masked_lat);
        start_latent(j);
        int n_run = j->n_steps - j->start;
        if (n_run > 0) {
            sdg_status st = sampler_run(p->sampler, &j->m->sched, j->timing,
                                        j->sigmas + j->start, j->ts + j->start, n_run, j->x,
                                        j->n_lat, j->scratch, &hooks);
            if (st == SDG_ERR_CANCELLED)
                return sdg__fail(err, st, "cancelled");
            if (st != SDG_OK)
                return sdg__fail(err, st, "sampling failed: %s", sdg_status_name(st));
        }
        // Back to x_t space (a no-op when the run ends at sigma 0).
        float s_end = j->sigmas[j->n_steps];
        float k = 1.0f / sqrtf(1.0f + s_end * s_end);
        float *lat = res->latents + (size_t)pic * j->n_lat;
        for (size_t i = 0; i < j->n_lat; i++)
            lat[i] = j->x[i] * k;
        if (atomic_load(&j->ctx->cancel))
            return sdg__fail(err, SDG_ERR_CANCELLED, "cancelled");
        decode(j, lat);

        sdg_image *img = res->images[pic];
        for (size_t i = 0; i < HW; i++)
            for (int ch = 0; ch < 3; ch++) {
                float v = (j->image[ch * HW + i] + 1.0f) * 0.5f;
                v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
                if (j->inpaint) {
                    float b = j->blend[i];
                    float o = p->init_image->data[i * 3 + ch];
                    v = b * v + (1.0f - b) * o;
                }
                img->data[i * 3 + ch] = v;
            }
    }
    return SDG_OK;
}

static void job_clear(job *j)
{
    for (int e = 0; e < FAMILY_MAX_ENCODERS; e++) {
        sdg_prompt_clear(&j->cond[e]);
        sdg_prompt_clear(&j->uncond[e]);
        sdg_prompt_clear(&j->empty[e]);
    }
    embs_request_clear(&j->embs);
    free(j->sigmas);
    free(j->ts);
}

static sdg_result *result_new(const job *j, int n)
{
    sdg_result *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->images = calloc((size_t)n, sizeof *r->images);
    r->latents = malloc((size_t)n * j->n_lat * sizeof(float));
    if (!r->images || !r->latents) {
        sdg_result_free(r);
        return NULL;
    }
    r->n_images = n;
    for (int i = 0; i < n; i++)
        if (!(r->images[i] = sdg_image_new(j->W, j->H, 3))) {
            sdg_result_free(r);
            return NULL;
        }
    r->latent_channels = j->c;
    r->latent_height = j->h;
    r->latent_width = j->w;
    return r;
}

// Plans the request and sizes it with the dry run (every allocation of the real run, no
// arithmetic), then fills e and gives the memory guard's verdict. The arena figure is what
// sdg__exec_reserve will allocate for the measured peak, so the estimate is exact for it.
static sdg_status measure(job *j, const sdg_gen_params *p, sdg_memory_estimate *e, sdg_error *err)
{
    sdg_ctx *ctx = j->ctx;
    const sdg_model *m = j->m;
    memset(e, 0, sizeof *e);
    sdg_status st = plan(j, p, err);
    if (st != SDG_OK)
        return st;
    // The precision chooses algorithms (winograd.c) and so the scratch: measured as it will run.
    ctx->ex.fast = sdg__precision_is_fast(p->precision);
    ctx->ex.dry = true;
    st = run(j, NULL, err);
    ctx->ex.dry = false;
    ctx->ex.fast = false;
    if (st != SDG_OK)
        return st;

    uint64_t n = (uint64_t)p->batch_count;
    e->width = j->W;
    e->height = j->H;
    // LoRA copies: held when the ctx applied this request's list already, else still to make.
    uint64_t lora_held = ctx->lora ? ctx->lora->bytes : 0;
    e->weights_bytes = m->copy_bytes + m->mapped_bytes + lora_held + ctx->lora_new_bytes;
    e->arena_bytes = sdg__exec_reserve_size(ctx->ex.arena.peak);
    e->result_bytes = n * ((uint64_t)j->W * j->H * 3 + j->n_lat) * sizeof(float);
    e->extra_bytes = p->extra_bytes;
    e->working_bytes = e->arena_bytes + e->result_bytes + e->extra_bytes;
    e->total_bytes = e->weights_bytes + e->working_bytes;
    // Held already: float32 copies of a loaded model (anonymous memory, not in the available
    // figure) and an arena from an earlier run. Mapped F32 weights are page cache, which the
    // available figure counts as free, so every run needs them again.
    uint64_t held_weights = m->header_only ? 0 : m->copy_bytes + lora_held;
    uint64_t weights_needed = e->weights_bytes - held_weights;
    uint64_t cap = ctx->ex.arena.cap;
    uint64_t arena_needed = e->arena_bytes > cap ? e->arena_bytes - cap : 0;
    e->needed_bytes = weights_needed + arena_needed + e->result_bytes + e->extra_bytes;

    sdg_mem_source source;
    st = sdg__mem_available(&e->available_bytes, &source, err);
    if (st != SDG_OK) {
        memset(e, 0, sizeof *e);
        return st;
    }
    e->available_known = source != SDG_MEM_UNKNOWN;
    e->fits = !e->available_known || e->needed_bytes <= e->available_bytes;
    return sdg__mem_verdict(e, p->batch_count, weights_needed, held_weights > 0, source, err);
}

sdg_status sdg__pipeline_estimate(sdg_ctx *ctx, const sdg_gen_params *p, sdg_memory_estimate *e,
                                  sdg_error *err)
{
    job j = { .ctx = ctx, .m = ctx->model, .ex = &ctx->ex };
    sdg_status st = measure(&j, p, e, err);
    job_clear(&j);
    return st;
}

// The cond side's text, alone: what sdg__pipeline_text hands back.
static void text_run(job *j)
{
    sdg_exec *ex = j->ex;
    ex->arena.used = 0;
    ex->arena.peak = 0;
    j->context = sdg__alloc_f32(ex, (size_t)j->n_ctx * j->ctx_dim);
    j->y = j->y_dim ? sdg__alloc_f32(ex, (size_t)j->y_dim) : NULL;
    sdg_prompt *cond[FAMILY_MAX_ENCODERS] = { &j->cond[0], &j->cond[1] };
    encode_conditioning(j, cond, false, j->context, j->y);
}

sdg_status sdg__pipeline_text(sdg_ctx *ctx, const sdg_gen_params *p, float **context, int *n_ctx,
                              int *ctx_dim, float **y, int *y_dim, sdg_error *err)
{
    job j = { .ctx = ctx, .m = ctx->model, .ex = &ctx->ex };
    *context = *y = NULL;
    sdg_status st = plan(&j, p, err);
    if (st == SDG_OK) {
        ctx->ex.dry = true;
        text_run(&j);
        ctx->ex.dry = false;
        st = sdg__exec_reserve(&ctx->ex, ctx->ex.arena.peak, err);
    }
    if (st == SDG_OK) {
        text_run(&j);
        size_t nc = (size_t)j.n_ctx * j.ctx_dim;
        *context = malloc(nc * sizeof(float));
        *y = j.y_dim ? malloc((size_t)j.y_dim * sizeof(float)) : NULL;
        if (!*context || (j.y_dim && !*y)) {
            st = sdg__fail(err, SDG_ERR_NOMEM, "out of memory");
        } else {
            memcpy(*context, j.context, nc * sizeof(float));
            if (j.y_dim)
                memcpy(*y, j.y, (size_t)j.y_dim * sizeof(float));
            *n_ctx = j.n_ctx;
            *ctx_dim = j.ctx_dim;
            *y_dim = j.y_dim;
        }
    }
    job_clear(&j);
    if (st != SDG_OK) {
        free(*context);
        free(*y);
        *context = *y = NULL;
    }
    return st;
}

sdg_status sdg__pipeline_generate(sdg_ctx *ctx, const sdg_gen_params *p, sdg_result **out,
                                  sdg_error *err)
{
    job j = { .ctx = ctx, .m = ctx->model, .ex = &ctx->ex };
    sdg_memory_estimate e;
    sdg_status st = measure(&j, p, &e, err);
    sdg_result *res = NULL;
    if (st == SDG_OK)
        st = sdg__exec_reserve(&ctx->ex, ctx->ex.arena.peak, err);
    if (st == SDG_OK) {
        res = result_new(&j, p->batch_count);
        if (!res)
            st = sdg__fail(err, SDG_ERR_NOMEM, "out of memory for %d pictures of %dx%d",
                           p->batch_count, j.W, j.H);
    }
    if (st == SDG_OK) {
        ctx->ex.fast = sdg__precision_is_fast(p->precision);
        st = run(&j, res, err);
        ctx->ex.fast = false;
    }
    job_clear(&j);
    if (st != SDG_OK) {
        sdg_result_free(res);
        return st;
    }
    *out = res;
    return SDG_OK;
}
