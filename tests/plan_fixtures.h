/* Small builders shared by the planning tests. */
#ifndef PLAIT_TEST_PLAN_FIXTURES_H
#define PLAIT_TEST_PLAN_FIXTURES_H

#include <stdio.h>
#include <string.h>

#include "plait/core.h"
#include "plait/plan.h"
#include "testing.h"

/* Writes text to a file in the temporary folder and returns its path (static buffer). */
static inline const char *fixture_file(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", testing_temp_dir(), name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return path;
}

/* Units with the given forward/backward seconds per sample, activation and parameter bytes. */
static inline void fixture_profile(plait_profile *p, int units, const double *forward, const double *backward,
                                   double output_bytes, const double *parameter_bytes, double memory_bytes) {
    plait_profile_init(p, units);
    for (int u = 0; u < units; u++) {
        snprintf(p->units[u].name, sizeof p->units[u].name, "unit%d", u);
        p->units[u].forward_seconds = forward[u];
        p->units[u].backward_seconds = backward[u];
        p->units[u].output_bytes = output_bytes;
        p->units[u].parameter_bytes = parameter_bytes ? parameter_bytes[u] : 0;
        p->units[u].memory_bytes = memory_bytes;
    }
}

/* Stages given as unit cuts and replica counts; ranks are assigned in order. */
static inline void fixture_plan(plait_plan *plan, int stages, const int *last_units, const int *replicas,
                                int batch_size, int micro_batches, plait_schedule_kind schedule) {
    plait_plan_init(plan, stages, replicas);
    int rank = 0, first = 0;
    for (int s = 0; s < stages; s++) {
        plan->stages[s].first_unit = first;
        plan->stages[s].last_unit = first = last_units[s];
        for (int j = 0; j < plan->stages[s].replica_count; j++) plan->stages[s].ranks[j] = rank++;
    }
    plan->batch_size = batch_size;
    plan->micro_batches = micro_batches;
    plan->schedule = schedule;
}

#endif
