#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "plait/nn.h"
#include "plait/tune.h"

static const char *tune_help =
    "usage: plait tune --model NAME [flags]\n"
    "\n"
    "Tunes every convolution of a model for this CPU and thread count: enumerates the valid schedules\n"
    "(direct and, for 3x3 stride-1 layers, Winograd; depthwise layers a small space of their own), ranks\n"
    "them with the cost model, measures the best few, then searches around the fastest of them (schedules\n"
    "one or two fields away), and keeps the winner per shape and direction in the tuning file that plait\n"
    "train reads. Prints per shape the winner's speedup over the default schedule\n"
    "and how well the cost model's ranking agreed with the measurements (Spearman).\n"
    "\n"
    "  --model NAME     any model plait train knows\n"
    "  --input CxHxW    input shape [3x32x32]\n"
    "  --classes K      classes [10]\n"
    "  --batch N        batch size the layers are tuned for (tune the batch you train with) [128]\n"
    "  --threads N      threads [2]\n"
    "  --measure N      schedules measured per shape and direction from the model's ranking, and up to as\n"
    "                   many again around the fastest [8]\n"
    "  --output FILE    tuning file [$PLAIT_TUNING_FILE or ~/.cache/plait/tuning.json]\n";

static int make_parent_dirs(const char *path) {
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path);
    char *dir = dirname(copy);
    if (strcmp(dir, ".") == 0 || strcmp(dir, "/") == 0) return 0;
    struct stat st;
    if (stat(dir, &st) == 0) return 0;
    if (make_parent_dirs(dir) != 0) return -1;
    return mkdir(dir, 0755);
}

int cli_tune(int argc, char **argv) {
    static const struct option options[] = {
        {"model", required_argument, 0, 'm'},   {"input", required_argument, 0, 'i'},
        {"classes", required_argument, 0, 'k'}, {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'}, {"measure", required_argument, 0, 'n'},
        {"output", required_argument, 0, 'o'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model_name = NULL;
    char output[4096];
    plait_tuning_default_path(output, sizeof output);
    int c = 3, h = 32, w = 32;
    long classes = 10, batch = 128, threads = 2, measure = 8;
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'm': model_name = optarg; break;
        case 'i': if (!cli_parse_shape("--input", optarg, &c, &h, &w)) return 2; break;
        case 'k': if (!cli_parse_int("--classes", optarg, 1, 1000000, &classes)) return 2; break;
        case 'b': if (!cli_parse_int("--batch", optarg, 1, 65536, &batch)) return 2; break;
        case 't': if (!cli_parse_int("--threads", optarg, 1, 1024, &threads)) return 2; break;
        case 'n': if (!cli_parse_int("--measure", optarg, 1, 1000, &measure)) return 2; break;
        case 'o': snprintf(output, sizeof output, "%s", optarg); break;
        case 'h': fputs(tune_help, stdout); return 0;
        default: return cli_bad_flag("tune", argc, argv);
        }
    }
    if (optind < argc) return cli_error("plait tune: unexpected argument '%s'", argv[optind]);
    if (!model_name) return cli_error("plait tune: --model NAME is required (see plait tune --help)");
    plait_set_threads((int)threads);
    plait_model *m;
    if (plait_model_create(model_name, (plait_shape){1, h, w, c}, (int)classes, 1, &m) != PLAIT_OK)
        return cli_fail_last();
    plait_layer **layers;
    int layer_count;
    if (plait_model_layers(m, 0, m->unit_count, &layers, &layer_count) != PLAIT_OK) {
        plait_model_free(m);
        return cli_fail_last();
    }
    plait_conv2d_desc *descs = malloc(sizeof *descs * (size_t)(layer_count + 1));
    int count = 0;
    for (int i = 0; i < layer_count; i++)
        if (layers[i]->kind == PLAIT_LAYER_CONV2D) {
            descs[count] = layers[i]->conv;
            descs[count++].batch = (int)batch;
        }
    free(layers);
    plait_model_free(m);
    plait_tuning *tuning = plait_tuning_new();
    int status = 1;
    if (plait_tuning_load(tuning, output) != PLAIT_OK) goto done;
    printf("tuning %d convolutions of %s at batch %ld on %ld threads (%s)\n", count, model_name, batch, threads,
           plait_cpu_features()->model);
    if (plait_tune_layers(descs, count, (int)measure, tuning, stdout) != PLAIT_OK) goto done;
    if (make_parent_dirs(output) != 0) {
        plait_fail("cannot create the folder of %s", output);
        goto done;
    }
    if (plait_tuning_save(tuning, output) != PLAIT_OK) goto done;
    printf("wrote %s\n", output);
    status = 0;
done:
    if (status) cli_fail_last();
    plait_tuning_free(tuning);
    free(descs);
    return status;
}
