/* plait checkpoints: safetensors files with torchvision's tensor names.
 *
 * A checkpoint holds, for a range of units:
 *   - every parameter as F32 with torchvision's name and dims (conv weights OIHW; plait keeps OHWI),
 *   - batch-norm running_mean / running_var (F32) and num_batches_tracked (I64 scalar),
 *   - SGD momentum buffers as "optimizer.momentum.<parameter name>" (same layout as the parameter),
 *   - string metadata: format, format_version, model, classes, input_hwc, units, unit_count, epoch,
 *     step and training_state (the caller's JSON text).
 * Dropping the optimizer.* tensors leaves a state dict torchvision's model loads with strict=True.
 * A pipeline stage saves its own unit range; loading takes any number of parts, so a checkpoint
 * written under one split loads under another.
 */
#ifndef PLAIT_CHECKPOINT_H
#define PLAIT_CHECKPOINT_H

#include "plait/core.h"
#include "plait/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PLAIT_CHECKPOINT_FORMAT_VERSION 1

/* Where training stands. `training` is opaque JSON text owned by the training loop (RNG states,
 * LR-schedule position, data order, ...); the checkpoint only checks that it is valid JSON. */
typedef struct plait_train_state {
    int64_t epoch; /* epochs completed */
    int64_t step;  /* optimizer steps completed */
    char *training; /* JSON text; NULL saves "{}". After a load: malloc'd, free with plait_train_state_clear */
} plait_train_state;

void plait_train_state_clear(plait_train_state *state);

/* Save units [first, last) of `m` to `path` (atomically: a failed save leaves an existing file intact).
 * `state` may be NULL (epoch 0, step 0, training "{}"). Momentum is saved for parameters that have a
 * momentum buffer. */
int plait_checkpoint_save(const char *path, const plait_model *m, int first, int last,
                          const plait_train_state *state);

typedef enum plait_checkpoint_mode {
    /* Resume training: parameters, BN buffers and num_batches_tracked, momentum (for parameters that
     * have a buffer) and the training state are all required; all parts must agree on the step. */
    PLAIT_CHECKPOINT_RESUME,
    /* Initialize weights (--init): parameters and BN running statistics are required; num_batches_tracked
     * is loaded when present; optimizer.* tensors and metadata are ignored, so plain torchvision state
     * dicts saved as safetensors load too. */
    PLAIT_CHECKPOINT_WEIGHTS,
} plait_checkpoint_mode;

/* Load units [first, last) of `m` from the parts `paths[0..path_count)`. Tensors of other units of the
 * same model are allowed in the parts (they belong to other stages); a tensor the model does not have,
 * a tensor found in two parts, a wrong shape or dtype, a missing tensor, or a part written for another
 * model is an error. Nothing in the model changes unless the whole load succeeds. In resume mode
 * `state` (may be NULL) receives the saved training position. */
int plait_checkpoint_load(const char *const *paths, int path_count, plait_model *m, int first, int last,
                          plait_checkpoint_mode mode, plait_train_state *state);

#ifdef __cplusplus
}
#endif
#endif
