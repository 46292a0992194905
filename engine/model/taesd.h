/*
 * taesd.h - TAESD (madebyollin/taesd), the tiny autoencoder that decodes an SD/SDXL latent into a
 * picture (and encodes one) in a few percent of the VAE's time: a stack of 3x3 convolutions, ReLU
 * and nearest x2 upsamplings with 64 channels throughout.
 *
 * The layers are read from the keys of the released files (taesd_decoder.pth/.safetensors: "1.weight",
 * "3.conv.0.weight", ...) under a prefix: a key "N.conv.0.weight" is a Block (three convs, ReLU,
 * a 1x1 skip when the widths differ), "N.weight" a convolution; in the decoder a convolution
 * without bias comes after a x2 upsampling, in the encoder it has stride 2 (taesd.py's Decoder
 * and Encoder). Conventions: the decoder takes the diffusion-space latent as is (no scale factor)
 * and soft-clamps it (tanh(x/3)*3) first; pictures are in [0, 1] (not clamped by the model).
 *
 * Not here: finding the files (the pipeline), the VAE (vae.c).
 */
#ifndef SDG_TAESD_H
#define SDG_TAESD_H

#include "../common.h"
#include "../loader/weights.h"

typedef struct taesd_model taesd_model;

// Binds the decoder under dec_prefix and the encoder under enc_prefix (either NULL: not bound).
// Errors are recorded in wb (sticky, naming the tensor); returns NULL on error. The model
// borrows the weights: wb (and its file) must outlive it.
taesd_model *taesd_load(sdg_weights *wb, const char *dec_prefix, const char *enc_prefix);
void taesd_free(taesd_model *m);

// Latent channels (4 for SD and SDXL; pictures have 8x8 pixels per latent pixel).
int taesd_latent_channels(const taesd_model *m);
bool taesd_has_decoder(const taesd_model *m);
bool taesd_has_encoder(const taesd_model *m);

// latent [n, c, h, w] -> image [n, 3, 8h, 8w] in about [0, 1]. Activations come from ex's arena
// and are released before returning; the allocation sequence depends only on the shapes (a dry
// run measures the peak; buffers may then be NULL).
void taesd_decode(sdg_exec *ex, const taesd_model *m, const float *latent, int n, int h, int w,
                  float *image);

// image [n, 3, h, w] in [0, 1] (h, w multiples of 8) -> latent [n, c, h/8, w/8].
void taesd_encode(sdg_exec *ex, const taesd_model *m, const float *image, int n, int h, int w,
                  float *latent);

#endif // SDG_TAESD_H
