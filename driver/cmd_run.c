/* `quadc run`: float evaluation, the PTQ baseline, Quadapter, the INT8
 * build and the evaluation of the built executable, in one process. This
 * file parses the options, checks every input before the first stage and
 * runs the stages of driver/run_stages.c in order. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/model_args.h"
#include "driver/progress.h"
#include "driver/run.h"
#include "runtime/model.h"
#include "runtime/safetensors.h"
#include "runtime/train_llmc.h"
#include "runtime/train_rng.h"

/* The model that `quadc run` uses when --weights is not given. */
#define DEFAULT_WEIGHTS "models/default/model.safetensors"

static void print_run_help(FILE *out)
{
    fprintf(out,
            "usage: quadc run MODEL.qd [--weights W.safetensors] --calib TEXT --eval TEXT[,TEXT...]\n"
            "                 --out DIR [options]\n"
            "\n"
            "Runs the whole pipeline in one process and prints a table of the results:\n"
            "  1. the perplexity of the float model on each --eval text;\n"
            "  2. the PTQ baseline: fake quantizers with ranges calibrated on --calib;\n"
            "  3. Quadapter: calibration, phase 1 (block by block), phase 2 (end to end)\n"
            "     and the fold into the weights, written to DIR/<model>-quadapter.safetensors;\n"
            "  4. the INT8 build of that model: DIR/<model>.o, DIR/<model>.h and the\n"
            "     executable DIR/<model>;\n"
            "  5. the perplexity that the executable computes on each --eval text.\n"
            "Perplexity is sliding-window, as in quadc eval: the window is the model's\n"
            "context length and it moves by half a window. The table, with sizes and\n"
            "throughput, is also written to DIR/report.md.\n"
            "\n"
            "Options:\n"
            "  --weights FILE          float weights, safetensors or llm.c .bin (default: the model\n"
            "                          " DEFAULT_WEIGHTS " of the source tree)\n"
            "  -D name=value           set hyperparameter `name` to the integer `value`;\n"
            "                          it must agree with the weights' metadata; repeatable\n"
            "  --calib TEXT            UTF-8 calibration and training text (required)\n"
            "  --eval TEXT[,TEXT...]   UTF-8 texts to measure perplexity on; repeatable\n"
            "                          (required)\n"
            "  --out DIR               output directory, created when missing (required)\n"
            "  --bits wBaB             weight and activation bits, each 2 to 8 (default w8a8)\n"
            "  --seq T                 tokens per calibration sequence (default 64)\n"
            "  --calib-seqs N          calibration sequences drawn from --calib (default 32)\n"
            "  --phase1-steps N        Quadapter phase 1 AdamW steps per block (default 100)\n"
            "  --phase2-steps N        Quadapter phase 2 AdamW steps (default 100)\n"
            "  --lr X                  constant AdamW learning rate (default 1e-3)\n"
            "  --seed S                seed of the calibration sequences and their order\n"
            "                          (default 1); also the seed of --prompt's sampler\n"
            "  --threads N             worker threads, 0 = one per core (default 0)\n"
            "  --max-eval-tokens N     score only the first N tokens of each --eval text\n"
            "                          (default 0: all of them); N must cover one window\n"
            "  --print-ir-dir DIR      write the IR before and after every pass of every\n"
            "                          stage, one numbered .qir file per pass, under\n"
            "                          DIR/1-fp32, DIR/2-ptq, DIR/3-quadapter and DIR/4-int8\n"
            "  --target-cpu CPU        LLVM CPU of the INT8 build, such as x86-64-v3\n"
            "                          (default: the host CPU); the executable must run here\n"
            "  --triple TRIPLE         LLVM target triple of the INT8 build; the object and\n"
            "                          header are built, but no executable, so step 5 is\n"
            "                          skipped and --prompt is rejected\n"
            "  --prompt TEXT           after the build, print the executable's continuation\n"
            "                          of TEXT\n"
            "  --tokenizer DIR         directory of encoder.json and vocab.bpe\n"
            "                          (default: data/tokenizer of the source tree)\n"
            "  --cache-dir DIR         token cache (default: $XDG_CACHE_HOME/quadc or\n"
            "                          ~/.cache/quadc)\n");
}

/* Splits one --eval value at commas and appends the texts to a->eval. */
static int add_eval_texts(run_args *a, const char *value)
{
    char *copy = strdup(value);
    if (!copy)
        return -1;
    for (char *p = copy, *next; p; p = next) {
        next = strchr(p, ',');
        if (next)
            *next++ = '\0';
        if (*p == '\0') {
            driver_usage_error(RUN_CMD, "invalid --eval '%s': a file name is empty; separate the files with single "
                               "commas", value);
            free(copy);
            return -1;
        }
        const char **grown = realloc(a->eval, sizeof *grown * (size_t)(a->neval + 1));
        if (!grown) {
            free(copy);
            return -1;
        }
        a->eval = grown;
        /* The names point into copies kept until the arguments are freed. */
        grown[a->neval++] = p;
    }
    char **kept = realloc(a->eval_copies, sizeof *kept * (size_t)(a->neval_copies + 1));
    if (!kept) {
        free(copy);
        return -1;
    }
    a->eval_copies = kept;
    kept[a->neval_copies++] = copy;
    return 0;
}

static int parse_int(const char *option, const char *text, long long min, int *out)
{
    long long value;
    if (driver_parse_int_value(RUN_CMD, option, text, min, 1000000000, &value) != 0)
        return -1;
    *out = (int)value;
    return 0;
}

/* Parses the option at argv[*i] that takes a value and advances *i past
 * it. Returns 1 when it matched, 0 when it did not, -1 on a usage error. */
static int parse_value_option(run_args *a, int argc, char **argv, int *i)
{
    const char *v;
    const struct {
        const char *name;
        const char **slot;
    } strings[] = {{"--weights", &a->weights},       {"--calib", &a->calib},
                   {"--out", &a->out},               {"--bits", &a->bits},
                   {"--print-ir-dir", &a->print_ir_dir}, {"--target-cpu", &a->target_cpu},
                   {"--triple", &a->triple},         {"--prompt", &a->prompt},
                   {"--tokenizer", &a->tokenizer},   {"--cache-dir", &a->cache_dir}};
    for (size_t k = 0; k < sizeof strings / sizeof strings[0]; k++) {
        int m = driver_option_value(RUN_CMD, argc, argv, i, strings[k].name, strings[k].slot);
        if (m != 0)
            return m;
    }
    int m = driver_option_value(RUN_CMD, argc, argv, i, "--eval", &v);
    if (m != 0)
        return m < 0 || add_eval_texts(a, v) != 0 ? -1 : 1;
    const struct {
        const char *name;
        int *slot;
        long long min;
    } ints[] = {{"--seq", &a->seq, 1},
                {"--calib-seqs", &a->calib_seqs, 1},
                {"--phase1-steps", &a->phase1_steps, 0},
                {"--phase2-steps", &a->phase2_steps, 0},
                {"--threads", &a->threads, 0}};
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        m = driver_option_value(RUN_CMD, argc, argv, i, ints[k].name, &v);
        if (m != 0)
            return m < 0 || parse_int(ints[k].name, v, ints[k].min, ints[k].slot) != 0 ? -1 : 1;
    }
    long long number;
    if ((m = driver_option_value(RUN_CMD, argc, argv, i, "--seed", &v)) != 0) {
        if (m < 0 || driver_parse_int_value(RUN_CMD, "--seed", v, 0, INT64_MAX, &number) != 0)
            return -1;
        a->seed = (uint64_t)number;
        return 1;
    }
    if ((m = driver_option_value(RUN_CMD, argc, argv, i, "--max-eval-tokens", &v)) != 0) {
        if (m < 0 || driver_parse_int_value(RUN_CMD, "--max-eval-tokens", v, 0, 1LL << 40, &number) != 0)
            return -1;
        a->max_eval_tokens = number;
        return 1;
    }
    if ((m = driver_option_value(RUN_CMD, argc, argv, i, "--lr", &v)) != 0) {
        double lr;
        if (m < 0 || driver_parse_float_value(RUN_CMD, "--lr", v, 0.0, &lr) != 0)
            return -1;
        a->lr = (float)lr;
        return 1;
    }
    return 0;
}

/* Returns DRIVER_OK, DRIVER_USAGE, or -1 after printing the help. */
static int parse_run_args(int argc, char **argv, run_args *a)
{
    for (int i = 1; i < argc;) {
        char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_run_help(stdout);
            return -1;
        }
        int m = driver_define_option(RUN_CMD, argc, argv, &i, a->defines, &a->ndefines, argc);
        if (m < 0)
            return DRIVER_USAGE;
        if (m > 0)
            continue;
        m = parse_value_option(a, argc, argv, &i);
        if (m < 0)
            return DRIVER_USAGE;
        if (m > 0)
            continue;
        if (arg[0] == '-' && arg[1] != '\0')
            return driver_usage_error(RUN_CMD, "unknown option '%s'", arg);
        if (a->model)
            return driver_usage_error(RUN_CMD, "more than one model file given ('%s' and '%s')", a->model, arg);
        a->model = arg;
        i++;
    }

    if (!a->model)
        return driver_usage_error(RUN_CMD, "no model file; give one such as examples/gpt2.qd");
    if (!a->calib)
        return driver_usage_error(RUN_CMD, "missing --calib: give the calibration text");
    if (a->neval == 0)
        return driver_usage_error(RUN_CMD, "missing --eval: give the texts to measure perplexity on");
    if (!a->out)
        return driver_usage_error(RUN_CMD, "missing --out: give the output directory");
    int weight_bits, act_bits;
    char err[128];
    if (rt_quantize_parse_bits(a->bits, &weight_bits, &act_bits, err, sizeof err) != 0)
        return driver_usage_error(RUN_CMD, "invalid --bits '%s': %s", a->bits, err);
    if (a->triple && a->prompt)
        return driver_usage_error(RUN_CMD, "--prompt needs the executable, which --triple does not build; drop one "
                                           "of them");
    return DRIVER_OK;
}

/* Uses the default model of the source tree when --weights is missing.
 * Returns 0, or -1 after reporting that it does not exist. */
static int resolve_weights(run_args *a, ir_diag *d)
{
    if (a->weights)
        return 0;
    const char *path = QUADC_SOURCE_DIR "/" DEFAULT_WEIGHTS;
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        ir_diag_file_error(d, path, "no --weights given and the default model is missing; give --weights FILE "
                           "with float weights (safetensors or an llm.c checkpoint)");
        return -1;
    }
    a->weights = path;
    a->default_weights = true;
    fprintf(stderr, "no --weights given: using the default model %s\n", path);
    return 0;
}

/* Creates dir and its missing parents, like mkdir -p. Returns 0, or -1
 * after reporting. */
static int make_directory(const char *dir, const char *option, ir_diag *d)
{
    char *path = strdup(dir);
    if (!path)
        return -1;
    int rc = 0;
    for (char *p = path + 1; *p && rc == 0; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            rc = -1;
        *p = '/';
    }
    if (rc == 0 && mkdir(path, 0777) != 0 && errno != EEXIST)
        rc = -1;
    int saved = errno;
    free(path);
    struct stat st;
    if (rc != 0) {
        ir_diag_file_error(d, dir, "cannot create the %s directory: %s", option, strerror(saved));
        return -1;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        ir_diag_file_error(d, dir, "cannot use it as the %s directory: it exists and is not a directory", option);
        return -1;
    }
    if (access(dir, W_OK) != 0) {
        ir_diag_file_error(d, dir, "cannot write to the %s directory: %s", option, strerror(errno));
        return -1;
    }
    return 0;
}

/* The model file's name without its directory and without ".qd". */
static char *model_stem(const char *model)
{
    const char *slash = strrchr(model, '/');
    const char *name = slash ? slash + 1 : model;
    size_t n = strlen(name);
    if (n > 3 && strcmp(name + n - 3, ".qd") == 0)
        n -= 3;
    char *stem = strndup(name, n);
    if (stem && (stem[0] == '\0' || stem[0] == '.')) {
        free(stem);
        stem = strdup("model");
    }
    return stem;
}

static int set_output_paths(run_state *s)
{
    const run_args *a = s->a;
    s->stem = model_stem(a->model);
    if (!s->stem)
        return -1;
    size_t n = strlen(s->stem) + 32;
    char *name = malloc(n);
    if (!name)
        return -1;
    snprintf(name, n, "%s-quadapter.safetensors", s->stem);
    s->quantized_path = run_path(a->out, name);
    snprintf(name, n, "%s.o", s->stem);
    s->object_path = run_path(a->out, name);
    snprintf(name, n, "%s.h", s->stem);
    s->header_path = run_path(a->out, name);
    if (!a->triple)
        s->exe_path = run_path(a->out, s->stem);
    s->report_path = run_path(a->out, "report.md");
    free(name);
    return s->quantized_path && s->object_path && s->header_path && (a->triple || s->exe_path) && s->report_path
               ? 0
               : -1;
}

static rt_dataset_tokenizer *load_tokenizer(const char *dir, ir_diag *d)
{
    char *encoder = run_path(dir, "encoder.json"), *vocab = run_path(dir, "vocab.bpe");
    rt_dataset_tokenizer *tok = encoder && vocab ? rt_dataset_tokenizer_load(encoder, vocab, d) : NULL;
    free(encoder);
    free(vocab);
    return tok;
}

/* Tokenizes the calibration text and every evaluation text, through the
 * token cache. */
static int load_texts(run_state *s)
{
    const run_args *a = s->a;
    rt_dataset_tokenizer *tok = load_tokenizer(a->tokenizer, s->d);
    if (!tok)
        return -1;
    char *cache_dir = a->cache_dir ? strdup(a->cache_dir) : rt_dataset_default_cache_dir();
    s->texts = calloc((size_t)a->neval, sizeof *s->texts);
    int rc = s->texts ? 0 : -1;
    if (rc == 0)
        rc = rt_dataset_load_text(a->calib, tok, cache_dir, &s->calib_ids, &s->calib_n, s->d);
    for (int i = 0; i < a->neval && rc == 0; i++) {
        run_text *t = &s->texts[s->ntexts++];
        t->path = a->eval[i];
        rc = rt_dataset_load_text(t->path, tok, cache_dir, &t->ids, &t->n, s->d);
        if (rc == 0 && a->max_eval_tokens > 0 && t->n > (size_t)a->max_eval_tokens)
            t->n = (size_t)a->max_eval_tokens;
    }
    free(cache_dir);
    rt_dataset_tokenizer_free(tok);
    return rc;
}

/* Draws the calibration sequences of --seq + 1 tokens at seeded random
 * offsets of the whole text, as quadc quantize does with --data-frac 1,
 * so that quadc quantize --eval measures the same sequences. */
static int pick_calibration(run_state *s)
{
    const run_args *a = s->a;
    size_t len = (size_t)a->seq + 1;
    if (s->calib_n < len) {
        ir_diag_file_error(s->d, a->calib, "the calibration text has %zu tokens, fewer than one sequence of --seq + 1 "
                           "= %zu tokens; give a longer text or a smaller --seq", s->calib_n, len);
        return -1;
    }
    s->calib_seqs = calloc((size_t)a->calib_seqs, sizeof *s->calib_seqs);
    if (!s->calib_seqs)
        return -1;
    rt_rng rng;
    rt_rng_seed(&rng, a->seed, 0);
    for (int k = 0; k < a->calib_seqs; k++)
        s->calib_seqs[k] = s->calib_ids + rt_rng_below(&rng, (uint64_t)(s->calib_n - len + 1));
    return 0;
}

/* Reads the float weights (safetensors or an llm.c checkpoint) and merges
 * their hparams with the -D defines. */
static int load_float_weights(run_state *s)
{
    const run_args *a = s->a;
    s->float_weights = rt_train_load_weights(a->weights, s->d);
    if (!s->float_weights)
        return -1;
    if (rt_quantize_weight_hparams(a->model, s->float_weights, a->weights, a->defines, a->ndefines, &s->defines,
                                   &s->ndefines, s->d) != 0)
        return -1;
    /* B and T belong to each compiled graph, not to the model. The names
     * are copied because those from the metadata go with the weights. */
    int nmodel_defines = 0;
    for (int i = 0; i < s->ndefines; i++) {
        if (strcmp(s->defines[i].name, "B") == 0 || strcmp(s->defines[i].name, "T") == 0)
            continue;
        char *name = strdup(s->defines[i].name);
        if (!name)
            return -1;
        s->defines[nmodel_defines].name = name;
        s->defines[nmodel_defines++].value = s->defines[i].value;
    }
    s->ndefines = nmodel_defines;
    struct stat st;
    s->float_bytes = stat(a->weights, &st) == 0 ? (long long)st.st_size : -1;
    return 0;
}

/* Checks and reads every input, and creates the output directories, before
 * the first stage, so that a bad input fails in seconds. */
static int prepare(run_state *s, run_args *a)
{
    if (resolve_weights(a, s->d) != 0 || make_directory(a->out, "--out", s->d) != 0)
        return -1;
    if (a->print_ir_dir && make_directory(a->print_ir_dir, "--print-ir-dir", s->d) != 0)
        return -1;
    if (set_output_paths(s) != 0 || load_texts(s) != 0 || pick_calibration(s) != 0)
        return -1;
    return load_float_weights(s);
}

static void free_state(run_state *s)
{
    rt_weights_free(s->float_weights);
    for (int i = 0; i < s->ndefines; i++)
        free((char *)s->defines[i].name);
    free(s->defines);
    for (int i = 0; i < s->ntexts; i++)
        free(s->texts[i].ids);
    free(s->texts);
    free(s->calib_ids);
    free(s->calib_seqs);
    free(s->stem);
    free(s->quantized_path);
    free(s->object_path);
    free(s->header_path);
    free(s->exe_path);
    free(s->report_path);
    for (int m = 0; m < RUN_NMODELS; m++)
        free(s->scores[m]);
    free(s->block_loss_before);
    free(s->block_loss_after);
}

static void free_args(run_args *a)
{
    free(a->defines);
    free(a->eval);
    for (int i = 0; i < a->neval_copies; i++)
        free(a->eval_copies[i]);
    free(a->eval_copies);
}

/* The stages in order: one literal list, so the pipeline reads like a recipe. */
static int run_pipeline(run_state *s)
{
    static const struct {
        const char *title;
        int (*run)(run_state *s);
    } stages[] = {
        {"FP32 perplexity", run_stage_fp32},
        {"PTQ baseline: calibrate the fake quantizers", run_stage_ptq},
        {"Quadapter: calibrate, phase 1, phase 2, fold", run_stage_quadapter},
        {"INT8 lowering and ahead-of-time build", run_stage_build},
        {"perplexity of the built executable", run_stage_binary},
    };
    _Static_assert(sizeof stages / sizeof stages[0] == RUN_NSTAGES, "one entry per stage");
    int nstages = RUN_NSTAGES;
    if (s->a->triple)
        nstages--; /* a cross-target build has no executable to run */
    for (int k = 0; k < nstages; k++) {
        fprintf(stderr, "[%d/%d] %s\n", k + 1, nstages, stages[k].title);
        double start = driver_now_seconds();
        if (stages[k].run(s) != 0)
            return -1;
        s->stage_seconds[k] = driver_now_seconds() - start;
    }
    if (s->a->prompt && run_generate_prompt(s) != 0)
        return -1;
    return run_write_report(s);
}

int driver_run(int argc, char **argv)
{
    run_args a = {
        .bits = "w8a8",
        .seq = 64,
        .calib_seqs = 32,
        .phase1_steps = 100,
        .phase2_steps = 100,
        .lr = 1e-3f,
        .seed = 1,
        .tokenizer = QUADC_SOURCE_DIR "/data/tokenizer",
    };
    a.defines = calloc((size_t)argc + 1, sizeof *a.defines);
    if (!a.defines)
        return DRIVER_ERROR;
    int status = parse_run_args(argc, argv, &a);
    if (status < 0) {
        free_args(&a);
        return DRIVER_OK; /* --help */
    }
    if (status != DRIVER_OK) {
        free_args(&a);
        return status;
    }
    ir_diag *d = ir_diag_new(stderr);
    run_state s = {.a = &a, .d = d};
    status = DRIVER_ERROR;
    if (d && prepare(&s, &a) == 0 && run_pipeline(&s) == 0)
        status = DRIVER_OK;
    free_state(&s);
    ir_diag_free(d);
    free_args(&a);
    return status;
}
