#include <stdarg.h>
#include <stdio.h>

#include "plait/core.h"

static _Thread_local char last_error[512];

int plait_fail(const char *format, ...) {
    va_list args;
    va_start(args, format);
    vsnprintf(last_error, sizeof last_error, format, args);
    va_end(args);
    return PLAIT_ERROR;
}

const char *plait_last_error(void) { return last_error[0] ? last_error : "unknown error"; }

void plait_clear_error(void) { last_error[0] = 0; }
