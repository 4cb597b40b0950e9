/* GPT-2's byte-level BPE tokenizer: loads encoder.json and vocab.bpe (as
 * shipped in data/tokenizer/), encodes UTF-8 text to token ids and decodes
 * ids back to bytes. The ids match OpenAI's GPT-2 encoder.py except for the
 * special token below.
 *
 * Encoding splits the text with GPT-2's pre-tokenizer regex, maps each
 * piece's bytes to GPT-2's printable byte-to-unicode alphabet, applies the
 * BPE merges in rank order and looks the symbols up in encoder.json.
 * The literal text "<|endoftext|>" is encoded as the end-of-text token
 * (50256 in GPT-2), as tiktoken does with allowed_special="all" and as the
 * Hugging Face GPT-2 tokenizer does; it is never split into "<", "|", ... */
#ifndef QUADC_RUNTIME_TOKENIZER_H
#define QUADC_RUNTIME_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "ir/diag.h"

typedef struct rt_tokenizer rt_tokenizer;

/* Loads and validates the two files. Returns NULL on error after reporting
 * it through d with the file name and the line or entry at fault.
 * encoder.json must map every token, written in GPT-2's byte-to-unicode
 * alphabet, to an id; the ids must be 0..N-1 without gaps or duplicates.
 * vocab.bpe must start with a "#version" line and list one merge per line
 * as two symbols separated by one space. The merges must be in training
 * order, so each symbol is a single byte or the result of an earlier merge,
 * and each result is a new token. encoder.json must contain exactly the 256
 * byte tokens, one token per merge and "<|endoftext|>". */
rt_tokenizer *rt_tok_load(const char *encoder_json_path, const char *vocab_bpe_path, ir_diag *d);
/* rt_tok_load from texts in memory, such as files embedded in a program.
 * A NULL text is read from the file at its name instead; otherwise the
 * name only labels messages. The texts are copied. */
rt_tokenizer *rt_tok_load_memory(const char *encoder_json_name, const char *encoder_json, size_t encoder_json_len,
                                 const char *vocab_bpe_name, const char *vocab_bpe, size_t vocab_bpe_len,
                                 ir_diag *d);
void rt_tok_free(rt_tokenizer *t);

/* Number of token ids (50257 for GPT-2). */
int rt_tok_vocab_size(const rt_tokenizer *t);
/* Id of "<|endoftext|>" (50256 for GPT-2). */
int rt_tok_eot(const rt_tokenizer *t);

/* Encodes len bytes of UTF-8 text (NUL bytes included). On success returns
 * 0 and stores a malloc'd array in *ids and its length in *n. Empty text
 * gives *n == 0 and may give *ids == NULL. Returns -1 with *ids == NULL
 * after reporting through d when the text is not valid UTF-8, when one
 * pre-tokenized word is longer than 256 MiB, when PCRE2 fails or when
 * memory runs out. Each message names `source` (or "<text>" when source
 * is NULL) and the byte offset.
 * Not thread-safe: the tokenizer caches the BPE result of each word and
 * keeps one regex match buffer, so use one tokenizer per thread. */
int rt_tok_encode(rt_tokenizer *t, const char *text, size_t len, const char *source,
                  int32_t **ids, size_t *n, ir_diag *d);

/* Returns the bytes of token id and stores their count in *len, or returns
 * NULL when id is out of range. The bytes are not NUL-terminated and may be
 * part of a UTF-8 sequence, because GPT-2 tokens split text at the byte
 * level. */
const char *rt_tok_token_bytes(const rt_tokenizer *t, int32_t id, size_t *len);

/* Copies the bytes of token id to out, at most cap of them, and returns the
 * token's full byte count, so a return value above cap means the copy was
 * cut short (as with snprintf, but without a NUL terminator). Returns 0 for
 * an id out of range. */
size_t rt_tok_decode_token(const rt_tokenizer *t, int32_t id, char *out, size_t cap);

/* Decodes n ids to a malloc'd NUL-terminated string and stores its byte
 * count in *len when len is not NULL. The result can contain NUL bytes
 * (token "Ā" is byte 0) and invalid UTF-8 (when the ids stop inside a
 * character). Returns NULL when an id is out of range or memory runs out. */
char *rt_tok_decode_bytes(const rt_tokenizer *t, const int32_t *ids, size_t n, size_t *len);
/* rt_tok_decode_bytes without the byte count. */
char *rt_tok_decode(const rt_tokenizer *t, const int32_t *ids, size_t n);

#endif
