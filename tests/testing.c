#include "testing.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plait/core.h"

int testing_failures_in_case;
static int passed, failed;

void testing_run(const char *name, testing_case fn) {
    testing_failures_in_case = 0;
    double start = plait_now();
    fn();
    double seconds = plait_now() - start;
    if (testing_failures_in_case == 0) {
        passed++;
        fprintf(stderr, "ok   %s (%.2fs)\n", name, seconds);
    } else {
        failed++;
        fprintf(stderr, "FAIL %s (%d checks failed)\n", name, testing_failures_in_case);
    }
}

static char temp_dir[256];

static void remove_temp_dir(void) {
    if (temp_dir[0]) {
        char command[300];
        snprintf(command, sizeof command, "rm -rf '%s'", temp_dir);
        if (system(command) != 0) fprintf(stderr, "could not remove %s\n", temp_dir);
    }
}

const char *testing_temp_dir(void) {
    if (!temp_dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(temp_dir, sizeof temp_dir, "%s/plait-test-XXXXXX", base ? base : "/tmp");
        if (!mkdtemp(temp_dir)) {
            perror("mkdtemp");
            exit(1);
        }
        atexit(remove_temp_dir);
    }
    return temp_dir;
}

int testing_finish(void) {
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

double testing_max_rel_error(const float *a, const double *b, size_t n, double floor) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double scale = fabs(b[i]) > floor ? fabs(b[i]) : floor;
        double e = fabs((double)a[i] - b[i]) / scale;
        if (!(e <= worst)) worst = e; /* NaN propagates as a failure */
    }
    return worst;
}

void testing_fill_uniform(float *x, size_t n, unsigned long seed) {
    plait_rng rng;
    plait_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * plait_rng_uniform(&rng) - 1.0f;
}

char *testing_temp_path(const char *name) {
    static char paths[16][512];
    static int next;
    char *path = paths[next++ % 16];
    snprintf(path, sizeof paths[0], "%s/%s", testing_temp_dir(), name);
    return path;
}

bool testing_error_has(const char *text) {
    bool found = strstr(plait_last_error(), text) != NULL;
    if (!found) fprintf(stderr, "  error was: %s\n  expected it to contain: %s\n", plait_last_error(), text);
    return found;
}
