/* Bucketed multi-stream gradient all-reduce on 2 replicas: exact sums, any readiness order, both
 * memory layouts (one arena reduced in place, scattered gradients packed), and time accounting. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpi_testing.h"

enum { PARAMS = 23 };

/* Parameter sizes from tiny to larger than a bucket, so buckets hold one or many parameters. */
static const size_t sizes[PARAMS] = {1,   7,   300, 2,    4096, 33,  1000, 5,   70000, 12,   640, 3,
                                     129, 900, 1,   5000, 64,   257, 8,    3333, 17,    20000, 100};

static float value_at(int rank, int step, int param, size_t i) {
    return (float)((rank + 1) * (int)((i * 7 + (size_t)param * 13) % 1000) + step * 3 - param);
}

static void fill(float **grads, int rank, int step) {
    for (int p = 0; p < PARAMS; p++)
        for (size_t i = 0; i < sizes[p]; i++) grads[p][i] = value_at(rank, step, p, i);
}

static void shuffle(int *order, int n, plait_rng *rng) {
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)plait_rng_below(rng, (uint32_t)i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* Gradients either share one arena laid out in model order (so readiness order runs backwards
 * through memory: buckets reduce in place) or live in separate allocations (buckets are packed). */
static void run_sync(int streams, size_t bucket_bytes, bool arena, bool sum) {
    int rank = plait_dist_rank(), replicas = plait_dist_size();
    float *grads[PARAMS];
    float *memory = NULL;
    size_t total = 0;
    for (int p = 0; p < PARAMS; p++) total += sizes[p];
    if (arena) {
        memory = plait_alloc(total * sizeof(float));
        size_t offset = total;
        for (int p = 0; p < PARAMS; p++) {
            offset -= sizes[p];
            grads[p] = memory + offset;
        }
    } else {
        for (int p = 0; p < PARAMS; p++) grads[p] = plait_alloc(sizes[p] * sizeof(float) + 64);
    }
    plait_grad_sync *sync = NULL;
    plait_grad_sync_config config = {.bucket_bytes = bucket_bytes, .streams = streams, .sum = sum};
    CHECK(plait_grad_sync_create(MPI_COMM_WORLD, PARAMS, grads, sizes, &config, &sync) == PLAIT_OK);
    if (!sync) return;
    int buckets = plait_grad_sync_bucket_count(sync);
    CHECK(buckets >= 1 && buckets <= PARAMS);
    plait_rng rng;
    plait_rng_seed(&rng, plait_seed_mix(11, (uint64_t)rank, (uint64_t)streams));
    for (int step = 0; step < 3; step++) {
        fill(grads, rank, step);
        int order[PARAMS];
        if (step == 1) { /* whole buckets, in a different order on each rank */
            shuffle(order, buckets, &rng);
            for (int i = 0; i < buckets; i++) CHECK(plait_grad_sync_mark_bucket_ready(sync, order[i]) == PLAIT_OK);
        } else { /* parameters, in a different order on each rank; the last few are left to wait_all */
            shuffle(order, PARAMS, &rng);
            int mark = PARAMS - (int)plait_rng_below(&rng, 4);
            for (int i = 0; i < mark; i++) CHECK(plait_grad_sync_mark_ready(sync, order[i]) == PLAIT_OK);
            CHECK(plait_grad_sync_mark_ready(sync, order[0]) == PLAIT_ERROR);
            CHECK(strstr(plait_last_error(), "twice") != NULL);
        }
        plait_grad_sync_times times;
        CHECK(plait_grad_sync_wait_all(sync, &times) == PLAIT_OK);
        CHECK(times.buckets == buckets);
        long wrong = 0;
        for (int p = 0; p < PARAMS; p++)
            for (size_t i = 0; i < sizes[p]; i++) {
                double expected = 0;
                for (int r = 0; r < replicas; r++) expected += value_at(r, step, p, i);
                if (!sum) expected /= replicas;
                if (grads[p][i] != (float)expected && wrong++ < 3)
                    fprintf(stderr, "  step %d param %d [%zu]: %g, expected %g\n", step, p, i, grads[p][i],
                            expected);
            }
        CHECKF(wrong == 0, "%ld wrong values (streams %d, bucket %zu bytes, arena %d)", wrong, streams, bucket_bytes,
               arena);
    }
    plait_grad_sync_free(sync);
    if (arena) {
        plait_free(memory);
    } else {
        for (int p = 0; p < PARAMS; p++) plait_free(grads[p]);
    }
}

static void exact_sums_one_stream(void) {
    run_sync(1, 4096, true, false);
    run_sync(1, 4096, false, true);
}
static void exact_sums_two_streams(void) {
    run_sync(2, 1024, false, false);
    run_sync(2, 64 << 10, true, true);
}
static void exact_sums_three_streams(void) {
    run_sync(3, 4, true, false); /* one parameter per bucket */
    run_sync(3, 20000, false, false);
    run_sync(3, 1 << 30, true, false); /* a single bucket: two streams stay idle */
}

/* From a background thread, as a backward pass on another thread would. */
typedef struct marker {
    plait_grad_sync *sync;
    int params, failures;
} marker;

static void *mark_all(void *argument) {
    marker *m = argument;
    for (int p = 0; p < m->params; p++) {
        if (plait_grad_sync_mark_ready(m->sync, p) != PLAIT_OK) m->failures++;
        struct timespec pause = {0, 200000};
        nanosleep(&pause, NULL);
    }
    return NULL;
}

static void marks_from_another_thread(void) {
    enum { N = 40 };
    float *grads[N];
    size_t counts[N];
    for (int p = 0; p < N; p++) {
        counts[p] = 1000 + (size_t)p;
        grads[p] = plait_alloc(counts[p] * sizeof(float));
        for (size_t i = 0; i < counts[p]; i++) grads[p][i] = (float)(plait_dist_rank() * 2 + 2); /* 2 and 4 */
    }
    plait_grad_sync *sync = NULL;
    plait_grad_sync_config config = {.bucket_bytes = 16000, .streams = 2};
    CHECK(plait_grad_sync_create(MPI_COMM_WORLD, N, grads, counts, &config, &sync) == PLAIT_OK);
    marker m = {sync, N, 0};
    pthread_t thread;
    pthread_create(&thread, NULL, mark_all, &m);
    pthread_join(thread, NULL);
    CHECK(m.failures == 0);
    CHECK(plait_grad_sync_wait_all(sync, NULL) == PLAIT_OK);
    int wrong = 0;
    for (int p = 0; p < N; p++)
        for (size_t i = 0; i < counts[p]; i++) wrong += grads[p][i] != 3.0f;
    CHECK(wrong == 0);
    plait_grad_sync_free(sync);
    for (int p = 0; p < N; p++) plait_free(grads[p]);
}

/* Hidden is the communication before wait_all was called; exposed is the wait; the two add up. */
static void time_accounting(void) {
    enum { N = 8 };
    size_t counts[N];
    float *grads[N];
    for (int p = 0; p < N; p++) {
        counts[p] = 1 << 19; /* 2 MiB each: all-reduces take milliseconds */
        grads[p] = plait_alloc(counts[p] * sizeof(float));
    }
    plait_grad_sync *sync = NULL;
    plait_grad_sync_config config = {.bucket_bytes = 4 << 20, .streams = 2};
    CHECK(plait_grad_sync_create(MPI_COMM_WORLD, N, grads, counts, &config, &sync) == PLAIT_OK);
    for (int round = 0; round < 3; round++) {
        int overlapped = round == 2;
        double start = plait_now();
        for (int p = 0; p < N; p++) CHECK(plait_grad_sync_mark_ready(sync, p) == PLAIT_OK);
        if (overlapped) { /* "backward" keeps computing while the buckets reduce */
            double until = plait_now() + 0.3;
            while (plait_now() < until) {
                struct timespec pause = {0, 1000000};
                nanosleep(&pause, NULL);
            }
        }
        plait_grad_sync_times t;
        double called = plait_now();
        CHECK(plait_grad_sync_wait_all(sync, &t) == PLAIT_OK);
        double total = plait_now() - start;
        fprintf(stderr, "  %s: communication %.1f ms, hidden %.1f ms, exposed %.1f ms\n",
                overlapped ? "overlapped" : "not overlapped", t.communication * 1e3, t.hidden * 1e3, t.exposed * 1e3);
        CHECK(t.communication > 0 && t.hidden >= 0 && t.exposed >= 0);
        CHECK(t.exposed <= total);
        CHECK(t.hidden <= t.communication + 1e-9);
        /* Communication after the call lies inside the wait; the wait is that plus wake-ups. */
        CHECK(t.communication - t.hidden <= t.exposed + 1e-6);
        CHECKF(t.exposed - (t.communication - t.hidden) < 0.05 + 0.1 * t.communication,
               "exposed %.4f s, unhidden communication %.4f s", t.exposed, t.communication - t.hidden);
        if (overlapped && t.communication < 0.2) CHECK(t.hidden > 0.9 * t.communication);
        /* Hidden time can only come from before the call; how much depends on the scheduler, so no tighter bound. */
        CHECKF(t.hidden <= called - start + 1e-3, "hidden %.4f s, but wait_all was called after %.4f s", t.hidden,
               called - start);
    }
    plait_grad_sync_free(sync);
    for (int p = 0; p < N; p++) plait_free(grads[p]);
}

static void disagreeing_replicas_are_refused(void) {
    size_t counts[2] = {10, (size_t)(10 + plait_dist_rank())};
    float a[10], b[11];
    float *grads[2] = {a, b};
    plait_grad_sync *sync = NULL;
    CHECK(plait_grad_sync_create(MPI_COMM_WORLD, 2, grads, counts, NULL, &sync) == PLAIT_ERROR);
    CHECK(sync == NULL);
    CHECKF(strstr(plait_last_error(), "replicas disagree") != NULL, "%s", plait_last_error());
}

int main(int argc, char **argv) {
    if (plait_dist_init(&argc, &argv) != PLAIT_OK) {
        fprintf(stderr, "%s\n", plait_last_error());
        return 1;
    }
    mpi_testing_run("exact_sums_one_stream", exact_sums_one_stream);
    mpi_testing_run("exact_sums_two_streams", exact_sums_two_streams);
    mpi_testing_run("exact_sums_three_streams", exact_sums_three_streams);
    mpi_testing_run("marks_from_another_thread", marks_from_another_thread);
    mpi_testing_run("time_accounting", time_accounting);
    mpi_testing_run("disagreeing_replicas_are_refused", disagreeing_replicas_are_refused);
    return mpi_testing_finish();
}
