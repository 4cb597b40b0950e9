/* Evaluation data: text files tokenized once and kept in an on-disk token
 * cache, and the LAMBADA last-word task loaded from JSON lines.
 *
 * Token cache file (little-endian, version 1):
 *   bytes  0..7    magic "QDTOKCCH"
 *   bytes  8..11   uint32 version
 *   bytes 12..15   uint32 header size (144)
 *   bytes 16..47   SHA-256 of the text file's bytes
 *   bytes 48..79   SHA-256 of the tokenizer files (see rt_dataset_tokenizer)
 *   bytes 80..87   uint64 token count n
 *   bytes 88..119  SHA-256 of the n uint32 ids below, as stored
 *   bytes 120..143 zero
 *   then n uint32 token ids.
 * The file name is derived from both digests, so a changed text or a
 * changed tokenizer file maps to a new cache file. The loader ignores a
 * file whose size, header or id digest does not match, and tokenizes again.
 * Cache files of old texts are never deleted, so removing the cache
 * directory is the way to reclaim their space.
 *
 * Every function reports failures through the ir_diag as "path: error: ..."
 * or "path:line:col: error: ..." and returns NULL or -1. */
#ifndef QUADC_RUNTIME_DATASET_H
#define QUADC_RUNTIME_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "ir/diag.h"
#include "runtime/tokenizer.h"

#define RT_SHA256_BYTES 32

/* Computes the SHA-256 digest (FIPS 180-4) of len bytes. */
void rt_sha256(const void *data, size_t len, uint8_t out[RT_SHA256_BYTES]);

/* A tokenizer and one SHA-256 digest over the bytes of the two files it was
 * loaded from: SHA-256(SHA-256(encoder.json) || SHA-256(vocab.bpe)). The
 * digest keys the token cache, so editing either file invalidates it. */
typedef struct rt_dataset_tokenizer {
    rt_tokenizer *tok;
    uint8_t files_sha256[RT_SHA256_BYTES];
} rt_dataset_tokenizer;

/* Hashes the two files and loads the tokenizer from them (rt_tok_load).
 * Returns NULL after reporting an error. */
rt_dataset_tokenizer *rt_dataset_tokenizer_load(const char *encoder_json_path, const char *vocab_bpe_path,
                                                ir_diag *d);
void rt_dataset_tokenizer_free(rt_dataset_tokenizer *t);

/* Returns the default token cache directory as a malloc'd string:
 * $XDG_CACHE_HOME/quadc when XDG_CACHE_HOME is set to an absolute path,
 * else $HOME/.cache/quadc. Returns NULL when neither variable is usable.
 * The directory need not exist yet. */
char *rt_dataset_default_cache_dir(void);

/* Tokenizes the UTF-8 text file at path and stores a malloc'd array of its
 * ids in *ids and their count in *n.
 *
 * With a cache_dir, the ids are first looked up in cache_dir (created when
 * missing, with its parents) and, when no valid cache file exists, written
 * there atomically after tokenizing: a temporary file is written, fsynced
 * and renamed. A cache file that is corrupt, truncated or from another
 * version is ignored and replaced. Failing to create or write the cache is
 * not an error: the ids are returned and a note names the cache path.
 * cache_dir == NULL tokenizes without a cache.
 *
 * Errors: the file cannot be opened or read, the file is empty ("contains no
 * text"), or it is not valid UTF-8 (reported as path:line:col, where col
 * counts bytes from 1). */
int rt_dataset_load_text(const char *path, const rt_dataset_tokenizer *tok, const char *cache_dir, int32_t **ids,
                         size_t *n, ir_diag *d);

/* Returns the cache file path that rt_dataset_load_text uses for a text
 * with the given digest, as a malloc'd string, or NULL when out of memory. */
char *rt_dataset_cache_path(const char *cache_dir, const uint8_t text_sha256[RT_SHA256_BYTES],
                            const uint8_t tokenizer_sha256[RT_SHA256_BYTES]);

/* One LAMBADA passage split the way lm-evaluation-harness splits it for
 * lambada_openai: the context is the text before its last space character
 * and the target is the rest, the last word with its leading space.
 * tokens contains the context ids followed by the target ids, each part
 * tokenized on its own. An empty context becomes the end-of-text token, as
 * lm-evaluation-harness does. */
typedef struct rt_lambada_example {
    int32_t *tokens;     /* [n_context + n_target] */
    size_t n_context;    /* >= 1 */
    size_t n_target;     /* >= 1 */
    int line;            /* 1-based line in the JSONL file */
} rt_lambada_example;

typedef struct rt_lambada {
    rt_lambada_example *examples;
    size_t count;
} rt_lambada;

/* Loads a JSON-lines file with one object {"text": "..."} per line. Other
 * members are ignored and lines of only whitespace are skipped. Each bad
 * line is reported as path:line:col, with col at the error for invalid
 * JSON. A line is bad when it is not an object, or its "text" is missing,
 * not a string, empty or not valid UTF-8. A text without a space (no
 * context before the last word) or ending in a space (an empty last word)
 * is bad too. A file without any example is an error. Returns 0, or -1 with
 * *set empty when any line was bad. */
int rt_lambada_load(const char *path, rt_tokenizer *tok, rt_lambada *set, ir_diag *d);
void rt_lambada_free(rt_lambada *set);

#endif
