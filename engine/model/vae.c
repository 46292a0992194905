/*
 * vae.c - the Stable Diffusion autoencoder (see vae.h): ldm's Encoder and Decoder (ResnetBlocks,
 * asymmetric-pad downsampling, nearest upsampling, one single-head attention block in the middle)
 * plus quant_conv / post_quant_conv.
 *
 * Memory: the feature maps are large (a 128-channel map at 512x512 is 128 MiB), so the current
 * map always sits at the bottom of this call's part of the arena and every block leaves its
 * output in the same place (moving it down when it had to be computed elsewhere), releasing all
 * scratch above it. Residual blocks work in place where shapes allow, upsampling convolves bands
 * of rows so the full-size nearest-neighbour copy never exists, and the middle attention takes
 * queries in chunks so the score matrix stays bounded. Peak for a 512x512 decode is about four
 * full-resolution 128-channel maps.
 *
 * Not here: posterior sampling, the logvar clamp, the latent scale factor (pipeline), per-level
 * attention (attn_resolutions; SD has none), file parsing (loader/).
 *
 * ref: CompVis/stable-diffusion @21f890f ldm/modules/diffusionmodules/model.py (ResnetBlock,
 *      AttnBlock, Downsample, Upsample, Encoder, Decoder); ldm/models/autoencoder.py
 *      (AutoencoderKL.encode/decode).
 */
#include "vae.h"

#include "../tensor/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VAE_MAX_LEVELS 8
#define VAE_MAX_BLOCKS 8                      // per level, decoder included (num_res_blocks + 1)
#define VAE_GROUPS 32
#define VAE_EPS 1e-6f
#define VAE_NAME_MAX 512
// Upsampling bands and attention score chunks hold about this many floats (16 MiB).
#define VAE_CHUNK_FLOATS ((size_t)4 << 20)

static size_t vae_chunk_floats = VAE_CHUNK_FLOATS;   // changed only by tests
static float vae_dry_dummy[1];                        // stands in for absent buffers in dry runs

typedef struct vae_conv {
    int cin, cout, k;                         // square kernel, stride 1, "same" padding
    sdg_weight w;                             // [cout, cin, k, k]   borrowed (sdg_weights)
    const float *b;                           // [cout]
} vae_conv;

typedef struct vae_resblock {
    int cin, cout;
    const float *norm1_w, *norm1_b;           // [cin]
    vae_conv conv1;                           // 3x3 cin -> cout
    const float *norm2_w, *norm2_b;           // [cout]
    vae_conv conv2;                           // 3x3 cout -> cout
    vae_conv nin;                             // 1x1 cin -> cout when cin != cout (else w NULL)
} vae_resblock;

typedef struct vae_attn {
    int c;
    const float *norm_w, *norm_b;             // [c]
    sdg_weight q_w, k_w, v_w, proj_w;         // [c, c] (stored [c,c,1,1] or [c,c])
    const float *q_b, *k_b, *v_b, *proj_b;    // [c]
} vae_attn;

typedef struct vae_mid {
    vae_resblock block_1;
    vae_attn attn_1;
    vae_resblock block_2;
} vae_mid;

struct vae_model {
    vae_config cfg;
    int enc_zz;                               // encoder conv_out channels (2 * encoder z_channels)
    int dec_z;                                // decoder conv_in input channels
    // encoder
    vae_conv enc_conv_in;
    vae_resblock down[VAE_MAX_LEVELS][VAE_MAX_BLOCKS];
    vae_conv downsample[VAE_MAX_LEVELS];      // 3x3 stride 2; not on the last level
    vae_mid enc_mid;
    const float *enc_norm_w, *enc_norm_b;
    vae_conv enc_conv_out;
    vae_conv quant;                           // 1x1 enc_zz -> 2*z_ch
    // decoder
    vae_conv post_quant;                      // 1x1 z_ch -> dec_z
    vae_conv dec_conv_in;
    vae_mid dec_mid;
    vae_resblock up[VAE_MAX_LEVELS][VAE_MAX_BLOCKS];
    vae_conv upsample[VAE_MAX_LEVELS];        // 3x3 after nearest x2; not on level 0
    const float *dec_norm_w, *dec_norm_b;
    vae_conv dec_conv_out;
};

// ---------------------------------------------------------------------------------------------
// Loading

// Looks up a 4-D tensor's shape for the architecture; records an error naming it when it is
// absent or not 4-D.
static bool vae_shape4(sdg_weights *wb, const char *prefix, const char *name, int64_t s[4])
{
    const st_tensor *t = sdg_wb_find(wb, "%s%s", prefix, name);
    if (!t) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "autoencoder: tensor %s%s is missing", prefix, name);
        return false;
    }
    if (t->n_dims != 4) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "autoencoder: tensor %s%s should be 4-D (it has %d"
                         " dimensions)", prefix, name, t->n_dims);
        return false;
    }
    for (int i = 0; i < 4; i++) {
        if (t->shape[i] < 1 || t->shape[i] > (1 << 20)) {
            sdg_wb_set_error(wb, SDG_ERR_SHAPE, "autoencoder: tensor %s%s has an implausible"
                             " shape", prefix, name);
            return false;
        }
        s[i] = t->shape[i];
    }
    return true;
}

static bool vae_read_config(sdg_weights *wb, const char *prefix, vae_model *m)
{
    vae_config *c = &m->cfg;
    int64_t s[4];
    char name[VAE_NAME_MAX];
    if (!vae_shape4(wb, prefix, "encoder.conv_in.weight", s))
        return false;
    c->ch = (int)s[0];
    c->in_ch = (int)s[1];
    if (c->ch % VAE_GROUPS != 0) {
        sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "autoencoder: %d base channels under %s is not"
                         " a multiple of the %d GroupNorm groups", c->ch, prefix, VAE_GROUPS);
        return false;
    }

    int L = 0;
    while (L <= VAE_MAX_LEVELS && sdg_wb_find(wb, "%sencoder.down.%d.block.0.conv1.weight",
                                              prefix, L))
        L++;
    if (L == 0) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "autoencoder: tensor"
                         " %sencoder.down.0.block.0.conv1.weight is missing", prefix);
        return false;
    }
    if (L > VAE_MAX_LEVELS) {
        sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "autoencoder: more than %d levels under %s",
                         VAE_MAX_LEVELS, prefix);
        return false;
    }
    c->n_levels = L;
    c->downscale = 1 << (L - 1);
    for (int i = 0; i < L; i++) {
        snprintf(name, sizeof name, "encoder.down.%d.block.0.conv1.weight", i);
        if (!vae_shape4(wb, prefix, name, s))
            return false;
        if (s[0] % c->ch != 0) {
            sdg_wb_set_error(wb, SDG_ERR_SHAPE, "autoencoder: %s%s has %lld output channels,"
                             " not a multiple of the %d base channels", prefix, name,
                             (long long)s[0], c->ch);
            return false;
        }
        c->ch_mult[i] = (int)(s[0] / c->ch);
        // Per-level attention (attn_resolutions) is not implemented: SD's VAE has none.
        if (sdg_wb_find(wb, "%sencoder.down.%d.attn.0.q.weight", prefix, i) ||
            sdg_wb_find(wb, "%sdecoder.up.%d.attn.0.q.weight", prefix, i)) {
            sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "autoencoder: attention at level %d under"
                             " %s (attn_resolutions) is not supported", i, prefix);
            return false;
        }
    }
    for (int i = L; i < VAE_MAX_LEVELS; i++)
        c->ch_mult[i] = 0;

    int nb = 0;
    while (nb < VAE_MAX_BLOCKS && sdg_wb_find(wb, "%sencoder.down.0.block.%d.conv1.weight",
                                              prefix, nb))
        nb++;
    if (nb >= VAE_MAX_BLOCKS) {
        sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "autoencoder: %d or more res blocks per level"
                         " under %s", VAE_MAX_BLOCKS, prefix);
        return false;
    }
    c->num_res_blocks = nb;
    // The decoder has one block more per level and as many levels; extra ones would be ignored
    // silently otherwise.
    if (sdg_wb_find(wb, "%sdecoder.up.0.block.%d.conv1.weight", prefix, nb + 1) ||
        sdg_wb_find(wb, "%sdecoder.up.%d.block.0.conv1.weight", prefix, L)) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "autoencoder: the decoder under %s has more levels or"
                         " blocks than the encoder (%d levels, %d blocks) implies", prefix, L, nb);
        return false;
    }

    if (!vae_shape4(wb, prefix, "quant_conv.weight", s))
        return false;
    if (s[0] % 2 != 0) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "autoencoder: %squant_conv.weight has an odd number"
                         " of output channels (%lld): not mean and logvar", prefix,
                         (long long)s[0]);
        return false;
    }
    c->z_ch = (int)(s[0] / 2);
    m->enc_zz = (int)s[1];
    if (!vae_shape4(wb, prefix, "post_quant_conv.weight", s))
        return false;
    m->dec_z = (int)s[0];
    if (!vae_shape4(wb, prefix, "decoder.conv_out.weight", s))
        return false;
    c->out_ch = (int)s[0];
    return true;
}

static void vae_bind_conv(sdg_weights *wb, vae_conv *cv, int cout, int cin, int k,
                          const char *base, const char *name)
{
    cv->cin = cin;
    cv->cout = cout;
    cv->k = k;
    cv->w = SDG_WCONV(wb, cout, cin, k, k, "%s%s.weight", base, name);
    cv->b = SDG_WB1(wb, cout, "%s%s.bias", base, name);
}

static void vae_bind_norm(sdg_weights *wb, const float **w, const float **b, int c,
                          const char *base, const char *name)
{
    *w = SDG_WB1(wb, c, "%s%s.weight", base, name);
    *b = SDG_WB1(wb, c, "%s%s.bias", base, name);
}

// base: the block's name prefix, ending in '.'.
static void vae_bind_resblock(sdg_weights *wb, vae_resblock *rb, int cin, int cout,
                              const char *base)
{
    rb->cin = cin;
    rb->cout = cout;
    vae_bind_norm(wb, &rb->norm1_w, &rb->norm1_b, cin, base, "norm1");
    vae_bind_conv(wb, &rb->conv1, cout, cin, 3, base, "conv1");
    vae_bind_norm(wb, &rb->norm2_w, &rb->norm2_b, cout, base, "norm2");
    vae_bind_conv(wb, &rb->conv2, cout, cout, 3, base, "conv2");
    // ldm: nin_shortcut (1x1) exists exactly when the channel count changes.
    if (cin != cout)
        vae_bind_conv(wb, &rb->nin, cout, cin, 1, base, "nin_shortcut");
}

// ldm stores q/k/v/proj_out as 1x1 convs [c,c,1,1]; files converted from diffusers may keep
// the Linear shape [c,c]. Same memory either way.
static sdg_weight vae_bind_proj(sdg_weights *wb, int c, const char *base, const char *name)
{
    const st_tensor *t = sdg_wb_find(wb, "%s%s.weight", base, name);
    if (t && t->n_dims == 2)
        return SDG_WLIN(wb, c, c, "%s%s.weight", base, name);
    return sdg_wb_get_weight(wb, SDG_PANEL_B, 4, (const int64_t[]){c, c, 1, 1}, "%s%s.weight", base,
                             name);
}

static void vae_bind_attn(sdg_weights *wb, vae_attn *at, int c, const char *base)
{
    at->c = c;
    vae_bind_norm(wb, &at->norm_w, &at->norm_b, c, base, "norm");
    at->q_w = vae_bind_proj(wb, c, base, "q");
    at->q_b = SDG_WB1(wb, c, "%sq.bias", base);
    at->k_w = vae_bind_proj(wb, c, base, "k");
    at->k_b = SDG_WB1(wb, c, "%sk.bias", base);
    at->v_w = vae_bind_proj(wb, c, base, "v");
    at->v_b = SDG_WB1(wb, c, "%sv.bias", base);
    at->proj_w = vae_bind_proj(wb, c, base, "proj_out");
    at->proj_b = SDG_WB1(wb, c, "%sproj_out.bias", base);
}

// part: "encoder" or "decoder".
static void vae_bind_mid(sdg_weights *wb, vae_mid *mid, int c, const char *prefix,
                         const char *part)
{
    char base[VAE_NAME_MAX];
    snprintf(base, sizeof base, "%s%s.mid.block_1.", prefix, part);
    vae_bind_resblock(wb, &mid->block_1, c, c, base);
    snprintf(base, sizeof base, "%s%s.mid.attn_1.", prefix, part);
    vae_bind_attn(wb, &mid->attn_1, c, base);
    snprintf(base, sizeof base, "%s%s.mid.block_2.", prefix, part);
    vae_bind_resblock(wb, &mid->block_2, c, c, base);
}

vae_model *vae_load(sdg_weights *wb, const char *prefix)
{
    if (sdg_wb_status(wb, NULL) != SDG_OK)
        return NULL;
    if (strlen(prefix) > VAE_NAME_MAX / 2) {
        sdg_wb_set_error(wb, SDG_ERR_INVALID_ARG, "autoencoder: tensor name prefix too long");
        return NULL;
    }
    vae_model *m = calloc(1, sizeof *m);
    if (!m) {
        sdg_wb_set_error(wb, SDG_ERR_NOMEM, "out of memory loading the autoencoder");
        return NULL;
    }
    if (!vae_read_config(wb, prefix, m)) {
        free(m);
        return NULL;
    }
    const vae_config *c = &m->cfg;
    const int L = c->n_levels, nb = c->num_res_blocks;
    char base[VAE_NAME_MAX];

    // Encoder: level i takes ch*ch_mult[i-1] (ch for level 0) to ch*ch_mult[i].
    vae_bind_conv(wb, &m->enc_conv_in, c->ch, c->in_ch, 3, prefix, "encoder.conv_in");
    int block_in = c->ch;
    for (int i = 0; i < L; i++) {
        int block_out = c->ch * c->ch_mult[i];
        for (int j = 0; j < nb; j++) {
            snprintf(base, sizeof base, "%sencoder.down.%d.block.%d.", prefix, i, j);
            vae_bind_resblock(wb, &m->down[i][j], block_in, block_out, base);
            block_in = block_out;
        }
        if (i != L - 1) {
            snprintf(base, sizeof base, "%sencoder.down.%d.downsample.", prefix, i);
            vae_bind_conv(wb, &m->downsample[i], block_in, block_in, 3, base, "conv");
        }
    }
    vae_bind_mid(wb, &m->enc_mid, block_in, prefix, "encoder");
    vae_bind_norm(wb, &m->enc_norm_w, &m->enc_norm_b, block_in, prefix, "encoder.norm_out");
    vae_bind_conv(wb, &m->enc_conv_out, m->enc_zz, block_in, 3, prefix, "encoder.conv_out");
    vae_bind_conv(wb, &m->quant, 2 * c->z_ch, m->enc_zz, 1, prefix, "quant_conv");

    // Decoder: levels in reverse, num_res_blocks + 1 blocks each, upsampling except on level 0.
    vae_bind_conv(wb, &m->post_quant, m->dec_z, c->z_ch, 1, prefix, "post_quant_conv");
    block_in = c->ch * c->ch_mult[L - 1];
    vae_bind_conv(wb, &m->dec_conv_in, block_in, m->dec_z, 3, prefix, "decoder.conv_in");
    vae_bind_mid(wb, &m->dec_mid, block_in, prefix, "decoder");
    for (int i = L - 1; i >= 0; i--) {
        int block_out = c->ch * c->ch_mult[i];
        for (int j = 0; j < nb + 1; j++) {
            snprintf(base, sizeof base, "%sdecoder.up.%d.block.%d.", prefix, i, j);
            vae_bind_resblock(wb, &m->up[i][j], block_in, block_out, base);
            block_in = block_out;
        }
        if (i != 0) {
            snprintf(base, sizeof base, "%sdecoder.up.%d.upsample.", prefix, i);
            vae_bind_conv(wb, &m->upsample[i], block_in, block_in, 3, base, "conv");
        }
    }
    vae_bind_norm(wb, &m->dec_norm_w, &m->dec_norm_b, block_in, prefix, "decoder.norm_out");
    vae_bind_conv(wb, &m->dec_conv_out, c->out_ch, block_in, 3, prefix, "decoder.conv_out");

    if (sdg_wb_status(wb, NULL) != SDG_OK) {
        free(m);
        return NULL;
    }
    return m;
}

void vae_free(vae_model *m)
{
    free(m);
}

const vae_config *vae_get_config(const vae_model *m)
{
    return &m->cfg;
}

void vae_set_chunk_floats(size_t floats)
{
    vae_chunk_floats = floats ? floats : VAE_CHUNK_FLOATS;
}

// ---------------------------------------------------------------------------------------------
// Forward

// The current feature map x [n, c, h, w]. It always starts at arena mark `base`, with nothing
// of this pass allocated above it between blocks.
typedef struct vae_map {
    float *x;
    int n, c, h, w;
    size_t base;
} vae_map;

static size_t vae_map_size(const vae_map *m)
{
    return (size_t)m->n * m->c * m->h * m->w;
}

// Makes y [n, c, h, w] (computed above the map) the new map: moves it down to the map's place
// and releases everything above it.
static void vae_settle(sdg_exec *ex, vae_map *m, const float *y, int c, int h, int w)
{
    m->c = c;
    m->h = h;
    m->w = w;
    size_t count = vae_map_size(m);
    if (!ex->dry && y != m->x)
        memmove(m->x, y, count * sizeof *y);
    sdg__release(ex, m->base);
    float *x = sdg__alloc_f32(ex, count);
    SDG_ASSERT(ex->dry || x == m->x);
}

// Stride-1 "same" convolution (3x3 padding 1, or 1x1) of x [n, cv->cin, h, w] into y.
static void vae_conv_apply(sdg_exec *ex, const vae_conv *cv, const float *x, int n, int h, int w,
                           float *y)
{
    int p = cv->k / 2;
    sdg_op_conv2d(ex, x, n, cv->cin, h, w, cv->w, cv->b, cv->cout, cv->k, 1, p, p, p, p, y);
}

// x [n, cin, h, w] -> [n, cout, h, w].
// PyTorch (ResnetBlock, temb None, dropout 0):
//   h = conv1(swish(norm1(x))); h = conv2(swish(norm2(h))); return x + h  (nin_shortcut(x) + h)
static void vae_resblock_forward(sdg_exec *ex, const vae_resblock *rb, vae_map *m)
{
    SDG_ASSERT(m->c == rb->cin);
    const int n = m->n, h = m->h, w = m->w;
    const size_t hw = (size_t)h * w;
    const size_t in_sz = (size_t)n * rb->cin * hw, out_sz = (size_t)n * rb->cout * hw;
    float *x = m->x;
    if (!rb->nin.w.data) {
        // Same width: x + 2 maps, the sum lands in x.
        size_t top = sdg__mark(ex);
        float *t = sdg__alloc_f32(ex, in_sz);
        float *u = sdg__alloc_f32(ex, out_sz);
        sdg_op_group_norm(ex, x, n, rb->cin, hw, VAE_GROUPS, rb->norm1_w, rb->norm1_b, VAE_EPS,
                          true, t);
        vae_conv_apply(ex, &rb->conv1, t, n, h, w, u);
        sdg_op_group_norm(ex, u, n, rb->cout, hw, VAE_GROUPS, rb->norm2_w, rb->norm2_b, VAE_EPS,
                          true, u);
        vae_conv_apply(ex, &rb->conv2, u, n, h, w, t);
        sdg_op_add(ex, x, t, out_sz, x);
        sdg__release(ex, top);
        return;
    }
    // Width changes: take the shortcut first, then x is free to be normalised in place.
    float *s = sdg__alloc_f32(ex, out_sz);
    vae_conv_apply(ex, &rb->nin, x, n, h, w, s);
    sdg_op_group_norm(ex, x, n, rb->cin, hw, VAE_GROUPS, rb->norm1_w, rb->norm1_b, VAE_EPS, true,
                      x);
    float *u = sdg__alloc_f32(ex, out_sz);
    vae_conv_apply(ex, &rb->conv1, x, n, h, w, u);
    sdg_op_group_norm(ex, u, n, rb->cout, hw, VAE_GROUPS, rb->norm2_w, rb->norm2_b, VAE_EPS, true,
                      u);
    float *o = in_sz >= out_sz ? x : sdg__alloc_f32(ex, out_sz);
    vae_conv_apply(ex, &rb->conv2, u, n, h, w, o);
    sdg_op_add(ex, o, s, out_sz, o);
    vae_settle(ex, m, o, rb->cout, h, w);
}

// x [n, c, hw] -> x + attention(x), single head over all pixels.
// PyTorch (AttnBlock): h = norm(x); q, k, v = q(h), k(h), v(h)   (1x1 convs)
//   w = softmax(q^T k * c^-0.5, dim=keys); h = proj_out(v @ w^T); return x + h
static void vae_attn_forward(sdg_exec *ex, const vae_attn *at, vae_map *m)
{
    SDG_ASSERT(m->c == at->c);
    const int n = m->n, C = at->c;
    const size_t hw = (size_t)m->h * m->w, sz = vae_map_size(m);
    SDG_ASSERT(hw <= (size_t)INT32_MAX / 2);
    float *x = m->x;
    size_t top = sdg__mark(ex);
    float *t = sdg__alloc_f32(ex, sz);
    float *tt = sdg__alloc_f32(ex, sz);
    float *q = sdg__alloc_f32(ex, sz);
    float *k = sdg__alloc_f32(ex, sz);
    float *v = sdg__alloc_f32(ex, sz);
    sdg_op_group_norm(ex, x, n, C, hw, VAE_GROUPS, at->norm_w, at->norm_b, VAE_EPS, false, t);
    // Token layout [n, hw, C]: a 1x1 conv is then a Linear over rows.
    sdg_op_transpose(ex, t, n, (size_t)C, hw, tt);
    sdg_op_linear(ex, tt, (size_t)n * hw, C, at->q_w, at->q_b, C, q);
    sdg_op_linear(ex, tt, (size_t)n * hw, C, at->k_w, at->k_b, C, k);
    sdg_op_linear(ex, tt, (size_t)n * hw, C, at->v_w, at->v_b, C, v);
    // Queries in chunks so the score matrix (chunk x hw) stays bounded at large sizes; tt is
    // free now and takes the output.
    size_t chunk = vae_chunk_floats / hw;
    if (chunk < 1)
        chunk = 1;
    if (chunk > hw)
        chunk = hw;
    const float scale = (float)(1.0 / sqrt((double)C));
    for (int b = 0; b < n; b++) {
        const size_t off = (size_t)b * hw * C;
        for (size_t q0 = 0; q0 < hw; q0 += chunk) {
            size_t tq = hw - q0 < chunk ? hw - q0 : chunk;
            sdg_op_attention(ex, q + off + q0 * C, C, k + off, C, v + off, C, 1, (int)tq,
                             (int)hw, 1, C, scale, false, tt + off + q0 * C, C);
        }
    }
    sdg_op_linear(ex, tt, (size_t)n * hw, C, at->proj_w, at->proj_b, C, q);
    sdg_op_transpose(ex, q, n, hw, (size_t)C, t);
    sdg_op_add(ex, x, t, sz, x);
    sdg__release(ex, top);
}

static void vae_mid_forward(sdg_exec *ex, const vae_mid *mid, vae_map *m)
{
    vae_resblock_forward(ex, &mid->block_1, m);
    vae_attn_forward(ex, &mid->attn_1, m);
    vae_resblock_forward(ex, &mid->block_2, m);
}

// x [n, c, h, w] -> [n, c, h/2, w/2].
// PyTorch (Downsample, with_conv): x = F.pad(x, (0, 1, 0, 1)); x = conv(x)   (3x3, stride 2,
// padding 0: the extra zeros are on the right and bottom only)
static void vae_downsample_forward(sdg_exec *ex, const vae_conv *cv, vae_map *m)
{
    const int oh = sdg_conv_out_size(m->h, 3, 2, 0, 1), ow = sdg_conv_out_size(m->w, 3, 2, 0, 1);
    float *y = sdg__alloc_f32(ex, (size_t)m->n * cv->cout * oh * ow);
    sdg_op_conv2d(ex, m->x, m->n, cv->cin, m->h, m->w, cv->w, cv->b, cv->cout, 3, 2, 0, 0, 1, 1,
                  y);
    vae_settle(ex, m, y, cv->cout, oh, ow);
}

// x [n, c, h, w] -> [n, c, 2h, 2w].
// PyTorch (Upsample, with_conv): x = F.interpolate(x, scale_factor=2.0, mode="nearest");
// x = conv(x)   (3x3, padding 1)
// Done in bands of output rows: each band builds only the upsampled rows it reads (its rows plus
// one of halo each side) and convolves them, so the 4x nearest copy of the map never exists.
static void vae_upsample_forward(sdg_exec *ex, const vae_conv *cv, vae_map *m)
{
    const int n = m->n, c = m->c, h = m->h, w = m->w, H = 2 * h, W = 2 * w;
    SDG_ASSERT(c == cv->cin);
    float *y = sdg__alloc_f32(ex, (size_t)n * cv->cout * H * W);
    size_t band = vae_chunk_floats / ((size_t)c * W);
    if (band < 1)
        band = 1;
    if (band > (size_t)H)
        band = (size_t)H;
    size_t top = sdg__mark(ex);
    float *u = sdg__alloc_f32(ex, (size_t)c * (band + 2) * W);
    float *o = sdg__alloc_f32(ex, (size_t)cv->cout * band * W);
    for (int b = 0; b < n; b++) {
        const float *xb = m->x + (size_t)b * c * h * w;
        float *yb = y + (size_t)b * cv->cout * H * W;
        for (int r0 = 0; r0 < H; r0 += (int)band) {
            int r1 = r0 + (int)band < H ? r0 + (int)band : H;
            int u0 = r0 > 0 ? r0 - 1 : 0, u1 = r1 < H ? r1 + 1 : H;   // upsampled rows read
            int ur = u1 - u0;
            if (!ex->dry) {
                #pragma omp parallel for num_threads(ex->n_threads) schedule(static)
                for (int ch = 0; ch < c; ch++) {
                    const float *xc = xb + (size_t)ch * h * w;
                    float *uc = u + (size_t)ch * ur * W;
                    for (int r = u0; r < u1; r++) {
                        const float *src = xc + (size_t)(r / 2) * w;
                        float *dst = uc + (size_t)(r - u0) * W;
                        for (int j = 0; j < w; j++)
                            dst[2 * j] = dst[2 * j + 1] = src[j];
                    }
                }
            }
            // Zero padding only where the band touches the image border.
            sdg_op_conv2d(ex, u, 1, c, ur, W, cv->w, cv->b, cv->cout, 3, 1, r0 == 0 ? 1 : 0, 1,
                          r1 == H ? 1 : 0, 1, o);
            if (!ex->dry) {
                size_t rows = (size_t)(r1 - r0) * W;
                for (int co = 0; co < cv->cout; co++)
                    memcpy(yb + (size_t)co * H * W + (size_t)r0 * W, o + (size_t)co * rows,
                           rows * sizeof *o);
            }
        }
    }
    sdg__release(ex, top);
    vae_settle(ex, m, y, cv->cout, H, W);
}

void vae_encode(sdg_exec *ex, const vae_model *m, const float *image, int n, int h, int w,
                float *moments)
{
    const vae_config *c = &m->cfg;
    SDG_ASSERT(n >= 1 && h >= c->downscale && w >= c->downscale);
    SDG_ASSERT(h % c->downscale == 0 && w % c->downscale == 0);
    if (ex->dry) {
        // A dry run may be given no buffers; the ops want non-NULL pointers.
        image = image ? image : vae_dry_dummy;
        moments = moments ? moments : vae_dry_dummy;
    }
    vae_map map = {.n = n, .c = c->ch, .h = h, .w = w, .base = sdg__mark(ex)};
    map.x = sdg__alloc_f32(ex, vae_map_size(&map));
    vae_conv_apply(ex, &m->enc_conv_in, image, n, h, w, map.x);
    for (int i = 0; i < c->n_levels; i++) {
        for (int j = 0; j < c->num_res_blocks; j++)
            vae_resblock_forward(ex, &m->down[i][j], &map);
        if (i != c->n_levels - 1)
            vae_downsample_forward(ex, &m->downsample[i], &map);
    }
    vae_mid_forward(ex, &m->enc_mid, &map);
    const size_t hw = (size_t)map.h * map.w;
    sdg_op_group_norm(ex, map.x, n, map.c, hw, VAE_GROUPS, m->enc_norm_w, m->enc_norm_b, VAE_EPS,
                      true, map.x);
    float *e = sdg__alloc_f32(ex, (size_t)n * m->enc_zz * hw);
    vae_conv_apply(ex, &m->enc_conv_out, map.x, n, map.h, map.w, e);
    // PyTorch (AutoencoderKL.encode): moments = quant_conv(encoder(x))
    vae_conv_apply(ex, &m->quant, e, n, map.h, map.w, moments);
    sdg__release(ex, map.base);
}

void vae_decode(sdg_exec *ex, const vae_model *m, const float *z, int n, int h, int w,
                float *image)
{
    const vae_config *c = &m->cfg;
    SDG_ASSERT(n >= 1 && h >= 1 && w >= 1);
    if (ex->dry) {
        z = z ? z : vae_dry_dummy;
        image = image ? image : vae_dry_dummy;
    }
    const size_t hw = (size_t)h * w;
    vae_map map = {.n = n, .c = m->dec_z, .h = h, .w = w, .base = sdg__mark(ex)};
    // PyTorch (AutoencoderKL.decode): dec = decoder(post_quant_conv(z))
    map.x = sdg__alloc_f32(ex, vae_map_size(&map));
    vae_conv_apply(ex, &m->post_quant, z, n, h, w, map.x);
    float *y = sdg__alloc_f32(ex, (size_t)n * m->dec_conv_in.cout * hw);
    vae_conv_apply(ex, &m->dec_conv_in, map.x, n, h, w, y);
    vae_settle(ex, &map, y, m->dec_conv_in.cout, h, w);
    vae_mid_forward(ex, &m->dec_mid, &map);
    for (int i = c->n_levels - 1; i >= 0; i--) {
        for (int j = 0; j < c->num_res_blocks + 1; j++)
            vae_resblock_forward(ex, &m->up[i][j], &map);
        if (i != 0)
            vae_upsample_forward(ex, &m->upsample[i], &map);
    }
    sdg_op_group_norm(ex, map.x, n, map.c, (size_t)map.h * map.w, VAE_GROUPS, m->dec_norm_w,
                      m->dec_norm_b, VAE_EPS, true, map.x);
    vae_conv_apply(ex, &m->dec_conv_out, map.x, n, map.h, map.w, image);
    sdg__release(ex, map.base);
}
