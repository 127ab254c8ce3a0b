/* Batch normalization over rows (N*H*W) x channels, NHWC, with the ReLU and residual add that follow
 * it in a ResNet fused into its passes (see docs/kernels.md, "Fused memory-bound passes").
 *
 * Per-channel sums are reduced per thread in double over a contiguous block of rows, then combined
 * in thread order; the variance uses sums shifted by the first row's value, which keeps
 * E[x^2] - E[x]^2 accurate when the mean is large relative to the spread. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/fused.h"
#include "plait/ops.h"

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

void plait_batchnorm_forward_train_fused(size_t rows, int channels, const float *x, const float *gamma,
                                         const float *beta, float eps, const float *residual, bool relu, float *y,
                                         float *saved_mean, float *saved_invstd) {
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
        k->bn_normalize(x, mean_high, mean_low, scale, beta, residual, relu, C, begin, end, y);
    }
    free(coef);
}

void plait_batchnorm_forward_train(size_t rows, int channels, const float *x, const float *gamma, const float *beta,
                                   float eps, float *y, float *saved_mean, float *saved_invstd) {
    plait_batchnorm_forward_train_fused(rows, channels, x, gamma, beta, eps, NULL, false, y, saved_mean,
                                        saved_invstd);
}

void plait_batchnorm_forward_eval_fused(size_t rows, int channels, const float *x, const float *gamma,
                                        const float *beta, const float *running_mean, const float *running_var,
                                        float eps, const float *residual, bool relu, float *y) {
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
        k->bn_affine(x, scale, shift, residual, relu, C, begin, end, y);
    }
    free(scale);
}

void plait_batchnorm_forward_eval(size_t rows, int channels, const float *x, const float *gamma, const float *beta,
                                  const float *running_mean, const float *running_var, float eps, float *y) {
    plait_batchnorm_forward_eval_fused(rows, channels, x, gamma, beta, running_mean, running_var, eps, NULL, false,
                                       y);
}

void plait_batchnorm_backward_fused(size_t rows, int channels, const float *x, const float *dy,
                                    const float *relu_output, const float *gamma, const float *saved_mean,
                                    const float *saved_invstd, float *dx, float *dgamma, float *dbeta) {
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
        k->bn_backward_sums(x, dy, relu_output, saved_mean, C, begin, end, partial + (size_t)t * 2 * C,
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
        k->bn_backward_apply(x, dy, relu_output, saved_mean, coef, mean_dy, slope, C, begin, end, dx);
    }
    free(coef);
}

void plait_batchnorm_backward(size_t rows, int channels, const float *x, const float *dy, const float *gamma,
                              const float *saved_mean, const float *saved_invstd, float *dx, float *dgamma,
                              float *dbeta) {
    plait_batchnorm_backward_fused(rows, channels, x, dy, NULL, gamma, saved_mean, saved_invstd, dx, dgamma, dbeta);
}
