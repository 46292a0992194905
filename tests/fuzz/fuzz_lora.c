/*
 * fuzz_lora.c - libFuzzer harness for LoRA / LyCORIS files (lora/lora.c) and A1111's <lora:...>
 * prompt tags.
 *
 * The first input byte picks what the rest is:
 *   'P' (0x50): a prompt for lora_prompt_tags. A success gives non-empty names with weights in
 *               [-10, 10] and a text shorter by at least 8 bytes a tag; a refusal says why.
 *   else:       a LoRA .safetensors file, planned against the tiny SD 1.x model (byte even) or
 *               the tiny SD 2.x one (odd: open_clip's packed q/k/v, row slices). A plan that is
 *               accepted must patch at least one tensor, count its bytes, and merge into every
 *               patched tensor (read from the model) without touching memory outside it: the
 *               merge runs on a malloc'd buffer of exactly the tensor's size, so ASan sees an
 *               overrun of any factor's product.
 * Seeds: small cut-downs of the golden LoRA in both forms, and LoHa, LoKr, LoCon-with-core and
 * DoRA modules (tests/fuzz/make-corpus.py).
 */
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "lora/lora.h"

static sdg_model *models[2];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    static const char *const files[2] = { "tiny-sd1.safetensors", "tiny-sd2.safetensors" };
    char *vocab = g_build_filename(fuzz_reference_dir(), "vocab", "bpe_simple_vocab_16e6.txt.gz",
                                   NULL);
    for (int i = 0; i < 2; i++) {
        char *path = g_build_filename(fuzz_reference_dir(), "golden", files[i], NULL);
        sdg_model_params mp = sdg_model_default_params();
        mp.vocab_path = vocab;
        sdg_error err;
        models[i] = sdg_model_load(path, &mp, &err);
        if (!models[i]) {
            fprintf(stderr, "fuzz_lora: %s\n", err.message);
            abort();
        }
        g_free(path);
    }
    g_free(vocab);
    return 0;
}

static void fuzz_tags(const uint8_t *data, size_t size)
{
    char *text = g_strndup((const char *)data, size);
    char *clean = NULL;
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    GArray *weights = g_array_new(FALSE, FALSE, sizeof(float));
    sdg_error err;
    if (lora_prompt_tags(text, &clean, names, weights, &err) == SDG_OK) {
        CHECK(clean != NULL);
        CHECK(names->len == weights->len);
        for (guint i = 0; i < names->len; i++) {
            CHECK(((const char *)names->pdata[i])[0] != '\0');
            float w = g_array_index(weights, float, i);
            CHECK(isfinite(w) && fabsf(w) <= LORA_MAX_WEIGHT);
        }
        // Each tag taken out is at least "<lora:x>". (The text left may hold a tag again: taking
        // "<lora:a>" out of "<lo<lora:a>ra:b>" joins "<lora:b>"; A1111's one-pass re.sub does the
        // same, and the text is then tokenized as it stands.)
        CHECK(strlen(clean) + 8 * (size_t)names->len <= strlen(text));
        g_free(clean);
    } else {
        CHECK(err.message[0] != '\0');
    }
    g_ptr_array_free(names, TRUE);
    g_array_free(weights, TRUE);
    g_free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] == 'P') {
        fuzz_tags(data + 1, size - 1);
        return 0;
    }
    const sdg_model *m = models[data[0] & 1];
    char path[64];
    const void *parts[1] = { data + 1 };
    size_t sizes[1] = { size - 1 };
    fuzz_memfile(path, parts, sizes, 1, 1);
    sdg_lora l = { path, 0.7f };
    lora_set *s = NULL;
    sdg_error err;
    if (lora_set_plan(m, &l, 1, true, &s, &err) != SDG_OK) {
        CHECK(s == NULL && err.message[0] != '\0');
        return 0;
    }
    CHECK(lora_set_modules(s) >= 1 && lora_set_patched_bytes(s) > 0);
    const bool *patched = lora_set_patched(s);
    int n_patched = 0;
    for (int i = 0; i < st_count(m->file); i++) {
        if (!patched[i])
            continue;
        n_patched++;
        const st_tensor *t = st_at(m->file, i);
        float *w = malloc((size_t)t->n_elements * sizeof *w);
        CHECK(w && st_read_f32(m->file, t, w, &err) == SDG_OK);
        if (!lora_set_patch(s, i, w, t->shape[0], t->n_elements / t->shape[0], &err))
            CHECK(err.message[0] != '\0');
        free(w);
    }
    CHECK(n_patched >= 1);
    lora_set_free(s);
    return 0;
}
