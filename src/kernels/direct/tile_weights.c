/* Level-2 micro-kernels of backward-weights: a tile of MC input channels x NR vectors of 16 output
 * channels of the packed gradient, summed over a run of pixels. Contract in direct.h. */
#include <immintrin.h>

#include "kernels/direct/direct.h"

#define INLINE static inline __attribute__((always_inline))
#define AVX512 __attribute__((target("avx512f,fma")))
#define AVX2 __attribute__((target("avx2,fma")))

/* `count` pixels of the patch tile from xp and dp on, pulling in a line of `first` (FIRST_SPAN) and of
 * `second` (SECOND_SPAN) per pixel. */
AVX512 INLINE void patch_pixels(const direct_wtile *t, const float **xp, const float **dp, int count,
                                const char *first, const char *second, const bool FIRST_SPAN, const bool SECOND_SPAN,
                                const int RUN, const int FIRST, const int MC, const int NR, const bool FULL,
                                __mmask16 tail, __m512 *acc) {
    const float *x = *xp, *d = *dp;
#pragma GCC unroll 2
    for (int p = 0; p < count; p++) {
        if (FIRST_SPAN) _mm_prefetch(first + 64 * (ptrdiff_t)p, _MM_HINT_T1);
        if (SECOND_SPAN) _mm_prefetch(second + 64 * (ptrdiff_t)p, _MM_HINT_T1);
        __m512 g[DIRECT_MAX_TILE_K];
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) {
            const float *v = d + DIRECT_LANES * j;
            g[j] = FULL || j < NR - 1 ? _mm512_loadu_ps(v) : _mm512_maskz_loadu_ps(tail, v);
        }
#pragma GCC unroll 28
        for (int i = 0; i < MC; i++) {
            const int e = FIRST + i;
            __m512 v = _mm512_set1_ps(x[e / RUN * t->x_tap_row + e % RUN]);
#pragma GCC unroll 4
            for (int j = 0; j < NR; j++) acc[i * NR + j] = _mm512_fmadd_ps(v, g[j], acc[i * NR + j]);
        }
        x += t->x_pixel;
        d += t->dy_pixel;
    }
    *xp = x, *dp = d;
}

/* The patch tile: elements [FIRST, FIRST + MC) of a patch of kernel rows of RUN floats, by NR vectors. The
 * element offsets are constants, so each broadcast is one FMA with an embedded broadcast from a row pointer.
 * PREFETCH: pull t->prefetch in, a line of each span per pixel (a compile-time variant). Each run of pixels is
 * cut where a span ends, so no pixel tests whether to prefetch (the tests cost the tile 7-10%). FULL: the last
 * vector has every lane (a variant too: its masked load per pixel cost the 14 x 2 tile 3%, 88% of the FMA peak
 * against 91% in a hand-written loop). */
AVX512 INLINE void patch_avx512_body(const direct_wtile *t, const int RUN, const int FIRST, const int MC, const int NR,
                                     const bool PREFETCH, const bool FULL) {
    __m512 acc[DIRECT_MAX_TILE_W * DIRECT_MAX_TILE_K];
    const __mmask16 tail = (__mmask16)((1u << t->last_lanes) - 1u);
#pragma GCC unroll 28
    for (int i = 0; i < MC; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++)
            acc[i * NR + j] = _mm512_maskz_loadu_ps(j == NR - 1 ? tail : 0xffff, t->acc + i * t->acc_c + DIRECT_LANES * j);
    /* the longer span first */
    const int longer = t->prefetch[1].lines > t->prefetch[0].lines;
    const direct_line_span a = t->prefetch[longer], b = t->prefetch[1 - longer];
    int seen = 0;
    for (int image = 0; image < t->images; image++)
        for (int q = 0; q < t->rows; q++) {
            const float *xp = t->x + image * t->x_image + q * t->x_row;
            const float *dp = t->dy + image * t->dy_image + q * t->dy_row;
            if (PREFETCH) {
                /* the spans' addresses are formed only for pixels they cover (a span may be empty, at NULL) */
                int both = direct_max(0, direct_min(t->pixels, b.lines - seen));
                int one = direct_max(both, direct_min(t->pixels, a.lines - seen));
                if (both > 0)
                    patch_pixels(t, &xp, &dp, both, a.at + 64 * (ptrdiff_t)seen, b.at + 64 * (ptrdiff_t)seen, true,
                                 true, RUN, FIRST, MC, NR, FULL, tail, acc);
                if (one > both)
                    patch_pixels(t, &xp, &dp, one - both, a.at + 64 * (ptrdiff_t)(seen + both), NULL, true, false,
                                 RUN, FIRST, MC, NR, FULL, tail, acc);
                patch_pixels(t, &xp, &dp, t->pixels - one, NULL, NULL, false, false, RUN, FIRST, MC, NR, FULL, tail,
                             acc);
            } else {
                patch_pixels(t, &xp, &dp, t->pixels, NULL, NULL, false, false, RUN, FIRST, MC, NR, FULL, tail, acc);
            }
            seen += t->pixels;
        }
#pragma GCC unroll 28
    for (int i = 0; i < MC; i++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++)
            _mm512_mask_storeu_ps(t->acc + i * t->acc_c + DIRECT_LANES * j, j == NR - 1 ? tail : 0xffff, acc[i * NR + j]);
}

/* The backward-weights tile is the patch tile of one run: x_tap_row is never used. */
AVX512 INLINE void wtile_avx512_body(const direct_wtile *t, const int MC, const int NR) {
    const bool prefetch = t->prefetch[0].lines > 0 || t->prefetch[1].lines > 0, full = t->last_lanes == DIRECT_LANES;
    if (prefetch && full)
        patch_avx512_body(t, MC, 0, MC, NR, true, true);
    else if (prefetch)
        patch_avx512_body(t, MC, 0, MC, NR, true, false);
    else if (full)
        patch_avx512_body(t, MC, 0, MC, NR, false, true);
    else
        patch_avx512_body(t, MC, 0, MC, NR, false, false);
}

/* The 3x3 stem over 3 channels (27 elements, runs of 9): 7 x 4 tiles (the last 6 x 4), 14 x 2 (13 x 2), 27 x 1 */
#define PATCH_SHAPES(X) X(9, 0, 7, 4) X(9, 7, 7, 4) X(9, 14, 7, 4) X(9, 21, 6, 4) X(9, 0, 14, 2) X(9, 14, 13, 2) X(9, 0, 27, 1)
#define PATCH512(RUN, FIRST, MC, NR)                                                 \
    static AVX512 void patch512_##RUN##_##FIRST##_##MC##_##NR(const direct_wtile *t) { \
        patch_avx512_body(t, RUN, FIRST, MC, NR, false, false);                      \
    }
#define PATCH_ENTRY(RUN, FIRST, MC, NR) {RUN, FIRST, MC, NR, patch512_##RUN##_##FIRST##_##MC##_##NR},
PATCH_SHAPES(PATCH512)

direct_wtile_fn direct_patch_tile_avx512(int run, int first, int count, int nr) {
    static const struct { int run, first, count, nr; direct_wtile_fn fn; } table[] = {PATCH_SHAPES(PATCH_ENTRY)};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].run == run && table[i].first == first && table[i].count == count && table[i].nr == nr)
            return table[i].fn;
    return NULL;
}

void direct_patch_tile_portable(const direct_wtile *t, int run, int first, int count, int nr) {
    int lanes = (nr - 1) * DIRECT_LANES + t->last_lanes;
    ptrdiff_t offset[DIRECT_MAX_TILE_W * DIRECT_MAX_TILE_K]; /* element i's place in x, once per call */
    for (int i = 0; i < count; i++) offset[i] = (first + i) / run * t->x_tap_row + (first + i) % run;
    for (int b = 0; b < t->images; b++)
        for (int q = 0; q < t->rows; q++)
            for (int p = 0; p < t->pixels; p++) {
                const float *xp = t->x + b * t->x_image + q * t->x_row + p * t->x_pixel;
                const float *dp = t->dy + b * t->dy_image + q * t->dy_row + p * t->dy_pixel;
                for (int i = 0; i < count; i++) {
                    float *a = t->acc + i * t->acc_c, v = xp[offset[i]];
                    for (int l = 0; l < lanes; l++) a[l] += v * dp[l];
                }
            }
}

AVX2 INLINE __m256i lane_mask(int valid, int half) {
    __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid - 8 * half), index);
}

/* TAIL: the last vector of dy has fewer than 16 valid lanes; only then are its loads masked (a masked load
 * costs more than a plain one on Zen 3, and it sat in the innermost loop). */
AVX2 INLINE void wtile_avx2_body(const direct_wtile *t, const int MC, const int NR, const bool TAIL) {
    __m256 acc[12];
    __m256i masks[2 * DIRECT_MAX_TILE_K];
#pragma GCC unroll 8
    for (int j = 0; j < 2 * NR; j++) masks[j] = j < 2 * NR - 2 ? _mm256_set1_epi32(-1) : lane_mask(t->last_lanes, j % 2);
#pragma GCC unroll 16
    for (int i = 0; i < MC; i++)
#pragma GCC unroll 8
        for (int j = 0; j < 2 * NR; j++) acc[i * 2 * NR + j] = _mm256_maskload_ps(t->acc + i * t->acc_c + 8 * j, masks[j]);
    for (int b = 0; b < t->images; b++)
    for (int q = 0; q < t->rows; q++) {
        const float *xp = t->x + b * t->x_image + q * t->x_row;
        const float *dp = t->dy + b * t->dy_image + q * t->dy_row;
        for (int p = 0; p < t->pixels; p++) {
            __m256 g[2 * DIRECT_MAX_TILE_K];
#pragma GCC unroll 8
            for (int j = 0; j < 2 * NR; j++)
                g[j] = TAIL && j >= 2 * NR - 2 ? _mm256_maskload_ps(dp + 8 * j, masks[j]) : _mm256_loadu_ps(dp + 8 * j);
#pragma GCC unroll 16
            for (int i = 0; i < MC; i++) {
                __m256 b = _mm256_broadcast_ss(xp + i);
#pragma GCC unroll 8
                for (int j = 0; j < 2 * NR; j++) acc[i * 2 * NR + j] = _mm256_fmadd_ps(b, g[j], acc[i * 2 * NR + j]);
            }
            xp += t->x_pixel;
            dp += t->dy_pixel;
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < MC; i++)
#pragma GCC unroll 8
        for (int j = 0; j < 2 * NR; j++) _mm256_maskstore_ps(t->acc + i * t->acc_c + 8 * j, masks[j], acc[i * 2 * NR + j]);
}

#define WTILE512(MC, NR) \
    static AVX512 void wtile512_##MC##_##NR(const direct_wtile *t) { wtile_avx512_body(t, MC, NR); }
#define WTILE2(MC, NR) \
    static AVX2 void wtile2_##MC##_##NR(const direct_wtile *t) {                                   \
        if (t->last_lanes < DIRECT_LANES)                                                          \
            wtile_avx2_body(t, MC, NR, true);                                                      \
        else                                                                                       \
            wtile_avx2_body(t, MC, NR, false);                                                     \
    }
#define ENTRY512(MC, NR) [MC][NR] = wtile512_##MC##_##NR,
#define ENTRY2(MC, NR) [MC][NR] = wtile2_##MC##_##NR,

#define MC_UPTO_1(X, NR) X(1, NR)
#define MC_UPTO_2(X, NR) MC_UPTO_1(X, NR) X(2, NR)
#define MC_UPTO_3(X, NR) MC_UPTO_2(X, NR) X(3, NR)
#define MC_UPTO_4(X, NR) MC_UPTO_3(X, NR) X(4, NR)
#define MC_UPTO_5(X, NR) MC_UPTO_4(X, NR) X(5, NR)
#define MC_UPTO_6(X, NR) MC_UPTO_5(X, NR) X(6, NR)
#define MC_UPTO_7(X, NR) MC_UPTO_6(X, NR) X(7, NR)
#define MC_UPTO_8(X, NR) MC_UPTO_7(X, NR) X(8, NR)
#define MC_UPTO_9(X, NR) MC_UPTO_8(X, NR) X(9, NR)
#define MC_UPTO_10(X, NR) MC_UPTO_9(X, NR) X(10, NR)
#define MC_UPTO_11(X, NR) MC_UPTO_10(X, NR) X(11, NR)
#define MC_UPTO_12(X, NR) MC_UPTO_11(X, NR) X(12, NR)
#define MC_UPTO_13(X, NR) MC_UPTO_12(X, NR) X(13, NR)
#define MC_UPTO_14(X, NR) MC_UPTO_13(X, NR) X(14, NR)
#define MC_UPTO_15(X, NR) MC_UPTO_14(X, NR) X(15, NR)
#define MC_UPTO_16(X, NR) MC_UPTO_15(X, NR) X(16, NR)

#define SHAPES512(X) MC_UPTO_16(X, 1) MC_UPTO_14(X, 2) MC_UPTO_9(X, 3) MC_UPTO_7(X, 4)
#define SHAPES2(X) MC_UPTO_6(X, 1) MC_UPTO_3(X, 2) MC_UPTO_2(X, 3) MC_UPTO_1(X, 4)

SHAPES512(WTILE512)
SHAPES2(WTILE2)
static const direct_wtile_fn tiles512[DIRECT_MAX_TILE_W + 1][DIRECT_MAX_TILE_K + 1] = {SHAPES512(ENTRY512)};
static const direct_wtile_fn tiles2[7][DIRECT_MAX_TILE_K + 1] = {SHAPES2(ENTRY2)};

direct_wtile_fn direct_wtile_avx512(int tile_c, int tile_k) {
    if (tile_c < 1 || tile_c > DIRECT_MAX_TILE_W || tile_k < 1 || tile_k > DIRECT_MAX_TILE_K) return NULL;
    return tiles512[tile_c][tile_k];
}

direct_wtile_fn direct_wtile_avx2(int tile_c, int tile_k) {
    if (tile_c < 1 || tile_c > 6 || tile_k < 1 || tile_k > DIRECT_MAX_TILE_K) return NULL;
    return tiles2[tile_c][tile_k];
}

void direct_wtile_portable(const direct_wtile *t, int tile_c, int tile_k) {
    direct_patch_tile_portable(t, tile_c, 0, tile_c, tile_k);
}
