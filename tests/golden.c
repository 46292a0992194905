/*
 * golden.c - see golden.h.
 */
#include "golden.h"

#include <glib.h>
#include <math.h>
#include <stdio.h>

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

double golden_rel_error(const char *what, const float *got, const float *ref, size_t n)
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
    printf("# %s: %zu values, max|ref| %.4g, max|diff| %.3g at %zu, relative %.3g\n", what, n,
           max_ref, max_diff, at, rel);
    return rel;
}
