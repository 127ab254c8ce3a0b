/* plait operators: forward and backward of every layer kind, float32, NHWC activations.
 *
 * Conventions shared by every function here:
 * - Activations are NHWC. Convolution weights are [K][R][S][C/groups] ("OHWI"); checkpoints convert
 *   to and from torchvision's OIHW at the file boundary.
 * - Backward functions ACCUMULATE parameter gradients (dw += ...), so micro-batches can add into one
 *   gradient; callers zero gradients at the start of a step. Input gradients (dx) are OVERWRITTEN.
 * - Functions parallelize internally over plait_threads() threads; callers never call them from
 *   inside a parallel region.
 */
#ifndef PLAIT_OPS_H
#define PLAIT_OPS_H

#include "plait/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- convolution -------------------------------------------------------------------------- */

typedef struct plait_conv2d_desc {
    int batch, in_h, in_w, in_channels;
    int out_channels, kernel_h, kernel_w;
    int stride_h, stride_w, pad_h, pad_w;
    int groups; /* 1 = standard; in_channels == out_channels == groups = depthwise */
} plait_conv2d_desc;

int plait_conv2d_out_h(const plait_conv2d_desc *d);
int plait_conv2d_out_w(const plait_conv2d_desc *d);
/* Checks the description (positive sizes, divisible groups, output at least 1x1). */
int plait_conv2d_validate(const plait_conv2d_desc *d);
/* Multiply-adds of one forward pass (kernel taps x outputs, padding included, as papers count). */
double plait_conv2d_macs(const plait_conv2d_desc *d);

/* A convolution implementation: a small table of function pointers, so a tuned kernel can replace the
 * default one per layer. `workspace` holds workspace_bytes(d) bytes, 64-byte aligned. */
typedef struct plait_conv2d_kernel {
    const char *name;
    bool (*supports)(const plait_conv2d_desc *d);
    size_t (*workspace_bytes)(const plait_conv2d_desc *d);
    void (*forward)(const plait_conv2d_desc *d, const float *x, const float *w, float *y, void *workspace);
    void (*backward_data)(const plait_conv2d_desc *d, const float *dy, const float *w, float *dx, void *workspace);
    /* dw += gradient */
    void (*backward_weights)(const plait_conv2d_desc *d, const float *x, const float *dy, float *dw, void *workspace);
} plait_conv2d_kernel;

/* im2col + OpenBLAS sgemm; supports every description. */
extern const plait_conv2d_kernel plait_conv2d_im2col_blas;
/* Direct loops for depthwise convolutions (groups == in_channels == out_channels). */
extern const plait_conv2d_kernel plait_conv2d_depthwise_direct;
/* The kernel used when nothing better is known for this description. */
const plait_conv2d_kernel *plait_conv2d_default_kernel(const plait_conv2d_desc *d);

/* ---- batch normalization over rows = N*H*W, per channel ------------------------------------ */

/* Training: normalizes with the batch's own statistics; saves mean and 1/sqrt(var+eps) (biased var)
 * for backward. */
void plait_batchnorm_forward_train(size_t rows, int channels, const float *x, const float *gamma, const float *beta,
                                   float eps, float *y, float *saved_mean, float *saved_invstd);
/* Evaluation: normalizes with running statistics. */
void plait_batchnorm_forward_eval(size_t rows, int channels, const float *x, const float *gamma, const float *beta,
                                  const float *running_mean, const float *running_var, float eps, float *y);
/* dx overwritten; dgamma, dbeta accumulated. */
void plait_batchnorm_backward(size_t rows, int channels, const float *x, const float *dy, const float *gamma,
                              const float *saved_mean, const float *saved_invstd, float *dx, float *dgamma,
                              float *dbeta);

/* The activation a batch normalization's passes apply after it (ResNet's ReLU, MobileNet's ReLU6). */
typedef enum plait_activation {
    PLAIT_ACTIVATION_NONE = 0,
    PLAIT_ACTIVATION_RELU = 1,  /* max(y, 0) */
    PLAIT_ACTIVATION_RELU6 = 2, /* min(max(y, 0), 6) */
} plait_activation;

/* Fused with what follows a batch normalization in a ResNet or MobileNet, saving whole passes over
 * memory: y = bn(x), then y += residual when residual is not NULL, then the activation. Identical bits
 * to the unfused composition (batchnorm, plait_add, plait_relu_forward or plait_relu6_forward). y may
 * alias residual, not x. */
void plait_batchnorm_forward_train_fused(size_t rows, int channels, const float *x, const float *gamma,
                                         const float *beta, float eps, const float *residual,
                                         plait_activation activation, float *y, float *saved_mean,
                                         float *saved_invstd);
void plait_batchnorm_forward_eval_fused(size_t rows, int channels, const float *x, const float *gamma,
                                        const float *beta, const float *running_mean, const float *running_var,
                                        float eps, const float *residual, plait_activation activation, float *y);
/* Backward of batch normalization whose output went through an activation: the gradient at the
 * normalized output is dy where the activation's output lets it through (ReLU: output > 0; ReLU6:
 * 0 < output < 6) and 0 elsewhere (activation_output NULL or PLAIT_ACTIVATION_NONE: dy itself), as
 * plait_relu_backward or plait_relu6_backward then plait_batchnorm_backward, with identical bits. dx
 * may alias dy. */
void plait_batchnorm_backward_fused(size_t rows, int channels, const float *x, const float *dy,
                                    const float *activation_output, plait_activation activation,
                                    const float *gamma, const float *saved_mean, const float *saved_invstd,
                                    float *dx, float *dgamma, float *dbeta);

/* ---- element-wise -------------------------------------------------------------------------- */

void plait_relu_forward(size_t count, const float *x, float *y);
/* Uses the output y (y > 0 exactly where x > 0), so x need not be kept. dx may alias dy. */
void plait_relu_backward(size_t count, const float *y, const float *dy, float *dx);
/* dx += (y > 0 ? dy : 0): the gradient through a ReLU added into an identity shortcut's gradient. */
void plait_relu_backward_add(size_t count, const float *y, const float *dy, float *dx);
void plait_relu6_forward(size_t count, const float *x, float *y);
void plait_relu6_backward(size_t count, const float *y, const float *dy, float *dx);
/* y = a + b; y may alias a or b. */
void plait_add(size_t count, const float *a, const float *b, float *y);

/* ---- pooling ------------------------------------------------------------------------------- */

typedef struct plait_pool2d_desc {
    int batch, in_h, in_w, channels;
    int kernel, stride, pad;
} plait_pool2d_desc;
int plait_pool2d_out_h(const plait_pool2d_desc *d);
int plait_pool2d_out_w(const plait_pool2d_desc *d);
/* Max pooling; padding counts as -infinity; argmax[i] is the input index (within the batch) chosen. */
void plait_maxpool_forward(const plait_pool2d_desc *d, const float *x, float *y, int32_t *argmax);
void plait_maxpool_backward(const plait_pool2d_desc *d, const float *dy, const int32_t *argmax, float *dx);
/* Global average pooling: [N,H,W,C] -> [N,C]. */
void plait_global_avgpool_forward(int batch, int hw, int channels, const float *x, float *y);
void plait_global_avgpool_backward(int batch, int hw, int channels, const float *dy, float *dx);

/* ---- fully connected: y[N,out] = x[N,in] * w[out,in]^T + b ----------------------------------- */

void plait_linear_forward(int batch, int in_features, int out_features, const float *x, const float *w,
                          const float *b, float *y);
/* dx overwritten (may be NULL to skip); dw, db accumulated. */
void plait_linear_backward(int batch, int in_features, int out_features, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *db);

/* ---- loss ---------------------------------------------------------------------------------- */

/* Mean softmax cross-entropy over the batch with label smoothing in [0,1). Writes dlogits (the
 * gradient of the mean loss) when not NULL, and the number of correct argmax predictions into
 * *correct when not NULL. Returns the mean loss. */
float plait_softmax_cross_entropy(int batch, int classes, const float *logits, const int32_t *labels,
                                  float label_smoothing, float *dlogits, int *correct);

/* ---- optimizer ----------------------------------------------------------------------------- */

/* SGD as PyTorch defines it (dampening 0): g = grad + wd*p; buf = momentum*buf + g;
 * g = nesterov ? g + momentum*buf : buf; p -= lr*g. buf starts at zero. */
void plait_sgd_step(size_t count, float *param, const float *grad, float *momentum_buffer, float lr, float momentum,
                    float weight_decay, bool nesterov);

/* Learning-rate schedules, evaluated per optimizer step. */
typedef enum plait_lr_kind {
    PLAIT_LR_CONSTANT,
    PLAIT_LR_STEP,     /* lr * gamma^(floor(step / step_size)) */
    PLAIT_LR_COSINE,   /* cosine from lr to min_lr over total_steps */
    PLAIT_LR_ONECYCLE, /* PyTorch OneCycleLR: cosine up from lr/div_factor to lr over pct_start, then down */
    PLAIT_LR_LINEAR,   /* straight from lr to min_lr over total_steps (PyTorch LinearLR(1, min_lr/lr)) */
} plait_lr_kind;

typedef struct plait_lr_schedule {
    plait_lr_kind kind;
    float base_lr;
    long total_steps;
    long warmup_steps; /* linear warm-up from base_lr/warmup_steps to the schedule's value; all but one-cycle */
    long step_size;    /* step */
    float gamma;       /* step */
    float min_lr;      /* cosine, linear */
    float pct_start, div_factor, final_div_factor; /* one-cycle */
} plait_lr_schedule;

float plait_lr_at(const plait_lr_schedule *s, long step);
int plait_lr_kind_parse(const char *name, plait_lr_kind *kind);

#ifdef __cplusplus
}
#endif
#endif
