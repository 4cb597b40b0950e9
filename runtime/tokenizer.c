/* GPT-2 byte-level BPE: loading and validating encoder.json and vocab.bpe,
 * the pre-tokenizer regex, BPE merging with a per-word cache, and decoding.
 * See runtime/tokenizer.h for the contract. */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "runtime/tokenizer.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GPT-2's pre-tokenizer pattern, from encoder.py in OpenAI's gpt-2
 * repository:
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * compiled with PCRE2_UTF | PCRE2_UCP. \s is spelled out as the Unicode
 * White_Space set, which is what \s matches in Python's regex module (used
 * by encoder.py) and in Rust's regex crate (used by tiktoken). PCRE2 10.42's
 * \s also matches U+180E MONGOLIAN VOWEL SEPARATOR (a space before Unicode
 * 6.3), which would split text around U+180E differently from GPT-2. */
#define WHITE_SPACE "\\t-\\r \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}"
static const char gpt2_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WHITE_SPACE "\\p{L}\\p{N}]+"
                                   "|[" WHITE_SPACE "]+(?![^" WHITE_SPACE "])|[" WHITE_SPACE "]+";

static const char eot_text[] = "<|endoftext|>";

/* Words up to this many bytes have their BPE result cached; longer ones are
 * rare, so caching them would only use memory. */
#define CACHE_MAX_WORD_BYTES 64
/* The cache is cleared when it reaches this many words, which bounds its
 * memory at 24 MB: 4 MB of slots, 4 MB of words and 16 MB of ids when every
 * word has 64 bytes and 64 ids. */
#define CACHE_MAX_WORDS (1 << 16)
/* Maximum length in bytes of a word (one regex match), which keeps BPE node
 * indices within int32_t. */
#define MAX_WORD_BYTES (1 << 28)

typedef struct merge_slot {
    uint64_t pair; /* left id << 32 | right id */
    int32_t rank;  /* -1 for an empty slot */
    int32_t result;
} merge_slot;

typedef struct cache_slot {
    uint64_t hash;
    uint32_t word_off, word_len; /* in cache_words */
    uint32_t ids_off, ids_len;   /* in cache_ids */
    bool used;
} cache_slot;

/* One symbol of a word during BPE; merged-away nodes get sym -1. */
typedef struct bpe_node {
    int32_t sym;
    int32_t prev, next; /* -1 at the ends */
} bpe_node;

/* A candidate merge of node `left` with its right neighbour, valid while
 * both nodes still carry left_sym and right_sym. */
typedef struct bpe_pair {
    int32_t rank;
    int32_t left;
    int32_t left_sym, right_sym;
    int32_t result;
} bpe_pair;

struct rt_tokenizer {
    int vocab_size;
    int eot;

    /* Token id -> bytes, in one arena. */
    char *token_bytes;
    uint32_t *token_off;
    uint32_t *token_len;

    /* Bytes -> token id, open addressing; -1 marks an empty slot. */
    int32_t *vocab_slots;
    size_t vocab_mask;

    int32_t byte_token[256];

    merge_slot *merges;
    size_t merge_mask;
    int merge_count;

    pcre2_code *regex;
    pcre2_match_data *match;

    cache_slot *cache;
    size_t cache_mask;
    size_t cache_count;
    char *cache_words;
    size_t cache_words_len, cache_words_cap;
    int32_t *cache_ids;
    size_t cache_ids_len, cache_ids_cap;

    /* Scratch buffers for one word's BPE, kept between calls. */
    bpe_node *nodes;
    size_t nodes_cap;
    bpe_pair *heap;
    size_t heap_len, heap_cap;
};

/* ---- GPT-2's byte-to-unicode alphabet ---- */

/* The 188 printable bytes 33..126, 161..172 and 174..255 stand for
 * themselves as code points; the other 68 bytes map to 256, 257, ... in byte
 * order, so every byte has a visible character in encoder.json. */
static bool byte_is_printable(int b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

static void build_byte_alphabet(uint32_t byte_to_cp[256], int cp_to_byte[512])
{
    for (int i = 0; i < 512; i++)
        cp_to_byte[i] = -1;
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        byte_to_cp[b] = byte_is_printable(b) ? (uint32_t)b : next++;
        cp_to_byte[byte_to_cp[b]] = b;
    }
}

/* ---- UTF-8 ---- */

/* Decodes one UTF-8 sequence at s[0..len) into *cp and returns its length,
 * or returns 0 and stores a reason when the sequence is invalid. Rejects
 * overlong forms, UTF-16 surrogates and code points above U+10FFFF, the
 * same rules that PCRE2's UTF check applies. */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp, const char **reason)
{
    unsigned char b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t need;
    uint32_t min_second = 0x80, max_second = 0xBF;
    if (b >= 0x80 && b <= 0xBF) {
        *reason = "unexpected continuation byte";
        return 0;
    } else if (b == 0xC0 || b == 0xC1) {
        *reason = "overlong encoding";
        return 0;
    } else if (b <= 0xDF) {
        need = 2;
        *cp = b & 0x1F;
    } else if (b <= 0xEF) {
        need = 3;
        *cp = b & 0x0F;
        if (b == 0xE0)
            min_second = 0xA0;
        if (b == 0xED)
            max_second = 0x9F;
    } else if (b <= 0xF4) {
        need = 4;
        *cp = b & 0x07;
        if (b == 0xF0)
            min_second = 0x90;
        if (b == 0xF4)
            max_second = 0x8F;
    } else {
        *reason = "invalid start byte";
        return 0;
    }

    for (size_t i = 1; i < need; i++) {
        if (i >= len) {
            *reason = "truncated sequence at the end";
            return 0;
        }
        unsigned char c = s[i];
        if (c < 0x80 || c > 0xBF) {
            *reason = "missing continuation byte";
            return 0;
        }
        if (i == 1 && (c < min_second || c > max_second)) {
            if (b == 0xE0 || b == 0xF0)
                *reason = "overlong encoding";
            else if (b == 0xED)
                *reason = "UTF-16 surrogate";
            else
                *reason = "code point above U+10FFFF";
            return 0;
        }
        *cp = (*cp << 6) | (c & 0x3F);
    }
    return need;
}

/* Returns the offset of the first invalid UTF-8 sequence in s, or len when
 * all of s is valid. */
static size_t find_invalid_utf8(const char *s, size_t len, const char **reason)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t n = utf8_decode(u + i, len - i, &cp, reason);
        if (n == 0)
            return i;
        i += n;
    }
    return len;
}

/* ---- Hashing and small helpers ---- */

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hash_pair(uint64_t pair)
{
    pair ^= pair >> 33; /* the MurmurHash3 finalizer */
    pair *= 0xff51afd7ed558ccdull;
    pair ^= pair >> 33;
    pair *= 0xc4ceb9fe1a85ec53ull;
    pair ^= pair >> 33;
    return pair;
}

static size_t table_size_for(size_t count)
{
    size_t size = 16;
    while (size < count * 2)
        size *= 2;
    return size;
}

/* Writes s[0..len) to buf for a message, with control bytes, quotes and
 * backslashes escaped and anything past 60 bytes replaced by "...". */
static const char *quote_for_message(char *buf, size_t cap, const char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 60) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c == 0x7F)
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02X", c);
        else if (c == '"' || c == '\\')
            o += (size_t)snprintf(buf + o, cap - o, "\\%c", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = '\0';
    return buf;
}

enum { QUOTE_CAP = 256 };

static char *read_file(const char *path, size_t *len, ir_diag *d)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        ir_diag_file_error(d, path, "failed to open the tokenizer file: %s; the GPT-2 files ship in data/tokenizer/",
                           strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap)
            break;
        cap *= 2;
        char *grown = realloc(buf, cap + 1);
        if (!grown)
            free(buf);
        buf = grown;
    }
    if (!buf) {
        ir_diag_file_error(d, path, "out of memory while reading the tokenizer file");
        fclose(f);
        return NULL;
    }
    if (ferror(f)) {
        ir_diag_file_error(d, path, "failed to read the tokenizer file: %s", strerror(errno));
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    if (n > UINT32_MAX) {
        ir_diag_file_error(d, path, "the file is %zu bytes; tokenizer files must be smaller than 4 GiB", n);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* ---- Vocabulary: id <-> bytes ---- */

static int32_t vocab_find(const rt_tokenizer *t, const char *s, size_t len)
{
    size_t i = hash_bytes(s, len) & t->vocab_mask;
    for (;;) {
        int32_t id = t->vocab_slots[i];
        if (id < 0)
            return -1;
        if (t->token_len[id] == len && memcmp(t->token_bytes + t->token_off[id], s, len) == 0)
            return id;
        i = (i + 1) & t->vocab_mask;
    }
}

/* Inserts id, whose bytes are already in the arena; returns the id that
 * already has the same bytes, or -1. */
static int32_t vocab_insert(rt_tokenizer *t, int32_t id)
{
    const char *s = t->token_bytes + t->token_off[id];
    size_t len = t->token_len[id];
    size_t i = hash_bytes(s, len) & t->vocab_mask;
    for (;;) {
        int32_t other = t->vocab_slots[i];
        if (other < 0) {
            t->vocab_slots[i] = id;
            return -1;
        }
        if (t->token_len[other] == len && memcmp(t->token_bytes + t->token_off[other], s, len) == 0)
            return other;
        i = (i + 1) & t->vocab_mask;
    }
}

/* Converts a token or merge symbol written in the byte-to-unicode alphabet
 * to bytes in out (which has room for len bytes, since each character takes
 * at least one). Returns the byte count, or -1 with a message in why. */
static long alphabet_to_bytes(const char *s, size_t len, const int cp_to_byte[512], char *out,
                              char *why, size_t why_cap)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    long n = 0;
    while (i < len) {
        uint32_t cp;
        const char *reason = NULL;
        size_t step = utf8_decode(u + i, len - i, &cp, &reason);
        if (step == 0) {
            snprintf(why, why_cap, "is not valid UTF-8 at byte %zu (%s)", i, reason);
            return -1;
        }
        if (cp >= 512 || cp_to_byte[cp] < 0) {
            snprintf(why, why_cap, "contains U+%04X, which is not in GPT-2's byte-to-unicode alphabet",
                     (unsigned)cp);
            return -1;
        }
        out[n++] = (char)cp_to_byte[cp];
        i += step;
    }
    return n;
}

static const char *json_kind(const cJSON *item)
{
    if (cJSON_IsObject(item))
        return "an object";
    if (cJSON_IsArray(item))
        return "an array";
    if (cJSON_IsString(item))
        return "a string";
    if (cJSON_IsNumber(item))
        return "a number";
    if (cJSON_IsBool(item))
        return "a boolean";
    if (cJSON_IsNull(item))
        return "null";
    return "an invalid value";
}

/* Reports a cJSON parse failure at byte `offset` as file:line:col. */
static void report_json_syntax(ir_diag *d, const char *path, const char *text, size_t offset)
{
    int line = 1, col = 1;
    for (size_t i = 0; i < offset; i++) {
        if (text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    ir_loc loc = {ir_diag_intern(d, path), line, col, 0};
    ir_diag_error(d, loc, "invalid JSON at byte offset %zu; expected an object that maps token strings to ids",
                  offset);
}

typedef struct vocab_entry {
    const cJSON *item;
    int entry; /* 1-based position in the object, for messages */
    int id;
} vocab_entry;

static int compare_entry_ids(const void *x, const void *y)
{
    const vocab_entry *a = x, *b = y;
    if (a->id != b->id)
        return a->id < b->id ? -1 : 1;
    return a->entry < b->entry ? -1 : a->entry > b->entry;
}

/* Reads the id of every entry into entries, sorts them by id and checks
 * that the ids are integers that cover 0..n-1 exactly once. Returns 0, or
 * -1 after reporting the first bad entry. */
static int check_vocab_ids(const cJSON *root, int n, const char *path, vocab_entry *entries, ir_diag *d)
{
    char quoted[QUOTE_CAP], quoted_other[QUOTE_CAP];
    int k = 0;
    for (const cJSON *item = root->child; item; item = item->next, k++) {
        const char *key = item->string ? item->string : "";
        quote_for_message(quoted, sizeof quoted, key, strlen(key));
        if (!cJSON_IsNumber(item)) {
            ir_diag_file_error(d, path, "entry %d (\"%s\"): the id is %s; expected an integer", k + 1, quoted,
                               json_kind(item));
            return -1;
        }
        double v = item->valuedouble;
        if (v != floor(v)) {
            ir_diag_file_error(d, path, "entry %d (\"%s\"): the id %g is not an integer", k + 1, quoted, v);
            return -1;
        }
        if (v < 0 || v > INT32_MAX) {
            ir_diag_file_error(d, path, "entry %d (\"%s\"): the id %.0f is out of range; the %d entries must use the "
                               "ids 0 to %d",
                               k + 1, quoted, v, n, n - 1);
            return -1;
        }
        entries[k] = (vocab_entry){item, k + 1, (int)v};
    }

    qsort(entries, (size_t)n, sizeof *entries, compare_entry_ids);
    for (int id = 0; id < n; id++) {
        if (entries[id].id == id)
            continue;
        /* The ids are sorted and non-negative, so the first mismatch is
         * either a repeat of id - 1 or a missing id. */
        if (id > 0 && entries[id].id == id - 1) {
            const vocab_entry *first = &entries[id - 1], *repeat = &entries[id];
            quote_for_message(quoted, sizeof quoted, repeat->item->string, strlen(repeat->item->string));
            quote_for_message(quoted_other, sizeof quoted_other, first->item->string, strlen(first->item->string));
            ir_diag_file_error(d, path, "entry %d (\"%s\"): the id %d is already used by entry %d (\"%s\")",
                               repeat->entry, quoted, repeat->id, first->entry, quoted_other);
        } else {
            ir_diag_file_error(d, path, "no entry has the id %d; the %d entries must use the ids 0 to %d", id, n,
                               n - 1);
        }
        return -1;
    }
    return 0;
}

/* Fills the id -> bytes arrays and the bytes -> id table from the parsed
 * encoder.json object, whose n entries have passed check_vocab_ids and are
 * sorted by id. Returns 0, or -1 after reporting the first bad entry. */
static int load_token_strings(rt_tokenizer *t, const vocab_entry *entries, const char *path,
                              const int cp_to_byte[512], size_t text_len, ir_diag *d)
{
    /* A token's bytes never outnumber the characters of its JSON key. */
    char *bytes = malloc(text_len + 1);
    if (!bytes) {
        ir_diag_file_error(d, path, "out of memory while loading %d tokens", t->vocab_size);
        return -1;
    }
    t->token_bytes = bytes;

    size_t used = 0;
    char quoted[QUOTE_CAP], why[128];
    for (int id = 0; id < t->vocab_size; id++) {
        const vocab_entry *e = &entries[id];
        const char *key = e->item->string;
        size_t key_len = strlen(key);
        quote_for_message(quoted, sizeof quoted, key, key_len);
        if (key_len == 0) {
            ir_diag_file_error(d, path, "entry %d: the token string is empty", e->entry);
            return -1;
        }
        long nbytes = alphabet_to_bytes(key, key_len, cp_to_byte, bytes + used, why, sizeof why);
        if (nbytes < 0) {
            ir_diag_file_error(d, path, "entry %d (\"%s\"): the token string %s", e->entry, quoted, why);
            return -1;
        }
        t->token_off[id] = (uint32_t)used;
        t->token_len[id] = (uint32_t)nbytes;
        used += (size_t)nbytes;
        int32_t other = vocab_insert(t, id);
        if (other >= 0) {
            ir_diag_file_error(d, path, "entry %d (\"%s\"): duplicate token string; entry %d has it too", e->entry,
                               quoted, entries[other].entry);
            return -1;
        }
    }
    return 0;
}

/* Reads the file at path unless `loaded` already holds its text (owned by
 * the caller, NUL-terminated); returns a buffer the caller frees. */
static char *text_or_file(const char *path, const char *loaded, size_t loaded_len, size_t *len, ir_diag *d)
{
    if (!loaded)
        return read_file(path, len, d);
    char *copy = malloc(loaded_len + 1);
    if (!copy) {
        ir_diag_file_error(d, path, "out of memory while reading the tokenizer file");
        return NULL;
    }
    memcpy(copy, loaded, loaded_len);
    copy[loaded_len] = '\0';
    *len = loaded_len;
    return copy;
}

/* Parses encoder.json; returns 0, or -1 after reporting the problem. */
static int load_encoder(rt_tokenizer *t, const char *path, const char *loaded, size_t loaded_len,
                        const uint32_t byte_to_cp[256], const int cp_to_byte[512], ir_diag *d)
{
    size_t len;
    char *text = text_or_file(path, loaded, loaded_len, &len, d);
    if (!text)
        return -1;
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        ir_diag_file_error(d, path, "contains a NUL byte at byte offset %zu; expected a JSON text",
                           (size_t)(nul - text));
        free(text);
        return -1;
    }

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        size_t offset = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        report_json_syntax(d, path, text, offset);
        free(text);
        return -1;
    }
    int status = -1;
    vocab_entry *entries = NULL;
    if (!cJSON_IsObject(root)) {
        ir_diag_file_error(d, path, "the top-level value is %s; expected an object that maps token strings to ids",
                           json_kind(root));
        goto done;
    }
    int n = cJSON_GetArraySize(root);
    if (n == 0) {
        ir_diag_file_error(d, path, "the object is empty; expected an object that maps token strings to ids");
        goto done;
    }

    t->vocab_size = n;
    t->token_off = calloc((size_t)n, sizeof *t->token_off);
    t->token_len = calloc((size_t)n, sizeof *t->token_len);
    size_t slots = table_size_for((size_t)n);
    t->vocab_slots = malloc(slots * sizeof *t->vocab_slots);
    if (!t->token_off || !t->token_len || !t->vocab_slots) {
        ir_diag_file_error(d, path, "out of memory while loading %d tokens", n);
        goto done;
    }
    memset(t->vocab_slots, 0xFF, slots * sizeof *t->vocab_slots);
    t->vocab_mask = slots - 1;

    entries = malloc((size_t)n * sizeof *entries);
    if (!entries) {
        ir_diag_file_error(d, path, "out of memory while loading %d tokens", n);
        goto done;
    }
    if (check_vocab_ids(root, n, path, entries, d) != 0)
        goto done;
    if (load_token_strings(t, entries, path, cp_to_byte, len, d) != 0)
        goto done;

    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_token[b] = vocab_find(t, &c, 1);
        if (t->byte_token[b] < 0) {
            char symbol[8];
            uint32_t cp = byte_to_cp[b];
            if (cp < 0x80)
                snprintf(symbol, sizeof symbol, "%c", (int)cp);
            else
                snprintf(symbol, sizeof symbol, "%c%c", (int)(0xC0 | (cp >> 6)), (int)(0x80 | (cp & 0x3F)));
            char quoted[QUOTE_CAP];
            ir_diag_file_error(d, path, "the token for byte 0x%02X (\"%s\", U+%04X) is missing; every byte needs one",
                               b, quote_for_message(quoted, sizeof quoted, symbol, strlen(symbol)), (unsigned)cp);
            goto done;
        }
    }
    t->eot = vocab_find(t, eot_text, strlen(eot_text));
    if (t->eot < 0) {
        ir_diag_file_error(d, path, "the token \"%s\" is missing", eot_text);
        goto done;
    }
    status = 0;

done:
    free(entries);
    cJSON_Delete(root);
    free(text);
    return status;
}

/* ---- Merges ---- */

static merge_slot *merge_find_slot(const rt_tokenizer *t, uint64_t pair)
{
    size_t i = hash_pair(pair) & t->merge_mask;
    while (t->merges[i].rank >= 0 && t->merges[i].pair != pair)
        i = (i + 1) & t->merge_mask;
    return &t->merges[i];
}

/* Reports an error at line:col of vocab.bpe and quotes the line. */
static void report_merge_error(ir_diag *d, const char *path, const char *text, size_t len, int line, size_t col,
                               size_t end_col, const char *fmt, ...) __attribute__((format(printf, 8, 9)));

static void report_merge_error(ir_diag *d, const char *path, const char *text, size_t len, int line, size_t col,
                               size_t end_col, const char *fmt, ...)
{
    ir_loc loc = {ir_diag_add_source(d, path, text, len), line, (int)col, (int)end_col};
    va_list ap;
    va_start(ap, fmt);
    ir_diag_verror(d, loc, fmt, ap);
    va_end(ap);
}

/* Per-token bookkeeping while reading vocab.bpe: the line of the merge that
 * produces each token, 1 for the byte tokens and 0 for none yet. */
typedef struct merge_reader {
    rt_tokenizer *t;
    const char *path;
    const char *encoder_path;
    const char *text;
    size_t len;
    const int *cp_to_byte;
    int *produced_by_line;
    char *scratch; /* room for two decoded symbols */
    ir_diag *d;
} merge_reader;

/* Decodes one symbol of a merge line and returns its token id, or -1 after
 * reporting why it cannot be used. */
static int32_t read_merge_symbol(merge_reader *r, int line, const char *line_start, const char *sym, size_t sym_len,
                                 char *out, long *out_len)
{
    char quoted[QUOTE_CAP], why[128];
    size_t col = (size_t)(sym - line_start) + 1;
    size_t end_col = col + sym_len;
    quote_for_message(quoted, sizeof quoted, sym, sym_len);
    long n = alphabet_to_bytes(sym, sym_len, r->cp_to_byte, out, why, sizeof why);
    if (n < 0) {
        report_merge_error(r->d, r->path, r->text, r->len, line, col, end_col, "the symbol \"%s\" %s", quoted, why);
        return -1;
    }
    int32_t id = vocab_find(r->t, out, (size_t)n);
    if (id < 0) {
        report_merge_error(r->d, r->path, r->text, r->len, line, col, end_col, "the symbol \"%s\" is not a token in %s",
                           quoted, r->encoder_path);
        return -1;
    }
    if (r->produced_by_line[id] == 0) {
        report_merge_error(r->d, r->path, r->text, r->len, line, col, end_col,
                           "the symbol \"%s\" is not a byte and no earlier line produces it; "
                           "the merges must be listed in training order",
                           quoted);
        return -1;
    }
    *out_len = n;
    return id;
}

/* Parses one merge line "left right" (line_len bytes, no newline) and adds
 * the merge with the next rank. Returns 0, or -1 after reporting. */
static int read_merge_line(merge_reader *r, int line, const char *s, size_t line_len)
{
    rt_tokenizer *t = r->t;
    if (line_len == 0) {
        report_merge_error(r->d, r->path, r->text, r->len, line, 1, 0,
                           "empty line; expected two symbols separated by one space");
        return -1;
    }
    int fields = 1;
    const char *space = NULL;
    for (size_t i = 0; i < line_len; i++) {
        if (s[i] != ' ')
            continue;
        fields++;
        if (!space)
            space = s + i;
        if (i == 0 || i + 1 == line_len || s[i + 1] == ' ') {
            report_merge_error(r->d, r->path, r->text, r->len, line, i + 1, 0,
                               "empty symbol; separate the two symbols with exactly one space");
            return -1;
        }
    }
    if (fields != 2) {
        report_merge_error(r->d, r->path, r->text, r->len, line, 1, line_len + 1,
                           "expected 2 symbols separated by one space, found %d", fields);
        return -1;
    }

    const char *right = space + 1;
    size_t left_len = (size_t)(space - s), right_len = line_len - left_len - 1;
    long left_bytes, right_bytes;
    int32_t a = read_merge_symbol(r, line, s, s, left_len, r->scratch, &left_bytes);
    if (a < 0)
        return -1;
    int32_t b = read_merge_symbol(r, line, s, right, right_len, r->scratch + left_bytes, &right_bytes);
    if (b < 0)
        return -1;

    uint64_t pair = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    merge_slot *slot = merge_find_slot(t, pair);
    if (slot->rank >= 0) {
        report_merge_error(r->d, r->path, r->text, r->len, line, 1, line_len + 1,
                           "duplicate merge; line %d has the same pair", slot->rank + 2);
        return -1;
    }
    size_t result_len = (size_t)(left_bytes + right_bytes);
    int32_t result = vocab_find(t, r->scratch, result_len);
    if (result < 0) {
        char quoted_left[QUOTE_CAP], quoted_right[QUOTE_CAP];
        quote_for_message(quoted_left, sizeof quoted_left, s, left_len);
        quote_for_message(quoted_right, sizeof quoted_right, right, right_len);
        report_merge_error(r->d, r->path, r->text, r->len, line, 1, line_len + 1,
                           "the merged token \"%s%s\" is not in %s", quoted_left, quoted_right, r->encoder_path);
        return -1;
    }
    if (r->produced_by_line[result] != 0) {
        report_merge_error(r->d, r->path, r->text, r->len, line, 1, line_len + 1,
                           "the merged token is already produced by line %d; each merge must make a new token",
                           r->produced_by_line[result]);
        return -1;
    }
    r->produced_by_line[result] = line;
    slot->pair = pair;
    slot->rank = t->merge_count++;
    slot->result = result;
    return 0;
}

/* Parses vocab.bpe; returns 0, or -1 after reporting the problem. */
static int load_merges(rt_tokenizer *t, const char *path, const char *loaded, size_t loaded_len,
                       const char *encoder_path, const int cp_to_byte[512], ir_diag *d)
{
    size_t len;
    char *text = text_or_file(path, loaded, loaded_len, &len, d);
    if (!text)
        return -1;

    int status = -1;
    int lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    merge_reader r = {t, path, encoder_path, text, len, cp_to_byte, NULL, NULL, d};
    r.produced_by_line = calloc((size_t)t->vocab_size, sizeof *r.produced_by_line);
    r.scratch = malloc(len + 1);
    size_t slots = table_size_for((size_t)lines);
    t->merges = malloc(slots * sizeof *t->merges);
    if (!r.produced_by_line || !r.scratch || !t->merges) {
        ir_diag_file_error(d, path, "out of memory while loading %d lines", lines);
        goto done;
    }
    for (size_t i = 0; i < slots; i++)
        t->merges[i].rank = -1;
    t->merge_mask = slots - 1;
    for (int b = 0; b < 256; b++)
        r.produced_by_line[t->byte_token[b]] = 1;

    static const char header[] = "#version";
    if (len < sizeof header - 1 || memcmp(text, header, sizeof header - 1) != 0) {
        report_merge_error(d, path, text, len, 1, 1, 0,
                           "missing the \"#version\" line that starts a GPT-2 merges file (vocab.bpe)");
        goto done;
    }

    const char *p = memchr(text, '\n', len);
    int line = 2;
    while (p && (size_t)(p + 1 - text) < len) {
        const char *s = p + 1;
        const char *eol = memchr(s, '\n', len - (size_t)(s - text));
        size_t line_len = eol ? (size_t)(eol - s) : len - (size_t)(s - text);
        if (line_len > 0 && s[line_len - 1] == '\r')
            line_len--;
        if (read_merge_line(&r, line, s, line_len) != 0)
            goto done;
        p = eol;
        line++;
    }

    int expected = 256 + t->merge_count + 1;
    if (t->vocab_size != expected) {
        ir_diag_file_error(d, encoder_path,
                           "has %d tokens, but %s needs %d: the 256 byte tokens, one token for each of its %d "
                           "merges and \"%s\"",
                           t->vocab_size, path, expected, t->merge_count, eot_text);
        goto done;
    }
    status = 0;

done:
    free(r.produced_by_line);
    free(r.scratch);
    free(text);
    return status;
}

/* ---- Loading ---- */

static int compile_pattern(rt_tokenizer *t, ir_diag *d)
{
    int code;
    PCRE2_SIZE offset;
    t->regex = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &code, &offset,
                             NULL);
    if (!t->regex) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(code, message, sizeof message);
        ir_diag_file_error(d, NULL, "failed to compile the GPT-2 pre-tokenizer regex at offset %zu: %s",
                           (size_t)offset, (const char *)message);
        return -1;
    }
    /* JIT is only an optimization: when it is unavailable pcre2_match
     * interprets the pattern. */
    pcre2_jit_compile(t->regex, PCRE2_JIT_COMPLETE);
    t->match = pcre2_match_data_create_from_pattern(t->regex, NULL);
    if (!t->match) {
        ir_diag_file_error(d, NULL, "out of memory while creating the tokenizer");
        return -1;
    }
    return 0;
}

rt_tokenizer *rt_tok_load(const char *encoder_json_path, const char *vocab_bpe_path, ir_diag *d)
{
    return rt_tok_load_memory(encoder_json_path, NULL, 0, vocab_bpe_path, NULL, 0, d);
}

rt_tokenizer *rt_tok_load_memory(const char *encoder_json_name, const char *encoder_json, size_t encoder_json_len,
                                 const char *vocab_bpe_name, const char *vocab_bpe, size_t vocab_bpe_len,
                                 ir_diag *d)
{
    const char *encoder_json_path = encoder_json_name, *vocab_bpe_path = vocab_bpe_name;
    rt_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        ir_diag_file_error(d, encoder_json_path, "out of memory while loading the tokenizer");
        return NULL;
    }
    uint32_t byte_to_cp[256];
    int cp_to_byte[512];
    build_byte_alphabet(byte_to_cp, cp_to_byte);

    if (load_encoder(t, encoder_json_path, encoder_json, encoder_json_len, byte_to_cp, cp_to_byte, d) != 0 ||
        load_merges(t, vocab_bpe_path, vocab_bpe, vocab_bpe_len, encoder_json_path, cp_to_byte, d) != 0 ||
        compile_pattern(t, d) != 0) {
        rt_tok_free(t);
        return NULL;
    }
    return t;
}

void rt_tok_free(rt_tokenizer *t)
{
    if (!t)
        return;
    free(t->token_bytes);
    free(t->token_off);
    free(t->token_len);
    free(t->vocab_slots);
    free(t->merges);
    pcre2_match_data_free(t->match);
    pcre2_code_free(t->regex);
    free(t->cache);
    free(t->cache_words);
    free(t->cache_ids);
    free(t->nodes);
    free(t->heap);
    free(t);
}

int rt_tok_vocab_size(const rt_tokenizer *t)
{
    return t->vocab_size;
}

int rt_tok_eot(const rt_tokenizer *t)
{
    return t->eot;
}

/* ---- Output buffer ---- */

typedef struct id_vec {
    int32_t *data;
    size_t len, cap;
} id_vec;

static int id_vec_reserve(id_vec *v, size_t extra)
{
    if (v->cap - v->len >= extra)
        return 0;
    size_t cap = v->cap ? v->cap : 64;
    while (cap - v->len < extra) {
        if (cap > SIZE_MAX / 2 / sizeof *v->data)
            return -1;
        cap *= 2;
    }
    int32_t *grown = realloc(v->data, cap * sizeof *grown);
    if (!grown)
        return -1;
    v->data = grown;
    v->cap = cap;
    return 0;
}

/* ---- BPE on one word ---- */

static bool pair_before(const bpe_pair *x, const bpe_pair *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->left < y->left);
}

static int heap_push(rt_tokenizer *t, bpe_pair pair)
{
    if (t->heap_len == t->heap_cap) {
        size_t cap = t->heap_cap ? t->heap_cap * 2 : 64;
        bpe_pair *grown = realloc(t->heap, cap * sizeof *grown);
        if (!grown)
            return -1;
        t->heap = grown;
        t->heap_cap = cap;
    }
    size_t i = t->heap_len++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&pair, &t->heap[parent]))
            break;
        t->heap[i] = t->heap[parent];
        i = parent;
    }
    t->heap[i] = pair;
    return 0;
}

static bpe_pair heap_pop(rt_tokenizer *t)
{
    bpe_pair top = t->heap[0];
    bpe_pair last = t->heap[--t->heap_len];
    size_t i = 0, n = t->heap_len;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && pair_before(&t->heap[child + 1], &t->heap[child]))
            child++;
        if (!pair_before(&t->heap[child], &last))
            break;
        t->heap[i] = t->heap[child];
        i = child;
    }
    if (n > 0)
        t->heap[i] = last;
    return top;
}

/* Queues the merge of node `left` with its right neighbour, if that pair of
 * symbols has a merge. */
static int queue_pair(rt_tokenizer *t, int32_t left)
{
    int32_t right = t->nodes[left].next;
    if (right < 0)
        return 0;
    int32_t a = t->nodes[left].sym, b = t->nodes[right].sym;
    const merge_slot *slot = merge_find_slot(t, (uint64_t)(uint32_t)a << 32 | (uint32_t)b);
    if (slot->rank < 0)
        return 0;
    bpe_pair pair = {slot->rank, left, a, b, slot->result};
    return heap_push(t, pair);
}

/* Applies the merges to one word of len bytes and appends its token ids.
 *
 * GPT-2's reference loop takes the lowest-rank pair of adjacent symbols,
 * merges every occurrence of it from left to right, and repeats. This heap
 * does the same in O(n log n): it pops pairs by (rank, position), and a
 * popped pair whose nodes have changed since it was queued is stale and
 * skipped. The order matches because rt_tok_load only accepts merges in
 * training order, where a merge of rank r makes a new token that only
 * merges of higher rank use. So every pair queued while rank r is being
 * applied has a higher rank and waits until all occurrences of rank r are
 * done. */
static int bpe_word(rt_tokenizer *t, const unsigned char *word, size_t len, id_vec *out)
{
    if (len == 0)
        return 0;
    if (len > t->nodes_cap) {
        bpe_node *grown = realloc(t->nodes, len * sizeof *grown);
        if (!grown)
            return -1;
        t->nodes = grown;
        t->nodes_cap = len;
    }
    int32_t n = (int32_t)len;
    for (int32_t i = 0; i < n; i++) {
        t->nodes[i].sym = t->byte_token[word[i]];
        t->nodes[i].prev = i - 1;
        t->nodes[i].next = i + 1 < n ? i + 1 : -1;
    }

    t->heap_len = 0;
    for (int32_t i = 0; i + 1 < n; i++)
        if (queue_pair(t, i) != 0)
            return -1;

    while (t->heap_len > 0) {
        bpe_pair pair = heap_pop(t);
        bpe_node *left = &t->nodes[pair.left];
        if (left->sym != pair.left_sym || left->next < 0)
            continue;
        bpe_node *right = &t->nodes[left->next];
        if (right->sym != pair.right_sym)
            continue;

        left->sym = pair.result;
        left->next = right->next;
        if (right->next >= 0)
            t->nodes[right->next].prev = pair.left;
        right->sym = -1;
        if (left->prev >= 0 && queue_pair(t, left->prev) != 0)
            return -1;
        if (queue_pair(t, pair.left) != 0)
            return -1;
    }

    size_t count = 0;
    for (int32_t i = 0; i >= 0; i = t->nodes[i].next)
        count++;
    if (id_vec_reserve(out, count) != 0)
        return -1;
    for (int32_t i = 0; i >= 0; i = t->nodes[i].next)
        out->data[out->len++] = t->nodes[i].sym;
    return 0;
}

/* ---- Word cache ---- */

static void cache_clear(rt_tokenizer *t)
{
    if (t->cache)
        memset(t->cache, 0, (t->cache_mask + 1) * sizeof *t->cache);
    t->cache_count = 0;
    t->cache_words_len = 0;
    t->cache_ids_len = 0;
}

static cache_slot *cache_find_slot(cache_slot *slots, size_t mask, const rt_tokenizer *t, const char *word,
                                   size_t len, uint64_t hash)
{
    size_t i = hash & mask;
    while (slots[i].used) {
        const cache_slot *s = &slots[i];
        if (t && s->hash == hash && s->word_len == len && memcmp(t->cache_words + s->word_off, word, len) == 0)
            break;
        i = (i + 1) & mask;
    }
    return &slots[i];
}

/* Grows the slot table when it is half full; returns -1 when out of memory. */
static int cache_grow(rt_tokenizer *t)
{
    size_t cap = t->cache ? (t->cache_mask + 1) * 2 : 4096;
    cache_slot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    if (t->cache) {
        for (size_t i = 0; i <= t->cache_mask; i++) {
            if (!t->cache[i].used)
                continue;
            *cache_find_slot(slots, cap - 1, NULL, NULL, 0, t->cache[i].hash) = t->cache[i];
        }
        free(t->cache);
    }
    t->cache = slots;
    t->cache_mask = cap - 1;
    return 0;
}

/* Returns the capacity to grow an arena to so that it fits need more
 * elements. */
static size_t grown_capacity(size_t cap, size_t len, size_t need)
{
    size_t grown = cap ? cap : 4096;
    while (grown - len < need)
        grown *= 2;
    return grown;
}

/* Stores a word and its ids in the cache arenas and returns their offsets. */
static int cache_store(rt_tokenizer *t, const char *word, size_t len, const int32_t *ids, size_t count,
                       size_t *word_off, size_t *ids_off)
{
    if (t->cache_words_cap - t->cache_words_len < len) {
        size_t cap = grown_capacity(t->cache_words_cap, t->cache_words_len, len);
        char *grown = realloc(t->cache_words, cap);
        if (!grown)
            return -1;
        t->cache_words = grown;
        t->cache_words_cap = cap;
    }
    if (t->cache_ids_cap - t->cache_ids_len < count) {
        size_t cap = grown_capacity(t->cache_ids_cap, t->cache_ids_len, count);
        int32_t *grown = realloc(t->cache_ids, cap * sizeof *grown);
        if (!grown)
            return -1;
        t->cache_ids = grown;
        t->cache_ids_cap = cap;
    }
    *word_off = t->cache_words_len;
    *ids_off = t->cache_ids_len;
    memcpy(t->cache_words + t->cache_words_len, word, len);
    memcpy(t->cache_ids + t->cache_ids_len, ids, count * sizeof *ids);
    t->cache_words_len += len;
    t->cache_ids_len += count;
    return 0;
}

/* Appends the token ids of one pre-tokenized word, from the cache when the
 * word was seen before. */
static int encode_word(rt_tokenizer *t, const char *word, size_t len, id_vec *out)
{
    if (len > CACHE_MAX_WORD_BYTES)
        return bpe_word(t, (const unsigned char *)word, len, out);

    if (!t->cache && cache_grow(t) != 0)
        return -1;
    uint64_t hash = hash_bytes(word, len);
    cache_slot *slot = cache_find_slot(t->cache, t->cache_mask, t, word, len, hash);
    if (slot->used) {
        if (id_vec_reserve(out, slot->ids_len) != 0)
            return -1;
        memcpy(out->data + out->len, t->cache_ids + slot->ids_off, slot->ids_len * sizeof *out->data);
        out->len += slot->ids_len;
        return 0;
    }

    size_t start = out->len;
    if (bpe_word(t, (const unsigned char *)word, len, out) != 0)
        return -1;

    /* Caching is best effort: a failed allocation here leaves the result
     * in `out` correct and only skips the cache. */
    if (t->cache_count >= CACHE_MAX_WORDS)
        cache_clear(t);
    if ((t->cache_count + 1) * 2 > t->cache_mask + 1) {
        if (cache_grow(t) != 0)
            return 0;
    }
    size_t word_off, ids_off;
    size_t ids_len = out->len - start;
    if (cache_store(t, word, len, out->data + start, ids_len, &word_off, &ids_off) != 0)
        return 0;
    slot = cache_find_slot(t->cache, t->cache_mask, t, word, len, hash);
    slot->used = true;
    slot->hash = hash;
    slot->word_off = (uint32_t)word_off;
    slot->word_len = (uint32_t)len;
    slot->ids_off = (uint32_t)ids_off;
    slot->ids_len = (uint32_t)ids_len;
    t->cache_count++;
    return 0;
}

/* ---- Encoding ---- */

/* Appends the ids of the piece text[start..end) of a segment; `base` is the
 * segment's offset in the caller's input, for messages. */
static int encode_piece(rt_tokenizer *t, const char *text, size_t start, size_t end, size_t base,
                        const char *source, id_vec *out, ir_diag *d)
{
    if (end - start > MAX_WORD_BYTES) {
        ir_diag_file_error(d, source,
                           "the word at byte offset %zu is %zu bytes long; the tokenizer accepts words of up to %d "
                           "bytes",
                           base + start, end - start, MAX_WORD_BYTES);
        return -1;
    }
    if (encode_word(t, text + start, end - start, out) != 0) {
        ir_diag_file_error(d, source, "out of memory while encoding byte offset %zu", base + start);
        return -1;
    }
    return 0;
}

/* Splits text[0..len), which contains no "<|endoftext|>", with the GPT-2
 * regex and appends the ids of every piece. The segment is the whole regex
 * subject, so the lookahead in "\s+(?!\S)" sees its end as the end of the
 * text, as in tiktoken and Hugging Face, which also split on special tokens
 * first. `base` is the offset of text in the caller's input. */
static int encode_segment(rt_tokenizer *t, const char *text, size_t len, size_t base, const char *source,
                          id_vec *out, ir_diag *d)
{
    PCRE2_SPTR subject = (PCRE2_SPTR)text;
    size_t pos = 0;
    while (pos < len) {
        int rc = pcre2_match(t->regex, subject, len, pos, PCRE2_NO_UTF_CHECK, t->match, NULL);
        size_t start, end;
        if (rc == PCRE2_ERROR_NOMATCH) {
            /* Unreachable with GPT-2's pattern, which matches every
             * character; kept so that no text is ever dropped. */
            start = pos;
            end = len;
        } else if (rc < 0) {
            PCRE2_UCHAR message[256];
            pcre2_get_error_message(rc, message, sizeof message);
            ir_diag_file_error(d, source, "the pre-tokenizer regex failed at byte offset %zu: %s", base + pos,
                               (const char *)message);
            return -1;
        } else {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->match);
            start = ov[0];
            end = ov[1];
        }

        /* Skipped text and empty matches cannot occur either; the text is
         * kept and the loop always moves forward by at least a character. */
        if (start > pos && encode_piece(t, text, pos, start, base, source, out, d) != 0)
            return -1;
        if (end == start) {
            end = start + 1;
            while (end < len && ((unsigned char)text[end] & 0xC0) == 0x80)
                end++;
        }
        if (encode_piece(t, text, start, end, base, source, out, d) != 0)
            return -1;
        pos = end;
    }
    return 0;
}

/* Returns the offset of the next "<|endoftext|>" at or after from, or len. */
static size_t find_eot(const char *text, size_t len, size_t from)
{
    size_t n = sizeof eot_text - 1;
    while (from + n <= len) {
        const char *lt = memchr(text + from, '<', len - from - n + 1);
        if (!lt)
            break;
        if (memcmp(lt, eot_text, n) == 0)
            return (size_t)(lt - text);
        from = (size_t)(lt - text) + 1;
    }
    return len;
}

int rt_tok_encode(rt_tokenizer *t, const char *text, size_t len, const char *source, int32_t **ids, size_t *n,
                  ir_diag *d)
{
    *ids = NULL;
    *n = 0;
    if (!source)
        source = "<text>";
    if (len == 0)
        return 0;

    const char *reason = NULL;
    size_t bad = find_invalid_utf8(text, len, &reason);
    if (bad < len) {
        ir_diag_file_error(d, source, "invalid UTF-8 at byte offset %zu (byte 0x%02X: %s); the text must be UTF-8",
                           bad, (unsigned char)text[bad], reason);
        return -1;
    }

    id_vec out = {0};
    if (id_vec_reserve(&out, len / 4 + 16) != 0) {
        ir_diag_file_error(d, source, "out of memory while encoding byte offset 0 of %zu", len);
        return -1;
    }
    size_t pos = 0;
    while (pos < len) {
        size_t special = find_eot(text, len, pos);
        if (special > pos && encode_segment(t, text + pos, special - pos, pos, source, &out, d) != 0) {
            free(out.data);
            return -1;
        }
        if (special == len)
            break;
        if (id_vec_reserve(&out, 1) != 0) {
            ir_diag_file_error(d, source, "out of memory while encoding byte offset %zu", special);
            free(out.data);
            return -1;
        }
        out.data[out.len++] = t->eot;
        pos = special + sizeof eot_text - 1;
    }
    *ids = out.data;
    *n = out.len;
    return 0;
}

/* ---- Decoding ---- */

const char *rt_tok_token_bytes(const rt_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->vocab_size) {
        *len = 0;
        return NULL;
    }
    *len = t->token_len[id];
    return t->token_bytes + t->token_off[id];
}

size_t rt_tok_decode_token(const rt_tokenizer *t, int32_t id, char *out, size_t cap)
{
    size_t len;
    const char *bytes = rt_tok_token_bytes(t, id, &len);
    if (!bytes)
        return 0;
    memcpy(out, bytes, len < cap ? len : cap);
    return len;
}

char *rt_tok_decode_bytes(const rt_tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->vocab_size)
            return NULL;
        total += t->token_len[ids[i]];
    }
    char *text = malloc(total + 1);
    if (!text)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(text + o, t->token_bytes + t->token_off[ids[i]], t->token_len[ids[i]]);
        o += t->token_len[ids[i]];
    }
    text[o] = '\0';
    if (len)
        *len = o;
    return text;
}

char *rt_tok_decode(const rt_tokenizer *t, const int32_t *ids, size_t n)
{
    return rt_tok_decode_bytes(t, ids, n, NULL);
}
