/* Host tensors and named weight sets. */
#include "runtime/tensor.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Tensor data of at least this many bytes starts on a 2 MB boundary and
 * requests transparent huge pages, because the GEMV kernels stream the
 * weights in place. On 4 KB pages a GPT-2 124M decoding step took about
 * 15% more time (measured on a shared 2-core Zen 4 VM with THP in madvise
 * mode). */
#define HUGE_PAGE_BYTES ((size_t)2 << 20)

const char *ir_dtype_name(ir_dtype t)
{
    static const char *names[IR_DTYPE_COUNT] = {"f32", "f16", "bf16", "i8", "u8", "i32", "i64"};
    return (unsigned)t < IR_DTYPE_COUNT ? names[t] : "?";
}

ir_dtype ir_dtype_from_name(const char *name)
{
    for (int t = 0; t < IR_DTYPE_COUNT; t++)
        if (strcmp(ir_dtype_name((ir_dtype)t), name) == 0)
            return (ir_dtype)t;
    return IR_DTYPE_COUNT;
}

size_t ir_dtype_size(ir_dtype t)
{
    switch (t) {
    case IR_F32: case IR_I32: return 4;
    case IR_F16: case IR_BF16: return 2;
    case IR_I8: case IR_U8: return 1;
    case IR_I64: return 8;
    default: return 0;
    }
}

/* Only the whole 2 MB pages of large data are advised, so a tail shorter
 * than a page does not take a whole huge page of memory. The advice may be
 * ignored, for example when THP is off. */
void *rt_alloc_data(size_t bytes)
{
    if (bytes > SIZE_MAX - HUGE_PAGE_BYTES)
        return NULL;
    bytes = bytes ? (bytes + 63) / 64 * 64 : 64;
    void *p;
    if (bytes < HUGE_PAGE_BYTES) {
        p = aligned_alloc(64, bytes);
    } else {
        /* C11 requires the size to be a multiple of the alignment. */
        p = aligned_alloc(HUGE_PAGE_BYTES, (bytes + HUGE_PAGE_BYTES - 1) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES);
#ifdef MADV_HUGEPAGE
        if (p)
            madvise(p, bytes / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES, MADV_HUGEPAGE);
#endif
    }
    if (p)
        memset(p, 0, bytes);
    return p;
}

rt_tensor *rt_tensor_new(ir_dtype dtype, int rank, const int64_t *dims)
{
    if (rank < 0 || rank > RT_MAX_RANK || ir_dtype_size(dtype) == 0)
        return NULL;
    rt_tensor *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->dtype = dtype;
    t->rank = rank;
    uint64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 0 || (dims[i] > 0 && n > (UINT64_MAX / 16) / (uint64_t)dims[i])) {
            free(t);
            return NULL;
        }
        t->dims[i] = dims[i];
        n *= (uint64_t)dims[i];
    }
    size_t bytes = (size_t)n * ir_dtype_size(dtype);
    size_t rounded = (bytes + 63) / 64 * 64;
    t->data = rt_alloc_data(rounded);
    if (!t->data) {
        free(t);
        return NULL;
    }
    return t;
}

void rt_tensor_free(rt_tensor *t)
{
    if (!t)
        return;
    free(t->data);
    free(t);
}

int64_t rt_tensor_numel(const rt_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++)
        n *= t->dims[i];
    return n;
}

size_t rt_tensor_nbytes(const rt_tensor *t)
{
    return (size_t)rt_tensor_numel(t) * ir_dtype_size(t->dtype);
}

float rt_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalize */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t rt_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff);
    uint32_t mant = x & 0x7fffff;
    if (exp == 0xff) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    int32_t e = exp - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00);
    if (e <= 0) { /* subnormal or zero, round to nearest even */
        if (e < -10)
            return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = 1u << (shift - 1);
        uint32_t r = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
        r++; /* may carry into the exponent, which is the correct rounding */
    return (uint16_t)(sign | r);
}

float rt_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t rt_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

rt_tensor *rt_tensor_to_f32(const rt_tensor *t)
{
    rt_tensor *out = rt_tensor_new(IR_F32, t->rank, t->dims);
    if (!out)
        return NULL;
    int64_t n = rt_tensor_numel(t);
    float *dst = out->data;
    switch (t->dtype) {
    case IR_F32: memcpy(dst, t->data, (size_t)n * 4); break;
    case IR_F16: for (int64_t i = 0; i < n; i++) dst[i] = rt_f16_to_f32(((const uint16_t *)t->data)[i]); break;
    case IR_BF16: for (int64_t i = 0; i < n; i++) dst[i] = rt_bf16_to_f32(((const uint16_t *)t->data)[i]); break;
    case IR_I8: for (int64_t i = 0; i < n; i++) dst[i] = ((const int8_t *)t->data)[i]; break;
    case IR_U8: for (int64_t i = 0; i < n; i++) dst[i] = ((const uint8_t *)t->data)[i]; break;
    case IR_I32: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int32_t *)t->data)[i]; break;
    case IR_I64: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int64_t *)t->data)[i]; break;
    default: rt_tensor_free(out); return NULL;
    }
    return out;
}

static bool is_float_dtype(ir_dtype t)
{
    return t == IR_F32 || t == IR_F16 || t == IR_BF16;
}

rt_tensor *rt_tensor_to_float_dtype(const rt_tensor *t, ir_dtype to)
{
    if (!is_float_dtype(t->dtype) || !is_float_dtype(to))
        return NULL;
    rt_tensor *wide = rt_tensor_to_f32(t);
    if (!wide || to == IR_F32)
        return wide;
    rt_tensor *out = rt_tensor_new(to, t->rank, t->dims);
    if (out) {
        int64_t n = rt_tensor_numel(t);
        const float *src = wide->data;
        uint16_t *dst = out->data;
        for (int64_t i = 0; i < n; i++)
            dst[i] = to == IR_F16 ? rt_f32_to_f16(src[i]) : rt_f32_to_bf16(src[i]);
    }
    rt_tensor_free(wide);
    return out;
}

rt_weights *rt_weights_new(void)
{
    return calloc(1, sizeof(rt_weights));
}

void rt_weights_free(rt_weights *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->count; i++) {
        free(w->names[i]);
        rt_tensor_free(w->tensors[i]);
    }
    for (int i = 0; i < w->nmeta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->names);
    free(w->tensors);
    free(w->meta_keys);
    free(w->meta_values);
    free(w);
}

int rt_weights_set(rt_weights *w, const char *name, rt_tensor *t)
{
    for (int i = 0; i < w->count; i++) {
        if (strcmp(w->names[i], name) == 0) {
            rt_tensor_free(w->tensors[i]);
            w->tensors[i] = t;
            return 0;
        }
    }
    if (w->count == w->cap) {
        int cap = w->cap ? w->cap * 2 : 64;
        char **names = realloc(w->names, (size_t)cap * sizeof *names);
        if (!names)
            return -1;
        w->names = names;
        rt_tensor **tensors = realloc(w->tensors, (size_t)cap * sizeof *tensors);
        if (!tensors)
            return -1;
        w->tensors = tensors;
        w->cap = cap;
    }
    w->names[w->count] = strdup(name);
    if (!w->names[w->count])
        return -1;
    w->tensors[w->count++] = t;
    return 0;
}

rt_tensor *rt_weights_get(const rt_weights *w, const char *name)
{
    for (int i = 0; i < w->count; i++)
        if (strcmp(w->names[i], name) == 0)
            return w->tensors[i];
    return NULL;
}

int rt_weights_set_meta(rt_weights *w, const char *key, const char *value)
{
    for (int i = 0; i < w->nmeta; i++) {
        if (strcmp(w->meta_keys[i], key) == 0) {
            char *v = strdup(value);
            if (!v)
                return -1;
            free(w->meta_values[i]);
            w->meta_values[i] = v;
            return 0;
        }
    }
    char **keys = realloc(w->meta_keys, (size_t)(w->nmeta + 1) * sizeof *keys);
    if (!keys)
        return -1;
    w->meta_keys = keys;
    char **values = realloc(w->meta_values, (size_t)(w->nmeta + 1) * sizeof *values);
    if (!values)
        return -1;
    w->meta_values = values;
    w->meta_keys[w->nmeta] = strdup(key);
    w->meta_values[w->nmeta] = strdup(value);
    w->nmeta++;
    return 0;
}

const char *rt_weights_get_meta(const rt_weights *w, const char *key)
{
    for (int i = 0; i < w->nmeta; i++)
        if (strcmp(w->meta_keys[i], key) == 0)
            return w->meta_values[i];
    return NULL;
}
