/* The in-process stages of `quadc run`: the float model's perplexity, the
 * PTQ baseline and Quadapter, each with its fake-quant perplexity. Every
 * model is evaluated through a model session (runtime/model.h) with the
 * sliding window of quadc eval. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "driver/progress.h"
#include "driver/run.h"
#include "passes/manager.h"
#include "runtime/evaluate.h"
#include "runtime/model.h"
#include "runtime/safetensors.h"
#include "runtime/train_llmc.h"

/* Subdirectories of --print-ir-dir, one per stage that runs passes. */
#define IR_DIR_FP32 "1-fp32"
#define IR_DIR_PTQ "2-ptq"
#define IR_DIR_QUADAPTER "3-quadapter"

char *run_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *path = malloc(n);
    if (path)
        snprintf(path, n, "%s/%s", dir, name);
    return path;
}

/* ---- evaluation of a session ---- */

typedef struct session_eval {
    rt_model *model;
    int window;
    driver_progress progress;
} session_eval;

static int session_logits(void *ctx, const int32_t *tokens, int T, float *logits, ir_diag *d)
{
    session_eval *e = ctx;
    return rt_model_forward(e->model, e->window, tokens, T, logits, d);
}

static void count_token(void *ctx, size_t position, int32_t token, double nll)
{
    /* Positions 1 .. n - 1 are scored, so the position counts them. */
    session_eval *e = ctx;
    driver_progress_update(&e->progress, (long long)position, NULL);
}

/* Measures the perplexity of session m on every evaluation text into
 * s->scores[model]. */
static int evaluate_session(run_state *s, rt_model *m, run_model model, const char *label)
{
    s->scores[model] = calloc((size_t)s->ntexts, sizeof *s->scores[model]);
    if (!s->scores[model])
        return -1;
    /* Compile now, so that the throughput does not include the compile. */
    if (rt_model_prepare(m, s->window, s->d) != 0)
        return -1;
    for (int i = 0; i < s->ntexts; i++) {
        const run_text *t = &s->texts[i];
        session_eval e = {.model = m, .window = s->window};
        char title[160];
        snprintf(title, sizeof title, "%s perplexity of %s", label, t->path);
        /* Every token after the first is scored once, because the stride
         * is less than the window. */
        driver_progress_start(&e.progress, title, (long long)t->n - 1);
        rt_eval_result r;
        if (rt_eval_perplexity_traced(t->ids, t->n, s->window, s->stride, s->vocab, session_logits, &e, count_token,
                                      &e, &r, s->d) != 0) {
            driver_progress_abort(&e.progress);
            return -1;
        }
        s->scores[model][i] = (run_score){true, r.tokens_scored, r.mean_nll, r.perplexity, r.seconds};
        char summary[128];
        snprintf(summary, sizeof summary, "%.3f over %zu tokens, %.1f tokens/s", r.perplexity, r.tokens_scored,
                 r.tokens_per_second);
        driver_progress_finish(&e.progress, summary);
    }
    return 0;
}

/* ---- FP32 ---- */

/* Checks what the evaluation needs from the float session: a full-sequence
 * model, and texts and sequences that fit its window. Sets the window. */
static int check_session(run_state *s, rt_model *m)
{
    const run_args *a = s->a;
    if (rt_model_has_cache(m)) {
        ir_diag_file_error(s->d, a->model, "quadc run needs a full-sequence model such as examples/gpt2.qd, but "
                           "this model writes a key-value cache");
        return -1;
    }
    s->window = rt_model_context_length(m);
    s->stride = (s->window + 1) / 2;
    s->vocab = rt_model_vocab_size(m);
    if (s->window < 2) {
        ir_diag_file_error(s->d, a->model, "the context length %d is too short; evaluation needs at least 2",
                           s->window);
        return -1;
    }
    if (a->seq > s->window) {
        ir_diag_file_error(s->d, a->model, "--seq %d is longer than the model's context length %d; give --seq %d or "
                           "less", a->seq, s->window, s->window);
        return -1;
    }
    if (a->max_eval_tokens > 0 && a->max_eval_tokens < s->window) {
        ir_diag_file_error(s->d, NULL, "--max-eval-tokens %lld is less than one evaluation window of %d tokens (the "
                           "model's context length); give %d or more", a->max_eval_tokens, s->window, s->window);
        return -1;
    }
    int rc = 0;
    for (int i = 0; i < s->ntexts; i++)
        if (s->texts[i].n < (size_t)s->window) {
            ir_diag_file_error(s->d, s->texts[i].path, "the text has %zu tokens, fewer than one evaluation window "
                               "of %d tokens (the model's context length); give a longer text", s->texts[i].n,
                               s->window);
            rc = -1;
        }
    return rc;
}

/* Compiles the model with B = 1 and T = the window on top of the run's
 * defines, as the sessions do. */
static ir_graph *compile_window_graph(const run_state *s)
{
    fe_define *defines = calloc((size_t)s->ndefines + 2, sizeof *defines);
    if (!defines)
        return NULL;
    memcpy(defines, s->defines, sizeof *defines * (size_t)s->ndefines);
    defines[s->ndefines] = (fe_define){"B", 1};
    defines[s->ndefines + 1] = (fe_define){"T", s->window};
    ir_graph *g = fe_compile_file(s->a->model, defines, s->ndefines + 2, s->d);
    free(defines);
    return g;
}

/* Writes the graph that the float sessions run to dir/00-input.qir. */
static int dump_float_ir(run_state *s, const char *dir)
{
    ir_graph *g = compile_window_graph(s);
    if (!g)
        return -1;
    /* The float sessions run no pass, so the empty pipeline writes only
     * the input, 00-input.qir. */
    pass_pipeline none = {0};
    pass_dump_options dump = {.print_dir = dir};
    pass_manager *pm = pass_manager_new(s->d);
    int rc = pm && pass_manager_add_standard_instruments(pm, &dump) == 0 ? pass_manager_run(pm, &none, g) : -1;
    pass_manager_free(pm);
    ir_graph_free(g);
    return rc;
}

int run_stage_fp32(run_state *s)
{
    const run_args *a = s->a;
    rt_model_options o = {0};
    o.model_path = a->model;
    o.weights_path = a->weights;
    o.weights = s->float_weights;
    s->float_weights = NULL; /* the session owns them now, also when opening fails */
    o.defines = s->defines;
    o.ndefines = s->ndefines;
    o.engine = RT_MODEL_JIT;
    o.threads = a->threads;
    rt_model *m = rt_model_open(&o, s->d);
    if (!m)
        return -1;
    int rc = check_session(s, m);
    if (rc == 0 && a->print_ir_dir) {
        char *dir = run_path(a->print_ir_dir, IR_DIR_FP32);
        rc = dir ? dump_float_ir(s, dir) : -1;
        free(dir);
    }
    if (rc == 0)
        rc = evaluate_session(s, m, RUN_FP32, "FP32");
    rt_model_free(m);
    return rc;
}

/* ---- PTQ and Quadapter ---- */

/* The progress of the training phases: one bar per phase 1 block and one
 * for phase 2. */
typedef struct training_progress {
    driver_progress bar;
    bool active;
} training_progress;

static void on_training_step(void *ctx, const char *phase, int block, int step, int steps, double loss)
{
    training_progress *t = ctx;
    char label[64], detail[48];
    if (step == 1) {
        if (block >= 0)
            snprintf(label, sizeof label, "%s block %d", phase, block);
        else
            snprintf(label, sizeof label, "%s", phase);
        driver_progress_start(&t->bar, label, steps);
        t->active = true;
    }
    snprintf(detail, sizeof detail, "loss %.6g", loss);
    driver_progress_update(&t->bar, step, detail);
    if (step == steps) {
        driver_progress_finish(&t->bar, detail);
        t->active = false;
    }
}

/* Sets the metadata that quadc quantize writes, so that quadc quantize
 * --eval and quadc build read the file as one of its own. */
static int set_run_metadata(run_state *s, rt_quantized_model *m, const rt_quantize_config *c)
{
    const run_args *a = s->a;
    char calib_seqs[32], seq[32], phase1[32], phase2[32], lr[32];
    snprintf(calib_seqs, sizeof calib_seqs, "%d", a->calib_seqs);
    snprintf(seq, sizeof seq, "%d", a->seq);
    snprintf(phase1, sizeof phase1, "%d", a->phase1_steps);
    snprintf(phase2, sizeof phase2, "%d", a->phase2_steps);
    snprintf(lr, sizeof lr, "%.9g", (double)a->lr);
    const char *entries[][2] = {{"quadc.quantize.calib_seqs", calib_seqs},
                                {"quadc.quantize.seq", seq},
                                {"quadc.quantize.phase1_steps", phase1},
                                {"quadc.quantize.phase2_steps", phase2},
                                {"quadc.quantize.lr", lr}};
    if (rt_quantize_set_metadata(m, c, s->d) != 0)
        return -1;
    for (size_t k = 0; k < sizeof entries / sizeof entries[0]; k++)
        if (rt_weights_set_meta(m->weights, entries[k][0], entries[k][1]) != 0) {
            ir_diag_file_error(s->d, NULL, "out of memory for the output metadata");
            return -1;
        }
    return 0;
}

/* Runs rt_quantize_run with `method` on freshly read float weights and
 * sets the output's metadata. ir_subdir names the --print-ir-dir
 * subdirectory. */
static int quantize(run_state *s, rt_quantize_method method, const char *ir_subdir, rt_quantized_model *out,
                    rt_quantize_report *report)
{
    const run_args *a = s->a;
    rt_weights *w = rt_train_load_weights(a->weights, s->d);
    if (!w)
        return -1;
    training_progress progress = {0};
    rt_quantize_config c = rt_quantize_default_config();
    c.model_path = a->model;
    c.weights_path = a->weights;
    c.defines = s->defines;
    c.ndefines = s->ndefines;
    c.method = method;
    c.bits = a->bits;
    c.seq = a->seq;
    c.phase1_steps = a->phase1_steps;
    c.phase2_steps = a->phase2_steps;
    c.lr = a->lr;
    c.seed = a->seed;
    c.threads = a->threads;
    c.on_step = on_training_step;
    c.ctx = &progress;
    char *ir_dir = a->print_ir_dir ? run_path(a->print_ir_dir, ir_subdir) : NULL;
    c.print_ir_dir = ir_dir;
    fprintf(stderr, "calibrating the %s ranges (%s) on %d sequences of %d tokens from %s\n",
            rt_quantize_method_name(method), a->bits, a->calib_seqs, a->seq, a->calib);
    int rc = rt_quantize_run(&c, w, s->calib_seqs, a->calib_seqs, out, report, s->d);
    if (progress.active)
        driver_progress_abort(&progress.bar);
    if (rc == 0)
        rc = set_run_metadata(s, out, &c);
    free(ir_dir);
    return rc;
}

/* Opens a session on the quantized weights, which it takes over, and
 * measures their fake-quant perplexity. */
static int evaluate_quantized(run_state *s, rt_quantized_model *q, const char *name, run_model model,
                              const char *label)
{
    rt_model_options o = {0};
    o.model_path = s->a->model;
    o.weights_path = name;
    o.weights = q->weights;
    q->weights = NULL;
    o.defines = s->defines;
    o.ndefines = s->ndefines;
    o.engine = RT_MODEL_JIT;
    o.threads = s->a->threads;
    rt_model *m = rt_model_open(&o, s->d);
    if (!m)
        return -1;
    int rc = evaluate_session(s, m, model, label);
    rt_model_free(m);
    return rc;
}

int run_stage_ptq(run_state *s)
{
    rt_quantized_model q = {0};
    rt_quantize_report r = {0};
    int rc = quantize(s, RT_QUANTIZE_PTQ, IR_DIR_PTQ, &q, &r);
    if (rc == 0) {
        s->calib_loss[0] = r.fp_loss;
        s->calib_loss[1] = r.final_loss;
        fprintf(stderr, "LM loss on the calibration sequences: float %.6f, PTQ %.6f\n", r.fp_loss, r.final_loss);
        rc = evaluate_quantized(s, &q, "the PTQ model", RUN_PTQ, "PTQ");
    }
    rt_quantized_model_free(&q);
    rt_quantize_report_free(&r);
    return rc;
}

int run_stage_quadapter(run_state *s)
{
    rt_quantized_model q = {0};
    rt_quantize_report r = {0};
    int rc = quantize(s, RT_QUANTIZE_QUADAPTER, IR_DIR_QUADAPTER, &q, &r);
    if (rc == 0) {
        s->calib_loss[2] = r.final_loss;
        s->quadapter_loss_before = r.train_loss_before;
        s->quadapter_loss_after = r.train_loss_after;
        s->nblocks = r.nblocks;
        s->block_loss_before = r.block_loss_before;
        s->block_loss_after = r.block_loss_after;
        r.block_loss_before = r.block_loss_after = NULL;
        fprintf(stderr, "LM loss on the calibration sequences: Quadapter %.6f (phase 2 from %.6f to %.6f)\n",
                r.final_loss, r.train_loss_before, r.train_loss_after);
        rc = rt_safetensors_write(s->quantized_path, q.weights, s->d);
    }
    if (rc == 0) {
        struct stat st;
        s->quantized_bytes = stat(s->quantized_path, &st) == 0 ? (long long)st.st_size : -1;
        fprintf(stderr, "wrote the quantized model %s\n", s->quantized_path);
        rc = evaluate_quantized(s, &q, s->quantized_path, RUN_QUADAPTER, "Quadapter");
    }
    rt_quantized_model_free(&q);
    rt_quantize_report_free(&r);
    return rc;
}
