#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn_internal.h"
#include "plait/nn.h"
#include "testing.h"

/* Unit backward passes against central finite differences, on tiny units in training mode. */


/* loss = sum(y * r) in double */
static double weighted_sum(const plait_tensor *y, const float *r) {
    double total = 0.0;
    for (size_t i = 0; i < plait_shape_count(y->shape); i++) total += (double)y->data[i] * r[i];
    return total;
}

static double unit_loss(plait_unit *u, plait_unit_state *s, const plait_tensor *x, const float *r) {
    const plait_tensor *y;
    if (plait_unit_forward(u, s, x, true, &y) != PLAIT_OK) return NAN;
    return weighted_sum(y, r);
}

/* Central differences at eps and eps/2 for every entry of values against the analytic gradient; the
 * relative error in norm. An entry whose two estimates disagree sits near a ReLU or max-pool kink and
 * is left out; *skipped counts those. */
static double gradient_error(plait_unit *u, plait_unit_state *s, const plait_tensor *x, const float *r,
                             float *values, size_t count, const float *analytic, float eps, size_t *skipped) {
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < count; i++) {
        float saved = values[i];
        double numeric[2];
        for (int k = 0; k < 2; k++) {
            float step = k == 0 ? eps : eps / 2;
            values[i] = saved + step;
            double plus = unit_loss(u, s, x, r);
            values[i] = saved - step;
            double minus = unit_loss(u, s, x, r);
            values[i] = saved;
            numeric[k] = (plus - minus) / (double)(2.0f * step);
        }
        if (fabs(numeric[0] - numeric[1]) > 0.05 * (fabs(numeric[0]) + fabs(numeric[1])) + 3e-3) {
            (*skipped)++;
            continue;
        }
        diff += (numeric[0] - analytic[i]) * (numeric[0] - analytic[i]);
        norm += (double)analytic[i] * analytic[i];
    }
    return sqrt(diff / fmax(norm, 1e-30));
}

/* How far the last forward's activations are from a kink: ReLU inputs from 0 (and 6), the two largest
 * values of each max-pool window from each other. */
static double kink_margin(const plait_unit *u, const plait_unit_state *s, const plait_tensor *x) {
    const nn_layer_state *states = nn_unit_state_layers(s, false);
    double margin = INFINITY;
    for (int i = 0; i < u->main_count; i++) {
        const plait_layer *l = &u->main[i];
        const float *in = i > 0 ? states[i - 1].y.data : x->data;
        size_t count = plait_shape_count(i > 0 ? states[i - 1].y.shape : x->shape);
        if (l->kind == PLAIT_LAYER_RELU || l->kind == PLAIT_LAYER_RELU6)
            for (size_t j = 0; j < count; j++) {
                margin = fmin(margin, fabs(in[j]));
                if (l->kind == PLAIT_LAYER_RELU6) margin = fmin(margin, fabs(in[j] - 6.0f));
            }
        if (l->kind == PLAIT_LAYER_MAXPOOL) {
            const plait_pool2d_desc *d = &l->pool;
            for (int n = 0; n < x->shape.n; n++)
                for (int p = 0; p < l->out_shape.h; p++)
                    for (int q = 0; q < l->out_shape.w; q++)
                        for (int c = 0; c < d->channels; c++) {
                            float first = -INFINITY, second = -INFINITY;
                            for (int r = 0; r < d->kernel; r++)
                                for (int t = 0; t < d->kernel; t++) {
                                    int h = p * d->stride - d->pad + r, w = q * d->stride - d->pad + t;
                                    if (h < 0 || h >= d->in_h || w < 0 || w >= d->in_w) continue;
                                    float v = in[((n * d->in_h + h) * d->in_w + w) * d->channels + c];
                                    if (v > first) {
                                        second = first;
                                        first = v;
                                    } else if (v > second) {
                                        second = v;
                                    }
                                }
                            if (first > 0.0f) margin = fmin(margin, first - second); /* ties of zeros are dead */
                        }
        }
    }
    if (u->post_relu) {
        const plait_tensor *sum = &states[u->main_count - 1].y;
        for (size_t j = 0; j < plait_shape_count(sum->shape); j++) margin = fmin(margin, fabs(sum->data[j]));
    }
    return margin;
}

static void check_unit_gradients(plait_model *m, int batch, unsigned long seed) {
    plait_unit *u = &m->units[m->unit_count - 1];
    plait_shape in = u->in_shape, out = u->out_shape;
    in.n = out.n = batch;
    plait_tensor x = {0}, dy = {0};
    plait_tensor_reserve(&x, in);
    plait_tensor_reserve(&dy, out);
    testing_fill_uniform(dy.data, plait_shape_count(out), seed + 1);
    plait_unit_state *s = plait_unit_state_create();
    const plait_tensor *y, *dx;
    nn_in_place_activations = false; /* keeps the pre-activations for kink_margin */
    /* inputs whose activations all stay clear of kinks, so finite differences never straddle one */
    double margin = 0.0;
    for (unsigned long attempt = 0; attempt < 500 && margin < 0.01; attempt++) {
        testing_fill_uniform(x.data, plait_shape_count(in), seed + 1000 * attempt);
        CHECK(plait_unit_forward(u, s, &x, true, &y) == PLAIT_OK);
        margin = kink_margin(u, s, &x);
    }
    CHECKF(margin >= 0.01, "%s: no input found with activations clear of kinks", u->name);
    plait_model_zero_grad(m, 0, m->unit_count);
    CHECK(plait_unit_forward(u, s, &x, true, &y) == PLAIT_OK);
    CHECK(plait_shape_equal(y->shape, out));
    CHECK(plait_unit_backward(u, s, &dy, &dx) == PLAIT_OK);
    CHECK(plait_shape_equal(dx->shape, in));
    float *analytic_dx = malloc(plait_shape_count(in) * sizeof(float));
    memcpy(analytic_dx, dx->data, plait_shape_count(in) * sizeof(float));

    const float eps = 1e-3f, tolerance = 1e-2;
    size_t skipped = 0, total = plait_shape_count(in);
    double error = gradient_error(u, s, &x, dy.data, x.data, plait_shape_count(in), analytic_dx, eps, &skipped);
    CHECKF(error < tolerance, "%s dx: relative error %g", u->name, error);
    plait_param **params;
    int count;
    plait_model_params(m, 0, m->unit_count, &params, &count);
    for (int i = 0; i < count; i++) {
        error = gradient_error(u, s, &x, dy.data, params[i]->value, params[i]->count, params[i]->grad, eps,
                               &skipped);
        CHECKF(error < tolerance, "%s: relative error %g", params[i]->name, error);
        if (getenv("PLAIT_TEST_VERBOSE")) fprintf(stderr, "  %s: %g\n", params[i]->name, error);
        total += params[i]->count;
    }
    CHECKF(skipped * 100 <= total, "%s: %zu of %zu entries near kinks", u->name, skipped, total);
    if (getenv("PLAIT_TEST_VERBOSE")) fprintf(stderr, "  %s: %zu of %zu entries skipped\n", u->name, skipped, total);
    free(params);
    free(analytic_dx);
    nn_in_place_activations = true;
    plait_unit_state_free(s);
    plait_tensor_free(&x);
    plait_tensor_free(&dy);
}

/* BN weights and biases away from 1 and 0, so their gradients and the paths through them are generic. */
static void perturb_batchnorm(plait_model *m, unsigned long seed) {
    plait_param **params;
    int count;
    plait_model_params(m, 0, m->unit_count, &params, &count);
    for (int i = 0; i < count; i++) {
        if (params[i]->conv_weight || params[i]->ndim != 1) continue;
        float noise[512];
        testing_fill_uniform(noise, params[i]->count, seed + (unsigned long)i);
        for (size_t j = 0; j < params[i]->count; j++) params[i]->value[j] += 0.3f * noise[j];
    }
    free(params);
}

static void basic_block_with_downsample_gradients(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 6, 6, 4}, 3);
    plait_rng rng;
    plait_rng_seed(&rng, 11);
    CHECK(nn_basic_block(m, "layer2.0", 6, 2, &rng) == PLAIT_OK);
    CHECK(m->units[0].shortcut_count == 2 && m->units[0].out_shape.h == 3);
    perturb_batchnorm(m, 100);
    check_unit_gradients(m, 2, 41);
    plait_model_free(m);
}

static void bottleneck_gradients(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 5, 5, 8}, 3);
    plait_rng rng;
    plait_rng_seed(&rng, 12);
    CHECK(nn_bottleneck(m, "layer1.1", 2, 1, &rng) == PLAIT_OK);
    CHECK(m->units[0].shortcut_count == 0 && m->units[0].out_shape.c == 8);
    perturb_batchnorm(m, 200);
    check_unit_gradients(m, 2, 22);
    plait_model_free(m);
}

static void inverted_residual_gradients(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 4, 4, 4}, 3);
    plait_rng rng;
    plait_rng_seed(&rng, 13);
    CHECK(nn_inverted_residual(m, "features.4", 4, 1, 2, &rng) == PLAIT_OK);
    CHECK(m->units[0].residual && !m->units[0].post_relu && m->units[0].main_count == 8);
    CHECK(m->units[0].main[3].conv.groups == 8);
    perturb_batchnorm(m, 300);
    check_unit_gradients(m, 2, 23);
    plait_model_free(m);
}

static void stem_with_maxpool_gradients(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 12, 12, 3}, 3);
    plait_rng rng;
    plait_rng_seed(&rng, 14);
    CHECK(nn_resnet_stem(m, 4, true, &rng) == PLAIT_OK);
    CHECK(m->units[0].out_shape.h == 3 && m->units[0].out_shape.c == 4);
    perturb_batchnorm(m, 400);
    check_unit_gradients(m, 2, 24);
    plait_model_free(m);
}

/* Activations overwriting their inputs, with ReLU and the residual add fused into the batch
 * normalizations (forward and backward), give the same bits as the separate passes: outputs in
 * training and evaluation, input gradients and every parameter gradient, on each kind of unit. */
static void check_fusion_changes_nothing(plait_model *m, int batch, unsigned long seed) {
    plait_unit *u = &m->units[m->unit_count - 1];
    plait_shape in = u->in_shape, out = u->out_shape;
    in.n = out.n = batch;
    plait_tensor x = {0}, dy = {0};
    plait_tensor_reserve(&x, in);
    plait_tensor_reserve(&dy, out);
    testing_fill_uniform(x.data, plait_shape_count(in), seed);
    testing_fill_uniform(dy.data, plait_shape_count(out), seed + 1);
    plait_param **params;
    int count;
    CHECK(plait_model_params(m, 0, m->unit_count, &params, &count) == PLAIT_OK);
    size_t total = 0;
    for (int i = 0; i < count; i++) total += params[i]->count;
    size_t out_count = plait_shape_count(out), in_count = plait_shape_count(in);
    float *outputs[2], *eval_outputs[2], *input_gradients[2], *gradients[2];
    for (int mode = 0; mode < 2; mode++) {
        nn_in_place_activations = mode == 1;
        plait_unit_state *s = plait_unit_state_create();
        plait_model_zero_grad(m, 0, m->unit_count);
        const plait_tensor *y, *dx;
        CHECK(plait_unit_forward(u, s, &x, false, &y) == PLAIT_OK);
        eval_outputs[mode] = malloc(out_count * sizeof(float));
        memcpy(eval_outputs[mode], y->data, out_count * sizeof(float));
        CHECK(plait_unit_forward(u, s, &x, true, &y) == PLAIT_OK);
        outputs[mode] = malloc(out_count * sizeof(float));
        memcpy(outputs[mode], y->data, out_count * sizeof(float));
        CHECK(plait_unit_backward(u, s, &dy, &dx) == PLAIT_OK);
        input_gradients[mode] = malloc(in_count * sizeof(float));
        memcpy(input_gradients[mode], dx->data, in_count * sizeof(float));
        gradients[mode] = malloc(total * sizeof(float));
        size_t at = 0;
        for (int i = 0; i < count; i++) {
            memcpy(gradients[mode] + at, params[i]->grad, params[i]->count * sizeof(float));
            at += params[i]->count;
        }
        plait_unit_state_free(s);
    }
    nn_in_place_activations = true;
    CHECKF(memcmp(outputs[0], outputs[1], out_count * sizeof(float)) == 0, "%s: outputs differ", u->name);
    CHECKF(memcmp(eval_outputs[0], eval_outputs[1], out_count * sizeof(float)) == 0, "%s: eval outputs differ",
           u->name);
    CHECKF(memcmp(input_gradients[0], input_gradients[1], in_count * sizeof(float)) == 0, "%s: dx differs", u->name);
    CHECKF(memcmp(gradients[0], gradients[1], total * sizeof(float)) == 0, "%s: parameter gradients differ",
           u->name);
    double magnitude = 0;
    for (size_t i = 0; i < in_count; i++) magnitude += fabs(input_gradients[1][i]);
    CHECKF(magnitude > 0, "%s: dx is all zero, the comparison proves nothing", u->name);
    for (int mode = 0; mode < 2; mode++) {
        free(outputs[mode]);
        free(eval_outputs[mode]);
        free(input_gradients[mode]);
        free(gradients[mode]);
    }
    free(params);
    plait_tensor_free(&x);
    plait_tensor_free(&dy);
}

static void in_place_activations_and_fusion_change_nothing(void) {
    for (int kind = 0; kind < 5; kind++) {
        plait_shape input = kind == 3 ? (plait_shape){1, 12, 12, 3} : (plait_shape){1, 6, 6, 4};
        plait_model *m = nn_model_new("tiny", input, 3);
        plait_rng rng;
        plait_rng_seed(&rng, 17 + (uint64_t)kind);
        int rc = kind == 0   ? nn_bottleneck(m, "layer1.0", 2, 2, &rng)          /* projection shortcut */
                 : kind == 1 ? nn_basic_block(m, "layer1.0", 4, 1, &rng)         /* identity shortcut */
                 : kind == 2 ? nn_basic_block(m, "layer2.0", 8, 2, &rng)         /* projection, basic */
                 : kind == 3 ? nn_resnet_stem(m, 5, true, &rng)                  /* BN, ReLU, max pool */
                             : nn_inverted_residual(m, "features.4", 4, 1, 2, &rng); /* ReLU6, add, no ReLU */
        CHECK(rc == PLAIT_OK);
        perturb_batchnorm(m, 500 + (unsigned long)kind);
        check_fusion_changes_nothing(m, 3, 40 + (unsigned long)kind);
        plait_model_free(m);
    }
}

static void head_gradients(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 3, 3, 6}, 5);
    plait_rng rng;
    plait_rng_seed(&rng, 15);
    CHECK(nn_classifier_head(m, "fc", 5, NN_LINEAR_TORCH_DEFAULT, &rng) == PLAIT_OK);
    check_unit_gradients(m, 2, 25);
    plait_model_free(m);
}

/* Loss of a whole model: mean cross-entropy of its logits. */
static double model_loss(plait_model *m, plait_unit_state **states, const plait_tensor *x, const int32_t *labels,
                         float *dlogits) {
    const plait_tensor *current = x;
    for (int i = 0; i < m->unit_count; i++)
        if (plait_unit_forward(&m->units[i], states[i], current, true, &current) != PLAIT_OK) return NAN;
    return plait_softmax_cross_entropy(current->shape.n, current->shape.c, current->data, labels, 0.0f, dlogits,
                                       NULL);
}

/* Units chained through their input gradients: each parameter tensor's gradient against the directional
 * derivative of the loss along a random direction, with activations in place as in training. */
static void model_gradients_chain_through_units(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 12, 12, 3}, 5);
    plait_rng rng;
    plait_rng_seed(&rng, 8);
    CHECK(nn_resnet_stem(m, 4, true, &rng) == PLAIT_OK && nn_basic_block(m, "layer1.0", 4, 1, &rng) == PLAIT_OK &&
          nn_bottleneck(m, "layer2.0", 2, 2, &rng) == PLAIT_OK &&
          nn_inverted_residual(m, "features.3", 8, 1, 2, &rng) == PLAIT_OK &&
          nn_classifier_head(m, "fc", 5, NN_LINEAR_TORCH_DEFAULT, &rng) == PLAIT_OK);
    int units = m->unit_count, batch = 4;
    plait_unit_state *states[5];
    for (int i = 0; i < units; i++) states[i] = plait_unit_state_create();
    plait_tensor x = {0}, dlogits = {0};
    plait_tensor_reserve(&x, (plait_shape){batch, 12, 12, 3});
    plait_tensor_reserve(&dlogits, (plait_shape){batch, 1, 1, 5});
    testing_fill_uniform(x.data, plait_shape_count(x.shape), 9);
    int32_t labels[4] = {0, 3, 1, 4};
    plait_model_zero_grad(m, 0, units);
    model_loss(m, states, &x, labels, dlogits.data);
    const plait_tensor *gradient = &dlogits;
    for (int i = units - 1; i >= 0; i--) {
        const plait_tensor *dx;
        CHECK(plait_unit_backward(&m->units[i], states[i], gradient, i > 0 ? &dx : NULL) == PLAIT_OK);
        gradient = dx;
    }
    plait_param **params;
    int count;
    plait_model_params(m, 0, units, &params, &count);
    CHECKF(count == 32, "%d parameters", count);
    const float eps = 1e-3f;
    for (int i = 0; i < count; i++) {
        plait_param *p = params[i];
        float *direction = malloc(p->count * sizeof(float)), *saved = malloc(p->count * sizeof(float));
        testing_fill_uniform(direction, p->count, 100 + (unsigned long)i);
        memcpy(saved, p->value, p->count * sizeof(float));
        double analytic = 0.0, scale = 0.0;
        for (size_t j = 0; j < p->count; j++) {
            analytic += (double)p->grad[j] * direction[j];
            scale += fabs((double)p->grad[j] * direction[j]);
        }
        double loss[2];
        for (int k = 0; k < 2; k++) {
            for (size_t j = 0; j < p->count; j++) p->value[j] = saved[j] + (k == 0 ? eps : -eps) * direction[j];
            loss[k] = model_loss(m, states, &x, labels, NULL);
        }
        memcpy(p->value, saved, p->count * sizeof(float));
        double numeric = (loss[0] - loss[1]) / (2.0 * eps);
        CHECKF(fabs(numeric - analytic) < 0.02 * scale + 1e-4, "%s: %g numeric, %g analytic", p->name, numeric,
               analytic);
        free(direction);
        free(saved);
    }
    free(params);
    for (int i = 0; i < units; i++) plait_unit_state_free(states[i]);
    plait_tensor_free(&x);
    plait_tensor_free(&dlogits);
    plait_model_free(m);
}

int main(void) {
    testing_run("basic_block_with_downsample_gradients", basic_block_with_downsample_gradients);
    testing_run("bottleneck_gradients", bottleneck_gradients);
    testing_run("inverted_residual_gradients", inverted_residual_gradients);
    testing_run("stem_with_maxpool_gradients", stem_with_maxpool_gradients);
    testing_run("head_gradients", head_gradients);
    testing_run("in_place_activations_and_fusion_change_nothing", in_place_activations_and_fusion_change_nothing);
    testing_run("model_gradients_chain_through_units", model_gradients_chain_through_units);
    return testing_finish();
}
