/* Depthwise convolutions (groups == channels), vectorized over channels, which are contiguous in NHWC:
 * every inner loop runs over channels with a tap's weights repacked to [R][S][C]. The same body is
 * compiled for AVX-512, AVX2 and plain C (GCC vectorizes the channel loops for each target). */
#include <omp.h>
#include <string.h>

#include "kernels/direct/direct.h"

#define INLINE static inline __attribute__((always_inline))

typedef struct dw_shape {
    int N, H, W, C, R, S, OH, OW, sh, sw, ph, pw;
} dw_shape;

static dw_shape shape_of(const plait_conv2d_desc *d) {
    dw_shape s = {d->batch, d->in_h, d->in_w, d->in_channels, d->kernel_h, d->kernel_w, 0, 0,
                  d->stride_h, d->stride_w, d->pad_h, d->pad_w};
    s.OH = direct_out_size(s.H, s.R, s.sh, s.ph);
    s.OW = direct_out_size(s.W, s.S, s.sw, s.pw);
    return s;
}

/* w[c][r][s] -> [r][s][c] */
static void repack(const dw_shape *g, const float *w, float *taps) {
    for (int c = 0; c < g->C; c++)
        for (int t = 0; t < g->R * g->S; t++) taps[(size_t)t * g->C + c] = w[(size_t)c * g->R * g->S + t];
}

INLINE void forward_body(const dw_shape *g, const float *x, const float *taps, float *y) {
    const int C = g->C;
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (long row = 0; row < (long)g->N * g->OH; row++) {
        int n = (int)(row / g->OH), oh = (int)(row % g->OH);
        for (int ow = 0; ow < g->OW; ow++) {
            float *restrict out = y + ((size_t)row * g->OW + ow) * C;
            memset(out, 0, (size_t)C * sizeof(float));
            for (int r = 0; r < g->R; r++) {
                int ih = oh * g->sh - g->ph + r;
                if (ih < 0 || ih >= g->H) continue;
                for (int s = 0; s < g->S; s++) {
                    int iw = ow * g->sw - g->pw + s;
                    if (iw < 0 || iw >= g->W) continue;
                    const float *restrict in = x + (((size_t)n * g->H + ih) * g->W + iw) * C;
                    const float *restrict wt = taps + (size_t)(r * g->S + s) * C;
                    for (int c = 0; c < C; c++) out[c] += in[c] * wt[c];
                }
            }
        }
    }
}

/* Gathers, for each input pixel, the outputs whose taps touch it, so threads never write the same dx. */
INLINE void backward_data_body(const dw_shape *g, const float *dy, const float *taps, float *dx) {
    const int C = g->C;
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (long row = 0; row < (long)g->N * g->H; row++) {
        int n = (int)(row / g->H), ih = (int)(row % g->H);
        for (int iw = 0; iw < g->W; iw++) {
            float *restrict out = dx + ((size_t)row * g->W + iw) * C;
            memset(out, 0, (size_t)C * sizeof(float));
            for (int r = 0; r < g->R; r++) {
                int t = ih + g->ph - r;
                if (t < 0 || t % g->sh != 0 || t / g->sh >= g->OH) continue;
                int oh = t / g->sh;
                for (int s = 0; s < g->S; s++) {
                    int u = iw + g->pw - s;
                    if (u < 0 || u % g->sw != 0 || u / g->sw >= g->OW) continue;
                    const float *restrict in = dy + (((size_t)n * g->OH + oh) * g->OW + u / g->sw) * C;
                    const float *restrict wt = taps + (size_t)(r * g->S + s) * C;
                    for (int c = 0; c < C; c++) out[c] += in[c] * wt[c];
                }
            }
        }
    }
}

/* Each thread sums its rows into a private [R][S][C] buffer; buffers are added at the end. */
INLINE void backward_weights_body(const dw_shape *g, const float *x, const float *dy, float *partial) {
    const int C = g->C, threads = plait_threads();
    const size_t size = (size_t)g->R * g->S * C;
#pragma omp parallel num_threads(threads)
    {
        float *restrict mine = partial + size * (size_t)omp_get_thread_num();
#pragma omp for schedule(static)
        for (long row = 0; row < (long)g->N * g->OH; row++) {
            int n = (int)(row / g->OH), oh = (int)(row % g->OH);
            for (int r = 0; r < g->R; r++) {
                int ih = oh * g->sh - g->ph + r;
                if (ih < 0 || ih >= g->H) continue;
                for (int ow = 0; ow < g->OW; ow++) {
                    const float *restrict grad = dy + ((size_t)row * g->OW + ow) * C;
                    for (int s = 0; s < g->S; s++) {
                        int iw = ow * g->sw - g->pw + s;
                        if (iw < 0 || iw >= g->W) continue;
                        const float *restrict in = x + (((size_t)n * g->H + ih) * g->W + iw) * C;
                        float *restrict acc = mine + (size_t)(r * g->S + s) * C;
                        for (int c = 0; c < C; c++) acc[c] += in[c] * grad[c];
                    }
                }
            }
        }
    }
}

#define INSTANCES(NAME, ATTR)                                                                        \
    static ATTR void forward_##NAME(const dw_shape *g, const float *x, const float *t, float *y) {      \
        forward_body(g, x, t, y);                                                                   \
    }                                                                                               \
    static ATTR void backward_data_##NAME(const dw_shape *g, const float *dy, const float *t, float *dx) { \
        backward_data_body(g, dy, t, dx);                                                           \
    }                                                                                               \
    static ATTR void backward_weights_##NAME(const dw_shape *g, const float *x, const float *dy, float *p) { \
        backward_weights_body(g, x, dy, p);                                                         \
    }
INSTANCES(avx512, __attribute__((target("avx512f,fma"))))
INSTANCES(avx2, __attribute__((target("avx2,fma"))))
INSTANCES(portable, )

size_t direct_depthwise_workspace_floats(const plait_conv2d_desc *d) {
    return (size_t)d->kernel_h * d->kernel_w * d->in_channels;
}

void direct_depthwise_forward(const plait_conv2d_desc *d, const float *x, const float *w, float *y, void *workspace) {
    dw_shape g = shape_of(d);
    float *taps = workspace;
    repack(&g, w, taps);
    switch (direct_isa_resolved()) {
    case PLAIT_ISA_AVX512: forward_avx512(&g, x, taps, y); break;
    case PLAIT_ISA_AVX2: forward_avx2(&g, x, taps, y); break;
    default: forward_portable(&g, x, taps, y); break;
    }
}

void direct_depthwise_backward_data(const plait_conv2d_desc *d, const float *dy, const float *w, float *dx,
                                    void *workspace) {
    dw_shape g = shape_of(d);
    float *taps = workspace;
    repack(&g, w, taps);
    switch (direct_isa_resolved()) {
    case PLAIT_ISA_AVX512: backward_data_avx512(&g, dy, taps, dx); break;
    case PLAIT_ISA_AVX2: backward_data_avx2(&g, dy, taps, dx); break;
    default: backward_data_portable(&g, dy, taps, dx); break;
    }
}

void direct_depthwise_backward_weights(const plait_conv2d_desc *d, const float *x, const float *dy, float *dw) {
    dw_shape g = shape_of(d);
    size_t size = (size_t)g.R * g.S * g.C;
    int threads = plait_threads();
    /* Per-thread partial sums; allocated per call because the thread count may change between calls. */
    float *partial = plait_alloc(size * (size_t)threads * sizeof(float));
    if (!partial) return;
    switch (direct_isa_resolved()) {
    case PLAIT_ISA_AVX512: backward_weights_avx512(&g, x, dy, partial); break;
    case PLAIT_ISA_AVX2: backward_weights_avx2(&g, x, dy, partial); break;
    default: backward_weights_portable(&g, x, dy, partial); break;
    }
    for (int c = 0; c < g.C; c++)
        for (int t = 0; t < g.R * g.S; t++) {
            float sum = 0;
            for (int i = 0; i < threads; i++) sum += partial[(size_t)i * size + (size_t)t * g.C + c];
            dw[(size_t)c * g.R * g.S + t] += sum;
        }
    plait_free(partial);
}
