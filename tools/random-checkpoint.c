/*
 * random-checkpoint.c - `sdg-random-checkpoint MANIFEST.tsv OUT.safetensors [--dtype f16|f32|bf16]
 * [--seed N]`: writes a full-size checkpoint in the layout of a tensor manifest (one line per
 * tensor: name TAB dtype TAB shape, an empty shape = scalar; see shared/reference/manifests) with
 * random weights, for benchmarks and loader tests where real weights cannot be had.
 *
 * The weights keep activations in a sane range, nothing more: matrices and convolution kernels are
 * ~N(0, 1/fan_in) (fan_in = product of all dims but the first), so each layer roughly preserves
 * the variance of its input; 1-D `.weight` tensors (all of them are GroupNorm/LayerNorm scales in
 * SD layouts) are 1; biases and other vectors are N(0, 0.01^2). Buffers with a known meaning are
 * computed: the 12 DDPM buffers of the SD schedule, `denoiser.sigmas`, `position_ids` (0..76) and
 * open_clip's `logit_scale`. Integer dtypes of the manifest are kept; floating ones become --dtype
 * (default: as in the manifest).
 *
 * Not in here: file writing (engine/loader st_write_streamed), any attempt at meaningful
 * pictures. The output depends only on the manifest, the dtype and the seed (not on threads).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "loader/safetensors.h"

// ---------------------------------------------------------------------------------------------
// Random numbers. Not the engine's Philox: this needs ~1e9 values fast, not torch compatibility.
// splitmix64 (Steele, Lea, Flood 2014) gives 64 random bits in a few instructions; one draw is
// split into four 16-bit uniforms whose sum (Irwin-Hall, n = 4), centred and scaled by sqrt(3),
// has exactly unit variance and a bell shape with tails cut at +-3.46: a fine stand-in for
// N(0,1) in random weights (and bounded tails are welcome there), about 10x cheaper than
// Box-Muller. Each chunk of RC_CHUNK values has its own stream keyed by (seed, tensor, chunk), so
// chunks fill in parallel and the file does not depend on the thread count.

#define RC_CHUNK 65536

static inline uint64_t rc_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline float rc_gauss(uint64_t *state)
{
    uint64_t r = rc_splitmix64(state);
    uint32_t sum = (uint32_t)(r & 0xffff) + (uint32_t)((r >> 16) & 0xffff) +
                   (uint32_t)((r >> 32) & 0xffff) + (uint32_t)(r >> 48);
    // each (k + 0.5) / 65536 is uniform on (0,1) with mean 1/2; the sum has mean 2, variance 1/3
    return ((float)sum + 2.0f) * (1.0f / 65536.0f) * 1.7320508f - 2.0f * 1.7320508f;
}

// ---------------------------------------------------------------------------------------------
// The DDPM schedule of SD (ldm DDPM.register_schedule with linear_start 0.00085, linear_end
// 0.012, 1000 steps, v_posterior 0), computed in double as the reference does.

#define RC_T 1000

enum {
    RC_BETAS, RC_ALPHAS_CUMPROD, RC_ALPHAS_CUMPROD_PREV, RC_SQRT_ALPHAS_CUMPROD,
    RC_SQRT_ONE_MINUS_ALPHAS_CUMPROD, RC_LOG_ONE_MINUS_ALPHAS_CUMPROD, RC_SQRT_RECIP_ALPHAS_CUMPROD,
    RC_SQRT_RECIPM1_ALPHAS_CUMPROD, RC_POSTERIOR_VARIANCE, RC_POSTERIOR_LOG_VARIANCE_CLIPPED,
    RC_POSTERIOR_MEAN_COEF1, RC_POSTERIOR_MEAN_COEF2, RC_SIGMAS, RC_N_SCHEDULE
};

static const char *const rc_schedule_names[RC_N_SCHEDULE] = {
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "sigmas",
};

static void rc_schedule(double out[RC_N_SCHEDULE][RC_T])
{
    double a0 = sqrt(0.00085), a1 = sqrt(0.012), cum = 1.0;
    for (int t = 0; t < RC_T; t++) {
        double s = a0 + (a1 - a0) * t / (RC_T - 1);   // torch.linspace, then squared
        double beta = s * s;
        double prev = cum;
        cum *= 1.0 - beta;
        double var = beta * (1.0 - prev) / (1.0 - cum);
        out[RC_BETAS][t] = beta;
        out[RC_ALPHAS_CUMPROD][t] = cum;
        out[RC_ALPHAS_CUMPROD_PREV][t] = prev;
        out[RC_SQRT_ALPHAS_CUMPROD][t] = sqrt(cum);
        out[RC_SQRT_ONE_MINUS_ALPHAS_CUMPROD][t] = sqrt(1.0 - cum);
        out[RC_LOG_ONE_MINUS_ALPHAS_CUMPROD][t] = log(1.0 - cum);
        out[RC_SQRT_RECIP_ALPHAS_CUMPROD][t] = sqrt(1.0 / cum);
        out[RC_SQRT_RECIPM1_ALPHAS_CUMPROD][t] = sqrt(1.0 / cum - 1.0);
        out[RC_POSTERIOR_VARIANCE][t] = var;
        out[RC_POSTERIOR_LOG_VARIANCE_CLIPPED][t] = log(var > 1e-20 ? var : 1e-20);
        out[RC_POSTERIOR_MEAN_COEF1][t] = beta * sqrt(prev) / (1.0 - cum);
        out[RC_POSTERIOR_MEAN_COEF2][t] = (1.0 - prev) * sqrt(1.0 - beta) / (1.0 - cum);
        out[RC_SIGMAS][t] = sqrt((1.0 - cum) / cum);
    }
}

// ---------------------------------------------------------------------------------------------
// What goes in each tensor

typedef enum rc_kind {
    RC_GAUSS,        // N(0, std^2)
    RC_CONST,        // every value = value
    RC_INDEX,        // position_ids: index along the last dim
    RC_SCHEDULE,     // a row of the schedule table
} rc_kind;

typedef struct rc_tensor {
    rc_kind kind;
    float std_or_value;
    int schedule_row;
    int64_t last_dim;
} rc_tensor;

typedef struct rc_state {
    const rc_tensor *plan;
    const st_write_tensor *tensors;
    int n;
    uint64_t seed;
    double (*schedule)[RC_T];
    uint64_t bytes_total, bytes_done;
    int last_percent;
    bool tty;
    gint64 t0;
} rc_state;

static const char *rc_basename(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

static bool rc_ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static rc_tensor rc_plan_tensor(const st_write_tensor *t, int64_t n_elements)
{
    rc_tensor p = {.kind = RC_GAUSS, .std_or_value = 0.01f};
    const char *base = rc_basename(t->name);
    bool is_int = t->dtype == ST_I64 || t->dtype == ST_I32;
    if (strcmp(base, "position_ids") == 0) {
        p.kind = RC_INDEX;
        p.last_dim = t->n_dims ? t->shape[t->n_dims - 1] : 1;
    } else if (is_int) {
        p.kind = RC_CONST;
        p.std_or_value = 0.0f;
    } else if (strcmp(base, "logit_scale") == 0) {
        p.kind = RC_CONST;
        p.std_or_value = logf(1.0f / 0.07f);   // CLIP's initial temperature
    } else if (t->n_dims >= 2) {
        int64_t fan_in = 1;
        for (int d = 1; d < t->n_dims; d++)
            fan_in *= t->shape[d];
        p.std_or_value = fan_in > 0 ? (float)(1.0 / sqrt((double)fan_in)) : 1.0f;
    } else if (t->n_dims == 1 && (rc_ends_with(t->name, ".weight") || strcmp(base, "gamma") == 0)) {
        p.kind = RC_CONST;   // a norm scale
        p.std_or_value = 1.0f;
    } else if (n_elements == RC_T) {
        for (int k = 0; k < RC_N_SCHEDULE; k++) {
            if (strcmp(base, rc_schedule_names[k]) == 0) {
                p.kind = RC_SCHEDULE;
                p.schedule_row = k;
            }
        }
    }
    return p;
}

static void rc_progress(rc_state *s, int index)
{
    int percent = s->bytes_total ? (int)(100 * s->bytes_done / s->bytes_total) : 100;
    if (s->tty) {
        fprintf(stderr, "\r[%d/%d] %3d%%  %.0f / %.0f MB", index + 1, s->n, percent,
                (double)s->bytes_done / 1e6, (double)s->bytes_total / 1e6);
    } else if (percent / 10 > s->last_percent / 10 || index + 1 == s->n) {
        fprintf(stderr, "%3d%%  %.0f / %.0f MB  %.1f s\n", percent, (double)s->bytes_done / 1e6,
                (double)s->bytes_total / 1e6, (double)(g_get_monotonic_time() - s->t0) / 1e6);
    }
    s->last_percent = percent;
}

// st_write_streamed calls this for each tensor in file order, just before writing it.
static void rc_fill(void *user, int index, float *dst, int64_t n_elements)
{
    rc_state *s = user;
    const rc_tensor *p = &s->plan[index];
    switch (p->kind) {
    case RC_CONST:
        for (int64_t i = 0; i < n_elements; i++)
            dst[i] = p->std_or_value;
        break;
    case RC_INDEX:
        for (int64_t i = 0; i < n_elements; i++)
            dst[i] = (float)(p->last_dim > 0 ? i % p->last_dim : 0);
        break;
    case RC_SCHEDULE:
        for (int64_t i = 0; i < n_elements; i++)
            dst[i] = (float)s->schedule[p->schedule_row][i];
        break;
    case RC_GAUSS: {
        int64_t n_chunks = (n_elements + RC_CHUNK - 1) / RC_CHUNK;
        float std = p->std_or_value;
        #pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < n_chunks; c++) {
            uint64_t st = s->seed ^ ((uint64_t)index << 40) ^ (uint64_t)c;
            st = rc_splitmix64(&st);   // decorrelate neighbouring keys
            int64_t end = (c + 1) * RC_CHUNK < n_elements ? (c + 1) * RC_CHUNK : n_elements;
            for (int64_t i = c * RC_CHUNK; i < end; i++)
                dst[i] = std * rc_gauss(&st);
        }
        break;
    }
    }
    const st_write_tensor *t = &s->tensors[index];
    s->bytes_done += (uint64_t)n_elements * st_dtype_size(t->dtype);
    rc_progress(s, index);
}

// ---------------------------------------------------------------------------------------------
// Manifest

static bool rc_dtype_from_name(const char *name, st_dtype *out)
{
    for (int i = 0; i < ST_DTYPE_COUNT; i++) {
        if (g_ascii_strcasecmp(name, st_dtype_name((st_dtype)i)) == 0) {
            *out = (st_dtype)i;
            return true;
        }
    }
    return false;
}

static bool rc_is_float(st_dtype dt)
{
    return dt == ST_F32 || dt == ST_F16 || dt == ST_BF16 || dt == ST_F64;
}

// Parses the manifest into *tensors (names owned by *names). Returns the count, or -1 after
// printing an error naming the file and line.
static int rc_read_manifest(const char *path, bool force_dtype, st_dtype dtype,
                            st_write_tensor **tensors, GPtrArray *names)
{
    char *text = NULL;
    GError *gerr = NULL;
    if (!g_file_get_contents(path, &text, NULL, &gerr)) {
        fprintf(stderr, "sdg-random-checkpoint: error: %s\n", gerr->message);
        g_error_free(gerr);
        return -1;
    }
    char **lines = g_strsplit(text, "\n", -1);
    g_free(text);
    int cap = (int)g_strv_length(lines), n = 0;
    *tensors = g_new0(st_write_tensor, cap > 0 ? cap : 1);
    for (int l = 0; lines[l]; l++) {
        char *line = lines[l];
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r')
            line[--len] = '\0';
        if (!len || line[0] == '#')
            continue;
        char **f = g_strsplit(line, "\t", -1);
        int nf = (int)g_strv_length(f);
        st_write_tensor *t = &(*tensors)[n];
        const char *why = NULL;
        if (nf < 2 || nf > 3 || !*f[0])
            why = "expected name TAB dtype TAB shape";
        else if (!rc_dtype_from_name(f[1], &t->dtype))
            why = "unknown dtype";
        if (!why && nf == 3 && *f[2]) {
            char **dims = g_strsplit(f[2], ",", -1);
            int nd = (int)g_strv_length(dims);
            if (nd > ST_MAX_DIMS)
                why = "too many dimensions";
            for (int d = 0; !why && d < nd; d++) {
                gint64 v = 0;
                if (!g_ascii_string_to_signed(g_strstrip(dims[d]), 10, 0, (gint64)1 << 40, &v,
                                              NULL))
                    why = "bad shape";
                t->shape[d] = v;
            }
            t->n_dims = nd;
            g_strfreev(dims);
        }
        if (!why && rc_is_float(t->dtype))
            t->dtype = force_dtype ? dtype : (t->dtype == ST_F64 ? ST_F32 : t->dtype);
        else if (!why && t->dtype != ST_I64 && t->dtype != ST_I32)
            why = "dtype the writer cannot produce (only floats, I32, I64)";
        if (why) {
            fprintf(stderr, "sdg-random-checkpoint: error: %s line %d: %s\n", path, l + 1, why);
            g_strfreev(f);
            g_strfreev(lines);
            return -1;
        }
        char *name = g_strdup(f[0]);
        g_ptr_array_add(names, name);
        t->name = name;
        t->data = NULL;
        n++;
        g_strfreev(f);
    }
    g_strfreev(lines);
    if (n == 0) {
        fprintf(stderr, "sdg-random-checkpoint: error: %s lists no tensors\n", path);
        return -1;
    }
    return n;
}

// ---------------------------------------------------------------------------------------------

int main(int argc, char **argv)
{
    char *dtype_name = NULL, *seed_text = NULL;
    const GOptionEntry entries[] = {
        {"dtype", 'd', 0, G_OPTION_ARG_STRING, &dtype_name,
         "Store floating tensors as f16, f32 or bf16 (default: as in the manifest)", "TYPE"},
        {"seed", 's', 0, G_OPTION_ARG_STRING, &seed_text, "Seed of the weights (0)", "N"},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *oc = g_option_context_new("MANIFEST.tsv OUT.safetensors - write a checkpoint "
                                              "with random weights");
    g_option_context_add_main_entries(oc, entries, NULL);
    g_option_context_set_description(oc,
        "MANIFEST.tsv has one tensor per line: name TAB dtype TAB shape (comma-separated; empty\n"
        "= scalar), as in shared/reference/manifests. Example:\n"
        "  sdg-random-checkpoint sd15.tsv sd15-random-f16.safetensors --dtype f16\n");
    GError *gerr = NULL;
    int code = 0;
    st_dtype dtype = ST_F32;
    guint64 seed = 0;
    if (!g_option_context_parse(oc, &argc, &argv, &gerr)) {
        fprintf(stderr, "sdg-random-checkpoint: error: %s\n", gerr->message);
        g_error_free(gerr);
        code = 2;
    } else if (argc != 3) {
        fprintf(stderr, "sdg-random-checkpoint: error: expected MANIFEST.tsv OUT.safetensors\n");
        code = 2;
    } else if (dtype_name && (!rc_dtype_from_name(dtype_name, &dtype) || !rc_is_float(dtype) ||
                              dtype == ST_F64)) {
        fprintf(stderr, "sdg-random-checkpoint: error: --dtype must be f16, f32 or bf16\n");
        code = 2;
    } else if (seed_text && !g_ascii_string_to_unsigned(seed_text, 10, 0, G_MAXUINT64, &seed,
                                                        NULL)) {
        fprintf(stderr, "sdg-random-checkpoint: error: --seed must be a number\n");
        code = 2;
    }
    g_option_context_free(oc);
    if (code) {
        fprintf(stderr, "Try 'sdg-random-checkpoint --help' for more information.\n");
        g_free(dtype_name);
        g_free(seed_text);
        return code;
    }

    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    st_write_tensor *tensors = NULL;
    rc_tensor *plan = NULL;
    double (*schedule)[RC_T] = g_malloc(sizeof(double[RC_N_SCHEDULE][RC_T]));
    rc_schedule(schedule);
    int n = rc_read_manifest(argv[1], dtype_name != NULL, dtype, &tensors, names);
    code = 1;
    if (n > 0) {
        rc_state s = {
            .tensors = tensors, .n = n, .seed = seed, .schedule = schedule,
            .tty = isatty(STDERR_FILENO) != 0, .t0 = g_get_monotonic_time(),
        };
        plan = g_new(rc_tensor, n);
        for (int i = 0; i < n; i++) {
            int64_t ne = 1;
            for (int d = 0; d < tensors[i].n_dims; d++)
                ne *= tensors[i].shape[d];
            plan[i] = rc_plan_tensor(&tensors[i], ne);
            s.bytes_total += (uint64_t)ne * st_dtype_size(tensors[i].dtype);
        }
        s.plan = plan;
        char meta[160];
        snprintf(meta, sizeof meta,
                 "{\"format\":\"pt\",\"sdg.generator\":\"sdg-random-checkpoint\","
                 "\"sdg.seed\":\"%" G_GUINT64_FORMAT "\"}", seed);
        sdg_error err = {0};
        if (st_write_streamed(argv[2], tensors, n, meta, rc_fill, &s, &err) == SDG_OK) {
            if (s.tty)
                fputc('\n', stderr);
            fprintf(stderr, "wrote %s: %d tensors, %.1f MB in %.1f s\n", argv[2], n,
                    (double)s.bytes_total / 1e6, (double)(g_get_monotonic_time() - s.t0) / 1e6);
            code = 0;
        } else {
            if (s.tty)
                fputc('\n', stderr);
            fprintf(stderr, "sdg-random-checkpoint: error: %s\n", err.message);
        }
    }
    g_free(plan);
    g_free(tensors);
    g_free(schedule);
    g_ptr_array_free(names, TRUE);
    g_free(dtype_name);
    g_free(seed_text);
    return code;
}
