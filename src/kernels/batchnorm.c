/* Batch normalization over rows (N*H*W) x channels, NHWC, with the activation (ReLU, ReLU6) and residual
 * add that follow it in a ResNet or MobileNet fused into its passes (see docs/kernels.md, "Fused memory-bound passes").
 *
 * Per-channel sums are reduced per thread in double over a contiguous block of rows, then combined
 * in thread order; the variance uses sums shifted by the first row's value, which keeps
 * E[x^2] - E[x]^2 accurate when the mean is large relative to the spread. */
#include <math.h>
#include <float.h>
#include <stdint.h>
#include <string.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/batchnorm_gate.h"
#include "kernels/fused.h"
#include "plait/ops.h"

/* The upper end the row loops clamp an activation's output to (0: no activation). */
static float activation_clamp(plait_activation activation) {
    return activation == PLAIT_ACTIVATION_RELU6 ? 6.0f : activation == PLAIT_ACTIVATION_RELU ? INFINITY : 0.0f;
}

/* ---- the gate: per channel, the interval of x whose normalized value the activation passes ----
 * bn_normalize computes z = ((x - mean_high) - mean_low) * scale + beta in float, each operation rounded and
 * so monotone in x; with scale nonzero and every coefficient finite, z is monotone over all floats, infinities
 * included, and {x : 0 < z < clamp} is an interval. Binary searches over the floats' order find its ends
 * with the same float expression, so the backward can tell from x alone where the gradient passes: the same
 * bits as reading the activation's output, without reading it. */

/* Floats in order as integers (-0 and +0 both 0), infinities at the ends; NaN excluded. */
static int32_t float_key(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits >> 31 ? -(int32_t)(bits & 0x7fffffffu) : (int32_t)bits;
}

static float key_float(int32_t key) {
    uint32_t bits = key < 0 ? 0x80000000u | (uint32_t)-key : (uint32_t)key;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

typedef struct gate_line {
    float mean_high, mean_low, scale, beta, clamp;
} gate_line;

static float gate_z(const gate_line *g, float x) { return ((x - g->mean_high) - g->mean_low) * g->scale + g->beta; }

/* above: z > 0; else z < clamp, always true for a ReLU (its infinite clamp lets z = +inf through too) */
static bool gate_passes(const gate_line *g, float x, bool above) {
    float z = gate_z(g, x);
    return above ? z > 0.0f : isinf(g->clamp) || z < g->clamp;
}

/* The first (rising) or last (falling) float where a monotone predicate holds; false: nowhere. */
static bool gate_end(const gate_line *g, bool above, bool rising, float *end) {
    int32_t lo = float_key(-INFINITY), hi = float_key(INFINITY);
    if (!gate_passes(g, rising ? INFINITY : -INFINITY, above)) return false;
    while (lo < hi) {
        /* from lo: hi - lo >= 0, so the division rounds down, not toward zero */
        int32_t mid = lo + (int32_t)(((int64_t)hi - lo + (rising ? 0 : 1)) / 2);
        bool holds = gate_passes(g, key_float(mid), above);
        if (rising) holds ? (hi = mid) : (lo = mid + 1);
        else holds ? (lo = mid) : (hi = mid - 1);
    }
    *end = key_float(lo);
    return true;
}

/* The channel's interval [*lo, *hi] (empty: +inf, -inf); false when z is not monotone (scale 0 or a
 * coefficient not finite), where the gate cannot stand in for the activation's output. */
static bool gate_interval(const gate_line *g, float *lo, float *hi) {
    if (g->scale == 0.0f || !isfinite(g->scale) || !isfinite(g->mean_high) || !isfinite(g->mean_low) ||
        !isfinite(g->beta))
        return false;
    bool rising = g->scale > 0.0f, ok_above, ok_below;
    float above_end = 0, below_end = 0;
    ok_above = gate_end(g, true, rising, &above_end);  /* z > 0: from above_end up when rising */
    ok_below = gate_end(g, false, !rising, &below_end); /* z < clamp: up to below_end when rising */
    *lo = rising ? above_end : below_end;
    *hi = rising ? below_end : above_end;
    if (!ok_above || !ok_below || *lo > *hi) *lo = INFINITY, *hi = -INFINITY;
    return true;
}

bool batchnorm_gate_of(float mean_high, float mean_low, float scale, float beta, plait_activation activation, float *lo,
                       float *hi) {
    gate_line line = {mean_high, mean_low, scale, beta, activation_clamp(activation)};
    return gate_interval(&line, lo, hi);
}

/* Scratch for per-thread partial sums and per-channel coefficients; a few kilobytes, so failure means
 * the process is lost anyway. */
static void *scratch_alloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size);
    if (!p) {
        fprintf(stderr, "plait: out of memory in batchnorm (%zu items)\n", count);
        abort();
    }
    return p;
}

/* The training forward; with `gate` (no residual, an activation) also the gate, 2 * C floats: returns
 * whether it stands (see gate_interval). */
static bool forward_train(size_t rows, int channels, const float *x, const float *gamma, const float *beta, float eps,
                          const float *residual, plait_activation activation, float *y, float *saved_mean,
                          float *saved_invstd, float *gate) {
    if (rows == 0 || channels <= 0) return false;
    const fused_rows *k = fused_rows_best();
    const int threads = plait_threads();
    const size_t C = (size_t)channels;
    double *partial = scratch_alloc((size_t)threads * 2 * C, sizeof(double));
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num();
        size_t begin, end;
        fused_split(rows, t, omp_get_num_threads(), &begin, &end);
        k->bn_stats(x, x, C, begin, end, partial + (size_t)t * 2 * C, partial + (size_t)t * 2 * C + C);
    }
    /* y = ((x - mean_high) - mean_low) * scale + beta, the mean split into two floats: folding it into
     * one shift (x*scale + (beta - mean*scale)) cancels badly when the mean is large against the spread. */
    float *coef = scratch_alloc(3 * C, sizeof(float));
    float *scale = coef, *mean_high = coef + C, *mean_low = coef + 2 * C;
    for (size_t c = 0; c < C; c++) {
        double sum = 0, sumsq = 0;
        for (int t = 0; t < threads; t++) {
            sum += partial[(size_t)t * 2 * C + c];
            sumsq += partial[(size_t)t * 2 * C + C + c];
        }
        double mean_shifted = sum / (double)rows;
        double var = sumsq / (double)rows - mean_shifted * mean_shifted;
        if (var < 0) var = 0;
        double mean = (double)x[c] + mean_shifted, invstd = 1.0 / sqrt(var + (double)eps);
        saved_mean[c] = (float)mean;
        saved_invstd[c] = (float)invstd;
        scale[c] = (float)(gamma[c] * invstd);
        mean_high[c] = (float)mean;
        mean_low[c] = (float)(mean - (double)mean_high[c]);
    }
    free(partial);
#pragma omp parallel num_threads(fused_pass_threads(rows * C))
    {
        size_t begin, end;
        fused_split(rows, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
        k->bn_normalize(x, mean_high, mean_low, scale, beta, residual, activation_clamp(activation), C, begin, end,
                        y);
    }
    bool gated = gate && !residual && activation != PLAIT_ACTIVATION_NONE;
    for (size_t c = 0; gated && c < C; c++) {
        gate_line line = {mean_high[c], mean_low[c], scale[c], beta[c], activation_clamp(activation)};
        gated = gate_interval(&line, &gate[c], &gate[C + c]);
    }
    free(coef);
    return gated;
}

void plait_batchnorm_forward_train_fused(size_t rows, int channels, const float *x, const float *gamma,
                                         const float *beta, float eps, const float *residual,
                                         plait_activation activation, float *y, float *saved_mean,
                                         float *saved_invstd) {
    forward_train(rows, channels, x, gamma, beta, eps, residual, activation, y, saved_mean, saved_invstd, NULL);
}

bool batchnorm_forward_train_gated(size_t rows, int channels, const float *x, const float *gamma, const float *beta,
                                   float eps, plait_activation activation, float *y, float *saved_mean,
                                   float *saved_invstd, float *gate) {
    return forward_train(rows, channels, x, gamma, beta, eps, NULL, activation, y, saved_mean, saved_invstd, gate);
}

void plait_batchnorm_forward_train(size_t rows, int channels, const float *x, const float *gamma, const float *beta,
                                   float eps, float *y, float *saved_mean, float *saved_invstd) {
    plait_batchnorm_forward_train_fused(rows, channels, x, gamma, beta, eps, NULL, PLAIT_ACTIVATION_NONE, y,
                                        saved_mean, saved_invstd);
}

void plait_batchnorm_forward_eval_fused(size_t rows, int channels, const float *x, const float *gamma,
                                        const float *beta, const float *running_mean, const float *running_var,
                                        float eps, const float *residual, plait_activation activation, float *y) {
    if (rows == 0 || channels <= 0) return;
    const fused_rows *k = fused_rows_best();
    const size_t C = (size_t)channels;
    float *scale = scratch_alloc(2 * C, sizeof(float));
    float *shift = scale + C;
    for (size_t c = 0; c < C; c++) {
        scale[c] = (float)((double)gamma[c] / sqrt((double)running_var[c] + (double)eps));
        shift[c] = beta[c] - running_mean[c] * scale[c];
    }
#pragma omp parallel num_threads(fused_pass_threads(rows * C))
    {
        size_t begin, end;
        fused_split(rows, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
        k->bn_affine(x, scale, shift, residual, activation_clamp(activation), C, begin, end, y);
    }
    free(scale);
}

void plait_batchnorm_forward_eval(size_t rows, int channels, const float *x, const float *gamma, const float *beta,
                                  const float *running_mean, const float *running_var, float eps, float *y) {
    plait_batchnorm_forward_eval_fused(rows, channels, x, gamma, beta, running_mean, running_var, eps, NULL,
                                       PLAIT_ACTIVATION_NONE, y);
}

/* dy passed where lo[c] <= mask <= hi[c] (mask NULL: everywhere) */
static void backward(size_t rows, int channels, const float *x, const float *dy, const float *mask, const float *lo,
                     const float *hi, const float *gamma, const float *saved_mean, const float *saved_invstd,
                     float *dx, float *dgamma, float *dbeta) {
    if (rows == 0 || channels <= 0) return;
    const fused_rows *k = fused_rows_best();
    const int threads = plait_threads();
    const size_t C = (size_t)channels;
    double *partial = scratch_alloc((size_t)threads * 2 * C, sizeof(double));
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num();
        size_t begin, end;
        fused_split(rows, t, omp_get_num_threads(), &begin, &end);
        k->bn_backward_sums(x, dy, mask, lo, hi, saved_mean, C, begin, end, partial + (size_t)t * 2 * C,
                            partial + (size_t)t * 2 * C + C);
    }
    /* dx = gamma*invstd * (g - mean(g) - (x-mean) * invstd^2 * mean(g*(x-mean))) */
    float *coef = scratch_alloc(3 * C, sizeof(float));
    float *mean_dy = coef + C, *slope = coef + 2 * C;
    for (size_t c = 0; c < C; c++) {
        double sum_dy = 0, sum_dy_xc = 0;
        for (int t = 0; t < threads; t++) {
            sum_dy += partial[(size_t)t * 2 * C + c];
            sum_dy_xc += partial[(size_t)t * 2 * C + C + c];
        }
        double invstd = saved_invstd[c];
        dgamma[c] += (float)(sum_dy_xc * invstd);
        dbeta[c] += (float)sum_dy;
        coef[c] = (float)((double)gamma[c] * invstd);
        mean_dy[c] = (float)(sum_dy / (double)rows);
        slope[c] = (float)(invstd * invstd * sum_dy_xc / (double)rows);
    }
    free(partial);
#pragma omp parallel num_threads(fused_pass_threads(rows * C))
    {
        size_t begin, end;
        fused_split(rows, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
        k->bn_backward_apply(x, dy, mask, lo, hi, saved_mean, coef, mean_dy, slope, C, begin, end, dx);
    }
    free(coef);
}

void plait_batchnorm_backward_fused(size_t rows, int channels, const float *x, const float *dy,
                                    const float *activation_output, plait_activation activation,
                                    const float *gamma, const float *saved_mean, const float *saved_invstd,
                                    float *dx, float *dgamma, float *dbeta) {
    if (rows == 0 || channels <= 0) return;
    if (!activation_output || activation == PLAIT_ACTIVATION_NONE) {
        backward(rows, channels, x, dy, NULL, NULL, NULL, gamma, saved_mean, saved_invstd, dx, dgamma, dbeta);
        return;
    }
    /* the output passes the gradient where 0 < y (smallest positive float <= y) and y < 6 for a ReLU6 (y <= the
     * float below 6) */
    const size_t C = (size_t)channels;
    float *bounds = scratch_alloc(2 * C, sizeof(float));
    for (size_t c = 0; c < C; c++) {
        bounds[c] = FLT_TRUE_MIN;
        bounds[C + c] = activation == PLAIT_ACTIVATION_RELU6 ? nextafterf(6.0f, 0.0f) : INFINITY;
    }
    backward(rows, channels, x, dy, activation_output, bounds, bounds + C, gamma, saved_mean, saved_invstd, dx, dgamma,
             dbeta);
    free(bounds);
}

void batchnorm_backward_gated(size_t rows, int channels, const float *x, const float *dy, const float *gate,
                              const float *gamma, const float *saved_mean, const float *saved_invstd, float *dx,
                              float *dgamma, float *dbeta) {
    backward(rows, channels, x, dy, x, gate, gate + channels, gamma, saved_mean, saved_invstd, dx, dgamma, dbeta);
}

void plait_batchnorm_backward(size_t rows, int channels, const float *x, const float *dy, const float *gamma,
                              const float *saved_mean, const float *saved_invstd, float *dx, float *dgamma,
                              float *dbeta) {
    backward(rows, channels, x, dy, NULL, NULL, NULL, gamma, saved_mean, saved_invstd, dx, dgamma, dbeta);
}
