/* Tests for the llm.c checkpoint, token-shard and debug-state files: byte
 * layout against hand-computed offsets, round trips through safetensors,
 * and exact diagnostics for bad files and bad weight sets. */
#include "runtime/llmc.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "runtime/safetensors.h"

/* The small model of every test. */
enum { L = 2, C = 8, NH = 2, V = 11, VP = 128, MAXT = 6 };
/* Floats in the checkpoint: wte (VP*C), wpe (MAXT*C), per layer 12C^2 + 13C,
 * ln_f (2C). */
enum { PARAMETER_COUNT = VP * C + MAXT * C + L * (12 * C * C + 13 * C) + 2 * C };

static char temp_dir[64];

static void temp_path(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", temp_dir, name);
}

/* ---------------------------------------------------------------------- */
/* Weight sets and files                                                  */
/* ---------------------------------------------------------------------- */

static uint32_t random_state = 777;

/* A random GPT-2 weight set in Hugging Face naming and order. */
static rt_weights *make_gpt2(void)
{
    rt_weights *w = rt_weights_new();
    rt_weights_set(w, "wte.weight", fx_lcg32_tensor(&random_state, 2, V, C));
    rt_weights_set(w, "wpe.weight", fx_lcg32_tensor(&random_state, 2, MAXT, C));
    for (int i = 0; i < L; i++) {
        char name[64];
#define LAYER(suffix, rank, d0, d1)                                       \
        snprintf(name, sizeof name, "h.%d." suffix, i);                   \
        rt_weights_set(w, name, fx_lcg32_tensor(&random_state, rank, d0, d1))
        LAYER("ln_1.weight", 1, C, 0);
        LAYER("ln_1.bias", 1, C, 0);
        LAYER("attn.c_attn.weight", 2, C, 3 * C);
        LAYER("attn.c_attn.bias", 1, 3 * C, 0);
        LAYER("attn.c_proj.weight", 2, C, C);
        LAYER("attn.c_proj.bias", 1, C, 0);
        LAYER("ln_2.weight", 1, C, 0);
        LAYER("ln_2.bias", 1, C, 0);
        LAYER("mlp.c_fc.weight", 2, C, 4 * C);
        LAYER("mlp.c_fc.bias", 1, 4 * C, 0);
        LAYER("mlp.c_proj.weight", 2, 4 * C, C);
        LAYER("mlp.c_proj.bias", 1, C, 0);
#undef LAYER
    }
    rt_weights_set(w, "ln_f.weight", fx_lcg32_tensor(&random_state, 1, C, 0));
    rt_weights_set(w, "ln_f.bias", fx_lcg32_tensor(&random_state, 1, C, 0));
    return w;
}

static const rt_llmc_config SMALL_CONFIG = {
    .max_seq_len = MAXT, .vocab_size = V, .padded_vocab_size = VP,
    .num_layers = L, .num_heads = NH, .channels = C,
};

/* Checks that b has a's tensors in a's order. */
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
}

static const float *tensor_floats(const rt_weights *w, const char *name)
{
    return rt_weights_get(w, name)->data;
}

static void write_bytes(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, size, f);
    fclose(f);
}

static int32_t int_at(const unsigned char *bytes, size_t index)
{
    int32_t v;
    memcpy(&v, bytes + 4 * index, 4);
    return v;
}

static float float_at(const unsigned char *bytes, size_t index)
{
    float v;
    memcpy(&v, bytes + 4 * index, 4);
    return v;
}

/* Writes a file of `total_ints` int32 values, all zero except the first
 * `count` header values. */
static void write_ints(const char *path, const int32_t *values, int count, size_t total_ints)
{
    int32_t *ints = calloc(total_ints, 4);
    memcpy(ints, values, (size_t)count * 4);
    write_bytes(path, ints, total_ints * 4);
    free(ints);
}

/* ---------------------------------------------------------------------- */
/* Checkpoints                                                            */
/* ---------------------------------------------------------------------- */

static void test_infer_config(void)
{
    rt_weights *w = make_gpt2();
    rt_llmc_config config;
    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_infer_config(w, NH, &config, c.diag, NULL), 0);
    check_text("infer config diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);
    CHECK_EQ_INT(config.max_seq_len, MAXT);
    CHECK_EQ_INT(config.vocab_size, V);
    CHECK_EQ_INT(config.padded_vocab_size, VP);
    CHECK_EQ_INT(config.num_layers, L);
    CHECK_EQ_INT(config.num_heads, NH);
    CHECK_EQ_INT(config.channels, C);

    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_infer_config(w, 3, &config, c.diag, "model.safetensors"), -1);
    check_text("infer config heads", fx_capture_text(&c),
               "model.safetensors: error: config field C is 8, which is not divisible by NH=3; "
               "GPT-2 splits the C channels evenly across the heads\n");
    fx_capture_close(&c);
    rt_weights_free(w);

    rt_weights *empty = rt_weights_new();
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_infer_config(empty, NH, &config, c.diag, "model.safetensors"), -1);
    check_text("infer config without wte", fx_capture_text(&c),
               "model.safetensors: error: 'wte.weight' is missing; a GPT-2 weight set needs the "
               "token embedding 'wte.weight' with shape [V, C]\n");
    fx_capture_close(&c);
    rt_weights_set(empty, "wte.weight", fx_lcg32_tensor(&random_state, 2, V, C));
    rt_weights_set(empty, "wpe.weight", fx_lcg32_tensor(&random_state, 2, MAXT, C));
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_infer_config(empty, NH, &config, c.diag, "model.safetensors"), -1);
    check_text("infer config without layers", fx_capture_text(&c),
               "model.safetensors: error: 'h.0.ln_1.weight' is missing, so the weight set has no "
               "transformer layers; canonicalize the GPT-2 names first\n");
    fx_capture_close(&c);
    rt_weights_free(empty);
}

/* Checks the file against offsets computed by hand from the llm.c layout. */
static void test_checkpoint_layout(void)
{
    char path[128];
    temp_path(path, sizeof path, "model.bin");
    rt_weights *w = make_gpt2();
    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_write_checkpoint(path, w, &SMALL_CONFIG, c.diag), 0);
    check_text("checkpoint write diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);

    size_t size = 0;
    unsigned char *bytes = fx_read_bytes(path, &size);
    CHECK(bytes != NULL);
    if (!bytes) {
        rt_weights_free(w);
        return;
    }
    CHECK_EQ_INT(size, 1024 + 4 * PARAMETER_COUNT);
    CHECK_EQ_INT(int_at(bytes, 0), 20240326);
    CHECK_EQ_INT(int_at(bytes, 1), 3);
    CHECK_EQ_INT(int_at(bytes, 2), MAXT);
    CHECK_EQ_INT(int_at(bytes, 3), V);
    CHECK_EQ_INT(int_at(bytes, 4), L);
    CHECK_EQ_INT(int_at(bytes, 5), NH);
    CHECK_EQ_INT(int_at(bytes, 6), C);
    CHECK_EQ_INT(int_at(bytes, 7), VP);
    int nonzero = 0;
    for (int i = 8; i < 256; i++)
        nonzero += int_at(bytes, (size_t)i) != 0;
    CHECK_EQ_INT(nonzero, 0);

    /* Float indices from the start of the file, header included. */
    const size_t wte = 256, wpe = wte + VP * C, ln1w = wpe + MAXT * C, ln1b = ln1w + L * C;
    const size_t qkvw = ln1b + L * C, qkvb = qkvw + L * 3 * C * C, attprojw = qkvb + L * 3 * C;
    const size_t attprojb = attprojw + L * C * C, ln2w = attprojb + L * C, ln2b = ln2w + L * C;
    const size_t fcw = ln2b + L * C, fcb = fcw + L * 4 * C * C, fcprojw = fcb + L * 4 * C;
    const size_t fcprojb = fcprojw + L * 4 * C * C, lnfw = fcprojb + L * C, lnfb = lnfw + C;
    CHECK_EQ_INT(lnfb + C, size / 4);

    CHECK(float_at(bytes, wte + 3 * C + 5) == tensor_floats(w, "wte.weight")[3 * C + 5]);
    int padding_nonzero = 0;
    for (size_t i = wte + V * C; i < wpe; i++)
        padding_nonzero += float_at(bytes, i) != 0.0f;
    CHECK_EQ_INT(padding_nonzero, 0);
    CHECK(float_at(bytes, wpe + 5 * C + 7) == tensor_floats(w, "wpe.weight")[5 * C + 7]);
    CHECK(float_at(bytes, ln1b + C + 2) == tensor_floats(w, "h.1.ln_1.bias")[2]);
    /* qkvw layer 1 is (3C, C) = (out, in); Hugging Face c_attn is (C, 3C). */
    CHECK(float_at(bytes, qkvw + 3 * C * C + 17 * C + 2) ==
          tensor_floats(w, "h.1.attn.c_attn.weight")[2 * 3 * C + 17]);
    CHECK(float_at(bytes, qkvb + 3 * C + 20) == tensor_floats(w, "h.1.attn.c_attn.bias")[20]);
    CHECK(float_at(bytes, attprojw + 1 * C + 6) ==
          tensor_floats(w, "h.0.attn.c_proj.weight")[6 * C + 1]);
    CHECK(float_at(bytes, attprojb + 4) == tensor_floats(w, "h.0.attn.c_proj.bias")[4]);
    CHECK(float_at(bytes, ln2w + C) == tensor_floats(w, "h.1.ln_2.weight")[0]);
    CHECK(float_at(bytes, ln2b + 7) == tensor_floats(w, "h.0.ln_2.bias")[7]);
    /* fcw is (4C, C); fcprojw is (C, 4C). */
    CHECK(float_at(bytes, fcw + 4 * C * C + 30 * C + 1) ==
          tensor_floats(w, "h.1.mlp.c_fc.weight")[1 * 4 * C + 30]);
    CHECK(float_at(bytes, fcb + 31) == tensor_floats(w, "h.0.mlp.c_fc.bias")[31]);
    CHECK(float_at(bytes, fcprojw + 3 * 4 * C + 29) ==
          tensor_floats(w, "h.0.mlp.c_proj.weight")[29 * C + 3]);
    CHECK(float_at(bytes, fcprojb + C + 5) == tensor_floats(w, "h.1.mlp.c_proj.bias")[5]);
    CHECK(float_at(bytes, lnfw + 6) == tensor_floats(w, "ln_f.weight")[6]);
    CHECK(float_at(bytes, lnfb + 7) == tensor_floats(w, "ln_f.bias")[7]);

    free(bytes);
    rt_weights_free(w);
}

static void test_checkpoint_round_trip(void)
{
    char path[128];
    temp_path(path, sizeof path, "model.bin");
    rt_weights *w = make_gpt2();
    rt_llmc_config config = {0};
    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_write_checkpoint(path, w, &SMALL_CONFIG, c.diag), 0);
    rt_weights *loaded = rt_llmc_read_checkpoint(path, &config, c.diag);
    check_text("checkpoint round trip diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);
    CHECK(loaded != NULL);
    if (loaded)
        check_same_weights("checkpoint round trip", w, loaded);
    CHECK(memcmp(&config, &SMALL_CONFIG, sizeof config) == 0);
    rt_weights_free(loaded);
    rt_weights_free(w);
}

/* safetensors -> llm.c -> safetensors gives the same file, including from
 * a prefixed file with mask buffers and a tied LM head. */
static void test_safetensors_llmc_round_trip(void)
{
    char original[128], prefixed[128], checkpoint[128], rewritten[128];
    temp_path(original, sizeof original, "original.safetensors");
    temp_path(prefixed, sizeof prefixed, "prefixed.safetensors");
    temp_path(checkpoint, sizeof checkpoint, "converted.bin");
    temp_path(rewritten, sizeof rewritten, "rewritten.safetensors");

    rt_weights *w = make_gpt2();
    rt_weights *with_prefix = rt_weights_new();
    for (int i = 0; i < w->count; i++) {
        char name[128];
        snprintf(name, sizeof name, "transformer.%s", w->names[i]);
        rt_tensor *copy = rt_tensor_new(IR_F32, w->tensors[i]->rank, w->tensors[i]->dims);
        memcpy(copy->data, w->tensors[i]->data, rt_tensor_nbytes(copy));
        rt_weights_set(with_prefix, name, copy);
    }
    int64_t mask_dims[4] = {1, 1, MAXT, MAXT};
    rt_weights_set(with_prefix, "transformer.h.0.attn.bias", rt_tensor_new(IR_F32, 4, mask_dims));
    rt_tensor *head = rt_tensor_new(IR_F32, 2, rt_weights_get(w, "wte.weight")->dims);
    memcpy(head->data, tensor_floats(w, "wte.weight"), V * C * 4);
    rt_weights_set(with_prefix, "lm_head.weight", head);

    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_safetensors_write(original, w, c.diag), 0);
    CHECK_EQ_INT(rt_safetensors_write(prefixed, with_prefix, c.diag), 0);
    rt_weights *from_file = rt_safetensors_read(prefixed, c.diag);
    CHECK(from_file != NULL);
    CHECK_EQ_INT(rt_gpt2_canonicalize_names(from_file, c.diag, prefixed), 0);
    rt_llmc_config config;
    CHECK_EQ_INT(rt_llmc_infer_config(from_file, NH, &config, c.diag, prefixed), 0);
    CHECK_EQ_INT(rt_llmc_write_checkpoint(checkpoint, from_file, &config, c.diag), 0);
    rt_weights *converted = rt_llmc_read_checkpoint(checkpoint, &config, c.diag);
    CHECK(converted != NULL);
    CHECK_EQ_INT(rt_safetensors_write(rewritten, converted, c.diag), 0);
    check_text("safetensors to llm.c diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);
    if (converted)
        check_same_weights("safetensors to llm.c", w, converted);

    size_t size_a = 0, size_b = 0;
    unsigned char *a = fx_read_bytes(original, &size_a);
    unsigned char *b = fx_read_bytes(rewritten, &size_b);
    CHECK(a != NULL);
    CHECK(b != NULL);
    CHECK_EQ_INT(size_a, size_b);
    if (a && b)
        CHECK(size_a == size_b && memcmp(a, b, size_a) == 0);
    free(a);
    free(b);
    rt_weights_free(converted);
    rt_weights_free(from_file);
    rt_weights_free(with_prefix);
    rt_weights_free(w);
}

/* F16 and BF16 tensors are widened to f32 in the checkpoint. */
static void test_half_precision_weights(void)
{
    char path[128];
    temp_path(path, sizeof path, "half.bin");
    rt_weights *w = make_gpt2();
    for (int i = 0; i < w->count; i++) {
        const rt_tensor *t = w->tensors[i];
        ir_dtype dtype = i % 2 ? IR_F16 : IR_BF16;
        rt_tensor *half = rt_tensor_new(dtype, t->rank, t->dims);
        for (int64_t k = 0; k < rt_tensor_numel(t); k++) {
            float v = ((const float *)t->data)[k];
            ((uint16_t *)half->data)[k] = dtype == IR_F16 ? rt_f32_to_f16(v) : rt_f32_to_bf16(v);
        }
        rt_weights_set(w, w->names[i], half);
    }

    rt_llmc_config config;
    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_write_checkpoint(path, w, &SMALL_CONFIG, c.diag), 0);
    rt_weights *loaded = rt_llmc_read_checkpoint(path, &config, c.diag);
    check_text("half precision diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);
    CHECK(loaded != NULL);
    int mismatches = 0;
    for (int i = 0; loaded && i < w->count; i++) {
        rt_tensor *widened = rt_tensor_to_f32(w->tensors[i]);
        if (!fx_same_tensor(widened, rt_weights_get(loaded, w->names[i]))) {
            fprintf(stderr, "half precision: '%s' differs\n", w->names[i]);
            mismatches++;
        }
        rt_tensor_free(widened);
    }
    CHECK_EQ_INT(mismatches, 0);
    rt_weights_free(loaded);
    rt_weights_free(w);
}

/* A token embedding with Vp rows is accepted when its padding is zero. */
static void test_padded_token_embedding(void)
{
    char unpadded_path[128], padded_path[128];
    temp_path(unpadded_path, sizeof unpadded_path, "unpadded.bin");
    temp_path(padded_path, sizeof padded_path, "padded.bin");
    rt_weights *w = make_gpt2();
    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_write_checkpoint(unpadded_path, w, &SMALL_CONFIG, c.diag), 0);
    rt_tensor *padded = fx_lcg32_tensor(&random_state, 2, VP, C);
    memset((float *)padded->data + V * C, 0, (VP - V) * C * 4);
    memcpy(padded->data, tensor_floats(w, "wte.weight"), V * C * 4);
    rt_weights_set(w, "wte.weight", padded);
    CHECK_EQ_INT(rt_llmc_write_checkpoint(padded_path, w, &SMALL_CONFIG, c.diag), 0);
    check_text("padded wte diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);

    size_t size_a = 0, size_b = 0;
    unsigned char *a = fx_read_bytes(unpadded_path, &size_a);
    unsigned char *b = fx_read_bytes(padded_path, &size_b);
    CHECK_EQ_INT(size_a, size_b);
    CHECK(size_a == size_b && memcmp(a, b, size_a) == 0);
    free(a);
    free(b);

    ((float *)padded->data)[40 * C + 3] = 0.5f;
    char path[128];
    temp_path(path, sizeof path, "bad_padding.bin");
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_write_checkpoint(path, w, &SMALL_CONFIG, c.diag), -1);
    char expected[512];
    snprintf(expected, sizeof expected, "%s: error: tensor 'wte.weight' has Vp=128 rows, but "
             "padding row 40 (of rows 11..127) is not zero; pass the V=11 unpadded rows or zero "
             "the padding\n", path);
    check_text("nonzero padding", fx_capture_text(&c), expected);
    fx_capture_close(&c);
    CHECK(access(path, F_OK) != 0);
    CHECK_EQ_INT(fx_count_temp_files(temp_dir), 0);
    rt_weights_free(w);
}

/* Writes w with the small config and expects exactly "path: error: message". */
static void expect_write_error(const char *label, const rt_weights *w,
                               const rt_llmc_config *config, const char *message)
{
    char path[128], expected[1024];
    temp_path(path, sizeof path, "rejected.bin");
    snprintf(expected, sizeof expected, "%s: error: %s\n", path, message);
    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_write_checkpoint(path, w, config, c.diag), -1);
    check_text(label, fx_capture_text(&c), expected);
    fx_capture_close(&c);
    CHECK(access(path, F_OK) != 0);
    CHECK_EQ_INT(fx_count_temp_files(temp_dir), 0);
}

static void test_checkpoint_write_errors(void)
{
    rt_weights *w = make_gpt2();
    rt_weights *missing = rt_weights_new();
    for (int i = 0; i < w->count; i++) {
        if (strcmp(w->names[i], "h.1.mlp.c_fc.weight") == 0)
            continue;
        rt_weights_set(missing, w->names[i], fx_lcg32_tensor(&random_state, w->tensors[i]->rank,
                                                           w->tensors[i]->dims[0],
                                                           w->tensors[i]->dims[1]));
    }
    expect_write_error("missing tensor", missing, &SMALL_CONFIG,
                       "tensor 'h.1.mlp.c_fc.weight' (llm.c fcw) is missing; a GPT-2 model with "
                       "L=2 and C=8 needs it with shape [8, 32]");
    rt_weights_free(missing);

    rt_weights_set(w, "h.0.attn.c_proj.weight", fx_lcg32_tensor(&random_state, 2, C, 2 * C));
    expect_write_error("wrong shape", w, &SMALL_CONFIG,
                       "tensor 'h.0.attn.c_proj.weight' has shape [8, 16], but llm.c attprojw "
                       "needs [8, 8] in the Hugging Face layout for maxT=6 V=11 C=8");
    rt_weights_set(w, "h.0.attn.c_proj.weight", fx_lcg32_tensor(&random_state, 2, C, C));

    int64_t dims[1] = {C};
    rt_weights_set(w, "ln_f.bias", rt_tensor_new(IR_I8, 1, dims));
    expect_write_error("wrong dtype", w, &SMALL_CONFIG,
                       "tensor 'ln_f.bias' has dtype i8, but llm.c stores f32; only f32, f16 and "
                       "bf16 tensors can be converted");
    rt_weights_set(w, "ln_f.bias", fx_lcg32_tensor(&random_state, 1, C, 0));

    rt_weights_set(w, "lm_head.weight", fx_lcg32_tensor(&random_state, 2, V, C));
    expect_write_error("extra tensor", w, &SMALL_CONFIG,
                       "tensor 'lm_head.weight' is not one of the GPT-2 parameters that llm.c "
                       "stores for L=2; remove it, or canonicalize the GPT-2 names first");
    rt_weights_free(w);
    w = make_gpt2();

    rt_llmc_config config = SMALL_CONFIG;
    config.num_heads = 3;
    expect_write_error("heads do not divide channels", w, &config,
                       "config field C is 8, which is not divisible by NH=3; GPT-2 splits the C "
                       "channels evenly across the heads");
    config = SMALL_CONFIG;
    config.padded_vocab_size = 10;
    expect_write_error("padded vocabulary too small", w, &config,
                       "config field Vp is 10, below V=11; Vp is the vocabulary size padded up "
                       "and cannot be smaller");
    config = SMALL_CONFIG;
    config.num_layers = 0;
    expect_write_error("zero layers", w, &config,
                       "config field L is 0, but it must be positive");
    config = SMALL_CONFIG;
    config.num_layers = 3;
    expect_write_error("one layer too many", w, &config,
                       "tensor 'h.2.ln_1.weight' (llm.c ln1w) is missing; a GPT-2 model with L=3 "
                       "and C=8 needs it with shape [8]");
    rt_weights_free(w);
}

/* Reads path as a checkpoint and expects exactly "path: error: message". */
static void expect_checkpoint_error(const char *label, const char *path, const char *message)
{
    char expected[1024];
    snprintf(expected, sizeof expected, "%s: error: %s\n", path, message);
    rt_llmc_config config;
    fx_capture c;
    fx_capture_open(&c);
    rt_weights *w = rt_llmc_read_checkpoint(path, &config, c.diag);
    CHECK(w == NULL);
    check_text(label, fx_capture_text(&c), expected);
    fx_capture_close(&c);
    rt_weights_free(w);
}

static void test_checkpoint_read_errors(void)
{
    char path[128];
    temp_path(path, sizeof path, "bad.bin");
    const size_t full = 256 + PARAMETER_COUNT;
    int32_t header[8] = {20240326, 3, MAXT, V, L, NH, C, VP};

    write_ints(path, header, 8, 100);
    expect_checkpoint_error("short checkpoint", path,
                            "file is 400 bytes, shorter than the 1024-byte header of an llm.c "
                            "checkpoint; the file is truncated");

    header[0] = 20240520;
    write_ints(path, header, 8, full);
    expect_checkpoint_error("token shard as checkpoint", path,
                            "header field magic is 20240520 (an llm.c token shard), but an llm.c "
                            "checkpoint has magic 20240326; pass a file of the right kind");
    header[0] = 12345;
    write_ints(path, header, 8, full);
    expect_checkpoint_error("bad magic", path,
                            "header field magic is 12345, but an llm.c checkpoint has magic "
                            "20240326; pass a file of the right kind");
    header[0] = 20240326;

    header[1] = 5;
    write_ints(path, header, 8, full);
    expect_checkpoint_error("bf16 checkpoint", path,
                            "header field version is 5, but quadc reads only version 3 llm.c "
                            "checkpoints; version 5 stores bf16, so export an fp32 checkpoint "
                            "from llm.c");
    header[1] = 1;
    write_ints(path, header, 8, full);
    expect_checkpoint_error("version 1", path,
                            "header field version is 1, but quadc reads only version 3 llm.c "
                            "checkpoints");
    header[1] = 3;

    header[2] = 0;
    write_ints(path, header, 8, full);
    expect_checkpoint_error("zero maxT", path, "header field maxT is 0, but it must be positive");
    header[2] = MAXT;
    header[7] = 0;
    write_ints(path, header, 8, full);
    expect_checkpoint_error("zero Vp", path, "header field Vp is 0, but it must be positive");
    header[7] = 10;
    write_ints(path, header, 8, full);
    expect_checkpoint_error("Vp below V", path,
                            "header field Vp is 10, below V=11; Vp is the vocabulary size padded "
                            "up and cannot be smaller");
    header[7] = VP;
    header[5] = 3;
    write_ints(path, header, 8, full);
    expect_checkpoint_error("heads do not divide C", path,
                            "header field C is 8, which is not divisible by NH=3; GPT-2 splits "
                            "the C channels evenly across the heads");
    header[5] = NH;

    write_ints(path, header, 8, full - 1);
    expect_checkpoint_error("truncated checkpoint", path,
                            "file is 12348 bytes, but the header (maxT=6 V=11 Vp=128 L=2 NH=2 "
                            "C=8) needs 1024 + 4 * 2832 = 12352 bytes; the file is truncated or "
                            "the header is wrong");
    write_ints(path, header, 8, full + 1);
    expect_checkpoint_error("checkpoint with extra bytes", path,
                            "file is 12356 bytes, but the header (maxT=6 V=11 Vp=128 L=2 NH=2 "
                            "C=8) needs 1024 + 4 * 2832 = 12352 bytes; the file is truncated or "
                            "the header is wrong");

    int32_t huge[8] = {20240326, 3, MAXT, V, INT32_MAX, 1, INT32_MAX, VP};
    write_ints(path, huge, 8, full);
    expect_checkpoint_error("overflowing sizes", path,
                            "header sizes maxT=6 V=11 Vp=128 L=2147483647 C=2147483647 give a "
                            "parameter count above 2^64; the header is corrupt");

    temp_path(path, sizeof path, "no_such.bin");
    expect_checkpoint_error("missing checkpoint", path,
                            "cannot open llm.c checkpoint: No such file or directory");
}

/* ---------------------------------------------------------------------- */
/* Token shards                                                           */
/* ---------------------------------------------------------------------- */

static void test_tokens_round_trip(void)
{
    char path[128];
    temp_path(path, sizeof path, "tokens.bin");
    const uint16_t tokens[5] = {50256, 0, 15496, 11, 65535};
    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_write_tokens(path, tokens, 5, c.diag), 0);
    size_t count = 0;
    uint16_t *loaded = rt_llmc_read_tokens(path, &count, c.diag);
    check_text("tokens diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);
    CHECK(loaded != NULL);
    CHECK_EQ_INT(count, 5);
    if (loaded)
        CHECK(memcmp(loaded, tokens, sizeof tokens) == 0);
    free(loaded);

    size_t size = 0;
    unsigned char *bytes = fx_read_bytes(path, &size);
    CHECK_EQ_INT(size, 1024 + 10);
    CHECK_EQ_INT(int_at(bytes, 0), 20240520);
    CHECK_EQ_INT(int_at(bytes, 1), 1);
    CHECK_EQ_INT(int_at(bytes, 2), 5);
    CHECK_EQ_INT(int_at(bytes, 3), 0);
    CHECK_EQ_INT(bytes[1024], 0x50);
    CHECK_EQ_INT(bytes[1025], 0xc4);
    free(bytes);

    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_write_tokens(path, tokens, 0, c.diag), 0);
    count = 99;
    loaded = rt_llmc_read_tokens(path, &count, c.diag);
    check_text("empty tokens diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);
    CHECK(loaded != NULL);
    CHECK_EQ_INT(count, 0);
    free(loaded);
}

static void expect_tokens_error(const char *label, const char *path, const char *message)
{
    char expected[1024];
    snprintf(expected, sizeof expected, "%s: error: %s\n", path, message);
    size_t count = 0;
    fx_capture c;
    fx_capture_open(&c);
    uint16_t *tokens = rt_llmc_read_tokens(path, &count, c.diag);
    CHECK(tokens == NULL);
    check_text(label, fx_capture_text(&c), expected);
    fx_capture_close(&c);
    free(tokens);
}

static void test_tokens_errors(void)
{
    char path[128];
    temp_path(path, sizeof path, "bad_tokens.bin");
    int32_t header[3] = {20240520, 1, 4};

    write_ints(path, header, 3, 255);
    expect_tokens_error("short shard", path,
                        "file is 1020 bytes, shorter than the 1024-byte header of an llm.c token "
                        "shard; the file is truncated");
    write_ints(path, header, 3, 259);
    expect_tokens_error("shard size mismatch", path,
                        "file is 1036 bytes, but header field token count 4 needs 1024 + 2 * 4 = "
                        "1032 bytes; the file is truncated or the header is wrong");
    header[0] = 20240326;
    write_ints(path, header, 3, 258);
    expect_tokens_error("checkpoint as shard", path,
                        "header field magic is 20240326 (an llm.c model checkpoint), but an llm.c "
                        "token shard has magic 20240520; pass a file of the right kind");
    header[0] = 20240520;
    header[1] = 2;
    write_ints(path, header, 3, 258);
    expect_tokens_error("version 2 shard", path,
                        "header field version is 2, but quadc reads only version 1 llm.c token "
                        "shards");
    header[1] = 1;
    header[2] = -3;
    write_ints(path, header, 3, 256);
    expect_tokens_error("negative count", path,
                        "header field token count is -3, but it must not be negative");

    /* An odd number of bytes after the header cannot hold uint16 tokens. */
    header[2] = 2;
    write_ints(path, header, 3, 256);
    FILE *f = fopen(path, "ab");
    fwrite("\1\2\3\4\5", 1, 5, f);
    fclose(f);
    expect_tokens_error("odd shard size", path,
                        "file is 1029 bytes, but header field token count 2 needs 1024 + 2 * 2 = "
                        "1028 bytes; the file is truncated or the header is wrong");
}

/* ---------------------------------------------------------------------- */
/* Debug states                                                           */
/* ---------------------------------------------------------------------- */

enum { B = 2, T = 3 };

typedef struct debug_fixture {
    int32_t inputs[B * T];
    int32_t targets[B * T];
    float logits[B * T * V];
    rt_llmc_debug_state state;
} debug_fixture;

static void make_debug_fixture(debug_fixture *f)
{
    for (int i = 0; i < B * T; i++) {
        f->inputs[i] = (i * 7 + 3) % V;
        f->targets[i] = (i * 5 + 1) % V;
    }
    for (int i = 0; i < B * T * V; i++)
        f->logits[i] = fx_lcg32_uniform(&random_state) * 4.0f;
    f->state = (rt_llmc_debug_state){
        .batch_size = B, .seq_len = T, .inputs = f->inputs, .targets = f->targets,
        .logits = f->logits, .loss = 2.375f, .grads = make_gpt2(),
    };
}

static void test_debug_state_layout(void)
{
    char path[128];
    temp_path(path, sizeof path, "debug_state.bin");
    debug_fixture f;
    make_debug_fixture(&f);
    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_write_debug_state(path, &SMALL_CONFIG, &f.state, c.diag), 0);
    check_text("debug state diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);

    size_t size = 0;
    unsigned char *bytes = fx_read_bytes(path, &size);
    CHECK(bytes != NULL);
    if (!bytes) {
        rt_weights_free(f.state.grads);
        return;
    }
    const size_t inputs = 256, targets = inputs + B * T, logits = targets + B * T;
    const size_t loss = logits + B * T * V, grads = loss + 1;
    CHECK_EQ_INT(size, 4 * (grads + PARAMETER_COUNT));
    CHECK_EQ_INT(int_at(bytes, 0), 20240327);
    CHECK_EQ_INT(int_at(bytes, 1), 2);
    CHECK_EQ_INT(int_at(bytes, 2), B);
    CHECK_EQ_INT(int_at(bytes, 3), T);
    CHECK_EQ_INT(int_at(bytes, 4), 0);
    CHECK_EQ_INT(int_at(bytes, inputs + 5), f.inputs[5]);
    CHECK_EQ_INT(int_at(bytes, targets + 4), f.targets[4]);
    CHECK(float_at(bytes, logits + 37) == f.logits[37]);
    CHECK(float_at(bytes, loss) == 2.375f);
    const rt_weights *g = f.state.grads;
    CHECK(float_at(bytes, grads + 2 * C + 1) == tensor_floats(g, "wte.weight")[2 * C + 1]);
    CHECK(float_at(bytes, grads + V * C) == 0.0f);
    CHECK(float_at(bytes, grads + VP * C - 1) == 0.0f);
    /* ln_f.bias closes the file; qkvw layer 0 follows wte, wpe, ln1w, ln1b. */
    CHECK(float_at(bytes, size / 4 - 1) == tensor_floats(g, "ln_f.bias")[C - 1]);
    size_t qkvw = grads + VP * C + MAXT * C + 2 * L * C;
    CHECK(float_at(bytes, qkvw + 9 * C + 4) == tensor_floats(g, "h.0.attn.c_attn.weight")[4 * 3 * C + 9]);
    free(bytes);

    rt_llmc_debug_state loaded;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_read_debug_state(path, &SMALL_CONFIG, &loaded, c.diag), 0);
    check_text("debug state read diagnostics", fx_capture_text(&c), "");
    fx_capture_close(&c);
    CHECK_EQ_INT(loaded.batch_size, B);
    CHECK_EQ_INT(loaded.seq_len, T);
    CHECK(loaded.grads != NULL);
    if (loaded.grads) {
        CHECK(memcmp(loaded.inputs, f.inputs, sizeof f.inputs) == 0);
        CHECK(memcmp(loaded.targets, f.targets, sizeof f.targets) == 0);
        CHECK(memcmp(loaded.logits, f.logits, sizeof f.logits) == 0);
        CHECK(loaded.loss == 2.375f);
        check_same_weights("debug state gradients", g, loaded.grads);
    }
    rt_llmc_debug_state_free(&loaded);
    CHECK(loaded.grads == NULL);

    /* A model with another vocabulary cannot read this file. */
    rt_llmc_config other = SMALL_CONFIG;
    other.vocab_size = 12;
    char expected[512];
    snprintf(expected, sizeof expected, "%s: error: file is 12668 bytes, but B=2 T=3 and the "
             "model (V=12, 2832 parameters) need 12692 bytes; the file is truncated or was "
             "written for another model\n", path);
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_read_debug_state(path, &other, &loaded, c.diag), -1);
    check_text("debug state for another model", fx_capture_text(&c), expected);
    fx_capture_close(&c);
    CHECK(loaded.grads == NULL);
    rt_weights_free(f.state.grads);
}

static void expect_debug_write_error(const char *label, const rt_llmc_debug_state *state,
                                     const char *message)
{
    char path[128], expected[1024];
    temp_path(path, sizeof path, "rejected_state.bin");
    snprintf(expected, sizeof expected, "%s: error: %s\n", path, message);
    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_write_debug_state(path, &SMALL_CONFIG, state, c.diag), -1);
    check_text(label, fx_capture_text(&c), expected);
    fx_capture_close(&c);
    CHECK(access(path, F_OK) != 0);
    CHECK_EQ_INT(fx_count_temp_files(temp_dir), 0);
}

static void test_debug_state_errors(void)
{
    debug_fixture f;
    make_debug_fixture(&f);
    rt_llmc_debug_state state = f.state;

    state.seq_len = MAXT + 1;
    expect_debug_write_error("T above maxT", &state,
                             "debug state field T is 7, but it must be in 1..maxT=6");
    state.seq_len = T;
    state.batch_size = 0;
    expect_debug_write_error("zero batch", &state,
                             "debug state field B is 0, but it must be positive");
    state.batch_size = B;

    f.targets[4] = V;
    expect_debug_write_error("target out of range", &state,
                             "targets[4] is 11, outside the vocabulary 0..10");
    f.targets[4] = 0;
    f.inputs[0] = -1;
    expect_debug_write_error("negative input", &state,
                             "inputs[0] is -1, outside the vocabulary 0..10");
    f.inputs[0] = 0;

    rt_weights_set(f.state.grads, "h.1.ln_2.bias", fx_lcg32_tensor(&random_state, 1, C + 1, 0));
    expect_debug_write_error("gradient shape", &state,
                             "gradient 'h.1.ln_2.bias' has shape [9], but llm.c ln2b needs [8] in "
                             "the Hugging Face layout for maxT=6 V=11 C=8");
    rt_weights_free(f.state.grads);

    char path[128];
    temp_path(path, sizeof path, "bad_state.bin");
    int32_t header[4] = {20240327, 2, B, MAXT + 1};
    write_ints(path, header, 4, 256);
    rt_llmc_debug_state loaded;
    fx_capture c;
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_read_debug_state(path, &SMALL_CONFIG, &loaded, c.diag), -1);
    char expected[512];
    snprintf(expected, sizeof expected, "%s: error: header field T is 7, but it must be in "
             "1..maxT=6\n", path);
    check_text("debug state header T", fx_capture_text(&c), expected);
    fx_capture_close(&c);

    header[1] = 1;
    write_ints(path, header, 4, 256);
    fx_capture_open(&c);
    CHECK_EQ_INT(rt_llmc_read_debug_state(path, &SMALL_CONFIG, &loaded, c.diag), -1);
    snprintf(expected, sizeof expected, "%s: error: header field version is 1, but quadc reads "
             "only version 2 llm.c debug states\n", path);
    check_text("debug state version", fx_capture_text(&c), expected);
    fx_capture_close(&c);
}

int main(void)
{
    snprintf(temp_dir, sizeof temp_dir, "/tmp/quadc_llmc_XXXXXX");
    if (!mkdtemp(temp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_infer_config();
    test_checkpoint_layout();
    test_checkpoint_round_trip();
    test_safetensors_llmc_round_trip();
    test_half_precision_weights();
    test_padded_token_embedding();
    test_checkpoint_write_errors();
    test_checkpoint_read_errors();
    test_tokens_round_trip();
    test_tokens_errors();
    test_debug_state_layout();
    test_debug_state_errors();
    fx_remove_dir(temp_dir);
    return check_finish();
}
