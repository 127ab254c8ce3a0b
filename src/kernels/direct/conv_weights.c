/* Level 1 of backward-weights: dw[k][r][s][c] += sum over pixels of dy[pixel][k] * x[pixel shifted by
 * (r, s)][c]. Work units are (tap, channel tile, output-channel tile) of a packed gradient
 * [R][S][C][Kpad]; every thread owns the same units in every pixel block (static schedule), so no
 * reduction is needed, and all threads sweep the same pixel block (block_w images x block_h output rows)
 * so it is shared in cache.
 *
 * Row runs (loop_order 1): at each output pixel the taps s of kernel row r and the channels c are one run
 * of S * C floats, both in x (input pixel ow * stride + s, channel c) and in the packed gradient (row r,
 * index s * C + c), so a unit tiles that run instead of one tap's C channels. A 3-channel stem then fills
 * a 7 x 4 register tile where one tap allowed 3 x 4, and reads dy once per kernel row instead of once per
 * tap. Columns where some tap of the row falls outside the image run tap by tap. */
#include <omp.h>
#include <string.h>

#include "kernels/direct/direct.h"
#include "kernels/direct/prefetch.h"

/* Smallest o >= 0 with o*stride + offset >= 0, and the end of the o with o*stride + offset < size. */
static int first_inside(int offset, int stride) { return offset >= 0 ? 0 : direct_ceil_div(-offset, stride); }
static int end_inside(int offset, int stride, int size) {
    return size - offset > 0 ? direct_ceil_div(size - offset, stride) : 0;
}

void direct_run_wtile(plait_isa isa, const direct_wtile *t, int tile_c, int tile_k) {
    direct_wtile_fn fn = NULL;
    if (isa == PLAIT_ISA_AVX512) fn = direct_wtile_avx512(tile_c, tile_k);
    if (isa == PLAIT_ISA_AVX2) fn = direct_wtile_avx2(tile_c, tile_k);
    if (fn)
        fn(t);
    else
        direct_wtile_portable(t, tile_c, tile_k);
}

/* A unit's pixel block and output-channel vectors. */
typedef struct wtile_range {
    int n, images, h0, h1, kv, nr;
    direct_line_span prefetch[2]; /* see direct_wtile */
} wtile_range;

static direct_wtile wtile_at(const plait_conv2d_desc *d, const wtile_range *u, const float *x, const float *dy,
                             float *acc, int r, int sc, int oh0, int oh1, int ow0, int ow1) {
    const int K = d->out_channels, C = d->in_channels, S = d->kernel_w;
    const int OH = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h);
    const int OW = direct_out_size(d->in_w, S, d->stride_w, d->pad_w);
    const int kpad = direct_ceil_div(K, DIRECT_LANES) * DIRECT_LANES;
    int ih = oh0 * d->stride_h - d->pad_h + r, iw = ow0 * d->stride_w - d->pad_w + sc;
    int k_left = K - (u->kv + u->nr - 1) * DIRECT_LANES;
    return (direct_wtile){
        .x = x + (((size_t)u->n * d->in_h + ih) * d->in_w + iw) * C,
        .x_pixel = (ptrdiff_t)d->stride_w * C,
        .x_row = (ptrdiff_t)d->stride_h * d->in_w * C,
        .x_image = (ptrdiff_t)d->in_h * d->in_w * C,
        .dy = dy + (((size_t)u->n * OH + oh0) * OW + ow0) * K + (size_t)u->kv * DIRECT_LANES,
        .dy_pixel = K,
        .dy_row = (ptrdiff_t)OW * K,
        .dy_image = (ptrdiff_t)OH * OW * K,
        .images = u->images,
        .pixels = ow1 - ow0,
        .rows = oh1 - oh0,
        .acc = acc + ((size_t)r * S + sc) * C * kpad + (size_t)u->kv * DIRECT_LANES,
        .acc_c = kpad,
        .last_lanes = k_left < DIRECT_LANES ? k_left : DIRECT_LANES,
    };
}

/* Output rows of the block that kernel row r reaches inside the image. */
static void rows_inside(const plait_conv2d_desc *d, const wtile_range *u, int r, int *oh0, int *oh1) {
    *oh0 = direct_max(u->h0, first_inside(r - d->pad_h, d->stride_h));
    *oh1 = direct_min(u->h1, end_inside(r - d->pad_h, d->stride_h, d->in_h));
}

/* Elements [c0, c0 + mc) from tap (r, sc) on (one tap's channels, or with sc = 0 a row's run of S * C),
 * over output columns [ow0, ow1) where all of them are inside the image. */
static void run_span(const plait_conv2d_desc *d, const wtile_range *u, const float *x, const float *dy, float *acc,
                     int r, int sc, int c0, int mc, int ow0, int ow1, plait_isa isa) {
    int oh0, oh1;
    rows_inside(d, u, r, &oh0, &oh1);
    if (oh0 >= oh1 || ow0 >= ow1 || mc <= 0) return;
    direct_wtile t = wtile_at(d, u, x, dy, acc, r, sc, oh0, oh1, ow0, ow1);
    t.prefetch[0] = u->prefetch[0], t.prefetch[1] = u->prefetch[1];
    t.x += c0;
    t.acc += (size_t)c0 * t.acc_c;
    direct_run_wtile(isa, &t, mc, u->nr);
}

/* Tap (r, sc), channels [c0, c0 + mc), output columns [from, to) narrowed to those inside the image. */
static void run_tap(const plait_conv2d_desc *d, const wtile_range *u, const float *x, const float *dy, float *acc,
                    int r, int sc, int c0, int mc, int from, int to, plait_isa isa) {
    int ow0 = direct_max(from, first_inside(sc - d->pad_w, d->stride_w));
    int ow1 = direct_min(to, end_inside(sc - d->pad_w, d->stride_w, d->in_w));
    run_span(d, u, x, dy, acc, r, sc, c0, mc, ow0, ow1, isa);
}

/* dw[k][tap][c] += acc[tap][c][k], in 16 x 16 blocks: a whole row or column at a time strides by kpad or
 * R*S*C floats, and with powers of two those lines share a few cache sets and miss to L3 one by one (a
 * 1024 x 1024 layer spent 4.9 ms here, more than its 1024 pixels' products) */
static void add_transposed(const plait_conv2d_desc *d, const float *acc, float *dw) {
    const int K = d->out_channels, C = d->in_channels, R = d->kernel_h, S = d->kernel_w;
    const int kvecs = direct_ceil_div(K, DIRECT_LANES), kpad = kvecs * DIRECT_LANES;
    const int c_blocks = direct_ceil_div(C, DIRECT_LANES);
    const bool avx512 = direct_isa_resolved() == PLAIT_ISA_AVX512;
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (int kb = 0; kb < kvecs; kb++)
        for (int tap = 0; tap < R * S; tap++)
            for (int cb = 0; cb < c_blocks; cb++) {
                int k1 = direct_min(K, (kb + 1) * DIRECT_LANES), c1 = direct_min(C, (cb + 1) * DIRECT_LANES);
                if (avx512) {
                    const float *from =
                        acc + ((size_t)tap * C + (size_t)cb * DIRECT_LANES) * kpad + (size_t)kb * DIRECT_LANES;
                    float *to = dw + ((size_t)kb * DIRECT_LANES * R * S + tap) * C + (size_t)cb * DIRECT_LANES;
                    direct_add_transposed_avx512(from, (size_t)kpad, c1 - cb * DIRECT_LANES, to, (size_t)R * S * C,
                                                 k1 - kb * DIRECT_LANES);
                    continue;
                }
                for (int k = kb * DIRECT_LANES; k < k1; k++) {
                    float *to = dw + ((size_t)k * R * S + tap) * C;
                    const float *from = acc + (size_t)tap * C * kpad + k;
                    for (int c = cb * DIRECT_LANES; c < c1; c++) to[c] += from[(size_t)c * kpad];
                }
            }
}

bool direct_patch_weights_applies(const plait_conv2d_desc *d) {
    return d->groups == 1 && (d->kernel_h > 1 || d->kernel_w > 1) &&
           d->kernel_h * d->kernel_w * d->in_channels <= DIRECT_MAX_PATCH;
}

/* The padded copy holds the rows and columns the outputs' taps reach, zero outside the image. */
static void patch_geometry(const plait_conv2d_desc *d, int *padded_h, int *padded_w, size_t *gradient_floats) {
    const int OH = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h);
    const int OW = direct_out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    *padded_h = (OH - 1) * d->stride_h + d->kernel_h;
    *padded_w = (OW - 1) * d->stride_w + d->kernel_w;
    size_t kpad = (size_t)direct_ceil_div(d->out_channels, DIRECT_LANES) * DIRECT_LANES;
    *gradient_floats = ((size_t)d->kernel_h * d->kernel_w * d->in_channels * kpad + 15) / 16 * 16;
}

size_t direct_patch_weights_floats(const plait_conv2d_desc *d) {
    int padded_h, padded_w;
    size_t gradient;
    patch_geometry(d, &padded_h, &padded_w, &gradient);
    return gradient + (size_t)d->batch * padded_h * padded_w * d->in_channels;
}

/* A stem's patch (3x3 taps x 3 channels = 27 elements) split evenly into tiles (7 + 7 + 7 + 6 elements by 4
 * vectors), where row runs split each kernel row's 9 into 7 + 2 and the 2 x 4 tile waits on its FMA latency.
 * Over a zero-bordered copy of x (small: 3 channels), so no pixel is a border pixel and one call covers a whole
 * pixel block. */
static void backward_weights_patch(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x,
                                   const float *dy, float *dw, void *workspace) {
    const int K = d->out_channels, C = d->in_channels, R = d->kernel_h, S = d->kernel_w;
    const int OH = direct_out_size(d->in_h, R, d->stride_h, d->pad_h);
    const int OW = direct_out_size(d->in_w, S, d->stride_w, d->pad_w);
    const int kvecs = direct_ceil_div(K, DIRECT_LANES), kpad = kvecs * DIRECT_LANES;
    const int run = S * C, patch = R * run;
    int padded_h, padded_w;
    size_t gradient;
    patch_geometry(d, &padded_h, &padded_w, &gradient);
    float *acc = workspace, *padded = acc + gradient;
    const size_t image = (size_t)padded_h * padded_w * C;
    memset(acc, 0, gradient * sizeof(float));
    direct_copy_padded(x, d->batch, d->in_h, d->in_w, C, d->pad_h, d->pad_w, padded_h, padded_w, padded);
    const bool avx512 = direct_isa_resolved() == PLAIT_ISA_AVX512;
    const int block_h = s->block_h > 0 ? s->block_h : OH, block_n = s->block_w > 0 ? s->block_w : 1;
    const int e_tiles = direct_ceil_div(patch, s->tile_w), k_tiles = direct_ceil_div(kvecs, s->tile_k);
#pragma omp parallel num_threads(plait_threads())
    for (int n = 0; n < d->batch; n += block_n)
        for (int h0 = 0; h0 < OH; h0 += block_h) {
#pragma omp for schedule(static) nowait
            for (int unit = 0; unit < e_tiles * k_tiles; unit++) {
                const int first = unit % e_tiles * s->tile_w, count = direct_min(s->tile_w, patch - first);
                const int kv = unit / e_tiles * s->tile_k, nr = direct_min(s->tile_k, kvecs - kv);
                const int k_left = K - (kv + nr - 1) * DIRECT_LANES;
                direct_wtile t = {
                    .x = padded + (size_t)n * image + (size_t)h0 * d->stride_h * padded_w * C,
                    .x_pixel = (ptrdiff_t)d->stride_w * C,
                    .x_row = (ptrdiff_t)d->stride_h * padded_w * C,
                    .x_image = (ptrdiff_t)image,
                    .x_tap_row = (ptrdiff_t)padded_w * C,
                    .dy = dy + (((size_t)n * OH + h0) * OW) * K + (size_t)kv * DIRECT_LANES,
                    .dy_pixel = K,
                    .dy_row = (ptrdiff_t)OW * K,
                    .dy_image = (ptrdiff_t)OH * OW * K,
                    .pixels = OW,
                    .rows = direct_min(block_h, OH - h0),
                    .images = direct_min(block_n, d->batch - n),
                    .acc = acc + (size_t)first * kpad + (size_t)kv * DIRECT_LANES,
                    .acc_c = kpad,
                    .last_lanes = k_left < DIRECT_LANES ? k_left : DIRECT_LANES,
                };
                direct_wtile_fn tile = avx512 ? direct_patch_tile_avx512(run, first, count, nr) : NULL;
                if (tile)
                    tile(&t);
                else
                    direct_patch_tile_portable(&t, run, first, count, nr);
            }
        }
    add_transposed(d, acc, dw);
}

/* The tap, channel tile and output-channel tile of a unit. split_k: channel tiles fastest, so consecutive units
 * reuse one dy tile from L1. */
static inline void unit_tiles(const plait_conv_schedule *s, long unit, int c_tiles, int k_tiles, int *tap, int *ct,
                              int *kt) {
    *kt = s->split_k ? (int)(unit / c_tiles % k_tiles) : (int)(unit % k_tiles);
    *ct = s->split_k ? (int)(unit % c_tiles) : (int)(unit / k_tiles % c_tiles);
    *tap = (int)(unit / ((long)c_tiles * k_tiles));
}

/* The sums of unit `unit` (its tile of the packed gradient [taps][run][kpad]) into L1 while the unit before it
 * computes: the gradient outgrows L2 on large layers (9.4 MB at 512 x 512 x 3 x 3) and every unit reloads its
 * sums once per pixel block, which its first multiply-adds then waited for (stride-2 3x3 layers, one and two
 * threads: 1.00-1.04x). Always inlined: GCC drops the calls of a function that only prefetches. */
static inline __attribute__((always_inline)) void prefetch_unit_sums(const plait_conv_schedule *s, long unit,
                                                                     int run, int c_tiles, int k_tiles, int kvecs,
                                                                     const float *acc) {
    int tap, ct, kt;
    unit_tiles(s, unit, c_tiles, k_tiles, &tap, &ct, &kt);
    int c0 = tap * run + ct * s->tile_w, mc = direct_min(s->tile_w, run - ct * s->tile_w);
    int kv = kt * s->tile_k, nr = direct_min(s->tile_k, kvecs - kv);
    const float *sums = acc + (size_t)c0 * kvecs * DIRECT_LANES + (size_t)kv * DIRECT_LANES;
    for (int i = 0; i < mc; i++)
        for (int j = 0; j < nr; j++) __builtin_prefetch(sums + ((size_t)i * kvecs + j) * DIRECT_LANES, 1, 3);
}

void plait_direct_backward_weights(const plait_conv2d_desc *d, const plait_conv_schedule *schedule, const float *x,
                                   const float *dy, float *dw, void *workspace) {
    if (d->groups > 1) {
        direct_depthwise_backward_weights(d, schedule, x, dy, dw, workspace);
        return;
    }
    plait_conv_schedule s = direct_resolve_schedule(d, PLAIT_CONV_BACKWARD_WEIGHTS, schedule);
    if (s.im2col) {
        plait_conv2d_im2col_blas.backward_weights(d, x, dy, dw, workspace);
        return;
    }
    if (s.winograd) {
        direct_winograd_backward_weights(d, &s, x, dy, dw, workspace);
        return;
    }
    if (s.pad_copy && direct_patch_weights_applies(d)) {
        backward_weights_patch(d, &s, x, dy, dw, workspace);
        return;
    }
    if (s.pad_copy && direct_packed_weights_applies(d)) {
        direct_backward_weights_packed(d, &s, x, dy, dw, workspace);
        return;
    }
    if (s.pad_copy) {
        direct_backward_weights_phases(d, &s, x, dy, dw, workspace);
        return;
    }
    const int K = d->out_channels, C = d->in_channels, R = d->kernel_h, S = d->kernel_w;
    const int OH = direct_out_size(d->in_h, R, d->stride_h, d->pad_h);
    const int OW = direct_out_size(d->in_w, S, d->stride_w, d->pad_w);
    const int kvecs = direct_ceil_div(K, DIRECT_LANES), kpad = kvecs * DIRECT_LANES;
    float *acc = workspace;
    memset(acc, 0, (size_t)R * S * C * kpad * sizeof(float));
    const bool row_runs = s.loop_order == PLAIT_LOOP_ROWS_OUTER;
    const int run = row_runs ? S * C : C, taps = row_runs ? R : R * S;
    const int c_tiles = direct_ceil_div(run, s.tile_w), k_tiles = direct_ceil_div(kvecs, s.tile_k);
    const long units = (long)taps * c_tiles * k_tiles;
    /* row runs: the columns where every tap of a kernel row is inside the image; the rest go tap by tap */
    int run_lo = first_inside(-d->pad_w, d->stride_w);
    int run_hi = direct_min(OW, end_inside(S - 1 - d->pad_w, d->stride_w, d->in_w));
    if (run_lo >= run_hi) run_lo = run_hi = OW;
    const int block_h = s.block_h > 0 ? s.block_h : OH;
    const plait_isa isa = direct_isa_resolved();
    const int block_n = s.block_w > 0 ? s.block_w : 1;
    /* Two or more threads on 1x1 layers with small sums: each thread takes every threads-th pixel block with all
     * the units, into sums of its own added up at the end, so each core reads only its own blocks' x and dy.
     * Split by units, both cores read every block (a thread's units read all of dy and part of x, or the other
     * way round): 64 -> 256 at 32x32 ran 0.86x oneDNN on two threads against 1.05x on one. */
    const size_t acc_floats = (size_t)R * S * C * kpad;
    const int team = plait_threads();
    const long blocks = (long)direct_ceil_div(d->batch, block_n) * direct_ceil_div(OH, block_h);
    const bool pointwise = R == 1 && S == 1;
    float *own_sums = NULL;
    if (team > 1 && pointwise && blocks >= 4L * team && acc_floats * sizeof(float) <= ((size_t)512 << 10))
        own_sums = plait_alloc((size_t)(team - 1) * acc_floats * sizeof(float));
    const bool by_blocks = own_sums != NULL;
#pragma omp parallel num_threads(team)
    {
        /* split by units, every thread owns the same units in every block (no reduction). On 1x1 layers it prefetches
         * the next block's rows, a share per unit, while this one computes (ResNet-50's 256 -> 64 at 32x32,
         * batch 64: 1.33x on one thread and two; 3x3 layers, whose tiles read each x line once per tap, ran
         * 0.96-1.05x with it, so they go without); where the blocks are whole rows, through the tiles, a line
         * per pixel (direct_spans_of: 64 -> 64, 256 -> 64 and 64 -> 256 at 32x32 1.14-1.30x on one thread,
         * 1.14-1.27x on two) */
        const int threads = omp_get_num_threads(), me = omp_get_thread_num();
        const long u0 = by_blocks ? 0 : units * me / threads, u1 = by_blocks ? units : units * (me + 1) / threads;
        float *const sums = by_blocks && me > 0 ? own_sums + (size_t)(me - 1) * acc_floats : acc;
        long block = -1;
        /* the input channels this thread's units read (a range of channel tiles unless split_k interleaves them) */
        int x_lo = 0, x_hi = C;
        if (pointwise && !s.split_k && u1 > u0) {
            int tap, first, last, kt;
            unit_tiles(&s, u0, c_tiles, k_tiles, &tap, &first, &kt);
            unit_tiles(&s, u1 - 1, c_tiles, k_tiles, &tap, &last, &kt);
            x_lo = first * s.tile_w;
            x_hi = direct_min(C, (last + 1) * s.tile_w);
        }
        for (int n = 0; n < d->batch; n += block_n)
            for (int h0 = 0; h0 < OH; h0 += block_h) {
                if (by_blocks && ++block % threads != me) continue;
                const int h1 = direct_min(OH, h0 + block_h), images = direct_min(block_n, d->batch - n);
                direct_pixel_range next = {n, h0, images, h1 - h0}; /* the next block this thread runs */
                for (int step = 0; step < (by_blocks ? threads : 1) && next.images > 0; step++)
                    next = direct_next_block(d, next, block_n, block_h);
                const direct_block_spans spans = direct_spans_of(d, x, dy, next);
                for (long unit = u0; unit < u1; unit++) {
                    wtile_range range = {.n = n, .images = images, .h0 = h0, .h1 = h1};
                    if (direct_spans_any(&spans))
                        direct_spans_share(&spans, unit - u0, u1 - u0, range.prefetch);
                    else if (pointwise)
                        direct_prefetch_share(d, x, dy, next, unit - u0, u1 - u0, 0, K, x_lo, x_hi);
                    if (unit + 1 < u1) prefetch_unit_sums(&s, unit + 1, run, c_tiles, k_tiles, kvecs, sums);
                    int tap, ct, kt;
                    unit_tiles(&s, unit, c_tiles, k_tiles, &tap, &ct, &kt);
                    int c0 = ct * s.tile_w, mc = direct_min(s.tile_w, run - c0);
                    int kv = kt * s.tile_k, nr = direct_min(s.tile_k, kvecs - kv);
                    range.kv = kv, range.nr = nr;
                    if (!row_runs) {
                        run_tap(d, &range, x, dy, sums, tap / S, tap % S, c0, mc, 0, OW, isa);
                        continue;
                    }
                    run_span(d, &range, x, dy, sums, tap, 0, c0, mc, run_lo, run_hi, isa);
                    for (int sc = c0 / C; sc * C < c0 + mc; sc++) { /* the rest tap by tap */
                        int from = direct_max(c0, sc * C), to = direct_min(c0 + mc, (sc + 1) * C);
                        run_tap(d, &range, x, dy, sums, tap, sc, from - sc * C, to - from, 0, run_lo, isa);
                        run_tap(d, &range, x, dy, sums, tap, sc, from - sc * C, to - from, run_hi, OW, isa);
                    }
                }
            }
    }
    if (by_blocks) {
#pragma omp parallel for schedule(static) num_threads(team)
        for (size_t i = 0; i < acc_floats; i++)
            for (int t = 0; t < team - 1; t++) acc[i] += own_sums[(size_t)t * acc_floats + i];
        plait_free(own_sums);
    }
    add_transposed(d, acc, dw);
}
