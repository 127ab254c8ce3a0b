/* Planning files: profiles, hardware models, plans, and plan validation. */
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

int main(void) {
    testing_run("profile_round_trip", profile_round_trip);
    testing_run("profile_errors_name_file_and_field", profile_errors_name_file_and_field);
    testing_run("hardware_files", hardware_files);
    testing_run("plan_round_trip_and_read_errors", plan_round_trip_and_read_errors);
    testing_run("plan_validation_messages", plan_validation_messages);
    return testing_finish();
}
