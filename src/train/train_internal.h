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
/* Weights and buffers only (for --init and eval). */
int plait_train_load_weights(plait_model *m, const char *path);

/* Loads the tuning file (plait_tuning_default_path) once and hands it to the convolution layers. */
int plait_train_use_tuning_file(void);

/* Keeps a seeded random `limit` of the samples (all when limit <= 0), in their original order. */
int plait_dataset_keep_random(plait_dataset *d, int limit, uint64_t seed);

#endif
