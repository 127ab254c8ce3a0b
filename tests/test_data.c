/* Data sets and the loader, on files this test writes: CIFAR binary, gzipped IDX, JPEG folders. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <zlib.h>

#include "data/data_internal.h"
#include "plait/data.h"
#include "testing.h"

/* ---------- fixtures ---------- */

static char *path_of(const char *relative) {
    static char paths[8][1024];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 1024, "%s/%s", testing_temp_dir(), relative);
    return p;
}

static void make_folder(const char *relative) {
    char command[1200];
    snprintf(command, sizeof command, "mkdir -p '%s'", path_of(relative));
    if (system(command) != 0) fprintf(stderr, "mkdir failed: %s\n", relative);
}

static void write_bytes(const char *path, const void *bytes, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(bytes, 1, size, f) != size) fprintf(stderr, "cannot write %s\n", path);
    if (f) fclose(f);
}

static uint8_t *read_bytes(const char *path, size_t *size) {
    char error[256];
    uint8_t *data = file_read_all(path, size, error, sizeof error);
    if (!data) fprintf(stderr, "%s\n", error);
    return data;
}

static bool error_mentions(const char *a, const char *b) {
    const char *message = plait_last_error();
    if (getenv("PLAIT_TEST_SHOW_ERRORS")) fprintf(stderr, "  error: %s\n", message);
    bool ok = strstr(message, a) != NULL && (!b || strstr(message, b) != NULL);
    if (!ok) fprintf(stderr, "  unexpected error message: %s\n", message);
    return ok;
}

/* Writes a JPEG with full-resolution chroma, so smooth test images come back within a few levels. */
static void write_jpeg(const char *path, int width, int height, int components, const uint8_t *pixels) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        return;
    }
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr manager;
    cinfo.err = jpeg_std_error(&manager);
    jpeg_create_compress(&cinfo);
    jpeg_stdio_dest(&cinfo, f);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = components;
    cinfo.in_color_space = components == 1 ? JCS_GRAYSCALE : components == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, 98, TRUE);
    for (int c = 0; c < cinfo.num_components; c++)
        cinfo.comp_info[c].h_samp_factor = cinfo.comp_info[c].v_samp_factor = 1;
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)cinfo.next_scanline * (size_t)width * (size_t)components);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    fclose(f);
}

/* A smooth RGB image that differs per `tag`: JPEG keeps it within a few levels. */
static uint8_t *smooth_image(int width, int height, int tag) {
    uint8_t *p = malloc((size_t)width * (size_t)height * 3);
    for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++) {
            uint8_t *q = p + ((size_t)y * (size_t)width + (size_t)x) * 3;
            q[0] = (uint8_t)(40 + 20 * tag + 60 * x / width);
            q[1] = (uint8_t)(200 - 15 * tag - 50 * y / height);
            q[2] = (uint8_t)(100 + 10 * tag);
        }
    return p;
}

static int max_difference(const uint8_t *a, const uint8_t *b, size_t n) {
    int worst = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        if (d > worst) worst = d;
    }
    return worst;
}

static void write_class_images(const char *folder, const char *class_name, int images, int width, int height,
                               int tag);

/* ---------- CIFAR binary ---------- */

/* Record r of a CIFAR file: label byte(s), then planar R, G, B with values from (file, r, plane, i). */
static uint8_t cifar_value(int file, int record, int plane, int i) {
    return (uint8_t)(file * 37 + record * 11 + plane * 85 + i * 7);
}

static void write_cifar(const char *path, int file, int records, int label_bytes, int classes) {
    size_t record_bytes = (size_t)label_bytes + 3072;
    uint8_t *bytes = malloc(record_bytes * (size_t)records);
    for (int r = 0; r < records; r++) {
        uint8_t *rec = bytes + (size_t)r * record_bytes;
        rec[0] = (uint8_t)((file + r) % 20);               /* CIFAR-100: coarse label */
        rec[label_bytes - 1] = (uint8_t)((file * 3 + r) % classes); /* the label we use */
        for (int plane = 0; plane < 3; plane++)
            for (int i = 0; i < 1024; i++) rec[label_bytes + plane * 1024 + i] = cifar_value(file, r, plane, i);
    }
    write_bytes(path, bytes, record_bytes * (size_t)records);
    free(bytes);
}

static void cifar10_binary_loads_planar_as_hwc(void) {
    make_folder("cifar10bin");
    int records[6] = {2, 3, 1, 2, 2, 3};
    for (int f = 0; f < 6; f++) {
        char name[64];
        if (f < 5)
            snprintf(name, sizeof name, "cifar10bin/data_batch_%d.bin", f + 1);
        else
            snprintf(name, sizeof name, "cifar10bin/test_batch.bin");
        write_cifar(path_of(name), f, records[f], 1, 10);
    }
    plait_dataset train, test;
    CHECK(plait_dataset_load_cifar_binary(path_of("cifar10bin"), 10, true, &train) == PLAIT_OK);
    CHECK(train.count == 10 && train.height == 32 && train.width == 32 && train.channels == 3 && train.classes == 10);
    int image = 0, mismatches = 0;
    for (int f = 0; f < 5; f++)
        for (int r = 0; r < records[f]; r++, image++) {
            CHECK(train.labels[image] == (f * 3 + r) % 10);
            for (int i = 0; i < 1024; i++)
                for (int c = 0; c < 3; c++)
                    mismatches += train.pixels[(size_t)image * 3072 + 3 * i + c] != cifar_value(f, r, c, i);
        }
    CHECKF(mismatches == 0, "%d pixels differ", mismatches);
    CHECK(fabsf(train.mean[0] - 0.4914f) < 1e-6f && fabsf(train.std[2] - 0.2616f) < 1e-6f);
    CHECK(plait_dataset_load_cifar_binary(path_of("cifar10bin"), 10, false, &test) == PLAIT_OK);
    CHECK(test.count == 3 && test.labels[2] == (15 + 2) % 10);
    CHECK(test.pixels[3072 + 3 * 5 + 1] == cifar_value(5, 1, 1, 5));
    plait_dataset_free(&train);
    plait_dataset_free(&test);
}

static void cifar100_binary_uses_fine_labels(void) {
    make_folder("cifar100bin");
    write_cifar(path_of("cifar100bin/train.bin"), 1, 30, 2, 100);
    write_cifar(path_of("cifar100bin/test.bin"), 2, 4, 2, 100);
    plait_dataset train;
    CHECK(plait_dataset_load_cifar_binary(path_of("cifar100bin"), 100, true, &train) == PLAIT_OK);
    CHECK(train.count == 30 && train.classes == 100);
    for (int r = 0; r < 30; r++) CHECK(train.labels[r] == (3 + r) % 100);
    CHECK(train.pixels[7 * 3072 + 3 * 100 + 2] == cifar_value(1, 7, 2, 100));
    CHECK(fabsf(train.mean[0] - 0.5071f) < 1e-6f && fabsf(train.std[1] - 0.2564f) < 1e-6f);
    plait_dataset_free(&train);
}

static void cifar_bad_files_give_clear_errors(void) {
    make_folder("cifarbad");
    uint8_t *bytes = calloc(3073 * 2 + 5, 1);
    write_bytes(path_of("cifarbad/test_batch.bin"), bytes, 3073 * 2 + 5);
    plait_dataset d;
    CHECK(plait_dataset_load_cifar_binary(path_of("cifarbad"), 10, false, &d) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("cifarbad/test_batch.bin"), "6151 bytes"));
    CHECK(plait_dataset_load_cifar_binary(path_of("cifarbad"), 10, true, &d) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("cifarbad/data_batch_1.bin"), NULL));
    bytes[0] = 10; /* a label beyond CIFAR-10's classes */
    write_bytes(path_of("cifarbad/test_batch.bin"), bytes, 3073);
    CHECK(plait_dataset_load_cifar_binary(path_of("cifarbad"), 10, false, &d) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("cifarbad/test_batch.bin"), "label 10"));
    free(bytes);
}

/* ---------- IDX ---------- */

static void write_idx(const char *path, uint32_t magic, const uint32_t *dims, int rank, const uint8_t *data,
                      size_t bytes) {
    gzFile f = gzopen(path, "wb");
    uint8_t header[16];
    uint32_t words[4] = {magic, dims[0], rank > 1 ? dims[1] : 0, rank > 2 ? dims[2] : 0};
    for (int w = 0; w < 1 + rank; w++)
        for (int b = 0; b < 4; b++) header[4 * w + b] = (uint8_t)(words[w] >> (24 - 8 * b));
    gzwrite(f, header, (unsigned)(4 * (1 + rank)));
    if (bytes) gzwrite(f, data, (unsigned)bytes);
    gzclose(f);
}

static void idx_loads_images_and_labels(void) {
    uint32_t image_dims[3] = {5, 4, 3}, label_dims[1] = {5};
    uint8_t pixels[60], labels[5] = {3, 0, 9, 1, 3};
    for (int i = 0; i < 60; i++) pixels[i] = (uint8_t)(i * 4 + 1);
    write_idx(path_of("images.gz"), 0x803, image_dims, 3, pixels, 60);
    write_idx(path_of("labels.gz"), 0x801, label_dims, 1, labels, 5);
    plait_dataset d;
    CHECK(plait_dataset_load_idx(path_of("images.gz"), path_of("labels.gz"), &d) == PLAIT_OK);
    CHECK(d.count == 5 && d.height == 4 && d.width == 3 && d.channels == 1 && d.classes == 10);
    CHECK(memcmp(d.pixels, pixels, 60) == 0);
    for (int i = 0; i < 5; i++) CHECK(d.labels[i] == labels[i]);
    plait_dataset_free(&d);
}

static void idx_bad_files_give_clear_errors(void) {
    uint32_t image_dims[3] = {5, 4, 3}, label_dims[1] = {5}, fewer[1] = {4};
    uint8_t pixels[60] = {0}, labels[5] = {0};
    plait_dataset d;
    write_idx(path_of("magic.gz"), 0x0802, image_dims, 3, pixels, 60);
    write_idx(path_of("labels5.gz"), 0x801, label_dims, 1, labels, 5);
    CHECK(plait_dataset_load_idx(path_of("magic.gz"), path_of("labels5.gz"), &d) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("magic.gz"), "bad magic"));
    write_idx(path_of("short.gz"), 0x803, image_dims, 3, pixels, 50);
    CHECK(plait_dataset_load_idx(path_of("short.gz"), path_of("labels5.gz"), &d) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("short.gz"), "truncated"));
    write_idx(path_of("images5.gz"), 0x803, image_dims, 3, pixels, 60);
    write_idx(path_of("labels4.gz"), 0x801, fewer, 1, labels, 4);
    CHECK(plait_dataset_load_idx(path_of("images5.gz"), path_of("labels4.gz"), &d) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("images5.gz"), path_of("labels4.gz")));
    CHECK(plait_dataset_load_idx(path_of("missing.gz"), path_of("labels5.gz"), &d) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("missing.gz"), NULL));
    uint32_t zero_rows[3] = {5, 0, 3};
    write_idx(path_of("dims.gz"), 0x803, zero_rows, 3, pixels, 0);
    CHECK(plait_dataset_load_idx(path_of("dims.gz"), path_of("labels5.gz"), &d) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("dims.gz"), "dimension"));
}

/* ---------- JPEG folders ---------- */

static void jpeg_folder_orders_classes_and_files(void) {
    /* Byte order: "C_upper" < "a_class" < "b_class"; "1.jpg" < "10.jpg" < "2.jpg". */
    const char *classes[3] = {"b_class", "a_class", "C_upper"};
    for (int c = 0; c < 3; c++) {
        char folder[64];
        snprintf(folder, sizeof folder, "folder/%s", classes[c]);
        make_folder(folder);
    }
    uint8_t *images[4];
    for (int t = 0; t < 4; t++) images[t] = smooth_image(12, 8, t);
    write_jpeg(path_of("folder/a_class/2.jpg"), 12, 8, 3, images[0]);
    write_jpeg(path_of("folder/a_class/10.jpg"), 12, 8, 3, images[1]);
    write_jpeg(path_of("folder/a_class/1.jpg"), 12, 8, 3, images[2]);
    write_jpeg(path_of("folder/b_class/tmp"), 12, 8, 3, images[3]); /* a JPEG without an extension */
    uint8_t gray[96];
    for (int i = 0; i < 96; i++) gray[i] = (uint8_t)(60 + i);
    write_jpeg(path_of("folder/C_upper/gray.jpg"), 12, 8, 1, gray);
    write_bytes(path_of("folder/a_class/notes.txt"), "not an image", 12);
    write_bytes(path_of("folder/a_class/.hidden.jpg"), "garbage", 7);
    plait_dataset d;
    CHECK(plait_dataset_load_imagefolder(path_of("folder"), 0, NULL, &d) == PLAIT_OK);
    CHECK(d.count == 5 && d.classes == 3 && d.height == 8 && d.width == 12 && d.channels == 3);
    int expected_labels[5] = {0, 1, 1, 1, 2};
    for (int i = 0; i < 5 && i < d.count; i++) CHECK(d.labels[i] == expected_labels[i]);
    if (d.count == 5) {
        int gray_error = 0;
        for (int i = 0; i < 96; i++)
            for (int c = 0; c < 3; c++) {
                int e = abs((int)d.pixels[3 * i + c] - gray[i]);
                if (e > gray_error) gray_error = e;
            }
        CHECKF(gray_error <= 3, "grayscale error %d", gray_error);
        const uint8_t *sources[4] = {images[2], images[1], images[0], images[3]}; /* 1, 10, 2, tmp */
        for (int k = 0; k < 4; k++) {
            int e = max_difference(d.pixels + (size_t)(1 + k) * 288, sources[k], 288);
            CHECKF(e <= 4, "image %d differs by %d", k, e);
        }
    }
    plait_dataset_free(&d);
    CHECK(plait_dataset_load_imagefolder(path_of("folder"), 0, "a_class", &d) == PLAIT_OK);
    CHECK(d.count == 2 && d.classes == 2 && d.labels[0] == 0 && d.labels[1] == 1);
    plait_dataset_free(&d);
    for (int t = 0; t < 4; t++) free(images[t]);
}

static void jpeg_resize_keeps_the_center(void) {
    make_folder("resize/wide");
    make_folder("resize/tall");
    /* 40x20, left half red: shorter side 20 -> 10 gives 20x10, whose center 10x10 is half red, half blue. */
    uint8_t *wide = malloc(40 * 20 * 3), *tall = malloc(20 * 60 * 3);
    for (int y = 0; y < 20; y++)
        for (int x = 0; x < 40; x++) {
            uint8_t *p = wide + (y * 40 + x) * 3;
            p[0] = x < 20 ? 230 : 20;
            p[1] = 20;
            p[2] = x < 20 ? 20 : 230;
        }
    /* 20x60, top half green: resized 10x30, the center rows 10..19 are half green (top), half gray. */
    for (int y = 0; y < 60; y++)
        for (int x = 0; x < 20; x++) {
            uint8_t *p = tall + (y * 20 + x) * 3;
            p[0] = y < 30 ? 20 : 128;
            p[1] = y < 30 ? 230 : 128;
            p[2] = y < 30 ? 20 : 128;
        }
    write_jpeg(path_of("resize/wide/a.jpg"), 40, 20, 3, wide);
    write_jpeg(path_of("resize/tall/b.jpg"), 20, 60, 3, tall);
    plait_dataset d;
    CHECK(plait_dataset_load_imagefolder(path_of("resize"), 10, NULL, &d) == PLAIT_OK);
    CHECK(d.count == 2 && d.height == 10 && d.width == 10);
    if (d.count == 2) {
        const uint8_t *tall_out = d.pixels, *wide_out = d.pixels + 300; /* "tall" < "wide" */
        for (int y = 0; y < 10; y++) {
            const uint8_t *left = wide_out + (y * 10 + 1) * 3, *right = wide_out + (y * 10 + 8) * 3;
            CHECK(left[0] > 200 && left[2] < 50 && right[0] < 50 && right[2] > 200);
        }
        for (int x = 0; x < 10; x++) {
            const uint8_t *top = tall_out + (1 * 10 + x) * 3, *bottom = tall_out + (8 * 10 + x) * 3;
            CHECK(top[1] > 200 && top[0] < 50 && abs(bottom[1] - 128) < 8 && abs(bottom[0] - 128) < 8);
        }
    }
    plait_dataset_free(&d);
    free(wide);
    free(tall);
}

static void jpeg_decode_ignores_thread_count(void) {
    for (int c = 0; c < 3; c++) {
        char name[32];
        snprintf(name, sizeof name, "class_%d", c);
        write_class_images("threads", name, 12, 20 + 3 * c, 26 - 2 * c, c);
    }
    plait_dataset one, two;
    int threads = plait_threads();
    plait_set_threads(1);
    CHECK(plait_dataset_load_imagefolder(path_of("threads"), 14, NULL, &one) == PLAIT_OK);
    plait_set_threads(2);
    CHECK(plait_dataset_load_imagefolder(path_of("threads"), 14, NULL, &two) == PLAIT_OK);
    plait_set_threads(threads);
    CHECK(one.count == 36 && two.count == 36);
    CHECK(memcmp(one.pixels, two.pixels, (size_t)one.count * 14 * 14 * 3) == 0);
    CHECK(memcmp(one.labels, two.labels, (size_t)one.count * sizeof(int32_t)) == 0);
    plait_dataset_free(&one);
    plait_dataset_free(&two);
}

static void resize_preserves_flat_and_average(void) {
    uint8_t in[30 * 45 * 3], out[16 * 16 * 3];
    for (int i = 0; i < 30 * 45 * 3; i++) in[i] = 77;
    CHECK(image_resize_center_crop(in, 30, 45, 16, out) == 0);
    int flat_error = 0;
    for (int i = 0; i < 16 * 16 * 3; i++) flat_error += out[i] != 77;
    CHECK(flat_error == 0);
    /* A 1-pixel checkerboard shrunk 3x must come out near its average, not alias into stripes. */
    for (int y = 0; y < 30; y++)
        for (int x = 0; x < 45; x++)
            for (int c = 0; c < 3; c++) in[(y * 45 + x) * 3 + c] = (x + y) % 2 ? 200 : 0;
    uint8_t small[10 * 10 * 3];
    CHECK(image_resize_center_crop(in, 30, 45, 10, small) == 0);
    for (int i = 0; i < 300; i++) CHECKF(abs(small[i] - 100) <= 12, "value %d at %d", small[i], i);
    /* Growing 4x4 to 8x8: corners keep their value, the middle interpolates. */
    uint8_t ramp[4 * 4 * 3], big[8 * 8 * 3];
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            for (int c = 0; c < 3; c++) ramp[(y * 4 + x) * 3 + c] = (uint8_t)(x * 60);
    CHECK(image_resize_center_crop(ramp, 4, 4, 8, big) == 0);
    CHECK(big[0] == 0 && big[7 * 3] == 180);
    for (int x = 1; x < 8; x++) CHECK(big[x * 3] >= big[(x - 1) * 3]);
}

static void cmyk_jpeg_becomes_rgb(void) {
    make_folder("cmyk/one");
    /* Adobe CMYK is stored inverted: 255 means no ink. Left half pure red, right half black. */
    uint8_t cmyk[16 * 8 * 4];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 16; x++) {
            uint8_t *p = cmyk + (y * 16 + x) * 4;
            p[0] = 255;
            p[1] = p[2] = 0;
            p[3] = x < 8 ? 255 : 0;
        }
    write_jpeg(path_of("cmyk/one/c.jpg"), 16, 8, 4, cmyk);
    plait_dataset d;
    CHECK(plait_dataset_load_imagefolder(path_of("cmyk"), 0, NULL, &d) == PLAIT_OK);
    if (d.count == 1) {
        const uint8_t *left = d.pixels + (4 * 16 + 2) * 3, *right = d.pixels + (4 * 16 + 13) * 3;
        CHECKF(left[0] > 240 && left[1] < 15 && left[2] < 15, "left %d %d %d", left[0], left[1], left[2]);
        CHECKF(right[0] < 15 && right[1] < 15 && right[2] < 15, "right %d %d %d", right[0], right[1], right[2]);
    }
    plait_dataset_free(&d);
}

static void jpeg_bad_inputs_give_clear_errors(void) {
    plait_dataset d;
    CHECK(plait_dataset_load_imagefolder(path_of("no-such-folder"), 0, NULL, &d) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("no-such-folder"), NULL));
    make_folder("empty");
    CHECK(plait_dataset_load_imagefolder(path_of("empty"), 0, NULL, &d) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("empty"), "no class folders"));
    make_folder("emptyclass/a");
    CHECK(plait_dataset_load_imagefolder(path_of("emptyclass"), 0, NULL, &d) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("emptyclass"), "no image files"));

    uint8_t *image = smooth_image(64, 48, 1);
    make_folder("truncated/a");
    write_jpeg(path_of("truncated/a/good.jpg"), 64, 48, 3, image);
    size_t size;
    uint8_t *bytes = read_bytes(path_of("truncated/a/good.jpg"), &size);
    write_bytes(path_of("truncated/a/half.jpg"), bytes, size / 2);
    CHECK(plait_dataset_load_imagefolder(path_of("truncated"), 0, NULL, &d) == PLAIT_ERROR);
    CHECK(error_mentions("corrupt JPEG ", path_of("truncated/a/half.jpg")));

    make_folder("garbage/a");
    write_bytes(path_of("garbage/a/good.jpg"), bytes, size);
    uint8_t noise[2000] = {0xFF, 0xD8, 0xFF};
    for (int i = 3; i < 2000; i++) noise[i] = (uint8_t)(i * 131 + 7);
    write_bytes(path_of("garbage/a/noise.jpg"), noise, sizeof noise);
    CHECK(plait_dataset_load_imagefolder(path_of("garbage"), 16, NULL, &d) == PLAIT_ERROR);
    CHECK(error_mentions("corrupt JPEG ", path_of("garbage/a/noise.jpg")));

    /* Damage inside the compressed scan, past a valid header: stray markers and junk. */
    make_folder("scan/a");
    uint8_t *damaged = malloc(size);
    memcpy(damaged, bytes, size);
    for (size_t i = size / 2; i < size / 2 + 40 && i + 2 < size; i += 2) {
        damaged[i] = 0xFF;
        damaged[i + 1] = (uint8_t)(0xD0 + i % 8);
    }
    write_bytes(path_of("scan/a/damaged.jpg"), damaged, size);
    free(damaged);
    CHECK(plait_dataset_load_imagefolder(path_of("scan"), 0, NULL, &d) == PLAIT_ERROR);
    CHECK(error_mentions("corrupt JPEG ", path_of("scan/a/damaged.jpg")));

    make_folder("notjpeg/a");
    write_bytes(path_of("notjpeg/a/good.jpg"), bytes, size);
    write_bytes(path_of("notjpeg/a/fake.jpg"), "\x89PNG\r\n", 6);
    CHECK(plait_dataset_load_imagefolder(path_of("notjpeg"), 0, NULL, &d) == PLAIT_ERROR);
    CHECK(error_mentions("not a JPEG file", path_of("notjpeg/a/fake.jpg")));

    make_folder("sizes/a");
    write_bytes(path_of("sizes/a/1.jpg"), bytes, size);
    write_jpeg(path_of("sizes/a/2.jpg"), 32, 48, 3, image);
    CHECK(plait_dataset_load_imagefolder(path_of("sizes"), 0, NULL, &d) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("sizes/a/2.jpg"), "32x48"));
    CHECK(plait_dataset_load_imagefolder(path_of("sizes"), 24, NULL, &d) == PLAIT_OK);
    CHECK(d.count == 2 && d.height == 24 && d.width == 24);
    plait_dataset_free(&d);
    free(bytes);
    free(image);
}

/* ---------- split and open ---------- */

/* count images of h x w x c with random pixels; labels from label_of. */
static plait_dataset synthetic(int count, int height, int width, int channels, int classes, bool label_is_index) {
    plait_dataset d;
    if (dataset_allocate(&d, "synthetic", count, height, width, channels, classes) != PLAIT_OK) abort();
    plait_rng rng;
    plait_rng_seed(&rng, 99);
    size_t bytes = (size_t)count * (size_t)height * (size_t)width * (size_t)channels;
    for (size_t i = 0; i < bytes; i++) d.pixels[i] = (uint8_t)plait_rng_next(&rng);
    for (int i = 0; i < count; i++) d.labels[i] = label_is_index ? i : i % classes;
    float mean[3] = {0.5f, 0.25f, 0.75f}, std[3] = {0.2f, 0.4f, 0.1f};
    dataset_set_stats(&d, mean, std);
    return d;
}

static void split_is_per_class_and_seeded(void) {
    /* Classes of 10, 20 and 30 samples; the first pixel row identifies a sample. */
    plait_dataset all;
    if (dataset_allocate(&all, "split", 60, 1, 1, 1, 3) != PLAIT_OK) return;
    for (int i = 0; i < 60; i++) {
        all.pixels[i] = (uint8_t)i;
        all.labels[i] = i < 10 ? 0 : i < 30 ? 1 : 2;
    }
    plait_dataset train, test, train2, test2;
    CHECK(plait_dataset_split(&all, 0.2, 5, &train, &test) == PLAIT_OK);
    CHECK(train.count == 48 && test.count == 12);
    int per_class[3] = {0};
    for (int i = 0; i < test.count; i++) per_class[test.labels[i]]++;
    CHECK(per_class[0] == 2 && per_class[1] == 4 && per_class[2] == 6);
    int seen[60] = {0};
    for (int i = 0; i < train.count; i++) seen[train.pixels[i]]++;
    for (int i = 0; i < test.count; i++) seen[test.pixels[i]]++;
    for (int i = 0; i < 60; i++) CHECK(seen[i] == 1);
    for (int i = 0; i < test.count; i++) CHECK(all.labels[test.pixels[i]] == test.labels[i]);
    for (int i = 1; i < test.count; i++) CHECK(test.pixels[i] > test.pixels[i - 1]); /* file order kept */
    CHECK(plait_dataset_split(&all, 0.2, 5, &train2, &test2) == PLAIT_OK);
    CHECK(test2.count == 12 && memcmp(test.pixels, test2.pixels, 12) == 0);
    plait_dataset_free(&train2);
    plait_dataset_free(&test2);
    CHECK(plait_dataset_split(&all, 0.2, 6, &train2, &test2) == PLAIT_OK);
    CHECK(test2.count == 12 && memcmp(test.pixels, test2.pixels, 12) != 0);
    plait_dataset_free(&train2);
    plait_dataset_free(&test2);
    CHECK(plait_dataset_split(&all, 1.5, 5, &train2, &test2) == PLAIT_ERROR);
    CHECK(error_mentions("1.5", NULL));
    plait_dataset_free(&train);
    plait_dataset_free(&test);
    plait_dataset_free(&all);
}

static void open_fashion_mnist_and_cifar_binary(void) {
    make_folder("fmnist");
    uint32_t train_dims[3] = {6, 28, 28}, test_dims[3] = {2, 28, 28}, train_n[1] = {6}, test_n[1] = {2};
    uint8_t pixels[6 * 784] = {0}, labels[6] = {9, 0, 0, 3, 2, 7};
    pixels[784 + 5] = 200;
    write_idx(path_of("fmnist/train-images-idx3-ubyte.gz"), 0x803, train_dims, 3, pixels, sizeof pixels);
    write_idx(path_of("fmnist/train-labels-idx1-ubyte.gz"), 0x801, train_n, 1, labels, 6);
    write_idx(path_of("fmnist/t10k-images-idx3-ubyte.gz"), 0x803, test_dims, 3, pixels, 2 * 784);
    write_idx(path_of("fmnist/t10k-labels-idx1-ubyte.gz"), 0x801, test_n, 1, labels, 2);
    plait_dataset train, test;
    CHECK(plait_dataset_open("fashion-mnist", path_of("fmnist"), 0, 1, &train, &test) == PLAIT_OK);
    CHECK(strcmp(train.name, "fashion-mnist") == 0 && train.count == 6 && test.count == 2);
    CHECK(train.classes == 10 && test.classes == 10 && train.channels == 1);
    CHECK(train.pixels[784 + 5] == 200 && train.labels[0] == 9);
    CHECK(fabsf(train.mean[0] - 0.2860f) < 1e-6f && fabsf(test.std[0] - 0.3530f) < 1e-6f);
    plait_dataset_free(&train);
    plait_dataset_free(&test);

    make_folder("c10open/cifar-10-batches-bin");
    for (int f = 0; f < 6; f++) {
        char name[80];
        snprintf(name, sizeof name, f < 5 ? "c10open/cifar-10-batches-bin/data_batch_%d.bin"
                                          : "c10open/cifar-10-batches-bin/test_batch.bin", f + 1);
        write_cifar(path_of(name), f, 2, 1, 10);
    }
    CHECK(plait_dataset_open("cifar10", path_of("c10open"), 0, 1, &train, &test) == PLAIT_OK);
    CHECK(train.count == 10 && test.count == 2 && strcmp(test.name, "cifar10") == 0);
    plait_dataset_free(&train);
    plait_dataset_free(&test);
    CHECK(plait_dataset_open("cifar10", path_of("c10open"), 64, 1, &train, &test) == PLAIT_ERROR);
    CHECK(error_mentions("64", NULL));
    CHECK(plait_dataset_open("cifar100", path_of("nothing-here"), 0, 1, &train, &test) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("nothing-here"), NULL));
    make_folder("packed");
    write_bytes(path_of("packed/cifar10-jpg.tar.gz"), "x", 1);
    CHECK(plait_dataset_open("cifar10", path_of("packed"), 0, 1, &train, &test) == PLAIT_ERROR);
    CHECK(error_mentions(path_of("packed/cifar10-jpg.tar.gz"), "unpack it first"));
    CHECK(plait_dataset_open("mnist", path_of("fmnist"), 0, 1, &train, &test) == PLAIT_ERROR);
    CHECK(error_mentions("unknown data set 'mnist'", NULL));
}

static void write_class_images(const char *folder, const char *class_name, int images, int width, int height,
                               int tag) {
    char relative[256];
    snprintf(relative, sizeof relative, "%s/%s", folder, class_name);
    make_folder(relative);
    for (int i = 0; i < images; i++) {
        uint8_t *pixels = smooth_image(width + i, height, tag + i);
        char name[320];
        snprintf(name, sizeof name, "%s/image_%04d.jpg", relative, i + 1);
        write_jpeg(path_of(name), width + i, height, 3, pixels);
        free(pixels);
    }
}

static void open_image_folder_layouts(void) {
    const char *names[10] = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
    for (int c = 0; c < 10; c++) {
        char relative[64];
        snprintf(relative, sizeof relative, "c10img/train/%s", names[c]);
        make_folder(relative);
        snprintf(relative, sizeof relative, "c10img/test/%s", names[c]);
        make_folder(relative);
        uint8_t *pixels = smooth_image(32, 32, c);
        char file[96];
        snprintf(file, sizeof file, "c10img/train/%s/0000.jpg", names[c]);
        write_jpeg(path_of(file), 32, 32, 3, pixels);
        snprintf(file, sizeof file, "c10img/test/%s/0000.jpg", names[c]);
        write_jpeg(path_of(file), 32, 32, 3, pixels);
        free(pixels);
    }
    plait_dataset train, test;
    CHECK(plait_dataset_open("cifar10", path_of("c10img"), 0, 1, &train, &test) == PLAIT_OK);
    CHECK(train.count == 10 && test.count == 10 && train.classes == 10 && train.labels[3] == 3);
    CHECK(fabsf(train.mean[1] - 0.4822f) < 1e-6f && fabsf(test.std[0] - 0.2470f) < 1e-6f);
    plait_dataset_free(&train);
    plait_dataset_free(&test);
    CHECK(plait_dataset_open("cifar100", path_of("c10img"), 0, 1, &train, &test) == PLAIT_ERROR);
    CHECK(error_mentions("10 classes", "not 100"));

    /* Caltech: BACKGROUND_Google left out, 5 images a class split 4/1, resized to image_size. */
    write_class_images("cal/caltech101", "BACKGROUND_Google", 2, 30, 20, 0);
    write_class_images("cal/caltech101", "ant", 5, 30, 20, 1);
    write_class_images("cal/caltech101", "bee", 5, 24, 40, 2);
    CHECK(plait_dataset_open("caltech101", path_of("cal"), 16, 3, &train, &test) == PLAIT_OK);
    CHECK(train.count == 8 && test.count == 2 && train.classes == 2 && train.height == 16 && train.width == 16);
    CHECK(test.labels[0] == 0 && test.labels[1] == 1 && strcmp(train.name, "caltech101") == 0);
    /* Measured statistics: compare with a direct float64 computation on the training pixels. */
    for (int c = 0; c < 3; c++) {
        double sum = 0, sum_squares = 0;
        size_t n = (size_t)train.count * 256;
        for (size_t i = 0; i < n; i++) {
            double v = train.pixels[3 * i + (size_t)c] / 255.0;
            sum += v;
            sum_squares += v * v;
        }
        double mean = sum / (double)n, std = sqrt(sum_squares / (double)n - mean * mean);
        CHECKF(fabs(train.mean[c] - mean) < 1e-5 && fabs(train.std[c] - std) < 1e-5, "channel %d: %f %f vs %f %f", c,
               train.mean[c], train.std[c], mean, std);
        CHECK(test.mean[c] == train.mean[c] && test.std[c] == train.std[c]);
    }
    plait_dataset_free(&train);
    plait_dataset_free(&test);

    write_class_images("imf/train", "x", 2, 20, 20, 0);
    write_class_images("imf/train", "y", 2, 20, 20, 3);
    write_class_images("imf/test", "x", 1, 20, 20, 0);
    write_class_images("imf/test", "y", 1, 20, 20, 3);
    CHECK(plait_dataset_open("imagefolder", path_of("imf"), 12, 1, &train, &test) == PLAIT_OK);
    CHECK(train.count == 4 && test.count == 2 && train.height == 12 && test.labels[1] == 1);
    plait_dataset_free(&train);
    plait_dataset_free(&test);
    CHECK(plait_dataset_open("imagefolder", path_of("imf/train"), 12, 1, &train, &test) == PLAIT_OK);
    CHECK(train.count + test.count == 4 && test.count == 0); /* 20% of 2 rounds to 0 */
    plait_dataset_free(&train);
    plait_dataset_free(&test);
    write_class_images("imfbad/train", "x", 1, 20, 20, 0);
    write_class_images("imfbad/test", "z", 1, 20, 20, 0);
    CHECK(plait_dataset_open("imagefolder", path_of("imfbad"), 12, 1, &train, &test) == PLAIT_ERROR);
    CHECK(error_mentions("'x'", "'z'"));
}

/* The installed Fashion-MNIST (Debian's dataset-fashion-mnist), when present. */
static void open_installed_fashion_mnist(void) {
    struct stat st;
    if (stat("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", &st) != 0) {
        fprintf(stderr, "  (Fashion-MNIST not installed; skipped)\n");
        return;
    }
    plait_dataset train, test;
    CHECK(plait_dataset_open("fashion-mnist", NULL, 0, 1, &train, &test) == PLAIT_OK);
    CHECK(train.count == 60000 && test.count == 10000 && train.height == 28 && train.classes == 10);
    CHECK(train.labels[0] == 9 && test.labels[0] == 9); /* both files start with an ankle boot */
    plait_dataset measured = train;
    dataset_measure_stats(&measured);
    CHECKF(fabsf(measured.mean[0] - 0.2860f) < 1e-3f && fabsf(measured.std[0] - 0.3530f) < 1e-3f, "%f %f",
           measured.mean[0], measured.std[0]);
    plait_dataset_free(&train);
    plait_dataset_free(&test);
}

/* ---------- loader ---------- */

typedef struct epoch_batches {
    int batches, samples[64];
    int32_t labels[64][64];
    float *images[64];
} epoch_batches;

static plait_loader_config loader_config(int batch, bool shuffle, int padding, bool flip, uint64_t seed) {
    plait_loader_config c = {.batch_size = batch, .shuffle = shuffle, .drop_last = false,
                             .augment = {.crop_padding = padding, .flip = flip}, .seed = seed, .shard = 0,
                             .shards = 1};
    return c;
}

/* Runs one epoch from first_batch, keeping every batch's labels and images. */
static void run_epoch(const plait_dataset *d, const plait_loader_config *c, int epoch, int first_batch,
                      epoch_batches *out) {
    memset(out, 0, sizeof *out);
    plait_loader *l;
    if (plait_loader_create(d, c, &l) != PLAIT_OK) {
        fprintf(stderr, "  loader: %s\n", plait_last_error());
        testing_failures_in_case++;
        return;
    }
    CHECK(plait_loader_start_epoch(l, epoch, first_batch) == PLAIT_OK);
    plait_tensor images = {0};
    int32_t labels[64];
    int result;
    while ((result = plait_loader_next(l, &images, labels)) == 1 && out->batches < 64) {
        int n = images.shape.n, b = out->batches++;
        CHECK(images.shape.h == d->height && images.shape.w == d->width && images.shape.c == d->channels);
        out->samples[b] = n;
        memcpy(out->labels[b], labels, (size_t)n * sizeof(int32_t));
        size_t floats = plait_shape_count(images.shape);
        out->images[b] = malloc(floats * sizeof(float));
        memcpy(out->images[b], images.data, floats * sizeof(float));
    }
    CHECK(result == 0);
    CHECK(plait_loader_next(l, &images, labels) == 0); /* stays at the end */
    plait_tensor_free(&images);
    plait_loader_free(l);
}

static void epoch_free(epoch_batches *e) {
    for (int b = 0; b < e->batches; b++) free(e->images[b]);
}

static bool same_batch(const epoch_batches *a, int ab, const epoch_batches *b, int bb, size_t sample_floats) {
    return a->samples[ab] == b->samples[bb] &&
           memcmp(a->labels[ab], b->labels[bb], (size_t)a->samples[ab] * sizeof(int32_t)) == 0 &&
           memcmp(a->images[ab], b->images[bb], (size_t)a->samples[ab] * sample_floats * sizeof(float)) == 0;
}

static void loader_normalizes_in_file_order(void) {
    plait_dataset d = synthetic(10, 3, 2, 3, 10, true);
    plait_loader_config c = loader_config(4, false, 0, false, 1);
    epoch_batches e;
    run_epoch(&d, &c, 0, 0, &e);
    CHECK(e.batches == 3 && e.samples[0] == 4 && e.samples[2] == 2);
    int wrong = 0;
    for (int b = 0; b < e.batches; b++)
        for (int k = 0; k < e.samples[b]; k++) {
            int index = 4 * b + k;
            CHECK(e.labels[b][k] == index);
            for (int i = 0; i < 18; i++) {
                double expected = (d.pixels[index * 18 + i] / 255.0 - d.mean[i % 3]) / d.std[i % 3];
                wrong += fabs(e.images[b][k * 18 + i] - expected) > 1e-5;
            }
        }
    CHECKF(wrong == 0, "%d values differ", wrong);
    epoch_free(&e);
    c.drop_last = true;
    run_epoch(&d, &c, 0, 0, &e);
    CHECK(e.batches == 2);
    epoch_free(&e);
    plait_dataset_free(&d);
}

static void loader_shuffles_by_seed_and_epoch(void) {
    plait_dataset d = synthetic(103, 4, 4, 3, 103, true);
    plait_loader_config c = loader_config(10, true, 2, true, 7);
    size_t sample_floats = 48;
    epoch_batches a, b, other_seed, other_epoch;
    run_epoch(&d, &c, 3, 0, &a);
    run_epoch(&d, &c, 3, 0, &b);
    CHECK(a.batches == 11 && a.samples[10] == 3);
    bool identical = a.batches == b.batches;
    for (int i = 0; i < a.batches && identical; i++) identical = same_batch(&a, i, &b, i, sample_floats);
    CHECK(identical);
    int seen[103] = {0}, in_order = 0;
    for (int i = 0; i < a.batches; i++)
        for (int k = 0; k < a.samples[i]; k++) {
            seen[a.labels[i][k]]++;
            in_order += a.labels[i][k] == 10 * i + k;
        }
    for (int i = 0; i < 103; i++) CHECKF(seen[i] == 1, "sample %d seen %d times", i, seen[i]);
    CHECK(in_order < 20);
    c.seed = 8;
    run_epoch(&d, &c, 3, 0, &other_seed);
    c.seed = 7;
    run_epoch(&d, &c, 4, 0, &other_epoch);
    CHECK(memcmp(a.labels[0], other_seed.labels[0], 10 * sizeof(int32_t)) != 0);
    CHECK(memcmp(a.labels[0], other_epoch.labels[0], 10 * sizeof(int32_t)) != 0);
    epoch_free(&a);
    epoch_free(&b);
    epoch_free(&other_seed);
    epoch_free(&other_epoch);
    plait_dataset_free(&d);
}

static void loader_resumes_mid_epoch(void) {
    plait_dataset d = synthetic(50, 4, 4, 3, 5, false);
    plait_loader_config c = loader_config(8, true, 1, true, 11);
    epoch_batches full, resumed;
    run_epoch(&d, &c, 2, 0, &full);
    run_epoch(&d, &c, 2, 3, &resumed);
    CHECK(full.batches == 7 && resumed.batches == 4);
    for (int b = 0; b < resumed.batches; b++) CHECK(same_batch(&full, 3 + b, &resumed, b, 48));
    epoch_free(&full);
    epoch_free(&resumed);
    plait_dataset_free(&d);
}

static void loader_shards_partition_each_batch(void) {
    plait_dataset d = synthetic(50, 3, 3, 3, 50, true);
    plait_loader_config c = loader_config(12, true, 1, true, 5);
    epoch_batches whole, shard[4];
    run_epoch(&d, &c, 1, 0, &whole);
    c.shards = 4;
    for (int s = 0; s < 4; s++) {
        c.shard = s;
        run_epoch(&d, &c, 1, 0, &shard[s]);
    }
    /* 50 = 4 x 12 + 2: the last batch of 2 cannot feed 4 shards, so each loader drops it. */
    CHECK(whole.batches == 5 && shard[0].batches == 4);
    for (int b = 0; b < 4; b++)
        for (int s = 0; s < 4; s++) {
            CHECK(shard[s].samples[b] == 3);
            for (int k = 0; k < 3; k++) {
                int position = s + 4 * k;
                CHECK(shard[s].labels[b][k] == whole.labels[b][position]);
                CHECK(memcmp(shard[s].images[b] + k * 27, whole.images[b] + position * 27, 27 * sizeof(float)) == 0);
            }
        }
    for (int s = 0; s < 4; s++) epoch_free(&shard[s]);
    epoch_free(&whole);
    c.shards = 5;
    c.shard = 0;
    plait_loader *l;
    CHECK(plait_loader_create(&d, &c, &l) == PLAIT_ERROR);
    CHECK(error_mentions("batch size 12", "5 shards"));
    c.shard = 5;
    CHECK(plait_loader_create(&d, &c, &l) == PLAIT_ERROR);
    CHECK(error_mentions("shard 5 of 5", NULL));
    plait_dataset_free(&d);
}

/* 0 when out is the normalized src, 1 when it is src mirrored left to right, -1 when neither. */
static int flip_state(const plait_dataset *d, const uint8_t *src, const float *out, int h, int w, int ch) {
    bool same = true, mirror = true;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int q = 0; q < ch; q++) {
                float v = out[(y * w + x) * ch + q];
                float plain = (src[(y * w + x) * ch + q] / 255.0f - d->mean[q]) / d->std[q];
                float mirrored = (src[(y * w + w - 1 - x) * ch + q] / 255.0f - d->mean[q]) / d->std[q];
                same = same && fabsf(v - plain) < 1e-5f;
                mirror = mirror && fabsf(v - mirrored) < 1e-5f;
            }
    return same ? 0 : mirror ? 1 : -1;
}

/* With one augmentation at a time, every output must be the source moved or mirrored exactly. */
static void loader_flip_mirrors_and_crop_shifts(void) {
    plait_dataset d = synthetic(400, 5, 6, 3, 4, false);
    const int h = 5, w = 6, ch = 3;
    plait_loader_config c = loader_config(40, false, 0, true, 3);
    epoch_batches e;
    run_epoch(&d, &c, 0, 0, &e);
    int flipped = 0, neither = 0;
    for (int b = 0; b < e.batches; b++)
        for (int k = 0; k < e.samples[b]; k++) {
            const uint8_t *src = d.pixels + (size_t)(40 * b + k) * (size_t)(h * w * ch);
            const float *out = e.images[b] + (size_t)k * (size_t)(h * w * ch);
            int state = flip_state(&d, src, out, h, w, ch);
            flipped += state == 1;
            neither += state < 0;
        }
    CHECK(neither == 0);
    CHECKF(flipped > 150 && flipped < 250, "%d of 400 flipped", flipped);
    epoch_free(&e);

    c = loader_config(40, false, 2, false, 3);
    run_epoch(&d, &c, 0, 0, &e);
    int shifts[5][5] = {{0}};
    neither = 0;
    for (int b = 0; b < e.batches; b++)
        for (int k = 0; k < e.samples[b]; k++) {
            const uint8_t *src = d.pixels + (size_t)(40 * b + k) * (size_t)(h * w * ch);
            const float *out = e.images[b] + (size_t)k * (size_t)(h * w * ch);
            int matches = 0;
            for (int dy = -2; dy <= 2; dy++)
                for (int dx = -2; dx <= 2; dx++) {
                    bool match = true;
                    for (int y = 0; y < h; y++)
                        for (int x = 0; x < w; x++)
                            for (int q = 0; q < ch; q++) {
                                int sy = y + dy, sx = x + dx;
                                int raw = sy >= 0 && sy < h && sx >= 0 && sx < w ? src[(sy * w + sx) * ch + q] : 0;
                                float expected = (raw / 255.0f - d.mean[q]) / d.std[q];
                                match = match && fabsf(out[(y * w + x) * ch + q] - expected) < 1e-5f;
                            }
                    if (match) {
                        shifts[dy + 2][dx + 2]++;
                        matches++;
                    }
                }
            neither += matches != 1;
        }
    CHECK(neither == 0);
    for (int i = 0; i < 25; i++) CHECKF(shifts[i / 5][i % 5] > 0, "shift (%d, %d) never drawn", i / 5 - 2, i % 5 - 2);
    epoch_free(&e);
    plait_dataset_free(&d);
}

/* Cutout alone: every output is the source with one square (clipped at the border, never smaller than
 * half its side each way) set to 0, the normalized mean; centers cover the image; bad sizes refused. */
static void loader_cutout_cuts_one_square(void) {
    const int h = 7, w = 9, ch = 3, side = 4;
    plait_dataset d = synthetic(300, h, w, ch, 4, false);
    plait_loader_config c = loader_config(50, false, 0, false, 9);
    c.augment.cutout = side;
    epoch_batches e;
    run_epoch(&d, &c, 0, 0, &e);
    int bad = 0, corner_cut = 0, center_cut = 0;
    for (int b = 0; b < e.batches; b++)
        for (int k = 0; k < e.samples[b]; k++) {
            const uint8_t *src = d.pixels + (size_t)(50 * b + k) * (size_t)(h * w * ch);
            const float *out = e.images[b] + (size_t)k * (size_t)(h * w * ch);
            int y0 = h, y1 = -1, x0 = w, x1 = -1, cut = 0;
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    int zeros = 0;
                    for (int q = 0; q < ch; q++) {
                        float v = out[(y * w + x) * ch + q];
                        float plain = (src[(y * w + x) * ch + q] / 255.0f - d.mean[q]) / d.std[q];
                        zeros += v == 0.0f;
                        bad += v != 0.0f && fabsf(v - plain) > 1e-5f;
                    }
                    bad += zeros != 0 && zeros != ch;
                    if (zeros == ch) {
                        cut++;
                        y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1, x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1;
                    }
                }
            int rows = y1 - y0 + 1, cols = x1 - x0 + 1;
            bad += cut != rows * cols || rows < side / 2 || rows > side || cols < side / 2 || cols > side;
            corner_cut += y0 == 0 && x0 == 0;
            center_cut += rows == side && cols == side;
        }
    CHECKF(bad == 0, "%d samples or values are not one clean square", bad);
    CHECK(corner_cut > 0 && center_cut > 0);
    epoch_free(&e);
    plait_loader *l;
    c.augment.cutout = 8;
    CHECK(plait_loader_create(&d, &c, &l) == PLAIT_ERROR);
    CHECK(error_mentions("cutout 8", "[0, 7]"));
    plait_dataset_free(&d);
}

/* Alternating flip: an image seen flipped in one epoch is seen unflipped in the next, and about half
 * the images start flipped. */
static void loader_alternating_flip_alternates(void) {
    const int h = 5, w = 7, ch = 3, n = 200;
    plait_dataset d = synthetic(n, h, w, ch, 4, false);
    plait_loader_config c = loader_config(50, false, 0, true, 3);
    c.augment.flip_alternate = true;
    epoch_batches e[3];
    for (int epoch = 0; epoch < 3; epoch++) run_epoch(&d, &c, epoch, 0, &e[epoch]);
    int flipped_first = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *src = d.pixels + (size_t)i * (size_t)(h * w * ch);
        bool flipped[3];
        for (int epoch = 0; epoch < 3; epoch++) {
            const float *out = e[epoch].images[i / 50] + (size_t)(i % 50) * (size_t)(h * w * ch);
            int state = flip_state(&d, src, out, h, w, ch);
            bad += state < 0;
            flipped[epoch] = state == 1;
        }
        bad += flipped[0] == flipped[1] || flipped[0] != flipped[2];
        flipped_first += flipped[0];
    }
    CHECKF(bad == 0, "%d images not flipped in alternate epochs", bad);
    CHECKF(flipped_first > n / 4 && flipped_first < 3 * n / 4, "%d of %d flipped in the first epoch", flipped_first, n);
    for (int epoch = 0; epoch < 3; epoch++) epoch_free(&e[epoch]);
    plait_dataset_free(&d);
}

/* Crops and cutout stop from crop_until_epoch on: before it most images come out shifted (or cut), from it
 * every image is itself or its mirror, and the flip still varies. A negative epoch is refused. */
static void loader_crop_stops_at_epoch(void) {
    const int h = 6, w = 7, ch = 3, n = 120;
    plait_dataset d = synthetic(n, h, w, ch, 4, false);
    plait_loader_config c = loader_config(40, false, 2, true, 5);
    c.augment.cutout = 3;
    c.augment.crop_until_epoch = 2;
    epoch_batches e[3];
    for (int epoch = 1; epoch < 4; epoch++) run_epoch(&d, &c, epoch, 0, &e[epoch - 1]);
    int changed_before = 0, changed_after = 0, flipped_after = 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *src = d.pixels + (size_t)i * (size_t)(h * w * ch);
        for (int k = 0; k < 3; k++) {
            const float *out = e[k].images[i / 40] + (size_t)(i % 40) * (size_t)(h * w * ch);
            int state = flip_state(&d, src, out, h, w, ch);
            if (k == 0) changed_before += state < 0;
            else changed_after += state < 0, flipped_after += state == 1;
        }
    }
    CHECKF(changed_before > n / 2, "only %d of %d images cropped or cut before the epoch", changed_before, n);
    CHECKF(changed_after == 0, "%d images cropped or cut from the epoch on", changed_after);
    CHECKF(flipped_after > n / 2 && flipped_after < 3 * n / 2, "%d of %d flipped over two epochs", flipped_after, 2 * n);
    for (int k = 0; k < 3; k++) epoch_free(&e[k]);
    plait_loader *l;
    c.augment.crop_until_epoch = -1;
    CHECK(plait_loader_create(&d, &c, &l) == PLAIT_ERROR);
    CHECK(error_mentions("crop_until_epoch -1", NULL));
    plait_dataset_free(&d);
}

static void loader_stops_cleanly(void) {
    plait_dataset d = synthetic(300, 8, 8, 3, 10, false);
    plait_loader_config c = loader_config(4, true, 2, true, 1);
    plait_loader *l;
    CHECK(plait_loader_create(&d, &c, &l) == PLAIT_OK);
    plait_tensor images = {0};
    int32_t labels[4];
    CHECK(plait_loader_next(l, &images, labels) == PLAIT_ERROR);
    CHECK(error_mentions("before plait_loader_start_epoch", NULL));
    CHECK(plait_loader_start_epoch(l, 0, 76) == PLAIT_ERROR);
    CHECK(error_mentions("first batch 76", NULL));
    CHECK(plait_loader_start_epoch(l, 0, 0) == PLAIT_OK);
    CHECK(plait_loader_next(l, &images, labels) == 1);
    CHECK(plait_loader_start_epoch(l, 1, 10) == PLAIT_OK); /* abandons epoch 0 mid-way */
    CHECK(plait_loader_next(l, &images, labels) == 1);
    CHECK(plait_loader_start_epoch(l, 1, 75) == PLAIT_OK);
    CHECK(plait_loader_next(l, &images, labels) == 0);
    CHECK(plait_loader_start_epoch(l, 2, 0) == PLAIT_OK);
    plait_loader_free(l); /* mid-epoch, with the thread waiting for a free slot */
    CHECK(plait_loader_create(&d, &c, &l) == PLAIT_OK);
    plait_loader_free(l); /* never started */
    plait_tensor_free(&images);
    plait_dataset_free(&d);
}

int main(void) {
    testing_run("cifar10_binary_loads_planar_as_hwc", cifar10_binary_loads_planar_as_hwc);
    testing_run("cifar100_binary_uses_fine_labels", cifar100_binary_uses_fine_labels);
    testing_run("cifar_bad_files_give_clear_errors", cifar_bad_files_give_clear_errors);
    testing_run("idx_loads_images_and_labels", idx_loads_images_and_labels);
    testing_run("idx_bad_files_give_clear_errors", idx_bad_files_give_clear_errors);
    testing_run("jpeg_folder_orders_classes_and_files", jpeg_folder_orders_classes_and_files);
    testing_run("jpeg_resize_keeps_the_center", jpeg_resize_keeps_the_center);
    testing_run("jpeg_decode_ignores_thread_count", jpeg_decode_ignores_thread_count);
    testing_run("resize_preserves_flat_and_average", resize_preserves_flat_and_average);
    testing_run("cmyk_jpeg_becomes_rgb", cmyk_jpeg_becomes_rgb);
    testing_run("jpeg_bad_inputs_give_clear_errors", jpeg_bad_inputs_give_clear_errors);
    testing_run("split_is_per_class_and_seeded", split_is_per_class_and_seeded);
    testing_run("open_fashion_mnist_and_cifar_binary", open_fashion_mnist_and_cifar_binary);
    testing_run("open_image_folder_layouts", open_image_folder_layouts);
    testing_run("open_installed_fashion_mnist", open_installed_fashion_mnist);
    testing_run("loader_normalizes_in_file_order", loader_normalizes_in_file_order);
    testing_run("loader_shuffles_by_seed_and_epoch", loader_shuffles_by_seed_and_epoch);
    testing_run("loader_resumes_mid_epoch", loader_resumes_mid_epoch);
    testing_run("loader_shards_partition_each_batch", loader_shards_partition_each_batch);
    testing_run("loader_flip_mirrors_and_crop_shifts", loader_flip_mirrors_and_crop_shifts);
    testing_run("loader_cutout_cuts_one_square", loader_cutout_cuts_one_square);
    testing_run("loader_alternating_flip_alternates", loader_alternating_flip_alternates);
    testing_run("loader_crop_stops_at_epoch", loader_crop_stops_at_epoch);
    testing_run("loader_stops_cleanly", loader_stops_cleanly);
    return testing_finish();
}
