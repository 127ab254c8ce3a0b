/* Bucketed gradient all-reduce among a stage's replicas on K stream threads, overlapping backward. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist_internal.h"

typedef enum { BUCKET_PENDING, BUCKET_READY, BUCKET_DONE } bucket_state;

typedef struct bucket {
    int first, count; /* parameters [first, first + count) in readiness order */
    size_t floats;
    float *in_place; /* start of the bucket's gradients when they are one contiguous range */
    float *packed;   /* staging buffer otherwise */
    int remaining;   /* parameters not marked yet in this step */
    bucket_state state;
    double started, finished;
} bucket;

typedef struct stream {
    plait_grad_sync *sync;
    int index;
    MPI_Comm comm;
    pthread_t thread;
    bool thread_started;
    pthread_cond_t ready;
} stream;

struct plait_grad_sync {
    int params;
    float **grads;
    size_t *counts;
    int *bucket_of;
    bool *marked;
    int bucket_count, stream_count;
    bucket *buckets;
    stream *streams;
    bool active; /* more than one replica */
    int replicas;
    bool sum;
    bool polled; /* MPI_Iallreduce polled instead of barrier + blocking all-reduce */
    int *peers; /* world ranks of the replicas, for the watchdog */
    pthread_mutex_t lock;
    pthread_cond_t all_done;
    int done_count;
    bool shutdown, failed;
    char error[512];
};

/* MPI counts are int: very large buckets go in pieces. */
#define REDUCE_PIECE ((size_t)1 << 30)

/* Blocking (default): each piece waits for the replicas with a non-blocking barrier polled between
 * naps (a replica that is behind costs this core nothing while it catches up), then runs the
 * blocking all-reduce, whose tuned algorithms moved 20 MiB 2-3x faster than MPI_Iallreduce driven by
 * MPI_Test between naps (2 ranks, one node); it spins only while the data moves, and the heartbeat
 * thread watches it for silent peers. Polled (PLAIT_ALLREDUCE=polled): MPI_Iallreduce polled. */
static int reduce_range(plait_grad_sync *sync, stream *st, int index, float *data, size_t floats) {
    for (size_t offset = 0; offset < floats; offset += REDUCE_PIECE) {
        size_t n = floats - offset < REDUCE_PIECE ? floats - offset : REDUCE_PIECE;
        MPI_Request request;
        char context[128];
        snprintf(context, sizeof context, "all-reducing gradient bucket %d (%zu floats) on stream %d", index, floats,
                 st->index);
        int code = sync->polled ? MPI_Iallreduce(MPI_IN_PLACE, data + offset, (int)n, MPI_FLOAT, MPI_SUM, st->comm,
                                                 &request)
                                : MPI_Ibarrier(st->comm, &request);
        if (dist_check(code, context) != PLAIT_OK) return PLAIT_ERROR;
        if (dist_wait_request(&request, MPI_STATUS_IGNORE, plait_dist_timeout(), sync->peers, sync->replicas,
                              context) != PLAIT_OK)
            return PLAIT_ERROR;
        if (sync->polled) continue;
        int watch = dist_watch_begin(sync->peers, sync->replicas, plait_dist_timeout(), context);
        code = MPI_Allreduce(MPI_IN_PLACE, data + offset, (int)n, MPI_FLOAT, MPI_SUM, st->comm);
        dist_watch_end(watch);
        if (dist_check(code, context) != PLAIT_OK) return PLAIT_ERROR;
    }
    return PLAIT_OK;
}

static int bucket_reduce(plait_grad_sync *sync, stream *st, int index) {
    bucket *b = &sync->buckets[index];
    float scale = sync->sum ? 1.0f : 1.0f / (float)sync->replicas;
    if (b->in_place) {
        if (reduce_range(sync, st, index, b->in_place, b->floats) != PLAIT_OK) return PLAIT_ERROR;
        if (scale != 1.0f)
            for (size_t i = 0; i < b->floats; i++) b->in_place[i] *= scale;
        return PLAIT_OK;
    }
    size_t offset = 0;
    for (int p = b->first; p < b->first + b->count; p++) {
        memcpy(b->packed + offset, sync->grads[p], sync->counts[p] * sizeof(float));
        offset += sync->counts[p];
    }
    if (reduce_range(sync, st, index, b->packed, b->floats) != PLAIT_OK) return PLAIT_ERROR;
    offset = 0;
    for (int p = b->first; p < b->first + b->count; p++) {
        float *g = sync->grads[p];
        for (size_t i = 0; i < sync->counts[p]; i++) g[i] = b->packed[offset + i] * scale;
        offset += sync->counts[p];
    }
    return PLAIT_OK;
}

/* A stream takes its buckets (index, index + K, ...) in order, so every replica issues the same
 * collectives in the same order on this stream's communicator whatever order backward marks them. */
static void *stream_main(void *argument) {
    stream *st = argument;
    plait_grad_sync *sync = st->sync;
    for (;;) {
        for (int index = st->index; index < sync->bucket_count; index += sync->stream_count) {
            bucket *b = &sync->buckets[index];
            pthread_mutex_lock(&sync->lock);
            while (b->state != BUCKET_READY && !sync->shutdown) pthread_cond_wait(&st->ready, &sync->lock);
            bool stop = sync->shutdown;
            pthread_mutex_unlock(&sync->lock);
            if (stop) return NULL;
            double started = plait_now();
            int status = b->floats > 0 ? bucket_reduce(sync, st, index) : PLAIT_OK;
            double finished = plait_now();
            pthread_mutex_lock(&sync->lock);
            b->started = started;
            b->finished = finished;
            b->state = BUCKET_DONE;
            if (status != PLAIT_OK && !sync->failed) {
                sync->failed = true;
                snprintf(sync->error, sizeof sync->error, "%s", plait_last_error());
            }
            if (++sync->done_count == sync->bucket_count) pthread_cond_broadcast(&sync->all_done);
            pthread_mutex_unlock(&sync->lock);
        }
    }
}

typedef struct span {
    float *start;
    size_t count;
} span;

static int compare_spans(const void *a, const void *b) {
    const float *x = ((const span *)a)->start, *y = ((const span *)b)->start;
    return x < y ? -1 : x > y;
}

size_t plait_grad_bucket_limit(int from_last, size_t bucket_bytes) {
    size_t limit = bucket_bytes < PLAIT_GRAD_TAIL_BYTES ? bucket_bytes : PLAIT_GRAD_TAIL_BYTES;
    for (int k = 0; k < from_last && limit < bucket_bytes; k++) limit *= 2;
    return limit < bucket_bytes ? limit : bucket_bytes;
}

/* Filled from the last parameter to become ready, so the tail's small limits land at the end of backward. */
int plait_grad_bucket_plan(int params, const size_t *counts, size_t bucket_bytes, int *bucket_of) {
    size_t floats = 0, limit = plait_grad_bucket_limit(0, bucket_bytes) / sizeof(float);
    int from_last = -1;
    for (int p = params - 1; p >= 0; p--) {
        if (from_last < 0 || floats + counts[p] > limit) {
            from_last++;
            floats = 0;
            limit = plait_grad_bucket_limit(from_last, bucket_bytes) / sizeof(float);
        }
        floats += counts[p];
        bucket_of[p] = from_last;
    }
    int buckets = from_last + 1;
    for (int p = 0; p < params; p++) bucket_of[p] = buckets - 1 - bucket_of[p];
    return buckets;
}

/* A bucket reduces in place when its gradients, sorted by address, follow each other without gaps. */
static int plan_buckets(plait_grad_sync *sync, size_t bucket_bytes) {
    sync->buckets = calloc((size_t)sync->params + 1, sizeof(bucket));
    span *spans = malloc(((size_t)sync->params + 1) * sizeof(span));
    if (!sync->buckets || !spans) {
        free(spans);
        return plait_fail("out of memory planning gradient buckets");
    }
    int count = plait_grad_bucket_plan(sync->params, sync->counts, bucket_bytes, sync->bucket_of);
    for (int p = 0; p < sync->params; p++) {
        bucket *b = &sync->buckets[sync->bucket_of[p]];
        if (b->count++ == 0) b->first = p;
        b->floats += sync->counts[p];
    }
    sync->bucket_count = count;
    int status = PLAIT_OK;
    for (int index = 0; index < count && status == PLAIT_OK; index++) {
        bucket *b = &sync->buckets[index];
        b->remaining = b->count;
        int n = 0;
        for (int p = b->first; p < b->first + b->count; p++)
            if (sync->counts[p] > 0) spans[n++] = (span){sync->grads[p], sync->counts[p]};
        qsort(spans, (size_t)n, sizeof(span), compare_spans);
        bool contiguous = n > 0;
        for (int i = 1; i < n && contiguous; i++)
            contiguous = spans[i].start == spans[i - 1].start + spans[i - 1].count;
        if (contiguous) {
            b->in_place = spans[0].start;
        } else if (b->floats > 0 && sync->active) {
            b->packed = plait_alloc(b->floats * sizeof(float));
            if (!b->packed) status = PLAIT_ERROR;
        }
    }
    free(spans);
    return status;
}

/* Every replica must bucket the same gradients the same way, or the collectives would mismatch. */
static int check_replicas_agree(plait_grad_sync *sync, MPI_Comm comm) {
    size_t total = 0;
    for (int p = 0; p < sync->params; p++) total += sync->counts[p];
    long values[6] = {sync->params, (long)total, sync->bucket_count};
    for (int i = 0; i < 3; i++) values[3 + i] = -values[i];
    MPI_Request request;
    if (dist_check(MPI_Iallreduce(MPI_IN_PLACE, values, 6, MPI_LONG, MPI_MAX, comm, &request),
                   "checking the gradient layouts of the replicas") != PLAIT_OK)
        return PLAIT_ERROR;
    if (dist_wait_request(&request, MPI_STATUS_IGNORE, plait_dist_timeout(), sync->peers, sync->replicas,
                          "checking the gradient layouts of the replicas") != PLAIT_OK)
        return PLAIT_ERROR;
    for (int i = 0; i < 3; i++)
        if (values[i] != -values[3 + i])
            return plait_fail("rank %d: replicas disagree on the gradients to synchronize (parameters %d, "
                              "floats %zu, buckets %d here)",
                              dist_state.rank, sync->params, total, sync->bucket_count);
    return PLAIT_OK;
}

static int find_peers(plait_grad_sync *sync, MPI_Comm comm) {
    sync->peers = calloc((size_t)sync->replicas, sizeof(int));
    if (!sync->peers) return plait_fail("out of memory creating gradient sync");
    MPI_Group group, world;
    MPI_Comm_group(comm, &group);
    MPI_Comm_group(MPI_COMM_WORLD, &world);
    for (int i = 0; i < sync->replicas; i++) MPI_Group_translate_ranks(group, 1, &i, world, &sync->peers[i]);
    MPI_Group_free(&group);
    MPI_Group_free(&world);
    return PLAIT_OK;
}

int plait_grad_sync_create(MPI_Comm replica_comm, int params, float *const *grads, const size_t *counts,
                           const plait_grad_sync_config *config, plait_grad_sync **out) {
    *out = NULL;
    plait_grad_sync_config defaults = {0};
    if (!config) config = &defaults;
    size_t bucket_bytes = config->bucket_bytes ? config->bucket_bytes : (size_t)4 << 20;
    int streams = config->streams ? config->streams : 2;
    if (params < 0) return plait_fail("negative parameter count %d", params);
    if (streams < 1 || streams > 64) return plait_fail("gradient sync needs 1 to 64 streams, not %d", streams);
    if (bucket_bytes < sizeof(float)) return plait_fail("bucket size %zu bytes is too small", bucket_bytes);
    for (int p = 0; p < params; p++)
        if (counts[p] > 0 && !grads[p]) return plait_fail("gradient %d has %zu floats but no memory", p, counts[p]);
    plait_grad_sync *sync = calloc(1, sizeof *sync);
    if (!sync) return plait_fail("out of memory creating gradient sync");
    sync->params = params;
    sync->sum = config->sum;
    sync->polled = dist_state.allreduce_polled;
    sync->replicas = 1;
    if (dist_state.uses_mpi && replica_comm != MPI_COMM_NULL) MPI_Comm_size(replica_comm, &sync->replicas);
    sync->active = sync->replicas > 1;
    pthread_mutex_init(&sync->lock, NULL);
    pthread_cond_init(&sync->all_done, NULL);
    size_t n = (size_t)params + 1;
    sync->grads = calloc(n, sizeof(float *));
    sync->counts = calloc(n, sizeof(size_t));
    sync->bucket_of = calloc(n, sizeof(int));
    sync->marked = calloc(n, sizeof(bool));
    if (!sync->grads || !sync->counts || !sync->bucket_of || !sync->marked) {
        plait_grad_sync_free(sync);
        return plait_fail("out of memory creating gradient sync");
    }
    for (int p = 0; p < params; p++) {
        sync->grads[p] = grads[p];
        sync->counts[p] = counts[p];
    }
    if (plan_buckets(sync, bucket_bytes) != PLAIT_OK) {
        plait_grad_sync_free(sync);
        return PLAIT_ERROR;
    }
    if (!sync->active) {
        *out = sync;
        return PLAIT_OK;
    }
    if (find_peers(sync, replica_comm) != PLAIT_OK || check_replicas_agree(sync, replica_comm) != PLAIT_OK) {
        plait_grad_sync_free(sync);
        return PLAIT_ERROR;
    }
    sync->stream_count = streams < sync->bucket_count ? streams : sync->bucket_count;
    sync->streams = calloc((size_t)sync->stream_count + 1, sizeof(stream));
    if (!sync->streams) {
        plait_grad_sync_free(sync);
        return plait_fail("out of memory creating gradient sync");
    }
    for (int k = 0; k < sync->stream_count; k++) {
        stream *st = &sync->streams[k];
        st->sync = sync;
        st->index = k;
        st->comm = MPI_COMM_NULL;
        pthread_cond_init(&st->ready, NULL);
    }
    for (int k = 0; k < sync->stream_count; k++) {
        stream *st = &sync->streams[k];
        if (dist_check(MPI_Comm_dup(replica_comm, &st->comm), "MPI_Comm_dup for a gradient stream") != PLAIT_OK) {
            plait_grad_sync_free(sync);
            return PLAIT_ERROR;
        }
        MPI_Comm_set_errhandler(st->comm, MPI_ERRORS_RETURN);
        if (pthread_create(&st->thread, NULL, stream_main, st) != 0) {
            plait_grad_sync_free(sync);
            return plait_fail("could not start gradient stream thread %d", k);
        }
        st->thread_started = true;
    }
    *out = sync;
    return PLAIT_OK;
}

void plait_grad_sync_free(plait_grad_sync *sync) {
    if (!sync) return;
    pthread_mutex_lock(&sync->lock);
    sync->shutdown = true;
    for (int k = 0; k < sync->stream_count; k++)
        if (sync->streams) pthread_cond_broadcast(&sync->streams[k].ready);
    pthread_mutex_unlock(&sync->lock);
    for (int k = 0; k < sync->stream_count && sync->streams; k++) {
        stream *st = &sync->streams[k];
        if (st->thread_started) pthread_join(st->thread, NULL);
        if (st->comm != MPI_COMM_NULL) MPI_Comm_free(&st->comm);
        pthread_cond_destroy(&st->ready);
    }
    if (sync->buckets)
        for (int b = 0; b < sync->bucket_count; b++) plait_free(sync->buckets[b].packed);
    pthread_cond_destroy(&sync->all_done);
    pthread_mutex_destroy(&sync->lock);
    free(sync->streams);
    free(sync->buckets);
    free(sync->grads);
    free(sync->counts);
    free(sync->bucket_of);
    free(sync->marked);
    free(sync->peers);
    free(sync);
}

int plait_grad_sync_bucket_count(const plait_grad_sync *sync) { return sync->bucket_count; }

int plait_grad_sync_bucket_of(const plait_grad_sync *sync, int param) {
    return param >= 0 && param < sync->params ? sync->bucket_of[param] : -1;
}

/* Called with the lock held. */
static void mark_locked(plait_grad_sync *sync, int param) {
    sync->marked[param] = true;
    bucket *b = &sync->buckets[sync->bucket_of[param]];
    if (--b->remaining == 0 && sync->active) {
        b->state = BUCKET_READY;
        pthread_cond_signal(&sync->streams[sync->bucket_of[param] % sync->stream_count].ready);
    }
}

int plait_grad_sync_mark_ready(plait_grad_sync *sync, int param) {
    if (param < 0 || param >= sync->params)
        return plait_fail("parameter %d is out of range (0 to %d)", param, sync->params - 1);
    pthread_mutex_lock(&sync->lock);
    bool twice = sync->marked[param];
    if (!twice) mark_locked(sync, param);
    pthread_mutex_unlock(&sync->lock);
    if (twice) return plait_fail("parameter %d was marked ready twice in one step", param);
    return PLAIT_OK;
}

int plait_grad_sync_mark_bucket_ready(plait_grad_sync *sync, int bucket_index) {
    if (bucket_index < 0 || bucket_index >= sync->bucket_count)
        return plait_fail("bucket %d is out of range (0 to %d)", bucket_index, sync->bucket_count - 1);
    const bucket *b = &sync->buckets[bucket_index];
    pthread_mutex_lock(&sync->lock);
    bool complete = b->remaining == 0;
    for (int p = b->first; p < b->first + b->count && !complete; p++)
        if (!sync->marked[p]) mark_locked(sync, p);
    pthread_mutex_unlock(&sync->lock);
    if (complete) return plait_fail("bucket %d was marked ready twice in one step", bucket_index);
    return PLAIT_OK;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Length of the union of the buckets' [started, finished] intervals, and its part before `cut`. */
static void union_of_intervals(const plait_grad_sync *sync, double cut, double *total, double *before_cut) {
    double *pairs = malloc(((size_t)sync->bucket_count + 1) * 2 * sizeof(double));
    *total = *before_cut = 0;
    if (!pairs) return;
    int n = 0;
    for (int b = 0; b < sync->bucket_count; b++)
        if (sync->buckets[b].floats > 0) {
            pairs[2 * n] = sync->buckets[b].started;
            pairs[2 * n + 1] = sync->buckets[b].finished;
            n++;
        }
    qsort(pairs, (size_t)n, 2 * sizeof(double), compare_doubles); /* by start */
    double run_start = 0, run_end = -1;
    for (int i = 0; i <= n; i++) {
        if (i < n && pairs[2 * i] <= run_end) {
            if (pairs[2 * i + 1] > run_end) run_end = pairs[2 * i + 1];
            continue;
        }
        if (run_end >= run_start && i > 0) {
            *total += run_end - run_start;
            double end_before = run_end < cut ? run_end : cut;
            if (end_before > run_start) *before_cut += end_before - run_start;
        }
        if (i < n) {
            run_start = pairs[2 * i];
            run_end = pairs[2 * i + 1];
        }
    }
    free(pairs);
}

int plait_grad_sync_wait_all(plait_grad_sync *sync, plait_grad_sync_times *times) {
    double called = plait_now();
    pthread_mutex_lock(&sync->lock);
    for (int p = 0; p < sync->params; p++)
        if (!sync->marked[p]) mark_locked(sync, p);
    if (sync->active)
        while (sync->done_count < sync->bucket_count) pthread_cond_wait(&sync->all_done, &sync->lock);
    double returned = plait_now();
    plait_grad_sync_times measured = {.buckets = sync->bucket_count};
    if (sync->active) {
        union_of_intervals(sync, called, &measured.communication, &measured.hidden);
        measured.exposed = returned - called;
    }
    for (int b = 0; b < sync->bucket_count; b++) {
        sync->buckets[b].state = BUCKET_PENDING;
        sync->buckets[b].remaining = sync->buckets[b].count;
    }
    memset(sync->marked, 0, (size_t)sync->params * sizeof(bool));
    sync->done_count = 0;
    bool failed = sync->failed;
    char error[512];
    snprintf(error, sizeof error, "%s", sync->error);
    sync->failed = false;
    pthread_mutex_unlock(&sync->lock);
    if (times) *times = measured;
    if (failed) return plait_fail("%s", error);
    return PLAIT_OK;
}
