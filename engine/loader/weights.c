/*
 * weights.c - phase two of loading: hand a model's loader float32 data for each tensor it names,
 * checking presence and shape, with sticky errors (see weights.h).
 *
 * Aligned F32 tensors are returned as pointers into the st_file mapping (no copy); everything
 * else is converted once into a 64-byte-aligned copy owned here, cached per tensor so asking
 * twice never holds the weights twice. Not here: name remapping, architecture detection.
 */
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WB_COUNTED = 1, WB_IN_SLAB = 2 };

struct sdg_weights {
    const st_file *f;        // borrowed, must outlive the binder
    float **copies;          // owned, one slot per tensor of f (NULL until converted)
    size_t owned;            // bytes held in copies
    size_t mapped;           // bytes of F32 tensors used in place
    uint8_t *bound;          // owned, per tensor of f: WB_COUNTED (in owned or mapped, no copy),
                             // WB_IN_SLAB (its copy lives in the slab)
    bool shapes_only;        // count, never convert (sdg_wb_set_shapes_only)
    uint8_t *slab;           // owned, sdg_wb_reserve: one block the copies are carved from
    size_t slab_cap, slab_used;
    sdg_status status;       // first error, sticky
    sdg_error err;
};

sdg_weights *sdg_wb_new(const st_file *f, sdg_error *err)
{
    if (!f) {
        sdg__fail(err, SDG_ERR_INVALID_ARG, "sdg_wb_new: no file given");
        return NULL;
    }
    sdg_weights *wb = calloc(1, sizeof *wb);
    int n = st_count(f);
    float **copies = calloc(n > 0 ? (size_t)n : 1, sizeof *copies);
    uint8_t *bound = calloc(n > 0 ? (size_t)n : 1, 1);
    if (!wb || !copies || !bound) {
        free(wb);
        free(copies);
        free(bound);
        sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory", st_path(f));
        return NULL;
    }
    wb->f = f;
    wb->copies = copies;
    wb->bound = bound;
    sdg__error_clear(&wb->err);
    return wb;
}

void sdg_wb_free(sdg_weights *wb)
{
    if (!wb)
        return;
    for (int i = 0; i < st_count(wb->f); i++)
        if (wb->bound[i] != WB_IN_SLAB)
            free(wb->copies[i]);
    free(wb->copies);
    free(wb->bound);
    free(wb->slab);
    free(wb);
}

SDG_PRINTF(3, 0)
static void wb_vset_error(sdg_weights *wb, sdg_status status, const char *fmt, va_list ap)
{
    if (wb->status != SDG_OK)
        return;
    wb->status = status;
    wb->err.status = status;
    vsnprintf(wb->err.message, sizeof wb->err.message, fmt, ap);
}

SDG_PRINTF(3, 4)
static void wb_error(sdg_weights *wb, sdg_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    wb_vset_error(wb, status, fmt, ap);
    va_end(ap);
}

void sdg_wb_set_error(sdg_weights *wb, sdg_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    wb_vset_error(wb, status, fmt, ap);
    va_end(ap);
}

sdg_status sdg_wb_status(const sdg_weights *wb, sdg_error *err)
{
    if (wb->status == SDG_OK)
        sdg__error_clear(err);
    else if (err)
        *err = wb->err;
    return wb->status;
}

size_t sdg_wb_owned_bytes(const sdg_weights *wb)
{
    return wb->owned;
}

size_t sdg_wb_mapped_bytes(const sdg_weights *wb)
{
    return wb->mapped;
}

void sdg_wb_set_shapes_only(sdg_weights *wb, bool on)
{
    wb->shapes_only = on;
}

sdg_status sdg_wb_reserve(sdg_weights *wb, size_t bytes, sdg_error *err)
{
    if (wb->slab || bytes == 0)
        return SDG_OK;
    wb->slab = sdg__alloc_big(bytes);
    if (!wb->slab)
        return sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory for the converted weights "
                         "(%zu bytes)", st_path(wb->f), bytes);
    wb->slab_cap = bytes;
    return SDG_OK;
}

// Formats a tensor name; false when it does not fit (real names are under 120 characters).
SDG_PRINTF(3, 0)
static bool wb_name(char *buf, size_t cap, const char *fmt, va_list ap)
{
    int len = vsnprintf(buf, cap, fmt, ap);
    return len >= 0 && (size_t)len < cap;
}

static void wb_shape_str(char *buf, size_t cap, int n_dims, const int64_t *shape)
{
    size_t o = 0;
    buf[o++] = '[';
    for (int d = 0; d < n_dims && o + 24 < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", d ? "," : "", (long long)shape[d]);
    snprintf(buf + o, cap - o, "]");
}

#define WB_NAME_MAX 256

const float *sdg_wb_get(sdg_weights *wb, int n_dims, const int64_t *shape, const char *fmt, ...)
{
    if (wb->status != SDG_OK)
        return NULL;
    const char *path = st_path(wb->f);
    char name[WB_NAME_MAX];
    va_list ap;
    va_start(ap, fmt);
    bool fits = wb_name(name, sizeof name, fmt, ap);
    va_end(ap);
    if (!fits) {
        wb_error(wb, SDG_ERR_INVALID_ARG, "%s: tensor name '%.60s...' is too long", path, name);
        return NULL;
    }
    const st_tensor *t = st_find(wb->f, name);
    if (!t) {
        wb_error(wb, SDG_ERR_SHAPE, "%s: tensor '%s' is missing", path, name);
        return NULL;
    }
    bool same = t->n_dims == n_dims;
    for (int d = 0; same && d < n_dims; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        char got[128], want[128];
        wb_shape_str(got, sizeof got, t->n_dims, t->shape);
        wb_shape_str(want, sizeof want, n_dims, shape);
        wb_error(wb, SDG_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected %s", path, name, got,
                 want);
        return NULL;
    }
    const void *data = st_data(wb->f, t);
    int idx = (int)(t - st_at(wb->f, 0));
    size_t bytes = (size_t)t->n_elements * sizeof(float);
    bool in_place = t->dtype == ST_F32 && ((uintptr_t)data % sizeof(float)) == 0;
    if (in_place || wb->shapes_only) {
        // Counted once per tensor, however often it is asked for.
        if (!wb->bound[idx]) {
            wb->bound[idx] = WB_COUNTED;
            if (in_place)
                wb->mapped += bytes;
            else
                wb->owned += bytes;
        }
        // Shapes only: a float-aligned address inside the mapping, never read.
        return (const float *)((uintptr_t)data & ~(uintptr_t)(sizeof(float) - 1));
    }

    if (wb->copies[idx])
        return wb->copies[idx];
    // From the slab when there is one: 64-byte steps, where a block of its own per tensor would
    // round each to whole 2 MiB huge pages (400 MB more for SD 1.5).
    size_t step = (bytes + SDG_ARENA_ALIGN - 1) & ~(size_t)(SDG_ARENA_ALIGN - 1);
    bool in_slab = wb->slab && step <= wb->slab_cap - wb->slab_used;
    void *copy = in_slab ? wb->slab + wb->slab_used : sdg__alloc_big(bytes);
    if (!copy) {
        wb_error(wb, SDG_ERR_NOMEM, "%s: out of memory converting tensor '%s' (%zu bytes)", path,
                 name, bytes);
        return NULL;
    }
    sdg_error e;
    if (st_read_f32(wb->f, t, copy, &e) != SDG_OK) {
        if (!in_slab)
            free(copy);
        wb_error(wb, e.status, "%s", e.message);
        return NULL;
    }
    if (in_slab) {
        wb->slab_used += step;
        wb->bound[idx] = WB_IN_SLAB;
    }
    wb->copies[idx] = copy;
    wb->owned += bytes;
    st_release(wb->f, t);
    return copy;
}

const st_tensor *sdg_wb_find(sdg_weights *wb, const char *fmt, ...)
{
    char name[WB_NAME_MAX];
    va_list ap;
    va_start(ap, fmt);
    bool fits = wb_name(name, sizeof name, fmt, ap);
    va_end(ap);
    return fits ? st_find(wb->f, name) : NULL;
}
