/* Minimal test harness: CHECK macros count failures; main returns
 * kv_test_result(). A test that lacks what it needs calls KV_TEST_SKIP
 * (exit 77, which ctest reports as skipped, never passed). */
#ifndef KV_TEST_H
#define KV_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One pair of counters per test program, however many of its files check things: weak
 * definitions, which the linker merges (static ones gave each file its own, so a failure
 * in a second file, test_engine_cuda_synth.c say, never reached kv_test_result). */
__attribute__((weak)) int kv_test_failures;
__attribute__((weak)) int kv_test_checks;

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

/* Each side is evaluated once: a side is often a call with effects (a send, a receive). */
#define CHECK_EQ_INT(a, b)                                                                     \
    do {                                                                                       \
        long long kv_check_a_ = (long long)(a), kv_check_b_ = (long long)(b);                  \
        kv_test_checks++;                                                                      \
        if (kv_check_a_ != kv_check_b_) {                                                      \
            kv_test_failures++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s: %lld != %lld\n", __FILE__, __LINE__, \
                    #a, #b, kv_check_a_, kv_check_b_);                                         \
        }                                                                                      \
    } while (0)

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

/* The shared reference of stories260K ("Once upon a time", 256 positions): the token fed at
 * each position, in position order, into ids[0..cap). Returns how many were read (0 when the
 * file is missing). */
static inline int kv_test_reference_tokens(const char *models, int32_t *ids, int cap)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/stories260K/reference/once_upon_a_time.n256.tokens.txt", models);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[512];
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        int pos, tok;
        if (line[0] != '#' && sscanf(line, "%d %d", &pos, &tok) == 2 && pos == n) ids[n++] = tok;
    }
    fclose(f);
    return n;
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
