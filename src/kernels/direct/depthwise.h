/* Internals of the depthwise kernels (groups == channels, NHWC): the row and band jobs the level-1 driver
 * (depthwise.c) hands to the per-ISA micro-kernels (depthwise_avx512.c, depthwise_avx2.c, generated from
 * depthwise_tiles.h) and to the plain C path (depthwise_generic.c). See docs/kernels.md. */
#ifndef PLAIT_KERNELS_DEPTHWISE_H
#define PLAIT_KERNELS_DEPTHWISE_H

#include <stdbool.h>
#include <stddef.h>

/* One output row of a gather along W, summed over `rows` tap rows:
 *   out[o*out_pixel + c] = sum over r < rows, s < S, 0 <= i < in_w with i = o*SW - pad + s of
 *                          in[r*in_row + i*in_pixel + c] * wt[r*wt_row + s*cpad + c]
 * for o < out_w. Forward rows are this with the layer's stride; backward-data rows are it once per column
 * phase (SW = 1, the phase's flipped taps, out_pixel = stride_w * C). rows may be 0 (zeros are stored). */
typedef struct dw_rowjob {
    const float *in;
    ptrdiff_t in_row, in_pixel;
    int rows, in_w;
    const float *wt;
    ptrdiff_t wt_row;
    int cpad, S, SW, pad;
    float *out;
    ptrdiff_t out_pixel;
    int out_w;
    /* 1, or 2: also the output row out + out_row, whose input rows start SW rows of in further down (SW the
     * row stride; all `rows` tap rows inside for both) */
    int out_rows;
    ptrdiff_t out_row;
    int tile;   /* output pixels per register tile (vector paths; clamped to what the ISA holds) */
    int cblock; /* channels per block (a multiple of 16; 0 = all): pixel tiles run inside a block */
    bool stream; /* non-temporal stores: the output is too large to stay in cache for its reader */
    /* Rows (same pixel layout as in) the next row job reads first, pulled into L2 tile by tile; NULL = none. */
    const float *prefetch;
    int prefetch_rows;
    ptrdiff_t prefetch_row;
    /* The input the rows read (x forward, dy backward-data) fits in half the last-level cache: a tile's lines
     * are pulled through loops of constant counts, unrolled. Past that the general loops, whose own instructions
     * space the prefetches out, ran the stride-2 layers faster (docs/kernels.md, stop 40). */
    bool prefetch_near;
} dw_rowjob;
/* Channels [c_begin, c_end); vector paths need both multiples of their lane count. */
typedef void (*dw_row_fn)(const dw_rowjob *j, int c_begin, int c_end);

/* A row of dx for 3-tap, stride-2, padding-1 layers (MobileNet's downsampling ones), both column phases in one
 * pass over contiguous pixels: for each tap row r < rows (wt: that row's 3 taps in the layer's order),
 *   out[2t] = sum_r in_r[t] * wt_r[1],  out[2t+1] = sum_r in_r[t] * wt_r[2] + in_r[t+1] * wt_r[0]
 * with in_r[in_w] = 0, for pixels below out_w. Fields as in dw_rowjob; S, SW, pad, out_rows unused. */
dw_row_fn dw_row_s2_avx512(void);
dw_row_fn dw_row_s2_avx2(void);

/* Backward-weights over output rows [oh0, oh1) of one image:
 *   acc[(r*S + s)*cpad + c] += sum over oh, ow of x[ih*x_row + iw*x_pixel + c] * dy[oh*dy_row + ow*dy_pixel + c]
 * with ih = oh*SH - pad_h + r, iw = ow*SW - pad_w + s inside [0, H) x [0, W). */
typedef struct dw_bandjob {
    const float *x;
    ptrdiff_t x_row, x_pixel;
    int H, W;
    const float *dy;
    ptrdiff_t dy_row, dy_pixel;
    int OW;
    int R, S, SH, SW, pad_h, pad_w;
    int oh0, oh1;
    float *acc;
    int cpad;
    /* Memory the thread's next band reads first (next[0]: its next_rows[0] new rows of x; next[1]: its
     * next_rows[1] rows of dy), pulled into L2 tile by tile, each tile the lines of the same tile of that band;
     * next_rows 0 = none. */
    const float *next[2];
    int next_rows[2];
    /* The same band of `images` (at least 1) consecutive images, x_image and dy_image floats apart, summed in one
     * pass, the sums held in registers from one image to the next. */
    int images;
    ptrdiff_t x_image, dy_image;
} dw_bandjob;
typedef void (*dw_band_fn)(const dw_bandjob *j, int c_begin, int c_end);

/* The pixels per single-row tile an ISA's row kernels are built for (a job's tile up to the first takes the
 * first, wider ones the second). */
void dw_row_tiles_avx512(int tiles[2]);
void dw_row_tiles_avx2(int tiles[2]);

/* NULL when the ISA has no specialization (S or SW out of range): the caller uses the generic path. */
dw_row_fn dw_row_avx512(int S, int SW);
dw_row_fn dw_row_avx2(int S, int SW);
/* ahead: the jobs name a next band (next_rows) to pull into L2; without it the tiles carry no prefetch code */
dw_band_fn dw_band_avx512(int R, int S, int SW, bool ahead);
dw_band_fn dw_band_avx2(int R, int S, int SW, bool ahead);
void dw_row_generic(const dw_rowjob *j, int c_begin, int c_end);
void dw_band_generic(const dw_bandjob *j, int c_begin, int c_end);

/* AVX-512, taps <= 16, channels c0..c0+15 all in the layer: the weights into the kernels' tap rows,
 *   dst[row*cpad + c0 + k] = w[(c0 + k)*taps + src[row]] for row < rows, k < 16
 * (src NULL: row itself). */
void dw_pack16_avx512(const float *w, int taps, const int *src, int rows, int cpad, int c0, float *dst);

/* AVX-512, 3x3 taps, channels c0..c0+15 all in the layer: the tap sums of `parts` threads (each `part` floats
 * after the last) added into the layer's weight gradient,
 *   dw[(c0 + k)*9 + t] += sum over i < parts of sums[i*part + t*cpad + c0 + k]. */
void dw_turn16_avx512(const float *sums, size_t part, int parts, int cpad, int c0, float *dw);

#endif
