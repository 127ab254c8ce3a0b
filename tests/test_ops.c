/* Convolution kernels against float64 references, finite differences and the accumulate contract. */
#include <stdlib.h>
#include <string.h>

#include "kernels/conv2d_internal.h"
#include "ops_testing.h"

/* ---- convolution ---------------------------------------------------------------------------- */

static size_t conv_in_count(const plait_conv2d_desc *d) {
    return (size_t)d->batch * d->in_h * d->in_w * d->in_channels;
}
static size_t conv_out_count(const plait_conv2d_desc *d) {
    return (size_t)d->batch * plait_conv2d_out_h(d) * plait_conv2d_out_w(d) * d->out_channels;
}
static size_t conv_weight_count(const plait_conv2d_desc *d) {
    return (size_t)d->out_channels * d->kernel_h * d->kernel_w * (d->in_channels / d->groups);
}

typedef struct conv_loss_context {
    const plait_conv2d_desc *d;
    const float *x, *w, *r;
    double *y;
} conv_loss_context;

static double conv_loss(void *p) {
    conv_loss_context *c = p;
    plait_reference_conv2d_forward(c->d, c->x, c->w, c->y);
    return dot(c->y, c->r, conv_out_count(c->d));
}

static void describe(const plait_conv2d_desc *d, char *text, size_t size) {
    snprintf(text, size, "n%d %dx%dx%d -> %d, kernel %dx%d stride %dx%d pad %dx%d groups %d", d->batch, d->in_h,
             d->in_w, d->in_channels, d->out_channels, d->kernel_h, d->kernel_w, d->stride_h, d->stride_w, d->pad_h,
             d->pad_w, d->groups);
}

/* Forward, backward-data and backward-weights of `kernel` against the references and against finite
 * differences of the reference forward; also the accumulate/overwrite contract. */
static void check_conv(const plait_conv2d_desc *d, const plait_conv2d_kernel *kernel, unsigned long seed) {
    char text[160];
    describe(d, text, sizeof text);
    CHECKF(kernel->supports(d), "%s does not support %s", kernel->name, text);
    size_t in = conv_in_count(d), out = conv_out_count(d), weights = conv_weight_count(d);
    float *x = random_floats(in, seed), *w = random_floats(weights, seed + 1), *dy = random_floats(out, seed + 2);
    float *y = random_floats(out, seed + 3), *dx = plait_alloc(in * sizeof(float));
    float *dw = random_floats(weights, seed + 4), *dw_start = plait_alloc(weights * sizeof(float));
    memcpy(dw_start, dw, weights * sizeof(float));
    double *y_ref = zero_doubles(out), *dx_ref = zero_doubles(in), *dw_ref = zero_doubles(weights);
    void *workspace = plait_alloc(kernel->workspace_bytes(d));

    kernel->forward(d, x, w, y, workspace);
    plait_reference_conv2d_forward(d, x, w, y_ref);
    double e = error_vs(y, y_ref, out);
    CHECKF(e < TOLERANCE, "%s forward %s: error %.3g", kernel->name, text, e);

    for (size_t i = 0; i < in; i++) dx[i] = 1e30f; /* must be overwritten */
    kernel->backward_data(d, dy, w, dx, workspace);
    plait_reference_conv2d_backward_data(d, dy, w, dx_ref);
    e = error_vs(dx, dx_ref, in);
    CHECKF(e < TOLERANCE, "%s backward_data %s: error %.3g", kernel->name, text, e);

    /* dw starts non-zero: the kernel must add to it. */
    kernel->backward_weights(d, x, dy, dw, workspace);
    plait_reference_conv2d_backward_weights(d, x, dy, dw_ref);
    for (size_t i = 0; i < weights; i++) dw_ref[i] += dw_start[i];
    e = error_vs(dw, dw_ref, weights);
    CHECKF(e < TOLERANCE, "%s backward_weights %s: error %.3g", kernel->name, text, e);

    /* Gradients of L = sum(y .* dy) by central differences of the float64 forward. */
    for (size_t i = 0; i < weights; i++) dw[i] = 0;
    kernel->backward_weights(d, x, dy, dw, workspace);
    conv_loss_context context = {d, x, w, dy, y_ref};
    e = finite_difference_error(x, in, dx, conv_loss, &context, 6, 0.01f, seed + 5);
    CHECKF(e < TOLERANCE, "%s backward_data vs finite differences %s: error %.3g", kernel->name, text, e);
    e = finite_difference_error(w, weights, dw, conv_loss, &context, 6, 0.01f, seed + 6);
    CHECKF(e < TOLERANCE, "%s backward_weights vs finite differences %s: error %.3g", kernel->name, text, e);

    plait_free(workspace);
    plait_free(x);
    plait_free(w);
    plait_free(dy);
    plait_free(y);
    plait_free(dx);
    plait_free(dw);
    plait_free(dw_start);
    free(y_ref);
    free(dx_ref);
    free(dw_ref);
}

/* batch, in_h, in_w, in_channels, out_channels, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, groups */
static const plait_conv2d_desc conv_cases[] = {
    {1, 7, 7, 3, 17, 3, 3, 1, 1, 1, 1, 1},     /* odd channels, padding 1 */
    {5, 13, 13, 17, 33, 3, 3, 2, 2, 1, 1, 1},  /* stride 2 on an odd size */
    {2, 13, 13, 3, 8, 7, 7, 2, 2, 3, 3, 1},    /* stem-like 7x7 */
    {5, 7, 7, 17, 17, 5, 5, 1, 1, 2, 2, 1},    /* 5x5, padding 2 */
    {5, 13, 7, 33, 17, 1, 1, 1, 1, 0, 0, 1},   /* pointwise: no im2col */
    {3, 7, 7, 17, 35, 1, 1, 1, 1, 0, 0, 1},    /* pointwise, 35 outputs: all three GEMMs split between threads */
    {3, 16, 13, 17, 35, 1, 1, 1, 1, 0, 0, 1},  /* pointwise, 624 positions: backward-weights splits the reduction */
    {4, 13, 13, 5, 7, 3, 3, 1, 1, 1, 1, 1},    /* 3x3, 676 positions: the same for im2col */
    {5, 7, 7, 17, 33, 1, 1, 2, 2, 0, 0, 1},    /* strided 1x1 (downsample shortcut) */
    {5, 7, 7, 33, 17, 3, 3, 2, 2, 0, 0, 1},    /* padding 0, stride 2, odd size */
    {2, 13, 13, 34, 18, 3, 3, 1, 1, 1, 1, 2},  /* groups 2 */
    {2, 7, 7, 6, 4, 1, 1, 1, 1, 0, 0, 2},      /* grouped pointwise */
    {2, 13, 7, 3, 5, 3, 5, 2, 1, 1, 2, 1},     /* non-square kernel, stride and padding */
    {1, 7, 7, 3, 5, 7, 7, 1, 1, 0, 0, 1},      /* kernel as large as the input: 1x1 output */
    {5, 7, 13, 17, 6, 5, 3, 1, 1, 2, 0, 1},    /* non-square kernel, stride 1 */
    {1, 7, 7, 3, 5, 1, 1, 1, 1, 1, 1, 1},      /* 1x1 with padding: border outputs see only zeros */
    {5, 13, 13, 17, 17, 3, 3, 1, 1, 1, 1, 17}, /* depthwise */
    {1, 13, 13, 33, 33, 3, 3, 2, 2, 1, 1, 33}, /* depthwise, stride 2, odd size */
    {5, 7, 7, 17, 17, 5, 5, 1, 1, 2, 2, 17},   /* depthwise 5x5 */
    {1, 7, 13, 3, 3, 5, 3, 1, 2, 0, 1, 3},     /* depthwise non-square */
};
#define CONV_CASES (int)(sizeof conv_cases / sizeof conv_cases[0])

static void conv_im2col_blas_matches_reference(void) {
    for (int i = 0; i < CONV_CASES; i++) check_conv(&conv_cases[i], &plait_conv2d_im2col_blas, 100 + 10 * i);
}

static void conv_im2col_blas_in_image_chunks(void) {
    /* A column buffer of two images forces chunks of 2, 2 and 1 over a batch of 5. */
    for (int i = 0; i < CONV_CASES; i++) {
        const plait_conv2d_desc *d = &conv_cases[i];
        if (d->batch < 5) continue;
        size_t per_image = (size_t)plait_conv2d_out_h(d) * plait_conv2d_out_w(d) * d->kernel_h * d->kernel_w *
                           d->in_channels * sizeof(float);
        plait_conv2d_set_column_buffer_limit(2 * per_image);
        bool pointwise = d->kernel_h == 1 && d->kernel_w == 1 && d->stride_h == 1 && d->stride_w == 1 &&
                         d->pad_h == 0 && d->pad_w == 0;
        size_t bytes = plait_conv2d_im2col_blas.workspace_bytes(d);
        CHECKF(pointwise ? bytes == 0 : bytes >= 2 * per_image && bytes < 5 * per_image, "case %d workspace %zu", i,
               bytes);
        check_conv(d, &plait_conv2d_im2col_blas, 300 + 10 * i);
    }
    plait_conv2d_set_column_buffer_limit((size_t)64 << 20);
}

static void conv_depthwise_direct_matches_reference(void) {
    int checked = 0;
    for (int i = 0; i < CONV_CASES; i++) {
        const plait_conv2d_desc *d = &conv_cases[i];
        bool depthwise = d->groups == d->in_channels && d->groups == d->out_channels;
        CHECKF(plait_conv2d_depthwise_direct.supports(d) == depthwise, "case %d", i);
        CHECK(plait_conv2d_default_kernel(d) ==
              (depthwise ? &plait_conv2d_depthwise_direct : &plait_conv2d_im2col_blas));
        if (!depthwise) continue;
        check_conv(d, &plait_conv2d_depthwise_direct, 500 + 10 * i);
        checked++;
    }
    CHECK(checked == 4);
}

static void conv_backward_weights_accumulates(void) {
    const plait_conv2d_kernel *kernels[] = {&plait_conv2d_im2col_blas, &plait_conv2d_depthwise_direct};
    const plait_conv2d_desc cases[] = {{2, 7, 7, 17, 17, 3, 3, 2, 2, 1, 1, 1}, {2, 7, 7, 17, 17, 3, 3, 2, 2, 1, 1, 17}};
    for (int k = 0; k < 2; k++) {
        const plait_conv2d_desc *d = &cases[k];
        size_t in = conv_in_count(d), out = conv_out_count(d), weights = conv_weight_count(d);
        float *x = random_floats(in, 1), *dy = random_floats(out, 2), *w = random_floats(weights, 3);
        float *once = plait_alloc(weights * sizeof(float)), *twice = plait_alloc(weights * sizeof(float));
        float *dx_once = plait_alloc(in * sizeof(float)), *dx_twice = plait_alloc(in * sizeof(float));
        void *workspace = plait_alloc(kernels[k]->workspace_bytes(d));
        kernels[k]->backward_weights(d, x, dy, once, workspace);
        kernels[k]->backward_weights(d, x, dy, twice, workspace);
        kernels[k]->backward_weights(d, x, dy, twice, workspace);
        double worst = 0;
        for (size_t i = 0; i < weights; i++) {
            double e = fabs(twice[i] - 2.0 * once[i]) / (fabs(2.0 * once[i]) + 1e-3);
            if (!(e <= worst)) worst = e;
        }
        CHECKF(worst < 1e-5, "%s: two calls do not double dw (error %.3g)", kernels[k]->name, worst);
        kernels[k]->backward_data(d, dy, w, dx_once, workspace);
        for (size_t i = 0; i < in; i++) dx_twice[i] = -7.0f;
        kernels[k]->backward_data(d, dy, w, dx_twice, workspace);
        kernels[k]->backward_data(d, dy, w, dx_twice, workspace);
        CHECKF(memcmp(dx_once, dx_twice, in * sizeof(float)) == 0, "%s: dx is not overwritten", kernels[k]->name);
        plait_free(workspace);
        plait_free(x);
        plait_free(dy);
        plait_free(w);
        plait_free(once);
        plait_free(twice);
        plait_free(dx_once);
        plait_free(dx_twice);
    }
}

static void expect_invalid(plait_conv2d_desc d, const char *message) {
    plait_clear_error();
    CHECKF(plait_conv2d_validate(&d) == PLAIT_ERROR, "accepted, expected '%s'", message);
    CHECKF(strcmp(plait_last_error(), message) == 0, "got '%s', expected '%s'", plait_last_error(), message);
    CHECK(!plait_conv2d_im2col_blas.supports(&d));
}

static void conv_validate_rejects_bad_descriptions(void) {
    plait_conv2d_desc good = {2, 13, 13, 34, 18, 3, 3, 2, 1, 1, 0, 2};
    CHECK(plait_conv2d_validate(&good) == PLAIT_OK);
    CHECK(plait_conv2d_out_h(&good) == 7 && plait_conv2d_out_w(&good) == 11);
    CHECK(plait_conv2d_macs(&good) == 2.0 * 7 * 11 * 18 * 3 * 3 * 17);
    plait_conv2d_desc d = good;
    d.groups = 17;
    expect_invalid(d, "conv2d: out_channels 18 is not divisible by groups 17");
    d = good;
    d.in_channels = 33;
    expect_invalid(d, "conv2d: in_channels 33 is not divisible by groups 2");
    d = good;
    d.groups = 0;
    expect_invalid(d, "conv2d: groups 0 must be positive");
    d = good;
    d.stride_w = 0;
    expect_invalid(d, "conv2d: stride 2x0 must be positive");
    d = good;
    d.pad_h = -1;
    expect_invalid(d, "conv2d: padding -1x0 must not be negative");
    d = good;
    d.kernel_w = 15;
    expect_invalid(d, "conv2d: kernel 3x15 is larger than the padded input 15x13");
    d = good;
    d.batch = 0;
    expect_invalid(d, "conv2d: input size 0x13x13x34 (NHWC) must be positive");
    d = good;
    d.out_channels = -2;
    expect_invalid(d, "conv2d: out_channels -2 must be positive");
    d = good;
    d.kernel_h = 0;
    expect_invalid(d, "conv2d: kernel 0x3 must be positive");
    d = good;
    d.groups = 34;
    CHECK(plait_conv2d_validate(&d) == PLAIT_ERROR && !plait_conv2d_depthwise_direct.supports(&d));
}

int main(void) {
    plait_set_threads(2);
    testing_run("conv_validate_rejects_bad_descriptions", conv_validate_rejects_bad_descriptions);
    testing_run("conv_im2col_blas_matches_reference", conv_im2col_blas_matches_reference);
    testing_run("conv_im2col_blas_in_image_chunks", conv_im2col_blas_in_image_chunks);
    testing_run("conv_depthwise_direct_matches_reference", conv_depthwise_direct_matches_reference);
    testing_run("conv_backward_weights_accumulates", conv_backward_weights_accumulates);
    return testing_finish();
}
