/* The analytic cost model of docs/parallel.md. */
#include "plan/cost.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plait/core.h"
#include "plait/dist.h"

double p2p_seconds(const plait_hardware *hardware, double bytes) {
    return hardware->p2p.latency + bytes / hardware->p2p.bandwidth;
}

/* The continuous form of plait_grad_bucket_plan: bucket limits from the last-ready one backwards,
 * the first-ready bucket holding what is left. */
static double bucket_limit(int from_last, double bucket_bytes) {
    return (double)plait_grad_bucket_limit(from_last, bucket_bytes < 1 ? 1 : (size_t)bucket_bytes);
}

int plait_stage_bucket_count(double stage_parameter_bytes, double bucket_bytes) {
    if (stage_parameter_bytes <= 0 || bucket_bytes <= 0) return 0;
    int count = 0;
    for (double covered = 0; covered < stage_parameter_bytes; count++) covered += bucket_limit(count, bucket_bytes);
    return count;
}

int stage_bucket_ready(const plait_profile *profile, int first, int last, double micro_batch_size, double speed,
                       double bucket_bytes, double *ready, double *bytes) {
    double total = 0;
    for (int u = last - 1; u >= first; u--) total += profile->units[u].parameter_bytes;
    int count = plait_stage_bucket_count(total, bucket_bytes);
    double tail = 0;
    for (int k = 0; k < count - 1; k++) tail += bucket_limit(k, bucket_bytes);
    int unit = last - 1;
    double produced = profile->units[unit].parameter_bytes;
    double time = profile->units[unit].backward_seconds * micro_batch_size / speed;
    double begin = 0;
    for (int b = 0; b < count; b++) {
        double end = b == 0 ? total - tail : begin + bucket_limit(count - 1 - b, bucket_bytes);
        if (b == count - 1) end = total;
        /* the bucket is ready when backward has produced its last byte */
        while (produced < end && unit > first) {
            unit--;
            produced += profile->units[unit].parameter_bytes;
            time += profile->units[unit].backward_seconds * micro_batch_size / speed;
        }
        if (ready) ready[b] = time;
        if (bytes) bytes[b] = end - begin;
        begin = end;
    }
    return count;
}

int allreduce_lanes_init(allreduce_lanes *lanes, int streams) {
    lanes->streams = streams < 1 ? 1 : streams;
    lanes->link_free = 0;
    lanes->stream_free = calloc((size_t)lanes->streams, sizeof(double));
    return lanes->stream_free ? PLAIT_OK : plait_fail("out of memory for %d streams", streams);
}

void allreduce_lanes_free(allreduce_lanes *lanes) {
    free(lanes->stream_free);
    lanes->stream_free = NULL;
}

double allreduce_lanes_run(allreduce_lanes *lanes, const plait_hardware *hardware, int replicas, int bucket,
                           double ready, double bytes, double *start) {
    int stream = bucket % lanes->streams;
    double begin = fmax(ready, lanes->stream_free[stream]);
    double steps = 2.0 * (replicas - 1);
    double latency_end = begin + steps * hardware->allreduce.latency;
    double transfer = steps / replicas * bytes / hardware->allreduce.bandwidth;
    double end = fmax(latency_end, lanes->link_free) + transfer;
    lanes->stream_free[stream] = end;
    lanes->link_free = end;
    if (start) *start = begin;
    return end;
}

static double stage_exposed_allreduce(const plait_profile *profile, const plait_hardware *hardware, int first,
                                      int last, int replicas, double speed, double micro_batch_size,
                                      double bucket_bytes, int streams, double backward) {
    if (replicas < 2) return 0;
    int count = stage_bucket_ready(profile, first, last, micro_batch_size, speed, bucket_bytes, NULL, NULL);
    if (count == 0) return 0;
    double *ready = malloc(2 * (size_t)count * sizeof(double));
    allreduce_lanes lanes;
    if (!ready || allreduce_lanes_init(&lanes, streams)) {
        free(ready);
        return INFINITY; /* out of memory: price the stage out rather than crash */
    }
    double *bytes = ready + count;
    stage_bucket_ready(profile, first, last, micro_batch_size, speed, bucket_bytes, ready, bytes);
    double end = 0;
    for (int b = 0; b < count; b++)
        end = fmax(end, allreduce_lanes_run(&lanes, hardware, replicas, b, ready[b], bytes[b], NULL));
    allreduce_lanes_free(&lanes);
    free(ready);
    return fmax(0, end - backward);
}

void stage_terms_compute(const plait_profile *profile, const plait_hardware *hardware, int first, int last,
                         int replicas, double speed, double micro_batch_size, double bucket_bytes, int streams,
                         stage_terms *terms) {
    memset(terms, 0, sizeof *terms);
    double forward = 0, backward = 0, kept = 0;
    for (int u = first; u < last; u++) {
        forward += profile->units[u].forward_seconds;
        backward += profile->units[u].backward_seconds;
        kept += profile->units[u].memory_bytes;
    }
    for (int u = last - 1; u >= first; u--) terms->parameter_bytes += profile->units[u].parameter_bytes;
    terms->forward = forward * micro_batch_size / speed;
    terms->backward = backward * micro_batch_size / speed;
    terms->kept_bytes_per_micro_batch = kept * micro_batch_size;
    if (last < profile->unit_count)
        terms->send_activation = p2p_seconds(hardware, profile->units[last - 1].output_bytes * micro_batch_size);
    if (first > 0)
        terms->send_gradient = p2p_seconds(hardware, profile->units[first - 1].output_bytes * micro_batch_size);
    terms->busy = terms->forward + terms->backward + terms->send_activation + terms->send_gradient;
    terms->exposed_allreduce = stage_exposed_allreduce(profile, hardware, first, last, replicas, speed,
                                                       micro_batch_size, bucket_bytes, streams, terms->backward);
}

double stage_memory(const stage_terms *terms, int in_flight) {
    return PLAIT_PARAMETER_COPIES * terms->parameter_bytes + in_flight * terms->kept_bytes_per_micro_batch;
}

int one_f_one_b_warmup(int ranks_after, int replicated_ranks_from_here) {
    return ranks_after + replicated_ranks_from_here;
}

int plan_stage_warmup(const plait_plan *plan, int stage) {
    int ranks_after = 0, replicated = 0;
    for (int s = stage; s < plan->stage_count; s++) {
        int r = plan->stages[s].replica_count;
        if (s > stage) ranks_after += r;
        if (r > 1 && s < plan->stage_count - 1) replicated += r;
    }
    return one_f_one_b_warmup(ranks_after, replicated);
}

int stage_in_flight(plait_schedule_kind schedule, int warmup, int replicas, int own_micro_batches) {
    int window = (warmup + replicas) / replicas;
    if (schedule == PLAIT_SCHEDULE_1F1B && window < own_micro_batches) return window;
    return own_micro_batches;
}

void stage_steady(plait_schedule_kind schedule, const stage_terms *terms, int own_micro_batches, double *forward_phase,
                  double *backward_phase) {
    int repeats = own_micro_batches - 1;
    if (schedule == PLAIT_SCHEDULE_GPIPE) {
        *forward_phase = repeats * (terms->forward + terms->send_activation);
        *backward_phase = repeats * (terms->backward + terms->send_gradient);
    } else {
        *forward_phase = repeats * terms->busy;
        *backward_phase = 0;
    }
}

static double stage_speed(const plait_stage *stage, const plait_hardware *hardware) {
    double speed = INFINITY;
    for (int j = 0; j < stage->replica_count; j++) speed = fmin(speed, hardware->speed[stage->ranks[j]]);
    return speed;
}

double plait_stage_memory_bytes(const plait_plan *plan, const plait_profile *profile, int stage) {
    const plait_stage *st = &plan->stages[stage];
    double micro_batch_size = (double)plan->batch_size / plan->micro_batches;
    /* summed in the order stage_terms_compute uses, so the partitioner's checks agree exactly */
    double parameters = 0, kept = 0;
    for (int u = st->first_unit; u < st->last_unit; u++) kept += profile->units[u].memory_bytes;
    for (int u = st->last_unit - 1; u >= st->first_unit; u--) parameters += profile->units[u].parameter_bytes;
    stage_terms terms = {.parameter_bytes = parameters, .kept_bytes_per_micro_batch = kept * micro_batch_size};
    int own = plan->micro_batches / st->replica_count;
    return stage_memory(&terms, stage_in_flight(plan->schedule, plan_stage_warmup(plan, stage), st->replica_count, own));
}

int plait_plan_predict(const plait_plan *plan, const plait_profile *profile, const plait_hardware *hardware,
                       plait_prediction *prediction) {
    memset(prediction, 0, sizeof *prediction);
    if (plan->micro_batches < 1 || plan->batch_size < 1)
        return plait_fail("plan: batch_size and micro_batches must be positive");
    double micro_batch_size = (double)plan->batch_size / plan->micro_batches;
    double forward_path = 0, steady_forward = 0, steady_backward = 0, exposure = 0, suffix = 0, worst = -1;
    /* right to left: suffix is the gradient path from stage s back to the first stage's end */
    for (int s = plan->stage_count - 1; s >= 0; s--) {
        const plait_stage *st = &plan->stages[s];
        stage_terms terms;
        stage_terms_compute(profile, hardware, st->first_unit, st->last_unit, st->replica_count,
                            stage_speed(st, hardware), micro_batch_size, plan->bucket_bytes, plan->streams, &terms);
        double forward_phase, backward_phase;
        stage_steady(plan->schedule, &terms, plan->micro_batches / st->replica_count, &forward_phase, &backward_phase);
        forward_path += terms.forward + terms.send_activation;
        steady_forward = fmax(steady_forward, forward_phase);
        steady_backward = fmax(steady_backward, backward_phase);
        if (forward_phase + backward_phase >= worst) {
            worst = forward_phase + backward_phase;
            prediction->bottleneck_stage = s;
        }
        suffix += terms.backward + terms.send_activation;
        exposure = fmax(exposure, suffix + terms.exposed_allreduce);
    }
    double steady = steady_forward + steady_backward;
    prediction->pipeline_seconds = forward_path + steady + suffix;
    prediction->seconds = forward_path + steady + exposure;
    prediction->exposed_allreduce_seconds = exposure - suffix;
    return PLAIT_OK;
}
