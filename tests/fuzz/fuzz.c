/*
 * fuzz.c - helpers of the libFuzzer harnesses (see fuzz.h).
 */
#include "fuzz.h"

#include <glib.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static void fuzz_pwrite(int fd, const uint8_t *p, size_t n, size_t at)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)at);
        if (w <= 0) {
            perror("pwrite");
            abort();
        }
        p += w;
        n -= (size_t)w;
        at += (size_t)w;
    }
}

#define FUZZ_MAX_PARTS 4

void fuzz_memfile(char path[64], const void *const *parts, const size_t *sizes, int n_parts,
                  int n_changing)
{
    static int fd = -1;
    static struct { const void *p; size_t size, at; } kept[FUZZ_MAX_PARTS];
    if (fd < 0 && (fd = memfd_create("sdg-fuzz", MFD_CLOEXEC)) < 0) {
        perror("memfd_create");
        abort();
    }
    if (n_parts > FUZZ_MAX_PARTS)
        abort();
    size_t at = 0;
    for (int i = 0; i < n_parts; i++) {
        bool same = i >= n_changing && kept[i].p == parts[i] && kept[i].size == sizes[i] &&
                    kept[i].at == at;
        if (!same)
            fuzz_pwrite(fd, parts[i], sizes[i], at);
        kept[i].p = i >= n_changing ? parts[i] : NULL;
        kept[i].size = sizes[i];
        kept[i].at = at;
        at += sizes[i];
    }
    for (int i = n_parts; i < FUZZ_MAX_PARTS; i++)
        kept[i].p = NULL;
    if (ftruncate(fd, (off_t)at) != 0) {
        perror("ftruncate");
        abort();
    }
    snprintf(path, 64, "/proc/self/fd/%d", fd);
}

const char *fuzz_reference_dir(void)
{
    const char *env = g_getenv("SDG_REFERENCE_DIR");
    return env && *env ? env : SDG_REFERENCE_DIR_DEFAULT;
}

const char *fuzz_models_dir(void)
{
    return SDG_SOURCE_MODELS_DIR;
}

uint8_t *fuzz_read_file(const char *path, size_t *size)
{
    gchar *data = NULL;
    gsize n = 0;
    GError *e = NULL;
    if (!g_file_get_contents(path, &data, &n, &e)) {
        fprintf(stderr, "fuzz: %s\n", e->message);
        abort();
    }
    *size = n;
    return (uint8_t *)data;
}
