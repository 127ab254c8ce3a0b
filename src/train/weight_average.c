/* An exponential moving average of a model's weights and batch-norm running statistics, kept in a
 * second model of the same architecture so that it can be evaluated and saved like any model. */
#include <stdlib.h>
#include <string.h>

#include "plait/core.h"
#include "train/train_internal.h"

void plait_weight_average_free(plait_weight_average *a) {
    if (!a) return;
    plait_model_free(a->model);
    free(a->live_params);
    free(a->params);
    free(a->live_buffers);
    free(a->buffers);
    free(a->live_layers);
    free(a->layers);
    memset(a, 0, sizeof *a);
}

static void copy_live(plait_weight_average *a) {
    for (int i = 0; i < a->param_count; i++)
        memcpy(a->params[i]->value, a->live_params[i]->value, a->params[i]->count * sizeof(float));
    for (int i = 0; i < a->buffer_count; i++)
        memcpy(a->buffers[i]->value, a->live_buffers[i]->value, a->buffers[i]->count * sizeof(float));
    for (int i = 0; i < a->layer_count; i++) a->layers[i]->num_batches_tracked = a->live_layers[i]->num_batches_tracked;
}

int plait_weight_average_create(plait_model *live, float decay, plait_weight_average *out) {
    memset(out, 0, sizeof *out);
    out->decay = decay;
    if (!(decay >= 0 && decay < 1)) return plait_fail("--ema must be in [0, 1) (got %g)", (double)decay);
    if (plait_model_create(live->name, live->input, live->classes, 0, &out->model) != PLAIT_OK) goto fail;
    int live_params, live_buffers, live_layers;
    plait_model *m = out->model;
    if (plait_model_params(live, 0, live->unit_count, &out->live_params, &live_params) != PLAIT_OK ||
        plait_model_params(m, 0, m->unit_count, &out->params, &out->param_count) != PLAIT_OK ||
        plait_model_buffers(live, 0, live->unit_count, &out->live_buffers, &live_buffers) != PLAIT_OK ||
        plait_model_buffers(m, 0, m->unit_count, &out->buffers, &out->buffer_count) != PLAIT_OK ||
        plait_model_layers(live, 0, live->unit_count, &out->live_layers, &live_layers) != PLAIT_OK ||
        plait_model_layers(m, 0, m->unit_count, &out->layers, &out->layer_count) != PLAIT_OK)
        goto fail;
    if (live_params != out->param_count || live_buffers != out->buffer_count || live_layers != out->layer_count) {
        plait_fail("model %s rebuilt with a different set of tensors", live->name);
        goto fail;
    }
    /* The average never takes an optimizer step; without momentum arrays its file holds weights only. */
    for (int i = 0; i < out->param_count; i++) {
        plait_free(out->params[i]->momentum);
        out->params[i]->momentum = NULL;
    }
    copy_live(out);
    return PLAIT_OK;
fail:
    plait_weight_average_free(out);
    return plait_fail("cannot set up the weight average: %s", plait_last_error());
}

/* TensorFlow's ExponentialMovingAverage with num_updates: early on the average follows the weights
 * closely, so that it does not stay anchored to the random initialization. */
float plait_weight_average_decay_at(float decay, long step) {
    float warm = (float)(1.0 + (double)step) / (float)(10.0 + (double)step);
    return warm < decay ? warm : decay;
}

void plait_weight_average_update(plait_weight_average *a, long step) {
    float keep = plait_weight_average_decay_at(a->decay, step), take = 1.0f - keep;
    for (int i = 0; i < a->param_count; i++) {
        float *average = a->params[i]->value;
        const float *value = a->live_params[i]->value;
        for (size_t j = 0; j < a->params[i]->count; j++) average[j] += take * (value[j] - average[j]);
    }
    for (int i = 0; i < a->buffer_count; i++) {
        float *average = a->buffers[i]->value;
        const float *value = a->live_buffers[i]->value;
        for (size_t j = 0; j < a->buffers[i]->count; j++) average[j] += take * (value[j] - average[j]);
    }
    for (int i = 0; i < a->layer_count; i++) a->layers[i]->num_batches_tracked = a->live_layers[i]->num_batches_tracked;
}
