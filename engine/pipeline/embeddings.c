/*
 * embeddings.c - the embeddings a request may use (see embeddings.h): A1111's EmbeddingDatabase,
 * read lazily. A1111 reads every file of its folder at start; here the folders are listed per
 * request (a listing and a tokenization of each stem: microseconds) and a file is read only when
 * a prompt names it, so that a folder of hundreds of embeddings costs nothing until used and a
 * broken file only matters to the prompt that names it.
 *
 * ref: https://github.com/AUTOMATIC1111/stable-diffusion-webui
 *      modules/textual_inversion/textual_inversion.py (EmbeddingDatabase)
 */
#include "embeddings.h"

#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>

typedef struct embs_entry {
    emb_file file;
    int64_t size, mtime, ino;   // the file's when read (mtime in nanoseconds)
} embs_entry;

struct embs_cache {
    GHashTable *by_path;   // char * (owned) -> embs_entry * (owned)
};

static void embs_entry_free(gpointer p)
{
    embs_entry *e = p;
    emb_clear(&e->file);
    g_free(e);
}

embs_cache *embs_cache_new(void)
{
    embs_cache *c = g_new0(embs_cache, 1);
    c->by_path = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, embs_entry_free);
    return c;
}

void embs_cache_free(embs_cache *c)
{
    if (!c)
        return;
    g_hash_table_destroy(c->by_path);
    g_free(c);
}

// A file's time of change in nanoseconds: a file rewritten within the same second is seen.
static int64_t embs_mtime(const GStatBuf *sb)
{
    return (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
}

// The cached file at path, read again when its size, inode or time of change differ.
static sdg_status embs_cache_get(embs_cache *c, const char *path, const emb_file **out,
                                 sdg_error *err)
{
    GStatBuf sb;
    if (g_stat(path, &sb) != 0)
        return sdg__fail(err, SDG_ERR_IO, "%s: %s", path, g_strerror(errno));
    embs_entry *e = g_hash_table_lookup(c->by_path, path);
    if (e && e->size == (int64_t)sb.st_size && e->mtime == embs_mtime(&sb) &&
        e->ino == (int64_t)sb.st_ino) {
        *out = &e->file;
        return SDG_OK;
    }
    embs_entry *n = g_new0(embs_entry, 1);
    sdg_status st = emb_read(path, &n->file, err);
    if (st != SDG_OK) {
        g_free(n);
        return st;
    }
    n->size = (int64_t)sb.st_size;
    n->mtime = embs_mtime(&sb);
    n->ino = (int64_t)sb.st_ino;
    g_hash_table_replace(c->by_path, g_strdup(path), n);
    *out = &n->file;
    return SDG_OK;
}

// ---------------------------------------------------------------------------------------------
// A request's names

static const char *const embs_exts[] = { ".safetensors", ".pt", ".bin" };

// The stem of an embedding file name, or NULL when it is none (g_free it).
static char *embs_stem(const char *name, int *ext)
{
    if (name[0] == '.')
        return NULL;   // hidden files, editors' backups
    for (int i = 0; i < (int)G_N_ELEMENTS(embs_exts); i++)
        if (g_str_has_suffix(name, embs_exts[i]) && strlen(name) > strlen(embs_exts[i])) {
            *ext = i;
            return g_strndup(name, strlen(name) - strlen(embs_exts[i]));
        }
    return NULL;
}

static gint embs_cmp(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

// Whether dir holds a .safetensors file of this stem (which is used in place of a pickle).
static bool embs_has_safetensors(const char *dir, const char *stem)
{
    char *name = g_strconcat(stem, embs_exts[0], NULL);
    char *path = g_build_filename(dir, name, NULL);
    bool yes = g_file_test(path, G_FILE_TEST_IS_REGULAR);
    g_free(name);
    g_free(path);
    return yes;
}

static void embs_add(embs_request *r, const sdg_tokenizer *tok, const char *dir, const char *name)
{
    int ext = 0;
    char *stem = embs_stem(name, &ext);
    if (!stem || !g_utf8_validate(stem, -1, NULL) || (ext > 0 && embs_has_safetensors(dir, stem))) {
        g_free(stem);
        return;
    }
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    if (sdg_tokenizer_encode(tok, stem, ids, NULL) > 0) {
        int n = (int)ids->len;
        g_ptr_array_add(r->paths, g_build_filename(dir, name, NULL));
        g_ptr_array_add(r->ids, g_array_free(ids, FALSE));
        g_array_append_val(r->n_ids, n);
        g_ptr_array_add(r->loaded, NULL);
    } else {
        g_array_free(ids, TRUE);   // a stem of nothing but spaces names nothing
    }
    g_free(stem);
}

static sdg_status embs_list(embs_request *r, const sdg_tokenizer *tok, const char *dir,
                            bool required, sdg_error *err)
{
    GError *gerr = NULL;
    GDir *d = g_dir_open(dir, 0, &gerr);
    if (!d) {
        sdg_status st = required ? sdg__fail(err, SDG_ERR_IO, "embeddings folder %s cannot be "
                                             "read: %s", dir, gerr->message) : SDG_OK;
        g_error_free(gerr);
        return st;
    }
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const char *name;
    while ((name = g_dir_read_name(d)))
        g_ptr_array_add(names, g_strdup(name));
    g_dir_close(d);
    g_ptr_array_sort(names, embs_cmp);
    for (guint i = 0; i < names->len; i++)
        embs_add(r, tok, dir, g_ptr_array_index(names, i));
    g_ptr_array_free(names, TRUE);
    return SDG_OK;
}

// sdg_prompt_dict.resolve: reads name i's file on its first use in this request.
static sdg_status embs_resolve(void *user, int i, const float **rows, int *n_rows, int *width,
                               sdg_error *err)
{
    struct embs_enc *u = user;
    embs_request *r = u->r;
    const emb_file *f = g_ptr_array_index(r->loaded, (guint)i);
    const char *path = g_ptr_array_index(r->paths, (guint)i);
    if (!f) {
        sdg_status st = embs_cache_get(r->cache, path, &f, err);
        if (st == SDG_OK)
            st = emb_check(f, path, r->widths, r->n_enc, err);
        if (st != SDG_OK)
            return st;
        g_ptr_array_index(r->loaded, (guint)i) = (gpointer)f;
    }
    *rows = emb_vectors(f, u->enc);
    *n_rows = f->n_vectors;
    *width = f->width[f->n_parts == 1 ? 0 : u->enc];
    return SDG_OK;
}

sdg_status embs_request_init(embs_request *r, embs_cache *cache, const sdg_tokenizer *tok,
                             const char *const *dirs, const bool *required, int n_dirs,
                             const int *widths, int n_enc, sdg_error *err)
{
    SDG_ASSERT(n_enc >= 1 && n_enc <= FAMILY_MAX_ENCODERS && n_enc <= EMB_MAX_PARTS);
    memset(r, 0, sizeof *r);
    r->cache = cache;
    r->n_enc = n_enc;
    memcpy(r->widths, widths, (size_t)n_enc * sizeof *widths);
    r->paths = g_ptr_array_new_with_free_func(g_free);
    r->ids = g_ptr_array_new_with_free_func(g_free);
    r->n_ids = g_array_new(FALSE, FALSE, sizeof(int));
    r->loaded = g_ptr_array_new();
    sdg_status st = SDG_OK;
    for (int d = 0; d < n_dirs && st == SDG_OK; d++)
        if (dirs[d] && *dirs[d])
            st = embs_list(r, tok, dirs[d], required[d], err);
    for (int e = 0; e < n_enc; e++) {
        r->user[e] = (struct embs_enc){ r, e };
        r->dict[e] = (sdg_prompt_dict){
            .n = (int)r->paths->len,
            .ids = (const int32_t *const *)r->ids->pdata,
            .n_ids = (const int *)(const void *)r->n_ids->data,
            .resolve = embs_resolve,
            .user = &r->user[e],
        };
    }
    return st;
}

void embs_request_clear(embs_request *r)
{
    if (!r || !r->paths)
        return;
    g_ptr_array_free(r->paths, TRUE);
    g_ptr_array_free(r->ids, TRUE);
    g_array_free(r->n_ids, TRUE);
    g_ptr_array_free(r->loaded, TRUE);
    memset(r, 0, sizeof *r);
}
