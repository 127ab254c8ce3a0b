/* Checkpoints under a plan: 2 ranks train a 2-stage pipeline through plait_train, each stage writes
 * its part, and one process (the plait command, without MPI) resumes from the parts; the result must
 * be the very checkpoint an uninterrupted one-process run writes. Also --trace writes both files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpi_testing.h"
#include "plait/pipe.h"
#include "plait/train.h"

static char dir[64];

/* Small CIFAR-10 binary files: class k has a bright block at a class-dependent place. */
static bool write_cifar(const char *where) {
    plait_rng rng;
    plait_rng_seed(&rng, 99);
    char path[256];
    unsigned char record[3073];
    for (int file = 0; file <= 5; file++) {
        if (file == 0)
            snprintf(path, sizeof path, "%s/test_batch.bin", where);
        else
            snprintf(path, sizeof path, "%s/data_batch_%d.bin", where, file);
        FILE *f = fopen(path, "wb");
        if (!f) return false;
        for (int i = 0; i < 32; i++) {
            int label = (int)plait_rng_below(&rng, 10);
            record[0] = (unsigned char)label;
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < 32; y++)
                    for (int x = 0; x < 32; x++) {
                        bool inside = y / 8 == label / 4 + c % 2 && x / 8 == label % 4;
                        record[1 + c * 1024 + y * 32 + x] =
                            (unsigned char)(inside ? 200 + plait_rng_below(&rng, 50) : plait_rng_below(&rng, 60));
                    }
            fwrite(record, 1, sizeof record, f);
        }
        fclose(f);
    }
    return true;
}

/* The plait command as one process: the launcher's variables are removed so it does not join MPI. */
static int run_single(const char *args) {
    char command[2048];
    snprintf(command, sizeof command,
             "env -u OMPI_COMM_WORLD_SIZE -u OMPI_COMM_WORLD_RANK -u PMIX_RANK -u PMI_RANK -u PMI_SIZE "
             "%s train --model resnet20 --dataset cifar10 --data %s --batch-size 16 --microbatches 4 --epochs 2 "
             "--lr 0.05 --threads 1 --quiet %s >%s/out.txt 2>&1",
             PLAIT_CLI_PATH, dir, args, dir);
    int status = system(command);
    if (status != 0) {
        snprintf(command, sizeof command, "cat %s/out.txt >&2", dir);
        if (system(command) != 0) fprintf(stderr, "(no output)\n");
    }
    return status;
}

static void pipeline_checkpoint_resumes_in_one_process(void) {
    int rank = plait_dist_rank();
    char path[256], command[600];
    if (rank == 0) {
        /* the plan: 2 stages of one rank, 4 micro-batches of 4 */
        snprintf(path, sizeof path, "%s/plan.json", dir);
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        if (f) {
            fputs("{\"batch_size\": 16, \"micro_batches\": 4, \"schedule\": \"1f1b\", \"bucket_bytes\": 1e6,"
                  " \"streams\": 1, \"stages\": [{\"units\": [0, 4], \"ranks\": [0]}, {\"units\": [4, 11],"
                  " \"ranks\": [1]}]}",
                  f);
            fclose(f);
        }
        snprintf(command, sizeof command, "--steps 8 --checkpoint-dir %s/once", dir);
        CHECK(run_single(command) == 0); /* the reference: one process, uninterrupted */
    }
    MPI_Barrier(MPI_COMM_WORLD);
    char split[128], plan_path[128], trace_path[128];
    snprintf(split, sizeof split, "%s/split", dir);
    snprintf(plan_path, sizeof plan_path, "%s/plan.json", dir);
    snprintf(trace_path, sizeof trace_path, "%s/trace.json", dir);
    plait_train_config c;
    plait_train_config_defaults(&c);
    c.model = "resnet20";
    c.dataset = "cifar10";
    c.data_path = dir;
    c.batch_size = 16;
    c.microbatches = 4;
    c.epochs = 2;
    c.max_steps = 5;
    c.lr.base_lr = 0.05f;
    c.threads = 1;
    c.checkpoint_dir = split;
    c.plan_path = plan_path;
    c.trace_path = trace_path;
    c.progress = false;
    plait_train_result r;
    CHECKF(plait_train(&c, &r) == PLAIT_OK, "%s", plait_last_error());
    CHECK(r.steps == 5);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        snprintf(command, sizeof command, "test -s %s/last.stage0.safetensors && test -s %s/last.stage1.safetensors"
                 " && test ! -e %s/last.safetensors", split, split, split);
        CHECKF(system(command) == 0, "each stage writes its part (and only its part)");
        snprintf(command, sizeof command, "grep -q '\"forward 3\"' %s/trace.json && grep -q '<svg' %s/trace.svg",
                 dir, dir);
        CHECKF(system(command) == 0, "the trace has forward events and an SVG");
        /* per-unit events nest in the Chrome trace and stay out of the SVG's one row per lane */
        snprintf(command, sizeof command,
                 "grep -q '\"backward stem\"' %s/trace.json && ! grep -q 'backward stem' %s/trace.svg", dir, dir);
        CHECKF(system(command) == 0, "the trace has per-unit events, the timeline does not");
        snprintf(command, sizeof command, "--steps 8 --checkpoint-dir %s/split --resume", dir);
        CHECK(run_single(command) == 0);
        snprintf(command, sizeof command, "cmp -s %s/once/last.safetensors %s/split/last.safetensors", dir, dir);
        CHECKF(system(command) == 0, "5 pipeline steps + 3 resumed in one process differ from 8 in one process");
        snprintf(command, sizeof command, "ls %s/split | grep -q stage", dir);
        CHECKF(system(command) != 0, "the single-process save left stage parts behind");
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

int main(int argc, char **argv) {
    plait_dist_init(&argc, &argv);
    if (plait_dist_rank() == 0) {
        snprintf(dir, sizeof dir, "/tmp/plait_pipe_ckpt_XXXXXX");
        if (!mkdtemp(dir) || !write_cifar(dir)) dir[0] = 0;
    }
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (!dir[0]) {
        fprintf(stderr, "cannot make test data\n");
        return 1;
    }
    mpi_testing_run("checkpoint of a 2-stage pipeline resumes in one process exactly", pipeline_checkpoint_resumes_in_one_process);
    MPI_Barrier(MPI_COMM_WORLD);
    if (plait_dist_rank() == 0) {
        char command[128];
        snprintf(command, sizeof command, "rm -rf %s", dir);
        if (system(command) != 0) fprintf(stderr, "cannot remove %s\n", dir);
    }
    return mpi_testing_finish();
}
