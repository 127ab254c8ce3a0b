/* plait core: errors, memory, tensors, random numbers, timers, threads, CPU features. */
#ifndef PLAIT_CORE_H
#define PLAIT_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Errors: functions that can fail return 0 on success and -1 on failure, after recording one line
 * that says what went wrong (no trailing newline). The message is per thread. */
#define PLAIT_OK 0
#define PLAIT_ERROR (-1)
int plait_fail(const char *format, ...) __attribute__((format(printf, 1, 2)));
const char *plait_last_error(void);
void plait_clear_error(void);

/* Memory: 64-byte aligned so vector loads never split cache lines; zero-filled. NULL (and an error
 * message) when out of memory. */
void *plait_alloc(size_t bytes);
/* The same without the zero fill, for buffers that are written in full before they are read. */
void *plait_alloc_unzeroed(size_t bytes);
void plait_free(void *pointer);

/* Activations are NHWC float32 everywhere (see docs/architecture.md for why). A vector per
 * sample, such as logits, is {n, 1, 1, c}. */
typedef struct plait_shape {
    int n, h, w, c;
} plait_shape;

static inline size_t plait_shape_count(plait_shape s) {
    return (size_t)s.n * (size_t)s.h * (size_t)s.w * (size_t)s.c;
}
static inline bool plait_shape_equal(plait_shape a, plait_shape b) {
    return a.n == b.n && a.h == b.h && a.w == b.w && a.c == b.c;
}

typedef struct plait_tensor {
    plait_shape shape;
    float *data;
    size_t capacity; /* floats allocated; may exceed the shape's count */
} plait_tensor;

/* Make t hold `shape`, reusing its allocation when large enough. Contents are unspecified. */
int plait_tensor_reserve(plait_tensor *t, plait_shape shape);
void plait_tensor_free(plait_tensor *t);

/* Random numbers: xoshiro256**, seeded through splitmix64. Same seed, same stream on every machine. */
typedef struct plait_rng {
    uint64_t state[4];
} plait_rng;
void plait_rng_seed(plait_rng *rng, uint64_t seed);
uint64_t plait_rng_next(plait_rng *rng);
uint32_t plait_rng_below(plait_rng *rng, uint32_t bound); /* uniform in [0, bound) */
float plait_rng_uniform(plait_rng *rng);                  /* uniform in [0, 1) */
float plait_rng_normal(plait_rng *rng);                   /* standard normal */
/* A seed derived from several integers, for streams that must not depend on iteration order. */
uint64_t plait_seed_mix(uint64_t a, uint64_t b, uint64_t c);

/* Time in seconds from a monotonic clock. */
double plait_now(void);

/* Threads used by plait's own kernels (OpenMP); BLAS is set to one thread and runs under them. */
void plait_set_threads(int threads);
int plait_threads(void);

/* CPU features, probed once. */
typedef struct plait_cpu {
    bool avx2, fma, avx512f;
    char model[64];
    char vendor[16]; /* cpuid's vendor string ("GenuineIntel", "AuthenticAMD"; "unknown") */
    size_t l2_bytes; /* one core's L2 cache (512 KiB when the system does not say) */
    size_t l3_bytes; /* the last-level cache the cores share (0 when the system does not say) */
} plait_cpu;
const plait_cpu *plait_cpu_features(void);
/* Replaces the cache sizes the kernels' heuristics read (tests: to reach the paths of another machine's caches
 * with small tensors). */
void plait_cpu_set_caches(size_t l2_bytes, size_t l3_bytes);

/* Write a file atomically: to `path`.tmp, fsync, rename over `path`, fsync the directory. */
int plait_write_file_atomic(const char *path, const void *data, size_t bytes);

#ifdef __cplusplus
}
#endif
#endif
