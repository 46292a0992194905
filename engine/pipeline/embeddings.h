/*
 * embeddings.h - the textual-inversion embeddings a request's prompts may name: the folders'
 * listing turned into token names for the prompt parser (prompt.h, sdg_prompt_dict), and the
 * files read on a name's first use, kept in a cache per context.
 *
 * Why per context and not per model: a model is shared by contexts on other threads and is
 * immutable after loading (sdg.h); a context is used by one thread at a time, so its cache needs
 * no lock. Files are small (a few KB), so a second context reading one again costs little.
 *
 * Not here: the file format (loader/embedding.h), placing vectors in windows (prompt.c), the
 * encoders (clip.h).
 */
#ifndef SDG_EMBEDDINGS_H
#define SDG_EMBEDDINGS_H

#include "../common.h"
#include "../loader/embedding.h"
#include "../model/family.h"
#include "../tokenizer/prompt.h"

// Files read, by path, with the size and time of change they had: a file replaced on disk is
// read again. Entries live until the cache is freed or their file changes (replaced at the first
// use in a later request, never during one).
typedef struct embs_cache embs_cache;

embs_cache *embs_cache_new(void);
void embs_cache_free(embs_cache *c);

// One request's names: every *.safetensors (and *.pt, *.bin, refused if named) file of the
// folders, in folder order then by file name (the first of two equal names wins), named by its
// stem tokenized. dict[e] is what the parser gets for text encoder e.
typedef struct embs_request {
    embs_cache *cache;             // borrowed
    int n_enc;
    int widths[FAMILY_MAX_ENCODERS];
    GPtrArray *paths;              // owned: char *, per name
    GPtrArray *ids;                // owned: int32_t *, per name
    GArray *n_ids;                 // owned: int, per name
    GPtrArray *loaded;             // per name: the emb_file (borrowed from the cache) once used
    struct embs_enc { struct embs_request *r; int enc; } user[FAMILY_MAX_ENCODERS];
    sdg_prompt_dict dict[FAMILY_MAX_ENCODERS];
} embs_request;

// Lists the folders dirs[0..n_dirs) (NULL entries skipped). A folder that does not exist is no
// error unless `required` says so for it (an explicit folder): SDG_ERR_IO naming it. widths are
// the model's text encoders' (n_enc of them). r is filled even on error (embs_request_clear it).
sdg_status embs_request_init(embs_request *r, embs_cache *cache, const sdg_tokenizer *tok,
                             const char *const *dirs, const bool *required, int n_dirs,
                             const int *widths, int n_enc, sdg_error *err);
void embs_request_clear(embs_request *r);

#endif // SDG_EMBEDDINGS_H
