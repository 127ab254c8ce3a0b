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

/* Worst relative difference of this rank's stage after `steps` steps of a plan against sequential training. */
static double stage_plan_worst(int stages, const int *replicas, const int *bounds, int micro_batches,
                               plait_schedule_kind schedule, int steps) {
    plait_plan plan;
    eq_plan(&plan, stages, replicas, bounds, micro_batches, schedule);
    double worst = eq_run(&plan, steps);
    plait_plan_free(&plan);
    return worst;
}

static const int two_feeding_one[] = {2, 1}, two_feeding_one_bounds[] = {0, 6, 11};

static void hybrid(plait_schedule_kind schedule) {
    double worst = stage_plan_worst(2, two_feeding_one, two_feeding_one_bounds, 2, schedule, 4);
    CHECKF(worst >= 0 && worst <= 1e-5, "hybrid %s: relative difference %g", plait_schedule_name(schedule), worst);
}

static void hybrid_gpipe(void) { hybrid(PLAIT_SCHEDULE_GPIPE); }
static void hybrid_1f1b(void) { hybrid(PLAIT_SCHEDULE_1F1B); }

/* Two micro-batches per replica: each replica accumulates before the all-reduce. */
static void hybrid_accumulating(void) {
    double worst = stage_plan_worst(2, two_feeding_one, two_feeding_one_bounds, 4, PLAIT_SCHEDULE_1F1B, 1);
    CHECKF(worst >= 0 && worst <= 1e-5, "hybrid, 2 micro-batches per replica: relative difference %g", worst);
}

/* The last stage replicated: each replica computes the loss of its own micro-batches. */
static void hybrid_replicated_last(void) {
    int replicas[] = {1, 2}, bounds[] = {0, 4, 11};
    double worst = stage_plan_worst(2, replicas, bounds, 2, PLAIT_SCHEDULE_1F1B, 4);
    CHECKF(worst >= 0 && worst <= 1e-5, "hybrid 1+2, 1F1B: relative difference %g", worst);
}

static void three_stages(void) {
    int replicas[] = {1, 1, 1}, bounds[] = {0, 3, 7, 11};
    double worst = stage_plan_worst(3, replicas, bounds, 4, PLAIT_SCHEDULE_1F1B, 3);
    CHECKF(worst >= 0 && worst <= 1e-5, "3-stage 1F1B: relative difference %g", worst);
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
