/*
 * diffusers.c - diffusers pipeline folders as one st_file in the single-file naming (see
 * diffusers.h).
 *
 * ref: diffusers scripts/convert_diffusers_to_original_stable_diffusion.py (unet_conversion_map,
 *      unet_conversion_map_resnet, unet_conversion_map_layer, vae_conversion_map,
 *      vae_conversion_map_attn) and convert_diffusers_to_original_sdxl.py (add_embedding ->
 *      label_emb); ComfyUI comfy/utils.py unet_to_diffusers (the same layer arithmetic);
 *      shared/reference/manifests/sd15-diffusers-*.tsv (every name of the SD1.5 folder).
 */
#include "diffusers.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>

#define DIFFUSERS_MAX_LEVELS 16

// ---------------------------------------------------------------------------------------------
// Name tables

// ResnetBlock2D -> ldm ResBlock (UNet)
static const char *const unet_resnet_names[][2] = {
    { "norm1", "in_layers.0" }, { "conv1", "in_layers.2" }, { "time_emb_proj", "emb_layers.1" },
    { "norm2", "out_layers.0" }, { "conv2", "out_layers.3" },
    { "conv_shortcut", "skip_connection" },
};

// Top-level UNet modules.
static const char *const unet_top_names[][2] = {
    { "time_embedding.linear_1.", "time_embed.0." }, { "time_embedding.linear_2.", "time_embed.2." },
    { "add_embedding.linear_1.", "label_emb.0.0." }, { "add_embedding.linear_2.", "label_emb.0.2." },
    { "conv_in.", "input_blocks.0.0." }, { "conv_norm_out.", "out.0." }, { "conv_out.", "out.2." },
};

// The VAE's modules: resnet shortcut, top level, mid-block attention (current and old names).
static const char *const vae_names[][2] = {
    { "conv_shortcut", "nin_shortcut" }, { "conv_norm_out", "norm_out" },
    { "mid_block.attentions.0.group_norm", "mid.attn_1.norm" },
    { "mid_block.attentions.0.to_q", "mid.attn_1.q" },
    { "mid_block.attentions.0.to_k", "mid.attn_1.k" },
    { "mid_block.attentions.0.to_v", "mid.attn_1.v" },
    { "mid_block.attentions.0.to_out.0", "mid.attn_1.proj_out" },
    { "mid_block.attentions.0.query", "mid.attn_1.q" },
    { "mid_block.attentions.0.key", "mid.attn_1.k" },
    { "mid_block.attentions.0.value", "mid.attn_1.v" },
    { "mid_block.attentions.0.proj_attn", "mid.attn_1.proj_out" },
};

// What the renaming needs to know of the folder's shapes.
typedef struct diffusers_layout {
    int unet_res;                            // resnets per down block (layers_per_block)
    bool up_attn[DIFFUSERS_MAX_LEVELS];      // up block i has attentions
    int vae_levels;                          // decoder up blocks
} diffusers_layout;

// "<head><i>.<rest>" -> i and a pointer to rest, else -1.
static int diffusers_index(const char *name, const char *head, const char **rest)
{
    size_t n = strlen(head);
    if (strncmp(name, head, n) != 0 || !g_ascii_isdigit(name[n]))
        return -1;
    char *end = NULL;
    long i = strtol(name + n, &end, 10);
    if (*end != '.' || i < 0 || i >= 1000)
        return -1;
    *rest = end + 1;
    return (int)i;
}

// rest = "<module>.<param>" with module in table -> its new name + "." + param.
static char *diffusers_map_module(const char *rest, const char *const (*table)[2], size_t n)
{
    for (size_t k = 0; k < n; k++) {
        size_t len = strlen(table[k][0]);
        if (strncmp(rest, table[k][0], len) == 0 && rest[len] == '.')
            return g_strconcat(table[k][1], rest + len, NULL);
    }
    return NULL;
}

// A UNet tensor name in diffusers' naming -> the CompVis name (without prefix), or NULL.
static char *diffusers_unet_name(const char *name, const diffusers_layout *lay)
{
    const char *rest, *r2;
    int nrb = lay->unet_res;
    for (size_t k = 0; k < G_N_ELEMENTS(unet_top_names); k++)
        if (g_str_has_prefix(name, unet_top_names[k][0]))
            return g_strconcat(unet_top_names[k][1], name + strlen(unet_top_names[k][0]), NULL);
    int i, j;
    if ((i = diffusers_index(name, "down_blocks.", &rest)) >= 0) {
        if ((j = diffusers_index(rest, "resnets.", &r2)) >= 0) {
            char *m = diffusers_map_module(r2, unet_resnet_names, G_N_ELEMENTS(unet_resnet_names));
            char *out = m ? g_strdup_printf("input_blocks.%d.0.%s", 1 + i * (nrb + 1) + j, m) : NULL;
            g_free(m);
            return out;
        }
        if ((j = diffusers_index(rest, "attentions.", &r2)) >= 0)
            return g_strdup_printf("input_blocks.%d.1.%s", 1 + i * (nrb + 1) + j, r2);
        if (g_str_has_prefix(rest, "downsamplers.0.conv."))
            return g_strdup_printf("input_blocks.%d.0.op.%s", (i + 1) * (nrb + 1),
                                   rest + strlen("downsamplers.0.conv."));
        return NULL;
    }
    if ((i = diffusers_index(name, "up_blocks.", &rest)) >= 0) {
        if ((j = diffusers_index(rest, "resnets.", &r2)) >= 0) {
            char *m = diffusers_map_module(r2, unet_resnet_names, G_N_ELEMENTS(unet_resnet_names));
            char *out = m ? g_strdup_printf("output_blocks.%d.0.%s", i * (nrb + 1) + j, m) : NULL;
            g_free(m);
            return out;
        }
        if ((j = diffusers_index(rest, "attentions.", &r2)) >= 0)
            return g_strdup_printf("output_blocks.%d.1.%s", i * (nrb + 1) + j, r2);
        if (g_str_has_prefix(rest, "upsamplers.0.") && i < DIFFUSERS_MAX_LEVELS)
            return g_strdup_printf("output_blocks.%d.%d.%s", i * (nrb + 1) + nrb,
                                   lay->up_attn[i] ? 2 : 1, rest + strlen("upsamplers.0."));
        return NULL;
    }
    if (g_str_has_prefix(name, "mid_block.")) {
        rest = name + strlen("mid_block.");
        if ((j = diffusers_index(rest, "resnets.", &r2)) >= 0) {
            char *m = diffusers_map_module(r2, unet_resnet_names, G_N_ELEMENTS(unet_resnet_names));
            char *out = m ? g_strdup_printf("middle_block.%d.%s", 2 * j, m) : NULL;
            g_free(m);
            return out;
        }
        if ((j = diffusers_index(rest, "attentions.", &r2)) == 0)
            return g_strdup_printf("middle_block.1.%s", r2);
    }
    return NULL;
}

// The inverse for LoRA files, which name modules the diffusers way: a UNet module in the
// CompVis naming (without prefix and parameter: "input_blocks.1.1.proj_in") -> its diffusers
// path ("down_blocks.0.attentions.0.proj_in"), or NULL. nrb = res blocks per level.
char *diffusers_unet_module(const char *ldm, int nrb)
{
    for (size_t k = 0; k < G_N_ELEMENTS(unet_top_names); k++) {
        size_t len = strlen(unet_top_names[k][1]) - 1;   // without its '.'
        if (strncmp(ldm, unet_top_names[k][1], len) == 0 && ldm[len] == '\0')
            return g_strndup(unet_top_names[k][0], strlen(unet_top_names[k][0]) - 1);
    }
    const char *rest;
    int n, sub;
    // "<block>.<n>.<sub>.<rest>" -> n, sub, rest
    const char *block = g_str_has_prefix(ldm, "input_blocks.") ? "input_blocks."
                        : g_str_has_prefix(ldm, "output_blocks.") ? "output_blocks."
                        : g_str_has_prefix(ldm, "middle_block.") ? "middle_block." : NULL;
    if (!block || nrb < 1)
        return NULL;
    if (block[0] == 'm') {
        n = 0;
        rest = ldm + strlen(block);
    } else if ((n = diffusers_index(ldm, block, &rest)) < 0) {
        return NULL;
    }
    const char *r2;
    if ((sub = diffusers_index(rest, "", &r2)) < 0)
        return NULL;
    const char *inner = NULL;   // the resnet submodule's diffusers name
    for (size_t k = 0; k < G_N_ELEMENTS(unet_resnet_names); k++)
        if (strcmp(r2, unet_resnet_names[k][1]) == 0)
            inner = unet_resnet_names[k][0];
    bool upsampler = strcmp(r2, "conv") == 0;
    if (block[0] == 'm') {
        if ((sub == 0 || sub == 2) && inner)
            return g_strdup_printf("mid_block.resnets.%d.%s", sub / 2, inner);
        return sub == 1 ? g_strdup_printf("mid_block.attentions.0.%s", r2) : NULL;
    }
    if (block[0] == 'i') {
        if (n < 1)
            return NULL;
        int i = (n - 1) / (nrb + 1), j = (n - 1) % (nrb + 1);
        if (j == nrb)
            return sub == 0 && strcmp(r2, "op") == 0
                       ? g_strdup_printf("down_blocks.%d.downsamplers.0.conv", i) : NULL;
        if (sub == 0)
            return inner ? g_strdup_printf("down_blocks.%d.resnets.%d.%s", i, j, inner) : NULL;
        return sub == 1 ? g_strdup_printf("down_blocks.%d.attentions.%d.%s", i, j, r2) : NULL;
    }
    int i = n / (nrb + 1), j = n % (nrb + 1);
    if (sub == 0)
        return inner ? g_strdup_printf("up_blocks.%d.resnets.%d.%s", i, j, inner) : NULL;
    if (upsampler && (sub == 1 || sub == 2))
        return j == nrb ? g_strdup_printf("up_blocks.%d.upsamplers.0.conv", i) : NULL;
    return sub == 1 ? g_strdup_printf("up_blocks.%d.attentions.%d.%s", i, j, r2) : NULL;
}

// A VAE tensor name -> the CompVis name (without prefix), or NULL. *attn: it is a mid-block
// attention projection, a Linear that the CompVis VAE holds as a 1x1 convolution.
static char *diffusers_vae_name(const char *name, const diffusers_layout *lay, bool *attn)
{
    *attn = false;
    const char *side = g_str_has_prefix(name, "encoder.") ? "encoder."
                       : g_str_has_prefix(name, "decoder.") ? "decoder." : NULL;
    if (!side)   // quant_conv, post_quant_conv
        return g_str_has_prefix(name, "quant_conv.") || g_str_has_prefix(name, "post_quant_conv.")
                   ? g_strdup(name) : NULL;
    const char *rest = name + strlen(side), *r2, *r3;
    bool enc = side[0] == 'e';
    int i, j;
    GString *out = g_string_new(side);
    char *mapped = NULL;
    if ((i = diffusers_index(rest, enc ? "down_blocks." : "up_blocks.", &r2)) >= 0) {
        int level = enc ? i : lay->vae_levels - 1 - i;
        if ((j = diffusers_index(r2, "resnets.", &r3)) >= 0) {
            mapped = diffusers_map_module(r3, vae_names, 1);
            g_string_append_printf(out, "%s.%d.block.%d.%s", enc ? "down" : "up", level, j,
                                   mapped ? mapped : r3);
        } else if (g_str_has_prefix(r2, enc ? "downsamplers.0." : "upsamplers.0.")) {
            g_string_append_printf(out, "%s.%d.%s.%s", enc ? "down" : "up", level,
                                   enc ? "downsample" : "upsample",
                                   r2 + strlen(enc ? "downsamplers.0." : "upsamplers.0."));
        } else {
            g_string_free(out, TRUE);
            return NULL;
        }
    } else if ((j = diffusers_index(rest, "mid_block.resnets.", &r2)) >= 0) {
        mapped = diffusers_map_module(r2, vae_names, 1);
        g_string_append_printf(out, "mid.block_%d.%s", j + 1, mapped ? mapped : r2);
    } else if ((mapped = diffusers_map_module(rest, vae_names, G_N_ELEMENTS(vae_names)))) {
        *attn = g_str_has_prefix(mapped, "mid.attn_1.") && !g_str_has_prefix(mapped, "mid.attn_1.norm.");
        g_string_append(out, mapped);
    } else {
        g_string_append(out, rest);   // conv_in, conv_out
    }
    g_free(mapped);
    return g_string_free(out, FALSE);
}

// ---------------------------------------------------------------------------------------------
// The folder

enum { PART_UNET, PART_VAE, PART_TE, PART_TE2, PART_COUNT };

static const char *const part_dirs[PART_COUNT] = { "unet", "vae", "text_encoder", "text_encoder_2" };
static const char *const part_files[PART_COUNT] = {
    "diffusion_pytorch_model", "diffusion_pytorch_model", "model", "model",
};

typedef struct diffusers_ctx {
    diffusers_layout lay;
} diffusers_ctx;

static char *diffusers_rename(int part, const char *name, int n_dims, int64_t *shape,
                              int *new_n_dims, void *user)
{
    const diffusers_ctx *c = user;
    *new_n_dims = n_dims;
    char *ldm, *out;
    switch (part) {
    case PART_UNET:
        ldm = diffusers_unet_name(name, &c->lay);
        out = ldm ? g_strconcat("model.diffusion_model.", ldm, NULL) : NULL;
        break;
    case PART_VAE: {
        bool attn;
        ldm = diffusers_vae_name(name, &c->lay, &attn);
        out = ldm ? g_strconcat("first_stage_model.", ldm, NULL) : NULL;
        if (out && attn && n_dims == 2 && g_str_has_suffix(name, ".weight")) {
            shape[2] = shape[3] = 1;   // Linear [C, C] = 1x1 convolution [C, C, 1, 1]
            *new_n_dims = 4;
        }
        break;
    }
    default: {
        // transformers' CLIPTextModel(WithProjection): text_model.* and text_projection.weight
        const char *prefix = part == PART_TE ? "text_encoder." : "text_encoder_2.";
        ldm = NULL;
        if (g_str_has_prefix(name, "text_model."))
            out = g_strconcat(prefix, name, NULL);
        else if (strcmp(name, "text_projection.weight") == 0)
            out = g_strconcat(prefix, "text_model.", name, NULL);
        else
            out = NULL;   // position_ids and other buffers are not weights
        break;
    }
    }
    g_free(ldm);
    // The result is free()d by st_close: hand back malloc'd memory.
    char *copy = out ? strdup(out) : NULL;
    g_free(out);
    return copy;
}

// Reads a JSON file's top object; NULL with err naming the file when absent (missing_ok: NULL
// without error) or malformed. Unref the parser (*parser) when done.
static JsonObject *diffusers_json(const char *path, bool missing_ok, JsonParser **parser,
                                  sdg_error *err)
{
    *parser = NULL;
    if (!g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
        if (!missing_ok)
            sdg__fail(err, SDG_ERR_IO, "%s is missing", path);
        return NULL;
    }
    JsonParser *p = json_parser_new();
    GError *gerr = NULL;
    if (!json_parser_load_from_file(p, path, &gerr) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
        sdg__fail(err, SDG_ERR_FORMAT, "%s is not a JSON object%s%s", path, gerr ? ": " : "",
                  gerr ? gerr->message : "");
        if (gerr)
            g_error_free(gerr);
        g_object_unref(p);
        return NULL;
    }
    *parser = p;
    return json_node_get_object(json_parser_get_root(p));
}

static const char *diffusers_string(JsonObject *o, const char *key)
{
    JsonNode *n = o ? json_object_get_member(o, key) : NULL;
    return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
               ? json_node_get_string(n) : NULL;
}

static gint64 diffusers_int(JsonObject *o, const char *key)
{
    JsonNode *n = o ? json_object_get_member(o, key) : NULL;
    return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64
               ? json_node_get_int(n) : 0;
}

// Pipeline classes of families the engine does not run.
static const struct {
    const char *prefix, *family;
} diffusers_foreign[] = {
    { "StableDiffusion3", "SD 3" }, { "Flux", "Flux" }, { "StableCascade", "Stable Cascade" },
    { "Wuerstchen", "Stable Cascade" }, { "Kolors", "Kolors" }, { "PixArt", "PixArt" },
    { "StableDiffusionXLRefiner", "an SDXL refiner" },
};

bool diffusers_is_folder(const char *dir)
{
    char *p = g_build_filename(dir, "model_index.json", NULL);
    bool yes = g_file_test(p, G_FILE_TEST_IS_REGULAR);
    g_free(p);
    return yes;
}

void diffusers_info_clear(diffusers_info *info)
{
    g_free(info->tokenizer);
    memset(info, 0, sizeof *info);
}

// The pipeline's family from model_index.json's class and the text encoder's width.
static sdg_status diffusers_family(const char *dir, JsonObject *index, diffusers_info *info,
                                   sdg_error *err)
{
    const char *cls = diffusers_string(index, "_class_name");
    if (!cls)
        return sdg__fail(err, SDG_ERR_FORMAT, "%s/model_index.json has no _class_name", dir);
    for (size_t i = 0; i < G_N_ELEMENTS(diffusers_foreign); i++)
        if (g_str_has_prefix(cls, diffusers_foreign[i].prefix))
            return sdg__fail(err, SDG_ERR_UNSUPPORTED, "%s: this is %s (%s), which the engine "
                             "does not run (it runs SD 1.x, SD 2.x and SDXL)", dir,
                             diffusers_foreign[i].family, cls);
    if (g_str_has_prefix(cls, "StableDiffusionXL"))
        info->family = SDG_FAMILY_SDXL;
    else if (g_str_has_prefix(cls, "StableDiffusion"))
        info->family = SDG_FAMILY_SD1;   // or SD 2.x: the text encoder says (below)
    else
        return sdg__fail(err, SDG_ERR_UNSUPPORTED, "%s: a %s folder, which the engine does not "
                         "run (it runs SD 1.x, SD 2.x and SDXL pipelines)", dir, cls);
    info->n_encoders = info->family == SDG_FAMILY_SDXL ? 2 : 1;
    // Every component the family needs must be listed and present.
    const char *need[] = { "unet", "vae", "text_encoder", "tokenizer", "scheduler",
                           info->family == SDG_FAMILY_SDXL ? "text_encoder_2" : NULL };
    for (size_t i = 0; i < G_N_ELEMENTS(need) && need[i]; i++) {
        JsonNode *n = json_object_get_member(index, need[i]);
        char *sub = g_build_filename(dir, need[i], NULL);
        bool listed = n && JSON_NODE_HOLDS_ARRAY(n);
        bool there = g_file_test(sub, G_FILE_TEST_IS_DIR);
        g_free(sub);
        if (!listed || !there)
            return sdg__fail(err, SDG_ERR_FORMAT, "%s: the %s pipeline needs its %s, but %s",
                             dir, cls, need[i],
                             !there && !listed ? "the folder has none and model_index.json "
                                                 "lists none"
                             : !there ? "the folder has no such subfolder (model_index.json "
                                        "lists it)"
                                      : "model_index.json does not list it");
    }
    return SDG_OK;
}

// unet/config.json's heads (see diffusers_info).
static sdg_status diffusers_unet_heads(const char *dir, JsonObject *cfg, diffusers_info *info,
                                       sdg_error *err)
{
    JsonNode *h = cfg ? json_object_get_member(cfg, "num_attention_heads") : NULL;
    if (!h || JSON_NODE_HOLDS_NULL(h))
        h = cfg ? json_object_get_member(cfg, "attention_head_dim") : NULL;
    if (!h || JSON_NODE_HOLDS_NULL(h))
        return SDG_OK;
    if (JSON_NODE_HOLDS_VALUE(h) && json_node_get_value_type(h) == G_TYPE_INT64) {
        gint64 v = json_node_get_int(h);
        if (v < 1 || v > 65536)
            return sdg__fail(err, SDG_ERR_FORMAT, "%s/unet/config.json: %lld attention heads",
                             dir, (long long)v);
        info->unet_heads = (int)v;
        return SDG_OK;
    }
    JsonNode *ch = json_object_get_member(cfg, "block_out_channels");
    JsonArray *ha = JSON_NODE_HOLDS_ARRAY(h) ? json_node_get_array(h) : NULL;
    JsonArray *ca = ch && JSON_NODE_HOLDS_ARRAY(ch) ? json_node_get_array(ch) : NULL;
    if (!ha || !ca || json_array_get_length(ha) != json_array_get_length(ca) ||
        json_array_get_length(ha) == 0)
        return sdg__fail(err, SDG_ERR_FORMAT, "%s/unet/config.json: the attention heads are "
                         "neither a number nor a list as long as block_out_channels", dir);
    int width = 0;
    for (guint i = 0; i < json_array_get_length(ha); i++) {
        gint64 heads = json_array_get_int_element(ha, i);
        gint64 chans = json_array_get_int_element(ca, i);
        if (heads < 1 || chans < 1 || chans % heads || (width && chans / heads != width))
            return sdg__fail(err, SDG_ERR_UNSUPPORTED, "%s/unet/config.json: heads per level do "
                             "not give one head width (level %u: %lld channels, %lld heads)",
                             dir, i, (long long)chans, (long long)heads);
        width = (int)(chans / heads);
    }
    info->unet_head_dim = width;
    return SDG_OK;
}

// The weights file of a component: <file>.safetensors, else <file>.fp16.safetensors.
static char *diffusers_weights(const char *dir, int part, sdg_error *err)
{
    char *sub = g_build_filename(dir, part_dirs[part], NULL);
    char *name = g_strdup_printf("%s.safetensors", part_files[part]);
    char *path = g_build_filename(sub, name, NULL);
    g_free(name);
    if (!g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
        g_free(path);
        name = g_strdup_printf("%s.fp16.safetensors", part_files[part]);
        path = g_build_filename(sub, name, NULL);
        g_free(name);
    }
    if (!g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
        char *index = g_strdup_printf("%s/%s.safetensors.index.json", sub, part_files[part]);
        char *bin = g_strdup_printf("%s/%s.bin", sub, part_files[part]);
        sdg__fail(err, g_file_test(index, G_FILE_TEST_EXISTS) ? SDG_ERR_UNSUPPORTED : SDG_ERR_IO,
                  "%s: %s", sub,
                  g_file_test(index, G_FILE_TEST_EXISTS)
                      ? "its weights are sharded into several files, which are not read yet"
                  : g_file_test(bin, G_FILE_TEST_EXISTS)
                      ? "its weights are a PyTorch .bin file; only .safetensors are read"
                      : "no weights (.safetensors) in it");
        g_free(index);
        g_free(bin);
        g_free(path);
        path = NULL;
    }
    g_free(sub);
    return path;
}

// The shapes the renaming depends on, from the UNet's and the VAE's own names.
static void diffusers_scan(const st_file *unet, const st_file *vae, diffusers_layout *lay)
{
    memset(lay, 0, sizeof *lay);
    for (int i = 0; i < st_count(unet); i++) {
        const char *name = st_at(unet, i)->name, *rest, *r2;
        int b, j;
        if ((b = diffusers_index(name, "down_blocks.", &rest)) == 0 &&
            (j = diffusers_index(rest, "resnets.", &r2)) >= 0 && j + 1 > lay->unet_res)
            lay->unet_res = j + 1;
        if ((b = diffusers_index(name, "up_blocks.", &rest)) >= 0 && b < DIFFUSERS_MAX_LEVELS &&
            g_str_has_prefix(rest, "attentions."))
            lay->up_attn[b] = true;
    }
    for (int i = 0; i < st_count(vae); i++) {
        const char *rest;
        int b = diffusers_index(st_at(vae, i)->name, "decoder.up_blocks.", &rest);
        if (b + 1 > lay->vae_levels)
            lay->vae_levels = b + 1;
    }
}

st_file *diffusers_open(const char *dir, diffusers_info *info, sdg_error *err)
{
    sdg_error local;
    if (!err)
        err = &local;   // its status tells a missing scheduler config from a broken one
    sdg__error_clear(err);
    memset(info, 0, sizeof *info);
    JsonParser *ip = NULL, *sp = NULL, *tp[DIFFUSERS_MAX_ENCODERS] = { NULL, NULL };
    st_file *parts[PART_COUNT] = { NULL };
    st_file *view = NULL;
    char *path = g_build_filename(dir, "model_index.json", NULL);
    JsonObject *index = diffusers_json(path, false, &ip, err);
    g_free(path);
    if (!index || diffusers_family(dir, index, info, err) != SDG_OK)
        goto done;

    // Text encoders: activation and heads from their configs; an SD 2.x pipeline's is 1024 wide.
    for (int e = 0; e < info->n_encoders; e++) {
        path = g_build_filename(dir, part_dirs[PART_TE + e], "config.json", NULL);
        JsonObject *cfg = diffusers_json(path, false, &tp[e], err);
        g_free(path);
        if (!cfg)
            goto done;
        const char *act = diffusers_string(cfg, "hidden_act");
        info->gelu[e] = act && strcmp(act, "gelu") == 0;
        info->heads[e] = (int)CLAMP(diffusers_int(cfg, "num_attention_heads"), 0, 65536);
        // SD 2.x's encoder is open_clip's ViT-H (exact GELU, 1024 wide); SD 1.x's CLIP-L
        // uses quick_gelu.
        if (info->family == SDG_FAMILY_SD1 &&
            (info->gelu[e] || diffusers_int(cfg, "hidden_size") == 1024))
            info->family = SDG_FAMILY_SD2;
    }
    // The UNet's heads.
    {
        JsonParser *up = NULL;
        path = g_build_filename(dir, "unet", "config.json", NULL);
        JsonObject *cfg = diffusers_json(path, true, &up, err);
        g_free(path);
        if (!cfg && err->status != SDG_OK)
            goto done;
        sdg_status st = diffusers_unet_heads(dir, cfg, info, err);
        if (up)
            g_object_unref(up);
        if (st != SDG_OK)
            goto done;
    }
    // The scheduler: prediction type, zero terminal SNR.
    path = g_build_filename(dir, "scheduler", "scheduler_config.json", NULL);
    JsonObject *sched = diffusers_json(path, true, &sp, err);
    g_free(path);
    if (!sched && err->status != SDG_OK)
        goto done;
    const char *pred = diffusers_string(sched, "prediction_type");
    if (pred && strcmp(pred, "v_prediction") == 0) {
        info->prediction = SDG_PREDICTION_V;
    } else if (pred && strcmp(pred, "epsilon") == 0) {
        info->prediction = SDG_PREDICTION_EPS;
    } else if (pred) {
        sdg__fail(err, SDG_ERR_UNSUPPORTED, "%s/scheduler/scheduler_config.json: prediction_type "
                  "'%s' is neither epsilon nor v_prediction", dir, pred);
        goto done;
    }
    {
        JsonNode *z = sched ? json_object_get_member(sched, "rescale_betas_zero_snr") : NULL;
        info->ztsnr = z && JSON_NODE_HOLDS_VALUE(z) &&
                      json_node_get_value_type(z) == G_TYPE_BOOLEAN && json_node_get_boolean(z);
    }
    info->tokenizer = g_build_filename(dir, "tokenizer", NULL);

    int n_parts = PART_TE + info->n_encoders;
    for (int p = 0; p < n_parts; p++) {
        char *w = diffusers_weights(dir, p, err);
        if (!w)
            goto done;
        parts[p] = st_open(w, err);
        g_free(w);
        if (!parts[p])
            goto done;
    }
    diffusers_ctx ctx;
    diffusers_scan(parts[PART_UNET], parts[PART_VAE], &ctx.lay);
    view = st_compose(dir, parts, n_parts, diffusers_rename, &ctx, err);
    memset(parts, 0, sizeof parts);   // the view owns them now (or closed them)

done:
    for (int p = 0; p < PART_COUNT; p++)
        st_close(parts[p]);
    if (ip)
        g_object_unref(ip);
    if (sp)
        g_object_unref(sp);
    for (int e = 0; e < DIFFUSERS_MAX_ENCODERS; e++)
        if (tp[e])
            g_object_unref(tp[e]);
    if (!view)
        diffusers_info_clear(info);
    return view;
}
