/* Direct convolution kernels against the float64 reference (kernels/reference.h): every direction, standard and depthwise,
 * odd shapes, a sample of schedules from the search space, each instruction set forced; depthwise in every kernel,
 * stride and padding it supports. */
#include <stdlib.h>
#include <string.h>

#include "kernels/direct/direct.h"
#include "kernels/reference.h"
#include "plait/tune.h"
#include "testing.h"

static int ref_out(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

/* ---- checking one description under one schedule (NULL = default) ---- */

typedef struct sizes {
    size_t x, y, w;
} sizes;

static sizes sizes_of(const plait_conv2d_desc *d) {
    int oh = ref_out(d->in_h, d->kernel_h, d->stride_h, d->pad_h), ow = ref_out(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    sizes z = {(size_t)d->batch * d->in_h * d->in_w * d->in_channels, (size_t)d->batch * oh * ow * d->out_channels,
               (size_t)d->out_channels * d->kernel_h * d->kernel_w * (d->in_channels / d->groups)};
    return z;
}

static char last_label[200];

static void label(const plait_conv2d_desc *d, const plait_conv_schedule *s) {
    char text[100] = "default";
    if (s) plait_conv_schedule_format(s, text, sizeof text);
    snprintf(last_label, sizeof last_label, "%s n%d %dx%dx%d k%d %dx%d s%d p%d g%d [%s]",
             plait_isa_name(plait_direct_isa()), d->batch, d->in_h, d->in_w, d->in_channels, d->out_channels,
             d->kernel_h, d->kernel_w, d->stride_h, d->pad_h, d->groups, text);
}

static const double tolerance = 1e-4;

/* Checks one direction; returns the error so callers can report. */
static void check_direction(const plait_conv2d_desc *d, plait_conv_direction dir, const plait_conv_schedule *s,
                            unsigned long seed) {
    sizes z = sizes_of(d);
    float *x = malloc(z.x * sizeof(float)), *y = malloc(z.y * sizeof(float)), *w = malloc(z.w * sizeof(float));
    float *out = NULL;
    double *ref = NULL;
    void *ws = plait_alloc(plait_schedule_workspace_bytes(d, dir, s));
    testing_fill_uniform(x, z.x, seed);
    testing_fill_uniform(y, z.y, seed + 1);
    testing_fill_uniform(w, z.w, seed + 2);
    label(d, s);
    double error = 0;
    if (dir == PLAIT_CONV_FORWARD) {
        out = plait_alloc(z.y * sizeof(float)); /* 64-byte aligned, as the non-temporal stores need */
        ref = malloc(z.y * sizeof(double));
        for (size_t i = 0; i < z.y; i++) out[i] = 1e30f; /* must be overwritten */
        plait_direct_forward(d, s, x, w, out, ws);
        plait_reference_conv2d_forward(d, x, w, ref);
        error = testing_max_rel_error(out, ref, z.y, 1.0);
    } else if (dir == PLAIT_CONV_BACKWARD_DATA) {
        out = plait_alloc(z.x * sizeof(float));
        ref = malloc(z.x * sizeof(double));
        for (size_t i = 0; i < z.x; i++) out[i] = 1e30f;
        plait_direct_backward_data(d, s, y, w, out, ws);
        plait_reference_conv2d_backward_data(d, y, w, ref);
        error = testing_max_rel_error(out, ref, z.x, 1.0);
    } else {
        out = plait_alloc(z.w * sizeof(float));
        ref = malloc(z.w * sizeof(double));
        testing_fill_uniform(out, z.w, seed + 3); /* accumulated into */
        plait_reference_conv2d_backward_weights(d, x, y, ref);
        for (size_t i = 0; i < z.w; i++) ref[i] += out[i];
        plait_direct_backward_weights(d, s, x, y, out, ws);
        error = testing_max_rel_error(out, ref, z.w, 1.0);
    }
    /* Winograd's transforms add rounding: F(4x4, 3x3) loses about a decimal digit against direct sums */
    plait_conv_schedule ran = s ? *s : plait_conv_default_schedule(d, dir);
    double limit = ran.winograd ? 5 * tolerance : tolerance;
    CHECKF(error < limit, "%s %s: max relative error %.3g", plait_conv_direction_name(dir), last_label, error);
    free(x);
    free(y);
    free(w);
    plait_free(out);
    free(ref);
    plait_free(ws);
}

static void check_all_directions(const plait_conv2d_desc *d, unsigned long seed) {
    for (int dir = 0; dir < PLAIT_CONV_DIRECTIONS; dir++) check_direction(d, (plait_conv_direction)dir, NULL, seed);
}

/* ---- cases ---- */

static const plait_isa isas[] = {PLAIT_ISA_AVX512, PLAIT_ISA_AVX2, PLAIT_ISA_PORTABLE};

static plait_conv2d_desc random_desc(plait_rng *rng, bool depthwise) {
    static const int channels[] = {3, 17, 33}, sizes_hw[] = {7, 13}, kernels[] = {1, 3, 5, 7}, dw_kernels[] = {3, 5};
    static const int batches[] = {1, 5};
    plait_conv2d_desc d = {0};
    d.batch = batches[plait_rng_below(rng, 2)];
    d.in_h = sizes_hw[plait_rng_below(rng, 2)];
    d.in_w = plait_rng_below(rng, 3) == 0 ? sizes_hw[plait_rng_below(rng, 2)] : d.in_h;
    d.in_channels = channels[plait_rng_below(rng, 3)];
    d.out_channels = depthwise ? d.in_channels : channels[plait_rng_below(rng, 3)];
    d.kernel_h = d.kernel_w = depthwise ? dw_kernels[plait_rng_below(rng, 2)] : kernels[plait_rng_below(rng, 4)];
    d.stride_h = d.stride_w = 1 + (int)plait_rng_below(rng, 2);
    d.pad_h = d.pad_w = (int)plait_rng_below(rng, 3);
    d.groups = depthwise ? d.in_channels : 1;
    if (ref_out(d.in_h, d.kernel_h, d.stride_h, d.pad_h) < 1 || ref_out(d.in_w, d.kernel_w, d.stride_w, d.pad_w) < 1) {
        d.kernel_h = d.kernel_w = 3;
    }
    return d;
}

static void for_each_isa(void (*body)(void)) {
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (plait_direct_set_isa(isas[i]) != PLAIT_OK) {
            fprintf(stderr, "  (skipping %s: %s)\n", plait_isa_name(isas[i]), plait_last_error());
            continue;
        }
        body();
    }
    plait_direct_set_isa(PLAIT_ISA_AUTO);
}

static void fixed_shapes_body(void) {
    /* 3x3 and 1x1, stride 1 and 2, the layer kinds of ResNets, plus channel counts off the vector width. */
    const plait_conv2d_desc cases[] = {
        {2, 8, 8, 64, 64, 3, 3, 1, 1, 1, 1, 1},  {5, 9, 9, 32, 48, 3, 3, 2, 2, 1, 1, 1},
        {2, 7, 7, 33, 17, 1, 1, 1, 1, 0, 0, 1},  {1, 13, 13, 17, 33, 1, 1, 2, 2, 0, 0, 1},
        {1, 13, 11, 3, 16, 7, 7, 2, 2, 3, 3, 1}, {1, 7, 7, 17, 3, 1, 1, 2, 2, 2, 2, 1},
        {2, 7, 13, 32, 32, 3, 3, 1, 1, 1, 1, 32}, {1, 13, 13, 17, 17, 5, 5, 2, 2, 2, 2, 17},
        /* 64+ channels off the 3x3 stride-1 form, where the AVX2 default runs im2col + BLAS in its workspace:
         * the 128 -> 129 1x1 in forward and backward-weights (its backward-data runs single-pixel tiles over
         * four images), the 3x3 stride 2 in all three directions, the 64 -> 65 1x1 only in backward-weights
         * (it sums over under 128 channels in the other two) */
        {1, 7, 7, 128, 129, 1, 1, 2, 2, 0, 0, 1}, {2, 9, 9, 64, 67, 3, 3, 2, 2, 1, 1, 1},
        {1, 7, 7, 64, 65, 1, 1, 2, 2, 0, 0, 1},
        {2, 5, 7, 48, 32, 1, 1, 1, 1, 0, 0, 1},
        /* 1x1 summing over fewer than 128 channels: the AVX2 default is a direct tile on image pairs (3 images) */
        {3, 5, 7, 64, 80, 1, 1, 1, 1, 0, 0, 1},
        /* strided 1x1 backward-data's default over four images at a time: 5 images leave a group of one */
        {5, 7, 9, 64, 128, 1, 1, 2, 2, 0, 0, 1},
        /* strided 1x1 on sizes the stride divides: backward-data writes the unreached pixels from the tiles (with
         * a tail vector, and over four images with a group of one left) */
        {2, 8, 6, 33, 40, 1, 1, 2, 2, 0, 0, 1}, {5, 4, 8, 64, 128, 1, 1, 2, 2, 0, 0, 1},
        /* 1x1 backward-weights with ten pixel blocks (two per image, the second of 4 rows): on two threads each
         * takes every other block into sums of its own */
        {5, 13, 13, 17, 33, 1, 1, 1, 1, 0, 0, 1},
        /* the strided default of four images as sub-tiles: a batch of 4 + 2, odd sizes and channels */
        {6, 13, 11, 17, 33, 3, 3, 2, 2, 1, 1, 1}, {7, 11, 13, 33, 20, 3, 3, 2, 1, 2, 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_all_directions(&cases[i], 100 + i);
        if (cases[i].groups > 1) continue;
        /* the same with a zero-bordered input copy and two row sub-tiles */
        for (int dir = 0; dir < 2; dir++) {
            plait_conv_schedule s = plait_conv_direct_schedule(&cases[i], (plait_conv_direction)dir);
            s.pad_copy = 1;
            s.vthreads = 2;
            s.tile_w = (s.tile_w + 1) / 2;
            check_direction(&cases[i], (plait_conv_direction)dir, &s, 200 + i);
            /* sub-tiles on the same row of several images (a group of 4 with fewer images left) */
            s.vthread_images = 1;
            s.vthreads = 4;
            s.tile_w = 1;
            s.tile_k = 1;
            s.pad_copy = (int)i % 2;
            check_direction(&cases[i], (plait_conv_direction)dir, &s, 300 + i);
        }
        /* the im2col + BLAS schedule the search may pick, in every direction */
        const plait_conv_schedule im2col = plait_conv_im2col_schedule();
        for (int dir = 0; dir < PLAIT_CONV_DIRECTIONS; dir++)
            check_direction(&cases[i], (plait_conv_direction)dir, &im2col, 400 + i);
    }
    plait_conv_schedule im2col = plait_conv_im2col_schedule(), im2col_winograd = im2col;
    im2col_winograd.winograd = 1;
    im2col_winograd.block_w = 8;
    CHECK(!plait_conv_schedule_valid(&cases[0], PLAIT_CONV_FORWARD, &im2col_winograd));
    CHECK(!plait_conv_schedule_valid(&cases[6], PLAIT_CONV_FORWARD, &im2col)); /* depthwise */
}

static void fixed_shapes(void) { for_each_isa(fixed_shapes_body); }

static void random_shapes_body(void) {
    plait_rng rng;
    plait_rng_seed(&rng, 2024 + (unsigned)plait_direct_isa());
    for (int i = 0; i < 14; i++) {
        plait_conv2d_desc d = random_desc(&rng, i % 4 == 3);
        check_all_directions(&d, 500 + (unsigned long)i);
    }
}

static void random_shapes(void) { for_each_isa(random_shapes_body); }

/* Depthwise: every kernel (3x3, 5x5), stride (1, 2) and padding (0-2) on odd sizes and channel counts off
 * the vector width (3, 17, 33), plus shapes that reach the wide pixel tiles and their remainders (width 40),
 * several 128-channel blocks with a partial one (160), two vectors per tile (64), and odd row counts, so
 * forward row pairs and two-row backward-weights tiles leave a single row. */
static void depthwise_shapes_body(void) {
    static const int kernels[] = {3, 5}, sizes_hw[] = {7, 13}, channels[] = {3, 17, 33};
    unsigned long seed = 4000;
    for (int k = 0; k < 2; k++)
        for (int stride = 1; stride <= 2; stride++)
            for (int pad = 0; pad <= 2; pad++)
                for (int z = 0; z < 2; z++)
                    for (int c = 0; c < 3; c++) {
                        int hw = sizes_hw[z];
                        plait_conv2d_desc d = {(z + c) % 2 ? 5 : 1, hw, c == 1 ? 13 : hw, channels[c], channels[c],
                                               kernels[k], kernels[k], stride, stride, pad, pad, channels[c]};
                        if (ref_out(d.in_w, d.kernel_w, stride, pad) < 1) continue;
                        check_all_directions(&d, seed++);
                    }
    const plait_conv2d_desc wide[] = {
        {2, 9, 40, 17, 17, 3, 3, 1, 1, 1, 1, 17},  {1, 11, 40, 33, 33, 3, 3, 2, 2, 1, 1, 33},
        {1, 6, 40, 64, 64, 5, 5, 1, 1, 2, 2, 64},  {1, 7, 41, 64, 64, 5, 5, 2, 2, 2, 2, 64},
        {2, 7, 7, 160, 160, 3, 3, 1, 1, 1, 1, 160}, {1, 9, 9, 160, 160, 3, 3, 2, 2, 1, 1, 160},
        /* strides that differ along H and W (no row pairs, one-row backward-weights tiles), 24 channels (a
         * whole AVX2 vector past the last AVX-512 one), an even 5x5 layer, 96 channels on paired rows, 14-pixel
         * stride-2 rows (7 outputs: one tile the row), 14-pixel stride-1 rows (one AVX-512 tile the row) */
        {1, 9, 11, 33, 33, 3, 3, 1, 2, 1, 1, 33},  {2, 11, 9, 48, 48, 3, 3, 2, 1, 1, 1, 48},
        {2, 8, 8, 24, 24, 3, 3, 1, 1, 0, 0, 24},   {1, 10, 12, 48, 48, 5, 5, 1, 1, 2, 2, 48},
        {2, 12, 12, 96, 96, 3, 3, 1, 1, 1, 1, 96},  {2, 13, 14, 48, 48, 3, 3, 2, 2, 1, 1, 48},
        {1, 5, 14, 48, 48, 3, 3, 1, 1, 1, 1, 48},
    };
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++) check_all_directions(&wide[i], seed++);
}

/* Outputs of 8 MiB and more take non-temporal stores (and backward-data prefetches dy), stride 1 and 2, on
 * the vector paths (the portable one has no such stores), where input and output pass 3/4 of the L3: taken as
 * 8 MiB here, whatever this machine's (backward-data on one thread streams them whatever the L3). Inputs of
 * 8 MiB take the forward's row prefetch. Backward-weights has no output of that size; on inputs of 8 MiB it pulls
 * each next band into L2. Backward-data runs both column phases of these layers in one pass (272 channels: three
 * blocks, the last partial). */
static void depthwise_streaming(size_t first) {
    const plait_cpu saved = *plait_cpu_features();
    plait_cpu_set_caches(saved.l2_bytes, (size_t)8 << 20);
    const plait_conv2d_desc large[] = {
        {1, 64, 64, 512, 512, 3, 3, 1, 1, 1, 1, 512},
        {2, 64, 63, 272, 272, 3, 3, 2, 2, 1, 1, 272},
        {1, 128, 127, 160, 160, 3, 3, 2, 2, 1, 1, 160},
    };
    for (size_t i = first; i < sizeof large / sizeof large[0]; i++)
        for (int dir = 0; dir < 3; dir++) check_direction(&large[i], (plait_conv_direction)dir, NULL, 4900 + i);
    plait_cpu_set_caches(saved.l2_bytes, saved.l3_bytes);
}

/* Backward-weights with threads splitting channels (each thread 4 vectors or more, small images): uneven splits
 * and channels past the last vector, which the last thread takes. */
static void depthwise_channel_split(void) {
    const plait_conv2d_desc cases[] = {
        {3, 9, 11, 213, 213, 3, 3, 1, 1, 1, 1, 213},
        {2, 13, 13, 141, 141, 3, 3, 2, 2, 1, 1, 141},
    };
    for (int threads = 1; threads <= 3; threads++) {
        plait_set_threads(threads);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            check_direction(&cases[i], PLAIT_CONV_BACKWARD_WEIGHTS, NULL, 4950 + i);
    }
    plait_set_threads(1);
}

static void depthwise_shapes(void) {
    for_each_isa(depthwise_shapes_body);
    for_each_isa(depthwise_channel_split);
    const plait_isa vector_isas[] = {PLAIT_ISA_AVX512, PLAIT_ISA_AVX2};
    for (int i = 0; i < 2; i++)
        if (plait_direct_set_isa(vector_isas[i]) == PLAIT_OK) depthwise_streaming(0);
    plait_direct_set_isa(PLAIT_ISA_AUTO);
    plait_set_threads(2);
    depthwise_streaming(1);
    plait_set_threads(1);
}

/* Schedules sampled evenly from the space the search enumerates, on shapes whose blocks split channels,
 * rows and output channels unevenly. */
static void sampled_schedules_body(void) {
    const plait_conv2d_desc cases[] = {
        {1, 13, 13, 80, 33, 3, 3, 1, 1, 1, 1, 1},
        {1, 13, 13, 33, 70, 3, 3, 2, 2, 2, 2, 1},
        {5, 7, 7, 17, 36, 1, 1, 2, 2, 0, 0, 1},
        /* 1x1 stride 1: each image runs as one row of pixels; full vectors take the unmasked tiles */
        {3, 5, 7, 32, 48, 1, 1, 1, 1, 0, 0, 1},
    };
    enum { CAPACITY = 8192, SAMPLES = 6 };
    plait_conv_schedule *space = malloc(CAPACITY * sizeof *space);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int dir = 0; dir < PLAIT_CONV_DIRECTIONS; dir++) {
            int count = plait_conv_schedule_space(&cases[i], (plait_conv_direction)dir, space, CAPACITY);
            CHECKF(count > 1, "space of %zu %d has %d schedules", i, dir, count);
            if (count > CAPACITY) count = CAPACITY;
            for (int k = 0; k < SAMPLES && count > 0; k++) {
                const plait_conv_schedule *s = &space[(size_t)k * (size_t)count / SAMPLES];
                CHECK(plait_conv_schedule_valid(&cases[i], (plait_conv_direction)dir, s));
                check_direction(&cases[i], (plait_conv_direction)dir, s, 900 + i * 10 + (unsigned long)k);
            }
        }
    /* channel blocks that split C unevenly and accumulate into the output */
    plait_conv_schedule split = {.block_c = 32, .block_k = 1, .block_h = 3, .block_w = 5, .tile_w = 4, .tile_k = 1,
                                 .vthreads = 2, .split_k = 1, .loop_order = PLAIT_LOOP_ROWS_OUTER, .unroll = 2,
                                 .pad_copy = 1};
    check_direction(&cases[0], PLAIT_CONV_FORWARD, &split, 990);
    check_direction(&cases[0], PLAIT_CONV_BACKWARD_DATA, &split, 991);
    /* image sub-tiles over a padded copy, split by K blocks of one tile, four channel steps a pass (the AVX-512
     * default of stride-2 3x3 layers whose weights pass the L2), on an odd batch and a partial last vector */
    const plait_conv2d_desc strided = {5, 9, 9, 17, 70, 3, 3, 2, 2, 1, 1, 1};
    plait_conv_schedule split_images = {.tile_w = 4, .tile_k = 3, .vthreads = 2, .vthread_images = 1,
                                        .block_k = 3, .split_k = 1, .block_h = 4, .unroll = 2, .pad_copy = 1};
    check_direction(&strided, PLAIT_CONV_FORWARD, &split_images, 994);
    check_direction(&strided, PLAIT_CONV_BACKWARD_DATA, &split_images, 995);
    /* backward-weights with channel tiles fastest (split_k), uneven tiles on both channel axes */
    plait_conv_schedule dy_shared = {.tile_w = 7, .tile_k = 2, .vthreads = 1, .block_h = 4, .block_w = 2,
                                     .split_k = 1, .unroll = 1};
    check_direction(&cases[0], PLAIT_CONV_BACKWARD_WEIGHTS, &dy_shared, 992);
    check_direction(&cases[2], PLAIT_CONV_BACKWARD_WEIGHTS, &dy_shared, 993);
    free(space);
}

static void sampled_schedules(void) { for_each_isa(sampled_schedules_body); }

/* Every schedule of the depthwise space (single-row tiles, channel blocks, row pairs at stride 1 and forward at
 * stride 2, forward bands; rows per band), on layers with several and partial channel blocks, stride 1 and 2,
 * 3x3 and 5x5; and the fields it rejects. */
static void depthwise_schedules_body(void) {
    const plait_conv2d_desc cases[] = {
        {2, 9, 40, 160, 160, 3, 3, 1, 1, 1, 1, 160},
        {1, 11, 13, 96, 96, 3, 3, 2, 2, 1, 1, 96},
        {3, 7, 9, 33, 33, 5, 5, 1, 1, 2, 2, 33},
        /* rows exactly one tile wide (8: AVX-512 8-pixel single and paired tiles, AVX2 wide tiles; 14: AVX-512
         * wide tiles) */
        {2, 6, 8, 40, 40, 3, 3, 1, 1, 1, 1, 40},
        {1, 5, 14, 48, 48, 5, 5, 1, 1, 2, 2, 48},
        /* forward bands of the whole image taller than the jobs the driver builds at once (32 rows) */
        {1, 70, 5, 20, 20, 3, 3, 1, 1, 1, 1, 20},
        {1, 71, 6, 17, 17, 3, 3, 2, 2, 1, 1, 17},
    };
    enum { CAPACITY = 64 };
    plait_conv_schedule space[CAPACITY];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int dir = 0; dir < PLAIT_CONV_DIRECTIONS; dir++) {
            int count = plait_conv_schedule_space(&cases[i], (plait_conv_direction)dir, space, CAPACITY);
            CHECKF(count >= 1 && count <= CAPACITY, "depthwise space of %zu %d has %d schedules", i, dir, count);
            plait_conv_schedule fallback = plait_conv_direct_schedule(&cases[i], (plait_conv_direction)dir);
            CHECK(count >= 1 && memcmp(&space[0], &fallback, sizeof fallback) == 0);
            for (int k = 0; k < count && k < CAPACITY; k++) {
                CHECK(plait_conv_schedule_valid(&cases[i], (plait_conv_direction)dir, &space[k]));
                check_direction(&cases[i], (plait_conv_direction)dir, &space[k], 4100 + i * 100 + (unsigned long)k);
            }
        }
    plait_conv_schedule bad = plait_conv_direct_schedule(&cases[0], PLAIT_CONV_FORWARD);
    bad.block_c = 8;
    CHECK(!plait_conv_schedule_valid(&cases[0], PLAIT_CONV_FORWARD, &bad));
    bad = plait_conv_direct_schedule(&cases[1], PLAIT_CONV_BACKWARD_DATA);
    bad.vthreads = 2; /* pairs of dx rows need stride 1; forward pairs the same stride along H and W */
    CHECK(!plait_conv_schedule_valid(&cases[1], PLAIT_CONV_BACKWARD_DATA, &bad));
    plait_conv2d_desc uneven = cases[1];
    uneven.stride_w = 1;
    bad = plait_conv_direct_schedule(&uneven, PLAIT_CONV_FORWARD);
    bad.vthreads = 2;
    CHECK(!plait_conv_schedule_valid(&uneven, PLAIT_CONV_FORWARD, &bad));
    bad = plait_conv_direct_schedule(&cases[0], PLAIT_CONV_BACKWARD_DATA);
    bad.tile_k = 2;
    CHECK(!plait_conv_schedule_valid(&cases[0], PLAIT_CONV_BACKWARD_DATA, &bad));
    bad = plait_conv_direct_schedule(&cases[0], PLAIT_CONV_BACKWARD_DATA);
    bad.block_h = 4; /* bands are forward's, of single rows */
    CHECK(!plait_conv_schedule_valid(&cases[0], PLAIT_CONV_BACKWARD_DATA, &bad));
    bad = plait_conv_direct_schedule(&cases[0], PLAIT_CONV_FORWARD);
    bad.block_h = 4, bad.vthreads = 2;
    CHECK(!plait_conv_schedule_valid(&cases[0], PLAIT_CONV_FORWARD, &bad));
    bad = plait_conv_direct_schedule(&cases[0], PLAIT_CONV_BACKWARD_WEIGHTS);
    bad.block_h = 0;
    CHECK(!plait_conv_schedule_valid(&cases[0], PLAIT_CONV_BACKWARD_WEIGHTS, &bad));
}

static void depthwise_schedules(void) { for_each_isa(depthwise_schedules_body); }

/* Backward-weights in row runs (the taps of a kernel row merged with few channels): every run tile width,
 * so tiles start and end inside a tap and span two or three of them; borders, padding 0-3, stride 2, odd
 * sizes, and images narrower than the kernel row (every column then runs tap by tap). */
static void row_run_weights_body(void) {
    const plait_conv2d_desc cases[] = {
        {2, 9, 11, 3, 20, 3, 3, 1, 1, 1, 1, 1}, {1, 13, 11, 3, 16, 7, 7, 1, 1, 3, 3, 1},
        {5, 7, 7, 5, 33, 3, 3, 2, 1, 0, 0, 1},  {1, 7, 13, 3, 17, 5, 5, 1, 1, 2, 2, 1},
        {1, 6, 2, 3, 16, 3, 3, 1, 1, 1, 1, 1},  {2, 13, 13, 3, 20, 7, 7, 2, 2, 3, 3, 1},
        {1, 9, 11, 4, 16, 3, 3, 2, 2, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int run = cases[i].kernel_w * cases[i].in_channels;
        for (int tw = 1; tw <= run && tw <= DIRECT_MAX_TILE_W; tw++)
            for (int tk = 1; tk <= 2; tk++) {
                plait_conv_schedule s = {.tile_w = tw, .tile_k = tk, .vthreads = 1, .block_h = 3, .block_w = 2,
                                         .loop_order = PLAIT_LOOP_ROWS_OUTER, .unroll = 1};
                if (!plait_conv_schedule_valid(&cases[i], PLAIT_CONV_BACKWARD_WEIGHTS, &s)) continue;
                check_direction(&cases[i], PLAIT_CONV_BACKWARD_WEIGHTS, &s, 1200 + i * 40 + (unsigned long)tw);
            }
    }
}

static void row_run_weights(void) { for_each_isa(row_run_weights_body); }

/* Packed 1x1 backward-weights (tiles accumulate straight into dw): tails of both channel axes (the tile's last
 * vector must neither read nor write past a row of dw, which the next k tile owns), blocks that split rows and
 * images unevenly or hold whole images, dy in place or in panels, x in place when its channels fit one tile,
 * stride 2. */
static void packed_weights_body(void) {
    const plait_conv2d_desc cases[] = {
        {5, 7, 7, 33, 17, 1, 1, 1, 1, 0, 0, 1}, {1, 13, 13, 3, 40, 1, 1, 1, 1, 0, 0, 1},
        {5, 13, 7, 17, 36, 1, 1, 2, 2, 0, 0, 1}, {2, 7, 13, 70, 33, 1, 1, 2, 1, 0, 0, 1},
        {3, 5, 5, 64, 20, 1, 1, 1, 1, 0, 0, 1},
    };
    static const int widths[] = {1, 2, 5, 9, 16};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const plait_conv2d_desc *d = &cases[i];
        int oh = ref_out(d->in_h, 1, d->stride_h, 0);
        const int blocks[][2] = {{3, 2}, {oh, 1}, {oh, d->batch}, {1, 1}};
        for (int tk = 1; tk <= 4 && (tk - 1) * DIRECT_LANES < d->in_channels; tk++)
            for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
                for (int b = 0; b < 8; b++) { /* dy in place (split_k 0) or in panels (1) */
                    plait_conv_schedule s = {.tile_w = widths[w], .tile_k = tk, .vthreads = 1, .unroll = 1,
                                             .block_h = blocks[b / 2][0], .block_w = blocks[b / 2][1], .pad_copy = 1,
                                             .split_k = b % 2};
                    if (!plait_conv_schedule_valid(d, PLAIT_CONV_BACKWARD_WEIGHTS, &s)) continue;
                    check_direction(d, PLAIT_CONV_BACKWARD_WEIGHTS, &s, 1500 + i * 100 + w * 10 + (unsigned long)b);
                }
    }
}

static void packed_weights(void) { for_each_isa(packed_weights_body); }

/* Packing is 1x1 without padding only, in blocks the workspace holds. */
/* Patch tiles (backward-weights of stems over a padded x): the CIFAR stem's shape and its AVX-512 tiles (7 x 4
 * with the last tile 6 wide, 14 x 2, 27 x 1), widths without a specialization (portable), output channels off
 * the vector width, stride 2 on odd sizes, padding 0-2, blocks of rows and of whole images. */
static void patch_weights_body(void) {
    const plait_conv2d_desc cases[] = {
        {2, 8, 8, 3, 64, 3, 3, 1, 1, 1, 1, 1}, {5, 7, 9, 3, 17, 3, 3, 2, 2, 1, 1, 1},
        {1, 13, 13, 3, 40, 3, 3, 1, 1, 2, 2, 1}, {3, 9, 7, 1, 33, 5, 5, 2, 1, 0, 2, 1},
        {2, 7, 7, 2, 20, 3, 3, 1, 1, 0, 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const plait_conv2d_desc *d = &cases[i];
        int patch = d->kernel_h * d->kernel_w * d->in_channels, oh = ref_out(d->in_h, d->kernel_h, d->stride_h, d->pad_h);
        const int blocks[][2] = {{2, 1}, {oh, 1}, {oh, d->batch}};
        const int widths[] = {patch, 14, 7, 5, 1};
        CHECK(direct_patch_weights_applies(d));
        for (int tk = 1; tk <= 4; tk++)
            for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
                for (int b = 0; b < 3; b++) {
                    plait_conv_schedule s = {.tile_w = widths[w], .tile_k = tk, .vthreads = 1, .unroll = 1,
                                             .block_h = blocks[b][0], .block_w = blocks[b][1], .pad_copy = 1};
                    if (!plait_conv_schedule_valid(d, PLAIT_CONV_BACKWARD_WEIGHTS, &s)) continue;
                    check_direction(d, PLAIT_CONV_BACKWARD_WEIGHTS, &s, 2500 + i * 100 + w * 10 + (unsigned long)b);
                }
    }
    /* a patch past the register file is not a patch layer; a tile past it is not a schedule */
    const plait_conv2d_desc stem7 = {1, 13, 13, 3, 16, 7, 7, 2, 2, 3, 3, 1};
    CHECK(!direct_patch_weights_applies(&stem7));
    plait_conv_schedule wide = {.tile_w = 27, .tile_k = 2, .vthreads = 1, .unroll = 1, .pad_copy = 1};
    CHECK(!plait_conv_schedule_valid(&cases[0], PLAIT_CONV_BACKWARD_WEIGHTS, &wide));
}
static void patch_weights(void) { for_each_isa(patch_weights_body); }

/* Backward-weights per tap over stride-phase planes (tiles accumulate straight into dw): stride 1, 2, 3 and mixed,
 * odd sizes, padding 0-3 (rows no tap reaches, taps cut at every border), 3x3, 5x5 and 7x7 kernels, a padded 1x1,
 * odd channel counts on both axes, every tile_k, tiles wider and narrower than the output channels, blocks of one
 * image, of two (a short last block on odd batches) and of the whole batch. */
static void phase_weights_body(void) {
    const plait_conv2d_desc cases[] = {
        {2, 13, 13, 17, 33, 3, 3, 2, 2, 1, 1, 1}, {5, 7, 7, 33, 20, 3, 3, 1, 1, 1, 1, 1},
        {1, 13, 11, 5, 17, 5, 5, 2, 1, 2, 0, 1},  {3, 9, 9, 70, 16, 3, 3, 2, 2, 0, 0, 1},
        {2, 8, 8, 16, 40, 1, 1, 1, 1, 1, 1, 1},   {1, 13, 13, 3, 16, 7, 7, 2, 2, 3, 3, 1},
        {3, 11, 10, 20, 18, 3, 3, 3, 3, 1, 1, 1},
    };
    static const int widths[] = {1, 5, 7, 9, 16};
    int by_images = 0, cases_by_images = 0, split_ones = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const plait_conv2d_desc *d = &cases[i];
        CHECKF(direct_phase_weights_applies(d), "phase weights apply to case %zu", i);
        const int images[] = {1, 2, d->batch}, before = by_images;
        for (int tk = 1; tk <= 4; tk++)
            for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
                for (int b = 0; b < 3; b++)
                    for (int sk = 0; sk < 2; sk++) { /* threads apart by output-channel tiles, or by image blocks */
                        plait_conv_schedule s = {.tile_w = widths[w], .tile_k = tk, .vthreads = 1, .unroll = 1,
                                                 .block_w = images[b], .pad_copy = 1, .split_k = sk};
                        if (!plait_conv_schedule_valid(d, PLAIT_CONV_BACKWARD_WEIGHTS, &s)) continue;
                        by_images += direct_phase_weights_by_images(d, &s, plait_threads());
                        split_ones += sk;
                        check_direction(d, PLAIT_CONV_BACKWARD_WEIGHTS, &s,
                                        3500 + i * 100 + w * 10 + (unsigned long)b * 2 + (unsigned long)sk);
                    }
        cases_by_images += by_images > before;
    }
    /* every split_k = 1 schedule on one thread ran image blocks into dw; on two or more threads those of several
     * shapes ran image blocks apart with sums of their own (two threads: 149 schedules of all 7 shapes; three: 59
     * of 3, whose three sets of sums fit fewer workspaces) */
    printf("    %d threads: %d schedules of %d shapes by image blocks\n", plait_threads(), by_images, cases_by_images);
    CHECKF(plait_threads() == 1 ? by_images == split_ones : cases_by_images >= 3,
           "%d schedules of %d shapes by image blocks (%d with split_k = 1)", by_images, cases_by_images, split_ones);
    /* blocks are whole images, at least one; dy is always in panels */
    plait_conv_schedule s = {.tile_w = 3, .tile_k = 1, .vthreads = 1, .unroll = 1, .block_w = 1, .pad_copy = 1};
    CHECK(plait_conv_schedule_valid(&cases[0], PLAIT_CONV_BACKWARD_WEIGHTS, &s));
    s.block_h = 3;
    CHECK(!plait_conv_schedule_valid(&cases[0], PLAIT_CONV_BACKWARD_WEIGHTS, &s));
    s.block_h = 0, s.block_w = 0;
    CHECK(!plait_conv_schedule_valid(&cases[0], PLAIT_CONV_BACKWARD_WEIGHTS, &s));
    s.block_w = 1, s.split_k = 2;
    CHECK(!plait_conv_schedule_valid(&cases[0], PLAIT_CONV_BACKWARD_WEIGHTS, &s));
}
static void phase_weights(void) { for_each_isa(phase_weights_body); }

static void packed_weights_limits(void) {
    plait_conv_schedule s = {.tile_w = 4, .tile_k = 2, .vthreads = 1, .unroll = 1, .block_h = 1, .block_w = 1,
                             .pad_copy = 1};
    const plait_conv2d_desc pointwise = {2, 8, 8, 32, 32, 1, 1, 1, 1, 0, 0, 1};
    const plait_conv2d_desc padded = {2, 8, 8, 32, 32, 1, 1, 1, 1, 1, 1, 1};
    const plait_conv2d_desc three = {2, 8, 8, 32, 32, 3, 3, 1, 1, 1, 1, 1};
    const plait_conv2d_desc wide = {1, 1, 4096, 32, 32, 1, 1, 1, 1, 0, 0, 1};
    CHECK(plait_conv_schedule_valid(&pointwise, PLAIT_CONV_BACKWARD_WEIGHTS, &s));
    CHECK(!plait_conv_schedule_valid(&padded, PLAIT_CONV_BACKWARD_WEIGHTS, &s));
    CHECK(!plait_conv_schedule_valid(&three, PLAIT_CONV_BACKWARD_WEIGHTS, &s));
    CHECK(!plait_conv_schedule_valid(&wide, PLAIT_CONV_BACKWARD_WEIGHTS, &s)); /* one row is 4096 pixels */
    s.loop_order = PLAIT_LOOP_ROWS_OUTER;
    CHECK(!plait_conv_schedule_valid(&pointwise, PLAIT_CONV_BACKWARD_WEIGHTS, &s));
}

/* Winograd F(4x4, 3x3) on 3x3 stride-1 shapes with sizes that are not multiples of the 4x4 tile. */
static void winograd_body(void) {
    const plait_conv2d_desc cases[] = {
        {2, 13, 13, 17, 33, 3, 3, 1, 1, 1, 1, 1}, {1, 7, 9, 3, 16, 3, 3, 1, 1, 0, 0, 1},
        {5, 7, 7, 33, 17, 3, 3, 1, 1, 2, 2, 1},   {1, 8, 8, 64, 64, 3, 3, 1, 1, 1, 1, 1},
        {2, 16, 16, 16, 32, 3, 3, 1, 1, 1, 1, 1}, {3, 13, 11, 5, 16, 3, 3, 1, 1, 1, 1, 1},
    };
    /* backward-weights lengthens chunks to at least C*K/(C+K) tiles: the last case still runs 8 of them */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int dir = 0; dir < PLAIT_CONV_DIRECTIONS; dir++) {
            plait_conv_schedule s = plait_conv_direct_schedule(&cases[i], (plait_conv_direction)dir);
            s.winograd = 1;
            s.vthread_images = 0;
            s.block_w = i % 2 ? 5 : 64; /* chunks that split images and batches unevenly */
            s.tile_w = 3;
            s.tile_k = 2;
            s.vthreads = 1;
            CHECK(plait_conv_schedule_valid(&cases[i], (plait_conv_direction)dir, &s));
            check_direction(&cases[i], (plait_conv_direction)dir, &s, 700 + i);
        }
    plait_conv2d_desc strided = {1, 9, 9, 8, 8, 3, 3, 2, 2, 1, 1, 1};
    plait_conv_schedule s = {.winograd = 1, .block_w = 8, .tile_w = 2, .tile_k = 1, .vthreads = 1, .unroll = 1};
    CHECK(!plait_conv_schedule_valid(&strided, PLAIT_CONV_FORWARD, &s));
}

static void winograd(void) { for_each_isa(winograd_body); }

/* The same kernels split over two threads (static schedules, per-thread partial sums, unit ownership). */
static void two_threads(void) {
    plait_set_threads(2);
    fixed_shapes_body();
    winograd_body();
    sampled_schedules_body();
    packed_weights_body(); /* threads own ranges of k tiles, one of them none where there is one k tile */
    patch_weights_body();
    phase_weights_body(); /* image blocks apart: every other block, the last short on odd batches */
    depthwise_shapes_body();
    plait_set_threads(3); /* three sets of sums, blocks dealt unevenly */
    phase_weights_body();
    plait_set_threads(1);
}

static void tuning_file_round_trip(void) {
    plait_conv2d_desc d = {2, 8, 8, 16, 32, 3, 3, 1, 1, 1, 1, 1};
    plait_tune_result result;
    CHECK(plait_conv_tune(&d, PLAIT_CONV_FORWARD, 4, &result) == PLAIT_OK);
    /* the sweep's 4, then up to 4 near the fastest (this space has schedules one or two fields from any) */
    CHECKF(result.measured > 4 && result.measured <= 8 && result.candidates > 8, "measured %d of %d",
           result.measured, result.candidates);
    CHECK(result.best_seconds <= result.default_seconds && result.best_seconds > 0);
    /* the run-off keeps the default unless a challenger beat it by 3% there */
    bool replaced = memcmp(&result.best, &result.fallback, sizeof result.best) != 0;
    CHECKF(!replaced || result.best_seconds <= 0.97 * result.default_seconds, "best %g s against default %g s",
           result.best_seconds, result.default_seconds);
    CHECK(result.im2col_seconds > 0 && (replaced || result.best_seconds == result.default_seconds));
    CHECK(plait_conv_schedule_valid(&d, PLAIT_CONV_FORWARD, &result.best));
    CHECK(result.rank_correlation >= -1.0 && result.rank_correlation <= 1.0);

    /* valid on every ISA (AVX2 holds at most 6 accumulators per tile): the file keeps only valid ones */
    plait_conv_schedule odd = {.tile_w = 3, .tile_k = 2, .vthreads = 1, .block_h = 2, .block_c = 8, .unroll = 2};
    CHECK(plait_conv_schedule_valid(&d, PLAIT_CONV_BACKWARD_DATA, &odd));
    plait_tuning *t = plait_tuning_new();
    plait_tuning_put(t, &d, PLAIT_CONV_BACKWARD_DATA, &odd, 0.5);
    char path[512];
    snprintf(path, sizeof path, "%s/tuning.json", testing_temp_dir());
    CHECK(plait_tuning_save(t, path) == PLAIT_OK);
    plait_tuning_free(t);

    t = plait_tuning_new();
    CHECK(plait_tuning_load(t, path) == PLAIT_OK);
    plait_conv_schedule got;
    CHECK(plait_tuning_get(t, &d, PLAIT_CONV_BACKWARD_DATA, &got));
    CHECK(memcmp(&got, &odd, sizeof got) == 0);
    CHECK(!plait_tuning_get(t, &d, PLAIT_CONV_FORWARD, &got));
    plait_conv2d_desc other = d;
    other.batch = 3;
    CHECK(!plait_tuning_get(t, &other, PLAIT_CONV_BACKWARD_DATA, &got));

    /* a layer's plan takes the tuned schedule where there is one, the default elsewhere */
    plait_conv_plan plan;
    CHECK(plait_conv_plan_make(&plan, &d, t) == PLAIT_OK);
    CHECK(plan.tuned[PLAIT_CONV_BACKWARD_DATA] && !plan.tuned[PLAIT_CONV_FORWARD]);
    CHECK(plan.schedule[PLAIT_CONV_BACKWARD_DATA].tile_w == 3);
    plait_tuning_free(t);

    /* an im2col entry round-trips; an entry without "im2col" (files written before it) reads as direct */
    plait_conv_schedule im2col = plait_conv_im2col_schedule();
    t = plait_tuning_new();
    plait_tuning_put(t, &d, PLAIT_CONV_FORWARD, &im2col, 0.5);
    CHECK(plait_tuning_save(t, path) == PLAIT_OK);
    plait_tuning_free(t);
    t = plait_tuning_new();
    CHECK(plait_tuning_load(t, path) == PLAIT_OK);
    CHECK(plait_tuning_get(t, &d, PLAIT_CONV_FORWARD, &got) && got.im2col == 1);
    CHECK(plait_conv_plan_make(&plan, &d, t) == PLAIT_OK);
    CHECK(plan.workspace_bytes >= plait_schedule_workspace_bytes(&d, PLAIT_CONV_FORWARD, &im2col));
    plait_tuning_free(t);
    FILE *f = fopen(path, "rb");
    char text[4096] = "";
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[n] = 0;
    char *field = strstr(text, "\"im2col\"");
    CHECK(field != NULL);
    if (field) {
        field[1] = 'x'; /* the key becomes "xm2col", unknown to the reader */
        f = fopen(path, "wb");
        fputs(text, f);
        fclose(f);
        t = plait_tuning_new();
        CHECK(plait_tuning_load(t, path) == PLAIT_OK);
        CHECK(plait_tuning_get(t, &d, PLAIT_CONV_FORWARD, &got) && got.im2col == 0);
        plait_tuning_free(t);
    }

    /* tuning a model's layers: duplicates once, every direction, a line each; depthwise layers too */
    plait_conv2d_desc layers[3] = {d, d, {1, 6, 6, 16, 16, 3, 3, 1, 1, 1, 1, 16}};
    t = plait_tuning_new();
    char log_path[600];
    snprintf(log_path, sizeof log_path, "%s/tune.log", testing_temp_dir());
    FILE *log = fopen(log_path, "w+");
    CHECK(plait_tune_layers(layers, 3, 2, t, log) == PLAIT_OK);
    rewind(log);
    int lines = 0;
    for (int ch; (ch = fgetc(log)) != EOF;) lines += ch == '\n';
    fclose(log);
    CHECKF(lines == 6, "%d report lines", lines);
    for (int dir = 0; dir < PLAIT_CONV_DIRECTIONS; dir++)
        CHECK(plait_tuning_get(t, &d, (plait_conv_direction)dir, &got));
    for (int dir = 0; dir < PLAIT_CONV_DIRECTIONS; dir++)
        CHECK(plait_tuning_get(t, &layers[2], (plait_conv_direction)dir, &got) &&
              plait_conv_schedule_valid(&layers[2], (plait_conv_direction)dir, &got));
    plait_tuning_free(t);

    /* a missing file is an empty table; a malformed one is an error naming the file */
    t = plait_tuning_new();
    char missing[600];
    snprintf(missing, sizeof missing, "%s/none.json", testing_temp_dir());
    CHECK(plait_tuning_load(t, missing) == PLAIT_OK);
    const char *malformed = "{\"entries\": [{\"cpu\": 1}]}";
    CHECK(plait_write_file_atomic(path, malformed, strlen(malformed)) == PLAIT_OK);
    CHECK(plait_tuning_load(t, path) == PLAIT_ERROR);
    CHECK(strstr(plait_last_error(), "tuning.json") != NULL);
    plait_tuning_free(t);
}

int main(void) {
    testing_run("fixed_shapes", fixed_shapes);
    testing_run("random_shapes", random_shapes);
    testing_run("depthwise_shapes", depthwise_shapes);
    testing_run("sampled_schedules", sampled_schedules);
    testing_run("depthwise_schedules", depthwise_schedules);
    testing_run("row_run_weights", row_run_weights);
    testing_run("packed_weights", packed_weights);
    testing_run("packed_weights_limits", packed_weights_limits);
    testing_run("patch_weights", patch_weights);
    testing_run("phase_weights", phase_weights);
    testing_run("winograd", winograd);
    testing_run("two_threads", two_threads);
    testing_run("tuning_file_round_trip", tuning_file_round_trip);
    return testing_finish();
}
