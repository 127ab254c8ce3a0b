/* plait planning: profiles, hardware models, plans, schedules, the cost model, the simulator,
 * the partitioner and trace writers. Pure C, no MPI: the executor in pipe/ runs the same
 * schedules on real data. docs/parallel.md states the cost model and the schedule semantics. */
#ifndef PLAIT_PLAN_H
#define PLAIT_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Profile: measured (or loaded) cost of each unit of a model. ---- */

typedef struct plait_unit_cost {
    char name[64];
    double forward_seconds;  /* per sample, on a worker of speed 1 */
    double backward_seconds; /* per sample, on a worker of speed 1 */
    double output_bytes;     /* activation bytes per sample sent to the next unit */
    double parameter_bytes;  /* learnable parameters (float32 bytes) */
    double memory_bytes;     /* activation bytes per sample kept from forward to backward */
} plait_unit_cost;

typedef struct plait_profile {
    int unit_count;
    plait_unit_cost *units;
} plait_profile;

/* JSON: {"batch_size": 1, "units": [{"name", "forward_seconds", "backward_seconds",
 * "output_bytes", "parameter_bytes", "memory_bytes"}, ...]}. Seconds in the file are per
 * micro-batch of "batch_size" samples (default 1) and are stored per sample. */
int plait_profile_read(const char *path, plait_profile *profile);
int plait_profile_write(const char *path, const plait_profile *profile);
int plait_profile_init(plait_profile *profile, int unit_count); /* zeroed units */
void plait_profile_free(plait_profile *profile);

/* ---- Hardware: workers and links. ---- */

typedef struct plait_link {
    double bandwidth; /* bytes per second */
    double latency;   /* seconds per message (per ring step for all-reduce) */
} plait_link;

typedef struct plait_hardware {
    int worker_count;
    double *speed;        /* relative speed per worker (1 = the profile's worker) */
    double *memory_bytes; /* memory per worker */
    plait_link p2p;       /* activations and gradients between stages */
    plait_link allreduce; /* gradient all-reduce among the replicas of a stage */
} plait_hardware;

/* JSON: {"worker_count": N, "speed": 1.0, "memory_bytes": 8e9, "workers": [{"speed",
 * "memory_bytes"}, ...] (optional, N entries, overrides the top-level defaults),
 * "p2p": {"bandwidth", "latency"}, "allreduce": {"bandwidth", "latency"}}. */
int plait_hardware_read(const char *path, plait_hardware *hardware);
int plait_hardware_write(const char *path, const plait_hardware *hardware);
/* worker_count identical workers. */
int plait_hardware_init(plait_hardware *hardware, int worker_count, double speed, double memory_bytes,
                        plait_link p2p, plait_link allreduce);
void plait_hardware_free(plait_hardware *hardware);

/* ---- Plan: stages, their replicas, micro-batches, schedule, gradient buckets. ---- */

typedef enum plait_schedule_kind { PLAIT_SCHEDULE_GPIPE, PLAIT_SCHEDULE_1F1B } plait_schedule_kind;

typedef struct plait_stage {
    int first_unit, last_unit; /* units [first_unit, last_unit) */
    int replica_count;
    int *ranks; /* replica_count ranks; replica j runs micro-batches i with i % replica_count == j */
} plait_stage;

typedef struct plait_plan {
    int batch_size;   /* samples per mini-batch over all replicas */
    int micro_batches; /* micro-batches per mini-batch; each has batch_size / micro_batches samples */
    plait_schedule_kind schedule;
    double bucket_bytes; /* gradient bucket size for the all-reduce */
    int streams;         /* communication streams (threads) per rank */
    int stage_count;
    plait_stage *stages;
} plait_plan;

/* JSON: {"batch_size", "micro_batches", "schedule": "gpipe"|"1f1b", "bucket_bytes", "streams",
 * "stages": [{"units": [first, last], "ranks": [r, ...]}, ...]}. Reading checks types and
 * signs only; call plait_plan_validate before use. */
int plait_plan_read(const char *path, plait_plan *plan);
int plait_plan_write(const char *path, const plait_plan *plan);
/* Allocates stage_count stages with the given replica counts (ranks zeroed). */
int plait_plan_init(plait_plan *plan, int stage_count, const int *replica_counts);
void plait_plan_free(plait_plan *plan);
const char *plait_schedule_name(plait_schedule_kind kind);

/* Structural checks against a world size and the model's unit count; with a profile and a
 * hardware model (both or neither) also checks that every rank's memory fits. */
int plait_plan_validate(const plait_plan *plan, int world_size, int unit_count, const plait_profile *profile,
                        const plait_hardware *hardware);

/* ---- Schedules: per-rank instruction lists (src/pipe/schedule.c). ---- */

typedef enum plait_op {
    PLAIT_OP_LOAD_MICROBATCH, /* first stage: inputs; last stage: labels */
    PLAIT_OP_RECV_ACTIVATION,
    PLAIT_OP_FORWARD,
    PLAIT_OP_SEND_ACTIVATION,
    PLAIT_OP_RECV_GRADIENT,
    PLAIT_OP_BACKWARD,
    PLAIT_OP_SEND_GRADIENT,
    PLAIT_OP_ALLREDUCE_BUCKET, /* hand bucket to stream bucket % streams; does not block */
    PLAIT_OP_OPTIMIZER_STEP,   /* waits for this rank's buckets, then updates parameters */
} plait_op;

typedef struct plait_instruction {
    plait_op op;
    int micro_batch; /* -1 when not applicable */
    int peer;        /* rank to send to / receive from, -1 when not applicable */
    int bucket;      /* ALLREDUCE_BUCKET only, else -1 */
} plait_instruction;

typedef struct plait_rank_schedule {
    int rank, stage, replica;
    int count;
    plait_instruction *instructions;
} plait_rank_schedule;

typedef struct plait_schedule {
    int rank_count;
    plait_rank_schedule *ranks; /* indexed by rank */
    int stage_count;
    int *bucket_counts; /* per stage; 0 for stages with one replica */
} plait_schedule;

/* Builds the instruction lists of one mini-batch. unit_parameter_bytes (one per unit) sizes the
 * gradient buckets; see plait_stage_bucket_bytes. The plan must be valid. */
int plait_schedule_build(const plait_plan *plan, const double *unit_parameter_bytes, plait_schedule *schedule);
void plait_schedule_free(plait_schedule *schedule);
const char *plait_op_name(plait_op op);
/* Under the strict posting rule (plait_simulation_options.late_receives), the index of the compute
 * instruction (FORWARD/BACKWARD) whose start posts the receive at `index`, or -1 when the receive
 * is posted at the start of the list. */
int plait_schedule_post_point(const plait_rank_schedule *rank, int index);

/* Gradient buckets of a stage: the stage's parameter bytes in reverse unit order (the order
 * backward produces them) cut as plait_grad_sync cuts them (dist.h): chunks of bucket_bytes, the
 * last ones tapering down to PLAIT_GRAD_TAIL_BYTES, the first holding what is left. Returns the count. */
int plait_stage_bucket_count(double stage_parameter_bytes, double bucket_bytes);

/* ---- Cost model (analytic; the partitioner's objective). ---- */

/* Per-parameter-byte memory copies a stage keeps: weights, gradients, momentum. */
#define PLAIT_PARAMETER_COPIES 3.0

typedef struct plait_prediction {
    double seconds;         /* predicted time per mini-batch */
    double pipeline_seconds; /* without all-reduce exposure */
    double exposed_allreduce_seconds;
    int bottleneck_stage;
} plait_prediction;

/* The steady-state cost model of docs/parallel.md for any valid plan. */
int plait_plan_predict(const plait_plan *plan, const plait_profile *profile, const plait_hardware *hardware,
                       plait_prediction *prediction);
/* Peak memory of the worst rank of stage `stage`, under the plan's schedule. */
double plait_stage_memory_bytes(const plait_plan *plan, const plait_profile *profile, int stage);

/* ---- Simulator: runs schedules against the cost model, event by event. ---- */

typedef struct plait_trace_event {
    int rank;
    int lane;        /* 0: compute (and blocking sends); 1 + k: communication stream k */
    char name[48];   /* "<kind> <detail>", kind one of forward, backward, send, allreduce, optimizer, load */
    double start;    /* seconds */
    double duration; /* seconds */
    bool detail;     /* one unit inside a forward or backward event: nested under it in the Chrome trace,
                      * left out of the SVG timeline */
} plait_trace_event;

typedef struct plait_simulation {
    double seconds; /* mini-batch time: the last rank's optimizer step */
    int rank_count, stage_count;
    double *rank_compute_seconds;  /* forward + backward per rank */
    double *rank_send_seconds;     /* blocked in transfers it sends */
    double *rank_allreduce_wait;   /* optimizer step waiting for buckets */
    double *stage_busy_seconds;    /* busiest replica's compute per stage */
    double bubble_fraction;        /* idle rank-time / (ranks * seconds) */
    double exposed_communication;  /* largest per-rank send + all-reduce wait */
    int event_count;
    plait_trace_event *events; /* when requested */
} plait_simulation;

typedef struct plait_simulation_options {
    bool record_events;
    /* false (the executor's rule): every receive of the mini-batch is posted when it starts, so a
     * blocking send waits only for its transfer. true: a receive is posted only when the rank
     * starts the compute instruction before it (plait_schedule_post_point), and a send blocks
     * until then; a stricter test of deadlock freedom with little receive buffering. */
    bool late_receives;
} plait_simulation_options;

/* Runs every rank's list: a send occupies its rank until its transfer ends, a receive waits for
 * its message; fails naming the stuck ranks if the lists deadlock. options may be NULL. */
int plait_simulate(const plait_plan *plan, const plait_schedule *schedule, const plait_profile *profile,
                   const plait_hardware *hardware, const plait_simulation_options *options,
                   plait_simulation *simulation);
void plait_simulation_free(plait_simulation *simulation);

/* ---- Traces: shared by the simulator and the executor. ---- */

/* Chrome trace-event JSON (chrome://tracing, Perfetto): one process per rank, one thread per lane. */
int plait_trace_write_chrome(const char *path, const plait_trace_event *events, int count);
/* SVG timeline: one row per (rank, lane), one colored rect per event, idle gaps visible. */
int plait_trace_write_svg(const char *path, const plait_trace_event *events, int count);

/* ---- Partitioner. ---- */

typedef struct plait_planner_options {
    int batch_size;
    const int *micro_batch_candidates; /* NULL: every divisor of batch_size up to 64 */
    int candidate_count;
    plait_schedule_kind schedule;
    double bucket_bytes;
    int streams;
} plait_planner_options;

/* Dynamic program over contiguous unit ranges and consecutive rank ranges that minimizes
 * plait_plan_predict over all plans using every worker; writes the best plan. */
int plait_partition(const plait_profile *profile, const plait_hardware *hardware,
                    const plait_planner_options *options, plait_plan *plan, double *predicted_seconds);
/* Same search by enumeration (for tests; exponential). */
int plait_partition_brute_force(const plait_profile *profile, const plait_hardware *hardware,
                                const plait_planner_options *options, plait_plan *plan,
                                double *predicted_seconds);

/* The plan as a table: per stage its units, ranks, busy time, then the predicted mini-batch
 * time and speedups over pure data parallelism and over one worker. */
int plait_plan_format_table(FILE *out, const plait_plan *plan, const plait_profile *profile,
                            const plait_hardware *hardware);

#ifdef __cplusplus
}
#endif
#endif
