/* Level 1 of backward-weights: dw[k][r][s][c] += sum over pixels of dy[pixel][k] * x[pixel shifted by
 * (r, s)][c]. Work units are (tap, channel tile, output-channel tile) of a packed gradient
 * [R][S][C][Kpad]; every thread owns the same units in every pixel block (static schedule), so no
 * reduction is needed, and all threads sweep the same pixel block (block_w images x block_h output rows)
 * so it is shared in cache. */
#include <string.h>

#include "kernels/direct/direct.h"

/* Smallest o >= 0 with o*stride + offset >= 0, and the end of the o with o*stride + offset < size. */
static int first_inside(int offset, int stride) { return offset >= 0 ? 0 : direct_ceil_div(-offset, stride); }
static int end_inside(int offset, int stride, int size) {
    return size - offset > 0 ? direct_ceil_div(size - offset, stride) : 0;
}

static void run_wtile(plait_isa isa, const direct_wtile *t, int tile_c, int tile_k) {
    direct_wtile_fn fn = NULL;
    if (isa == PLAIT_ISA_AVX512) fn = direct_wtile_avx512(tile_c, tile_k);
    if (isa == PLAIT_ISA_AVX2) fn = direct_wtile_avx2(tile_c, tile_k);
    if (fn)
        fn(t);
    else
        direct_wtile_portable(t, tile_c, tile_k);
}

void plait_direct_backward_weights(const plait_conv2d_desc *d, const plait_conv_schedule *schedule, const float *x,
                                   const float *dy, float *dw, void *workspace) {
    if (d->groups > 1) {
        direct_depthwise_backward_weights(d, x, dy, dw, workspace);
        return;
    }
    plait_conv_schedule s = schedule && plait_conv_schedule_valid(d, PLAIT_CONV_BACKWARD_WEIGHTS, schedule)
                                ? *schedule
                                : plait_conv_default_schedule(d, PLAIT_CONV_BACKWARD_WEIGHTS);
    if (s.im2col) {
        plait_conv2d_im2col_blas.backward_weights(d, x, dy, dw, workspace);
        return;
    }
    if (s.winograd) {
        direct_winograd_backward_weights(d, &s, x, dy, dw, workspace);
        return;
    }
    const int K = d->out_channels, C = d->in_channels, R = d->kernel_h, S = d->kernel_w;
    const int OH = direct_out_size(d->in_h, R, d->stride_h, d->pad_h);
    const int OW = direct_out_size(d->in_w, S, d->stride_w, d->pad_w);
    const int kvecs = direct_ceil_div(K, DIRECT_LANES), kpad = kvecs * DIRECT_LANES;
    float *acc = workspace;
    memset(acc, 0, (size_t)R * S * C * kpad * sizeof(float));
    const int c_tiles = direct_ceil_div(C, s.tile_w), k_tiles = direct_ceil_div(kvecs, s.tile_k);
    const long units = (long)R * S * c_tiles * k_tiles;
    const int block_h = s.block_h > 0 ? s.block_h : OH;
    const plait_isa isa = direct_isa_resolved();
    const int block_n = s.block_w > 0 ? s.block_w : 1;
#pragma omp parallel num_threads(plait_threads())
    for (int n = 0; n < d->batch; n += block_n)
        for (int h0 = 0; h0 < OH; h0 += block_h) {
            int h1 = direct_min(OH, h0 + block_h);
#pragma omp for schedule(static) nowait
            for (long unit = 0; unit < units; unit++) {
                int kt = (int)(unit % k_tiles);
                long rest = unit / k_tiles;
                int ct = (int)(rest % c_tiles);
                int tap = (int)(rest / c_tiles);
                int r = tap / S, sc = tap % S;
                int oh0 = direct_max(h0, first_inside(r - d->pad_h, d->stride_h));
                int oh1 = direct_min(h1, end_inside(r - d->pad_h, d->stride_h, d->in_h));
                int ow0 = first_inside(sc - d->pad_w, d->stride_w);
                int ow1 = direct_min(OW, end_inside(sc - d->pad_w, d->stride_w, d->in_w));
                if (oh0 >= oh1 || ow0 >= ow1) continue;
                int c0 = ct * s.tile_w, mc = direct_min(s.tile_w, C - c0);
                int kv = kt * s.tile_k, nr = direct_min(s.tile_k, kvecs - kv);
                int ih = oh0 * d->stride_h - d->pad_h + r, iw = ow0 * d->stride_w - d->pad_w + sc;
                int k_left = K - (kv + nr - 1) * DIRECT_LANES;
                direct_wtile t = {
                    .x = x + (((size_t)n * d->in_h + ih) * d->in_w + iw) * C + c0,
                    .x_pixel = (ptrdiff_t)d->stride_w * C,
                    .x_row = (ptrdiff_t)d->stride_h * d->in_w * C,
                    .x_image = (ptrdiff_t)d->in_h * d->in_w * C,
                    .dy = dy + (((size_t)n * OH + oh0) * OW + ow0) * K + (size_t)kv * DIRECT_LANES,
                    .dy_pixel = K,
                    .dy_row = (ptrdiff_t)OW * K,
                    .dy_image = (ptrdiff_t)OH * OW * K,
                    .images = direct_min(block_n, d->batch - n),
                    .pixels = ow1 - ow0,
                    .rows = oh1 - oh0,
                    .acc = acc + ((size_t)tap * C + c0) * kpad + (size_t)kv * DIRECT_LANES,
                    .acc_c = kpad,
                    .last_lanes = k_left < DIRECT_LANES ? k_left : DIRECT_LANES,
                };
                run_wtile(isa, &t, mc, nr);
            }
        }
    /* dw[k][tap][c] += acc[tap][c][k] */
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (int k = 0; k < K; k++)
        for (int tap = 0; tap < R * S; tap++)
            for (int c = 0; c < C; c++) dw[((size_t)k * R * S + tap) * C + c] += acc[((size_t)tap * C + c) * kpad + k];
}
