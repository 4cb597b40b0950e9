/* The compiled-graph cache: a graph's key is a byte string of everything
 * that code generation reads from it, and lookups compare keys exactly
 * after a hash check. */
#include "runtime/exec_cache.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct cache_entry {
    uint64_t hash;
    unsigned char *key;
    size_t key_len;
    void *module;
} cache_entry;

struct rt_exec_cache {
    const rt_executor *executor;
    int threads;
    cache_entry *entries;
    int count;
    int cap;
    rt_exec_cache_stats stats;
};

/* A growable byte string. */
typedef struct key_buffer {
    unsigned char *data;
    size_t len;
    size_t cap;
    bool failed;
} key_buffer;

static void put_bytes(key_buffer *b, const void *bytes, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
}

static void put_int(key_buffer *b, int64_t x)
{
    put_bytes(b, &x, sizeof x);
}

/* Writes the string with its terminating zero, so that consecutive
 * strings cannot run together into the same bytes. */
static void put_string(key_buffer *b, const char *s)
{
    put_bytes(b, s ? s : "", s ? strlen(s) + 1 : 1);
}

static void put_attr(key_buffer *b, const ir_attr *a)
{
    put_int(b, a->set);
    if (!a->set)
        return;
    put_int(b, a->i);
    put_bytes(b, &a->f, sizeof a->f);
    put_int(b, a->nints);
    for (int k = 0; k < a->nints; k++)
        put_int(b, a->ints[k]);
    put_string(b, a->s);
}

static void put_value(key_buffer *b, const ir_value *v)
{
    put_int(b, v->op);
    put_int(b, v->dead);
    put_int(b, v->type.dtype);
    put_int(b, v->type.rank);
    for (int k = 0; k < v->type.rank; k++)
        put_int(b, v->type.dims[k]);
    put_int(b, v->nops);
    for (int k = 0; k < v->nops; k++)
        put_int(b, v->ops[k]);
    for (int k = 0; k < IR_MAX_ATTRS; k++)
        put_attr(b, &v->attrs[k]);
    if (v->op == IR_OP_PARAM || v->op == IR_OP_INPUT)
        put_string(b, v->name);
}

/* FNV-1a, 64 bits. */
static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

rt_exec_cache *rt_exec_cache_new(const rt_executor *executor, int threads)
{
    rt_exec_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->executor = executor;
    c->threads = threads;
    return c;
}

void rt_exec_cache_free(rt_exec_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->count; i++) {
        c->executor->free(c->entries[i].module);
        free(c->entries[i].key);
    }
    free(c->entries);
    free(c);
}

void *rt_exec_cache_get(rt_exec_cache *c, const ir_graph *g, ir_diag *d)
{
    key_buffer key = {0};
    put_int(&key, g->nvalues);
    for (int id = 0; id < g->nvalues; id++)
        put_value(&key, g->values[id]);
    put_int(&key, g->noutputs);
    for (int i = 0; i < g->noutputs; i++)
        put_int(&key, g->outputs[i]);
    if (key.failed) {
        free(key.data);
        ir_diag_file_error(d, NULL, "out of memory looking up graph '%s' in the compiled-graph cache", g->name);
        return NULL;
    }

    uint64_t hash = hash_bytes(key.data, key.len);
    for (int i = 0; i < c->count; i++) {
        const cache_entry *e = &c->entries[i];
        if (e->hash == hash && e->key_len == key.len && memcmp(e->key, key.data, key.len) == 0) {
            free(key.data);
            c->stats.hits++;
            return e->module;
        }
    }

    if (c->count == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        cache_entry *grown = realloc(c->entries, sizeof *grown * (size_t)cap);
        if (!grown) {
            free(key.data);
            ir_diag_file_error(d, NULL, "out of memory adding graph '%s' to the compiled-graph cache", g->name);
            return NULL;
        }
        c->entries = grown;
        c->cap = cap;
    }
    double start = now_seconds();
    void *module = c->executor->compile(g, c->threads, d);
    c->stats.compile_seconds += now_seconds() - start;
    if (!module) {
        free(key.data);
        return NULL;
    }
    c->stats.compiles++;
    c->entries[c->count++] = (cache_entry){hash, key.data, key.len, module};
    return module;
}

const rt_executor *rt_exec_cache_executor(const rt_exec_cache *c)
{
    return c->executor;
}

rt_exec_cache_stats rt_exec_cache_get_stats(const rt_exec_cache *c)
{
    return c->stats;
}
