/*
 * taesd.c - the TAESD decoder and encoder (see taesd.h) over flat NCHW arrays.
 *
 * ref: madebyollin/taesd @5cccb12 taesd.py (conv, Clamp, Block, Encoder, Decoder).
 */
#include "taesd.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../tensor/ops.h"

#define TAESD_MAX_LAYERS 64

typedef enum taesd_kind { TAESD_CONV, TAESD_BLOCK } taesd_kind;

typedef struct taesd_conv {
    int cin, cout, stride;
    sdg_weight w;
    const float *b;                 // NULL: no bias
} taesd_conv;

typedef struct taesd_layer {
    taesd_kind kind;
    bool up;                        // CONV: nearest x2 before it (decoder, no bias)
    bool relu;                      // CONV: ReLU after it (the decoder's first)
    taesd_conv c[3];                // CONV: c[0]; BLOCK: conv.0, conv.2, conv.4
    taesd_conv skip;                // BLOCK: 1x1 when the widths differ (w.data NULL: identity)
} taesd_layer;

typedef struct taesd_net {
    int n;
    taesd_layer layers[TAESD_MAX_LAYERS];
    int in_ch, out_ch;
} taesd_net;

struct taesd_model {
    taesd_net dec, enc;
    bool has_dec, has_enc;
};

// ---------------------------------------------------------------------------------------------
// Loading

// A 3x3 (or k x k) convolution "<base>.weight" [cout, cin, k, k] and its optional bias.
static bool taesd_load_conv(sdg_weights *wb, const char *P, const char *base, int k, int stride,
                            taesd_conv *c)
{
    const st_tensor *t = sdg_wb_find(wb, "%s%s.weight", P, base);
    if (!t || t->n_dims != 4 || t->shape[2] != k || t->shape[3] != k || t->shape[0] < 1 ||
        t->shape[1] < 1 || t->shape[0] > 4096 || t->shape[1] > 4096) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "TAESD: %s%s.weight: expected a [out, in, %d, %d] "
                         "convolution", P, base, k, k);
        return false;
    }
    c->cout = (int)t->shape[0];
    c->cin = (int)t->shape[1];
    c->stride = stride;
    c->w = SDG_WCONV(wb, c->cout, c->cin, k, k, "%s%s.weight", P, base);
    c->b = sdg_wb_find(wb, "%s%s.bias", P, base) ? SDG_WB1(wb, c->cout, "%s%s.bias", P, base)
                                                   : NULL;
    return sdg_wb_status(wb, NULL) == SDG_OK;
}

static bool taesd_load_net(sdg_weights *wb, const char *P, bool decoder, taesd_net *net)
{
    memset(net, 0, sizeof *net);
    int ch = -1;
    bool first_conv = true;
    for (int i = 0; i < 2 * TAESD_MAX_LAYERS; i++) {
        char base[32];
        snprintf(base, sizeof base, "%d", i);
        bool block = sdg_wb_find(wb, "%s%d.conv.0.weight", P, i) != NULL;
        bool conv = !block && sdg_wb_find(wb, "%s%d.weight", P, i) != NULL;
        if (!block && !conv)
            continue;   // a layer without weights (Clamp, ReLU, Upsample)
        if (net->n >= TAESD_MAX_LAYERS) {
            sdg_wb_set_error(wb, SDG_ERR_UNSUPPORTED, "TAESD under %s: more than %d layers", P,
                             TAESD_MAX_LAYERS);
            return false;
        }
        taesd_layer *l = &net->layers[net->n++];
        if (block) {
            l->kind = TAESD_BLOCK;
            static const char *const parts[3] = { "conv.0", "conv.2", "conv.4" };
            for (int k = 0; k < 3; k++) {
                char b[48];
                snprintf(b, sizeof b, "%d.%s", i, parts[k]);
                if (!taesd_load_conv(wb, P, b, 3, 1, &l->c[k]))
                    return false;
            }
            snprintf(base, sizeof base, "%d.skip", i);
            if (sdg_wb_find(wb, "%s%s.weight", P, base) &&
                !taesd_load_conv(wb, P, base, 1, 1, &l->skip))
                return false;
            if (l->c[1].cin != l->c[0].cout || l->c[2].cin != l->c[1].cout ||
                (!l->skip.w.data && l->c[0].cin != l->c[2].cout) ||
                (l->skip.w.data && (l->skip.cin != l->c[0].cin || l->skip.cout != l->c[2].cout))) {
                sdg_wb_set_error(wb, SDG_ERR_SHAPE, "TAESD: %s%d: the block's convolutions do "
                                 "not chain", P, i);
                return false;
            }
        } else {
            l->kind = TAESD_CONV;
            bool bias = sdg_wb_find(wb, "%s%d.bias", P, i) != NULL;
            // taesd.py: the decoder's bias-free convolutions follow an Upsample; the encoder's
            // have stride 2. The decoder's first convolution is followed by a ReLU.
            l->up = decoder && !bias;
            l->relu = decoder && first_conv;
            if (!taesd_load_conv(wb, P, base, 3, !decoder && !bias ? 2 : 1, &l->c[0]))
                return false;
            first_conv = false;
        }
        int cin = l->c[0].cin, cout = l->kind == TAESD_BLOCK ? l->c[2].cout : l->c[0].cout;
        if (ch >= 0 && cin != ch) {
            sdg_wb_set_error(wb, SDG_ERR_SHAPE, "TAESD: %s%d takes %d channels, the layer before "
                             "gives %d", P, i, cin, ch);
            return false;
        }
        if (ch < 0)
            net->in_ch = cin;
        ch = cout;
    }
    if (net->n >= 1 && net->layers[net->n - 1].kind != TAESD_CONV) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "TAESD under '%s': the last layer is not a "
                         "convolution", P);
        return false;
    }
    if (net->n < 2) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "TAESD: no %s under '%s' (tensors %s1.weight, "
                         "%s3.conv.0.weight, ...)", decoder ? "decoder" : "encoder", P, P, P);
        return false;
    }
    net->out_ch = ch;
    return true;
}

taesd_model *taesd_load(sdg_weights *wb, const char *dec_prefix, const char *enc_prefix)
{
    if (sdg_wb_status(wb, NULL) != SDG_OK)
        return NULL;
    taesd_model *m = calloc(1, sizeof *m);
    if (!m) {
        sdg_wb_set_error(wb, SDG_ERR_NOMEM, "out of memory loading TAESD");
        return NULL;
    }
    bool ok = true;
    if (dec_prefix) {
        ok = taesd_load_net(wb, dec_prefix, true, &m->dec);
        m->has_dec = ok;
        if (ok && m->dec.out_ch != 3) {
            sdg_wb_set_error(wb, SDG_ERR_SHAPE, "TAESD: the decoder under '%s' makes %d-channel "
                             "pictures, not RGB", dec_prefix, m->dec.out_ch);
            ok = false;
        }
    }
    if (ok && enc_prefix) {
        ok = taesd_load_net(wb, enc_prefix, false, &m->enc);
        m->has_enc = ok;
        if (ok && m->enc.in_ch != 3) {
            sdg_wb_set_error(wb, SDG_ERR_SHAPE, "TAESD: the encoder under '%s' takes %d-channel "
                             "pictures, not RGB", enc_prefix, m->enc.in_ch);
            ok = false;
        }
    }
    if (ok && m->has_dec && m->has_enc && m->dec.in_ch != m->enc.out_ch) {
        sdg_wb_set_error(wb, SDG_ERR_SHAPE, "TAESD: the encoder makes %d latent channels, the "
                         "decoder takes %d", m->enc.out_ch, m->dec.in_ch);
        ok = false;
    }
    if (!ok) {
        free(m);
        return NULL;
    }
    return m;
}

void taesd_free(taesd_model *m)
{
    free(m);
}

int taesd_latent_channels(const taesd_model *m)
{
    return m->has_dec ? m->dec.in_ch : m->has_enc ? m->enc.out_ch : 0;
}

bool taesd_has_decoder(const taesd_model *m)
{
    return m->has_dec;
}

bool taesd_has_encoder(const taesd_model *m)
{
    return m->has_enc;
}

// ---------------------------------------------------------------------------------------------
// Forward

// y = conv(x) (+ bias), 3x3 padding 1 (or 1x1), given stride.
static void taesd_conv_run(sdg_exec *ex, const taesd_conv *c, const float *x, int n, int h, int w,
                           int k, float *y)
{
    int pad = k / 2;
    sdg_op_conv2d(ex, x, n, c->cin, h, w, c->w, c->b, c->cout, k, c->stride, pad, pad, pad, pad,
                  y);
}

// Runs net on x [n, in_ch, h, w]; out [n, out_ch, oh, ow] with the sizes net implies.
// PyTorch (taesd.py): Block.forward(x) = fuse(conv(x) + skip(x)), fuse = ReLU,
//   conv = Sequential(conv3x3, ReLU, conv3x3, ReLU, conv3x3)
static void taesd_run(sdg_exec *ex, const taesd_net *net, const float *x, int n, int h, int w,
                      float *out)
{
    size_t mark = sdg__mark(ex);
    // Two ping-pong buffers of the widest activation (64 channels at the output size for the
    // decoder, at the input size for the encoder) and one for a block's inner result.
    int ch_max = net->in_ch;
    int H = h, W = w;
    for (int i = 0; i < net->n; i++) {
        const taesd_layer *l = &net->layers[i];
        if (l->kind == TAESD_CONV && l->up) {
            H *= 2;
            W *= 2;
        }
        int co = l->kind == TAESD_BLOCK ? l->c[2].cout : l->c[0].cout;
        ch_max = co > ch_max ? co : ch_max;
        if (l->kind == TAESD_BLOCK)
            for (int k = 0; k < 3; k++)
                ch_max = l->c[k].cout > ch_max ? l->c[k].cout : ch_max;
    }
    int big_h = H > h ? H : h, big_w = W > w ? W : w;
    size_t cap = (size_t)n * ch_max * big_h * big_w;
    float *a = sdg__alloc_f32(ex, cap), *b = sdg__alloc_f32(ex, cap), *t = sdg__alloc_f32(ex, cap);
    const float *cur = x;
    int c = net->in_ch;
    for (int i = 0; i < net->n; i++) {
        const taesd_layer *l = &net->layers[i];
        bool last = i == net->n - 1;
        float *dst = last ? out : (cur == a ? b : a);
        if (l->kind == TAESD_CONV) {
            const float *in = cur;
            if (l->up) {
                // PyTorch: nn.Upsample(scale_factor=2) (nearest)
                sdg_op_upsample2x(ex, cur, n, c, h, w, t);
                in = t;
                h *= 2;
                w *= 2;
            }
            int oh = l->c[0].stride == 2 ? sdg_conv_out_size(h, 3, 2, 1, 1) : h;
            int ow = l->c[0].stride == 2 ? sdg_conv_out_size(w, 3, 2, 1, 1) : w;
            taesd_conv_run(ex, &l->c[0], in, n, h, w, 3, dst);
            h = oh;
            w = ow;
            c = l->c[0].cout;
            if (l->relu)
                sdg_op_relu(ex, dst, (size_t)n * c * h * w, dst);
        } else {
            size_t hw = (size_t)h * w;
            // t = conv.4(relu(conv.2(relu(conv.0(x))))), through dst as scratch
            taesd_conv_run(ex, &l->c[0], cur, n, h, w, 3, t);
            sdg_op_relu(ex, t, (size_t)n * l->c[0].cout * hw, t);
            taesd_conv_run(ex, &l->c[1], t, n, h, w, 3, dst);
            sdg_op_relu(ex, dst, (size_t)n * l->c[1].cout * hw, dst);
            taesd_conv_run(ex, &l->c[2], dst, n, h, w, 3, t);
            c = l->c[2].cout;
            size_t nf = (size_t)n * c * hw;
            if (l->skip.w.data) {
                taesd_conv_run(ex, &l->skip, cur, n, h, w, 1, dst);
                sdg_op_add(ex, t, dst, nf, dst);
            } else {
                sdg_op_add(ex, t, cur, nf, dst);
            }
            sdg_op_relu(ex, dst, nf, dst);
        }
        cur = dst;
    }
    sdg__release(ex, mark);
}

void taesd_decode(sdg_exec *ex, const taesd_model *m, const float *latent, int n, int h, int w,
                  float *image)
{
    SDG_ASSERT(m->has_dec && n >= 1 && h >= 1 && w >= 1);
    static float dummy[16];
    if (ex->dry) {
        latent = latent ? latent : dummy;
        image = image ? image : dummy;
    }
    size_t mark = sdg__mark(ex);
    // PyTorch (taesd.py Clamp): torch.tanh(x / 3) * 3
    size_t nl = (size_t)n * m->dec.in_ch * h * w;
    float *x = sdg__alloc_f32(ex, nl);
    if (!ex->dry)
        for (size_t i = 0; i < nl; i++)
            x[i] = tanhf(latent[i] / 3.0f) * 3.0f;
    taesd_run(ex, &m->dec, x, n, h, w, image);
    sdg__release(ex, mark);
}

void taesd_encode(sdg_exec *ex, const taesd_model *m, const float *image, int n, int h, int w,
                  float *latent)
{
    SDG_ASSERT(m->has_enc && n >= 1 && h >= 8 && w >= 8 && h % 8 == 0 && w % 8 == 0);
    static float dummy[16];
    if (ex->dry) {
        image = image ? image : dummy;
        latent = latent ? latent : dummy;
    }
    taesd_run(ex, &m->enc, image, n, h, w, latent);
}
