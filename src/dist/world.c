/* The MPI world: init with or without a launcher, errors as plait_fail lines, abort, watched waits. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/dist_internal.h"

dist_world dist_state = {.rank = 0, .size = 1, .transfer_comm = MPI_COMM_NULL, .tag_ub = 32767};
static double watchdog_timeout = 20.0;

/* Launchers announce themselves in the environment: Open MPI (and PMIx), MPICH's hydra, Slurm's PMI. */
static bool launched_by_mpi(void) {
    static const char *names[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (getenv(names[i])) return true;
    return false;
}

static int read_timeout_from_environment(void) {
    const char *text = getenv("PLAIT_DIST_TIMEOUT");
    if (!text || !*text) return PLAIT_OK;
    char *end;
    errno = 0;
    double seconds = strtod(text, &end);
    if (errno || *end || end == text)
        return plait_fail("PLAIT_DIST_TIMEOUT must be a number of seconds, not '%s'", text);
    watchdog_timeout = seconds;
    return PLAIT_OK;
}

static int read_allreduce_mode_from_environment(void) {
    const char *mode = getenv("PLAIT_ALLREDUCE");
    if (!mode || !*mode || strcmp(mode, "blocking") == 0) return PLAIT_OK;
    if (strcmp(mode, "polled") != 0)
        return plait_fail("PLAIT_ALLREDUCE must be 'blocking' or 'polled', not '%s'", mode);
    dist_state.allreduce_polled = true;
    return PLAIT_OK;
}

int dist_check(int mpi_code, const char *what) {
    if (mpi_code == MPI_SUCCESS) return PLAIT_OK;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(mpi_code, text, &length) != MPI_SUCCESS) snprintf(text, sizeof text, "code %d", mpi_code);
    return plait_fail("rank %d: %s: %s", dist_state.rank, what, text);
}

int plait_dist_init(int *argc, char ***argv) {
    if (dist_state.initialized) return PLAIT_OK;
    if (read_timeout_from_environment() != PLAIT_OK || read_allreduce_mode_from_environment() != PLAIT_OK)
        return PLAIT_ERROR;
    int already = 0;
    MPI_Initialized(&already);
    if (!already && !launched_by_mpi()) {
        dist_state.initialized = true;
        return PLAIT_OK;
    }
    int provided = MPI_THREAD_SINGLE;
    if (already) {
        MPI_Query_thread(&provided);
    } else if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        return plait_fail("MPI_Init_thread failed");
    }
    dist_state.owns_mpi = !already;
    if (provided < MPI_THREAD_MULTIPLE) {
        plait_fail("the MPI library provides only %s, plait needs MPI_THREAD_MULTIPLE; use an MPI built "
                   "with thread support",
                   provided == MPI_THREAD_SERIALIZED ? "MPI_THREAD_SERIALIZED"
                   : provided == MPI_THREAD_FUNNELED ? "MPI_THREAD_FUNNELED"
                                                     : "MPI_THREAD_SINGLE");
        if (dist_state.owns_mpi) MPI_Finalize();
        dist_state.owns_mpi = false;
        return PLAIT_ERROR;
    }
    dist_state.uses_mpi = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &dist_state.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &dist_state.size);
    int *tag_ub = NULL, found = 0;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &found);
    if (found && tag_ub) dist_state.tag_ub = *tag_ub;
    if (dist_check(MPI_Comm_dup(MPI_COMM_WORLD, &dist_state.transfer_comm), "MPI_Comm_dup of the world") !=
        PLAIT_OK)
        return PLAIT_ERROR;
    MPI_Comm_set_errhandler(dist_state.transfer_comm, MPI_ERRORS_RETURN);
    MPI_Comm node = MPI_COMM_NULL;
    int node_size = 0;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) == MPI_SUCCESS) {
        MPI_Comm_size(node, &node_size);
        MPI_Comm_free(&node);
    }
    dist_state.one_node = node_size == dist_state.size;
    if (dist_heartbeat_start() != PLAIT_OK) return PLAIT_ERROR;
    dist_state.initialized = true;
    return PLAIT_OK;
}

int plait_dist_finalize(void) {
    if (!dist_state.initialized) return PLAIT_OK;
    int status = PLAIT_OK;
    if (dist_state.uses_mpi) {
        dist_transfers_shutdown();
        dist_heartbeat_stop();
        if (dist_state.transfer_comm != MPI_COMM_NULL) MPI_Comm_free(&dist_state.transfer_comm);
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized && dist_state.owns_mpi) status = dist_check(MPI_Finalize(), "MPI_Finalize");
    }
    dist_state = (dist_world){.rank = 0, .size = 1, .transfer_comm = MPI_COMM_NULL, .tag_ub = 32767};
    return status;
}

int plait_dist_rank(void) { return dist_state.rank; }
int plait_dist_size(void) { return dist_state.size; }
bool plait_dist_uses_mpi(void) { return dist_state.uses_mpi; }
void plait_dist_set_timeout(double seconds) { watchdog_timeout = seconds; }
double plait_dist_timeout(void) { return watchdog_timeout; }

void plait_dist_abort(const char *message) {
    fprintf(stderr, "plait: error: rank %d: %s\n", dist_state.rank, message);
    fflush(stderr);
    if (dist_state.uses_mpi) MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

void dist_poll_pause(long polls) {
    if (polls < 64) return;
    long nanoseconds = polls < 128 ? 10000 : polls < 256 ? 50000 : 200000;
    struct timespec pause = {0, nanoseconds};
    nanosleep(&pause, NULL);
}

/* The peer silent for longest, and for how long, within this wait. */
static int most_silent_peer(const int *peers, int peer_count, double wait_start, double now, double *silence) {
    int worst = -1;
    *silence = 0;
    int count = peers ? peer_count : dist_state.size;
    for (int i = 0; i < count; i++) {
        int rank = peers ? peers[i] : i;
        if (rank == dist_state.rank) continue;
        double heard = dist_heartbeat_last(rank);
        double quiet = now - (heard > wait_start ? heard : wait_start);
        if (worst < 0 || quiet > *silence) {
            worst = rank;
            *silence = quiet;
        }
    }
    return worst;
}

/* The watchdog's rule, for polled waits and watched blocking calls alike: writes the abort message and
 * returns true when a peer has been silent for more than `timeout` seconds of a wait begun at `start`. */
static bool peer_silent_too_long(const int *peers, int peer_count, double start, double timeout, const char *context,
                                 char *message, size_t size) {
    double silence;
    int silent = most_silent_peer(peers, peer_count, start, plait_now(), &silence);
    if (silent < 0 || silence <= timeout) return false;
    snprintf(message, size, "no message from rank %d for %g s while %s (did it die?)", silent, timeout, context);
    return true;
}

int dist_wait_request(MPI_Request *request, MPI_Status *status, double timeout, const int *peers,
                      int peer_count, const char *context) {
    double start = plait_now();
    for (long polls = 0;; polls++) {
        int done = 0;
        int code = MPI_Test(request, &done, status);
        if (code != MPI_SUCCESS) {
            char what[256];
            snprintf(what, sizeof what, "MPI error while %s", context);
            return dist_check(code, what);
        }
        if (done) return PLAIT_OK;
        char message[512];
        if (timeout > 0 && (polls & 15) == 15 &&
            peer_silent_too_long(peers, peer_count, start, timeout, context, message, sizeof message))
            plait_dist_abort(message);
        dist_poll_pause(polls);
    }
}

#define WATCH_SLOTS 64

static struct {
    pthread_mutex_t lock;
    struct {
        bool used;
        double start, timeout;
        const int *peers;
        int peer_count;
        char context[160];
    } slots[WATCH_SLOTS];
} watches = {.lock = PTHREAD_MUTEX_INITIALIZER};

int dist_watch_begin(const int *peers, int peer_count, double timeout, const char *context) {
    if (timeout <= 0) return -1;
    pthread_mutex_lock(&watches.lock);
    int slot = -1;
    for (int i = 0; i < WATCH_SLOTS && slot < 0; i++)
        if (!watches.slots[i].used) slot = i;
    if (slot >= 0) {
        watches.slots[slot].used = true;
        watches.slots[slot].start = plait_now();
        watches.slots[slot].timeout = timeout;
        watches.slots[slot].peers = peers;
        watches.slots[slot].peer_count = peer_count;
        snprintf(watches.slots[slot].context, sizeof watches.slots[slot].context, "%s", context);
    }
    pthread_mutex_unlock(&watches.lock);
    return slot;
}

void dist_watch_end(int slot) {
    if (slot < 0) return;
    pthread_mutex_lock(&watches.lock);
    watches.slots[slot].used = false;
    pthread_mutex_unlock(&watches.lock);
}

void dist_watch_check(void) {
    char message[512];
    bool abort_job = false;
    pthread_mutex_lock(&watches.lock);
    for (int i = 0; i < WATCH_SLOTS && !abort_job; i++)
        abort_job = watches.slots[i].used &&
                    peer_silent_too_long(watches.slots[i].peers, watches.slots[i].peer_count, watches.slots[i].start,
                                         watches.slots[i].timeout, watches.slots[i].context, message, sizeof message);
    pthread_mutex_unlock(&watches.lock);
    if (abort_job) plait_dist_abort(message);
}

int plait_dist_barrier(double timeout_seconds) {
    if (!dist_state.uses_mpi || dist_state.size == 1) return PLAIT_OK;
    MPI_Request request;
    if (dist_check(MPI_Ibarrier(dist_state.transfer_comm, &request), "MPI_Ibarrier") != PLAIT_OK)
        return PLAIT_ERROR;
    double timeout = timeout_seconds > 0 ? timeout_seconds : watchdog_timeout;
    return dist_wait_request(&request, MPI_STATUS_IGNORE, timeout, NULL, 0, "in a barrier");
}
