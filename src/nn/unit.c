/* Units: a main path, an optional shortcut path, residual add and ReLU, run per micro-batch state. */
#include <stdlib.h>
#include <string.h>

#include "nn/nn_internal.h"

struct plait_unit_state {
    nn_layer_state *main, *shortcut;
    int main_capacity, shortcut_capacity;
    plait_tensor *result;     /* the unit's output */
    plait_tensor post_relu;   /* the output when activations do not run in place */
    plait_tensor dsum;        /* gradient at the residual sum */
    plait_tensor dx, dx_shortcut;
    plait_tensor scratch[2];  /* gradients between layers, ping-pong */
    const plait_unit *unit;   /* of the last forward */
    plait_shape x_shape;
    bool trained;             /* the last forward was a training one */
};

plait_unit_state *plait_unit_state_create(void) { return plait_alloc(sizeof(plait_unit_state)); }

void plait_unit_state_free(plait_unit_state *s) {
    if (!s) return;
    for (int i = 0; i < s->main_capacity; i++) nn_layer_state_free(&s->main[i]);
    for (int i = 0; i < s->shortcut_capacity; i++) nn_layer_state_free(&s->shortcut[i]);
    free(s->main);
    free(s->shortcut);
    plait_tensor_free(&s->post_relu);
    plait_tensor_free(&s->dsum);
    plait_tensor_free(&s->dx);
    plait_tensor_free(&s->dx_shortcut);
    plait_tensor_free(&s->scratch[0]);
    plait_tensor_free(&s->scratch[1]);
    plait_free(s);
}

static size_t layer_state_bytes(const nn_layer_state *s) {
    return s->y.capacity * sizeof(float) + (size_t)s->saved_channels * 2 * sizeof(float) +
           s->argmax_capacity * sizeof(int32_t);
}

size_t plait_unit_state_bytes(const plait_unit_state *s) {
    size_t bytes = 0;
    for (int i = 0; i < s->main_capacity; i++) bytes += layer_state_bytes(&s->main[i]);
    for (int i = 0; i < s->shortcut_capacity; i++) bytes += layer_state_bytes(&s->shortcut[i]);
    const plait_tensor *tensors[] = {&s->post_relu, &s->dsum, &s->dx, &s->dx_shortcut, &s->scratch[0], &s->scratch[1]};
    for (size_t i = 0; i < sizeof tensors / sizeof tensors[0]; i++) bytes += tensors[i]->capacity * sizeof(float);
    return bytes;
}

const nn_layer_state *nn_unit_state_layers(const plait_unit_state *s, bool shortcut) {
    return shortcut ? s->shortcut : s->main;
}

static int layer_states_ensure(nn_layer_state **states, int *capacity, int count) {
    if (count <= *capacity) return PLAIT_OK;
    nn_layer_state *grown = realloc(*states, (size_t)count * sizeof **states);
    if (!grown) return plait_fail("out of memory for unit state");
    memset(grown + *capacity, 0, (size_t)(count - *capacity) * sizeof *grown);
    *states = grown;
    *capacity = count;
    return PLAIT_OK;
}

/* The path's layers in order. With fusion on, a batch normalization followed by a ReLU or ReLU6 runs
 * as one pass, and `residual` (may be NULL) and `relu` apply to the path's output: fused into the last
 * layer when it is a batch normalization, else as separate passes. */
static int path_forward(plait_layer *layers, nn_layer_state *states, int count, const plait_tensor *x, bool training,
                        plait_workspace *ws, const float *residual, bool relu, plait_tensor **y) {
    const bool fuse = nn_in_place_activations;
    const plait_tensor *current = x;
    for (int i = 0; i < count; i++) {
        bool last = i == count - 1;
        int rc;
        if (fuse && i > 0 && nn_layer_is_activation(&layers[i]) && layers[i - 1].kind == PLAIT_LAYER_BATCHNORM) {
            rc = nn_layer_forward_fused_away(&layers[i], &states[i], states[i - 1].out);
        } else if (fuse && layers[i].kind == PLAIT_LAYER_BATCHNORM) {
            plait_activation next = last ? PLAIT_ACTIVATION_NONE : nn_layer_activation(&layers[i + 1]);
            rc = nn_batchnorm_forward_fused(&layers[i], &states[i], current, training, last ? residual : NULL,
                                            last ? (relu ? PLAIT_ACTIVATION_RELU : PLAIT_ACTIVATION_NONE) : next,
                                            ws);
            if (last) residual = NULL, relu = false; /* done */
        } else {
            /* an activation may overwrite its input when that is the previous layer's own output */
            bool in_place = nn_in_place_activations && i > 0 && nn_layer_is_activation(&layers[i]) &&
                            !nn_layer_is_activation(&layers[i - 1]);
            rc = in_place ? nn_layer_forward_in_place(&layers[i], &states[i], states[i - 1].out)
                          : nn_layer_forward(&layers[i], &states[i], current, training, ws);
        }
        if (rc != PLAIT_OK) return PLAIT_ERROR;
        current = states[i].out;
    }
    *y = states[count - 1].out;
    if (residual) plait_add(plait_shape_count((*y)->shape), (*y)->data, residual, (*y)->data);
    if (relu) plait_relu_forward(plait_shape_count((*y)->shape), (*y)->data, (*y)->data);
    return PLAIT_OK;
}

int plait_unit_forward(plait_unit *u, plait_unit_state *s, const plait_tensor *x, bool training,
                       const plait_tensor **y) {
    s->trained = false;
    s->unit = u;
    if (layer_states_ensure(&s->main, &s->main_capacity, u->main_count) != PLAIT_OK ||
        layer_states_ensure(&s->shortcut, &s->shortcut_capacity, u->shortcut_count) != PLAIT_OK)
        return PLAIT_ERROR;
    plait_tensor *main_out, *shortcut_out = NULL;
    if (nn_in_place_activations) {
        /* fused: the shortcut first, so the main path's last pass adds it and applies the ReLU */
        if (u->residual && u->shortcut_count > 0 &&
            path_forward(u->shortcut, s->shortcut, u->shortcut_count, x, training, u->workspace, NULL, false,
                         &shortcut_out) != PLAIT_OK)
            return PLAIT_ERROR;
        const float *residual = !u->residual ? NULL : shortcut_out ? shortcut_out->data : x->data;
        if (path_forward(u->main, s->main, u->main_count, x, training, u->workspace, residual, u->post_relu,
                         &main_out) != PLAIT_OK)
            return PLAIT_ERROR;
    } else {
        if (path_forward(u->main, s->main, u->main_count, x, training, u->workspace, NULL, false, &main_out) !=
            PLAIT_OK)
            return PLAIT_ERROR;
        if (u->residual) {
            if (u->shortcut_count > 0 && path_forward(u->shortcut, s->shortcut, u->shortcut_count, x, training,
                                                      u->workspace, NULL, false, &shortcut_out) != PLAIT_OK)
                return PLAIT_ERROR;
            /* the last main layer (batchnorm) does not need its output for backward, so add in place */
            plait_add(plait_shape_count(main_out->shape), main_out->data,
                      shortcut_out ? shortcut_out->data : x->data, main_out->data);
        }
        if (u->post_relu) {
            if (plait_tensor_reserve(&s->post_relu, main_out->shape) != PLAIT_OK) return PLAIT_ERROR;
            plait_relu_forward(plait_shape_count(main_out->shape), main_out->data, s->post_relu.data);
            main_out = &s->post_relu;
        }
    }
    s->result = main_out;
    s->x_shape = x->shape;
    s->trained = training;
    *y = main_out;
    return PLAIT_OK;
}

/* Backward through a path from dy, masked to where relu_output > 0 when that is not NULL (the last
 * layer is then a batch normalization); the first layer writes into dx (NULL: skip when it can). A
 * ReLU or ReLU6 fused into the batch normalization before it passes its output on as that layer's mask. */
static int path_backward(plait_unit_state *s, plait_layer *layers, nn_layer_state *states, int count,
                         const float *dy, const float *relu_output, float *dx, plait_workspace *ws) {
    const float *current = dy, *mask = relu_output;
    plait_activation activation = relu_output ? PLAIT_ACTIVATION_RELU : PLAIT_ACTIVATION_NONE;
    for (int i = count - 1; i >= 0; i--) {
        if (states[i].fused) {
            mask = states[i].out->data;
            activation = nn_layer_activation(&layers[i]);
            continue;
        }
        float *destination = dx;
        /* batch normalization writes its dx over its dy where that is this path's own scratch (each element is
         * read before it is written): no read-for-ownership of a second buffer. Xeon, one thread, the BN
         * backward alone: 58 MB 1.11-1.18x, 14.5 MB 1.03-1.07x */
        plait_tensor *holding = s->scratch[0].data == current ? &s->scratch[0]
                                : s->scratch[1].data == current ? &s->scratch[1]
                                                                : NULL;
        if (i > 0 || (!dx && !nn_layer_can_skip_dx(&layers[i]))) {
            plait_tensor *t = holding == &s->scratch[0] ? &s->scratch[1] : &s->scratch[0];
            if (holding && layers[i].kind == PLAIT_LAYER_BATCHNORM) t = holding;
            if (plait_tensor_reserve(t, states[i].x_shape) != PLAIT_OK) return PLAIT_ERROR;
            destination = t->data;
        }
        if (nn_layer_backward_masked(&layers[i], &states[i], current, mask, activation, destination, ws) !=
            PLAIT_OK)
            return PLAIT_ERROR;
        current = destination;
        mask = NULL;
        activation = PLAIT_ACTIVATION_NONE;
    }
    return PLAIT_OK;
}

static bool ends_in_batchnorm(const plait_layer *layers, int count) {
    return count > 0 && layers[count - 1].kind == PLAIT_LAYER_BATCHNORM;
}

int plait_unit_backward(plait_unit *u, plait_unit_state *s, const plait_tensor *dy, const plait_tensor **dx) {
    if (s->unit != u || !s->trained) return plait_fail("%s: backward without a training forward", u->name);
    plait_shape out = u->out_shape;
    out.n = s->x_shape.n;
    if (!plait_shape_equal(dy->shape, out))
        return plait_fail("%s: output gradient is %dx%dx%dx%d, expected %dx%dx%dx%d", u->name, dy->shape.n,
                          dy->shape.h, dy->shape.w, dy->shape.c, out.n, out.h, out.w, out.c);
    size_t out_count = plait_shape_count(out), in_count = plait_shape_count(s->x_shape);
    const float *gradient = dy->data, *mask = NULL;
    if (u->post_relu) {
        /* fused: each path's last batch normalization applies the ReLU's gradient as it reads dy */
        bool fuse = nn_in_place_activations && ends_in_batchnorm(u->main, u->main_count) &&
                    (!u->residual || u->shortcut_count == 0 || ends_in_batchnorm(u->shortcut, u->shortcut_count));
        if (fuse) {
            mask = s->result->data;
        } else {
            if (plait_tensor_reserve(&s->dsum, out) != PLAIT_OK) return PLAIT_ERROR;
            plait_relu_backward(out_count, s->result->data, gradient, s->dsum.data);
            gradient = s->dsum.data;
        }
    }
    float *input_gradient = NULL, *shortcut_gradient = NULL;
    if (dx) {
        if (plait_tensor_reserve(&s->dx, s->x_shape) != PLAIT_OK) return PLAIT_ERROR;
        input_gradient = s->dx.data;
    }
    if (u->residual && u->shortcut_count > 0) {
        if (dx) {
            if (plait_tensor_reserve(&s->dx_shortcut, s->x_shape) != PLAIT_OK) return PLAIT_ERROR;
            shortcut_gradient = s->dx_shortcut.data;
        }
        if (path_backward(s, u->shortcut, s->shortcut, u->shortcut_count, gradient, mask, shortcut_gradient,
                          u->workspace) != PLAIT_OK)
            return PLAIT_ERROR;
    }
    if (path_backward(s, u->main, s->main, u->main_count, gradient, mask, input_gradient, u->workspace) != PLAIT_OK)
        return PLAIT_ERROR;
    if (dx) {
        if (u->residual && u->shortcut_count > 0)
            plait_add(in_count, s->dx.data, shortcut_gradient, s->dx.data);
        else if (u->residual && mask)
            plait_relu_backward_add(in_count, mask, gradient, s->dx.data);
        else if (u->residual)
            plait_add(in_count, s->dx.data, gradient, s->dx.data);
        *dx = &s->dx;
    }
    return PLAIT_OK;
}

int nn_unit_finish(plait_unit *u) {
    if (u->main_count < 1) return plait_fail("%s: a unit needs at least one layer", u->name);
    const plait_layer *last = &u->main[u->main_count - 1];
    u->out_shape = last->out_shape;
    if (!u->residual) return PLAIT_OK;
    if (last->kind == PLAIT_LAYER_RELU || last->kind == PLAIT_LAYER_RELU6)
        return plait_fail("%s: a residual main path must not end in an activation", u->name);
    plait_shape shortcut = u->shortcut_count > 0 ? u->shortcut[u->shortcut_count - 1].out_shape : u->in_shape;
    if (!plait_shape_equal(shortcut, u->out_shape))
        return plait_fail("%s: shortcut output %dx%dx%d does not match main output %dx%dx%d", u->name, shortcut.h,
                          shortcut.w, shortcut.c, u->out_shape.h, u->out_shape.w, u->out_shape.c);
    return PLAIT_OK;
}
