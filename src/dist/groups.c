/* Stage layouts: which ranks run which stage, the replica communicators and the neighbour stages. */
#include <string.h>

#include "dist/dist_internal.h"

int plait_stage_layout_check(const plait_stage_layout *layout, int world_size) {
    if (layout->stages < 1 || layout->stages > PLAIT_DIST_MAX_STAGES)
        return plait_fail("a layout needs 1 to %d stages, not %d", PLAIT_DIST_MAX_STAGES, layout->stages);
    if (world_size < 1 || world_size > PLAIT_DIST_MAX_STAGES * PLAIT_DIST_MAX_REPLICAS)
        return plait_fail("world size %d is out of range", world_size);
    int seen_at_stage[PLAIT_DIST_MAX_STAGES * PLAIT_DIST_MAX_REPLICAS];
    for (int r = 0; r < world_size; r++) seen_at_stage[r] = -1;
    int total = 0;
    for (int s = 0; s < layout->stages; s++) {
        int replicas = layout->replicas[s];
        if (replicas < 1) return plait_fail("stage %d has no ranks", s);
        if (replicas > PLAIT_DIST_MAX_REPLICAS)
            return plait_fail("stage %d has %d ranks, at most %d are supported", s, replicas,
                              PLAIT_DIST_MAX_REPLICAS);
        for (int j = 0; j < replicas; j++) {
            int rank = layout->ranks[s][j];
            if (rank < 0 || rank >= world_size)
                return plait_fail("stage %d lists rank %d, but the world has ranks 0 to %d", s, rank,
                                  world_size - 1);
            if (seen_at_stage[rank] >= 0)
                return plait_fail("rank %d is listed twice (stages %d and %d)", rank, seen_at_stage[rank], s);
            seen_at_stage[rank] = s;
        }
        total += replicas;
    }
    if (total != world_size) {
        for (int r = 0; r < world_size; r++)
            if (seen_at_stage[r] < 0)
                return plait_fail("the layout uses %d ranks but the world has %d: rank %d is in no stage", total,
                                  world_size, r);
    }
    return PLAIT_OK;
}

int plait_stage_layout_rank_for(const plait_stage_layout *layout, int stage, int micro_batch) {
    if (stage < 0 || stage >= layout->stages || micro_batch < 0) return -1;
    return layout->ranks[stage][micro_batch % layout->replicas[stage]];
}

int plait_dist_groups_create(const plait_stage_layout *layout, plait_dist_groups *groups) {
    memset(groups, 0, sizeof *groups);
    groups->replica_comm = MPI_COMM_NULL;
    if (plait_stage_layout_check(layout, dist_state.size) != PLAIT_OK) return PLAIT_ERROR;
    groups->layout = *layout;
    const plait_stage_layout *l = &groups->layout;
    groups->stage = -1;
    for (int s = 0; s < l->stages && groups->stage < 0; s++)
        for (int j = 0; j < l->replicas[s]; j++)
            if (l->ranks[s][j] == dist_state.rank) {
                groups->stage = s;
                groups->replica = j;
            }
    int s = groups->stage;
    groups->replicas = l->replicas[s];
    if (s > 0) {
        groups->previous_count = l->replicas[s - 1];
        memcpy(groups->previous, l->ranks[s - 1], sizeof(int) * (size_t)l->replicas[s - 1]);
    }
    if (s + 1 < l->stages) {
        groups->next_count = l->replicas[s + 1];
        memcpy(groups->next, l->ranks[s + 1], sizeof(int) * (size_t)l->replicas[s + 1]);
    }
    if (!dist_state.uses_mpi) return PLAIT_OK;
    /* The key orders each replica communicator as the layout lists the stage's ranks. */
    if (dist_check(MPI_Comm_split(MPI_COMM_WORLD, s, groups->replica, &groups->replica_comm),
                   "MPI_Comm_split into replica groups") != PLAIT_OK)
        return PLAIT_ERROR;
    MPI_Comm_set_errhandler(groups->replica_comm, MPI_ERRORS_RETURN);
    return PLAIT_OK;
}

void plait_dist_groups_free(plait_dist_groups *groups) {
    if (groups->replica_comm != MPI_COMM_NULL) MPI_Comm_free(&groups->replica_comm);
    groups->replica_comm = MPI_COMM_NULL;
}
