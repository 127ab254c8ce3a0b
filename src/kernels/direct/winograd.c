/* Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions: 36 multiplications per 4x4 output tile and channel
 * pair instead of 144. Per chunk of output tiles: transform the 6x6 input patches (V = B^T d B), multiply
 * in the transform domain with the same level-2 micro-kernels as the direct convolution (36 independent
 * 1x1 "convolutions" of V with U = G g G^T), and transform back (Y = A^T M A). Backward-data is the same
 * with flipped, transposed weights; backward-weights sums (A dY A^T) x (B^T X B) over tiles and applies
 * G^T . G. Matrices from Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2015). */
#include <omp.h>
#include <string.h>

#include "kernels/direct/direct.h"

#define WINO_MAX_THREADS 8
#define L DIRECT_LANES

static int kpad_of(int k) { return direct_ceil_div(k, L) * L; }

/* Floats between two of the 36 transform planes of `tiles` tiles of `pad` channels: one spare cache line,
 * so that the 36 values of one tile (read or written together by a transform) do not all fall into the
 * same L1 set, as they did when planes were a power of two apart (16 KiB at 64 tiles of 64 channels). */
static size_t plane_floats(int tiles, int pad) { return (size_t)tiles * (size_t)pad + L; }

/* A chunk's transformed tiles: the 36 planes of its inputs (cpad channels) and of its products or gradients
 * (kpad channels). */
static size_t chunk_floats(int chunk, int cpad, int kpad) {
    return 36 * (plane_floats(chunk, cpad) + plane_floats(chunk, kpad));
}

/* The transforms are written once on 16-lane generic vectors and compiled per target: PER_ISA wraps an
 * always-inline BODY into NAME_avx512, NAME_avx2 and NAME_portable, and PICK_ISA chooses one at run time. */
#define PER_ISA(NAME, BODY, PARAMS, ARGS)                                      \
    static __attribute__((target("avx512f,fma"))) void NAME##_avx512 PARAMS { \
        BODY ARGS;                                                             \
    }                                                                          \
    static __attribute__((target("avx2,fma"))) void NAME##_avx2 PARAMS {       \
        BODY ARGS;                                                             \
    }                                                                          \
    static void NAME##_portable PARAMS { BODY ARGS; }
#define PICK_ISA(NAME, isa) \
    ((isa) == PLAIT_ISA_AVX512 ? NAME##_avx512 : (isa) == PLAIT_ISA_AVX2 ? NAME##_avx2 : NAME##_portable)

/* ---- 1-D transforms on vectors of 16 lanes (stride: floats between consecutive elements) ----
 * Written with GCC's generic vectors: one zmm operation per line on AVX-512, two ymm on AVX2, four xmm
 * otherwise. Lane loops left to the auto-vectorizer were peeled for alignment into scalar code, which ran
 * longer than the products on 64-channel layers. */
typedef float vec16 __attribute__((vector_size(L * sizeof(float)), aligned(sizeof(float)), may_alias));
#define VEC(p) (*(const vec16 *)(p))
#define VEC_OUT(p) (*(vec16 *)(p))
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* B^T d: 6 -> 6 */
ALWAYS_INLINE void input_1d(const float *d, ptrdiff_t ds, float *o, ptrdiff_t os) {
    vec16 d0 = VEC(d), d1 = VEC(d + ds), d2 = VEC(d + 2 * ds), d3 = VEC(d + 3 * ds), d4 = VEC(d + 4 * ds),
          d5 = VEC(d + 5 * ds);
    VEC_OUT(o) = 4.0f * d0 - 5.0f * d2 + d4;
    VEC_OUT(o + os) = -4.0f * d1 - 4.0f * d2 + d3 + d4;
    VEC_OUT(o + 2 * os) = 4.0f * d1 - 4.0f * d2 - d3 + d4;
    VEC_OUT(o + 3 * os) = -2.0f * d1 - d2 + 2.0f * d3 + d4;
    VEC_OUT(o + 4 * os) = 2.0f * d1 - d2 - 2.0f * d3 + d4;
    VEC_OUT(o + 5 * os) = 4.0f * d1 - 5.0f * d3 + d5;
}

/* G g: 3 -> 6 */
ALWAYS_INLINE void weight_1d(const float *g, ptrdiff_t gs, float *o, ptrdiff_t os) {
    vec16 g0 = VEC(g), g1 = VEC(g + gs), g2 = VEC(g + 2 * gs);
    VEC_OUT(o) = g0 / 4.0f;
    VEC_OUT(o + os) = -(g0 + g1 + g2) / 6.0f;
    VEC_OUT(o + 2 * os) = -(g0 - g1 + g2) / 6.0f;
    VEC_OUT(o + 3 * os) = g0 / 24.0f + g1 / 12.0f + g2 / 6.0f;
    VEC_OUT(o + 4 * os) = g0 / 24.0f - g1 / 12.0f + g2 / 6.0f;
    VEC_OUT(o + 5 * os) = g2;
}

/* A^T m: 6 -> 4 */
ALWAYS_INLINE void output_1d(const float *m, ptrdiff_t ms, float *o, ptrdiff_t os) {
    vec16 m0 = VEC(m), m1 = VEC(m + ms), m2 = VEC(m + 2 * ms), m3 = VEC(m + 3 * ms), m4 = VEC(m + 4 * ms),
          m5 = VEC(m + 5 * ms);
    VEC_OUT(o) = m0 + m1 + m2 + m3 + m4;
    VEC_OUT(o + os) = m1 - m2 + 2.0f * m3 - 2.0f * m4;
    VEC_OUT(o + 2 * os) = m1 + m2 + 4.0f * m3 + 4.0f * m4;
    VEC_OUT(o + 3 * os) = m1 - m2 + 8.0f * m3 - 8.0f * m4 + m5;
}

/* A dy: 4 -> 6 (the transpose of output_1d) */
ALWAYS_INLINE void gradient_1d(const float *g, ptrdiff_t gs, float *o, ptrdiff_t os) {
    vec16 g0 = VEC(g), g1 = VEC(g + gs), g2 = VEC(g + 2 * gs), g3 = VEC(g + 3 * gs);
    VEC_OUT(o) = g0;
    VEC_OUT(o + os) = g0 + g1 + g2 + g3;
    VEC_OUT(o + 2 * os) = g0 - g1 + g2 - g3;
    VEC_OUT(o + 3 * os) = g0 + 2.0f * g1 + 4.0f * g2 + 8.0f * g3;
    VEC_OUT(o + 4 * os) = g0 - 2.0f * g1 + 4.0f * g2 - 8.0f * g3;
    VEC_OUT(o + 5 * os) = g3;
}

/* G^T m: 6 -> 3 (the transpose of weight_1d) */
ALWAYS_INLINE void weight_grad_1d(const float *m, ptrdiff_t ms, float *o, ptrdiff_t os) {
    vec16 m0 = VEC(m), m1 = VEC(m + ms), m2 = VEC(m + 2 * ms), m3 = VEC(m + 3 * ms), m4 = VEC(m + 4 * ms),
          m5 = VEC(m + 5 * ms);
    VEC_OUT(o) = m0 / 4.0f - (m1 + m2) / 6.0f + (m3 + m4) / 24.0f;
    VEC_OUT(o + os) = (m2 - m1) / 6.0f + (m3 - m4) / 12.0f;
    VEC_OUT(o + 2 * os) = (m3 + m4 - m1 - m2) / 6.0f + m5;
}

/* One pixel's 16 channels into a transform's staging vector, zero past `lanes`. The full vector is one
 * copy: the lane-by-lane loop it replaces (a compare per float) cost more than the transform itself. */
ALWAYS_INLINE void copy_lanes(float *dst, const float *src, int lanes) {
    if (lanes == L) {
        memcpy(dst, src, L * sizeof(float));
        return;
    }
    for (int l = 0; l < L; l++) dst[l] = l < lanes ? src[l] : 0.0f;
}

/* The first `lanes` of one staged vector into a pixel of the output. The lane test inside a fixed-length loop
 * becomes one masked store on AVX-512; a loop to `lanes` became a rep movs, whose start-up cost dominated
 * the 3-channel backward-data of a stem (measured 23% of that call). */
ALWAYS_INLINE void store_lanes(float *dst, const float *src, int lanes) {
    if (lanes == L) {
        memcpy(dst, src, L * sizeof(float));
        return;
    }
    for (int l = 0; l < L; l++)
        if (l < lanes) dst[l] = src[l];
}

/* ---- the forward problem (also backward-data) ---- */

typedef struct wino_problem {
    int batch, in_h, in_w, in_c, out_c, out_h, out_w, pad_h, pad_w;
    const float *x;
    float *y;
    int tiles_h, tiles_w, chunk;
} wino_problem;

/* A tile's image and the first output row and column it covers (tiles run image by image, row-major). */
typedef struct tile_place {
    int n, h0, w0;
} tile_place;

ALWAYS_INLINE tile_place tile_at(const wino_problem *p, long tile) {
    long per_image = (long)p->tiles_h * p->tiles_w;
    int rest = (int)(tile % per_image);
    return (tile_place){(int)(tile / per_image), rest / p->tiles_w * 4, rest % p->tiles_w * 4};
}

bool direct_winograd_supports(const plait_conv2d_desc *d) {
    return d->groups == 1 && d->kernel_h == 3 && d->kernel_w == 3 && d->stride_h == 1 && d->stride_w == 1 &&
           d->pad_h <= 2 && d->pad_w <= 2;
}

/* Tiles per chunk: a thread's transformed inputs and products stay within about 8 MiB. Every chunk streams
 * all of U (36 x C x K floats, 37 MiB at 512 channels), so on small images with many channels fewer, larger
 * chunks matter more than keeping a chunk in L2 (measured: 2 MiB chunks of 14 tiles ran the 4x4 layers of
 * ResNet-18 at 0.6x oneDNN). */
static int chunk_cap(int in_c, int out_c) {
    int cap = (8 << 20) / (36 * 4 * (kpad_of(in_c) + kpad_of(out_c)));
    return direct_max(4, direct_min(DIRECT_WINOGRAD_MAX_CHUNK, cap));
}

/* The schedule's chunk, else the cap; never more than an even share of the tiles per thread. */
static int chunk_of(const plait_conv_schedule *s, int in_c, int out_c, long tiles) {
    int cap = chunk_cap(in_c, out_c);
    int chunk = s && s->block_w > 0 && s->block_w < cap ? s->block_w : cap;
    long share = (tiles + plait_threads() - 1) / plait_threads();
    return share < chunk ? (int)direct_max(1, (int)share) : chunk;
}

/* Backward-weights sums V x Z over tiles into M (36 x C x K floats) chunk by chunk, reading and writing all
 * of M per chunk: chunks at least C*K/(C+K) tiles long keep that below the transforms' own traffic, within
 * 64 MiB of transformed tiles. */
static int wgrad_chunk(const plait_conv_schedule *s, int C, int K, long tiles) {
    int cpad = kpad_of(C), kpad = kpad_of(K);
    long chunk = s && s->block_w > 0 && s->block_w < DIRECT_WINOGRAD_MAX_CHUNK ? s->block_w : DIRECT_WINOGRAD_MAX_CHUNK;
    long balanced = (long)C * kpad / (cpad + kpad), budget = (64L << 20) / (36L * 4 * (cpad + kpad));
    if (chunk < balanced) chunk = balanced;
    if (chunk > budget) chunk = budget;
    if (chunk > tiles) chunk = tiles;
    return (int)(chunk < 1 ? 1 : chunk);
}

static long tiles_of(const plait_conv2d_desc *d) {
    int oh = direct_out_size(d->in_h, 3, 1, d->pad_h), ow = direct_out_size(d->in_w, 3, 1, d->pad_w);
    return (long)d->batch * direct_ceil_div(oh, 4) * direct_ceil_div(ow, 4);
}

/* Threads that may each keep a private M (36 x C x K floats) in backward-weights: when all copies fit
 * in 16 MiB, each thread sums its own chunks into its own M, in its own cache, with no barrier per chunk
 * and no transformed tile read by another core; the copies are added once at the end. Larger M are
 * shared, each thread owning a part of it (measured at 2 threads on 64 channels at 32x32: shared M
 * scaled 1.14x over one thread). */
static int wgrad_private_copies(int C, int K) {
    size_t bytes = 36 * (size_t)C * (size_t)kpad_of(K) * sizeof(float);
    return (int)direct_min(WINO_MAX_THREADS, (int)((16u << 20) / bytes));
}

size_t direct_winograd_workspace_floats(const plait_conv2d_desc *d, plait_conv_direction direction) {
    int K = d->out_channels, C = d->in_channels;
    if (direction == PLAIT_CONV_BACKWARD_DATA) K = d->in_channels, C = d->out_channels;
    size_t weights = 36 * plane_floats(C, kpad_of(K));
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS) { /* M = sum V^T Z, then V and A dY A^T for a chunk */
        size_t chunk = (size_t)wgrad_chunk(NULL, C, K, tiles_of(d));
        size_t copies = (size_t)direct_max(1, wgrad_private_copies(C, K));
        return copies * (weights + chunk_floats((int)chunk, kpad_of(C), kpad_of(K))) + 64;
    }
    size_t chunk = (size_t)chunk_cap(C, K);
    return weights + WINO_MAX_THREADS * chunk_floats((int)chunk, kpad_of(C), kpad_of(K)) + 64;
}

/* U[t][kv][c][16] = (G g G^T)[t] for output channel kv*16+lane, input channel c; `flip` reads the
 * weights of backward-data: g[r][s] = w[c][2-r][2-s][k] from OHWI w with K and C swapped. One block is 16
 * output x 16 input channels, so that w is read in runs of 16 contiguous channels (rows of w, or columns
 * when flipped) rather than one float per 9*C. */
ALWAYS_INLINE void weight_block(const float *w, int K, int C, bool flip, int kv, int c0, float *U) {
    int kvecs = direct_ceil_div(K, L), cn = direct_min(L, C - c0);
    float g[L][9][L]; /* [c lane][tap][k lane] */
    int kn = direct_min(L, K - kv * L);
    memset(g, 0, sizeof g);
    if (flip) /* w[c][2-r][2-s][k]: runs over k */
        for (int i = 0; i < cn; i++)
            for (int tap = 0; tap < 9; tap++) {
                const float *src = w + ((size_t)(c0 + i) * 9 + 8 - tap) * K + (size_t)kv * L;
                __builtin_prefetch(src + L); /* the next block's line of this run */
                for (int l = 0; l < kn; l++) g[i][tap][l] = src[l];
            }
    else /* w[k][r][s][c]: runs over c */
        for (int l = 0; l < kn; l++)
            for (int tap = 0; tap < 9; tap++) {
                const float *src = w + ((size_t)(kv * L + l) * 9 + tap) * C + c0;
                __builtin_prefetch(src + L);
                for (int i = 0; i < cn; i++) g[i][tap][l] = src[i];
            }
    for (int i = 0; i < cn; i++) {
        float t[6][3][L], u[6][6][L];
        for (int s = 0; s < 3; s++) weight_1d(g[i][s], 3 * L, t[0][s], 3 * L);
        for (int a = 0; a < 6; a++) weight_1d(t[a][0], L, u[a][0], L);
        for (int q = 0; q < 36; q++)
            memcpy(U + q * plane_floats(C, kvecs * L) + ((size_t)kv * C + c0 + i) * L, u[q / 6][q % 6],
                   L * sizeof(float));
    }
}

PER_ISA(weight_blocks, weight_block, (const float *w, int K, int C, bool flip, int kv, int c0, float *U),
        (w, K, C, flip, kv, c0, U))

static void transform_weights(const float *w, int K, int C, bool flip, float *U) {
    plait_isa isa = direct_isa_resolved();
    void (*block)(const float *, int, int, bool, int, int, float *) = PICK_ISA(weight_blocks, isa);
    int kvecs = direct_ceil_div(K, L), c_blocks = direct_ceil_div(C, L);
    /* Consecutive blocks read the next cache line of the same 144 runs of w (16 channels x 9 taps), which
     * the block before prefetches: too many streams for the hardware prefetchers (measured: the first
     * touch of each line was 37% of the transform on 512 x 512 weights). */
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (long item = 0; item < (long)kvecs * c_blocks; item++) {
        int kv = flip ? (int)(item % kvecs) : (int)(item / c_blocks);
        int c_block = flip ? (int)(item / kvecs) : (int)(item % c_blocks);
        block(w, K, C, flip, kv, c_block * L, U);
    }
}

/* V[t][i][c] for the tiles [first, first + count) of p, channels padded to cpad, `plane` tiles between
 * transform points. */
ALWAYS_INLINE void transform_inputs(const wino_problem *p, long first, int count, float *V, int cpad, int plane) {
    for (int i = 0; i < count; i++) {
        long tile = first + i;
        tile_place at = tile_at(p, tile);
        int n = at.n, h0 = at.h0 - p->pad_h, w0 = at.w0 - p->pad_w;
        size_t ps = plane_floats(plane, cpad);
        bool inside = h0 >= 0 && h0 + 6 <= p->in_h && w0 >= 0 && w0 + 6 <= p->in_w;
        const float *corner = inside ? p->x + (((size_t)n * p->in_h + h0) * p->in_w + w0) * p->in_c : NULL;
        for (int c0 = 0; c0 < cpad; c0 += L) {
            float d[6][6][L], t[6][6][L], v[6][6][L];
            int lanes = direct_min(L, p->in_c - c0);
            float *out = V + (size_t)i * cpad + c0;
            if (inside && lanes == L) { /* straight from x to V, no staging copies */
                ptrdiff_t row = (ptrdiff_t)p->in_w * p->in_c;
                for (int b = 0; b < 6; b++) input_1d(corner + (size_t)b * p->in_c + c0, row, t[0][b], 6 * L);
                for (int a = 0; a < 6; a++) input_1d(t[a][0], L, out + 6 * (size_t)a * ps, (ptrdiff_t)ps);
                continue;
            }
            for (int a = 0; a < 6; a++)
                for (int b = 0; b < 6; b++) {
                    int h = h0 + a, ww = w0 + b;
                    if (h < 0 || h >= p->in_h || ww < 0 || ww >= p->in_w || lanes <= 0) {
                        memset(d[a][b], 0, sizeof d[a][b]);
                        continue;
                    }
                    const float *src = p->x + (((size_t)n * p->in_h + h) * p->in_w + ww) * p->in_c + c0;
                    copy_lanes(d[a][b], src, lanes);
                }
            for (int b = 0; b < 6; b++) input_1d(d[0][b], 6 * L, t[0][b], 6 * L);
            for (int a = 0; a < 6; a++) input_1d(t[a][0], L, v[a][0], L);
            for (int q = 0; q < 36; q++) memcpy(out + q * ps, v[q / 6][q % 6], L * sizeof(float));
        }
    }
}

/* y for the tiles of a chunk from M[t][i][kpad]. */
ALWAYS_INLINE void transform_outputs(const wino_problem *p, long first, int count, const float *M, int kpad) {
    for (int i = 0; i < count; i++) {
        long tile = first + i;
        tile_place at = tile_at(p, tile);
        int n = at.n, h0 = at.h0, w0 = at.w0;
        size_t ps = plane_floats(count, kpad);
        bool inside = h0 + 4 <= p->out_h && w0 + 4 <= p->out_w;
        for (int k0 = 0; k0 < p->out_c; k0 += L) {
            float t[4][6][L], o[4][4][L];
            const float *in = M + (size_t)i * kpad + k0;
            for (int b = 0; b < 6; b++) output_1d(in + b * ps, 6 * (ptrdiff_t)ps, t[0][b], 6 * L);
            int lanes = direct_min(L, p->out_c - k0);
            if (inside && lanes == L) { /* straight into y */
                for (int a = 0; a < 4; a++)
                    output_1d(t[a][0], L, p->y + (((size_t)n * p->out_h + h0 + a) * p->out_w + w0) * p->out_c + k0,
                              p->out_c);
                continue;
            }
            for (int a = 0; a < 4; a++) output_1d(t[a][0], L, o[a][0], L);
            for (int a = 0; a < 4 && h0 + a < p->out_h; a++)
                for (int b = 0; b < 4 && w0 + b < p->out_w; b++) {
                    float *dst = p->y + (((size_t)n * p->out_h + h0 + a) * p->out_w + w0 + b) * p->out_c + k0;
                    store_lanes(dst, o[a][b], lanes);
                }
        }
    }
}

/* M[t] = V[t] x U[t] for the 36 transform points, with the direct kernels' register tiles. */
static void multiply(plait_isa isa, const float *V, const float *U, float *M, int count, int C, int cpad, int K,
                     const plait_conv_schedule *s) {
    int kvecs = direct_ceil_div(K, L), kpad = kvecs * L;
    int tile_k = direct_min(s->tile_k, kvecs);
    for (int q = 0; q < 36; q++)
        for (int kv = 0; kv < kvecs; kv += tile_k) {
            int nr = direct_min(tile_k, kvecs - kv);
            for (int i = 0; i < count;) {
                int mr = direct_min(s->tile_w, count - i);
                direct_tile t = {
                    .x = V + q * plane_floats(count, cpad) + (size_t)i * cpad, .x_pixel = cpad, .x_vthread = 0,
                    .x_tap_row = 0, .x_tap_col = 0, .w = U + q * plane_floats(C, kpad) + (size_t)kv * C * L,
                    .w_kvec = (ptrdiff_t)C * L,
                    .w_tap_row = 0, .w_tap_col = 0, .taps_h = 1, .taps_w = 1, .channels = C,
                    .y = M + q * plane_floats(count, kpad) + (size_t)i * kpad + (size_t)kv * L, .y_pixel = kpad,
                    .y_vthread = 0,
                    .accumulate = 0, .last_lanes = L,
                };
                direct_run_tile(isa, &t, 1, mr, nr, s->unroll);
                i += mr;
            }
        }
}

/* One chunk: transforms, then products on the micro-kernels, then the inverse transforms. */
ALWAYS_INLINE void chunk_body(const wino_problem *p, long first, int count, float *V, float *M, const float *U,
                              const plait_conv_schedule *s, plait_isa isa) {
    int cpad = kpad_of(p->in_c), kpad = kpad_of(p->out_c);
    transform_inputs(p, first, count, V, cpad, count);
    multiply(isa, V, U, M, count, p->in_c, cpad, p->out_c, s);
    transform_outputs(p, first, count, M, kpad);
}
PER_ISA(chunk, chunk_body,
        (const wino_problem *p, long first, int count, float *V, float *M, const float *U,
         const plait_conv_schedule *s, plait_isa isa),
        (p, first, count, V, M, U, s, isa))

static void wino_run(const wino_problem *p, const float *U, float *scratch, const plait_conv_schedule *s) {
    int cpad = kpad_of(p->in_c), kpad = kpad_of(p->out_c);
    long tiles = (long)p->batch * p->tiles_h * p->tiles_w;
    long chunks = (tiles + p->chunk - 1) / p->chunk;
    int threads = direct_min(plait_threads(), WINO_MAX_THREADS);
    size_t per_thread = chunk_floats(p->chunk, cpad, kpad);
    plait_isa isa = direct_isa_resolved();
#pragma omp parallel num_threads(threads)
    {
        float *V = scratch + per_thread * (size_t)omp_get_thread_num();
        float *M = V + 36 * plane_floats(p->chunk, cpad);
#pragma omp for schedule(dynamic, 1)
        for (long chunk = 0; chunk < chunks; chunk++) {
            long first = chunk * p->chunk;
            int count = (int)(tiles - first < p->chunk ? tiles - first : p->chunk);
            PICK_ISA(chunk, isa)(p, first, count, V, M, U, s, isa);
        }
    }
}

static plait_conv_schedule gemm_schedule(const plait_conv_schedule *s) {
    plait_conv_schedule g = s ? *s : (plait_conv_schedule){0};
    int max_tile = plait_direct_max_tile(PLAIT_ISA_AUTO);
    if (g.tile_k < 1 || g.tile_k > DIRECT_MAX_TILE_K) g.tile_k = max_tile >= 24 ? 4 : 1;
    if (g.tile_w < 1 || g.tile_w * g.tile_k > max_tile) g.tile_w = direct_min(DIRECT_MAX_TILE_W, max_tile / g.tile_k);
    if (g.unroll < 1 || g.unroll > 2) g.unroll = 1;
    return g;
}

void direct_winograd_forward(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x, const float *w,
                             float *y, void *workspace) {
    plait_conv_schedule g = gemm_schedule(s);
    int C = d->in_channels, K = d->out_channels;
    wino_problem p = {d->batch, d->in_h, d->in_w, C, K,
                      direct_out_size(d->in_h, 3, 1, d->pad_h), direct_out_size(d->in_w, 3, 1, d->pad_w),
                      d->pad_h, d->pad_w, x, y, 0, 0, 0};
    p.tiles_h = direct_ceil_div(p.out_h, 4);
    p.tiles_w = direct_ceil_div(p.out_w, 4);
    p.chunk = chunk_of(s, C, K, (long)p.batch * p.tiles_h * p.tiles_w);
    float *U = workspace;
    transform_weights(w, K, C, false, U);
    wino_run(&p, U, U + 36 * plane_floats(C, kpad_of(K)), &g);
}

void direct_winograd_backward_data(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *dy,
                                   const float *w, float *dx, void *workspace) {
    plait_conv_schedule g = gemm_schedule(s);
    int K = d->out_channels, C = d->in_channels;
    int oh = direct_out_size(d->in_h, 3, 1, d->pad_h), ow = direct_out_size(d->in_w, 3, 1, d->pad_w);
    /* dx = a stride-1 convolution of dy (K channels) with flipped, transposed weights, padding 2 - pad */
    wino_problem p = {d->batch, oh, ow, K, C, d->in_h, d->in_w, 2 - d->pad_h, 2 - d->pad_w, dy, dx, 0, 0, 0};
    p.tiles_h = direct_ceil_div(p.out_h, 4);
    p.tiles_w = direct_ceil_div(p.out_w, 4);
    p.chunk = chunk_of(s, K, C, (long)p.batch * p.tiles_h * p.tiles_w);
    float *U = workspace;
    transform_weights(w, C, K, true, U);
    wino_run(&p, U, U + 36 * plane_floats(K, kpad_of(C)), &g);
}

/* ---- backward-weights: dW = G^T [ sum over tiles (A dY A^T) x (B^T X B) ] G ---- */

/* Z[t][i][k] = (A dy A^T)[t] for the 4x4 output tiles of a chunk (zero outside the output). */
ALWAYS_INLINE void transform_gradients(const wino_problem *p, const float *dy, long first, int count, float *Z,
                                       int kpad, int plane) {
    for (int i = 0; i < count; i++) {
        long tile = first + i;
        tile_place at = tile_at(p, tile);
        int n = at.n, h0 = at.h0, w0 = at.w0;
        size_t ps = plane_floats(plane, kpad);
        bool inside = h0 + 4 <= p->out_h && w0 + 4 <= p->out_w;
        const float *corner = dy + (((size_t)n * p->out_h + h0) * p->out_w + w0) * p->out_c;
        for (int k0 = 0; k0 < kpad; k0 += L) {
            float g[4][4][L], t[6][4][L], z[6][6][L];
            int lanes = direct_min(L, p->out_c - k0);
            float *out = Z + (size_t)i * kpad + k0;
            if (inside && lanes == L) { /* straight from dy to Z */
                ptrdiff_t row = (ptrdiff_t)p->out_w * p->out_c;
                for (int b = 0; b < 4; b++) gradient_1d(corner + (size_t)b * p->out_c + k0, row, t[0][b], 4 * L);
                for (int a = 0; a < 6; a++) gradient_1d(t[a][0], L, out + 6 * (size_t)a * ps, (ptrdiff_t)ps);
                continue;
            }
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) {
                    if (h0 + a >= p->out_h || w0 + b >= p->out_w) {
                        memset(g[a][b], 0, sizeof g[a][b]);
                        continue;
                    }
                    const float *src = dy + (((size_t)n * p->out_h + h0 + a) * p->out_w + w0 + b) * p->out_c + k0;
                    copy_lanes(g[a][b], src, lanes);
                }
            for (int b = 0; b < 4; b++) gradient_1d(g[0][b], 4 * L, t[0][b], 4 * L);
            for (int a = 0; a < 6; a++) gradient_1d(t[a][0], L, z[a][0], L);
            for (int q = 0; q < 36; q++) memcpy(out + q * ps, z[q / 6][q % 6], L * sizeof(float));
        }
    }
}

ALWAYS_INLINE void transforms_body(const wino_problem *p, const float *dy, long first, int count, float *V, float *Z,
                                   int plane) {
    transform_inputs(p, first, count, V, kpad_of(p->in_c), plane);
    transform_gradients(p, dy, first, count, Z, kpad_of(p->out_c), plane);
}
PER_ISA(transforms, transforms_body,
        (const wino_problem *p, const float *dy, long first, int count, float *V, float *Z, int plane),
        (p, dy, first, count, V, Z, plane))

/* dw[k][r][s][c] += (G^T M G)[r][s] for 16 output channels (kv) x 16 input channels from c0: the results
 * are turned in a small buffer so that dw ([K][3][3][C]) is updated in runs of contiguous input channels. */
ALWAYS_INLINE void finish_block(const float *M, int C, int K, int kpad, int kv, int c0, float *dw) {
    float o[9][L][L]; /* [tap][k lane][c lane] */
    int cn = direct_min(L, C - c0), kn = direct_min(L, K - kv * L);
    size_t ps = plane_floats(C, kpad);
    for (int i = 0; i < cn; i++) {
        float t[3][6][L], r[3][3][L];
        const float *row = M + (size_t)(c0 + i) * kpad + (size_t)kv * L;
        /* the next block (the next 16 output channels) reads the next line of this row in each of the 36
         * planes: more streams than the hardware prefetchers follow, and M (36 x C x K) is far larger than the
         * caches */
        for (int q = 0; q < 36; q++) __builtin_prefetch(row + q * ps + (size_t)L);
        for (int b = 0; b < 6; b++) weight_grad_1d(row + b * ps, 6 * (ptrdiff_t)ps, t[0][b], 6 * L);
        for (int a = 0; a < 3; a++) weight_grad_1d(t[a][0], L, r[a][0], L);
        for (int tap = 0; tap < 9; tap++)
            for (int l = 0; l < L; l++) o[tap][l][i] = r[tap / 3][tap % 3][l];
    }
    for (int l = 0; l < kn; l++)
        for (int tap = 0; tap < 9; tap++) {
            float *dst = dw + ((size_t)(kv * L + l) * 9 + tap) * C + c0;
            for (int i = 0; i < cn; i++) dst[i] += o[tap][l][i];
        }
}

PER_ISA(finish_blocks, finish_block, (const float *M, int C, int K, int kpad, int kv, int c0, float *dw),
        (M, C, K, kpad, kv, c0, dw))

typedef struct wgrad_grid {
    plait_isa isa;
    int C, kpad, kvecs, cpad, tile_c, tile_k, c_tiles, k_tiles;
} wgrad_grid;

/* One unit (tap q x tile_c input channels x tile_k output vectors) of M += V^T Z over a chunk of `count`
 * tiles; `zero` starts M's unit from zero, in cache, rather than in a pass of its own. */
static void wgrad_unit(const wgrad_grid *g, long unit, float *M, const float *V, const float *Z, int count,
                       bool zero) {
    int kt = (int)(unit % g->k_tiles);
    long rest = unit / g->k_tiles;
    int ct = (int)(rest % g->c_tiles), q = (int)(rest / g->c_tiles);
    int c0 = ct * g->tile_c, kv = kt * g->tile_k;
    int mc = direct_min(g->tile_c, g->C - c0), nr = direct_min(g->tile_k, g->kvecs - kv);
    float *acc = M + q * plane_floats(g->C, g->kpad) + (size_t)c0 * g->kpad + (size_t)kv * L;
    if (zero)
        for (int i = 0; i < mc; i++) memset(acc + (size_t)i * g->kpad, 0, (size_t)nr * L * sizeof(float));
    direct_wtile t = {
        .x = V + q * plane_floats(count, g->cpad) + c0, .x_pixel = g->cpad, .x_row = 0, .x_image = 0,
        .dy = Z + q * plane_floats(count, g->kpad) + (size_t)kv * L, .dy_pixel = g->kpad, .dy_row = 0, .dy_image = 0,
        .pixels = count, .rows = 1, .images = 1,
        .acc = acc, .acc_c = g->kpad, .last_lanes = L,
    };
    direct_run_wtile(g->isa, &t, mc, nr);
}

void direct_winograd_backward_weights(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x,
                                      const float *dy, float *dw, void *workspace) {
    int C = d->in_channels, K = d->out_channels, cpad = kpad_of(C), kpad = kpad_of(K), kvecs = kpad / L;
    wino_problem p = {d->batch, d->in_h, d->in_w, C, K,
                      direct_out_size(d->in_h, 3, 1, d->pad_h), direct_out_size(d->in_w, 3, 1, d->pad_w),
                      d->pad_h, d->pad_w, x, NULL, 0, 0, 0};
    p.tiles_h = direct_ceil_div(p.out_h, 4);
    p.tiles_w = direct_ceil_div(p.out_w, 4);
    p.chunk = wgrad_chunk(s, C, K, tiles_of(d));
    int max_tile = plait_direct_max_tile(PLAIT_ISA_AUTO);
    int tile_k = s && s->tile_k >= 1 && s->tile_k <= DIRECT_MAX_TILE_K ? s->tile_k : direct_min(4, kvecs);
    int tile_c = s && s->tile_w >= 1 && s->tile_w * tile_k <= max_tile ? s->tile_w : max_tile / (tile_k + 1);
    tile_c = direct_max(1, direct_min(direct_min(tile_c, DIRECT_MAX_TILE_W), C));
    while (tile_c * tile_k > max_tile) tile_c--;
    float *M = workspace; /* [36][C][kpad], planes plane_floats(C, kpad) apart */
    float *V = M + 36 * plane_floats(C, kpad), *Z = V + 36 * plane_floats(p.chunk, cpad);
    long tiles = (long)p.batch * p.tiles_h * p.tiles_w;
    int c_tiles = direct_ceil_div(C, tile_c), k_tiles = direct_ceil_div(kvecs, tile_k);
    long units = 36L * c_tiles * k_tiles;
    plait_isa isa = direct_isa_resolved();
    wgrad_grid g = {isa, C, kpad, kvecs, cpad, tile_c, tile_k, c_tiles, k_tiles};
    void (*transforms)(const wino_problem *, const float *, long, int, float *, float *, int) =
        PICK_ISA(transforms, isa);
    int threads = plait_threads();
    long chunks = (tiles + p.chunk - 1) / p.chunk;
    size_t m_floats = 36 * plane_floats(C, kpad);
    size_t per_thread = m_floats + chunk_floats(p.chunk, cpad, kpad);
    if (threads > 1 && threads <= wgrad_private_copies(C, K) && chunks >= 2 * threads) {
        /* private M per thread: its chunks t, t + threads, ... (at least two each) */
#pragma omp parallel num_threads(threads)
        {
            int t = omp_get_thread_num();
            float *Mt = M + per_thread * (size_t)t, *Vt = Mt + m_floats, *Zt = Vt + 36 * plane_floats(p.chunk, cpad);
            for (long chunk = t; chunk < chunks; chunk += threads) {
                long first = chunk * p.chunk;
                int count = (int)(tiles - first < p.chunk ? tiles - first : p.chunk);
                transforms(&p, dy, first, count, Vt, Zt, count);
                for (long unit = 0; unit < units; unit++) wgrad_unit(&g, unit, Mt, Vt, Zt, count, chunk == t);
            }
        }
        long rows = 36L * C;
#pragma omp parallel for schedule(static) num_threads(threads)
        for (long row = 0; row < rows; row++)
            for (int t = 1; t < threads; t++) {
                float *to = M + (size_t)(row / C) * plane_floats(C, kpad) + (size_t)(row % C) * kpad;
                const float *from = to + per_thread * (size_t)t;
                for (int i = 0; i < kpad; i++) to[i] += from[i];
            }
    } else {
#pragma omp parallel num_threads(threads)
        for (long first = 0; first < tiles; first += p.chunk) {
            int count = (int)(tiles - first < p.chunk ? tiles - first : p.chunk);
            /* the chunk's transforms split over threads in groups of 4 tiles */
            int parts = direct_ceil_div(count, 4);
#pragma omp for schedule(static)
            for (int part = 0; part < parts; part++) {
                int begin = part * 4;
                transforms(&p, dy, first + begin, direct_min(4, count - begin), V + (size_t)begin * cpad,
                           Z + (size_t)begin * kpad, count);
            }
#pragma omp for schedule(static)
            for (long unit = 0; unit < units; unit++) wgrad_unit(&g, unit, M, V, Z, count, first == 0);
        }
    }
    void (*finish)(const float *, int, int, int, int, int, float *) = PICK_ISA(finish_blocks, isa);
    int c_blocks = direct_ceil_div(C, L);
    /* k-vectors innermost: consecutive blocks read the next line of the same rows of M's 36 planes (c blocks
     * innermost stepped 16 rows down each time). Zen 4, 4x4x512 at batch 64 (M 37 MiB), alternating processes:
     * the whole backward-weights 1.08-1.09x on one thread, 1.06-1.12x on two. */
#pragma omp parallel for schedule(static) num_threads(plait_threads())
    for (long item = 0; item < (long)kvecs * c_blocks; item++)
        finish(M, C, K, kpad, (int)(item % kvecs), (int)(item / kvecs) * L, dw);
}
