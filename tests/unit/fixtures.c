/* Fixtures shared by the unit tests, declared in fixtures.h. */
#include "fixtures.h"

#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "passes/manager.h"

/* ---- random numbers ---- */

uint64_t fx_next(fx_rng *rng)
{
    if (rng->kind == FX_RNG_LCG) {
        rng->state = rng->state * 6364136223846793005ull + 1442695040888963407ull;
    } else {
        rng->state ^= rng->state << 13;
        rng->state ^= rng->state >> 7;
        rng->state ^= rng->state << 17;
    }
    return rng->state;
}

double fx_uniform(fx_rng *rng, double lo, double hi)
{
    return lo + (hi - lo) * (double)(fx_next(rng) >> 11) / 9007199254740992.0;
}

double fx_uniform_open(fx_rng *rng)
{
    return ((double)(fx_next(rng) >> 11) + 0.5) / 9007199254740992.0;
}

double fx_normal(fx_rng *rng)
{
    double radius = sqrt(-2.0 * log(fx_uniform_open(rng)));
    return radius * cos(6.283185307179586 * fx_uniform_open(rng));
}

rt_tensor *fx_normal_tensor(fx_rng *rng, int rank, const int64_t *dims, double stddev)
{
    rt_tensor *t = rt_tensor_new(IR_F32, rank, dims);
    float *x = t->data;
    for (int64_t i = 0; i < rt_tensor_numel(t); i++)
        x[i] = (float)(stddev * fx_normal(rng));
    return t;
}

rt_tensor *fx_uniform_tensor(fx_rng *rng, ir_dtype dtype, int rank, const int64_t *dims, double lo, double hi)
{
    rt_tensor *t = rt_tensor_new(dtype, rank, dims);
    int64_t n = rt_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double x = fx_uniform(rng, lo, hi);
        switch (dtype) {
        case IR_F32: ((float *)t->data)[i] = (float)x; break;
        case IR_F16: ((uint16_t *)t->data)[i] = rt_f32_to_f16((float)x); break;
        case IR_BF16: ((uint16_t *)t->data)[i] = rt_f32_to_bf16((float)x); break;
        case IR_I32: ((int32_t *)t->data)[i] = (int32_t)floor(x); break;
        case IR_I64: ((int64_t *)t->data)[i] = (int64_t)floor(x); break;
        case IR_I8: ((int8_t *)t->data)[i] = (int8_t)floor(x); break;
        case IR_U8: ((uint8_t *)t->data)[i] = (uint8_t)floor(x); break;
        default: break;
        }
    }
    return t;
}

float fx_lcg32_uniform(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return (float)(*state >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}

rt_tensor *fx_lcg32_tensor(uint32_t *state, int rank, int64_t d0, int64_t d1)
{
    int64_t dims[2] = {d0, d1};
    rt_tensor *t = rt_tensor_new(IR_F32, rank, dims);
    float *data = t->data;
    for (int64_t i = 0; i < rt_tensor_numel(t); i++)
        data[i] = fx_lcg32_uniform(state);
    return t;
}

/* ---- weight sets ---- */

rt_weights *fx_gpt2_weights(fx_rng *rng, const ir_graph *g, double matrix_stddev)
{
    rt_weights *w = rt_weights_new();
    for (int id = 0; id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_PARAM)
            continue;
        rt_tensor *t = rt_tensor_new(IR_F32, v->type.rank, v->type.dims);
        float *x = t->data;
        const char *init = ir_attr_str(v, "init");
        for (int64_t i = 0; i < rt_tensor_numel(t); i++) {
            if (v->type.rank == 2)
                x[i] = (float)(matrix_stddev * fx_normal(rng));
            else if (strcmp(init, "ones") == 0)
                x[i] = (float)(1.0 + 0.1 * fx_normal(rng));
            else
                x[i] = (float)(0.1 * fx_normal(rng));
        }
        rt_weights_set(w, v->name, t);
    }
    return w;
}

rt_weights *fx_outlier_gpt2_weights(fx_rng *rng, const ir_graph *g)
{
    rt_weights *w = rt_weights_new();
    for (int id = 0; id < g->nvalues; id++) {
        const ir_value *v = g->values[id];
        if (v->op != IR_OP_PARAM)
            continue;
        rt_tensor *t = rt_tensor_new(IR_F32, v->type.rank, v->type.dims);
        float *x = t->data;
        bool gain = strcmp(ir_attr_str(v, "init"), "ones") == 0;
        for (int64_t i = 0; i < rt_tensor_numel(t); i++) {
            if (v->type.rank == 2)
                x[i] = (float)(0.1 * fx_normal(rng));
            else if (gain)
                x[i] = (float)((1.0 + 0.1 * fx_normal(rng)) * (i % 8 == 3 ? 20.0 : 1.0));
            else
                x[i] = (float)(0.05 * fx_normal(rng));
        }
        rt_weights_set(w, v->name, t);
    }
    return w;
}

void fx_set_uniform_gpt2_weights(fx_rng *rng, const ir_graph *g, double ln_range, rt_weights *out)
{
    for (int i = 0; i < g->nvalues; i++) {
        const ir_value *v = g->values[i];
        if (v->op != IR_OP_PARAM)
            continue;
        bool ln = strstr(v->name, "ln_") != NULL;
        double range = ln ? ln_range : 0.1;
        rt_tensor *t = fx_uniform_tensor(rng, IR_F32, v->type.rank, v->type.dims, -range, range);
        if (ln && strstr(v->name, "weight"))
            for (int64_t k = 0; k < rt_tensor_numel(t); k++)
                ((float *)t->data)[k] += 1.0f;
        rt_weights_set(out, v->name, t);
    }
}

rt_weights *fx_copy_weights(const rt_weights *w)
{
    rt_weights *out = rt_weights_new();
    for (int i = 0; i < w->count; i++) {
        const rt_tensor *t = w->tensors[i];
        rt_tensor *copy = rt_tensor_new(t->dtype, t->rank, t->dims);
        memcpy(copy->data, t->data, rt_tensor_nbytes(t));
        rt_weights_set(out, w->names[i], copy);
    }
    return out;
}

/* ---- graphs ---- */

fx_fixture fx_fixture_new(const char *graph_name)
{
    fx_fixture f;
    f.diag = ir_diag_new(stderr);
    f.g = ir_graph_new(graph_name, f.diag);
    f.weights = rt_weights_new();
    f.inputs = rt_weights_new();
    return f;
}

void fx_fixture_free(fx_fixture *f)
{
    ir_graph_free(f->g);
    rt_weights_free(f->weights);
    rt_weights_free(f->inputs);
    ir_diag_free(f->diag);
}

#define FX_MAX_DEFINES 16

ir_graph *fx_compile_gpt2(const fe_define *defines, int ndefines, int64_t batch, int64_t seq, ir_diag *d)
{
    if (ndefines < 0 || ndefines > FX_MAX_DEFINES - 2) {
        fprintf(stderr, "fx_compile_gpt2: %d defines is too many, the maximum is %d; raise FX_MAX_DEFINES\n",
                ndefines, FX_MAX_DEFINES - 2);
        return NULL;
    }
    fe_define all[FX_MAX_DEFINES];
    memcpy(all, defines, sizeof *defines * (size_t)ndefines);
    all[ndefines] = (fe_define){"B", batch};
    all[ndefines + 1] = (fe_define){"T", seq};
    return fe_compile_file("examples/gpt2.qd", all, ndefines + 2, d);
}

int fx_count_ops(const ir_graph *g, ir_op op)
{
    int n = 0;
    for (int id = 0; id < g->nvalues; id++)
        n += g->values[id]->op == op;
    return n;
}

int fx_count_live_ops(const ir_graph *g, ir_op op)
{
    int n = 0;
    for (int id = 0; id < g->nvalues; id++)
        n += !g->values[id]->dead && g->values[id]->op == op;
    return n;
}

/* ---- files and commands ---- */

const char fx_tiny_bundle_main[] =
    "#include <stdio.h>\n"
    "#include <stdlib.h>\n"
    "#include <string.h>\n"
    "#include \"tiny.h\"\n"
    "int main(int argc, char **argv)\n"
    "{\n"
    "    if (argc != 5)\n"
    "        return 90;\n"
    "    static int32_t idx[TINY_INPUT_IDX_BYTES / 4], targets[TINY_INPUT_TARGETS_BYTES / 4];\n"
    "    static float logits[TINY_OUTPUT_LOGITS_BYTES / 4], loss[1];\n"
    "    FILE *in = fopen(argv[3], \"rb\");\n"
    "    if (!in || fread(idx, 1, sizeof idx, in) != sizeof idx || fread(targets, 1, sizeof targets, in) != sizeof targets)\n"
    "        return 91;\n"
    "    fclose(in);\n"
    "    tiny_ctx *ctx;\n"
    "    int rc = tiny_init(&ctx, strcmp(argv[1], \"-\") == 0 ? NULL : argv[1], atoi(argv[2]));\n"
    "    if (rc != TINY_STATUS_OK)\n"
    "        return rc;\n"
    "    rc = tiny_run(ctx, idx, targets, logits, loss);\n"
    "    tiny_free(ctx);\n"
    "    if (rc != TINY_STATUS_OK)\n"
    "        return rc;\n"
    "    FILE *out = fopen(argv[4], \"wb\");\n"
    "    if (!out || fwrite(logits, 1, sizeof logits, out) != sizeof logits || fwrite(loss, 1, sizeof loss, out) != sizeof loss)\n"
    "        return 92;\n"
    "    return fclose(out) == 0 ? 0 : 93;\n"
    "}\n";

int fx_write_file(const char *path, const void *a, size_t an, const void *b, size_t bn)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t ok = fwrite(a, 1, an, f) == an && (bn == 0 || fwrite(b, 1, bn, f) == bn);
    return fclose(f) == 0 && ok ? 0 : -1;
}

int fx_run_command(const char *command)
{
    int status = system(command);
    return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int fx_count_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL)
        if (strstr(entry->d_name, ".tmp."))
            count++;
    closedir(d);
    return count;
}

void fx_remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *entry;
        char path[512];
        while ((entry = readdir(d)) != NULL) {
            if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

unsigned char *fx_read_bytes(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc(*size + 1);
    if (fread(data, 1, *size, f) != *size)
        *size = 0;
    data[*size] = 0;
    fclose(f);
    return data;
}

float *fx_read_floats(const char *path, size_t count)
{
    float *data = calloc(count, sizeof *data);
    FILE *f = fopen(path, "rb");
    size_t got = f ? fread(data, sizeof *data, count, f) : 0;
    if (f)
        fclose(f);
    if (got != count) {
        free(data);
        return NULL;
    }
    return data;
}

/* ---- diagnostics capture ---- */

void fx_capture_open(fx_capture *c)
{
    c->text = NULL;
    c->len = 0;
    c->stream = open_memstream(&c->text, &c->len);
    c->diag = ir_diag_new(c->stream);
}

const char *fx_capture_text(fx_capture *c)
{
    fflush(c->stream);
    return c->text ? c->text : "";
}

void fx_capture_end(fx_capture *c)
{
    ir_diag_free(c->diag);
    fclose(c->stream);
}

void fx_capture_close(fx_capture *c)
{
    fx_capture_end(c);
    free(c->text);
}

/* ---- comparisons ---- */

bool fx_same_tensor(const rt_tensor *a, const rt_tensor *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank)
        return false;
    for (int i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return memcmp(a->data, b->data, rt_tensor_nbytes(a)) == 0;
}

double fx_relative_difference(const rt_tensor *got, const rt_tensor *want)
{
    if (!got || !want)
        return INFINITY;
    const float *x = got->data, *y = want->data;
    double diff = 0, scale = 0;
    for (int64_t i = 0; i < rt_tensor_numel(want); i++) {
        diff = fmax(diff, fabs((double)x[i] - y[i]));
        scale = fmax(scale, fabs((double)y[i]));
    }
    return diff / scale;
}
