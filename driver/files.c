/* File input and atomic file output for the driver. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/driver.h"

/* Reads f into a malloc'd buffer with a NUL after the `len` bytes, reading
 * at most max_len + 1 bytes so that *truncated is set when f is longer
 * than max_len without reading all of it (f may be /dev/zero). Returns
 * NULL on a read error or when out of memory, with errno set. */
static char *read_stream(FILE *f, size_t max_len, size_t *len, bool *truncated)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t want = cap - n - 1;
        if (want > max_len + 1 - n)
            want = max_len + 1 - n;
        size_t got = fread(buf + n, 1, want, f);
        n += got;
        if (got < want || n > max_len)
            break;
        cap = cap > max_len / 2 ? max_len + 2 : cap * 2;
        char *grown = realloc(buf, cap);
        if (!grown) {
            free(buf);
            buf = NULL;
        } else {
            buf = grown;
        }
    }
    if (!buf) {
        errno = ENOMEM;
        return NULL;
    }
    if (ferror(f)) {
        int read_errno = errno;
        free(buf);
        errno = read_errno;
        return NULL;
    }
    *truncated = n > max_len;
    if (*truncated)
        n = max_len;
    buf[n] = '\0';
    *len = n;
    return buf;
}

char *driver_read_file_max(const char *path, size_t max_len, size_t *len, ir_diag *d)
{
    bool is_stdin = strcmp(path, "-") == 0;
    const char *name = is_stdin ? "<stdin>" : path;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        ir_diag_file_error(d, path, "cannot open the file: %s", strerror(errno));
        return NULL;
    }
    bool truncated = false;
    char *text = read_stream(f, max_len, len, &truncated);
    int read_errno = errno;
    if (!is_stdin)
        fclose(f);
    if (!text) {
        ir_diag_file_error(d, name, "reading the file failed: %s", strerror(read_errno));
        return NULL;
    }
    if (truncated) {
        ir_diag_file_error(d, name, "the file is larger than the limit of %zu bytes (%zu MiB)", max_len,
                           max_len >> 20);
        free(text);
        return NULL;
    }
    return text;
}

char *driver_read_file(const char *path, size_t *len, ir_diag *d)
{
    return driver_read_file_max(path, SIZE_MAX - 1, len, d);
}

char *driver_try_read_file(const char *path, size_t max_len, size_t *len)
{
    /* Checked before fopen, which would wait forever for a FIFO's writer. */
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || (uintmax_t)st.st_size > max_len)
        return NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    bool truncated = false;
    char *text = read_stream(f, max_len, len, &truncated);
    fclose(f);
    if (text && truncated) {
        free(text);
        return NULL;
    }
    return text;
}

static int write_stdout(int (*write)(FILE *out, void *ctx), void *ctx, ir_diag *d)
{
    int rc = write(stdout, ctx);
    if (fflush(stdout) != 0 || ferror(stdout) || rc != 0) {
        ir_diag_file_error(d, NULL, "writing to standard output failed: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Writes straight to path, for outputs that cannot be replaced by a
 * rename: a FIFO, a terminal or a device such as /dev/null. */
static int write_in_place(const char *path, int (*write)(FILE *out, void *ctx), void *ctx, ir_diag *d)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        ir_diag_file_error(d, path, "cannot open the output: %s", strerror(errno));
        return -1;
    }
    int rc = write(f, ctx);
    if (fflush(f) != 0 || ferror(f))
        rc = -1;
    int write_errno = errno;
    if (fclose(f) != 0 && rc == 0) {
        rc = -1;
        write_errno = errno;
    }
    if (rc != 0)
        ir_diag_file_error(d, path, "writing the output failed: %s", strerror(write_errno));
    return rc;
}

int driver_write_atomic(const char *path, int (*write)(FILE *out, void *ctx), void *ctx, ir_diag *d)
{
    if (!path || strcmp(path, "-") == 0)
        return write_stdout(write, ctx, d);

    /* stat follows symbolic links, so a link to a FIFO or a device is
     * written in place too, and a link to a regular file has the file it
     * points to replaced, not the link. */
    struct stat st;
    bool exists = stat(path, &st) == 0;
    if (exists && S_ISDIR(st.st_mode)) {
        ir_diag_file_error(d, path, "cannot write the output: it is a directory; give a file name");
        return -1;
    }
    if (exists && !S_ISREG(st.st_mode))
        return write_in_place(path, write, ctx, d);
    /* A dangling link: writing through it creates the file it names, with
     * no old contents to protect. */
    struct stat link_st;
    if (!exists && lstat(path, &link_st) == 0 && S_ISLNK(link_st.st_mode))
        return write_in_place(path, write, ctx, d);
    char *resolved = exists ? realpath(path, NULL) : NULL;
    const char *target = resolved ? resolved : path;

    size_t cap = strlen(target) + 16;
    char *tmp = malloc(cap);
    if (!tmp) {
        ir_diag_file_error(d, path, "out of memory");
        free(resolved);
        return -1;
    }
    snprintf(tmp, cap, "%s.tmp.XXXXXX", target);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        ir_diag_file_error(d, path, "cannot create a temporary file next to the output: %s", strerror(errno));
        free(tmp);
        free(resolved);
        return -1;
    }
    /* mkstemp creates the file 0600. A replaced file keeps its mode, and a
     * new one gets the usual 0666 minus the umask. */
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, exists ? st.st_mode & 07777 : 0666 & ~mask);

    FILE *f = fdopen(fd, "w");
    int rc = -1;
    if (f) {
        rc = write(f, ctx);
        if (fflush(f) != 0 || ferror(f))
            rc = -1;
        if (fclose(f) != 0)
            rc = -1;
    } else {
        close(fd);
    }
    if (rc == 0 && rename(tmp, target) != 0)
        rc = -1;
    if (rc != 0) {
        ir_diag_file_error(d, path, "writing the output failed: %s", strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    free(resolved);
    return rc;
}
