/* Profiles (per-unit costs) and hardware models: JSON files and lifetimes. */
#include <stdlib.h>
#include <string.h>

#include "plait/core.h"
#include "plait/plan.h"
#include "plan/json_fields.h"

int plait_profile_init(plait_profile *profile, int unit_count) {
    memset(profile, 0, sizeof *profile);
    if (unit_count < 1) return plait_fail("a profile needs at least one unit, got %d", unit_count);
    profile->units = calloc((size_t)unit_count, sizeof *profile->units);
    if (!profile->units) return plait_fail("out of memory for a profile of %d units", unit_count);
    profile->unit_count = unit_count;
    return PLAIT_OK;
}

void plait_profile_free(plait_profile *profile) {
    free(profile->units);
    memset(profile, 0, sizeof *profile);
}

static int read_unit(const json_place *units_place, json_t *array, int index, double batch_size,
                     plait_unit_cost *unit) {
    json_place place = json_place_child(units_place, "units", index);
    json_t *object = json_array_get(array, (size_t)index);
    if (!json_is_object(object)) return plait_fail("%s: %s: must be an object", place.file, place.path);
    if (json_get_string(&place, object, "name", unit->name, sizeof unit->name)) return PLAIT_ERROR;
    if (json_get_number(&place, object, "forward_seconds", true, 0, &unit->forward_seconds) ||
        json_get_number(&place, object, "backward_seconds", true, 0, &unit->backward_seconds) ||
        json_get_number(&place, object, "output_bytes", true, 0, &unit->output_bytes) ||
        json_get_number(&place, object, "parameter_bytes", true, 0, &unit->parameter_bytes) ||
        json_get_number(&place, object, "memory_bytes", true, 0, &unit->memory_bytes))
        return PLAIT_ERROR;
    unit->forward_seconds /= batch_size;
    unit->backward_seconds /= batch_size;
    return PLAIT_OK;
}

int plait_profile_read(const char *path, plait_profile *profile) {
    memset(profile, 0, sizeof *profile);
    json_t *root = json_load_object(path);
    if (!root) return PLAIT_ERROR;
    json_place top = {.file = path};
    int batch_size = 1;
    json_t *units = NULL;
    if (json_get_int(&top, root, "batch_size", false, 1, 1, &batch_size)) goto fail;
    units = json_get_array(&top, root, "units", true, NULL);
    if (!units) goto fail;
    if (json_array_size(units) == 0) {
        json_fail_field(&top, "units", "must list at least one unit");
        goto fail;
    }
    if (plait_profile_init(profile, (int)json_array_size(units))) goto fail;
    for (int i = 0; i < profile->unit_count; i++)
        if (read_unit(&top, units, i, batch_size, &profile->units[i])) goto fail;
    json_decref(root);
    return PLAIT_OK;
fail:
    json_decref(root);
    plait_profile_free(profile);
    return PLAIT_ERROR;
}

int plait_profile_write(const char *path, const plait_profile *profile) {
    json_t *root = json_object();
    json_t *units = json_array();
    json_object_set_new(root, "batch_size", json_integer(1));
    for (int i = 0; i < profile->unit_count; i++) {
        const plait_unit_cost *u = &profile->units[i];
        json_array_append_new(units, json_pack("{s:s, s:f, s:f, s:f, s:f, s:f}", "name", u->name,
                                               "forward_seconds", u->forward_seconds, "backward_seconds",
                                               u->backward_seconds, "output_bytes", u->output_bytes,
                                               "parameter_bytes", u->parameter_bytes, "memory_bytes",
                                               u->memory_bytes));
    }
    json_object_set_new(root, "units", units);
    return json_write_file(path, root);
}

int plait_hardware_init(plait_hardware *hardware, int worker_count, double speed, double memory_bytes,
                        plait_link p2p, plait_link allreduce) {
    memset(hardware, 0, sizeof *hardware);
    if (worker_count < 1) return plait_fail("hardware needs at least one worker, got %d", worker_count);
    hardware->speed = malloc((size_t)worker_count * sizeof(double));
    hardware->memory_bytes = malloc((size_t)worker_count * sizeof(double));
    if (!hardware->speed || !hardware->memory_bytes) {
        plait_hardware_free(hardware);
        return plait_fail("out of memory for %d workers", worker_count);
    }
    hardware->worker_count = worker_count;
    for (int i = 0; i < worker_count; i++) {
        hardware->speed[i] = speed;
        hardware->memory_bytes[i] = memory_bytes;
    }
    hardware->p2p = p2p;
    hardware->allreduce = allreduce;
    return PLAIT_OK;
}

void plait_hardware_free(plait_hardware *hardware) {
    free(hardware->speed);
    free(hardware->memory_bytes);
    memset(hardware, 0, sizeof *hardware);
}

static int read_link(const json_place *top, json_t *root, const char *key, plait_link *link) {
    json_t *object = json_get_object(top, root, key, true, NULL);
    if (!object) return PLAIT_ERROR;
    json_place place = json_place_child(top, key, -1);
    if (json_get_number(&place, object, "bandwidth", true, 0, &link->bandwidth) ||
        json_get_number(&place, object, "latency", true, 0, &link->latency))
        return PLAIT_ERROR;
    if (link->bandwidth <= 0) return json_fail_field(&place, "bandwidth", "must be positive");
    return PLAIT_OK;
}

int plait_hardware_read(const char *path, plait_hardware *hardware) {
    memset(hardware, 0, sizeof *hardware);
    json_t *root = json_load_object(path);
    if (!root) return PLAIT_ERROR;
    json_place top = {.file = path};
    int worker_count = 0;
    double speed = 1, memory = 0;
    bool has_workers = false;
    plait_link p2p, allreduce;
    if (json_get_int(&top, root, "worker_count", true, 0, 1, &worker_count)) goto fail;
    json_t *workers = json_get_array(&top, root, "workers", false, &has_workers);
    if (has_workers && !workers) goto fail;
    if (json_get_number(&top, root, "speed", false, 1.0, &speed) ||
        json_get_number(&top, root, "memory_bytes", !has_workers, 0, &memory))
        goto fail;
    if (speed <= 0) {
        json_fail_field(&top, "speed", "must be positive");
        goto fail;
    }
    if (read_link(&top, root, "p2p", &p2p) || read_link(&top, root, "allreduce", &allreduce)) goto fail;
    if (has_workers && json_array_size(workers) != (size_t)worker_count) {
        char problem[96];
        snprintf(problem, sizeof problem, "has %zu entries but worker_count is %d", json_array_size(workers),
                 worker_count);
        json_fail_field(&top, "workers", problem);
        goto fail;
    }
    if (plait_hardware_init(hardware, worker_count, speed, memory, p2p, allreduce)) goto fail;
    for (int i = 0; has_workers && i < worker_count; i++) {
        json_place place = json_place_child(&top, "workers", i);
        json_t *worker = json_array_get(workers, (size_t)i);
        if (!json_is_object(worker)) {
            plait_fail("%s: %s: must be an object", path, place.path);
            goto fail;
        }
        if (json_get_number(&place, worker, "speed", false, speed, &hardware->speed[i]) ||
            json_get_number(&place, worker, "memory_bytes", !json_object_get(root, "memory_bytes"), memory,
                            &hardware->memory_bytes[i]))
            goto fail;
        if (hardware->speed[i] <= 0) {
            json_fail_field(&place, "speed", "must be positive");
            goto fail;
        }
    }
    json_decref(root);
    return PLAIT_OK;
fail:
    json_decref(root);
    plait_hardware_free(hardware);
    return PLAIT_ERROR;
}

int plait_hardware_write(const char *path, const plait_hardware *hardware) {
    json_t *root = json_object();
    json_t *workers = json_array();
    json_object_set_new(root, "worker_count", json_integer(hardware->worker_count));
    for (int i = 0; i < hardware->worker_count; i++)
        json_array_append_new(workers, json_pack("{s:f, s:f}", "speed", hardware->speed[i], "memory_bytes",
                                                 hardware->memory_bytes[i]));
    json_object_set_new(root, "workers", workers);
    json_object_set_new(root, "p2p", json_pack("{s:f, s:f}", "bandwidth", hardware->p2p.bandwidth, "latency",
                                               hardware->p2p.latency));
    json_object_set_new(root, "allreduce", json_pack("{s:f, s:f}", "bandwidth", hardware->allreduce.bandwidth,
                                                     "latency", hardware->allreduce.latency));
    return json_write_file(path, root);
}
