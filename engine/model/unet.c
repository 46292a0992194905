/*
 * unet.c - the Stable Diffusion UNet (CompVis ldm `UNetModel`, use_spatial_transformer): loading
 * from a checkpoint's tensor shapes and the forward pass over flat NCHW arrays.
 *
 * Memory: every activation comes from the sdg_exec arena, used as a stack. The skip tensors of
 * the input blocks stay at the bottom in order; each module allocates its working set above
 * them and its output is then moved down over its dead input (unet_settle), an output block
 * builds its concatenation in place of the skip it consumes, and transformers work in place.
 * So the peak is the skips plus one module's working set (SD1.5, 64x64 latent, batch 2:
 * 106 MiB). Attention holds one head's score rows for a chunk of queries at a time, and the
 * feed-forward runs over chunks of tokens. Nothing here depends on the data or the thread
 * count, so a dry run measures the exact peak and results are the same bits for any thread
 * count (given ops.c's guarantee).
 *
 * Not here: the noise schedule, CFG, the inpainting input concatenation, building SDXL's vector
 * y (the pipeline does), or any file parsing (weights.h binds the tensors).
 *
 * ref: CompVis/stable-diffusion@21f890f ldm/modules/diffusionmodules/openaimodel.py (UNetModel,
 *      ResBlock, Downsample, Upsample), ldm/modules/attention.py (SpatialTransformer,
 *      BasicTransformerBlock, CrossAttention, GEGLU), ldm/modules/diffusionmodules/util.py
 *      (timestep_embedding); diffusers UNet2DConditionModel.forward (forward_upsample_size).
 */
#include "unet.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/gemm.h"
#include "../tensor/ops.h"

#define UNET_MAX_BLOCKS 64        // input (or output) blocks; SD1/2: 12, SDXL: 9
#define UNET_MAX_LAYERS 3         // modules in one block (res, transformer, up/down)
#define UNET_GROUPS 32            // GroupNorm32 everywhere
#define UNET_GN_EPS 1e-5f         // ResBlocks and the final norm
#define UNET_ST_GN_EPS 1e-6f      // SpatialTransformer.norm (attention.py Normalize)
#define UNET_LN_EPS 1e-5f         // nn.LayerNorm default
// Scratch budgets (floats): one head's attention scores for a chunk of queries, and the
// feed-forward's widest intermediate for a chunk of tokens. 2M floats = 8 MB, which keeps the
// GEMMs large (>= 200 rows at SD1's widest level).
#define UNET_SCORE_FLOATS ((size_t)2 << 20)
#define UNET_FF_FLOATS ((size_t)2 << 20)
// q, k, v and the attention output of the batch items projected together: 6M floats = 24 MB.
#define UNET_ATTN_FLOATS ((size_t)6 << 20)

// ---------------------------------------------------------------------------------------------
// Weights

typedef struct unet_res {
    int cin, cout;
    const float *in_norm_w, *in_norm_b;     // [cin]            in_layers.0
    sdg_weight in_conv_w; const float *in_conv_b;     // [cout,cin,3,3]   in_layers.2
    sdg_weight emb_w; const float *emb_b;    // [cout,temb]      emb_layers.1
    const float *out_norm_w, *out_norm_b;   // [cout]           out_layers.0
    sdg_weight out_conv_w; const float *out_conv_b;   // [cout,cout,3,3]  out_layers.3
    sdg_weight skip_w; const float *skip_b;     // [cout,cin,1,1]   skip_connection, NULL = identity
} unet_res;

typedef struct unet_attn {
    int kv_dim;                             // inner (self-attention) or context_dim
    sdg_weight q, k, v;                     // [inner,inner], [inner,kv_dim] x2 (no bias)
    sdg_weight o_w; const float *o_b;    // [inner,inner], [inner]  to_out.0
} unet_attn;

typedef struct unet_tblock {
    const float *norm1_w, *norm1_b, *norm2_w, *norm2_b, *norm3_w, *norm3_b;   // [inner]
    unet_attn attn1, attn2;
    int ff_dim;                             // 4 * inner
    sdg_weight ff_in_w; const float *ff_in_b;    // [2*ff_dim, inner]  ff.net.0.proj (value, gate)
    sdg_weight ff_out_w; const float *ff_out_b;    // [inner, ff_dim]    ff.net.2
} unet_tblock;

typedef struct unet_st {
    int ch, inner, n_heads, depth;
    bool linear;                            // proj_in/out are Linear [.,.] (else 1x1 conv)
    const float *norm_w, *norm_b;           // [ch]
    sdg_weight proj_in_w; const float *proj_in_b;    // [inner,ch(,1,1)], [inner]
    sdg_weight proj_out_w; const float *proj_out_b;   // [ch,inner(,1,1)], [ch]
    unet_tblock *blocks;                    // owned, depth
} unet_st;

typedef enum unet_kind { UNET_CONV_IN, UNET_RES, UNET_ST, UNET_DOWN, UNET_UP } unet_kind;

typedef struct unet_layer {
    unet_kind kind;
    unet_res res;                           // UNET_RES
    unet_st st;                             // UNET_ST
    int ch;                                 // CONV_IN (out), DOWN, UP: channels
    sdg_weight conv_w; const float *conv_b;    // CONV_IN [ch,in_ch,3,3]; DOWN op / UP conv [ch,ch,3,3]
} unet_layer;

typedef struct unet_block {
    int n_layers;
    unet_layer layers[UNET_MAX_LAYERS];
} unet_block;

struct unet_model {
    unet_config cfg;
    sdg_weight temb1_w; const float *temb1_b;    // [temb,model_ch]  time_embed.0
    sdg_weight temb2_w; const float *temb2_b;    // [temb,temb]      time_embed.2
    sdg_weight label1_w; const float *label1_b;  // [temb,adm_in]    label_emb.0.0 (SDXL)
    sdg_weight label2_w; const float *label2_b;  // [temb,temb]      label_emb.0.2
    int n_in, n_out;
    unet_block in[UNET_MAX_BLOCKS];         // input_blocks
    unet_block mid;                         // middle_block
    unet_block out[UNET_MAX_BLOCKS];        // output_blocks
    const float *out_norm_w, *out_norm_b;   // [model_ch]          out.0
    sdg_weight out_conv_w; const float *out_conv_b;   // [out_ch,model_ch,3,3] out.2
};

// ---------------------------------------------------------------------------------------------
// Loading

// Tensor-name prefixes. unet_load limits the caller's prefix so that they always fit.
#define UNET_NAME_MAX 512
#define UNET_PREFIX_MAX 256

static void unet_name(char buf[UNET_NAME_MAX], const char *fmt, ...) SDG_PRINTF(2, 3);
static void unet_name(char buf[UNET_NAME_MAX], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, UNET_NAME_MAX, fmt, ap);
    va_end(ap);
}

// Dimension i of a probed tensor when it has n_dims dimensions, else -1.
static int unet_dim(const st_tensor *t, int n_dims, int i)
{
    if (!t || t->n_dims != n_dims || t->shape[i] < 1 || t->shape[i] > (1 << 20))
        return -1;
    return (int)t->shape[i];
}

static bool unet_check_groups(sdg_weights *wb, const char *base, int c)
{
    if (c % UNET_GROUPS == 0)
        return true;
    sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%s: %d channels is not a multiple of the %d GroupNorm "
                     "groups", base, c, UNET_GROUPS);
    return false;
}

// ResBlock at base ("...input_blocks.1.0."), cin channels in; returns its output channels or -1.
static int unet_load_res(sdg_weights *wb, const char *base, int cin, int temb, unet_res *r)
{
    int cout = unet_dim(sdg_wb_find(wb, "%sin_layers.2.weight", base), 4, 0);
    if (cout < 0) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%sin_layers.2.weight: expected a [cout, %d, 3, 3] "
                         "convolution", base, cin);
        return -1;
    }
    if (!unet_check_groups(wb, base, cin) || !unet_check_groups(wb, base, cout))
        return -1;
    r->cin = cin;
    r->cout = cout;
    r->in_norm_w = SDG_WB1(wb, cin, "%sin_layers.0.weight", base);
    r->in_norm_b = SDG_WB1(wb, cin, "%sin_layers.0.bias", base);
    r->in_conv_w = SDG_WCONV(wb, cout, cin, 3, 3, "%sin_layers.2.weight", base);
    r->in_conv_b = SDG_WB1(wb, cout, "%sin_layers.2.bias", base);
    r->emb_w = SDG_WLIN(wb, cout, temb, "%semb_layers.1.weight", base);
    r->emb_b = SDG_WB1(wb, cout, "%semb_layers.1.bias", base);
    r->out_norm_w = SDG_WB1(wb, cout, "%sout_layers.0.weight", base);
    r->out_norm_b = SDG_WB1(wb, cout, "%sout_layers.0.bias", base);
    r->out_conv_w = SDG_WCONV(wb, cout, cout, 3, 3, "%sout_layers.3.weight", base);
    r->out_conv_b = SDG_WB1(wb, cout, "%sout_layers.3.bias", base);
    r->skip_w = (sdg_weight){NULL, SDG_DT_F32, 0};
    r->skip_b = NULL;
    if (sdg_wb_find(wb, "%sskip_connection.weight", base) || cin != cout) {
        r->skip_w = SDG_WCONV(wb, cout, cin, 1, 1, "%sskip_connection.weight", base);
        r->skip_b = SDG_WB1(wb, cout, "%sskip_connection.bias", base);
    }
    return cout;
}

static void unet_load_attn(sdg_weights *wb, const char *base, const char *name, int inner,
                           int kv_dim, unet_attn *a)
{
    a->kv_dim = kv_dim;
    a->q = SDG_WLIN(wb, inner, inner, "%s%s.to_q.weight", base, name);
    a->k = SDG_WLIN(wb, inner, kv_dim, "%s%s.to_k.weight", base, name);
    a->v = SDG_WLIN(wb, inner, kv_dim, "%s%s.to_v.weight", base, name);
    a->o_w = SDG_WLIN(wb, inner, inner, "%s%s.to_out.0.weight", base, name);
    a->o_b = SDG_WB1(wb, inner, "%s%s.to_out.0.bias", base, name);
}

// SpatialTransformer at base with ch channels. Returns false on error.
static bool unet_load_st(sdg_weights *wb, const char *base, int ch, unet_st *st, unet_config *cfg)
{
    memset(st, 0, sizeof *st);
    const st_tensor *pin = sdg_wb_find(wb, "%sproj_in.weight", base);
    int inner = -1;
    if (pin && pin->n_dims == 4) {
        inner = unet_dim(pin, 4, 0);
    } else if (pin && pin->n_dims == 2) {
        inner = unet_dim(pin, 2, 0);
        st->linear = true;
    }
    if (inner < 0 || !unet_check_groups(wb, base, ch)) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%sproj_in.weight: expected [inner, %d, 1, 1] (conv) "
                         "or [inner, %d] (linear)", base, ch, ch);
        return false;
    }
    st->ch = ch;
    st->inner = inner;
    // SD1 fixes the head count, SD2 and SDXL the head width; the shapes cannot tell which.
    st->n_heads = cfg->head_dim > 0 ? inner / cfg->head_dim : cfg->n_heads;
    if (st->n_heads < 1 || inner % st->n_heads != 0 ||
        (cfg->head_dim > 0 && inner % cfg->head_dim != 0)) {
        sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "%sproj_in.weight: %d channels cannot be split "
                         "into attention heads", base, inner);
        return false;
    }
    int depth = 0;
    while (depth < 1000 && sdg_wb_find(wb, "%stransformer_blocks.%d.norm1.weight", base, depth))
        depth++;
    int ctx_dim = unet_dim(sdg_wb_find(wb, "%stransformer_blocks.0.attn2.to_k.weight", base), 2, 1);
    int ff_dim = unet_dim(sdg_wb_find(wb, "%stransformer_blocks.0.ff.net.2.weight", base), 2, 1);
    if (depth == 0 || ctx_dim < 0 || ff_dim < 0) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%stransformer_blocks.0: missing or malformed "
                         "(norm1, attn2.to_k, ff.net.2)", base);
        return false;
    }
    if (cfg->context_dim == 0) {
        cfg->context_dim = ctx_dim;
        cfg->transformer_depth = depth;
        cfg->linear_proj = st->linear;
    } else if (ctx_dim != cfg->context_dim) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%stransformer_blocks.0.attn2.to_k.weight: context "
                         "width %d differs from %d elsewhere", base, ctx_dim, cfg->context_dim);
        return false;
    }
    st->depth = depth;
    st->norm_w = SDG_WB1(wb, ch, "%snorm.weight", base);
    st->norm_b = SDG_WB1(wb, ch, "%snorm.bias", base);
    if (st->linear) {
        st->proj_in_w = SDG_WLIN(wb, inner, ch, "%sproj_in.weight", base);
        st->proj_out_w = SDG_WLIN(wb, ch, inner, "%sproj_out.weight", base);
    } else {
        // Read as the right operand, transposed (tok = x^T W^T): packed as a linear weight.
        st->proj_in_w = sdg_wb_get_weight(wb, SDG_PANEL_B, 4, (const int64_t[]){inner, ch, 1, 1},
                                          "%sproj_in.weight", base);
        st->proj_out_w = SDG_WCONV(wb, ch, inner, 1, 1, "%sproj_out.weight", base);
    }
    st->proj_in_b = SDG_WB1(wb, inner, "%sproj_in.bias", base);
    st->proj_out_b = SDG_WB1(wb, ch, "%sproj_out.bias", base);
    st->blocks = calloc((size_t)depth, sizeof *st->blocks);
    if (!st->blocks) {
        sdg_wb_set_error(wb, SDG_ERR_NOMEM, "out of memory loading %s", base);
        return false;
    }
    for (int d = 0; d < depth; d++) {
        char tb[UNET_NAME_MAX];
        unet_name(tb, "%stransformer_blocks.%d.", base, d);
        unet_tblock *b = &st->blocks[d];
        b->norm1_w = SDG_WB1(wb, inner, "%snorm1.weight", tb);
        b->norm1_b = SDG_WB1(wb, inner, "%snorm1.bias", tb);
        b->norm2_w = SDG_WB1(wb, inner, "%snorm2.weight", tb);
        b->norm2_b = SDG_WB1(wb, inner, "%snorm2.bias", tb);
        b->norm3_w = SDG_WB1(wb, inner, "%snorm3.weight", tb);
        b->norm3_b = SDG_WB1(wb, inner, "%snorm3.bias", tb);
        unet_load_attn(wb, tb, "attn1", inner, inner, &b->attn1);
        unet_load_attn(wb, tb, "attn2", inner, ctx_dim, &b->attn2);
        b->ff_dim = ff_dim;
        b->ff_in_w = SDG_WLIN(wb, 2 * ff_dim, inner, "%sff.net.0.proj.weight", tb);
        b->ff_in_b = SDG_WB1(wb, 2 * ff_dim, "%sff.net.0.proj.bias", tb);
        b->ff_out_w = SDG_WLIN(wb, inner, ff_dim, "%sff.net.2.weight", tb);
        b->ff_out_b = SDG_WB1(wb, inner, "%sff.net.2.bias", tb);
    }
    return true;
}

static bool unet_ok(sdg_weights *wb)
{
    return sdg_wb_status(wb, NULL) == SDG_OK;
}

static unet_layer *unet_add_layer(sdg_weights *wb, unet_block *b, const char *base)
{
    if (b->n_layers >= UNET_MAX_LAYERS) {
        sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "%s: more than %d modules in one block", base,
                         UNET_MAX_LAYERS);
        return NULL;
    }
    unet_layer *l = &b->layers[b->n_layers++];
    memset(l, 0, sizeof *l);
    return l;
}

// Loads modules base+"1.", base+"2." (after a ResBlock at base+"0."): transformers and, in the
// output path, an Upsample. *ch is the running channel count; *ups counts upsamplers.
static bool unet_load_tail(sdg_weights *wb, const char *base, unet_block *b, int ch, int *ups,
                           unet_config *cfg, bool *has_st)
{
    for (int j = 1; j < UNET_MAX_LAYERS; j++) {
        char lb[UNET_NAME_MAX];
        unet_name(lb, "%s%d.", base, j);
        if (sdg_wb_find(wb, "%snorm.weight", lb)) {
            unet_layer *l = unet_add_layer(wb, b, lb);
            if (!l)
                return false;
            l->kind = UNET_ST;
            if (!unet_load_st(wb, lb, ch, &l->st, cfg))
                return false;
            *has_st = true;
        } else if (ups && sdg_wb_find(wb, "%sconv.weight", lb)) {
            unet_layer *l = unet_add_layer(wb, b, lb);
            if (!l)
                return false;
            l->kind = UNET_UP;
            l->ch = ch;
            l->conv_w = SDG_WCONV(wb, ch, ch, 3, 3, "%sconv.weight", lb);
            l->conv_b = SDG_WB1(wb, ch, "%sconv.bias", lb);
            (*ups)++;
        } else {
            break;
        }
    }
    return unet_ok(wb);
}

static void unet_free_block(unet_block *b)
{
    for (int j = 0; j < b->n_layers; j++)
        if (b->layers[j].kind == UNET_ST)
            free(b->layers[j].st.blocks);
}

void unet_free(unet_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_in; i++)
        unet_free_block(&m->in[i]);
    unet_free_block(&m->mid);
    for (int i = 0; i < m->n_out; i++)
        unet_free_block(&m->out[i]);
    free(m);
}

const unet_config *unet_get_config(const unet_model *m)
{
    return &m->cfg;
}

// Walks the blocks the way UNetModel.__init__ builds them, keeping the channel count and level
// of every skip, so that each tensor is bound with the shape the architecture implies.
static bool unet_load_blocks(sdg_weights *wb, const char *P, unet_model *m)
{
    unet_config *cfg = &m->cfg;
    char base[UNET_NAME_MAX];
    int skip_ch[UNET_MAX_BLOCKS], skip_level[UNET_MAX_BLOCKS], n_skip = 0;

    // input_blocks.0: conv_in
    int ch = cfg->model_ch;
    unet_block *b0 = &m->in[m->n_in++];
    unet_layer *l = unet_add_layer(wb, b0, P);
    l->kind = UNET_CONV_IN;
    l->ch = ch;
    l->conv_w = SDG_WCONV(wb, ch, cfg->in_ch, 3, 3, "%sinput_blocks.0.0.weight", P);
    l->conv_b = SDG_WB1(wb, ch, "%sinput_blocks.0.0.bias", P);
    skip_ch[n_skip] = ch;
    skip_level[n_skip++] = 0;

    int level = 0, res_in_level = 0;
    for (int i = 1;; i++) {
        unet_name(base, "%sinput_blocks.%d.", P, i);
        bool down = sdg_wb_find(wb, "%s0.op.weight", base) != NULL;
        if (!down && !sdg_wb_find(wb, "%s0.in_layers.2.weight", base))
            break;
        if (m->n_in >= UNET_MAX_BLOCKS) {
            sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "%s: too many input blocks", base);
            return false;
        }
        unet_block *b = &m->in[m->n_in++];
        char lb[UNET_NAME_MAX];
        unet_name(lb, "%s0.", base);
        l = unet_add_layer(wb, b, lb);
        if (down) {
            l->kind = UNET_DOWN;
            l->ch = ch;
            l->conv_w = SDG_WCONV(wb, ch, ch, 3, 3, "%sop.weight", lb);
            l->conv_b = SDG_WB1(wb, ch, "%sop.bias", lb);
            if (level == 0)
                cfg->num_res_blocks = res_in_level;
            level++;
            res_in_level = 0;
            if (level >= 8) {
                sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "%s: more than 8 levels", base);
                return false;
            }
        } else {
            l->kind = UNET_RES;
            ch = unet_load_res(wb, lb, ch, cfg->time_embed_dim, &l->res);
            if (ch < 0)
                return false;
            res_in_level++;
            if (ch % cfg->model_ch != 0) {
                sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "%sin_layers.2.weight: %d channels is "
                                 "not a multiple of %d", lb, ch, cfg->model_ch);
                return false;
            }
            cfg->ch_mult[level] = ch / cfg->model_ch;
            bool has_st = false;
            if (!unet_load_tail(wb, base, b, ch, NULL, cfg, &has_st))
                return false;
            if (has_st)
                cfg->attn[level] = true;
        }
        skip_ch[n_skip] = ch;
        skip_level[n_skip++] = level;
        if (!unet_ok(wb))
            return false;
    }
    cfg->n_levels = level + 1;
    if (level == 0)
        cfg->num_res_blocks = res_in_level;

    // middle_block: ResBlock, SpatialTransformer, ResBlock (any sequence of the two is read)
    unet_name(base, "%smiddle_block.", P);
    for (int j = 0; j < UNET_MAX_LAYERS; j++) {
        char lb[UNET_NAME_MAX];
        unet_name(lb, "%s%d.", base, j);
        if (sdg_wb_find(wb, "%sin_layers.2.weight", lb)) {
            l = unet_add_layer(wb, &m->mid, lb);
            if (!l)
                return false;
            l->kind = UNET_RES;
            ch = unet_load_res(wb, lb, ch, cfg->time_embed_dim, &l->res);
            if (ch < 0)
                return false;
        } else if (sdg_wb_find(wb, "%snorm.weight", lb)) {
            l = unet_add_layer(wb, &m->mid, lb);
            if (!l)
                return false;
            l->kind = UNET_ST;
            if (!unet_load_st(wb, lb, ch, &l->st, cfg))
                return false;
            cfg->attn_mid = true;
        } else {
            break;
        }
    }
    if (m->mid.n_layers == 0) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%s0.in_layers.2.weight: missing (no middle block)",
                         base);
        return false;
    }

    // output_blocks: each concatenates the newest skip, runs a ResBlock, maybe a transformer
    // and an Upsample.
    for (int i = 0;; i++) {
        unet_name(base, "%soutput_blocks.%d.", P, i);
        if (!sdg_wb_find(wb, "%s0.in_layers.2.weight", base))
            break;
        if (n_skip == 0) {
            sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%s: more output blocks than input blocks", base);
            return false;
        }
        n_skip--;
        if (skip_level[n_skip] != level) {
            sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%s: the upsamplers do not mirror the "
                             "downsamplers", base);
            return false;
        }
        unet_block *b = &m->out[m->n_out++];
        char lb[UNET_NAME_MAX];
        unet_name(lb, "%s0.", base);
        l = unet_add_layer(wb, b, lb);
        l->kind = UNET_RES;
        ch = unet_load_res(wb, lb, ch + skip_ch[n_skip], cfg->time_embed_dim, &l->res);
        if (ch < 0)
            return false;
        int ups = 0;
        bool has_st = false;
        if (!unet_load_tail(wb, base, b, ch, &ups, cfg, &has_st))
            return false;
        level -= ups;
        if (level < 0 || (ups && (n_skip == 0 || skip_level[n_skip - 1] != level))) {
            sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%s: the upsamplers do not mirror the "
                             "downsamplers", base);
            return false;
        }
    }
    if (n_skip != 0) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%soutput_blocks.%d.0.in_layers.2.weight: missing "
                         "(%d input blocks, %d output blocks)", P, m->n_out, m->n_in, m->n_out);
        return false;
    }
    if (ch != cfg->model_ch) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%soutput_blocks.%d: ends with %d channels, expected "
                         "%d", P, m->n_out - 1, ch, cfg->model_ch);
        return false;
    }
    return unet_ok(wb);
}

unet_model *unet_load(sdg_weights *wb, const char *prefix, int n_heads, int head_dim)
{
    const char *P = prefix ? prefix : "";
    SDG_ASSERT((n_heads > 0) != (head_dim > 0));
    if (!unet_ok(wb))
        return NULL;
    if (strlen(P) > UNET_PREFIX_MAX) {
        sdg_wb_set_error(wb, SDG_ERR_INVALID_ARG, "UNet tensor prefix too long (%zu bytes)",
                         strlen(P));
        return NULL;
    }
    const st_tensor *cin = sdg_wb_find(wb, "%sinput_blocks.0.0.weight", P);
    const st_tensor *te = sdg_wb_find(wb, "%stime_embed.0.weight", P);
    const st_tensor *co = sdg_wb_find(wb, "%sout.2.weight", P);
    int model_ch = unet_dim(cin, 4, 0), in_ch = unet_dim(cin, 4, 1);
    int temb = unet_dim(te, 2, 0), out_ch = unet_dim(co, 4, 0);
    if (model_ch < 0 || in_ch < 0) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%sinput_blocks.0.0.weight: %s", P,
                         cin ? "expected a [model_ch, in_ch, 3, 3] convolution"
                             : "missing (not a Stable Diffusion UNet checkpoint)");
        return NULL;
    }
    if (temb < 0) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%stime_embed.0.weight: %s", P,
                         te ? "expected a [time_embed_dim, model_ch] matrix" : "missing");
        return NULL;
    }
    if (out_ch < 0) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%sout.2.weight: %s", P,
                         co ? "expected a [out_ch, model_ch, 3, 3] convolution" : "missing");
        return NULL;
    }
    const st_tensor *le = sdg_wb_find(wb, "%slabel_emb.0.0.weight", P);
    int adm_in = le ? unet_dim(le, 2, 1) : 0;
    if (le && (adm_in < 0 || unet_dim(le, 2, 0) != temb)) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "%slabel_emb.0.0.weight: expected a [%d, adm_in] "
                         "matrix", P, temb);
        return NULL;
    }
    if (model_ch % 2 != 0) {
        sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "%sinput_blocks.0.0.weight: odd model "
                         "channels (%d)", P, model_ch);
        return NULL;
    }
    unet_model *m = calloc(1, sizeof *m);
    if (!m) {
        sdg_wb_set_error(wb, SDG_ERR_NOMEM, "out of memory loading the UNet");
        return NULL;
    }
    unet_config *cfg = &m->cfg;
    cfg->in_ch = in_ch;
    cfg->out_ch = out_ch;
    cfg->model_ch = model_ch;
    cfg->time_embed_dim = temb;
    cfg->adm_in = adm_in;
    cfg->n_heads = n_heads;
    cfg->head_dim = head_dim;
    m->temb1_w = SDG_WLIN(wb, temb, model_ch, "%stime_embed.0.weight", P);
    m->temb1_b = SDG_WB1(wb, temb, "%stime_embed.0.bias", P);
    m->temb2_w = SDG_WLIN(wb, temb, temb, "%stime_embed.2.weight", P);
    m->temb2_b = SDG_WB1(wb, temb, "%stime_embed.2.bias", P);
    if (adm_in > 0) {
        // PyTorch (sgm openaimodel.py, num_classes "sequential"): label_emb = Sequential(
        //   Sequential(Linear(adm_in, temb), SiLU(), Linear(temb, temb)))
        m->label1_w = SDG_WLIN(wb, temb, adm_in, "%slabel_emb.0.0.weight", P);
        m->label1_b = SDG_WB1(wb, temb, "%slabel_emb.0.0.bias", P);
        m->label2_w = SDG_WLIN(wb, temb, temb, "%slabel_emb.0.2.weight", P);
        m->label2_b = SDG_WB1(wb, temb, "%slabel_emb.0.2.bias", P);
    }
    if (!unet_load_blocks(wb, P, m) || !unet_ok(wb)) {
        unet_free(m);
        return NULL;
    }
    m->out_norm_w = SDG_WB1(wb, model_ch, "%sout.0.weight", P);
    m->out_norm_b = SDG_WB1(wb, model_ch, "%sout.0.bias", P);
    m->out_conv_w = SDG_WCONV(wb, out_ch, model_ch, 3, 3, "%sout.2.weight", P);
    m->out_conv_b = SDG_WB1(wb, out_ch, "%sout.2.bias", P);
    if (!unet_ok(wb)) {
        unet_free(m);
        return NULL;
    }
    return m;
}

// ---------------------------------------------------------------------------------------------
// Small helpers of the forward pass (each returns at once in a dry run)

// y[rows, cols] = bias[cols] on every row (the start of a GEMM with beta = 1).
static void unet_fill_rows(const sdg_exec *ex, float *y, size_t rows, int cols, const float *bias)
{
    if (ex->dry)
        return;
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) if (rows >= 256)
    for (size_t r = 0; r < rows; r++)
        memcpy(y + r * cols, bias, (size_t)cols * sizeof *y);
}

// y[n, c, len] = bias[c] along each row.
static void unet_fill_cols(const sdg_exec *ex, float *y, int n, int c, size_t len,
                           const float *bias)
{
    if (ex->dry)
        return;
    int rows = n * c;
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) if (rows >= 64)
    for (int r = 0; r < rows; r++) {
        float v = bias[r % c];
        for (size_t j = 0; j < len; j++)
            y[(size_t)r * len + j] = v;
    }
}

// Nearest-neighbour resize of x[nc, h, w] to y[nc, oh, ow] with oh in {2h-1, 2h} (likewise
// ow): nearest x2, then crop to the skip's size. Equals F.interpolate(size=(oh, ow),
// mode="nearest"), whose source index floor(i*h/oh) is floor(i/2) for those sizes.
static void unet_upsample_to(sdg_exec *ex, const float *x, int n, int c, int h, int w, int oh,
                             int ow, float *y)
{
    if (oh == 2 * h && ow == 2 * w) {
        sdg_op_upsample2x(ex, x, n, c, h, w, y);
        return;
    }
    if (ex->dry)
        return;
    int nc = n * c;
    #pragma omp parallel for num_threads(ex->n_threads) schedule(static) if (nc >= 64)
    for (int i = 0; i < nc; i++) {
        const float *xc = x + (size_t)i * h * w;
        float *yc = y + (size_t)i * oh * ow;
        for (int yy = 0; yy < oh; yy++)
            for (int xx = 0; xx < ow; xx++)
                yc[(size_t)yy * ow + xx] = xc[(size_t)(yy / 2) * w + xx / 2];
    }
}

// Releases the arena down to mark and moves a block's output p[nf] there (a memmove: the two
// may overlap). Returns the new position.
static float *unet_settle(sdg_exec *ex, size_t mark, float *p, size_t nf)
{
    sdg__release(ex, mark);
    float *dst = sdg__alloc_f32(ex, nf);
    if (!ex->dry && dst != p)
        memmove(dst, p, nf * sizeof *dst);
    return dst;
}

// ---------------------------------------------------------------------------------------------
// Blocks

// ResBlock: x [n, cin, h, w] -> returns y [n, cout, h, w], allocated first (below its scratch).
// emb_act [n, temb] is silu(emb), shared by every ResBlock. When x_dead, the caller no longer
// needs x and it is overwritten (saves a [n, cin, h, w] buffer in the output blocks).
// PyTorch (openaimodel.py ResBlock._forward):
//   h = in_layers(x)                       # GroupNorm32, SiLU, conv3x3
//   h = h + emb_layers(emb)[..., None, None]  # SiLU, Linear
//   h = out_layers(h)                      # GroupNorm32, SiLU, Dropout, conv3x3
//   return skip_connection(x) + h
static float *unet_res_forward(sdg_exec *ex, const unet_res *r, float *x, bool x_dead, int n,
                               int h, int w, const float *emb_act, int temb)
{
    size_t hw = (size_t)h * w, ny = (size_t)n * r->cout * hw;
    float *y = sdg__alloc_f32(ex, ny);
    size_t mark = sdg__mark(ex);
    // With a skip convolution, y takes skip(x) first so that x is free before in_layers.
    if (r->skip_w.data)
        sdg_op_conv2d(ex, x, n, r->cin, h, w, r->skip_w, r->skip_b, r->cout, 1, 1, 0, 0, 0, 0, y);
    else
        x_dead = false;   // x itself is the skip
    float *a = x_dead ? x : sdg__alloc_f32(ex, (size_t)n * r->cin * hw);
    float *b = sdg__alloc_f32(ex, ny);
    float *e = sdg__alloc_f32(ex, (size_t)n * r->cout);
    sdg_op_group_norm(ex, x, n, r->cin, hw, UNET_GROUPS, r->in_norm_w, r->in_norm_b, UNET_GN_EPS,
                      true, a);
    sdg_op_conv2d(ex, a, n, r->cin, h, w, r->in_conv_w, r->in_conv_b, r->cout, 3, 1, 1, 1, 1, 1,
                  b);
    sdg_op_linear(ex, emb_act, (size_t)n, temb, r->emb_w, r->emb_b, r->cout, e);
    sdg_op_add_channel(ex, b, n, r->cout, hw, e);
    sdg_op_group_norm(ex, b, n, r->cout, hw, UNET_GROUPS, r->out_norm_w, r->out_norm_b,
                      UNET_GN_EPS, true, b);
    if (r->skip_w.data) {
        float *h2 = sdg__alloc_f32(ex, ny);
        sdg_op_conv2d(ex, b, n, r->cout, h, w, r->out_conv_w, r->out_conv_b, r->cout, 3, 1, 1, 1,
                      1, 1, h2);
        sdg_op_add(ex, y, h2, ny, y);
    } else {
        sdg_op_conv2d(ex, b, n, r->cout, h, w, r->out_conv_w, r->out_conv_b, r->cout, 3, 1, 1, 1,
                      1, 1, y);
        sdg_op_add(ex, x, y, ny, y);
    }
    sdg__release(ex, mark);
    return y;
}

// Multi-head attention: y[n*tq, inner] = to_out(softmax(q k^T / sqrt(dh)) v), q = to_q(xq),
// k = to_k(kv), v = to_v(kv), kv [n, tk, kv_dim]. Batch items go through in groups whose q, k,
// v, o fit UNET_ATTN_FLOATS (one item at a time at SD's largest level, the whole batch where
// the projections are small and their GEMMs gain from more rows). y may alias xq and kv: a
// group's rows are read before they are written.
// PyTorch (attention.py CrossAttention.forward): q, k, v = to_q(x), to_k(ctx), to_v(ctx);
//   sim = einsum(q, k) * scale; attn = sim.softmax(-1); out = einsum(attn, v); to_out(out)
static void unet_attn_forward(sdg_exec *ex, const unet_attn *a, const float *xq, int n, int tq,
                              int inner, const float *kv, int tk, int n_heads, float *y)
{
    size_t per_item = 2 * ((size_t)tq + (size_t)tk) * inner;
    size_t fit = UNET_ATTN_FLOATS / per_item;
    int g = fit < 1 ? 1 : fit > (size_t)n ? n : (int)fit;
    size_t mark = sdg__mark(ex);
    float *q = sdg__alloc_f32(ex, (size_t)g * tq * inner);
    float *k = sdg__alloc_f32(ex, (size_t)g * tk * inner);
    float *v = sdg__alloc_f32(ex, (size_t)g * tk * inner);
    float *o = sdg__alloc_f32(ex, (size_t)g * tq * inner);
    int dh = inner / n_heads;
    float scale = 1.0f / sqrtf((float)dh);
    // Queries in chunks so that one head's score rows stay within UNET_SCORE_FLOATS.
    size_t chunk = UNET_SCORE_FLOATS / (size_t)tk;
    int qc = chunk < 1 ? 1 : chunk > (size_t)tq ? tq : (int)chunk;
    for (int b0 = 0; b0 < n; b0 += g) {
        int len = n - b0 < g ? n - b0 : g;
        size_t qrows = (size_t)len * tq, krows = (size_t)len * tk;
        const float *kvb = kv + (size_t)b0 * tk * a->kv_dim;
        sdg_op_linear(ex, xq + (size_t)b0 * tq * inner, qrows, inner, a->q, NULL, inner, q);
        sdg_op_linear(ex, kvb, krows, a->kv_dim, a->k, NULL, inner, k);
        sdg_op_linear(ex, kvb, krows, a->kv_dim, a->v, NULL, inner, v);
        for (int i = 0; i < len; i++) {
            const float *ki = k + (size_t)i * tk * inner, *vi = v + (size_t)i * tk * inner;
            for (int q0 = 0; q0 < tq; q0 += qc) {
                int nq = tq - q0 < qc ? tq - q0 : qc;
                size_t off = ((size_t)i * tq + q0) * inner;
                sdg_op_attention(ex, q + off, inner, ki, inner, vi, inner, 1, nq, tk, n_heads,
                                 dh, scale, false, o + off, inner);
            }
        }
        sdg_op_linear(ex, o, qrows, inner, a->o_w, a->o_b, inner, y + (size_t)b0 * tq * inner);
    }
    sdg__release(ex, mark);
}

// BasicTransformerBlock on tokens x [n, T, inner], in place; context [n, n_ctx, context_dim].
// PyTorch (attention.py BasicTransformerBlock._forward):
//   x = attn1(norm1(x)) + x; x = attn2(norm2(x), context=context) + x; x = ff(norm3(x)) + x
static void unet_tblock_forward(sdg_exec *ex, const unet_tblock *tb, float *x, int n, int T,
                                int inner, int n_heads, const float *ctx, int n_ctx)
{
    size_t rows = (size_t)n * T, nf = rows * inner;
    size_t mark = sdg__mark(ex);
    float *xn = sdg__alloc_f32(ex, nf);

    sdg_op_layer_norm(ex, x, rows, inner, tb->norm1_w, tb->norm1_b, UNET_LN_EPS, xn);
    unet_attn_forward(ex, &tb->attn1, xn, n, T, inner, xn, T, n_heads, xn);
    sdg_op_add(ex, xn, x, nf, x);

    sdg_op_layer_norm(ex, x, rows, inner, tb->norm2_w, tb->norm2_b, UNET_LN_EPS, xn);
    unet_attn_forward(ex, &tb->attn2, xn, n, T, inner, ctx, n_ctx, n_heads, xn);
    sdg_op_add(ex, xn, x, nf, x);

    // PyTorch (FeedForward with GEGLU): net = [GEGLU(dim, 4 dim), Dropout, Linear(4 dim, dim)]
    sdg_op_layer_norm(ex, x, rows, inner, tb->norm3_w, tb->norm3_b, UNET_LN_EPS, xn);
    int ff = tb->ff_dim;
    size_t chunk = UNET_FF_FLOATS / (2 * (size_t)ff);
    size_t rc = chunk < 1 ? 1 : chunk > rows ? rows : chunk;
    float *p = sdg__alloc_f32(ex, rc * 2 * ff);
    float *g = sdg__alloc_f32(ex, rc * ff);
    float *o = sdg__alloc_f32(ex, rc * inner);
    for (size_t r0 = 0; r0 < rows; r0 += rc) {
        size_t len = rows - r0 < rc ? rows - r0 : rc;
        sdg_op_linear(ex, xn + r0 * inner, len, inner, tb->ff_in_w, tb->ff_in_b, 2 * ff, p);
        sdg_op_geglu(ex, p, len, ff, g);
        sdg_op_linear(ex, g, len, ff, tb->ff_out_w, tb->ff_out_b, inner, o);
        sdg_op_add(ex, o, x + r0 * inner, len * inner, x + r0 * inner);
    }
    sdg__release(ex, mark);
}

// SpatialTransformer on x [n, ch, h, w], in place.
// PyTorch (attention.py SpatialTransformer.forward, SD1; SD2 applies proj_in after the
// rearrange, as a Linear):
//   x_in = x; x = norm(x); x = proj_in(x); x = rearrange(x, 'b c h w -> b (h w) c')
//   for block in transformer_blocks: x = block(x, context=context)
//   x = rearrange(x, 'b (h w) c -> b c h w'); x = proj_out(x); return x + x_in
static void unet_st_forward(sdg_exec *ex, const unet_st *st, float *x, int n, int h, int w,
                            const float *ctx, int n_ctx)
{
    int ch = st->ch, inner = st->inner;
    size_t T = (size_t)h * w, rows = (size_t)n * T;
    size_t mark = sdg__mark(ex);
    float *tok = sdg__alloc_f32(ex, rows * inner);
    size_t mark2 = sdg__mark(ex);
    float *xn = sdg__alloc_f32(ex, (size_t)n * ch * T);
    sdg_op_group_norm(ex, x, n, ch, T, UNET_GROUPS, st->norm_w, st->norm_b, UNET_ST_GN_EPS, false,
                      xn);
    if (st->linear) {
        float *xt = sdg__alloc_f32(ex, (size_t)n * ch * T);
        sdg_op_transpose(ex, xn, n, (size_t)ch, T, xt);
        sdg_op_linear(ex, xt, rows, ch, st->proj_in_w, st->proj_in_b, inner, tok);
    } else {
        // The 1x1 conv and the rearrange in one GEMM per item: tok[T, inner] = xn^T W^T + b.
        unet_fill_rows(ex, tok, rows, inner, st->proj_in_b);
        sdg_gemm_operand w = sdg_gemm_weight_b(st->proj_in_w, ch);
        for (int b = 0; b < n; b++) {
            sdg_gemm_operand xs = {xn + (size_t)b * ch * T, SDG_DT_F32, 1, (ptrdiff_t)T, 0, NULL};
            sdg_gemm(ex, (int)T, inner, ch, 1.0f, &xs, &w, 1.0f, tok + (size_t)b * T * inner,
                     inner);
        }
    }
    sdg__release(ex, mark2);

    for (int d = 0; d < st->depth; d++)
        unet_tblock_forward(ex, &st->blocks[d], tok, n, (int)T, inner, st->n_heads, ctx, n_ctx);

    float *y = sdg__alloc_f32(ex, (size_t)n * ch * T);
    if (st->linear) {
        float *yt = sdg__alloc_f32(ex, (size_t)n * ch * T);
        sdg_op_linear(ex, tok, rows, inner, st->proj_out_w, st->proj_out_b, ch, yt);
        sdg_op_transpose(ex, yt, n, T, (size_t)ch, y);
    } else {
        // y[ch, T] = W[ch, inner] tok^T + b per item.
        unet_fill_cols(ex, y, n, ch, T, st->proj_out_b);
        sdg_gemm_operand w = sdg_gemm_weight_a(st->proj_out_w, inner);
        for (int b = 0; b < n; b++) {
            sdg_gemm_operand ts = {tok + (size_t)b * T * inner, SDG_DT_F32, 1, inner, 0, NULL};
            sdg_gemm(ex, ch, (int)T, inner, 1.0f, &w, &ts, 1.0f, y + (size_t)b * ch * T,
                     (ptrdiff_t)T);
        }
    }
    sdg_op_add(ex, y, x, (size_t)n * ch * T, x);
    sdg__release(ex, mark);
}

// The running activation between blocks.
typedef struct unet_act {
    float *p;
    int c, h, w;
} unet_act;

// Runs one block's modules on cur, which is replaced by the block's output, left at the arena
// position `base` (everything above it is released). Each module's new output is moved down to
// base at once, so a dead input never sits under the next module's scratch. cur_dead: the
// block owns cur (it lies at base) and may overwrite it. th, tw: the size an Upsample makes.
static void unet_block_forward(sdg_exec *ex, const unet_model *m, const unet_block *blk,
                               unet_act *cur, bool cur_dead, size_t base, int n,
                               const float *x_in, const float *emb_act, const float *ctx,
                               int n_ctx, int th, int tw)
{
    for (int j = 0; j < blk->n_layers; j++) {
        const unet_layer *l = &blk->layers[j];
        size_t hw = (size_t)cur->h * cur->w;
        switch (l->kind) {
        case UNET_CONV_IN: {
            float *y = sdg__alloc_f32(ex, (size_t)n * l->ch * hw);
            sdg_op_conv2d(ex, x_in, n, m->cfg.in_ch, cur->h, cur->w, l->conv_w, l->conv_b, l->ch,
                          3, 1, 1, 1, 1, 1, y);
            cur->p = y;
            cur->c = l->ch;
            break;
        }
        case UNET_RES:
            SDG_ASSERT(cur->c == l->res.cin);
            cur->p = unet_res_forward(ex, &l->res, cur->p, cur_dead, n, cur->h, cur->w, emb_act,
                                      m->cfg.time_embed_dim);
            cur->c = l->res.cout;
            break;
        case UNET_ST:
            SDG_ASSERT(cur->c == l->st.ch);
            unet_st_forward(ex, &l->st, cur->p, n, cur->h, cur->w, ctx, n_ctx);
            break;
        case UNET_DOWN: {
            // PyTorch (openaimodel.py Downsample): conv2d(ch, ch, 3, stride=2, padding=1)
            int oh = sdg_conv_out_size(cur->h, 3, 2, 1, 1);
            int ow = sdg_conv_out_size(cur->w, 3, 2, 1, 1);
            float *y = sdg__alloc_f32(ex, (size_t)n * l->ch * oh * ow);
            sdg_op_conv2d(ex, cur->p, n, l->ch, cur->h, cur->w, l->conv_w, l->conv_b, l->ch, 3, 2,
                          1, 1, 1, 1, y);
            cur->p = y;
            cur->h = oh;
            cur->w = ow;
            break;
        }
        case UNET_UP: {
            // PyTorch (openaimodel.py Upsample): interpolate(x, scale_factor=2, "nearest"), conv
            SDG_ASSERT(th >= 2 * cur->h - 1 && th <= 2 * cur->h);
            SDG_ASSERT(tw >= 2 * cur->w - 1 && tw <= 2 * cur->w);
            float *u = sdg__alloc_f32(ex, (size_t)n * l->ch * th * tw);
            unet_upsample_to(ex, cur->p, n, l->ch, cur->h, cur->w, th, tw, u);
            float *y = sdg__alloc_f32(ex, (size_t)n * l->ch * th * tw);
            sdg_op_conv2d(ex, u, n, l->ch, th, tw, l->conv_w, l->conv_b, l->ch, 3, 1, 1, 1, 1, 1,
                          y);
            cur->p = y;
            cur->h = th;
            cur->w = tw;
            break;
        }
        }
        cur->p = unet_settle(ex, base, cur->p, (size_t)n * cur->c * cur->h * cur->w);
        cur_dead = true;
    }
}

// Builds cat [n, ca + cb, hw] = concat(a, b) along channels in place, where b [n, cb, hw] sits
// at the arena position `at` and a [n, ca, hw] right above it (the newest skip and the running
// activation): the result takes their place. Returns it.
// PyTorch (openaimodel.py UNetModel.forward): h = th.cat([h, hs.pop()], dim=1)
static float *unet_concat_in_place(sdg_exec *ex, size_t at, const float *a, int ca, float *b,
                                   int cb, int n, size_t hw)
{
    sdg__release(ex, at);
    size_t ra = (size_t)ca * hw, rb = (size_t)cb * hw;
    float *cat = sdg__alloc_f32(ex, (size_t)n * (ra + rb));
    size_t mark = sdg__mark(ex);
    float *tmp = sdg__alloc_f32(ex, (size_t)n * ra);
    if (!ex->dry) {
        SDG_ASSERT(cat == b && a >= b + (size_t)n * rb && tmp >= a);
        // a is saved first (tmp may overlap it); b's items then move up to their places, the
        // last first since every destination lies above its source.
        memmove(tmp, a, (size_t)n * ra * sizeof *tmp);
        for (int i = n - 1; i >= 0; i--)
            memmove(cat + (size_t)i * (ra + rb) + ra, b + (size_t)i * rb, rb * sizeof *cat);
        for (int i = 0; i < n; i++)
            memcpy(cat + (size_t)i * (ra + rb), tmp + (size_t)i * ra, ra * sizeof *cat);
    }
    sdg__release(ex, mark);
    return cat;
}

static void unet_debug(const sdg_exec *ex, unet_debug_fn fn, void *user, const char *name,
                       int index, const unet_act *a, int n)
{
    if (!fn || ex->dry)
        return;
    char buf[64];
    if (index >= 0)
        snprintf(buf, sizeof buf, "%s.%d", name, index);
    else
        snprintf(buf, sizeof buf, "%s", name);
    fn(buf, a->p, n, a->c, a->h, a->w, user);
}

void unet_forward_debug(sdg_exec *ex, const unet_model *m, const float *x, int n, int h, int w,
                        const float *t, const unet_cond *cond, float *out, unet_debug_fn fn,
                        void *user)
{
    SDG_ASSERT(ex && m && cond && n >= 1 && h >= 1 && w >= 1 && cond->n_ctx >= 1);
    const float *context = cond->context, *y = cond->y;
    int n_ctx = cond->n_ctx;
    if (ex->dry) {
        // A dry run reads no data, so callers may size the arena before they have any; the
        // ops still want non-NULL pointers.
        static float dummy[16];
        x = x ? x : dummy;
        t = t ? t : dummy;
        context = context ? context : dummy;
        y = y ? y : dummy;
        out = out ? out : dummy;
    }
    SDG_ASSERT(x && t && context && out && (y || m->cfg.adm_in == 0));
    const unet_config *cfg = &m->cfg;
    size_t mark0 = sdg__mark(ex);

    // Time embedding; every ResBlock's emb_layers starts with SiLU, so keep silu(emb).
    // PyTorch: emb = time_embed(timestep_embedding(t, model_channels))  # Linear, SiLU, Linear
    int temb = cfg->time_embed_dim;
    float *t_emb = sdg__alloc_f32(ex, (size_t)n * cfg->model_ch);
    float *e1 = sdg__alloc_f32(ex, (size_t)n * temb);
    float *emb = sdg__alloc_f32(ex, (size_t)n * temb);
    sdg_op_timestep_embedding(ex, t, n, cfg->model_ch, t_emb);
    sdg_op_linear(ex, t_emb, (size_t)n, cfg->model_ch, m->temb1_w, m->temb1_b, temb, e1);
    sdg_op_silu(ex, e1, (size_t)n * temb, e1);
    sdg_op_linear(ex, e1, (size_t)n, temb, m->temb2_w, m->temb2_b, temb, emb);
    if (cfg->adm_in > 0) {
        // PyTorch (sgm openaimodel.py UNetModel.forward): emb = emb + label_emb(y)
        float *e2 = sdg__alloc_f32(ex, (size_t)n * temb);
        sdg_op_linear(ex, y, (size_t)n, cfg->adm_in, m->label1_w, m->label1_b, temb, e1);
        sdg_op_silu(ex, e1, (size_t)n * temb, e1);
        sdg_op_linear(ex, e1, (size_t)n, temb, m->label2_w, m->label2_b, temb, e2);
        sdg_op_add(ex, emb, e2, (size_t)n * temb, emb);
    }
    unet_debug(ex, fn, user, "emb", -1, &(unet_act){emb, temb, 1, 1}, n);
    sdg_op_silu(ex, emb, (size_t)n * temb, emb);

    // Input blocks: each output is a skip, kept in order at the bottom of the arena.
    unet_act skips[UNET_MAX_BLOCKS];
    size_t skip_mark[UNET_MAX_BLOCKS];
    unet_act cur = {NULL, cfg->in_ch, h, w};
    for (int i = 0; i < m->n_in; i++) {
        skip_mark[i] = sdg__mark(ex);
        unet_block_forward(ex, m, &m->in[i], &cur, false, skip_mark[i], n, x, emb, context,
                           n_ctx, 0, 0);
        skips[i] = cur;
        unet_debug(ex, fn, user, "input_blocks", i, &cur, n);
    }

    unet_block_forward(ex, m, &m->mid, &cur, false, sdg__mark(ex), n, x, emb, context, n_ctx, 0,
                       0);
    unet_debug(ex, fn, user, "middle_block", -1, &cur, n);

    // Output blocks: the newest skip and the running activation above it become their
    // concatenation in place; the block's output then lies where the skip was.
    int n_skip = m->n_in;
    for (int i = 0; i < m->n_out; i++) {
        const unet_act *s = &skips[--n_skip];
        SDG_ASSERT(s->h == cur.h && s->w == cur.w);
        size_t hw = (size_t)cur.h * cur.w;
        unet_act cat = {NULL, cur.c + s->c, cur.h, cur.w};
        cat.p = unet_concat_in_place(ex, skip_mark[n_skip], cur.p, cur.c, s->p, s->c, n, hw);
        int th = n_skip > 0 ? skips[n_skip - 1].h : 2 * cur.h;
        int tw = n_skip > 0 ? skips[n_skip - 1].w : 2 * cur.w;
        unet_block_forward(ex, m, &m->out[i], &cat, true, skip_mark[n_skip], n, x, emb, context,
                           n_ctx, th, tw);
        cur = cat;
        unet_debug(ex, fn, user, "output_blocks", i, &cur, n);
    }

    // PyTorch: out = nn.Sequential(normalization(ch), nn.SiLU(), conv_nd(2, ch, out_ch, 3, 1))
    size_t hw = (size_t)h * w;
    SDG_ASSERT(cur.c == cfg->model_ch && cur.h == h && cur.w == w);
    float *a = sdg__alloc_f32(ex, (size_t)n * cur.c * hw);
    sdg_op_group_norm(ex, cur.p, n, cur.c, hw, UNET_GROUPS, m->out_norm_w, m->out_norm_b,
                      UNET_GN_EPS, true, a);
    sdg_op_conv2d(ex, a, n, cur.c, h, w, m->out_conv_w, m->out_conv_b, cfg->out_ch, 3, 1, 1, 1, 1,
                  1, out);
    sdg__release(ex, mark0);
}

void unet_forward(sdg_exec *ex, const unet_model *m, const float *x, int n, int h, int w,
                  const float *t, const unet_cond *cond, float *out)
{
    unet_forward_debug(ex, m, x, n, h, w, t, cond, out, NULL, NULL);
}
