/* The plait command: train, eval and summary (plan, tune and the others join as they land). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plait/dist.h"
#include "plait/train.h"
#include "cli.h"

static const char *program_help =
    "usage: plait <command> [flags]\n"
    "\n"
    "commands:\n"
    "  train     train a model on a data set (plait train --help)\n"
    "  eval      score a checkpoint on a data set's test split\n"
    "  summary   print a model's units, output shapes, parameters and multiply-adds\n"
    "  plan      partition a model into pipeline stages and replicas for N workers\n"
    "  tune      tune every convolution of a model for this machine (writes the tuning file)\n"
    "\n"
    "plait <command> --help explains every flag of a command.\n";

static int run_command(int argc, char **argv) {
    if (argc < 2) {
        fputs(program_help, stderr);
        return 2;
    }
    const char *command = argv[1];
    if (strcmp(command, "--help") == 0 || strcmp(command, "-h") == 0 || strcmp(command, "help") == 0) {
        fputs(program_help, stdout);
        return 0;
    }
    if (strcmp(command, "--version") == 0) {
        printf("plait 0.1.0\n");
        return 0;
    }
    argv[1] = argv[0]; /* getopt sees "plait" then the command's own flags */
    if (strcmp(command, "train") == 0) return cli_train(argc - 1, argv + 1);
    if (strcmp(command, "eval") == 0) return cli_eval(argc - 1, argv + 1);
    if (strcmp(command, "summary") == 0) return cli_summary(argc - 1, argv + 1);
    if (strcmp(command, "tune") == 0) return cli_tune(argc - 1, argv + 1);
    if (strcmp(command, "plan") == 0) return cli_plan(argc - 1, argv + 1);
    fprintf(stderr, "plait: error: unknown command '%s' (see plait --help)\n", command);
    return 2;
}

int main(int argc, char **argv) {
    /* Under mpirun this joins the job; started alone it is a world of one without MPI. */
    if (plait_dist_init(&argc, &argv) != PLAIT_OK) {
        fprintf(stderr, "plait: error: %s\n", plait_last_error());
        return 1;
    }
    int status = run_command(argc, argv);
    plait_dist_finalize();
    return status;
}
