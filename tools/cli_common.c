#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "plait/core.h"

int cli_error(const char *format, ...) {
    va_list args;
    va_start(args, format);
    fputs("plait: error: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    return 2;
}

int cli_fail_last(void) {
    fprintf(stderr, "plait: error: %s\n", plait_last_error());
    return 1;
}

bool cli_parse_int(const char *flag, const char *text, long min, long max, long *out) {
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end || value < min || value > max) {
        cli_error("%s expects an integer in [%ld, %ld], got '%s'", flag, min, max, text);
        return false;
    }
    *out = value;
    return true;
}

bool cli_parse_float(const char *flag, const char *text, double min, double max, double *out) {
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(value) || value < min || value > max) {
        cli_error("%s expects a number in [%g, %g], got '%s'", flag, min, max, text);
        return false;
    }
    *out = value;
    return true;
}

bool cli_parse_shape(const char *flag, const char *text, int *c, int *h, int *w) {
    char tail;
    if (sscanf(text, "%dx%dx%d%c", c, h, w, &tail) != 3 || *c < 1 || *h < 1 || *w < 1 || *c > 4096 || *h > 8192 ||
        *w > 8192) {
        cli_error("%s expects CxHxW such as 3x32x32, got '%s'", flag, text);
        return false;
    }
    return true;
}

int cli_bad_flag(const char *command, int argc, char **argv) {
    const char *flag = optind - 1 < argc && optind >= 1 ? argv[optind - 1] : "?";
    if (optopt && optopt != '?')
        return cli_error("plait %s: flag -%c needs a value or is unknown (see plait %s --help)", command, optopt,
                         command);
    return cli_error("plait %s: unknown flag or missing value: %s (see plait %s --help)", command, flag, command);
}
