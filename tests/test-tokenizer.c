/*
 * test-tokenizer.c - the CLIP BPE tokenizer against the reference ids of the 10 golden prompts
 * (openai simple_tokenizer / open_clip), both vocabulary formats, errors, and the A1111 prompt
 * syntax (emphasis, escapes, unbalanced brackets, BREAK, long prompts, comma backtracking).
 */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>

#include "golden.h"
#include "tokenizer/prompt.h"
#include "tokenizer/tokenizer.h"

#define CTX SDG_TOKENIZER_CTX

static sdg_tokenizer *g_tok;   // the OpenAI .gz vocabulary, loaded once

static sdg_tokenizer *load_tok(void)
{
    if (!g_tok) {
        char *path = golden_path("vocab/bpe_simple_vocab_16e6.txt.gz");
        sdg_error err;
        g_tok = sdg_tokenizer_load(path, &err);
        if (!g_tok)
            g_error("%s", err.message);
        g_free(path);
    }
    return g_tok;
}

// The metadata "prompts": a JSON list of strings (json.dumps: \uXXXX escapes, surrogate pairs).
static char **parse_string_list(const char *s)
{
    GPtrArray *out = g_ptr_array_new();
    const char *p = s;
    while (*p == ' ') p++;
    g_assert_cmpint(*p, ==, '[');
    p++;
    for (;;) {
        while (*p == ' ' || *p == ',') p++;
        if (*p == ']')
            break;
        g_assert_cmpint(*p, ==, '"');
        p++;
        GString *str = g_string_new(NULL);
        while (*p != '"') {
            g_assert_cmpint(*p, !=, '\0');
            if (*p != '\\') {
                g_string_append_c(str, *p++);
                continue;
            }
            char e = p[1];
            p += 2;
            if (e == 'u') {
                char hex[5] = {p[0], p[1], p[2], p[3], 0};
                gunichar u = (gunichar)g_ascii_strtoull(hex, NULL, 16);
                p += 4;
                if (u >= 0xd800 && u <= 0xdbff) {
                    g_assert_true(p[0] == '\\' && p[1] == 'u');
                    char lo[5] = {p[2], p[3], p[4], p[5], 0};
                    u = 0x10000 + ((u - 0xd800) << 10) + ((gunichar)g_ascii_strtoull(lo, NULL, 16) - 0xdc00);
                    p += 6;
                }
                g_string_append_unichar(str, u);
            } else {
                const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
                const char *k = strchr(from, e);
                g_assert_nonnull(k);
                g_string_append_c(str, to[k - from]);
            }
        }
        p++;
        g_ptr_array_add(out, g_string_free(str, FALSE));
    }
    g_ptr_array_add(out, NULL);
    return (char **)g_ptr_array_free(out, FALSE);
}

static char **golden_prompts(st_file *f)
{
    const char *json = st_metadata(f, "prompts");
    g_assert_nonnull(json);
    char **prompts = parse_string_list(json);
    g_assert_cmpuint(g_strv_length(prompts), ==, 10);
    return prompts;
}

// Compares the ids of every golden prompt with tok; returns the number of mismatching prompts.
static int check_golden(const sdg_tokenizer *tok, st_file *f, char **prompts)
{
    size_t n_sd1, n_oc, n_nb;
    int32_t *sd1 = golden_i32(f, "tok.ids_sd1", &n_sd1);
    int32_t *oc = golden_i32(f, "tok.ids_openclip", &n_oc);
    int32_t *nb = golden_i32(f, "tok.n_bpe", &n_nb);
    g_assert_cmpuint(n_sd1, ==, 10 * CTX);
    g_assert_cmpuint(n_oc, ==, 10 * CTX);
    g_assert_cmpuint(n_nb, ==, 10);
    int bad = 0;
    for (int i = 0; i < 10; i++) {
        int32_t ids[CTX], ids0[CTX];
        sdg_error err;
        int n = sdg_tokenizer_tokenize77(tok, prompts[i], sdg_tokenizer_eos(tok), ids, &err);
        int n0 = sdg_tokenizer_tokenize77(tok, prompts[i], 0, ids0, &err);
        bool ok = n == nb[i] && n0 == nb[i] && memcmp(ids, sd1 + i * CTX, sizeof ids) == 0 &&
                  memcmp(ids0, oc + i * CTX, sizeof ids0) == 0;
        printf("# prompt %d: %d BPE tokens (ref %d) %s\n", i, n, nb[i], ok ? "ok" : "MISMATCH");
        if (!ok) {
            for (int k = 0; k < CTX; k++)
                if (ids[k] != sd1[i * CTX + k] || ids0[k] != oc[i * CTX + k])
                    printf("#   at %d: got %d/%d ref %d/%d\n", k, ids[k], ids0[k], sd1[i * CTX + k],
                           oc[i * CTX + k]);
            bad++;
        }
    }
    g_free(sd1);
    g_free(oc);
    g_free(nb);
    return bad;
}

static void test_golden(void)
{
    sdg_tokenizer *tok = load_tok();
    g_assert_cmpint(sdg_tokenizer_vocab_size(tok), ==, 49408);
    g_assert_cmpint(sdg_tokenizer_bos(tok), ==, 49406);
    g_assert_cmpint(sdg_tokenizer_eos(tok), ==, 49407);
    g_assert_cmpint(sdg_tokenizer_token_id(tok, ",</w>"), ==, 267);
    g_assert_cmpstr(sdg_tokenizer_token(tok, 320), ==, "a</w>");
    st_file *f = golden_open("golden/tiny-sd1-reference.safetensors");
    char **prompts = golden_prompts(f);
    g_assert_cmpint(check_golden(tok, f, prompts), ==, 0);

    // The prompt parser gives the same windows for prompts without emphasis syntax.
    for (int i = 0; i < 10; i++) {
        if (strpbrk(prompts[i], "()[]:\\") || i == 7)
            continue;
        int32_t ids[CTX];
        sdg_error err;
        sdg_tokenizer_tokenize77(tok, prompts[i], 0, ids, &err);
        sdg_prompt p = {0};
        g_assert_cmpint(sdg_prompt_parse(tok, prompts[i], 0, 0, &p, &err), ==, SDG_OK);
        g_assert_cmpint(p.n_windows, ==, 1);
        g_assert_cmpmem(p.ids, CTX * sizeof(int32_t), ids, sizeof ids);
        for (int k = 0; k < CTX; k++)
            g_assert_cmpfloat(p.weights[k], ==, 1.0f);
        sdg_prompt_clear(&p);
    }
    g_strfreev(prompts);
    st_close(f);
}

static void test_hf_format(void)
{
    sdg_tokenizer *tok = load_tok();
    char *dir = g_dir_make_tmp("sdg-tok-XXXXXX", NULL);
    g_assert_nonnull(dir);
    char *sub = g_build_filename(dir, "tokenizer", NULL);
    g_assert_cmpint(g_mkdir(sub, 0700), ==, 0);
    sdg_error err;
    g_assert_cmpint(sdg_tokenizer_save_hf(tok, sub, &err), ==, SDG_OK);

    st_file *f = golden_open("golden/tiny-sd1-reference.safetensors");
    char **prompts = golden_prompts(f);
    // Load through the folder (tokenizer/ subfolder), vocab.json and merges.txt.
    char *vocab = g_build_filename(sub, "vocab.json", NULL);
    char *merges = g_build_filename(sub, "merges.txt", NULL);
    const char *paths[] = {dir, sub, vocab, merges};
    for (int i = 0; i < 4; i++) {
        sdg_tokenizer *hf = sdg_tokenizer_load(paths[i], &err);
        if (!hf)
            g_error("%s", err.message);
        g_assert_cmpint(sdg_tokenizer_vocab_size(hf), ==, 49408);
        g_assert_cmpint(sdg_tokenizer_bos(hf), ==, 49406);
        g_assert_cmpint(sdg_tokenizer_eos(hf), ==, 49407);
        g_assert_cmpint(check_golden(hf, f, prompts), ==, 0);
        sdg_tokenizer_free(hf);
    }

    // Finding: next to the model file (through tokenizer/), a diffusers folder, explicit paths.
    char *model = g_build_filename(dir, "model.safetensors", NULL);
    char *found = sdg_tokenizer_find(NULL, model, NULL, &err);
    g_assert_cmpstr(found, ==, vocab);
    g_free(found);
    found = sdg_tokenizer_find(NULL, dir, "/nonexistent-models", &err);
    g_assert_cmpstr(found, ==, vocab);
    g_free(found);
    found = sdg_tokenizer_find(NULL, "/nonexistent/m.safetensors", dir, &err);
    g_assert_cmpstr(found, ==, vocab);
    g_free(found);
    found = sdg_tokenizer_find(vocab, "/nonexistent/m.safetensors", NULL, &err);
    g_assert_cmpstr(found, ==, vocab);
    g_free(found);

    // A vocab.json whose specials sit elsewhere, and a broken one.
    char *small = g_build_filename(dir, "small", NULL);
    g_assert_cmpint(g_mkdir(small, 0700), ==, 0);
    GString *js = g_string_new("{\"<|endoftext|>\": 0, \"<|startoftext|>\" : 1");
    for (int i = 0; i < 512; i++) {
        const char *t = sdg_tokenizer_token(tok, i);
        g_string_append(js, ",\"");
        for (const char *c = t; *c; c++) {
            if (*c == '"' || *c == '\\')
                g_string_append_c(js, '\\');
            g_string_append_c(js, *c);
        }
        g_string_append_printf(js, "\": %d", i + 2);
    }
    g_string_append(js, ", \"\\u0063\\u0061t</w>\": 514, \"ca\": 515}");
    char *sv = g_build_filename(small, "vocab.json", NULL), *sm = g_build_filename(small, "merges.txt", NULL);
    g_assert_true(g_file_set_contents(sv, js->str, -1, NULL));
    g_assert_true(g_file_set_contents(sm, "#version: 0.2\nc a\nca t</w>\n", -1, NULL));
    sdg_tokenizer *st = sdg_tokenizer_load(small, &err);
    if (!st)
        g_error("%s", err.message);
    g_assert_cmpint(sdg_tokenizer_vocab_size(st), ==, 516);
    g_assert_cmpint(sdg_tokenizer_bos(st), ==, 1);
    g_assert_cmpint(sdg_tokenizer_eos(st), ==, 0);
    int32_t ids[CTX];
    g_assert_cmpint(sdg_tokenizer_tokenize77(st, "Cat cab", 0, ids, &err), ==, 3);
    g_assert_cmpint(ids[0], ==, 1);
    g_assert_cmpint(ids[1], ==, 514);
    g_assert_cmpint(ids[2], ==, 515);
    g_assert_cmpint(ids[3], ==, sdg_tokenizer_token_id(st, "b</w>"));
    g_assert_cmpint(ids[4], ==, 0);
    sdg_tokenizer_free(st);
    g_assert_true(g_file_set_contents(sv, "{\"a\": 1,}", -1, NULL));
    g_assert_null(sdg_tokenizer_load(sv, &err));
    g_assert_cmpint(err.status, ==, SDG_ERR_FORMAT);
    printf("# %s\n", err.message);
    g_string_free(js, TRUE);
    g_free(sv);
    g_free(sm);
    g_free(small);

    g_strfreev(prompts);
    st_close(f);
    g_free(model);
    g_free(vocab);
    g_free(merges);
    golden_remove_tree(dir);
    g_free(sub);
    g_free(dir);
}

static void test_errors(void)
{
    sdg_tokenizer *tok = load_tok();
    sdg_error err = {0};
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    g_assert_cmpint(sdg_tokenizer_encode(tok, "abc\xff", ids, &err), ==, -1);
    g_assert_cmpint(err.status, ==, SDG_ERR_INVALID_ARG);
    g_assert_cmpint(sdg_tokenizer_encode(tok, "\xc3\x28", ids, &err), ==, -1);
    g_assert_cmpuint(ids->len, ==, 0);
    g_array_free(ids, TRUE);
    int32_t ids77[CTX];
    g_assert_cmpint(sdg_tokenizer_tokenize77(tok, "\xed\xa0\x80", 0, ids77, &err), ==, -1);
    sdg_prompt p;
    g_assert_cmpint(sdg_prompt_parse(tok, "(a)\xfe", 0, 0, &p, &err), ==, SDG_ERR_INVALID_ARG);
    g_assert_cmpint(p.n_windows, ==, 0);
    g_assert_null(p.ids);
    sdg_prompt_clear(&p);

    // Missing vocabulary: the message names the files needed and where it looked.
    char *found = sdg_tokenizer_find(NULL, "/nonexistent/dir/model.safetensors", "/nonexistent/models", &err);
    g_assert_null(found);
    printf("# %s\n", err.message);
    g_assert_cmpint(err.status, ==, SDG_ERR_IO);
    g_assert_nonnull(strstr(err.message, "bpe_simple_vocab_16e6.txt.gz or vocab.json + merges.txt"));
    g_assert_nonnull(strstr(err.message, "/nonexistent/dir"));
    g_assert_nonnull(strstr(err.message, "/nonexistent/models"));
    g_assert_null(sdg_tokenizer_find("/nonexistent/vocab.json", NULL, NULL, &err));
    g_assert_nonnull(strstr(err.message, "/nonexistent/vocab.json"));
    g_assert_null(sdg_tokenizer_load("/nonexistent/bpe.txt.gz", &err));
    g_assert_cmpint(err.status, ==, SDG_ERR_IO);
    g_assert_null(sdg_tokenizer_load("/nonexistent/vocab.json", &err));
    g_assert_cmpint(err.status, ==, SDG_ERR_IO);
    // Not a gzip vocabulary.
    char *dir = g_dir_make_tmp("sdg-tok-XXXXXX", NULL);
    char *bad = g_build_filename(dir, "bpe_simple_vocab_16e6.txt.gz", NULL);
    g_assert_true(g_file_set_contents(bad, "\x1f\x8b\x08\x00garbage", 12, NULL));
    g_assert_null(sdg_tokenizer_load(dir, &err));
    g_assert_cmpint(err.status, ==, SDG_ERR_FORMAT);
    printf("# %s\n", err.message);
    g_remove(bad);
    g_rmdir(dir);
    g_free(bad);
    g_free(dir);
}

// Two texts that must give the same ids.
static void assert_same(const sdg_tokenizer *tok, const char *a, const char *b)
{
    GArray *ia = g_array_new(FALSE, FALSE, sizeof(int32_t)), *ib = g_array_new(FALSE, FALSE, sizeof(int32_t));
    g_assert_cmpint(sdg_tokenizer_encode(tok, a, ia, NULL), >=, 0);
    g_assert_cmpint(sdg_tokenizer_encode(tok, b, ib, NULL), >=, 0);
    if (ia->len != ib->len || memcmp(ia->data, ib->data, ia->len * sizeof(int32_t)) != 0)
        g_error("\"%s\" and \"%s\" tokenize differently", a, b);
    g_array_free(ia, TRUE);
    g_array_free(ib, TRUE);
}

static void test_cleaning(void)
{
    sdg_tokenizer *tok = load_tok();
    assert_same(tok, "don\xe2\x80\x99t \xe2\x80\x9cquoted\xe2\x80\x9d", "don't \"quoted\"");   // uncurl
    assert_same(tok, "\xef\xbc\xa1\xef\xbc\xa2\xef\xbc\xa3\xe3\x80\x80x", "abc x");          // width
    assert_same(tok, "\xef\xac\x81ne", "fine");                                              // ligature
    assert_same(tok, "Cafe\xcc\x81", "caf\xc3\xa9");                                         // NFC
    assert_same(tok, "&amp;lt; &#39;s &#x41; &eacute; &hellip;", "< 's a \xc3\xa9 \xe2\x80\xa6");
    assert_same(tok, "&ampfoo &notit; &bogus;", "&foo \xc2\xacit; &bogus;");
    assert_same(tok, " \t A \n\n B\xc2\xa0 ", "a b");
    assert_same(tok, "\x1b[31mred\x1b[0m\x01", "red");
    assert_same(tok, "\xce\x9f\xce\x94\xce\x9f\xce\xa3", "\xce\xbf\xce\xb4\xce\xbf\xcf\x82");   // final sigma
    assert_same(tok, "<|endoftext|>", "<|endoftext|>");
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    g_assert_cmpint(sdg_tokenizer_encode(tok, "x<|endoftext|>", ids, NULL), ==, 2);
    g_assert_cmpint(g_array_index(ids, int32_t, 1), ==, 49407);
    g_array_free(ids, TRUE);
}

// ---------------------------------------------------------------------------------------------
// Prompt syntax.

// Checks one window against the BPE ids of `plain` with per-token weights w[nw] (nw 0: all 1;
// nw 1: all w[0]; else one per token).
static void assert_window(const sdg_tokenizer *tok, const sdg_prompt *p, int win, const char *plain,
                          const float *w, int nw, int32_t pad)
{
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    int n = sdg_tokenizer_encode(tok, plain, ids, NULL);
    g_assert_cmpint(n, <=, 75);
    if (nw > 1)
        g_assert_cmpint(n, ==, nw);
    const int32_t *got = p->ids + win * CTX;
    const float *gw = p->weights + win * CTX;
    g_assert_cmpint(got[0], ==, sdg_tokenizer_bos(tok));
    g_assert_cmpfloat(gw[0], ==, 1.0f);
    for (int k = 0; k < n; k++) {
        g_assert_cmpint(got[1 + k], ==, g_array_index(ids, int32_t, k));
        g_assert_cmpfloat_with_epsilon(gw[1 + k], nw == 0 ? 1.0f : nw == 1 ? w[0] : w[k], 1e-6);
    }
    g_assert_cmpint(got[n + 1], ==, sdg_tokenizer_eos(tok));
    for (int k = n + 1; k < CTX; k++) {
        if (k > n + 1)
            g_assert_cmpint(got[k], ==, pad);
        g_assert_cmpfloat(gw[k], ==, 1.0f);
    }
    g_array_free(ids, TRUE);
}

static void check_prompt_w(const char *text, const char *plain, const float *w, int nw)
{
    sdg_tokenizer *tok = load_tok();
    sdg_prompt p = {0};
    sdg_error err;
    g_assert_cmpint(sdg_prompt_parse(tok, text, 0, 0, &p, &err), ==, SDG_OK);
    g_assert_cmpint(p.n_windows, ==, 1);
    assert_window(tok, &p, 0, plain, w, nw, 0);
    sdg_prompt_clear(&p);
    sdg_prompt_clear(&p);   // idempotent
}

#define check_prompt(text, plain, ...) \
    check_prompt_w(text, plain, (float[]){__VA_ARGS__}, \
                   (int)(sizeof((float[]){__VA_ARGS__}) / sizeof(float)))
#define check_plain(text, plain) check_prompt_w(text, plain, NULL, 0)

static void test_emphasis(void)
{
    const float a = 1.1f, aa = (float)(1.1 * 1.1), b = (float)(1 / 1.1);
    check_prompt("a (cat) dog", "a cat dog", 1, a, 1);
    check_prompt("a ((cat)) dog", "a cat dog", 1, aa, 1);
    check_prompt("a [cat] dog", "a cat dog", 1, b, 1);
    check_prompt("a [[cat]] dog", "a cat dog", 1, (float)(1 / 1.1 / 1.1), 1);
    check_prompt("a (cat:1.3) dog", "a cat dog", 1, 1.3f, 1);
    check_prompt("a ( cat : 0.5 ) dog", "a cat dog", 1, 0.5f, 1);
    check_prompt("(a (cat) dog:1.5)", "a cat dog", 1.5f, (float)(1.1 * 1.5), 1.5f);
    check_prompt("[(cat)]", "cat", (float)(1.1 * (1 / 1.1)));
    check_prompt("(cat:-.5)", "cat", -0.5f);
    // Escapes are literal brackets; "\\" is a backslash; a lone backslash is dropped.
    check_plain("\\(cat\\) \\[dog\\]", "(cat) [dog]");
    check_plain("a \\\\ b", "a \\ b");
    check_plain("a\\b", "ab");
    check_prompt("(\\(cat\\))", "(cat)", a);
    // Unbalanced: unclosed groups apply to the end, stray closers are literal.
    check_prompt("a (cat dog", "a cat dog", 1, a, a);
    check_prompt("a [cat dog", "a cat dog", 1, b, b);
    check_plain("a cat) dog]", "a cat) dog]");
    check_prompt("((a) cat", "a cat", aa, a);
    check_plain("cat:1.5)", "cat:1.5)");                         // no open group
    check_plain("time: 12:30", "time: 12:30");                     // colons are text
    check_prompt("(cat:1.2.3)", "cat:1.2.3)", a);  // not a number
    check_prompt("(cat:.)", "cat:.)", a);
    check_prompt("(cat:1.5", "cat:1.5", a);
    // Weights stay within +-1000: a larger explicit one is text, like a malformed one (1.8e30
    // overflowed float32 and made pictures NaN: tests/fuzz/crashes/fuzz_prompt), and nested
    // products are clamped.
    check_prompt("(cat:1000)", "cat", 1000.0f);
    check_prompt("(cat:-1000)", "cat", -1000.0f);
    check_prompt("(cat:1000.5)", "cat:1000.5)", a);
    check_prompt("(cat:1777777777777777777777777777777)", "cat:1777777777777777777777777777777)", a);
    check_prompt("((cat:1000))", "cat", 1000.0f);
    check_prompt("[(cat:-1000)]", "cat", (float)(-1000 / 1.1));
    // Products are clamped as they are taken: 103 nested (..:1000) would overflow to inf, and an
    // outer (..:0) would then make NaN (inf * 0).
    GString *deep = g_string_new(NULL);
    for (int i = 0; i < 104; i++)
        g_string_append_c(deep, '(');
    g_string_append(deep, "cat");
    for (int i = 0; i < 103; i++)
        g_string_append(deep, ":1000)");
    g_string_append(deep, ":0)");
    check_prompt(deep->str, "cat", 0.0f);
    g_string_free(deep, TRUE);
    check_plain("", "");
    check_plain("()", "");
    // Runs of equal weight are tokenized together (no word split at "(x)" boundaries) and
    // text that is not emphasised keeps its spacing.
    check_prompt("super(man)", "super man", 1, a);
}

static void test_break(void)
{
    sdg_tokenizer *tok = load_tok();
    sdg_prompt p = {0};
    sdg_error err;
    g_assert_cmpint(sdg_prompt_parse(tok, "a cat BREAK (a dog)", 49407, 0, &p, &err), ==, SDG_OK);
    g_assert_cmpint(p.n_windows, ==, 2);
    assert_window(tok, &p, 0, "a cat", NULL, 0, 49407);
    assert_window(tok, &p, 1, "a dog", (float[]){1.1f}, 1, 49407);
    sdg_prompt_clear(&p);
    // Not a word of its own / not upper case: text.
    g_assert_cmpint(sdg_prompt_parse(tok, "BREAKFAST break", 0, 0, &p, &err), ==, SDG_OK);
    g_assert_cmpint(p.n_windows, ==, 1);
    assert_window(tok, &p, 0, "BREAKFAST break", NULL, 0, 0);
    sdg_prompt_clear(&p);
}

// "w w w ..." with n words.
static char *repeat(const char *w, int n)
{
    GString *s = g_string_new(NULL);
    for (int i = 0; i < n; i++)
        g_string_append_printf(s, "%s%s", i ? " " : "", w);
    return g_string_free(s, FALSE);
}

static void test_long(void)
{
    sdg_tokenizer *tok = load_tok();
    char *text = repeat("cat", 200);
    sdg_prompt p = {0};
    sdg_error err;
    g_assert_cmpint(sdg_prompt_parse(tok, text, 49407, 0, &p, &err), ==, SDG_OK);
    g_assert_cmpint(p.n_windows, ==, 3);
    char *w75 = repeat("cat", 75), *w50 = repeat("cat", 50);
    assert_window(tok, &p, 0, w75, NULL, 0, 49407);
    assert_window(tok, &p, 1, w75, NULL, 0, 49407);
    assert_window(tok, &p, 2, w50, NULL, 0, 49407);
    sdg_prompt_clear(&p);
    g_assert_cmpint(sdg_prompt_parse(tok, text, 49407, 2, &p, &err), ==, SDG_OK);
    g_assert_cmpint(p.n_windows, ==, 2);
    assert_window(tok, &p, 1, w75, NULL, 0, 49407);
    sdg_prompt_clear(&p);
    // Exactly 75 tokens fill one window.
    g_assert_cmpint(sdg_prompt_parse(tok, w75, 0, 0, &p, &err), ==, SDG_OK);
    g_assert_cmpint(p.n_windows, ==, 1);
    sdg_prompt_clear(&p);
    g_free(text);
    g_free(w75);
    g_free(w50);
}

static void test_comma(void)
{
    sdg_tokenizer *tok = load_tok();
    sdg_prompt p = {0};
    sdg_error err;
    // Comma 5 tokens before the end of the window: the words after it move to the next one.
    char *cats = repeat("cat", 70), *dogs = repeat("dog", 10);
    char *text = g_strdup_printf("%s, %s", cats, dogs);
    char *first = g_strdup_printf("%s,", cats);
    g_assert_cmpint(sdg_prompt_parse(tok, text, 0, 0, &p, &err), ==, SDG_OK);
    g_assert_cmpint(p.n_windows, ==, 2);
    assert_window(tok, &p, 0, first, NULL, 0, 0);
    assert_window(tok, &p, 1, dogs, NULL, 0, 0);
    sdg_prompt_clear(&p);
    g_free(cats); g_free(dogs); g_free(text); g_free(first);
    // Weights move with their tokens.
    cats = repeat("cat", 70);
    text = g_strdup_printf("%s, (dog dog dog dog dog dog)", cats);
    g_assert_cmpint(sdg_prompt_parse(tok, text, 0, 0, &p, &err), ==, SDG_OK);
    g_assert_cmpint(p.n_windows, ==, 2);
    dogs = repeat("dog", 6);
    assert_window(tok, &p, 1, dogs, (float[]){1.1f}, 1, 0);
    sdg_prompt_clear(&p);
    g_free(cats); g_free(dogs); g_free(text);
    // Comma 25 tokens back: beyond the backtrack, the window is cut at 75.
    cats = repeat("cat", 50);
    dogs = repeat("dog", 40);
    text = g_strdup_printf("%s, %s", cats, dogs);
    char *d24 = repeat("dog", 24), *d16 = repeat("dog", 16);
    first = g_strdup_printf("%s, %s", cats, d24);
    g_assert_cmpint(sdg_prompt_parse(tok, text, 0, 0, &p, &err), ==, SDG_OK);
    g_assert_cmpint(p.n_windows, ==, 2);
    assert_window(tok, &p, 0, first, NULL, 0, 0);
    assert_window(tok, &p, 1, d16, NULL, 0, 0);
    sdg_prompt_clear(&p);
    g_free(cats); g_free(dogs); g_free(text); g_free(first); g_free(d24); g_free(d16);
    // A comma exactly at the window's end stays in the next window's start.
    cats = repeat("cat", 75);
    text = g_strdup_printf("%s, dog", cats);
    g_assert_cmpint(sdg_prompt_parse(tok, text, 0, 0, &p, &err), ==, SDG_OK);
    g_assert_cmpint(p.n_windows, ==, 2);
    assert_window(tok, &p, 0, cats, NULL, 0, 0);
    assert_window(tok, &p, 1, ", dog", NULL, 0, 0);
    sdg_prompt_clear(&p);
    g_free(cats); g_free(text);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/tokenizer/golden", test_golden);
    g_test_add_func("/tokenizer/hf-format", test_hf_format);
    g_test_add_func("/tokenizer/errors", test_errors);
    g_test_add_func("/tokenizer/cleaning", test_cleaning);
    g_test_add_func("/prompt/emphasis", test_emphasis);
    g_test_add_func("/prompt/break", test_break);
    g_test_add_func("/prompt/long", test_long);
    g_test_add_func("/prompt/comma", test_comma);
    int rc = g_test_run();
    sdg_tokenizer_free(g_tok);
    return rc;
}
