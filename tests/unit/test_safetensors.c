/* Tests for the safetensors reader and writer and GPT-2 name normalization:
 * round trips, hand-made F16/BF16 files, byte-identical rewrites, and one
 * crafted file for each rejection with its exact diagnostic. */
#include "runtime/safetensors.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"

static char temp_dir[64];

static void temp_path(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", temp_dir, name);
}

/* ---------------------------------------------------------------------- */
/* Weight sets and files                                                  */
/* ---------------------------------------------------------------------- */

static uint32_t random_state = 12345;

static void add_tensor(rt_weights *w, const char *prefix, const char *name, rt_tensor *t)
{
    char full[128];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    rt_weights_set(w, full, t);
}

/* A random GPT-2 weight set in Hugging Face naming and order with L=2, C=8,
 * V=11, maxT=6; every name starts with `prefix`. */
static rt_weights *make_gpt2(const char *prefix)
{
    const int layers = 2, channels = 8, vocab = 11, positions = 6;
    rt_weights *w = rt_weights_new();
    add_tensor(w, prefix, "wte.weight", fx_lcg32_tensor(&random_state, 2, vocab, channels));
    add_tensor(w, prefix, "wpe.weight", fx_lcg32_tensor(&random_state, 2, positions, channels));
    for (int i = 0; i < layers; i++) {
        char name[64];
#define LAYER(suffix, rank, d0, d1)                                       \
        snprintf(name, sizeof name, "h.%d." suffix, i);                   \
        add_tensor(w, prefix, name, fx_lcg32_tensor(&random_state, rank, d0, d1))
        LAYER("ln_1.weight", 1, channels, 0);
        LAYER("ln_1.bias", 1, channels, 0);
        LAYER("attn.c_attn.weight", 2, channels, 3 * channels);
        LAYER("attn.c_attn.bias", 1, 3 * channels, 0);
        LAYER("attn.c_proj.weight", 2, channels, channels);
        LAYER("attn.c_proj.bias", 1, channels, 0);
        LAYER("ln_2.weight", 1, channels, 0);
        LAYER("ln_2.bias", 1, channels, 0);
        LAYER("mlp.c_fc.weight", 2, channels, 4 * channels);
        LAYER("mlp.c_fc.bias", 1, 4 * channels, 0);
        LAYER("mlp.c_proj.weight", 2, 4 * channels, channels);
        LAYER("mlp.c_proj.bias", 1, channels, 0);
#undef LAYER
    }
    add_tensor(w, prefix, "ln_f.weight", fx_lcg32_tensor(&random_state, 1, channels, 0));
    add_tensor(w, prefix, "ln_f.bias", fx_lcg32_tensor(&random_state, 1, channels, 0));
    return w;
}

/* Checks that b has a's tensors in a's order and a's metadata. */
static void check_same_weights(const char *label, const rt_weights *a, const rt_weights *b)
{
    CHECK_EQ_INT(a->count, b->count);
    for (int i = 0; i < a->count && i < b->count; i++) {
        if (strcmp(a->names[i], b->names[i]) != 0 || !fx_same_tensor(a->tensors[i], b->tensors[i])) {
            fprintf(stderr, "%s: tensor %d differs ('%s' vs '%s')\n", label, i, a->names[i],
                    b->names[i]);
            check_failed++;
        } else {
            check_passed++;
        }
    }
    CHECK_EQ_INT(a->nmeta, b->nmeta);
    for (int i = 0; i < a->nmeta && i < b->nmeta; i++) {
        check_text(label, b->meta_keys[i], a->meta_keys[i]);
        check_text(label, b->meta_values[i], a->meta_values[i]);
    }
}

static void write_bytes(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, size, f);
    fclose(f);
}

/* Writes a safetensors file from a header length field, header text and
 * data. The length field need not match the text, to craft bad files. */
static void write_safetensors_with_length(const char *path, uint64_t header_length,
                                          const char *header, const void *data, size_t data_size)
{
    size_t text_size = strlen(header);
    size_t size = 8 + text_size + data_size;
    unsigned char *bytes = malloc(size);
    for (int i = 0; i < 8; i++)
        bytes[i] = (unsigned char)(header_length >> (8 * i));
    memcpy(bytes + 8, header, text_size);
    if (data_size)
        memcpy(bytes + 8 + text_size, data, data_size);
    write_bytes(path, bytes, size);
    free(bytes);
}

static void write_safetensors_raw(const char *path, const char *header, const void *data,
                                  size_t data_size)
{
    write_safetensors_with_length(path, strlen(header), header, data, data_size);
}

/* ---------------------------------------------------------------------- */
/* Round trips                                                            */
/* ---------------------------------------------------------------------- */

static void test_gpt2_round_trip(void)
{
    char path[128], rewritten[128];
    temp_path(path, sizeof path, "gpt2.safetensors");
    temp_path(rewritten, sizeof rewritten, "gpt2_rewritten.safetensors");
    rt_weights *w = make_gpt2("");
    rt_weights_set_meta(w, "format", "pt");

    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_safetensors_write(path, w, c.diag), 0);
    rt_weights *loaded = rt_safetensors_read(path, c.diag);
    CHECK(loaded != NULL);
    if (loaded) {
        check_same_weights("gpt2 round trip", w, loaded);
        CHECK_EQ_INT(rt_safetensors_write(rewritten, loaded, c.diag), 0);
    }
    check_text("gpt2 round trip diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);

    size_t size_a = 0, size_b = 0;
    unsigned char *a = fx_read_bytes(path, &size_a);
    unsigned char *b = fx_read_bytes(rewritten, &size_b);
    CHECK(a != NULL);
    CHECK(b != NULL);
    if (!a || !b || !loaded) {
        free(a);
        free(b);
        rt_weights_free(loaded);
        rt_weights_free(w);
        return;
    }
    CHECK_EQ_INT(size_a, size_b);
    CHECK(size_a == size_b && memcmp(a, b, size_a) == 0);

    /* Header layout: length field, "__metadata__" first, packed offsets,
     * space padding to a multiple of 8. */
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | a[i];
    CHECK_EQ_INT(n % 8, 0);
    const char *start = "{\"__metadata__\":{\"format\":\"pt\"},\"wte.weight\":{\"dtype\":\"F32\","
                        "\"shape\":[11,8],\"data_offsets\":[0,352]},\"wpe.weight\":{\"dtype\":"
                        "\"F32\",\"shape\":[6,8],\"data_offsets\":[352,544]},";
    CHECK(strncmp((const char *)a + 8, start, strlen(start)) == 0);
    const char *last = "\"ln_f.bias\":{\"dtype\":\"F32\",\"shape\":[8],\"data_offsets\":[";
    CHECK(strstr((const char *)a + 8, last) != NULL);
    size_t json_end = n;
    while (json_end > 0 && a[8 + json_end - 1] == ' ')
        json_end--;
    CHECK(a[8 + json_end - 1] == '}');
    CHECK(n - json_end < 8);
    /* The data starts right after the header with wte.weight. */
    CHECK(memcmp(a + 8 + n, w->tensors[0]->data, 352) == 0);
    CHECK_EQ_INT(size_a, 8 + n + 4 * (11 * 8 + 6 * 8 + 2 * (12 * 64 + 13 * 8) + 16));

    free(a);
    free(b);
    rt_weights_free(loaded);
    rt_weights_free(w);
}

static void test_all_dtypes_round_trip(void)
{
    char path[128];
    temp_path(path, sizeof path, "dtypes.safetensors");
    rt_weights *w = rt_weights_new();
    const int64_t dims[2] = {3, 5};
    for (int t = 0; t < IR_DTYPE_COUNT; t++) {
        rt_tensor *tensor = rt_tensor_new((ir_dtype)t, 2, dims);
        unsigned char *bytes = tensor->data;
        for (size_t i = 0; i < rt_tensor_nbytes(tensor); i++)
            bytes[i] = (unsigned char)(i * 37 + (size_t)t);
        rt_weights_set(w, ir_dtype_name((ir_dtype)t), tensor);
    }
    const int64_t empty_dims[3] = {0, 4, 1ll << 40};
    rt_weights_set(w, "empty", rt_tensor_new(IR_F32, 3, empty_dims));
    rt_tensor *scalar = rt_tensor_new(IR_I64, 0, NULL);
    *(int64_t *)scalar->data = -42;
    rt_weights_set(w, "scalar", scalar);
    rt_weights_set(w, "quote\"back\\slash\nnewline\x01", fx_lcg32_tensor(&random_state, 1, 2, 0));
    rt_weights_set_meta(w, "note", "caf\xc3\xa9 \"quoted\"\ttab");

    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_safetensors_write(path, w, c.diag), 0);
    rt_weights *loaded = rt_safetensors_read(path, c.diag);
    CHECK(loaded != NULL);
    if (loaded)
        check_same_weights("all dtypes", w, loaded);
    check_text("all dtypes diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);

    size_t size = 0;
    unsigned char *bytes = fx_read_bytes(path, &size);
    CHECK(strstr((const char *)bytes + 8, "\"quote\\\"back\\\\slash\\nnewline\\u0001\"") != NULL);
    CHECK(strstr((const char *)bytes + 8, "\"scalar\":{\"dtype\":\"I64\",\"shape\":[],") != NULL);
    CHECK(strstr((const char *)bytes + 8, "\"bf16\":{\"dtype\":\"BF16\",") != NULL);
    free(bytes);
    rt_weights_free(loaded);
    rt_weights_free(w);
}

/* A file written by hand: F16 and BF16 tensors with known bit patterns keep
 * their dtype and widen to the exact values. */
static void test_f16_bf16_file(void)
{
    char path[128];
    temp_path(path, sizeof path, "half.safetensors");
    const char *header = "{\"__metadata__\":{\"format\":\"pt\"},"
                         "\"half\":{\"dtype\":\"F16\",\"shape\":[5],\"data_offsets\":[0,10]},"
                         "\"brain\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[10,18]}}";
    const unsigned char data[18] = {
        0x00, 0x3c, /* 1.0 */
        0x00, 0xc0, /* -2.0 */
        0x55, 0x35, /* 0.333251953125 */
        0xff, 0x7b, /* 65504, the largest f16 */
        0x01, 0x00, /* 2^-24, the smallest subnormal */
        0x80, 0x3f, /* 1.0 */
        0xa0, 0xc0, /* -5.0 */
        0x49, 0x40, /* 3.140625 */
        0x80, 0x7f, /* +inf */
    };
    write_safetensors_raw(path, header, data, sizeof data);

    fx_capture c;
    fx_capture_open(&c);
    rt_weights *w = rt_safetensors_read(path, c.diag);
    check_text("f16 file diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);
    CHECK(w != NULL);
    if (!w)
        return;
    check_text("f16 metadata", rt_weights_get_meta(w, "format"), "pt");
    CHECK_EQ_INT(w->count, 2);
    check_text("f16 first name", w->names[0], "half");
    check_text("f16 second name", w->names[1], "brain");

    rt_tensor *half = rt_weights_get(w, "half");
    CHECK_EQ_INT(half->dtype, IR_F16);
    CHECK_EQ_INT(half->rank, 1);
    CHECK_EQ_INT(half->dims[0], 5);
    rt_tensor *half32 = rt_tensor_to_f32(half);
    const float *h = half32->data;
    CHECK(h[0] == 1.0f);
    CHECK(h[1] == -2.0f);
    CHECK(h[2] == 0.333251953125f);
    CHECK(h[3] == 65504.0f);
    CHECK(h[4] == 0x1p-24f);

    rt_tensor *brain = rt_weights_get(w, "brain");
    CHECK_EQ_INT(brain->dtype, IR_BF16);
    CHECK_EQ_INT(brain->rank, 2);
    CHECK_EQ_INT(brain->dims[0], 2);
    CHECK_EQ_INT(brain->dims[1], 2);
    rt_tensor *brain32 = rt_tensor_to_f32(brain);
    const float *b = brain32->data;
    CHECK(b[0] == 1.0f);
    CHECK(b[1] == -5.0f);
    CHECK(b[2] == 3.140625f);
    CHECK(isinf(b[3]));
    CHECK(b[3] > 0.0f);

    rt_tensor_free(half32);
    rt_tensor_free(brain32);
    rt_weights_free(w);
}

/* Gaps between tensors, bytes after the last one, unknown entry fields and
 * a header padded with whitespace are accepted. */
static void test_lenient_layout(void)
{
    char path[128];
    temp_path(path, sizeof path, "gaps.safetensors");
    const char *header = "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[6,8],\"x\":1},"
                         "\"a\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                         "\"z\":{\"dtype\":\"I32\",\"shape\":[0],\"data_offsets\":[1,1]}}\n \t";
    const unsigned char data[12] = {1, 2, 0, 0, 0, 0, 0xfe, 0xff, 9, 9, 9, 9};
    write_safetensors_raw(path, header, data, sizeof data);

    fx_capture c;
    fx_capture_open(&c);
    rt_weights *w = rt_safetensors_read(path, c.diag);
    check_text("lenient layout diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);
    CHECK(w != NULL);
    if (!w)
        return;
    CHECK_EQ_INT(w->count, 3);
    check_text("lenient first name", w->names[0], "b");
    CHECK_EQ_INT(((uint8_t *)rt_weights_get(w, "b")->data)[0], 0xfe);
    CHECK_EQ_INT(((int8_t *)rt_weights_get(w, "a")->data)[1], 2);
    CHECK_EQ_INT(rt_tensor_numel(rt_weights_get(w, "z")), 0);
    rt_weights_free(w);
}

/* ---------------------------------------------------------------------- */
/* GPT-2 names                                                            */
/* ---------------------------------------------------------------------- */

static void test_canonicalize_prefixed_names(void)
{
    char path[128];
    temp_path(path, sizeof path, "prefixed.safetensors");
    random_state = 12345;
    rt_weights *original = make_gpt2("");
    random_state = 12345;
    rt_weights *prefixed = make_gpt2("transformer.");
    int64_t mask_dims[4] = {1, 1, 6, 6};
    rt_weights_set(prefixed, "transformer.h.0.attn.bias", rt_tensor_new(IR_F32, 4, mask_dims));
    rt_weights_set(prefixed, "transformer.h.1.attn.masked_bias", rt_tensor_new(IR_F32, 0, NULL));
    rt_weights_set(prefixed, "h.1.attn.bias", rt_tensor_new(IR_F32, 4, mask_dims));
    rt_tensor *head = rt_tensor_new(IR_F32, 2, rt_weights_get(original, "wte.weight")->dims);
    memcpy(head->data, rt_weights_get(original, "wte.weight")->data, 11 * 8 * 4);
    rt_weights_set(prefixed, "lm_head.weight", head);

    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_safetensors_write(path, prefixed, c.diag), 0);
    rt_weights *loaded = rt_safetensors_read(path, c.diag);
    CHECK(loaded != NULL);
    CHECK_EQ_INT(rt_gpt2_canonicalize_names(loaded, c.diag, path), 0);
    check_text("canonicalize diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);
    check_same_weights("canonicalized", original, loaded);
    CHECK(rt_weights_get(loaded, "h.0.attn.c_attn.bias") != NULL);

    rt_weights_free(loaded);
    rt_weights_free(prefixed);
    rt_weights_free(original);
}

static void test_canonicalize_errors(void)
{
    fx_capture c;

    rt_weights *untied = make_gpt2("");
    rt_weights_set(untied, "lm_head.weight", fx_lcg32_tensor(&random_state, 2, 11, 8));
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_gpt2_canonicalize_names(untied, c.diag, "model.safetensors"), -1);
    check_text("untied head", fx_capture_text(&c),
               "model.safetensors: error: 'lm_head.weight' differs from 'wte.weight' at element 0; "
               "untied LM heads are unsupported, so use a GPT-2 checkpoint whose LM head equals "
               "the token embedding\n");
    fx_capture_close(&c);
    rt_weights_free(untied);

    rt_weights *reshaped = make_gpt2("");
    rt_weights_set(reshaped, "lm_head.weight", fx_lcg32_tensor(&random_state, 2, 12, 8));
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_gpt2_canonicalize_names(reshaped, c.diag, "model.safetensors"), -1);
    check_text("reshaped head", fx_capture_text(&c),
               "model.safetensors: error: 'lm_head.weight' (f32 [12, 8]) is not tied to "
               "'wte.weight' (f32 [11, 8]); untied LM heads are unsupported, so use a GPT-2 "
               "checkpoint whose LM head equals the token embedding\n");
    fx_capture_close(&c);
    rt_weights_free(reshaped);

    rt_weights *headless = rt_weights_new();
    rt_weights_set(headless, "transformer.lm_head.weight", fx_lcg32_tensor(&random_state, 2, 11, 8));
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_gpt2_canonicalize_names(headless, c.diag, "model.safetensors"), -1);
    check_text("head without wte", fx_capture_text(&c),
               "model.safetensors: error: 'lm_head.weight' is present but 'wte.weight' is "
               "missing; quadc needs the token embedding 'wte.weight', to which GPT-2 ties the "
               "LM head\n");
    fx_capture_close(&c);
    rt_weights_free(headless);

    rt_weights *both = rt_weights_new();
    rt_weights_set(both, "wpe.weight", fx_lcg32_tensor(&random_state, 2, 6, 8));
    rt_weights_set(both, "transformer.wpe.weight", fx_lcg32_tensor(&random_state, 2, 6, 8));
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_gpt2_canonicalize_names(both, c.diag, NULL), -1);
    check_text("prefix collision", fx_capture_text(&c),
               "quadc: error: tensors 'transformer.wpe.weight' and 'wpe.weight' both become "
               "'wpe.weight' without the \"transformer.\" prefix; remove one of them\n");
    fx_capture_close(&c);
    rt_weights_free(both);
}

/* ---------------------------------------------------------------------- */
/* Rejected files                                                         */
/* ---------------------------------------------------------------------- */

/* Reads path and checks that it fails with exactly "path: error: message". */
static void expect_read_error(const char *label, const char *path, const char *message)
{
    char expected[2048];
    snprintf(expected, sizeof expected, "%s: error: %s\n", path, message);
    fx_capture c;
    fx_capture_open(&c);
    rt_weights *w = rt_safetensors_read(path, c.diag);
    if (w) {
        fprintf(stderr, "%s: the reader accepted the file\n", label);
        check_failed++;
        rt_weights_free(w);
    } else {
        check_passed++;
    }
    check_text(label, fx_capture_text(&c), expected);
    fx_capture_close(&c);
}

/* Writes a file with the given header and `data_size` zero bytes of data,
 * then expects the reader to reject it with message. */
static void expect_header_error(const char *label, const char *header, size_t data_size,
                                const char *message)
{
    char path[128];
    temp_path(path, sizeof path, "bad.safetensors");
    void *data = calloc(1, data_size + 1);
    write_safetensors_raw(path, header, data, data_size);
    free(data);
    expect_read_error(label, path, message);
}

static void test_rejects_bad_sizes(void)
{
    char path[128];
    temp_path(path, sizeof path, "short.safetensors");
    write_bytes(path, "\x10\0\0\0\0", 5);
    expect_read_error("short file", path,
                      "file is 5 bytes, shorter than the 8-byte header length of a safetensors "
                      "file; the file is truncated or not safetensors");

    temp_path(path, sizeof path, "long_header.safetensors");
    write_safetensors_with_length(path, 100, "{}", "12345678", 8);
    expect_read_error("header past end", path,
                      "header length 100 runs past the end of the file, which has 10 bytes "
                      "after the length field; the file is truncated or not safetensors");

    write_safetensors_with_length(path, 200000000, "{}", NULL, 0);
    expect_read_error("huge header", path,
                      "header length 200000000 is above the limit of 100000000 bytes; the file "
                      "is corrupt or not safetensors");

    write_safetensors_with_length(path, UINT64_MAX, "{}", NULL, 0);
    expect_read_error("header length 2^64-1", path,
                      "header length 18446744073709551615 is above the limit of 100000000 "
                      "bytes; the file is corrupt or not safetensors");

    temp_path(path, sizeof path, "missing.safetensors");
    expect_read_error("missing file", path,
                      "cannot open safetensors file: No such file or directory");

    expect_read_error("directory", temp_dir, "not a regular file; expected a safetensors file");
}

static void test_rejects_bad_json(void)
{
    expect_header_error("invalid json", "{\"a\": {\"dtype\": ", 0,
                        "header is not valid JSON (syntax error at byte 15 of the 16-byte "
                        "header); the file is corrupt or not safetensors");
    expect_header_error("empty header", "", 0,
                        "header is not valid JSON (syntax error at byte 0 of the 0-byte "
                        "header); the file is corrupt or not safetensors");
    expect_header_error("trailing data", "{} x", 0,
                        "header is not valid JSON (unexpected data after the JSON value at byte "
                        "3 of the 4-byte header); the file is corrupt or not safetensors");

    /* A NUL byte is not whitespace, so it may not pad the header. */
    char path[128];
    temp_path(path, sizeof path, "nul.safetensors");
    write_safetensors_with_length(path, 3, "{}", "", 1);
    expect_read_error("trailing nul", path,
                      "header is not valid JSON (unexpected data after the JSON value at byte 2 "
                      "of the 3-byte header); the file is corrupt or not safetensors");

    expect_header_error("array header", "[1, 2]", 0,
                        "header is a JSON array, not an object mapping tensor names to entries; "
                        "the file is not safetensors");
    expect_header_error("duplicate name",
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                        "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2,
                        "tensor 'a' appears twice in the header; the file is corrupt");
}

static void test_rejects_bad_entries(void)
{
    expect_header_error("entry not object", "{\"a\":[1]}", 0,
                        "tensor 'a': header entry is a JSON array, not an object with dtype, "
                        "shape and data_offsets");
    expect_header_error("missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                        "tensor 'a': header entry has no \"dtype\" field; the file is corrupt or "
                        "not safetensors");
    expect_header_error("missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
                        "tensor 'a': header entry has no \"shape\" field; the file is corrupt or "
                        "not safetensors");
    expect_header_error("missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
                        "tensor 'a': header entry has no \"data_offsets\" field; the file is "
                        "corrupt or not safetensors");
    expect_header_error("unknown dtype",
                        "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                        "tensor 'a' has unsupported dtype \"F64\"; quadc reads F32, F16, BF16, "
                        "I8, U8, I32 and I64, so convert the tensor to one of these");
    expect_header_error("lower-case dtype",
                        "{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                        "tensor 'a' has unsupported dtype \"f32\"; quadc reads F32, F16, BF16, "
                        "I8, U8, I32 and I64, so convert the tensor to one of these");
    expect_header_error("dtype not string",
                        "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                        "tensor 'a': dtype is 4, not a string");
    expect_header_error("shape not array",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", 4,
                        "tensor 'a': shape is 4, not an array of dimensions");
    expect_header_error("negative dim",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 4,
                        "tensor 'a': shape[1] is -1, not a non-negative integer");
    expect_header_error("fractional dim",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,4]}}", 4,
                        "tensor 'a': shape[0] is 2.5, not a non-negative integer");
    expect_header_error("string dim",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
                        "tensor 'a': shape[0] is \"2\", not a non-negative integer");
    expect_header_error("rank 9",
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                        "\"data_offsets\":[0,1]}}", 1,
                        "tensor 'a' has rank 9, above the maximum rank 8");
    expect_header_error("one offset",
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 1,
                        "tensor 'a': data_offsets is [0], not an array [begin, end]");
    expect_header_error("negative offset",
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1,
                        "tensor 'a': data_offsets[0] is -1, not a non-negative integer");
    expect_header_error("huge offset",
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", 1,
                        "tensor 'a': data_offsets[1] is 1e+300, not a non-negative integer");
    expect_header_error("begin after end",
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[3,2]}}", 4,
                        "tensor 'a': data_offsets [3, 2] have begin after end; the file is "
                        "corrupt");
    expect_header_error("offsets past data",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 8,
                        "tensor 'a': data_offsets [0, 12] end past the 8 bytes of tensor data; "
                        "the file is truncated or corrupt");
    expect_header_error("byte count mismatch",
                        "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,8]}}", 8,
                        "tensor 'a': data_offsets [0, 8] span 8 bytes, but dtype BF16 and shape "
                        "[2, 3] need 12 bytes; the file is corrupt");
    expect_header_error("element count overflow",
                        "{\"a\":{\"dtype\":\"I64\",\"shape\":[4294967296,4294967296],"
                        "\"data_offsets\":[0,0]}}", 0,
                        "tensor 'a': shape [4294967296, 4294967296] is too large, because its "
                        "nonzero dimensions multiply to more than 2^60 elements; the file is "
                        "corrupt");
    expect_header_error("huge empty tensor",
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1099511627776,2097152,0],"
                        "\"data_offsets\":[0,0]}}", 0,
                        "tensor 'a': shape [1099511627776, 2097152, 0] is too large, because its "
                        "nonzero dimensions multiply to more than 2^60 elements; the file is "
                        "corrupt");
    expect_header_error("overlap",
                        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                        "\"b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]},"
                        "\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 20,
                        "tensors 'a' (data_offsets [0, 16]) and 'c' (data_offsets [12, 20]) "
                        "overlap; the file is corrupt");
    expect_header_error("overlap inside",
                        "{\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16,
                        "tensors 'a' (data_offsets [0, 16]) and 'c' (data_offsets [4, 8]) "
                        "overlap; the file is corrupt");
}

static void test_rejects_bad_metadata(void)
{
    expect_header_error("metadata number", "{\"__metadata__\":{\"format\":\"pt\",\"epochs\":3}}", 0,
                        "\"__metadata__\" key 'epochs' has the non-string value 3; safetensors "
                        "metadata values must be strings");
    expect_header_error("metadata array", "{\"__metadata__\":[\"pt\"]}", 0,
                        "\"__metadata__\" is a JSON array, not an object mapping strings to "
                        "strings");
    expect_header_error("metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0,
                        "\"__metadata__\" appears twice in the header; the file is corrupt");
}

/* ---------------------------------------------------------------------- */
/* Writer failures                                                        */
/* ---------------------------------------------------------------------- */

static void test_write_failures_leave_nothing(void)
{
    rt_weights *w = make_gpt2("");
    char path[160];
    fx_capture c;

    /* Renaming a file over a directory fails after all data was written. */
    char directory[128];
    temp_path(directory, sizeof directory, "occupied");
    mkdir(directory, 0755);
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_safetensors_write(directory, w, c.diag), -1);
    CHECK(strstr(fx_capture_text(&c), ": error: failed to rename temporary file '") != NULL);
    CHECK(strstr(fx_capture_text(&c), "the output was not written\n") != NULL);
    fx_capture_close(&c);
    CHECK_EQ_INT(fx_count_temp_files(temp_dir), 0);
    rmdir(directory);

    snprintf(path, sizeof path, "%s/no/such/dir/out.safetensors", temp_dir);
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_safetensors_write(path, w, c.diag), -1);
    char expected[512];
    snprintf(expected, sizeof expected, "%s: error: cannot create temporary file '%s.tmp.%ld.",
             path, path, (long)getpid());
    CHECK(strncmp(fx_capture_text(&c), expected, strlen(expected)) == 0);
    CHECK(strstr(fx_capture_text(&c), "': No such file or directory; check that the directory "
                                   "exists and is writable\n") != NULL);
    fx_capture_close(&c);

    rt_weights_set(w, "__metadata__", fx_lcg32_tensor(&random_state, 1, 2, 0));
    temp_path(path, sizeof path, "reserved.safetensors");
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_safetensors_write(path, w, c.diag), -1);
    snprintf(expected, sizeof expected, "%s: error: cannot write a tensor named '__metadata__', "
             "because safetensors reserves that key for metadata; rename the tensor\n", path);
    check_text("reserved name", fx_capture_text(&c), expected);
    fx_capture_close(&c);
    CHECK(access(path, F_OK) != 0);
    CHECK_EQ_INT(fx_count_temp_files(temp_dir), 0);
    rt_weights_free(w);
}

int main(void)
{
    snprintf(temp_dir, sizeof temp_dir, "/tmp/quadc_safetensors_XXXXXX");
    if (!mkdtemp(temp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_gpt2_round_trip();
    test_all_dtypes_round_trip();
    test_f16_bf16_file();
    test_lenient_layout();
    test_canonicalize_prefixed_names();
    test_canonicalize_errors();
    test_rejects_bad_sizes();
    test_rejects_bad_json();
    test_rejects_bad_entries();
    test_rejects_bad_metadata();
    test_write_failures_leave_nothing();
    fx_remove_dir(temp_dir);
    return check_finish();
}
