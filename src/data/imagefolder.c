#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data/data_internal.h"

enum { ERROR_BYTES = 512 };

typedef struct name_list {
    int count, capacity;
    char **names;
} name_list;

static int name_list_add(name_list *list, const char *name) {
    if (list->count == list->capacity) {
        int capacity = list->capacity ? 2 * list->capacity : 64;
        char **names = realloc(list->names, (size_t)capacity * sizeof *names);
        if (!names) return plait_fail("out of memory listing files");
        list->names = names;
        list->capacity = capacity;
    }
    list->names[list->count] = strdup(name);
    if (!list->names[list->count]) return plait_fail("out of memory listing files");
    list->count++;
    return PLAIT_OK;
}

static void name_list_free(name_list *list) {
    for (int i = 0; i < list->count; i++) free(list->names[i]);
    free(list->names);
    memset(list, 0, sizeof *list);
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b); /* byte order, as the header promises */
}

/* Non-hidden entries of a folder that are folders (want_folders) or regular files, sorted by name. */
static int list_folder(const char *path, bool want_folders, name_list *out) {
    DIR *dir = opendir(path);
    if (!dir) return plait_fail("cannot open folder %s: %s", path, strerror(errno));
    struct dirent *entry;
    int status = PLAIT_OK;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.') continue;
        bool is_folder = entry->d_type == DT_DIR, is_file = entry->d_type == DT_REG;
        if (entry->d_type == DT_UNKNOWN || entry->d_type == DT_LNK) {
            char full[4096];
            struct stat st;
            snprintf(full, sizeof full, "%s/%s", path, entry->d_name);
            if (stat(full, &st) != 0) continue; /* a dangling link is not an image */
            is_folder = S_ISDIR(st.st_mode);
            is_file = S_ISREG(st.st_mode);
        }
        if (want_folders ? is_folder : is_file) {
            status = name_list_add(out, entry->d_name);
            if (status != PLAIT_OK) break;
        }
    }
    closedir(dir);
    if (status == PLAIT_OK && out->count > 1) qsort(out->names, (size_t)out->count, sizeof *out->names, compare_names);
    return status;
}

static bool has_jpeg_extension(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0);
}

void imagefolder_classes_free(imagefolder_classes *classes) {
    if (!classes) return;
    for (int i = 0; i < classes->count; i++) free(classes->names[i]);
    free(classes->names);
    memset(classes, 0, sizeof *classes);
}

/* Per-file outcome of the parallel decode. */
enum { FILE_DECODED = 0, FILE_SKIPPED = 1, FILE_FAILED = 2 };

int imagefolder_load(const char *path, int size, const char *exclude, plait_dataset *out,
                     imagefolder_classes *classes_out) {
    if (!path || !*path) return plait_fail("image folder: no path given");
    if (size < 0 || size > 4096) return plait_fail("image folder %s: image size %d is not in [0, 4096]", path, size);
    name_list classes = {0}, files = {0};
    int *file_labels = NULL;
    uint8_t *status_of = NULL, *pixels = NULL;
    int result = PLAIT_ERROR;
    plait_dataset d = {0};
    if (list_folder(path, true, &classes) != PLAIT_OK) goto done;
    if (exclude && *exclude) {
        for (int i = 0; i < classes.count; i++) {
            if (strcmp(classes.names[i], exclude) != 0) continue;
            free(classes.names[i]);
            memmove(classes.names + i, classes.names + i + 1, (size_t)(classes.count - i - 1) * sizeof(char *));
            classes.count--;
            break;
        }
    }
    if (classes.count == 0) {
        plait_fail("image folder %s has no class folders", path);
        goto done;
    }
    int file_capacity = 0;
    for (int c = 0; c < classes.count; c++) {
        char class_path[4096];
        name_list names = {0};
        snprintf(class_path, sizeof class_path, "%s/%s", path, classes.names[c]);
        if (list_folder(class_path, false, &names) != PLAIT_OK) goto done;
        if (files.count + names.count > file_capacity) {
            file_capacity = 2 * (files.count + names.count);
            int *labels = realloc(file_labels, (size_t)file_capacity * sizeof *labels);
            if (!labels) {
                name_list_free(&names);
                plait_fail("out of memory listing %s", path);
                goto done;
            }
            file_labels = labels;
        }
        for (int i = 0; i < names.count; i++) {
            char full[8192];
            snprintf(full, sizeof full, "%s/%s", class_path, names.names[i]);
            if (name_list_add(&files, full) != PLAIT_OK) {
                name_list_free(&names);
                goto done;
            }
            file_labels[files.count - 1] = c;
        }
        name_list_free(&names);
    }
    int count = files.count;
    if (count == 0) {
        plait_fail("image folder %s has no image files in its %d class folders", path, classes.count);
        goto done;
    }

    /* Without resizing every image must match the first JPEG's size; find it before going parallel. */
    int height = size, width = size;
    if (size == 0) {
        height = width = 0;
        for (int i = 0; i < count && height == 0; i++) {
            char error[ERROR_BYTES];
            size_t bytes;
            uint8_t *data = file_read_all(files.names[i], &bytes, error, sizeof error);
            if (!data) {
                plait_fail("%s", error);
                goto done;
            }
            if (jpeg_has_magic(data, bytes) &&
                jpeg_decode_rgb(files.names[i], data, bytes, 0, 0, 0, NULL, &height, &width, error, sizeof error) !=
                    0) {
                free(data);
                plait_fail("%s", error);
                goto done;
            }
            free(data);
        }
        if (height == 0) {
            plait_fail("image folder %s has no JPEG files", path);
            goto done;
        }
    }
    size_t image_bytes = (size_t)height * (size_t)width * 3;
    pixels = plait_alloc_unzeroed((size_t)count * image_bytes);
    status_of = calloc((size_t)count, 1);
    if (!pixels || !status_of) {
        plait_fail("out of memory for %d images of %dx%d from %s", count, width, height, path);
        goto done;
    }
    int first_failure = count;
    char failure[ERROR_BYTES] = "";
    /* Every file is decoded into its own slot, so the result never depends on the thread count; the
     * reported error is the first failing file in order. */
#pragma omp parallel for schedule(dynamic, 16)
    for (int i = 0; i < count; i++) {
        char error[ERROR_BYTES];
        size_t bytes = 0;
        uint8_t *data = file_read_all(files.names[i], &bytes, error, sizeof error);
        int outcome = FILE_FAILED;
        if (data && jpeg_has_magic(data, bytes)) {
            outcome = jpeg_decode_rgb(files.names[i], data, bytes, size, size ? 0 : height, size ? 0 : width,
                                      pixels + (size_t)i * image_bytes, NULL, NULL, error, sizeof error) == 0
                          ? FILE_DECODED
                          : FILE_FAILED;
        } else if (data && has_jpeg_extension(files.names[i])) {
            snprintf(error, sizeof error, "not a JPEG file %s: it does not start with the JPEG marker FF D8 FF",
                     files.names[i]);
        } else if (data) {
            outcome = FILE_SKIPPED; /* not an image we read; judged by content, not by name */
        }
        free(data);
        status_of[i] = (uint8_t)outcome;
        if (outcome == FILE_FAILED) {
#pragma omp critical(imagefolder_failure)
            if (i < first_failure) {
                first_failure = i;
                snprintf(failure, sizeof failure, "%s", error);
            }
        }
    }
    if (first_failure < count) {
        plait_fail("%s", failure);
        goto done;
    }
    int kept = 0;
    for (int i = 0; i < count; i++) kept += status_of[i] == FILE_DECODED;
    if (kept == 0) {
        plait_fail("image folder %s has no JPEG files", path);
        goto done;
    }
    snprintf(d.name, sizeof d.name, "imagefolder");
    d.height = height;
    d.width = width;
    d.channels = 3;
    d.classes = classes.count;
    for (int c = 0; c < 3; c++) d.std[c] = 1.0f;
    d.labels = plait_alloc((size_t)kept * sizeof *d.labels);
    if (!d.labels) goto done;
    /* Close the gaps skipped files left, keeping file order. */
    int j = 0;
    for (int i = 0; i < count; i++) {
        if (status_of[i] != FILE_DECODED) continue;
        if (j != i) memcpy(pixels + (size_t)j * image_bytes, pixels + (size_t)i * image_bytes, image_bytes);
        d.labels[j++] = file_labels[i];
    }
    d.pixels = pixels;
    pixels = NULL;
    d.count = kept;
    if (classes_out) {
        classes_out->count = classes.count;
        classes_out->names = classes.names;
        classes.names = NULL;
        classes.count = 0;
    }
    *out = d;
    result = PLAIT_OK;
done:
    if (result != PLAIT_OK) plait_dataset_free(&d);
    name_list_free(&classes);
    name_list_free(&files);
    free(file_labels);
    free(status_of);
    plait_free(pixels);
    return result;
}

int plait_dataset_load_imagefolder(const char *path, int size, const char *exclude, plait_dataset *out) {
    return imagefolder_load(path, size, exclude, out, NULL);
}
