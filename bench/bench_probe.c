/* How much of each core and of memory this process gets right now: every thread runs FMA chains for a
 * short window and reports its own GFLOP/s, then streams over a buffer larger than the L3 cache's share
 * and reports its own GB/s (both threads at once, as ranks training together load memory), and the same
 * over a buffer that fits the L3 cache (a neighbour thrashing L3 shows there and nowhere else). On a shared virtual machine a neighbour can take half of a core for
 * minutes (seen here: 23.6 -> 9.7 GFLOP/s on one core of an idle guest), which no measurement of ours
 * can tell from a slow kernel; bench/parallel probes before and after each configuration and repeats
 * the ones a disturbance touched.
 *   bench_probe [--threads 2] [--seconds 0.3]
 * prints one JSON line: {"threads": T, "seconds": S, "isa": "avx2", "gflops": [per thread], "min": m,
 *                        "gbps": [per thread], "min_gbps": b, "min_l3_gbps": l} */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fma_peak.h"
#include "plait/core.h"
#include "plait/tune.h"

typedef struct probe_thread {
    pthread_t thread;
    bool avx512;
    double seconds, gflops, gbps, l3_gbps;
    float *buffer;
    size_t floats;
    volatile float sink;
} probe_thread;

/* 4 MiB per thread: inside this machine's 32 MiB L3 for both threads, unless a neighbour thrashes it */
#define L3_PROBE_FLOATS ((size_t)1 << 20)

/* Reads and writes back every float, as a training pass does over activations; GB/s moved. */
static double stream_gbps(float *buffer, size_t floats, double seconds) {
    double bytes = 0, start = plait_now(), elapsed = 0;
    while (elapsed < seconds) {
        for (size_t i = 0; i < floats; i++) buffer[i] = buffer[i] * 0.5f + 1.0f;
        bytes += 8.0 * (double)floats;
        elapsed = plait_now() - start;
    }
    return bytes / elapsed * 1e-9;
}

static void *probe_main(void *argument) {
    probe_thread *p = argument;
    long chunk = 200000, iterations = 0;
    memset(p->buffer, 0, p->floats * sizeof(float)); /* page faults before the windows, not in them */
    double start = plait_now(), elapsed = 0;
    while (elapsed < p->seconds) {
        p->sink += fma_loop(p->avx512, chunk);
        iterations += chunk;
        elapsed = plait_now() - start;
    }
    p->gflops = fma_flops_per_iteration(p->avx512) * (double)iterations / elapsed * 1e-9;
    p->gbps = stream_gbps(p->buffer, p->floats, p->seconds);
    p->l3_gbps = stream_gbps(p->buffer, L3_PROBE_FLOATS, p->seconds);
    p->sink += p->buffer[0];
    return NULL;
}

int main(int argc, char **argv) {
    int threads = 2;
    double seconds = 0.3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_probe [--threads N] [--seconds S]\n");
            return 2;
        }
    }
    if (threads < 1 || threads > 256 || !(seconds > 0 && seconds < 60)) {
        fprintf(stderr, "bench_probe: --threads 1..256 and --seconds in (0, 60)\n");
        return 2;
    }
    bool avx512 = plait_direct_isa() == PLAIT_ISA_AVX512;
    if (!avx512 && plait_direct_isa() != PLAIT_ISA_AVX2) {
        fprintf(stderr, "bench_probe: needs AVX2 and FMA\n");
        return 1;
    }
    probe_thread *probes = calloc((size_t)threads, sizeof *probes);
    if (!probes) return 1;
    for (int t = 0; t < threads; t++) {
        probes[t].avx512 = avx512;
        probes[t].seconds = seconds;
        probes[t].floats = (size_t)16 << 20; /* 64 MiB per thread: beyond any L3 share here */
        probes[t].buffer = malloc(probes[t].floats * sizeof(float));
        if (!probes[t].buffer) {
            fprintf(stderr, "bench_probe: out of memory\n");
            return 1;
        }
        if (pthread_create(&probes[t].thread, NULL, probe_main, &probes[t]) != 0) {
            fprintf(stderr, "bench_probe: cannot start thread %d\n", t);
            return 1;
        }
    }
    double least = 1e300, least_gbps = 1e300, least_l3 = 1e300;
    printf("{\"threads\": %d, \"seconds\": %g, \"isa\": \"%s\", \"gflops\": [", threads, seconds,
           plait_isa_name(plait_direct_isa()));
    for (int t = 0; t < threads; t++) {
        pthread_join(probes[t].thread, NULL);
        printf("%s%.2f", t ? ", " : "", probes[t].gflops);
        if (probes[t].gflops < least) least = probes[t].gflops;
    }
    printf("], \"min\": %.2f, \"gbps\": [", least);
    for (int t = 0; t < threads; t++) {
        printf("%s%.2f", t ? ", " : "", probes[t].gbps);
        if (probes[t].gbps < least_gbps) least_gbps = probes[t].gbps;
        if (probes[t].l3_gbps < least_l3) least_l3 = probes[t].l3_gbps;
        free(probes[t].buffer);
    }
    printf("], \"min_gbps\": %.2f, \"min_l3_gbps\": %.2f}\n", least_gbps, least_l3);
    free(probes);
    return 0;
}
