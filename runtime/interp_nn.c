/* Interpreter kernels for the neural-network ops: matmul, linear, layernorm,
 * softmax, causal_mask, embedding and cross_entropy. Floating operands are
 * f32 here (f16 and bf16 arrive widened, see interp.c), and every sum over
 * many elements accumulates in double and rounds to f32 once. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/interp_ops.h"

static int require_f32(const rt_interp_call *call, const rt_tensor *t)
{
    return t->dtype == IR_F32 ? 0 : rt_interp_unsupported(call, t->dtype);
}

/* ---- matmul and linear ---- */

/* y[M, N] = a[M, K] x b[K, N], with a stored as [K, M] when transpose_a and
 * b as [N, K] when transpose_b. bias[N] may be NULL. Each y[i, j] is the
 * double sum over k = 0, 1, ..., K-1 (in that order) of (double)a[i, k] *
 * (double)b[k, j], each product exact, plus (double)bias[j], rounded to f32
 * once. `acc` has room for N doubles. */
static void matmul_2d(const float *a, const float *b, const float *bias, float *y, int64_t M, int64_t K,
                      int64_t N, bool transpose_a, bool transpose_b, double *acc)
{
    /* Element (i, k) of a is at a[i * a_row_stride + k * a_k_stride]. */
    int64_t a_row_stride = transpose_a ? 1 : K, a_k_stride = transpose_a ? M : 1;
    for (int64_t i = 0; i < M; i++) {
        const float *a_row = a + i * a_row_stride;
        if (transpose_b) {
            /* b rows are contiguous in k, so take each dot product directly. */
            for (int64_t j = 0; j < N; j++) {
                const float *b_row = b + j * K;
                double sum = 0.0;
                for (int64_t k = 0; k < K; k++)
                    sum += (double)a_row[k * a_k_stride] * (double)b_row[k];
                acc[j] = sum;
            }
        } else {
            /* i-k-j order reads b row by row; acc[j] still sums in k order. */
            for (int64_t j = 0; j < N; j++)
                acc[j] = 0.0;
            for (int64_t k = 0; k < K; k++) {
                double a_ik = a_row[k * a_k_stride];
                const float *b_row = b + k * N;
                for (int64_t j = 0; j < N; j++)
                    acc[j] += a_ik * (double)b_row[j];
            }
        }
        float *y_row = y + i * N;
        for (int64_t j = 0; j < N; j++)
            y_row[j] = (float)(bias ? acc[j] + (double)bias[j] : acc[j]);
    }
}

/* matmul{transpose_a, transpose_b}: a[..., M, K] x b[..., K, N] ->
 * [..., M, N]. With transpose_a = 1, a is [..., K, M], and with
 * transpose_b = 1, b is [..., N, K]: their last two dims are swapped. The
 * batch dims broadcast as in numpy. f32 only. Each output element is a
 * double-accumulated dot product over k in increasing order, rounded to f32
 * once (see matmul_2d). */
int rt_interp_matmul(const rt_interp_call *call)
{
    const rt_tensor *a = call->operands[0], *b = call->operands[1];
    rt_tensor *y = call->result;
    if (require_f32(call, a) != 0)
        return -1;
    bool transpose_a = ir_attr_int(call->value, "transpose_a") != 0;
    bool transpose_b = ir_attr_int(call->value, "transpose_b") != 0;
    int64_t M = y->dims[y->rank - 2], N = y->dims[y->rank - 1];
    int64_t K = transpose_a ? a->dims[a->rank - 2] : a->dims[a->rank - 1];

    int batch_rank = y->rank - 2;
    int64_t batches = 1;
    for (int i = 0; i < batch_rank; i++)
        batches *= y->dims[i];
    rt_interp_walk w;
    rt_interp_walk_start(&w, batch_rank, y->dims);
    rt_interp_broadcast_strides(a->dims, a->rank - 2, batch_rank, w.strides[0]);
    rt_interp_broadcast_strides(b->dims, b->rank - 2, batch_rank, w.strides[1]);

    double *acc = malloc(sizeof(double) * (size_t)(N ? N : 1));
    if (!acc)
        return rt_interp_fail(call, "out of memory allocating a row of %lld accumulators", (long long)N);
    const float *pa = a->data, *pb = b->data;
    float *py = y->data;
    for (int64_t batch = 0; batch < batches; batch++, rt_interp_walk_next(&w))
        matmul_2d(pa + w.offset[0] * M * K, pb + w.offset[1] * K * N, NULL, py + batch * M * N, M, K, N,
                  transpose_a, transpose_b, acc);
    free(acc);
    return 0;
}

/* linear: x[..., in] x W[in, out] + bias[out] -> [..., out], in the Conv1D
 * layout of GPT-2 checkpoints, and the bias is optional. f32 only. Each
 * output element is the double dot product over `in` in increasing order
 * plus the bias, rounded to f32 once. */
int rt_interp_linear(const rt_interp_call *call)
{
    const rt_tensor *x = call->operands[0], *w = call->operands[1];
    const rt_tensor *bias = call->value->nops == 3 ? call->operands[2] : NULL;
    rt_tensor *y = call->result;
    if (require_f32(call, x) != 0)
        return -1;
    int64_t in = w->dims[0], out = w->dims[1];
    int64_t rows = in ? rt_tensor_numel(x) / in : 0;

    double *acc = malloc(sizeof(double) * (size_t)(out ? out : 1));
    if (!acc)
        return rt_interp_fail(call, "out of memory allocating a row of %lld accumulators", (long long)out);
    matmul_2d(x->data, w->data, bias ? bias->data : NULL, y->data, rows, in, out, false, false, acc);
    free(acc);
    return 0;
}

/* ---- normalization and attention ---- */

/* layernorm{eps}(x[..., C], gamma[C], beta[C]) normalizes each row over the
 * last axis: y = (x - mean) / sqrt(var + eps) * gamma + beta, where mean and
 * the biased variance (divided by C, computed in a second pass as the mean
 * of (x - mean)^2) accumulate in double. The whole expression is evaluated
 * in double and rounded to f32 once per element. */
int rt_interp_layernorm(const rt_interp_call *call)
{
    const rt_tensor *x = call->operands[0], *gamma = call->operands[1], *beta = call->operands[2];
    if (require_f32(call, x) != 0)
        return -1;
    double eps = ir_attr_float(call->value, "eps");
    int64_t C = x->dims[x->rank - 1];
    int64_t rows = C ? rt_tensor_numel(x) / C : 0;
    const float *pg = gamma->data, *pb = beta->data;

    for (int64_t r = 0; r < rows; r++) {
        const float *xr = (const float *)x->data + r * C;
        float *yr = (float *)call->result->data + r * C;
        double sum = 0.0;
        for (int64_t c = 0; c < C; c++)
            sum += xr[c];
        double mean = sum / (double)C;
        double sq = 0.0;
        for (int64_t c = 0; c < C; c++)
            sq += ((double)xr[c] - mean) * ((double)xr[c] - mean);
        double rstd = 1.0 / sqrt(sq / (double)C + eps);
        for (int64_t c = 0; c < C; c++)
            yr[c] = (float)(((double)xr[c] - mean) * rstd * (double)pg[c] + (double)pb[c]);
    }
    return 0;
}

/* softmax{axis}: y = exp(x - max) / sum(exp(x - max)) along `axis`. The max
 * is taken in f32. Each exp(x - max) is evaluated in double, the sum
 * accumulates in double in index order, and each quotient rounds to f32 once.
 * A row whose elements are all -inf (fully masked) gives all zeros, not NaN.
 * A row containing NaN or +inf gives all NaN. */
int rt_interp_softmax(const rt_interp_call *call)
{
    const rt_tensor *x = call->operands[0];
    if (require_f32(call, x) != 0)
        return -1;
    int axis = rt_interp_axis(ir_attr_int(call->value, "axis"), x->rank);
    int64_t outer = 1, len = x->dims[axis], inner = 1;
    for (int i = 0; i < axis; i++)
        outer *= x->dims[i];
    for (int i = axis + 1; i < x->rank; i++)
        inner *= x->dims[i];
    const float *px = x->data;
    float *py = call->result->data;

    for (int64_t o = 0; o < outer; o++) {
        for (int64_t in = 0; in < inner; in++) {
            /* Element k of this row is at base + k * inner. */
            int64_t base = o * len * inner + in;
            float max = -INFINITY;
            bool has_nan = false;
            for (int64_t k = 0; k < len; k++) {
                float v = px[base + k * inner];
                has_nan |= isnan(v);
                if (v > max)
                    max = v;
            }
            if (max == -INFINITY && !has_nan)
                continue; /* all -inf: the result stays zero-filled */
            double sum = 0.0;
            for (int64_t k = 0; k < len; k++)
                sum += exp((double)px[base + k * inner] - (double)max);
            for (int64_t k = 0; k < len; k++)
                py[base + k * inner] = (float)(exp((double)px[base + k * inner] - (double)max) / sum);
        }
    }
    return 0;
}

/* causal_mask{offset}(x, pos?): over the last two dims [..., T1, T2],
 * y[..., i, j] = -inf where j > i + offset + pos, else x[..., i, j]. pos is
 * the optional scalar operand, 0 when absent. f32 only. */
int rt_interp_causal_mask(const rt_interp_call *call)
{
    const rt_tensor *x = call->operands[0];
    if (require_f32(call, x) != 0)
        return -1;
    int64_t offset = ir_attr_int(call->value, "offset");
    if (call->value->nops == 2)
        offset += rt_interp_load_int(call->operands[1], 0);
    int64_t T1 = x->dims[x->rank - 2], T2 = x->dims[x->rank - 1];
    int64_t matrix_size = T1 * T2;
    int64_t matrices = matrix_size ? rt_tensor_numel(x) / matrix_size : 0;
    const float *px = x->data;
    float *py = call->result->data;
    for (int64_t m = 0; m < matrices; m++)
        for (int64_t i = 0; i < T1; i++)
            for (int64_t j = 0; j < T2; j++) {
                int64_t at = (m * T1 + i) * T2 + j;
                py[at] = j > i + offset ? -INFINITY : px[at];
            }
    return 0;
}

/* ---- embedding and loss ---- */

/* embedding(table[V, C], ids[...]) -> [..., C]: y[p, :] = table[ids[p], :],
 * copying elements of any dtype unchanged. An id outside [0, V) is an error
 * naming the position and the id. */
int rt_interp_embedding(const rt_interp_call *call)
{
    const rt_tensor *table = call->operands[0], *ids = call->operands[1];
    int64_t V = table->dims[0], C = table->dims[1];
    size_t row_bytes = (size_t)C * ir_dtype_size(table->dtype);
    int64_t positions = rt_tensor_numel(ids);
    for (int64_t p = 0; p < positions; p++) {
        int64_t id = rt_interp_load_int(ids, p);
        if (id < 0 || id >= V) {
            char where[128];
            return rt_interp_fail(call, "id %lld at position %s is out of range [0, %lld)", (long long)id,
                                  rt_interp_index_str(ids->dims, ids->rank, p, where, sizeof where), (long long)V);
        }
        memcpy((char *)call->result->data + (size_t)p * row_bytes, (const char *)table->data + (size_t)id * row_bytes,
               row_bytes);
    }
    return 0;
}

/* cross_entropy{ignore_index}(logits[..., V], targets[...]) -> scalar: the
 * mean, over positions p whose target is not ignore_index, of
 * logsumexp(logits[p, :]) - logits[p, target[p]]. logsumexp is
 * max + log(sum(exp(x - max))) with the max in f32 and the sum in double.
 * The per-position losses sum in double in position order, and the mean
 * rounds to f32 once. If every position is ignored the loss is 0. A target
 * outside [0, V) other than ignore_index is an error naming the position. */
int rt_interp_cross_entropy(const rt_interp_call *call)
{
    const rt_tensor *logits = call->operands[0], *targets = call->operands[1];
    if (require_f32(call, logits) != 0)
        return -1;
    int64_t ignore_index = ir_attr_int(call->value, "ignore_index");
    int64_t V = logits->dims[logits->rank - 1];
    int64_t positions = rt_tensor_numel(targets);
    double total = 0.0;
    int64_t counted = 0;

    for (int64_t p = 0; p < positions; p++) {
        int64_t target = rt_interp_load_int(targets, p);
        if (target == ignore_index)
            continue;
        if (target < 0 || target >= V) {
            char where[128];
            return rt_interp_fail(call, "target %lld at position %s is out of range [0, %lld) and is not the "
                                  "ignore_index %lld", (long long)target,
                                  rt_interp_index_str(targets->dims, targets->rank, p, where, sizeof where),
                                  (long long)V, (long long)ignore_index);
        }
        const float *row = (const float *)logits->data + p * V;
        float max = -INFINITY;
        for (int64_t v = 0; v < V; v++)
            if (row[v] > max)
                max = row[v];
        double sum = 0.0;
        for (int64_t v = 0; v < V; v++)
            sum += exp((double)row[v] - (double)max);
        double logsumexp = (double)max + log(sum);
        total += logsumexp - (double)row[target];
        counted++;
    }
    ((float *)call->result->data)[0] = counted ? (float)(total / (double)counted) : 0.0f;
    return 0;
}
