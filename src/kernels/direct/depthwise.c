/* Depthwise convolutions (groups == channels) over NHWC: the level-1 driver. Threads split rows of the
 * output (forward, backward-data: every row is one pass that writes its pixels once) or bands of output
 * rows (backward-weights: per-thread tap sums, added up at the end). The micro-kernels (depthwise.h) run
 * over full channel vectors; channels past the last full vector, other tap counts and the portable ISA go
 * to the plain C path.
 *
 * Weights are repacked per call to [R][S][Cpad] (Cpad = C rounded up to 16, zero-padded), so one tap's
 * weights for a channel vector are one aligned load. Backward-data computes each row of dx as a sum of
 * gathers along W, one per column phase of the stride (phase_along), with that phase's taps flipped:
 * [phase][R][taps of the phase][Cpad]; 3-tap stride-2 rows with padding 1 run both phases in one pass instead
 * (dw_row_s2). */
#include <omp.h>
#include <string.h>

#include "kernels/direct/depthwise.h"
#include "kernels/direct/direct.h"

static int cpad_of(int c) { return direct_ceil_div(c, DIRECT_LANES) * DIRECT_LANES; }

/* Threads whose backward-weights tap sums the workspace holds; with more, a call allocates its own. */
#define DW_WEIGHTS_MAX_THREADS 16

/* The packed taps of forward and backward-data, or backward-weights' per-thread tap sums. */
size_t direct_depthwise_workspace_floats(const plait_conv2d_desc *d) {
    return (size_t)d->kernel_h * d->kernel_w * (size_t)cpad_of(d->in_channels) * DW_WEIGHTS_MAX_THREADS;
}

static int lanes_of(plait_isa isa) { return isa == PLAIT_ISA_AVX512 ? 16 : isa == PLAIT_ISA_AVX2 ? 8 : 0; }

static dw_row_fn row_kernel(plait_isa isa, int S, int SW) {
    if (isa == PLAIT_ISA_AVX512) return dw_row_avx512(S, SW);
    if (isa == PLAIT_ISA_AVX2) return dw_row_avx2(S, SW);
    return NULL;
}

/* Channels [c_begin, c_end) of a row job (c_begin a multiple of the lanes): whole vectors through fn, the channels
 * past the last whole vector of the layer's `channels` through the plain C path. */
static void run_rows(const dw_rowjob *j, dw_row_fn fn, int lanes, int c_begin, int c_end, int channels) {
    int full = fn ? channels / lanes * lanes : 0, split = direct_max(c_begin, direct_min(c_end, full));
    if (split > c_begin) fn(j, c_begin, split);
    if (split < c_end) dw_row_generic(j, split, c_end);
}

static void run_row(const dw_rowjob *j, dw_row_fn fn, int lanes, int channels) {
    run_rows(j, fn, lanes, 0, channels, channels);
}

/* Tensors of 8 MiB and more are taken not to be in cache any more when they are next read: outputs when their
 * reader comes, inputs when a row or band comes to them. */
static bool large_tensor(size_t floats) { return floats * sizeof(float) >= ((size_t)8 << 20); }

/* The layer's input (x) by that measure: it decides the row prefetch's and the bands' rules. */
static bool large_input(const plait_conv2d_desc *d) {
    return large_tensor((size_t)d->batch * d->in_h * d->in_w * d->in_channels);
}

/* A tensor of that many floats fits in half the last-level cache (unknown cache: no). */
static bool within_half_cache(size_t floats) {
    const size_t l3 = plait_cpu_features()->l3_bytes;
    return l3 > 0 && floats * sizeof(float) <= l3 / 2;
}

/* Bands of a whole image (forward rows, backward-weights): for inputs below 8 MiB, while every thread still
 * gets an image of its own. */
static bool whole_image_bands(const plait_conv2d_desc *d) {
    return !large_input(d) && d->batch >= plait_threads();
}

/* AMD's L3 (one per core complex) served the misses of strided NHWC walks fast enough that some rules measured
 * on Zen 4 do not carry over to Intel's mesh L3, where such misses ran at memory speed (the Xeon: 2 MB L2 a core;
 * whole_image_weights_fit, direct_depthwise_schedule). */
static bool amd_l3(void) { return strcmp(plait_cpu_features()->vendor, "AuthenticAMD") == 0; }

/* Non-temporal stores (no read-for-ownership of the output: a third less memory traffic) for large outputs
 * where every stored vector starts on a cache line (channels a multiple of 16, aligned output). Measured
 * on AVX2 (Zen 3, mbv2 layers at batch 8, alternating builds): forward rows ran faster with plain stores on
 * one thread and two, so forward streams on AVX-512 only, and there only past most of the last-level cache (the
 * forward's call site); backward-data streaming was bimodal (4-6 or 17-20 GFLOP/s run to run on one layer)
 * and came out even with plain stores over one and two threads, so it keeps streaming on AVX2 (docs/kernels.md). */
static bool use_stream(const float *out, int channels, size_t out_floats) {
    return channels % 16 == 0 && ((uintptr_t)out & 63) == 0 && large_tensor(out_floats);
}

/* Streamed on AVX-512 only where input and output together pass three quarters of the last-level cache, so that
 * the output would be gone by the time its reader comes anyway. On the Xeon (480 MB L3) plain stores ran
 * 112x112x32 1.13-1.2x and 56x56x144 level (forward; backward-data 1.08-1.09x), batch 8, one thread; on Zen 4
 * (32 MB L3; in-process A/B, batch 8, one / two threads) streaming ran forward 112x112x96 s2 1.2x / 1.3x, 56x56x144
 * 1.8x / 1.2x, 112x112x32 1.46x / 0.92x, and backward-data 112x112x96 s2 2.4x / 1.2x, 56x56x144 2.1x / 1.5x,
 * 112x112x32 level. Past half the L3, as first chosen, 56x56x144 s2 backward-data (18 MB) streamed too: plain
 * stores run it 1.4-2.6x on two threads, 0.5-1.0x on one (streams hold both threads to the memory's write rate).
 * Earlier Zen 4 figures had zero weights, so zero outputs, which this machine writes far faster. */
static bool stream_past_cache(const float *out, int channels, size_t in_floats, size_t out_floats) {
    const size_t l3 = plait_cpu_features()->l3_bytes;
    return use_stream(out, channels, out_floats) && (l3 == 0 || (in_floats + out_floats) * sizeof(float) > l3 / 4 * 3);
}

/* Channels per block of a row: a block's three input rows stay in L1 while its pixel tiles sweep them. */
#define DW_CHANNEL_BLOCK 128

/* Rows of a forward band whose jobs are built at once (bands of more rows run in parts this tall). */
#define FORWARD_BAND_JOBS 32

/* On AVX-512 rows of 56 and more pixels run 8-pixel tiles: on the Xeon (one thread, MobileNetV2 at batch 8)
 * 112x112x32 1.12x forward and 1.06x backward-data, 56x56x144 1.03x and 1.07x against 14-pixel tiles, while
 * 28x28 rows kept 14 (2026-12-05). */
static int default_tile(plait_isa isa, int out_w) {
    if (isa == PLAIT_ISA_AVX512 && out_w >= 56) return 8;
    return out_w >= 14 ? 14 : 8;
}

/* dst[row][c] = w[c][src[row]] for the 16 channels from c0 (zero past C): the layer's taps, one aligned vector per
 * kernel tap row and channel vector (src NULL: row t is tap t). Run by every thread on its share of channels: on
 * two threads (Xeon) a layer without any repacking ran up to 1.13x (7x7x960), and split between the threads
 * 1.0-1.08x against one thread doing it. */
static void pack_taps(plait_isa isa, const float *w, int C, int cpad, int taps, const int *src, int rows, int c0,
                      float *dst) {
    if (isa == PLAIT_ISA_AVX512 && taps <= 16 && c0 + 16 <= C) {
        dw_pack16_avx512(w, taps, src, rows, cpad, c0, dst);
        return;
    }
    for (int row = 0; row < rows; row++)
        for (int c = c0; c < c0 + 16; c++)
            dst[(size_t)row * cpad + c] = c < C ? w[(size_t)c * taps + (src ? src[row] : row)] : 0.0f;
}

/* The forward job of output row oh of image n (with row oh + 1 as its second when `both`). */
static dw_rowjob forward_job(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x,
                             const float *taps, float *y, int n, int oh, bool both, bool stream) {
    const int C = d->in_channels, cpad = cpad_of(C), R = d->kernel_h, S = d->kernel_w, H = d->in_h, W = d->in_w;
    const int OH = direct_out_size(H, R, d->stride_h, d->pad_h), OW = direct_out_size(W, S, d->stride_w, d->pad_w);
    int ih0 = oh * d->stride_h - d->pad_h;
    int r_lo = direct_max(0, -ih0), r_hi = direct_min(R, H - ih0), rows = direct_max(0, r_hi - r_lo);
    dw_rowjob j = {
        .in = rows ? x + (((size_t)n * H + ih0 + r_lo) * W) * C : x, .in_row = (ptrdiff_t)W * C, .in_pixel = C,
        .rows = rows, .in_w = W, .wt = taps + (size_t)r_lo * S * cpad, .wt_row = (ptrdiff_t)S * cpad, .cpad = cpad,
        .S = S, .SW = d->stride_w, .pad = d->pad_w, .out = y + ((size_t)n * OH + oh) * OW * C, .out_pixel = C,
        .out_w = OW, .out_rows = both ? 2 : 1, .out_row = (ptrdiff_t)OW * C, .tile = s->tile_w,
        .cblock = s->block_c, .stream = stream,
    };
    return j;
}

void direct_depthwise_forward(const plait_conv2d_desc *d, const plait_conv_schedule *schedule, const float *x,
                              const float *w, float *y, void *workspace) {
    const plait_conv_schedule s = direct_resolve_schedule(d, PLAIT_CONV_FORWARD, schedule);
    const int C = d->in_channels, cpad = cpad_of(C), R = d->kernel_h, S = d->kernel_w, H = d->in_h, W = d->in_w;
    const int OH = direct_out_size(H, R, d->stride_h, d->pad_h), OW = direct_out_size(W, S, d->stride_w, d->pad_w);
    float *taps = workspace;
    const plait_isa isa = direct_isa_resolved();
    const dw_row_fn fn = row_kernel(isa, S, d->stride_w);
    const int lanes = lanes_of(isa);
    const size_t out_floats = (size_t)d->batch * OH * OW * C;
    const size_t in_floats = (size_t)d->batch * H * W * C;
    const bool stream = isa == PLAIT_ISA_AVX512 && stream_past_cache(y, C, in_floats, out_floats);
    /* pairs of output rows (schedule vthreads 2): one job when every tap row of both is inside the image, else
     * one job per row */
    const int pairs = direct_ceil_div(OH, 2);
    const bool paired = s.vthreads == 2;
    /* bands (schedule block_h): each channel block runs down the band's rows before the next block starts, so the
     * input rows an output row shares with the next stay in L1 (direct_depthwise_schedule says where) */
    const int band = s.block_h > 0 ? direct_min(s.block_h, OH) : 0, bands = band ? direct_ceil_div(OH, band) : 0;
    /* software prefetch of the input rows the next output row adds, for inputs far larger than the caches.
     * Measured on the AVX2 machine (Zen 3), one thread: 112x112x32 9-10 -> 40-42 GFLOP/s, 56x56x144 8-11 -> 19.
     * On Zen 4 (AVX-512, 32 MB L3 shared with other guests; in-process A/B, batch 8, nonzero weights, stop 36):
     * one thread 112x112x32 1.19x, 56x56x144 2.9x, 56x56x144 s2 1.32x; two threads level, 1.8x, 1.16x. Stop 35
     * had kept it on AVX-512 only past 3/4 of the L3 from one measurement (56x56x144 s2 0.91x, 112x112x32 0.92x
     * with it); the L3 holds these inputs only while other guests leave it alone, and without the prefetch the
     * strided NHWC misses run one at a time (56x56x144: 13-30 GFLOP/s from one run to the next, 48-63 with it). */
    const bool prefetch = isa != PLAIT_ISA_PORTABLE && large_input(d) && !band;
    /* dw_rowjob.prefetch_near; Zen 4, batch 8, in-process A/B, one / two threads, unrolled against the general
     * loops: 112x112x32 1.10x / level, 56x56x144 level, 56x56x144 s2 1.09-1.14x / 1.15x, 112x112x96 s2 at batch 2
     * 1.05x / 1.05-1.08x; but on stride-2 inputs of 19 MB and more 0.67-0.95x (112x112x96 s2 at batch 4 and 8,
     * 56x56x144 s2 at 12 and 16) */
    const bool near = within_half_cache(in_floats);
#pragma omp parallel num_threads(plait_threads())
    {
#pragma omp for schedule(static)
        for (int c0 = 0; c0 < cpad; c0 += 16) pack_taps(isa, w, C, cpad, R * S, NULL, R * S, c0, taps);
        if (band) {
            const int block = s.block_c > 0 ? s.block_c : C;
#pragma omp for schedule(static)
            for (long item = 0; item < (long)d->batch * bands; item++) {
                int n = (int)(item / bands), oh0 = (int)(item % bands) * band, oh1 = direct_min(OH, oh0 + band);
                /* each row's job built once for all blocks, up to FORWARD_BAND_JOBS rows at a time: rebuilding it
                 * per block cost 14x14x576 and 14x14x384 forward 4-8% (Zen 4, batch 8, docs/kernels.md stop 43) */
                for (int first = oh0; first < oh1; first += FORWARD_BAND_JOBS) {
                    const int last = direct_min(oh1, first + FORWARD_BAND_JOBS);
                    dw_rowjob jobs[FORWARD_BAND_JOBS];
                    for (int oh = first; oh < last; oh++)
                        jobs[oh - first] = forward_job(d, &s, x, taps, y, n, oh, false, stream);
                    for (int cb = 0; cb < C; cb += block)
                        for (int oh = first; oh < last; oh++)
                            run_rows(&jobs[oh - first], fn, lanes, cb, direct_min(C, cb + block), C);
                }
            }
        } else {
#pragma omp for schedule(static)
            for (long item = 0; item < (long)d->batch * pairs; item++) {
                int n = (int)(item / pairs), oh = (int)(item % pairs) * 2;
                int ih_first = oh * d->stride_h - d->pad_h, ih_last = (oh + 1) * d->stride_h - d->pad_h + R;
                bool both = paired && oh + 1 < OH && ih_first >= 0 && ih_last <= H;
                for (int m = 0; m < 2 && oh + m < OH; m += both ? 2 : 1) {
                    dw_rowjob j = forward_job(d, &s, x, taps, y, n, oh + m, both, stream);
                    int next_first = (oh + m) * d->stride_h - d->pad_h + R; /* the next row's new input rows */
                    if (prefetch && !both && oh + m + 1 < OH && next_first >= 0 && next_first + d->stride_h <= H) {
                        j.prefetch = x + (((size_t)n * H + next_first) * W) * C;
                        j.prefetch_rows = d->stride_h;
                        j.prefetch_row = (ptrdiff_t)W * C;
                        j.prefetch_near = near;
                    }
                    run_row(&j, fn, lanes, C);
                }
            }
        }
    }
}

/* The dy rows a row of dx meets (through taps r_first, r_first + stride_h, ...). */
typedef struct dw_data_rows {
    const float *first; /* dy row oh_first - q_lo of the image (dy itself when no row meets) */
    int rows, r_first;  /* tap row of the first */
} dw_data_rows;

static dw_rowjob data_job(const plait_conv2d_desc *d, const plait_conv_schedule *s, const dw_data_rows *m,
                          const float *wt, int taps_per_row, int S, int pad, int out_w, float *out,
                          ptrdiff_t out_pixel, bool stream) {
    const int C = d->in_channels, OW = direct_out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    const int cpad = cpad_of(C);
    dw_rowjob j = {
        .in = m->first, .in_row = -(ptrdiff_t)OW * C, .in_pixel = C, .rows = m->rows, .in_w = OW,
        .wt = wt + (size_t)m->r_first * taps_per_row * cpad, .wt_row = (ptrdiff_t)d->stride_h * taps_per_row * cpad,
        .cpad = cpad, .S = S, .SW = 1, .pad = pad, .out = out, .out_pixel = out_pixel, .out_w = out_w,
        .tile = s->tile_w, .cblock = s->block_c, .stream = stream,
    };
    return j;
}

void direct_depthwise_backward_data(const plait_conv2d_desc *d, const plait_conv_schedule *schedule, const float *dy,
                                    const float *w, float *dx, void *workspace) {
    const plait_conv_schedule s = direct_resolve_schedule(d, PLAIT_CONV_BACKWARD_DATA, schedule);
    const int C = d->in_channels, cpad = cpad_of(C), R = d->kernel_h, S = d->kernel_w, H = d->in_h, W = d->in_w;
    const int OH = direct_out_size(H, R, d->stride_h, d->pad_h), OW = direct_out_size(W, S, d->stride_w, d->pad_w);
    const int sh = d->stride_h, sw = d->stride_w;
    enum { MAX_PHASES = 16 };
    phase_taps tw[MAX_PHASES];
    size_t offset[MAX_PHASES];
    float *packed = workspace;
    size_t used = 0;
    /* phase pw's tap rows: row r * count + b holds tap (r, first + sw * (count - 1 - b)), W flipped */
    int phase_src[MAX_PHASES][R * S];
    for (int pw = 0; pw < sw && pw < MAX_PHASES; pw++) {
        tw[pw] = phase_along(pw, sw, d->pad_w, S, W);
        offset[pw] = used;
        used += (size_t)R * tw[pw].count * cpad;
        for (int r = 0; r < R; r++)
            for (int b = 0; b < tw[pw].count; b++)
                phase_src[pw][r * tw[pw].count + b] = r * S + tw[pw].first + sw * (tw[pw].count - 1 - b);
    }
    const plait_isa isa = direct_isa_resolved();
    const int lanes = lanes_of(isa);
    /* 3 taps, stride 2, padding 1 along W: both phases in one pass (depthwise_tiles.h says why), its taps in
     * the layer's order [R][3][Cpad] after the phases'. On the Xeon (one thread, batch 8) the one pass won only up
     * to 192 channels (phases apart 1.07-1.25x as long at 32-192, 0.74-0.97x at 256-640); on Zen 4 (in-process
     * A/B, batch 8) it runs 14x14x576 s2 1.17x on one thread and two, 14x14x384 and 28x28x256 s2 1.13x, AVX2
     * forced 1.22-1.24x, so every channel count takes it. */
    const dw_row_fn both = sw == 2 && S == 3 && d->pad_w == 1 && C >= lanes && lanes > 0
                               ? (isa == PLAIT_ISA_AVX512 ? dw_row_s2_avx512() : dw_row_s2_avx2())
                               : NULL;
    float *taps = packed + used;
    /* pairs of dx rows (schedule vthreads 2, stride 1): their shared R - 1 dy rows read once for both */
    const int per = s.vthreads == 2 ? 2 : 1, groups = direct_ceil_div(H, per);
    const bool phases = !both || C % lanes != 0; /* the phases' taps are needed (for the channels left over) */
    const size_t out_floats = (size_t)d->batch * H * W * C, in_floats = (size_t)d->batch * OH * OW * C;
    /* AVX2 streams every large dx as measured on Zen 3 (use_stream); AVX-512 by the forward's rule on two threads
     * and more, every large dx on one: on Zen 4 (batch 8) 56x56x144 s2 (18 MB in all) ran 3.2x streamed on one
     * thread and 0.6x on two (stop 36). */
    const bool stream = isa == PLAIT_ISA_AVX2 ? use_stream(dx, C, out_floats)
                        : isa == PLAIT_ISA_AVX512
                            ? (plait_threads() == 1 ? use_stream(dx, C, out_floats)
                                                    : stream_past_cache(dx, C, in_floats, out_floats))
                            : false;
    /* the prefetch's unrolled loops as the forward's (dw_rowjob.prefetch_near): Zen 4, batch 8, in-process A/B,
     * one / two threads: 112x112x32 1.12x / 1.10x, 56x56x144 1.05x / 1.06x, the stride-2 layers and batches 4-32
     * level */
    const bool near = within_half_cache(in_floats);
#pragma omp parallel num_threads(plait_threads())
    {
#pragma omp for schedule(static)
        for (int c0 = 0; c0 < cpad; c0 += 16) {
            if (both) pack_taps(isa, w, C, cpad, R * S, NULL, R * S, c0, taps);
            for (int pw = 0; phases && pw < sw; pw++)
                pack_taps(isa, w, C, cpad, R * S, phase_src[pw], R * tw[pw].count, c0, packed + offset[pw]);
        }
#pragma omp for schedule(static)
        for (long item = 0; item < (long)d->batch * groups; item++) {
            int n = (int)(item / groups), ih_begin = (int)(item % groups) * per, ih_end = direct_min(H, ih_begin + per);
            /* two dx rows whose taps all meet dy rows: one job from the lower one's first dy row, with the upper
             * one as its second output row, SW dy rows further on (out_row negative) */
            int lower_first = ih_begin + 1 + d->pad_h;
            if (ih_end - ih_begin == 2 && lower_first <= OH - 1 && ih_begin + d->pad_h >= R - 1) {
                dw_data_rows meet = {dy + ((size_t)n * OH + lower_first) * OW * C, R, 0};
                dw_rowjob j = data_job(d, &s, &meet, packed + offset[0], tw[0].count, tw[0].count, tw[0].pad,
                                       tw[0].outputs, dx + (((size_t)n * H + ih_begin + 1) * W) * C, C, stream);
                j.out_rows = 2;
                j.out_row = -(ptrdiff_t)W * C;
                run_row(&j, row_kernel(isa, tw[0].count, 1), lanes, C);
                continue;
            }
            for (int ih = ih_begin; ih < ih_end; ih++) {
                /* dy rows oh = oh_first - q meet this row through taps r = r_first + sh*q */
                int r_first = (ih + d->pad_h) % sh, oh_first = (ih + d->pad_h - r_first) / sh;
                int q_lo = direct_max(0, oh_first - (OH - 1));
                int q_hi = r_first < R ? direct_min((R - 1 - r_first) / sh, oh_first) : -1;
                int rows = direct_max(0, q_hi - q_lo + 1);
                dw_data_rows meet = {rows ? dy + (((size_t)n * OH + oh_first - q_lo) * OW) * C : dy, rows,
                                     rows ? r_first + sh * q_lo : 0};
                float *dx_row = dx + (((size_t)n * H + ih) * W) * C;
                /* the dy row the next dx row adds, if it adds one, when dy is not in cache anyway (measured: it
                 * helps there, and costs more than it saves on cache-resident shapes and on forward rows) */
                int next_oh = (ih + 1 + d->pad_h) / sh;
                bool prefetch = stream && ih + 1 < H && (ih + 1 + d->pad_h) % sh == 0 && next_oh < OH;
                const float *next = dy + (((size_t)n * OH + (prefetch ? next_oh : 0)) * OW) * C;
                int vector_channels = 0;
                if (both) {
                    dw_rowjob j = data_job(d, &s, &meet, taps, S, S, 1, W, dx_row, C, stream);
                    if (prefetch) j.prefetch = next, j.prefetch_rows = 1, j.prefetch_near = near;
                    vector_channels = C / lanes * lanes;
                    both(&j, 0, vector_channels);
                }
                if (vector_channels == C) continue;
                for (int pw = 0; pw < sw; pw++) {
                    if (tw[pw].outputs == 0) continue;
                    dw_rowjob j = data_job(d, &s, &meet, packed + offset[pw], tw[pw].count, tw[pw].count,
                                           tw[pw].pad, tw[pw].outputs, dx_row + (size_t)pw * C, (ptrdiff_t)sw * C,
                                           stream);
                    if (prefetch) j.prefetch = next, j.prefetch_rows = 1, j.prefetch_near = near;
                    if (vector_channels > 0)
                        dw_row_generic(&j, vector_channels, C);
                    else
                        run_row(&j, row_kernel(isa, tw[pw].count, 1), lanes, C);
                }
            }
        }
    }
}

static dw_band_fn band_kernel(plait_isa isa, int R, int S, int SW, bool ahead) {
    if (isa == PLAIT_ISA_AVX512) return dw_band_avx512(R, S, SW, ahead);
    if (isa == PLAIT_ISA_AVX2) return dw_band_avx2(R, S, SW, ahead);
    return NULL;
}

/* One image's x and dy, as backward-weights reads them. */
static size_t weights_image_bytes(const plait_conv2d_desc *d, int OH, int OW) {
    return ((size_t)d->in_h * d->in_w + (size_t)OH * OW) * d->in_channels * sizeof(float);
}

/* Whole-image backward-weights bands walk one or two channel vectors down every pixel of the images: one line a
 * pixel, a row of channels apart, a pattern no prefetcher follows. AMD's L3 (Zen 4) served those misses fast
 * enough for the rule below; on the Intel Xeon (mesh L3) they ran at memory speed once a thread's share of x
 * and dy passed its L2, and the 192 KB bands, whose next channel vectors sit beside the lines just missed, ran
 * faster. Xeon, batch 8, alternating processes, one / two threads: 14x14x576 s2 2.55x / 1.49x, 14x14x384 1.37x /
 * 1.03x, 28x28x192 1.35x / 1.23x, 14x14x576 1.25x / 1.06x, 7x7x960 2.47x on one (on two each share fits: whole
 * images 1.11x); batch 32, 7x7x960 2.61x / 2.28x. */
static bool whole_image_weights_fit(const plait_conv2d_desc *d, int OH, int OW) {
    if (amd_l3()) return true;
    size_t bytes = (size_t)d->batch * weights_image_bytes(d, OH, OW);
    return bytes / (size_t)plait_threads() <= plait_cpu_features()->l2_bytes;
}

/* Output rows per band. Inputs below 8 MiB (no band pulled ahead into L2): the whole image, as long as every
 * thread still gets an image. Each channel vector group then runs down the image with the rows its tile rows
 * share still in L1, and no band re-reads the x rows of its neighbours' edges. Zen 4 (batch 8, in-process A/B,
 * one / two threads) against the 192 KB bands below: 14x14x576 1.10x / 1.15x, 7x7x960 1.20x / 1.04x, 28x28x192
 * s2 1.11x / 1.14x, 14x14x576 s2 1.09x / 1.07x, 14x14x384 and 28x28x192 1.04-1.06x; AVX2 forced 1.04-1.17x; the
 * larger layers level or slower (56x56x144 0.74x on two threads). Larger inputs: an even count, so the two-row
 * tiles leave no single row, of at most 192 KB, small enough for the next band beside it in L2 (on the Xeon
 * 14x14 layers with 384-576 channels ran 1.2-1.3x on one thread and 1.04-1.2x on two against bands of 256
 * KB). */
static int default_band(const plait_conv2d_desc *d, int OH, int OW) {
    if (whole_image_bands(d) && whole_image_weights_fit(d, OH, OW)) return OH;
    size_t row_bytes = ((size_t)d->in_w * d->stride_h + (size_t)OW) * d->in_channels * sizeof(float);
    int band = (int)(((size_t)192 << 10) / (row_bytes ? row_bytes : 1)) & ~1;
    return direct_max(1, direct_min(direct_max(band, 2), OH));
}

/* The band of output rows from item's (image, band), summing into acc; with `ahead`, also the next item's band
 * to pull into L2 (the next item is the same thread's: static schedule, consecutive items). */
static dw_bandjob band_job(const plait_conv2d_desc *d, const float *x, const float *dy, long item, int band,
                           float *acc, bool ahead) {
    const int C = d->in_channels, R = d->kernel_h, S = d->kernel_w, H = d->in_h, W = d->in_w;
    const int OH = direct_out_size(H, R, d->stride_h, d->pad_h), OW = direct_out_size(W, S, d->stride_w, d->pad_w);
    const int bands = direct_ceil_div(OH, band), n = (int)(item / bands), oh0 = (int)(item % bands) * band;
    dw_bandjob j = {
        .x = x + (size_t)n * H * W * C, .x_row = (ptrdiff_t)W * C, .x_pixel = C, .H = H, .W = W,
        .dy = dy + (size_t)n * OH * OW * C, .dy_row = (ptrdiff_t)OW * C, .dy_pixel = C, .OW = OW,
        .R = R, .S = S, .SH = d->stride_h, .SW = d->stride_w, .pad_h = d->pad_h, .pad_w = d->pad_w,
        .oh0 = oh0, .oh1 = direct_min(OH, oh0 + band), .acc = acc, .cpad = cpad_of(C),
        .images = 1, .x_image = (ptrdiff_t)H * W * C, .dy_image = (ptrdiff_t)OH * OW * C,
    };
    if (ahead) {
        int n2 = (int)((item + 1) / bands), oh2 = (int)((item + 1) % bands) * band;
        int oh2_end = direct_min(OH, oh2 + band);
        int ih_lo = oh2 == 0 ? 0 : direct_max(0, (oh2 - 1) * d->stride_h - d->pad_h + R);
        int ih_hi = direct_min(H, (oh2_end - 1) * d->stride_h - d->pad_h + R);
        j.next[0] = x + (((size_t)n2 * H + ih_lo) * W) * C;
        j.next_rows[0] = direct_max(0, ih_hi - ih_lo);
        j.next[1] = dy + (((size_t)n2 * OH + oh2) * OW) * C;
        j.next_rows[1] = oh2_end - oh2;
    }
    return j;
}

void direct_depthwise_backward_weights(const plait_conv2d_desc *d, const plait_conv_schedule *schedule, const float *x,
                                       const float *dy, float *dw, void *workspace) {
    const plait_conv_schedule s = direct_resolve_schedule(d, PLAIT_CONV_BACKWARD_WEIGHTS, schedule);
    const int C = d->in_channels, cpad = cpad_of(C), R = d->kernel_h, S = d->kernel_w, H = d->in_h;
    const int OH = direct_out_size(H, R, d->stride_h, d->pad_h);
    const int OW = direct_out_size(d->in_w, S, d->stride_w, d->pad_w);
    const int threads = plait_threads(), taps = R * S;
    const size_t size = (size_t)taps * cpad;
    /* per-thread partial sums in the workspace, unless the thread count outgrew it */
    bool own = threads > DW_WEIGHTS_MAX_THREADS;
    float *partial = own ? plait_alloc(size * (size_t)threads * sizeof(float)) : workspace;
    if (!partial) return;
    const plait_isa isa = direct_isa_resolved();
    const dw_band_fn plain = band_kernel(isa, R, S, d->stride_w, false);
    const int lanes = lanes_of(isa), full = plain ? C / lanes * lanes : 0;
    const int band = direct_min(s.block_h, OH), bands = direct_ceil_div(OH, band);
    /* Inputs of 8 MB and more: a band's lines (a few of every pixel's per channel vector group) would come one
     * demand miss at a time, a pattern the hardware prefetchers do not follow; each tile pulls into L2 the lines
     * the same tile of the thread's next band will load (band_prefetch). Against one burst of the next band's
     * memory per tile row and vector group, as before (alternating processes, Zen 4, one / two threads): batch 8
     * 56x56x144 2.39x / 1.80x, 112x112x96 s2 2.26x / 2.0x, 56x56x144 s2 1.05-1.34x / 0.95-0.97x (AVX2 0.89x);
     * batch 32, one thread, 28x28x192 2.04x, its s2 layer 1.50x, 56x56x144 s2 2.19x; and with one channel vector
     * group, which had no prefetch, 112x112x32 1.04x / 1.16x, at batch 32 1.48x. */
    const bool ahead = full > 0 && large_input(d);
    /* Bands that pull nothing ahead run tiles built without the prefetch code: inlined into every tile, untaken,
     * it had GCC keep the tile loop's row pointers and counters on the stack. Zen 4, batch 8, the benchmark's
     * rows against the build before, alternating, median of 6 runs, one / two threads: 28x28x192 1.26x / 1.16x,
     * 14x14x576 1.20x / 1.25x, 14x14x384 1.16x / 1.18x, 7x7x960 1.10x / 1.01x, 28x28x192 s2 1.05x / 1.05x; the
     * layers with bands pulled ahead (the other build, recompiled) 56x56x144 1.08x / 1.06x, 112x112x32 1.08x /
     * 1.04x, 56x56x144 s2 1.02x / 0.95x (alternating processes). AVX2 forced (alternating processes): 14x14x576
     * 1.81x, 7x7x960 1.34x, 28x28x192 1.24x, the large layers level. */
    const dw_band_fn fn = ahead ? band_kernel(isa, R, S, d->stride_w, true) : plain;
    const long items = (long)d->batch * bands;
    /* Threads split the channels instead of the bands where each gets 4 vectors or more and no band is pulled
     * ahead (those are whole rows): then every thread's sums are its own to turn into dw, with no other
     * thread's to add. Zen 4, batch 8, in-process A/B, one / two threads: 7x7x960 1.03x / 1.03x, 14x14x576 1.02x
     * / 1.03x, s2 1.02x / 1.05x, 14x14x384 1.0x / 1.03x, 28x28x192 level; 112x112x32 with one vector a thread
     * ran 0.54x on two. */
    const bool by_channels = full > 0 && !ahead && full / lanes >= 4 * threads;
    /* the sums into dw's layout through a register transpose (dw_turn16_avx512), in place of a scalar move per
     * tap and channel */
    const bool turn16 = isa == PLAIT_ISA_AVX512 && taps == 9;
    /* Whole-image bands split by channels: the images of up to 4 MiB of x and dy in one pass, each vector's tap
     * sums held in registers from image to image (one load, add and store of the sums a pass, not an image).
     * Zen 4, in-process A/B, one / two threads: 7x7x960 at batch 8 1.17x / 1.17x, batch 16 1.19x, 14x14x576
     * 1.04x / 1.03x, its s2 layer 1.07-1.10x, 28x28x192 level; but passes of 9 MB and more ran 0.6-1.0x (7x7x960
     * at batch 32: every image in one pass 0.58x, 24 at a time 1.02x, 11 at a time 1.14x). */
    const size_t image_bytes = weights_image_bytes(d, OH, OW);
    const size_t fit = ((size_t)4 << 20) / image_bytes;
    const int per_pass = bands == 1 && fit > 1 ? (int)(fit < (size_t)d->batch ? fit : (size_t)d->batch) : 1;
#pragma omp parallel num_threads(threads)
    {
        const int me = omp_get_thread_num(), team = omp_get_num_threads();
        float *mine = partial + size * (size_t)me;
        memset(mine, 0, size * sizeof(float));
        if (by_channels) {
            /* this thread's share of the vectors; the channels past the last vector are the last thread's */
            const int vectors = full / lanes, c_begin = vectors * me / team * lanes;
            const int c_end = vectors * (me + 1) / team * lanes;
            const bool rest = me == team - 1 && full < C;
            /* per_pass images a pass (one on bands smaller than the image) */
            for (long item = 0; item < items; item += per_pass) {
                dw_bandjob j = band_job(d, x, dy, item, band, mine, false);
                j.images = (int)(items - item < per_pass ? items - item : per_pass);
                if (c_end > c_begin) fn(&j, c_begin, c_end);
                if (rest) dw_band_generic(&j, full, C);
            }
            const int c_last = rest ? C : c_end;
            int c = c_begin;
            if (turn16)
                for (; c + 16 <= c_last; c += 16) dw_turn16_avx512(mine, 0, 1, cpad, c, dw);
            for (; c < c_last; c++)
                for (int t = 0; t < taps; t++) dw[(size_t)c * taps + t] += mine[(size_t)t * cpad + c];
        } else {
#pragma omp for schedule(static)
            for (long item = 0; item < items; item++) {
                dw_bandjob j = band_job(d, x, dy, item, band, mine, ahead && item + 1 < items);
                if (full > 0) fn(&j, 0, full);
                if (full < C) dw_band_generic(&j, full, C);
            }
            /* the threads' sums added up by all of them, 16 channels at a time: done by one thread, channel by
             * channel, this took 5-20% of a 14x14 or 7x7 layer (two threads, Xeon) */
#pragma omp for schedule(static)
            for (int c0 = 0; c0 < C; c0 += 16) {
                int count = direct_min(16, C - c0);
                if (turn16 && count == 16) {
                    dw_turn16_avx512(partial, size, team, cpad, c0, dw);
                    continue;
                }
                for (int t = 0; t < taps; t++) {
                    float sum[16] = {0};
                    for (int i = 0; i < team; i++) {
                        const float *p = partial + (size_t)i * size + (size_t)t * cpad + c0;
                        for (int k = 0; k < 16; k++) sum[k] += p[k];
                    }
                    for (int k = 0; k < count; k++) dw[(size_t)(c0 + k) * taps + t] += sum[k];
                }
            }
        }
    }
    if (own) plait_free(partial);
}

/* Forward row pairs at stride 2 pay only on rows of 7 outputs, one narrow tile each on AVX-512: 14x14x576 s2
 * 1.08x on one thread, 1.06x on two; 28x28x192 s2 level, 56x56x144 s2 0.9-1.16x, 112x112x96 s2 0.6x (Zen 4,
 * batch 8, in-process A/B); on AVX2 14x14x576 s2 0.92x. */
static bool narrow_pairs(const plait_conv2d_desc *d, plait_conv_direction direction, int OW) {
    return direction == PLAIT_CONV_FORWARD && d->stride_h == 2 && d->stride_w == 2 && OW == 7 &&
           direct_isa_resolved() == PLAIT_ISA_AVX512;
}

/* Stride-1 rows exactly one wide tile wide, in and out: each runs as a single tile whose outside columns are
 * skipped at compile time (exact_row), which beat pairs of 8-pixel tiles (8 + 4 + 2 a row) on Zen 4: 14x14x576
 * forward 1.06x / 1.07x (one / two threads), backward-data 1.08x / 1.08x, 14x14x384 1.03x / 1.03x and 1.07x /
 * 1.06x (in-process A/B, batch 8); AVX2 forced, 8x8x512 1.03x and 1.02x on one thread. */
static bool one_tile_rows(const plait_conv2d_desc *d, int tile, int OW) {
    int tiles[2];
    return direct_depthwise_row_tiles(PLAIT_ISA_AUTO, tiles) == 2 && tile > tiles[0] && OW == tiles[1] &&
           d->in_w == OW && 2 * d->pad_w + 1 == d->kernel_w;
}

/* The default schedule. Forward and backward-data: the tile from default_tile, blocks of DW_CHANNEL_BLOCK
 * channels, and row pairs at stride 1 below 8 MiB of output. Pairs pay at stride 1 (4 input rows for 2 output
 * rows, not 6; backward-data on the Xeon, batch 8: 28x28x192 1.03-1.08x, 14x14x384 1.02x, 7x7x960 1.0-1.04x);
 * at stride 2 (5 for 6) the extra input streams cost more except on narrow rows (narrow_pairs); and on outputs of
 * 8 MiB and more, streamed (two rows of partial-line streams at once run far slower) or not (AVX2, 56x56x144:
 * 0.29-0.39x oneDNN paired against 0.41-0.48x unpaired). Backward-weights: default_band's rows per band. */
plait_conv_schedule direct_depthwise_schedule(const plait_conv2d_desc *d, plait_conv_direction direction) {
    const int OH = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h);
    const int OW = direct_out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    plait_conv_schedule s = {.tile_w = 1, .tile_k = 1, .vthreads = 1, .unroll = 1};
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS) {
        s.block_h = default_band(d, OH, OW);
        return s;
    }
    size_t out_floats = (size_t)d->batch * d->in_channels *
                        (direction == PLAIT_CONV_FORWARD ? (size_t)OH * OW : (size_t)d->in_h * d->in_w);
    s.tile_w = default_tile(direct_isa_resolved(), OW);
    s.block_c = DW_CHANNEL_BLOCK;
    /* stride-2 forward rows over inputs of 8 MiB and more (those the rows prefetch) in blocks of 64 channels, as
     * the search had picked on Zen 4 in every run since stop 37: in-process A/B, batch 8, one / two threads,
     * 112x112x96 s2 1.70x / 1.31x (AVX2 forced 1.51x), 56x56x144 s2 1.21x / 0.95-1.01x (AVX2 1.10x); 32 and 96
     * or more ran slower, 48 level. Why is not established (Zen 4's prefetcht1 fills L2 only) */
    if (direction == PLAIT_CONV_FORWARD && d->stride_w == 2 && large_input(d)) s.block_c = 64;
    if (d->stride_h == 1 && d->stride_w == 1 && !large_tensor(out_floats) && !one_tile_rows(d, s.tile_w, OW))
        s.vthreads = 2;
    if (narrow_pairs(d, direction, OW)) s.vthreads = 2;
    /* forward bands of the whole image on such one-tile rows, below 8 MiB of input while every thread gets an
     * image: each block of 128 channels keeps its three input rows (21 KB) in L1 down the image. Zen 4, batch 8,
     * in-process A/B against row jobs, one / two threads: 14x14x576 1.06-1.08x / 1.06x, 14x14x384 1.10x / 1.09x;
     * 28x28x192 (blocks of 64) 1.0-1.03x, 7x7x960 and the stride-2 layers level to 1.04x, 56x56x144 0.97-1.0x;
     * AVX2 forced (8-pixel tiles) 14x14x576 1.07x, 14x14x384 level */
    if (direction == PLAIT_CONV_FORWARD && direct_isa_resolved() == PLAIT_ISA_AVX512 &&
        one_tile_rows(d, s.tile_w, OW) && whole_image_bands(d))
        s.block_h = OH;
    /* Intel, inputs of 8 MiB and more: whole-image bands of all channels, each row's pixels whole lines in
     * order, in place of row jobs with the row prefetch in blocks of 64 or 128 channels (which Zen 4 ran
     * faster). Xeon, batch 8, the builds alternating, one / two threads: 56x56x144 s2 1.15x / 1.13x, 56x56x144
     * 1.05x / 1.13x, 112x112x96 s2 1.10x / 0.89-0.96x (pairs 0.76-1.26x), 112x112x32 1.06x / 0.97x; blocks of 64
     * or 128 channels in those bands 0.87-0.96x, bands of 8 rows level. */
    if (direction == PLAIT_CONV_FORWARD && direct_isa_resolved() == PLAIT_ISA_AVX512 && large_input(d) &&
        !amd_l3()) {
        s.block_h = d->batch >= plait_threads() ? OH : direct_ceil_div(OH, plait_threads());
        s.block_c = 0;
        s.vthreads = 1;
    }
    return s;
}

bool direct_depthwise_schedule_valid(const plait_conv2d_desc *d, plait_conv_direction direction,
                                     const plait_conv_schedule *s) {
    if (s->tile_k != 1 || s->unroll != 1 || s->split_k || s->block_k || s->block_w || s->loop_order || s->pad_copy ||
        s->winograd || s->im2col || s->vthread_images)
        return false;
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS)
        return s->block_h >= 1 && s->tile_w == 1 && s->block_c == 0 && s->vthreads == 1;
    if (s->block_h < 0 || s->tile_w < 1 || s->tile_w > DIRECT_MAX_TILE_W || s->block_c < 0 || s->block_c % 16 != 0)
        return false;
    /* bands: forward, of single rows */
    if (s->block_h > 0 && (direction != PLAIT_CONV_FORWARD || s->vthreads != 1)) return false;
    return s->vthreads == 1 || (s->vthreads == 2 && d->stride_h == d->stride_w &&
                                (d->stride_h == 1 || direction == PLAIT_CONV_FORWARD));
}

int direct_depthwise_row_tiles(plait_isa isa, int tiles[2]) {
    if (isa == PLAIT_ISA_AUTO) isa = direct_isa_resolved();
    if (isa == PLAIT_ISA_AVX512) dw_row_tiles_avx512(tiles);
    else if (isa == PLAIT_ISA_AVX2) dw_row_tiles_avx2(tiles);
    else return 0;
    return 2;
}
