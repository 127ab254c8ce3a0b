/* The training loop's side of checkpoints: its position as the checkpoint's training state, and
 * `plait eval`, which rebuilds the model a checkpoint names. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plait/checkpoint.h"
#include "plait/train.h"
#include "train/safetensors.h"
#include "train/train_internal.h"

int plait_train_save_checkpoint(plait_model *m, const char *path, const plait_train_position *position) {
    char training[160];
    snprintf(training, sizeof training, "{\"epoch\": %d, \"batch\": %ld, \"step\": %ld}", position->epoch,
             position->batch, position->step);
    plait_train_state state = {.epoch = position->epoch, .step = position->step, .training = training};
    return plait_checkpoint_save(path, m, 0, m->unit_count, &state);
}

int plait_train_load_checkpoint(plait_model *m, const char *path, plait_train_position *position) {
    plait_train_state state = {0};
    const char *paths[] = {path};
    if (plait_checkpoint_load(paths, 1, m, 0, m->unit_count, PLAIT_CHECKPOINT_RESUME, &state) != PLAIT_OK)
        return PLAIT_ERROR;
    json_error_t error;
    json_t *root = json_loads(state.training, 0, &error);
    json_int_t epoch = -1, batch = -1, step = -1;
    int unpacked = root ? json_unpack(root, "{s:I, s:I, s:I}", "epoch", &epoch, "batch", &batch, "step", &step) : -1;
    json_decref(root);
    plait_train_state_clear(&state);
    if (unpacked != 0 || epoch < 0 || batch < 0 || step < 0)
        return plait_fail("checkpoint %s has no training position (epoch, batch, step); was it written by "
                          "plait train?",
                          path);
    *position = (plait_train_position){.epoch = (int)epoch, .batch = (long)batch, .step = (long)step};
    return PLAIT_OK;
}

int plait_train_load_weights(plait_model *m, const char *path) {
    const char *paths[] = {path};
    return plait_checkpoint_load(paths, 1, m, 0, m->unit_count, PLAIT_CHECKPOINT_WEIGHTS, NULL);
}

int plait_train_load_average(plait_model *m, const char *path, long step) {
    safetensors_file *f;
    if (safetensors_read(path, &f) != PLAIT_OK) return PLAIT_ERROR;
    const char *text = safetensors_metadata(f, "step");
    long saved = text ? atol(text) : -1;
    safetensors_free(f);
    if (saved != step)
        return plait_fail("weight average %s is at step %ld but the checkpoint at step %ld; it cannot continue "
                          "this run",
                          path, saved, step);
    return plait_train_load_weights(m, path);
}

int plait_eval_checkpoint(const plait_eval_config *e, plait_eval_score *single, plait_eval_score *flip, int *count) {
    plait_set_threads(e->threads);
    if (plait_train_use_tuning_file() != PLAIT_OK) return PLAIT_ERROR;
    char model_name[64] = "";
    int classes = 0;
    safetensors_file *f;
    if (safetensors_read(e->checkpoint, &f) != PLAIT_OK) return PLAIT_ERROR;
    const char *named = safetensors_metadata(f, "model");
    const char *classes_text = safetensors_metadata(f, "classes");
    snprintf(model_name, sizeof model_name, "%s", e->model ? e->model : named ? named : "");
    if (classes_text) classes = atoi(classes_text);
    safetensors_free(f);
    if (!model_name[0])
        return plait_fail("checkpoint %s does not name its model; give --model", e->checkpoint);

    plait_dataset train = {0}, test = {0};
    plait_model *m = NULL;
    int status = PLAIT_ERROR;
    if (plait_dataset_open(e->dataset, e->data_path, e->image_size, e->seed, &train, &test) != PLAIT_OK ||
        plait_dataset_keep_random(&test, e->test_limit, e->seed + 1) != PLAIT_OK)
        goto done;
    if (classes && classes != test.classes) {
        plait_fail("checkpoint %s has %d classes but data set %s has %d", e->checkpoint, classes, e->dataset,
                   test.classes);
        goto done;
    }
    plait_shape input = {1, test.height, test.width, test.channels};
    if (plait_model_create(model_name, input, test.classes, 1, &m) != PLAIT_OK) goto done;
    if (plait_train_load_weights(m, e->checkpoint) != PLAIT_OK) goto done;
    if (plait_evaluate_with_flip(m, &test, e->batch_size, 0, single, e->flip ? flip : NULL) != PLAIT_OK) goto done;
    *count = test.count;
    status = PLAIT_OK;
done:
    plait_model_free(m);
    plait_dataset_free(&train);
    plait_dataset_free(&test);
    return status;
}
