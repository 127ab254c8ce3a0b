/* plait data: data sets held in memory as 8-bit images, and a loader thread that turns them into
 * augmented, normalized NHWC float batches ahead of training. */
#ifndef PLAIT_DATA_H
#define PLAIT_DATA_H

#include "plait/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* count images of height x width x channels uint8 (HWC), each with a label in [0, classes). */
typedef struct plait_dataset {
    char name[32];
    int count, height, width, channels, classes;
    uint8_t *pixels;
    int32_t *labels;
    float mean[3], std[3]; /* per channel, of [0,1] pixel values, for normalization */
} plait_dataset;

/* Frees and zeroes *d; safe on a zeroed or already freed data set. */
void plait_dataset_free(plait_dataset *d);

/* The loaders below leave mean 0 and std 1 unless they say otherwise; plait_dataset_open sets them.
 * On failure they free what they allocated; the outputs then hold nothing to free. */

/* Official CIFAR binary files: `path` is the folder holding data_batch_1..5.bin and test_batch.bin
 * (CIFAR-10) or train.bin and test.bin (CIFAR-100, fine labels). Each file may hold any whole number of
 * records; a file of another size is an error naming it and its size. Sets the published mean and std. */
int plait_dataset_load_cifar_binary(const char *path, int classes, bool train, plait_dataset *out);
/* Gzipped (or plain) IDX image and label files (Fashion-MNIST): one channel, classes = largest label + 1.
 * Bad magic, bad dimensions, truncation, extra bytes or a count mismatch are errors naming the file. */
int plait_dataset_load_idx(const char *images_path, const char *labels_path, plait_dataset *out);
/* A folder of class folders of JPEG files, classes sorted by name in byte order. Grayscale becomes
 * RGB. size > 0: the shorter side is resized to `size` and the center size x size crop kept; size 0:
 * all images must share one size. `exclude` names a class folder to leave out (or NULL).
 * Files are taken in name (byte) order and judged by content: a file starting with the JPEG marker is
 * an image whatever its name; other files are skipped, except that a .jpg/.jpeg file that is not a JPEG
 * is an error. Hidden files and folders are skipped. CMYK/YCCK JPEGs are converted to RGB. A corrupt or
 * truncated JPEG fails the load with "corrupt JPEG <path>: <libjpeg's message>". Resizing is separable
 * and antialiased (a triangle filter as wide as the scale when shrinking, bilinear when growing), the
 * crop centered as torchvision's Resize + CenterCrop do. Decodes with OpenMP threads; the result does not
 * depend on their number. */
int plait_dataset_load_imagefolder(const char *path, int size, const char *exclude, plait_dataset *out);
/* Seeded per-class split: round(test_fraction x class size) samples of each class go to *test, the rest
 * to *train, both keeping the original order. Mean and std are copied. *train and *test must not be
 * *all (free all separately). */
int plait_dataset_split(const plait_dataset *all, double test_fraction, uint64_t seed, plait_dataset *train,
                        plait_dataset *test);

/* Opens a data set by its name, finding its layout under `path`:
 * cifar10 / cifar100: binary files (in path or path/cifar-10-batches-bin, path/cifar-100-binary), or an
 *             image folder with train/ and test/ (in path or path/<name>, as ../shared/data unpacks);
 *             image_size must be 0 or 32;
 * fashion-mnist: IDX files, .gz or not (path NULL or "": /usr/share/datasets/fashion-mnist);
 *             image_size must be 0 or 28;
 * caltech101: an image folder with one folder per class (path, or path/caltech101 or
 *             path/101_ObjectCategories), split 80/20 per class with `seed`,
 *             BACKGROUND_Google left out; images resized to `image_size` (default 128 when <= 0);
 * imagefolder: train/ and test/ class folders (which must name the same classes), or one folder split
 *             80/20 with `seed`; image_size 0 keeps the images' own (common) size.
 * Sets mean and std to the data set's published figures (CIFAR, Fashion-MNIST), or measures them on the
 * training set (caltech101, imagefolder) and copies them to the test set. */
int plait_dataset_open(const char *name, const char *path, int image_size, uint64_t seed, plait_dataset *train,
                       plait_dataset *test);

typedef struct plait_augment {
    int crop_padding; /* random crop of the original size after zero padding; 0 = none */
    bool flip;        /* random horizontal flip */
    bool flip_alternate; /* with flip: each image flipped in every other epoch, from a random first
                          * choice (Jordan's derandomized flip, 2024): each epoch sees the side the
                          * previous one did not */
    int cutout;       /* side of a square, centered anywhere in the image, set to the data set's mean
                       * after normalization (DeVries & Taylor's Cutout); 0 = none */
    int crop_until_epoch; /* epochs from this one on get no crop and no cutout (flip kept); 0 = never */
} plait_augment;

/* Batches of a data set, one epoch at a time. Order and augmentation depend only on (seed, epoch,
 * sample index), never on threads. With shards > 1, shard `shard` gets every shards-th sample of each
 * batch's order, so replicas of a data-parallel stage read disjoint parts of the same global batch.
 * batch_size must be a multiple of shards; a last partial batch (drop_last false) is kept only when it
 * has at least `shards` samples. Output is ((pixel / 255) - mean) / std per channel; crop padding pads
 * the raw image with 0 pixels before normalizing (as torchvision's RandomCrop(padding) then Normalize),
 * and the flip comes after the crop. */
typedef struct plait_loader_config {
    int batch_size;
    bool shuffle;
    bool drop_last;
    plait_augment augment;
    uint64_t seed;
    int shard, shards;
} plait_loader_config;

typedef struct plait_loader plait_loader;
/* The loader reads *d while it lives: keep d alive and unchanged until plait_loader_free. */
int plait_loader_create(const plait_dataset *d, const plait_loader_config *config, plait_loader **out);
/* Stops the loader's thread (also mid-epoch) and frees it; NULL is fine. */
void plait_loader_free(plait_loader *l);
int plait_loader_batches_per_epoch(const plait_loader *l);
/* Start an epoch at batch `first_batch` (to resume mid-epoch: the batches are exactly those a start at
 * 0 gives from there on); a thread prepares up to 3 batches ahead. Abandons an epoch in progress. */
int plait_loader_start_epoch(plait_loader *l, int epoch, int first_batch);
/* Next batch of the epoch into images {n,h,w,c} and labels[n] (n <= batch_size / shards); returns 1 on
 * a batch, 0 at the end, PLAIT_ERROR before any start_epoch or when images cannot grow. */
int plait_loader_next(plait_loader *l, plait_tensor *images, int32_t *labels);

#ifdef __cplusplus
}
#endif
#endif
