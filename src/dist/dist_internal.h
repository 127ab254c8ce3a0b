/* Shared by src/dist: the world state and the watched wait every blocking call goes through. */
#ifndef PLAIT_DIST_INTERNAL_H
#define PLAIT_DIST_INTERNAL_H

#include "plait/dist.h"

typedef struct dist_world {
    bool initialized;    /* plait_dist_init ran */
    bool uses_mpi;       /* MPI is initialized (by us, or before plait_dist_init) */
    bool owns_mpi;       /* plait_dist_init initialized MPI, so finalize ends it */
    int rank, size;
    MPI_Comm transfer_comm; /* a duplicate of MPI_COMM_WORLD for point-to-point transfers */
    int tag_ub;
    bool allreduce_polled;  /* PLAIT_ALLREDUCE=polled: gradient buckets use MPI_Iallreduce polled */
    bool one_node;          /* every rank shares this node's memory (MPI_COMM_TYPE_SHARED spans the world) */
} dist_world;

extern dist_world dist_state;

/* Turns an MPI return code into a plait_fail line "rank R: <what>: <MPI's message>". */
int dist_check(int mpi_code, const char *what);

/* Polls `request` (MPI_Test, then short sleeps) until it completes. When one of the world ranks in
 * `peers` (NULL: all ranks) has been silent, no heartbeat and no completion, for `timeout` seconds of
 * this wait (<= 0: never), it aborts the job with "rank R: no message from rank S for N s while
 * <context> (did it die?)". */
int dist_wait_request(MPI_Request *request, MPI_Status *status, double timeout, const int *peers,
                      int peer_count, const char *context);

/* For a thread about to block inside MPI (where it cannot watch its peers itself): the heartbeat
 * thread applies dist_wait_request's rule to it until dist_watch_end. Returns a slot (-1: none free,
 * the call goes unwatched; mpirun still ends the job if a peer process exits). */
int dist_watch_begin(const int *peers, int peer_count, double timeout, const char *context);
void dist_watch_end(int slot);
/* Called by the heartbeat thread: aborts the job when a watched thread's peer has gone silent. */
void dist_watch_check(void);

/* Heartbeats between all ranks (collective start and stop, at init and finalize). */
int dist_heartbeat_start(void);
void dist_heartbeat_stop(void);
/* plait_now() of the last heartbeat from `rank` (now when heartbeats are not running). */
double dist_heartbeat_last(int rank);

/* Sleeps between polls: no sleep for the first polls, then growing naps up to 200 microseconds. */
void dist_poll_pause(long polls);

/* Stops the transfers' progress thread (before the communicators go). */
void dist_transfers_shutdown(void);

#endif
