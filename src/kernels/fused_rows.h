/* Row loops of the memory-bound kernels (batch normalization with its fused ReLU and residual add,
 * activations, the residual gradient), written for GCC's vectorizer. fused_dispatch.c includes this
 * file once per instruction set with ROWS_SUFFIX set; nothing else includes it.
 *
 * Every variant does the same float operations in the same order per element and per channel (no
 * FMA contraction under -std=c11), so a fused call and the unfused composition give identical bits. */
#ifndef ROWS_SUFFIX
#error "include through fused_dispatch.c"
#endif

#define ROWS_CAT2(a, b) a##_##b
#define ROWS_CAT(a, b) ROWS_CAT2(a, b)
#define ROWS_FN(name) ROWS_CAT(name, ROWS_SUFFIX)
#define ROWS_CHUNK 256

/* Per-channel sums of (x - shift) and its square over rows [begin, end), added into sum and sumsq. */
static void ROWS_FN(bn_stats)(const float *restrict x, const float *restrict shift, size_t C, size_t begin, size_t end,
                              double *restrict sum, double *restrict sumsq) {
    for (size_t i = begin; i < end; i++) {
        const float *restrict row = x + i * C;
        for (size_t c = 0; c < C; c++) {
            double v = (double)row[c] - (double)shift[c];
            sum[c] += v;
            sumsq[c] += v * v;
        }
    }
}

/* y = ((x - mean_high) - mean_low) * scale + beta, then + residual, then ReLU, per flag. y may alias
 * residual (each element is read before it is written). */
static void ROWS_FN(bn_normalize)(const float *restrict x, const float *restrict mean_high,
                                  const float *restrict mean_low, const float *restrict scale,
                                  const float *restrict beta, const float *residual, bool relu, size_t C,
                                  size_t begin, size_t end, float *y) {
    for (size_t i = begin; i < end; i++) {
        const float *restrict in = x + i * C;
        float *out = y + i * C;
        if (residual) {
            const float *add = residual + i * C;
            if (relu) {
#pragma GCC ivdep
                for (size_t c = 0; c < C; c++) {
                    float v = ((in[c] - mean_high[c]) - mean_low[c]) * scale[c] + beta[c];
                    v = v + add[c];
                    out[c] = v > 0.0f ? v : 0.0f;
                }
            } else {
#pragma GCC ivdep
                for (size_t c = 0; c < C; c++) {
                    float v = ((in[c] - mean_high[c]) - mean_low[c]) * scale[c] + beta[c];
                    out[c] = v + add[c];
                }
            }
        } else if (relu) {
#pragma GCC ivdep
            for (size_t c = 0; c < C; c++) {
                float v = ((in[c] - mean_high[c]) - mean_low[c]) * scale[c] + beta[c];
                out[c] = v > 0.0f ? v : 0.0f;
            }
        } else {
#pragma GCC ivdep
            for (size_t c = 0; c < C; c++) out[c] = ((in[c] - mean_high[c]) - mean_low[c]) * scale[c] + beta[c];
        }
    }
}

/* Evaluation: y = x * scale + shift, then + residual, then ReLU, per flag; y may alias residual. */
static void ROWS_FN(bn_affine)(const float *restrict x, const float *restrict scale, const float *restrict shift,
                               const float *residual, bool relu, size_t C, size_t begin, size_t end, float *y) {
    for (size_t i = begin; i < end; i++) {
        const float *restrict in = x + i * C;
        const float *add = residual ? residual + i * C : NULL;
        float *out = y + i * C;
#pragma GCC ivdep
        for (size_t c = 0; c < C; c++) {
            float v = in[c] * scale[c] + shift[c];
            if (add) v = v + add[c];
            out[c] = relu ? (v > 0.0f ? v : 0.0f) : v;
        }
    }
}

/* Per-channel sums of g and g * (x - mean) where g = dy, or dy masked to where mask > 0. */
static void ROWS_FN(bn_backward_sums)(const float *restrict x, const float *restrict dy, const float *restrict mask,
                                      const float *restrict mean, size_t C, size_t begin, size_t end,
                                      double *restrict sum_dy, double *restrict sum_dy_xc) {
    for (size_t i = begin; i < end; i++) {
        const float *restrict in = x + i * C;
        const float *restrict grad = dy + i * C;
        if (mask) {
            /* masked through a small buffer: GCC 12 does not if-convert the compare next to doubles */
            const float *restrict keep = mask + i * C;
            for (size_t c0 = 0; c0 < C; c0 += ROWS_CHUNK) {
                size_t n = C - c0 < ROWS_CHUNK ? C - c0 : ROWS_CHUNK;
                float g[ROWS_CHUNK];
                for (size_t j = 0; j < n; j++) {
                    float v = grad[c0 + j];
                    g[j] = keep[c0 + j] > 0.0f ? v : 0.0f;
                }
                for (size_t j = 0; j < n; j++) {
                    sum_dy[c0 + j] += g[j];
                    sum_dy_xc[c0 + j] += (double)g[j] * ((double)in[c0 + j] - (double)mean[c0 + j]);
                }
            }
        } else {
            for (size_t c = 0; c < C; c++) {
                sum_dy[c] += grad[c];
                sum_dy_xc[c] += (double)grad[c] * ((double)in[c] - (double)mean[c]);
            }
        }
    }
}

/* dx = coef * (g - mean_dy - (x - mean) * slope), g as in bn_backward_sums. dx may alias dy. */
static void ROWS_FN(bn_backward_apply)(const float *restrict x, const float *dy, const float *restrict mask,
                                       const float *restrict mean, const float *restrict coef,
                                       const float *restrict mean_dy, const float *restrict slope, size_t C,
                                       size_t begin, size_t end, float *dx) {
    for (size_t i = begin; i < end; i++) {
        const float *restrict in = x + i * C;
        const float *grad = dy + i * C;
        float *out = dx + i * C;
        if (mask) {
            const float *restrict keep = mask + i * C;
#pragma GCC ivdep
            for (size_t c = 0; c < C; c++) {
                float g = grad[c];
                g = keep[c] > 0.0f ? g : 0.0f;
                out[c] = coef[c] * (g - mean_dy[c] - (in[c] - mean[c]) * slope[c]);
            }
        } else {
#pragma GCC ivdep
            for (size_t c = 0; c < C; c++)
                out[c] = coef[c] * (grad[c] - mean_dy[c] - (in[c] - mean[c]) * slope[c]);
        }
    }
}

/* ---- element-wise, over [begin, end) of flat arrays; outputs may alias inputs exactly ---------- */

static void ROWS_FN(relu)(const float *x, size_t begin, size_t end, float *y) {
#pragma GCC ivdep
    for (size_t i = begin; i < end; i++) {
        float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
}

static void ROWS_FN(relu_backward)(const float *y, const float *dy, size_t begin, size_t end, float *dx) {
#pragma GCC ivdep
    for (size_t i = begin; i < end; i++) {
        float g = dy[i];
        dx[i] = y[i] > 0.0f ? g : 0.0f;
    }
}

/* dx += (y > 0 ? dy : 0): the gradient through a ReLU into an identity shortcut's sum. */
static void ROWS_FN(relu_backward_add)(const float *y, const float *dy, size_t begin, size_t end, float *dx) {
#pragma GCC ivdep
    for (size_t i = begin; i < end; i++) {
        float g = dy[i];
        dx[i] = dx[i] + (y[i] > 0.0f ? g : 0.0f);
    }
}

static void ROWS_FN(relu6)(const float *x, size_t begin, size_t end, float *y) {
#pragma GCC ivdep
    for (size_t i = begin; i < end; i++) {
        float v = x[i] > 0.0f ? x[i] : 0.0f;
        y[i] = v < 6.0f ? v : 6.0f;
    }
}

static void ROWS_FN(relu6_backward)(const float *y, const float *dy, size_t begin, size_t end, float *dx) {
#pragma GCC ivdep
    for (size_t i = begin; i < end; i++) {
        float g = dy[i], v = y[i];
        dx[i] = (v > 0.0f && v < 6.0f) ? g : 0.0f;
    }
}

static void ROWS_FN(add)(const float *a, const float *b, size_t begin, size_t end, float *y) {
#pragma GCC ivdep
    for (size_t i = begin; i < end; i++) y[i] = a[i] + b[i];
}

static const fused_rows ROWS_FN(rows_table) = {
    .isa = ROWS_ISA_NAME,
    .bn_stats = ROWS_FN(bn_stats),
    .bn_normalize = ROWS_FN(bn_normalize),
    .bn_affine = ROWS_FN(bn_affine),
    .bn_backward_sums = ROWS_FN(bn_backward_sums),
    .bn_backward_apply = ROWS_FN(bn_backward_apply),
    .relu = ROWS_FN(relu),
    .relu_backward = ROWS_FN(relu_backward),
    .relu_backward_add = ROWS_FN(relu_backward_add),
    .relu6 = ROWS_FN(relu6),
    .relu6_backward = ROWS_FN(relu6_backward),
    .add = ROWS_FN(add),
};

#undef ROWS_FN
#undef ROWS_CHUNK
#undef ROWS_CAT
#undef ROWS_CAT2
