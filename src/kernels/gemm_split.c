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

/* Below this many reduction steps per thread a partial product is too short to pay for its sum, and
 * below DEPTH_OVER_ROWS times the rows of C the rows split better (measured: docs/kernels.md). */
#define SPLIT_MIN_DEPTH 256
#define DEPTH_OVER_ROWS 8

void plait_sgemm_split_depth(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                             const float *b, int ldb, float beta, float *c, int ldc) {
    int threads = plait_threads();
    if (threads > k / SPLIT_MIN_DEPTH) threads = k / SPLIT_MIN_DEPTH;
    if (k < DEPTH_OVER_ROWS * m) threads = 1;
    float *partials =
        threads > 1 ? plait_alloc_unzeroed(sizeof(float) * (size_t)(threads - 1) * (size_t)m * (size_t)n) : NULL;
    if (!partials) { /* one thread, or no memory for the partial products: rows need none */
        plait_sgemm_split_rows(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    CBLAS_TRANSPOSE op_a = trans_a ? CblasTrans : CblasNoTrans, op_b = trans_b ? CblasTrans : CblasNoTrans;
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), count = omp_get_num_threads();
        int first = (int)((long)k * t / count), last = (int)((long)k * (t + 1) / count);
        /* step i of the reduction is column i of op(A) and row i of op(B) */
        const float *a_steps = a + (trans_a ? (size_t)first * (size_t)lda : (size_t)first);
        const float *b_steps = b + (trans_b ? (size_t)first : (size_t)first * (size_t)ldb);
        /* thread 0 adds into C with the caller's beta; the others into partials summed in after */
        float *out = t == 0 ? c : partials + (size_t)(t - 1) * (size_t)m * (size_t)n;
        cblas_sgemm(CblasRowMajor, op_a, op_b, m, n, last - first, alpha, a_steps, lda, b_steps, ldb,
                    t == 0 ? beta : 0.0f, out, t == 0 ? ldc : n);
#pragma omp barrier
#pragma omp for schedule(static)
        for (int i = 0; i < m; i++)
            for (int p = 1; p < count; p++) {
                const float *row = partials + ((size_t)(p - 1) * (size_t)m + (size_t)i) * (size_t)n;
                float *dst = c + (size_t)i * (size_t)ldc;
                for (int j = 0; j < n; j++) dst[j] += row[j];
            }
    }
    plait_free(partials);
}
