/* Backward-weights of a 1x1 convolution as a packed GEMM (schedule pad_copy = 1): dW[K][C] = dY^T X over the
 * pixels. The unpacked path reads a unit's x and dy straight from NHWC at strides of C and K floats; with C
 * or K a power of two those rows share a few L1 sets and evict each other. Here, per pixel block, the threads
 * first copy dy into panels [k tile][pixel][tile_w] and x into panels [c tile][pixel][tile_k * 16] (zero past
 * C), so each micro-kernel call reads two contiguous streams (BLIS packs its operands for the same reason).
 * The roles of the backward-weights tile are swapped: its rows are output channels and its vectors input
 * channels, which is dw's own layout, so the tile accumulates straight into dw: no gradient workspace to
 * clear, and no transpose of it at the end (1 ms of a 1024 x 1024 layer's 9). */
#include <omp.h>
#include <string.h>

#include "kernels/direct/direct.h"
#include "kernels/direct/prefetch.h"

/* Layout of one schedule: k tiles of tile_w output channels, c tiles of tile_k vectors of input channels, over
 * blocks of block_n images x block_h output rows (out_h x out_w per image). */
typedef struct packed_layout {
    int k_tiles, c_tiles, cvecs;
    int out_h, out_w, block_h, block_n, block_pixels;
} packed_layout;

static packed_layout layout_of(const plait_conv2d_desc *d, const plait_conv_schedule *s) {
    packed_layout l;
    l.out_w = direct_out_size(d->in_w, 1, d->stride_w, 0), l.out_h = direct_out_size(d->in_h, 1, d->stride_h, 0);
    l.cvecs = direct_ceil_div(d->in_channels, DIRECT_LANES);
    l.k_tiles = direct_ceil_div(d->out_channels, s->tile_w);
    l.c_tiles = direct_ceil_div(l.cvecs, s->tile_k);
    l.block_h = s->block_h > 0 ? direct_min(s->block_h, l.out_h) : l.out_h;
    l.block_n = s->block_w > 0 ? direct_min(s->block_w, d->batch) : 1;
    l.block_pixels = l.block_n * l.block_h * l.out_w;
    return l;
}

bool direct_packed_weights_applies(const plait_conv2d_desc *d) {
    return d->groups == 1 && d->kernel_h == 1 && d->kernel_w == 1 && d->pad_h == 0 && d->pad_w == 0;
}

int direct_packed_block_pixels(const plait_conv2d_desc *d, const plait_conv_schedule *s) {
    return layout_of(d, s).block_pixels;
}

/* Enough for every valid packed schedule: blocks of at most DIRECT_MAX_PACKED_PIXELS, the widest c tiles. */
size_t direct_packed_weights_floats(const plait_conv2d_desc *d) {
    size_t cpad = (size_t)d->in_channels + DIRECT_LANES * (DIRECT_MAX_TILE_K + 1);
    return (size_t)DIRECT_MAX_PACKED_PIXELS * (d->out_channels + cpad) + 16;
}

/* Output row j (of images x rows) of the block at image n0, output row h0 (rows rows per image): its pixels of x
 * into every x panel, zero past C. */
static void copy_x_row(const plait_conv2d_desc *d, const packed_layout *l, int x_width, const float *x, int n0,
                       int h0, int rows, int j, int pixels, float *x_panels, bool avx512) {
    const int C = d->in_channels, OW = l->out_w, n = n0 + j / rows, oh = h0 + j % rows;
    const float *xs = x + ((size_t)n * d->in_h + (size_t)oh * d->stride_h) * d->in_w * C;
    direct_pack_x_pixels(xs, (ptrdiff_t)d->stride_w * C, OW, C, x_width, l->c_tiles, (size_t)pixels * x_width,
                         x_panels + (size_t)j * OW * x_width, x_width, avx512);
}

void direct_pack_x_pixels(const float *xs, ptrdiff_t xs_pixel, int pixels, int C, int x_width, int c_tiles,
                          size_t panel_stride, float *to, ptrdiff_t to_pixel, bool avx512) {
    if (avx512) {
        direct_pack_x_pixels_avx512(xs, xs_pixel, pixels, C, x_width, c_tiles, panel_stride, to, to_pixel);
        return;
    }
    for (int p = 0; p < pixels; p++, xs += xs_pixel, to += to_pixel)
        for (int ct = 0; ct < c_tiles; ct++) {
            int c0 = ct * x_width, valid = direct_max(0, direct_min(x_width, C - c0));
            memcpy(to + ct * panel_stride, xs + c0, (size_t)valid * sizeof(float));
            memset(to + ct * panel_stride + valid, 0, (size_t)(x_width - valid) * sizeof(float));
        }
}

void direct_pack_dy_pixel(const float *ds, int k_begin, int k_end, int tile_w, size_t block_pixels, int p,
                          float *dy_panels, bool avx512) {
    if (avx512) {
        direct_pack_dy_pixel_avx512(ds, k_begin, k_end, tile_w, block_pixels, p, dy_panels);
        return;
    }
    /* k tile k0 / tile_w's panel starts at k0 * block_pixels, so a thread's panels stay its own from block to
     * block (a short last block must not move them into another thread's) */
    for (int k0 = k_begin; k0 < k_end; k0 += tile_w) {
        int mk = direct_min(tile_w, k_end - k0);
        memcpy(dy_panels + (size_t)k0 * block_pixels + (size_t)p * mk, ds + k0, (size_t)mk * sizeof(float));
    }
}

void direct_pack_dy_panel(const float *ds, size_t ds_pixel, int pixels, int mk, float *panel, size_t panel_pixel,
                          bool avx512) {
    if (avx512) {
        direct_pack_dy_panel_avx512(ds, ds_pixel, pixels, mk, panel, panel_pixel);
        return;
    }
    for (int p = 0; p < pixels; p++)
        memcpy(panel + p * panel_pixel, ds + p * ds_pixel, (size_t)mk * sizeof(float));
}

void direct_backward_weights_packed(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x,
                                    const float *dy, float *dw, void *workspace) {
    const int K = d->out_channels, C = d->in_channels, TW = s->tile_w, TK = s->tile_k;
    const packed_layout l = layout_of(d, s);
    const int OH = l.out_h, OW = l.out_w, block_h = l.block_h, block_n = l.block_n;
    float *dy_panels = workspace;
    float *x_panels = (float *)(((size_t)(dy_panels + (size_t)l.block_pixels * K) + 63) & ~(size_t)63);
    const plait_isa isa = direct_isa_resolved();
    const bool avx512 = isa == PLAIT_ISA_AVX512;
    const int x_width = TK * DIRECT_LANES;
#pragma omp parallel num_threads(plait_threads())
    {
        /* each thread owns a range of k tiles (rows of dw) over every block: it copies its own dy panels and
         * reads only its own dy, so two cores do not pass dy between their L2s. dy is read in place unless
         * split_k asks for panels; x too when its channels fit one c tile (its rows are then short, and copying
         * costs what it saves) */
        const int threads = omp_get_num_threads(), me = omp_get_thread_num();
        const int kt0 = (int)((long)l.k_tiles * me / threads), kt1 = (int)((long)l.k_tiles * (me + 1) / threads);
        const bool dy_in_place = !s->split_k, x_in_place = l.c_tiles == 1;
        /* where the workspace holds a set of x panels per thread, each thread copies its own: then no core reads
         * what the other wrote, and the threads never wait for each other (else the threads share one set, copy
         * it together and wait at each block's end) */
        const bool own_x = threads > 1 && (long)threads * l.block_pixels <= DIRECT_MAX_PACKED_PIXELS;
        float *const x_mine = own_x ? x_panels + (size_t)me * l.block_pixels * l.c_tiles * x_width : x_panels;
        for (int n0 = 0; n0 < d->batch; n0 += block_n)
            for (int h0 = 0; h0 < OH; h0 += block_h) {
                const int images = direct_min(block_n, d->batch - n0), rows = direct_min(block_h, OH - h0);
                const int pixels = images * rows * OW;
                if (!x_in_place && own_x) {
                    for (int j = 0; j < images * rows; j++)
                        copy_x_row(d, &l, x_width, x, n0, h0, rows, j, pixels, x_mine, avx512);
                } else if (!x_in_place) {
#pragma omp for schedule(static)
                    for (int j = 0; j < images * rows; j++)
                        copy_x_row(d, &l, x_width, x, n0, h0, rows, j, pixels, x_mine, avx512);
                }
                /* an image's rows of the block are consecutive pixels of dy */
                for (int b = 0, p = 0; b < images && !dy_in_place; b++) {
                    const float *ds = dy + (((size_t)(n0 + b) * OH + h0) * OW) * K;
                    for (int q = 0; q < rows * OW; q++, p++)
                        direct_pack_dy_pixel(ds + (size_t)q * K, kt0 * TW, direct_min(K, kt1 * TW), TW, l.block_pixels,
                                             p, dy_panels, avx512);
                }
                /* the next block streams into L2 while this one computes, a share per unit */
                direct_pixel_range next =
                    direct_next_block(d, (direct_pixel_range){n0, h0, images, rows}, block_n, block_h);
                const long units = (long)l.c_tiles * (kt1 - kt0);
                const direct_block_spans spans = direct_spans_of(d, x, dy, next);
                for (long unit = 0; unit < units; unit++) { /* c tile outside k tile */
                    int ct = (int)(unit / (kt1 - kt0)), kt = kt0 + (int)(unit % (kt1 - kt0));
                    int k0 = kt * TW, mk = direct_min(TW, K - k0), nr = direct_min(TK, l.cvecs - ct * TK);
                    int c_left = C - (ct * TK + nr - 1) * DIRECT_LANES;
                    direct_wtile t = {.pixels = OW, .rows = rows, .images = images,
                                      .acc = dw + (size_t)k0 * C + (size_t)ct * x_width, .acc_c = C,
                                      .last_lanes = direct_min(c_left, DIRECT_LANES)};
                    /* the tile's broadcast operand is dy, its vector operand x (roles swapped) */
                    if (dy_in_place) {
                        t.x = dy + (((size_t)n0 * OH + h0) * OW) * K + k0;
                        t.x_pixel = K, t.x_row = (ptrdiff_t)OW * K, t.x_image = (ptrdiff_t)OH * OW * K;
                    } else {
                        t.x = dy_panels + (size_t)k0 * l.block_pixels;
                        t.x_pixel = mk, t.x_row = (ptrdiff_t)OW * mk, t.x_image = (ptrdiff_t)rows * OW * mk;
                    }
                    if (x_in_place) {
                        t.dy = x + (((size_t)n0 * d->in_h + (size_t)h0 * d->stride_h) * d->in_w) * C;
                        t.dy_pixel = (ptrdiff_t)d->stride_w * C, t.dy_row = (ptrdiff_t)d->stride_h * d->in_w * C;
                        t.dy_image = (ptrdiff_t)d->in_h * d->in_w * C;
                    } else {
                        t.dy = x_mine + (size_t)ct * pixels * x_width;
                        t.dy_pixel = x_width, t.dy_row = (ptrdiff_t)OW * x_width;
                        t.dy_image = (ptrdiff_t)rows * OW * x_width;
                    }
                    /* a block of whole images or of rows of one image is one run of pixels in dy, and in x at stride
                     * 1: then the tile runs it as one loop (4 to 32-pixel rows cost a loop exit each) */
                    if ((images == 1 || rows == OH) && (!x_in_place || (d->stride_h == 1 && d->stride_w == 1))) {
                        t.pixels = pixels;
                        t.rows = t.images = 1;
                    }
                    /* the next block's x and dy through the tiles where its pixels are whole rows (128 -> 512 at
                     * 16x16 1.09x, 256 -> 128 at 32x32 1.15x, 8x8 and 4x4 level), else what the tile reads in place
                     * between tile calls */
                    if (direct_spans_any(&spans))
                        direct_spans_share(&spans, unit, units, t.prefetch);
                    else
                        direct_prefetch_share(d, x, dy, next, unit, units, kt0 * TW,
                                              dy_in_place ? direct_min(K, kt1 * TW) : kt0 * TW, 0, x_in_place ? C : 0);
                    direct_run_wtile(isa, &t, mk, nr);
                }
                if (!own_x) {
#pragma omp barrier
                }
            }
    }
}
