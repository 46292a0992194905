/*
 * safetensors.c - phase one of loading: map a .safetensors file, parse and validate its JSON
 * header with a small strict parser, and index the tensors. Also the dtype conversions every
 * other room uses (f16/bf16 <-> f32) and a streaming writer for tests and tools.
 *
 * Not here: binding tensors to models (weights.c), checkpoint-name remapping, any general JSON
 * support (the header is a flat object of objects; anything else is rejected).
 *
 * Assumes a little-endian host (the format is little-endian and the data is used in place).
 * ref: https://github.com/huggingface/safetensors (README "Format"; the Rust crate's validation:
 * header length limit 100 MB, offsets inside the data, byte size = dtype size x elements).
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#include <immintrin.h>
#define ST_HAVE_F16C 1
#endif

// The Rust reference refuses headers above 100 MB; a real SD checkpoint's header is ~100 KB.
#define ST_MAX_HEADER ((uint64_t)100000000)

struct st_file {
    char *path;               // owned
    int fd;                   // owned, open for the file's life: conversions read through it
    const uint8_t *map;       // owned mapping of the whole file (NULL if mmap failed)
    int map_errno;            // why mmap failed
    size_t map_size;          // the file's size at st_open
    const uint8_t *data;      // borrowed: map + data_start
    uint64_t data_start;      // 8 + header length: file offset of the data section
    uint64_t data_size;
    st_tensor *tensors;       // owned, header order
    int n;
    int *sorted;              // owned, tensor indices sorted by name (for st_find)
    char **meta;              // owned, key0, value0, key1, value1, ...
    int n_meta;
    st_file **parts;          // owned, st_compose's files (then fd is -1 and map NULL; each
    int n_parts;              // tensor's `part` says where its bytes are)
};

// The file holding t's bytes: f itself, or the part of a composed view.
static const st_file *st_home(const st_file *f, const st_tensor *t)
{
    return f->n_parts ? f->parts[t->part] : f;
}

// ---------------------------------------------------------------------------------------------
// dtypes

static const char *const st_dtype_names[ST_DTYPE_COUNT] = {
    "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL",
};
static const size_t st_dtype_sizes[ST_DTYPE_COUNT] = { 4, 2, 2, 8, 8, 4, 2, 1, 1, 1 };

const char *st_dtype_name(st_dtype dt)
{
    return (unsigned)dt < ST_DTYPE_COUNT ? st_dtype_names[dt] : "?";
}

size_t st_dtype_size(st_dtype dt)
{
    return (unsigned)dt < ST_DTYPE_COUNT ? st_dtype_sizes[dt] : 0;
}

static int st_dtype_parse(const char *s)
{
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (strcmp(s, st_dtype_names[i]) == 0)
            return i;
    return -1;
}

// ---------------------------------------------------------------------------------------------
// Half-precision conversions. Bit manipulation so they are exact for every input (subnormals,
// infinities, NaN) on any compiler and FPU mode.

static inline float st_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t st_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

float sdg__f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t em = h & 0x7fffu;
    uint32_t bits;
    if (em >= 0x7c00u)          // inf / nan: keep the payload
        bits = 0x7f800000u | ((em & 0x3ffu) << 13);
    else if (em >= 0x0400u)     // normal: rebias the exponent 15 -> 127
        bits = (em << 13) + ((uint32_t)(127 - 15) << 23);
    else                        // zero / subnormal: em * 2^-24 is exact in float
        bits = st_f32_bits((float)em * 0x1p-24f);
    return st_bits_f32(sign | bits);
}

uint16_t sdg__f32_to_f16(float f)
{
    uint32_t x = st_f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) {     // inf, or nan kept quiet with the top of its payload
        if (x == 0x7f800000u)
            return sign | 0x7c00u;
        return sign | 0x7e00u | (uint16_t)((x >> 13) & 0x3ffu);
    }
    if (x >= 0x477ff000u)       // >= 65520, the midpoint above 65504: rounds (to even) to inf
        return sign | 0x7c00u;
    if (x < 0x38800000u) {      // below 2^-14: subnormal half, unit 2^-24
        if (x <= 0x33000000u)   // <= 2^-25 (the midpoint to 2^-24 rounds to even, i.e. 0)
            return sign;
        uint32_t e = x >> 23;
        uint32_t m = (x & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; // value = m * 2^(e-150) = (m >> shift) units of 2^-24
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++;                // may carry into 0x400, the smallest normal: still correct
        return sign | (uint16_t)r;
    }
    uint32_t r = x - ((uint32_t)(127 - 15) << 23);
    r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13; // round to nearest even; a carry bumps the exponent
    return sign | (uint16_t)r;
}

float sdg__bf16_to_f32(uint16_t h)
{
    return st_bits_f32((uint32_t)h << 16);
}

uint16_t sdg__f32_to_bf16(float f)
{
    uint32_t x = st_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u); // nan stays nan (quiet)
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// Bulk conversions over aligned local buffers; simple loops the compiler can vectorise.
#ifdef ST_HAVE_F16C
__attribute__((target("avx,f16c")))
static void st_f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = sdg__f16_to_f32(src[i]);
}
#endif

// Portable bulk path: the same conversion as sdg__f16_to_f32 written as selects, so it
// vectorises. The subnormal case renormalises by subtracting 2^-14 (exact in float).
static void st_f16_to_f32_portable(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t h = src[i];
        uint32_t em = h & 0x7fffu;
        uint32_t o = (em << 13) + (112u << 23);
        uint32_t infnan = o + (112u << 23);
        uint32_t sub = st_f32_bits(st_bits_f32(o + (1u << 23)) - st_bits_f32(113u << 23));
        o = em >= 0x7c00u ? infnan : o;
        o = em < 0x0400u ? sub : o;
        dst[i] = st_bits_f32(o | ((h & 0x8000u) << 16));
    }
}

// Whether to use F16C; SDG_NO_F16C=1 forces the portable path (so tests cover it on x86).
static bool st_use_f16c(void)
{
#ifdef ST_HAVE_F16C
    bool have_f16c = sdg__cpu_features() & SDG_CPU_F16C;
    const char *off = getenv("SDG_NO_F16C");
    return have_f16c && !(off && *off && strcmp(off, "0") != 0);
#else
    return false;
#endif
}

static void st_f16_to_f32_n(const uint16_t *src, float *dst, size_t n, bool f16c)
{
#ifdef ST_HAVE_F16C
    if (f16c) {
        st_f16_to_f32_f16c(src, dst, n);
        return;
    }
#endif
    (void)f16c;
    st_f16_to_f32_portable(src, dst, n);
}

static void st_bf16_to_f32_n(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = st_bits_f32((uint32_t)src[i] << 16);
}

// ---------------------------------------------------------------------------------------------
// Header parser. Works on the N header bytes (already checked to be UTF-8 without NUL bytes).

typedef struct st_parser {
    const char *base, *p, *end;
    const char *path;
    sdg_error *err;
    bool failed;
} st_parser;

SDG_PRINTF(2, 3)
static void st_perr(st_parser *ps, const char *fmt, ...)
{
    if (ps->failed)
        return;
    ps->failed = true;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sdg__fail(ps->err, SDG_ERR_FORMAT, "%s: invalid safetensors header at byte %td: %s", ps->path,
              ps->p - ps->base, msg);
}

static void st_skip_ws(st_parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static bool st_expect(st_parser *ps, char c)
{
    st_skip_ws(ps);
    if (ps->p >= ps->end) {
        st_perr(ps, "unexpected end of header, expected '%c'", c);
        return false;
    }
    if (*ps->p != c) {
        st_perr(ps, "expected '%c', found '%c'", c, *ps->p);
        return false;
    }
    ps->p++;
    return true;
}

static int st_hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static char *st_put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xc0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    return o;
}

// Parses a JSON string and returns it decoded (malloc'd), or NULL on error.
static char *st_parse_string(st_parser *ps)
{
    st_skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != '"') {
        if (ps->p >= ps->end)
            st_perr(ps, "unexpected end of header, expected a string");
        else
            st_perr(ps, "expected a string, found '%c'", *ps->p);
        return NULL;
    }
    const char *start = ++ps->p;
    // Decoded text is never longer than the raw text (an escape of 6 bytes gives at most 3,
    // a surrogate pair of 12 gives 4).
    const char *q = start;
    while (q < ps->end && *q != '"') {
        if (*q == '\\' && q + 1 < ps->end)
            q++;
        q++;
    }
    if (q >= ps->end) {
        st_perr(ps, "unterminated string");
        return NULL;
    }
    char *out = malloc((size_t)(q - start) + 1);
    if (!out) {
        st_perr(ps, "out of memory");
        return NULL;
    }
    char *o = out;
    while (*ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p;
        if (c < 0x20) {
            st_perr(ps, "control character 0x%02x in a string", c);
            goto fail;
        }
        if (c != '\\') {
            *o++ = (char)c;
            ps->p++;
            continue;
        }
        char e = ps->p[1];
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            int u = ps->end - ps->p >= 6 ? st_hex4(ps->p + 2) : -1;
            if (u < 0) {
                st_perr(ps, "bad \\u escape");
                goto fail;
            }
            uint32_t cp = (uint32_t)u;
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                st_perr(ps, "unpaired low surrogate \\u%04x", cp);
                goto fail;
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                int lo = ps->end - ps->p >= 12 && ps->p[6] == '\\' && ps->p[7] == 'u'
                       ? st_hex4(ps->p + 8) : -1;
                if (lo < 0xdc00 || lo > 0xdfff) {
                    st_perr(ps, "high surrogate \\u%04x not followed by a low surrogate", cp);
                    goto fail;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
                ps->p += 6;
            }
            if (cp == 0) {
                st_perr(ps, "\\u0000 in a string");
                goto fail;
            }
            o = st_put_utf8(o, cp);
            ps->p += 4;
            break;
        }
        default:
            st_perr(ps, "bad escape '\\%c'", e);
            goto fail;
        }
        ps->p += 2;
    }
    ps->p++; // closing quote
    *o = '\0';
    return out;
fail:
    free(out);
    return NULL;
}

// Parses a JSON integer (no fraction or exponent). Returns false on error.
static bool st_parse_int(st_parser *ps, bool *negative, uint64_t *value)
{
    st_skip_ws(ps);
    *negative = false;
    if (ps->p < ps->end && *ps->p == '-') {
        *negative = true;
        ps->p++;
    }
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
        st_perr(ps, "expected an integer");
        return false;
    }
    if (*ps->p == '0' && ps->p + 1 < ps->end && ps->p[1] >= '0' && ps->p[1] <= '9') {
        st_perr(ps, "integer with a leading zero");
        return false;
    }
    uint64_t v = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        unsigned d = (unsigned)(*ps->p - '0');
        if (v > (UINT64_MAX - d) / 10) {
            st_perr(ps, "integer too large");
            return false;
        }
        v = v * 10 + d;
        ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E')) {
        st_perr(ps, "expected an integer, found a fraction or exponent");
        return false;
    }
    *value = v;
    return true;
}

// Returns true and consumes c if it is the next non-blank character.
static bool st_accept(st_parser *ps, char c)
{
    st_skip_ws(ps);
    if (ps->p < ps->end && *ps->p == c) {
        ps->p++;
        return true;
    }
    return false;
}

// Parses {"dtype": ..., "shape": [...], "data_offsets": [b, e]} into t (name already set).
static bool st_parse_tensor(st_parser *ps, st_tensor *t, uint64_t *begin, uint64_t *end)
{
    bool have_dtype = false, have_shape = false, have_offsets = false;
    if (!st_expect(ps, '{'))
        return false;
    if (st_accept(ps, '}'))
        goto check;
    do {
        char *key = st_parse_string(ps);
        if (!key)
            return false;
        if (!st_expect(ps, ':')) {
            free(key);
            return false;
        }
        if (strcmp(key, "dtype") == 0 && !have_dtype) {
            char *s = st_parse_string(ps);
            if (!s)
                goto fail_key;
            int dt = st_dtype_parse(s);
            if (dt < 0) {
                sdg__fail(ps->err, SDG_ERR_FORMAT, "%s: tensor '%s' has unknown dtype '%s'",
                          ps->path, t->name, s);
                ps->failed = true;
                free(s);
                goto fail_key;
            }
            free(s);
            t->dtype = (st_dtype)dt;
            have_dtype = true;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            if (!st_expect(ps, '['))
                goto fail_key;
            t->n_dims = 0;
            t->n_elements = 1;
            bool overflow = false;
            if (!st_accept(ps, ']')) {
                do {
                    bool neg;
                    uint64_t v;
                    if (!st_parse_int(ps, &neg, &v))
                        goto fail_key;
                    if (neg && v != 0) {
                        sdg__fail(ps->err, SDG_ERR_FORMAT,
                                  "%s: tensor '%s' has a negative dimension (-%llu)", ps->path,
                                  t->name, (unsigned long long)v);
                        ps->failed = true;
                        goto fail_key;
                    }
                    if (t->n_dims == ST_MAX_DIMS) {
                        sdg__fail(ps->err, SDG_ERR_FORMAT,
                                  "%s: tensor '%s' has more than %d dimensions", ps->path,
                                  t->name, ST_MAX_DIMS);
                        ps->failed = true;
                        goto fail_key;
                    }
                    if (v > (uint64_t)INT64_MAX)
                        overflow = true;
                    else if (v != 0 && (uint64_t)t->n_elements > (uint64_t)INT64_MAX / v)
                        overflow = true;
                    else
                        t->n_elements *= (int64_t)v;
                    t->shape[t->n_dims++] = v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v;
                } while (st_accept(ps, ','));
                if (!st_expect(ps, ']'))
                    goto fail_key;
            }
            if (overflow) {
                // A zero dimension would make the product 0, but such a shape is still absurd.
                sdg__fail(ps->err, SDG_ERR_FORMAT,
                          "%s: tensor '%s' has a shape whose element count overflows", ps->path,
                          t->name);
                ps->failed = true;
                goto fail_key;
            }
            have_shape = true;
        } else if (strcmp(key, "data_offsets") == 0 && !have_offsets) {
            bool nb, ne;
            if (!st_expect(ps, '[') || !st_parse_int(ps, &nb, begin) || !st_expect(ps, ',')
                || !st_parse_int(ps, &ne, end) || !st_expect(ps, ']'))
                goto fail_key;
            if ((nb && *begin) || (ne && *end)) {
                sdg__fail(ps->err, SDG_ERR_FORMAT, "%s: tensor '%s' has negative data_offsets",
                          ps->path, t->name);
                ps->failed = true;
                goto fail_key;
            }
            have_offsets = true;
        } else {
            bool dup = strcmp(key, "dtype") == 0 || strcmp(key, "shape") == 0
                    || strcmp(key, "data_offsets") == 0;
            sdg__fail(ps->err, SDG_ERR_FORMAT, "%s: tensor '%s' has %s field '%s'", ps->path,
                      t->name, dup ? "a duplicate" : "an unknown", key);
            ps->failed = true;
            goto fail_key;
        }
        free(key);
        continue;
    fail_key:
        free(key);
        return false;
    } while (st_accept(ps, ','));
    if (!st_expect(ps, '}'))
        return false;
check:
    if (!have_dtype || !have_shape || !have_offsets) {
        sdg__fail(ps->err, SDG_ERR_FORMAT, "%s: tensor '%s' lacks \"%s\"", ps->path, t->name,
                  !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
        ps->failed = true;
        return false;
    }
    return true;
}

static bool st_grow(void **arr, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return true;
    int nc = *cap ? *cap * 2 : 64;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p)
        return false;
    *arr = p;
    *cap = nc;
    return true;
}

// Parses the object of string values that follows "__metadata__" into f->meta.
static bool st_parse_metadata(st_parser *ps, st_file *f)
{
    int cap = 0;
    if (!st_expect(ps, '{'))
        return false;
    if (st_accept(ps, '}'))
        return true;
    do {
        char *key = st_parse_string(ps);
        if (!key)
            return false;
        for (int i = 0; i < f->n_meta; i++) {
            if (strcmp(f->meta[2 * i], key) == 0) {
                sdg__fail(ps->err, SDG_ERR_FORMAT, "%s: duplicate __metadata__ key '%s'",
                          ps->path, key);
                ps->failed = true;
                free(key);
                return false;
            }
        }
        if (!st_expect(ps, ':')) {
            free(key);
            return false;
        }
        st_skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"') {
            sdg__fail(ps->err, SDG_ERR_FORMAT,
                      "%s: __metadata__ value of '%s' is not a string", ps->path, key);
            ps->failed = true;
            free(key);
            return false;
        }
        char *val = st_parse_string(ps);
        if (!val || !st_grow((void **)&f->meta, &cap, 2 * f->n_meta + 2, sizeof(char *))) {
            if (val)
                st_perr(ps, "out of memory");
            free(key);
            free(val);
            return false;
        }
        f->meta[2 * f->n_meta] = key;
        f->meta[2 * f->n_meta + 1] = val;
        f->n_meta++;
    } while (st_accept(ps, ','));
    return st_expect(ps, '}');
}

// ---------------------------------------------------------------------------------------------
// Open / close

void st_close(st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap((void *)f->map, f->map_size);
    if (f->fd >= 0)
        close(f->fd);
    for (int i = 0; i < f->n; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    free(f->sorted);
    for (int i = 0; i < 2 * f->n_meta; i++)
        free(f->meta[i]);
    free(f->meta);
    for (int i = 0; i < f->n_parts; i++)
        st_close(f->parts[i]);
    free(f->parts);
    free(f->path);
    free(f);
}

static const st_file *st_cmp_file; // qsort has no context argument; set only under st_sort_lock
static GMutex st_sort_lock;

static int st_cmp_name(const void *a, const void *b)
{
    return strcmp(st_cmp_file->tensors[*(const int *)a].name,
                  st_cmp_file->tensors[*(const int *)b].name);
}

static int st_cmp_offset(const void *a, const void *b)
{
    const st_tensor *x = &st_cmp_file->tensors[*(const int *)a];
    const st_tensor *y = &st_cmp_file->tensors[*(const int *)b];
    if (x->offset != y->offset)
        return x->offset < y->offset ? -1 : 1;
    return x->size < y->size ? -1 : x->size > y->size;
}

// The data section must be covered exactly, as the reference reader requires (its
// MetadataIncompleteBuffer and InvalidOffset errors): no tensor past the end (a truncated file),
// no gap between tensors, no bytes after the last one (a file padded or grown by other means,
// such as a sparse file of 100 GB behind a small header). by_off: tensor indices by offset.
static sdg_status st_check_coverage(const st_file *f, const int *by_off, sdg_error *err)
{
    unsigned long long file_size = (unsigned long long)f->map_size;
    uint64_t pos = 0, max_end = 0;
    const st_tensor *past = NULL;
    for (int i = 0; i < f->n; i++) {
        const st_tensor *t = &f->tensors[by_off[i]];
        uint64_t end = t->offset + t->size;
        if (end > max_end)
            max_end = end;
        if (!past && end > f->data_size)
            past = t;
        if (t->size == 0)
            continue;   // empty tensors occupy no bytes
        if (t->offset > pos)
            return sdg__fail(err, SDG_ERR_FORMAT,
                             "%s: tensor '%s' starts at data byte %llu but the data before it "
                             "ends at byte %llu: the file has a gap, which the format does not "
                             "allow", f->path, t->name, (unsigned long long)t->offset,
                             (unsigned long long)pos);
        pos = end;
    }
    if (past)
        return sdg__fail(err, SDG_ERR_FORMAT,
                         "%s: the file is truncated: it is %llu bytes but its header describes "
                         "%llu (tensor '%s' needs data bytes %llu..%llu, and only %llu are "
                         "there)", f->path, file_size,
                         (unsigned long long)(f->data_start + max_end), past->name,
                         (unsigned long long)past->offset,
                         (unsigned long long)(past->offset + past->size),
                         (unsigned long long)f->data_size);
    if (max_end < f->data_size)
        return sdg__fail(err, SDG_ERR_FORMAT,
                         "%s: the file is %llu bytes but its header describes only %llu: the "
                         "last %llu byte%s belong%s to no tensor (the file is damaged, or not a "
                         "safetensors file)", f->path, file_size,
                         (unsigned long long)(f->data_start + max_end),
                         (unsigned long long)(f->data_size - max_end),
                         f->data_size - max_end == 1 ? "" : "s",
                         f->data_size - max_end == 1 ? "s" : "");
    return SDG_OK;
}

// Builds f->sorted and checks for duplicate names, overlapping data and data that does not
// cover the file exactly.
static sdg_status st_index(st_file *f, sdg_error *err)
{
    if (f->n == 0)
        return st_check_coverage(f, NULL, err);
    f->sorted = malloc((size_t)f->n * sizeof(int));
    int *by_off = malloc((size_t)f->n * sizeof(int));
    if (!f->sorted || !by_off) {
        free(by_off);
        return sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory indexing %d tensors", f->path,
                         f->n);
    }
    for (int i = 0; i < f->n; i++)
        f->sorted[i] = by_off[i] = i;
    g_mutex_lock(&st_sort_lock);
    st_cmp_file = f;
    qsort(f->sorted, (size_t)f->n, sizeof(int), st_cmp_name);
    qsort(by_off, (size_t)f->n, sizeof(int), st_cmp_offset);
    st_cmp_file = NULL;
    g_mutex_unlock(&st_sort_lock);

    sdg_status st = SDG_OK;
    for (int i = 1; i < f->n && st == SDG_OK; i++)
        if (strcmp(f->tensors[f->sorted[i - 1]].name, f->tensors[f->sorted[i]].name) == 0)
            st = sdg__fail(err, SDG_ERR_FORMAT, "%s: duplicate tensor name '%s'", f->path,
                           f->tensors[f->sorted[i]].name);
    // Empty tensors occupy no bytes and cannot overlap anything.
    const st_tensor *prev = NULL;
    for (int i = 0; i < f->n && st == SDG_OK; i++) {
        const st_tensor *t = &f->tensors[by_off[i]];
        if (t->size == 0)
            continue;
        if (prev && t->offset < prev->offset + prev->size)
            st = sdg__fail(err, SDG_ERR_FORMAT,
                           "%s: tensor '%s' (bytes %llu..%llu) overlaps tensor '%s' (bytes "
                           "%llu..%llu)", f->path, t->name, (unsigned long long)t->offset,
                           (unsigned long long)(t->offset + t->size), prev->name,
                           (unsigned long long)prev->offset,
                           (unsigned long long)(prev->offset + prev->size));
        prev = t;
    }
    if (st == SDG_OK)
        st = st_check_coverage(f, by_off, err);
    free(by_off);
    return st;
}

static sdg_status st_parse_header(st_file *f, const char *hdr, size_t len, sdg_error *err)
{
    st_parser ps = { hdr, hdr, hdr + len, f->path, err, false };
    int cap = 0;
    bool have_meta = false;
    if (!st_expect(&ps, '{'))
        return SDG_ERR_FORMAT;
    if (!st_accept(&ps, '}')) {
        do {
            char *name = st_parse_string(&ps);
            if (!name)
                return SDG_ERR_FORMAT;
            if (!st_expect(&ps, ':')) {
                free(name);
                return SDG_ERR_FORMAT;
            }
            if (strcmp(name, "__metadata__") == 0) {
                free(name);
                if (have_meta)
                    return sdg__fail(err, SDG_ERR_FORMAT, "%s: duplicate __metadata__", f->path);
                have_meta = true;
                st_skip_ws(&ps);
                if (ps.p < ps.end && *ps.p != '{')
                    return sdg__fail(err, SDG_ERR_FORMAT, "%s: __metadata__ is not an object",
                                     f->path);
                if (!st_parse_metadata(&ps, f))
                    return SDG_ERR_FORMAT;
                continue;
            }
            if (!st_grow((void **)&f->tensors, &cap, f->n + 1, sizeof(st_tensor))) {
                free(name);
                return sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory reading the header",
                                 f->path);
            }
            st_tensor *t = &f->tensors[f->n++];
            memset(t, 0, sizeof *t);
            t->name = name;
            uint64_t begin = 0, end = 0;
            if (!st_parse_tensor(&ps, t, &begin, &end))
                return SDG_ERR_FORMAT;
            if (begin > end)
                return sdg__fail(err, SDG_ERR_FORMAT,
                                 "%s: tensor '%s' has data_offsets [%llu, %llu] that end before "
                                 "they begin", f->path, t->name, (unsigned long long)begin,
                                 (unsigned long long)end);
            // Whether the data fits the file is checked on the whole index (st_index).
            size_t es = st_dtype_size(t->dtype);
            if ((uint64_t)t->n_elements > UINT64_MAX / es
                || (uint64_t)t->n_elements * es != end - begin) {
                char shp[160] = "";
                for (int d = 0, o = 0; d < t->n_dims && o < (int)sizeof shp - 24; d++)
                    o += snprintf(shp + o, sizeof shp - (size_t)o, "%s%lld", d ? "," : "",
                                  (long long)t->shape[d]);
                return sdg__fail(err, SDG_ERR_FORMAT,
                                 "%s: tensor '%s' is %s [%s] (%lld elements) but its "
                                 "data_offsets span %llu bytes", f->path, t->name,
                                 st_dtype_name(t->dtype), shp, (long long)t->n_elements,
                                 (unsigned long long)(end - begin));
            }
            t->offset = begin;
            t->size = end - begin;
        } while (st_accept(&ps, ','));
        if (!st_expect(&ps, '}'))
            return SDG_ERR_FORMAT;
    }
    st_skip_ws(&ps); // writers pad the header with spaces
    if (ps.p != ps.end) {
        st_perr(&ps, "trailing characters after the header object");
        return SDG_ERR_FORMAT;
    }
    return st_index(f, err);
}

// Reads exactly n bytes at offset off; returns the count read (short at the end of the file),
// or -1 with errno set.
static ssize_t st_pread_all(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (uint8_t *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

// What a path that is not a regular file is, for the error message.
static const char *st_file_kind(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a folder";
    if (S_ISFIFO(mode))
        return "a named pipe (FIFO)";
    if (S_ISCHR(mode) || S_ISBLK(mode))
        return "a device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "not a regular file";
}

st_file *st_open(const char *path, sdg_error *err)
{
    if (!path) {
        sdg__fail(err, SDG_ERR_INVALID_ARG, "st_open: no path given");
        return NULL;
    }
    st_file *f = calloc(1, sizeof *f);
    char *pathcopy = strdup(path);
    if (!f || !pathcopy) {
        free(f);
        free(pathcopy);
        sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory", path);
        return NULL;
    }
    f->path = pathcopy;
    f->fd = -1;
    char *hdr = NULL;

    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever. It
    // changes nothing for regular files, the only kind accepted.
    f->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (f->fd < 0) {
        sdg__fail(err, SDG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(f->fd, &sb) != 0) {
        sdg__fail(err, SDG_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        sdg__fail(err, SDG_ERR_IO, "%s: is %s, not a safetensors file", path,
                  st_file_kind(sb.st_mode));
        goto fail;
    }
    if (sb.st_size == 0) {
        sdg__fail(err, SDG_ERR_FORMAT, "%s: the file is empty (0 bytes)", path);
        goto fail;
    }
    if (sb.st_size < 8 || (uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        sdg__fail(err, SDG_ERR_FORMAT,
                  "%s: file is %lld bytes, too short to be a safetensors file", path,
                  (long long)sb.st_size);
        goto fail;
    }
    f->map_size = (size_t)sb.st_size;

    // The length and the header are read with pread, not through the mapping: a file that
    // shrinks meanwhile gives a short read here, not a SIGBUS.
    uint8_t len8[8];
    ssize_t got = st_pread_all(f->fd, len8, 8, 0);
    if (got != 8) {
        sdg__fail(err, SDG_ERR_IO, "%s: cannot read the header length: %s", path,
                  got < 0 ? strerror(errno) : "the file shrank while being read");
        goto fail;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | len8[i];
    if (n > f->map_size - 8) {
        sdg__fail(err, SDG_ERR_FORMAT,
                  "%s: header length %llu runs past the end of the file (%zu bytes); the file "
                  "is truncated or not a safetensors file", path, (unsigned long long)n,
                  f->map_size);
        goto fail;
    }
    if (n > ST_MAX_HEADER) {
        sdg__fail(err, SDG_ERR_FORMAT, "%s: header length %llu is absurdly large", path,
                  (unsigned long long)n);
        goto fail;
    }
    hdr = malloc(n ? (size_t)n : 1);
    if (!hdr) {
        sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory reading a %llu-byte header", path,
                  (unsigned long long)n);
        goto fail;
    }
    got = st_pread_all(f->fd, hdr, (size_t)n, 8);
    if (got != (ssize_t)n) {
        sdg__fail(err, SDG_ERR_IO, "%s: cannot read the header: %s", path,
                  got < 0 ? strerror(errno) : "the file shrank while being read");
        goto fail;
    }
    if (!g_utf8_validate_len(hdr, (gsize)n, NULL)) { // also rejects NUL bytes
        sdg__fail(err, SDG_ERR_FORMAT, "%s: header is not valid UTF-8 text", path);
        goto fail;
    }
    f->data_start = 8 + n;
    f->data_size = f->map_size - 8 - n;
    if (st_parse_header(f, hdr, (size_t)n, err) != SDG_OK)
        goto fail;
    free(hdr);
    hdr = NULL;

    // Mapped only once the header is known to describe the file exactly. Nothing is read
    // through the mapping but F32 tensors used in place (st_data), so a failure (an address
    // space limit, valgrind) is reported only to those (st_check_mapped).
    void *map = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, f->fd, 0);
    if (map == MAP_FAILED) {
        f->map_errno = errno;
    } else {
        f->map = map;
        f->data = f->map + f->data_start;
    }
    return f;
fail:
    free(hdr);
    st_close(f);
    return NULL;
}

st_file *st_compose(const char *path, st_file **parts, int n_parts, st_rename_fn rename,
                    void *user, sdg_error *err)
{
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path ? path : "(composed)"))) {
        free(f);
        for (int i = 0; i < n_parts; i++)
            st_close(parts[i]);
        sdg__fail(err, SDG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    f->fd = -1;
    f->parts = malloc((size_t)(n_parts > 0 ? n_parts : 1) * sizeof *f->parts);
    if (!f->parts) {
        for (int i = 0; i < n_parts; i++)
            st_close(parts[i]);
        st_close(f);
        sdg__fail(err, SDG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < n_parts; i++)
        f->parts[f->n_parts++] = parts[i];
    int total = 0;
    for (int i = 0; i < n_parts; i++)
        total += parts[i]->n;
    f->tensors = calloc((size_t)(total > 0 ? total : 1), sizeof *f->tensors);
    f->sorted = malloc((size_t)(total > 0 ? total : 1) * sizeof *f->sorted);
    if (!f->tensors || !f->sorted) {
        st_close(f);
        sdg__fail(err, SDG_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int p = 0; p < n_parts; p++)
        for (int i = 0; i < parts[p]->n; i++) {
            const st_tensor *src = &parts[p]->tensors[i];
            st_tensor t = *src;
            int n_dims = t.n_dims;
            char *name = rename(p, src->name, src->n_dims, t.shape, &n_dims, user);
            if (!name)
                continue;
            int64_t count = 1;
            for (int d = 0; d < n_dims; d++)
                count *= t.shape[d];
            SDG_ASSERT(n_dims >= 0 && n_dims <= ST_MAX_DIMS && count == src->n_elements);
            t.n_dims = n_dims;
            t.name = name;
            t.part = p;
            f->sorted[f->n] = f->n;
            f->tensors[f->n++] = t;
        }
    g_mutex_lock(&st_sort_lock);
    st_cmp_file = f;
    qsort(f->sorted, (size_t)f->n, sizeof *f->sorted, st_cmp_name);
    st_cmp_file = NULL;
    g_mutex_unlock(&st_sort_lock);
    for (int i = 1; i < f->n; i++) {
        const st_tensor *a = &f->tensors[f->sorted[i - 1]], *b = &f->tensors[f->sorted[i]];
        if (strcmp(a->name, b->name) == 0) {
            sdg__fail(err, SDG_ERR_FORMAT, "%s: '%s' in %s and '%s' in %s name the same tensor",
                      f->path, a->name, f->parts[a->part]->path, b->name,
                      f->parts[b->part]->path);
            st_close(f);
            return NULL;
        }
    }
    return f;
}

const char *st_path(const st_file *f) { return f->path; }
int st_count(const st_file *f) { return f->n; }

const st_tensor *st_at(const st_file *f, int i)
{
    return i >= 0 && i < f->n ? &f->tensors[i] : NULL;
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const st_tensor *t = &f->tensors[f->sorted[mid]];
        int c = strcmp(name, t->name);
        if (c == 0)
            return t;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *st_metadata(const st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0)
            return f->meta[2 * i + 1];
    return NULL;
}

const void *st_data(const st_file *f, const st_tensor *t)
{
    f = st_home(f, t);
    return f->map ? f->data + t->offset : NULL;
}

bool st_data_aligned(const st_file *f, const st_tensor *t, size_t align)
{
    f = st_home(f, t);
    return (f->data_start + t->offset) % align == 0; // the mapping starts on a page
}

sdg_status st_check_mapped(const st_file *f, sdg_error *err)
{
    for (int i = 0; i < f->n_parts; i++) {
        sdg_status st = st_check_mapped(f->parts[i], err);
        if (st != SDG_OK)
            return st;
    }
    if (f->n_parts)
        return SDG_OK;
    if (!f->map)
        return sdg__fail(err, SDG_ERR_IO, "%s: cannot map the file into memory: %s", f->path,
                         strerror(f->map_errno));
    struct stat sb;
    if (fstat(f->fd, &sb) != 0)
        return sdg__fail(err, SDG_ERR_IO, "%s: cannot stat: %s", f->path, strerror(errno));
    if ((uint64_t)sb.st_size < (uint64_t)f->map_size)
        return sdg__fail(err, SDG_ERR_IO, "%s: the file shrank from %zu to %lld bytes while it "
                         "was open (is something overwriting it?)", f->path, f->map_size,
                         (long long)sb.st_size);
    return SDG_OK;
}

int64_t st_count_nonfinite(const void *x, size_t n, st_dtype dt)
{
    // The exponent bits all set means Inf or NaN. Testing bits rather than isfinite() keeps
    // the loop a plain integer reduction that compilers vectorise, and exact under -ffast-math.
    int64_t count = 0;
    if (dt == ST_F32) {
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, (const char *)x + 4 * i, 4);
            count += (u & 0x7f800000u) == 0x7f800000u;
        }
        return count;
    }
    SDG_ASSERT(dt == ST_F16 || dt == ST_BF16);
    uint16_t mask = dt == ST_F16 ? 0x7c00 : 0x7f80;
    for (size_t i = 0; i < n; i++) {
        uint16_t u;
        memcpy(&u, (const char *)x + 2 * i, 2);
        count += (u & mask) == mask;
    }
    return count;
}

// ---------------------------------------------------------------------------------------------
// Reading with conversion. The bytes are read with pread through the file descriptor kept open,
// never through the mapping: if the file shrinks meanwhile the read comes up short and that is an
// error, where touching a mapped page past the new end would raise SIGBUS. Chunks are small
// enough to stay in cache between reading, converting and counting.

#define ST_CHUNK 65536

// Reads bytes [off, off + n) of t's data into buf; an error names the tensor.
static sdg_status st_read_part(const st_file *f, const st_tensor *t, uint64_t off, void *buf,
                               size_t n, sdg_error *err)
{
    f = st_home(f, t);
    ssize_t got = st_pread_all(f->fd, buf, n, f->data_start + t->offset + off);
    if (got == (ssize_t)n)
        return SDG_OK;
    if (got < 0)
        return sdg__fail(err, SDG_ERR_IO, "%s: cannot read tensor '%s': %s", f->path, t->name,
                         strerror(errno));
    struct stat sb;
    long long now = fstat(f->fd, &sb) == 0 ? (long long)sb.st_size : -1;
    return sdg__fail(err, SDG_ERR_IO, "%s: the file ended in the middle of tensor '%s': it was "
                     "%zu bytes when opened and is %lld now (is something overwriting it?)",
                     f->path, t->name, f->map_size, now);
}

sdg_status st_read_f32_count(const st_file *f, const st_tensor *t, float *dst,
                             int64_t *n_nonfinite, sdg_error *err)
{
    if (n_nonfinite)
        *n_nonfinite = 0;
    if (t->dtype == ST_BOOL || (unsigned)t->dtype >= ST_DTYPE_COUNT)
        return sdg__fail(err, SDG_ERR_UNSUPPORTED, "%s: tensor '%s' is %s, not a number type",
                         f->path, t->name, st_dtype_name(t->dtype));
    size_t n = (size_t)t->n_elements;
    size_t es = st_dtype_size(t->dtype);
    bool f16c = t->dtype == ST_F16 && st_use_f16c();
    void *buf = NULL;
    if (t->dtype != ST_F32 && n > 0) {
        buf = malloc((n < ST_CHUNK ? n : ST_CHUNK) * es);
        if (!buf)
            return sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory reading tensor '%s'",
                             f->path, t->name);
    }
    int64_t bad = 0;
    sdg_status st = SDG_OK;
    for (size_t i = 0; i < n && st == SDG_OK; i += ST_CHUNK) {
        size_t m = n - i < ST_CHUNK ? n - i : ST_CHUNK;
        float *d = dst + i;
        if (t->dtype == ST_F32) {   // straight into place
            st = st_read_part(f, t, (uint64_t)i * 4, d, m * 4, err);
        } else {
            st = st_read_part(f, t, (uint64_t)i * es, buf, m * es, err);
            if (st != SDG_OK)
                break;
            const uint16_t *u16 = buf;
            switch (t->dtype) {
            case ST_F16: st_f16_to_f32_n(u16, d, m, f16c); break;
            case ST_BF16: st_bf16_to_f32_n(u16, d, m); break;
            case ST_F64: for (size_t k = 0; k < m; k++) d[k] = (float)((const double *)buf)[k]; break;
            case ST_I64: for (size_t k = 0; k < m; k++) d[k] = (float)((const int64_t *)buf)[k]; break;
            case ST_I32: for (size_t k = 0; k < m; k++) d[k] = (float)((const int32_t *)buf)[k]; break;
            case ST_I16: for (size_t k = 0; k < m; k++) d[k] = (float)((const int16_t *)buf)[k]; break;
            case ST_I8: for (size_t k = 0; k < m; k++) d[k] = (float)((const int8_t *)buf)[k]; break;
            case ST_U8: for (size_t k = 0; k < m; k++) d[k] = (float)((const uint8_t *)buf)[k]; break;
            default: SDG_ASSERT(0);
            }
        }
        if (n_nonfinite && st == SDG_OK)
            bad += st_count_nonfinite(d, m, ST_F32);
    }
    free(buf);
    if (n_nonfinite)
        *n_nonfinite = bad;
    return st;
}

sdg_status st_read_raw_count(const st_file *f, const st_tensor *t, int64_t first, int64_t count,
                             void *dst, int64_t *n_nonfinite, sdg_error *err)
{
    SDG_ASSERT(t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16);
    SDG_ASSERT(first >= 0 && count >= 0 && first + count <= t->n_elements);
    size_t es = st_dtype_size(t->dtype), n = (size_t)count;
    sdg_status st = SDG_OK;
    for (size_t i = 0; i < n && st == SDG_OK; i += ST_CHUNK) {
        size_t m = n - i < ST_CHUNK ? n - i : ST_CHUNK;
        char *d = (char *)dst + i * es;
        st = st_read_part(f, t, ((uint64_t)first + i) * es, d, m * es, err);
        if (st == SDG_OK && n_nonfinite)
            *n_nonfinite += st_count_nonfinite(d, m, t->dtype);
    }
    return st;
}

sdg_status st_read_f32(const st_file *f, const st_tensor *t, float *dst, sdg_error *err)
{
    return st_read_f32_count(f, t, dst, NULL, err);
}

sdg_status st_read_i32(const st_file *f, const st_tensor *t, int32_t *dst, sdg_error *err)
{
    size_t n = (size_t)t->n_elements;
    size_t es = st_dtype_size(t->dtype);
    switch (t->dtype) {
    case ST_I32: case ST_I64: case ST_I16: case ST_I8: case ST_U8: case ST_BOOL:
        break;
    default:
        return sdg__fail(err, SDG_ERR_UNSUPPORTED, "%s: tensor '%s' is %s, not an integer type",
                         f->path, t->name, st_dtype_name(t->dtype));
    }
    if (t->dtype == ST_I32)
        return st_read_part(f, t, 0, dst, n * 4, err);
    void *buf = n ? malloc((n < ST_CHUNK ? n : ST_CHUNK) * es) : NULL;
    if (n && !buf)
        return sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory reading tensor '%s'", f->path,
                         t->name);
    sdg_status st = SDG_OK;
    for (size_t i = 0; i < n && st == SDG_OK; i += ST_CHUNK) {
        size_t m = n - i < ST_CHUNK ? n - i : ST_CHUNK;
        st = st_read_part(f, t, (uint64_t)i * es, buf, m * es, err);
        for (size_t k = 0; k < m && st == SDG_OK; k++) {
            int64_t v;
            switch (t->dtype) {
            case ST_I64: v = ((const int64_t *)buf)[k]; break;
            case ST_I16: v = ((const int16_t *)buf)[k]; break;
            case ST_I8: v = ((const int8_t *)buf)[k]; break;
            default: v = ((const uint8_t *)buf)[k]; break;   // U8, BOOL
            }
            if (v < INT32_MIN || v > INT32_MAX)
                st = sdg__fail(err, SDG_ERR_UNSUPPORTED,
                               "%s: tensor '%s' element %zu (%lld) does not fit in int32",
                               f->path, t->name, i + k, (long long)v);
            else
                dst[i + k] = (int32_t)v;
        }
    }
    free(buf);
    return st;
}

// ---------------------------------------------------------------------------------------------
// Writing

static bool st_json_escape(GString *s, const char *text)
{
    g_string_append_c(s, '"');
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        if (*c == '"' || *c == '\\')
            g_string_append_printf(s, "\\%c", *c);
        else if (*c < 0x20)
            g_string_append_printf(s, "\\u%04x", *c);
        else
            g_string_append_c(s, (char)*c);
    }
    g_string_append_c(s, '"');
    return true;
}

static bool st_write_all(FILE *fp, const void *p, size_t n)
{
    return n == 0 || fwrite(p, 1, n, fp) == n;
}

// Writes one tensor of n elements from float (or, for integer dtypes without fill, int) data.
#define ST_WRITE_CHUNK 4096

static bool st_write_from_f32(FILE *fp, st_dtype dt, const float *x, size_t n)
{
    union { uint16_t u16[ST_WRITE_CHUNK]; int32_t i32[ST_WRITE_CHUNK];
            int64_t i64[ST_WRITE_CHUNK]; } buf;
    if (dt == ST_F32)
        return st_write_all(fp, x, n * 4);
    for (size_t i = 0; i < n; i += ST_WRITE_CHUNK) {
        size_t m = n - i < ST_WRITE_CHUNK ? n - i : ST_WRITE_CHUNK;
        const float *s = x + i;
        size_t bytes = 0;
        switch (dt) {
        case ST_F16: for (size_t k = 0; k < m; k++) buf.u16[k] = sdg__f32_to_f16(s[k]);
            bytes = 2 * m; break;
        case ST_BF16: for (size_t k = 0; k < m; k++) buf.u16[k] = sdg__f32_to_bf16(s[k]);
            bytes = 2 * m; break;
        case ST_I32: for (size_t k = 0; k < m; k++) buf.i32[k] = (int32_t)lrintf(s[k]);
            bytes = 4 * m; break;
        case ST_I64: for (size_t k = 0; k < m; k++) buf.i64[k] = (int64_t)llrintf(s[k]);
            bytes = 8 * m; break;
        default: SDG_ASSERT(0);
        }
        if (!st_write_all(fp, &buf, bytes))
            return false;
    }
    return true;
}

sdg_status st_write_streamed(const char *path, const st_write_tensor *tensors, int n,
                             const char *metadata_json, st_fill_fn fill, void *user,
                             sdg_error *err)
{
    if (!path || n < 0 || (n > 0 && !tensors))
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "st_write: bad arguments");
    size_t max_n = 0;
    uint64_t offset = 0;
    GString *h = g_string_new("{");
    if (metadata_json) {
        // Validate it with our own reader so we never write a file we would refuse.
        st_file tmp = { .path = (char *)path };
        st_parser ps = { metadata_json, metadata_json, metadata_json + strlen(metadata_json),
                         path, err, false };
        bool ok = g_utf8_validate(metadata_json, -1, NULL) && st_parse_metadata(&ps, &tmp);
        if (ok) {
            st_skip_ws(&ps);
            ok = ps.p == ps.end;
        }
        for (int i = 0; i < 2 * tmp.n_meta; i++)
            free(tmp.meta[i]);
        free(tmp.meta);
        if (!ok) {
            g_string_free(h, TRUE);
            return sdg__fail(err, SDG_ERR_INVALID_ARG,
                             "%s: metadata is not a JSON object of strings", path);
        }
        g_string_append(h, "\"__metadata__\":");
        g_string_append(h, metadata_json);
    }
    for (int i = 0; i < n; i++) {
        const st_write_tensor *t = &tensors[i];
        const char *why = NULL;
        int64_t ne = 1;
        if (!t->name)
            why = "has no name";
        else if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16
                 && t->dtype != ST_I32 && t->dtype != ST_I64)
            why = "has a dtype the writer does not produce";
        else if (t->n_dims < 0 || t->n_dims > ST_MAX_DIMS)
            why = "has a bad number of dimensions";
        else if (!t->data && !fill)
            why = "has no data and no fill function was given";
        for (int d = 0; !why && d < t->n_dims; d++) {
            if (t->shape[d] < 0)
                why = "has a negative dimension";
            else if (t->shape[d] && ne > (int64_t)(SIZE_MAX / 8) / t->shape[d])
                why = "is too large";
            else
                ne *= t->shape[d];
        }
        for (int j = 0; !why && j < i; j++)
            if (strcmp(tensors[j].name, t->name) == 0)
                why = "is given twice";
        if (!why && strcmp(t->name, "__metadata__") == 0)
            why = "has a reserved name";
        if (why) {
            g_string_free(h, TRUE);
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "%s: tensor %d ('%s') %s", path, i,
                             t->name ? t->name : "", why);
        }
        uint64_t bytes = (uint64_t)ne * st_dtype_size(t->dtype);
        if (h->len > 1)
            g_string_append_c(h, ',');
        st_json_escape(h, t->name);
        g_string_append_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->dtype));
        for (int d = 0; d < t->n_dims; d++)
            g_string_append_printf(h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        g_string_append_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                               (unsigned long long)(offset + bytes));
        offset += bytes;
        if (!t->data && (size_t)ne >= max_n)
            max_n = ne > 0 ? (size_t)ne : 1; // fill always gets a valid buffer
    }
    g_string_append_c(h, '}');
    while (h->len % 8) // keeps the data section 8-byte aligned, as the reference writer does
        g_string_append_c(h, ' ');

    float *scratch = NULL;
    if (max_n) {
        scratch = malloc(max_n * sizeof(float));
        if (!scratch) {
            g_string_free(h, TRUE);
            return sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory (%zu floats)", path, max_n);
        }
    }
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        int e = errno;
        g_string_free(h, TRUE);
        free(scratch);
        return sdg__fail(err, SDG_ERR_IO, "%s: cannot create: %s", path, strerror(e));
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)h->len >> (8 * i));
    bool ok = st_write_all(fp, len8, 8) && st_write_all(fp, h->str, h->len);
    g_string_free(h, TRUE);
    for (int i = 0; ok && i < n; i++) {
        const st_write_tensor *t = &tensors[i];
        size_t ne = 1;
        for (int d = 0; d < t->n_dims; d++)
            ne *= (size_t)t->shape[d];
        if (!t->data) {
            fill(user, i, scratch, (int64_t)ne);
            ok = st_write_from_f32(fp, t->dtype, scratch, ne);
        } else if (t->dtype == ST_I32) {
            ok = st_write_all(fp, t->data, ne * 4);
        } else if (t->dtype == ST_I64) {
            ok = st_write_all(fp, t->data, ne * 8);
        } else {
            ok = st_write_from_f32(fp, t->dtype, t->data, ne);
        }
    }
    int e = errno;
    if (fclose(fp) != 0 && ok) {
        ok = false;
        e = errno;
    }
    free(scratch);
    if (!ok) {
        remove(path);
        return sdg__fail(err, SDG_ERR_IO, "%s: write failed: %s", path, strerror(e));
    }
    return SDG_OK;
}

sdg_status st_write(const char *path, const st_write_tensor *tensors, int n,
                    const char *metadata_json, sdg_error *err)
{
    return st_write_streamed(path, tensors, n, metadata_json, NULL, NULL, err);
}
