#include "plait/checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/safetensors.h"

#define FORMAT_NAME "plait-checkpoint"
#define MOMENTUM_PREFIX "optimizer.momentum."

void plait_train_state_clear(plait_train_state *state) {
    if (!state) return;
    free(state->training);
    state->training = NULL;
    state->epoch = 0;
    state->step = 0;
}

/* ---- what a unit range holds ---------------------------------------------------------------- */

typedef enum entry_kind { ENTRY_PARAM, ENTRY_BUFFER, ENTRY_BATCHES_TRACKED, ENTRY_MOMENTUM } entry_kind;

/* One tensor of the model as a checkpoint names and shapes it. */
typedef struct entry {
    char name[128];
    entry_kind kind;
    plait_param *param;   /* param, momentum */
    plait_buffer *buffer; /* buffer */
    plait_layer *layer;   /* batches tracked */
    int unit;
    int ndim;
    int64_t dims[4];
    const safetensors_tensor *found; /* during a load */
    int found_in;
} entry;

typedef struct entry_list {
    entry *items;
    int count, capacity;
} entry_list;

static entry *entry_push(entry_list *list, entry_kind kind, const char *prefix, const char *name) {
    if (list->count == list->capacity) {
        int capacity = list->capacity ? 2 * list->capacity : 256;
        entry *grown = realloc(list->items, (size_t)capacity * sizeof *grown);
        if (!grown) {
            plait_fail("out of memory listing checkpoint tensors");
            return NULL;
        }
        list->items = grown;
        list->capacity = capacity;
    }
    entry *e = &list->items[list->count];
    memset(e, 0, sizeof *e);
    if (snprintf(e->name, sizeof e->name, "%s%s", prefix, name) >= (int)sizeof e->name) {
        plait_fail("checkpoint tensor name too long: %s%s", prefix, name);
        return NULL;
    }
    e->kind = kind;
    list->count++;
    return e;
}

static int list_layer(entry_list *list, plait_layer *layer, bool momentum) {
    for (int i = 0; i < layer->param_count; i++) {
        plait_param *p = &layer->params[i];
        entry *e = entry_push(list, momentum ? ENTRY_MOMENTUM : ENTRY_PARAM, momentum ? MOMENTUM_PREFIX : "", p->name);
        if (!e) return PLAIT_ERROR;
        e->param = p;
        e->ndim = p->ndim;
        size_t count = 1;
        for (int d = 0; d < p->ndim; d++) count *= (size_t)(e->dims[d] = p->dims[d]);
        if (count != p->count || (p->conv_weight && p->ndim != 4))
            return plait_fail("parameter %s: dims do not match its %zu values", p->name, p->count);
    }
    if (momentum) return PLAIT_OK;
    for (int i = 0; i < layer->buffer_count; i++) {
        entry *e = entry_push(list, ENTRY_BUFFER, "", layer->buffers[i].name);
        if (!e) return PLAIT_ERROR;
        e->buffer = &layer->buffers[i];
        e->ndim = 1;
        e->dims[0] = (int64_t)layer->buffers[i].count;
    }
    if (layer->kind == PLAIT_LAYER_BATCHNORM) {
        entry *e = entry_push(list, ENTRY_BATCHES_TRACKED, layer->name, ".num_batches_tracked");
        if (!e) return PLAIT_ERROR;
        e->layer = layer;
        e->ndim = 0; /* torch keeps it as a 0-dimensional tensor */
    }
    return PLAIT_OK;
}

/* Tensors of units [first, last) in torchvision's state-dict order, then the momentum buffers of their
 * parameters (listed whether or not the parameter has one). */
static int list_entries(const plait_model *m, int first, int last, entry_list *list) {
    for (int pass = 0; pass < 2; pass++)
        for (int u = first; u < last; u++) {
            plait_unit *unit = &m->units[u];
            int before = list->count;
            for (int i = 0; i < unit->main_count; i++)
                if (list_layer(list, &unit->main[i], pass == 1) != PLAIT_OK) return PLAIT_ERROR;
            for (int i = 0; i < unit->shortcut_count; i++)
                if (list_layer(list, &unit->shortcut[i], pass == 1) != PLAIT_OK) return PLAIT_ERROR;
            for (int i = before; i < list->count; i++) list->items[i].unit = u;
        }
    return PLAIT_OK;
}

static int check_range(const plait_model *m, int first, int last) {
    if (first < 0 || last > m->unit_count || first >= last)
        return plait_fail("unit range [%d,%d) is not within model %s's %d units", first, last, m->name,
                          m->unit_count);
    return PLAIT_OK;
}

/* ---- saving --------------------------------------------------------------------------------- */

static int add_entry(safetensors_writer *w, const entry *e) {
    if (e->kind == ENTRY_BATCHES_TRACKED)
        return safetensors_writer_add(w, e->name, SAFETENSORS_I64, 0, e->dims, &e->layer->num_batches_tracked);
    const float *values = e->kind == ENTRY_BUFFER  ? e->buffer->value
                          : e->kind == ENTRY_PARAM ? e->param->value
                                                   : e->param->momentum;
    float *storage = safetensors_writer_add_storage(w, e->name, SAFETENSORS_F32, e->ndim, e->dims);
    if (!storage) return PLAIT_ERROR;
    if (e->param)
        plait_param_to_torch(e->param, values, storage); /* OHWI -> OIHW for conv weights */
    else
        memcpy(storage, values, e->buffer->count * sizeof(float));
    return PLAIT_OK;
}

static int add_metadata(safetensors_writer *w, const plait_model *m, int first, int last,
                        const plait_train_state *state) {
    char text[128];
    const char *training = state && state->training ? state->training : "{}";
    json_error_t error;
    json_t *parsed = json_loads(training, JSON_DECODE_ANY, &error);
    if (!parsed) return plait_fail("training state is not valid JSON (%s)", error.text);
    json_decref(parsed);
    int status = safetensors_writer_set_metadata(w, "format", FORMAT_NAME);
    snprintf(text, sizeof text, "%d", PLAIT_CHECKPOINT_FORMAT_VERSION);
    status |= safetensors_writer_set_metadata(w, "format_version", text);
    status |= safetensors_writer_set_metadata(w, "model", m->name);
    snprintf(text, sizeof text, "%d", m->classes);
    status |= safetensors_writer_set_metadata(w, "classes", text);
    snprintf(text, sizeof text, "[%d,%d,%d]", m->input.h, m->input.w, m->input.c);
    status |= safetensors_writer_set_metadata(w, "input_hwc", text);
    snprintf(text, sizeof text, "[%d,%d]", first, last);
    status |= safetensors_writer_set_metadata(w, "units", text);
    snprintf(text, sizeof text, "%d", m->unit_count);
    status |= safetensors_writer_set_metadata(w, "unit_count", text);
    snprintf(text, sizeof text, "%" PRId64, state ? state->epoch : 0);
    status |= safetensors_writer_set_metadata(w, "epoch", text);
    snprintf(text, sizeof text, "%" PRId64, state ? state->step : 0);
    status |= safetensors_writer_set_metadata(w, "step", text);
    status |= safetensors_writer_set_metadata(w, "training_state", training);
    return status == PLAIT_OK ? PLAIT_OK : PLAIT_ERROR;
}

int plait_checkpoint_save(const char *path, const plait_model *m, int first, int last,
                          const plait_train_state *state) {
    entry_list list = {0};
    safetensors_writer *w = NULL;
    int status = check_range(m, first, last);
    if (status == PLAIT_OK) status = (w = safetensors_writer_create()) ? list_entries(m, first, last, &list) : PLAIT_ERROR;
    for (int i = 0; i < list.count && status == PLAIT_OK; i++)
        if (list.items[i].kind != ENTRY_MOMENTUM || list.items[i].param->momentum) status = add_entry(w, &list.items[i]);
    if (status == PLAIT_OK) status = add_metadata(w, m, first, last, state);
    if (status == PLAIT_OK) status = safetensors_writer_write(w, path);
    if (status != PLAIT_OK && strstr(plait_last_error(), path) == NULL) {
        char reason[400];
        snprintf(reason, sizeof reason, "%s", plait_last_error());
        plait_fail("cannot save checkpoint %s: %s", path, reason);
    }
    safetensors_writer_free(w);
    free(list.items);
    return status;
}

/* ---- loading -------------------------------------------------------------------------------- */

typedef struct load_context {
    const char *const *paths;
    int path_count;
    safetensors_file **files;
    plait_model *m;
    int first, last;
    plait_checkpoint_mode mode;
    entry_list list;
    entry **by_name;
} load_context;

static int metadata_integer(const safetensors_file *f, const char *key, int64_t *value) {
    const char *text = safetensors_metadata(f, key);
    if (!text) return plait_fail("checkpoint %s has no %s in its metadata", f->path, key);
    char *end;
    errno = 0;
    long long parsed = strtoll(text, &end, 10);
    if (errno || end == text || *end)
        return plait_fail("checkpoint %s: metadata %s \"%s\" is not an integer", f->path, key, text);
    *value = parsed;
    return PLAIT_OK;
}

/* Format and model checks; in resume mode also reads the training position into `state`. */
static int check_part_metadata(const load_context *c, const safetensors_file *f, plait_train_state *state) {
    const char *format = safetensors_metadata(f, "format");
    if (!format) {
        if (c->mode == PLAIT_CHECKPOINT_RESUME)
            return plait_fail("checkpoint %s has no plait metadata: it can initialize weights but not resume training",
                              f->path);
        return PLAIT_OK; /* a plain state dict, e.g. exported from torchvision */
    }
    if (strcmp(format, FORMAT_NAME) != 0)
        return plait_fail("checkpoint %s has format \"%s\", not \"%s\"", f->path, format, FORMAT_NAME);
    int64_t version;
    if (metadata_integer(f, "format_version", &version) != PLAIT_OK) return PLAIT_ERROR;
    if (version < 1 || version > PLAIT_CHECKPOINT_FORMAT_VERSION)
        return plait_fail("checkpoint %s has format version %lld; this plait reads version %d", f->path,
                          (long long)version, PLAIT_CHECKPOINT_FORMAT_VERSION);
    const char *model = safetensors_metadata(f, "model");
    if (!model) return plait_fail("checkpoint %s has no model in its metadata", f->path);
    if (strcmp(model, c->m->name) != 0)
        return plait_fail("checkpoint %s is for model %s, not %s", f->path, model, c->m->name);
    if (c->mode != PLAIT_CHECKPOINT_RESUME) return PLAIT_OK;
    if (metadata_integer(f, "epoch", &state->epoch) != PLAIT_OK) return PLAIT_ERROR;
    if (metadata_integer(f, "step", &state->step) != PLAIT_OK) return PLAIT_ERROR;
    const char *training = safetensors_metadata(f, "training_state");
    if (!training) return plait_fail("checkpoint %s has no training_state in its metadata", f->path);
    json_error_t error;
    json_t *parsed = json_loads(training, JSON_DECODE_ANY, &error);
    if (!parsed) return plait_fail("checkpoint %s: training_state is not valid JSON (%s)", f->path, error.text);
    json_decref(parsed);
    state->training = strdup(training);
    if (!state->training) return plait_fail("out of memory reading %s", f->path);
    return PLAIT_OK;
}

static int compare_names(const void *a, const void *b) {
    return strcmp((*(entry *const *)a)->name, (*(entry *const *)b)->name);
}

static entry *lookup(const load_context *c, const char *name) {
    entry key, *key_pointer = &key;
    snprintf(key.name, sizeof key.name, "%s", name);
    if (strlen(name) >= sizeof key.name) return NULL;
    entry **found = bsearch(&key_pointer, c->by_name, (size_t)c->list.count, sizeof *c->by_name, compare_names);
    return found ? *found : NULL;
}

static bool wanted(const load_context *c, const entry *e) {
    if (e->unit < c->first || e->unit >= c->last) return false;
    if (e->kind == ENTRY_MOMENTUM) return c->mode == PLAIT_CHECKPOINT_RESUME && e->param->momentum;
    return true;
}

/* Points every wanted entry at its tensor in one of the parts. */
static int match_tensors(load_context *c) {
    for (int i = 0; i < c->path_count; i++) {
        const safetensors_file *f = c->files[i];
        for (int t = 0; t < f->tensor_count; t++) {
            const char *name = f->tensors[t].name;
            if (c->mode == PLAIT_CHECKPOINT_WEIGHTS && strncmp(name, "optimizer.", 10) == 0) continue;
            entry *e = lookup(c, name);
            if (!e) return plait_fail("checkpoint %s: tensor %s is not in model %s", f->path, name, c->m->name);
            if (!wanted(c, e)) continue;
            if (e->found)
                return plait_fail("checkpoint %s: tensor %s is also in part %s", f->path, name,
                                  c->files[e->found_in]->path);
            e->found = &f->tensors[t];
            e->found_in = i;
        }
    }
    return PLAIT_OK;
}

static int check_tensor(const load_context *c, const entry *e) {
    if (!e->found) {
        if (c->path_count == 1) return plait_fail("checkpoint %s has no tensor %s", c->paths[0], e->name);
        return plait_fail("none of the %d checkpoint parts (%s, ...) has tensor %s", c->path_count, c->paths[0],
                          e->name);
    }
    const char *path = c->files[e->found_in]->path;
    safetensors_dtype dtype = e->kind == ENTRY_BATCHES_TRACKED ? SAFETENSORS_I64 : SAFETENSORS_F32;
    if (e->found->dtype != dtype)
        return plait_fail("checkpoint %s: tensor %s has dtype %s, expected %s", path, e->name,
                          safetensors_dtype_name(e->found->dtype), safetensors_dtype_name(dtype));
    bool same = e->found->ndim == e->ndim;
    for (int d = 0; same && d < e->ndim; d++) same = e->found->shape[d] == e->dims[d];
    if (!same) {
        char found[128], expected[128];
        return plait_fail("checkpoint %s: tensor %s has shape %s, model %s expects %s", path, e->name,
                          safetensors_shape_text(e->found->ndim, e->found->shape, found, sizeof found), c->m->name,
                          safetensors_shape_text(e->ndim, e->dims, expected, sizeof expected));
    }
    return PLAIT_OK;
}

static int copy_tensor(const entry *e) {
    const safetensors_tensor *t = e->found;
    if (e->kind == ENTRY_BATCHES_TRACKED) {
        memcpy(&e->layer->num_batches_tracked, t->data, sizeof(int64_t));
        return PLAIT_OK;
    }
    float *target = e->kind == ENTRY_BUFFER ? e->buffer->value : e->kind == ENTRY_PARAM ? e->param->value
                                                                                          : e->param->momentum;
    if (!(e->param && e->param->conv_weight)) {
        memcpy(target, t->data, t->bytes);
        return PLAIT_OK;
    }
    float *oihw = malloc(t->bytes ? t->bytes : 1);
    if (!oihw) return plait_fail("out of memory loading %s", e->name);
    memcpy(oihw, t->data, t->bytes); /* the file's data need not be float-aligned */
    plait_param_from_torch(e->param, oihw, target);
    free(oihw);
    return PLAIT_OK;
}

static int load_parts(load_context *c, plait_train_state *state) {
    plait_train_state first_state = {0};
    int status = PLAIT_OK;
    for (int i = 0; i < c->path_count && status == PLAIT_OK; i++) {
        if ((status = safetensors_read(c->paths[i], &c->files[i])) != PLAIT_OK) break;
        plait_train_state part = {0};
        status = check_part_metadata(c, c->files[i], &part);
        if (status == PLAIT_OK && c->mode == PLAIT_CHECKPOINT_RESUME && i > 0 &&
            (part.epoch != first_state.epoch || part.step != first_state.step ||
             strcmp(part.training, first_state.training) != 0))
            status = plait_fail("checkpoint parts %s and %s are from different points of training (step %lld, %lld)",
                                c->paths[0], c->paths[i], (long long)first_state.step, (long long)part.step);
        if (i == 0)
            first_state = part;
        else
            plait_train_state_clear(&part);
    }
    if (status == PLAIT_OK) status = list_entries(c->m, 0, c->m->unit_count, &c->list);
    if (status == PLAIT_OK && !(c->by_name = malloc(((size_t)c->list.count + 1) * sizeof *c->by_name)))
        status = plait_fail("out of memory loading a checkpoint");
    if (status == PLAIT_OK) {
        for (int i = 0; i < c->list.count; i++) c->by_name[i] = &c->list.items[i];
        qsort(c->by_name, (size_t)c->list.count, sizeof *c->by_name, compare_names);
        status = match_tensors(c);
    }
    for (int i = 0; i < c->list.count && status == PLAIT_OK; i++) {
        const entry *e = &c->list.items[i];
        if (!wanted(c, e) || (!e->found && e->kind == ENTRY_BATCHES_TRACKED && c->mode == PLAIT_CHECKPOINT_WEIGHTS))
            continue;
        status = check_tensor(c, e);
    }
    /* Everything is checked before the first value changes, so a failed load leaves the model as it was. */
    for (int i = 0; i < c->list.count && status == PLAIT_OK; i++)
        if (wanted(c, &c->list.items[i]) && c->list.items[i].found) status = copy_tensor(&c->list.items[i]);
    if (status == PLAIT_OK && state && c->mode == PLAIT_CHECKPOINT_RESUME) {
        plait_train_state_clear(state);
        *state = first_state;
    } else {
        plait_train_state_clear(&first_state);
    }
    return status;
}

int plait_checkpoint_load(const char *const *paths, int path_count, plait_model *m, int first, int last,
                          plait_checkpoint_mode mode, plait_train_state *state) {
    if (path_count < 1) return plait_fail("no checkpoint files to load model %s from", m->name);
    if (check_range(m, first, last) != PLAIT_OK) {
        char reason[400];
        snprintf(reason, sizeof reason, "%s", plait_last_error());
        return plait_fail("cannot load checkpoint %s: %s", paths[0], reason);
    }
    load_context c = {.paths = paths, .path_count = path_count, .m = m, .first = first, .last = last, .mode = mode};
    c.files = calloc((size_t)path_count, sizeof *c.files);
    if (!c.files) return plait_fail("out of memory loading a checkpoint");
    int status = load_parts(&c, state);
    for (int i = 0; i < path_count; i++) safetensors_free(c.files[i]);
    free(c.files);
    free(c.list.items);
    free(c.by_name);
    return status;
}
