/* Training throughput (forward + backward + SGD step) of the CIFAR ResNets (or MobileNetV2), plait against
 * PyTorch measured in the same run, on synthetic square images (32x32 unless --size).
 *   bench_train [--models a,b] [--threads 1,2] [--batch 128] [--steps 3] [--size 32] [--no-torch]
 *               [--torch-script bench/torch_train.py] [--conv direct|im2col] [--tuned]
 * --models mobilenetv2 --size 224: torchvision's MobileNetV2 (without the classifier's dropout, which plait
 * leaves out) on both sides.
 * --tuned: plait runs the schedules of the tuning file (plait tune), as plait train does; default schedules
 * otherwise. Run it from the repository root so the PyTorch script is found. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plait/train.h"
#include "train/train_internal.h"

static double plait_images_per_second(const char *model_name, int batch, int size, int threads, int steps) {
    plait_set_threads(threads);
    plait_model *m;
    plait_trainer *t;
    if (plait_model_create(model_name, (plait_shape){1, size, size, 3}, 10, 1, &m) != PLAIT_OK ||
        plait_trainer_create(m, &t) != PLAIT_OK) {
        fprintf(stderr, "bench_train: %s\n", plait_last_error());
        exit(1);
    }
    plait_tensor images = {0};
    plait_tensor_reserve(&images, (plait_shape){batch, size, size, 3});
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)batch);
    plait_rng rng;
    plait_rng_seed(&rng, 1);
    for (size_t i = 0; i < plait_shape_count(images.shape); i++) images.data[i] = plait_rng_normal(&rng);
    for (int i = 0; i < batch; i++) labels[i] = (int32_t)plait_rng_below(&rng, 10);
    plait_step_options o = {.microbatches = 1, .lr = 0.01f, .momentum = 0.9f, .weight_decay = 5e-4f, .nesterov = true};
    float loss;
    int correct;
    double start = 0;
    for (int s = 0; s <= steps; s++) {
        if (s == 1) start = plait_now(); /* step 0 warms up allocations */
        if (plait_trainer_step(t, &o, &images, labels, &loss, &correct) != PLAIT_OK) {
            fprintf(stderr, "bench_train: %s\n", plait_last_error());
            exit(1);
        }
    }
    double rate = batch * steps / (plait_now() - start);
    plait_trainer_free(t);
    plait_model_free(m);
    plait_tensor_free(&images);
    free(labels);
    return rate;
}

/* Best of NCHW and channels_last, or 0 when PyTorch is not installed. */
static double torch_images_per_second(const char *script, const char *model_name, int batch, int size, int threads,
                                      int steps, const char **format) {
    char command[1024];
    snprintf(command, sizeof command,
             "/usr/bin/python3 %s --model %s --batch %d --size %d --threads %d --steps %d 2>/dev/null", script,
             model_name, batch, size, threads, steps);
    FILE *p = popen(command, "r");
    if (!p) return 0;
    double best = 0;
    char name[32];
    double rate;
    static char best_format[32];
    while (fscanf(p, "%31s %lf", name, &rate) == 2)
        if (rate > best) {
            best = rate;
            snprintf(best_format, sizeof best_format, "%s", name);
        }
    pclose(p);
    *format = best_format;
    return best;
}

int main(int argc, char **argv) {
    const char *models = "cifar_resnet18,cifar_resnet34,cifar_resnet50";
    const char *thread_list = "1,2";
    const char *script = "bench/torch_train.py";
    int batch = 128, steps = 3, size = 32;
    bool torch = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--models") && i + 1 < argc) models = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) thread_list = argv[++i];
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--torch-script") && i + 1 < argc) script = argv[++i];
        else if (!strcmp(argv[i], "--no-torch")) torch = false;
        else if (!strcmp(argv[i], "--tuned")) {
            if (plait_train_use_tuning_file() != PLAIT_OK) {
                fprintf(stderr, "bench_train: %s\n", plait_last_error());
                return 1;
            }
        }
        else if (!strcmp(argv[i], "--conv") && i + 1 < argc) {
            const char *backend = argv[++i];
            if (strcmp(backend, "im2col") && strcmp(backend, "direct")) {
                fprintf(stderr, "bench_train: --conv expects im2col or direct\n");
                return 2;
            }
            plait_nn_set_conv_backend(!strcmp(backend, "im2col") ? PLAIT_CONV_BACKEND_IM2COL : PLAIT_CONV_BACKEND_AUTO);
        }
        else {
            fprintf(stderr, "bench_train: unknown or incomplete flag %s\n", argv[i]);
            return 2;
        }
    }
    if (batch < 1 || steps < 1 || size < 8) {
        fprintf(stderr, "bench_train: --batch and --steps must be positive, --size at least 8\n");
        return 2;
    }
    /* a relative script path only resolves from the repository root: say so rather than print n/a silently */
    if (torch && access(script, R_OK) != 0)
        fprintf(stderr, "bench_train: no PyTorch script at %s (run from the repository root or pass --torch-script); "
                        "PyTorch columns will read n/a\n", script);
    printf("training throughput, images/s (forward + backward + SGD step), batch %d, %dx%d images, %d timed steps, "
           "CPU %s\n", batch, size, size, steps, plait_cpu_features()->model);
    printf("%-16s %7s %10s %10s %-14s %8s\n", "model", "threads", "plait", "pytorch", "torch format", "ratio");
    char models_copy[256];
    snprintf(models_copy, sizeof models_copy, "%s", models);
    for (char *save_m, *model = strtok_r(models_copy, ",", &save_m); model; model = strtok_r(NULL, ",", &save_m)) {
        char threads_copy[64];
        snprintf(threads_copy, sizeof threads_copy, "%s", thread_list);
        for (char *save_t, *tt = strtok_r(threads_copy, ",", &save_t); tt; tt = strtok_r(NULL, ",", &save_t)) {
            int threads = atoi(tt);
            double ours = plait_images_per_second(model, batch, size, threads, steps);
            const char *format = "-";
            double theirs = torch ? torch_images_per_second(script, model, batch, size, threads, steps, &format) : 0;
            if (theirs > 0)
                printf("%-16s %7d %10.1f %10.1f %-14s %7.2fx\n", model, threads, ours, theirs, format, ours / theirs);
            else
                printf("%-16s %7d %10.1f %10s %-14s %8s\n", model, threads, ours, "n/a", "-", "-");
            fflush(stdout);
        }
    }
    return 0;
}
