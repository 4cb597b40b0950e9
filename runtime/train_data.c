/* Splitting token streams and drawing training and held-out batches. */
#include "runtime/train_data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void rt_train_data_init(rt_train_data *data)
{
    memset(data, 0, sizeof *data);
}

void rt_train_data_free(rt_train_data *data)
{
    for (int i = 0; i < data->ntexts; i++)
        free(data->texts[i]);
    free(data->texts);
    free(data->train);
    free(data->val);
    rt_train_data_init(data);
}

int rt_train_data_add(rt_train_data *data, int32_t *ids, size_t n, double val_frac, ir_diag *d)
{
    int count = data->ntexts + 1;
    int32_t **texts = realloc(data->texts, (size_t)count * sizeof *texts);
    if (texts)
        data->texts = texts;
    rt_token_span *train = texts ? realloc(data->train, (size_t)count * sizeof *train) : NULL;
    if (train)
        data->train = train;
    rt_token_span *val = train ? realloc(data->val, (size_t)count * sizeof *val) : NULL;
    if (!val) {
        free(ids);
        ir_diag_file_error(d, NULL, "out of memory adding a text of %zu tokens", n);
        return -1;
    }
    data->val = val;

    size_t held_out = (size_t)floor((double)n * val_frac);
    if (held_out > n)
        held_out = n;
    data->texts[data->ntexts] = ids;
    data->train[data->ntexts] = (rt_token_span){ids, n - held_out};
    data->val[data->ntexts] = (rt_token_span){ids + (n - held_out), held_out};
    data->ntexts = count;
    return 0;
}

int32_t rt_train_data_max_id(const rt_train_data *data)
{
    int32_t max_id = -1;
    for (int i = 0; i < data->ntexts; i++) {
        size_t n = data->train[i].count + data->val[i].count;
        for (size_t j = 0; j < n; j++)
            if (data->texts[i][j] > max_id)
                max_id = data->texts[i][j];
    }
    return max_id;
}

size_t rt_train_data_train_tokens(const rt_train_data *data)
{
    size_t n = 0;
    for (int i = 0; i < data->ntexts; i++)
        n += data->train[i].count;
    return n;
}

size_t rt_train_data_val_tokens(const rt_train_data *data)
{
    size_t n = 0;
    for (int i = 0; i < data->ntexts; i++)
        n += data->val[i].count;
    return n;
}

static size_t window_starts(const rt_token_span *span, int T)
{
    return span->count > (size_t)T ? span->count - (size_t)T : 0;
}

static void copy_window(const int32_t *window, int T, int32_t *idx, int32_t *targets)
{
    memcpy(idx, window, (size_t)T * sizeof *idx);
    memcpy(targets, window + 1, (size_t)T * sizeof *targets);
}

int rt_train_sample_batch(const rt_train_data *data, rt_rng *rng, int B, int T, int32_t *idx, int32_t *targets,
                          ir_diag *d)
{
    size_t total = 0;
    for (int i = 0; i < data->ntexts; i++)
        total += window_starts(&data->train[i], T);
    if (total == 0) {
        ir_diag_file_error(d, NULL,
                           "no training text has the %d tokens one window needs (%zu training tokens in all); "
                           "use a shorter --seq or more text",
                           T + 1, rt_train_data_train_tokens(data));
        return -1;
    }
    for (int b = 0; b < B; b++) {
        size_t start = (size_t)rt_rng_below(rng, total);
        int text = 0;
        while (start >= window_starts(&data->train[text], T)) {
            start -= window_starts(&data->train[text], T);
            text++;
        }
        copy_window(data->train[text].ids + start, T, idx + (size_t)b * T, targets + (size_t)b * T);
    }
    return 0;
}

static size_t span_val_windows(const rt_token_span *span, int T)
{
    return span->count > (size_t)T ? (span->count - 1) / (size_t)T : 0;
}

size_t rt_train_val_windows(const rt_train_data *data, int T)
{
    size_t n = 0;
    for (int i = 0; i < data->ntexts; i++)
        n += span_val_windows(&data->val[i], T);
    return n;
}

void rt_train_val_batch(const rt_train_data *data, size_t batch, int B, int T, int32_t *idx, int32_t *targets)
{
    size_t total = rt_train_val_windows(data, T);
    for (int b = 0; b < B; b++) {
        size_t window = (batch * (size_t)B + (size_t)b) % total;
        int text = 0;
        while (window >= span_val_windows(&data->val[text], T)) {
            window -= span_val_windows(&data->val[text], T);
            text++;
        }
        copy_window(data->val[text].ids + window * (size_t)T, T, idx + (size_t)b * T, targets + (size_t)b * T);
    }
}
