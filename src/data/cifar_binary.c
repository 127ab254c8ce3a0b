#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data_internal.h"

enum { CIFAR_SIDE = 32, CIFAR_PLANE = CIFAR_SIDE * CIFAR_SIDE, CIFAR_PIXELS = 3 * CIFAR_PLANE };

void cifar_set_published_stats(plait_dataset *d, int classes) {
    static const float mean10[3] = {0.4914f, 0.4822f, 0.4465f}, std10[3] = {0.2470f, 0.2435f, 0.2616f};
    static const float mean100[3] = {0.5071f, 0.4865f, 0.4409f}, std100[3] = {0.2673f, 0.2564f, 0.2762f};
    dataset_set_stats(d, classes == 10 ? mean10 : mean100, classes == 10 ? std10 : std100);
}

/* Reads the records of one file into d starting at image `first`; planar R, G, B becomes HWC. */
static int cifar_read_file(const char *path, int label_bytes, int classes, plait_dataset *d, int first,
                           int records) {
    FILE *f = fopen(path, "rb");
    if (!f) return plait_fail("cannot open CIFAR file %s: %s", path, strerror(errno));
    size_t record_bytes = (size_t)label_bytes + CIFAR_PIXELS;
    uint8_t *record = malloc(record_bytes);
    if (!record) {
        fclose(f);
        return plait_fail("out of memory reading %s", path);
    }
    int status = PLAIT_OK;
    for (int r = 0; r < records; r++) {
        if (fread(record, 1, record_bytes, f) != record_bytes) {
            status = plait_fail("cannot read record %d of CIFAR file %s", r, path);
            break;
        }
        int label = record[label_bytes - 1]; /* CIFAR-100: coarse byte, then the fine label we use */
        if (label >= classes) {
            status = plait_fail("CIFAR file %s: record %d has label %d, but there are %d classes", path, r, label,
                                classes);
            break;
        }
        d->labels[first + r] = label;
        uint8_t *out = d->pixels + (size_t)(first + r) * CIFAR_PIXELS;
        const uint8_t *planes = record + label_bytes;
        for (int i = 0; i < CIFAR_PLANE; i++)
            for (int c = 0; c < 3; c++) out[3 * i + c] = planes[c * CIFAR_PLANE + i];
    }
    free(record);
    fclose(f);
    return status;
}

int plait_dataset_load_cifar_binary(const char *path, int classes, bool train, plait_dataset *out) {
    if (!path || !*path) return plait_fail("CIFAR binary: no folder given");
    if (classes != 10 && classes != 100)
        return plait_fail("CIFAR binary: classes must be 10 or 100, not %d", classes);
    const char *names10_train[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                                   "data_batch_5.bin"};
    const char *names10_test[] = {"test_batch.bin"};
    const char *names100_train[] = {"train.bin"};
    const char *names100_test[] = {"test.bin"};
    const char **names;
    int file_count;
    if (classes == 10) {
        names = train ? names10_train : names10_test;
        file_count = train ? 5 : 1;
    } else {
        names = train ? names100_train : names100_test;
        file_count = 1;
    }
    int label_bytes = classes == 10 ? 1 : 2;
    long record_bytes = label_bytes + CIFAR_PIXELS;
    char paths[5][4096];
    int records[5], total = 0;
    for (int i = 0; i < file_count; i++) {
        if (snprintf(paths[i], sizeof paths[i], "%s/%s", path, names[i]) >= (int)sizeof paths[i])
            return plait_fail("path too long: %s", path);
        struct stat st;
        if (stat(paths[i], &st) != 0) return plait_fail("cannot open CIFAR file %s: %s", paths[i], strerror(errno));
        if (st.st_size == 0 || st.st_size % record_bytes != 0)
            return plait_fail("CIFAR file %s has %lld bytes, not a whole number of %ld-byte records", paths[i],
                              (long long)st.st_size, record_bytes);
        if (st.st_size / record_bytes > 1000000)
            return plait_fail("CIFAR file %s has %lld bytes, too large for a CIFAR batch", paths[i],
                              (long long)st.st_size);
        records[i] = (int)(st.st_size / record_bytes);
        total += records[i];
    }
    plait_dataset d;
    if (dataset_allocate(&d, classes == 10 ? "cifar10" : "cifar100", total, CIFAR_SIDE, CIFAR_SIDE, 3, classes) !=
        PLAIT_OK)
        return PLAIT_ERROR;
    int first = 0;
    for (int i = 0; i < file_count; i++) {
        if (cifar_read_file(paths[i], label_bytes, classes, &d, first, records[i]) != PLAIT_OK) {
            plait_dataset_free(&d);
            return PLAIT_ERROR;
        }
        first += records[i];
    }
    cifar_set_published_stats(&d, classes);
    *out = d;
    return PLAIT_OK;
}
