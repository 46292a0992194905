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
#include <stdio.h>
#include <stdlib.h>

// A harness's own assertion that the parser's answer is consistent: a failure is a finding.
#define CHECK(x) \
    do { if (!(x)) { fprintf(stderr, "check failed: %s\n", #x); abort(); } } while (0)

// Makes the harness's in-memory file hold the given parts, one after the other, and writes its
// path ("/proc/self/fd/N") into path. One file is reused for the whole run (do not close it):
// parts from index n_changing on are taken as immutable, and are not written again while they
// stay at the same place in the file (the tiny model's 20 MB data section is then written once,
// not per input). Aborts when the kernel refuses (a harness bug, not a finding).
void fuzz_memfile(char path[64], const void *const *parts, const size_t *sizes, int n_parts,
                  int n_changing);

// The reference data folder ($SDG_REFERENCE_DIR, else the build's), and the project's models/
// folder (the bundled default model's small vocab.json + merges.txt).
const char *fuzz_reference_dir(void);
const char *fuzz_models_dir(void);

// Reads a whole file (g_free it); aborts when it cannot.
uint8_t *fuzz_read_file(const char *path, size_t *size);

#endif
