/* plait training: the loop (forward, loss, backward, SGD step per mini-batch), evaluation,
 * checkpoints at epoch ends, metrics as JSON lines and a live progress line. */
#ifndef PLAIT_TRAIN_H
#define PLAIT_TRAIN_H

#include "plait/data.h"
#include "plait/nn.h"
#include "plait/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct plait_train_config {
    const char *model;
    const char *dataset;   /* cifar10, cifar100, caltech101, fashion-mnist, imagefolder */
    const char *data_path; /* NULL: the data set's default */
    int image_size;        /* caltech101/imagefolder resize; 0 = default */
    int epochs;
    long max_steps; /* stop after this many optimizer steps in total; 0 = no limit */
    int batch_size;
    int microbatches; /* split each mini-batch into this many micro-batches; gradients accumulate */
    plait_lr_schedule lr;
    float momentum, weight_decay, label_smoothing;
    bool nesterov;
    int threads;
    uint64_t seed;
    bool augment, shuffle;
    int cutout; /* Cutout square side in pixels on top of the standard augmentation; 0 = none */
    bool flip_alternate; /* standard augmentation's flip alternates per image between epochs */
    int crop_off_epochs; /* the last N epochs train without random crop and cutout (flip kept); 0 = none */
    float sam_rho;       /* sharpness-aware minimization radius; 0 = plain SGD */
    int sam_epochs;      /* SAM in the last N epochs only; 0 = all epochs */
    float ema_decay;     /* exponential moving average of the weights, evaluated beside them and saved as
                          * checkpoint_dir/ema.safetensors; 0 = none (one process only) */
    bool zero_init_residual; /* plait_model_zero_init_residual after creation (--init/--resume override it) */
    int train_limit, test_limit; /* use only the first N samples of each split; 0 = all */
    const char *checkpoint_dir;  /* NULL: no checkpoints */
    bool resume;                 /* continue from checkpoint_dir/last.safetensors */
    const char *init_path;       /* start from these weights */
    const char *metrics_path;    /* JSON lines; NULL: checkpoint_dir/metrics.jsonl or none */
    bool progress;               /* live progress line on stderr */
    bool evaluate_each_epoch;
    bool test_flip;              /* also score each test image averaged with its mirror image */
    /* Parallel training (include/plait/pipe.h). Runs the executor when the world has more than one
     * rank, or when any of parallel, plan_path or trace_path is set. */
    const char *parallel;  /* "dp", "pipe" or "auto"; NULL: dp when the world has several ranks */
    const char *plan_path; /* a plan file (plait plan); its batch size and micro-batches win */
    int pipeline_schedule; /* plait_schedule_kind for dp/pipe/auto [1F1B] */
    double bucket_bytes;   /* gradient bucket size; 0: 25 MiB */
    int streams;           /* communication streams; 0: 2 */
    const char *hardware_path; /* hardware JSON: --plan is checked against its memory, auto plans for it */
    const char *trace_path; /* Chrome trace JSON of the run (and the SVG beside it) */
    int trace_steps;        /* steps recorded in the trace; 0: 20 */
} plait_train_config;

void plait_train_config_defaults(plait_train_config *c);

typedef struct plait_train_result {
    long steps;
    int epochs_done;
    float last_loss, train_accuracy;
    float test_loss, test_accuracy; /* of the last evaluation, -1 if none */
    float test_flip_accuracy;       /* the same with test_flip, -1 if none */
    float ema_test_accuracy, ema_test_flip_accuracy; /* the same of the weight average, -1 if none */
    double seconds, images_per_second;
    /* Parallel runs: gradient all-reduce seconds over the run, mean over the replicated ranks,
     * overlapped with backward (hidden) and waited for by the optimizer step (exposed). */
    double allreduce_hidden_seconds, allreduce_exposed_seconds;
} plait_train_result;

int plait_train(const plait_train_config *c, plait_train_result *result);

/* One model's step machinery (unit states, parameter list), for the loop, the benchmarks and tests.
 * The trainer borrows the model. */
typedef struct plait_trainer plait_trainer;
typedef struct plait_step_options {
    int microbatches;
    float lr, momentum, weight_decay, label_smoothing;
    bool nesterov;
    float sam_rho; /* > 0: sharpness-aware minimization with this radius (two passes per step) */
} plait_step_options;
int plait_trainer_create(plait_model *m, plait_trainer **out);
void plait_trainer_free(plait_trainer *t);
/* Forward, loss, backward over equal micro-batches, running-statistics update and SGD step. A
 * non-finite loss leaves the weights untouched (the caller decides what to do). */
int plait_trainer_step(plait_trainer *t, const plait_step_options *o, const plait_tensor *images,
                       const int32_t *labels, float *loss, int *correct);
/* Evaluation-mode forward; *logits stays valid until the next call. */
int plait_trainer_predict(plait_trainer *t, const plait_tensor *images, const plait_tensor **logits);

/* Mean loss and accuracy of a model in evaluation mode over a data set. */
int plait_evaluate(plait_model *m, const plait_dataset *d, int batch_size, int limit, float *loss, float *accuracy);
typedef struct plait_eval_score {
    float loss, accuracy;
} plait_eval_score;
/* The same, plus flip test-time augmentation when flip is not NULL: each image's logits averaged with
 * those of its left-right mirror (the augmentation training used), scored in the same pass. */
int plait_evaluate_with_flip(plait_model *m, const plait_dataset *d, int batch_size, int limit,
                             plait_eval_score *single, plait_eval_score *flip);

typedef struct plait_eval_config {
    const char *checkpoint;
    const char *model; /* NULL: the model named in the checkpoint */
    const char *dataset, *data_path;
    int image_size, test_limit, batch_size, threads;
    uint64_t seed;
    bool flip; /* also score with flip test-time augmentation (into *flip) */
} plait_eval_config;

/* Loads a checkpoint's weights and scores them on the data set's test split. */
int plait_eval_checkpoint(const plait_eval_config *e, plait_eval_score *single, plait_eval_score *flip, int *count);

#ifdef __cplusplus
}
#endif
#endif
