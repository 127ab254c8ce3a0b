#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_internal.h"

#define FASHION_MNIST_DEFAULT_PATH "/usr/share/datasets/fashion-mnist"
#define CALTECH_BACKGROUND "BACKGROUND_Google"

static bool is_folder(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool join_exists(char *out, size_t out_size, const char *folder, const char *name, bool folder_wanted) {
    if (snprintf(out, out_size, "%s/%s", folder, name) >= (int)out_size) return false;
    return folder_wanted ? is_folder(out) : is_file(out);
}

/* ../shared/data holds the data sets as <name>-jpg.tar.gz: say so rather than "not found". */
static bool packed_hint(const char *name, const char *path) {
    char archive[4096], file[128];
    snprintf(file, sizeof file, "%s-jpg.tar.gz", name);
    if (!join_exists(archive, sizeof archive, path, file, false)) return false;
    plait_fail("%s: %s holds the packed archive %s; unpack it first (tar xzf) and give the folder it makes",
               name, path, archive);
    return true;
}

static void name_dataset(plait_dataset *d, const char *name) { snprintf(d->name, sizeof d->name, "%s", name); }

static void copy_stats(plait_dataset *to, const plait_dataset *from) { dataset_set_stats(to, from->mean, from->std); }

/* train/ and test/ class folders of one layout; the two must name the same classes. */
static int open_train_test_folders(const char *path, int size, plait_dataset *train, plait_dataset *test) {
    char train_path[4096], test_path[4096];
    snprintf(train_path, sizeof train_path, "%s/train", path);
    snprintf(test_path, sizeof test_path, "%s/test", path);
    imagefolder_classes train_classes = {0}, test_classes = {0};
    if (imagefolder_load(train_path, size, NULL, train, &train_classes) != PLAIT_OK) return PLAIT_ERROR;
    if (imagefolder_load(test_path, size, NULL, test, &test_classes) != PLAIT_OK) {
        imagefolder_classes_free(&train_classes);
        plait_dataset_free(train);
        return PLAIT_ERROR;
    }
    int status = PLAIT_OK;
    if (train_classes.count != test_classes.count) {
        status = plait_fail("%s has %d class folders but %s has %d", train_path, train_classes.count, test_path,
                            test_classes.count);
    } else {
        for (int i = 0; i < train_classes.count; i++) {
            if (strcmp(train_classes.names[i], test_classes.names[i]) != 0) {
                status = plait_fail("class folders differ: %s has '%s' where %s has '%s'", train_path,
                                    train_classes.names[i], test_path, test_classes.names[i]);
                break;
            }
        }
    }
    if (status == PLAIT_OK && (train->height != test->height || train->width != test->width))
        status = plait_fail("%s holds %dx%d images but %s holds %dx%d", train_path, train->width, train->height,
                            test_path, test->width, test->height);
    imagefolder_classes_free(&train_classes);
    imagefolder_classes_free(&test_classes);
    if (status != PLAIT_OK) {
        plait_dataset_free(train);
        plait_dataset_free(test);
    }
    return status;
}

static int open_cifar(const char *name, int classes, const char *path, int image_size, plait_dataset *train,
                      plait_dataset *test) {
    if (!path || !*path) return plait_fail("%s: give the folder that holds it", name);
    if (image_size != 0 && image_size != 32)
        return plait_fail("%s images are 32x32; image size %d is not supported", name, image_size);
    const char *marker = classes == 10 ? "data_batch_1.bin" : "train.bin";
    const char *binary_folder = classes == 10 ? "cifar-10-batches-bin" : "cifar-100-binary";
    char candidate[4096], inner[4096];
    const char *binary = NULL, *images = NULL;
    if (join_exists(candidate, sizeof candidate, path, marker, false)) {
        binary = path;
    } else if (join_exists(inner, sizeof inner, path, binary_folder, true) &&
               join_exists(candidate, sizeof candidate, inner, marker, false)) {
        binary = inner;
    } else if (join_exists(candidate, sizeof candidate, path, "train", true)) {
        images = path;
    } else if (join_exists(inner, sizeof inner, path, name, true) &&
               join_exists(candidate, sizeof candidate, inner, "train", true)) {
        images = inner;
    } else if (packed_hint(name, path)) {
        return PLAIT_ERROR;
    } else {
        return plait_fail("%s: %s holds neither %s nor train/ and test/ image folders", name, path, marker);
    }
    if (binary) {
        if (plait_dataset_load_cifar_binary(binary, classes, true, train) != PLAIT_OK) return PLAIT_ERROR;
        if (plait_dataset_load_cifar_binary(binary, classes, false, test) != PLAIT_OK) {
            plait_dataset_free(train);
            return PLAIT_ERROR;
        }
        return PLAIT_OK;
    }
    if (open_train_test_folders(images, 0, train, test) != PLAIT_OK) return PLAIT_ERROR;
    if (train->classes != classes || train->height != 32 || train->width != 32) {
        int status = plait_fail("%s: %s holds %d classes of %dx%d images, not %d classes of 32x32", name, images,
                                train->classes, train->width, train->height, classes);
        plait_dataset_free(train);
        plait_dataset_free(test);
        return status;
    }
    for (int i = 0; i < 2; i++) {
        plait_dataset *d = i == 0 ? train : test;
        name_dataset(d, name);
        cifar_set_published_stats(d, classes);
    }
    return PLAIT_OK;
}

static int open_fashion_mnist(const char *path, int image_size, plait_dataset *train, plait_dataset *test) {
    if (!path || !*path) path = FASHION_MNIST_DEFAULT_PATH;
    if (image_size != 0 && image_size != 28)
        return plait_fail("fashion-mnist images are 28x28; image size %d is not supported", image_size);
    char files[4][4096];
    const char *stems[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                            "t10k-labels-idx1-ubyte"};
    for (int i = 0; i < 4; i++) {
        snprintf(files[i], sizeof files[i], "%s/%s", path, stems[i]);
        if (!is_file(files[i])) snprintf(files[i], sizeof files[i], "%s/%s.gz", path, stems[i]);
    }
    if (plait_dataset_load_idx(files[0], files[1], train) != PLAIT_OK) return PLAIT_ERROR;
    if (plait_dataset_load_idx(files[2], files[3], test) != PLAIT_OK) {
        plait_dataset_free(train);
        return PLAIT_ERROR;
    }
    if (train->classes > 10 || test->classes > 10) {
        plait_dataset_free(train);
        plait_dataset_free(test);
        return plait_fail("fashion-mnist: labels in %s go beyond the 10 classes", path);
    }
    const float mean[3] = {0.2860f, 0.2860f, 0.2860f}, std[3] = {0.3530f, 0.3530f, 0.3530f};
    for (int i = 0; i < 2; i++) {
        plait_dataset *d = i == 0 ? train : test;
        name_dataset(d, "fashion-mnist");
        d->classes = 10;
        dataset_set_stats(d, mean, std);
    }
    return PLAIT_OK;
}

/* One folder of class folders, split 80/20 per class, statistics measured on the training part. */
static int open_and_split(const char *name, const char *path, int size, const char *exclude, uint64_t seed,
                          plait_dataset *train, plait_dataset *test) {
    plait_dataset all;
    if (imagefolder_load(path, size, exclude, &all, NULL) != PLAIT_OK) return PLAIT_ERROR;
    if (dataset_split_consume(&all, 0.2, seed, train, test) != PLAIT_OK) {
        plait_dataset_free(&all);
        return PLAIT_ERROR;
    }
    name_dataset(train, name);
    name_dataset(test, name);
    dataset_measure_stats(train);
    copy_stats(test, train);
    return PLAIT_OK;
}

static int open_caltech(const char *path, int image_size, uint64_t seed, plait_dataset *train,
                        plait_dataset *test) {
    if (!path || !*path) return plait_fail("caltech101: give the folder that holds it");
    char inner[4096];
    if (join_exists(inner, sizeof inner, path, "caltech101", true) ||
        join_exists(inner, sizeof inner, path, "101_ObjectCategories", true))
        path = inner;
    else if (packed_hint("caltech101", path))
        return PLAIT_ERROR;
    return open_and_split("caltech101", path, image_size > 0 ? image_size : 128, CALTECH_BACKGROUND, seed, train,
                          test);
}

static int open_imagefolder(const char *path, int image_size, uint64_t seed, plait_dataset *train,
                            plait_dataset *test) {
    if (!path || !*path) return plait_fail("imagefolder: give the folder that holds it");
    if (image_size < 0) return plait_fail("imagefolder: image size %d is negative", image_size);
    char train_path[4096], test_path[4096];
    if (join_exists(train_path, sizeof train_path, path, "train", true) &&
        join_exists(test_path, sizeof test_path, path, "test", true)) {
        if (open_train_test_folders(path, image_size, train, test) != PLAIT_OK) return PLAIT_ERROR;
        dataset_measure_stats(train);
        copy_stats(test, train);
        return PLAIT_OK;
    }
    return open_and_split("imagefolder", path, image_size, NULL, seed, train, test);
}

int plait_dataset_open(const char *name, const char *path, int image_size, uint64_t seed, plait_dataset *train,
                       plait_dataset *test) {
    if (!name) return plait_fail("no data set name given");
    if (strcmp(name, "cifar10") == 0) return open_cifar(name, 10, path, image_size, train, test);
    if (strcmp(name, "cifar100") == 0) return open_cifar(name, 100, path, image_size, train, test);
    if (strcmp(name, "fashion-mnist") == 0) return open_fashion_mnist(path, image_size, train, test);
    if (strcmp(name, "caltech101") == 0) return open_caltech(path, image_size, seed, train, test);
    if (strcmp(name, "imagefolder") == 0) return open_imagefolder(path, image_size, seed, train, test);
    return plait_fail("unknown data set '%s' (known: cifar10, cifar100, fashion-mnist, caltech101, imagefolder)",
                      name);
}
