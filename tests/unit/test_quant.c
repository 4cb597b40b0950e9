/* Tests of the quantization ops and steps on small hand-written graphs:
 * fake-quant values at 8 and 4 bits, symmetric and asymmetric, per tensor
 * and per channel; the straight-through and LSQ gradients through the
 * autodiff pass; qa.scale gradients against finite differences; the
 * calibration methods on known data; and the SmoothQuant scale formula. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ir/quant.h"
#include "ir/text.h"
#include "passes/manager.h"
#include "passes/quantize.h"
#include "runtime/interp.h"
#include "runtime/train_exec.h"

/* ---- helpers ---- */

static ir_graph *parse(const char *text, ir_diag *d)
{
    ir_graph *g = ir_parse_string("test.qir", text, strlen(text), d);
    CHECK(g != NULL);
    return g;
}

static rt_tensor *tensor(int rank, const int64_t *dims, const float *values)
{
    rt_tensor *t = rt_tensor_new(IR_F32, rank, dims);
    memcpy(t->data, values, sizeof(float) * (size_t)rt_tensor_numel(t));
    return t;
}

static void set(rt_weights *w, const char *name, int rank, const int64_t *dims, const float *values)
{
    rt_weights_set(w, name, tensor(rank, dims, values));
}

static void set_scalar(rt_weights *w, const char *name, float value)
{
    set(w, name, 0, NULL, &value);
}

/* Runs g and returns output k; the caller frees it. */
static rt_tensor *run_output(const ir_graph *g, const rt_weights *w, const rt_weights *in, int k, ir_diag *d)
{
    rt_tensor *outputs[8] = {NULL};
    if (rt_interp_run(g, w, in, outputs, d) != 0)
        return NULL;
    for (int i = 0; i < g->noutputs; i++)
        if (i != k)
            rt_tensor_free(outputs[i]);
    return outputs[k];
}

static void check_values(const rt_tensor *t, const float *want, int n)
{
    CHECK(t != NULL);
    if (!t)
        return;
    CHECK_EQ_INT(rt_tensor_numel(t), n);
    const float *got = t->data;
    for (int i = 0; i < n; i++)
        CHECK_CLOSE(got[i], want[i], 0, 0);
}

/* Runs fq.act{bits, symmetric, narrow}(x, s, z) on 1-D x. */
static void check_fake_quant(const char *attrs, float scale, float zero_point, const float *x, const float *want,
                             int n)
{
    char text[512];
    snprintf(text, sizeof text,
             "graph @t {\n  %%x = input : f32[%d]\n  @s = param : f32[]\n  @z = param : f32[]\n"
             "  %%y = fq.act %%x, @s, @z {%s} : f32[%d]\n  return %%y\n}\n", n, attrs, n);
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = parse(text, d);
    rt_weights *w = rt_weights_new(), *in = rt_weights_new();
    set_scalar(w, "s", scale);
    set_scalar(w, "z", zero_point);
    set(in, "x", 1, (int64_t[]){n}, x);
    rt_tensor *y = g ? run_output(g, w, in, 0, d) : NULL;
    check_values(y, want, n);
    rt_tensor_free(y);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* ---- quantizer values ---- */

static void test_ranges(void)
{
    ir_quant_range r;
    CHECK_EQ_INT(ir_quant_range_of(8, false, false, &r), 0);
    CHECK_EQ_INT(r.qmin, 0);
    CHECK_EQ_INT(r.qmax, 255);
    CHECK_EQ_INT(ir_quant_range_of(8, true, false, &r), 0);
    CHECK_EQ_INT(r.qmin, -128);
    CHECK_EQ_INT(r.qmax, 127);
    CHECK_EQ_INT(ir_quant_range_of(8, true, true, &r), 0);
    CHECK_EQ_INT(r.qmin, -127);
    CHECK_EQ_INT(ir_quant_range_of(4, true, true, &r), 0);
    CHECK_EQ_INT(r.qmin, -7);
    CHECK_EQ_INT(r.qmax, 7);
    CHECK_EQ_INT(ir_quant_range_of(2, false, false, &r), 0);
    CHECK_EQ_INT(r.qmax, 3);
    CHECK_EQ_INT(ir_quant_range_of(9, true, true, &r), -1);
    CHECK_EQ_INT(ir_quant_range_of(1, false, false, &r), -1);
    CHECK_EQ_INT(ir_quant_range_of(8, false, true, &r), -1);
}

/* The inputs are exact binary fractions, so x / s is exact and each case
 * lands on the value stated: ties round to even. */
static void test_fake_quant_asymmetric(void)
{
    /* 8 bits, s = 0.25, z = 3: grid positions x / s + z in [0, 255]. */
    const float x8[] = {0.125f, 0.375f, -0.875f, 100.0f, 1.0f, -0.75f};
    /* 0.5 -> 0, 1.5 -> 2, -3.5 -> -4 (clamped at q = 0), 400 -> 255. */
    const float y8[] = {0.0f, 0.5f, -0.75f, 63.0f, 1.0f, -0.75f};
    check_fake_quant("bits=8, symmetric=0, narrow=0", 0.25f, 3.0f, x8, y8, 6);

    /* 4 bits, s = 0.5, z = 2: q in [0, 15], so x_hat in [-1, 6.5]. */
    const float x4[] = {3.25f, 10.0f, -2.0f, 0.75f, 1.25f};
    const float y4[] = {3.0f, 6.5f, -1.0f, 1.0f, 1.0f};
    check_fake_quant("bits=4, symmetric=0, narrow=0", 0.5f, 2.0f, x4, y4, 5);

    /* A zero point of 2.5 rounds to 2 (half to even) before use. */
    check_fake_quant("bits=4, symmetric=0, narrow=0", 0.5f, 2.5f, x4, y4, 5);
}

static void test_fake_quant_symmetric(void)
{
    const float x[] = {100.0f, -100.0f, 0.25f, 0.75f, -0.25f};
    const float narrow[] = {63.5f, -63.5f, 0.0f, 1.0f, -0.0f};
    check_fake_quant("bits=8, symmetric=1, narrow=1", 0.5f, 0.0f, x, narrow, 5);
    /* Without narrow range the grid reaches -128. */
    const float full[] = {63.5f, -64.0f, 0.0f, 1.0f, -0.0f};
    check_fake_quant("bits=8, symmetric=1, narrow=0", 0.5f, 0.0f, x, full, 5);

    const float x4[] = {-9.0f, 2.5f, 3.5f, 9.0f, -8.0f};
    const float y4[] = {-7.0f, 2.0f, 4.0f, 7.0f, -7.0f};
    check_fake_quant("bits=4, symmetric=1, narrow=1", 1.0f, 0.0f, x4, y4, 5);
    const float y4_full[] = {-8.0f, 2.0f, 4.0f, 7.0f, -8.0f};
    check_fake_quant("bits=4, symmetric=1, narrow=0", 1.0f, 0.0f, x4, y4_full, 5);
}

/* fq.weight per channel along the last axis (output channels of a Conv1D
 * [in, out] weight) and along axis 0. */
static void test_fake_quant_per_channel(void)
{
    static const char *text =
        "graph @t {\n"
        "  @w = param : f32[2,3]\n"
        "  @cols.s = param : f32[3]\n"
        "  @cols.z = param : f32[3]\n"
        "  @rows.s = param : f32[2]\n"
        "  @rows.z = param : f32[2]\n"
        "  %by_col = fq.weight @w, @cols.s, @cols.z {axis=-1, bits=8, symmetric=1, narrow=1} : f32[2,3]\n"
        "  %by_row = fq.weight @w, @rows.s, @rows.z {axis=0, bits=4, symmetric=1, narrow=1} : f32[2,3]\n"
        "  return %by_col, %by_row\n"
        "}\n";
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = parse(text, d);
    rt_weights *w = rt_weights_new();
    set(w, "w", 2, (int64_t[]){2, 3}, (float[]){1.3f, 1.3f, 1.3f, -0.6f, -0.6f, 20.0f});
    set(w, "cols.s", 1, (int64_t[]){3}, (float[]){1.0f, 0.5f, 0.25f});
    set(w, "cols.z", 1, (int64_t[]){3}, (float[]){0, 0, 0});
    set(w, "rows.s", 1, (int64_t[]){2}, (float[]){0.5f, 2.0f});
    set(w, "rows.z", 1, (int64_t[]){2}, (float[]){0, 0});
    /* Column scales 1, 0.5, 0.25: 1.3 -> 1, 2.6 -> 3, 5.2 -> 5; -0.6 -> -1,
     * -1.2 -> -1; 20 / 0.25 = 80 is inside [-127, 127]. */
    rt_tensor *by_col = g ? run_output(g, w, NULL, 0, d) : NULL;
    check_values(by_col, (float[]){1.0f, 1.5f, 1.25f, -1.0f, -0.5f, 20.0f}, 6);
    /* Row scales 0.5 and 2 at 4 bits ([-7, 7]): 1.3 / 0.5 = 2.6 -> 3;
     * -0.6 / 2 = -0.3 -> -0; 20 / 2 = 10 clamps to 7. */
    rt_tensor *by_row = g ? run_output(g, w, NULL, 1, d) : NULL;
    check_values(by_row, (float[]){1.5f, 1.5f, 1.5f, -0.0f, -0.0f, 14.0f}, 6);
    rt_tensor_free(by_col);
    rt_tensor_free(by_row);
    rt_weights_free(w);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* Reads what a diagnostics sink wrote to `sink` so far. */
static void read_log(FILE *sink, char *buf, size_t cap)
{
    rewind(sink);
    size_t n = fread(buf, 1, cap - 1, sink);
    buf[n] = '\0';
}

static void test_fake_quant_rejects_bad_scale(void)
{
    float x[] = {1.0f};
    static const char *text = "graph @t {\n  %x = input : f32[1]\n  @s = param : f32[]\n  @z = param : f32[]\n"
                              "  %y = fq.act %x, @s, @z : f32[1]\n  return %y\n}\n";
    FILE *sink = tmpfile();
    ir_diag *d = ir_diag_new(sink);
    ir_graph *g = parse(text, d);
    rt_weights *w = rt_weights_new(), *in = rt_weights_new();
    set_scalar(w, "s", 0.0f);
    set_scalar(w, "z", 0.0f);
    set(in, "x", 1, (int64_t[]){1}, x);
    rt_tensor *y = g ? run_output(g, w, in, 0, d) : NULL;
    CHECK(y == NULL);
    char log[1024];
    read_log(sink, log, sizeof log);
    CHECK(strstr(log, "fq.act %y: scale[0] is 0; scales must be positive and finite") != NULL);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(g);
    ir_diag_free(d);
    fclose(sink);
}

static void test_fake_quant_shape_errors(void)
{
    static const char *bad_bits = "graph @t {\n  %x = input : f32[4]\n  @s = param : f32[]\n  @z = param : f32[]\n"
                                  "  %y = fq.act %x, @s, @z {bits=9} : f32[4]\n  return %y\n}\n";
    static const char *bad_scale = "graph @t {\n  %x = input : f32[4]\n  @s = param : f32[4]\n"
                                   "  @z = param : f32[4]\n  %y = fq.act %x, @s, @z : f32[4]\n  return %y\n}\n";
    FILE *sink = tmpfile();
    ir_diag *d = ir_diag_new(sink);
    CHECK(ir_parse_string("t.qir", bad_bits, strlen(bad_bits), d) == NULL);
    CHECK(ir_parse_string("t.qir", bad_scale, strlen(bad_scale), d) == NULL);
    char log[2048];
    read_log(sink, log, sizeof log);
    CHECK(strstr(log, "bits must be 2 to 8, got 9") != NULL);
    CHECK(strstr(log, "must have one element (per-tensor quantization)") != NULL);
    ir_diag_free(d);
    fclose(sink);
}

/* ---- gradients ---- */

/* loss = reduce_sum(fq(x, s, z) * probe) with x, s, z as params, followed
 * by the autodiff pass. Outputs: loss, x.grad, s.grad, z.grad. */
static const char *fq_loss_text =
    "graph @t {\n"
    "  @x = param : f32[8]\n"
    "  @s = param : f32[]\n"
    "  @z = param : f32[]\n"
    "  %probe = input : f32[8]\n"
    "  %y = fq.act @x, @s, @z {bits=4, symmetric=0, narrow=0} : f32[8]\n"
    "  %yp = mul %y, %probe : f32[8]\n"
    "  %loss = reduce_sum %yp {axes=[0]} : f32[]\n"
    "  return %loss\n"
    "}\n";

static const float fq_x[8] = {-3.0f, -0.6f, 0.1f, 0.7f, 1.9f, 2.6f, 3.05f, 9.0f};
static const float fq_probe[8] = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.5f, 1.0f, -2.0f};

static ir_graph *fq_loss_graph(ir_diag *d)
{
    ir_graph *g = parse(fq_loss_text, d);
    pass_option option = {"wrt", "all"};
    pass_options opts = {1, &option};
    if (g)
        CHECK_EQ_INT(pass_autodiff(g, &opts, d), 0);
    if (g)
        CHECK_EQ_INT(ir_graph_compact(g), 0);
    return g;
}

static void fq_loss_weights(rt_weights *w, rt_weights *in, float scale, float zero_point)
{
    set(w, "x", 1, (int64_t[]){8}, fq_x);
    set_scalar(w, "s", scale);
    set_scalar(w, "z", zero_point);
    set(in, "probe", 1, (int64_t[]){8}, fq_probe);
}

/* The gradient of x is probe where x is inside [(0 - z) s, (15 - z) s]
 * and 0 elsewhere; the scale and zero-point gradients follow ir/quant.h. */
static void test_straight_through_gradient(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = fq_loss_graph(d);
    rt_weights *w = rt_weights_new(), *in = rt_weights_new();
    const float s = 0.25f, z = 4.0f; /* range [-1, 2.75] */
    fq_loss_weights(w, in, s, z);
    rt_tensor *dx = g ? run_output(g, w, in, 1, d) : NULL;
    float want[8];
    for (int i = 0; i < 8; i++)
        want[i] = fq_x[i] >= -1.0f && fq_x[i] <= 2.75f ? fq_probe[i] : 0.0f;
    check_values(dx, want, 8);

    rt_tensor *dz = g ? run_output(g, w, in, 3, d) : NULL;
    double dz_want = 0;
    for (int i = 0; i < 8; i++)
        dz_want += fq_x[i] >= -1.0f && fq_x[i] <= 2.75f ? 0.0 : -s * fq_probe[i];
    CHECK(dz != NULL);
    if (dz)
        CHECK_CLOSE(((float *)dz->data)[0], dz_want, 1e-6, 0);
    rt_tensor_free(dx);
    rt_tensor_free(dz);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(g);
    ir_diag_free(d);
}

static double fq_loss_at(const ir_graph *forward, float scale, float zero_point, ir_diag *d)
{
    rt_weights *w = rt_weights_new(), *in = rt_weights_new();
    fq_loss_weights(w, in, scale, zero_point);
    rt_tensor *loss = run_output(forward, w, in, 0, d);
    double value = loss ? ((float *)loss->data)[0] : NAN;
    rt_tensor_free(loss);
    rt_weights_free(w);
    rt_weights_free(in);
    return value;
}

/* LSQ treats round() as the identity. Where no x / s crosses a rounding
 * boundary within the step, the true loss is piecewise linear in s with
 * slope sum(probe * round(x / s)) inside the range and probe * (qlimit - z)
 * outside it, so the central difference of the true loss equals the LSQ
 * gradient plus sum(probe * x / s) over the elements inside the range. */
static void test_lsq_gradient_matches_differences(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *forward = parse(fq_loss_text, d);
    ir_graph *g = fq_loss_graph(d);
    const float s = 0.3f, z = 5.0f, h = 1e-3f; /* range [-1.5, 3.0] */
    for (int i = 0; i < 8; i++) {
        /* A step of h moves x / s by about x h / s^2, at most 0.1 here. */
        float v = fq_x[i] / s;
        CHECK(fabsf(v - floorf(v) - 0.5f) > 0.15f);
    }
    rt_weights *w = rt_weights_new(), *in = rt_weights_new();
    fq_loss_weights(w, in, s, z);
    rt_tensor *ds = g ? run_output(g, w, in, 2, d) : NULL;
    double fd = (fq_loss_at(forward, s + h, z, d) - fq_loss_at(forward, s - h, z, d)) / (2.0 * h);
    double ste_term = 0;
    for (int i = 0; i < 8; i++)
        if (fq_x[i] / s + z >= 0 && fq_x[i] / s + z <= 15)
            ste_term += fq_probe[i] * fq_x[i] / s;
    CHECK(ds != NULL);
    if (ds)
        CHECK_CLOSE(((float *)ds->data)[0] + ste_term, fd, 2e-3, 1e-3);

    /* With every element clipped, round() plays no part, so the LSQ
     * gradient is the true derivative. */
    const float tiny = 0.001f; /* range [-0.005, 0.01] holds none of the eight */
    fq_loss_weights(w, in, tiny, 5.0f);
    rt_tensor *ds_clip = g ? run_output(g, w, in, 2, d) : NULL;
    double fd_clip = (fq_loss_at(forward, tiny * 1.01f, 5.0f, d) - fq_loss_at(forward, tiny * 0.99f, 5.0f, d)) /
                     (0.02 * tiny);
    CHECK(ds_clip != NULL);
    if (ds_clip)
        CHECK_CLOSE(((float *)ds_clip->data)[0], fd_clip, 1e-2, 1e-3);
    rt_tensor_free(ds);
    rt_tensor_free(ds_clip);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(g);
    ir_graph_free(forward);
    ir_diag_free(d);
}

/* loss = reduce_sum(qa.scale(x, alpha) * probe) for invert 0 and 1, with
 * the alpha gradient against central differences. */
static void test_qa_scale_gradient(void)
{
    for (int invert = 0; invert < 2; invert++) {
        char text[1024];
        snprintf(text, sizeof text,
                 "graph @t {\n"
                 "  @x = param : f32[3,2]\n"
                 "  @alpha = param : f32[3]\n"
                 "  %%probe = input : f32[3,2]\n"
                 "  %%y = qa.scale @x, @alpha {axis=0, invert=%d} : f32[3,2]\n"
                 "  %%yp = mul %%y, %%probe : f32[3,2]\n"
                 "  %%loss = reduce_sum %%yp {axes=[0,1]} : f32[]\n"
                 "  return %%loss\n"
                 "}\n", invert);
        ir_diag *d = ir_diag_new(stderr);
        ir_graph *forward = parse(text, d);
        ir_graph *g = parse(text, d);
        pass_option option = {"wrt", "all"};
        pass_options opts = {1, &option};
        CHECK(g && pass_autodiff(g, &opts, d) == 0 && ir_graph_compact(g) == 0);
        float x[6] = {0.5f, -1.0f, 2.0f, 0.25f, -0.75f, 1.5f}, alpha[3] = {0.8f, 1.7f, 0.6f};
        float probe[6] = {1.0f, 2.0f, -0.5f, 0.3f, 0.7f, -1.2f};
        rt_weights *w = rt_weights_new(), *in = rt_weights_new();
        set(w, "x", 2, (int64_t[]){3, 2}, x);
        set(w, "alpha", 1, (int64_t[]){3}, alpha);
        set(in, "probe", 2, (int64_t[]){3, 2}, probe);
        rt_tensor *dalpha = run_output(g, w, in, 2, d);
        CHECK(dalpha != NULL);
        for (int c = 0; dalpha && c < 3; c++) {
            double loss[2];
            for (int side = 0; side < 2; side++) {
                float shifted[3] = {alpha[0], alpha[1], alpha[2]};
                shifted[c] += side ? -1e-3f : 1e-3f;
                set(w, "alpha", 1, (int64_t[]){3}, shifted);
                rt_tensor *l = run_output(forward, w, in, 0, d);
                loss[side] = l ? ((float *)l->data)[0] : NAN;
                rt_tensor_free(l);
            }
            set(w, "alpha", 1, (int64_t[]){3}, alpha);
            CHECK_CLOSE(((float *)dalpha->data)[c], (loss[0] - loss[1]) / 2e-3, 5e-4, 5e-3);
        }
        rt_tensor_free(dalpha);
        rt_weights_free(w);
        rt_weights_free(in);
        ir_graph_free(g);
        ir_graph_free(forward);
        ir_diag_free(d);
    }
}

/* ---- calibration ---- */

static const char *calib_text =
    "graph @t {\n"
    "  %x = input : f32[2,3]\n"
    "  @w = param : f32[3,2]\n"
    "  @x.scale = param : f32[]\n"
    "  @x.zero_point = param : f32[]\n"
    "  @w.scale = param : f32[2]\n"
    "  @w.zero_point = param : f32[2]\n"
    "  %xq = fq.act %x, @x.scale, @x.zero_point {bits=8, symmetric=0, narrow=0} : f32[2,3]\n"
    "  %wq = fq.weight @w, @w.scale, @w.zero_point {axis=1, bits=8, symmetric=1, narrow=1} : f32[3,2]\n"
    "  %y = linear %xq, %wq : f32[2,2]\n"
    "  return %y\n"
    "}\n";

/* Min-max on known data: x spans [-1, 3] over two batches, so
 * s = 4 / 255 and z = round(1 / s) = round(63.75) = 64; each weight column
 * c gets max|W[:, c]| / 127. */
static void test_calibrate_minmax(void)
{
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = parse(calib_text, d);
    rt_weights *w = rt_weights_new(), *b0 = rt_weights_new(), *b1 = rt_weights_new();
    set(w, "w", 2, (int64_t[]){3, 2}, (float[]){0.5f, -2.0f, -1.27f, 0.1f, 0.2f, 1.0f});
    set(b0, "x", 2, (int64_t[]){2, 3}, (float[]){-1.0f, 0.5f, 2.0f, 0.0f, 0.1f, 0.2f});
    set(b1, "x", 2, (int64_t[]){2, 3}, (float[]){3.0f, -0.5f, 0.0f, 1.0f, 1.0f, 1.0f});
    const rt_weights *batches[2] = {b0, b1};
    pass_calib_options o = pass_calib_default_options();
    CHECK_EQ_INT(pass_calibrate(g, w, batches, 2, &o, d), 0);
    const rt_tensor *xs = rt_weights_get(w, "x.scale"), *xz = rt_weights_get(w, "x.zero_point");
    const rt_tensor *ws = rt_weights_get(w, "w.scale"), *wz = rt_weights_get(w, "w.zero_point");
    CHECK(xs && xz && ws && wz);
    if (xs && xz && ws && wz) {
        CHECK_CLOSE(((float *)xs->data)[0], 4.0f / 255.0f, 0, 1e-6);
        CHECK_CLOSE(((float *)xz->data)[0], 64.0, 0, 0);
        CHECK_CLOSE(((float *)ws->data)[0], 1.27 / 127.0, 0, 1e-6);
        CHECK_CLOSE(((float *)ws->data)[1], 2.0 / 127.0, 0, 1e-6);
        CHECK_CLOSE(((float *)wz->data)[1], 0.0, 0, 0);
    }
    /* The calibrated graph now runs. */
    rt_tensor *y = run_output(g, w, b0, 0, d);
    CHECK(y != NULL);
    rt_tensor_free(y);
    rt_weights_free(w);
    rt_weights_free(b0);
    rt_weights_free(b1);
    ir_graph_free(g);
    ir_diag_free(d);
}

static void test_calibrate_percentile(void)
{
    float x[1000];
    for (int i = 0; i < 1000; i++)
        x[i] = (float)(i + 1);
    ir_quant_range r = {0, 255};
    pass_calib_options o = pass_calib_default_options();
    o.method = PASS_CALIB_PERCENTILE;
    o.percentile = 99.0;
    double lo, hi;
    /* Linear interpolation between order statistics: position 0.99 * 999
     * is 989.01, between the values 990 and 991. */
    pass_calib_range(x, 1000, &o, false, r, &lo, &hi);
    CHECK_CLOSE(hi, 990.01, 1e-3, 0);
    CHECK_CLOSE(lo, 10.99, 1e-3, 0);
    pass_calib_range(x, 1000, &o, true, r, &lo, &hi);
    CHECK_CLOSE(hi, 990.01, 1e-3, 0);
    CHECK_CLOSE(lo, -990.01, 1e-3, 0);
}

/* A heavy-tailed sample: 4095 values from a Laplace distribution with
 * scale 1 (largest about 8) and one outlier at 30. At 4 bits, min-max
 * spends the grid on the outlier and rounds most values to 0, while the
 * MSE search clips well below the maximum (near 5 for a Laplace
 * distribution at 4 bits). */
static void test_calibrate_mse_clips_heavy_tail(void)
{
    enum { N = 4096 };
    static float x[N];
    uint64_t state = 12345;
    for (int i = 0; i < N - 1; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        double u = ((double)(state >> 11) + 0.5) / 9007199254740992.0 - 0.5;
        x[i] = (float)(u < 0 ? log(1 + 2 * u) : -log(1 - 2 * u));
    }
    x[N - 1] = 30.0f;
    ir_quant_range r = {-7, 7};
    pass_calib_options o = pass_calib_default_options();
    o.method = PASS_CALIB_MSE;
    double lo, hi;
    pass_calib_range(x, N, &o, true, r, &lo, &hi);
    printf("MSE clipping range at 4 bits: [%.3g, %.3g]\n", lo, hi);
    CHECK(hi < 15.0);
    CHECK(hi > 2.0);

    float s_mse, z_mse, s_max, z_max;
    pass_quant_params_from_range(lo, hi, true, r, &s_mse, &z_mse);
    pass_quant_params_from_range(-30.0, 30.0, true, r, &s_max, &z_max);
    double e_mse = 0, e_max = 0;
    for (int i = 0; i < N; i++) {
        e_mse += pow(x[i] - ir_fake_quant(x[i], s_mse, z_mse, r), 2);
        e_max += pow(x[i] - ir_fake_quant(x[i], s_max, z_max, r), 2);
    }
    CHECK(e_mse < e_max);
}

static void test_quant_params_from_range(void)
{
    float s, z;
    ir_quant_range u8 = {0, 255};
    /* A range above zero is widened to include it. */
    pass_quant_params_from_range(2.0, 4.0, false, u8, &s, &z);
    CHECK_CLOSE(s, 4.0 / 255.0, 0, 1e-6);
    CHECK_CLOSE(z, 0.0, 0, 0);
    pass_quant_params_from_range(-5.1, -1.0, false, u8, &s, &z);
    CHECK_CLOSE(s, 5.1 / 255.0, 0, 1e-6);
    CHECK_CLOSE(z, 255.0, 0, 0);
    pass_quant_params_from_range(0.0, 0.0, false, u8, &s, &z);
    CHECK_CLOSE(s, 1.0, 0, 0);
}

/* ---- SmoothQuant ---- */

/* max|X| = (4, 1) and the row maxima of W are (1, 4), so at a = 0.5
 * s = (sqrt(4) / sqrt(1), sqrt(1) / sqrt(4)) = (2, 0.5) and alpha = 1 / s. */
static void test_smoothquant_hand_example(void)
{
    static const char *text =
        "graph @t {\n"
        "  %x = input : f32[2,2]\n"
        "  @alpha = param {init=\"ones\"} : f32[2]\n"
        "  @w = param : f32[2,3]\n"
        "  %xs = qa.scale %x, @alpha {axis=-1, invert=0} : f32[2,2]\n"
        "  %wd = qa.scale @w, @alpha {axis=0, invert=1} : f32[2,3]\n"
        "  %y = linear %xs, %wd : f32[2,3]\n"
        "  return %y\n"
        "}\n";
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = parse(text, d);
    rt_weights *w = rt_weights_new(), *batch = rt_weights_new();
    set(w, "alpha", 1, (int64_t[]){2}, (float[]){1, 1});
    set(w, "w", 2, (int64_t[]){2, 3}, (float[]){1.0f, -0.5f, 0.0f, 0.0f, 4.0f, -2.0f});
    set(batch, "x", 2, (int64_t[]){2, 2}, (float[]){4.0f, -1.0f, -2.0f, 0.5f});
    const rt_weights *batches[1] = {batch};
    CHECK_EQ_INT(pass_smoothquant_scales(g, w, batches, 1, 0.5, NULL, d), 0);
    const float *alpha = rt_weights_get(w, "alpha")->data;
    CHECK_CLOSE(alpha[0], 0.5, 0, 1e-6);
    CHECK_CLOSE(alpha[1], 2.0, 0, 1e-6);
    rt_weights_free(w);
    rt_weights_free(batch);
    ir_graph_free(g);
    ir_diag_free(d);
}

static void test_clamp_alpha(void)
{
    static const char *text = "graph @t {\n  %x = input : f32[3]\n  @alpha = param : f32[3]\n"
                              "  %y = qa.scale %x, @alpha : f32[3]\n  return %y\n}\n";
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = parse(text, d);
    rt_weights *w = rt_weights_new();
    set(w, "alpha", 1, (int64_t[]){3}, (float[]){-0.5f, 1e-6f, 1.5f});
    CHECK_EQ_INT(pass_quadapter_clamp_alpha(g, w, d), 2);
    const float *alpha = rt_weights_get(w, "alpha")->data;
    CHECK_CLOSE(alpha[0], PASS_QUADAPTER_MIN_ALPHA, 0, 0);
    CHECK_CLOSE(alpha[1], PASS_QUADAPTER_MIN_ALPHA, 0, 0);
    CHECK_CLOSE(alpha[2], 1.5, 0, 0);
    rt_weights_free(w);
    ir_graph_free(g);
    ir_diag_free(d);
}

/* ---- the JIT against the interpreter ---- */

/* Every quantization op, per tensor and per channel along the last and
 * the first axis, on 3 x 5000 values so that per-tensor tasks split the
 * tensor. The generated code performs the same f32 operations as the
 * interpreter, and sums each channel in double in the same order, so the
 * results must be equal. */
static void test_jit_matches_interpreter(void)
{
    static const char *text =
        "graph @t {\n"
        "  %x = input : f32[3,5000]\n"
        "  %dy = input : f32[3,5000]\n"
        "  @s = param : f32[]\n"
        "  @z = param : f32[]\n"
        "  @cols.s = param : f32[5000]\n"
        "  @cols.z = param : f32[5000]\n"
        "  @rows.s = param : f32[3]\n"
        "  @rows.z = param : f32[3]\n"
        "  @alpha = param : f32[5000]\n"
        "  @beta = param : f32[3]\n"
        "  %act = fq.act %x, @s, @z {bits=8, symmetric=0, narrow=0} : f32[3,5000]\n"
        "  %by_col = fq.weight %x, @cols.s, @cols.z {axis=-1, bits=4, symmetric=1, narrow=1} : f32[3,5000]\n"
        "  %by_row = fq.weight %x, @rows.s, @rows.z {axis=0, bits=6, symmetric=0, narrow=0} : f32[3,5000]\n"
        "  %ste = grad.fq.input %dy, %x, @s, @z {axis=-1, qmin=0, qmax=255} : f32[3,5000]\n"
        "  %scaled = qa.scale %x, @alpha {axis=-1, invert=0} : f32[3,5000]\n"
        "  %divided = qa.scale %x, @beta {axis=0, invert=1} : f32[3,5000]\n"
        "  %ds = grad.fq.scale %dy, %x, @s, @z {axis=-1, qmin=0, qmax=255} : f32[]\n"
        "  %dz = grad.fq.zero_point %dy, %x, @s, @z {axis=-1, qmin=0, qmax=255} : f32[]\n"
        "  %ds_col = grad.fq.scale %dy, %x, @cols.s, @cols.z {axis=1, qmin=-7, qmax=7} : f32[5000]\n"
        "  %ds_row = grad.fq.scale %dy, %x, @rows.s, @rows.z {axis=0, qmin=0, qmax=63} : f32[3]\n"
        "  %dz_row = grad.fq.zero_point %dy, %x, @rows.s, @rows.z {axis=0, qmin=0, qmax=63} : f32[3]\n"
        "  return %act, %by_col, %by_row, %ste, %scaled, %divided, %ds, %dz, %ds_col, %ds_row, %dz_row\n"
        "}\n";
    enum { N = 15000, OUTPUTS = 11 };
    ir_diag *d = ir_diag_new(stderr);
    ir_graph *g = parse(text, d);
    rt_weights *w = rt_weights_new(), *in = rt_weights_new();
    static float x[N], dy[N], cols_s[5000], cols_z[5000], alpha[5000];
    uint64_t state = 99;
    for (int i = 0; i < N; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(state >> 40) / 16777216.0 * 8.0 - 4.0);
        dy[i] = (float)(i % 7) - 3.0f;
    }
    for (int c = 0; c < 5000; c++) {
        cols_s[c] = 0.05f + 0.001f * (float)(c % 50);
        cols_z[c] = 0.0f;
        alpha[c] = 0.5f + 0.0003f * (float)c;
    }
    set(in, "x", 2, (int64_t[]){3, 5000}, x);
    set(in, "dy", 2, (int64_t[]){3, 5000}, dy);
    set_scalar(w, "s", 8.0f / 255.0f);
    set_scalar(w, "z", 128.0f);
    set(w, "cols.s", 1, (int64_t[]){5000}, cols_s);
    set(w, "cols.z", 1, (int64_t[]){5000}, cols_z);
    set(w, "rows.s", 1, (int64_t[]){3}, (float[]){0.1f, 0.05f, 0.2f});
    set(w, "rows.z", 1, (int64_t[]){3}, (float[]){32.0f, 30.0f, 10.0f});
    set(w, "alpha", 1, (int64_t[]){5000}, alpha);
    set(w, "beta", 1, (int64_t[]){3}, (float[]){0.5f, 3.0f, 1.25f});

    rt_tensor *want[OUTPUTS] = {NULL}, *got[OUTPUTS] = {NULL};
    const rt_executor *jit = rt_executor_jit();
    void *module = g ? jit->compile(g, 2, d) : NULL;
    CHECK(module != NULL);
    if (g && module) {
        CHECK_EQ_INT(rt_interp_run(g, w, in, want, d), 0);
        CHECK_EQ_INT(jit->run(module, w, true, in, got, d), 0);
    }
    for (int k = 0; k < OUTPUTS; k++) {
        int64_t mismatches = 0;
        for (int64_t i = 0; want[k] && got[k] && i < rt_tensor_numel(want[k]); i++)
            mismatches += ((float *)want[k]->data)[i] != ((float *)got[k]->data)[i];
        CHECK(want[k] && got[k]);
        CHECK_EQ_INT(mismatches, 0);
        rt_tensor_free(want[k]);
        rt_tensor_free(got[k]);
    }
    if (module)
        jit->free(module);
    rt_weights_free(w);
    rt_weights_free(in);
    ir_graph_free(g);
    ir_diag_free(d);
}

int main(void)
{
    test_ranges();
    test_fake_quant_asymmetric();
    test_fake_quant_symmetric();
    test_fake_quant_per_channel();
    test_fake_quant_rejects_bad_scale();
    test_fake_quant_shape_errors();
    test_straight_through_gradient();
    test_lsq_gradient_matches_differences();
    test_qa_scale_gradient();
    test_calibrate_minmax();
    test_calibrate_percentile();
    test_calibrate_mse_clips_heavy_tail();
    test_quant_params_from_range();
    test_smoothquant_hand_example();
    test_clamp_alpha();
    test_jit_matches_interpreter();
    return check_finish();
}
