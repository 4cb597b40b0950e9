/* Tests for runtime/dataset: SHA-256 test vectors, the token cache (hits,
 * invalidation by text or tokenizer change, corrupt and truncated files,
 * unwritable directories), text-file errors and LAMBADA JSONL parsing.
 * Uses the GPT-2 tokenizer files in data/tokenizer, so it runs from the
 * repository root, as ctest does. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "ir/diag.h"
#include "runtime/dataset.h"
#include "runtime/tokenizer.h"

#define ENCODER_JSON "data/tokenizer/encoder.json"
#define VOCAB_BPE "data/tokenizer/vocab.bpe"

static char temp_root[] = "/tmp/quadc-test-dataset-XXXXXX";

static char *temp_path(const char *name)
{
    size_t len = strlen(temp_root) + strlen(name) + 2;
    char *path = malloc(len);
    snprintf(path, len, "%s/%s", temp_root, name);
    return path;
}

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot create %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fwrite(data, 1, len, f);
    fclose(f);
}

static char *read_file(const char *path, size_t *len)
{
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)size + 1);
    *len = fread(data, 1, (size_t)size, f);
    fclose(f);
    return data;
}

static void copy_file(const char *from, const char *to)
{
    size_t len;
    char *data = read_file(from, &len);
    if (!data) {
        fprintf(stderr, "cannot read %s\n", from);
        exit(1);
    }
    write_file(to, data, len);
    free(data);
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static ino_t inode_of(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* Compares a possibly NULL string with the expected one. */
static bool same_string(const char *actual, const char *expected)
{
    return actual != NULL && strcmp(actual, expected) == 0;
}

/* Checks ids[0..n) against the expected ids, one check per id. */
static void check_ids(const int32_t *ids, size_t n, const int32_t *expected, size_t expected_n)
{
    CHECK_EQ_INT(n, expected_n);
    CHECK(ids != NULL);
    for (size_t i = 0; ids && i < n && i < expected_n; i++)
        CHECK_EQ_INT(ids[i], expected[i]);
}

static void hex_digest(const char *data, size_t len, char out[65])
{
    uint8_t digest[RT_SHA256_BYTES];
    rt_sha256(data, len, digest);
    for (int i = 0; i < RT_SHA256_BYTES; i++)
        snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

static void test_sha256_vectors(void)
{
    static const struct {
        const char *input;
        size_t repeat_a; /* when input is NULL: a string of this many 'a' */
        const char *hex;
    } cases[] = {
        {"", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", 0, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 0,
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {NULL, 55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {NULL, 56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {NULL, 63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {NULL, 64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {NULL, 65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
        {NULL, 119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
        {NULL, 120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
        {NULL, 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char hex[65];
        if (cases[i].input) {
            hex_digest(cases[i].input, strlen(cases[i].input), hex);
        } else {
            char *as = malloc(cases[i].repeat_a);
            memset(as, 'a', cases[i].repeat_a);
            hex_digest(as, cases[i].repeat_a, hex);
            free(as);
        }
        if (strcmp(hex, cases[i].hex) != 0)
            fprintf(stderr, "SHA-256 case %zu: got %s\n", i, hex);
        CHECK(strcmp(hex, cases[i].hex) == 0);
    }
}

static void test_default_cache_dir(void)
{
    char *saved_xdg = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    char *saved_home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;

    setenv("XDG_CACHE_HOME", "/var/cache-test", 1);
    setenv("HOME", "/home/someone", 1);
    char *dir = rt_dataset_default_cache_dir();
    CHECK(same_string(dir, "/var/cache-test/quadc"));
    free(dir);

    setenv("XDG_CACHE_HOME", "relative/cache", 1);
    dir = rt_dataset_default_cache_dir();
    CHECK(same_string(dir, "/home/someone/.cache/quadc"));
    free(dir);

    unsetenv("XDG_CACHE_HOME");
    dir = rt_dataset_default_cache_dir();
    CHECK(same_string(dir, "/home/someone/.cache/quadc"));
    free(dir);

    unsetenv("HOME");
    CHECK(rt_dataset_default_cache_dir() == NULL);

    if (saved_xdg)
        setenv("XDG_CACHE_HOME", saved_xdg, 1);
    if (saved_home)
        setenv("HOME", saved_home, 1);
    free(saved_xdg);
    free(saved_home);
}

/* Returns the cache file path for the current content of text_path. */
static char *cache_path_for(const char *cache_dir, const char *text_path, const rt_dataset_tokenizer *tok)
{
    size_t len;
    char *text = read_file(text_path, &len);
    uint8_t digest[RT_SHA256_BYTES];
    rt_sha256(text, len, digest);
    free(text);
    return rt_dataset_cache_path(cache_dir, digest, tok->files_sha256);
}

static void test_cache_hit_and_format(const rt_dataset_tokenizer *tok)
{
    char *text_path = temp_path("hello.txt");
    char *cache_dir = temp_path("cache/nested");
    write_file(text_path, "Hello world", 11);
    fx_capture c;
    fx_capture_open(&c);

    int32_t *ids = NULL;
    size_t n = 0;
    static const int32_t hello_world[] = {15496, 995};
    CHECK_EQ_INT(rt_dataset_load_text(text_path, tok, cache_dir, &ids, &n, c.diag), 0);
    check_ids(ids, n, hello_world, 2);
    free(ids);

    char *cache_path = cache_path_for(cache_dir, text_path, tok);
    CHECK(file_exists(cache_path));
    size_t cache_len = 0;
    char *cache = read_file(cache_path, &cache_len);
    CHECK_EQ_INT(cache_len, 144 + 2 * 4);
    CHECK(cache != NULL);
    if (cache && cache_len >= 8)
        CHECK(memcmp(cache, "QDTOKCCH", 8) == 0);

    /* A second load reads the file and does not replace it. */
    ino_t inode = inode_of(cache_path);
    CHECK_EQ_INT(rt_dataset_load_text(text_path, tok, cache_dir, &ids, &n, c.diag), 0);
    check_ids(ids, n, hello_world, 2);
    CHECK(inode_of(cache_path) == inode);
    free(ids);

    /* Rewriting an id and its digest as dataset.h describes proves that
     * the loader returns the cached ids rather than tokenizing again. */
    uint8_t *payload = (uint8_t *)cache + 144;
    payload[0] = 7;
    payload[1] = payload[2] = payload[3] = 0;
    rt_sha256(payload, 8, (uint8_t *)cache + 88);
    write_file(cache_path, cache, cache_len);
    CHECK_EQ_INT(rt_dataset_load_text(text_path, tok, cache_dir, &ids, &n, c.diag), 0);
    static const int32_t edited[] = {7, 995};
    check_ids(ids, n, edited, 2);
    free(ids);

    CHECK_EQ_INT(ir_diag_error_count(c.diag), 0);
    CHECK(strcmp(fx_capture_text(&c), "") == 0);
    fx_capture_close(&c);
    free(cache);
    free(cache_path);
    free(cache_dir);
    free(text_path);
}

static void test_cache_text_change(const rt_dataset_tokenizer *tok)
{
    char *text_path = temp_path("change.txt");
    char *cache_dir = temp_path("cache");
    fx_capture c;
    fx_capture_open(&c);

    write_file(text_path, "Hello world", 11);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_EQ_INT(rt_dataset_load_text(text_path, tok, cache_dir, &ids, &n, c.diag), 0);
    free(ids);
    char *old_cache = cache_path_for(cache_dir, text_path, tok);

    write_file(text_path, "Hello", 5);
    char *new_cache = cache_path_for(cache_dir, text_path, tok);
    CHECK(strcmp(old_cache, new_cache) != 0);
    CHECK(!file_exists(new_cache));
    CHECK_EQ_INT(rt_dataset_load_text(text_path, tok, cache_dir, &ids, &n, c.diag), 0);
    static const int32_t hello[] = {15496};
    check_ids(ids, n, hello, 1);
    CHECK(file_exists(new_cache));
    free(ids);

    CHECK_EQ_INT(ir_diag_error_count(c.diag), 0);
    fx_capture_close(&c);
    free(old_cache);
    free(new_cache);
    free(cache_dir);
    free(text_path);
}

static void test_cache_tokenizer_change(const rt_dataset_tokenizer *tok)
{
    char *text_path = temp_path("tokenizer-change.txt");
    char *cache_dir = temp_path("cache");
    char *encoder_copy = temp_path("encoder.json");
    char *vocab_copy = temp_path("vocab.bpe");
    static const char text[] = "The quick brown fox jumps over the lazy dog.\n";
    write_file(text_path, text, strlen(text));
    copy_file(ENCODER_JSON, encoder_copy);
    copy_file(VOCAB_BPE, vocab_copy);
    fx_capture c;
    fx_capture_open(&c);

    rt_dataset_tokenizer *copy = rt_dataset_tokenizer_load(encoder_copy, vocab_copy, c.diag);
    CHECK(copy != NULL);
    if (!copy) {
        fx_capture_close(&c);
        return;
    }
    CHECK(memcmp(copy->files_sha256, tok->files_sha256, RT_SHA256_BYTES) == 0);
    int32_t *ids = NULL, *again = NULL;
    size_t n = 0, n_again = 0;
    CHECK_EQ_INT(rt_dataset_load_text(text_path, copy, cache_dir, &ids, &n, c.diag), 0);
    char *old_cache = cache_path_for(cache_dir, text_path, copy);
    CHECK(file_exists(old_cache));
    rt_dataset_tokenizer_free(copy);

    /* Whitespace after the JSON object changes the file's bytes but not the
     * vocabulary, so the ids stay the same while the cache key changes. */
    FILE *f = fopen(encoder_copy, "ab");
    fputs(" \n", f);
    fclose(f);
    copy = rt_dataset_tokenizer_load(encoder_copy, vocab_copy, c.diag);
    CHECK(copy != NULL);
    if (copy) {
        CHECK(memcmp(copy->files_sha256, tok->files_sha256, RT_SHA256_BYTES) != 0);
        char *new_cache = cache_path_for(cache_dir, text_path, copy);
        CHECK(strcmp(old_cache, new_cache) != 0);
        CHECK(!file_exists(new_cache));
        CHECK_EQ_INT(rt_dataset_load_text(text_path, copy, cache_dir, &again, &n_again, c.diag), 0);
        CHECK(file_exists(new_cache));
        check_ids(again, n_again, ids, n);
        free(again);
        free(new_cache);
        rt_dataset_tokenizer_free(copy);
    }

    CHECK_EQ_INT(ir_diag_error_count(c.diag), 0);
    fx_capture_close(&c);
    free(ids);
    free(old_cache);
    free(vocab_copy);
    free(encoder_copy);
    free(cache_dir);
    free(text_path);
}

/* Damages the cache file with `damage` and checks that the next load
 * returns the same ids and leaves a valid cache file behind. */
static void check_rebuilt_after(const rt_dataset_tokenizer *tok, const char *name,
                                void (*damage)(const char *cache_path))
{
    char *text_path = temp_path("rebuild.txt");
    char *cache_dir = temp_path("cache");
    static const char text[] = "Tokens are cached once\nand read back later.\n";
    write_file(text_path, text, strlen(text));
    fx_capture c;
    fx_capture_open(&c);

    int32_t *ids = NULL, *again = NULL;
    size_t n = 0, n_again = 0;
    CHECK_EQ_INT(rt_dataset_load_text(text_path, tok, cache_dir, &ids, &n, c.diag), 0);
    char *cache_path = cache_path_for(cache_dir, text_path, tok);
    size_t good_len = 0;
    char *good = read_file(cache_path, &good_len);

    damage(cache_path);
    CHECK_EQ_INT(rt_dataset_load_text(text_path, tok, cache_dir, &again, &n_again, c.diag), 0);
    check_ids(again, n_again, ids, n);
    size_t rebuilt_len = 0;
    char *rebuilt = read_file(cache_path, &rebuilt_len);
    CHECK_EQ_INT(rebuilt_len, good_len);
    CHECK(good != NULL);
    CHECK(rebuilt != NULL);
    if (good && rebuilt && rebuilt_len == good_len)
        CHECK(memcmp(rebuilt, good, good_len) == 0);
    CHECK_EQ_INT(ir_diag_error_count(c.diag), 0);
    if (ir_diag_error_count(c.diag) != 0)
        fprintf(stderr, "damage '%s': %s", name, fx_capture_text(&c));

    fx_capture_close(&c);
    free(rebuilt);
    free(good);
    free(again);
    free(ids);
    free(cache_path);
    free(cache_dir);
    free(text_path);
}

static void flip_id_byte(const char *cache_path)
{
    size_t len;
    char *data = read_file(cache_path, &len);
    CHECK(len > 144);
    if (!data || len <= 144)
        return;
    data[len - 1] ^= 0x01;
    write_file(cache_path, data, len);
    free(data);
}

static void truncate_ids(const char *cache_path)
{
    size_t len;
    char *data = read_file(cache_path, &len);
    CHECK(len > 144);
    if (!data || len <= 144)
        return;
    write_file(cache_path, data, len - 3);
    free(data);
}

static void truncate_header(const char *cache_path)
{
    write_file(cache_path, "QDTOKCCH", 8);
}

static void append_byte(const char *cache_path)
{
    FILE *f = fopen(cache_path, "ab");
    fputc(0, f);
    fclose(f);
}

static void bump_version(const char *cache_path)
{
    size_t len;
    char *data = read_file(cache_path, &len);
    CHECK(len > 144);
    if (!data || len <= 144)
        return;
    data[8] = 2;
    write_file(cache_path, data, len);
    free(data);
}

static void empty_file(const char *cache_path)
{
    write_file(cache_path, "", 0);
}

static void test_cache_rebuilds_damaged_files(const rt_dataset_tokenizer *tok)
{
    check_rebuilt_after(tok, "flipped id byte", flip_id_byte);
    check_rebuilt_after(tok, "truncated ids", truncate_ids);
    check_rebuilt_after(tok, "truncated header", truncate_header);
    check_rebuilt_after(tok, "extra byte", append_byte);
    check_rebuilt_after(tok, "other version", bump_version);
    check_rebuilt_after(tok, "empty file", empty_file);
}

static void test_cache_disabled_and_unwritable(const rt_dataset_tokenizer *tok)
{
    char *text_path = temp_path("nocache.txt");
    write_file(text_path, "Hello world", 11);
    fx_capture c;
    fx_capture_open(&c);

    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_EQ_INT(rt_dataset_load_text(text_path, tok, NULL, &ids, &n, c.diag), 0);
    CHECK_EQ_INT(n, 2);
    free(ids);
    CHECK(strcmp(fx_capture_text(&c), "") == 0);

    /* A cache directory below a regular file cannot be created, but the
     * ids still come back and a note names the cache file. */
    char *bad_dir = temp_path("nocache.txt/cache");
    CHECK_EQ_INT(rt_dataset_load_text(text_path, tok, bad_dir, &ids, &n, c.diag), 0);
    static const int32_t hello_world[] = {15496, 995};
    check_ids(ids, n, hello_world, 2);
    free(ids);
    CHECK_EQ_INT(ir_diag_error_count(c.diag), 0);
    const char *out = fx_capture_text(&c);
    CHECK(strstr(out, "nocache.txt/cache/tokens-") != NULL);
    CHECK(strstr(out, ": note: failed to create the cache directory for the token cache file: Not a directory; "
                      "the text was tokenized without caching") != NULL);

    fx_capture_close(&c);
    free(bad_dir);
    free(text_path);
}

static void test_text_errors(const rt_dataset_tokenizer *tok)
{
    char *missing = temp_path("missing.txt");
    char *empty = temp_path("empty.txt");
    char *bad_utf8 = temp_path("latin1.txt");
    write_file(empty, "", 0);
    write_file(bad_utf8, "first line\nna\xefve\n", 17);
    char *cache_dir = temp_path("cache");

    int32_t *ids = NULL;
    size_t n = 0;
    char expected[512];
    fx_capture c;

    fx_capture_open(&c);
    CHECK_EQ_INT(rt_dataset_load_text(missing, tok, cache_dir, &ids, &n, c.diag), -1);
    CHECK(ids == NULL);
    CHECK_EQ_INT(n, 0);
    snprintf(expected, sizeof expected, "%s: error: failed to open the text file: No such file or directory\n",
             missing);
    CHECK(strcmp(fx_capture_text(&c), expected) == 0);
    fx_capture_close(&c);

    fx_capture_open(&c);
    CHECK_EQ_INT(rt_dataset_load_text(empty, tok, cache_dir, &ids, &n, c.diag), -1);
    snprintf(expected, sizeof expected, "%s: error: the file contains no text; expected UTF-8 text to tokenize\n",
             empty);
    CHECK(strcmp(fx_capture_text(&c), expected) == 0);
    fx_capture_close(&c);

    fx_capture_open(&c);
    CHECK_EQ_INT(rt_dataset_load_text(bad_utf8, tok, cache_dir, &ids, &n, c.diag), -1);
    CHECK(ids == NULL);
    snprintf(expected, sizeof expected, "%s:2:3: error: invalid UTF-8 (byte 0xEF at byte offset 13); the text "
             "must be UTF-8, so convert it first, e.g. with iconv\n", bad_utf8);
    CHECK(strcmp(fx_capture_text(&c), expected) == 0);
    if (strcmp(fx_capture_text(&c), expected) != 0)
        fprintf(stderr, "got: %s", fx_capture_text(&c));
    fx_capture_close(&c);

    free(cache_dir);
    free(bad_utf8);
    free(empty);
    free(missing);
}

/* Encodes text with the tokenizer for comparison with the loader. */
static size_t encode(rt_tokenizer *tok, const char *text, int32_t **ids)
{
    size_t n = 0;
    rt_tok_encode(tok, text, strlen(text), NULL, ids, &n, NULL);
    return n;
}

static void test_lambada_split(const rt_dataset_tokenizer *tok)
{
    char *path = temp_path("lambada-good.jsonl");
    static const char jsonl[] =
        "{\"text\": \"She opened the door and saw her brother\"}\n"
        "\n"
        "{\"id\": 7, \"text\": \"He said \\\"hi\\\"\\nand left  quietly\"}\r\n"
        "   \n"
        "{\"text\": \" alone\"}";
    write_file(path, jsonl, strlen(jsonl));
    fx_capture c;
    fx_capture_open(&c);

    rt_lambada set;
    CHECK_EQ_INT(rt_lambada_load(path, tok->tok, &set, c.diag), 0);
    CHECK(strcmp(fx_capture_text(&c), "") == 0);
    CHECK_EQ_INT(set.count, 3);
    if (set.count == 3) {
        static const struct {
            int line;
            const char *context; /* NULL: the end-of-text token */
            const char *target;
        } expected[] = {
            {1, "She opened the door and saw her", " brother"},
            {3, "He said \"hi\"\nand left ", " quietly"},
            {5, NULL, " alone"},
        };
        for (int i = 0; i < 3; i++) {
            const rt_lambada_example *ex = &set.examples[i];
            int32_t *context = NULL, *target = NULL;
            size_t n_context = 1, n_target = encode(tok->tok, expected[i].target, &target);
            if (expected[i].context)
                n_context = encode(tok->tok, expected[i].context, &context);
            CHECK_EQ_INT(ex->line, expected[i].line);
            CHECK_EQ_INT(ex->n_context, n_context);
            CHECK_EQ_INT(ex->n_target, n_target);
            if (ex->n_context == n_context && ex->n_target == n_target) {
                if (context)
                    CHECK(memcmp(ex->tokens, context, n_context * sizeof *context) == 0);
                else
                    CHECK_EQ_INT(ex->tokens[0], rt_tok_eot(tok->tok));
                CHECK(memcmp(ex->tokens + n_context, target, n_target * sizeof *target) == 0);
            }
            free(context);
            free(target);
        }
        /* " brother" is one GPT-2 token. */
        CHECK_EQ_INT(set.examples[0].n_target, 1);
    }
    rt_lambada_free(&set);
    CHECK_EQ_INT(set.count, 0);
    fx_capture_close(&c);
    free(path);
}

static void test_lambada_errors(const rt_dataset_tokenizer *tok)
{
    char *path = temp_path("lambada-bad.jsonl");
    static const char jsonl[] = "{\"text\": \"a good line\"}\n"
                                "{\"text\": 5}\n"
                                "{\"txt\": \"a b\"}\n"
                                "[1, 2]\n"
                                "{\"text\": \"a b\"\n"
                                "{\"text\": \"\"}\n"
                                "{\"text\": \"nospace\"}\n"
                                "{\"text\": \"ends with \"}\n"
                                "{\"text\": \"a b\"} x\n"
                                "{\"text\": \"caf\xe9 au lait\"}\n"
                                "{\"text\": null}\n";
    write_file(path, jsonl, strlen(jsonl));
    fx_capture c;
    fx_capture_open(&c);

    rt_lambada set;
    CHECK_EQ_INT(rt_lambada_load(path, tok->tok, &set, c.diag), -1);
    CHECK_EQ_INT(set.count, 0);
    CHECK(set.examples == NULL);
    CHECK_EQ_INT(ir_diag_error_count(c.diag), 10);

    static const char *const expected_lines[] = {
        ":2:1: error: \"text\" is a number; expected a string\n",
        ":3:1: error: the object has no \"text\" member; expected {\"text\": \"...\"}\n",
        ":4:1: error: the line is an array; expected an object such as {\"text\": \"...\"}\n",
        ":5:15: error: invalid JSON; expected an object such as {\"text\": \"...\"}\n",
        ":6:1: error: \"text\" is empty; expected a passage whose last word is the target\n",
        ":7:1: error: \"text\" contains no space, so it has no context before its last word\n",
        ":8:1: error: \"text\" ends with a space, so its last word is empty\n",
        ":9:17: error: invalid JSON; expected an object such as {\"text\": \"...\"}\n",
        ":10:1: error: \"text\" is not valid UTF-8 at byte 3 of the string (byte 0xE9)\n",
        ":11:1: error: \"text\" is null; expected a string\n",
    };
    char expected[2048] = "";
    for (size_t i = 0; i < sizeof expected_lines / sizeof expected_lines[0]; i++) {
        strcat(expected, path);
        strcat(expected, expected_lines[i]);
    }
    CHECK(strcmp(fx_capture_text(&c), expected) == 0);
    if (strcmp(fx_capture_text(&c), expected) != 0)
        fprintf(stderr, "got:\n%s", fx_capture_text(&c));
    fx_capture_close(&c);

    /* A file of blank lines has no examples. */
    write_file(path, "\n  \n", 4);
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_lambada_load(path, tok->tok, &set, c.diag), -1);
    char message[512];
    snprintf(message, sizeof message, "%s: error: the file contains no examples; expected one {\"text\": \"...\"} "
             "object per line\n", path);
    CHECK(strcmp(fx_capture_text(&c), message) == 0);
    fx_capture_close(&c);

    free(path);
}

/* The shipped evaluation files: the WikiText-2 raw test split encodes to
 * 286,221 ids, the same count as the npm package gpt-3-encoder 1.1.4
 * gives, and LAMBADA has 5,153 passages. */
static void test_shipped_eval_files(const rt_dataset_tokenizer *tok)
{
    ir_diag *d = ir_diag_new(stderr);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_EQ_INT(rt_dataset_load_text("data/eval/wiki.test.raw", tok, NULL, &ids, &n, d), 0);
    static const int32_t first_ids[] = {220, 198, 796}; /* " ", "\n", " =" */
    check_ids(ids, n < 3 ? n : 3, first_ids, 3);
    CHECK_EQ_INT(n, 286221);
    free(ids);

    rt_lambada set;
    CHECK_EQ_INT(rt_lambada_load("data/eval/lambada_test.jsonl", tok->tok, &set, d), 0);
    CHECK_EQ_INT(set.count, 5153);
    size_t targets = 0;
    for (size_t i = 0; i < set.count; i++)
        targets += set.examples[i].n_target;
    CHECK(targets >= set.count);
    rt_lambada_free(&set);
    CHECK_EQ_INT(ir_diag_error_count(d), 0);
    ir_diag_free(d);
}

static void remove_tree(const char *dir)
{
    char command[512];
    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    if (system(command) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

int main(void)
{
    test_sha256_vectors();
    test_default_cache_dir();

    if (!mkdtemp(temp_root)) {
        fprintf(stderr, "mkdtemp failed: %s\n", strerror(errno));
        return 1;
    }
    ir_diag *d = ir_diag_new(stderr);
    rt_dataset_tokenizer *tok = rt_dataset_tokenizer_load(ENCODER_JSON, VOCAB_BPE, d);
    CHECK(tok != NULL);
    if (tok) {
        test_cache_hit_and_format(tok);
        test_cache_text_change(tok);
        test_cache_tokenizer_change(tok);
        test_cache_rebuilds_damaged_files(tok);
        test_cache_disabled_and_unwritable(tok);
        test_text_errors(tok);
        test_lambada_split(tok);
        test_lambada_errors(tok);
        test_shipped_eval_files(tok);
        rt_dataset_tokenizer_free(tok);
    }
    ir_diag_free(d);
    remove_tree(temp_root);
    return check_finish();
}
