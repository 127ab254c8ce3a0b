/* The row loops of fused_rows.h compiled three times, for AVX-512, AVX2 and baseline x86-64; the
 * widest one the CPU has is chosen once. Memory-bound loops gain little from width, but the batch
 * statistics accumulate in double and do. */
#include <stdint.h>
#include <string.h>

#include "kernels/fused.h"

#pragma GCC push_options
#pragma GCC target("avx512f")
#define ROWS_SUFFIX avx512
#define ROWS_ISA_NAME "avx512"
#include "kernels/fused_rows.h"
#undef ROWS_SUFFIX
#undef ROWS_ISA_NAME
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2")
#define ROWS_SUFFIX avx2
#define ROWS_ISA_NAME "avx2"
#include "kernels/fused_rows.h"
#undef ROWS_SUFFIX
#undef ROWS_ISA_NAME
#pragma GCC pop_options

#define ROWS_SUFFIX baseline
#define ROWS_ISA_NAME "baseline"
#include "kernels/fused_rows.h"
#undef ROWS_SUFFIX
#undef ROWS_ISA_NAME

const fused_rows *const fused_rows_tables[4] = {&rows_table_avx512, &rows_table_avx2, &rows_table_baseline, NULL};
static const fused_rows *forced;

int fused_rows_force(const fused_rows *rows) {
    const plait_cpu *cpu = plait_cpu_features();
    if ((rows == &rows_table_avx512 && !cpu->avx512f) || (rows == &rows_table_avx2 && !cpu->avx2))
        return plait_fail("this CPU cannot run the %s row loops", rows->isa);
    forced = rows;
    return PLAIT_OK;
}

const fused_rows *fused_rows_best(void) {
    if (forced) return forced;
    const plait_cpu *cpu = plait_cpu_features();
    return cpu->avx512f ? &rows_table_avx512 : cpu->avx2 ? &rows_table_avx2 : &rows_table_baseline;
}
