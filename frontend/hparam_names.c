/* Lists the hparams a model file declares, from its syntax tree alone, so
 * a caller can tell which -D names a model accepts before binding values
 * that might not fit together (see fe_hparam_names in frontend.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/frontend.h"
#include "frontend/syntax.h"

static char *read_model_text(const char *path, size_t *len, ir_diag *d)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        ir_diag_file_error(d, path, "cannot open model file: %s", strerror(errno));
        return NULL;
    }
    char *text = malloc((size_t)FE_MAX_FILE_BYTES + 1);
    *len = text ? fread(text, 1, (size_t)FE_MAX_FILE_BYTES + 1, f) : 0;
    int read_error = ferror(f) ? errno : 0;
    fclose(f);
    if (!text || read_error || *len > FE_MAX_FILE_BYTES) {
        const char *reason = "larger than 16 MiB";
        if (!text)
            reason = "out of memory";
        else if (read_error)
            reason = strerror(read_error);
        ir_diag_file_error(d, path, "cannot read model file: %s", reason);
        free(text);
        return NULL;
    }
    return text;
}

int fe_hparam_names(const char *path, char ***names, int *count, ir_diag *d)
{
    *names = NULL;
    *count = 0;
    size_t len = 0;
    char *text = read_model_text(path, &len, d);
    if (!text)
        return -1;
    fe_parser p;
    memset(&p, 0, sizeof p);
    p.diag = d;
    p.file = ir_diag_add_source(d, path, text, len);
    p.arena = fe_arena_new();
    if (!p.arena)
        abort();
    int errors = fe_parse(&p, text, len);
    int n = 0;
    for (const fe_stmt *s = p.first; s && errors == 0; s = s->next)
        n += s->kind == FE_STMT_HPARAM;
    char **list = errors == 0 ? calloc((size_t)n + 1, sizeof *list) : NULL;
    if (list) {
        for (const fe_stmt *s = p.first; s; s = s->next)
            if (s->kind == FE_STMT_HPARAM)
                list[(*count)++] = strdup(s->names->text);
        *names = list;
    }
    fe_arena_free(p.arena);
    free(text);
    return list ? 0 : -1;
}

void fe_free_hparam_names(char **names, int count)
{
    for (int i = 0; i < count; i++)
        free(names[i]);
    free(names);
}
