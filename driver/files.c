/* File input and atomic file output for the driver. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver/driver.h"

/* Reads all of f into a malloc'd buffer with a NUL after the `len` bytes.
 * Returns NULL on a read error or when out of memory, with errno set. */
static char *read_stream(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        cap *= 2;
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
    buf[n] = '\0';
    *len = n;
    return buf;
}

char *driver_read_file(const char *path, size_t *len, ir_diag *d)
{
    bool is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        ir_diag_file_error(d, path, "cannot open the file: %s", strerror(errno));
        return NULL;
    }
    char *text = read_stream(f, len);
    int read_errno = errno;
    if (!is_stdin)
        fclose(f);
    if (!text)
        ir_diag_file_error(d, is_stdin ? "<stdin>" : path, "reading the file failed: %s", strerror(read_errno));
    return text;
}

char *driver_try_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *text = read_stream(f, len);
    fclose(f);
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

int driver_write_atomic(const char *path, int (*write)(FILE *out, void *ctx), void *ctx, ir_diag *d)
{
    if (!path || strcmp(path, "-") == 0)
        return write_stdout(write, ctx, d);

    size_t cap = strlen(path) + 16;
    char *tmp = malloc(cap);
    if (!tmp) {
        ir_diag_file_error(d, path, "out of memory");
        return -1;
    }
    snprintf(tmp, cap, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        ir_diag_file_error(d, path, "cannot create a temporary file next to the output: %s", strerror(errno));
        free(tmp);
        return -1;
    }
    /* mkstemp creates the file 0600; give the output the usual mode. */
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);

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
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -1;
    if (rc != 0) {
        ir_diag_file_error(d, path, "writing the output failed: %s", strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return rc;
}
