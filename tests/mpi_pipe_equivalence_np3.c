/* The executor on 3 ranks equals sequential training with the same micro-batches: a hybrid of a
 * 2-replica stage feeding a 1-replica stage (PipeDream-style) under both schedules, and a 3-stage
 * pipeline, and a 1-replica stage feeding a 2-replica last stage.
 * Why one micro-batch per replica over several steps, and two per replica over one step only: with one
 * each, the all-reduce adds the same two gradients sequential training adds (a + b), so the runs stay
 * bit-identical; with two each it adds (g0 + g2) + (g1 + g3), a rounding difference (1.5e-7) that is
 * harmless in one step but, from the second forward on, can move a ReLU input across zero, and batch
 * norm's cancelling weight gradients turn that one element into a 1e-2 jump (docs/parallel.md). */
#include "mpi_pipe_equivalence.h"
#include "plait/tune.h"

static void hybrid(plait_schedule_kind schedule) {
    plait_plan plan;
    int replicas[] = {2, 1}, bounds[] = {0, 6, 11};
    eq_plan(&plan, 2, replicas, bounds, 2, schedule);
    double worst = eq_run(&plan, 4);
    CHECKF(worst >= 0 && worst <= 1e-5, "hybrid %s: relative difference %g", plait_schedule_name(schedule), worst);
    plait_plan_free(&plan);
}

static void hybrid_gpipe(void) { hybrid(PLAIT_SCHEDULE_GPIPE); }
static void hybrid_1f1b(void) { hybrid(PLAIT_SCHEDULE_1F1B); }

/* Two micro-batches per replica: each replica accumulates before the all-reduce. */
static void hybrid_accumulating(void) {
    plait_plan plan;
    int replicas[] = {2, 1}, bounds[] = {0, 6, 11};
    eq_plan(&plan, 2, replicas, bounds, 4, PLAIT_SCHEDULE_1F1B);
    double worst = eq_run(&plan, 1);
    CHECKF(worst >= 0 && worst <= 1e-5, "hybrid, 2 micro-batches per replica: relative difference %g", worst);
    plait_plan_free(&plan);
}

/* The last stage replicated: each replica computes the loss of its own micro-batches. */
static void hybrid_replicated_last(void) {
    plait_plan plan;
    int replicas[] = {1, 2}, bounds[] = {0, 4, 11};
    eq_plan(&plan, 2, replicas, bounds, 2, PLAIT_SCHEDULE_1F1B);
    double worst = eq_run(&plan, 4);
    CHECKF(worst >= 0 && worst <= 1e-5, "hybrid 1+2, 1F1B: relative difference %g", worst);
    plait_plan_free(&plan);
}

static void three_stages(void) {
    plait_plan plan;
    int replicas[] = {1, 1, 1}, bounds[] = {0, 3, 7, 11};
    eq_plan(&plan, 3, replicas, bounds, 4, PLAIT_SCHEDULE_1F1B);
    double worst = eq_run(&plan, 3);
    CHECKF(worst >= 0 && worst <= 1e-5, "3-stage 1F1B: relative difference %g", worst);
    plait_plan_free(&plan);
}

int main(int argc, char **argv) {
    plait_dist_init(&argc, &argv);
    plait_set_threads(1);
    plait_conv_set_fast_defaults(false); /* why: mpi_pipe_equivalence.c, data_parallel_fast_defaults */
    mpi_testing_run("hybrid: stage of 2 replicas feeding 1, GPipe, equals sequential", hybrid_gpipe);
    mpi_testing_run("hybrid: stage of 2 replicas feeding 1, 1F1B, equals sequential", hybrid_1f1b);
    mpi_testing_run("hybrid: 2 micro-batches per replica, one step, equals sequential", hybrid_accumulating);
    mpi_testing_run("hybrid: stage of 1 feeding a stage of 2 replicas, 1F1B, equals sequential",
                    hybrid_replicated_last);
    mpi_testing_run("3-stage pipeline, 1F1B, equals sequential", three_stages);
    return mpi_testing_finish();
}
