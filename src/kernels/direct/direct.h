/* Internals of the direct convolution kernels: the level-2 micro-kernel contracts and the level-1
 * framework that drives them. See docs/kernels.md. */
#ifndef PLAIT_KERNELS_DIRECT_H
#define PLAIT_KERNELS_DIRECT_H

#include <stddef.h>

#include "plait/tune.h"

#define DIRECT_LANES 16     /* packed weights and micro-kernel tiles work in vectors of 16 floats */
#define DIRECT_MAX_TILE_W 16
#define DIRECT_MAX_VTHREADS 4
#define DIRECT_MAX_TILE_K 4
#define DIRECT_MAX_ZEROS 3

static inline int direct_out_size(int in, int kernel, int stride, int pad) {
    return (in + 2 * pad - kernel) / stride + 1;
}
static inline int direct_min(int a, int b) { return a < b ? a : b; }
static inline int direct_max(int a, int b) { return a > b ? a : b; }
static inline int direct_ceil_div(int a, int b) { return (a + b - 1) / b; }
/* A backward-weights pixel block of about `pixels` outputs: whole rows of one image, or whole images when
 * one image holds fewer (block_h rows, block_w images). */
static inline void direct_pixel_block(int out_h, int out_w, int pixels, int *block_h, int *block_w) {
    *block_h = direct_max(1, direct_min(out_h, pixels / out_w));
    *block_w = direct_max(1, pixels / (*block_h * out_w));
}

/* ---- level 2: forward tile -------------------------------------------------------------------
 * Contract: `tiles` times (0 counts as 1), each time MR pixels further along the row (x advances by
 * MR*x_pixel, y by MR*y_pixel), for v < V sub-tiles, m < MR pixels, j < NR vectors of 16 output channels,
 *   y[v*y_vthread + m*y_pixel + 16*j + lane] (=|+=) sum over r < taps_h, s < taps_w, c < channels of
 *     x[v*x_vthread + m*x_pixel + r*x_tap_row + s*x_tap_col + c] * w[j*w_kvec + r*w_tap_row + s*w_tap_col + 16*c + lane]
 * overwriting when accumulate == 0. Only the first last_lanes lanes of vector NR-1 are stored (the
 * packed weights are zero-padded, so loads of y never pass the tail either). Every x and w address
 * the sums name must be valid: the framework narrows taps at image borders, and taps_h or taps_w may
 * be 0 (then the tile is stored as zeros, or left unchanged when accumulating). Also, for z < zeros, every
 * position stored gets zeros shifted by zero_offset[z] (same lanes; no offset lands on a sum, so any order). */
typedef struct direct_tile {
    const float *x;
    ptrdiff_t x_pixel, x_vthread, x_tap_row, x_tap_col;
    const float *w;
    ptrdiff_t w_kvec, w_tap_row, w_tap_col;
    int taps_h, taps_w, channels;
    float *y;
    ptrdiff_t y_pixel, y_vthread;
    int accumulate;
    int last_lanes;
    int tiles; /* the level-1 loop along a row's interior, run inside the micro-kernel: no call per tile */
    /* the stride phases no tap reaches, written beside the reached one while its sums run (backward-data of a
     * strided 1x1: three pixels in four) rather than in a pass of their own */
    int zeros;
    ptrdiff_t zero_offset[DIRECT_MAX_ZEROS];
    /* a hint: x is read once (one group of output channels), so prefetch the next tile's x rather than this
     * tile's further along its channels */
    int prefetch_next_x;
} direct_tile;
typedef void (*direct_tile_fn)(const direct_tile *t);

/* NULL when the ISA has no specialization for (vthreads, tile_w, tile_k, unroll). */
direct_tile_fn direct_tile_avx512(int vthreads, int tile_w, int tile_k, int unroll);
direct_tile_fn direct_tile_avx2(int vthreads, int tile_w, int tile_k, int unroll);
void direct_tile_portable(const direct_tile *t, int vthreads, int tile_w, int tile_k);

/* Cache lines to pull into L2 (a hint): `lines` consecutive lines from `at`. */
typedef struct direct_line_span {
    const char *at;
    int lines;
} direct_line_span;

/* ---- level 2: backward-weights tile -----------------------------------------------------------
 * Contract: for i < MC input channels, j < NR vectors of 16 output channels,
 *   acc[i*acc_c + 16*j + lane] += sum over b < images, q < rows, p < pixels of
 *     x[b*x_image + q*x_row + p*x_pixel + i] * dy[b*dy_image + q*dy_row + p*dy_pixel + 16*j + lane]
 * Only the first last_lanes lanes of vector NR-1 are loaded or stored, in dy and in acc: acc is the packed
 * gradient [R][S][C][Kpad], or (the packed 1x1 path, roles swapped) dw itself, whose rows end at C. */
typedef struct direct_wtile {
    const float *x;
    ptrdiff_t x_pixel, x_row, x_image;
    const float *dy;
    ptrdiff_t dy_pixel, dy_row, dy_image;
    int pixels, rows, images;
    float *acc;
    ptrdiff_t acc_c;
    int last_lanes;
    ptrdiff_t x_tap_row; /* patch tiles only (below) */
    /* a hint (the AVX-512 tiles take it): lines of the next pixel block to pull into L2, one line of each
     * per pixel from the tile's first on, none past its last pixel (prefetch.h, direct_spans_of) */
    direct_line_span prefetch[2];
} direct_wtile;
typedef void (*direct_wtile_fn)(const direct_wtile *t);
direct_wtile_fn direct_wtile_avx512(int tile_c, int tile_k);
direct_wtile_fn direct_wtile_avx2(int tile_c, int tile_k);
void direct_wtile_portable(const direct_wtile *t, int tile_c, int tile_k);
/* One backward-weights micro-kernel call on the given ISA (portable when it has no such tile shape). */
void direct_run_wtile(plait_isa isa, const direct_wtile *t, int tile_c, int tile_k);

/* ---- level 2: patch backward-weights tile (stems) ---------------------------------------------
 * Contract: as the backward-weights tile (MC elements x NR vectors of output channels), where the elements are
 * [first, first + MC) of a patch of kernel rows of `run` (taps x channels) floats each: element e = first + i
 * reads x at (e / run) * x_tap_row + e % run and accumulates into acc row i. The tiles then split the whole
 * patch (27 elements for a 3x3 stem over 3 channels) evenly instead of each kernel row's run (9 = 7 + 2).
 * NULL when the ISA has no such shape. */
#define DIRECT_MAX_PATCH 28
/* Elements per patch tile with tile_k vectors: the patch split into the fewest tiles a register file of max_tile
 * accumulators holds, evenly (27 by 4 vectors: 7 + 7 + 7 + 6). */
static inline int direct_patch_tile_width(int patch, int tile_k, int max_tile) {
    int fits = direct_min(patch, max_tile / tile_k);
    return direct_ceil_div(patch, direct_ceil_div(patch, fits));
}
direct_wtile_fn direct_patch_tile_avx512(int run, int first, int count, int nr);
void direct_patch_tile_portable(const direct_wtile *t, int run, int first, int count, int nr);
/* Backward-weights with patch tiles over a zero-bordered copy of x (schedule pad_copy = 1 on layers whose
 * patch kernel_h * kernel_w * C is at most DIRECT_MAX_PATCH; tile_w elements x tile_k vectors). Workspace:
 * direct_patch_weights_floats. */
bool direct_patch_weights_applies(const plait_conv2d_desc *d);
size_t direct_patch_weights_floats(const plait_conv2d_desc *d);

/* All `batch` images of x ([batch][in_h][in_w][c]) with `top` zero rows and `left` zero columns before the
 * first, padded_h rows of padded_w columns each, into dst, row by row across threads. */
void direct_copy_padded(const float *x, int batch, int in_h, int in_w, int c, int top, int left, int padded_h,
                        int padded_w, float *dst);

/* Backward-weights of 1x1 convolutions without padding as a packed GEMM (schedule pad_copy = 1; see
 * conv_weights_packed.c). Workspace: direct_packed_weights_floats. */
#define DIRECT_MAX_PACKED_PIXELS 2048
bool direct_packed_weights_applies(const plait_conv2d_desc *d);
int direct_packed_block_pixels(const plait_conv2d_desc *d, const plait_conv_schedule *s);
size_t direct_packed_weights_floats(const plait_conv2d_desc *d);
void direct_backward_weights_packed(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x,
                                    const float *dy, float *dw, void *workspace);
/* Backward-weights of windowed (or padded) convolutions as a packed GEMM per tap over stride-phase planes of x
 * (schedule pad_copy = 1 where neither of the above applies; see conv_weights_phases.c): blocks of block_w whole
 * images (block_h 0), tile_w output channels x tile_k vectors of input channels. Workspace:
 * direct_phase_weights_floats. */
#define DIRECT_MAX_PHASES 4
bool direct_phase_weights_applies(const plait_conv2d_desc *d);
bool direct_phase_weights_valid(const plait_conv2d_desc *d, const plait_conv_schedule *s);
/* Whether `threads` threads run it image blocks apart with sums of their own (split_k = 1, room in the
 * workspace for a set per thread; one thread sums into dw) rather than output-channel tiles apart. */
bool direct_phase_weights_by_images(const plait_conv2d_desc *d, const plait_conv_schedule *s, int threads);
size_t direct_phase_weights_floats(const plait_conv2d_desc *d);
void direct_backward_weights_phases(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x,
                                    const float *dy, float *dw, void *workspace);
/* Its panel copies on AVX-512 (pack_avx512.c): a run of `pixels` pixels of x, xs_pixel floats apart, each one's C
 * floats into c_tiles panels of x_width floats, panel_stride apart, zero past C, to_pixel floats apart (one
 * call per run rather than a call and its index divisions per pixel: 1.01-1.02x on 64 -> 128); one pixel of dy,
 * its channels [k_begin, k_end) into the panels of k tiles of tile_w channels, k0 * block_pixels + p * (the tile's
 * width) into dy_panels. */
void direct_pack_x_pixels_avx512(const float *xs, ptrdiff_t xs_pixel, int pixels, int C, int x_width, int c_tiles,
                                 size_t panel_stride, float *to, ptrdiff_t to_pixel);
void direct_pack_dy_pixel_avx512(const float *ds, int k_begin, int k_end, int tile_w, size_t block_pixels, int p,
                                 float *dy_panels);
/* Columns [0, mk) (mk <= 16) of `pixels` rows of dy, ds_pixel floats apart, into one panel, panel_pixel floats
 * apart. */
void direct_pack_dy_panel_avx512(const float *ds, size_t ds_pixel, int pixels, int mk, float *panel,
                                 size_t panel_pixel);
/* The same on any ISA (the AVX-512 moves where avx512, else memcpy and memset). */
void direct_pack_x_pixels(const float *xs, ptrdiff_t xs_pixel, int pixels, int C, int x_width, int c_tiles,
                          size_t panel_stride, float *to, ptrdiff_t to_pixel, bool avx512);
void direct_pack_dy_pixel(const float *ds, int k_begin, int k_end, int tile_w, size_t block_pixels, int p,
                          float *dy_panels, bool avx512);
void direct_pack_dy_panel(const float *ds, size_t ds_pixel, int pixels, int mk, float *panel, size_t panel_pixel,
                          bool avx512);
/* to[j * to_row + i] += from[i * from_row + j] for i < rows, j < cols (both at most 16; from's rows are read
 * whole, 16 floats each). */
void direct_add_transposed_avx512(const float *from, size_t from_row, int rows, float *to, size_t to_row, int cols);
/* to[j * to_row + i] = from[i * from_row + j] for j < cols, i < rows, and 0 for rows <= i < 16 (both at most 16;
 * from's rows are read up to cols only). */
void direct_store_transposed_avx512(const float *from, size_t from_row, int rows, int cols, float *to, size_t to_row);

/* ---- level 1 ----------------------------------------------------------------------------------
 * A convolution as the framework sees it: out[n][oh][ow][k] over a grid out_h x out_w that may be a
 * strided sub-grid of the destination (backward-data writes one stride phase at a time). */
typedef struct direct_problem {
    int batch;
    const float *x;
    int in_h, in_w, in_c;
    const float *w_packed; /* [ceil(out_c/16)][taps_h][taps_w][in_c][16] */
    int taps_h, taps_w, out_c;
    int stride_h, stride_w, pad_h, pad_w; /* pads may be negative */
    float *y;
    int out_h, out_w;
    ptrdiff_t y_image, y_row, y_pixel; /* floats between images, output rows, output pixels */
    int zeros;                          /* positions of y at these offsets from each output get zeros */
    ptrdiff_t zero_offset[DIRECT_MAX_ZEROS];
} direct_problem;

plait_isa direct_isa_resolved(void);
/* One micro-kernel call on the given ISA (portable when it has no such tile shape). */
void direct_run_tile(plait_isa isa, const direct_tile *t, int vthreads, int tile_w, int tile_k, int unroll);
/* scratch: direct_pad_floats(p) floats for schedules with pad_copy (may be NULL otherwise). */
void direct_run(const direct_problem *p, const plait_conv_schedule *s, float *scratch);
size_t direct_pad_floats(const direct_problem *p);

/* Packs OHWI weights [K][R][S][C] into [ceil(K/16)][R][S][C][16], zero-padded. */
void direct_pack_forward(const float *w, int k, int r, int s, int c, float *packed);
size_t direct_packed_floats(int k, int r, int s, int c);

/* Taps of one stride phase of backward-data along one axis: input positions i = phase + stride*q receive
 * from taps first, first + stride, ... (count of them), as a stride-1 convolution with padding pad. */
typedef struct phase_taps {
    int first, count, pad, outputs;
} phase_taps;

static inline phase_taps phase_along(int phase, int stride, int pad, int kernel, int in_size) {
    phase_taps t;
    t.first = (phase + pad) % stride;
    t.count = t.first < kernel ? (kernel - 1 - t.first) / stride + 1 : 0;
    int base = (phase + pad - t.first) / stride;
    t.pad = t.count - 1 - base;
    t.outputs = phase < in_size ? (in_size - 1 - phase) / stride + 1 : 0;
    return t;
}

/* Winograd F(4x4, 3x3), 3x3 stride 1; a schedule's block_w is the tiles per chunk (capped by channels). */
#define DIRECT_WINOGRAD_MAX_CHUNK 64
bool direct_winograd_supports(const plait_conv2d_desc *d);
size_t direct_winograd_workspace_floats(const plait_conv2d_desc *d, plait_conv_direction direction);
void direct_winograd_forward(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x, const float *w,
                             float *y, void *workspace);
void direct_winograd_backward_data(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *dy,
                                   const float *w, float *dx, void *workspace);
void direct_winograd_backward_weights(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x,
                                      const float *dy, float *dw, void *workspace);

/* The schedule to run: s where it is valid for the layer and direction, else the default (s may be NULL). */
plait_conv_schedule direct_resolve_schedule(const plait_conv2d_desc *d, plait_conv_direction direction,
                                            const plait_conv_schedule *s);

/* Depthwise (groups == channels), vectorized over channels. Schedules (NULL: the default): forward and
 * backward-data use tile_w (output pixels per single-row tile), block_c (channels per block, 0 = all) and
 * vthreads (2 = pairs of output rows, stride 1 only); backward-weights block_h (output rows per band). */
size_t direct_depthwise_workspace_floats(const plait_conv2d_desc *d);
plait_conv_schedule direct_depthwise_schedule(const plait_conv2d_desc *d, plait_conv_direction direction);
bool direct_depthwise_schedule_valid(const plait_conv2d_desc *d, plait_conv_direction direction,
                                     const plait_conv_schedule *s);
/* The single-row tile widths the ISA's row kernels are built for (0 on the portable path). */
int direct_depthwise_row_tiles(plait_isa isa, int tiles[2]);
void direct_depthwise_forward(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x,
                              const float *w, float *y, void *workspace);
void direct_depthwise_backward_data(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *dy,
                                    const float *w, float *dx, void *workspace);
void direct_depthwise_backward_weights(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x,
                                       const float *dy, float *dw, void *workspace);

#endif
