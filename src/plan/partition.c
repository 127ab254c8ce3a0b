/* The partitioner: a dynamic program over contiguous unit ranges and consecutive rank ranges, and
 * a brute-force enumerator over the same space with the same objective (plait_plan_predict). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plait/core.h"
#include "plan/cost.h"

/* Partial cost of a suffix of stages. The objective is forward + steady_forward +
 * steady_backward + exposure; each grows monotonically as stages are prepended, and gradient
 * (the suffix's backward path) only feeds exposure, so a state that is no better in all five
 * can be dropped (Pareto pruning keeps the search exact). */
typedef struct suffix_cost {
    double forward;         /* sum of forward + activation send over the suffix */
    double steady_forward;  /* max over its stages of the forward phase (the 1F1B steady state) */
    double steady_backward; /* max over its stages of the backward phase (GPipe only) */
    double gradient;        /* sum of backward + gradient send over the suffix */
    double exposure;        /* max over its stages of (gradient path from it) + its exposed all-reduce */
    int next_unit, replicas, next_replicated, next_index; /* back-pointer to the rest of the suffix */
} suffix_cost;

typedef struct pareto_set {
    suffix_cost *items;
    int count, capacity;
} pareto_set;

static bool dominates(const suffix_cost *a, const suffix_cost *b) {
    return a->forward <= b->forward && a->steady_forward <= b->steady_forward &&
           a->steady_backward <= b->steady_backward && a->gradient <= b->gradient && a->exposure <= b->exposure;
}

static int pareto_insert(pareto_set *set, const suffix_cost *item) {
    for (int k = 0; k < set->count; k++)
        if (dominates(&set->items[k], item)) return PLAIT_OK;
    int kept = 0;
    for (int k = 0; k < set->count; k++)
        if (!dominates(item, &set->items[k])) set->items[kept++] = set->items[k];
    set->count = kept;
    if (set->count == set->capacity) {
        int capacity = set->capacity ? 2 * set->capacity : 4;
        suffix_cost *items = realloc(set->items, (size_t)capacity * sizeof *items);
        if (!items) return plait_fail("out of memory in the partitioner");
        set->items = items;
        set->capacity = capacity;
    }
    set->items[set->count++] = *item;
    return PLAIT_OK;
}

static double objective(const suffix_cost *c) {
    return c->forward + c->steady_forward + c->steady_backward + c->exposure;
}

typedef struct search {
    const plait_profile *profile;
    const plait_hardware *hardware;
    const plait_planner_options *options;
    int *candidates;
    int candidate_count;
    double bucket_bytes;
    int streams;
    /* the best plan so far */
    double best;
    plait_plan *plan;
} search;

static int search_init(search *sr, const plait_profile *profile, const plait_hardware *hardware,
                       const plait_planner_options *options, plait_plan *plan) {
    memset(sr, 0, sizeof *sr);
    memset(plan, 0, sizeof *plan);
    sr->profile = profile;
    sr->hardware = hardware;
    sr->options = options;
    sr->plan = plan;
    sr->best = INFINITY;
    sr->bucket_bytes = options->bucket_bytes > 0 ? options->bucket_bytes : 25.0 * 1024 * 1024;
    sr->streams = options->streams > 0 ? options->streams : 1;
    if (options->batch_size < 1) return plait_fail("planner: batch size must be positive, got %d", options->batch_size);
    if (profile->unit_count < 1 || hardware->worker_count < 1)
        return plait_fail("planner: needs at least one unit and one worker");
    if (profile->unit_count > 256 && hardware->worker_count > 256)
        return plait_fail("planner: at most 256 stages are supported");
    int batch = options->batch_size;
    sr->candidates = malloc(((size_t)(options->micro_batch_candidates ? options->candidate_count : 64) + 1) *
                            sizeof(int));
    if (!sr->candidates) return plait_fail("out of memory in the planner");
    if (options->micro_batch_candidates) {
        for (int k = 0; k < options->candidate_count; k++) {
            int m = options->micro_batch_candidates[k];
            if (m < 1 || batch % m != 0) {
                free(sr->candidates);
                return plait_fail("planner: micro-batch count %d does not divide the batch size %d", m, batch);
            }
            sr->candidates[sr->candidate_count++] = m;
        }
    } else {
        for (int m = 1; m <= 64 && m <= batch; m++)
            if (batch % m == 0) sr->candidates[sr->candidate_count++] = m;
    }
    if (sr->candidate_count == 0) {
        free(sr->candidates);
        return plait_fail("planner: no micro-batch counts to try");
    }
    return PLAIT_OK;
}

static void fill_plan_options(const search *sr, plait_plan *plan, int micro_batches) {
    plan->batch_size = sr->options->batch_size;
    plan->micro_batches = micro_batches;
    plan->schedule = sr->options->schedule;
    plan->bucket_bytes = sr->bucket_bytes;
    plan->streams = sr->streams;
}

static double range_min(const double *values, int first, int count) {
    double x = INFINITY;
    for (int k = first; k < first + count; k++) x = fmin(x, values[k]);
    return x;
}

/* The dynamic program for one micro-batch count. State (u, w, q): the suffix of stages covering
 * units [u, U) on the last w ranks, q of them in replicated stages other than the last (1F1B
 * memory depends on it; GPipe keeps q = 0). A stage's cost depends only on its units, its ranks and (w, q). */
static int dynamic_program(search *sr, int micro_batches) {
    const plait_profile *profile = sr->profile;
    const plait_hardware *hw = sr->hardware;
    plait_schedule_kind schedule = sr->options->schedule;
    int U = profile->unit_count, W = hw->worker_count;
    double micro_batch_size = (double)sr->options->batch_size / micro_batches;
    size_t state_count = (size_t)(U + 1) * (size_t)(W + 1) * (size_t)(W + 1);
    pareto_set *sets = calloc(state_count, sizeof *sets);
    if (!sets) return plait_fail("out of memory in the partitioner");
#define STATE(u, w, q) sets[((size_t)(u) * (size_t)(W + 1) + (size_t)(w)) * (size_t)(W + 1) + (size_t)(q)]
    int status = pareto_insert(&STATE(U, 0, 0), &(suffix_cost){0, 0, 0, 0, 0, -1, 0, 0, -1});
    for (int v = U; v >= 1 && status == PLAIT_OK; v--)
        for (int used = 0; used < W && status == PLAIT_OK; used++)
            for (int u = 0; u < v && status == PLAIT_OK; u++)
                for (int r = 1; used + r <= W && status == PLAIT_OK; r++) {
                    if (micro_batches % r != 0) continue;
                    if ((u == 0) != (used + r == W)) continue; /* every stage needs a rank, every rank a stage */
                    int first_rank = W - used - r, own = micro_batches / r;
                    stage_terms terms;
                    stage_terms_compute(profile, hw, u, v, r, range_min(hw->speed, first_rank, r), micro_batch_size,
                                        sr->bucket_bytes, sr->streams, &terms);
                    double memory = range_min(hw->memory_bytes, first_rank, r), forward_phase, backward_phase;
                    stage_steady(schedule, &terms, own, &forward_phase, &backward_phase);
                    for (int q = 0; q <= used && status == PLAIT_OK; q++) {
                        pareto_set *from = &STATE(v, used, q);
                        if (from->count == 0) continue;
                        int replicated = schedule == PLAIT_SCHEDULE_1F1B ? q + (r > 1 && v < U ? r : 0) : 0;
                        int in_flight = stage_in_flight(schedule, one_f_one_b_warmup(used, replicated), r, own);
                        if (stage_memory(&terms, in_flight) > memory) continue;
                        for (int e = 0; e < from->count && status == PLAIT_OK; e++) {
                            const suffix_cost *c = &from->items[e];
                            suffix_cost next = {.next_unit = v, .replicas = r, .next_replicated = q, .next_index = e};
                            next.forward = c->forward + terms.forward + terms.send_activation;
                            next.steady_forward = fmax(c->steady_forward, forward_phase);
                            next.steady_backward = fmax(c->steady_backward, backward_phase);
                            next.gradient = c->gradient + terms.backward + terms.send_activation;
                            next.exposure = fmax(c->exposure, next.gradient + terms.exposed_allreduce);
                            status = pareto_insert(&STATE(u, used + r, replicated), &next);
                        }
                    }
                }
    int best_q = -1, best_e = -1;
    double best = INFINITY;
    for (int q = 0; q <= W && status == PLAIT_OK; q++) {
        pareto_set *whole = &STATE(0, W, q);
        for (int e = 0; e < whole->count; e++)
            if (objective(&whole->items[e]) < best) {
                best = objective(&whole->items[e]);
                best_q = q;
                best_e = e;
            }
    }
    if (status == PLAIT_OK && best_e >= 0 && best < sr->best) {
        int stages = 0, replicas[256], lasts[256];
        for (int u = 0, w = W, q = best_q, e = best_e; u < U && stages < 256; stages++) {
            const suffix_cost *c = &STATE(u, w, q).items[e];
            replicas[stages] = c->replicas;
            lasts[stages] = c->next_unit;
            u = c->next_unit;
            w -= c->replicas;
            q = c->next_replicated;
            e = c->next_index;
        }
        plait_plan_free(sr->plan);
        status = plait_plan_init(sr->plan, stages, replicas);
        for (int s = 0, rank = 0, first = 0; status == PLAIT_OK && s < stages; s++) {
            plait_stage *st = &sr->plan->stages[s];
            st->first_unit = first;
            st->last_unit = first = lasts[s];
            for (int j = 0; j < st->replica_count; j++) st->ranks[j] = rank++;
        }
        if (status == PLAIT_OK) {
            fill_plan_options(sr, sr->plan, micro_batches);
            sr->best = best;
        }
    }
    for (size_t k = 0; k < state_count; k++) free(sets[k].items);
    free(sets);
#undef STATE
    return status;
}

static int finish(search *sr, double *predicted_seconds) {
    free(sr->candidates);
    if (isinf(sr->best)) {
        plait_plan_free(sr->plan);
        return plait_fail("planner: no plan fits: every split of %d units over %d workers exceeds some worker's "
                          "memory or has replica counts that do not divide the micro-batch counts tried",
                          sr->profile->unit_count, sr->hardware->worker_count);
    }
    if (predicted_seconds) *predicted_seconds = sr->best;
    return PLAIT_OK;
}

int plait_partition(const plait_profile *profile, const plait_hardware *hardware,
                    const plait_planner_options *options, plait_plan *plan, double *predicted_seconds) {
    search sr;
    if (search_init(&sr, profile, hardware, options, plan)) return PLAIT_ERROR;
    for (int c = 0; c < sr.candidate_count; c++)
        if (dynamic_program(&sr, sr.candidates[c])) {
            free(sr.candidates);
            plait_plan_free(plan);
            return PLAIT_ERROR;
        }
    return finish(&sr, predicted_seconds);
}

/* ---- brute force ---- */

static bool fits_memory(const plait_plan *plan, const plait_profile *profile, const plait_hardware *hardware) {
    for (int s = 0; s < plan->stage_count; s++) {
        double need = plait_stage_memory_bytes(plan, profile, s);
        for (int j = 0; j < plan->stages[s].replica_count; j++)
            if (need > hardware->memory_bytes[plan->stages[s].ranks[j]]) return false;
    }
    return true;
}

static int try_plan(search *sr, const int *cuts, const int *replicas, int stages) {
    plait_plan plan;
    if (plait_plan_init(&plan, stages, replicas)) return PLAIT_ERROR;
    int rank = 0;
    for (int s = 0; s < stages; s++) {
        plan.stages[s].first_unit = s == 0 ? 0 : cuts[s - 1];
        plan.stages[s].last_unit = s == stages - 1 ? sr->profile->unit_count : cuts[s];
        for (int j = 0; j < replicas[s]; j++) plan.stages[s].ranks[j] = rank++;
    }
    for (int c = 0; c < sr->candidate_count; c++) {
        int m = sr->candidates[c];
        bool divisible = true;
        for (int s = 0; s < stages; s++) divisible = divisible && m % replicas[s] == 0;
        if (!divisible) continue;
        fill_plan_options(sr, &plan, m);
        if (!fits_memory(&plan, sr->profile, sr->hardware)) continue;
        plait_prediction prediction;
        if (plait_plan_predict(&plan, sr->profile, sr->hardware, &prediction)) {
            plait_plan_free(&plan);
            return PLAIT_ERROR;
        }
        if (prediction.seconds < sr->best) {
            sr->best = prediction.seconds;
            plait_plan_free(sr->plan);
            if (plait_plan_init(sr->plan, stages, replicas)) {
                plait_plan_free(&plan);
                return PLAIT_ERROR;
            }
            for (int s = 0; s < stages; s++) {
                sr->plan->stages[s].first_unit = plan.stages[s].first_unit;
                sr->plan->stages[s].last_unit = plan.stages[s].last_unit;
                memcpy(sr->plan->stages[s].ranks, plan.stages[s].ranks, (size_t)replicas[s] * sizeof(int));
            }
            fill_plan_options(sr, sr->plan, m);
        }
    }
    plait_plan_free(&plan);
    return PLAIT_OK;
}

/* Every way to give `stages` stages at least one of `left` workers each. */
static int enumerate_replicas(search *sr, const int *cuts, int *replicas, int stages, int stage, int left) {
    if (stage == stages - 1) {
        replicas[stage] = left;
        return try_plan(sr, cuts, replicas, stages);
    }
    for (int r = 1; r <= left - (stages - stage - 1); r++) {
        replicas[stage] = r;
        if (enumerate_replicas(sr, cuts, replicas, stages, stage + 1, left - r)) return PLAIT_ERROR;
    }
    return PLAIT_OK;
}

int plait_partition_brute_force(const plait_profile *profile, const plait_hardware *hardware,
                                const plait_planner_options *options, plait_plan *plan,
                                double *predicted_seconds) {
    int U = profile->unit_count, W = hardware->worker_count;
    if (U > 20) return plait_fail("brute force: %d units is too many to enumerate", U);
    search sr;
    if (search_init(&sr, profile, hardware, options, plan)) return PLAIT_ERROR;
    int cuts[20], replicas[21];
    for (unsigned mask = 0; mask < (1u << (U - 1)); mask++) {
        int stages = 1;
        for (int u = 1; u < U; u++)
            if (mask & (1u << (u - 1))) cuts[stages++ - 1] = u;
        if (stages > W) continue;
        if (enumerate_replicas(&sr, cuts, replicas, stages, 0, W)) {
            free(sr.candidates);
            plait_plan_free(plan);
            return PLAIT_ERROR;
        }
    }
    return finish(&sr, predicted_seconds);
}
