/* llm.c checkpoint, token-shard and debug-state files, converted to and from
 * Hugging Face GPT-2 weight sets. */
#include "runtime/llmc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/safetensors.h"

/* ---------------------------------------------------------------------- */
/* Parameter layout                                                       */
/* ---------------------------------------------------------------------- */

typedef enum param_kind {
    PARAM_TOKEN_EMBEDDING,    /* wte: llm.c (Vp, C), Hugging Face (V, C) */
    PARAM_POSITION_EMBEDDING, /* wpe: (maxT, C) in both */
    PARAM_LAYER_VECTOR,       /* per layer, (rows * C) in both */
    PARAM_LAYER_LINEAR,       /* per layer, llm.c (rows * C, cols * C), transposed in HF */
    PARAM_FINAL_VECTOR,       /* (C) in both */
} param_kind;

/* One llm.c tensor. For per-layer tensors, `hf_name` is the part of the
 * Hugging Face name after "h.{i}.". For PARAM_LAYER_LINEAR, llm.c stores
 * (out, in) = (rows * C, cols * C) and Hugging Face stores (in, out). */
typedef struct param_spec {
    const char *llmc_name;
    const char *hf_name;
    param_kind kind;
    int rows;
    int cols;
} param_spec;

/* In checkpoint order. */
static const param_spec PARAMS[] = {
    {"wte", "wte.weight", PARAM_TOKEN_EMBEDDING, 0, 0},
    {"wpe", "wpe.weight", PARAM_POSITION_EMBEDDING, 0, 0},
    {"ln1w", "ln_1.weight", PARAM_LAYER_VECTOR, 1, 0},
    {"ln1b", "ln_1.bias", PARAM_LAYER_VECTOR, 1, 0},
    {"qkvw", "attn.c_attn.weight", PARAM_LAYER_LINEAR, 3, 1},
    {"qkvb", "attn.c_attn.bias", PARAM_LAYER_VECTOR, 3, 0},
    {"attprojw", "attn.c_proj.weight", PARAM_LAYER_LINEAR, 1, 1},
    {"attprojb", "attn.c_proj.bias", PARAM_LAYER_VECTOR, 1, 0},
    {"ln2w", "ln_2.weight", PARAM_LAYER_VECTOR, 1, 0},
    {"ln2b", "ln_2.bias", PARAM_LAYER_VECTOR, 1, 0},
    {"fcw", "mlp.c_fc.weight", PARAM_LAYER_LINEAR, 4, 1},
    {"fcb", "mlp.c_fc.bias", PARAM_LAYER_VECTOR, 4, 0},
    {"fcprojw", "mlp.c_proj.weight", PARAM_LAYER_LINEAR, 1, 4},
    {"fcprojb", "mlp.c_proj.bias", PARAM_LAYER_VECTOR, 1, 0},
    {"lnfw", "ln_f.weight", PARAM_FINAL_VECTOR, 1, 0},
    {"lnfb", "ln_f.bias", PARAM_FINAL_VECTOR, 1, 0},
};
#define PARAM_COUNT ((int)(sizeof PARAMS / sizeof PARAMS[0]))

/* One Hugging Face tensor and its place in the llm.c file. */
typedef struct param_slice {
    const param_spec *spec;
    char name[64];
    int rank;
    int64_t dims[2];     /* Hugging Face shape */
    uint64_t file_count;  /* floats in the file, padding included */
    uint64_t file_offset; /* floats before it, counted from the first parameter */
} param_slice;

static bool is_per_layer(const param_spec *spec)
{
    return spec->kind == PARAM_LAYER_VECTOR || spec->kind == PARAM_LAYER_LINEAR;
}

/* Fills *slice for layer `layer` of spec. Call only with a config whose
 * parameter count fits in 64 bits, so that no product here overflows. */
static void describe_slice(const rt_llmc_config *c, const param_spec *spec, int layer,
                           param_slice *slice)
{
    int64_t channels = c->channels;
    slice->spec = spec;
    if (is_per_layer(spec))
        snprintf(slice->name, sizeof slice->name, "h.%d.%s", layer, spec->hf_name);
    else
        snprintf(slice->name, sizeof slice->name, "%s", spec->hf_name);
    switch (spec->kind) {
    case PARAM_TOKEN_EMBEDDING:
        slice->rank = 2;
        slice->dims[0] = c->vocab_size;
        slice->dims[1] = channels;
        slice->file_count = (uint64_t)c->padded_vocab_size * (uint64_t)channels;
        break;
    case PARAM_POSITION_EMBEDDING:
        slice->rank = 2;
        slice->dims[0] = c->max_seq_len;
        slice->dims[1] = channels;
        slice->file_count = (uint64_t)c->max_seq_len * (uint64_t)channels;
        break;
    case PARAM_LAYER_VECTOR:
    case PARAM_FINAL_VECTOR:
        slice->rank = 1;
        slice->dims[0] = spec->rows * channels;
        slice->file_count = (uint64_t)slice->dims[0];
        break;
    case PARAM_LAYER_LINEAR:
        slice->rank = 2;
        slice->dims[0] = spec->cols * channels; /* in */
        slice->dims[1] = spec->rows * channels; /* out */
        slice->file_count = (uint64_t)slice->dims[0] * (uint64_t)slice->dims[1];
        break;
    }
}

typedef int (*slice_visitor)(const param_slice *slice, void *context);

typedef enum slice_order {
    CHECKPOINT_ORDER, /* llm.c: each tensor kind stacked over all layers */
    HF_ORDER,         /* Hugging Face: wte, wpe, then layer by layer, then ln_f */
} slice_order;

static int visit_slice(const rt_llmc_config *c, const uint64_t *base, int p, int layer,
                       slice_visitor visit, void *context)
{
    param_slice slice;
    describe_slice(c, &PARAMS[p], layer, &slice);
    slice.file_offset = base[p] + (uint64_t)layer * slice.file_count;
    return visit(&slice, context);
}

/* Calls visit for every Hugging Face tensor in the given order and stops at
 * the first nonzero return, which it returns. */
static int for_each_slice(const rt_llmc_config *c, slice_order order, slice_visitor visit,
                          void *context)
{
    /* Offset of each llm.c tensor in floats from the first parameter. */
    uint64_t base[PARAM_COUNT];
    uint64_t offset = 0;
    for (int p = 0; p < PARAM_COUNT; p++) {
        param_slice slice;
        describe_slice(c, &PARAMS[p], 0, &slice);
        base[p] = offset;
        offset += slice.file_count * (uint64_t)(is_per_layer(&PARAMS[p]) ? c->num_layers : 1);
    }

    int status;
    if (order == CHECKPOINT_ORDER) {
        for (int p = 0; p < PARAM_COUNT; p++) {
            int layers = is_per_layer(&PARAMS[p]) ? c->num_layers : 1;
            for (int layer = 0; layer < layers; layer++)
                if ((status = visit_slice(c, base, p, layer, visit, context)) != 0)
                    return status;
        }
        return 0;
    }

    for (int p = 0; p < PARAM_COUNT; p++)
        if (PARAMS[p].kind == PARAM_TOKEN_EMBEDDING || PARAMS[p].kind == PARAM_POSITION_EMBEDDING)
            if ((status = visit_slice(c, base, p, 0, visit, context)) != 0)
                return status;
    for (int layer = 0; layer < c->num_layers; layer++)
        for (int p = 0; p < PARAM_COUNT; p++)
            if (is_per_layer(&PARAMS[p]))
                if ((status = visit_slice(c, base, p, layer, visit, context)) != 0)
                    return status;
    for (int p = 0; p < PARAM_COUNT; p++)
        if (PARAMS[p].kind == PARAM_FINAL_VECTOR)
            if ((status = visit_slice(c, base, p, 0, visit, context)) != 0)
                return status;
    return 0;
}

/* Counts the floats of all parameters (padding included), or returns false
 * when the count does not fit in 64 bits. */
static bool count_parameters(const rt_llmc_config *c, uint64_t *count)
{
    uint64_t channels = (uint64_t)c->channels, total = 0, term;
    /* Per layer: 2 LayerNorms (4C), qkv (3C*C + 3C), attention projection
     * (C*C + C), fc (4C*C + 4C), fc projection (4C*C + C): 12C^2 + 13C. */
    uint64_t per_layer;
    if (__builtin_mul_overflow(channels, channels, &per_layer) ||
        __builtin_mul_overflow(per_layer, 12u, &per_layer) ||
        __builtin_add_overflow(per_layer, 13u * channels, &per_layer) ||
        __builtin_mul_overflow(per_layer, (uint64_t)c->num_layers, &total))
        return false;
    if (__builtin_mul_overflow((uint64_t)c->padded_vocab_size, channels, &term) ||
        __builtin_add_overflow(total, term, &total))
        return false;
    if (__builtin_mul_overflow((uint64_t)c->max_seq_len, channels, &term) ||
        __builtin_add_overflow(total, term, &total))
        return false;
    if (__builtin_add_overflow(total, 2u * channels, &total))
        return false;
    *count = total;
    return true;
}

/* Largest per-tensor float count of any Linear weight, for scratch space. */
static uint64_t max_linear_count(const rt_llmc_config *c)
{
    return 4u * (uint64_t)c->channels * (uint64_t)c->channels;
}

/* Formats a shape as "[8, 24]" into buffer, truncating if it does not fit. */
static const char *shape_text(int rank, const int64_t *dims, char *buffer, size_t size)
{
    size_t used = (size_t)snprintf(buffer, size, "[");
    for (int i = 0; i < rank && used < size; i++)
        used += (size_t)snprintf(buffer + used, size - used, "%s%" PRId64, i ? ", " : "", dims[i]);
    if (used < size)
        snprintf(buffer + used, size - used, "]");
    return buffer;
}

/* Rejects a config that cannot describe a GPT-2 model. `source` is
 * "header" when the values come from a file and "config" otherwise. */
static int check_config(const char *path, const rt_llmc_config *c, const char *source, ir_diag *d)
{
    const struct {
        const char *name;
        int value;
    } fields[] = {
        {"maxT", c->max_seq_len}, {"V", c->vocab_size}, {"Vp", c->padded_vocab_size},
        {"L", c->num_layers},     {"NH", c->num_heads}, {"C", c->channels},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (fields[i].value <= 0) {
            ir_diag_file_error(d, path, "%s field %s is %d, but it must be positive", source,
                               fields[i].name, fields[i].value);
            return -1;
        }
    }
    if (c->padded_vocab_size < c->vocab_size) {
        ir_diag_file_error(d, path, "%s field Vp is %d, below V=%d; Vp is the vocabulary size "
                           "padded up and cannot be smaller", source, c->padded_vocab_size,
                           c->vocab_size);
        return -1;
    }
    if (c->channels % c->num_heads != 0) {
        ir_diag_file_error(d, path, "%s field C is %d, which is not divisible by NH=%d; GPT-2 "
                           "splits the C channels evenly across the heads", source, c->channels,
                           c->num_heads);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Reading parameters                                                     */
/* ---------------------------------------------------------------------- */

typedef struct read_context {
    const char *path;
    ir_diag *diag;
    const char *kind; /* "tensor" or "gradient", for messages */
    int fd;
    uint64_t offset; /* byte offset of the first parameter */
    float *scratch;  /* max_linear_count floats */
    rt_weights *weights;
} read_context;

static int read_floats(read_context *r, const param_slice *slice, void *buffer, uint64_t count)
{
    uint64_t offset = r->offset + slice->file_offset * 4;
    int status = rt_read_exact_at(r->fd, buffer, (size_t)count * 4, offset);
    if (status != 0) {
        ir_diag_file_error(r->diag, r->path, "cannot read %s '%s' (llm.c %s) at byte %" PRIu64 ": %s",
                           r->kind, slice->name, slice->spec->llmc_name, offset,
                           status < 0 ? strerror(errno) : "unexpected end of file");
        return -1;
    }
    return 0;
}

static int read_slice(const param_slice *slice, void *context)
{
    read_context *r = context;
    rt_tensor *t = rt_tensor_new(IR_F32, slice->rank, slice->dims);
    if (!t) {
        ir_diag_file_error(r->diag, r->path, "out of memory allocating %s '%s'", r->kind, slice->name);
        return -1;
    }
    int status;
    if (slice->spec->kind == PARAM_LAYER_LINEAR) {
        /* llm.c (out, in) into Hugging Face (in, out). */
        int64_t in = slice->dims[0], out = slice->dims[1];
        status = read_floats(r, slice, r->scratch, slice->file_count);
        float *dst = t->data;
        for (int64_t o = 0; status == 0 && o < out; o++)
            for (int64_t i = 0; i < in; i++)
                dst[i * out + o] = r->scratch[o * in + i];
    } else {
        /* The token embedding reads only the V real rows and skips the
         * Vp - V padding rows. */
        status = read_floats(r, slice, t->data, (uint64_t)rt_tensor_numel(t));
    }
    if (status == 0 && rt_weights_set(r->weights, slice->name, t) != 0) {
        ir_diag_file_error(r->diag, r->path, "out of memory storing %s '%s'", r->kind, slice->name);
        status = -1;
    }
    if (status != 0)
        rt_tensor_free(t);
    return status;
}

/* Reads all parameters of config starting at byte `offset` of fd into a
 * new weight set with Hugging Face names, layouts and order. */
static rt_weights *read_parameters(const char *path, int fd, uint64_t offset,
                                   const rt_llmc_config *c, const char *kind, ir_diag *d)
{
    read_context r = {path, d, kind, fd, offset, NULL, rt_weights_new()};
    r.scratch = malloc((size_t)max_linear_count(c) * sizeof(float));
    if (!r.weights || !r.scratch) {
        ir_diag_file_error(d, path, "out of memory reading the llm.c parameters");
        free(r.scratch);
        rt_weights_free(r.weights);
        return NULL;
    }
    int status = for_each_slice(c, HF_ORDER, read_slice, &r);
    free(r.scratch);
    if (status != 0) {
        rt_weights_free(r.weights);
        return NULL;
    }
    return r.weights;
}

/* Opens path and reads its 256-int header after checking the magic number
 * and version. Returns the file descriptor, or -1 after reporting. */
static int open_with_header(const char *path, const char *file_kind, int32_t magic, int32_t version,
                            int32_t header[RT_LLMC_HEADER_INTS], uint64_t *file_size, ir_diag *d)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ir_diag_file_error(d, path, "cannot open llm.c %s: %s", file_kind, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ir_diag_file_error(d, path, "not a regular file; expected an llm.c %s", file_kind);
        close(fd);
        return -1;
    }
    *file_size = (uint64_t)st.st_size;
    if (*file_size < RT_LLMC_HEADER_BYTES) {
        ir_diag_file_error(d, path, "file is %" PRIu64 " bytes, shorter than the %d-byte header "
                           "of an llm.c %s; the file is truncated", *file_size,
                           RT_LLMC_HEADER_BYTES, file_kind);
        close(fd);
        return -1;
    }
    if (rt_read_exact_at(fd, header, RT_LLMC_HEADER_BYTES, 0) != 0) {
        ir_diag_file_error(d, path, "cannot read the llm.c header: %s", strerror(errno));
        close(fd);
        return -1;
    }

    if (header[0] != magic) {
        const char *actual = header[0] == RT_LLMC_CHECKPOINT_MAGIC ? " (an llm.c model checkpoint)"
                           : header[0] == RT_LLMC_TOKENS_MAGIC ? " (an llm.c token shard)"
                           : header[0] == RT_LLMC_DEBUG_STATE_MAGIC ? " (an llm.c debug state)"
                           : "";
        ir_diag_file_error(d, path, "header field magic is %" PRId32 "%s, but an llm.c %s has "
                           "magic %" PRId32 "; pass a file of the right kind", header[0], actual,
                           file_kind, magic);
        close(fd);
        return -1;
    }
    if (header[1] != version) {
        const char *hint = magic == RT_LLMC_CHECKPOINT_MAGIC && header[1] == 5
                               ? "; version 5 stores bf16, so export an fp32 checkpoint from llm.c"
                               : "";
        ir_diag_file_error(d, path, "header field version is %" PRId32 ", but quadc reads only "
                           "version %" PRId32 " llm.c %ss%s", header[1], version, file_kind, hint);
        close(fd);
        return -1;
    }
    return fd;
}

rt_weights *rt_llmc_read_checkpoint(const char *path, rt_llmc_config *config, ir_diag *d)
{
    int32_t header[RT_LLMC_HEADER_INTS];
    uint64_t file_size;
    int fd = open_with_header(path, "checkpoint", RT_LLMC_CHECKPOINT_MAGIC,
                              RT_LLMC_CHECKPOINT_VERSION, header, &file_size, d);
    if (fd < 0)
        return NULL;

    rt_llmc_config c = {
        .max_seq_len = header[2],
        .vocab_size = header[3],
        .num_layers = header[4],
        .num_heads = header[5],
        .channels = header[6],
        .padded_vocab_size = header[7],
    };
    rt_weights *w = NULL;
    uint64_t count = 0, expected = 0;
    if (check_config(path, &c, "header", d) != 0)
        goto done;
    if (!count_parameters(&c, &count) || __builtin_mul_overflow(count, 4u, &expected) ||
        __builtin_add_overflow(expected, (uint64_t)RT_LLMC_HEADER_BYTES, &expected)) {
        ir_diag_file_error(d, path, "header sizes maxT=%d V=%d Vp=%d L=%d C=%d give a parameter "
                           "count above 2^64; the header is corrupt", c.max_seq_len, c.vocab_size,
                           c.padded_vocab_size, c.num_layers, c.channels);
        goto done;
    }
    if (file_size != expected) {
        ir_diag_file_error(d, path, "file is %" PRIu64 " bytes, but the header (maxT=%d V=%d Vp=%d "
                           "L=%d NH=%d C=%d) needs %d + 4 * %" PRIu64 " = %" PRIu64 " bytes; the "
                           "file is truncated or the header is wrong", file_size, c.max_seq_len,
                           c.vocab_size, c.padded_vocab_size, c.num_layers, c.num_heads,
                           c.channels, RT_LLMC_HEADER_BYTES, count, expected);
        goto done;
    }
    w = read_parameters(path, fd, RT_LLMC_HEADER_BYTES, &c, "tensor", d);
    if (w)
        *config = c;

done:
    close(fd);
    return w;
}

/* ---------------------------------------------------------------------- */
/* Writing parameters                                                     */
/* ---------------------------------------------------------------------- */

typedef struct write_context {
    const char *path;
    ir_diag *diag;
    const char *kind; /* "tensor" or "gradient", for messages */
    const rt_llmc_config *config;
    const rt_weights *weights;
    rt_atomic_file *out;
    float *scratch; /* scratch_count floats */
    uint64_t scratch_count;
} write_context;

static float element_as_f32(const rt_tensor *t, uint64_t i)
{
    switch (t->dtype) {
    case IR_F16: return rt_f16_to_f32(((const uint16_t *)t->data)[i]);
    case IR_BF16: return rt_bf16_to_f32(((const uint16_t *)t->data)[i]);
    default: return ((const float *)t->data)[i];
    }
}

static bool has_shape(const rt_tensor *t, int rank, const int64_t *dims)
{
    if (t->rank != rank)
        return false;
    for (int i = 0; i < rank; i++)
        if (t->dims[i] != dims[i])
            return false;
    return true;
}

static int check_slice(const param_slice *slice, void *context)
{
    write_context *wc = context;
    const rt_llmc_config *c = wc->config;
    const rt_tensor *t = rt_weights_get(wc->weights, slice->name);
    char expected[64], actual[256];
    shape_text(slice->rank, slice->dims, expected, sizeof expected);
    if (!t) {
        ir_diag_file_error(wc->diag, wc->path, "%s '%s' (llm.c %s) is missing; a GPT-2 model with "
                           "L=%d and C=%d needs it with shape %s", wc->kind, slice->name,
                           slice->spec->llmc_name, c->num_layers, c->channels, expected);
        return -1;
    }
    if (t->dtype != IR_F32 && t->dtype != IR_F16 && t->dtype != IR_BF16) {
        ir_diag_file_error(wc->diag, wc->path, "%s '%s' has dtype %s, but llm.c stores f32; only "
                           "f32, f16 and bf16 tensors can be converted", wc->kind, slice->name,
                           ir_dtype_name(t->dtype));
        return -1;
    }
    if (has_shape(t, slice->rank, slice->dims))
        return 0;

    int64_t padded[2] = {c->padded_vocab_size, c->channels};
    if (slice->spec->kind == PARAM_TOKEN_EMBEDDING && has_shape(t, 2, padded)) {
        uint64_t first = (uint64_t)c->vocab_size * (uint64_t)c->channels;
        uint64_t end = (uint64_t)c->padded_vocab_size * (uint64_t)c->channels;
        for (uint64_t i = first; i < end; i++) {
            if (element_as_f32(t, i) != 0.0f) {
                ir_diag_file_error(wc->diag, wc->path, "%s '%s' has Vp=%d rows, but padding row "
                                   "%" PRIu64 " (of rows %d..%d) is not zero; pass the V=%d "
                                   "unpadded rows or zero the padding", wc->kind, slice->name,
                                   c->padded_vocab_size, i / (uint64_t)c->channels, c->vocab_size,
                                   c->padded_vocab_size - 1, c->vocab_size);
                return -1;
            }
        }
        return 0;
    }
    ir_diag_file_error(wc->diag, wc->path, "%s '%s' has shape %s, but llm.c %s needs %s in the "
                       "Hugging Face layout for maxT=%d V=%d C=%d", wc->kind, slice->name,
                       shape_text(t->rank, t->dims, actual, sizeof actual),
                       slice->spec->llmc_name, expected, c->max_seq_len, c->vocab_size,
                       c->channels);
    return -1;
}

/* A tensor name looked up among the slices, to find tensors without a place. */
typedef struct name_search {
    const char *name;
    bool found;
} name_search;

static int match_slice_name(const param_slice *slice, void *context)
{
    name_search *search = context;
    if (strcmp(slice->name, search->name) == 0) {
        search->found = true;
        return 1;
    }
    return 0;
}

/* Checks that w contains exactly the GPT-2 parameters of the config. */
static int check_parameters(write_context *wc)
{
    if (for_each_slice(wc->config, CHECKPOINT_ORDER, check_slice, wc) != 0)
        return -1;
    for (int i = 0; i < wc->weights->count; i++) {
        name_search search = {wc->weights->names[i], false};
        for_each_slice(wc->config, CHECKPOINT_ORDER, match_slice_name, &search);
        if (!search.found) {
            ir_diag_file_error(wc->diag, wc->path, "%s '%s' is not one of the GPT-2 parameters "
                               "that llm.c stores for L=%d; remove it, or canonicalize the GPT-2 "
                               "names first", wc->kind, search.name, wc->config->num_layers);
            return -1;
        }
    }
    return 0;
}

/* Writes `count` floats of t from element `first` on, converted to f32. */
static int write_converted(write_context *wc, const rt_tensor *t, uint64_t first, uint64_t count)
{
    if (t->dtype == IR_F32)
        return rt_atomic_file_write(wc->out, (const float *)t->data + first, (size_t)count * 4);
    while (count > 0) {
        uint64_t chunk = count < wc->scratch_count ? count : wc->scratch_count;
        for (uint64_t i = 0; i < chunk; i++)
            wc->scratch[i] = element_as_f32(t, first + i);
        if (rt_atomic_file_write(wc->out, wc->scratch, (size_t)chunk * 4) != 0)
            return -1;
        first += chunk;
        count -= chunk;
    }
    return 0;
}

static int write_zeros(write_context *wc, uint64_t count)
{
    memset(wc->scratch, 0, (size_t)wc->scratch_count * sizeof(float));
    while (count > 0) {
        uint64_t chunk = count < wc->scratch_count ? count : wc->scratch_count;
        if (rt_atomic_file_write(wc->out, wc->scratch, (size_t)chunk * 4) != 0)
            return -1;
        count -= chunk;
    }
    return 0;
}

static int write_slice(const param_slice *slice, void *context)
{
    write_context *wc = context;
    const rt_tensor *t = rt_weights_get(wc->weights, slice->name);
    if (slice->spec->kind == PARAM_LAYER_LINEAR) {
        /* Hugging Face (in, out) into llm.c (out, in). */
        int64_t in = slice->dims[0], out = slice->dims[1];
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++)
                wc->scratch[o * in + i] = element_as_f32(t, (uint64_t)(i * out + o));
        return rt_atomic_file_write(wc->out, wc->scratch, (size_t)slice->file_count * 4);
    }
    uint64_t count = (uint64_t)rt_tensor_numel(t);
    if (write_converted(wc, t, 0, count) != 0)
        return -1;
    /* Only an unpadded token embedding is shorter than its file slice. */
    return write_zeros(wc, slice->file_count - count);
}

/* Checks w against config, then writes all parameters in checkpoint order
 * to out. Returns 0, or -1 after reporting. */
static int write_parameters(const char *path, rt_atomic_file *out, const rt_weights *w,
                            const rt_llmc_config *c, const char *kind, ir_diag *d)
{
    uint64_t scratch_count = max_linear_count(c);
    if (scratch_count < 65536)
        scratch_count = 65536;
    write_context wc = {path, d, kind, c, w, out, NULL, scratch_count};
    if (check_parameters(&wc) != 0)
        return -1;
    wc.scratch = malloc((size_t)scratch_count * sizeof(float));
    if (!wc.scratch) {
        ir_diag_file_error(d, path, "out of memory converting the parameters");
        return -1;
    }
    int status = for_each_slice(c, CHECKPOINT_ORDER, write_slice, &wc);
    free(wc.scratch);
    return status;
}

static int check_writable_config(const char *path, const rt_llmc_config *c, ir_diag *d)
{
    uint64_t count;
    if (check_config(path, c, "config", d) != 0)
        return -1;
    if (!count_parameters(c, &count) || count > UINT64_MAX / 4 - RT_LLMC_HEADER_BYTES) {
        ir_diag_file_error(d, path, "config sizes maxT=%d Vp=%d L=%d C=%d give a parameter count "
                           "above 2^64", c->max_seq_len, c->padded_vocab_size, c->num_layers,
                           c->channels);
        return -1;
    }
    return 0;
}

static void fill_header(int32_t header[RT_LLMC_HEADER_INTS], int32_t magic, int32_t version)
{
    memset(header, 0, RT_LLMC_HEADER_BYTES);
    header[0] = magic;
    header[1] = version;
}

int rt_llmc_write_checkpoint(const char *path, const rt_weights *w, const rt_llmc_config *config,
                             ir_diag *d)
{
    if (check_writable_config(path, config, d) != 0)
        return -1;
    int32_t header[RT_LLMC_HEADER_INTS];
    fill_header(header, RT_LLMC_CHECKPOINT_MAGIC, RT_LLMC_CHECKPOINT_VERSION);
    header[2] = config->max_seq_len;
    header[3] = config->vocab_size;
    header[4] = config->num_layers;
    header[5] = config->num_heads;
    header[6] = config->channels;
    header[7] = config->padded_vocab_size;

    rt_atomic_file out;
    if (rt_atomic_file_open(&out, path, d) != 0)
        return -1;
    rt_atomic_file_write(&out, header, RT_LLMC_HEADER_BYTES);
    if (write_parameters(path, &out, w, config, "tensor", d) != 0) {
        rt_atomic_file_abort(&out);
        return -1;
    }
    return rt_atomic_file_commit(&out);
}

int rt_llmc_config_to_meta(rt_weights *w, const rt_llmc_config *config, ir_diag *d, const char *path)
{
    const struct {
        const char *name;
        int value;
    } header[] = {
        {"n_layer", config->num_layers}, {"n_embd", config->channels},   {"n_head", config->num_heads},
        {"n_vocab", config->vocab_size}, {"n_ctx", config->max_seq_len},
    };
    for (size_t i = 0; i < sizeof header / sizeof header[0]; i++) {
        char text[32];
        snprintf(text, sizeof text, "%d", header[i].value);
        if (rt_weights_set_meta(w, header[i].name, text) != 0) {
            ir_diag_file_error(d, path, "out of memory recording the checkpoint header");
            return -1;
        }
    }
    return 0;
}

int rt_llmc_infer_config(const rt_weights *w, int num_heads, rt_llmc_config *config,
                         ir_diag *d, const char *path)
{
    const rt_tensor *wte = rt_weights_get(w, "wte.weight");
    const rt_tensor *wpe = rt_weights_get(w, "wpe.weight");
    if (!wte || wte->rank != 2) {
        ir_diag_file_error(d, path, "%s; a GPT-2 weight set needs the token embedding "
                           "'wte.weight' with shape [V, C]",
                           wte ? "'wte.weight' is not a matrix" : "'wte.weight' is missing");
        return -1;
    }
    if (!wpe || wpe->rank != 2 || wpe->dims[1] != wte->dims[1]) {
        ir_diag_file_error(d, path, "%s; a GPT-2 weight set needs the position embedding "
                           "'wpe.weight' with shape [maxT, C=%" PRId64 "]",
                           wpe ? "'wpe.weight' has the wrong shape" : "'wpe.weight' is missing",
                           wte->dims[1]);
        return -1;
    }
    int64_t vocab = wte->dims[0], channels = wte->dims[1], positions = wpe->dims[0];
    if (vocab > INT32_MAX - RT_LLMC_VOCAB_ALIGNMENT || channels > INT32_MAX ||
        positions > INT32_MAX) {
        ir_diag_file_error(d, path, "embedding sizes V=%" PRId64 " C=%" PRId64 " maxT=%" PRId64
                           " do not fit the int32 fields of an llm.c header", vocab, channels,
                           positions);
        return -1;
    }

    int layers = 0;
    for (;; layers++) {
        char name[64];
        snprintf(name, sizeof name, "h.%d.ln_1.weight", layers);
        if (!rt_weights_get(w, name))
            break;
    }
    if (layers == 0) {
        ir_diag_file_error(d, path, "'h.0.ln_1.weight' is missing, so the weight set has no "
                           "transformer layers; canonicalize the GPT-2 names first");
        return -1;
    }

    config->max_seq_len = (int)positions;
    config->vocab_size = (int)vocab;
    config->padded_vocab_size = (int)((vocab + RT_LLMC_VOCAB_ALIGNMENT - 1) /
                                      RT_LLMC_VOCAB_ALIGNMENT * RT_LLMC_VOCAB_ALIGNMENT);
    config->num_layers = layers;
    config->num_heads = num_heads;
    config->channels = (int)channels;
    return check_config(path, config, "config", d);
}

/* ---------------------------------------------------------------------- */
/* Token shards                                                           */
/* ---------------------------------------------------------------------- */

uint16_t *rt_llmc_read_tokens(const char *path, size_t *count, ir_diag *d)
{
    int32_t header[RT_LLMC_HEADER_INTS];
    uint64_t file_size;
    int fd = open_with_header(path, "token shard", RT_LLMC_TOKENS_MAGIC, RT_LLMC_TOKENS_VERSION,
                              header, &file_size, d);
    if (fd < 0)
        return NULL;

    uint16_t *tokens = NULL;
    int32_t n = header[2];
    if (n < 0) {
        ir_diag_file_error(d, path, "header field token count is %" PRId32 ", but it must not be "
                           "negative", n);
        goto done;
    }
    uint64_t expected = RT_LLMC_HEADER_BYTES + 2 * (uint64_t)n;
    if (file_size != expected) {
        ir_diag_file_error(d, path, "file is %" PRIu64 " bytes, but header field token count %"
                           PRId32 " needs %d + 2 * %" PRId32 " = %" PRIu64 " bytes; the file is "
                           "truncated or the header is wrong", file_size, n,
                           RT_LLMC_HEADER_BYTES, n, expected);
        goto done;
    }
    tokens = malloc(n > 0 ? (size_t)n * 2 : 1);
    if (!tokens) {
        ir_diag_file_error(d, path, "out of memory for %" PRId32 " tokens", n);
        goto done;
    }
    int status = rt_read_exact_at(fd, tokens, (size_t)n * 2, RT_LLMC_HEADER_BYTES);
    if (status != 0) {
        ir_diag_file_error(d, path, "cannot read %" PRId32 " tokens: %s", n,
                           status < 0 ? strerror(errno) : "unexpected end of file");
        free(tokens);
        tokens = NULL;
        goto done;
    }
    *count = (size_t)n;

done:
    close(fd);
    return tokens;
}

int rt_llmc_write_tokens(const char *path, const uint16_t *tokens, size_t count, ir_diag *d)
{
    if (count > INT32_MAX) {
        ir_diag_file_error(d, path, "cannot write %zu tokens: the token count field of an llm.c "
                           "shard is int32, so split the tokens into shards of at most %d",
                           count, INT32_MAX);
        return -1;
    }
    int32_t header[RT_LLMC_HEADER_INTS];
    fill_header(header, RT_LLMC_TOKENS_MAGIC, RT_LLMC_TOKENS_VERSION);
    header[2] = (int32_t)count;

    rt_atomic_file out;
    if (rt_atomic_file_open(&out, path, d) != 0)
        return -1;
    rt_atomic_file_write(&out, header, RT_LLMC_HEADER_BYTES);
    rt_atomic_file_write(&out, tokens, count * 2);
    return rt_atomic_file_commit(&out);
}

/* ---------------------------------------------------------------------- */
/* Debug states                                                           */
/* ---------------------------------------------------------------------- */

/* Computes the B*T token count and the B*T*V logit count of a batch.
 * Returns false when they do not fit in 64 bits. */
static bool batch_counts(const rt_llmc_config *c, int batch_size, int seq_len,
                         uint64_t *token_count, uint64_t *logit_count)
{
    *token_count = (uint64_t)batch_size * (uint64_t)seq_len;
    return !__builtin_mul_overflow(*token_count, (uint64_t)c->vocab_size, logit_count);
}

static int check_batch_size(const char *path, const rt_llmc_config *c, const char *source,
                            int batch_size, int seq_len, ir_diag *d)
{
    if (batch_size <= 0) {
        ir_diag_file_error(d, path, "%s field B is %d, but it must be positive", source, batch_size);
        return -1;
    }
    if (seq_len <= 0 || seq_len > c->max_seq_len) {
        ir_diag_file_error(d, path, "%s field T is %d, but it must be in 1..maxT=%d", source,
                           seq_len, c->max_seq_len);
        return -1;
    }
    return 0;
}

static int check_token_ids(const char *path, const char *field, const int32_t *ids, uint64_t count,
                           int vocab_size, ir_diag *d)
{
    for (uint64_t i = 0; i < count; i++) {
        if (ids[i] < 0 || ids[i] >= vocab_size) {
            ir_diag_file_error(d, path, "%s[%" PRIu64 "] is %" PRId32 ", outside the vocabulary "
                               "0..%d", field, i, ids[i], vocab_size - 1);
            return -1;
        }
    }
    return 0;
}

int rt_llmc_write_debug_state(const char *path, const rt_llmc_config *config,
                              const rt_llmc_debug_state *state, ir_diag *d)
{
    uint64_t token_count, logit_count;
    if (check_writable_config(path, config, d) != 0 ||
        check_batch_size(path, config, "debug state", state->batch_size, state->seq_len, d) != 0)
        return -1;
    if (!batch_counts(config, state->batch_size, state->seq_len, &token_count, &logit_count)) {
        ir_diag_file_error(d, path, "B=%d T=%d V=%d give more than 2^64 logits", state->batch_size,
                           state->seq_len, config->vocab_size);
        return -1;
    }
    if (check_token_ids(path, "inputs", state->inputs, token_count, config->vocab_size, d) != 0 ||
        check_token_ids(path, "targets", state->targets, token_count, config->vocab_size, d) != 0)
        return -1;

    int32_t header[RT_LLMC_HEADER_INTS];
    fill_header(header, RT_LLMC_DEBUG_STATE_MAGIC, RT_LLMC_DEBUG_STATE_VERSION);
    header[2] = state->batch_size;
    header[3] = state->seq_len;

    rt_atomic_file out;
    if (rt_atomic_file_open(&out, path, d) != 0)
        return -1;
    rt_atomic_file_write(&out, header, RT_LLMC_HEADER_BYTES);
    rt_atomic_file_write(&out, state->inputs, (size_t)token_count * 4);
    rt_atomic_file_write(&out, state->targets, (size_t)token_count * 4);
    rt_atomic_file_write(&out, state->logits, (size_t)logit_count * 4);
    rt_atomic_file_write(&out, &state->loss, 4);
    if (write_parameters(path, &out, state->grads, config, "gradient", d) != 0) {
        rt_atomic_file_abort(&out);
        return -1;
    }
    return rt_atomic_file_commit(&out);
}

void rt_llmc_debug_state_free(rt_llmc_debug_state *state)
{
    free(state->inputs);
    free(state->targets);
    free(state->logits);
    rt_weights_free(state->grads);
    memset(state, 0, sizeof *state);
}

int rt_llmc_read_debug_state(const char *path, const rt_llmc_config *config,
                             rt_llmc_debug_state *state, ir_diag *d)
{
    memset(state, 0, sizeof *state);
    int32_t header[RT_LLMC_HEADER_INTS];
    uint64_t file_size;
    if (check_writable_config(path, config, d) != 0)
        return -1;
    int fd = open_with_header(path, "debug state", RT_LLMC_DEBUG_STATE_MAGIC,
                              RT_LLMC_DEBUG_STATE_VERSION, header, &file_size, d);
    if (fd < 0)
        return -1;

    int status = -1;
    uint64_t token_count, logit_count, parameter_count = 0, expected;
    if (check_batch_size(path, config, "header", header[2], header[3], d) != 0)
        goto done;
    count_parameters(config, &parameter_count); /* cannot overflow after the config check */
    /* Fields after the header: inputs, targets, logits, loss, gradients. */
    if (!batch_counts(config, header[2], header[3], &token_count, &logit_count) ||
        __builtin_add_overflow(2 * token_count, logit_count, &expected) ||
        __builtin_add_overflow(expected, 1 + parameter_count, &expected) ||
        __builtin_mul_overflow(expected, 4u, &expected) ||
        __builtin_add_overflow(expected, (uint64_t)RT_LLMC_HEADER_BYTES, &expected)) {
        ir_diag_file_error(d, path, "header fields B=%" PRId32 " T=%" PRId32 " with V=%d give a "
                           "file size above 2^64; the header is corrupt", header[2], header[3],
                           config->vocab_size);
        goto done;
    }
    if (file_size != expected) {
        ir_diag_file_error(d, path, "file is %" PRIu64 " bytes, but B=%" PRId32 " T=%" PRId32
                           " and the model (V=%d, %" PRIu64 " parameters) need %" PRIu64 " bytes; "
                           "the file is truncated or was written for another model", file_size,
                           header[2], header[3], config->vocab_size, parameter_count, expected);
        goto done;
    }

    state->batch_size = header[2];
    state->seq_len = header[3];
    state->inputs = malloc((size_t)token_count * 4);
    state->targets = malloc((size_t)token_count * 4);
    state->logits = malloc((size_t)logit_count * 4);
    if (!state->inputs || !state->targets || !state->logits) {
        ir_diag_file_error(d, path, "out of memory for %" PRIu64 " logits", logit_count);
        goto done;
    }
    uint64_t offset = RT_LLMC_HEADER_BYTES;
    if (rt_read_exact_at(fd, state->inputs, (size_t)token_count * 4, offset) != 0 ||
        rt_read_exact_at(fd, state->targets, (size_t)token_count * 4, offset + token_count * 4) != 0 ||
        rt_read_exact_at(fd, state->logits, (size_t)logit_count * 4, offset + token_count * 8) != 0 ||
        rt_read_exact_at(fd, &state->loss, 4, offset + token_count * 8 + logit_count * 4) != 0) {
        ir_diag_file_error(d, path, "cannot read the inputs, targets, logits and loss: %s",
                           strerror(errno));
        goto done;
    }
    offset += token_count * 8 + logit_count * 4 + 4;
    state->grads = read_parameters(path, fd, offset, config, "gradient", d);
    if (state->grads)
        status = 0;

done:
    close(fd);
    if (status != 0)
        rt_llmc_debug_state_free(state);
    return status;
}
