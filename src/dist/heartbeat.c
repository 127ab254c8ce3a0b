/* Heartbeats: every rank tells every other rank it is alive about once a second, from a thread of its
 * own, so the watchdog can tell a dead or frozen peer (silent) from a slow one (still beating) and
 * long legitimate waits (a slow stage, data loading, a checkpoint) never trip it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "dist/dist_internal.h"

#define HEARTBEAT_TAG 1

static struct {
    MPI_Comm comm;
    pthread_t thread;
    bool running;
    atomic_bool stop;
    int peers;
    MPI_Request *receives, *sends;
    _Atomic double *last_heard; /* plait_now() of the last beat from each rank */
} beat = {.comm = MPI_COMM_NULL};

static double beat_interval(void) {
    double timeout = plait_dist_timeout();
    double interval = timeout > 0 ? timeout / 4 : 1.0;
    return interval > 1.0 ? 1.0 : interval < 0.01 ? 0.01 : interval;
}

static void *beat_main(void *unused) {
    (void)unused;
    int n = dist_state.size, me = dist_state.rank;
    double next_send = 0;
    struct timespec pause = {0, 20 * 1000 * 1000};
    while (!atomic_load(&beat.stop)) {
        double now = plait_now();
        for (int r = 0; r < n; r++) {
            if (r == me) continue;
            int done = 0;
            if (MPI_Test(&beat.receives[r], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) {
                atomic_store(&beat.last_heard[r], now);
                MPI_Irecv(NULL, 0, MPI_BYTE, r, HEARTBEAT_TAG, beat.comm, &beat.receives[r]);
            }
        }
        if (now >= next_send) {
            for (int r = 0; r < n; r++) {
                if (r == me) continue;
                int done = 1; /* a beat still in flight to a silent peer is not repeated */
                if (beat.sends[r] != MPI_REQUEST_NULL) MPI_Test(&beat.sends[r], &done, MPI_STATUS_IGNORE);
                if (done) MPI_Isend(NULL, 0, MPI_BYTE, r, HEARTBEAT_TAG, beat.comm, &beat.sends[r]);
            }
            next_send = now + beat_interval();
        }
        dist_watch_check();
        nanosleep(&pause, NULL);
    }
    return NULL;
}

int dist_heartbeat_start(void) {
    int n = dist_state.size;
    if (n < 2) return PLAIT_OK;
    if (dist_check(MPI_Comm_dup(MPI_COMM_WORLD, &beat.comm), "MPI_Comm_dup for heartbeats") != PLAIT_OK)
        return PLAIT_ERROR;
    beat.receives = malloc((size_t)n * sizeof(MPI_Request));
    beat.sends = malloc((size_t)n * sizeof(MPI_Request));
    beat.last_heard = malloc((size_t)n * sizeof(*beat.last_heard));
    if (!beat.receives || !beat.sends || !beat.last_heard) return plait_fail("out of memory starting heartbeats");
    double now = plait_now();
    for (int r = 0; r < n; r++) {
        atomic_init(&beat.last_heard[r], now);
        beat.sends[r] = beat.receives[r] = MPI_REQUEST_NULL;
        if (r != dist_state.rank) MPI_Irecv(NULL, 0, MPI_BYTE, r, HEARTBEAT_TAG, beat.comm, &beat.receives[r]);
    }
    atomic_store(&beat.stop, false);
    if (pthread_create(&beat.thread, NULL, beat_main, NULL) != 0) return plait_fail("could not start heartbeats");
    beat.running = true;
    return PLAIT_OK;
}

/* Collective. The first barrier is watched while the beats go on (a peer still writing a checkpoint
 * is waited for, a dead one is not); then every rank stops beating before any leaves the second
 * barrier, the posted receives are cancelled and beats already delivered are taken, so none is left
 * behind for MPI_Finalize. */
void dist_heartbeat_stop(void) {
    if (beat.running) {
        MPI_Request request;
        if (MPI_Ibarrier(beat.comm, &request) == MPI_SUCCESS)
            dist_wait_request(&request, MPI_STATUS_IGNORE, plait_dist_timeout(), NULL, 0,
                              "finishing (plait_dist_finalize)");
        atomic_store(&beat.stop, true);
        pthread_join(beat.thread, NULL);
        beat.running = false;
        for (int r = 0; r < dist_state.size; r++)
            if (beat.sends[r] != MPI_REQUEST_NULL) MPI_Wait(&beat.sends[r], MPI_STATUS_IGNORE);
        MPI_Barrier(beat.comm);
        for (int r = 0; r < dist_state.size; r++) {
            if (beat.receives[r] == MPI_REQUEST_NULL) continue;
            MPI_Cancel(&beat.receives[r]);
            MPI_Wait(&beat.receives[r], MPI_STATUS_IGNORE);
        }
        for (;;) {
            int found = 0;
            MPI_Status status;
            MPI_Iprobe(MPI_ANY_SOURCE, HEARTBEAT_TAG, beat.comm, &found, &status);
            if (!found) break;
            MPI_Recv(NULL, 0, MPI_BYTE, status.MPI_SOURCE, HEARTBEAT_TAG, beat.comm, MPI_STATUS_IGNORE);
        }
    }
    if (beat.comm != MPI_COMM_NULL) MPI_Comm_free(&beat.comm);
    free(beat.receives);
    free(beat.sends);
    free((void *)beat.last_heard);
    beat.receives = beat.sends = NULL;
    beat.last_heard = NULL;
}

double dist_heartbeat_last(int rank) {
    if (!beat.running || rank < 0 || rank >= dist_state.size) return plait_now();
    return atomic_load(&beat.last_heard[rank]);
}
