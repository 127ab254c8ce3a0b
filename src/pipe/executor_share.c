/* What the executor shares beyond a step: the whole model for evaluation, and its trace. */
#include <stdlib.h>
#include <string.h>

#include "dist/dist_internal.h"
#include "pipe/executor_internal.h"

int plait_executor_gather_model(plait_executor *e) {
    if (!e->use_mpi) return PLAIT_OK;
    for (int s = 0; s < e->stage_count; s++) {
        const plait_stage *st = &e->plan.stages[s];
        plait_param **params;
        plait_buffer **buffers;
        int param_count, buffer_count;
        if (plait_model_params(e->model, st->first_unit, st->last_unit, &params, &param_count) != PLAIT_OK)
            return PLAIT_ERROR;
        if (plait_model_buffers(e->model, st->first_unit, st->last_unit, &buffers, &buffer_count) != PLAIT_OK) {
            free(params);
            return PLAIT_ERROR;
        }
        int status = PLAIT_OK;
        for (int i = 0; i < param_count && status == PLAIT_OK; i++)
            status = dist_check(MPI_Bcast(params[i]->value, (int)params[i]->count, MPI_FLOAT, st->ranks[0],
                                          MPI_COMM_WORLD),
                                "sharing the model");
        for (int i = 0; i < buffer_count && status == PLAIT_OK; i++)
            status = dist_check(MPI_Bcast(buffers[i]->value, (int)buffers[i]->count, MPI_FLOAT, st->ranks[0],
                                          MPI_COMM_WORLD),
                                "sharing the model");
        free(params);
        free(buffers);
        if (status != PLAIT_OK) return PLAIT_ERROR;
    }
    return PLAIT_OK;
}

int plait_executor_write_trace(plait_executor *e, const char *json_path) {
    int count = e->event_count, world = e->use_mpi ? plait_dist_size() : 1;
    plait_trace_event *all = NULL;
    int *counts = NULL, *offsets = NULL, total = count, status = PLAIT_OK;
    if (e->rank == 0) {
        counts = calloc((size_t)world, sizeof(int));
        offsets = calloc((size_t)world, sizeof(int));
        if (!counts || !offsets) status = plait_fail("out of memory for the trace");
    }
    if (e->use_mpi) {
        if (dist_check(MPI_Gather(&count, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD), "gathering the trace"))
            status = PLAIT_ERROR;
        if (e->rank == 0 && counts) {
            total = 0;
            for (int r = 0; r < world; r++) {
                offsets[r] = total * (int)sizeof(plait_trace_event);
                total += counts[r];
                counts[r] *= (int)sizeof(plait_trace_event);
            }
        }
    }
    if (e->rank == 0 && status == PLAIT_OK) {
        all = malloc(((size_t)total + 1) * sizeof *all);
        if (!all) status = plait_fail("out of memory for the trace");
    }
    if (e->use_mpi) {
        if (dist_check(MPI_Gatherv(e->events, count * (int)sizeof(plait_trace_event), MPI_BYTE, all, counts, offsets,
                                   MPI_BYTE, 0, MPI_COMM_WORLD),
                       "gathering the trace"))
            status = PLAIT_ERROR;
    } else if (all && count) {
        memcpy(all, e->events, (size_t)count * sizeof *all);
    }
    if (e->rank == 0 && status == PLAIT_OK) {
        char svg[4096];
        size_t n = strlen(json_path);
        if (n > 5 && strcmp(json_path + n - 5, ".json") == 0)
            snprintf(svg, sizeof svg, "%.*s.svg", (int)(n - 5), json_path);
        else
            snprintf(svg, sizeof svg, "%s.svg", json_path);
        if (plait_trace_write_chrome(json_path, all, total) != PLAIT_OK || plait_trace_write_svg(svg, all, total) != PLAIT_OK)
            status = PLAIT_ERROR;
    }
    free(all);
    free(counts);
    free(offsets);
    return status;
}
