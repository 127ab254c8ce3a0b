#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "plait/pipe.h"
#include "plait/plan.h"

static const char *plan_help =
    "usage: plait plan --model NAME --workers N [flags]\n"
    "\n"
    "Measures the model's per-unit costs on this machine (or reads a profile), then partitions it into\n"
    "pipeline stages with replicas for the given workers, and prints the plan as a table with each\n"
    "stage's predicted time and the predicted speedup over pure data parallelism and over one worker.\n"
    "\n"
    "  --model NAME        any model plait train knows\n"
    "  --input CxHxW       input shape [3x32x32]\n"
    "  --classes K         classes [10]\n"
    "  --workers N         workers (MPI ranks) to plan for\n"
    "  --batch-size N      mini-batch size [128]\n"
    "  --microbatches N    micro-batches per mini-batch [searched]\n"
    "  --pipeline-schedule gpipe|1f1b   [1f1b]\n"
    "  --hardware FILE     hardware description (JSON) [this machine: measured profile, shared memory]\n"
    "  --profile FILE      per-unit costs (JSON) instead of measuring them here\n"
    "  --save-profile FILE write the measured profile\n"
    "  --output FILE       write the plan (plan.json) for plait train --plan\n"
    "  --threads N         threads for measuring [2]\n";

int cli_plan(int argc, char **argv) {
    static const struct option options[] = {
        {"model", required_argument, 0, 'm'},        {"input", required_argument, 0, 'i'},
        {"classes", required_argument, 0, 'k'},      {"workers", required_argument, 0, 'w'},
        {"batch-size", required_argument, 0, 'b'},   {"microbatches", required_argument, 0, 'u'},
        {"pipeline-schedule", required_argument, 0, 's'}, {"hardware", required_argument, 0, 'H'},
        {"profile", required_argument, 0, 'p'},      {"save-profile", required_argument, 0, 'P'},
        {"output", required_argument, 0, 'o'},       {"threads", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},               {0, 0, 0, 0}};
    const char *model_name = NULL, *hardware_path = NULL, *profile_path = NULL, *save_profile = NULL, *output = NULL;
    int c = 3, h = 32, w = 32;
    long classes = 10, workers = 0, batch = 128, micro = 0, threads = 2;
    plait_schedule_kind schedule = PLAIT_SCHEDULE_1F1B;
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'm': model_name = optarg; break;
        case 'i': if (!cli_parse_shape("--input", optarg, &c, &h, &w)) return 2; break;
        case 'k': if (!cli_parse_int("--classes", optarg, 1, 1000000, &classes)) return 2; break;
        case 'w': if (!cli_parse_int("--workers", optarg, 1, 4096, &workers)) return 2; break;
        case 'b': if (!cli_parse_int("--batch-size", optarg, 1, 65536, &batch)) return 2; break;
        case 'u': if (!cli_parse_int("--microbatches", optarg, 1, 65536, &micro)) return 2; break;
        case 's':
            if (strcmp(optarg, "gpipe") == 0) schedule = PLAIT_SCHEDULE_GPIPE;
            else if (strcmp(optarg, "1f1b") == 0) schedule = PLAIT_SCHEDULE_1F1B;
            else return cli_error("--pipeline-schedule expects gpipe or 1f1b, got '%s'", optarg);
            break;
        case 'H': hardware_path = optarg; break;
        case 'p': profile_path = optarg; break;
        case 'P': save_profile = optarg; break;
        case 'o': output = optarg; break;
        case 't': if (!cli_parse_int("--threads", optarg, 1, 1024, &threads)) return 2; break;
        case 'h': fputs(plan_help, stdout); return 0;
        default: return cli_bad_flag("plan", argc, argv);
        }
    }
    if (optind < argc) return cli_error("plait plan: unexpected argument '%s'", argv[optind]);
    if (!model_name || workers < 1)
        return cli_error("plait plan: --model NAME and --workers N are required (see plait plan --help)");
    plait_set_threads((int)threads);
    int status = 1;
    plait_model *m = NULL;
    plait_profile profile = {0};
    plait_hardware hardware = {0};
    plait_plan plan = {0};
    if (plait_model_create(model_name, (plait_shape){1, h, w, c}, (int)classes, 1, &m) != PLAIT_OK) goto done;
    if (profile_path) {
        if (plait_profile_read(profile_path, &profile) != PLAIT_OK) goto done;
        if (profile.unit_count != m->unit_count) {
            plait_fail("profile %s has %d units but model %s has %d", profile_path, profile.unit_count, model_name,
                       m->unit_count);
            goto done;
        }
    } else if (plait_profile_measure(m, (int)(batch / workers > 0 ? batch / workers : 1), PLAIT_PROFILE_ITERATIONS, &profile) != PLAIT_OK) {
        goto done;
    }
    if (save_profile && plait_profile_write(save_profile, &profile) != PLAIT_OK) goto done;
    if (hardware_path ? plait_hardware_read(hardware_path, &hardware) : plait_hardware_local((int)workers, &hardware))
        goto done;
    if (hardware.worker_count != workers) {
        plait_fail("hardware %s describes %d workers, not %ld", hardware_path ? hardware_path : "(local)",
                   hardware.worker_count, workers);
        goto done;
    }
    plait_parallel_options o = {.kind = PLAIT_PARALLEL_AUTO,
                                .workers = (int)workers,
                                .batch_size = (int)batch,
                                .micro_batches = (int)micro,
                                .schedule = schedule,
                                .bucket_bytes = 25.0 * 1024 * 1024,
                                .streams = 2,
                                .hardware_path = hardware_path};
    if (plait_parallel_plan(m, &profile, &o, &plan) != PLAIT_OK) goto done;
    if (plait_plan_format_table(stdout, &plan, &profile, &hardware) != PLAIT_OK) goto done;
    if (output) {
        if (plait_plan_write(output, &plan) != PLAIT_OK) goto done;
        printf("wrote %s\n", output);
    }
    status = 0;
done:
    if (status) cli_fail_last();
    plait_plan_free(&plan);
    plait_hardware_free(&hardware);
    plait_profile_free(&profile);
    plait_model_free(m);
    return status;
}
