/* Device selection and the engine's device-independent API, on whatever machine runs it:
 * without a GPU (CI) "cuda:N" is refused with the reason, "auto" falls back to the cpu and
 * an engine on cuda:0 fails cleanly; with one, cuda:0 is accepted. Malformed names are
 * refused everywhere; the CPU engine reports f32 blocks and moves them faithfully. */
#include "engine.h"
#include "kv_test.h"

static int has_reason(const char *msg)
{
    /* A CUDA build on a machine without a GPU, or a build without CUDA. */
    return strstr(msg, "no CUDA device") || strstr(msg, "no CUDA support");
}

static void check_parse(int *have_gpu)
{
    int d = 5;
    kv_err err;
    CHECK(kv_engine_parse_device("cpu", &d, &err) == 0 && d == -1);
    CHECK(kv_engine_parse_device("auto", &d, &err) == 0);
    *have_gpu = d >= 0;
    fprintf(stderr, "auto -> %s\n", d >= 0 ? "cuda:0" : "cpu");
    int rc = kv_engine_parse_device("cuda:0", &d, &err);
    if (*have_gpu) {
        CHECK(rc == 0 && d == 0);
    } else {
        CHECK_MSG(rc == KV_EUNSUPPORTED && d == -1 && has_reason(err.msg) && strstr(err.msg, "cuda:0"), "rc %d: %s", rc,
                  err.msg);
        fprintf(stderr, "cuda:0 refused: %s\n", err.msg);
        CHECK(kv_engine_parse_device("cuda", &d, &err) == KV_EUNSUPPORTED && d == -1);
    }
    rc = kv_engine_parse_device("cuda:99", &d, &err);
    CHECK_MSG(rc == KV_EUNSUPPORTED && d == -1 && strstr(err.msg, "cuda:99"), "rc %d: %s", rc, err.msg);
    const char *bad[] = {"gpu", "cuda:", "cuda:x", "cuda:-1", "cuda:1x", "", "CPU", "cuda:123456", "cuda0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        rc = kv_engine_parse_device(bad[i], &d, &err);
        CHECK_MSG(rc == KV_EINVAL && d == -1 && strstr(err.msg, "cpu, auto or cuda:N"), "'%s': rc %d: %s", bad[i], rc,
                  err.msg);
    }
}

static void check_engines(const kv_model *m, int have_gpu)
{
    kv_engine_options o;
    kv_engine_options_default(&o);
    kv_engine *e = NULL;
    kv_err err;
    if (!have_gpu) {
        o.device = 0;
        int rc = kv_engine_create(m, &o, &e, &err);
        CHECK_MSG(rc != 0 && e == NULL && has_reason(err.msg), "rc %d: %s", rc, err.msg);
        o.device = -1;
    }
    o.precision = KV_PRECISION_BF16;
    CHECK(kv_engine_create(m, &o, &e, &err) == KV_EUNSUPPORTED && e == NULL && strstr(err.msg, "f32 only"));
    o.precision = (kv_precision)9;
    CHECK(kv_engine_create(m, &o, &e, &err) == KV_EINVAL && e == NULL);
    o.precision = KV_PRECISION_F32;
    CHECK(kv_engine_create(m, &o, &e, &err) == 0);
    if (!e)
        return;
    CHECK(kv_engine_device(e) == -1 && !strcmp(kv_engine_kv_dtype(e), "f32"));
    size_t bb = kv_engine_block_bytes(e);
    CHECK_EQ_INT(bb, kv_pool_block_bytes(&kv_engine_pool(e)->shape));
    CHECK((char *)kv_engine_block_ptr(e, 2) - (char *)kv_engine_block_ptr(e, 0) == 2 * (long)bb);
    CHECK(kv_engine_block_ptr(e, -1) == NULL);
    /* Bytes out of two blocks, into two others, back out: unchanged. */
    kv_seq s = {0};
    const int32_t toks[20] = {1, 403, 407, 261, 378, 432, 383, 286, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    CHECK(kv_engine_prefill(e, &s, toks, 20, NULL, 0, &err) == 0 && s.n_blocks == 2);
    unsigned char *a = malloc(2 * bb), *b = malloc(2 * bb);
    int32_t dst[2];
    CHECK(kv_pool_reserve(kv_engine_pool(e), 2, dst, &err) == 0);
    CHECK(kv_engine_blocks_read(e, s.blocks, 2, a, &err) == 0);
    CHECK(kv_engine_blocks_write(e, dst, 2, a, &err) == 0);
    CHECK(kv_engine_blocks_read(e, dst, 2, b, &err) == 0);
    CHECK(!memcmp(a, b, 2 * bb));
    int32_t bad = -3;
    CHECK(kv_engine_blocks_read(e, &bad, 1, a, &err) == KV_ERANGE);
    kv_pool_release(kv_engine_pool(e), dst, 2);
    kv_seq_release(&s, kv_engine_pool(e));
    free(a);
    free(b);
    kv_engine_free(e);
}

int main(void)
{
    int have_gpu = 0;
    check_parse(&have_gpu);
    const char *dir = kv_test_models_dir();
    if (dir) {
        char mdir[4096];
        snprintf(mdir, sizeof mdir, "%s/stories260K", dir);
        kv_model *m = NULL;
        kv_err err;
        CHECK_MSG(kv_model_load(mdir, &m, &err) == 0, "%s", err.msg);
        if (m)
            check_engines(m, have_gpu);
        kv_model_free(m);
    } else {
        fprintf(stderr, "shared models not found: engine checks skipped\n");
    }
    return kv_test_result();
}
