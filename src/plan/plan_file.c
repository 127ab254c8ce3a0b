/* Plans: plan.json reading and writing, and validation. */
#include <stdlib.h>
#include <string.h>

#include "plait/core.h"
#include "plait/plan.h"
#include "plan/json_fields.h"

const char *plait_schedule_name(plait_schedule_kind kind) { return kind == PLAIT_SCHEDULE_1F1B ? "1f1b" : "gpipe"; }

int plait_plan_init(plait_plan *plan, int stage_count, const int *replica_counts) {
    memset(plan, 0, sizeof *plan);
    if (stage_count < 1) return plait_fail("a plan needs at least one stage, got %d", stage_count);
    plan->stages = calloc((size_t)stage_count, sizeof *plan->stages);
    if (!plan->stages) return plait_fail("out of memory for %d stages", stage_count);
    plan->stage_count = stage_count;
    for (int s = 0; s < stage_count; s++) {
        int replicas = replica_counts ? replica_counts[s] : 1;
        plan->stages[s].ranks = calloc(replicas > 0 ? (size_t)replicas : 1, sizeof(int));
        if (!plan->stages[s].ranks) {
            plait_plan_free(plan);
            return plait_fail("out of memory for the ranks of stage %d", s);
        }
        plan->stages[s].replica_count = replicas;
    }
    plan->micro_batches = 1;
    plan->batch_size = 1;
    plan->streams = 1;
    plan->bucket_bytes = 25.0 * 1024 * 1024;
    return PLAIT_OK;
}

void plait_plan_free(plait_plan *plan) {
    for (int s = 0; plan->stages && s < plan->stage_count; s++) free(plan->stages[s].ranks);
    free(plan->stages);
    memset(plan, 0, sizeof *plan);
}

static int read_stage(const json_place *top, json_t *stages, int index, plait_stage *stage) {
    json_place place = json_place_child(top, "stages", index);
    json_t *object = json_array_get(stages, (size_t)index);
    if (!json_is_object(object)) return plait_fail("%s: %s: must be an object", place.file, place.path);
    json_t *units = json_get_array(&place, object, "units", true, NULL);
    if (!units) return PLAIT_ERROR;
    if (json_array_size(units) != 2 || !json_is_integer(json_array_get(units, 0)) ||
        !json_is_integer(json_array_get(units, 1)))
        return json_fail_field(&place, "units", "must be [first, last) as two whole numbers");
    json_int_t first = json_integer_value(json_array_get(units, 0));
    json_int_t last = json_integer_value(json_array_get(units, 1));
    if (first < 0 || last < 0) return json_fail_field(&place, "units", "must not be negative");
    if (first > 1000000 || last > 1000000) return json_fail_field(&place, "units", "is too large");
    stage->first_unit = (int)first;
    stage->last_unit = (int)last;
    json_t *ranks = json_get_array(&place, object, "ranks", true, NULL);
    if (!ranks) return PLAIT_ERROR;
    size_t count = json_array_size(ranks);
    if (count > 1000000) return json_fail_field(&place, "ranks", "is too long");
    stage->ranks = calloc(count ? count : 1, sizeof(int));
    if (!stage->ranks) return plait_fail("out of memory reading %s", place.file);
    stage->replica_count = (int)count;
    for (size_t j = 0; j < count; j++) {
        json_t *rank = json_array_get(ranks, j);
        if (!json_is_integer(rank)) return json_fail_field(&place, "ranks", "must list whole numbers");
        if (json_integer_value(rank) < 0 || json_integer_value(rank) > 1000000000)
            return json_fail_field(&place, "ranks", "must list ranks from 0");
        stage->ranks[j] = (int)json_integer_value(rank);
    }
    return PLAIT_OK;
}

int plait_plan_read(const char *path, plait_plan *plan) {
    memset(plan, 0, sizeof *plan);
    json_t *root = json_load_object(path);
    if (!root) return PLAIT_ERROR;
    json_place top = {.file = path};
    char schedule[16];
    json_t *stages;
    if (json_get_int(&top, root, "batch_size", true, 0, 1, &plan->batch_size) ||
        json_get_int(&top, root, "micro_batches", true, 0, 1, &plan->micro_batches) ||
        json_get_string(&top, root, "schedule", schedule, sizeof schedule) ||
        json_get_number(&top, root, "bucket_bytes", true, 0, &plan->bucket_bytes) ||
        json_get_int(&top, root, "streams", true, 0, 1, &plan->streams))
        goto fail;
    if (strcmp(schedule, "gpipe") == 0)
        plan->schedule = PLAIT_SCHEDULE_GPIPE;
    else if (strcmp(schedule, "1f1b") == 0)
        plan->schedule = PLAIT_SCHEDULE_1F1B;
    else {
        json_fail_field(&top, "schedule", "must be \"gpipe\" or \"1f1b\"");
        goto fail;
    }
    if (plan->bucket_bytes <= 0) {
        json_fail_field(&top, "bucket_bytes", "must be positive");
        goto fail;
    }
    stages = json_get_array(&top, root, "stages", true, NULL);
    if (!stages) goto fail;
    if (json_array_size(stages) == 0) {
        json_fail_field(&top, "stages", "must list at least one stage");
        goto fail;
    }
    plan->stage_count = (int)json_array_size(stages);
    plan->stages = calloc((size_t)plan->stage_count, sizeof *plan->stages);
    if (!plan->stages) {
        plait_fail("out of memory reading %s", path);
        goto fail;
    }
    for (int s = 0; s < plan->stage_count; s++)
        if (read_stage(&top, stages, s, &plan->stages[s])) goto fail;
    json_decref(root);
    return PLAIT_OK;
fail:
    json_decref(root);
    plait_plan_free(plan);
    return PLAIT_ERROR;
}

int plait_plan_write(const char *path, const plait_plan *plan) {
    json_t *root = json_object();
    json_object_set_new(root, "batch_size", json_integer(plan->batch_size));
    json_object_set_new(root, "micro_batches", json_integer(plan->micro_batches));
    json_object_set_new(root, "schedule", json_string(plait_schedule_name(plan->schedule)));
    json_object_set_new(root, "bucket_bytes", json_real(plan->bucket_bytes));
    json_object_set_new(root, "streams", json_integer(plan->streams));
    json_t *stages = json_array();
    for (int s = 0; s < plan->stage_count; s++) {
        const plait_stage *stage = &plan->stages[s];
        json_t *ranks = json_array();
        for (int j = 0; j < stage->replica_count; j++) json_array_append_new(ranks, json_integer(stage->ranks[j]));
        json_array_append_new(stages, json_pack("{s:[i,i], s:o}", "units", stage->first_unit, stage->last_unit,
                                                "ranks", ranks));
    }
    json_object_set_new(root, "stages", stages);
    return json_write_file(path, root);
}

static int validate_units(const plait_plan *plan, int unit_count) {
    int expected = 0;
    for (int s = 0; s < plan->stage_count; s++) {
        const plait_stage *stage = &plan->stages[s];
        if (stage->first_unit >= stage->last_unit)
            return plait_fail("plan: stage %d is empty (units [%d, %d))", s, stage->first_unit, stage->last_unit);
        if (stage->last_unit > unit_count)
            return plait_fail("plan: stage %d has units [%d, %d) but the model has %d units", s, stage->first_unit,
                              stage->last_unit, unit_count);
        if (stage->first_unit != expected) {
            if (s == 0) return plait_fail("plan: stage 0 starts at unit %d, not at unit 0", stage->first_unit);
            return plait_fail("plan: stage %d starts at unit %d but stage %d ends at unit %d (%s)", s,
                              stage->first_unit, s - 1, expected,
                              stage->first_unit > expected ? "a gap" : "an overlap");
        }
        expected = stage->last_unit;
    }
    if (expected != unit_count)
        return plait_fail("plan: the last stage ends at unit %d but the model has %d units", expected, unit_count);
    return PLAIT_OK;
}

static int validate_ranks(const plait_plan *plan, int world_size) {
    int total = 0;
    for (int s = 0; s < plan->stage_count; s++) {
        if (plan->stages[s].replica_count < 1) return plait_fail("plan: stage %d has no ranks", s);
        total += plan->stages[s].replica_count;
    }
    if (total != world_size)
        return plait_fail("plan: the stages list %d ranks but the world has %d ranks", total, world_size);
    int *owner = malloc((size_t)world_size * sizeof(int));
    if (!owner) return plait_fail("out of memory validating a plan");
    for (int r = 0; r < world_size; r++) owner[r] = -1;
    int status = PLAIT_OK;
    for (int s = 0; s < plan->stage_count && status == PLAIT_OK; s++)
        for (int j = 0; j < plan->stages[s].replica_count; j++) {
            int rank = plan->stages[s].ranks[j];
            if (rank < 0 || rank >= world_size) {
                status = plait_fail("plan: stage %d lists rank %d but the world has ranks 0..%d", s, rank,
                                    world_size - 1);
                break;
            }
            if (owner[rank] >= 0) {
                status = plait_fail("plan: rank %d is used twice (stages %d and %d)", rank, owner[rank], s);
                break;
            }
            owner[rank] = s;
        }
    free(owner);
    return status;
}

int plait_plan_validate(const plait_plan *plan, int world_size, int unit_count, const plait_profile *profile,
                        const plait_hardware *hardware) {
    if (plan->stage_count < 1) return plait_fail("plan: no stages");
    if (validate_units(plan, unit_count) || validate_ranks(plan, world_size)) return PLAIT_ERROR;
    if (plan->batch_size < 1 || plan->micro_batches < 1)
        return plait_fail("plan: batch_size %d and micro_batches %d must be positive", plan->batch_size,
                          plan->micro_batches);
    if (plan->batch_size % plan->micro_batches != 0)
        return plait_fail("plan: batch_size %d is not divisible by micro_batches %d", plan->batch_size,
                          plan->micro_batches);
    for (int s = 0; s < plan->stage_count; s++)
        if (plan->micro_batches % plan->stages[s].replica_count != 0)
            return plait_fail("plan: micro_batches %d is not divisible by the %d replicas of stage %d "
                              "(replica j runs micro-batches i with i %% replicas == j)",
                              plan->micro_batches, plan->stages[s].replica_count, s);
    if (plan->streams < 1) return plait_fail("plan: streams must be at least 1, got %d", plan->streams);
    if (!(plan->bucket_bytes > 0)) return plait_fail("plan: bucket_bytes must be positive");
    if (!profile != !hardware) return plait_fail("plan: checking memory needs both a profile and a hardware model");
    if (!profile) return PLAIT_OK;
    if (profile->unit_count != unit_count)
        return plait_fail("plan: the profile has %d units but the model has %d", profile->unit_count, unit_count);
    if (hardware->worker_count != world_size)
        return plait_fail("plan: the hardware has %d workers but the world has %d ranks", hardware->worker_count,
                          world_size);
    for (int s = 0; s < plan->stage_count; s++) {
        double need = plait_stage_memory_bytes(plan, profile, s);
        for (int j = 0; j < plan->stages[s].replica_count; j++) {
            int rank = plan->stages[s].ranks[j];
            if (need > hardware->memory_bytes[rank])
                return plait_fail("plan: stage %d needs %.0f bytes per rank but rank %d has %.0f bytes", s, need,
                                  rank, hardware->memory_bytes[rank]);
        }
    }
    return PLAIT_OK;
}
