/* Internal pieces of src/nn: building layers, units and models, and running one layer. Tests use
 * the builders to make tiny units with few channels. */
#ifndef PLAIT_NN_INTERNAL_H
#define PLAIT_NN_INTERNAL_H

#include "plait/nn.h"

#define NN_BN_EPS 1e-5f
#define NN_BN_MOMENTUM 0.1f

typedef enum nn_linear_init {
    NN_LINEAR_TORCH_DEFAULT, /* nn.Linear's own: uniform +-1/sqrt(in) for weight and bias */
    NN_LINEAR_NORMAL_SMALL,  /* MobileNetV2: normal(0, 0.01), bias 0 */
} nn_linear_init;

/* Per-layer part of a unit state: the layer's output and what its backward needs. */
typedef struct nn_layer_state {
    plait_tensor y;
    plait_tensor *out; /* the output: &y, or for an in-place activation the previous layer's */
    const float *x; /* the input of the last training forward (previous layer's y or the unit input) */
    plait_shape x_shape;
    float *saved_mean, *saved_invstd; /* batchnorm */
    float *gate;                      /* batchnorm with an activation fused: where it passes the gradient */
    bool gated;                       /* the last training forward wrote the gate */
    int saved_channels;
    bool fused;      /* an activation computed by the previous layer's fused pass */
    int32_t *argmax; /* maxpool */
    size_t argmax_capacity;
} nn_layer_state;

void nn_layer_state_free(nn_layer_state *s);
/* The per-layer states of a unit state's main path or shortcut (tests look at activations). */
const nn_layer_state *nn_unit_state_layers(const plait_unit_state *s, bool shortcut);
void nn_layer_free(plait_layer *l);
/* Grows the shared convolution workspace to at least `bytes`. */
int nn_workspace_ensure(plait_workspace *ws, size_t bytes);
/* Convolution layers through the tuned direct kernels where they apply, else the layer's kernel. */
int nn_conv_forward(plait_layer *l, int batch, const float *x, float *y, plait_workspace *ws);
int nn_conv_backward(plait_layer *l, int batch, const float *x, const float *dy, float *dx, plait_workspace *ws);

/* Forward of one layer on x (batch taken from x). Keeps a pointer to x for backward. */
int nn_layer_forward(plait_layer *l, nn_layer_state *s, const plait_tensor *x, bool training, plait_workspace *ws);
/* ReLU/ReLU6 overwriting x, which must be the output of a layer whose backward does not read its own
 * output (anything but an activation). Saves a third of a ResNet's activation memory. */
int nn_layer_forward_in_place(plait_layer *l, nn_layer_state *s, plait_tensor *x);
bool nn_layer_is_activation(const plait_layer *l);
/* On by default; tests turn it off to look at pre-activations. It also turns on fusion: ReLU or ReLU6 and
 * the residual add into the batch normalization before them (forward and backward). */
extern bool nn_in_place_activations;
/* Batch normalization followed by `residual` (may be NULL; the output's shape) added and the
 * activation, in one pass over memory (ops.h, plait_batchnorm_forward_train_fused). */
int nn_batchnorm_forward_fused(plait_layer *l, nn_layer_state *s, const plait_tensor *x, bool training,
                               const float *residual, plait_activation activation, plait_workspace *ws);
/* The activation an activation layer is (PLAIT_ACTIVATION_NONE for other layers). */
plait_activation nn_layer_activation(const plait_layer *l);
/* A ReLU or ReLU6 whose work the batch normalization before it did: records x (that layer's output) as
 * both input and output, as an in-place activation would. */
int nn_layer_forward_fused_away(plait_layer *l, nn_layer_state *s, plait_tensor *x);
/* dx may be NULL for layers that can skip their input gradient (conv, linear); others need it. */
int nn_layer_backward(plait_layer *l, nn_layer_state *s, const float *dy, float *dx, plait_workspace *ws);
/* As nn_layer_backward, with dy masked to where the activation's output lets it through (batch
 * normalization only; NULL: no mask): the backward of an activation fused into it. */
int nn_layer_backward_masked(plait_layer *l, nn_layer_state *s, const float *dy, const float *activation_output,
                             plait_activation activation, float *dx, plait_workspace *ws);
bool nn_layer_can_skip_dx(const plait_layer *l);
double nn_layer_macs(const plait_layer *l);

/* ---- builders ----------------------------------------------------------------------------- */

/* An empty model; units are appended with nn_model_add_unit, each taking the previous unit's output
 * shape as its input. */
plait_model *nn_model_new(const char *name, plait_shape input, int classes);
plait_unit *nn_model_add_unit(plait_model *m, const char *name);
/* Checks residual shapes and sets the unit's output shape. */
int nn_unit_finish(plait_unit *u);

/* Append a layer to the unit's main path (shortcut = false) or shortcut path; the input shape is
 * the path's current output. */
int nn_add_conv(plait_unit *u, bool shortcut, const char *name, int out_channels, int kernel, int stride, int pad,
                int groups, plait_rng *rng);
int nn_add_batchnorm(plait_unit *u, bool shortcut, const char *name);
int nn_add_activation(plait_unit *u, bool shortcut, plait_layer_kind kind, const char *name);
int nn_add_maxpool(plait_unit *u, const char *name, int kernel, int stride, int pad);
int nn_add_global_avgpool(plait_unit *u, const char *name);
int nn_add_linear(plait_unit *u, const char *name, int out_features, nn_linear_init init, plait_rng *rng);

/* Blocks (src/nn/resnet.c, src/nn/mobilenet.c), appended to a model as one unit each. */
int nn_resnet_stem(plait_model *m, int channels, bool imagenet, plait_rng *rng);
int nn_basic_block(plait_model *m, const char *name, int planes, int stride, plait_rng *rng);
int nn_bottleneck(plait_model *m, const char *name, int planes, int stride, plait_rng *rng); /* out 4*planes */
int nn_classifier_head(plait_model *m, const char *linear_name, int classes, nn_linear_init init, plait_rng *rng);
int nn_inverted_residual(plait_model *m, const char *name, int out_channels, int stride, int expand_ratio,
                         plait_rng *rng);

int nn_build_resnet(plait_model *m, const char *name, plait_rng *rng);
int nn_build_mobilenetv2(plait_model *m, plait_rng *rng);

#endif
