/*
 * family.c - the family and layout tables, and what a file says about itself (see family.h).
 *
 * ref: shared/reference/manifests/README.md ("Hyper-parameters that shapes do not tell", with the
 *      yaml lines of v1-inference, v2-inference(-v), sd_2_1, sd_xl_base); ComfyUI
 *      comfy/model_detection.py and comfy/supported_models.py (which keys identify a family,
 *      `v_pred` and `ztsnr` keys); A1111 modules/sd_models_config.py (sidecar .yaml) and
 *      modules/sd_models.py (modelspec metadata).
 */
#include "family.h"

#include <glib.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const family_spec family_specs[SDG_FAMILY_COUNT] = {
    [SDG_FAMILY_SD1] = {
        .id = SDG_FAMILY_SD1, .n_encoders = 1,
        // FrozenCLIPEmbedder: last_hidden_state (after final_layer_norm), padded with EOS.
        .enc = { { .from_end = 0, .final_norm = true } },
        .scale_factor = 0.18215f, .native_size = 512, .native_size_v = 512,
        .unet_heads = 8, .prediction = SDG_PREDICTION_EPS,
    },
    [SDG_FAMILY_SD2] = {
        .id = SDG_FAMILY_SD2, .n_encoders = 1,
        // FrozenOpenCLIPEmbedder layer "penultimate": ln_final(output of layer 23 of 24).
        .enc = { { .from_end = 1, .final_norm = true, .pad_zero = true } },
        .scale_factor = 0.18215f, .native_size = 512, .native_size_v = 768,
        .unet_head_dim = 64, .prediction = SDG_PREDICTION_EPS,
    },
    [SDG_FAMILY_SDXL] = {
        .id = SDG_FAMILY_SDXL, .n_encoders = 2,
        // CLIP-L hidden_states[11] and bigG's penultimate layer, both without the final norm;
        // bigG's pooled projection starts y.
        .enc = { { .from_end = 1 }, { .from_end = 1, .pooled = true, .pad_zero = true } },
        .scale_factor = 0.13025f, .native_size = 1024, .native_size_v = 1024,
        .unet_head_dim = 64, .prediction = SDG_PREDICTION_EPS, .size_cond = true,
    },
};

// Most specific first: SDXL's second encoder, then the single-encoder layouts.
static const family_layout family_layouts[] = {
    { SDG_FAMILY_SDXL, "SGM", "conditioner.embedders.1.model.token_embedding.weight",
      "model.diffusion_model.", "first_stage_model.",
      { "conditioner.embedders.0.transformer.text_model.", "conditioner.embedders.1.model." },
      NULL },
    { SDG_FAMILY_SD2, "CompVis", "cond_stage_model.model.token_embedding.weight",
      "model.diffusion_model.", "first_stage_model.", { "cond_stage_model.model." }, NULL },
    // generative-models' sd_2_1.yaml (SD-Turbo's files)
    { SDG_FAMILY_SD2, "SGM", "conditioner.embedders.0.model.token_embedding.weight",
      "model.diffusion_model.", "first_stage_model.", { "conditioner.embedders.0.model." },
      NULL },
    { SDG_FAMILY_SD1, "CompVis", "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
      "model.diffusion_model.", "first_stage_model.",
      { "cond_stage_model.transformer.text_model." }, NULL },
    // files saved with transformers before CLIPTextModel gained its text_model level
    { SDG_FAMILY_SD1, "CompVis (old transformers)", "cond_stage_model.transformer.embeddings.token_embedding.weight",
      "model.diffusion_model.", "first_stage_model.", { "cond_stage_model.transformer." },
      NULL },
};

// diffusers' SD 2.x text encoder is open_clip's tower converted to transformers' layout with the
// last layer dropped (23 of 24): its last hidden state after the final norm is SD2's context.
static const family_encoder family_sd2_diffusers_enc[] = {
    { .from_end = 0, .final_norm = true, .pad_zero = true },
};

// diffusers folders, in diffusers_open's naming; SDXL's text_encoder_2 is transformers'
// CLIPTextModelWithProjection (its projection is text_projection.weight, x W^T).
static const family_layout family_diffusers_layouts[SDG_FAMILY_COUNT] = {
    [SDG_FAMILY_SD1] = { SDG_FAMILY_SD1, "diffusers", NULL, "model.diffusion_model.",
                         "first_stage_model.", { "text_encoder.text_model." }, NULL },
    [SDG_FAMILY_SD2] = { SDG_FAMILY_SD2, "diffusers", NULL, "model.diffusion_model.",
                         "first_stage_model.", { "text_encoder.text_model." },
                         family_sd2_diffusers_enc },
    [SDG_FAMILY_SDXL] = { SDG_FAMILY_SDXL, "diffusers", NULL, "model.diffusion_model.",
                          "first_stage_model.",
                          { "text_encoder.text_model.", "text_encoder_2.text_model." }, NULL },
};

const family_layout *family_diffusers_layout(sdg_family f)
{
    SDG_ASSERT((unsigned)f < SDG_FAMILY_COUNT);
    return &family_diffusers_layouts[f];
}

// ref: the model cards: stabilityai/sd-turbo and sdxl-turbo (1-4 steps, guidance 0 = one pass,
// EulerAncestral, timestep_spacing "trailing"), latent-consistency/lcm-lora-sdv1-5 and
// LCM_Dreamshaper_v7 (LCMScheduler 4-8 steps; ComfyUI: sampler lcm, sgm_uniform, CFG 1-2,
// ModelSamplingDiscrete lcm for distilled checkpoints), ByteDance/SDXL-Lightning (Euler,
// "trailing", the steps in the file name, CFG 0 = one pass).
static const family_distilled family_distilled_rows[] = {
    { "turbo", -1, false, "Turbo", SDG_SAMPLER_EULER_A, SDG_SCHEDULE_TRAILING, 1, 1.0f,
      SDG_MODEL_SAMPLING_DEFAULT },
    { "lightning", SDG_FAMILY_SDXL, false, "SDXL-Lightning", SDG_SAMPLER_EULER,
      SDG_SCHEDULE_TRAILING, 0, 1.0f, SDG_MODEL_SAMPLING_DEFAULT },
    { "lcm", -1, false, "LCM", SDG_SAMPLER_LCM, SDG_SCHEDULE_SGM_UNIFORM, 4, 1.0f,
      SDG_MODEL_SAMPLING_LCM },
    { "lcm", -1, true, "LCM-LoRA", SDG_SAMPLER_LCM, SDG_SCHEDULE_SGM_UNIFORM, 4, 1.0f,
      SDG_MODEL_SAMPLING_DEFAULT },
    { "lightning", SDG_FAMILY_SDXL, true, "SDXL-Lightning LoRA", SDG_SAMPLER_EULER,
      SDG_SCHEDULE_TRAILING, 0, 1.0f, SDG_MODEL_SAMPLING_DEFAULT },
};

const family_distilled *family_find_distilled(const char *path, const char *title, int fam,
                                              bool lora, int *steps)
{
    char *base = g_path_get_basename(path ? path : "");
    char *dot = strrchr(base, '.');
    if (dot && dot != base)
        *dot = '\0';
    char *hay = g_ascii_strdown(base, -1);
    if (title) {
        char *t = g_ascii_strdown(title, -1);
        char *both = g_strconcat(hay, " ", t, NULL);
        g_free(t);
        g_free(hay);
        hay = both;
    }
    const family_distilled *row = NULL;
    for (size_t i = 0; i < G_N_ELEMENTS(family_distilled_rows) && !row; i++) {
        const family_distilled *r = &family_distilled_rows[i];
        if (r->lora == lora && (r->family < 0 || r->family == fam) && strstr(hay, r->keyword))
            row = r;
    }
    if (row) {
        *steps = row->steps ? row->steps : 4;
        // "2step", "4-step", "8steps", "1_step": the digits before "step"
        for (const char *q = strstr(hay, "step"); q; q = strstr(q + 1, "step")) {
            const char *d = q;
            while (d > hay && (d[-1] == '-' || d[-1] == '_'))
                d--;
            const char *e = d;
            while (d > hay && g_ascii_isdigit(d[-1]))
                d--;
            if (d < e) {
                int n = atoi(d);
                if (n >= 1 && n <= 50)
                    *steps = n;
                break;
            }
        }
    }
    g_free(hay);
    g_free(base);
    return row;
}

const family_spec *family_get(sdg_family f)
{
    SDG_ASSERT((unsigned)f < SDG_FAMILY_COUNT);
    return &family_specs[f];
}

const family_layout *family_detect(const st_file *f)
{
    for (size_t i = 0; i < G_N_ELEMENTS(family_layouts); i++)
        if (st_find(f, family_layouts[i].marker))
            return &family_layouts[i];
    return NULL;
}

// Keys (matched as the end of a name, whatever the prefix) of families the engine does not run.
static const struct {
    const char *suffix, *family;
} family_foreign[] = {
    { "joint_blocks.0.context_block.attn.qkv.weight", "SD 3" },
    { "double_blocks.0.img_attn.qkv.weight", "Flux" },
    { "clip_txt_pooled_mapper.weight", "Stable Cascade" },
    { "encoder_hid_proj.weight", "Kolors" },
    { "blocks.0.cross_attn.q_linear.weight", "PixArt" },
    { "decoder.layers.0.weight", "a TAESD autoencoder" },
    { "decoder.1.weight", "a TAESD autoencoder" },
};

const char *family_unsupported(const st_file *f)
{
    // An SDXL refiner has SD 2.x's SGM text-encoder keys (bigG alone) and a label_emb.
    if (st_find(f, "conditioner.embedders.0.model.token_embedding.weight") &&
        !st_find(f, "conditioner.embedders.1.model.token_embedding.weight") &&
        st_find(f, "model.diffusion_model.label_emb.0.0.weight"))
        return "an SDXL refiner";
    for (int i = 0; i < st_count(f); i++) {
        const char *name = st_at(f, i)->name;
        size_t len = strlen(name);
        for (size_t k = 0; k < G_N_ELEMENTS(family_foreign); k++) {
            size_t sl = strlen(family_foreign[k].suffix);
            if (len >= sl && strcmp(name + len - sl, family_foreign[k].suffix) == 0 &&
                (len == sl || name[len - sl - 1] == '.'))
                return family_foreign[k].family;
        }
    }
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Configs in __metadata__

// Reads member path[0].path[1]... of the JSON object in metadata `key` as a positive integer
// into *out (left alone when the key or the member is absent).
static sdg_status family_config_int(const st_file *f, const char *key, const char *const *path,
                                    int depth, int *out, sdg_error *err)
{
    const char *text = st_metadata(f, key);
    if (!text)
        return SDG_OK;
    char *base = g_path_get_basename(st_path(f));
    sdg_status st = SDG_OK;
    JsonParser *parser = json_parser_new();
    GError *gerr = NULL;
    if (!json_parser_load_from_data(parser, text, -1, &gerr) ||
        !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(parser))) {
        st = sdg__fail(err, SDG_ERR_FORMAT, "%s: metadata %s is not a JSON object%s%s", base, key,
                       gerr ? ": " : "", gerr ? gerr->message : "");
        goto done;
    }
    JsonNode *node = json_parser_get_root(parser);
    for (int i = 0; i < depth; i++) {
        JsonObject *obj = JSON_NODE_HOLDS_OBJECT(node) ? json_node_get_object(node) : NULL;
        node = obj ? json_object_get_member(obj, path[i]) : NULL;
        if (!node)
            goto done;
    }
    if (JSON_NODE_HOLDS_NULL(node))
        goto done;
    gint64 v = JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == G_TYPE_INT64
                   ? json_node_get_int(node) : 0;
    // ldm writes num_head_channels: -1 (and num_heads: -1) for "not this one".
    if (v == -1)
        goto done;
    if (v < 1 || v > 65536) {
        st = sdg__fail(err, SDG_ERR_FORMAT, "%s: metadata %s: %s is not a positive integer", base,
                       key, path[depth - 1]);
        goto done;
    }
    *out = (int)v;
done:
    if (gerr)
        g_error_free(gerr);
    g_object_unref(parser);
    g_free(base);
    return st;
}

sdg_status family_read_hparams(const st_file *f, family_hparams *hp, sdg_error *err)
{
    memset(hp, 0, sizeof *hp);
    static const char *const head_ch[] = { "num_head_channels" }, *const heads[] = { "num_heads" };
    static const char *const oc[] = { "text_cfg", "heads" };
    static const char *const hf[] = { "num_attention_heads" };
    sdg_status st;
    if ((st = family_config_int(f, "unet_config", head_ch, 1, &hp->unet_head_dim, err)) ||
        (st = family_config_int(f, "unet_config", heads, 1, &hp->unet_heads, err)) ||
        (st = family_config_int(f, "open_clip_config", oc, 2, &hp->openclip_heads, err)) ||
        (st = family_config_int(f, "clip_l_config", hf, 1, &hp->clip_heads, err)))
        return st;
    if (hp->unet_head_dim > 0)
        hp->unet_heads = 0;   // ldm: num_head_channels wins when both are set
    return SDG_OK;
}

// ---------------------------------------------------------------------------------------------
// Prediction type

// "v", "v_prediction", "v-prediction" -> V; "eps", "epsilon" -> EPS; else AUTO.
static sdg_prediction family_prediction_word(const char *s)
{
    char *w = g_ascii_strdown(s, -1);
    g_strstrip(w);
    size_t n = strlen(w);
    if (n >= 2 && (w[0] == '"' || w[0] == '\'') && w[n - 1] == w[0]) {
        memmove(w, w + 1, n - 2);
        w[n - 2] = '\0';
    }
    sdg_prediction p = SDG_PREDICTION_AUTO;
    if (!strcmp(w, "v") || !strcmp(w, "v_prediction") || !strcmp(w, "v-prediction"))
        p = SDG_PREDICTION_V;
    else if (!strcmp(w, "eps") || !strcmp(w, "epsilon"))
        p = SDG_PREDICTION_EPS;
    g_free(w);
    return p;
}

// A1111's config next to the checkpoint: <stem>.yaml. Its model.params.parameterization line is
// the only one read (ldm's default, when the yaml has none, is eps).
static sdg_status family_sidecar_prediction(const char *path, sdg_prediction *out,
                                            const char **source, char *source_buf,
                                            size_t source_len, sdg_error *err)
{
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - path) : strlen(path);
    char *yaml = g_strdup_printf("%.*s.yaml", (int)stem, path);
    char *text = NULL;
    sdg_status st = SDG_OK;
    if (!g_file_get_contents(yaml, &text, NULL, NULL)) {
        g_free(yaml);
        return SDG_OK;   // no sidecar
    }
    char *base = g_path_get_basename(yaml);
    sdg_prediction p = SDG_PREDICTION_EPS;
    char **lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        char *s = g_strstrip(*l);
        if (strncmp(s, "parameterization:", 17) != 0)
            continue;
        p = family_prediction_word(s + 17);
        if (p == SDG_PREDICTION_AUTO)
            st = sdg__fail(err, SDG_ERR_FORMAT, "%s: parameterization '%s' is neither eps nor v",
                           base, g_strstrip(s + 17));
        break;
    }
    if (st == SDG_OK) {
        *out = p;
        snprintf(source_buf, source_len, "sidecar %s", base);
        *source = source_buf;
    }
    g_strfreev(lines);
    g_free(text);
    g_free(base);
    g_free(yaml);
    return st;
}

sdg_status family_file_prediction(const st_file *f, const char *path, sdg_prediction *out,
                                  const char **source, char *source_buf, size_t source_len,
                                  sdg_error *err)
{
    *out = SDG_PREDICTION_AUTO;
    *source = NULL;
    if (st_find(f, "v_pred")) {
        *out = SDG_PREDICTION_V;
        *source = "key v_pred";
        return SDG_OK;
    }
    static const char *const keys[] = { "modelspec.prediction_type", "parameterization" };
    for (size_t i = 0; i < G_N_ELEMENTS(keys); i++) {
        const char *v = st_metadata(f, keys[i]);
        if (!v)
            continue;
        sdg_prediction p = family_prediction_word(v);
        if (p == SDG_PREDICTION_AUTO) {
            char *base = g_path_get_basename(path);
            sdg_status st = sdg__fail(err, SDG_ERR_FORMAT, "%s: metadata %s '%s' is neither eps "
                                      "nor v", base, keys[i], v);
            g_free(base);
            return st;
        }
        *out = p;
        *source = i == 0 ? "metadata modelspec.prediction_type" : "metadata parameterization";
        return SDG_OK;
    }
    return family_sidecar_prediction(path, out, source, source_buf, source_len, err);
}

bool family_file_ztsnr(const st_file *f)
{
    return st_find(f, "ztsnr") != NULL;
}
