/* Shared by the operator tests: random inputs, error against float64 references, and gradients
 * against central finite differences of a reference forward. */
#ifndef PLAIT_TESTS_OPS_TESTING_H
#define PLAIT_TESTS_OPS_TESTING_H

#include <stdlib.h>
#include <string.h>

#include "kernels/reference.h"
#include "plait/ops.h"
#include "testing.h"

/* float32 kernels against float64 references: relative error, with a floor of 5% of the reference's
 * RMS so values near zero are judged on the array's scale. */
#define TOLERANCE 1e-4

static inline float *random_floats(size_t n, unsigned long seed) {
    float *p = plait_alloc((n ? n : 1) * sizeof(float));
    testing_fill_uniform(p, n, seed);
    return p;
}

static inline double *zero_doubles(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static inline double rms(const double *v, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i] * v[i];
    return n ? sqrt(sum / (double)n) : 0;
}

static inline double error_vs(const float *a, const double *b, size_t n) {
    return testing_max_rel_error(a, b, n, 0.05 * rms(b, n) + 1e-30);
}

static inline double dot(const double *a, const float *b, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += a[i] * (double)b[i];
    return sum;
}

/* A scalar loss of the float64 reference forward, re-evaluated while one input is perturbed. */
typedef double (*loss_fn)(void *context);

/* Largest relative difference between grad and central differences of loss over `samples` random
 * coordinates of values (all when count <= samples). The step actually taken is measured after
 * rounding to float, so linear operators differentiate exactly. */
static inline double finite_difference_error(float *values, size_t count, const float *grad, loss_fn loss, void *context,
                                      int samples, float step, unsigned long seed) {
    double grad_rms = 0;
    for (size_t i = 0; i < count; i++) grad_rms += (double)grad[i] * grad[i];
    grad_rms = sqrt(grad_rms / (double)count);
    plait_rng rng;
    plait_rng_seed(&rng, seed);
    double worst = 0;
    size_t checks = count <= (size_t)samples ? count : (size_t)samples;
    for (size_t j = 0; j < checks; j++) {
        size_t i = count <= (size_t)samples ? j : plait_rng_below(&rng, (uint32_t)count);
        float saved = values[i];
        float up = saved + step, down = saved - step;
        values[i] = up;
        double loss_up = loss(context);
        values[i] = down;
        double loss_down = loss(context);
        values[i] = saved;
        double numeric = (loss_up - loss_down) / ((double)up - (double)down);
        double scale = fabs(numeric) > 0.05 * grad_rms ? fabs(numeric) : 0.05 * grad_rms + 1e-30;
        double e = fabs(grad[i] - numeric) / scale;
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

#endif
