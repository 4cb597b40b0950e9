/* Evaluation data: the SHA-256 keyed token cache for text files and the
 * LAMBADA JSON-lines loader. dataset.h describes the cache file layout.
 * Multi-byte fields are written byte by byte in little-endian order, so
 * cache files do not depend on the host. */
#include "runtime/dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

/* ---- SHA-256 (FIPS 180-4) ---- */

typedef struct sha256_state {
    uint32_t h[8];
    uint8_t block[64];
    size_t block_len;
    uint64_t total_len;
} sha256_state;

static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr32(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void sha256_init(sha256_state *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->block_len = 0;
    s->total_len = 0;
}

static void sha256_compress(uint32_t h[8], const uint8_t block[64])
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 | (uint32_t)block[4 * i + 2] << 8 |
               (uint32_t)block[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr32(w[i - 15], 7) ^ rotr32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr32(w[i - 2], 17) ^ rotr32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }

    uint32_t a = h[0], b = h[1], c = h[2], dd = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t sum1 = rotr32(e, 6) ^ rotr32(e, 11) ^ rotr32(e, 25);
        uint32_t choose = (e & f) ^ (~e & g);
        uint32_t t1 = hh + sum1 + choose + sha256_k[i] + w[i];
        uint32_t sum0 = rotr32(a, 2) ^ rotr32(a, 13) ^ rotr32(a, 22);
        uint32_t majority = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = sum0 + majority;
        hh = g;
        g = f;
        f = e;
        e = dd + t1;
        dd = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += dd;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

static void sha256_update(sha256_state *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    s->total_len += len;
    while (len > 0) {
        size_t take = 64 - s->block_len;
        if (take > len)
            take = len;
        memcpy(s->block + s->block_len, p, take);
        s->block_len += take;
        p += take;
        len -= take;
        if (s->block_len == 64) {
            sha256_compress(s->h, s->block);
            s->block_len = 0;
        }
    }
}

/* Pads with 0x80, zeros and the message length in bits (big-endian). */
static void sha256_final(sha256_state *s, uint8_t out[RT_SHA256_BYTES])
{
    uint64_t bits = s->total_len * 8;
    uint8_t pad[72] = {0x80};
    size_t pad_len = (s->block_len < 56 ? 56 : 120) - s->block_len;
    for (int i = 0; i < 8; i++)
        pad[pad_len + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, pad, pad_len + 8);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (uint8_t)(s->h[i] >> (24 - 8 * j));
}

void rt_sha256(const void *data, size_t len, uint8_t out[RT_SHA256_BYTES])
{
    sha256_state s;
    sha256_init(&s);
    sha256_update(&s, data, len);
    sha256_final(&s, out);
}

/* ---- Files and UTF-8 ---- */

/* Reads a whole file into a malloc'd buffer with a NUL byte after the
 * content. `role` names the kind of file in error messages. */
static char *read_whole_file(const char *path, const char *role, size_t *len, ir_diag *d)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        ir_diag_file_error(d, path, "failed to open the %s: %s", role, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, used = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (used + 1 == cap) {
            char *grown = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + used, 1, cap - 1 - used, f);
        used += got;
        if (got == 0)
            break;
    }
    if (!buf) {
        ir_diag_file_error(d, path, "out of memory while reading the %s", role);
        fclose(f);
        return NULL;
    }
    if (ferror(f)) {
        ir_diag_file_error(d, path, "failed to read the %s: %s", role, strerror(errno));
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[used] = '\0';
    *len = used;
    return buf;
}

/* Returns the length of the valid UTF-8 sequence at s[0..len), or 0 when it
 * is invalid. Rejects overlong forms, UTF-16 surrogates and code points
 * above U+10FFFF (RFC 3629). */
static size_t utf8_sequence_length(const unsigned char *s, size_t len)
{
    unsigned char b = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b < 0x80)
        return 1;
    if (b < 0xC2)
        return 0;
    if (b <= 0xDF) {
        need = 2;
    } else if (b <= 0xEF) {
        need = 3;
        lo = b == 0xE0 ? 0xA0 : 0x80;
        hi = b == 0xED ? 0x9F : 0xBF;
    } else if (b <= 0xF4) {
        need = 4;
        lo = b == 0xF0 ? 0x90 : 0x80;
        hi = b == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (need > len)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < need; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return need;
}

/* Returns the offset of the first invalid UTF-8 sequence, or len. */
static size_t find_invalid_utf8(const char *text, size_t len)
{
    const unsigned char *u = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        size_t step = utf8_sequence_length(u + i, len - i);
        if (step == 0)
            return i;
        i += step;
    }
    return len;
}

/* Reports invalid UTF-8 at byte offset `bad` as path:line:col, with col in
 * bytes. The source line is not quoted because it is not valid text. */
static void report_invalid_utf8(ir_diag *d, const char *path, const char *text, size_t bad)
{
    int line = 1;
    size_t line_start = 0;
    for (size_t i = 0; i < bad; i++) {
        if (text[i] == '\n') {
            line++;
            line_start = i + 1;
        }
    }
    ir_loc loc = {ir_diag_intern(d, path), line, (int)(bad - line_start + 1), 0};
    ir_diag_error(d, loc, "invalid UTF-8 (byte 0x%02X at byte offset %zu); the text must be UTF-8, so convert it "
                  "first, e.g. with iconv", (unsigned char)text[bad], bad);
}

/* ---- Tokenizer with file digest ---- */

rt_dataset_tokenizer *rt_dataset_tokenizer_load(const char *encoder_json_path, const char *vocab_bpe_path,
                                                ir_diag *d)
{
    uint8_t both[2 * RT_SHA256_BYTES];
    const char *paths[2] = {encoder_json_path, vocab_bpe_path};
    for (int i = 0; i < 2; i++) {
        size_t len;
        char *bytes = read_whole_file(paths[i], "tokenizer file", &len, d);
        if (!bytes)
            return NULL;
        rt_sha256(bytes, len, both + i * RT_SHA256_BYTES);
        free(bytes);
    }

    rt_dataset_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        ir_diag_file_error(d, encoder_json_path, "out of memory while loading the tokenizer");
        return NULL;
    }
    /* NOTE: a file replaced between the hashing above and this load would
     * give a digest that does not match the loaded tokenizer. */
    t->tok = rt_tok_load(encoder_json_path, vocab_bpe_path, d);
    if (!t->tok) {
        free(t);
        return NULL;
    }
    rt_sha256(both, sizeof both, t->files_sha256);
    return t;
}

void rt_dataset_tokenizer_free(rt_dataset_tokenizer *t)
{
    if (!t)
        return;
    rt_tok_free(t->tok);
    free(t);
}

/* ---- Token cache ---- */

#define CACHE_MAGIC "QDTOKCCH"
#define CACHE_VERSION 1u
#define CACHE_HEADER_BYTES 144u
#define CACHE_TEXT_DIGEST_AT 16
#define CACHE_TOKENIZER_DIGEST_AT 48
#define CACHE_COUNT_AT 80
#define CACHE_IDS_DIGEST_AT 88

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

char *rt_dataset_default_cache_dir(void)
{
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *base, *suffix;
    /* The XDG base directory spec says relative paths must be ignored. */
    if (xdg && xdg[0] == '/') {
        base = xdg;
        suffix = "/quadc";
    } else {
        base = getenv("HOME");
        suffix = "/.cache/quadc";
        if (!base || !base[0])
            return NULL;
    }
    size_t len = strlen(base) + strlen(suffix) + 1;
    char *dir = malloc(len);
    if (dir)
        snprintf(dir, len, "%s%s", base, suffix);
    return dir;
}

char *rt_dataset_cache_path(const char *cache_dir, const uint8_t text_sha256[RT_SHA256_BYTES],
                            const uint8_t tokenizer_sha256[RT_SHA256_BYTES])
{
    uint8_t both[2 * RT_SHA256_BYTES], key[RT_SHA256_BYTES];
    memcpy(both, text_sha256, RT_SHA256_BYTES);
    memcpy(both + RT_SHA256_BYTES, tokenizer_sha256, RT_SHA256_BYTES);
    rt_sha256(both, sizeof both, key);

    /* 128 bits of the key keep the name short and collisions negligible. */
    char hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    size_t len = strlen(cache_dir) + sizeof "/tokens-.bin" + 32;
    char *path = malloc(len);
    if (path)
        snprintf(path, len, "%s/tokens-%s.bin", cache_dir, hex);
    return path;
}

/* Creates dir and its missing parents. Returns 0, or -1 with errno set. */
static int make_directories(const char *dir)
{
    char *path = strdup(dir);
    if (!path)
        return -1;
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            int saved_errno = errno;
            free(path);
            errno = saved_errno;
            return -1;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    free(path);
    return 0;
}

/* Reads the cache file and returns its ids, or NULL when the file is
 * missing or does not match the digests, its size or its id digest. */
static int32_t *read_cache(const char *cache_path, const uint8_t text_sha256[RT_SHA256_BYTES],
                           const uint8_t tokenizer_sha256[RT_SHA256_BYTES], int vocab_size, size_t *n)
{
    FILE *f = fopen(cache_path, "rb");
    if (!f)
        return NULL;
    uint8_t header[CACHE_HEADER_BYTES];
    bool valid = fread(header, 1, sizeof header, f) == sizeof header &&
                 memcmp(header, CACHE_MAGIC, 8) == 0 && get_u32(header + 8) == CACHE_VERSION &&
                 get_u32(header + 12) == CACHE_HEADER_BYTES &&
                 memcmp(header + CACHE_TEXT_DIGEST_AT, text_sha256, RT_SHA256_BYTES) == 0 &&
                 memcmp(header + CACHE_TOKENIZER_DIGEST_AT, tokenizer_sha256, RT_SHA256_BYTES) == 0;
    uint64_t count = valid ? get_u64(header + CACHE_COUNT_AT) : 0;
    if (!valid || count == 0 || count > SIZE_MAX / 4) {
        fclose(f);
        return NULL;
    }

    size_t bytes = (size_t)count * 4;
    uint8_t *raw = malloc(bytes + 1);
    int32_t *ids = malloc(bytes);
    /* Reading one byte past the ids detects a file longer than its count. */
    valid = raw && ids && fread(raw, 1, bytes + 1, f) == bytes;
    fclose(f);
    if (valid) {
        uint8_t digest[RT_SHA256_BYTES];
        rt_sha256(raw, bytes, digest);
        valid = memcmp(digest, header + CACHE_IDS_DIGEST_AT, RT_SHA256_BYTES) == 0;
    }
    for (size_t i = 0; valid && i < count; i++) {
        uint32_t id = get_u32(raw + 4 * i);
        valid = id < (uint32_t)vocab_size;
        ids[i] = (int32_t)id;
    }
    free(raw);
    if (!valid) {
        free(ids);
        return NULL;
    }
    *n = (size_t)count;
    return ids;
}

static int write_all(int fd, const uint8_t *data, size_t len)
{
    while (len > 0) {
        ssize_t wrote = write(fd, data, len);
        if (wrote < 0 && errno == EINTR)
            continue;
        if (wrote <= 0)
            return -1;
        data += wrote;
        len -= (size_t)wrote;
    }
    return 0;
}

/* Writes bytes to a temporary file beside path, fsyncs it and renames it
 * over path, then fsyncs the directory so the rename survives a crash.
 * Returns NULL on success or the failed step, with errno set. */
static const char *write_file_atomically(const char *dir, const char *path, const uint8_t *bytes, size_t len)
{
    size_t temp_len = strlen(dir) + sizeof "/.tokens-XXXXXX.tmp";
    char *temp = malloc(temp_len);
    if (!temp)
        return "allocate";
    snprintf(temp, temp_len, "%s/.tokens-XXXXXX", dir);
    int fd = mkstemp(temp);
    if (fd < 0) {
        int saved_errno = errno;
        free(temp);
        errno = saved_errno;
        return "create a temporary file";
    }

    const char *failed = NULL;
    if (write_all(fd, bytes, len) != 0)
        failed = "write";
    else if (fsync(fd) != 0)
        failed = "fsync";
    int saved_errno = errno;
    if (close(fd) != 0 && !failed) {
        failed = "close";
        saved_errno = errno;
    }
    if (!failed && rename(temp, path) != 0) {
        failed = "rename";
        saved_errno = errno;
    }
    if (failed)
        unlink(temp);
    free(temp);
    if (failed) {
        errno = saved_errno;
        return failed;
    }

    int dir_fd = open(dir, O_RDONLY);
    if (dir_fd >= 0) {
        fsync(dir_fd); /* best effort: some file systems reject it */
        close(dir_fd);
    }
    return NULL;
}

/* Stores ids in the cache. A failure is only a note, because the ids are
 * still valid and the next load tokenizes again. */
static void write_cache(const char *cache_dir, const char *cache_path, const uint8_t text_sha256[RT_SHA256_BYTES],
                        const uint8_t tokenizer_sha256[RT_SHA256_BYTES], const int32_t *ids, size_t n,
                        ir_diag *d)
{
    const char *failed = NULL;
    uint8_t *bytes = NULL;
    if (n > (SIZE_MAX - CACHE_HEADER_BYTES) / 4) {
        failed = "size";
        errno = EFBIG;
    } else if (make_directories(cache_dir) != 0) {
        failed = "create the cache directory for";
    } else if (!(bytes = calloc(1, CACHE_HEADER_BYTES + 4 * n))) {
        failed = "allocate";
        errno = ENOMEM;
    }
    if (!failed) {
        uint8_t *payload = bytes + CACHE_HEADER_BYTES;
        for (size_t i = 0; i < n; i++)
            put_u32(payload + 4 * i, (uint32_t)ids[i]);
        memcpy(bytes, CACHE_MAGIC, 8);
        put_u32(bytes + 8, CACHE_VERSION);
        put_u32(bytes + 12, CACHE_HEADER_BYTES);
        memcpy(bytes + CACHE_TEXT_DIGEST_AT, text_sha256, RT_SHA256_BYTES);
        memcpy(bytes + CACHE_TOKENIZER_DIGEST_AT, tokenizer_sha256, RT_SHA256_BYTES);
        put_u64(bytes + CACHE_COUNT_AT, n);
        rt_sha256(payload, 4 * n, bytes + CACHE_IDS_DIGEST_AT);
        failed = write_file_atomically(cache_dir, cache_path, bytes, CACHE_HEADER_BYTES + 4 * n);
    }
    if (failed) {
        ir_loc loc = {ir_diag_intern(d, cache_path), 0, 0, 0};
        ir_diag_note(d, loc, "failed to %s the token cache file: %s; the text was tokenized without caching",
                     failed, strerror(errno));
    }
    free(bytes);
}

int rt_dataset_load_text(const char *path, const rt_dataset_tokenizer *tok, const char *cache_dir, int32_t **ids,
                         size_t *n, ir_diag *d)
{
    *ids = NULL;
    *n = 0;
    size_t len;
    char *text = read_whole_file(path, "text file", &len, d);
    if (!text)
        return -1;
    if (len == 0) {
        ir_diag_file_error(d, path, "the file contains no text; expected UTF-8 text to tokenize");
        free(text);
        return -1;
    }

    uint8_t text_sha256[RT_SHA256_BYTES];
    char *cache_path = NULL;
    if (cache_dir) {
        rt_sha256(text, len, text_sha256);
        cache_path = rt_dataset_cache_path(cache_dir, text_sha256, tok->files_sha256);
        if (!cache_path) {
            ir_diag_file_error(d, path, "out of memory while naming the token cache file");
            free(text);
            return -1;
        }
        *ids = read_cache(cache_path, text_sha256, tok->files_sha256, rt_tok_vocab_size(tok->tok), n);
        if (*ids) {
            free(cache_path);
            free(text);
            return 0;
        }
    }

    size_t bad = find_invalid_utf8(text, len);
    int status = -1;
    if (bad < len)
        report_invalid_utf8(d, path, text, bad);
    else
        status = rt_tok_encode(tok->tok, text, len, path, ids, n, d);
    if (status == 0 && cache_path)
        write_cache(cache_dir, cache_path, text_sha256, tok->files_sha256, *ids, *n, d);
    free(cache_path);
    free(text);
    return status;
}

/* ---- LAMBADA ---- */

static const char *json_type_name(const cJSON *item)
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
    return "an unknown value";
}

/* Splits text at its last space and tokenizes both parts into ex.
 * Returns 0, or -1 after reporting at loc. */
static int split_lambada_text(rt_tokenizer *tok, const char *text, ir_loc loc, rt_lambada_example *ex,
                              ir_diag *d)
{
    size_t len = strlen(text);
    if (len == 0) {
        ir_diag_error(d, loc, "\"text\" is empty; expected a passage whose last word is the target");
        return -1;
    }
    size_t bad = find_invalid_utf8(text, len);
    if (bad < len) {
        ir_diag_error(d, loc, "\"text\" is not valid UTF-8 at byte %zu of the string (byte 0x%02X)", bad,
                      (unsigned char)text[bad]);
        return -1;
    }
    size_t space = len;
    while (space > 0 && text[space - 1] != ' ')
        space--;
    if (space == 0) {
        ir_diag_error(d, loc, "\"text\" contains no space, so it has no context before its last word");
        return -1;
    }
    space--;
    if (space == len - 1) {
        ir_diag_error(d, loc, "\"text\" ends with a space, so its last word is empty");
        return -1;
    }

    int32_t *context = NULL, *target = NULL;
    size_t n_context = 0, n_target = 0;
    if (rt_tok_encode(tok, text, space, loc.file, &context, &n_context, d) != 0)
        return -1;
    if (rt_tok_encode(tok, text + space, len - space, loc.file, &target, &n_target, d) != 0) {
        free(context);
        return -1;
    }
    /* lm-evaluation-harness scores an empty context after end-of-text. */
    size_t n_prefix = n_context ? n_context : 1;
    ex->tokens = malloc((n_prefix + n_target) * sizeof *ex->tokens);
    if (ex->tokens) {
        if (n_context)
            memcpy(ex->tokens, context, n_context * sizeof *context);
        else
            ex->tokens[0] = rt_tok_eot(tok);
        memcpy(ex->tokens + n_prefix, target, n_target * sizeof *target);
        ex->n_context = n_prefix;
        ex->n_target = n_target;
    } else {
        ir_diag_error(d, loc, "out of memory while tokenizing the passage");
    }
    free(context);
    free(target);
    return ex->tokens ? 0 : -1;
}

/* Parses one non-blank line into ex. Returns 0, or -1 after reporting. */
static int parse_lambada_line(rt_tokenizer *tok, char *line, size_t line_len, ir_loc loc, rt_lambada_example *ex,
                              ir_diag *d)
{
    const char *nul = memchr(line, '\0', line_len);
    if (nul) {
        loc.col = (int)(nul - line) + 1;
        ir_diag_error(d, loc, "the line contains a NUL byte; expected one JSON object per line");
        return -1;
    }
    /* cJSON checks for trailing garbage only up to a NUL inside the given
     * length, so the terminator that replaced '\n' is passed along. */
    const char *error_at = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(line, line_len + 1, &error_at, 1);
    if (!root) {
        loc.col = error_at && error_at >= line && error_at <= line + line_len ? (int)(error_at - line) + 1 : 1;
        ir_diag_error(d, loc, "invalid JSON; expected an object such as {\"text\": \"...\"}");
        return -1;
    }

    int status = -1;
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text");
    if (!cJSON_IsObject(root))
        ir_diag_error(d, loc, "the line is %s; expected an object such as {\"text\": \"...\"}",
                      json_type_name(root));
    else if (!text)
        ir_diag_error(d, loc, "the object has no \"text\" member; expected {\"text\": \"...\"}");
    else if (!cJSON_IsString(text))
        ir_diag_error(d, loc, "\"text\" is %s; expected a string", json_type_name(text));
    else
        status = split_lambada_text(tok, text->valuestring, loc, ex, d);
    cJSON_Delete(root);
    return status;
}

static bool is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return false;
    return true;
}

int rt_lambada_load(const char *path, rt_tokenizer *tok, rt_lambada *set, ir_diag *d)
{
    set->examples = NULL;
    set->count = 0;
    size_t len;
    char *text = read_whole_file(path, "LAMBADA file", &len, d);
    if (!text)
        return -1;

    const char *file = ir_diag_intern(d, path);
    size_t cap = 0;
    int errors = 0;
    bool out_of_memory = false;
    char *line = text;
    for (int line_no = 1; line < text + len && !out_of_memory; line_no++) {
        char *newline = memchr(line, '\n', (size_t)(text + len - line));
        char *end = newline ? newline : text + len;
        *end = '\0';
        size_t line_len = (size_t)(end - line);
        char *next = end + 1;
        if (is_blank(line, line_len)) {
            line = next;
            continue;
        }

        if (set->count == cap) {
            size_t grown_cap = cap ? cap * 2 : 1024;
            rt_lambada_example *grown = realloc(set->examples, grown_cap * sizeof *grown);
            if (!grown) {
                out_of_memory = true;
                break;
            }
            set->examples = grown;
            cap = grown_cap;
        }
        ir_loc loc = {file, line_no, 1, 0};
        rt_lambada_example *ex = &set->examples[set->count];
        memset(ex, 0, sizeof *ex);
        ex->line = line_no;
        if (parse_lambada_line(tok, line, line_len, loc, ex, d) == 0)
            set->count++;
        else
            errors++;
        line = next;
    }
    free(text);

    if (out_of_memory)
        ir_diag_file_error(d, path, "out of memory after %zu examples", set->count);
    else if (errors == 0 && set->count == 0)
        ir_diag_file_error(d, path, "the file contains no examples; expected one {\"text\": \"...\"} object per line");
    if (out_of_memory || errors > 0 || set->count == 0) {
        rt_lambada_free(set);
        return -1;
    }
    return 0;
}

void rt_lambada_free(rt_lambada *set)
{
    for (size_t i = 0; i < set->count; i++)
        free(set->examples[i].tokens);
    free(set->examples);
    set->examples = NULL;
    set->count = 0;
}
