/*
 * prompt.h - the prompt syntax users of AUTOMATIC1111 and ComfyUI expect: emphasis weights and
 * prompts longer than 75 tokens, turned into windows of 77 ids with a weight per position.
 *
 * Not here: the BPE itself (tokenizer.h), applying the weights to the text encoder's output (the
 * pipeline multiplies each position's hidden state by its weight and rescales to keep the mean,
 * as A1111 does), prompt editing [from:to:when] and alternation [a|b] (sampler-time features).
 */
#ifndef SDG_PROMPT_H
#define SDG_PROMPT_H

#include <stdint.h>

#include "tokenizer.h"

typedef struct sdg_prompt {
    int n_windows;        // >= 1
    int32_t *ids;         // owned: n_windows * 77: [BOS] + up to 75 tokens + [EOS] + pad per window
    float *weights;       // owned: n_windows * 77: emphasis per position (1 for BOS/EOS/padding)
} sdg_prompt;

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

// Frees and zeroes; accepts a zeroed struct.
void sdg_prompt_clear(sdg_prompt *p);

#endif // SDG_PROMPT_H
