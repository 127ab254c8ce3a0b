/* Row loops of the memory-bound kernels, one table per instruction set (fused_dispatch.c). */
#ifndef PLAIT_KERNELS_FUSED_H
#define PLAIT_KERNELS_FUSED_H

#include <stddef.h>

#include "plait/core.h"

typedef struct fused_rows {
    const char *isa;
    void (*bn_stats)(const float *x, const float *shift, size_t C, size_t begin, size_t end, double *sum,
                     double *sumsq);
    /* clamp: the activation's upper end (ReLU: infinity, ReLU6: 6; 0: no activation) */
    void (*bn_normalize)(const float *x, const float *mean_high, const float *mean_low, const float *scale,
                         const float *beta, const float *residual, float clamp, size_t C, size_t begin, size_t end,
                         float *y);
    void (*bn_affine)(const float *x, const float *scale, const float *shift, const float *residual, float clamp,
                      size_t C, size_t begin, size_t end, float *y);
    /* dy passed where lo[c] <= mask <= hi[c] (mask NULL: everywhere; lo, hi then unused) */
    void (*bn_backward_sums)(const float *x, const float *dy, const float *mask, const float *lo, const float *hi,
                             const float *mean, size_t C, size_t begin, size_t end, double *sum_dy,
                             double *sum_dy_xc);
    void (*bn_backward_apply)(const float *x, const float *dy, const float *mask, const float *lo, const float *hi,
                              const float *mean, const float *coef, const float *mean_dy, const float *slope,
                              size_t C, size_t begin, size_t end, float *dx);
    void (*relu)(const float *x, size_t begin, size_t end, float *y);
    void (*relu_backward)(const float *y, const float *dy, size_t begin, size_t end, float *dx);
    void (*relu_backward_add)(const float *y, const float *dy, size_t begin, size_t end, float *dx);
    void (*relu6)(const float *x, size_t begin, size_t end, float *y);
    void (*relu6_backward)(const float *y, const float *dy, size_t begin, size_t end, float *dx);
    void (*add)(const float *a, const float *b, size_t begin, size_t end, float *y);
} fused_rows;

/* The widest table this CPU runs (AVX-512, AVX2, or baseline x86-64), unless one is forced. */
const fused_rows *fused_rows_best(void);
/* Every table, widest first, NULL-terminated; tests force each one the CPU runs (NULL: back to the
 * widest). Not thread-safe: call between kernels. */
extern const fused_rows *const fused_rows_tables[4];
int fused_rows_force(const fused_rows *rows);

/* Threads for a memory-bound pass over `elements` floats: below 32768 one, since waking the others
 * costs more than the pass. */
static inline int fused_pass_threads(size_t elements) { return elements > 32768 ? plait_threads() : 1; }

/* [begin, end) of `count` items for thread `thread` of `threads`. */
static inline void fused_split(size_t count, int thread, int threads, size_t *begin, size_t *end) {
    *begin = count * (size_t)thread / (size_t)threads;
    *end = count * (size_t)(thread + 1) / (size_t)threads;
}

#endif
