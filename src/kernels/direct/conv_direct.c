/* The direct convolution's three directions expressed as level-1 problems (framework.c), the default
 * schedules, and the kernel table the engine swaps in per layer. */
#include <stdio.h>
#include <string.h>

#include "kernels/direct/direct.h"

static bool is_depthwise(const plait_conv2d_desc *d) {
    return d->groups > 1 && d->groups == d->in_channels && d->groups == d->out_channels;
}

static int out_h(const plait_conv2d_desc *d) { return direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h); }
static int out_w(const plait_conv2d_desc *d) { return direct_out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w); }

bool plait_direct_supports(const plait_conv2d_desc *d) {
    if (d->batch < 1 || d->in_h < 1 || d->in_w < 1 || d->in_channels < 1 || d->out_channels < 1 || d->kernel_h < 1 ||
        d->kernel_w < 1 || d->stride_h < 1 || d->stride_w < 1 || d->pad_h < 0 || d->pad_w < 0)
        return false;
    if (out_h(d) < 1 || out_w(d) < 1) return false;
    return d->groups == 1 || is_depthwise(d);
}

const char *plait_conv_direction_name(plait_conv_direction direction) {
    switch (direction) {
    case PLAIT_CONV_FORWARD: return "forward";
    case PLAIT_CONV_BACKWARD_DATA: return "backward_data";
    case PLAIT_CONV_BACKWARD_WEIGHTS: return "backward_weights";
    default: return "?";
    }
}

int plait_direct_max_tile(plait_isa isa) {
    if (isa == PLAIT_ISA_AUTO) isa = direct_isa_resolved();
    return isa == PLAIT_ISA_AVX2 ? 6 : 28;
}

void plait_conv_schedule_format(const plait_conv_schedule *s, char *text, size_t size) {
    if (s->im2col) {
        snprintf(text, size, "im2col + BLAS");
        return;
    }
    snprintf(text, size, "tw%d tk%d v%d bk%d bc%d bh%d bw%d sk%d lo%d u%d pc%d wg%d vi%d", s->tile_w, s->tile_k,
             s->vthreads, s->block_k, s->block_c, s->block_h, s->block_w, s->split_k, s->loop_order, s->unroll,
             s->pad_copy, s->winograd, s->vthread_images);
}

bool plait_conv_schedule_valid(const plait_conv2d_desc *d, plait_conv_direction direction,
                               const plait_conv_schedule *s) {
    if (!plait_direct_supports(d)) return false;
    if (is_depthwise(d)) return direct_depthwise_schedule_valid(d, direction, s);
    if (s->tile_k < 1 || s->tile_k > DIRECT_MAX_TILE_K || s->tile_w < 1) return false;
    if (s->block_k < 0 || s->block_c < 0 || s->block_h < 0 || s->block_w < 0) return false;
    if (s->split_k < 0 || s->split_k > 1 || s->loop_order < 0 || s->loop_order > 1) return false;
    if (s->pad_copy < 0 || s->pad_copy > 1) return false;
    if (s->winograd < 0 || s->winograd > 1) return false;
    if (s->im2col < 0 || s->im2col > 1) return false;
    if (s->im2col) return !is_depthwise(d) && !s->winograd && !s->vthread_images;
    if (s->vthread_images < 0 || s->vthread_images > 1) return false;
    if (s->vthread_images && (s->winograd || direction == PLAIT_CONV_BACKWARD_WEIGHTS)) return false;
    if (s->winograd) {
        if (!direct_winograd_supports(d)) return false;
        if (s->block_w < 1 || s->block_w > DIRECT_WINOGRAD_MAX_CHUNK) return false;
        return s->vthreads == 1 && (s->unroll == 1 || s->unroll == 2) && s->tile_w <= DIRECT_MAX_TILE_W &&
               s->tile_w * s->tile_k <= plait_direct_max_tile(PLAIT_ISA_AUTO);
    }
    int max_tile = plait_direct_max_tile(PLAIT_ISA_AUTO);
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS && !s->winograd) {
        /* patch tiles (pad_copy on a small patch): tile_w patch elements by tile_k vectors */
        if (s->pad_copy && direct_patch_weights_applies(d))
            return s->tile_w <= d->kernel_h * d->kernel_w * d->in_channels && s->tile_w * s->tile_k <= max_tile &&
                   s->vthreads == 1 && s->loop_order == PLAIT_LOOP_K_OUTER;
        /* packed (pad_copy): 1x1 without padding, blocks of at most DIRECT_MAX_PACKED_PIXELS pixels; other
         * layers over stride-phase planes of x, blocks of whole images */
        if (s->pad_copy && direct_packed_weights_applies(d) &&
            (s->loop_order != PLAIT_LOOP_K_OUTER || direct_packed_block_pixels(d, s) > DIRECT_MAX_PACKED_PIXELS))
            return false;
        if (s->pad_copy && !direct_packed_weights_applies(d) && !direct_phase_weights_valid(d, s)) return false;
        return s->vthreads == 1 && s->tile_w <= DIRECT_MAX_TILE_W && s->tile_w * s->tile_k <= max_tile;
    }
    if (s->vthreads != 1 && s->vthreads != 2 && s->vthreads != 4) return false;
    if (s->unroll != 1 && s->unroll != 2) return false;
    if (s->tile_w > DIRECT_MAX_TILE_W || s->tile_w * s->tile_k * s->vthreads > max_tile) return false;
    if (s->block_k > 0 && s->block_k % s->tile_k != 0) return false;
    return true;
}

plait_conv_schedule plait_conv_direct_schedule(const plait_conv2d_desc *d, plait_conv_direction direction) {
    if (is_depthwise(d)) return direct_depthwise_schedule(d, direction);
    bool avx2 = direct_isa_resolved() == PLAIT_ISA_AVX2;
    int k_count = direction == PLAIT_CONV_BACKWARD_DATA ? d->in_channels : d->out_channels;
    int kvecs = direct_ceil_div(k_count, DIRECT_LANES);
    plait_conv_schedule s = {.split_k = 0, .block_k = 0, .block_c = 0, .block_h = 0, .block_w = 0,
                             .vthreads = 1, .loop_order = PLAIT_LOOP_K_OUTER, .unroll = 1};
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS) {
        s.tile_k = direct_min(kvecs, avx2 ? 2 : 4);
        /* the widest tile the accumulators allow. On AVX-512 that is 7 x 4: its 28 sums, 4 dy vectors and the
         * broadcast are one more than the 32 registers and GCC keeps one sum on the stack, yet it ran 1.11-1.30x
         * the 5 x 4 that left room for them on stride-2 3x3 layers and 1.0-1.05x on 1x1 layers (Xeon,
         * ResNet-18/50 CIFAR, batch 64, one thread and two, 2026-12-05) */
        s.tile_w = plait_direct_max_tile(PLAIT_ISA_AUTO) / s.tile_k;
        if (s.tile_w > DIRECT_MAX_TILE_W) s.tile_w = DIRECT_MAX_TILE_W;
        /* Few channels (a stem): tile a kernel row's taps and channels together (with the blocks below, the
         * search's pick on the 7x7 3-channel stem, 1.15x one tap at a time; level with it on the 3x3 one) */
        int run = d->in_channels;
        if (d->in_channels < DIRECT_LANES && d->kernel_w > 1) {
            s.loop_order = PLAIT_LOOP_ROWS_OUTER;
            run = d->kernel_w * d->in_channels;
        }
        if (s.tile_w > run) s.tile_w = run;
        /* pixel blocks of about 128 outputs: a few rows of a large image, or several small images; 512 in row
         * runs, whose border columns go tap by tap in small calls (the search's pick on both stems) */
        int pixels = s.loop_order == PLAIT_LOOP_ROWS_OUTER ? 512 : 128;
        /* Larger kernels: up to 512 outputs while the input rows a block reads fill at most half the core's L2.
         * Every unit reloads its sums of the packed gradient once per block, so fewer blocks save that traffic
         * until the block's x no longer stays in L2 (stride-2 3x3, batch 64, Xeon: 1.02-1.12x on one thread,
         * 1.03-1.04x on two; 2 MB of x ran 0.9x, 2026-12-05) */
        if (s.loop_order != PLAIT_LOOP_ROWS_OUTER && (d->kernel_h > 1 || d->kernel_w > 1))
            for (int wider = 512; wider > pixels; wider /= 2) {
                int rows, images;
                direct_pixel_block(out_h(d), out_w(d), wider, &rows, &images);
                int in_rows = direct_min(d->in_h, (rows - 1) * d->stride_h + d->kernel_h);
                double x_bytes = 4.0 * images * in_rows * d->in_w * d->in_channels;
                if (x_bytes <= plait_cpu_features()->l2_bytes / 2) {
                    pixels = wider;
                    break;
                }
            }
        /* 1x1 layers: the packed path (conv_weights_packed.c), except with few input channels and many output
         * channels (64 -> 256: level) and with at most 64 output channels, whose dy rows the unpacked tile reads
         * whole and in place (256 -> 64: 0.94x packed). Measured 2026-12-05 on the ResNet-50 1x1 layers, one
         * thread, against the unpacked default: 1.1x geomean, 1.2-1.3x on 8x8 and 4x4 images; two threads, each
         * with its own x panels: 1.1x geomean, 0.93-1.38x. Blocks of 256 pixels; dy copied into panels from 1024
         * output channels on (in place, its rows 4 KB apart share L1 sets: 512 -> 2048 ran 112 GFLOP/s in place,
         * 141 packed); the tile 9 x 3, or 6 x 4 when four vectors hold every input channel (x is then read in
         * place too), within the register file either way. */
        /* Since the unpacked tiles pull the next block in themselves (direct_spans_of), up to 512 input channels
         * on 8x8 and larger outputs (16x16 when strided, whose blocks are not one run) they beat the packed path:
         * 512 -> 128 and 128 -> 512 at 16x16 1.03-1.07x, 256 -> 128 at 32x32 1.11-1.14x, 256 -> 1024 at 8x8
         * 1.06-1.08x, the 256 -> 512 shortcut 1.11-1.16x on one thread, 1.0-1.27x on two; 1024+ input channels,
         * 4x4 outputs and the strided 8x8 ones keep the packed path (0.8-0.95x unpacked; 2026-12-05) */
        bool unpacked_wins = d->in_channels <= 512 && out_w(d) >= (d->stride_w == 1 ? 8 : 16);
        if (!avx2 && direct_packed_weights_applies(d) && (d->in_channels >= 128 || d->out_channels <= 128) &&
            d->out_channels > 64 && out_w(d) <= 256 && !unpacked_wins) {
            int cvecs = direct_ceil_div(d->in_channels, DIRECT_LANES);
            s.pad_copy = 1;
            /* dy into panels from 1024 output channels on, and at 512 when the sums run over 1024+ input
             * channels (ResNet-50's 1024 -> 512 and 2048 -> 512: 1.13-1.16x one thread, 1.07-1.08x two, paired
             * call by call, 2026-12-06; 256 -> 512 0.88-1.08x, left in place) */
            s.split_k = d->out_channels >= 1024 || (d->out_channels >= 512 && d->in_channels >= 1024);
            /* 6 x 4 where four vectors divide the input channels: 9 x 3 left a tile of one or two vectors at
             * the end of each row of dw (ResNet 1x1 layers with 128-2048 input channels, paired call by call:
             * 1.01-1.10x one thread, 0.99-1.06x two, 2026-12-06) */
            s.tile_k = cvecs <= 4 ? cvecs : cvecs % 4 == 0 ? 4 : 3;
            int fits = direct_min(DIRECT_MAX_TILE_W, plait_direct_max_tile(PLAIT_ISA_AUTO) / s.tile_k);
            s.tile_w = direct_min(d->out_channels, s.tile_k == 4 ? 6 : fits);
            /* With dy read in place, blocks of 128 pixels: the slice of x panel a tile sweeps (128 x 4 vectors,
             * 32 KB) then stays in L1 from one output-channel tile to the next. Paired call by call against 256
             * (batch 64; MobileNetV2's 7x7 and 14x14 layers at batch 8): ResNet-18's strided 128 -> 256 and
             * 256 -> 512 1.05x / 1.06x one thread, 1.03x / 1.11x two; 1024 -> 256 and MobileNetV2's 0.96-1.14x
             * (7x7 x 160 -> 960 1.14x / 1.03x). With dy in panels too, 256 (128: 0.93-1.05x). */
            pixels = s.split_k ? 256 : 128;
        }
        /* Windowed layers with 128 or more input channels, strided or on images of at most 64 output pixels: per-tap
         * packed GEMMs over stride-phase planes of x (conv_weights_phases.c), whose tiles read contiguous panels
         * where the unpacked ones read rows of x and dy 2-4 KB apart in a few L1 sets. Paired call by call
         * against the unpacked default (ResNet stride-2 3x3 layers, batch 64, Xeon): 128 -> 256 at 16x16 1.18x
         * one thread, 1.15x two; 256 -> 512 at 8x8 1.18x and 1.26x; 512 -> 512 at 8x8 1.19x and 1.31x; stride
         * 1 at 8x8 x 256 1.11x / 1.10x and 4x4 x 512 1.44x / 1.42x. Not with 64 channels at stride 1 (level /
         * 0.81x) nor on larger stride-1 images (16x16 x 128 level). Blocks of about 256 output pixels whose planes
         * of x take at most half the L2 (512 -> 512 at 8x8: 16 images 0.98x, 8 images 1.19x). */
        /* On two or more threads each takes whole image blocks into sums of its own (split_k 1) where the workspace
         * holds a set per thread, instead of output-channel tiles over one shared copy of x: paired call by call on
         * two threads, 64 -> 128 at 32x32 1.05-1.09x the unpacked default (0.91x with the tiles split), 128 -> 128 at
         * 32x32 1.16x, 128 -> 256 at 16x16 1.06x, 256 -> 256 1.02x. Which is what brings the 64-channel stride-2
         * layer in (one thread 1.04-1.06x). On one thread split_k 1 runs image blocks too, into dw, each tile's dy
         * panel copied just before its taps: only up to 128 output channels (paired call by call against split_k 0:
         * 64 -> 128 stride 2 1.023x, 128 -> 128 1.007x; 256 and 512 0.98-0.995x). */
        const int cvecs_in = direct_ceil_div(d->in_channels, DIRECT_LANES);
        const bool strided = d->stride_h > 1 || d->stride_w > 1;
        if (!avx2 && direct_phase_weights_applies(d) && d->in_channels >= (strided ? 64 : 128) &&
            (strided || out_h(d) * out_w(d) <= 64)) {
            double image_bytes = 4.0 * d->in_h * d->in_w * d->in_channels;
            int images = direct_max(1, 256 / (out_h(d) * out_w(d)));
            images = direct_min(images, (int)(plait_cpu_features()->l2_bytes / 2 / image_bytes));
            /* 14 x 2 tiles where two vectors divide the channels (28 sums, 2 vectors and a broadcast fit the 32
             * registers; 7 x 4 keeps a sum on the stack): paired against 7 x 4 on the ResNet-18 / -50 layers of the
             * path, one thread 1.01-1.06x (8x8 and 4x4 inputs 1.04-1.06x), two 1.00-1.06x. Else 9 x 3. */
            s = (plait_conv_schedule){.tile_k = cvecs_in % 2 == 0 ? 2 : 3, .vthreads = 1, .unroll = 1, .pad_copy = 1,
                                      .split_k = plait_threads() > 1 || d->out_channels <= 128,
                                      .block_w = direct_max(1, direct_min(images, d->batch))};
            s.tile_w = direct_min(d->out_channels, s.tile_k == 2 ? 14 : 9);
            return s;
        }
        /* Stems whose whole patch fits the register file (3x3 over 3 channels: 27 elements): patch tiles over a
         * padded x, the patch split evenly (7 + 7 + 7 + 6 elements by 4 vectors) where row runs split each
         * kernel row's 9 into 7 + 2. CIFAR stem, batch 64, Xeon: 1.18x one thread, 1.25x two; 32 output channels
         * (14 x 2 tiles) 1.1x and 1.3x (2026-12-05). Not at 16 outputs, where the 27 x 1 tile waits on its loads
         * (one per FMA; 0.8x on one thread). */
        if (direct_isa_resolved() == PLAIT_ISA_AVX512 && direct_patch_weights_applies(d) && kvecs >= 2) {
            int patch = d->kernel_h * d->kernel_w * d->in_channels, tk = direct_min(kvecs, DIRECT_MAX_TILE_K);
            int tw = direct_patch_tile_width(patch, tk, plait_direct_max_tile(PLAIT_ISA_AUTO));
            if (direct_patch_tile_avx512(d->kernel_w * d->in_channels, 0, tw, tk)) {
                s = (plait_conv_schedule){.tile_w = tw, .tile_k = tk, .vthreads = 1, .unroll = 1, .pad_copy = 1,
                                          .loop_order = PLAIT_LOOP_K_OUTER};
                pixels = 512;
            }
        }
        direct_pixel_block(out_h(d), out_w(d), pixels, &s.block_h, &s.block_w);
        return s;
    }
    s.tile_k = direct_min(kvecs, avx2 ? 1 : 4);
    /* Four channel steps per loop pass instead of two: the AVX-512 tiles are short of issue slots, not of
     * FMA pipes (docs/kernels.md, stop 27). Paired in one process call by call (Xeon, batch 64): stride-2 3x3
     * 1.00-1.07x, 1x1 0.98-1.05x (geomean 1.015), one thread and two, 2026-12-06. AVX2 not measured. Not over
     * fewer than 16 channels (a stem's kernel row of 3 taps x 3 channels: 0.93-0.97x). */
    int reduction = direction == PLAIT_CONV_BACKWARD_DATA ? d->out_channels : d->in_channels;
    s.unroll = avx2 || reduction < 16 ? 1 : 2;
    int max_tile = plait_direct_max_tile(PLAIT_ISA_AUTO);
    s.tile_w = direct_min(max_tile / s.tile_k, DIRECT_MAX_TILE_W);
    int width = direction == PLAIT_CONV_BACKWARD_DATA ? d->in_w : out_w(d);
    if (direction == PLAIT_CONV_BACKWARD_DATA && d->stride_w > 1) width = direct_ceil_div(width, d->stride_w);
    if (s.tile_w > width) s.tile_w = width;
    if (s.tile_k == 4 && s.tile_w > 6 && width >= 6) s.tile_w = 6;
    /* Small images: the register tile spans the same row of two images, so each weight load feeds twice
     * as many pixels. */
    if (width <= 8 && d->batch >= 2 && !avx2) {
        s.tile_k = direct_min(kvecs, 3);
        s.tile_w = direct_min(width, 4);
        s.vthreads = 2;
        s.vthread_images = 1;
        /* 3 x 4 where four vectors divide the outputs and three leave a one- or two-vector tile: on 8-wide rows
         * (3 + 3 + 2 pixels) paired call by call, ResNet 1x1 layers at 8x8, one thread / two: 128 -> 256 stride 2
         * forward 1.02x / 1.03x, 1024 -> 256 and 256 -> 1024 forward and backward-data 1.01-1.02x; 4-wide rows
         * lose (0.90-0.92x: 3 + 1 pixels), and so does the stride-2 3x3 256 -> 256 forward (0.97x) */
        if (d->kernel_h == 1 && d->kernel_w == 1 && width == 8 && kvecs % 4 == 0 && kvecs % 3 != 0) {
            s.tile_k = 4;
            s.tile_w = 3;
        }
    }
    /* On narrow images border pixels are a large share: pad a copy so they run in full tiles too. */
    /* (backward-data of a 1x1 layer has no border either, strided or not: each stride phase has its one tap or
     * none. Copying dy was pure cost: stride 1, 1.14-1.19x without on 16x16 and 8x8 images; stride 2, 1.0-1.13x
     * on the ResNet shortcuts, 2026-12-05) */
    bool pointwise = d->kernel_h == 1 && d->kernel_w == 1;
    bool borders = d->pad_h > 0 || d->pad_w > 0 || (direction == PLAIT_CONV_BACKWARD_DATA && !pointwise);
    s.pad_copy = width <= 16 && borders;
    s.block_h = 4;
    s.block_k = 0;
    /* Weights larger than the core's L2: keep each thread on one K block across images (split_k) and cut C so
     * a tile's weights (taps x block_c x 16 x tile_k floats) stay in L2. Up to the L2's size the split costs
     * more than it saves: 1x1 layers with 1-2 MB of weights on the Xeon's 2 MB L2 ran 1.01-1.09x without it on
     * one thread, 1.03-1.16x on two, and 4-8 MB ones 0.91-0.94x (ResNet-50 CIFAR, batch 64, 2026-12-05; the
     * threshold was 512 KB, the L2 of the Zen 3 machine it was set on). */
    double weight_bytes = 4.0 * d->kernel_h * d->kernel_w * reduction * kvecs * DIRECT_LANES;
    double l2_bytes = (double)plait_cpu_features()->l2_bytes;
    /* Not for 3x3 layers over a padded copy, which then goes in windows (framework.c), each copied once rather
     * than once per K block: 16x16 and 8x8 stride-2 3x3 layers, forward and backward-data, ran 1.02-1.31x on two
     * threads (one: 0.94-1.16x), 2026-12-05. The strided 1x1 backward-data with 8 MB of weights kept it (one
     * thread 0.9x without). */
    bool windowed_3x3 = s.pad_copy && (d->kernel_h > 1 || d->kernel_w > 1);
    /* Unless a problem's weights pass 1.5 times the L2 (a stride phase's taps only, in backward-data): the 4.7 and
     * 9.4 MB of the 8x8 stride-2 layers came from L3 for every pair of images, 8 FMAs per weight vector loaded.
     * Split by K blocks of one tile: forward 1.17-1.23x one thread, 1.07-1.10x two; backward-data of 512 -> 512
     * 1.14x and 1.00x; 256 -> 512 (2.1 MB a phase) 0.97x and 0.89x, so not there; 16x16 layers 0.83-0.90x. */
    double problem_weights = weight_bytes;
    if (direction == PLAIT_CONV_BACKWARD_DATA)
        problem_weights = weight_bytes / (d->kernel_h * d->kernel_w) *
                          direct_ceil_div(d->kernel_h, d->stride_h) * direct_ceil_div(d->kernel_w, d->stride_w);
    /* Strided windowed layers whose weights (a phase's, in backward-data) fit the L2: four images as virtual
     * threads of two pixels each, in place. A 16-pixel phase row is then 8 whole tiles (6 + 6 + 4 before) and
     * no padded copy is made. The search found it (`plait tune`, ResNet-18's 64 -> 128 backward-data). Paired call
     * by call against the default before (batch 64, Xeon), forward / backward-data, one thread (two): 64 -> 128
     * at 32x32 1.14x / 1.19x (1.13x / 1.18x), 128 -> 128 at 32x32 1.13x / 1.13x (1.17x / 1.12x), 128 -> 256 at
     * 16x16 1.02x / 1.08x (1.02x / 1.09x); backward-data 256 -> 256 at 16x16 1.01x (1.03x), 256 -> 512 at 8x8
     * 1.03x (0.99x). With more weights it loses (forward 256 -> 512 at 8x8 0.71x, backward-data 512 -> 512
     * 0.94x), and on the 7x7 stem over 3 channels (forward 0.93x). */
    bool strided_windows = !avx2 && !pointwise && (d->stride_h > 1 || d->stride_w > 1) && d->batch >= 4 &&
                           d->in_channels >= 16;
    /* Rows of 4 pixels or fewer (8x8 inputs: forward outputs, or backward-data's phase rows, 3 inside the image
     * and 1 at its edge) in one-pixel tiles of 4 vectors on 4 images, every tile alike, in place, each thread on
     * K blocks of one tile across images (such a tile reads 4 weight vectors per 16 multiply-adds). Paired call by
     * call against the defaults before (2026-12-06): backward-data 256 -> 512 1.05x one thread, 1.06x two (in two
     * steps: the tile 1.027x / 1.033x, the K blocks 1.021x / 1.029x), 512 -> 512 1.089x; forward 256 -> 512
     * 1.046x / 1.052x (the padded copy and its two-tile split of a row gone), 128 -> 256 1.059x; but forward over
     * 512 channels 0.988x, which keeps the split below. Two threads: backward-data 512 -> 512 1.105x, forward
     * 128 -> 256 1.092x. 8-pixel phase rows 0.98x, 16 1.01x. */
    if (strided_windows && width <= 4 && kvecs >= 4 && (direction == PLAIT_CONV_BACKWARD_DATA || reduction <= 256))
        return (plait_conv_schedule){.tile_w = 1, .tile_k = 4, .vthreads = 4, .vthread_images = 1,
                                     .unroll = s.unroll, .block_h = 4, .split_k = 1, .block_k = 4};
    if (strided_windows && problem_weights <= l2_bytes)
        return (plait_conv_schedule){.tile_w = 2, .tile_k = direct_min(kvecs, kvecs % 3 == 1 ? 2 : 3), .vthreads = 4,
                                     .vthread_images = 1, .unroll = s.unroll, .block_h = 4};
    bool split = windowed_3x3 ? !avx2 && problem_weights > 1.5 * l2_bytes : weight_bytes > l2_bytes;
    if (split) {
        s.split_k = 1;
        s.block_k = s.tile_k;
    }
    if (split && !windowed_3x3) {
        int taps = d->kernel_h * d->kernel_w;
        int block_c = (int)(l2_bytes * 5 / 8 / (4 * taps * DIRECT_LANES * s.tile_k));
        block_c = block_c / 32 * 32;
        s.block_c = block_c >= 32 && block_c < reduction ? block_c : 0;
    }
    return s;
}

static bool fast_defaults = true;

void plait_conv_set_fast_defaults(bool enabled) { fast_defaults = enabled; }

/* On AVX2 the direct kernels hold 6 accumulators and run at about 60% of peak, while Winograd needs a
 * quarter of the multiplications and OpenBLAS's AVX2 GEMM reaches 70-85%. Measured over the CIFAR ResNet-20,
 * ResNet-18 and ResNet-50 layers (docs/kernels.md), the search picked Winograd on the 3x3 stride-1 layers
 * with 32 or more channels (1.2-4.4x the direct default) and im2col + BLAS on most other layers with 64 or
 * more (1.1-2x); for the 3-channel stem the direct kernels won. Except 1x1 layers
 * that sum over only 64 channels (forward and backward-data): OpenBLAS packs its operands for a reduction
 * too short to pay for it, and the direct 3x16 tile on two images ran 1.3-1.8x faster on one and two threads
 * (stride 1 and 2). On AVX-512 (28 accumulators) the direct kernels win everywhere except 3x3 stride-1 layers,
 * where Winograd's 7x4 tile ran 1.4-2.4x the direct default at 64+ channels. Since the transforms run on
 * whole vectors (2026-12-04, Xeon, one thread, batch 32) Winograd also wins at 32 channels (1.9x the direct
 * default on AVX-512, 1.6-2.5x on AVX2) and at 16 (1.2-1.7x, 1.25-1.85x). The default stops at 32: with the
 * 16-channel layers too, the loss curve of a small ResNet-20 left the im2col path's by 0.5-2% from the sixth
 * step (tests/test_train.c allows 0.2%); a tuning file can still pick Winograd there. im2col + BLAS is not an
 * AVX-512 default: it depends on OpenBLAS knowing the CPU, and Debian's 0.3.21 runs its SSE3 kernels on that
 * Xeon. Its products run on 6 x 4 tiles on AVX-512 since stop 27: 7 x 4's 28 sums and 4 weight vectors leave no
 * register for the broadcast, and 6 x 4 ran 1.01-1.09x on the CIFAR 3x3 layers in all three directions, one and
 * two threads (0.98x on 512 channels at 4x4 forward). */
plait_conv_schedule plait_conv_default_schedule(const plait_conv2d_desc *d, plait_conv_direction direction) {
    int narrow = d->in_channels < d->out_channels ? d->in_channels : d->out_channels;
    plait_isa isa = direct_isa_resolved();
    bool avx512 = isa == PLAIT_ISA_AVX512;
    if (!fast_defaults || d->groups != 1 || (isa != PLAIT_ISA_AVX2 && !avx512))
        return plait_conv_direct_schedule(d, direction);
    /* Backward-data of a stem (3 input channels): one vector of outputs per tile, summed over 16+ channels;
     * Winograd ran 1.3-1.7x the direct default on AVX-512 and 1.2-1.9x on AVX2 (16-64 output channels). */
    bool stem_backward_data = direction == PLAIT_CONV_BACKWARD_DATA && d->in_channels < 16 && d->out_channels >= 16;
    /* Products over 256+ channels unroll four channel steps (forward and backward-data, paired call by call:
     * 1.02-1.045x one thread, 1.01-1.04x two; 64-128 channels and backward-weights 0.98-1.01x, 2026-12-06). */
    bool long_sums = avx512 && narrow >= 256 && direction != PLAIT_CONV_BACKWARD_WEIGHTS;
    if ((narrow >= 32 || stem_backward_data) && direct_winograd_supports(d))
        return (plait_conv_schedule){.winograd = 1, .block_w = 64, .tile_w = avx512 && stem_backward_data ? 7 : 6,
                                     .tile_k = avx512 && !stem_backward_data ? 4 : 1, .vthreads = 1,
                                     .unroll = long_sums ? 2 : 1};
    if (isa == PLAIT_ISA_AVX2 && narrow >= 64) {
        int reduction = direction == PLAIT_CONV_BACKWARD_DATA ? d->out_channels : d->in_channels;
        bool pointwise = d->kernel_h == 1 && d->kernel_w == 1;
        /* Backward-data of a strided 1x1 writes one pixel in stride_h*stride_w and zeroes the rest:
         * single-pixel tiles over four images (the search's winner on the ResNet shortcuts) beat a GEMM
         * into a column buffer and its scatter. */
        if (pointwise && direction == PLAIT_CONV_BACKWARD_DATA && (d->stride_h > 1 || d->stride_w > 1))
            return (plait_conv_schedule){.tile_w = 1, .tile_k = 1, .vthreads = 4, .vthread_images = 1,
                                         .block_h = 4, .unroll = 1};
        if (pointwise && direction != PLAIT_CONV_BACKWARD_WEIGHTS && reduction < 128)
            return (plait_conv_schedule){.tile_w = 3, .tile_k = 1, .vthreads = 2, .vthread_images = 1,
                                         .block_k = 1, .split_k = 1, .loop_order = PLAIT_LOOP_ROWS_OUTER,
                                         .block_h = 2, .unroll = 1};
        return plait_conv_im2col_schedule();
    }
    return plait_conv_direct_schedule(d, direction);
}

plait_conv_schedule direct_resolve_schedule(const plait_conv2d_desc *d, plait_conv_direction direction,
                                            const plait_conv_schedule *s) {
    if (s && plait_conv_schedule_valid(d, direction, s)) return *s;
    return plait_conv_default_schedule(d, direction);
}

/* Floats of a zero-bordered copy of the convolution's input (x forward, dy backward-data, one stride phase
 * at a time): padding before is at most pad, after at most pad + kernel (generous bound). */
static size_t padded_input_floats(const plait_conv2d_desc *d, plait_conv_direction direction) {
    int grow_h = 2 * (d->pad_h + d->kernel_h) + 2, grow_w = 2 * (d->pad_w + d->kernel_w) + 2;
    if (direction == PLAIT_CONV_BACKWARD_DATA)
        return (size_t)d->batch * (size_t)(out_h(d) + grow_h) * (size_t)(out_w(d) + grow_w) * (size_t)d->out_channels;
    return (size_t)d->batch * (size_t)(d->in_h + grow_h) * (size_t)(d->in_w + grow_w) * (size_t)d->in_channels;
}

/* Packed weights first, then the padded input, each 64-byte aligned. */
static size_t packed_weight_floats(const plait_conv2d_desc *d, plait_conv_direction direction) {
    size_t floats = direction == PLAIT_CONV_BACKWARD_DATA
                        ? direct_packed_floats(d->in_channels, d->kernel_h, d->kernel_w, d->out_channels)
                        : direct_packed_floats(d->out_channels, d->kernel_h, d->kernel_w, d->in_channels);
    return (floats + 15) / 16 * 16;
}

/* What every direct and Winograd schedule of this direction needs. */
static size_t direct_schedules_workspace_bytes(const plait_conv2d_desc *d, plait_conv_direction direction) {
    if (is_depthwise(d)) return direct_depthwise_workspace_floats(d) * sizeof(float) + 64;
    size_t floats = direction == PLAIT_CONV_BACKWARD_WEIGHTS
                        ? (size_t)d->kernel_h * d->kernel_w * d->in_channels *
                              (size_t)(direct_ceil_div(d->out_channels, DIRECT_LANES) * DIRECT_LANES)
                        : packed_weight_floats(d, direction) + padded_input_floats(d, direction);
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS && direct_packed_weights_applies(d)) {
        size_t packed = direct_packed_weights_floats(d);
        if (packed > floats) floats = packed;
    }
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS && direct_phase_weights_applies(d)) {
        size_t phases = direct_phase_weights_floats(d);
        if (phases > floats) floats = phases;
    }
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS && direct_patch_weights_applies(d)) {
        size_t patch = direct_patch_weights_floats(d);
        if (patch > floats) floats = patch;
    }
    if (direct_winograd_supports(d)) {
        size_t wino = direct_winograd_workspace_floats(d, direction);
        if (wino > floats) floats = wino;
    }
    return floats * sizeof(float) + 64;
}

/* Every direct schedule's need and the default's (which may be im2col): callers choose the schedule later. */
size_t plait_direct_workspace_bytes(const plait_conv2d_desc *d, plait_conv_direction direction) {
    size_t direct_bytes = direct_schedules_workspace_bytes(d, direction);
    size_t default_bytes = plait_schedule_workspace_bytes(d, direction, NULL);
    return default_bytes > direct_bytes ? default_bytes : direct_bytes;
}

plait_conv_schedule plait_conv_im2col_schedule(void) {
    return (plait_conv_schedule){.im2col = 1, .tile_w = 1, .tile_k = 1, .vthreads = 1, .unroll = 1};
}

/* Sized for the schedule the kernels will run (an invalid one or NULL runs the default), so a tuned direct
 * schedule does not carry the column buffer of an im2col default. */
size_t plait_schedule_workspace_bytes(const plait_conv2d_desc *d, plait_conv_direction direction,
                                      const plait_conv_schedule *s) {
    if (direct_resolve_schedule(d, direction, s).im2col) return plait_conv2d_im2col_blas.workspace_bytes(d);
    return direct_schedules_workspace_bytes(d, direction);
}

/* A 1x1 stride-1 unpadded convolution reads and writes each image as one run of pixels, so it runs as one
 * row of H*W pixels: register tiles then cross row ends, and only the image's last pixels run in a narrower
 * tile (a 32-pixel row in 6-pixel tiles left a 2-pixel tile at a third of the speed every row). Not for
 * schedules whose sub-tiles are consecutive rows. */
static void pointwise_as_one_row(direct_problem *p, const plait_conv_schedule *s) {
    if (p->taps_h != 1 || p->taps_w != 1 || p->stride_h != 1 || p->stride_w != 1 || p->pad_h != 0 || p->pad_w != 0)
        return;
    if (s->vthreads > 1 && !s->vthread_images) return;
    if (p->in_h != p->out_h || p->in_w != p->out_w || p->y_pixel * p->out_w != p->y_row) return;
    p->in_w *= p->in_h;
    p->out_w = p->in_w;
    p->in_h = p->out_h = 1;
    p->y_row = p->y_image;
}

void plait_direct_forward(const plait_conv2d_desc *d, const plait_conv_schedule *schedule, const float *x,
                          const float *w, float *y, void *workspace) {
    if (is_depthwise(d)) {
        direct_depthwise_forward(d, schedule, x, w, y, workspace);
        return;
    }
    plait_conv_schedule s = direct_resolve_schedule(d, PLAIT_CONV_FORWARD, schedule);
    if (s.im2col) {
        plait_conv2d_im2col_blas.forward(d, x, w, y, workspace);
        return;
    }
    if (s.winograd) {
        direct_winograd_forward(d, &s, x, w, y, workspace);
        return;
    }
    float *packed = workspace;
    direct_pack_forward(w, d->out_channels, d->kernel_h, d->kernel_w, d->in_channels, packed);
    int oh = out_h(d), ow = out_w(d);
    direct_problem p = {
        .batch = d->batch, .x = x, .in_h = d->in_h, .in_w = d->in_w, .in_c = d->in_channels,
        .w_packed = packed, .taps_h = d->kernel_h, .taps_w = d->kernel_w, .out_c = d->out_channels,
        .stride_h = d->stride_h, .stride_w = d->stride_w, .pad_h = d->pad_h, .pad_w = d->pad_w,
        .y = y, .out_h = oh, .out_w = ow,
        .y_image = (ptrdiff_t)oh * ow * d->out_channels, .y_row = (ptrdiff_t)ow * d->out_channels,
        .y_pixel = d->out_channels,
    };
    pointwise_as_one_row(&p, &s);
    direct_run(&p, &s, packed + packed_weight_floats(d, PLAIT_CONV_FORWARD));
}

/* Packs w[k][r][s][c] for one phase as a forward convolution over dy: output channels c, input
 * channels k, taps flipped: [ceil(C/16)][th][tw][K][16]. Sixteen rows k of w at a time (in L1 together), each
 * tap's 16-channel pieces written as 16 consecutive lines: reading all K rows 9 KB apart per piece, as the layout's
 * order would, missed to L3 line by line (the pack was a sixth of the 256 -> 512 layer's backward-data at 8x8), and
 * one row at a time scattered its pieces over taps x C / 16 streams (4.7% of that layer, now 3.5%: 1.01x). */
static void pack_phase(const plait_conv2d_desc *d, const float *w, phase_taps th, phase_taps tw, float *packed) {
    const int K = d->out_channels, C = d->in_channels, R = d->kernel_h, S = d->kernel_w;
    const int cvecs = direct_ceil_div(C, DIRECT_LANES), full = C / DIRECT_LANES;
    const size_t piece_stride = (size_t)th.count * tw.count * K * DIRECT_LANES;
#pragma omp parallel for schedule(static)
    for (int k0 = 0; k0 < K; k0 += DIRECT_LANES)
        for (int a = 0; a < th.count; a++)
            for (int b = 0; b < tw.count; b++) {
                int r = th.first + d->stride_h * (th.count - 1 - a);
                int s = tw.first + d->stride_w * (tw.count - 1 - b);
                for (int cv = 0; cv < cvecs; cv++)
                    for (int k = k0; k < direct_min(K, k0 + DIRECT_LANES); k++) {
                        const float *from = w + (((size_t)k * R + r) * S + s) * C + cv * DIRECT_LANES;
                        float *to = packed + (((size_t)a * tw.count + b) * K + k) * DIRECT_LANES + cv * piece_stride;
                        if (cv < full) {
                            memcpy(to, from, DIRECT_LANES * sizeof(float));
                            continue;
                        }
                        for (int l = 0; l < DIRECT_LANES; l++) to[l] = cv * DIRECT_LANES + l < C ? from[l] : 0.0f;
                    }
            }
}

static bool phase_reached(int phase, int stride, int pad, int kernel, int size) {
    return phase_along(phase, stride, pad, kernel, size).count > 0;
}

/* Positions of dx that no tap reaches (a 1x1 kernel with stride 2: three pixels in four) get a zero
 * gradient. One pass over the rows on all threads: whole rows where no tap row reaches, single pixels
 * elsewhere; serial, per-pixel zeroing took as long as the reached quarter's GEMM. */
static void zero_untouched_phases(const plait_conv2d_desc *d, float *dx) {
    int sh = d->stride_h, sw = d->stride_w, C = d->in_channels;
    bool any_unreached = false;
    for (int ph = 0; ph < sh; ph++) any_unreached |= !phase_reached(ph, sh, d->pad_h, d->kernel_h, d->in_h);
    for (int pw = 0; pw < sw; pw++) any_unreached |= !phase_reached(pw, sw, d->pad_w, d->kernel_w, d->in_w);
    if (!any_unreached) return;
    long rows = (long)d->batch * d->in_h;
    size_t pixel = (size_t)C, row_floats = (size_t)d->in_w * C;
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (long row = 0; row < rows; row++) {
        float *dst = dx + (size_t)row * row_floats;
        if (!phase_reached((int)(row % d->in_h) % sh, sh, d->pad_h, d->kernel_h, d->in_h)) {
            memset(dst, 0, row_floats * sizeof(float));
            continue;
        }
        for (int j = 0; j < d->in_w; j++)
            if (!phase_reached(j % sw, sw, d->pad_w, d->kernel_w, d->in_w))
                memset(dst + (size_t)j * pixel, 0, pixel * sizeof(float));
    }
}

void plait_direct_backward_data(const plait_conv2d_desc *d, const plait_conv_schedule *schedule, const float *dy,
                                const float *w, float *dx, void *workspace) {
    if (is_depthwise(d)) {
        direct_depthwise_backward_data(d, schedule, dy, w, dx, workspace);
        return;
    }
    plait_conv_schedule s = direct_resolve_schedule(d, PLAIT_CONV_BACKWARD_DATA, schedule);
    if (s.im2col) {
        plait_conv2d_im2col_blas.backward_data(d, dy, w, dx, workspace);
        return;
    }
    if (s.winograd) {
        direct_winograd_backward_data(d, &s, dy, w, dx, workspace);
        return;
    }
    int oh = out_h(d), ow = out_w(d), C = d->in_channels;
    float *packed = workspace;
    /* A strided 1x1 on sizes the stride divides: every reached pixel has its unreached neighbours in the image,
     * and the tiles write their zeros while the sums run (stores that miss overlap the multiply-adds) */
    bool zeros_beside = d->kernel_h == 1 && d->kernel_w == 1 && d->pad_h == 0 && d->pad_w == 0 &&
                        d->stride_h * d->stride_w > 1 && d->stride_h * d->stride_w <= DIRECT_MAX_ZEROS + 1 &&
                        d->in_h % d->stride_h == 0 && d->in_w % d->stride_w == 0;
    if (!zeros_beside) zero_untouched_phases(d, dx);
    for (int ph = 0; ph < d->stride_h; ph++)
        for (int pw = 0; pw < d->stride_w; pw++) {
            phase_taps th = phase_along(ph, d->stride_h, d->pad_h, d->kernel_h, d->in_h);
            phase_taps tw = phase_along(pw, d->stride_w, d->pad_w, d->kernel_w, d->in_w);
            if (th.outputs == 0 || tw.outputs == 0 || th.count == 0 || tw.count == 0) continue;
            pack_phase(d, w, th, tw, packed);
            direct_problem p = {
                .batch = d->batch, .x = dy, .in_h = oh, .in_w = ow, .in_c = d->out_channels,
                .w_packed = packed, .taps_h = th.count, .taps_w = tw.count, .out_c = C,
                .stride_h = 1, .stride_w = 1, .pad_h = th.pad, .pad_w = tw.pad,
                .y = dx + ((size_t)ph * d->in_w + pw) * C, .out_h = th.outputs, .out_w = tw.outputs,
                .y_image = (ptrdiff_t)d->in_h * d->in_w * C, .y_row = (ptrdiff_t)d->stride_h * d->in_w * C,
                .y_pixel = (ptrdiff_t)d->stride_w * C,
            };
            for (int zh = 0; zh < d->stride_h && zeros_beside; zh++)
                for (int zw = 0; zw < d->stride_w; zw++)
                    if (zh || zw) p.zero_offset[p.zeros++] = ((ptrdiff_t)zh * d->in_w + zw) * C;
            pointwise_as_one_row(&p, &s);
            direct_run(&p, &s, packed + packed_weight_floats(d, PLAIT_CONV_BACKWARD_DATA));
        }
}

static bool kernel_supports(const plait_conv2d_desc *d) { return plait_direct_supports(d); }
static size_t kernel_workspace(const plait_conv2d_desc *d) {
    size_t most = 0;
    for (int dir = 0; dir < PLAIT_CONV_DIRECTIONS; dir++) {
        size_t b = plait_direct_workspace_bytes(d, (plait_conv_direction)dir);
        if (b > most) most = b;
    }
    return most;
}
static void kernel_forward(const plait_conv2d_desc *d, const float *x, const float *w, float *y, void *ws) {
    plait_direct_forward(d, NULL, x, w, y, ws);
}
static void kernel_backward_data(const plait_conv2d_desc *d, const float *dy, const float *w, float *dx, void *ws) {
    plait_direct_backward_data(d, NULL, dy, w, dx, ws);
}
static void kernel_backward_weights(const plait_conv2d_desc *d, const float *x, const float *dy, float *dw,
                                    void *ws) {
    plait_direct_backward_weights(d, NULL, x, dy, dw, ws);
}

const plait_conv2d_kernel plait_conv2d_direct = {
    .name = "direct",
    .supports = kernel_supports,
    .workspace_bytes = kernel_workspace,
    .forward = kernel_forward,
    .backward_data = kernel_backward_data,
    .backward_weights = kernel_backward_weights,
};
