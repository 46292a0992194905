/*
 * weights.h - phase two of loading: bind checkpoint tensors to a model's weight fields.
 *
 * A model's loader asks for each tensor by name and expected shape; the binder finds it in the
 * index, checks the shape, and returns float32 data: a pointer straight into the mapping for
 * aligned F32 tensors (no copy), or a converted copy (F16, BF16) owned by the sdg_weights.
 * Errors are sticky: after the first failure every call returns NULL and the loader checks
 * sdg_wb_status() once at the end. Weights are therefore never held twice.
 *
 * Every bound tensor is checked, and only those (a checkpoint may carry tensors the engine does
 * not use): the total of the bound weights as float32 must fit in the machine's physical memory
 * (checked before anything is allocated or read: a damaged header describing huge tensors is
 * refused at once), and their values must be finite (a NaN or infinite weight is an
 * SDG_ERR_FORMAT naming the first such tensor and how many values it has: it would turn every
 * picture black). The scan runs while converting copies and over the mapping for F32 tensors.
 *
 * Reading happens in sdg_wb_get, unless sdg_wb_defer was called: then sdg_wb_get checks names
 * and shapes and returns where the data will be, reading nothing, and sdg_wb_read reads all the
 * bound tensors in one pass in file order. A loader binding several networks defers, so that no
 * data is read before every shape is known to fit.
 *
 * Names are printf formats so loaders can write "%sinput_blocks.%d.0.in_layers.0.weight".
 */
#ifndef SDG_WEIGHTS_H
#define SDG_WEIGHTS_H

#include "safetensors.h"

typedef struct sdg_weights sdg_weights;

// The binder keeps f open; the caller still owns f and must keep it open while the weights live
// (F32 tensors point into its mapping).
sdg_weights *sdg_wb_new(const st_file *f, sdg_error *err);
void sdg_wb_free(sdg_weights *wb);

// Returns the tensor's float32 data, or NULL (and records the error) when it is missing, its
// shape differs from shape[0..n_dims-1], the weights bound so far exceed the machine's memory,
// its copy cannot be allocated, or (unless reads are deferred) it cannot be read or holds NaN or
// infinite values. With sdg_wb_defer the data is valid only after sdg_wb_read succeeds; with
// sdg_wb_set_shapes_only the pointer must never be read.
const float *sdg_wb_get(sdg_weights *wb, int n_dims, const int64_t *shape, const char *fmt, ...)
    SDG_PRINTF(4, 5);

// The same for a matrix or convolution kernel that the matrix products read (gemm.h), packed
// into panels of `panel` rows (SDG_PANEL_A or SDG_PANEL_B: see common.h) in its own storage type
// (F32, F16 and BF16 kept; other types become float32), a copy owned here. With panel 0 it is
// not packed: F16/BF16 and F32 data are used in place when aligned (an embedding table), else
// copied in their type. data is NULL on failure.
sdg_weight sdg_wb_get_weight(sdg_weights *wb, int panel, int n_dims, const int64_t *shape,
                             const char *fmt, ...) SDG_PRINTF(5, 6);

// Shape shorthands.
#define SDG_WB1(wb, a, ...) sdg_wb_get((wb), 1, (const int64_t[]){(a)}, __VA_ARGS__)
#define SDG_WB2(wb, a, b, ...) sdg_wb_get((wb), 2, (const int64_t[]){(a), (b)}, __VA_ARGS__)
#define SDG_WB4(wb, a, b, c, d, ...) \
    sdg_wb_get((wb), 4, (const int64_t[]){(a), (b), (c), (d)}, __VA_ARGS__)
// Weights: a convolution's kernel (left operand), a linear layer's (right), an embedding table.
#define SDG_WCONV(wb, a, b, c, d, ...) \
    sdg_wb_get_weight((wb), SDG_PANEL_A, 4, (const int64_t[]){(a), (b), (c), (d)}, __VA_ARGS__)
#define SDG_WLIN(wb, a, b, ...) \
    sdg_wb_get_weight((wb), SDG_PANEL_B, 2, (const int64_t[]){(a), (b)}, __VA_ARGS__)
// A matrix as stored, not packed: in place from the mapping where aligned (an embedding table,
// and the text encoder's layers, whose pages sdg_wb_drop_pages lets go between prompts).
#define SDG_WPLAIN(wb, a, b, ...) sdg_wb_get_weight((wb), 0, 2, (const int64_t[]){(a), (b)}, __VA_ARGS__)

// From now on sdg_wb_get reads no data: the pointers it returns are valid only after
// sdg_wb_read (copies are allocated but not filled).
void sdg_wb_defer(sdg_weights *wb);
// Reads every tensor bound and not yet read (converts copies, scans mapped F32 data), checks the
// values are finite and that the file has not shrunk; returns sdg_wb_status(wb, err).
sdg_status sdg_wb_read(sdg_weights *wb, sdg_error *err);

// Lets the system take back the pages of the tensors whose names start with prefix that are
// bound in place from the mapping (madvise MADV_DONTNEED): they leave the process's resident
// memory and come back from the page cache, or the file, when next read. The data does not
// change, so any thread may call it at any time, even while another reads those tensors. For a
// network that runs once per picture (the text encoder) and would otherwise stay resident
// beside the ones that run after it.
void sdg_wb_drop_pages(const sdg_weights *wb, const char *prefix);

// A binder that shares base's bindings except for the tensors patched[] marks (one flag per
// tensor of base's file): those are bound as copies of their own (never in place), read as
// float32 row-major [rows, cols] (rows = shape[0]), handed to fn to change (it may be called
// on several threads at once, for different tensors; it returns false with err set to fail the
// read), then stored in the type and packing the loader asks for, as base would hold them. For
// LoRA: networks bound again on the overlay read the patched copies and share everything else,
// and base is never written. base must outlive the overlay and stay unchanged (no rebinding);
// the overlay defers reads (sdg_wb_read). sdg_wb_owned_bytes counts the patched copies only.
typedef bool (*sdg_wb_patch_fn)(void *user, int tensor, float *data, int64_t rows, int64_t cols,
                                sdg_error *err);
sdg_weights *sdg_wb_new_overlay(const sdg_weights *base, const bool *patched, sdg_wb_patch_fn fn,
                                void *user, sdg_error *err);

// Looks a tensor up without binding it (for reading the architecture from shapes); NULL if absent.
const st_tensor *sdg_wb_find(sdg_weights *wb, const char *fmt, ...) SDG_PRINTF(2, 3);

// Records a failure found by the model's own checks (e.g. an inconsistent architecture).
void sdg_wb_set_error(sdg_weights *wb, sdg_status status, const char *fmt, ...) SDG_PRINTF(3, 4);

// SDG_OK, or the first error (copied into err).
sdg_status sdg_wb_status(const sdg_weights *wb, sdg_error *err);

// Bytes of converted copies held (mapped F32 tensors are not counted). With shapes only: the
// bytes the copies would take.
size_t sdg_wb_owned_bytes(const sdg_weights *wb);

// Bytes of the aligned F32 tensors bound in place from the mapping, each counted once.
size_t sdg_wb_mapped_bytes(const sdg_weights *wb);

// Makes one block of `bytes` that later converted copies are carved from (64-byte aligned), so
// that they take what they hold and no more; copies that do not fit get blocks of their own.
// The loader sizes it with a shapes-only pass: sdg_wb_owned_bytes() + 64 per tensor.
sdg_status sdg_wb_reserve(sdg_weights *wb, size_t bytes, sdg_error *err);
// Bytes of the reserved block in use (tests: every copy of a loaded model lives in it).
size_t sdg_wb_slab_used(const sdg_weights *wb);

// Shapes only (set before the first sdg_wb_get): tensors are found, checked and counted as
// usual but nothing is converted; sdg_wb_get returns a pointer into the mapping that must never
// be read as floats. For sizing a model (memory estimates) without loading its weights.
void sdg_wb_set_shapes_only(sdg_weights *wb, bool on);

#endif // SDG_WEIGHTS_H
