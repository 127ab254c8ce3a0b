#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/data_internal.h"

int dataset_allocate(plait_dataset *d, const char *name, int count, int height, int width, int channels,
                     int classes) {
    memset(d, 0, sizeof *d);
    if (count < 0 || height <= 0 || width <= 0 || channels <= 0 || classes <= 0)
        return plait_fail("dataset %s: invalid dimensions %d x %d x %d x %d, %d classes", name, count, height,
                          width, channels, classes);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->count = count;
    d->height = height;
    d->width = width;
    d->channels = channels;
    d->classes = classes;
    d->pixels = plait_alloc_unzeroed((size_t)count * (size_t)height * (size_t)width * (size_t)channels);
    d->labels = plait_alloc((size_t)count * sizeof(int32_t));
    if (!d->pixels || !d->labels) {
        plait_dataset_free(d);
        return PLAIT_ERROR;
    }
    for (int c = 0; c < 3; c++) {
        d->mean[c] = 0.0f;
        d->std[c] = 1.0f;
    }
    return PLAIT_OK;
}

void plait_dataset_free(plait_dataset *d) {
    if (!d) return;
    plait_free(d->pixels);
    plait_free(d->labels);
    memset(d, 0, sizeof *d);
}

void dataset_set_stats(plait_dataset *d, const float mean[3], const float std[3]) {
    for (int c = 0; c < 3; c++) {
        d->mean[c] = mean[c];
        d->std[c] = std[c];
    }
}

void dataset_measure_stats(plait_dataset *d) {
    int channels = d->channels < 3 ? d->channels : 3;
    uint64_t sum[3] = {0}, sum_squares[3] = {0};
    size_t pixels = (size_t)d->count * (size_t)d->height * (size_t)d->width;
    int stride = d->channels;
    for (int c = 0; c < channels; c++) {
        uint64_t s = 0, q = 0;
        const uint8_t *p = d->pixels + c;
#pragma omp parallel for reduction(+ : s, q) schedule(static)
        for (size_t i = 0; i < pixels; i++) {
            uint64_t v = p[i * (size_t)stride];
            s += v;
            q += v * v;
        }
        sum[c] = s;
        sum_squares[c] = q;
    }
    for (int c = 0; c < 3; c++) {
        int source = c < channels ? c : channels - 1;
        if (pixels == 0) {
            d->mean[c] = 0.0f;
            d->std[c] = 1.0f;
            continue;
        }
        double mean = (double)sum[source] / (double)pixels;
        double variance = (double)sum_squares[source] / (double)pixels - mean * mean;
        double std = sqrt(variance > 0 ? variance : 0) / 255.0;
        d->mean[c] = (float)(mean / 255.0);
        d->std[c] = std > 1e-6 ? (float)std : 1.0f; /* a constant channel must not divide by zero */
    }
}

static int dataset_select(const plait_dataset *all, const bool *take, bool value, plait_dataset *out) {
    int count = 0;
    for (int i = 0; i < all->count; i++) count += take[i] == value;
    if (dataset_allocate(out, all->name, count, all->height, all->width, all->channels, all->classes) != PLAIT_OK)
        return PLAIT_ERROR;
    size_t image_bytes = (size_t)all->height * (size_t)all->width * (size_t)all->channels;
    int j = 0;
    for (int i = 0; i < all->count; i++) {
        if (take[i] != value) continue;
        memcpy(out->pixels + (size_t)j * image_bytes, all->pixels + (size_t)i * image_bytes, image_bytes);
        out->labels[j++] = all->labels[i];
    }
    dataset_set_stats(out, all->mean, all->std);
    return PLAIT_OK;
}

/* Marks test_fraction of each class (chosen by a per-class stream from seed) in a new array. */
static bool *split_choose_test(const plait_dataset *all, double test_fraction, uint64_t seed) {
    if (!(test_fraction >= 0.0 && test_fraction <= 1.0)) {
        plait_fail("dataset split: test fraction %g is not in [0, 1]", test_fraction);
        return NULL;
    }
    bool *is_test = calloc((size_t)all->count + 1, sizeof *is_test);
    int *members = malloc(((size_t)all->count + 1) * sizeof *members);
    if (!is_test || !members) {
        free(is_test);
        free(members);
        plait_fail("out of memory splitting dataset %s", all->name);
        return NULL;
    }
    for (int label = 0; label < all->classes; label++) {
        int n = 0;
        for (int i = 0; i < all->count; i++)
            if (all->labels[i] == label) members[n++] = i;
        /* Each class draws from its own stream, so the split of one class does not depend on others. */
        plait_rng rng;
        plait_rng_seed(&rng, plait_seed_mix(seed, (uint64_t)label, 0x73706c6974ULL));
        int test_count = (int)lround(test_fraction * n);
        for (int k = 0; k < test_count; k++) {
            int pick = k + (int)plait_rng_below(&rng, (uint32_t)(n - k));
            int t = members[k];
            members[k] = members[pick];
            members[pick] = t;
            is_test[members[k]] = true;
        }
    }
    free(members);
    return is_test;
}

int plait_dataset_split(const plait_dataset *all, double test_fraction, uint64_t seed, plait_dataset *train,
                        plait_dataset *test) {
    bool *is_test = split_choose_test(all, test_fraction, seed);
    if (!is_test) return PLAIT_ERROR;
    plait_dataset train_set, test_set;
    int status = dataset_select(all, is_test, false, &train_set);
    if (status == PLAIT_OK) {
        status = dataset_select(all, is_test, true, &test_set);
        if (status != PLAIT_OK) plait_dataset_free(&train_set);
    }
    free(is_test);
    if (status != PLAIT_OK) return PLAIT_ERROR;
    *train = train_set;
    *test = test_set;
    return PLAIT_OK;
}

int dataset_split_consume(plait_dataset *all, double test_fraction, uint64_t seed, plait_dataset *train,
                          plait_dataset *test) {
    bool *is_test = split_choose_test(all, test_fraction, seed);
    if (!is_test) return PLAIT_ERROR;
    plait_dataset test_set;
    if (dataset_select(all, is_test, true, &test_set) != PLAIT_OK) {
        free(is_test);
        return PLAIT_ERROR;
    }
    /* The training part stays in all's buffer, moved down over the test images (j <= i). */
    size_t image_bytes = (size_t)all->height * (size_t)all->width * (size_t)all->channels;
    int j = 0;
    for (int i = 0; i < all->count; i++) {
        if (is_test[i]) continue;
        if (j != i) memcpy(all->pixels + (size_t)j * image_bytes, all->pixels + (size_t)i * image_bytes, image_bytes);
        all->labels[j++] = all->labels[i];
    }
    free(is_test);
    all->count = j;
    *train = *all;
    memset(all, 0, sizeof *all);
    *test = test_set;
    return PLAIT_OK;
}
