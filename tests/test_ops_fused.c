/* Batch normalization fused with the activation (ReLU, ReLU6) and residual add after it, and the ReLU
 * gradient into a residual sum: identical bits to the unfused composition, against float64 references
 * and finite differences, on odd shapes, with every instruction set's row loops the CPU runs. */
#include <stdlib.h>
#include <string.h>

#include "kernels/batchnorm_gate.h"
#include "kernels/fused.h"
#include "ops_testing.h"

typedef struct shape_case {
    size_t rows;
    int channels;
} shape_case;

/* odd sizes; 845 x 64 runs in parallel; 300 channels cross the masked loop's 256-channel chunks */
static const shape_case shapes[] = {{245, 17}, {169, 3}, {845, 64}, {40, 300}, {3, 1}};
#define SHAPE_COUNT (sizeof shapes / sizeof shapes[0])

static bool same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

/* float64 reference of y = bn(x) (+ residual) (activation), training statistics or running ones. */
static void reference_forward(size_t rows, int channels, const float *x, const float *gamma, const float *beta,
                              const float *running_mean, const float *running_var, const float *residual,
                              plait_activation activation, double *y) {
    if (running_mean)
        plait_reference_batchnorm_forward_eval(rows, channels, x, gamma, beta, running_mean, running_var, 1e-5, y);
    else
        plait_reference_batchnorm_forward_train(rows, channels, x, gamma, beta, 1e-5, y, NULL, NULL);
    for (size_t i = 0; i < rows * (size_t)channels; i++) {
        if (residual) y[i] += residual[i];
        if (activation != PLAIT_ACTIVATION_NONE && y[i] < 0) y[i] = 0;
        if (activation == PLAIT_ACTIVATION_RELU6 && y[i] > 6) y[i] = 6;
    }
}

/* The unfused activation, in place. */
static void activate(plait_activation activation, size_t count, float *y) {
    if (activation == PLAIT_ACTIVATION_RELU) plait_relu_forward(count, y, y);
    if (activation == PLAIT_ACTIVATION_RELU6) plait_relu6_forward(count, y, y);
}

/* For ReLU6, gamma and beta that spread the outputs over both ends: below 0, inside, above 6. */
static void spread_for(plait_activation activation, size_t C, float *gamma, float *beta) {
    if (activation != PLAIT_ACTIVATION_RELU6) return;
    for (size_t c = 0; c < C; c++) {
        gamma[c] = 4.0f * gamma[c];
        beta[c] = 3.0f + 3.0f * beta[c];
    }
}

static void check_forward(size_t rows, int channels, bool with_residual, plait_activation activation,
                          unsigned long seed) {
    size_t count = rows * (size_t)channels, C = (size_t)channels;
    float *x = random_floats(count, seed), *residual = random_floats(count, seed + 1);
    float *gamma = random_floats(C, seed + 2), *beta = random_floats(C, seed + 3);
    float *running_mean = random_floats(C, seed + 4), *running_var = random_floats(C, seed + 5);
    for (size_t c = 0; c < C; c++) running_var[c] = 0.5f + running_var[c] * running_var[c];
    for (size_t i = 0; i < count; i++) x[i] = 3.0f + 2.0f * x[i];
    spread_for(activation, C, gamma, beta);
    const float *r = with_residual ? residual : NULL;
    float *unfused = plait_alloc(count * 4), *fused = plait_alloc(count * 4), *aliased = plait_alloc(count * 4);
    float *stats = plait_alloc(4 * C * 4);
    double *reference = zero_doubles(count);

    for (int eval = 0; eval < 2; eval++) {
        if (eval) {
            plait_batchnorm_forward_eval(rows, channels, x, gamma, beta, running_mean, running_var, 1e-5f, unfused);
        } else {
            plait_batchnorm_forward_train(rows, channels, x, gamma, beta, 1e-5f, unfused, stats, stats + C);
        }
        if (r) plait_add(count, unfused, r, unfused);
        activate(activation, count, unfused);
        memcpy(aliased, residual, count * 4);
        if (eval) {
            plait_batchnorm_forward_eval_fused(rows, channels, x, gamma, beta, running_mean, running_var, 1e-5f, r,
                                               activation, fused);
            if (r)
                plait_batchnorm_forward_eval_fused(rows, channels, x, gamma, beta, running_mean, running_var, 1e-5f,
                                                   aliased, activation, aliased);
        } else {
            plait_batchnorm_forward_train_fused(rows, channels, x, gamma, beta, 1e-5f, r, activation, fused,
                                                stats + 2 * C, stats + 3 * C);
            CHECK(same_bits(stats, stats + 2 * C, 2 * C));
            if (r)
                plait_batchnorm_forward_train_fused(rows, channels, x, gamma, beta, 1e-5f, aliased, activation,
                                                    aliased, stats + 2 * C, stats + 3 * C);
        }
        CHECKF(same_bits(unfused, fused, count), "%s rows %zu channels %d residual %d activation %d: fused differs",
               eval ? "eval" : "train", rows, channels, with_residual, (int)activation);
        if (r) CHECKF(same_bits(aliased, fused, count), "y aliasing residual differs");
        reference_forward(rows, channels, x, gamma, beta, eval ? running_mean : NULL, running_var, r, activation,
                          reference);
        double e = error_vs(fused, reference, count);
        CHECKF(e < TOLERANCE, "%s rows %zu channels %d: error %.3g against float64", eval ? "eval" : "train", rows,
               channels, e);
    }
    plait_free(x);
    plait_free(residual);
    plait_free(gamma);
    plait_free(beta);
    plait_free(running_mean);
    plait_free(running_var);
    plait_free(unfused);
    plait_free(fused);
    plait_free(aliased);
    plait_free(stats);
    free(reference);
}

static void forward_matches_composition_and_reference(void) {
    for (size_t s = 0; s < SHAPE_COUNT; s++)
        for (int variant = 0; variant < 6; variant++)
            check_forward(shapes[s].rows, shapes[s].channels, variant & 1, (plait_activation)(variant / 2),
                          100 + 10 * s + variant);
}

/* Backward of a training forward whose output went through a residual add and the activation. */
typedef struct fused_loss_context {
    size_t rows;
    int channels;
    const float *x, *gamma, *beta, *residual, *r;
    plait_activation activation;
    double *y;
} fused_loss_context;

/* dot(r, activation(bn(x) + residual)) in float64 */
static double fused_loss(void *p) {
    fused_loss_context *c = p;
    reference_forward(c->rows, c->channels, c->x, c->gamma, c->beta, NULL, NULL, c->residual, c->activation, c->y);
    return dot(c->y, c->r, c->rows * (size_t)c->channels);
}

static void check_backward(size_t rows, int channels, plait_activation activation, unsigned long seed) {
    size_t count = rows * (size_t)channels, C = (size_t)channels;
    float *x = random_floats(count, seed), *dy = random_floats(count, seed + 1);
    float *residual = random_floats(count, seed + 2);
    float *gamma = random_floats(C, seed + 3), *beta = random_floats(C, seed + 4);
    float *y = plait_alloc(count * 4), *masked = plait_alloc(count * 4), *dx_unfused = plait_alloc(count * 4);
    float *dx_fused = plait_alloc(count * 4), *in_place = plait_alloc(count * 4), *dres = plait_alloc(count * 4);
    float *mean = plait_alloc(C * 4), *invstd = plait_alloc(C * 4), *grads = plait_alloc(4 * C * 4);
    double *dx_ref = zero_doubles(count), *dgamma_ref = zero_doubles(C), *dbeta_ref = zero_doubles(C);
    double *y_ref = zero_doubles(count);
    spread_for(activation, C, gamma, beta);
    /* pre-activations at least 0.05 from the kinks (0, and 6 for ReLU6), so finite differences never straddle
     * one */
    reference_forward(rows, channels, x, gamma, beta, NULL, NULL, NULL, PLAIT_ACTIVATION_NONE, y_ref);
    for (size_t i = 0; i < count; i++)
        if (fabs(y_ref[i] + residual[i]) < 0.05 || fabs(y_ref[i] + residual[i] - 6) < 0.05) residual[i] += 0.1f;
    plait_batchnorm_forward_train_fused(rows, channels, x, gamma, beta, 1e-5f, residual, activation, y, mean,
                                        invstd);
    size_t alive = 0, saturated = 0;
    for (size_t i = 0; i < count; i++) alive += y[i] > 0 && y[i] < 6, saturated += y[i] >= 6;
    CHECKF(alive > count / 5 && alive < count, "rows %zu channels %d: %zu of %zu alive", rows, channels, alive, count);
    CHECKF(activation != PLAIT_ACTIVATION_RELU6 || saturated > count / 50, "rows %zu channels %d: %zu of %zu at 6",
           rows, channels, saturated, count);

    for (size_t c = 0; c < 4 * C; c++) grads[c] = 1.0f; /* accumulated into */
    if (activation == PLAIT_ACTIVATION_RELU6) plait_relu6_backward(count, y, dy, masked);
    else plait_relu_backward(count, y, dy, masked);
    plait_batchnorm_backward(rows, channels, x, masked, gamma, mean, invstd, dx_unfused, grads, grads + C);
    plait_batchnorm_backward_fused(rows, channels, x, dy, y, activation, gamma, mean, invstd, dx_fused, grads + 2 * C,
                                   grads + 3 * C);
    CHECKF(same_bits(dx_unfused, dx_fused, count), "rows %zu channels %d: fused dx differs", rows, channels);
    CHECKF(same_bits(grads, grads + 2 * C, 2 * C), "rows %zu channels %d: fused dgamma/dbeta differ", rows,
           channels);
    memcpy(in_place, dy, count * 4);
    for (size_t c = 2 * C; c < 4 * C; c++) grads[c] = 1.0f;
    plait_batchnorm_backward_fused(rows, channels, x, in_place, y, activation, gamma, mean, invstd, in_place,
                                   grads + 2 * C, grads + 3 * C);
    CHECKF(same_bits(in_place, dx_fused, count), "dx aliasing dy differs");

    plait_reference_batchnorm_backward(rows, channels, x, masked, gamma, 1e-5, dx_ref, dgamma_ref, dbeta_ref);
    for (size_t c = 0; c < C; c++) {
        dgamma_ref[c] += 1.0;
        dbeta_ref[c] += 1.0;
    }
    double e = error_vs(dx_fused, dx_ref, count);
    CHECKF(e < TOLERANCE, "rows %zu channels %d: dx error %.3g against float64", rows, channels, e);
    e = error_vs(grads + 2 * C, dgamma_ref, C);
    CHECKF(e < TOLERANCE, "dgamma error %.3g", e);
    e = error_vs(grads + 3 * C, dbeta_ref, C);
    CHECKF(e < TOLERANCE, "dbeta error %.3g", e);

    /* finite differences of dot(dy, activation(bn(x) + residual)) for x, gamma, beta and the residual */
    for (size_t c = 2 * C; c < 4 * C; c++) grads[c] = 0.0f;
    plait_batchnorm_backward_fused(rows, channels, x, dy, y, activation, gamma, mean, invstd, dx_fused, grads + 2 * C,
                                   grads + 3 * C);
    memset(dres, 0, count * 4);
    if (activation == PLAIT_ACTIVATION_RELU6) plait_relu6_backward(count, y, dy, dres);
    else plait_relu_backward_add(count, y, dy, dres);
    fused_loss_context context = {rows, channels, x, gamma, beta, residual, dy, activation, y_ref};
    e = finite_difference_error(x, count, dx_fused, fused_loss, &context, 12, 1e-3f, seed + 5);
    CHECKF(e < 1e-3, "dx vs finite differences: error %.3g", e);
    e = finite_difference_error(gamma, C, grads + 2 * C, fused_loss, &context, 8, 1e-3f, seed + 6);
    CHECKF(e < 1e-3, "dgamma vs finite differences: error %.3g", e);
    e = finite_difference_error(beta, C, grads + 3 * C, fused_loss, &context, 8, 1e-3f, seed + 7);
    CHECKF(e < 1e-3, "dbeta vs finite differences: error %.3g", e);
    e = finite_difference_error(residual, count, dres, fused_loss, &context, 12, 1e-3f, seed + 8);
    CHECKF(e < 1e-3, "dresidual vs finite differences: error %.3g", e);

    float *buffers[] = {x, dy, residual, gamma, beta, y, masked, dx_unfused, dx_fused, in_place, dres, mean, invstd,
                        grads};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) plait_free(buffers[i]);
    free(dx_ref);
    free(dgamma_ref);
    free(dbeta_ref);
    free(y_ref);
}

static void backward_matches_composition_reference_and_finite_differences(void) {
    for (size_t s = 0; s < SHAPE_COUNT; s++)
        if (shapes[s].rows > 3)
            for (int a = PLAIT_ACTIVATION_RELU; a <= PLAIT_ACTIVATION_RELU6; a++)
                check_backward(shapes[s].rows, shapes[s].channels, (plait_activation)a, 300 + 10 * s + a);
}

/* The gate: wherever an element's x lies against its channel's interval, the activation's output passes
 * the gradient or not, element by element; and the gated backward gives the bits of the one that reads the
 * output. x is moved onto the first gate's ends and the floats beside them, so elements sit within a few
 * floats of the second gate's ends (the statistics move by little). */
static void check_gate(size_t rows, int channels, plait_activation activation, unsigned long seed) {
    size_t count = rows * (size_t)channels, C = (size_t)channels;
    float *x = random_floats(count, seed), *dy = random_floats(count, seed + 1);
    float *gamma = random_floats(C, seed + 2), *beta = random_floats(C, seed + 3);
    float *y = plait_alloc(count * 4), *y_plain = plait_alloc(count * 4), *gate = plait_alloc(2 * C * 4);
    float *stats = plait_alloc(4 * C * 4), *dx = plait_alloc(count * 4), *dx_gated = plait_alloc(count * 4);
    float *grads = plait_alloc(4 * C * 4);
    spread_for(activation, C, gamma, beta);
    CHECK(batchnorm_forward_train_gated(rows, channels, x, gamma, beta, 1e-5f, activation, y, stats, stats + C,
                                        gate));
    for (size_t i = 0; i < count; i++) {
        size_t c = i % C, row = i / C;
        float end = row % 2 ? gate[c] : gate[C + c];
        if (isfinite(end) && row % 7 < 3) x[i] = row % 7 == 0 ? end : nextafterf(end, row % 7 == 1 ? -1e30f : 1e30f);
    }
    CHECK(batchnorm_forward_train_gated(rows, channels, x, gamma, beta, 1e-5f, activation, y, stats, stats + C,
                                        gate));
    plait_batchnorm_forward_train_fused(rows, channels, x, gamma, beta, 1e-5f, NULL, activation, y_plain,
                                        stats + 2 * C, stats + 3 * C);
    CHECKF(same_bits(y, y_plain, count) && same_bits(stats, stats + 2 * C, 2 * C), "gated forward differs");
    size_t wrong = 0;
    for (size_t i = 0; i < count; i++) {
        size_t c = i % C;
        bool inside = x[i] >= gate[c] && x[i] <= gate[C + c];
        bool passes = y[i] > 0 && (activation == PLAIT_ACTIVATION_RELU || y[i] < 6);
        wrong += inside != passes;
    }
    CHECKF(wrong == 0, "rows %zu channels %d activation %d: the gate disagrees with the output on %zu of %zu", rows,
           channels, (int)activation, wrong, count);
    for (size_t c = 0; c < 4 * C; c++) grads[c] = 0.5f;
    plait_batchnorm_backward_fused(rows, channels, x, dy, y, activation, gamma, stats, stats + C, dx, grads,
                                   grads + C);
    batchnorm_backward_gated(rows, channels, x, dy, gate, gamma, stats, stats + C, dx_gated, grads + 2 * C,
                             grads + 3 * C);
    CHECKF(same_bits(dx, dx_gated, count) && same_bits(grads, grads + 2 * C, 2 * C),
           "rows %zu channels %d activation %d: gated backward differs", rows, channels, (int)activation);
    /* a channel whose scale is 0 has no interval: the gate is refused */
    gamma[C - 1] = 0.0f;
    CHECK(!batchnorm_forward_train_gated(rows, channels, x, gamma, beta, 1e-5f, activation, y, stats, stats + C,
                                         gate));
    float *buffers[] = {x, dy, gamma, beta, y, y_plain, gate, stats, dx, dx_gated, grads};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++) plait_free(buffers[i]);
}

/* z and the activation as bn_normalize computes them (no contraction under -std=c11): does it pass? */
static bool passes_at(float x, float mean_high, float mean_low, float scale, float beta, plait_activation activation) {
    float z = ((x - mean_high) - mean_low) * scale + beta;
    float y = z > 0.0f ? z : 0.0f;
    if (activation == PLAIT_ACTIVATION_RELU6) y = y < 6.0f ? y : 6.0f;
    return y > 0.0f && (activation == PLAIT_ACTIVATION_RELU || y < 6.0f);
}

/* One channel's interval against z itself: its ends pass and the floats just outside do not, on random
 * coefficients (either sign of scale, small and large, means large against the spread) and a sample of x. */
static void gate_ends_are_exact(void) {
    plait_rng rng;
    plait_rng_seed(&rng, 900);
    int nonempty = 0;
    for (int trial = 0; trial < 2000; trial++) {
        float mean_high = (float)(plait_rng_uniform(&rng) - 0.5) * (trial % 3 ? 10.0f : 1e6f);
        float mean_low = mean_high * 1e-8f * (float)(plait_rng_uniform(&rng) - 0.5);
        float scale = (float)(plait_rng_uniform(&rng) - 0.5) * (trial % 5 ? 4.0f : 1e-5f);
        float beta = (float)(plait_rng_uniform(&rng) * 10 - 3);
        plait_activation activation = trial % 2 ? PLAIT_ACTIVATION_RELU6 : PLAIT_ACTIVATION_RELU;
        float lo, hi;
        if (scale == 0.0f) continue;
        CHECK(batchnorm_gate_of(mean_high, mean_low, scale, beta, activation, &lo, &hi));
        if (lo <= hi) {
            nonempty++;
            CHECK(passes_at(lo, mean_high, mean_low, scale, beta, activation));
            CHECK(passes_at(hi, mean_high, mean_low, scale, beta, activation));
            float below = nextafterf(lo, -INFINITY), above = nextafterf(hi, INFINITY);
            if (lo > -INFINITY) CHECK(!passes_at(below, mean_high, mean_low, scale, beta, activation));
            if (hi < INFINITY) CHECK(!passes_at(above, mean_high, mean_low, scale, beta, activation));
        }
        for (int k = 0; k < 50; k++) {
            float x = mean_high + (float)(plait_rng_uniform(&rng) - 0.5) * 8.0f / fabsf(scale);
            bool inside = x >= lo && x <= hi;
            CHECK(inside == passes_at(x, mean_high, mean_low, scale, beta, activation));
        }
    }
    CHECK(nonempty > 1000);
    float lo, hi;
    CHECK(!batchnorm_gate_of(0.0f, 0.0f, 0.0f, 1.0f, PLAIT_ACTIVATION_RELU, &lo, &hi));
    CHECK(!batchnorm_gate_of(NAN, 0.0f, 1.0f, 1.0f, PLAIT_ACTIVATION_RELU6, &lo, &hi));
}

static void gate_matches_output(void) {
    for (size_t s = 0; s < SHAPE_COUNT; s++)
        for (int a = PLAIT_ACTIVATION_RELU; a <= PLAIT_ACTIVATION_RELU6; a++)
            check_gate(shapes[s].rows, shapes[s].channels, (plait_activation)a, 700 + 10 * s + a);
}

static void relu_backward_add_matches_composition(void) {
    size_t sizes[] = {7, 1000, 100003};
    for (size_t k = 0; k < 3; k++) {
        size_t n = sizes[k];
        float *y = random_floats(n, 500 + k), *dy = random_floats(n, 510 + k), *base = random_floats(n, 520 + k);
        float *masked = plait_alloc(n * 4), *expected = plait_alloc(n * 4);
        plait_relu_forward(n, y, y);
        plait_relu_backward(n, y, dy, masked);
        plait_add(n, base, masked, expected);
        plait_relu_backward_add(n, y, dy, base);
        CHECKF(same_bits(base, expected, n), "count %zu: differs from relu_backward then add", n);
        bool exact = true;
        for (size_t i = 0; i < n; i++) exact = exact && masked[i] == (y[i] > 0 ? dy[i] : 0.0f);
        CHECK(exact);
        plait_free(y);
        plait_free(dy);
        plait_free(base);
        plait_free(masked);
        plait_free(expected);
    }
}

/* Each instruction set's row loops give the same bits as the baseline's on the same inputs. */
static void instruction_sets_agree_for(plait_activation activation) {
    size_t rows = 845, count = rows * 64;
    float *x = random_floats(count, 600), *dy = random_floats(count, 601), *residual = random_floats(count, 602);
    float *gamma = random_floats(64, 603), *beta = random_floats(64, 604);
    spread_for(activation, 64, gamma, beta);
    float *out[3], *dx[3], *grads[3];
    int ran = 0;
    for (int t = 0; fused_rows_tables[t]; t++) {
        out[t] = dx[t] = grads[t] = NULL;
        if (fused_rows_force(fused_rows_tables[t]) != PLAIT_OK) {
            plait_clear_error();
            continue;
        }
        out[t] = plait_alloc(count * 4);
        dx[t] = plait_alloc(count * 4);
        grads[t] = plait_alloc(4 * 64 * 4);
        plait_batchnorm_forward_train_fused(rows, 64, x, gamma, beta, 1e-5f, residual, activation, out[t],
                                            grads[t], grads[t] + 64);
        plait_batchnorm_backward_fused(rows, 64, x, dy, out[t], activation, gamma, grads[t], grads[t] + 64, dx[t],
                                       grads[t] + 128, grads[t] + 192);
        if (activation == PLAIT_ACTIVATION_RELU) plait_relu_backward_add(count, out[t], dy, dx[t]);
        ran++;
    }
    fused_rows_force(NULL);
    CHECK(ran >= 1);
    int last = 0;
    while (fused_rows_tables[last + 1]) last++; /* the baseline runs everywhere */
    for (int t = 0; t < last; t++) {
        if (!out[t]) continue;
        CHECKF(same_bits(out[t], out[last], count), "%s forward differs from baseline", fused_rows_tables[t]->isa);
        CHECKF(same_bits(dx[t], dx[last], count), "%s backward differs from baseline", fused_rows_tables[t]->isa);
        CHECKF(same_bits(grads[t], grads[last], 256), "%s statistics or gradients differ from baseline",
               fused_rows_tables[t]->isa);
    }
    for (int t = 0; t <= last; t++) {
        plait_free(out[t]);
        plait_free(dx[t]);
        plait_free(grads[t]);
    }
    float *buffers[] = {x, dy, residual, gamma, beta};
    for (size_t i = 0; i < 5; i++) plait_free(buffers[i]);
}

static void instruction_sets_agree(void) {
    instruction_sets_agree_for(PLAIT_ACTIVATION_RELU);
    instruction_sets_agree_for(PLAIT_ACTIVATION_RELU6);
}

static void every_instruction_set(void (*test)(void)) {
    for (int t = 0; fused_rows_tables[t]; t++) {
        if (fused_rows_force(fused_rows_tables[t]) != PLAIT_OK) {
            plait_clear_error();
            continue;
        }
        test();
    }
    fused_rows_force(NULL);
}

static void forward_all_isas(void) { every_instruction_set(forward_matches_composition_and_reference); }
static void backward_all_isas(void) {
    every_instruction_set(backward_matches_composition_reference_and_finite_differences);
}
static void relu_backward_add_all_isas(void) { every_instruction_set(relu_backward_add_matches_composition); }
static void gate_all_isas(void) { every_instruction_set(gate_matches_output); }

int main(void) {
    testing_run("forward_matches_composition_and_reference", forward_all_isas);
    testing_run("backward_matches_composition_reference_and_finite_differences", backward_all_isas);
    testing_run("relu_backward_add_matches_composition", relu_backward_add_all_isas);
    testing_run("gate_matches_output", gate_all_isas);
    testing_run("gate_ends_are_exact", gate_ends_are_exact);
    testing_run("instruction_sets_agree", instruction_sets_agree);
    return testing_finish();
}
