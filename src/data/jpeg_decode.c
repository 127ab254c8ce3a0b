#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <jerror.h>

#include "data/data_internal.h"

bool jpeg_has_magic(const uint8_t *bytes, size_t size) {
    return size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF;
}

uint8_t *file_read_all(const char *path, size_t *size, char *error, size_t error_size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(error, error_size, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(error, error_size, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    size_t bytes = (size_t)st.st_size;
    uint8_t *buffer = malloc(bytes + 1);
    if (!buffer) {
        snprintf(error, error_size, "out of memory reading %s (%zu bytes)", path, bytes);
        close(fd);
        return NULL;
    }
    size_t got = 0;
    while (got < bytes) {
        ssize_t n = read(fd, buffer + got, bytes - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            snprintf(error, error_size, "cannot read %s: %s", path, n < 0 ? strerror(errno) : "file shrank");
            free(buffer);
            close(fd);
            return NULL;
        }
        got += (size_t)n;
    }
    close(fd);
    *size = bytes;
    return buffer;
}

/* libjpeg calls error_exit on fatal errors and would exit(); we jump back to the decoder instead. */
typedef struct jpeg_failure {
    struct jpeg_error_mgr manager;
    jmp_buf resume;
    char message[JMSG_LENGTH_MAX];
} jpeg_failure;

static void jpeg_on_error(j_common_ptr cinfo) {
    jpeg_failure *failure = (jpeg_failure *)cinfo->err;
    cinfo->err->format_message(cinfo, failure->message);
    longjmp(failure->resume, 1);
}

/* Warnings about damaged entropy data mean the pixels are partly invented (libjpeg fills gray), so
 * they fail the image; harmless warnings (extra bytes between markers, odd JFIF versions) do not. */
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level != -1) return;
    int code = cinfo->err->msg_code;
    if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_HUFF_BAD_CODE ||
        code == JWRN_ARITH_BAD_CODE || code == JWRN_MUST_RESYNC)
        jpeg_on_error(cinfo);
}

/* Adobe writes CMYK inverted (0 = full ink); plain CMYK stores ink amounts. */
static void cmyk_to_rgb(uint8_t *pixels, size_t count, bool inverted) {
    for (size_t i = 0; i < count; i++) {
        const uint8_t *in = pixels + 4 * i;
        int k = inverted ? in[3] : 255 - in[3];
        uint8_t rgb[3];
        for (int c = 0; c < 3; c++) {
            int v = inverted ? in[c] : 255 - in[c];
            rgb[c] = (uint8_t)((v * k + 127) / 255);
        }
        memcpy(pixels + 3 * i, rgb, 3);
    }
}

int jpeg_decode_rgb(const char *path, const uint8_t *bytes, size_t size_bytes, int size, int expect_height,
                    int expect_width, uint8_t *out, int *height, int *width, char *error, size_t error_size) {
    struct jpeg_decompress_struct cinfo;
    jpeg_failure failure;
    uint8_t *volatile decoded = NULL;
    cinfo.err = jpeg_std_error(&failure.manager);
    failure.manager.error_exit = jpeg_on_error;
    failure.manager.emit_message = jpeg_on_message;
    if (setjmp(failure.resume)) {
        snprintf(error, error_size, "corrupt JPEG %s: %s", path, failure.message);
        jpeg_destroy_decompress(&cinfo);
        free(decoded);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, bytes, (unsigned long)size_bytes);
    jpeg_read_header(&cinfo, TRUE);
    bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    if (!cmyk && cinfo.num_components != 1 && cinfo.num_components != 3) {
        snprintf(error, error_size, "unsupported JPEG %s: %d color components", path, cinfo.num_components);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    cinfo.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    if (size > 0) {
        /* Let the DCT shrink big images by 2, 4 or 8 while the shorter side stays >= size: several
         * times faster, and as good as averaging pixel blocks before the final resampling. */
        unsigned shorter = cinfo.image_width < cinfo.image_height ? cinfo.image_width : cinfo.image_height;
        for (unsigned denom = 8; denom >= 2; denom /= 2) {
            if ((shorter + denom - 1) / denom >= (unsigned)size) {
                cinfo.scale_num = 1;
                cinfo.scale_denom = denom;
                break;
            }
        }
    }
    jpeg_calc_output_dimensions(&cinfo);
    int h = (int)cinfo.output_height, w = (int)cinfo.output_width, components = cinfo.output_components;
    if (size == 0) {
        if ((expect_height && h != expect_height) || (expect_width && w != expect_width)) {
            snprintf(error, error_size,
                     "image %s is %dx%d (width x height), not %dx%d like the others; give an image size to resize",
                     path, w, h, expect_width, expect_height);
            jpeg_destroy_decompress(&cinfo);
            return -1;
        }
        if (height) *height = h;
        if (width) *width = w;
        if (!out) {
            jpeg_destroy_decompress(&cinfo);
            return 0;
        }
    }
    bool direct = size == 0 && !cmyk;
    if (!direct) {
        decoded = malloc((size_t)h * (size_t)w * (size_t)components);
        if (!decoded) {
            snprintf(error, error_size, "out of memory decoding %s (%dx%d)", path, w, h);
            jpeg_destroy_decompress(&cinfo);
            return -1;
        }
    }
    uint8_t *target = direct ? out : decoded;
    jpeg_start_decompress(&cinfo);
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = target + (size_t)cinfo.output_scanline * (size_t)w * (size_t)components;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    bool inverted = cinfo.saw_Adobe_marker;
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (cmyk) cmyk_to_rgb(decoded, (size_t)h * (size_t)w, inverted);
    int status = 0;
    if (size > 0) {
        if (image_resize_center_crop(decoded, h, w, size, out) != 0) {
            snprintf(error, error_size, "out of memory resizing %s", path);
            status = -1;
        }
    } else if (!direct) {
        memcpy(out, decoded, (size_t)h * (size_t)w * 3);
    }
    free(decoded);
    return status;
}
