/* Level 1 of the direct convolution: threads, cache blocks, image borders. The register tile is the
 * micro-kernel's business (tile_*.c); this file decides which tile runs where. */
#include <omp.h>
#include <string.h>

#include "kernels/direct/direct.h"

static plait_isa forced_isa = PLAIT_ISA_AUTO;

int plait_direct_set_isa(plait_isa isa) {
    const plait_cpu *cpu = plait_cpu_features();
    if (isa == PLAIT_ISA_AVX512 && !(cpu->avx512f && cpu->fma))
        return plait_fail("this CPU has no AVX-512F with FMA");
    if (isa == PLAIT_ISA_AVX2 && !(cpu->avx2 && cpu->fma)) return plait_fail("this CPU has no AVX2 with FMA");
    forced_isa = isa;
    return PLAIT_OK;
}

plait_isa direct_isa_resolved(void) {
    if (forced_isa != PLAIT_ISA_AUTO) return forced_isa;
    const plait_cpu *cpu = plait_cpu_features();
    if (cpu->avx512f && cpu->fma) return PLAIT_ISA_AVX512;
    if (cpu->avx2 && cpu->fma) return PLAIT_ISA_AVX2;
    return PLAIT_ISA_PORTABLE;
}

plait_isa plait_direct_isa(void) { return direct_isa_resolved(); }

const char *plait_isa_name(plait_isa isa) {
    switch (isa) {
    case PLAIT_ISA_AUTO: return "auto";
    case PLAIT_ISA_AVX512: return "avx512";
    case PLAIT_ISA_AVX2: return "avx2";
    case PLAIT_ISA_PORTABLE: return "portable";
    }
    return "?";
}

size_t direct_packed_floats(int k, int r, int s, int c) {
    return (size_t)direct_ceil_div(k, DIRECT_LANES) * (size_t)r * (size_t)s * (size_t)c * DIRECT_LANES;
}

/* 16 x 16 blocks through the registers on AVX-512: the scalar gather of 16 rows per channel was a twentieth of
 * a 256 -> 512 stride-2 3x3 forward at 8x8. */
void direct_pack_forward(const float *w, int k_count, int r_count, int s_count, int c_count, float *packed) {
    size_t taps = (size_t)r_count * (size_t)s_count;
    int kvecs = direct_ceil_div(k_count, DIRECT_LANES);
    const bool avx512 = direct_isa_resolved() == PLAIT_ISA_AVX512;
#pragma omp parallel for schedule(static)
    for (int kv = 0; kv < kvecs; kv++) {
        float *dst = packed + (size_t)kv * taps * (size_t)c_count * DIRECT_LANES;
        if (avx512) {
            for (size_t tap = 0; tap < taps; tap++)
                for (int c0 = 0; c0 < c_count; c0 += DIRECT_LANES)
                    direct_store_transposed_avx512(
                        w + ((size_t)kv * DIRECT_LANES * taps + tap) * (size_t)c_count + c0, taps * (size_t)c_count,
                        direct_min(DIRECT_LANES, k_count - kv * DIRECT_LANES), direct_min(DIRECT_LANES, c_count - c0),
                        dst + (tap * (size_t)c_count + (size_t)c0) * DIRECT_LANES, DIRECT_LANES);
            continue;
        }
        for (size_t tap = 0; tap < taps; tap++)
            for (int c = 0; c < c_count; c++) {
                float *lane = dst + (tap * (size_t)c_count + (size_t)c) * DIRECT_LANES;
                for (int l = 0; l < DIRECT_LANES; l++) {
                    int k = kv * DIRECT_LANES + l;
                    lane[l] = k < k_count ? w[((size_t)k * taps + tap) * (size_t)c_count + (size_t)c] : 0.0f;
                }
            }
    }
}

/* One tile call, dispatched to the ISA in use. */
void direct_run_tile(plait_isa isa, const direct_tile *t, int vthreads, int tile_w, int tile_k, int unroll) {
    direct_tile_fn fn = NULL;
    if (isa == PLAIT_ISA_AVX512) fn = direct_tile_avx512(vthreads, tile_w, tile_k, unroll);
    if (isa == PLAIT_ISA_AVX2) fn = direct_tile_avx2(vthreads, tile_w, tile_k, unroll);
    if (fn)
        fn(t);
    else
        direct_tile_portable(t, vthreads, tile_w, tile_k);
}

/* Range of taps [lo, hi) that land inside [0, size) for output position o. */
static void tap_range(int o, int stride, int pad, int taps, int size, int *lo, int *hi) {
    int first = o * stride - pad;
    *lo = direct_max(0, -first);
    *hi = direct_min(taps, size - first);
    if (*hi < *lo) *hi = *lo;
}

typedef struct block_context {
    const direct_problem *p;
    const plait_conv_schedule *s;
    plait_isa isa;
    int kvecs;
    int interior_lo, interior_hi; /* output columns whose taps all fall inside the image */
    int data_lo, data_hi;         /* rows of x that hold the image; a padded copy's others are zeros */
    int data_col_lo, data_col_hi; /* the same for columns */
    bool skip_columns;            /* short rows over a padded copy: kernel columns on its zero columns skipped */
    bool x_read_once;             /* all output channels in one tile: each pixel of x is read once */
    bool pointwise;               /* 1x1: no pixel of x is read by two neighbouring tiles */
} block_context;

/* Range of taps [lo, hi) of output row oh that land on rows of the image: over a padded copy, taps on its
 * zero rows are skipped rather than multiplied (a twelfth of a stride-2 layer's work on 8x8 inputs). */
static void row_tap_range(const block_context *b, int oh, int *lo, int *hi) {
    const direct_problem *p = b->p;
    int first = oh * p->stride_h - p->pad_h;
    *lo = direct_max(0, b->data_lo - first);
    *hi = direct_min(p->taps_h, b->data_hi - first);
    if (*hi < *lo) *hi = *lo;
}

/* Columns [from, to) of one row: interior columns in register tiles over kernel columns [tap_lo, tap_hi), the
 * others one pixel at a time over their kernel columns inside the image. */
static void run_columns(const block_context *b, direct_tile *t, const float *x_image, int ih, const float *w_base,
                        float *y_row, int vthreads, int nr, int c0, int cb, int from, int to, int tap_lo, int tap_hi) {
    const direct_problem *p = b->p;
    ptrdiff_t in_row = (ptrdiff_t)p->in_w * p->in_c;
    int ow = from;
    while (ow < to) {
        int s_lo = tap_lo, s_hi = tap_hi, count = 1, repeat = 1;
        bool interior = ow >= b->interior_lo && ow < b->interior_hi;
        if (interior) {
            int span = direct_min(to, b->interior_hi) - ow;
            count = direct_min(b->s->tile_w, span);
            repeat = span / count; /* every full tile of the interior in one micro-kernel call */
        } else {
            tap_range(ow, p->stride_w, p->pad_w, p->taps_w, p->in_w, &s_lo, &s_hi);
        }
        /* With every channel in the block, a kernel row's taps and channels are one run of x and of the
         * packed weights (x_tap_col = in_c, w_tap_col = 16 in_c): one channel loop of taps_w * in_c, the same
         * sums in the same order, without a short loop per tap (a 3-channel stem ran 3 iterations a tap). */
        bool row_run = interior && cb == p->in_c;
        t->taps_w = row_run ? 1 : s_hi - s_lo;
        t->channels = row_run ? (s_hi - s_lo) * cb : cb;
        t->w = w_base + (size_t)s_lo * (size_t)t->w_tap_col;
        t->y = y_row + (size_t)ow * (size_t)p->y_pixel;
        /* Pointers are formed only for taps inside the image. */
        if (t->taps_h > 0 && t->taps_w > 0)
            t->x = x_image + (size_t)ih * (size_t)in_row +
                   (size_t)(ow * p->stride_w - p->pad_w + s_lo) * (size_t)p->in_c + (size_t)c0;
        else
            t->x = x_image;
        t->tiles = repeat;
        direct_run_tile(b->isa, t, vthreads, count, nr, b->s->unroll);
        ow += count * repeat;
    }
}

/* Output columns [lo, hi) of [w0, w1) whose kernel column s lands on a column of the image (in a padded copy). */
static void data_columns(const block_context *b, int s, int w0, int w1, int *lo, int *hi) {
    const direct_problem *p = b->p;
    int first = b->data_col_lo + p->pad_w - s, last = b->data_col_hi - 1 + p->pad_w - s;
    *lo = direct_max(w0, first <= 0 ? 0 : direct_ceil_div(first, p->stride_w));
    *hi = last < 0 ? w0 : direct_min(w1, last / p->stride_w + 1);
    if (*hi < *lo) *hi = *lo;
}

/* One or `vthreads` output rows (oh .. oh+vthreads-1, all with the full tap range when vthreads > 1)
 * over columns [w0, w1), output-channel vectors [kv, kv + nr), input channels [c0, c0 + cb). */
static void run_rows(const block_context *b, int n, int oh, int vthreads, int w0, int w1, int kv, int nr, int c0,
                     int cb) {
    const direct_problem *p = b->p;
    int r_lo, r_hi;
    row_tap_range(b, oh, &r_lo, &r_hi);
    int ih = oh * p->stride_h - p->pad_h + r_lo;
    ptrdiff_t in_row = (ptrdiff_t)p->in_w * p->in_c;
    const float *x_image = p->x + (size_t)n * (size_t)p->in_h * (size_t)in_row;
    float *y_row = p->y + (size_t)n * (size_t)p->y_image + (size_t)oh * (size_t)p->y_row + (size_t)kv * DIRECT_LANES;
    direct_tile t = {
        .x_pixel = (ptrdiff_t)p->stride_w * p->in_c,
        .x_vthread = b->s->vthread_images ? (ptrdiff_t)p->in_h * in_row : (ptrdiff_t)p->stride_h * in_row,
        .x_tap_row = in_row,
        .x_tap_col = p->in_c,
        .w_kvec = (ptrdiff_t)p->taps_h * p->taps_w * p->in_c * DIRECT_LANES,
        .w_tap_row = (ptrdiff_t)p->taps_w * p->in_c * DIRECT_LANES,
        .w_tap_col = (ptrdiff_t)p->in_c * DIRECT_LANES,
        .taps_h = r_hi - r_lo,
        .channels = cb,
        .y_pixel = p->y_pixel,
        .y_vthread = b->s->vthread_images ? p->y_image : p->y_row,
        .accumulate = c0 > 0,
        .zeros = c0 > 0 ? 0 : p->zeros, /* once, with the first block of channels */
        /* x comes from memory: on 1x1 layers, to the first group of output channels or the only one (the
         * later groups find it in L2), along rows of four tiles or more (a short row's last tile would fetch
         * what no tile reads: strided 16x16 forward 0.95x) */
        .prefetch_next_x = b->pointwise && (b->x_read_once || kv == 0) && w1 - w0 >= 4 * b->s->tile_w,
    };
    memcpy(t.zero_offset, p->zero_offset, sizeof t.zero_offset);
    int k_left = p->out_c - (kv + nr - 1) * DIRECT_LANES;
    t.last_lanes = k_left < DIRECT_LANES ? k_left : DIRECT_LANES;
    const float *w_base = p->w_packed + (size_t)kv * (size_t)t.w_kvec + (size_t)r_lo * (size_t)t.w_tap_row +
                          (size_t)c0 * DIRECT_LANES;
    /* Short rows over a padded copy: the kernel columns every output of the row has inside the image in one
     * pass, then each of the others, accumulating, over just the outputs it reaches inside the image (a twelfth
     * of the work of a stride-2 3x3 layer on 8x8 inputs is the zero column left of the first output). */
    int full_lo = p->taps_w, full_hi = 0, partial = 0;
    if (b->skip_columns)
        for (int sc = 0; sc < p->taps_w; sc++) {
            int lo, hi;
            data_columns(b, sc, w0, w1, &lo, &hi);
            if (lo == w0 && hi == w1) {
                full_lo = direct_min(full_lo, sc);
                full_hi = sc + 1;
            } else {
                partial++;
            }
        }
    if (partial == 0 || full_lo >= full_hi || full_hi - full_lo + partial != p->taps_w) {
        run_columns(b, &t, x_image, ih, w_base, y_row, vthreads, nr, c0, cb, w0, w1, 0, p->taps_w);
        return;
    }
    run_columns(b, &t, x_image, ih, w_base, y_row, vthreads, nr, c0, cb, w0, w1, full_lo, full_hi);
    t.accumulate = 1;
    t.zeros = 0;
    for (int sc = 0; sc < p->taps_w; sc++) {
        int lo, hi;
        data_columns(b, sc, w0, w1, &lo, &hi);
        if ((sc < full_lo || sc >= full_hi) && lo < hi)
            run_columns(b, &t, x_image, ih, w_base, y_row, vthreads, nr, c0, cb, lo, hi, sc, sc + 1);
    }
}

/* One cache block: images [n, n + images) (as interleaved sub-tiles; images > 1 only with vthread_images),
 * rows [h0, h1), columns [w0, w1), vectors [k0, k1). */
static void run_block(const block_context *b, int n, int images, int h0, int h1, int w0, int w1, int k0, int k1) {
    const direct_problem *p = b->p;
    const plait_conv_schedule *s = b->s;
    int row_lo, row_hi; /* rows whose taps all fall inside the image */
    {
        int first = direct_ceil_div(direct_max(p->pad_h + b->data_lo, 0), p->stride_h);
        int last = b->data_hi + p->pad_h - p->taps_h; /* last valid oh*stride */
        row_lo = first;
        row_hi = last < 0 ? 0 : last / p->stride_h + 1;
    }
    /* sub-tiles: `images` images on the same row, or vthreads consecutive interior rows */
    int step_rows = s->vthread_images ? 1 : s->vthreads;
    int block_c = s->block_c > 0 ? s->block_c : p->in_c;
    for (int c0 = 0; c0 < p->in_c; c0 += block_c) {
        int cb = direct_min(block_c, p->in_c - c0);
        if (s->loop_order == PLAIT_LOOP_K_OUTER) {
            for (int kv = k0; kv < k1; kv += s->tile_k) {
                int nr = direct_min(s->tile_k, k1 - kv);
                for (int oh = h0; oh < h1;) {
                    int v = s->vthread_images ? images : step_rows;
                    if (!s->vthread_images && v > 1 && !(oh + v <= h1 && oh >= row_lo && oh + v <= row_hi)) v = 1;
                    run_rows(b, n, oh, v, w0, w1, kv, nr, c0, cb);
                    oh += s->vthread_images ? 1 : v;
                }
            }
        } else {
            for (int oh = h0; oh < h1;) {
                int v = s->vthread_images ? images : step_rows;
                if (!s->vthread_images && v > 1 && !(oh + v <= h1 && oh >= row_lo && oh + v <= row_hi)) v = 1;
                for (int kv = k0; kv < k1; kv += s->tile_k)
                    run_rows(b, n, oh, v, w0, w1, kv, direct_min(s->tile_k, k1 - kv), c0, cb);
                oh += s->vthread_images ? 1 : v;
            }
        }
    }
}

/* Padding needed after the last input row or column so that every output's taps fall inside. */
static int pad_after(int out, int stride, int taps, int in, int pad) {
    return direct_max(0, (out - 1) * stride + taps - in - pad);
}

size_t direct_pad_floats(const direct_problem *p) {
    size_t h = (size_t)p->in_h + (size_t)direct_max(p->pad_h, 0) + (size_t)pad_after(p->out_h, p->stride_h, p->taps_h, p->in_h, p->pad_h);
    size_t w = (size_t)p->in_w + (size_t)direct_max(p->pad_w, 0) + (size_t)pad_after(p->out_w, p->stride_w, p->taps_w, p->in_w, p->pad_w);
    return (size_t)p->batch * h * w * (size_t)p->in_c;
}

/* The same problem over a zero-bordered copy of the input (x left unset): no output has a tap outside it.
 * top and left are the zero rows and columns before the input's first. */
static direct_problem padded_geometry(const direct_problem *p, int *top, int *left) {
    direct_problem q = *p;
    *top = direct_max(p->pad_h, 0);
    *left = direct_max(p->pad_w, 0);
    q.in_h = p->in_h + *top + pad_after(p->out_h, p->stride_h, p->taps_h, p->in_h, p->pad_h);
    q.in_w = p->in_w + *left + pad_after(p->out_w, p->stride_w, p->taps_w, p->in_w, p->pad_w);
    q.pad_h = p->pad_h - *top;
    q.pad_w = p->pad_w - *left;
    q.x = NULL;
    return q;
}

/* Rows [row0, row0 + rows) of images [n, n + images) of x ([N][in_h][in_w][c]) with `top` zero rows before
 * the first and `left` zero columns before the first column, padded_w columns in all, packed into dst. */
static void copy_padded_rows(const float *x, int in_h, int in_w, int c, int top, int left, int padded_w, int n,
                             int images, int row0, int rows, float *dst) {
    size_t row = (size_t)padded_w * c, pixels = (size_t)in_w * c;
    for (int i = 0; i < images; i++)
        for (int r = 0; r < rows; r++, dst += row) {
            int h = row0 + r - top;
            if (h < 0 || h >= in_h) {
                memset(dst, 0, row * sizeof(float));
                continue;
            }
            memset(dst, 0, (size_t)left * c * sizeof(float));
            memcpy(dst + (size_t)left * c, x + ((size_t)(n + i) * in_h + h) * pixels, pixels * sizeof(float));
            memset(dst + (size_t)left * c + pixels, 0, (row - pixels - (size_t)left * c) * sizeof(float));
        }
}

void direct_copy_padded(const float *x, int batch, int in_h, int in_w, int c, int top, int left, int padded_h,
                        int padded_w, float *dst) {
    size_t row = (size_t)padded_w * c;
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (long r = 0; r < (long)batch * padded_h; r++)
        copy_padded_rows(x, in_h, in_w, c, top, left, padded_w, (int)(r / padded_h), 1, (int)(r % padded_h), 1,
                         dst + (size_t)r * row);
}

void direct_run(const direct_problem *problem, const plait_conv_schedule *s, float *scratch) {
    direct_problem padded;
    const direct_problem *p = problem;
    int top = 0, left = 0;
    if (s->pad_copy && scratch) {
        padded = padded_geometry(problem, &top, &left);
        p = &padded;
    }
    block_context b = {.p = p, .s = s, .isa = direct_isa_resolved(), .kvecs = direct_ceil_div(p->out_c, DIRECT_LANES),
                       .data_lo = top, .data_hi = top + problem->in_h, .data_col_lo = left,
                       .data_col_hi = left + problem->in_w, .skip_columns = p != problem && p->out_w <= 8};
    b.x_read_once = b.kvecs <= s->tile_k;
    b.pointwise = p->taps_h == 1 && p->taps_w == 1;
    b.interior_lo = p->out_w;
    b.interior_hi = p->out_w;
    for (int ow = 0; ow < p->out_w; ow++) {
        int lo, hi;
        tap_range(ow, p->stride_w, p->pad_w, p->taps_w, p->in_w, &lo, &hi);
        if (lo == 0 && hi == p->taps_w) {
            if (b.interior_lo == p->out_w) b.interior_lo = ow;
            b.interior_hi = ow + 1;
        }
    }
    int block_h = s->block_h > 0 ? s->block_h : p->out_h;
    int block_w = s->block_w > 0 ? s->block_w : p->out_w;
    int block_k = s->block_k > 0 ? s->block_k : b.kvecs;
    int h_blocks = direct_ceil_div(p->out_h, block_h);
    int k_blocks = direct_ceil_div(b.kvecs, block_k);
    /* with image sub-tiles, a work item covers a group of vthreads images */
    int group = s->vthread_images ? s->vthreads : 1;
    int groups = direct_ceil_div(p->batch, group);
    long items = (long)groups * h_blocks * k_blocks;
    /* The padded copy, by windows: each thread copies the padded rows its block of outputs reads into its own
     * part of the scratch just before using them, so they are still in its caches and no padded tensor goes
     * out to memory and back (a separate padding pass was 12% of a stride-2 3x3 forward). Where the scratch
     * cannot hold a window per thread, or where a thread's work items go through every window once per block
     * of output channels (split_k), one padded copy of the whole input first (windows copied 6 times over ran
     * 0.9x on 16x16 and 8x8 stride-2 layers). */
    int window_rows = direct_min(p->in_h, (block_h - 1) * p->stride_h + p->taps_h);
    size_t window_floats = ((size_t)group * (size_t)window_rows * (size_t)p->in_w * (size_t)p->in_c + 15) / 16 * 16;
    int threads = plait_threads();
    bool windows = p != problem && !(s->split_k && k_blocks > 1) &&
                   (size_t)threads * window_floats <= direct_pad_floats(problem);
    if (p != problem && !windows) {
        padded.x = scratch;
        direct_copy_padded(problem->x, p->batch, problem->in_h, problem->in_w, p->in_c, top, left, padded.in_h,
                           padded.in_w, scratch);
    }
#pragma omp parallel num_threads(threads)
    {
        float *window = windows ? scratch + (size_t)omp_get_thread_num() * window_floats : NULL;
        long copied = -1; /* the (group, row block) in this thread's window */
#pragma omp for schedule(static)
        for (long item = 0; item < items; item++) {
            int g, hb, kb;
            if (s->split_k) {
                kb = (int)(item / ((long)groups * h_blocks));
                long rest = item % ((long)groups * h_blocks);
                g = (int)(rest / h_blocks);
                hb = (int)(rest % h_blocks);
            } else {
                g = (int)(item / ((long)h_blocks * k_blocks));
                long rest = item % ((long)h_blocks * k_blocks);
                hb = (int)(rest / k_blocks);
                kb = (int)(rest % k_blocks);
            }
            int h0 = hb * block_h, h1 = direct_min(p->out_h, h0 + block_h);
            int k0 = kb * block_k, k1 = direct_min(b.kvecs, k0 + block_k);
            int n0 = g * group, n1 = direct_min(p->batch, n0 + group);
            block_context bw = b;
            direct_problem w;
            int first = 0, row0 = h0, row1 = h1;
            if (windows) {
                /* the window's rows start at output row h0's first tap: with no padding left, output row h0 is
                 * the window's row 0 */
                int pr0 = h0 * p->stride_h - p->pad_h, rows = (h1 - h0 - 1) * p->stride_h + p->taps_h;
                if (copied != (long)g * h_blocks + hb)
                    copy_padded_rows(problem->x, problem->in_h, problem->in_w, p->in_c, top, left, p->in_w, n0,
                                     n1 - n0, pr0, rows, window);
                copied = (long)g * h_blocks + hb;
                w = *p;
                w.x = window;
                w.batch = n1 - n0;
                w.in_h = rows;
                w.pad_h = 0;
                w.out_h = h1 - h0;
                w.y = p->y + (size_t)n0 * (size_t)p->y_image + (size_t)h0 * (size_t)p->y_row;
                bw.p = &w;
                bw.data_lo = top - pr0;
                bw.data_hi = top + problem->in_h - pr0;
                first = n0;
                row0 = 0;
                row1 = h1 - h0;
            }
            for (int n = n0; n < n1;) {
                /* the last group may hold 3 images: run 2 then 1 (tiles exist for 1, 2 and 4 sub-tiles) */
                int left_images = n1 - n;
                int images = left_images >= 4 ? 4 : left_images >= 2 ? 2 : 1;
                for (int w0 = 0; w0 < p->out_w; w0 += block_w)
                    run_block(&bw, n - first, images, row0, row1, w0, direct_min(p->out_w, w0 + block_w), k0, k1);
                n += images;
            }
        }
    }
}
