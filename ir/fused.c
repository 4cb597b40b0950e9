/* Parsing, printing and the shape rule of fused.elementwise programs. */
#include "ir/fused.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(char *err, int cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, int cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, (size_t)cap, fmt, ap);
    va_end(ap);
    return -1;
}

static bool is_binary(ir_op op)
{
    return op == IR_OP_ADD || op == IR_OP_SUB || op == IR_OP_MUL || op == IR_OP_DIV || op == IR_OP_MAXIMUM ||
           op == IR_OP_MINIMUM;
}

bool ir_fused_op_allowed(ir_op op)
{
    switch (op) {
    case IR_OP_NEG:
    case IR_OP_EXP:
    case IR_OP_LOG:
    case IR_OP_SQRT:
    case IR_OP_RSQRT:
    case IR_OP_TANH:
    case IR_OP_GELU:
    case IR_OP_RELU:
    case IR_OP_ABS:
    case IR_OP_SCALE:
        return true;
    default:
        return is_binary(op);
    }
}

/* Parses one token of length len into step s. */
static int parse_token(const char *tok, int len, int nops, ir_fused_step *s, char *err, int cap)
{
    char buf[64];
    if (len >= (int)sizeof buf)
        return fail(err, cap, "token '%.*s...' is too long", 20, tok);
    memcpy(buf, tok, (size_t)len);
    buf[len] = '\0';
    memset(s, 0, sizeof *s);

    if (buf[0] == '$') {
        char *end;
        errno = 0;
        long k = strtol(buf + 1, &end, 10);
        if (end == buf + 1 || *end != '\0' || errno != 0 || k < 0 || k >= nops || buf[1] == '-' || buf[1] == '+')
            return fail(err, cap, "'%s' is not an operand of an op with %d operands", buf, nops);
        s->op = IR_OP_INPUT;
        s->input = (int)k;
        return 0;
    }
    if (strncmp(buf, "scale:", 6) == 0) {
        char *end;
        errno = 0;
        s->factor = strtod(buf + 6, &end);
        if (end == buf + 6 || *end != '\0' || errno != 0)
            return fail(err, cap, "invalid factor in '%s'; expected scale:F with a decimal number F", buf);
        s->op = IR_OP_SCALE;
        return 0;
    }
    ir_op op = ir_op_from_name(buf);
    if (op == IR_OP_COUNT || op == IR_OP_SCALE || !ir_fused_op_allowed(op))
        return fail(err, cap, "'%s' is not an elementwise op that a fused program may contain", buf);
    s->op = op;
    return 0;
}

int ir_fused_parse(const char *text, int nops, ir_fused_program *p, char *err, int errcap)
{
    memset(p, 0, sizeof *p);
    bool used[IR_FUSED_MAX_STEPS] = {false};
    int depth = 0;
    const char *at = text ? text : "";
    while (*at) {
        const char *end = strchr(at, ' ');
        int len = end ? (int)(end - at) : (int)strlen(at);
        if (len == 0)
            return fail(err, errcap, "empty token in program \"%s\"; separate tokens by one space", text);
        if (p->nsteps == IR_FUSED_MAX_STEPS)
            return fail(err, errcap, "the program has more than %d steps", IR_FUSED_MAX_STEPS);
        ir_fused_step *s = &p->steps[p->nsteps++];
        if (parse_token(at, len, nops, s, err, errcap) != 0)
            return -1;
        int pops = s->op == IR_OP_INPUT ? 0 : is_binary(s->op) ? 2 : 1;
        if (depth < pops)
            return fail(err, errcap, "step %d ('%.*s') needs %d values but the stack has %d", p->nsteps, len, at,
                        pops, depth);
        depth = depth - pops + 1;
        if (depth > p->max_depth)
            p->max_depth = depth;
        if (s->op == IR_OP_INPUT && s->input < IR_FUSED_MAX_STEPS)
            used[s->input] = true;
        at += len;
        if (*at == ' ' && at[1] == '\0')
            return fail(err, errcap, "trailing space in program \"%s\"", text);
        if (*at == ' ')
            at++;
    }
    if (depth != 1)
        return fail(err, errcap, "the program \"%s\" leaves %d values instead of 1", text ? text : "", depth);
    for (int k = 0; k < nops; k++)
        if (k >= IR_FUSED_MAX_STEPS || !used[k])
            return fail(err, errcap, "the program \"%s\" does not use operand $%d", text, k);
    return 0;
}

int ir_fused_format(const ir_fused_program *p, char *buf, int cap)
{
    int len = 0;
    for (int i = 0; i < p->nsteps; i++) {
        const ir_fused_step *s = &p->steps[i];
        const char *sep = i ? " " : "";
        int n;
        if (s->op == IR_OP_INPUT)
            n = snprintf(buf + len, (size_t)(cap - len), "%s$%d", sep, s->input);
        else if (s->op == IR_OP_SCALE)
            n = snprintf(buf + len, (size_t)(cap - len), "%sscale:%.17g", sep, s->factor);
        else
            n = snprintf(buf + len, (size_t)(cap - len), "%s%s", sep, ir_op_get(s->op)->name);
        if (n < 0 || n >= cap - len)
            return -1;
        len += n;
    }
    return len;
}

int ir_infer_fused_type(const ir_type *const *ops, int nops, const ir_attr *attrs, ir_type *out, char *err,
                        int errcap)
{
    if (nops > IR_FUSED_MAX_INPUTS)
        return fail(err, errcap, "%d operands; a fused.elementwise op takes at most %d", nops, IR_FUSED_MAX_INPUTS);
    ir_fused_program p;
    if (ir_fused_parse(attrs[0].s, nops, &p, err, errcap) != 0)
        return -1;
    ir_dtype dtype = ops[0]->dtype;
    if (dtype != IR_F32 && dtype != IR_F16 && dtype != IR_BF16)
        return fail(err, errcap, "operands must be float, not %s", ir_dtype_name(dtype));
    int rank = 0;
    for (int k = 0; k < nops; k++) {
        if (ops[k]->dtype != dtype)
            return fail(err, errcap, "operand %d is %s but operand 0 is %s", k, ir_dtype_name(ops[k]->dtype),
                        ir_dtype_name(dtype));
        if (ops[k]->rank > rank)
            rank = ops[k]->rank;
    }
    out->dtype = dtype;
    out->rank = rank;
    for (int i = 0; i < rank; i++)
        out->dims[i] = 1;
    for (int k = 0; k < nops; k++) {
        const ir_type *t = ops[k];
        for (int i = 0; i < t->rank; i++) {
            int o = i + rank - t->rank;
            int64_t d = t->dims[i];
            if (d != 1 && out->dims[o] != 1 && out->dims[o] != d) {
                char s[128];
                return fail(err, errcap, "operand %d of type %s does not broadcast with the others (dimension %d)",
                            k, ir_type_str(t, s, sizeof s), o);
            }
            if (d != 1)
                out->dims[o] = d;
        }
    }
    return 0;
}

int ir_fused_program_inputs(const ir_value *v)
{
    if (v->op == IR_OP_FUSED_LINEAR || v->op == IR_OP_FUSED_MATMUL)
        return v->nops - 1;
    return v->nops;
}

int ir_fused_parse_value(const ir_value *v, ir_fused_program *p, char *err, int errcap)
{
    return ir_fused_parse(ir_attr_str(v, "program"), ir_fused_program_inputs(v), p, err, errcap);
}

/* Checks that epilogue operand t broadcasts to the product type p without
 * changing it. */
static int check_epilogue_operand(int k, const ir_type *t, const ir_type *p, char *err, int errcap)
{
    char st[128], sp[128];
    if (t->dtype != IR_F32)
        return fail(err, errcap, "epilogue operand %d is %s; fused products take f32 operands", k,
                    ir_type_str(t, st, sizeof st));
    bool fits = t->rank <= p->rank;
    for (int i = 0; fits && i < t->rank; i++) {
        int64_t d = t->dims[i], want = p->dims[i + p->rank - t->rank];
        fits = d == 1 || d == want;
    }
    if (!fits)
        return fail(err, errcap, "epilogue operand %d of type %s does not broadcast to the product type %s", k,
                    ir_type_str(t, st, sizeof st), ir_type_str(p, sp, sizeof sp));
    return 0;
}

int ir_infer_fused_product_type(ir_op op, const ir_type *const *ops, int nops, const ir_attr *attrs, ir_type *out,
                                char *err, int errcap)
{
    if (nops - 1 > IR_FUSED_MAX_INPUTS)
        return fail(err, errcap, "%d epilogue operands; a fused product takes at most %d", nops - 2,
                    IR_FUSED_MAX_INPUTS - 1);
    ir_attrs product = ir_attrs_for(op == IR_OP_FUSED_MATMUL ? IR_OP_MATMUL : IR_OP_LINEAR);
    if (op == IR_OP_FUSED_MATMUL) {
        ir_attrs_int(&product, "transpose_a", attrs[ir_op_attr_index(op, "transpose_a")].i);
        ir_attrs_int(&product, "transpose_b", attrs[ir_op_attr_index(op, "transpose_b")].i);
    }
    int rc = ir_infer_type(product.op, ops, 2, product.a, out, err, errcap);
    ir_attrs_clear(&product);
    if (rc != 0)
        return -1;
    char so[128];
    if (out->dtype != IR_F32)
        return fail(err, errcap, "the product is %s; fused products are f32 only", ir_type_str(out, so, sizeof so));
    ir_fused_program p;
    if (ir_fused_parse(attrs[ir_op_attr_index(op, "program")].s, nops - 1, &p, err, errcap) != 0)
        return -1;
    for (int k = 2; k < nops; k++)
        if (check_epilogue_operand(k, ops[k], out, err, errcap) != 0)
            return -1;
    return 0;
}
