/* plait dist: the MPI layer for hybrid data + pipeline parallel training.
 *
 *   world      plait_dist_init/finalize, rank, size, barrier, abort; MPI errors become plait_fail lines.
 *   groups     a stage layout (the ranks of each stage) -> this rank's stage, its replica communicator
 *              and its neighbour stages' ranks.
 *   transfers  non-blocking point-to-point moves of activations, gradients (float) and labels (int32),
 *              tagged by (kind, micro-batch) so receives can be posted ahead and matched out of order.
 *   grad sync  bucketed all-reduce of parameter gradients among a stage's replicas on K stream threads,
 *              started bucket by bucket as backward marks gradients final.
 *
 * Every rank sends every other rank a heartbeat about once a second (a thread of its own), and every
 * wait in this layer polls with a deadline (plait_dist_timeout, default 20 s): when a peer it waits for
 * has sent nothing, not even a heartbeat, for that long, the whole job is aborted with
 * "rank R: no message from rank S for N s while ... (did it die?)". A slow peer keeps beating, so long
 * waits are fine. See docs/dist.md. All functions are called from one thread (the executor's), except
 * that plait_grad_sync_mark_ready may be called from any thread. */
#ifndef PLAIT_DIST_H
#define PLAIT_DIST_H

#include <mpi.h>

#include "plait/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- World ---------------------------------------------------------------------------------------- */

/* Initializes MPI with MPI_THREAD_MULTIPLE when the process was started by mpirun (or another MPI
 * launcher); a process started without one runs as world size 1 without initializing MPI. Reads the
 * watchdog deadline from the environment variable PLAIT_DIST_TIMEOUT (seconds) when set. Fails if the
 * MPI library cannot provide MPI_THREAD_MULTIPLE. Calling it twice is harmless. */
int plait_dist_init(int *argc, char ***argv);
/* Frees this layer's communicators and finalizes MPI (if plait_dist_init initialized it). Free
 * gradient syncs and groups first. */
int plait_dist_finalize(void);
int plait_dist_rank(void); /* 0 before init */
int plait_dist_size(void); /* 1 before init */
bool plait_dist_uses_mpi(void);

/* The watchdog deadline: how long a peer we wait for may stay silent (no message, no heartbeat);
 * <= 0 waits forever. Default 20 s, so that with the time MPI_Abort takes, every rank is gone within
 * 30 s of a peer dying or freezing. Set it on every rank alike. */
void plait_dist_set_timeout(double seconds);
double plait_dist_timeout(void);

/* Barrier over all ranks, with its own silence deadline (<= 0: plait_dist_timeout()). */
int plait_dist_barrier(double timeout_seconds);

/* Prints "plait: error: rank R: <message>" on stderr and ends every rank of the job with exit code 1
 * (MPI_Abort; plain exit without MPI). For errors one rank cannot recover from alone. */
void plait_dist_abort(const char *message) __attribute__((noreturn));

/* ---- Groups --------------------------------------------------------------------------------------- */

#define PLAIT_DIST_MAX_STAGES 32
#define PLAIT_DIST_MAX_REPLICAS 64

/* For each stage, the world ranks of its replicas. Every world rank appears exactly once. */
typedef struct plait_stage_layout {
    int stages;
    int replicas[PLAIT_DIST_MAX_STAGES];
    int ranks[PLAIT_DIST_MAX_STAGES][PLAIT_DIST_MAX_REPLICAS];
} plait_stage_layout;

/* Checks a layout for `world_size` ranks: stage count in range, no empty stage, every rank in
 * [0, world_size) exactly once. Fails with a message naming the problem. */
int plait_stage_layout_check(const plait_stage_layout *layout, int world_size);

/* Micro-batch i of a mini-batch is handled at `stage` by replica i mod replicas[stage] (round robin);
 * returns that replica's world rank. */
int plait_stage_layout_rank_for(const plait_stage_layout *layout, int stage, int micro_batch);

typedef struct plait_dist_groups {
    plait_stage_layout layout;
    int stage;             /* this rank's stage */
    int replica;           /* this rank's index among its stage's replicas (its rank in replica_comm) */
    int replicas;          /* replica count of this stage */
    MPI_Comm replica_comm; /* this stage's replicas; MPI_COMM_NULL without MPI */
    /* World ranks of the stages before and after this one (count 0 at the ends). */
    int previous_count, next_count;
    int previous[PLAIT_DIST_MAX_REPLICAS], next[PLAIT_DIST_MAX_REPLICAS];
} plait_dist_groups;

/* Collective over all ranks: checks the layout against the world and splits the replica
 * communicators (MPI_Comm_split by stage). */
int plait_dist_groups_create(const plait_stage_layout *layout, plait_dist_groups *groups);
void plait_dist_groups_free(plait_dist_groups *groups);

/* ---- Point-to-point transfers ---------------------------------------------------------------------- */

typedef enum plait_dist_kind {
    PLAIT_DIST_ACTIVATION = 0, /* float, stage s -> s+1 */
    PLAIT_DIST_GRADIENT = 1,   /* float, stage s+1 -> s (gradient of the activation) */
    PLAIT_DIST_LABELS = 2,     /* int32, loader -> last stage */
} plait_dist_kind;
#define PLAIT_DIST_KINDS 3

/* One pending send or receive. Owned by the caller: start it zeroed ({0}); it must stay in place
 * until it completes, and can be reused after. */
typedef struct plait_dist_transfer {
    MPI_Request request;
    plait_dist_kind kind;
    int micro_batch, peer, tag;
    bool is_receive, active;
    /* Elements posted (capacity of a receive, length of a send); after a receive completes, the
     * elements actually received (a receive accepts any length up to its capacity). */
    size_t count;
} plait_dist_transfer;

/* The tag of (kind, micro-batch): kind + PLAIT_DIST_KINDS * micro-batch, the micro-batch taken modulo
 * what fits under MPI_TAG_UB. Messages with equal tags from one peer are matched in order, so a
 * running micro-batch counter may wrap. */
int plait_dist_tag(plait_dist_kind kind, int micro_batch);

/* Posts a receive for micro-batch `micro_batch` of `kind` from world rank `from_rank` into `buffer`
 * (capacity elements: floats, or int32 for labels). Post receives ahead of need. */
int plait_dist_post_recv(plait_dist_transfer *t, plait_dist_kind kind, int micro_batch, int from_rank,
                         void *buffer, size_t capacity);
/* Starts sending `count` elements; the buffer must stay untouched until the send completes. */
int plait_dist_isend(plait_dist_transfer *t, plait_dist_kind kind, int micro_batch, int to_rank,
                     const void *buffer, size_t count);
/* Non-blocking: sets *done when the transfer completed (then t is inactive). Inactive: done. */
int plait_dist_test(plait_dist_transfer *t, bool *done);
/* Blocks (with the watchdog deadline) until the transfer completes. Inactive: returns at once. */
int plait_dist_wait(plait_dist_transfer *t);

/* ---- Gradient synchronization ------------------------------------------------------------------------ */

/* Parameters are given in order of readiness (reverse model order); buckets are consecutive runs of
 * them of at most bucket_bytes (a larger parameter is a bucket alone), except that the last buckets to
 * become ready taper: the last holds at most PLAIT_GRAD_TAIL_BYTES, each one before it at most twice
 * the next. The first layers have few parameters but much of backward's time; a full bucket ending
 * with them would be all-reduced after backward, exposed. Bucket b goes to stream
 * b mod streams; each stream is a thread with its own duplicate of the replica communicator that
 * all-reduces its buckets in bucket order, each as soon as it is ready. */
typedef struct plait_grad_sync plait_grad_sync;

typedef struct plait_grad_sync_config {
    size_t bucket_bytes; /* 0: 4 MiB */
    int streams;         /* 0: 2 */
    bool sum;            /* false: average over replicas (sum, then scale by 1/replicas) */
} plait_grad_sync_config;

typedef struct plait_grad_sync_times {
    double communication; /* wall time some bucket's all-reduce was running (union of intervals) */
    double hidden;        /* part of it before plait_grad_sync_wait_all was called (overlapped) */
    double exposed;       /* time plait_grad_sync_wait_all blocked */
    int buckets;
} plait_grad_sync_times;

/* The bucket of each parameter (bucket_of[params]) under the rule above; returns the bucket count.
 * Pure, for planners and simulators that must bucket exactly as plait_grad_sync does. */
int plait_grad_bucket_plan(int params, const size_t *counts, size_t bucket_bytes, int *bucket_of);
#define PLAIT_GRAD_TAIL_BYTES ((size_t)1 << 20)
/* The byte limit of the bucket `from_last` places before the last one to become ready. */
size_t plait_grad_bucket_limit(int from_last, size_t bucket_bytes);

/* Collective over replica_comm (every replica calls it with the same parameter counts, in the same
 * order relative to other collectives). With MPI_COMM_NULL or one replica, synchronization is a no-op. */
int plait_grad_sync_create(MPI_Comm replica_comm, int params, float *const *grads, const size_t *counts,
                           const plait_grad_sync_config *config, plait_grad_sync **out);
void plait_grad_sync_free(plait_grad_sync *sync);
int plait_grad_sync_bucket_count(const plait_grad_sync *sync);
int plait_grad_sync_bucket_of(const plait_grad_sync *sync, int param);
/* Backward calls this when parameter `param`'s gradient is final for this step; the bucket starts
 * reducing when its last parameter is marked. Marking a parameter twice in one step fails. */
int plait_grad_sync_mark_ready(plait_grad_sync *sync, int param);
/* Marks every parameter of bucket `bucket` not marked yet (for an executor that reduces per bucket).
 * Fails if the bucket was already complete in this step. */
int plait_grad_sync_mark_bucket_ready(plait_grad_sync *sync, int bucket);
/* Marks every parameter not yet marked, waits for all buckets, and starts a new step. times may be
 * NULL. Reports the first MPI error any stream met. */
int plait_grad_sync_wait_all(plait_grad_sync *sync, plait_grad_sync_times *times);

#ifdef __cplusplus
}
#endif
#endif
