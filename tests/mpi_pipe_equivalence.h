/* Shared by the executor's MPI tests: run a plan with the executor and the same mini-batches with
 * the sequential trainer (same seed, same micro-batches) on every rank, then compare this rank's
 * stage: weights, momentum and batch-norm running statistics. */
#ifndef PLAIT_MPI_PIPE_EQUIVALENCE_H
#define PLAIT_MPI_PIPE_EQUIVALENCE_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mpi_testing.h"
#include "plait/pipe.h"

enum { EQ_BATCH = 16, EQ_CLASSES = 10, EQ_SIDE = 16 };

/* Class k: a bright 2x2 patch at a class-dependent place on noise; identical on every rank. */
static void eq_make_batch(uint64_t seed, plait_tensor *images, int32_t *labels) {
    plait_tensor_reserve(images, (plait_shape){EQ_BATCH, EQ_SIDE, EQ_SIDE, 3});
    plait_rng rng;
    plait_rng_seed(&rng, seed);
    for (int i = 0; i < EQ_BATCH; i++) {
        int k = (int)plait_rng_below(&rng, EQ_CLASSES);
        labels[i] = k;
        for (int y = 0; y < EQ_SIDE; y++)
            for (int x = 0; x < EQ_SIDE; x++)
                for (int c = 0; c < 3; c++) {
                    bool patch = y / 4 == k / 4 && x / 4 == k % 4;
                    images->data[((size_t)(i * EQ_SIDE + y) * EQ_SIDE + x) * 3 + c] =
                        (patch ? 2.0f : 0.0f) + 0.5f * plait_rng_normal(&rng);
                }
    }
}

/* Largest |a - b| of a tensor over the largest |b|: a relative error that near-zero entries
 * cannot blow up. */
static double eq_relative(const float *a, const float *b, size_t n) {
    double diff = 0, scale = 1e-12;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > diff) diff = d;
        if (fabs((double)b[i]) > scale) scale = fabs((double)b[i]);
    }
    return diff / scale;
}

/* A plan over `stages` stages; ranks_per_stage[s] replicas, ranks numbered in stage order. */
static void eq_plan(plait_plan *plan, int stages, const int *replicas, const int *bounds, int micro_batches,
                    plait_schedule_kind schedule) {
    CHECK(plait_plan_init(plan, stages, replicas) == PLAIT_OK);
    plan->batch_size = EQ_BATCH;
    plan->micro_batches = micro_batches;
    plan->schedule = schedule;
    plan->bucket_bytes = 16 * 1024; /* several buckets even for a small stage */
    plan->streams = 2;
    int rank = 0;
    for (int s = 0; s < stages; s++) {
        plan->stages[s].first_unit = bounds[s];
        plan->stages[s].last_unit = bounds[s + 1];
        for (int j = 0; j < replicas[s]; j++) plan->stages[s].ranks[j] = rank++;
    }
}

/* Runs `steps` optimizer steps both ways and returns the worst relative difference of this rank's
 * stage (weights, momentum, running statistics); -1 when something failed. */
static double eq_run(const plait_plan *plan, int steps) {
    plait_model *sequential = NULL, *parallel = NULL;
    plait_trainer *trainer = NULL;
    plait_executor *executor = NULL;
    plait_shape input = {1, EQ_SIDE, EQ_SIDE, 3};
    double worst = -1;
    if (plait_model_create("resnet20", input, EQ_CLASSES, 7, &sequential) != PLAIT_OK ||
        plait_model_create("resnet20", input, EQ_CLASSES, 7, &parallel) != PLAIT_OK ||
        plait_trainer_create(sequential, &trainer) != PLAIT_OK) {
        CHECKF(false, "%s", plait_last_error());
        goto done;
    }
    if (plait_executor_create(parallel, plan, false, &executor) != PLAIT_OK) {
        CHECKF(false, "executor: %s", plait_last_error());
        goto done;
    }
    plait_tensor images = {0};
    int32_t labels[EQ_BATCH];
    plait_step_options o = {.microbatches = plan->micro_batches, .lr = 0.02f, .momentum = 0.9f,
                            .weight_decay = 5e-4f, .nesterov = true, .label_smoothing = 0.1f};
    bool ok = true;
    for (int step = 0; step < steps && ok; step++) {
        eq_make_batch(1000 + (uint64_t)step, &images, labels);
        float loss_seq, loss_par;
        int right_seq, right_par;
        ok = plait_trainer_step(trainer, &o, &images, labels, &loss_seq, &right_seq) == PLAIT_OK;
        CHECKF(ok, "%s", plait_last_error());
        ok = ok && plait_executor_step(executor, &o, &images, labels, &loss_par, &right_par) == PLAIT_OK;
        CHECKF(ok, "executor step: %s", plait_last_error());
        if (!ok) break;
        /* the loss is the whole mini-batch's, on every rank */
        CHECKF(fabsf(loss_seq - loss_par) <= 1e-5f * fabsf(loss_seq), "step %d: loss %.8f, sequential %.8f", step,
               (double)loss_par, (double)loss_seq);
        CHECKF(right_seq == right_par, "step %d: %d right, sequential %d", step, right_par, right_seq);
    }
    plait_tensor_free(&images);
    if (!ok) goto done;
    int stage = plait_executor_stage(executor);
    int first = plan->stages[stage].first_unit, last = plan->stages[stage].last_unit;
    plait_param **ps, **pp;
    plait_buffer **bs, **bp;
    int np, nb;
    CHECK(plait_model_params(sequential, first, last, &ps, &np) == PLAIT_OK);
    CHECK(plait_model_params(parallel, first, last, &pp, &np) == PLAIT_OK);
    CHECK(plait_model_buffers(sequential, first, last, &bs, &nb) == PLAIT_OK);
    CHECK(plait_model_buffers(parallel, first, last, &bp, &nb) == PLAIT_OK);
    worst = 0;
    const char *where = "";
    for (int i = 0; i < np; i++) {
        double w = eq_relative(pp[i]->value, ps[i]->value, ps[i]->count);
        double m = eq_relative(pp[i]->momentum, ps[i]->momentum, ps[i]->count);
        if (w > worst) worst = w, where = ps[i]->name;
        if (m > worst) worst = m, where = ps[i]->name;
    }
    for (int i = 0; i < nb; i++) {
        double b = eq_relative(bp[i]->value, bs[i]->value, bs[i]->count);
        if (b > worst) worst = b, where = bs[i]->name;
    }
    /* the weights moved: a comparison of untouched models would prove nothing */
    plait_model *fresh;
    CHECK(plait_model_create("resnet20", input, EQ_CLASSES, 7, &fresh) == PLAIT_OK);
    plait_param **pf;
    CHECK(plait_model_params(fresh, first, last, &pf, &np) == PLAIT_OK);
    double moved = 0;
    for (int i = 0; i < np; i++) {
        double d = eq_relative(pp[i]->value, pf[i]->value, pf[i]->count);
        if (d > moved) moved = d;
    }
    CHECKF(moved > 1e-3, "rank %d: the weights hardly moved (%g)", plait_dist_rank(), moved);
    free(pf);
    plait_model_free(fresh);
    fprintf(stderr, "  rank %d (stage %d): worst relative difference %.3g%s%s\n", plait_dist_rank(), stage, worst,
            worst > 0 ? " at " : "", worst > 0 ? where : "");
    free(ps), free(pp), free(bs), free(bp);
done:
    plait_executor_free(executor);
    plait_trainer_free(trainer);
    plait_model_free(sequential);
    plait_model_free(parallel);
    return worst;
}

#endif
