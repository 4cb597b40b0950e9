/* Interpreter kernels for the backward ops (`grad.*`) that the autodiff pass
 * emits. Floating operands are f32 here (f16 and bf16 arrive widened, see
 * interp.c). Each element is computed in double and rounded to f32 once, and
 * sums over many elements accumulate in double, as in the forward kernels. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/interp_ops.h"

static int require_f32(const rt_interp_call *call, const rt_tensor *t)
{
    return t->dtype == IR_F32 ? 0 : rt_interp_unsupported(call, t->dtype);
}

/* Splits a shape into the row count and the length of the last axis. */
static void rows_of(const rt_tensor *t, int64_t *rows, int64_t *C)
{
    *C = t->dims[t->rank - 1];
    *rows = *C ? rt_tensor_numel(t) / *C : 0;
}

/* ---- elementwise ---- */

/* Derivative of the tanh form of gelu, 0.5 x (1 + tanh(u)) with
 * u = s (x + 0.044715 x^3) and s = sqrt(2/pi):
 * 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) s (1 + 3 * 0.044715 x^2). */
static double gelu_derivative(double x)
{
    const double s = 0.7978845608028654;
    double t = tanh(s * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * s * (1.0 + 3.0 * 0.044715 * x * x);
}

/* grad.gelu, grad.relu, grad.abs (dy, x): dx = dy * f'(x), with
 * relu'(x) = 1 for x > 0 and 0 otherwise, abs'(x) = sign(x) and abs'(0) = 0. */
int rt_interp_grad_pointwise(const rt_interp_call *call)
{
    const rt_tensor *dy = call->operands[0], *x = call->operands[1];
    if (require_f32(call, dy) != 0)
        return -1;
    const float *pdy = dy->data, *px = x->data;
    float *pdx = call->result->data;
    int64_t n = rt_tensor_numel(dy);
    for (int64_t i = 0; i < n; i++) {
        double v = px[i], slope = 0.0;
        if (call->value->op == IR_OP_GRAD_GELU)
            slope = gelu_derivative(v);
        else if (v > 0.0)
            slope = 1.0;
        else if (v < 0.0 && call->value->op == IR_OP_GRAD_ABS)
            slope = -1.0;
        pdx[i] = (float)((double)pdy[i] * slope);
    }
    return 0;
}

/* grad.maximum{operand}, grad.minimum{operand} (dy, a, b): dy where operand
 * `operand` wins (is strictly larger for maximum, smaller for minimum), dy / 2
 * on a tie, 0 where the other operand wins. A NaN operand counts as no win
 * for either side, so the result there is 0. a and b broadcast to dy. */
int rt_interp_grad_minmax(const rt_interp_call *call)
{
    const rt_tensor *dy = call->operands[0], *a = call->operands[1], *b = call->operands[2];
    if (require_f32(call, dy) != 0)
        return -1;
    bool is_max = call->value->op == IR_OP_GRAD_MAXIMUM;
    bool to_a = ir_attr_int(call->value, "operand") == 0;
    rt_interp_walk w;
    rt_interp_walk_start(&w, dy->rank, dy->dims);
    rt_interp_broadcast_strides(a->dims, a->rank, dy->rank, w.strides[0]);
    rt_interp_broadcast_strides(b->dims, b->rank, dy->rank, w.strides[1]);
    const float *pdy = dy->data, *pa = a->data, *pb = b->data;
    float *pdx = call->result->data;
    int64_t n = rt_tensor_numel(dy);
    for (int64_t i = 0; i < n; i++, rt_interp_walk_next(&w)) {
        float va = pa[w.offset[0]], vb = pb[w.offset[1]];
        float mine = to_a ? va : vb, other = to_a ? vb : va;
        double share = 0.0;
        if (mine == other)
            share = 0.5;
        else if (is_max ? mine > other : mine < other)
            share = 1.0;
        pdx[i] = (float)((double)pdy[i] * share);
    }
    return 0;
}

/* grad.causal_mask{offset}(dy): dy with the entries [..., i, j] where
 * j > i + offset set to 0, the positions that causal_mask set to -inf. */
int rt_interp_grad_causal_mask(const rt_interp_call *call)
{
    const rt_tensor *dy = call->operands[0];
    if (require_f32(call, dy) != 0)
        return -1;
    int64_t offset = ir_attr_int(call->value, "offset");
    int64_t T1 = dy->dims[dy->rank - 2], T2 = dy->dims[dy->rank - 1];
    int64_t matrix_size = T1 * T2;
    int64_t matrices = matrix_size ? rt_tensor_numel(dy) / matrix_size : 0;
    const float *pdy = dy->data;
    float *pdx = call->result->data;
    for (int64_t m = 0; m < matrices; m++)
        for (int64_t i = 0; i < T1; i++)
            for (int64_t j = 0; j < T2; j++) {
                int64_t at = (m * T1 + i) * T2 + j;
                pdx[at] = j > i + offset ? 0.0f : pdy[at];
            }
    return 0;
}

/* ---- layernorm ---- */

/* Computes the mean and 1 / sqrt(var + eps) of one row as the forward
 * kernel does: mean first, then the biased variance in a second pass. */
static void row_stats(const float *x, int64_t C, double eps, double *mean, double *rstd)
{
    double sum = 0.0;
    for (int64_t c = 0; c < C; c++)
        sum += x[c];
    *mean = sum / (double)C;
    double sq = 0.0;
    for (int64_t c = 0; c < C; c++)
        sq += ((double)x[c] - *mean) * ((double)x[c] - *mean);
    *rstd = 1.0 / sqrt(sq / (double)C + eps);
}

/* grad.layernorm{eps}(dy, x, weight) -> dx. With xhat = (x - mean) * rstd and
 * g = dy * weight, the derivative of y = xhat * weight + beta through the
 * mean and the variance gives, per row of length C:
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)). */
int rt_interp_grad_layernorm(const rt_interp_call *call)
{
    const rt_tensor *dy = call->operands[0], *x = call->operands[1], *weight = call->operands[2];
    if (require_f32(call, dy) != 0)
        return -1;
    double eps = ir_attr_float(call->value, "eps");
    int64_t rows, C;
    rows_of(x, &rows, &C);
    const float *pw = weight->data;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = (const float *)x->data + r * C;
        const float *dyr = (const float *)dy->data + r * C;
        float *dxr = (float *)call->result->data + r * C;
        double mean, rstd;
        row_stats(xr, C, eps, &mean, &rstd);

        double g_sum = 0.0, gx_sum = 0.0;
        for (int64_t c = 0; c < C; c++) {
            double g = (double)dyr[c] * (double)pw[c];
            g_sum += g;
            gx_sum += g * ((double)xr[c] - mean) * rstd;
        }
        double g_mean = g_sum / (double)C, gx_mean = gx_sum / (double)C;
        for (int64_t c = 0; c < C; c++) {
            double g = (double)dyr[c] * (double)pw[c];
            double xhat = ((double)xr[c] - mean) * rstd;
            dxr[c] = (float)(rstd * (g - g_mean - xhat * gx_mean));
        }
    }
    return 0;
}

/* grad.layernorm_weight{eps}(dy, x) -> [C]: the sum over all rows of
 * dy * xhat, accumulated in double in row order. */
int rt_interp_grad_layernorm_weight(const rt_interp_call *call)
{
    const rt_tensor *dy = call->operands[0], *x = call->operands[1];
    if (require_f32(call, dy) != 0)
        return -1;
    double eps = ir_attr_float(call->value, "eps");
    int64_t rows, C;
    rows_of(x, &rows, &C);
    double *acc = calloc((size_t)(C ? C : 1), sizeof(double));
    if (!acc)
        return rt_interp_fail(call, "out of memory allocating %lld accumulators", (long long)C);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = (const float *)x->data + r * C;
        const float *dyr = (const float *)dy->data + r * C;
        double mean, rstd;
        row_stats(xr, C, eps, &mean, &rstd);
        for (int64_t c = 0; c < C; c++)
            acc[c] += (double)dyr[c] * ((double)xr[c] - mean) * rstd;
    }
    float *pdw = call->result->data;
    for (int64_t c = 0; c < C; c++)
        pdw[c] = (float)acc[c];
    free(acc);
    return 0;
}

/* ---- softmax ---- */

/* grad.softmax{axis}(dy, y) with y = softmax(x). The Jacobian entries are
 * d y_i / d x_j = y_i (delta_ij - y_j), so along the axis
 * dx = y * (dy - sum(dy * y)), with the sum in double. */
int rt_interp_grad_softmax(const rt_interp_call *call)
{
    const rt_tensor *dy = call->operands[0], *y = call->operands[1];
    if (require_f32(call, dy) != 0)
        return -1;
    int axis = rt_interp_axis(ir_attr_int(call->value, "axis"), y->rank);
    int64_t outer = 1, len = y->dims[axis], inner = 1;
    for (int i = 0; i < axis; i++)
        outer *= y->dims[i];
    for (int i = axis + 1; i < y->rank; i++)
        inner *= y->dims[i];
    const float *pdy = dy->data, *py = y->data;
    float *pdx = call->result->data;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t in = 0; in < inner; in++) {
            int64_t base = o * len * inner + in;
            double dot = 0.0;
            for (int64_t k = 0; k < len; k++)
                dot += (double)pdy[base + k * inner] * (double)py[base + k * inner];
            for (int64_t k = 0; k < len; k++) {
                int64_t at = base + k * inner;
                pdx[at] = (float)((double)py[at] * ((double)pdy[at] - dot));
            }
        }
    }
    return 0;
}

/* ---- embedding and loss ---- */

/* grad.embedding{rows}(dy[..., C], ids[...]) -> [rows, C]: a scatter-add of
 * each dy row into the table row of its id, accumulated in double in
 * position order. An id outside [0, rows) is an error naming the position. */
int rt_interp_grad_embedding(const rt_interp_call *call)
{
    const rt_tensor *dy = call->operands[0], *ids = call->operands[1];
    if (require_f32(call, dy) != 0)
        return -1;
    int64_t rows = call->result->dims[0], C = call->result->dims[1];
    int64_t count = rows * C;
    double *acc = calloc((size_t)(count > 0 ? count : 1), sizeof(double));
    if (!acc)
        return rt_interp_fail(call, "out of memory allocating %lld accumulators", (long long)count);
    int64_t positions = rt_tensor_numel(ids);
    const float *pdy = dy->data;
    for (int64_t p = 0; p < positions; p++) {
        int64_t id = rt_interp_load_int(ids, p);
        if (id < 0 || id >= rows) {
            char where[128];
            free(acc);
            return rt_interp_fail(call, "id %lld at position %s is out of range [0, %lld)", (long long)id,
                                  rt_interp_index_str(ids->dims, ids->rank, p, where, sizeof where), (long long)rows);
        }
        for (int64_t c = 0; c < C; c++)
            acc[id * C + c] += pdy[p * C + c];
    }
    float *pdt = call->result->data;
    for (int64_t i = 0; i < count; i++)
        pdt[i] = (float)acc[i];
    free(acc);
    return 0;
}

/* grad.cross_entropy{ignore_index}(dloss, logits[..., V], targets[...]):
 * the loss is the mean over the N counted positions of
 * logsumexp(logits[p]) - logits[p, t_p], so
 *   dlogits[p, v] = dloss * (softmax(logits[p])[v] - [v == t_p]) / N
 * for a counted position and 0 for an ignored one. The softmax follows the
 * forward kernel (max in f32, exp and sum in double). A target outside
 * [0, V) other than ignore_index is an error naming the position. */
int rt_interp_grad_cross_entropy(const rt_interp_call *call)
{
    const rt_tensor *dloss = call->operands[0], *logits = call->operands[1], *targets = call->operands[2];
    if (require_f32(call, logits) != 0)
        return -1;
    int64_t ignore_index = ir_attr_int(call->value, "ignore_index");
    int64_t V = logits->dims[logits->rank - 1];
    int64_t positions = rt_tensor_numel(targets);
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
        counted++;
    }
    if (counted == 0)
        return 0; /* the loss is the constant 0, and the result stays zero-filled */

    double factor = (double)((const float *)dloss->data)[0] / (double)counted;
    for (int64_t p = 0; p < positions; p++) {
        int64_t target = rt_interp_load_int(targets, p);
        if (target == ignore_index)
            continue;
        const float *row = (const float *)logits->data + p * V;
        float *drow = (float *)call->result->data + p * V;
        float max = -INFINITY;
        for (int64_t v = 0; v < V; v++)
            if (row[v] > max)
                max = row[v];
        double sum = 0.0;
        for (int64_t v = 0; v < V; v++)
            sum += exp((double)row[v] - (double)max);
        for (int64_t v = 0; v < V; v++) {
            double prob = exp((double)row[v] - (double)max) / sum;
            drow[v] = (float)(factor * (prob - (v == target ? 1.0 : 0.0)));
        }
    }
    return 0;
}
