/* The executor's state, shared by its files in src/pipe. */
#ifndef PLAIT_EXECUTOR_INTERNAL_H
#define PLAIT_EXECUTOR_INTERNAL_H

#include "pipe/pipe_internal.h"
#include "plait/dist.h"

/* Everything one micro-batch in flight needs on this rank. */
typedef struct micro_slot {
    int micro_batch;
    plait_unit_state **states; /* one per unit of the stage */
    plait_tensor input;        /* received activation (stages after the first) */
    plait_tensor output_grad;  /* received gradient of the stage's output (stages before the last) */
    plait_tensor dlogits;      /* last stage */
    plait_tensor input_view;   /* first stage: rows of the mini-batch's images */
    const plait_tensor *output, *input_grad;
    plait_dist_transfer receive_activation, receive_gradient, send_activation, send_gradient;
} micro_slot;

struct plait_executor {
    plait_model *model;
    plait_plan plan; /* a copy */
    plait_schedule schedule;
    plait_dist_groups groups;
    bool use_mpi;
    int rank, stage, replica, replicas, stage_count, first, last;
    int micro_size, slot_count;
    long step_count;
    micro_slot *slots;
    plait_param **params; /* the stage's, in model order */
    int param_count;
    int *unit_param_start; /* per unit of the stage (+1), index into params */
    plait_grad_sync *sync;
    int final_backward; /* index of this rank's last BACKWARD instruction */
    plait_layer **norms; /* the stage's batch-norm layers */
    int norm_count;
    double *norm_stats;
    size_t norm_stat_count;
    bool trace;
    plait_trace_event *events;
    int event_count, event_capacity;
    double t0;
    plait_executor_stats stats;
};

#endif
