/* The driver glue: compiles a graph with ORC LLJIT, owns the buffers of a
 * compiled module, binds weights and inputs, runs the entry points and
 * copies the outputs out. Also the text emitters for --emit=llvm/asm. */
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codegen/cg_internal.h"
#include "codegen/cg_jit.h"
#include "runtime/threadpool.h"

typedef int32_t (*cg_entry_fn)(void **bufs, void *pool);

/* Per-value kernel time, filled by cg_profile_tick. */
typedef struct cg_profile {
    double last; /* time of the previous tick */
    double *seconds;
} cg_profile;

struct cg_module {
    ir_graph *g; /* a clone, so the caller may free theirs */
    cg_plan plan;
    cg_gemm_shape gs;
    LLVMOrcLLJITRef jit;
    cg_entry_fn bind_fn, run_fn;
    rt_pool *pool;
    void **bufs;  /* per slot */
    void **owned; /* per slot: memory this module allocated, or NULL */
    const rt_weights *bound; /* weights of the last successful bind */
    bool is_bound;           /* false until a bind succeeds, even for NULL weights */
    cg_profile profile;
    rt_tensor **converted; /* per output: the f16 or bf16 copy behind its view, or NULL */
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cg_profile_tick(void *state, int64_t value)
{
    cg_profile *p = state;
    double now = now_seconds();
    p->seconds[value] += now - p->last;
    p->last = now;
}

const double *cg_profile_seconds(const cg_module *m)
{
    return m->profile.seconds;
}

static const cg_options *options_or_default(const cg_options *o, cg_options *storage)
{
    if (o)
        return o;
    *storage = cg_default_options();
    return storage;
}

/* Buffers come from rt_alloc_data, so large ones (packed and converted
 * weights, big activations) get huge pages like the weights bound in
 * place. On 4 KB pages the int8 linear layers of a decoding step, which
 * stream their packed weights, took about 12% longer (2-core Zen 4 VM). */
static void *alloc_aligned(int64_t bytes)
{
    return rt_alloc_data((size_t)bytes);
}

static void report_llvm_error(ir_diag *d, const char *what, LLVMErrorRef err)
{
    char *text = LLVMGetErrorMessage(err);
    ir_diag_file_error(d, NULL, "codegen: %s failed: %s", what, text);
    LLVMDisposeErrorMessage(text);
}

LLVMOrcLLJITRef cg_jit_create(const cg_options *o, LLVMOrcThreadSafeContextRef tsc, LLVMModuleRef mod, ir_diag *d)
{
    LLVMTargetMachineRef tm = cg_target_machine(o, d);
    if (!tm) {
        LLVMDisposeModule(mod);
        return NULL;
    }
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm));
    LLVMOrcLLJITRef jit;
    LLVMErrorRef err = LLVMOrcCreateLLJIT(&jit, builder);
    if (err) {
        report_llvm_error(d, "creating the ORC LLJIT", err);
        LLVMDisposeModule(mod);
        return NULL;
    }
    LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(jit);

    /* libc symbols LLVM may call (memset, memcpy) come from the process;
     * the pool entry point is defined by address, so it resolves even when
     * the executable does not export its symbols. */
    LLVMOrcDefinitionGeneratorRef gen;
    err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(&gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL);
    if (err) {
        report_llvm_error(d, "creating the process symbol generator", err);
        LLVMOrcDisposeLLJIT(jit);
        LLVMDisposeModule(mod);
        return NULL;
    }
    LLVMOrcJITDylibAddGenerator(jd, gen);
    LLVMJITSymbolFlags flags = {LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable, 0};
    LLVMOrcCSymbolMapPair runtime_symbols[2] = {
        {LLVMOrcLLJITMangleAndIntern(jit, "rt_pool_parallel_for"),
         {(LLVMOrcExecutorAddress)(uintptr_t)&rt_pool_parallel_for, flags}},
        {LLVMOrcLLJITMangleAndIntern(jit, "cg_profile_tick"), {(LLVMOrcExecutorAddress)(uintptr_t)&cg_profile_tick, flags}},
    };
    err = LLVMOrcJITDylibDefine(jd, LLVMOrcAbsoluteSymbols(runtime_symbols, 2));
    if (err) {
        report_llvm_error(d, "defining the runtime symbols for the JIT", err);
        LLVMOrcDisposeLLJIT(jit);
        LLVMDisposeModule(mod);
        return NULL;
    }

    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
    err = LLVMOrcLLJITAddLLVMIRModule(jit, jd, tsm);
    if (err) {
        report_llvm_error(d, "adding the module to the JIT", err);
        LLVMOrcDisposeThreadSafeModule(tsm);
        LLVMOrcDisposeLLJIT(jit);
        return NULL;
    }
    return jit;
}

void *cg_jit_lookup(LLVMOrcLLJITRef jit, const char *name, ir_diag *d)
{
    LLVMOrcExecutorAddress addr = 0;
    LLVMErrorRef err = LLVMOrcLLJITLookup(jit, &addr, name);
    if (err) {
        report_llvm_error(d, "JIT compilation", err);
        return NULL;
    }
    return (void *)(uintptr_t)addr;
}

/* Builds and optimizes the module for g in ctx. */
static LLVMModuleRef build_optimized(LLVMContextRef ctx, const ir_graph *g, const cg_options *o, cg_plan *plan,
                                     cg_gemm_shape *gs, ir_diag *d)
{
    LLVMTargetMachineRef tm = cg_target_machine(o, d);
    if (!tm)
        return NULL;
    *gs = cg_gemm_shape_for(cg_vector_bits(tm));
    LLVMModuleRef mod = NULL;
    if (cg_plan_build(g, gs, o->profile != 0, o->repack_weights != 0, plan, d) == 0)
        mod = cg_build_module(ctx, tm, g, plan, gs, d);
    if (mod && cg_optimize(mod, tm, o->opt_level, d) != 0) {
        LLVMDisposeModule(mod);
        mod = NULL;
    }
    LLVMDisposeTargetMachine(tm);
    return mod;
}

cg_module *cg_compile(const ir_graph *g, const cg_options *o, ir_diag *d)
{
    cg_options defaults;
    o = options_or_default(o, &defaults);
    cg_module *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->g = ir_graph_clone(g);
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
    LLVMModuleRef mod = build_optimized(ctx, m->g, o, &m->plan, &m->gs, d);
    if (mod)
        m->jit = cg_jit_create(o, tsc, mod, d);
    LLVMOrcDisposeThreadSafeContext(tsc);
    if (!m->jit) {
        cg_free(m);
        return NULL;
    }
    m->bind_fn = (cg_entry_fn)(uintptr_t)cg_jit_lookup(m->jit, "qc_bind", d);
    m->run_fn = m->bind_fn ? (cg_entry_fn)(uintptr_t)cg_jit_lookup(m->jit, "qc_run", d) : NULL;
    m->pool = rt_pool_new(o->threads);
    m->bufs = calloc((size_t)m->plan.nslots, sizeof *m->bufs);
    m->owned = calloc((size_t)m->plan.nslots, sizeof *m->owned);
    if (o->profile) {
        m->profile.seconds = calloc((size_t)m->g->nvalues, sizeof *m->profile.seconds);
        if (m->bufs && m->profile.seconds)
            m->bufs[m->plan.profile_slot] = &m->profile;
    }
    if (!m->run_fn || !m->pool || !m->bufs || !m->owned || (o->profile && !m->profile.seconds)) {
        if (m->run_fn)
            ir_diag_file_error(d, NULL, "codegen: out of memory or threads while setting up graph '%s'", g->name);
        cg_free(m);
        return NULL;
    }
    for (int s = 0; s < m->plan.nslots; s++) {
        if (m->plan.slot_bytes[s] <= 0)
            continue;
        m->owned[s] = m->bufs[s] = alloc_aligned(m->plan.slot_bytes[s]);
        if (!m->bufs[s]) {
            ir_diag_file_error(d, NULL, "codegen: out of memory allocating %lld bytes for graph '%s'",
                               (long long)m->plan.slot_bytes[s], g->name);
            cg_free(m);
            return NULL;
        }
    }
    return m;
}

void cg_free(cg_module *m)
{
    if (!m)
        return;
    if (m->owned)
        for (int s = 0; s < m->plan.nslots; s++)
            free(m->owned[s]);
    free(m->owned);
    free(m->bufs);
    free(m->profile.seconds);
    if (m->converted)
        for (int i = 0; i < m->g->noutputs; i++)
            rt_tensor_free(m->converted[i]);
    free(m->converted);
    rt_pool_free(m->pool);
    if (m->jit)
        LLVMOrcDisposeLLJIT(m->jit);
    cg_plan_free(&m->plan);
    ir_graph_free(m->g);
    free(m);
}

static bool same_shape(const ir_type *t, const rt_tensor *x)
{
    if (t->rank != x->rank)
        return false;
    for (int i = 0; i < t->rank; i++)
        if (t->dims[i] != x->dims[i])
            return false;
    return true;
}

/* Points the slot of leaf value v at tensor x: in place when the stored
 * layout matches, else as an f32 copy owned by the module. */
static int bind_leaf(cg_module *m, const ir_value *v, const rt_tensor *x, const char *kind, ir_diag *d)
{
    char want[128], got[128];
    ir_type xt = {x ? x->dtype : IR_F32, x ? x->rank : 0, {0}};
    if (x)
        memcpy(xt.dims, x->dims, sizeof(int64_t) * (size_t)x->rank);
    if (!x) {
        ir_diag_file_error(d, NULL, "%s '%s' of type %s is missing; pass a tensor with that name", kind, v->name,
                           ir_type_str(&v->type, want, sizeof want));
        return -1;
    }
    bool dtype_ok = cg_is_float(v->type.dtype) ? cg_is_float(x->dtype) : x->dtype == v->type.dtype;
    if (!dtype_ok || !same_shape(&v->type, x)) {
        ir_diag_file_error(d, NULL, "%s '%s' has type %s but the graph expects %s", kind, v->name,
                           ir_type_str(&xt, got, sizeof got), ir_type_str(&v->type, want, sizeof want));
        return -1;
    }
    int slot = m->plan.slot[v->id];
    free(m->owned[slot]);
    m->owned[slot] = NULL;
    if (!cg_is_float(x->dtype) || x->dtype == IR_F32) {
        m->bufs[slot] = x->data;
        return 0;
    }
    rt_tensor *f = rt_tensor_to_f32(x);
    if (!f) {
        ir_diag_file_error(d, NULL, "out of memory converting %s '%s' to f32", kind, v->name);
        return -1;
    }
    /* Keep the converted data and drop the tensor header. */
    m->owned[slot] = m->bufs[slot] = alloc_aligned((int64_t)rt_tensor_nbytes(f));
    if (m->bufs[slot])
        memcpy(m->bufs[slot], f->data, rt_tensor_nbytes(f));
    rt_tensor_free(f);
    return m->bufs[slot] ? 0 : -1;
}

static void reset_status(cg_module *m)
{
    memset(m->bufs[m->plan.status_slot], 0, 4 * sizeof(int64_t));
}

static int report_status(cg_module *m, int32_t code, ir_diag *d)
{
    const int64_t *st = m->bufs[m->plan.status_slot];
    const ir_value *v = m->g->values[st[1]];
    if (code == CG_STATUS_INDEX_RANGE && v->op == IR_OP_CACHE_WRITE) {
        int64_t rows = v->type.dims[v->type.rank - 2];
        int64_t fresh = m->g->values[v->ops[1]]->type.dims[v->type.rank - 2];
        ir_diag_error(d, v->loc, "cache_write '%s': rows [%lld, %lld) are outside the cache's %lld rows; the "
                      "position must be between 0 and %lld", v->name, (long long)st[3], (long long)(st[3] + fresh),
                      (long long)rows, (long long)(rows - fresh));
    } else if (code == CG_STATUS_INDEX_RANGE) {
        /* Ids index the table rows (the result rows for grad.embedding), and
         * targets index the last axis of the logits. */
        bool is_id = v->op == IR_OP_EMBEDDING || v->op == IR_OP_GRAD_EMBEDDING;
        const ir_value *indexed = m->g->values[v->ops[v->op == IR_OP_GRAD_CROSS_ENTROPY ? 1 : 0]];
        int64_t limit = indexed->type.dims[indexed->type.rank - 1];
        if (v->op == IR_OP_EMBEDDING)
            limit = indexed->type.dims[0];
        else if (v->op == IR_OP_GRAD_EMBEDDING)
            limit = v->type.dims[0];
        ir_diag_error(d, v->loc, "%s '%s': %s %lld at flat position %lld is out of range [0, %lld)",
                      ir_op_get(v->op)->name, v->name, is_id ? "id" : "target",
                      (long long)st[3], (long long)st[2], (long long)limit);
    } else {
        ir_diag_file_error(d, NULL, "codegen: generated code returned unknown status %d", (int)code);
    }
    return -1;
}

int cg_bind_weights(cg_module *m, const rt_weights *weights, ir_diag *d)
{
    m->bound = NULL;
    m->is_bound = false;
    for (int i = 0; i < m->g->nvalues; i++) {
        const ir_value *v = m->g->values[i];
        if (v->op != IR_OP_PARAM || v->dead)
            continue;
        if (bind_leaf(m, v, weights ? rt_weights_get(weights, v->name) : NULL, "weight", d) != 0)
            return -1;
    }
    reset_status(m);
    int32_t code = m->bind_fn(m->bufs, m->pool);
    if (code != 0)
        return report_status(m, code, d);
    m->bound = weights;
    m->is_bound = true;
    return 0;
}

static rt_tensor *copy_output(cg_module *m, const ir_value *v)
{
    rt_tensor *t = rt_tensor_new(v->type.dtype, v->type.rank, v->type.dims);
    if (!t)
        return NULL;
    const void *src = m->bufs[m->plan.slot[v->id]];
    int64_t n = ir_type_numel(&v->type);
    if (v->type.dtype == IR_F16 || v->type.dtype == IR_BF16) {
        const float *f = src;
        uint16_t *h = t->data;
        for (int64_t i = 0; i < n; i++)
            h[i] = v->type.dtype == IR_F16 ? rt_f32_to_f16(f[i]) : rt_f32_to_bf16(f[i]);
    } else {
        memcpy(t->data, src, rt_tensor_nbytes(t));
    }
    return t;
}

/* Binds the weights unless bound already, binds the inputs and runs
 * qc_run, leaving the outputs in the module's buffers. */
static int run_entry(cg_module *m, const rt_weights *weights, const rt_weights *inputs, ir_diag *d)
{
    if ((!m->is_bound || m->bound != weights) && cg_bind_weights(m, weights, d) != 0)
        return -1;
    for (int i = 0; i < m->g->nvalues; i++) {
        const ir_value *v = m->g->values[i];
        if (v->op != IR_OP_INPUT || v->dead)
            continue;
        if (bind_leaf(m, v, inputs ? rt_weights_get(inputs, v->name) : NULL, "input", d) != 0)
            return -1;
    }
    reset_status(m);
    m->profile.last = now_seconds();
    int32_t code = m->run_fn(m->bufs, m->pool);
    if (code != 0)
        return report_status(m, code, d);
    return 0;
}

int cg_run_views(cg_module *m, const rt_weights *weights, const rt_weights *inputs, rt_tensor *outputs,
                 ir_diag *d)
{
    if (!m->converted)
        m->converted = calloc((size_t)m->g->noutputs + 1, sizeof *m->converted);
    if (!m->converted) {
        ir_diag_file_error(d, NULL, "out of memory for the outputs of graph '%s'", m->g->name);
        return -1;
    }
    if (run_entry(m, weights, inputs, d) != 0)
        return -1;
    for (int i = 0; i < m->g->noutputs; i++) {
        const ir_value *v = m->g->values[m->g->outputs[i]];
        memset(&outputs[i], 0, sizeof outputs[i]);
        outputs[i].dtype = v->type.dtype;
        outputs[i].rank = v->type.rank;
        memcpy(outputs[i].dims, v->type.dims, sizeof(int64_t) * (size_t)v->type.rank);
        outputs[i].data = m->bufs[m->plan.slot[v->id]];
        if (v->type.dtype != IR_F16 && v->type.dtype != IR_BF16)
            continue;
        /* The module stores these as f32, so the view shows a converted
         * copy that the module keeps until the next run. */
        rt_tensor_free(m->converted[i]);
        m->converted[i] = copy_output(m, v);
        if (!m->converted[i]) {
            ir_diag_file_error(d, NULL, "out of memory converting output '%s' of graph '%s'", v->name,
                               m->g->name);
            return -1;
        }
        outputs[i].data = m->converted[i]->data;
    }
    return 0;
}

int cg_run(cg_module *m, const rt_weights *weights, const rt_weights *inputs, rt_tensor **outputs, ir_diag *d)
{
    if (run_entry(m, weights, inputs, d) != 0)
        return -1;
    for (int i = 0; i < m->g->noutputs; i++) {
        outputs[i] = copy_output(m, m->g->values[m->g->outputs[i]]);
        if (!outputs[i]) {
            for (int j = 0; j < i; j++) {
                rt_tensor_free(outputs[j]);
                outputs[j] = NULL;
            }
            ir_diag_file_error(d, NULL, "out of memory copying output %d of graph '%s'", i, m->g->name);
            return -1;
        }
    }
    return 0;
}

static char *emit_text(const ir_graph *g, const cg_options *o, bool assembly, ir_diag *d)
{
    cg_options defaults;
    o = options_or_default(o, &defaults);
    LLVMContextRef ctx = LLVMContextCreate();
    cg_plan plan;
    cg_gemm_shape gs;
    LLVMModuleRef mod = build_optimized(ctx, g, o, &plan, &gs, d);
    cg_plan_free(&plan);
    char *text = NULL;
    if (mod && !assembly) {
        char *s = LLVMPrintModuleToString(mod);
        text = strdup(s);
        LLVMDisposeMessage(s);
    } else if (mod) {
        LLVMTargetMachineRef tm = cg_target_machine(o, d);
        LLVMMemoryBufferRef buf = NULL;
        char *err = NULL;
        if (tm && LLVMTargetMachineEmitToMemoryBuffer(tm, mod, LLVMAssemblyFile, &err, &buf)) {
            ir_diag_file_error(d, NULL, "codegen: emitting assembly failed: %s", err);
            LLVMDisposeMessage(err);
        } else if (buf) {
            size_t n = LLVMGetBufferSize(buf);
            text = malloc(n + 1);
            if (text) {
                memcpy(text, LLVMGetBufferStart(buf), n);
                text[n] = '\0';
            }
            LLVMDisposeMemoryBuffer(buf);
        }
        if (tm)
            LLVMDisposeTargetMachine(tm);
    }
    if (mod)
        LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    return text;
}

char *cg_emit_llvm(const ir_graph *g, const cg_options *o, ir_diag *d)
{
    return emit_text(g, o, false, d);
}

char *cg_emit_asm(const ir_graph *g, const cg_options *o, ir_diag *d)
{
    return emit_text(g, o, true, d);
}

double cg_graph_matmul_flops(const ir_graph *g)
{
    double flops = 0;
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->dead || !cg_is_product(v))
            continue;
        const ir_type *at = &g->values[v->ops[0]]->type;
        bool transpose_a = ir_op_attr_index(v->op, "transpose_a") >= 0 && ir_attr_int(v, "transpose_a") != 0;
        int64_t k = at->dims[at->rank - (transpose_a ? 2 : 1)];
        flops += 2.0 * (double)ir_type_numel(&v->type) * (double)k;
    }
    return flops;
}
