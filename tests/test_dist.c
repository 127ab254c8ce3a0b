/* plait's MPI layer in a process started without mpirun: world size 1, layouts, bucket planning,
 * and gradient sync as a no-op. The multi-rank behaviour is tested by tests/mpi_dist_*.c. */
#include <stdlib.h>
#include <string.h>

#include "plait/dist.h"
#include "plait/plan.h"
#include "testing.h"

static void world_without_mpirun(void) {
    int argc = 1;
    char *args[] = {"test_dist", NULL};
    char **argv = args;
    CHECK(plait_dist_init(&argc, &argv) == PLAIT_OK);
    CHECK(plait_dist_init(&argc, &argv) == PLAIT_OK);
    CHECK(plait_dist_size() == 1 && plait_dist_rank() == 0 && !plait_dist_uses_mpi());
    CHECK(plait_dist_barrier(0) == PLAIT_OK);
    float x[2];
    plait_dist_transfer t = {0};
    CHECK(plait_dist_isend(&t, PLAIT_DIST_ACTIVATION, 0, 1, x, 2) == PLAIT_ERROR);
    CHECKF(strstr(plait_last_error(), "without MPI") != NULL, "%s", plait_last_error());
    bool done = false;
    CHECK(plait_dist_test(&t, &done) == PLAIT_OK && done);
    CHECK(plait_dist_wait(&t) == PLAIT_OK);
    CHECK(plait_dist_finalize() == PLAIT_OK);
}

static void timeout_from_environment(void) {
    setenv("PLAIT_DIST_TIMEOUT", "3.5", 1);
    CHECK(plait_dist_init(NULL, NULL) == PLAIT_OK);
    CHECK(plait_dist_timeout() == 3.5);
    plait_dist_finalize();
    setenv("PLAIT_DIST_TIMEOUT", "soon", 1);
    CHECK(plait_dist_init(NULL, NULL) == PLAIT_ERROR);
    CHECKF(strstr(plait_last_error(), "PLAIT_DIST_TIMEOUT must be a number of seconds, not 'soon'") != NULL, "%s",
           plait_last_error());
    unsetenv("PLAIT_DIST_TIMEOUT");
    plait_dist_set_timeout(20);
    CHECK(plait_dist_init(NULL, NULL) == PLAIT_OK);
    CHECK(plait_dist_timeout() == 20);
    plait_dist_finalize();
    setenv("PLAIT_ALLREDUCE", "fast", 1);
    CHECK(plait_dist_init(NULL, NULL) == PLAIT_ERROR);
    CHECKF(strstr(plait_last_error(), "PLAIT_ALLREDUCE must be 'blocking' or 'polled', not 'fast'") != NULL, "%s",
           plait_last_error());
    setenv("PLAIT_ALLREDUCE", "polled", 1);
    CHECK(plait_dist_init(NULL, NULL) == PLAIT_OK);
    plait_dist_finalize();
    unsetenv("PLAIT_ALLREDUCE");
    CHECK(plait_dist_init(NULL, NULL) == PLAIT_OK);
}

static void single_stage_groups(void) {
    plait_stage_layout layout = {.stages = 1, .replicas = {1}};
    plait_dist_groups g;
    CHECK(plait_dist_groups_create(&layout, &g) == PLAIT_OK);
    CHECK(g.stage == 0 && g.replica == 0 && g.replicas == 1 && g.replica_comm == MPI_COMM_NULL);
    CHECK(g.previous_count == 0 && g.next_count == 0);
    plait_dist_groups_free(&g);
    layout.replicas[0] = 2;
    layout.ranks[0][1] = 1;
    CHECK(plait_dist_groups_create(&layout, &g) == PLAIT_ERROR);
    CHECKF(strstr(plait_last_error(), "stage 0 lists rank 1, but the world has ranks 0 to 0") != NULL, "%s",
           plait_last_error());
}

static void layout_checks(void) {
    plait_stage_layout layout = {.stages = 0};
    CHECK(plait_stage_layout_check(&layout, 4) == PLAIT_ERROR);
    CHECK(strstr(plait_last_error(), "not 0") != NULL);
    layout = (plait_stage_layout){.stages = 3, .replicas = {2, 1, 1}};
    layout.ranks[0][0] = 3;
    layout.ranks[0][1] = 0;
    layout.ranks[1][0] = 2;
    layout.ranks[2][0] = 1;
    CHECK(plait_stage_layout_check(&layout, 4) == PLAIT_OK);
    CHECK(plait_stage_layout_check(&layout, 5) == PLAIT_ERROR);
    CHECKF(strstr(plait_last_error(), "rank 4 is in no stage") != NULL, "%s", plait_last_error());
    CHECK(plait_stage_layout_rank_for(&layout, 0, 0) == 3);
    CHECK(plait_stage_layout_rank_for(&layout, 0, 1) == 0);
    CHECK(plait_stage_layout_rank_for(&layout, 0, 2) == 3);
    CHECK(plait_stage_layout_rank_for(&layout, 2, 7) == 1);
    CHECK(plait_stage_layout_rank_for(&layout, 3, 0) == -1);
    layout.replicas[1] = PLAIT_DIST_MAX_REPLICAS + 1;
    CHECK(plait_stage_layout_check(&layout, 4) == PLAIT_ERROR);
}

/* Buckets are consecutive runs in readiness order of at most bucket_bytes; a larger parameter is
 * a bucket alone. One replica: nothing moves and every time is zero. */
static void buckets_and_no_op_sync(void) {
    enum { N = 7 };
    size_t counts[N] = {3, 3, 3, 3, 20, 1, 1};
    float memory[34];
    float *grads[N];
    size_t offset = 0;
    for (int p = 0; p < N; p++) {
        grads[p] = memory + offset;
        offset += counts[p];
    }
    for (int i = 0; i < 34; i++) memory[i] = (float)i;
    plait_grad_sync *sync = NULL;
    plait_grad_sync_config config = {.bucket_bytes = 40, .streams = 3};
    CHECK(plait_grad_sync_create(MPI_COMM_NULL, N, grads, counts, &config, &sync) == PLAIT_OK);
    if (!sync) return;
    int expected[N] = {0, 1, 1, 1, 2, 3, 3}, planned[N]; /* filled from the last-ready parameter */
    CHECK(plait_grad_bucket_plan(N, counts, 40, planned) == 4);
    CHECK(memcmp(planned, expected, sizeof expected) == 0);
    CHECK(plait_grad_bucket_plan(N, counts, 4, planned) == N); /* a parameter per bucket */
    CHECK(plait_grad_bucket_plan(N, counts, 1000, planned) == 1);
    CHECK(plait_grad_sync_bucket_count(sync) == 4);
    for (int p = 0; p < N; p++) CHECKF(plait_grad_sync_bucket_of(sync, p) == expected[p], "param %d", p);
    CHECK(plait_grad_sync_bucket_of(sync, N) == -1);
    for (int step = 0; step < 2; step++) {
        CHECK(plait_grad_sync_mark_ready(sync, 4) == PLAIT_OK);
        CHECK(plait_grad_sync_mark_ready(sync, 4) == PLAIT_ERROR);
        CHECKF(strstr(plait_last_error(), "parameter 4 was marked ready twice in one step") != NULL, "%s",
               plait_last_error());
        CHECK(plait_grad_sync_mark_ready(sync, N) == PLAIT_ERROR);
        CHECK(plait_grad_sync_mark_bucket_ready(sync, 3) == PLAIT_OK);
        CHECK(plait_grad_sync_mark_bucket_ready(sync, 3) == PLAIT_ERROR);
        CHECKF(strstr(plait_last_error(), "bucket 3 was marked ready twice in one step") != NULL, "%s",
               plait_last_error());
        CHECK(plait_grad_sync_mark_bucket_ready(sync, 2) == PLAIT_ERROR); /* parameter 4 alone, marked */
        CHECK(plait_grad_sync_mark_bucket_ready(sync, 4) == PLAIT_ERROR);
        plait_grad_sync_times times = {1, 1, 1, 0};
        CHECK(plait_grad_sync_wait_all(sync, &times) == PLAIT_OK);
        CHECK(times.communication == 0 && times.hidden == 0 && times.exposed == 0 && times.buckets == 4);
    }
    for (int i = 0; i < 34; i++) CHECK(memory[i] == (float)i);
    plait_grad_sync_free(sync);
    config.streams = 65;
    CHECK(plait_grad_sync_create(MPI_COMM_NULL, N, grads, counts, &config, &sync) == PLAIT_ERROR);
    CHECK(strstr(plait_last_error(), "1 to 64 streams") != NULL);
}

/* The last buckets to become ready taper (1, 2, 4 MiB, then the cap) so that little is left to
 * reduce after backward; the planner's byte count agrees with the parameter plan. */
static void tail_buckets_taper(void) {
    enum { N = 16 };
    size_t counts[N], half_mib = (size_t)1 << 17;
    for (int p = 0; p < N; p++) counts[p] = half_mib;
    int planned[N];
    CHECK(plait_grad_bucket_plan(N, counts, (size_t)4 << 20, planned) == 4);
    int sizes[4] = {0};
    for (int p = 0; p < N; p++) {
        CHECK(p == 0 || planned[p] >= planned[p - 1]);
        sizes[planned[p]]++;
    }
    CHECKF(sizes[0] == 2 && sizes[1] == 8 && sizes[2] == 4 && sizes[3] == 2, "%d %d %d %d", sizes[0], sizes[1],
           sizes[2], sizes[3]);
    CHECK(plait_grad_bucket_limit(0, (size_t)4 << 20) == (size_t)1 << 20);
    CHECK(plait_grad_bucket_limit(3, (size_t)4 << 20) == (size_t)4 << 20);
    CHECK(plait_grad_bucket_limit(5, 100) == 100); /* a cap under the tail size: every bucket at the cap */
    CHECK(plait_stage_bucket_count(8.0 * (1 << 20), 4.0 * (1 << 20)) == 4);
    CHECK(plait_stage_bucket_count(0.5 * (1 << 20), 4.0 * (1 << 20)) == 1);
    CHECK(plait_stage_bucket_count(1000, 400) == 3);
}

int main(void) {
    testing_run("world_without_mpirun", world_without_mpirun);
    testing_run("timeout_from_environment", timeout_from_environment);
    testing_run("single_stage_groups", single_stage_groups);
    testing_run("layout_checks", layout_checks);
    testing_run("buckets_and_no_op_sync", buckets_and_no_op_sync);
    testing_run("tail_buckets_taper", tail_buckets_taper);
    plait_dist_finalize();
    return testing_finish();
}
