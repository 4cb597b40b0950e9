/* State shared by the frontend's semantic stages: name tables (scope.c),
 * hyperparameter and constant evaluation (consteval.c) and lowering of
 * statements to IR (lower.c, lower_ops.c). Internal to frontend/. */
#ifndef QUADC_FRONTEND_LOWER_H
#define QUADC_FRONTEND_LOWER_H

#include "frontend/frontend.h"
#include "frontend/syntax.h"
#include "ir/ir.h"

/* Open-addressing map from a string to an index. Keys are not copied. */
typedef struct fe_map {
    const char **keys;
    int *values;
    int cap;
    int count;
} fe_map;

int fe_map_get(const fe_map *m, const char *key); /* -1 when absent */
void fe_map_put(fe_map *m, const char *key, int value);
void fe_map_free(fe_map *m);

/* A tensor name bound to an IR value. `id` is -1 after an error, so uses
 * of it fail quietly instead of reporting "undefined name" again. */
typedef struct fe_sym {
    const char *name;
    int id;
    ir_loc loc;
    const fe_stmt *stmt; /* the declaring statement */
} fe_sym;

typedef struct fe_scope {
    fe_sym *syms;
    int nsyms;
    int cap;
    fe_map index;
    struct fe_scope *parent;
} fe_scope;

fe_sym *fe_scope_find(fe_scope *s, const char *name);   /* this scope only */
fe_sym *fe_scope_lookup(fe_scope *s, const char *name); /* then the parents */
fe_sym *fe_scope_add(fe_scope *s, const char *name, int id, ir_loc loc, const fe_stmt *stmt);
void fe_scope_free(fe_scope *s);

/* Picks the candidate closest to `name` for a "did you mean" hint. */
#define FE_MAX_SUGGESTION_CANDIDATES 100000
#define FE_MAX_HINTED_ERRORS 100

typedef struct fe_suggestion {
    const char *name;
    const char *best;
    int best_distance;
    int considered;
} fe_suggestion;

fe_suggestion fe_suggestion_start(const char *name);
void fe_suggestion_consider(fe_suggestion *s, const char *candidate);

typedef struct fe_hparam {
    const char *name;
    ir_loc loc;
    const fe_expr *expr;
    int64_t value;
    bool overridden; /* set by -D */
    bool ok;         /* value is valid */
} fe_hparam;

typedef struct fe_ctx {
    ir_diag *diag;
    ir_graph *g;
    fe_arena *arena;
    const char *file;
    fe_hparam *hparams;
    int nhparams;
    fe_map hparam_index;
    const fe_stmt **blocks;
    bool *block_ok; /* false for a block whose definition has errors */
    int nblocks;
    fe_map block_index;
    fe_scope global;
    fe_scope *scope;
    /* Inside a block instance: the index variable, its value, and the IR
     * name prefix of the layer ("h0."). */
    const char *index_name;
    int64_t index_value;
    const char *prefix;
    bool too_large;   /* FE_MAX_VALUES or FE_MAX_STATEMENTS was reached */
    long statements;  /* lowered so far, counting each layer */
    bool *is_output;  /* indexed by value id */
    int is_output_cap;
} fe_ctx;

/* consteval.c */
int fe_collect_hparams(fe_ctx *c, const fe_stmt *program, const fe_define *defines, int ndefines);
int fe_eval_int(fe_ctx *c, const fe_expr *e, int64_t *out);
int fe_eval_number(fe_ctx *c, const fe_expr *e, double *out);
/* True when `e` evaluates to a number (literals, hparams, the block index
 * and arithmetic on them) rather than naming or computing a tensor. */
bool fe_is_number(fe_ctx *c, const fe_expr *e);
const fe_hparam *fe_find_hparam(const fe_ctx *c, const char *name);

/* lower_ops.c */
/* Lowers a tensor expression and names the result `hint` (NULL gives a
 * numeric name). Returns the value id, or -1 after reporting the error. */
int fe_lower_expr(fe_ctx *c, const fe_expr *e, const char *hint);
/* Lowers `a, b, c = split(x, axis=..., sections=...)` into slices. */
int fe_lower_split(fe_ctx *c, const fe_expr *call, const fe_name *targets, int *ids, int ntargets);
/* Replaces each `{i}` in a dotted name by the block index. */
const char *fe_substitute_name(fe_ctx *c, const char *text, ir_loc loc);
/* Returns the IR name for a DSL name: the layer prefix plus the name. */
const char *fe_ir_name(fe_ctx *c, const char *name);
/* Reports once and returns false when the model has too many values. */
bool fe_room_for_value(fe_ctx *c, ir_loc loc);
void fe_report_undefined(fe_ctx *c, const char *what, const char *name, ir_loc loc);

/* lower.c */
ir_graph *fe_lower_program(fe_ctx *c, const fe_stmt *program, const fe_define *defines, int ndefines);

#endif
