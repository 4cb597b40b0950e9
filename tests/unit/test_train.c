/* Tests of the training driver on a one-layer GPT-2 with 16 channels and a
 * 64-token vocabulary over a small repeated text. The loss falls, and a
 * resumed run repeats an uninterrupted one bit for bit. Damaged checkpoints
 * and non-finite values give clear errors, and the interpreter and the JIT
 * agree. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "runtime/llmc.h"
#include "runtime/safetensors.h"
#include "runtime/train_llmc.h"
#include "runtime/train.h"

static const fe_define tiny_defines[] = {
    {"n_layer", 1}, {"n_embd", 16}, {"n_head", 2}, {"n_vocab", 64}, {"n_ctx", 16},
};

static rt_train_config tiny_config(const rt_executor *executor, int steps)
{
    rt_train_config c = rt_train_default_config();
    c.model_path = "examples/tiny.qd";
    c.defines = tiny_defines;
    c.ndefines = (int)(sizeof tiny_defines / sizeof tiny_defines[0]);
    c.batch = 4;
    c.seq = 16;
    c.steps = steps;
    c.lr = 1e-2f;
    c.warmup = 2;
    c.min_lr_frac = 0.1f;
    c.seed = 7;
    c.threads = 2;
    c.executor = executor;
    c.eval_batches = 2;
    return c;
}

/* A text repeated until it has about 6000 tokens, one token per byte. */
static void make_data(rt_train_data *data)
{
    static const char text[] = "the quick brown fox jumps over the lazy dog. ";
    size_t len = sizeof text - 1, n = 6000;
    int32_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = (unsigned char)text[i % len] % 64;
    rt_train_data_init(data);
    rt_train_data_add(data, ids, n, 0.1, NULL);
}

static rt_trainer *new_trainer(const rt_train_config *c, rt_weights *initial, ir_diag *d)
{
    rt_trainer *t = rt_trainer_new(c, d);
    if (!t)
        return NULL;
    if (rt_trainer_init_weights(t, initial, d) != 0 || rt_trainer_prepare(t, d) != 0) {
        rt_trainer_free(t);
        return NULL;
    }
    return t;
}

/* Records losses and can raise the interrupt flag at one step. */
typedef struct loss_log {
    float losses[64];
    int count;
    int first_step;
    int interrupt_at;
    volatile sig_atomic_t flag;
} loss_log;

static void record_step(void *ctx, const rt_train_progress *p)
{
    loss_log *log = ctx;
    if (log->count == 0)
        log->first_step = p->step;
    log->losses[log->count++] = p->loss;
    if (p->step == log->interrupt_at)
        log->flag = 1;
}

static rt_train_status run_logged(rt_trainer *t, const rt_train_data *data, loss_log *log, char *saved,
                                  size_t cap, ir_diag *d)
{
    rt_train_hooks hooks = {record_step, log, &log->flag};
    return rt_trainer_run(t, data, &hooks, saved, cap, d);
}

/* Captures diagnostics in memory so tests can check messages. */
typedef struct captured {
    char *text;
    size_t size;
    FILE *stream;
    ir_diag *diag;
} captured;

static void capture_begin(captured *c)
{
    c->text = NULL;
    c->size = 0;
    c->stream = open_memstream(&c->text, &c->size);
    c->diag = ir_diag_new(c->stream);
}

static void capture_end(captured *c)
{
    ir_diag_free(c->diag);
    fclose(c->stream);
}

/* The held-out ids of the two texts in test_data_split_and_windows. */
static bool is_held_out(int32_t id)
{
    return (id >= 95 && id < 100) || (id >= 1030 && id < 1040);
}

static void test_data_split_and_windows(void)
{
    rt_train_data data;
    rt_train_data_init(&data);
    int32_t *a = malloc(100 * sizeof *a), *b = malloc(40 * sizeof *b);
    for (int i = 0; i < 100; i++)
        a[i] = i;
    for (int i = 0; i < 40; i++)
        b[i] = 1000 + i;
    CHECK_EQ_INT(rt_train_data_add(&data, a, 100, 0.05, NULL), 0);
    CHECK_EQ_INT(rt_train_data_add(&data, b, 40, 0.25, NULL), 0);
    CHECK_EQ_INT(rt_train_data_train_tokens(&data), 95 + 30);
    CHECK_EQ_INT(rt_train_data_val_tokens(&data), 5 + 10);
    CHECK_EQ_INT(rt_train_data_max_id(&data), 1039);

    /* Held-out windows of T + 1 = 4 tokens start 3 apart: one in a's 5
     * held-out tokens (95..99) and three in b's 10 (1030..1039). */
    CHECK_EQ_INT(rt_train_val_windows(&data, 3), 1 + 3);
    int32_t idx[2 * 3], targets[2 * 3];
    rt_train_val_batch(&data, 0, 2, 3, idx, targets);
    CHECK_EQ_INT(idx[0], 95);
    CHECK_EQ_INT(targets[2], 98);
    CHECK_EQ_INT(idx[3], 1030);
    rt_train_val_batch(&data, 2, 2, 3, idx, targets);
    CHECK_EQ_INT(idx[0], 95); /* window 4 wraps around to window 0 */

    /* Sampled windows are consecutive training tokens, never held out. */
    rt_rng rng;
    rt_rng_seed(&rng, 3, 0);
    bool all_consecutive = true, any_held_out = false;
    for (int trial = 0; trial < 200; trial++) {
        CHECK_EQ_INT(rt_train_sample_batch(&data, &rng, 2, 3, idx, targets, NULL), 0);
        for (int k = 0; k < 6; k++) {
            all_consecutive &= targets[k] == idx[k] + 1;
            any_held_out |= is_held_out(idx[k]);
            any_held_out |= is_held_out(targets[k]);
        }
    }
    CHECK(all_consecutive);
    CHECK(!any_held_out);
    rt_train_data_free(&data);
}

static void test_loss_decreases(const rt_executor *executor, int steps)
{
    ir_diag *d = ir_diag_new(stderr);
    rt_train_data data;
    make_data(&data);
    rt_train_config c = tiny_config(executor, steps);
    c.eval_every = steps;
    rt_trainer *t = new_trainer(&c, NULL, d);
    CHECK(t != NULL);
    if (t) {
        float before;
        CHECK_EQ_INT(rt_trainer_evaluate(t, &data, &before, d), 0);
        loss_log log = {.interrupt_at = -1};
        char saved[512];
        CHECK_EQ_INT(run_logged(t, &data, &log, saved, sizeof saved, d), RT_TRAIN_DONE);
        CHECK_EQ_INT(log.count, steps);
        float after;
        CHECK_EQ_INT(rt_trainer_evaluate(t, &data, &after, d), 0);
        float last = 0;
        for (int i = steps - 5; i < steps; i++)
            last += log.losses[i] / 5;
        printf("%s: training loss %.4f -> %.4f (mean of last 5), held-out %.4f -> %.4f\n", executor->name,
               log.losses[0], last, before, after);
        /* ln(64) = 4.16 at the start; the text has 27 distinct bytes and a
         * short period, so 30 steps must take off more than 1.5 nats. */
        CHECK(log.losses[0] > 3.5f);
        CHECK(last < log.losses[0] - 1.5f);
        CHECK(after < before - 1.5f);
    }
    rt_trainer_free(t);
    rt_train_data_free(&data);
    ir_diag_free(d);
}

static char *make_temp_dir(void)
{
    char pattern[] = "/tmp/quadc_train_XXXXXX";
    char *dir = mkdtemp(pattern);
    return dir ? strdup(dir) : NULL;
}

static void test_resume_bit_identical(const rt_executor *executor)
{
    ir_diag *d = ir_diag_new(stderr);
    rt_train_data data;
    make_data(&data);
    char *dir = make_temp_dir();
    char saved[512];

    rt_train_config c = tiny_config(executor, 6);
    rt_trainer *full = new_trainer(&c, NULL, d);
    loss_log full_log = {.interrupt_at = -1};
    CHECK_EQ_INT(run_logged(full, &data, &full_log, saved, sizeof saved, d), RT_TRAIN_DONE);

    /* Stop after step 3 the way SIGINT does: the flag makes the loop write
     * a checkpoint and return. */
    c.ckpt_dir = dir;
    rt_trainer *first = new_trainer(&c, NULL, d);
    loss_log first_log = {.interrupt_at = 3};
    CHECK_EQ_INT(run_logged(first, &data, &first_log, saved, sizeof saved, d), RT_TRAIN_INTERRUPTED);
    CHECK_EQ_INT(first_log.count, 3);
    char expected_path[512];
    rt_train_checkpoint_path(&c, 3, expected_path, sizeof expected_path);
    CHECK(strcmp(saved, expected_path) == 0);

    /* Resume from a config whose trajectory settings differ on purpose:
     * the checkpoint's values must win. */
    rt_train_config resumed_config = tiny_config(executor, 6);
    resumed_config.lr = 0.5f;
    resumed_config.seed = 99;
    rt_weights *ckpt = rt_train_checkpoint_read(saved, d);
    CHECK(ckpt != NULL);
    CHECK_EQ_INT(rt_train_checkpoint_apply_config(ckpt, saved, &resumed_config, d), 2);
    rt_trainer *second = new_trainer(&resumed_config, ckpt, d);
    CHECK(second != NULL);
    CHECK_EQ_INT(rt_trainer_restore(second, ckpt, saved, d), 0);
    rt_weights_free(ckpt);
    CHECK_EQ_INT(second->step, 3);
    loss_log second_log = {.interrupt_at = -1};
    CHECK_EQ_INT(run_logged(second, &data, &second_log, saved, sizeof saved, d), RT_TRAIN_DONE);
    CHECK_EQ_INT(second_log.count, 3);
    CHECK_EQ_INT(second_log.first_step, 4);

    for (int i = 0; i < 3; i++) {
        CHECK(memcmp(&first_log.losses[i], &full_log.losses[i], sizeof(float)) == 0);
        CHECK(memcmp(&second_log.losses[i], &full_log.losses[3 + i], sizeof(float)) == 0);
    }
    printf("%s resume: step 4..6 losses %.9g %.9g %.9g, uninterrupted %.9g %.9g %.9g\n", executor->name,
           second_log.losses[0], second_log.losses[1], second_log.losses[2], full_log.losses[3],
           full_log.losses[4], full_log.losses[5]);
    bool same_weights = full->params->count == second->params->count;
    for (int i = 0; same_weights && i < full->params->count; i++)
        same_weights = memcmp(full->params->tensors[i]->data, second->params->tensors[i]->data,
                              rt_tensor_nbytes(full->params->tensors[i])) == 0;
    CHECK(same_weights);

    rt_trainer_free(full);
    rt_trainer_free(first);
    rt_trainer_free(second);
    remove(expected_path);
    rmdir(dir);
    free(dir);
    rt_train_data_free(&data);
    ir_diag_free(d);
}

static void test_truncated_checkpoint(void)
{
    ir_diag *d = ir_diag_new(stderr);
    char *dir = make_temp_dir();
    rt_train_config c = tiny_config(rt_executor_interp(), 2);
    c.ckpt_dir = dir;
    rt_trainer *t = new_trainer(&c, NULL, d);
    char path[512];
    rt_train_checkpoint_path(&c, 0, path, sizeof path);
    CHECK_EQ_INT(rt_trainer_save_checkpoint(t, path, d), 0);

    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    CHECK_EQ_INT(truncate(path, size / 2), 0);

    captured out;
    capture_begin(&out);
    rt_weights *ckpt = rt_train_checkpoint_read(path, out.diag);
    capture_end(&out);
    CHECK(ckpt == NULL);
    CHECK(strstr(out.text, path) != NULL);
    CHECK(strstr(out.text, "cannot resume from this checkpoint") != NULL);
    printf("truncated checkpoint:\n%s", out.text);
    free(out.text);

    /* A safetensors file without the checkpoint metadata is rejected too. */
    rt_weights *plain = rt_weights_new();
    int64_t dims[1] = {2};
    rt_weights_set(plain, "x", rt_tensor_new(IR_F32, 1, dims));
    CHECK_EQ_INT(rt_safetensors_write(path, plain, d), 0);
    rt_weights_free(plain);
    capture_begin(&out);
    ckpt = rt_train_checkpoint_read(path, out.diag);
    capture_end(&out);
    CHECK(ckpt == NULL);
    CHECK(strstr(out.text, "not a quadc training checkpoint") != NULL);
    free(out.text);

    rt_trainer_free(t);
    remove(path);
    rmdir(dir);
    free(dir);
    ir_diag_free(d);
}

static void test_nan_weight_stops(void)
{
    rt_train_data data;
    make_data(&data);
    captured out;
    capture_begin(&out);
    rt_train_config c = tiny_config(rt_executor_interp(), 5);
    rt_trainer *t = new_trainer(&c, NULL, out.diag);
    CHECK(t != NULL);
    rt_tensor *ln = rt_weights_get(t->params, "h.0.ln_2.bias");
    ((float *)ln->data)[3] = NAN;
    rt_train_step_result r;
    CHECK_EQ_INT(rt_trainer_step(t, &data, &r, out.diag), 1);
    CHECK_EQ_INT(t->step, 0);
    capture_end(&out);
    CHECK(strstr(out.text, "step 1:") != NULL);
    CHECK(strstr(out.text, "'h.0.ln_2.bias'") != NULL);
    printf("NaN weight: %s", out.text);
    free(out.text);
    rt_trainer_free(t);
    rt_train_data_free(&data);
}

/* sqrt has an infinite derivative at 0, so with w = 0 the loss is finite
 * and the gradient is not. */
static void test_infinite_gradient_stops(void)
{
    static const char model[] = "hparam B = 2;\nhparam T = 4;\n"
                                "input idx : i32[B, T];\ninput targets : i32[B, T];\n"
                                "param w : f32[4] = zeros;\n"
                                "loss = reduce_sum(sqrt(w), axes=[0]);\noutput loss;\n";
    char *dir = make_temp_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/sqrt.qd", dir);
    FILE *f = fopen(path, "w");
    fputs(model, f);
    fclose(f);

    rt_train_data data;
    make_data(&data);
    captured out;
    capture_begin(&out);
    rt_train_config c = tiny_config(rt_executor_interp(), 3);
    c.model_path = path;
    c.defines = NULL;
    c.ndefines = 0;
    c.batch = 2;
    c.seq = 4;
    rt_trainer *t = new_trainer(&c, NULL, out.diag);
    CHECK(t != NULL);
    rt_train_step_result r;
    if (t)
        CHECK_EQ_INT(rt_trainer_step(t, &data, &r, out.diag), 1);
    capture_end(&out);
    CHECK(strstr(out.text, "step 1: the gradient of 'w' contains a non-finite value") != NULL);
    printf("infinite gradient: %s", out.text);
    free(out.text);
    rt_trainer_free(t);
    rt_train_data_free(&data);
    remove(path);
    rmdir(dir);
    free(dir);
}

static void test_huge_lr_stops(void)
{
    rt_train_data data;
    make_data(&data);
    captured out;
    capture_begin(&out);
    rt_train_config c = tiny_config(rt_executor_interp(), 10);
    c.lr = 1e38f;
    c.warmup = 0;
    rt_trainer *t = new_trainer(&c, NULL, out.diag);
    loss_log log = {.interrupt_at = -1};
    char saved[512];
    rt_train_status status = run_logged(t, &data, &log, saved, sizeof saved, out.diag);
    capture_end(&out);
    CHECK_EQ_INT(status, RT_TRAIN_NONFINITE);
    CHECK(log.count < 10);
    char expected[32];
    snprintf(expected, sizeof expected, "step %d:", log.count + 1);
    CHECK(strstr(out.text, expected) != NULL);
    CHECK(strstr(out.text, "non-finite") != NULL);
    printf("huge lr: %s", out.text);
    free(out.text);
    rt_trainer_free(t);
    rt_train_data_free(&data);
}

static void test_executors_agree(void)
{
    ir_diag *d = ir_diag_new(stderr);
    rt_train_data data;
    make_data(&data);
    loss_log logs[2] = {{.interrupt_at = -1}, {.interrupt_at = -1}};
    const rt_executor *executors[2] = {rt_executor_interp(), rt_executor_jit()};
    char saved[512];
    for (int e = 0; e < 2; e++) {
        rt_train_config c = tiny_config(executors[e], 4);
        rt_trainer *t = new_trainer(&c, NULL, d);
        CHECK(t != NULL);
        if (t)
            CHECK_EQ_INT(run_logged(t, &data, &logs[e], saved, sizeof saved, d), RT_TRAIN_DONE);
        rt_trainer_free(t);
    }
    for (int i = 0; i < 4; i++) {
        printf("step %d: interp %.7f jit %.7f\n", i + 1, logs[0].losses[i], logs[1].losses[i]);
        CHECK_CLOSE(logs[1].losses[i], logs[0].losses[i], 1e-4, 1e-4);
    }
    rt_train_data_free(&data);
    ir_diag_free(d);
}

static void test_memory_estimate(void)
{
    ir_diag *d = ir_diag_new(stderr);
    rt_train_config c = tiny_config(rt_executor_interp(), 1);
    rt_trainer *t = rt_trainer_new(&c, d);
    CHECK(t != NULL);
    if (t) {
        rt_train_memory m;
        rt_trainer_memory(t, &m);
        /* wte 64*16 + wpe 16*16 + one layer 12*16^2 + 13*16 + ln_f 2*16. */
        int64_t expected = 64 * 16 + 16 * 16 + 12 * 16 * 16 + 13 * 16 + 2 * 16;
        CHECK_EQ_INT(m.param_count, expected);
        CHECK_EQ_INT(m.param_bytes, 4 * expected);
        CHECK_EQ_INT(m.optimizer_bytes, 8 * expected);
        CHECK(m.graph.peak_live_bytes > 0);
        CHECK(m.graph.peak_live_bytes <= m.graph.intermediate_bytes);
    }
    rt_trainer_free(t);
    ir_diag_free(d);
}

static bool same_tensor(const rt_tensor *a, const rt_tensor *b)
{
    return a && b && rt_tensor_nbytes(a) == rt_tensor_nbytes(b) &&
           memcmp(a->data, b->data, rt_tensor_nbytes(a)) == 0;
}

/* Weights written as an llm.c checkpoint load back unchanged, and the
 * debug state contains the batch, loss and gradients of the training graph. */
static void test_llmc_checkpoint_and_state(void)
{
    ir_diag *d = ir_diag_new(stderr);
    rt_train_data data;
    make_data(&data);
    char *dir = make_temp_dir();
    char checkpoint[512], state_path[512];
    snprintf(checkpoint, sizeof checkpoint, "%s/model.bin", dir);
    snprintf(state_path, sizeof state_path, "%s/state.bin", dir);

    rt_train_config c = tiny_config(rt_executor_interp(), 1);
    rt_trainer *t = new_trainer(&c, NULL, d);
    CHECK(t != NULL);
    rt_llmc_config config;
    CHECK_EQ_INT(rt_llmc_infer_config(t->params, 2, &config, d, NULL), 0);
    CHECK_EQ_INT(rt_llmc_write_checkpoint(checkpoint, t->params, &config, d), 0);
    rt_weights *loaded = rt_train_load_weights(checkpoint, d);
    CHECK(loaded != NULL);
    for (int i = 0; loaded && i < t->params->count; i++)
        CHECK(same_tensor(rt_weights_get(loaded, t->params->names[i]), t->params->tensors[i]));
    rt_weights_free(loaded);

    CHECK_EQ_INT(rt_trainer_export_llmc_state(t, &data, state_path, d), 0);
    rt_llmc_debug_state state;
    CHECK_EQ_INT(rt_llmc_read_debug_state(state_path, &config, &state, d), 0);
    CHECK_EQ_INT(state.batch_size, c.batch);
    CHECK_EQ_INT(state.seq_len, c.seq);
    CHECK_EQ_INT(state.inputs[5], data.train[0].ids[5]);
    CHECK_EQ_INT(state.targets[5], data.train[0].ids[6]);

    int noutputs = t->train_graph->noutputs;
    rt_tensor **outputs = calloc((size_t)noutputs, sizeof *outputs);
    CHECK_EQ_INT(rt_trainer_forward_backward(t, data.train[0].ids, data.train[0].ids + 1, outputs, d), 0);
    float loss = *(const float *)outputs[t->loss_output]->data;
    CHECK(memcmp(&state.loss, &loss, sizeof loss) == 0);
    for (int i = 0; i < t->params->count; i++)
        CHECK(same_tensor(rt_weights_get(state.grads, t->params->names[i]), outputs[t->grad_output[i]]));
    for (int i = 0; i < noutputs; i++)
        rt_tensor_free(outputs[i]);
    free(outputs);
    rt_llmc_debug_state_free(&state);

    rt_trainer_free(t);
    remove(checkpoint);
    remove(state_path);
    rmdir(dir);
    free(dir);
    rt_train_data_free(&data);
    ir_diag_free(d);
}

int main(void)
{
    test_data_split_and_windows();
    test_memory_estimate();
    test_loss_decreases(rt_executor_interp(), 30);
    test_resume_bit_identical(rt_executor_interp());
    test_truncated_checkpoint();
    test_nan_weight_stops();
    test_huge_lr_stops();
    test_infinite_gradient_stops();
    test_llmc_checkpoint_and_state();
    test_executors_agree();
    test_loss_decreases(rt_executor_jit(), 30);
    test_resume_bit_identical(rt_executor_jit());
    return check_finish();
}
