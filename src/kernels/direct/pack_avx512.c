/* Panel copies of the packed 1x1 backward-weights (conv_weights_packed.c) on AVX-512: one pixel's pieces in
 * masked vector moves. With a memcpy per piece (192 bytes of x per c tile, 36 of dy per k tile of 9) the calls
 * took 10-16% of the layer's time (`perf`, ResNet-50 CIFAR 512 -> 128 and 256 -> 1024). */
#include <immintrin.h>

#include "kernels/direct/direct.h"

#define TARGET __attribute__((target("avx512f")))

TARGET static inline __mmask16 first_lanes(int n) {
    return n >= DIRECT_LANES ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

TARGET void direct_pack_x_pixel_avx512(const float *xs, int C, int x_width, int c_tiles, size_t panel_stride,
                                       float *to) {
    for (int ct = 0; ct < c_tiles; ct++, to += panel_stride)
        for (int i = 0; i < x_width; i += DIRECT_LANES) {
            int c = ct * x_width + i;
            __m512 v = c < C ? _mm512_maskz_loadu_ps(first_lanes(C - c), xs + c) : _mm512_setzero_ps();
            _mm512_storeu_ps(to + i, v);
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
