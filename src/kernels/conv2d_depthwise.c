/* Depthwise convolution (groups == in_channels == out_channels) as a kernel table: the layer's fallback
 * kernel when no direct-kernel plan applies. It runs the direct depthwise kernels (kernels/direct/depthwise.c)
 * with their default schedule, so both paths are equally fast and tested against the same reference. */
#include "kernels/direct/direct.h"
#include "plait/ops.h"

static bool depthwise_supports(const plait_conv2d_desc *d) {
    return plait_conv2d_validate(d) == PLAIT_OK && d->groups == d->in_channels && d->out_channels == d->in_channels;
}

static size_t depthwise_workspace_bytes(const plait_conv2d_desc *d) {
    return direct_depthwise_workspace_floats(d) * sizeof(float);
}

static void depthwise_forward(const plait_conv2d_desc *d, const float *x, const float *w, float *y, void *workspace) {
    direct_depthwise_forward(d, NULL, x, w, y, workspace);
}

static void depthwise_backward_data(const plait_conv2d_desc *d, const float *dy, const float *w, float *dx,
                                    void *workspace) {
    direct_depthwise_backward_data(d, NULL, dy, w, dx, workspace);
}

static void depthwise_backward_weights(const plait_conv2d_desc *d, const float *x, const float *dy, float *dw,
                                       void *workspace) {
    direct_depthwise_backward_weights(d, NULL, x, dy, dw, workspace);
}

const plait_conv2d_kernel plait_conv2d_depthwise_direct = {
    .name = "depthwise_direct",
    .supports = depthwise_supports,
    .workspace_bytes = depthwise_workspace_bytes,
    .forward = depthwise_forward,
    .backward_data = depthwise_backward_data,
    .backward_weights = depthwise_backward_weights,
};
