/* Layers: creation with torchvision's names and initialization, and forward/backward through ops.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/batchnorm_gate.h"
#include "nn/nn_internal.h"

/* ---- creation ----------------------------------------------------------------------------- */

static plait_shape path_output_shape(const plait_unit *u, bool shortcut) {
    const plait_layer *layers = shortcut ? u->shortcut : u->main;
    int count = shortcut ? u->shortcut_count : u->main_count;
    return count > 0 ? layers[count - 1].out_shape : u->in_shape;
}

/* A zeroed layer at the end of the path, named; NULL when out of memory. */
static plait_layer *path_append(plait_unit *u, bool shortcut, plait_layer_kind kind, const char *name) {
    plait_shape in = path_output_shape(u, shortcut);
    plait_layer **layers = shortcut ? &u->shortcut : &u->main;
    int *count = shortcut ? &u->shortcut_count : &u->main_count;
    plait_layer *grown = realloc(*layers, (size_t)(*count + 1) * sizeof **layers);
    if (!grown) {
        plait_fail("out of memory adding layer %s", name);
        return NULL;
    }
    *layers = grown;
    plait_layer *l = &grown[(*count)++];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    snprintf(l->name, sizeof l->name, "%s", name);
    l->in_shape = in;
    l->out_shape = l->in_shape;
    return l;
}

static int param_init(plait_param *p, const char *layer_name, const char *suffix, int ndim, const int64_t *dims,
                      bool decay) {
    snprintf(p->name, sizeof p->name, "%s.%s", layer_name, suffix);
    p->ndim = ndim;
    p->count = 1;
    for (int i = 0; i < ndim; i++) {
        p->dims[i] = dims[i];
        p->count *= (size_t)dims[i];
    }
    p->decay = decay;
    p->value = plait_alloc(p->count * sizeof(float));
    p->grad = plait_alloc(p->count * sizeof(float));
    p->momentum = plait_alloc(p->count * sizeof(float));
    return p->value && p->grad && p->momentum ? PLAIT_OK : PLAIT_ERROR;
}

/* Normal(0, std) values, two per Box-Muller draw: initialization of ResNet-50 is 25M of them. */
static void fill_normal(plait_rng *rng, float *x, size_t count, float std) {
    for (size_t i = 0; i < count; i += 2) {
        double u1 = ((double)(plait_rng_next(rng) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
        double u2 = (double)(plait_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
        double radius = std * sqrt(-2.0 * log(u1)), angle = 2.0 * M_PI * u2;
        x[i] = (float)(radius * cos(angle));
        if (i + 1 < count) x[i + 1] = (float)(radius * sin(angle));
    }
}

int nn_add_conv(plait_unit *u, bool shortcut, const char *name, int out_channels, int kernel, int stride, int pad,
                int groups, plait_rng *rng) {
    plait_layer *l = path_append(u, shortcut, PLAIT_LAYER_CONV2D, name);
    if (!l) return PLAIT_ERROR;
    plait_shape in = l->in_shape;
    l->conv = (plait_conv2d_desc){.batch = 1,
                                  .in_h = in.h,
                                  .in_w = in.w,
                                  .in_channels = in.c,
                                  .out_channels = out_channels,
                                  .kernel_h = kernel,
                                  .kernel_w = kernel,
                                  .stride_h = stride,
                                  .stride_w = stride,
                                  .pad_h = pad,
                                  .pad_w = pad,
                                  .groups = groups};
    if (plait_conv2d_validate(&l->conv) != PLAIT_OK) {
        char reason[256];
        snprintf(reason, sizeof reason, "%s", plait_last_error());
        return plait_fail("%s: input %dx%dx%d: %s", name, in.h, in.w, in.c, reason);
    }
    l->out_shape = (plait_shape){1, plait_conv2d_out_h(&l->conv), plait_conv2d_out_w(&l->conv), out_channels};
    l->conv_kernel = plait_conv2d_default_kernel(&l->conv);
    int64_t dims[4] = {out_channels, in.c / groups, kernel, kernel};
    l->param_count = 1;
    if (param_init(&l->params[0], name, "weight", 4, dims, true) != PLAIT_OK) return PLAIT_ERROR;
    l->params[0].conv_weight = true;
    /* kaiming_normal_(mode="fan_out", nonlinearity="relu"); torch's fan_out ignores groups */
    float std = sqrtf(2.0f / (float)(out_channels * kernel * kernel));
    fill_normal(rng, l->params[0].value, l->params[0].count, std);
    return PLAIT_OK;
}

int nn_add_batchnorm(plait_unit *u, bool shortcut, const char *name) {
    plait_layer *l = path_append(u, shortcut, PLAIT_LAYER_BATCHNORM, name);
    if (!l) return PLAIT_ERROR;
    int c = l->in_shape.c;
    int64_t dims[1] = {c};
    l->bn_eps = NN_BN_EPS;
    l->bn_momentum = NN_BN_MOMENTUM;
    l->param_count = 2;
    if (param_init(&l->params[0], name, "weight", 1, dims, false) != PLAIT_OK ||
        param_init(&l->params[1], name, "bias", 1, dims, false) != PLAIT_OK)
        return PLAIT_ERROR;
    l->buffer_count = 2;
    const char *buffer_names[2] = {"running_mean", "running_var"};
    for (int b = 0; b < 2; b++) {
        snprintf(l->buffers[b].name, sizeof l->buffers[b].name, "%s.%s", name, buffer_names[b]);
        l->buffers[b].count = (size_t)c;
        l->buffers[b].value = plait_alloc((size_t)c * sizeof(float));
        if (!l->buffers[b].value) return PLAIT_ERROR;
    }
    l->bn_stat_sum = plait_alloc((size_t)c * sizeof(double));
    l->bn_stat_sumsq = plait_alloc((size_t)c * sizeof(double));
    if (!l->bn_stat_sum || !l->bn_stat_sumsq) return PLAIT_ERROR;
    for (int i = 0; i < c; i++) {
        l->params[0].value[i] = 1.0f;
        l->buffers[1].value[i] = 1.0f;
    }
    return PLAIT_OK;
}

int nn_add_activation(plait_unit *u, bool shortcut, plait_layer_kind kind, const char *name) {
    return path_append(u, shortcut, kind, name) ? PLAIT_OK : PLAIT_ERROR;
}

int nn_add_maxpool(plait_unit *u, const char *name, int kernel, int stride, int pad) {
    plait_layer *l = path_append(u, false, PLAIT_LAYER_MAXPOOL, name);
    if (!l) return PLAIT_ERROR;
    plait_shape in = l->in_shape;
    l->pool = (plait_pool2d_desc){1, in.h, in.w, in.c, kernel, stride, pad};
    int out_h = plait_pool2d_out_h(&l->pool), out_w = plait_pool2d_out_w(&l->pool);
    if (out_h < 1 || out_w < 1) return plait_fail("%s: input %dx%d is too small for max pooling", name, in.h, in.w);
    l->out_shape = (plait_shape){1, out_h, out_w, in.c};
    return PLAIT_OK;
}

int nn_add_global_avgpool(plait_unit *u, const char *name) {
    plait_layer *l = path_append(u, false, PLAIT_LAYER_GLOBAL_AVGPOOL, name);
    if (!l) return PLAIT_ERROR;
    l->out_shape = (plait_shape){1, 1, 1, l->in_shape.c};
    return PLAIT_OK;
}

int nn_add_linear(plait_unit *u, const char *name, int out_features, nn_linear_init init, plait_rng *rng) {
    plait_layer *l = path_append(u, false, PLAIT_LAYER_LINEAR, name);
    if (!l) return PLAIT_ERROR;
    plait_shape in = l->in_shape;
    if (in.h != 1 || in.w != 1) return plait_fail("%s: input must be 1x1, got %dx%d", name, in.h, in.w);
    l->out_shape = (plait_shape){1, 1, 1, out_features};
    int64_t weight_dims[2] = {out_features, in.c}, bias_dims[1] = {out_features};
    l->param_count = 2;
    if (param_init(&l->params[0], name, "weight", 2, weight_dims, true) != PLAIT_OK ||
        param_init(&l->params[1], name, "bias", 1, bias_dims, false) != PLAIT_OK)
        return PLAIT_ERROR;
    float bound = 1.0f / sqrtf((float)in.c);
    for (int p = 0; p < 2; p++) {
        plait_param *param = &l->params[p];
        for (size_t i = 0; i < param->count; i++) {
            if (init == NN_LINEAR_TORCH_DEFAULT)
                param->value[i] = bound * (2.0f * plait_rng_uniform(rng) - 1.0f);
            else
                param->value[i] = p == 0 ? 0.01f * plait_rng_normal(rng) : 0.0f;
        }
    }
    return PLAIT_OK;
}

void nn_layer_free(plait_layer *l) {
    for (int p = 0; p < l->param_count; p++) {
        plait_free(l->params[p].value);
        plait_free(l->params[p].grad);
        plait_free(l->params[p].momentum);
    }
    for (int b = 0; b < l->buffer_count; b++) plait_free(l->buffers[b].value);
    plait_free(l->bn_stat_sum);
    plait_free(l->bn_stat_sumsq);
    free(l->conv_plan);
}

double nn_layer_macs(const plait_layer *l) {
    if (l->kind == PLAIT_LAYER_CONV2D) return plait_conv2d_macs(&l->conv);
    if (l->kind == PLAIT_LAYER_LINEAR) return (double)l->in_shape.c * (double)l->out_shape.c;
    return 0.0;
}

/* ---- forward and backward ------------------------------------------------------------------ */

void nn_layer_state_free(nn_layer_state *s) {
    plait_tensor_free(&s->y);
    plait_free(s->saved_mean);
    plait_free(s->saved_invstd);
    plait_free(s->gate);
    plait_free(s->argmax);
    memset(s, 0, sizeof *s);
}

int nn_workspace_ensure(plait_workspace *ws, size_t bytes) {
    if (bytes <= ws->bytes) return PLAIT_OK;
    void *data = plait_alloc(bytes);
    if (!data) return PLAIT_ERROR;
    plait_free(ws->data);
    ws->data = data;
    ws->bytes = bytes;
    return PLAIT_OK;
}

static int batchnorm_state_ensure(nn_layer_state *s, int channels) {
    if (s->saved_channels >= channels) return PLAIT_OK;
    plait_free(s->saved_mean);
    plait_free(s->saved_invstd);
    plait_free(s->gate);
    s->saved_mean = plait_alloc((size_t)channels * sizeof(float));
    s->saved_invstd = plait_alloc((size_t)channels * sizeof(float));
    s->gate = plait_alloc(2 * (size_t)channels * sizeof(float));
    s->saved_channels = s->saved_mean && s->saved_invstd && s->gate ? channels : 0;
    return s->saved_channels ? PLAIT_OK : PLAIT_ERROR;
}

/* The micro-batch's statistics, as sums over its rows, so several micro-batches combine into the
 * statistics of their union. */
static void batchnorm_accumulate(plait_layer *l, const nn_layer_state *s, size_t rows) {
    int c = l->in_shape.c;
    for (int i = 0; i < c; i++) {
        double mean = s->saved_mean[i];
        double invstd = s->saved_invstd[i];
        double var = 1.0 / (invstd * invstd) - (double)l->bn_eps;
        if (var < 0.0) var = 0.0;
        l->bn_stat_sum[i] += (double)rows * mean;
        l->bn_stat_sumsq[i] += (double)rows * (var + mean * mean);
    }
    l->bn_stat_rows += (double)rows;
}

/* Forward of one layer; a batch normalization also adds `residual` (may be NULL) and applies the
 * activation. */
static int layer_forward(plait_layer *l, nn_layer_state *s, const plait_tensor *x, bool training, plait_workspace *ws,
                         const float *residual, plait_activation activation) {
    plait_shape in = x->shape;
    if (in.h != l->in_shape.h || in.w != l->in_shape.w || in.c != l->in_shape.c || in.n < 1)
        return plait_fail("%s: expected input %dx%dx%d, got %dx%dx%dx%d", l->name, l->in_shape.h, l->in_shape.w,
                          l->in_shape.c, in.n, in.h, in.w, in.c);
    int n = in.n;
    plait_shape out = l->out_shape;
    out.n = n;
    if (plait_tensor_reserve(&s->y, out) != PLAIT_OK) return PLAIT_ERROR;
    s->out = &s->y;
    s->x = x->data;
    s->x_shape = in;
    s->fused = false;
    s->gated = false;
    size_t rows = (size_t)n * (size_t)in.h * (size_t)in.w;
    switch (l->kind) {
    case PLAIT_LAYER_CONV2D: {
        if (nn_conv_forward(l, n, x->data, s->y.data, ws) != PLAIT_OK) return PLAIT_ERROR;
        break;
    }
    case PLAIT_LAYER_BATCHNORM:
        if (training) {
            if (batchnorm_state_ensure(s, in.c) != PLAIT_OK) return PLAIT_ERROR;
            /* with an activation and no residual, the gate lets the backward skip reading the output */
            if (activation != PLAIT_ACTIVATION_NONE && !residual)
                s->gated = batchnorm_forward_train_gated(rows, in.c, x->data, l->params[0].value, l->params[1].value,
                                                         l->bn_eps, activation, s->y.data, s->saved_mean,
                                                         s->saved_invstd, s->gate);
            else
                plait_batchnorm_forward_train_fused(rows, in.c, x->data, l->params[0].value, l->params[1].value,
                                                    l->bn_eps, residual, activation, s->y.data, s->saved_mean,
                                                    s->saved_invstd);
            batchnorm_accumulate(l, s, rows);
        } else {
            plait_batchnorm_forward_eval_fused(rows, in.c, x->data, l->params[0].value, l->params[1].value,
                                               l->buffers[0].value, l->buffers[1].value, l->bn_eps, residual,
                                               activation, s->y.data);
        }
        break;
    case PLAIT_LAYER_RELU:
        plait_relu_forward(plait_shape_count(in), x->data, s->y.data);
        break;
    case PLAIT_LAYER_RELU6:
        plait_relu6_forward(plait_shape_count(in), x->data, s->y.data);
        break;
    case PLAIT_LAYER_MAXPOOL: {
        plait_pool2d_desc d = l->pool;
        d.batch = n;
        size_t count = plait_shape_count(out);
        if (count > s->argmax_capacity) {
            plait_free(s->argmax);
            s->argmax = plait_alloc(count * sizeof(int32_t));
            s->argmax_capacity = s->argmax ? count : 0;
            if (!s->argmax) return PLAIT_ERROR;
        }
        plait_maxpool_forward(&d, x->data, s->y.data, s->argmax);
        break;
    }
    case PLAIT_LAYER_GLOBAL_AVGPOOL:
        plait_global_avgpool_forward(n, in.h * in.w, in.c, x->data, s->y.data);
        break;
    case PLAIT_LAYER_LINEAR:
        plait_linear_forward(n, in.c, out.c, x->data, l->params[0].value, l->params[1].value, s->y.data);
        break;
    }
    return PLAIT_OK;
}

int nn_layer_forward(plait_layer *l, nn_layer_state *s, const plait_tensor *x, bool training, plait_workspace *ws) {
    return layer_forward(l, s, x, training, ws, NULL, PLAIT_ACTIVATION_NONE);
}

int nn_batchnorm_forward_fused(plait_layer *l, nn_layer_state *s, const plait_tensor *x, bool training,
                               const float *residual, plait_activation activation, plait_workspace *ws) {
    if (l->kind != PLAIT_LAYER_BATCHNORM) return plait_fail("%s: only batch normalization fuses", l->name);
    return layer_forward(l, s, x, training, ws, residual, activation);
}

plait_activation nn_layer_activation(const plait_layer *l) {
    return l->kind == PLAIT_LAYER_RELU    ? PLAIT_ACTIVATION_RELU
           : l->kind == PLAIT_LAYER_RELU6 ? PLAIT_ACTIVATION_RELU6
                                          : PLAIT_ACTIVATION_NONE;
}

bool nn_layer_is_activation(const plait_layer *l) { return nn_layer_activation(l) != PLAIT_ACTIVATION_NONE; }

int nn_layer_forward_fused_away(plait_layer *l, nn_layer_state *s, plait_tensor *x) {
    if (!nn_layer_is_activation(l))
        return plait_fail("%s: only ReLU and ReLU6 fuse into batch normalization", l->name);
    s->x = x->data;
    s->x_shape = x->shape;
    s->out = x;
    s->fused = true;
    return PLAIT_OK;
}

bool nn_in_place_activations = true;

int nn_layer_forward_in_place(plait_layer *l, nn_layer_state *s, plait_tensor *x) {
    plait_shape in = x->shape;
    if (!nn_layer_is_activation(l)) return plait_fail("%s: only activations run in place", l->name);
    if (in.h != l->in_shape.h || in.w != l->in_shape.w || in.c != l->in_shape.c)
        return plait_fail("%s: expected input %dx%dx%d, got %dx%dx%dx%d", l->name, l->in_shape.h, l->in_shape.w,
                          l->in_shape.c, in.n, in.h, in.w, in.c);
    s->x = x->data;
    s->x_shape = in;
    s->out = x;
    s->fused = false;
    if (l->kind == PLAIT_LAYER_RELU) plait_relu_forward(plait_shape_count(in), x->data, x->data);
    else plait_relu6_forward(plait_shape_count(in), x->data, x->data);
    return PLAIT_OK;
}

bool nn_layer_can_skip_dx(const plait_layer *l) {
    return l->kind == PLAIT_LAYER_CONV2D || l->kind == PLAIT_LAYER_LINEAR;
}

int nn_layer_backward(plait_layer *l, nn_layer_state *s, const float *dy, float *dx, plait_workspace *ws) {
    return nn_layer_backward_masked(l, s, dy, NULL, PLAIT_ACTIVATION_NONE, dx, ws);
}

int nn_layer_backward_masked(plait_layer *l, nn_layer_state *s, const float *dy, const float *activation_output,
                             plait_activation activation, float *dx, plait_workspace *ws) {
    plait_shape in = s->x_shape;
    if (activation_output && l->kind != PLAIT_LAYER_BATCHNORM)
        return plait_fail("%s: only batch normalization takes an activation's mask", l->name);
    int n = in.n;
    size_t rows = (size_t)n * (size_t)in.h * (size_t)in.w;
    if (!dx && !nn_layer_can_skip_dx(l)) return plait_fail("%s: backward needs an input gradient buffer", l->name);
    switch (l->kind) {
    case PLAIT_LAYER_CONV2D: {
        if (nn_conv_backward(l, n, s->x, dy, dx, ws) != PLAIT_OK) return PLAIT_ERROR;
        break;
    }
    case PLAIT_LAYER_BATCHNORM:
        if (activation_output && s->gated)
            batchnorm_backward_gated(rows, in.c, s->x, dy, s->gate, l->params[0].value, s->saved_mean,
                                     s->saved_invstd, dx, l->params[0].grad, l->params[1].grad);
        else
            plait_batchnorm_backward_fused(rows, in.c, s->x, dy, activation_output, activation, l->params[0].value,
                                           s->saved_mean, s->saved_invstd, dx, l->params[0].grad, l->params[1].grad);
        break;
    case PLAIT_LAYER_RELU:
        plait_relu_backward(plait_shape_count(in), s->out->data, dy, dx);
        break;
    case PLAIT_LAYER_RELU6:
        plait_relu6_backward(plait_shape_count(in), s->out->data, dy, dx);
        break;
    case PLAIT_LAYER_MAXPOOL: {
        plait_pool2d_desc d = l->pool;
        d.batch = n;
        plait_maxpool_backward(&d, dy, s->argmax, dx);
        break;
    }
    case PLAIT_LAYER_GLOBAL_AVGPOOL:
        plait_global_avgpool_backward(n, in.h * in.w, in.c, dy, dx);
        break;
    case PLAIT_LAYER_LINEAR:
        plait_linear_backward(n, in.c, l->out_shape.c, s->x, l->params[0].value, dy, dx, l->params[0].grad,
                              l->params[1].grad);
        break;
    }
    return PLAIT_OK;
}
