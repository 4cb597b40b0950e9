/* Internal interface between the autodiff driver (passes/autodiff.c), which
 * selects the values to differentiate and accumulates their gradients, and
 * the per-op gradient rules (passes/grad_rules.c). */
#ifndef QUADC_PASSES_AUTODIFF_H
#define QUADC_PASSES_AUTODIFF_H

#include <stdbool.h>
#include <stddef.h>

#include "ir/ir.h"

/* One contribution to the gradient of a forward value: either a value of
 * the forward value's type, or the gradient `value` of a slice of it along
 * `axis` covering [start, end). When the driver sums the contributions, it
 * pads a slice's gradient with zeros or joins it with the other slices into
 * one concat. */
typedef struct ad_contribution {
    int value;
    bool is_slice;
    int axis;
    int64_t start, end;
} ad_contribution;

typedef struct ad_contributions {
    int count, cap;
    ad_contribution *items;
} ad_contributions;

typedef struct ad_context {
    ir_graph *g;
    ir_diag *d;
    bool *needed;                /* on a path from a selected param to the loss */
    int *needed_uses;            /* operand slots of needed values that use each value */
    ad_contributions *contribs;  /* per forward value, filled by the rules */
} ad_context;

/* Applies the gradient rule of forward value v, whose gradient is dy: adds a
 * contribution to every operand of v that is needed. Returns 0, or -1 after
 * reporting an error. */
int ad_apply_rule(ad_context *c, const ir_value *v, int dy);

/* Rules of the quantization ops, in passes/grad_rules_quant.c. */
int ad_rule_fake_quant(ad_context *c, const ir_value *v, int dy);
int ad_rule_qa_scale(ad_context *c, const ir_value *v, int dy);

/* Returns whether op has a gradient rule. */
bool ad_has_rule(ir_op op);

/* Records a contribution to the gradient of forward value x. */
int ad_contribute(ad_context *c, int x, int value);
int ad_contribute_slice(ad_context *c, int x, int value, int axis, int64_t start, int64_t end);

/* Writes the name of x's gradient into buf: "<x>.grad" with no tag, or
 * "<x>.grad.<tag>" for a value on the way to it. A contribution to a value
 * with several uses is one part of the sum, so it gets the tag "part". */
void ad_name(const ad_context *c, int x, const char *tag, char *buf, size_t cap);
void ad_contribution_name(const ad_context *c, int x, char *buf, size_t cap);

/* Adds a constant splat of the given type. Returns its id, or -1. */
int ad_const(ad_context *c, double value, const ir_type *type, const char *name, ir_loc loc);
/* Adds reshape(x) to the shape of `type`, or returns x when it already has
 * that shape. */
int ad_reshape(ad_context *c, int x, const ir_type *type, const char *name, ir_loc loc);

#endif
