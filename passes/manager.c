/* The pass registry built from passes/passes.def, pass options, pipeline
 * parsing and the one loop that runs every pass. */
#include "passes/manager.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const pass_info pass_table[PASS_COUNT] = {
#define PASS(id, name, function, options, description) [PASS_##id] = {name, function, options, description},
#include "passes/passes.def"
#undef PASS
};

const char pass_default_pipeline[] = "canonicalize,cse,constfold,dce";

const pass_info *pass_get(pass_id id)
{
    return (unsigned)id < PASS_COUNT ? &pass_table[id] : NULL;
}

pass_id pass_from_name(const char *name)
{
    for (int id = 0; id < PASS_COUNT; id++)
        if (strcmp(pass_table[id].name, name) == 0)
            return (pass_id)id;
    return PASS_COUNT;
}

/* ---- options ---- */

const char *pass_option_str(const pass_options *opts, const char *key, const char *fallback)
{
    for (int i = 0; opts && i < opts->count; i++)
        if (strcmp(opts->items[i].key, key) == 0)
            return opts->items[i].value;
    return fallback;
}

int64_t pass_option_int(const pass_options *opts, const char *key, int64_t fallback)
{
    const char *s = pass_option_str(opts, key, NULL);
    return s ? strtoll(s, NULL, 10) : fallback;
}

double pass_option_float(const pass_options *opts, const char *key, double fallback)
{
    const char *s = pass_option_str(opts, key, NULL);
    return s ? strtod(s, NULL) : fallback;
}

bool pass_option_bool(const pass_options *opts, const char *key, bool fallback)
{
    const char *s = pass_option_str(opts, key, NULL);
    if (!s)
        return fallback;
    return strcmp(s, "true") == 0 || strcmp(s, "1") == 0;
}

static int fail(char *err, int cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, int cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, (size_t)cap, fmt, ap);
    va_end(ap);
    return -1;
}

/* Finds `key` in an option spec "key:kind,key:kind" and copies its kind
 * into kind. Returns false when the pass has no such option. */
static bool find_option_kind(const char *spec, const char *key, char *kind, size_t kind_cap)
{
    size_t key_len = strlen(key);
    for (const char *p = spec; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *colon = memchr(p, ':', len);
        if (colon && (size_t)(colon - p) == key_len && memcmp(p, key, key_len) == 0) {
            size_t n = len - key_len - 1;
            if (n >= kind_cap)
                n = kind_cap - 1;
            memcpy(kind, colon + 1, n);
            kind[n] = '\0';
            return true;
        }
        p += len + (end ? 1 : 0);
    }
    return false;
}

static bool value_has_kind(const char *value, const char *kind)
{
    char *end;
    errno = 0;
    if (strcmp(kind, "int") == 0) {
        strtoll(value, &end, 10);
        return *value && *end == '\0' && errno == 0;
    }
    if (strcmp(kind, "count") == 0) {
        long long v = strtoll(value, &end, 10);
        return *value && *end == '\0' && errno == 0 && v >= 0;
    }
    if (strcmp(kind, "float") == 0) {
        strtod(value, &end);
        return *value && *end == '\0';
    }
    if (strcmp(kind, "bool") == 0)
        return strcmp(value, "true") == 0 || strcmp(value, "false") == 0 || strcmp(value, "1") == 0 ||
               strcmp(value, "0") == 0;
    return true;
}

static const char *kind_phrase(const char *kind)
{
    if (strcmp(kind, "int") == 0)
        return "an integer";
    if (strcmp(kind, "count") == 0)
        return "a non-negative integer";
    if (strcmp(kind, "float") == 0)
        return "a number";
    if (strcmp(kind, "bool") == 0)
        return "true or false";
    return "a string";
}

/* Checks one key=value against the pass's option spec and appends it. */
static int add_option(pass_pipeline_entry *e, const char *item, size_t len, char *err, int cap)
{
    const pass_info *info = pass_get(e->id);
    const char *eq = memchr(item, '=', len);
    if (!eq || eq == item)
        return fail(err, cap, "option '%.*s' of pass '%s' must be written key=value", (int)len, item, info->name);
    char *key = strndup(item, (size_t)(eq - item));
    char *value = strndup(eq + 1, len - (size_t)(eq + 1 - item));
    pass_option *grown = key && value ? realloc(e->opts.items, sizeof(pass_option) * (size_t)(e->opts.count + 1))
                                      : NULL;
    if (!grown) {
        free(key);
        free(value);
        return fail(err, cap, "out of memory");
    }
    e->opts.items = grown;
    e->opts.items[e->opts.count++] = (pass_option){key, value};

    char kind[16];
    if (!find_option_kind(info->options, key, kind, sizeof kind)) {
        if (!*info->options)
            return fail(err, cap, "pass '%s' takes no options, but '%s' is given", info->name, key);
        return fail(err, cap, "pass '%s' has no option '%s'; its options are %s", info->name, key, info->options);
    }
    if (!value_has_kind(value, kind))
        return fail(err, cap, "option '%s' of pass '%s' takes %s, got '%s'", key, info->name, kind_phrase(kind), value);
    for (int i = 0; i + 1 < e->opts.count; i++)
        if (strcmp(e->opts.items[i].key, key) == 0)
            return fail(err, cap, "option '%s' of pass '%s' is given twice", key, info->name);
    return 0;
}

/* Parses the text between the braces of name{...}. */
static int parse_options(pass_pipeline_entry *e, const char *text, size_t len, char *err, int cap)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (text[i] == ' ' || text[i] == ','))
            i++;
        size_t begin = i;
        while (i < len && text[i] != ' ' && text[i] != ',')
            i++;
        /* A comma followed by a segment without '=' continues the value,
         * so lists such as wrt=h.0.*,wte.weight stay one option. */
        while (i < len && text[i] == ',') {
            size_t next = i + 1;
            while (next < len && text[next] != ' ' && text[next] != ',' && text[next] != '=')
                next++;
            if (next < len && text[next] == '=')
                break;
            i = next;
        }
        if (i > begin && add_option(e, text + begin, i - begin, err, cap) != 0)
            return -1;
    }
    return 0;
}

static int parse_entry(pass_pipeline *out, const char *text, size_t len, char *err, int cap)
{
    while (len > 0 && text[0] == ' ') {
        text++;
        len--;
    }
    while (len > 0 && text[len - 1] == ' ')
        len--;
    const char *brace = memchr(text, '{', len);
    size_t name_len = brace ? (size_t)(brace - text) : len;
    if (name_len == 0)
        return fail(err, cap, "the pass list has an empty entry; separate pass names with single commas");
    char name[64];
    if (name_len >= sizeof name)
        return fail(err, cap, "unknown pass '%.*s'", (int)name_len, text);
    memcpy(name, text, name_len);
    name[name_len] = '\0';
    pass_id id = pass_from_name(name);
    if (id == PASS_COUNT)
        return fail(err, cap, "unknown pass '%s'; run 'quadc opt --help' for the list of passes", name);

    pass_pipeline_entry *grown = realloc(out->entries, sizeof *grown * (size_t)(out->count + 1));
    if (!grown)
        return fail(err, cap, "out of memory");
    out->entries = grown;
    pass_pipeline_entry *e = &out->entries[out->count++];
    e->id = id;
    e->opts.count = 0;
    e->opts.items = NULL;
    if (!brace)
        return 0;
    const char *close = memchr(brace, '}', len - name_len);
    if (close && close != text + len - 1)
        return fail(err, cap, "pass '%s' has '%.*s' after its options; write all options in one pair of braces",
                    name, (int)(text + len - 1 - close), close + 1);
    if (text[len - 1] != '}')
        return fail(err, cap, "options of pass '%s' must end with '}'", name);
    return parse_options(e, brace + 1, len - name_len - 2, err, cap);
}

int pass_pipeline_parse(const char *text, pass_pipeline *out, char *err, int errcap)
{
    out->count = 0;
    out->entries = NULL;
    size_t n = strlen(text), begin = 0;
    int depth = 0;
    bool blank = true;
    for (size_t i = 0; i < n; i++)
        if (text[i] != ' ')
            blank = false;
    if (blank)
        return 0;
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? text[i] : ',';
        if (c == '{' && ++depth > 1)
            return fail(err, errcap, "pass options cannot nest braces");
        if (c == '}' && --depth < 0)
            return fail(err, errcap, "the pass list has a '}' without a matching '{'");
        if (c != ',' || depth > 0)
            continue;
        if (parse_entry(out, text + begin, i - begin, err, errcap) != 0) {
            pass_pipeline_free(out);
            return -1;
        }
        begin = i + 1;
    }
    if (depth != 0) {
        pass_pipeline_free(out);
        return fail(err, errcap, "the pass list has a '{' without a matching '}'");
    }
    return 0;
}

void pass_pipeline_free(pass_pipeline *pipeline)
{
    for (int i = 0; i < pipeline->count; i++) {
        for (int k = 0; k < pipeline->entries[i].opts.count; k++) {
            free(pipeline->entries[i].opts.items[k].key);
            free(pipeline->entries[i].opts.items[k].value);
        }
        free(pipeline->entries[i].opts.items);
    }
    free(pipeline->entries);
    pipeline->entries = NULL;
    pipeline->count = 0;
}

/* ---- the manager ---- */

struct pass_manager {
    ir_diag *diag;
    pass_instrument *instruments;
    int ninstruments;
};

pass_manager *pass_manager_new(ir_diag *d)
{
    pass_manager *pm = calloc(1, sizeof *pm);
    if (pm)
        pm->diag = d;
    return pm;
}

void pass_manager_free(pass_manager *pm)
{
    if (!pm)
        return;
    for (int i = 0; i < pm->ninstruments; i++)
        if (pm->instruments[i].free_ctx)
            pm->instruments[i].free_ctx(pm->instruments[i].ctx);
    free(pm->instruments);
    free(pm);
}

ir_diag *pass_manager_diag(const pass_manager *pm)
{
    return pm->diag;
}

int pass_manager_add_instrument(pass_manager *pm, pass_instrument instrument)
{
    pass_instrument *grown = realloc(pm->instruments, sizeof *grown * (size_t)(pm->ninstruments + 1));
    if (!grown)
        return -1;
    pm->instruments = grown;
    pm->instruments[pm->ninstruments++] = instrument;
    return 0;
}

/* Runs one pass and compacts the graph. Errors carry the pass as context. */
static int run_one(pass_manager *pm, const pass_pipeline_entry *e, ir_graph *g)
{
    const pass_info *info = pass_get(e->id);
    char context[96];
    snprintf(context, sizeof context, "in pass '%s'", info->name);
    ir_diag_set_context(pm->diag, context);
    int errors_before = ir_diag_error_count(pm->diag);
    ir_loc none = {0};

    int rc = info->run(g, &e->opts, pm->diag);
    if (rc != 0 && ir_diag_error_count(pm->diag) == errors_before)
        ir_diag_error(pm->diag, none, "the pass failed without reporting why");
    if (rc == 0 && ir_graph_compact(g) != 0) {
        ir_diag_error(pm->diag, none, "the pass left a cycle in the graph");
        rc = -1;
    }
    /* Compaction maps an output whose value was marked dead to -1. */
    for (int i = 0; rc == 0 && i < g->noutputs; i++) {
        if (g->outputs[i] < 0) {
            ir_diag_error(pm->diag, none, "the pass removed the value of graph output %d", i);
            rc = -1;
        }
    }
    ir_diag_set_context(pm->diag, NULL);
    return rc;
}

int pass_manager_run(pass_manager *pm, const pass_pipeline *pipeline, ir_graph *g)
{
    int rc = 0;
    for (int i = 0; i < pm->ninstruments && rc == 0; i++)
        if (pm->instruments[i].before_pipeline)
            rc = pm->instruments[i].before_pipeline(pm->instruments[i].ctx, g, pipeline->count);

    for (int p = 0; p < pipeline->count && rc == 0; p++) {
        const pass_pipeline_entry *e = &pipeline->entries[p];
        pass_run_info run = {pass_get(e->id)->name, p + 1, pipeline->count};
        for (int i = 0; i < pm->ninstruments; i++)
            if (pm->instruments[i].before_pass)
                pm->instruments[i].before_pass(pm->instruments[i].ctx, &run, g);

        rc = run_one(pm, e, g);

        bool failed = rc != 0;
        for (int i = pm->ninstruments - 1; i >= 0; i--)
            if (pm->instruments[i].after_pass &&
                pm->instruments[i].after_pass(pm->instruments[i].ctx, &run, g, failed) != 0)
                rc = -1;
    }

    for (int i = pm->ninstruments - 1; i >= 0; i--)
        if (pm->instruments[i].after_pipeline)
            pm->instruments[i].after_pipeline(pm->instruments[i].ctx);
    return rc;
}

int pass_run_text(ir_graph *g, const char *text, ir_diag *d)
{
    pass_pipeline pipeline;
    char err[256];
    if (pass_pipeline_parse(text, &pipeline, err, sizeof err) != 0) {
        ir_diag_file_error(d, NULL, "invalid pass pipeline '%s': %s", text, err);
        return -1;
    }
    pass_manager *pm = pass_manager_new(d);
    int rc = pm ? pass_manager_run(pm, &pipeline, g) : -1;
    pass_manager_free(pm);
    pass_pipeline_free(&pipeline);
    return rc;
}
