/* Tests of the generated AdamW update, the gradient-norm reduction, the
 * learning-rate schedule and the training PRNG. The update is checked
 * against a plain C AdamW written here independently of runtime/optim.c. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "runtime/optim.h"
#include "runtime/train_rng.h"

enum { NPARAMS = 3, NSTEPS = 5 };

static const int64_t shapes[NPARAMS][2] = {{4, 6}, {6, 1}, {5, 1}};
static const int ranks[NPARAMS] = {2, 1, 1};

/* AdamW in plain C for one step over all parameters, in double where a
 * sum is involved. */
typedef struct reference_state {
    float *p[NPARAMS], *m[NPARAMS], *v[NPARAMS];
    int64_t n[NPARAMS];
} reference_state;

static void reference_step(reference_state *s, float *const *grads, const rt_adamw_config *c, float lr, int t)
{
    double sumsq = 0;
    for (int i = 0; i < NPARAMS; i++)
        for (int64_t j = 0; j < s->n[i]; j++)
            sumsq += (double)grads[i][j] * grads[i][j];
    double norm = sqrt(sumsq);
    float scale = (c->grad_clip > 0 && norm > c->grad_clip) ? (float)(c->grad_clip / norm) : 1.0f;
    for (int i = 0; i < NPARAMS; i++) {
        float wd = (c->decay_all || ranks[i] == 2) ? c->weight_decay : 0.0f;
        for (int64_t j = 0; j < s->n[i]; j++) {
            float g = grads[i][j] * scale;
            s->m[i][j] = c->beta1 * s->m[i][j] + (1.0f - c->beta1) * g;
            s->v[i][j] = c->beta2 * s->v[i][j] + (1.0f - c->beta2) * g * g;
            float m_hat = s->m[i][j] / (1.0f - powf(c->beta1, (float)t));
            float v_hat = s->v[i][j] / (1.0f - powf(c->beta2, (float)t));
            s->p[i][j] -= lr * (m_hat / (sqrtf(v_hat) + c->eps) + wd * s->p[i][j]);
        }
    }
}

static rt_weights *make_params(rt_rng *rng)
{
    rt_weights *w = rt_weights_new();
    const char *names[NPARAMS] = {"layer.weight", "layer.bias", "norm.weight"};
    for (int i = 0; i < NPARAMS; i++) {
        rt_tensor *t = rt_tensor_new(IR_F32, ranks[i], shapes[i]);
        float *x = t->data;
        for (int64_t j = 0; j < rt_tensor_numel(t); j++)
            x[j] = (float)rt_rng_normal(rng);
        rt_weights_set(w, names[i], t);
    }
    return w;
}

/* Runs NSTEPS updates with the executor and the reference on the same
 * gradients, which are large enough in the first steps that clipping acts,
 * and returns the largest relative difference over params and moments. */
static double compare_with_reference(const rt_executor *executor, const rt_adamw_config *config, int *clipped_steps)
{
    ir_diag *d = ir_diag_new(stderr);
    rt_rng rng;
    rt_rng_seed(&rng, 42, 0);
    rt_weights *params = make_params(&rng);
    reference_state ref;
    for (int i = 0; i < NPARAMS; i++) {
        ref.n[i] = rt_tensor_numel(params->tensors[i]);
        ref.p[i] = malloc((size_t)ref.n[i] * sizeof(float));
        ref.m[i] = calloc((size_t)ref.n[i], sizeof(float));
        ref.v[i] = calloc((size_t)ref.n[i], sizeof(float));
        memcpy(ref.p[i], params->tensors[i]->data, (size_t)ref.n[i] * sizeof(float));
    }
    rt_adamw *opt = rt_adamw_new(config, params, executor, 1, d);
    CHECK(opt != NULL);
    double max_diff = 0;
    *clipped_steps = 0;
    for (int t = 1; opt && t <= NSTEPS; t++) {
        rt_tensor *grads[NPARAMS];
        float *grad_data[NPARAMS];
        float magnitude = t <= 2 ? 3.0f : 0.05f;
        for (int i = 0; i < NPARAMS; i++) {
            grads[i] = rt_tensor_new(IR_F32, ranks[i], shapes[i]);
            grad_data[i] = grads[i]->data;
            for (int64_t j = 0; j < ref.n[i]; j++)
                grad_data[i][j] = magnitude * (float)rt_rng_normal(&rng);
        }
        float lr = 0.01f * (float)t;
        rt_adamw_norm norm;
        CHECK_EQ_INT(rt_adamw_grad_norm(opt, grads, &norm, d), 0);
        CHECK_EQ_INT(norm.first_nonfinite, -1);
        if (norm.clip_scale < 1.0f)
            (*clipped_steps)++;
        CHECK_EQ_INT(rt_adamw_update(opt, params, grads, lr, t, norm.clip_scale, d), 0);
        reference_step(&ref, grad_data, config, lr, t);
        for (int i = 0; i < NPARAMS; i++) {
            const float *got[3] = {params->tensors[i]->data, opt->m->tensors[i]->data, opt->v->tensors[i]->data};
            const float *want[3] = {ref.p[i], ref.m[i], ref.v[i]};
            for (int k = 0; k < 3; k++)
                for (int64_t j = 0; j < ref.n[i]; j++) {
                    double diff = fabs((double)got[k][j] - want[k][j]) / (fabs(want[k][j]) + 1e-6);
                    if (diff > max_diff)
                        max_diff = diff;
                }
            rt_tensor_free(grads[i]);
        }
    }
    for (int i = 0; i < NPARAMS; i++) {
        free(ref.p[i]);
        free(ref.m[i]);
        free(ref.v[i]);
    }
    rt_adamw_free(opt);
    rt_weights_free(params);
    ir_diag_free(d);
    return max_diff;
}

static void test_update_matches_reference(const rt_executor *executor)
{
    rt_adamw_config config = rt_adamw_default_config();
    config.weight_decay = 0.1f;
    config.grad_clip = 1.0f;
    int clipped;
    double diff = compare_with_reference(executor, &config, &clipped);
    printf("%s: AdamW max relative difference %.3g, %d clipped steps\n", executor->name, diff, clipped);
    CHECK(diff < 1e-5);
    CHECK(clipped >= 2);

    config.decay_all = true;
    config.grad_clip = 0.0f;
    diff = compare_with_reference(executor, &config, &clipped);
    CHECK(diff < 1e-5);
    CHECK_EQ_INT(clipped, 0);

    /* Chunks of 7 split the 24-element matrix into 7, 7, 7 and 3. */
    config = rt_adamw_default_config();
    config.chunk_elements = 7;
    diff = compare_with_reference(executor, &config, &clipped);
    printf("%s: AdamW in chunks of 7, max relative difference %.3g\n", executor->name, diff);
    CHECK(diff < 1e-5);
    CHECK(clipped >= 2);
}

/* Weight decay must reach only the rank-2 parameter unless decay_all. */
static void test_decay_selection(void)
{
    ir_diag *d = ir_diag_new(stderr);
    rt_rng rng;
    rt_rng_seed(&rng, 1, 0);
    rt_weights *params = make_params(&rng);
    rt_adamw_config config = rt_adamw_default_config();
    rt_adamw *opt = rt_adamw_new(&config, params, rt_executor_interp(), 1, d);
    CHECK(opt != NULL);
    if (opt) {
        CHECK(opt->decay[0]);
        CHECK(!opt->decay[1]);
        CHECK(!opt->decay[2]);
        CHECK(strcmp(opt->m->names[0], "opt.m.layer.weight") == 0);
        CHECK(strcmp(opt->v->names[2], "opt.v.norm.weight") == 0);
        /* Sizes 24, 6 and 5 need three kernels. */
        CHECK_EQ_INT(opt->nkernels, 3);
    }
    rt_adamw_free(opt);
    config.chunk_elements = 7;
    opt = rt_adamw_new(&config, params, rt_executor_interp(), 1, d);
    /* Chunks of 7 and the remainders 3, 6 and 5. */
    if (opt)
        CHECK_EQ_INT(opt->nkernels, 4);
    rt_adamw_free(opt);
    config.chunk_elements = 0;
    config.decay_all = true;
    opt = rt_adamw_new(&config, params, rt_executor_interp(), 1, d);
    if (opt) {
        CHECK(opt->decay[1]);
        CHECK(opt->decay[2]);
    }
    rt_adamw_free(opt);
    rt_weights_free(params);
    ir_diag_free(d);
}

static void test_grad_norm_nonfinite(void)
{
    ir_diag *d = ir_diag_new(stderr);
    rt_rng rng;
    rt_rng_seed(&rng, 2, 0);
    rt_weights *params = make_params(&rng);
    rt_adamw_config config = rt_adamw_default_config();
    rt_adamw *opt = rt_adamw_new(&config, params, rt_executor_interp(), 1, d);
    rt_tensor *grads[NPARAMS];
    for (int i = 0; i < NPARAMS; i++)
        grads[i] = rt_tensor_new(IR_F32, ranks[i], shapes[i]);
    ((float *)grads[0]->data)[3] = 3.0f;
    ((float *)grads[2]->data)[1] = 4.0f;
    rt_adamw_norm norm;
    CHECK_EQ_INT(rt_adamw_grad_norm(opt, grads, &norm, d), 0);
    CHECK_CLOSE(norm.norm, 5.0, 1e-6, 0);
    CHECK_CLOSE(norm.clip_scale, 0.2, 1e-7, 0);

    ((float *)grads[1]->data)[4] = NAN;
    ((float *)grads[2]->data)[0] = INFINITY;
    CHECK_EQ_INT(rt_adamw_grad_norm(opt, grads, &norm, d), 0);
    CHECK_EQ_INT(norm.first_nonfinite, 1);

    /* Finite values whose squares overflow f32 are not blamed. */
    ((float *)grads[1]->data)[4] = 0.0f;
    ((float *)grads[2]->data)[0] = 0.0f;
    ((float *)grads[0]->data)[0] = 3e30f;
    CHECK_EQ_INT(rt_adamw_grad_norm(opt, grads, &norm, d), 0);
    CHECK_EQ_INT(norm.first_nonfinite, -1);
    for (int i = 0; i < NPARAMS; i++)
        rt_tensor_free(grads[i]);
    rt_adamw_free(opt);
    rt_weights_free(params);
    ir_diag_free(d);
}

static void test_lr_schedule(void)
{
    rt_lr_schedule s = {.lr = 1e-3f, .warmup = 10, .min_lr_frac = 0.1f, .total_steps = 110};
    CHECK_CLOSE(rt_lr_at(&s, 0), 1e-4, 1e-10, 0);
    CHECK_CLOSE(rt_lr_at(&s, 4), 5e-4, 1e-10, 0);
    CHECK_CLOSE(rt_lr_at(&s, 9), 1e-3, 1e-10, 0);
    CHECK_CLOSE(rt_lr_at(&s, 10), 1e-3, 1e-10, 0);
    /* Halfway through the decay the cosine term is 1/2: (1e-3 + 1e-4) / 2. */
    CHECK_CLOSE(rt_lr_at(&s, 60), 5.5e-4, 1e-9, 0);
    /* A quarter of the way: 1e-4 + 9e-4 * (1 + cos(pi / 4)) / 2. */
    CHECK_CLOSE(rt_lr_at(&s, 35), 1e-4 + 9e-4 * (1 + sqrt(0.5)) / 2, 1e-9, 0);
    CHECK_CLOSE(rt_lr_at(&s, 110), 1e-4, 1e-10, 0);
    CHECK_CLOSE(rt_lr_at(&s, 500), 1e-4, 1e-10, 0);

    rt_lr_schedule constant = {.lr = 2e-3f, .warmup = 0, .min_lr_frac = 1.0f, .total_steps = 10};
    CHECK_CLOSE(rt_lr_at(&constant, 0), 2e-3, 1e-10, 0);
    CHECK_CLOSE(rt_lr_at(&constant, 7), 2e-3, 1e-10, 0);
}

static void test_rng(void)
{
    rt_rng a, b;
    rt_rng_seed(&a, 7, 0);
    rt_rng_seed(&b, 7, 1);
    CHECK(rt_rng_next(&a) != rt_rng_next(&b));

    rt_rng_seed(&a, 7, 0);
    for (int i = 0; i < 10; i++)
        rt_rng_next(&a);
    char text[65];
    rt_rng_format(&a, text);
    CHECK(rt_rng_parse(&b, text));
    CHECK(rt_rng_next(&a) == rt_rng_next(&b));
    CHECK(!rt_rng_parse(&b, "123"));
    CHECK(!rt_rng_parse(&b, "0000000000000000000000000000000000000000000000000000000000000000"));

    double sum = 0, sumsq = 0;
    int below_counts[3] = {0, 0, 0};
    for (int i = 0; i < 20000; i++) {
        double x = rt_rng_normal(&a);
        sum += x;
        sumsq += x * x;
        below_counts[rt_rng_below(&a, 3)]++;
    }
    CHECK(fabs(sum / 20000) < 0.05);
    CHECK(fabs(sumsq / 20000 - 1.0) < 0.05);
    for (int k = 0; k < 3; k++)
    {
        CHECK(below_counts[k] > 6000);
        CHECK(below_counts[k] < 7333);
    }
}

int main(void)
{
    test_lr_schedule();
    test_rng();
    test_decay_selection();
    test_grad_norm_nonfinite();
    test_update_matches_reference(rt_executor_interp());
    test_update_matches_reference(rt_executor_jit());
    return check_finish();
}
