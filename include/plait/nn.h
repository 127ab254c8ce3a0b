/* plait networks: layers, units and models.
 *
 * A model is a sequence of units; exactly one tensor flows between consecutive units, so any
 * contiguous range of units can be a pipeline stage. A unit is a main path of layers, an optional
 * shortcut path (empty = identity), an optional residual add and an optional ReLU after the add.
 *
 * Parameters live in the units; everything a forward pass must keep for its backward pass (layer
 * outputs, batch statistics, max-pool indices) lives in a plait_unit_state, one per micro-batch in
 * flight, so a pipeline can hold several micro-batches at once.
 */
#ifndef PLAIT_NN_H
#define PLAIT_NN_H

#include <stdio.h>

#include "plait/core.h"
#include "plait/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum plait_layer_kind {
    PLAIT_LAYER_CONV2D,
    PLAIT_LAYER_BATCHNORM,
    PLAIT_LAYER_RELU,
    PLAIT_LAYER_RELU6,
    PLAIT_LAYER_MAXPOOL,
    PLAIT_LAYER_GLOBAL_AVGPOOL, /* output {n,1,1,c} */
    PLAIT_LAYER_LINEAR,         /* input {n,1,1,in}, output {n,1,1,out} */
} plait_layer_kind;

/* A learnable tensor. `name` is torchvision's state-dict name (conv1.weight, layer1.0.bn1.bias,
 * fc.weight, ...). dims are torchvision's (OIHW for conv weights) while `value` is stored in plait's
 * layout (OHWI for conv weights); plait_param_to_torch/from_torch convert. */
typedef struct plait_param {
    char name[96];
    float *value, *grad, *momentum;
    size_t count;
    int ndim;
    int64_t dims[4];
    bool conv_weight; /* stored OHWI, named OIHW */
    bool decay;       /* weight decay applies (conv and linear weights; not BN or biases) */
} plait_param;

/* A non-learnable tensor saved in checkpoints (batch-norm running statistics). */
typedef struct plait_buffer {
    char name[96];
    float *value;
    size_t count;
} plait_buffer;

typedef struct plait_layer {
    plait_layer_kind kind;
    char name[80]; /* torchvision prefix, e.g. "layer1.0.conv1" */
    plait_shape in_shape, out_shape; /* for batch 1; n is set per call */
    plait_conv2d_desc conv;          /* conv; batch field set per call */
    const plait_conv2d_kernel *conv_kernel; /* fallback when no direct plan applies */
    struct plait_conv_plan *conv_plan;       /* direct/Winograd schedules for conv_plan_batch */
    const struct plait_tuning *conv_plan_tuning;
    int conv_plan_batch;                     /* 0: no plan made yet; -1: direct kernels do not apply */
    plait_pool2d_desc pool;
    float bn_eps, bn_momentum;
    plait_param params[2]; /* conv: weight; bn: weight, bias; linear: weight, bias */
    int param_count;
    plait_buffer buffers[2]; /* bn: running_mean, running_var */
    int buffer_count;
    int64_t num_batches_tracked;    /* bn */
    double *bn_stat_sum, *bn_stat_sumsq; /* bn: this mini-batch's statistics over all micro-batches */
    double bn_stat_rows;
} plait_layer;

/* Convolution scratch, shared by all units of a model: it is needed only during one call, and the
 * largest (the stem's im2col) would otherwise be held once per micro-batch in flight. So units of one
 * model must not run forward/backward concurrently from several threads. */
typedef struct plait_workspace {
    void *data;
    size_t bytes;
} plait_workspace;

typedef struct plait_unit {
    char name[32]; /* "stem", "layer2.1", "head", "features.3" */
    plait_layer *main;
    int main_count;
    plait_layer *shortcut; /* NULL/0 = identity shortcut when residual */
    int shortcut_count;
    bool residual;
    bool post_relu;
    plait_shape in_shape, out_shape; /* for batch 1 */
    plait_workspace *workspace;      /* the model's */
} plait_unit;

typedef struct plait_model {
    char name[32];
    plait_shape input; /* for batch 1 */
    int classes;
    plait_unit *units;
    int unit_count;
    plait_workspace workspace;
} plait_model;

/* Names: resnet18, resnet34, resnet50 (torchvision: 7x7 stride-2 stem and max pooling),
 * cifar_resnet18, cifar_resnet34, cifar_resnet50 (3x3 stride-1 stem, no max pooling), resnet20,
 * resnet56 (He et al. CIFAR nets, 16/32/64 channels, projection shortcuts), mobilenetv2 (without the
 * classifier's dropout). Units: "stem" (or "features.0"), "layer1.0", ... (or "features.N"), "head".
 * Weights are initialized as torchvision does, from `seed`. */
int plait_model_create(const char *name, plait_shape input, int classes, uint64_t seed, plait_model **out);
void plait_model_free(plait_model *m);
const char *const *plait_model_names(void); /* NULL-terminated */
/* torchvision's zero_init_residual: the last batch normalization of every residual unit's main path starts
 * with weight (gamma) 0, so each block starts as its shortcut (Goyal et al. 2017). Returns the number of
 * batch normalizations set. */
int plait_model_zero_init_residual(plait_model *m);

/* Every layer of units [first, last) in model order (main path, then shortcut, per unit): for the
 * tuner (conv_kernel) and checkpoints (num_batches_tracked). The caller frees the array. */
int plait_model_layers(plait_model *m, int first, int last, plait_layer ***layers, int *count);
/* Every learnable parameter and buffer of units [first, last), in model order. */
int plait_model_params(plait_model *m, int first, int last, plait_param ***params, int *count);
int plait_model_buffers(plait_model *m, int first, int last, plait_buffer ***buffers, int *count);
size_t plait_model_param_count(const plait_model *m); /* number of learnable scalars */
/* Multiply-adds of one forward at batch 1, of convolutions and linear layers (as papers count). */
double plait_unit_macs(const plait_unit *u);

/* Copy one of a parameter's arrays (value, grad or momentum) between plait's layout and
 * torchvision's (OHWI <-> OIHW for conv weights, plain copy otherwise); `count` floats each. */
void plait_param_to_torch(const plait_param *p, const float *plait_layout, float *torch_layout);
void plait_param_from_torch(const plait_param *p, const float *torch_layout, float *plait_layout);

/* Activations kept between forward and backward of one micro-batch through one unit. */
typedef struct plait_unit_state plait_unit_state;
plait_unit_state *plait_unit_state_create(void);
void plait_unit_state_free(plait_unit_state *s);
/* Bytes the state holds now (activations, saved statistics, gradient buffers), for memory profiles;
 * it grows to fit the largest micro-batch seen and keeps that. */
size_t plait_unit_state_bytes(const plait_unit_state *s);

/* Forward through one unit. *y points into the state and stays valid until the state's next
 * forward. training = batch statistics (accumulated for the running update) and saved activations.
 * A training forward keeps a pointer to x, not a copy: x must stay valid and unchanged until the
 * matching plait_unit_backward. A state may serve any unit; it adapts on the next forward. */
int plait_unit_forward(plait_unit *u, plait_unit_state *s, const plait_tensor *x, bool training,
                       const plait_tensor **y);
/* Backward through one unit after a training forward with the same state. Accumulates parameter
 * gradients; writes dx into the state (NULL dx skips the input gradient, for the first unit). */
int plait_unit_backward(plait_unit *u, plait_unit_state *s, const plait_tensor *dy, const plait_tensor **dx);

/* Zero the gradients and the mini-batch BN statistics of units [first, last). */
void plait_model_zero_grad(plait_model *m, int first, int last);
/* Fold the mini-batch's BN statistics (over all micro-batches) into the running statistics. */
void plait_model_update_running_stats(plait_model *m, int first, int last);

/* Convolution back ends. AUTO: the direct kernels (with the tuned schedules of the tuning set with
 * plait_nn_set_tuning, else default schedules) wherever they apply, im2col + BLAS elsewhere.
 * IM2COL: im2col + BLAS (and direct depthwise loops) everywhere, the engine's reference path. */
typedef enum plait_conv_backend { PLAIT_CONV_BACKEND_AUTO, PLAIT_CONV_BACKEND_IM2COL } plait_conv_backend;
void plait_nn_set_conv_backend(plait_conv_backend backend);
struct plait_tuning;
/* Schedules for the convolutions of every model from now on; NULL for default schedules. The tuning
 * must outlive its use. */
void plait_nn_set_tuning(const struct plait_tuning *tuning);

/* Print the summary table: each unit's output shape, parameters and multiply-adds, then totals. */
void plait_model_print_summary(const plait_model *m, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
