/* Batch normalization fused with the ReLU and residual add after it, and the ReLU gradient into a
 * residual sum: identical bits to the unfused composition, against float64 references and finite
 * differences, on odd shapes, with every instruction set's row loops the CPU runs. */
#include <stdlib.h>
#include <string.h>

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

/* float64 reference of y = bn(x) (+ residual) (ReLU), training statistics or running ones. */
static void reference_forward(size_t rows, int channels, const float *x, const float *gamma, const float *beta,
                              const float *running_mean, const float *running_var, const float *residual, bool relu,
                              double *y) {
    if (running_mean)
        plait_reference_batchnorm_forward_eval(rows, channels, x, gamma, beta, running_mean, running_var, 1e-5, y);
    else
        plait_reference_batchnorm_forward_train(rows, channels, x, gamma, beta, 1e-5, y, NULL, NULL);
    for (size_t i = 0; i < rows * (size_t)channels; i++) {
        if (residual) y[i] += residual[i];
        if (relu && y[i] < 0) y[i] = 0;
    }
}

static void check_forward(size_t rows, int channels, bool with_residual, bool relu, unsigned long seed) {
    size_t count = rows * (size_t)channels, C = (size_t)channels;
    float *x = random_floats(count, seed), *residual = random_floats(count, seed + 1);
    float *gamma = random_floats(C, seed + 2), *beta = random_floats(C, seed + 3);
    float *running_mean = random_floats(C, seed + 4), *running_var = random_floats(C, seed + 5);
    for (size_t c = 0; c < C; c++) running_var[c] = 0.5f + running_var[c] * running_var[c];
    for (size_t i = 0; i < count; i++) x[i] = 3.0f + 2.0f * x[i];
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
        if (relu) plait_relu_forward(count, unfused, unfused);
        memcpy(aliased, residual, count * 4);
        if (eval) {
            plait_batchnorm_forward_eval_fused(rows, channels, x, gamma, beta, running_mean, running_var, 1e-5f, r,
                                               relu, fused);
            if (r)
                plait_batchnorm_forward_eval_fused(rows, channels, x, gamma, beta, running_mean, running_var, 1e-5f,
                                                   aliased, relu, aliased);
        } else {
            plait_batchnorm_forward_train_fused(rows, channels, x, gamma, beta, 1e-5f, r, relu, fused, stats + 2 * C,
                                                stats + 3 * C);
            CHECK(same_bits(stats, stats + 2 * C, 2 * C));
            if (r)
                plait_batchnorm_forward_train_fused(rows, channels, x, gamma, beta, 1e-5f, aliased, relu, aliased,
                                                    stats + 2 * C, stats + 3 * C);
        }
        CHECKF(same_bits(unfused, fused, count), "%s rows %zu channels %d residual %d relu %d: fused differs",
               eval ? "eval" : "train", rows, channels, with_residual, relu);
        if (r) CHECKF(same_bits(aliased, fused, count), "y aliasing residual differs");
        reference_forward(rows, channels, x, gamma, beta, eval ? running_mean : NULL, running_var, r, relu,
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
        for (int variant = 0; variant < 4; variant++)
            check_forward(shapes[s].rows, shapes[s].channels, variant & 1, variant & 2, 100 + 10 * s + variant);
}

/* Backward of a training forward whose output went through the ReLU (and a residual add). */
typedef struct fused_loss_context {
    size_t rows;
    int channels;
    const float *x, *gamma, *beta, *residual, *r;
    double *y;
} fused_loss_context;

/* dot(r, relu(bn(x) + residual)) in float64 */
static double fused_loss(void *p) {
    fused_loss_context *c = p;
    reference_forward(c->rows, c->channels, c->x, c->gamma, c->beta, NULL, NULL, c->residual, true, c->y);
    return dot(c->y, c->r, c->rows * (size_t)c->channels);
}

static void check_backward(size_t rows, int channels, unsigned long seed) {
    size_t count = rows * (size_t)channels, C = (size_t)channels;
    float *x = random_floats(count, seed), *dy = random_floats(count, seed + 1);
    float *residual = random_floats(count, seed + 2);
    float *gamma = random_floats(C, seed + 3), *beta = random_floats(C, seed + 4);
    float *y = plait_alloc(count * 4), *masked = plait_alloc(count * 4), *dx_unfused = plait_alloc(count * 4);
    float *dx_fused = plait_alloc(count * 4), *in_place = plait_alloc(count * 4), *dres = plait_alloc(count * 4);
    float *mean = plait_alloc(C * 4), *invstd = plait_alloc(C * 4), *grads = plait_alloc(4 * C * 4);
    double *dx_ref = zero_doubles(count), *dgamma_ref = zero_doubles(C), *dbeta_ref = zero_doubles(C);
    double *y_ref = zero_doubles(count);
    /* pre-activations at least 0.05 from the ReLU's kink, so finite differences never straddle it */
    reference_forward(rows, channels, x, gamma, beta, NULL, NULL, NULL, false, y_ref);
    for (size_t i = 0; i < count; i++)
        if (fabs(y_ref[i] + residual[i]) < 0.05) residual[i] += 0.1f;
    plait_batchnorm_forward_train_fused(rows, channels, x, gamma, beta, 1e-5f, residual, true, y, mean, invstd);
    size_t alive = 0;
    for (size_t i = 0; i < count; i++) alive += y[i] > 0;
    CHECKF(alive > count / 5 && alive < count, "rows %zu channels %d: %zu of %zu alive", rows, channels, alive, count);

    for (size_t c = 0; c < 4 * C; c++) grads[c] = 1.0f; /* accumulated into */
    plait_relu_backward(count, y, dy, masked);
    plait_batchnorm_backward(rows, channels, x, masked, gamma, mean, invstd, dx_unfused, grads, grads + C);
    plait_batchnorm_backward_fused(rows, channels, x, dy, y, gamma, mean, invstd, dx_fused, grads + 2 * C,
                                   grads + 3 * C);
    CHECKF(same_bits(dx_unfused, dx_fused, count), "rows %zu channels %d: fused dx differs", rows, channels);
    CHECKF(same_bits(grads, grads + 2 * C, 2 * C), "rows %zu channels %d: fused dgamma/dbeta differ", rows,
           channels);
    memcpy(in_place, dy, count * 4);
    for (size_t c = 2 * C; c < 4 * C; c++) grads[c] = 1.0f;
    plait_batchnorm_backward_fused(rows, channels, x, in_place, y, gamma, mean, invstd, in_place, grads + 2 * C,
                                   grads + 3 * C);
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

    /* finite differences of dot(dy, relu(bn(x) + residual)) for x, gamma, beta and the residual */
    for (size_t c = 2 * C; c < 4 * C; c++) grads[c] = 0.0f;
    plait_batchnorm_backward_fused(rows, channels, x, dy, y, gamma, mean, invstd, dx_fused, grads + 2 * C,
                                   grads + 3 * C);
    memset(dres, 0, count * 4);
    plait_relu_backward_add(count, y, dy, dres);
    fused_loss_context context = {rows, channels, x, gamma, beta, residual, dy, y_ref};
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
        if (shapes[s].rows > 3) check_backward(shapes[s].rows, shapes[s].channels, 300 + 10 * s);
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
static void instruction_sets_agree(void) {
    size_t rows = 845, count = rows * 64;
    float *x = random_floats(count, 600), *dy = random_floats(count, 601), *residual = random_floats(count, 602);
    float *gamma = random_floats(64, 603), *beta = random_floats(64, 604);
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
        plait_batchnorm_forward_train_fused(rows, 64, x, gamma, beta, 1e-5f, residual, true, out[t], grads[t],
                                            grads[t] + 64);
        plait_batchnorm_backward_fused(rows, 64, x, dy, out[t], gamma, grads[t], grads[t] + 64, dx[t],
                                       grads[t] + 128, grads[t] + 192);
        plait_relu_backward_add(count, out[t], dy, dx[t]);
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

int main(void) {
    testing_run("forward_matches_composition_and_reference", forward_all_isas);
    testing_run("backward_matches_composition_reference_and_finite_differences", backward_all_isas);
    testing_run("relu_backward_add_matches_composition", relu_backward_add_all_isas);
    testing_run("instruction_sets_agree", instruction_sets_agree);
    return testing_finish();
}
