/* Training checkpoints: writing, reading, and restoring a trainer. The
 * metadata stores floats with %.9g, which round-trips every f32 exactly. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/safetensors.h"
#include "runtime/train.h"

/* Value of the "format" metadata key. The reader rejects any other. */
#define CHECKPOINT_FORMAT "quadc-train-1"

void rt_train_checkpoint_path(const rt_train_config *c, int step, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/ckpt_%06d.safetensors", c->ckpt_dir ? c->ckpt_dir : ".", step);
}

static int set_int(rt_weights *meta, const char *key, long long value)
{
    char text[32];
    snprintf(text, sizeof text, "%lld", value);
    return rt_weights_set_meta(meta, key, text);
}

static int set_float(rt_weights *meta, const char *key, float value)
{
    char text[32];
    snprintf(text, sizeof text, "%.9g", value);
    return rt_weights_set_meta(meta, key, text);
}

static int fill_metadata(const rt_trainer *t, rt_weights *meta)
{
    const rt_train_config *c = &t->config;
    char rng[65];
    char seed[32];
    rt_rng_format(&t->sampler, rng);
    snprintf(seed, sizeof seed, "%" PRIu64, c->seed);
    int schedule_steps = c->schedule_steps > 0 ? c->schedule_steps : c->steps;
    int rc = rt_weights_set_meta(meta, "format", CHECKPOINT_FORMAT);
    rc |= rt_weights_set_meta(meta, "model", c->model_path);
    rc |= set_int(meta, "step", t->step);
    rc |= rt_weights_set_meta(meta, "rng", rng);
    rc |= rt_weights_set_meta(meta, "seed", seed);
    rc |= set_int(meta, "batch", c->batch);
    rc |= set_int(meta, "seq", c->seq);
    rc |= set_int(meta, "schedule_steps", schedule_steps);
    rc |= set_float(meta, "lr", c->lr);
    rc |= set_int(meta, "warmup", c->warmup);
    rc |= set_float(meta, "min_lr_frac", c->min_lr_frac);
    rc |= set_float(meta, "beta1", c->adamw.beta1);
    rc |= set_float(meta, "beta2", c->adamw.beta2);
    rc |= set_float(meta, "eps", c->adamw.eps);
    rc |= set_float(meta, "weight_decay", c->adamw.weight_decay);
    rc |= set_int(meta, "decay_all", c->adamw.decay_all);
    rc |= set_float(meta, "grad_clip", c->adamw.grad_clip);
    rc |= set_int(meta, "threads", c->threads);
    rc |= rt_weights_set_meta(meta, "executor", c->executor->name);
    if (c->data_description)
        rc |= rt_weights_set_meta(meta, "data", c->data_description);
    return rc ? -1 : 0;
}

static int make_dir(const char *dir, ir_diag *d)
{
    if (mkdir(dir, 0777) == 0 || errno == EEXIST)
        return 0;
    ir_diag_file_error(d, dir, "cannot create the checkpoint directory: %s", strerror(errno));
    return -1;
}

int rt_trainer_save_checkpoint(rt_trainer *t, const char *path, ir_diag *d)
{
    if (t->config.ckpt_dir && make_dir(t->config.ckpt_dir, d) != 0)
        return -1;
    rt_weights *meta = rt_weights_new();
    int nparams = t->params->count;
    int n = 3 * nparams;
    char **names = calloc((size_t)n + 1, sizeof *names);
    rt_tensor **tensors = calloc((size_t)n + 1, sizeof *tensors);
    int rc = -1;
    if (!meta || !names || !tensors || fill_metadata(t, meta) != 0) {
        ir_diag_file_error(d, path, "out of memory preparing the checkpoint");
        goto done;
    }
    const rt_weights *sets[3] = {t->params, t->opt->m, t->opt->v};
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < nparams; i++) {
            names[s * nparams + i] = sets[s]->names[i];
            tensors[s * nparams + i] = sets[s]->tensors[i];
        }
    rt_weights file = rt_weights_borrow(names, tensors, n);
    file.nmeta = meta->nmeta;
    file.meta_keys = meta->meta_keys;
    file.meta_values = meta->meta_values;
    rc = rt_safetensors_write(path, &file, d);
done:
    free(names);
    free(tensors);
    rt_weights_free(meta);
    return rc;
}

rt_weights *rt_train_checkpoint_read(const char *path, ir_diag *d)
{
    rt_weights *w = rt_safetensors_read(path, d);
    if (!w) {
        ir_diag_file_error(d, path, "cannot resume from this checkpoint; pass another with --resume or start anew");
        return NULL;
    }
    const char *format = rt_weights_get_meta(w, "format");
    if (!format || strcmp(format, CHECKPOINT_FORMAT) != 0) {
        ir_diag_file_error(d, path, "not a quadc training checkpoint: metadata 'format' is %s%s%s, expected '%s'",
                           format ? "'" : "", format ? format : "missing", format ? "'" : "", CHECKPOINT_FORMAT);
        rt_weights_free(w);
        return NULL;
    }
    return w;
}

/* Returns a metadata value, or NULL after reporting that it is missing. */
static const char *meta_value(const rt_weights *ckpt, const char *path, const char *key, ir_diag *d)
{
    const char *value = rt_weights_get_meta(ckpt, key);
    if (!value)
        ir_diag_file_error(d, path, "checkpoint metadata '%s' is missing", key);
    return value;
}

static int meta_long(const rt_weights *ckpt, const char *path, const char *key, long long min, long long *out,
                     ir_diag *d)
{
    const char *text = meta_value(ckpt, path, key, d);
    if (!text)
        return -1;
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || end == text || *end || value < min || value > INT32_MAX) {
        ir_diag_file_error(d, path, "checkpoint metadata '%s' is '%s', not an integer in [%lld, %d]", key, text, min,
                           INT32_MAX);
        return -1;
    }
    *out = value;
    return 0;
}

static int meta_float(const rt_weights *ckpt, const char *path, const char *key, float *out, ir_diag *d)
{
    const char *text = meta_value(ckpt, path, key, d);
    if (!text)
        return -1;
    char *end;
    float value = strtof(text, &end);
    if (end == text || *end) {
        ir_diag_file_error(d, path, "checkpoint metadata '%s' is '%s', not a number", key, text);
        return -1;
    }
    *out = value;
    return 0;
}

/* Stores an integer setting, counting it when it differs. */
static int apply_int(const rt_weights *ckpt, const char *path, const char *key, long long min, int *field,
                     int *changed, ir_diag *d)
{
    long long value;
    if (meta_long(ckpt, path, key, min, &value, d) != 0)
        return -1;
    *changed += *field != (int)value;
    *field = (int)value;
    return 0;
}

static int apply_float(const rt_weights *ckpt, const char *path, const char *key, float *field, int *changed,
                       ir_diag *d)
{
    float value;
    if (meta_float(ckpt, path, key, &value, d) != 0)
        return -1;
    *changed += *field != value;
    *field = value;
    return 0;
}

int rt_train_checkpoint_apply_config(const rt_weights *ckpt, const char *path, rt_train_config *c, ir_diag *d)
{
    int changed = 0;
    int decay_all = c->adamw.decay_all;
    if (c->schedule_steps <= 0)
        c->schedule_steps = c->steps;
    long long threads = 0;
    const char *seed_text = meta_value(ckpt, path, "seed", d);
    char *end = NULL;
    uint64_t seed = seed_text ? strtoull(seed_text, &end, 10) : 0;
    if (seed_text && (end == seed_text || *end)) {
        ir_diag_file_error(d, path, "checkpoint metadata 'seed' is '%s', not an unsigned integer", seed_text);
        return -1;
    }
    int rc = seed_text ? 0 : -1;
    rc |= apply_int(ckpt, path, "batch", 1, &c->batch, &changed, d);
    rc |= apply_int(ckpt, path, "seq", 1, &c->seq, &changed, d);
    rc |= apply_int(ckpt, path, "schedule_steps", 0, &c->schedule_steps, &changed, d);
    rc |= apply_float(ckpt, path, "lr", &c->lr, &changed, d);
    rc |= apply_int(ckpt, path, "warmup", 0, &c->warmup, &changed, d);
    rc |= apply_float(ckpt, path, "min_lr_frac", &c->min_lr_frac, &changed, d);
    rc |= apply_float(ckpt, path, "beta1", &c->adamw.beta1, &changed, d);
    rc |= apply_float(ckpt, path, "beta2", &c->adamw.beta2, &changed, d);
    rc |= apply_float(ckpt, path, "eps", &c->adamw.eps, &changed, d);
    rc |= apply_float(ckpt, path, "weight_decay", &c->adamw.weight_decay, &changed, d);
    rc |= apply_int(ckpt, path, "decay_all", 0, &decay_all, &changed, d);
    rc |= apply_float(ckpt, path, "grad_clip", &c->adamw.grad_clip, &changed, d);
    rc |= meta_long(ckpt, path, "threads", 0, &threads, d);
    if (rc != 0)
        return -1;
    changed += c->seed != seed;
    c->seed = seed;
    c->adamw.decay_all = decay_all != 0;
    const char *executor = rt_weights_get_meta(ckpt, "executor");
    if (threads != c->threads || (executor && strcmp(executor, c->executor->name) != 0))
        ir_diag_note(d, (ir_loc){0},
                     "%s was written by executor '%s' with %lld threads and this run uses '%s' with %d; "
                     "the losses can differ from an uninterrupted run in the last bits",
                     path, executor ? executor : "?", threads, c->executor->name, c->threads);
    const char *checkpoint_data = rt_weights_get_meta(ckpt, "data");
    if (checkpoint_data && c->data_description && strcmp(checkpoint_data, c->data_description) != 0)
        ir_diag_note(d, (ir_loc){0}, "%s was trained on '%s' and this run uses '%s'; the losses will differ",
                     path, checkpoint_data, c->data_description);
    return changed;
}

/* Moves the tensor `name` of ckpt into `to` after checking its type. */
static int restore_tensor(rt_weights *ckpt, const char *path, const char *name, rt_tensor *to, ir_diag *d)
{
    for (int i = 0; i < ckpt->count; i++) {
        if (strcmp(ckpt->names[i], name) != 0)
            continue;
        rt_tensor *from = ckpt->tensors[i];
        bool same = from->dtype == IR_F32 && from->rank == to->rank;
        for (int k = 0; same && k < to->rank; k++)
            same = from->dims[k] == to->dims[k];
        if (!same) {
            ir_diag_file_error(d, path, "checkpoint tensor '%s' does not match the model's f32 tensor of %lld elements",
                               name, (long long)rt_tensor_numel(to));
            return -1;
        }
        void *data = to->data;
        to->data = from->data;
        from->data = data;
        return 0;
    }
    ir_diag_file_error(d, path, "checkpoint tensor '%s' is missing", name);
    return -1;
}

int rt_trainer_restore(rt_trainer *t, rt_weights *ckpt, const char *path, ir_diag *d)
{
    long long step;
    const char *rng_text = meta_value(ckpt, path, "rng", d);
    if (!rng_text || meta_long(ckpt, path, "step", 0, &step, d) != 0)
        return -1;
    rt_rng rng;
    if (!rt_rng_parse(&rng, rng_text)) {
        ir_diag_file_error(d, path, "checkpoint metadata 'rng' is '%s', not 64 hex digits of a valid state", rng_text);
        return -1;
    }
    for (int i = 0; i < t->opt->nparams; i++) {
        if (restore_tensor(ckpt, path, t->opt->m->names[i], t->opt->m->tensors[i], d) != 0 ||
            restore_tensor(ckpt, path, t->opt->v->names[i], t->opt->v->tensors[i], d) != 0)
            return -1;
    }
    t->step = (int)step;
    t->sampler = rng;
    t->train_stale = true;
    t->eval_stale = true;
    return 0;
}
