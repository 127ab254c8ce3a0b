/* Reading JSON fields with errors that name the file and the field ("file: units[2].name: ..."). */
#ifndef PLAIT_PLAN_JSON_FIELDS_H
#define PLAIT_PLAN_JSON_FIELDS_H

#include <jansson.h>
#include <stdbool.h>

typedef struct json_place {
    const char *file;
    char path[96]; /* field path of the enclosing object, "" at the top */
} json_place;

json_place json_place_child(const json_place *parent, const char *key, int index);
/* Loads `path` and requires an object at the top. */
json_t *json_load_object(const char *path);
int json_get_number(const json_place *place, json_t *object, const char *key, bool required, double fallback,
                    double *out);
/* A whole number >= minimum. */
int json_get_int(const json_place *place, json_t *object, const char *key, bool required, int fallback,
                 int minimum, int *out);
int json_get_string(const json_place *place, json_t *object, const char *key, char *out, size_t size);
/* Array or object member of the given type, NULL (and an error) when missing or of another type;
 * absent and optional gives NULL without error, *present false. */
json_t *json_get_array(const json_place *place, json_t *object, const char *key, bool required, bool *present);
json_t *json_get_object(const json_place *place, json_t *object, const char *key, bool required,
                        bool *present);
int json_fail_field(const json_place *place, const char *key, const char *problem);
/* Dumps with indentation and writes atomically. Takes ownership of root. */
int json_write_file(const char *path, json_t *root);

#endif
