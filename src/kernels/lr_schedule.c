/* Learning-rate schedules evaluated per optimizer step, matching PyTorch's schedulers:
 * StepLR, CosineAnnealingLR (T_max = total_steps), LinearLR (to min_lr over total_steps) and OneCycleLR
 * (cosine annealing, two phases). Linear decay to zero is the schedule Li, Yumer and Ramanan (ICLR 2020,
 * "Budgeted training") found best when the epoch budget is small. */
#include <math.h>
#include <string.h>

#include "plait/ops.h"

static const double pi = 3.14159265358979323846;

/* OneCycleLR's _annealing_cos: from start at pct 0 to end at pct 1. */
static double cosine_between(double start, double end, double pct) {
    return end + (start - end) / 2.0 * (cos(pi * pct) + 1.0);
}

/* OneCycleLR: phase 1 ends at step pct_start*total - 1 (initial -> max), phase 2 at total - 1
 * (max -> initial/final_div_factor). Steps past the end stay at the final value. */
static double one_cycle(const plait_lr_schedule *s, long step) {
    double max_lr = s->base_lr, initial = max_lr / s->div_factor, final = initial / s->final_div_factor;
    double phase1_end = (double)s->pct_start * (double)s->total_steps - 1.0;
    double phase2_end = (double)s->total_steps - 1.0;
    double t = (double)step;
    if (t > phase2_end) t = phase2_end;
    if (t <= phase1_end) return cosine_between(initial, max_lr, phase1_end > 0 ? t / phase1_end : 1.0);
    double span = phase2_end - phase1_end;
    return cosine_between(max_lr, final, span > 0 ? (t - phase1_end) / span : 1.0);
}

/* Fraction of total_steps done at `step` (non-negative), held at 1 past the end. */
static double progress(const plait_lr_schedule *s, long step) {
    long t = step < s->total_steps ? step : s->total_steps;
    return s->total_steps > 0 ? (double)t / (double)s->total_steps : 1.0;
}

float plait_lr_at(const plait_lr_schedule *s, long step) {
    if (step < 0) step = 0;
    double lr = s->base_lr;
    switch (s->kind) {
    case PLAIT_LR_CONSTANT:
        break;
    case PLAIT_LR_STEP:
        if (s->step_size > 0) lr = s->base_lr * pow((double)s->gamma, (double)(step / s->step_size));
        break;
    case PLAIT_LR_COSINE:
        lr = s->min_lr + ((double)s->base_lr - s->min_lr) * (1.0 + cos(pi * progress(s, step))) / 2.0;
        break;
    case PLAIT_LR_LINEAR:
        lr = (double)s->base_lr + ((double)s->min_lr - s->base_lr) * progress(s, step);
        break;
    case PLAIT_LR_ONECYCLE:
        return (float)one_cycle(s, step);
    }
    /* Warm-up scales the schedule's value by (step+1)/warmup_steps: base_lr/warmup_steps at step 0. */
    if (s->warmup_steps > 0 && step < s->warmup_steps) lr *= (double)(step + 1) / (double)s->warmup_steps;
    return (float)lr;
}

int plait_lr_kind_parse(const char *name, plait_lr_kind *kind) {
    static const struct {
        const char *name;
        plait_lr_kind kind;
    } names[] = {
        {"constant", PLAIT_LR_CONSTANT},
        {"step", PLAIT_LR_STEP},
        {"cosine", PLAIT_LR_COSINE},
        {"onecycle", PLAIT_LR_ONECYCLE},
        {"linear", PLAIT_LR_LINEAR},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (name && strcmp(name, names[i].name) == 0) {
            *kind = names[i].kind;
            return PLAIT_OK;
        }
    return plait_fail("unknown learning-rate schedule '%s' (expected constant, step, cosine, linear or onecycle)",
                      name ? name : "(null)");
}
