#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "plait/core.h"
#include "testing.h"

static void rng_is_reproducible(void) {
    plait_rng a, b;
    plait_rng_seed(&a, 42);
    plait_rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++) CHECK(plait_rng_next(&a) == plait_rng_next(&b));
    plait_rng_seed(&b, 43);
    CHECK(plait_rng_next(&a) != plait_rng_next(&b));
}

static void rng_distributions(void) {
    plait_rng r;
    plait_rng_seed(&r, 7);
    double sum = 0, sumsq = 0;
    int n = 200000, below[10] = {0};
    for (int i = 0; i < n; i++) {
        float u = plait_rng_uniform(&r);
        CHECK(u >= 0.0f && u < 1.0f);
        double z = plait_rng_normal(&r);
        sum += z;
        sumsq += z * z;
        below[plait_rng_below(&r, 10)]++;
    }
    CHECKF(fabs(sum / n) < 0.01, "normal mean %f", sum / n);
    CHECKF(fabs(sumsq / n - 1.0) < 0.02, "normal variance %f", sumsq / n);
    for (int k = 0; k < 10; k++) CHECKF(abs(below[k] - n / 10) < n / 100, "bucket %d has %d", k, below[k]);
}

static void tensor_reserve_reuses(void) {
    plait_tensor t = {0};
    CHECK(plait_tensor_reserve(&t, (plait_shape){2, 3, 4, 5}) == PLAIT_OK);
    float *first = t.data;
    CHECK(((uintptr_t)first & 63) == 0);
    CHECK(plait_tensor_reserve(&t, (plait_shape){1, 3, 4, 5}) == PLAIT_OK);
    CHECK(t.data == first && t.shape.n == 1);
    CHECK(plait_tensor_reserve(&t, (plait_shape){4, 3, 4, 5}) == PLAIT_OK);
    CHECK(t.capacity >= 240);
    plait_tensor_free(&t);
}

static void atomic_write_replaces_file(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/file.bin", testing_temp_dir());
    CHECK(plait_write_file_atomic(path, "hello", 5) == PLAIT_OK);
    CHECK(plait_write_file_atomic(path, "hi", 2) == PLAIT_OK);
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size == 2);
    char temp[520];
    snprintf(temp, sizeof temp, "%s.tmp", path);
    CHECK(stat(temp, &st) != 0);
    CHECK(plait_write_file_atomic("/nonexistent-dir/x", "a", 1) == PLAIT_ERROR);
    CHECK(strstr(plait_last_error(), "/nonexistent-dir/x") != NULL);
}

/* The vendor string the kernels' cache rules read, against the kernel's own reading where Linux gives one. */
static void cpu_vendor_matches_system(void) {
    const char *vendor = plait_cpu_features()->vendor;
    CHECK(vendor[0] != 0);
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512], expected[64] = "";
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "vendor_id : %63s", expected) == 1) break;
    fclose(f);
    if (expected[0]) CHECKF(strcmp(vendor, expected) == 0, "vendor %s, /proc/cpuinfo says %s", vendor, expected);
}

int main(void) {
    testing_run("rng_is_reproducible", rng_is_reproducible);
    testing_run("rng_distributions", rng_distributions);
    testing_run("tensor_reserve_reuses", tensor_reserve_reuses);
    testing_run("atomic_write_replaces_file", atomic_write_replaces_file);
    testing_run("cpu_vendor_matches_system", cpu_vendor_matches_system);
    return testing_finish();
}
