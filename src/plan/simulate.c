/* The simulator: runs every rank's instruction list against the cost model, event by event.
 * Each rank's timeline is a chain of timestamps that depend on other ranks' timestamps only
 * through messages and collectives, so ranks can be advanced in any order until none can move. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plait/core.h"
#include "plan/cost.h"

enum { KIND_ACTIVATION, KIND_GRADIENT };

typedef struct rank_state {
    int pc;
    double clock;
    double *started; /* start time per instruction, -1 until started */
    double last_backward_start;
    stage_terms terms;
    double *bucket_ready; /* relative to the last backward's start */
} rank_state;

typedef struct stage_state {
    int bucket_count;
    int *registered;
    double *ready, *end;
    allreduce_lanes lanes;
} stage_state;

typedef struct simulator {
    const plait_plan *plan;
    const plait_schedule *schedule;
    const plait_hardware *hardware;
    plait_simulation *result;
    int rank_count, micro_batches;
    rank_state *ranks;
    stage_state *stages;
    double *arrival;    /* per (rank, kind, micro-batch): when the message arrived, -1 before */
    int *sender;        /* per (rank, kind, micro-batch) */
    int *receive_index; /* per (rank, kind, micro-batch): the RECV instruction, -1 if none */
    bool record, late_receives;
    int event_capacity;
} simulator;

static int slot(const simulator *sim, int rank, int kind, int micro_batch) {
    return (rank * 2 + kind) * sim->micro_batches + micro_batch;
}

static int add_event(simulator *sim, int rank, int lane, double start, double duration, const char *format,
                     int value) {
    if (!sim->record) return PLAIT_OK;
    plait_simulation *res = sim->result;
    if (res->event_count == sim->event_capacity) {
        int capacity = sim->event_capacity ? 2 * sim->event_capacity : 256;
        plait_trace_event *events = realloc(res->events, (size_t)capacity * sizeof *events);
        if (!events) return plait_fail("out of memory recording simulator events");
        res->events = events;
        sim->event_capacity = capacity;
    }
    plait_trace_event *e = &res->events[res->event_count++];
    e->rank = rank;
    e->lane = lane;
    snprintf(e->name, sizeof e->name, format, value);
    e->start = start;
    e->duration = duration;
    e->detail = false;
    return PLAIT_OK;
}

static int run_bucket(simulator *sim, int stage, int bucket) {
    const plait_stage *st = &sim->plan->stages[stage];
    stage_state *ss = &sim->stages[stage];
    /* bucket sizes do not depend on speed, so any replica's stage terms give them */
    double total = sim->ranks[st->ranks[0]].terms.parameter_bytes;
    double bytes = fmin(sim->plan->bucket_bytes, total - bucket * sim->plan->bucket_bytes);
    double start;
    ss->end[bucket] = allreduce_lanes_run(&ss->lanes, sim->hardware, st->replica_count, bucket, ss->ready[bucket],
                                          bytes, &start);
    for (int j = 0; j < st->replica_count; j++)
        if (add_event(sim, st->ranks[j], 1 + bucket % ss->lanes.streams, start, ss->end[bucket] - start,
                      "allreduce bucket %d", bucket))
            return PLAIT_ERROR;
    return PLAIT_OK;
}

/* 1: executed, 0: blocked, -1: error. */
static int step(simulator *sim, int rank) {
    rank_state *rs = &sim->ranks[rank];
    const plait_rank_schedule *list = &sim->schedule->ranks[rank];
    const plait_instruction *in = &list->instructions[rs->pc];
    plait_simulation *res = sim->result;
    int i = in->micro_batch;
    switch (in->op) {
    case PLAIT_OP_LOAD_MICROBATCH:
        break;
    case PLAIT_OP_FORWARD:
    case PLAIT_OP_BACKWARD: {
        bool forward = in->op == PLAIT_OP_FORWARD;
        double duration = forward ? rs->terms.forward : rs->terms.backward;
        rs->started[rs->pc] = rs->clock;
        if (!forward) rs->last_backward_start = rs->clock;
        if (add_event(sim, rank, 0, rs->clock, duration, forward ? "forward %d" : "backward %d", i))
            return -1;
        rs->clock += duration;
        res->rank_compute_seconds[rank] += duration;
        break;
    }
    case PLAIT_OP_RECV_ACTIVATION:
    case PLAIT_OP_RECV_GRADIENT: {
        int k = slot(sim, rank, in->op == PLAIT_OP_RECV_ACTIVATION ? KIND_ACTIVATION : KIND_GRADIENT, i);
        if (sim->arrival[k] < 0) return 0;
        if (sim->sender[k] != in->peer) {
            plait_fail("schedule: rank %d expects %s %d from rank %d but rank %d sent it", rank,
                       plait_op_name(in->op), i, in->peer, sim->sender[k]);
            return -1;
        }
        rs->clock = fmax(rs->clock, sim->arrival[k]);
        break;
    }
    case PLAIT_OP_SEND_ACTIVATION:
    case PLAIT_OP_SEND_GRADIENT: {
        bool activation = in->op == PLAIT_OP_SEND_ACTIVATION;
        int peer = in->peer;
        if (peer < 0 || peer >= sim->rank_count) {
            plait_fail("schedule: rank %d sends %s %d to rank %d, outside the world", rank, plait_op_name(in->op), i,
                       peer);
            return -1;
        }
        int k = slot(sim, peer, activation ? KIND_ACTIVATION : KIND_GRADIENT, i);
        if (sim->receive_index[k] < 0 || sim->arrival[k] >= 0) {
            plait_fail("schedule: rank %d's %s %d to rank %d has %s", rank, plait_op_name(in->op), i, peer,
                       sim->receive_index[k] < 0 ? "no matching receive" : "already been sent");
            return -1;
        }
        int post = sim->late_receives ? plait_schedule_post_point(&sim->schedule->ranks[peer], sim->receive_index[k])
                                      : -1;
        double posted = post < 0 ? 0 : sim->ranks[peer].started[post];
        if (posted < 0) return 0; /* the receiver has not posted it: a blocking send waits */
        double start = fmax(rs->clock, posted);
        double duration = activation ? rs->terms.send_activation : rs->terms.send_gradient;
        sim->arrival[k] = start + duration;
        sim->sender[k] = rank;
        if (add_event(sim, rank, 0, start, duration, activation ? "send activation %d" : "send gradient %d", i))
            return -1;
        rs->clock = start + duration;
        res->rank_send_seconds[rank] += duration;
        break;
    }
    case PLAIT_OP_ALLREDUCE_BUCKET: {
        int stage = list->stage, b = in->bucket;
        stage_state *ss = &sim->stages[stage];
        if (b < 0 || b >= ss->bucket_count) {
            plait_fail("schedule: rank %d reduces bucket %d but stage %d has %d buckets", rank, b, stage,
                       ss->bucket_count);
            return -1;
        }
        ss->ready[b] = fmax(ss->ready[b], rs->last_backward_start + rs->bucket_ready[b]);
        if (++ss->registered[b] == sim->plan->stages[stage].replica_count && run_bucket(sim, stage, b)) return -1;
        break;
    }
    case PLAIT_OP_OPTIMIZER_STEP: {
        stage_state *ss = &sim->stages[list->stage];
        double done = rs->clock;
        for (int b = 0; b < ss->bucket_count; b++) {
            if (ss->registered[b] < sim->plan->stages[list->stage].replica_count) return 0;
            done = fmax(done, ss->end[b]);
        }
        res->rank_allreduce_wait[rank] += done - rs->clock;
        rs->clock = done;
        break;
    }
    default:
        plait_fail("schedule: rank %d has an unknown instruction %d", rank, (int)in->op);
        return -1;
    }
    rs->pc++;
    return 1;
}

static int deadlock_error(const simulator *sim) {
    char text[400] = "";
    size_t used = 0;
    int listed = 0;
    for (int r = 0; r < sim->rank_count && listed < 4; r++) {
        const plait_rank_schedule *list = &sim->schedule->ranks[r];
        if (sim->ranks[r].pc >= list->count) continue;
        const plait_instruction *in = &list->instructions[sim->ranks[r].pc];
        used += (size_t)snprintf(text + used, sizeof text - used, "%srank %d at %s %d (peer %d)",
                                 listed ? "; " : "", r, plait_op_name(in->op),
                                 in->op == PLAIT_OP_ALLREDUCE_BUCKET ? in->bucket : in->micro_batch, in->peer);
        if (used >= sizeof text) break;
        listed++;
    }
    return plait_fail("schedule deadlocks: %s", text);
}

static int setup(simulator *sim, const plait_profile *profile) {
    const plait_plan *plan = sim->plan;
    plait_simulation *res = sim->result;
    int R = sim->rank_count, m = sim->micro_batches;
    double micro_batch_size = (double)plan->batch_size / plan->micro_batches;
    sim->ranks = calloc((size_t)R, sizeof *sim->ranks);
    sim->stages = calloc((size_t)plan->stage_count, sizeof *sim->stages);
    sim->arrival = malloc((size_t)R * 2 * (size_t)m * sizeof(double));
    sim->sender = malloc((size_t)R * 2 * (size_t)m * sizeof(int));
    sim->receive_index = malloc((size_t)R * 2 * (size_t)m * sizeof(int));
    res->rank_compute_seconds = calloc((size_t)R, sizeof(double));
    res->rank_send_seconds = calloc((size_t)R, sizeof(double));
    res->rank_allreduce_wait = calloc((size_t)R, sizeof(double));
    res->stage_busy_seconds = calloc((size_t)plan->stage_count, sizeof(double));
    if (!sim->ranks || !sim->stages || !sim->arrival || !sim->sender || !sim->receive_index ||
        !res->rank_compute_seconds || !res->rank_send_seconds || !res->rank_allreduce_wait ||
        !res->stage_busy_seconds)
        return plait_fail("out of memory for the simulator");
    for (int k = 0; k < R * 2 * m; k++) {
        sim->arrival[k] = -1;
        sim->sender[k] = -1;
        sim->receive_index[k] = -1;
    }
    for (int s = 0; s < plan->stage_count; s++) {
        stage_state *ss = &sim->stages[s];
        ss->bucket_count = sim->schedule->bucket_counts[s];
        ss->registered = calloc((size_t)ss->bucket_count + 1, sizeof(int));
        ss->ready = calloc((size_t)ss->bucket_count + 1, sizeof(double));
        ss->end = calloc((size_t)ss->bucket_count + 1, sizeof(double));
        if (!ss->registered || !ss->ready || !ss->end || allreduce_lanes_init(&ss->lanes, plan->streams))
            return plait_fail("out of memory for the simulator");
    }
    for (int r = 0; r < R; r++) {
        const plait_rank_schedule *list = &sim->schedule->ranks[r];
        rank_state *rs = &sim->ranks[r];
        const plait_stage *st = &plan->stages[list->stage];
        rs->started = malloc(((size_t)list->count + 1) * sizeof(double));
        rs->bucket_ready = calloc((size_t)sim->stages[list->stage].bucket_count + 1, sizeof(double));
        if (!rs->started || !rs->bucket_ready) return plait_fail("out of memory for the simulator");
        for (int k = 0; k < list->count; k++) rs->started[k] = -1;
        double speed = sim->hardware->speed[r];
        stage_terms_compute(profile, sim->hardware, st->first_unit, st->last_unit, st->replica_count, speed,
                            micro_batch_size, plan->bucket_bytes, plan->streams, &rs->terms);
        if (sim->stages[list->stage].bucket_count > 0)
            stage_bucket_ready(profile, st->first_unit, st->last_unit, micro_batch_size, speed, plan->bucket_bytes,
                               rs->bucket_ready, NULL);
        for (int k = 0; k < list->count; k++) {
            const plait_instruction *in = &list->instructions[k];
            if (in->op != PLAIT_OP_RECV_ACTIVATION && in->op != PLAIT_OP_RECV_GRADIENT) continue;
            if (in->micro_batch < 0 || in->micro_batch >= m)
                return plait_fail("schedule: rank %d receives micro-batch %d of %d", r, in->micro_batch, m);
            int kind = in->op == PLAIT_OP_RECV_ACTIVATION ? KIND_ACTIVATION : KIND_GRADIENT;
            int key = slot(sim, r, kind, in->micro_batch);
            if (sim->receive_index[key] >= 0)
                return plait_fail("schedule: rank %d receives %s %d twice", r, plait_op_name(in->op),
                                  in->micro_batch);
            sim->receive_index[key] = k;
        }
        for (int k = 0; k < list->count; k++) {
            int i = list->instructions[k].micro_batch;
            if (list->instructions[k].op != PLAIT_OP_ALLREDUCE_BUCKET && list->instructions[k].op !=
                PLAIT_OP_OPTIMIZER_STEP && (i < 0 || i >= m))
                return plait_fail("schedule: rank %d's %s names micro-batch %d of %d", r,
                                  plait_op_name(list->instructions[k].op), i, m);
        }
    }
    return PLAIT_OK;
}

static void teardown(simulator *sim) {
    for (int r = 0; sim->ranks && r < sim->rank_count; r++) {
        free(sim->ranks[r].started);
        free(sim->ranks[r].bucket_ready);
    }
    for (int s = 0; sim->stages && s < sim->plan->stage_count; s++) {
        free(sim->stages[s].registered);
        free(sim->stages[s].ready);
        free(sim->stages[s].end);
        allreduce_lanes_free(&sim->stages[s].lanes);
    }
    free(sim->ranks);
    free(sim->stages);
    free(sim->arrival);
    free(sim->sender);
    free(sim->receive_index);
}

static int run(simulator *sim) {
    for (;;) {
        bool progress = false, done = true;
        for (int r = 0; r < sim->rank_count; r++) {
            const plait_rank_schedule *list = &sim->schedule->ranks[r];
            int status = 1;
            while (sim->ranks[r].pc < list->count && (status = step(sim, r)) == 1) progress = true;
            if (sim->ranks[r].pc < list->count) {
                if (status < 0) return PLAIT_ERROR;
                done = false;
            }
        }
        if (done) return PLAIT_OK;
        if (!progress) return deadlock_error(sim);
    }
}

static void summarize(simulator *sim) {
    plait_simulation *res = sim->result;
    double idle = 0;
    res->seconds = 0;
    for (int r = 0; r < sim->rank_count; r++) res->seconds = fmax(res->seconds, sim->ranks[r].clock);
    for (int r = 0; r < sim->rank_count; r++) {
        double comm = res->rank_send_seconds[r] + res->rank_allreduce_wait[r];
        idle += res->seconds - res->rank_compute_seconds[r] - comm;
        res->exposed_communication = fmax(res->exposed_communication, comm);
        int s = sim->schedule->ranks[r].stage;
        res->stage_busy_seconds[s] = fmax(res->stage_busy_seconds[s], res->rank_compute_seconds[r]);
    }
    res->bubble_fraction = res->seconds > 0 ? idle / (res->seconds * sim->rank_count) : 0;
}

int plait_simulate(const plait_plan *plan, const plait_schedule *schedule, const plait_profile *profile,
                   const plait_hardware *hardware, const plait_simulation_options *options,
                   plait_simulation *simulation) {
    memset(simulation, 0, sizeof *simulation);
    if (schedule->rank_count != hardware->worker_count)
        return plait_fail("simulate: the schedule has %d ranks but the hardware has %d workers",
                          schedule->rank_count, hardware->worker_count);
    if (schedule->stage_count != plan->stage_count)
        return plait_fail("simulate: the schedule has %d stages but the plan has %d", schedule->stage_count,
                          plan->stage_count);
    simulator sim = {.plan = plan,
                     .schedule = schedule,
                     .hardware = hardware,
                     .result = simulation,
                     .rank_count = schedule->rank_count,
                     .micro_batches = plan->micro_batches,
                     .record = options && options->record_events,
                     .late_receives = options && options->late_receives};
    simulation->rank_count = schedule->rank_count;
    simulation->stage_count = plan->stage_count;
    int status = setup(&sim, profile);
    if (status == PLAIT_OK) status = run(&sim);
    if (status == PLAIT_OK) summarize(&sim);
    teardown(&sim);
    if (status != PLAIT_OK) plait_simulation_free(simulation);
    return status;
}

void plait_simulation_free(plait_simulation *simulation) {
    free(simulation->rank_compute_seconds);
    free(simulation->rank_send_seconds);
    free(simulation->rank_allreduce_wait);
    free(simulation->stage_busy_seconds);
    free(simulation->events);
    memset(simulation, 0, sizeof *simulation);
}
