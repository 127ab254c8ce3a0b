#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "plait/nn.h"

static const char *summary_help =
    "usage: plait summary --model NAME [--input CxHxW] [--classes K]\n"
    "\n"
    "Prints each unit's output shape, parameters and multiply-adds, then the totals.\n"
    "\n"
    "  --model NAME     any model plait train knows\n"
    "  --input CxHxW    input shape [3x224x224]\n"
    "  --classes K      classes of the final layer [1000]\n";

int cli_summary(int argc, char **argv) {
    static const struct option options[] = {{"model", required_argument, 0, 'm'},
                                            {"input", required_argument, 0, 'i'},
                                            {"classes", required_argument, 0, 'k'},
                                            {"help", no_argument, 0, 'h'},
                                            {0, 0, 0, 0}};
    const char *model_name = NULL;
    int c = 3, h = 224, w = 224;
    long classes = 1000;
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'm': model_name = optarg; break;
        case 'i': if (!cli_parse_shape("--input", optarg, &c, &h, &w)) return 2; break;
        case 'k': if (!cli_parse_int("--classes", optarg, 1, 1000000, &classes)) return 2; break;
        case 'h': fputs(summary_help, stdout); return 0;
        default: return cli_bad_flag("summary", argc, argv);
        }
    }
    if (optind < argc) return cli_error("plait summary: unexpected argument '%s'", argv[optind]);
    if (!model_name) return cli_error("plait summary: --model NAME is required (see plait summary --help)");
    plait_model *m;
    if (plait_model_create(model_name, (plait_shape){1, h, w, c}, (int)classes, 1, &m) != PLAIT_OK)
        return cli_fail_last();
    plait_model_print_summary(m, stdout);
    plait_model_free(m);
    return 0;
}
