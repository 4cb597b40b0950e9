/* The entry points of an ahead-of-time bundle, generated as LLVM IR so
 * that the object needs nothing but libc and libpthread: the weights
 * loader, init, run, run_array and free, and the bundle descriptor. The
 * thread pool is in aot_pool.c.
 *
 * The context that init allocates is { bufs, arena, owned weights, pool }.
 * bufs is the slot array qc_bind and qc_run read (cg_internal.h), and the
 * pool is the `pool` argument they pass on to rt_pool_parallel_for.
 *
 * pthread_t is treated as a pointer-sized integer, which it is in glibc,
 * musl and on macOS; size_t and long are treated as pointer-sized, which
 * holds on LP64 and ILP32 targets but not on 64-bit Windows. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/aot_internal.h"

/* SEEK_SET and SEEK_END, equal in glibc, musl and macOS. */
enum { AOT_SEEK_SET = 0, AOT_SEEK_END = 2 };

/* A transparent huge page on x86-64 Linux, and Linux's MADV_HUGEPAGE. */
enum { AOT_HUGE_PAGE = 2 << 20, AOT_MADV_HUGEPAGE = 14 };

/* Bytes of the four i64 words of the status slot. */
enum { AOT_STATUS_BYTES = 32 };

/* Context fields, in order. */
enum { CTX_BUFS, CTX_ARENA, CTX_OWNED_WEIGHTS, CTX_POOL, CTX_FIELDS };

typedef struct aot_fn {
    LLVMValueRef fn;
    LLVMTypeRef ty;
} aot_fn;

typedef struct aot_ir {
    const cg_aot_layout *l;
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMTypeRef i8, i32, i64, iptr, ptr, void_ty;
    LLVMTypeRef ctx_ty;
    aot_fn calloc_fn, free_fn, aligned_alloc_fn, fopen_fn, fseek_fn, ftell_fn, fread_fn, fclose_fn;
    aot_fn pool_new, pool_free;
    aot_fn madvise_fn; /* declared on Linux targets only, see huge_pages */
    bool huge_pages;   /* large weight blobs go on 2 MB pages (Linux targets) */
    aot_fn load_weights, check_blob, free_ctx, init, run, run_array, bind, run_graph;
    LLVMValueRef weights_global; /* embedded blob, or NULL */
} aot_ir;

/* A branch target that collects a status code from every edge into it. */
typedef struct aot_exit {
    LLVMBasicBlockRef block;
    int count;
    LLVMValueRef codes[32];
    LLVMBasicBlockRef from[32];
} aot_exit;

static aot_fn declare(aot_ir *a, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, int n)
{
    aot_fn f;
    f.ty = LLVMFunctionType(ret, params, (unsigned)n, 0);
    f.fn = LLVMGetNamedFunction(a->mod, name);
    if (!f.fn)
        f.fn = LLVMAddFunction(a->mod, name, f.ty);
    return f;
}

static LLVMValueRef call(aot_ir *a, aot_fn f, LLVMValueRef *args, int n)
{
    return LLVMBuildCall2(a->b, f.ty, f.fn, args, (unsigned)n, "");
}

static LLVMValueRef const_i32(aot_ir *a, int64_t v)
{
    return LLVMConstInt(a->i32, (unsigned long long)v, 1);
}

static LLVMValueRef const_i64(aot_ir *a, int64_t v)
{
    return LLVMConstInt(a->i64, (unsigned long long)v, 1);
}

static LLVMValueRef const_iptr(aot_ir *a, int64_t v)
{
    return LLVMConstInt(a->iptr, (unsigned long long)v, 1);
}

static LLVMBasicBlockRef add_block(aot_ir *a, LLVMValueRef fn, const char *name)
{
    return LLVMAppendBasicBlockInContext(a->ctx, fn, name);
}

static LLVMValueRef field_ptr(aot_ir *a, LLVMTypeRef ty, LLVMValueRef base, int field)
{
    return LLVMBuildStructGEP2(a->b, ty, base, (unsigned)field, "");
}

static LLVMValueRef load_field(aot_ir *a, LLVMTypeRef ty, LLVMValueRef base, int field, LLVMTypeRef field_ty)
{
    return LLVMBuildLoad2(a->b, field_ty, field_ptr(a, ty, base, field), "");
}

/* Returns bufs[slot]'s address. */
static LLVMValueRef slot_ptr(aot_ir *a, LLVMValueRef bufs, int64_t slot)
{
    LLVMValueRef idx = const_i64(a, slot);
    return LLVMBuildInBoundsGEP2(a->b, a->ptr, bufs, &idx, 1, "");
}

/* Branches to exit with `code` when cond holds, else continues in a new
 * block. */
static void exit_if(aot_ir *a, LLVMValueRef fn, aot_exit *x, LLVMValueRef cond, LLVMValueRef code)
{
    LLVMBasicBlockRef next = add_block(a, fn, "ok");
    x->codes[x->count] = code;
    x->from[x->count] = LLVMGetInsertBlock(a->b);
    x->count++;
    LLVMBuildCondBr(a->b, cond, x->block, next);
    LLVMPositionBuilderAtEnd(a->b, next);
}

static LLVMValueRef is_null(aot_ir *a, LLVMValueRef p)
{
    return LLVMBuildIsNull(a->b, p, "");
}

static void declare_libc(aot_ir *a)
{
    LLVMTypeRef p1[1] = {a->ptr};
    LLVMTypeRef sizes[2] = {a->iptr, a->iptr};
    a->calloc_fn = declare(a, "calloc", a->ptr, sizes, 2);
    a->aligned_alloc_fn = declare(a, "aligned_alloc", a->ptr, sizes, 2);
    a->free_fn = declare(a, "free", a->void_ty, p1, 1);
    LLVMTypeRef fopen_params[2] = {a->ptr, a->ptr};
    a->fopen_fn = declare(a, "fopen", a->ptr, fopen_params, 2);
    LLVMTypeRef fseek_params[3] = {a->ptr, a->iptr, a->i32};
    a->fseek_fn = declare(a, "fseek", a->i32, fseek_params, 3);
    a->ftell_fn = declare(a, "ftell", a->iptr, p1, 1);
    LLVMTypeRef fread_params[4] = {a->ptr, a->iptr, a->iptr, a->ptr};
    a->fread_fn = declare(a, "fread", a->iptr, fread_params, 4);
    a->fclose_fn = declare(a, "fclose", a->i32, p1, 1);
    LLVMTypeRef new_params[1] = {a->i32};
    a->pool_new = declare(a, "qc_aot_pool_new", a->ptr, new_params, 1);
    a->pool_free = declare(a, "qc_aot_pool_free", a->void_ty, p1, 1);
    const char *triple = LLVMGetTarget(a->mod);
    a->huge_pages = triple && strstr(triple, "linux") != NULL;
    if (a->huge_pages) {
        LLVMTypeRef madvise_params[3] = {a->ptr, a->iptr, a->i32};
        a->madvise_fn = declare(a, "madvise", a->i32, madvise_params, 3);
    }
}

/* Allocates `bytes` for a weights blob. On a Linux target a blob of at
 * least one 2 MB page starts on a 2 MB boundary and requests transparent
 * huge pages for its whole pages, as the JIT's buffers do. The decoding
 * kernels stream the weights, and on 4 KB pages the int8 linear layers of
 * a GPT-2 124M decoding step took about 12% longer (2-core Zen 4 VM). The
 * advice may fail or be ignored, which costs only that speed. */
static LLVMValueRef alloc_blob(aot_ir *a, int64_t bytes)
{
    if (!a->huge_pages || bytes < AOT_HUGE_PAGE) {
        int64_t rounded = (bytes + CG_AOT_ALIGN - 1) / CG_AOT_ALIGN * CG_AOT_ALIGN;
        LLVMValueRef args[2] = {const_iptr(a, CG_AOT_ALIGN), const_iptr(a, rounded)};
        return call(a, a->aligned_alloc_fn, args, 2);
    }
    int64_t rounded = (bytes + AOT_HUGE_PAGE - 1) / AOT_HUGE_PAGE * AOT_HUGE_PAGE;
    LLVMValueRef args[2] = {const_iptr(a, AOT_HUGE_PAGE), const_iptr(a, rounded)};
    LLVMValueRef p = call(a, a->aligned_alloc_fn, args, 2);
    /* madvise on a null pointer fails harmlessly. */
    LLVMValueRef advice[3] = {p, const_iptr(a, bytes / AOT_HUGE_PAGE * AOT_HUGE_PAGE),
                              const_i32(a, AOT_MADV_HUGEPAGE)};
    call(a, a->madvise_fn, advice, 3);
    return p;
}

static LLVMValueRef string_constant(aot_ir *a, const char *s, const char *name)
{
    LLVMValueRef init = LLVMConstStringInContext2(a->ctx, s, strlen(s), 0);
    LLVMValueRef g = LLVMAddGlobal(a->mod, LLVMTypeOf(init), name);
    LLVMSetInitializer(g, init);
    LLVMSetGlobalConstant(g, 1);
    LLVMSetLinkage(g, LLVMPrivateLinkage);
    LLVMSetUnnamedAddress(g, LLVMGlobalUnnamedAddr);
    return g;
}

/* i32 load_weights(path, ptr *out): reads the whole weights file into a
 * new aligned buffer after checking its size. */
static void build_load_weights(aot_ir *a)
{
    const cg_aot_layout *l = a->l;
    LLVMTypeRef params[2] = {a->ptr, a->ptr};
    a->load_weights = declare(a, "qc_aot_load_weights", a->i32, params, 2);
    LLVMValueRef fn = a->load_weights.fn;
    LLVMValueRef path = LLVMGetParam(fn, 0), out = LLVMGetParam(fn, 1);
    LLVMBasicBlockRef entry = add_block(a, fn, "entry");
    aot_exit x = {add_block(a, fn, "fail"), 0, {0}, {0}};
    LLVMPositionBuilderAtEnd(a->b, entry);

    LLVMValueRef fopen_args[2] = {path, string_constant(a, "rb", "qc_aot_mode_rb")};
    LLVMValueRef file = call(a, a->fopen_fn, fopen_args, 2);
    exit_if(a, fn, &x, is_null(a, file), const_i32(a, CG_AOT_STATUS_WEIGHTS_READ));
    LLVMValueRef seek_end[3] = {file, const_iptr(a, 0), const_i32(a, AOT_SEEK_END)};
    call(a, a->fseek_fn, seek_end, 3);
    LLVMValueRef size = call(a, a->ftell_fn, &file, 1);
    LLVMValueRef seek_set[3] = {file, const_iptr(a, 0), const_i32(a, AOT_SEEK_SET)};
    call(a, a->fseek_fn, seek_set, 3);
    LLVMValueRef wrong_size = LLVMBuildICmp(a->b, LLVMIntNE, size, const_iptr(a, l->weights_bytes), "");
    LLVMBasicBlockRef close_mismatch = add_block(a, fn, "close.mismatch");
    LLVMBasicBlockRef sized = add_block(a, fn, "sized");
    LLVMBuildCondBr(a->b, wrong_size, close_mismatch, sized);
    LLVMPositionBuilderAtEnd(a->b, close_mismatch);
    call(a, a->fclose_fn, &file, 1);
    LLVMBuildRet(a->b, const_i32(a, CG_AOT_STATUS_WEIGHTS_MISMATCH));

    LLVMPositionBuilderAtEnd(a->b, sized);
    LLVMValueRef blob = alloc_blob(a, l->weights_bytes);
    LLVMBasicBlockRef close_oom = add_block(a, fn, "close.oom");
    LLVMBasicBlockRef allocated = add_block(a, fn, "allocated");
    LLVMBuildCondBr(a->b, is_null(a, blob), close_oom, allocated);
    LLVMPositionBuilderAtEnd(a->b, close_oom);
    call(a, a->fclose_fn, &file, 1);
    LLVMBuildRet(a->b, const_i32(a, CG_AOT_STATUS_OUT_OF_MEMORY));

    LLVMPositionBuilderAtEnd(a->b, allocated);
    LLVMValueRef read_args[4] = {blob, const_iptr(a, 1), size, file};
    LLVMValueRef got = call(a, a->fread_fn, read_args, 4);
    call(a, a->fclose_fn, &file, 1);
    LLVMBasicBlockRef short_read = add_block(a, fn, "short");
    LLVMBasicBlockRef complete = add_block(a, fn, "complete");
    LLVMBuildCondBr(a->b, LLVMBuildICmp(a->b, LLVMIntNE, got, size, ""), short_read, complete);
    LLVMPositionBuilderAtEnd(a->b, short_read);
    call(a, a->free_fn, &blob, 1);
    LLVMBuildRet(a->b, const_i32(a, CG_AOT_STATUS_WEIGHTS_READ));

    LLVMPositionBuilderAtEnd(a->b, complete);
    LLVMBuildStore(a->b, blob, out);
    LLVMBuildRet(a->b, const_i32(a, 0));

    LLVMPositionBuilderAtEnd(a->b, x.block);
    LLVMValueRef code = LLVMBuildPhi(a->b, a->i32, "");
    LLVMAddIncoming(code, x.codes, x.from, (unsigned)x.count);
    LLVMBuildRet(a->b, code);
}

/* Reads the little-endian u64 at byte `offset` of the blob header. */
static LLVMValueRef header_word(aot_ir *a, LLVMValueRef blob, int offset)
{
    LLVMValueRef idx = const_i64(a, offset);
    LLVMValueRef p = LLVMBuildInBoundsGEP2(a->b, a->i8, blob, &idx, 1, "");
    LLVMValueRef v = LLVMBuildLoad2(a->b, a->i64, p, "");
    LLVMSetAlignment(v, 8);
    return v;
}

static uint64_t magic_word(void)
{
    static const char magic[8] = {'Q', 'D', 'C', 'W', 'G', 'T', '0', '1'};
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | (uint8_t)magic[i];
    return v;
}

/* i32 check_blob(ptr blob): 0 when the magic, fingerprint, byte count and
 * ABI version in the header are the ones this object was built for. */
static void build_check_blob(aot_ir *a)
{
    const cg_aot_layout *l = a->l;
    LLVMTypeRef params[1] = {a->ptr};
    a->check_blob = declare(a, "qc_aot_check_blob", a->i32, params, 1);
    LLVMValueRef fn = a->check_blob.fn;
    LLVMValueRef blob = LLVMGetParam(fn, 0);
    LLVMPositionBuilderAtEnd(a->b, add_block(a, fn, "entry"));
    uint64_t expected[4] = {magic_word(), l->fingerprint, (uint64_t)l->weights_bytes, CG_AOT_ABI_VERSION};
    LLVMValueRef bad = LLVMConstInt(LLVMInt1TypeInContext(a->ctx), 0, 0);
    for (int k = 0; k < 4; k++) {
        LLVMValueRef word = header_word(a, blob, 8 * k);
        LLVMValueRef ne = LLVMBuildICmp(a->b, LLVMIntNE, word, LLVMConstInt(a->i64, expected[k], 0), "");
        bad = LLVMBuildOr(a->b, bad, ne, "");
    }
    LLVMBuildRet(a->b, LLVMBuildSelect(a->b, bad, const_i32(a, CG_AOT_STATUS_WEIGHTS_MISMATCH), const_i32(a, 0), ""));
}

static char *prefixed(const cg_aot_layout *l, const char *suffix)
{
    size_t n = strlen(l->prefix) + strlen(suffix) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s", l->prefix, suffix);
    return s;
}

static aot_fn declare_public(aot_ir *a, const char *suffix, LLVMTypeRef ret, LLVMTypeRef *params, int n)
{
    char *name = prefixed(a->l, suffix);
    aot_fn f = declare(a, name ? name : suffix, ret, params, n);
    free(name);
    return f;
}

/* void <prefix>_free(ctx): frees a context and everything it owns; a
 * partly initialized context too, because init starts from calloc. */
static void build_free(aot_ir *a)
{
    LLVMTypeRef params[1] = {a->ptr};
    a->free_ctx = declare_public(a, "_free", a->void_ty, params, 1);
    LLVMValueRef fn = a->free_ctx.fn;
    LLVMValueRef c = LLVMGetParam(fn, 0);
    LLVMBasicBlockRef entry = add_block(a, fn, "entry"), body = add_block(a, fn, "free"),
                      done = add_block(a, fn, "done");
    LLVMPositionBuilderAtEnd(a->b, entry);
    LLVMBuildCondBr(a->b, is_null(a, c), done, body);
    LLVMPositionBuilderAtEnd(a->b, body);
    LLVMValueRef pool = load_field(a, a->ctx_ty, c, CTX_POOL, a->ptr);
    call(a, a->pool_free, &pool, 1);
    static const int fields[3] = {CTX_BUFS, CTX_ARENA, CTX_OWNED_WEIGHTS};
    for (int k = 0; k < 3; k++) {
        LLVMValueRef p = load_field(a, a->ctx_ty, c, fields[k], a->ptr);
        call(a, a->free_fn, &p, 1);
    }
    call(a, a->free_fn, &c, 1);
    LLVMBuildBr(a->b, done);
    LLVMPositionBuilderAtEnd(a->b, done);
    LLVMBuildRetVoid(a->b);
}

/* A private constant array of i8 or i64. */
static LLVMValueRef table_constant(aot_ir *a, LLVMTypeRef elem, const int64_t *values, int n, const char *name)
{
    LLVMValueRef *items = malloc(sizeof *items * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++)
        items[i] = LLVMConstInt(elem, (unsigned long long)values[i], 1);
    LLVMValueRef init = LLVMConstArray2(elem, items, (uint64_t)n);
    free(items);
    LLVMValueRef g = LLVMAddGlobal(a->mod, LLVMTypeOf(init), name);
    LLVMSetInitializer(g, init);
    LLVMSetGlobalConstant(g, 1);
    LLVMSetLinkage(g, LLVMPrivateLinkage);
    return g;
}

/* Emits the loop bufs[s] = base(kind[s]) + offset[s] over every slot. */
static void build_slot_fill(aot_ir *a, LLVMValueRef fn, LLVMValueRef bufs, LLVMValueRef arena, LLVMValueRef blob)
{
    const cg_aot_layout *l = a->l;
    int n = l->plan.nslots;
    int64_t *kinds = malloc(sizeof *kinds * (size_t)n);
    for (int s = 0; s < n; s++)
        kinds[s] = l->slot_kind[s];
    LLVMValueRef kind_table = table_constant(a, a->i8, kinds, n, "qc_aot_slot_kind");
    LLVMValueRef offset_table = table_constant(a, a->i64, l->slot_offset, n, "qc_aot_slot_offset");
    free(kinds);

    LLVMBasicBlockRef before = LLVMGetInsertBlock(a->b);
    LLVMBasicBlockRef loop = add_block(a, fn, "slots"), after = add_block(a, fn, "slots.done");
    LLVMBuildBr(a->b, loop);
    LLVMPositionBuilderAtEnd(a->b, loop);
    LLVMValueRef s = LLVMBuildPhi(a->b, a->i64, "slot");
    LLVMValueRef kind = LLVMBuildLoad2(a->b, a->i8, LLVMBuildInBoundsGEP2(a->b, a->i8, kind_table, &s, 1, ""), "");
    LLVMValueRef offset =
        LLVMBuildLoad2(a->b, a->i64, LLVMBuildInBoundsGEP2(a->b, a->i64, offset_table, &s, 1, ""), "");
    LLVMValueRef null = LLVMConstPointerNull(a->ptr);
    LLVMValueRef base = LLVMBuildSelect(
        a->b, LLVMBuildICmp(a->b, LLVMIntEQ, kind, LLVMConstInt(a->i8, CG_AOT_SLOT_SCRATCH, 0), ""), arena,
        LLVMBuildSelect(a->b, LLVMBuildICmp(a->b, LLVMIntEQ, kind, LLVMConstInt(a->i8, CG_AOT_SLOT_WEIGHTS, 0), ""),
                        blob, null, ""),
        "");
    /* A plain GEP, because base may be null (offset 0 keeps it null). */
    LLVMValueRef p = LLVMBuildGEP2(a->b, a->i8, base, &offset, 1, "");
    LLVMBuildStore(a->b, p, LLVMBuildInBoundsGEP2(a->b, a->ptr, bufs, &s, 1, ""));
    LLVMValueRef s_next = LLVMBuildAdd(a->b, s, const_i64(a, 1), "");
    LLVMBuildCondBr(a->b, LLVMBuildICmp(a->b, LLVMIntSLT, s_next, const_i64(a, n), ""), loop, after);
    LLVMValueRef in[2] = {const_i64(a, 0), s_next};
    LLVMBasicBlockRef from[2] = {before, loop};
    LLVMAddIncoming(s, in, from, 2);
    LLVMPositionBuilderAtEnd(a->b, after);
}

/* i32 <prefix>_init(ctx **out, const char *weights_path, i32 nthreads). */
static void build_init(aot_ir *a)
{
    const cg_aot_layout *l = a->l;
    LLVMTypeRef params[3] = {a->ptr, a->ptr, a->i32};
    a->init = declare_public(a, "_init", a->i32, params, 3);
    LLVMValueRef fn = a->init.fn;
    LLVMValueRef out = LLVMGetParam(fn, 0), path = LLVMGetParam(fn, 1), nthreads = LLVMGetParam(fn, 2);
    LLVMBasicBlockRef entry = add_block(a, fn, "entry"), invalid = add_block(a, fn, "invalid");
    aot_exit x = {add_block(a, fn, "fail"), 0, {0}, {0}};
    LLVMPositionBuilderAtEnd(a->b, entry);
    LLVMValueRef blob_slot = LLVMBuildAlloca(a->b, a->ptr, "blob");

    /* Argument checks, before anything is allocated. */
    LLVMBasicBlockRef checked = add_block(a, fn, "checked");
    LLVMValueRef bad = LLVMBuildOr(a->b, LLVMBuildICmp(a->b, LLVMIntSLT, nthreads, const_i32(a, 1), ""),
                                   LLVMBuildICmp(a->b, LLVMIntSGT, nthreads, const_i32(a, l->threads_max), ""), "");
    bad = LLVMBuildOr(a->b, bad, is_null(a, out), "");
    if (!l->embed_weights)
        bad = LLVMBuildOr(a->b, bad, is_null(a, path), "");
    LLVMBuildCondBr(a->b, bad, invalid, checked);
    LLVMPositionBuilderAtEnd(a->b, invalid);
    LLVMBasicBlockRef store_null = add_block(a, fn, "invalid.out"), ret_invalid = add_block(a, fn, "invalid.ret");
    LLVMBuildCondBr(a->b, is_null(a, out), ret_invalid, store_null);
    LLVMPositionBuilderAtEnd(a->b, store_null);
    LLVMBuildStore(a->b, LLVMConstPointerNull(a->ptr), out);
    LLVMBuildBr(a->b, ret_invalid);
    LLVMPositionBuilderAtEnd(a->b, ret_invalid);
    LLVMBuildRet(a->b, const_i32(a, CG_AOT_STATUS_INVALID_ARGUMENT));

    LLVMPositionBuilderAtEnd(a->b, checked);
    LLVMBuildStore(a->b, LLVMConstPointerNull(a->ptr), out);
    LLVMTargetDataRef layout = LLVMGetModuleDataLayout(a->mod);
    LLVMValueRef one_ctx[2] = {const_iptr(a, 1), const_iptr(a, (int64_t)LLVMABISizeOfType(layout, a->ctx_ty))};
    LLVMValueRef c = call(a, a->calloc_fn, one_ctx, 2);
    LLVMBasicBlockRef have_ctx = add_block(a, fn, "ctx");
    LLVMBasicBlockRef no_ctx = add_block(a, fn, "ctx.oom");
    LLVMBuildCondBr(a->b, is_null(a, c), no_ctx, have_ctx);
    LLVMPositionBuilderAtEnd(a->b, no_ctx);
    LLVMBuildRet(a->b, const_i32(a, CG_AOT_STATUS_OUT_OF_MEMORY));

    LLVMPositionBuilderAtEnd(a->b, have_ctx);
    LLVMValueRef pool = call(a, a->pool_new, &nthreads, 1);
    LLVMBuildStore(a->b, pool, field_ptr(a, a->ctx_ty, c, CTX_POOL));
    LLVMValueRef buf_args[2] = {const_iptr(a, l->plan.nslots), const_iptr(a, 8)};
    LLVMValueRef bufs = call(a, a->calloc_fn, buf_args, 2);
    LLVMBuildStore(a->b, bufs, field_ptr(a, a->ctx_ty, c, CTX_BUFS));
    int64_t arena_bytes = l->scratch_bytes > 0 ? l->scratch_bytes : CG_AOT_ALIGN;
    LLVMValueRef arena_args[2] = {const_iptr(a, CG_AOT_ALIGN), const_iptr(a, arena_bytes)};
    LLVMValueRef arena = call(a, a->aligned_alloc_fn, arena_args, 2);
    LLVMBuildStore(a->b, arena, field_ptr(a, a->ctx_ty, c, CTX_ARENA));
    LLVMValueRef missing = LLVMBuildOr(a->b, LLVMBuildOr(a->b, is_null(a, pool), is_null(a, bufs), ""),
                                       is_null(a, arena), "");
    exit_if(a, fn, &x, missing, const_i32(a, CG_AOT_STATUS_OUT_OF_MEMORY));
    LLVMBuildMemSet(a->b, arena, LLVMConstInt(a->i8, 0, 0), const_i64(a, arena_bytes), CG_AOT_ALIGN);

    /* The weights: a file when a path is given, else the embedded blob. */
    LLVMBuildStore(a->b, a->weights_global ? a->weights_global : LLVMConstPointerNull(a->ptr), blob_slot);
    LLVMBasicBlockRef load = add_block(a, fn, "load"), loaded = add_block(a, fn, "loaded");
    if (a->weights_global && a->huge_pages && l->weights_bytes >= AOT_HUGE_PAGE) {
        /* The embedded blob lies on the executable's 4 KB pages: copy it to
         * huge pages, or use it in place when that memory is not there. */
        LLVMBasicBlockRef embedded = add_block(a, fn, "embedded"), copy = add_block(a, fn, "embedded.copy");
        LLVMBuildCondBr(a->b, is_null(a, path), embedded, load);
        LLVMPositionBuilderAtEnd(a->b, embedded);
        LLVMValueRef copied = alloc_blob(a, l->weights_bytes);
        LLVMBuildCondBr(a->b, is_null(a, copied), loaded, copy);
        LLVMPositionBuilderAtEnd(a->b, copy);
        LLVMBuildMemCpy(a->b, copied, AOT_HUGE_PAGE, a->weights_global, CG_AOT_ALIGN, const_iptr(a, l->weights_bytes));
        LLVMBuildStore(a->b, copied, blob_slot);
        LLVMBuildStore(a->b, copied, field_ptr(a, a->ctx_ty, c, CTX_OWNED_WEIGHTS));
        LLVMBuildBr(a->b, loaded);
    } else {
        LLVMBuildCondBr(a->b, is_null(a, path), loaded, load);
    }
    LLVMPositionBuilderAtEnd(a->b, load);
    LLVMValueRef load_args[2] = {path, blob_slot};
    LLVMValueRef rc = call(a, a->load_weights, load_args, 2);
    exit_if(a, fn, &x, LLVMBuildICmp(a->b, LLVMIntNE, rc, const_i32(a, 0), ""), rc);
    LLVMBuildStore(a->b, LLVMBuildLoad2(a->b, a->ptr, blob_slot, ""), field_ptr(a, a->ctx_ty, c, CTX_OWNED_WEIGHTS));
    LLVMBuildBr(a->b, loaded);
    LLVMPositionBuilderAtEnd(a->b, loaded);
    LLVMValueRef blob = LLVMBuildLoad2(a->b, a->ptr, blob_slot, "");
    LLVMValueRef check = call(a, a->check_blob, &blob, 1);
    exit_if(a, fn, &x, LLVMBuildICmp(a->b, LLVMIntNE, check, const_i32(a, 0), ""), check);

    build_slot_fill(a, fn, bufs, arena, blob);
    LLVMValueRef bind_args[2] = {bufs, pool};
    LLVMValueRef bound = call(a, a->bind, bind_args, 2);
    exit_if(a, fn, &x, LLVMBuildICmp(a->b, LLVMIntNE, bound, const_i32(a, 0), ""), bound);
    LLVMBuildStore(a->b, c, out);
    LLVMBuildRet(a->b, const_i32(a, 0));

    LLVMPositionBuilderAtEnd(a->b, x.block);
    LLVMValueRef code = LLVMBuildPhi(a->b, a->i32, "");
    LLVMAddIncoming(code, x.codes, x.from, (unsigned)x.count);
    call(a, a->free_ctx, &c, 1);
    LLVMBuildRet(a->b, code);
}

/* i32 <prefix>_run(ctx, inputs..., outputs...): binds the caller's input
 * buffers in place, runs qc_run and copies each output out. */
static void build_run(aot_ir *a)
{
    const cg_aot_layout *l = a->l;
    int nparams = 1 + l->ninputs + l->noutputs;
    LLVMTypeRef *params = malloc(sizeof *params * (size_t)nparams);
    for (int k = 0; k < nparams; k++)
        params[k] = a->ptr;
    a->run = declare_public(a, "_run", a->i32, params, nparams);
    free(params);
    LLVMValueRef fn = a->run.fn;
    LLVMBasicBlockRef entry = add_block(a, fn, "entry");
    aot_exit x = {add_block(a, fn, "invalid"), 0, {0}, {0}};
    LLVMPositionBuilderAtEnd(a->b, entry);
    LLVMValueRef anynull = LLVMConstInt(LLVMInt1TypeInContext(a->ctx), 0, 0);
    for (int k = 0; k < nparams; k++)
        anynull = LLVMBuildOr(a->b, anynull, is_null(a, LLVMGetParam(fn, (unsigned)k)), "");
    exit_if(a, fn, &x, anynull, const_i32(a, CG_AOT_STATUS_INVALID_ARGUMENT));

    LLVMValueRef c = LLVMGetParam(fn, 0);
    LLVMValueRef bufs = load_field(a, a->ctx_ty, c, CTX_BUFS, a->ptr);
    for (int k = 0; k < l->ninputs; k++) {
        const ir_value *v = l->g->values[l->inputs[k].value];
        if (!v->dead)
            LLVMBuildStore(a->b, LLVMGetParam(fn, (unsigned)(1 + k)), slot_ptr(a, bufs, l->plan.slot[v->id]));
    }
    LLVMValueRef status = LLVMBuildLoad2(a->b, a->ptr, slot_ptr(a, bufs, l->plan.status_slot), "");
    LLVMBuildMemSet(a->b, status, LLVMConstInt(a->i8, 0, 0), const_i64(a, AOT_STATUS_BYTES), 8);
    LLVMValueRef run_args[2] = {bufs, load_field(a, a->ctx_ty, c, CTX_POOL, a->ptr)};
    LLVMValueRef rc = call(a, a->run_graph, run_args, 2);
    exit_if(a, fn, &x, LLVMBuildICmp(a->b, LLVMIntNE, rc, const_i32(a, 0), ""), rc);
    for (int k = 0; k < l->noutputs; k++) {
        const cg_aot_tensor *t = &l->outputs[k];
        LLVMValueRef src = LLVMBuildLoad2(a->b, a->ptr, slot_ptr(a, bufs, l->plan.slot[t->value]), "");
        LLVMValueRef dst = LLVMGetParam(fn, (unsigned)(1 + l->ninputs + k));
        LLVMBuildMemCpy(a->b, dst, 1, src, 1, const_i64(a, t->bytes));
    }
    LLVMBuildRet(a->b, const_i32(a, 0));

    LLVMPositionBuilderAtEnd(a->b, x.block);
    LLVMValueRef code = LLVMBuildPhi(a->b, a->i32, "");
    LLVMAddIncoming(code, x.codes, x.from, (unsigned)x.count);
    LLVMBuildRet(a->b, code);
}

/* i32 <prefix>_run_array(ctx, const void *const *inputs, void *const
 * *outputs): <prefix>_run with the buffers in arrays, for callers that
 * learn the signature from the descriptor. */
static void build_run_array(aot_ir *a)
{
    const cg_aot_layout *l = a->l;
    LLVMTypeRef params[3] = {a->ptr, a->ptr, a->ptr};
    a->run_array = declare_public(a, "_run_array", a->i32, params, 3);
    LLVMValueRef fn = a->run_array.fn;
    LLVMBasicBlockRef entry = add_block(a, fn, "entry"), invalid = add_block(a, fn, "invalid"),
                      body = add_block(a, fn, "call");
    LLVMPositionBuilderAtEnd(a->b, entry);
    LLVMValueRef ins = LLVMGetParam(fn, 1), outs = LLVMGetParam(fn, 2);
    LLVMValueRef bad = LLVMBuildOr(a->b, l->ninputs ? is_null(a, ins) : LLVMConstInt(LLVMInt1TypeInContext(a->ctx), 0, 0),
                                   is_null(a, outs), "");
    LLVMBuildCondBr(a->b, bad, invalid, body);
    LLVMPositionBuilderAtEnd(a->b, invalid);
    LLVMBuildRet(a->b, const_i32(a, CG_AOT_STATUS_INVALID_ARGUMENT));

    LLVMPositionBuilderAtEnd(a->b, body);
    int nargs = 1 + l->ninputs + l->noutputs;
    LLVMValueRef *args = malloc(sizeof *args * (size_t)nargs);
    args[0] = LLVMGetParam(fn, 0);
    for (int k = 0; k < l->ninputs + l->noutputs; k++) {
        bool input = k < l->ninputs;
        LLVMValueRef idx = const_i64(a, input ? k : k - l->ninputs);
        LLVMValueRef p = LLVMBuildInBoundsGEP2(a->b, a->ptr, input ? ins : outs, &idx, 1, "");
        args[1 + k] = LLVMBuildLoad2(a->b, a->ptr, p, "");
    }
    LLVMBuildRet(a->b, call(a, a->run, args, nargs));
    free(args);
}

/* Builds the private array of tensor descriptors
 * { ptr name, i32 dtype, i32 rank, ptr dims, i64 bytes } for aot/bundle.h. */
static LLVMValueRef tensor_table(aot_ir *a, const cg_aot_tensor *ts, int n, const char *what)
{
    LLVMTypeRef fields[5] = {a->ptr, a->i32, a->i32, a->ptr, a->i64};
    LLVMTypeRef desc_ty = LLVMStructTypeInContext(a->ctx, fields, 5, 0);
    LLVMValueRef *items = malloc(sizeof *items * (size_t)(n ? n : 1));
    for (int k = 0; k < n; k++) {
        const ir_value *v = a->l->g->values[ts[k].value];
        char name[64];
        snprintf(name, sizeof name, "qc_aot_%s_name_%d", what, k);
        LLVMValueRef dims[IR_MAX_RANK + 1];
        for (int r = 0; r < v->type.rank; r++)
            dims[r] = const_i64(a, v->type.dims[r]);
        LLVMValueRef dims_init = LLVMConstArray2(a->i64, dims, (uint64_t)v->type.rank);
        char dims_name[64];
        snprintf(dims_name, sizeof dims_name, "qc_aot_%s_dims_%d", what, k);
        LLVMValueRef dims_g = LLVMAddGlobal(a->mod, LLVMTypeOf(dims_init), dims_name);
        LLVMSetInitializer(dims_g, dims_init);
        LLVMSetGlobalConstant(dims_g, 1);
        LLVMSetLinkage(dims_g, LLVMPrivateLinkage);
        LLVMValueRef vals[5] = {string_constant(a, v->name, name), const_i32(a, v->type.dtype),
                                const_i32(a, v->type.rank), dims_g, const_i64(a, ts[k].bytes)};
        items[k] = LLVMConstNamedStruct(desc_ty, vals, 5);
    }
    LLVMValueRef init = LLVMConstArray2(desc_ty, items, (uint64_t)n);
    free(items);
    char table_name[64];
    snprintf(table_name, sizeof table_name, "qc_aot_%s", what);
    LLVMValueRef g = LLVMAddGlobal(a->mod, LLVMTypeOf(init), table_name);
    LLVMSetInitializer(g, init);
    LLVMSetGlobalConstant(g, 1);
    LLVMSetLinkage(g, LLVMPrivateLinkage);
    return g;
}

/* The public descriptor <prefix>_bundle, laid out as qc_bundle in
 * aot/bundle.h. */
static void build_descriptor(aot_ir *a)
{
    const cg_aot_layout *l = a->l;
    LLVMTypeRef fields[11] = {a->i32, a->i32, a->i32, a->i32, a->i32, a->ptr, a->ptr, a->ptr, a->ptr, a->ptr, a->ptr};
    LLVMTypeRef ty = LLVMStructTypeInContext(a->ctx, fields, 11, 0);
    LLVMValueRef vals[11] = {
        const_i32(a, CG_AOT_ABI_VERSION),
        const_i32(a, l->ninputs),
        const_i32(a, l->noutputs),
        const_i32(a, l->embed_weights),
        const_i32(a, l->threads_max),
        tensor_table(a, l->inputs, l->ninputs, "inputs"),
        tensor_table(a, l->outputs, l->noutputs, "outputs"),
        a->init.fn,
        a->run_array.fn,
        a->free_ctx.fn,
        string_constant(a, l->prefix, "qc_aot_prefix"),
    };
    char *name = prefixed(l, "_bundle");
    LLVMValueRef g = LLVMAddGlobal(a->mod, ty, name ? name : "model_bundle");
    free(name);
    LLVMSetInitializer(g, LLVMConstStructInContext(a->ctx, vals, 11, 0));
    LLVMSetGlobalConstant(g, 1);
}

/* The embedded weights blob, CG_AOT_ALIGN aligned and read-only. */
static void build_weights_global(aot_ir *a)
{
    const cg_aot_layout *l = a->l;
    LLVMValueRef init = LLVMConstStringInContext2(a->ctx, (const char *)l->blob, (size_t)l->weights_bytes, 1);
    a->weights_global = LLVMAddGlobal(a->mod, LLVMTypeOf(init), "qc_aot_weights");
    LLVMSetInitializer(a->weights_global, init);
    LLVMSetGlobalConstant(a->weights_global, 1);
    LLVMSetLinkage(a->weights_global, LLVMPrivateLinkage);
    LLVMSetAlignment(a->weights_global, CG_AOT_ALIGN);
}

static bool is_public(const cg_aot_layout *l, const char *name)
{
    static const char *const suffixes[] = {"_init", "_run", "_run_array", "_free", "_bundle"};
    size_t n = strlen(l->prefix);
    if (strncmp(name, l->prefix, n) != 0)
        return false;
    for (size_t k = 0; k < sizeof suffixes / sizeof *suffixes; k++)
        if (strcmp(name + n, suffixes[k]) == 0)
            return true;
    return false;
}

/* Gives every definition but the public entry points internal linkage, so
 * kernels cannot clash with another bundle's and unused ones drop out. */
static void internalize(const cg_aot_layout *l, LLVMModuleRef mod)
{
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
        if (!LLVMIsDeclaration(f) && !is_public(l, LLVMGetValueName(f)))
            LLVMSetLinkage(f, LLVMInternalLinkage);
    for (LLVMValueRef g = LLVMGetFirstGlobal(mod); g; g = LLVMGetNextGlobal(g))
        if (!LLVMIsDeclaration(g) && !is_public(l, LLVMGetValueName(g)) && LLVMGetLinkage(g) != LLVMPrivateLinkage)
            LLVMSetLinkage(g, LLVMInternalLinkage);
}

int cg_aot_add_entry_points(const cg_aot_layout *l, LLVMModuleRef mod, ir_diag *d)
{
    aot_ir a;
    memset(&a, 0, sizeof a);
    a.l = l;
    a.mod = mod;
    a.ctx = LLVMGetModuleContext(mod);
    a.b = LLVMCreateBuilderInContext(a.ctx);
    a.i8 = LLVMInt8TypeInContext(a.ctx);
    a.i32 = LLVMInt32TypeInContext(a.ctx);
    a.i64 = LLVMInt64TypeInContext(a.ctx);
    a.iptr = LLVMIntPtrTypeInContext(a.ctx, LLVMGetModuleDataLayout(mod));
    a.ptr = LLVMPointerTypeInContext(a.ctx, 0);
    a.void_ty = LLVMVoidTypeInContext(a.ctx);
    LLVMTypeRef ctx_fields[CTX_FIELDS] = {a.ptr, a.ptr, a.ptr, a.ptr};
    a.ctx_ty = LLVMStructTypeInContext(a.ctx, ctx_fields, CTX_FIELDS, 0);

    LLVMTypeRef entry_params[2] = {a.ptr, a.ptr};
    a.bind = declare(&a, "qc_bind", a.i32, entry_params, 2);
    a.run_graph = declare(&a, "qc_run", a.i32, entry_params, 2);
    if (LLVMIsDeclaration(a.bind.fn) || LLVMIsDeclaration(a.run_graph.fn)) {
        ir_diag_file_error(d, NULL, "codegen: internal error, the module of graph '%s' has no qc_bind or qc_run",
                           l->g->name);
        LLVMDisposeBuilder(a.b);
        return -1;
    }
    declare_libc(&a);
    if (l->embed_weights)
        build_weights_global(&a);
    cg_aot_add_pool(mod);
    build_load_weights(&a);
    build_check_blob(&a);
    build_free(&a);
    build_init(&a);
    build_run(&a);
    build_run_array(&a);
    build_descriptor(&a);
    internalize(l, mod);
    LLVMDisposeBuilder(a.b);
    return 0;
}
