/*
 * fuzz.c - helpers of the libFuzzer harnesses (see fuzz.h).
 */
#include "fuzz.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int fuzz_memfile(char path[64], const void *const *parts, const size_t *sizes, int n_parts)
{
    int fd = memfd_create("sdg-fuzz", MFD_CLOEXEC);
    if (fd < 0) {
        perror("memfd_create");
        abort();
    }
    for (int i = 0; i < n_parts; i++) {
        const uint8_t *p = parts[i];
        size_t left = sizes[i];
        while (left > 0) {
            ssize_t w = write(fd, p, left);
            if (w <= 0) {
                perror("write");
                abort();
            }
            p += w;
            left -= (size_t)w;
        }
    }
    snprintf(path, 64, "/proc/self/fd/%d", fd);
    return fd;
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
