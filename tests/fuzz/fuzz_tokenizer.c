/* libFuzzer target: encodes arbitrary bytes with the real GPT-2 tokenizer.
 * Valid UTF-8 must encode to in-range ids that decode to the same bytes,
 * twice in a row (the second time through the word cache). Invalid UTF-8
 * must fail with one reported error and no ids.
 * Build and run it with scripts/fuzz.sh, which instruments the whole
 * library so libFuzzer gets coverage inside runtime/tokenizer.c. */
#include "runtime/tokenizer.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static rt_tokenizer *tokenizer;
static FILE *dev_null;

/* Checks UTF-8 validity by code point ranges, written apart from the
 * tokenizer's own validator so that the two can disagree. */
static bool is_valid_utf8(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t n;
        if (s[i] < 0x80) {
            i++;
            continue;
        } else if ((s[i] & 0xE0) == 0xC0) {
            n = 2;
            cp = s[i] & 0x1F;
        } else if ((s[i] & 0xF0) == 0xE0) {
            n = 3;
            cp = s[i] & 0x0F;
        } else if ((s[i] & 0xF8) == 0xF0) {
            n = 4;
            cp = s[i] & 0x07;
        } else {
            return false;
        }
        if (i + n > len)
            return false;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        static const uint32_t min_for_length[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_for_length[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n;
    }
    return true;
}

static void load_once(void)
{
    if (tokenizer)
        return;
    dev_null = fopen("/dev/null", "w");
    ir_diag *d = ir_diag_new(stderr);
    tokenizer = rt_tok_load(QUADC_SOURCE_DIR "/data/tokenizer/encoder.json",
                            QUADC_SOURCE_DIR "/data/tokenizer/vocab.bpe", d);
    ir_diag_free(d);
    if (!tokenizer || !dev_null)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    load_once();
    const char *text = (const char *)data;
    bool valid = is_valid_utf8(data, size);

    for (int pass = 0; pass < 2; pass++) {
        ir_diag *sink = ir_diag_new(dev_null);
        int32_t *ids = NULL;
        size_t n = 0;
        int status = rt_tok_encode(tokenizer, text, size, "<fuzz>", &ids, &n, sink);
        int errors = ir_diag_error_count(sink);
        ir_diag_free(sink);

        if (!valid) {
            if (status != -1 || ids != NULL || n != 0 || errors != 1)
                abort();
            return 0;
        }
        if (status != 0 || errors != 0)
            abort();
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= rt_tok_vocab_size(tokenizer))
                abort();
        size_t back_len = 0;
        char *back = rt_tok_decode_bytes(tokenizer, ids, n, &back_len);
        if (!back || back_len != size || memcmp(back, text, size) != 0)
            abort();
        free(back);
        free(ids);
    }
    return 0;
}
