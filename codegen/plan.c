/* The buffer plan. It decides for every value whether its buffer is bound
 * from the weights or inputs, computed once at bind time (the value
 * depends only on params and constants) or computed on every run. Then it
 * assigns buffer slots, packed-weight slots and scratch slots. A reshape
 * shares its operand's buffer because row-major data does not move, and a
 * cache_write shares its cache operand's buffer because it updates it in
 * place.
 * Run-time values that are not graph outputs share buffers: a buffer
 * returns to a free list after the last use of its value (through any
 * reshape of it) and the next value takes the smallest free buffer that
 * fits, or grows the largest one. Bind-time values keep their own.
 * Packed B operands of matrix products are packed once at bind time when
 * B is a param or bind-time value (unless the caller asks to repack
 * weights on every run), and otherwise packed right before the product
 * into a buffer from the same free list. Products with few rows take the
 * GEMV path, which reads B in place and needs no packed buffer. */
#include <stdlib.h>
#include <string.h>

#include "codegen/cg_internal.h"
#include "codegen/emit_int8.h"

bool cg_is_float(ir_dtype t)
{
    return t == IR_F32 || t == IR_F16 || t == IR_BF16;
}

int64_t cg_storage_elem_size(ir_dtype t)
{
    return cg_is_float(t) ? 4 : (int64_t)ir_dtype_size(t);
}

cg_gemm_shape cg_gemm_shape_for(int vector_bits)
{
    cg_gemm_shape s;
    if (vector_bits >= 512)
        s.vw = 16;
    else if (vector_bits >= 256)
        s.vw = 8;
    else
        s.vw = 4;
    if (s.vw == 16) {
        /* 32 vector registers: 8 x 3 accumulators, 3 B vectors, 1 broadcast. */
        s.mr = 8;
        s.nvec = 3;
    } else {
        /* 16 vector registers: 6 x 2 accumulators, 2 B vectors, 1 broadcast. */
        s.mr = 6;
        s.nvec = 2;
    }
    s.nr = s.nvec * s.vw;
    /* 128 rows cover a whole 128-token prefill, so each B panel streams
     * from memory once. The MC x KC block of A (128 KB) stays in L2. */
    s.mc = s.mr * (s.vw == 16 ? 16 : 21);
    s.nc = s.nr * 4;
    s.kc = 256;
    return s;
}

/* Dimensions of a matrix product: batch count of B (before broadcasting),
 * K and N. */
static void gemm_b_dims(const ir_graph *g, const ir_value *v, int64_t *nb, int64_t *k, int64_t *n)
{
    const ir_type *bt = &g->values[v->ops[1]]->type;
    if (cg_is_linear(v)) {
        *nb = 1;
        *k = bt->dims[0];
        *n = bt->dims[1];
        return;
    }
    bool tb = ir_attr_int(v, "transpose_b") != 0;
    *nb = 1;
    for (int i = 0; i < bt->rank - 2; i++)
        *nb *= bt->dims[i];
    *k = tb ? bt->dims[bt->rank - 1] : bt->dims[bt->rank - 2];
    *n = tb ? bt->dims[bt->rank - 2] : bt->dims[bt->rank - 1];
}

int64_t cg_packed_bytes(const ir_graph *g, const ir_value *v, const cg_gemm_shape *gs)
{
    int64_t nb, k, n;
    gemm_b_dims(g, v, &nb, &k, &n);
    int64_t panels = (n + gs->nr - 1) / gs->nr;
    return nb * panels * k * gs->nr * 4;
}

static int add_slot(cg_plan *p, int64_t bytes)
{
    p->slot_bytes = realloc(p->slot_bytes, sizeof(int64_t) * (size_t)(p->nslots + 1));
    p->slot_bytes[p->nslots] = bytes;
    return p->nslots++;
}

/* Best-fit free list of shared run-time buffers. */
typedef struct free_list {
    int n;
    int *slot;
} free_list;

static int take_buffer(cg_plan *p, free_list *fl, int64_t bytes)
{
    int best = -1, largest = -1;
    for (int i = 0; i < fl->n; i++) {
        int64_t have = p->slot_bytes[fl->slot[i]];
        if (have >= bytes && (best < 0 || have < p->slot_bytes[fl->slot[best]]))
            best = i;
        if (largest < 0 || have > p->slot_bytes[fl->slot[largest]])
            largest = i;
    }
    int pick = best >= 0 ? best : largest;
    if (pick < 0)
        return add_slot(p, bytes);
    int slot = fl->slot[pick];
    fl->slot[pick] = fl->slot[--fl->n];
    if (p->slot_bytes[slot] < bytes)
        p->slot_bytes[slot] = bytes;
    return slot;
}

static int share_run_buffers(const ir_graph *g, cg_plan *p)
{
    int n = g->nvalues;
    int *last_use = malloc(sizeof(int) * (size_t)n);
    int *shared = malloc(sizeof(int) * (size_t)n);
    int *gemm_of = malloc(sizeof(int) * (size_t)n);
    /* Room for every value buffer and every packed buffer at once. */
    free_list fl = {0, malloc(sizeof(int) * (size_t)(n + p->ngemms + 1))};
    if (!last_use || !shared || !gemm_of || !fl.slot) {
        free(last_use);
        free(shared);
        free(gemm_of);
        free(fl.slot);
        return -1;
    }
    for (int i = 0; i < n; i++)
        gemm_of[i] = -1;
    for (int k = 0; k < p->ngemms; k++)
        gemm_of[p->gemms[k].value] = k;
    /* p->slot still maps every value to the value id of its buffer's owner. */
    for (int i = 0; i < n; i++) {
        last_use[i] = -1;
        shared[i] = -1;
    }
    for (int i = 0; i < n; i++) {
        const ir_value *v = g->values[i];
        if (v->dead)
            continue;
        for (int k = 0; k < v->nops; k++)
            last_use[p->slot[v->ops[k]]] = i;
    }
    for (int i = 0; i < g->noutputs; i++)
        last_use[p->slot[g->outputs[i]]] = n;

    for (int i = 0; i < n; i++) {
        const ir_value *v = g->values[i];
        if (v->dead)
            continue;
        if (p->storage[i] == CG_STORE_RUN && !p->is_alias[i] && last_use[i] < n && p->slot_bytes[i] > 0) {
            shared[i] = take_buffer(p, &fl, p->slot_bytes[i]);
            p->slot_bytes[i] = 0;
        }
        /* A B operand packed at run time lives only for its own product,
         * so its panels come from the free list and return right after. */
        int packed = -1;
        if (gemm_of[i] >= 0 && !p->gemms[gemm_of[i]].pack_at_bind) {
            cg_gemm_plan *gp = &p->gemms[gemm_of[i]];
            packed = take_buffer(p, &fl, p->slot_bytes[gp->packed_slot]);
            p->slot_bytes[gp->packed_slot] = 0;
            gp->packed_slot = packed;
        }
        /* Release after allocating, so an op never writes into its own
         * operands. An unused value is released at once. */
        for (int k = 0; k <= v->nops; k++) {
            int owner = k < v->nops ? p->slot[v->ops[k]] : i;
            if (shared[owner] >= 0 && last_use[owner] <= i) {
                fl.slot[fl.n++] = shared[owner];
                last_use[owner] = n + 1; /* released */
            }
        }
        if (packed >= 0)
            fl.slot[fl.n++] = packed;
    }
    for (int i = 0; i < n; i++)
        if (shared[p->slot[i]] >= 0)
            p->slot[i] = shared[p->slot[i]];
    free(last_use);
    free(shared);
    free(gemm_of);
    free(fl.slot);
    return 0;
}

int cg_plan_build(const ir_graph *g, const cg_gemm_shape *gs, bool profile, bool repack_weights, cg_plan *p,
                  ir_diag *d)
{
    memset(p, 0, sizeof *p);
    int n = g->nvalues;
    p->nvalues = n;
    p->storage = calloc((size_t)n + 1, sizeof *p->storage);
    p->slot = calloc((size_t)n + 1, sizeof *p->slot);
    p->is_alias = calloc((size_t)n + 1, sizeof *p->is_alias);
    p->scratch_slot = calloc((size_t)n + 1, sizeof *p->scratch_slot);
    p->gemms = calloc((size_t)n + 1, sizeof *p->gemms);
    if (!p->storage || !p->slot || !p->is_alias || !p->scratch_slot || !p->gemms) {
        ir_diag_file_error(d, NULL, "out of memory while planning buffers for graph '%s'", g->name);
        return -1;
    }
    /* Slots [0, n) belong to values; aliases leave theirs unused. */
    for (int i = 0; i < n; i++)
        add_slot(p, 0);

    for (int i = 0; i < n; i++) {
        const ir_value *v = g->values[i];
        p->scratch_slot[i] = -1;
        p->slot[i] = i;
        if (v->op == IR_OP_PARAM) {
            p->storage[i] = CG_STORE_PARAM;
            continue;
        }
        if (v->op == IR_OP_INPUT) {
            p->storage[i] = CG_STORE_INPUT;
            continue;
        }
        bool bind_time = true;
        for (int k = 0; k < v->nops; k++) {
            cg_storage s = p->storage[v->ops[k]];
            if (s == CG_STORE_INPUT || s == CG_STORE_RUN)
                bind_time = false;
        }
        p->storage[i] = bind_time ? CG_STORE_BIND : CG_STORE_RUN;
        if (v->op == IR_OP_RESHAPE || v->op == IR_OP_CACHE_WRITE) {
            p->is_alias[i] = true;
            p->slot[i] = p->slot[v->ops[0]];
            continue;
        }
        p->slot_bytes[i] = ir_type_numel(&v->type) * cg_storage_elem_size(v->type.dtype);
    }

    /* GEMVs run one at a time, so they share one scratch buffer for their
     * partial sums. */
    int gemv_scratch = -1;
    for (int i = 0; i < n; i++) {
        const ir_value *v = g->values[i];
        if (v->dead)
            continue;
        int64_t gemv_bytes = cg_is_product(v) && cg_use_gemv(g, v) ? cg_gemv_scratch_bytes(g, v, gs) : 0;
        if (gemv_bytes > 0) {
            if (gemv_scratch < 0)
                gemv_scratch = add_slot(p, gemv_bytes);
            else if (p->slot_bytes[gemv_scratch] < gemv_bytes)
                p->slot_bytes[gemv_scratch] = gemv_bytes;
            p->scratch_slot[i] = gemv_scratch;
        } else if (cg_is_product(v) && !cg_use_gemv(g, v)) {
            cg_gemm_plan *gp = &p->gemms[p->ngemms++];
            gp->value = i;
            gp->packed_slot = add_slot(p, cg_packed_bytes(g, v, gs));
            gp->pack_at_bind = !repack_weights &&
                               (p->storage[v->ops[1]] == CG_STORE_PARAM || p->storage[v->ops[1]] == CG_STORE_BIND);
        } else if (v->op == IR_OP_Q_LINEAR) {
            int64_t bytes[CG_QLINEAR_NSCRATCH];
            cg_qlinear_scratch_bytes(g, v, bytes);
            p->scratch_slot[i] = add_slot(p, bytes[0]);
            for (int k = 1; k < CG_QLINEAR_NSCRATCH; k++)
                add_slot(p, bytes[k]);
        } else if (v->op == IR_OP_CROSS_ENTROPY) {
            /* Per position: the loss and whether it counts, as doubles. */
            int64_t rows = ir_type_numel(&g->values[v->ops[1]]->type);
            p->scratch_slot[i] = add_slot(p, rows * 16);
        }
    }
    if (share_run_buffers(g, p) != 0) {
        ir_diag_file_error(d, NULL, "out of memory while planning buffers for graph '%s'", g->name);
        return -1;
    }
    p->status_slot = add_slot(p, 4 * sizeof(int64_t));
    p->profile_slot = profile ? add_slot(p, 0) : -1;
    return 0;
}

void cg_plan_free(cg_plan *p)
{
    free(p->storage);
    free(p->slot);
    free(p->is_alias);
    free(p->slot_bytes);
    free(p->gemms);
    free(p->scratch_slot);
    memset(p, 0, sizeof *p);
}
