/* Tests of the GPT-2 tokenizer: known GPT-2 ids, round trips over many
 * scripts, the word cache, and the exact diagnostics for malformed
 * tokenizer files and invalid UTF-8.
 *
 * The expected ids come from encoder.json lookups (for example "Ġworld" is
 * 995) and were cross-checked with a separate Python implementation of
 * encoder.py's algorithm that uses Python's regex module. */
#include "runtime/tokenizer.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/check.h"

#define ENCODER_PATH "data/tokenizer/encoder.json"
#define VOCAB_PATH "data/tokenizer/vocab.bpe"

static void check_text_at(const char *got, const char *want, int line)
{
    if (got && strcmp(got, want) == 0) {
        check_passed++;
        return;
    }
    check_failed++;
    fprintf(stderr, "%s:%d: check failed: text differs\n--- got:\n%s\n--- expected:\n%s\n", __FILE__, line,
            got ? got : "(null)", want);
}
#define CHECK_TEXT(got, want) check_text_at(got, want, __LINE__)

/* Encodes text with a throwaway sink and returns the ids (NULL when empty
 * or on error); *n gets the count and *status the return value. */
static int32_t *encode(rt_tokenizer *t, const char *text, size_t len, size_t *n, int *status)
{
    ir_diag *d = ir_diag_new(stderr);
    int32_t *ids = NULL;
    *status = rt_tok_encode(t, text, len, NULL, &ids, n, d);
    ir_diag_free(d);
    return ids;
}

static void check_ids_at(rt_tokenizer *t, const char *text, const int32_t *want, size_t want_n, int line)
{
    size_t n = 0;
    int status;
    int32_t *ids = encode(t, text, strlen(text), &n, &status);
    bool same = status == 0 && n == want_n && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (same) {
        check_passed++;
    } else {
        check_failed++;
        fprintf(stderr, "%s:%d: check failed: ids of \"%s\":", __FILE__, line, text);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, " (expected");
        for (size_t i = 0; i < want_n; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, ")\n");
    }
    free(ids);
}
#define CHECK_IDS(t, text, ...)                                                                    \
    do {                                                                                           \
        const int32_t want_[] = {__VA_ARGS__};                                                     \
        check_ids_at(t, text, want_, sizeof want_ / sizeof want_[0], __LINE__);                   \
    } while (0)

/* Checks that decode(encode(text)) gives back the same bytes. */
static void check_round_trip_at(rt_tokenizer *t, const char *text, size_t len, int line)
{
    size_t n = 0, back_len = 0;
    int status;
    int32_t *ids = encode(t, text, len, &n, &status);
    char *back = status == 0 ? rt_tok_decode_bytes(t, ids, n, &back_len) : NULL;
    if (back && back_len == len && memcmp(back, text, len) == 0) {
        check_passed++;
    } else {
        check_failed++;
        fprintf(stderr, "%s:%d: check failed: round trip of %zu bytes (status %d, %zu bytes back)\n", __FILE__,
                line, len, status, back_len);
    }
    free(ids);
    free(back);
}
#define CHECK_ROUND_TRIP(t, text) check_round_trip_at(t, text, strlen(text), __LINE__)

/* ---- Known ids ---- */

static void test_known_ids(rt_tokenizer *t)
{
    CHECK_IDS(t, "Hello world", 15496, 995);
    CHECK_IDS(t, "hello world", 31373, 995);
    CHECK_IDS(t, " Hello", 18435);
    CHECK_IDS(t, "Hello, world!", 15496, 11, 995, 0);
    CHECK_IDS(t, "<|endoftext|>", 50256);
    CHECK_IDS(t, "a<|endoftext|>b", 64, 50256, 65);
    /* The space before the special token is a segment of its own, so it is
     * not glued to "<|" as " ?[^\s\p{L}\p{N}]+" would do. */
    CHECK_IDS(t, " <|endoftext|> ", 220, 50256, 220);
    CHECK_IDS(t, "<|endoftext|><|endoftext|>", 50256, 50256);
}

static void test_contractions(rt_tokenizer *t)
{
    CHECK_IDS(t, "I'm", 40, 1101);      /* "I", "'m" */
    CHECK_IDS(t, "don't", 9099, 470);   /* "don", "'t" */
    CHECK_IDS(t, "they'll", 9930, 1183); /* "they", "'ll" */
    /* The contraction alternatives are lower-case only, so "'M" splits
     * into "'" (6) and "M" (44). */
    CHECK_IDS(t, "I'M", 40, 6, 44);
    CHECK_IDS(t, "it's 3.14", 270, 338, 513, 13, 1415);
}

static void test_whitespace_runs(rt_tokenizer *t)
{
    /* "\s+(?!\S)" leaves the last space of a run for " ?\p{L}+", so "a  b"
     * splits into "a", " " (220) and " b" (275). */
    CHECK_IDS(t, "a  b", 64, 220, 275);
    /* Newlines have no optional-space alternative: "a\n\n\nb" splits into
     * "a", "\n\n" (628), "\n" (198) and "b". */
    CHECK_IDS(t, "a\n\n\nb", 64, 628, 198, 65);
    /* Trailing spaces stay one piece, and GPT-2 has no multi-space token. */
    CHECK_IDS(t, "x   ", 87, 220, 220, 220);
    CHECK_IDS(t, "\n", 198);
    CHECK_ROUND_TRIP(t, "   leading spaces");
    CHECK_ROUND_TRIP(t, "tabs\t\tand\r\nCRLF\r\n");
    CHECK_ROUND_TRIP(t, "\xc2\xa0no-break\xe3\x80\x80ideographic\xe2\x80\xa8line separator\xc2\x85next line");
}

static void test_digits_and_punctuation(rt_tokenizer *t)
{
    CHECK_IDS(t, "12345", 10163, 2231); /* "123", "45" */
    CHECK_IDS(t, " 2024", 48609);
    CHECK_ROUND_TRIP(t, "3.14159 + 2.71828 = 5.85987; 1,000,000 (one million)");
    CHECK_ROUND_TRIP(t, "!!!??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ||| ~~~ `code`");
    CHECK_ROUND_TRIP(t, "\xd9\xa3\xd9\xa4 \xe2\x85\xab \xc2\xb2"); /* Arabic-Indic digits, Roman numeral, superscript */
}

static void test_scripts_and_emoji(rt_tokenizer *t)
{
    /* "你好，世界": Chinese characters split into bytes GPT-2 never merged. */
    CHECK_IDS(t, "\xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c", 19526, 254, 25001, 121, 171, 120, 234,
              10310, 244, 45911, 234);
    /* "Привет, мир!" */
    CHECK_IDS(t, "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82, \xd0\xbc\xd0\xb8\xd1\x80!", 140, 253, 21169, 18849,
              38857, 16843, 20375, 11, 12466, 120, 18849, 21169, 0);
    /* U+1F600 GRINNING FACE, F0 9F 98 80: "\xf0\x9f\x98" is token 47249
     * and byte 0x80 alone is token 222. */
    CHECK_IDS(t, "\xf0\x9f\x98\x80", 47249, 222);

    /* "مرحبا بالعالم" */
    static const char arabic[] = "\xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7 "
                                 "\xd8\xa8\xd8\xa7\xd9\x84\xd8\xb9\xd8\xa7\xd9\x84\xd9\x85";
    CHECK_IDS(t, arabic, 25405, 26897, 148, 255, 39848, 12919, 17550, 101, 23525, 44690, 23525, 25405);
    CHECK_ROUND_TRIP(t, arabic);

    /* Thumbs up with a skin tone, a ZWJ family sequence and a flag. */
    CHECK_ROUND_TRIP(t, "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d"
                        "\xf0\x9f\x91\xa7 \xf0\x9f\x87\xab\xf0\x9f\x87\xb7");
    /* A combining accent, a byte order mark and U+10FFFF. */
    CHECK_ROUND_TRIP(t, "e\xcc\x81 vs \xc3\xa9, \xef\xbb\xbf BOM, \xf4\x8f\xbf\xbf max code point");
    /* Devanagari, Hangul and Greek. */
    CHECK_ROUND_TRIP(t, "\xe0\xa4\xa8\xe0\xa4\xae\xe0\xa4\xb8\xe0\xa5\x8d\xe0\xa4\xa4\xe0\xa5\x87 "
                        "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 "
                        "\xce\x95\xce\xbb\xce\xbb\xce\xb7\xce\xbd\xce\xb9\xce\xba\xce\xac");
    /* GPT-2's \s is Unicode White_Space, which leaves out U+180E (E1 A0 8E),
     * so " \u180e!" is one " ?[^\s\p{L}\p{N}]+" piece and "\n\n\u180e" keeps
     * one newline for "\s+(?!\S)". PCRE2's own \s would give 220 first and
     * 628 (two newlines) instead. */
    CHECK_IDS(t, " \xe1\xa0\x8e!", 28053, 254, 236, 0);
    CHECK_IDS(t, "\n\n\xe1\xa0\x8e", 198, 198, 157, 254, 236);
}

static void test_nul_and_control_bytes(rt_tokenizer *t)
{
    static const char text[] = "a\0b\x01\x1f\x7f";
    size_t len = sizeof text - 1;
    size_t n = 0;
    int status;
    int32_t *ids = encode(t, text, len, &n, &status);
    CHECK_EQ_INT(status, 0);
    CHECK(n >= 3);
    free(ids);
    check_round_trip_at(t, text, len, __LINE__);
}

static void test_empty_text(rt_tokenizer *t)
{
    size_t n = 99;
    int status;
    int32_t *ids = encode(t, "", 0, &n, &status);
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(n, 0);
    free(ids);
}

static void test_partial_special_token(rt_tokenizer *t)
{
    size_t n = 0;
    int status;
    int32_t *ids = encode(t, "<|endoftext| <|endoftext", 24, &n, &status);
    CHECK_EQ_INT(status, 0);
    for (size_t i = 0; i < n; i++)
        CHECK(ids[i] != 50256);
    free(ids);
    CHECK_ROUND_TRIP(t, "<|endoftext| <|endoftext");
}

/* ---- Decoding ---- */

static void test_decode_tokens(rt_tokenizer *t)
{
    char buf[32];
    CHECK_EQ_INT(rt_tok_decode_token(t, 198, buf, sizeof buf), 1);
    CHECK_EQ_INT(buf[0], '\n');
    /* "Ā" (U+0100) is byte 0, the first of the 68 remapped bytes, which
     * follow the 188 printable ones in encoder.json. */
    CHECK_EQ_INT(rt_tok_decode_token(t, 188, buf, sizeof buf), 1);
    CHECK_EQ_INT(buf[0], 0);
    CHECK_EQ_INT(rt_tok_decode_token(t, 220, buf, sizeof buf), 1);
    CHECK_EQ_INT(buf[0], ' ');
    CHECK_EQ_INT(rt_tok_decode_token(t, 47249, buf, sizeof buf), 3);
    CHECK(memcmp(buf, "\xf0\x9f\x98", 3) == 0);

    /* A short buffer gets a prefix and the return value is the full length. */
    memset(buf, '#', sizeof buf);
    CHECK_EQ_INT(rt_tok_decode_token(t, 15496, buf, 3), 5);
    CHECK(memcmp(buf, "Hel#", 4) == 0);

    CHECK_EQ_INT(rt_tok_decode_token(t, -1, buf, sizeof buf), 0);
    CHECK_EQ_INT(rt_tok_decode_token(t, 50257, buf, sizeof buf), 0);

    size_t len = 0;
    const char *bytes = rt_tok_token_bytes(t, 50256, &len);
    CHECK(bytes != NULL);
    CHECK_EQ_INT(len, 13);
    if (bytes)
        CHECK(memcmp(bytes, "<|endoftext|>", 13) == 0);
    CHECK(rt_tok_token_bytes(t, 50257, &len) == NULL);
}

static void test_decode_sequences(rt_tokenizer *t)
{
    const int32_t hello[] = {15496, 11, 995, 0};
    char *text = rt_tok_decode(t, hello, 4);
    CHECK_TEXT(text, "Hello, world!");
    free(text);

    text = rt_tok_decode(t, NULL, 0);
    CHECK_TEXT(text, "");
    free(text);

    const int32_t bad[] = {15496, 50257};
    CHECK(rt_tok_decode(t, bad, 2) == NULL);
    const int32_t negative[] = {-5};
    CHECK(rt_tok_decode(t, negative, 1) == NULL);

    /* Stopping inside a character gives its first bytes. */
    const int32_t partial[] = {47249};
    size_t len = 0;
    text = rt_tok_decode_bytes(t, partial, 1, &len);
    CHECK_EQ_INT(len, 3);
    CHECK(text != NULL);
    if (text)
        CHECK(memcmp(text, "\xf0\x9f\x98", 4) == 0);
    free(text);
}

/* ---- Round trips over longer text ---- */

static const char sample_text[] =
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! the quick brown fox?\n"
    "It's a truth universally acknowledged, that a single man in possession of a good fortune,\n"
    "must be in want of a wife. We'd've thought you'll know; they're sure I'm right, aren't they?\n"
    "\n"
    "    def encode(self, text):\n"
    "        return [self.encoder[t] for t in self.bpe(text)]  # 4 spaces, then 8\n"
    "\tif (x != 0 && y <= 0x7fffffff) { z += x >> 3; }\n"
    "\n\n\n"
    "Numbers: 0 1 12 123 1234 12345 123456 3.14159 -42 +7 1e10 0xDEADBEEF 2024-12-04 22:40:00\n"
    "Prices: $19.99, \xe2\x82\xac" "5, \xc2\xa3" "3.50, \xc2\xa5" "1000. Percent: 45%. Email: someone@example.com\n"
    "URLs: https://example.com/path?query=1&other=two#frag\n"
    "Quotes: \xe2\x80\x9c" "curly\xe2\x80\x9d \xe2\x80\x98single\xe2\x80\x99 \xc2\xab" "guillemets\xc2\xbb "
    "em\xe2\x80\x94" "dash en\xe2\x80\x93" "dash ellipsis\xe2\x80\xa6\n"
    "Deutsch: Gr\xc3\xbc\xc3\x9f" "e aus M\xc3\xbcnchen, sch\xc3\xb6ne Stra\xc3\x9f" "e.\n"
    "Fran\xc3\xa7" "ais: o\xc3\xb9 est la biblioth\xc3\xa8que? \xc3\x80 bient\xc3\xb4t.\n"
    "Espa\xc3\xb1ol: \xc2\xbf" "D\xc3\xb3nde est\xc3\xa1 el ni\xc3\xb1o? \xc2\xa1Ma\xc3\xb1" "ana!\n"
    "\xd0\xa0\xd1\x83\xd1\x81\xd1\x81\xd0\xba\xd0\xb8\xd0\xb9: \xd0\xa1\xd1\x8a\xd0\xb5\xd1\x88\xd1\x8c "
    "\xd0\xb6\xd0\xb5 \xd0\xb5\xd1\x89\xd1\x91 \xd1\x8d\xd1\x82\xd0\xb8\xd1\x85 \xd0\xbc\xd1\x8f\xd0\xb3\xd0\xba"
    "\xd0\xb8\xd1\x85 \xd1\x84\xd1\x80\xd0\xb0\xd0\xbd\xd1\x86\xd1\x83\xd0\xb7\xd1\x81\xd0\xba\xd0\xb8\xd1\x85 "
    "\xd0\xb1\xd1\x83\xd0\xbb\xd0\xbe\xd0\xba.\n"
    "\xe4\xb8\xad\xe6\x96\x87: \xe6\x88\x91\xe4\xbb\xac\xe7\x94\xa8\xe5\xad\x97\xe8\x8a\x82\xe7\xba\xa7\xe7\x9a\x84 "
    "BPE \xe5\x88\x86\xe8\xaf\x8d\xe3\x80\x82\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86\xe3\x82\xad"
    "\xe3\x82\xb9\xe3\x83\x88\xe3\x82\x82\xe3\x81\x82\xe3\x82\x8b\xe3\x80\x82\n"
    "\xd8\xa7\xd9\x84\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a\xd8\xa9: \xd9\x85\xd8\xb1\xd8\xad\xd8\xa8\xd8\xa7 "
    "\xd8\xa8\xd8\xa7\xd9\x84\xd8\xb9\xd8\xa7\xd9\x84\xd9\x85 \xd9\xa1\xd9\xa2\xd9\xa3.\n"
    "\xd7\xa2\xd7\x91\xd7\xa8\xd7\x99\xd7\xaa: \xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d. "
    "\xe0\xb9\x84\xe0\xb8\x97\xe0\xb8\xa2: \xe0\xb8\xaa\xe0\xb8\xa7\xe0\xb8\xb1\xe0\xb8\xaa\xe0\xb8\x94\xe0\xb8\xb5.\n"
    "Emoji: \xf0\x9f\x98\x80\xf0\x9f\x98\x82\xf0\x9f\x8e\x89 \xe2\x9c\x85 \xe2\x9d\xa4\xef\xb8\x8f "
    "\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb \xf0\x9f\x8f\xb3\xef\xb8\x8f\xe2\x80\x8d\xf0\x9f\x8c\x88\n"
    "Math: \xe2\x88\x80x \xe2\x88\x88 \xe2\x84\x9d, x\xc2\xb2 \xe2\x89\xa5 0; \xe2\x88\x91 \xe2\x88\xab "
    "\xe2\x88\x9e \xcf\x80 \xce\xbb \xce\x94\n"
    "<|endoftext|>A new document starts after the end-of-text token.<|endoftext|>\n"
    "Trailing spaces   \n"
    "Lines that end with tabs\t\t\n"
    "   \n"
    "A compiler for quantized models reads a graph of tensor operations, chooses a number format for each\n"
    "weight matrix and emits code that multiplies 4-bit or 8-bit integers before it rescales the sums to\n"
    "floating point. Calibration runs a few hundred sequences through the model and records the range of\n"
    "every activation; outliers (values far from the mean) decide whether a per-channel scale is needed.\n"
    "Perplexity on held-out text measures the damage: a rise from 29.41 to 29.97 is usually acceptable,\n"
    "while a jump to 45 or more means that some layer lost too much precision and should stay in FP16.\n"
    "\n"
    "struct block_q4 { float scale; uint8_t nibbles[16]; };   // 32 weights in 20 bytes\n"
    "for (int i = 0; i < n; i += 32) { sum += dot_q4(&w[i / 32], &x[i]); }\n"
    "$ quadc --quantize=int4 --group-size=32 model.safetensors -o model.q4 && echo \"done\" | tee log.txt\n"
    "\n"
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May, And summer's lease hath all too short a date;\n"
    "Sometime too hot the eye of heaven shines, And often is his gold complexion dimm'd;\n"
    "And every fair from fair sometime declines, By chance or nature's changing course untrimm'd;\n"
    "But thy eternal summer shall not fade, Nor lose possession of that fair thou ow'st;\n"
    "Nor shall Death brag thou wander'st in his shade, When in eternal lines to time thou grow'st:\n"
    "So long as men can breathe or eyes can see, So long lives this, and this gives life to thee.\n"
    "\n"
    "KING HENRY: Once more unto the breach, dear friends, once more; Or close the wall up with our English dead.\n"
    "ROMEO: But, soft! what light through yonder window breaks? It is the east, and Juliet is the sun.\n"
    "  - item one\n  - item two\n    * nested item with `inline code` and **bold** and _italic_\n"
    "| col A | col B |\n|-------|-------|\n| 1.5   | -2e-3 |\n"
    "{\"json\": [1, 2.5, true, null, \"str\\u00e9\"], \"key\": {\"nested\": \"value\"}}\n"
    "<html><body class=\"main\"><p>Paragraph &amp; entity &#169; &lt;tag&gt;</p></body></html>\n"
    "Last line without a newline, followed by spaces   ";

static void test_sample_round_trip(rt_tokenizer *t)
{
    CHECK_ROUND_TRIP(t, sample_text);

    size_t n = 0;
    int status;
    int32_t *ids = encode(t, sample_text, sizeof sample_text - 1, &n, &status);
    CHECK_EQ_INT(status, 0);
    size_t eot_count = 0;
    for (size_t i = 0; i < n; i++)
        eot_count += ids[i] == 50256;
    CHECK_EQ_INT(eot_count, 2);
    /* The count and the first sentence ("The quick brown fox jumps over the
     * lazy dog.") match the Python cross-check. */
    CHECK_EQ_INT(n, 1200);
    const int32_t first_sentence[] = {464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13};
    CHECK(n >= 10);
    if (n >= 10)
        CHECK(memcmp(ids, first_sentence, sizeof first_sentence) == 0);

    /* A second pass is served from the word cache and must agree. */
    size_t n2 = 0;
    int32_t *ids2 = encode(t, sample_text, sizeof sample_text - 1, &n2, &status);
    CHECK_EQ_INT(n2, n);
    if (n2 == n)
        CHECK(memcmp(ids, ids2, n * sizeof *ids) == 0);
    free(ids);
    free(ids2);
}

/* Encodes more distinct words than the cache holds, so the cache is
 * cleared midway, and checks that the ids still agree with a second
 * tokenizer that encodes one word per call. */
static void test_cache_clearing(rt_tokenizer *t, rt_tokenizer *fresh)
{
    enum { WORDS = 70000 };
    char *text = malloc((size_t)WORDS * 6 + 1);
    size_t len = 0;
    for (int i = 0; i < WORDS; i++) {
        text[len++] = ' ';
        text[len++] = (char)('a' + i % 26);
        text[len++] = (char)('a' + i / 26 % 26);
        text[len++] = (char)('a' + i / 676 % 26);
        text[len++] = (char)('a' + i / 17576 % 26);
    }
    text[len] = '\0';

    size_t n = 0, n2 = 0;
    int status, status2;
    int32_t *ids = encode(t, text, len, &n, &status);
    int32_t *again = encode(t, text, len, &n2, &status2);
    CHECK_EQ_INT(status, 0);
    CHECK_EQ_INT(status2, 0);
    CHECK_EQ_INT(n2, n);
    if (n2 == n)
        CHECK(memcmp(ids, again, n * sizeof *ids) == 0);
    check_round_trip_at(t, text, len, __LINE__);

    /* Spot-check words from both sides of the clearing point. */
    int mismatches = 0;
    size_t pos = 0;
    for (int i = 0; i < WORDS && pos < n; i++) {
        size_t word_n = 0;
        int word_status;
        int32_t *word = encode(fresh, text + (size_t)i * 5, 5, &word_n, &word_status);
        if (i % 997 == 0 || i > WORDS - 50)
            mismatches += word_status != 0 || pos + word_n > n || memcmp(ids + pos, word, word_n * sizeof *word) != 0;
        pos += word_n;
        free(word);
    }
    CHECK_EQ_INT(mismatches, 0);
    CHECK_EQ_INT(pos, n);
    free(ids);
    free(again);
    free(text);
}

/* ---- Invalid UTF-8 ---- */

static void check_utf8_error_at(rt_tokenizer *t, const char *text, size_t len, const char *want, int line)
{
    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);
    ir_diag *d = ir_diag_new(f);
    int32_t placeholder = 0;
    int32_t *ids = &placeholder;
    size_t n = 99;
    int status = rt_tok_encode(t, text, len, "notes.txt", &ids, &n, d);
    ir_diag_free(d);
    fclose(f);
    if (status == -1 && ids == NULL && n == 0) {
        check_passed++;
    } else {
        check_failed++;
        fprintf(stderr, "%s:%d: check failed: expected encode to fail with no ids\n", __FILE__, line);
    }
    check_text_at(out, want, line);
    free(out);
}
#define CHECK_UTF8_ERROR(t, text, want) check_utf8_error_at(t, text, sizeof text - 1, want, __LINE__)

static void test_invalid_utf8(rt_tokenizer *t)
{
    CHECK_UTF8_ERROR(t, "abc\xff",
                     "notes.txt: error: invalid UTF-8 at byte offset 3 (byte 0xFF: invalid start byte); the text "
                     "must be UTF-8\n");
    CHECK_UTF8_ERROR(t, "\x80",
                     "notes.txt: error: invalid UTF-8 at byte offset 0 (byte 0x80: unexpected continuation byte); "
                     "the text must be UTF-8\n");
    CHECK_UTF8_ERROR(t, "ok \xe4\xbd",
                     "notes.txt: error: invalid UTF-8 at byte offset 3 (byte 0xE4: truncated sequence at the end); "
                     "the text must be UTF-8\n");
    CHECK_UTF8_ERROR(t, "\xe4\xbd\xa0\xe4z",
                     "notes.txt: error: invalid UTF-8 at byte offset 3 (byte 0xE4: missing continuation byte); the "
                     "text must be UTF-8\n");
    CHECK_UTF8_ERROR(t, "x\xc0\xaf",
                     "notes.txt: error: invalid UTF-8 at byte offset 1 (byte 0xC0: overlong encoding); the text must "
                     "be UTF-8\n");
    CHECK_UTF8_ERROR(t, "\xe0\x80\xaf",
                     "notes.txt: error: invalid UTF-8 at byte offset 0 (byte 0xE0: overlong encoding); the text must "
                     "be UTF-8\n");
    CHECK_UTF8_ERROR(t, "\xed\xa0\x80",
                     "notes.txt: error: invalid UTF-8 at byte offset 0 (byte 0xED: UTF-16 surrogate); the text must "
                     "be UTF-8\n");
    CHECK_UTF8_ERROR(t, "\xf4\x90\x80\x80",
                     "notes.txt: error: invalid UTF-8 at byte offset 0 (byte 0xF4: code point above U+10FFFF); the "
                     "text must be UTF-8\n");
    /* The error must come before any special-token handling. */
    CHECK_UTF8_ERROR(t, "<|endoftext|>\xfe",
                     "notes.txt: error: invalid UTF-8 at byte offset 13 (byte 0xFE: invalid start byte); the text "
                     "must be UTF-8\n");

    /* Without a source name the message names "<text>". */
    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);
    ir_diag *d = ir_diag_new(f);
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK_EQ_INT(rt_tok_encode(t, "\xc3", 1, NULL, &ids, &n, d), -1);
    ir_diag_free(d);
    fclose(f);
    CHECK_TEXT(out, "<text>: error: invalid UTF-8 at byte offset 0 (byte 0xC3: truncated sequence at the end); the "
                    "text must be UTF-8\n");
    free(out);
}

/* ---- Malformed tokenizer files ---- */

static char temp_dir[64];
static char encoder_path[128];
static char vocab_path[128];

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fwrite(text, 1, len, f);
    fclose(f);
}

/* Appends the JSON string body of the byte-to-unicode character for byte
 * b: printable bytes stand for themselves, the others map to U+0100 and up
 * in byte order. */
static size_t append_byte_symbol(char *out, int b)
{
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    unsigned cp;
    if (printable) {
        cp = (unsigned)b;
    } else {
        cp = 256;
        for (int i = 0; i < b; i++)
            cp += !((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255));
    }
    if (cp == '"' || cp == '\\')
        return (size_t)sprintf(out, "\\%c", (char)cp);
    if (cp < 0x80)
        return (size_t)sprintf(out, "%c", (char)cp);
    return (size_t)sprintf(out, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 0x3F)));
}

/* Builds a small encoder.json: byte b gets id b, except that skip_byte
 * (when not -1) is left out, and `extra` is appended as more JSON members. */
static char *small_encoder(int skip_byte, const char *extra)
{
    char *json = malloc(256 * 16 + strlen(extra) + 8);
    size_t o = 0;
    json[o++] = '{';
    for (int b = 0; b < 256; b++) {
        if (b == skip_byte)
            continue;
        if (o > 1)
            json[o++] = ',';
        json[o++] = '"';
        o += append_byte_symbol(json + o, b);
        o += (size_t)sprintf(json + o, "\":%d", b);
    }
    o += (size_t)sprintf(json + o, "%s}", extra);
    return json;
}

/* A valid small tokenizer: "he", "ll" and "hell" are merges 256 to 258. */
static const char small_extra[] = ",\"he\":256,\"ll\":257,\"hell\":258,\"<|endoftext|>\":259";
static const char small_merges[] = "#version: 0.2\nh e\nl l\nhe ll\n";

/* Loads the two texts as tokenizer files and returns the diagnostics; a
 * load that succeeds is a failed check. */
static char *load_error_at(const char *encoder, const char *vocab, int line)
{
    write_file(encoder_path, encoder, strlen(encoder));
    write_file(vocab_path, vocab, strlen(vocab));
    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);
    ir_diag *d = ir_diag_new(f);
    rt_tokenizer *t = rt_tok_load(encoder_path, vocab_path, d);
    if (!t && ir_diag_error_count(d) == 1) {
        check_passed++;
    } else {
        check_failed++;
        fprintf(stderr, "%s:%d: check failed: expected the load to fail with one error\n", __FILE__, line);
    }
    rt_tok_free(t);
    ir_diag_free(d);
    fclose(f);
    return out;
}

/* Copies template to out with its first "%s" replaced by first and the
 * second by second (the temporary file paths). */
static void fill_paths(char *out, size_t cap, const char *template, const char *first, const char *second)
{
    size_t o = 0;
    int filled = 0;
    for (const char *p = template; *p && o + 1 < cap; p++) {
        if (p[0] == '%' && p[1] == 's' && filled < 2) {
            const char *path = filled++ == 0 ? first : second;
            size_t n = strlen(path) < cap - 1 - o ? strlen(path) : cap - 1 - o;
            memcpy(out + o, path, n);
            o += n;
            p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

/* Checks the diagnostic of loading a broken encoder.json next to the
 * valid small merges; "%s" in want_template stands for the encoder path. */
static void check_encoder_error_at(const char *encoder, const char *want_template, int line)
{
    char *got = load_error_at(encoder, small_merges, line);
    char want[1024];
    fill_paths(want, sizeof want, want_template, encoder_path, NULL);
    check_text_at(got, want, line);
    free(got);
}
#define CHECK_ENCODER_ERROR(encoder, want) check_encoder_error_at(encoder, want, __LINE__)

/* Checks the diagnostic of loading broken merges next to the valid small
 * encoder.json. In want_template the first "%s" stands for the merges path
 * and the second for the encoder path. */
static void check_merges_error_at(const char *vocab, const char *want_template, int line)
{
    char *encoder = small_encoder(-1, small_extra);
    char *got = load_error_at(encoder, vocab, line);
    char want[1024];
    fill_paths(want, sizeof want, want_template, vocab_path, encoder_path);
    check_text_at(got, want, line);
    free(got);
    free(encoder);
}
#define CHECK_MERGES_ERROR(vocab, want) check_merges_error_at(vocab, want, __LINE__)

static void test_small_tokenizer(void)
{
    char *encoder = small_encoder(-1, small_extra);
    write_file(encoder_path, encoder, strlen(encoder));
    write_file(vocab_path, small_merges, strlen(small_merges));
    free(encoder);

    ir_diag *d = ir_diag_new(stderr);
    rt_tokenizer *t = rt_tok_load(encoder_path, vocab_path, d);
    CHECK(t != NULL);
    CHECK_EQ_INT(ir_diag_error_count(d), 0);
    ir_diag_free(d);
    if (!t)
        return;
    CHECK_EQ_INT(rt_tok_vocab_size(t), 260);
    CHECK_EQ_INT(rt_tok_eot(t), 259);
    CHECK_IDS(t, "hello", 258, 'o');
    CHECK_IDS(t, "hel", 256, 'l');
    CHECK_IDS(t, "lll", 257, 'l'); /* occurrences merge left to right */
    CHECK_IDS(t, "llll", 257, 257);
    CHECK_IDS(t, "hehell", 256, 258);
    CHECK_IDS(t, " hell", ' ', 258);
    CHECK_IDS(t, "x<|endoftext|>", 'x', 259);
    rt_tok_free(t);
}

static void test_bad_encoder_files(void)
{
    char *json;

    CHECK_ENCODER_ERROR("[1, 2]", "%s: error: the top-level value is an array; expected an object that maps token "
                                  "strings to ids\n");
    CHECK_ENCODER_ERROR("{}", "%s: error: the object is empty; expected an object that maps token strings to ids\n");
    CHECK_ENCODER_ERROR("{\n\"a\" 1}", "%s:2:5: error: invalid JSON at byte offset 6; expected an object that maps "
                                       "token strings to ids\n");
    CHECK_ENCODER_ERROR("{\"a\": 0", "%s:1:8: error: invalid JSON at byte offset 7; expected an object that maps "
                                     "token strings to ids\n");
    CHECK_ENCODER_ERROR("{\"a\": 0} x", "%s:1:10: error: invalid JSON at byte offset 9; expected an object that maps "
                                        "token strings to ids\n");
    CHECK_ENCODER_ERROR("", "%s:1:1: error: invalid JSON at byte offset 0; expected an object that maps token "
                            "strings to ids\n");

    json = small_encoder(-1, ",\"he\":\"256\",\"ll\":257,\"hell\":258,\"<|endoftext|>\":259");
    CHECK_ENCODER_ERROR(json, "%s: error: entry 257 (\"he\"): the id is a string; expected an integer\n");
    free(json);

    json = small_encoder(-1, ",\"he\":256.5,\"ll\":257,\"hell\":258,\"<|endoftext|>\":259");
    CHECK_ENCODER_ERROR(json, "%s: error: entry 257 (\"he\"): the id 256.5 is not an integer\n");
    free(json);

    json = small_encoder(-1, ",\"he\":-1,\"ll\":257,\"hell\":258,\"<|endoftext|>\":259");
    CHECK_ENCODER_ERROR(json, "%s: error: entry 257 (\"he\"): the id -1 is out of range; the 260 entries must use "
                              "the ids 0 to 259\n");
    free(json);

    /* Two tokens with id 257, so 256 has no token. */
    json = small_encoder(-1, ",\"he\":257,\"ll\":257,\"hell\":258,\"<|endoftext|>\":259");
    CHECK_ENCODER_ERROR(json, "%s: error: no entry has the id 256; the 260 entries must use the ids 0 to 259\n");
    free(json);

    json = small_encoder(-1, ",\"he\":256,\"ll\":256,\"hell\":258,\"<|endoftext|>\":259");
    CHECK_ENCODER_ERROR(json, "%s: error: entry 258 (\"ll\"): the id 256 is already used by entry 257 (\"he\")\n");
    free(json);

    /* A missing entry leaves a gap below the largest id. */
    json = small_encoder(-1, ",\"ll\":257,\"hell\":258,\"<|endoftext|>\":259");
    CHECK_ENCODER_ERROR(json, "%s: error: no entry has the id 256; the 259 entries must use the ids 0 to 258\n");
    free(json);

    json = small_encoder(-1, ",\"he\":256,\"he\":257,\"hell\":258,\"<|endoftext|>\":259");
    CHECK_ENCODER_ERROR(json, "%s: error: entry 258 (\"he\"): duplicate token string; entry 257 has it too\n");
    free(json);

    /* A plain space is not in the alphabet: byte 0x20 is written "Ġ". */
    json = small_encoder(-1, ",\"h e\":256,\"ll\":257,\"hell\":258,\"<|endoftext|>\":259");
    CHECK_ENCODER_ERROR(json, "%s: error: entry 257 (\"h e\"): the token string contains U+0020, which is not in "
                              "GPT-2's byte-to-unicode alphabet\n");
    free(json);

    json = small_encoder(-1, ",\"\":256,\"ll\":257,\"hell\":258,\"<|endoftext|>\":259");
    CHECK_ENCODER_ERROR(json, "%s: error: entry 257: the token string is empty\n");
    free(json);

    json = small_encoder(-1, ",\"h\xff\":256,\"ll\":257,\"hell\":258,\"<|endoftext|>\":259");
    CHECK_ENCODER_ERROR(json, "%s: error: entry 257 (\"h\xff\"): the token string is not valid UTF-8 at byte 1 "
                              "(invalid start byte)\n");
    free(json);

    /* Byte 0x0A ("Ċ") is left out and its id goes to another string. */
    json = small_encoder(10, ",\"zz\":10,\"he\":256,\"ll\":257,\"hell\":258,\"<|endoftext|>\":259");
    CHECK_ENCODER_ERROR(json, "%s: error: the token for byte 0x0A (\"\xc4\x8a\", U+010A) is missing; every byte "
                              "needs one\n");
    free(json);

    json = small_encoder(-1, ",\"he\":256,\"ll\":257,\"hell\":258,\"<|endoftext|\":259");
    CHECK_ENCODER_ERROR(json, "%s: error: the token \"<|endoftext|>\" is missing\n");
    free(json);

    /* One token more than the bytes, the merges and the special token. */
    json = small_encoder(-1, ",\"he\":256,\"ll\":257,\"hell\":258,\"<|endoftext|>\":259,\"hello\":260");
    char *got = load_error_at(json, small_merges, __LINE__);
    char want[1024];
    snprintf(want, sizeof want,
             "%s: error: has 261 tokens, but %s needs 260: the 256 byte tokens, one token for each of its 3 merges "
             "and \"<|endoftext|>\"\n",
             encoder_path, vocab_path);
    CHECK_TEXT(got, want);
    free(got);
    free(json);

    /* A NUL byte would end the JSON text early, so it is rejected. */
    static const char with_nul[] = "{\"a\": 0}\0{";
    write_file(encoder_path, with_nul, sizeof with_nul - 1);
    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);
    ir_diag *d = ir_diag_new(f);
    CHECK(rt_tok_load(encoder_path, vocab_path, d) == NULL);
    ir_diag_free(d);
    fclose(f);
    snprintf(want, sizeof want, "%s: error: contains a NUL byte at byte offset 8; expected a JSON text\n",
             encoder_path);
    CHECK_TEXT(out, want);
    free(out);
}

static void test_bad_merge_files(void)
{
    CHECK_MERGES_ERROR("h e\nl l\nhe ll\n",
                       "%s:1:1: error: missing the \"#version\" line that starts a GPT-2 merges file (vocab.bpe)\n"
                       "h e\n"
                       "^\n");
    CHECK_MERGES_ERROR("", "%s:1:1: error: missing the \"#version\" line that starts a GPT-2 merges file "
                           "(vocab.bpe)\n"
                           "\n"
                           "^\n");
    CHECK_MERGES_ERROR("#version: 0.2\nh e\nl l x\nhe ll\n",
                       "%s:3:1: error: expected 2 symbols separated by one space, found 3\n"
                       "l l x\n"
                       "^~~~~\n");
    CHECK_MERGES_ERROR("#version: 0.2\nh e\nll\nhe ll\n",
                       "%s:3:1: error: expected 2 symbols separated by one space, found 1\n"
                       "ll\n"
                       "^~\n");
    CHECK_MERGES_ERROR("#version: 0.2\nh e\nl  l\nhe ll\n",
                       "%s:3:2: error: empty symbol; separate the two symbols with exactly one space\n"
                       "l  l\n"
                       " ^\n");
    CHECK_MERGES_ERROR("#version: 0.2\nh e\n\nl l\nhe ll\n",
                       "%s:3:1: error: empty line; expected two symbols separated by one space\n"
                       "\n"
                       "^\n");
    CHECK_MERGES_ERROR("#version: 0.2\nh e\nl lo\nhe ll\n",
                       "%s:3:3: error: the symbol \"lo\" is not a token in %s\n"
                       "l lo\n"
                       "  ^~\n");
    CHECK_MERGES_ERROR("#version: 0.2\nh e\nl \xc3\xbf\xc3\xbf\nhe ll\n",
                       "%s:3:3: error: the symbol \"\xc3\xbf\xc3\xbf\" is not a token in %s\n"
                       "l \xc3\xbf\xc3\xbf\n"
                       "  ^~\n");
    CHECK_MERGES_ERROR("#version: 0.2\nh e\nl \xe2\x82\xac\nhe ll\n",
                       "%s:3:3: error: the symbol \"\xe2\x82\xac\" contains U+20AC, which is not in GPT-2's "
                       "byte-to-unicode alphabet\n"
                       "l \xe2\x82\xac\n"
                       "  ^\n");
    /* "he ll" before "l l": the symbol "ll" does not exist yet. */
    CHECK_MERGES_ERROR("#version: 0.2\nh e\nhe ll\nl l\n",
                       "%s:3:4: error: the symbol \"ll\" is not a byte and no earlier line produces it; the merges "
                       "must be listed in training order\n"
                       "he ll\n"
                       "   ^~\n");
    CHECK_MERGES_ERROR("#version: 0.2\nh e\nl l\nhe ll\no o\n",
                       "%s:5:1: error: the merged token \"oo\" is not in %s\n"
                       "o o\n"
                       "^~~\n");
    CHECK_MERGES_ERROR("#version: 0.2\nh e\nl l\nh e\nhe ll\n",
                       "%s:4:1: error: duplicate merge; line 2 has the same pair\n"
                       "h e\n"
                       "^~~\n");
    /* "he l" followed by "hel l" and "he ll" make "hell" twice; with "hel"
     * in encoder.json, the second way to make "hell" is rejected. */
    char *encoder = small_encoder(-1, ",\"he\":256,\"ll\":257,\"hel\":258,\"hell\":259,\"<|endoftext|>\":260");
    char *got = load_error_at(encoder, "#version: 0.2\nh e\nl l\nhe l\nhel l\nhe ll\n", __LINE__);
    char want[1024];
    snprintf(want, sizeof want,
             "%s:6:1: error: the merged token is already produced by line 5; each merge must make a new token\n"
             "he ll\n"
             "^~~~~\n",
             vocab_path);
    CHECK_TEXT(got, want);
    free(got);
    free(encoder);

    /* CRLF line ends and a missing final newline are accepted. */
    encoder = small_encoder(-1, small_extra);
    write_file(encoder_path, encoder, strlen(encoder));
    static const char crlf[] = "#version: 0.2\r\nh e\r\nl l\r\nhe ll";
    write_file(vocab_path, crlf, sizeof crlf - 1);
    ir_diag *d = ir_diag_new(stderr);
    rt_tokenizer *t = rt_tok_load(encoder_path, vocab_path, d);
    CHECK(t != NULL);
    if (t)
        CHECK_IDS(t, "hello", 258, 'o');
    rt_tok_free(t);
    ir_diag_free(d);
    free(encoder);
}

static void test_missing_files(void)
{
    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);
    ir_diag *d = ir_diag_new(f);
    CHECK(rt_tok_load("no/such/encoder.json", VOCAB_PATH, d) == NULL);
    CHECK(rt_tok_load(ENCODER_PATH, "no/such/vocab.bpe", d) == NULL);
    ir_diag_free(d);
    fclose(f);
    CHECK_TEXT(out, "no/such/encoder.json: error: failed to open the tokenizer file: No such file or directory; the "
                    "GPT-2 files ship in data/tokenizer/\n"
                    "no/such/vocab.bpe: error: failed to open the tokenizer file: No such file or directory; the "
                    "GPT-2 files ship in data/tokenizer/\n");
    free(out);
}

int main(void)
{
    ir_diag *d = ir_diag_new(stderr);
    rt_tokenizer *t = rt_tok_load(ENCODER_PATH, VOCAB_PATH, d);
    rt_tokenizer *fresh = rt_tok_load(ENCODER_PATH, VOCAB_PATH, d);
    ir_diag_free(d);
    CHECK(t != NULL);
    CHECK(fresh != NULL);
    if (!t || !fresh)
        return check_finish();
    CHECK_EQ_INT(rt_tok_vocab_size(t), 50257);
    CHECK_EQ_INT(rt_tok_eot(t), 50256);

    test_known_ids(t);
    test_contractions(t);
    test_whitespace_runs(t);
    test_digits_and_punctuation(t);
    test_scripts_and_emoji(t);
    test_nul_and_control_bytes(t);
    test_empty_text(t);
    test_partial_special_token(t);
    test_decode_tokens(t);
    test_decode_sequences(t);
    test_sample_round_trip(t);
    test_cache_clearing(t, fresh);
    test_invalid_utf8(t);
    rt_tok_free(t);
    rt_tok_free(fresh);

    const char *tmp = getenv("TMPDIR");
    snprintf(temp_dir, sizeof temp_dir, "%s/quadc-tok-XXXXXX", tmp && strlen(tmp) < 32 ? tmp : "/tmp");
    if (!mkdtemp(temp_dir)) {
        perror(temp_dir);
        return 1;
    }
    snprintf(encoder_path, sizeof encoder_path, "%s/encoder.json", temp_dir);
    snprintf(vocab_path, sizeof vocab_path, "%s/vocab.bpe", temp_dir);
    test_small_tokenizer();
    test_bad_encoder_files();
    test_bad_merge_files();
    test_missing_files();
    remove(encoder_path);
    remove(vocab_path);
    rmdir(temp_dir);
    return check_finish();
}
