/* Depthwise micro-kernels for AVX2: 8 channels per vector, 16 registers. */
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#define DW_VEC __m256
#define DW_LANES 8
#define DW_LOAD(p) _mm256_loadu_ps(p)
#define DW_STORE(p, v) _mm256_storeu_ps(p, v)
#define DW_STREAM(p, v) _mm256_stream_ps(p, v)
#define DW_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define DW_ZERO() _mm256_setzero_ps()
#define DW_ADD(a, b) _mm256_add_ps(a, b)
#define DW_NAME(name) name##_avx2
#define DW_TILE_A 4
#define DW_TILE_B 8
#define DW_TILE_2 4
#define DW_WTILE_3 2
#define DW_WSETS_3 1
#define DW_WROWS_3 2
#define DW_WVEC_3 1
#define DW_WFOLD 0
#define DW_S2_TILE 4
#define DW_S2_VECTORS 2
#define DW_WTILE_5 2
#define DW_NARROW 0

#include "kernels/direct/depthwise_tiles.h"
