#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "plait/core.h"

/* OpenBLAS exports this; declared here to avoid depending on a particular cblas.h variant. */
void openblas_set_num_threads(int threads);

double plait_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int thread_count = 1;

void plait_set_threads(int threads) {
    if (threads < 1) threads = 1;
    thread_count = threads;
    omp_set_num_threads(threads);
    /* BLAS runs single-threaded under plait's own threads (plait_sgemm_split_rows): one pool, no flips */
    openblas_set_num_threads(1);
}

int plait_threads(void) { return thread_count; }

/* The size of cpu0's unified cache of a level as the kernel reports it (0 when it does not). Read before
 * sysconf: glibc derives the L3 from CPUID, which on a Zen 4 guest under KVM gave 320 MiB for a 32 MiB L3. */
static size_t sysfs_cache_bytes(int level) {
    for (int index = 0; index < 8; index++) {
        char path[96], text[32];
        int found = 0;
        unsigned long size = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", index);
        FILE *f = fopen(path, "r");
        if (!f) break;
        if (fscanf(f, "%d", &found) != 1) found = 0;
        fclose(f);
        if (found != level) continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", index);
        f = fopen(path, "r");
        if (!f) return 0;
        int fields = fscanf(f, "%lu%31s", &size, text);
        fclose(f);
        if (fields < 1) return 0;
        char unit = fields == 2 ? text[0] : 0;
        return (size_t)size * (unit == 'K' ? 1024 : unit == 'M' ? 1024 * 1024 : 1);
    }
    return 0;
}

const plait_cpu *plait_cpu_features(void) {
    static plait_cpu cpu;
    static int probed;
    if (probed) return &cpu;
    __builtin_cpu_init();
    cpu.avx2 = __builtin_cpu_supports("avx2");
    cpu.fma = __builtin_cpu_supports("fma");
    cpu.avx512f = __builtin_cpu_supports("avx512f");
    unsigned int regs[12];
    strcpy(cpu.vendor, "unknown");
    if (__get_cpuid(0, &regs[0], &regs[1], &regs[2], &regs[3])) { /* the string is in ebx, edx, ecx */
        memcpy(cpu.vendor, &regs[1], 4);
        memcpy(cpu.vendor + 4, &regs[3], 4);
        memcpy(cpu.vendor + 8, &regs[2], 4);
        cpu.vendor[12] = 0;
    }
    if (__get_cpuid_max(0x80000000, NULL) >= 0x80000004) {
        for (unsigned int i = 0; i < 3; i++)
            __get_cpuid(0x80000002 + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2], &regs[4 * i + 3]);
        memcpy(cpu.model, regs, 48);
        cpu.model[48] = 0;
    } else {
        strcpy(cpu.model, "unknown");
    }
    /* Trim trailing spaces the brand string carries. */
    for (int i = (int)strlen(cpu.model) - 1; i >= 0 && cpu.model[i] == ' '; i--) cpu.model[i] = 0;
    size_t l2 = sysfs_cache_bytes(2), l3 = sysfs_cache_bytes(3);
    long l2_conf = sysconf(_SC_LEVEL2_CACHE_SIZE), l3_conf = sysconf(_SC_LEVEL3_CACHE_SIZE);
    cpu.l2_bytes = l2 ? l2 : l2_conf > 0 ? (size_t)l2_conf : (size_t)512 * 1024;
    cpu.l3_bytes = l3 ? l3 : l3_conf > 0 ? (size_t)l3_conf : 0;
    probed = 1;
    return &cpu;
}

void plait_cpu_set_caches(size_t l2_bytes, size_t l3_bytes) {
    plait_cpu *cpu = (plait_cpu *)plait_cpu_features();
    cpu->l2_bytes = l2_bytes;
    cpu->l3_bytes = l3_bytes;
}

int plait_write_file_atomic(const char *path, const void *data, size_t bytes) {
    char temp[4096];
    if (snprintf(temp, sizeof temp, "%s.tmp", path) >= (int)sizeof temp) return plait_fail("path too long: %s", path);
    int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return plait_fail("cannot create %s: %s", temp, strerror(errno));
    const char *p = data;
    size_t left = bytes;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(temp);
            return plait_fail("cannot write %s: %s", temp, strerror(e));
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(temp);
        return plait_fail("cannot sync %s: %s", temp, strerror(errno));
    }
    if (rename(temp, path) != 0) {
        int e = errno;
        unlink(temp);
        return plait_fail("cannot rename %s to %s: %s", temp, path, strerror(e));
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return PLAIT_OK;
}
