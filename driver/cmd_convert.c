/* `quadc convert`: rewrites a weight file in another format or dtype.
 * Reads a safetensors file or an llm.c checkpoint and writes safetensors
 * (f32, f16 or bf16) or an llm.c fp32 checkpoint, keeping the metadata. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "driver/driver.h"
#include "runtime/llmc.h"
#include "runtime/safetensors.h"
#include "runtime/train_llmc.h"

typedef struct convert_args {
    const char *in;
    const char *out;
    const char *dtype; /* NULL: f32 */
    const char **meta; /* "key=value" entries */
    int nmeta;
} convert_args;

static void print_convert_help(FILE *out)
{
    fprintf(out, "usage: quadc convert IN OUT [--dtype f32|f16|bf16] [--meta KEY=VALUE]...\n"
                 "\n"
                 "Reads weights from IN, a safetensors file or an llm.c checkpoint, and writes\n"
                 "them to OUT: an llm.c fp32 checkpoint when OUT ends in .bin, else safetensors.\n"
                 "The metadata of IN (such as the hyperparameters) is kept; an llm.c header\n"
                 "becomes n_layer, n_embd, n_head, n_vocab and n_ctx entries. OUT is written\n"
                 "atomically.\n"
                 "\n"
                 "  --dtype NAME      dtype of every floating tensor in a safetensors OUT:\n"
                 "                    f32 (default), f16 or bf16; integer tensors keep theirs\n"
                 "  --meta KEY=VALUE  add or replace a metadata entry; repeatable\n");
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Returns DRIVER_OK, DRIVER_USAGE after a message, or -1 for --help.
 * driver_option_value advances i past the options it consumes. */
static int parse_convert_args(int argc, char **argv, convert_args *a)
{
    const char *cmd = "convert";
    int npos = 0;
    for (int i = 1; i < argc;) {
        const char *arg = argv[i], *value;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            print_convert_help(stdout);
            return -1;
        }
        int r = driver_option_value(cmd, argc, argv, &i, "--dtype", &value);
        if (r < 0)
            return DRIVER_USAGE;
        if (r > 0) {
            a->dtype = value;
            continue;
        }
        r = driver_option_value(cmd, argc, argv, &i, "--meta", &value);
        if (r < 0)
            return DRIVER_USAGE;
        if (r > 0) {
            const char *eq = strchr(value, '=');
            if (!eq || eq == value)
                return driver_usage_error(cmd, "invalid --meta value '%s': write --meta KEY=VALUE", value);
            a->meta[a->nmeta++] = value;
            continue;
        }
        if (arg[0] == '-' && arg[1] != '\0')
            return driver_usage_error(cmd, "unknown option '%s'", arg);
        if (npos == 0)
            a->in = arg;
        else if (npos == 1)
            a->out = arg;
        else
            return driver_usage_error(cmd, "unexpected argument '%s': convert takes IN and OUT", arg);
        npos++;
        i++;
    }
    if (npos < 2)
        return driver_usage_error(cmd, "convert needs an input and an output file");
    if (a->dtype && strcmp(a->dtype, "f32") != 0 && strcmp(a->dtype, "f16") != 0 && strcmp(a->dtype, "bf16") != 0)
        return driver_usage_error(cmd, "invalid --dtype '%s': use f32, f16 or bf16", a->dtype);
    if (a->dtype && strcmp(a->dtype, "f32") != 0 && has_suffix(a->out, ".bin"))
        return driver_usage_error(cmd, "an llm.c checkpoint (%s) is always f32; --dtype %s applies to safetensors",
                                  a->out, a->dtype);
    return DRIVER_OK;
}

static bool is_float(ir_dtype t)
{
    return t == IR_F32 || t == IR_F16 || t == IR_BF16;
}

/* Converts every floating tensor of w to `to`. A finite value that does
 * not fit the narrower dtype is an error, since it would become infinite. */
static int convert_tensors(rt_weights *w, ir_dtype to, const char *in, ir_diag *d)
{
    for (int i = 0; i < w->count; i++) {
        rt_tensor *t = w->tensors[i];
        if (!is_float(t->dtype) || t->dtype == to)
            continue;
        rt_tensor *wide = rt_tensor_to_f32(t);
        rt_tensor *narrow = wide ? rt_tensor_to_float_dtype(wide, to) : NULL;
        if (!narrow) {
            rt_tensor_free(wide);
            ir_diag_file_error(d, in, "out of memory converting tensor '%s'", w->names[i]);
            return -1;
        }
        rt_tensor *back = rt_tensor_to_f32(narrow);
        int64_t n = rt_tensor_numel(t), bad = -1;
        for (int64_t k = 0; back && k < n && bad < 0; k++)
            if (isfinite(((const float *)wide->data)[k]) && !isfinite(((const float *)back->data)[k]))
                bad = k;
        float bad_value = bad >= 0 ? ((const float *)wide->data)[bad] : 0.0f;
        rt_tensor_free(back);
        rt_tensor_free(wide);
        if (bad >= 0) {
            rt_tensor_free(narrow);
            ir_diag_file_error(d, in, "tensor '%s' element %lld is %g, which %s cannot hold; keep f32 or use bf16",
                               w->names[i], (long long)bad, (double)bad_value, ir_dtype_name(to));
            return -1;
        }
        rt_tensor_free(t);
        w->tensors[i] = narrow;
    }
    return 0;
}

static int write_llmc(const convert_args *a, rt_weights *w, ir_diag *d)
{
    const char *heads = rt_weights_get_meta(w, "n_head");
    char *end = NULL;
    long nh = heads ? strtol(heads, &end, 10) : 0;
    if (!heads || *end != '\0' || nh <= 0) {
        ir_diag_file_error(d, a->in, "an llm.c checkpoint needs the head count, but the file has no valid n_head "
                                     "metadata; add it with --meta n_head=N");
        return -1;
    }
    rt_llmc_config config;
    if (rt_llmc_infer_config(w, (int)nh, &config, d, a->in) != 0)
        return -1;
    return rt_llmc_write_checkpoint(a->out, w, &config, d);
}

static int run_convert(const convert_args *a, ir_diag *d)
{
    rt_weights *w = rt_train_load_weights(a->in, d);
    if (!w)
        return DRIVER_ERROR;
    int rc = 0;
    for (int i = 0; i < a->nmeta && rc == 0; i++) {
        const char *eq = strchr(a->meta[i], '=');
        char *key = strndup(a->meta[i], (size_t)(eq - a->meta[i]));
        rc = key ? rt_weights_set_meta(w, key, eq + 1) : -1;
        free(key);
        if (rc != 0)
            ir_diag_file_error(d, a->out, "out of memory setting metadata '%s'", a->meta[i]);
    }
    if (rc == 0 && has_suffix(a->out, ".bin")) {
        rc = write_llmc(a, w, d);
    } else if (rc == 0) {
        ir_dtype to = !a->dtype || strcmp(a->dtype, "f32") == 0 ? IR_F32
                      : strcmp(a->dtype, "f16") == 0            ? IR_F16
                                                                : IR_BF16;
        rc = convert_tensors(w, to, a->in, d);
        if (rc == 0)
            rc = rt_safetensors_write(a->out, w, d);
    }
    rt_weights_free(w);
    return rc == 0 ? DRIVER_OK : DRIVER_ERROR;
}

int driver_convert(int argc, char **argv)
{
    convert_args a;
    memset(&a, 0, sizeof a);
    a.meta = calloc((size_t)argc + 1, sizeof *a.meta);
    if (!a.meta)
        return DRIVER_ERROR;
    int status = parse_convert_args(argc, argv, &a);
    if (status < 0) {
        status = DRIVER_OK; /* --help */
    } else if (status == DRIVER_OK) {
        ir_diag *d = ir_diag_new(stderr);
        status = d ? run_convert(&a, d) : DRIVER_ERROR;
        ir_diag_free(d);
    }
    free(a.meta);
    return status;
}
