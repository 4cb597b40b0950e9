/* The thread pool of an ahead-of-time bundle, generated as LLVM IR so the
 * object needs only libpthread. It mirrors runtime/threadpool.c. Init
 * starts nthreads - 1 workers that wait for a loop to be published (a new
 * generation) and claim chunks of `grain` tasks with an atomic counter.
 * They spin briefly before they sleep on a condition variable, because
 * the entry points launch loops back to back.
 *
 * pthread_mutex_t and pthread_cond_t live in opaque 128-byte fields that
 * only pthread_*_init touch. 128 bytes exceed both types on glibc, musl
 * and macOS (at most 64 bytes there), and aot.c checks the host's sizes.
 * One pool serves one context, whose calls must not overlap, so loops are
 * never published concurrently. */
#include <string.h>

#include "codegen/aot_internal.h"

/* Spin iterations before sleeping, each with a pause instruction on x86:
 * on the order of 100 microseconds on current x86 cores (an estimate, the
 * same count as runtime/threadpool.c). */
enum { POOL_SPIN_ITERATIONS = 4096 };

/* Pool fields, in order. */
enum {
    POOL_MUTEX,
    POOL_WAKE, /* signalled when a loop is published or the pool stops */
    POOL_DONE, /* signalled by the last worker to finish a loop */
    POOL_GENERATION,
    POOL_BUSY, /* workers still running the current loop */
    POOL_NEXT, /* first task not yet claimed */
    POOL_STOPPING,
    POOL_WORKERS, /* workers started */
    POOL_FN,
    POOL_ARGS,
    POOL_NTASKS,
    POOL_GRAIN,
    POOL_HANDLES,
    POOL_FIELDS
};

typedef struct pool_fn {
    LLVMValueRef fn;
    LLVMTypeRef ty;
} pool_fn;

typedef struct pool_ir {
    LLVMContextRef ctx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMTypeRef i1, i8, i32, i64, iptr, ptr, void_ty, pool_ty, task_ty;
    bool x86;
    pool_fn calloc_fn, free_fn, create, join, mutex_init, mutex_lock, mutex_unlock, mutex_destroy, cond_init,
        cond_wait, cond_signal, cond_broadcast, cond_destroy, pause;
    pool_fn run_tasks, worker;
} pool_ir;

static pool_fn declare(pool_ir *p, const char *name, LLVMTypeRef ret, LLVMTypeRef *params, int n)
{
    pool_fn f;
    f.ty = LLVMFunctionType(ret, params, (unsigned)n, 0);
    f.fn = LLVMGetNamedFunction(p->mod, name);
    if (!f.fn)
        f.fn = LLVMAddFunction(p->mod, name, f.ty);
    return f;
}

static LLVMValueRef call(pool_ir *p, pool_fn f, LLVMValueRef *args, int n)
{
    return LLVMBuildCall2(p->b, f.ty, f.fn, args, (unsigned)n, "");
}

static LLVMValueRef call1(pool_ir *p, pool_fn f, LLVMValueRef arg)
{
    return call(p, f, &arg, 1);
}

static LLVMValueRef c64(pool_ir *p, int64_t v)
{
    return LLVMConstInt(p->i64, (unsigned long long)v, 1);
}

static LLVMValueRef c32(pool_ir *p, int64_t v)
{
    return LLVMConstInt(p->i32, (unsigned long long)v, 1);
}

static LLVMValueRef field(pool_ir *p, LLVMValueRef pool, int index)
{
    return LLVMBuildStructGEP2(p->b, p->pool_ty, pool, (unsigned)index, "");
}

static LLVMValueRef load(pool_ir *p, LLVMTypeRef ty, LLVMValueRef pool, int index)
{
    return LLVMBuildLoad2(p->b, ty, field(p, pool, index), "");
}

/* A sequentially consistent load of an i64 or i32 field. */
static LLVMValueRef load_atomic(pool_ir *p, LLVMTypeRef ty, LLVMValueRef pool, int index)
{
    LLVMValueRef v = LLVMBuildLoad2(p->b, ty, field(p, pool, index), "");
    LLVMSetOrdering(v, LLVMAtomicOrderingSequentiallyConsistent);
    LLVMSetAlignment(v, (unsigned)(ty == p->i64 ? 8 : 4));
    return v;
}

static void store_atomic(pool_ir *p, LLVMValueRef v, LLVMValueRef pool, int index)
{
    LLVMValueRef s = LLVMBuildStore(p->b, v, field(p, pool, index));
    LLVMSetOrdering(s, LLVMAtomicOrderingSequentiallyConsistent);
    LLVMSetAlignment(s, (unsigned)(LLVMTypeOf(v) == p->i64 ? 8 : 4));
}

static LLVMValueRef rmw(pool_ir *p, LLVMAtomicRMWBinOp op, LLVMValueRef pool, int index, LLVMValueRef v)
{
    return LLVMBuildAtomicRMW(p->b, op, field(p, pool, index), v, LLVMAtomicOrderingSequentiallyConsistent, 0);
}

static LLVMBasicBlockRef block(pool_ir *p, LLVMValueRef fn, const char *name)
{
    return LLVMAppendBasicBlockInContext(p->ctx, fn, name);
}

static void at(pool_ir *p, LLVMBasicBlockRef bb)
{
    LLVMPositionBuilderAtEnd(p->b, bb);
}

static void relax(pool_ir *p)
{
    if (p->x86)
        call(p, p->pause, NULL, 0);
}

static void declare_pthreads(pool_ir *p)
{
    LLVMTypeRef one[1] = {p->ptr}, two[2] = {p->ptr, p->ptr}, sizes[2] = {p->iptr, p->iptr};
    LLVMTypeRef create[4] = {p->ptr, p->ptr, p->ptr, p->ptr}, join[2] = {p->iptr, p->ptr};
    p->calloc_fn = declare(p, "calloc", p->ptr, sizes, 2);
    p->free_fn = declare(p, "free", p->void_ty, one, 1);
    p->create = declare(p, "pthread_create", p->i32, create, 4);
    p->join = declare(p, "pthread_join", p->i32, join, 2);
    p->mutex_init = declare(p, "pthread_mutex_init", p->i32, two, 2);
    p->mutex_lock = declare(p, "pthread_mutex_lock", p->i32, one, 1);
    p->mutex_unlock = declare(p, "pthread_mutex_unlock", p->i32, one, 1);
    p->mutex_destroy = declare(p, "pthread_mutex_destroy", p->i32, one, 1);
    p->cond_init = declare(p, "pthread_cond_init", p->i32, two, 2);
    p->cond_wait = declare(p, "pthread_cond_wait", p->i32, two, 2);
    p->cond_signal = declare(p, "pthread_cond_signal", p->i32, one, 1);
    p->cond_broadcast = declare(p, "pthread_cond_broadcast", p->i32, one, 1);
    p->cond_destroy = declare(p, "pthread_cond_destroy", p->i32, one, 1);
    if (p->x86)
        p->pause = declare(p, "llvm.x86.sse2.pause", p->void_ty, NULL, 0);
}

/* void run_tasks(pool): claims chunks of the published loop until none
 * are left. */
static void build_run_tasks(pool_ir *p)
{
    LLVMTypeRef params[1] = {p->ptr};
    p->run_tasks = declare(p, "qc_aot_pool_run_tasks", p->void_ty, params, 1);
    LLVMValueRef fn = p->run_tasks.fn, pool = LLVMGetParam(fn, 0);
    LLVMBasicBlockRef entry = block(p, fn, "entry"), claim = block(p, fn, "claim"), body = block(p, fn, "run"),
                      done = block(p, fn, "done");
    at(p, entry);
    LLVMValueRef task = load(p, p->ptr, pool, POOL_FN), args = load(p, p->ptr, pool, POOL_ARGS);
    LLVMValueRef ntasks = load(p, p->i64, pool, POOL_NTASKS), grain = load(p, p->i64, pool, POOL_GRAIN);
    LLVMBuildBr(p->b, claim);

    at(p, claim);
    LLVMValueRef begin = rmw(p, LLVMAtomicRMWBinOpAdd, pool, POOL_NEXT, grain);
    LLVMBuildCondBr(p->b, LLVMBuildICmp(p->b, LLVMIntSGE, begin, ntasks, ""), done, body);

    at(p, body);
    LLVMValueRef stop = LLVMBuildAdd(p->b, begin, grain, "");
    LLVMValueRef end = LLVMBuildSelect(p->b, LLVMBuildICmp(p->b, LLVMIntSLT, stop, ntasks, ""), stop, ntasks, "");
    LLVMValueRef targs[3] = {args, begin, end};
    LLVMBuildCall2(p->b, p->task_ty, task, targs, 3, "");
    LLVMBuildBr(p->b, claim);

    at(p, done);
    LLVMBuildRetVoid(p->b);
}

/* Emits a wait for `ready` (built by the callback at the current block)
 * that spins POOL_SPIN_ITERATIONS times, then sleeps on `cond` under the
 * mutex. Continues in a new block once ready holds. */
typedef LLVMValueRef (*ready_fn)(pool_ir *p, LLVMValueRef pool, void *ctx);

static void build_wait(pool_ir *p, LLVMValueRef fn, LLVMValueRef pool, int cond, ready_fn ready, void *ctx)
{
    LLVMBasicBlockRef before = LLVMGetInsertBlock(p->b);
    LLVMBasicBlockRef spin = block(p, fn, "spin"), spin_next = block(p, fn, "spin.next"),
                      sleep = block(p, fn, "sleep"), check = block(p, fn, "sleep.check"),
                      wait = block(p, fn, "sleep.wait"), wake = block(p, fn, "sleep.done"),
                      ready_bb = block(p, fn, "ready");
    LLVMBuildBr(p->b, spin);

    at(p, spin);
    LLVMValueRef i = LLVMBuildPhi(p->b, p->i64, "spin.i");
    LLVMBuildCondBr(p->b, ready(p, pool, ctx), ready_bb, spin_next);
    at(p, spin_next);
    relax(p);
    LLVMValueRef i_next = LLVMBuildAdd(p->b, i, c64(p, 1), "");
    LLVMBuildCondBr(p->b, LLVMBuildICmp(p->b, LLVMIntSLT, i_next, c64(p, POOL_SPIN_ITERATIONS), ""), spin, sleep);
    LLVMValueRef in[2] = {c64(p, 0), i_next};
    LLVMBasicBlockRef from[2] = {before, spin_next};
    LLVMAddIncoming(i, in, from, 2);

    at(p, sleep);
    call1(p, p->mutex_lock, field(p, pool, POOL_MUTEX));
    LLVMBuildBr(p->b, check);
    at(p, check);
    LLVMBuildCondBr(p->b, ready(p, pool, ctx), wake, wait);
    at(p, wait);
    LLVMValueRef wait_args[2] = {field(p, pool, cond), field(p, pool, POOL_MUTEX)};
    call(p, p->cond_wait, wait_args, 2);
    LLVMBuildBr(p->b, check);
    at(p, wake);
    call1(p, p->mutex_unlock, field(p, pool, POOL_MUTEX));
    LLVMBuildBr(p->b, ready_bb);
    at(p, ready_bb);
}

/* Ready when the generation differs from *(LLVMValueRef *)seen or the
 * pool stops. */
static LLVMValueRef new_work_ready(pool_ir *p, LLVMValueRef pool, void *seen)
{
    LLVMValueRef g = load_atomic(p, p->i64, pool, POOL_GENERATION);
    LLVMValueRef stopping = load_atomic(p, p->i32, pool, POOL_STOPPING);
    return LLVMBuildOr(p->b, LLVMBuildICmp(p->b, LLVMIntNE, g, *(LLVMValueRef *)seen, ""),
                       LLVMBuildICmp(p->b, LLVMIntNE, stopping, c32(p, 0), ""), "");
}

static LLVMValueRef all_done_ready(pool_ir *p, LLVMValueRef pool, void *unused)
{
    return LLVMBuildICmp(p->b, LLVMIntEQ, load_atomic(p, p->i64, pool, POOL_BUSY), c64(p, 0), "");
}

/* void *worker(pool): waits for each new generation, runs its tasks, and
 * signals `done` when it is the last to finish. */
static void build_worker(pool_ir *p)
{
    LLVMTypeRef params[1] = {p->ptr};
    p->worker = declare(p, "qc_aot_pool_worker", p->ptr, params, 1);
    LLVMValueRef fn = p->worker.fn, pool = LLVMGetParam(fn, 0);
    LLVMBasicBlockRef entry = block(p, fn, "entry"), top = block(p, fn, "wait");
    at(p, entry);
    LLVMBuildBr(p->b, top);

    at(p, top);
    LLVMValueRef seen = LLVMBuildPhi(p->b, p->i64, "seen");
    build_wait(p, fn, pool, POOL_WAKE, new_work_ready, &seen);
    LLVMValueRef generation = load_atomic(p, p->i64, pool, POOL_GENERATION);
    LLVMValueRef stopping = load_atomic(p, p->i32, pool, POOL_STOPPING);
    LLVMBasicBlockRef run = block(p, fn, "run"), exit = block(p, fn, "exit");
    LLVMBuildCondBr(p->b, LLVMBuildICmp(p->b, LLVMIntNE, stopping, c32(p, 0), ""), exit, run);

    at(p, run);
    call1(p, p->run_tasks, pool);
    LLVMValueRef left = rmw(p, LLVMAtomicRMWBinOpSub, pool, POOL_BUSY, c64(p, 1));
    LLVMBasicBlockRef last = block(p, fn, "last"), next = block(p, fn, "next");
    LLVMBuildCondBr(p->b, LLVMBuildICmp(p->b, LLVMIntEQ, left, c64(p, 1), ""), last, next);
    at(p, last);
    call1(p, p->mutex_lock, field(p, pool, POOL_MUTEX));
    call1(p, p->cond_signal, field(p, pool, POOL_DONE));
    call1(p, p->mutex_unlock, field(p, pool, POOL_MUTEX));
    LLVMBuildBr(p->b, next);
    at(p, next);
    LLVMBuildBr(p->b, top);
    LLVMValueRef in[2] = {c64(p, 0), generation};
    LLVMBasicBlockRef from[2] = {entry, next};
    LLVMAddIncoming(seen, in, from, 2);

    at(p, exit);
    LLVMBuildRet(p->b, LLVMConstPointerNull(p->ptr));
}

/* Defines rt_pool_parallel_for(pool, fn, args, ntasks, grain), which the
 * generated entry points call: publishes the loop, works on it, and waits
 * until every worker has finished. */
static void build_parallel_for(pool_ir *p)
{
    LLVMTypeRef params[5] = {p->ptr, p->ptr, p->ptr, p->i64, p->i64};
    pool_fn pfor = declare(p, "rt_pool_parallel_for", p->void_ty, params, 5);
    LLVMValueRef fn = pfor.fn;
    LLVMValueRef pool = LLVMGetParam(fn, 0), task = LLVMGetParam(fn, 1), args = LLVMGetParam(fn, 2),
                 ntasks = LLVMGetParam(fn, 3), grain_in = LLVMGetParam(fn, 4);
    LLVMBasicBlockRef entry = block(p, fn, "entry"), inline_bb = block(p, fn, "inline"),
                      publish = block(p, fn, "publish");
    at(p, entry);
    LLVMValueRef grain = LLVMBuildSelect(p->b, LLVMBuildICmp(p->b, LLVMIntSLT, grain_in, c64(p, 1), ""), c64(p, 1),
                                         grain_in, "grain");
    LLVMValueRef workers = LLVMBuildSExt(p->b, load(p, p->i32, pool, POOL_WORKERS), p->i64, "");
    LLVMValueRef serial = LLVMBuildOr(p->b, LLVMBuildICmp(p->b, LLVMIntEQ, workers, c64(p, 0), ""),
                                      LLVMBuildICmp(p->b, LLVMIntSLE, ntasks, grain, ""), "");
    LLVMBuildCondBr(p->b, serial, inline_bb, publish);

    at(p, inline_bb);
    LLVMValueRef all[3] = {args, c64(p, 0), ntasks};
    LLVMBuildCall2(p->b, p->task_ty, task, all, 3, "");
    LLVMBuildRetVoid(p->b);

    /* Publish under the mutex, so a worker about to sleep cannot miss the
     * new generation. */
    at(p, publish);
    call1(p, p->mutex_lock, field(p, pool, POOL_MUTEX));
    LLVMBuildStore(p->b, task, field(p, pool, POOL_FN));
    LLVMBuildStore(p->b, args, field(p, pool, POOL_ARGS));
    LLVMBuildStore(p->b, ntasks, field(p, pool, POOL_NTASKS));
    LLVMBuildStore(p->b, grain, field(p, pool, POOL_GRAIN));
    store_atomic(p, c64(p, 0), pool, POOL_NEXT);
    store_atomic(p, workers, pool, POOL_BUSY);
    rmw(p, LLVMAtomicRMWBinOpAdd, pool, POOL_GENERATION, c64(p, 1));
    call1(p, p->cond_broadcast, field(p, pool, POOL_WAKE));
    call1(p, p->mutex_unlock, field(p, pool, POOL_MUTEX));
    call1(p, p->run_tasks, pool);
    build_wait(p, fn, pool, POOL_DONE, all_done_ready, NULL);
    LLVMBuildRetVoid(p->b);
}

/* ptr qc_aot_pool_new(i32 nthreads): a pool with nthreads - 1 workers, or
 * fewer when a thread cannot start; NULL when out of memory. */
static void build_pool_new(pool_ir *p)
{
    LLVMTypeRef params[1] = {p->i32};
    pool_fn f = declare(p, "qc_aot_pool_new", p->ptr, params, 1);
    LLVMValueRef fn = f.fn, nthreads = LLVMGetParam(fn, 0);
    LLVMBasicBlockRef entry = block(p, fn, "entry"), have = block(p, fn, "have"), oom = block(p, fn, "oom"),
                      start = block(p, fn, "start"), start_body = block(p, fn, "start.body"),
                      started = block(p, fn, "started"), done = block(p, fn, "done");
    at(p, entry);
    LLVMTargetDataRef layout = LLVMGetModuleDataLayout(p->mod);
    LLVMValueRef one_pool[2] = {LLVMConstInt(p->iptr, 1, 0),
                                LLVMConstInt(p->iptr, LLVMABISizeOfType(layout, p->pool_ty), 0)};
    LLVMValueRef pool = call(p, p->calloc_fn, one_pool, 2);
    LLVMValueRef count = LLVMBuildSExt(p->b, nthreads, p->i64, "");
    LLVMValueRef handle_args[2] = {LLVMBuildZExtOrBitCast(p->b, count, p->iptr, ""),
                                   LLVMConstInt(p->iptr, LLVMABISizeOfType(layout, p->iptr), 0)};
    LLVMValueRef handles = call(p, p->calloc_fn, handle_args, 2);
    LLVMBuildCondBr(p->b, LLVMBuildOr(p->b, LLVMBuildIsNull(p->b, pool, ""), LLVMBuildIsNull(p->b, handles, ""), ""),
                    oom, have);
    at(p, oom);
    call1(p, p->free_fn, pool);
    call1(p, p->free_fn, handles);
    LLVMBuildRet(p->b, LLVMConstPointerNull(p->ptr));

    at(p, have);
    LLVMBuildStore(p->b, handles, field(p, pool, POOL_HANDLES));
    LLVMValueRef null = LLVMConstPointerNull(p->ptr);
    LLVMValueRef init_mutex[2] = {field(p, pool, POOL_MUTEX), null};
    call(p, p->mutex_init, init_mutex, 2);
    LLVMValueRef init_wake[2] = {field(p, pool, POOL_WAKE), null};
    call(p, p->cond_init, init_wake, 2);
    LLVMValueRef init_done[2] = {field(p, pool, POOL_DONE), null};
    call(p, p->cond_init, init_done, 2);
    LLVMValueRef helpers = LLVMBuildSub(p->b, count, c64(p, 1), "");
    LLVMBuildBr(p->b, start);

    at(p, start);
    LLVMValueRef i = LLVMBuildPhi(p->b, p->i64, "i");
    LLVMBuildCondBr(p->b, LLVMBuildICmp(p->b, LLVMIntSLT, i, helpers, ""), start_body, done);
    at(p, start_body);
    LLVMValueRef handle = LLVMBuildInBoundsGEP2(p->b, p->iptr, handles, &i, 1, "");
    LLVMValueRef create_args[4] = {handle, null, p->worker.fn, pool};
    LLVMValueRef rc = call(p, p->create, create_args, 4);
    LLVMBuildCondBr(p->b, LLVMBuildICmp(p->b, LLVMIntEQ, rc, c32(p, 0), ""), started, done);
    at(p, started);
    LLVMValueRef i_next = LLVMBuildAdd(p->b, i, c64(p, 1), "");
    LLVMBuildBr(p->b, start);
    LLVMValueRef in[2] = {c64(p, 0), i_next};
    LLVMBasicBlockRef from[2] = {have, started};
    LLVMAddIncoming(i, in, from, 2);

    /* i workers started: all of them, or those before a failed start. */
    at(p, done);
    LLVMBuildStore(p->b, LLVMBuildTrunc(p->b, i, p->i32, ""), field(p, pool, POOL_WORKERS));
    LLVMBuildRet(p->b, pool);
}

/* void qc_aot_pool_free(ptr pool): stops and joins the workers. */
static void build_pool_free(pool_ir *p)
{
    LLVMTypeRef params[1] = {p->ptr};
    pool_fn f = declare(p, "qc_aot_pool_free", p->void_ty, params, 1);
    LLVMValueRef fn = f.fn, pool = LLVMGetParam(fn, 0);
    LLVMBasicBlockRef entry = block(p, fn, "entry"), body = block(p, fn, "stop"), join = block(p, fn, "join"),
                      join_body = block(p, fn, "join.body"), joined = block(p, fn, "joined"),
                      done = block(p, fn, "done");
    at(p, entry);
    LLVMBuildCondBr(p->b, LLVMBuildIsNull(p->b, pool, ""), done, body);

    at(p, body);
    call1(p, p->mutex_lock, field(p, pool, POOL_MUTEX));
    store_atomic(p, c32(p, 1), pool, POOL_STOPPING);
    call1(p, p->cond_broadcast, field(p, pool, POOL_WAKE));
    call1(p, p->mutex_unlock, field(p, pool, POOL_MUTEX));
    LLVMValueRef workers = LLVMBuildSExt(p->b, load(p, p->i32, pool, POOL_WORKERS), p->i64, "");
    LLVMValueRef handles = load(p, p->ptr, pool, POOL_HANDLES);
    LLVMBuildBr(p->b, join);

    at(p, join);
    LLVMValueRef i = LLVMBuildPhi(p->b, p->i64, "i");
    LLVMBuildCondBr(p->b, LLVMBuildICmp(p->b, LLVMIntSLT, i, workers, ""), join_body, joined);
    at(p, join_body);
    LLVMValueRef h = LLVMBuildLoad2(p->b, p->iptr, LLVMBuildInBoundsGEP2(p->b, p->iptr, handles, &i, 1, ""), "");
    LLVMValueRef join_args[2] = {h, LLVMConstPointerNull(p->ptr)};
    call(p, p->join, join_args, 2);
    LLVMValueRef i_next = LLVMBuildAdd(p->b, i, c64(p, 1), "");
    LLVMBuildBr(p->b, join);
    LLVMValueRef in[2] = {c64(p, 0), i_next};
    LLVMBasicBlockRef from[2] = {body, join_body};
    LLVMAddIncoming(i, in, from, 2);

    at(p, joined);
    call1(p, p->mutex_destroy, field(p, pool, POOL_MUTEX));
    call1(p, p->cond_destroy, field(p, pool, POOL_WAKE));
    call1(p, p->cond_destroy, field(p, pool, POOL_DONE));
    call1(p, p->free_fn, handles);
    call1(p, p->free_fn, pool);
    LLVMBuildBr(p->b, done);
    at(p, done);
    LLVMBuildRetVoid(p->b);
}

void cg_aot_add_pool(LLVMModuleRef mod)
{
    pool_ir p;
    memset(&p, 0, sizeof p);
    p.mod = mod;
    p.ctx = LLVMGetModuleContext(mod);
    p.b = LLVMCreateBuilderInContext(p.ctx);
    p.i1 = LLVMInt1TypeInContext(p.ctx);
    p.i8 = LLVMInt8TypeInContext(p.ctx);
    p.i32 = LLVMInt32TypeInContext(p.ctx);
    p.i64 = LLVMInt64TypeInContext(p.ctx);
    p.iptr = LLVMIntPtrTypeInContext(p.ctx, LLVMGetModuleDataLayout(mod));
    p.ptr = LLVMPointerTypeInContext(p.ctx, 0);
    p.void_ty = LLVMVoidTypeInContext(p.ctx);
    const char *triple = LLVMGetTarget(mod);
    p.x86 = strncmp(triple, "x86_64", 6) == 0 || (triple[0] == 'i' && strstr(triple, "86-") != NULL);
    LLVMTypeRef sync = LLVMArrayType2(p.i64, CG_AOT_PTHREAD_BYTES / 8);
    LLVMTypeRef fields[POOL_FIELDS] = {sync,  sync,  sync,  p.i64, p.i64, p.i64, p.i32,
                                       p.i32, p.ptr, p.ptr, p.i64, p.i64, p.ptr};
    p.pool_ty = LLVMStructTypeInContext(p.ctx, fields, POOL_FIELDS, 0);
    LLVMTypeRef task_params[3] = {p.ptr, p.i64, p.i64};
    p.task_ty = LLVMFunctionType(p.void_ty, task_params, 3, 0);

    declare_pthreads(&p);
    build_run_tasks(&p);
    build_worker(&p);
    build_parallel_for(&p);
    build_pool_new(&p);
    build_pool_free(&p);
    LLVMDisposeBuilder(p.b);
}
