/* For tests/mpi_*.c: every rank runs every case; a case's failures are summed over the ranks so all
 * ranks agree on the result, rank 0 alone prints "N passed, N failed", and every rank exits non-zero
 * when any case failed. Include once, from the test's .c file. */
#ifndef PLAIT_MPI_TESTING_H
#define PLAIT_MPI_TESTING_H

#include <mpi.h>
#include <stdio.h>

#include "plait/dist.h"
#include "testing.h"

static testing_case mpi_testing_current;
static int mpi_testing_failed_cases;

static void mpi_testing_body(void) {
    mpi_testing_current();
    int local = testing_failures_in_case, total = 0;
    MPI_Allreduce(&local, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (total > 0 && local == 0)
        fprintf(stderr, "  rank %d: %d checks failed on other ranks\n", plait_dist_rank(), total);
    testing_failures_in_case = total;
    if (total > 0) mpi_testing_failed_cases++;
}

static inline void mpi_testing_run(const char *name, testing_case fn) {
    mpi_testing_current = fn;
    testing_run(name, mpi_testing_body);
}

/* Under the sanitizers, leaks are checked while MPI is still alive: after MPI_Finalize, Open MPI's
 * unloaded components leave allocations LeakSanitizer cannot attribute to a library. Open MPI, PMIx
 * and OpenBLAS keep some allocations they never free; full stacks (slow unwinding) let these
 * suppressions match them, so only plait's own leaks count. */
int __lsan_do_recoverable_leak_check(void) __attribute__((weak));
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "leak_check_at_exit=0:fast_unwind_on_malloc=0"; }
const char *__lsan_default_options(void);
const char *__lsan_default_options(void) { return "print_suppressions=0"; }
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libmpi.so\nleak:libopen-pal.so\nleak:libopen-rte.so\nleak:libpmix.so\nleak:libevent\n"
           "leak:mca_\nleak:_dl_init\nleak:libopenblas\n";
}

static inline int mpi_testing_finish(void) {
    if (__lsan_do_recoverable_leak_check && __lsan_do_recoverable_leak_check() != 0) {
        fprintf(stderr, "rank %d: memory leaked\n", plait_dist_rank());
        mpi_testing_failed_cases++;
    }
    int failed = mpi_testing_failed_cases, any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    int result = plait_dist_rank() == 0 ? testing_finish() : 0;
    if (any > 0) result = 1;
    plait_dist_finalize();
    return result;
}

#endif
