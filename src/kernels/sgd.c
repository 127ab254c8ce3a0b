/* SGD with momentum, Nesterov and weight decay as torch.optim.SGD (dampening 0). */
#include "plait/ops.h"

void plait_sgd_step(size_t count, float *param, const float *grad, float *momentum_buffer, float lr, float momentum,
                    float weight_decay, bool nesterov) {
    if (momentum == 0.0f || !momentum_buffer) {
#pragma omp parallel for simd schedule(static) num_threads(plait_threads()) if (count > 65536)
        for (size_t i = 0; i < count; i++) param[i] -= lr * (grad[i] + weight_decay * param[i]);
        return;
    }
#pragma omp parallel for simd schedule(static) num_threads(plait_threads()) if (count > 65536)
    for (size_t i = 0; i < count; i++) {
        float g = grad[i] + weight_decay * param[i];
        float buf = momentum * momentum_buffer[i] + g;
        momentum_buffer[i] = buf;
        param[i] -= lr * (nesterov ? g + momentum * buf : buf);
    }
}
