#include "plan/json_fields.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plait/core.h"

json_place json_place_child(const json_place *parent, const char *key, int index) {
    json_place child = {.file = parent->file};
    const char *dot = parent->path[0] ? "." : "";
    int written = index >= 0 ? snprintf(child.path, sizeof child.path, "%s%s%s[%d]", parent->path, dot, key, index)
                             : snprintf(child.path, sizeof child.path, "%s%s%s", parent->path, dot, key);
    if (written < 0 || (size_t)written >= sizeof child.path) strcpy(child.path + sizeof child.path - 4, "...");
    return child;
}

int json_fail_field(const json_place *place, const char *key, const char *problem) {
    return plait_fail("%s: %s%s%s: %s", place->file, place->path, place->path[0] ? "." : "", key, problem);
}

json_t *json_load_object(const char *path) {
    json_error_t error;
    json_t *root = json_load_file(path, 0, &error);
    if (!root) {
        if (error.line < 0)
            plait_fail("%s: %s", path, error.text);
        else
            plait_fail("%s:%d: %s", path, error.line, error.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        plait_fail("%s: the top level must be a JSON object", path);
        return NULL;
    }
    return root;
}

int json_get_number(const json_place *place, json_t *object, const char *key, bool required, double fallback,
                    double *out) {
    json_t *value = json_object_get(object, key);
    if (!value) {
        if (required) return json_fail_field(place, key, "missing");
        *out = fallback;
        return PLAIT_OK;
    }
    if (!json_is_number(value)) return json_fail_field(place, key, "must be a number");
    double x = json_number_value(value);
    if (!isfinite(x)) return json_fail_field(place, key, "must be finite");
    if (x < 0) return json_fail_field(place, key, "must not be negative");
    *out = x;
    return PLAIT_OK;
}

int json_get_int(const json_place *place, json_t *object, const char *key, bool required, int fallback,
                 int minimum, int *out) {
    json_t *value = json_object_get(object, key);
    if (!value) {
        if (required) return json_fail_field(place, key, "missing");
        *out = fallback;
        return PLAIT_OK;
    }
    if (!json_is_integer(value)) return json_fail_field(place, key, "must be a whole number");
    json_int_t x = json_integer_value(value);
    if (x < 0 && minimum >= 0) return json_fail_field(place, key, "must not be negative");
    if (x < minimum || x > 1000000000) {
        char problem[64];
        snprintf(problem, sizeof problem, "must be at least %d", minimum);
        return json_fail_field(place, key, x < minimum ? problem : "is too large");
    }
    *out = (int)x;
    return PLAIT_OK;
}

int json_get_string(const json_place *place, json_t *object, const char *key, char *out, size_t size) {
    json_t *value = json_object_get(object, key);
    if (!value) return json_fail_field(place, key, "missing");
    if (!json_is_string(value)) return json_fail_field(place, key, "must be a string");
    if (json_string_length(value) >= size) return json_fail_field(place, key, "is too long");
    memcpy(out, json_string_value(value), json_string_length(value) + 1);
    return PLAIT_OK;
}

static json_t *get_typed(const json_place *place, json_t *object, const char *key, bool required, bool *present,
                         json_type type, const char *problem) {
    json_t *value = json_object_get(object, key);
    if (present) *present = value != NULL;
    if (!value) {
        if (required) json_fail_field(place, key, "missing");
        return NULL;
    }
    if (json_typeof(value) != type) {
        if (present) *present = true;
        json_fail_field(place, key, problem);
        return NULL;
    }
    return value;
}

json_t *json_get_array(const json_place *place, json_t *object, const char *key, bool required, bool *present) {
    return get_typed(place, object, key, required, present, JSON_ARRAY, "must be an array");
}

json_t *json_get_object(const json_place *place, json_t *object, const char *key, bool required,
                        bool *present) {
    return get_typed(place, object, key, required, present, JSON_OBJECT, "must be an object");
}

int json_write_file(const char *path, json_t *root) {
    if (!root) return plait_fail("%s: out of memory building JSON", path);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!text) return plait_fail("%s: out of memory writing JSON", path);
    size_t length = strlen(text);
    text[length] = '\n'; /* replaces the terminator; the write uses the length */
    int status = plait_write_file_atomic(path, text, length + 1);
    free(text);
    return status;
}
