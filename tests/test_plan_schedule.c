/* Schedules, the simulator and the trace writers. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "plan_fixtures.h"

static int count_op(const plait_rank_schedule *list, plait_op op, int micro_batch) {
    int n = 0;
    for (int k = 0; k < list->count; k++)
        if (list->instructions[k].op == op && list->instructions[k].micro_batch == micro_batch) n++;
    return n;
}

static int index_of(const plait_rank_schedule *list, plait_op op, int micro_batch) {
    for (int k = 0; k < list->count; k++)
        if (list->instructions[k].op == op && list->instructions[k].micro_batch == micro_batch) return k;
    return -1;
}

/* The properties every schedule must have; returns the number of violations. */
static int check_schedule(const plait_plan *plan, const plait_schedule *sc) {
    int bad = testing_failures_in_case;
    int m = plan->micro_batches, S = plan->stage_count;
    for (int s = 0; s < S; s++) {
        const plait_stage *st = &plan->stages[s];
        int own = m / st->replica_count;
        for (int i = 0; i < m; i++) {
            int owner = st->ranks[i % st->replica_count];
            for (int j = 0; j < st->replica_count; j++) {
                const plait_rank_schedule *list = &sc->ranks[st->ranks[j]];
                int expect = st->ranks[j] == owner;
                CHECKF(count_op(list, PLAIT_OP_FORWARD, i) == expect, "stage %d mb %d rank %d", s, i, list->rank);
                CHECKF(count_op(list, PLAIT_OP_BACKWARD, i) == expect, "stage %d mb %d rank %d", s, i, list->rank);
            }
            const plait_rank_schedule *list = &sc->ranks[owner];
            CHECK(index_of(list, PLAIT_OP_FORWARD, i) < index_of(list, PLAIT_OP_BACKWARD, i));
            if (s == 0) CHECK(index_of(list, PLAIT_OP_LOAD_MICROBATCH, i) >= 0);
        }
        for (int j = 0; j < st->replica_count; j++) {
            const plait_rank_schedule *list = &sc->ranks[st->ranks[j]];
            CHECK(list->stage == s && list->replica == j);
            CHECK(list->instructions[list->count - 1].op == PLAIT_OP_OPTIMIZER_STEP);
            int buckets = 0, outstanding = 0, peak = 0, backwards = 0;
            for (int k = 0; k < list->count; k++) {
                const plait_instruction *in = &list->instructions[k];
                if (in->op == PLAIT_OP_ALLREDUCE_BUCKET) {
                    CHECK(in->bucket == buckets++ && backwards == own);
                }
                if (in->op == PLAIT_OP_FORWARD && ++outstanding > peak) peak = outstanding;
                if (in->op == PLAIT_OP_BACKWARD) {
                    outstanding--;
                    backwards++;
                }
                if (plan->schedule == PLAIT_SCHEDULE_GPIPE && in->op == PLAIT_OP_FORWARD) CHECK(backwards == 0);
            }
            CHECK(buckets == sc->bucket_counts[s]);
            int warmup = 0; /* ranks after the stage, plus replicas of replicated stages from it on */
            for (int k = s; k < S; k++) {
                int r = plan->stages[k].replica_count;
                warmup += (k > s ? r : 0) + (r > 1 && k < S - 1 ? r : 0);
            }
            int window = (warmup + st->replica_count) / st->replica_count;
            int limit = plan->schedule == PLAIT_SCHEDULE_GPIPE || own < window ? own : window;
            /* replica 0 has the largest share of the 1F1B window */
            CHECKF(j == 0 ? peak == limit : peak <= limit, "stage %d replica %d keeps %d micro-batches, limit %d", s,
                   j, peak, limit);
        }
    }
    /* each send has exactly one matching receive on the right rank, and the other way around */
    for (int r = 0; r < sc->rank_count; r++) {
        const plait_rank_schedule *list = &sc->ranks[r];
        for (int k = 0; k < list->count; k++) {
            const plait_instruction *in = &list->instructions[k];
            plait_op want;
            if (in->op == PLAIT_OP_SEND_ACTIVATION)
                want = PLAIT_OP_RECV_ACTIVATION;
            else if (in->op == PLAIT_OP_SEND_GRADIENT)
                want = PLAIT_OP_RECV_GRADIENT;
            else if (in->op == PLAIT_OP_RECV_ACTIVATION)
                want = PLAIT_OP_SEND_ACTIVATION;
            else if (in->op == PLAIT_OP_RECV_GRADIENT)
                want = PLAIT_OP_SEND_GRADIENT;
            else
                continue;
            const plait_rank_schedule *peer = &sc->ranks[in->peer];
            int matches = 0;
            for (int q = 0; q < peer->count; q++)
                matches += peer->instructions[q].op == want && peer->instructions[q].micro_batch == in->micro_batch &&
                           peer->instructions[q].peer == r;
            CHECKF(matches == 1, "rank %d %s %d peer %d: %d matches", r, plait_op_name(in->op), in->micro_batch,
                   in->peer, matches);
            int next = in->op == PLAIT_OP_SEND_ACTIVATION || in->op == PLAIT_OP_RECV_GRADIENT ? 1 : -1;
            CHECK(peer->stage == list->stage + next);
            const plait_stage *pst = &plan->stages[peer->stage];
            CHECK(pst->ranks[in->micro_batch % pst->replica_count] == in->peer);
        }
    }
    return testing_failures_in_case - bad;
}

static void schedules_are_complete_matched_and_deadlock_free(void) {
    plait_rng rng;
    plait_rng_seed(&rng, 11);
    int checked = 0;
    for (int trial = 0; trial < 300; trial++) {
        int S = 1 + (int)plait_rng_below(&rng, 5);
        int replicas[5] = {0}, lasts[5] = {0}, lcm = 1;
        for (int s = 0; s < S; s++) {
            replicas[s] = 1 + (int)plait_rng_below(&rng, 3);
            lasts[s] = (s ? lasts[s - 1] : 0) + 1 + (int)plait_rng_below(&rng, 2);
            int a = lcm, b = replicas[s];
            while (b) {
                int t = a % b;
                a = b;
                b = t;
            }
            lcm = lcm / a * replicas[s];
        }
        int m = lcm * (1 + (int)plait_rng_below(&rng, 3));
        plait_plan plan;
        plait_schedule_kind kind = trial % 2 ? PLAIT_SCHEDULE_1F1B : PLAIT_SCHEDULE_GPIPE;
        fixture_plan(&plan, S, lasts, replicas, m * 2, m, kind);
        plan.bucket_bytes = 250;
        plan.streams = 1 + trial % 3;
        int units = lasts[S - 1], world = 0;
        for (int s = 0; s < S; s++) world += replicas[s];
        double f[16], b[16], params[16];
        for (int u = 0; u < units; u++) {
            f[u] = 0.1 + plait_rng_uniform(&rng);
            b[u] = 0.1 + 2 * plait_rng_uniform(&rng);
            params[u] = plait_rng_below(&rng, 1000);
        }
        plait_profile profile;
        fixture_profile(&profile, units, f, b, 1000, params, 0);
        plait_hardware hw;
        plait_hardware_init(&hw, world, 1, 1e12, (plait_link){1e4 * (1 + trial % 4), 0.01 * (trial % 3)},
                            (plait_link){1e4, 0.001});
        for (int w = 0; w < world; w++) hw.speed[w] = 0.5 + plait_rng_uniform(&rng);
        CHECK(plait_plan_validate(&plan, world, units, &profile, &hw) == PLAIT_OK);
        plait_schedule sc;
        CHECK(plait_schedule_build(&plan, params, &sc) == PLAIT_OK);
        if (check_schedule(&plan, &sc)) fprintf(stderr, "  trial %d: S=%d m=%d\n", trial, S, m);
        plait_simulation sim;
        /* deadlock-free even when receives are posted only one compute ahead */
        plait_simulation_options strict = {.late_receives = true};
        int status = plait_simulate(&plan, &sc, &profile, &hw, &strict, &sim);
        CHECKF(status == PLAIT_OK, "trial %d (late receives): %s", trial, plait_last_error());
        double strict_seconds = sim.seconds;
        plait_simulation_free(&sim);
        status = plait_simulate(&plan, &sc, &profile, &hw, NULL, &sim);
        CHECKF(status == PLAIT_OK, "trial %d: %s", trial, plait_last_error());
        CHECK(sim.seconds <= strict_seconds * (1 + 1e-12)); /* posting early never delays */
        if (status == PLAIT_OK) {
            double compute = 0;
            for (int s = 0; s < S; s++) {
                double stage_work = 0;
                for (int u = (s ? lasts[s - 1] : 0); u < lasts[s]; u++) stage_work += (f[u] + b[u]) * 2 * m;
                compute += stage_work;
            }
            CHECK(sim.seconds > 0 && sim.bubble_fraction >= 0 && sim.bubble_fraction < 1);
            double total = 0;
            for (int r = 0; r < world; r++) total += sim.rank_compute_seconds[r] * hw.speed[r];
            CHECKF(fabs(total - compute) < 1e-9 * compute, "work %g vs %g", total, compute);
            checked++;
        }
        plait_simulation_free(&sim);
        plait_schedule_free(&sc);
        plait_hardware_free(&hw);
        plait_profile_free(&profile);
        plait_plan_free(&plan);
    }
    CHECK(checked == 300);
}

static void one_f_one_b_order(void) {
    /* 3 stages, 4 micro-batches: stage 0 warms up with 2 forwards, the last stage alternates */
    plait_plan plan;
    fixture_plan(&plan, 3, (int[]){1, 2, 3}, (int[]){1, 1, 1}, 4, 4, PLAIT_SCHEDULE_1F1B);
    plait_schedule sc;
    CHECK(plait_schedule_build(&plan, (double[]){0, 0, 0}, &sc) == PLAIT_OK);
    char order[3][64];
    for (int r = 0; r < 3; r++) {
        int used = 0;
        for (int k = 0; k < sc.ranks[r].count; k++) {
            const plait_instruction *in = &sc.ranks[r].instructions[k];
            if (in->op == PLAIT_OP_FORWARD || in->op == PLAIT_OP_BACKWARD)
                used += snprintf(order[r] + used, sizeof order[r] - used, "%c%d ",
                                 in->op == PLAIT_OP_FORWARD ? 'F' : 'B', in->micro_batch);
        }
    }
    CHECK(strcmp(order[0], "F0 F1 F2 B0 F3 B1 B2 B3 ") == 0);
    CHECK(strcmp(order[1], "F0 F1 B0 F2 B1 F3 B2 B3 ") == 0);
    CHECK(strcmp(order[2], "F0 B0 F1 B1 F2 B2 F3 B3 ") == 0);
    /* the receive of gradient 0 on stage 0 is posted when forward 2 starts */
    int recv = index_of(&sc.ranks[0], PLAIT_OP_RECV_GRADIENT, 0);
    CHECK(plait_schedule_post_point(&sc.ranks[0], recv) == index_of(&sc.ranks[0], PLAIT_OP_FORWARD, 2));
    CHECK(plait_schedule_post_point(&sc.ranks[1], 0) == -1);
    plait_schedule_free(&sc);
    plait_plan_free(&plan);
    /* the last stage has 2 replicas: stage 0 warms up with 2 forwards (the ranks after it), the
     * last stage with none; each replica runs its share of its stage's 1F1B order */
    fixture_plan(&plan, 2, (int[]){1, 2}, (int[]){1, 2}, 6, 6, PLAIT_SCHEDULE_1F1B);
    CHECK(plait_schedule_build(&plan, (double[]){0, 0}, &sc) == PLAIT_OK);
    for (int r = 0; r < 3; r++) {
        int used = 0;
        order[r][0] = 0;
        for (int k = 0; k < sc.ranks[r].count; k++) {
            const plait_instruction *in = &sc.ranks[r].instructions[k];
            if (in->op == PLAIT_OP_FORWARD || in->op == PLAIT_OP_BACKWARD)
                used += snprintf(order[r] + used, sizeof order[r] - used, "%c%d ",
                                 in->op == PLAIT_OP_FORWARD ? 'F' : 'B', in->micro_batch);
        }
    }
    CHECK(strcmp(order[0], "F0 F1 F2 B0 F3 B1 F4 B2 F5 B3 B4 B5 ") == 0);
    CHECK(strcmp(order[1], "F0 B0 F2 B2 F4 B4 ") == 0);
    CHECK(strcmp(order[2], "F1 B1 F3 B3 F5 B5 ") == 0);
    plait_schedule_free(&sc);
    plait_plan_free(&plan);
    /* a replicated middle stage gets slack: 3 stages with 1, 2, 1 replicas; stage 1 warms up with
     * 1 (rank after it) + 2 (its replicas) = 3, stage 0 with 3 + 2 = 5 */
    fixture_plan(&plan, 3, (int[]){1, 2, 3}, (int[]){1, 2, 1}, 8, 8, PLAIT_SCHEDULE_1F1B);
    CHECK(plait_schedule_build(&plan, (double[]){0, 0, 0}, &sc) == PLAIT_OK);
    for (int r = 0; r < 2; r++) {
        int used = 0;
        order[r][0] = 0;
        for (int k = 0; k < sc.ranks[r].count; k++) {
            const plait_instruction *in = &sc.ranks[r].instructions[k];
            if (in->op == PLAIT_OP_FORWARD || in->op == PLAIT_OP_BACKWARD)
                used += snprintf(order[r] + used, sizeof order[r] - used, "%c%d ",
                                 in->op == PLAIT_OP_FORWARD ? 'F' : 'B', in->micro_batch);
        }
    }
    CHECK(strcmp(order[0], "F0 F1 F2 F3 F4 F5 B0 F6 B1 F7 B2 B3 B4 B5 B6 B7 ") == 0);
    CHECK(strcmp(order[1], "F0 F2 B0 F4 B2 F6 B4 B6 ") == 0);
    plait_schedule_free(&sc);
    plait_plan_free(&plan);
}

static void deadlocks_are_detected(void) {
    /* rank 0 waits for a gradient before sending the activation rank 1 needs */
    plait_plan plan;
    fixture_plan(&plan, 2, (int[]){1, 2}, (int[]){1, 1}, 1, 1, PLAIT_SCHEDULE_GPIPE);
    plait_instruction r0[] = {{PLAIT_OP_LOAD_MICROBATCH, 0, -1, -1}, {PLAIT_OP_FORWARD, 0, -1, -1},
                              {PLAIT_OP_RECV_GRADIENT, 0, 1, -1},   {PLAIT_OP_SEND_ACTIVATION, 0, 1, -1},
                              {PLAIT_OP_BACKWARD, 0, -1, -1},        {PLAIT_OP_OPTIMIZER_STEP, -1, -1, -1}};
    plait_instruction r1[] = {{PLAIT_OP_RECV_ACTIVATION, 0, 0, -1}, {PLAIT_OP_FORWARD, 0, -1, -1},
                              {PLAIT_OP_BACKWARD, 0, -1, -1},       {PLAIT_OP_SEND_GRADIENT, 0, 0, -1},
                              {PLAIT_OP_OPTIMIZER_STEP, -1, -1, -1}};
    plait_rank_schedule ranks[2] = {{0, 0, 0, 6, r0}, {1, 1, 0, 5, r1}};
    int buckets[2] = {0, 0};
    plait_schedule sc = {2, ranks, 2, buckets};
    plait_profile profile;
    fixture_profile(&profile, 2, (double[]){1, 1}, (double[]){1, 1}, 10, NULL, 0);
    plait_hardware hw;
    plait_hardware_init(&hw, 2, 1, 1e9, (plait_link){1e9, 0}, (plait_link){1e9, 0});
    plait_simulation sim;
    CHECK(plait_simulate(&plan, &sc, &profile, &hw, NULL, &sim) == PLAIT_ERROR);
    CHECK(testing_error_has("schedule deadlocks: rank 0 at RECV_GRADIENT 0 (peer 1); rank 1 at RECV_ACTIVATION 0 (peer 0)"));
    /* in the right order it runs */
    r0[2] = (plait_instruction){PLAIT_OP_SEND_ACTIVATION, 0, 1, -1};
    r0[3] = (plait_instruction){PLAIT_OP_RECV_GRADIENT, 0, 1, -1};
    CHECK(plait_simulate(&plan, &sc, &profile, &hw, NULL, &sim) == PLAIT_OK);
    CHECK(fabs(sim.seconds - 4) < 1e-6);
    plait_simulation_free(&sim);
    /* a send to the wrong rank is a mismatch, not a hang */
    r1[3].peer = 1;
    CHECK(plait_simulate(&plan, &sc, &profile, &hw, NULL, &sim) == PLAIT_ERROR);
    CHECK(testing_error_has("rank 1's SEND_GRADIENT 0 to rank 1 has no matching receive"));
    plait_hardware_free(&hw);
    plait_profile_free(&profile);
    plait_plan_free(&plan);
}

static void simulate_plan(const plait_plan *plan, const plait_profile *profile, const plait_hardware *hw,
                          double *simulated, double *predicted) {
    plait_schedule sc;
    double params[16];
    for (int u = 0; u < profile->unit_count; u++) params[u] = profile->units[u].parameter_bytes;
    CHECK(plait_schedule_build(plan, params, &sc) == PLAIT_OK);
    plait_simulation sim;
    CHECK(plait_simulate(plan, &sc, profile, hw, NULL, &sim) == PLAIT_OK);
    *simulated = sim.seconds;
    plait_prediction prediction;
    CHECK(plait_plan_predict(plan, profile, hw, &prediction) == PLAIT_OK);
    *predicted = prediction.seconds;
    plait_simulation_free(&sim);
    plait_schedule_free(&sc);
}

static void simulator_matches_hand_computed_times(void) {
    /* 2 stages of one unit, forward 1 s and backward 2 s per micro-batch, GPipe, 2 micro-batches */
    plait_profile profile;
    fixture_profile(&profile, 2, (double[]){0.5, 0.5}, (double[]){1, 1}, 1000, NULL, 0);
    plait_hardware hw;
    plait_hardware_init(&hw, 2, 1, 1e12, (plait_link){1e300, 0}, (plait_link){1e9, 0});
    plait_plan plan;
    fixture_plan(&plan, 2, (int[]){1, 2}, (int[]){1, 1}, 4, 2, PLAIT_SCHEDULE_GPIPE);
    double simulated, predicted;
    simulate_plan(&plan, &profile, &hw, &simulated, &predicted);
    CHECKF(fabs(simulated - 9) < 1e-9 && fabs(predicted - 9) < 1e-9, "(m+S-1)(f+b) = 9: %g %g", simulated,
           predicted);
    {
        /* each rank computes 6 of the 9 s: the bubble is 1/3; stage 1 is busy 6 s */
        plait_schedule sc;
        plait_simulation sim;
        CHECK(plait_schedule_build(&plan, (double[]){0, 0}, &sc) == PLAIT_OK);
        CHECK(plait_simulate(&plan, &sc, &profile, &hw, NULL, &sim) == PLAIT_OK);
        CHECK(fabs(sim.bubble_fraction - 1.0 / 3) < 1e-9 && fabs(sim.stage_busy_seconds[1] - 6) < 1e-9);
        CHECK(sim.exposed_communication < 1e-9 && sim.rank_allreduce_wait[0] == 0);
        plait_simulation_free(&sim);
        plait_schedule_free(&sc);
    }
    /* 0.5 s per transfer, traced by hand in docs/parallel.md: forwards and sends end at 1, 1.5,
     * 2.5, 3; stage 1 runs F1 [3,4], B0 [4,6], sends [6,6.5], B1 [6.5,8.5], sends [8.5,9]; stage 0
     * runs B1 [9,11]. The GPipe model: forward path 2.5 + forward phase 1.5 + backward phase 2.5
     * + gradient path 4.5 = 11 */
    hw.p2p.latency = 0.5;
    simulate_plan(&plan, &profile, &hw, &simulated, &predicted);
    CHECKF(fabs(simulated - 11) < 1e-9 && fabs(predicted - 11) < 1e-9, "%g %g", simulated, predicted);
    /* 1F1B: stage 1 runs B0 [2.5,4.5] before F1, sends [4.5,5], F1 [5,6], B1 [6,8], sends [8,8.5];
     * stage 0 runs B1 [8.5,10.5]. The model: 2.5 + (2-1) * 3.5 + 4.5 = 10.5 */
    plan.schedule = PLAIT_SCHEDULE_1F1B;
    simulate_plan(&plan, &profile, &hw, &simulated, &predicted);
    CHECKF(fabs(simulated - 10.5) < 1e-9 && fabs(predicted - 10.5) < 1e-9, "%g %g", simulated, predicted);
    plan.schedule = PLAIT_SCHEDULE_GPIPE;
    plait_plan_free(&plan);
    plait_profile_free(&profile);
    /* all-reduce: one stage on 2 replicas, 2 micro-batches of 1 sample; unit 1's backward (1 s)
     * runs first and makes nothing, then unit 0 (1 s) makes 1000 bytes = 2 buckets of 500 */
    fixture_profile(&profile, 2, (double[]){0.5, 0.5}, (double[]){1, 1}, 0, (double[]){1000, 0}, 0);
    hw.allreduce = (plait_link){1000, 0.1};
    fixture_plan(&plan, 1, (int[]){2}, (int[]){2}, 2, 2, PLAIT_SCHEDULE_GPIPE);
    plan.bucket_bytes = 500;
    plan.streams = 1;
    /* forward [0,1], backward [1,3]; both buckets ready at 3; each costs 2*0.1 latency + 0.5
     * transfer. One stream: 3 + 0.7 + 0.7 = 4.4. Two streams overlap the second latency: 4.2 */
    simulate_plan(&plan, &profile, &hw, &simulated, &predicted);
    CHECKF(fabs(simulated - 4.4) < 1e-9 && fabs(predicted - 4.4) < 1e-9, "%g %g", simulated, predicted);
    plan.streams = 2;
    simulate_plan(&plan, &profile, &hw, &simulated, &predicted);
    CHECKF(fabs(simulated - 4.2) < 1e-9 && fabs(predicted - 4.2) < 1e-9, "%g %g", simulated, predicted);
    /* the first bucket ready before backward ends hides behind it: params in unit 1 (first) */
    profile.units[0].parameter_bytes = 500;
    profile.units[1].parameter_bytes = 500;
    plan.streams = 1;
    simulate_plan(&plan, &profile, &hw, &simulated, &predicted);
    CHECKF(fabs(simulated - 3.7) < 1e-9 && fabs(predicted - 3.7) < 1e-9, "%g %g", simulated, predicted);
    plait_plan_free(&plan);
    plait_profile_free(&profile);
    plait_hardware_free(&hw);
}

static void traces_are_written(void) {
    plait_profile profile;
    fixture_profile(&profile, 2, (double[]){0.5, 0.5}, (double[]){1, 1}, 1000, (double[]){1000, 1000}, 0);
    plait_hardware hw;
    plait_hardware_init(&hw, 3, 1, 1e12, (plait_link){1e6, 1e-3}, (plait_link){1e4, 1e-3});
    plait_plan plan;
    fixture_plan(&plan, 2, (int[]){1, 2}, (int[]){2, 1}, 8, 4, PLAIT_SCHEDULE_1F1B);
    plan.bucket_bytes = 400;
    plan.streams = 2;
    plait_schedule sc;
    CHECK(plait_schedule_build(&plan, (double[]){1000, 1000}, &sc) == PLAIT_OK);
    CHECK(sc.bucket_counts[0] == 3 && sc.bucket_counts[1] == 0);
    plait_simulation sim;
    CHECK(plait_simulate(&plan, &sc, &profile, &hw, &(plait_simulation_options){.record_events = true}, &sim) == PLAIT_OK);
    /* 16 computes, 8 sends, 3 buckets on each of 2 ranks */
    CHECKF(sim.event_count == 16 + 8 + 6, "%d events", sim.event_count);
    int stream_lanes = 0;
    for (int k = 0; k < sim.event_count; k++) stream_lanes += sim.events[k].lane == 2;
    CHECK(stream_lanes == 2); /* bucket 1 on stream 1 (lane 2), on both replicas */
    char path[512], svg[512];
    snprintf(path, sizeof path, "%s/trace.json", testing_temp_dir());
    snprintf(svg, sizeof svg, "%s/trace.svg", testing_temp_dir());
    CHECK(plait_trace_write_chrome(path, sim.events, sim.event_count) == PLAIT_OK);
    json_error_t error;
    json_t *root = json_load_file(path, 0, &error);
    CHECK(root != NULL);
    json_t *list = json_object_get(root, "traceEvents");
    int complete = 0, metadata = 0;
    for (size_t k = 0; k < json_array_size(list); k++) {
        json_t *e = json_array_get(list, k);
        const char *ph = json_string_value(json_object_get(e, "ph"));
        if (strcmp(ph, "X") == 0) {
            complete++;
            if (complete == 1)
                CHECK(json_real_value(json_object_get(e, "dur")) == sim.events[0].duration * 1e6 &&
                      json_integer_value(json_object_get(e, "pid")) == sim.events[0].rank);
        } else {
            metadata++;
        }
    }
    CHECK(complete == sim.event_count);
    CHECKF(metadata == 2 * (3 + 2 * 2), "%d metadata events", metadata); /* 3 compute lanes + 2 ranks x 2 streams */
    json_decref(root);
    CHECK(plait_trace_write_svg(svg, sim.events, sim.event_count) == PLAIT_OK);
    FILE *f = fopen(svg, "r");
    char text[1 << 16];
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[n] = 0;
    CHECK(strncmp(text, "<svg", 4) == 0 && strstr(text, "</svg>") != NULL);
    int rects = 0;
    for (const char *p = text; (p = strstr(p, "<rect")); p++) rects++;
    CHECKF(rects == 1 + 7 + sim.event_count, "%d rects", rects); /* background, 7 lanes, events */
    CHECK(strstr(text, "fill=\"#4e79a7\"><title>forward 0") != NULL);
    CHECK(strstr(text, "rank 2 compute") != NULL);
    plait_simulation_free(&sim);
    plait_schedule_free(&sc);
    plait_plan_free(&plan);
    plait_hardware_free(&hw);
    plait_profile_free(&profile);
}

int main(void) {
    testing_run("schedules_are_complete_matched_and_deadlock_free", schedules_are_complete_matched_and_deadlock_free);
    testing_run("one_f_one_b_order", one_f_one_b_order);
    testing_run("deadlocks_are_detected", deadlocks_are_detected);
    testing_run("simulator_matches_hand_computed_times", simulator_matches_hand_computed_times);
    testing_run("traces_are_written", traces_are_written);
    return testing_finish();
}
