/* The plan as a table for `plait plan`. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plait/core.h"
#include "plan/cost.h"

static double stage_speed(const plait_stage *stage, const plait_hardware *hardware) {
    double speed = INFINITY;
    for (int j = 0; j < stage->replica_count; j++) speed = fmin(speed, hardware->speed[stage->ranks[j]]);
    return speed;
}

/* One stage of `replicas` workers (ranks 0..replicas-1) and the plan's other settings. */
static int single_stage_seconds(const plait_plan *plan, const plait_profile *profile, const plait_hardware *hardware,
                                int replicas, int micro_batches, double *seconds, bool *fits) {
    plait_plan reference;
    if (plait_plan_init(&reference, 1, &replicas)) return PLAIT_ERROR;
    reference.stages[0].first_unit = 0;
    reference.stages[0].last_unit = profile->unit_count;
    for (int j = 0; j < replicas; j++) reference.stages[0].ranks[j] = j;
    reference.batch_size = plan->batch_size;
    reference.micro_batches = micro_batches;
    reference.schedule = plan->schedule;
    reference.bucket_bytes = plan->bucket_bytes;
    reference.streams = plan->streams;
    plait_prediction prediction;
    int status = plait_plan_predict(&reference, profile, hardware, &prediction);
    *seconds = prediction.seconds;
    *fits = true;
    double need = plait_stage_memory_bytes(&reference, profile, 0);
    for (int j = 0; j < replicas; j++) *fits = *fits && need <= hardware->memory_bytes[j];
    plait_plan_free(&reference);
    return status;
}

int plait_plan_format_table(FILE *out, const plait_plan *plan, const plait_profile *profile,
                            const plait_hardware *hardware) {
    if (plait_plan_validate(plan, hardware->worker_count, profile->unit_count, NULL, NULL)) return PLAIT_ERROR;
    plait_prediction prediction;
    if (plait_plan_predict(plan, profile, hardware, &prediction)) return PLAIT_ERROR;
    double micro_batch_size = (double)plan->batch_size / plan->micro_batches;
    fprintf(out, "plan: %d stages, %d micro-batches of %g samples, schedule %s, buckets of %.3g MB on %d streams\n",
            plan->stage_count, plan->micro_batches, micro_batch_size, plait_schedule_name(plan->schedule),
            plan->bucket_bytes / 1e6, plan->streams);
    fprintf(out, "%-5s %-28s %-16s %10s %10s %10s %10s\n", "stage", "units", "ranks", "busy s", "per-mb s",
            "ar-exp s", "memory MB");
    for (int s = 0; s < plan->stage_count; s++) {
        const plait_stage *st = &plan->stages[s];
        stage_terms terms;
        stage_terms_compute(profile, hardware, st->first_unit, st->last_unit, st->replica_count,
                            stage_speed(st, hardware), micro_batch_size, plan->bucket_bytes, plan->streams, &terms);
        char units[64], ranks[64];
        snprintf(units, sizeof units, "%d-%d %.10s..%.10s", st->first_unit, st->last_unit - 1,
                 profile->units[st->first_unit].name, profile->units[st->last_unit - 1].name);
        size_t used = 0;
        ranks[0] = 0;
        for (int j = 0; j < st->replica_count && used < sizeof ranks - 8; j++)
            used += (size_t)snprintf(ranks + used, sizeof ranks - used, "%s%d", j ? "," : "", st->ranks[j]);
        double own = (double)plan->micro_batches / st->replica_count;
        fprintf(out, "%-5d %-28s %-16s %10.4g %10.4g %10.4g %10.1f%s\n", s, units, ranks, own * terms.busy,
                terms.busy, terms.exposed_allreduce, plait_stage_memory_bytes(plan, profile, s) / 1e6,
                s == prediction.bottleneck_stage ? "  (bottleneck)" : "");
    }
    fprintf(out, "predicted time per mini-batch: %.4g s (pipeline %.4g s + exposed all-reduce %.4g s)\n",
            prediction.seconds, prediction.pipeline_seconds, prediction.exposed_allreduce_seconds);
    double one, data_parallel;
    bool one_fits, data_parallel_fits;
    int workers = hardware->worker_count;
    if (single_stage_seconds(plan, profile, hardware, 1, 1, &one, &one_fits)) return PLAIT_ERROR;
    fprintf(out, "speedup over one worker: %.2fx%s\n", one / prediction.seconds,
            one_fits ? "" : " (one worker would not fit the whole mini-batch in memory)");
    if (plan->batch_size % workers == 0) {
        if (single_stage_seconds(plan, profile, hardware, workers, workers, &data_parallel, &data_parallel_fits))
            return PLAIT_ERROR;
        fprintf(out, "speedup over pure data parallelism on %d workers: %.2fx%s\n", workers,
                data_parallel / prediction.seconds, data_parallel_fits ? "" : " (which would not fit in memory)");
    } else {
        fprintf(out, "speedup over pure data parallelism: n/a (batch size %d not divisible by %d workers)\n",
                plan->batch_size, workers);
    }
    return PLAIT_OK;
}
