/* The -D option of every subcommand that compiles a model file: it sets a
 * hyperparameter to an integer, written "-D name=value" or "-Dname=value". */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "driver/driver.h"

bool driver_is_identifier(const char *s, size_t n)
{
    if (n == 0 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_'))
            return false;
    return true;
}

/* Parses "name=value" into a define whose name points into text. The name
 * is cut at the '=' in place. */
static int parse_define(const char *cmd, char *text, fe_define *out)
{
    char *eq = strchr(text, '=');
    if (!eq)
        return driver_usage_error(cmd, "invalid -D value '%s': write -D name=INTEGER", text);
    if (!driver_is_identifier(text, (size_t)(eq - text)))
        return driver_usage_error(cmd, "invalid -D value '%s': '%.*s' is not a hyperparameter name; "
                                  "write -D name=INTEGER", text, (int)(eq - text), text);
    const char *value = eq + 1;
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    /* strtoll also skips leading spaces and takes a '+' sign. */
    bool digits = (value[0] >= '0' && value[0] <= '9') || (value[0] == '-' && value[1] >= '0' && value[1] <= '9');
    if (!digits || *end != '\0')
        return driver_usage_error(cmd, "invalid -D value '%s': '%s' is not an integer", text, value);
    if (errno == ERANGE)
        return driver_usage_error(cmd, "invalid -D value '%s': '%s' does not fit in 64 bits", text, value);
    *eq = '\0';
    out->name = text;
    out->value = v;
    return DRIVER_OK;
}

int driver_define_option(const char *cmd, int argc, char **argv, int *i, fe_define *defines, int *ndefines,
                         int max_defines)
{
    char *arg = argv[*i];
    if (strncmp(arg, "-D", 2) != 0)
        return 0;
    char *text = arg[2] ? arg + 2 : (*i + 1 < argc ? argv[*i + 1] : NULL);
    if (!text) {
        driver_usage_error(cmd, "-D needs a value: write -D name=INTEGER");
        return -1;
    }
    if (*ndefines >= max_defines) {
        driver_usage_error(cmd, "too many -D options (at most %d)", max_defines);
        return -1;
    }
    fe_define *added = &defines[*ndefines];
    if (parse_define(cmd, text, added) != DRIVER_OK)
        return -1;
    (*ndefines)++;
    *i += arg[2] ? 1 : 2;
    return 1;
}
