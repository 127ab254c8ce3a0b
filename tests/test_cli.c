/* The plait command end to end: every bad input gets one clear line on stderr and a non-zero exit;
 * a run stopped and resumed gives the same weights as one run; checkpoints and metrics appear. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "plait/core.h"
#include "train/safetensors.h"
#include "testing.h"

/* Runs the plait command with `args`; returns its exit code and its stderr (last line kept). */
static int run_plait(const char *args, char *err, size_t err_size) {
    char command[4096], err_path[600];
    snprintf(err_path, sizeof err_path, "%s/stderr.txt", testing_temp_dir());
    snprintf(command, sizeof command, "%s %s >/dev/null 2>%s </dev/null", PLAIT_CLI_PATH, args, err_path);
    int status = system(command);
    if (err) {
        err[0] = 0;
        FILE *f = fopen(err_path, "r");
        if (f) {
            size_t n = fread(err, 1, err_size - 1, f);
            err[n] = 0;
            fclose(f);
        }
    }
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int count_lines(const char *text) {
    int lines = 0;
    for (const char *p = text; *p; p++) lines += *p == '\n';
    return lines;
}

/* A learnable CIFAR-10 binary data set: class k is a bright square at a class-dependent place. */
static const char *make_cifar_binary(int train_count, int test_count) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/cifar10", testing_temp_dir());
    mkdir(dir, 0755);
    plait_rng rng;
    plait_rng_seed(&rng, 11);
    for (int file = 0; file < 6; file++) {
        char path[600];
        if (file < 5)
            snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, file + 1);
        else
            snprintf(path, sizeof path, "%s/test_batch.bin", dir);
        FILE *f = fopen(path, "wb");
        int count = file < 5 ? train_count / 5 : test_count;
        for (int i = 0; i < count; i++) {
            unsigned char record[3073];
            int label = (int)plait_rng_below(&rng, 10);
            record[0] = (unsigned char)label;
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < 32; y++)
                    for (int x = 0; x < 32; x++) {
                        int inside = y / 8 == label / 4 + c % 2 && x / 8 == label % 4;
                        record[1 + c * 1024 + y * 32 + x] =
                            (unsigned char)(inside ? 200 + plait_rng_below(&rng, 50) : plait_rng_below(&rng, 60));
                    }
            fwrite(record, 1, sizeof record, f);
        }
        fclose(f);
    }
    return dir;
}

static char data_dir[512];

static void help_and_unknown_flags(void) {
    char err[4096];
    CHECK(run_plait("--help", err, sizeof err) == 0);
    CHECK(run_plait("train --help", err, sizeof err) == 0);
    CHECK(run_plait("eval --help", err, sizeof err) == 0);
    CHECK(run_plait("summary --help", err, sizeof err) == 0);
    CHECK(run_plait("frobnicate", err, sizeof err) == 2);
    CHECKF(strstr(err, "unknown command 'frobnicate'") && count_lines(err) == 1, "%s", err);
    CHECK(run_plait("train --no-such-flag", err, sizeof err) == 2);
    CHECKF(strstr(err, "--no-such-flag") && count_lines(err) == 1, "%s", err);
    CHECK(run_plait("train --epochs zero", err, sizeof err) == 2);
    CHECKF(strstr(err, "--epochs") && count_lines(err) == 1, "%s", err);
    CHECK(run_plait("train --batch-size -4", err, sizeof err) == 2);
    CHECKF(strstr(err, "--batch-size") && count_lines(err) == 1, "%s", err);
    CHECK(run_plait("summary --model resnet20 --input 3x32", err, sizeof err) == 2);
    CHECKF(strstr(err, "CxHxW") && count_lines(err) == 1, "%s", err);
    CHECK(run_plait("eval", err, sizeof err) == 2);
    CHECKF(strstr(err, "--checkpoint") && count_lines(err) == 1, "%s", err);
}

static void unknown_model_and_missing_data(void) {
    char err[4096], args[1200];
    snprintf(args, sizeof args, "train --model resnet19 --dataset cifar10 --data %s --quiet", data_dir);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "resnet19") && count_lines(err) == 1, "%s", err);
    CHECK(run_plait("train --dataset cifar10 --data /nonexistent/cifar --quiet", err, sizeof err) == 1);
    CHECKF(strstr(err, "/nonexistent/cifar") && count_lines(err) == 1, "%s", err);
    CHECK(run_plait("train --dataset mnist-of-mars --data /tmp --quiet", err, sizeof err) == 1);
    CHECKF(strstr(err, "mnist-of-mars") && count_lines(err) == 1, "%s", err);
    snprintf(args, sizeof args, "train --dataset cifar10 --data %s --epochs 3 --crop-off-epochs 3 --quiet", data_dir);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "--crop-off-epochs must be in [0, 2]") && count_lines(err) == 1, "%s", err);
    snprintf(args, sizeof args, "train --dataset cifar10 --data %s --epochs 3 --sam-rho 0.05 --sam-epochs 4 --quiet",
             data_dir);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "--sam-epochs must be in [0, 3]") && count_lines(err) == 1, "%s", err);
    snprintf(args, sizeof args, "train --dataset cifar10 --data %s --sam-rho 0.05 --parallel dp --quiet", data_dir);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "--sam-rho trains in one process only") && count_lines(err) == 1, "%s", err);
    snprintf(args, sizeof args, "train --dataset cifar10 --data %s --ema 0.99 --parallel dp --quiet", data_dir);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "--ema trains in one process only") && count_lines(err) == 1, "%s", err);
    snprintf(args, sizeof args, "train --dataset cifar10 --data %s --lr 0.05 --min-lr 0.05 --quiet", data_dir);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "--min-lr must be at least 0 and below --lr") && count_lines(err) == 1, "%s", err);
    CHECK(run_plait("train --ema 1 --quiet", err, sizeof err) == 2);
    CHECKF(strstr(err, "--ema") && count_lines(err) == 1, "%s", err);
    CHECK(run_plait("summary --model resnet19", err, sizeof err) == 1);
    CHECKF(strstr(err, "resnet19") && count_lines(err) == 1, "%s", err);
}

static void summary_prints_totals(void) {
    char err[4096];
    CHECK(run_plait("summary --model resnet18 --input 3x224x224 --classes 1000", err, sizeof err) == 0);
    char command[1024];
    snprintf(command, sizeof command, "%s summary --model resnet18 --input 3x224x224 --classes 1000 | grep -q 11,689,512",
             PLAIT_CLI_PATH);
    CHECK(system(command) == 0);
}

static const char *common = "--model resnet20 --dataset cifar10 --batch-size 16 --lr 0.05 --threads 1 "
                            "--augment standard --quiet";

static void resume_continues_exactly(void) {
    char err[4096], args[2048];
    const char *tmp = testing_temp_dir();
    snprintf(args, sizeof args, "train %s --data %s --epochs 2 --steps 12 --checkpoint-dir %s/once", common, data_dir,
             tmp);
    CHECKF(run_plait(args, err, sizeof err) == 0, "%s", err);
    snprintf(args, sizeof args, "train %s --data %s --epochs 2 --steps 5 --checkpoint-dir %s/twice", common, data_dir,
             tmp);
    CHECKF(run_plait(args, err, sizeof err) == 0, "%s", err);
    snprintf(args, sizeof args, "train %s --data %s --epochs 2 --steps 12 --checkpoint-dir %s/twice --resume", common,
             data_dir, tmp);
    CHECKF(run_plait(args, err, sizeof err) == 0, "%s", err);
    char command[2048];
    snprintf(command, sizeof command, "cmp -s %s/once/last.safetensors %s/twice/last.safetensors", tmp, tmp);
    CHECKF(system(command) == 0, "checkpoints of 12 steps in one go and 5 + 7 resumed differ");
    /* and a different split point lands on the same weights too, across an epoch boundary (10 steps/epoch) */
    snprintf(args, sizeof args, "train %s --data %s --epochs 2 --steps 10 --checkpoint-dir %s/thrice", common,
             data_dir, tmp);
    CHECKF(run_plait(args, err, sizeof err) == 0, "%s", err);
    snprintf(args, sizeof args, "train %s --data %s --epochs 2 --steps 12 --checkpoint-dir %s/thrice --resume", common,
             data_dir, tmp);
    CHECKF(run_plait(args, err, sizeof err) == 0, "%s", err);
    snprintf(command, sizeof command, "cmp -s %s/once/last.safetensors %s/thrice/last.safetensors", tmp, tmp);
    CHECKF(system(command) == 0, "resuming at an epoch boundary diverged");
    /* the weight average continues exactly too, and the two files are checked against each other */
    snprintf(args, sizeof args, "train %s --data %s --epochs 2 --steps 12 --ema 0.9 --checkpoint-dir %s/ema_once",
             common, data_dir, tmp);
    CHECKF(run_plait(args, err, sizeof err) == 0, "%s", err);
    snprintf(args, sizeof args, "train %s --data %s --epochs 2 --steps 7 --ema 0.9 --checkpoint-dir %s/ema_twice",
             common, data_dir, tmp);
    CHECKF(run_plait(args, err, sizeof err) == 0, "%s", err);
    snprintf(command, sizeof command, "cp %s/ema_twice/ema.safetensors %s/ema_at_7.safetensors", tmp, tmp);
    CHECK(system(command) == 0);
    snprintf(args, sizeof args, "train %s --data %s --epochs 2 --steps 12 --ema 0.9 --checkpoint-dir %s/ema_twice --resume",
             common, data_dir, tmp);
    CHECKF(run_plait(args, err, sizeof err) == 0, "%s", err);
    snprintf(command, sizeof command,
             "cmp -s %s/ema_once/ema.safetensors %s/ema_twice/ema.safetensors && "
             "cmp -s %s/ema_once/last.safetensors %s/ema_twice/last.safetensors && "
             "cmp -s %s/ema_once/last.safetensors %s/once/last.safetensors && "
             "! cmp -s %s/ema_once/ema.safetensors %s/once/last.safetensors",
             tmp, tmp, tmp, tmp, tmp, tmp, tmp, tmp);
    CHECKF(system(command) == 0, "weight averages of 12 steps in one go and 7 + 5 resumed differ, or --ema moved "
                                 "the weights");
    snprintf(command, sizeof command, "grep -q '\"ema_test_accuracy\"' %s/ema_once/metrics.jsonl", tmp);
    CHECK(system(command) == 0);
    /* an average from another step, or none, cannot continue the run */
    snprintf(command, sizeof command, "cp %s/ema_at_7.safetensors %s/ema_twice/ema.safetensors", tmp, tmp);
    CHECK(system(command) == 0);
    snprintf(args, sizeof args, "train %s --data %s --epochs 2 --steps 14 --ema 0.9 --checkpoint-dir %s/ema_twice --resume",
             common, data_dir, tmp);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "is at step 7 but the checkpoint at step 12") && count_lines(err) == 1, "%s", err);
    snprintf(args, sizeof args, "train %s --data %s --epochs 2 --steps 14 --ema 0.9 --checkpoint-dir %s/once --resume",
             common, data_dir, tmp);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "--ema with --resume needs") && count_lines(err) == 1, "%s", err);
    snprintf(command, sizeof command, "test -s %s/once/metrics.jsonl && grep -q '\"event\": *\"train\"' %s/once/metrics.jsonl",
             tmp, tmp);
    CHECK(system(command) == 0);
    snprintf(command, sizeof command, "ls %s/once | grep -q tmp", tmp);
    CHECKF(system(command) != 0, "a temporary file was left behind");
}

static void eval_scores_checkpoint(void) {
    char err[4096], args[2048];
    snprintf(args, sizeof args, "eval --checkpoint %s/once/last.safetensors --dataset cifar10 --data %s --threads 1",
             testing_temp_dir(), data_dir);
    CHECKF(run_plait(args, err, sizeof err) == 0, "%s", err);
    strcat(args, " --flip");
    CHECKF(run_plait(args, err, sizeof err) == 0, "%s", err);
}

static void bad_checkpoints_are_refused(void) {
    char err[4096], args[2048], command[2048];
    const char *tmp = testing_temp_dir();
    /* from another model */
    snprintf(args, sizeof args,
             "eval --checkpoint %s/once/last.safetensors --model resnet56 --dataset cifar10 --data %s --threads 1", tmp,
             data_dir);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "resnet56") && count_lines(err) == 1, "%s", err);
    /* broken header */
    snprintf(command, sizeof command, "printf '\\377\\377\\377\\377\\0\\0\\0\\0{bad' > %s/broken.safetensors", tmp);
    CHECK(system(command) == 0);
    snprintf(args, sizeof args, "eval --checkpoint %s/broken.safetensors --model resnet20 --dataset cifar10 --data %s",
             tmp, data_dir);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "broken.safetensors") && count_lines(err) == 1, "%s", err);
    /* truncated copy of a good one */
    snprintf(command, sizeof command, "head -c 3000 %s/once/last.safetensors > %s/short.safetensors", tmp, tmp);
    CHECK(system(command) == 0);
    snprintf(args, sizeof args, "train %s --data %s --steps 2 --init %s/short.safetensors", common, data_dir, tmp);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "short.safetensors") && count_lines(err) == 1, "%s", err);
    /* resume without a checkpoint */
    snprintf(args, sizeof args, "train %s --data %s --steps 2 --checkpoint-dir %s/empty --resume", common, data_dir, tmp);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "last.safetensors") && count_lines(err) == 1, "%s", err);
}

/* Overwrites one float of tensor `name` in a safetensors file with NaN, keeping the file valid. */
static bool poison_tensor(const char *path, const char *name) {
    safetensors_file *f;
    if (safetensors_read(path, &f) != PLAIT_OK) return false;
    const safetensors_tensor *t = safetensors_find(f, name);
    uint64_t header;
    memcpy(&header, f->bytes, 8);
    long at = t ? (long)(8 + header + t->offset) : -1;
    safetensors_free(f);
    FILE *out = at >= 0 ? fopen(path, "r+b") : NULL;
    if (!out) return false;
    float nan_value = NAN;
    bool ok = fseek(out, at, SEEK_SET) == 0 && fwrite(&nan_value, sizeof nan_value, 1, out) == 1;
    return fclose(out) == 0 && ok;
}

static void nan_loss_stops_and_keeps_checkpoint(void) {
    char err[4096], args[4096], command[1024];
    const char *tmp = testing_temp_dir();
    snprintf(args, sizeof args, "train %s --data %s --steps 3 --checkpoint-dir %s/nan", common, data_dir, tmp);
    CHECKF(run_plait(args, err, sizeof err) == 0, "%s", err);
    snprintf(command, sizeof command, "cp %s/nan/last.safetensors %s/nan-before.safetensors", tmp, tmp);
    CHECK(system(command) == 0);
    /* weights that went bad (here: one NaN in the classifier) make the loss NaN at the next step */
    snprintf(command, sizeof command, "%s/poisoned.safetensors", tmp);
    char copy[2100];
    snprintf(copy, sizeof copy, "cp %s/nan/last.safetensors %s", tmp, command);
    CHECK(system(copy) == 0 && poison_tensor(command, "fc.bias"));
    snprintf(args, sizeof args, "train %s --data %s --steps 6 --checkpoint-dir %s/nan --init %s", common, data_dir, tmp,
             command);
    CHECK(run_plait(args, err, sizeof err) == 1);
    CHECKF(strstr(err, "loss became") && strstr(err, "nan") && count_lines(err) == 1, "%s", err);
    snprintf(command, sizeof command, "cmp -s %s/nan/last.safetensors %s/nan-before.safetensors", tmp, tmp);
    CHECKF(system(command) == 0, "the last good checkpoint was overwritten");
}

static void plan_and_tune_commands(void) {
    char err[4096], command[4096];
    const char *tmp = testing_temp_dir();
    snprintf(command, sizeof command,
             "%s plan --model resnet20 --input 3x8x8 --workers 2 --batch-size 16 --threads 1 --output %s/plan.json "
             "| grep -q 'speedup over one worker'",
             PLAIT_CLI_PATH, tmp);
    CHECK(system(command) == 0);
    snprintf(command, sizeof command, "test -s %s/plan.json", tmp);
    CHECK(system(command) == 0);
    CHECK(run_plait("plan --model resnet20 --workers 0", err, sizeof err) == 2);
    CHECKF(strstr(err, "--workers") && count_lines(err) == 1, "%s", err);
    /* tune writes the tuning file; train reads it by itself through PLAIT_TUNING_FILE */
    snprintf(command, sizeof command,
             "%s tune --model resnet20 --input 3x32x32 --batch 16 --threads 1 --measure 2 --output %s/tuning.json "
             ">/dev/null && grep -q '\"entries\"' %s/tuning.json",
             PLAIT_CLI_PATH, tmp, tmp);
    CHECK(system(command) == 0);
    char args[1024];
    snprintf(args, sizeof args, "train %s --data %s --steps 2", common, data_dir);
    snprintf(command, sizeof command, "PLAIT_TUNING_FILE=%s/tuning.json %s %s >/dev/null 2>&1", tmp, PLAIT_CLI_PATH,
             args);
    CHECK(system(command) == 0);
    snprintf(command, sizeof command, "printf '{broken' > %s/bad-tuning.json && PLAIT_TUNING_FILE=%s/bad-tuning.json "
             "%s %s 2>&1 >/dev/null | grep -q 'bad-tuning.json'", tmp, tmp, PLAIT_CLI_PATH, args);
    CHECKF(system(command) == 0, "a broken tuning file must be named in the error");
}

int main(void) {
    snprintf(data_dir, sizeof data_dir, "%s", make_cifar_binary(160, 40));
    testing_run("help_and_unknown_flags", help_and_unknown_flags);
    testing_run("unknown_model_and_missing_data", unknown_model_and_missing_data);
    testing_run("summary_prints_totals", summary_prints_totals);
    testing_run("resume_continues_exactly", resume_continues_exactly);
    testing_run("eval_scores_checkpoint", eval_scores_checkpoint);
    testing_run("bad_checkpoints_are_refused", bad_checkpoints_are_refused);
    testing_run("nan_loss_stops_and_keeps_checkpoint", nan_loss_stops_and_keeps_checkpoint);
    testing_run("plan_and_tune_commands", plan_and_tune_commands);
    return testing_finish();
}
