/*
 * clip.c - the CLIP text encoder (see clip.h): pre-LayerNorm transformer with causal
 * self-attention and quick_gelu MLPs, in the Hugging Face CLIPTextModel weight layout.
 *
 * Not here: tokenization (tokenizer/), pooling or text_projection (SD1 uses all 77 hidden
 * states), open_clip's layout (SD2), any file parsing (loader/).
 *
 * ref: transformers src/transformers/models/clip/modeling_clip.py (CLIPTextTransformer,
 *      CLIPEncoderLayer, CLIPAttention, CLIPMLP); openai/CLIP clip/model.py @d05afc4 (the
 *      golden reference: same math with q/k/v packed into in_proj).
 */
#include "clip.h"

#include "../tensor/ops.h"

#include <math.h>
#include <stdlib.h>

// Head width of every SD-family CLIP text tower (ViT-L/14: 768/12, ViT-H: 1024/16, bigG: 1280/20).
#define CLIP_HEAD_DIM 64
// Probing stops here: no released text encoder is deeper than 32 layers.
#define CLIP_MAX_LAYERS 256
#define CLIP_LN_EPS 1e-5f

typedef struct clip_layer {
    const float *ln1_w, *ln1_b;        // [width]
    sdg_weight q_w, k_w, v_w;          // [width, width]
    const float *q_b, *k_b, *v_b;      // [width]
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

static bool clip_read_config(sdg_weights *wb, const char *prefix, clip_config *c)
{
    int64_t vocab, width, n_pos, pw, mlp, fw;
    if (!clip_shape2(wb, prefix, "embeddings.token_embedding.weight", &vocab, &width) ||
        !clip_shape2(wb, prefix, "embeddings.position_embedding.weight", &n_pos, &pw) ||
        !clip_shape2(wb, prefix, "encoder.layers.0.mlp.fc1.weight", &mlp, &fw))
        return false;
    if (pw != width || fw != width) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "text encoder: position_embedding (width %lld) and"
                         " fc1 (input %lld) disagree with token_embedding (width %lld) under %s",
                         (long long)pw, (long long)fw, (long long)width, prefix);
        return false;
    }
    if (width % CLIP_HEAD_DIM != 0) {
        sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "text encoder: width %lld under %s is not a"
                         " multiple of the head size %d", (long long)width, prefix, CLIP_HEAD_DIM);
        return false;
    }
    int n_layers = 0;
    while (n_layers < CLIP_MAX_LAYERS &&
           sdg_wb_find(wb, "%sencoder.layers.%d.self_attn.q_proj.weight", prefix, n_layers))
        n_layers++;
    if (n_layers == 0) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "text encoder: tensor"
                         " %sencoder.layers.0.self_attn.q_proj.weight is missing", prefix);
        return false;
    }
    c->vocab = (int)vocab;
    c->width = (int)width;
    c->n_pos = (int)n_pos;
    c->mlp = (int)mlp;
    c->n_layers = n_layers;
    c->n_heads = c->width / CLIP_HEAD_DIM;
    return true;
}

clip_model *clip_load(sdg_weights *wb, const char *prefix)
{
    if (sdg_wb_status(wb, NULL) != SDG_OK)
        return NULL;
    clip_config c;
    if (!clip_read_config(wb, prefix, &c))
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
    // The matrices stay as stored, in place from the mapping (no packed copy): the encoder runs
    // once per picture, and the pipeline then lets its pages go (sdg_wb_drop_pages) so that they
    // do not stay resident beside the UNet and the VAE, the peak's 250 MB. Its few products
    // (77 rows a window) pack the row-major weights as they go.
    m->tok_emb = SDG_WPLAIN(wb, c.vocab, W, "%sembeddings.token_embedding.weight", prefix);
    m->pos_emb = SDG_WB2(wb, c.n_pos, W, "%sembeddings.position_embedding.weight", prefix);
    for (int i = 0; i < c.n_layers; i++) {
        clip_layer *l = &layers[i];
        const char *p = prefix;
        l->ln1_w = SDG_WB1(wb, W, "%sencoder.layers.%d.layer_norm1.weight", p, i);
        l->ln1_b = SDG_WB1(wb, W, "%sencoder.layers.%d.layer_norm1.bias", p, i);
        l->q_w = SDG_WPLAIN(wb, W, W, "%sencoder.layers.%d.self_attn.q_proj.weight", p, i);
        l->q_b = SDG_WB1(wb, W, "%sencoder.layers.%d.self_attn.q_proj.bias", p, i);
        l->k_w = SDG_WPLAIN(wb, W, W, "%sencoder.layers.%d.self_attn.k_proj.weight", p, i);
        l->k_b = SDG_WB1(wb, W, "%sencoder.layers.%d.self_attn.k_proj.bias", p, i);
        l->v_w = SDG_WPLAIN(wb, W, W, "%sencoder.layers.%d.self_attn.v_proj.weight", p, i);
        l->v_b = SDG_WB1(wb, W, "%sencoder.layers.%d.self_attn.v_proj.bias", p, i);
        l->o_w = SDG_WPLAIN(wb, W, W, "%sencoder.layers.%d.self_attn.out_proj.weight", p, i);
        l->o_b = SDG_WB1(wb, W, "%sencoder.layers.%d.self_attn.out_proj.bias", p, i);
        l->ln2_w = SDG_WB1(wb, W, "%sencoder.layers.%d.layer_norm2.weight", p, i);
        l->ln2_b = SDG_WB1(wb, W, "%sencoder.layers.%d.layer_norm2.bias", p, i);
        l->fc1_w = SDG_WPLAIN(wb, c.mlp, W, "%sencoder.layers.%d.mlp.fc1.weight", p, i);
        l->fc1_b = SDG_WB1(wb, c.mlp, "%sencoder.layers.%d.mlp.fc1.bias", p, i);
        l->fc2_w = SDG_WPLAIN(wb, W, c.mlp, "%sencoder.layers.%d.mlp.fc2.weight", p, i);
        l->fc2_b = SDG_WB1(wb, W, "%sencoder.layers.%d.mlp.fc2.bias", p, i);
    }
    m->lnf_w = SDG_WB1(wb, W, "%sfinal_layer_norm.weight", prefix);
    m->lnf_b = SDG_WB1(wb, W, "%sfinal_layer_norm.bias", prefix);
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
    const clip_config *c = &m->cfg;
    SDG_ASSERT(n >= 1);
    if (ex->dry)
        return;
    // PyTorch: x = token_embedding(input_ids) + position_embedding(position_ids)
    const size_t W = (size_t)c->width;
    for (int b = 0; b < n; b++)
        for (int t = 0; t < c->n_pos; t++) {
            int32_t id = ids[(size_t)b * c->n_pos + t];
            SDG_ASSERT(id >= 0 && id < c->vocab);
            const float *pe = m->pos_emb + (size_t)t * W;
            float *o = out + ((size_t)b * c->n_pos + t) * W;
            sdg_weight_row(m->tok_emb, (size_t)id, c->width, o);
            for (size_t j = 0; j < W; j++)
                o[j] += pe[j];
        }
}

// One encoder layer on the residual stream x [n*T, W], in place.
// PyTorch (CLIPEncoderLayer):
//   x = x + self_attn(layer_norm1(x), causal_attention_mask)
//   x = x + fc2(quick_gelu(fc1(layer_norm2(x))))
static void clip_layer_forward(sdg_exec *ex, const clip_config *c, const clip_layer *l, float *x,
                               int n, float *t, float *q, float *k, float *v, float *h)
{
    const size_t rows = (size_t)n * c->n_pos;
    const int W = c->width;
    sdg_op_layer_norm(ex, x, rows, W, l->ln1_w, l->ln1_b, CLIP_LN_EPS, t);
    sdg_op_linear(ex, t, rows, W, l->q_w, l->q_b, W, q);
    sdg_op_linear(ex, t, rows, W, l->k_w, l->k_b, W, k);
    sdg_op_linear(ex, t, rows, W, l->v_w, l->v_b, W, v);
    // Causal mask: token i sees j <= i, padding included (no padding mask in SD1's encoder).
    sdg_op_attention(ex, q, W, k, W, v, W, n, c->n_pos, c->n_pos, c->n_heads, CLIP_HEAD_DIM,
                     1.0f / sqrtf((float)CLIP_HEAD_DIM), true, t, W);
    sdg_op_linear(ex, t, rows, W, l->o_w, l->o_b, W, q);
    sdg_op_add(ex, x, q, rows * W, x);

    sdg_op_layer_norm(ex, x, rows, W, l->ln2_w, l->ln2_b, CLIP_LN_EPS, t);
    sdg_op_linear(ex, t, rows, W, l->fc1_w, l->fc1_b, c->mlp, h);
    sdg_op_quick_gelu(ex, h, rows * c->mlp, h);
    sdg_op_linear(ex, h, rows, c->mlp, l->fc2_w, l->fc2_b, W, t);
    sdg_op_add(ex, x, t, rows * W, x);
}

void clip_forward(sdg_exec *ex, const clip_model *m, const int32_t *ids, int n, int clip_skip,
                  float *out)
{
    const clip_config *c = &m->cfg;
    SDG_ASSERT(n >= 1 && clip_skip >= 1 && clip_skip <= c->n_layers);
    static float dry_dummy[1];   // a dry run may be given no buffers; the ops want non-NULL
    if (ex->dry && !out)
        out = dry_dummy;
    const size_t rows = (size_t)n * c->n_pos;
    const size_t rw = rows * c->width;
    // x [n, T, W] is the residual stream; out holds it, so only the per-layer scratch is
    // taken from the arena.
    float *x = out;
    clip_embed(ex, m, ids, n, x);
    size_t mark = sdg__mark(ex);
    float *t = sdg__alloc_f32(ex, rw);
    float *q = sdg__alloc_f32(ex, rw);
    float *k = sdg__alloc_f32(ex, rw);
    float *v = sdg__alloc_f32(ex, rw);
    float *h = sdg__alloc_f32(ex, rows * c->mlp);
    int n_run = c->n_layers - clip_skip + 1;
    for (int i = 0; i < n_run; i++)
        clip_layer_forward(ex, c, &m->layers[i], x, n, t, q, k, v, h);
    // PyTorch: last_hidden_state = final_layer_norm(x); A1111 clip skip applies it to
    // hidden_states[-clip_skip] the same way.
    sdg_op_layer_norm(ex, x, rows, c->width, m->lnf_w, m->lnf_b, CLIP_LN_EPS, x);
    sdg__release(ex, mark);
}
