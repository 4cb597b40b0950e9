/* Interpreter kernel for cache_write, the in-place row update of a
 * key-value cache, and the step that keeps its result in the caller's
 * input tensor between runs. */
#include <string.h>

#include "runtime/interp_ops.h"

/* cache_write(cache[..., S, HS], new[..., T, HS], pos) -> cache with rows
 * [pos, pos + T) of axis -2 replaced by new, elements of any dtype copied
 * unchanged. A range outside [0, S) is an error naming pos, T and S. */
int rt_interp_cache_write(const rt_interp_call *call)
{
    const rt_tensor *cache = call->operands[0], *fresh = call->operands[1];
    int64_t pos = rt_interp_load_int(call->operands[2], 0);
    int rank = cache->rank;
    int64_t S = cache->dims[rank - 2], T = fresh->dims[rank - 2], HS = cache->dims[rank - 1];
    if (pos < 0 || pos > S - T)
        return rt_interp_fail(call, "rows [%lld, %lld) are outside the cache's %lld rows; the position must be "
                              "between 0 and %lld", (long long)pos, (long long)(pos + T), (long long)S,
                              (long long)(S - T));

    size_t elem = ir_dtype_size(cache->dtype);
    memcpy(call->result->data, cache->data, rt_tensor_nbytes(cache));
    int64_t matrices = rt_tensor_numel(cache) / (S * HS); /* S, HS >= 1: shape rule */
    for (int64_t m = 0; m < matrices; m++) {
        char *dst = (char *)call->result->data + (size_t)((m * S + pos) * HS) * elem;
        const char *src = (const char *)fresh->data + (size_t)(m * T * HS) * elem;
        memcpy(dst, src, (size_t)(T * HS) * elem);
    }
    return 0;
}

int rt_interp_store_cache(const ir_graph *g, const ir_value *v, const rt_tensor *result,
                          const rt_weights *inputs, ir_diag *d)
{
    const ir_value *cache = g->values[v->ops[0]];
    if (cache->op != IR_OP_INPUT)
        return 0;
    rt_tensor *state = inputs ? rt_weights_get(inputs, cache->name) : NULL;
    if (!state || rt_tensor_nbytes(state) != rt_tensor_nbytes(result)) {
        ir_diag_error(d, v->loc, "cache_write %%%s: input '%s' changed size while the graph ran", v->name,
                      cache->name);
        return -1;
    }
    memcpy(state->data, result->data, rt_tensor_nbytes(result));
    return 0;
}
