/* plait pipe: the executor that runs a plan's per-rank instruction lists (plan.h) on real data over
 * MPI (dist.h), the unit profiler, plans for --parallel dp|pipe|auto, checkpoints in stage parts and
 * execution traces. docs/parallel.md ("The executor") states the semantics.
 *
 * Every rank holds the whole model (created from the same seed, so identical at the start) but
 * trains only its stage's units. Every rank also runs the same deterministic loader over the whole
 * mini-batch and takes micro-batch i as rows [i*b, (i+1)*b), so the first stage has its inputs and
 * the last stage its labels without any label transfer. */
#ifndef PLAIT_PIPE_H
#define PLAIT_PIPE_H

#include "plait/nn.h"
#include "plait/plan.h"
#include "plait/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct plait_executor plait_executor;

typedef struct plait_executor_stats {
    double allreduce_communication; /* seconds some gradient bucket was reducing in the last step */
    double allreduce_hidden;        /* of it, before the optimizer step started waiting */
    double allreduce_exposed;       /* optimizer step blocked on buckets */
    double receive_wait;            /* compute lane blocked on receives */
    double forward_compute, backward_compute; /* this rank's forward and backward passes, all micro-batches */
    /* Over the world's replicated ranks (the same on every rank): mean hidden and exposed seconds. */
    double mean_allreduce_hidden, mean_allreduce_exposed;
} plait_executor_stats;

/* The plan must be valid for plait_dist_size() ranks and m's units (plait_plan_validate). Collective:
 * every rank of the world calls it with the same plan. `trace` records events for plait_executor_trace. */
int plait_executor_create(plait_model *m, const plait_plan *plan, bool trace, plait_executor **out);
void plait_executor_free(plait_executor *e);

/* One mini-batch (plan->batch_size images, identical on every rank) through this rank's instruction
 * list. The loss and the count of right answers are over the whole mini-batch, on every rank. A
 * non-finite loss leaves the weights untouched on every rank, as plait_trainer_step does. Collective. */
int plait_executor_step(plait_executor *e, const plait_step_options *o, const plait_tensor *images,
                        const int32_t *labels, float *loss, int *correct);
/* Stops recording trace events (the trace keeps what it has). */
void plait_executor_trace_pause(plait_executor *e);
void plait_executor_stats_get(const plait_executor *e, plait_executor_stats *stats);

int plait_executor_stage(const plait_executor *e);   /* this rank's stage */
int plait_executor_replica(const plait_executor *e); /* this rank's replica index in its stage */

/* Collective: every rank's recorded events go to rank 0, which writes Chrome trace JSON to
 * `json_path` and the SVG timeline next to it (.json replaced by .svg, or .svg appended). */
int plait_executor_write_trace(plait_executor *e, const char *json_path);

/* Collective: copies each stage's parameters and buffers from its first replica to every rank, so
 * that any rank (rank 0 for evaluation) holds the whole current model. */
int plait_executor_gather_model(plait_executor *e);

/* ---- Profiles and automatic plans ---- */

/* Times each unit's training forward and backward on `micro_batch` samples (the median of
 * `iterations` after one warm-up) and records output, parameter and kept-activation bytes per sample. */
int plait_profile_measure(plait_model *m, int micro_batch, int iterations, plait_profile *profile);
/* The timed passes plans and benchmarks profile with: five, because on a shared machine the median of
 * three moved 25% between two profiles of one plan taken minutes apart. */
#define PLAIT_PROFILE_ITERATIONS 5

/* Collective: every rank measures at once (so the profile carries what ranks sharing a machine cost
 * each other); every rank receives the same profile, the ranks' mean times and rank 0's bytes. */
int plait_profile_measure_shared(plait_model *m, int micro_batch, int iterations, plait_profile *profile);

/* The profile at `micro_batch` samples from profiles measured at two sizes (small_micro_batch <
 * large_micro_batch): each unit's forward and backward seconds are taken as affine in the micro-batch
 * size (a fixed cost per micro-batch plus a cost per sample; the fixed part is clamped at 0), which
 * prices the lower efficiency of small micro-batches that a linear profile misses. Bytes are taken
 * from `large`. */
int plait_profile_interpolate(const plait_profile *small, int small_micro_batch, const plait_profile *large,
                              int large_micro_batch, int micro_batch, plait_profile *out);

/* A hardware model of `workers` identical workers on this machine (memory shared among them; links
 * of shared-memory MPI), for plans made here. */
int plait_hardware_local(int workers, plait_hardware *hardware);

typedef enum plait_parallel_kind {
    PLAIT_PARALLEL_DP,   /* one stage, every rank a replica */
    PLAIT_PARALLEL_PIPE, /* one stage per rank, units balanced by measured time */
    PLAIT_PARALLEL_AUTO, /* plait_partition on a measured profile */
} plait_parallel_kind;

typedef struct plait_parallel_options {
    plait_parallel_kind kind;
    int workers;
    int batch_size;
    int micro_batches; /* dp/pipe: at least this many (raised to a valid count); auto: 0 = search */
    plait_schedule_kind schedule;
    double bucket_bytes;
    int streams;
    const char *hardware_path; /* auto: plan for this hardware JSON instead of plait_hardware_local */
    /* auto, micro-batches searched: with a second profile measured at small_micro_batch samples (the
     * main one at profile_micro_batch), each micro-batch count is priced on the profile interpolated
     * to its size (plait_profile_interpolate) instead of on one profile scaled linearly. */
    const plait_profile *small_profile;
    int small_micro_batch, profile_micro_batch;
} plait_parallel_options;

/* Builds a plan for m (dp needs no profile; pipe and auto take `profile`). */
int plait_parallel_plan(const plait_model *m, const plait_profile *profile, const plait_parallel_options *o,
                        plait_plan *plan);

/* Contiguous split of `unit_count` weighted units into `parts` non-empty ranges minimizing the
 * heaviest range; writes parts + 1 boundaries. */
int plait_split_balanced(const double *weights, int unit_count, int parts, int *boundaries);

/* ---- Checkpoints in stage parts ---- */

/* The checkpoint files of `dir`: the newest complete set among last.safetensors and
 * last.stage<k>.safetensors (parts of the same step). Caller frees each path and the array. */
int plait_checkpoint_find_parts(const char *dir, char ***paths, int *count);
void plait_checkpoint_free_parts(char **paths, int count);

#ifdef __cplusplus
}
#endif
#endif
