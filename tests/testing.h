/* A small test harness: CHECK records a failure and goes on; each test file's main() calls
 * testing_run() on its cases and returns testing_finish(), which prints "N passed, N failed". */
#ifndef PLAIT_TESTING_H
#define PLAIT_TESTING_H

#include <math.h>
#include <stdbool.h>
#include <stdio.h>

extern int testing_failures_in_case;

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);        \
            testing_failures_in_case++;                                                       \
        }                                                                                     \
    } while (0)

#define CHECKF(cond, ...)                                                                     \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);        \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fprintf(stderr, "\n");                                                            \
            testing_failures_in_case++;                                                       \
        }                                                                                     \
    } while (0)

typedef void (*testing_case)(void);
void testing_run(const char *name, testing_case fn);
int testing_finish(void);

/* Largest |a-b| / max(|b|, floor) over n values; float32 results against float64 references. */
double testing_max_rel_error(const float *a, const double *b, size_t n, double floor);
/* Fills with uniform values in [-1, 1) from a seeded stream. */
void testing_fill_uniform(float *x, size_t n, unsigned long seed);
/* A fresh temporary folder (removed at exit) for files a test writes. */
const char *testing_temp_dir(void);
/* `name` inside it; the result stays valid for the next 15 calls. */
char *testing_temp_path(const char *name);
/* Whether the last plait error contains `text`; prints the error when not. */
bool testing_error_has(const char *text);

#endif
