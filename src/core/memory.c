#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "plait/core.h"

/* Buffers of 4 MB and more (activations, gradients, workspaces, data sets) ask for 2 MB pages: NHWC kernels
 * step through them a pixel at a time, often 4 KB or more apart, which on 4 KB pages is a TLB miss per
 * access; and faulting in hundreds of megabytes 4 KB at a time is slow on a VM. */
static size_t alignment_for(size_t bytes) { return bytes >= ((size_t)4 << 20) ? (size_t)2 << 20 : 64; }

static size_t rounded_size(size_t bytes) {
    size_t alignment = alignment_for(bytes);
    size_t rounded = (bytes + alignment - 1) & ~(alignment - 1);
    return rounded ? rounded : alignment;
}

void *plait_alloc_unzeroed(size_t bytes) {
    size_t rounded = rounded_size(bytes);
    void *p = aligned_alloc(alignment_for(bytes), rounded);
    if (!p) {
        plait_fail("out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    if (alignment_for(bytes) > 64) madvise(p, rounded, MADV_HUGEPAGE); /* only a hint; fine if refused */
    return p;
}

/* The padding up to the rounded size is zeroed too: vector loads may run past the last element. */
void *plait_alloc(size_t bytes) {
    void *p = plait_alloc_unzeroed(bytes);
    if (p) memset(p, 0, rounded_size(bytes));
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
