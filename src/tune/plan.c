/* Per-layer kernel choice: the schedules a layer runs, from the tuning file or the defaults. */
#include "kernels/direct/direct.h"

int plait_conv_plan_make(plait_conv_plan *plan, const plait_conv2d_desc *d, const plait_tuning *tuning) {
    if (!plait_direct_supports(d)) return plait_fail("direct kernels do not support this convolution");
    plan->desc = *d;
    plan->workspace_bytes = 0;
    for (int dir = 0; dir < PLAIT_CONV_DIRECTIONS; dir++) {
        plan->tuned[dir] = plait_tuning_get(tuning, d, (plait_conv_direction)dir, &plan->schedule[dir]);
        if (!plan->tuned[dir]) plan->schedule[dir] = plait_conv_default_schedule(d, (plait_conv_direction)dir);
        size_t bytes = plait_schedule_workspace_bytes(d, (plait_conv_direction)dir, &plan->schedule[dir]);
        if (bytes > plan->workspace_bytes) plan->workspace_bytes = bytes;
    }
    return PLAIT_OK;
}

void plait_tuned_forward(const plait_conv_plan *p, const float *x, const float *w, float *y, void *workspace) {
    plait_direct_forward(&p->desc, &p->schedule[PLAIT_CONV_FORWARD], x, w, y, workspace);
}

void plait_tuned_backward_data(const plait_conv_plan *p, const float *dy, const float *w, float *dx,
                               void *workspace) {
    plait_direct_backward_data(&p->desc, &p->schedule[PLAIT_CONV_BACKWARD_DATA], dy, w, dx, workspace);
}

void plait_tuned_backward_weights(const plait_conv_plan *p, const float *x, const float *dy, float *dw,
                                  void *workspace) {
    plait_direct_backward_weights(&p->desc, &p->schedule[PLAIT_CONV_BACKWARD_WEIGHTS], x, dy, dw, workspace);
}
