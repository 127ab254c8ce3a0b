/* The search: rank the schedule space with the cost model and measure the best few; then search locally
 * around the fastest schedule measured (or the default), measuring its neighbours in the space; then measure
 * the fastest of all those again against the default in a run-off, and keep its winner. */
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "kernels/direct/direct.h"

enum { SPACE_CAPACITY = 8192, MAX_SWEEP = 64, MAX_MEASURED = 2 * MAX_SWEEP };

typedef struct ranked {
    plait_conv_schedule schedule;
    double predicted, measured;
} ranked;

static int by_prediction(const void *a, const void *b) {
    double x = ((const ranked *)a)->predicted, y = ((const ranked *)b)->predicted;
    return (x > y) - (x < y);
}

typedef struct buffers {
    float *x, *y, *w, *out;
    void *workspace;
} buffers;

static void run_once(const plait_conv2d_desc *d, plait_conv_direction direction, const plait_conv_schedule *s,
                     const buffers *b) {
    if (direction == PLAIT_CONV_FORWARD) plait_direct_forward(d, s, b->x, b->w, b->y, b->workspace);
    if (direction == PLAIT_CONV_BACKWARD_DATA) plait_direct_backward_data(d, s, b->y, b->w, b->x, b->workspace);
    if (direction == PLAIT_CONV_BACKWARD_WEIGHTS) plait_direct_backward_weights(d, s, b->x, b->y, b->w, b->workspace);
}

/* Best of a few runs after a warm-up; fewer runs for slow layers so tuning stays short. */
static double measure(const plait_conv2d_desc *d, plait_conv_direction direction, const plait_conv_schedule *s,
                      const buffers *b) {
    double start = plait_now();
    run_once(d, direction, s, b);
    double first = plait_now() - start, best = first;
    int runs = first > 0.05 ? 1 : first > 0.01 ? 3 : 5;
    for (int i = 0; i < runs; i++) {
        double t0 = plait_now();
        run_once(d, direction, s, b);
        double t = plait_now() - t0;
        if (t < best) best = t;
    }
    return best;
}

/* Rank of each value, ties sharing their average rank. */
static void ranks_of(const double *v, double *rank, int n) {
    for (int i = 0; i < n; i++) {
        int below = 0, equal = 0;
        for (int j = 0; j < n; j++) {
            below += v[j] < v[i];
            equal += v[j] == v[i];
        }
        rank[i] = below + (equal - 1) / 2.0;
    }
}

/* Spearman's rank correlation: Pearson's correlation of the ranks (0 when either side is constant). */
static double spearman(const double *a, const double *b, int n) {
    double ra[MAX_SWEEP], rb[MAX_SWEEP];
    if (n < 2) return 0;
    ranks_of(a, ra, n);
    ranks_of(b, rb, n);
    double mean = (n - 1) / 2.0, sab = 0, saa = 0, sbb = 0;
    for (int i = 0; i < n; i++) {
        sab += (ra[i] - mean) * (rb[i] - mean);
        saa += (ra[i] - mean) * (ra[i] - mean);
        sbb += (rb[i] - mean) * (rb[i] - mean);
    }
    return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : 0;
}

/* The run-off. On a shared machine one sweep's timings are noisy enough that its fastest schedule is often
 * fastest by luck (bench_conv showed tuned schedules 10-30% slower than the default they had beaten). So
 * the default, im2col + BLAS and the sweep's RUNOFF_CHALLENGERS fastest are measured again, interleaved,
 * over RUNOFF_ROUNDS rounds, each keeping its best; a challenger replaces the default only when it is
 * RUNOFF_MARGIN faster, and both times reported come from the run-off. */
enum { RUNOFF_CHALLENGERS = 3, RUNOFF_ROUNDS = 3 };
#define RUNOFF_MARGIN 0.97

static void runoff(const plait_conv2d_desc *d, plait_conv_direction direction, const buffers *b,
                   plait_tune_result *result, const plait_conv_schedule *im2col, const ranked *list,
                   const int *picked, const double *seconds, int measured) {
    plait_conv_schedule entrants[2 + RUNOFF_CHALLENGERS];
    int n = 0;
    entrants[n++] = result->fallback;
    int im2col_entrant = 0; /* the default itself where the default is im2col + BLAS */
    if (im2col && memcmp(im2col, &result->fallback, sizeof *im2col) != 0) {
        im2col_entrant = n;
        entrants[n++] = *im2col;
    }
    bool taken[MAX_MEASURED] = {false};
    for (int c = 0; c < RUNOFF_CHALLENGERS; c++) {
        int fastest = -1;
        for (int i = 0; i < measured; i++)
            if (!taken[i] && (fastest < 0 || seconds[i] < seconds[fastest])) fastest = i;
        if (fastest < 0) break;
        taken[fastest] = true;
        const plait_conv_schedule *s = &list[picked[fastest]].schedule;
        bool seen = false;
        for (int e = 0; e < n; e++) seen = seen || memcmp(&entrants[e], s, sizeof *s) == 0;
        if (!seen) entrants[n++] = *s;
    }
    double best[2 + RUNOFF_CHALLENGERS];
    for (int e = 0; e < n; e++) best[e] = INFINITY;
    /* the default alone (a space of the default alone) has nothing to run off: timed once */
    for (int round = 0; round < (n > 1 ? RUNOFF_ROUNDS : 1); round++)
        for (int e = 0; e < n; e++) {
            double t = measure(d, direction, &entrants[e], b);
            if (t < best[e]) best[e] = t;
        }
    int winner = 0;
    for (int e = 1; e < n; e++)
        if (best[e] < best[winner]) winner = e;
    if (best[winner] > RUNOFF_MARGIN * best[0]) winner = 0;
    result->default_seconds = best[0];
    if (im2col) result->im2col_seconds = best[im2col_entrant];
    result->best = entrants[winner];
    result->best_seconds = best[winner];
}

/* Fields in which two schedules differ (every field is an int). */
static int fields_apart(const plait_conv_schedule *a, const plait_conv_schedule *b) {
    int fields[sizeof *a / sizeof(int)], others[sizeof *a / sizeof(int)], apart = 0;
    memcpy(fields, a, sizeof fields);
    memcpy(others, b, sizeof others);
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) apart += fields[i] != others[i];
    return apart;
}

/* The local search. The cost model orders some spaces poorly (strided layers: rank correlation -0.7 to 0.5 on
 * ResNet-18), so its favourites can all miss a schedule one or two fields away from the default that runs
 * faster. From the fastest schedule measured so far (the default among them), the unmeasured schedules of the
 * space that differ from it in one field are measured in the model's order, then those that differ in two;
 * the search moves to any that runs LOCAL_MARGIN faster and goes on from there, until `budget` schedules are
 * measured or none is left near the current one. Returns the count measured, appended to picked and seconds. */
#define LOCAL_MARGIN 0.98
static int local_search(const plait_conv2d_desc *d, plait_conv_direction direction, const buffers *b,
                        const ranked *list, int count, bool *done, const plait_conv_schedule *start,
                        double start_seconds, int budget, int *picked, double *seconds) {
    plait_conv_schedule current = *start;
    double current_seconds = start_seconds;
    int measured = 0;
    while (measured < budget) {
        int distance = 1, next = -1;
        for (; distance <= 2 && next < 0; distance++)
            for (int i = 0; i < count && next < 0; i++)
                if (!done[i] && fields_apart(&list[i].schedule, &current) == distance) next = i;
        if (next < 0) break;
        distance--;
        /* every unmeasured neighbour at this distance (model order), then move to the fastest if it wins */
        int fastest = -1;
        for (int i = next; i < count && measured < budget; i++) {
            if (done[i] || fields_apart(&list[i].schedule, &current) != distance) continue;
            done[i] = true;
            picked[measured] = i;
            seconds[measured] = measure(d, direction, &list[i].schedule, b);
            if (fastest < 0 || seconds[measured] < seconds[fastest]) fastest = measured;
            measured++;
        }
        if (fastest >= 0 && seconds[fastest] < LOCAL_MARGIN * current_seconds) {
            current = list[picked[fastest]].schedule;
            current_seconds = seconds[fastest];
        }
    }
    return measured;
}

int plait_conv_tune(const plait_conv2d_desc *d, plait_conv_direction direction, int measure_count,
                    plait_tune_result *result) {
    memset(result, 0, sizeof *result);
    if (!plait_direct_supports(d)) return plait_fail("direct kernels do not support this convolution");
    result->fallback = plait_conv_default_schedule(d, direction);
    result->best = result->fallback;
    plait_conv_schedule *space = malloc(SPACE_CAPACITY * sizeof *space);
    ranked *list = malloc(SPACE_CAPACITY * sizeof *list);
    int oh = direct_out_size(d->in_h, d->kernel_h, d->stride_h, d->pad_h);
    int ow = direct_out_size(d->in_w, d->kernel_w, d->stride_w, d->pad_w);
    size_t nx = (size_t)d->batch * d->in_h * d->in_w * d->in_channels;
    size_t ny = (size_t)d->batch * oh * ow * d->out_channels;
    size_t nw = (size_t)d->out_channels * d->kernel_h * d->kernel_w * (d->in_channels / d->groups);
    /* the engine's im2col + BLAS path competes too (standard convolutions): a tuned layer is never slower */
    const plait_conv_schedule im2col = plait_conv_im2col_schedule();
    bool try_im2col = plait_conv_schedule_valid(d, direction, &im2col);
    size_t workspace = plait_direct_workspace_bytes(d, direction);
    size_t im2col_workspace = try_im2col ? plait_schedule_workspace_bytes(d, direction, &im2col) : 0;
    if (im2col_workspace > workspace) workspace = im2col_workspace;
    buffers b = {plait_alloc(nx * sizeof(float)), plait_alloc(ny * sizeof(float)), plait_alloc(nw * sizeof(float)),
                 NULL, plait_alloc(workspace)};
    if (!space || !list || !b.x || !b.y || !b.w || !b.workspace) {
        free(space);
        free(list);
        plait_free(b.x);
        plait_free(b.y);
        plait_free(b.w);
        plait_free(b.workspace);
        return plait_fail("out of memory while tuning");
    }
    for (size_t i = 0; i < nx; i++) b.x[i] = (float)((i * 7) % 13) * 0.01f;
    for (size_t i = 0; i < ny; i++) b.y[i] = (float)((i * 5) % 11) * 0.01f;
    for (size_t i = 0; i < nw; i++) b.w[i] = (float)((i * 3) % 7) * 0.01f;
    int count = plait_conv_schedule_space(d, direction, space, SPACE_CAPACITY);
    if (count > SPACE_CAPACITY) count = SPACE_CAPACITY;
    for (int i = 0; i < count; i++) {
        list[i].schedule = space[i];
        list[i].predicted = plait_conv_cost_model(d, direction, &space[i], plait_threads());
    }
    qsort(list, (size_t)count, sizeof *list, by_prediction);
    result->candidates = count;
    /* The sweep: each schedule measured once (best of a few runs); the default and im2col are timed in the
     * run-off. */
    int measured = count < measure_count ? count : measure_count;
    double predicted[MAX_SWEEP], seconds[MAX_MEASURED];
    int picked[MAX_MEASURED];
    bool *done = calloc((size_t)(count > 0 ? count : 1), sizeof *done);
    if (measured > MAX_SWEEP) measured = MAX_SWEEP;
    /* Most of the budget goes to the model's favourites; a quarter samples the rest of the ranking, so the
     * rank correlation says how well the model orders the whole space, not only its top. */
    int top = measured - measured / 4, spread = measured - top;
    for (int i = 0; i < measured; i++) {
        int index = i < top ? i : top + (i - top + 1) * (count - top) / (spread + 1);
        picked[i] = index;
        seconds[i] = measure(d, direction, &list[index].schedule, &b);
        predicted[i] = list[index].predicted;
        if (done) done[index] = true;
    }
    const int sweep = measured;
    /* then as many again near the fastest so far, the default included */
    plait_conv_schedule start = result->fallback;
    double start_seconds = measure(d, direction, &start, &b);
    for (int i = 0; i < sweep; i++)
        if (seconds[i] < start_seconds) start = list[picked[i]].schedule, start_seconds = seconds[i];
    if (done)
        measured += local_search(d, direction, &b, list, count, done, &start, start_seconds,
                                 direct_min(measure_count, MAX_MEASURED - sweep), picked + sweep, seconds + sweep);
    free(done);
    runoff(d, direction, &b, result, try_im2col ? &im2col : NULL, list, picked, seconds, measured);
    result->rank_correlation = spearman(predicted, seconds, sweep);
    result->measured = measured;
    free(space);
    free(list);
    plait_free(b.x);
    plait_free(b.y);
    plait_free(b.w);
    plait_free(b.workspace);
    return PLAIT_OK;
}

static bool same_shape(const plait_conv2d_desc *a, const plait_conv2d_desc *b) {
    return memcmp(a, b, sizeof *a) == 0;
}

int plait_tune_layers(const plait_conv2d_desc *descs, int count, int measure, plait_tuning *tuning, FILE *report) {
    FILE *out = report;
    int status = PLAIT_OK;
    for (int i = 0; i < count; i++) {
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) seen = same_shape(&descs[i], &descs[j]);
        if (seen) continue;
        const plait_conv2d_desc *d = &descs[i];
        for (int dir = 0; dir < PLAIT_CONV_DIRECTIONS; dir++) {
            plait_tune_result r;
            if (plait_conv_tune(d, (plait_conv_direction)dir, measure, &r) != PLAIT_OK) {
                status = PLAIT_ERROR;
                continue;
            }
            plait_tuning_put(tuning, d, (plait_conv_direction)dir, &r.best, r.best_seconds);
            if (out) {
                char text[128];
                plait_conv_schedule_format(&r.best, text, sizeof text);
                fprintf(out, "n%d %dx%dx%d -> k%d %dx%d s%d p%d g%d %-16s default %8.3f ms  tuned %8.3f ms  %5.2fx  "
                             "rho %5.2f over %d of %d  %s\n",
                        d->batch, d->in_h, d->in_w, d->in_channels, d->out_channels, d->kernel_h, d->kernel_w,
                        d->stride_h, d->pad_h, d->groups, plait_conv_direction_name((plait_conv_direction)dir),
                        1e3 * r.default_seconds, 1e3 * r.best_seconds, r.default_seconds / r.best_seconds,
                        r.rank_correlation, r.measured, r.candidates, text);
            }
        }
    }
    return status;
}
