/*
 * fuzz_model.c - libFuzzer harness for loading a checkpoint and running what was loaded: the
 * architecture the engine infers from tensor shapes must never make a network read or write past
 * the buffers the pipeline gives it.
 *
 * The file is one of the golden tiny models' (shared/reference/golden/tiny-sd1, tiny-sd2 or
 * tiny-sdxl .safetensors: SD 1.x, open_clip SD 2.x, two-encoder SDXL; the first input byte's
 * top bits pick which) with a mutated header. The first input byte's low bit picks how:
 *   even: the rest of the input is the header's JSON, over the tiny model's real data section
 *         (raw mutation: syntax, offsets, dtypes, negative and huge numbers);
 *   odd:  the rest is a list of 4-byte edits of the tiny model's tensor table (set, grow or shrink a
 *         dimension, add or drop one, change a dtype, drop a tensor, swap two tensors' shapes, fill
 *         a tensor with NaN, Inf or huge values); the harness writes a consistent header and a
 *         data section (the real bytes where a tensor kept its size and dtype), so that shape
 *         mutations get past the byte-count checks to the architecture inference.
 * When the model loads, its text encoder, UNet and autoencoder run on malloc'd buffers sized
 * exactly as the pipeline sizes them (outside the arena, so AddressSanitizer sees any overrun),
 * then one sdg_generate step runs end to end (inpainting too for a 9-channel UNet). The same file
 * is then loaded header-only and sized with sdg_ctx_estimate, as the GIMP dialog does.
 * Vocabulary: the bundled default model's small vocab.json + merges.txt (fast to load).
 */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "pipeline/pipeline.h"

// Structured mode builds files up to this size; larger edits are skipped (libFuzzer's memory
// limit, and converting gigabytes per input would only find the memory guard's cases).
#define MAX_DATA ((uint64_t)64 << 20)
#define MAX_DIM ((int64_t)1 << 40)

// The base models, and the one the current input mutates.
typedef struct fuzz_base {
    const uint8_t *data;              // its data section (kept for the whole run)
    size_t data_size;
    const st_file *index;
    char *metadata;                   // its configs as a "__metadata__" member, or ""
} fuzz_base;

static fuzz_base bases[3];
static const uint8_t *tiny_data;      // the current base's data section
static size_t tiny_data_size;
static const st_file *tiny;           // its index
static const char *tiny_meta;
static char *vocab_path;

// The configs the SD2/SDXL goldens carry (their heads are not in the shapes), as JSON.
static char *base_metadata(const st_file *f)
{
    static const char *const keys[] = { "unet_config", "open_clip_config", "clip_l_config",
                                        "parameterization" };
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
        const char *v = st_metadata(f, keys[i]);
        if (!v)
            continue;
        char *e = g_strescape(v, NULL);
        g_string_append_printf(s, "%s\"%s\":\"%s\"", s->len ? "," : "", keys[i], e);
        g_free(e);
    }
    if (s->len) {
        g_string_prepend(s, "\"__metadata__\":{");
        g_string_append_c(s, '}');
    }
    return g_string_free(s, FALSE);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static const char *const files[3] = { "tiny-sd1.safetensors", "tiny-sd2.safetensors",
                                          "tiny-sdxl.safetensors" };
    for (int b = 0; b < 3; b++) {
        char *path = g_build_filename(fuzz_reference_dir(), "golden", files[b], NULL);
        sdg_error err;
        st_file *f = st_open(path, &err);
        if (!f) {
            fprintf(stderr, "fuzz_model: %s\n", err.message);
            abort();
        }
        size_t size;
        uint8_t *bytes = fuzz_read_file(path, &size);
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--)
            n = (n << 8) | bytes[i];
        bases[b].data = bytes + 8 + n;
        bases[b].data_size = size - 8 - (size_t)n;
        bases[b].index = f;
        bases[b].metadata = base_metadata(f);
        g_free(path);
    }
    vocab_path = g_build_filename(fuzz_models_dir(), "vocab.json", NULL);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Structured mode

typedef struct edit_tensor {
    const st_tensor *orig;
    st_dtype dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    bool dropped;
    int fill;                         // 0 = real or generated data, 1 NaN, 2 +Inf, 3 1e30
} edit_tensor;

static const int64_t dim_values[16] = { 0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 32, 63, 64, 77, 78 };
static const st_dtype dtypes[9] = { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I8, ST_U8,
                                    ST_BOOL };

static void apply_edit(edit_tensor *ts, int n, const uint8_t e[4])
{
    edit_tensor *t = &ts[(e[1] | e[2] << 8) % n];
    uint8_t v = e[3];
    int d = t->n_dims ? (v >> 4) % t->n_dims : 0;
    switch (e[0] % 8) {
    case 0: if (t->n_dims) t->shape[d] = dim_values[v & 15]; break;
    case 1: if (t->n_dims) t->shape[d] += (v & 15) - 8; if (t->n_dims && t->shape[d] < 0) t->shape[d] = 0; break;
    case 2:   // grows up to 2^40: the file-size cap skips what cannot be written
        if (t->n_dims && t->shape[d] <= MAX_DIM / 4) t->shape[d] *= 1 + (v & 3);
        break;
    case 3:
        if ((v & 1) && t->n_dims < ST_MAX_DIMS)
            t->shape[t->n_dims++] = 1 + (v >> 1 & 3);
        else if (!(v & 1) && t->n_dims > 0)
            t->n_dims--;
        break;
    case 4: t->dtype = dtypes[v % 9]; break;
    case 5: t->dropped = !t->dropped; break;
    case 6: {
        edit_tensor *u = &ts[((e[1] | e[2] << 8) + 1 + v) % n];
        int nd = t->n_dims;
        int64_t sh[ST_MAX_DIMS];
        memcpy(sh, t->shape, sizeof sh);
        t->n_dims = u->n_dims;
        memcpy(t->shape, u->shape, sizeof sh);
        u->n_dims = nd;
        memcpy(u->shape, sh, sizeof sh);
        break;
    }
    default: t->fill = 1 + v % 3; break;
    }
}

static uint64_t n_elements(const edit_tensor *t)
{
    uint64_t ne = 1;
    for (int d = 0; d < t->n_dims; d++) {
        if (t->shape[d] && ne > MAX_DATA / (uint64_t)t->shape[d])
            return UINT64_MAX;
        ne *= (uint64_t)t->shape[d];
    }
    return ne;
}

// One element of a generated tensor: small values that keep the networks finite.
static void put_value(uint8_t *dst, st_dtype dt, uint64_t i, int fill)
{
    float f = fill == 1 ? NAN : fill == 2 ? INFINITY : fill == 3 ? 1e30f
              : 0.02f * (float)((int)((i * 2654435761u) % 101) - 50) / 50.0f;
    switch (dt) {
    case ST_F32: memcpy(dst, &f, 4); break;
    case ST_F16: { uint16_t h = sdg__f32_to_f16(f); memcpy(dst, &h, 2); break; }
    case ST_BF16: { uint32_t u; memcpy(&u, &f, 4); uint16_t h = (uint16_t)(u >> 16); memcpy(dst, &h, 2); break; }
    case ST_F64: { double x = f; memcpy(dst, &x, 8); break; }
    case ST_I64: { int64_t x = (int64_t)(i % 7); memcpy(dst, &x, 8); break; }
    case ST_I32: { int32_t x = (int32_t)(i % 7); memcpy(dst, &x, 4); break; }
    default: *dst = (uint8_t)(i % 2); break;
    }
}

// Writes the edited table as a safetensors file. Returns false when it would be too large.
static bool write_structured(const uint8_t *edits, size_t n_edits, char path[64])
{
    int n = st_count(tiny);
    edit_tensor *ts = calloc((size_t)n, sizeof *ts);
    CHECK(ts);
    for (int i = 0; i < n; i++) {
        const st_tensor *o = st_at(tiny, i);
        ts[i] = (edit_tensor){ .orig = o, .dtype = o->dtype, .n_dims = o->n_dims };
        memcpy(ts[i].shape, o->shape, sizeof o->shape);
    }
    for (size_t k = 0; k + 4 <= n_edits; k += 4)
        apply_edit(ts, n, edits + k);

    GString *hdr = g_string_new("{");
    bool first = true;
    uint64_t total = 0;
    bool written = false;
    for (int i = 0; i < n; i++) {
        const edit_tensor *t = &ts[i];
        if (t->dropped)
            continue;
        uint64_t ne = n_elements(t);
        if (ne == UINT64_MAX || total + ne * st_dtype_size(t->dtype) > MAX_DATA)
            goto done;
        uint64_t bytes = ne * st_dtype_size(t->dtype);
        g_string_append_printf(hdr, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", first ? "" : ",",
                               t->orig->name, st_dtype_name(t->dtype));
        first = false;
        for (int d = 0; d < t->n_dims; d++)
            g_string_append_printf(hdr, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        g_string_append_printf(hdr, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)total,
                               (unsigned long long)(total + bytes));
        total += bytes;
    }
    if (*tiny_meta)   // "__metadata__":{...}: the base's configs
        g_string_append_printf(hdr, "%s%s", first ? "" : ",", tiny_meta);
    g_string_append_c(hdr, '}');
    while (hdr->len % 8)
        g_string_append_c(hdr, ' ');   // keeps F32 data aligned, as real writers do
    uint8_t *data = malloc(total ? total : 1);
    CHECK(data);
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        const edit_tensor *t = &ts[i];
        if (t->dropped)
            continue;
        uint64_t ne = n_elements(t), es = st_dtype_size(t->dtype);
        if (!t->fill && t->dtype == t->orig->dtype && ne == (uint64_t)t->orig->n_elements)
            memcpy(data + at, tiny_data + t->orig->offset, ne * es);
        else
            for (uint64_t e = 0; e < ne; e++)
                put_value(data + at + e * es, t->dtype, e, t->fill);
        at += ne * es;
    }
    uint8_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (uint8_t)((uint64_t)hdr->len >> (8 * i));
    const void *parts[3] = { len, hdr->str, data };
    size_t sizes[3] = { 8, hdr->len, total };
    fuzz_memfile(path, parts, sizes, 3, 3);
    free(data);
    written = true;
done:
    g_string_free(hdr, TRUE);
    free(ts);
    return written;
}

// ---------------------------------------------------------------------------------------------
// Running what loaded

typedef struct net_args {
    const sdg_model *m;
    int h, w;                         // latent size
    int32_t *ids;                     // [77]
    float *ctx;                       // [77, context_dim]
    float *x, *t, *eps;               // [in_ch, h, w], [1], [out_ch, h, w]
    float *y;                         // [adm_in] (SDXL) or NULL
    float *image, *moments;           // [3, H, W], [2 * out_ch, h, w]
} net_args;

static void run_nets(sdg_exec *ex, const net_args *a)
{
    const sdg_model *m = a->m;
    int ds = m->info.vae_scale;
    // The first encoder writes the first columns' worth (all of them but for SDXL's two).
    const clip_model *te = m->te[0];
    clip_forward(ex, te, a->ids, 1, &(clip_output){clip_get_config(te)->n_layers, true}, a->ctx,
                 NULL);
    unet_forward(ex, m->unet, a->x, 1, a->h, a->w, a->t,
                 &(unet_cond){a->ctx, SDG_TOKENIZER_CTX, a->y}, a->eps);
    vae_decode(ex, m->vae, a->eps, 1, a->h, a->w, a->image);
    vae_encode(ex, m->vae, a->image, 1, a->h * ds, a->w * ds, a->moments);
}

static float *alloc_filled(size_t n, float v)
{
    float *p = malloc(n * sizeof *p);
    CHECK(p);
    for (size_t i = 0; i < n; i++)
        p[i] = v * (float)((i % 13) - 6) / 6.0f;
    return p;
}

static void run_loaded(const sdg_model *m, uint8_t knobs)
{
    const clip_config *cc = clip_get_config(m->te[0]);
    const unet_config *uc = unet_get_config(m->unet);
    int ds = m->info.vae_scale;
    net_args a = { .m = m, .h = 1 + (knobs & 3), .w = 1 + (knobs >> 2 & 3) };
    if (a.h > 3) a.h = 3;
    if (a.w > 3) a.w = 3;
    size_t hw = (size_t)a.h * a.w, HW = hw * (size_t)ds * ds;
    a.ids = malloc(SDG_TOKENIZER_CTX * sizeof *a.ids);
    CHECK(a.ids);
    int vocab = sdg_tokenizer_vocab_size(m->tok);
    for (int i = 0; i < SDG_TOKENIZER_CTX; i++)
        a.ids[i] = i == 0 ? sdg_tokenizer_bos(m->tok) : i < 5 ? (i * 37) % vocab : m->pad_id[0];
    a.ctx = alloc_filled((size_t)SDG_TOKENIZER_CTX * uc->context_dim, 0.0f);
    a.x = alloc_filled((size_t)uc->in_ch * hw, 1.0f);
    a.t = alloc_filled(1, 0.0f);
    a.t[0] = 500.0f;
    a.eps = alloc_filled((size_t)uc->out_ch * hw, 0.0f);
    a.image = alloc_filled(3 * HW, 0.0f);
    a.moments = alloc_filled(2 * (size_t)uc->out_ch * hw, 0.0f);
    a.y = uc->adm_in ? alloc_filled((size_t)uc->adm_in, 0.0f) : NULL;
    CHECK(cc->width <= uc->context_dim);

    sdg_exec ex;
    sdg__exec_init(&ex, 1);
    ex.dry = true;
    run_nets(&ex, &a);
    ex.dry = false;
    sdg_error err;
    CHECK(ex.arena.used == 0);
    if (sdg__exec_reserve(&ex, ex.arena.peak, &err) == SDG_OK)
        run_nets(&ex, &a);
    sdg__exec_free(&ex);
    free(a.ids), free(a.ctx), free(a.x), free(a.t), free(a.eps), free(a.image), free(a.moments), free(a.y);

    // The whole pipeline once: one step with guidance, and inpainting for a 9-channel UNet.
    sdg_ctx *ctx = sdg_ctx_new(m, 1, &err);
    CHECK(ctx);
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = "a (red:1.2) [circle]";
    gp.width = ds * (1 + (knobs >> 4 & 1));
    gp.height = ds * (1 + (knobs >> 5 & 1));
    gp.steps = 1;
    gp.cfg_scale = 2.0f;
    gp.sampler = (sdg_sampler)((knobs >> 6) % SDG_SAMPLER_COUNT);
    sdg_result *res = NULL;
    if (sdg_generate(ctx, &gp, &res, &err) == SDG_OK)
        CHECK(res && res->n_images == 1);
    sdg_result_free(res);
    if (uc->in_ch != uc->out_ch) {
        sdg_image *img = sdg_image_new(gp.width, gp.height, 3);
        sdg_image *mask = sdg_image_new(gp.width, gp.height, 1);
        CHECK(img && mask);
        for (int i = 0; i < gp.width * gp.height; i++)
            mask->data[i] = (float)(i % 2);
        gp.init_image = img;
        gp.mask = mask;
        res = NULL;
        if (sdg_generate(ctx, &gp, &res, &err) == SDG_OK)
            CHECK(res && res->n_images == 1);
        sdg_result_free(res);
        sdg_image_free(img);
        sdg_image_free(mask);
    }
    sdg_ctx_free(ctx);
}

// Raw mode pads the header with spaces (which the format allows after the JSON) to this fixed
// length, so that the data section stays at one place in the file and is written only once.
#define RAW_HEADER_LEN ((size_t)264 << 10)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char path[64];
    const fuzz_base *base = &bases[(data[0] >> 5) % 3];
    tiny = base->index;
    tiny_data = base->data;
    tiny_data_size = base->data_size;
    tiny_meta = base->metadata;
    if (data[0] % 2 == 0) {
        static uint8_t header[RAW_HEADER_LEN];
        size_t n = size - 1 <= RAW_HEADER_LEN ? RAW_HEADER_LEN : size - 1;
        const uint8_t *h = data + 1;
        if (n == RAW_HEADER_LEN) {
            memcpy(header, data + 1, size - 1);
            memset(header + size - 1, ' ', RAW_HEADER_LEN - (size - 1));
            h = header;
        }
        uint8_t len[8];
        for (int i = 0; i < 8; i++)
            len[i] = (uint8_t)((uint64_t)n >> (8 * i));
        const void *parts[3] = { len, h, tiny_data };
        size_t sizes[3] = { 8, n, tiny_data_size };
        fuzz_memfile(path, parts, sizes, 3, 2);
    } else if (!write_structured(data + 1, size - 1, path)) {
        return 0;
    }
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    sdg_error err;
    sdg_model *m = sdg_model_load(path, &mp, &err);
    bool full_loaded = m != NULL;
    uint64_t full_weights = 0;
    if (m) {
        full_weights = (uint64_t)m->copy_bytes + m->mapped_bytes;
        run_loaded(m, (uint8_t)(data[0] >> 1));
    } else {
        CHECK(err.status != SDG_OK && err.message[0]);
    }
    sdg_model_free(m);

    // The same file as a header-only model (what the GIMP dialog sizes runs with): it loads
    // exactly when the full model does, its estimate counts the same weights, and it refuses to
    // generate.
    mp.header_only = true;
    sdg_model *h = sdg_model_load(path, &mp, &err);
    if (h) {
        sdg_ctx *ctx = sdg_ctx_new(h, 1, &err);
        CHECK(ctx);
        sdg_gen_params gp = sdg_gen_default_params();
        gp.width = gp.height = 8 * h->info.vae_scale;
        gp.steps = 1;
        sdg_memory_estimate est;
        sdg_status st = sdg_ctx_estimate(ctx, &gp, &est, &err);
        CHECK(st == SDG_OK || st == SDG_ERR_NOMEM);
        CHECK(est.total_bytes >= est.weights_bytes + est.arena_bytes);
        CHECK(est.weights_bytes == full_weights || !full_loaded);
        sdg_result *res = NULL;
        CHECK(sdg_generate(ctx, &gp, &res, &err) != SDG_OK && res == NULL);
        sdg_ctx_free(ctx);
    }
    sdg_model_free(h);
    return 0;
}
