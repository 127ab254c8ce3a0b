/* Level-2 micro-kernels for AVX2: a vector of 16 output channels is two ymm registers. Contracts in
 * direct.h. */
#include <immintrin.h>

#include "kernels/direct/direct.h"

#define TARGET __attribute__((target("avx2,fma")))
#define INLINE static inline __attribute__((always_inline))

TARGET INLINE __m256i lane_mask(int valid, int half) {
    __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid - 8 * half), index);
}

TARGET INLINE void tile_step(const float *xp, const float *wp, ptrdiff_t x_pixel, ptrdiff_t x_vthread,
                             ptrdiff_t w_kvec, int c, const int V, const int MR, const int NR, __m256 *acc) {
    __m256 wv[2 * DIRECT_MAX_TILE_K];
#pragma GCC unroll 8
    for (int j = 0; j < 2 * NR; j++) wv[j] = _mm256_loadu_ps(wp + (j / 2) * w_kvec + DIRECT_LANES * c + 8 * (j % 2));
#pragma GCC unroll 4
    for (int v = 0; v < V; v++)
#pragma GCC unroll 16
        for (int m = 0; m < MR; m++) {
            __m256 b = _mm256_broadcast_ss(xp + v * x_vthread + m * x_pixel + c);
#pragma GCC unroll 8
            for (int j = 0; j < 2 * NR; j++)
                acc[(v * MR + m) * 2 * NR + j] = _mm256_fmadd_ps(b, wv[j], acc[(v * MR + m) * 2 * NR + j]);
        }
}

/* The tile's positions from y on: the sums, or with ZERO zeros (the unreached phases beside them). */
TARGET INLINE void tile_store(const direct_tile *t, float *y, const __m256 *acc, const bool ZERO, __m256i tail_lo,
                              __m256i tail_hi, const int V, const int MR, const int NR, const bool TAIL) {
#pragma GCC unroll 4
    for (int v = 0; v < V; v++)
#pragma GCC unroll 16
        for (int m = 0; m < MR; m++)
#pragma GCC unroll 8
            for (int j = 0; j < 2 * NR; j++) {
                float *yp = y + v * t->y_vthread + m * t->y_pixel + 8 * j;
                __m256 value = ZERO ? _mm256_setzero_ps() : acc[(v * MR + m) * 2 * NR + j];
                if (!TAIL || j < 2 * NR - 2)
                    _mm256_storeu_ps(yp, value);
                else
                    _mm256_maskstore_ps(yp, j % 2 ? tail_hi : tail_lo, value);
            }
}

/* TAIL: the last vector has fewer than 16 valid lanes. Only then are loads and stores masked: Zen 3 runs a
 * masked 256-bit store as microcode, and with NR = 1 every store of a tile went through it. Measured, one
 * thread, the 6x16 tile on a 1x1 64 -> 64 layer (32x32, batch 64): 23-36 -> 42-59 GFLOP/s. */
TARGET INLINE void tile_body(const direct_tile *t, const int V, const int MR, const int NR, const int U,
                             const bool TAIL) {
    __m256 acc[2 * 6];
    const __m256i tail_lo = lane_mask(t->last_lanes, 0), tail_hi = lane_mask(t->last_lanes, 1);
    const __m256i all = _mm256_set1_epi32(-1);
#pragma GCC unroll 4
    for (int v = 0; v < V; v++)
#pragma GCC unroll 16
        for (int m = 0; m < MR; m++)
#pragma GCC unroll 8
            for (int j = 0; j < 2 * NR; j++) {
                const float *yp = t->y + v * t->y_vthread + m * t->y_pixel + 8 * j;
                __m256i mask = j < 2 * NR - 2 ? all : (j % 2 ? tail_hi : tail_lo);
                acc[(v * MR + m) * 2 * NR + j] = !t->accumulate ? _mm256_setzero_ps()
                                                 : TAIL         ? _mm256_maskload_ps(yp, mask)
                                                                : _mm256_loadu_ps(yp);
            }
    const ptrdiff_t x_pixel = t->x_pixel, x_vthread = t->x_vthread, w_kvec = t->w_kvec;
    const int channels = t->channels;
    for (int r = 0; r < t->taps_h; r++)
        for (int s = 0; s < t->taps_w; s++) {
            const float *xp = t->x + r * t->x_tap_row + s * t->x_tap_col;
            const float *wp = t->w + r * t->w_tap_row + s * t->w_tap_col;
            int c = 0;
            for (; c + U <= channels; c += U)
#pragma GCC unroll 4
                for (int u = 0; u < U; u++) tile_step(xp, wp, x_pixel, x_vthread, w_kvec, c + u, V, MR, NR, acc);
            for (; c < channels; c++) tile_step(xp, wp, x_pixel, x_vthread, w_kvec, c, V, MR, NR, acc);
        }
    tile_store(t, t->y, acc, false, tail_lo, tail_hi, V, MR, NR, TAIL);
    for (int z = 0; z < t->zeros; z++)
        tile_store(t, t->y + t->zero_offset[z], NULL, true, tail_lo, tail_hi, V, MR, NR, TAIL);
}

#define TILE_FN(V, MR, NR, U)                                                                      \
    static TARGET void tile_v##V##_m##MR##_n##NR##_u##U(const direct_tile *t) {                        \
        direct_tile u = *t;                                                                        \
        for (int i = 0; i < (t->tiles > 1 ? t->tiles : 1); i++) {                                  \
            if (t->last_lanes < DIRECT_LANES)                                                      \
                tile_body(&u, V, MR, NR, U, true);                                                 \
            else                                                                                   \
                tile_body(&u, V, MR, NR, U, false);                                                \
            u.x += MR * u.x_pixel;                                                                 \
            u.y += MR * u.y_pixel;                                                                 \
        }                                                                                          \
    }
#define TILE_ENTRY(V, MR, NR, U) [V][MR][NR][U] = tile_v##V##_m##MR##_n##NR##_u##U,

#define MR_UPTO_1(X, V, NR, U) X(V, 1, NR, U)
#define MR_UPTO_2(X, V, NR, U) MR_UPTO_1(X, V, NR, U) X(V, 2, NR, U)
#define MR_UPTO_3(X, V, NR, U) MR_UPTO_2(X, V, NR, U) X(V, 3, NR, U)
#define MR_UPTO_4(X, V, NR, U) MR_UPTO_3(X, V, NR, U) X(V, 4, NR, U)
#define MR_UPTO_5(X, V, NR, U) MR_UPTO_4(X, V, NR, U) X(V, 5, NR, U)
#define MR_UPTO_6(X, V, NR, U) MR_UPTO_5(X, V, NR, U) X(V, 6, NR, U)

/* Shapes with V * MR * NR <= 6 (12 ymm accumulators of 16 registers). */
#define ALL_SHAPES(X, U)                                                                           \
    MR_UPTO_6(X, 1, 1, U) MR_UPTO_3(X, 1, 2, U) MR_UPTO_2(X, 1, 3, U) MR_UPTO_1(X, 1, 4, U)        \
    MR_UPTO_3(X, 2, 1, U) MR_UPTO_1(X, 2, 2, U) MR_UPTO_1(X, 4, 1, U)

ALL_SHAPES(TILE_FN, 1)
ALL_SHAPES(TILE_FN, 2)

static const direct_tile_fn tiles[DIRECT_MAX_VTHREADS + 1][7][DIRECT_MAX_TILE_K + 1][3] = {
    ALL_SHAPES(TILE_ENTRY, 1) ALL_SHAPES(TILE_ENTRY, 2)};

direct_tile_fn direct_tile_avx2(int vthreads, int tile_w, int tile_k, int unroll) {
    if (vthreads < 1 || vthreads > DIRECT_MAX_VTHREADS || tile_w < 1 || tile_w > 6 || tile_k < 1 ||
        tile_k > DIRECT_MAX_TILE_K || unroll < 1 || unroll > 2)
        return NULL;
    return tiles[vthreads][tile_w][tile_k][unroll];
}
