/*
 * lora.c - LoRA / LyCORIS files matched to a model and merged (see lora.h).
 *
 * ref: ComfyUI comfy/lora.py (model_lora_keys_unet/clip: the names a module may have),
 *      comfy/weight_adapter/{lora,loha,lokr,base}.py (calculate_weight, weight_decompose);
 *      kohya-ss sd-scripts networks/lora.py (LoRAInfModule.merge_to, lora_unet_/lora_te_ names);
 *      LyCORIS lycoris/modules/{loha,lokr}.py; diffusers/PEFT lora_A/lora_B and
 *      save_lora_weights' lora_adapter_metadata (PEFT LoraConfig alpha_pattern/rank_pattern).
 *      A1111 extensions-builtin/Lora (the <lora:name:weight> prompt syntax).
 */
#include "lora.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../loader/diffusers.h"
#include "../tensor/gemm.h"

// ---------------------------------------------------------------------------------------------
// The pieces of a module, by key suffix

enum {
    F_UP, F_DOWN, F_MID, F_ALPHA, F_DORA,
    F_HADA_W1A, F_HADA_W1B, F_HADA_W2A, F_HADA_W2B, F_HADA_T1, F_HADA_T2,
    F_LOKR_W1, F_LOKR_W1A, F_LOKR_W1B, F_LOKR_W2, F_LOKR_W2A, F_LOKR_W2B, F_LOKR_T2,
    F_COUNT
};

static const struct {
    const char *suffix;
    int role;
} lora_suffixes[] = {
    { ".lora_up.weight", F_UP }, { ".lora_down.weight", F_DOWN }, { ".lora_mid.weight", F_MID },
    { ".lora_B.weight", F_UP }, { ".lora_A.weight", F_DOWN },
    { ".lora_linear_layer.up.weight", F_UP }, { ".lora_linear_layer.down.weight", F_DOWN },
    { "_lora.up.weight", F_UP }, { "_lora.down.weight", F_DOWN },
    { ".lora.up.weight", F_UP }, { ".lora.down.weight", F_DOWN },
    { ".alpha", F_ALPHA }, { ".dora_scale", F_DORA },
    { ".hada_w1_a", F_HADA_W1A }, { ".hada_w1_b", F_HADA_W1B }, { ".hada_w2_a", F_HADA_W2A },
    { ".hada_w2_b", F_HADA_W2B }, { ".hada_t1", F_HADA_T1 }, { ".hada_t2", F_HADA_T2 },
    { ".lokr_w1", F_LOKR_W1 }, { ".lokr_w1_a", F_LOKR_W1A }, { ".lokr_w1_b", F_LOKR_W1B },
    { ".lokr_w2", F_LOKR_W2 }, { ".lokr_w2_a", F_LOKR_W2A }, { ".lokr_w2_b", F_LOKR_W2B },
    { ".lokr_t2", F_LOKR_T2 },
};

typedef enum { KIND_LORA, KIND_LOHA, KIND_LOKR } lora_kind;

// A factor read as float32, with its shape.
typedef struct lora_factor {
    float *data;
    int n_dims;
    int64_t shape[4];
    int64_t n;
} lora_factor;

// Where a module's delta goes: rows row0.. of a tensor of the model's file.
typedef struct lora_target {
    int tensor;
    int64_t row0, rows;
} lora_target;

typedef struct lora_patch {
    lora_target tg;
    int64_t cols, kernel;   // the target's columns (in x kh x kw) and kernel size kh x kw
    lora_kind kind;
    lora_factor f[F_COUNT];
    float scale;            // alpha / rank, or 1
    float strength;         // the file's multiplier
    char *module;           // for messages
} lora_patch;

struct lora_set {
    const sdg_model *m;
    GPtrArray *patches;     // lora_patch *
    GHashTable *by_tensor;  // tensor index + 1 -> GPtrArray of its patches, in order
    bool *patched;          // per tensor of the model's file
    uint64_t patched_bytes;
    int n_modules;
    GString *notes;
};

static void lora_patch_free(gpointer p)
{
    lora_patch *lp = p;
    for (int i = 0; i < F_COUNT; i++)
        free(lp->f[i].data);
    g_free(lp->module);
    g_free(lp);
}

void lora_set_free(lora_set *s)
{
    if (!s)
        return;
    if (s->by_tensor)
        g_hash_table_destroy(s->by_tensor);
    if (s->patches)
        g_ptr_array_free(s->patches, TRUE);
    g_free(s->patched);
    if (s->notes)
        g_string_free(s->notes, TRUE);
    g_free(s);
}

const bool *lora_set_patched(const lora_set *s) { return s->patched; }
uint64_t lora_set_patched_bytes(const lora_set *s) { return s->patched_bytes; }
int lora_set_modules(const lora_set *s) { return s->n_modules; }
const char *lora_set_notes(const lora_set *s)
{
    return s->notes->len ? s->notes->str : NULL;
}

// ---------------------------------------------------------------------------------------------
// The names a module of the model may have in a LoRA file

// '.' -> '_' (kohya's module names).
static char *lora_underscored(const char *prefix, const char *path)
{
    char *s = g_strconcat(prefix, path, NULL);
    for (char *c = s + strlen(prefix); *c; c++)
        if (*c == '.')
            *c = '_';
    return s;
}

static void lora_alias(GHashTable *names, char *alias, int tensor, int64_t row0, int64_t rows)
{
    lora_target *t = g_new(lora_target, 1);
    *t = (lora_target){ tensor, row0, rows };
    g_hash_table_replace(names, alias, t);
}

// Both kohya's and PEFT's names of a text-encoder module given by its transformers path
// ("text_model.encoder.layers.0.self_attn.q_proj").
static void lora_alias_te(GHashTable *names, int enc, int n_enc, const char *path, int tensor,
                          int64_t row0, int64_t rows)
{
    const char *kohya = n_enc == 1 ? "lora_te_" : enc == 0 ? "lora_te1_" : "lora_te2_";
    lora_alias(names, lora_underscored(kohya, path), tensor, row0, rows);
    lora_alias(names, g_strconcat(enc == 0 ? "text_encoder." : "text_encoder_2.", path, NULL),
               tensor, row0, rows);
}

// open_clip's tensor names -> transformers' module of the same layer.
static const char *const lora_openclip_modules[][2] = {
    { "attn.out_proj.weight", "self_attn.out_proj" },
    { "mlp.c_fc.weight", "mlp.fc1" },
    { "mlp.c_proj.weight", "mlp.fc2" },
};

// Every name (kohya, PEFT, CompVis, diffusers) of every matrix of m's UNet and text encoders
// -> lora_target.
static GHashTable *lora_model_names(const sdg_model *m)
{
    GHashTable *names = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    const st_file *f = m->file;
    const char *up = m->layout->unet;
    size_t up_len = strlen(up);
    int nrb = unet_get_config(m->unet)->num_res_blocks;
    int n_enc = m->spec->n_encoders;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        if ((t->n_dims != 2 && t->n_dims != 4) || t->shape[0] < 1)
            continue;
        const char *name = t->name;
        if (strncmp(name, up, up_len) == 0 && g_str_has_suffix(name, ".weight")) {
            char *ldm = g_strndup(name + up_len, strlen(name) - up_len - strlen(".weight"));
            lora_alias(names, lora_underscored("lora_unet_", ldm), i, 0, t->shape[0]);
            lora_alias(names, g_strconcat("diffusion_model.", ldm, NULL), i, 0, t->shape[0]);
            char *dif = diffusers_unet_module(ldm, nrb);
            if (dif) {
                lora_alias(names, lora_underscored("lora_unet_", dif), i, 0, t->shape[0]);
                lora_alias(names, g_strconcat("unet.", dif, NULL), i, 0, t->shape[0]);
                lora_alias(names, g_strdup(dif), i, 0, t->shape[0]);
            }
            g_free(dif);
            g_free(ldm);
            continue;
        }
        for (int e = 0; e < n_enc; e++) {
            const char *tp = m->layout->te[e];
            size_t tp_len = strlen(tp);
            if (strncmp(name, tp, tp_len) != 0)
                continue;
            const char *rest = name + tp_len;
            char tok[256];
            snprintf(tok, sizeof tok, "%stoken_embedding.weight", tp);
            if (!st_find(f, tok)) {   // transformers' layout: the path is the name
                if (g_str_has_prefix(rest, "encoder.layers.") && g_str_has_suffix(rest, ".weight")) {
                    char *path = g_strdup_printf("text_model.%.*s", (int)(strlen(rest) - 7), rest);
                    lora_alias_te(names, e, n_enc, path, i, 0, t->shape[0]);
                    g_free(path);
                }
                break;
            }
            int layer;
            char tail[128];
            if (sscanf(rest, "transformer.resblocks.%d.%127s", &layer, tail) != 2 || layer < 0)
                break;
            char path[256];
            if (strcmp(tail, "attn.in_proj_weight") == 0 && t->shape[0] % 3 == 0) {
                static const char *const qkv[3] = { "q_proj", "k_proj", "v_proj" };
                int64_t w = t->shape[0] / 3;
                for (int k = 0; k < 3; k++) {
                    snprintf(path, sizeof path, "text_model.encoder.layers.%d.self_attn.%s",
                             layer, qkv[k]);
                    lora_alias_te(names, e, n_enc, path, i, k * w, w);
                }
            }
            for (size_t k = 0; k < G_N_ELEMENTS(lora_openclip_modules); k++)
                if (strcmp(tail, lora_openclip_modules[k][0]) == 0) {
                    snprintf(path, sizeof path, "text_model.encoder.layers.%d.%s", layer,
                             lora_openclip_modules[k][1]);
                    lora_alias_te(names, e, n_enc, path, i, 0, t->shape[0]);
                }
            break;
        }
    }
    return names;
}

// A module name as files write it -> the name the table knows: diffusers' old attention
// processors ("attn1.processor.to_out" -> "attn1.to_out.0").
static char *lora_normal_module(const char *module)
{
    char **parts = g_strsplit(module, ".processor.", -1);
    char *s = g_strjoinv(".", parts);
    g_strfreev(parts);
    if (g_str_has_suffix(s, ".to_out")) {
        char *t = g_strconcat(s, ".0", NULL);
        g_free(s);
        s = t;
    }
    return s;
}

// ---------------------------------------------------------------------------------------------
// Reading a file

// The family a LoRA's metadata names, or SDG_FAMILY_COUNT when it says nothing we know.
static sdg_family lora_metadata_family(const st_file *f, const char **said)
{
    const char *v = st_metadata(f, "modelspec.architecture");
    if (v) {
        *said = v;
        if (g_str_has_prefix(v, "stable-diffusion-xl-v1"))
            return SDG_FAMILY_SDXL;
        if (g_str_has_prefix(v, "stable-diffusion-v2"))
            return SDG_FAMILY_SD2;
        if (g_str_has_prefix(v, "stable-diffusion-v1"))
            return SDG_FAMILY_SD1;
    }
    v = st_metadata(f, "ss_base_model_version");
    if (v) {
        *said = v;
        if (g_str_has_prefix(v, "sdxl"))
            return SDG_FAMILY_SDXL;
        if (g_str_has_prefix(v, "sd_v2") || g_str_has_prefix(v, "sd_2"))
            return SDG_FAMILY_SD2;
        if (g_str_has_prefix(v, "sd_v1") || g_str_has_prefix(v, "sd_1"))
            return SDG_FAMILY_SD1;
    }
    v = st_metadata(f, "ss_v2");
    if (v) {
        *said = v;
        return g_ascii_strcasecmp(v, "true") == 0 ? SDG_FAMILY_SD2 : SDG_FAMILY_COUNT;
    }
    return SDG_FAMILY_COUNT;
}

// PEFT's scale of module `path` of component `comp` ("unet", "text_encoder", ...) from the
// file's lora_adapter_metadata: alpha_pattern / rank_pattern entries match as a suffix of the
// path (at a '.'), else lora_alpha / r. false when the metadata says nothing of comp.
static bool lora_peft_scale(JsonObject *meta, const char *comp, const char *path, float *scale)
{
    if (!meta)
        return false;
    char key[64];
    double alpha, rank;
    snprintf(key, sizeof key, "%s.lora_alpha", comp);
    if (!json_object_has_member(meta, key))
        return false;
    alpha = json_object_get_double_member(meta, key);
    snprintf(key, sizeof key, "%s.r", comp);
    rank = json_object_has_member(meta, key) ? json_object_get_double_member(meta, key) : 0.0;
    static const char *const pats[2] = { "alpha_pattern", "rank_pattern" };
    for (int p = 0; p < 2; p++) {
        snprintf(key, sizeof key, "%s.%s", comp, pats[p]);
        JsonNode *node = json_object_get_member(meta, key);
        if (!node || !JSON_NODE_HOLDS_OBJECT(node))
            continue;
        JsonObject *o = json_node_get_object(node);
        GList *members = json_object_get_members(o);
        for (GList *l = members; l; l = l->next) {
            const char *k = l->data;
            size_t kl = strlen(k), pl = strlen(path);
            if (kl <= pl && strcmp(path + pl - kl, k) == 0 && (kl == pl || path[pl - kl - 1] == '.')) {
                double v = json_object_get_double_member(o, k);
                if (p == 0)
                    alpha = v;
                else
                    rank = v;
                break;
            }
        }
        g_list_free(members);
    }
    if (!(rank > 0.0) || !isfinite(alpha))
        return false;
    *scale = (float)(alpha / rank);
    return true;
}

// Reads a factor as float32 (with read; else its shape only); false with err set when it cannot
// be read, is not finite or has more than 4 dimensions.
static bool lora_read_factor(const st_file *f, const st_tensor *t, bool read, lora_factor *out,
                             sdg_error *err)
{
    if (t->n_dims > 4 || t->n_elements < 1) {
        sdg__fail(err, SDG_ERR_SHAPE, "%s: tensor '%s' has %d dimensions and %lld values: not a "
                  "LoRA factor", st_path(f), t->name, t->n_dims, (long long)t->n_elements);
        return false;
    }
    out->n_dims = t->n_dims;
    out->n = t->n_elements;
    for (int d = 0; d < 4; d++)
        out->shape[d] = d < t->n_dims ? t->shape[d] : 1;
    if (!read)
        return true;
    out->data = malloc((size_t)t->n_elements * sizeof(float));
    if (!out->data) {
        sdg__fail(err, SDG_ERR_NOMEM, "%s: out of memory reading '%s'", st_path(f), t->name);
        return false;
    }
    int64_t bad = 0;
    if (st_read_f32_count(f, t, out->data, &bad, err) != SDG_OK)
        return false;
    if (bad) {
        sdg__fail(err, SDG_ERR_FORMAT, "%s: tensor '%s' has %lld NaN or infinite values: the "
                  "file is damaged", st_path(f), t->name, (long long)bad);
        return false;
    }
    return true;
}

// Rows and columns of a factor seen as a matrix [shape[0], the rest].
static int64_t fr(const lora_factor *f) { return f->n_dims ? f->shape[0] : 1; }
static int64_t fc(const lora_factor *f) { return f->n / fr(f); }

// Checks a patch's factors against its target and sets its scale; false with err set.
static bool lora_check_patch(lora_patch *p, const char *file, float alpha, bool has_alpha,
                             sdg_error *err)
{
    lora_factor *f = p->f;
    int64_t out = p->tg.rows, cols = p->cols;
    int64_t rank = 0;
    bool ok = false;
    char why[160] = "";
    switch (p->kind) {
    case KIND_LORA:
        rank = fr(&f[F_DOWN]);
        if (f[F_MID].n) {   // up [out, r], mid [r, r, kh, kw], down [r, in]
            ok = fc(&f[F_UP]) == fr(&f[F_MID]) && f[F_MID].shape[1] == fr(&f[F_DOWN]) &&
                 fr(&f[F_UP]) == out &&
                 fc(&f[F_DOWN]) * f[F_MID].shape[2] * f[F_MID].shape[3] == cols;
        } else {
            ok = fc(&f[F_UP]) == rank && fr(&f[F_UP]) == out && fc(&f[F_DOWN]) == cols;
        }
        snprintf(why, sizeof why, "up [%lld x %lld] and down [%lld x %lld]",
                 (long long)fr(&f[F_UP]), (long long)fc(&f[F_UP]), (long long)fr(&f[F_DOWN]),
                 (long long)fc(&f[F_DOWN]));
        break;
    case KIND_LOHA:
        rank = fr(&f[F_HADA_W1B]);
        if (f[F_HADA_T1].n && f[F_HADA_T2].n) {
            // t [r, r, kh, kw], w_a [r, out], w_b [r, in]
            int64_t k = f[F_HADA_T1].shape[2] * f[F_HADA_T1].shape[3];
            ok = f[F_HADA_T2].n == f[F_HADA_T1].n &&
                 fr(&f[F_HADA_W1A]) == f[F_HADA_T1].shape[0] &&
                 fr(&f[F_HADA_W1B]) == f[F_HADA_T1].shape[1] &&
                 fr(&f[F_HADA_W2A]) == f[F_HADA_T2].shape[0] &&
                 fr(&f[F_HADA_W2B]) == f[F_HADA_T2].shape[1] &&
                 fc(&f[F_HADA_W1A]) == out && fc(&f[F_HADA_W2A]) == out &&
                 fc(&f[F_HADA_W1B]) * k == cols && fc(&f[F_HADA_W2B]) * k == cols;
        } else {
            ok = fr(&f[F_HADA_W1A]) == out && fr(&f[F_HADA_W2A]) == out &&
                 fc(&f[F_HADA_W1A]) == rank && fc(&f[F_HADA_W2A]) == fr(&f[F_HADA_W2B]) &&
                 fc(&f[F_HADA_W1B]) == cols && fc(&f[F_HADA_W2B]) == cols;
        }
        snprintf(why, sizeof why, "hada_w1 [%lld x %lld] and hada_w2 [%lld x %lld]",
                 (long long)fr(&f[F_HADA_W1A]), (long long)fc(&f[F_HADA_W1B]),
                 (long long)fr(&f[F_HADA_W2A]), (long long)fc(&f[F_HADA_W2B]));
        break;
    case KIND_LOKR: {
        // w1 [a, b], w2 [c, d(, kh, kw)]: kron is [a c, b d kh kw]
        int64_t a, b, c, d, k = 1;
        bool w1_ok = true, w2_ok = true;
        if (f[F_LOKR_W1].n) {
            a = fr(&f[F_LOKR_W1]);
            b = fc(&f[F_LOKR_W1]);
        } else {
            w1_ok = f[F_LOKR_W1A].n && f[F_LOKR_W1B].n &&
                    fc(&f[F_LOKR_W1A]) == fr(&f[F_LOKR_W1B]);
            a = f[F_LOKR_W1A].n ? fr(&f[F_LOKR_W1A]) : 0;
            b = f[F_LOKR_W1B].n ? fc(&f[F_LOKR_W1B]) : 0;
            rank = f[F_LOKR_W1B].n ? fr(&f[F_LOKR_W1B]) : 0;
        }
        if (f[F_LOKR_W2].n) {
            c = fr(&f[F_LOKR_W2]);
            d = f[F_LOKR_W2].shape[1];
            k = f[F_LOKR_W2].shape[2] * f[F_LOKR_W2].shape[3];
        } else if (f[F_LOKR_T2].n) {   // t2 [r, r, kh, kw], w2_a [r, c], w2_b [r, d]
            w2_ok = f[F_LOKR_W2A].n && f[F_LOKR_W2B].n &&
                    fr(&f[F_LOKR_W2A]) == f[F_LOKR_T2].shape[0] &&
                    fr(&f[F_LOKR_W2B]) == f[F_LOKR_T2].shape[1];
            c = f[F_LOKR_W2A].n ? fc(&f[F_LOKR_W2A]) : 0;
            d = f[F_LOKR_W2B].n ? fc(&f[F_LOKR_W2B]) : 0;
            k = f[F_LOKR_T2].shape[2] * f[F_LOKR_T2].shape[3];
            rank = f[F_LOKR_W2B].n ? fr(&f[F_LOKR_W2B]) : 0;
        } else {   // w2_a [c, r], w2_b [r, d (x kh x kw)]
            w2_ok = f[F_LOKR_W2A].n && f[F_LOKR_W2B].n &&
                    fc(&f[F_LOKR_W2A]) == fr(&f[F_LOKR_W2B]);
            c = f[F_LOKR_W2A].n ? fr(&f[F_LOKR_W2A]) : 0;
            d = f[F_LOKR_W2B].n ? fc(&f[F_LOKR_W2B]) : 0;
            rank = f[F_LOKR_W2B].n ? fr(&f[F_LOKR_W2B]) : 0;   // d holds a conv's kernel too
        }
        ok = w1_ok && w2_ok && a * c == out && b * d * k == cols;
        snprintf(why, sizeof why, "kron of [%lld x %lld] and [%lld x %lld x %lld]",
                 (long long)a, (long long)b, (long long)c, (long long)d, (long long)k);
        break;   // both factors full: rank 0, alpha is not used (scale 1)
    }
    }
    if (!ok) {
        sdg__fail(err, SDG_ERR_SHAPE, "%s: module '%s' does not fit the model: its %s make "
                  "[%lld x %lld] but the layer is [%lld x %lld]; the LoRA is for another model "
                  "family or architecture", file, p->module, why, (long long)out,
                  (long long)cols, (long long)p->tg.rows, (long long)p->cols);
        return false;
    }
    if (f[F_DORA].n) {
        int64_t in = cols / p->kernel;
        if (f[F_DORA].n != in && f[F_DORA].n != out) {
            sdg__fail(err, SDG_ERR_SHAPE, "%s: module '%s' has a dora_scale of %lld values for "
                      "a layer of %lld outputs and %lld inputs", file, p->module,
                      (long long)f[F_DORA].n, (long long)out, (long long)in);
            return false;
        }
    }
    p->scale = has_alpha && rank > 0 ? alpha / (float)rank : 1.0f;
    return true;
}

// Opens one file and adds its patches to s.
static sdg_status lora_plan_file(lora_set *s, GHashTable *names, const sdg_lora *l, bool read,
                                 sdg_error *err)
{
    st_file *f = st_open(l->path, err);
    if (!f)
        return err ? err->status : SDG_ERR_IO;
    char *base = g_path_get_basename(l->path);
    sdg_status st = SDG_OK;
    const sdg_model *m = s->m;
    const char *said = NULL;
    sdg_family fam = lora_metadata_family(f, &said);
    if (fam != SDG_FAMILY_COUNT && fam != m->spec->id) {
        st = sdg__fail(err, SDG_ERR_UNSUPPORTED, "LoRA %s is for %s (its metadata says %s) and "
                       "cannot be applied to %s, an %s model", base, sdg_family_name(fam), said,
                       m->base, sdg_family_name(m->spec->id));
        goto done;
    }
    JsonParser *parser = NULL;
    JsonObject *meta = NULL;
    const char *peft = st_metadata(f, "lora_adapter_metadata");
    if (peft) {
        parser = json_parser_new();
        if (json_parser_load_from_data(parser, peft, -1, NULL) &&
            JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser)))
            meta = json_node_get_object(json_parser_get_root(parser));
    }

    // Group the keys by module.
    GHashTable *mods = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    GPtrArray *order = g_ptr_array_new();   // module names in file order (owned by mods)
    GString *unknown = g_string_new(NULL);
    int n_unknown = 0;
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        int role = -1;
        size_t cut = 0;
        for (size_t k = 0; k < G_N_ELEMENTS(lora_suffixes) && role < 0; k++)
            if (g_str_has_suffix(t->name, lora_suffixes[k].suffix)) {
                role = lora_suffixes[k].role;
                cut = strlen(lora_suffixes[k].suffix);
            }
        if (role < 0) {
            if (n_unknown++ < 3)
                g_string_append_printf(unknown, "%s'%s'", unknown->len ? ", " : "", t->name);
            continue;
        }
        char *raw = g_strndup(t->name, strlen(t->name) - cut);
        char *mod = lora_normal_module(raw);
        g_free(raw);
        const st_tensor **slots = g_hash_table_lookup(mods, mod);
        if (!slots) {
            slots = g_new0(const st_tensor *, F_COUNT);
            g_hash_table_insert(mods, mod, slots);
            g_ptr_array_add(order, mod);
        } else {
            g_free(mod);
        }
        slots[role] = t;
    }

    int matched = 0, unmatched = 0, n_mod = (int)order->len;
    GString *missed = g_string_new(NULL);
    for (guint i = 0; i < order->len && st == SDG_OK; i++) {
        const char *mod = order->pdata[i];
        const st_tensor **slots = g_hash_table_lookup(mods, mod);
        lora_kind kind = slots[F_UP] || slots[F_DOWN] ? KIND_LORA
                         : slots[F_HADA_W1A] ? KIND_LOHA : KIND_LOKR;
        bool complete = kind == KIND_LORA ? slots[F_UP] && slots[F_DOWN]
                        : kind == KIND_LOHA ? slots[F_HADA_W1A] && slots[F_HADA_W1B] &&
                                                  slots[F_HADA_W2A] && slots[F_HADA_W2B]
                        : (slots[F_LOKR_W1] || slots[F_LOKR_W1A]) &&
                              (slots[F_LOKR_W2] || slots[F_LOKR_W2A]);
        if (!complete) {
            // an alpha or dora_scale alone, or a factor without its partner
            if (slots[F_UP] || slots[F_DOWN] || slots[F_HADA_W1A] || slots[F_LOKR_W1] ||
                slots[F_LOKR_W1A] || slots[F_LOKR_W2] || slots[F_LOKR_W2A] || slots[F_HADA_W1B]) {
                st = sdg__fail(err, SDG_ERR_SHAPE, "%s: module '%s' lacks a factor (a LoRA "
                               "needs up and down, LoHa four hada_ and LoKr two lokr_ weights)",
                               base, mod);
                break;
            }
            continue;
        }
        const lora_target *tg = g_hash_table_lookup(names, mod);
        if (!tg) {
            if (unmatched++ < 3)
                g_string_append_printf(missed, "%s'%s'", missed->len ? ", " : "", mod);
            continue;
        }
        const st_tensor *target = st_at(m->file, tg->tensor);
        lora_patch *p = g_new0(lora_patch, 1);
        p->tg = *tg;
        p->cols = target->n_elements / target->shape[0];
        p->kernel = target->n_dims == 4 ? target->shape[2] * target->shape[3] : 1;
        p->kind = kind;
        p->strength = l->weight;
        p->module = g_strdup(mod);
        g_ptr_array_add(s->patches, p);
        float alpha = 1.0f;
        bool has_alpha = false;
        for (int r = 0; r < F_COUNT && st == SDG_OK; r++)
            if (slots[r] && !lora_read_factor(f, slots[r], read, &p->f[r], err))
                st = err ? err->status : SDG_ERR_FORMAT;
        if (st != SDG_OK)
            break;
        if (p->f[F_ALPHA].n) {
            // a shapes-only plan reads the one value its scale needs
            float a = 0.0f;
            int64_t bad = 0;
            if (!p->f[F_ALPHA].data &&
                st_read_f32_count(f, slots[F_ALPHA], &a, &bad, err) != SDG_OK) {
                st = err ? err->status : SDG_ERR_IO;
                break;
            }
            alpha = p->f[F_ALPHA].data ? p->f[F_ALPHA].data[0] : a;
            has_alpha = true;
        } else {
            const char *dot = strchr(mod, '.');
            char *comp = dot ? g_strndup(mod, (gsize)(dot - mod)) : NULL;
            float sc;
            if (comp && lora_peft_scale(meta, comp, dot + 1, &sc)) {
                // alpha / rank from the metadata: as an alpha over the rank the check finds
                alpha = sc * (float)(kind == KIND_LORA ? fr(&p->f[F_DOWN]) : 1);
                has_alpha = kind == KIND_LORA;
            }
            g_free(comp);
        }
        if (!lora_check_patch(p, base, alpha, has_alpha, err)) {
            st = err ? err->status : SDG_ERR_SHAPE;
            break;
        }
        GPtrArray *list = g_hash_table_lookup(s->by_tensor, GINT_TO_POINTER(tg->tensor + 1));
        if (!list) {
            list = g_ptr_array_new();
            g_hash_table_insert(s->by_tensor, GINT_TO_POINTER(tg->tensor + 1), list);
        }
        g_ptr_array_add(list, p);
        if (!s->patched[tg->tensor]) {
            s->patched[tg->tensor] = true;
            // as held: rows padded to whole panels of either operand (common.h), an upper bound
            uint64_t rows = (uint64_t)target->shape[0], es = target->dtype == ST_F16 ||
                            target->dtype == ST_BF16 ? 2 : 4;
            uint64_t pa = sdg_panel_pad(SDG_PANEL_A), pb = sdg_panel_pad(SDG_PANEL_B);
            uint64_t ra = (rows + pa - 1) / pa * pa, rb = (rows + pb - 1) / pb * pb;
            s->patched_bytes += (ra > rb ? ra : rb) * (uint64_t)p->cols * es;
        }
        matched++;
    }
    if (st == SDG_OK && n_mod == 0)
        st = sdg__fail(err, SDG_ERR_FORMAT, "%s has no LoRA, LoHa or LoKr tensors (keys such as "
                       "'lora_unet_..._to_q.lora_down.weight' or '...lora_A.weight')", base);
    else if (st == SDG_OK && matched == 0)
        st = sdg__fail(err, SDG_ERR_UNSUPPORTED, "none of the %d modules of LoRA %s matches a "
                       "layer of %s (%s), e.g. %s: it is for another model family", unmatched,
                       base, m->base, sdg_family_name(m->spec->id), missed->str);
    if (st == SDG_OK && unmatched)
        g_string_append_printf(s->notes, "%sLoRA %s: %d of its %d modules match no layer of the "
                               "model and were not applied: %s%s.", s->notes->len ? " " : "",
                               base, unmatched, matched + unmatched, missed->str,
                               unmatched > 3 ? ", ..." : "");
    if (st == SDG_OK && n_unknown)
        g_string_append_printf(s->notes, "%sLoRA %s: %d tensor%s of unknown kind not applied: "
                               "%s%s.", s->notes->len ? " " : "", base, n_unknown,
                               n_unknown == 1 ? "" : "s", unknown->str,
                               n_unknown > 3 ? ", ..." : "");
    s->n_modules += matched;
    g_string_free(missed, TRUE);
    g_string_free(unknown, TRUE);
    g_ptr_array_free(order, TRUE);
    g_hash_table_destroy(mods);
    if (parser)
        g_object_unref(parser);
done:
    g_free(base);
    st_close(f);
    return st;
}

static void lora_list_free(gpointer p)
{
    g_ptr_array_free(p, TRUE);
}

sdg_status lora_set_plan(const sdg_model *m, const sdg_lora *loras, int n, bool read,
                         lora_set **out, sdg_error *err)
{
    *out = NULL;
    if (m->header_only)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "LoRAs need a model loaded with its weights");
    lora_set *s = g_new0(lora_set, 1);
    s->m = m;
    s->patches = g_ptr_array_new_with_free_func(lora_patch_free);
    s->by_tensor = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, lora_list_free);
    s->patched = g_new0(bool, st_count(m->file) > 0 ? st_count(m->file) : 1);
    s->notes = g_string_new(NULL);
    GHashTable *names = lora_model_names(m);
    sdg_status st = SDG_OK;
    for (int i = 0; i < n && st == SDG_OK; i++) {
        if (!loras[i].path || !loras[i].path[0])
            st = sdg__fail(err, SDG_ERR_INVALID_ARG, "LoRA %d has no path", i + 1);
        else if (!isfinite(loras[i].weight) || fabsf(loras[i].weight) > LORA_MAX_WEIGHT)
            st = sdg__fail(err, SDG_ERR_INVALID_ARG, "the weight of LoRA %s must be between "
                           "-10 and 10 (got %g)", loras[i].path, (double)loras[i].weight);
        else
            st = lora_plan_file(s, names, &loras[i], read, err);
    }
    g_hash_table_destroy(names);
    if (st != SDG_OK) {
        lora_set_free(s);
        return st;
    }
    *out = s;
    return SDG_OK;
}

// ---------------------------------------------------------------------------------------------
// Merging

// c[m, n] = a[m, k] b[k, n], row-major float32, with the engine's own matrix product in float32
// (exact precision) on this thread: lora_set_patch runs on the threads of sdg_wb_read, one
// tensor each.
static void lora_matmul_add(const float *a, const float *b, float *c, int64_t m, int64_t k,
                            int64_t n, float alpha, float beta)
{
    sdg_exec ex;
    sdg__exec_init(&ex, 1);
    sdg_gemm_operand oa = { a, SDG_DT_F32, (ptrdiff_t)k, 1, 0, NULL };
    sdg_gemm_operand ob = { b, SDG_DT_F32, (ptrdiff_t)n, 1, 0, NULL };
    sdg_gemm(&ex, (int)m, (int)n, (int)k, alpha, &oa, &ob, beta, c, (ptrdiff_t)n);
    sdg__exec_free(&ex);
}

static void lora_matmul(const float *a, const float *b, float *c, int64_t m, int64_t k, int64_t n)
{
    lora_matmul_add(a, b, c, m, k, n, 1.0f, 0.0f);
}

// The Tucker product out[p, q, s] = sum_ij t[i, j, s] wa[i, p] wb[j, q] (t [R1, R2, K], wa
// [R1, P], wb [R2, Q]): LyCORIS's rebuild of a convolution from its core.
static void lora_tucker(const float *t, int64_t r1, int64_t r2, int64_t kk, const float *wa,
                        int64_t np, const float *wb, int64_t nq, float *out)
{
    for (int64_t k = 0; k < np * nq * kk; k++)
        out[k] = 0.0f;
    for (int64_t i = 0; i < r1; i++)
        for (int64_t j = 0; j < r2; j++)
            for (int64_t s = 0; s < kk; s++) {
                float tv = t[(i * r2 + j) * kk + s];
                for (int64_t p = 0; p < np; p++) {
                    float a = tv * wa[i * np + p];
                    for (int64_t q = 0; q < nq; q++)
                        out[(p * nq + q) * kk + s] += a * wb[j * nq + q];
                }
            }
}

// d [rows, cols] = the patch's difference, unscaled; false when out of memory.
static bool lora_delta(const lora_patch *p, float *d)
{
    const lora_factor *f = p->f;
    int64_t out = p->tg.rows, cols = p->cols;
    switch (p->kind) {
    case KIND_LORA:
        if (f[F_MID].data) {
            // up [out, r1], mid [r1, r2, kh, kw], down [r2, in]: sum up[o,a] mid[a,b,s] down[b,i]
            // = tucker(mid, up^T, down); up^T is made first.
            int64_t r1 = fc(&f[F_UP]), r2 = f[F_MID].shape[1];
            int64_t kk = f[F_MID].shape[2] * f[F_MID].shape[3], in = fc(&f[F_DOWN]);
            float *upt = malloc((size_t)(r1 * out) * sizeof *upt);
            if (!upt)
                return false;
            for (int64_t o = 0; o < out; o++)
                for (int64_t a = 0; a < r1; a++)
                    upt[a * out + o] = f[F_UP].data[o * r1 + a];
            lora_tucker(f[F_MID].data, r1, r2, kk, upt, out, f[F_DOWN].data, in, d);
            free(upt);
        } else {
            lora_matmul(f[F_UP].data, f[F_DOWN].data, d, out, fr(&f[F_DOWN]), cols);
        }
        return true;
    case KIND_LOHA: {
        float *m2 = malloc((size_t)(out * cols) * sizeof *m2);
        if (!m2)
            return false;
        if (f[F_HADA_T1].data && f[F_HADA_T2].data) {
            int64_t kk = f[F_HADA_T1].shape[2] * f[F_HADA_T1].shape[3], in = cols / kk;
            lora_tucker(f[F_HADA_T1].data, f[F_HADA_T1].shape[0], f[F_HADA_T1].shape[1], kk,
                        f[F_HADA_W1A].data, out, f[F_HADA_W1B].data, in, d);
            lora_tucker(f[F_HADA_T2].data, f[F_HADA_T2].shape[0], f[F_HADA_T2].shape[1], kk,
                        f[F_HADA_W2A].data, out, f[F_HADA_W2B].data, in, m2);
        } else {
            lora_matmul(f[F_HADA_W1A].data, f[F_HADA_W1B].data, d, out,
                        fr(&f[F_HADA_W1B]), cols);
            lora_matmul(f[F_HADA_W2A].data, f[F_HADA_W2B].data, m2, out,
                        fr(&f[F_HADA_W2B]), cols);
        }
        for (int64_t k = 0; k < out * cols; k++)
            d[k] *= m2[k];
        free(m2);
        return true;
    }
    case KIND_LOKR: {
        float *w1 = f[F_LOKR_W1].data, *w2 = f[F_LOKR_W2].data, *own1 = NULL, *own2 = NULL;
        int64_t a, b, c, dd;   // w1 [a, b], w2 [c, dd x kk] as a matrix
        if (w1) {
            a = fr(&f[F_LOKR_W1]);
            b = fc(&f[F_LOKR_W1]);
        } else {
            a = fr(&f[F_LOKR_W1A]);
            b = fc(&f[F_LOKR_W1B]);
            own1 = w1 = malloc((size_t)(a * b) * sizeof *w1);
            if (w1)
                lora_matmul(f[F_LOKR_W1A].data, f[F_LOKR_W1B].data, w1, a,
                            fr(&f[F_LOKR_W1B]), b);
        }
        c = out / a;
        dd = cols / b;   // d x kernel
        if (!w2) {
            own2 = w2 = malloc((size_t)(c * dd) * sizeof *w2);
            if (w2 && f[F_LOKR_T2].data)   // t2 [r, r, kh, kw], w2_a [r, c], w2_b [r, d]
                lora_tucker(f[F_LOKR_T2].data, f[F_LOKR_T2].shape[0], f[F_LOKR_T2].shape[1],
                            f[F_LOKR_T2].shape[2] * f[F_LOKR_T2].shape[3], f[F_LOKR_W2A].data,
                            c, f[F_LOKR_W2B].data, fc(&f[F_LOKR_W2B]), w2);
            else if (w2)
                lora_matmul(f[F_LOKR_W2A].data, f[F_LOKR_W2B].data, w2, c,
                            fr(&f[F_LOKR_W2B]), dd);
        }
        if (!w1 || !w2) {
            free(own1);
            free(own2);
            return false;
        }
        // kron: row i c + k, column (j d + l) kk + s = (j dd) + (l kk + s)
        for (int64_t i = 0; i < a; i++)
            for (int64_t k = 0; k < c; k++) {
                float *row = d + (i * c + k) * cols;
                for (int64_t j = 0; j < b; j++) {
                    float v = w1[i * b + j];
                    for (int64_t q = 0; q < dd; q++)
                        row[j * dd + q] = v * w2[k * dd + q];
                }
            }
        free(own1);
        free(own2);
        return true;
    }
    }
    return false;
}

// ComfyUI's weight_decompose: w (the slice, [rows, cols]) becomes w + m (wc - w) with wc = w +
// scale d scaled to the norms dora_scale gives, per input column (its kernel included), or per
// output row for a scale of `rows` values ([out, 1], LyCORIS wd_on_output).
static void lora_dora(const lora_patch *p, float *w, float *d)
{
    int64_t rows = p->tg.rows, cols = p->cols, kk = p->kernel, in = cols / kk;
    const lora_factor *ds = &p->f[F_DORA];
    for (int64_t k = 0; k < rows * cols; k++)
        d[k] = w[k] + p->scale * d[k];   // wc
    bool per_row = ds->n == rows && !(ds->n == in && ds->n_dims >= 2 && ds->shape[0] == 1);
    if (per_row) {
        for (int64_t o = 0; o < rows; o++) {
            double n2 = 0.0;
            for (int64_t c = 0; c < cols; c++)
                n2 += (double)d[o * cols + c] * d[o * cols + c];
            float sc = ds->data[o] / (float)sqrt(n2);
            for (int64_t c = 0; c < cols; c++)
                d[o * cols + c] *= sc;
        }
    } else {
        for (int64_t j = 0; j < in; j++) {
            double n2 = 0.0;
            for (int64_t o = 0; o < rows; o++)
                for (int64_t s = 0; s < kk; s++)
                    n2 += (double)d[o * cols + j * kk + s] * d[o * cols + j * kk + s];
            float sc = ds->data[j] / (float)sqrt(n2);
            for (int64_t o = 0; o < rows; o++)
                for (int64_t s = 0; s < kk; s++)
                    d[o * cols + j * kk + s] *= sc;
        }
    }
    for (int64_t k = 0; k < rows * cols; k++)
        w[k] = p->strength == 1.0f ? d[k] : w[k] + p->strength * (d[k] - w[k]);
}

bool lora_set_patch(void *user, int tensor, float *w, int64_t rows, int64_t cols, sdg_error *err)
{
    const lora_set *s = user;
    GPtrArray *list = g_hash_table_lookup(s->by_tensor, GINT_TO_POINTER(tensor + 1));
    for (guint i = 0; list && i < list->len; i++) {
        const lora_patch *p = list->pdata[i];
        SDG_ASSERT(p->cols == cols && p->tg.row0 + p->tg.rows <= rows);
        float *dst = w + p->tg.row0 * cols;
        if (p->kind == KIND_LORA && !p->f[F_MID].data && !p->f[F_DORA].data) {
            // The common case in place: w += m s up @ down, no buffer of w's size.
            lora_matmul_add(p->f[F_UP].data, p->f[F_DOWN].data, dst, p->tg.rows,
                            fr(&p->f[F_DOWN]), cols, p->strength * p->scale, 1.0f);
            continue;
        }
        float *d = malloc((size_t)(p->tg.rows * cols) * sizeof *d);
        if (!d || !lora_delta(p, d)) {
            free(d);
            sdg__fail(err, SDG_ERR_NOMEM, "out of memory merging LoRA module '%s'", p->module);
            return false;
        }
        if (p->f[F_DORA].data) {
            lora_dora(p, dst, d);
        } else {
            float k = p->strength * p->scale;
            for (int64_t j = 0; j < p->tg.rows * cols; j++)
                dst[j] += k * d[j];
        }
        free(d);
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// Prompt tags and names

sdg_status lora_prompt_tags(const char *prompt, char **clean, GPtrArray *names, GArray *weights,
                            sdg_error *err)
{
    GString *out = g_string_new(NULL);
    const char *p = prompt ? prompt : "";
    for (;;) {
        const char *a = strstr(p, "<lora:"), *b = strstr(p, "<lyco:");
        const char *tag = a && (!b || a < b) ? a : b;
        if (!tag) {
            g_string_append(out, p);
            break;
        }
        g_string_append_len(out, p, tag - p);
        const char *end = strchr(tag, '>');
        if (!end) {
            g_string_free(out, TRUE);
            return sdg__fail(err, SDG_ERR_INVALID_ARG, "the LoRA tag '%.40s' has no closing '>' "
                             "(write <lora:name:weight>)", tag);
        }
        char *body = g_strndup(tag + 6, (gsize)(end - tag - 6));
        char **f = g_strsplit(body, ":", -1);
        guint n = g_strv_length(f);
        char *name = n >= 1 ? g_strstrip(g_strdup(f[0])) : g_strdup("");
        double w = 1.0;
        char *stop = NULL;
        bool ok = n >= 1 && n <= 2 && name[0];
        if (ok && n == 2) {
            char *wt = g_strstrip(g_strdup(f[1]));
            w = g_ascii_strtod(wt, &stop);
            ok = wt[0] && stop && *stop == '\0' && isfinite(w) && fabs(w) <= LORA_MAX_WEIGHT;
            g_free(wt);
        }
        g_strfreev(f);
        if (!ok) {
            sdg_status st = sdg__fail(err, SDG_ERR_INVALID_ARG, "malformed LoRA tag '<%.*s>': "
                                      "write <lora:name> or <lora:name:weight> with a weight "
                                      "between -10 and 10", (int)(end - tag - 1), tag + 1);
            g_free(name);
            g_free(body);
            g_string_free(out, TRUE);
            return st;
        }
        g_free(body);
        g_ptr_array_add(names, name);
        float wf = (float)w;
        g_array_append_val(weights, wf);
        p = end + 1;
    }
    *clean = g_string_free(out, FALSE);
    return SDG_OK;
}

sdg_status lora_find(const char *name, const char *const *dirs, int n_dirs, char **path,
                     sdg_error *err)
{
    *path = NULL;
    if (strchr(name, '/') || strcmp(name, "..") == 0)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "the LoRA name '%s' must be a file name "
                         "without folders", name);
    GString *searched = g_string_new(NULL);
    for (int i = 0; i < n_dirs; i++) {
        if (!dirs[i] || !dirs[i][0])
            continue;
        char *file = g_strconcat(name, ".safetensors", NULL);
        char *p = g_build_filename(dirs[i], file, NULL);
        g_free(file);
        if (g_file_test(p, G_FILE_TEST_IS_REGULAR)) {
            *path = p;
            g_string_free(searched, TRUE);
            return SDG_OK;
        }
        g_free(p);
        g_string_append_printf(searched, "%s%s", searched->len ? ", " : "", dirs[i]);
    }
    sdg_status st = sdg__fail(err, SDG_ERR_IO, "no LoRA named '%s' (%s.safetensors) in %s", name,
                              name, searched->len ? searched->str : "any folder (none is set)");
    g_string_free(searched, TRUE);
    return st;
}
