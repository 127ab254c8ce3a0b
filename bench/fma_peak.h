/* FMA peak loops for the benchmarks: independent FMA chains, enough to fill both FMA pipes. */
#ifndef PLAIT_BENCH_FMA_PEAK_H
#define PLAIT_BENCH_FMA_PEAK_H

#include <immintrin.h>
#include <stdbool.h>

__attribute__((target("avx512f,fma"))) static float fma_loop_avx512(long iterations) {
    __m512 acc[16], b = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-4f);
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iterations; it++)
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
    __m512 sum = acc[0];
    for (int i = 1; i < 16; i++) sum = _mm512_add_ps(sum, acc[i]);
    return _mm512_reduce_add_ps(sum);
}

__attribute__((target("avx2,fma"))) static float fma_loop_avx2(long iterations) {
    __m256 acc[12], b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-4f);
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iterations; it++)
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
    float out[8], total = 0;
    for (int i = 1; i < 12; i++) acc[0] = _mm256_add_ps(acc[0], acc[i]);
    _mm256_storeu_ps(out, acc[0]);
    for (int i = 0; i < 8; i++) total += out[i];
    return total;
}

static inline double fma_flops_per_iteration(bool avx512) { return avx512 ? 16.0 * 32 : 12.0 * 16; }

static inline float fma_loop(bool avx512, long iterations) {
    return avx512 ? fma_loop_avx512(iterations) : fma_loop_avx2(iterations);
}

#endif
