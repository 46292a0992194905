/*
 * test-diffusers.c - diffusers pipeline folders.
 *
 * - The SD 1.5 folder layout of the manifests (sd15-diffusers-*.tsv, written as sparse files:
 *   names and shapes, no data) seen through diffusers_open is exactly sd15.tsv's UNet, VAE and
 *   text encoder, shape for shape (VAE attention [C,C] matrices as [C,C,1,1] kernels), in the
 *   current and the older VAE attention names; it loads header-only as SD 1.x.
 * - The tiny SD1 and SDXL goldens converted into diffusers folders by this file's own converter
 *   (CompVis -> diffusers, written from diffusers' conversion scripts in the other direction;
 *   SDXL's bigG open_clip tower into transformers' CLIPTextModelWithProjection: in_proj split
 *   into q/k/v, text_projection transposed) run bit for bit like the single files.
 * - Broken folders: each gets a sentence naming the folder and what is wrong.
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "golden.h"
#include "loader/diffusers.h"
#include "pipeline/pipeline.h"
#include "sdg.h"

#define VOCAB "vocab/bpe_simple_vocab_16e6.txt.gz"

static char *vocab_path;
static char *tmp;

// ---------------------------------------------------------------------------------------------
// Writing folders

// One tensor of a component file: its diffusers name, shape, and where its data comes from.
typedef enum conv_op { OP_COPY, OP_ROWS, OP_TRANSPOSE } conv_op;

typedef struct conv_tensor {
    char *name;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    const st_file *src;
    const st_tensor *t;
    conv_op op;
    int64_t r0;          // OP_ROWS: first row of the source
} conv_tensor;

typedef struct conv_file {
    GArray *ts;          // conv_tensor
} conv_file;

static void conv_add(conv_file *cf, char *name, const st_file *src, const st_tensor *t, conv_op op,
                     int64_t r0, int64_t rows)
{
    conv_tensor c = { .name = name, .n_dims = t->n_dims, .src = src, .t = t, .op = op, .r0 = r0 };
    memcpy(c.shape, t->shape, sizeof c.shape);
    if (op == OP_ROWS)
        c.shape[0] = rows;
    if (op == OP_TRANSPOSE) {
        c.shape[0] = t->shape[1];
        c.shape[1] = t->shape[0];
    }
    g_array_append_val(cf->ts, c);
}

static void conv_fill(void *user, int index, float *dst, int64_t n)
{
    const conv_tensor *c = &g_array_index(((conv_file *)user)->ts, conv_tensor, index);
    sdg_error err;
    float *all = g_new(float, c->t->n_elements);
    g_assert_cmpint(st_read_f32(c->src, c->t, all, &err), ==, SDG_OK);
    if (c->op == OP_COPY) {
        memcpy(dst, all, (size_t)n * sizeof *dst);
    } else if (c->op == OP_ROWS) {
        int64_t cols = c->t->n_dims == 2 ? c->t->shape[1] : 1;
        memcpy(dst, all + c->r0 * cols, (size_t)n * sizeof *dst);
    } else {
        int64_t r = c->t->shape[0], k = c->t->shape[1];
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < k; j++)
                dst[j * r + i] = all[i * k + j];
    }
    g_free(all);
}

static void conv_write(conv_file *cf, const char *dir, const char *sub, const char *file)
{
    char *d = g_build_filename(dir, sub, NULL);
    g_assert_cmpint(g_mkdir_with_parents(d, 0755), ==, 0);
    char *path = g_build_filename(d, file, NULL);
    guint n = cf->ts->len;
    st_write_tensor *w = g_new0(st_write_tensor, n);
    for (guint i = 0; i < n; i++) {
        const conv_tensor *c = &g_array_index(cf->ts, conv_tensor, i);
        w[i].name = c->name;
        w[i].dtype = ST_F32;
        w[i].n_dims = c->n_dims;
        memcpy(w[i].shape, c->shape, sizeof w[i].shape);
    }
    sdg_error err;
    if (st_write_streamed(path, w, (int)n, NULL, conv_fill, cf, &err) != SDG_OK)
        g_error("%s", err.message);
    for (guint i = 0; i < n; i++)
        g_free(g_array_index(cf->ts, conv_tensor, i).name);
    g_array_set_size(cf->ts, 0);
    g_free(w);
    g_free(path);
    g_free(d);
}

static void write_text(const char *dir, const char *sub, const char *file, const char *text)
{
    char *d = g_build_filename(dir, sub, NULL);
    g_assert_cmpint(g_mkdir_with_parents(d, 0755), ==, 0);
    char *path = g_build_filename(d, file, NULL);
    g_assert_true(g_file_set_contents(path, text, -1, NULL));
    g_free(path);
    g_free(d);
}

// model_index.json of a pipeline class with the standard components (text_encoder_2 and
// tokenizer_2 when with_te2).
static void write_model_index(const char *dir, const char *cls, bool with_te2)
{
    char *text = g_strdup_printf(
        "{\"_class_name\": \"%s\", \"unet\": [\"diffusers\", \"UNet2DConditionModel\"], "
        "\"vae\": [\"diffusers\", \"AutoencoderKL\"], \"text_encoder\": [\"transformers\", "
        "\"CLIPTextModel\"], \"tokenizer\": [\"transformers\", \"CLIPTokenizer\"], "
        "\"scheduler\": [\"diffusers\", \"EulerDiscreteScheduler\"]%s}", cls,
        with_te2 ? ", \"text_encoder_2\": [\"transformers\", \"CLIPTextModelWithProjection\"], "
                   "\"tokenizer_2\": [\"transformers\", \"CLIPTokenizer\"]" : "");
    write_text(dir, ".", "model_index.json", text);
    g_free(text);
}

// ---------------------------------------------------------------------------------------------
// CompVis -> diffusers names (the other direction of the engine's table, written separately)

static const char *const res_inv[][2] = {
    { "in_layers.0", "norm1" }, { "in_layers.2", "conv1" }, { "emb_layers.1", "time_emb_proj" },
    { "out_layers.0", "norm2" }, { "out_layers.3", "conv2" }, { "skip_connection", "conv_shortcut" },
};

static char *res_name(const char *rest)
{
    for (size_t k = 0; k < G_N_ELEMENTS(res_inv); k++) {
        size_t n = strlen(res_inv[k][0]);
        if (strncmp(rest, res_inv[k][0], n) == 0 && rest[n] == '.')
            return g_strconcat(res_inv[k][1], rest + n, NULL);
    }
    g_error("no resnet name for %s", rest);
}

// UNet name after "model.diffusion_model." (nrb res blocks per level).
static char *unet_to_diffusers(const char *n, int nrb)
{
    static const char *const top[][2] = {
        { "time_embed.0.", "time_embedding.linear_1." }, { "time_embed.2.", "time_embedding.linear_2." },
        { "label_emb.0.0.", "add_embedding.linear_1." }, { "label_emb.0.2.", "add_embedding.linear_2." },
        { "input_blocks.0.0.", "conv_in." }, { "out.0.", "conv_norm_out." }, { "out.2.", "conv_out." },
    };
    for (size_t k = 0; k < G_N_ELEMENTS(top); k++)
        if (g_str_has_prefix(n, top[k][0]))
            return g_strconcat(top[k][1], n + strlen(top[k][0]), NULL);
    int b, m, off = -1;
    char *res, *out;
    if (sscanf(n, "input_blocks.%d.%d.%n", &b, &m, &off) == 2 && off > 0) {
        int i = (b - 1) / (nrb + 1), j = (b - 1) % (nrb + 1);
        if (j == nrb)
            return g_strdup_printf("down_blocks.%d.downsamplers.0.conv.%s", i, n + off + 3);
        if (m == 1)
            return g_strdup_printf("down_blocks.%d.attentions.%d.%s", i, j, n + off);
        res = res_name(n + off);
        out = g_strdup_printf("down_blocks.%d.resnets.%d.%s", i, j, res);
        g_free(res);
        return out;
    }
    off = -1;
    if (sscanf(n, "output_blocks.%d.%d.%n", &b, &m, &off) == 2 && off > 0) {
        int i = b / (nrb + 1), j = b % (nrb + 1);
        if (m == 0) {
            res = res_name(n + off);
            out = g_strdup_printf("up_blocks.%d.resnets.%d.%s", i, j, res);
            g_free(res);
            return out;
        }
        if (m == 2 || g_str_has_prefix(n + off, "conv."))
            return g_strdup_printf("up_blocks.%d.upsamplers.0.%s", i, n + off);
        return g_strdup_printf("up_blocks.%d.attentions.%d.%s", i, j, n + off);
    }
    off = -1;
    if (sscanf(n, "middle_block.%d.%n", &m, &off) == 1 && off > 0) {
        if (m == 1)
            return g_strdup_printf("mid_block.attentions.0.%s", n + off);
        res = res_name(n + off);
        out = g_strdup_printf("mid_block.resnets.%d.%s", m / 2, res);
        g_free(res);
        return out;
    }
    g_error("no diffusers name for %s", n);
}

// VAE name after "first_stage_model." (levels decoder levels); *attn: a 1x1 attention kernel
// that diffusers holds as a Linear.
static char *vae_to_diffusers(const char *n, int levels, bool old_names, bool *attn)
{
    *attn = false;
    int i = 0, j = 0, off;
    char side[16];
    // sscanf counts conversions, not literals: a pattern matched only when %n was reached.
#define VAE_MATCH(fmt, ...) (off = -1, sscanf(n, fmt, __VA_ARGS__), off > 0)
    GString *s = g_string_new(NULL);
    const char *rest = n;
    if (VAE_MATCH("%15[a-z].down.%d.block.%d.%n", side, &i, &j, &off)) {
        g_string_printf(s, "%s.down_blocks.%d.resnets.%d.", side, i, j);
        rest = n + off;
    } else if (VAE_MATCH("%15[a-z].up.%d.block.%d.%n", side, &i, &j, &off)) {
        g_string_printf(s, "%s.up_blocks.%d.resnets.%d.", side, levels - 1 - i, j);
        rest = n + off;
    } else if (VAE_MATCH("%15[a-z].down.%d.downsample.%n", side, &i, &off)) {
        g_string_printf(s, "%s.down_blocks.%d.downsamplers.0.%s", side, i, n + off);
        return g_string_free(s, FALSE);
    } else if (VAE_MATCH("%15[a-z].up.%d.upsample.%n", side, &i, &off)) {
        g_string_printf(s, "%s.up_blocks.%d.upsamplers.0.%s", side, levels - 1 - i, n + off);
        return g_string_free(s, FALSE);
    } else if (VAE_MATCH("%15[a-z].mid.block_%d.%n", side, &j, &off)) {
        g_string_printf(s, "%s.mid_block.resnets.%d.", side, j - 1);
        rest = n + off;
    } else if (VAE_MATCH("%15[a-z].mid.attn_1.%n", side, &off)) {
        static const char *const a[][3] = {
            { "norm.", "group_norm.", "group_norm." }, { "q.", "to_q.", "query." },
            { "k.", "to_k.", "key." }, { "v.", "to_v.", "value." },
            { "proj_out.", "to_out.0.", "proj_attn." },
        };
        for (size_t k = 0; k < G_N_ELEMENTS(a); k++)
            if (g_str_has_prefix(n + off, a[k][0])) {
                *attn = k > 0;
                g_string_printf(s, "%s.mid_block.attentions.0.%s%s", side, a[k][old_names ? 2 : 1],
                                n + off + strlen(a[k][0]));
                return g_string_free(s, FALSE);
            }
    } else if (VAE_MATCH("%15[a-z].norm_out.%n", side, &off)) {
        g_string_printf(s, "%s.conv_norm_out.%s", side, n + off);
        return g_string_free(s, FALSE);
    } else {
        g_string_assign(s, n);   // conv_in, conv_out, quant_conv, post_quant_conv
        return g_string_free(s, FALSE);
    }
#undef VAE_MATCH
    if (g_str_has_prefix(rest, "nin_shortcut."))
        g_string_append_printf(s, "conv_shortcut.%s", rest + strlen("nin_shortcut."));
    else
        g_string_append(s, rest);
    return g_string_free(s, FALSE);
}

// open_clip's text tower under prefix -> transformers' CLIPTextModelWithProjection, its first
// n_layers layers (diffusers' SD 2.x encoder drops the last one).
static void openclip_to_hf(conv_file *cf, const st_file *f, const char *prefix, int n_layers)
{
    static const char *const names[][2] = {
        { "token_embedding.weight", "text_model.embeddings.token_embedding.weight" },
        { "positional_embedding", "text_model.embeddings.position_embedding.weight" },
        { "ln_final.weight", "text_model.final_layer_norm.weight" },
        { "ln_final.bias", "text_model.final_layer_norm.bias" },
    };
    static const char *const layer[][2] = {
        { "ln_1", "layer_norm1" }, { "ln_2", "layer_norm2" }, { "mlp.c_fc", "mlp.fc1" },
        { "mlp.c_proj", "mlp.fc2" }, { "attn.out_proj", "self_attn.out_proj" },
    };
    size_t pl = strlen(prefix);
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        if (strncmp(t->name, prefix, pl) != 0)
            continue;
        const char *n = t->name + pl;
        int L, off;
        for (size_t k = 0; k < G_N_ELEMENTS(names); k++)
            if (strcmp(n, names[k][0]) == 0)
                conv_add(cf, g_strdup(names[k][1]), f, t, OP_COPY, 0, 0);
        if (strcmp(n, "text_projection") == 0)
            conv_add(cf, g_strdup("text_projection.weight"), f, t, OP_TRANSPOSE, 0, 0);
        off = -1;
        if (sscanf(n, "transformer.resblocks.%d.%n", &L, &off) != 1 || off < 0 || L >= n_layers)
            continue;
        const char *r = n + off;
        for (size_t k = 0; k < G_N_ELEMENTS(layer); k++)
            if (g_str_has_prefix(r, layer[k][0]) && r[strlen(layer[k][0])] == '.')
                conv_add(cf, g_strdup_printf("text_model.encoder.layers.%d.%s%s", L, layer[k][1],
                                             r + strlen(layer[k][0])), f, t, OP_COPY, 0, 0);
        bool w = strcmp(r, "attn.in_proj_weight") == 0, b = strcmp(r, "attn.in_proj_bias") == 0;
        if (w || b) {
            int64_t width = t->shape[0] / 3;
            static const char *const qkv[] = { "q_proj", "k_proj", "v_proj" };
            for (int q = 0; q < 3; q++)
                conv_add(cf, g_strdup_printf("text_model.encoder.layers.%d.self_attn.%s.%s", L,
                                             qkv[q], w ? "weight" : "bias"),
                         f, t, OP_ROWS, q * width, width);
        }
    }
}

// Writes golden model `model` (CompVis/SGM single file) of family fam as a diffusers folder at
// dir.
static void write_folder(const char *model, const char *dir, sdg_family fam, bool old_vae_names)
{
    bool sdxl = fam == SDG_FAMILY_SDXL;
    st_file *f = golden_open(model);
    conv_file unet = { g_array_new(FALSE, TRUE, sizeof(conv_tensor)) };
    conv_file vae = { g_array_new(FALSE, TRUE, sizeof(conv_tensor)) };
    conv_file te = { g_array_new(FALSE, TRUE, sizeof(conv_tensor)) };
    // res blocks per level: input blocks before the first downsampler
    int nrb = 0;
    for (;; nrb++) {
        char key[128];
        snprintf(key, sizeof key, "model.diffusion_model.input_blocks.%d.0.in_layers.0.weight",
                 nrb + 1);
        if (!st_find(f, key))
            break;
    }
    int levels = 0;
    for (;; levels++) {
        char key[128];
        snprintf(key, sizeof key, "first_stage_model.decoder.up.%d.block.0.conv1.weight", levels);
        if (!st_find(f, key))
            break;
    }
    const char *te0 = sdxl ? "conditioner.embedders.0.transformer." : "cond_stage_model.transformer.";
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        const char *n = t->name;
        if (g_str_has_prefix(n, "model.diffusion_model.")) {
            conv_add(&unet, unet_to_diffusers(n + strlen("model.diffusion_model."), nrb), f, t,
                     OP_COPY, 0, 0);
        } else if (g_str_has_prefix(n, "first_stage_model.")) {
            bool attn;
            char *dn = vae_to_diffusers(n + strlen("first_stage_model."), levels, old_vae_names,
                                        &attn);
            conv_add(&vae, dn, f, t, OP_COPY, 0, 0);
            conv_tensor *c = &g_array_index(vae.ts, conv_tensor, vae.ts->len - 1);
            if (attn && t->n_dims == 4)
                c->n_dims = 2;   // [C,C,1,1] -> Linear [C,C]
        } else if (fam != SDG_FAMILY_SD2 && g_str_has_prefix(n, te0) &&
                   !strstr(n, "position_ids")) {
            conv_add(&te, g_strdup(n + strlen(te0)), f, t, OP_COPY, 0, 0);
        }
    }
    conv_write(&unet, dir, "unet", "diffusion_pytorch_model.safetensors");
    conv_write(&vae, dir, "vae", "diffusion_pytorch_model.safetensors");
    if (fam == SDG_FAMILY_SD2)
        openclip_to_hf(&te, f, "cond_stage_model.model.", 3);   // 4 layers in the file
    conv_write(&te, dir, "text_encoder", "model.safetensors");
    if (sdxl) {
        conv_file te2 = { g_array_new(FALSE, TRUE, sizeof(conv_tensor)) };
        openclip_to_hf(&te2, f, "conditioner.embedders.1.model.", 1000);
        conv_write(&te2, dir, "text_encoder_2", "model.safetensors");
        g_array_free(te2.ts, TRUE);
        write_text(dir, "text_encoder_2", "config.json",
                   "{\"hidden_act\": \"gelu\", \"num_attention_heads\": 3, \"hidden_size\": 48}");
        write_text(dir, "tokenizer_2", "vocab.json", "{}");
        write_text(dir, "text_encoder", "config.json",
                   "{\"hidden_act\": \"quick_gelu\", \"num_attention_heads\": 2, \"hidden_size\": 32}");
        write_text(dir, "unet", "config.json",
                   "{\"block_out_channels\": [32, 64, 64], \"attention_head_dim\": [1, 2, 2]}");
        write_model_index(dir, "StableDiffusionXLPipeline", true);
    } else if (fam == SDG_FAMILY_SD2) {
        write_text(dir, "text_encoder", "config.json",
                   "{\"hidden_act\": \"gelu\", \"num_attention_heads\": 3, \"hidden_size\": 48}");
        write_text(dir, "unet", "config.json",
                   "{\"block_out_channels\": [32, 64, 64], \"attention_head_dim\": [2, 4, 4]}");
        write_model_index(dir, "StableDiffusionPipeline", false);
    } else {
        write_text(dir, "text_encoder", "config.json",
                   "{\"hidden_act\": \"quick_gelu\", \"num_attention_heads\": 1, \"hidden_size\": 64}");
        write_text(dir, "unet", "config.json",
                   "{\"block_out_channels\": [32, 64], \"attention_head_dim\": 8}");
        write_model_index(dir, "StableDiffusionPipeline", false);
    }
    write_text(dir, "tokenizer", "vocab.json", "{}");
    write_text(dir, "scheduler", "scheduler_config.json",
               fam == SDG_FAMILY_SD2 ? "{\"prediction_type\": \"v_prediction\"}"
                                     : "{\"prediction_type\": \"epsilon\"}");
    g_array_free(unet.ts, TRUE);
    g_array_free(vae.ts, TRUE);
    g_array_free(te.ts, TRUE);
    st_close(f);
}

// ---------------------------------------------------------------------------------------------
// The SD 1.5 layout from the manifests

// diffusers' older VAE attention names (query, key, value, proj_attn).
static char *old_vae_name(const char *n, void *user)
{
    (void)user;
    static const char *const r[][2] = {
        { ".to_q.", ".query." }, { ".to_k.", ".key." }, { ".to_v.", ".value." },
        { ".to_out.0.", ".proj_attn." },
    };
    for (size_t k = 0; k < G_N_ELEMENTS(r); k++) {
        const char *at = strstr(n, r[k][0]);
        if (at)
            return g_strdup_printf("%.*s%s%s", (int)(at - n), n, r[k][1], at + strlen(r[k][0]));
    }
    return g_strdup(n);
}

static void write_sd15_folder(const char *dir, bool old_vae)
{
    char *p = g_build_filename(dir, "unet", "diffusion_pytorch_model.safetensors", NULL);
    golden_write_sparse("manifests/sd15-diffusers-unet.tsv", p, NULL, NULL);
    g_free(p);
    p = g_build_filename(dir, "vae", "diffusion_pytorch_model.safetensors", NULL);
    golden_write_sparse("manifests/sd15-diffusers-vae.tsv", p, old_vae ? old_vae_name : NULL,
                        NULL);
    g_free(p);
    p = g_build_filename(dir, "text_encoder", "model.safetensors", NULL);
    golden_write_sparse("manifests/sd15-diffusers-text_encoder.tsv", p, NULL, NULL);
    g_free(p);
    write_text(dir, "text_encoder", "config.json",
               "{\"hidden_act\": \"quick_gelu\", \"num_attention_heads\": 12, \"hidden_size\": 768}");
    write_text(dir, "unet", "config.json",
               "{\"block_out_channels\": [320, 640, 1280, 1280], \"attention_head_dim\": 8}");
    write_text(dir, "tokenizer", "vocab.json", "{}");
    write_text(dir, "scheduler", "scheduler_config.json", "{\"prediction_type\": \"epsilon\"}");
    write_model_index(dir, "StableDiffusionPipeline", false);
}

// Every UNet, VAE and text-encoder tensor of sd15.tsv is in the view under its own name (the
// text encoder's under text_encoder.), with its shape, and nothing else is.
static void check_sd15_view(const st_file *view)
{
    char *mpath = golden_path("manifests/sd15.tsv");
    char *text = NULL;
    g_assert_true(g_file_get_contents(mpath, &text, NULL, NULL));
    char **lines = g_strsplit(text, "\n", -1);
    int expected = 0;
    for (char **l = lines; *l; l++) {
        char **f = g_strsplit(*l, "\t", -1);
        if (g_strv_length(f) == 3) {
            char *name = NULL;
            if (g_str_has_prefix(f[0], "model.diffusion_model.") ||
                g_str_has_prefix(f[0], "first_stage_model."))
                name = g_strdup(f[0]);
            else if (g_str_has_prefix(f[0], "cond_stage_model.transformer."))
                name = g_strconcat("text_encoder.", f[0] + strlen("cond_stage_model.transformer."),
                                   NULL);
            if (name) {
                expected++;
                const st_tensor *t = st_find(view, name);
                if (!t)
                    g_error("%s (%s) is not in the diffusers view", name, f[0]);
                char **dims = g_strsplit(f[2], ",", -1);
                int nd = (int)g_strv_length(dims);
                g_assert_cmpint(t->n_dims, ==, nd);
                for (int d = 0; d < nd; d++)
                    g_assert_cmpint(t->shape[d], ==, g_ascii_strtoll(dims[d], NULL, 10));
                g_strfreev(dims);
                g_free(name);
            }
        }
        g_strfreev(f);
    }
    printf("# %d of sd15.tsv's tensors found with their shapes; the view has %d\n", expected,
           st_count(view));
    g_assert_cmpint(st_count(view), ==, expected);
    g_strfreev(lines);
    g_free(text);
    g_free(mpath);
}

static void test_sd15_layout(void)
{
    for (int old = 0; old < 2; old++) {
        char *dir = g_build_filename(tmp, old ? "sd15-old" : "sd15", NULL);
        write_sd15_folder(dir, old);
        diffusers_info info;
        sdg_error err;
        st_file *view = diffusers_open(dir, &info, &err);
        if (!view)
            g_error("%s", err.message);
        g_assert_cmpint(info.family, ==, SDG_FAMILY_SD1);
        g_assert_cmpint(info.prediction, ==, SDG_PREDICTION_EPS);
        g_assert_cmpint(info.unet_heads, ==, 8);
        check_sd15_view(view);
        st_close(view);
        diffusers_info_clear(&info);
        // The folder loads (header only: the files are sparse) as SD 1.x.
        sdg_model_params mp = sdg_model_default_params();
        mp.vocab_path = vocab_path;
        mp.header_only = true;
        sdg_model *m = sdg_model_load(dir, &mp, &err);
        if (!m)
            g_error("%s", err.message);
        sdg_model_info mi;
        sdg_model_get_info(m, &mi);
        g_assert_cmpint(mi.family, ==, SDG_FAMILY_SD1);
        g_assert_cmpint(mi.context_dim, ==, 768);
        g_assert_cmpstr(mi.prediction_source, ==, "scheduler/scheduler_config.json prediction_type");
        sdg_family fam;
        g_assert_cmpint(sdg_checkpoint_family(dir, &fam, &err), ==, SDG_OK);
        g_assert_cmpint(fam, ==, SDG_FAMILY_SD1);
        sdg_model_free(m);
        golden_remove_tree(dir);
        g_free(dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Tiny models as folders: the same pictures as the single files

static sdg_result *run_model(const char *path, const char *negative)
{
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    sdg_error err;
    sdg_model *m = sdg_model_load(path, &mp, &err);
    if (!m)
        g_error("%s: %s", path, err.message);
    sdg_ctx *ctx = sdg_ctx_new(m, 2, &err);
    sdg_gen_params gp = sdg_gen_default_params();
    gp.prompt = "an origami (crane:1.2) beside a cup of tea";
    gp.negative_prompt = negative;
    gp.width = gp.height = 64;
    gp.steps = 3;
    gp.seed = 11;
    gp.precision = SDG_PRECISION_EXACT;
    sdg_result *res = NULL;
    if (sdg_generate(ctx, &gp, &res, &err) != SDG_OK)
        g_error("%s: %s", path, err.message);
    sdg_ctx_free(ctx);
    sdg_model_free(m);
    return res;
}

static void same_run(const char *model, sdg_family fam, bool old_vae)
{
    char *dir = g_build_filename(tmp, old_vae ? "folder-old" : "folder", NULL);
    write_folder(model, dir, fam, old_vae);
    char *file = golden_path(model);
    // A negative prompt, so that SDXL encodes both sides (the empty one is zeros).
    sdg_result *a = run_model(file, "blurry"), *b = run_model(dir, "blurry");
    size_t nl = (size_t)a->latent_channels * a->latent_height * a->latent_width;
    g_assert_cmpmem(a->latents, nl * sizeof(float), b->latents, nl * sizeof(float));
    size_t np = (size_t)3 * a->images[0]->width * a->images[0]->height;
    g_assert_cmpmem(a->images[0]->data, np * sizeof(float), b->images[0]->data,
                    np * sizeof(float));
    printf("# %s as a diffusers folder: the same latents and picture, bit for bit\n", model);
    sdg_result_free(a);
    sdg_result_free(b);
    golden_remove_tree(dir);
    g_free(dir);
    g_free(file);
}

static void test_tiny_sd1(void)
{
    same_run("golden/tiny-sd1.safetensors", SDG_FAMILY_SD1, false);
    same_run("golden/tiny-sd1.safetensors", SDG_FAMILY_SD1, true);
}

// SD 2.x: the open_clip tower as diffusers holds it (transformers' layout, its last layer
// dropped, GELU from the config; the context is its last hidden state after the final norm), v
// prediction from the scheduler config (the single file says so in its metadata).
static void test_tiny_sd2(void)
{
    same_run("golden/tiny-sd2.safetensors", SDG_FAMILY_SD2, false);
}

static void test_tiny_sdxl(void)
{
    same_run("golden/tiny-sdxl.safetensors", SDG_FAMILY_SDXL, false);
}

// ---------------------------------------------------------------------------------------------
// Broken folders

static void expect_refused(const char *dir, sdg_status status, const char *needle)
{
    sdg_model_params mp = sdg_model_default_params();
    mp.vocab_path = vocab_path;
    mp.header_only = true;
    sdg_error err;
    sdg_model *m = sdg_model_load(dir, &mp, &err);
    g_assert_null(m);
    printf("# %s\n", err.message);
    g_assert_cmpint(err.status, ==, status);
    if (!strstr(err.message, needle))
        g_error("message '%s' lacks '%s'", err.message, needle);
}

static void test_bad_folders(void)
{
    char *dir = g_build_filename(tmp, "bad", NULL);
    write_sd15_folder(dir, false);
    char *p;
    // A folder without model_index.json is no pipeline.
    p = g_build_filename(dir, "model_index.json", NULL);
    g_unlink(p);
    g_free(p);
    expect_refused(dir, SDG_ERR_UNSUPPORTED, "model_index.json");
    // Other pipelines are named.
    write_text(dir, ".", "model_index.json", "{\"_class_name\": \"FluxPipeline\"}");
    expect_refused(dir, SDG_ERR_UNSUPPORTED, "Flux");
    write_text(dir, ".", "model_index.json", "{\"_class_name\": \"StableDiffusion3Pipeline\"}");
    expect_refused(dir, SDG_ERR_UNSUPPORTED, "SD 3");
    // Not JSON.
    write_text(dir, ".", "model_index.json", "{\"_class_name\": ");
    expect_refused(dir, SDG_ERR_FORMAT, "model_index.json");
    // Says SDXL, but there is no second text encoder.
    write_model_index(dir, "StableDiffusionXLPipeline", false);   // no text_encoder_2
    expect_refused(dir, SDG_ERR_FORMAT, "text_encoder_2");
    // A listed component that is not there.
    write_sd15_folder(dir, false);
    char *vae = g_build_filename(dir, "vae", NULL);
    golden_remove_tree(vae);
    expect_refused(dir, SDG_ERR_FORMAT, "vae");
    // Weights in another form.
    write_sd15_folder(dir, false);
    p = g_build_filename(dir, "unet", "diffusion_pytorch_model.safetensors", NULL);
    g_unlink(p);
    g_free(p);
    write_text(dir, "unet", "diffusion_pytorch_model.bin", "x");
    expect_refused(dir, SDG_ERR_IO, ".bin");
    write_text(dir, "unet", "diffusion_pytorch_model.safetensors.index.json", "{}");
    expect_refused(dir, SDG_ERR_UNSUPPORTED, "sharded");
    // A scheduler predicting something else.
    write_sd15_folder(dir, false);
    write_text(dir, "scheduler", "scheduler_config.json", "{\"prediction_type\": \"sample\"}");
    expect_refused(dir, SDG_ERR_UNSUPPORTED, "prediction_type");
    // v-prediction and zero terminal SNR are read.
    write_text(dir, "scheduler", "scheduler_config.json",
               "{\"prediction_type\": \"v_prediction\", \"rescale_betas_zero_snr\": true}");
    diffusers_info info;
    sdg_error err;
    st_file *view = diffusers_open(dir, &info, &err);
    g_assert_nonnull(view);
    g_assert_cmpint(info.prediction, ==, SDG_PREDICTION_V);
    g_assert_true(info.ztsnr);
    st_close(view);
    diffusers_info_clear(&info);
    g_free(vae);
    golden_remove_tree(dir);
    g_free(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    vocab_path = golden_path(VOCAB);
    tmp = golden_tmpdir("test-diffusers");
    g_test_add_func("/diffusers/sd15-layout", test_sd15_layout);
    g_test_add_func("/diffusers/tiny-sd1", test_tiny_sd1);
    g_test_add_func("/diffusers/tiny-sd2", test_tiny_sd2);
    g_test_add_func("/diffusers/tiny-sdxl", test_tiny_sdxl);
    g_test_add_func("/diffusers/bad-folders", test_bad_folders);
    int rc = g_test_run();
    golden_tmpdir_remove(tmp);
    g_free(vocab_path);
    return rc;
}
