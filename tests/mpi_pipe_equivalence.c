/* The executor on 2 ranks equals sequential training with the same micro-batches: data parallelism
 * (one stage, two replicas) and a 2-stage pipeline of 4 micro-batches under GPipe and 1F1B. Bad
 * plans are refused before training with a message naming the problem. */
#include <stdio.h>
#include <unistd.h>

#include "mpi_pipe_equivalence.h"
#include "pipe/pipe_internal.h"
#include "plait/tune.h"

/* Worst relative difference of one stage of 2 replicas after `steps` steps against sequential training. */
static double data_parallel_worst(int micro_batches, plait_schedule_kind schedule, int steps) {
    plait_plan plan;
    int replicas[] = {2}, bounds[] = {0, 11};
    eq_plan(&plan, 1, replicas, bounds, micro_batches, schedule);
    double worst = eq_run(&plan, steps);
    plait_plan_free(&plan);
    return worst;
}

/* One step only: two micro-batches per replica are added in another order than sequential training adds
 * them, and later steps can turn that rounding into a jump (mpi_pipe_equivalence_np3.c says why). */
static void data_parallel(void) {
    double worst = data_parallel_worst(4, PLAIT_SCHEDULE_1F1B, 1);
    CHECKF(worst >= 0 && worst <= 1e-5, "data parallel: relative difference %g", worst);
}

/* One micro-batch per replica adds what sequential training adds, in the same order: several steps. */
static void data_parallel_one_microbatch_each(void) {
    double worst = data_parallel_worst(2, PLAIT_SCHEDULE_GPIPE, 4);
    CHECKF(worst >= 0 && worst <= 1e-5, "data parallel, 2 micro-batches: relative difference %g", worst);
}

/* The other tests pin the direct kernels (main), whose results do not depend on the tuning file or the
 * machine's defaults. One step with the default kernels (Winograd and im2col + BLAS on AVX2) still has to
 * match to rounding. */
static void data_parallel_fast_defaults(void) {
    plait_conv_set_fast_defaults(true);
    double worst = data_parallel_worst(4, PLAIT_SCHEDULE_1F1B, 1);
    CHECKF(worst >= 0 && worst <= 1e-5, "data parallel, default kernels, one step: relative difference %g", worst);
    plait_conv_set_fast_defaults(false);
}

static void pipeline(plait_schedule_kind schedule) {
    plait_plan plan;
    int replicas[] = {1, 1}, bounds[] = {0, 5, 11};
    eq_plan(&plan, 2, replicas, bounds, 4, schedule);
    double worst = eq_run(&plan, 4);
    CHECKF(worst >= 0 && worst <= 1e-5, "2-stage %s: relative difference %g", plait_schedule_name(schedule), worst);
    plait_plan_free(&plan);
}

static void pipeline_gpipe(void) { pipeline(PLAIT_SCHEDULE_GPIPE); }
static void pipeline_1f1b(void) { pipeline(PLAIT_SCHEDULE_1F1B); }

/* A plan file in a directory rank 0 made (shared through a broadcast of its name). */
static void shared_dir(char *dir, size_t size) {
    if (plait_dist_rank() == 0) {
        snprintf(dir, size, "/tmp/plait_pipe_test_XXXXXX");
        if (!mkdtemp(dir)) dir[0] = 0;
    }
    MPI_Bcast(dir, (int)size, MPI_CHAR, 0, MPI_COMM_WORLD);
}

static void write_shared(const char *path, const char *text) {
    if (plait_dist_rank() == 0) {
        FILE *f = fopen(path, "w");
        if (f) {
            fputs(text, f);
            fclose(f);
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void refused(const char *dir, const char *name, const char *json, const char *expected,
                    const char *hardware) {
    char path[600], hardware_path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(hardware_path, sizeof hardware_path, "%s/hardware.json", dir);
    write_shared(path, json);
    if (hardware) write_shared(hardware_path, hardware);
    plait_model *m;
    CHECK(plait_model_create("resnet20", (plait_shape){1, 8, 8, 3}, 10, 1, &m) == PLAIT_OK);
    plait_train_config c;
    plait_train_config_defaults(&c);
    c.plan_path = path;
    c.hardware_path = hardware ? hardware_path : NULL;
    plait_plan plan = {0};
    CHECK(pipe_train_plan(&c, m, &plan) == PLAIT_ERROR);
    const char *error = plait_last_error();
    CHECKF(strstr(error, expected) && strstr(error, name) && !strchr(error, '\n'), "%s: got \"%s\"", name, error);
    plait_plan_free(&plan);
    plait_model_free(m);
}

static void bad_plans_refused(void) {
    char dir[64];
    shared_dir(dir, sizeof dir);
    CHECK(dir[0] != 0);
    refused(dir, "three_ranks.json",
            "{\"batch_size\": 8, \"micro_batches\": 4, \"schedule\": \"gpipe\", \"bucket_bytes\": 1e6, \"streams\": 1,"
            " \"stages\": [{\"units\": [0, 5], \"ranks\": [0]}, {\"units\": [5, 11], \"ranks\": [1, 2]}]}",
            "world has 2 ranks", NULL);
    refused(dir, "empty.json",
            "{\"batch_size\": 8, \"micro_batches\": 4, \"schedule\": \"gpipe\", \"bucket_bytes\": 1e6, \"streams\": 1,"
            " \"stages\": [{\"units\": [0, 0], \"ranks\": [0]}, {\"units\": [0, 11], \"ranks\": [1]}]}",
            "empty", NULL);
    refused(dir, "range.json",
            "{\"batch_size\": 8, \"micro_batches\": 4, \"schedule\": \"1f1b\", \"bucket_bytes\": 1e6, \"streams\": 1,"
            " \"stages\": [{\"units\": [0, 5], \"ranks\": [0]}, {\"units\": [5, 14], \"ranks\": [1]}]}",
            "the model has 11 units", NULL);
    /* fits the world and the model, but not the memory of the hardware it is meant for */
    refused(dir, "memory.json",
            "{\"batch_size\": 8, \"micro_batches\": 4, \"schedule\": \"gpipe\", \"bucket_bytes\": 1e6, \"streams\": 1,"
            " \"stages\": [{\"units\": [0, 5], \"ranks\": [0]}, {\"units\": [5, 11], \"ranks\": [1]}]}",
            "bytes per rank but rank 0 has 1000000 bytes",
            "{\"worker_count\": 2, \"memory_bytes\": 1e6, \"p2p\": {\"bandwidth\": 1e9, \"latency\": 2e-5},"
            " \"allreduce\": {\"bandwidth\": 1e9, \"latency\": 2e-5}}");
    /* the executor checks too, for callers that skip the file */
    plait_plan plan;
    int replicas[] = {1}, bounds[] = {0, 11};
    eq_plan(&plan, 1, replicas, bounds, 4, PLAIT_SCHEDULE_GPIPE);
    plait_model *m;
    CHECK(plait_model_create("resnet20", (plait_shape){1, 8, 8, 3}, 10, 1, &m) == PLAIT_OK);
    plait_executor *e = NULL;
    CHECK(plait_executor_create(m, &plan, false, &e) == PLAIT_ERROR && e == NULL);
    CHECKF(strstr(plait_last_error(), "1 ranks but the world has 2"), "%s", plait_last_error());
    plait_model_free(m);
    plait_plan_free(&plan);
    MPI_Barrier(MPI_COMM_WORLD);
    if (plait_dist_rank() == 0) {
        char command[200];
        snprintf(command, sizeof command, "rm -rf %s", dir);
        CHECK(system(command) == 0);
    }
}

/* The min-max split against every split of small random instances. */
static void balanced_split_is_optimal(void) {
    plait_rng rng;
    plait_rng_seed(&rng, 5);
    for (int trial = 0; trial < 200; trial++) {
        int units = 1 + (int)plait_rng_below(&rng, 9), parts = 1 + (int)plait_rng_below(&rng, (uint32_t)units);
        double w[9];
        for (int u = 0; u < units; u++) w[u] = 0.1 + (double)plait_rng_below(&rng, 100);
        int b[10];
        CHECK(plait_split_balanced(w, units, parts, b) == PLAIT_OK);
        double got = 0;
        bool valid = b[0] == 0 && b[parts] == units;
        for (int k = 0; k < parts; k++) {
            double sum = 0;
            valid = valid && b[k + 1] > b[k];
            for (int u = b[k]; u < b[k + 1] && valid; u++) sum += w[u];
            if (sum > got) got = sum;
        }
        CHECKF(valid, "trial %d: boundaries are not a split", trial);
        /* brute force: every choice of parts-1 cut points among units-1 */
        double best = 1e300;
        for (unsigned mask = 0; mask < (1u << (units - 1)); mask++) {
            if (__builtin_popcount(mask) != parts - 1) continue;
            double heaviest = 0, sum = 0;
            for (int u = 0; u < units; u++) {
                sum += w[u];
                if (u == units - 1 || (mask >> u & 1)) {
                    if (sum > heaviest) heaviest = sum;
                    sum = 0;
                }
            }
            if (heaviest < best) best = heaviest;
        }
        CHECKF(got == best, "trial %d: heaviest stage %g, brute force %g", trial, got, best);
    }
    int b[3];
    double w[2] = {1, 1};
    CHECK(plait_split_balanced(w, 2, 3, b) == PLAIT_ERROR);
    CHECKF(strstr(plait_last_error(), "2 units into 3"), "%s", plait_last_error());
}

/* Plans for --parallel: every rank gets the same plan (auto and pipe share one profile), and
 * the profile describes the model. */
static void parallel_plans_agree(void) {
    plait_model *m;
    CHECK(plait_model_create("resnet20", (plait_shape){1, 16, 16, 3}, 10, 1, &m) == PLAIT_OK);
    plait_profile profile;
    CHECK(plait_profile_measure_shared(m, 4, 1, &profile) == PLAIT_OK);
    CHECK(profile.unit_count == m->unit_count);
    double parameters = 0;
    for (int u = 0; u < profile.unit_count; u++) {
        const plait_unit_cost *c = &profile.units[u];
        CHECKF(c->forward_seconds > 0 && c->backward_seconds > 0 && c->memory_bytes > 0, "unit %d", u);
        CHECK(c->output_bytes == 4.0 * (double)plait_shape_count(m->units[u].out_shape));
        CHECK(strcmp(c->name, m->units[u].name) == 0);
        parameters += c->parameter_bytes;
    }
    CHECK(parameters == 4.0 * (double)plait_model_param_count(m));
    /* every rank measured, and every rank holds the very same numbers */
    double seconds[2] = {0, 0}, low[2], high[2];
    for (int u = 0; u < profile.unit_count; u++)
        seconds[0] += profile.units[u].forward_seconds, seconds[1] += profile.units[u].backward_seconds;
    MPI_Allreduce(seconds, low, 2, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(seconds, high, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    CHECK(low[0] == high[0] && low[1] == high[1]);
    plait_profile_free(&profile);
    const char *kinds[] = {"dp", "pipe", "auto"};
    for (int k = 0; k < 3; k++) {
        plait_train_config c;
        plait_train_config_defaults(&c);
        c.parallel = kinds[k];
        c.batch_size = 16;
        plait_plan plan = {0};
        CHECKF(pipe_train_plan(&c, m, &plan) == PLAIT_OK, "%s: %s", kinds[k], plait_last_error());
        if (!plan.stages) continue;
        CHECK(plait_plan_validate(&plan, 2, m->unit_count, NULL, NULL) == PLAIT_OK);
        int mine[4] = {plan.stage_count, plan.micro_batches, plan.stages[0].last_unit, plan.stages[0].replica_count};
        int low[4], high[4];
        MPI_Allreduce(mine, low, 4, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        MPI_Allreduce(mine, high, 4, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        CHECKF(memcmp(low, high, sizeof low) == 0, "%s: ranks made different plans", kinds[k]);
        if (k == 0) CHECK(plan.stage_count == 1 && plan.stages[0].replica_count == 2 && plan.micro_batches == 2);
        if (k == 1) CHECK(plan.stage_count == 2 && plan.micro_batches == 4);
        plait_plan_free(&plan);
    }
    plait_model_free(m);
}

int main(int argc, char **argv) {
    plait_dist_init(&argc, &argv);
    plait_set_threads(1);
    plait_conv_set_fast_defaults(false);
    mpi_testing_run("data parallel on 2 ranks, 4 micro-batches, one step, equals sequential", data_parallel);
    mpi_testing_run("data parallel, default kernels, one step", data_parallel_fast_defaults);
    mpi_testing_run("data parallel, one micro-batch per replica", data_parallel_one_microbatch_each);
    mpi_testing_run("2-stage pipeline, GPipe, 4 micro-batches", pipeline_gpipe);
    mpi_testing_run("2-stage pipeline, 1F1B, 4 micro-batches", pipeline_1f1b);
    mpi_testing_run("bad plans are refused before training", bad_plans_refused);
    mpi_testing_run("balanced split equals brute force", balanced_split_is_optimal);
    mpi_testing_run("plans for --parallel dp, pipe and auto agree on every rank", parallel_plans_agree);
    return mpi_testing_finish();
}
