/*
 * embedding.c - reading textual-inversion embeddings (see embedding.h).
 *
 * A1111 reads a .safetensors embedding as a dict of tensors: "clip_g" and "clip_l" make an SDXL
 * embedding, otherwise the dict must hold exactly one tensor, a 1-D one being one vector. Where
 * A1111 skips a file it cannot use (printing to the console), the engine answers with a sentence:
 * the file was named in a prompt, so the user wants to know.
 */
#include "embedding.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

static const char *const emb_pair_names[EMB_MAX_PARTS] = { "clip_l", "clip_g" };

// The extensions of Python pickles: torch.load runs code from them, so they are never read.
static bool emb_is_pickle(const char *path)
{
    return g_str_has_suffix(path, ".pt") || g_str_has_suffix(path, ".bin") ||
           g_str_has_suffix(path, ".ckpt") || g_str_has_suffix(path, ".pth");
}

// Reads tensor t as [*n, *width] float32 into *out (malloc'd).
static sdg_status emb_read_tensor(const st_file *f, const st_tensor *t, const char *path,
                                  int *n, int *width, float **out, sdg_error *err)
{
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return sdg__fail(err, SDG_ERR_FORMAT, "%s: embedding tensor %s is %s; an embedding is "
                         "F32, F16 or BF16", path, t->name, st_dtype_name(t->dtype));
    if (t->n_dims != 1 && t->n_dims != 2)
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: embedding tensor %s has %d dimensions; an "
                         "embedding is [vectors, width] or [width]", path, t->name, t->n_dims);
    int64_t rows = t->n_dims == 2 ? t->shape[0] : 1;
    int64_t cols = t->shape[t->n_dims - 1];
    if (rows < 1 || cols < 1)
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: embedding tensor %s has no vectors (shape "
                         "%lld x %lld)", path, t->name, (long long)rows, (long long)cols);
    if (rows > EMB_MAX_VECTORS)
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: the embedding has %lld vectors; at most %d fit "
                         "in a prompt window", path, (long long)rows, EMB_MAX_VECTORS);
    if (cols > EMB_MAX_WIDTH)
        return sdg__fail(err, SDG_ERR_SHAPE, "%s: embedding tensor %s is %lld wide; no text "
                         "encoder is wider than %d", path, t->name, (long long)cols, EMB_MAX_WIDTH);
    float *v = malloc((size_t)(rows * cols) * sizeof *v);
    if (!v)
        return sdg__fail(err, SDG_ERR_NOMEM, "out of memory reading %s", path);
    int64_t bad = 0;
    sdg_status st = st_read_f32_count(f, t, v, &bad, err);
    if (st == SDG_OK && bad > 0)
        st = sdg__fail(err, SDG_ERR_FORMAT, "%s: embedding tensor %s has %lld NaN or infinite "
                       "values", path, t->name, (long long)bad);
    if (st != SDG_OK) {
        free(v);
        return st;
    }
    *n = (int)rows;
    *width = (int)cols;
    *out = v;
    return SDG_OK;
}

static sdg_status emb_read_file(const st_file *f, const char *path, emb_file *e, sdg_error *err)
{
    const st_tensor *pair[EMB_MAX_PARTS] = { st_find(f, emb_pair_names[0]),
                                             st_find(f, emb_pair_names[1]) };
    if (pair[0] && pair[1]) {
        e->n_parts = 2;
        int n[EMB_MAX_PARTS];
        for (int i = 0; i < EMB_MAX_PARTS; i++) {
            sdg_status st = emb_read_tensor(f, pair[i], path, &n[i], &e->width[i], &e->vec[i],
                                            err);
            if (st != SDG_OK)
                return st;
        }
        if (n[0] != n[1])
            return sdg__fail(err, SDG_ERR_SHAPE, "%s: clip_l has %d vectors but clip_g %d; an "
                             "SDXL embedding has as many for each text encoder", path, n[0], n[1]);
        e->n_vectors = n[0];
        return SDG_OK;
    }
    if (st_count(f) != 1)
        return sdg__fail(err, SDG_ERR_FORMAT, "%s: the file has %d tensors; an embedding has one "
                         "(emb_params) or the SDXL pair clip_l and clip_g", path, st_count(f));
    e->n_parts = 1;
    return emb_read_tensor(f, st_at(f, 0), path, &e->n_vectors, &e->width[0], &e->vec[0], err);
}

sdg_status emb_read(const char *path, emb_file *out, sdg_error *err)
{
    SDG_ASSERT(path && out);
    memset(out, 0, sizeof *out);
    if (emb_is_pickle(path))
        return sdg__fail(err, SDG_ERR_UNSUPPORTED, "%s is a PyTorch pickle, which the engine does "
                         "not read (unpickling can run code); use the embedding's .safetensors "
                         "version", path);
    st_file *f = st_open(path, err);
    if (!f)
        return err ? err->status : SDG_ERR_IO;
    sdg_status st = emb_read_file(f, path, out, err);
    st_close(f);
    if (st != SDG_OK)
        emb_clear(out);
    return st;
}

// "768" or "clip_l 768 + clip_g 1280", for messages.
static void emb_describe(const int *widths, int n, char *buf, size_t cap)
{
    if (n == 1)
        snprintf(buf, cap, "%d", widths[0]);
    else
        snprintf(buf, cap, "%s %d + %s %d", emb_pair_names[0], widths[0], emb_pair_names[1],
                 widths[1]);
}

sdg_status emb_check(const emb_file *e, const char *path, const int *widths, int n_enc,
                     sdg_error *err)
{
    SDG_ASSERT(n_enc >= 1 && n_enc <= EMB_MAX_PARTS);
    bool ok = e->n_parts == n_enc;
    for (int i = 0; ok && i < n_enc; i++)
        ok = e->width[i] == widths[i];
    if (ok)
        return SDG_OK;
    char have[64], want[64];
    emb_describe(e->width, e->n_parts, have, sizeof have);
    emb_describe(widths, n_enc, want, sizeof want);
    return sdg__fail(err, SDG_ERR_SHAPE, "%s: the embedding's vectors are %s wide but the model's "
                     "text %s %s wide (an embedding made for another family? SD 1.x: 768, SD 2.x: "
                     "1024, SDXL: clip_l 768 + clip_g 1280)", path, have,
                     n_enc == 1 ? "encoder is" : "encoders are", want);
}

const float *emb_vectors(const emb_file *e, int enc)
{
    SDG_ASSERT(enc >= 0 && enc < e->n_parts);
    return e->vec[enc];
}

void emb_clear(emb_file *e)
{
    if (!e)
        return;
    for (int i = 0; i < EMB_MAX_PARTS; i++)
        free(e->vec[i]);
    memset(e, 0, sizeof *e);
}
