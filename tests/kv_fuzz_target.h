/* The contract of an in-process fuzz target (tests/fuzz_*.c). Each is built two ways:
 *   - with libFuzzer (clang, -DKVSERVE_FUZZ=ON): fuzz_NAME, coverage-guided, for campaigns;
 *   - with fuzz_driver.c (any compiler; ctest runs it in CI): fuzz_NAME_run, which feeds the
 *     target plausible inputs from its own generator, half of them mutated, and replays
 *     files (a libFuzzer crash reproducer, a corpus directory).
 * A target never trusts its input and checks properties of what it computed; a broken
 * property ends the process with KV_FUZZ_REQUIRE's message and abort(), which libFuzzer
 * and ctest both report as a failure. */
#ifndef KV_FUZZ_TARGET_H
#define KV_FUZZ_TARGET_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kv_fuzz.h"
#include "kv_test.h"

/* One input: returns 0 (libFuzzer's convention; anything else is reserved). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes one plausible input (at most cap bytes) into buf; returns its length. The seeds
 * of a libFuzzer campaign (fuzz_NAME_run --write-seeds DIR N) and of every CI run. */
size_t kv_fuzz_target_seed(kv_fuzz_rng *r, uint8_t *buf, size_t cap);

#define KV_FUZZ_REQUIRE(cond, ...)                                                          \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "%s:%d: fuzz property broken: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fputc('\n', stderr);                                                            \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

/* The stories260K directory of the shared test models, for a target that needs a model (its
 * name in the skip message): exits 77 (skipped) without them. Also quiets the logs
 * (KVSERVE_LOG=error unless set): a line per refused message would be most of the time. */
static inline const char *kv_fuzz_stories260k(const char *target)
{
    static char dir[4096];
    setenv("KVSERVE_LOG", "error", 0);
    const char *models = kv_test_models_dir();
    char config[4200];
    snprintf(dir, sizeof dir, "%s/stories260K", models ? models : "");
    snprintf(config, sizeof config, "%s/config.json", dir);
    FILE *f = models ? fopen(config, "r") : NULL;
    if (!f)
        KV_TEST_SKIP("%s needs the shared stories260K model (set KVSERVE_TEST_MODELS): skipped", target);
    fclose(f);
    return dir;
}

#endif
