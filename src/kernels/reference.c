/* Naive float64 references (see reference.h): the definitions written as plainly as possible. */
#include "kernels/reference.h"

#include <math.h>
#include <string.h>

/* Calls visit(n, oh, ow, k, ih, iw, c, r, s) for every tap that lands inside the input. */
#define CONV_FOR_EACH_TAP(d, BODY)                                                                   \
    do {                                                                                             \
        const int OH_ = plait_conv2d_out_h(d), OW_ = plait_conv2d_out_w(d);                          \
        const int Cg_ = (d)->in_channels / (d)->groups, Kg_ = (d)->out_channels / (d)->groups;       \
        for (int n = 0; n < (d)->batch; n++)                                                         \
            for (int oh = 0; oh < OH_; oh++)                                                         \
                for (int ow = 0; ow < OW_; ow++)                                                     \
                    for (int k = 0; k < (d)->out_channels; k++)                                      \
                        for (int r = 0; r < (d)->kernel_h; r++)                                      \
                            for (int s = 0; s < (d)->kernel_w; s++) {                                \
                                int ih = oh * (d)->stride_h - (d)->pad_h + r;                        \
                                int iw = ow * (d)->stride_w - (d)->pad_w + s;                        \
                                if (ih < 0 || ih >= (d)->in_h || iw < 0 || iw >= (d)->in_w) continue; \
                                for (int cg = 0; cg < Cg_; cg++) {                                   \
                                    int c = (k / Kg_) * Cg_ + cg;                                    \
                                    size_t xi = (((size_t)n * (d)->in_h + ih) * (d)->in_w + iw) *    \
                                                    (d)->in_channels + c;                            \
                                    size_t wi = (((size_t)k * (d)->kernel_h + r) * (d)->kernel_w + s) * Cg_ + cg; \
                                    size_t yi = (((size_t)n * OH_ + oh) * OW_ + ow) * (d)->out_channels + k; \
                                    BODY;                                                            \
                                }                                                            \
                            }                                                                        \
    } while (0)

static size_t conv_in_count(const plait_conv2d_desc *d) {
    return (size_t)d->batch * d->in_h * d->in_w * d->in_channels;
}
static size_t conv_out_count(const plait_conv2d_desc *d) {
    return (size_t)d->batch * plait_conv2d_out_h(d) * plait_conv2d_out_w(d) * d->out_channels;
}
static size_t conv_weight_count(const plait_conv2d_desc *d) {
    return (size_t)d->out_channels * d->kernel_h * d->kernel_w * (d->in_channels / d->groups);
}

void plait_reference_conv2d_forward(const plait_conv2d_desc *d, const float *x, const float *w, double *y) {
    memset(y, 0, conv_out_count(d) * sizeof(double));
    CONV_FOR_EACH_TAP(d, y[yi] += (double)x[xi] * (double)w[wi]);
}

void plait_reference_conv2d_backward_data(const plait_conv2d_desc *d, const float *dy, const float *w, double *dx) {
    memset(dx, 0, conv_in_count(d) * sizeof(double));
    CONV_FOR_EACH_TAP(d, dx[xi] += (double)dy[yi] * (double)w[wi]);
}

void plait_reference_conv2d_backward_weights(const plait_conv2d_desc *d, const float *x, const float *dy,
                                             double *dw) {
    memset(dw, 0, conv_weight_count(d) * sizeof(double));
    CONV_FOR_EACH_TAP(d, dw[wi] += (double)x[xi] * (double)dy[yi]);
}

static void channel_statistics(size_t rows, int channels, int c, const float *x, double eps, double *mean,
                               double *invstd) {
    double sum = 0, squares = 0;
    for (size_t i = 0; i < rows; i++) sum += x[i * channels + c];
    *mean = sum / (double)rows;
    for (size_t i = 0; i < rows; i++) {
        double v = x[i * channels + c] - *mean;
        squares += v * v;
    }
    *invstd = 1.0 / sqrt(squares / (double)rows + eps);
}

void plait_reference_batchnorm_forward_train(size_t rows, int channels, const float *x, const float *gamma,
                                             const float *beta, double eps, double *y, double *mean,
                                             double *invstd) {
    for (int c = 0; c < channels; c++) {
        double m, is;
        channel_statistics(rows, channels, c, x, eps, &m, &is);
        for (size_t i = 0; i < rows; i++)
            y[i * channels + c] = (double)gamma[c] * (x[i * channels + c] - m) * is + (double)beta[c];
        if (mean) mean[c] = m;
        if (invstd) invstd[c] = is;
    }
}

void plait_reference_batchnorm_forward_eval(size_t rows, int channels, const float *x, const float *gamma,
                                            const float *beta, const float *running_mean, const float *running_var,
                                            double eps, double *y) {
    for (size_t i = 0; i < rows; i++)
        for (int c = 0; c < channels; c++)
            y[i * channels + c] = (double)gamma[c] * ((double)x[i * channels + c] - running_mean[c]) /
                                      sqrt((double)running_var[c] + eps) +
                                  (double)beta[c];
}

void plait_reference_batchnorm_backward(size_t rows, int channels, const float *x, const float *dy,
                                        const float *gamma, double eps, double *dx, double *dgamma, double *dbeta) {
    for (int c = 0; c < channels; c++) {
        double mean, invstd, sum_dy = 0, sum_dy_xhat = 0;
        channel_statistics(rows, channels, c, x, eps, &mean, &invstd);
        for (size_t i = 0; i < rows; i++) {
            sum_dy += dy[i * channels + c];
            sum_dy_xhat += dy[i * channels + c] * (x[i * channels + c] - mean) * invstd;
        }
        dgamma[c] = sum_dy_xhat;
        dbeta[c] = sum_dy;
        for (size_t i = 0; i < rows; i++) {
            double xhat = (x[i * channels + c] - mean) * invstd;
            dx[i * channels + c] = (double)gamma[c] * invstd *
                                   (dy[i * channels + c] - sum_dy / (double)rows - xhat * sum_dy_xhat / (double)rows);
        }
    }
}

void plait_reference_relu_forward(size_t count, const float *x, double *y) {
    for (size_t i = 0; i < count; i++) y[i] = x[i] > 0 ? x[i] : 0.0;
}

void plait_reference_relu6_forward(size_t count, const float *x, double *y) {
    for (size_t i = 0; i < count; i++) y[i] = x[i] <= 0 ? 0.0 : x[i] >= 6 ? 6.0 : x[i];
}

void plait_reference_maxpool_forward(const plait_pool2d_desc *d, const float *x, double *y, int32_t *argmax) {
    const int OH = plait_pool2d_out_h(d), OW = plait_pool2d_out_w(d);
    for (int n = 0; n < d->batch; n++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++)
                for (int c = 0; c < d->channels; c++) {
                    double best = -INFINITY;
                    int32_t where = -1;
                    for (int r = 0; r < d->kernel; r++)
                        for (int s = 0; s < d->kernel; s++) {
                            int ih = oh * d->stride - d->pad + r, iw = ow * d->stride - d->pad + s;
                            if (ih < 0 || ih >= d->in_h || iw < 0 || iw >= d->in_w) continue;
                            size_t i = (((size_t)n * d->in_h + ih) * d->in_w + iw) * d->channels + c;
                            if (where < 0 || x[i] > best) {
                                best = x[i];
                                where = (int32_t)i;
                            }
                        }
                    size_t o = (((size_t)n * OH + oh) * OW + ow) * d->channels + c;
                    y[o] = best;
                    if (argmax) argmax[o] = where;
                }
}

void plait_reference_global_avgpool_forward(int batch, int hw, int channels, const float *x, double *y) {
    for (int n = 0; n < batch; n++)
        for (int c = 0; c < channels; c++) {
            double sum = 0;
            for (int p = 0; p < hw; p++) sum += x[((size_t)n * hw + p) * channels + c];
            y[(size_t)n * channels + c] = sum / hw;
        }
}

void plait_reference_linear_forward(int batch, int in_features, int out_features, const float *x, const float *w,
                                    const float *b, double *y) {
    for (int n = 0; n < batch; n++)
        for (int o = 0; o < out_features; o++) {
            double sum = b ? b[o] : 0.0;
            for (int i = 0; i < in_features; i++)
                sum += (double)x[(size_t)n * in_features + i] * (double)w[(size_t)o * in_features + i];
            y[(size_t)n * out_features + o] = sum;
        }
}

double plait_reference_softmax_cross_entropy(int batch, int classes, const float *logits, const int32_t *labels,
                                             double label_smoothing, double *dlogits) {
    double total = 0;
    for (int n = 0; n < batch; n++) {
        const float *row = logits + (size_t)n * classes;
        double max = row[0], sum_exp = 0;
        for (int j = 1; j < classes; j++)
            if (row[j] > max) max = row[j];
        for (int j = 0; j < classes; j++) sum_exp += exp(row[j] - max);
        for (int j = 0; j < classes; j++) {
            double log_p = row[j] - max - log(sum_exp);
            double target = (j == labels[n] ? 1.0 - label_smoothing : 0.0) + label_smoothing / classes;
            total -= target * log_p;
            if (dlogits) dlogits[(size_t)n * classes + j] = (exp(log_p) - target) / batch;
        }
    }
    return total / batch;
}
