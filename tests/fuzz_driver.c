/* The driver of a fuzz target without libFuzzer (kv_fuzz_target.h):
 *   fuzz_NAME_run [--runs N] [--seed S]     N inputs from the target's generator, half of
 *                                           them mutated byte by byte (default 2000, seed 1)
 *   fuzz_NAME_run FILE|DIR...               replays each file (a crash reproducer, a corpus)
 *   fuzz_NAME_run --write-seeds DIR N       writes N generated inputs to DIR (a corpus to
 *                                           start a libFuzzer campaign from)
 * The seed and the run count come from KV_FUZZ_SEED / KV_FUZZ_RUNS too, so a CI failure
 * reproduces with the numbers it printed. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kv_fuzz_target.h"

#define MAX_FILE_BYTES (1 << 20)

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    static uint8_t buf[MAX_FILE_BYTES];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    /* A copy of exactly n bytes, so that ASan sees a read past the input. */
    uint8_t *copy = malloc(n ? n : 1);
    if (!copy)
        return -1;
    memcpy(copy, buf, n);
    LLVMFuzzerTestOneInput(copy, n);
    free(copy);
    return 0;
}

static int replay(const char *path, long *count)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "fuzz: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(sb.st_mode)) {
        (*count)++;
        return replay_file(path);
    }
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "fuzz: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        char child[4096];
        snprintf(child, sizeof child, "%s/%s", path, e->d_name);
        rc |= replay(child, count);
    }
    closedir(d);
    return rc;
}

static int write_seeds(const char *dir, long n, kv_fuzz_rng *r)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "fuzz: cannot create %s: %s\n", dir, strerror(errno));
        return 1;
    }
    static uint8_t buf[KV_FUZZ_BUF];
    for (long i = 0; i < n; i++) {
        size_t len = kv_fuzz_target_seed(r, buf, sizeof buf);
        char path[4096];
        snprintf(path, sizeof path, "%s/seed-%05ld", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
            fprintf(stderr, "fuzz: cannot write %s\n", path);
            return 1;
        }
    }
    fprintf(stderr, "fuzz: wrote %ld seeds to %s\n", n, dir);
    return 0;
}

static long number(const char *s, const char *what)
{
    char *end;
    long v = strtol(s, &end, 0);
    if (!*s || *end || v < 0) {
        fprintf(stderr, "fuzz: %s must be a non-negative number, not '%s'\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    const char *env = getenv("KV_FUZZ_RUNS");
    long runs = env ? number(env, "KV_FUZZ_RUNS") : 2000;
    env = getenv("KV_FUZZ_SEED");
    long seed = env ? number(env, "KV_FUZZ_SEED") : 1;
    int replayed = 0, rc = 0;
    long files = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc) {
            runs = number(argv[++i], "--runs");
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = number(argv[++i], "--seed");
        } else if (!strcmp(argv[i], "--write-seeds") && i + 2 < argc) {
            kv_fuzz_rng r = {0x9E3779B97F4A7C15ull ^ ((uint64_t)seed * 0xD1B54A32D192ED03ull)};
            return write_seeds(argv[i + 1], number(argv[i + 2], "the seed count"), &r);
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [--runs N] [--seed S] [FILE|DIR...] | --write-seeds DIR N\n", argv[0]);
            return 2;
        } else {
            rc |= replay(argv[i], &files);
            replayed = 1;
        }
    }
    if (replayed) {
        fprintf(stderr, "fuzz: replayed %ld files\n", files);
        return rc ? 1 : 0;
    }
    kv_fuzz_rng r = {0x9E3779B97F4A7C15ull ^ ((uint64_t)seed * 0xD1B54A32D192ED03ull)};
    static uint8_t buf[KV_FUZZ_BUF];
    for (long i = 0; i < runs; i++) {
        size_t len = kv_fuzz_target_seed(&r, buf, KV_FUZZ_BUF / 2);
        if (kv_fuzz_below(&r, 2))
            len = kv_fuzz_mutate(&r, buf, len);
        uint8_t *copy = malloc(len ? len : 1);
        if (!copy)
            return 1;
        memcpy(copy, buf, len);
        LLVMFuzzerTestOneInput(copy, len);
        free(copy);
    }
    fprintf(stderr, "fuzz: %ld inputs (seed %ld), no property broken\n", runs, seed);
    return 0;
}
