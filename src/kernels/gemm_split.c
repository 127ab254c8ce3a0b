/* GEMMs split between plait's threads, each running single-threaded BLAS on its own rows of C.
 * OpenBLAS's own threading scales poorly on the tall, thin products of 1x1 convolutions (two threads
 * 0.7-1.8x one on the CIFAR ResNet-50 1x1 shapes, the split 1.4-2.2x; docs/kernels.md), while row slices
 * share nothing but the small operand. */
#include <cblas.h>
#include <omp.h>

#include "kernels/conv2d_internal.h"
#include "plait/core.h"

/* Below this many rows per thread a slice is too thin to pay for the fork. */
#define SPLIT_MIN_ROWS 16

void plait_sgemm_split_rows(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                            const float *b, int ldb, float beta, float *c, int ldc) {
    CBLAS_TRANSPOSE op_a = trans_a ? CblasTrans : CblasNoTrans, op_b = trans_b ? CblasTrans : CblasNoTrans;
    int threads = plait_threads();
    if (threads > m / SPLIT_MIN_ROWS) threads = m / SPLIT_MIN_ROWS;
    if (threads <= 1) {
        cblas_sgemm(CblasRowMajor, op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), count = omp_get_num_threads();
        int first = (int)((long)m * t / count), last = (int)((long)m * (t + 1) / count);
        /* row i of op(A) is row i of A, or column i when A is transposed */
        const float *a_rows = a + (trans_a ? (size_t)first : (size_t)first * (size_t)lda);
        if (last > first)
            cblas_sgemm(CblasRowMajor, op_a, op_b, last - first, n, k, alpha, a_rows, lda, b, ldb, beta,
                        c + (size_t)first * (size_t)ldc, ldc);
    }
}
