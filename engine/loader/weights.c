/*
 * weights.c - phase two of loading: hand a model's loader float32 data for each tensor it names,
 * checking presence, shape, a plausible total size and finite values, with sticky errors (see
 * weights.h).
 *
 * Aligned F32 tensors are returned as pointers into the st_file mapping (no copy); everything
 * else is converted once into a 64-byte-aligned copy owned here, cached per tensor so asking
 * twice never holds the weights twice. Every bound tensor is checked for NaN and infinity: during
 * the conversion for copies (the chunk is in cache), by a scan of the mapping for F32 ones.
 * Not here: name remapping, architecture detection.
 */
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <omp.h>
#include <unistd.h>

// Per tensor: not asked for; bound, data not read yet; read; counted only (shapes-only binders).
// WB_IN_SLAB is a flag on top: its copy lives in the slab (not freed on its own).
// WB_AS16 is another: it is held in its file's 16-bit storage type (sdg_wb_get_weight); and
// WB_PANEL_A / WB_PANEL_B say it is packed into panels of that many rows; WB_BORROWED that an
// overlay hands out its base's binding (not freed here); WB_PATCHED that an overlay patches it.
enum {
    WB_UNBOUND, WB_PENDING, WB_READ, WB_COUNTED, WB_STATE = 3, WB_IN_SLAB = 4, WB_AS16 = 8,
    WB_PANEL_A = 16, WB_PANEL_B = 32, WB_PANEL = WB_PANEL_A | WB_PANEL_B, WB_BORROWED = 64,
    WB_PATCHED = 128
};

static int wb_panel_of(uint8_t state)
{
    return state & WB_PANEL_A ? SDG_PANEL_A : state & WB_PANEL_B ? SDG_PANEL_B : 0;
}

struct sdg_weights {
    const st_file *f;        // borrowed, must outlive the binder
    void **copies;           // owned, one slot per tensor of f (NULL unless copied)
    uint8_t *state;          // owned, one WB_* per tensor of f
    size_t owned;            // bytes held in copies
    size_t mapped;           // bytes of F32 tensors used in place
    uint64_t mem_limit;      // the machine's physical memory in bytes (0: unknown, no limit)
    bool defer;              // sdg_wb_get reads nothing; sdg_wb_read does
    bool shapes_only;        // count, never convert or read (sdg_wb_set_shapes_only)
    uint8_t *slab;           // owned, sdg_wb_reserve: one block the copies are carved from
    size_t slab_cap, slab_used;
    sdg_status status;       // first error, sticky
    sdg_error err;
    sdg_wb_patch_fn patch;   // an overlay's (sdg_wb_new_overlay), for WB_PATCHED tensors
    void *patch_user;
    float *scratch[2];       // per reading thread: a patched tensor as float32, reused (a new
    size_t scratch_n[2];     // block per tensor would have the kernel zero gigabytes of pages)
};

sdg_weights *sdg_wb_new(const st_file *f, sdg_error *err)
{
    if (!f) {
        sdg__fail(err, SDG_ERR_INVALID_ARG, "sdg_wb_new: no file given");
        return NULL;
    }
    sdg_weights *wb = calloc(1, sizeof *wb);
    int n = st_count(f);
    void **copies = calloc(n > 0 ? (size_t)n : 1, sizeof *copies);
    uint8_t *state = calloc(n > 0 ? (size_t)n : 1, 1);
    if (!wb || !copies || !state) {
        free(wb);
        free(copies);
        free(state);
        sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory", st_path(f));
        return NULL;
    }
    wb->f = f;
    wb->copies = copies;
    wb->state = state;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    wb->mem_limit = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    sdg__error_clear(&wb->err);
    return wb;
}

sdg_weights *sdg_wb_new_overlay(const sdg_weights *base, const bool *patched, sdg_wb_patch_fn fn,
                                void *user, sdg_error *err)
{
    SDG_ASSERT(base && patched && fn && !base->shapes_only);
    sdg_weights *wb = sdg_wb_new(base->f, err);
    if (!wb)
        return NULL;
    for (int i = 0; i < st_count(base->f); i++) {
        if (patched[i]) {
            wb->state[i] = WB_PATCHED;
        } else if ((base->state[i] & WB_STATE) != WB_UNBOUND) {
            wb->state[i] = (uint8_t)((base->state[i] & ~WB_IN_SLAB) | WB_BORROWED);
            wb->copies[i] = base->copies[i];
        }
    }
    wb->patch = fn;
    wb->patch_user = user;
    wb->mem_limit = 0;   // base checked the model's size; the copies here are a part of it
    wb->defer = true;
    return wb;
}

void sdg_wb_defer(sdg_weights *wb)
{
    wb->defer = true;
}

void sdg_wb_free(sdg_weights *wb)
{
    if (!wb)
        return;
    for (int i = 0; i < st_count(wb->f); i++)
        if (!(wb->state[i] & (WB_IN_SLAB | WB_BORROWED)))
            free(wb->copies[i]);
    free(wb->copies);
    free(wb->state);
    free(wb->slab);
    for (int i = 0; i < 2; i++)
        free(wb->scratch[i]);
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

size_t sdg_wb_slab_used(const sdg_weights *wb)
{
    return wb->slab_used;
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
// Threads sdg_wb_read reads and packs tensors on.
#define WB_READ_THREADS 2   // (wb->scratch has one slot each)

static void wb_nonfinite_error(sdg_weights *wb, const st_tensor *t, int64_t count, int more)
{
    char also[64] = "";
    if (more > 0)
        snprintf(also, sizeof also, "; %d more tensor%s too", more,
                 more == 1 ? " has some" : "s have some");
    wb_error(wb, SDG_ERR_FORMAT, "%s: tensor '%s' has %lld NaN or infinite value%s (of %lld)%s:"
             " the checkpoint is damaged, and its pictures would come out black",
             st_path(wb->f), t->name, (long long)count, count == 1 ? "" : "s",
             (long long)t->n_elements, also);
}

// The pointer handed out for a tensor without a copy: its data in the mapping, or, for a
// shapes-only binder (whose pointers are never read), an address inside the mapping aligned to
// the element size (any non-NULL one when the file could not be mapped).
static const void *wb_in_place(const sdg_weights *wb, const st_tensor *t, size_t es)
{
    static const float unmapped[1];
    const void *data = st_data(wb->f, t);
    if (!data)
        return unmapped;
    return (const void *)((uintptr_t)data & ~(uintptr_t)(es - 1));
}

// Reads tensor t (a matrix of `rows` rows) into dst packed in panels of `panel` rows (see
// common.h): `panel` rows at a time into a buffer, then column by column into their panel.
// F32, F16 and BF16 keep their type (as16 says whether the copy is 16-bit); other types are
// converted to float32 first.
static sdg_status wb_read_packed(const sdg_weights *wb, const st_tensor *t, int panel, bool as16,
                                 void *dst, int64_t *bad, sdg_error *err)
{
    int64_t rows = t->n_dims ? t->shape[0] : 1, cols = rows ? t->n_elements / rows : 0;
    size_t es = as16 ? 2 : 4;
    bool raw = t->dtype == ST_F32 || as16;
    void *buf = malloc((size_t)panel * (size_t)(cols ? cols : 1) * es);
    float *all = NULL;
    if (!raw) {
        all = malloc((size_t)(t->n_elements ? t->n_elements : 1) * sizeof *all);
        if (all && st_read_f32_count(wb->f, t, all, bad, err) != SDG_OK) {
            free(all);
            free(buf);
            return err->status;
        }
    }
    if (!buf || (!raw && !all)) {
        free(buf);
        free(all);
        return sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory reading tensor '%s'",
                         st_path(wb->f), t->name);
    }
    for (int64_t g = 0; g < rows || g == 0; g += panel) {
        int64_t h = rows - g < panel ? rows - g : panel;
        const void *src = buf;
        if (h > 0 && raw) {
            sdg_status st = st_read_raw_count(wb->f, t, g * cols, h * cols, buf, bad, err);
            if (st != SDG_OK) {
                free(buf);
                return st;
            }
        } else if (h > 0) {
            src = all + g * cols;
        }
        sdg__pack_panels(dst, src, es, cols, g, h, rows, cols, panel);
    }
    free(buf);
    free(all);
    return SDG_OK;
}

// An overlay's patched tensor: float32 row-major in the reading thread's scratch, patched, then
// in the copy's type and packing.
static sdg_status wb_read_patched(sdg_weights *wb, int idx, int64_t *bad, sdg_error *err)
{
    const st_tensor *t = st_at(wb->f, idx);
    int64_t rows = t->n_dims ? t->shape[0] : 1, cols = rows ? t->n_elements / rows : 0;
    size_t n = (size_t)(t->n_elements ? t->n_elements : 1);
    int tid = omp_get_thread_num();
    SDG_ASSERT(tid >= 0 && tid < 2);
    if (wb->scratch_n[tid] < n) {
        free(wb->scratch[tid]);
        wb->scratch[tid] = sdg__alloc_big(n * sizeof(float));
        wb->scratch_n[tid] = wb->scratch[tid] ? n : 0;
    }
    float *w = wb->scratch[tid];
    if (!w)
        return sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory patching tensor '%s'",
                         st_path(wb->f), t->name);
    sdg_status st = st_read_f32_count(wb->f, t, w, bad, err);
    if (st == SDG_OK && !wb->patch(wb->patch_user, idx, w, rows, cols, err))
        st = err->status != SDG_OK ? err->status : SDG_ERR_INVALID_ARG;
    if (st != SDG_OK)
        return st;
    *bad = st_count_nonfinite(w, (size_t)t->n_elements, ST_F32);
    bool as16 = wb->state[idx] & WB_AS16;
    uint16_t *h = (uint16_t *)w;   // converted in place: element k only reads w[k] first
    if (as16)
        for (size_t k = 0; k < (size_t)t->n_elements; k++)
            h[k] = t->dtype == ST_F16 ? sdg__f32_to_f16(w[k]) : sdg__f32_to_bf16(w[k]);
    int panel = wb_panel_of(wb->state[idx]);
    size_t es = as16 ? 2 : 4;
    if (panel)
        sdg__pack_panels(wb->copies[idx], w, es, cols, 0, rows, rows, cols, panel);
    else
        memcpy(wb->copies[idx], w, (size_t)t->n_elements * es);
    return SDG_OK;
}

// Reads (converts and packs, or scans in the mapping) bound tensor idx and counts its non-finite
// values into *bad. Touches only what belongs to idx (its copy and state), so tensors may be read
// on several threads at once; an I/O error is returned in *e, not recorded.
static sdg_status wb_read_tensor(sdg_weights *wb, int idx, int64_t *bad, sdg_error *e)
{
    const st_tensor *t = st_at(wb->f, idx);
    sdg_status st;
    *bad = 0;
    if (wb->state[idx] & WB_PATCHED) {
        st = wb_read_patched(wb, idx, bad, e);
    } else if (wb->state[idx] & WB_PANEL) {
        st = wb_read_packed(wb, t, wb_panel_of(wb->state[idx]), wb->state[idx] & WB_AS16,
                            wb->copies[idx], bad, e);
    } else if (wb->copies[idx]) {
        st = wb->state[idx] & WB_AS16
                 ? st_read_raw_count(wb->f, t, 0, t->n_elements, wb->copies[idx], bad, e)
                 : st_read_f32_count(wb->f, t, wb->copies[idx], bad, e);
    } else {
        // In place: a file truncated since st_open would raise SIGBUS in the scan; this
        // catches what happened until now (the rest is the limit stated in safetensors.h).
        st = st_check_mapped(wb->f, e);
        if (st == SDG_OK)
            *bad = st_count_nonfinite(st_data(wb->f, t), (size_t)t->n_elements, t->dtype);
    }
    if (st == SDG_OK)
        wb->state[idx] = (uint8_t)((wb->state[idx] & ~WB_STATE) | WB_READ);
    return st;
}

// wb_read_tensor, recording an error. Returns false after one.
static bool wb_read_one(sdg_weights *wb, int idx, int64_t *bad)
{
    sdg_error e;
    if (wb_read_tensor(wb, idx, bad, &e) == SDG_OK)
        return true;
    wb_error(wb, e.status, "%s", e.message);
    return false;
}

// Binds a tensor (see sdg_wb_get); with keep16, F16 and BF16 tensors stay in their storage type;
// with panel > 0 the copy is packed (always a copy).
SDG_PRINTF(6, 0)
static sdg_weight wb_bind(sdg_weights *wb, int n_dims, const int64_t *shape, bool keep16,
                          int panel, const char *fmt, va_list ap)
{
    const sdg_weight none = {NULL, SDG_DT_F32, 0};
    if (wb->status != SDG_OK)
        return none;
    const char *path = st_path(wb->f);
    char name[WB_NAME_MAX];
    bool fits = wb_name(name, sizeof name, fmt, ap);
    if (!fits) {
        wb_error(wb, SDG_ERR_INVALID_ARG, "%s: tensor name '%.60s...' is too long", path, name);
        return none;
    }
    const st_tensor *t = st_find(wb->f, name);
    if (!t) {
        wb_error(wb, SDG_ERR_SHAPE, "%s: tensor '%s' is missing", path, name);
        return none;
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
        return none;
    }
    int idx = (int)(t - st_at(wb->f, 0));
    bool as16 = keep16 && (t->dtype == ST_F16 || t->dtype == ST_BF16);
    size_t es = as16 ? 2 : sizeof(float);
    sdg_dtype dt = !as16 ? SDG_DT_F32 : t->dtype == ST_F16 ? SDG_DT_F16 : SDG_DT_BF16;
    bool patched = wb->state[idx] & WB_PATCHED;
    bool in_place = !patched && panel == 0 && (t->dtype == ST_F32 || as16) &&
                    st_data_aligned(wb->f, t, es);
    uint8_t panel_flag = panel == SDG_PANEL_A ? WB_PANEL_A : panel == SDG_PANEL_B ? WB_PANEL_B : 0;
    SDG_ASSERT(panel == 0 || panel_flag);
    if ((wb->state[idx] & WB_STATE) != WB_UNBOUND) {
        // Asked for once as a weight and once as floats, or in two packings: a loader's mistake.
        SDG_ASSERT(as16 == !!(wb->state[idx] & WB_AS16));
        SDG_ASSERT(panel_flag == (wb->state[idx] & WB_PANEL));
        return (sdg_weight){wb->copies[idx] ? wb->copies[idx] : wb_in_place(wb, t, es), dt, panel};
    }
    // Packed: rows padded to whole panels.
    uint64_t n_held = (uint64_t)t->n_elements;
    if (panel) {
        int64_t rows = n_dims ? shape[0] : 1, pad = sdg_panel_pad(panel);
        n_held = rows ? (uint64_t)((rows + pad - 1) / pad * pad) * (uint64_t)(t->n_elements / rows)
                      : 0;
    }

    // Plausibility before any allocation or read: the weights a model binds must fit in the
    // machine's memory as held. A header describing more (a damaged or hostile file, or a
    // sparse file of huge tensors) is refused here, at once, instead of after reading it.
    uint64_t bytes = n_held * es;
    uint64_t bound = (uint64_t)wb->owned + wb->mapped;   // every tensor bound so far
    if (wb->mem_limit && bytes + bound > wb->mem_limit) {
        char got[128];
        wb_shape_str(got, sizeof got, t->n_dims, t->shape);
        wb_error(wb, SDG_ERR_UNSUPPORTED, "%s: with tensor '%s' %s the weights come to %.1f GB, "
                 "more than this machine's %.1f GB of memory: the file is damaged, "
                 "or the model is too large to run here", path, name, got,
                 (double)(bytes + bound) / 1e9, (double)wb->mem_limit / 1e9);
        return none;
    }
    if (wb->shapes_only) {
        // Counted once per tensor, however often it is asked for; never converted or read.
        if (in_place)
            wb->mapped += (size_t)bytes;
        else
            wb->owned += (size_t)bytes;
        wb->state[idx] = (uint8_t)(WB_COUNTED | (as16 ? WB_AS16 : 0) | panel_flag);
        return (sdg_weight){wb_in_place(wb, t, es), dt, panel};
    }
    // In place: whether the mapping exists and still covers the file is checked by
    // wb_read_one, before the data is first read (now, or in sdg_wb_read).
    if (in_place) {
        wb->mapped += (size_t)bytes;
        // Its type, as for copies: a LoRA overlay asks for it again (sdg_wb_new_overlay).
        wb->state[idx] |= (uint8_t)(as16 ? WB_AS16 : 0);
    } else {
        // From the slab when there is one: 64-byte steps, where a block of its own per tensor
        // would round each to whole 2 MiB huge pages (400 MB more for SD 1.5).
        size_t step = (size_t)((bytes + SDG_ARENA_ALIGN - 1) & ~(uint64_t)(SDG_ARENA_ALIGN - 1));
        bool in_slab = wb->slab && bytes <= SIZE_MAX && step <= wb->slab_cap - wb->slab_used;
        void *copy = in_slab ? wb->slab + wb->slab_used
                     : bytes <= SIZE_MAX ? sdg__alloc_big((size_t)bytes) : NULL;
        if (!copy) {
            wb_error(wb, SDG_ERR_NOMEM, "%s: out of memory converting tensor '%s' (%llu bytes)",
                     path, name, (unsigned long long)bytes);
            return none;
        }
        wb->state[idx] &= WB_PATCHED;
        if (in_slab) {
            wb->slab_used += step;
            wb->state[idx] |= WB_IN_SLAB;
        }
        wb->state[idx] |= (uint8_t)((as16 ? WB_AS16 : 0) | panel_flag);
        wb->copies[idx] = copy;
        wb->owned += (size_t)bytes;
    }
    wb->state[idx] = (uint8_t)((wb->state[idx] & ~WB_STATE) | WB_PENDING);
    if (!wb->defer) {
        int64_t bad;
        if (!wb_read_one(wb, idx, &bad))
            return none;
        if (bad) {
            wb_nonfinite_error(wb, t, bad, 0);
            return none;
        }
    }
    return (sdg_weight){in_place ? wb_in_place(wb, t, es) : wb->copies[idx], dt, panel};
}

const float *sdg_wb_get(sdg_weights *wb, int n_dims, const int64_t *shape, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sdg_weight w = wb_bind(wb, n_dims, shape, false, 0, fmt, ap);
    va_end(ap);
    return w.data;
}

sdg_weight sdg_wb_get_weight(sdg_weights *wb, int panel, int n_dims, const int64_t *shape,
                             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sdg_weight w = wb_bind(wb, n_dims, shape, true, panel, fmt, ap);
    va_end(ap);
    return w;
}

static int wb_cmp_offset(const void *a, const void *b)
{
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    if (x->part != y->part)   // a composed view (st_compose): file by file
        return x->part < y->part ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

sdg_status sdg_wb_read(sdg_weights *wb, sdg_error *err)
{
    int n = st_count(wb->f), n_pending = 0;
    for (int i = 0; i < n; i++)
        n_pending += (wb->state[i] & WB_STATE) == WB_PENDING;
    if (wb->status != SDG_OK || n_pending == 0)
        return sdg_wb_status(wb, err);
    const st_tensor **order = malloc((size_t)n_pending * sizeof *order);
    if (!order) {
        wb_error(wb, SDG_ERR_NOMEM, "%s: out of memory", st_path(wb->f));
        return sdg_wb_status(wb, err);
    }
    n_pending = 0;
    for (int i = 0; i < n; i++)
        if ((wb->state[i] & WB_STATE) == WB_PENDING)
            order[n_pending++] = st_at(wb->f, i);
    // In file order: one sequential pass over the file, which a disk reads fastest.
    qsort(order, (size_t)n_pending, sizeof *order, wb_cmp_offset);
    // Two threads or so: reading from the page cache and packing go about twice as fast, more
    // would only contend for memory bandwidth. Results are kept per tensor and reported in file
    // order, so the first error is the same whatever thread met it.
    int64_t *bads = calloc((size_t)n_pending, sizeof *bads);
    sdg_error *errs = calloc((size_t)n_pending, sizeof *errs);
    if (!bads || !errs) {
        free(bads);
        free(errs);
        free(order);
        wb_error(wb, SDG_ERR_NOMEM, "%s: out of memory", st_path(wb->f));
        return sdg_wb_status(wb, err);
    }
    int threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    threads = threads < 1 ? 1 : threads > WB_READ_THREADS ? WB_READ_THREADS : threads;
    int failed = 0;
    #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int i = 0; i < n_pending; i++) {
        if (__atomic_load_n(&failed, __ATOMIC_RELAXED))
            continue;   // an earlier tensor failed: stop reading
        int idx = (int)(order[i] - st_at(wb->f, 0));
        if (wb_read_tensor(wb, idx, &bads[i], &errs[i]) != SDG_OK)
            __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
    }
    const st_tensor *first_bad = NULL;
    int64_t first_count = 0;
    int more_bad = 0;
    bool in_place = false;
    for (int i = 0; i < n_pending; i++) {
        int idx = (int)(order[i] - st_at(wb->f, 0));
        in_place = in_place || !wb->copies[idx];
        if (errs[i].status != SDG_OK) {
            wb_error(wb, errs[i].status, "%s", errs[i].message);
            break;
        }
        if (bads[i] && !first_bad) {
            first_bad = order[i];
            first_count = bads[i];
        } else if (bads[i]) {
            more_bad++;
        }
    }
    free(bads);
    free(errs);
    free(order);
    for (int i = 0; i < 2; i++) {   // patched tensors' scratch: not held after the read
        free(wb->scratch[i]);
        wb->scratch[i] = NULL;
        wb->scratch_n[i] = 0;
    }
    // Copies were read with pread (a short read is an error); data used in place is checked
    // once more after the scan (see the limit in safetensors.h).
    sdg_error e;
    if (wb->status == SDG_OK && in_place && st_check_mapped(wb->f, &e) != SDG_OK)
        wb_error(wb, e.status, "%s", e.message);
    if (first_bad)
        wb_nonfinite_error(wb, first_bad, first_count, more_bad);
    return sdg_wb_status(wb, err);
}

void sdg_wb_drop_pages(const sdg_weights *wb, const char *prefix)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    size_t len = strlen(prefix);
    for (int i = 0; i < st_count(wb->f); i++) {
        const st_tensor *t = st_at(wb->f, i);
        const uint8_t *data = st_data(wb->f, t);
        if ((wb->state[i] & WB_STATE) != WB_READ || wb->copies[i] || !data || t->size == 0 ||
            strncmp(t->name, prefix, len) != 0)
            continue;
        // Whole pages, rounded outwards: a neighbour's page dropped with it is a private,
        // never-written page of the file, read back as it was.
        uintptr_t a = (uintptr_t)data & ~(page - 1);
        uintptr_t b = ((uintptr_t)data + t->size + page - 1) & ~(page - 1);
        madvise((void *)a, b - a, MADV_DONTNEED);   // advice: a failure only keeps the pages
    }
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
