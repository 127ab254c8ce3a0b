/* Point-to-point transfers of activations, gradients and labels between pipeline stages. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "dist/dist_internal.h"

static const char *kind_names[PLAIT_DIST_KINDS] = {"activation", "gradient", "labels"};

/* Open MPI moves a large message over TCP only while one of the two processes is inside an MPI call,
 * so a send would otherwise wait for the executor's next test or wait, after its computation. While
 * transfers are pending, a progress thread calls MPI_Iprobe (which drives Open MPI's progress engine)
 * so that transfers overlap computation. Its pause starts short when a transfer starts and doubles up
 * to a cap while none starts: a message is moved within a few polls, and a receive posted far ahead
 * does not wake the thread thousands of times a second, which on a machine whose cores all compute
 * takes each wake-up from another rank's computation. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    bool started, stop;
    int pending;
    unsigned long starts; /* transfers started so far: a new one resets the pause */
    long pause_nanoseconds, max_pause_nanoseconds;
} progress = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};

static void *progress_main(void *unused) {
    (void)unused;
    unsigned long seen = 0;
    long pause = progress.pause_nanoseconds;
    for (;;) {
        pthread_mutex_lock(&progress.lock);
        while (!progress.stop && progress.pending == 0) pthread_cond_wait(&progress.wake, &progress.lock);
        bool stop = progress.stop;
        if (progress.starts != seen) {
            seen = progress.starts;
            pause = progress.pause_nanoseconds;
        }
        pthread_mutex_unlock(&progress.lock);
        if (stop) return NULL;
        int flag = 0;
        MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, dist_state.transfer_comm, &flag, MPI_STATUS_IGNORE);
        struct timespec sleep_for = {pause / 1000000000L, pause % 1000000000L};
        nanosleep(&sleep_for, NULL);
        pause = pause * 2 < progress.max_pause_nanoseconds ? pause * 2 : progress.max_pause_nanoseconds;
    }
}

static long env_microseconds(const char *name, long fallback) {
    const char *text = getenv(name);
    return text && *text ? strtol(text, NULL, 10) : fallback;
}

/* PLAIT_DIST_PROGRESS_US sets the first pause after a transfer starts (default 50; 0 turns the thread
 * off), PLAIT_DIST_PROGRESS_MAX_US the longest (default 1000). Without PLAIT_DIST_PROGRESS_US the thread
 * runs only when the ranks span several nodes: over shared memory the receiver copies a large message
 * itself when it waits, and the thread's wake-ups only take time from computation. */
static void transfer_started(void) {
    pthread_mutex_lock(&progress.lock);
    progress.pending++;
    progress.starts++;
    if (!progress.started) {
        long microseconds = env_microseconds("PLAIT_DIST_PROGRESS_US", dist_state.one_node ? 0 : 50);
        long longest = env_microseconds("PLAIT_DIST_PROGRESS_MAX_US", 1000);
        if (longest < microseconds) longest = microseconds;
        if (microseconds > 0 && longest < 1000000) {
            progress.pause_nanoseconds = microseconds * 1000;
            progress.max_pause_nanoseconds = longest * 1000;
            progress.stop = false;
            progress.started = pthread_create(&progress.thread, NULL, progress_main, NULL) == 0;
        }
    }
    pthread_cond_signal(&progress.wake);
    pthread_mutex_unlock(&progress.lock);
}

static void transfer_ended(void) {
    pthread_mutex_lock(&progress.lock);
    if (progress.pending > 0) progress.pending--;
    pthread_mutex_unlock(&progress.lock);
}

void dist_transfers_shutdown(void) {
    pthread_mutex_lock(&progress.lock);
    bool started = progress.started;
    progress.stop = true;
    pthread_cond_broadcast(&progress.wake);
    pthread_mutex_unlock(&progress.lock);
    if (started) pthread_join(progress.thread, NULL);
    progress.started = false;
    progress.pending = 0;
}

int plait_dist_tag(plait_dist_kind kind, int micro_batch) {
    int slots = dist_state.tag_ub / PLAIT_DIST_KINDS; /* tags 0 .. tag_ub */
    if (micro_batch < 0) micro_batch = 0;
    return (int)kind + PLAIT_DIST_KINDS * (micro_batch % slots);
}

static MPI_Datatype kind_type(plait_dist_kind kind) { return kind == PLAIT_DIST_LABELS ? MPI_INT32_T : MPI_FLOAT; }

static int check_transfer(const plait_dist_transfer *t, plait_dist_kind kind, int micro_batch, int peer,
                          size_t count, const char *verb) {
    if (!dist_state.uses_mpi)
        return plait_fail("cannot %s %s without MPI (world size 1)", verb, (unsigned)kind < PLAIT_DIST_KINDS
                                                                              ? kind_names[kind]
                                                                              : "data");
    if (t->active) return plait_fail("rank %d: this transfer is still pending", dist_state.rank);
    if ((unsigned)kind >= PLAIT_DIST_KINDS) return plait_fail("unknown transfer kind %d", (int)kind);
    if (micro_batch < 0) return plait_fail("negative micro-batch %d", micro_batch);
    if (peer < 0 || peer >= dist_state.size || peer == dist_state.rank)
        return plait_fail("rank %d cannot %s %s with rank %d (world of %d ranks)", dist_state.rank, verb,
                          kind_names[kind], peer, dist_state.size);
    if (count > INT_MAX)
        return plait_fail("%s of %zu elements is more than one MPI message holds", kind_names[kind], count);
    return PLAIT_OK;
}

static void describe(const plait_dist_transfer *t, char *context, size_t context_size) {
    snprintf(context, context_size, "%s %s of micro-batch %d", t->is_receive ? "receiving the" : "sending the",
             kind_names[t->kind], t->micro_batch);
}

int plait_dist_post_recv(plait_dist_transfer *t, plait_dist_kind kind, int micro_batch, int from_rank,
                         void *buffer, size_t capacity) {
    if (check_transfer(t, kind, micro_batch, from_rank, capacity, "receive") != PLAIT_OK) return PLAIT_ERROR;
    *t = (plait_dist_transfer){.kind = kind, .micro_batch = micro_batch, .peer = from_rank,
                               .tag = plait_dist_tag(kind, micro_batch), .is_receive = true, .count = capacity};
    char what[96];
    snprintf(what, sizeof what, "MPI_Irecv of the %s of micro-batch %d from rank %d", kind_names[kind],
             micro_batch, from_rank);
    if (dist_check(MPI_Irecv(buffer, (int)capacity, kind_type(kind), from_rank, t->tag, dist_state.transfer_comm,
                             &t->request),
                   what) != PLAIT_OK)
        return PLAIT_ERROR;
    t->active = true;
    transfer_started();
    return PLAIT_OK;
}

int plait_dist_isend(plait_dist_transfer *t, plait_dist_kind kind, int micro_batch, int to_rank,
                     const void *buffer, size_t count) {
    if (check_transfer(t, kind, micro_batch, to_rank, count, "send") != PLAIT_OK) return PLAIT_ERROR;
    *t = (plait_dist_transfer){.kind = kind, .micro_batch = micro_batch, .peer = to_rank,
                               .tag = plait_dist_tag(kind, micro_batch), .is_receive = false, .count = count};
    char what[96];
    snprintf(what, sizeof what, "MPI_Isend of the %s of micro-batch %d to rank %d", kind_names[kind], micro_batch,
             to_rank);
    if (dist_check(MPI_Isend(buffer, (int)count, kind_type(kind), to_rank, t->tag, dist_state.transfer_comm,
                             &t->request),
                   what) != PLAIT_OK)
        return PLAIT_ERROR;
    t->active = true;
    transfer_started();
    return PLAIT_OK;
}

static int finish(plait_dist_transfer *t, MPI_Status *status) {
    t->active = false;
    transfer_ended();
    if (!t->is_receive) return PLAIT_OK;
    int received = 0;
    MPI_Get_count(status, kind_type(t->kind), &received);
    t->count = received < 0 ? 0 : (size_t)received;
    return PLAIT_OK;
}

int plait_dist_test(plait_dist_transfer *t, bool *done) {
    *done = true;
    if (!t->active) return PLAIT_OK;
    MPI_Status status;
    int flag = 0;
    char context[96];
    describe(t, context, sizeof context);
    if (dist_check(MPI_Test(&t->request, &flag, &status), context) != PLAIT_OK) {
        t->active = false;
        transfer_ended();
        return PLAIT_ERROR;
    }
    *done = flag != 0;
    return flag ? finish(t, &status) : PLAIT_OK;
}

int plait_dist_wait(plait_dist_transfer *t) {
    if (!t->active) return PLAIT_OK;
    MPI_Status status;
    char context[96];
    describe(t, context, sizeof context);
    if (dist_wait_request(&t->request, &status, plait_dist_timeout(), &t->peer, 1, context) != PLAIT_OK) {
        t->active = false;
        transfer_ended();
        return PLAIT_ERROR;
    }
    return finish(t, &status);
}
