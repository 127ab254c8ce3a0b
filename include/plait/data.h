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

void plait_dataset_free(plait_dataset *d);

/* Official CIFAR binary files: `path` is the folder holding data_batch_1..5.bin and test_batch.bin
 * (CIFAR-10) or train.bin and test.bin (CIFAR-100, fine labels). */
int plait_dataset_load_cifar_binary(const char *path, int classes, bool train, plait_dataset *out);
/* Gzipped IDX image and label files (Fashion-MNIST). */
int plait_dataset_load_idx(const char *images_path, const char *labels_path, plait_dataset *out);
/* A folder of class folders of JPEG files, classes sorted by name in byte order. Grayscale becomes
 * RGB. size > 0: the shorter side is resized to `size` and the center size x size crop kept; size 0:
 * all images must share one size. `exclude` names a class folder to leave out (or NULL). */
int plait_dataset_load_imagefolder(const char *path, int size, const char *exclude, plait_dataset *out);
/* Seeded per-class split: test_fraction of each class goes to *test, the rest to *train. */
int plait_dataset_split(const plait_dataset *all, double test_fraction, uint64_t seed, plait_dataset *train,
                        plait_dataset *test);

/* Opens a data set by its name, finding its layout under `path`:
 * cifar10 / cifar100: binary files, or an image folder with train/ and test/ (as ../shared/data has);
 * fashion-mnist: IDX files (default path /usr/share/datasets/fashion-mnist);
 * caltech101: an image folder with one folder per class, split 80/20 per class with `seed`,
 *             BACKGROUND_Google left out; images resized to `image_size` (default 128);
 * imagefolder: train/ and test/ class folders, or one folder split 80/20.
 * Sets mean and std to the data set's published figures, or measures them on the training set. */
int plait_dataset_open(const char *name, const char *path, int image_size, uint64_t seed, plait_dataset *train,
                       plait_dataset *test);

typedef struct plait_augment {
    int crop_padding; /* random crop of the original size after zero padding; 0 = none */
    bool flip;        /* random horizontal flip */
} plait_augment;

/* Batches of a data set, one epoch at a time. Order and augmentation depend only on (seed, epoch,
 * sample index), never on threads. With shards > 1, shard `shard` gets every shards-th sample of each
 * batch's order, so replicas of a data-parallel stage read disjoint parts of the same global batch. */
typedef struct plait_loader_config {
    int batch_size;
    bool shuffle;
    bool drop_last;
    plait_augment augment;
    uint64_t seed;
    int shard, shards;
} plait_loader_config;

typedef struct plait_loader plait_loader;
int plait_loader_create(const plait_dataset *d, const plait_loader_config *config, plait_loader **out);
void plait_loader_free(plait_loader *l);
int plait_loader_batches_per_epoch(const plait_loader *l);
/* Start an epoch at batch `first_batch` (to resume mid-epoch); a thread prepares batches ahead. */
int plait_loader_start_epoch(plait_loader *l, int epoch, int first_batch);
/* Next batch of the epoch into images {n,h,w,c} and labels[n]; returns 1 on a batch, 0 at the end. */
int plait_loader_next(plait_loader *l, plait_tensor *images, int32_t *labels);

#ifdef __cplusplus
}
#endif
#endif
