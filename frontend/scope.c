/* Name tables for the frontend: a string-keyed map, nested scopes of
 * tensor names, and edit-distance suggestions for "did you mean" hints. */
#include "frontend/lower.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash_string(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void map_grow(fe_map *m)
{
    fe_map bigger = {0};
    bigger.cap = m->cap ? m->cap * 2 : 64;
    bigger.keys = calloc((size_t)bigger.cap, sizeof *bigger.keys);
    bigger.values = calloc((size_t)bigger.cap, sizeof *bigger.values);
    if (!bigger.keys || !bigger.values)
        abort();
    for (int i = 0; i < m->cap; i++)
        if (m->keys[i])
            fe_map_put(&bigger, m->keys[i], m->values[i]);
    fe_map_free(m);
    *m = bigger;
}

int fe_map_get(const fe_map *m, const char *key)
{
    if (!m->cap)
        return -1;
    uint64_t mask = (uint64_t)m->cap - 1;
    for (uint64_t i = hash_string(key) & mask; m->keys[i]; i = (i + 1) & mask)
        if (strcmp(m->keys[i], key) == 0)
            return m->values[i];
    return -1;
}

void fe_map_put(fe_map *m, const char *key, int value)
{
    if ((m->count + 1) * 2 > m->cap)
        map_grow(m);
    uint64_t mask = (uint64_t)m->cap - 1;
    uint64_t i = hash_string(key) & mask;
    for (; m->keys[i]; i = (i + 1) & mask) {
        if (strcmp(m->keys[i], key) == 0) {
            m->values[i] = value;
            return;
        }
    }
    m->keys[i] = key;
    m->values[i] = value;
    m->count++;
}

void fe_map_free(fe_map *m)
{
    free(m->keys);
    free(m->values);
    memset(m, 0, sizeof *m);
}

fe_sym *fe_scope_find(fe_scope *s, const char *name)
{
    int i = fe_map_get(&s->index, name);
    return i < 0 ? NULL : &s->syms[i];
}

fe_sym *fe_scope_lookup(fe_scope *s, const char *name)
{
    for (; s; s = s->parent) {
        fe_sym *sym = fe_scope_find(s, name);
        if (sym)
            return sym;
    }
    return NULL;
}

fe_sym *fe_scope_add(fe_scope *s, const char *name, int id, ir_loc loc, const fe_stmt *stmt)
{
    if (s->nsyms == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 32;
        s->syms = realloc(s->syms, sizeof *s->syms * (size_t)s->cap);
        if (!s->syms)
            abort();
    }
    fe_sym *sym = &s->syms[s->nsyms];
    sym->name = name;
    sym->id = id;
    sym->loc = loc;
    sym->stmt = stmt;
    fe_map_put(&s->index, name, s->nsyms++);
    return sym;
}

void fe_scope_free(fe_scope *s)
{
    free(s->syms);
    fe_map_free(&s->index);
    s->syms = NULL;
    s->nsyms = s->cap = 0;
}

/* Levenshtein distance, or any value above `limit` once the distance is
 * known to exceed it. Names longer than 64 bytes are never suggested. */
static int edit_distance(const char *a, const char *b, int limit)
{
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la > 64 || lb > 64 || la - lb > limit || lb - la > limit)
        return limit + 1;
    int row[65];
    for (int j = 0; j <= lb; j++)
        row[j] = j;
    for (int i = 1; i <= la; i++) {
        int diagonal = row[0];
        row[0] = i;
        int row_min = i;
        for (int j = 1; j <= lb; j++) {
            int above = row[j];
            int best = diagonal + (a[i - 1] != b[j - 1]);
            if (above + 1 < best)
                best = above + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diagonal = above;
            if (best < row_min)
                row_min = best;
        }
        if (row_min > limit)
            return limit + 1;
    }
    return row[lb];
}

fe_suggestion fe_suggestion_start(const char *name)
{
    /* Suggest only names within two edits, and never a name that differs
     * from a short one in every character. */
    fe_suggestion s = {name, NULL, 3, 0};
    return s;
}

void fe_suggestion_consider(fe_suggestion *s, const char *candidate)
{
    /* Bounds the work for files with very many names. */
    if (++s->considered > FE_MAX_SUGGESTION_CANDIDATES || strcmp(candidate, s->name) == 0)
        return;
    int d = edit_distance(s->name, candidate, s->best_distance - 1);
    if (d < s->best_distance && (size_t)d < strlen(s->name)) {
        s->best_distance = d;
        s->best = candidate;
    }
}
