/* Depthwise convolution (groups == in_channels == out_channels) with direct loops over NHWC.
 *
 * The innermost loop always runs over channels, which are contiguous in NHWC, so it vectorizes. The
 * OHWI weights ([C][R][S][1]) are first transposed into the workspace as [R][S][C] so that the
 * weights of one tap are contiguous too. */
#include <string.h>

#include "plait/ops.h"

/* Channels per task in backward-weights: one cache line of floats, so tasks never share a line. */
#define CHANNEL_BLOCK 16

static bool depthwise_supports(const plait_conv2d_desc *d) {
    return plait_conv2d_validate(d) == PLAIT_OK && d->groups == d->in_channels && d->out_channels == d->in_channels;
}

static size_t depthwise_workspace_bytes(const plait_conv2d_desc *d) {
    return (size_t)d->kernel_h * d->kernel_w * d->in_channels * sizeof(float);
}

static void transpose_weights(const plait_conv2d_desc *d, const float *w, float *taps) {
    const int C = d->in_channels, taps_per_channel = d->kernel_h * d->kernel_w;
    for (int c = 0; c < C; c++)
        for (int t = 0; t < taps_per_channel; t++) taps[(size_t)t * C + c] = w[(size_t)c * taps_per_channel + t];
}

static void depthwise_forward(const plait_conv2d_desc *d, const float *x, const float *w, float *y, void *workspace) {
    const int H = d->in_h, W = d->in_w, C = d->in_channels, R = d->kernel_h, S = d->kernel_w;
    const int OH = plait_conv2d_out_h(d), OW = plait_conv2d_out_w(d);
    float *taps = workspace;
    transpose_weights(d, w, taps);
#pragma omp parallel for collapse(2) schedule(static) num_threads(plait_threads())
    for (int n = 0; n < d->batch; n++) {
        for (int oh = 0; oh < OH; oh++) {
            for (int ow = 0; ow < OW; ow++) {
                float *restrict out = y + (((size_t)n * OH + oh) * OW + ow) * C;
                for (int c = 0; c < C; c++) out[c] = 0.0f;
                for (int r = 0; r < R; r++) {
                    int ih = oh * d->stride_h - d->pad_h + r;
                    if (ih < 0 || ih >= H) continue;
                    for (int s = 0; s < S; s++) {
                        int iw = ow * d->stride_w - d->pad_w + s;
                        if (iw < 0 || iw >= W) continue;
                        const float *restrict in = x + (((size_t)n * H + ih) * W + iw) * C;
                        const float *restrict tap = taps + (size_t)(r * S + s) * C;
                        for (int c = 0; c < C; c++) out[c] += in[c] * tap[c];
                    }
                }
            }
        }
    }
}

/* Gathers, per input pixel, the output gradients whose windows covered it. */
static void depthwise_backward_data(const plait_conv2d_desc *d, const float *dy, const float *w, float *dx,
                                    void *workspace) {
    const int H = d->in_h, W = d->in_w, C = d->in_channels, R = d->kernel_h, S = d->kernel_w;
    const int OH = plait_conv2d_out_h(d), OW = plait_conv2d_out_w(d);
    float *taps = workspace;
    transpose_weights(d, w, taps);
#pragma omp parallel for collapse(2) schedule(static) num_threads(plait_threads())
    for (int n = 0; n < d->batch; n++) {
        for (int ih = 0; ih < H; ih++) {
            for (int iw = 0; iw < W; iw++) {
                float *restrict out = dx + (((size_t)n * H + ih) * W + iw) * C;
                for (int c = 0; c < C; c++) out[c] = 0.0f;
                for (int r = 0; r < R; r++) {
                    int th = ih + d->pad_h - r;
                    if (th < 0 || th % d->stride_h != 0 || th / d->stride_h >= OH) continue;
                    int oh = th / d->stride_h;
                    for (int s = 0; s < S; s++) {
                        int tw = iw + d->pad_w - s;
                        if (tw < 0 || tw % d->stride_w != 0 || tw / d->stride_w >= OW) continue;
                        int ow = tw / d->stride_w;
                        const float *restrict grad = dy + (((size_t)n * OH + oh) * OW + ow) * C;
                        const float *restrict tap = taps + (size_t)(r * S + s) * C;
                        for (int c = 0; c < C; c++) out[c] += grad[c] * tap[c];
                    }
                }
            }
        }
    }
}

/* Each task owns a block of channels for the whole batch, so no two threads add into the same dw. */
static void depthwise_backward_weights(const plait_conv2d_desc *d, const float *x, const float *dy, float *dw,
                                       void *workspace) {
    (void)workspace;
    const int H = d->in_h, W = d->in_w, C = d->in_channels, R = d->kernel_h, S = d->kernel_w;
    const int OH = plait_conv2d_out_h(d), OW = plait_conv2d_out_w(d);
    const int blocks = (C + CHANNEL_BLOCK - 1) / CHANNEL_BLOCK;
#pragma omp parallel for schedule(dynamic, 1) num_threads(plait_threads())
    for (int block = 0; block < blocks; block++) {
        const int c0 = block * CHANNEL_BLOCK;
        const int width = C - c0 < CHANNEL_BLOCK ? C - c0 : CHANNEL_BLOCK;
        /* Float sums per image, double across images, so large batches lose no precision. */
        double totals[R * S][CHANNEL_BLOCK];
        float sums[R * S][CHANNEL_BLOCK];
        memset(totals, 0, sizeof totals);
        for (int n = 0; n < d->batch; n++) {
            memset(sums, 0, sizeof sums);
            for (int oh = 0; oh < OH; oh++) {
                for (int ow = 0; ow < OW; ow++) {
                    const float *restrict grad = dy + (((size_t)n * OH + oh) * OW + ow) * C + c0;
                    for (int r = 0; r < R; r++) {
                        int ih = oh * d->stride_h - d->pad_h + r;
                        if (ih < 0 || ih >= H) continue;
                        for (int s = 0; s < S; s++) {
                            int iw = ow * d->stride_w - d->pad_w + s;
                            if (iw < 0 || iw >= W) continue;
                            const float *restrict in = x + (((size_t)n * H + ih) * W + iw) * C + c0;
                            float *restrict sum = sums[r * S + s];
                            for (int c = 0; c < width; c++) sum[c] += in[c] * grad[c];
                        }
                    }
                }
            }
            for (int t = 0; t < R * S; t++)
                for (int c = 0; c < width; c++) totals[t][c] += sums[t][c];
        }
        for (int c = 0; c < width; c++)
            for (int t = 0; t < R * S; t++) dw[(size_t)(c0 + c) * R * S + t] += (float)totals[t][c];
    }
}

const plait_conv2d_kernel plait_conv2d_depthwise_direct = {
    .name = "depthwise_direct",
    .supports = depthwise_supports,
    .workspace_bytes = depthwise_workspace_bytes,
    .forward = depthwise_forward,
    .backward_data = depthwise_backward_data,
    .backward_weights = depthwise_backward_weights,
};
