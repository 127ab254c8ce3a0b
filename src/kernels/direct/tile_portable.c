/* Level-2 micro-kernels in portable C, for CPUs without AVX2: the same contracts as the vector ones
 * (direct.h), with the tile shape at run time. */
#include "kernels/direct/direct.h"

static void one_tile(const direct_tile *t, int vthreads, int tile_w, int tile_k) {
    float acc[DIRECT_MAX_VTHREADS * DIRECT_MAX_TILE_W][DIRECT_MAX_TILE_K * DIRECT_LANES];
    int lanes = (tile_k - 1) * DIRECT_LANES + t->last_lanes;
    for (int v = 0; v < vthreads; v++)
        for (int m = 0; m < tile_w; m++) {
            const float *yp = t->y + v * t->y_vthread + m * t->y_pixel;
            for (int l = 0; l < tile_k * DIRECT_LANES; l++) acc[v * tile_w + m][l] = t->accumulate && l < lanes ? yp[l] : 0.0f;
        }
    for (int r = 0; r < t->taps_h; r++)
        for (int s = 0; s < t->taps_w; s++) {
            const float *xp = t->x + r * t->x_tap_row + s * t->x_tap_col;
            const float *wp = t->w + r * t->w_tap_row + s * t->w_tap_col;
            for (int c = 0; c < t->channels; c++)
                for (int v = 0; v < vthreads; v++)
                    for (int m = 0; m < tile_w; m++) {
                        float b = xp[v * t->x_vthread + m * t->x_pixel + c];
                        float *a = acc[v * tile_w + m];
                        for (int j = 0; j < tile_k; j++) {
                            const float *wv = wp + j * t->w_kvec + DIRECT_LANES * c;
                            for (int l = 0; l < DIRECT_LANES; l++) a[j * DIRECT_LANES + l] += b * wv[l];
                        }
                    }
        }
    for (int v = 0; v < vthreads; v++)
        for (int m = 0; m < tile_w; m++) {
            float *yp = t->y + v * t->y_vthread + m * t->y_pixel;
            for (int l = 0; l < lanes; l++) yp[l] = acc[v * tile_w + m][l];
            for (int z = 0; z < t->zeros; z++)
                for (int l = 0; l < lanes; l++) yp[t->zero_offset[z] + l] = 0.0f;
        }
}

void direct_tile_portable(const direct_tile *t, int vthreads, int tile_w, int tile_k) {
    direct_tile u = *t;
    for (int i = 0; i < (t->tiles > 1 ? t->tiles : 1); i++) {
        one_tile(&u, vthreads, tile_w, tile_k);
        u.x += tile_w * u.x_pixel;
        u.y += tile_w * u.y_pixel;
    }
}
