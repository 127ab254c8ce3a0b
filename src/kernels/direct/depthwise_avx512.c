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
#define DW_S2_TILE 8
#define DW_S2_VECTORS 4
#define DW_WTILE_5 4
#define DW_NARROW 7

#include "kernels/direct/depthwise_tiles.h"
