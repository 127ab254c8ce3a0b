/* One configuration of parallel training, timed: builds the plan exactly as `plait train --parallel`
 * does (pipe_train_plan), runs warm-up and timed steps of the executor (or plait_trainer_step for
 * conventional training) on synthetic seeded images identical on every rank, and prints one JSON
 * line on rank 0 with the measured and the predicted seconds per step. bench/parallel drives it.
 *   mpirun -np 1|2 bench_parallel --model cifar_resnet18 --parallel conventional|dp|pipe|auto
 *          [--schedule gpipe|1f1b] [--threads 1] [--batch 128] [--microbatches 0] [--warmup 1] [--steps 3]
 * --microbatches 0 lets the plan choose (dp: one per rank, pipe: two per stage, auto: searched;
 * conventional: 1). The prediction prices the same plan with the planner's cost model on the profile
 * the planner measured (pipe, auto) or, for dp and conventional, on a profile measured the same way
 * at the plan's micro-batch size; measuring it is not timed. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipe/pipe_internal.h"
#include "plait/pipe.h"
#include "plait/plan.h"
#include "plait/train.h"
#include "train/train_internal.h"

typedef struct bench_options {
    const char *model, *parallel;
    plait_schedule_kind schedule;
    int threads, batch, microbatches, warmup, steps;
} bench_options;

static void die(const char *what) {
    fprintf(stderr, "bench_parallel (rank %d): %s: %s\n", plait_dist_rank(), what, plait_last_error());
    if (plait_dist_size() > 1) plait_dist_abort("bench_parallel failed");
    exit(1);
}

static void usage(void) {
    fprintf(stderr, "usage: bench_parallel --model NAME --parallel conventional|dp|pipe|auto [--schedule gpipe|1f1b]\n"
                    "       [--threads N] [--batch 128] [--microbatches M] [--warmup W] [--steps S]\n");
    exit(2);
}

static bench_options parse(int argc, char **argv) {
    bench_options b = {.model = "cifar_resnet18", .parallel = "dp", .schedule = PLAIT_SCHEDULE_1F1B,
                       .threads = 1, .batch = 128, .microbatches = 0, .warmup = 1, .steps = 3};
    for (int i = 1; i < argc; i++) {
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (!value) usage();
        if (!strcmp(argv[i], "--model")) b.model = value;
        else if (!strcmp(argv[i], "--parallel")) b.parallel = value;
        else if (!strcmp(argv[i], "--schedule") && !strcmp(value, "gpipe")) b.schedule = PLAIT_SCHEDULE_GPIPE;
        else if (!strcmp(argv[i], "--schedule") && !strcmp(value, "1f1b")) b.schedule = PLAIT_SCHEDULE_1F1B;
        else if (!strcmp(argv[i], "--threads")) b.threads = atoi(value);
        else if (!strcmp(argv[i], "--batch")) b.batch = atoi(value);
        else if (!strcmp(argv[i], "--microbatches")) b.microbatches = atoi(value);
        else if (!strcmp(argv[i], "--warmup")) b.warmup = atoi(value);
        else if (!strcmp(argv[i], "--steps")) b.steps = atoi(value);
        else usage();
        i++;
    }
    bool known = !strcmp(b.parallel, "conventional") || !strcmp(b.parallel, "dp") || !strcmp(b.parallel, "pipe") ||
                 !strcmp(b.parallel, "auto");
    if (!known || b.threads < 1 || b.batch < 1 || b.microbatches < 0 || b.warmup < 0 || b.steps < 1) usage();
    return b;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The plan of this configuration, and the profile it was made from (none for dp/conventional). */
static void make_plan(const bench_options *b, plait_model *m, plait_plan *plan, plait_profile *profile) {
    if (!strcmp(b->parallel, "conventional")) {
        if (plait_dist_size() != 1) {
            plait_fail("conventional training runs on one rank, the world has %d", plait_dist_size());
            die("plan");
        }
        plait_parallel_options o = {.kind = PLAIT_PARALLEL_DP, .workers = 1, .batch_size = b->batch,
                                    .micro_batches = b->microbatches > 0 ? b->microbatches : 1,
                                    .schedule = b->schedule, .bucket_bytes = 25.0 * 1024 * 1024, .streams = 2};
        *profile = (plait_profile){0};
        if (plait_parallel_plan(m, NULL, &o, plan) != PLAIT_OK) die("plan");
        return;
    }
    plait_train_config c;
    plait_train_config_defaults(&c);
    c.model = b->model;
    c.threads = b->threads;
    c.batch_size = b->batch;
    c.microbatches = b->microbatches;
    c.parallel = b->parallel;
    c.pipeline_schedule = (int)b->schedule;
    if (pipe_train_plan_profiled(&c, m, plan, profile) != PLAIT_OK) die("plan");
}

/* The profile's forward and backward seconds of rank r's stage for all of its micro-batches. */
static void rank_predicted_compute(const plait_plan *plan, const plait_profile *profile, int rank, double *forward,
                                   double *backward) {
    double micro = (double)plan->batch_size / plan->micro_batches;
    for (int s = 0; s < plan->stage_count; s++) {
        const plait_stage *st = &plan->stages[s];
        for (int j = 0; j < st->replica_count; j++) {
            if (st->ranks[j] != rank) continue;
            int own = plan->micro_batches / st->replica_count;
            for (int u = st->first_unit; u < st->last_unit; u++) {
                *forward += profile->units[u].forward_seconds * micro * own;
                *backward += profile->units[u].backward_seconds * micro * own;
            }
        }
    }
}

static void print_stages(const plait_plan *plan, const plait_model *m) {
    printf("\"stages\":[");
    for (int s = 0; s < plan->stage_count; s++) {
        const plait_stage *st = &plan->stages[s];
        printf("%s{\"units\":[%d,%d],\"names\":\"%s..%s\",\"ranks\":[", s ? "," : "", st->first_unit, st->last_unit,
               m->units[st->first_unit].name, m->units[st->last_unit - 1].name);
        for (int j = 0; j < st->replica_count; j++) printf("%s%d", j ? "," : "", st->ranks[j]);
        printf("]}");
    }
    printf("],");
}

int main(int argc, char **argv) {
    if (plait_dist_init(&argc, &argv) != PLAIT_OK) die("MPI");
    bench_options b = parse(argc, argv);
    int rank = plait_dist_rank(), world = plait_dist_size();
    if (plait_train_use_tuning_file() != PLAIT_OK) die("tuning file");
    plait_set_threads(b.threads);
    plait_model *m;
    if (plait_model_create(b.model, (plait_shape){1, 32, 32, 3}, 10, 1, &m) != PLAIT_OK) die("model");

    double plan_start = plait_now();
    plait_plan plan = {0};
    plait_profile profile = {0};
    make_plan(&b, m, &plan, &profile);
    double plan_seconds = plait_now() - plan_start;
    int micro = plan.batch_size / plan.micro_batches;
    const char *profile_source = "planner";
    int profile_micro = 0;
    if (profile.unit_count == 0) {
        profile_source = "measured";
        profile_micro = micro;
        if (plait_profile_measure_shared(m, micro, PLAIT_PROFILE_ITERATIONS, &profile) != PLAIT_OK) die("profile");
    } else {
        /* pipe_train_plan's rule: batch / --microbatches when given, else batch / 2N; an auto search
         * hands over the profile interpolated to the chosen micro-batch size */
        bool searched = !strcmp(b.parallel, "auto") && b.microbatches <= 1 && b.batch / world >= 2;
        profile_micro = b.microbatches > 0 ? b.batch / b.microbatches : b.batch / (2 * world);
        if (profile_micro < 1) profile_micro = 1;
        if (searched) {
            profile_source = "planner, interpolated";
            profile_micro = micro;
        }
    }
    plait_hardware hardware;
    plait_prediction prediction;
    if (plait_hardware_local(world, &hardware) != PLAIT_OK ||
        plait_plan_predict(&plan, &profile, &hardware, &prediction) != PLAIT_OK)
        die("prediction");

    plait_tensor images = {0};
    if (plait_tensor_reserve(&images, (plait_shape){plan.batch_size, 32, 32, 3}) != PLAIT_OK) die("images");
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)plan.batch_size);
    double *step_seconds = malloc(sizeof(double) * (size_t)b.steps);
    if (!labels || !step_seconds) die("out of memory");
    plait_rng rng;
    plait_rng_seed(&rng, 7); /* the same on every rank */
    for (size_t i = 0; i < plait_shape_count(images.shape); i++) images.data[i] = plait_rng_normal(&rng);
    for (int i = 0; i < plan.batch_size; i++) labels[i] = (int32_t)plait_rng_below(&rng, 10);

    bool conventional = !strcmp(b.parallel, "conventional");
    plait_trainer *trainer = NULL;
    plait_executor *executor = NULL;
    if (conventional ? plait_trainer_create(m, &trainer) != PLAIT_OK
                     : plait_executor_create(m, &plan, false, &executor) != PLAIT_OK)
        die("trainer");
    plait_step_options o = {.microbatches = plan.micro_batches, .lr = 0.01f, .momentum = 0.9f,
                            .weight_decay = 5e-4f, .nesterov = true};
    /* Per rank, summed over the timed steps: receive wait, exposed and total all-reduce seconds,
     * forward and backward compute seconds. */
    enum { STATS = 5 };
    double waits[STATS] = {0};
    float loss = 0;
    for (int s = 0; s < b.warmup + b.steps; s++) {
        int correct;
        if (plait_dist_barrier(0) != PLAIT_OK) die("barrier");
        double start = plait_now();
        int status = conventional ? plait_trainer_step(trainer, &o, &images, labels, &loss, &correct)
                                  : plait_executor_step(executor, &o, &images, labels, &loss, &correct);
        if (status != PLAIT_OK) die("step");
        double seconds = plait_now() - start;
        if (s < b.warmup) continue;
        step_seconds[s - b.warmup] = seconds;
        if (executor) {
            plait_executor_stats stats;
            plait_executor_stats_get(executor, &stats);
            waits[0] += stats.receive_wait;
            waits[1] += stats.allreduce_exposed;
            waits[2] += stats.allreduce_communication;
            waits[3] += stats.forward_compute;
            waits[4] += stats.backward_compute;
        }
    }
    double *all_waits = calloc(STATS * (size_t)world, sizeof(double));
    if (!all_waits) die("out of memory");
    if (plait_dist_uses_mpi() && world > 1)
        MPI_Gather(waits, STATS, MPI_DOUBLE, all_waits, STATS, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    else
        memcpy(all_waits, waits, sizeof waits);

    if (rank == 0) {
        double total = 0;
        for (int s = 0; s < b.steps; s++) total += step_seconds[s];
        qsort(step_seconds, (size_t)b.steps, sizeof(double), compare_doubles);
        double median = b.steps % 2 ? step_seconds[b.steps / 2]
                                    : 0.5 * (step_seconds[b.steps / 2 - 1] + step_seconds[b.steps / 2]);
        double exposed = 0;
        for (int r = 0; r < world; r++)
            if (all_waits[STATS * r + 1] > exposed) exposed = all_waits[STATS * r + 1];
        exposed /= b.steps;
        printf("{\"model\":\"%s\",\"config\":\"%s\",\"schedule\":\"%s\",\"ranks\":%d,\"threads\":%d,"
               "\"batch\":%d,\"micro_batches\":%d,\"micro_batch_size\":%d,",
               b.model, b.parallel, plait_schedule_name(plan.schedule), world, b.threads, plan.batch_size,
               plan.micro_batches, micro);
        print_stages(&plan, m);
        printf("\"warmup\":%d,\"steps\":%d,\"step_seconds_median\":%.5f,\"step_seconds_mean\":%.5f,"
               "\"step_seconds_min\":%.5f,\"step_seconds_max\":%.5f,\"images_per_second\":%.3f,",
               b.warmup, b.steps, median, total / b.steps, step_seconds[0], step_seconds[b.steps - 1],
               plan.batch_size / median);
        printf("\"exposed_allreduce_seconds\":%.5f,\"receive_wait_seconds\":[", exposed);
        for (int r = 0; r < world; r++) printf("%s%.5f", r ? "," : "", all_waits[STATS * r] / b.steps);
        printf("],\"allreduce_seconds\":[");
        for (int r = 0; r < world; r++) printf("%s%.5f", r ? "," : "", all_waits[STATS * r + 2] / b.steps);
        printf("],\"compute_seconds\":[");
        for (int r = 0; r < world; r++)
            printf("%s[%.5f,%.5f]", r ? "," : "", all_waits[STATS * r + 3] / b.steps, all_waits[STATS * r + 4] / b.steps);
        printf("],\"predicted_compute_seconds\":[");
        for (int r = 0; r < world; r++) {
            double f = 0, bw = 0;
            rank_predicted_compute(&plan, &profile, r, &f, &bw);
            printf("%s[%.5f,%.5f]", r ? "," : "", f, bw);
        }
        printf("],\"predicted_seconds\":%.5f,\"predicted_pipeline_seconds\":%.5f,"
               "\"predicted_allreduce_seconds\":%.5f,\"predicted_over_measured\":%.4f,"
               "\"profile\":\"%s\",\"profile_micro_batch\":%d,\"plan_seconds\":%.2f,\"loss\":%.4f}\n",
               prediction.seconds, prediction.pipeline_seconds, prediction.exposed_allreduce_seconds,
               prediction.seconds / median, profile_source, profile_micro, plan_seconds, loss);
        fflush(stdout);
    }
    free(all_waits);
    free(step_seconds);
    free(labels);
    plait_tensor_free(&images);
    plait_trainer_free(trainer);
    plait_executor_free(executor);
    plait_hardware_free(&hardware);
    plait_profile_free(&profile);
    plait_plan_free(&plan);
    plait_model_free(m);
    plait_dist_finalize();
    return 0;
}
