/* Depthwise micro-kernels for AVX-512: 16 channels per vector, 32 registers. */
#pragma GCC target("avx512f,fma")
#include <immintrin.h>

#define DW_VEC __m512
#define DW_LANES 16
#define DW_LOAD(p) _mm512_loadu_ps(p)
#define DW_STORE(p, v) _mm512_storeu_ps(p, v)
#define DW_STREAM(p, v) _mm512_stream_ps(p, v)
#define DW_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define DW_ZERO() _mm512_setzero_ps()
#define DW_ADD(a, b) _mm512_add_ps(a, b)
#define DW_NAME(name) name##_avx512
#define DW_TILE_A 8
#define DW_TILE_B 14
#define DW_TILE_2 8
#define DW_WTILE_3 2
#define DW_WSETS_3 1
#define DW_WROWS_3 2
#define DW_WVEC_3 2
/* With x pinned in registers GCC spilled the 2 x 2 x 2 tile's sums and copied registers around its multiply-adds;
 * with x read inside them the 14x14 layers ran 1.14-1.19x, 28x28x192 1.08-1.09x, 112x112x96 s2 0.96x on one
 * thread (docs/kernels.md, stop 41) */
#define DW_WFOLD 1
#define DW_S2_TILE 8
#define DW_S2_VECTORS 4
#define DW_WTILE_5 4
#define DW_NARROW 7

#include "kernels/direct/depthwise_tiles.h"

/* ---- the layer's weights [C][taps] into the kernels' tap rows [taps][cpad], 16 channels at a time: one 16 x 16
 * transpose in registers in place of 16 * taps scalar moves, which took 5% of a 7x7x960 forward call at batch 8
 * and a quarter at batch 1 (Zen 4). The other way, backward-weights' tap sums into dw: see dw_turn16_avx512. ---- */

/* r[k] lane i -> r[i] lane k: pairs of rows, then quads, then 128-bit lanes twice. */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* r[4i + j], 128-bit lane L: column 4L + j of rows 4i..4i+3 */
    for (int j = 0; j < 4; j++) {
        t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
        t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
        r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xdd);
    }
}

/* Each channel's row is read as 16 floats (the next channels' taps past its own), but for the block's last rows,
 * where those would pass the block's end: masked there. */
void dw_pack16_avx512(const float *w, int taps, const int *src, int rows, int cpad, int c0, float *dst) {
    const __mmask16 mask = (__mmask16)((1u << taps) - 1);
    __m512 r[16];
    for (int k = 0; k < 16; k++) {
        const float *row = w + (size_t)(c0 + k) * taps;
        r[k] = k * taps + 16 <= 16 * taps ? _mm512_loadu_ps(row) : _mm512_maskz_loadu_ps(mask, row);
    }
    transpose16(r);
    for (int row = 0; row < rows; row++) _mm512_storeu_ps(dst + (size_t)row * cpad + c0, r[src ? src[row] : row]);
}

/* The other way, for 3x3 layers: transposed back, each channel's 9 tap sums sit in lanes 0..8 of its own vector;
 * output vector v (floats 16v..16v+15 of the block's 144) takes its lanes from the two or three channels those
 * floats belong to, one masked permute each, so dw is read and written in whole vectors that do not overlap. */
void dw_turn16_avx512(const float *sums, size_t part, int parts, int cpad, int c0, float *dw) {
    enum { taps = 9 };
    __m512 r[16];
#pragma GCC unroll 16
    for (int t = 0; t < 16; t++) {
        r[t] = t < taps ? _mm512_loadu_ps(sums + (size_t)t * cpad + c0) : _mm512_setzero_ps();
        for (int i = 1; t < taps && i < parts; i++)
            r[t] = _mm512_add_ps(r[t], _mm512_loadu_ps(sums + (size_t)i * part + (size_t)t * cpad + c0));
    }
    transpose16(r);
    float *out = dw + (size_t)c0 * taps;
#define DW_TAP(l) (16 * v + (l)) % taps
#pragma GCC unroll 9
    for (int v = 0; v < taps; v++) {
        /* lane l: tap (16v + l) % 9 of channel (16v + l) / 9; constants once unrolled */
        const __m512i index = _mm512_setr_epi32(DW_TAP(0), DW_TAP(1), DW_TAP(2), DW_TAP(3), DW_TAP(4), DW_TAP(5),
                                                DW_TAP(6), DW_TAP(7), DW_TAP(8), DW_TAP(9), DW_TAP(10), DW_TAP(11),
                                                DW_TAP(12), DW_TAP(13), DW_TAP(14), DW_TAP(15));
        __m512 turned = _mm512_setzero_ps();
#pragma GCC unroll 3
        for (int k = 16 * v / taps; k <= (16 * v + 15) / taps; k++) {
            int lo = k * taps - 16 * v, hi = lo + taps;
            lo = lo < 0 ? 0 : lo, hi = hi > 16 ? 16 : hi;
            turned = _mm512_mask_permutexvar_ps(turned, (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1)), index, r[k]);
        }
        _mm512_storeu_ps(out + 16 * v, _mm512_add_ps(_mm512_loadu_ps(out + 16 * v), turned));
    }
#undef DW_TAP
}
