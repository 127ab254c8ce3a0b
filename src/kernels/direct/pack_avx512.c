/* Data movement of backward-weights on AVX-512. The panel copies of the packed 1x1 path (conv_weights_packed.c):
 * one pixel's pieces in masked vector moves, where a memcpy per piece (36 bytes of dy per k tile of 9) cost the
 * layers that copy dy 3-8%. And the packed gradient's transposed add into dw (conv_weights.c), 16 x 16 floats
 * through the registers, where scalar code took 5.5% of a 512 -> 512 stride-2 3x3 layer (`perf`). */
#include <immintrin.h>

#include "kernels/direct/direct.h"

#define TARGET __attribute__((target("avx512f")))

TARGET static inline __mmask16 first_lanes(int n) {
    return n >= DIRECT_LANES ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

TARGET void direct_pack_x_pixels_avx512(const float *xs, ptrdiff_t xs_pixel, int pixels, int C, int x_width,
                                        int c_tiles, size_t panel_stride, float *to, ptrdiff_t to_pixel) {
    for (int p = 0; p < pixels; p++, xs += xs_pixel, to += to_pixel) {
        float *dst = to;
        for (int ct = 0; ct < c_tiles; ct++, dst += panel_stride)
            for (int i = 0; i < x_width; i += DIRECT_LANES) {
                int c = ct * x_width + i;
                __m512 v = c + DIRECT_LANES <= C ? _mm512_loadu_ps(xs + c)
                           : c < C              ? _mm512_maskz_loadu_ps(first_lanes(C - c), xs + c)
                                                : _mm512_setzero_ps();
                _mm512_storeu_ps(dst + i, v);
            }
    }
}

TARGET void direct_pack_dy_pixel_avx512(const float *ds, int k_begin, int k_end, int tile_w, size_t block_pixels,
                                        int p, float *dy_panels) {
    for (int k0 = k_begin; k0 < k_end; k0 += tile_w) {
        int mk = direct_min(tile_w, k_end - k0);
        __mmask16 m = first_lanes(mk);
        _mm512_mask_storeu_ps(dy_panels + (size_t)k0 * block_pixels + (size_t)p * mk, m,
                              _mm512_maskz_loadu_ps(m, ds + k0));
    }
}

TARGET void direct_pack_dy_panel_avx512(const float *ds, size_t ds_pixel, int pixels, int mk, float *panel,
                                        size_t panel_pixel) {
    const __mmask16 m = first_lanes(mk);
    for (int p = 0; p < pixels; p++, ds += ds_pixel, panel += panel_pixel)
        _mm512_mask_storeu_ps(panel, m, _mm512_maskz_loadu_ps(m, ds));
}

/* col[j] = lane j of every r[i], i.e. column j of the 16 x 16 block whose rows are r. */
TARGET static inline void transpose16(const __m512 r[16], __m512 col[16]) {
    __m512 t[16], u[16], v[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        u[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 4; i++) {
            v[8 * h + i] = _mm512_shuffle_f32x4(u[8 * h + i], u[8 * h + 4 + i], 0x88);
            v[8 * h + 4 + i] = _mm512_shuffle_f32x4(u[8 * h + i], u[8 * h + 4 + i], 0xDD);
        }
    for (int j = 0; j < 16; j++)
        col[j] = j < 8 ? _mm512_shuffle_f32x4(v[j], v[8 + j], 0x88) : _mm512_shuffle_f32x4(v[j - 8], v[j], 0xDD);
}

TARGET void direct_add_transposed_avx512(const float *from, size_t from_row, int rows, float *to, size_t to_row,
                                         int cols) {
    __m512 r[16], col[16];
    for (int i = 0; i < 16; i++) r[i] = i < rows ? _mm512_loadu_ps(from + (size_t)i * from_row) : _mm512_setzero_ps();
    transpose16(r, col);
    const __mmask16 m = first_lanes(rows);
    for (int j = 0; j < cols; j++) {
        float *dst = to + (size_t)j * to_row;
        _mm512_mask_storeu_ps(dst, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst), col[j]));
    }
}

TARGET void direct_store_transposed_avx512(const float *from, size_t from_row, int rows, int cols, float *to,
                                           size_t to_row) {
    __m512 r[16], col[16];
    const __mmask16 valid = first_lanes(cols);
    for (int i = 0; i < 16; i++)
        r[i] = i < rows ? _mm512_maskz_loadu_ps(valid, from + (size_t)i * from_row) : _mm512_setzero_ps();
    transpose16(r, col);
    for (int j = 0; j < cols; j++) _mm512_storeu_ps(to + (size_t)j * to_row, col[j]);
}
