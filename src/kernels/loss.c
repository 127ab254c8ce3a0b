/* Softmax cross-entropy with label smoothing, as PyTorch's CrossEntropyLoss(label_smoothing=s):
 * target = (1-s)*onehot(label) + s/classes, loss = -sum(target * log_softmax(logits)), mean over batch. */
#include <math.h>

#include "plait/ops.h"

float plait_softmax_cross_entropy(int batch, int classes, const float *logits, const int32_t *labels,
                                  float label_smoothing, float *dlogits, int *correct) {
    double total = 0;
    int right = 0;
    const double smooth = label_smoothing, off_target = smooth / classes, on_target = 1.0 - smooth + off_target;
#pragma omp parallel for schedule(static) reduction(+ : total, right) num_threads(plait_threads()) if (batch >= 64)
    for (int n = 0; n < batch; n++) {
        const float *row = logits + (size_t)n * classes;
        if (labels[n] < 0 || labels[n] >= classes) { /* a caller bug: poison the loss, not memory */
            total += NAN;
            if (dlogits)
                for (int j = 0; j < classes; j++) dlogits[(size_t)n * classes + j] = 0.0f;
            continue;
        }
        int best = 0;
        for (int j = 1; j < classes; j++)
            if (row[j] > row[best]) best = j;
        if (best == labels[n]) right++;
        double max = row[best], sum_exp = 0, sum_logits = 0;
        for (int j = 0; j < classes; j++) {
            sum_exp += exp((double)row[j] - max);
            sum_logits += row[j];
        }
        double log_sum = max + log(sum_exp);
        /* -sum_j t_j (z_j - log_sum) with sum_j t_j = 1 */
        total += log_sum - (1.0 - smooth) * row[labels[n]] - off_target * sum_logits;
        if (dlogits) {
            float *out = dlogits + (size_t)n * classes;
            for (int j = 0; j < classes; j++) {
                double p = exp((double)row[j] - log_sum);
                double target = j == labels[n] ? on_target : off_target;
                out[j] = (float)((p - target) / batch);
            }
        }
    }
    if (correct) *correct = right;
    return (float)(total / batch);
}
