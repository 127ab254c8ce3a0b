/* Planning files, validation, schedules, the simulator and the trace writers. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "plan_fixtures.h"

static bool error_has(const char *a, const char *b) {
    const char *e = plait_last_error();
    bool ok = strstr(e, a) != NULL && (!b || strstr(e, b) != NULL);
    if (!ok) fprintf(stderr, "  unexpected error: %s\n", e);
    return ok;
}

static void profile_round_trip(void) {
    double forward[3] = {0.001, 0.002, 0.003}, backward[3] = {0.002, 0.004, 0.006}, params[3] = {100, 0, 300};
    plait_profile p, q;
    fixture_profile(&p, 3, forward, backward, 4096, params, 8192);
    char path[512];
    snprintf(path, sizeof path, "%s/profile.json", testing_temp_dir());
    CHECK(plait_profile_write(path, &p) == PLAIT_OK);
    CHECK(plait_profile_read(path, &q) == PLAIT_OK);
    CHECK(q.unit_count == 3);
    for (int u = 0; u < 3 && q.unit_count == 3; u++) {
        CHECK(strcmp(q.units[u].name, p.units[u].name) == 0);
        CHECK(q.units[u].forward_seconds == p.units[u].forward_seconds);
        CHECK(q.units[u].backward_seconds == p.units[u].backward_seconds);
        CHECK(q.units[u].parameter_bytes == p.units[u].parameter_bytes);
        CHECK(q.units[u].output_bytes == 4096 && q.units[u].memory_bytes == 8192);
    }
    plait_profile_free(&p);
    plait_profile_free(&q);
    /* seconds measured on micro-batches of 4 samples are stored per sample */
    const char *file = fixture_file("batch4.json", "{\"batch_size\": 4, \"units\": [{\"name\": \"stem\", "
                                                   "\"forward_seconds\": 0.4, \"backward_seconds\": 0.8, "
                                                   "\"output_bytes\": 1, \"parameter_bytes\": 2, "
                                                   "\"memory_bytes\": 3}]}");
    CHECK(plait_profile_read(file, &q) == PLAIT_OK);
    CHECK(q.unit_count == 1 && fabs(q.units[0].forward_seconds - 0.1) < 1e-15 &&
          fabs(q.units[0].backward_seconds - 0.2) < 1e-15);
    plait_profile_free(&q);
}

static void profile_errors_name_file_and_field(void) {
    plait_profile p;
    const char *unit = "{\"name\": \"a\", \"forward_seconds\": 1, \"backward_seconds\": 1, \"output_bytes\": 1, "
                       "\"parameter_bytes\": 1, \"memory_bytes\": 1}";
    char text[1024];
    snprintf(text, sizeof text,
             "{\"units\": [%s, {\"name\": \"b\", \"forward_seconds\": 1, \"output_bytes\": 1, "
             "\"parameter_bytes\": 1, \"memory_bytes\": 1}]}",
             unit);
    const char *path = fixture_file("missing.json", text);
    CHECK(plait_profile_read(path, &p) == PLAIT_ERROR);
    CHECK(error_has(path, "units[1].backward_seconds: missing"));
    snprintf(text, sizeof text,
             "{\"units\": [%s, {\"name\": \"b\", \"forward_seconds\": 1, \"backward_seconds\": 1, "
             "\"output_bytes\": 1, \"parameter_bytes\": -1, \"memory_bytes\": 1}]}",
             unit);
    path = fixture_file("negative.json", text);
    CHECK(plait_profile_read(path, &p) == PLAIT_ERROR);
    CHECK(error_has("negative.json: units[1].parameter_bytes: must not be negative", NULL));
    path = fixture_file("type.json", "{\"units\": [{\"name\": \"a\", \"forward_seconds\": \"fast\"}]}");
    CHECK(plait_profile_read(path, &p) == PLAIT_ERROR);
    CHECK(error_has("type.json: units[0].forward_seconds: must be a number", NULL));
    path = fixture_file("name.json", "{\"units\": [{\"name\": 3}]}");
    CHECK(plait_profile_read(path, &p) == PLAIT_ERROR);
    CHECK(error_has("name.json: units[0].name: must be a string", NULL));
    path = fixture_file("empty.json", "{\"units\": []}");
    CHECK(plait_profile_read(path, &p) == PLAIT_ERROR);
    CHECK(error_has("empty.json: units: must list at least one unit", NULL));
    path = fixture_file("syntax.json", "{\"units\": [\n}");
    CHECK(plait_profile_read(path, &p) == PLAIT_ERROR);
    CHECK(error_has("syntax.json:2:", NULL));
    path = fixture_file("array.json", "[1, 2]");
    CHECK(plait_profile_read(path, &p) == PLAIT_ERROR);
    CHECK(error_has("array.json: the top level must be a JSON object", NULL));
    CHECK(plait_profile_read("/nonexistent/profile.json", &p) == PLAIT_ERROR);
    CHECK(error_has("/nonexistent/profile.json", NULL));
    CHECK(p.units == NULL && p.unit_count == 0);
}

static void hardware_files(void) {
    plait_hardware h;
    const char *path = fixture_file("hw.json", "{\"worker_count\": 3, \"memory_bytes\": 1e9, "
                                               "\"workers\": [{\"speed\": 2}, {}, {\"memory_bytes\": 5e8}], "
                                               "\"p2p\": {\"bandwidth\": 1e9, \"latency\": 1e-5}, "
                                               "\"allreduce\": {\"bandwidth\": 5e8, \"latency\": 2e-5}}");
    CHECK(plait_hardware_read(path, &h) == PLAIT_OK);
    CHECK(h.worker_count == 3);
    if (h.worker_count == 3) {
        CHECK(h.speed[0] == 2 && h.speed[1] == 1 && h.speed[2] == 1);
        CHECK(h.memory_bytes[0] == 1e9 && h.memory_bytes[2] == 5e8);
        CHECK(h.p2p.bandwidth == 1e9 && h.allreduce.latency == 2e-5);
    }
    char out[512];
    snprintf(out, sizeof out, "%s/hw2.json", testing_temp_dir());
    CHECK(plait_hardware_write(out, &h) == PLAIT_OK);
    plait_hardware g;
    CHECK(plait_hardware_read(out, &g) == PLAIT_OK);
    CHECK(g.worker_count == 3 && g.speed[0] == 2 && g.memory_bytes[2] == 5e8 && g.allreduce.bandwidth == 5e8);
    plait_hardware_free(&g);
    plait_hardware_free(&h);
    const char *links = "\"p2p\": {\"bandwidth\": 1e9, \"latency\": 0}, \"allreduce\": {\"bandwidth\": 1e9, "
                        "\"latency\": 0}";
    char text[512];
    snprintf(text, sizeof text, "{\"worker_count\": 2, \"memory_bytes\": 1, \"workers\": [{}], %s}", links);
    path = fixture_file("count.json", text);
    CHECK(plait_hardware_read(path, &h) == PLAIT_ERROR);
    CHECK(error_has("count.json: workers: has 1 entries but worker_count is 2", NULL));
    snprintf(text, sizeof text, "{\"worker_count\": 2, \"memory_bytes\": 1, %s}", links);
    *strstr(text, "1e9") = '0'; /* bandwidth 0e9 */
    path = fixture_file("bandwidth.json", text);
    CHECK(plait_hardware_read(path, &h) == PLAIT_ERROR);
    CHECK(error_has("bandwidth.json: p2p.bandwidth: must be positive", NULL));
    path = fixture_file("nolink.json", "{\"worker_count\": 2, \"memory_bytes\": 1, \"p2p\": {\"latency\": 0}}");
    CHECK(plait_hardware_read(path, &h) == PLAIT_ERROR);
    CHECK(error_has("nolink.json: p2p.bandwidth: missing", NULL));
    path = fixture_file("workers.json", "{\"worker_count\": -2}");
    CHECK(plait_hardware_read(path, &h) == PLAIT_ERROR);
    CHECK(error_has("workers.json: worker_count: must not be negative", NULL));
    snprintf(text, sizeof text, "{\"worker_count\": 1, \"workers\": [{\"speed\": 1}], %s}", links);
    path = fixture_file("nomemory.json", text);
    CHECK(plait_hardware_read(path, &h) == PLAIT_ERROR);
    CHECK(error_has("nomemory.json: workers[0].memory_bytes: missing", NULL));
}

static void plan_round_trip_and_read_errors(void) {
    plait_plan plan, back;
    fixture_plan(&plan, 2, (int[]){3, 5}, (int[]){2, 1}, 64, 4, PLAIT_SCHEDULE_1F1B);
    plan.bucket_bytes = 1 << 20;
    plan.streams = 2;
    char path[512];
    snprintf(path, sizeof path, "%s/plan.json", testing_temp_dir());
    CHECK(plait_plan_write(path, &plan) == PLAIT_OK);
    CHECK(plait_plan_read(path, &back) == PLAIT_OK);
    CHECK(back.stage_count == 2 && back.batch_size == 64 && back.micro_batches == 4);
    CHECK(back.schedule == PLAIT_SCHEDULE_1F1B && back.bucket_bytes == 1 << 20 && back.streams == 2);
    if (back.stage_count == 2) {
        CHECK(back.stages[0].first_unit == 0 && back.stages[0].last_unit == 3 && back.stages[1].last_unit == 5);
        CHECK(back.stages[0].replica_count == 2 && back.stages[0].ranks[1] == 1 && back.stages[1].ranks[0] == 2);
    }
    CHECK(plait_plan_validate(&back, 3, 5, NULL, NULL) == PLAIT_OK);
    plait_plan_free(&back);
    plait_plan_free(&plan);
    const char *head = "{\"batch_size\": 8, \"micro_batches\": 2, \"bucket_bytes\": 100, \"streams\": 1, ";
    char text[512];
    snprintf(text, sizeof text, "%s\"schedule\": \"zigzag\", \"stages\": [{\"units\": [0, 1], \"ranks\": [0]}]}",
             head);
    CHECK(plait_plan_read(fixture_file("p1.json", text), &plan) == PLAIT_ERROR);
    CHECK(error_has("p1.json: schedule: must be \"gpipe\" or \"1f1b\"", NULL));
    snprintf(text, sizeof text, "%s\"schedule\": \"gpipe\", \"stages\": [{\"units\": [0], \"ranks\": [0]}]}", head);
    CHECK(plait_plan_read(fixture_file("p2.json", text), &plan) == PLAIT_ERROR);
    CHECK(error_has("p2.json: stages[0].units: must be [first, last)", NULL));
    snprintf(text, sizeof text, "%s\"schedule\": \"gpipe\", \"stages\": [{\"units\": [0, 1], \"ranks\": [\"a\"]}]}",
             head);
    CHECK(plait_plan_read(fixture_file("p3.json", text), &plan) == PLAIT_ERROR);
    CHECK(error_has("p3.json: stages[0].ranks: must list whole numbers", NULL));
    CHECK(plait_plan_read(fixture_file("p4.json", "{\"batch_size\": 8.5}"), &plan) == PLAIT_ERROR);
    CHECK(error_has("p4.json: batch_size: must be a whole number", NULL));
    CHECK(plan.stages == NULL);
}

static void plan_validation_messages(void) {
    plait_plan plan;
    fixture_plan(&plan, 3, (int[]){2, 4, 6}, (int[]){2, 1, 1}, 16, 4, PLAIT_SCHEDULE_GPIPE);
    CHECK(plait_plan_validate(&plan, 4, 6, NULL, NULL) == PLAIT_OK);
    CHECK(plait_plan_validate(&plan, 5, 6, NULL, NULL) == PLAIT_ERROR);
    CHECK(error_has("plan: the stages list 4 ranks but the world has 5 ranks", NULL));
    CHECK(plait_plan_validate(&plan, 4, 7, NULL, NULL) == PLAIT_ERROR);
    CHECK(error_has("plan: the last stage ends at unit 6 but the model has 7 units", NULL));
    CHECK(plait_plan_validate(&plan, 4, 5, NULL, NULL) == PLAIT_ERROR);
    CHECK(error_has("plan: stage 2 has units [4, 6) but the model has 5 units", NULL));
    plan.stages[1].last_unit = 2;
    CHECK(plait_plan_validate(&plan, 4, 6, NULL, NULL) == PLAIT_ERROR);
    CHECK(error_has("plan: stage 1 is empty (units [2, 2))", NULL));
    plan.stages[1].last_unit = 3;
    CHECK(plait_plan_validate(&plan, 4, 6, NULL, NULL) == PLAIT_ERROR);
    CHECK(error_has("plan: stage 2 starts at unit 4 but stage 1 ends at unit 3 (a gap)", NULL));
    plan.stages[1].last_unit = 5;
    CHECK(plait_plan_validate(&plan, 4, 6, NULL, NULL) == PLAIT_ERROR);
    CHECK(error_has("plan: stage 2 starts at unit 4 but stage 1 ends at unit 5 (an overlap)", NULL));
    plan.stages[1].last_unit = 4;
    plan.stages[2].ranks[0] = 1;
    CHECK(plait_plan_validate(&plan, 4, 6, NULL, NULL) == PLAIT_ERROR);
    CHECK(error_has("plan: rank 1 is used twice (stages 0 and 2)", NULL));
    plan.stages[2].ranks[0] = 7;
    CHECK(plait_plan_validate(&plan, 4, 6, NULL, NULL) == PLAIT_ERROR);
    CHECK(error_has("plan: stage 2 lists rank 7 but the world has ranks 0..3", NULL));
    plan.stages[2].ranks[0] = 3;
    plan.micro_batches = 3;
    plan.batch_size = 15;
    CHECK(plait_plan_validate(&plan, 4, 6, NULL, NULL) == PLAIT_ERROR);
    CHECK(error_has("plan: micro_batches 3 is not divisible by the 2 replicas of stage 0", NULL));
    plan.micro_batches = 4;
    CHECK(plait_plan_validate(&plan, 4, 6, NULL, NULL) == PLAIT_ERROR);
    CHECK(error_has("plan: batch_size 15 is not divisible by micro_batches 4", NULL));
    plan.batch_size = 16;
    /* memory: 6 units of 1000 parameter bytes, 100 bytes kept per sample; GPipe keeps all of a
     * replica's micro-batches: stage 0 has 2 micro-batches of 4 samples, 2 units: 3*2000 + 8*200 */
    double f[6] = {1, 1, 1, 1, 1, 1}, params[6] = {1000, 1000, 1000, 1000, 1000, 1000};
    plait_profile profile;
    fixture_profile(&profile, 6, f, f, 10, params, 100);
    plait_hardware hw;
    plait_hardware_init(&hw, 4, 1, 9200, (plait_link){1e9, 0}, (plait_link){1e9, 0});
    CHECK(plait_stage_memory_bytes(&plan, &profile, 0) == 7600);
    CHECK(plait_stage_memory_bytes(&plan, &profile, 2) == 3 * 2000 + 4 * 800);
    hw.memory_bytes[3] = 9199;
    CHECK(plait_plan_validate(&plan, 4, 6, &profile, &hw) == PLAIT_ERROR);
    CHECK(error_has("plan: stage 2 needs 9200 bytes per rank but rank 3 has 9199 bytes", NULL));
    /* 1F1B keeps at most (stages after it + 1) micro-batches: stage 2 keeps one */
    plan.schedule = PLAIT_SCHEDULE_1F1B;
    CHECK(plait_stage_memory_bytes(&plan, &profile, 2) == 3 * 2000 + 1 * 800);
    CHECK(plait_plan_validate(&plan, 4, 6, &profile, &hw) == PLAIT_OK);
    plait_hardware_free(&hw);
    plait_profile_free(&profile);
    plait_plan_free(&plan);
}

/* ---- schedules ---- */

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
                warmup += (k > s ? r : 0) + (r > 1 ? r : 0);
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
    /* the next stage has 2 replicas: stage 0 warms up with 2 (ranks after it) + 2 (replicated
     * ranks) forwards, stage 1 with 2; each replica runs its share of its stage's 1F1B order */
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
    CHECK(strcmp(order[0], "F0 F1 F2 F3 F4 B0 F5 B1 B2 B3 B4 B5 ") == 0);
    CHECK(strcmp(order[1], "F0 F2 B0 F4 B2 B4 ") == 0);
    CHECK(strcmp(order[2], "F1 F3 B1 F5 B3 B5 ") == 0);
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
    CHECK(error_has("schedule deadlocks: rank 0 at RECV_GRADIENT 0 (peer 1); rank 1 at RECV_ACTIVATION 0 (peer 0)",
                    NULL));
    /* in the right order it runs */
    r0[2] = (plait_instruction){PLAIT_OP_SEND_ACTIVATION, 0, 1, -1};
    r0[3] = (plait_instruction){PLAIT_OP_RECV_GRADIENT, 0, 1, -1};
    CHECK(plait_simulate(&plan, &sc, &profile, &hw, NULL, &sim) == PLAIT_OK);
    CHECK(fabs(sim.seconds - 4) < 1e-6);
    plait_simulation_free(&sim);
    /* a send to the wrong rank is a mismatch, not a hang */
    r1[3].peer = 1;
    CHECK(plait_simulate(&plan, &sc, &profile, &hw, NULL, &sim) == PLAIT_ERROR);
    CHECK(error_has("rank 1's SEND_GRADIENT 0 to rank 1 has no matching receive", NULL));
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
    testing_run("profile_round_trip", profile_round_trip);
    testing_run("profile_errors_name_file_and_field", profile_errors_name_file_and_field);
    testing_run("hardware_files", hardware_files);
    testing_run("plan_round_trip_and_read_errors", plan_round_trip_and_read_errors);
    testing_run("plan_validation_messages", plan_validation_messages);
    testing_run("schedules_are_complete_matched_and_deadlock_free", schedules_are_complete_matched_and_deadlock_free);
    testing_run("one_f_one_b_order", one_f_one_b_order);
    testing_run("deadlocks_are_detected", deadlocks_are_detected);
    testing_run("simulator_matches_hand_computed_times", simulator_matches_hand_computed_times);
    testing_run("traces_are_written", traces_are_written);
    return testing_finish();
}
