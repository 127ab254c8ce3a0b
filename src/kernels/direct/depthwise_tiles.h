/* Depthwise micro-kernels, written once over a vector type and included by one file per instruction set,
 * which defines first:
 *   DW_VEC, DW_LANES, DW_LOAD(p), DW_STORE(p, v), DW_STREAM(p, v) (64-byte aligned), DW_FMA(a, b, c) = a*b + c,
 *   DW_ZERO(), DW_ADD(a, b), DW_NAME(name) (appends the ISA), DW_TILE_A, DW_TILE_B (output pixels per
 *   forward tile: the schedule picks one), DW_NARROW (stride-1 rows of at most this many pixels, stride-2 rows
 *   of this many outputs or dy pixels run as one tile; 0 = never), DW_WTILE_3, DW_WTILE_5 (pixels per
 *   backward-weights tile), DW_WSETS_3, DW_WVEC_3, DW_WROWS_3 (copies of the 3x3 tap sums, channel vectors and
 *   output rows per tile), DW_S2_TILE, DW_S2_VECTORS (dy pixels per stride-2 backward-data tile, channel vectors
 *   per single-pixel one), DW_WFOLD (1: backward-weights tiles of at most 2 pixels leave GCC free to read x inside the
 *   multiply-adds, each vector then loaded up to 4 times instead of once).
 * Every loop bound below is a compile-time constant after inlining, so the sums live in registers.
 * Vectors run over channels (contiguous in NHWC); a tile is `T` output pixels along W x one channel vector:
 * the input vectors of one tap row are loaded once and feed every pixel and tap that uses them
 * ((T-1)*SW + S loads for T*S multiply-adds). Tiles whose taps reach outside the image ("checked") load
 * zeros there; the others have no tests at all. */
#include "kernels/direct/depthwise.h"

#define DW_INLINE static inline __attribute__((always_inline))
/* Pins a loaded vector in a register: otherwise GCC folds the load into every multiply-add that uses it,
 * reading each input vector S times instead of once. */
#define DW_KEEP(v) __asm__("" : "+v"(v))
/* The same for a pointer stepped a pixel at a time: otherwise GCC keeps every pixel's offset k * pixel in its own
 * register, runs out of them and reloads the offsets from the stack, taking load slots from the vectors. */
#define DW_KEEP_POINTER(p) __asm__("" : "+r"(p))

/* The output range whose taps all fall inside [0, in_w) along W. */
DW_INLINE void DW_NAME(interior)(int pad, int S, int SW, int in_w, int out_w, int *lo, int *hi) {
    int first = (pad + SW - 1) / SW;
    int last = in_w - S + pad >= 0 ? (in_w - S + pad) / SW + 1 : 0;
    if (last > out_w) last = out_w;
    if (first > last) first = last;
    *lo = first;
    *hi = last;
}

/* How a tile meets the ends of its row: DW_UNCHECKED tiles lie inside; DW_CHECKED ones test each column at run
 * time and load zeros outside. At stride 1 with padding (S-1)/2 the outside columns are known at compile time and
 * skipped, loads and multiply-adds alike: DW_LEFT tiles start the row, DW_RIGHT ones end it (in_w == out_w),
 * DW_EXACT ones are the whole row (a 7-pixel row of 3 taps spends 2 of its 21 per tap row outside). */
enum { DW_UNCHECKED = 0, DW_CHECKED = 1, DW_LEFT = 2, DW_RIGHT = 4, DW_EXACT = DW_LEFT | DW_RIGHT };
DW_INLINE bool DW_NAME(column_skipped)(int k, int S, int T, int checked) {
    return ((checked & DW_LEFT) && k < (S - 1) / 2) || ((checked & DW_RIGHT) && k >= T + (S - 1) / 2);
}

/* Stride-1 rows of 3 taps with padding 1 and as many outputs as inputs, wider than one tile: they start with a
 * DW_LEFT tile of T pixels and end with a DW_RIGHT one, the only tiles that meet the row's ends. */
DW_INLINE bool DW_NAME(edge_row)(int S, int SW, int pad, int in_w, int out_w, int T) {
    return S == 3 && SW == 1 && pad == 1 && in_w == out_w && out_w > T;
}

/* Stride-2 rows of 3 taps with padding 1 over an even number of inputs meet only their left end: a DW_LEFT tile
 * of T pixels starts them (column 0 of a tile from pixel 0 is the only outside one). In-process A/B, batch 8,
 * Zen 4: forward 28x28x192 s2 1.08x on one thread and two, backward-weights 14x14x576 s2 1.05x; on jobs that
 * pull their next rows into L2 (112x112x96 s2) it ran 0.93-0.97x, so those keep single-pixel checked tiles. */
DW_INLINE bool DW_NAME(left_row)(int S, int SW, int pad, int in_w, int out_w, int T) {
    return S == 3 && SW == 2 && pad == 1 && in_w % 2 == 0 && out_w == in_w / 2 && out_w >= T;
}

/* Rows that are one tile of T pixels with their outside columns known at compile time: stride 1 over as many
 * inputs as outputs with padding (S-1)/2 (a DW_EXACT tile), and stride 2 over twice as many inputs (left_row: a
 * DW_LEFT tile, DW_NARROW outputs). */
DW_INLINE bool DW_NAME(exact_row)(int S, int SW, int pad, int in_w, int out_w, int T) {
    return T > 0 && SW == 1 && in_w == T && out_w == T && 2 * pad + 1 == S;
}
DW_INLINE bool DW_NAME(narrow_left_row)(int S, int SW, int pad, int in_w, int out_w) {
    return DW_NARROW > 0 && out_w == DW_NARROW && DW_NAME(left_row)(S, SW, pad, in_w, out_w, DW_NARROW);
}

/* An output vector, streamed past the caches where the job says so (every stored vector is a whole aligned line
 * then: border tiles too, which had kept plain stores, 1.16-1.26x on one thread for the streamed 56x56x144 and
 * 112x112x32 rows, stop 36). */
DW_INLINE void DW_NAME(put)(float *p, DW_VEC v, bool stream) {
    if (stream)
        DW_STREAM(p, v);
    else
        DW_STORE(p, v);
}

/* ---- forward-type rows ---- */

/* T pixels from o0 (the first t of them when checked) of one output row x V channel vectors from c: V > 1
 * gives small tiles enough independent sums to hide the multiply-add latency. */
DW_INLINE void DW_NAME(row_tile1)(const dw_rowjob *j, int o0, int t, int c, const int S, const int SW, const int T,
                                 const int V, const int checked) {
    DW_VEC acc[4][16];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++)
#pragma GCC unroll 16
        for (int m = 0; m < T; m++) acc[v][m] = DW_ZERO();
    const int K = (T - 1) * SW + S, i0 = o0 * SW - j->pad;
    for (int r = 0; r < j->rows; r++) {
        const float *in = j->in + r * j->in_row + c + (ptrdiff_t)i0 * j->in_pixel;
        const float *wt = j->wt + r * j->wt_row + c;
        DW_VEC w[4][5];
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
#pragma GCC unroll 5
            for (int s = 0; s < S; s++) w[v][s] = DW_LOAD(wt + (ptrdiff_t)s * j->cpad + v * DW_LANES);
#pragma GCC unroll 40
        for (int k = 0; k < K; k++) {
            int i = i0 + k;
            bool inside = checked != DW_CHECKED || (i >= 0 && i < j->in_w);
            if (DW_NAME(column_skipped)(k, S, T, checked)) {
                in += j->in_pixel;
                continue;
            }
#pragma GCC unroll 4
            for (int v = 0; v < V; v++) {
                DW_VEC xv = inside ? DW_LOAD(in + v * DW_LANES) : DW_ZERO();
                DW_KEEP(xv);
#pragma GCC unroll 5
                for (int s = 0; s < S; s++) {
                    int d = k - s;
                    if (d >= 0 && d % SW == 0 && d / SW < T) acc[v][d / SW] = DW_FMA(xv, w[v][s], acc[v][d / SW]);
                }
            }
            in += j->in_pixel;
            DW_KEEP_POINTER(in);
        }
    }
    float *out = j->out + (ptrdiff_t)o0 * j->out_pixel + c;
#pragma GCC unroll 4
    for (int v = 0; v < V; v++)
#pragma GCC unroll 16
        for (int m = 0; m < T; m++)
            if (checked != DW_CHECKED || m < t)
                DW_NAME(put)(out + m * j->out_pixel + v * DW_LANES, acc[v][m], j->stream);
}

/* Input row q of a tile (relative to j->in) into the sums of its output rows m < M with FIRST <= m <= LAST,
 * which meet it through tap row r = q - m*SW. */
DW_INLINE void DW_NAME(row_input)(const dw_rowjob *j, DW_VEC acc[4][2][16], int q, int i0, int c, const int S,
                                  const int SW, const int T, const int V, const int M, const int FIRST,
                                  const int LAST, const int checked) {
    const float *in = j->in + q * j->in_row + c + (ptrdiff_t)i0 * j->in_pixel;
    const int end = LAST < M ? LAST + 1 : M;
    DW_VEC w[4][2][5];
#pragma GCC unroll 2
    for (int m = FIRST; m < end; m++) {
        const float *wt = j->wt + (q - m * SW) * j->wt_row + c;
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
#pragma GCC unroll 5
            for (int s = 0; s < S; s++) w[v][m][s] = DW_LOAD(wt + (ptrdiff_t)s * j->cpad + v * DW_LANES);
    }
    const int K = (T - 1) * SW + S;
#pragma GCC unroll 40
    for (int k = 0; k < K; k++) {
        int i = i0 + k;
        bool inside = checked != DW_CHECKED || (i >= 0 && i < j->in_w);
        if (DW_NAME(column_skipped)(k, S, T, checked)) {
            in += j->in_pixel;
            continue;
        }
#pragma GCC unroll 4
        for (int v = 0; v < V; v++) {
            DW_VEC xv = inside ? DW_LOAD(in + v * DW_LANES) : DW_ZERO();
            DW_KEEP(xv);
#pragma GCC unroll 2
            for (int m = FIRST; m < end; m++)
#pragma GCC unroll 5
                for (int s = 0; s < S; s++) {
                    int d = k - s;
                    if (d >= 0 && d % SW == 0 && d / SW < T)
                        acc[v][m][d / SW] = DW_FMA(xv, w[v][m][s], acc[v][m][d / SW]);
                }
        }
        in += j->in_pixel;
        DW_KEEP_POINTER(in);
    }
}

/* The same on two output rows (SW input rows apart, all j->rows tap rows inside for both): the input rows
 * they share are read once. */
DW_INLINE void DW_NAME(row_tile2)(const dw_rowjob *j, int o0, int t, int c, const int S, const int SW, const int T,
                                  const int V, const int checked) {
    const int M = 2;
    DW_VEC acc[4][2][16];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++)
#pragma GCC unroll 2
        for (int m = 0; m < M; m++)
#pragma GCC unroll 16
            for (int p = 0; p < T; p++) acc[v][m][p] = DW_ZERO();
    const int i0 = o0 * SW - j->pad, rows = j->rows;
    int q = 0;
    for (; q < SW && q < rows; q++) DW_NAME(row_input)(j, acc, q, i0, c, S, SW, T, V, M, 0, 0, checked);
    for (; q < rows; q++) DW_NAME(row_input)(j, acc, q, i0, c, S, SW, T, V, M, 0, 1, checked);
    for (; q < rows + SW; q++) DW_NAME(row_input)(j, acc, q, i0, c, S, SW, T, V, M, 1, 1, checked);
#pragma GCC unroll 2
    for (int m = 0; m < M; m++) {
        float *out = j->out + m * j->out_row + (ptrdiff_t)o0 * j->out_pixel + c;
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
#pragma GCC unroll 16
            for (int p = 0; p < T; p++)
                if (checked != DW_CHECKED || p < t)
                    DW_NAME(put)(out + p * j->out_pixel + v * DW_LANES, acc[v][m][p], j->stream);
    }
}

/* Input pixels [p0, p0 + T*SW) (clipped to the row) of the next job's rows into L2, channels [c_begin, c_end). */
DW_INLINE void DW_NAME(prefetch_pixels)(const dw_rowjob *j, int p0, int c_begin, int c_end, const int SW,
                                        const int T) {
    int p1 = p0 + T * SW;
    if (j->prefetch_near && p0 >= 0 && p1 <= j->in_w && j->prefetch_rows == SW) {
        /* a tile inside the row: constant counts, unrolled (see dw_rowjob.prefetch_near) */
        const float *in = j->prefetch + (ptrdiff_t)p0 * j->in_pixel;
        for (int c = c_begin; c < c_end; c += 16)
#pragma GCC unroll 2
            for (int r = 0; r < SW; r++)
#pragma GCC unroll 16
                for (int i = 0; i < T * SW; i++)
                    __builtin_prefetch(in + r * j->prefetch_row + (ptrdiff_t)i * j->in_pixel + c, 0, 2);
        return;
    }
    p0 = p0 < 0 ? 0 : p0;
    p1 = p1 > j->in_w ? j->in_w : p1;
    for (int r = 0; r < j->prefetch_rows; r++)
        for (int i = p0; i < p1; i++)
            for (int c = c_begin; c < c_end; c += 16)
                __builtin_prefetch(j->prefetch + r * j->prefetch_row + (ptrdiff_t)i * j->in_pixel + c, 0, 2);
}

/* Tiles of T pixels from o (the first t of them stored when checked) over channels [c_begin, c_end). */
DW_INLINE void DW_NAME(row_tiles)(const dw_rowjob *j, int o, int t, int c_begin, int c_end, const int S,
                                  const int SW, const int T, const int M, const int checked) {
    const int V = M == 2 ? (T <= 2 && DW_LANES == 16 ? 2 : 1) : T <= 2 ? 4 : T <= 4 ? 2 : 1;
    if (j->prefetch) DW_NAME(prefetch_pixels)(j, o * SW - j->pad, c_begin, c_end, SW, T);
    int c = c_begin;
    if (M == 2) {
        for (; c + V * DW_LANES <= c_end; c += V * DW_LANES) DW_NAME(row_tile2)(j, o, t, c, S, SW, T, V, checked);
        for (; c < c_end; c += DW_LANES) DW_NAME(row_tile2)(j, o, t, c, S, SW, T, 1, checked);
        return;
    }
    for (; c + V * DW_LANES <= c_end; c += V * DW_LANES) DW_NAME(row_tile1)(j, o, t, c, S, SW, T, V, checked);
    for (; c < c_end; c += DW_LANES) DW_NAME(row_tile1)(j, o, t, c, S, SW, T, 1, checked);
}

/* Edge tiles where the row allows (edge_row, left_row), else border pixels one at a time (checked); the interior
 * in tiles of T and then 8, 4, 2, 1 (unchecked). Within a block of channels, pixel tiles outside channel vectors,
 * so input rows are read front to back. */
DW_INLINE void DW_NAME(row_body)(const dw_rowjob *j, int c_begin, int c_end, const int S, const int SW, const int T,
                                 const int M) {
    int lo, hi;
    DW_NAME(interior)(j->pad, S, SW, j->in_w, j->out_w, &lo, &hi);
    const int block = j->cblock > 0 ? j->cblock : c_end - c_begin;
    for (int cb = c_begin; cb < c_end; cb += block) {
        int ce = c_end - cb < block ? c_end : cb + block, o = 0;
        if (DW_NARROW > 0 && SW == 1 && S >= 3 && j->out_w <= DW_NARROW) {
            /* a row of at most DW_NARROW pixels as one checked tile, borders included (MobileNet's 7x7 layers:
             * Zen 4, batch 8, in-process A/B, 7x7x960 forward 1.28x, backward-data 1.25x on one thread, 1.14x on
             * two); on 14-pixel rows two such tiles ran level, on stride 2 and backward-data phase rows 0.89-0.95x */
            if (DW_NAME(exact_row)(S, SW, j->pad, j->in_w, j->out_w, DW_NARROW))
                DW_NAME(row_tiles)(j, 0, DW_NARROW, cb, ce, S, SW, DW_NARROW, M, DW_EXACT);
            else
                DW_NAME(row_tiles)(j, 0, j->out_w, cb, ce, S, SW, DW_NARROW, M, DW_CHECKED);
            continue;
        }
        /* a stride-1 row exactly one tile wide (MobileNet's 14x14 layers under 14-pixel tiles) as one DW_EXACT
         * tile, against tiles of 1, 8, 4 and 1 pixels: 14x14x576 forward 1.23x, backward-data 1.24x (Zen 4, one
         * thread, batch 8) */
        if (DW_NAME(exact_row)(S, SW, j->pad, j->in_w, j->out_w, T)) {
            DW_NAME(row_tiles)(j, 0, T, cb, ce, S, SW, T, M, DW_EXACT);
            continue;
        }
        /* a stride-2 row of DW_NARROW outputs from twice as many inputs (MobileNet's 14x14 s2 layer) as one left
         * tile, against tiles of 1, 4 and 2 pixels: 14x14x576 s2 1.14x on one thread, 1.09x on two (Zen 4) */
        if (DW_NAME(narrow_left_row)(S, SW, j->pad, j->in_w, j->out_w)) {
            DW_NAME(row_tiles)(j, 0, DW_NARROW, cb, ce, S, SW, DW_NARROW, M, DW_LEFT);
            continue;
        }
        if (DW_NAME(edge_row)(S, SW, j->pad, j->in_w, j->out_w, T)) {
            DW_NAME(row_tiles)(j, 0, T, cb, ce, S, SW, T, M, DW_LEFT);
            for (o = T; o + T < j->out_w; o += T) DW_NAME(row_tiles)(j, o, T, cb, ce, S, SW, T, M, DW_UNCHECKED);
#define DW_ROW_TAIL(size)                                                                                          \
    if ((size) <= T && o + (size) <= j->out_w) {                                                                   \
        if (o + (size) == j->out_w)                                                                                \
            DW_NAME(row_tiles)(j, o, size, cb, ce, S, SW, size, M, DW_RIGHT);                                      \
        else                                                                                                       \
            DW_NAME(row_tiles)(j, o, size, cb, ce, S, SW, size, M, DW_UNCHECKED);                                  \
        o += (size);                                                                                               \
    }
            /* what is left, 1 to T pixels: T itself, or 8, 4, 2, 1 pixels, the last tile ending the row */
            DW_ROW_TAIL(T) DW_ROW_TAIL(8) DW_ROW_TAIL(4) DW_ROW_TAIL(2) DW_ROW_TAIL(1)
#undef DW_ROW_TAIL
            continue;
        }
        if (!j->prefetch && DW_NAME(left_row)(S, SW, j->pad, j->in_w, j->out_w, T)) {
            DW_NAME(row_tiles)(j, 0, T, cb, ce, S, SW, T, M, DW_LEFT);
            o = T;
        }
        for (; o < lo; o++) DW_NAME(row_tiles)(j, o, 1, cb, ce, S, SW, 1, M, DW_CHECKED);
        for (; o + T <= hi; o += T) DW_NAME(row_tiles)(j, o, T, cb, ce, S, SW, T, M, DW_UNCHECKED);
        if (T > 8 && o + 8 <= hi) DW_NAME(row_tiles)(j, o, 8, cb, ce, S, SW, 8, M, DW_UNCHECKED), o += 8;
        if (T > 4 && o + 4 <= hi) DW_NAME(row_tiles)(j, o, 4, cb, ce, S, SW, 4, M, DW_UNCHECKED), o += 4;
        if (T > 2 && o + 2 <= hi) DW_NAME(row_tiles)(j, o, 2, cb, ce, S, SW, 2, M, DW_UNCHECKED), o += 2;
        if (T > 1 && o + 1 <= hi) DW_NAME(row_tiles)(j, o, 1, cb, ce, S, SW, 1, M, DW_UNCHECKED), o += 1;
        for (; o < j->out_w; o++) DW_NAME(row_tiles)(j, o, 1, cb, ce, S, SW, 1, M, DW_CHECKED);
    }
}

#define DW_ROW(S, SW)                                                                                  \
    static void DW_NAME(row_##S##_##SW)(const dw_rowjob *j, int c_begin, int c_end) {                  \
        if (j->out_rows == 2)                                                                          \
            DW_NAME(row_body)(j, c_begin, c_end, S, SW, DW_TILE_2, 2);                                 \
        else if (j->tile <= DW_TILE_A)                                                                 \
            DW_NAME(row_body)(j, c_begin, c_end, S, SW, DW_TILE_A, 1);                                 \
        else                                                                                           \
            DW_NAME(row_body)(j, c_begin, c_end, S, SW, DW_TILE_B, 1);                                 \
    }
DW_ROW(1, 1) DW_ROW(2, 1) DW_ROW(3, 1) DW_ROW(4, 1) DW_ROW(5, 1)
DW_ROW(1, 2) DW_ROW(2, 2) DW_ROW(3, 2) DW_ROW(4, 2) DW_ROW(5, 2)

void DW_NAME(dw_row_tiles)(int tiles[2]) {
    tiles[0] = DW_TILE_A;
    tiles[1] = DW_TILE_B;
}

dw_row_fn DW_NAME(dw_row)(int S, int SW) {
    static const dw_row_fn table[2][5] = {
        {DW_NAME(row_1_1), DW_NAME(row_2_1), DW_NAME(row_3_1), DW_NAME(row_4_1), DW_NAME(row_5_1)},
        {DW_NAME(row_1_2), DW_NAME(row_2_2), DW_NAME(row_3_2), DW_NAME(row_4_2), DW_NAME(row_5_2)},
    };
    return S >= 1 && S <= 5 && SW >= 1 && SW <= 2 ? table[SW - 1][S - 1] : NULL;
}

/* ---- backward-data rows of 3-tap stride-2 layers with padding 1 (dw_row_s2) ----
 * A tile is T dy pixels from t0 x V channel vectors, giving the 2T dx pixels from 2*t0: each dy vector is
 * loaded once per tap row and feeds three sums, and the stores run over contiguous pixels. Where the two
 * phases run apart (the general path), each dx row is stored in two sweeps over every other pixel and dy is
 * read twice. A tile that ends the row (`end`) has no right neighbour: that column is skipped at compile time, and
 * its last dx pixel is stored only inside out_w (odd widths). */
DW_INLINE void DW_NAME(s2_tile)(const dw_rowjob *j, int t0, int c, const int T, const int V, const bool end) {
    DW_VEC acc[4][16];
#pragma GCC unroll 4
    for (int v = 0; v < V; v++)
#pragma GCC unroll 16
        for (int m = 0; m < 2 * T; m++) acc[v][m] = DW_ZERO();
    for (int r = 0; r < j->rows; r++) {
        const float *in = j->in + r * j->in_row + c + (ptrdiff_t)t0 * j->in_pixel;
        const float *wt = j->wt + r * j->wt_row + c;
        DW_VEC w[4][3];
#pragma GCC unroll 4
        for (int v = 0; v < V; v++)
#pragma GCC unroll 3
            for (int s = 0; s < 3; s++) w[v][s] = DW_LOAD(wt + (ptrdiff_t)s * j->cpad + v * DW_LANES);
#pragma GCC unroll 17
        for (int k = 0; k <= T - end; k++) {
#pragma GCC unroll 4
            for (int v = 0; v < V; v++) {
                DW_VEC xv = DW_LOAD(in + v * DW_LANES);
                DW_KEEP(xv);
                if (k < T) {
                    acc[v][2 * k] = DW_FMA(xv, w[v][1], acc[v][2 * k]);
                    acc[v][2 * k + 1] = DW_FMA(xv, w[v][2], acc[v][2 * k + 1]);
                }
                if (k > 0) acc[v][2 * k - 1] = DW_FMA(xv, w[v][0], acc[v][2 * k - 1]);
            }
            in += j->in_pixel;
            DW_KEEP_POINTER(in);
        }
    }
    float *out = j->out + (ptrdiff_t)2 * t0 * j->out_pixel + c;
#pragma GCC unroll 4
    for (int v = 0; v < V; v++)
#pragma GCC unroll 16
        for (int m = 0; m < 2 * T; m++) {
            if (end && m == 2 * T - 1 && 2 * t0 + m >= j->out_w) break;
            DW_NAME(put)(out + m * j->out_pixel + v * DW_LANES, acc[v][m], j->stream);
        }
}

DW_INLINE void DW_NAME(s2_tiles)(const dw_rowjob *j, int t0, int c_begin, int c_end, const int T, const int V,
                                 const bool end) {
    if (j->prefetch) DW_NAME(prefetch_pixels)(j, t0, c_begin, c_end, 1, T);
    int c = c_begin;
    for (; c + V * DW_LANES <= c_end; c += V * DW_LANES) DW_NAME(s2_tile)(j, t0, c, T, V, end);
    for (; c < c_end; c += DW_LANES) DW_NAME(s2_tile)(j, t0, c, T, 1, end);
}

/* Tiles of T dy pixels while their right neighbour is inside, then what is left (1 to T pixels) as T itself or 4,
 * 2, 1 pixels (several channel vectors each), the last tile ending the row: with the right end known at compile
 * time, 14x14x576 s2 1.08x and 28x28x192 s2 1.06-1.09x against a last single pixel tested at run time (Zen 4, one
 * and two threads); a row of DW_NARROW dy pixels is one tile (14x14x576 s2 1.16x / 1.22x more). Within a block of
 * channels, pixel tiles outside channel vectors. */
static void DW_NAME(row_s2)(const dw_rowjob *j, int c_begin, int c_end) {
    const int block = j->cblock > 0 ? j->cblock : c_end - c_begin, T = DW_S2_TILE;
    for (int cb = c_begin; cb < c_end; cb += block) {
        int ce = c_end - cb < block ? c_end : cb + block, t = 0;
        if (DW_NARROW > 0 && j->in_w == DW_NARROW) {
            DW_NAME(s2_tiles)(j, 0, cb, ce, DW_NARROW, 1, true);
            continue;
        }
        for (; t + T < j->in_w; t += T) DW_NAME(s2_tiles)(j, t, cb, ce, T, 1, false);
#define DW_S2_TAIL(size, V)                                                                                        \
    if ((size) <= T && t + (size) <= j->in_w) {                                                                    \
        if (t + (size) == j->in_w)                                                                                 \
            DW_NAME(s2_tiles)(j, t, cb, ce, size, V, true);                                                        \
        else                                                                                                       \
            DW_NAME(s2_tiles)(j, t, cb, ce, size, V, false);                                                       \
        t += (size);                                                                                               \
    }
        DW_S2_TAIL(T, 1) DW_S2_TAIL(4, 2) DW_S2_TAIL(2, 2) DW_S2_TAIL(1, DW_S2_VECTORS)
#undef DW_S2_TAIL
    }
}

dw_row_fn DW_NAME(dw_row_s2)(void) { return DW_NAME(row_s2); }

/* ---- backward-weights bands (band_body: channel vectors outside rows and pixels, so the R*S sums of one
 * vector stay in registers over the whole band while the band's rows of x and dy stay in L2) ----
 * A tile holds the gradient vectors of T pixels dy[ow..ow+T) on M output rows in registers; each input
 * vector of the (M-1)*SW + R rows they reach is loaded once and multiplied into every tap sum it meets (M
 * rows cut the loads of x by up to R/M per output row: x is read at a stride of C floats, one cache line a
 * pixel). The sums are independent chains, kept twice (alternating pixels) when there are few of them, so
 * the multiply-adds never wait on each other. M > 1 needs the same stride along H and W (SW). */

/* Pulls into L2 the lines that the same tile of the thread's next band will load (the tile at output row oh of
 * this band, pixels [o0, o0 + T), V vectors from c): its x columns and its M*SH new x rows (at the band's last tile
 * row, every row left), its M rows of dy. Spread over the tiles in the order the next band reads them, where one
 * burst per tile row had stalled on the misses it raised. */
DW_INLINE void DW_NAME(band_prefetch)(const dw_bandjob *j, int oh, int o0, int c, const int SW, const int T,
                                      const int V, const int M) {
    const int i_lo = o0 * SW - j->pad_w < 0 ? 0 : o0 * SW - j->pad_w;
    const int i_hi = o0 + T >= j->OW || (o0 + T) * SW - j->pad_w > j->W ? j->W : (o0 + T) * SW - j->pad_w;
    const bool end = oh + M >= j->oh1;
    const int x_first = (oh - j->oh0) * j->SH, x_last = end ? j->next_rows[0] : x_first + M * j->SH;
    const int dy_first = oh - j->oh0, dy_last = end ? j->next_rows[1] : dy_first + M;
    /* a tile inside the row and the band: the same lines through loops of constant counts, unrolled (against the
     * general loops below, Zen 4, batch 8, in-process A/B, one / two threads: 112x112x32 1.16x / 1.17x, AVX2
     * forced 1.04x; 56x56x144 (s1 and s2), 112x112x96 s2 and the batch-32 layers level) */
    if (!end && j->SH == SW && o0 + T <= j->OW && i_lo == o0 * SW - j->pad_w && i_hi == (o0 + T) * SW - j->pad_w &&
        x_last <= j->next_rows[0] && dy_last <= j->next_rows[1]) {
#pragma GCC unroll 2
        for (int v = 0; v < V; v++) {
            if ((c + v * DW_LANES) % 16 != 0) continue;
            const float *x = j->next[0] + c + v * DW_LANES + x_first * j->x_row + (ptrdiff_t)i_lo * j->x_pixel;
            const float *dy = j->next[1] + c + v * DW_LANES + dy_first * j->dy_row + (ptrdiff_t)o0 * j->dy_pixel;
#pragma GCC unroll 4
            for (int r = 0; r < M * SW; r++)
#pragma GCC unroll 8
                for (int i = 0; i < T * SW; i++) __builtin_prefetch(x + r * j->x_row + (ptrdiff_t)i * j->x_pixel, 0, 2);
#pragma GCC unroll 2
            for (int r = 0; r < M; r++)
#pragma GCC unroll 4
                for (int p = 0; p < T; p++) __builtin_prefetch(dy + r * j->dy_row + (ptrdiff_t)p * j->dy_pixel, 0, 2);
        }
        return;
    }
#pragma GCC unroll 2
    for (int v = 0; v < V; v++) {
        if ((c + v * DW_LANES) % 16 != 0) continue; /* one prefetch a 64-byte line */
        const float *x = j->next[0] + c + v * DW_LANES, *dy = j->next[1] + c + v * DW_LANES;
        for (int r = x_first; r < x_last && r < j->next_rows[0]; r++)
            for (int i = i_lo; i < i_hi; i++) __builtin_prefetch(x + r * j->x_row + (ptrdiff_t)i * j->x_pixel, 0, 2);
        for (int r = dy_first; r < dy_last && r < j->next_rows[1]; r++)
            for (int p = o0; p < o0 + T && p < j->OW; p++)
                __builtin_prefetch(dy + r * j->dy_row + (ptrdiff_t)p * j->dy_pixel, 0, 2);
    }
}

DW_INLINE void DW_NAME(band_tile)(const dw_bandjob *j, int oh, int o0, int t, int c, DW_VEC *acc, const int R,
                                  const int S, const int SW, const int T, const int SETS, const int V, const int M,
                                  const int checked, const bool AHEAD) {
    if (AHEAD && j->next_rows[0] + j->next_rows[1] > 0) DW_NAME(band_prefetch)(j, oh, o0, c, SW, T, V, M);
    DW_VEC g[2][3][8];
#pragma GCC unroll 2
    for (int v = 0; v < V; v++)
#pragma GCC unroll 3
        for (int m = 0; m < M; m++) {
            const float *grad =
                j->dy + (ptrdiff_t)(oh + m) * j->dy_row + (ptrdiff_t)o0 * j->dy_pixel + c + v * DW_LANES;
#pragma GCC unroll 8
            for (int p = 0; p < T; p++)
                g[v][m][p] = checked != DW_CHECKED || p < t ? DW_LOAD(grad + p * j->dy_pixel) : DW_ZERO();
        }
    const int K = (T - 1) * SW + S, i0 = o0 * SW - j->pad_w, SH = M > 1 ? SW : j->SH, ih0 = oh * SH - j->pad_h;
#pragma GCC unroll 9
    for (int q = 0; q < (M - 1) * SW + R; q++) {
        int ih = ih0 + q;
        if (ih < 0 || ih >= j->H) continue;
        const float *in = j->x + (ptrdiff_t)ih * j->x_row + c + (ptrdiff_t)i0 * j->x_pixel;
#pragma GCC unroll 40
        for (int k = 0; k < K; k++) {
            int i = i0 + k;
            bool inside = checked != DW_CHECKED || (i >= 0 && i < j->W);
            if (DW_NAME(column_skipped)(k, S, T, checked)) continue;
#pragma GCC unroll 2
            for (int v = 0; v < V; v++) {
                DW_VEC xv = inside ? DW_LOAD(in + (ptrdiff_t)k * j->x_pixel + v * DW_LANES) : DW_ZERO();
                /* see DW_WFOLD */
                if (T > 2 || !DW_WFOLD) DW_KEEP(xv);
#pragma GCC unroll 3
                for (int m = 0; m < M; m++) {
                    int r = q - m * SW;
                    if (r < 0 || r >= R) continue;
#pragma GCC unroll 5
                    for (int s = 0; s < S; s++) {
                        int d = k - s;
                        if (d >= 0 && d % SW == 0 && d / SW < T) {
                            int a = (v * SETS + (d / SW + m) % SETS) * R * S + r * S + s;
                            acc[a] = DW_FMA(xv, g[v][m][d / SW], acc[a]);
                        }
                    }
                }
            }
        }
    }
}

/* One band row (M rows from oh) of tiles: edge tiles where the row allows (edge_row, left_row), else borders one
 * pixel at a time; the interior in tiles of T, 4, 2, 1. */
DW_INLINE void DW_NAME(band_row)(const dw_bandjob *j, int oh, int c, int lo, int hi, DW_VEC *acc, const int R,
                                 const int S, const int SW, const int T, const int SETS, const int V, const int M,
                                 const bool AHEAD) {
    if (T == DW_NARROW) { /* the whole row as one tile (band_body) */
        if (DW_NAME(exact_row)(S, SW, j->pad_w, j->W, j->OW, DW_NARROW))
            DW_NAME(band_tile)(j, oh, 0, T, c, acc, R, S, SW, T, SETS, V, M, DW_EXACT, AHEAD);
        else if (DW_NAME(narrow_left_row)(S, SW, j->pad_w, j->W, j->OW))
            DW_NAME(band_tile)(j, oh, 0, T, c, acc, R, S, SW, T, SETS, V, M, DW_LEFT, AHEAD);
        else
            DW_NAME(band_tile)(j, oh, 0, j->OW, c, acc, R, S, SW, T, SETS, V, M, DW_CHECKED, AHEAD);
        return;
    }
    int o = 0;
    if (DW_NAME(edge_row)(S, SW, j->pad_w, j->W, j->OW, T)) {
        DW_NAME(band_tile)(j, oh, 0, T, c, acc, R, S, SW, T, SETS, V, M, DW_LEFT, AHEAD);
        for (o = T; o + T < j->OW; o += T)
            DW_NAME(band_tile)(j, oh, o, T, c, acc, R, S, SW, T, SETS, V, M, DW_UNCHECKED, AHEAD);
#define DW_BAND_TAIL(size)                                                                                         \
    if ((size) <= T && o + (size) <= j->OW) {                                                                      \
        if (o + (size) == j->OW)                                                                                   \
            DW_NAME(band_tile)(j, oh, o, size, c, acc, R, S, SW, size, SETS, V, M, DW_RIGHT, AHEAD);               \
        else                                                                                                       \
            DW_NAME(band_tile)(j, oh, o, size, c, acc, R, S, SW, size, SETS, V, M, DW_UNCHECKED, AHEAD);           \
        o += (size);                                                                                               \
    }
        /* what is left, 1 to T pixels: T itself, or 4, 2, 1 pixels, the last tile ending the row */
        DW_BAND_TAIL(T) DW_BAND_TAIL(4) DW_BAND_TAIL(2) DW_BAND_TAIL(1)
#undef DW_BAND_TAIL
        return;
    }
    if (j->next_rows[0] + j->next_rows[1] == 0 && DW_NAME(left_row)(S, SW, j->pad_w, j->W, j->OW, T)) {
        DW_NAME(band_tile)(j, oh, 0, T, c, acc, R, S, SW, T, SETS, V, M, DW_LEFT, AHEAD);
        o = T;
    }
    for (; o < lo; o++) DW_NAME(band_tile)(j, oh, o, 1, c, acc, R, S, SW, 1, SETS, V, M, DW_CHECKED, AHEAD);
    for (; o + T <= hi; o += T) DW_NAME(band_tile)(j, oh, o, T, c, acc, R, S, SW, T, SETS, V, M, DW_UNCHECKED, AHEAD);
#define DW_BAND_REST(size)                                                                                         \
    if (T > (size) && o + (size) <= hi)                                                                            \
        DW_NAME(band_tile)(j, oh, o, size, c, acc, R, S, SW, size, SETS, V, M, DW_UNCHECKED, AHEAD), o += (size);
    DW_BAND_REST(4) DW_BAND_REST(2) DW_BAND_REST(1)
#undef DW_BAND_REST
    for (; o < j->OW; o++) DW_NAME(band_tile)(j, oh, o, 1, c, acc, R, S, SW, 1, SETS, V, M, DW_CHECKED, AHEAD);
}

/* The whole band for V channel vectors from c, M output rows at a time while the strides match. */
DW_INLINE void DW_NAME(band_vectors)(const dw_bandjob *j, int c, int lo, int hi, const int R, const int S,
                                     const int SW, const int T, const int SETS, const int V, const int M,
                                     const bool AHEAD) {
    DW_VEC acc[2 * 25];
#pragma GCC unroll 50
    for (int a = 0; a < V * SETS * R * S; a++) acc[a] = DW_ZERO();
    dw_bandjob image = *j;
    for (int n = 0; n < j->images; n++, image.x += j->x_image, image.dy += j->dy_image) {
        int oh = j->oh0;
        if (M > 1 && j->SH == SW)
            for (; oh + M <= j->oh1; oh += M)
                DW_NAME(band_row)(&image, oh, c, lo, hi, acc, R, S, SW, T, SETS, V, M, AHEAD);
        for (; oh < j->oh1; oh++) DW_NAME(band_row)(&image, oh, c, lo, hi, acc, R, S, SW, T, SETS, V, 1, AHEAD);
    }
#pragma GCC unroll 2
    for (int v = 0; v < V; v++)
#pragma GCC unroll 25
        for (int a = 0; a < R * S; a++) {
            float *dst = j->acc + (ptrdiff_t)a * j->cpad + c + v * DW_LANES;
            DW_VEC sum = acc[v * SETS * R * S + a];
            if (SETS == 2) sum = DW_ADD(sum, acc[(v * SETS + 1) * R * S + a]);
            DW_STORE(dst, DW_ADD(DW_LOAD(dst), sum));
        }
}

/* Channel vectors (V at a time) outside rows and pixels: their R*S sums stay in registers over the whole
 * band, and the band's rows of x and dy stay in L2 for the next vectors. */
DW_INLINE void DW_NAME(band_body)(const dw_bandjob *j, int c_begin, int c_end, const int R, const int S, const int SW,
                                  const int T, const int SETS, const int V, const int M, const bool AHEAD) {
    int lo, hi, c = c_begin;
    DW_NAME(interior)(j->pad_w, S, SW, j->W, j->OW, &lo, &hi);
    /* rows of at most DW_NARROW pixels (3x3, stride 1): each row one tile of one vector, borders included
     * (Zen 4, batch 8, in-process A/B: 7x7x960 1.28x on one thread, 1.22x on two; two such tiles on 14-pixel rows
     * ran 0.85-0.90x, so those keep the 2 x 2 x 2 tiles); so are stride-2 rows of DW_NARROW outputs from twice
     * as many inputs (14x14x576 s2 1.12x on one thread, 1.09x on two). These tiles keep the prefetch code
     * whatever AHEAD says: built without it GCC ran them 0.94-0.95x (7x7x960, one thread and two). */
    if (DW_NARROW > 0 && R == 3 &&
        (SW == 1 ? j->OW <= DW_NARROW : DW_NAME(narrow_left_row)(S, SW, j->pad_w, j->W, j->OW))) {
        for (; c < c_end; c += DW_LANES) DW_NAME(band_vectors)(j, c, lo, hi, R, S, SW, DW_NARROW, 1, 1, M, true);
        return;
    }
    for (; c + V * DW_LANES <= c_end; c += V * DW_LANES)
        DW_NAME(band_vectors)(j, c, lo, hi, R, S, SW, T, SETS, V, M, AHEAD);
    for (; c < c_end; c += DW_LANES) DW_NAME(band_vectors)(j, c, lo, hi, R, S, SW, T, SETS, 1, M, AHEAD);
}

/* Two builds per shape: band_R_SW without the next-band prefetch (AHEAD false), for bands that pull nothing
 * ahead, and band_ahead_R_SW, which tests the job's next_rows like any other run-time value (passing a constant
 * true there instead ran 56x56x144 and 112x112x32 4-9% slower: the same source, compiled otherwise). */
#define DW_BAND(R, SW, T, SETS, V, M)                                                                  \
    static void DW_NAME(band_##R##_##SW)(const dw_bandjob *j, int c_begin, int c_end) {                \
        DW_NAME(band_body)(j, c_begin, c_end, R, R, SW, T, SETS, V, M, false);                         \
    }                                                                                                  \
    static void DW_NAME(band_ahead_##R##_##SW)(const dw_bandjob *j, int c_begin, int c_end) {          \
        DW_NAME(band_body)(j, c_begin, c_end, R, R, SW, T, SETS, V, M, j->next_rows[0] + j->next_rows[1] > 0); \
    }
DW_BAND(3, 1, DW_WTILE_3, DW_WSETS_3, DW_WVEC_3, DW_WROWS_3)
DW_BAND(3, 2, DW_WTILE_3, DW_WSETS_3, DW_WVEC_3, DW_WROWS_3)
DW_BAND(5, 1, DW_WTILE_5, 1, 1, 1) DW_BAND(5, 2, DW_WTILE_5, 1, 1, 1)

dw_band_fn DW_NAME(dw_band)(int R, int S, int SW, bool ahead) {
    static const dw_band_fn table[2][2][2] = { /* [5x5][SW - 1][ahead] */
        {{DW_NAME(band_3_1), DW_NAME(band_ahead_3_1)}, {DW_NAME(band_3_2), DW_NAME(band_ahead_3_2)}},
        {{DW_NAME(band_5_1), DW_NAME(band_ahead_5_1)}, {DW_NAME(band_5_2), DW_NAME(band_ahead_5_2)}},
    };
    bool square = (R == 3 || R == 5) && S == R;
    return square && SW >= 1 && SW <= 2 ? table[R == 5][SW - 1][ahead] : NULL;
}
