/* The DSL frontend: parses a quadc model description (.qd) and builds the
 * tensor IR with every hyperparameter bound. */
#ifndef QUADC_FRONTEND_FRONTEND_H
#define QUADC_FRONTEND_FRONTEND_H

#include <stddef.h>
#include <stdint.h>

#include "ir/ir.h"

/* A -D name=value override of a hyperparameter's default. */
typedef struct fe_define {
    const char *name;
    int64_t value;
} fe_define;

/* Parses and lowers a model file. Reports every error it finds through d
 * (several per run where possible) and returns NULL if there was any. */
ir_graph *fe_compile_file(const char *path, const fe_define *defines, int ndefines, ir_diag *d);
/* Same, from text in memory; `path` only names the source in messages. */
ir_graph *fe_compile_string(const char *path, const char *text, size_t len, const fe_define *defines,
                            int ndefines, ir_diag *d);

/* Parses a model file without binding or lowering it and stores the names
 * of its hparams, in declaration order, in a new array (free it with
 * fe_free_hparam_names). Returns 0, or -1 after reporting a syntax error
 * or an unreadable file. */
int fe_hparam_names(const char *path, char ***names, int *count, ir_diag *d);
void fe_free_hparam_names(char **names, int count);

#endif
