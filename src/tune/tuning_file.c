/* The tuning file: JSON entries {cpu, threads, direction, shape, schedule, seconds}; a lookup matches
 * the shape, direction, this CPU's model string and plait_threads(). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/direct/direct.h"

typedef struct tuning_entry {
    char cpu[64];
    int threads;
    plait_conv_direction direction;
    plait_conv2d_desc desc;
    plait_conv_schedule schedule;
    double seconds;
} tuning_entry;

struct plait_tuning {
    tuning_entry *entries;
    int count, capacity;
};

plait_tuning *plait_tuning_new(void) { return calloc(1, sizeof(plait_tuning)); }

void plait_tuning_free(plait_tuning *t) {
    if (!t) return;
    free(t->entries);
    free(t);
}

static bool same_desc(const plait_conv2d_desc *a, const plait_conv2d_desc *b) {
    return a->batch == b->batch && a->in_h == b->in_h && a->in_w == b->in_w && a->in_channels == b->in_channels &&
           a->out_channels == b->out_channels && a->kernel_h == b->kernel_h && a->kernel_w == b->kernel_w &&
           a->stride_h == b->stride_h && a->stride_w == b->stride_w && a->pad_h == b->pad_h &&
           a->pad_w == b->pad_w && a->groups == b->groups;
}

static tuning_entry *find(const plait_tuning *t, const char *cpu, int threads, const plait_conv2d_desc *d,
                          plait_conv_direction direction) {
    for (int i = 0; i < t->count; i++) {
        tuning_entry *e = &t->entries[i];
        if (e->threads == threads && e->direction == direction && strcmp(e->cpu, cpu) == 0 && same_desc(&e->desc, d))
            return e;
    }
    return NULL;
}

static void put_for(plait_tuning *t, const char *cpu, int threads, const plait_conv2d_desc *d,
                    plait_conv_direction direction, const plait_conv_schedule *s, double seconds) {
    tuning_entry *e = find(t, cpu, threads, d, direction);
    if (!e) {
        if (t->count == t->capacity) {
            int capacity = t->capacity ? 2 * t->capacity : 16;
            tuning_entry *grown = realloc(t->entries, (size_t)capacity * sizeof *grown);
            if (!grown) return;
            t->entries = grown;
            t->capacity = capacity;
        }
        e = &t->entries[t->count++];
    }
    memset(e, 0, sizeof *e);
    snprintf(e->cpu, sizeof e->cpu, "%s", cpu);
    e->threads = threads;
    e->direction = direction;
    e->desc = *d;
    e->schedule = *s;
    e->seconds = seconds;
}

void plait_tuning_put(plait_tuning *t, const plait_conv2d_desc *d, plait_conv_direction direction,
                      const plait_conv_schedule *s, double seconds) {
    put_for(t, plait_cpu_features()->model, plait_threads(), d, direction, s, seconds);
}

bool plait_tuning_get(const plait_tuning *t, const plait_conv2d_desc *d, plait_conv_direction direction,
                      plait_conv_schedule *s) {
    if (!t) return false;
    tuning_entry *e = find(t, plait_cpu_features()->model, plait_threads(), d, direction);
    if (!e || !plait_conv_schedule_valid(d, direction, &e->schedule)) return false;
    *s = e->schedule;
    return true;
}

/* Field tables so reading and writing cannot drift apart. */
#define DESC_FIELDS(X)                                                                                      \
    X(batch) X(in_h) X(in_w) X(in_channels) X(out_channels) X(kernel_h) X(kernel_w) X(stride_h) X(stride_w) \
    X(pad_h) X(pad_w) X(groups)
#define SCHEDULE_FIELDS(X) \
    X(split_k) X(block_k) X(block_c) X(block_h) X(block_w) X(tile_w) X(tile_k) X(vthreads) X(loop_order) X(unroll) X(pad_copy) X(winograd) X(vthread_images) X(im2col)

int plait_tuning_save(const plait_tuning *t, const char *path) {
    json_t *list = json_array();
    for (int i = 0; i < t->count; i++) {
        const tuning_entry *e = &t->entries[i];
        json_t *shape = json_object(), *schedule = json_object();
#define PUT_DESC(f) json_object_set_new(shape, #f, json_integer(e->desc.f));
#define PUT_SCHEDULE(f) json_object_set_new(schedule, #f, json_integer(e->schedule.f));
        DESC_FIELDS(PUT_DESC)
        SCHEDULE_FIELDS(PUT_SCHEDULE)
        json_array_append_new(list, json_pack("{s:s, s:i, s:s, s:o, s:o, s:f}", "cpu", e->cpu, "threads", e->threads,
                                              "direction", plait_conv_direction_name(e->direction), "shape", shape,
                                              "schedule", schedule, "seconds", e->seconds));
    }
    json_t *root = json_pack("{s:i, s:o}", "version", 1, "entries", list);
    char *text = json_dumps(root, JSON_INDENT(1));
    json_decref(root);
    if (!text) return plait_fail("cannot encode tuning file %s", path);
    int status = plait_write_file_atomic(path, text, strlen(text));
    free(text);
    return status;
}

static int get_int(json_t *object, const char *key, int *value, const char *path) {
    json_t *v = json_object_get(object, key);
    if (!json_is_integer(v)) return plait_fail("tuning file %s: entry without integer \"%s\"", path, key);
    *value = (int)json_integer_value(v);
    return PLAIT_OK;
}

int plait_tuning_load(plait_tuning *t, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return PLAIT_OK; /* no file yet: nothing tuned */
    fclose(f);
    json_error_t error;
    json_t *root = json_load_file(path, 0, &error);
    if (!root) return plait_fail("tuning file %s: line %d: %s", path, error.line, error.text);
    json_t *list = json_object_get(root, "entries");
    if (!json_is_array(list)) {
        json_decref(root);
        return plait_fail("tuning file %s: no \"entries\" array", path);
    }
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item) {
        tuning_entry e = {0};
        json_t *shape = json_object_get(item, "shape"), *schedule = json_object_get(item, "schedule");
        const char *cpu = json_string_value(json_object_get(item, "cpu"));
        const char *direction = json_string_value(json_object_get(item, "direction"));
        int ok = cpu && direction && json_is_object(shape) && json_is_object(schedule) &&
                 get_int(item, "threads", &e.threads, path) == PLAIT_OK;
#define GET_DESC(f) ok = ok && get_int(shape, #f, &e.desc.f, path) == PLAIT_OK;
/* im2col came later: files written before it hold direct schedules only */
#define GET_SCHEDULE(f) \
    ok = ok && ((strcmp(#f, "im2col") == 0 && !json_object_get(schedule, #f)) || get_int(schedule, #f, &e.schedule.f, path) == PLAIT_OK);
        DESC_FIELDS(GET_DESC)
        SCHEDULE_FIELDS(GET_SCHEDULE)
        int dir = -1;
        for (int k = 0; ok && k < PLAIT_CONV_DIRECTIONS; k++)
            if (strcmp(direction, plait_conv_direction_name((plait_conv_direction)k)) == 0) dir = k;
        if (!ok || dir < 0) {
            json_decref(root);
            return plait_fail("tuning file %s: malformed entry %zu", path, i);
        }
        put_for(t, cpu, e.threads, &e.desc, (plait_conv_direction)dir, &e.schedule,
                json_number_value(json_object_get(item, "seconds")));
    }
    json_decref(root);
    return PLAIT_OK;
}

void plait_tuning_default_path(char *path, size_t size) {
    const char *explicit_path = getenv("PLAIT_TUNING_FILE");
    const char *cache = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (explicit_path && *explicit_path)
        snprintf(path, size, "%s", explicit_path);
    else if (cache && *cache)
        snprintf(path, size, "%s/plait/tuning.json", cache);
    else
        snprintf(path, size, "%s/.cache/plait/tuning.json", home && *home ? home : ".");
}
