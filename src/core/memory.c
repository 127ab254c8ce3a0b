#include <stdlib.h>
#include <string.h>

#include "plait/core.h"

void *plait_alloc(size_t bytes) {
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(64, rounded);
    if (!p) {
        plait_fail("out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    memset(p, 0, rounded);
    return p;
}

void plait_free(void *pointer) { free(pointer); }

int plait_tensor_reserve(plait_tensor *t, plait_shape shape) {
    size_t count = plait_shape_count(shape);
    if (count > t->capacity) {
        float *data = plait_alloc(count * sizeof(float));
        if (!data) return PLAIT_ERROR;
        plait_free(t->data);
        t->data = data;
        t->capacity = count;
    }
    t->shape = shape;
    return PLAIT_OK;
}

void plait_tensor_free(plait_tensor *t) {
    plait_free(t->data);
    t->data = NULL;
    t->capacity = 0;
}
