/* Picks the kernel table once (the engine keeps the pointer): the best ISA the CPU reports
 * through cpuid, or the one KVSERVE_ISA names, for tests and benchmarks. The whole project
 * is compiled for x86-64-v3, so avx2 is the floor a running binary can assume; avx512's
 * file may only run after the check below. */
#include <stdlib.h>
#include <string.h>

#include "isa_internal.h"

static const kc_isa *const all_isas[] = {&kc_isa_scalar, &kc_isa_avx2, &kc_isa_avx512};
#define N_ISAS ((int)(sizeof all_isas / sizeof all_isas[0]))

const kc_isa *const *kc_isa_all(int *n)
{
    *n = N_ISAS;
    return all_isas;
}

int kc_isa_runnable(const kc_isa *isa)
{
    __builtin_cpu_init();
    if (isa == &kc_isa_scalar)
        return 1;
    if (isa == &kc_isa_avx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == &kc_isa_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni");
    return 0;
}

const kc_isa *kc_isa_by_name(const char *name)
{
    for (int i = 0; i < N_ISAS; i++)
        if (!strcmp(all_isas[i]->name, name))
            return kc_isa_runnable(all_isas[i]) ? all_isas[i] : NULL;
    return NULL;
}

int kc_isa_pick(const kc_isa **out, kv_err *err)
{
    const char *want = getenv("KVSERVE_ISA");
    if (want && *want) {
        *out = kc_isa_by_name(want);
        if (!*out)
            return kv_err_set(err, KV_EINVAL, "KVSERVE_ISA=%.32s: not one of scalar, avx2, avx512 that this CPU runs",
                              want);
        return KV_OK;
    }
    for (int i = N_ISAS - 1; i >= 0; i--)
        if (kc_isa_runnable(all_isas[i])) {
            *out = all_isas[i];
            return KV_OK;
        }
    *out = &kc_isa_scalar;
    return KV_OK;
}

void kc_split_rows(int rows, int n_threads, int t, int align, int *r0, int *r1)
{
    if (n_threads < 1)
        n_threads = 1;
    if (align < 1)
        align = 1;
    int units = (rows + align - 1) / align;
    int lo = (int)((long long)units * t / n_threads), hi = (int)((long long)units * (t + 1) / n_threads);
    *r0 = lo * align < rows ? lo * align : rows;
    *r1 = hi * align < rows ? hi * align : rows;
}
