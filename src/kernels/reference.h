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

/* The kernels helper adds the other operators' references here (batchnorm, pooling, linear, loss, ...). */

#endif
