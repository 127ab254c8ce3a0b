/* plait's self-tuning direct convolutions: schedules, the direct kernels that run them, the search
 * that picks one per layer, and the tuning file that remembers the winners.
 *
 * A schedule is plain data. Level 1 (framework loops): how the output is split between threads and
 * into cache blocks. Level 2 (micro-kernel): one thread's register tile, made of `vthreads`
 * independent interleaved sub-tiles. docs/kernels.md explains the design.
 */
#ifndef PLAIT_TUNE_H
#define PLAIT_TUNE_H

#include <stdio.h>

#include "plait/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum plait_conv_direction {
    PLAIT_CONV_FORWARD,
    PLAIT_CONV_BACKWARD_DATA,
    PLAIT_CONV_BACKWARD_WEIGHTS,
    PLAIT_CONV_DIRECTIONS
} plait_conv_direction;
const char *plait_conv_direction_name(plait_conv_direction direction);

/* Instruction sets of the micro-kernels; AUTO picks the best the CPU has. */
typedef enum plait_isa { PLAIT_ISA_AUTO, PLAIT_ISA_AVX512, PLAIT_ISA_AVX2, PLAIT_ISA_PORTABLE } plait_isa;
/* Forces an instruction set for every direct kernel (tests, benchmarks). Returns PLAIT_ERROR when the
 * CPU lacks it. */
int plait_direct_set_isa(plait_isa isa);
plait_isa plait_direct_isa(void); /* the one in use, never AUTO */
const char *plait_isa_name(plait_isa isa);

/* Loop orders inside one cache block. */
typedef enum plait_loop_order {
    PLAIT_LOOP_K_OUTER,   /* output-channel tiles outside output rows: weights stay in L1 longer */
    PLAIT_LOOP_ROWS_OUTER /* output rows outside output-channel tiles: input rows stay in L1 longer */
} plait_loop_order;

/* Meaning of the fields per direction (forward and backward-data are the same framework: backward-data
 * runs a forward convolution of dy with flipped, transposed weights, one per stride phase):
 *   forward / backward-data ("K" = channels written, "C" = channels read):
 *     split_k   level 1: 1 = threads split output-channel blocks first, 0 = images x row blocks first
 *     block_k   output-channel vectors (of 16) per cache block
 *     block_c   input channels per cache block (accumulated into the output between blocks)
 *     block_h   output rows per cache block;  block_w  output columns per cache block
 *     tile_w    level 2: output pixels along W per sub-tile
 *     tile_k    level 2: vectors of 16 output channels
 *     vthreads  sub-tiles interleaved in one register tile, on consecutive output rows (1, 2 or 4)
 *     loop_order, unroll (channel-loop unroll of the micro-kernel: 1 or 2)
 *     pad_copy  1 = copy the input into a zero-bordered buffer first, so every pixel runs in full
 *               register tiles (pays off on small images, where border pixels are a large share)
 *   backward-weights (dw[k][r][s][c] += sum over pixels dy * x):
 *     tile_w    input channels in the register tile;  tile_k  vectors of 16 output channels
 *     block_h   output rows per pixel block (all threads sweep the same block, sharing it in cache)
 *     block_w   images per pixel block (several small images keep the gradient tile in registers longer)
 *     loop_order 1 = row runs: at each output pixel the taps of a kernel row and the channels form one run of
 *               kernel_w * C floats of x and of the gradient, and tile_w spans that run (few channels)
 *     split_k   1 = work units ordered channel tiles fastest (consecutive units share a tile of dy),
 *               0 = output-channel tiles fastest (they share a tile of x); with pad_copy: 1 = dy copied into
 *               panels too, 0 = dy read in place
 *     pad_copy  1 = packed 1x1 (no padding): per pixel block x (and dy if split_k) copied into contiguous
 *               panels, the tile's roles swapped (tile_w output channels x tile_k vectors of input channels)
 *               so it accumulates straight into dw; on layers whose patch kernel_h x kernel_w x C is at most
 *               28 (stems): patch tiles over a zero-bordered copy of x, tile_w elements of the whole patch by
 *               tile_k vectors; on other windowed (or padded) layers: per pixel block of block_w whole images
 *               (block_h 0) x copied into stride-phase planes and dy into panels, one packed GEMM per tap, roles
 *               swapped as in the packed 1x1 path
 *     block_c, block_k  channel ranges per work unit; the rest are unused (0 or 1).
 */
/* Depthwise layers (groups == channels) use few fields: forward and backward-data tile_w (output pixels per
 * single-row register tile; the row kernels are built for two widths per ISA), block_c (channels per block, a
 * multiple of 16, 0 = all) and vthreads (2 = pairs of output rows sharing their input rows, stride 1 only);
 * backward-weights block_h (output rows per band). tile_k and unroll are 1, every other field 0. */
typedef struct plait_conv_schedule {
    int split_k;
    int block_k, block_c, block_h, block_w;
    int tile_w, tile_k, vthreads;
    int loop_order;
    int unroll;
    int pad_copy;
    int vthread_images; /* 1 = the vthreads sub-tiles are the same row of consecutive images (small images:
                           weights are reused across the batch) instead of consecutive rows of one image */
    int winograd; /* 1 = Winograd F(4x4, 3x3) (3x3 stride 1 only); block_w = output tiles per chunk, tile_w x
                     tile_k the register tile of its transform-domain products */
    int im2col;   /* 1 = the engine's im2col + BLAS path instead of a direct kernel: the search measures it
                     beside the default and keeps it where it wins (other fields unused) */
} plait_conv_schedule;

/* Largest register tile (tile_w * tile_k * vthreads) the micro-kernels of an instruction set hold in
 * registers. */
int plait_direct_max_tile(plait_isa isa);
/* Whether the direct kernels accept this schedule for this description and direction. */
bool plait_conv_schedule_valid(const plait_conv2d_desc *d, plait_conv_direction direction,
                               const plait_conv_schedule *s);
/* The schedule that runs the engine's im2col + BLAS path (standard convolutions). */
plait_conv_schedule plait_conv_im2col_schedule(void);
/* A sensible schedule without tuning: on AVX2 Winograd or im2col + BLAS where they measured faster, else
 * plait_conv_direct_schedule. */
plait_conv_schedule plait_conv_default_schedule(const plait_conv2d_desc *d, plait_conv_direction direction);
/* The direct kernels' own default tiling (the base of the ablation and of the schedule tests). */
plait_conv_schedule plait_conv_direct_schedule(const plait_conv2d_desc *d, plait_conv_direction direction);
/* false: untuned layers always run plait_conv_direct_schedule. The parallel-equivalence tests use it:
 * Winograd's rounding (about ten times the direct sums') turns the all-reduce's different summation order
 * into differences that grow step by step on their tiny problem. Default true. */
void plait_conv_set_fast_defaults(bool enabled);
/* "tw6 tk4 v1 bk4 bc64 bh4 bw64 sk0 lo0 u1 pc0 wg0 vi0" */
void plait_conv_schedule_format(const plait_conv_schedule *s, char *text, size_t size);

/* Direct kernels with an explicit schedule (NULL = default). Workspace as the kernel table says. Standard
 * (groups == 1) and depthwise (groups == in == out channels) descriptions. */
bool plait_direct_supports(const plait_conv2d_desc *d);
size_t plait_direct_workspace_bytes(const plait_conv2d_desc *d, plait_conv_direction direction);
/* The workspace one schedule needs (an im2col schedule needs the im2col path's; NULL = default). */
size_t plait_schedule_workspace_bytes(const plait_conv2d_desc *d, plait_conv_direction direction,
                                      const plait_conv_schedule *s);
void plait_direct_forward(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x, const float *w,
                          float *y, void *workspace);
void plait_direct_backward_data(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *dy,
                                const float *w, float *dx, void *workspace);
/* dw += gradient */
void plait_direct_backward_weights(const plait_conv2d_desc *d, const plait_conv_schedule *s, const float *x,
                                   const float *dy, float *dw, void *workspace);

/* The direct kernels with default schedules, as a kernel table. */
extern const plait_conv2d_kernel plait_conv2d_direct;

/* ---- search ------------------------------------------------------------------------------------ */

/* Every valid schedule of the space for (d, direction) on the current ISA, at most `capacity`;
 * returns how many were written. */
int plait_conv_schedule_space(const plait_conv2d_desc *d, plait_conv_direction direction, plait_conv_schedule *out,
                              int capacity);
/* Predicted seconds of one call under the analytical model (FMA count, loads and stores per level, cache
 * footprint) on `threads` threads. Only the ranking matters. */
double plait_conv_cost_model(const plait_conv2d_desc *d, plait_conv_direction direction,
                             const plait_conv_schedule *s, int threads);

typedef struct plait_tune_result {
    plait_conv_schedule best, fallback; /* fallback = the default schedule */
    double best_seconds, default_seconds;
    double im2col_seconds; /* the im2col + BLAS path, measured beside the default; 0 where it does not apply */
    int candidates, measured;
    double rank_correlation; /* Spearman, model rank vs measured rank over the measured candidates */
} plait_tune_result;
/* Ranks the space with the cost model and measures the `measure` best (a quarter of them sampled from the
 * rest of the ranking); then searches locally around the fastest so far (the default included), measuring up to
 * `measure` unmeasured schedules one field, then two, away from the current best and moving to any 2% faster;
 * then the default, im2col and the three fastest of all are measured again, interleaved, and `best` is the
 * fastest of that run-off (the default unless beaten by 3%). The times reported are the run-off's; the rank
 * correlation covers the model's sweep only. */
int plait_conv_tune(const plait_conv2d_desc *d, plait_conv_direction direction, int measure,
                    plait_tune_result *result);

/* ---- tuning file (JSON) ----------------------------------------------------------------------- */

/* Entries are keyed by shape, direction, CPU model and thread count. */
typedef struct plait_tuning plait_tuning;
plait_tuning *plait_tuning_new(void);
void plait_tuning_free(plait_tuning *t);
/* A missing file gives an empty table; a malformed one is an error. */
int plait_tuning_load(plait_tuning *t, const char *path);
int plait_tuning_save(const plait_tuning *t, const char *path); /* atomically */
/* Where `plait tune` writes and `plait train` reads: $PLAIT_TUNING_FILE, else
 * $XDG_CACHE_HOME/plait/tuning.json, else ~/.cache/plait/tuning.json. */
void plait_tuning_default_path(char *path, size_t size);
void plait_tuning_put(plait_tuning *t, const plait_conv2d_desc *d, plait_conv_direction direction,
                      const plait_conv_schedule *s, double seconds);
/* For this CPU and plait_threads(); false when absent. */
bool plait_tuning_get(const plait_tuning *t, const plait_conv2d_desc *d, plait_conv_direction direction,
                      plait_conv_schedule *s);

/* Tunes every distinct description of `descs` (a model's convolutions) in every direction, puts the winners
 * into `tuning`, and writes one line per shape and direction to `report` (may be NULL): default and tuned
 * milliseconds, speedup, the model/measurement rank correlation and the schedule. Depthwise layers keep
 * their fixed schedule and are reported as such. For `plait tune`. */
int plait_tune_layers(const plait_conv2d_desc *descs, int count, int measure, plait_tuning *tuning, FILE *report);

/* A layer's kernel: the direct kernel table plus the schedules it runs, one per direction (tuned where
 * `tuning` knows the shape, default otherwise). Fill one per layer, keep it with the layer, and call
 * plait_tuned_forward / _backward_data / _backward_weights. */
typedef struct plait_conv_plan {
    plait_conv2d_desc desc;
    plait_conv_schedule schedule[PLAIT_CONV_DIRECTIONS];
    bool tuned[PLAIT_CONV_DIRECTIONS];
    size_t workspace_bytes; /* largest over the directions */
} plait_conv_plan;
/* tuning may be NULL. Returns PLAIT_ERROR when the direct kernels do not support d. */
int plait_conv_plan_make(plait_conv_plan *plan, const plait_conv2d_desc *d, const plait_tuning *tuning);
void plait_tuned_forward(const plait_conv_plan *p, const float *x, const float *w, float *y, void *workspace);
void plait_tuned_backward_data(const plait_conv_plan *p, const float *dy, const float *w, float *dx,
                               void *workspace);
void plait_tuned_backward_weights(const plait_conv_plan *p, const float *x, const float *dy, float *dw,
                                  void *workspace);

#ifdef __cplusplus
}
#endif
#endif
