/*
 * golden.c - see golden.h.
 */
#include "golden.h"

#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *golden_reference_dir(void)
{
    const char *env = g_getenv("SDG_REFERENCE_DIR");
    return env && *env ? env : SDG_REFERENCE_DIR_DEFAULT;
}

char *golden_path(const char *relpath)
{
    return g_build_filename(golden_reference_dir(), relpath, NULL);
}

st_file *golden_open(const char *relpath)
{
    char *path = golden_path(relpath);
    sdg_error err;
    st_file *f = st_open(path, &err);
    if (!f)
        g_error("cannot open reference file %s: %s", path, err.message);
    g_free(path);
    return f;
}

float *golden_f32(const st_file *f, const char *name, size_t *n)
{
    const st_tensor *t = st_find(f, name);
    if (!t)
        g_error("reference tensor %s missing from %s", name, st_path(f));
    float *data = g_new(float, t->n_elements ? t->n_elements : 1);
    sdg_error err;
    if (st_read_f32(f, t, data, &err) != SDG_OK)
        g_error("%s", err.message);
    if (n)
        *n = (size_t)t->n_elements;
    return data;
}

int32_t *golden_i32(const st_file *f, const char *name, size_t *n)
{
    const st_tensor *t = st_find(f, name);
    if (!t)
        g_error("reference tensor %s missing from %s", name, st_path(f));
    int32_t *data = g_new(int32_t, t->n_elements ? t->n_elements : 1);
    sdg_error err;
    if (st_read_i32(f, t, data, &err) != SDG_OK)
        g_error("%s", err.message);
    if (n)
        *n = (size_t)t->n_elements;
    return data;
}

double golden_check(const char *what, const float *got, const float *ref, size_t n, double tol)
{
    double max_ref = 0, max_diff = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double r = fabs((double)ref[i]);
        double d = fabs((double)got[i] - (double)ref[i]);
        if (r > max_ref)
            max_ref = r;
        if (d > max_diff || isnan(d)) {
            max_diff = isnan(d) ? INFINITY : d;
            at = i;
        }
    }
    double rel = max_diff / (max_ref > 0 ? max_ref : 1.0);
    for (size_t i = 0; i < n && i < 5; i++)
        printf("# %s[%zu]: got %.7g ref %.7g\n", what, i, got[i], ref[i]);
    printf("# %s: %zu values, max|ref| %.4g, max|diff| %.3g at %zu, relative %.3g, "
           "tolerance %.3g\n", what, n, max_ref, max_diff, at, rel, tol);
    if (!(rel <= tol))
        printf("# FAIL %s: relative error %.3g > tolerance %.3g\n", what, rel, tol);
    g_assert_cmpfloat(rel, <=, tol);
    return rel;
}

char *golden_prompt(const st_file *f, int index)
{
    // The metadata value is a JSON list of strings; only the escapes JSON allows can occur.
    const char *s = st_metadata(f, "prompts");
    if (!s)
        g_error("%s has no prompts metadata", st_path(f));
    int i = -1;
    while (*s) {
        if (*s++ != '"')
            continue;
        i++;
        GString *out = g_string_new(NULL);
        while (*s && *s != '"') {
            if (*s != '\\') {
                g_string_append_c(out, *s++);
                continue;
            }
            s++;
            switch (*s) {
            case 'n': g_string_append_c(out, '\n'); break;
            case 't': g_string_append_c(out, '\t'); break;
            case 'r': g_string_append_c(out, '\r'); break;
            case 'b': g_string_append_c(out, '\b'); break;
            case 'f': g_string_append_c(out, '\f'); break;
            case 'u': {
                char hex[5] = { 0 };
                memcpy(hex, s + 1, 4);
                gunichar c = (gunichar)g_ascii_strtoull(hex, NULL, 16);
                s += 4;
                if (c >= 0xD800 && c < 0xDC00 && s[1] == '\\' && s[2] == 'u') {
                    memcpy(hex, s + 3, 4);
                    gunichar lo = (gunichar)g_ascii_strtoull(hex, NULL, 16);
                    c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                    s += 6;
                }
                g_string_append_unichar(out, c);
                break;
            }
            default: g_string_append_c(out, *s); break;
            }
            if (*s)
                s++;
        }
        if (*s)
            s++;
        if (i == index)
            return g_string_free(out, FALSE);
        g_string_free(out, TRUE);
    }
    g_error("%s: no prompt %d", st_path(f), index);
}

size_t golden_run_measured(golden_run_fn run, const void *args, const void *args_no_buffers,
                           int n_threads)
{
    sdg_exec ex;
    sdg__exec_init(&ex, n_threads);
    ex.dry = true;
    run(&ex, args);
    size_t peak = ex.arena.peak;
    g_assert_cmpuint(ex.arena.used, ==, 0);
    if (args_no_buffers) {
        ex.arena.peak = 0;
        run(&ex, args_no_buffers);
        g_assert_cmpuint(ex.arena.peak, ==, peak);
    }
    ex.dry = false;
    sdg_error err;
    g_assert_cmpint(sdg__exec_reserve(&ex, peak, &err), ==, SDG_OK);
    ex.arena.used = 0;
    ex.arena.peak = 0;
    run(&ex, args);
    g_assert_cmpuint(ex.arena.peak, ==, peak);
    g_assert_cmpuint(ex.arena.used, ==, 0);
    sdg__exec_free(&ex);
    return peak;
}

char *golden_tmpdir(const char *tag)
{
    char *pattern = g_strdup_printf("sdg-%s-XXXXXX", tag);
    GError *error = NULL;
    char *dir = g_dir_make_tmp(pattern, &error);
    if (!dir)
        g_error("cannot make a temporary folder: %s", error->message);
    g_free(pattern);
    return dir;
}

void golden_remove_tree(const char *path)
{
    if (g_file_test(path, G_FILE_TEST_IS_DIR) && !g_file_test(path, G_FILE_TEST_IS_SYMLINK)) {
        GDir *d = g_dir_open(path, 0, NULL);
        const char *name;
        while (d && (name = g_dir_read_name(d))) {
            char *child = g_build_filename(path, name, NULL);
            golden_remove_tree(child);
            g_free(child);
        }
        if (d)
            g_dir_close(d);
        g_rmdir(path);
    } else {
        g_unlink(path);
    }
}

void golden_tmpdir_remove(char *dir)
{
    if (!dir)
        return;
    golden_remove_tree(dir);
    g_free(dir);
}

// ---------------------------------------------------------------------------------------------
// F16 copies of a golden model (golden_write_f16_copy)

typedef struct golden_f16_copy {
    st_file *src;
    const char *nan_in;
} golden_f16_copy;

static void golden_f16_fill(void *user, int index, float *dst, int64_t n)
{
    golden_f16_copy *c = user;
    const st_tensor *t = st_at(c->src, index);
    sdg_error err;
    g_assert_cmpint(t->n_elements, ==, n);
    g_assert_cmpint(st_read_f32(c->src, t, dst, &err), ==, SDG_OK);
    if (c->nan_in && strcmp(t->name, c->nan_in) == 0)
        dst[3] = NAN;
}

void golden_write_f16_copy(const char *relpath, const char *path, const char *nan_in)
{
    golden_f16_copy c = { golden_open(relpath), nan_in };
    int n = st_count(c.src);
    st_write_tensor *ts = g_new0(st_write_tensor, n);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_at(c.src, i);
        ts[i].name = t->name;
        ts[i].dtype = t->dtype == ST_F32 ? ST_F16 : t->dtype;
        ts[i].n_dims = t->n_dims;
        memcpy(ts[i].shape, t->shape, sizeof ts[i].shape);
    }
    sdg_error err;
    if (st_write_streamed(path, ts, n, NULL, golden_f16_fill, &c, &err) != SDG_OK)
        g_error("%s", err.message);
    g_free(ts);
    st_close(c.src);
}

// ---------------------------------------------------------------------------------------------
// Files made of parts of golden models (golden_write_mixed)

typedef struct golden_mixed_src {
    const st_file *f;
    const st_tensor *t;   // NULL: an extra scalar
} golden_mixed_src;

static void golden_mixed_fill(void *user, int index, float *dst, int64_t n)
{
    const golden_mixed_src *src = (const golden_mixed_src *)user + index;
    if (!src->t) {
        for (int64_t i = 0; i < n; i++)
            dst[i] = 1.0f;
        return;
    }
    sdg_error err;
    g_assert_cmpint(src->t->n_elements, ==, n);
    g_assert_cmpint(st_read_f32(src->f, src->t, dst, &err), ==, SDG_OK);
}

void golden_write_mixed(const char *path, const char *const *srcs, int n_srcs,
                        golden_rename_fn rename, void *user, const char *const *extras,
                        const char *metadata_json)
{
    st_file **files = g_new0(st_file *, n_srcs);
    GArray *ts = g_array_new(FALSE, TRUE, sizeof(st_write_tensor));
    GArray *from = g_array_new(FALSE, TRUE, sizeof(golden_mixed_src));
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    for (int s = 0; s < n_srcs; s++) {
        files[s] = golden_open(srcs[s]);
        for (int i = 0; i < st_count(files[s]); i++) {
            const st_tensor *t = st_at(files[s], i);
            char *name = rename ? rename(s, t->name, user) : g_strdup(t->name);
            if (!name)
                continue;
            g_ptr_array_add(names, name);
            st_write_tensor w = { .name = name, .n_dims = t->n_dims };
            w.dtype = t->dtype == ST_F16 || t->dtype == ST_I64 || t->dtype == ST_I32 ? t->dtype
                                                                                      : ST_F32;
            memcpy(w.shape, t->shape, sizeof w.shape);
            g_array_append_val(ts, w);
            golden_mixed_src m = { files[s], t };
            g_array_append_val(from, m);
        }
    }
    for (int i = 0; extras && extras[i]; i++) {
        st_write_tensor w = { .name = extras[i], .dtype = ST_F32, .n_dims = 0 };
        g_array_append_val(ts, w);
        golden_mixed_src m = { NULL, NULL };
        g_array_append_val(from, m);
    }
    sdg_error err;
    if (st_write_streamed(path, (st_write_tensor *)(void *)ts->data, (int)ts->len, metadata_json,
                          golden_mixed_fill, from->data, &err) != SDG_OK)
        g_error("%s", err.message);
    g_array_free(ts, TRUE);
    g_array_free(from, TRUE);
    g_ptr_array_free(names, TRUE);
    for (int s = 0; s < n_srcs; s++)
        st_close(files[s]);
    g_free(files);
}

// ---------------------------------------------------------------------------------------------
// Sparse files of the manifests

void golden_write_sparse(const char *manifest, const char *path, golden_name_fn rename,
                         void *user)
{
    char *mpath = g_path_is_absolute(manifest) ? g_strdup(manifest) : golden_path(manifest);
    char *text = NULL;
    g_assert_true(g_file_get_contents(mpath, &text, NULL, NULL));
    GString *json = g_string_new("{");
    uint64_t off = 0;
    char **lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        char **f = g_strsplit(*l, "\t", -1);
        if (g_strv_length(f) == 3) {
            uint64_t count = 1;
            char **dims = g_strsplit(f[2], ",", -1);
            for (char **d = dims; *d && **d; d++)
                count *= g_ascii_strtoull(*d, NULL, 10);
            uint64_t es = strcmp(f[1], "I64") == 0 ? 8 : 4;
            char *name = rename ? rename(f[0], user) : g_strdup(f[0]);
            if (!name) {
                g_strfreev(dims);
                g_strfreev(f);
                continue;
            }
            g_string_append_printf(json, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],"
                                   "\"data_offsets\":[%" G_GUINT64_FORMAT ",%" G_GUINT64_FORMAT
                                   "]}", json->len > 1 ? "," : "", name, f[1], f[2], off,
                                   off + es * count);
            g_free(name);
            off += es * count;
            g_strfreev(dims);
        }
        g_strfreev(f);
    }
    g_string_append(json, "}");
    while (json->len % 8)
        g_string_append_c(json, ' ');
    char *dir = g_path_get_dirname(path);
    g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
    FILE *fp = fopen(path, "wb");
    g_assert_nonnull(fp);
    uint64_t hl = json->len;
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(hl >> (8 * i));
    g_assert_cmpuint(fwrite(le, 1, 8, fp), ==, 8);
    g_assert_cmpuint(fwrite(json->str, 1, json->len, fp), ==, json->len);
    g_assert_cmpint(fflush(fp), ==, 0);
    g_assert_cmpint(ftruncate(fileno(fp), (off_t)(8 + hl + off)), ==, 0);
    fclose(fp);
    g_free(dir);
    g_strfreev(lines);
    g_string_free(json, TRUE);
    g_free(text);
    g_free(mpath);
}

float *golden_picture(const st_file *rf, const char *name, int *w, int *h)
{
    const st_tensor *t = st_find(rf, name);
    g_assert_nonnull(t);
    *h = (int)t->shape[2];
    *w = (int)t->shape[3];
    float *planar = golden_f32(rf, name, NULL);
    size_t hw = (size_t)*w * *h;
    float *out = g_new(float, 3 * hw);
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < 3; c++) {
            float v = (planar[c * hw + i] + 1.0f) * 0.5f;
            out[i * 3 + c] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        }
    g_free(planar);
    return out;
}
