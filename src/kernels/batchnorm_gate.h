/* Batch normalization fused with a ReLU or ReLU6 and no residual: the training forward also returns the
 * gate, per channel the interval of x where the activation passes the gradient, so that the backward reads
 * x and dy only, not the activation's output (batchnorm.c says how the gate is found). */
#ifndef PLAIT_KERNELS_BATCHNORM_GATE_H
#define PLAIT_KERNELS_BATCHNORM_GATE_H

#include <stdbool.h>
#include <stddef.h>

#include "plait/ops.h"

/* plait_batchnorm_forward_train_fused without a residual, writing the gate (2 * channels floats: the
 * intervals' lower ends, then their upper ends). false: some channel's scale is 0 or a coefficient is not
 * finite, and the gate is not to be used (the backward then reads the activation's output). */
bool batchnorm_forward_train_gated(size_t rows, int channels, const float *x, const float *gamma, const float *beta,
                                   float eps, plait_activation activation, float *y, float *saved_mean,
                                   float *saved_invstd, float *gate);
/* plait_batchnorm_backward_fused with the gradient passed where gate[c] <= x <= gate[channels + c]: the same
 * bits as with the activation's output. */
void batchnorm_backward_gated(size_t rows, int channels, const float *x, const float *dy, const float *gate,
                              const float *gamma, const float *saved_mean, const float *saved_invstd, float *dx,
                              float *dgamma, float *dbeta);

/* One channel's interval, for z = ((x - mean_high) - mean_low) * scale + beta in float (empty: +inf, -inf);
 * false where there is none to find (scale 0, a coefficient not finite). */
bool batchnorm_gate_of(float mean_high, float mean_low, float scale, float beta, plait_activation activation, float *lo,
                       float *hi);

#endif
