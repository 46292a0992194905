/*
 * fuzz.h - what the libFuzzer harnesses share (tests/fuzz/README.md says how to build and run them).
 *
 * Every parser of the engine reads files by path (st_open maps them), so a harness writes its input
 * to an anonymous in-memory file (memfd) and hands the engine its /proc/self/fd path: the real
 * open/fstat/mmap path is fuzzed, not a test-only entry point.
 */
#ifndef SDG_FUZZ_H
#define SDG_FUZZ_H

#include <stddef.h>
#include <stdint.h>

// An in-memory file holding the given parts, one after the other. Returns its fd (close() it)
// and writes its path ("/proc/self/fd/N") into path. Aborts when the kernel refuses (a harness
// bug, not a finding).
int fuzz_memfile(char path[64], const void *const *parts, const size_t *sizes, int n_parts);

// The reference data folder ($SDG_REFERENCE_DIR, else the build's), and the project's models/
// folder (the bundled default model's small vocab.json + merges.txt).
const char *fuzz_reference_dir(void);
const char *fuzz_models_dir(void);

// Reads a whole file (g_free it); aborts when it cannot.
uint8_t *fuzz_read_file(const char *path, size_t *size);

#endif
