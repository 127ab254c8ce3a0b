/* The plait command's subcommands and the flag parsing they share. */
#ifndef PLAIT_CLI_H
#define PLAIT_CLI_H

#include <stdbool.h>
#include <stdint.h>

int cli_train(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_summary(int argc, char **argv);
int cli_tune(int argc, char **argv);
int cli_plan(int argc, char **argv);

/* Each parser prints "plait: error: ..." and returns false on a bad value. */
bool cli_parse_int(const char *flag, const char *text, long min, long max, long *out);
bool cli_parse_float(const char *flag, const char *text, double min, double max, double *out);
bool cli_parse_shape(const char *flag, const char *text, int *c, int *h, int *w); /* CxHxW */
/* Reports an unknown flag or a missing value the way getopt saw it. */
int cli_bad_flag(const char *command, int argc, char **argv);
int cli_error(const char *format, ...) __attribute__((format(printf, 1, 2)));
/* Prints plait_last_error() and returns 1. */
int cli_fail_last(void);

#endif
