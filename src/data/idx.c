#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "data/data_internal.h"

enum { IDX_UBYTE = 0x08 };

/* gzread that reports how many bytes it got; gzip errors become a message naming the file. */
static int idx_read(gzFile f, const char *path, void *buffer, size_t bytes, const char *what) {
    uint8_t *p = buffer;
    size_t got = 0;
    while (got < bytes) {
        size_t chunk = bytes - got > (1u << 30) ? (1u << 30) : bytes - got;
        int n = gzread(f, p + got, (unsigned)chunk);
        if (n < 0) {
            int code;
            const char *message = gzerror(f, &code);
            return plait_fail("IDX file %s: cannot read %s: %s", path, what, message);
        }
        if (n == 0) {
            int code;
            const char *message = gzerror(f, &code);
            if (code != Z_OK && code != Z_BUF_ERROR)
                return plait_fail("IDX file %s: cannot read %s: %s", path, what, message);
            return plait_fail("IDX file %s is truncated: %zu bytes of %s expected, %zu found", path, bytes, what,
                              got);
        }
        got += (size_t)n;
    }
    return PLAIT_OK;
}

static uint32_t big_endian32(const uint8_t *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* Opens an IDX file of unsigned bytes with `rank` dimensions and reads its header. */
static gzFile idx_open(const char *path, int rank, uint32_t dims[3]) {
    gzFile f = gzopen(path, "rb");
    if (!f) {
        plait_fail("cannot open IDX file %s: %s", path, errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    uint8_t header[16];
    if (idx_read(f, path, header, 4, "the header") != PLAIT_OK) goto fail;
    uint32_t magic = big_endian32(header);
    uint32_t expected = (uint32_t)IDX_UBYTE << 8 | (uint32_t)rank;
    if (magic != expected) {
        plait_fail("IDX file %s: bad magic 0x%08x, expected 0x%08x (unsigned bytes, %d dimensions)", path, magic,
                   expected, rank);
        goto fail;
    }
    if (idx_read(f, path, header + 4, 4 * (size_t)rank, "the header") != PLAIT_OK) goto fail;
    for (int i = 0; i < rank; i++) {
        dims[i] = big_endian32(header + 4 + 4 * i);
        uint32_t limit = i == 0 ? 100000000u : 65536u;
        if (dims[i] > limit || (i > 0 && dims[i] == 0)) {
            plait_fail("IDX file %s: bad dimension %d of size %u", path, i, dims[i]);
            goto fail;
        }
    }
    return f;
fail:
    gzclose(f);
    return NULL;
}

static int idx_expect_end(gzFile f, const char *path) {
    uint8_t extra;
    int n = gzread(f, &extra, 1);
    if (n != 0) return plait_fail("IDX file %s has bytes beyond its declared dimensions", path);
    return PLAIT_OK;
}

int plait_dataset_load_idx(const char *images_path, const char *labels_path, plait_dataset *out) {
    if (!images_path || !labels_path) return plait_fail("IDX: missing image or label file name");
    uint32_t image_dims[3], label_dims[3];
    gzFile images = idx_open(images_path, 3, image_dims);
    if (!images) return PLAIT_ERROR;
    gzFile labels = idx_open(labels_path, 1, label_dims);
    if (!labels) {
        gzclose(images);
        return PLAIT_ERROR;
    }
    plait_dataset d = {0};
    uint8_t *label_bytes = NULL;
    int status = PLAIT_ERROR;
    if (image_dims[0] != label_dims[0]) {
        plait_fail("IDX files disagree: %s has %u images but %s has %u labels", images_path, image_dims[0],
                   labels_path, label_dims[0]);
        goto done;
    }
    if (dataset_allocate(&d, "idx", (int)image_dims[0], (int)image_dims[1], (int)image_dims[2], 1, 1) != PLAIT_OK)
        goto done;
    size_t pixel_bytes = (size_t)d.count * (size_t)d.height * (size_t)d.width;
    if (idx_read(images, images_path, d.pixels, pixel_bytes, "the pixels") != PLAIT_OK) goto done;
    if (idx_expect_end(images, images_path) != PLAIT_OK) goto done;
    label_bytes = malloc((size_t)d.count + 1);
    if (!label_bytes) {
        plait_fail("out of memory reading %s", labels_path);
        goto done;
    }
    if (idx_read(labels, labels_path, label_bytes, (size_t)d.count, "the labels") != PLAIT_OK) goto done;
    if (idx_expect_end(labels, labels_path) != PLAIT_OK) goto done;
    int classes = 0;
    for (int i = 0; i < d.count; i++) {
        d.labels[i] = label_bytes[i];
        if (d.labels[i] + 1 > classes) classes = d.labels[i] + 1;
    }
    d.classes = classes > 0 ? classes : 1;
    status = PLAIT_OK;
done:
    free(label_bytes);
    gzclose(images);
    gzclose(labels);
    if (status == PLAIT_OK)
        *out = d;
    else
        plait_dataset_free(&d);
    return status;
}
