/* `quadc train`: trains a model file on text files with AdamW, with
 * held-out evaluation, checkpoints and exact resume, and reports memory
 * (--stats) or writes llm.c's debug state (--export-llmc-state). The work
 * is in runtime/train*.c, and this file parses options, loads the data and
 * prints progress. */
#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver/driver.h"
#include "runtime/dataset.h"
#include "runtime/llmc.h"
#include "runtime/model.h"
#include "runtime/quantize_run.h"
#include "runtime/safetensors.h"
#include "runtime/train.h"
#include "runtime/train_llmc.h"

#define CMD "train"
#define MAX_DEFINES 64
#define MAX_TEXTS 64

typedef struct train_args {
    rt_train_config config;
    fe_define defines[MAX_DEFINES];
    /* The -D defines plus the hparams of --weights, with owned names. */
    fe_define *weight_defines;
    int nweight_defines;
    const char *texts[MAX_TEXTS];
    int ntexts;
    char *data_list;          /* owned copy of --data, split in place */
    const char *data_text;    /* --data as given */
    char data_description[4096];
    const char *weights;      /* --weights */
    const char *resume;       /* checkpoint path, or "" for the latest in ckpt_dir */
    const char *out;
    const char *export_llmc;
    const char *tokenizer_dir;
    const char *cache_dir;
    double val_frac;
    bool stats;
    bool help;
} train_args;

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: quadc train MODEL.qd --data TEXT[,TEXT...] [options]\n"
            "\n"
            "Trains the params of a model file with AdamW on the token windows of UTF-8\n"
            "text files, tokenized with GPT-2's BPE. The last --val-frac of each text is\n"
            "held out for evaluation.\n"
            "\n"
            "Model and data:\n"
            "  -D name=value          set a hyperparameter of the model file; repeatable\n"
            "  --data FILES           comma-separated text files (required)\n"
            "  --weights FILE         initial weights: safetensors, or an llm.c .bin checkpoint;\n"
            "                         their hyperparameters apply to the model; without it\n"
            "                         params are drawn from their init with --seed\n"
            "  --batch B              sequences per step (default 4)\n"
            "  --seq T                tokens per sequence (default 64)\n"
            "  --val-frac F           held-out fraction of each text (default 0.05)\n"
            "  --tokenizer DIR        directory of encoder.json and vocab.bpe\n"
            "                         (default: data/tokenizer of the source tree)\n"
            "  --cache-dir DIR        token cache (default: $XDG_CACHE_HOME/quadc or ~/.cache/quadc)\n"
            "\n"
            "Optimization:\n"
            "  --steps N              train until step N (default 100)\n"
            "  --lr X                 peak learning rate (default 6e-4)\n"
            "  --warmup N             steps of linear warmup (default 0)\n"
            "  --min-lr-frac F        cosine decay floor as a fraction of --lr (default 0.1)\n"
            "  --weight-decay X       AdamW decoupled weight decay (default 0.1)\n"
            "  --decay-all            decay every param, as llm.c does; by default only\n"
            "                         2-D weights decay, never biases or LayerNorm params\n"
            "  --beta1 X, --beta2 X   AdamW moment decay rates (default 0.9, 0.95)\n"
            "  --grad-clip X          max global gradient L2 norm, 0 = off (default 1.0)\n"
            "  --seed S               seed of the init and of batch sampling (default 1337)\n"
            "  --threads N            worker threads, 0 = one per core (default 0)\n"
            "  --executor NAME        jit (default) or interp, the reference interpreter\n"
            "  --no-fuse              leave elementwise chains unfused (the fuse-elementwise pass\n"
            "                         runs on the training graph by default)\n"
            "\n"
            "Evaluation, checkpoints and output:\n"
            "  --eval-every N         evaluate on held-out data every N steps (default 0 = never)\n"
            "  --eval-batches N       held-out batches per evaluation (default 8)\n"
            "  --ckpt-dir DIR         checkpoint directory (default: the current directory)\n"
            "  --ckpt-every N         write a checkpoint every N steps (default 0 = only on Ctrl-C)\n"
            "  --resume[=CKPT]        continue from CKPT, or from the latest checkpoint in --ckpt-dir;\n"
            "                         the checkpoint's batch, seq, schedule, AdamW settings and seed\n"
            "                         replace those on the command line\n"
            "  --out FILE             write the final weights: an llm.c checkpoint when FILE\n"
            "                         ends in .bin, else safetensors with the hyperparameters\n"
            "  --stats                print param, gradient, optimizer and activation memory and exit\n"
            "  --export-llmc-state FILE  write llm.c's debug state (logits, loss, gradients) for the\n"
            "                         current weights and the first B x T training tokens, and exit\n"
            "\n"
            "Ctrl-C stops after the current step and writes a checkpoint.\n");
}

static int parse_int(const char *option, const char *text, long long min, int *out)
{
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || end == text || *end || value < min || value > 1000000000)
        return driver_usage_error(CMD, "invalid %s value '%s': expected an integer >= %lld", option, text, min);
    *out = (int)value;
    return DRIVER_OK;
}

static int parse_float(const char *option, const char *text, double min, double max, double *out)
{
    char *end;
    double value = strtod(text, &end);
    if (end == text || *end || !(value >= min && value <= max))
        return driver_usage_error(CMD, "invalid %s value '%s': expected a number in [%g, %g]", option, text, min,
                                  max);
    *out = value;
    return DRIVER_OK;
}

static int split_data_list(train_args *a, const char *list)
{
    a->data_text = list;
    a->data_list = strdup(list);
    for (char *save = NULL, *item = strtok_r(a->data_list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (a->ntexts == MAX_TEXTS)
            return driver_usage_error(CMD, "--data lists more than %d files", MAX_TEXTS);
        a->texts[a->ntexts++] = item;
    }
    return a->ntexts ? DRIVER_OK : driver_usage_error(CMD, "--data lists no file");
}

/* Matches an option with a numeric value. Returns 1 when it consumed
 * argv[*i], 0 when argv[*i] is another option, and -1 on a usage error. */
static int numeric_option(int argc, char **argv, int *i, train_args *a)
{
    static const struct {
        const char *name;
        size_t int_offset;   /* of the int field in rt_train_config */
        long long min;
    } int_options[] = {
        {"--steps", offsetof(rt_train_config, steps), 1},
        {"--batch", offsetof(rt_train_config, batch), 1},
        {"--seq", offsetof(rt_train_config, seq), 1},
        {"--warmup", offsetof(rt_train_config, warmup), 0},
        {"--threads", offsetof(rt_train_config, threads), 0},
        {"--eval-every", offsetof(rt_train_config, eval_every), 0},
        {"--eval-batches", offsetof(rt_train_config, eval_batches), 1},
        {"--ckpt-every", offsetof(rt_train_config, ckpt_every), 0},
    };
    const char *value;
    for (size_t k = 0; k < sizeof int_options / sizeof int_options[0]; k++) {
        int rc = driver_option_value(CMD, argc, argv, i, int_options[k].name, &value);
        if (rc < 0)
            return -1;
        if (rc > 0) {
            int *field = (int *)((char *)&a->config + int_options[k].int_offset);
            return parse_int(int_options[k].name, value, int_options[k].min, field) == DRIVER_OK ? 1 : -1;
        }
    }
    static const struct {
        const char *name;
        double min, max;
    } float_options[] = {
        {"--lr", 0, 1e38}, {"--min-lr-frac", 0, 1}, {"--weight-decay", 0, 1e38}, {"--beta1", 0, 1},
        {"--beta2", 0, 1}, {"--grad-clip", 0, 1e38}, {"--val-frac", 0, 0.99},
    };
    float *float_fields[] = {&a->config.lr, &a->config.min_lr_frac, &a->config.adamw.weight_decay,
                             &a->config.adamw.beta1, &a->config.adamw.beta2, &a->config.adamw.grad_clip, NULL};
    for (size_t k = 0; k < sizeof float_options / sizeof float_options[0]; k++) {
        int rc = driver_option_value(CMD, argc, argv, i, float_options[k].name, &value);
        if (rc < 0)
            return -1;
        if (rc > 0) {
            double parsed = 0;
            if (parse_float(float_options[k].name, value, float_options[k].min, float_options[k].max, &parsed) !=
                DRIVER_OK)
                return -1;
            if (float_fields[k])
                *float_fields[k] = (float)parsed;
            else
                a->val_frac = parsed;
            return 1;
        }
    }
    return 0;
}

/* Matches an option with a string value. */
static int string_option(int argc, char **argv, int *i, train_args *a)
{
    const struct {
        const char *name;
        const char **field;
    } options[] = {
        {"--weights", &a->weights},         {"--out", &a->out},
        {"--export-llmc-state", &a->export_llmc}, {"--tokenizer", &a->tokenizer_dir},
        {"--cache-dir", &a->cache_dir},     {"--ckpt-dir", &a->config.ckpt_dir},
    };
    for (size_t k = 0; k < sizeof options / sizeof options[0]; k++) {
        int rc = driver_option_value(CMD, argc, argv, i, options[k].name, options[k].field);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int parse_option(int argc, char **argv, int *i, train_args *a)
{
    const char *arg = argv[*i];
    const char *value;
    int rc;
    if ((rc = numeric_option(argc, argv, i, a)) != 0 || (rc = string_option(argc, argv, i, a)) != 0)
        return rc < 0 ? DRIVER_USAGE : DRIVER_OK;
    if ((rc = driver_option_value(CMD, argc, argv, i, "--data", &value)) != 0)
        return rc < 0 ? DRIVER_USAGE : split_data_list(a, value);
    if ((rc = driver_define_option(CMD, argc, argv, i, a->defines, &a->config.ndefines, MAX_DEFINES)) != 0)
        return rc < 0 ? DRIVER_USAGE : DRIVER_OK;
    if ((rc = driver_option_value(CMD, argc, argv, i, "--seed", &value)) != 0) {
        char *end;
        errno = 0;
        a->config.seed = rc > 0 ? strtoull(value, &end, 10) : 0;
        if (rc < 0 || errno || end == value || *end)
            return rc < 0 ? DRIVER_USAGE : driver_usage_error(CMD, "invalid --seed value '%s'", value);
        return DRIVER_OK;
    }
    if ((rc = driver_option_value(CMD, argc, argv, i, "--executor", &value)) != 0) {
        if (rc < 0)
            return DRIVER_USAGE;
        a->config.executor = rt_executor_find(value);
        return a->config.executor ? DRIVER_OK
                                  : driver_usage_error(CMD, "unknown --executor '%s': use jit or interp", value);
    }
    if (strncmp(arg, "--resume", 8) == 0 && (arg[8] == '\0' || arg[8] == '=')) {
        a->resume = arg[8] == '=' ? arg + 9 : "";
        (*i)++;
        return DRIVER_OK;
    }
    if (strcmp(arg, "--no-fuse") == 0) {
        a->config.no_fuse_elementwise = true;
        (*i)++;
        return DRIVER_OK;
    }
    if (strcmp(arg, "--decay-all") == 0) {
        a->config.adamw.decay_all = true;
        (*i)++;
        return DRIVER_OK;
    }
    if (strcmp(arg, "--stats") == 0) {
        a->stats = true;
        (*i)++;
        return DRIVER_OK;
    }
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
        a->help = true;
        (*i)++;
        return DRIVER_OK;
    }
    return driver_usage_error(CMD, "unknown option '%s'", arg);
}

static int parse_args(int argc, char **argv, train_args *a)
{
    a->config = rt_train_default_config();
    a->config.defines = a->defines;
    a->val_frac = 0.05;
    int i = 1;
    while (i < argc) {
        const char *arg = argv[i];
        if (arg[0] != '-') {
            if (a->config.model_path)
                return driver_usage_error(CMD, "unexpected argument '%s'; give one model file", arg);
            a->config.model_path = arg;
            i++;
            continue;
        }
        int rc = parse_option(argc, argv, &i, a);
        if (rc != DRIVER_OK)
            return rc;
    }
    if (a->help)
        return DRIVER_OK;
    if (a->data_text) {
        snprintf(a->data_description, sizeof a->data_description, "%s;val_frac=%.9g", a->data_text, a->val_frac);
        a->config.data_description = a->data_description;
    }
    if (!a->config.model_path)
        return driver_usage_error(CMD, "missing the model file (MODEL.qd)");
    if (a->ntexts == 0 && !a->stats)
        return driver_usage_error(CMD, "missing --data: give the text files to train on");
    return DRIVER_OK;
}

/* Finds the checkpoint with the highest step in dir. */
static char *latest_checkpoint(const char *dir, ir_diag *d)
{
    DIR *handle = opendir(dir);
    if (!handle) {
        ir_diag_file_error(d, dir, "cannot open the checkpoint directory: %s", strerror(errno));
        return NULL;
    }
    int best = -1;
    struct dirent *entry;
    while ((entry = readdir(handle))) {
        int step, length = 0;
        if (sscanf(entry->d_name, "ckpt_%d.safetensors%n", &step, &length) == 1 &&
            entry->d_name[length] == '\0' && length > 0 && step > best)
            best = step;
    }
    closedir(handle);
    if (best < 0) {
        ir_diag_file_error(d, dir, "no checkpoint (ckpt_NNNNNN.safetensors) to resume from; "
                           "name one with --resume=FILE");
        return NULL;
    }
    size_t cap = strlen(dir) + 64;
    char *path = malloc(cap);
    if (path)
        snprintf(path, cap, "%s/ckpt_%06d.safetensors", dir, best);
    return path;
}

static int load_data(const train_args *a, int64_t vocab_size, rt_train_data *data, ir_diag *d)
{
    char encoder[4096], vocab[4096];
    const char *dir = a->tokenizer_dir ? a->tokenizer_dir : QUADC_SOURCE_DIR "/data/tokenizer";
    snprintf(encoder, sizeof encoder, "%s/encoder.json", dir);
    snprintf(vocab, sizeof vocab, "%s/vocab.bpe", dir);
    rt_dataset_tokenizer *tok = rt_dataset_tokenizer_load(encoder, vocab, d);
    if (!tok)
        return -1;
    char *default_cache = a->cache_dir ? NULL : rt_dataset_default_cache_dir();
    const char *cache = a->cache_dir ? a->cache_dir : default_cache;
    int rc = 0;
    rt_train_data_init(data);
    for (int i = 0; i < a->ntexts && rc == 0; i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        rc = rt_dataset_load_text(a->texts[i], tok, cache, &ids, &n, d);
        if (rc == 0)
            rc = rt_train_data_add(data, ids, n, a->val_frac, d);
    }
    free(default_cache);
    rt_dataset_tokenizer_free(tok);
    int32_t max_id = rc == 0 ? rt_train_data_max_id(data) : -1;
    if (rc == 0 && vocab_size > 0 && max_id >= vocab_size) {
        ir_diag_file_error(d, NULL, "token id %d of the data is outside the model's vocabulary of %lld tokens; "
                           "set -D n_vocab=50257 for GPT-2's tokenizer", max_id, (long long)vocab_size);
        rc = -1;
    }
    if (rc != 0)
        rt_train_data_free(data);
    return rc;
}

static int64_t graph_hparam(const ir_graph *g, const char *name)
{
    for (int i = 0; i < g->nhparams; i++)
        if (strcmp(g->hparams[i].name, name) == 0)
            return g->hparams[i].value;
    return -1;
}

static double mib(int64_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

static void print_memory_line(const char *label, int64_t bytes, const char *remark)
{
    printf("  %-32s %13lld bytes %10.1f MiB%s%s\n", label, (long long)bytes, mib(bytes), remark ? "  " : "",
           remark ? remark : "");
}

static void print_stats(const rt_trainer *t)
{
    rt_train_memory m;
    rt_trainer_memory(t, &m);
    int64_t outputs = m.graph.output_bytes - m.grad_bytes;
    int64_t total = m.param_bytes + m.grad_bytes + m.optimizer_bytes + m.graph.input_bytes + outputs +
                    m.graph.peak_live_bytes;
    printf("model %s, batch %d x %d tokens, %lld parameters\n", t->config.model_path, t->config.batch,
           t->config.seq, (long long)m.param_count);
    print_memory_line("parameters", m.param_bytes, NULL);
    print_memory_line("gradients", m.grad_bytes, NULL);
    print_memory_line("AdamW m and v", m.optimizer_bytes, NULL);
    print_memory_line("inputs, loss, logits", m.graph.input_bytes + outputs, NULL);
    print_memory_line("activations, peak live", m.graph.peak_live_bytes, "(each freed after its last use)");
    print_memory_line("activations, all intermediates", m.graph.intermediate_bytes, NULL);
    print_memory_line("estimated total", total, "(parameters to peak live activations)");
    /* NOTE: the JIT plans its own buffers and packs matmul weights, so its
     * footprint differs from this interpreter-rule estimate; the benchmark
     * measures peak RSS. */
}

/* Progress output: a redrawn bar on a terminal, plain lines otherwise. */
typedef struct progress {
    bool terminal;
    double elapsed;
    int first_step;
} progress;

static void format_duration(double seconds, char *buf, size_t cap)
{
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, cap, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else
        snprintf(buf, cap, "%ldm%02lds", s / 60, s % 60);
}

static void print_progress(void *ctx, const rt_train_progress *p)
{
    progress *state = ctx;
    if (state->first_step < 0)
        state->first_step = p->step - 1;
    state->elapsed += p->step_seconds;
    double per_step = state->elapsed / (p->step - state->first_step);
    char eta[32];
    format_duration(per_step * (p->total_steps - p->step), eta, sizeof eta);
    if (state->terminal) {
        const int width = 24;
        int filled = (int)((double)width * p->step / p->total_steps);
        char bar[32];
        for (int i = 0; i < width; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\r[%s] step %d/%d  loss %.4f  %.0f tok/s  ETA %s ", bar, p->step, p->total_steps, p->loss,
                p->tokens_per_second, eta);
        if (p->evaluated || p->checkpoint)
            fputc('\n', stderr);
    } else {
        fprintf(stderr, "step %d/%d: loss %.6f, lr %.3g, grad norm %.4g, %.0f tokens/s, ETA %s\n", p->step,
                p->total_steps, p->loss, p->lr, p->grad_norm, p->tokens_per_second, eta);
    }
    if (p->evaluated)
        fprintf(stderr, "step %d/%d: held-out loss %.6f\n", p->step, p->total_steps, p->eval_loss);
    if (p->checkpoint)
        fprintf(stderr, "step %d/%d: wrote checkpoint %s\n", p->step, p->total_steps, p->checkpoint);
}

static volatile sig_atomic_t interrupted;

static void on_sigint(int signo)
{
    (void)signo;
    interrupted = 1;
    static const char message[] = "\nstopping after this step; press Ctrl-C again to stop at once\n";
    ssize_t ignored = write(STDERR_FILENO, message, sizeof message - 1);
    (void)ignored;
}

/* Trains and writes --out. Returns a DRIVER_ status. */
/* Writes the trained weights: an llm.c fp32 checkpoint when the path ends
 * in ".bin", else safetensors with the hyperparameters in the metadata. */
static int write_weights(const char *path, const rt_trainer *t, ir_diag *d)
{
    size_t len = strlen(path);
    if (len < 4 || strcmp(path + len - 4, ".bin") != 0) {
        if (rt_model_record_hparams(t->params, t->eval_graph) != 0)
            return -1;
        return rt_safetensors_write(path, t->params, d);
    }
    int64_t heads = 0;
    for (int i = 0; i < t->eval_graph->nhparams; i++)
        if (strcmp(t->eval_graph->hparams[i].name, "n_head") == 0)
            heads = t->eval_graph->hparams[i].value;
    if (heads <= 0) {
        ir_diag_file_error(d, path, "the model has no hparam n_head, which an llm.c checkpoint needs; "
                           "write safetensors instead");
        return -1;
    }
    rt_llmc_config config;
    if (rt_llmc_infer_config(t->params, (int)heads, &config, d, path) != 0)
        return -1;
    return rt_llmc_write_checkpoint(path, t->params, &config, d);
}

static int train(rt_trainer *t, const train_args *a, const rt_train_data *data, ir_diag *d)
{
    struct sigaction action, previous;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_sigint;
    /* A second Ctrl-C gets the default action and stops at once. */
    action.sa_flags = SA_RESETHAND;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &previous);

    fprintf(stderr, "training %s from step %d to %d: %zu training and %zu held-out tokens, executor %s\n",
            t->config.model_path, t->step, t->config.steps, rt_train_data_train_tokens(data),
            rt_train_data_val_tokens(data), t->config.executor->name);
    progress state = {isatty(STDERR_FILENO) != 0, 0, -1};
    rt_train_hooks hooks = {print_progress, &state, &interrupted};
    char saved[4096];
    rt_train_status status = rt_trainer_run(t, data, &hooks, saved, sizeof saved, d);
    sigaction(SIGINT, &previous, NULL);
    if (state.terminal)
        fputc('\n', stderr);

    if (status == RT_TRAIN_INTERRUPTED) {
        fprintf(stderr, "interrupted after step %d; wrote checkpoint %s; continue with --resume=%s\n", t->step,
                saved, saved);
        return DRIVER_OK;
    }
    if (status != RT_TRAIN_DONE)
        return DRIVER_ERROR;
    if (a->out) {
        if (write_weights(a->out, t, d) != 0)
            return DRIVER_ERROR;
        fprintf(stderr, "wrote weights %s\n", a->out);
    }
    return DRIVER_OK;
}

/* Adds the hparams recorded in the metadata of w (quadc's safetensors
 * files, or an llm.c checkpoint's header) to the -D defines, so the model
 * compiles with the sizes of the weights. A -D with another value is an
 * error naming both values. Returns 0, or -1 after reporting. */
static int apply_weight_hparams(train_args *a, const rt_weights *w, ir_diag *d)
{
    fe_define *merged = NULL;
    int nmerged = 0;
    if (rt_quantize_weight_hparams(a->config.model_path, w, a->weights, a->defines, a->config.ndefines, &merged,
                                   &nmerged, d) != 0)
        return -1;
    /* The names of metadata entries belong to w, which is freed before the
     * trainer that borrows the defines. */
    int rc = 0;
    for (int i = 0; i < nmerged; i++) {
        char *name = rc == 0 ? strdup(merged[i].name) : NULL;
        if (!name && rc == 0) {
            ir_diag_file_error(d, a->weights, "out of memory applying hyperparameter %s", merged[i].name);
            rc = -1;
        }
        merged[i].name = name;
    }
    a->weight_defines = merged;
    a->nweight_defines = nmerged;
    a->config.defines = merged;
    a->config.ndefines = nmerged;
    return rc;
}

static void free_weight_defines(train_args *a)
{
    for (int i = 0; i < a->nweight_defines; i++)
        free((char *)a->weight_defines[i].name);
    free(a->weight_defines);
    a->weight_defines = NULL;
    a->nweight_defines = 0;
}

/* Builds the trainer with its weights. ckpt, when given, supplies the
 * params, moments and position, and else --weights does, whose hparams
 * also apply to the model (with --stats too). */
static rt_trainer *setup(train_args *a, rt_weights *ckpt, const char *ckpt_path, bool need_executor, ir_diag *d)
{
    rt_weights *loaded = NULL;
    if (!ckpt && a->weights) {
        loaded = rt_train_load_weights(a->weights, d);
        if (!loaded || apply_weight_hparams(a, loaded, d) != 0) {
            rt_weights_free(loaded);
            return NULL;
        }
    }
    rt_trainer *t = rt_trainer_new(&a->config, d);
    if (!t || !need_executor) {
        rt_weights_free(loaded);
        return t;
    }
    rt_weights *initial = ckpt ? ckpt : loaded;
    int rc = rt_trainer_init_weights(t, initial, d);
    rt_weights_free(loaded);
    if (rc == 0)
        rc = rt_trainer_prepare(t, d);
    if (rc == 0 && ckpt)
        rc = rt_trainer_restore(t, ckpt, ckpt_path, d);
    if (rc != 0) {
        rt_trainer_free(t);
        return NULL;
    }
    return t;
}

int driver_train(int argc, char **argv)
{
    train_args a;
    memset(&a, 0, sizeof a);
    int status = parse_args(argc, argv, &a);
    if (status != DRIVER_OK || a.help) {
        if (a.help)
            print_help(stdout);
        free(a.data_list);
        return status;
    }

    ir_diag *d = ir_diag_new(stderr);
    rt_weights *ckpt = NULL;
    char *ckpt_path = NULL;
    rt_trainer *t = NULL;
    rt_train_data data;
    rt_train_data_init(&data);
    status = DRIVER_ERROR;

    if (a.resume) {
        ckpt_path = a.resume[0] ? strdup(a.resume) : latest_checkpoint(a.config.ckpt_dir ? a.config.ckpt_dir : ".", d);
        ckpt = ckpt_path ? rt_train_checkpoint_read(ckpt_path, d) : NULL;
        if (!ckpt || rt_train_checkpoint_apply_config(ckpt, ckpt_path, &a.config, d) < 0)
            goto done;
        fprintf(stderr, "resuming from %s\n", ckpt_path);
    }
    t = setup(&a, ckpt, ckpt_path, !a.stats, d);
    rt_weights_free(ckpt);
    ckpt = NULL;
    if (!t)
        goto done;
    if (a.stats) {
        print_stats(t);
        status = DRIVER_OK;
        goto done;
    }
    if (load_data(&a, graph_hparam(t->train_graph, "n_vocab"), &data, d) != 0)
        goto done;
    if (a.export_llmc) {
        if (rt_trainer_export_llmc_state(t, &data, a.export_llmc, d) != 0)
            goto done;
        fprintf(stderr, "wrote llm.c debug state %s\n", a.export_llmc);
        status = DRIVER_OK;
        goto done;
    }
    status = train(t, &a, &data, d);
done:
    rt_trainer_free(t);
    rt_weights_free(ckpt);
    rt_train_data_free(&data);
    free(ckpt_path);
    free(a.data_list);
    free_weight_defines(&a);
    ir_diag_free(d);
    return status;
}
