/* Ahead-of-time compilation. Plans the bundle of a graph (buffer slots,
 * scratch offsets, the weights blob) and builds the same optimized module
 * as the JIT plus the entry points of aot_entry.c. Writes the object, the
 * weights file and the executable stub atomically.
 * NOTE: the module is built from cg_plan_build, cg_build_module and
 * cg_optimize in the order jit.c uses; a step added to the JIT's module
 * building must be added here too. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <llvm-c/Target.h>

#include "codegen/aot_internal.h"
#include "runtime/safetensors.h"

_Static_assert(sizeof(pthread_mutex_t) <= CG_AOT_PTHREAD_BYTES && sizeof(pthread_cond_t) <= CG_AOT_PTHREAD_BYTES,
               "the generated thread pool reserves CG_AOT_PTHREAD_BYTES per mutex and condition variable");

cg_aot_options cg_aot_default_options(void)
{
    cg_aot_options o = {"model", NULL, NULL, 3, 64, true, NULL, NULL};
    return o;
}

const char *cg_aot_c_type(ir_dtype t)
{
    switch (t) {
    case IR_F32:
    case IR_F16:
    case IR_BF16:
        return "float";
    case IR_I8:
        return "int8_t";
    case IR_U8:
        return "uint8_t";
    case IR_I32:
        return "int32_t";
    case IR_I64:
        return "int64_t";
    case IR_DTYPE_COUNT:
        break;
    }
    return "void";
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int64_t align_up(int64_t n)
{
    return (n + CG_AOT_ALIGN - 1) / CG_AOT_ALIGN * CG_AOT_ALIGN;
}

/* ---- Target machine ---- */

/* Creates the target machine with LLVM's stderr output captured, because
 * LLVM 19 reports an unknown CPU only as a warning on stderr ("'x' is not
 * a recognized processor for this target") and then ignores the CPU.
 * Sets *unknown_cpu when that warning appeared; other output is passed on
 * to stderr.
 * NOTE: file descriptor 2 is redirected for the whole process meanwhile, so
 * another thread's stderr output in that window is delayed until after the
 * call. */
static LLVMTargetMachineRef create_machine(LLVMTargetRef target, const char *triple, const char *cpu,
                                           const char *features, LLVMCodeGenOptLevel level, bool *unknown_cpu)
{
    *unknown_cpu = false;
    fflush(stderr);
    FILE *capture = tmpfile();
    int saved = capture ? dup(2) : -1;
    if (saved >= 0 && dup2(fileno(capture), 2) < 0) {
        close(saved);
        saved = -1;
    }
    LLVMTargetMachineRef tm =
        LLVMCreateTargetMachine(target, triple, cpu, features, level, LLVMRelocPIC, LLVMCodeModelDefault);
    if (saved >= 0) {
        dup2(saved, 2);
        close(saved);
        char text[4096];
        size_t n = 0;
        if (fseek(capture, 0, SEEK_SET) == 0)
            n = fread(text, 1, sizeof text - 1, capture);
        text[n] = '\0';
        if (strstr(text, "is not a recognized processor"))
            *unknown_cpu = true;
        else if (n > 0)
            fputs(text, stderr);
    }
    if (capture)
        fclose(capture);
    return tm;
}

static LLVMTargetMachineRef aot_target_machine(const cg_aot_layout *l, ir_diag *d)
{
    LLVMInitializeAllTargetInfos();
    LLVMInitializeAllTargets();
    LLVMInitializeAllTargetMCs();
    LLVMInitializeAllAsmPrinters();

    char *host = LLVMGetDefaultTargetTriple();
    char *triple = LLVMNormalizeTargetTriple(l->triple ? l->triple : host);
    LLVMTargetRef target;
    char *err = NULL;
    LLVMTargetMachineRef tm = NULL;
    if (LLVMGetTargetFromTriple(triple, &target, &err)) {
        ir_diag_file_error(d, NULL,
                           "unknown target triple '%s': %s; run 'llc-19 --version' to list the registered "
                           "targets and write a triple such as x86_64-pc-linux-gnu",
                           l->triple ? l->triple : triple, err);
        LLVMDisposeMessage(err);
        goto done;
    }
    bool use_host_cpu = !l->cpu && !l->triple;
    char *cpu = use_host_cpu ? LLVMGetHostCPUName() : NULL;
    char *features = use_host_cpu ? LLVMGetHostCPUFeatures() : NULL;
    const char *cpu_name = "";
    if (l->cpu)
        cpu_name = l->cpu;
    else if (cpu)
        cpu_name = cpu;
    LLVMCodeGenOptLevel level = l->opt_level <= 0   ? LLVMCodeGenLevelNone
                                : l->opt_level == 1 ? LLVMCodeGenLevelLess
                                : l->opt_level == 2 ? LLVMCodeGenLevelDefault
                                                    : LLVMCodeGenLevelAggressive;
    bool unknown_cpu;
    tm = create_machine(target, triple, cpu_name, features ? features : "", level, &unknown_cpu);
    if (tm && unknown_cpu) {
        ir_diag_file_error(d, NULL,
                           "unknown target CPU '%s' for triple '%s'; run 'llc-19 -mtriple=%s -mcpu=help' to list "
                           "the valid names",
                           cpu_name, triple, triple);
        LLVMDisposeTargetMachine(tm);
        tm = NULL;
    } else if (!tm) {
        ir_diag_file_error(d, NULL, "codegen: cannot create a target machine for CPU '%s' on '%s'", cpu_name, triple);
    }
    if (cpu)
        LLVMDisposeMessage(cpu);
    if (features)
        LLVMDisposeMessage(features);
done:
    LLVMDisposeMessage(triple);
    LLVMDisposeMessage(host);
    return tm;
}

bool cg_aot_targets_host(const cg_aot_layout *l)
{
    return l->host;
}

/* ---- Planning ---- */

/* Sets t->c_name to a C identifier made from name: characters outside
 * [A-Za-z0-9_] become '_', and a numeric suffix keeps it unique among
 * the first `taken` tensors. */
static int make_c_name(cg_aot_tensor *ts, int taken, cg_aot_tensor *t, const char *name)
{
    size_t n = strlen(name);
    char *s = malloc(n + 24);
    if (!s)
        return -1;
    size_t o = 0;
    if (n == 0 || (name[0] >= '0' && name[0] <= '9'))
        s[o++] = '_';
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        s[o++] = ok ? c : '_';
    }
    s[o] = '\0';
    size_t base = o;
    for (int suffix = 2;; suffix++) {
        bool clash = false;
        for (int k = 0; k < taken && !clash; k++)
            clash = strcmp(ts[k].c_name, s) == 0;
        if (!clash)
            break;
        snprintf(s + base, 24, "_%d", suffix);
    }
    t->c_name = s;
    return 0;
}

static int64_t stored_bytes(const ir_type *t)
{
    return ir_type_numel(t) * cg_storage_elem_size(t->dtype);
}

/* Marks the inputs that a cache_write updates in place, following its
 * cache operand through reshapes and earlier cache_writes. */
static void mark_updated_inputs(cg_aot_layout *l)
{
    const ir_graph *g = l->g;
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->dead || v->op != IR_OP_CACHE_WRITE)
            continue;
        const ir_value *root = g->values[v->ops[0]];
        while (root->op == IR_OP_RESHAPE || root->op == IR_OP_CACHE_WRITE)
            root = g->values[root->ops[0]];
        for (int k = 0; k < l->ninputs; k++)
            if (l->inputs[k].value == root->id)
                l->inputs[k].updated = true;
    }
}

/* Fills inputs, outputs and params (with their blob offsets). f16 and
 * bf16 inputs and outputs are rejected, because the entry points pass
 * buffers through without converting them. */
static int collect_tensors(cg_aot_layout *l, ir_diag *d)
{
    ir_graph *g = l->g;
    int n = g->nvalues;
    l->inputs = calloc((size_t)n + 1, sizeof *l->inputs);
    l->params = calloc((size_t)n + 1, sizeof *l->params);
    l->outputs = calloc((size_t)g->noutputs + 1, sizeof *l->outputs);
    if (!l->inputs || !l->params || !l->outputs) {
        ir_diag_file_error(d, NULL, "out of memory while planning the bundle of graph '%s'", g->name);
        return -1;
    }
    int64_t offset = CG_AOT_BLOB_HEADER_BYTES;
    char type[128];
    for (int i = 0; i < n; i++) {
        const ir_value *v = g->values[i];
        if (v->op == IR_OP_INPUT) {
            if (v->type.dtype == IR_F16 || v->type.dtype == IR_BF16) {
                ir_diag_error(d, v->loc, "input '%s' has type %s; the AOT entry points pass f32 and integer "
                              "inputs only, so declare it f32 and cast it inside the model", v->name,
                              ir_type_str(&v->type, type, sizeof type));
                return -1;
            }
            cg_aot_tensor *t = &l->inputs[l->ninputs];
            t->value = i;
            t->bytes = stored_bytes(&v->type);
            if (make_c_name(l->inputs, l->ninputs, t, v->name) != 0)
                return -1;
            l->ninputs++;
        } else if (v->op == IR_OP_PARAM && !v->dead) {
            cg_aot_tensor *t = &l->params[l->nparams++];
            t->value = i;
            t->bytes = stored_bytes(&v->type);
            t->offset = offset;
            offset = align_up(offset + t->bytes);
        }
    }
    l->weights_bytes = offset;
    mark_updated_inputs(l);
    for (int k = 0; k < g->noutputs; k++) {
        const ir_value *v = g->values[g->outputs[k]];
        if (v->type.dtype == IR_F16 || v->type.dtype == IR_BF16) {
            ir_diag_error(d, v->loc, "output '%s' has type %s; the AOT entry points return f32 and integer "
                          "outputs only, so cast it to f32 before the output statement", v->name,
                          ir_type_str(&v->type, type, sizeof type));
            return -1;
        }
        cg_aot_tensor *t = &l->outputs[k];
        t->value = v->id;
        t->bytes = stored_bytes(&v->type);
        /* Output names must not clash with input names: both are
         * parameters of <prefix>_run. */
        cg_aot_tensor *all = calloc((size_t)(l->ninputs + k) + 1, sizeof *all);
        if (!all)
            return -1;
        memcpy(all, l->inputs, sizeof *all * (size_t)l->ninputs);
        memcpy(all + l->ninputs, l->outputs, sizeof *all * (size_t)k);
        int rc = make_c_name(all, l->ninputs + k, t, v->name);
        free(all);
        if (rc != 0)
            return -1;
        l->noutputs++;
    }
    return 0;
}

/* Assigns every slot the arena or the weights blob, with its offset. */
static int place_slots(cg_aot_layout *l, ir_diag *d)
{
    int n = l->plan.nslots;
    l->slot_kind = calloc((size_t)n + 1, sizeof *l->slot_kind);
    l->slot_offset = calloc((size_t)n + 1, sizeof *l->slot_offset);
    if (!l->slot_kind || !l->slot_offset) {
        ir_diag_file_error(d, NULL, "out of memory while planning the bundle of graph '%s'", l->g->name);
        return -1;
    }
    for (int k = 0; k < l->nparams; k++) {
        int s = l->plan.slot[l->params[k].value];
        l->slot_kind[s] = CG_AOT_SLOT_WEIGHTS;
        l->slot_offset[s] = l->params[k].offset;
    }
    int64_t arena = 0;
    for (int s = 0; s < n; s++) {
        if (l->plan.slot_bytes[s] <= 0 || l->slot_kind[s] != CG_AOT_SLOT_NONE)
            continue;
        l->slot_kind[s] = CG_AOT_SLOT_SCRATCH;
        l->slot_offset[s] = arena;
        arena = align_up(arena + l->plan.slot_bytes[s]);
    }
    l->scratch_bytes = arena;
    return 0;
}

static const char *shape_str(const int64_t *dims, int rank, char *buf, int cap)
{
    int o = snprintf(buf, (size_t)cap, "[");
    for (int i = 0; i < rank && o < cap; i++)
        o += snprintf(buf + o, (size_t)(cap - o), "%s%lld", i ? "," : "", (long long)dims[i]);
    if (o < cap)
        snprintf(buf + o, (size_t)(cap - o), "]");
    return buf;
}

/* Checks one tensor against its param; reports and returns -1 on a
 * mismatch. */
static int check_weight(const ir_value *v, const rt_tensor *x, const char *weights_name, ir_diag *d)
{
    char want[128], got[128];
    bool shape_ok = x->rank == v->type.rank;
    for (int r = 0; shape_ok && r < x->rank; r++)
        shape_ok = x->dims[r] == v->type.dims[r];
    bool dtype_ok = cg_is_float(v->type.dtype) ? cg_is_float(x->dtype) : x->dtype == v->type.dtype;
    if (shape_ok && dtype_ok)
        return 0;
    ir_diag_file_error(d, weights_name, "tensor '%s' has %s%s but the model's param is %s", v->name,
                       ir_dtype_name(x->dtype), shape_str(x->dims, x->rank, got, sizeof got),
                       ir_type_str(&v->type, want, sizeof want));
    return -1;
}

static int check_weights(const cg_aot_layout *l, const rt_weights *w, ir_diag *d)
{
    const char *source = l->weights_source;
    int failed = 0;
    for (int k = 0; k < l->nparams; k++) {
        const ir_value *v = l->g->values[l->params[k].value];
        const rt_tensor *x = rt_weights_get(w, v->name);
        if (!x) {
            ir_diag_file_error(d, source, "tensor '%s' is missing from the weights; the model's param is %s",
                               v->name, ir_type_str(&v->type, (char[128]){0}, 128));
            failed = 1;
        } else if (check_weight(v, x, source, d) != 0) {
            failed = 1;
        }
    }
    for (int i = 0; i < w->count; i++) {
        int id = ir_find(l->g, w->names[i]);
        if (id < 0 || l->g->values[id]->op != IR_OP_PARAM) {
            ir_diag_file_error(d, source, "tensor '%s' in the weights matches no param of the model; remove it "
                               "or check the model file and its -D values", w->names[i]);
            failed = 1;
        }
    }
    return failed ? -1 : 0;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t layout_fingerprint(const cg_aot_layout *l)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int k = 0; k < l->nparams; k++) {
        const ir_value *v = l->g->values[l->params[k].value];
        char type[128];
        ir_type_str(&v->type, type, sizeof type);
        h = fnv1a(h, v->name, strlen(v->name) + 1);
        h = fnv1a(h, type, strlen(type) + 1);
    }
    return h;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Builds the blob: the header and every param in its stored layout.
 * NOTE: the blob is little-endian, like every target quadc tests. */
static int build_blob(cg_aot_layout *l, const rt_weights *w, ir_diag *d)
{
    size_t bytes = (size_t)align_up(l->weights_bytes);
    l->blob = aligned_alloc(CG_AOT_ALIGN, bytes);
    if (!l->blob) {
        ir_diag_file_error(d, NULL, "out of memory allocating the %lld-byte weights blob",
                           (long long)l->weights_bytes);
        return -1;
    }
    memset(l->blob, 0, bytes);
    static const char magic[8] = {'Q', 'D', 'C', 'W', 'G', 'T', '0', '1'};
    memcpy(l->blob, magic, 8);
    put_u64(l->blob + 8, l->fingerprint);
    put_u64(l->blob + 16, (uint64_t)l->weights_bytes);
    put_u64(l->blob + 24, CG_AOT_ABI_VERSION);
    put_u64(l->blob + 32, (uint64_t)l->nparams);
    for (int k = 0; k < l->nparams; k++) {
        const ir_value *v = l->g->values[l->params[k].value];
        const rt_tensor *x = rt_weights_get(w, v->name);
        uint8_t *dst = l->blob + l->params[k].offset;
        if (cg_is_float(v->type.dtype) && x->dtype != IR_F32) {
            rt_tensor *f = rt_tensor_to_f32(x);
            if (!f) {
                ir_diag_file_error(d, NULL, "out of memory converting tensor '%s' to f32", v->name);
                return -1;
            }
            memcpy(dst, f->data, (size_t)l->params[k].bytes);
            rt_tensor_free(f);
        } else {
            memcpy(dst, x->data, (size_t)l->params[k].bytes);
        }
    }
    return 0;
}

cg_aot_layout *cg_aot_plan(const ir_graph *g, const rt_weights *w, const cg_aot_options *o, ir_diag *d)
{
    cg_aot_layout *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->g = ir_graph_clone(g);
    l->prefix = strdup(o->prefix);
    l->triple = dup_or_null(o->triple);
    l->cpu = dup_or_null(o->cpu);
    l->source = dup_or_null(o->source);
    l->weights_source = dup_or_null(o->weights_source);
    l->opt_level = o->opt_level;
    l->threads_max = o->threads_max;
    l->embed_weights = o->embed_weights;
    if (!l->g || !l->prefix) {
        cg_aot_layout_free(l);
        return NULL;
    }
    l->tm = aot_target_machine(l, d);
    if (!l->tm) {
        cg_aot_layout_free(l);
        return NULL;
    }
    char *default_triple = LLVMGetDefaultTargetTriple();
    char *host = LLVMNormalizeTargetTriple(default_triple);
    char *triple = LLVMGetTargetMachineTriple(l->tm);
    l->host = strcmp(host, triple) == 0;
    LLVMDisposeMessage(default_triple);
    LLVMDisposeMessage(host);
    LLVMDisposeMessage(triple);

    l->gs = cg_gemm_shape_for(cg_vector_bits(l->tm));
    if (cg_plan_build(l->g, &l->gs, false, false, &l->plan, d) != 0 || collect_tensors(l, d) != 0 ||
        place_slots(l, d) != 0 || check_weights(l, w, d) != 0) {
        cg_aot_layout_free(l);
        return NULL;
    }
    l->fingerprint = layout_fingerprint(l);
    if (build_blob(l, w, d) != 0) {
        cg_aot_layout_free(l);
        return NULL;
    }
    return l;
}

void cg_aot_layout_free(cg_aot_layout *l)
{
    if (!l)
        return;
    for (int k = 0; k < l->ninputs; k++)
        free(l->inputs[k].c_name);
    for (int k = 0; k < l->noutputs; k++)
        free(l->outputs[k].c_name);
    free(l->inputs);
    free(l->outputs);
    free(l->params);
    free(l->slot_kind);
    free(l->slot_offset);
    free(l->blob);
    cg_plan_free(&l->plan);
    if (l->tm)
        LLVMDisposeTargetMachine(l->tm);
    ir_graph_free(l->g);
    free(l->prefix);
    free(l->triple);
    free(l->cpu);
    free(l->source);
    free(l->weights_source);
    free(l);
}

int64_t cg_aot_weights_bytes(const cg_aot_layout *l)
{
    return l->weights_bytes;
}

int64_t cg_aot_scratch_bytes(const cg_aot_layout *l)
{
    return l->scratch_bytes;
}

/* ---- Output files ---- */

/* Emits mod as an object file to a temporary file beside path and renames
 * it over path; the temporary file is removed on every failure. */
static int emit_object_atomic(LLVMTargetMachineRef tm, LLVMModuleRef mod, const char *path, ir_diag *d)
{
    size_t n = strlen(path);
    char *temp = malloc(n + 16);
    if (!temp) {
        ir_diag_file_error(d, path, "out of memory");
        return -1;
    }
    snprintf(temp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(temp);
    if (fd < 0) {
        ir_diag_file_error(d, path, "cannot create the output file: %s", strerror(errno));
        free(temp);
        return -1;
    }
    close(fd);
    char *err = NULL;
    int status = 0;
    /* mkstemp creates the file 0600; give it the mode a new file gets. */
    mode_t mask = umask(0);
    umask(mask);
    chmod(temp, 0666 & ~mask);
    if (LLVMTargetMachineEmitToFile(tm, mod, temp, LLVMObjectFile, &err)) {
        ir_diag_file_error(d, path, "writing the object file failed: %s", err ? err : "unknown error");
        status = -1;
    } else if (rename(temp, path) != 0) {
        ir_diag_file_error(d, path, "cannot move the object file into place: %s", strerror(errno));
        status = -1;
    }
    if (err)
        LLVMDisposeMessage(err);
    if (status != 0)
        unlink(temp);
    free(temp);
    return status;
}

int cg_aot_write_object(const cg_aot_layout *l, const char *obj_path, ir_diag *d)
{
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = cg_build_module(ctx, l->tm, l->g, &l->plan, &l->gs, d);
    int status = mod ? 0 : -1;
    if (status == 0)
        status = cg_aot_add_entry_points(l, mod, d);
    if (status == 0)
        status = cg_optimize(mod, l->tm, l->opt_level, d);
    if (status == 0)
        status = emit_object_atomic(l->tm, mod, obj_path, d);
    if (mod)
        LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    return status;
}

int cg_aot_write_weights(const cg_aot_layout *l, const char *weights_path, ir_diag *d)
{
    rt_atomic_file f;
    if (rt_atomic_file_open(&f, weights_path, d) != 0)
        return -1;
    rt_atomic_file_write(&f, l->blob, (size_t)l->weights_bytes);
    return rt_atomic_file_commit(&f);
}

static LLVMValueRef bytes_global(LLVMModuleRef mod, const char *name, const char *data, size_t len)
{
    LLVMContextRef ctx = LLVMGetModuleContext(mod);
    /* A NUL after the bytes, so the texts are also C strings. */
    LLVMValueRef init = LLVMConstStringInContext2(ctx, data, len, 0);
    LLVMValueRef g = LLVMAddGlobal(mod, LLVMTypeOf(init), name);
    LLVMSetInitializer(g, init);
    LLVMSetGlobalConstant(g, 1);
    return g;
}

static void size_global(LLVMModuleRef mod, const char *name, uint64_t value)
{
    LLVMTypeRef i64 = LLVMInt64TypeInContext(LLVMGetModuleContext(mod));
    LLVMValueRef g = LLVMAddGlobal(mod, i64, name);
    LLVMSetInitializer(g, LLVMConstInt(i64, value, 0));
    LLVMSetGlobalConstant(g, 1);
}

int cg_aot_write_exe_stub(const cg_aot_layout *l, const char *obj_path, const char *encoder_json,
                          size_t encoder_json_len, const char *vocab_bpe, size_t vocab_bpe_len,
                          const char *weights_path, ir_diag *d)
{
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = cg_module_create(ctx, l->tm, "quadc_exe_stub");
    LLVMTypeRef ptr = LLVMPointerTypeInContext(ctx, 0);

    size_t n = strlen(l->prefix) + sizeof "_bundle";
    char *bundle_name = malloc(n);
    snprintf(bundle_name, n, "%s_bundle", l->prefix);
    LLVMValueRef bundle = LLVMAddGlobal(mod, LLVMInt8TypeInContext(ctx), bundle_name);
    free(bundle_name);
    LLVMSetGlobalConstant(bundle, 1);
    LLVMValueRef bundle_ref = LLVMAddGlobal(mod, ptr, "quadc_exe_bundle");
    LLVMSetInitializer(bundle_ref, bundle);
    LLVMSetGlobalConstant(bundle_ref, 1);

    bytes_global(mod, "quadc_exe_encoder_json", encoder_json, encoder_json_len);
    size_global(mod, "quadc_exe_encoder_json_size", encoder_json_len);
    bytes_global(mod, "quadc_exe_vocab_bpe", vocab_bpe, vocab_bpe_len);
    size_global(mod, "quadc_exe_vocab_bpe_size", vocab_bpe_len);
    LLVMValueRef path_ref = LLVMAddGlobal(mod, ptr, "quadc_exe_weights_path");
    if (weights_path) {
        LLVMValueRef text = bytes_global(mod, "quadc_exe_weights_path_text", weights_path, strlen(weights_path));
        LLVMSetLinkage(text, LLVMPrivateLinkage);
        LLVMSetInitializer(path_ref, text);
    } else {
        LLVMSetInitializer(path_ref, LLVMConstPointerNull(ptr));
    }
    LLVMSetGlobalConstant(path_ref, 1);

    int status = emit_object_atomic(l->tm, mod, obj_path, d);
    LLVMDisposeModule(mod);
    LLVMContextDispose(ctx);
    return status;
}
