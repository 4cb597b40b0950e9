/* The quadc tensor IR: one SSA graph per model. Every value is the result of
 * exactly one op and has a static type (dtype and shape) once the model's
 * hyperparameters are bound. Values live in one array in topological order;
 * operands refer to earlier values by index. Parameters are values of op
 * `param` (printed with '@'), everything else prints with '%'. */
#ifndef QUADC_IR_IR_H
#define QUADC_IR_IR_H

#include <stdbool.h>
#include <stdint.h>

#include "ir/diag.h"
#include "ir/dtype.h"

#define IR_MAX_RANK 8
#define IR_MAX_ATTRS 4
/* The largest dimension and element count of a type that the frontend
 * and the IR text parser accept. Types that passes infer are not checked
 * against them. */
#define IR_MAX_DIM INT64_C(2147483647)
#define IR_MAX_NUMEL (INT64_C(1) << 40)

enum {
    IR_OPF_LEAF = 1 << 0,        /* no operands, type is given */
    IR_OPF_PURE = 1 << 1,        /* no side effects: CSE and DCE may act */
    IR_OPF_ELEMENTWISE = 1 << 2, /* fusable into a producer's loop */
    IR_OPF_COMMUTATIVE = 1 << 3, /* canonicalization may order operands */
};

typedef enum ir_op {
#define IR_OP(id, name, min_operands, max_operands, attrs, flags) IR_OP_##id,
#include "ir/ops.def"
#undef IR_OP
    IR_OP_COUNT
} ir_op;

typedef enum ir_attr_kind {
    IR_ATTR_INT,
    IR_ATTR_FLOAT,
    IR_ATTR_INTS,
    IR_ATTR_STR,
} ir_attr_kind;

/* One attribute slot. The slot order and kinds come from the op table. */
typedef struct ir_attr {
    bool set;
    int64_t i;
    double f;
    int nints;
    int64_t ints[IR_MAX_RANK];
    char *s; /* owned */
} ir_attr;

typedef struct ir_op_info {
    const char *name;
    int min_operands;
    int max_operands; /* -1: variadic */
    unsigned flags;
    int nattrs;
    struct {
        char name[24];
        ir_attr_kind kind;
        bool has_default;
        ir_attr def;
    } attrs[IR_MAX_ATTRS];
} ir_op_info;

const ir_op_info *ir_op_get(ir_op op);
/* Returns IR_OP_COUNT when the name is unknown. */
ir_op ir_op_from_name(const char *name);
/* Returns the known op name closest to `name` by edit distance, or NULL
 * when nothing is close; for "did you mean" hints. */
const char *ir_op_suggest(const char *name);
/* Returns the slot of attribute `name` of op, or -1. */
int ir_op_attr_index(ir_op op, const char *name);

typedef struct ir_type {
    ir_dtype dtype;
    int rank;
    int64_t dims[IR_MAX_RANK];
} ir_type;

int64_t ir_type_numel(const ir_type *t);
bool ir_type_equal(const ir_type *a, const ir_type *b);
/* Formats "f32[4,64,768]" (a scalar is "f32[]") into buf; returns buf. */
char *ir_type_str(const ir_type *t, char *buf, int cap);

typedef struct ir_value {
    int id;       /* index in graph->values */
    ir_op op;
    char *name;   /* unique within the graph, without sigil */
    ir_type type;
    int nops;
    int *ops;     /* operand value ids, all < id */
    ir_attr attrs[IR_MAX_ATTRS];
    ir_loc loc;   /* where the DSL (or IR text) defined it */
    bool dead;    /* set by passes; removed by ir_graph_compact */
} ir_value;

typedef struct ir_hparam {
    char *name;
    int64_t value;
} ir_hparam;

typedef struct ir_graph {
    char *name;
    ir_diag *diag; /* not owned */
    ir_value **values;
    int nvalues;
    int cap;
    int *outputs; /* value ids of the graph results, in order */
    int noutputs;
    ir_hparam *hparams; /* bound hyperparameters, recorded for metadata */
    int nhparams;
    struct ir_name_table *names;
} ir_graph;

ir_graph *ir_graph_new(const char *name, ir_diag *d);
void ir_graph_free(ir_graph *g);
ir_graph *ir_graph_clone(const ir_graph *g);

/* Attribute list under construction for one op; starts with the op's
 * defaults. Setting an attribute the op does not have is a programming
 * error and returns -1. */
typedef struct ir_attrs {
    ir_op op;
    ir_attr a[IR_MAX_ATTRS];
} ir_attrs;

ir_attrs ir_attrs_for(ir_op op);
int ir_attrs_int(ir_attrs *a, const char *name, int64_t v);
int ir_attrs_float(ir_attrs *a, const char *name, double v);
int ir_attrs_ints(ir_attrs *a, const char *name, const int64_t *v, int n);
int ir_attrs_str(ir_attrs *a, const char *name, const char *v);
void ir_attrs_clear(ir_attrs *a);

/* Adds a leaf value (param, input, const) of the given type. `name` NULL
 * gives a fresh numeric name; a taken name gets a ".N" suffix. Returns the
 * value id, or -1 after reporting an error. */
int ir_add_leaf(ir_graph *g, ir_op op, const char *name, ir_type type,
                const ir_attrs *attrs, ir_loc loc);
/* Adds an op whose result type is inferred from its operands. Reports
 * operand-count, attribute and shape errors at `loc` and returns -1. */
int ir_add(ir_graph *g, ir_op op, const char *name, const int *operands, int nops,
           const ir_attrs *attrs, ir_loc loc);
/* Like ir_add, but the caller states the result type and it is checked
 * against inference (used by the IR text parser). */
int ir_add_typed(ir_graph *g, ir_op op, const char *name, const int *operands, int nops,
                 const ir_attrs *attrs, const ir_type *type, ir_loc loc);

int ir_add_output(ir_graph *g, int value);
int ir_set_hparam(ir_graph *g, const char *name, int64_t value);
/* Returns the id of the value with this name (no sigil), or -1. */
int ir_find(const ir_graph *g, const char *name);

/* Convenience accessors for a value's attributes by name. */
int64_t ir_attr_int(const ir_value *v, const char *name);
double ir_attr_float(const ir_value *v, const char *name);
const int64_t *ir_attr_ints(const ir_value *v, const char *name, int *n);
const char *ir_attr_str(const ir_value *v, const char *name);

/* Rewrites every use of `from` (operands and outputs) to `to`. */
void ir_replace_uses(ir_graph *g, int from, int to);
/* Returns the number of operand and output uses of each value; the caller
 * frees the array. */
int *ir_use_counts(const ir_graph *g);
/* Returns the only live value that reads value id, or -1 when id has no
 * use, several (also within one user), or is a graph output. When slot is
 * not NULL, *slot receives the operand slot the user reads id in. */
int ir_only_user(const ir_graph *g, int id, int *slot);
/* Removes dead values and restores topological order (stable with respect
 * to the current order), renumbering ids. Returns 0, or -1 on a cycle. */
int ir_graph_compact(ir_graph *g);

/* Infers the result type of op on the given operand types. On error writes
 * a message into err (without location) and returns -1. */
int ir_infer_type(ir_op op, const ir_type *const *operands, int nops, const ir_attr *attrs,
                  ir_type *out, char *err, int errcap);

/* Checks SSA order, operand counts, attributes and types of every value;
 * reports each problem through the graph's diagnostics. Returns the number
 * of problems found. */
int ir_verify(const ir_graph *g, const char *after_pass);

#endif
