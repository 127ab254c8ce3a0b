/* Convolution descriptions and the im2col + sgemm kernel, NHWC activations, OHWI weights.
 *
 * The column matrix has one row per output position and, per row, the receptive field laid out as
 * [group][r][s][c within group], so group g's block is a plain sub-matrix (offset g*R*S*Cg, leading
 * dimension R*S*C) and each group is one GEMM against its rows of the weight tensor. */
#include <string.h>

#include "kernels/conv2d_internal.h"
#include "plait/ops.h"

/* Bounds the column buffer; chunks of whole images are processed one after another. */
static size_t column_buffer_limit = (size_t)64 << 20;

void plait_conv2d_set_column_buffer_limit(size_t bytes) { column_buffer_limit = bytes; }

int plait_conv2d_out_h(const plait_conv2d_desc *d) {
    if (d->stride_h <= 0) return 0;
    return (d->in_h + 2 * d->pad_h - d->kernel_h) / d->stride_h + 1;
}

int plait_conv2d_out_w(const plait_conv2d_desc *d) {
    if (d->stride_w <= 0) return 0;
    return (d->in_w + 2 * d->pad_w - d->kernel_w) / d->stride_w + 1;
}

int plait_conv2d_validate(const plait_conv2d_desc *d) {
    if (!d) return plait_fail("conv2d: no description");
    if (d->batch <= 0 || d->in_h <= 0 || d->in_w <= 0 || d->in_channels <= 0)
        return plait_fail("conv2d: input size %dx%dx%dx%d (NHWC) must be positive", d->batch, d->in_h, d->in_w,
                          d->in_channels);
    if (d->out_channels <= 0) return plait_fail("conv2d: out_channels %d must be positive", d->out_channels);
    if (d->kernel_h <= 0 || d->kernel_w <= 0)
        return plait_fail("conv2d: kernel %dx%d must be positive", d->kernel_h, d->kernel_w);
    if (d->stride_h <= 0 || d->stride_w <= 0)
        return plait_fail("conv2d: stride %dx%d must be positive", d->stride_h, d->stride_w);
    if (d->pad_h < 0 || d->pad_w < 0) return plait_fail("conv2d: padding %dx%d must not be negative", d->pad_h, d->pad_w);
    if (d->groups <= 0) return plait_fail("conv2d: groups %d must be positive", d->groups);
    if (d->in_channels % d->groups != 0)
        return plait_fail("conv2d: in_channels %d is not divisible by groups %d", d->in_channels, d->groups);
    if (d->out_channels % d->groups != 0)
        return plait_fail("conv2d: out_channels %d is not divisible by groups %d", d->out_channels, d->groups);
    if (d->in_h + 2 * d->pad_h < d->kernel_h || d->in_w + 2 * d->pad_w < d->kernel_w)
        return plait_fail("conv2d: kernel %dx%d is larger than the padded input %dx%d", d->kernel_h, d->kernel_w,
                          d->in_h + 2 * d->pad_h, d->in_w + 2 * d->pad_w);
    /* int32 indices (max-pool argmax, BLAS dimensions) must not overflow. */
    double in_count = (double)d->batch * d->in_h * d->in_w * d->in_channels;
    double out_count = (double)d->batch * plait_conv2d_out_h(d) * plait_conv2d_out_w(d) * d->out_channels;
    if (in_count > 2147483647.0 || out_count > 2147483647.0)
        return plait_fail("conv2d: tensors larger than 2^31 elements are not supported");
    return PLAIT_OK;
}

double plait_conv2d_macs(const plait_conv2d_desc *d) {
    if (d->groups <= 0) return 0;
    return (double)d->batch * plait_conv2d_out_h(d) * plait_conv2d_out_w(d) * d->out_channels * d->kernel_h *
           d->kernel_w * (d->in_channels / d->groups);
}

static bool is_pointwise(const plait_conv2d_desc *d) {
    return d->kernel_h == 1 && d->kernel_w == 1 && d->stride_h == 1 && d->stride_w == 1 && d->pad_h == 0 &&
           d->pad_w == 0;
}

static size_t column_row_floats(const plait_conv2d_desc *d) {
    return (size_t)d->kernel_h * d->kernel_w * d->in_channels;
}

static int images_per_chunk(const plait_conv2d_desc *d) {
    size_t per_image =
        (size_t)plait_conv2d_out_h(d) * plait_conv2d_out_w(d) * column_row_floats(d) * sizeof(float);
    size_t images = per_image > 0 ? column_buffer_limit / per_image : (size_t)d->batch;
    if (images < 1) images = 1;
    if (images > (size_t)d->batch) images = (size_t)d->batch;
    return (int)images;
}

static bool im2col_supports(const plait_conv2d_desc *d) {
    return plait_conv2d_validate(d) == PLAIT_OK;
}

static size_t column_bytes(const plait_conv2d_desc *d) {
    if (is_pointwise(d)) return 0;
    return (size_t)images_per_chunk(d) * plait_conv2d_out_h(d) * plait_conv2d_out_w(d) * column_row_floats(d) *
           sizeof(float);
}

/* With stride 1, the input gradient is itself a convolution of dy with the kernel flipped in space and
 * transposed in channels (padding R-1-pad), so it can reuse the forward path: one GEMM with the long
 * R*S*K inner dimension instead of a GEMM with inner dimension K/groups followed by col2im. */
static bool data_gradient_as_convolution(const plait_conv2d_desc *d, plait_conv2d_desc *transposed) {
    if (is_pointwise(d) || d->stride_h != 1 || d->stride_w != 1 || d->pad_h > d->kernel_h - 1 ||
        d->pad_w > d->kernel_w - 1)
        return false;
    *transposed = (plait_conv2d_desc){
        .batch = d->batch,
        .in_h = plait_conv2d_out_h(d),
        .in_w = plait_conv2d_out_w(d),
        .in_channels = d->out_channels,
        .out_channels = d->in_channels,
        .kernel_h = d->kernel_h,
        .kernel_w = d->kernel_w,
        .stride_h = 1,
        .stride_w = 1,
        .pad_h = d->kernel_h - 1 - d->pad_h,
        .pad_w = d->kernel_w - 1 - d->pad_w,
        .groups = d->groups,
    };
    return true;
}

static size_t flipped_weights_bytes(const plait_conv2d_desc *d) {
    size_t floats = (size_t)d->out_channels * d->kernel_h * d->kernel_w * (d->in_channels / d->groups);
    return (floats * sizeof(float) + 63) & ~(size_t)63;
}

static size_t im2col_workspace_bytes(const plait_conv2d_desc *d) {
    size_t bytes = column_bytes(d);
    plait_conv2d_desc transposed;
    if (data_gradient_as_convolution(d, &transposed)) {
        size_t data_bytes = flipped_weights_bytes(d) + column_bytes(&transposed);
        if (data_bytes > bytes) bytes = data_bytes;
    }
    return bytes;
}

/* col[p][g][r][s][c] = x[n][oh*sh-ph+r][ow*sw-pw+s][g*Cg+c], zero outside the input. */
static void im2col(const plait_conv2d_desc *d, const float *x, int images, float *col) {
    const int H = d->in_h, W = d->in_w, C = d->in_channels, R = d->kernel_h, S = d->kernel_w;
    const int OH = plait_conv2d_out_h(d), OW = plait_conv2d_out_w(d), G = d->groups, Cg = C / G;
    const size_t row_floats = column_row_floats(d), group_floats = (size_t)R * S * Cg;
#pragma omp parallel for collapse(2) schedule(static) num_threads(plait_threads())
    for (int n = 0; n < images; n++) {
        for (int oh = 0; oh < OH; oh++) {
            for (int ow = 0; ow < OW; ow++) {
                float *row = col + ((size_t)(n * OH + oh) * OW + ow) * row_floats;
                const int iw0 = ow * d->stride_w - d->pad_w;
                /* With one group, a kernel row lying fully inside the input is one contiguous copy. */
                const bool row_inside = G == 1 && iw0 >= 0 && iw0 + S <= W;
                for (int r = 0; r < R; r++) {
                    int ih = oh * d->stride_h - d->pad_h + r;
                    if (row_inside && ih >= 0 && ih < H) {
                        memcpy(row + (size_t)r * S * C, x + (((size_t)n * H + ih) * W + iw0) * C,
                               (size_t)S * C * sizeof(float));
                        continue;
                    }
                    for (int s = 0; s < S; s++) {
                        int iw = iw0 + s;
                        bool inside = ih >= 0 && ih < H && iw >= 0 && iw < W;
                        const float *src = x + (((size_t)n * H + (inside ? ih : 0)) * W + (inside ? iw : 0)) * C;
                        for (int g = 0; g < G; g++) {
                            float *dst = row + g * group_floats + (size_t)(r * S + s) * Cg;
                            if (inside)
                                memcpy(dst, src + (size_t)g * Cg, (size_t)Cg * sizeof(float));
                            else
                                memset(dst, 0, (size_t)Cg * sizeof(float));
                        }
                    }
                }
            }
        }
    }
}

/* The adjoint of im2col, as a gather so every input pixel is written by one thread: dx[pixel] is the
 * sum of the column entries that copied it. */
static void col2im(const plait_conv2d_desc *d, const float *col, int images, float *dx) {
    const int H = d->in_h, W = d->in_w, C = d->in_channels, R = d->kernel_h, S = d->kernel_w;
    const int OH = plait_conv2d_out_h(d), OW = plait_conv2d_out_w(d), G = d->groups, Cg = C / G;
    const size_t row_floats = column_row_floats(d), group_floats = (size_t)R * S * Cg;
#pragma omp parallel for collapse(2) schedule(static) num_threads(plait_threads())
    for (int n = 0; n < images; n++) {
        for (int ih = 0; ih < H; ih++) {
            for (int iw = 0; iw < W; iw++) {
                float *dst = dx + (((size_t)n * H + ih) * W + iw) * C;
                memset(dst, 0, (size_t)C * sizeof(float));
                for (int r = 0; r < R; r++) {
                    int th = ih + d->pad_h - r;
                    if (th < 0 || th % d->stride_h != 0) continue;
                    int oh = th / d->stride_h;
                    if (oh >= OH) continue;
                    for (int s = 0; s < S; s++) {
                        int tw = iw + d->pad_w - s;
                        if (tw < 0 || tw % d->stride_w != 0) continue;
                        int ow = tw / d->stride_w;
                        if (ow >= OW) continue;
                        const float *row = col + ((size_t)(n * OH + oh) * OW + ow) * row_floats;
                        for (int g = 0; g < G; g++) {
                            const float *src = row + g * group_floats + (size_t)(r * S + s) * Cg;
                            float *out = dst + (size_t)g * Cg;
                            for (int c = 0; c < Cg; c++) out[c] += src[c];
                        }
                    }
                }
            }
        }
    }
}

static void im2col_forward(const plait_conv2d_desc *d, const float *x, const float *w, float *y, void *workspace) {
    const int C = d->in_channels, K = d->out_channels, G = d->groups, Cg = C / G, Kg = K / G;
    const int OH = plait_conv2d_out_h(d), OW = plait_conv2d_out_w(d);
    const int group_floats = d->kernel_h * d->kernel_w * Cg;
    if (is_pointwise(d)) {
        int positions = d->batch * OH * OW;
        for (int g = 0; g < G; g++)
            plait_sgemm_split_rows(false, true, positions, Kg, Cg, 1.0f, x + (size_t)g * Cg, C,
                        w + (size_t)g * Kg * Cg, Cg, 0.0f, y + (size_t)g * Kg, K);
        return;
    }
    float *col = workspace;
    const int chunk = images_per_chunk(d);
    const size_t in_image = (size_t)d->in_h * d->in_w * C, out_image = (size_t)OH * OW * K;
    for (int n0 = 0; n0 < d->batch; n0 += chunk) {
        int images = d->batch - n0 < chunk ? d->batch - n0 : chunk;
        im2col(d, x + n0 * in_image, images, col);
        int positions = images * OH * OW;
        for (int g = 0; g < G; g++)
            plait_sgemm_split_rows(false, true, positions, Kg, group_floats, 1.0f,
                        col + (size_t)g * group_floats, group_floats * G, w + (size_t)g * Kg * group_floats,
                        group_floats, 0.0f, y + n0 * out_image + (size_t)g * Kg, K);
    }
}

static void im2col_backward_data(const plait_conv2d_desc *d, const float *dy, const float *w, float *dx,
                                 void *workspace) {
    const int C = d->in_channels, K = d->out_channels, G = d->groups, Cg = C / G, Kg = K / G;
    const int OH = plait_conv2d_out_h(d), OW = plait_conv2d_out_w(d);
    const int group_floats = d->kernel_h * d->kernel_w * Cg;
    if (is_pointwise(d)) {
        int positions = d->batch * OH * OW;
        for (int g = 0; g < G; g++)
            plait_sgemm_split_rows(false, false, positions, Cg, Kg, 1.0f, dy + (size_t)g * Kg, K,
                        w + (size_t)g * Kg * Cg, Cg, 0.0f, dx + (size_t)g * Cg, C);
        return;
    }
    plait_conv2d_desc transposed;
    if (data_gradient_as_convolution(d, &transposed)) {
        /* flipped[g*Cg + c][r][s][k] = w[g*Kg + k][R-1-r][S-1-s][c] */
        const int R = d->kernel_h, S = d->kernel_w;
        float *flipped = workspace;
        for (int g = 0; g < G; g++)
            for (int c = 0; c < Cg; c++)
                for (int r = 0; r < R; r++)
                    for (int s = 0; s < S; s++)
                        for (int k = 0; k < Kg; k++)
                            flipped[(((size_t)(g * Cg + c) * R + r) * S + s) * Kg + k] =
                                w[(((size_t)(g * Kg + k) * R + (R - 1 - r)) * S + (S - 1 - s)) * Cg + c];
        im2col_forward(&transposed, dy, flipped, dx, (char *)workspace + flipped_weights_bytes(d));
        return;
    }
    float *col = workspace;
    const int chunk = images_per_chunk(d);
    const size_t in_image = (size_t)d->in_h * d->in_w * C, out_image = (size_t)OH * OW * K;
    for (int n0 = 0; n0 < d->batch; n0 += chunk) {
        int images = d->batch - n0 < chunk ? d->batch - n0 : chunk;
        int positions = images * OH * OW;
        for (int g = 0; g < G; g++)
            plait_sgemm_split_rows(false, false, positions, group_floats, Kg, 1.0f,
                        dy + n0 * out_image + (size_t)g * Kg, K, w + (size_t)g * Kg * group_floats, group_floats,
                        0.0f, col + (size_t)g * group_floats, group_floats * G);
        col2im(d, col, images, dx + n0 * in_image);
    }
}

static void im2col_backward_weights(const plait_conv2d_desc *d, const float *x, const float *dy, float *dw,
                                    void *workspace) {
    const int C = d->in_channels, K = d->out_channels, G = d->groups, Cg = C / G, Kg = K / G;
    const int OH = plait_conv2d_out_h(d), OW = plait_conv2d_out_w(d);
    const int group_floats = d->kernel_h * d->kernel_w * Cg;
    if (is_pointwise(d)) {
        int positions = d->batch * OH * OW;
        for (int g = 0; g < G; g++)
            plait_sgemm_split_depth(true, false, Kg, Cg, positions, 1.0f, dy + (size_t)g * Kg, K,
                        x + (size_t)g * Cg, C, 1.0f, dw + (size_t)g * Kg * Cg, Cg);
        return;
    }
    float *col = workspace;
    const int chunk = images_per_chunk(d);
    const size_t in_image = (size_t)d->in_h * d->in_w * C, out_image = (size_t)OH * OW * K;
    for (int n0 = 0; n0 < d->batch; n0 += chunk) {
        int images = d->batch - n0 < chunk ? d->batch - n0 : chunk;
        im2col(d, x + n0 * in_image, images, col);
        int positions = images * OH * OW;
        for (int g = 0; g < G; g++)
            plait_sgemm_split_depth(true, false, Kg, group_floats, positions, 1.0f,
                        dy + n0 * out_image + (size_t)g * Kg, K, col + (size_t)g * group_floats, group_floats * G,
                        1.0f, dw + (size_t)g * Kg * group_floats, group_floats);
    }
}

const plait_conv2d_kernel plait_conv2d_im2col_blas = {
    .name = "im2col_blas",
    .supports = im2col_supports,
    .workspace_bytes = im2col_workspace_bytes,
    .forward = im2col_forward,
    .backward_data = im2col_backward_data,
    .backward_weights = im2col_backward_weights,
};

const plait_conv2d_kernel *plait_conv2d_default_kernel(const plait_conv2d_desc *d) {
    if (plait_conv2d_depthwise_direct.supports(d)) return &plait_conv2d_depthwise_direct;
    return &plait_conv2d_im2col_blas;
}
