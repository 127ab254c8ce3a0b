/* Naive float64 reference versions of every operator, for tests only: straightforward loops over
 * the definitions, inputs float32, outputs float64, so a kernel's error can be measured. Same
 * layouts as include/plait/ops.h (NHWC activations, OHWI conv weights). Gradients here are
 * overwritten, not accumulated. */
#ifndef PLAIT_KERNELS_REFERENCE_H
#define PLAIT_KERNELS_REFERENCE_H

#include "plait/ops.h"

void plait_reference_conv2d_forward(const plait_conv2d_desc *d, const float *x, const float *w, double *y);
void plait_reference_conv2d_backward_data(const plait_conv2d_desc *d, const float *dy, const float *w, double *dx);
void plait_reference_conv2d_backward_weights(const plait_conv2d_desc *d, const float *x, const float *dy,
                                             double *dw);

/* Batch normalization over rows x channels (biased variance in training). mean/invstd may be NULL. */
void plait_reference_batchnorm_forward_train(size_t rows, int channels, const float *x, const float *gamma,
                                             const float *beta, double eps, double *y, double *mean,
                                             double *invstd);
void plait_reference_batchnorm_forward_eval(size_t rows, int channels, const float *x, const float *gamma,
                                            const float *beta, const float *running_mean, const float *running_var,
                                            double eps, double *y);
/* Gradients of the training forward (statistics recomputed from x). */
void plait_reference_batchnorm_backward(size_t rows, int channels, const float *x, const float *dy,
                                        const float *gamma, double eps, double *dx, double *dgamma, double *dbeta);

void plait_reference_relu_forward(size_t count, const float *x, double *y);
void plait_reference_relu6_forward(size_t count, const float *x, double *y);

/* Padding counts as -infinity; argmax (may be NULL) as in plait_maxpool_forward, first maximum wins. */
void plait_reference_maxpool_forward(const plait_pool2d_desc *d, const float *x, double *y, int32_t *argmax);
void plait_reference_global_avgpool_forward(int batch, int hw, int channels, const float *x, double *y);

void plait_reference_linear_forward(int batch, int in_features, int out_features, const float *x, const float *w,
                                    const float *b, double *y);

/* Mean loss; dlogits (may be NULL) is the gradient of the mean loss. */
double plait_reference_softmax_cross_entropy(int batch, int classes, const float *logits, const int32_t *labels,
                                             double label_smoothing, double *dlogits);

#endif
