/* The op table built from ir/ops.def, with name lookup and suggestions.
 * The table is constant after its one-time initialization. */
#include "ir/ir.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static ir_op_info op_table[IR_OP_COUNT];
static pthread_once_t op_table_once = PTHREAD_ONCE_INIT;

static const struct {
    const char *name;
    int min_operands;
    int max_operands;
    const char *attrs;
    unsigned flags;
} op_specs[IR_OP_COUNT] = {
#define IR_OP(id, name, min_operands, max_operands, attrs, flags) \
    [IR_OP_##id] = {name, min_operands, max_operands, attrs, flags},
#include "ir/ops.def"
#undef IR_OP
};

/* Parses one "name:kind[=default]" entry of an attribute spec. */
static void parse_attr_spec(ir_op_info *info, const char *entry, size_t len)
{
    int slot = info->nattrs++;
    const char *colon = memchr(entry, ':', len);
    size_t nlen = (size_t)(colon - entry);
    memcpy(info->attrs[slot].name, entry, nlen);
    info->attrs[slot].name[nlen] = '\0';
    char kind = colon[1];
    info->attrs[slot].kind = kind == 'i' ? IR_ATTR_INT : kind == 'f' ? IR_ATTR_FLOAT
                           : kind == 'I' ? IR_ATTR_INTS : IR_ATTR_STR;
    const char *eq = memchr(entry, '=', len);
    if (!eq)
        return;
    char text[64];
    size_t tlen = len - (size_t)(eq + 1 - entry);
    memcpy(text, eq + 1, tlen);
    text[tlen] = '\0';
    ir_attr *def = &info->attrs[slot].def;
    info->attrs[slot].has_default = true;
    def->set = true;
    switch (info->attrs[slot].kind) {
    case IR_ATTR_INT: def->i = strtoll(text, NULL, 10); break;
    case IR_ATTR_FLOAT: def->f = strtod(text, NULL); break;
    case IR_ATTR_INTS: def->nints = 0; break;
    case IR_ATTR_STR: def->s = strdup(text); break;
    }
}

static void init_op_table(void)
{
    for (int op = 0; op < IR_OP_COUNT; op++) {
        ir_op_info *info = &op_table[op];
        info->name = op_specs[op].name;
        info->min_operands = op_specs[op].min_operands;
        info->max_operands = op_specs[op].max_operands;
        info->flags = op_specs[op].flags;
        const char *p = op_specs[op].attrs;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            parse_attr_spec(info, p, len);
            p += len + (comma ? 1 : 0);
        }
    }
}

const ir_op_info *ir_op_get(ir_op op)
{
    pthread_once(&op_table_once, init_op_table);
    return (unsigned)op < IR_OP_COUNT ? &op_table[op] : NULL;
}

ir_op ir_op_from_name(const char *name)
{
    for (int op = 0; op < IR_OP_COUNT; op++)
        if (strcmp(op_specs[op].name, name) == 0)
            return (ir_op)op;
    return IR_OP_COUNT;
}

int ir_op_attr_index(ir_op op, const char *name)
{
    const ir_op_info *info = ir_op_get(op);
    for (int i = 0; i < info->nattrs; i++)
        if (strcmp(info->attrs[i].name, name) == 0)
            return i;
    return -1;
}

/* Levenshtein distance, capped at 32 characters per string. */
static int edit_distance(const char *a, const char *b)
{
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 32 || lb > 32)
        return 99;
    int row[33];
    for (int j = 0; j <= lb; j++)
        row[j] = j;
    for (int i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = i;
        for (int j = 1; j <= lb; j++) {
            int up = row[j];
            int cost = a[i - 1] == b[j - 1] ? 0 : 1;
            int best = diag + cost;
            if (row[j] + 1 < best)
                best = row[j] + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *ir_op_suggest(const char *name)
{
    const char *best = NULL;
    int best_distance = 3; /* suggest only names within two edits */
    size_t len = strlen(name);
    for (int op = 0; op < IR_OP_COUNT; op++) {
        if (op_specs[op].flags & IR_OPF_LEAF)
            continue;
        int dist = edit_distance(name, op_specs[op].name);
        if (dist < best_distance && (size_t)dist < len) {
            best_distance = dist;
            best = op_specs[op].name;
        }
    }
    return best;
}
