/* Internal helpers shared by the data loaders (src/data). */
#ifndef PLAIT_DATA_INTERNAL_H
#define PLAIT_DATA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plait/data.h"

/* Allocates pixels (not zeroed) and labels for count images; mean 0 and std 1 until someone sets them. */
int dataset_allocate(plait_dataset *d, const char *name, int count, int height, int width, int channels,
                     int classes);
void dataset_set_stats(plait_dataset *d, const float mean[3], const float std[3]);
/* The per-channel figures published for the original CIFAR-10 (classes 10) or CIFAR-100 training set. */
void cifar_set_published_stats(plait_dataset *d, int classes);
/* Per-channel mean and std of the pixels in [0, 1], summed in integers so any thread count agrees. */
void dataset_measure_stats(plait_dataset *d);

/* plait_dataset_split that moves all's pixels into *train instead of copying them (all is left empty;
 * the buffer keeps its original size). On failure all is untouched. */
int dataset_split_consume(plait_dataset *all, double test_fraction, uint64_t seed, plait_dataset *train,
                          plait_dataset *test);

/* True when the bytes start like a JPEG file (SOI marker then another marker). */
bool jpeg_has_magic(const uint8_t *bytes, size_t size);

/* Decodes a JPEG held in memory to 8-bit RGB, HWC.
 * size > 0: the shorter side is resized to size and the center size x size crop written to out.
 * size == 0: the image must be expect_height x expect_width (or, when those are 0, any size; the
 * decoded size is returned through *height and *width and out must be large enough or NULL to only
 * read the header). On failure returns -1 with one line in error (naming path). Thread safe. */
int jpeg_decode_rgb(const char *path, const uint8_t *bytes, size_t size_bytes, int size, int expect_height,
                    int expect_width, uint8_t *out, int *height, int *width, char *error, size_t error_size);

/* Resamples an RGB HWC image so its shorter side is size, and writes the center size x size crop.
 * Triangle filter widened by the scale when shrinking (area-like, no aliasing), bilinear when growing. */
int image_resize_center_crop(const uint8_t *in, int height, int width, int size, uint8_t *out);

/* Reads a whole file into a malloc'd buffer; on failure returns NULL with a message in error. */
uint8_t *file_read_all(const char *path, size_t *size, char *error, size_t error_size);

/* An image folder loaded with the class names it found (for checking train/ against test/). */
typedef struct imagefolder_classes {
    int count;
    char **names;
} imagefolder_classes;
int imagefolder_load(const char *path, int size, const char *exclude, plait_dataset *out,
                     imagefolder_classes *classes);
void imagefolder_classes_free(imagefolder_classes *classes);

#endif
