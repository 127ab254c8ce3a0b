/* Element-wise activations and the residual add; memory-bound, so parallel only when large. */
#include "plait/ops.h"

#define PARALLEL_MIN 32768

void plait_relu_forward(size_t count, const float *x, float *y) {
#pragma omp parallel for simd schedule(static) num_threads(plait_threads()) if (count > PARALLEL_MIN)
    for (size_t i = 0; i < count; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void plait_relu_backward(size_t count, const float *y, const float *dy, float *dx) {
#pragma omp parallel for simd schedule(static) num_threads(plait_threads()) if (count > PARALLEL_MIN)
    for (size_t i = 0; i < count; i++) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

void plait_relu6_forward(size_t count, const float *x, float *y) {
#pragma omp parallel for simd schedule(static) num_threads(plait_threads()) if (count > PARALLEL_MIN)
    for (size_t i = 0; i < count; i++) {
        float v = x[i] > 0.0f ? x[i] : 0.0f;
        y[i] = v < 6.0f ? v : 6.0f;
    }
}

/* The gradient passes where 0 < x < 6, which is exactly where 0 < y < 6. */
void plait_relu6_backward(size_t count, const float *y, const float *dy, float *dx) {
#pragma omp parallel for simd schedule(static) num_threads(plait_threads()) if (count > PARALLEL_MIN)
    for (size_t i = 0; i < count; i++) dx[i] = (y[i] > 0.0f && y[i] < 6.0f) ? dy[i] : 0.0f;
}

void plait_add(size_t count, const float *a, const float *b, float *y) {
#pragma omp parallel for simd schedule(static) num_threads(plait_threads()) if (count > PARALLEL_MIN)
    for (size_t i = 0; i < count; i++) y[i] = a[i] + b[i];
}
