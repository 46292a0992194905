/*
 * prompt.c - A1111 prompt emphasis and long prompts (see prompt.h): parse_prompt_attention, then
 * the chunking of FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line (75 tokens a window, comma
 * backtrack 20, BREAK).
 *
 * Deliberate differences from A1111: inside brackets A1111 multiplies the BREAK marker's weight
 * (-1) too, after which "BREAK" is tokenized as a word with a negative weight; here BREAK always
 * breaks. An explicit weight Python's float() would reject (or beyond +-1000,
 * PROMPT_MAX_WEIGHT) leaves its text literal instead of raising, and nested products are clamped
 * to +-1000. The window layout is BOS + tokens + EOS + padding like
 * open_clip.tokenize (A1111 pads before the EOS; the same ids when pad = EOS, the SD1 case).
 * Textual-inversion embeddings follow tokenize_line too (find_embedding_at_position, moved whole
 * to the next window when they do not fit), with one deliberate difference: when comma
 * backtracking moves the words after the last comma to the next window, an embedding among them
 * moves with them (A1111 moves its placeholder ids but leaves its vectors at the old offset, in
 * the padding of the window it left).
 * Not here: prompt editing, alternation.
 *
 * ref: https://github.com/AUTOMATIC1111/stable-diffusion-webui modules/prompt_parser.py
 *      (parse_prompt_attention), modules/sd_hijack_clip.py (tokenize_line)
 */
#include "prompt.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#define PROMPT_CHUNK (SDG_TOKENIZER_CTX - 2)   // 75 tokens between BOS and EOS
#define PROMPT_COMMA_BACKTRACK 20              // A1111 opts.comma_padding_backtrack default
// The largest emphasis weight, explicit or nested: any larger explicit weight leaves its text
// literal (as a malformed one does), and every nesting product is clamped to it as it is taken
// (so no product overflows, and none becomes inf * 0 = NaN). A1111 has no bound,
// but a weight that overflows float32 (found by tests/fuzz/fuzz_prompt) turns the text
// encoder's output, and so the picture, into NaN; no prompt needs more than a few units.
#define PROMPT_MAX_WEIGHT 1000.0

static double prompt_clamp(double w)
{
    return w > PROMPT_MAX_WEIGHT ? PROMPT_MAX_WEIGHT
           : w < -PROMPT_MAX_WEIGHT ? -PROMPT_MAX_WEIGHT : w;
}

typedef struct prompt_frag {
    char *text;      // owned
    double weight;   // Python floats: products are taken in double like A1111
    bool brk;        // a BREAK marker (text NULL)
} prompt_frag;

// Python's str.isspace() (re's \s in str patterns).
static bool prompt_isspace(gunichar c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

// Python's \w: letters, numbers, underscore.
static bool prompt_isword(gunichar c)
{
    switch (g_unichar_type(c)) {
    case G_UNICODE_UPPERCASE_LETTER: case G_UNICODE_LOWERCASE_LETTER:
    case G_UNICODE_TITLECASE_LETTER: case G_UNICODE_MODIFIER_LETTER: case G_UNICODE_OTHER_LETTER:
    case G_UNICODE_DECIMAL_NUMBER: case G_UNICODE_LETTER_NUMBER: case G_UNICODE_OTHER_NUMBER:
        return true;
    default:
        return c == '_';
    }
}

static void frag_push(GArray *res, const char *s, size_t n, bool brk)
{
    prompt_frag f = {brk ? NULL : g_strndup(s, n), brk ? -1.0 : 1.0, brk};
    g_array_append_val(res, f);
}

// Literal text, split at BREAK like re.split(r"\s*\bBREAK\b\s*", text).
static void add_text(GArray *res, const char *s, size_t n)
{
    const char *end = s + n, *part = s, *p = s;
    while (p + 5 <= end) {
        const char *hit = memmem(p, (size_t)(end - p), "BREAK", 5);
        if (!hit || hit + 5 > end)
            break;
        bool left = hit == s || !prompt_isword(g_utf8_get_char(g_utf8_prev_char(hit)));
        bool right = hit + 5 == end || !prompt_isword(g_utf8_get_char(hit + 5));
        if (!left || !right) {
            p = hit + 1;
            continue;
        }
        // \s* on both sides, the left one not reaching back into the previous match.
        const char *a = hit, *b = hit + 5;
        while (a > part && prompt_isspace(g_utf8_get_char(g_utf8_prev_char(a))))
            a = g_utf8_prev_char(a);
        while (b < end && prompt_isspace(g_utf8_get_char(b)))
            b = g_utf8_next_char(b);
        frag_push(res, part, (size_t)(a - part), false);
        frag_push(res, NULL, 0, true);
        part = p = b;
    }
    frag_push(res, part, (size_t)(end - part), false);
}

static void multiply_range(GArray *res, guint from, double m)
{
    for (guint i = from; i < res->len; i++) {
        prompt_frag *f = &g_array_index(res, prompt_frag, i);
        if (!f->brk)
            f->weight = prompt_clamp(f->weight * m);   // never inf, so never inf * 0 = NaN
    }
}

// Matches :\s*([+-]?[.\d]+)\s*\) at p (on ':'). Returns the end of the match or NULL; the
// number goes to *num as ASCII (Unicode digits converted), NUL-terminated, up to cap bytes.
static const char *match_weight(const char *p, char *num, size_t cap)
{
    const char *q = p + 1;
    while (*q && prompt_isspace(g_utf8_get_char(q)))
        q = g_utf8_next_char(q);
    size_t k = 0;
    if (*q == '+' || *q == '-') {
        num[k++] = *q;
        q++;
    }
    const char *d0 = q;
    while (*q) {
        gunichar c = g_utf8_get_char(q);
        char a;
        if (c == '.')
            a = '.';
        else if (g_unichar_type(c) == G_UNICODE_DECIMAL_NUMBER)
            a = (char)('0' + g_unichar_digit_value(c));
        else
            break;
        if (k + 1 < cap)
            num[k++] = a;
        else
            num[cap - 2] = 'x';   // too long to be a sane weight: make it invalid
        q = g_utf8_next_char(q);
    }
    num[k] = '\0';
    if (q == d0)
        return NULL;
    while (*q && prompt_isspace(g_utf8_get_char(q)))
        q = g_utf8_next_char(q);
    return *q == ')' ? q + 1 : NULL;
}

// Python float() of [+-]?[.\d]+: at most one '.', at least one digit; must be finite.
static bool parse_weight(const char *num, double *w)
{
    int dots = 0, digits = 0;
    for (const char *c = num; *c; c++) {
        if (*c == '.')
            dots++;
        else if (*c >= '0' && *c <= '9')
            digits++;
        else if (!(c == num && (*c == '+' || *c == '-')))
            return false;
    }
    if (dots > 1 || digits == 0)
        return false;
    *w = g_ascii_strtod(num, NULL);
    return isfinite(*w) && fabs(*w) <= PROMPT_MAX_WEIGHT;
}

// A1111 parse_prompt_attention: a list of (text, weight) and BREAK markers.
static GArray *parse_attention(const char *text)
{
    GArray *res = g_array_new(FALSE, FALSE, sizeof(prompt_frag));
    GArray *round = g_array_new(FALSE, FALSE, sizeof(guint));
    GArray *square = g_array_new(FALSE, FALSE, sizeof(guint));
    const char *p = text;
    while (*p) {
        char c = *p;
        if (c == '\\') {
            char e = p[1];
            if (e == '(' || e == ')' || e == '[' || e == ']' || e == '\\') {
                frag_push(res, p + 1, 1, false);
                p += 2;
            } else {   // a lone backslash: text[1:] is ""
                frag_push(res, "", 0, false);
                p += 1;
            }
        } else if (c == '(' || c == '[') {
            guint at = res->len;
            g_array_append_val(c == '(' ? round : square, at);
            p++;
        } else if (c == ':') {
            char num[64];
            const char *end = match_weight(p, num, sizeof num);
            double w;
            if (end && round->len > 0 && parse_weight(num, &w)) {
                multiply_range(res, g_array_index(round, guint, round->len - 1), w);
                g_array_set_size(round, round->len - 1);
                p = end;
            } else if (end) {
                add_text(res, p, (size_t)(end - p));
                p = end;
            } else {
                add_text(res, p, 1);
                p++;
            }
        } else if (c == ')' && round->len > 0) {
            multiply_range(res, g_array_index(round, guint, round->len - 1), 1.1);
            g_array_set_size(round, round->len - 1);
            p++;
        } else if (c == ']' && square->len > 0) {
            multiply_range(res, g_array_index(square, guint, square->len - 1), 1 / 1.1);
            g_array_set_size(square, square->len - 1);
            p++;
        } else if (c == ')' || c == ']') {
            add_text(res, p, 1);
            p++;
        } else {
            size_t n = strcspn(p, "\\()[]:");
            add_text(res, p, n);
            p += n;
        }
    }
    for (guint i = 0; i < round->len; i++)
        multiply_range(res, g_array_index(round, guint, i), 1.1);
    for (guint i = 0; i < square->len; i++)
        multiply_range(res, g_array_index(square, guint, i), 1 / 1.1);
    g_array_free(round, TRUE);
    g_array_free(square, TRUE);
    if (res->len == 0)
        frag_push(res, "", 0, false);
    // Merge runs of identical weights, so that they are tokenized as one text.
    guint m = 0;
    for (guint i = 0; i < res->len; i++) {
        prompt_frag f = g_array_index(res, prompt_frag, i);
        prompt_frag *last = m > 0 ? &g_array_index(res, prompt_frag, m - 1) : NULL;
        if (last && !last->brk && !f.brk && last->weight == f.weight) {
            char *joined = g_strconcat(last->text, f.text, NULL);
            g_free(last->text);
            g_free(f.text);
            last->text = joined;
        } else {
            g_array_index(res, prompt_frag, m++) = f;
        }
    }
    g_array_set_size(res, m);
    return res;
}

static void frags_free(GArray *res)
{
    for (guint i = 0; i < res->len; i++)
        g_free(g_array_index(res, prompt_frag, i).text);
    g_array_free(res, TRUE);
}

// ---------------------------------------------------------------------------------------------
// Windows (A1111 tokenize_line).

typedef struct prompt_chunker {
    const sdg_tokenizer *tok;
    int32_t pad_id;
    GArray *ids, *weights;       // finished windows, 77 each
    GArray *rows;                // finished windows' embedding vectors (const float *), 77 each
    int32_t cur[PROMPT_CHUNK];   // current chunk
    float cur_w[PROMPT_CHUNK];
    const float *cur_r[PROMPT_CHUNK];
    bool any_row;                // an embedding was placed
    int n;
    int last_comma;              // index of the last comma in the current chunk, or -1
    int n_windows;
} prompt_chunker;

static void next_chunk(prompt_chunker *c)
{
    int32_t bos = sdg_tokenizer_bos(c->tok), eos = sdg_tokenizer_eos(c->tok);
    float one = 1.0f;
    const float *none = NULL;
    g_array_append_val(c->ids, bos);
    g_array_append_val(c->weights, one);
    g_array_append_val(c->rows, none);
    g_array_append_vals(c->ids, c->cur, (guint)c->n);
    g_array_append_vals(c->weights, c->cur_w, (guint)c->n);
    g_array_append_vals(c->rows, c->cur_r, (guint)c->n);
    g_array_append_val(c->ids, eos);
    g_array_append_val(c->weights, one);
    g_array_append_val(c->rows, none);
    for (int i = c->n; i < PROMPT_CHUNK; i++) {
        g_array_append_val(c->ids, c->pad_id);
        g_array_append_val(c->weights, one);
        g_array_append_val(c->rows, none);
    }
    c->n = 0;
    c->last_comma = -1;
    c->n_windows++;
}

// What A1111 does before placing the token `id` (or an embedding starting with it): note a
// comma, move the words after the last comma to the next window when this one is full, and
// close a full window.
static void chunk_prepare(prompt_chunker *c, int32_t id, int32_t comma)
{
    if (id == comma) {
        c->last_comma = c->n;
    } else if (c->n == PROMPT_CHUNK && c->last_comma != -1 &&
               c->n - c->last_comma <= PROMPT_COMMA_BACKTRACK) {
        // Move the words after the last comma into the next window.
        int keep = c->last_comma + 1, moved = c->n - keep;
        int32_t ids[PROMPT_CHUNK];
        float ws[PROMPT_CHUNK];
        const float *rs[PROMPT_CHUNK];
        memcpy(ids, c->cur + keep, (size_t)moved * sizeof(int32_t));
        memcpy(ws, c->cur_w + keep, (size_t)moved * sizeof(float));
        memcpy(rs, c->cur_r + keep, (size_t)moved * sizeof rs[0]);
        c->n = keep;
        next_chunk(c);
        memcpy(c->cur, ids, (size_t)moved * sizeof(int32_t));
        memcpy(c->cur_w, ws, (size_t)moved * sizeof(float));
        memcpy(c->cur_r, rs, (size_t)moved * sizeof rs[0]);
        c->n = moved;
    }
    if (c->n == PROMPT_CHUNK)
        next_chunk(c);
}

static void chunk_push(prompt_chunker *c, int32_t id, float w, const float *row)
{
    SDG_ASSERT(c->n < PROMPT_CHUNK);
    c->cur[c->n] = id;
    c->cur_w[c->n] = w;
    c->cur_r[c->n] = row;
    c->any_row = c->any_row || row;
    c->n++;
}

// ---------------------------------------------------------------------------------------------
// Embeddings (A1111 EmbeddingDatabase.find_embedding_at_position).

typedef struct prompt_resolved {
    const float *rows;   // NULL: not resolved yet
    int n_rows, width;
} prompt_resolved;

// The longest name of dict whose ids start ids[0..n), the first of equal length; -1 if none.
static int dict_match(const sdg_prompt_dict *dict, const int32_t *ids, guint n, int *len)
{
    int best = -1;
    for (int i = 0; dict && i < dict->n; i++) {
        int k = dict->n_ids[i];
        if (k < 1 || (guint)k > n || dict->ids[i][0] != ids[0] || (best >= 0 && k <= *len))
            continue;
        if (memcmp(dict->ids[i], ids, (size_t)k * sizeof *ids) == 0) {
            best = i;
            *len = k;
        }
    }
    return best;
}

// Places one fragment's tokens, replacing embedding names by their vectors.
static sdg_status place_fragment(prompt_chunker *c, const GArray *ids, float w, int32_t comma,
                                 const sdg_prompt_dict *dict, prompt_resolved *resolved,
                                 sdg_error *err)
{
    const int32_t *t = (const int32_t *)(const void *)ids->data;
    guint k = 0;
    while (k < ids->len) {
        chunk_prepare(c, t[k], comma);
        int len = 0, e = dict_match(dict, t + k, ids->len - k, &len);
        if (e < 0) {
            chunk_push(c, t[k], w, NULL);
            k++;
            continue;
        }
        prompt_resolved *r = &resolved[e];
        if (!r->rows) {
            sdg_status st = dict->resolve(dict->user, e, &r->rows, &r->n_rows, &r->width, err);
            if (st != SDG_OK)
                return st;
            SDG_ASSERT(r->rows && r->n_rows >= 1 && r->n_rows <= PROMPT_CHUNK && r->width >= 1);
        }
        // Not split across windows: it starts the next one when it does not fit.
        if (c->n + r->n_rows > PROMPT_CHUNK)
            next_chunk(c);
        for (int v = 0; v < r->n_rows; v++)
            chunk_push(c, 0, w, r->rows + (size_t)v * r->width);
        k += (guint)len;
    }
    return SDG_OK;
}

void sdg_prompt_clear(sdg_prompt *p)
{
    if (!p)
        return;
    g_free(p->ids);
    g_free(p->weights);
    g_free(p->rows);
    memset(p, 0, sizeof *p);
}

sdg_status sdg_prompt_parse(const sdg_tokenizer *tok, const char *text, int32_t pad_id, int max_windows,
                            sdg_prompt *out, sdg_error *err)
{
    return sdg_prompt_parse_dict(tok, text, pad_id, max_windows, NULL, out, err);
}

sdg_status sdg_prompt_parse_dict(const sdg_tokenizer *tok, const char *text, int32_t pad_id,
                                 int max_windows, const sdg_prompt_dict *dict, sdg_prompt *out,
                                 sdg_error *err)
{
    SDG_ASSERT(tok && out);
    memset(out, 0, sizeof *out);
    if (!text)
        text = "";
    if (!g_utf8_validate(text, -1, NULL))
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "prompt is not valid UTF-8");

    GArray *frags = parse_attention(text);
    prompt_chunker c = {.tok = tok, .pad_id = pad_id, .last_comma = -1};
    c.ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    c.weights = g_array_new(FALSE, FALSE, sizeof(float));
    c.rows = g_array_new(FALSE, FALSE, sizeof(const float *));
    prompt_resolved *resolved = dict && dict->n > 0 ? g_new0(prompt_resolved, dict->n) : NULL;
    int32_t comma = sdg_tokenizer_token_id(tok, ",</w>");
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    sdg_status st = SDG_OK;
    for (guint i = 0; i < frags->len && st == SDG_OK; i++) {
        const prompt_frag *f = &g_array_index(frags, prompt_frag, i);
        if (f->brk) {
            next_chunk(&c);
            continue;
        }
        g_array_set_size(ids, 0);
        if (sdg_tokenizer_encode(tok, f->text, ids, err) < 0)
            break;   // cannot happen: text was validated, and so is every fragment of it
        st = place_fragment(&c, ids, (float)f->weight, comma, resolved ? dict : NULL, resolved,
                            err);
    }
    g_array_free(ids, TRUE);
    g_free(resolved);
    frags_free(frags);
    if (st != SDG_OK) {
        g_array_free(c.ids, TRUE);
        g_array_free(c.weights, TRUE);
        g_array_free(c.rows, TRUE);
        return st;
    }
    if (c.n > 0 || c.n_windows == 0)
        next_chunk(&c);

    int n = c.n_windows;
    if (max_windows > 0 && n > max_windows)
        n = max_windows;
    out->n_windows = n;
    g_array_set_size(c.ids, (guint)n * SDG_TOKENIZER_CTX);
    g_array_set_size(c.weights, (guint)n * SDG_TOKENIZER_CTX);
    g_array_set_size(c.rows, (guint)n * SDG_TOKENIZER_CTX);
    out->ids = (int32_t *)(void *)g_array_free(c.ids, FALSE);
    out->weights = (float *)(void *)g_array_free(c.weights, FALSE);
    if (c.any_row)
        out->rows = (const float **)(void *)g_array_free(c.rows, FALSE);
    else
        g_array_free(c.rows, TRUE);
    return SDG_OK;
}
