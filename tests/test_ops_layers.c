/* Batch norm, activations, pooling, linear, loss, SGD and LR schedules against float64 references,
 * finite differences and hand-computed values. */
#include <stdlib.h>
#include <string.h>

#include "ops_testing.h"

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

/* ---- pooling ---------------------------------------------------------------------------------- */

typedef struct maxpool_loss_context {
    const plait_pool2d_desc *d;
    const float *x, *r;
    double *y;
} maxpool_loss_context;

static double maxpool_loss(void *p) {
    maxpool_loss_context *c = p;
    plait_reference_maxpool_forward(c->d, c->x, c->y, NULL);
    size_t out = (size_t)c->d->batch * plait_pool2d_out_h(c->d) * plait_pool2d_out_w(c->d) * c->d->channels;
    return dot(c->y, c->r, out);
}

static void check_maxpool(plait_pool2d_desc d, unsigned long seed) {
    size_t in = (size_t)d.batch * d.in_h * d.in_w * d.channels;
    size_t out = (size_t)d.batch * plait_pool2d_out_h(&d) * plait_pool2d_out_w(&d) * d.channels;
    /* Distinct values 0.01 apart (a shuffled grid), so no small step changes which input wins. */
    float *x = plait_alloc(in * 4), *dy = random_floats(out, seed + 1), *y = plait_alloc(out * 4);
    float *dx = plait_alloc(in * 4);
    int32_t *argmax = plait_alloc(out * 4), *argmax_ref = plait_alloc(out * 4);
    plait_rng rng;
    plait_rng_seed(&rng, seed);
    for (size_t i = 0; i < in; i++) x[i] = 0.01f * (float)i - 0.005f * (float)in;
    for (size_t i = in - 1; i > 0; i--) {
        size_t j = plait_rng_below(&rng, (uint32_t)(i + 1));
        float t = x[i];
        x[i] = x[j];
        x[j] = t;
    }
    double *y_ref = zero_doubles(out);
    plait_maxpool_forward(&d, x, y, argmax);
    plait_reference_maxpool_forward(&d, x, y_ref, argmax_ref);
    CHECKF(testing_max_rel_error(y, y_ref, out, 1e-6) == 0.0, "maxpool forward differs (kernel %d pad %d)", d.kernel,
           d.pad);
    CHECKF(memcmp(argmax, argmax_ref, out * 4) == 0, "maxpool argmax differs");
    for (size_t i = 0; i < in; i++) dx[i] = 1e30f;
    plait_maxpool_backward(&d, dy, argmax, dx);
    maxpool_loss_context context = {&d, x, dy, y_ref};
    double e = finite_difference_error(x, in, dx, maxpool_loss, &context, 40, 1e-3f, seed + 2);
    CHECKF(e < TOLERANCE, "maxpool backward vs finite differences: error %.3g", e);
    plait_free(x);
    plait_free(dy);
    plait_free(y);
    plait_free(dx);
    plait_free(argmax);
    plait_free(argmax_ref);
    free(y_ref);
}

static void maxpool_matches_reference(void) {
    check_maxpool((plait_pool2d_desc){5, 13, 13, 17, 3, 2, 1}, 1100); /* ResNet stem pool on an odd size */
    check_maxpool((plait_pool2d_desc){1, 7, 7, 3, 2, 2, 0}, 1110);
    check_maxpool((plait_pool2d_desc){2, 7, 13, 33, 5, 1, 2}, 1120);
    /* Padding is -infinity, not zero: an all-negative input keeps its negative maximum at the border. */
    plait_pool2d_desc d = {1, 2, 2, 1, 3, 2, 1};
    float x[4] = {-4, -3, -2, -1}, y[1];
    int32_t argmax[1];
    CHECK(plait_pool2d_out_h(&d) == 1 && plait_pool2d_out_w(&d) == 1);
    plait_maxpool_forward(&d, x, y, argmax);
    CHECK(y[0] == -1.0f && argmax[0] == 3);
    /* Ties keep the first maximum, as PyTorch. */
    float ties[4] = {2, 2, 2, 2};
    plait_maxpool_forward(&d, ties, y, argmax);
    CHECK(y[0] == 2.0f && argmax[0] == 0);
}

typedef struct avgpool_loss_context {
    int batch, hw, channels;
    const float *x, *r;
    double *y;
} avgpool_loss_context;

static double avgpool_loss(void *p) {
    avgpool_loss_context *c = p;
    plait_reference_global_avgpool_forward(c->batch, c->hw, c->channels, c->x, c->y);
    return dot(c->y, c->r, (size_t)c->batch * c->channels);
}

static void global_avgpool_matches_reference(void) {
    int batch = 5, hw = 7 * 7, channels = 33;
    size_t in = (size_t)batch * hw * channels, out = (size_t)batch * channels;
    float *x = random_floats(in, 1200), *y = plait_alloc(out * 4), *dy = random_floats(out, 1201);
    float *dx = plait_alloc(in * 4);
    double *y_ref = zero_doubles(out);
    plait_global_avgpool_forward(batch, hw, channels, x, y);
    plait_reference_global_avgpool_forward(batch, hw, channels, x, y_ref);
    double e = error_vs(y, y_ref, out);
    CHECKF(e < TOLERANCE, "forward error %.3g", e);
    plait_global_avgpool_backward(batch, hw, channels, dy, dx);
    avgpool_loss_context context = {batch, hw, channels, x, dy, y_ref};
    e = finite_difference_error(x, in, dx, avgpool_loss, &context, 24, 0.01f, 1202);
    CHECKF(e < TOLERANCE, "backward vs finite differences: error %.3g", e);
    CHECK(dx[in - 1] == dy[out - 1] / 49.0f);
    plait_free(x);
    plait_free(y);
    plait_free(dy);
    plait_free(dx);
    free(y_ref);
}

/* ---- linear ------------------------------------------------------------------------------------ */

typedef struct linear_loss_context {
    int batch, in, out;
    const float *x, *w, *b, *r;
    double *y;
} linear_loss_context;

static double linear_loss(void *p) {
    linear_loss_context *c = p;
    plait_reference_linear_forward(c->batch, c->in, c->out, c->x, c->w, c->b, c->y);
    return dot(c->y, c->r, (size_t)c->batch * c->out);
}

static void linear_matches_reference(void) {
    const int shapes[][3] = {{5, 33, 17}, {1, 17, 3}, {7, 512, 10}};
    for (int k = 0; k < 3; k++) {
        int batch = shapes[k][0], in = shapes[k][1], out = shapes[k][2];
        size_t xs = (size_t)batch * in, ws = (size_t)out * in, ys = (size_t)batch * out;
        unsigned long seed = 1300 + 10 * k;
        float *x = random_floats(xs, seed), *w = random_floats(ws, seed + 1), *b = random_floats(out, seed + 2);
        float *dy = random_floats(ys, seed + 3), *y = plait_alloc(ys * 4), *dx = plait_alloc(xs * 4);
        float *dw = plait_alloc(ws * 4), *db = plait_alloc(out * 4);
        double *y_ref = zero_doubles(ys);
        plait_linear_forward(batch, in, out, x, w, b, y);
        plait_reference_linear_forward(batch, in, out, x, w, b, y_ref);
        double e = error_vs(y, y_ref, ys);
        CHECKF(e < TOLERANCE, "%dx%d->%d forward error %.3g", batch, in, out, e);
        for (size_t i = 0; i < xs; i++) dx[i] = 1e30f;
        plait_linear_backward(batch, in, out, x, w, dy, dx, dw, db);
        linear_loss_context context = {batch, in, out, x, w, b, dy, y_ref};
        e = finite_difference_error(x, xs, dx, linear_loss, &context, 12, 0.01f, seed + 4);
        CHECKF(e < TOLERANCE, "dx vs finite differences: error %.3g", e);
        e = finite_difference_error(w, ws, dw, linear_loss, &context, 12, 0.01f, seed + 5);
        CHECKF(e < TOLERANCE, "dw vs finite differences: error %.3g", e);
        e = finite_difference_error(b, (size_t)out, db, linear_loss, &context, 12, 0.01f, seed + 6);
        CHECKF(e < TOLERANCE, "db vs finite differences: error %.3g", e);
        /* dw and db accumulate; dx NULL skips the input gradient */
        float first_dw = dw[ws - 1], first_db = db[out - 1];
        plait_linear_backward(batch, in, out, x, w, dy, NULL, dw, db);
        CHECKF(fabsf(dw[ws - 1] - 2 * first_dw) <= 1e-5f * (fabsf(first_dw) + 1), "dw %g vs %g", dw[ws - 1], first_dw);
        CHECKF(fabsf(db[out - 1] - 2 * first_db) <= 1e-5f * (fabsf(first_db) + 1), "db %g vs %g", db[out - 1],
               first_db);
        plait_free(x);
        plait_free(w);
        plait_free(b);
        plait_free(dy);
        plait_free(y);
        plait_free(dx);
        plait_free(dw);
        plait_free(db);
        free(y_ref);
    }
}

/* ---- loss -------------------------------------------------------------------------------------- */

typedef struct loss_context {
    int batch, classes;
    const float *logits;
    const int32_t *labels;
    double smoothing;
} loss_context;

static double cross_entropy_loss(void *p) {
    loss_context *c = p;
    return plait_reference_softmax_cross_entropy(c->batch, c->classes, c->logits, c->labels, c->smoothing, NULL);
}

static void cross_entropy_matches_reference(void) {
    const float smoothings[] = {0.0f, 0.1f, 0.3f};
    for (int k = 0; k < 3; k++) {
        int batch = 5 + 60 * (k == 2), classes = k == 0 ? 10 : 17; /* k == 2 runs the parallel path */
        size_t count = (size_t)batch * classes;
        float *logits = random_floats(count, 1400 + k), *dlogits = plait_alloc(count * 4);
        int32_t *labels = plait_alloc((size_t)batch * 4);
        for (size_t i = 0; i < count; i++) logits[i] *= 4.0f;
        int expected_correct = 0;
        for (int n = 0; n < batch; n++) {
            labels[n] = (n * 7) % classes;
            if (n % 2 == 0) logits[(size_t)n * classes + labels[n]] = 10.0f; /* every other sample right */
            int best = 0;
            for (int j = 1; j < classes; j++)
                if (logits[(size_t)n * classes + j] > logits[(size_t)n * classes + best]) best = j;
            expected_correct += best == labels[n];
        }
        double *dlogits_ref = zero_doubles(count);
        int correct = -1;
        float loss = plait_softmax_cross_entropy(batch, classes, logits, labels, smoothings[k], dlogits, &correct);
        double loss_ref =
            plait_reference_softmax_cross_entropy(batch, classes, logits, labels, smoothings[k], dlogits_ref);
        CHECKF(fabs(loss - loss_ref) <= 1e-6 * fabs(loss_ref), "smoothing %g: loss %.9g vs %.9g", smoothings[k],
               loss, loss_ref);
        double e = error_vs(dlogits, dlogits_ref, count);
        CHECKF(e < TOLERANCE, "smoothing %g: dlogits error %.3g", smoothings[k], e);
        CHECKF(correct == expected_correct, "correct %d, expected %d", correct, expected_correct);
        loss_context context = {batch, classes, logits, labels, smoothings[k]};
        e = finite_difference_error(logits, count, dlogits, cross_entropy_loss, &context, 20, 1e-3f, 1410 + k);
        CHECKF(e < TOLERANCE, "smoothing %g: dlogits vs finite differences: error %.3g", smoothings[k], e);
        CHECK(plait_softmax_cross_entropy(batch, classes, logits, labels, smoothings[k], NULL, NULL) == loss);
        plait_free(logits);
        plait_free(dlogits);
        plait_free(labels);
        free(dlogits_ref);
    }
    /* Uniform logits: loss is log(classes) whatever the smoothing. With logits (0, log 3) and label 0,
     * p = (1/4, 3/4); smoothing 0.2 gives target (0.9, 0.1): loss = -0.9 log(1/4) - 0.1 log(3/4). */
    float zeros[10] = {0}, pair[2] = {0.0f, logf(3.0f)};
    int32_t label = 3, first = 0;
    CHECK(fabsf(plait_softmax_cross_entropy(1, 10, zeros, &label, 0.25f, NULL, NULL) - logf(10.0f)) < 1e-6f);
    float grad[2];
    float loss = plait_softmax_cross_entropy(1, 2, pair, &first, 0.2f, grad, NULL);
    CHECKF(fabsf(loss - (float)(-0.9 * log(0.25) - 0.1 * log(0.75))) < 1e-6f, "loss %.9g", loss);
    CHECKF(fabsf(grad[0] - (0.25f - 0.9f)) < 1e-6f && fabsf(grad[1] - (0.75f - 0.1f)) < 1e-6f, "grad %g %g", grad[0],
           grad[1]);
    /* A label outside [0, classes) is a caller bug: the loss turns NaN instead of reading out of bounds. */
    int32_t bad = 2;
    CHECK(isnan(plait_softmax_cross_entropy(1, 2, pair, &bad, 0.0f, grad, NULL)));
    CHECK(grad[0] == 0.0f && grad[1] == 0.0f);
}

/* ---- optimizer and schedules ------------------------------------------------------------------ */

static void sgd_matches_hand_computed_steps(void) {
    /* Two parameters (1, -2), three steps of gradients, lr 0.1; expected values worked by hand from
     * PyTorch's update rule (see ops.h). */
    const float grads[3][2] = {{0.5f, 0.1f}, {-0.25f, 0.3f}, {1.0f, -0.2f}};
    const struct {
        float momentum, weight_decay;
        bool nesterov;
        double expected[3][2];
    } cases[] = {
        {0.0f, 0.0f, false, {{0.95, -2.01}, {0.975, -2.04}, {0.875, -2.02}}},
        {0.9f, 0.0f, false, {{0.95, -2.01}, {0.93, -2.049}, {0.812, -2.0641}}},
        {0.9f, 0.0f, true, {{0.905, -2.019}, {0.912, -2.0841}, {0.7058, -2.07769}}},
        {0.9f, 0.01f, false, {{0.949, -2.008}, {0.927151, -2.043192}, {0.806559749, -2.05282161}}},
        {0.9f, 0.01f, true, {{0.9031, -2.0152}, {0.90757411, -2.07485112}, {0.698189208, -2.06140859}}},
    };
    for (int k = 0; k < 5; k++) {
        float param[2] = {1.0f, -2.0f}, buffer[2] = {0, 0};
        for (int step = 0; step < 3; step++) {
            plait_sgd_step(2, param, grads[step], buffer, 0.1f, cases[k].momentum, cases[k].weight_decay,
                           cases[k].nesterov);
            for (int i = 0; i < 2; i++)
                CHECKF(fabs(param[i] - cases[k].expected[step][i]) < 1e-6, "case %d step %d param %d: %.9g vs %.9g",
                       k, step, i, param[i], cases[k].expected[step][i]);
        }
    }
    /* A large array (parallel path) agrees with the small one element by element. */
    size_t n = 100003;
    float *p = random_floats(n, 1500), *g = random_floats(n, 1501), *buf = plait_alloc(n * 4);
    float p0 = p[n - 1], g0 = g[n - 1];
    plait_sgd_step(n, p, g, buf, 0.1f, 0.9f, 0.01f, true);
    float single = p0, single_buf = 0;
    plait_sgd_step(1, &single, &g0, &single_buf, 0.1f, 0.9f, 0.01f, true);
    CHECK(p[n - 1] == single && buf[n - 1] == single_buf);
    plait_free(p);
    plait_free(g);
    plait_free(buf);
}

static bool near(float a, double b) { return fabs(a - b) <= 1e-6 * fabs(b) + 1e-12; }

static void lr_schedules_match_pytorch_formulas(void) {
    plait_lr_schedule s = {.kind = PLAIT_LR_CONSTANT, .base_lr = 0.1f, .total_steps = 100};
    CHECK(near(plait_lr_at(&s, 0), 0.1) && near(plait_lr_at(&s, 99), 0.1));

    /* StepLR(step_size 30, gamma 0.1) */
    s = (plait_lr_schedule){.kind = PLAIT_LR_STEP, .base_lr = 0.1f, .total_steps = 90, .step_size = 30, .gamma = 0.1f};
    CHECK(near(plait_lr_at(&s, 0), 0.1) && near(plait_lr_at(&s, 29), 0.1));
    CHECK(near(plait_lr_at(&s, 30), 0.01) && near(plait_lr_at(&s, 65), 0.001));

    /* CosineAnnealingLR(T_max 100, eta_min 0.001): min + (base-min)(1 + cos(pi t/100))/2 */
    s = (plait_lr_schedule){.kind = PLAIT_LR_COSINE, .base_lr = 0.1f, .total_steps = 100, .min_lr = 0.001f};
    CHECK(near(plait_lr_at(&s, 0), 0.1));
    CHECKF(near(plait_lr_at(&s, 25), 0.0855017857), "%.9g", plait_lr_at(&s, 25));
    CHECK(near(plait_lr_at(&s, 50), 0.0505));
    CHECK(near(plait_lr_at(&s, 100), 0.001) && near(plait_lr_at(&s, 150), 0.001));

    /* Linear warm-up over 5 steps scales the schedule by (step+1)/5. */
    s.warmup_steps = 5;
    CHECK(near(plait_lr_at(&s, 0), 0.02));
    CHECKF(near(plait_lr_at(&s, 2), 0.0599413938), "%.9g", plait_lr_at(&s, 2));
    CHECKF(near(plait_lr_at(&s, 4), 0.0996096777), "%.9g", plait_lr_at(&s, 4));
    CHECK(near(plait_lr_at(&s, 50), 0.0505));

    /* OneCycleLR(max_lr 0.1, total_steps 1000, pct_start 0.3, div_factor 25, final_div_factor 1e4):
     * starts at 0.1/25 = 0.004, peaks at step 0.3*1000 - 1 = 299, ends at 0.004/1e4 = 4e-7 on step 999;
     * both phases cosine: end + (start-end)/2 (cos(pi pct) + 1). */
    s = (plait_lr_schedule){.kind = PLAIT_LR_ONECYCLE, .base_lr = 0.1f, .total_steps = 1000, .pct_start = 0.3f,
                            .div_factor = 25.0f, .final_div_factor = 1e4f, .warmup_steps = 50};
    CHECK(near(plait_lr_at(&s, 0), 0.004));
    CHECKF(near(plait_lr_at(&s, 150), 0.0522521668), "%.9g", plait_lr_at(&s, 150));
    CHECK(near(plait_lr_at(&s, 299), 0.1));
    CHECKF(near(plait_lr_at(&s, 649), 0.0500002), "%.9g", plait_lr_at(&s, 649));
    CHECKF(near(plait_lr_at(&s, 800), 0.0186507073), "%.9g", plait_lr_at(&s, 800));
    CHECKF(near(plait_lr_at(&s, 999), 4e-7), "%.9g", plait_lr_at(&s, 999));
    CHECK(near(plait_lr_at(&s, 1200), 4e-7));

    /* LinearLR(start_factor 1, end_factor 0, total_iters 200) after 20 warm-up steps: 0.1 (1 - t/200). */
    s = (plait_lr_schedule){.kind = PLAIT_LR_LINEAR, .base_lr = 0.1f, .total_steps = 200, .warmup_steps = 20};
    CHECKF(near(plait_lr_at(&s, 0), 0.1 * (1 - 0 / 200.0) * 1 / 20.0), "%.9g", plait_lr_at(&s, 0));
    CHECKF(near(plait_lr_at(&s, 9), 0.1 * (1 - 9 / 200.0) * 10 / 20.0), "%.9g", plait_lr_at(&s, 9));
    CHECK(near(plait_lr_at(&s, 20), 0.09) && near(plait_lr_at(&s, 150), 0.025));
    CHECK(near(plait_lr_at(&s, 200), 0) && near(plait_lr_at(&s, 250), 0));
    s.min_lr = 0.01f;
    CHECK(near(plait_lr_at(&s, 100), 0.055) && near(plait_lr_at(&s, 300), 0.01));

    plait_lr_kind kind = PLAIT_LR_CONSTANT;
    CHECK(plait_lr_kind_parse("onecycle", &kind) == PLAIT_OK && kind == PLAIT_LR_ONECYCLE);
    CHECK(plait_lr_kind_parse("cosine", &kind) == PLAIT_OK && kind == PLAIT_LR_COSINE);
    CHECK(plait_lr_kind_parse("step", &kind) == PLAIT_OK && kind == PLAIT_LR_STEP);
    CHECK(plait_lr_kind_parse("constant", &kind) == PLAIT_OK && kind == PLAIT_LR_CONSTANT);
    CHECK(plait_lr_kind_parse("linear", &kind) == PLAIT_OK && kind == PLAIT_LR_LINEAR);
    CHECK(plait_lr_kind_parse("triangle", &kind) == PLAIT_ERROR);
    CHECKF(strcmp(plait_last_error(),
                  "unknown learning-rate schedule 'triangle' (expected constant, step, cosine, linear or onecycle)") == 0,
           "%s", plait_last_error());
}

int main(void) {
    plait_set_threads(2);
    testing_run("batchnorm_train_matches_reference", batchnorm_train_matches_reference);
    testing_run("batchnorm_eval_matches_formula", batchnorm_eval_matches_formula);
    testing_run("activations_match_reference", activations_match_reference);
    testing_run("add_is_elementwise_and_may_alias", add_is_elementwise_and_may_alias);
    testing_run("maxpool_matches_reference", maxpool_matches_reference);
    testing_run("global_avgpool_matches_reference", global_avgpool_matches_reference);
    testing_run("linear_matches_reference", linear_matches_reference);
    testing_run("cross_entropy_matches_reference", cross_entropy_matches_reference);
    testing_run("sgd_matches_hand_computed_steps", sgd_matches_hand_computed_steps);
    testing_run("lr_schedules_match_pytorch_formulas", lr_schedules_match_pytorch_formulas);
    return testing_finish();
}
