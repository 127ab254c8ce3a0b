/* Hooks into the im2col kernel for tests, and the row-split GEMM it and the linear layer run. */
#ifndef PLAIT_KERNELS_CONV2D_INTERNAL_H
#define PLAIT_KERNELS_CONV2D_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

/* Caps the im2col column buffer (default 64 MiB) so tests can force several image chunks per call.
 * Affects workspace_bytes too; set it before sizing a workspace. */
void plait_conv2d_set_column_buffer_limit(size_t bytes);

/* cblas_sgemm (row-major) with the rows of C split between plait_threads() threads, each calling BLAS
 * (single-threaded since plait_set_threads); one plain call when m is too small to split. */
void plait_sgemm_split_rows(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                            const float *b, int ldb, float beta, float *c, int ldc);
/* The same product with the reduction (k) split between the threads instead, for the short, wide
 * products of backward-weights: each thread streams its part of A and B once into its own partial C,
 * summed into C at the end; split by rows when k is too short. */
void plait_sgemm_split_depth(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                             const float *b, int ldb, float beta, float *c, int ldc);

#endif
