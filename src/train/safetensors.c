#include "train/safetensors.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plait/core.h"

/* The format's own cap, which also keeps a corrupt length from driving a huge allocation. */
#define HEADER_LIMIT (100u * 1000u * 1000u)

static const struct {
    const char *name;
    size_t size;
} dtype_table[SAFETENSORS_DTYPE_COUNT] = {
    [SAFETENSORS_BOOL] = {"BOOL", 1}, [SAFETENSORS_U8] = {"U8", 1},     [SAFETENSORS_I8] = {"I8", 1},
    [SAFETENSORS_I16] = {"I16", 2},   [SAFETENSORS_U16] = {"U16", 2},   [SAFETENSORS_F16] = {"F16", 2},
    [SAFETENSORS_BF16] = {"BF16", 2}, [SAFETENSORS_I32] = {"I32", 4},   [SAFETENSORS_U32] = {"U32", 4},
    [SAFETENSORS_F32] = {"F32", 4},   [SAFETENSORS_F64] = {"F64", 8},   [SAFETENSORS_I64] = {"I64", 8},
    [SAFETENSORS_U64] = {"U64", 8},
};

const char *safetensors_dtype_name(safetensors_dtype dtype) {
    return (unsigned)dtype < SAFETENSORS_DTYPE_COUNT ? dtype_table[dtype].name : "?";
}

size_t safetensors_dtype_size(safetensors_dtype dtype) {
    return (unsigned)dtype < SAFETENSORS_DTYPE_COUNT ? dtype_table[dtype].size : 0;
}

static int dtype_from_name(const char *name, safetensors_dtype *dtype) {
    for (int i = 0; i < SAFETENSORS_DTYPE_COUNT; i++)
        if (strcmp(dtype_table[i].name, name) == 0) {
            *dtype = (safetensors_dtype)i;
            return PLAIT_OK;
        }
    return PLAIT_ERROR;
}

const char *safetensors_shape_text(int ndim, const int64_t *shape, char *buffer, size_t size) {
    size_t used = (size_t)snprintf(buffer, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buffer + used, size - used, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (used < size) snprintf(buffer + used, size - used, "]");
    return buffer;
}

/* Element count times element size, or SIZE_MAX when it overflows. */
static size_t tensor_bytes(safetensors_dtype dtype, int ndim, const int64_t *shape) {
    size_t bytes = safetensors_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return SIZE_MAX;
        if (shape[i] != 0 && bytes > SIZE_MAX / (uint64_t)shape[i]) return SIZE_MAX;
        bytes *= (size_t)shape[i];
    }
    return bytes;
}

/* ---- reading ------------------------------------------------------------------------------ */

void safetensors_free(safetensors_file *f) {
    if (!f) return;
    for (int i = 0; i < f->tensor_count; i++) free(f->tensors[i].name);
    for (int i = 0; i < f->metadata_count; i++) {
        free(f->metadata_keys[i]);
        free(f->metadata_values[i]);
    }
    free(f->metadata_keys);
    free(f->metadata_values);
    free(f->tensors);
    free(f->bytes);
    free(f->path);
    free(f);
}

const safetensors_tensor *safetensors_find(const safetensors_file *f, const char *name) {
    for (int i = 0; i < f->tensor_count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *safetensors_metadata(const safetensors_file *f, const char *key) {
    for (int i = 0; i < f->metadata_count; i++)
        if (strcmp(f->metadata_keys[i], key) == 0) return f->metadata_values[i];
    return NULL;
}

static int read_metadata(safetensors_file *f, json_t *object) {
    if (!json_is_object(object)) return plait_fail("safetensors file %s: __metadata__ is not a JSON object", f->path);
    size_t count = json_object_size(object);
    f->metadata_keys = calloc(count + 1, sizeof(char *));
    f->metadata_values = calloc(count + 1, sizeof(char *));
    if (!f->metadata_keys || !f->metadata_values) return plait_fail("out of memory reading %s", f->path);
    const char *key;
    json_t *value;
    json_object_foreach(object, key, value) {
        if (!json_is_string(value))
            return plait_fail("safetensors file %s: __metadata__ value of \"%s\" is not a string", f->path, key);
        f->metadata_keys[f->metadata_count] = strdup(key);
        f->metadata_values[f->metadata_count] = strdup(json_string_value(value));
        f->metadata_count++;
        if (!f->metadata_keys[f->metadata_count - 1] || !f->metadata_values[f->metadata_count - 1])
            return plait_fail("out of memory reading %s", f->path);
    }
    return PLAIT_OK;
}

/* A JSON integer in [0, 2^63), as the format's shapes and offsets are. */
static bool json_to_size(json_t *value, int64_t *out) {
    if (!json_is_integer(value) || json_integer_value(value) < 0) return false;
    *out = (int64_t)json_integer_value(value);
    return true;
}

static int read_tensor_entry(safetensors_file *f, const char *name, json_t *entry, size_t data_size,
                             safetensors_tensor *t) {
    const char *path = f->path;
    if (!json_is_object(entry)) return plait_fail("safetensors file %s: entry %s is not a JSON object", path, name);
    json_t *dtype = json_object_get(entry, "dtype");
    json_t *shape = json_object_get(entry, "shape");
    json_t *offsets = json_object_get(entry, "data_offsets");
    if (!dtype) return plait_fail("safetensors file %s: tensor %s has no dtype", path, name);
    if (!shape) return plait_fail("safetensors file %s: tensor %s has no shape", path, name);
    if (!offsets) return plait_fail("safetensors file %s: tensor %s has no data_offsets", path, name);
    if (json_object_size(entry) != 3)
        return plait_fail("safetensors file %s: tensor %s has keys other than dtype, shape and data_offsets", path,
                          name);
    if (!json_is_string(dtype) || dtype_from_name(json_string_value(dtype), &t->dtype) != PLAIT_OK)
        return plait_fail("safetensors file %s: tensor %s has unknown dtype %s", path, name,
                          json_is_string(dtype) ? json_string_value(dtype) : "(not a string)");
    if (!json_is_array(shape) || json_array_size(shape) > SAFETENSORS_MAX_DIMS)
        return plait_fail("safetensors file %s: tensor %s has a shape that is not an array of at most %d sizes",
                          path, name, SAFETENSORS_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    for (int i = 0; i < t->ndim; i++)
        if (!json_to_size(json_array_get(shape, (size_t)i), &t->shape[i]))
            return plait_fail("safetensors file %s: tensor %s has a shape entry that is not a size", path, name);
    int64_t begin, end;
    if (!json_is_array(offsets) || json_array_size(offsets) != 2 || !json_to_size(json_array_get(offsets, 0), &begin) ||
        !json_to_size(json_array_get(offsets, 1), &end))
        return plait_fail("safetensors file %s: tensor %s has data_offsets that are not [begin, end]", path, name);
    if (begin > end)
        return plait_fail("safetensors file %s: tensor %s has data_offsets [%lld,%lld] that end before they begin",
                          path, name, (long long)begin, (long long)end);
    if ((uint64_t)end > data_size)
        return plait_fail("safetensors file %s: tensor %s has data_offsets [%lld,%lld] beyond the %zu-byte data",
                          path, name, (long long)begin, (long long)end, data_size);
    size_t expected = tensor_bytes(t->dtype, t->ndim, t->shape);
    if (expected != (size_t)(end - begin)) {
        char text[160];
        return plait_fail("safetensors file %s: tensor %s has %lld bytes of data but %s shape %s needs %zu", path,
                          name, (long long)(end - begin), safetensors_dtype_name(t->dtype),
                          safetensors_shape_text(t->ndim, t->shape, text, sizeof text), expected);
    }
    t->name = strdup(name);
    if (!t->name) return plait_fail("out of memory reading %s", path);
    t->offset = (size_t)begin;
    t->bytes = (size_t)(end - begin);
    return PLAIT_OK;
}

static int by_offset(const void *a, const void *b) {
    const safetensors_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    return x->bytes < y->bytes ? -1 : x->bytes > y->bytes;
}

/* The tensors must tile the data buffer: no gaps, no overlaps, nothing left over. */
static int check_coverage(const safetensors_file *f, size_t data_size) {
    size_t covered = 0;
    for (int i = 0; i < f->tensor_count; i++) {
        size_t begin = f->tensors[i].offset;
        if (begin < covered)
            return plait_fail("safetensors file %s: tensors %s and %s overlap", f->path, f->tensors[i - 1].name,
                              f->tensors[i].name);
        if (begin > covered)
            return plait_fail("safetensors file %s: data bytes [%zu,%zu) before tensor %s belong to no tensor",
                              f->path, covered, begin, f->tensors[i].name);
        covered = begin + f->tensors[i].bytes;
    }
    if (covered != data_size)
        return plait_fail("safetensors file %s: %zu bytes after the last tensor belong to no tensor", f->path,
                          data_size - covered);
    return PLAIT_OK;
}

static int parse_header(safetensors_file *f) {
    const char *path = f->path;
    if (f->size < 8)
        return plait_fail("safetensors file %s is %zu bytes, too short for the 8-byte header length", path, f->size);
    uint64_t header_length = 0;
    for (int i = 7; i >= 0; i--) header_length = header_length << 8 | f->bytes[i];
    if (header_length > f->size - 8)
        return plait_fail("safetensors file %s: header length %llu runs past the end of the %zu-byte file", path,
                          (unsigned long long)header_length, f->size);
    if (header_length > HEADER_LIMIT)
        return plait_fail("safetensors file %s: header length %llu exceeds the format's 100 MB limit", path,
                          (unsigned long long)header_length);
    if (header_length == 0 || f->bytes[8] != '{')
        return plait_fail("safetensors file %s: header is not a JSON object", path);
    json_error_t error;
    json_t *root = json_loadb((const char *)f->bytes + 8, header_length, JSON_REJECT_DUPLICATES, &error);
    if (!root)
        return plait_fail("safetensors file %s: header is not valid JSON (%s at byte %d)", path, error.text,
                          error.position);
    int status = PLAIT_OK;
    size_t data_size = f->size - 8 - (size_t)header_length;
    if (!json_is_object(root)) {
        status = plait_fail("safetensors file %s: header is not a JSON object", path);
        goto done;
    }
    f->tensors = calloc(json_object_size(root) + 1, sizeof *f->tensors);
    if (!f->tensors) {
        status = plait_fail("out of memory reading %s", path);
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0)
            status = read_metadata(f, value);
        else if ((status = read_tensor_entry(f, key, value, data_size, &f->tensors[f->tensor_count])) == PLAIT_OK)
            f->tensor_count++;
        if (status != PLAIT_OK) goto done;
    }
    qsort(f->tensors, (size_t)f->tensor_count, sizeof *f->tensors, by_offset);
    if ((status = check_coverage(f, data_size)) != PLAIT_OK) goto done;
    const unsigned char *data = f->bytes + 8 + header_length;
    for (int i = 0; i < f->tensor_count; i++)
        f->tensors[i].data = data + f->tensors[i].offset;
done:
    json_decref(root);
    return status;
}

int safetensors_parse(const char *path, unsigned char *bytes, size_t size, safetensors_file **out) {
    *out = NULL;
    safetensors_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        free(bytes);
        return plait_fail("out of memory reading %s", path);
    }
    f->bytes = bytes;
    f->size = size;
    if (parse_header(f) != PLAIT_OK) {
        safetensors_free(f);
        return PLAIT_ERROR;
    }
    *out = f;
    return PLAIT_OK;
}

int safetensors_read(const char *path, safetensors_file **out) {
    *out = NULL;
    FILE *file = fopen(path, "rb");
    if (!file) return plait_fail("cannot open %s: %s", path, strerror(errno));
    unsigned char *bytes = NULL;
    long size = -1;
    if (fseek(file, 0, SEEK_END) == 0) size = ftell(file);
    if (size < 0 || fseek(file, 0, SEEK_SET) != 0) {
        fclose(file);
        return plait_fail("cannot read %s: %s", path, strerror(errno));
    }
    bytes = malloc(size > 0 ? (size_t)size : 1);
    if (!bytes) {
        fclose(file);
        return plait_fail("out of memory reading %s (%ld bytes)", path, size);
    }
    size_t got = fread(bytes, 1, (size_t)size, file);
    int failed = ferror(file);
    fclose(file);
    if (got != (size_t)size || failed) {
        free(bytes);
        return plait_fail("cannot read %s: short read", path);
    }
    return safetensors_parse(path, bytes, (size_t)size, out);
}

/* ---- writing ------------------------------------------------------------------------------ */

typedef struct writer_entry {
    char *name;
    safetensors_dtype dtype;
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    void *data;
    size_t bytes;
} writer_entry;

struct safetensors_writer {
    writer_entry *entries;
    int count, capacity;
    json_t *metadata;
};

safetensors_writer *safetensors_writer_create(void) {
    safetensors_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->metadata = json_object())) {
        free(w);
        plait_fail("out of memory creating a safetensors writer");
        return NULL;
    }
    return w;
}

void safetensors_writer_free(safetensors_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->count; i++) {
        free(w->entries[i].name);
        free(w->entries[i].data);
    }
    free(w->entries);
    json_decref(w->metadata);
    free(w);
}

void *safetensors_writer_add_storage(safetensors_writer *w, const char *name, safetensors_dtype dtype, int ndim,
                                     const int64_t *shape) {
    if ((unsigned)dtype >= SAFETENSORS_DTYPE_COUNT || ndim < 0 || ndim > SAFETENSORS_MAX_DIMS) {
        plait_fail("safetensors: tensor %s has an invalid dtype or rank", name);
        return NULL;
    }
    if (strcmp(name, "__metadata__") == 0) {
        plait_fail("safetensors: a tensor may not be named __metadata__");
        return NULL;
    }
    for (int i = 0; i < w->count; i++)
        if (strcmp(w->entries[i].name, name) == 0) {
            plait_fail("safetensors: tensor %s added twice", name);
            return NULL;
        }
    size_t bytes = tensor_bytes(dtype, ndim, shape);
    if (bytes == SIZE_MAX) {
        plait_fail("safetensors: tensor %s has an invalid shape", name);
        return NULL;
    }
    if (w->count == w->capacity) {
        int capacity = w->capacity ? 2 * w->capacity : 64;
        writer_entry *grown = realloc(w->entries, (size_t)capacity * sizeof *grown);
        if (!grown) {
            plait_fail("out of memory adding tensor %s", name);
            return NULL;
        }
        w->entries = grown;
        w->capacity = capacity;
    }
    writer_entry *e = &w->entries[w->count];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    e->data = calloc(bytes ? bytes : 1, 1);
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        plait_fail("out of memory adding tensor %s (%zu bytes)", name, bytes);
        return NULL;
    }
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->bytes = bytes;
    w->count++;
    return e->data;
}

int safetensors_writer_add(safetensors_writer *w, const char *name, safetensors_dtype dtype, int ndim,
                           const int64_t *shape, const void *data) {
    void *storage = safetensors_writer_add_storage(w, name, dtype, ndim, shape);
    if (!storage) return PLAIT_ERROR;
    size_t bytes = w->entries[w->count - 1].bytes;
    if (bytes) memcpy(storage, data, bytes);
    return PLAIT_OK;
}

int safetensors_writer_set_metadata(safetensors_writer *w, const char *key, const char *value) {
    json_t *string = json_string(value);
    if (!string) return plait_fail("safetensors: metadata %s is not valid UTF-8", key);
    if (json_object_set_new(w->metadata, key, string) != 0)
        return plait_fail("safetensors: cannot set metadata %s", key);
    return PLAIT_OK;
}

static json_t *build_header(const safetensors_writer *w) {
    json_t *root = json_object();
    if (!root) return NULL;
    if (json_object_size(w->metadata) > 0) json_object_set(root, "__metadata__", w->metadata);
    size_t offset = 0;
    for (int i = 0; i < w->count; i++) {
        const writer_entry *e = &w->entries[i];
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++) json_array_append_new(shape, json_integer(e->shape[d]));
        json_t *entry =
            json_pack("{s:s, s:o, s:[I,I]}", "dtype", safetensors_dtype_name(e->dtype), "shape", shape,
                      "data_offsets", (json_int_t)offset, (json_int_t)(offset + e->bytes));
        if (!entry || json_object_set_new(root, e->name, entry) != 0) {
            json_decref(root);
            return NULL;
        }
        offset += e->bytes;
    }
    return root;
}

int safetensors_writer_serialize(const safetensors_writer *w, unsigned char **bytes, size_t *size) {
    *bytes = NULL;
    *size = 0;
    json_t *root = build_header(w);
    char *header = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!header) return plait_fail("safetensors: cannot build the header");
    size_t header_length = strlen(header);
    size_t padded = (header_length + 7) & ~(size_t)7; /* keeps the data 8-byte aligned in the file */
    size_t data_size = 0;
    for (int i = 0; i < w->count; i++) data_size += w->entries[i].bytes;
    size_t total = 8 + padded + data_size;
    unsigned char *out = malloc(total);
    if (!out) {
        free(header);
        return plait_fail("out of memory serializing a %zu-byte safetensors file", total);
    }
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(out + 8, header, header_length);
    memset(out + 8 + header_length, ' ', padded - header_length);
    free(header);
    unsigned char *cursor = out + 8 + padded;
    for (int i = 0; i < w->count; i++) {
        memcpy(cursor, w->entries[i].data, w->entries[i].bytes);
        cursor += w->entries[i].bytes;
    }
    *bytes = out;
    *size = total;
    return PLAIT_OK;
}

int safetensors_writer_write(const safetensors_writer *w, const char *path) {
    unsigned char *bytes;
    size_t size;
    if (safetensors_writer_serialize(w, &bytes, &size) != PLAIT_OK) return PLAIT_ERROR;
    int status = plait_write_file_atomic(path, bytes, size);
    free(bytes);
    return status;
}
