/* Operators against float64 references, central finite differences and hand-computed values. */
#include <stdlib.h>
#include <string.h>

#include "kernels/conv2d_internal.h"
#include "kernels/reference.h"
#include "plait/ops.h"
#include "testing.h"

/* float32 kernels against float64 references: relative error, with a floor of 5% of the reference's
 * RMS so values near zero are judged on the array's scale. */
#define TOLERANCE 1e-4

static float *random_floats(size_t n, unsigned long seed) {
    float *p = plait_alloc((n ? n : 1) * sizeof(float));
    testing_fill_uniform(p, n, seed);
    return p;
}

static double *zero_doubles(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static double rms(const double *v, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i] * v[i];
    return n ? sqrt(sum / (double)n) : 0;
}

static double error_vs(const float *a, const double *b, size_t n) {
    return testing_max_rel_error(a, b, n, 0.05 * rms(b, n) + 1e-30);
}

static double dot(const double *a, const float *b, size_t n) {
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += a[i] * (double)b[i];
    return sum;
}

/* A scalar loss of the float64 reference forward, re-evaluated while one input is perturbed. */
typedef double (*loss_fn)(void *context);

/* Largest relative difference between grad and central differences of loss over `samples` random
 * coordinates of values (all when count <= samples). The step actually taken is measured after
 * rounding to float, so linear operators differentiate exactly. */
static double finite_difference_error(float *values, size_t count, const float *grad, loss_fn loss, void *context,
                                      int samples, float step, unsigned long seed) {
    double grad_rms = 0;
    for (size_t i = 0; i < count; i++) grad_rms += (double)grad[i] * grad[i];
    grad_rms = sqrt(grad_rms / (double)count);
    plait_rng rng;
    plait_rng_seed(&rng, seed);
    double worst = 0;
    size_t checks = count <= (size_t)samples ? count : (size_t)samples;
    for (size_t j = 0; j < checks; j++) {
        size_t i = count <= (size_t)samples ? j : plait_rng_below(&rng, (uint32_t)count);
        float saved = values[i];
        float up = saved + step, down = saved - step;
        values[i] = up;
        double loss_up = loss(context);
        values[i] = down;
        double loss_down = loss(context);
        values[i] = saved;
        double numeric = (loss_up - loss_down) / ((double)up - (double)down);
        double scale = fabs(numeric) > 0.05 * grad_rms ? fabs(numeric) : 0.05 * grad_rms + 1e-30;
        double e = fabs(grad[i] - numeric) / scale;
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

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
    {5, 7, 7, 17, 33, 1, 1, 2, 2, 0, 0, 1},    /* strided 1x1 (downsample shortcut) */
    {5, 7, 7, 33, 17, 3, 3, 2, 2, 0, 0, 1},    /* padding 0, stride 2, odd size */
    {2, 13, 13, 34, 18, 3, 3, 1, 1, 1, 1, 2},  /* groups 2 */
    {2, 7, 7, 6, 4, 1, 1, 1, 1, 0, 0, 2},      /* grouped pointwise */
    {2, 13, 7, 3, 5, 3, 5, 2, 1, 1, 2, 1},     /* non-square kernel, stride and padding */
    {1, 7, 7, 3, 5, 7, 7, 1, 1, 0, 0, 1},      /* kernel as large as the input: 1x1 output */
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
        size_t expected = pointwise ? 0 : 2 * per_image;
        CHECKF(plait_conv2d_im2col_blas.workspace_bytes(d) == expected, "case %d workspace %zu", i,
               plait_conv2d_im2col_blas.workspace_bytes(d));
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

/* ---- batch normalization -------------------------------------------------------------------- */

typedef struct batchnorm_loss_context {
    size_t rows;
    int channels;
    const float *x, *gamma, *beta, *r;
    double *y;
} batchnorm_loss_context;

static double batchnorm_loss(void *p) {
    batchnorm_loss_context *c = p;
    plait_reference_batchnorm_forward_train(c->rows, c->channels, c->x, c->gamma, c->beta, 1e-5, c->y, NULL, NULL);
    return dot(c->y, c->r, c->rows * (size_t)c->channels);
}

static void check_batchnorm(size_t rows, int channels, float offset, unsigned long seed) {
    size_t count = rows * (size_t)channels;
    float *x = random_floats(count, seed), *dy = random_floats(count, seed + 1);
    float *gamma = random_floats((size_t)channels, seed + 2), *beta = random_floats((size_t)channels, seed + 3);
    for (size_t i = 0; i < count; i++) x[i] = offset + x[i] * (1.0f + (float)(i % channels) / 4.0f);
    float *y = plait_alloc(count * sizeof(float)), *dx = plait_alloc(count * sizeof(float));
    float *mean = plait_alloc(channels * sizeof(float)), *invstd = plait_alloc(channels * sizeof(float));
    float *dgamma = plait_alloc(channels * sizeof(float)), *dbeta = plait_alloc(channels * sizeof(float));
    double *y_ref = zero_doubles(count), *mean_ref = zero_doubles(channels), *invstd_ref = zero_doubles(channels);
    double *dx_ref = zero_doubles(count), *dgamma_ref = zero_doubles(channels), *dbeta_ref = zero_doubles(channels);

    plait_batchnorm_forward_train(rows, channels, x, gamma, beta, 1e-5f, y, mean, invstd);
    plait_reference_batchnorm_forward_train(rows, channels, x, gamma, beta, 1e-5, y_ref, mean_ref, invstd_ref);
    double e = error_vs(y, y_ref, count);
    CHECKF(e < TOLERANCE, "rows %zu channels %d offset %g: forward error %.3g", rows, channels, offset, e);
    e = testing_max_rel_error(mean, mean_ref, channels, 1e-3);
    CHECKF(e < 1e-5, "mean error %.3g", e);
    e = testing_max_rel_error(invstd, invstd_ref, channels, 1e-3);
    CHECKF(e < TOLERANCE, "invstd error %.3g", e);

    for (int c = 0; c < channels; c++) dgamma[c] = dbeta[c] = 1.0f; /* accumulated into */
    plait_batchnorm_backward(rows, channels, x, dy, gamma, mean, invstd, dx, dgamma, dbeta);
    plait_reference_batchnorm_backward(rows, channels, x, dy, gamma, 1e-5, dx_ref, dgamma_ref, dbeta_ref);
    /* backward sees the mean rounded to float32, off by up to ulp(offset)/2 relative to the spread */
    double tolerance = offset > 100.0f ? 1e-3 : TOLERANCE;
    e = error_vs(dx, dx_ref, count);
    CHECKF(e < tolerance, "rows %zu channels %d: dx error %.3g", rows, channels, e);
    for (int c = 0; c < channels; c++) {
        dgamma_ref[c] += 1.0;
        dbeta_ref[c] += 1.0;
    }
    e = error_vs(dgamma, dgamma_ref, channels);
    CHECKF(e < tolerance, "dgamma error %.3g", e);
    e = error_vs(dbeta, dbeta_ref, channels);
    CHECKF(e < TOLERANCE, "dbeta error %.3g", e);

    if (offset == 0.0f) {
        for (int c = 0; c < channels; c++) dgamma[c] = dbeta[c] = 0.0f;
        plait_batchnorm_backward(rows, channels, x, dy, gamma, mean, invstd, dx, dgamma, dbeta);
        batchnorm_loss_context context = {rows, channels, x, gamma, beta, dy, y_ref};
        e = finite_difference_error(x, count, dx, batchnorm_loss, &context, 12, 1e-3f, seed + 4);
        CHECKF(e < 1e-3, "dx vs finite differences: error %.3g", e);
        e = finite_difference_error(gamma, channels, dgamma, batchnorm_loss, &context, 8, 1e-3f, seed + 5);
        CHECKF(e < TOLERANCE, "dgamma vs finite differences: error %.3g", e);
        e = finite_difference_error(beta, channels, dbeta, batchnorm_loss, &context, 8, 1e-3f, seed + 6);
        CHECKF(e < TOLERANCE, "dbeta vs finite differences: error %.3g", e);
    }
    plait_free(x);
    plait_free(dy);
    plait_free(gamma);
    plait_free(beta);
    plait_free(y);
    plait_free(dx);
    plait_free(mean);
    plait_free(invstd);
    plait_free(dgamma);
    plait_free(dbeta);
    free(y_ref);
    free(mean_ref);
    free(invstd_ref);
    free(dx_ref);
    free(dgamma_ref);
    free(dbeta_ref);
}

static void batchnorm_train_matches_reference(void) {
    check_batchnorm(5 * 7 * 7, 17, 0.0f, 700);
    check_batchnorm(1 * 13 * 13, 3, 0.0f, 710);
    check_batchnorm(5 * 13 * 13, 64, 0.0f, 720); /* large enough to run in parallel */
    check_batchnorm(2 * 7 * 7, 33, 1000.0f, 730); /* mean far from zero: variance must stay accurate */
    check_batchnorm(5 * 7 * 7, 17, 100.0f, 740);
}

static void batchnorm_eval_matches_formula(void) {
    float x[2] = {3.0f, -1.0f}, gamma[2] = {2.0f, 0.5f}, beta[2] = {0.5f, 1.0f};
    float mean[2] = {1.0f, 1.0f}, var[2] = {4.0f, 0.25f}, y[2];
    plait_batchnorm_forward_eval(1, 2, x, gamma, beta, mean, var, 0.0f, y);
    CHECKF(fabsf(y[0] - 2.5f) < 1e-6f, "%g", y[0]); /* 2 * (3-1)/2 + 0.5 */
    CHECKF(fabsf(y[1] - -1.0f) < 1e-6f, "%g", y[1]); /* 0.5 * (-1-1)/0.5 + 1 */

    size_t rows = 3 * 13 * 13;
    int channels = 17;
    size_t count = rows * channels;
    float *input = random_floats(count, 800), *g = random_floats(channels, 801), *b = random_floats(channels, 802);
    float *m = random_floats(channels, 803), *v = random_floats(channels, 804), *out = plait_alloc(count * 4);
    for (int c = 0; c < channels; c++) v[c] = fabsf(v[c]) + 0.1f;
    double *ref = zero_doubles(count);
    plait_batchnorm_forward_eval(rows, channels, input, g, b, m, v, 1e-5f, out);
    plait_reference_batchnorm_forward_eval(rows, channels, input, g, b, m, v, 1e-5, ref);
    double e = error_vs(out, ref, count);
    CHECKF(e < TOLERANCE, "eval error %.3g", e);
    plait_free(input);
    plait_free(g);
    plait_free(b);
    plait_free(m);
    plait_free(v);
    plait_free(out);
    free(ref);
}

/* ---- element-wise ----------------------------------------------------------------------------- */

typedef struct activation_loss_context {
    size_t count;
    const float *x, *r;
    double *y;
    void (*reference)(size_t, const float *, double *);
} activation_loss_context;

static double activation_loss(void *p) {
    activation_loss_context *c = p;
    c->reference(c->count, c->x, c->y);
    return dot(c->y, c->r, c->count);
}

/* Values in [-scale, scale] kept 0.01 away from the kinks at 0 and 6, so differences never cross one. */
static float *activation_inputs(size_t n, float scale, unsigned long seed) {
    float *x = random_floats(n, seed);
    for (size_t i = 0; i < n; i++) {
        x[i] *= scale;
        if (fabsf(x[i]) < 0.01f) x[i] = 0.02f;
        if (fabsf(x[i] - 6.0f) < 0.01f) x[i] = 6.02f;
    }
    return x;
}

static void check_activation(const char *name, void (*forward)(size_t, const float *, float *),
                             void (*backward)(size_t, const float *, const float *, float *),
                             void (*reference)(size_t, const float *, double *), size_t count, unsigned long seed) {
    float *x = activation_inputs(count, 8.0f, seed), *dy = random_floats(count, seed + 1);
    float *y = plait_alloc(count * 4), *dx = plait_alloc(count * 4), *in_place = plait_alloc(count * 4);
    double *y_ref = zero_doubles(count);
    forward(count, x, y);
    reference(count, x, y_ref);
    CHECKF(testing_max_rel_error(y, y_ref, count, 1e-6) == 0.0, "%s forward differs", name);
    backward(count, y, dy, dx);
    activation_loss_context context = {count, x, dy, y_ref, reference};
    double e = finite_difference_error(x, count, dx, activation_loss, &context, 64, 1e-3f, seed + 2);
    CHECKF(e < TOLERANCE, "%s backward vs finite differences: error %.3g", name, e);
    memcpy(in_place, dy, count * 4);
    backward(count, y, in_place, in_place); /* dx may alias dy */
    CHECKF(memcmp(in_place, dx, count * 4) == 0, "%s backward in place differs", name);
    plait_free(x);
    plait_free(dy);
    plait_free(y);
    plait_free(dx);
    plait_free(in_place);
    free(y_ref);
}

static void activations_match_reference(void) {
    check_activation("relu", plait_relu_forward, plait_relu_backward, plait_reference_relu_forward, 1000, 900);
    check_activation("relu", plait_relu_forward, plait_relu_backward, plait_reference_relu_forward, 100003, 910);
    check_activation("relu6", plait_relu6_forward, plait_relu6_backward, plait_reference_relu6_forward, 1000, 920);
    check_activation("relu6", plait_relu6_forward, plait_relu6_backward, plait_reference_relu6_forward, 100003, 930);
    float edge[4] = {0.0f, 6.0f, -0.0f, 6.5f}, out[4], grad[4] = {1, 1, 1, 1}, back[4];
    plait_relu6_forward(4, edge, out);
    CHECK(out[0] == 0.0f && out[1] == 6.0f && out[2] == 0.0f && out[3] == 6.0f);
    plait_relu6_backward(4, out, grad, back); /* PyTorch passes no gradient at exactly 0 or 6 */
    CHECK(back[0] == 0.0f && back[1] == 0.0f && back[2] == 0.0f && back[3] == 0.0f);
}

static void add_is_elementwise_and_may_alias(void) {
    size_t n = 70001;
    float *a = random_floats(n, 1000), *b = random_floats(n, 1001), *y = plait_alloc(n * 4);
    plait_add(n, a, b, y);
    bool exact = true;
    for (size_t i = 0; i < n; i++) exact = exact && y[i] == a[i] + b[i];
    CHECK(exact);
    plait_add(n, a, b, a);
    CHECK(memcmp(a, y, n * 4) == 0);
    plait_free(a);
    plait_free(b);
    plait_free(y);
}

int main(void) {
    plait_set_threads(2);
    testing_run("conv_validate_rejects_bad_descriptions", conv_validate_rejects_bad_descriptions);
    testing_run("conv_im2col_blas_matches_reference", conv_im2col_blas_matches_reference);
    testing_run("conv_im2col_blas_in_image_chunks", conv_im2col_blas_in_image_chunks);
    testing_run("conv_depthwise_direct_matches_reference", conv_depthwise_direct_matches_reference);
    testing_run("conv_backward_weights_accumulates", conv_backward_weights_accumulates);
    testing_run("batchnorm_train_matches_reference", batchnorm_train_matches_reference);
    testing_run("batchnorm_eval_matches_formula", batchnorm_eval_matches_formula);
    testing_run("activations_match_reference", activations_match_reference);
    testing_run("add_is_elementwise_and_may_alias", add_is_elementwise_and_may_alias);
    return testing_finish();
}
