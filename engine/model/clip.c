/*
 * clip.c - the CLIP text encoder (see clip.h): pre-LayerNorm transformer with causal
 * self-attention, in the Hugging Face CLIPTextModel weight layout (quick_gelu MLPs: SD1's
 * ViT-L/14, SDXL's first encoder) or open_clip's (packed in_proj, exact GELU: SD2's ViT-H/14,
 * SDXL's bigG/14).
 *
 * Not here: tokenization (tokenizer/), which hidden state a family uses (model/family.c), any
 * file parsing (loader/).
 *
 * ref: transformers src/transformers/models/clip/modeling_clip.py (CLIPTextTransformer,
 *      CLIPEncoderLayer, CLIPAttention, CLIPMLP); openai/CLIP clip/model.py @d05afc4 (the
 *      golden reference: same math with q/k/v packed into in_proj); open_clip v2.20.0
 *      src/open_clip/transformer.py (ResidualAttentionBlock, TextTransformer: ln_final,
 *      text_projection as x @ W, pooled at argmax(ids)).
 */
#include "clip.h"

#include "../tensor/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Head width of every SD-family CLIP text tower (ViT-L/14: 768/12, ViT-H: 1024/16, bigG: 1280/20).
#define CLIP_HEAD_DIM 64
// Probing stops here: no released text encoder is deeper than 32 layers.
#define CLIP_MAX_LAYERS 256
#define CLIP_LN_EPS 1e-5f

typedef struct clip_layer {
    const float *ln1_w, *ln1_b;        // [width]
    sdg_weight q_w, k_w, v_w;          // [width, width] (HF layout)
    const float *q_b, *k_b, *v_b;      // [width]
    sdg_weight qkv_w; const float *qkv_b;   // [3 width, width] rows q; k; v (open_clip in_proj)
    sdg_weight o_w; const float *o_b;  // [width, width], [width]
    const float *ln2_w, *ln2_b;        // [width]
    sdg_weight fc1_w; const float *fc1_b;   // [mlp, width], [mlp]
    sdg_weight fc2_w; const float *fc2_b;   // [width, mlp], [width]
} clip_layer;

struct clip_model {
    clip_config cfg;
    // Every weight pointer is borrowed: it lives as long as the sdg_weights.
    sdg_weight tok_emb;                // [vocab, width]
    const float *pos_emb;              // [n_pos, width]
    clip_layer *layers;                // owned, [n_layers] (the pointers inside are borrowed)
    const float *lnf_w, *lnf_b;        // [width]
    sdg_weight proj;                   // [width, proj_dim], x @ W (open_clip); data NULL if absent
};

// Tensor names of the two layouts; layer i's tensors are <prefix><layers>i.<name>.weight.
typedef struct clip_names {
    const char *tok_emb, *pos_emb, *layers, *ln1, *ln2, *fc1, *fc2, *lnf;
} clip_names;

static const clip_names clip_hf_names = {
    "embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
    "encoder.layers.", "layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2", "final_layer_norm",
};
static const clip_names clip_openclip_names = {
    "token_embedding.weight", "positional_embedding",
    "transformer.resblocks.", "ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj", "ln_final",
};

// ---------------------------------------------------------------------------------------------
// Loading

// Reads a 2-D tensor's shape for the architecture; records an error naming it when it is
// absent or not 2-D.
static bool clip_shape2(sdg_weights *wb, const char *prefix, const char *name, int64_t *rows,
                        int64_t *cols)
{
    const st_tensor *t = sdg_wb_find(wb, "%s%s", prefix, name);
    if (!t) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "text encoder: tensor %s%s is missing", prefix, name);
        return false;
    }
    if (t->n_dims != 2 || t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > INT32_MAX ||
        t->shape[1] > INT32_MAX) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "text encoder: tensor %s%s should be 2-D (it has %d"
                         " dimensions)", prefix, name, t->n_dims);
        return false;
    }
    *rows = t->shape[0];
    *cols = t->shape[1];
    return true;
}

static bool clip_read_config(sdg_weights *wb, const char *prefix, int n_heads, clip_act act,
                             clip_config *c)
{
    c->open_clip = sdg_wb_find(wb, "%s%s", prefix, clip_openclip_names.tok_emb) != NULL;
    const clip_names *nm = c->open_clip ? &clip_openclip_names : &clip_hf_names;
    char fc1_0[64];
    snprintf(fc1_0, sizeof fc1_0, "%s0.%s.weight", nm->layers, nm->fc1);
    int64_t vocab, width, n_pos, pw, mlp, fw;
    if (!clip_shape2(wb, prefix, nm->tok_emb, &vocab, &width) ||
        !clip_shape2(wb, prefix, nm->pos_emb, &n_pos, &pw) ||
        !clip_shape2(wb, prefix, fc1_0, &mlp, &fw))
        return false;
    if (pw != width || fw != width) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "text encoder: the position embedding (width %lld) and"
                         " the first MLP (input %lld) disagree with the token embedding (width "
                         "%lld) under %s", (long long)pw, (long long)fw, (long long)width, prefix);
        return false;
    }
    if (n_heads <= 0) {
        if (width % CLIP_HEAD_DIM != 0) {
            sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "text encoder: width %lld under %s is not "
                             "a multiple of the head size %d", (long long)width, prefix,
                             CLIP_HEAD_DIM);
            return false;
        }
        n_heads = (int)(width / CLIP_HEAD_DIM);
    }
    if (n_heads < 1 || width % n_heads != 0) {
        sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "text encoder: width %lld under %s cannot be "
                         "split into %d attention heads", (long long)width, prefix, n_heads);
        return false;
    }
    int n_layers = 0;
    while (n_layers < CLIP_MAX_LAYERS &&
           sdg_wb_find(wb, "%s%s%d.%s.weight", prefix, nm->layers, n_layers, nm->ln1))
        n_layers++;
    if (n_layers == 0) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "text encoder: tensor %s%s0.%s.weight is missing",
                         prefix, nm->layers, nm->ln1);
        return false;
    }
    c->vocab = (int)vocab;
    c->width = (int)width;
    c->n_pos = (int)n_pos;
    c->mlp = (int)mlp;
    c->n_layers = n_layers;
    c->n_heads = n_heads;
    c->gelu = act == CLIP_ACT_LAYOUT ? c->open_clip : act == CLIP_ACT_GELU;
    c->proj_dim = 0;
    c->proj_transposed = !c->open_clip;
    const st_tensor *proj = sdg_wb_find(wb, c->open_clip ? "%stext_projection"
                                                         : "%stext_projection.weight", prefix);
    int in_axis = c->proj_transposed ? 1 : 0;
    if (proj && proj->n_dims == 2 && proj->shape[in_axis] == width &&
        proj->shape[1 - in_axis] >= 1 && proj->shape[1 - in_axis] <= (1 << 16))
        c->proj_dim = (int)proj->shape[1 - in_axis];
    return true;
}

clip_model *clip_load(sdg_weights *wb, const char *prefix, int n_heads, clip_act act)
{
    if (sdg_wb_status(wb, NULL) != SDG_OK)
        return NULL;
    clip_config c;
    if (!clip_read_config(wb, prefix, n_heads, act, &c))
        return NULL;
    clip_model *m = calloc(1, sizeof *m);
    clip_layer *layers = calloc((size_t)c.n_layers, sizeof *layers);
    if (!m || !layers) {
        free(m);
        free(layers);
        sdg_wb_set_error(wb, SDG_ERR_NOMEM, "out of memory loading the text encoder");
        return NULL;
    }
    m->cfg = c;
    m->layers = layers;
    const int W = c.width;
    const clip_names *nm = c.open_clip ? &clip_openclip_names : &clip_hf_names;
    const char *p = prefix, *L = nm->layers;
    // The matrices stay as stored, in place from the mapping (no packed copy): the encoder runs
    // once per picture, and the pipeline then lets its pages go (sdg_wb_drop_pages) so that they
    // do not stay resident beside the UNet and the VAE, the peak's 250 MB. Its few products
    // (77 rows a window) pack the row-major weights as they go.
    m->tok_emb = SDG_WPLAIN(wb, c.vocab, W, "%s%s", p, nm->tok_emb);
    m->pos_emb = SDG_WB2(wb, c.n_pos, W, "%s%s", p, nm->pos_emb);
    for (int i = 0; i < c.n_layers; i++) {
        clip_layer *l = &layers[i];
        l->ln1_w = SDG_WB1(wb, W, "%s%s%d.%s.weight", p, L, i, nm->ln1);
        l->ln1_b = SDG_WB1(wb, W, "%s%s%d.%s.bias", p, L, i, nm->ln1);
        if (c.open_clip) {
            l->qkv_w = SDG_WPLAIN(wb, 3 * W, W, "%s%s%d.attn.in_proj_weight", p, L, i);
            l->qkv_b = SDG_WB1(wb, 3 * W, "%s%s%d.attn.in_proj_bias", p, L, i);
            l->o_w = SDG_WPLAIN(wb, W, W, "%s%s%d.attn.out_proj.weight", p, L, i);
            l->o_b = SDG_WB1(wb, W, "%s%s%d.attn.out_proj.bias", p, L, i);
        } else {
            l->q_w = SDG_WPLAIN(wb, W, W, "%s%s%d.self_attn.q_proj.weight", p, L, i);
            l->q_b = SDG_WB1(wb, W, "%s%s%d.self_attn.q_proj.bias", p, L, i);
            l->k_w = SDG_WPLAIN(wb, W, W, "%s%s%d.self_attn.k_proj.weight", p, L, i);
            l->k_b = SDG_WB1(wb, W, "%s%s%d.self_attn.k_proj.bias", p, L, i);
            l->v_w = SDG_WPLAIN(wb, W, W, "%s%s%d.self_attn.v_proj.weight", p, L, i);
            l->v_b = SDG_WB1(wb, W, "%s%s%d.self_attn.v_proj.bias", p, L, i);
            l->o_w = SDG_WPLAIN(wb, W, W, "%s%s%d.self_attn.out_proj.weight", p, L, i);
            l->o_b = SDG_WB1(wb, W, "%s%s%d.self_attn.out_proj.bias", p, L, i);
        }
        l->ln2_w = SDG_WB1(wb, W, "%s%s%d.%s.weight", p, L, i, nm->ln2);
        l->ln2_b = SDG_WB1(wb, W, "%s%s%d.%s.bias", p, L, i, nm->ln2);
        l->fc1_w = SDG_WPLAIN(wb, c.mlp, W, "%s%s%d.%s.weight", p, L, i, nm->fc1);
        l->fc1_b = SDG_WB1(wb, c.mlp, "%s%s%d.%s.bias", p, L, i, nm->fc1);
        l->fc2_w = SDG_WPLAIN(wb, W, c.mlp, "%s%s%d.%s.weight", p, L, i, nm->fc2);
        l->fc2_b = SDG_WB1(wb, W, "%s%s%d.%s.bias", p, L, i, nm->fc2);
    }
    m->lnf_w = SDG_WB1(wb, W, "%s%s.weight", p, nm->lnf);
    m->lnf_b = SDG_WB1(wb, W, "%s%s.bias", p, nm->lnf);
    if (c.proj_dim > 0 && c.proj_transposed)
        m->proj = SDG_WPLAIN(wb, c.proj_dim, W, "%stext_projection.weight", p);
    else if (c.proj_dim > 0)
        m->proj = SDG_WPLAIN(wb, W, c.proj_dim, "%stext_projection", p);
    if (sdg_wb_status(wb, NULL) != SDG_OK) {
        clip_free(m);
        return NULL;
    }
    return m;
}

void clip_free(clip_model *m)
{
    if (!m)
        return;
    free(m->layers);
    free(m);
}

const clip_config *clip_get_config(const clip_model *m)
{
    return &m->cfg;
}

// ---------------------------------------------------------------------------------------------
// Forward

void clip_embed(sdg_exec *ex, const clip_model *m, const int32_t *ids, int n, float *out)
{
    clip_embed_rows(ex, m, ids, NULL, n, out);
}

void clip_embed_rows(sdg_exec *ex, const clip_model *m, const int32_t *ids,
                     const float *const *rows, int n, float *out)
{
    const clip_config *c = &m->cfg;
    SDG_ASSERT(n >= 1);
    if (ex->dry)
        return;
    // PyTorch: x = token_embedding(input_ids) + position_embedding(position_ids)
    // A1111 (EmbeddingsWithFixes): token_embedding's rows replaced by the embedding's vectors
    const size_t W = (size_t)c->width;
    for (int b = 0; b < n; b++)
        for (int t = 0; t < c->n_pos; t++) {
            size_t at = (size_t)b * c->n_pos + t;
            int32_t id = ids[at];
            SDG_ASSERT(id >= 0 && id < c->vocab);
            const float *pe = m->pos_emb + (size_t)t * W;
            float *o = out + at * W;
            if (rows && rows[at])
                memcpy(o, rows[at], W * sizeof *o);
            else
                sdg_weight_row(m->tok_emb, (size_t)id, c->width, o);
            for (size_t j = 0; j < W; j++)
                o[j] += pe[j];
        }
}

// One encoder layer on the residual stream x [n*T, W], in place. qkv holds 3 [n*T, W] blocks.
// PyTorch (CLIPEncoderLayer; open_clip ResidualAttentionBlock is the same with in_proj packed):
//   x = x + self_attn(layer_norm1(x), causal_attention_mask)
//   x = x + fc2(act(fc1(layer_norm2(x))))     act: quick_gelu (HF CLIP), exact GELU (open_clip)
static void clip_layer_forward(sdg_exec *ex, const clip_config *c, const clip_layer *l, float *x,
                               int n, float *t, float *qkv, float *h)
{
    const size_t rows = (size_t)n * c->n_pos;
    const int W = c->width, dh = W / c->n_heads;
    sdg_op_layer_norm(ex, x, rows, W, l->ln1_w, l->ln1_b, CLIP_LN_EPS, t);
    const float *q, *k, *v;
    int ld;
    if (l->qkv_w.data) {
        // One product gives each token's [q k v] row (in_proj); heads read it with stride 3W.
        sdg_op_linear(ex, t, rows, W, l->qkv_w, l->qkv_b, 3 * W, qkv);
        q = qkv;
        k = qkv + W;
        v = qkv + 2 * W;
        ld = 3 * W;
    } else {
        float *qb = qkv, *kb = qkv + rows * W, *vb = qkv + 2 * rows * W;
        sdg_op_linear(ex, t, rows, W, l->q_w, l->q_b, W, qb);
        sdg_op_linear(ex, t, rows, W, l->k_w, l->k_b, W, kb);
        sdg_op_linear(ex, t, rows, W, l->v_w, l->v_b, W, vb);
        q = qb;
        k = kb;
        v = vb;
        ld = W;
    }
    // Causal mask: token i sees j <= i, padding included (no padding mask in these encoders).
    sdg_op_attention(ex, q, ld, k, ld, v, ld, n, c->n_pos, c->n_pos, c->n_heads, dh,
                     1.0f / sqrtf((float)dh), true, t, W);
    float *o = qkv;   // q, k, v are dead
    sdg_op_linear(ex, t, rows, W, l->o_w, l->o_b, W, o);
    sdg_op_add(ex, x, o, rows * W, x);

    sdg_op_layer_norm(ex, x, rows, W, l->ln2_w, l->ln2_b, CLIP_LN_EPS, t);
    sdg_op_linear(ex, t, rows, W, l->fc1_w, l->fc1_b, c->mlp, h);
    if (c->gelu)
        sdg_op_gelu(ex, h, rows * c->mlp, h);
    else
        sdg_op_quick_gelu(ex, h, rows * c->mlp, h);
    sdg_op_linear(ex, h, rows, c->mlp, l->fc2_w, l->fc2_b, W, t);
    sdg_op_add(ex, x, t, rows * W, x);
}

// The position of the end-of-text token: the first largest id (torch argmax), as open_clip
// pools.
static int clip_eot_position(const int32_t *ids, int n_pos)
{
    int best = 0;
    for (int t = 1; t < n_pos; t++)
        if (ids[t] > ids[best])
            best = t;
    return best;
}

void clip_forward(sdg_exec *ex, const clip_model *m, const int32_t *ids, int n,
                  const clip_output *o, float *out, float *pooled)
{
    clip_forward_rows(ex, m, ids, NULL, n, o, out, pooled);
}

void clip_forward_rows(sdg_exec *ex, const clip_model *m, const int32_t *ids,
                       const float *const *emb, int n, const clip_output *o, float *out,
                       float *pooled)
{
    const clip_config *c = &m->cfg;
    SDG_ASSERT(n >= 1 && o && o->layer >= 1 && o->layer <= c->n_layers);
    SDG_ASSERT(!pooled || c->proj_dim > 0);
    static float dry_dummy[1];   // a dry run may be given no buffers; the ops want non-NULL
    if (ex->dry && !out)
        out = dry_dummy;
    const size_t rows = (size_t)n * c->n_pos;
    const size_t rw = rows * c->width;
    // x [n, T, W] is the residual stream; out holds it, so only the per-layer scratch is
    // taken from the arena. With a pooled output the layers past o->layer run on a copy.
    float *x = out;
    clip_embed_rows(ex, m, ids, emb, n, x);
    size_t mark = sdg__mark(ex);
    float *t = sdg__alloc_f32(ex, rw);
    float *qkv = sdg__alloc_f32(ex, 3 * rw);
    float *h = sdg__alloc_f32(ex, rows * c->mlp);
    for (int i = 0; i < o->layer; i++)
        clip_layer_forward(ex, c, &m->layers[i], x, n, t, qkv, h);
    if (pooled) {
        // PyTorch (open_clip TextTransformer): x = ln_final(transformer(x));
        //   pooled = x[arange(n), text.argmax(-1)] @ text_projection
        float *y = sdg__alloc_f32(ex, rw);
        if (!ex->dry)
            memcpy(y, x, rw * sizeof *y);
        for (int i = o->layer; i < c->n_layers; i++)
            clip_layer_forward(ex, c, &m->layers[i], y, n, t, qkv, h);
        float *e = sdg__alloc_f32(ex, (size_t)n * c->width);
        if (!ex->dry)
            for (int b = 0; b < n; b++) {
                int pos = clip_eot_position(ids + (size_t)b * c->n_pos, c->n_pos);
                memcpy(e + (size_t)b * c->width, y + ((size_t)b * c->n_pos + pos) * c->width,
                       (size_t)c->width * sizeof *e);
            }
        sdg_op_layer_norm(ex, e, (size_t)n, c->width, m->lnf_w, m->lnf_b, CLIP_LN_EPS, e);
        // open_clip: x @ W with W [width, proj] row-major, rows of W weighted by e;
        // transformers: x W^T with W [proj, width], a dot product per row of W.
        float *wrow = sdg__alloc_f32(ex, (size_t)(c->proj_dim > c->width ? c->proj_dim
                                                                          : c->width));
        if (!ex->dry && c->proj_transposed) {
            for (int j = 0; j < c->proj_dim; j++) {
                sdg_weight_row(m->proj, (size_t)j, c->width, wrow);
                for (int b = 0; b < n; b++) {
                    const float *eb = e + (size_t)b * c->width;
                    float s = 0.0f;
                    for (int k = 0; k < c->width; k++)
                        s += eb[k] * wrow[k];
                    pooled[(size_t)b * c->proj_dim + j] = s;
                }
            }
        } else if (!ex->dry) {
            memset(pooled, 0, (size_t)n * c->proj_dim * sizeof *pooled);
            for (int k = 0; k < c->width; k++) {
                sdg_weight_row(m->proj, (size_t)k, c->proj_dim, wrow);
                for (int b = 0; b < n; b++) {
                    float ek = e[(size_t)b * c->width + k];
                    float *pb = pooled + (size_t)b * c->proj_dim;
                    for (int j = 0; j < c->proj_dim; j++)
                        pb[j] += ek * wrow[j];
                }
            }
        }
    }
    // PyTorch: last_hidden_state = final_layer_norm(x); A1111 clip skip applies it to
    // hidden_states[-clip_skip] the same way; SDXL's encoders take a hidden state without it.
    if (o->final_norm)
        sdg_op_layer_norm(ex, x, rows, c->width, m->lnf_w, m->lnf_b, CLIP_LN_EPS, x);
    sdg__release(ex, mark);
}
