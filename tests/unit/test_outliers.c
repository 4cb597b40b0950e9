/* Tests for runtime/outliers on a tiny random GPT-2: examples/gpt2.qd with
 * 2 layers, 32 channels, 2 heads and a 256-token vocabulary whose tokens
 * are the bytes of an English text. Its layernorm gains are 20 times
 * larger in every 8th channel, the per-channel outliers the tool is for.
 * The tests check that:
 *   - the weights load from a safetensors file with every fq.act site of
 *     the linear layers and the LM head;
 *   - each site's per-channel maxima, measured with the JIT, match those
 *     computed from the interpreter's values of the float graph, and its
 *     max, median and top channels match a direct computation;
 *   - the first site, the input of h.0's c_attn, matches a layernorm of
 *     the embeddings computed here in plain C;
 *   - a file with a tensor of the wrong shape is rejected. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "fixtures.h"
#include "runtime/interp.h"
#include "runtime/outliers.h"
#include "runtime/safetensors.h"

#define SEQ 16
#define NSEQS 3
#define C 32
#define TOP 3

static const char *text =
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light.";

static const fe_define defines[] = {{"n_layer", 2}, {"n_embd", C}, {"n_head", 2}, {"n_vocab", 256}, {"n_ctx", 64}};
#define NDEFINES 5

static fx_rng rng = {FX_RNG_LCG, 0x2545f4914f6cdd1dull};

static int32_t tokens[512];
static const int32_t *seqs[NSEQS];

static void make_sequences(void)
{
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i++)
        tokens[i] = (unsigned char)text[i];
    for (int s = 0; s < NSEQS; s++)
        seqs[s] = tokens + (size_t)s * 41;
}

/* The inputs of one sequence, as rt_outliers_measure builds them. */
typedef struct seq_inputs {
    char *names[2];
    rt_tensor *tensors[2];
    rt_weights set;
} seq_inputs;

static void make_inputs(seq_inputs *in, const int32_t *seq)
{
    int64_t dims[2] = {1, SEQ};
    in->names[0] = (char *)"idx";
    in->names[1] = (char *)"targets";
    in->tensors[0] = rt_tensor_new(IR_I32, 2, dims);
    in->tensors[1] = rt_tensor_new(IR_I32, 2, dims);
    memcpy(in->tensors[0]->data, seq, SEQ * sizeof(int32_t));
    memcpy(in->tensors[1]->data, seq + 1, SEQ * sizeof(int32_t));
    in->set = rt_weights_borrow(in->names, in->tensors, 2);
}

static void free_inputs(seq_inputs *in)
{
    rt_tensor_free(in->tensors[0]);
    rt_tensor_free(in->tensors[1]);
}

/* Computes the per-channel max |x| of every site input with the
 * interpreter on the float graph, into ref[site][channel]. */
static void reference_maxima(const ir_graph *fp, const ir_graph *q, const rt_weights *w, double **ref, int nsites,
                             ir_diag *d)
{
    int site = 0;
    int *ids = calloc((size_t)nsites, sizeof *ids);
    for (int id = 0; id < q->nvalues && site < nsites; id++)
        if (q->values[id]->op == IR_OP_FQ_ACT)
            ids[site++] = ir_find(fp, q->values[q->values[id]->ops[0]]->name);
    for (int s = 0; s < NSEQS; s++) {
        seq_inputs in;
        make_inputs(&in, seqs[s]);
        rt_tensor **values = NULL;
        CHECK_EQ_INT(rt_interp_run_all(fp, w, &in.set, &values, d), 0);
        for (int k = 0; values && k < nsites; k++) {
            CHECK(ids[k] >= 0);
            const rt_tensor *t = ids[k] >= 0 ? values[ids[k]] : NULL;
            if (!t)
                continue;
            int64_t channels = t->dims[t->rank - 1];
            const float *x = t->data;
            for (int64_t i = 0; i < rt_tensor_numel(t); i++)
                ref[k][i % channels] = fmax(ref[k][i % channels], fabs(x[i]));
        }
        if (values)
            rt_interp_free_values(values, fp->nvalues);
        free_inputs(&in);
    }
    free(ids);
}

/* The input of h.0's c_attn computed here: layernorm (eps 1e-5) of the
 * token plus position embeddings, times ln_1's gain plus its bias. */
static void direct_first_site(const rt_weights *w, double *out)
{
    const float *wte = rt_weights_get(w, "wte.weight")->data, *wpe = rt_weights_get(w, "wpe.weight")->data;
    const float *gain = rt_weights_get(w, "h.0.ln_1.weight")->data, *bias = rt_weights_get(w, "h.0.ln_1.bias")->data;
    for (int s = 0; s < NSEQS; s++)
        for (int t = 0; t < SEQ; t++) {
            double x[C], mean = 0, var = 0;
            for (int c = 0; c < C; c++) {
                x[c] = (double)wte[seqs[s][t] * C + c] + (double)wpe[t * C + c];
                mean += x[c] / C;
            }
            for (int c = 0; c < C; c++)
                var += (x[c] - mean) * (x[c] - mean) / C;
            for (int c = 0; c < C; c++) {
                double y = (x[c] - mean) / sqrt(var + 1e-5) * gain[c] + bias[c];
                out[c] = fmax(out[c], fabs(y));
            }
        }
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Checks max, median and the top channels of a site against values
 * computed here from its per-channel maxima. */
static void check_summary(const rt_outlier_site *s)
{
    int64_t n = s->channels;
    double *sorted = malloc(sizeof *sorted * (size_t)n);
    memcpy(sorted, s->max_abs, sizeof *sorted * (size_t)n);
    qsort(sorted, (size_t)n, sizeof *sorted, compare_doubles);
    CHECK_CLOSE(s->max, sorted[n - 1], 0, 0);
    double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    CHECK_CLOSE(s->median, median, 0, 0);
    CHECK_EQ_INT(s->ntop, TOP);
    for (int k = 0; k < s->ntop && k < TOP; k++)
        CHECK_CLOSE(s->max_abs[s->top[k]], sorted[n - 1 - k], 0, 0);
    CHECK_CLOSE(rt_outlier_ratio(s), sorted[n - 1] / median, 0, 1e-12);
    free(sorted);
}

static void test_measure(ir_diag *d)
{
    ir_graph *fp = fx_compile_gpt2(defines, NDEFINES, 1, SEQ, d);
    CHECK(fp != NULL);
    if (!fp)
        return;
    rt_weights *w = fx_outlier_gpt2_weights(&rng, fp);
    char path[] = "/tmp/quadc_outliers_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_EQ_INT(rt_safetensors_write(path, w, d), 0);

    rt_outliers_model m;
    CHECK_EQ_INT(rt_outliers_load_model("examples/gpt2.qd", defines, NDEFINES, path, SEQ, &m, d), 0);
    unlink(path);
    if (!m.graph) {
        rt_weights_free(w);
        ir_graph_free(fp);
        return;
    }
    rt_outliers o;
    CHECK_EQ_INT(rt_outliers_measure(m.graph, m.weights, seqs, NSEQS, SEQ, rt_executor_jit(), 1, TOP, &o, d), 0);
    /* Four linears per block and the LM head. */
    CHECK_EQ_INT(o.nsites, 2 * 4 + 1);
    if (o.nsites == 9) {
        CHECK(strcmp(o.sites[0].name, "h.0.attn.c_attn.input") == 0);
        CHECK_EQ_INT(o.sites[0].channels, C);
        CHECK(strcmp(o.sites[3].name, "h.0.mlp.c_proj.input") == 0);
        CHECK_EQ_INT(o.sites[3].channels, 4 * C);
        CHECK(strcmp(o.sites[8].name, "logits.input") == 0);
    }

    double **ref = calloc((size_t)o.nsites, sizeof *ref);
    for (int k = 0; k < o.nsites; k++)
        ref[k] = calloc((size_t)o.sites[k].channels, sizeof **ref);
    reference_maxima(fp, m.graph, w, ref, o.nsites, d);
    for (int k = 0; k < o.nsites; k++) {
        const rt_outlier_site *s = &o.sites[k];
        for (int64_t c = 0; c < s->channels; c++)
            CHECK_CLOSE(s->max_abs[c], ref[k][c], 1e-5, 1e-4);
        check_summary(s);
    }

    /* The gains put the largest maxima of the layernorm outputs in the
     * channels 3, 11, 19 and 27. */
    double direct[C] = {0};
    direct_first_site(w, direct);
    for (int c = 0; c < C && o.nsites > 0; c++)
        CHECK_CLOSE(o.sites[0].max_abs[c], direct[c], 1e-5, 1e-4);
    if (o.nsites > 0)
        for (int k = 0; k < TOP; k++)
            CHECK_EQ_INT(o.sites[0].top[k] % 8, 3);
    if (o.nsites > 0)
        CHECK(rt_outlier_ratio(&o.sites[0]) > 5);

    for (int k = 0; k < o.nsites; k++)
        free(ref[k]);
    free(ref);
    rt_outliers_free(&o);
    rt_outliers_model_free(&m);
    rt_weights_free(w);
    ir_graph_free(fp);
}

static void test_rejects_wrong_shape(ir_diag *d)
{
    ir_graph *fp = fx_compile_gpt2(defines, NDEFINES, 1, SEQ, d);
    if (!fp)
        return;
    rt_weights *w = fx_outlier_gpt2_weights(&rng, fp);
    int64_t dims[1] = {C + 1};
    rt_weights_set(w, "h.1.ln_2.bias", rt_tensor_new(IR_F32, 1, dims));
    char path[] = "/tmp/quadc_outliers_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK_EQ_INT(rt_safetensors_write(path, w, d), 0);
    rt_outliers_model m;
    int errors = ir_diag_error_count(d);
    CHECK_EQ_INT(rt_outliers_load_model("examples/gpt2.qd", defines, NDEFINES, path, SEQ, &m, d), -1);
    CHECK(m.graph == NULL);
    CHECK_EQ_INT(ir_diag_error_count(d), errors + 1);
    unlink(path);
    rt_weights_free(w);
    ir_graph_free(fp);
}

static void test_median_and_ratio(void)
{
    double odd[3] = {5, 1, 3}, even[4] = {4, 1, 3, 2};
    CHECK_CLOSE(rt_outliers_median(odd, 3), 3, 0, 0);
    CHECK_CLOSE(rt_outliers_median(even, 4), 2.5, 0, 0);
    CHECK_CLOSE(rt_outliers_median(odd, 0), 0, 0, 0);
    CHECK_CLOSE(odd[0], 5, 0, 0); /* unchanged */

    rt_outlier_site s = {.max = 6, .median = 2};
    CHECK_CLOSE(rt_outlier_ratio(&s), 3, 0, 0);
    s.median = 0;
    CHECK(isinf(rt_outlier_ratio(&s)));
    s.max = 0;
    CHECK_CLOSE(rt_outlier_ratio(&s), 1, 0, 0);
}

int main(void)
{
    make_sequences();
    ir_diag *d = ir_diag_new(stderr);
    test_median_and_ratio();
    test_measure(d);
    fprintf(stderr, "expected error follows:\n");
    test_rejects_wrong_shape(d);
    ir_diag_free(d);
    return check_finish();
}
