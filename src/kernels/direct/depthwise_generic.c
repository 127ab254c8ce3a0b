/* Depthwise rows and bands in plain C, for any taps, stride and channel range: the portable path, the
 * channels left over after the last full vector, and shapes the vector kernels do not specialize. The
 * innermost loops run over channels, so the compiler vectorizes them where it can. */
#include "kernels/direct/depthwise.h"

void dw_row_generic(const dw_rowjob *j, int c_begin, int c_end) {
    if (j->out_rows == 2) {
        dw_rowjob one = *j;
        one.out_rows = 1;
        dw_row_generic(&one, c_begin, c_end);
        one.in += j->SW * j->in_row;
        one.out += j->out_row;
        dw_row_generic(&one, c_begin, c_end);
        return;
    }
    for (int o = 0; o < j->out_w; o++) {
        float *restrict out = j->out + (ptrdiff_t)o * j->out_pixel;
        for (int c = c_begin; c < c_end; c++) out[c] = 0.0f;
        for (int r = 0; r < j->rows; r++)
            for (int s = 0; s < j->S; s++) {
                int i = o * j->SW - j->pad + s;
                if (i < 0 || i >= j->in_w) continue;
                const float *restrict in = j->in + r * j->in_row + (ptrdiff_t)i * j->in_pixel;
                const float *restrict wt = j->wt + r * j->wt_row + (ptrdiff_t)s * j->cpad;
                for (int c = c_begin; c < c_end; c++) out[c] += in[c] * wt[c];
            }
    }
}

void dw_band_generic(const dw_bandjob *j, int c_begin, int c_end) {
    if (j->images > 1) {
        dw_bandjob image = *j;
        image.images = 1;
        for (int n = 0; n < j->images; n++, image.x += j->x_image, image.dy += j->dy_image)
            dw_band_generic(&image, c_begin, c_end);
        return;
    }
    for (int oh = j->oh0; oh < j->oh1; oh++)
        for (int r = 0; r < j->R; r++) {
            int ih = oh * j->SH - j->pad_h + r;
            if (ih < 0 || ih >= j->H) continue;
            for (int ow = 0; ow < j->OW; ow++) {
                const float *restrict grad = j->dy + (ptrdiff_t)oh * j->dy_row + (ptrdiff_t)ow * j->dy_pixel;
                for (int s = 0; s < j->S; s++) {
                    int iw = ow * j->SW - j->pad_w + s;
                    if (iw < 0 || iw >= j->W) continue;
                    const float *restrict in = j->x + (ptrdiff_t)ih * j->x_row + (ptrdiff_t)iw * j->x_pixel;
                    float *restrict acc = j->acc + (ptrdiff_t)(r * j->S + s) * j->cpad;
                    for (int c = c_begin; c < c_end; c++) acc[c] += in[c] * grad[c];
                }
            }
        }
}
