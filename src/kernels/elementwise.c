/* Element-wise activations, the residual add and the ReLU gradient into a residual sum; memory-bound,
 * so parallel only when large, through the widest row loops the CPU has (fused_rows.h). */
#include <omp.h>

#include "kernels/fused.h"
#include "plait/ops.h"

#define ELEMENTWISE(count, call)                                                                       \
    do {                                                                                               \
        const fused_rows *k = fused_rows_best();                                                       \
        _Pragma("omp parallel num_threads(fused_pass_threads(count))")                                \
        {                                                                                              \
            size_t begin, end;                                                                         \
            fused_split((count), omp_get_thread_num(), omp_get_num_threads(), &begin, &end);           \
            call;                                                                                      \
        }                                                                                              \
    } while (0)

void plait_relu_forward(size_t count, const float *x, float *y) { ELEMENTWISE(count, k->relu(x, begin, end, y)); }

void plait_relu_backward(size_t count, const float *y, const float *dy, float *dx) {
    ELEMENTWISE(count, k->relu_backward(y, dy, begin, end, dx));
}

void plait_relu_backward_add(size_t count, const float *y, const float *dy, float *dx) {
    ELEMENTWISE(count, k->relu_backward_add(y, dy, begin, end, dx));
}

void plait_relu6_forward(size_t count, const float *x, float *y) { ELEMENTWISE(count, k->relu6(x, begin, end, y)); }

/* The gradient passes where 0 < x < 6, which is exactly where 0 < y < 6. */
void plait_relu6_backward(size_t count, const float *y, const float *dy, float *dx) {
    ELEMENTWISE(count, k->relu6_backward(y, dy, begin, end, dx));
}

void plait_add(size_t count, const float *a, const float *b, float *y) {
    ELEMENTWISE(count, k->add(a, b, begin, end, y));
}
