/* libFuzzer target: loads fuzz input as tokenizer files to show that
 * malformed files are rejected with an error and never crash. The first
 * byte picks the mode: the rest of the input becomes encoder.json (next to
 * a small valid vocab.bpe), or vocab.bpe (next to a small valid
 * encoder.json), or both, split at the first NUL byte. A load must either
 * fail with exactly one error or give a tokenizer that round-trips text.
 * Build and run it with scripts/fuzz.sh, which instruments the whole
 * library so libFuzzer gets coverage inside runtime/tokenizer.c. */
#include "runtime/tokenizer.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char encoder_path[64];
static char vocab_path[64];
static char *small_encoder;
static FILE *dev_null;

static const char small_merges[] = "#version: 0.2\nh e\nl l\nhe ll\n";

/* Builds an encoder.json where byte b has id b (in GPT-2's byte-to-unicode
 * alphabet) and "he", "ll", "hell" and "<|endoftext|>" follow. */
static char *build_small_encoder(void)
{
    char *json = malloc(256 * 16 + 128);
    size_t o = 0;
    json[o++] = '{';
    unsigned next_cp = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        unsigned cp = printable ? (unsigned)b : next_cp++;
        if (b > 0)
            json[o++] = ',';
        json[o++] = '"';
        if (cp == '"' || cp == '\\')
            json[o++] = '\\';
        if (cp < 0x80) {
            json[o++] = (char)cp;
        } else {
            json[o++] = (char)(0xC0 | (cp >> 6));
            json[o++] = (char)(0x80 | (cp & 0x3F));
        }
        o += (size_t)sprintf(json + o, "\":%d", b);
    }
    sprintf(json + o, ",\"he\":256,\"ll\":257,\"hell\":258,\"<|endoftext|>\":259}");
    return json;
}

static void write_file(const char *path, const void *bytes, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, len, f) != len || fclose(f) != 0)
        abort();
}

static void set_up_once(void)
{
    if (small_encoder)
        return;
    char dir[] = "/tmp/quadc-fuzz-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    snprintf(encoder_path, sizeof encoder_path, "%s/encoder.json", dir);
    snprintf(vocab_path, sizeof vocab_path, "%s/vocab.bpe", dir);
    small_encoder = build_small_encoder();
    dev_null = fopen("/dev/null", "w");
    if (!dev_null)
        abort();
}

/* Encodes text with a tokenizer that loaded, and aborts unless the ids
 * decode to the same bytes. */
static void check_round_trip(rt_tokenizer *t, const char *text, size_t len)
{
    ir_diag *sink = ir_diag_new(dev_null);
    int32_t *ids = NULL;
    size_t n = 0;
    int status = rt_tok_encode(t, text, len, "<fuzz>", &ids, &n, sink);
    ir_diag_free(sink);
    if (status != 0)
        return; /* invalid UTF-8 in the fuzz bytes */
    size_t back_len = 0;
    char *back = rt_tok_decode_bytes(t, ids, n, &back_len);
    if (!back || back_len != len || memcmp(back, text, len) != 0)
        abort();
    free(back);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    set_up_once();
    if (size == 0)
        return 0;
    const char *rest = (const char *)data + 1;
    size_t rest_len = size - 1;

    switch (data[0] % 3) {
    case 0:
        write_file(encoder_path, rest, rest_len);
        write_file(vocab_path, small_merges, sizeof small_merges - 1);
        break;
    case 1:
        write_file(encoder_path, small_encoder, strlen(small_encoder));
        write_file(vocab_path, rest, rest_len);
        break;
    default: {
        const char *nul = memchr(rest, '\0', rest_len);
        size_t encoder_len = nul ? (size_t)(nul - rest) : rest_len;
        write_file(encoder_path, rest, encoder_len);
        write_file(vocab_path, rest + encoder_len + (nul != NULL), rest_len - encoder_len - (nul != NULL));
        break;
    }
    }

    ir_diag *sink = ir_diag_new(dev_null);
    rt_tokenizer *t = rt_tok_load(encoder_path, vocab_path, sink);
    int errors = ir_diag_error_count(sink);
    ir_diag_free(sink);
    if (t ? errors != 0 : errors != 1)
        abort();
    if (t) {
        static const char sample[] = "hello hell, <|endoftext|> llll\n\xc3\xa9\xf0\x9f\x98\x80";
        check_round_trip(t, sample, sizeof sample - 1);
        check_round_trip(t, rest, rest_len);
        rt_tok_free(t);
    }
    return 0;
}
