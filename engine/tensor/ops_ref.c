/*
 * ops_ref.c - the naive `_ref` twins of the heavy ops in ops.h, which the tests compare against.
 *
 * Each is the textbook formula as plain loops: every sum in double, one thread, no BLAS, no
 * arena, no tiling, so that it is easy to check by eye and independent of ops.c's tricks. They
 * are slow (a convolution is a sextuple loop) and meant for small shapes.
 *
 * Not here: the cheap element-wise ops (tests check those against their formula directly), or
 * anything fast.
 *
 * ref: PyTorch torch.nn.functional (conv2d, linear, group_norm, layer_norm,
 * scaled_dot_product_attention).
 */
#include "ops.h"

#include <math.h>
#include <stdlib.h>

void sdg_op_conv2d_ref(const float *x, int n, int cin, int h, int w, const float *weight,
                       const float *bias, int cout, int k, int stride, int pad_t, int pad_l,
                       int pad_b, int pad_r, float *y)
{
    SDG_ASSERT(x && weight && y);
    SDG_ASSERT(n >= 1 && cin >= 1 && h >= 1 && w >= 1 && cout >= 1 && k >= 1 && stride >= 1);
    SDG_ASSERT(pad_t >= 0 && pad_l >= 0 && pad_b >= 0 && pad_r >= 0);
    SDG_ASSERT(h + pad_t + pad_b >= k && w + pad_l + pad_r >= k);
    int oh = sdg_conv_out_size(h, k, stride, pad_t, pad_b);
    int ow = sdg_conv_out_size(w, k, stride, pad_l, pad_r);
    for (int b = 0; b < n; b++)
        for (int co = 0; co < cout; co++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    double acc = bias ? bias[co] : 0.0;
                    for (int ci = 0; ci < cin; ci++)
                        for (int ky = 0; ky < k; ky++) {
                            int iy = oy * stride + ky - pad_t;
                            if (iy < 0 || iy >= h)
                                continue;
                            for (int kx = 0; kx < k; kx++) {
                                int ix = ox * stride + kx - pad_l;
                                if (ix < 0 || ix >= w)
                                    continue;
                                double xv = x[(((size_t)b * cin + ci) * h + iy) * w + ix];
                                double wv = weight[(((size_t)co * cin + ci) * k + ky) * k + kx];
                                acc += xv * wv;
                            }
                        }
                    y[(((size_t)b * cout + co) * oh + oy) * ow + ox] = (float)acc;
                }
}

void sdg_op_linear_ref(const float *x, size_t rows, int in, const float *w, const float *b,
                       int out, float *y)
{
    SDG_ASSERT(x && w && y && in >= 1 && out >= 1);
    for (size_t r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double acc = b ? b[o] : 0.0;
            for (int i = 0; i < in; i++)
                acc += (double)x[r * in + i] * w[(size_t)o * in + i];
            y[r * out + o] = (float)acc;
        }
}

void sdg_op_group_norm_ref(const float *x, int n, int c, size_t hw, int groups,
                           const float *gamma, const float *beta, float eps, bool silu, float *y)
{
    SDG_ASSERT(x && y && n >= 1 && c >= 1 && groups >= 1 && c % groups == 0 && hw >= 1);
    int cpg = c / groups;
    size_t count = (size_t)cpg * hw;
    for (int b = 0; b < n; b++)
        for (int g = 0; g < groups; g++) {
            size_t off = ((size_t)b * c + (size_t)g * cpg) * hw;
            double sum = 0.0;
            for (size_t i = 0; i < count; i++)
                sum += x[off + i];
            double mean = sum / (double)count;
            double sq = 0.0;
            for (size_t i = 0; i < count; i++)
                sq += (x[off + i] - mean) * (x[off + i] - mean);
            double inv = 1.0 / sqrt(sq / (double)count + eps);
            for (size_t i = 0; i < count; i++) {
                int ch = g * cpg + (int)(i / hw);
                double v = (x[off + i] - mean) * inv;
                v = v * (gamma ? gamma[ch] : 1.0) + (beta ? beta[ch] : 0.0);
                if (silu)
                    v = v / (1.0 + exp(-v));
                y[off + i] = (float)v;
            }
        }
}

void sdg_op_layer_norm_ref(const float *x, size_t rows, int c, const float *gamma,
                           const float *beta, float eps, float *y)
{
    SDG_ASSERT(x && y && c >= 1);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        double sum = 0.0;
        for (int j = 0; j < c; j++)
            sum += xr[j];
        double mean = sum / c;
        double sq = 0.0;
        for (int j = 0; j < c; j++)
            sq += (xr[j] - mean) * (xr[j] - mean);
        double inv = 1.0 / sqrt(sq / c + eps);
        for (int j = 0; j < c; j++) {
            double v = (xr[j] - mean) * inv;
            yr[j] = (float)(v * (gamma ? gamma[j] : 1.0) + (beta ? beta[j] : 0.0));
        }
    }
}

void sdg_op_attention_ref(const float *q, int ldq, const float *k, int ldk, const float *v,
                          int ldv, int n, int tq, int tk, int n_heads, int head_dim, float scale,
                          bool causal, float *out, int ldo)
{
    SDG_ASSERT(q && k && v && out);
    SDG_ASSERT(n >= 0 && tq >= 1 && tk >= 1 && n_heads >= 1 && head_dim >= 1);
    int width = n_heads * head_dim;
    SDG_ASSERT(ldq >= width && ldk >= width && ldv >= width && ldo >= width);
    // One row of scores and one output row, in double (a test helper may allocate).
    double *s = malloc((size_t)tk * sizeof *s);
    double *o = malloc((size_t)head_dim * sizeof *o);
    SDG_ASSERT(s && o);
    for (int b = 0; b < n; b++)
        for (int hd = 0; hd < n_heads; hd++)
            for (int i = 0; i < tq; i++) {
                const float *qi = q + ((size_t)b * tq + i) * ldq + (size_t)hd * head_dim;
                int len = causal && i + 1 < tk ? i + 1 : tk;   // columns j <= i when causal
                double mx = -INFINITY;
                for (int j = 0; j < len; j++) {
                    const float *kj = k + ((size_t)b * tk + j) * ldk + (size_t)hd * head_dim;
                    double acc = 0.0;
                    for (int d = 0; d < head_dim; d++)
                        acc += (double)qi[d] * kj[d];
                    s[j] = acc * scale;
                    if (s[j] > mx)
                        mx = s[j];
                }
                double sum = 0.0;
                for (int j = 0; j < len; j++) {
                    s[j] = exp(s[j] - mx);
                    sum += s[j];
                }
                for (int d = 0; d < head_dim; d++)
                    o[d] = 0.0;
                for (int j = 0; j < len; j++) {
                    const float *vj = v + ((size_t)b * tk + j) * ldv + (size_t)hd * head_dim;
                    for (int d = 0; d < head_dim; d++)
                        o[d] += s[j] * vj[d];
                }
                float *oi = out + ((size_t)b * tq + i) * ldo + (size_t)hd * head_dim;
                for (int d = 0; d < head_dim; d++)
                    oi[d] = (float)(o[d] / sum);
            }
    free(s);
    free(o);
}
