#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn_internal.h"
#include "plait/nn.h"
#include "testing.h"

/* Batch-normalization statistics over micro-batches, gradient accumulation, evaluation mode, and a
 * small training loop. */

static plait_model *create_model(const char *name, int size, int classes) {
    plait_model *m = NULL;
    if (plait_model_create(name, (plait_shape){1, size, size, 3}, classes, 1, &m) != PLAIT_OK)
        fprintf(stderr, "  create %s: %s\n", name, plait_last_error());
    return m;
}

static void run_units(plait_model *m, plait_unit_state **states, const plait_tensor *x, bool training,
                      const plait_tensor **y) {
    const plait_tensor *current = x;
    for (int i = 0; i < m->unit_count; i++) {
        if (plait_unit_forward(&m->units[i], states[i], current, training, &current) != PLAIT_OK) {
            fprintf(stderr, "  forward %s: %s\n", m->units[i].name, plait_last_error());
            *y = NULL;
            return;
        }
    }
    *y = current;
}

static void backward_units(plait_model *m, plait_unit_state **states, const plait_tensor *dy) {
    const plait_tensor *current = dy;
    for (int i = m->unit_count - 1; i >= 0; i--) {
        const plait_tensor *dx;
        CHECK(plait_unit_backward(&m->units[i], states[i], current, i > 0 ? &dx : NULL) == PLAIT_OK);
        current = dx;
    }
}

static plait_unit_state **states_create(int count) {
    plait_unit_state **states = malloc((size_t)count * sizeof *states);
    for (int i = 0; i < count; i++) states[i] = plait_unit_state_create();
    return states;
}

static void states_free(plait_unit_state **states, int count) {
    for (int i = 0; i < count; i++) plait_unit_state_free(states[i]);
    free(states);
}

/* Rows [first, first+n) of an NHWC tensor. */
static plait_tensor batch_slice(const plait_tensor *x, int first, int n) {
    plait_tensor t = {0};
    plait_shape shape = x->shape;
    shape.n = n;
    plait_tensor_reserve(&t, shape);
    size_t per = plait_shape_count(shape) / (size_t)n;
    memcpy(t.data, x->data + per * (size_t)first, per * (size_t)n * sizeof(float));
    return t;
}

static plait_model *batchnorm_only_model(int channels) {
    plait_model *m = nn_model_new("bn", (plait_shape){1, 2, 3, channels}, channels);
    plait_unit *u = nn_model_add_unit(m, "norm");
    nn_add_batchnorm(u, false, "bn");
    nn_unit_finish(u);
    return m;
}

static void running_stats_follow_pytorch(void) {
    /* Against PyTorch's definition for one mini-batch of 6 split as 3 + 3: running_mean = 0.1 * mean,
     * running_var = 0.9 + 0.1 * unbiased variance over all 6 * 2 * 3 rows. */
    int channels = 5;
    plait_model *m = batchnorm_only_model(channels);
    plait_tensor x = {0};
    plait_tensor_reserve(&x, (plait_shape){6, 2, 3, channels});
    testing_fill_uniform(x.data, plait_shape_count(x.shape), 77);
    /* channel 0 varies little, so batchnorm's eps would show if it leaked into the variance */
    for (size_t i = 0; i < plait_shape_count(x.shape); i++)
        x.data[i] = (i % channels == 0 ? 0.01f : 3.0f) * x.data[i] + (float)(i % channels);
    plait_tensor first = batch_slice(&x, 0, 3), second = batch_slice(&x, 3, 3);
    plait_unit_state **states = states_create(2);
    plait_model_zero_grad(m, 0, 1);
    const plait_tensor *y;
    run_units(m, &states[0], &first, true, &y);
    run_units(m, &states[1], &second, true, &y);
    plait_model_update_running_stats(m, 0, 1);
    plait_layer *bn = &m->units[0].main[0];
    CHECK(bn->num_batches_tracked == 1);
    size_t rows = 36;
    for (int c = 0; c < channels; c++) {
        double sum = 0, sumsq = 0;
        for (size_t r = 0; r < rows; r++) sum += x.data[r * channels + c];
        double mean = sum / rows;
        for (size_t r = 0; r < rows; r++) {
            double d = x.data[r * channels + c] - mean;
            sumsq += d * d;
        }
        double var = sumsq / (rows - 1);
        CHECKF(fabs(bn->buffers[0].value[c] - 0.1 * mean) < 1e-6 * (1 + fabs(mean)), "mean %d: %g vs %g", c,
               bn->buffers[0].value[c], 0.1 * mean);
        CHECKF(fabs(bn->buffers[1].value[c] - (0.9 + 0.1 * var)) < 3e-7 + 2e-6 * var, "var %d: %g vs %g", c,
               bn->buffers[1].value[c], 0.9 + 0.1 * var);
    }
    /* the same as one micro-batch of 6 */
    plait_model *whole = batchnorm_only_model(channels);
    plait_unit_state *s = plait_unit_state_create();
    plait_model_zero_grad(whole, 0, 1);
    CHECK(plait_unit_forward(&whole->units[0], s, &x, true, &y) == PLAIT_OK);
    plait_model_update_running_stats(whole, 0, 1);
    for (int c = 0; c < channels; c++) {
        CHECK(fabs(whole->units[0].main[0].buffers[0].value[c] - bn->buffers[0].value[c]) < 1e-6);
        CHECK(fabs(whole->units[0].main[0].buffers[1].value[c] - bn->buffers[1].value[c]) < 1e-5);
    }
    plait_unit_state_free(s);
    plait_model_free(whole);
    /* A second update without new statistics changes nothing. */
    float before = bn->buffers[1].value[2];
    plait_model_update_running_stats(m, 0, 1);
    CHECK(bn->buffers[1].value[2] == before && bn->num_batches_tracked == 1);
    states_free(states, 2);
    plait_tensor_free(&first);
    plait_tensor_free(&second);
    plait_tensor_free(&x);
    plait_model_free(m);
}

static void micro_batches_match_mini_batch(void) {
    /* In a real ResNet-20 on 8x8 inputs, two micro-batches of 3 in flight together accumulate the sum
     * of their separate gradients, and the stem's batchnorm gets the running statistics of one
     * mini-batch of 6. */
    plait_model *whole = create_model("resnet20", 8, 4), *split = create_model("resnet20", 8, 4);
    if (!whole || !split) return;
    int units = whole->unit_count;
    plait_tensor x = {0}, dy = {0};
    plait_tensor_reserve(&x, (plait_shape){6, 8, 8, 3});
    plait_tensor_reserve(&dy, (plait_shape){6, 1, 1, 4});
    testing_fill_uniform(x.data, plait_shape_count(x.shape), 91);
    testing_fill_uniform(dy.data, plait_shape_count(dy.shape), 92);
    plait_tensor x1 = batch_slice(&x, 0, 3), x2 = batch_slice(&x, 3, 3);
    plait_tensor dy1 = batch_slice(&dy, 0, 3), dy2 = batch_slice(&dy, 3, 3);

    plait_unit_state **one = states_create(units), **a = states_create(units), **b = states_create(units);
    const plait_tensor *y;
    plait_model_zero_grad(whole, 0, units);
    run_units(whole, one, &x, true, &y);
    plait_model_update_running_stats(whole, 0, units);

    /* gradients of each micro-batch alone */
    plait_param **params;
    int count;
    plait_model_params(split, 0, units, &params, &count);
    size_t total = 0;
    for (int i = 0; i < count; i++) total += params[i]->count;
    double *expected = calloc(total, sizeof(double));
    for (int part = 0; part < 2; part++) {
        plait_model_zero_grad(split, 0, units);
        run_units(split, a, part == 0 ? &x1 : &x2, true, &y);
        backward_units(split, a, part == 0 ? &dy1 : &dy2);
        size_t k = 0;
        for (int i = 0; i < count; i++)
            for (size_t j = 0; j < params[i]->count; j++) expected[k++] += params[i]->grad[j];
    }
    /* both in flight at once, backward in the other order, accumulated */
    plait_model_zero_grad(split, 0, units);
    run_units(split, a, &x1, true, &y);
    run_units(split, b, &x2, true, &y);
    backward_units(split, b, &dy2);
    backward_units(split, a, &dy1);
    plait_model_update_running_stats(split, 0, units);
    double diff = 0, norm = 0;
    size_t k = 0;
    for (int i = 0; i < count; i++)
        for (size_t j = 0; j < params[i]->count; j++, k++) {
            diff += (params[i]->grad[j] - expected[k]) * (params[i]->grad[j] - expected[k]);
            norm += expected[k] * expected[k];
        }
    CHECKF(sqrt(diff / norm) < 1e-5, "accumulated gradients differ: %g", sqrt(diff / norm));
    CHECK(norm > 0);

    plait_buffer **whole_buffers, **split_buffers;
    int buffer_count;
    plait_model_buffers(whole, 0, units, &whole_buffers, &buffer_count);
    plait_model_buffers(split, 0, units, &split_buffers, &buffer_count);
    CHECK(buffer_count == 2 * 21);
    /* Only the first batchnorm sees the same rows either way: deeper ones see inputs normalized with
     * each micro-batch's own statistics, as in PyTorch. */
    double worst = 0;
    for (int i = 0; i < 2; i++)
        for (size_t j = 0; j < whole_buffers[i]->count; j++)
            worst = fmax(worst, fabs(whole_buffers[i]->value[j] - split_buffers[i]->value[j]) /
                                    (1e-3 + fabs(whole_buffers[i]->value[j])));
    CHECKF(worst < 1e-4, "running statistics differ by %g", worst);
    CHECK(whole->units[3].main[1].num_batches_tracked == 1 && split->units[3].main[1].num_batches_tracked == 1);
    free(whole_buffers);
    free(split_buffers);
    free(expected);
    free(params);
    states_free(one, units);
    states_free(a, units);
    states_free(b, units);
    plait_tensor_free(&x);
    plait_tensor_free(&dy);
    plait_tensor_free(&x1);
    plait_tensor_free(&x2);
    plait_tensor_free(&dy1);
    plait_tensor_free(&dy2);
    plait_model_free(whole);
    plait_model_free(split);
}

static void eval_uses_running_stats(void) {
    int channels = 3;
    plait_model *m = batchnorm_only_model(channels);
    plait_layer *bn = &m->units[0].main[0];
    float mean[3] = {0.5f, -1.0f, 2.0f}, var[3] = {4.0f, 0.25f, 1.0f}, gamma[3] = {1.0f, 2.0f, -0.5f},
          beta[3] = {0.0f, 0.1f, 0.2f};
    memcpy(bn->buffers[0].value, mean, sizeof mean);
    memcpy(bn->buffers[1].value, var, sizeof var);
    memcpy(bn->params[0].value, gamma, sizeof gamma);
    memcpy(bn->params[1].value, beta, sizeof beta);
    plait_tensor x = {0};
    plait_tensor_reserve(&x, (plait_shape){2, 2, 3, channels});
    testing_fill_uniform(x.data, plait_shape_count(x.shape), 5);
    plait_unit_state *s = plait_unit_state_create();
    plait_model_zero_grad(m, 0, 1);
    const plait_tensor *y;
    CHECK(plait_unit_forward(&m->units[0], s, &x, false, &y) == PLAIT_OK);
    for (size_t i = 0; i < plait_shape_count(x.shape); i++) {
        int c = (int)(i % channels);
        double want = (x.data[i] - mean[c]) / sqrt(var[c] + 1e-5) * gamma[c] + beta[c];
        CHECKF(fabs(y->data[i] - want) < 1e-5, "%zu: %g vs %g", i, y->data[i], want);
    }
    CHECK(bn->bn_stat_rows == 0.0); /* evaluation leaves the statistics alone */
    plait_tensor dy = {0};
    plait_tensor_reserve(&dy, x.shape);
    const plait_tensor *dx;
    CHECK(plait_unit_backward(&m->units[0], s, &dy, &dx) == PLAIT_ERROR);
    CHECK(strcmp(plait_last_error(), "norm: backward without a training forward") == 0);
    /* training normalizes with the batch's own statistics instead: mean 0 per channel */
    CHECK(plait_unit_forward(&m->units[0], s, &x, true, &y) == PLAIT_OK);
    double sum = 0;
    for (size_t i = 0; i < plait_shape_count(x.shape); i += channels) sum += y->data[i];
    CHECKF(fabs(sum / 12) < 1e-5, "training mean %g", sum / 12);
    CHECK(bn->bn_stat_rows == 12.0);
    plait_unit_state_free(s);
    plait_tensor_free(&x);
    plait_tensor_free(&dy);
    plait_model_free(m);
}

static void state_memory_grows_with_batch(void) {
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 8, 8, 4}, 3);
    plait_rng rng;
    plait_rng_seed(&rng, 5);
    CHECK(nn_basic_block(m, "layer1.0", 4, 1, &rng) == PLAIT_OK);
    plait_unit_state *s = plait_unit_state_create();
    CHECK(plait_unit_state_bytes(s) == 0);
    size_t bytes[2];
    for (int k = 0; k < 2; k++) {
        plait_tensor x = {0}, dy = {0};
        int batch = k == 0 ? 2 : 4;
        plait_tensor_reserve(&x, (plait_shape){batch, 8, 8, 4});
        plait_tensor_reserve(&dy, x.shape);
        testing_fill_uniform(x.data, plait_shape_count(x.shape), 1);
        const plait_tensor *y, *dx;
        CHECK(plait_unit_forward(&m->units[0], s, &x, true, &y) == PLAIT_OK);
        CHECK(plait_unit_backward(&m->units[0], s, &dy, &dx) == PLAIT_OK);
        bytes[k] = plait_unit_state_bytes(s);
        plait_tensor_free(&x);
        plait_tensor_free(&dy);
    }
    /* batch 2: outputs of conv1, bn1 (relu fused), conv2, bn2 (sum and relu fused) = 4 tensors of
     * 2*8*8*4 floats; gradients dx and two scratch = 3 more (the ReLU's gradient is never stored, the
     * batchnorms apply it as they read); two batchnorms' mean and invstd */
    size_t tensor = 2 * 8 * 8 * 4 * sizeof(float);
    CHECKF(bytes[0] == 7 * tensor + 2 * 2 * 4 * sizeof(float), "%zu bytes", bytes[0]);
    CHECKF(bytes[1] == 14 * tensor + 2 * 2 * 4 * sizeof(float), "%zu bytes", bytes[1]);
    plait_unit_state_free(s);
    plait_model_free(m);
}

static void sgd_drives_loss_down(void) {
    /* a ResNet in miniature: CIFAR stem, two basic blocks (one with projection), head */
    plait_model *m = nn_model_new("tiny", (plait_shape){1, 8, 8, 3}, 4);
    plait_rng rng;
    plait_rng_seed(&rng, 3);
    CHECK(nn_resnet_stem(m, 8, false, &rng) == PLAIT_OK && nn_basic_block(m, "layer1.0", 8, 1, &rng) == PLAIT_OK &&
          nn_basic_block(m, "layer2.0", 16, 2, &rng) == PLAIT_OK &&
          nn_classifier_head(m, "fc", 4, NN_LINEAR_TORCH_DEFAULT, &rng) == PLAIT_OK);
    int batch = 8, units = m->unit_count;
    plait_tensor x = {0}, dlogits = {0};
    plait_tensor_reserve(&x, (plait_shape){batch, 8, 8, 3});
    plait_tensor_reserve(&dlogits, (plait_shape){batch, 1, 1, 4});
    testing_fill_uniform(x.data, plait_shape_count(x.shape), 123);
    int32_t labels[8] = {0, 1, 2, 3, 3, 2, 1, 0};
    plait_unit_state **states = states_create(units);
    plait_param **params;
    int count;
    plait_model_params(m, 0, units, &params, &count);
    float first_loss = 0, loss = 0;
    for (int step = 0; step < 40; step++) {
        plait_model_zero_grad(m, 0, units);
        const plait_tensor *y;
        run_units(m, states, &x, true, &y);
        if (!y) break;
        loss = plait_softmax_cross_entropy(batch, 4, y->data, labels, 0.0f, dlogits.data, NULL);
        if (step == 0) first_loss = loss;
        backward_units(m, states, &dlogits);
        plait_model_update_running_stats(m, 0, units);
        for (int i = 0; i < count; i++)
            plait_sgd_step(params[i]->count, params[i]->value, params[i]->grad, params[i]->momentum, 0.05f, 0.9f,
                           params[i]->decay ? 5e-4f : 0.0f, false);
    }
    CHECKF(first_loss > 1.0f && loss < 0.05f * first_loss, "loss %g -> %g", first_loss, loss);
    if (getenv("PLAIT_TEST_VERBOSE")) fprintf(stderr, "  loss %g -> %g\n", first_loss, loss);
    CHECK(m->units[0].main[1].num_batches_tracked == 40);
    free(params);
    states_free(states, units);
    plait_tensor_free(&x);
    plait_tensor_free(&dlogits);
    plait_model_free(m);
}

int main(void) {
    testing_run("running_stats_follow_pytorch", running_stats_follow_pytorch);
    testing_run("micro_batches_match_mini_batch", micro_batches_match_mini_batch);
    testing_run("eval_uses_running_stats", eval_uses_running_stats);
    testing_run("state_memory_grows_with_batch", state_memory_grows_with_batch);
    testing_run("sgd_drives_loss_down", sgd_drives_loss_down);
    return testing_finish();
}
