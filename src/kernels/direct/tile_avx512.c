/* Level-2 micro-kernels for AVX-512: one function per register-tile shape, so the accumulators live in
 * zmm registers. Contracts in direct.h. */
#include <immintrin.h>

#include "kernels/direct/direct.h"

#define TARGET __attribute__((target("avx512f,fma")))
#define INLINE static inline __attribute__((always_inline))

/* Accumulators are indexed [(v * MR + m) * NR + j]; every loop has constant bounds after inlining, so
 * GCC unrolls them and keeps the array in registers. */
TARGET INLINE void tile_step(const float *xp, const float *wp, ptrdiff_t x_pixel, ptrdiff_t x_vthread,
                             ptrdiff_t w_kvec, int c, const int V, const int MR, const int NR, __m512 *acc) {
    __m512 wv[DIRECT_MAX_TILE_K];
#pragma GCC unroll 4
    for (int j = 0; j < NR; j++) wv[j] = _mm512_loadu_ps(wp + j * w_kvec + DIRECT_LANES * c);
#pragma GCC unroll 4
    for (int v = 0; v < V; v++)
#pragma GCC unroll 16
        for (int m = 0; m < MR; m++) {
            __m512 b = _mm512_set1_ps(xp[v * x_vthread + m * x_pixel + c]);
#pragma GCC unroll 4
            for (int j = 0; j < NR; j++) acc[(v * MR + m) * NR + j] = _mm512_fmadd_ps(b, wv[j], acc[(v * MR + m) * NR + j]);
        }
}

/* The next tile's x from channel c on, a line per pixel. */
TARGET INLINE void prefetch_next_x(const float *xp, ptrdiff_t x_pixel, ptrdiff_t x_vthread, int c, const int V,
                                   const int MR) {
#pragma GCC unroll 4
    for (int v = 0; v < V; v++)
#pragma GCC unroll 16
        for (int m = 0; m < MR; m++) _mm_prefetch((const char *)(xp + v * x_vthread + (MR + m) * x_pixel + c), _MM_HINT_T0);
}

/* One tap's channels, U a step, unrolled by two: the loop's counter and pointer steps, and the prefetches that
 * were here (the weights' 16 channels ahead, x's two lines ahead), were a share of its uops that the FMAs paid
 * for (no prefetches: tile alone 1.05-1.2x, 1x1 and strided layers 1.0-1.06x, Winograd's products 0.98-1.11x).
 * NEXT (x is read once, as the framework hints): the next tile's pixels, a line of each per 16 channels, which
 * no hardware prefetcher guesses. */
TARGET INLINE void tile_channels(const float *xp, const float *wp, ptrdiff_t x_pixel, ptrdiff_t x_vthread,
                                 ptrdiff_t w_kvec, int channels, const bool NEXT, const int V, const int MR,
                                 const int NR, const int U, __m512 *acc) {
    int c = 0;
    if (NEXT)
        for (; c + 16 <= channels; c += 16) {
            prefetch_next_x(xp, x_pixel, x_vthread, c, V, MR);
#pragma GCC unroll 4
            for (int k = 0; k < 16; k += U)
#pragma GCC unroll 4
                for (int u = 0; u < U; u++) tile_step(xp, wp, x_pixel, x_vthread, w_kvec, c + k + u, V, MR, NR, acc);
        }
    if (NEXT && c < channels) prefetch_next_x(xp, x_pixel, x_vthread, c, V, MR);
#pragma GCC unroll 2
    for (; c + U <= channels; c += U)
#pragma GCC unroll 4
        for (int u = 0; u < U; u++) tile_step(xp, wp, x_pixel, x_vthread, w_kvec, c + u, V, MR, NR, acc);
    for (; c < channels; c++) tile_step(xp, wp, x_pixel, x_vthread, w_kvec, c, V, MR, NR, acc);
}

/* The tile's positions from y on: the sums, or with ZERO zeros (the unreached phases beside them). */
TARGET INLINE void tile_store(const direct_tile *t, float *y, const __m512 *acc, const bool ZERO, __mmask16 tail,
                              const int V, const int MR, const int NR) {
#pragma GCC unroll 4
    for (int v = 0; v < V; v++)
#pragma GCC unroll 16
        for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
            for (int j = 0; j < NR; j++) {
                float *yp = y + v * t->y_vthread + m * t->y_pixel + DIRECT_LANES * j;
                __m512 value = ZERO ? _mm512_setzero_ps() : acc[(v * MR + m) * NR + j];
                if (j == NR - 1)
                    _mm512_mask_storeu_ps(yp, tail, value);
                else
                    _mm512_storeu_ps(yp, value);
            }
}

TARGET INLINE void tile_body(const direct_tile *t, const int V, const int MR, const int NR, const int U) {
    __m512 acc[DIRECT_MAX_VTHREADS * DIRECT_MAX_TILE_W * DIRECT_MAX_TILE_K];
    const __mmask16 tail = (__mmask16)((1u << t->last_lanes) - 1u);
#pragma GCC unroll 4
    for (int v = 0; v < V; v++)
#pragma GCC unroll 16
        for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
            for (int j = 0; j < NR; j++) {
                const float *yp = t->y + v * t->y_vthread + m * t->y_pixel + DIRECT_LANES * j;
                __mmask16 mask = j == NR - 1 ? tail : (__mmask16)0xffff;
                acc[(v * MR + m) * NR + j] =
                    t->accumulate ? _mm512_maskz_loadu_ps(mask, yp) : _mm512_setzero_ps();
            }
    const ptrdiff_t x_pixel = t->x_pixel, x_vthread = t->x_vthread, w_kvec = t->w_kvec;
    /* Where x comes from memory (the framework's hint), the next tile's pixels, a tile ahead: the L2 streamer
     * alone left 1x1 layers waiting on x (Xeon, batch 64, one thread: 256 -> 64 at 32x32 forward 1.12x, 64 -> 256
     * backward-data 1.14x, the first of several groups of output channels 1.02-1.07x). Otherwise two lines
     * further along each pixel's channels: 256 -> 1024 at 8x8, whose later groups of output channels read x
     * from L1 and L2, ran 0.95-0.97x with the next tile's. */
    const bool next = t->prefetch_next_x && MR * x_pixel > 32;
    const int channels = t->channels;
    /* The next tile's outputs, for writing: their read-for-ownership misses overlap this tile's sums instead
     * of stalling its stores (128 -> 512 channels, 16x16, forward: 1.12x). Into L2 by a read prefetch rather
     * than into L1 by prefetchw: a line no other core holds comes exclusive all the same, and L2 keeps more
     * misses in flight than L1's fill buffers, which the loads of x need too (1x1 and strided 3x3 layers, paired
     * call by call: 0.98-1.05x, 17 of 18 rows at or above 1.0x, one thread and two, 2026-12-06). So prefetched,
     * the 27-long sums of the CIFAR stem gain too (median of paired runs 1.09-1.38x, its best runs level; with
     * prefetchw they lost), and only sums shorter than 16 go without. */
    if (t->taps_h * t->taps_w * channels >= 16)
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
#pragma GCC unroll 16
            for (int m = 0; m < MR; m++)
#pragma GCC unroll 4
                for (int j = 0; j < NR; j++)
                    for (int z = -1; z < t->zeros; z++)
                        __builtin_prefetch(t->y + v * t->y_vthread + (MR + m) * t->y_pixel + DIRECT_LANES * j +
                                               (z < 0 ? 0 : t->zero_offset[z]),
                                           0, 2);
    /* The zeros first: they depend on nothing, and stored before the sums they drain while the multiply-adds
     * run instead of queueing behind the sums at the end (strided 1x1 backward-data, paired call by call:
     * ResNet-18's shortcuts 1.01-1.07x one thread, 1.02-1.09x two; ResNet-50's, whose sums are 2-4 times
     * longer, 0.99-1.02x). */
    for (int z = 0; z < t->zeros; z++) tile_store(t, t->y + t->zero_offset[z], NULL, true, tail, V, MR, NR);
    for (int r = 0; r < t->taps_h; r++)
        for (int s = 0; s < t->taps_w; s++) {
            const float *xp = t->x + r * t->x_tap_row + s * t->x_tap_col;
            const float *wp = t->w + r * t->w_tap_row + s * t->w_tap_col;
            if (next)
                tile_channels(xp, wp, x_pixel, x_vthread, w_kvec, channels, true, V, MR, NR, U, acc);
            else
                tile_channels(xp, wp, x_pixel, x_vthread, w_kvec, channels, false, V, MR, NR, U, acc);
        }
    tile_store(t, t->y, acc, false, tail, V, MR, NR);
}

#define TILE_FN(V, MR, NR, U)                                                                      \
    static TARGET void tile_v##V##_m##MR##_n##NR##_u##U(const direct_tile *t) {                        \
        direct_tile u = *t;                                                                        \
        for (int i = 0; i < (t->tiles > 1 ? t->tiles : 1); i++) {                                  \
            tile_body(&u, V, MR, NR, U);                                                           \
            u.x += MR * u.x_pixel;                                                                 \
            u.y += MR * u.y_pixel;                                                                 \
        }                                                                                          \
    }
#define TILE_ENTRY(V, MR, NR, U) [V][MR][NR][U] = tile_v##V##_m##MR##_n##NR##_u##U,

/* Shapes with V * MR * NR <= 28 accumulators (32 zmm registers minus weights and a broadcast). */
#define MR_UPTO_1(X, V, NR, U) X(V, 1, NR, U)
#define MR_UPTO_2(X, V, NR, U) MR_UPTO_1(X, V, NR, U) X(V, 2, NR, U)
#define MR_UPTO_3(X, V, NR, U) MR_UPTO_2(X, V, NR, U) X(V, 3, NR, U)
#define MR_UPTO_4(X, V, NR, U) MR_UPTO_3(X, V, NR, U) X(V, 4, NR, U)
#define MR_UPTO_5(X, V, NR, U) MR_UPTO_4(X, V, NR, U) X(V, 5, NR, U)
#define MR_UPTO_6(X, V, NR, U) MR_UPTO_5(X, V, NR, U) X(V, 6, NR, U)
#define MR_UPTO_7(X, V, NR, U) MR_UPTO_6(X, V, NR, U) X(V, 7, NR, U)
#define MR_UPTO_8(X, V, NR, U) MR_UPTO_7(X, V, NR, U) X(V, 8, NR, U)
#define MR_UPTO_9(X, V, NR, U) MR_UPTO_8(X, V, NR, U) X(V, 9, NR, U)
#define MR_UPTO_10(X, V, NR, U) MR_UPTO_9(X, V, NR, U) X(V, 10, NR, U)
#define MR_UPTO_11(X, V, NR, U) MR_UPTO_10(X, V, NR, U) X(V, 11, NR, U)
#define MR_UPTO_12(X, V, NR, U) MR_UPTO_11(X, V, NR, U) X(V, 12, NR, U)
#define MR_UPTO_13(X, V, NR, U) MR_UPTO_12(X, V, NR, U) X(V, 13, NR, U)
#define MR_UPTO_14(X, V, NR, U) MR_UPTO_13(X, V, NR, U) X(V, 14, NR, U)
#define MR_UPTO_15(X, V, NR, U) MR_UPTO_14(X, V, NR, U) X(V, 15, NR, U)
#define MR_UPTO_16(X, V, NR, U) MR_UPTO_15(X, V, NR, U) X(V, 16, NR, U)

#define ALL_SHAPES(X, U)                                                                           \
    MR_UPTO_16(X, 1, 1, U) MR_UPTO_14(X, 1, 2, U) MR_UPTO_9(X, 1, 3, U) MR_UPTO_7(X, 1, 4, U)      \
    MR_UPTO_14(X, 2, 1, U) MR_UPTO_7(X, 2, 2, U) MR_UPTO_4(X, 2, 3, U) MR_UPTO_3(X, 2, 4, U)       \
    MR_UPTO_7(X, 4, 1, U) MR_UPTO_3(X, 4, 2, U) MR_UPTO_2(X, 4, 3, U) MR_UPTO_1(X, 4, 4, U)

ALL_SHAPES(TILE_FN, 1)
ALL_SHAPES(TILE_FN, 2)

static const direct_tile_fn tiles[DIRECT_MAX_VTHREADS + 1][DIRECT_MAX_TILE_W + 1][DIRECT_MAX_TILE_K + 1][3] = {
    ALL_SHAPES(TILE_ENTRY, 1) ALL_SHAPES(TILE_ENTRY, 2)};

direct_tile_fn direct_tile_avx512(int vthreads, int tile_w, int tile_k, int unroll) {
    if (vthreads < 1 || vthreads > DIRECT_MAX_VTHREADS || tile_w < 1 || tile_w > DIRECT_MAX_TILE_W || tile_k < 1 ||
        tile_k > DIRECT_MAX_TILE_K || unroll < 1 || unroll > 2)
        return NULL;
    return tiles[vthreads][tile_w][tile_k][unroll];
}
