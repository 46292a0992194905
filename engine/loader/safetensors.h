/*
 * safetensors.h - phase one of loading: index a .safetensors file.
 *
 * st_open reads the header with pread, parses and validates it (length against the file size,
 * well-formed JSON, known dtypes, byte size = dtype x shape, no overlaps, and data that covers
 * the rest of the file exactly: nothing past the end, no gaps, nothing after the last tensor,
 * as the reference reader requires) and builds an index {name, dtype, shape, offset}. It reads no
 * tensor data. Non-regular files (folders, FIFOs, devices) are refused without blocking. Phase
 * two (weights.h) binds the index to a model's tensors.
 *
 * Data is read in two ways. Conversions (st_read_f32, st_read_i32) read through a file
 * descriptor kept open, so a file that shrinks while open gives an error, not a signal. st_data
 * points into a read-only mapping of the file, for F32 tensors used in place: if the file is
 * truncated while such a pointer is in use, the kernel raises SIGBUS, which no library can turn
 * into an error without a process-wide signal handler; st_check_mapped narrows that window.
 * Replacing the file (rename, delete) is safe: the open file and the mapping keep the old one.
 *
 * Format: 8-byte little-endian header length N, N bytes of UTF-8 JSON {name: {dtype, shape,
 * data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data; offsets are relative
 * to the start of the data. ref: https://github.com/huggingface/safetensors (README, "Format").
 */
#ifndef SDG_SAFETENSORS_H
#define SDG_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common.h"

typedef enum st_dtype {
    ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL,
    ST_DTYPE_COUNT
} st_dtype;

#define ST_MAX_DIMS 8

typedef struct st_tensor {
    char *name;               // owned by the st_file
    st_dtype dtype;
    int n_dims;               // 0 for a scalar
    int64_t shape[ST_MAX_DIMS];
    int64_t n_elements;
    uint64_t offset;          // bytes, from the start of the data section
    uint64_t size;            // bytes
    int part;                 // st_compose: the file of the parts it lives in (else 0)
} st_tensor;

typedef struct st_file st_file;

// Opens and indexes path. Returns NULL and fills err (naming the file and the tensor) on failure.
st_file *st_open(const char *path, sdg_error *err);
void st_close(st_file *f);

// A view of several opened files as one (a diffusers folder: unet/, vae/, text_encoder/ ...):
// every tensor of parts[i] for which rename(i, name, shape, user) returns a new name (malloc'd;
// NULL leaves the tensor out) appears under that name, read from its own file. rename may
// change the shape in place to another of the same element count (a [C,C] matrix seen as a
// [C,C,1,1] kernel). The view takes the parts (closed with it, also on failure); path names it
// in messages. Two tensors renamed alike are an SDG_ERR_FORMAT. No metadata.
typedef char *(*st_rename_fn)(int part, const char *name, int n_dims, int64_t *shape,
                              int *new_n_dims, void *user);
st_file *st_compose(const char *path, st_file **parts, int n_parts, st_rename_fn rename,
                    void *user, sdg_error *err);

const char *st_path(const st_file *f);
int st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, int i);
// Returns NULL when the file has no tensor of that name.
const st_tensor *st_find(const st_file *f, const char *name);
// Returns the __metadata__ value for key, or NULL. Owned by the st_file.
const char *st_metadata(const st_file *f, const char *key);
// Pointer to a tensor's bytes inside the mapping (valid until st_close), or NULL when the file
// could not be mapped. Reading it raises SIGBUS if the file has been truncated since st_open
// (see the top of this file).
const void *st_data(const st_file *f, const st_tensor *t);
// Whether st_data(f, t) is a multiple of align (a power of two up to the page size), known
// without the mapping.
bool st_data_aligned(const st_file *f, const st_tensor *t, size_t align);
// SDG_OK when st_data can be read: the file is mapped and still at least as long as when it was
// opened. Else SDG_ERR_IO naming the file (and saying it shrank, or why it could not be mapped).
sdg_status st_check_mapped(const st_file *f, sdg_error *err);

const char *st_dtype_name(st_dtype dt);   // "F32", "F16", ...
size_t st_dtype_size(st_dtype dt);

// Converts t's data to float32 into dst (t->n_elements floats). Integer and float dtypes are
// accepted; BOOL is not. Returns SDG_OK or an error naming the tensor (SDG_ERR_IO when the file
// ends early: it shrank after st_open).
sdg_status st_read_f32(const st_file *f, const st_tensor *t, float *dst, sdg_error *err);
// The same, also counting the NaN and infinite values written to dst into *n_nonfinite (while
// each chunk is still in cache: nearly free).
sdg_status st_read_f32_count(const st_file *f, const st_tensor *t, float *dst,
                             int64_t *n_nonfinite, sdg_error *err);
// The number of NaN and infinite values among x[0..n-1], stored as dt (F32, F16 or BF16).
int64_t st_count_nonfinite(const void *x, size_t n, st_dtype dt);
// Copies elements [first, first + count) of t as stored (no conversion; t is F32, F16 or BF16)
// into dst, adding their NaN and infinite values to *n_nonfinite; errors as st_read_f32_count.
sdg_status st_read_raw_count(const st_file *f, const st_tensor *t, int64_t first, int64_t count,
                             void *dst, int64_t *n_nonfinite, sdg_error *err);
// Converts an integer tensor to int32 into dst (fails on values outside int32).
sdg_status st_read_i32(const st_file *f, const st_tensor *t, int32_t *dst, sdg_error *err);

// Writes tensors to a new .safetensors file (F32 data, or I32 where i32 data is given).
typedef struct st_write_tensor {
    const char *name;
    st_dtype dtype;           // ST_F32, ST_F16 (data converted from float) or ST_I32
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    const void *data;         // float* for F32/F16, int32_t* for I32
} st_write_tensor;
sdg_status st_write(const char *path, const st_write_tensor *tensors, int n,
                    const char *metadata_json, sdg_error *err);

// Like st_write, but tensors whose data is NULL are produced by fill(user, index, dst, n_elements)
// into a float buffer of that one tensor just before it is written (converted to the tensor's
// dtype; integer dtypes round to nearest), so a multi-GB file is written holding only one tensor
// in memory. Output dtypes: F32, F16, BF16 (from float data), I32 (int32_t data), I64 (int64_t
// data). metadata_json, if not NULL, must be a JSON object of string values. On failure the
// partly written file is removed.
typedef void (*st_fill_fn)(void *user, int index, float *dst, int64_t n_elements);
sdg_status st_write_streamed(const char *path, const st_write_tensor *tensors, int n,
                             const char *metadata_json, st_fill_fn fill, void *user,
                             sdg_error *err);

// Half-precision conversions (round to nearest even), shared with every other room.
float sdg__f16_to_f32(uint16_t h);
uint16_t sdg__f32_to_f16(float f);
float sdg__bf16_to_f32(uint16_t h);
uint16_t sdg__f32_to_bf16(float f);   // NaN stays a quiet NaN

#endif // SDG_SAFETENSORS_H
