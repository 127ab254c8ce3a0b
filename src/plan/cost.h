/* Pieces of the cost model shared by the analytic prediction, the partitioners and the simulator,
 * so all three price a stage the same way. */
#ifndef PLAIT_PLAN_COST_H
#define PLAIT_PLAN_COST_H

#include "plait/plan.h"

/* One stage's costs per micro-batch on one replica. */
typedef struct stage_terms {
    double forward, backward;    /* compute seconds per micro-batch */
    double send_activation;      /* to the next stage; 0 for the last stage */
    double send_gradient;        /* to the previous stage; 0 for the first stage */
    double busy;                 /* forward + backward + both sends: a replica's time per micro-batch */
    double exposed_allreduce;    /* all-reduce time after the last backward ends */
    double parameter_bytes;
    double kept_bytes_per_micro_batch;
} stage_terms;

double p2p_seconds(const plait_hardware *hardware, double bytes);

void stage_terms_compute(const plait_profile *profile, const plait_hardware *hardware, int first, int last,
                         int replicas, double speed, double micro_batch_size, double bucket_bytes, int streams,
                         stage_terms *terms);

/* Memory of one rank: parameter state plus the activations of the micro-batches it keeps. */
double stage_memory(const stage_terms *terms, int in_flight);
/* 1F1B warm-up of a stage, counted in the stage's micro-batches (all replicas together): the
 * ranks after it plus the replica counts of the replicated stages from it to the one before the
 * last. Without replicas this is the classic stages - s - 1; each replicated middle stage adds
 * slack so its replicas, which alternate forward and backward on every r-th micro-batch, are not
 * starved. The last stage needs none: its backward depends on nothing but its own forward. */
int one_f_one_b_warmup(int ranks_after, int replicated_ranks_from_here);
int plan_stage_warmup(const plait_plan *plan, int stage);
/* Micro-batches a replica keeps at once: all of its own (GPipe), or for 1F1B its share of the
 * stage's window of warmup + 1 consecutive micro-batches: ceil((warmup + 1) / replicas). */
int stage_in_flight(plait_schedule_kind schedule, int warmup, int replicas, int own_micro_batches);
/* The pipeline's steady-state terms of one stage (see docs/parallel.md): GPipe runs a forward
 * phase and a backward phase, 1F1B interleaves them. */
void stage_steady(plait_schedule_kind schedule, const stage_terms *terms, int own_micro_batches, double *forward_phase,
                  double *backward_phase);

/* Ready time of each bucket relative to the start of the last backward, and its bytes. Returns
 * the bucket count; ready and bytes (may be NULL) need room for it. */
int stage_bucket_ready(const plait_profile *profile, int first, int last, double micro_batch_size, double speed,
                       double bucket_bytes, double *ready, double *bytes);

/* K streams share one link per replica group: a bucket waits for its stream (b % K), spends the
 * latency part on it, then needs the link for the bandwidth part. */
typedef struct allreduce_lanes {
    int streams;
    double *stream_free;
    double link_free;
} allreduce_lanes;
int allreduce_lanes_init(allreduce_lanes *lanes, int streams);
void allreduce_lanes_free(allreduce_lanes *lanes);
/* Schedules bucket b; returns its end time, *start receives its start. */
double allreduce_lanes_run(allreduce_lanes *lanes, const plait_hardware *hardware, int replicas, int bucket,
                           double ready, double bytes, double *start);

#endif
