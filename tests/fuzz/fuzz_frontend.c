/* libFuzzer target for the DSL frontend: any input must compile to a graph
 * that passes the verifier, or fail with at least one diagnostic. It must
 * never crash, hang or leak. The first line may hold -D overrides written
 * as `#D name=value ...`, so the fuzzer reaches the -D checks too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/frontend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { MAX_DEFINES = 4 };

/* Reads up to MAX_DEFINES `name=value` pairs from a leading `#D` line into
 * names (NUL-separated storage) and defines. Returns the define count. */
static int read_defines(const char *text, size_t size, char *names, fe_define *defines)
{
    if (size < 3 || memcmp(text, "#D ", 3) != 0)
        return 0;
    const char *end = memchr(text, '\n', size);
    size_t len = end ? (size_t)(end - text) : size;
    if (len > 200)
        len = 200;
    memcpy(names, text + 3, len - 3);
    names[len - 3] = '\0';
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(names, " ", &save); tok && n < MAX_DEFINES; tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq)
            continue;
        *eq = '\0';
        defines[n].name = tok;
        defines[n].value = strtoll(eq + 1, NULL, 10);
        n++;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *out = NULL;
    size_t out_len = 0;
    FILE *sink = open_memstream(&out, &out_len);
    if (!sink)
        abort();
    ir_diag *d = ir_diag_new(sink);
    char names[256];
    fe_define defines[MAX_DEFINES];
    int ndefines = read_defines((const char *)data, size, names, defines);

    ir_graph *g = fe_compile_string("fuzz.qd", (const char *)data, size, defines, ndefines, d);
    int errors = ir_diag_error_count(d);
    if (g && (errors != 0 || ir_verify(g, NULL) != 0))
        abort(); /* a graph came back although errors were reported */
    if (!g && errors == 0)
        abort(); /* the compile failed silently */

    ir_graph_free(g);
    ir_diag_free(d);
    fclose(sink);
    free(out);
    return 0;
}
