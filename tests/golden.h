/*
 * golden.h - reading the reference tensors of ../shared/reference/golden and comparing against
 * them, the way llm.c's test_gpt2.c does: print the first pairs and the max difference, then let
 * the test assert on the returned error.
 */
#ifndef SDG_TEST_GOLDEN_H
#define SDG_TEST_GOLDEN_H

#include <stddef.h>
#include <stdint.h>

#include "loader/safetensors.h"

// The reference folder ($SDG_REFERENCE_DIR, else the build's default). Never NULL.
const char *golden_reference_dir(void);
// Full path of a file under the reference folder (g_free it).
char *golden_path(const char *relpath);
// Opens a reference file, failing the test (g_error) when it is missing or malformed.
st_file *golden_open(const char *relpath);
// Reads a tensor as float32 / int32 (g_free the result); fails the test when it is missing.
// n (optional) receives the element count.
float *golden_f32(const st_file *f, const char *name, size_t *n);
int32_t *golden_i32(const st_file *f, const char *name, size_t *n);

// A reference picture [1,3,H,W] (raw decoder output in [-1,1]) as the engine presents pictures:
// interleaved RGB in [0,1], clamped (g_free it).
float *golden_picture(const st_file *rf, const char *name, int *w, int *h);

// Prompt `index` of a reference file's "prompts" metadata (a JSON list); g_free it.
char *golden_prompt(const st_file *f, int index);

// Checks the relative error max|got-ref| / max|ref| (max|ref| taken as 1 when it is 0, NaN
// counting as infinite) against tol. Prints the first five pairs, the error and the tolerance
// as TAP comments labelled with what; when the error is over, a "# FAIL what: ..." comment
// names the comparison before the test fails (tests/mutate.sh reports that line). Returns the
// error.
//
// Tolerances are per comparison, written next to each call with the error they were set from:
// about 5x the worst relative error measured (release -O3 and ASan -O1 builds; OpenBLAS core
// types Haswell, the default on the development machine, Zen, Sandybridge, Nehalem, Prescott;
// SkylakeX's AVX-512 kernels need a CPU it was not measured on: the 5x margin is for them too),
// rounded up to one significant digit (or to 1.5). The goldens are fp32 PyTorch runs that agree
// with float64 re-runs to 1-3e-6; this port lands at 0..8e-6, and the subtlest mistakes in
// tests/mutate.sh (a UNet norm eps off by 10x) take one comparison 1.8-11x past its tolerance,
// which is why the tolerances are not looser. When a deliberate change of arithmetic (a new
// kernel, another summation order) moves an error, measure again, restate the numbers, and run
// tests/mutate.sh to see that the tests still bite.
double golden_check(const char *what, const float *got, const float *ref, size_t n, double tol);

// Runs run(ex, args) the way the engine runs networks: a dry run measures the arena (again with
// args_no_buffers, if not NULL, whose data pointers are NULL: a dry run needs no buffers), then
// the real run in exactly that much memory must reach the same peak and release everything.
// Returns the peak in bytes.
typedef void (*golden_run_fn)(sdg_exec *ex, const void *args);
size_t golden_run_measured(golden_run_fn run, const void *args, const void *args_no_buffers,
                           int n_threads);

// A new temporary folder for a test's files (g_free the path), and its removal with everything
// in it; golden_tmpdir_remove frees dir.
char *golden_tmpdir(const char *tag);
void golden_tmpdir_remove(char *dir);
// Removes a file, or a folder with everything in it (symbolic links are removed, not followed).
void golden_remove_tree(const char *path);

// Writes the reference model relpath to path with its F32 tensors as F16 (integer tensors stay
// integers), streamed one tensor at a time; nan_in (or NULL) names a tensor whose element 3
// becomes NaN. Fails the test on error.
void golden_write_f16_copy(const char *relpath, const char *path, const char *nan_in);

// Writes path from parts of the reference model files srcs[0..n_srcs): tensor `name` of srcs[s]
// goes in as rename(s, name, user) (a g_malloc'd name; NULL leaves it out; a NULL rename keeps
// every name), in its own dtype (F16, I32, I64 kept, others as F32); then one scalar F32 tensor
// of value 1 per name in extras (NULL-terminated; may be NULL); metadata_json (or NULL) is the
// new __metadata__. For loader tests: mixed families, marker keys, metadata.
typedef char *(*golden_rename_fn)(int src, const char *name, void *user);
void golden_write_mixed(const char *path, const char *const *srcs, int n_srcs,
                        golden_rename_fn rename, void *user, const char *const *extras,
                        const char *metadata_json);

// Writes a header-only safetensors file at path (its folder made if needed) with the tensors of
// the manifest (a path under the reference folder, or an absolute one; name TAB dtype TAB
// shape lines), the data section a hole of the right
// size (no disk used): names and shapes for loaders and dry runs, data never to be read.
// rename (or NULL) gives each tensor's name (a g_malloc'd string; NULL leaves it out).
typedef char *(*golden_name_fn)(const char *name, void *user);
void golden_write_sparse(const char *manifest, const char *path, golden_name_fn rename,
                         void *user);

#endif
