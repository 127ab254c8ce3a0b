/* The trainer on data the test makes: the loss must fall well below its start, runs must be
 * reproducible, and micro-batches must equal gradient accumulation by hand. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plait/train.h"
#include "testing.h"
#include "train/train_internal.h"

/* 8x8 RGB images; class k has a bright 2x2 patch at a class-dependent position on noise. */
static void make_batch(int n, int classes, uint64_t seed, plait_tensor *images, int32_t *labels) {
    plait_tensor_reserve(images, (plait_shape){n, 8, 8, 3});
    plait_rng rng;
    plait_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) {
        int k = (int)plait_rng_below(&rng, (uint32_t)classes);
        labels[i] = k;
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                for (int c = 0; c < 3; c++) {
                    bool patch = y / 2 == k / 4 && x / 2 == k % 4;
                    images->data[((size_t)i * 64 + y * 8 + x) * 3 + c] =
                        (patch ? 2.0f : 0.0f) + 0.3f * plait_rng_normal(&rng);
                }
    }
}

static float train_steps(const char *model_name, int steps, int microbatches, float *first_loss, float **weights_out,
                         size_t *weights_count) {
    plait_model *m;
    plait_trainer *t;
    CHECK(plait_model_create(model_name, (plait_shape){1, 8, 8, 3}, 8, 5, &m) == PLAIT_OK);
    CHECK(plait_trainer_create(m, &t) == PLAIT_OK);
    plait_tensor images = {0};
    int32_t labels[16];
    plait_step_options o = {.microbatches = microbatches, .lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-4f,
                            .nesterov = true};
    float loss = 0;
    for (int s = 0; s < steps; s++) {
        make_batch(16, 8, 100 + (uint64_t)s, &images, labels);
        int correct;
        CHECK(plait_trainer_step(t, &o, &images, labels, &loss, &correct) == PLAIT_OK);
        if (s == 0) *first_loss = loss;
    }
    if (weights_out) {
        plait_param **params;
        int count;
        CHECK(plait_model_params(m, 0, m->unit_count, &params, &count) == PLAIT_OK);
        size_t total = 0;
        for (int i = 0; i < count; i++) total += params[i]->count;
        float *w = malloc(total * sizeof(float));
        size_t at = 0;
        for (int i = 0; i < count; i++) {
            memcpy(w + at, params[i]->value, params[i]->count * sizeof(float));
            at += params[i]->count;
        }
        free(params);
        *weights_out = w;
        *weights_count = total;
    }
    plait_trainer_free(t);
    plait_model_free(m);
    plait_tensor_free(&images);
    return loss;
}

static void loss_falls_on_generated_data(void) {
    float first = 0;
    float last = train_steps("resnet20", 40, 1, &first, NULL, NULL);
    CHECKF(first > 1.5f, "first loss %f should be near ln 8 = 2.08", (double)first);
    CHECKF(last < 0.25f * first, "loss went from %f to %f", (double)first, (double)last);
}

static void training_is_reproducible(void) {
    float first_a = 0, first_b = 0, *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    train_steps("resnet20", 4, 1, &first_a, &a, &na);
    train_steps("resnet20", 4, 1, &first_b, &b, &nb);
    CHECK(na == nb && memcmp(a, b, na * sizeof(float)) == 0);
    free(a);
    free(b);
}

static void microbatches_train_too(void) {
    float first = 0;
    float last = train_steps("resnet20", 40, 2, &first, NULL, NULL);
    CHECKF(last < 0.25f * first, "loss went from %f to %f", (double)first, (double)last);
}

/* The direct kernels and im2col + BLAS sum in different orders: the loss curves must agree to
 * rounding, step by step. */
static void direct_kernels_follow_reference_path(void) {
    float curves[2][12];
    for (int backend = 0; backend < 2; backend++) {
        plait_nn_set_conv_backend(backend ? PLAIT_CONV_BACKEND_IM2COL : PLAIT_CONV_BACKEND_AUTO);
        plait_model *m;
        plait_trainer *t;
        CHECK(plait_model_create("resnet20", (plait_shape){1, 8, 8, 3}, 8, 5, &m) == PLAIT_OK);
        CHECK(plait_trainer_create(m, &t) == PLAIT_OK);
        plait_tensor images = {0};
        int32_t labels[16];
        plait_step_options o = {.microbatches = 1, .lr = 0.05f, .momentum = 0.9f, .nesterov = true};
        for (int s = 0; s < 12; s++) {
            make_batch(16, 8, 300 + (uint64_t)s, &images, labels);
            int correct;
            CHECK(plait_trainer_step(t, &o, &images, labels, &curves[backend][s], &correct) == PLAIT_OK);
        }
        plait_trainer_free(t);
        plait_model_free(m);
        plait_tensor_free(&images);
    }
    plait_nn_set_conv_backend(PLAIT_CONV_BACKEND_AUTO);
    for (int s = 0; s < 12; s++)
        CHECKF(fabsf(curves[0][s] - curves[1][s]) <= 2e-3f * fabsf(curves[1][s]), "step %d: direct %f, im2col %f", s,
               (double)curves[0][s], (double)curves[1][s]);
    CHECK(curves[1][11] < curves[1][0]);
}

/* Sharpness-aware minimization against the same step put together by hand from plain steps: the
 * gradient at w + rho g/|g|, applied at w. The running statistics come from the first pass alone. */
static void sharpness_aware_step_matches_by_hand(void) {
    plait_model *m[3];
    plait_trainer *t[3];
    for (int i = 0; i < 3; i++) {
        CHECK(plait_model_create("resnet20", (plait_shape){1, 8, 8, 3}, 8, 5, &m[i]) == PLAIT_OK);
        CHECK(plait_trainer_create(m[i], &t[i]) == PLAIT_OK);
    }
    plait_tensor images = {0};
    int32_t labels[16];
    make_batch(16, 8, 500, &images, labels);
    const float rho = 0.05f;
    plait_step_options sam = {.microbatches = 2, .lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-4f,
                              .nesterov = true, .sam_rho = rho};
    plait_step_options plain = sam, gradient_only = {.microbatches = 2, .lr = 0.0f};
    plain.sam_rho = 0;
    float loss;
    int correct;
    CHECK(plait_trainer_step(t[0], &sam, &images, labels, &loss, &correct) == PLAIT_OK);
    CHECK(plait_trainer_step(t[2], &plain, &images, labels, &loss, &correct) == PLAIT_OK);
    /* by hand on m[1]: gradient, move, gradient again, move back, SGD step */
    plait_param **p;
    int count;
    CHECK(plait_model_params(m[1], 0, m[1]->unit_count, &p, &count) == PLAIT_OK);
    CHECK(plait_trainer_step(t[1], &gradient_only, &images, labels, &loss, &correct) == PLAIT_OK);
    double norm = 0;
    for (int i = 0; i < count; i++)
        for (size_t j = 0; j < p[i]->count; j++) norm += (double)p[i]->grad[j] * p[i]->grad[j];
    float scale = (float)(rho / sqrt(norm));
    float **saved = malloc((size_t)count * sizeof *saved);
    for (int i = 0; i < count; i++) {
        saved[i] = malloc(p[i]->count * sizeof(float));
        memcpy(saved[i], p[i]->value, p[i]->count * sizeof(float));
        for (size_t j = 0; j < p[i]->count; j++) p[i]->value[j] += scale * p[i]->grad[j];
    }
    CHECK(plait_trainer_step(t[1], &gradient_only, &images, labels, &loss, &correct) == PLAIT_OK);
    plait_param **q, **r;
    CHECK(plait_model_params(m[0], 0, m[0]->unit_count, &q, &count) == PLAIT_OK);
    CHECK(plait_model_params(m[2], 0, m[2]->unit_count, &r, &count) == PLAIT_OK);
    double worst = 0, moved = 0;
    for (int i = 0; i < count; i++) {
        memcpy(p[i]->value, saved[i], p[i]->count * sizeof(float));
        memset(p[i]->momentum, 0, p[i]->count * sizeof(float));
        plait_sgd_step(p[i]->count, p[i]->value, p[i]->grad, p[i]->momentum, sam.lr, sam.momentum,
                       p[i]->decay ? sam.weight_decay : 0.0f, sam.nesterov);
        for (size_t j = 0; j < p[i]->count; j++) {
            double d = fabs((double)q[i]->value[j] - p[i]->value[j]) / (fabs((double)p[i]->value[j]) + 1e-3);
            if (d > worst) worst = d;
            d = fabs((double)q[i]->value[j] - r[i]->value[j]);
            if (d > moved) moved = d;
        }
        free(saved[i]);
    }
    CHECKF(worst < 1e-5, "SAM step differs from the step by hand by %g (relative)", worst);
    CHECKF(moved > 1e-5, "SAM step equals the plain step (largest difference %g)", moved);
    plait_buffer **a, **b;
    int buffers;
    CHECK(plait_model_buffers(m[0], 0, m[0]->unit_count, &a, &buffers) == PLAIT_OK);
    CHECK(plait_model_buffers(m[2], 0, m[2]->unit_count, &b, &buffers) == PLAIT_OK);
    for (int i = 0; i < buffers; i++)
        CHECKF(memcmp(a[i]->value, b[i]->value, a[i]->count * sizeof(float)) == 0,
               "running statistics %s differ from the plain step's", a[i]->name);
    free(a);
    free(b);
    free(saved);
    free(p);
    free(q);
    free(r);
    for (int i = 0; i < 3; i++) {
        plait_trainer_free(t[i]);
        plait_model_free(m[i]);
    }
    plait_tensor_free(&images);
}

/* The weight average against its definition in float64: after each step's update every weight and
 * running statistic is the decayed sum of the live values it saw; the live model is left untouched. */
static void weight_average_follows_its_definition(void) {
    CHECK(fabsf(plait_weight_average_decay_at(0.999f, 1) - 2.0f / 11.0f) < 1e-7f);
    CHECK(plait_weight_average_decay_at(0.9f, 1000) == 0.9f);
    plait_model *live;
    CHECK(plait_model_create("resnet20", (plait_shape){1, 8, 8, 3}, 5, 3, &live) == PLAIT_OK);
    plait_weight_average average;
    CHECK(plait_weight_average_create(live, 1.0f, &average) == PLAIT_ERROR);
    CHECKF(strstr(plait_last_error(), "--ema must be in [0, 1)"), "%s", plait_last_error());
    const float decay = 0.6f;
    CHECK(plait_weight_average_create(live, decay, &average) == PLAIT_OK);
    plait_param **p;
    plait_buffer **b;
    int params, buffers;
    CHECK(plait_model_params(live, 0, live->unit_count, &p, &params) == PLAIT_OK);
    CHECK(plait_model_buffers(live, 0, live->unit_count, &b, &buffers) == PLAIT_OK);
    CHECK(params == average.param_count && buffers == average.buffer_count);
    size_t total = 0;
    for (int i = 0; i < params; i++) total += p[i]->count;
    for (int i = 0; i < buffers; i++) total += b[i]->count;
    double *expected = malloc(total * sizeof(double));
    size_t at = 0;
    for (int i = 0; i < params; i++)
        for (size_t j = 0; j < p[i]->count; j++) expected[at++] = p[i]->value[j];
    for (int i = 0; i < buffers; i++)
        for (size_t j = 0; j < b[i]->count; j++) expected[at++] = b[i]->value[j];
    plait_rng rng;
    plait_rng_seed(&rng, 77);
    for (long step = 1; step <= 6; step++) {
        double keep = plait_weight_average_decay_at(decay, step);
        at = 0;
        for (int i = 0; i < params; i++)
            for (size_t j = 0; j < p[i]->count; j++, at++) {
                p[i]->value[j] = plait_rng_uniform(&rng) * 2 - 1;
                expected[at] = keep * expected[at] + (1 - keep) * p[i]->value[j];
            }
        for (int i = 0; i < buffers; i++)
            for (size_t j = 0; j < b[i]->count; j++, at++) {
                b[i]->value[j] = plait_rng_uniform(&rng) + 0.5f;
                expected[at] = keep * expected[at] + (1 - keep) * b[i]->value[j];
            }
        plait_weight_average_update(&average, step);
    }
    double worst = 0;
    at = 0;
    for (int i = 0; i < params; i++) {
        CHECKF(average.params[i]->momentum == NULL, "the average of %s keeps a momentum array", p[i]->name);
        for (size_t j = 0; j < p[i]->count; j++, at++)
            worst = fmax(worst, fabs(average.params[i]->value[j] - expected[at]));
    }
    for (int i = 0; i < buffers; i++)
        for (size_t j = 0; j < b[i]->count; j++, at++)
            worst = fmax(worst, fabs(average.buffers[i]->value[j] - expected[at]) / expected[at]);
    CHECKF(worst < 1e-5, "the weight average is off its definition by %g", worst);
    CHECK(fabs(average.params[0]->value[0] - p[0]->value[0]) > 1e-4); /* an average, not a copy */
    free(expected);
    free(p);
    free(b);
    plait_weight_average_free(&average);
    plait_model_free(live);
}

/* A data set of n random 8x8 RGB images; mirror: each left-right mirrored; symmetric: each made
 * left-right symmetric. */
static void make_dataset(int n, uint64_t seed, bool mirror, bool symmetric, plait_dataset *d) {
    *d = (plait_dataset){.count = n, .height = 8, .width = 8, .channels = 3, .classes = 4,
                         .mean = {0.5f, 0.5f, 0.5f}, .std = {0.25f, 0.25f, 0.25f}};
    d->pixels = malloc((size_t)n * 8 * 8 * 3);
    d->labels = malloc(sizeof(int32_t) * (size_t)n);
    plait_rng rng;
    plait_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++) {
        d->labels[i] = (int32_t)plait_rng_below(&rng, 4);
        for (int j = 0; j < 8 * 8 * 3; j++) d->pixels[(size_t)i * 192 + j] = (uint8_t)plait_rng_below(&rng, 256);
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 4; x++)
                for (int c = 0; c < 3; c++) {
                    uint8_t *left = d->pixels + (size_t)i * 192 + (y * 8 + x) * 3 + c;
                    uint8_t *right = d->pixels + (size_t)i * 192 + (y * 8 + 7 - x) * 3 + c;
                    if (symmetric) *right = *left;
                    if (mirror) {
                        uint8_t keep = *left;
                        *left = *right;
                        *right = keep;
                    }
                }
    }
}

/* Flip test-time augmentation averages each image with its mirror: mirroring the data set must not
 * change its score, on symmetric images it must equal the single view, and otherwise differ. */
static void flip_evaluation_is_mirror_invariant(void) {
    plait_model *m;
    CHECK(plait_model_create("resnet20", (plait_shape){1, 8, 8, 3}, 4, 3, &m) == PLAIT_OK);
    plait_dataset plain, mirrored, symmetric;
    make_dataset(37, 5, false, false, &plain);
    make_dataset(37, 5, true, false, &mirrored);
    make_dataset(37, 5, false, true, &symmetric);
    plait_eval_score single, flip, mirrored_single, mirrored_flip, symmetric_single, symmetric_flip;
    CHECK(plait_evaluate_with_flip(m, &plain, 16, 0, &single, &flip) == PLAIT_OK);
    CHECK(plait_evaluate_with_flip(m, &mirrored, 16, 0, &mirrored_single, &mirrored_flip) == PLAIT_OK);
    CHECK(plait_evaluate_with_flip(m, &symmetric, 16, 0, &symmetric_single, &symmetric_flip) == PLAIT_OK);
    CHECKF(fabsf(flip.loss - mirrored_flip.loss) <= 1e-6f * flip.loss, "flip loss %g, of the mirrored set %g",
           (double)flip.loss, (double)mirrored_flip.loss);
    CHECK(flip.accuracy == mirrored_flip.accuracy);
    CHECKF(fabsf(single.loss - mirrored_single.loss) > 1e-4f, "single-view loss %g equals the mirrored set's",
           (double)single.loss);
    CHECKF(fabsf(symmetric_single.loss - symmetric_flip.loss) <= 1e-6f * symmetric_single.loss,
           "symmetric images: single %g, flip %g", (double)symmetric_single.loss, (double)symmetric_flip.loss);
    float loss, accuracy;
    CHECK(plait_evaluate(m, &plain, 16, 0, &loss, &accuracy) == PLAIT_OK);
    CHECK(loss == single.loss && accuracy == single.accuracy);
    plait_dataset_free(&plain);
    plait_dataset_free(&mirrored);
    plait_dataset_free(&symmetric);
    plait_model_free(m);
}

int main(void) {
    plait_set_threads(2);
    testing_run("loss_falls_on_generated_data", loss_falls_on_generated_data);
    testing_run("training_is_reproducible", training_is_reproducible);
    testing_run("microbatches_train_too", microbatches_train_too);
    testing_run("sharpness_aware_step_matches_by_hand", sharpness_aware_step_matches_by_hand);
    testing_run("direct_kernels_follow_reference_path", direct_kernels_follow_reference_path);
    testing_run("flip_evaluation_is_mirror_invariant", flip_evaluation_is_mirror_invariant);
    testing_run("weight_average_follows_its_definition", weight_average_follows_its_definition);
    return testing_finish();
}
