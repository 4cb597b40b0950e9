/* `quadc compile --stats`: the memory of the compiled graph under the LLVM
 * backend's buffer plan, against the sum of all its tensors. */
#include <stdio.h>

#include "codegen/codegen.h"
#include "driver/driver.h"

static void print_line(FILE *out, const char *label, int64_t bytes)
{
    fprintf(out, "  %-34s %13lld bytes %10.1f MiB\n", label, (long long)bytes, (double)bytes / (1 << 20));
}

int driver_print_compile_stats(const ir_graph *g, FILE *out, ir_diag *d)
{
    cg_memory_stats s;
    if (cg_plan_memory(g, NULL, &s, d) != 0)
        return DRIVER_ERROR;
    fprintf(out, "memory of graph '%s' under the LLVM buffer plan (float tensors at 4 bytes per element):\n",
            g->name);
    print_line(out, "parameters", s.param_bytes);
    print_line(out, "inputs", s.input_bytes);
    print_line(out, "outputs", s.output_bytes);
    print_line(out, "intermediates, sum of all", s.intermediate_bytes);
    print_line(out, "intermediates, planned buffers", s.planned_activation_bytes);
    print_line(out, "computed at bind time", s.bind_bytes);
    print_line(out, "matmul operands packed at bind", s.packed_bytes);
    print_line(out, "scratch", s.scratch_bytes);
    double ratio = s.intermediate_bytes > 0 ? (double)s.planned_activation_bytes / (double)s.intermediate_bytes : 1.0;
    fprintf(out, "  planned / sum of intermediates      %.3f (%d intermediate values)\n", ratio,
            s.intermediate_values);
    return DRIVER_OK;
}
