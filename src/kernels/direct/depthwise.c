/* Depthwise convolutions (groups == channels), vectorized over 16 channels, which are contiguous in NHWC.
 * Weights are repacked per call to [taps_h][taps_w][Cpad] (Cpad = C rounded up to 16, zero-padded).
 *
 * Level 1: threads split rows of the output (forward, backward-data) or (image, channel vector) pairs
 * (backward-weights). Level 2 (AVX-512): an output tile of DW_TILE pixels along W x one channel vector;
 * the input vectors of a row of taps are loaded once and reused by every pixel and tap that needs them.
 * Border pixels and other ISAs use a one-pixel routine in plain C, vectorized by the compiler.
 * Backward-data is a depthwise forward over dy with flipped taps, one stride phase at a time. */
#include <immintrin.h>
#include <omp.h>
#include <string.h>

#include "kernels/direct/direct.h"

#define INLINE static inline __attribute__((always_inline))
#define AVX512 __attribute__((target("avx512f,fma")))
#define DW_TILE 8

typedef struct dw_problem {
    int batch, channels, cpad;
    const float *x;
    int in_h, in_w;
    const float *taps; /* [taps_h][taps_w][cpad] */
    int taps_h, taps_w, stride_h, stride_w, pad_h, pad_w;
    float *y;
    int out_h, out_w;
    ptrdiff_t y_image, y_row, y_pixel;
} dw_problem;

static int cpad_of(int c) { return direct_ceil_div(c, DIRECT_LANES) * DIRECT_LANES; }

size_t direct_depthwise_workspace_floats(const plait_conv2d_desc *d) {
    return (size_t)d->kernel_h * d->kernel_w * (size_t)cpad_of(d->in_channels);
}

/* One output pixel, channels [c0, c0 + lanes), taps narrowed to the image. */
INLINE void pixel_generic(const dw_problem *p, int n, int oh, int ow, int c0, int lanes) {
    float acc[DIRECT_LANES] = {0};
    for (int r = 0; r < p->taps_h; r++) {
        int ih = oh * p->stride_h - p->pad_h + r;
        if (ih < 0 || ih >= p->in_h) continue;
        for (int s = 0; s < p->taps_w; s++) {
            int iw = ow * p->stride_w - p->pad_w + s;
            if (iw < 0 || iw >= p->in_w) continue;
            const float *in = p->x + (((size_t)n * p->in_h + ih) * p->in_w + iw) * p->channels + c0;
            const float *wt = p->taps + ((size_t)r * p->taps_w + s) * p->cpad + c0;
            for (int l = 0; l < lanes; l++) acc[l] += in[l] * wt[l];
        }
    }
    float *out = p->y + (size_t)n * p->y_image + (size_t)oh * p->y_row + (size_t)ow * p->y_pixel + c0;
    for (int l = 0; l < lanes; l++) out[l] = acc[l];
}

typedef void (*row_fn)(const dw_problem *p, int n, int oh, int lo, int hi);

/* Level 1: threads split output rows. OpenMP stays out of the inlined, per-ISA bodies: GCC outlines a
 * parallel region before inlining, which would lose the per-ISA constants. */
static void rows_parallel(const dw_problem *p, row_fn fn, int taps_w, int stride_w) {
    int lo = p->out_w, hi = p->out_w; /* columns whose taps all fall inside the image along W */
    for (int ow = 0; ow < p->out_w; ow++) {
        int first = ow * stride_w - p->pad_w;
        if (first >= 0 && first + taps_w <= p->in_w) {
            if (lo == p->out_w) lo = ow;
            hi = ow + 1;
        }
    }
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (long row = 0; row < (long)p->batch * p->out_h; row++) fn(p, (int)(row / p->out_h), (int)(row % p->out_h), lo, hi);
}

INLINE void row_generic_body(const dw_problem *p, int n, int oh) {
    for (int ow = 0; ow < p->out_w; ow++)
        for (int c0 = 0; c0 < p->channels; c0 += DIRECT_LANES)
            pixel_generic(p, n, oh, ow, c0, direct_min(DIRECT_LANES, p->channels - c0));
}

static __attribute__((target("avx2,fma"))) void row_avx2(const dw_problem *p, int n, int oh, int lo, int hi) {
    (void)lo, (void)hi;
    row_generic_body(p, n, oh);
}
static void row_portable(const dw_problem *p, int n, int oh, int lo, int hi) {
    (void)lo, (void)hi;
    row_generic_body(p, n, oh);
}

/* ---- AVX-512 ---- */

/* DW_TILE pixels starting at ow (all taps inside the image along W), rows [r_lo, r_hi), one channel
 * vector at c0. S and SW are the taps and stride along W. */
AVX512 INLINE void tile_avx512(const dw_problem *p, int n, int oh, int ow, int c0, __mmask16 mask, int r_lo,
                               int r_hi, const int S, const int SW) {
    enum { MAX_INPUTS = (DW_TILE - 1) * 2 + 5 };
    __m512 acc[DW_TILE];
#pragma GCC unroll 8
    for (int m = 0; m < DW_TILE; m++) acc[m] = _mm512_setzero_ps();
    const int inputs = (DW_TILE - 1) * SW + S;
    for (int r = r_lo; r < r_hi; r++) {
        int ih = oh * p->stride_h - p->pad_h + r;
        const float *in = p->x + (((size_t)n * p->in_h + ih) * p->in_w + (ow * SW - p->pad_w)) * p->channels + c0;
        const float *wt = p->taps + (size_t)r * S * p->cpad + c0;
        __m512 xv[MAX_INPUTS];
#pragma GCC unroll 32
        for (int i = 0; i < inputs; i++) xv[i] = _mm512_maskz_loadu_ps(mask, in + (size_t)i * p->channels);
#pragma GCC unroll 8
        for (int s = 0; s < S; s++) {
            __m512 wv = _mm512_loadu_ps(wt + (size_t)s * p->cpad);
#pragma GCC unroll 8
            for (int m = 0; m < DW_TILE; m++) acc[m] = _mm512_fmadd_ps(xv[m * SW + s], wv, acc[m]);
        }
    }
    float *out = p->y + (size_t)n * p->y_image + (size_t)oh * p->y_row + (size_t)ow * p->y_pixel + c0;
#pragma GCC unroll 8
    for (int m = 0; m < DW_TILE; m++) _mm512_mask_storeu_ps(out + (size_t)m * p->y_pixel, mask, acc[m]);
}

/* One pixel (any taps, narrowed to the image), one channel vector. */
AVX512 INLINE void pixel_avx512(const dw_problem *p, int n, int oh, int ow, int c0, __mmask16 mask) {
    int fh = oh * p->stride_h - p->pad_h, fw = ow * p->stride_w - p->pad_w;
    int r_lo = direct_max(0, -fh), r_hi = direct_min(p->taps_h, p->in_h - fh);
    int s_lo = direct_max(0, -fw), s_hi = direct_min(p->taps_w, p->in_w - fw);
    __m512 acc = _mm512_setzero_ps();
    for (int r = r_lo; r < r_hi; r++) {
        const float *in = p->x + (((size_t)n * p->in_h + fh + r) * p->in_w) * p->channels + c0;
        const float *wt = p->taps + (size_t)r * p->taps_w * p->cpad + c0;
        for (int s = s_lo; s < s_hi; s++)
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, in + (size_t)(fw + s) * p->channels),
                                  _mm512_loadu_ps(wt + (size_t)s * p->cpad), acc);
    }
    _mm512_mask_storeu_ps(p->y + (size_t)n * p->y_image + (size_t)oh * p->y_row + (size_t)ow * p->y_pixel + c0, mask, acc);
}

AVX512 INLINE void row_avx512_body(const dw_problem *p, int n, int oh, int lo, int hi, const int S, const int SW) {
    int first = oh * p->stride_h - p->pad_h;
    int r_lo = direct_max(0, -first), r_hi = direct_min(p->taps_h, p->in_h - first);
    /* channel vectors inside the pixel loop, so each input row is read front to back, contiguously */
    const __mmask16 tail = (__mmask16)((1u << (p->channels - (p->cpad - DIRECT_LANES))) - 1u);
    int ow = 0;
    for (; ow < lo; ow++)
        for (int c0 = 0; c0 < p->channels; c0 += DIRECT_LANES)
            pixel_avx512(p, n, oh, ow, c0, c0 + DIRECT_LANES > p->channels ? tail : 0xffff);
    /* interior in full tiles; the last one moved left to end at hi, recomputing (and rewriting the same
     * values of) a few pixels rather than running them one at a time */
    if (hi - lo >= DW_TILE) {
        for (; ow < hi; ow += DW_TILE) {
            int start = direct_min(ow, hi - DW_TILE);
            for (int c0 = 0; c0 < p->channels; c0 += DIRECT_LANES)
                tile_avx512(p, n, oh, start, c0, c0 + DIRECT_LANES > p->channels ? tail : 0xffff, r_lo, r_hi, S, SW);
        }
        ow = hi;
    }
    for (; ow < p->out_w; ow++)
        for (int c0 = 0; c0 < p->channels; c0 += DIRECT_LANES)
            pixel_avx512(p, n, oh, ow, c0, c0 + DIRECT_LANES > p->channels ? tail : 0xffff);
}

#define ROW512(S, SW)                                                                                  \
    static AVX512 void row_avx512_##S##_##SW(const dw_problem *p, int n, int oh, int lo, int hi) {    \
        row_avx512_body(p, n, oh, lo, hi, S, SW);                                                      \
    }
ROW512(1, 1) ROW512(2, 1) ROW512(3, 1) ROW512(4, 1) ROW512(5, 1)
ROW512(1, 2) ROW512(2, 2) ROW512(3, 2) ROW512(4, 2) ROW512(5, 2)
static const row_fn rows512[6][3] = {
    [1] = {NULL, row_avx512_1_1, row_avx512_1_2}, [2] = {NULL, row_avx512_2_1, row_avx512_2_2},
    [3] = {NULL, row_avx512_3_1, row_avx512_3_2}, [4] = {NULL, row_avx512_4_1, row_avx512_4_2},
    [5] = {NULL, row_avx512_5_1, row_avx512_5_2},
};

static void run(const dw_problem *p) {
    plait_isa isa = direct_isa_resolved();
    row_fn fn = isa == PLAIT_ISA_AVX512 && p->taps_w <= 5 && p->stride_w <= 2 ? rows512[p->taps_w][p->stride_w]
                : isa == PLAIT_ISA_AVX2                                     ? row_avx2
                                                                            : row_portable;
    rows_parallel(p, fn, p->taps_w, p->stride_w);
}

/* taps[a][b][c] = w[c][first_h + stride_h*(th-1-a)][first_w + stride_w*(tw-1-b)] when flipped, else w[c][a][b] */
static void pack_taps(const plait_conv2d_desc *d, const float *w, phase_taps th, phase_taps tw, bool flip,
                      float *taps) {
    int C = d->in_channels, cpad = cpad_of(C), R = d->kernel_h, S = d->kernel_w;
    for (int a = 0; a < th.count; a++)
        for (int b = 0; b < tw.count; b++) {
            int r = flip ? th.first + d->stride_h * (th.count - 1 - a) : a;
            int s = flip ? tw.first + d->stride_w * (tw.count - 1 - b) : b;
            float *dst = taps + ((size_t)a * tw.count + b) * cpad;
            for (int c = 0; c < cpad; c++) dst[c] = c < C ? w[((size_t)c * R + r) * S + s] : 0.0f;
        }
}

void direct_depthwise_forward(const plait_conv2d_desc *d, const float *x, const float *w, float *y, void *workspace) {
    int oh = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h);
    int ow = direct_out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    phase_taps th = {0, d->kernel_h, 0, 0}, tw = {0, d->kernel_w, 0, 0};
    pack_taps(d, w, th, tw, false, workspace);
    dw_problem p = {
        .batch = d->batch, .channels = d->in_channels, .cpad = cpad_of(d->in_channels), .x = x, .in_h = d->in_h,
        .in_w = d->in_w, .taps = workspace, .taps_h = d->kernel_h, .taps_w = d->kernel_w, .stride_h = d->stride_h,
        .stride_w = d->stride_w, .pad_h = d->pad_h, .pad_w = d->pad_w, .y = y, .out_h = oh, .out_w = ow,
        .y_image = (ptrdiff_t)oh * ow * d->in_channels, .y_row = (ptrdiff_t)ow * d->in_channels,
        .y_pixel = d->in_channels,
    };
    run(&p);
}

void direct_depthwise_backward_data(const plait_conv2d_desc *d, const float *dy, const float *w, float *dx,
                                    void *workspace) {
    int oh = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h);
    int ow = direct_out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    int C = d->in_channels;
    for (int ph = 0; ph < d->stride_h; ph++)
        for (int pw = 0; pw < d->stride_w; pw++) {
            phase_taps th = phase_along(ph, d->stride_h, d->pad_h, d->kernel_h, d->in_h);
            phase_taps tw = phase_along(pw, d->stride_w, d->pad_w, d->kernel_w, d->in_w);
            if (th.outputs == 0 || tw.outputs == 0) continue;
            if (th.count == 0 || tw.count == 0) {
                for (int n = 0; n < d->batch; n++)
                    for (int i = ph; i < d->in_h; i += d->stride_h)
                        for (int j = pw; j < d->in_w; j += d->stride_w)
                            memset(dx + (((size_t)n * d->in_h + i) * d->in_w + j) * C, 0, (size_t)C * sizeof(float));
                continue;
            }
            pack_taps(d, w, th, tw, true, workspace);
            dw_problem p = {
                .batch = d->batch, .channels = C, .cpad = cpad_of(C), .x = dy, .in_h = oh, .in_w = ow,
                .taps = workspace, .taps_h = th.count, .taps_w = tw.count, .stride_h = 1, .stride_w = 1,
                .pad_h = th.pad, .pad_w = tw.pad, .y = dx + ((size_t)ph * d->in_w + pw) * C, .out_h = th.outputs,
                .out_w = tw.outputs, .y_image = (ptrdiff_t)d->in_h * d->in_w * C,
                .y_row = (ptrdiff_t)d->stride_h * d->in_w * C, .y_pixel = (ptrdiff_t)d->stride_w * C,
            };
            run(&p);
        }
}

/* ---- backward-weights: per (image, block of rows, channel vector), every tap's sum in a register ---- */

typedef struct dw_shape {
    int N, H, W, C, R, S, OH, OW, sh, sw, ph, pw;
} dw_shape;

/* Adds to acc[tap][lane] the sums of image n, channels [c0, c0 + lanes). */
INLINE void weights_generic(const dw_shape *g, const float *x, const float *dy, int n, int oh0, int oh1, int c0,
                            int lanes, float *acc) {
    for (int oh = oh0; oh < oh1; oh++)
        for (int r = 0; r < g->R; r++) {
            int ih = oh * g->sh - g->ph + r;
            if (ih < 0 || ih >= g->H) continue;
            for (int ow = 0; ow < g->OW; ow++) {
                const float *grad = dy + (((size_t)n * g->OH + oh) * g->OW + ow) * g->C + c0;
                for (int s = 0; s < g->S; s++) {
                    int iw = ow * g->sw - g->pw + s;
                    if (iw < 0 || iw >= g->W) continue;
                    const float *in = x + (((size_t)n * g->H + ih) * g->W + iw) * g->C + c0;
                    float *a = acc + (size_t)(r * g->S + s) * DIRECT_LANES;
                    for (int l = 0; l < lanes; l++) a[l] += in[l] * grad[l];
                }
            }
        }
}

AVX512 INLINE void weights_avx512(const dw_shape *g, const float *x, const float *dy, int n, int oh0, int oh1, int c0,
                                  int lanes, float *out, const int R, const int S) {
    __m512 acc[25];
    const __mmask16 mask = (__mmask16)((1u << lanes) - 1u);
#pragma GCC unroll 25
    for (int t = 0; t < R * S; t++) acc[t] = _mm512_setzero_ps();
    for (int oh = oh0; oh < oh1; oh++)
#pragma GCC unroll 5
        for (int r = 0; r < R; r++) {
            int ih = oh * g->sh - g->ph + r;
            if (ih < 0 || ih >= g->H) continue;
            const float *in_row = x + (((size_t)n * g->H + ih) * g->W) * g->C + c0;
            const float *grad = dy + (((size_t)n * g->OH + oh) * g->OW) * g->C + c0;
            for (int ow = 0; ow < g->OW; ow++) {
                __m512 gv = _mm512_maskz_loadu_ps(mask, grad + (size_t)ow * g->C);
                int first = ow * g->sw - g->pw;
                if (first >= 0 && first + S <= g->W) {
#pragma GCC unroll 5
                    for (int s = 0; s < S; s++)
                        acc[r * S + s] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, in_row + (size_t)(first + s) * g->C),
                                                         gv, acc[r * S + s]);
                } else {
#pragma GCC unroll 5
                    for (int s = 0; s < S; s++)
                        if (first + s >= 0 && first + s < g->W)
                            acc[r * S + s] = _mm512_fmadd_ps(
                                _mm512_maskz_loadu_ps(mask, in_row + (size_t)(first + s) * g->C), gv, acc[r * S + s]);
                }
            }
        }
#pragma GCC unroll 25
    for (int t = 0; t < R * S; t++)
        _mm512_storeu_ps(out + (size_t)t * DIRECT_LANES, _mm512_add_ps(_mm512_loadu_ps(out + (size_t)t * DIRECT_LANES), acc[t]));
}

static AVX512 void weights_avx512_3(const dw_shape *g, const float *x, const float *dy, int n, int oh0, int oh1,
                                    int c0, int lanes, float *out) {
    weights_avx512(g, x, dy, n, oh0, oh1, c0, lanes, out, 3, 3);
}
static AVX512 void weights_avx512_5(const dw_shape *g, const float *x, const float *dy, int n, int oh0, int oh1,
                                    int c0, int lanes, float *out) {
    weights_avx512(g, x, dy, n, oh0, oh1, c0, lanes, out, 5, 5);
}
static __attribute__((target("avx2,fma"))) void weights_avx2(const dw_shape *g, const float *x, const float *dy, int n,
                                                              int oh0, int oh1, int c0, int lanes, float *out) {
    weights_generic(g, x, dy, n, oh0, oh1, c0, lanes, out);
}
static void weights_portable(const dw_shape *g, const float *x, const float *dy, int n, int oh0, int oh1, int c0,
                             int lanes, float *out) {
    weights_generic(g, x, dy, n, oh0, oh1, c0, lanes, out);
}

void direct_depthwise_backward_weights(const plait_conv2d_desc *d, const float *x, const float *dy, float *dw) {
    dw_shape g = {d->batch, d->in_h, d->in_w, d->in_channels, d->kernel_h, d->kernel_w, 0, 0,
                  d->stride_h, d->stride_w, d->pad_h, d->pad_w};
    g.OH = direct_out_size(g.H, g.R, g.sh, g.ph);
    g.OW = direct_out_size(g.W, g.S, g.sw, g.pw);
    int cvecs = direct_ceil_div(g.C, DIRECT_LANES), threads = plait_threads();
    size_t size = (size_t)g.R * g.S * (size_t)cvecs * DIRECT_LANES; /* [cv][tap][16] per thread */
    /* Per-thread partial sums, allocated per call because the thread count may change between calls. */
    float *partial = plait_alloc(size * (size_t)threads * sizeof(float));
    if (!partial) return;
    plait_isa isa = direct_isa_resolved();
    void (*fn)(const dw_shape *, const float *, const float *, int, int, int, int, int, float *) =
        isa == PLAIT_ISA_AVX512 && g.R == 3 && g.S == 3   ? weights_avx512_3
        : isa == PLAIT_ISA_AVX512 && g.R == 5 && g.S == 5 ? weights_avx512_5
        : isa == PLAIT_ISA_AVX2                           ? weights_avx2
                                                          : weights_portable;
#pragma omp parallel num_threads(threads)
    {
        float *mine = partial + size * (size_t)omp_get_thread_num();
        /* items of a few output rows, all channel vectors inside: each cache line of x and dy is used whole
         * while it is in L1/L2 */
        const int rows = 4, blocks = direct_ceil_div(g.OH, rows);
#pragma omp for schedule(static)
        for (long item = 0; item < (long)g.N * blocks; item++) {
            int n = (int)(item / blocks), oh0 = (int)(item % blocks) * rows, oh1 = direct_min(g.OH, oh0 + rows);
            for (int cv = 0; cv < cvecs; cv++) {
                int c0 = cv * DIRECT_LANES;
                fn(&g, x, dy, n, oh0, oh1, c0, direct_min(DIRECT_LANES, g.C - c0),
                   mine + (size_t)cv * g.R * g.S * DIRECT_LANES);
            }
        }
    }
    for (int c = 0; c < g.C; c++)
        for (int t = 0; t < g.R * g.S; t++) {
            float sum = 0;
            for (int i = 0; i < threads; i++)
                sum += partial[(size_t)i * size + ((size_t)(c / DIRECT_LANES) * g.R * g.S + t) * DIRECT_LANES + c % DIRECT_LANES];
            dw[(size_t)c * g.R * g.S + t] += sum;
        }
    plait_free(partial);
}
