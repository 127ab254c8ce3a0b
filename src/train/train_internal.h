/* Glue between the training loop and the checkpoint files. */
#ifndef PLAIT_TRAIN_INTERNAL_H
#define PLAIT_TRAIN_INTERNAL_H

#include "plait/data.h"
#include "plait/nn.h"

/* Where a run stands: the next epoch and batch to run, and optimizer steps taken so far. */
typedef struct plait_train_position {
    int epoch;
    long batch;
    long step;
} plait_train_position;

int plait_train_save_checkpoint(plait_model *m, const char *path, const plait_train_position *position);
/* Everything needed to continue exactly: weights, buffers, momentum and position. */
int plait_train_load_checkpoint(plait_model *m, const char *path, plait_train_position *position);
/* A weight average's file (weights and buffers, no momentum) must be at the same step as the run. */
int plait_train_load_average(plait_model *m, const char *path, long step);
/* Weights and buffers only (for --init and eval). */
int plait_train_load_weights(plait_model *m, const char *path);

/* An exponential moving average of a model's weights and batch-norm running statistics (--ema),
 * held in a second model of the same architecture: updated after each optimizer step, evaluated
 * beside the live weights and saved as DIR/ema.safetensors. */
typedef struct plait_weight_average {
    plait_model *model; /* the average; it has no momentum arrays and never steps */
    float decay;
    plait_param **live_params, **params;
    plait_buffer **live_buffers, **buffers;
    plait_layer **live_layers, **layers;
    int param_count, buffer_count, layer_count;
} plait_weight_average;
/* Starts the average at the live model's current weights. */
int plait_weight_average_create(plait_model *live, float decay, plait_weight_average *out);
void plait_weight_average_free(plait_weight_average *a);
/* The decay used after optimizer step `step` (counted from 1): min(decay, (1 + step) / (10 + step)). */
float plait_weight_average_decay_at(float decay, long step);
/* average += (1 - decay_at(step)) * (live - average), for weights and running statistics. */
void plait_weight_average_update(plait_weight_average *a, long step);

/* Loads the tuning file (plait_tuning_default_path) once and hands it to the convolution layers. */
int plait_train_use_tuning_file(void);

/* Keeps a seeded random `limit` of the samples (all when limit <= 0), in their original order. */
int plait_dataset_keep_random(plait_dataset *d, int limit, uint64_t seed);

#endif
