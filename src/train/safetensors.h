/* safetensors files (the Hugging Face format PyTorch users exchange weights in):
 *   8 bytes   little-endian u64 N, the header length
 *   N bytes   JSON object {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}
 *   rest      the data buffer; offsets are relative to its start and must tile it exactly.
 * Internal to plait; checkpoints (plait/checkpoint.h) are built on it. Assumes a little-endian host. */
#ifndef PLAIT_TRAIN_SAFETENSORS_H
#define PLAIT_TRAIN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define SAFETENSORS_MAX_DIMS 8

typedef enum safetensors_dtype {
    SAFETENSORS_BOOL,
    SAFETENSORS_U8,
    SAFETENSORS_I8,
    SAFETENSORS_I16,
    SAFETENSORS_U16,
    SAFETENSORS_F16,
    SAFETENSORS_BF16,
    SAFETENSORS_I32,
    SAFETENSORS_U32,
    SAFETENSORS_F32,
    SAFETENSORS_F64,
    SAFETENSORS_I64,
    SAFETENSORS_U64,
    SAFETENSORS_DTYPE_COUNT
} safetensors_dtype;

const char *safetensors_dtype_name(safetensors_dtype dtype); /* "F32", "I64", ... */
size_t safetensors_dtype_size(safetensors_dtype dtype);      /* bytes per element */

typedef struct safetensors_tensor {
    char *name;
    safetensors_dtype dtype;
    int ndim; /* 0 = scalar */
    int64_t shape[SAFETENSORS_MAX_DIMS];
    const void *data; /* points into the file's bytes; not necessarily aligned, so memcpy out */
    size_t offset; /* data_offsets begin, relative to the data buffer */
    size_t bytes;
} safetensors_tensor;

typedef struct safetensors_file {
    char *path;
    unsigned char *bytes; /* the whole file */
    size_t size;
    safetensors_tensor *tensors; /* in data-offset order */
    int tensor_count;
    char **metadata_keys, **metadata_values;
    int metadata_count;
} safetensors_file;

/* Read and validate a whole file. Every problem fails with one line that names the file. */
int safetensors_read(const char *path, safetensors_file **out);
/* The same on bytes already in memory (taken over by the result on success; plait_alloc'd or malloc'd).
 * `path` only names the source in messages. */
int safetensors_parse(const char *path, unsigned char *bytes, size_t size, safetensors_file **out);
void safetensors_free(safetensors_file *f);
const safetensors_tensor *safetensors_find(const safetensors_file *f, const char *name);
const char *safetensors_metadata(const safetensors_file *f, const char *key); /* NULL when absent */
/* "[64,3,7,7]" into buffer. */
const char *safetensors_shape_text(int ndim, const int64_t *shape, char *buffer, size_t size);

/* Builds a file in memory; tensors keep the order they were added in. */
typedef struct safetensors_writer safetensors_writer;
safetensors_writer *safetensors_writer_create(void);
void safetensors_writer_free(safetensors_writer *w);
/* Copies `data` (product(shape) elements of dtype). */
int safetensors_writer_add(safetensors_writer *w, const char *name, safetensors_dtype dtype, int ndim,
                           const int64_t *shape, const void *data);
/* Like add, but returns the writer's zeroed storage for the caller to fill (NULL on failure). */
void *safetensors_writer_add_storage(safetensors_writer *w, const char *name, safetensors_dtype dtype, int ndim,
                                     const int64_t *shape);
int safetensors_writer_set_metadata(safetensors_writer *w, const char *key, const char *value);
/* The complete file in a malloc'd buffer (header padded with spaces to a multiple of 8 bytes). */
int safetensors_writer_serialize(const safetensors_writer *w, unsigned char **bytes, size_t *size);
/* Serialize and write atomically (temporary file, fsync, rename). */
int safetensors_writer_write(const safetensors_writer *w, const char *path);

#endif
