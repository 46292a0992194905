/*
 * embedding.h - textual-inversion embeddings in A1111's .safetensors convention: learned token
 * vectors that stand in the prompt for a word (the file's stem).
 *
 * A file is one of:
 *   - a single tensor of any name (A1111 saves "emb_params"; converted .pt files may say
 *     "string_to_param.*"), [n_vectors, width] or [width] (one vector): SD 1.x (width 768),
 *     SD 2.x (1024), or any model with one text encoder of that width;
 *   - the SDXL pair "clip_l" [n, 768] and "clip_g" [n, 1280], one per text encoder (other
 *     tensors beside them are ignored, as A1111 does).
 * F32, F16 or BF16; 1..75 vectors (an embedding never spans two windows of 75 tokens); every
 * value finite.
 *
 * Not here: where embeddings are looked up, how prompts use them (pipeline.c, prompt.h), Python
 * pickles (.pt, .bin: refused with a sentence; they can run code when unpickled).
 *
 * ref: https://github.com/AUTOMATIC1111/stable-diffusion-webui
 *      modules/textual_inversion/textual_inversion.py (create_embedding_from_data)
 */
#ifndef SDG_EMBEDDING_H
#define SDG_EMBEDDING_H

#include "../common.h"

// A1111's chunk: the tokens between BOS and EOS of one window.
#define EMB_MAX_VECTORS 75
#define EMB_MAX_PARTS 2
#define EMB_MAX_WIDTH 65536

typedef struct emb_file {
    int n_vectors;             // 1..EMB_MAX_VECTORS
    int n_parts;               // 1 (one tensor) or 2 (SDXL: clip_l, clip_g)
    int width[EMB_MAX_PARTS];
    float *vec[EMB_MAX_PARTS]; // owned, [n_vectors, width[i]] float32
} emb_file;

// Reads and checks path (see the top of this file). On failure out is zeroed and err says why,
// naming the file: SDG_ERR_UNSUPPORTED (a .pt/.bin pickle), SDG_ERR_IO, SDG_ERR_FORMAT (not
// safetensors, a non-float dtype, NaN or infinite values, no tensor or several), SDG_ERR_SHAPE
// (0 or more than 75 vectors, a shape that is no list of vectors, a pair of unequal lengths).
sdg_status emb_read(const char *path, emb_file *out, sdg_error *err);

// Whether e fits text encoders of the given widths (n_enc: 1 or 2): one tensor of width
// widths[0] for one encoder, the clip_l/clip_g pair of widths[0] and widths[1] for two.
// SDG_ERR_SHAPE naming path, the embedding's width(s) and the model's otherwise.
sdg_status emb_check(const emb_file *e, const char *path, const int *widths, int n_enc,
                     sdg_error *err);

// The vectors for text encoder `enc` of a model emb_check accepted ([n_vectors, width]).
const float *emb_vectors(const emb_file *e, int enc);

// Frees and zeroes; accepts a zeroed struct.
void emb_clear(emb_file *e);

#endif // SDG_EMBEDDING_H
