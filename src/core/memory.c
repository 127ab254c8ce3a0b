#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "plait/core.h"

/* Buffers of 4 MB and more (activations, gradients, workspaces, data sets) ask for 2 MB pages: NHWC kernels
 * step through them a pixel at a time, often 4 KB or more apart, which on 4 KB pages is a TLB miss per
 * access; and faulting in hundreds of megabytes 4 KB at a time is slow on a VM. */
static void *allocate(size_t bytes, bool zero) {
    size_t alignment = bytes >= ((size_t)4 << 20) ? (size_t)2 << 20 : 64;
    size_t rounded = (bytes + alignment - 1) & ~(alignment - 1);
    if (rounded == 0) rounded = alignment;
    void *p = aligned_alloc(alignment, rounded);
    if (!p) {
        plait_fail("out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    if (alignment > 64) madvise(p, rounded, MADV_HUGEPAGE); /* only a hint; fine if refused */
    if (zero) memset(p, 0, rounded); /* the padding too, as always: no byte of the block is left undefined */
    return p;
}

void *plait_alloc(size_t bytes) { return allocate(bytes, true); }

void *plait_alloc_unzeroed(size_t bytes) { return allocate(bytes, false); }

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
