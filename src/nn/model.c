/* Models: creation by name, parameter and buffer lists, gradient and statistics bookkeeping, summary. */
#include <stdlib.h>
#include <string.h>

#include "nn/nn_internal.h"

static const char *const model_names[] = {"resnet18",       "resnet34",       "resnet50", "cifar_resnet18",
                                          "cifar_resnet34", "cifar_resnet50", "resnet20", "resnet56",
                                          "mobilenetv2",    NULL};

const char *const *plait_model_names(void) { return model_names; }

plait_model *nn_model_new(const char *name, plait_shape input, int classes) {
    plait_model *m = calloc(1, sizeof *m);
    if (!m) {
        plait_fail("out of memory creating model %s", name);
        return NULL;
    }
    snprintf(m->name, sizeof m->name, "%s", name);
    m->input = input;
    m->input.n = 1;
    m->classes = classes;
    return m;
}

plait_unit *nn_model_add_unit(plait_model *m, const char *name) {
    plait_unit *grown = realloc(m->units, (size_t)(m->unit_count + 1) * sizeof *grown);
    if (!grown) {
        plait_fail("out of memory adding unit %s", name);
        return NULL;
    }
    m->units = grown;
    plait_unit *u = &grown[m->unit_count];
    memset(u, 0, sizeof *u);
    snprintf(u->name, sizeof u->name, "%s", name);
    u->in_shape = m->unit_count > 0 ? grown[m->unit_count - 1].out_shape : m->input;
    u->out_shape = u->in_shape;
    u->workspace = &m->workspace;
    m->unit_count++;
    return u;
}

void plait_model_free(plait_model *m) {
    if (!m) return;
    for (int i = 0; i < m->unit_count; i++) {
        plait_unit *u = &m->units[i];
        for (int j = 0; j < u->main_count; j++) nn_layer_free(&u->main[j]);
        for (int j = 0; j < u->shortcut_count; j++) nn_layer_free(&u->shortcut[j]);
        free(u->main);
        free(u->shortcut);
    }
    free(m->units);
    plait_free(m->workspace.data);
    free(m);
}

int plait_model_create(const char *name, plait_shape input, int classes, uint64_t seed, plait_model **out) {
    *out = NULL;
    bool known = false;
    for (int i = 0; model_names[i]; i++) known = known || strcmp(name, model_names[i]) == 0;
    if (!known) {
        char list[256] = "";
        for (int i = 0; model_names[i]; i++) {
            strcat(list, i ? ", " : "");
            strcat(list, model_names[i]);
        }
        return plait_fail("unknown model '%s' (known: %s)", name, list);
    }
    if (input.h < 1 || input.w < 1 || input.c < 1)
        return plait_fail("model %s: input must be positive, got %dx%dx%d", name, input.h, input.w, input.c);
    if (classes < 1) return plait_fail("model %s: classes must be positive, got %d", name, classes);
    plait_model *m = nn_model_new(name, input, classes);
    if (!m) return PLAIT_ERROR;
    plait_rng rng;
    plait_rng_seed(&rng, seed);
    int rc = strcmp(name, "mobilenetv2") == 0 ? nn_build_mobilenetv2(m, &rng) : nn_build_resnet(m, name, &rng);
    if (rc != PLAIT_OK) {
        plait_model_free(m);
        return PLAIT_ERROR;
    }
    *out = m;
    return PLAIT_OK;
}

int plait_model_zero_init_residual(plait_model *m) {
    int set = 0;
    for (int i = 0; i < m->unit_count; i++) {
        plait_unit *u = &m->units[i];
        if (!u->residual) continue;
        for (int j = u->main_count - 1; j >= 0; j--)
            if (u->main[j].kind == PLAIT_LAYER_BATCHNORM) {
                plait_param *gamma = &u->main[j].params[0];
                memset(gamma->value, 0, gamma->count * sizeof(float));
                set++;
                break;
            }
    }
    return set;
}

static int check_range(const plait_model *m, int first, int last) {
    if (first < 0 || last > m->unit_count || first > last)
        return plait_fail("unit range [%d, %d) is outside the model's %d units", first, last, m->unit_count);
    return PLAIT_OK;
}

/* Layers of a unit in model order: the main path, then the shortcut. */
static int layer_total(const plait_unit *u) { return u->main_count + u->shortcut_count; }
static plait_layer *layer_at(const plait_unit *u, int j) {
    return j < u->main_count ? &u->main[j] : &u->shortcut[j - u->main_count];
}

#define FOR_EACH_LAYER(m, first, last, l)                                           \
    for (int unit_index = (first); unit_index < (last); unit_index++)               \
        for (int layer_index = 0; layer_index < layer_total(&(m)->units[unit_index]); layer_index++) \
            for (plait_layer *l = layer_at(&(m)->units[unit_index], layer_index); l; l = NULL)

int plait_model_layers(plait_model *m, int first, int last, plait_layer ***layers, int *count) {
    *layers = NULL;
    *count = 0;
    if (check_range(m, first, last) != PLAIT_OK) return PLAIT_ERROR;
    int total = 0;
    FOR_EACH_LAYER(m, first, last, l) total++;
    plait_layer **list = malloc((size_t)(total > 0 ? total : 1) * sizeof *list);
    if (!list) return plait_fail("out of memory listing layers");
    int n = 0;
    FOR_EACH_LAYER(m, first, last, l) list[n++] = l;
    *layers = list;
    *count = n;
    return PLAIT_OK;
}

int plait_model_params(plait_model *m, int first, int last, plait_param ***params, int *count) {
    *params = NULL;
    *count = 0;
    if (check_range(m, first, last) != PLAIT_OK) return PLAIT_ERROR;
    int total = 0;
    FOR_EACH_LAYER(m, first, last, l) total += l->param_count;
    plait_param **list = malloc((size_t)(total > 0 ? total : 1) * sizeof *list);
    if (!list) return plait_fail("out of memory listing parameters");
    int n = 0;
    FOR_EACH_LAYER(m, first, last, l) for (int p = 0; p < l->param_count; p++) list[n++] = &l->params[p];
    *params = list;
    *count = n;
    return PLAIT_OK;
}

int plait_model_buffers(plait_model *m, int first, int last, plait_buffer ***buffers, int *count) {
    *buffers = NULL;
    *count = 0;
    if (check_range(m, first, last) != PLAIT_OK) return PLAIT_ERROR;
    int total = 0;
    FOR_EACH_LAYER(m, first, last, l) total += l->buffer_count;
    plait_buffer **list = malloc((size_t)(total > 0 ? total : 1) * sizeof *list);
    if (!list) return plait_fail("out of memory listing buffers");
    int n = 0;
    FOR_EACH_LAYER(m, first, last, l) for (int b = 0; b < l->buffer_count; b++) list[n++] = &l->buffers[b];
    *buffers = list;
    *count = n;
    return PLAIT_OK;
}

size_t plait_model_param_count(const plait_model *m) {
    size_t total = 0;
    FOR_EACH_LAYER(m, 0, m->unit_count, l) for (int p = 0; p < l->param_count; p++) total += l->params[p].count;
    return total;
}

double plait_unit_macs(const plait_unit *u) {
    double total = 0.0;
    for (int i = 0; i < u->main_count; i++) total += nn_layer_macs(&u->main[i]);
    for (int i = 0; i < u->shortcut_count; i++) total += nn_layer_macs(&u->shortcut[i]);
    return total;
}

void plait_model_zero_grad(plait_model *m, int first, int last) {
    if (first < 0) first = 0;
    if (last > m->unit_count) last = m->unit_count;
    FOR_EACH_LAYER(m, first, last, l) {
        for (int p = 0; p < l->param_count; p++) memset(l->params[p].grad, 0, l->params[p].count * sizeof(float));
        if (l->kind == PLAIT_LAYER_BATCHNORM) {
            memset(l->bn_stat_sum, 0, (size_t)l->in_shape.c * sizeof(double));
            memset(l->bn_stat_sumsq, 0, (size_t)l->in_shape.c * sizeof(double));
            l->bn_stat_rows = 0.0;
        }
    }
}

/* PyTorch's update for the whole mini-batch: running = (1-m)*running + m*batch, with the unbiased
 * variance of all the mini-batch's rows. Clears the statistics so a second call does nothing. */
void plait_model_update_running_stats(plait_model *m, int first, int last) {
    if (first < 0) first = 0;
    if (last > m->unit_count) last = m->unit_count;
    FOR_EACH_LAYER(m, first, last, l) {
        if (l->kind != PLAIT_LAYER_BATCHNORM || l->bn_stat_rows <= 0.0) continue;
        double rows = l->bn_stat_rows, momentum = l->bn_momentum;
        for (int c = 0; c < l->in_shape.c; c++) {
            double mean = l->bn_stat_sum[c] / rows;
            double var = (l->bn_stat_sumsq[c] - rows * mean * mean) / (rows > 1.0 ? rows - 1.0 : 1.0);
            if (var < 0.0) var = 0.0;
            float *running_mean = l->buffers[0].value, *running_var = l->buffers[1].value;
            running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * mean);
            running_var[c] = (float)((1.0 - momentum) * running_var[c] + momentum * var);
        }
        l->num_batches_tracked++;
        memset(l->bn_stat_sum, 0, (size_t)l->in_shape.c * sizeof(double));
        memset(l->bn_stat_sumsq, 0, (size_t)l->in_shape.c * sizeof(double));
        l->bn_stat_rows = 0.0;
    }
}

/* OHWI <-> OIHW for conv weights; `to_torch` picks the direction. */
static void convert_layout(const plait_param *p, const float *from, float *to, bool to_torch) {
    if (!p->conv_weight) {
        memcpy(to, from, p->count * sizeof(float));
        return;
    }
    int64_t k_count = p->dims[0], c_count = p->dims[1], r_count = p->dims[2], s_count = p->dims[3];
    for (int64_t k = 0; k < k_count; k++)
        for (int64_t c = 0; c < c_count; c++)
            for (int64_t r = 0; r < r_count; r++)
                for (int64_t s = 0; s < s_count; s++) {
                    size_t torch_index = (size_t)(((k * c_count + c) * r_count + r) * s_count + s);
                    size_t plait_index = (size_t)(((k * r_count + r) * s_count + s) * c_count + c);
                    if (to_torch) to[torch_index] = from[plait_index];
                    else to[plait_index] = from[torch_index];
                }
}

void plait_param_to_torch(const plait_param *p, const float *plait_layout, float *torch_layout) {
    convert_layout(p, plait_layout, torch_layout, true);
}

void plait_param_from_torch(const plait_param *p, const float *torch_layout, float *plait_layout) {
    convert_layout(p, torch_layout, plait_layout, false);
}

/* 11689512 -> "11,689,512", as papers print parameter counts. */
static void format_thousands(size_t value, char *out, size_t size) {
    char digits[32];
    int n = snprintf(digits, sizeof digits, "%zu", value), at = 0;
    for (int i = 0; i < n && at + 2 < (int)size; i++) {
        if (i > 0 && (n - i) % 3 == 0) out[at++] = ',';
        out[at++] = digits[i];
    }
    out[at] = 0;
}

void plait_model_print_summary(const plait_model *m, FILE *out) {
    fprintf(out, "%s: input %dx%dx%d (HxWxC), %d classes\n", m->name, m->input.h, m->input.w, m->input.c,
            m->classes);
    fprintf(out, "%-4s %-14s %-18s %12s %12s\n", "#", "unit", "output (HxWxC)", "params", "MMACs");
    size_t total_params = 0;
    double total_macs = 0.0;
    for (int i = 0; i < m->unit_count; i++) {
        const plait_unit *u = &m->units[i];
        size_t params = 0;
        for (int j = 0; j < layer_total(u); j++) {
            const plait_layer *l = layer_at(u, j);
            for (int p = 0; p < l->param_count; p++) params += l->params[p].count;
        }
        double macs = plait_unit_macs(u);
        char shape[40];
        snprintf(shape, sizeof shape, "%dx%dx%d", u->out_shape.h, u->out_shape.w, u->out_shape.c);
        fprintf(out, "%-4d %-14s %-18s %12zu %12.2f\n", i, u->name, shape, params, macs / 1e6);
        total_params += params;
        total_macs += macs;
    }
    char grouped[32];
    format_thousands(total_params, grouped, sizeof grouped);
    fprintf(out, "total: %d units, %s parameters (%.3f M), %.3f G multiply-adds (%.3f GFLOPs) per sample\n",
            m->unit_count, grouped, (double)total_params / 1e6, total_macs / 1e9, 2.0 * total_macs / 1e9);
}
