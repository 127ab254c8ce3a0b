/* Max pooling (with the chosen input index kept for backward) and global average pooling, NHWC. */
#include <math.h>
#include <string.h>

#include "plait/ops.h"

int plait_pool2d_out_h(const plait_pool2d_desc *d) {
    if (d->stride <= 0) return 0;
    return (d->in_h + 2 * d->pad - d->kernel) / d->stride + 1;
}

int plait_pool2d_out_w(const plait_pool2d_desc *d) {
    if (d->stride <= 0) return 0;
    return (d->in_w + 2 * d->pad - d->kernel) / d->stride + 1;
}

/* Ties keep the first maximum in window order and NaN wins, as PyTorch does. */
void plait_maxpool_forward(const plait_pool2d_desc *d, const float *x, float *y, int32_t *argmax) {
    const int H = d->in_h, W = d->in_w, C = d->channels;
    const int OH = plait_pool2d_out_h(d), OW = plait_pool2d_out_w(d);
#pragma omp parallel for collapse(2) schedule(static) num_threads(plait_threads())
    for (int n = 0; n < d->batch; n++) {
        for (int oh = 0; oh < OH; oh++) {
            for (int ow = 0; ow < OW; ow++) {
                size_t o = (((size_t)n * OH + oh) * OW + ow) * C;
                float *restrict out = y + o;
                int32_t *restrict index = argmax + o;
                for (int c = 0; c < C; c++) {
                    out[c] = -INFINITY;
                    index[c] = -1;
                }
                for (int r = 0; r < d->kernel; r++) {
                    int ih = oh * d->stride - d->pad + r;
                    if (ih < 0 || ih >= H) continue;
                    for (int s = 0; s < d->kernel; s++) {
                        int iw = ow * d->stride - d->pad + s;
                        if (iw < 0 || iw >= W) continue;
                        size_t i = (((size_t)n * H + ih) * W + iw) * C;
                        const float *restrict in = x + i;
                        for (int c = 0; c < C; c++) {
                            if (in[c] > out[c] || index[c] < 0 || (isnan(in[c]) && !isnan(out[c]))) {
                                out[c] = in[c];
                                index[c] = (int32_t)(i + (size_t)c);
                            }
                        }
                    }
                }
            }
        }
    }
}

/* Each sample's indices point into its own image, so threads split the batch without conflicts. */
void plait_maxpool_backward(const plait_pool2d_desc *d, const float *dy, const int32_t *argmax, float *dx) {
    const size_t in_image = (size_t)d->in_h * d->in_w * d->channels;
    const size_t out_image = (size_t)plait_pool2d_out_h(d) * plait_pool2d_out_w(d) * d->channels;
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (int n = 0; n < d->batch; n++) {
        memset(dx + (size_t)n * in_image, 0, in_image * sizeof(float));
        for (size_t o = (size_t)n * out_image; o < (size_t)(n + 1) * out_image; o++)
            if (argmax[o] >= 0) dx[argmax[o]] += dy[o];
    }
}

void plait_global_avgpool_forward(int batch, int hw, int channels, const float *x, float *y) {
    const float inverse = 1.0f / (float)hw;
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (int n = 0; n < batch; n++) {
        float *restrict out = y + (size_t)n * channels;
        for (int c = 0; c < channels; c++) out[c] = 0.0f;
        for (int p = 0; p < hw; p++) {
            const float *restrict in = x + ((size_t)n * hw + p) * channels;
            for (int c = 0; c < channels; c++) out[c] += in[c];
        }
        for (int c = 0; c < channels; c++) out[c] *= inverse;
    }
}

void plait_global_avgpool_backward(int batch, int hw, int channels, const float *dy, float *dx) {
    const float inverse = 1.0f / (float)hw;
#pragma omp parallel for collapse(2) schedule(static) num_threads(plait_threads())
    for (int n = 0; n < batch; n++) {
        for (int p = 0; p < hw; p++) {
            const float *restrict grad = dy + (size_t)n * channels;
            float *restrict out = dx + ((size_t)n * hw + p) * channels;
            for (int c = 0; c < channels; c++) out[c] = grad[c] * inverse;
        }
    }
}
