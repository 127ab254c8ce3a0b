/* Hooks into the im2col kernel for tests only. */
#ifndef PLAIT_KERNELS_CONV2D_INTERNAL_H
#define PLAIT_KERNELS_CONV2D_INTERNAL_H

#include <stddef.h>

/* Caps the im2col column buffer (default 64 MiB) so tests can force several image chunks per call.
 * Affects workspace_bytes too; set it before sizing a workspace. */
void plait_conv2d_set_column_buffer_limit(size_t bytes);

#endif
