/* Minimal test harness: CHECK macros count failures; main returns
 * kv_test_result(). A test that lacks what it needs calls KV_TEST_SKIP
 * (exit 77, which ctest reports as skipped, never passed). */
#ifndef KV_TEST_H
#define KV_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int kv_test_failures;
static int kv_test_checks;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        kv_test_checks++;                                                           \
        if (!(cond)) {                                                              \
            kv_test_failures++;                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                           \
    } while (0)

#define CHECK_MSG(cond, ...)                                              \
    do {                                                                  \
        kv_test_checks++;                                                 \
        if (!(cond)) {                                                    \
            kv_test_failures++;                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
        }                                                                 \
    } while (0)

#define CHECK_EQ_INT(a, b) CHECK_MSG((long long)(a) == (long long)(b), "%lld != %lld", (long long)(a), (long long)(b))

#define KV_TEST_SKIP(...)                 \
    do {                                  \
        fprintf(stderr, "SKIP: ");        \
        fprintf(stderr, __VA_ARGS__);     \
        fputc('\n', stderr);              \
        exit(77);                         \
    } while (0)

static inline int kv_test_result(void)
{
    fprintf(stderr, "%d checks, %d failed\n", kv_test_checks, kv_test_failures);
    return kv_test_failures ? 1 : 0;
}

/* The shared model directory (KVSERVE_TEST_MODELS, else ../shared/models next to
 * the source tree, passed in by CMake as KV_DEFAULT_MODELS), or NULL when absent. */
static inline const char *kv_test_models_dir(void)
{
    static char buf[4096];
    const char *env = getenv("KVSERVE_TEST_MODELS");
    const char *dir = env && *env ? env : KV_DEFAULT_MODELS;
    snprintf(buf, sizeof buf, "%s/README.md", dir);
    FILE *f = fopen(buf, "r");
    if (!f) return NULL;
    fclose(f);
    return dir;
}

#ifdef KV_BIN_DIR
/* Where the service binaries are: KV_TEST_BIN_DIR (binaries carried to another machine,
 * e.g. scripts/gpu-bundle.sh's), else the build's bin directory. */
static inline const char *kv_test_bin_dir(void)
{
    const char *env = getenv("KV_TEST_BIN_DIR");
    return env && *env ? env : KV_BIN_DIR;
}
#endif

#endif
