/*
 * tokenizer.c - CLIP byte-level BPE, a port of openai/CLIP clip/simple_tokenizer.py.
 *
 *   encode(text) = bpe(pre_split(lower(whitespace_clean(strip(unescape(unescape(ftfy(text))))))))
 *
 * Cleaning follows the Python reference step by step on arrays of code points:
 *   - ftfy.fix_text (ftfy 6.1, default config), the fixers that touch real prompts: HTML entities
 *     (only when a line holds no '<'), C1 controls read as Windows-1252, Latin ligatures,
 *     fullwidth/halfwidth forms (NFKC), curly quotes, line breaks, terminal escapes, control
 *     characters, NFC; repeated until nothing changes, line by line like ftfy. Not ported:
 *     fix_encoding (mojibake repair: it needs ftfy's charset heuristics).
 *   - html.unescape (Python 3) twice, with a table of the common named entities (all of HTML 4's
 *     legacy Latin-1 names, typography, Greek, arrows and ASCII punctuation names).
 *   - str.strip / re.sub(r'\s+', ' ') with Python's whitespace set; str.lower with its two
 *     context rules (U+0130 and final sigma), independent of the C locale unlike g_utf8_strdown.
 *   - the pre-split regex, hand-scanned with GLib's general categories for \p{L} and \p{N}.
 * The BPE works on vocabulary ids instead of strings: a word starts as the ids of its byte
 * symbols (the last with "</w>") and the best-ranked adjacent pair is merged everywhere, left to
 * right, until no pair has a rank. Merges live in an open-addressing table keyed by the id pair.
 *
 * Not here: prompt weights and windows (prompt.c), a word cache (words are short; the Python
 * cache only saves time), ftfy's mojibake repair.
 *
 * ref: https://github.com/openai/CLIP/blob/d05afc4/clip/simple_tokenizer.py
 *      https://github.com/rspeer/python-ftfy (ftfy 6.1.1: fixes.py, chardata.py, __init__.py)
 *      https://github.com/python/cpython/blob/3.10/Lib/html/__init__.py (unescape)
 */
#include "tokenizer.h"

#include <gio/gio.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

// merges = lines[1 : 49152 - 256 - 2 + 1] in simple_tokenizer.py.
#define TOK_OPENAI_MERGES (49152 - 256 - 2)
// Largest id accepted from a vocab.json (keeps a corrupt file from asking for gigabytes).
#define TOK_MAX_VOCAB (1 << 22)
// Largest decompressed vocabulary file accepted (the CLIP one is 1.4 MB).
#define TOK_MAX_FILE ((size_t)256 << 20)

struct sdg_tokenizer {
    int n_vocab;               // largest id + 1
    char **tokens;             // owned: n_vocab byte-encoded strings, NULL where an id is unused
    GHashTable *encoder;       // owned: token string -> id + 1
    int32_t byte_id[256];      // id of byte b's symbol inside a word
    int32_t byte_end_id[256];  // id of byte b's symbol + "</w>" (a word's last symbol)
    int32_t bos, eos;
    int n_merges;
    int32_t *merge_a, *merge_b;  // owned: n_merges pairs in rank order (for save_hf)
    // Merge table: key (a << 32 | b) -> rank and id of the merged symbol. Empty slot = UINT64_MAX.
    size_t pair_cap;           // power of two
    uint64_t *pair_key;        // owned
    int32_t *pair_rank;        // owned
    int32_t *pair_out;         // owned
};

// ---------------------------------------------------------------------------------------------
// Code point arrays and character classes.

typedef GArray ustr;   // of gunichar

static ustr *ustr_new(size_t reserve)
{
    return g_array_sized_new(FALSE, FALSE, sizeof(gunichar), (guint)reserve);
}

static inline void ustr_push(ustr *s, gunichar c)
{
    g_array_append_val(s, c);
}

static inline gunichar ustr_at(const ustr *s, size_t i)
{
    return g_array_index(s, gunichar, i);
}

static bool ustr_equal(const ustr *a, const ustr *b)
{
    return a->len == b->len && memcmp(a->data, b->data, a->len * sizeof(gunichar)) == 0;
}

static ustr *ustr_from_utf8(const char *s, gssize len)
{
    ustr *u = ustr_new(len > 0 ? (size_t)len : 16);
    const char *end = len < 0 ? NULL : s + len;
    for (const char *p = s; (end ? p < end : *p != '\0'); p = g_utf8_next_char(p))
        ustr_push(u, g_utf8_get_char(p));
    return u;
}

static char *ustr_to_utf8(const ustr *u, size_t from, size_t to)
{
    GString *s = g_string_sized_new(to - from + 1);
    for (size_t i = from; i < to; i++)
        g_string_append_unichar(s, ustr_at(u, i));
    return g_string_free(s, FALSE);
}

// Python's str.isspace(), which is also what re's \s matches in str patterns.
static bool py_isspace(gunichar c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

// The regex module's \s (Unicode White_Space): Python's set minus U+001C..U+001F.
static bool re_isspace(gunichar c)
{
    return py_isspace(c) && !(c >= 0x1c && c <= 0x1f);
}

static bool is_letter(gunichar c)   // \p{L}
{
    switch (g_unichar_type(c)) {
    case G_UNICODE_UPPERCASE_LETTER: case G_UNICODE_LOWERCASE_LETTER:
    case G_UNICODE_TITLECASE_LETTER: case G_UNICODE_MODIFIER_LETTER: case G_UNICODE_OTHER_LETTER:
        return true;
    default:
        return false;
    }
}

static bool is_number(gunichar c)   // \p{N}
{
    switch (g_unichar_type(c)) {
    case G_UNICODE_DECIMAL_NUMBER: case G_UNICODE_LETTER_NUMBER: case G_UNICODE_OTHER_NUMBER:
        return true;
    default:
        return false;
    }
}

// Windows-1252 for 0x80..0x9f; the five undefined bytes stay themselves (ftfy's
// "sloppy-windows-1252" and html.unescape's _invalid_charrefs agree on this table).
static const uint16_t tok_cp1252[32] = {
    0x20ac, 0x0081, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021,
    0x02c6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008d, 0x017d, 0x008f,
    0x0090, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
    0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0x009d, 0x017e, 0x0178,
};

// ---------------------------------------------------------------------------------------------
// HTML entities.

typedef struct tok_entity {
    const char *name;
    uint32_t cp;
    bool legacy;   // also recognised without the ';' (HTML5's legacy names)
} tok_entity;

static const char *const tok_latin1_names[96] = {
    "nbsp", "iexcl", "cent", "pound", "curren", "yen", "brvbar", "sect",
    "uml", "copy", "ordf", "laquo", "not", "shy", "reg", "macr",
    "deg", "plusmn", "sup2", "sup3", "acute", "micro", "para", "middot",
    "cedil", "sup1", "ordm", "raquo", "frac14", "frac12", "frac34", "iquest",
    "Agrave", "Aacute", "Acirc", "Atilde", "Auml", "Aring", "AElig", "Ccedil",
    "Egrave", "Eacute", "Ecirc", "Euml", "Igrave", "Iacute", "Icirc", "Iuml",
    "ETH", "Ntilde", "Ograve", "Oacute", "Ocirc", "Otilde", "Ouml", "times",
    "Oslash", "Ugrave", "Uacute", "Ucirc", "Uuml", "Yacute", "THORN", "szlig",
    "agrave", "aacute", "acirc", "atilde", "auml", "aring", "aelig", "ccedil",
    "egrave", "eacute", "ecirc", "euml", "igrave", "iacute", "icirc", "iuml",
    "eth", "ntilde", "ograve", "oacute", "ocirc", "otilde", "ouml", "divide",
    "oslash", "ugrave", "uacute", "ucirc", "uuml", "yacute", "thorn", "yuml",
};

static const tok_entity tok_entities[] = {
    {"amp", '&', true}, {"AMP", '&', true}, {"lt", '<', true}, {"LT", '<', true},
    {"gt", '>', true}, {"GT", '>', true}, {"quot", '"', true}, {"QUOT", '"', true},
    {"COPY", 0xa9, true}, {"REG", 0xae, true},
    {"apos", '\'', false}, {"excl", '!', false}, {"num", '#', false}, {"dollar", '$', false},
    {"percnt", '%', false}, {"lpar", '(', false}, {"rpar", ')', false}, {"ast", '*', false},
    {"plus", '+', false}, {"comma", ',', false}, {"period", '.', false}, {"sol", '/', false},
    {"colon", ':', false}, {"semi", ';', false}, {"equals", '=', false}, {"quest", '?', false},
    {"commat", '@', false}, {"lsqb", '[', false}, {"lbrack", '[', false}, {"bsol", '\\', false},
    {"rsqb", ']', false}, {"rbrack", ']', false}, {"Hat", '^', false}, {"lowbar", '_', false},
    {"grave", '`', false}, {"lcub", '{', false}, {"lbrace", '{', false}, {"verbar", '|', false},
    {"vert", '|', false}, {"rcub", '}', false}, {"rbrace", '}', false}, {"Tab", '\t', false},
    {"NewLine", '\n', false},
    {"OElig", 0x152, false}, {"oelig", 0x153, false}, {"Scaron", 0x160, false},
    {"scaron", 0x161, false}, {"Yuml", 0x178, false}, {"fnof", 0x192, false},
    {"circ", 0x2c6, false}, {"tilde", 0x2dc, false}, {"ensp", 0x2002, false},
    {"emsp", 0x2003, false}, {"thinsp", 0x2009, false}, {"zwnj", 0x200c, false},
    {"zwj", 0x200d, false}, {"lrm", 0x200e, false}, {"rlm", 0x200f, false},
    {"hyphen", 0x2010, false}, {"dash", 0x2010, false}, {"ndash", 0x2013, false},
    {"mdash", 0x2014, false}, {"lsquo", 0x2018, false}, {"rsquo", 0x2019, false},
    {"sbquo", 0x201a, false}, {"ldquo", 0x201c, false}, {"rdquo", 0x201d, false},
    {"bdquo", 0x201e, false}, {"dagger", 0x2020, false}, {"Dagger", 0x2021, false},
    {"bull", 0x2022, false}, {"hellip", 0x2026, false}, {"permil", 0x2030, false},
    {"prime", 0x2032, false}, {"Prime", 0x2033, false}, {"lsaquo", 0x2039, false},
    {"rsaquo", 0x203a, false}, {"oline", 0x203e, false}, {"frasl", 0x2044, false},
    {"euro", 0x20ac, false}, {"trade", 0x2122, false}, {"larr", 0x2190, false},
    {"uarr", 0x2191, false}, {"rarr", 0x2192, false}, {"darr", 0x2193, false},
    {"harr", 0x2194, false}, {"minus", 0x2212, false}, {"infin", 0x221e, false},
    {"asymp", 0x2248, false}, {"ne", 0x2260, false}, {"le", 0x2264, false},
    {"ge", 0x2265, false}, {"loz", 0x25ca, false}, {"starf", 0x2605, false},
    {"star", 0x2606, false}, {"spades", 0x2660, false}, {"clubs", 0x2663, false},
    {"hearts", 0x2665, false}, {"diams", 0x2666, false}, {"sung", 0x266a, false},
    {"check", 0x2713, false}, {"cross", 0x2717, false},
    {"Alpha", 0x391, false}, {"Beta", 0x392, false}, {"Gamma", 0x393, false},
    {"Delta", 0x394, false}, {"Epsilon", 0x395, false}, {"Zeta", 0x396, false},
    {"Eta", 0x397, false}, {"Theta", 0x398, false}, {"Iota", 0x399, false},
    {"Kappa", 0x39a, false}, {"Lambda", 0x39b, false}, {"Mu", 0x39c, false},
    {"Nu", 0x39d, false}, {"Xi", 0x39e, false}, {"Omicron", 0x39f, false},
    {"Pi", 0x3a0, false}, {"Rho", 0x3a1, false}, {"Sigma", 0x3a3, false},
    {"Tau", 0x3a4, false}, {"Upsilon", 0x3a5, false}, {"Phi", 0x3a6, false},
    {"Chi", 0x3a7, false}, {"Psi", 0x3a8, false}, {"Omega", 0x3a9, false},
    {"alpha", 0x3b1, false}, {"beta", 0x3b2, false}, {"gamma", 0x3b3, false},
    {"delta", 0x3b4, false}, {"epsilon", 0x3b5, false}, {"zeta", 0x3b6, false},
    {"eta", 0x3b7, false}, {"theta", 0x3b8, false}, {"iota", 0x3b9, false},
    {"kappa", 0x3ba, false}, {"lambda", 0x3bb, false}, {"mu", 0x3bc, false},
    {"nu", 0x3bd, false}, {"xi", 0x3be, false}, {"omicron", 0x3bf, false},
    {"pi", 0x3c0, false}, {"rho", 0x3c1, false}, {"sigmaf", 0x3c2, false},
    {"sigma", 0x3c3, false}, {"tau", 0x3c4, false}, {"upsilon", 0x3c5, false},
    {"phi", 0x3c6, false}, {"chi", 0x3c7, false}, {"psi", 0x3c8, false},
    {"omega", 0x3c9, false},
};

// Does name (n code points) equal the ASCII string s?
static bool name_is(const gunichar *name, size_t n, const char *s)
{
    size_t i = 0;
    for (; i < n && s[i]; i++)
        if (name[i] != (gunichar)(unsigned char)s[i])
            return false;
    return i == n && s[i] == '\0';
}

// Looks a name up (without '&' and ';'). legacy_only: only names valid without ';'.
// Returns the code point or 0.
static gunichar entity_lookup(const gunichar *name, size_t n, bool legacy_only)
{
    for (int i = 0; i < 96; i++)
        if (name_is(name, n, tok_latin1_names[i]))
            return 0xa0 + (gunichar)i;
    for (size_t i = 0; i < G_N_ELEMENTS(tok_entities); i++)
        if ((!legacy_only || tok_entities[i].legacy) && name_is(name, n, tok_entities[i].name))
            return tok_entities[i].cp;
    return 0;
}

// html.unescape's numeric character references. Returns false when the reference becomes ''.
static bool html_numeric(uint32_t num, gunichar *out)
{
    if (num == 0) { *out = 0xfffd; return true; }
    if (num == 0x0d) { *out = '\r'; return true; }
    if (num >= 0x80 && num <= 0x9f) { *out = tok_cp1252[num - 0x80]; return true; }
    if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) { *out = 0xfffd; return true; }
    if ((num >= 0x01 && num <= 0x08) || num == 0x0b || (num >= 0x0e && num <= 0x1f) ||
        (num >= 0x7f && num <= 0x9f) || (num >= 0xfdd0 && num <= 0xfdef) ||
        (num & 0xfffe) == 0xfffe)
        return false;
    *out = num;
    return true;
}

static bool is_ascii_digit(gunichar c) { return c >= '0' && c <= '9'; }
static bool is_ascii_xdigit(gunichar c) { return c < 128 && g_ascii_isxdigit((char)c); }
static bool is_ascii_alnum(gunichar c) { return c < 128 && g_ascii_isalnum((char)c); }

// Parses digits (base 10 or 16) from s[i..j), saturating above U+10FFFF.
static uint32_t parse_cp(const gunichar *s, size_t i, size_t j, int base)
{
    uint32_t v = 0;
    for (; i < j; i++) {
        v = v * (uint32_t)base + (uint32_t)g_ascii_xdigit_value((char)s[i]);
        if (v > 0x110000)
            v = 0x110000;
    }
    return v;
}

// Python's html.unescape: &#NN; &#xHH; and named references, ';' optional (as browsers do),
// the longest legacy name prefix when the whole name is unknown.
static ustr *html_unescape(const ustr *in)
{
    const gunichar *s = (const gunichar *)(void *)in->data;
    size_t n = in->len;
    ustr *out = ustr_new(n);
    size_t i = 0;
    while (i < n) {
        if (s[i] != '&' || i + 1 >= n) {
            ustr_push(out, s[i++]);
            continue;
        }
        size_t j = i + 1;
        if (s[j] == '#') {
            int base = 10;
            size_t k = j + 1;
            if (k < n && (s[k] == 'x' || s[k] == 'X') && k + 1 < n && is_ascii_xdigit(s[k + 1])) {
                base = 16;
                k++;
            }
            size_t d0 = k;
            while (k < n && (base == 16 ? is_ascii_xdigit(s[k]) : is_ascii_digit(s[k])))
                k++;
            if (k == d0) {   // '&#' with no digits: not a reference
                ustr_push(out, s[i++]);
                continue;
            }
            gunichar c;
            if (html_numeric(parse_cp(s, d0, k, base), &c))
                ustr_push(out, c);
            i = k < n && s[k] == ';' ? k + 1 : k;
            continue;
        }
        // [^\t\n\f <&#;]{1,32};?
        size_t k = j;
        while (k < n && k - j < 32 && s[k] != '\t' && s[k] != '\n' && s[k] != '\f' && s[k] != ' ' &&
               s[k] != '<' && s[k] != '&' && s[k] != '#' && s[k] != ';')
            k++;
        if (k == j) {
            ustr_push(out, s[i++]);
            continue;
        }
        bool semi = k < n && s[k] == ';';
        gunichar c = entity_lookup(s + j, k - j, !semi);
        if (c) {
            ustr_push(out, c);
            i = semi ? k + 1 : k;
            continue;
        }
        // Longest legacy prefix of at least 2 characters; the rest stays as text.
        size_t end = semi ? k + 1 : k;
        size_t len = end - j;
        bool found = false;
        for (size_t x = len - 1; x >= 2; x--) {
            c = entity_lookup(s + j, x, true);
            if (c) {
                ustr_push(out, c);
                i = j + x;
                found = true;
                break;
            }
        }
        if (!found) {   // '&' + name stays as it was
            for (size_t m = i; m < end; m++)
                ustr_push(out, s[m]);
            i = end;
        }
    }
    return out;
}

// Would html.unescape change "&" name ";"? (ftfy only adds an upper-cased alias of an entity
// when it would not.)
static bool html_would_unescape(const gunichar *name, size_t n)
{
    if (entity_lookup(name, n, false))
        return true;
    for (size_t x = n; x >= 2; x--)
        if (entity_lookup(name, x, true))
            return true;
    return false;
}

// ftfy's unescape_html: only complete references &#?[0-9A-Za-z]{1,24}; and, for numeric ones,
// only when html.unescape consumes the ';'.
static ustr *ftfy_unescape(const ustr *in)
{
    const gunichar *s = (const gunichar *)(void *)in->data;
    size_t n = in->len;
    ustr *out = ustr_new(n);
    size_t i = 0;
    while (i < n) {
        if (s[i] != '&') {
            ustr_push(out, s[i++]);
            continue;
        }
        size_t j = i + 1;
        bool hash = j < n && s[j] == '#';
        if (hash)
            j++;
        size_t k = j;
        while (k < n && is_ascii_alnum(s[k]))
            k++;
        if (k == j || k - j > 24 || k >= n || s[k] != ';') {
            ustr_push(out, s[i++]);
            continue;
        }
        bool done = false;
        gunichar c = 0;
        if (!hash) {
            c = entity_lookup(s + j, k - j, false);
            if (!c) {
                // &EACUTE; -> É: ftfy accepts upper-cased names of lower-case entities.
                gunichar low[24];
                bool upper = true;
                for (size_t m = j; m < k; m++) {
                    upper = upper && !(s[m] >= 'a' && s[m] <= 'z');
                    low[m - j] = g_unichar_tolower(s[m]);
                }
                if (upper && !html_would_unescape(s + j, k - j)) {
                    c = entity_lookup(low, k - j, false);
                    if (c)
                        c = g_unichar_toupper(c);
                }
            }
            if (c) {
                ustr_push(out, c);
                done = true;
            }
        } else {
            bool hex = s[j] == 'x' || s[j] == 'X';
            size_t d0 = hex ? j + 1 : j;
            bool ok = d0 < k;
            for (size_t m = d0; m < k && ok; m++)
                ok = hex ? is_ascii_xdigit(s[m]) : is_ascii_digit(s[m]);
            if (ok) {
                bool keep = html_numeric(parse_cp(s, d0, k, hex ? 16 : 10), &c);
                if (!(keep && c == ';')) {   // ';' in the result: ftfy keeps the original
                    if (keep)
                        ustr_push(out, c);
                    done = true;
                }
            }
        }
        if (done) {
            i = k + 1;
        } else {
            for (size_t m = i; m <= k; m++)
                ustr_push(out, s[m]);
            i = k + 1;
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// ftfy.fix_text, the fixers that apply to prompts.

static bool ftfy_is_ligature(gunichar c)
{
    // "ĲĳĿŀŉǄǅǆǇǈǉǊǋǌǱǲǳﬀﬁﬂﬃﬄﬅﬆ"
    return c == 0x132 || c == 0x133 || c == 0x13f || c == 0x140 || c == 0x149 ||
           (c >= 0x1c4 && c <= 0x1cc) || (c >= 0x1f1 && c <= 0x1f3) || (c >= 0xfb00 && c <= 0xfb06);
}

static bool ftfy_is_control(gunichar c)   // remove_control_chars
{
    return c <= 0x08 || c == 0x0b || (c >= 0x0e && c <= 0x1f) || c == 0x7f ||
           (c >= 0x206a && c <= 0x206f) || c == 0xfeff || (c >= 0xfff9 && c <= 0xfffc);
}

// Appends the NFKC form of c (ligatures, width forms).
static void push_nfkc(ustr *out, gunichar c)
{
    char buf[8];
    int len = g_unichar_to_utf8(c, buf);
    char *norm = g_utf8_normalize(buf, len, G_NORMALIZE_NFKC);
    if (!norm) {
        ustr_push(out, c);
        return;
    }
    for (const char *p = norm; *p; p = g_utf8_next_char(p))
        ustr_push(out, g_utf8_get_char(p));
    g_free(norm);
}

// One round of ftfy's fixers, in ftfy's order, each over the whole text.
static ustr *ftfy_round(const ustr *in, bool unescape)
{
    ustr *t = unescape ? ftfy_unescape(in) : g_array_copy((GArray *)in);
    // fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes are per character
    // and compose (no later one maps into an earlier one's domain... except c1 -> quotes, which
    // the order below keeps).
    ustr *u = ustr_new(t->len);
    for (size_t i = 0; i < t->len; i++) {
        gunichar c = ustr_at(t, i);
        if (c >= 0x80 && c <= 0x9f)
            c = tok_cp1252[c - 0x80];
        if (ftfy_is_ligature(c)) {
            push_nfkc(u, c);
            continue;
        }
        if (c == 0x3000) {
            c = ' ';
        } else if (c >= 0xff01 && c <= 0xffef) {
            push_nfkc(u, c);
            continue;
        }
        if (c == 0x2bc || (c >= 0x2018 && c <= 0x201b))
            c = '\'';
        else if (c >= 0x201c && c <= 0x201f)
            c = '"';
        ustr_push(u, c);
    }
    g_array_free(t, TRUE);
    // fix_line_breaks, remove_terminal_escapes (ESC [ [0-9;]* letter), remove_control_chars.
    ustr *v = ustr_new(u->len);
    for (size_t i = 0; i < u->len; i++) {
        gunichar c = ustr_at(u, i);
        if (c == '\r') {
            if (i + 1 < u->len && ustr_at(u, i + 1) == '\n')
                i++;
            c = '\n';
        } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
            c = '\n';
        }
        if (c == 0x1b && i + 1 < u->len && ustr_at(u, i + 1) == '[') {
            size_t k = i + 2;
            while (k < u->len && (g_unichar_isdigit(ustr_at(u, k)) || ustr_at(u, k) == ';'))
                k++;
            gunichar e = k < u->len ? ustr_at(u, k) : 0;
            if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) {
                i = k;
                continue;
            }
        }
        if (!ftfy_is_control(c))
            ustr_push(v, c);
    }
    g_array_free(u, TRUE);
    // normalization='NFC'
    char *utf8 = ustr_to_utf8(v, 0, v->len);
    char *nfc = g_utf8_normalize(utf8, -1, G_NORMALIZE_NFC);
    g_free(utf8);
    if (nfc) {
        g_array_free(v, TRUE);
        v = ustr_from_utf8(nfc, -1);
        g_free(nfc);
    }
    return v;
}

static ustr *ftfy_fix_text(const ustr *in)
{
    ustr *out = ustr_new(in->len);
    bool unescape = true;   // unescape_html="auto": off from the first line holding a '<'
    size_t pos = 0;
    while (pos < in->len) {
        size_t end = pos;
        while (end < in->len && ustr_at(in, end) != '\n')
            end++;
        if (end < in->len)
            end++;   // the segment keeps its '\n'
        ustr *seg = ustr_new(end - pos);
        g_array_append_vals(seg, &g_array_index(in, gunichar, pos), (guint)(end - pos));
        for (size_t m = pos; m < end && unescape; m++)
            if (ustr_at(in, m) == '<')
                unescape = false;
        // fix_and_explain repeats until a round changes nothing.
        for (int round = 0; round < 16; round++) {
            ustr *next = ftfy_round(seg, unescape);
            bool same = ustr_equal(next, seg);
            g_array_free(seg, TRUE);
            seg = next;
            if (same)
                break;
        }
        g_array_append_vals(out, seg->data, seg->len);
        g_array_free(seg, TRUE);
        pos = end;
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Python str.strip, re.sub(r'\s+', ' ') and str.lower.

static ustr *clean_whitespace(const ustr *in)
{
    ustr *out = ustr_new(in->len);
    bool pending = false;
    for (size_t i = 0; i < in->len; i++) {
        gunichar c = ustr_at(in, i);
        if (py_isspace(c)) {
            pending = out->len > 0;
            continue;
        }
        if (pending)
            ustr_push(out, ' ');
        pending = false;
        ustr_push(out, c);
    }
    return out;
}

static bool py_is_cased(gunichar c)
{
    return g_unichar_isupper(c) || g_unichar_islower(c) || g_unichar_istitle(c);
}

static bool py_is_case_ignorable(gunichar c)
{
    switch (g_unichar_type(c)) {
    case G_UNICODE_NON_SPACING_MARK: case G_UNICODE_ENCLOSING_MARK: case G_UNICODE_FORMAT:
    case G_UNICODE_MODIFIER_LETTER: case G_UNICODE_MODIFIER_SYMBOL:
        return true;
    default:
        return c == '\'' || c == '.' || c == ':' || c == 0xb7 || c == 0x2018 || c == 0x2019 ||
               c == 0x2024 || c == 0x2027;
    }
}

static ustr *py_lower(const ustr *in)
{
    ustr *out = ustr_new(in->len);
    for (size_t i = 0; i < in->len; i++) {
        gunichar c = ustr_at(in, i);
        if (c == 0x130) {   // İ -> i + combining dot above (SpecialCasing)
            ustr_push(out, 'i');
            ustr_push(out, 0x307);
        } else if (c == 0x3a3) {   // Σ: final form after a cased letter not followed by one
            size_t j = i;
            while (j > 0 && py_is_case_ignorable(ustr_at(in, j - 1)))
                j--;
            bool final = j > 0 && py_is_cased(ustr_at(in, j - 1));
            if (final) {
                size_t k = i + 1;
                while (k < in->len && py_is_case_ignorable(ustr_at(in, k)))
                    k++;
                final = k == in->len || !py_is_cased(ustr_at(in, k));
            }
            ustr_push(out, final ? 0x3c2 : 0x3c3);
        } else {
            ustr_push(out, g_unichar_tolower(c));
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Pre-split: <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|
// [^\s\p{L}\p{N}]+ with IGNORECASE, over lower-cased text. Returns the length of the piece at
// i (0: a whitespace character, skipped) and sets *special to 1/2 for the special tokens.

static bool match_ascii(const ustr *s, size_t i, const char *lit)
{
    for (size_t k = 0; lit[k]; k++) {
        if (i + k >= s->len)
            return false;
        gunichar c = ustr_at(s, i + k);
        // IGNORECASE folds U+017F (long s) onto 's'; the text is lower-case already.
        if (c != (gunichar)lit[k] && !(lit[k] == 's' && c == 0x17f))
            return false;
    }
    return true;
}

static size_t pre_split(const ustr *s, size_t i, int *special)
{
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    *special = 0;
    if (match_ascii(s, i, "<|startoftext|>")) {
        *special = 1;
        return 15;
    }
    if (match_ascii(s, i, "<|endoftext|>")) {
        *special = 2;
        return 13;
    }
    for (size_t k = 0; k < G_N_ELEMENTS(contractions); k++)
        if (match_ascii(s, i, contractions[k]))
            return strlen(contractions[k]);
    gunichar c = ustr_at(s, i);
    if (is_letter(c)) {
        size_t j = i + 1;
        while (j < s->len && is_letter(ustr_at(s, j)))
            j++;
        return j - i;
    }
    if (is_number(c))
        return 1;
    if (re_isspace(c))
        return 0;
    size_t j = i + 1;
    while (j < s->len && !re_isspace(ustr_at(s, j)) && !is_letter(ustr_at(s, j)) &&
           !is_number(ustr_at(s, j)))
        j++;
    return j - i;
}

// ---------------------------------------------------------------------------------------------
// BPE.

static inline uint64_t pair_key(int32_t a, int32_t b)
{
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static inline size_t pair_hash(uint64_t k, size_t mask)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k & mask;
}

static size_t pair_slot(const sdg_tokenizer *tok, uint64_t key)
{
    size_t mask = tok->pair_cap - 1;
    size_t h = pair_hash(key, mask);
    while (tok->pair_key[h] != UINT64_MAX && tok->pair_key[h] != key)
        h = (h + 1) & mask;
    return h;
}

// Rank of merging (a, b), or INT32_MAX when they do not merge.
static inline int32_t pair_rank(const sdg_tokenizer *tok, int32_t a, int32_t b, int32_t *out)
{
    size_t h = pair_slot(tok, pair_key(a, b));
    if (tok->pair_key[h] == UINT64_MAX)
        return INT32_MAX;
    *out = tok->pair_out[h];
    return tok->pair_rank[h];
}

// simple_tokenizer.py bpe(): w holds the word's symbol ids (n >= 1); returns the new length.
static int bpe_merge(const sdg_tokenizer *tok, int32_t *w, int n)
{
    while (n > 1) {
        int32_t best = INT32_MAX, ba = 0, bb = 0, bo = 0;
        for (int i = 0; i + 1 < n; i++) {
            int32_t o;
            int32_t r = pair_rank(tok, w[i], w[i + 1], &o);
            if (r < best) {
                best = r;
                ba = w[i];
                bb = w[i + 1];
                bo = o;
            }
        }
        if (best == INT32_MAX)
            break;
        int m = 0;
        for (int i = 0; i < n;) {
            if (i + 1 < n && w[i] == ba && w[i + 1] == bb) {
                w[m++] = bo;
                i += 2;
            } else {
                w[m++] = w[i++];
            }
        }
        n = m;
    }
    return n;
}

// The cleaned, lower-cased text of a prompt as code points (steps before the pre-split).
static ustr *tok_clean(const char *text)
{
    ustr *u = ustr_from_utf8(text, -1);
    ustr *a = ftfy_fix_text(u);
    g_array_free(u, TRUE);
    ustr *b = html_unescape(a);
    g_array_free(a, TRUE);
    a = html_unescape(b);
    g_array_free(b, TRUE);
    b = clean_whitespace(a);
    g_array_free(a, TRUE);
    a = py_lower(b);
    g_array_free(b, TRUE);
    return a;
}

int sdg_tokenizer_encode(const sdg_tokenizer *tok, const char *text, GArray *ids, sdg_error *err)
{
    SDG_ASSERT(tok && ids && g_array_get_element_size(ids) == sizeof(int32_t));
    if (!text)
        text = "";
    if (!g_utf8_validate(text, -1, NULL)) {
        sdg__fail(err, SDG_ERR_INVALID_ARG, "prompt is not valid UTF-8");
        return -1;
    }
    ustr *s = tok_clean(text);
    guint start = ids->len;
    GByteArray *bytes = g_byte_array_new();
    GArray *word = g_array_new(FALSE, FALSE, sizeof(int32_t));
    for (size_t i = 0; i < s->len;) {
        int special;
        size_t len = pre_split(s, i, &special);
        if (len == 0) {
            i++;
            continue;
        }
        if (special) {
            int32_t id = special == 1 ? tok->bos : tok->eos;
            g_array_append_val(ids, id);
            i += len;
            continue;
        }
        g_byte_array_set_size(bytes, 0);
        for (size_t k = i; k < i + len; k++) {
            guint8 buf[6];
            int nb = g_unichar_to_utf8(ustr_at(s, k), (char *)buf);
            g_byte_array_append(bytes, buf, (guint)nb);
        }
        g_array_set_size(word, bytes->len);
        int32_t *w = (int32_t *)(void *)word->data;
        for (guint k = 0; k < bytes->len; k++)
            w[k] = k + 1 == bytes->len ? tok->byte_end_id[bytes->data[k]] : tok->byte_id[bytes->data[k]];
        int n = bpe_merge(tok, w, (int)bytes->len);
        g_array_append_vals(ids, w, (guint)n);
        i += len;
    }
    g_array_free(word, TRUE);
    g_byte_array_free(bytes, TRUE);
    g_array_free(s, TRUE);
    return (int)(ids->len - start);
}

int sdg_tokenizer_tokenize77(const sdg_tokenizer *tok, const char *text, int32_t pad_id,
                             int32_t ids[SDG_TOKENIZER_CTX], sdg_error *err)
{
    GArray *bpe = g_array_new(FALSE, FALSE, sizeof(int32_t));
    int n = sdg_tokenizer_encode(tok, text, bpe, err);
    if (n < 0) {
        g_array_free(bpe, TRUE);
        return -1;
    }
    int keep = n < SDG_TOKENIZER_CTX - 2 ? n : SDG_TOKENIZER_CTX - 2;
    ids[0] = tok->bos;
    if (keep > 0)   // an empty GArray has no data pointer
        memcpy(ids + 1, bpe->data, (size_t)keep * sizeof(int32_t));
    ids[keep + 1] = tok->eos;
    for (int i = keep + 2; i < SDG_TOKENIZER_CTX; i++)
        ids[i] = pad_id;
    g_array_free(bpe, TRUE);
    return n;
}

int sdg_tokenizer_vocab_size(const sdg_tokenizer *tok) { return tok->n_vocab; }
int32_t sdg_tokenizer_bos(const sdg_tokenizer *tok) { return tok->bos; }
int32_t sdg_tokenizer_eos(const sdg_tokenizer *tok) { return tok->eos; }

int32_t sdg_tokenizer_token_id(const sdg_tokenizer *tok, const char *token)
{
    gpointer v = g_hash_table_lookup(tok->encoder, token);
    return v ? (int32_t)(GPOINTER_TO_INT(v) - 1) : -1;
}

const char *sdg_tokenizer_token(const sdg_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_vocab ? tok->tokens[id] : NULL;
}

// ---------------------------------------------------------------------------------------------
// Loading.

// simple_tokenizer.py bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the
// others are shifted to U+0100.. in byte order. order[i] is the byte of vocabulary id i.
static void bytes_to_unicode(gunichar cs[256], int order[256])
{
    bool printable[256] = {false};
    int n = 0;
    for (int b = 0; b < 256; b++) {
        printable[b] = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
        if (printable[b]) {
            cs[b] = (gunichar)b;
            order[n++] = b;
        }
    }
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        if (!printable[b]) {
            cs[b] = 256 + (gunichar)extra++;
            order[n++] = b;
        }
    }
}

void sdg_tokenizer_free(sdg_tokenizer *tok)
{
    if (!tok)
        return;
    if (tok->encoder)
        g_hash_table_destroy(tok->encoder);
    if (tok->tokens)
        for (int i = 0; i < tok->n_vocab; i++)
            g_free(tok->tokens[i]);
    g_free(tok->tokens);
    g_free(tok->merge_a);
    g_free(tok->merge_b);
    g_free(tok->pair_key);
    g_free(tok->pair_rank);
    g_free(tok->pair_out);
    g_free(tok);
}

// Sets tok->tokens[id] = s and maps s -> id (both copies); a later duplicate string wins, as a
// Python dict built from the list would.
static void tok_set(sdg_tokenizer *tok, int32_t id, const char *s)
{
    g_free(tok->tokens[id]);
    tok->tokens[id] = g_strdup(s);
    g_hash_table_replace(tok->encoder, g_strdup(s), GINT_TO_POINTER(id + 1));
}

static sdg_tokenizer *tok_alloc(int n_vocab)
{
    sdg_tokenizer *tok = g_new0(sdg_tokenizer, 1);
    tok->n_vocab = n_vocab;
    tok->tokens = g_new0(char *, n_vocab);
    tok->encoder = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return tok;
}

// A merge line split on whitespace like Python's str.split(): up to 3 fields are reported.
static int split_fields(char *line, char *fields[3])
{
    int n = 0;
    char *p = line;
    for (;;) {
        while (*p && g_ascii_isspace(*p))
            p++;
        if (!*p)
            break;
        char *start = p;
        while (*p && !g_ascii_isspace(*p))
            p++;
        if (n < 3)
            fields[n] = start;
        n++;
        if (*p)
            *p++ = '\0';
    }
    return n;
}

// Byte symbols, specials and the merge table (from n lines "a b" in rank order).
static sdg_status tok_finish(sdg_tokenizer *tok, char **merge_lines, int n_lines, const char *path,
                             sdg_error *err)
{
    gunichar cs[256];
    int order[256];
    bytes_to_unicode(cs, order);
    for (int b = 0; b < 256; b++) {
        char sym[16];
        int len = g_unichar_to_utf8(cs[b], sym);
        strcpy(sym + len, "</w>");
        tok->byte_end_id[b] = sdg_tokenizer_token_id(tok, sym);
        sym[len] = '\0';
        tok->byte_id[b] = sdg_tokenizer_token_id(tok, sym);
        if (tok->byte_id[b] < 0 || tok->byte_end_id[b] < 0)
            return sdg__fail(err, SDG_ERR_FORMAT,
                             "%s: the vocabulary lacks the byte symbol \"%s\" (or with </w>): not a CLIP "
                             "BPE vocabulary", path, sym);
    }
    tok->bos = sdg_tokenizer_token_id(tok, "<|startoftext|>");
    tok->eos = sdg_tokenizer_token_id(tok, "<|endoftext|>");
    if (tok->bos < 0 || tok->eos < 0)
        return sdg__fail(err, SDG_ERR_FORMAT, "%s: the vocabulary lacks <|startoftext|> or <|endoftext|>",
                         path);

    tok->pair_cap = 1024;
    while (tok->pair_cap < 2 * (size_t)n_lines + 2)
        tok->pair_cap *= 2;
    tok->pair_key = g_new(uint64_t, tok->pair_cap);
    tok->pair_rank = g_new(int32_t, tok->pair_cap);
    tok->pair_out = g_new(int32_t, tok->pair_cap);
    memset(tok->pair_key, 0xff, tok->pair_cap * sizeof(uint64_t));
    tok->merge_a = g_new(int32_t, n_lines > 0 ? n_lines : 1);
    tok->merge_b = g_new(int32_t, n_lines > 0 ? n_lines : 1);
    GString *joined = g_string_new(NULL);
    for (int r = 0; r < n_lines; r++) {
        char *f[3];
        char *line = g_strdup(merge_lines[r]);
        int nf = split_fields(line, f);
        if (nf == 2) {
            g_string_assign(joined, f[0]);
            g_string_append(joined, f[1]);
            int32_t a = sdg_tokenizer_token_id(tok, f[0]);
            int32_t b = sdg_tokenizer_token_id(tok, f[1]);
            int32_t o = sdg_tokenizer_token_id(tok, joined->str);
            // A merge whose parts or result are not in the vocabulary can never apply.
            if (a >= 0 && b >= 0 && o >= 0) {
                size_t h = pair_slot(tok, pair_key(a, b));
                tok->pair_key[h] = pair_key(a, b);
                tok->pair_rank[h] = r;   // a repeated pair takes its later rank, like the dict
                tok->pair_out[h] = o;
                tok->merge_a[tok->n_merges] = a;
                tok->merge_b[tok->n_merges] = b;
                tok->n_merges++;
            }
        }
        g_free(line);
    }
    g_string_free(joined, TRUE);
    return SDG_OK;
}

static sdg_status gunzip(const char *path, const guint8 *in, size_t n, GByteArray *out, sdg_error *err)
{
    GConverter *conv = G_CONVERTER(g_zlib_decompressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP));
    guint8 buf[65536];
    size_t pos = 0;
    sdg_status st = SDG_OK;
    for (;;) {
        gsize rd = 0, wr = 0;
        GError *e = NULL;
        GConverterResult r = g_converter_convert(conv, in + pos, n - pos, buf, sizeof buf,
                                                 G_CONVERTER_INPUT_AT_END, &rd, &wr, &e);
        if (r == G_CONVERTER_ERROR) {
            st = sdg__fail(err, SDG_ERR_FORMAT, "%s: bad gzip data: %s", path, e->message);
            g_error_free(e);
            break;
        }
        pos += rd;
        g_byte_array_append(out, buf, (guint)wr);
        if (out->len > TOK_MAX_FILE) {
            st = sdg__fail(err, SDG_ERR_FORMAT, "%s: decompresses to more than %zu MB: not a vocabulary",
                           path, TOK_MAX_FILE >> 20);
            break;
        }
        if (r == G_CONVERTER_FINISHED)
            break;
        if (rd == 0 && wr == 0) {
            st = sdg__fail(err, SDG_ERR_FORMAT, "%s: truncated gzip data", path);
            break;
        }
    }
    g_object_unref(conv);
    return st;
}

// Reads a text file (gunzipping it when it starts with the gzip magic); checks UTF-8.
static char *read_text(const char *path, size_t *len, sdg_error *err)
{
    char *data = NULL;
    gsize n = 0;
    GError *e = NULL;
    if (!g_file_get_contents(path, &data, &n, &e)) {
        sdg__fail(err, SDG_ERR_IO, "cannot read tokenizer file %s: %s", path, e->message);
        g_error_free(e);
        return NULL;
    }
    if (n >= 2 && (guint8)data[0] == 0x1f && (guint8)data[1] == 0x8b) {
        GByteArray *out = g_byte_array_new();
        sdg_status st = gunzip(path, (const guint8 *)data, n, out, err);
        g_free(data);
        if (st != SDG_OK) {
            g_byte_array_free(out, TRUE);
            return NULL;
        }
        n = out->len;
        g_byte_array_append(out, (const guint8 *)"", 1);
        data = (char *)g_byte_array_free(out, FALSE);
    }
    if (!g_utf8_validate(data, (gssize)n, NULL) || memchr(data, '\0', n)) {
        sdg__fail(err, SDG_ERR_FORMAT, "%s: not UTF-8 text", path);
        g_free(data);
        return NULL;
    }
    *len = n;
    return data;
}

// OpenAI bpe_simple_vocab_16e6.txt(.gz): line 0 is "#version", lines 1..48894 are the merges.
static sdg_tokenizer *load_openai(const char *path, sdg_error *err)
{
    size_t n = 0;
    char *text = read_text(path, &n, err);
    if (!text)
        return NULL;
    // g_strsplit_set, not g_strsplit: the latter finds each line with strstr, which under
    // AddressSanitizer checks the whole rest of the text on every call (quadratic: 80 s
    // instead of 1 s for CLIP's 49k lines); for a one-character separator they are the same.
    char **lines = g_strsplit_set(text, "\n", TOK_OPENAI_MERGES + 2);
    g_free(text);
    int n_lines = (int)g_strv_length(lines);
    int n_merges = n_lines - 1;
    if (n_merges > TOK_OPENAI_MERGES)
        n_merges = TOK_OPENAI_MERGES;
    if (n_merges >= 1 && lines[n_merges][0] == '\0' && n_merges == n_lines - 1)
        n_merges--;   // the empty string after a final newline is not a merge
    if (n_merges < 1) {
        sdg__fail(err, SDG_ERR_FORMAT, "%s: no BPE merges in the file", path);
        g_strfreev(lines);
        return NULL;
    }
    // vocab = byte symbols, the same with </w>, one entry per merge, the two specials.
    sdg_tokenizer *tok = tok_alloc(512 + n_merges + 2);
    gunichar cs[256];
    int order[256];
    bytes_to_unicode(cs, order);
    for (int i = 0; i < 256; i++) {
        char sym[8];
        sym[g_unichar_to_utf8(cs[order[i]], sym)] = '\0';
        tok_set(tok, i, sym);
        char *end = g_strconcat(sym, "</w>", NULL);
        tok_set(tok, 256 + i, end);
        g_free(end);
    }
    for (int r = 0; r < n_merges; r++) {
        // ''.join(merge.split())
        char *f[3];
        char *line = g_strdup(lines[1 + r]);
        int nf = split_fields(line, f);
        GString *s = g_string_new(NULL);
        for (int k = 0; k < nf && k < 3; k++)
            g_string_append(s, f[k]);
        if (nf > 3) {   // rare enough to redo with a full split
            g_string_truncate(s, 0);
            char **all = g_strsplit_set(lines[1 + r], " \t\r\f\v", -1);
            for (char **p = all; *p; p++)
                g_string_append(s, *p);
            g_strfreev(all);
        }
        g_free(line);
        tok_set(tok, 512 + r, s->str);
        g_string_free(s, TRUE);
    }
    tok_set(tok, 512 + n_merges, "<|startoftext|>");
    tok_set(tok, 512 + n_merges + 1, "<|endoftext|>");
    if (tok_finish(tok, lines + 1, n_merges, path, err) != SDG_OK) {
        g_strfreev(lines);
        sdg_tokenizer_free(tok);
        return NULL;
    }
    g_strfreev(lines);
    return tok;
}

// --- vocab.json: a strict parser for one flat object {string: non-negative integer}.

typedef struct json_in {
    const char *p, *end;
} json_in;

static void json_ws(json_in *in)
{
    while (in->p < in->end && (*in->p == ' ' || *in->p == '\t' || *in->p == '\n' || *in->p == '\r'))
        in->p++;
}

static int json_hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int d = g_ascii_xdigit_value(p[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

// Parses a string at in->p (at the opening quote). Returns NULL on malformed input.
static char *json_string(json_in *in)
{
    if (in->p >= in->end || *in->p != '"')
        return NULL;
    in->p++;
    GString *s = g_string_new(NULL);
    while (in->p < in->end && *in->p != '"') {
        unsigned char c = (unsigned char)*in->p;
        if (c < 0x20)
            goto bad;
        if (c != '\\') {
            g_string_append_c(s, (char)c);
            in->p++;
            continue;
        }
        if (in->end - in->p < 2)
            goto bad;
        char e = in->p[1];
        in->p += 2;
        switch (e) {
        case '"': g_string_append_c(s, '"'); break;
        case '\\': g_string_append_c(s, '\\'); break;
        case '/': g_string_append_c(s, '/'); break;
        case 'b': g_string_append_c(s, '\b'); break;
        case 'f': g_string_append_c(s, '\f'); break;
        case 'n': g_string_append_c(s, '\n'); break;
        case 'r': g_string_append_c(s, '\r'); break;
        case 't': g_string_append_c(s, '\t'); break;
        case 'u': {
            if (in->end - in->p < 4)
                goto bad;
            int u = json_hex4(in->p);
            in->p += 4;
            if (u < 0 || (u >= 0xdc00 && u <= 0xdfff))
                goto bad;
            if (u >= 0xd800 && u <= 0xdbff) {   // a surrogate pair
                if (in->end - in->p < 6 || in->p[0] != '\\' || in->p[1] != 'u')
                    goto bad;
                int lo = json_hex4(in->p + 2);
                if (lo < 0xdc00 || lo > 0xdfff)
                    goto bad;
                in->p += 6;
                u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (u == 0)
                goto bad;   // tokens are C strings
            g_string_append_unichar(s, (gunichar)u);
            break;
        }
        default:
            goto bad;
        }
    }
    if (in->p >= in->end)
        goto bad;
    in->p++;
    return g_string_free(s, FALSE);
bad:
    g_string_free(s, TRUE);
    return NULL;
}

static sdg_tokenizer *load_hf(const char *vocab_path, const char *merges_path, sdg_error *err)
{
    size_t n = 0;
    char *text = read_text(vocab_path, &n, err);
    if (!text)
        return NULL;
    json_in in = {text, text + n};
    GPtrArray *keys = g_ptr_array_new_with_free_func(g_free);
    GArray *vals = g_array_new(FALSE, FALSE, sizeof(int32_t));
    sdg_tokenizer *tok = NULL;
    char **lines = NULL;
    GPtrArray *merges = NULL;
    const char *what = "expected '{'";
    json_ws(&in);
    if (in.p >= in.end || *in.p != '{')
        goto bad;
    in.p++;
    json_ws(&in);
    if (in.p < in.end && *in.p == '}') {
        in.p++;
    } else {
        for (;;) {
            json_ws(&in);
            char *key = json_string(&in);
            what = "bad string key";
            if (!key)
                goto bad;
            g_ptr_array_add(keys, key);
            json_ws(&in);
            what = "expected ':'";
            if (in.p >= in.end || *in.p != ':')
                goto bad;
            in.p++;
            json_ws(&in);
            what = "expected a non-negative integer id";
            int64_t v = 0;
            const char *d0 = in.p;
            while (in.p < in.end && *in.p >= '0' && *in.p <= '9') {
                v = v * 10 + (*in.p - '0');
                if (v >= TOK_MAX_VOCAB)
                    goto bad;
                in.p++;
            }
            if (in.p == d0 || (in.p - d0 > 1 && *d0 == '0'))
                goto bad;
            int32_t id = (int32_t)v;
            g_array_append_val(vals, id);
            json_ws(&in);
            what = "expected ',' or '}'";
            if (in.p < in.end && *in.p == ',') {
                in.p++;
                continue;
            }
            if (in.p < in.end && *in.p == '}') {
                in.p++;
                break;
            }
            goto bad;
        }
    }
    json_ws(&in);
    what = "trailing data after the object";
    if (in.p != in.end)
        goto bad;
    g_free(text);
    text = NULL;

    int32_t max_id = -1;
    for (guint i = 0; i < vals->len; i++)
        max_id = MAX(max_id, g_array_index(vals, int32_t, i));
    tok = tok_alloc(max_id + 1);
    // A key seen twice keeps its last id, as Python's json.load would.
    for (guint i = 0; i < keys->len; i++)
        tok_set(tok, g_array_index(vals, int32_t, i), g_ptr_array_index(keys, i));

    size_t mn = 0;
    char *mtext = read_text(merges_path, &mn, err);
    if (!mtext)
        goto fail;
    lines = g_strsplit_set(mtext, "\n", -1);   // not g_strsplit: see load_openai
    g_free(mtext);
    // The non-empty lines after an optional "#version" header, borrowed from lines.
    merges = g_ptr_array_new();
    for (int i = 0; lines[i]; i++) {
        if (i == 0 && g_str_has_prefix(lines[i], "#version"))
            continue;
        char *f[3];
        char *copy = g_strdup(lines[i]);
        int nf = split_fields(copy, f);
        g_free(copy);
        if (nf == 0)
            continue;
        if (nf != 2) {
            sdg__fail(err, SDG_ERR_FORMAT, "%s: line %d is not a merge \"a b\"", merges_path, i + 1);
            goto fail;
        }
        g_ptr_array_add(merges, lines[i]);
    }
    if (tok_finish(tok, (char **)merges->pdata, (int)merges->len, vocab_path, err) != SDG_OK)
        goto fail;
    g_ptr_array_free(merges, TRUE);
    g_strfreev(lines);
    g_ptr_array_free(keys, TRUE);
    g_array_free(vals, TRUE);
    return tok;

bad:
    sdg__fail(err, SDG_ERR_FORMAT, "%s: not a flat JSON object of token -> id (%s at byte %zu)",
              vocab_path, what, (size_t)(in.p - text));
fail:
    g_free(text);
    g_ptr_array_free(keys, TRUE);
    g_array_free(vals, TRUE);
    if (merges)
        g_ptr_array_free(merges, TRUE);
    g_strfreev(lines);
    sdg_tokenizer_free(tok);
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Finding and saving.

static const char *const tok_openai_names[] = {"bpe_simple_vocab_16e6.txt.gz", "bpe_simple_vocab_16e6.txt"};

// The vocabulary file inside dir (or dir/tokenizer), or NULL.
static char *vocab_in_dir(const char *dir, bool subdir)
{
    for (size_t i = 0; i < G_N_ELEMENTS(tok_openai_names); i++) {
        char *p = g_build_filename(dir, tok_openai_names[i], NULL);
        if (g_file_test(p, G_FILE_TEST_IS_REGULAR))
            return p;
        g_free(p);
    }
    char *v = g_build_filename(dir, "vocab.json", NULL);
    char *m = g_build_filename(dir, "merges.txt", NULL);
    bool ok = g_file_test(v, G_FILE_TEST_IS_REGULAR) && g_file_test(m, G_FILE_TEST_IS_REGULAR);
    g_free(m);
    if (ok)
        return v;
    g_free(v);
    if (subdir) {
        char *sub = g_build_filename(dir, "tokenizer", NULL);
        char *p = g_file_test(sub, G_FILE_TEST_IS_DIR) ? vocab_in_dir(sub, false) : NULL;
        g_free(sub);
        return p;
    }
    return NULL;
}

#define TOK_NEEDED "bpe_simple_vocab_16e6.txt.gz or vocab.json + merges.txt"

sdg_tokenizer *sdg_tokenizer_load(const char *path, sdg_error *err)
{
    if (!path)
        return sdg__fail(err, SDG_ERR_INVALID_ARG, "no tokenizer path given"), NULL;
    if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
        char *file = vocab_in_dir(path, true);
        if (!file) {
            sdg__fail(err, SDG_ERR_IO, "no CLIP vocabulary in %s: need " TOK_NEEDED
                      " (there or in its tokenizer/ folder)", path);
            return NULL;
        }
        sdg_tokenizer *tok = sdg_tokenizer_load(file, err);
        g_free(file);
        return tok;
    }
    if (!g_file_test(path, G_FILE_TEST_IS_REGULAR))
        return sdg__fail(err, SDG_ERR_IO, "tokenizer file %s does not exist", path), NULL;
    char *dir = g_path_get_dirname(path);
    char *base = g_path_get_basename(path);
    char *vocab = NULL, *merges = NULL;
    if (g_str_has_suffix(base, ".json")) {
        vocab = g_strdup(path);
        merges = g_build_filename(dir, "merges.txt", NULL);
    } else if (strcmp(base, "merges.txt") == 0) {
        char *v = g_build_filename(dir, "vocab.json", NULL);
        if (g_file_test(v, G_FILE_TEST_IS_REGULAR)) {
            vocab = v;
            merges = g_strdup(path);
        } else {
            g_free(v);
        }
    }
    sdg_tokenizer *tok = NULL;
    if (vocab) {
        if (!g_file_test(merges, G_FILE_TEST_IS_REGULAR))
            sdg__fail(err, SDG_ERR_IO, "%s needs merges.txt beside it (%s does not exist)", vocab, merges);
        else
            tok = load_hf(vocab, merges, err);
    } else {
        tok = load_openai(path, err);
    }
    g_free(vocab);
    g_free(merges);
    g_free(dir);
    g_free(base);
    return tok;
}

char *sdg_tokenizer_find(const char *explicit_path, const char *model_path, const char *models_dir,
                         sdg_error *err)
{
    if (explicit_path) {
        if (g_file_test(explicit_path, G_FILE_TEST_IS_DIR)) {
            char *p = vocab_in_dir(explicit_path, true);
            if (!p)
                sdg__fail(err, SDG_ERR_IO, "no CLIP vocabulary in %s: need " TOK_NEEDED, explicit_path);
            return p;
        }
        if (!g_file_test(explicit_path, G_FILE_TEST_IS_REGULAR)) {
            sdg__fail(err, SDG_ERR_IO, "tokenizer file %s does not exist (need " TOK_NEEDED ")",
                      explicit_path);
            return NULL;
        }
        return g_strdup(explicit_path);
    }
    GString *looked = g_string_new(NULL);
    char *found = NULL;
    if (model_path) {
        if (g_file_test(model_path, G_FILE_TEST_IS_DIR)) {   // a diffusers folder
            found = vocab_in_dir(model_path, true);
            g_string_append_printf(looked, "%s, %s/tokenizer", model_path, model_path);
        }
        if (!found) {
            char *dir = g_path_get_dirname(model_path);
            found = vocab_in_dir(dir, true);
            g_string_append_printf(looked, "%s%s, %s/tokenizer", looked->len ? ", " : "", dir, dir);
            g_free(dir);
        }
    }
    if (!found && models_dir && *models_dir) {
        found = vocab_in_dir(models_dir, true);
        g_string_append_printf(looked, "%s%s, %s/tokenizer", looked->len ? ", " : "", models_dir,
                               models_dir);
    }
    if (!found)
        sdg__fail(err, SDG_ERR_IO, "no CLIP vocabulary found: need " TOK_NEEDED "; looked in %s",
                  looked->len ? looked->str : "(nowhere: no model path or models folder given)");
    g_string_free(looked, TRUE);
    return found;
}

static void json_put_string(GString *s, const char *t)
{
    g_string_append_c(s, '"');
    for (const unsigned char *p = (const unsigned char *)t; *p; p++) {
        if (*p == '"' || *p == '\\')
            g_string_append_printf(s, "\\%c", *p);
        else if (*p < 0x20)
            g_string_append_printf(s, "\\u%04x", *p);
        else
            g_string_append_c(s, (char)*p);
    }
    g_string_append_c(s, '"');
}

static sdg_status write_file(const char *path, const GString *s, sdg_error *err)
{
    GError *e = NULL;
    if (!g_file_set_contents(path, s->str, (gssize)s->len, &e)) {
        sdg__fail(err, SDG_ERR_IO, "cannot write %s: %s", path, e->message);
        g_error_free(e);
        return SDG_ERR_IO;
    }
    return SDG_OK;
}

sdg_status sdg_tokenizer_save_hf(const sdg_tokenizer *tok, const char *dir, sdg_error *err)
{
    GString *s = g_string_new("{");
    bool first = true;
    for (int i = 0; i < tok->n_vocab; i++) {
        if (!tok->tokens[i])
            continue;
        if (!first)
            g_string_append_c(s, ',');
        first = false;
        json_put_string(s, tok->tokens[i]);
        g_string_append_printf(s, ":%d", i);
    }
    g_string_append(s, "}\n");
    char *path = g_build_filename(dir, "vocab.json", NULL);
    sdg_status st = write_file(path, s, err);
    g_free(path);
    if (st == SDG_OK) {
        g_string_assign(s, "#version: 0.2\n");
        for (int r = 0; r < tok->n_merges; r++)
            g_string_append_printf(s, "%s %s\n", tok->tokens[tok->merge_a[r]], tok->tokens[tok->merge_b[r]]);
        path = g_build_filename(dir, "merges.txt", NULL);
        st = write_file(path, s, err);
        g_free(path);
    }
    g_string_free(s, TRUE);
    return st;
}
