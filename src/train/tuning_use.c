/* plait train and eval read the tuning file by themselves: tuned schedules where `plait tune` found
 * them for this CPU and thread count, default schedules elsewhere. */
#include "plait/tune.h"
#include "train/train_internal.h"

int plait_train_use_tuning_file(void) {
    static plait_tuning *tuning; /* loaded once per process; the layers keep pointing into it */
    if (tuning) return PLAIT_OK;
    char path[4096];
    plait_tuning_default_path(path, sizeof path);
    tuning = plait_tuning_new();
    if (!tuning) return plait_fail("out of memory");
    if (plait_tuning_load(tuning, path) != PLAIT_OK) {
        plait_tuning_free(tuning);
        tuning = NULL;
        return PLAIT_ERROR;
    }
    plait_nn_set_tuning(tuning);
    return PLAIT_OK;
}
