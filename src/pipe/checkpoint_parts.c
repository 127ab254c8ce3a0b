/* Checkpoints in stage parts: each stage writes <dir>/last.stage<k>.safetensors (one process writes
 * <dir>/last.safetensors); loading takes the newest complete set, so a run resumes under any plan. */
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipe/pipe_internal.h"
#include "plait/checkpoint.h"
#include "train/safetensors.h"

static void part_path(char *out, size_t size, const char *dir, int stage) {
    if (stage < 0)
        snprintf(out, size, "%s/last.safetensors", dir);
    else
        snprintf(out, size, "%s/last.stage%d.safetensors", dir, stage);
}

int pipe_save_checkpoint(plait_model *m, const char *dir, int stage, int first, int last,
                         const plait_train_position *position) {
    char path[4200], training[160];
    part_path(path, sizeof path, dir, stage);
    snprintf(training, sizeof training, "{\"epoch\": %d, \"batch\": %ld, \"step\": %ld}", position->epoch,
             position->batch, position->step);
    plait_train_state state = {.epoch = position->epoch, .step = position->step, .training = training};
    return plait_checkpoint_save(path, m, first, last, &state);
}

static bool stage_part_name(const char *name, int *stage) {
    int k, end = 0;
    if (sscanf(name, "last.stage%d.safetensors%n", &k, &end) != 1 || name[end] != '\0' || k < 0) return false;
    *stage = k;
    return true;
}

void pipe_remove_stale_parts(const char *dir, int stage_count) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *entry;
    char path[4400];
    while ((entry = readdir(d))) {
        int k;
        bool stale = stage_part_name(entry->d_name, &k) ? k >= stage_count
                                                        : strcmp(entry->d_name, "last.safetensors") == 0 && stage_count > 0;
        if (!stale) continue;
        snprintf(path, sizeof path, "%s/%s", dir, entry->d_name);
        unlink(path);
    }
    closedir(d);
}

static long part_step(const char *path) {
    safetensors_file *f;
    if (safetensors_read(path, &f) != PLAIT_OK) return -1;
    const char *step = safetensors_metadata(f, "step");
    long value = step ? atol(step) : -1;
    safetensors_free(f);
    return value;
}

void plait_checkpoint_free_parts(char **paths, int count) {
    for (int i = 0; paths && i < count; i++) free(paths[i]);
    free(paths);
}

int plait_checkpoint_find_parts(const char *dir, char ***paths, int *count) {
    *paths = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d) return plait_fail("no checkpoint in %s (no last.safetensors or last.stage<k>.safetensors)", dir);
    int capacity = 8, found = 0;
    char **names = malloc((size_t)capacity * sizeof *names);
    long *steps = malloc((size_t)capacity * sizeof *steps);
    struct dirent *entry;
    long newest = -1;
    while (names && steps && (entry = readdir(d))) {
        int k;
        if (strcmp(entry->d_name, "last.safetensors") != 0 && !stage_part_name(entry->d_name, &k)) continue;
        if (found == capacity) {
            capacity *= 2;
            char **more_names = realloc(names, (size_t)capacity * sizeof *names);
            if (more_names) names = more_names;
            long *more_steps = realloc(steps, (size_t)capacity * sizeof *steps);
            if (more_steps) steps = more_steps;
            if (!more_names || !more_steps) break;
        }
        size_t length = strlen(dir) + strlen(entry->d_name) + 2;
        if (!(names[found] = malloc(length))) break;
        snprintf(names[found], length, "%s/%s", dir, entry->d_name);
        steps[found] = part_step(names[found]);
        if (steps[found] > newest) newest = steps[found];
        found++;
    }
    closedir(d);
    if (!names || !steps) {
        plait_checkpoint_free_parts(names, found);
        free(steps);
        return plait_fail("out of memory");
    }
    if (found == 0 || newest < 0) {
        plait_checkpoint_free_parts(names, found);
        free(steps);
        return plait_fail("no checkpoint in %s (no readable last.safetensors or last.stage<k>.safetensors)", dir);
    }
    /* Parts of an older save (another plan, or a save that stopped midway) stay out. */
    int kept = 0;
    for (int i = 0; i < found; i++) {
        if (steps[i] == newest)
            names[kept++] = names[i];
        else
            free(names[i]);
    }
    free(steps);
    *paths = names;
    *count = kept;
    return PLAIT_OK;
}

int pipe_load_checkpoint(plait_model *m, const char *dir, plait_train_position *position) {
    char **paths;
    int count;
    if (plait_checkpoint_find_parts(dir, &paths, &count) != PLAIT_OK) return PLAIT_ERROR;
    plait_train_state state = {0};
    int status = plait_checkpoint_load((const char *const *)paths, count, m, 0, m->unit_count,
                                       PLAIT_CHECKPOINT_RESUME, &state);
    if (status == PLAIT_OK) {
        json_error_t error;
        json_t *root = json_loads(state.training, 0, &error);
        json_int_t epoch = -1, batch = -1, step = -1;
        int unpacked =
            root ? json_unpack(root, "{s:I, s:I, s:I}", "epoch", &epoch, "batch", &batch, "step", &step) : -1;
        json_decref(root);
        if (unpacked != 0 || epoch < 0 || batch < 0 || step < 0)
            status = plait_fail("checkpoint %s has no training position (epoch, batch, step); was it written by "
                                "plait train?",
                                paths[0]);
        else
            *position = (plait_train_position){.epoch = (int)epoch, .batch = (long)batch, .step = (long)step};
    }
    plait_train_state_clear(&state);
    plait_checkpoint_free_parts(paths, count);
    return status;
}
