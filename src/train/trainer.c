#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plait/train.h"

struct plait_trainer {
    plait_model *model;
    plait_unit_state **states; /* one per unit: a single micro-batch is in flight at a time here */
    plait_param **params;
    int param_count;
    plait_tensor dlogits;
    float *saved_values; /* SAM: the weights before the ascent step, restored bit for bit */
    size_t value_count;
};

void plait_trainer_free(plait_trainer *t) {
    if (!t) return;
    if (t->states)
        for (int i = 0; i < t->model->unit_count; i++) plait_unit_state_free(t->states[i]);
    free(t->states);
    free(t->params);
    free(t->saved_values);
    plait_tensor_free(&t->dlogits);
    free(t);
}

int plait_trainer_create(plait_model *m, plait_trainer **out) {
    plait_trainer *t = calloc(1, sizeof *t);
    if (!t) return plait_fail("out of memory");
    t->model = m;
    t->states = calloc((size_t)m->unit_count, sizeof *t->states);
    if (!t->states) goto fail;
    for (int i = 0; i < m->unit_count; i++)
        if (!(t->states[i] = plait_unit_state_create())) goto fail;
    if (plait_model_params(m, 0, m->unit_count, &t->params, &t->param_count) != PLAIT_OK) goto fail;
    for (int i = 0; i < t->param_count; i++) t->value_count += t->params[i]->count;
    *out = t;
    return PLAIT_OK;
fail:
    plait_trainer_free(t);
    return plait_fail("cannot set up training for model %s: %s", m->name, plait_last_error());
}

static int forward_all(plait_trainer *t, const plait_tensor *x, bool training, const plait_tensor **logits) {
    const plait_tensor *current = x;
    for (int i = 0; i < t->model->unit_count; i++)
        if (plait_unit_forward(&t->model->units[i], t->states[i], current, training, &current) != PLAIT_OK)
            return PLAIT_ERROR;
    *logits = current;
    return PLAIT_OK;
}

static int backward_all(plait_trainer *t, const plait_tensor *dlogits) {
    const plait_tensor *grad = dlogits;
    for (int i = t->model->unit_count - 1; i >= 0; i--)
        if (plait_unit_backward(&t->model->units[i], t->states[i], grad, i > 0 ? &grad : NULL) != PLAIT_OK)
            return PLAIT_ERROR;
    return PLAIT_OK;
}

int plait_trainer_predict(plait_trainer *t, const plait_tensor *images, const plait_tensor **logits) {
    return forward_all(t, images, false, logits);
}

/* Forward, loss and backward of every micro-batch into the parameters' gradients (zeroed first). */
static int gradients(plait_trainer *t, const plait_step_options *o, const plait_tensor *images, const int32_t *labels,
                     float *loss, int *correct) {
    int m = o->microbatches > 0 ? o->microbatches : 1;
    int per = images->shape.n / m;
    size_t sample = (size_t)images->shape.h * images->shape.w * images->shape.c;
    plait_model_zero_grad(t->model, 0, t->model->unit_count);
    double loss_sum = 0;
    *correct = 0;
    for (int mb = 0; mb < m; mb++) {
        plait_tensor x = {.shape = images->shape, .data = images->data + (size_t)mb * per * sample};
        x.shape.n = per;
        const plait_tensor *logits;
        if (forward_all(t, &x, true, &logits) != PLAIT_OK) return PLAIT_ERROR;
        if (plait_tensor_reserve(&t->dlogits, logits->shape) != PLAIT_OK) return PLAIT_ERROR;
        int right = 0;
        float l = plait_softmax_cross_entropy(per, t->model->classes, logits->data, labels + (size_t)mb * per,
                                              o->label_smoothing, t->dlogits.data, &right);
        /* Each micro-batch's loss is its own mean; the mini-batch loss is their mean. */
        if (m > 1)
            for (size_t i = 0; i < plait_shape_count(t->dlogits.shape); i++) t->dlogits.data[i] /= (float)m;
        loss_sum += l;
        *correct += right;
        if (backward_all(t, &t->dlogits) != PLAIT_OK) return PLAIT_ERROR;
    }
    *loss = (float)(loss_sum / m);
    return PLAIT_OK;
}

/* Sharpness-aware minimization (Foret et al. 2021): the gradient is taken again at the weights moved
 * rho along the normalized gradient, and applied to the unmoved weights. The running statistics are
 * updated before the second pass, from the real weights; the next step's zeroing drops the second's. */
static int sharpness_aware_gradients(plait_trainer *t, const plait_step_options *o, const plait_tensor *images,
                                     const int32_t *labels, float *moved_loss) {
    if (!t->saved_values && !(t->saved_values = malloc(t->value_count * sizeof(float))))
        return plait_fail("out of memory for sharpness-aware minimization");
    double norm = 0;
    for (int i = 0; i < t->param_count; i++)
        for (size_t j = 0; j < t->params[i]->count; j++) norm += (double)t->params[i]->grad[j] * t->params[i]->grad[j];
    norm = sqrt(norm);
    if (!(norm > 0)) return PLAIT_OK;
    float scale = (float)(o->sam_rho / norm);
    size_t at = 0;
    for (int i = 0; i < t->param_count; i++) {
        plait_param *p = t->params[i];
        memcpy(t->saved_values + at, p->value, p->count * sizeof(float));
        for (size_t j = 0; j < p->count; j++) p->value[j] += scale * p->grad[j];
        at += p->count;
    }
    int correct;
    int status = gradients(t, o, images, labels, moved_loss, &correct);
    at = 0;
    for (int i = 0; i < t->param_count; i++) {
        memcpy(t->params[i]->value, t->saved_values + at, t->params[i]->count * sizeof(float));
        at += t->params[i]->count;
    }
    return status;
}

int plait_trainer_step(plait_trainer *t, const plait_step_options *o, const plait_tensor *images,
                       const int32_t *labels, float *loss, int *correct) {
    int m = o->microbatches > 0 ? o->microbatches : 1;
    if (images->shape.n % m != 0)
        return plait_fail("batch of %d does not split into %d equal micro-batches", images->shape.n, m);
    if (gradients(t, o, images, labels, loss, correct) != PLAIT_OK) return PLAIT_ERROR;
    if (!isfinite(*loss)) return PLAIT_OK;
    plait_model_update_running_stats(t->model, 0, t->model->unit_count);
    if (o->sam_rho > 0) {
        float moved_loss = *loss;
        if (sharpness_aware_gradients(t, o, images, labels, &moved_loss) != PLAIT_OK) return PLAIT_ERROR;
        if (!isfinite(moved_loss)) { /* the caller stops on it; the weights stay as they were */
            *loss = moved_loss;
            return PLAIT_OK;
        }
    }
    for (int i = 0; i < t->param_count; i++) {
        plait_param *p = t->params[i];
        plait_sgd_step(p->count, p->value, p->grad, p->momentum, o->lr, o->momentum,
                       p->decay ? o->weight_decay : 0.0f, o->nesterov);
    }
    return PLAIT_OK;
}
