/* Batch normalization over rows (N*H*W) x channels, NHWC.
 *
 * Per-channel sums are reduced per thread in double over a contiguous block of rows, then combined;
 * the variance uses sums shifted by the first row's value, which keeps E[x^2] - E[x]^2 accurate when
 * the mean is large relative to the spread. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "plait/ops.h"

/* Scratch for per-thread partial sums; a few kilobytes, so failure means the process is lost anyway. */
static double *partial_sums_alloc(size_t count) {
    double *p = calloc(count, sizeof(double));
    if (!p) {
        fprintf(stderr, "plait: out of memory in batchnorm (%zu doubles)\n", count);
        abort();
    }
    return p;
}

static void row_range(size_t rows, int thread, int threads, size_t *begin, size_t *end) {
    *begin = rows * (size_t)thread / (size_t)threads;
    *end = rows * (size_t)(thread + 1) / (size_t)threads;
}

void plait_batchnorm_forward_train(size_t rows, int channels, const float *x, const float *gamma, const float *beta,
                                   float eps, float *y, float *saved_mean, float *saved_invstd) {
    if (rows == 0 || channels <= 0) return;
    const int threads = plait_threads();
    const size_t C = (size_t)channels;
    double *partial = partial_sums_alloc((size_t)threads * 2 * C);
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        size_t begin, end;
        row_range(rows, t, nt, &begin, &end);
        double *restrict sum = partial + (size_t)t * 2 * C;
        double *restrict sumsq = sum + C;
        for (size_t i = begin; i < end; i++) {
            const float *restrict row = x + i * C;
            for (size_t c = 0; c < C; c++) {
                double v = (double)row[c] - (double)x[c];
                sum[c] += v;
                sumsq[c] += v * v;
            }
        }
    }
    /* y = ((x - mean_high) - mean_low) * scale + beta, the mean split into two floats: folding it into
     * one shift (x*scale + (beta - mean*scale)) cancels badly when the mean is large against the spread. */
    float *coef = malloc(3 * C * sizeof(float));
    if (!coef) abort();
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
#pragma omp parallel for schedule(static) num_threads(threads) if (rows * C > 32768)
    for (size_t i = 0; i < rows; i++) {
        const float *restrict in = x + i * C;
        float *restrict out = y + i * C;
        for (size_t c = 0; c < C; c++) out[c] = ((in[c] - mean_high[c]) - mean_low[c]) * scale[c] + beta[c];
    }
    free(coef);
}

void plait_batchnorm_forward_eval(size_t rows, int channels, const float *x, const float *gamma, const float *beta,
                                  const float *running_mean, const float *running_var, float eps, float *y) {
    const size_t C = (size_t)channels;
    float *scale = malloc(2 * C * sizeof(float));
    if (!scale) abort();
    float *shift = scale + C;
    for (size_t c = 0; c < C; c++) {
        scale[c] = (float)((double)gamma[c] / sqrt((double)running_var[c] + (double)eps));
        shift[c] = beta[c] - running_mean[c] * scale[c];
    }
#pragma omp parallel for schedule(static) num_threads(plait_threads()) if (rows * C > 32768)
    for (size_t i = 0; i < rows; i++) {
        const float *restrict in = x + i * C;
        float *restrict out = y + i * C;
        for (size_t c = 0; c < C; c++) out[c] = in[c] * scale[c] + shift[c];
    }
    free(scale);
}

void plait_batchnorm_backward(size_t rows, int channels, const float *x, const float *dy, const float *gamma,
                              const float *saved_mean, const float *saved_invstd, float *dx, float *dgamma,
                              float *dbeta) {
    if (rows == 0 || channels <= 0) return;
    const int threads = plait_threads();
    const size_t C = (size_t)channels;
    double *partial = partial_sums_alloc((size_t)threads * 2 * C);
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        size_t begin, end;
        row_range(rows, t, nt, &begin, &end);
        double *restrict sum_dy = partial + (size_t)t * 2 * C;
        double *restrict sum_dy_xc = sum_dy + C;
        for (size_t i = begin; i < end; i++) {
            const float *restrict in = x + i * C;
            const float *restrict grad = dy + i * C;
            for (size_t c = 0; c < C; c++) {
                sum_dy[c] += grad[c];
                sum_dy_xc[c] += (double)grad[c] * ((double)in[c] - (double)saved_mean[c]);
            }
        }
    }
    /* dx = gamma*invstd * (dy - mean(dy) - (x-mean) * invstd^2 * mean(dy*(x-mean))) */
    float *coef = malloc(3 * C * sizeof(float));
    if (!coef) abort();
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
#pragma omp parallel for schedule(static) num_threads(threads) if (rows * C > 32768)
    for (size_t i = 0; i < rows; i++) {
        const float *restrict in = x + i * C;
        const float *restrict grad = dy + i * C;
        float *restrict out = dx + i * C;
        for (size_t c = 0; c < C; c++)
            out[c] = coef[c] * (grad[c] - mean_dy[c] - (in[c] - saved_mean[c]) * slope[c]);
    }
    free(coef);
}
