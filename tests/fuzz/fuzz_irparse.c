/* libFuzzer target for the IR text parser: any input must parse or fail
 * with diagnostics, never crash. A graph that parses must print, parse back
 * and print again to the same bytes, and pass the verifier. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ir/text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Prints g into a malloc'd buffer. */
static char *print_to_string(const ir_graph *g, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f)
        abort();
    ir_print(f, g, NULL);
    fclose(f);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *sink = fopen("/dev/null", "w");
    ir_diag *d = ir_diag_new(sink);
    ir_graph *g = ir_parse_string("fuzz.qir", (const char *)data, size, d);
    if (g) {
        if (ir_verify(g, NULL) != 0)
            abort();
        size_t len1, len2;
        char *first = print_to_string(g, &len1);
        ir_graph *again = ir_parse_string("fuzz2.qir", first, len1, d);
        if (!again)
            abort();
        char *second = print_to_string(again, &len2);
        if (len1 != len2 || memcmp(first, second, len1) != 0)
            abort();
        free(first);
        free(second);
        ir_graph_free(again);
    }
    ir_graph_free(g);
    ir_diag_free(d);
    fclose(sink);
    return 0;
}
