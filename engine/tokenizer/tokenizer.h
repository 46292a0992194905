/*
 * tokenizer.h - the CLIP byte-level BPE tokenizer (openai/CLIP clip/simple_tokenizer.py), the one
 * SD1 (and open_clip for SD2/SDXL) feeds its text encoder with.
 *
 * Pipeline: text -> the parts of ftfy.fix_text that change prompts (NFC, curly quotes, fullwidth
 * forms, Latin ligatures, C1 controls, control characters, HTML entities) -> html.unescape twice ->
 * strip -> whitespace runs to one space -> lower-case -> regex pre-split into words, digits and
 * punctuation runs -> UTF-8 bytes through bytes_to_unicode -> BPE with "</w>" on a word's last
 * symbol, merges applied in file order -> ids.
 *
 * Not here: prompt emphasis syntax and windows of 77 (prompt.h), ftfy's mojibake repair
 * (fix_encoding), textual-inversion embeddings.
 *
 * A loaded tokenizer is immutable, so several threads may encode with it at once.
 */
#ifndef SDG_TOKENIZER_H
#define SDG_TOKENIZER_H

#include <glib.h>
#include <stdint.h>

#include "../common.h"

typedef struct sdg_tokenizer sdg_tokenizer;

// Context length of CLIP's text encoder: BOS + 75 tokens + EOS.
#define SDG_TOKENIZER_CTX 77

// path: a .txt.gz/.txt OpenAI merges file, a vocab.json (merges.txt beside it), or a folder
// holding either (bpe_simple_vocab_16e6.txt.gz, or vocab.json + merges.txt; also a tokenizer/
// subfolder as in diffusers folders). Returns NULL and fills err on failure.
sdg_tokenizer *sdg_tokenizer_load(const char *path, sdg_error *err);
void sdg_tokenizer_free(sdg_tokenizer *tok);

// Number of ids (largest id + 1): 49408 for CLIP.
int sdg_tokenizer_vocab_size(const sdg_tokenizer *tok);
int32_t sdg_tokenizer_bos(const sdg_tokenizer *tok);   // id of <|startoftext|>
int32_t sdg_tokenizer_eos(const sdg_tokenizer *tok);   // id of <|endoftext|>
// Id of a vocabulary entry given in its byte-encoded form (e.g. ",</w>"), or -1.
int32_t sdg_tokenizer_token_id(const sdg_tokenizer *tok, const char *token);
// The vocabulary entry of an id in its byte-encoded form (borrowed), or NULL.
const char *sdg_tokenizer_token(const sdg_tokenizer *tok, int32_t id);

// BPE ids of text without BOS/EOS, appended to *ids (a GArray of int32_t). Returns the number
// appended, or -1 when text is not valid UTF-8 (err filled, SDG_ERR_INVALID_ARG).
int sdg_tokenizer_encode(const sdg_tokenizer *tok, const char *text, GArray *ids, sdg_error *err);

// [BOS] + first 75 ids + [EOS], padded to 77 with pad_id (SD1: EOS; open_clip: 0). Returns the
// BPE count before truncation, or -1 (invalid UTF-8, err filled).
int sdg_tokenizer_tokenize77(const sdg_tokenizer *tok, const char *text, int32_t pad_id,
                             int32_t ids[SDG_TOKENIZER_CTX], sdg_error *err);

// Finds the vocabulary for a model: explicit_path (if not NULL, must exist), else next to the
// model file (dirname(model_path)/{bpe_simple_vocab_16e6.txt.gz, vocab.json + merges.txt,
// tokenizer/}; model_path itself when it is a diffusers folder), else models_dir (may be NULL).
// Returns a newly allocated path (g_free) that sdg_tokenizer_load accepts, or NULL with an
// error naming the files needed and where it looked.
char *sdg_tokenizer_find(const char *explicit_path, const char *model_path, const char *models_dir,
                         sdg_error *err);

// Writes the vocabulary in Hugging Face form: dir/vocab.json (token -> id) and dir/merges.txt
// ("#version: 0.2" then one merge per line, in rank order). dir must exist.
sdg_status sdg_tokenizer_save_hf(const sdg_tokenizer *tok, const char *dir, sdg_error *err);

#endif // SDG_TOKENIZER_H
