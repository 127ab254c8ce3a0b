/* A 3-rank hybrid layout: stage 0 on ranks {0, 1} (two replicas), stage 1 on rank {2}. Groups,
 * neighbours, replica all-reduce confined to a stage, and micro-batches dealt round robin. */
#include <string.h>

#include "mpi_testing.h"

static plait_stage_layout hybrid_layout(void) {
    plait_stage_layout layout = {.stages = 2, .replicas = {2, 1}};
    layout.ranks[0][0] = 0;
    layout.ranks[0][1] = 1;
    layout.ranks[1][0] = 2;
    return layout;
}

static void groups_of_hybrid_layout(void) {
    plait_stage_layout layout = hybrid_layout();
    plait_dist_groups g;
    CHECK(plait_dist_groups_create(&layout, &g) == PLAIT_OK);
    int rank = plait_dist_rank();
    int size = 0, replica_rank = -1;
    MPI_Comm_size(g.replica_comm, &size);
    MPI_Comm_rank(g.replica_comm, &replica_rank);
    if (rank < 2) {
        CHECK(g.stage == 0 && g.replica == rank && g.replicas == 2 && size == 2 && replica_rank == rank);
        CHECK(g.previous_count == 0 && g.next_count == 1 && g.next[0] == 2);
    } else {
        CHECK(g.stage == 1 && g.replica == 0 && g.replicas == 1 && size == 1);
        CHECK(g.previous_count == 2 && g.previous[0] == 0 && g.previous[1] == 1 && g.next_count == 0);
    }
    /* The replica communicator holds the stage and nobody else. */
    int value = 1 << rank, total = 0;
    MPI_Allreduce(&value, &total, 1, MPI_INT, MPI_SUM, g.replica_comm);
    CHECK(total == (rank < 2 ? 3 : 4));
    plait_dist_groups_free(&g);
    CHECK(g.replica_comm == MPI_COMM_NULL);
}

/* Ranks listed out of order: a replica's index is its place in the stage's list. */
static void listed_order_sets_replica_index(void) {
    plait_stage_layout layout = {.stages = 2, .replicas = {1, 2}};
    layout.ranks[0][0] = 1;
    layout.ranks[1][0] = 2;
    layout.ranks[1][1] = 0;
    plait_dist_groups g;
    CHECK(plait_dist_groups_create(&layout, &g) == PLAIT_OK);
    int rank = plait_dist_rank(), replica_rank = -1;
    MPI_Comm_rank(g.replica_comm, &replica_rank);
    int expected_stage[3] = {1, 0, 1}, expected_replica[3] = {1, 0, 0};
    CHECK(g.stage == expected_stage[rank] && g.replica == expected_replica[rank] && replica_rank == g.replica);
    if (rank == 1) CHECK(g.next_count == 2 && g.next[0] == 2 && g.next[1] == 0);
    plait_dist_groups_free(&g);
}

static void bad_layouts_are_refused(void) {
    plait_stage_layout layout = hybrid_layout();
    plait_dist_groups g;
    layout.ranks[1][0] = 1;
    CHECK(plait_dist_groups_create(&layout, &g) == PLAIT_ERROR);
    CHECKF(strstr(plait_last_error(), "rank 1 is listed twice (stages 0 and 1)") != NULL, "%s", plait_last_error());
    layout = hybrid_layout();
    layout.replicas[1] = 0;
    CHECK(plait_dist_groups_create(&layout, &g) == PLAIT_ERROR);
    CHECKF(strstr(plait_last_error(), "stage 1 has no ranks") != NULL, "%s", plait_last_error());
    layout = hybrid_layout();
    layout.replicas[0] = 1;
    CHECK(plait_dist_groups_create(&layout, &g) == PLAIT_ERROR);
    CHECKF(strstr(plait_last_error(), "uses 2 ranks but the world has 3: rank 1 is in no stage") != NULL, "%s",
           plait_last_error());
    layout = hybrid_layout();
    layout.ranks[1][0] = 5;
    CHECK(plait_dist_groups_create(&layout, &g) == PLAIT_ERROR);
    CHECKF(strstr(plait_last_error(), "stage 1 lists rank 5, but the world has ranks 0 to 2") != NULL, "%s",
           plait_last_error());
}

/* One mini-batch of 6 micro-batches: stage 0 replicas take them round robin, send activations to
 * the single stage-1 rank, which also gets the labels and returns gradients; then stage 0 averages
 * its gradients across its two replicas while stage 1 has nothing to synchronize. */
static void hybrid_mini_batch(void) {
    enum { MICRO = 6, WIDTH = 32 };
    plait_stage_layout layout = hybrid_layout();
    plait_dist_groups g;
    CHECK(plait_dist_groups_create(&layout, &g) == PLAIT_OK);
    int rank = plait_dist_rank();
    float activations[MICRO][WIDTH], gradients[MICRO][WIDTH];
    int32_t labels[MICRO][4];
    plait_dist_transfer in[MICRO], out[MICRO], label_moves[MICRO];
    memset(in, 0, sizeof in);
    memset(out, 0, sizeof out);
    memset(label_moves, 0, sizeof label_moves);
    float weight_grad[WIDTH] = {0}; /* stage 0's "parameter gradient": sum of its gradients received */
    for (int m = 0; m < MICRO; m++) {
        int first = plait_stage_layout_rank_for(&g.layout, 0, m), last = plait_stage_layout_rank_for(&g.layout, 1, m);
        CHECK(first == m % 2 && last == 2);
        if (rank == first) {
            CHECK(plait_dist_post_recv(&in[m], PLAIT_DIST_GRADIENT, m, last, gradients[m], WIDTH) == PLAIT_OK);
            for (int k = 0; k < WIDTH; k++) activations[m][k] = (float)(m * 100 + k);
            for (int k = 0; k < 4; k++) labels[m][k] = m * 10 + k;
            CHECK(plait_dist_isend(&out[m], PLAIT_DIST_ACTIVATION, m, last, activations[m], WIDTH) == PLAIT_OK);
            CHECK(plait_dist_isend(&label_moves[m], PLAIT_DIST_LABELS, m, last, labels[m], 4) == PLAIT_OK);
        } else if (rank == last) {
            CHECK(plait_dist_post_recv(&in[m], PLAIT_DIST_ACTIVATION, m, first, activations[m], WIDTH) == PLAIT_OK);
            CHECK(plait_dist_post_recv(&label_moves[m], PLAIT_DIST_LABELS, m, first, labels[m], 4) == PLAIT_OK);
        }
    }
    int wrong = 0;
    for (int m = 0; m < MICRO; m++) {
        if (rank == 2) {
            int first = plait_stage_layout_rank_for(&g.layout, 0, m);
            CHECK(plait_dist_wait(&in[m]) == PLAIT_OK && plait_dist_wait(&label_moves[m]) == PLAIT_OK);
            for (int k = 0; k < WIDTH; k++) {
                wrong += activations[m][k] != (float)(m * 100 + k);
                gradients[m][k] = activations[m][k] + (float)labels[m][0];
            }
            CHECK(plait_dist_isend(&out[m], PLAIT_DIST_GRADIENT, m, first, gradients[m], WIDTH) == PLAIT_OK);
        } else if (m % 2 == rank) {
            CHECK(plait_dist_wait(&in[m]) == PLAIT_OK);
            for (int k = 0; k < WIDTH; k++) weight_grad[k] += gradients[m][k];
        }
    }
    for (int m = 0; m < MICRO; m++) {
        CHECK(plait_dist_wait(&out[m]) == PLAIT_OK);
        CHECK(plait_dist_wait(&label_moves[m]) == PLAIT_OK);
    }
    CHECK(wrong == 0);
    float *grads[1] = {weight_grad};
    size_t counts[1] = {WIDTH};
    plait_grad_sync *sync = NULL;
    plait_grad_sync_config config = {.bucket_bytes = 64, .streams = 2};
    CHECK(plait_grad_sync_create(g.replica_comm, 1, grads, counts, &config, &sync) == PLAIT_OK);
    plait_grad_sync_times times;
    CHECK(plait_grad_sync_mark_ready(sync, 0) == PLAIT_OK);
    CHECK(plait_grad_sync_wait_all(sync, &times) == PLAIT_OK);
    if (rank < 2) {
        /* Averaged over both replicas: half the sum over all micro-batches of (100m + k + 10m). */
        for (int k = 0; k < WIDTH; k++) {
            float expected = 0;
            for (int m = 0; m < MICRO; m++) expected += (float)(110 * m + k);
            wrong += weight_grad[k] != expected / 2;
        }
        CHECK(times.communication > 0);
    } else {
        CHECK(times.communication == 0 && times.hidden == 0 && times.exposed == 0);
    }
    CHECK(wrong == 0);
    plait_grad_sync_free(sync);
    plait_dist_groups_free(&g);
}

int main(int argc, char **argv) {
    if (plait_dist_init(&argc, &argv) != PLAIT_OK) {
        fprintf(stderr, "%s\n", plait_last_error());
        return 1;
    }
    if (plait_dist_size() != 3) {
        fprintf(stderr, "run with 3 ranks\n");
        return 1;
    }
    mpi_testing_run("groups_of_hybrid_layout", groups_of_hybrid_layout);
    mpi_testing_run("listed_order_sets_replica_index", listed_order_sets_replica_index);
    mpi_testing_run("bad_layouts_are_refused", bad_layouts_are_refused);
    mpi_testing_run("hybrid_mini_batch", hybrid_mini_batch);
    return mpi_testing_finish();
}
