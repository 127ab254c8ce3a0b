/* Depthwise convolution (groups == in_channels == out_channels) with direct loops over NHWC.
 *
 * The innermost loop always runs over channels, which are contiguous in NHWC, so it vectorizes. The
 * OHWI weights ([C][R][S][1]) are first transposed into the workspace as [R][S][C] so that the
 * weights of one tap are contiguous too. Channels go in blocks of CHANNEL_BLOCK whose sums stay in
 * registers across all taps of a window. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "plait/ops.h"

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

/* The taps [first, last) of a window starting at `origin` that fall inside [0, size). */
static void window_taps(int origin, int taps, int size, int *first, int *last) {
    *first = origin < 0 ? -origin : 0;
    *last = size - origin < taps ? size - origin : taps;
}

/* out[c] = sum over taps of in(tap)[c] * weight(tap)[c] for one output pixel. */
static inline void forward_pixel(const plait_conv2d_desc *d, const float *x, const float *taps, int n, int oh, int ow,
                                 float *restrict out) {
    const int H = d->in_h, W = d->in_w, C = d->in_channels, S = d->kernel_w;
    const int ih0 = oh * d->stride_h - d->pad_h, iw0 = ow * d->stride_w - d->pad_w;
    int r0, r1, s0, s1;
    window_taps(ih0, d->kernel_h, H, &r0, &r1);
    window_taps(iw0, S, W, &s0, &s1);
    const float *base = x + ((size_t)n * H * W) * C;
    int c0 = 0;
    for (; c0 + CHANNEL_BLOCK <= C; c0 += CHANNEL_BLOCK) {
        float sum[CHANNEL_BLOCK] = {0};
        for (int r = r0; r < r1; r++)
            for (int s = s0; s < s1; s++) {
                const float *restrict in = base + ((size_t)(ih0 + r) * W + (iw0 + s)) * C + c0;
                const float *restrict tap = taps + (size_t)(r * S + s) * C + c0;
                for (int c = 0; c < CHANNEL_BLOCK; c++) sum[c] += in[c] * tap[c];
            }
        for (int c = 0; c < CHANNEL_BLOCK; c++) out[c0 + c] = sum[c];
    }
    if (c0 < C) {
        for (int c = c0; c < C; c++) out[c] = 0.0f;
        for (int r = r0; r < r1; r++)
            for (int s = s0; s < s1; s++) {
                const float *restrict in = base + ((size_t)(ih0 + r) * W + (iw0 + s)) * C;
                const float *restrict tap = taps + (size_t)(r * S + s) * C;
                for (int c = c0; c < C; c++) out[c] += in[c] * tap[c];
            }
    }
}

static void depthwise_forward(const plait_conv2d_desc *d, const float *x, const float *w, float *y, void *workspace) {
    const int C = d->in_channels, OH = plait_conv2d_out_h(d), OW = plait_conv2d_out_w(d);
    float *taps = workspace;
    transpose_weights(d, w, taps);
#pragma omp parallel for collapse(2) schedule(static) num_threads(plait_threads())
    for (int n = 0; n < d->batch; n++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++)
                forward_pixel(d, x, taps, n, oh, ow, y + (((size_t)n * OH + oh) * OW + ow) * C);
}

/* The output rows/columns whose windows cover input index i: o with o*stride - pad + t == i for a tap t. */
static void covering_outputs(int i, int pad, int stride, int taps, int outputs, int *first, int *last) {
    int highest = i + pad;                    /* tap 0 */
    int lowest = i + pad - (taps - 1);        /* last tap */
    int lo = lowest <= 0 ? 0 : (lowest + stride - 1) / stride;
    int hi = highest < 0 ? -1 : highest / stride;
    if (hi > outputs - 1) hi = outputs - 1;
    *first = lo;
    *last = hi + 1;
}

/* dx[pixel][c] = sum over covering outputs of dy[out][c] * weight(tap)[c], gathered per input pixel. */
static inline void backward_data_pixel(const plait_conv2d_desc *d, const float *dy, const float *taps, int n, int ih,
                                       int iw, float *restrict out) {
    const int C = d->in_channels, S = d->kernel_w;
    const int OH = plait_conv2d_out_h(d), OW = plait_conv2d_out_w(d);
    int oh0, oh1, ow0, ow1;
    covering_outputs(ih, d->pad_h, d->stride_h, d->kernel_h, OH, &oh0, &oh1);
    covering_outputs(iw, d->pad_w, d->stride_w, S, OW, &ow0, &ow1);
    const float *base = dy + (size_t)n * OH * OW * C;
    int c0 = 0;
    for (; c0 + CHANNEL_BLOCK <= C; c0 += CHANNEL_BLOCK) {
        float sum[CHANNEL_BLOCK] = {0};
        for (int oh = oh0; oh < oh1; oh++) {
            int r = ih + d->pad_h - oh * d->stride_h;
            for (int ow = ow0; ow < ow1; ow++) {
                int s = iw + d->pad_w - ow * d->stride_w;
                const float *restrict grad = base + ((size_t)oh * OW + ow) * C + c0;
                const float *restrict tap = taps + (size_t)(r * S + s) * C + c0;
                for (int c = 0; c < CHANNEL_BLOCK; c++) sum[c] += grad[c] * tap[c];
            }
        }
        for (int c = 0; c < CHANNEL_BLOCK; c++) out[c0 + c] = sum[c];
    }
    if (c0 < C) {
        for (int c = c0; c < C; c++) out[c] = 0.0f;
        for (int oh = oh0; oh < oh1; oh++) {
            int r = ih + d->pad_h - oh * d->stride_h;
            for (int ow = ow0; ow < ow1; ow++) {
                int s = iw + d->pad_w - ow * d->stride_w;
                const float *restrict grad = base + ((size_t)oh * OW + ow) * C;
                const float *restrict tap = taps + (size_t)(r * S + s) * C;
                for (int c = c0; c < C; c++) out[c] += grad[c] * tap[c];
            }
        }
    }
}

static void depthwise_backward_data(const plait_conv2d_desc *d, const float *dy, const float *w, float *dx,
                                    void *workspace) {
    const int H = d->in_h, W = d->in_w, C = d->in_channels;
    float *taps = workspace;
    transpose_weights(d, w, taps);
#pragma omp parallel for collapse(2) schedule(static) num_threads(plait_threads())
    for (int n = 0; n < d->batch; n++)
        for (int ih = 0; ih < H; ih++)
            for (int iw = 0; iw < W; iw++)
                backward_data_pixel(d, dy, taps, n, ih, iw, dx + (((size_t)n * H + ih) * W + iw) * C);
}

static void *scratch_alloc(size_t bytes) {
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "plait: out of memory in depthwise convolution (%zu bytes)\n", bytes);
        abort();
    }
    return p;
}

/* Threads split the output rows; each sums one row in float, adds rows into its own double totals,
 * and the totals are reduced at the end, so large batches lose no precision and no thread waits. */
static void depthwise_backward_weights(const plait_conv2d_desc *d, const float *x, const float *dy, float *dw,
                                       void *workspace) {
    (void)workspace;
    const int H = d->in_h, W = d->in_w, C = d->in_channels, R = d->kernel_h, S = d->kernel_w;
    const int OH = plait_conv2d_out_h(d), OW = plait_conv2d_out_w(d);
    const size_t taps_floats = (size_t)R * S * C;
    const int threads = plait_threads();
    double *totals = scratch_alloc((size_t)threads * taps_floats * sizeof(double));
#pragma omp parallel num_threads(threads)
    {
        double *restrict total = totals + (size_t)omp_get_thread_num() * taps_floats;
        float *restrict row_sum = scratch_alloc(taps_floats * sizeof(float));
#pragma omp for collapse(2) schedule(static)
        for (int n = 0; n < d->batch; n++) {
            for (int oh = 0; oh < OH; oh++) {
                memset(row_sum, 0, taps_floats * sizeof(float));
                const int ih0 = oh * d->stride_h - d->pad_h;
                int r0, r1;
                window_taps(ih0, R, H, &r0, &r1);
                for (int ow = 0; ow < OW; ow++) {
                    const int iw0 = ow * d->stride_w - d->pad_w;
                    int s0, s1;
                    window_taps(iw0, S, W, &s0, &s1);
                    const float *restrict grad = dy + (((size_t)n * OH + oh) * OW + ow) * C;
                    for (int r = r0; r < r1; r++)
                        for (int s = s0; s < s1; s++) {
                            const float *restrict in = x + (((size_t)n * H + (ih0 + r)) * W + (iw0 + s)) * C;
                            float *restrict sum = row_sum + (size_t)(r * S + s) * C;
                            for (int c = 0; c < C; c++) sum[c] += in[c] * grad[c];
                        }
                }
                for (size_t i = 0; i < taps_floats; i++) total[i] += row_sum[i];
            }
        }
        free(row_sum);
    }
    const int taps_per_channel = R * S;
    for (int c = 0; c < C; c++)
        for (int t = 0; t < taps_per_channel; t++) {
            double sum = 0;
            for (int i = 0; i < threads; i++) sum += totals[(size_t)i * taps_floats + (size_t)t * C + c];
            dw[(size_t)c * taps_per_channel + t] += (float)sum;
        }
    free(totals);
}

const plait_conv2d_kernel plait_conv2d_depthwise_direct = {
    .name = "depthwise_direct",
    .supports = depthwise_supports,
    .workspace_bytes = depthwise_workspace_bytes,
    .forward = depthwise_forward,
    .backward_data = depthwise_backward_data,
    .backward_weights = depthwise_backward_weights,
};
