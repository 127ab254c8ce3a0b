/* Convolution layers choose their kernel per batch size: a direct-kernel plan (tuned schedules from
 * the tuning file, or defaults) where the direct kernels apply, else the layer's fallback kernel. */
#include <stdlib.h>

#include "nn/nn_internal.h"
#include "plait/tune.h"

static plait_conv_backend active_backend = PLAIT_CONV_BACKEND_AUTO;
static const plait_tuning *active_tuning;

void plait_nn_set_conv_backend(plait_conv_backend backend) { active_backend = backend; }
void plait_nn_set_tuning(const plait_tuning *tuning) { active_tuning = tuning; }

/* The plan for this batch size, or NULL when the fallback kernel runs. */
static const plait_conv_plan *plan_for(plait_layer *l, const plait_conv2d_desc *d) {
    if (active_backend == PLAIT_CONV_BACKEND_IM2COL) return NULL;
    if (l->conv_plan_batch == d->batch && l->conv_plan_tuning == active_tuning) return l->conv_plan;
    if (!l->conv_plan && !(l->conv_plan = malloc(sizeof *l->conv_plan))) return NULL;
    l->conv_plan_batch = d->batch;
    l->conv_plan_tuning = active_tuning;
    if (plait_conv_plan_make(l->conv_plan, d, active_tuning) == PLAIT_OK) return l->conv_plan;
    plait_clear_error(); /* not an error: this shape simply takes the fallback kernel */
    free(l->conv_plan);
    l->conv_plan = NULL;
    return NULL;
}

int nn_conv_forward(plait_layer *l, int batch, const float *x, float *y, plait_workspace *ws) {
    plait_conv2d_desc d = l->conv;
    d.batch = batch;
    const plait_conv_plan *plan = plan_for(l, &d);
    size_t bytes = plan ? plan->workspace_bytes : l->conv_kernel->workspace_bytes(&d);
    if (nn_workspace_ensure(ws, bytes) != PLAIT_OK) return PLAIT_ERROR;
    if (plan)
        plait_tuned_forward(plan, x, l->params[0].value, y, ws->data);
    else
        l->conv_kernel->forward(&d, x, l->params[0].value, y, ws->data);
    return PLAIT_OK;
}

int nn_conv_backward(plait_layer *l, int batch, const float *x, const float *dy, float *dx, plait_workspace *ws) {
    plait_conv2d_desc d = l->conv;
    d.batch = batch;
    const plait_conv_plan *plan = plan_for(l, &d);
    size_t bytes = plan ? plan->workspace_bytes : l->conv_kernel->workspace_bytes(&d);
    if (nn_workspace_ensure(ws, bytes) != PLAIT_OK) return PLAIT_ERROR;
    if (plan) {
        if (dx) plait_tuned_backward_data(plan, dy, l->params[0].value, dx, ws->data);
        plait_tuned_backward_weights(plan, x, dy, l->params[0].grad, ws->data);
    } else {
        if (dx) l->conv_kernel->backward_data(&d, dy, l->params[0].value, dx, ws->data);
        l->conv_kernel->backward_weights(&d, x, dy, l->params[0].grad, ws->data);
    }
    return PLAIT_OK;
}
