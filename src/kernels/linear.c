/* Fully connected layer through sgemm: y[N,out] = x[N,in] * w[out,in]^T + b. */
#include "kernels/conv2d_internal.h"
#include "plait/ops.h"

void plait_linear_forward(int batch, int in_features, int out_features, const float *x, const float *w,
                          const float *b, float *y) {
    for (int n = 0; n < batch; n++)
        for (int o = 0; o < out_features; o++) y[(size_t)n * out_features + o] = b ? b[o] : 0.0f;
    plait_sgemm_split_rows(false, true, batch, out_features, in_features, 1.0f, x, in_features, w, in_features,
                           1.0f, y, out_features);
}

void plait_linear_backward(int batch, int in_features, int out_features, const float *x, const float *w,
                           const float *dy, float *dx, float *dw, float *db) {
    if (dx)
        plait_sgemm_split_rows(false, false, batch, in_features, out_features, 1.0f, dy, out_features, w,
                               in_features, 0.0f, dx, in_features);
    if (dw)
        plait_sgemm_split_rows(true, false, out_features, in_features, batch, 1.0f, dy, out_features, x,
                               in_features, 1.0f, dw, in_features);
    if (db)
        for (int o = 0; o < out_features; o++) {
            double sum = 0;
            for (int n = 0; n < batch; n++) sum += dy[(size_t)n * out_features + o];
            db[o] += (float)sum;
        }
}
