#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "plait/dist.h"
#include "plait/plan.h"
#include "plait/train.h"

static const char *train_help =
    "usage: plait train [flags]\n"
    "\n"
    "Trains a model and prints the test accuracy it reached: as one process, or under mpirun -np N as\n"
    "one job split across N ranks (data and pipeline parallelism; see docs/parallel.md).\n"
    "\n"
    "model and data:\n"
    "  --model NAME           resnet18 resnet34 resnet50 (ImageNet stem), cifar_resnet18 cifar_resnet34\n"
    "                         cifar_resnet50 (3x3 stem), resnet20 resnet56, mobilenetv2 [resnet20]\n"
    "  --dataset NAME         cifar10 cifar100 caltech101 fashion-mnist imagefolder [cifar10]\n"
    "  --data PATH            where the data set is (CIFAR binary files or image folders; fashion-mnist\n"
    "                         defaults to /usr/share/datasets/fashion-mnist)\n"
    "  --image-size N         caltech101/imagefolder: shorter side resized to N, center N x N crop [128]\n"
    "  --train-limit N        use only the first N training images [all]\n"
    "  --test-limit N         use only the first N test images [all]\n"
    "  --zero-init-residual   start each residual block's last batch normalization at weight 0, so that\n"
    "                         the block starts as its shortcut (torchvision's zero_init_residual)\n"
    "  --augment MODE         standard (random crop with padding 4 below 64 px, horizontal flip) or none\n"
    "  --cutout N             also set a random N x N square of each training image to the mean [0]\n"
    "  --crop-off-epochs N    the last N epochs train without random crop and cutout, flip kept, so the\n"
    "                         model ends on images as the test split shows them [0]\n"
    "  --train-flip MODE      random (each image flipped with probability 1/2 in each epoch) or alternate\n"
    "                         (flipped in every other epoch, from a random first choice) [random]\n"
    "  --shuffle MODE         random or none (batches in file order)\n"
    "  --test-flip            also score the test split with flip test-time augmentation (each image's\n"
    "                         logits averaged with its mirror's), reported beside the single-view score\n"
    "\n"
    "optimization:\n"
    "  --epochs N             passes over the training set [1]\n"
    "  --steps N              stop after N optimizer steps in total [no limit]\n"
    "  --batch-size N         images per optimizer step [128]\n"
    "  --microbatches N       split each batch into N micro-batches, gradients accumulated [1]\n"
    "  --lr X                 peak learning rate [0.1]\n"
    "  --schedule NAME        constant step cosine linear onecycle [cosine]\n"
    "  --warmup N             linear warm-up steps (not onecycle) [0]\n"
    "  --min-lr X             cosine and linear: the learning rate the schedule ends at [0]\n"
    "  --step-size N          step schedule: steps between decays [1/3 of the run]\n"
    "  --gamma X              step schedule: decay factor [0.1]\n"
    "  --momentum X           SGD momentum [0.9]\n"
    "  --nesterov on|off      Nesterov momentum [on]\n"
    "  --weight-decay X       L2 weight decay on conv and linear weights [5e-4]\n"
    "  --label-smoothing X    softmax cross-entropy label smoothing [0]\n"
    "  --sam-rho X            sharpness-aware minimization: each step also takes the gradient at the\n"
    "                         weights moved X along the normalized gradient (one process only) [0: off]\n"
    "  --sam-epochs N         with --sam-rho: only the last N epochs use it [0: all epochs]\n"
    "  --ema DECAY            also keep an exponential moving average of the weights and batch-norm\n"
    "                         statistics (decay per step, e.g. 0.999), scored beside the weights each\n"
    "                         epoch and saved as DIR/ema.safetensors (one process only) [0: off]\n"
    "\n"
    "run:\n"
    "  --threads N            threads for kernels and BLAS [2]\n"
    "  --seed N               seed for initialization, shuffling, augmentation and splits [1]\n"
    "  --checkpoint-dir DIR   write DIR/last.safetensors each epoch and at the end, DIR/metrics.jsonl\n"
    "  --resume               continue from DIR/last.safetensors exactly where it stopped\n"
    "  --init FILE            start from the weights in a safetensors file (torchvision names)\n"
    "  --metrics FILE         write metrics as JSON lines to FILE\n"
    "  --quiet                no progress output\n"
    "\n"
    "parallel (under mpirun -np N; data parallel on all ranks unless told otherwise):\n"
    "  --parallel KIND        dp (every rank a replica of the whole model), pipe (one stage per rank,\n"
    "                         units balanced by measured time) or auto (the planner on a profile measured\n"
    "                         here) [dp]\n"
    "  --plan FILE            run this plan (plait plan writes one); its batch size and micro-batches win\n"
    "  --hardware FILE        hardware JSON (plait plan): --plan must fit its memory; auto plans for it\n"
    "  --pipeline-schedule S  gpipe or 1f1b [1f1b]\n"
    "  --bucket-mb X          gradient all-reduce bucket size in MiB [25]\n"
    "  --streams N            communication streams for the gradient all-reduce [2]\n"
    "  --trace FILE.json      Chrome trace of the first steps (--trace-steps), and FILE.svg\n"
    "  --trace-steps N        steps recorded in the trace [20]\n";

static const char *eval_help =
    "usage: plait eval --checkpoint FILE [flags]\n"
    "\n"
    "Scores a checkpoint on a data set's test split and prints loss and accuracy.\n"
    "\n"
    "  --checkpoint FILE      safetensors file written by plait train (or torchvision weights with --model)\n"
    "  --model NAME           the checkpoint's model [from the checkpoint]\n"
    "  --dataset NAME         cifar10 cifar100 caltech101 fashion-mnist imagefolder [cifar10]\n"
    "  --data PATH            where the data set is\n"
    "  --image-size N         caltech101/imagefolder image size [128]\n"
    "  --test-limit N         score only the first N test images\n"
    "  --batch-size N         images per forward pass [256]\n"
    "  --threads N            threads [2]\n"
    "  --seed N               seed of the train/test split for data sets without one [1]\n"
    "  --flip                 also print the accuracy with flip test-time augmentation (each image's\n"
    "                         logits averaged with its mirror's)\n";

enum {
    OPT_MODEL = 256, OPT_DATASET, OPT_DATA, OPT_IMAGE_SIZE, OPT_TRAIN_LIMIT, OPT_TEST_LIMIT, OPT_AUGMENT,
    OPT_SHUFFLE, OPT_EPOCHS, OPT_STEPS, OPT_BATCH, OPT_MICRO, OPT_LR, OPT_SCHEDULE, OPT_WARMUP, OPT_STEP_SIZE,
    OPT_GAMMA, OPT_CUTOUT, OPT_CROP_OFF, OPT_MOMENTUM, OPT_NESTEROV, OPT_WD, OPT_SMOOTH, OPT_THREADS, OPT_SEED, OPT_CKPT_DIR, OPT_RESUME,
    OPT_INIT, OPT_METRICS, OPT_QUIET, OPT_CHECKPOINT, OPT_HELP, OPT_PARALLEL, OPT_PLAN, OPT_PIPE_SCHEDULE,
    OPT_BUCKET_MB, OPT_STREAMS, OPT_TRACE, OPT_TRACE_STEPS, OPT_HARDWARE, OPT_FLIP, OPT_TRAIN_FLIP, OPT_ZERO_INIT,
    OPT_SAM_RHO, OPT_SAM_EPOCHS, OPT_EMA, OPT_MIN_LR
};

static const struct option train_options[] = {
    {"model", required_argument, 0, OPT_MODEL}, {"dataset", required_argument, 0, OPT_DATASET},
    {"data", required_argument, 0, OPT_DATA}, {"image-size", required_argument, 0, OPT_IMAGE_SIZE},
    {"train-limit", required_argument, 0, OPT_TRAIN_LIMIT}, {"test-limit", required_argument, 0, OPT_TEST_LIMIT},
    {"augment", required_argument, 0, OPT_AUGMENT}, {"shuffle", required_argument, 0, OPT_SHUFFLE},
    {"cutout", required_argument, 0, OPT_CUTOUT}, {"test-flip", no_argument, 0, OPT_FLIP},
    {"train-flip", required_argument, 0, OPT_TRAIN_FLIP}, {"zero-init-residual", no_argument, 0, OPT_ZERO_INIT},
    {"crop-off-epochs", required_argument, 0, OPT_CROP_OFF},
    {"epochs", required_argument, 0, OPT_EPOCHS}, {"steps", required_argument, 0, OPT_STEPS},
    {"batch-size", required_argument, 0, OPT_BATCH}, {"microbatches", required_argument, 0, OPT_MICRO},
    {"lr", required_argument, 0, OPT_LR}, {"schedule", required_argument, 0, OPT_SCHEDULE},
    {"warmup", required_argument, 0, OPT_WARMUP}, {"min-lr", required_argument, 0, OPT_MIN_LR},
    {"step-size", required_argument, 0, OPT_STEP_SIZE},
    {"gamma", required_argument, 0, OPT_GAMMA}, {"momentum", required_argument, 0, OPT_MOMENTUM},
    {"nesterov", required_argument, 0, OPT_NESTEROV}, {"weight-decay", required_argument, 0, OPT_WD},
    {"label-smoothing", required_argument, 0, OPT_SMOOTH}, {"sam-rho", required_argument, 0, OPT_SAM_RHO},
    {"sam-epochs", required_argument, 0, OPT_SAM_EPOCHS}, {"ema", required_argument, 0, OPT_EMA},
    {"threads", required_argument, 0, OPT_THREADS},
    {"seed", required_argument, 0, OPT_SEED}, {"checkpoint-dir", required_argument, 0, OPT_CKPT_DIR},
    {"resume", no_argument, 0, OPT_RESUME}, {"init", required_argument, 0, OPT_INIT},
    {"metrics", required_argument, 0, OPT_METRICS}, {"quiet", no_argument, 0, OPT_QUIET},
    {"parallel", required_argument, 0, OPT_PARALLEL}, {"plan", required_argument, 0, OPT_PLAN},
    {"pipeline-schedule", required_argument, 0, OPT_PIPE_SCHEDULE}, {"bucket-mb", required_argument, 0, OPT_BUCKET_MB},
    {"streams", required_argument, 0, OPT_STREAMS}, {"trace", required_argument, 0, OPT_TRACE},
    {"trace-steps", required_argument, 0, OPT_TRACE_STEPS}, {"hardware", required_argument, 0, OPT_HARDWARE},
    {"help", no_argument, 0, OPT_HELP}, {0, 0, 0, 0}};

static bool parse_on_off(const char *flag, const char *text, const char *on, const char *off, bool *out) {
    if (strcmp(text, on) == 0) *out = true;
    else if (strcmp(text, off) == 0) *out = false;
    else {
        cli_error("%s expects %s or %s, got '%s'", flag, on, off, text);
        return false;
    }
    return true;
}

int cli_train(int argc, char **argv) {
    plait_train_config c;
    plait_train_config_defaults(&c);
    c.progress = true;
    long n;
    double x;
    long step_size = 0;
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "", train_options, NULL)) != -1) {
        switch (opt) {
        case OPT_MODEL: c.model = optarg; break;
        case OPT_DATASET: c.dataset = optarg; break;
        case OPT_DATA: c.data_path = optarg; break;
        case OPT_IMAGE_SIZE: if (!cli_parse_int("--image-size", optarg, 8, 1024, &n)) return 2; c.image_size = (int)n; break;
        case OPT_TRAIN_LIMIT: if (!cli_parse_int("--train-limit", optarg, 1, 100000000, &n)) return 2; c.train_limit = (int)n; break;
        case OPT_TEST_LIMIT: if (!cli_parse_int("--test-limit", optarg, 1, 100000000, &n)) return 2; c.test_limit = (int)n; break;
        case OPT_AUGMENT: if (!parse_on_off("--augment", optarg, "standard", "none", &c.augment)) return 2; break;
        case OPT_CROP_OFF: if (!cli_parse_int("--crop-off-epochs", optarg, 0, 100000, &n)) return 2; c.crop_off_epochs = (int)n; break;
        case OPT_CUTOUT: if (!cli_parse_int("--cutout", optarg, 0, 1024, &n)) return 2; c.cutout = (int)n; break;
        case OPT_SHUFFLE: if (!parse_on_off("--shuffle", optarg, "random", "none", &c.shuffle)) return 2; break;
        case OPT_EPOCHS: if (!cli_parse_int("--epochs", optarg, 1, 100000, &n)) return 2; c.epochs = (int)n; break;
        case OPT_STEPS: if (!cli_parse_int("--steps", optarg, 1, 1000000000, &n)) return 2; c.max_steps = n; break;
        case OPT_BATCH: if (!cli_parse_int("--batch-size", optarg, 1, 65536, &n)) return 2; c.batch_size = (int)n; break;
        case OPT_MICRO: if (!cli_parse_int("--microbatches", optarg, 1, 65536, &n)) return 2; c.microbatches = (int)n; break;
        case OPT_LR: if (!cli_parse_float("--lr", optarg, 1e-9, 100, &x)) return 2; c.lr.base_lr = (float)x; break;
        case OPT_SCHEDULE:
            if (plait_lr_kind_parse(optarg, &c.lr.kind) != PLAIT_OK)
                return cli_error("--schedule expects constant, step, cosine, linear or onecycle, got '%s'", optarg);
            break;
        case OPT_WARMUP: if (!cli_parse_int("--warmup", optarg, 0, 1000000000, &n)) return 2; c.lr.warmup_steps = n; break;
        case OPT_MIN_LR: if (!cli_parse_float("--min-lr", optarg, 0, 100, &x)) return 2; c.lr.min_lr = (float)x; break;
        case OPT_STEP_SIZE: if (!cli_parse_int("--step-size", optarg, 1, 1000000000, &step_size)) return 2; break;
        case OPT_GAMMA: if (!cli_parse_float("--gamma", optarg, 0, 1, &x)) return 2; c.lr.gamma = (float)x; break;
        case OPT_MOMENTUM: if (!cli_parse_float("--momentum", optarg, 0, 0.9999, &x)) return 2; c.momentum = (float)x; break;
        case OPT_NESTEROV: if (!parse_on_off("--nesterov", optarg, "on", "off", &c.nesterov)) return 2; break;
        case OPT_WD: if (!cli_parse_float("--weight-decay", optarg, 0, 1, &x)) return 2; c.weight_decay = (float)x; break;
        case OPT_SMOOTH: if (!cli_parse_float("--label-smoothing", optarg, 0, 0.999, &x)) return 2; c.label_smoothing = (float)x; break;
        case OPT_SAM_RHO: if (!cli_parse_float("--sam-rho", optarg, 0, 10, &x)) return 2; c.sam_rho = (float)x; break;
        case OPT_SAM_EPOCHS: if (!cli_parse_int("--sam-epochs", optarg, 0, 100000, &n)) return 2; c.sam_epochs = (int)n; break;
        case OPT_EMA: if (!cli_parse_float("--ema", optarg, 0, 0.999999, &x)) return 2; c.ema_decay = (float)x; break;
        case OPT_THREADS: if (!cli_parse_int("--threads", optarg, 1, 1024, &n)) return 2; c.threads = (int)n; break;
        case OPT_SEED: if (!cli_parse_int("--seed", optarg, 0, LONG_MAX, &n)) return 2; c.seed = (uint64_t)n; break;
        case OPT_CKPT_DIR: c.checkpoint_dir = optarg; break;
        case OPT_RESUME: c.resume = true; break;
        case OPT_INIT: c.init_path = optarg; break;
        case OPT_METRICS: c.metrics_path = optarg; break;
        case OPT_QUIET: c.progress = false; break;
        case OPT_FLIP: c.test_flip = true; break;
        case OPT_ZERO_INIT: c.zero_init_residual = true; break;
        case OPT_TRAIN_FLIP: if (!parse_on_off("--train-flip", optarg, "alternate", "random", &c.flip_alternate)) return 2; break;
        case OPT_PARALLEL:
            if (strcmp(optarg, "dp") != 0 && strcmp(optarg, "pipe") != 0 && strcmp(optarg, "auto") != 0)
                return cli_error("--parallel expects dp, pipe or auto, got '%s'", optarg);
            c.parallel = optarg;
            break;
        case OPT_PLAN: c.plan_path = optarg; break;
        case OPT_HARDWARE: c.hardware_path = optarg; break;
        case OPT_PIPE_SCHEDULE:
            if (strcmp(optarg, "gpipe") == 0) c.pipeline_schedule = PLAIT_SCHEDULE_GPIPE;
            else if (strcmp(optarg, "1f1b") == 0) c.pipeline_schedule = PLAIT_SCHEDULE_1F1B;
            else return cli_error("--pipeline-schedule expects gpipe or 1f1b, got '%s'", optarg);
            break;
        case OPT_BUCKET_MB: if (!cli_parse_float("--bucket-mb", optarg, 0.001, 65536, &x)) return 2; c.bucket_bytes = x * 1024 * 1024; break;
        case OPT_STREAMS: if (!cli_parse_int("--streams", optarg, 1, 64, &n)) return 2; c.streams = (int)n; break;
        case OPT_TRACE: c.trace_path = optarg; break;
        case OPT_TRACE_STEPS: if (!cli_parse_int("--trace-steps", optarg, 1, 1000000, &n)) return 2; c.trace_steps = (int)n; break;
        case OPT_HELP: fputs(train_help, stdout); return 0;
        default: return cli_bad_flag("train", argc, argv);
        }
    }
    if (optind < argc) return cli_error("plait train: unexpected argument '%s' (see plait train --help)", argv[optind]);
    if (c.momentum == 0 && c.nesterov) c.nesterov = false; /* Nesterov needs momentum */
    if (c.lr.kind == PLAIT_LR_STEP) c.lr.step_size = step_size;
    plait_train_result r;
    if (plait_train(&c, &r) != PLAIT_OK) return cli_fail_last();
    if (plait_dist_rank() != 0) return 0; /* one report per job */
    printf("trained %s on %s: %ld steps in %.1f s (%.1f images/s), last loss %.4f", c.model, c.dataset, r.steps,
           r.seconds, r.images_per_second, (double)r.last_loss);
    if (r.test_accuracy >= 0) printf(", test accuracy %.2f%%", 100.0 * r.test_accuracy);
    if (r.test_flip_accuracy >= 0) printf(" (%.2f%% with flip)", 100.0 * r.test_flip_accuracy);
    if (r.ema_test_accuracy >= 0) printf(", weight average %.2f%%", 100.0 * r.ema_test_accuracy);
    if (r.ema_test_flip_accuracy >= 0) printf(" (%.2f%% with flip)", 100.0 * r.ema_test_flip_accuracy);
    if (r.allreduce_hidden_seconds + r.allreduce_exposed_seconds > 0)
        printf(", all-reduce %.2f s hidden / %.2f s exposed", r.allreduce_hidden_seconds, r.allreduce_exposed_seconds);
    printf("\n");
    return 0;
}

static const struct option eval_options[] = {
    {"checkpoint", required_argument, 0, OPT_CHECKPOINT}, {"model", required_argument, 0, OPT_MODEL},
    {"dataset", required_argument, 0, OPT_DATASET}, {"data", required_argument, 0, OPT_DATA},
    {"image-size", required_argument, 0, OPT_IMAGE_SIZE}, {"test-limit", required_argument, 0, OPT_TEST_LIMIT},
    {"batch-size", required_argument, 0, OPT_BATCH}, {"threads", required_argument, 0, OPT_THREADS},
    {"seed", required_argument, 0, OPT_SEED}, {"flip", no_argument, 0, OPT_FLIP},
    {"help", no_argument, 0, OPT_HELP}, {0, 0, 0, 0}};

int cli_eval(int argc, char **argv) {
    plait_eval_config e = {.dataset = "cifar10", .batch_size = 256, .threads = 2, .seed = 1};
    long n;
    opterr = 0;
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, "", eval_options, NULL)) != -1) {
        switch (opt) {
        case OPT_CHECKPOINT: e.checkpoint = optarg; break;
        case OPT_MODEL: e.model = optarg; break;
        case OPT_DATASET: e.dataset = optarg; break;
        case OPT_DATA: e.data_path = optarg; break;
        case OPT_IMAGE_SIZE: if (!cli_parse_int("--image-size", optarg, 8, 1024, &n)) return 2; e.image_size = (int)n; break;
        case OPT_TEST_LIMIT: if (!cli_parse_int("--test-limit", optarg, 1, 100000000, &n)) return 2; e.test_limit = (int)n; break;
        case OPT_BATCH: if (!cli_parse_int("--batch-size", optarg, 1, 65536, &n)) return 2; e.batch_size = (int)n; break;
        case OPT_THREADS: if (!cli_parse_int("--threads", optarg, 1, 1024, &n)) return 2; e.threads = (int)n; break;
        case OPT_SEED: if (!cli_parse_int("--seed", optarg, 0, LONG_MAX, &n)) return 2; e.seed = (uint64_t)n; break;
        case OPT_FLIP: e.flip = true; break;
        case OPT_HELP: fputs(eval_help, stdout); return 0;
        default: return cli_bad_flag("eval", argc, argv);
        }
    }
    if (optind < argc) return cli_error("plait eval: unexpected argument '%s' (see plait eval --help)", argv[optind]);
    if (!e.checkpoint) return cli_error("plait eval: --checkpoint FILE is required (see plait eval --help)");
    plait_eval_score single, flip;
    int count;
    if (plait_eval_checkpoint(&e, &single, &flip, &count) != PLAIT_OK) return cli_fail_last();
    printf("%s on %s test (%d images): loss %.4f, accuracy %.2f%%", e.checkpoint, e.dataset, count,
           (double)single.loss, 100.0 * single.accuracy);
    if (e.flip) printf("; with flip: loss %.4f, accuracy %.2f%%", (double)flip.loss, 100.0 * flip.accuracy);
    printf("\n");
    return 0;
}
