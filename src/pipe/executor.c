/* The pipeline executor: runs this rank's instruction list (plait_schedule_build) for one
 * mini-batch with non-blocking transfers posted ahead, gradient buckets launched from backward, and
 * one synchronous optimizer step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist_internal.h"
#include "pipe/executor_internal.h"

static plait_trace_event *record(plait_executor *e, int lane, const char *name, int micro_batch, double start,
                                 double end) {
    if (!e->trace || e->event_count >= 2000000) return NULL;
    if (e->event_count == e->event_capacity) {
        int capacity = e->event_capacity ? 2 * e->event_capacity : 1024;
        plait_trace_event *grown = realloc(e->events, (size_t)capacity * sizeof *grown);
        if (!grown) return NULL; /* a trace is best effort; training goes on */
        e->events = grown;
        e->event_capacity = capacity;
    }
    plait_trace_event *ev = &e->events[e->event_count++];
    memset(ev, 0, sizeof *ev);
    ev->rank = e->rank;
    ev->lane = lane;
    if (micro_batch >= 0)
        snprintf(ev->name, sizeof ev->name, "%s %d", name, micro_batch);
    else
        snprintf(ev->name, sizeof ev->name, "%s", name);
    ev->start = start - e->t0;
    ev->duration = end - start;
    return ev;
}

/* One unit of a forward or backward, so a trace shows where a stage's time goes unit by unit. */
static void record_unit(plait_executor *e, const char *kind, int unit, double start, double end) {
    char name[48];
    snprintf(name, sizeof name, "%s %s", kind, e->model->units[unit].name);
    plait_trace_event *ev = record(e, 0, name, -1, start, end);
    if (ev) ev->detail = true;
}

void plait_executor_free(plait_executor *e) {
    if (!e) return;
    for (int k = 0; e->slots && k < e->slot_count; k++) {
        micro_slot *s = &e->slots[k];
        plait_dist_wait(&s->send_activation);
        plait_dist_wait(&s->send_gradient);
        for (int u = 0; s->states && u < e->last - e->first; u++) plait_unit_state_free(s->states[u]);
        free(s->states);
        plait_tensor_free(&s->input);
        plait_tensor_free(&s->output_grad);
        plait_tensor_free(&s->dlogits);
    }
    free(e->slots);
    plait_grad_sync_free(e->sync);
    plait_dist_groups_free(&e->groups);
    plait_schedule_free(&e->schedule);
    free(e->params);
    free(e->unit_param_start);
    free(e->norms);
    free(e->norm_stats);
    free(e->events);
    plait_plan_free(&e->plan);
    free(e);
}

int pipe_sum_doubles(MPI_Comm comm, double *values, int count, const char *what) {
    if (!plait_dist_uses_mpi() || comm == MPI_COMM_NULL) return PLAIT_OK;
    MPI_Request request;
    if (dist_check(MPI_Iallreduce(MPI_IN_PLACE, values, count, MPI_DOUBLE, MPI_SUM, comm, &request), what))
        return PLAIT_ERROR;
    return dist_wait_request(&request, MPI_STATUS_IGNORE, plait_dist_timeout(), NULL, 0, what);
}

static int setup_stage_params(plait_executor *e, const plait_grad_sync_config *sync_config) {
    plait_model *m = e->model;
    if (plait_model_params(m, e->first, e->last, &e->params, &e->param_count) != PLAIT_OK) return PLAIT_ERROR;
    int units = e->last - e->first;
    e->unit_param_start = calloc((size_t)units + 1, sizeof(int));
    if (!e->unit_param_start) return plait_fail("out of memory");
    for (int u = 0; u < units; u++) {
        plait_param **unit_params;
        int count;
        if (plait_model_params(m, e->first + u, e->first + u + 1, &unit_params, &count) != PLAIT_OK)
            return PLAIT_ERROR;
        free(unit_params);
        e->unit_param_start[u + 1] = e->unit_param_start[u] + count;
    }
    plait_layer **layers;
    int layer_count;
    if (plait_model_layers(m, e->first, e->last, &layers, &layer_count) != PLAIT_OK) return PLAIT_ERROR;
    e->norms = layers;
    for (int i = 0; i < layer_count; i++)
        if (layers[i]->kind == PLAIT_LAYER_BATCHNORM) {
            e->norms[e->norm_count++] = layers[i];
            e->norm_stat_count += 2 * (size_t)layers[i]->in_shape.c + 1;
        }
    e->norm_stats = malloc((e->norm_stat_count + 1) * sizeof(double));
    if (!e->norm_stats) return plait_fail("out of memory");
    if (e->replicas <= 1) return PLAIT_OK;
    /* The sync takes gradients in order of readiness: reverse model order. */
    float **grads = malloc((size_t)e->param_count * sizeof *grads);
    size_t *counts = malloc((size_t)e->param_count * sizeof *counts);
    int status = PLAIT_ERROR;
    if (grads && counts) {
        for (int i = 0; i < e->param_count; i++) {
            grads[i] = e->params[e->param_count - 1 - i]->grad;
            counts[i] = e->params[e->param_count - 1 - i]->count;
        }
        status = plait_grad_sync_create(e->groups.replica_comm, e->param_count, grads, counts, sync_config, &e->sync);
    } else {
        plait_fail("out of memory");
    }
    free(grads);
    free(counts);
    return status;
}

static int setup_slots(plait_executor *e) {
    const plait_rank_schedule *list = &e->schedule.ranks[e->rank];
    e->slot_count = e->plan.micro_batches / e->replicas;
    e->slots = calloc((size_t)e->slot_count, sizeof *e->slots);
    if (!e->slots) return plait_fail("out of memory");
    int units = e->last - e->first;
    for (int k = 0; k < e->slot_count; k++) {
        micro_slot *s = &e->slots[k];
        s->micro_batch = e->replica + k * e->replicas;
        s->states = calloc((size_t)units, sizeof *s->states);
        if (!s->states) return plait_fail("out of memory");
        for (int u = 0; u < units; u++)
            if (!(s->states[u] = plait_unit_state_create())) return plait_fail("out of memory");
        plait_shape in = e->model->units[e->first].in_shape, out = e->model->units[e->last - 1].out_shape;
        in.n = out.n = e->micro_size;
        if (e->stage > 0 && plait_tensor_reserve(&s->input, in) != PLAIT_OK) return PLAIT_ERROR;
        if (e->stage < e->stage_count - 1 && plait_tensor_reserve(&s->output_grad, out) != PLAIT_OK)
            return PLAIT_ERROR;
    }
    e->final_backward = -1;
    for (int i = 0; i < list->count; i++)
        if (list->instructions[i].op == PLAIT_OP_BACKWARD) e->final_backward = i;
    return PLAIT_OK;
}

int plait_executor_create(plait_model *m, const plait_plan *plan, bool trace, plait_executor **out) {
    *out = NULL;
    int world = plait_dist_size();
    if (plait_plan_validate(plan, world, m->unit_count, NULL, NULL) != PLAIT_OK) return PLAIT_ERROR;
    if (plan->stage_count > PLAIT_DIST_MAX_STAGES) return plait_fail("plan: more than %d stages", PLAIT_DIST_MAX_STAGES);
    plait_executor *e = calloc(1, sizeof *e);
    if (!e) return plait_fail("out of memory");
    e->model = m;
    int replica_counts[PLAIT_DIST_MAX_STAGES];
    for (int s = 0; s < plan->stage_count; s++) replica_counts[s] = plan->stages[s].replica_count;
    if (plait_plan_init(&e->plan, plan->stage_count, replica_counts) != PLAIT_OK) {
        free(e);
        return PLAIT_ERROR;
    }
    plait_stage *stages = e->plan.stages;
    e->plan = *plan;
    e->plan.stages = stages;
    for (int s = 0; s < plan->stage_count; s++) {
        stages[s].first_unit = plan->stages[s].first_unit;
        stages[s].last_unit = plan->stages[s].last_unit;
        memcpy(stages[s].ranks, plan->stages[s].ranks, (size_t)plan->stages[s].replica_count * sizeof(int));
    }
    e->trace = trace;
    e->rank = plait_dist_rank();
    e->use_mpi = plait_dist_uses_mpi() && world > 1;
    e->stage_count = plan->stage_count;
    e->micro_size = plan->batch_size / plan->micro_batches;
    e->groups.replica_comm = MPI_COMM_NULL;
    plait_stage_layout layout = {.stages = plan->stage_count};
    for (int s = 0; s < plan->stage_count; s++) {
        if (plan->stages[s].replica_count > PLAIT_DIST_MAX_REPLICAS) {
            plait_executor_free(e);
            return plait_fail("plan: stage %d has more than %d replicas", s, PLAIT_DIST_MAX_REPLICAS);
        }
        layout.replicas[s] = plan->stages[s].replica_count;
        for (int j = 0; j < layout.replicas[s]; j++) layout.ranks[s][j] = plan->stages[s].ranks[j];
    }
    double *unit_bytes = malloc((size_t)m->unit_count * sizeof(double));
    if (!unit_bytes) {
        plait_executor_free(e);
        return plait_fail("out of memory");
    }
    for (int u = 0; u < m->unit_count; u++) {
        plait_param **ps;
        int count;
        unit_bytes[u] = 0;
        if (plait_model_params(m, u, u + 1, &ps, &count) == PLAIT_OK) {
            for (int i = 0; i < count; i++) unit_bytes[u] += 4.0 * (double)ps[i]->count;
            free(ps);
        }
    }
    int status = plait_schedule_build(plan, unit_bytes, &e->schedule);
    free(unit_bytes);
    if (status != PLAIT_OK || plait_dist_groups_create(&layout, &e->groups) != PLAIT_OK) {
        plait_executor_free(e);
        return PLAIT_ERROR;
    }
    e->stage = e->groups.stage;
    e->replica = e->groups.replica;
    e->replicas = e->groups.replicas;
    e->first = plan->stages[e->stage].first_unit;
    e->last = plan->stages[e->stage].last_unit;
    /* Each micro-batch's dlogits carries 1/micro_batches, so replicas' gradients add up to the
     * mini-batch mean: sum, never average. */
    plait_grad_sync_config sync_config = {.bucket_bytes = (size_t)plan->bucket_bytes,
                                          .streams = plan->streams,
                                          .sum = true};
    if (setup_stage_params(e, &sync_config) != PLAIT_OK || setup_slots(e) != PLAIT_OK) {
        plait_executor_free(e);
        return PLAIT_ERROR;
    }
    if (e->use_mpi && plait_dist_barrier(0) != PLAIT_OK) {
        plait_executor_free(e);
        return PLAIT_ERROR;
    }
    e->t0 = plait_now();
    *out = e;
    return PLAIT_OK;
}

int plait_executor_stage(const plait_executor *e) { return e->stage; }
int plait_executor_replica(const plait_executor *e) { return e->replica; }
void plait_executor_trace_pause(plait_executor *e) { e->trace = false; }
void plait_executor_stats_get(const plait_executor *e, plait_executor_stats *stats) { *stats = e->stats; }

static int rank_of(const plait_executor *e, int stage, int micro_batch) {
    const plait_stage *st = &e->plan.stages[stage];
    return st->ranks[micro_batch % st->replica_count];
}

static micro_slot *slot_of(plait_executor *e, int micro_batch) {
    int k = micro_batch / e->replicas;
    if (micro_batch < 0 || micro_batch % e->replicas != e->replica || k >= e->slot_count) return NULL;
    return &e->slots[k];
}

/* Tags count micro-batches over the run, so a message can never match another step's receive. */
static int message_id(const plait_executor *e, int micro_batch) {
    return (int)((e->step_count * e->plan.micro_batches + micro_batch) % 1000000);
}

static int post_receives(plait_executor *e) {
    for (int k = 0; k < e->slot_count; k++) {
        micro_slot *s = &e->slots[k];
        int id = message_id(e, s->micro_batch);
        if (e->stage > 0 &&
            plait_dist_post_recv(&s->receive_activation, PLAIT_DIST_ACTIVATION, id,
                                 rank_of(e, e->stage - 1, s->micro_batch), s->input.data,
                                 plait_shape_count(s->input.shape)) != PLAIT_OK)
            return PLAIT_ERROR;
        if (e->stage < e->stage_count - 1 &&
            plait_dist_post_recv(&s->receive_gradient, PLAIT_DIST_GRADIENT, id,
                                 rank_of(e, e->stage + 1, s->micro_batch), s->output_grad.data,
                                 plait_shape_count(s->output_grad.shape)) != PLAIT_OK)
            return PLAIT_ERROR;
    }
    return PLAIT_OK;
}

static int wait_receive(plait_executor *e, plait_dist_transfer *t, const plait_tensor *into, const char *what,
                        int micro_batch) {
    double start = plait_now();
    if (plait_dist_wait(t) != PLAIT_OK) return PLAIT_ERROR;
    double end = plait_now();
    e->stats.receive_wait += end - start;
    record(e, 0, what, micro_batch, start, end);
    if (t->count != plait_shape_count(into->shape))
        return plait_fail("rank %d: %s of micro-batch %d has %zu values, expected %zu", e->rank, what, micro_batch,
                          t->count, plait_shape_count(into->shape));
    return PLAIT_OK;
}

typedef struct step_totals {
    double loss_sum, correct;
} step_totals;

static int run_forward(plait_executor *e, micro_slot *s, const plait_step_options *o, const int32_t *labels,
                       step_totals *totals) {
    double start = plait_now();
    const plait_tensor *current = e->stage == 0 ? &s->input_view : &s->input;
    for (int u = e->first; u < e->last; u++) {
        double unit_start = e->trace ? plait_now() : 0;
        if (plait_unit_forward(&e->model->units[u], s->states[u - e->first], current, true, &current) != PLAIT_OK)
            return PLAIT_ERROR;
        if (e->trace) record_unit(e, "forward", u, unit_start, plait_now());
    }
    s->output = current;
    if (e->stage == e->stage_count - 1) {
        if (plait_tensor_reserve(&s->dlogits, current->shape) != PLAIT_OK) return PLAIT_ERROR;
        int right = 0, per = e->micro_size, m = e->plan.micro_batches;
        float loss = plait_softmax_cross_entropy(per, e->model->classes, current->data,
                                                 labels + (size_t)s->micro_batch * per, o->label_smoothing,
                                                 s->dlogits.data, &right);
        /* Each micro-batch's loss is its own mean; the mini-batch loss is their mean (as the trainer). */
        if (m > 1)
            for (size_t i = 0; i < plait_shape_count(s->dlogits.shape); i++) s->dlogits.data[i] /= (float)m;
        totals->loss_sum += loss;
        totals->correct += right;
    }
    double end = plait_now();
    e->stats.forward_compute += end - start;
    record(e, 0, "forward", s->micro_batch, start, end);
    return PLAIT_OK;
}

static int run_backward(plait_executor *e, micro_slot *s, bool final) {
    /* Forward's output buffer may be reused by backward; its send must be over first. */
    if (plait_dist_wait(&s->send_activation) != PLAIT_OK) return PLAIT_ERROR;
    double start = plait_now();
    const plait_tensor *grad = e->stage == e->stage_count - 1 ? &s->dlogits : &s->output_grad;
    for (int u = e->last - 1; u >= e->first; u--) {
        bool need_dx = u > e->first || e->stage > 0;
        double unit_start = e->trace ? plait_now() : 0;
        if (plait_unit_backward(&e->model->units[u], s->states[u - e->first], grad, need_dx ? &grad : NULL) !=
            PLAIT_OK)
            return PLAIT_ERROR;
        if (e->trace) record_unit(e, "backward", u, unit_start, plait_now());
        if (final && e->sync) /* the unit's gradients are final: their buckets may start */
            for (int p = e->unit_param_start[u - e->first]; p < e->unit_param_start[u - e->first + 1]; p++)
                if (plait_grad_sync_mark_ready(e->sync, e->param_count - 1 - p) != PLAIT_OK) return PLAIT_ERROR;
    }
    s->input_grad = e->stage > 0 ? grad : NULL;
    double end = plait_now();
    e->stats.backward_compute += end - start;
    record(e, 0, "backward", s->micro_batch, start, end);
    return PLAIT_OK;
}

/* Running statistics over the whole mini-batch: the replicas' BN sums are added first, so every
 * replica folds in exactly what sequential training over all micro-batches would. */
static int sum_norm_statistics(plait_executor *e) {
    if (e->replicas <= 1 || e->norm_count == 0) return PLAIT_OK;
    size_t at = 0;
    for (int i = 0; i < e->norm_count; i++) {
        plait_layer *l = e->norms[i];
        int c = l->in_shape.c;
        memcpy(e->norm_stats + at, l->bn_stat_sum, (size_t)c * sizeof(double));
        memcpy(e->norm_stats + at + c, l->bn_stat_sumsq, (size_t)c * sizeof(double));
        e->norm_stats[at + 2 * (size_t)c] = l->bn_stat_rows;
        at += 2 * (size_t)c + 1;
    }
    if (pipe_sum_doubles(e->groups.replica_comm, e->norm_stats, (int)at, "summing batch-norm statistics") !=
        PLAIT_OK)
        return PLAIT_ERROR;
    at = 0;
    for (int i = 0; i < e->norm_count; i++) {
        plait_layer *l = e->norms[i];
        int c = l->in_shape.c;
        memcpy(l->bn_stat_sum, e->norm_stats + at, (size_t)c * sizeof(double));
        memcpy(l->bn_stat_sumsq, e->norm_stats + at + c, (size_t)c * sizeof(double));
        l->bn_stat_rows = e->norm_stats[at + 2 * (size_t)c];
        at += 2 * (size_t)c + 1;
    }
    return PLAIT_OK;
}

static int optimizer_step(plait_executor *e, const plait_step_options *o, step_totals *totals, float *loss,
                          int *correct) {
    for (int k = 0; k < e->slot_count; k++)
        if (plait_dist_wait(&e->slots[k].send_activation) != PLAIT_OK ||
            plait_dist_wait(&e->slots[k].send_gradient) != PLAIT_OK)
            return PLAIT_ERROR;
    double start = plait_now();
    if (e->sync) {
        plait_grad_sync_times times;
        if (plait_grad_sync_wait_all(e->sync, &times) != PLAIT_OK) return PLAIT_ERROR;
        double end = plait_now();
        e->stats.allreduce_communication = times.communication;
        e->stats.allreduce_hidden = times.hidden;
        e->stats.allreduce_exposed = times.exposed;
        char name[48];
        snprintf(name, sizeof name, "allreduce %d buckets", times.buckets);
        record(e, 1, name, -1, end - times.communication, end);
        record(e, 0, "allreduce wait", -1, start, end);
    }
    /* One reduction carries the loss and, for the report, the all-reduce times of replicated ranks. */
    double sums[5] = {totals->loss_sum, totals->correct, e->sync ? 1 : 0, e->stats.allreduce_hidden,
                      e->stats.allreduce_exposed};
    if (e->use_mpi && pipe_sum_doubles(MPI_COMM_WORLD, sums, 5, "summing the loss") != PLAIT_OK) return PLAIT_ERROR;
    *loss = (float)(sums[0] / e->plan.micro_batches);
    *correct = (int)lround(sums[1]);
    e->stats.mean_allreduce_hidden = sums[2] > 0 ? sums[3] / sums[2] : 0;
    e->stats.mean_allreduce_exposed = sums[2] > 0 ? sums[4] / sums[2] : 0;
    if (!isfinite(*loss)) return PLAIT_OK;
    double update_start = plait_now();
    if (sum_norm_statistics(e) != PLAIT_OK) return PLAIT_ERROR;
    plait_model_update_running_stats(e->model, e->first, e->last);
    for (int i = 0; i < e->param_count; i++) {
        plait_param *p = e->params[i];
        plait_sgd_step(p->count, p->value, p->grad, p->momentum, o->lr, o->momentum,
                       p->decay ? o->weight_decay : 0.0f, o->nesterov);
    }
    record(e, 0, "optimizer", -1, update_start, plait_now());
    return PLAIT_OK;
}

int plait_executor_step(plait_executor *e, const plait_step_options *o, const plait_tensor *images,
                        const int32_t *labels, float *loss, int *correct) {
    if (images->shape.n != e->plan.batch_size)
        return plait_fail("the executor's plan has batches of %d, got %d images", e->plan.batch_size,
                          images->shape.n);
    memset(&e->stats, 0, sizeof e->stats);
    plait_model_zero_grad(e->model, e->first, e->last);
    if (post_receives(e) != PLAIT_OK) return PLAIT_ERROR;
    const plait_rank_schedule *list = &e->schedule.ranks[e->rank];
    size_t sample = (size_t)images->shape.h * images->shape.w * images->shape.c;
    step_totals totals = {0};
    for (int i = 0; i < list->count; i++) {
        const plait_instruction *in = &list->instructions[i];
        micro_slot *s = in->micro_batch >= 0 ? slot_of(e, in->micro_batch) : NULL;
        if (in->micro_batch >= 0 && !s)
            return plait_fail("rank %d: schedule names micro-batch %d, which is not this replica's", e->rank,
                              in->micro_batch);
        int id = s ? message_id(e, s->micro_batch) : 0;
        double start = plait_now();
        int status = PLAIT_OK;
        switch (in->op) {
        case PLAIT_OP_LOAD_MICROBATCH:
            /* Every rank has the whole mini-batch (same deterministic loader): inputs are a view,
             * labels are read in place by the loss. */
            if (e->stage == 0) {
                s->input_view.shape = images->shape;
                s->input_view.shape.n = e->micro_size;
                s->input_view.data = images->data + (size_t)in->micro_batch * e->micro_size * sample;
            }
            break;
        case PLAIT_OP_RECV_ACTIVATION:
            status = wait_receive(e, &s->receive_activation, &s->input, "receive activation", in->micro_batch);
            break;
        case PLAIT_OP_FORWARD: status = run_forward(e, s, o, labels, &totals); break;
        case PLAIT_OP_SEND_ACTIVATION:
            status = plait_dist_isend(&s->send_activation, PLAIT_DIST_ACTIVATION, id, in->peer, s->output->data,
                                      plait_shape_count(s->output->shape));
            record(e, 0, "send activation", in->micro_batch, start, plait_now());
            break;
        case PLAIT_OP_RECV_GRADIENT:
            status = wait_receive(e, &s->receive_gradient, &s->output_grad, "receive gradient", in->micro_batch);
            break;
        case PLAIT_OP_BACKWARD: status = run_backward(e, s, i == e->final_backward); break;
        case PLAIT_OP_SEND_GRADIENT:
            status = plait_dist_isend(&s->send_gradient, PLAIT_DIST_GRADIENT, id, in->peer, s->input_grad->data,
                                      plait_shape_count(s->input_grad->shape));
            record(e, 0, "send gradient", in->micro_batch, start, plait_now());
            break;
        case PLAIT_OP_ALLREDUCE_BUCKET: break; /* launched by backward as soon as the bucket is final */
        case PLAIT_OP_OPTIMIZER_STEP: status = optimizer_step(e, o, &totals, loss, correct); break;
        }
        if (status != PLAIT_OK) return PLAIT_ERROR;
    }
    e->step_count++;
    return PLAIT_OK;
}
