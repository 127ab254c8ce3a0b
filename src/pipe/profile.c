/* The unit profiler and the plans behind --parallel dp|pipe|auto. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipe/pipe_internal.h"

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of n values (sorted in place): what a typical step sees, as the benchmarks' median step
 * does; a minimum per unit summed over units predicted steps 5-10% faster than any step ran. */
static double median_of(double *values, int n) {
    qsort(values, (size_t)n, sizeof *values, compare_doubles);
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

int plait_profile_measure(plait_model *m, int micro_batch, int iterations, plait_profile *profile) {
    if (micro_batch < 1 || iterations < 1) return plait_fail("profile: micro-batch and iterations must be positive");
    int units = m->unit_count, status = PLAIT_ERROR;
    plait_unit_state **states = calloc((size_t)units, sizeof *states);
    /* [unit][iteration] */
    double *forward = malloc((size_t)units * (size_t)iterations * sizeof(double));
    double *backward = malloc((size_t)units * (size_t)iterations * sizeof(double));
    plait_tensor input = {0}, dlogits = {0};
    if (plait_profile_init(profile, units) != PLAIT_OK) goto done;
    if (!states || !forward || !backward) {
        plait_fail("out of memory for the profile");
        goto done;
    }
    for (int u = 0; u < units; u++)
        if (!(states[u] = plait_unit_state_create())) {
            plait_fail("out of memory for the profile");
            goto done;
        }
    plait_shape in = m->input;
    in.n = micro_batch;
    if (plait_tensor_reserve(&input, in) != PLAIT_OK) goto done;
    plait_rng rng;
    plait_rng_seed(&rng, 12345);
    for (size_t i = 0; i < plait_shape_count(in); i++) input.data[i] = plait_rng_normal(&rng);
    /* One warm-up pass, then `iterations` timed ones; each unit's median. */
    for (int it = 0; it <= iterations; it++) {
        const plait_tensor *current = &input;
        for (int u = 0; u < units; u++) {
            double start = plait_now();
            if (plait_unit_forward(&m->units[u], states[u], current, true, &current) != PLAIT_OK) goto done;
            if (it > 0) forward[(size_t)u * (size_t)iterations + (size_t)(it - 1)] = plait_now() - start;
        }
        if (plait_tensor_reserve(&dlogits, current->shape) != PLAIT_OK) goto done;
        for (size_t i = 0; i < plait_shape_count(current->shape); i++) dlogits.data[i] = 0.01f * plait_rng_normal(&rng);
        const plait_tensor *grad = &dlogits;
        for (int u = units - 1; u >= 0; u--) {
            double start = plait_now();
            if (plait_unit_backward(&m->units[u], states[u], grad, u > 0 ? &grad : NULL) != PLAIT_OK) goto done;
            if (it > 0) backward[(size_t)u * (size_t)iterations + (size_t)(it - 1)] = plait_now() - start;
        }
    }
    plait_model_zero_grad(m, 0, units); /* leave no trace of the measurement in the model */
    for (int u = 0; u < units; u++) {
        plait_unit_cost *c = &profile->units[u];
        snprintf(c->name, sizeof c->name, "%s", m->units[u].name);
        c->forward_seconds = median_of(forward + (size_t)u * (size_t)iterations, iterations) / micro_batch;
        c->backward_seconds = median_of(backward + (size_t)u * (size_t)iterations, iterations) / micro_batch;
        c->output_bytes = 4.0 * (double)plait_shape_count(m->units[u].out_shape);
        plait_param **params;
        int count;
        if (plait_model_params(m, u, u + 1, &params, &count) != PLAIT_OK) goto done;
        for (int i = 0; i < count; i++) c->parameter_bytes += 4.0 * (double)params[i]->count;
        free(params);
        c->memory_bytes = (double)plait_unit_state_bytes(states[u]) / micro_batch;
    }
    status = PLAIT_OK;
done:
    for (int u = 0; states && u < units; u++) plait_unit_state_free(states[u]);
    free(states);
    free(forward);
    free(backward);
    plait_tensor_free(&input);
    plait_tensor_free(&dlogits);
    if (status != PLAIT_OK) plait_profile_free(profile);
    return status;
}

int plait_profile_measure_shared(plait_model *m, int micro_batch, int iterations, plait_profile *profile) {
    int units = m->unit_count, rank = plait_dist_rank(), world = plait_dist_size();
    bool shared = plait_dist_uses_mpi() && world > 1;
    /* Every rank measures at the same time, so the profile carries what ranks sharing a machine cost
     * each other (cores, caches, memory bandwidth) while they train; the profile is the ranks' mean. */
    int status = plait_profile_measure(m, micro_batch, iterations, profile);
    size_t count = (size_t)units * 5 + 1;
    double *values = calloc(count, sizeof(double));
    if (!values) {
        if (status == PLAIT_OK) plait_profile_free(profile);
        return plait_fail("out of memory");
    }
    double share = 1.0 / world;
    if (status == PLAIT_OK)
        for (int u = 0; u < units; u++) {
            const plait_unit_cost *c = &profile->units[u];
            double bytes = rank == 0 ? 1 : 0; /* the same on every rank: rank 0's */
            double row[5] = {c->forward_seconds * share, c->backward_seconds * share, c->output_bytes * bytes,
                             c->parameter_bytes * bytes, c->memory_bytes * bytes};
            memcpy(values + 5 * u, row, sizeof row);
        }
    values[5 * units] = status == PLAIT_OK ? 0 : 1;
    if (shared) {
        if (pipe_sum_doubles(MPI_COMM_WORLD, values, (int)count, "sharing the profile") != PLAIT_OK) {
            free(values);
            return PLAIT_ERROR;
        }
        /* Rank 0's sum goes to everyone, so every rank plans from the very same numbers. */
        if (rank != 0) memset(values, 0, count * sizeof(double));
        if (pipe_sum_doubles(MPI_COMM_WORLD, values, (int)count, "sharing the profile") != PLAIT_OK) {
            free(values);
            return PLAIT_ERROR;
        }
    }
    if (values[5 * units] != 0) {
        free(values);
        if (status == PLAIT_OK) plait_profile_free(profile);
        return status == PLAIT_OK ? plait_fail("a rank could not measure the profile") : PLAIT_ERROR;
    }
    for (int u = 0; u < units; u++) {
        plait_unit_cost *c = &profile->units[u];
        snprintf(c->name, sizeof c->name, "%s", m->units[u].name);
        c->forward_seconds = values[5 * u];
        c->backward_seconds = values[5 * u + 1];
        c->output_bytes = values[5 * u + 2];
        c->parameter_bytes = values[5 * u + 3];
        c->memory_bytes = values[5 * u + 4];
    }
    free(values);
    return PLAIT_OK;
}

/* Seconds per sample at `micro` from per-sample seconds measured at two sizes, affine per micro-batch. */
static double affine_per_sample(double small, int small_micro, double large, int large_micro, int micro) {
    double t_small = small * small_micro, t_large = large * large_micro;
    double per_sample = (t_large - t_small) / (large_micro - small_micro), fixed = t_small - per_sample * small_micro;
    if (per_sample < 0) { /* noise: no growth with size at all; keep the larger measurement */
        per_sample = 0;
        fixed = t_large > t_small ? t_large : t_small;
    } else if (fixed < 0) { /* noise: no fixed cost; linear through the larger measurement */
        fixed = 0;
        per_sample = large;
    }
    return (fixed + per_sample * micro) / micro;
}

int plait_profile_interpolate(const plait_profile *small, int small_micro_batch, const plait_profile *large,
                              int large_micro_batch, int micro_batch, plait_profile *out) {
    if (small->unit_count != large->unit_count)
        return plait_fail("profile interpolation: %d units against %d", small->unit_count, large->unit_count);
    if (small_micro_batch < 1 || small_micro_batch >= large_micro_batch || micro_batch < 1)
        return plait_fail("profile interpolation: needs 1 <= small (%d) < large (%d) and a positive size (%d)",
                          small_micro_batch, large_micro_batch, micro_batch);
    if (plait_profile_init(out, large->unit_count) != PLAIT_OK) return PLAIT_ERROR;
    for (int u = 0; u < large->unit_count; u++) {
        const plait_unit_cost *a = &small->units[u], *b = &large->units[u];
        plait_unit_cost *c = &out->units[u];
        *c = *b;
        c->forward_seconds = affine_per_sample(a->forward_seconds, small_micro_batch, b->forward_seconds,
                                               large_micro_batch, micro_batch);
        c->backward_seconds = affine_per_sample(a->backward_seconds, small_micro_batch, b->backward_seconds,
                                                large_micro_batch, micro_batch);
    }
    return PLAIT_OK;
}

int plait_hardware_local(int workers, plait_hardware *hardware) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    double memory = pages > 0 && page > 0 ? (double)pages * (double)page : 8e9;
    /* Shared-memory MPI on one machine: a few GB/s, tens of microseconds per message. */
    plait_link p2p = {.bandwidth = 4e9, .latency = 2e-5}, allreduce = {.bandwidth = 2e9, .latency = 2e-5};
    return plait_hardware_init(hardware, workers, 1.0, memory / workers, p2p, allreduce);
}

int plait_split_balanced(const double *weights, int unit_count, int parts, int *boundaries) {
    if (parts < 1 || parts > unit_count)
        return plait_fail("cannot split %d units into %d non-empty stages", unit_count, parts);
    /* best[k][u]: the least heaviest range splitting units [0, u) into k ranges. */
    size_t cells = (size_t)(parts + 1) * (size_t)(unit_count + 1);
    double *best = malloc(cells * sizeof(double)), *prefix = malloc((size_t)(unit_count + 1) * sizeof(double));
    int *cut = malloc(cells * sizeof(int));
    if (!best || !cut || !prefix) {
        free(best), free(cut), free(prefix);
        return plait_fail("out of memory");
    }
    prefix[0] = 0;
    for (int u = 0; u < unit_count; u++) prefix[u + 1] = prefix[u] + weights[u];
#define AT(k, u) ((size_t)(k) * (size_t)(unit_count + 1) + (size_t)(u))
    for (size_t i = 0; i < cells; i++) best[i] = 1e300;
    best[AT(0, 0)] = 0;
    for (int k = 1; k <= parts; k++)
        for (int u = k; u <= unit_count; u++)
            for (int v = k - 1; v < u; v++) {
                double heaviest = best[AT(k - 1, v)];
                double range = prefix[u] - prefix[v];
                if (range > heaviest) heaviest = range;
                if (heaviest < best[AT(k, u)]) {
                    best[AT(k, u)] = heaviest;
                    cut[AT(k, u)] = v;
                }
            }
    boundaries[parts] = unit_count;
    for (int k = parts, u = unit_count; k > 0; k--) {
        u = cut[AT(k, u)];
        boundaries[k - 1] = u;
    }
#undef AT
    free(best), free(cut), free(prefix);
    return PLAIT_OK;
}

/* The smallest count >= wanted that is a multiple of `multiple` and divides batch_size, or 0. */
static int micro_batch_count(int batch_size, int wanted, int multiple) {
    for (int m = wanted; m <= batch_size; m++)
        if (m % multiple == 0 && batch_size % m == 0) return m;
    return 0;
}

/* The partitioner once per micro-batch count, each priced on the profile interpolated to its size;
 * the fastest plan wins (ties: the fewer micro-batches). */
static int partition_interpolated(const plait_profile *profile, const plait_parallel_options *o,
                                  const plait_hardware *hardware, plait_planner_options *options, plait_plan *plan) {
    double best = INFINITY;
    bool found = false;
    char failure[512] = "";
    for (int count = 1; count <= 64 && count <= o->batch_size; count++) {
        if (o->batch_size % count) continue;
        plait_profile sized;
        plait_plan candidate;
        double seconds;
        if (plait_profile_interpolate(o->small_profile, o->small_micro_batch, profile, o->profile_micro_batch,
                                      o->batch_size / count, &sized) != PLAIT_OK) {
            if (found) plait_plan_free(plan);
            return PLAIT_ERROR;
        }
        options->micro_batch_candidates = &count;
        options->candidate_count = 1;
        int status = plait_partition(&sized, hardware, options, &candidate, &seconds);
        plait_profile_free(&sized);
        if (status != PLAIT_OK) { /* no plan fits this count: try the others */
            snprintf(failure, sizeof failure, "%s", plait_last_error());
            continue;
        }
        if (seconds < best) {
            if (found) plait_plan_free(plan);
            *plan = candidate;
            best = seconds;
            found = true;
        } else {
            plait_plan_free(&candidate);
        }
    }
    options->micro_batch_candidates = NULL;
    options->candidate_count = 0;
    return found ? PLAIT_OK : plait_fail("%s", failure[0] ? failure : "planner: no micro-batch counts to try");
}

int plait_parallel_plan(const plait_model *m, const plait_profile *profile, const plait_parallel_options *o,
                        plait_plan *plan) {
    int workers = o->workers;
    if (o->kind == PLAIT_PARALLEL_AUTO) {
        plait_hardware hardware;
        if (o->hardware_path) {
            if (plait_hardware_read(o->hardware_path, &hardware) != PLAIT_OK) return PLAIT_ERROR;
            if (hardware.worker_count != workers) {
                plait_hardware_free(&hardware);
                return plait_fail("%s describes %d workers but the world has %d ranks", o->hardware_path,
                                  hardware.worker_count, workers);
            }
        } else if (plait_hardware_local(workers, &hardware) != PLAIT_OK) {
            return PLAIT_ERROR;
        }
        int candidate = o->micro_batches;
        plait_planner_options options = {.batch_size = o->batch_size,
                                         .micro_batch_candidates = o->micro_batches > 0 ? &candidate : NULL,
                                         .candidate_count = o->micro_batches > 0 ? 1 : 0,
                                         .schedule = o->schedule,
                                         .bucket_bytes = o->bucket_bytes,
                                         .streams = o->streams};
        double seconds;
        int status = o->small_profile && o->micro_batches <= 0
                         ? partition_interpolated(profile, o, &hardware, &options, plan)
                         : plait_partition(profile, &hardware, &options, plan, &seconds);
        plait_hardware_free(&hardware);
        return status;
    }
    int stages = o->kind == PLAIT_PARALLEL_DP ? 1 : workers;
    int replicas[PLAIT_DIST_MAX_STAGES];
    if (stages > PLAIT_DIST_MAX_STAGES) return plait_fail("--parallel pipe: at most %d ranks", PLAIT_DIST_MAX_STAGES);
    if (stages > m->unit_count)
        return plait_fail("--parallel pipe: %d ranks but model %s has only %d units", workers, m->name, m->unit_count);
    for (int s = 0; s < stages; s++) replicas[s] = o->kind == PLAIT_PARALLEL_DP ? workers : 1;
    /* dp: at least one micro-batch per replica; pipe: two per stage keeps the pipeline busy. */
    int wanted = o->micro_batches, multiple = o->kind == PLAIT_PARALLEL_DP ? workers : 1;
    if (o->kind == PLAIT_PARALLEL_DP && wanted < workers) wanted = workers;
    if (o->kind == PLAIT_PARALLEL_PIPE && wanted < 2 * workers) wanted = 2 * workers;
    int micro = micro_batch_count(o->batch_size, wanted, multiple);
    if (!micro && o->kind == PLAIT_PARALLEL_PIPE) micro = micro_batch_count(o->batch_size, o->micro_batches, 1);
    if (!micro)
        return plait_fail("--batch-size %d does not split into micro-batches for %d replicas", o->batch_size,
                          workers);
    if (plait_plan_init(plan, stages, replicas) != PLAIT_OK) return PLAIT_ERROR;
    plan->batch_size = o->batch_size;
    plan->micro_batches = micro;
    plan->schedule = o->schedule;
    plan->bucket_bytes = o->bucket_bytes;
    plan->streams = o->streams;
    if (o->kind == PLAIT_PARALLEL_DP) {
        plan->stages[0].first_unit = 0;
        plan->stages[0].last_unit = m->unit_count;
        for (int r = 0; r < workers; r++) plan->stages[0].ranks[r] = r;
        return PLAIT_OK;
    }
    double *weights = malloc((size_t)m->unit_count * sizeof(double));
    int boundaries[PLAIT_DIST_MAX_STAGES + 1];
    if (!weights) {
        plait_plan_free(plan);
        return plait_fail("out of memory");
    }
    for (int u = 0; u < m->unit_count; u++)
        weights[u] = profile ? profile->units[u].forward_seconds + profile->units[u].backward_seconds : 1.0;
    int status = plait_split_balanced(weights, m->unit_count, stages, boundaries);
    free(weights);
    if (status != PLAIT_OK) {
        plait_plan_free(plan);
        return PLAIT_ERROR;
    }
    for (int s = 0; s < stages; s++) {
        plan->stages[s].first_unit = boundaries[s];
        plan->stages[s].last_unit = boundaries[s + 1];
        plan->stages[s].ranks[0] = s;
    }
    return PLAIT_OK;
}
