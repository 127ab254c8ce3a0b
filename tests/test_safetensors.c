/* The safetensors format: writer layout, reader round trip, and strict rejection of corrupt files. */
#include <stdlib.h>
#include <string.h>

#include "plait/checkpoint.h"
#include "testing.h"
#include "train/safetensors.h"

/* ---- generic safetensors -------------------------------------------------------------------- */

static void safetensors_round_trip(void) {
    const float matrix[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    const int64_t counts[4] = {-1, 0, INT64_MAX, 42};
    const int64_t scalar = -7;
    safetensors_writer *w = safetensors_writer_create();
    CHECK(safetensors_writer_add(w, "weights.matrix", SAFETENSORS_F32, 2, (int64_t[]){2, 3}, matrix) == PLAIT_OK);
    CHECK(safetensors_writer_add(w, "counts", SAFETENSORS_I64, 1, (int64_t[]){4}, counts) == PLAIT_OK);
    CHECK(safetensors_writer_add(w, "scalar", SAFETENSORS_I64, 0, NULL, &scalar) == PLAIT_OK);
    CHECK(safetensors_writer_add(w, "empty", SAFETENSORS_F32, 2, (int64_t[]){0, 5}, NULL) == PLAIT_OK);
    CHECK(safetensors_writer_add(w, "counts", SAFETENSORS_I64, 1, (int64_t[]){4}, counts) == PLAIT_ERROR);
    CHECK(testing_error_has("counts added twice"));
    CHECK(safetensors_writer_set_metadata(w, "note", "h\xc3\xa9llo \"quoted\"") == PLAIT_OK);
    CHECK(safetensors_writer_set_metadata(w, "step", "12") == PLAIT_OK);
    const char *path = testing_temp_path("round_trip.safetensors");
    CHECK(safetensors_writer_write(w, path) == PLAIT_OK);
    safetensors_writer_free(w);

    safetensors_file *f;
    CHECK(safetensors_read(path, &f) == PLAIT_OK);
    if (!f) return;
    CHECK(f->tensor_count == 4 && f->metadata_count == 2);
    const safetensors_tensor *t = safetensors_find(f, "weights.matrix");
    CHECK(t && t->dtype == SAFETENSORS_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    CHECK(t && t->bytes == sizeof matrix && memcmp(t->data, matrix, sizeof matrix) == 0);
    t = safetensors_find(f, "counts");
    CHECK(t && t->dtype == SAFETENSORS_I64 && t->ndim == 1 && memcmp(t->data, counts, sizeof counts) == 0);
    t = safetensors_find(f, "scalar");
    CHECK(t && t->ndim == 0 && t->bytes == 8 && memcmp(t->data, &scalar, 8) == 0);
    t = safetensors_find(f, "empty");
    CHECK(t && t->bytes == 0 && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 5);
    CHECK(safetensors_find(f, "missing") == NULL);
    CHECK(strcmp(safetensors_metadata(f, "note"), "h\xc3\xa9llo \"quoted\"") == 0);
    CHECK(strcmp(safetensors_metadata(f, "step"), "12") == 0);
    CHECK(safetensors_metadata(f, "absent") == NULL);
    safetensors_free(f);
}

static void safetensors_header_layout(void) {
    const float values[2] = {1.0f, -2.0f};
    const int64_t count = 3;
    safetensors_writer *w = safetensors_writer_create();
    CHECK(safetensors_writer_add(w, "w", SAFETENSORS_F32, 1, (int64_t[]){2}, values) == PLAIT_OK);
    CHECK(safetensors_writer_add(w, "n", SAFETENSORS_I64, 0, NULL, &count) == PLAIT_OK);
    CHECK(safetensors_writer_set_metadata(w, "k", "v") == PLAIT_OK);
    unsigned char *bytes;
    size_t size;
    CHECK(safetensors_writer_serialize(w, &bytes, &size) == PLAIT_OK);
    safetensors_writer_free(w);
    const char *header = "{\"__metadata__\":{\"k\":\"v\"},"
                         "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                         "\"n\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}";
    size_t length = strlen(header); /* 132, padded with spaces to 136 */
    CHECK(length == 132);
    CHECK(size == 8 + 136 + 16);
    const unsigned char prefix[8] = {136, 0, 0, 0, 0, 0, 0, 0};
    CHECK(memcmp(bytes, prefix, 8) == 0);
    CHECKF(memcmp(bytes + 8, header, length) == 0, "header is %.*s", (int)length, (const char *)bytes + 8);
    CHECK(memcmp(bytes + 8 + length, "    ", 4) == 0);
    CHECK(memcmp(bytes + 144, values, 8) == 0 && memcmp(bytes + 152, &count, 8) == 0);
    free(bytes);
}

/* Writes the 8-byte length, `header` and `data_size` bytes of data; returns the path. */
static const char *write_raw(const char *name, const char *header, size_t data_size) {
    const char *path = testing_temp_path(name);
    size_t header_length = strlen(header);
    unsigned char *bytes = calloc(1, 8 + header_length + data_size);
    for (int i = 0; i < 8; i++) bytes[i] = (unsigned char)((uint64_t)header_length >> (8 * i));
    memcpy(bytes + 8, header, header_length);
    FILE *file = fopen(path, "wb");
    fwrite(bytes, 1, 8 + header_length + data_size, file);
    fclose(file);
    free(bytes);
    return path;
}

static void expect_corrupt(const char *path, const char *reason) {
    safetensors_file *f = (safetensors_file *)&f;
    CHECKF(safetensors_read(path, &f) == PLAIT_ERROR, "%s was accepted", path);
    CHECK(f == NULL);
    CHECK(testing_error_has(path));
    CHECK(testing_error_has(reason));
    /* Checkpoint loading reports the same problem. */
    plait_model model = {.name = "tiny", .unit_count = 1, .units = &(plait_unit){.name = "stem"}};
    CHECK(plait_checkpoint_load(&path, 1, &model, 0, 1, PLAIT_CHECKPOINT_WEIGHTS, NULL) == PLAIT_ERROR);
    CHECK(testing_error_has(path) && testing_error_has(reason));
}

#define ENTRY(name, dtype, shape, begin, end) \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #begin "," #end "]}"

static void safetensors_rejects_corrupt_files(void) {
    const char *path = testing_temp_path("short.safetensors");
    FILE *file = fopen(path, "wb");
    fwrite("\x05\0\0\0\0", 1, 5, file);
    fclose(file);
    expect_corrupt(path, "too short");

    path = testing_temp_path("long_header.safetensors");
    file = fopen(path, "wb");
    fwrite("\xff\0\0\0\0\0\0\0{}", 1, 10, file);
    fclose(file);
    expect_corrupt(path, "header length 255 runs past the end of the 10-byte file");

    expect_corrupt(write_raw("not_json.safetensors", "{\"a\": [1, 2", 0), "header is not valid JSON");
    expect_corrupt(write_raw("array.safetensors", "[1, 2]", 0), "header is not a JSON object");
    expect_corrupt(write_raw("object_then_junk.safetensors", "{} x", 0), "header is not valid JSON");
    expect_corrupt(write_raw("duplicate.safetensors", "{" ENTRY("a", "F32", "[1]", 0, 4) "," ENTRY("a", "F32", "[1]", 4, 8) "}", 8),
                   "duplicate");
    expect_corrupt(write_raw("no_dtype.safetensors", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4),
                   "tensor a has no dtype");
    expect_corrupt(write_raw("no_shape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4),
                   "tensor a has no shape");
    expect_corrupt(write_raw("no_offsets.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4),
                   "tensor a has no data_offsets");
    expect_corrupt(write_raw("dtype.safetensors", "{" ENTRY("a", "F33", "[1]", 0, 4) "}", 4),
                   "tensor a has unknown dtype F33");
    expect_corrupt(write_raw("negative_dim.safetensors", "{" ENTRY("a", "F32", "[-1]", 0, 4) "}", 4),
                   "shape entry that is not a size");
    expect_corrupt(write_raw("beyond.safetensors", "{" ENTRY("a", "F32", "[2]", 0, 8) "}", 4),
                   "data_offsets [0,8] beyond the 4-byte data");
    expect_corrupt(write_raw("backwards.safetensors", "{" ENTRY("a", "F32", "[0]", 4, 0) "}", 4),
                   "end before they begin");
    expect_corrupt(write_raw("size.safetensors", "{" ENTRY("a", "F32", "[3]", 0, 8) "}", 8),
                   "tensor a has 8 bytes of data but F32 shape [3] needs 12");
    expect_corrupt(write_raw("overlap.safetensors", "{" ENTRY("a", "F32", "[2]", 0, 8) "," ENTRY("b", "F32", "[2]", 4, 12) "}", 12),
                   "tensors a and b overlap");
    expect_corrupt(write_raw("gap.safetensors", "{" ENTRY("a", "F32", "[1]", 0, 4) "," ENTRY("b", "F32", "[1]", 8, 12) "}", 12),
                   "data bytes [4,8) before tensor b belong to no tensor");
    expect_corrupt(write_raw("trailing.safetensors", "{" ENTRY("a", "F32", "[1]", 0, 4) "}", 6),
                   "2 bytes after the last tensor belong to no tensor");
    expect_corrupt(write_raw("metadata.safetensors", "{\"__metadata__\":{\"epoch\":3}}", 0),
                   "__metadata__ value of \"epoch\" is not a string");
    expect_corrupt(write_raw("extra_key.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4),
                   "keys other than");

    /* Order in the header does not matter; tiling the buffer does. Trailing spaces are padding. */
    safetensors_file *f;
    const char *good = write_raw("unordered.safetensors",
                                 "{" ENTRY("b", "F32", "[1]", 4, 8) "," ENTRY("a", "F32", "[1]", 0, 4) "}   ", 8);
    CHECK(safetensors_read(good, &f) == PLAIT_OK);
    if (f) CHECK(f->tensor_count == 2 && strcmp(f->tensors[0].name, "a") == 0 && f->tensors[1].offset == 4);
    safetensors_free(f);
    CHECK(safetensors_read(testing_temp_path("does_not_exist.safetensors"), &f) == PLAIT_ERROR);
    CHECK(testing_error_has("does_not_exist.safetensors"));
}

int main(void) {
    testing_run("safetensors_round_trip", safetensors_round_trip);
    testing_run("safetensors_header_layout", safetensors_header_layout);
    testing_run("safetensors_rejects_corrupt_files", safetensors_rejects_corrupt_files);
    return testing_finish();
}
