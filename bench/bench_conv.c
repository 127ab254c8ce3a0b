/* bench_conv: per convolution shape and direction, GFLOP/s of plait's tuned and default direct kernels,
 * im2col + OpenBLAS, and oneDNN's best algorithm (direct or Winograd; reorders not timed), with the
 * fraction of the FMA peak this run measures itself.
 *
 *   bench_conv [--threads T] [--set cifar18|cifar50|stem|mbv2|mbv2pw|all] [--measure M] [--time S]
 *              [--rounds R] [--directions fdw] [--tuning FILE] [--ablation] [--only SHAPE]
 * (mbv2: MobileNetV2's depthwise layers at 224, batch 8, the set; mbv2pw: its 1x1 layers, which do most
 * of a MobileNetV2 step's work)
 *
 * GFLOP/s count 2 * every tap of every output (padding included, as papers count); "peak%" counts only
 * taps inside the image, which is the work a direct kernel really does. */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plait/tune.h"
#include "fma_peak.h"

#ifdef PLAIT_HAVE_DNNL
#include <dnnl.h>
#endif

typedef struct shape {
    const char *name;
    plait_conv2d_desc d;
} shape;

#define STD(name, n, hw, c, k, r, s, p) {name, {n, hw, hw, c, k, r, r, s, s, p, p, 1}}
#define DW(name, n, hw, c, r, s) {name, {n, hw, hw, c, c, r, r, s, s, (r) / 2, (r) / 2, c}}

static const shape cifar18[] = {
    STD("r18c.stem", 64, 32, 3, 64, 3, 1, 1),       STD("r18c.l1.3x3", 64, 32, 64, 64, 3, 1, 1),
    STD("r18c.l2.3x3s2", 64, 32, 64, 128, 3, 2, 1),  STD("r18c.l2.3x3", 64, 16, 128, 128, 3, 1, 1),
    STD("r18c.l2.1x1s2", 64, 32, 64, 128, 1, 2, 0),  STD("r18c.l3.3x3s2", 64, 16, 128, 256, 3, 2, 1),
    STD("r18c.l3.3x3", 64, 8, 256, 256, 3, 1, 1),    STD("r18c.l3.1x1s2", 64, 16, 128, 256, 1, 2, 0),
    STD("r18c.l4.3x3s2", 64, 8, 256, 512, 3, 2, 1),  STD("r18c.l4.3x3", 64, 4, 512, 512, 3, 1, 1),
    STD("r18c.l4.1x1s2", 64, 8, 256, 512, 1, 2, 0),
};
static const shape cifar50[] = {
    STD("r50c.stem", 64, 32, 3, 64, 3, 1, 1),        STD("r50c.l1.a", 64, 32, 64, 64, 1, 1, 0),
    STD("r50c.l1.b", 64, 32, 64, 64, 3, 1, 1),       STD("r50c.l1.c", 64, 32, 64, 256, 1, 1, 0),
    STD("r50c.l1.a2", 64, 32, 256, 64, 1, 1, 0),     STD("r50c.l2.a", 64, 32, 256, 128, 1, 1, 0),
    STD("r50c.l2.bs2", 64, 32, 128, 128, 3, 2, 1),   STD("r50c.l2.c", 64, 16, 128, 512, 1, 1, 0),
    STD("r50c.l2.down", 64, 32, 256, 512, 1, 2, 0),  STD("r50c.l2.a2", 64, 16, 512, 128, 1, 1, 0),
    STD("r50c.l2.b", 64, 16, 128, 128, 3, 1, 1),     STD("r50c.l3.a", 64, 16, 512, 256, 1, 1, 0),
    STD("r50c.l3.bs2", 64, 16, 256, 256, 3, 2, 1),   STD("r50c.l3.c", 64, 8, 256, 1024, 1, 1, 0),
    STD("r50c.l3.down", 64, 16, 512, 1024, 1, 2, 0), STD("r50c.l3.a2", 64, 8, 1024, 256, 1, 1, 0),
    STD("r50c.l3.b", 64, 8, 256, 256, 3, 1, 1),      STD("r50c.l4.a", 64, 8, 1024, 512, 1, 1, 0),
    STD("r50c.l4.bs2", 64, 8, 512, 512, 3, 2, 1),    STD("r50c.l4.c", 64, 4, 512, 2048, 1, 1, 0),
    STD("r50c.l4.down", 64, 8, 1024, 2048, 1, 2, 0), STD("r50c.l4.a2", 64, 4, 2048, 512, 1, 1, 0),
    STD("r50c.l4.b", 64, 4, 512, 512, 3, 1, 1),
};
static const shape stem[] = {
    STD("r18i112.conv1", 16, 112, 3, 64, 7, 2, 3),
    STD("r18i112.l1.3x3", 16, 28, 64, 64, 3, 1, 1),
};
static const shape mbv2[] = {
    DW("mbv2.dw32", 8, 112, 32, 3, 1),   DW("mbv2.dw96s2", 8, 112, 96, 3, 2), DW("mbv2.dw144", 8, 56, 144, 3, 1),
    DW("mbv2.dw144s2", 8, 56, 144, 3, 2), DW("mbv2.dw192", 8, 28, 192, 3, 1), DW("mbv2.dw192s2", 8, 28, 192, 3, 2),
    DW("mbv2.dw384", 8, 14, 384, 3, 1),  DW("mbv2.dw576", 8, 14, 576, 3, 1), DW("mbv2.dw576s2", 8, 14, 576, 3, 2),
    DW("mbv2.dw960", 8, 7, 960, 3, 1),
};
static const shape mbv2pw[] = {
    STD("mbv2.pw32-16", 8, 112, 32, 16, 1, 1, 0),   STD("mbv2.pw16-96", 8, 112, 16, 96, 1, 1, 0),
    STD("mbv2.pw96-24", 8, 56, 96, 24, 1, 1, 0),    STD("mbv2.pw24-144", 8, 56, 24, 144, 1, 1, 0),
    STD("mbv2.pw144-24", 8, 56, 144, 24, 1, 1, 0),  STD("mbv2.pw144-32", 8, 28, 144, 32, 1, 1, 0),
    STD("mbv2.pw32-192", 8, 28, 32, 192, 1, 1, 0),  STD("mbv2.pw192-32", 8, 28, 192, 32, 1, 1, 0),
    STD("mbv2.pw192-64", 8, 14, 192, 64, 1, 1, 0),  STD("mbv2.pw64-384", 8, 14, 64, 384, 1, 1, 0),
    STD("mbv2.pw384-64", 8, 14, 384, 64, 1, 1, 0),  STD("mbv2.pw384-96", 8, 14, 384, 96, 1, 1, 0),
    STD("mbv2.pw96-576", 8, 14, 96, 576, 1, 1, 0),  STD("mbv2.pw576-96", 8, 14, 576, 96, 1, 1, 0),
    STD("mbv2.pw576-160", 8, 7, 576, 160, 1, 1, 0), STD("mbv2.pw160-960", 8, 7, 160, 960, 1, 1, 0),
    STD("mbv2.pw960-160", 8, 7, 960, 160, 1, 1, 0), STD("mbv2.pw960-320", 8, 7, 960, 320, 1, 1, 0),
    STD("mbv2.pw320-1280", 8, 7, 320, 1280, 1, 1, 0),
};

static double seconds_budget = 0.1;
/* --rounds R: alternating rounds per shape and direction; more keep each method's best call through the slow
 * spells of a shared machine (docs/benchmarks.md) */
static int rounds = 3;

static int out_size(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

static double flops_padded(const plait_conv2d_desc *d) {
    return 2.0 * d->batch * out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h) *
           out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w) * d->out_channels * d->kernel_h * d->kernel_w *
           (d->in_channels / d->groups);
}

/* Taps inside the image only, per axis: the number of (output, tap) pairs that land inside. */
static double inside_pairs(int in, int k, int s, int p) {
    double pairs = 0;
    int outs = out_size(in, k, s, p);
    for (int o = 0; o < outs; o++)
        for (int t = 0; t < k; t++) pairs += o * s - p + t >= 0 && o * s - p + t < in;
    return pairs;
}
static double flops_inside(const plait_conv2d_desc *d) {
    return 2.0 * d->batch * inside_pairs(d->in_h, d->kernel_h, d->stride_h, d->pad_h) *
           inside_pairs(d->in_w, d->kernel_w, d->stride_w, d->pad_w) * d->out_channels * (d->in_channels / d->groups);
}

/* ---- FMA peak ---- */

/* GFLOP/s of all threads together, best of several short runs. */
static double measure_peak(int threads) {
    bool avx512 = plait_direct_isa() == PLAIT_ISA_AVX512;
    long iterations = 4000000;
    double flops_per_iteration = fma_flops_per_iteration(avx512);
    double best = 0;
    volatile float sink = 0;
    for (int rep = 0; rep < 7; rep++) {
        double start = plait_now();
#pragma omp parallel num_threads(threads)
        {
            float r = fma_loop(avx512, iterations);
#pragma omp atomic
            sink += r;
        }
        double rate = flops_per_iteration * iterations * threads / (plait_now() - start);
        if (rate > best) best = rate;
    }
    (void)sink;
    return best * 1e-9;
}

/* ---- timing ---- */

typedef void (*run_fn)(void *context);

static double best_time(run_fn fn, void *context) {
    fn(context); /* warm-up */
    double best = 1e30, spent = 0;
    for (int i = 0; i < 20 && (i < 2 || spent < seconds_budget); i++) {
        double start = plait_now();
        fn(context);
        double t = plait_now() - start;
        spent += t;
        if (t < best) best = t;
    }
    return best;
}

typedef struct plait_run {
    const plait_conv2d_desc *d;
    plait_conv_direction direction;
    const plait_conv_schedule *schedule; /* NULL for the im2col kernel */
    bool im2col;
    float *x, *y, *w;
    void *workspace;
} plait_run;

static void run_plait(void *context) {
    plait_run *r = context;
    if (r->im2col) {
        const plait_conv2d_kernel *k = &plait_conv2d_im2col_blas;
        if (r->direction == PLAIT_CONV_FORWARD) k->forward(r->d, r->x, r->w, r->y, r->workspace);
        if (r->direction == PLAIT_CONV_BACKWARD_DATA) k->backward_data(r->d, r->y, r->w, r->x, r->workspace);
        if (r->direction == PLAIT_CONV_BACKWARD_WEIGHTS) k->backward_weights(r->d, r->x, r->y, r->w, r->workspace);
        return;
    }
    if (r->direction == PLAIT_CONV_FORWARD) plait_direct_forward(r->d, r->schedule, r->x, r->w, r->y, r->workspace);
    if (r->direction == PLAIT_CONV_BACKWARD_DATA)
        plait_direct_backward_data(r->d, r->schedule, r->y, r->w, r->x, r->workspace);
    if (r->direction == PLAIT_CONV_BACKWARD_WEIGHTS)
        plait_direct_backward_weights(r->d, r->schedule, r->x, r->y, r->w, r->workspace);
}

/* ---- oneDNN ---- */

#ifdef PLAIT_HAVE_DNNL
typedef struct dnnl_run {
    dnnl_primitive_t primitive;
    dnnl_stream_t stream;
    dnnl_exec_arg_t args[4];
    int nargs;
} dnnl_run;

static void run_dnnl(void *context) {
    dnnl_run *r = context;
    dnnl_primitive_execute(r->primitive, r->stream, r->nargs, r->args);
    dnnl_stream_wait(r->stream);
}

static dnnl_memory_t make_memory(dnnl_engine_t engine, const dnnl_memory_desc_t *md) {
    dnnl_memory_t m = NULL;
    if (dnnl_memory_create(&m, md, engine, DNNL_MEMORY_ALLOCATE) != dnnl_success) return NULL;
    void *data = NULL;
    dnnl_memory_get_data_handle(m, &data);
    size_t floats = dnnl_memory_desc_get_size(md) / sizeof(float);
    for (size_t i = 0; i < floats; i++) ((float *)data)[i] = (float)(i % 13) * 0.01f;
    return m;
}

/* Seconds of oneDNN's primitive for one algorithm; 0 when oneDNN has no implementation for it. */
static double dnnl_seconds(const plait_conv2d_desc *d, plait_conv_direction direction, dnnl_alg_kind_t algorithm,
                           char *impl, size_t impl_size) {
    static dnnl_engine_t engine;
    static dnnl_stream_t stream;
    if (!engine) {
        dnnl_engine_create(&engine, dnnl_cpu, 0);
        dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
    }
    int oh = out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h), ow = out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    dnnl_dims_t src_dims = {d->batch, d->in_channels, d->in_h, d->in_w};
    dnnl_dims_t dst_dims = {d->batch, d->out_channels, oh, ow};
    dnnl_dims_t strides = {d->stride_h, d->stride_w}, pad_l = {d->pad_h, d->pad_w};
    dnnl_dims_t pad_r = {(oh - 1) * d->stride_h + d->kernel_h - d->in_h - d->pad_h,
                         (ow - 1) * d->stride_w + d->kernel_w - d->in_w - d->pad_w};
    dnnl_memory_desc_t src, dst, wei;
    dnnl_memory_desc_init_by_tag(&src, 4, src_dims, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&dst, 4, dst_dims, dnnl_f32, dnnl_format_tag_any);
    if (d->groups > 1) {
        dnnl_dims_t wd = {d->groups, d->out_channels / d->groups, d->in_channels / d->groups, d->kernel_h, d->kernel_w};
        dnnl_memory_desc_init_by_tag(&wei, 5, wd, dnnl_f32, dnnl_format_tag_any);
    } else {
        dnnl_dims_t wd = {d->out_channels, d->in_channels, d->kernel_h, d->kernel_w};
        dnnl_memory_desc_init_by_tag(&wei, 4, wd, dnnl_f32, dnnl_format_tag_any);
    }
    dnnl_convolution_desc_t fwd_desc, bwd_desc;
    dnnl_primitive_desc_t fwd_pd = NULL, pd = NULL;
    if (dnnl_convolution_forward_desc_init(&fwd_desc, dnnl_forward_training, algorithm, &src, &wei, NULL, &dst,
                                           strides, pad_l, pad_r) != dnnl_success ||
        dnnl_primitive_desc_create(&fwd_pd, &fwd_desc, NULL, engine, NULL) != dnnl_success)
        return 0;
    if (direction == PLAIT_CONV_FORWARD) {
        pd = fwd_pd;
    } else {
        dnnl_status_t status =
            direction == PLAIT_CONV_BACKWARD_DATA
                ? dnnl_convolution_backward_data_desc_init(&bwd_desc, algorithm, &src, &wei, &dst, strides, pad_l, pad_r)
                : dnnl_convolution_backward_weights_desc_init(&bwd_desc, algorithm, &src, &wei, NULL, &dst, strides,
                                                              pad_l, pad_r);
        if (status != dnnl_success || dnnl_primitive_desc_create(&pd, &bwd_desc, NULL, engine, fwd_pd) != dnnl_success) {
            dnnl_primitive_desc_destroy(fwd_pd);
            return 0;
        }
    }
    const char *name = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name);
    snprintf(impl, impl_size, "%s", name ? name : "?");
    dnnl_run r = {.stream = stream, .nargs = 3};
    dnnl_memory_t memories[3];
    if (direction == PLAIT_CONV_FORWARD) {
        memories[0] = make_memory(engine, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0));
        memories[1] = make_memory(engine, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0));
        memories[2] = make_memory(engine, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0));
        r.args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, memories[0]};
        r.args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, memories[1]};
        r.args[2] = (dnnl_exec_arg_t){DNNL_ARG_DST, memories[2]};
    } else if (direction == PLAIT_CONV_BACKWARD_DATA) {
        memories[0] = make_memory(engine, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_src_md, 0));
        memories[1] = make_memory(engine, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0));
        memories[2] = make_memory(engine, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0));
        r.args[0] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SRC, memories[0]};
        r.args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, memories[1]};
        r.args[2] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, memories[2]};
    } else {
        memories[0] = make_memory(engine, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0));
        memories[1] = make_memory(engine, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_weights_md, 0));
        memories[2] = make_memory(engine, dnnl_primitive_desc_query_md(pd, dnnl_query_diff_dst_md, 0));
        r.args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, memories[0]};
        r.args[1] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_WEIGHTS, memories[1]};
        r.args[2] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, memories[2]};
    }
    double seconds = 0;
    if (memories[0] && memories[1] && memories[2] && dnnl_primitive_create(&r.primitive, pd) == dnnl_success) {
        seconds = best_time(run_dnnl, &r);
        dnnl_primitive_destroy(r.primitive);
    }
    for (int i = 0; i < 3; i++)
        if (memories[i]) dnnl_memory_destroy(memories[i]);
    if (pd != fwd_pd) dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_desc_destroy(fwd_pd);
    return seconds;
}
#endif

/* ---- ablation: the partition's steps, as the TVM depthwise work reported them ---- */

/* No partition: one dot product per output over (r, s, c), threads over output rows. */
static void naive_forward(const plait_conv2d_desc *d, const float *x, const float *w, float *y) {
    int oh = out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h), ow = out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    int C = d->in_channels, K = d->out_channels;
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (long row = 0; row < (long)d->batch * oh; row++) {
        int n = (int)(row / oh), i = (int)(row % oh);
        for (int j = 0; j < ow; j++)
            for (int k = 0; k < K; k++) {
                float sum = 0;
                for (int r = 0; r < d->kernel_h; r++) {
                    int ih = i * d->stride_h - d->pad_h + r;
                    if (ih < 0 || ih >= d->in_h) continue;
                    for (int q = 0; q < d->kernel_w; q++) {
                        int iw = j * d->stride_w - d->pad_w + q;
                        if (iw < 0 || iw >= d->in_w) continue;
                        const float *xp = x + (((size_t)n * d->in_h + ih) * d->in_w + iw) * C;
                        const float *wp = w + (((size_t)k * d->kernel_h + r) * d->kernel_w + q) * C;
                        for (int c = 0; c < C; c++) sum += xp[c] * wp[c];
                    }
                }
                y[((size_t)row * ow + j) * K + k] = sum;
            }
    }
}

typedef struct naive_run {
    const plait_conv2d_desc *d;
    float *x, *y, *w;
} naive_run;
static void run_naive(void *context) {
    naive_run *r = context;
    naive_forward(r->d, r->x, r->w, r->y);
}

static void ablation_shape(const shape *sh, int measure) {
    const plait_conv2d_desc *d = &sh->d;
    if (d->groups > 1) return;
    int oh = out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h), ow = out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    size_t nx = (size_t)d->batch * d->in_h * d->in_w * d->in_channels, ny = (size_t)d->batch * oh * ow * d->out_channels;
    size_t nw = (size_t)d->out_channels * d->kernel_h * d->kernel_w * d->in_channels;
    float *x = plait_alloc(nx * 4), *y = plait_alloc(ny * 4), *w = plait_alloc(nw * 4);
    void *workspace = plait_alloc(plait_conv2d_direct.workspace_bytes(d));
    for (size_t i = 0; i < nx; i++) x[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < nw; i++) w[i] = (float)(i % 7) * 0.01f;
    double gflop = flops_padded(d) * 1e-9;
    naive_run nr = {d, x, y, w};
    double t_naive = best_time(run_naive, &nr);
    plait_conv_schedule level1 = plait_conv_direct_schedule(d, PLAIT_CONV_FORWARD);
    plait_conv_schedule level2 = level1, vthreads = level1;
    level1.tile_w = level1.tile_k = 1;
    level1.block_k = 0;
    /* the same register tile as two interleaved sub-tiles on consecutive rows */
    if (vthreads.tile_w >= 2 && oh >= 2) {
        vthreads.vthreads = 2;
        vthreads.tile_w = (vthreads.tile_w + 1) / 2;
        vthreads.block_h = 2 * ((vthreads.block_h + 1) / 2);
    }
    plait_run r = {d, PLAIT_CONV_FORWARD, &level1, false, x, y, w, workspace};
    double t_level1 = best_time(run_plait, &r);
    r.schedule = &level2;
    double t_level2 = best_time(run_plait, &r);
    r.schedule = &vthreads;
    double t_vthreads = best_time(run_plait, &r);
    plait_tune_result tuned;
    plait_conv_tune(d, PLAIT_CONV_FORWARD, measure, &tuned);
    r.schedule = &tuned.best;
    double t_search = best_time(run_plait, &r);
    printf("| %-16s | %7.1f | %7.1f | %7.1f | %7.1f | %7.1f |\n", sh->name, gflop / t_naive, gflop / t_level1,
           gflop / t_level2, gflop / t_vthreads, gflop / t_search);
    fflush(stdout);
    plait_free(x);
    plait_free(y);
    plait_free(w);
    plait_free(workspace);
}

/* ---- the memory bound of depthwise layers ----
 * A depthwise layer does 9 or 25 FMAs per element it reads: far too few to hide memory. Its least traffic is
 * reading its inputs once and writing its output once; this pass does exactly that (a vector sum over the
 * inputs, then stores to the output, plain or non-temporal, whichever runs faster), so its time bounds any
 * kernel's on this machine and in this cache state, oneDNN's and ours alike. */
typedef struct touch_run {
    const float *in[2];
    size_t in_floats[2];
    float *out;
    size_t out_floats;
    bool stream;
    float sink;
} touch_run;

__attribute__((target("avx512f"))) static void touch_avx512(touch_run *r) {
    float total = 0;
    for (int i = 0; i < 2; i++) {
#pragma omp parallel num_threads(plait_threads()) reduction(+ : total)
        {
            __m512 sum = _mm512_setzero_ps();
#pragma omp for schedule(static) nowait
            for (size_t j = 0; j < r->in_floats[i] / 64 * 64; j += 64) {
                __m512 a = _mm512_add_ps(_mm512_load_ps(r->in[i] + j), _mm512_load_ps(r->in[i] + j + 16));
                __m512 b = _mm512_add_ps(_mm512_load_ps(r->in[i] + j + 32), _mm512_load_ps(r->in[i] + j + 48));
                sum = _mm512_add_ps(sum, _mm512_add_ps(a, b));
            }
            total += _mm512_reduce_add_ps(sum);
        }
    }
    r->sink = total;
    if (!r->out) return;
    __m512 v = _mm512_set1_ps(r->sink * 1e-30f);
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (size_t j = 0; j < r->out_floats / 16 * 16; j += 16) {
        if (r->stream)
            _mm512_stream_ps(r->out + j, v);
        else
            _mm512_store_ps(r->out + j, v);
    }
    _mm_sfence();
}

static void run_touch(void *context) { touch_avx512(context); }

/* Seconds of the bound for a depthwise direction (0 without AVX-512). */
static double touch_seconds(plait_conv_direction dir, float *x, size_t nx, float *y, size_t ny) {
    if (!__builtin_cpu_supports("avx512f")) return 0;
    touch_run r = {.in = {dir == PLAIT_CONV_BACKWARD_DATA ? y : x, dir == PLAIT_CONV_BACKWARD_WEIGHTS ? y : NULL},
                   .in_floats = {dir == PLAIT_CONV_BACKWARD_DATA ? ny : nx, dir == PLAIT_CONV_BACKWARD_WEIGHTS ? ny : 0}};
    float *scratch = NULL;
    if (dir != PLAIT_CONV_BACKWARD_WEIGHTS) { /* a buffer of its own: the inputs stay as the kernels see them */
        r.out_floats = dir == PLAIT_CONV_FORWARD ? ny : nx;
        r.out = scratch = plait_alloc(r.out_floats * sizeof(float));
        memset(scratch, 0, r.out_floats * sizeof(float));
    }
    double best = best_time(run_touch, &r);
    r.stream = true;
    if (r.out) best = fmin(best, best_time(run_touch, &r));
    plait_free(scratch);
    return best;
}

static double bound_log;
static int bound_count;

/* ---- main ---- */

static double geomean_log[3];
static int geomean_count[3];

static void bench_shape(const shape *sh, const char *directions, int measure, plait_tuning *tuning, double peak) {
    const plait_conv2d_desc *d = &sh->d;
    int oh = out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h), ow = out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    size_t nx = (size_t)d->batch * d->in_h * d->in_w * d->in_channels, ny = (size_t)d->batch * oh * ow * d->out_channels;
    size_t nw = (size_t)d->out_channels * d->kernel_h * d->kernel_w * (d->in_channels / d->groups);
    size_t ws = plait_conv2d_direct.workspace_bytes(d);
    size_t ws_im2col = plait_conv2d_im2col_blas.workspace_bytes(d);
    if (ws_im2col > ws) ws = ws_im2col;
    float *x = plait_alloc(nx * 4), *y = plait_alloc(ny * 4), *w = plait_alloc(nw * 4);
    void *workspace = plait_alloc(ws);
    for (size_t i = 0; i < nx; i++) x[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < ny; i++) y[i] = (float)(i % 11) * 0.01f;
    for (size_t i = 0; i < nw; i++) w[i] = (float)(i % 7) * 0.01f;
    double padded = flops_padded(d) * 1e-9, inside = flops_inside(d) * 1e-9;
    for (int dir = 0; dir < PLAIT_CONV_DIRECTIONS; dir++) {
        if (!strchr(directions, "fdw"[dir])) continue;
        plait_run r = {d, (plait_conv_direction)dir, NULL, false, x, y, w, workspace};
        plait_tune_result tuned;
        plait_conv_tune(d, (plait_conv_direction)dir, measure, &tuned);
        if (tuning) plait_tuning_put(tuning, d, (plait_conv_direction)dir, &tuned.best, tuned.best_seconds);
        plait_conv_schedule fallback = plait_conv_default_schedule(d, (plait_conv_direction)dir);
        /* Methods are measured in alternating rounds and each keeps its best, so a burst of load from other
         * processes on this shared machine does not decide a comparison. */
        double t_default = 1e30, t_tuned = 1e30, t_im2col = 1e30, t_dnnl = 0, t_touch = 1e30;
        char best_impl[64] = "-";
        for (int round = 0; round < rounds; round++) {
            r.im2col = false;
            r.schedule = &fallback;
            t_default = fmin(t_default, best_time(run_plait, &r));
            r.schedule = &tuned.best;
            t_tuned = fmin(t_tuned, best_time(run_plait, &r));
            /* im2col runs one GEMM per group, hundreds of times slower on depthwise layers: not worth the wait */
            r.im2col = true;
            if (d->groups == 1) t_im2col = fmin(t_im2col, best_time(run_plait, &r));
            if (d->groups > 1) t_touch = fmin(t_touch, touch_seconds((plait_conv_direction)dir, x, nx, y, ny));
#ifdef PLAIT_HAVE_DNNL
            char impl[64] = "-", impl2[64] = "-";
            double t_direct = dnnl_seconds(d, (plait_conv_direction)dir, dnnl_convolution_direct, impl, sizeof impl);
            double t_wino = dnnl_seconds(d, (plait_conv_direction)dir, dnnl_convolution_winograd, impl2, sizeof impl2);
            double t_best = t_direct;
            if (t_wino > 0 && (t_best == 0 || t_wino < t_best)) {
                t_best = t_wino;
                snprintf(impl, sizeof impl, "%s", impl2);
            }
            if (t_best > 0 && (t_dnnl == 0 || t_best < t_dnnl)) {
                t_dnnl = t_best;
                snprintf(best_impl, sizeof best_impl, "%s", impl);
            }
#endif
        }
        char text[100];
        plait_conv_schedule_format(&tuned.best, text, sizeof text);
        printf("%-16s %-16s %8.1f %8.1f %8.1f %8.1f %6.0f%% %6.2f %5.2f  %-22s %s\n", sh->name,
               plait_conv_direction_name((plait_conv_direction)dir), padded / t_tuned, padded / t_default,
               padded / t_im2col, t_dnnl > 0 ? padded / t_dnnl : 0.0, 100.0 * inside / t_tuned / peak,
               t_dnnl > 0 ? t_dnnl / t_tuned : 0.0, tuned.rank_correlation, best_impl, text);
        fflush(stdout);
        if (d->groups > 1 && t_touch > 0 && t_touch < 1e30) {
            printf("%-16s %-16s %8.1f  memory bound (inputs read once, output written once): %.2fx oneDNN, plait at %.0f%%\n",
                   sh->name, "  bound", padded / t_touch, t_dnnl > 0 ? t_dnnl / t_touch : 0.0, 100.0 * t_touch / t_tuned);
            if (t_dnnl > 0) {
                bound_log += log(t_dnnl / t_touch);
                bound_count++;
            }
        }
        int kind = d->groups > 1 ? 2 : d->kernel_h == 3 ? 0 : 1;
        if (t_dnnl > 0) {
            geomean_log[kind] += log(t_dnnl / t_tuned);
            geomean_count[kind]++;
        }
    }
    plait_free(x);
    plait_free(y);
    plait_free(w);
    plait_free(workspace);
}

static bool ablation;
static const char *only_shape; /* --only NAME: just that shape */

static void bench_set(const shape *shapes, size_t count, const char *directions, int measure, plait_tuning *tuning,
                      double peak) {
    for (size_t i = 0; i < count; i++) {
        if (only_shape && strcmp(only_shape, shapes[i].name) != 0) continue;
        if (ablation)
            ablation_shape(&shapes[i], measure);
        else
            bench_shape(&shapes[i], directions, measure, tuning, peak);
    }
}

int main(int argc, char **argv) {
    int threads = 1, measure = 8; /* as plait tune: the tuned column is what a user's tuning gives */
    const char *set = "all", *directions = "fdw", *tuning_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--set") && i + 1 < argc) set = argv[++i];
        else if (!strcmp(argv[i], "--measure") && i + 1 < argc) measure = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--time") && i + 1 < argc) seconds_budget = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            char *end;
            long r = strtol(argv[++i], &end, 10);
            if (*end || r < 1 || r > 100) {
                fprintf(stderr, "bench_conv: --rounds takes a count from 1 to 100, not '%s'\n", argv[i]);
                return 2;
            }
            rounds = (int)r;
        }
        else if (!strcmp(argv[i], "--directions") && i + 1 < argc) directions = argv[++i];
        else if (!strcmp(argv[i], "--tuning") && i + 1 < argc) tuning_path = argv[++i];
        else if (!strcmp(argv[i], "--ablation")) ablation = true;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only_shape = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--threads T] [--set cifar18|cifar50|stem|mbv2|mbv2pw|all] [--measure M] [--time S] "
                            "[--rounds R] [--directions fdw] [--tuning FILE] [--ablation] [--only SHAPE]\n", argv[0]);
            return 2;
        }
    }
    plait_set_threads(threads);
    plait_tuning *tuning = NULL;
    if (tuning_path) {
        tuning = plait_tuning_new();
        if (plait_tuning_load(tuning, tuning_path) != PLAIT_OK) {
            fprintf(stderr, "%s\n", plait_last_error());
            return 1;
        }
    }
    double peak = measure_peak(threads);
    const plait_cpu *cpu = plait_cpu_features();
    printf("# %s (L2 %zu KiB, L3 %zu KiB), %d thread(s), isa %s, measured FMA peak %.1f GFLOP/s; best call of %d "
           "alternating rounds per method; preliminary: shared machine, short runs\n",
           cpu->model, cpu->l2_bytes >> 10, cpu->l3_bytes >> 10, threads, plait_isa_name(plait_direct_isa()), peak,
           rounds);
#ifndef PLAIT_HAVE_DNNL
    printf("# oneDNN not found at build time: its column is 0\n");
#endif
    if (ablation)
        printf("forward GFLOP/s\n| shape            | no part | level 1 | +lvl 2  | +vthr   | +search |\n"
               "|------------------|---------|---------|---------|---------|---------|\n");
    else
    printf("%-16s %-16s %8s %8s %8s %8s %7s %6s %5s  %-22s %s\n", "shape", "direction", "tuned", "default", "im2col",
           "onednn", "peak%", "x1dnn", "rho", "onednn impl", "tuned schedule");
    bool all = !strcmp(set, "all");
    if (all || !strcmp(set, "cifar18")) bench_set(cifar18, sizeof cifar18 / sizeof *cifar18, directions, measure, tuning, peak);
    if (all || !strcmp(set, "cifar50")) bench_set(cifar50, sizeof cifar50 / sizeof *cifar50, directions, measure, tuning, peak);
    if (all || !strcmp(set, "stem")) bench_set(stem, sizeof stem / sizeof *stem, directions, measure, tuning, peak);
    if (all || !strcmp(set, "mbv2")) bench_set(mbv2, sizeof mbv2 / sizeof *mbv2, directions, measure, tuning, peak);
    if (all || !strcmp(set, "mbv2pw")) bench_set(mbv2pw, sizeof mbv2pw / sizeof *mbv2pw, directions, measure, tuning, peak);
    static const char *kinds[] = {"3x3", "1x1/7x7", "depthwise"};
    for (int k = 0; k < 3; k++)
        if (geomean_count[k])
            printf("# geometric mean plait tuned / oneDNN best, %s: %.2fx over %d shape-directions\n", kinds[k],
                   exp(geomean_log[k] / geomean_count[k]), geomean_count[k]);
    if (bound_count)
        printf("# geometric mean of the depthwise memory bound / oneDNN best: %.2fx over %d shape-directions (no kernel "
               "that reads and writes each tensor once can beat oneDNN by more)\n",
               exp(bound_log / bound_count), bound_count);
    /* the peak again at the end: the larger of the two is the machine's, the other was disturbed */
    double peak_end = measure_peak(threads);
    printf("# FMA peak measured again at the end: %.1f GFLOP/s (peak%% above used %.1f)\n", peak_end, peak);
    if (tuning && plait_tuning_save(tuning, tuning_path) != PLAIT_OK) fprintf(stderr, "%s\n", plait_last_error());
    plait_tuning_free(tuning);
    return 0;
}
