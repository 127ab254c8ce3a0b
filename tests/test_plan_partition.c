/* The partitioner: the dynamic program against brute force, its choices, and the simulator
 * against the cost model on the plans it chooses. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plait/pipe.h"
#include "plan_fixtures.h"

static double uniform(plait_rng *rng, double low, double high) {
    return low + (high - low) * plait_rng_uniform(rng);
}

static void random_instance(plait_rng *rng, plait_profile *profile, plait_hardware *hw, int *batch_size) {
    int units = 2 + (int)plait_rng_below(rng, 6), workers = 1 + (int)plait_rng_below(rng, 4);
    double f[8], b[8], params[8];
    for (int u = 0; u < units; u++) {
        f[u] = uniform(rng, 0.001, 0.02);
        b[u] = f[u] * uniform(rng, 1, 3);
        params[u] = plait_rng_below(rng, 4) == 0 ? 0 : uniform(rng, 1e4, 1e7);
    }
    fixture_profile(profile, units, f, b, 0, params, 0);
    double need = 0;
    *batch_size = plait_rng_below(rng, 2) ? 8 : 12;
    for (int u = 0; u < units; u++) {
        profile->units[u].output_bytes = uniform(rng, 1e3, 1e6);
        profile->units[u].memory_bytes = uniform(rng, 1e3, 1e6);
        need += PLAIT_PARAMETER_COPIES * params[u] + *batch_size * profile->units[u].memory_bytes;
    }
    plait_hardware_init(hw, workers, 1, 0, (plait_link){uniform(rng, 1e7, 1e10), uniform(rng, 0, 1e-3)},
                        (plait_link){uniform(rng, 1e7, 1e10), uniform(rng, 0, 1e-3)});
    for (int w = 0; w < workers; w++) {
        hw->speed[w] = uniform(rng, 0.5, 2);
        /* sometimes too small for the whole model, so memory shapes the answer */
        hw->memory_bytes[w] = need * uniform(rng, 0.3, 1.3);
    }
}

static void dynamic_program_equals_brute_force(void) {
    plait_rng rng;
    plait_rng_seed(&rng, 2024);
    int agreed = 0, infeasible = 0, multi_stage = 0, replicated = 0, trials = 400;
    for (int trial = 0; trial < trials; trial++) {
        plait_profile profile;
        plait_hardware hw;
        int batch_size;
        random_instance(&rng, &profile, &hw, &batch_size);
        int candidates[3] = {1, 2, 4};
        plait_planner_options options = {.batch_size = batch_size,
                                         .micro_batch_candidates = candidates,
                                         .candidate_count = 3,
                                         .schedule = trial % 2 ? PLAIT_SCHEDULE_1F1B : PLAIT_SCHEDULE_GPIPE,
                                         .bucket_bytes = uniform(&rng, 1e5, 1e7),
                                         .streams = 1 + trial % 3};
        plait_plan dp, brute;
        double dp_seconds = 0, brute_seconds = 0;
        int dp_status = plait_partition(&profile, &hw, &options, &dp, &dp_seconds);
        char dp_error[512];
        snprintf(dp_error, sizeof dp_error, "%s", plait_last_error());
        int brute_status = plait_partition_brute_force(&profile, &hw, &options, &brute, &brute_seconds);
        CHECKF(dp_status == brute_status, "trial %d: dp %d (%s), brute force %d", trial, dp_status, dp_error,
               brute_status);
        if (dp_status == PLAIT_OK && brute_status == PLAIT_OK) {
            CHECKF(fabs(dp_seconds - brute_seconds) <= 1e-9 * brute_seconds, "trial %d: dp %.17g brute %.17g", trial,
                   dp_seconds, brute_seconds);
            CHECK(plait_plan_validate(&dp, hw.worker_count, profile.unit_count, &profile, &hw) == PLAIT_OK);
            plait_prediction prediction;
            CHECK(plait_plan_predict(&dp, &profile, &hw, &prediction) == PLAIT_OK);
            CHECKF(fabs(prediction.seconds - dp_seconds) <= 1e-9 * dp_seconds, "trial %d: plan %.17g dp %.17g",
                   trial, prediction.seconds, dp_seconds);
            agreed++;
            multi_stage += dp.stage_count > 1;
            for (int s = 0; s < dp.stage_count; s++) replicated += dp.stages[s].replica_count > 1 && dp.stage_count > 1;
        } else if (dp_status == PLAIT_ERROR && brute_status == PLAIT_ERROR) {
            CHECK(strstr(dp_error, "no plan fits") != NULL);
            infeasible++;
        }
        if (dp_status == PLAIT_OK) plait_plan_free(&dp);
        if (brute_status == PLAIT_OK) plait_plan_free(&brute);
        plait_hardware_free(&hw);
        plait_profile_free(&profile);
    }
    /* the instances must exercise every branch, or the agreement means little */
    fprintf(stderr, "  %d agreed (%d pipelines, %d replicated stages in pipelines), %d infeasible\n", agreed,
            multi_stage, replicated, infeasible);
    CHECK(agreed + infeasible == trials);
    CHECK(infeasible > 10 && multi_stage > 20 && replicated > 5);
}

static void balanced_free_communication_gives_data_parallelism(void) {
    double f[8], b[8], params[8];
    for (int u = 0; u < 8; u++) {
        f[u] = 0.01;
        b[u] = 0.02;
        params[u] = 1e6;
    }
    plait_profile profile;
    fixture_profile(&profile, 8, f, b, 1e5, params, 1e5);
    plait_hardware hw;
    plait_hardware_init(&hw, 4, 1, 1e12, (plait_link){1e30, 0}, (plait_link){1e30, 0});
    plait_planner_options options = {.batch_size = 32, .schedule = PLAIT_SCHEDULE_1F1B, .bucket_bytes = 1e6,
                                     .streams = 1};
    plait_plan plan;
    double seconds;
    CHECK(plait_partition(&profile, &hw, &options, &plan, &seconds) == PLAIT_OK);
    CHECK(plan.stage_count == 1 && plan.stages[0].replica_count == 4);
    /* 32 samples * 0.24 s of work over 4 workers */
    CHECKF(fabs(seconds - 32 * 0.24 / 4) < 1e-9, "%g", seconds);
    plait_plan_free(&plan);
    plait_hardware_free(&hw);
    plait_profile_free(&profile);
}

static void huge_parameters_on_a_slow_link_give_a_pipeline(void) {
    double f[4] = {0.001, 0.001, 0.001, 0.001}, b[4] = {0.002, 0.002, 0.002, 0.002}, params[4] = {1e9, 1e9, 1e9, 1e9};
    plait_profile profile;
    fixture_profile(&profile, 4, f, b, 1e3, params, 1e3);
    plait_hardware hw;
    plait_hardware_init(&hw, 4, 1, 1e12, (plait_link){1e10, 1e-6}, (plait_link){1e8, 1e-5});
    plait_planner_options options = {.batch_size = 64, .schedule = PLAIT_SCHEDULE_1F1B, .bucket_bytes = 25e6,
                                     .streams = 2};
    plait_plan plan;
    double seconds;
    CHECK(plait_partition(&profile, &hw, &options, &plan, &seconds) == PLAIT_OK);
    CHECK(plan.stage_count == 4);
    for (int s = 0; s < plan.stage_count; s++)
        CHECK(plan.stages[s].replica_count == 1 && plan.stages[s].last_unit == s + 1);
    /* more micro-batches shrink the bubble, so the largest candidate wins */
    CHECK(plan.micro_batches == 64);
    plait_plan_free(&plan);
    plait_hardware_free(&hw);
    plait_profile_free(&profile);
}

/* Per-sample seconds of a unit costing `fixed` per micro-batch plus `per_sample` per sample. */
static double affine_cost(double fixed, double per_sample, int micro) { return (fixed + per_sample * micro) / micro; }

static void profile_interpolation_is_affine_per_micro_batch(void) {
    plait_profile small, large, out;
    /* unit 0: 0.1 s per micro-batch + 0.01 s per sample; unit 1 (backward): no fixed cost */
    fixture_profile(&small, 2, (double[]){affine_cost(0.1, 0.01, 2), 0.02}, (double[]){0.03, affine_cost(0.1, 0.01, 2)},
                    7, (double[]){5, 6}, 9);
    fixture_profile(&large, 2, (double[]){affine_cost(0.1, 0.01, 32), 0.02}, (double[]){0.03, affine_cost(0.1, 0.01, 32)},
                    8, (double[]){5, 6}, 10);
    CHECK(plait_profile_interpolate(&small, 2, &large, 32, 8, &out) == PLAIT_OK);
    CHECKF(fabs(out.units[0].forward_seconds - affine_cost(0.1, 0.01, 8)) < 1e-12, "%g", out.units[0].forward_seconds);
    CHECKF(fabs(out.units[1].backward_seconds - affine_cost(0.1, 0.01, 8)) < 1e-12, "%g", out.units[1].backward_seconds);
    CHECK(fabs(out.units[1].forward_seconds - 0.02) < 1e-12 && fabs(out.units[0].backward_seconds - 0.03) < 1e-12);
    /* bytes come from the larger measurement; extrapolation follows the same line */
    CHECK(out.units[0].output_bytes == 8 && out.units[1].memory_bytes == 10 && out.units[1].parameter_bytes == 6);
    plait_profile_free(&out);
    CHECK(plait_profile_interpolate(&small, 2, &large, 32, 128, &out) == PLAIT_OK);
    CHECK(fabs(out.units[0].forward_seconds - affine_cost(0.1, 0.01, 128)) < 1e-12);
    plait_profile_free(&out);
    /* noise: a smaller micro-batch measured cheaper per sample gives no negative fixed cost */
    small.units[0].forward_seconds = 0.005;
    large.units[0].forward_seconds = 0.01;
    CHECK(plait_profile_interpolate(&small, 2, &large, 32, 4, &out) == PLAIT_OK);
    CHECKF(fabs(out.units[0].forward_seconds - 0.01) < 1e-12, "%g", out.units[0].forward_seconds);
    plait_profile_free(&out);
    CHECK(plait_profile_interpolate(&small, 32, &large, 32, 4, &out) == PLAIT_ERROR);
    CHECK(strstr(plait_last_error(), "needs 1 <= small (32) < large (32)") != NULL);
    plait_profile_free(&small);
    plait_profile_free(&large);
}

/* With a fixed cost per micro-batch, auto prices each micro-batch count on its own profile and finds
 * the count the exact cost says is best, not the most micro-batches a linear profile favours. */
static void auto_search_prices_each_micro_batch_size(void) {
    enum { UNITS = 4 };
    double params[UNITS] = {1e9, 1e9, 1e9, 1e9}, fixed = 0.02, per_sample = 0.001;
    plait_profile small, large;
    double f_small[UNITS], b_small[UNITS], f_large[UNITS], b_large[UNITS];
    for (int u = 0; u < UNITS; u++) {
        f_small[u] = affine_cost(fixed, per_sample, 2), b_small[u] = affine_cost(2 * fixed, 2 * per_sample, 2);
        f_large[u] = affine_cost(fixed, per_sample, 16), b_large[u] = affine_cost(2 * fixed, 2 * per_sample, 16);
    }
    fixture_profile(&small, UNITS, f_small, b_small, 1e3, params, 1e3);
    fixture_profile(&large, UNITS, f_large, b_large, 1e3, params, 1e3);
    plait_hardware hw;
    plait_hardware_init(&hw, 4, 1, 1e12, (plait_link){1e10, 1e-6}, (plait_link){1e8, 1e-5});
    char path[512];
    snprintf(path, sizeof path, "%s/hw4.json", testing_temp_dir());
    CHECK(plait_hardware_write(path, &hw) == PLAIT_OK);
    plait_parallel_options o = {.kind = PLAIT_PARALLEL_AUTO, .workers = 4, .batch_size = 64,
                                .schedule = PLAIT_SCHEDULE_1F1B, .bucket_bytes = 25e6, .streams = 2,
                                .hardware_path = path, .small_profile = &small, .small_micro_batch = 2,
                                .profile_micro_batch = 16};
    plait_plan plan;
    CHECK(plait_parallel_plan(NULL, &large, &o, &plan) == PLAIT_OK);
    /* the exact optimum: every count priced on its exact (affine) profile */
    double best = INFINITY;
    int best_count = 0;
    for (int count = 1; count <= 64; count *= 2) {
        plait_profile exact;
        double f[UNITS], b[UNITS], seconds;
        int micro = 64 / count;
        for (int u = 0; u < UNITS; u++)
            f[u] = affine_cost(fixed, per_sample, micro), b[u] = affine_cost(2 * fixed, 2 * per_sample, micro);
        fixture_profile(&exact, UNITS, f, b, 1e3, params, 1e3);
        plait_planner_options options = {.batch_size = 64, .micro_batch_candidates = &count, .candidate_count = 1,
                                         .schedule = PLAIT_SCHEDULE_1F1B, .bucket_bytes = 25e6, .streams = 2};
        plait_plan candidate;
        CHECK(plait_partition(&exact, &hw, &options, &candidate, &seconds) == PLAIT_OK);
        if (seconds < best) best = seconds, best_count = count;
        plait_plan_free(&candidate);
        plait_profile_free(&exact);
    }
    CHECKF(plan.micro_batches == best_count && best_count > 1 && best_count < 64, "chose %d, best %d",
           plan.micro_batches, best_count);
    CHECK(plan.stage_count == 4);
    plait_plan_free(&plan);
    plait_hardware_free(&hw);
    plait_profile_free(&small);
    plait_profile_free(&large);
}

static void no_plan_fits_memory(void) {
    plait_profile profile;
    fixture_profile(&profile, 2, (double[]){1, 1}, (double[]){1, 1}, 10, (double[]){1e6, 1e6}, 10);
    plait_hardware hw;
    plait_hardware_init(&hw, 2, 1, 2.9e6, (plait_link){1e9, 0}, (plait_link){1e9, 0});
    plait_planner_options options = {.batch_size = 4};
    plait_plan plan;
    CHECK(plait_partition(&profile, &hw, &options, &plan, NULL) == PLAIT_ERROR);
    CHECK(strstr(plait_last_error(), "planner: no plan fits") != NULL);
    CHECK(plan.stages == NULL);
    /* 3e6 parameter bytes plus 10 bytes per sample kept: one unit per worker fits */
    hw.memory_bytes[0] = hw.memory_bytes[1] = 3.1e6;
    CHECK(plait_partition(&profile, &hw, &options, &plan, NULL) == PLAIT_OK);
    CHECK(plan.stage_count == 2);
    plait_plan_free(&plan);
    int bad[1] = {3};
    options.micro_batch_candidates = bad;
    options.candidate_count = 1;
    CHECK(plait_partition(&profile, &hw, &options, &plan, NULL) == PLAIT_ERROR);
    CHECK(strstr(plait_last_error(), "micro-batch count 3 does not divide the batch size 4") != NULL);
    plait_hardware_free(&hw);
    plait_profile_free(&profile);
    /* GPipe keeps every micro-batch of a replica: 8 samples x 100 bytes on a stage of one unit,
     * or 4 samples x 200 bytes on a replica of both. 1F1B keeps one micro-batch on the last stage
     * (alternating forward and backward), so data parallelism with 8 micro-batches fits */
    fixture_profile(&profile, 2, (double[]){1, 1}, (double[]){1, 1}, 10, NULL, 100);
    plait_hardware_init(&hw, 2, 1, 500, (plait_link){1e9, 0}, (plait_link){1e9, 0});
    options = (plait_planner_options){.batch_size = 8, .schedule = PLAIT_SCHEDULE_GPIPE};
    CHECK(plait_partition(&profile, &hw, &options, &plan, NULL) == PLAIT_ERROR);
    options.schedule = PLAIT_SCHEDULE_1F1B;
    CHECK(plait_partition(&profile, &hw, &options, &plan, NULL) == PLAIT_OK);
    CHECKF(plan.stage_count == 1 && plan.micro_batches >= 4, "%d stages, m=%d", plan.stage_count,
           plan.micro_batches);
    CHECK(plait_stage_memory_bytes(&plan, &profile, 0) == 200.0 * 8 / plan.micro_batches);
    CHECK(plait_plan_validate(&plan, 2, 2, &profile, &hw) == PLAIT_OK);
    plan.schedule = PLAIT_SCHEDULE_GPIPE;
    CHECK(plait_plan_validate(&plan, 2, 2, &profile, &hw) == PLAIT_ERROR);
    CHECK(strstr(plait_last_error(), "plan: stage 0 needs 800 bytes per rank but rank 0 has 500 bytes") != NULL);
    plait_plan_free(&plan);
    plait_hardware_free(&hw);
    plait_profile_free(&profile);
}

/* A ResNet-50-like profile: stem, 16 bottleneck blocks, head (costs per sample, speed 1). */
static void resnet_like_profile(plait_profile *profile) {
    const int blocks[4] = {3, 4, 6, 3};
    plait_profile_init(profile, 18);
    int u = 0;
    profile->units[u++] = (plait_unit_cost){"stem", 0.004, 0.008, 802816, 37632, 4e6};
    for (int layer = 0; layer < 4; layer++)
        for (int k = 0; k < blocks[layer]; k++, u++) {
            plait_unit_cost *c = &profile->units[u];
            snprintf(c->name, sizeof c->name, "layer%d.%d", layer + 1, k);
            c->forward_seconds = 0.0035 * (k == 0 ? 1.4 : 1.0);
            c->backward_seconds = 2 * c->forward_seconds;
            c->output_bytes = 802816.0 / (1 << layer);
            c->parameter_bytes = 280e3 * (1 << (2 * layer)) * (k == 0 ? 1.5 : 1.0);
            c->memory_bytes = 6e6 / (1 << layer);
        }
    profile->units[u] = (plait_unit_cost){"head", 0.0002, 0.0004, 4000, 8.2e6, 1e4};
}

static void simulator_agrees_with_the_dynamic_program(void) {
    plait_profile profile;
    resnet_like_profile(&profile);
    double worst = 0;
    int cases = 0;
    int pipelines = 0, hybrids = 0;
    const int worker_counts[3] = {2, 4, 8};
    const double bandwidths[3] = {1e6, 1e7, 1e9};
    for (int w = 0; w < 3; w++)
        for (int bw = 0; bw < 3; bw++)
            for (int kind = 0; kind < 2; kind++) {
                plait_hardware hw;
                plait_hardware_init(&hw, worker_counts[w], 1, 16e9, (plait_link){1e9, 2e-5},
                                    (plait_link){bandwidths[bw], 2e-5});
                int candidates[5] = {1, 2, 4, 8, 16};
                plait_planner_options options = {.batch_size = 128, .micro_batch_candidates = candidates,
                                                 .candidate_count = 5,
                                                 .schedule = kind ? PLAIT_SCHEDULE_1F1B : PLAIT_SCHEDULE_GPIPE,
                                                 .bucket_bytes = 25e6, .streams = 2};
                plait_plan plan;
                double predicted;
                CHECK(plait_partition(&profile, &hw, &options, &plan, &predicted) == PLAIT_OK);
                double params[18];
                for (int u = 0; u < 18; u++) params[u] = profile.units[u].parameter_bytes;
                plait_schedule sc;
                plait_simulation sim;
                CHECK(plait_schedule_build(&plan, params, &sc) == PLAIT_OK);
                CHECK(plait_simulate(&plan, &sc, &profile, &hw, NULL, &sim) == PLAIT_OK);
                double error = fabs(sim.seconds - predicted) / predicted;
                if (error > worst) worst = error;
                CHECKF(error <= 0.10, "%d workers, %g B/s, %s: simulated %g s, predicted %g s (%d stages, m=%d)",
                       worker_counts[w], bandwidths[bw], plait_schedule_name(plan.schedule), sim.seconds, predicted,
                       plan.stage_count, plan.micro_batches);
                cases++;
                pipelines += plan.stage_count > 1;
                hybrids += plan.stage_count > 1 && plan.stage_count < worker_counts[w];
                if (getenv("PLAIT_TEST_VERBOSE"))
                    fprintf(stderr, "  %d workers %g B/s %s: %d stages m=%d predicted %g simulated %g\n",
                            worker_counts[w], bandwidths[bw], plait_schedule_name(plan.schedule), plan.stage_count,
                            plan.micro_batches, predicted, sim.seconds);
                plait_simulation_free(&sim);
                plait_schedule_free(&sc);
                plait_plan_free(&plan);
                plait_hardware_free(&hw);
            }
    fprintf(stderr, "  %d plans (%d pipelines, %d hybrids), worst |simulated - predicted| / predicted = %.3f\n",
            cases, pipelines, hybrids, worst);
    CHECK(pipelines >= 4 && hybrids >= 2);
    plait_profile_free(&profile);
}

/* Random models and machines: the worst disagreement per schedule on the chosen plans. */
static void simulator_agrees_on_random_instances(void) {
    plait_rng rng;
    plait_rng_seed(&rng, 77);
    double worst[2] = {0, 0}, worst_hybrid = 0;
    int hybrids = 0;
    for (int trial = 0; trial < 120; trial++) {
        int units = 6 + (int)plait_rng_below(&rng, 9), workers = 2 + (int)plait_rng_below(&rng, 7);
        plait_profile profile;
        plait_profile_init(&profile, units);
        for (int u = 0; u < units; u++) {
            plait_unit_cost *c = &profile.units[u];
            snprintf(c->name, sizeof c->name, "u%d", u);
            c->forward_seconds = uniform(&rng, 0.001, 0.004);
            c->backward_seconds = c->forward_seconds * uniform(&rng, 1.5, 2.5);
            c->output_bytes = exp(uniform(&rng, log(1e4), log(1e6)));
            c->parameter_bytes = exp(uniform(&rng, log(1e5), log(5e7)));
            c->memory_bytes = 10 * c->output_bytes;
        }
        plait_hardware hw;
        plait_hardware_init(&hw, workers, 1, 64e9, (plait_link){exp(uniform(&rng, log(1e8), log(1e10))), 2e-5},
                            (plait_link){exp(uniform(&rng, log(1e6), log(1e10))), 2e-5});
        int kind = trial % 2;
        int candidates[6] = {1, 2, 4, 8, 16, 32};
        plait_planner_options options = {.batch_size = 64, .micro_batch_candidates = candidates,
                                         .candidate_count = 6,
                                         .schedule = kind ? PLAIT_SCHEDULE_1F1B : PLAIT_SCHEDULE_GPIPE,
                                         .bucket_bytes = 25e6, .streams = 2};
        plait_plan plan;
        double predicted;
        CHECK(plait_partition(&profile, &hw, &options, &plan, &predicted) == PLAIT_OK);
        double params[16];
        for (int u = 0; u < units; u++) params[u] = profile.units[u].parameter_bytes;
        plait_schedule sc;
        plait_simulation sim;
        CHECK(plait_schedule_build(&plan, params, &sc) == PLAIT_OK);
        CHECK(plait_simulate(&plan, &sc, &profile, &hw, NULL, &sim) == PLAIT_OK);
        double error = fabs(sim.seconds - predicted) / predicted;
        bool hybrid = false;
        for (int s = 0; s < plan.stage_count; s++) hybrid |= plan.stage_count > 1 && plan.stages[s].replica_count > 1;
        if (error > worst[kind]) worst[kind] = error;
        if (hybrid) {
            hybrids++;
            if (error > worst_hybrid) worst_hybrid = error;
        }
        if (getenv("PLAIT_TEST_VERBOSE") && error > 0.05)
            fprintf(stderr, "  trial %d %s: %d stages%s m=%d predicted %g simulated %g\n", trial,
                    plait_schedule_name(plan.schedule), plan.stage_count, hybrid ? " (hybrid)" : "",
                    plan.micro_batches, predicted, sim.seconds);
        CHECKF(error <= 0.10, "trial %d: simulated %g predicted %g", trial, sim.seconds, predicted);
        plait_simulation_free(&sim);
        plait_schedule_free(&sc);
        plait_plan_free(&plan);
        plait_hardware_free(&hw);
        plait_profile_free(&profile);
    }
    fprintf(stderr, "  worst |simulated - predicted| / predicted: gpipe %.3f, 1f1b %.3f, %d hybrids %.3f\n",
            worst[0], worst[1], hybrids, worst_hybrid);
}

static void plan_table(void) {
    plait_profile profile;
    resnet_like_profile(&profile);
    plait_hardware hw;
    plait_hardware_init(&hw, 4, 1, 16e9, (plait_link){1e9, 2e-5}, (plait_link){1e8, 2e-5});
    plait_planner_options options = {.batch_size = 128, .schedule = PLAIT_SCHEDULE_1F1B, .bucket_bytes = 25e6,
                                     .streams = 2};
    plait_plan plan;
    double predicted;
    CHECK(plait_partition(&profile, &hw, &options, &plan, &predicted) == PLAIT_OK);
    char *text = NULL;
    size_t length = 0;
    FILE *out = open_memstream(&text, &length);
    CHECK(plait_plan_format_table(out, &plan, &profile, &hw) == PLAIT_OK);
    fclose(out);
    fputs(text, stderr);
    CHECK(strstr(text, "stage units") != NULL);
    CHECK(strstr(text, "(bottleneck)") != NULL);
    char line[128];
    snprintf(line, sizeof line, "predicted time per mini-batch: %.4g s", predicted);
    CHECK(strstr(text, line) != NULL);
    /* one worker runs all 128 samples through every unit with no communication */
    double work = 0;
    for (int u = 0; u < 18; u++) work += profile.units[u].forward_seconds + profile.units[u].backward_seconds;
    snprintf(line, sizeof line, "speedup over one worker: %.2fx", 128 * work / predicted);
    CHECK(strstr(text, line) != NULL);
    CHECK(strstr(text, "speedup over pure data parallelism on 4 workers: ") != NULL);
    int rows = 0;
    for (const char *p = text; (p = strstr(p, "\n")) && p[1]; p++) rows += p[1] >= '0' && p[1] <= '9';
    CHECK(rows == plan.stage_count);
    free(text);
    plait_plan_free(&plan);
    plait_hardware_free(&hw);
    plait_profile_free(&profile);
}

int main(void) {
    testing_run("dynamic_program_equals_brute_force", dynamic_program_equals_brute_force);
    testing_run("balanced_free_communication_gives_data_parallelism", balanced_free_communication_gives_data_parallelism);
    testing_run("huge_parameters_on_a_slow_link_give_a_pipeline", huge_parameters_on_a_slow_link_give_a_pipeline);
    testing_run("no_plan_fits_memory", no_plan_fits_memory);
    testing_run("profile_interpolation_is_affine_per_micro_batch", profile_interpolation_is_affine_per_micro_batch);
    testing_run("auto_search_prices_each_micro_batch_size", auto_search_prices_each_micro_batch_size);
    testing_run("simulator_agrees_with_the_dynamic_program", simulator_agrees_with_the_dynamic_program);
    testing_run("simulator_agrees_on_random_instances", simulator_agrees_on_random_instances);
    testing_run("plan_table", plan_table);
    return testing_finish();
}
