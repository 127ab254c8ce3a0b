/* Backward-weights of windowed convolutions (3x3 and up, any stride and padding) as packed GEMMs, one per tap
 * (schedule pad_copy = 1 where neither the stems' patch tiles nor the packed 1x1 path apply).
 *
 * Why: the unpacked tiles read a channel slice of x and of dy at every pixel in place, rows C and K floats
 * apart; with C and K powers of two those rows fall into a few L1 sets (a stride-2 layer with 256 channels reads
 * x 2 KB apart: two sets of 64), so the tile streams both operands from L2 with no reuse and ran at 64% of the
 * FMA peak on a 256 -> 512 layer where the same tile on contiguous panels ran at 78%.
 *
 * Per block of whole images the threads copy x into stride-phase planes: pixel (ih, iw) goes to plane
 * (ih % stride_h, iw % stride_w) at (ih / stride_h, iw / stride_w), channels cut into panels of tile_k vectors.
 * Tap (r, s) then reads one plane over a plain window: output pixel (oh, ow) meets plane pixel (oh + di, ow + dj)
 * with di, dj fixed per tap, so its pixels are consecutive panel rows, and the taps outside the image are cut off
 * by narrowing the window (no zeros are multiplied). Each thread copies dy's channels of its own output-channel
 * tiles into panels [k tile][pixel][tile_w] and accumulates straight into its rows of dw, as the packed 1x1 path
 * does (the tile's roles swapped: rows are output channels, vectors input channels).
 *
 * Planes and panels hold the block's images innermost, [row][column][image][channels]: a window's row over every
 * image is then one run of pixels, where rows of single images were 3-4 pixels on the 8x8 layers' 4x4 outputs and
 * each cost the tile a loop exit and a new pair of row pointers.
 *
 * split_k = 1 on two or more threads, where the workspace holds a set per thread: each thread takes whole image
 * blocks into planes and sums of its own instead (by_images below), and the sums are added at the end. On one
 * thread split_k = 1 runs the same loop into dw: each output-channel tile's dy panel copied just before its taps,
 * in ceil(K / tile_w) even tiles (64 -> 128 stride 2 1.01-1.02x). */
#include <omp.h>
#include <string.h>

#include "kernels/direct/direct.h"
#include "kernels/direct/prefetch.h"

/* Plane rows (or columns) of phase p along a size with the given stride: the ih = i * stride + p inside it. */
static int phase_extent(int size, int stride, int p) { return direct_ceil_div(size - p, stride); }

/* Tap offset a = r - pad along one axis: the phase it reads and the shift from output index to plane index. */
static void tap_phase(int a, int stride, int *phase, int *shift) {
    *phase = ((a % stride) + stride) % stride;
    *shift = (a - *phase) / stride;
}

/* Where tap row r (or column s) meets the planes: its phase, the shift from output to plane index, the plane's
 * extent, and the outputs [lo, hi) whose tap falls inside the image. Worked out once per call: per tile call, its
 * divisions took 3% of a 128 -> 256 stride-2 layer. */
typedef struct axis_window {
    int phase, shift, extent, lo, hi;
} axis_window;

/* Kernels up to this size along an axis take the path (ResNets and MobileNets use at most 7). */
#define PHASE_MAX_KERNEL 16

typedef struct phases_layout {
    int out_h, out_w, images, block_pixels, x_width, c_tiles;
    axis_window along_h[PHASE_MAX_KERNEL], along_w[PHASE_MAX_KERNEL];
    size_t plane_at[DIRECT_MAX_PHASES][DIRECT_MAX_PHASES]; /* floats from a c tile's panel start, per image block */
    size_t panel;                                           /* floats of one c tile's panel (every plane) */
} phases_layout;

bool direct_phase_weights_applies(const plait_conv2d_desc *d) {
    return d->groups == 1 && !direct_patch_weights_applies(d) && !direct_packed_weights_applies(d) &&
           d->stride_h <= DIRECT_MAX_PHASES && d->stride_w <= DIRECT_MAX_PHASES && d->kernel_h <= PHASE_MAX_KERNEL &&
           d->kernel_w <= PHASE_MAX_KERNEL;
}

/* Images per block: the schedule's block_w, at most what keeps a block within DIRECT_MAX_PACKED_PIXELS (at least
 * one image). */
static int max_images(const plait_conv2d_desc *d) {
    int pixels = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h) *
                 direct_out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    return direct_max(1, direct_min(d->batch, DIRECT_MAX_PACKED_PIXELS / direct_max(1, pixels)));
}

bool direct_phase_weights_valid(const plait_conv2d_desc *d, const plait_conv_schedule *s) {
    return direct_phase_weights_applies(d) && s->block_w >= 1 && s->block_w <= max_images(d) && s->block_h == 0 &&
           (s->split_k == 0 || s->split_k == 1) && s->loop_order == PLAIT_LOOP_K_OUTER;
}

static axis_window window_along(int tap, int pad, int stride, int size, int outputs) {
    axis_window a;
    tap_phase(tap - pad, stride, &a.phase, &a.shift);
    a.extent = phase_extent(size, stride, a.phase);
    a.lo = direct_max(0, -a.shift);
    a.hi = direct_min(outputs, a.extent - a.shift);
    return a;
}

static phases_layout layout_of(const plait_conv2d_desc *d, const plait_conv_schedule *s) {
    phases_layout l;
    l.out_h = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h);
    l.out_w = direct_out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    l.images = direct_min(s->block_w, d->batch);
    l.block_pixels = l.images * l.out_h * l.out_w;
    l.x_width = s->tile_k * DIRECT_LANES;
    l.c_tiles = direct_ceil_div(d->in_channels, l.x_width);
    for (int r = 0; r < d->kernel_h; r++) l.along_h[r] = window_along(r, d->pad_h, d->stride_h, d->in_h, l.out_h);
    for (int c = 0; c < d->kernel_w; c++) l.along_w[c] = window_along(c, d->pad_w, d->stride_w, d->in_w, l.out_w);
    l.panel = 0;
    for (int ph = 0; ph < d->stride_h; ph++)
        for (int pw = 0; pw < d->stride_w; pw++) {
            l.plane_at[ph][pw] = l.panel;
            l.panel += (size_t)l.images * phase_extent(d->in_h, d->stride_h, ph) *
                       phase_extent(d->in_w, d->stride_w, pw) * l.x_width;
        }
    return l;
}

static size_t floats_aligned(size_t floats) { return (floats + 15) / 16 * 16; }

/* Sets of planes the workspace holds: on up to this many threads each copies every block into planes of its own,
 * else they share one set (see direct_backward_weights_phases). */
#define PHASE_PLANE_SETS 2

/* One set of planes of the largest block, and its dy panels, whatever the schedule. */
static size_t planes_floats(const plait_conv2d_desc *d) {
    size_t cpad = (size_t)d->in_channels + DIRECT_LANES * DIRECT_MAX_TILE_K;
    return floats_aligned((size_t)max_images(d) * d->in_h * d->in_w * cpad);
}
static size_t panels_floats(const plait_conv2d_desc *d) {
    int out_pixels = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h) *
                     direct_out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    return floats_aligned((size_t)max_images(d) * out_pixels * d->out_channels);
}

size_t direct_phase_weights_floats(const plait_conv2d_desc *d) {
    return panels_floats(d) + PHASE_PLANE_SETS * planes_floats(d) + 32;
}

/* The tile of output channels [k0, k0 + mk), tap (r, s), c tile ct over the block's images, with its vectors of
 * input channels in *nr (0 where no output pixel of the block meets the tap inside the image). */
static direct_wtile tap_tile(const plait_conv2d_desc *d, const phases_layout *l, const float *dy_panel,
                             const float *x_panels, float *dw, int k0, int mk, int r, int s, int ct, int *nr) {
    const int C = d->in_channels;
    const axis_window *v = &l->along_h[r], *h = &l->along_w[s];
    const int ph = v->phase, di = v->shift, oh0 = v->lo, oh1 = v->hi;
    const int pw = h->phase, dj = h->shift, cols = h->extent, ow0 = h->lo, ow1 = h->hi;
    const int c0 = ct * l->x_width, vectors = direct_ceil_div(direct_min(l->x_width, C - c0), DIRECT_LANES);
    *nr = oh0 < oh1 && ow0 < ow1 ? vectors : 0;
    const int images = l->images;
    direct_wtile t = {
        .x = dy_panel + ((size_t)oh0 * l->out_w + ow0) * images * mk,
        .x_pixel = mk,
        .x_row = (ptrdiff_t)l->out_w * images * mk,
        .dy = x_panels + ct * l->panel + l->plane_at[ph][pw] +
              ((size_t)(oh0 + di) * cols + ow0 + dj) * images * l->x_width,
        .dy_pixel = l->x_width,
        .dy_row = (ptrdiff_t)cols * images * l->x_width,
        .pixels = (ow1 - ow0) * images,
        .rows = oh1 - oh0,
        .images = 1,
        .acc = dw + ((size_t)k0 * d->kernel_h * d->kernel_w + (size_t)r * d->kernel_w + s) * C + c0,
        .acc_c = (ptrdiff_t)d->kernel_h * d->kernel_w * C,
        .last_lanes = direct_min(DIRECT_LANES, C - c0 - (vectors - 1) * DIRECT_LANES),
    };
    /* a window of whole rows of both is one run of pixels: the tile then runs it as one loop (256 -> 512 at 8x8,
     * 4-pixel rows: 1.03x; 16-pixel rows 1.0-1.01x) */
    if (ow1 - ow0 == l->out_w && cols == l->out_w) t.pixels *= t.rows, t.rows = 1;
    return t;
}

/* The layout of the block of images from n0 on: the base one, or planes of fewer images for a short last block. */
static phases_layout block_layout(const plait_conv2d_desc *d, const plait_conv_schedule *s, const phases_layout *base,
                                  int n0) {
    if (d->batch - n0 >= base->images) return *base;
    plait_conv_schedule last = *s;
    last.block_w = d->batch - n0;
    return layout_of(d, &last);
}

/* Input row `row` (image row / in_h, row % in_h) of the block from n0 on into its planes: the row's pixels of
 * each column phase go to a plane row, one image's place in each of its pixels. */
static void copy_x_row(const plait_conv2d_desc *d, const phases_layout *l, const float *x, int n0, int row,
                       float *x_panels, bool avx512) {
    const int b = row / d->in_h, ih = row % d->in_h, C = d->in_channels, ph = ih % d->stride_h;
    const float *xs = x + (((size_t)(n0 + b) * d->in_h + ih) * d->in_w) * C;
    const size_t images = (size_t)l->images, plane_row = (size_t)(ih / d->stride_h);
    for (int pw = 0; pw < d->stride_w && pw < d->in_w; pw++) {
        const int cols = phase_extent(d->in_w, d->stride_w, pw);
        direct_pack_x_pixels(xs + (size_t)pw * C, (ptrdiff_t)d->stride_w * C, cols, C, l->x_width, l->c_tiles,
                             l->panel, x_panels + l->plane_at[ph][pw] + (plane_row * cols * images + b) * l->x_width,
                             (ptrdiff_t)(images * l->x_width), avx512);
    }
}

/* The images [n0, n0 + images) of x and of dy as two spans of lines: the block a thread copies next, which its
 * tiles pull into L2 while they run on this one, so that the copies read L2 rather than wait on memory (64 -> 128
 * stride 2: the x copy 12% -> 4% of the layer, 1.05x one thread, 1.1x two). None past the batch, nor where the
 * spans pass half the L2: there they pushed out the planes the tiles read (256 -> 512 at 8x8, 1.5 MB: 0.96x). */
static direct_block_spans block_spans(const plait_conv2d_desc *d, const phases_layout *l, const float *x,
                                      const float *dy, int n0) {
    direct_block_spans s = {0};
    const int images = direct_min(l->images, d->batch - n0);
    const size_t x_image = (size_t)d->in_h * d->in_w * d->in_channels;
    const size_t dy_image = (size_t)l->out_h * l->out_w * d->out_channels;
    if (images <= 0 || images * (x_image + dy_image) * sizeof(float) > plait_cpu_features()->l2_bytes / 2) return s;
    s.spans[0] = (direct_line_span){(const char *)(x + n0 * x_image), (int)(images * x_image * sizeof(float) / 64)};
    s.spans[1] = (direct_line_span){(const char *)(dy + n0 * dy_image), (int)(images * dy_image * sizeof(float) / 64)};
    return s;
}

/* Tile calls per k tile: one per tap and c tile (the shares of the next block's spans). */
static long calls_per_k_tile(const plait_conv2d_desc *d, const phases_layout *l) {
    return (long)d->kernel_h * d->kernel_w * l->c_tiles;
}

/* Output channels [k0, k0 + mk) from their copied dy panel, over every tap and c tile of the block, into dw; tile
 * call `first` on of `calls` takes its share of `next` (the thread's next block) into L2. */
static void run_k_tile(const plait_conv2d_desc *d, const phases_layout *l, const float *panel, const float *x_panels,
                       float *dw, int k0, int mk, const direct_block_spans *next, long first, long calls,
                       plait_isa isa) {
    long call = first;
    for (int tap = 0; tap < d->kernel_h * d->kernel_w; tap++)
        for (int ct = 0; ct < l->c_tiles; ct++, call++) {
            int nr;
            direct_wtile t = tap_tile(d, l, panel, x_panels, dw, k0, mk, tap / d->kernel_w, tap % d->kernel_w, ct, &nr);
            if (direct_spans_any(next)) direct_spans_share(next, call, calls, t.prefetch);
            if (nr > 0) direct_run_wtile(isa, &t, mk, nr);
        }
}

/* One block's tiles over output channels [0, K) in ceil(K / tile_w) even tiles, each tile's dy panel copied just
 * before its taps (it stays in L1 across every tap and c tile), into the sums at dw. */
static void run_block(const plait_conv2d_desc *d, const phases_layout *l, int TW, const float *dy_block,
                      const float *x_panels, float *panel, float *dw, const direct_block_spans *next, plait_isa isa) {
    const int K = d->out_channels, out_pixels = l->out_h * l->out_w, tiles = direct_ceil_div(K, TW);
    const long per_tile = calls_per_k_tile(d, l);
    for (int tile = 0; tile < tiles; tile++) {
        const int k0 = (int)((long)K * tile / tiles), mk = (int)((long)K * (tile + 1) / tiles) - k0;
        for (int b = 0; b < l->images; b++)
            direct_pack_dy_panel(dy_block + (size_t)b * out_pixels * K + k0, K, out_pixels, mk, panel + b * mk,
                                 (size_t)l->images * mk, isa == PLAIT_ISA_AVX512);
        run_k_tile(d, l, panel, x_panels, dw, k0, mk, next, tile * per_tile, tiles * per_tile, isa);
    }
}

/* Thread t's part of the workspace with split_k = 1: its planes of a block, one dy panel and (but the first
 * thread's, which sums into dw) a set of sums, in that order. */
typedef struct thread_part {
    float *planes, *panel, *sums;
} thread_part;

static size_t sums_floats(const plait_conv2d_desc *d) {
    return (size_t)d->out_channels * d->kernel_h * d->kernel_w * d->in_channels;
}

static size_t thread_floats(const plait_conv2d_desc *d, const phases_layout *l, int tile_w) {
    return floats_aligned(l->panel * l->c_tiles) + floats_aligned((size_t)l->block_pixels * tile_w) +
           floats_aligned(sums_floats(d));
}

static thread_part thread_part_of(const plait_conv2d_desc *d, const phases_layout *l, int tile_w, float *workspace,
                                  int t) {
    thread_part part;
    part.planes = workspace + (size_t)t * thread_floats(d, l, tile_w);
    part.panel = part.planes + floats_aligned(l->panel * l->c_tiles);
    part.sums = part.panel + floats_aligned((size_t)l->block_pixels * tile_w);
    return part;
}

bool direct_phase_weights_by_images(const plait_conv2d_desc *d, const plait_conv_schedule *s, int threads) {
    if (s->split_k != 1 || !direct_phase_weights_valid(d, s)) return false;
    /* one thread sums into dw itself: its planes and one panel always fit */
    if (threads == 1) return true;
    const phases_layout l = layout_of(d, s);
    /* where it fitted before the second set of planes (given room for more, by images ran 0.91-0.99x on 8x8) */
    return threads * thread_floats(d, &l, s->tile_w) <= panels_floats(d) + planes_floats(d) + 32;
}

/* split_k = 1 on two or more threads: each thread takes whole image blocks (every other one) into sums of its
 * own, then all threads add the sums into dw, a slice each. No planes are shared, so no thread waits for another
 * until the end; it pays a set of sums per thread and their addition (64 -> 128 at 32x32: 295 KB each). */
static void by_images(const plait_conv2d_desc *d, const plait_conv_schedule *s, const phases_layout *base,
                      const float *x, const float *dy, float *dw, float *workspace, int threads) {
    const size_t sums = sums_floats(d);
    const int blocks = direct_ceil_div(d->batch, base->images);
    const plait_isa isa = direct_isa_resolved();
#pragma omp parallel num_threads(threads)
    {
        const int me = omp_get_thread_num();
        const thread_part part = thread_part_of(d, base, s->tile_w, workspace, me);
        float *mine = me == 0 ? dw : part.sums;
        if (me > 0) memset(mine, 0, sums * sizeof(float));
        for (int block = me; block < blocks; block += threads) {
            const int n0 = block * base->images;
            const phases_layout l = block_layout(d, s, base, n0);
            for (int row = 0; row < l.images * d->in_h; row++)
                copy_x_row(d, &l, x, n0, row, part.planes, isa == PLAIT_ISA_AVX512);
            const direct_block_spans next = block_spans(d, base, x, dy, n0 + threads * base->images);
            run_block(d, &l, s->tile_w, dy + (size_t)n0 * l.out_h * l.out_w * d->out_channels, part.planes,
                      part.panel, mine, &next, isa);
        }
#pragma omp barrier
        const size_t from = sums * me / threads, to = sums * (me + 1) / threads;
        for (int other = 1; other < threads; other++) {
            const float *theirs = thread_part_of(d, base, s->tile_w, workspace, other).sums;
            for (size_t i = from; i < to; i++) dw[i] += theirs[i];
        }
    }
}

void direct_backward_weights_phases(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x,
                                    const float *dy, float *dw, void *workspace) {
    const int K = d->out_channels, TW = s->tile_w;
    const phases_layout base = layout_of(d, s);
    float *dy_panels = workspace;
    float *x_panels = (float *)(((size_t)(dy_panels + (size_t)base.block_pixels * K) + 63) & ~(size_t)63);
    const plait_isa isa = direct_isa_resolved();
    const bool avx512 = isa == PLAIT_ISA_AVX512;
    const int threads = plait_threads();
    if (direct_phase_weights_by_images(d, s, threads)) {
        by_images(d, s, &base, x, dy, dw, workspace, threads);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        /* each thread owns an equal range of output channels (rows of dw) in tiles of tile_w from its first: its
         * own dy panels, no reduction, and no thread waits at the block's end for a whole tile more (37 tiles of 14
         * on 512 channels put 18 on one thread and 19 on the other) */
        const int threads = omp_get_num_threads(), me = omp_get_thread_num();
        const int k_begin = (int)((long)K * me / threads), k_end = (int)((long)K * (me + 1) / threads);
        const int my_tiles = direct_ceil_div(k_end - k_begin, TW);
        /* Up to PHASE_PLANE_SETS threads each copy every block into planes of their own: then no thread waits for
         * another, and none reads planes the other core wrote (two threads, 256 -> 512 at 8x8: 1.03-1.07x, the
         * copy no slower for twice the rows). Else the threads copy a share of the rows into one set and wait for
         * each other twice a block. */
        const bool own_planes = threads <= PHASE_PLANE_SETS;
        float *const planes = x_panels + (own_planes ? (size_t)me * planes_floats(d) : 0);
        for (int n0 = 0; n0 < d->batch; n0 += base.images) {
            const phases_layout l = block_layout(d, s, &base, n0);
            const int out_pixels = l.out_h * l.out_w;
            if (own_planes) {
                for (int row = 0; row < l.images * d->in_h; row++) copy_x_row(d, &l, x, n0, row, planes, avx512);
            } else {
#pragma omp for schedule(static)
                for (int row = 0; row < l.images * d->in_h; row++) copy_x_row(d, &l, x, n0, row, planes, avx512);
            }
            for (int b = 0; b < l.images; b++) /* image b's pixel q to panel row q * images + b */
                for (int q = 0; q < out_pixels; q++)
                    direct_pack_dy_pixel(dy + ((size_t)(n0 + b) * out_pixels + q) * K, k_begin, k_end, TW,
                                         (size_t)base.block_pixels, q * l.images + b, dy_panels, avx512);
            /* one thread pulls the next block in; two with planes of their own gained nothing by it on the 8x8
             * layers (blocks of 8 images 0.98-0.99x; 16 pass half the L2), and over shared planes each thread's
             * part of x's span would miss the rows the other copies */
            const direct_block_spans next =
                threads == 1 ? block_spans(d, &base, x, dy, n0 + base.images) : (direct_block_spans){0};
            const long per_tile = calls_per_k_tile(d, &l);
            /* k tile outermost: its dy panel stays in L1 across every tap and c tile */
            for (int kt = 0; kt < my_tiles; kt++) {
                const int k0 = k_begin + kt * TW;
                run_k_tile(d, &l, dy_panels + (size_t)k0 * base.block_pixels, planes, dw, k0,
                           direct_min(TW, k_end - k0), &next, kt * per_tile, my_tiles * per_tile, isa);
            }
            if (!own_planes) {
                /* the next block's copy of x overwrites planes the other threads may still read */
#pragma omp barrier
            }
        }
    }
}
