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

/* Per-channel sums of (x - shift) and its square over rows [begin, end), added into sum and sumsq.
 * Four rows per trip keep the sums in registers; they are still added row after row, so the bits
 * do not depend on the blocking. */
static void ROWS_FN(bn_stats)(const float *restrict x, const float *restrict shift, size_t C, size_t begin, size_t end,
                              double *restrict sum, double *restrict sumsq) {
    size_t i = begin;
    for (; i + 4 <= end; i += 4) {
        const float *restrict r0 = x + i * C, *restrict r1 = r0 + C, *restrict r2 = r1 + C, *restrict r3 = r2 + C;
        for (size_t c = 0; c < C; c++) {
            double m = (double)shift[c];
            double v0 = (double)r0[c] - m, v1 = (double)r1[c] - m, v2 = (double)r2[c] - m, v3 = (double)r3[c] - m;
            double s = sum[c], q = sumsq[c];
            s += v0;
            s += v1;
            s += v2;
            s += v3;
            q += v0 * v0;
            q += v1 * v1;
            q += v2 * v2;
            q += v3 * v3;
            sum[c] = s;
            sumsq[c] = q;
        }
    }
    for (; i < end; i++) {
        const float *restrict row = x + i * C;
        for (size_t c = 0; c < C; c++) {
            double v = (double)row[c] - (double)shift[c];
            sum[c] += v;
            sumsq[c] += v * v;
        }
    }
}

/* The activation with upper end `clamp` (ReLU: infinity, which leaves every ReLU output as it is): the
 * same operations as plait_relu_forward and plait_relu6_forward, so the same bits. */
static inline float ROWS_FN(activate)(float v, float clamp) {
    v = v > 0.0f ? v : 0.0f;
    return v < clamp ? v : clamp;
}

/* y = ((x - mean_high) - mean_low) * scale + beta, then + residual, then the activation unless clamp is
 * 0. y may alias residual (each element is read before it is written). */
static void ROWS_FN(bn_normalize)(const float *restrict x, const float *restrict mean_high,
                                  const float *restrict mean_low, const float *restrict scale,
                                  const float *restrict beta, const float *residual, float clamp, size_t C,
                                  size_t begin, size_t end, float *y) {
    const bool activated = clamp > 0.0f;
    for (size_t i = begin; i < end; i++) {
        const float *restrict in = x + i * C;
        float *out = y + i * C;
        if (residual) {
            const float *add = residual + i * C;
            if (activated) {
#pragma GCC ivdep
                for (size_t c = 0; c < C; c++) {
                    float v = ((in[c] - mean_high[c]) - mean_low[c]) * scale[c] + beta[c];
                    v = v + add[c];
                    out[c] = ROWS_FN(activate)(v, clamp);
                }
            } else {
#pragma GCC ivdep
                for (size_t c = 0; c < C; c++) {
                    float v = ((in[c] - mean_high[c]) - mean_low[c]) * scale[c] + beta[c];
                    out[c] = v + add[c];
                }
            }
        } else if (activated) {
#pragma GCC ivdep
            for (size_t c = 0; c < C; c++) {
                float v = ((in[c] - mean_high[c]) - mean_low[c]) * scale[c] + beta[c];
                out[c] = ROWS_FN(activate)(v, clamp);
            }
        } else {
#pragma GCC ivdep
            for (size_t c = 0; c < C; c++) out[c] = ((in[c] - mean_high[c]) - mean_low[c]) * scale[c] + beta[c];
        }
    }
}

/* Evaluation: y = x * scale + shift, then + residual, then the activation unless clamp is 0; y may alias
 * residual. */
static void ROWS_FN(bn_affine)(const float *restrict x, const float *restrict scale, const float *restrict shift,
                               const float *residual, float clamp, size_t C, size_t begin, size_t end, float *y) {
    const bool activated = clamp > 0.0f;
    for (size_t i = begin; i < end; i++) {
        const float *restrict in = x + i * C;
        const float *add = residual ? residual + i * C : NULL;
        float *out = y + i * C;
#pragma GCC ivdep
        for (size_t c = 0; c < C; c++) {
            float v = in[c] * scale[c] + shift[c];
            if (add) v = v + add[c];
            out[c] = activated ? ROWS_FN(activate)(v, clamp) : v;
        }
    }
}

/* dy where lo <= keep <= hi, else +0: an activation's gradient (see bn_backward_sums). A select written
 * with integer masking, because GCC 12 does not if-convert a float compare next to double arithmetic
 * (same bits as the ternary). */
static inline float ROWS_FN(masked)(float dy, float keep, float lo, float hi) {
    uint32_t bits;
    memcpy(&bits, &dy, sizeof bits);
    bits &= (keep >= lo) & (keep <= hi) ? 0xffffffffu : 0u;
    float g;
    memcpy(&g, &bits, sizeof g);
    return g;
}

/* Per-channel sums of g and g * (x - mean) over rows [begin, end), g = dy, or with a mask dy where
 * lo[c] <= mask <= hi[c] and +0 elsewhere (the mask: the activation's output, or x itself with the layer's
 * gate); four rows per trip as in bn_stats, the same bits as row after row. */
static void ROWS_FN(bn_backward_sums)(const float *restrict x, const float *restrict dy, const float *restrict mask,
                                      const float *restrict lo, const float *restrict hi, const float *restrict mean,
                                      size_t C, size_t begin, size_t end,
                                      double *restrict sum_dy, double *restrict sum_dy_xc) {
    size_t i = begin;
    for (; i + 4 <= end; i += 4) {
        const float *restrict x0 = x + i * C, *restrict x1 = x0 + C, *restrict x2 = x1 + C, *restrict x3 = x2 + C;
        const float *restrict d0 = dy + i * C, *restrict d1 = d0 + C, *restrict d2 = d1 + C, *restrict d3 = d2 + C;
        if (mask) {
            const float *restrict k0 = mask + i * C, *restrict k1 = k0 + C, *restrict k2 = k1 + C,
                                  *restrict k3 = k2 + C;
            for (size_t c = 0; c < C; c++) {
                double m = (double)mean[c];
                float l = lo[c], h = hi[c];
                float g0 = ROWS_FN(masked)(d0[c], k0[c], l, h), g1 = ROWS_FN(masked)(d1[c], k1[c], l, h);
                float g2 = ROWS_FN(masked)(d2[c], k2[c], l, h), g3 = ROWS_FN(masked)(d3[c], k3[c], l, h);
                double s = sum_dy[c], t = sum_dy_xc[c];
                s += g0;
                s += g1;
                s += g2;
                s += g3;
                t += (double)g0 * ((double)x0[c] - m);
                t += (double)g1 * ((double)x1[c] - m);
                t += (double)g2 * ((double)x2[c] - m);
                t += (double)g3 * ((double)x3[c] - m);
                sum_dy[c] = s;
                sum_dy_xc[c] = t;
            }
        } else {
            for (size_t c = 0; c < C; c++) {
                double m = (double)mean[c];
                double s = sum_dy[c], t = sum_dy_xc[c];
                s += d0[c];
                s += d1[c];
                s += d2[c];
                s += d3[c];
                t += (double)d0[c] * ((double)x0[c] - m);
                t += (double)d1[c] * ((double)x1[c] - m);
                t += (double)d2[c] * ((double)x2[c] - m);
                t += (double)d3[c] * ((double)x3[c] - m);
                sum_dy[c] = s;
                sum_dy_xc[c] = t;
            }
        }
    }
    for (; i < end; i++) {
        const float *restrict in = x + i * C, *restrict grad = dy + i * C;
        const float *restrict keep = mask ? mask + i * C : NULL;
        for (size_t c = 0; c < C; c++) {
            float g = keep ? ROWS_FN(masked)(grad[c], keep[c], lo[c], hi[c]) : grad[c];
            sum_dy[c] += g;
            sum_dy_xc[c] += (double)g * ((double)in[c] - (double)mean[c]);
        }
    }
}

/* dx = coef * (g - mean_dy - (x - mean) * slope), g as in bn_backward_sums. dx may alias dy. */
static void ROWS_FN(bn_backward_apply)(const float *restrict x, const float *dy, const float *restrict mask,
                                       const float *restrict lo, const float *restrict hi,
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
                g = (keep[c] >= lo[c]) & (keep[c] <= hi[c]) ? g : 0.0f;
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
#undef ROWS_CAT
#undef ROWS_CAT2
