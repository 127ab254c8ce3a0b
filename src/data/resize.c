#include <math.h>
#include <stdlib.h>

#include "data/data_internal.h"

/* Filter taps of one axis: output pixel o reads count[o] input pixels from first[o]. */
typedef struct axis_filter {
    int taps; /* the most any output reads */
    int *first, *count;
    float *weights; /* [outputs][taps] */
} axis_filter;

/* Output pixels offset .. offset + outputs - 1 of an axis resampled from in_length to out_length. */
static int axis_filter_make(axis_filter *f, int in_length, int out_length, int offset, int outputs) {
    double scale = (double)in_length / (double)out_length;
    double support = scale > 1.0 ? scale : 1.0; /* widen the triangle when shrinking: no aliasing */
    f->taps = (int)ceil(support) * 2 + 1;
    f->first = malloc((size_t)outputs * sizeof *f->first);
    f->count = malloc((size_t)outputs * sizeof *f->count);
    f->weights = calloc((size_t)outputs * (size_t)f->taps, sizeof *f->weights);
    if (!f->first || !f->count || !f->weights) return -1;
    for (int o = 0; o < outputs; o++) {
        double center = (offset + o + 0.5) * scale;
        int lo = (int)floor(center - support), hi = (int)ceil(center + support);
        if (lo < 0) lo = 0;
        if (hi > in_length) hi = in_length;
        if (hi - lo > f->taps) hi = lo + f->taps;
        float *w = f->weights + (size_t)o * (size_t)f->taps;
        double total = 0;
        for (int i = lo; i < hi; i++) {
            double t = 1.0 - fabs(i + 0.5 - center) / support;
            w[i - lo] = t > 0 ? (float)t : 0.0f;
            total += w[i - lo];
        }
        for (int i = lo; i < hi; i++) w[i - lo] = (float)(w[i - lo] / total);
        f->first[o] = lo;
        f->count[o] = hi - lo;
    }
    return 0;
}

static void axis_filter_free(axis_filter *f) {
    free(f->first);
    free(f->count);
    free(f->weights);
}

int image_resize_center_crop(const uint8_t *in, int height, int width, int size, uint8_t *out) {
    /* Shorter side to size, the longer scaled in proportion (truncated, as torchvision does). */
    int resized_h, resized_w;
    if (height <= width) {
        resized_h = size;
        resized_w = (int)((long long)size * width / height);
    } else {
        resized_w = size;
        resized_h = (int)((long long)size * height / width);
    }
    int top = (resized_h - size) / 2, left = (resized_w - size) / 2;
    axis_filter rows = {0}, cols = {0};
    float *column = NULL;
    int status = -1;
    if (axis_filter_make(&rows, height, resized_h, top, size) != 0) goto done;
    if (axis_filter_make(&cols, width, resized_w, left, size) != 0) goto done;
    /* Vertical pass first: it runs along whole contiguous rows (vectorizes), and leaves only `size` rows
     * for the horizontal pass. Only the columns the crop needs are filtered. */
    int col_begin = cols.first[0], col_end = cols.first[size - 1] + cols.count[size - 1];
    int span = (col_end - col_begin) * 3;
    column = malloc((size_t)span * sizeof *column);
    if (!column) goto done;
    for (int y = 0; y < size; y++) {
        const float *w = rows.weights + (size_t)y * (size_t)rows.taps;
        for (int i = 0; i < span; i++) column[i] = 0.0f;
        for (int k = 0; k < rows.count[y]; k++) {
            const uint8_t *src = in + (size_t)(rows.first[y] + k) * (size_t)width * 3 + (size_t)col_begin * 3;
            float weight = w[k];
            for (int i = 0; i < span; i++) column[i] += weight * (float)src[i];
        }
        uint8_t *dst = out + (size_t)y * (size_t)size * 3;
        for (int x = 0; x < size; x++) {
            const float *wx = cols.weights + (size_t)x * (size_t)cols.taps;
            const float *p = column + (size_t)(cols.first[x] - col_begin) * 3;
            float r = 0.5f, g = 0.5f, b = 0.5f; /* weights are positive: +0.5 then truncation rounds */
            for (int k = 0; k < cols.count[x]; k++) {
                r += wx[k] * p[3 * k];
                g += wx[k] * p[3 * k + 1];
                b += wx[k] * p[3 * k + 2];
            }
            dst[3 * x] = (uint8_t)(r >= 255.0f ? 255 : (int)r);
            dst[3 * x + 1] = (uint8_t)(g >= 255.0f ? 255 : (int)g);
            dst[3 * x + 2] = (uint8_t)(b >= 255.0f ? 255 : (int)b);
        }
    }
    status = 0;
done:
    axis_filter_free(&rows);
    axis_filter_free(&cols);
    free(column);
    return status;
}
