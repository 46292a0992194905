/*
 * fuzz_safetensors.c - libFuzzer harness for the safetensors index (loader/safetensors.c): any
 * bytes as a file, opened with st_open; when it opens, every tensor is read in every way the
 * engine reads tensors (st_read_f32 for number types, st_read_i32 for integers, sdg_tensor_read
 * for the CLI's --noise-in) into buffers of exactly n_elements, and every name and metadata key is
 * looked up. A finding is a crash, a sanitizer report, a leak or an index that contradicts itself.
 * Seeds: the golden files' headers over short data sections (tests/fuzz/make-corpus.py).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "loader/safetensors.h"

static void read_every_way(const st_file *f, const char *path, const st_tensor *t)
{
    CHECK(st_find(f, t->name) == t);
    CHECK(t->offset + t->size >= t->offset);
    CHECK(t->size == (uint64_t)t->n_elements * st_dtype_size(t->dtype));
    size_t n = (size_t)t->n_elements;
    sdg_error err;
    float *f32 = malloc(n ? n * sizeof(float) : 1);
    int32_t *i32 = malloc(n ? n * sizeof(int32_t) : 1);
    CHECK(f32 && i32);
    sdg_status st = st_read_f32(f, t, f32, &err);
    CHECK(st == SDG_OK || t->dtype == ST_BOOL);
    st = st_read_i32(f, t, i32, &err);
    (void)st;
    free(f32);
    free(i32);
    float *data = NULL;
    if (sdg_tensor_read(path, t->name, t->n_dims, t->shape, &data, &err) == SDG_OK)
        CHECK(data != NULL);
    free(data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    const void *parts[1] = { data };
    fuzz_memfile(path, parts, &size, 1, 1);
    sdg_error err;
    st_file *f = st_open(path, &err);
    if (!f) {
        CHECK(err.status != SDG_OK && err.message[0]);
    } else {
        for (int i = 0; i < st_count(f); i++)
            read_every_way(f, path, st_at(f, i));
        CHECK(st_at(f, st_count(f)) == NULL && st_find(f, "\x01 no such tensor") == NULL);
        st_metadata(f, "sdg.native_size");
        st_metadata(f, "sdg.scale_factor");
        st_close(f);
    }
    return 0;
}
