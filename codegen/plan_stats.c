/* Memory statistics of the buffer plan: what cg_compile would allocate
 * for a graph, against what the graph would need if every tensor had its
 * own buffer. Used by `quadc compile --stats` and the memory tests. */
#include <stdlib.h>
#include <string.h>

#include "codegen/cg_internal.h"

static int64_t value_bytes(const ir_value *v)
{
    return ir_type_numel(&v->type) * cg_storage_elem_size(v->type.dtype);
}

/* Adds the bytes of each distinct slot in slots[0 .. n) once. */
static int64_t distinct_slot_bytes(const cg_plan *p, const int *slots, int n, bool *seen)
{
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        int s = slots[i];
        if (s < 0 || seen[s])
            continue;
        seen[s] = true;
        total += p->slot_bytes[s];
    }
    return total;
}

static void sum_values(const ir_graph *g, cg_memory_stats *out, bool *is_output)
{
    for (int i = 0; i < g->noutputs; i++)
        is_output[g->outputs[i]] = true;
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->dead)
            continue;
        int64_t bytes = value_bytes(v);
        if (v->op == IR_OP_PARAM)
            out->param_bytes += bytes;
        else if (v->op == IR_OP_INPUT)
            out->input_bytes += bytes;
        else if (is_output[i])
            out->output_bytes += bytes;
        else if (v->op != IR_OP_RESHAPE)
            out->intermediate_bytes += bytes;
        if (v->op != IR_OP_PARAM && v->op != IR_OP_INPUT && !is_output[i] && v->op != IR_OP_RESHAPE)
            out->intermediate_values++;
    }
}

int cg_plan_memory(const ir_graph *g, const cg_options *o, cg_memory_stats *out, ir_diag *d)
{
    memset(out, 0, sizeof *out);
    cg_options defaults = cg_default_options();
    if (!o)
        o = &defaults;
    LLVMTargetMachineRef tm = cg_target_machine(o, d);
    if (!tm)
        return -1;
    cg_gemm_shape gs = cg_gemm_shape_for(cg_vector_bits(tm));
    LLVMDisposeTargetMachine(tm);
    cg_plan p;
    if (cg_plan_build(g, &gs, false, o->repack_weights != 0, &p, d) != 0)
        return -1;

    int n = g->nvalues;
    bool *is_output = calloc((size_t)n + 1, sizeof *is_output);
    bool *seen = calloc((size_t)p.nslots + 1, sizeof *seen);
    int *slots = malloc(((size_t)n + (size_t)p.ngemms + 1) * sizeof *slots);
    if (!is_output || !seen || !slots) {
        free(is_output);
        free(seen);
        free(slots);
        cg_plan_free(&p);
        ir_diag_file_error(d, NULL, "out of memory computing the memory statistics of graph '%s'", g->name);
        return -1;
    }
    sum_values(g, out, is_output);

    /* Run-time intermediates first, so a buffer shared with an output
     * counts as an activation buffer. */
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!g->values[i]->dead && p.storage[i] == CG_STORE_RUN && !is_output[i])
            slots[k++] = p.slot[i];
    out->planned_activation_bytes = distinct_slot_bytes(&p, slots, k, seen);
    /* Operands packed at run time take their buffers from the same pool. */
    k = 0;
    for (int i = 0; i < p.ngemms; i++)
        if (!p.gemms[i].pack_at_bind)
            slots[k++] = p.gemms[i].packed_slot;
    out->planned_activation_bytes += distinct_slot_bytes(&p, slots, k, seen);
    k = 0;
    for (int i = 0; i < n; i++)
        if (!g->values[i]->dead && p.storage[i] == CG_STORE_RUN && is_output[i])
            slots[k++] = p.slot[i];
    out->planned_output_bytes = distinct_slot_bytes(&p, slots, k, seen);
    k = 0;
    for (int i = 0; i < n; i++)
        if (!g->values[i]->dead && p.storage[i] == CG_STORE_BIND)
            slots[k++] = p.slot[i];
    out->bind_bytes = distinct_slot_bytes(&p, slots, k, seen);
    for (int i = 0; i < p.ngemms; i++)
        if (p.gemms[i].pack_at_bind)
            out->packed_bytes += p.slot_bytes[p.gemms[i].packed_slot];
    /* GEMVs share one scratch slot; count it once. */
    k = 0;
    for (int i = 0; i < n; i++)
        if (p.scratch_slot[i] >= 0)
            slots[k++] = p.scratch_slot[i];
    out->scratch_bytes = distinct_slot_bytes(&p, slots, k, seen);

    free(is_output);
    free(seen);
    free(slots);
    cg_plan_free(&p);
    return 0;
}
