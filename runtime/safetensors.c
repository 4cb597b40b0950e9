/* Safetensors reader and writer, GPT-2 tensor-name normalization and atomic
 * file output. */
#include "runtime/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor bytes are copied between files and memory without byte swapping. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the weight-file readers and writers assume a little-endian host"
#endif

/* JSON numbers are doubles, so integers above 2^53 may have been rounded. */
#define MAX_EXACT_JSON_INTEGER 9007199254740992.0
#define MAX_TENSOR_ELEMENTS (1ull << 60)

static const char *const SAFETENSORS_DTYPE_NAMES[IR_DTYPE_COUNT] = {
    [IR_F32] = "F32", [IR_F16] = "F16", [IR_BF16] = "BF16", [IR_I8] = "I8",
    [IR_U8] = "U8",   [IR_I32] = "I32", [IR_I64] = "I64",
};

static ir_dtype dtype_from_safetensors_name(const char *name)
{
    for (int t = 0; t < IR_DTYPE_COUNT; t++)
        if (strcmp(SAFETENSORS_DTYPE_NAMES[t], name) == 0)
            return (ir_dtype)t;
    return IR_DTYPE_COUNT;
}

/* Formats a shape as "[2, 3]" into buffer, truncating if it does not fit. */
static const char *format_shape(const int64_t *dims, int rank, char *buffer, size_t size)
{
    size_t used = 0;
    used += (size_t)snprintf(buffer, size, "[");
    for (int i = 0; i < rank && used < size; i++)
        used += (size_t)snprintf(buffer + used, size - used, "%s%" PRId64, i ? ", " : "", dims[i]);
    if (used < size)
        snprintf(buffer + used, size - used, "]");
    return buffer;
}

/* ---------------------------------------------------------------------- */
/* File helpers                                                           */
/* ---------------------------------------------------------------------- */

int rt_read_exact_at(int fd, void *buffer, size_t size, uint64_t offset)
{
    char *p = buffer;
    while (size > 0) {
        ssize_t n = pread(fd, p, size, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            return 1;
        p += n;
        size -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

int rt_atomic_file_open(rt_atomic_file *f, const char *path, ir_diag *d)
{
    static atomic_uint temp_counter;

    memset(f, 0, sizeof *f);
    f->path = path;
    f->diag = d;
    size_t size = strlen(path) + 64;
    f->temp_path = malloc(size);
    if (!f->temp_path) {
        ir_diag_file_error(d, path, "out of memory while creating the output file");
        return -1;
    }

    /* The temporary file must be in the target's directory so that rename
     * replaces the target atomically. O_EXCL keeps a concurrent writer's
     * file intact, and on a name collision the loop tries the next counter. */
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        unsigned counter = atomic_fetch_add(&temp_counter, 1u);
        snprintf(f->temp_path, size, "%s.tmp.%ld.%u", path, (long)getpid(), counter);
        fd = open(f->temp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        ir_diag_file_error(d, path, "cannot create temporary file '%s': %s; check that the "
                           "directory exists and is writable", f->temp_path, strerror(errno));
        free(f->temp_path);
        f->temp_path = NULL;
        return -1;
    }
    f->stream = fdopen(fd, "wb");
    if (!f->stream) {
        ir_diag_file_error(d, path, "cannot open temporary file '%s' for writing: %s",
                           f->temp_path, strerror(errno));
        close(fd);
        unlink(f->temp_path);
        free(f->temp_path);
        f->temp_path = NULL;
        return -1;
    }
    return 0;
}

int rt_atomic_file_write(rt_atomic_file *f, const void *data, size_t size)
{
    if (f->failed)
        return -1;
    if (size > 0 && fwrite(data, 1, size, f->stream) != size) {
        ir_diag_file_error(f->diag, f->path, "failed to write temporary file '%s': %s; check "
                           "free disk space", f->temp_path, strerror(errno));
        f->failed = true;
        return -1;
    }
    return 0;
}

void rt_atomic_file_abort(rt_atomic_file *f)
{
    if (f->stream)
        fclose(f->stream);
    if (f->temp_path) {
        unlink(f->temp_path);
        free(f->temp_path);
    }
    f->stream = NULL;
    f->temp_path = NULL;
}

/* Makes a completed rename durable. Best effort: some file systems do not
 * support fsync on directories, and the data itself is already synced. */
static void sync_parent_directory(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

int rt_atomic_file_commit(rt_atomic_file *f)
{
    if (f->failed) {
        rt_atomic_file_abort(f);
        return -1;
    }
    const char *step = NULL;
    if (fflush(f->stream) != 0)
        step = "flush";
    else if (fsync(fileno(f->stream)) != 0)
        step = "fsync";
    int saved_errno = errno;
    if (fclose(f->stream) != 0 && !step) {
        step = "close";
        saved_errno = errno;
    }
    f->stream = NULL;
    if (!step && rename(f->temp_path, f->path) != 0) {
        step = "rename";
        saved_errno = errno;
    }
    if (step) {
        ir_diag_file_error(f->diag, f->path, "failed to %s temporary file '%s': %s; the output "
                           "was not written", step, f->temp_path, strerror(saved_errno));
        rt_atomic_file_abort(f);
        return -1;
    }
    free(f->temp_path);
    f->temp_path = NULL;
    sync_parent_directory(f->path);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Reader                                                                 */
/* ---------------------------------------------------------------------- */

/* One validated header entry. `name` points into the parsed JSON. */
typedef struct header_entry {
    const char *name;
    ir_dtype dtype;
    int rank;
    int64_t dims[RT_MAX_RANK];
    uint64_t begin;
    uint64_t end;
} header_entry;

/* State of one read, so helpers can report with the path. */
typedef struct reader {
    const char *path;
    ir_diag *diag;
    uint64_t data_size; /* bytes after the header */
} reader;

static const char *json_type_name(const cJSON *item)
{
    if (cJSON_IsObject(item)) return "object";
    if (cJSON_IsArray(item)) return "array";
    if (cJSON_IsString(item)) return "string";
    if (cJSON_IsNumber(item)) return "number";
    if (cJSON_IsBool(item)) return "boolean";
    if (cJSON_IsNull(item)) return "null";
    return "value";
}

/* Reports "<what> is <json>, not <expected>" with the value as JSON text. */
static void report_bad_value(reader *r, const char *tensor, const char *what, const cJSON *item,
                             const char *expected)
{
    char *text = cJSON_PrintUnformatted(item);
    ir_diag_file_error(r->diag, r->path, "tensor '%s': %s is %s, not %s", tensor, what,
                       text ? text : json_type_name(item), expected);
    free(text);
}

/* Converts a JSON number that must be an integer in [0, 2^53]. */
static bool json_to_uint(const cJSON *item, uint64_t *value)
{
    if (!cJSON_IsNumber(item))
        return false;
    double v = item->valuedouble;
    if (!(v >= 0.0) || v > MAX_EXACT_JSON_INTEGER || v != floor(v))
        return false;
    *value = (uint64_t)v;
    return true;
}

static int parse_dtype(reader *r, const char *name, const cJSON *dtype, header_entry *e)
{
    if (!cJSON_IsString(dtype)) {
        report_bad_value(r, name, "dtype", dtype, "a string");
        return -1;
    }
    e->dtype = dtype_from_safetensors_name(dtype->valuestring);
    if (e->dtype == IR_DTYPE_COUNT) {
        ir_diag_file_error(r->diag, r->path, "tensor '%s' has unsupported dtype \"%s\"; quadc reads "
                           "F32, F16, BF16, I8, U8, I32 and I64, so convert the tensor to one of "
                           "these", name, dtype->valuestring);
        return -1;
    }
    return 0;
}

static int parse_shape(reader *r, const char *name, const cJSON *shape, header_entry *e)
{
    if (!cJSON_IsArray(shape)) {
        report_bad_value(r, name, "shape", shape, "an array of dimensions");
        return -1;
    }
    int rank = cJSON_GetArraySize(shape);
    if (rank > RT_MAX_RANK) {
        ir_diag_file_error(r->diag, r->path, "tensor '%s' has rank %d, above the maximum rank %d",
                           name, rank, RT_MAX_RANK);
        return -1;
    }
    e->rank = rank;
    int axis = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape) {
        uint64_t value;
        if (!json_to_uint(dim, &value)) {
            char what[32];
            snprintf(what, sizeof what, "shape[%d]", axis);
            report_bad_value(r, name, what, dim, "a non-negative integer");
            return -1;
        }
        e->dims[axis++] = (int64_t)value;
    }
    return 0;
}

static int parse_offsets(reader *r, const char *name, const cJSON *offsets, header_entry *e)
{
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2) {
        report_bad_value(r, name, "data_offsets", offsets, "an array [begin, end]");
        return -1;
    }
    const cJSON *begin = cJSON_GetArrayItem(offsets, 0);
    const cJSON *end = cJSON_GetArrayItem(offsets, 1);
    if (!json_to_uint(begin, &e->begin)) {
        report_bad_value(r, name, "data_offsets[0]", begin, "a non-negative integer");
        return -1;
    }
    if (!json_to_uint(end, &e->end)) {
        report_bad_value(r, name, "data_offsets[1]", end, "a non-negative integer");
        return -1;
    }
    if (e->begin > e->end) {
        ir_diag_file_error(r->diag, r->path, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                           "] have begin after end; the file is corrupt", name, e->begin, e->end);
        return -1;
    }
    if (e->end > r->data_size) {
        ir_diag_file_error(r->diag, r->path, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                           "] end past the %" PRIu64 " bytes of tensor data; the file is truncated "
                           "or corrupt", name, e->begin, e->end, r->data_size);
        return -1;
    }
    return 0;
}

/* Checks that the offsets span exactly dtype size times element count. */
static int check_byte_count(reader *r, const char *name, const header_entry *e)
{
    /* rt_tensor_new rejects shapes whose dimensions multiply to more than
     * about 2^60 elements, even when another dimension is 0, so the same
     * bound applies to the product of the nonzero dimensions here. */
    uint64_t elements = 1;
    bool empty = false;
    char shape_text[256];
    for (int i = 0; i < e->rank; i++) {
        if (e->dims[i] == 0) {
            empty = true;
            continue;
        }
        if (__builtin_mul_overflow(elements, (uint64_t)e->dims[i], &elements) ||
            elements > MAX_TENSOR_ELEMENTS) {
            ir_diag_file_error(r->diag, r->path, "tensor '%s': shape %s is too large, because its "
                               "nonzero dimensions multiply to more than 2^60 elements; the file "
                               "is corrupt", name,
                               format_shape(e->dims, e->rank, shape_text, sizeof shape_text));
            return -1;
        }
    }
    uint64_t bytes = empty ? 0 : elements * ir_dtype_size(e->dtype);
    if (e->end - e->begin != bytes) {
        ir_diag_file_error(r->diag, r->path, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64
                           "] span %" PRIu64 " bytes, but dtype %s and shape %s need %" PRIu64
                           " bytes; the file is corrupt", name, e->begin, e->end,
                           e->end - e->begin, SAFETENSORS_DTYPE_NAMES[e->dtype],
                           format_shape(e->dims, e->rank, shape_text, sizeof shape_text), bytes);
        return -1;
    }
    return 0;
}

static int parse_entry(reader *r, const cJSON *item, header_entry *e)
{
    const char *name = item->string;
    e->name = name;
    if (!cJSON_IsObject(item)) {
        ir_diag_file_error(r->diag, r->path, "tensor '%s': header entry is a JSON %s, not an "
                           "object with dtype, shape and data_offsets", name, json_type_name(item));
        return -1;
    }
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    const char *missing = NULL;
    if (!dtype)
        missing = "dtype";
    else if (!shape)
        missing = "shape";
    else if (!offsets)
        missing = "data_offsets";
    if (missing) {
        ir_diag_file_error(r->diag, r->path, "tensor '%s': header entry has no \"%s\" field; the "
                           "file is corrupt or not safetensors", name, missing);
        return -1;
    }

    if (parse_dtype(r, name, dtype, e) != 0 || parse_shape(r, name, shape, e) != 0 ||
        parse_offsets(r, name, offsets, e) != 0)
        return -1;
    return check_byte_count(r, name, e);
}

static int compare_entry_names(const void *a, const void *b)
{
    const header_entry *x = *(const header_entry *const *)a, *y = *(const header_entry *const *)b;
    return strcmp(x->name, y->name);
}

static int compare_entry_offsets(const void *a, const void *b)
{
    const header_entry *x = *(const header_entry *const *)a, *y = *(const header_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* Rejects duplicate names and overlapping byte ranges. Empty tensors occupy
 * no bytes, so they overlap nothing. */
static int check_entry_set(reader *r, header_entry *entries, int count)
{
    if (count == 0)
        return 0;
    header_entry **sorted = malloc((size_t)count * sizeof *sorted);
    if (!sorted) {
        ir_diag_file_error(r->diag, r->path, "out of memory while checking %d header entries", count);
        return -1;
    }
    for (int i = 0; i < count; i++)
        sorted[i] = &entries[i];

    int status = 0;
    qsort(sorted, (size_t)count, sizeof *sorted, compare_entry_names);
    for (int i = 1; i < count && status == 0; i++) {
        if (strcmp(sorted[i - 1]->name, sorted[i]->name) == 0) {
            ir_diag_file_error(r->diag, r->path, "tensor '%s' appears twice in the header; the "
                               "file is corrupt", sorted[i]->name);
            status = -1;
        }
    }

    qsort(sorted, (size_t)count, sizeof *sorted, compare_entry_offsets);
    const header_entry *previous = NULL; /* the non-empty tensor reaching furthest so far */
    for (int i = 0; i < count && status == 0; i++) {
        const header_entry *e = sorted[i];
        if (e->begin == e->end)
            continue;
        if (previous && e->begin < previous->end) {
            ir_diag_file_error(r->diag, r->path, "tensors '%s' (data_offsets [%" PRIu64 ", %" PRIu64
                               "]) and '%s' (data_offsets [%" PRIu64 ", %" PRIu64 "]) overlap; the "
                               "file is corrupt", previous->name, previous->begin, previous->end,
                               e->name, e->begin, e->end);
            status = -1;
        }
        if (!previous || e->end > previous->end)
            previous = e;
    }
    free(sorted);
    return status;
}

static int read_metadata(reader *r, const cJSON *metadata, rt_weights *w)
{
    if (!cJSON_IsObject(metadata)) {
        ir_diag_file_error(r->diag, r->path, "\"__metadata__\" is a JSON %s, not an object mapping "
                           "strings to strings", json_type_name(metadata));
        return -1;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, metadata) {
        if (!cJSON_IsString(item)) {
            char *text = cJSON_PrintUnformatted(item);
            ir_diag_file_error(r->diag, r->path, "\"__metadata__\" key '%s' has the non-string "
                               "value %s; safetensors metadata values must be strings",
                               item->string, text ? text : json_type_name(item));
            free(text);
            return -1;
        }
        if (rt_weights_set_meta(w, item->string, item->valuestring) != 0) {
            ir_diag_file_error(r->diag, r->path, "out of memory while reading \"__metadata__\"");
            return -1;
        }
    }
    return 0;
}

/* Reads the header JSON text (n bytes after the length field) and parses it.
 * Whitespace may follow the JSON object, because writers pad the header
 * with spaces to align the data, but nothing else may. */
static cJSON *read_header_json(reader *r, int fd, uint64_t n)
{
    char *text = malloc((size_t)n + 1);
    if (!text) {
        ir_diag_file_error(r->diag, r->path, "out of memory reading the %" PRIu64 "-byte header", n);
        return NULL;
    }
    int status = rt_read_exact_at(fd, text, (size_t)n, 8);
    if (status != 0) {
        ir_diag_file_error(r->diag, r->path, "cannot read the %" PRIu64 "-byte header: %s", n,
                           status < 0 ? strerror(errno) : "unexpected end of file");
        free(text);
        return NULL;
    }
    text[n] = '\0';

    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)n, &parse_end, 0);
    size_t position = parse_end ? (size_t)(parse_end - text) : 0;
    if (root) {
        while (position < n && strchr(" \t\r\n", text[position]) && text[position] != '\0')
            position++;
    }
    if (!root || position < n) {
        ir_diag_file_error(r->diag, r->path, "header is not valid JSON (%s at byte %zu of the "
                           "%" PRIu64 "-byte header); the file is corrupt or not safetensors",
                           root ? "unexpected data after the JSON value" : "syntax error",
                           position, n);
        cJSON_Delete(root);
        root = NULL;
    }
    free(text);
    return root;
}

/* Validates every entry of the parsed header and stores the tensor entries
 * in header order. Returns the number of tensors, or -1 after reporting. */
static int parse_header(reader *r, const cJSON *root, rt_weights *w, header_entry **entries_out)
{
    if (!cJSON_IsObject(root)) {
        ir_diag_file_error(r->diag, r->path, "header is a JSON %s, not an object mapping tensor "
                           "names to entries; the file is not safetensors", json_type_name(root));
        return -1;
    }
    int capacity = cJSON_GetArraySize(root);
    header_entry *entries = calloc((size_t)(capacity > 0 ? capacity : 1), sizeof *entries);
    if (!entries) {
        ir_diag_file_error(r->diag, r->path, "out of memory for %d header entries", capacity);
        return -1;
    }
    int count = 0;
    bool seen_metadata = false;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (seen_metadata) {
                ir_diag_file_error(r->diag, r->path, "\"__metadata__\" appears twice in the "
                                   "header; the file is corrupt");
                goto fail;
            }
            seen_metadata = true;
            if (read_metadata(r, item, w) != 0)
                goto fail;
            continue;
        }
        if (parse_entry(r, item, &entries[count]) != 0)
            goto fail;
        count++;
    }
    if (check_entry_set(r, entries, count) != 0)
        goto fail;
    *entries_out = entries;
    return count;

fail:
    free(entries);
    return -1;
}

static int load_tensors(reader *r, int fd, uint64_t data_start, const header_entry *entries,
                        int count, rt_weights *w)
{
    for (int i = 0; i < count; i++) {
        const header_entry *e = &entries[i];
        rt_tensor *t = rt_tensor_new(e->dtype, e->rank, e->dims);
        if (!t) {
            ir_diag_file_error(r->diag, r->path, "out of memory allocating tensor '%s' (%" PRIu64
                               " bytes)", e->name, e->end - e->begin);
            return -1;
        }
        int status = rt_read_exact_at(fd, t->data, (size_t)(e->end - e->begin), data_start + e->begin);
        if (status != 0) {
            ir_diag_file_error(r->diag, r->path, "cannot read tensor '%s' at byte %" PRIu64 ": %s",
                               e->name, data_start + e->begin,
                               status < 0 ? strerror(errno) : "unexpected end of file");
            rt_tensor_free(t);
            return -1;
        }
        if (rt_weights_set(w, e->name, t) != 0) {
            ir_diag_file_error(r->diag, r->path, "out of memory storing tensor '%s'", e->name);
            rt_tensor_free(t);
            return -1;
        }
    }
    return 0;
}

rt_weights *rt_safetensors_read(const char *path, ir_diag *d)
{
    reader r = {path, d, 0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ir_diag_file_error(d, path, "cannot open safetensors file: %s", strerror(errno));
        return NULL;
    }

    rt_weights *w = NULL;
    cJSON *root = NULL;
    header_entry *entries = NULL;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        ir_diag_file_error(d, path, "cannot stat safetensors file: %s", strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        ir_diag_file_error(d, path, "not a regular file; expected a safetensors file");
        goto fail;
    }
    uint64_t file_size = (uint64_t)st.st_size;
    if (file_size < 8) {
        ir_diag_file_error(d, path, "file is %" PRIu64 " bytes, shorter than the 8-byte header "
                           "length of a safetensors file; the file is truncated or not "
                           "safetensors", file_size);
        goto fail;
    }

    uint8_t length_bytes[8];
    if (rt_read_exact_at(fd, length_bytes, 8, 0) != 0) {
        ir_diag_file_error(d, path, "cannot read the header length: %s", strerror(errno));
        goto fail;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | length_bytes[i];
    if (n > RT_SAFETENSORS_MAX_HEADER) {
        ir_diag_file_error(d, path, "header length %" PRIu64 " is above the limit of %llu bytes; "
                           "the file is corrupt or not safetensors", n, RT_SAFETENSORS_MAX_HEADER);
        goto fail;
    }
    if (n > file_size - 8) {
        ir_diag_file_error(d, path, "header length %" PRIu64 " runs past the end of the file, "
                           "which has %" PRIu64 " bytes after the length field; the file is "
                           "truncated or not safetensors", n, file_size - 8);
        goto fail;
    }
    r.data_size = file_size - 8 - n;

    root = read_header_json(&r, fd, n);
    if (!root)
        goto fail;
    w = rt_weights_new();
    if (!w) {
        ir_diag_file_error(d, path, "out of memory creating the weight set");
        goto fail;
    }
    int count = parse_header(&r, root, w, &entries);
    if (count < 0)
        goto fail;
    if (load_tensors(&r, fd, 8 + n, entries, count, w) != 0)
        goto fail;

    free(entries);
    cJSON_Delete(root);
    close(fd);
    return w;

fail:
    free(entries);
    cJSON_Delete(root);
    rt_weights_free(w);
    close(fd);
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Writer                                                                 */
/* ---------------------------------------------------------------------- */

/* Growable text buffer. `failed` records an allocation failure. */
typedef struct text_buffer {
    char *data;
    size_t length;
    size_t capacity;
    bool failed;
} text_buffer;

static void append_bytes(text_buffer *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->length + n + 1 > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 4096;
        while (capacity < b->length + n + 1)
            capacity *= 2;
        char *grown = realloc(b->data, capacity);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->length, s, n);
    b->length += n;
    b->data[b->length] = '\0';
}

static void append_text(text_buffer *b, const char *s)
{
    append_bytes(b, s, strlen(s));
}

static void append_uint(text_buffer *b, uint64_t v)
{
    char digits[24];
    snprintf(digits, sizeof digits, "%" PRIu64, v);
    append_text(b, digits);
}

/* Appends s as a JSON string. Quotes, backslashes and control characters
 * are escaped, with the short forms where JSON has them, and bytes >= 0x80
 * are copied unchanged so that UTF-8 stays UTF-8. */
static void append_json_string(text_buffer *b, const char *s)
{
    append_bytes(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char escape[8];
        switch (*p) {
        case '"': append_bytes(b, "\\\"", 2); break;
        case '\\': append_bytes(b, "\\\\", 2); break;
        case '\b': append_bytes(b, "\\b", 2); break;
        case '\f': append_bytes(b, "\\f", 2); break;
        case '\n': append_bytes(b, "\\n", 2); break;
        case '\r': append_bytes(b, "\\r", 2); break;
        case '\t': append_bytes(b, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(escape, sizeof escape, "\\u%04x", *p);
                append_text(b, escape);
            } else {
                append_bytes(b, (const char *)p, 1);
            }
        }
    }
    append_bytes(b, "\"", 1);
}

/* Builds the header JSON, padded with spaces to a multiple of 8 bytes. */
static int build_header(const char *path, const rt_weights *w, ir_diag *d, text_buffer *b)
{
    append_text(b, "{");
    if (w->nmeta > 0) {
        append_text(b, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i > 0)
                append_text(b, ",");
            append_json_string(b, w->meta_keys[i]);
            append_text(b, ":");
            append_json_string(b, w->meta_values[i]);
        }
        append_text(b, "}");
    }

    uint64_t offset = 0;
    for (int i = 0; i < w->count; i++) {
        const rt_tensor *t = w->tensors[i];
        if (strcmp(w->names[i], "__metadata__") == 0) {
            ir_diag_file_error(d, path, "cannot write a tensor named '__metadata__', because "
                               "safetensors reserves that key for metadata; rename the tensor");
            return -1;
        }
        if (!t || (unsigned)t->dtype >= IR_DTYPE_COUNT || t->rank < 0 || t->rank > RT_MAX_RANK) {
            ir_diag_file_error(d, path, "cannot write tensor '%s': it has no valid dtype and rank",
                               w->names[i]);
            return -1;
        }
        if (b->length > 1)
            append_text(b, ",");
        append_json_string(b, w->names[i]);
        append_text(b, ":{\"dtype\":\"");
        append_text(b, SAFETENSORS_DTYPE_NAMES[t->dtype]);
        append_text(b, "\",\"shape\":[");
        for (int k = 0; k < t->rank; k++) {
            if (k > 0)
                append_text(b, ",");
            append_uint(b, (uint64_t)t->dims[k]);
        }
        append_text(b, "],\"data_offsets\":[");
        append_uint(b, offset);
        append_text(b, ",");
        offset += rt_tensor_nbytes(t);
        append_uint(b, offset);
        append_text(b, "]}");
    }
    append_text(b, "}");
    while (b->length % 8 != 0)
        append_text(b, " ");
    if (b->failed) {
        ir_diag_file_error(d, path, "out of memory building the safetensors header");
        return -1;
    }
    return 0;
}

int rt_safetensors_write(const char *path, const rt_weights *w, ir_diag *d)
{
    text_buffer header = {0};
    if (build_header(path, w, d, &header) != 0) {
        free(header.data);
        return -1;
    }

    rt_atomic_file out;
    if (rt_atomic_file_open(&out, path, d) != 0) {
        free(header.data);
        return -1;
    }
    uint8_t length_bytes[8];
    uint64_t n = header.length;
    for (int i = 0; i < 8; i++)
        length_bytes[i] = (uint8_t)(n >> (8 * i));
    rt_atomic_file_write(&out, length_bytes, sizeof length_bytes);
    rt_atomic_file_write(&out, header.data, header.length);
    free(header.data);
    for (int i = 0; i < w->count; i++)
        rt_atomic_file_write(&out, w->tensors[i]->data, rt_tensor_nbytes(w->tensors[i]));
    return rt_atomic_file_commit(&out);
}

/* ---------------------------------------------------------------------- */
/* GPT-2 names                                                            */
/* ---------------------------------------------------------------------- */

static void remove_tensor_at(rt_weights *w, int index)
{
    free(w->names[index]);
    rt_tensor_free(w->tensors[index]);
    int tail = w->count - index - 1;
    memmove(&w->names[index], &w->names[index + 1], (size_t)tail * sizeof *w->names);
    memmove(&w->tensors[index], &w->tensors[index + 1], (size_t)tail * sizeof *w->tensors);
    w->count--;
}

/* Matches "h.<digits>.attn.bias" and "h.<digits>.attn.masked_bias" exactly,
 * and not "h.<digits>.attn.c_attn.bias". */
static bool is_attention_mask_buffer(const char *name)
{
    if (strncmp(name, "h.", 2) != 0)
        return false;
    const char *p = name + 2;
    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9')
        p++;
    return strcmp(p, ".attn.bias") == 0 || strcmp(p, ".attn.masked_bias") == 0;
}

static int strip_transformer_prefix(rt_weights *w, ir_diag *d, const char *path)
{
    static const char prefix[] = "transformer.";
    const size_t prefix_length = sizeof prefix - 1;
    for (int i = 0; i < w->count; i++) {
        if (strncmp(w->names[i], prefix, prefix_length) != 0)
            continue;
        const char *stripped = w->names[i] + prefix_length;
        for (int j = 0; j < w->count; j++) {
            const char *other = w->names[j];
            if (strncmp(other, prefix, prefix_length) == 0)
                other += prefix_length;
            if (j != i && strcmp(other, stripped) == 0) {
                ir_diag_file_error(d, path, "tensors '%s' and '%s' both become '%s' without the "
                                   "\"transformer.\" prefix; remove one of them", w->names[i],
                                   w->names[j], stripped);
                return -1;
            }
        }
    }
    for (int i = 0; i < w->count; i++) {
        if (strncmp(w->names[i], prefix, prefix_length) != 0)
            continue;
        memmove(w->names[i], w->names[i] + prefix_length, strlen(w->names[i]) - prefix_length + 1);
    }
    return 0;
}

/* Returns the index of the first differing element, or -1 when equal. */
static int64_t first_difference(const rt_tensor *a, const rt_tensor *b)
{
    size_t element_size = ir_dtype_size(a->dtype);
    int64_t n = rt_tensor_numel(a);
    const char *x = a->data, *y = b->data;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(x + (size_t)i * element_size, y + (size_t)i * element_size, element_size) != 0)
            return i;
    return -1;
}

static int drop_tied_lm_head(rt_weights *w, ir_diag *d, const char *path)
{
    int head_index = -1;
    for (int i = 0; i < w->count; i++)
        if (strcmp(w->names[i], "lm_head.weight") == 0)
            head_index = i;
    if (head_index < 0)
        return 0;

    const rt_tensor *head = w->tensors[head_index];
    const rt_tensor *wte = rt_weights_get(w, "wte.weight");
    if (!wte) {
        ir_diag_file_error(d, path, "'lm_head.weight' is present but 'wte.weight' is missing; "
                           "quadc needs the token embedding 'wte.weight', to which GPT-2 ties "
                           "the LM head");
        return -1;
    }
    char head_shape[256], wte_shape[256];
    format_shape(head->dims, head->rank, head_shape, sizeof head_shape);
    format_shape(wte->dims, wte->rank, wte_shape, sizeof wte_shape);
    bool same_layout = head->dtype == wte->dtype && head->rank == wte->rank &&
                       memcmp(head->dims, wte->dims, (size_t)head->rank * sizeof *head->dims) == 0;
    if (!same_layout) {
        ir_diag_file_error(d, path, "'lm_head.weight' (%s %s) is not tied to 'wte.weight' (%s %s); "
                           "untied LM heads are unsupported, so use a GPT-2 checkpoint whose LM "
                           "head equals the token embedding", ir_dtype_name(head->dtype),
                           head_shape, ir_dtype_name(wte->dtype), wte_shape);
        return -1;
    }
    int64_t difference = first_difference(head, wte);
    if (difference >= 0) {
        ir_diag_file_error(d, path, "'lm_head.weight' differs from 'wte.weight' at element %" PRId64
                           "; untied LM heads are unsupported, so use a GPT-2 checkpoint whose LM "
                           "head equals the token embedding", difference);
        return -1;
    }
    remove_tensor_at(w, head_index);
    return 0;
}

int rt_gpt2_canonicalize_names(rt_weights *w, ir_diag *d, const char *path)
{
    if (strip_transformer_prefix(w, d, path) != 0)
        return -1;
    for (int i = 0; i < w->count;) {
        if (is_attention_mask_buffer(w->names[i]))
            remove_tensor_at(w, i);
        else
            i++;
    }
    return drop_tied_lm_head(w, d, path);
}
