/* Shared inside src/pipe and with the training loop. */
#ifndef PLAIT_PIPE_INTERNAL_H
#define PLAIT_PIPE_INTERNAL_H

#include "plait/dist.h"
#include "plait/pipe.h"
#include "train/train_internal.h"

/* Sums `count` doubles over `comm` in place with the dist layer's watched wait (no-op without MPI). */
int pipe_sum_doubles(MPI_Comm comm, double *values, int count, const char *what);

/* Writes units [first, last) as <dir>/last.stage<stage>.safetensors (stage < 0: <dir>/last.safetensors). */
int pipe_save_checkpoint(plait_model *m, const char *dir, int stage, int first, int last,
                         const plait_train_position *position);
/* After every part of a save is written: removes parts of other layouts (stage >= stage_count, or
 * the single file when stage_count > 1, or every stage part when stage_count == 0). */
void pipe_remove_stale_parts(const char *dir, int stage_count);
/* Loads the whole model and the position from the newest complete checkpoint in dir. */
int pipe_load_checkpoint(plait_model *m, const char *dir, plait_train_position *position);

/* Whether plait_train runs the executor (several ranks, or a plan, --parallel or --trace given). */
int pipe_train_wants_executor(const plait_train_config *c);
/* The run's plan: read and validated from c->plan_path, or made for c->parallel (collective). */
int pipe_train_plan(const plait_train_config *c, plait_model *m, plait_plan *plan);
/* The same, also handing over the profile the plan was made from (pipe and auto; unit_count 0
 * when none was measured); the caller frees it. For bench/bench_parallel's predictions. */
int pipe_train_plan_profiled(const plait_train_config *c, plait_model *m, plait_plan *plan, plait_profile *profile);

#endif
