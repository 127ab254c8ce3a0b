/* The plan a training run uses: from --plan FILE, or made for --parallel dp|pipe|auto. */
#include <string.h>

#include "pipe/pipe_internal.h"

int pipe_train_wants_executor(const plait_train_config *c) {
    return plait_dist_size() > 1 || c->parallel || c->plan_path || c->trace_path;
}

int pipe_train_plan(const plait_train_config *c, plait_model *m, plait_plan *plan) {
    plait_profile profile = {0};
    int status = pipe_train_plan_profiled(c, m, plan, &profile);
    plait_profile_free(&profile);
    return status;
}

int pipe_train_plan_profiled(const plait_train_config *c, plait_model *m, plait_plan *plan, plait_profile *used) {
    *used = (plait_profile){0};
    int world = plait_dist_size();
    if (c->plan_path) {
        if (c->parallel)
            return plait_fail("give either --plan or --parallel, not both");
        if (plait_plan_read(c->plan_path, plan) != PLAIT_OK) return PLAIT_ERROR;
        int status = plait_plan_validate(plan, world, m->unit_count, NULL, NULL);
        if (status == PLAIT_OK && c->hardware_path) {
            /* memory needs the units' costs: measured here, at the plan's micro-batch size */
            plait_hardware hardware;
            plait_profile profile = {0};
            if (plait_hardware_read(c->hardware_path, &hardware) != PLAIT_OK) {
                plait_plan_free(plan);
                return PLAIT_ERROR;
            }
            status = plait_profile_measure_shared(m, plan->batch_size / plan->micro_batches, 1, &profile);
            if (status == PLAIT_OK) status = plait_plan_validate(plan, world, m->unit_count, &profile, &hardware);
            plait_profile_free(&profile);
            plait_hardware_free(&hardware);
        }
        if (status != PLAIT_OK) {
            char message[1024];
            snprintf(message, sizeof message, "%s", plait_last_error());
            plait_plan_free(plan);
            return plait_fail("%s: %s (model %s has %d units)", c->plan_path, message, m->name, m->unit_count);
        }
        return PLAIT_OK;
    }
    plait_parallel_options o = {.kind = PLAIT_PARALLEL_DP,
                                .workers = world,
                                .batch_size = c->batch_size,
                                .micro_batches = c->microbatches,
                                .schedule = (plait_schedule_kind)c->pipeline_schedule,
                                .bucket_bytes = c->bucket_bytes > 0 ? c->bucket_bytes : 25.0 * 1024 * 1024,
                                .streams = c->streams > 0 ? c->streams : 2,
                                .hardware_path = c->hardware_path};
    const char *kind = c->parallel ? c->parallel : "dp";
    if (strcmp(kind, "dp") == 0)
        o.kind = PLAIT_PARALLEL_DP;
    else if (strcmp(kind, "pipe") == 0)
        o.kind = PLAIT_PARALLEL_PIPE;
    else if (strcmp(kind, "auto") == 0)
        o.kind = PLAIT_PARALLEL_AUTO;
    else
        return plait_fail("--parallel expects dp, pipe or auto, got '%s'", kind);
    plait_profile profile = {0}, small = {0};
    if (o.kind == PLAIT_PARALLEL_AUTO && c->microbatches <= 1 && c->batch_size / world >= 2) {
        /* auto searches micro-batch counts: two sizes, from the largest any plan uses (data
         * parallelism, one micro-batch per rank) down to an eighth of it, price every count */
        o.micro_batches = 0;
        o.profile_micro_batch = c->batch_size / world;
        o.small_micro_batch = o.profile_micro_batch / 8 > 0 ? o.profile_micro_batch / 8 : 1;
        o.small_profile = &small;
        if (plait_profile_measure_shared(m, o.small_micro_batch, PLAIT_PROFILE_ITERATIONS, &small) != PLAIT_OK ||
            plait_profile_measure_shared(m, o.profile_micro_batch, PLAIT_PROFILE_ITERATIONS, &profile) != PLAIT_OK) {
            plait_profile_free(&small);
            return PLAIT_ERROR;
        }
    } else if (o.kind != PLAIT_PARALLEL_DP) {
        /* auto takes --microbatches when given; pipe profiles at its micro-batch size */
        if (o.kind == PLAIT_PARALLEL_AUTO && c->microbatches <= 1) o.micro_batches = 0;
        int micro = o.micro_batches > 0 ? c->batch_size / o.micro_batches : c->batch_size / (2 * world);
        if (micro < 1) micro = 1;
        if (plait_profile_measure_shared(m, micro, PLAIT_PROFILE_ITERATIONS, &profile) != PLAIT_OK) return PLAIT_ERROR;
    }
    int status = plait_parallel_plan(m, o.kind == PLAIT_PARALLEL_DP ? NULL : &profile, &o, plan);
    if (status == PLAIT_OK && plait_plan_validate(plan, world, m->unit_count, NULL, NULL) != PLAIT_OK) {
        plait_plan_free(plan);
        status = PLAIT_ERROR;
    }
    if (status == PLAIT_OK && o.small_profile) { /* the profile the chosen plan was priced on */
        plait_profile sized = {0};
        status = plait_profile_interpolate(&small, o.small_micro_batch, &profile, o.profile_micro_batch,
                                           plan->batch_size / plan->micro_batches, &sized);
        plait_profile_free(&profile);
        profile = sized;
        if (status != PLAIT_OK) plait_plan_free(plan);
    }
    plait_profile_free(&small);
    if (status == PLAIT_OK)
        *used = profile;
    else
        plait_profile_free(&profile);
    return status;
}
