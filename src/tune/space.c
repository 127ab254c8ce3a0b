/* The schedule space of the direct kernels and the analytical cost model that ranks it. */
#include <math.h>
#include <stdbool.h>

#include "kernels/direct/direct.h"

/* The convolution as the level-1 framework sees it for a direction: channels written (k), read (c),
 * and the output grid (backward-data: one stride phase of the input grid). */
typedef struct view {
    int batch, out_h, out_w, k, c, taps_h, taps_w, stride_h, stride_w;
} view;

static view view_of(const plait_conv2d_desc *d, plait_conv_direction direction) {
    int oh = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h);
    int ow = direct_out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    view v = {d->batch, oh, ow, d->out_channels, d->in_channels, d->kernel_h, d->kernel_w, d->stride_h, d->stride_w};
    if (direction == PLAIT_CONV_BACKWARD_DATA) {
        v.out_h = direct_ceil_div(d->in_h, d->stride_h);
        v.out_w = direct_ceil_div(d->in_w, d->stride_w);
        v.k = d->in_channels;
        v.c = d->out_channels;
        v.taps_h = direct_ceil_div(d->kernel_h, d->stride_h);
        v.taps_w = direct_ceil_div(d->kernel_w, d->stride_w);
        v.stride_h = v.stride_w = 1;
    }
    return v;
}

static int add(plait_conv_schedule *out, int count, int capacity, const plait_conv2d_desc *d,
               plait_conv_direction direction, plait_conv_schedule s) {
    if (count < capacity && plait_conv_schedule_valid(d, direction, &s)) out[count] = s;
    return plait_conv_schedule_valid(d, direction, &s) ? count + 1 : count;
}

/* Depthwise: forward and backward-data over the ISA's single-row tiles, channel blocks and row pairs (stride
 * 1, and forward at stride 2), forward also over bands of the whole image; backward-weights over rows per band.
 * The default is always in. */
static int depthwise_space(const plait_conv2d_desc *d, plait_conv_direction direction, plait_conv_schedule *out,
                           int capacity) {
    plait_conv_schedule base = plait_conv_direct_schedule(d, direction);
    int count = add(out, 0, capacity, d, direction, base);
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS) {
        int oh = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h);
        static const int bands[] = {1, 2, 4, 8, 16};
        for (int b = 0; b < 5; b++) {
            plait_conv_schedule s = base;
            s.block_h = direct_min(bands[b], oh);
            if (s.block_h != base.block_h && (b == 0 || bands[b - 1] < oh))
                count = add(out, count, capacity, d, direction, s);
        }
        return count;
    }
    int tiles[2], tile_count = direct_depthwise_row_tiles(PLAIT_ISA_AUTO, tiles);
    static const int blocks[] = {0, 64, 128, 256};
    for (int t = 0; t < tile_count; t++)
        for (int b = 0; b < 4; b++) {
            if (blocks[b] >= d->in_channels) continue; /* one block: the same as 0 */
            for (int vt = 1; vt <= 3; vt++) { /* pairs where valid; 3: forward bands of the whole image */
                plait_conv_schedule s = base;
                s.tile_w = tiles[t];
                s.block_c = blocks[b];
                s.vthreads = vt == 2 ? 2 : 1;
                s.block_h = vt == 3 ? direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h) : 0;
                bool same = s.tile_w == base.tile_w && s.block_c == base.block_c && s.vthreads == base.vthreads &&
                            s.block_h == base.block_h;
                if (!same) count = add(out, count, capacity, d, direction, s);
            }
        }
    return count;
}

int plait_conv_schedule_space(const plait_conv2d_desc *d, plait_conv_direction direction, plait_conv_schedule *out,
                              int capacity) {
    if (!plait_direct_supports(d)) return 0;
    if (d->groups > 1) return depthwise_space(d, direction, out, capacity);
    view v = view_of(d, direction);
    int kvecs = direct_ceil_div(v.k, DIRECT_LANES), max_tile = plait_direct_max_tile(PLAIT_ISA_AUTO);
    int count = 0;
    if (direct_winograd_supports(d)) {
        static const int chunks[] = {16, 32, 64};
        for (int tk = 1; tk <= direct_min(kvecs, DIRECT_MAX_TILE_K); tk++) {
            int tw = direct_min(DIRECT_MAX_TILE_W, max_tile / tk);
            for (int ch = 0; ch < 3; ch++)
                for (int u = 1; u <= 2; u++) {
                    plait_conv_schedule s = {.winograd = 1, .block_w = chunks[ch], .tile_w = tw, .tile_k = tk,
                                             .vthreads = 1, .unroll = u};
                    count = add(out, count, capacity, d, direction, s);
                }
        }
    }
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS && direct_packed_weights_applies(d)) {
        /* packed 1x1 (roles swapped: tile_w output channels x tile_k vectors of input channels) */
        int cvecs = direct_ceil_div(v.c, DIRECT_LANES);
        static const int pixels[] = {128, 256, 512, 1024};
        for (int tk = 1; tk <= direct_min(cvecs, DIRECT_MAX_TILE_K); tk++)
            for (int wide = 0; wide < 2; wide++) {
                int tw = direct_min(direct_min(DIRECT_MAX_TILE_W, v.k), max_tile / (tk + 1 - wide));
                for (int b = 0; b < 4; b++)
                    for (int packed_dy = 0; packed_dy < 2; packed_dy++) {
                        int rows, images;
                        direct_pixel_block(v.out_h, v.out_w, pixels[b], &rows, &images);
                        plait_conv_schedule s = {.tile_w = tw, .tile_k = tk, .vthreads = 1, .block_h = rows,
                                                 .block_w = images, .pad_copy = 1, .split_k = packed_dy, .unroll = 1};
                        count = add(out, count, capacity, d, direction, s);
                    }
            }
    }
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS && direct_phase_weights_applies(d)) {
        /* per-tap packed GEMMs over stride-phase planes (roles swapped as in the packed 1x1 path), blocks of whole
         * images near 128-1024 output pixels */
        int cvecs = direct_ceil_div(v.c, DIRECT_LANES), last_images = 0;
        static const int pixels[] = {128, 256, 512, 1024};
        for (int b = 0; b < 4; b++) {
            int images = direct_max(1, direct_min(v.batch, pixels[b] / (v.out_h * v.out_w)));
            if (images == last_images) continue;
            last_images = images;
            for (int tk = 1; tk <= direct_min(cvecs, DIRECT_MAX_TILE_K); tk++) {
                int tw = direct_min(direct_min(DIRECT_MAX_TILE_W, v.k), max_tile / tk);
                for (int sk = 0; sk < 2; sk++) { /* split_k 1: threads apart by image blocks, sums of their own */
                    plait_conv_schedule s = {.tile_w = tw, .tile_k = tk, .vthreads = 1, .block_w = images,
                                             .pad_copy = 1, .split_k = sk, .unroll = 1};
                    count = add(out, count, capacity, d, direction, s);
                }
            }
        }
    }
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS && direct_patch_weights_applies(d)) {
        /* patch tiles over a padded x: the patch split into even tiles, by every tile_k that fits */
        int patch = v.taps_h * v.taps_w * v.c;
        static const int pixels[] = {128, 512, 2048};
        for (int tk = 1; tk <= direct_min(kvecs, DIRECT_MAX_TILE_K); tk++) {
            int tw = direct_patch_tile_width(patch, tk, max_tile);
            for (int b = 0; b < 3; b++) {
                int rows, images;
                direct_pixel_block(v.out_h, v.out_w, pixels[b], &rows, &images);
                plait_conv_schedule s = {.tile_w = tw, .tile_k = tk, .vthreads = 1, .block_h = rows,
                                         .block_w = images, .pad_copy = 1, .unroll = 1};
                count = add(out, count, capacity, d, direction, s);
            }
        }
    }
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS) {
        /* row runs (taps of a kernel row merged with the channels) where one tap's channels are fewer
         * than a register tile holds */
        int orders = v.taps_w > 1 && v.c < DIRECT_LANES ? 2 : 1;
        for (int lo = 0; lo < orders; lo++) {
            int run = lo ? v.taps_w * v.c : v.c;
            for (int tk = 1; tk <= direct_min(kvecs, DIRECT_MAX_TILE_K); tk++)
                for (int tc = 1; tc <= direct_min(run, DIRECT_MAX_TILE_W); tc++) {
                    if (tc * tk > max_tile) break;
                    if (2 * tc * tk < max_tile && tc < run) continue; /* registers left idle */
                    static const int pixels[] = {32, 128, 512};
                    for (int b = 0; b < 3; b++) {
                        int rows, images;
                        direct_pixel_block(v.out_h, v.out_w, pixels[b], &rows, &images);
                        for (int sk = 0; sk < 2; sk++) {
                            plait_conv_schedule s = {.tile_w = tc, .tile_k = tk, .vthreads = 1, .block_h = rows,
                                                     .block_w = images, .loop_order = lo, .split_k = sk,
                                                     .unroll = 1};
                            count = add(out, count, capacity, d, direction, s);
                        }
                    }
                }
        }
        return count;
    }
    static const int vthreads[] = {1, 2, 4};
    bool padded = d->pad_h > 0 || d->pad_w > 0 || direction == PLAIT_CONV_BACKWARD_DATA;
    for (int tk = 1; tk <= direct_min(kvecs, DIRECT_MAX_TILE_K); tk++)
        for (int vi = 0; vi < 3; vi++) {
            int vt = vthreads[vi];
            if (vt > v.out_h && vt > v.batch) continue;
            for (int tw = 1; tw <= direct_min(v.out_w, DIRECT_MAX_TILE_W); tw++) {
                int tile = tw * tk * vt;
                if (tile > max_tile) break;
                if (2 * tile < max_tile && tw < v.out_w) continue; /* registers left idle */
                int block_cs[4] = {0, 128, 64, 32};
                for (int bc = 0; bc < 4; bc++) {
                    if (block_cs[bc] != 0 && block_cs[bc] >= v.c) continue;
                    int block_ks[2] = {0, tk};
                    for (int bk = 0; bk < (kvecs > tk ? 2 : 1); bk++)
                        for (int bh = 0; bh < 2; bh++)
                            for (int sk = 0; sk < (block_ks[bk] ? 2 : 1); sk++)
                                for (int lo = 0; lo < 2; lo++)
                                    for (int u = 1; u <= 2; u++)
                                        for (int pc = 0; pc < (padded ? 2 : 1); pc++)
                                        for (int vi = 0; vi < (vt > 1 && v.batch > 1 ? 2 : 1); vi++) {
                                            plait_conv_schedule s = {
                                                .split_k = sk, .block_k = block_ks[bk], .block_c = block_cs[bc],
                                                .block_h = bh ? 4 * vt : vt, .block_w = 0, .tile_w = tw,
                                                .tile_k = tk, .vthreads = vt, .loop_order = lo, .unroll = u,
                                                .pad_copy = pc, .vthread_images = vi,
                                            };
                                            count = add(out, count, capacity, d, direction, s);
                                        }
                }
            }
        }
    return count;
}

/* Machine constants of the model, in cycles and bytes; only their ratios shape the ranking. */
enum { FMA_PER_CYCLE = 2, LOADS_PER_CYCLE = 2, FMA_LATENCY = 4, L1_BYTES = 32 * 1024, L2_BYTES = 1024 * 1024 };
static const double L2_BYTES_PER_CYCLE = 32, L3_BYTES_PER_CYCLE = 12, MEMORY_BYTES_PER_CYCLE = 8, CYCLES_PER_SECOND = 3.0e9;

static double items_of(const view *v, const plait_conv_schedule *s, int kvecs) {
    int block_h = s->block_h > 0 ? s->block_h : v->out_h;
    double k_blocks = s->block_k > 0 ? direct_ceil_div(kvecs, s->block_k) : 1;
    return (double)v->batch * direct_ceil_div(v->out_h, block_h) * k_blocks;
}

/* Depthwise: few multiply-adds per byte, so the model counts the tiles' fixed costs and the bytes that come
 * from beyond L2: a coarse ranking of small spaces (4-16 schedules), half or more of which the search measures. */
static double depthwise_cost(const plait_conv2d_desc *d, plait_conv_direction direction, const plait_conv_schedule *s,
                             int threads) {
    int oh = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h);
    int ow = direct_out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    double vectors = direct_ceil_div(d->in_channels, DIRECT_LANES), taps = (double)d->kernel_h * d->kernel_w;
    double in_bytes = (double)d->batch * d->in_h * d->in_w * d->in_channels * 4;
    double out_bytes = (double)d->batch * oh * ow * d->in_channels * 4;
    double fma = (double)d->batch * oh * ow * vectors * taps;
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS) {
        /* every band re-reads the x rows its taps reach beyond its own, and restarts its sums per vector pair */
        int band = direct_max(1, direct_min(s->block_h, oh));
        double bands = (double)d->batch * direct_ceil_div(oh, band);
        double x_rows = (double)band * d->stride_h + d->kernel_h - d->stride_h;
        double x_bytes = in_bytes * x_rows / ((double)band * d->stride_h);
        double band_bytes = x_rows * d->in_w * d->in_channels * 4.0 + (double)band * ow * d->in_channels * 4.0;
        double stream =
            (x_bytes + out_bytes) / (band_bytes > L2_BYTES / 4 ? MEMORY_BYTES_PER_CYCLE : L3_BYTES_PER_CYCLE);
        double restarts = bands * vectors / 2 * (4 * taps + 40);
        return (fma / FMA_PER_CYCLE + restarts + stream) / threads / CYCLES_PER_SECOND;
    }
    if (direction == PLAIT_CONV_BACKWARD_DATA) {
        double swap = in_bytes;
        in_bytes = out_bytes;
        out_bytes = swap;
        fma = (double)d->batch * d->in_h * d->in_w * vectors * taps / ((double)d->stride_h * d->stride_w);
    }
    double out_rows = (double)d->batch * (direction == PLAIT_CONV_FORWARD ? oh : d->in_h);
    double out_w = direction == PLAIT_CONV_FORWARD ? ow : d->in_w;
    /* a tile loads its taps' input vectors and weights and stores its outputs: about 3 + taps cycles a tile
     * beyond its multiply-adds; row pairs halve the input rows per output row */
    double tiles = out_rows / s->vthreads * ceil(out_w / s->tile_w) * vectors;
    double block = s->block_c > 0 ? s->block_c : d->in_channels;
    double blocks = out_rows / s->vthreads * ceil(d->in_channels / block);
    /* input rows per output row from beyond L1: pairs share theirs; a band's block keeps the rows its next output
     * row shares, if they fit */
    bool fits = block * 4 * d->kernel_h * d->in_w <= L1_BYTES;
    double rows_read = s->block_h > 0 && fits ? d->stride_h
                       : s->vthreads == 2     ? (d->kernel_h + d->stride_h) / 2.0
                                              : d->kernel_h;
    double l1_miss = rows_read * in_bytes / (double)d->stride_h / 64 * (fits ? 1 : 2);
    double stream = (in_bytes + 2 * out_bytes) / L3_BYTES_PER_CYCLE;
    return (fma / FMA_PER_CYCLE + tiles * (3 + taps) + blocks * 50 + l1_miss + stream) / threads /
           CYCLES_PER_SECOND;
}

/* Cycles per step (a pixel, or a channel) of a register tile of tile_w broadcasts by tile_k vectors, whichever of
 * FMA issue, loads or the FMA latency binds; *fma gets its multiply-adds per step. */
static double tile_step_cycles(int tile_w, int tile_k, double lanes_per_vector, double *fma) {
    *fma = (double)tile_w * tile_k * lanes_per_vector;
    double loads = tile_w + tile_k * lanes_per_vector;
    return fmax(fmax(*fma / FMA_PER_CYCLE, loads / LOADS_PER_CYCLE), FMA_LATENCY);
}

double plait_conv_cost_model(const plait_conv2d_desc *d, plait_conv_direction direction,
                             const plait_conv_schedule *s, int threads) {
    if (threads < 1) threads = 1;
    if (d->groups > 1) return depthwise_cost(d, direction, s, threads);
    view v = view_of(d, direction);
    int kvecs = direct_ceil_div(v.k, DIRECT_LANES);
    bool avx2 = direct_isa_resolved() == PLAIT_ISA_AVX2;
    double lanes_per_vector = avx2 ? 2 : 1; /* an AVX2 "vector" of 16 is two instructions */
    if (s->winograd) {
        /* 36 transform-domain products per 4x4 tile on the micro-kernel, plus the transforms, whose cost per
         * tile and 16 channels was calibrated against the products on this code (about 860 cycles) */
        double tiles = (double)v.batch * direct_ceil_div(v.out_h, 4) * direct_ceil_div(v.out_w, 4);
        double fma, step = tile_step_cycles(s->tile_w, s->tile_k, lanes_per_vector, &fma);
        double products = 36.0 * tiles / s->tile_w * direct_ceil_div(kvecs, s->tile_k) * v.c * step;
        double transforms = tiles * 860.0 * (direct_ceil_div(v.c, DIRECT_LANES) + kvecs);
        double chunk = s->block_w > 0 ? s->block_w : 64;
        double weights = 36.0 * v.c * kvecs * DIRECT_LANES * 4 * ceil(tiles / chunk); /* U streamed per chunk */
        double u_bytes = 36.0 * v.c * kvecs * DIRECT_LANES * 4;
        double stream = u_bytes > L2_BYTES ? weights / L3_BYTES_PER_CYCLE : weights / L2_BYTES_PER_CYCLE;
        double chunks = ceil(tiles / chunk), balance = ceil(chunks / threads) / (chunks / threads);
        return (products + transforms + stream) * balance / threads / CYCLES_PER_SECOND;
    }
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS && s->pad_copy && direct_patch_weights_applies(d)) {
        /* patch tiles: per pixel tile_w broadcasts and tile_k dy loads, one call per tile and pixel block, and a
         * copy of x (few channels); the portable tile where AVX-512 has no such shape */
        double pixels = (double)v.batch * v.out_h * v.out_w;
        int patch = v.taps_h * v.taps_w * v.c;
        double tiles = (double)direct_ceil_div(patch, s->tile_w) * direct_ceil_div(kvecs, s->tile_k);
        double fma, per_pixel = tile_step_cycles(s->tile_w, s->tile_k, lanes_per_vector, &fma);
        if (direct_isa_resolved() != PLAIT_ISA_AVX512 ||
            !direct_patch_tile_avx512(v.taps_w * v.c, 0, s->tile_w, direct_min(s->tile_k, kvecs)))
            per_pixel = fma * 16; /* the portable tile */
        double balance = ceil(tiles / threads) / (tiles / threads);
        return (tiles * pixels * per_pixel / threads * balance + pixels * v.c * 8 / MEMORY_BYTES_PER_CYCLE) /
               CYCLES_PER_SECOND;
    }
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS && s->pad_copy && direct_phase_weights_applies(d)) {
        /* per-tap packed GEMMs: every tap's tiles over the block's pixels, a copy of x and dy per block, and a load
         * and store of each tile's sums per block and tap */
        double pixels = (double)v.batch * v.out_h * v.out_w, taps = (double)v.taps_h * v.taps_w;
        int cvecs = direct_ceil_div(v.c, DIRECT_LANES);
        double tiles = (double)direct_ceil_div(v.k, s->tile_w) * direct_ceil_div(cvecs, s->tile_k);
        double fma, per_pixel = tile_step_cycles(s->tile_w, s->tile_k, lanes_per_vector, &fma);
        double blocks = ceil((double)v.batch / s->block_w);
        double copy = (pixels * v.k + (double)v.batch * d->in_h * d->in_w * v.c) * 8 / MEMORY_BYTES_PER_CYCLE;
        double k_tiles = direct_ceil_div(v.k, s->tile_w), balance = ceil(k_tiles / threads) / (k_tiles / threads);
        double sums = 0;
        if (direct_phase_weights_by_images(d, s, threads)) {
            /* image blocks apart: balanced by blocks, a set of sums per thread cleared and added once */
            balance = ceil(blocks / threads) / (blocks / threads);
            sums = (double)v.k * taps * v.c * threads * 8 / MEMORY_BYTES_PER_CYCLE;
        }
        return ((tiles * taps * (pixels * per_pixel + blocks * (2.0 * fma + 30)) + copy) / threads * balance + sums) /
               CYCLES_PER_SECOND;
    }
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS && s->pad_copy) {
        /* packed 1x1: contiguous panels, accumulators in dw; pays a copy of dy and (unless it fits one tile) x */
        double pixels = (double)v.batch * v.out_h * v.out_w;
        int cvecs = direct_ceil_div(v.c, DIRECT_LANES);
        double tiles = (double)direct_ceil_div(v.k, s->tile_w) * direct_ceil_div(cvecs, s->tile_k);
        double fma, per_pixel = tile_step_cycles(s->tile_w, s->tile_k, lanes_per_vector, &fma);
        double block = direct_packed_block_pixels(d, s), blocks = ceil(pixels / block);
        double copied = (s->split_k ? v.k : 0) + (cvecs <= s->tile_k ? 0 : v.c);
        double copy = pixels * copied * 8 / MEMORY_BYTES_PER_CYCLE;
        /* dy in place: rows of 4 KB and more apart share a few L1 sets, so its broadcasts miss to L2 */
        if (!s->split_k && v.k >= 1024) per_pixel += s->tile_w / 2.0;
        double balance = ceil(tiles / threads) / (tiles / threads);
        return ((tiles * pixels * per_pixel + tiles * blocks * (2.0 * fma + 30) + copy) / threads * balance) /
               CYCLES_PER_SECOND;
    }
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS) {
        double pixels = (double)v.batch * v.out_h * v.out_w;
        bool runs = s->loop_order == PLAIT_LOOP_ROWS_OUTER;
        int run = runs ? v.taps_w * v.c : v.c;
        double tiles = (double)v.taps_h * (runs ? 1 : v.taps_w) * direct_ceil_div(run, s->tile_w) *
                       direct_ceil_div(kvecs, s->tile_k);
        double fma, per_pixel = tile_step_cycles(s->tile_w, s->tile_k, lanes_per_vector, &fma);
        double blocks = (double)direct_ceil_div(v.batch, s->block_w > 0 ? s->block_w : 1) *
                        direct_ceil_div(v.out_h, s->block_h > 0 ? s->block_h : v.out_h);
        double calls = tiles * blocks;
        /* each call reloads and stores its accumulators, and re-streams its block of x and dy from L2 */
        double overhead = calls * (2.0 * fma + 30);
        double block_bytes = (double)(s->block_w > 0 ? s->block_w : 1) * (s->block_h > 0 ? s->block_h : v.out_h) *
                             v.out_w * (v.k + v.c * v.stride_h * v.stride_w) * 4;
        double memory = block_bytes > L2_BYTES ? tiles * block_bytes * blocks / MEMORY_BYTES_PER_CYCLE / threads : 0;
        /* the packed gradient is re-read and re-written once per pixel block, from L3 when it overflows L2 */
        double gradient_bytes = (double)v.taps_h * v.taps_w * v.c * kvecs * DIRECT_LANES * 4;
        if (gradient_bytes > L2_BYTES) memory += 2 * gradient_bytes * blocks / L3_BYTES_PER_CYCLE;
        double balance = ceil(tiles / threads) / (tiles / threads);
        return ((tiles * pixels * per_pixel + overhead) / threads * balance + memory) / CYCLES_PER_SECOND;
    }
    int vt = s->vthreads, tw = s->tile_w, tk = s->tile_k;
    int block_c = s->block_c > 0 ? direct_min(s->block_c, v.c) : v.c;
    int c_blocks = direct_ceil_div(v.c, block_c);
    double rows = (double)v.batch * v.out_h;
    /* interior tiles: full register tile; the border columns run one pixel at a time */
    int border = s->pad_copy ? 0 : direct_min(v.out_w, 2 * direct_ceil_div(v.taps_w / 2, v.stride_w));
    double tiles_per_row = (double)(v.out_w - border) / tw;
    double taps = (double)v.taps_h * v.taps_w;
    double k_tiles = direct_ceil_div(kvecs, tk);
    double fma = (double)tw * tk * vt * lanes_per_vector, loads = tk * lanes_per_vector + (double)tw * vt;
    double step = fmax(fmax(fma / FMA_PER_CYCLE, loads / LOADS_PER_CYCLE), FMA_LATENCY);
    double edge_step = fmax(fmax(tk * lanes_per_vector / FMA_PER_CYCLE, (tk * lanes_per_vector + 1) / LOADS_PER_CYCLE), FMA_LATENCY);
    double interior = rows / vt * tiles_per_row * k_tiles * taps * v.c * step;
    double edges = rows * border * k_tiles * taps * v.c * edge_step;
    double calls = (rows / vt * tiles_per_row + rows * border) * k_tiles * c_blocks;
    double overhead = calls * (2.0 * fma * (c_blocks > 1 ? 2 : 1) + 20 + 3 * taps);
    /* L1 residency: a tile's weights for one channel block are reused across the rows of a block when
     * the K loop is outside; otherwise reloaded from L2 for every tile. */
    double weight_bytes = taps * block_c * tk * DIRECT_LANES * 4.0;
    double input_bytes = (double)(vt * v.stride_h + v.taps_h) * ((tw - 1) * v.stride_w + v.taps_w) * block_c * 4.0;
    double l2_traffic = 0;
    double block_h = s->block_h > 0 ? s->block_h : v.out_h;
    if (s->loop_order == PLAIT_LOOP_K_OUTER) {
        if (weight_bytes + input_bytes > L1_BYTES) l2_traffic += calls * weight_bytes;
        else l2_traffic += calls / (block_h / vt) * weight_bytes;
        l2_traffic += calls * input_bytes * (input_bytes * 4 > L1_BYTES ? 1 : 0.25);
    } else {
        double all_k = weight_bytes * (s->block_k > 0 ? s->block_k / tk : k_tiles);
        l2_traffic += calls * weight_bytes * (all_k > L1_BYTES ? 1 : 0.25);
        l2_traffic += calls / k_tiles * input_bytes;
    }
    /* whole-tensor passes: each K block re-reads the input, each channel block re-reads the output */
    double in_bytes = (double)v.batch * v.out_h * v.stride_h * v.out_w * v.stride_w * v.c * 4.0;
    double out_bytes = rows * v.out_w * v.k * 4.0;
    double k_blocks = s->block_k > 0 ? direct_ceil_div(kvecs, s->block_k) : 1;
    double memory = (in_bytes * (k_blocks + 2 * s->pad_copy) + out_bytes * (2 * c_blocks - 1)) / MEMORY_BYTES_PER_CYCLE;
    /* thread balance over the level-1 work items */
    double items = (double)v.batch * direct_ceil_div(v.out_h, (int)block_h) * k_blocks;
    double balance = ceil(items / threads) / (items / threads);
    /* Weights fetched from beyond L2: a tile's weights that overflow L2 stream from L3 on every call; else
     * each work item fetches its K block's weights once, from L2 when consecutive items of a thread share
     * that K block (split_k) and it fits, from L3 otherwise. */
    double item_weights = weight_bytes * c_blocks * (s->block_k > 0 ? (double)s->block_k / tk : k_tiles);
    double l3_traffic = weight_bytes > L2_BYTES ? calls * weight_bytes
                        : s->split_k && item_weights <= L2_BYTES ? 0
                                                                 : items_of(&v, s, kvecs) * item_weights;
    double compute = (interior + edges + overhead + l2_traffic / L2_BYTES_PER_CYCLE + l3_traffic / L3_BYTES_PER_CYCLE) *
                     balance / threads;
    return fmax(compute, memory) / CYCLES_PER_SECOND;
}
