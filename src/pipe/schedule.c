/* Schedules: a plan becomes one instruction list per rank (GPipe or 1F1B, replicated stages). */
#include <stdlib.h>
#include <string.h>

#include "plait/core.h"
#include "plait/plan.h"
#include "plan/cost.h"

const char *plait_op_name(plait_op op) {
    static const char *names[] = {"LOAD_MICROBATCH", "RECV_ACTIVATION", "FORWARD",
                                  "SEND_ACTIVATION", "RECV_GRADIENT",   "BACKWARD",
                                  "SEND_GRADIENT",   "ALLREDUCE_BUCKET", "OPTIMIZER_STEP"};
    return (unsigned)op < sizeof names / sizeof names[0] ? names[op] : "UNKNOWN";
}

typedef struct list_builder {
    const plait_plan *plan;
    int stage;
    plait_rank_schedule *out;
} list_builder;

static void emit(list_builder *b, plait_op op, int micro_batch, int peer, int bucket) {
    /* capacity is computed exactly before building, so this never overflows */
    b->out->instructions[b->out->count++] = (plait_instruction){op, micro_batch, peer, bucket};
}

/* The replica of stage s that runs micro-batch i. */
static int rank_of(const plait_plan *plan, int stage, int micro_batch) {
    const plait_stage *st = &plan->stages[stage];
    return st->ranks[micro_batch % st->replica_count];
}

static void emit_forward(list_builder *b, int i) {
    int s = b->stage, last = b->plan->stage_count - 1;
    if (s == 0)
        emit(b, PLAIT_OP_LOAD_MICROBATCH, i, -1, -1);
    else
        emit(b, PLAIT_OP_RECV_ACTIVATION, i, rank_of(b->plan, s - 1, i), -1);
    if (s == last && s > 0) emit(b, PLAIT_OP_LOAD_MICROBATCH, i, -1, -1); /* labels */
    emit(b, PLAIT_OP_FORWARD, i, -1, -1);
    if (s < last) emit(b, PLAIT_OP_SEND_ACTIVATION, i, rank_of(b->plan, s + 1, i), -1);
}

static void emit_backward(list_builder *b, int i) {
    int s = b->stage, last = b->plan->stage_count - 1;
    if (s < last) emit(b, PLAIT_OP_RECV_GRADIENT, i, rank_of(b->plan, s + 1, i), -1);
    emit(b, PLAIT_OP_BACKWARD, i, -1, -1);
    if (s > 0) emit(b, PLAIT_OP_SEND_GRADIENT, i, rank_of(b->plan, s - 1, i), -1);
}

static int build_rank(const plait_plan *plan, int stage, int replica, int buckets, plait_rank_schedule *out) {
    const plait_stage *st = &plan->stages[stage];
    int replicas = st->replica_count, own = plan->micro_batches / replicas;
    if (own < 1 || buckets < 0) return plait_fail("schedule: stage %d has no micro-batches", stage);
    size_t capacity = (size_t)own * 8 + (size_t)buckets + 1;
    out->rank = st->ranks[replica];
    out->stage = stage;
    out->replica = replica;
    out->count = 0;
    out->instructions = malloc(capacity * sizeof *out->instructions);
    if (!out->instructions) return plait_fail("out of memory for the schedule of rank %d", out->rank);
    list_builder b = {plan, stage, out};
    if (plan->schedule == PLAIT_SCHEDULE_GPIPE) {
        for (int k = 0; k < own; k++) emit_forward(&b, replica + k * replicas);
        for (int k = 0; k < own; k++) emit_backward(&b, replica + k * replicas);
    } else {
        /* 1F1B of the stage as a whole, projected onto this replica's micro-batches: each replica's
         * order is a subsequence of one deadlock-free order, so replicas never wait on each other.
         * The warm-up is stages - stage - 1 without replicas (see one_f_one_b_warmup). */
        int m = plan->micro_batches, warmup = plan_stage_warmup(plan, stage);
        if (warmup > m) warmup = m;
        for (int i = 0; i < warmup; i++)
            if (i % replicas == replica) emit_forward(&b, i);
        for (int k = 0; k + warmup < m; k++) {
            if ((k + warmup) % replicas == replica) emit_forward(&b, k + warmup);
            if (k % replicas == replica) emit_backward(&b, k);
        }
        for (int k = m - warmup; k < m; k++)
            if (k % replicas == replica) emit_backward(&b, k);
    }
    for (int bucket = 0; bucket < buckets; bucket++) emit(&b, PLAIT_OP_ALLREDUCE_BUCKET, -1, -1, bucket);
    emit(&b, PLAIT_OP_OPTIMIZER_STEP, -1, -1, -1);
    return PLAIT_OK;
}

int plait_schedule_build(const plait_plan *plan, const double *unit_parameter_bytes, plait_schedule *schedule) {
    memset(schedule, 0, sizeof *schedule);
    if (plan->stage_count < 1) return plait_fail("schedule: the plan has no stages");
    int rank_count = 0;
    for (int s = 0; s < plan->stage_count; s++) {
        if (plan->stages[s].replica_count < 1 || plan->micro_batches % plan->stages[s].replica_count)
            return plait_fail("schedule: stage %d's replicas do not divide the micro-batches; validate the plan",
                              s);
        rank_count += plan->stages[s].replica_count;
    }
    schedule->ranks = calloc((size_t)rank_count, sizeof *schedule->ranks);
    schedule->bucket_counts = calloc((size_t)plan->stage_count, sizeof(int));
    if (!schedule->ranks || !schedule->bucket_counts) {
        plait_schedule_free(schedule);
        return plait_fail("out of memory for a schedule of %d ranks", rank_count);
    }
    schedule->rank_count = rank_count;
    schedule->stage_count = plan->stage_count;
    for (int s = 0; s < plan->stage_count; s++) {
        const plait_stage *st = &plan->stages[s];
        double parameters = 0;
        for (int u = st->last_unit - 1; u >= st->first_unit; u--) parameters += unit_parameter_bytes[u];
        int buckets = st->replica_count > 1 ? plait_stage_bucket_count(parameters, plan->bucket_bytes) : 0;
        schedule->bucket_counts[s] = buckets;
        for (int j = 0; j < st->replica_count; j++) {
            int rank = st->ranks[j];
            if (rank < 0 || rank >= rank_count || schedule->ranks[rank].instructions) {
                plait_schedule_free(schedule);
                return plait_fail("schedule: rank %d of stage %d is out of range or repeated; validate the plan",
                                  rank, s);
            }
            if (build_rank(plan, s, j, buckets, &schedule->ranks[rank])) {
                plait_schedule_free(schedule);
                return PLAIT_ERROR;
            }
        }
    }
    return PLAIT_OK;
}

void plait_schedule_free(plait_schedule *schedule) {
    for (int r = 0; schedule->ranks && r < schedule->rank_count; r++) free(schedule->ranks[r].instructions);
    free(schedule->ranks);
    free(schedule->bucket_counts);
    memset(schedule, 0, sizeof *schedule);
}

int plait_schedule_post_point(const plait_rank_schedule *rank, int index) {
    for (int k = index - 1; k >= 0; k--) {
        plait_op op = rank->instructions[k].op;
        if (op == PLAIT_OP_FORWARD || op == PLAIT_OP_BACKWARD) return k;
    }
    return -1;
}
