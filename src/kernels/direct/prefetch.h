/* Software prefetch of the next pixel block of 1x1 backward-weights, spread over the current block's tile calls.
 * A tile reads dy one row (K floats apart) and x one pixel (C floats apart) at a time: a line or two of every
 * row, which the hardware prefetchers do not follow once rows are long, so each new block's first lines were
 * demand misses (1x1 128 -> 512 at 16x16, packed: 81 -> 122 GFLOP/s with this). See docs/kernels.md. */
#ifndef PLAIT_KERNELS_DIRECT_PREFETCH_H
#define PLAIT_KERNELS_DIRECT_PREFETCH_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/direct/direct.h"

/* Rows of at least this many floats (1 KB, 16 lines) are prefetched; shorter rows lie close enough together
 * in a page for the hardware to follow them (one thread: 64 -> 64 at 32x32 ran 0.94x with both operands
 * prefetched, 64 -> 128 stride 2 0.85x with dy's 128-float rows; 256 -> 64 1.35x with x's 256-float rows). */
#define DIRECT_PREFETCH_MIN_ROW 256

/* A block of output pixels: images [n0, n0 + images) x output rows [h0, h0 + rows) x every column. */
typedef struct direct_pixel_range {
    int n0, h0, images, rows;
} direct_pixel_range;

/* The block after b in the drivers' order (blocks of block_n images x block_h rows, rows inside images);
 * images = 0 past the last. */
static inline direct_pixel_range direct_next_block(const plait_conv2d_desc *d, direct_pixel_range b, int block_n,
                                                   int block_h) {
    const int OH = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h);
    b.h0 += block_h;
    if (b.h0 >= OH) b.h0 = 0, b.n0 += block_n;
    b.images = d->batch - b.n0 > 0 ? direct_min(block_n, d->batch - b.n0) : 0;
    b.rows = direct_min(block_h, OH - b.h0);
    return b;
}

/* The cache lines of [from, to) into L2 (none if empty). */
static inline __attribute__((always_inline)) void direct_prefetch_span(const float *from, const float *to) {
    for (uintptr_t line = (uintptr_t)from & ~(uintptr_t)63; line < (uintptr_t)to; line += 64)
        __builtin_prefetch((const void *)line, 0, 2);
}

/* Share `share` of `shares` of block b of a 1x1 layer into L2 (the drivers call it before each of a thread's
 * `shares` tile calls): dy's columns [k_begin, k_end) and x's columns [c_begin, c_end) of each output pixel's
 * input pixel (the columns the thread's tiles read: on two threads that split the input channels, each
 * prefetching whole pixels pulled the other's half into its L2 too), each only where its rows reach
 * DIRECT_PREFETCH_MIN_ROW floats. Always inlined: GCC takes a function that only prefetches for one without
 * effects and drops its calls. */
static inline __attribute__((always_inline)) void direct_prefetch_share(const plait_conv2d_desc *d, const float *x,
                                                                        const float *dy, direct_pixel_range b,
                                                                        long share, long shares, int k_begin,
                                                                        int k_end, int c_begin, int c_end) {
    const int K = d->out_channels, C = d->in_channels, H = d->in_h, W = d->in_w;
    const int OH = direct_out_size(H, 1, d->stride_h, d->pad_h), OW = direct_out_size(W, 1, d->stride_w, d->pad_w);
    if (K < DIRECT_PREFETCH_MIN_ROW) k_end = k_begin;
    bool with_x = c_end > c_begin && C >= DIRECT_PREFETCH_MIN_ROW;
    if (b.images <= 0 || shares <= 0 || (k_end <= k_begin && !with_x)) return;
    const long pixels = (long)b.images * b.rows * OW;
    const int p_begin = (int)(pixels * share / shares), p_end = (int)(pixels * (share + 1) / shares);
    int n = b.n0 + p_begin / (b.rows * OW), oh = b.h0 + p_begin / OW % b.rows, ow = p_begin % OW;
    for (int p = p_begin; p < p_end; p++) {
        const float *g = dy + (((size_t)n * OH + oh) * OW + ow) * K;
        if (k_end > k_begin) direct_prefetch_span(g + k_begin, g + k_end);
        int ih = oh * d->stride_h - d->pad_h, iw = ow * d->stride_w - d->pad_w;
        if (with_x && ih >= 0 && ih < H && iw >= 0 && iw < W) {
            const float *xs = x + (((size_t)n * H + ih) * W + iw) * C;
            direct_prefetch_span(xs + c_begin, xs + c_end);
        }
        if (++ow < OW) continue;
        ow = 0;
        if (++oh < b.h0 + b.rows) continue;
        oh = b.h0, n++;
    }
}

/* The next block of a 1x1 layer as two spans of lines, x's and dy's, when its pixels are whole output rows of one
 * image or whole images (lines = 0 otherwise). At larger strides x's span runs from the first input row the block
 * reads to the last, the rows between and the other columns too (at stride 2 about four times the lines it reads,
 * yet as one span it ran 1.03-1.15x the rows alone, counted per row in the tile). The tiles pull a unit's share of
 * each into L2, a line per pixel (direct_wtile.prefetch): issued between tile calls, the shares came as bursts that
 * filled the line fill buffers the tiles' own misses wait for, and without them each block's first unit waited on
 * memory for the whole block (64 -> 64 at 32x32 ran at 66% of peak against 83% in cache). */
typedef struct direct_block_spans {
    direct_line_span spans[2];
} direct_block_spans;

static inline direct_block_spans direct_spans_of(const plait_conv2d_desc *d, const float *x, const float *dy,
                                                 direct_pixel_range next) {
    direct_block_spans s = {0};
    const int H = d->in_h, W = d->in_w, C = d->in_channels, K = d->out_channels;
    const int OH = direct_out_size(H, 1, d->stride_h, 0), OW = direct_out_size(W, 1, d->stride_w, 0);
    bool rows = d->kernel_h == 1 && d->kernel_w == 1 && d->pad_h == 0 && d->pad_w == 0 && next.images > 0 &&
                (next.images == 1 || next.rows == OH);
    if (!rows) return s;
    size_t first = ((size_t)next.n0 * OH + next.h0) * OW, count = (size_t)next.images * next.rows * OW;
    s.spans[1] = (direct_line_span){(const char *)(dy + first * K), (int)(count * K * sizeof(float) / 64)};
    /* from the block's first input row to its last image's last row read */
    size_t x_from = ((size_t)next.n0 * H + (size_t)next.h0 * d->stride_h) * W * C;
    size_t x_to = ((size_t)(next.n0 + next.images - 1) * H + (size_t)(next.h0 + next.rows - 1) * d->stride_h + 1) *
                  W * C;
    s.spans[0] = (direct_line_span){(const char *)(x + x_from), (int)((x_to - x_from) * sizeof(float) / 64)};
    return s;
}

static inline bool direct_spans_any(const direct_block_spans *s) {
    return s->spans[0].lines > 0 || s->spans[1].lines > 0;
}

/* Share `share` of `shares` of both into a tile's prefetch fields. */
static inline void direct_spans_share(const direct_block_spans *s, long share, long shares, direct_line_span out[2]) {
    for (int i = 0; i < 2; i++) {
        long from = (long)s->spans[i].lines * share / shares, to = (long)s->spans[i].lines * (share + 1) / shares;
        out[i] = (direct_line_span){s->spans[i].at + 64 * from, (int)(to - from)};
    }
}

#endif
