/*
 * prompt.h - the prompt syntax users of AUTOMATIC1111 and ComfyUI expect: emphasis weights and
 * prompts longer than 75 tokens, turned into windows of 77 ids with a weight per position.
 *
 * Textual-inversion embeddings (A1111's) are placed here too: where a name's tokens appear, its
 * vectors take that many positions (see sdg_prompt_dict).
 *
 * Not here: the BPE itself (tokenizer.h), applying the weights to the text encoder's output (the
 * pipeline multiplies each position's hidden state by its weight and rescales to keep the mean,
 * as A1111 does), finding and reading embedding files (pipeline.c, loader/embedding.h), prompt
 * editing [from:to:when] and alternation [a|b] (sampler-time features).
 */
#ifndef SDG_PROMPT_H
#define SDG_PROMPT_H

#include <stdint.h>

#include "tokenizer.h"

typedef struct sdg_prompt {
    int n_windows;        // >= 1
    int32_t *ids;         // owned: n_windows * 77: [BOS] + up to 75 tokens + [EOS] + pad per window
    float *weights;       // owned: n_windows * 77: emphasis per position (1 for BOS/EOS/padding)
    const float **rows;   // owned array, NULL when no embedding was placed: n_windows * 77
                          // pointers, per position the embedding vector (borrowed from the
                          // dictionary) that replaces the token's, or NULL (the token's own);
                          // the id at such a position is 0, as A1111 puts there
} sdg_prompt;

// The textual-inversion embeddings a prompt may name (A1111's EmbeddingDatabase). A name is the
// token sequence of its text: wherever a fragment's tokens (a run of one emphasis weight) contain
// it, the longest name that matches there (the first of equal ones) is replaced by its vectors,
// each taking one position with the fragment's weight. An embedding is not split: when its
// vectors do not fit in the current window, the window is closed (padded) and they start the
// next one (A1111 tokenize_line). Comma backtracking moves them with the words around them.
typedef struct sdg_prompt_dict {
    int n;                       // names
    const int32_t *const *ids;   // borrowed: ids[i] is name i's BPE ids, n_ids[i] >= 1 of them
    const int *n_ids;
    // Gives name i's vectors on its first match in a parse: *rows [*n_rows, *width], borrowed
    // for as long as the parsed prompt lives, 1 <= *n_rows <= 75. Any status but SDG_OK ends the
    // parse with it (err filled by resolve).
    sdg_status (*resolve)(void *user, int i, const float **rows, int *n_rows, int *width,
                          sdg_error *err);
    void *user;
} sdg_prompt_dict;

// Parses emphasis like A1111's parse_prompt_attention (modules/prompt_parser.py):
//   (text) x1.1, ((text)) x1.21, [text] /1.1, (text:1.3) explicit, nesting multiplies;
//   \( \) \[ \] \\ are literal characters, a lone backslash is dropped; unclosed groups still
//   apply to the end of the prompt, stray closers are literal text; an explicit weight that is
//   not a finite number or is beyond +-1000 leaves its text literal, and products of nested
//   weights are clamped to +-1000; "BREAK" (upper case, a word of its own) ends
//   the current window.
// Runs of equal weight are tokenized together (sdg_tokenizer_encode), then split into windows
// of 75 tokens; a window that would overflow breaks after its last comma when that comma is
// within the final 20 tokens (A1111's comma_padding_backtrack). Each window is BOS + tokens +
// EOS, padded to 77 with pad_id (SD1: EOS; open_clip: 0). An empty prompt gives one window of
// BOS, EOS, padding. max_windows > 0 caps the number of windows (later tokens are dropped);
// <= 0 means no cap.
// Returns SDG_OK, or SDG_ERR_INVALID_ARG when text is not valid UTF-8 (out is then zeroed).
// A prompt without emphasis syntax and at most 75 tokens gives exactly sdg_tokenizer_tokenize77's
// ids with all weights 1.
sdg_status sdg_prompt_parse(const sdg_tokenizer *tok, const char *text, int32_t pad_id, int max_windows,
                            sdg_prompt *out, sdg_error *err);

// The same with textual-inversion embeddings (dict may be NULL: none); errors of dict->resolve
// are returned as they are (out zeroed).
sdg_status sdg_prompt_parse_dict(const sdg_tokenizer *tok, const char *text, int32_t pad_id,
                                 int max_windows, const sdg_prompt_dict *dict, sdg_prompt *out,
                                 sdg_error *err);

// Frees and zeroes; accepts a zeroed struct.
void sdg_prompt_clear(sdg_prompt *p);

#endif // SDG_PROMPT_H
