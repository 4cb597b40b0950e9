/* `quadc outliers`: prints and plots the per-channel maximum |activation|
 * at every activation quantizer site of a model (the inputs of every
 * linear and of the LM head) on sequences of a text. With --compare it
 * measures a second weight file, such as one written by `quadc quantize`,
 * on the same sequences. The measurement is in runtime/outliers.c, and
 * this file parses options, picks the sequences, and prints the table and
 * the PNG. */
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "driver/model_args.h"
#include "runtime/dataset.h"
#include "runtime/outliers.h"
#include "runtime/plot.h"

#define CMD "outliers"

typedef struct outliers_args {
    driver_model_args model;
    const char *data;
    const char *png;
    const char *compare;
    const char *cache_dir;
    long long seqs;
    long long seq;
    long long top;
} outliers_args;

static void print_help(FILE *out)
{
    fprintf(out,
            "usage: quadc outliers MODEL.qd --weights W.safetensors --data TEXT [options]\n"
            "\n"
            "Runs the model on sequences of a UTF-8 text and prints, for every activation\n"
            "quantizer site (the input of every linear layer and of the LM head, where\n"
            "insert-fakequant puts fq.act), the maximum |activation| of each channel:\n"
            "the channel count, the largest and the median channel maximum, their ratio\n"
            "and the channels with the largest maxima. Activations are observed as\n"
            "calibration sees them, with every quantizer bypassed. A file written by\n"
            "quadc quantize is measured with its own (folded) weights.\n"
            "\n"
            "  --data FILE             the text (required); tokenized with GPT-2's BPE\n"
            "  --seqs N                sequences, spread evenly over the text (default 16)\n"
            "  --seq T                 tokens per sequence (default 64); the text needs at\n"
            "                          least T + 1 tokens\n"
            "  --top K                 top channels listed per site, 1 to %d (default 4)\n"
            "  --png FILE              also draw one panel per site, channels on x\n"
            "  --compare FILE          also measure other weights of the same model, such as\n"
            "                          a file written by quadc quantize --method quadapter\n"
            "                          (its folded alpha rescales channels), print a second\n"
            "                          table and draw them over the first weights\n"
            "  --cache-dir DIR         token cache (default: $XDG_CACHE_HOME/quadc or\n"
            "                          ~/.cache/quadc)\n",
            RT_OUTLIERS_MAX_TOP);
    driver_print_model_help(out);
}

static int parse_int_option(int argc, char **argv, int *i, const char *name, long long min, long long max,
                            long long *out)
{
    const char *value = NULL;
    int rc = driver_option_value(CMD, argc, argv, i, name, &value);
    if (rc <= 0)
        return rc;
    return driver_parse_int_value(CMD, name, value, min, max, out) == 0 ? 1 : -1;
}

/* Returns DRIVER_OK, DRIVER_USAGE, or -1 after printing the help. */
static int parse_args(int argc, char **argv, outliers_args *a)
{
    a->seqs = 16;
    a->seq = 64;
    a->top = 4;
    for (int i = 1; i < argc;) {
        const char *arg = argv[i], *value = NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_help(stdout);
            return -1;
        }
        int rc = driver_option_value(CMD, argc, argv, &i, "--data", &value);
        if (rc > 0)
            a->data = value;
        if (rc == 0 && (rc = driver_option_value(CMD, argc, argv, &i, "--png", &value)) > 0)
            a->png = value;
        if (rc == 0 && (rc = driver_option_value(CMD, argc, argv, &i, "--compare", &value)) > 0)
            a->compare = value;
        if (rc == 0 && (rc = driver_option_value(CMD, argc, argv, &i, "--cache-dir", &value)) > 0)
            a->cache_dir = value;
        if (rc == 0)
            rc = parse_int_option(argc, argv, &i, "--seqs", 1, 1 << 20, &a->seqs);
        if (rc == 0)
            rc = parse_int_option(argc, argv, &i, "--seq", 1, 1 << 20, &a->seq);
        if (rc == 0)
            rc = parse_int_option(argc, argv, &i, "--top", 1, RT_OUTLIERS_MAX_TOP, &a->top);
        if (rc == 0)
            rc = driver_parse_model_option(CMD, argc, argv, &i, &a->model);
        if (rc < 0)
            return DRIVER_USAGE;
        if (rc == 0)
            return driver_usage_error(CMD, "unknown option '%s'", arg);
    }
    if (driver_finish_model_args(CMD, &a->model) != 0)
        return DRIVER_USAGE;
    if (!a->data)
        return driver_usage_error(CMD, "missing --data: give the text to run the model on");
    return DRIVER_OK;
}

/* Rejects a --png path that cannot be written before the model runs: its
 * directory must exist, and the path must not be a directory. */
static int check_png_path(const char *path, ir_diag *d)
{
    char *copy = strdup(path);
    if (!copy)
        return -1;
    const char *dir = dirname(copy);
    struct stat st;
    int rc = 0;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        ir_diag_file_error(d, path, "cannot write --png: directory '%s' does not exist", dir);
        rc = -1;
    } else if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        ir_diag_file_error(d, path, "cannot write --png: the path is a directory; give a file name such as "
                                    "outliers.png");
        rc = -1;
    }
    free(copy);
    return rc;
}

static int load_tokens(const outliers_args *a, int32_t **ids, size_t *n, ir_diag *d)
{
    char encoder[4096], vocab[4096];
    snprintf(encoder, sizeof encoder, "%s/encoder.json", a->model.tokenizer);
    snprintf(vocab, sizeof vocab, "%s/vocab.bpe", a->model.tokenizer);
    rt_dataset_tokenizer *tok = rt_dataset_tokenizer_load(encoder, vocab, d);
    if (!tok)
        return -1;
    char *default_cache = a->cache_dir ? NULL : rt_dataset_default_cache_dir();
    int rc = rt_dataset_load_text(a->data, tok, a->cache_dir ? a->cache_dir : default_cache, ids, n, d);
    free(default_cache);
    rt_dataset_tokenizer_free(tok);
    return rc;
}

/* Spreads the sequences of seq + 1 tokens evenly from the start to the end
 * of the text. They overlap when the text is shorter than all of them. */
static int pick_sequences(const outliers_args *a, const int32_t *ids, size_t n, const int32_t **seqs, ir_diag *d)
{
    size_t len = (size_t)a->seq + 1;
    if (n < len) {
        ir_diag_file_error(d, a->data, "the text has %zu tokens, fewer than one sequence of --seq + 1 = %zu tokens; "
                           "give a longer text or a smaller --seq", n, len);
        return -1;
    }
    size_t span = n - len;
    for (long long s = 0; s < a->seqs; s++)
        seqs[s] = ids + (a->seqs > 1 ? (size_t)((double)span * (double)s / (double)(a->seqs - 1)) : 0);
    return 0;
}

/* Loads one model and measures it. Returns 0 or -1 after reporting. */
static int measure(const outliers_args *a, const char *weights, const int32_t *const *seqs, rt_outliers *out,
                   ir_diag *d)
{
    rt_outliers_model m;
    if (rt_outliers_load_model(a->model.model, a->model.defines, a->model.ndefines, weights, (int)a->seq, &m, d) != 0)
        return -1;
    const rt_executor *ex = a->model.engine == RT_MODEL_INTERP ? rt_executor_interp() : rt_executor_jit();
    int rc = rt_outliers_measure(m.graph, m.weights, seqs, (int)a->seqs, (int)a->seq, ex, a->model.threads,
                                 (int)a->top, out, d);
    rt_outliers_model_free(&m);
    return rc;
}

/* Checks that the compared model has the same sites with the same channel
 * counts, in the same order. */
static int check_same_sites(const outliers_args *a, const rt_outliers *base, const rt_outliers *other, ir_diag *d)
{
    if (base->nsites != other->nsites) {
        ir_diag_file_error(d, a->compare, "the model has %d activation quantizer sites, but with --weights it has %d; "
                           "compare a quantized file of the same model", other->nsites, base->nsites);
        return -1;
    }
    for (int k = 0; k < base->nsites; k++) {
        const rt_outlier_site *x = &base->sites[k], *y = &other->sites[k];
        if (strcmp(x->name, y->name) != 0 || x->channels != y->channels) {
            ir_diag_file_error(d, a->compare, "site %d is '%s' with %lld channels, but with --weights it is '%s' "
                               "with %lld; compare a quantized file of the same model", k, y->name,
                               (long long)y->channels, x->name, (long long)x->channels);
            return -1;
        }
    }
    return 0;
}

/* ---- output ---- */

static void print_table(const char *heading, const rt_outliers *o)
{
    int name_w = 4;
    for (int k = 0; k < o->nsites; k++) {
        int w = (int)strlen(o->sites[k].name);
        name_w = w > name_w ? w : name_w;
    }
    printf("%s\n", heading);
    printf("%-*s %8s %10s %10s %10s  %s\n", name_w, "site", "channels", "max", "median", "max/median",
           "top channels (channel:max)");
    for (int k = 0; k < o->nsites; k++) {
        const rt_outlier_site *s = &o->sites[k];
        printf("%-*s %8lld %10.4g %10.4g %10.4g ", name_w, s->name, (long long)s->channels, s->max, s->median,
               rt_outlier_ratio(s));
        for (int t = 0; t < s->ntop; t++)
            printf(" %lld:%.4g", (long long)s->top[t], s->max_abs[s->top[t]]);
        printf("\n");
    }
}

/* One panel per site with the float maxima, and with --compare the
 * quantized model's maxima drawn over them. */
static int write_png(const outliers_args *a, const rt_outliers *base, const rt_outliers *other, ir_diag *d)
{
    int n = base->nsites;
    rt_plot_panel *panels = calloc((size_t)n, sizeof *panels);
    rt_plot_series *series = calloc((size_t)n * 2, sizeof *series);
    int rc = panels && series ? 0 : -1;
    for (int k = 0; k < n && rc == 0; k++) {
        const rt_outlier_site *s = &base->sites[k];
        rt_plot_series *first = &series[2 * k];
        *first = (rt_plot_series){.y = s->max_abs, .n = s->channels, .style = RT_PLOT_STEM, .color = 0x1F77B4};
        if (other) {
            first->label = "float weights";
            first->color = 0xFF7F0E;
            series[2 * k + 1] = (rt_plot_series){.label = "quantized model", .y = other->sites[k].max_abs,
                                                 .n = s->channels, .style = RT_PLOT_STEM, .color = 0x1F77B4};
        }
        panels[k] = (rt_plot_panel){.title = s->name, .x_label = "channel", .y_label = "max |x|",
                                    .series = first, .nseries = other ? 2 : 1};
    }
    char title[512];
    snprintf(title, sizeof title, "Per-channel max |activation|, %lld sequences of %lld tokens", a->seqs, a->seq);
    /* ceil(sqrt(n / 3)) columns: 5 columns and 10 rows for the 49 sites of
     * a 12-layer GPT-2, 2 columns for the 5 sites of a 1-layer model. */
    int columns = (int)ceil(sqrt(n / 3.0));
    rt_plot_figure f = {.title = title, .panels = panels, .npanels = n, .columns = columns < 1 ? 1 : columns,
                        .panel_width = 640, .panel_height = 320};
    if (rc == 0)
        rc = rt_plot_write_png(&f, a->png, d);
    else
        ir_diag_file_error(d, a->png, "out of memory for the plot");
    free(panels);
    free(series);
    return rc;
}

static int run(const outliers_args *a, ir_diag *d)
{
    if (a->png && check_png_path(a->png, d) != 0)
        return DRIVER_ERROR;
    int32_t *ids = NULL;
    size_t n = 0;
    const int32_t **seqs = calloc((size_t)a->seqs, sizeof *seqs);
    rt_outliers base = {0}, other = {0};
    int rc = seqs ? load_tokens(a, &ids, &n, d) : -1;
    if (rc == 0)
        rc = pick_sequences(a, ids, n, seqs, d);
    if (rc == 0)
        rc = measure(a, a->model.weights, seqs, &base, d);
    if (rc == 0 && a->compare) {
        rc = measure(a, a->compare, seqs, &other, d);
        if (rc == 0)
            rc = check_same_sites(a, &base, &other, d);
    }
    if (rc == 0) {
        char heading[4096];
        printf("%s on %lld sequences of %lld tokens from %s\n\n", a->model.model, a->seqs, a->seq, a->data);
        snprintf(heading, sizeof heading, "weights %s:", a->model.weights);
        print_table(heading, &base);
        if (a->compare) {
            snprintf(heading, sizeof heading, "\nweights %s:", a->compare);
            print_table(heading, &other);
        }
        fflush(stdout);
    }
    if (rc == 0 && a->png) {
        rc = write_png(a, &base, a->compare ? &other : NULL, d);
        if (rc == 0)
            fprintf(stderr, "wrote %s\n", a->png);
    }
    rt_outliers_free(&base);
    rt_outliers_free(&other);
    free(seqs);
    free(ids);
    return rc == 0 ? DRIVER_OK : DRIVER_ERROR;
}

int driver_outliers(int argc, char **argv)
{
    outliers_args a;
    memset(&a, 0, sizeof a);
    if (driver_model_args_init(&a.model, argc) != 0)
        return DRIVER_ERROR;
    int status = parse_args(argc, argv, &a);
    if (status < 0) {
        status = DRIVER_OK; /* --help */
    } else if (status == DRIVER_OK) {
        ir_diag *d = ir_diag_new(stderr);
        status = d ? run(&a, d) : DRIVER_ERROR;
        ir_diag_free(d);
    }
    driver_model_args_free(&a.model);
    return status;
}
