/* kv-router units: the hash map, the worker registry and scheduling policy, capacity
 * promises, Generate validation (every error code), in-order token forwarding, deadline
 * transitions; then a router driven in-process with fake workers over inproc sockets
 * (whole request life cycles, cancel, deadlines, worker death, refusals). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "kv_test.h"
#include "kv_time.h"
#include "router.h"

/* ---- helpers ---------------------------------------------------------------------- */

static kv_wire_route route_of(const char *id)
{
    kv_wire_route r;
    memset(&r, 0, sizeof r);
    r.len = strlen(id);
    memcpy(r.id, id, r.len);
    return r;
}

/* stories260K's KV shape: 5 layers x 4 kv heads x head dim 8, 16-token blocks, f32. */
static void fill_layout(Kvserve__KvLayout *l, uint32_t block_size)
{
    kvserve__kv_layout__init(l);
    l->n_layers = 5;
    l->n_kv_heads = 4;
    l->head_dim = 8;
    l->block_size = block_size;
    l->dtype = "f32";
    l->block_bytes = (uint64_t)2 * 5 * 4 * 8 * block_size * 4;
}

static void fill_register(Kvserve__Register *reg, Kvserve__KvLayout *l, const char *id, int role, const char *fp,
                          uint32_t blocks, const char *ep)
{
    kvserve__register__init(reg);
    reg->worker_id = (char *)id;
    reg->role = role;
    reg->model = "stories260K";
    reg->model_fingerprint = (char *)fp;
    reg->kv_endpoint = (char *)ep;
    reg->device = "cpu";
    reg->layout = l;
    reg->kv_blocks_total = blocks;
    reg->pid = 1234;
}

/* ---- map -------------------------------------------------------------------------- */

static void test_map(void)
{
    router_map m;
    router_map_init(&m);
    CHECK(router_map_get(&m, "x", 1) == NULL);
    CHECK(router_map_del(&m, "x", 1) == NULL);
    static int vals[2000];
    char key[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof key, "key-%d", i);
        CHECK(router_map_put(&m, key, strlen(key), &vals[i]) == 0);
    }
    CHECK_EQ_INT(router_map_count(&m), 2000);
    int ok = 1;
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof key, "key-%d", i);
        ok &= router_map_get(&m, key, strlen(key)) == &vals[i];
    }
    CHECK(ok);
    /* Delete the even ones, re-insert some: tombstones are reused and probing still finds all. */
    for (int i = 0; i < 2000; i += 2) {
        snprintf(key, sizeof key, "key-%d", i);
        CHECK(router_map_del(&m, key, strlen(key)) == &vals[i]);
    }
    CHECK_EQ_INT(router_map_count(&m), 1000);
    for (int i = 0; i < 200; i += 2) {
        snprintf(key, sizeof key, "key-%d", i);
        CHECK(router_map_put(&m, key, strlen(key), &vals[i]) == 0);
    }
    ok = 1;
    for (int i = 0; i < 2000; i++) {
        snprintf(key, sizeof key, "key-%d", i);
        void *v = router_map_get(&m, key, strlen(key));
        ok &= (i % 2 == 0 && i >= 200) ? v == NULL : v == &vals[i];
    }
    CHECK(ok);
    /* Replace keeps the count; binary keys with NUL bytes work. */
    CHECK(router_map_put(&m, "key-1", 5, &vals[5]) == 0);
    CHECK(router_map_get(&m, "key-1", 5) == &vals[5]);
    CHECK_EQ_INT(router_map_count(&m), 1100);
    CHECK(router_map_put(&m, "a\0b", 3, &vals[0]) == 0);
    CHECK(router_map_get(&m, "a\0c", 3) == NULL);
    CHECK(router_map_get(&m, "a\0b", 3) == &vals[0]);
    size_t pos = 0, n = 0;
    while (router_map_next(&m, &pos, NULL, NULL, NULL))
        n++;
    CHECK_EQ_INT(n, 1101);
    router_map_free(&m);
}

/* ---- workers and scheduling --------------------------------------------------------- */

static router_worker *add_worker(router_workers *w, const char *id, int role, uint32_t blocks, uint32_t max_ctx)
{
    Kvserve__Register reg;
    Kvserve__KvLayout l;
    fill_layout(&l, 16);
    fill_register(&reg, &l, id, role, "abcd1234", blocks, "tcp://127.0.0.1:9");
    reg.max_context = max_ctx;
    kv_wire_route r = route_of(id);
    return router_workers_add(w, &r, &reg, 100.0);
}

static void test_register_checks(void)
{
    router_workers w;
    router_workers_init(&w);
    router_model_shape shape = {5, 4, 8, "abcd1234"};
    Kvserve__Register reg;
    Kvserve__KvLayout l;
    char msg[512];
    fill_layout(&l, 16);
    fill_register(&reg, &l, "d1", KVSERVE__WORKER_ROLE__ROLE_DECODE, "abcd1234", 64, "tcp://127.0.0.1:9");
    CHECK_EQ_INT(router_workers_check_register(&w, &shape, &reg, msg, sizeof msg), 0);
    reg.model_fingerprint = "ffffffff";
    CHECK_EQ_INT(router_workers_check_register(&w, &shape, &reg, msg, sizeof msg), KVSERVE__ERROR_CODE__UNKNOWN_MODEL);
    CHECK(strstr(msg, "ffffffff") != NULL);
    reg.model_fingerprint = "abcd1234";
    l.n_layers = 6;
    CHECK_EQ_INT(router_workers_check_register(&w, &shape, &reg, msg, sizeof msg),
                 KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    l.n_layers = 5;
    reg.role = KVSERVE__WORKER_ROLE__ROLE_UNSPECIFIED;
    CHECK_EQ_INT(router_workers_check_register(&w, &shape, &reg, msg, sizeof msg),
                 KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    reg.role = KVSERVE__WORKER_ROLE__ROLE_DECODE;
    reg.kv_endpoint = "";
    CHECK_EQ_INT(router_workers_check_register(&w, &shape, &reg, msg, sizeof msg),
                 KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    reg.kv_endpoint = "tcp://127.0.0.1:9";
    reg.layout = NULL;
    CHECK_EQ_INT(router_workers_check_register(&w, &shape, &reg, msg, sizeof msg),
                 KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    reg.layout = &l;
    reg.worker_id = "";
    CHECK_EQ_INT(router_workers_check_register(&w, &shape, &reg, msg, sizeof msg),
                 KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    reg.worker_id = "d1";
    /* The first worker fixes the cluster layout; a different block size is refused. */
    kv_wire_route r = route_of("d1");
    CHECK(router_workers_add(&w, &r, &reg, 1.0) != NULL);
    CHECK(w.have_layout && w.layout.block_size == 16);
    Kvserve__KvLayout l32;
    fill_layout(&l32, 32);
    reg.layout = &l32;
    reg.worker_id = "p1";
    reg.role = KVSERVE__WORKER_ROLE__ROLE_PREFILL;
    CHECK_EQ_INT(router_workers_check_register(&w, &shape, &reg, msg, sizeof msg),
                 KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    CHECK(strstr(msg, "cluster") != NULL);
    router_workers_remove(&w, router_workers_find(&w, &r));
    CHECK(!w.have_layout); /* an empty cluster takes the next layout */
    CHECK_EQ_INT(router_workers_check_register(&w, &shape, &reg, msg, sizeof msg), 0);
    router_workers_free(&w);
}

static void test_pick(void)
{
    router_workers w;
    router_workers_init(&w);
    router_worker *db = add_worker(&w, "d-b", KVSERVE__WORKER_ROLE__ROLE_DECODE, 100, 0);
    router_worker *da = add_worker(&w, "d-a", KVSERVE__WORKER_ROLE__ROLE_DECODE, 100, 0);
    router_worker *dc = add_worker(&w, "d-c", KVSERVE__WORKER_ROLE__ROLE_DECODE, 10, 0);
    router_worker *pb = add_worker(&w, "p-b", KVSERVE__WORKER_ROLE__ROLE_PREFILL, 50, 0);
    router_worker *pa = add_worker(&w, "p-a", KVSERVE__WORKER_ROLE__ROLE_PREFILL, 50, 0);
    CHECK(db && da && dc && pb && pa);
    CHECK(router_workers_find(&w, &(kv_wire_route){.id = "d-c", .len = 3}) == dc);
    /* Ties (no load): lowest id. */
    CHECK(router_pick_decode(&w, 5, 80) == da);
    CHECK(router_pick_prefill(&w, 3, NULL) == pa);
    /* Fewest active requests wins over id. */
    da->active = 2;
    CHECK(router_pick_decode(&w, 5, 80) == db);
    db->active = 2;
    CHECK(router_pick_decode(&w, 5, 80) == dc);
    /* Only workers with enough free blocks qualify: d-c holds 10. */
    CHECK(router_pick_decode(&w, 20, 320) == da);
    /* Blocks promised in flight count against free blocks. */
    da->promised = 90;
    CHECK_EQ_INT(router_worker_available(da), 10);
    CHECK(router_pick_decode(&w, 20, 320) == db);
    db->promised = 85;
    CHECK(router_pick_decode(&w, 20, 320) == NULL);
    CHECK(router_pick_decode(&w, 10, 160) == dc); /* all three fit; dc has the least load */
    dc->active = 5;
    CHECK(router_pick_decode(&w, 10, 160) == da); /* da and db tie on load: id */
    /* A heartbeat resets the free-block picture. */
    Kvserve__Heartbeat hb;
    kvserve__heartbeat__init(&hb);
    hb.kv_blocks_free = 3;
    hb.kv_blocks_total = 100;
    router_workers_heartbeat(da, &hb, 101.0);
    CHECK_EQ_INT(da->free_est, 3);
    CHECK_EQ_INT(router_worker_available(da), 3 - 90);
    CHECK(router_pick_decode(&w, 10, 160) == db);
    /* Whole pools: a request larger than every decode pool can never fit. */
    CHECK(!router_never_fits_decode(&w, 100, 1600));
    CHECK(router_never_fits_decode(&w, 101, 1616));
    CHECK(!router_never_fits_prefill(&w, 50));
    CHECK(router_never_fits_prefill(&w, 51));
    CHECK(router_pick_prefill(&w, 51, NULL) == NULL);
    /* Prefill: the shortest queue, then id. */
    pa->active = 1;
    CHECK(router_pick_prefill(&w, 3, NULL) == pb);
    pb->active = 1;
    CHECK(router_pick_prefill(&w, 3, NULL) == pa);
    /* A decode worker with a shorter context than the sequence does not qualify. */
    router_worker *dd = add_worker(&w, "d-0", KVSERVE__WORKER_ROLE__ROLE_DECODE, 100, 64);
    CHECK(router_pick_decode(&w, 2, 32) == dd);
    CHECK(router_pick_decode(&w, 5, 80) != dd);
    /* Pairs without a KV transport in common: p-a refused d-0, so d-0's requests go to p-b
     * however loaded; once p-b refuses it too, d-0 is no pick at all, and a request only
     * d-0 could hold has no pair left. Other decode workers are untouched. */
    CHECK(router_pair_refuse(pa, dd) == KV_OK && router_pair_refuse(pa, dd) == KV_OK && pa->n_refused == 1);
    pb->active = 9;
    CHECK(router_pick_prefill(&w, 3, dd) == pb);
    CHECK(router_pick_prefill(&w, 3, da) == pa);
    CHECK(!router_no_pair(&w, 2, 32, 1));
    CHECK(router_pair_refuse(pb, dd) == KV_OK);
    CHECK(router_pick_prefill(&w, 3, dd) == NULL);
    CHECK(router_pick_decode(&w, 2, 32) != dd);
    CHECK(!router_no_pair(&w, 2, 32, 1));   /* d-a, d-b and d-c could hold it too */
    dd->max_context = 1000000;
    da->max_context = db->max_context = dc->max_context = 16;
    CHECK(router_no_pair(&w, 2, 32, 1));    /* only d-0 holds 32 tokens, and nobody ships to it */
    /* Health: workers silent for longer than the timeout. */
    router_worker *out[8];
    da->last_heartbeat = 90.0;
    CHECK_EQ_INT(router_workers_expired(&w, 101.0, 5.0, out, 8), 1);
    CHECK(out[0] == da);
    router_workers_free(&w);

    /* No decode worker registered: nothing "never fits" (one may come). */
    router_workers_init(&w);
    CHECK(!router_never_fits_decode(&w, 1000, 16000));
    CHECK(router_pick_decode(&w, 1, 1) == NULL);
    router_workers_free(&w);
}

static void test_blocks_for(void)
{
    CHECK_EQ_INT(router_blocks_for(0, 16), 0);
    CHECK_EQ_INT(router_blocks_for(1, 16), 1);
    CHECK_EQ_INT(router_blocks_for(16, 16), 1);
    CHECK_EQ_INT(router_blocks_for(17, 16), 2);
    CHECK_EQ_INT(router_blocks_for(512, 16), 32);
}

/* ---- validation ------------------------------------------------------------------- */

static kv_model_config stories_config(void)
{
    kv_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 5;
    cfg.n_heads = 8;
    cfg.n_kv_heads = 4;
    cfg.head_dim = 8;
    cfg.vocab_size = 512;
    cfg.max_position = 512;
    cfg.bos_id = 1;
    return cfg;
}

static int validate(const router_model *m, const router_opts *o, const router_requests *t, const char *client,
                    const Kvserve__GenerateRequest *g, router_validated *v)
{
    char msg[512];
    kv_wire_route r = route_of(client);
    int code = router_validate_generate(m, o, t, &r, g, v, msg, sizeof msg);
    if (code)
        CHECK_MSG(msg[0] != '\0', "an error without a message (code %d)", code);
    return code;
}

static void test_validate(kv_tokenizer *tok)
{
    kv_model_config cfg = stories_config();
    router_model m;
    router_opts o;
    router_opts_default(&o);
    router_model_from_config(&m, "stories260K", &cfg, tok, 0);
    CHECK_EQ_INT(m.max_prompt, 511);
    router_requests t;
    router_requests_init(&t);
    int32_t toks[600];
    for (int i = 0; i < 600; i++)
        toks[i] = 1 + i % 500;
    Kvserve__GenerateRequest g;
    Kvserve__SamplingParams sp;
    router_validated v;
#define RESET()                                   \
    do {                                          \
        kvserve__generate_request__init(&g);      \
        kvserve__sampling_params__init(&sp);      \
        g.request_id = "r1";                      \
        g.prompt_tokens = toks;                   \
        g.n_prompt_tokens = 5;                    \
    } while (0)

    RESET();
    CHECK_EQ_INT(validate(&m, &o, &t, "c1", &g, &v), 0);
    CHECK_EQ_INT(v.n_prompt, 5);
    CHECK_EQ_INT(v.max_tokens, 256); /* 0 means 256 */
    CHECK(v.sampling.temperature == 0.0f && v.sampling.top_p == 1.0f);
    CHECK(fabs(v.deadline_s - 600.0) < 1e-9);
    free(v.prompt);

    /* request_id */
    RESET();
    g.request_id = "";
    CHECK_EQ_INT(validate(&m, &o, &t, "c1", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    char long_id[200];
    memset(long_id, 'x', 129);
    long_id[129] = '\0';
    g.request_id = long_id;
    CHECK_EQ_INT(validate(&m, &o, &t, "c1", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    long_id[128] = '\0';
    CHECK_EQ_INT(validate(&m, &o, &t, "c1", &g, &v), 0);
    free(v.prompt);

    /* duplicate: in flight from the same client; another client may reuse the id */
    kv_wire_route c1 = route_of("c1");
    int32_t *p = malloc(sizeof *p);
    p[0] = 1;
    CHECK(router_requests_add(&t, &c1, "r1", p, 1, 1.0) != NULL);
    RESET();
    CHECK_EQ_INT(validate(&m, &o, &t, "c1", &g, &v), KVSERVE__ERROR_CODE__DUPLICATE_REQUEST);
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), 0);
    free(v.prompt);

    /* model */
    RESET();
    g.model = "llama-70b";
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__UNKNOWN_MODEL);
    g.model = "stories260K";
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), 0);
    free(v.prompt);

    /* sampling */
    const float bad_t[] = {-0.5f, 100.5f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_t / sizeof *bad_t; i++) {
        RESET();
        sp.temperature = bad_t[i];
        g.sampling = &sp;
        CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    }
    const float bad_p[] = {-0.1f, 1.5f, NAN};
    for (size_t i = 0; i < sizeof bad_p / sizeof *bad_p; i++) {
        RESET();
        sp.top_p = bad_p[i];
        g.sampling = &sp;
        CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    }
    RESET();
    sp.temperature = 0.7f;
    sp.top_p = 0.0f; /* 0 means off */
    sp.top_k = 40;
    sp.seed = 99;
    g.sampling = &sp;
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), 0);
    CHECK(v.sampling.top_p == 1.0f && v.sampling.top_k == 40 && v.sampling.seed == 99 &&
          v.sampling.temperature == 0.7f);
    free(v.prompt);
    sp.temperature = 100.0f;
    sp.top_p = 1.0f;
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), 0);
    free(v.prompt);

    /* prompt */
    RESET();
    g.n_prompt_tokens = 0;
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    g.prompt = "";
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    RESET();
    int32_t oov[3] = {1, 512, 3};
    g.prompt_tokens = oov;
    g.n_prompt_tokens = 3;
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    oov[1] = -1;
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    oov[1] = 511;
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), 0);
    free(v.prompt);

    /* length: prompt + 1 <= context, prompt <= --max-prompt-tokens; max_tokens clipped */
    RESET();
    g.n_prompt_tokens = 512;
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__PROMPT_TOO_LONG);
    g.n_prompt_tokens = 511;
    g.max_tokens = 100;
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), 0);
    CHECK_EQ_INT(v.max_tokens, 1);
    free(v.prompt);
    g.n_prompt_tokens = 500;
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), 0);
    CHECK_EQ_INT(v.max_tokens, 12);
    free(v.prompt);
    router_model m8;
    router_model_from_config(&m8, "stories260K", &cfg, tok, 8);
    g.n_prompt_tokens = 9;
    CHECK_EQ_INT(validate(&m8, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__PROMPT_TOO_LONG);
    g.n_prompt_tokens = 8;
    CHECK_EQ_INT(validate(&m8, &o, &t, "c2", &g, &v), 0);
    free(v.prompt);

    /* deadline: the client's, at most the server's */
    RESET();
    g.deadline_ms = 1500;
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), 0);
    CHECK(fabs(v.deadline_s - 1.5) < 1e-9);
    free(v.prompt);
    g.deadline_ms = 4000000000u;
    CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), 0);
    CHECK(fabs(v.deadline_s - 600.0) < 1e-9);
    free(v.prompt);

    /* text prompts: tokenized with BOS prepended (as kvctl generate --local) */
    RESET();
    g.n_prompt_tokens = 0;
    g.prompt = "Once upon a time";
    if (tok) {
        CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), 0);
        const int32_t want[] = {1, 403, 407, 261, 378};
        CHECK_EQ_INT(v.n_prompt, 5);
        CHECK(v.n_prompt == 5 && !memcmp(v.prompt, want, sizeof want));
        free(v.prompt);
        /* A text far beyond any token count is refused before tokenizing. */
        size_t big = (size_t)600 * 1024 + 10;
        char *text = malloc(big + 1);
        memset(text, 'a', big);
        text[big] = '\0';
        g.prompt = text;
        CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__PROMPT_TOO_LONG);
        /* and one that tokenizes to too many tokens */
        text[3000] = '\0';
        for (int i = 0; i < 3000; i++)
            text[i] = "ab ,."[i % 5];
        CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__PROMPT_TOO_LONG);
        free(text);

        /* chat_messages: exactly one prompt form; no template, bad JSON and template errors refused */
        g.prompt = "";
        g.chat_messages = "[{\"role\": \"user\", \"content\": \"Once upon a time\"}]";
        CHECK_EQ_INT(validate(&m, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT); /* no template */
        static const char config[] =
            "{\"bos_token\": \"<s>\", \"chat_template\": \"{{ bos_token }}{% for m in messages %}"
            "{% if m.role != 'user' %}{{ raise_exception('only user turns') }}{% endif %}{{ m.content }}{% endfor %}\"}";
        kv_err err;
        json_doc *doc = json_parse(config, sizeof config - 1, &err);
        CHECK(doc != NULL);
        router_model mc = m;
        CHECK(doc && kv_chat_template_from_config(json_root(doc), NULL, &mc.prompt.chat, &err) == 0);
        if (mc.prompt.chat) {
            /* The template writes BOS; the text is encoded without special tokens (HF
             * apply_chat_template), so BOS is not doubled. */
            CHECK_EQ_INT(validate(&mc, &o, &t, "c2", &g, &v), 0);
            CHECK(v.n_prompt == 5 && !memcmp(v.prompt, want, sizeof want));
            free(v.prompt);
            g.prompt = "Once";
            CHECK_EQ_INT(validate(&mc, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
            g.prompt = "";
            g.chat_messages = "[{\"role\": \"user\", \"content\": ";
            CHECK_EQ_INT(validate(&mc, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
            g.chat_messages = "{\"role\": \"user\"}";
            CHECK_EQ_INT(validate(&mc, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
            g.chat_messages = "[{\"role\": \"system\", \"content\": \"x\"}]";
            char msg[512];
            kv_wire_route r = route_of("c2");
            CHECK_EQ_INT(router_validate_generate(&mc, &o, &t, &r, &g, &v, msg, sizeof msg),
                         KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
            CHECK_MSG(strstr(msg, "only user turns") != NULL, "template error not passed on: %s", msg);
            kv_chat_template_free(mc.prompt.chat);
        }
        json_doc_free(doc);
        g.chat_messages = NULL;
    } else {
        router_model nt;
        router_model_from_config(&nt, "stories260K", &cfg, NULL, 0);
        CHECK_EQ_INT(validate(&nt, &o, &t, "c2", &g, &v), KVSERVE__ERROR_CODE__INVALID_ARGUMENT);
    }
#undef RESET
    router_requests_free(&t);
}

/* ---- token reassembly ------------------------------------------------------------- */

typedef struct collected {
    int32_t tokens[64];
    size_t n;
    int runs;
    int finish;
    uint32_t first_index[16];
    float lps[64];             /* the logprob delivered with each token */
} collected;

static int collect(void *ctx, router_req *r, const int32_t *tokens, const kc_logprobs *lp, size_t n, int finish,
                   double decode_ms)
{
    collected *c = ctx;
    for (size_t i = 0; lp && i < n && c->n + i < 64; i++)
        c->lps[c->n + i] = lp[i].logprob;
    if (c->runs < 16)
        c->first_index[c->runs] = r->next_index - (uint32_t)n;
    c->runs++;
    for (size_t i = 0; i < n && c->n < 64; i++)
        c->tokens[c->n++] = tokens[i];
    if (finish) {
        c->finish = finish;
        r->d_done = 1;
    }
    return 0;
}

static void test_reorder(void)
{
    router_req *r = calloc(1, sizeof *r);
    collected c = {0};
    const int none = KVSERVE__FINISH_REASON__FINISH_NONE;
    int32_t a[] = {10}, b[] = {11}, cc[] = {12}, de[] = {13, 14}, bc[] = {11, 12};
    CHECK(router_req_accept_tokens(r, 2, cc, NULL, 1, none, 0, collect, &c) == 0);
    CHECK_EQ_INT(c.runs, 0); /* index 2 waits for 0 and 1 */
    CHECK(router_req_accept_tokens(r, 0, a, NULL, 1, none, 0, collect, &c) == 0);
    CHECK_EQ_INT(c.n, 1);
    CHECK_EQ_INT(r->next_index, 1);
    CHECK(router_req_accept_tokens(r, 1, b, NULL, 1, none, 0, collect, &c) == 0);
    CHECK_EQ_INT(c.n, 3); /* 1 delivered, then the buffered 2 */
    CHECK(c.tokens[0] == 10 && c.tokens[1] == 11 && c.tokens[2] == 12);
    CHECK_EQ_INT(r->n_pending, 0);
    /* Duplicates and overlaps: only the new part goes out. */
    CHECK(router_req_accept_tokens(r, 0, a, NULL, 1, none, 0, collect, &c) == 0);
    CHECK(router_req_accept_tokens(r, 1, bc, NULL, 2, none, 0, collect, &c) == 0);
    CHECK_EQ_INT(c.n, 3);
    /* A finish-only event ahead of its tokens is held until they arrive. */
    CHECK(router_req_accept_tokens(r, 5, NULL, NULL, 0, KVSERVE__FINISH_REASON__FINISH_EOS, 7.5, collect, &c) == 0);
    CHECK_EQ_INT(c.finish, 0);
    CHECK(router_req_accept_tokens(r, 3, de, NULL, 2, none, 0, collect, &c) == 0);
    CHECK_EQ_INT(c.n, 5);
    CHECK_EQ_INT(c.finish, KVSERVE__FINISH_REASON__FINISH_EOS);
    CHECK_EQ_INT(r->next_index, 5);
    CHECK_EQ_INT(c.first_index[0], 0);
    CHECK_EQ_INT(c.first_index[2], 2);
    /* After the finish nothing more is delivered. */
    CHECK(router_req_accept_tokens(r, 5, a, NULL, 1, none, 0, collect, &c) == 0);
    CHECK_EQ_INT(c.n, 5);
    CHECK_EQ_INT(r->n_pending, 0);
    free(r->pending);
    free(r);

    /* Logprobs travel with their tokens, through the buffer of early events too. */
    r = calloc(1, sizeof *r);
    memset(&c, 0, sizeof c);
    kc_logprobs l0 = {.logprob = -0.5f}, l12[2] = {{.logprob = -1.5f}, {.logprob = -2.5f}};
    CHECK(router_req_accept_tokens(r, 1, bc, l12, 2, none, 0, collect, &c) == 0);
    CHECK(router_req_accept_tokens(r, 0, a, &l0, 1, none, 0, collect, &c) == 0);
    CHECK_EQ_INT(c.n, 3);
    CHECK(c.lps[0] == -0.5f && c.lps[1] == -1.5f && c.lps[2] == -2.5f);
    free(r->pending);
    free(r);

    /* Too many events waiting for a missing index: refused, memory bounded. */
    r = calloc(1, sizeof *r);
    memset(&c, 0, sizeof c);
    int rc = 0;
    for (uint32_t i = 1; i <= ROUTER_MAX_PENDING_EVENTS + 1 && !rc; i++)
        rc = router_req_accept_tokens(r, i, a, NULL, 1, none, 0, collect, &c);
    CHECK_EQ_INT(rc, KV_EFULL);
    CHECK_EQ_INT(c.runs, 0);
    for (size_t i = 0; i < r->n_pending; i++)
        free(r->pending[i].tokens);
    free(r->pending);
    free(r);
}

/* ---- deadlines -------------------------------------------------------------------- */

static void test_deadlines(void)
{
    router_req *r = calloc(1, sizeof *r);
    router_deadlines d = {.queue_s = 1, .reserve_s = 2, .prefill_s = 3, .token_s = 4};
    char msg[256];
    r->t_accept = 100.0;
    router_req_enter(r, RQ_QUEUED, &d, 100.0);
    CHECK(router_req_next_deadline(r) == 101.0);
    CHECK_EQ_INT(router_req_expired(r, 100.99, &d, msg, sizeof msg), 0);
    CHECK_EQ_INT(router_req_expired(r, 101.0, &d, msg, sizeof msg), KVSERVE__ERROR_CODE__NO_CAPACITY);
    router_req_enter(r, RQ_RESERVING, &d, 100.5);
    CHECK_EQ_INT(router_req_expired(r, 102.4, &d, msg, sizeof msg), 0);
    CHECK_EQ_INT(router_req_expired(r, 102.5, &d, msg, sizeof msg), KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED);
    CHECK(strstr(msg, "reservation") != NULL);
    /* A refused reservation re-queues: the queue deadline still counts from acceptance. */
    router_req_enter(r, RQ_QUEUED, &d, 100.8);
    CHECK_EQ_INT(router_req_expired(r, 101.0, &d, msg, sizeof msg), KVSERVE__ERROR_CODE__NO_CAPACITY);
    router_req_enter(r, RQ_RESERVING, &d, 100.9);
    router_req_enter(r, RQ_PREFILLING, &d, 101.0);
    CHECK(r->t_prefill_start == 101.0);
    CHECK_EQ_INT(router_req_expired(r, 103.9, &d, msg, sizeof msg), 0);
    CHECK_EQ_INT(router_req_expired(r, 104.0, &d, msg, sizeof msg), KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED);
    CHECK(strstr(msg, "PrefillDone") != NULL);
    /* PrefillDone: the prefill deadline is off, the first token's is on. */
    r->p_done = 1;
    router_req_enter(r, RQ_TRANSFERRING, &d, 102.0);
    CHECK(r->dl_stage == 0 && r->dl_token == 106.0);
    CHECK_EQ_INT(router_req_expired(r, 105.0, &d, msg, sizeof msg), 0);
    CHECK_EQ_INT(router_req_expired(r, 106.0, &d, msg, sizeof msg), KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED);
    CHECK(strstr(msg, "no token") != NULL);
    router_req_enter(r, RQ_DECODING, &d, 103.0);
    CHECK(r->dl_stage == 0);
    /* Decoding before PrefillDone keeps the prefill deadline armed. */
    r->p_done = 0;
    router_req_enter(r, RQ_PREFILLING, &d, 103.0);
    router_req_enter(r, RQ_DECODING, &d, 103.5);
    CHECK(r->dl_stage == 106.0);
    /* The whole-request deadline; the earliest passed deadline names the failure. */
    r->dl_total = 100.2;
    CHECK(router_req_next_deadline(r) == 100.2);
    CHECK_EQ_INT(router_req_expired(r, 200.0, &d, msg, sizeof msg), KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED);
    CHECK(strstr(msg, "request deadline") != NULL);
    router_req_enter(r, RQ_DONE, &d, 104.0);
    CHECK(router_req_next_deadline(r) == 0);
    CHECK_EQ_INT(router_req_expired(r, 1e9, &d, msg, sizeof msg), 0);
    free(r);
}

/* ---- an in-process router with fake workers ----------------------------------------- */

typedef struct harness {
    void *ctx;
    router_state st;
    void *client, *dec, *pre;
    int ok;
} harness;

static void *dealer(harness *h, const char *id, const char *ep)
{
    void *s = zmq_socket(h->ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (id)
        zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
    zmq_connect(s, ep);
    return s;
}

static void send_env(void *sock, Kvserve__Envelope *env)
{
    kv_err err;
    CHECK_MSG(kv_wire_send(sock, NULL, env, NULL, 0, 1000, &err) == 0, "%s", err.msg);
}

/* Pumps the router until sock has a message (returned; free with
 * kvserve__envelope__free_unpacked) or timeout_ms pass (NULL). */
static Kvserve__Envelope *await_msg(harness *h, void *sock, int timeout_ms)
{
    double end = kv_now_s() + timeout_ms * 1e-3;
    do {
        router_step(&h->st, 1);
        kv_wire_msg m;
        kv_err err;
        if (kv_wire_recv(sock, 0, 0, &m, &err) == KV_OK) {
            Kvserve__Envelope *env = m.env;
            m.env = NULL;
            kv_wire_msg_close(&m);
            return env;
        }
    } while (kv_now_s() < end);
    return NULL;
}

static Kvserve__Envelope *await_body(harness *h, void *sock, int body, const char *what)
{
    Kvserve__Envelope *env = await_msg(h, sock, 2000);
    CHECK_MSG(env != NULL, "no message (%s)", what);
    if (env && (int)env->body_case != body) {
        CHECK_MSG(0, "%s: got body %d, expected %d", what, (int)env->body_case, body);
        kvserve__envelope__free_unpacked(env, NULL);
        return NULL;
    }
    return env;
}

static int quiet(harness *h, void *sock, int ms)
{
    Kvserve__Envelope *env = await_msg(h, sock, ms);
    if (!env)
        return 1;
    fprintf(stderr, "unexpected message body %d\n", (int)env->body_case);
    kvserve__envelope__free_unpacked(env, NULL);
    return 0;
}

static void do_register(harness *h, void *sock, const char *id, int role, uint32_t blocks)
{
    Kvserve__Envelope env;
    Kvserve__Register reg;
    Kvserve__KvLayout l;
    kv_wire_envelope_init(&env);
    fill_layout(&l, 16);
    fill_register(&reg, &l, id, role, h->st.model.fingerprint, blocks,
                  role == KVSERVE__WORKER_ROLE__ROLE_DECODE ? "tcp://127.0.0.1:7999" : "");
    env.body_case = KVSERVE__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    send_env(sock, &env);
    Kvserve__Envelope *ack = await_body(h, sock, KVSERVE__ENVELOPE__BODY_REGISTER_ACK, "register ack");
    CHECK(ack && ack->register_ack->accepted && ack->register_ack->heartbeat_interval_ms == 500);
    if (ack)
        kvserve__envelope__free_unpacked(ack, NULL);
}

static void heartbeat(void *sock, const char *id, uint32_t free_blocks, uint32_t total)
{
    Kvserve__Envelope env;
    Kvserve__Heartbeat hb;
    kv_wire_envelope_init(&env);
    kvserve__heartbeat__init(&hb);
    hb.worker_id = (char *)id;
    hb.kv_blocks_free = free_blocks;
    hb.kv_blocks_total = total;
    env.body_case = KVSERVE__ENVELOPE__BODY_HEARTBEAT;
    env.heartbeat = &hb;
    send_env(sock, &env);
}

static void generate_stop(void *sock, const char *id, const int32_t *toks, size_t n, uint32_t max_tokens, int stream,
                          char **stop, size_t n_stop)
{
    Kvserve__Envelope env;
    Kvserve__GenerateRequest g;
    kv_wire_envelope_init(&env);
    kvserve__generate_request__init(&g);
    g.request_id = (char *)id;
    g.prompt_tokens = (int32_t *)toks;
    g.n_prompt_tokens = n;
    g.max_tokens = max_tokens;
    g.stream = stream;
    g.stop = stop;
    g.n_stop = n_stop;
    env.body_case = KVSERVE__ENVELOPE__BODY_GENERATE;
    env.generate = &g;
    send_env(sock, &env);
}

static void generate(void *sock, const char *id, const int32_t *toks, size_t n, uint32_t max_tokens, int stream)
{
    generate_stop(sock, id, toks, n, max_tokens, stream, NULL, 0);
}

static void cancel(void *sock, const char *id)
{
    Kvserve__Envelope env;
    Kvserve__CancelRequest c;
    kv_wire_envelope_init(&env);
    kvserve__cancel_request__init(&c);
    c.request_id = (char *)id;
    env.body_case = KVSERVE__ENVELOPE__BODY_CANCEL;
    env.cancel = &c;
    send_env(sock, &env);
}

static void reserve_reply(void *sock, const char *wire_id, int ok, const int32_t *ids, size_t n)
{
    Kvserve__Envelope env;
    Kvserve__ReserveReply rr;
    Kvserve__Error e;
    kv_wire_envelope_init(&env);
    kvserve__reserve_reply__init(&rr);
    rr.request_id = (char *)wire_id;
    rr.ok = ok;
    rr.block_ids = (int32_t *)ids;
    rr.n_block_ids = n;
    if (!ok) {
        kvserve__error__init(&e);
        e.code = KVSERVE__ERROR_CODE__NO_CAPACITY;
        e.message = "full";
        rr.error = &e;
    }
    env.body_case = KVSERVE__ENVELOPE__BODY_RESERVE_REPLY;
    env.reserve_reply = &rr;
    send_env(sock, &env);
}

static void token_event(void *sock, const char *wire_id, uint32_t index, const int32_t *toks, size_t n, int finish,
                        double decode_ms)
{
    Kvserve__Envelope env;
    Kvserve__TokenEvent ev;
    kv_wire_envelope_init(&env);
    kvserve__token_event__init(&ev);
    ev.request_id = (char *)wire_id;
    ev.index = index;
    ev.tokens = (int32_t *)toks;
    ev.n_tokens = n;
    ev.finish_reason = finish;
    ev.decode_ms = decode_ms;
    env.body_case = KVSERVE__ENVELOPE__BODY_TOKENS;
    env.tokens = &ev;
    send_env(sock, &env);
}

static void prefill_done(void *sock, const char *wire_id, int ok, int32_t first)
{
    Kvserve__Envelope env;
    Kvserve__PrefillDone pd;
    kv_wire_envelope_init(&env);
    kvserve__prefill_done__init(&pd);
    pd.request_id = (char *)wire_id;
    pd.ok = ok;
    pd.first_token = first;
    pd.prefill_ms = 1.5;
    pd.transfer_ms = 0.5;
    pd.kv_bytes = 5120;
    env.body_case = KVSERVE__ENVELOPE__BODY_PREFILL_DONE;
    env.prefill_done = &pd;
    send_env(sock, &env);
}

/* PrefillDone{ok: false} with an error. */
static void prefill_error(void *sock, const char *wire_id, int code, const char *message)
{
    Kvserve__Envelope env;
    Kvserve__PrefillDone pd;
    Kvserve__Error er;
    kv_wire_envelope_init(&env);
    kvserve__prefill_done__init(&pd);
    kvserve__error__init(&er);
    er.code = code;
    er.message = (char *)message;
    pd.request_id = (char *)wire_id;
    pd.error = &er;
    env.body_case = KVSERVE__ENVELOPE__BODY_PREFILL_DONE;
    env.prefill_done = &pd;
    send_env(sock, &env);
}

/* The decode worker ends a request with an error (it freed the blocks). */
static void decode_error(void *sock, const char *wire_id, int code, const char *message)
{
    Kvserve__Envelope env;
    Kvserve__TokenEvent ev;
    Kvserve__Error er;
    kv_wire_envelope_init(&env);
    kvserve__token_event__init(&ev);
    kvserve__error__init(&er);
    er.code = code;
    er.message = (char *)message;
    ev.request_id = (char *)wire_id;
    ev.finish_reason = KVSERVE__FINISH_REASON__FINISH_ERROR;
    ev.error = &er;
    env.body_case = KVSERVE__ENVELOPE__BODY_TOKENS;
    env.tokens = &ev;
    send_env(sock, &env);
}

/* Expects a ReserveRequest at the fake decode worker; returns its wire id (malloc'd). */
static char *expect_reserve(harness *h, uint32_t prompt, uint32_t max_tokens)
{
    Kvserve__Envelope *env = await_body(h, h->dec, KVSERVE__ENVELOPE__BODY_RESERVE, "reserve");
    if (!env)
        return strdup("?");
    CHECK_EQ_INT(env->reserve->prompt_tokens, prompt);
    CHECK_EQ_INT(env->reserve->max_tokens, max_tokens);
    CHECK(env->reserve->transfer_deadline_ms > 0);
    char *id = strdup(env->reserve->request_id);
    kvserve__envelope__free_unpacked(env, NULL);
    return id;
}

static void expect_task(harness *h, const char *wire_id, const int32_t *blocks, size_t n)
{
    Kvserve__Envelope *env = await_body(h, h->pre, KVSERVE__ENVELOPE__BODY_PREFILL, "prefill task");
    if (!env)
        return;
    Kvserve__PrefillTask *t = env->prefill;
    CHECK(!strcmp(t->request_id, wire_id));
    CHECK(!strcmp(t->decode_worker_id, "dec-a"));
    CHECK(!strcmp(t->decode_kv_endpoint, "tcp://127.0.0.1:7999"));
    CHECK(t->n_decode_block_ids == n && !memcmp(t->decode_block_ids, blocks, n * sizeof *blocks));
    CHECK(t->ack_deadline_ms > 0);
    kvserve__envelope__free_unpacked(env, NULL);
}

static void expect_abort(harness *h, void *sock, const char *wire_id, int reason, const char *what)
{
    Kvserve__Envelope *env = await_body(h, sock, KVSERVE__ENVELOPE__BODY_ABORT, what);
    if (!env)
        return;
    CHECK_MSG(!strcmp(env->abort->request_id, wire_id), "%s: abort for %s", what, env->abort->request_id);
    CHECK_MSG((int)env->abort->reason == reason, "%s: reason %d", what, (int)env->abort->reason);
    kvserve__envelope__free_unpacked(env, NULL);
}

static Kvserve__GenerateReply *expect_reply(harness *h, Kvserve__Envelope **hold, const char *what)
{
    *hold = await_body(h, h->client, KVSERVE__ENVELOPE__BODY_REPLY, what);
    return *hold ? (*hold)->reply : NULL;
}

static void expect_final_error(harness *h, const char *id, int code, const char *what)
{
    Kvserve__Envelope *env;
    Kvserve__GenerateReply *r = expect_reply(h, &env, what);
    if (!r)
        return;
    CHECK_MSG(!strcmp(r->request_id, id), "%s: reply for %s", what, r->request_id);
    CHECK_MSG(r->finish_reason == KVSERVE__FINISH_REASON__FINISH_ERROR, "%s: finish %d", what, r->finish_reason);
    CHECK_MSG(r->error && (int)r->error->code == code, "%s: code %d, expected %d (%s)", what,
              r->error ? (int)r->error->code : -1, code, r->error ? r->error->message : "");
    CHECK(r->timings != NULL);
    kvserve__envelope__free_unpacked(env, NULL);
}

static router_worker *worker_named(harness *h, const char *id)
{
    kv_wire_route r = route_of(id);
    return router_workers_find(&h->st.workers, &r);
}

static int harness_init(harness *h, const char *model_dir)
{
    memset(h, 0, sizeof *h);
    h->ctx = zmq_ctx_new();
    router_opts o;
    router_opts_default(&o);
    o.model_dir = model_dir;
    o.listen = "inproc://router-client";
    o.control = "inproc://router-control";
    o.worker_timeout_ms = 3600000; /* tests move time on by hand; workers must not expire then */
    kv_err err;
    if (router_state_init(&h->st, &o, h->ctx, &err)) {
        fprintf(stderr, "router_state_init: %s\n", err.msg);
        CHECK(0);
        return -1;
    }
    h->client = dealer(h, "client-1", h->st.client_ep);
    h->dec = dealer(h, "dec-a", h->st.control_ep);
    h->pre = dealer(h, "pre-a", h->st.control_ep);
    return 0;
}

static void harness_free(harness *h)
{
    router_state_free(&h->st);
    zmq_close(h->client);
    zmq_close(h->dec);
    zmq_close(h->pre);
    zmq_ctx_term(h->ctx);
}

static const int32_t PROMPT[5] = {1, 403, 407, 261, 378}; /* BOS "Once upon a time" */

static void test_life_cycle(harness *h)
{
    /* No workers yet: a request waits, then fails NO_CAPACITY at the queue deadline. */
    generate(h->client, "early", PROMPT, 5, 4, 1);
    CHECK(quiet(h, h->client, 30));
    CHECK_EQ_INT(h->st.reqs.n_queued, 1);
    router_tick(&h->st, kv_now_s() + h->st.dl.queue_s + 0.1);
    expect_final_error(h, "early", KVSERVE__ERROR_CODE__NO_CAPACITY, "queue deadline");

    do_register(h, h->dec, "dec-a", KVSERVE__WORKER_ROLE__ROLE_DECODE, 16);
    do_register(h, h->pre, "pre-a", KVSERVE__WORKER_ROLE__ROLE_PREFILL, 64);
    heartbeat(h->dec, "dec-a", 16, 16);
    CHECK(quiet(h, h->dec, 10));
    CHECK_EQ_INT(h->st.workers.n, 2);
    router_worker *dw = worker_named(h, "dec-a"), *pw = worker_named(h, "pre-a");
    CHECK(dw && pw);
    if (!dw || !pw)
        return;

    /* The happy path, streamed, with TokenEvents out of order. */
    generate(h->client, "r1", PROMPT, 5, 3, 1);
    char *wid = expect_reserve(h, 5, 3);
    CHECK(!strncmp(wid, "r1@", 3));
    CHECK_EQ_INT(dw->promised, 1);
    const int32_t blocks[1] = {7};
    reserve_reply(h->dec, wid, 1, blocks, 1);
    expect_task(h, wid, blocks, 1);
    CHECK_EQ_INT(dw->promised, 0);
    CHECK_EQ_INT(dw->free_est, 15);
    CHECK_EQ_INT(pw->active, 1);
    const int32_t t0 = 432, t1 = 383, t2 = 286;
    token_event(h->dec, wid, 1, &t1, 1, KVSERVE__FINISH_REASON__FINISH_NONE, 0);
    CHECK(quiet(h, h->client, 20)); /* index 1 waits for index 0 */
    token_event(h->dec, wid, 0, &t0, 1, KVSERVE__FINISH_REASON__FINISH_NONE, 0);
    char text[256] = "";
    Kvserve__Envelope *env;
    Kvserve__GenerateReply *rep = expect_reply(h, &env, "token 0");
    if (rep) {
        CHECK(rep->index == 0 && rep->n_tokens == 1 && rep->tokens[0] == t0);
        CHECK(rep->finish_reason == KVSERVE__FINISH_REASON__FINISH_NONE && !rep->timings);
        strcat(text, rep->text);
        kvserve__envelope__free_unpacked(env, NULL);
    }
    rep = expect_reply(h, &env, "token 1");
    if (rep) {
        CHECK(rep->index == 1 && rep->n_tokens == 1 && rep->tokens[0] == t1);
        strcat(text, rep->text);
        kvserve__envelope__free_unpacked(env, NULL);
    }
    /* Status shows the request and its ownership. */
    Kvserve__Envelope senv;
    Kvserve__StatusRequest sreq;
    kv_wire_envelope_init(&senv);
    kvserve__status_request__init(&sreq);
    senv.body_case = KVSERVE__ENVELOPE__BODY_STATUS;
    senv.status = &sreq;
    send_env(h->client, &senv);
    env = await_body(h, h->client, KVSERVE__ENVELOPE__BODY_STATUS_REPLY, "status");
    if (env) {
        Kvserve__StatusReply *s = env->status_reply;
        CHECK(!strcmp(s->model, "stories260K"));
        CHECK_EQ_INT(s->n_workers, 2);
        CHECK_EQ_INT(s->n_requests, 1);
        if (s->n_requests == 1) {
            Kvserve__RequestStatus *q = s->requests[0];
            CHECK(!strcmp(q->request_id, "r1") && !strcmp(q->state, "decoding"));
            CHECK(!strcmp(q->decode_worker, "dec-a") && !strcmp(q->prefill_worker, "pre-a"));
            CHECK(q->n_block_ids == 1 && q->block_ids[0] == 7 && q->generated_tokens == 2);
        }
        for (size_t i = 0; i < s->n_workers; i++)
            if (s->workers[i]->role == KVSERVE__WORKER_ROLE__ROLE_DECODE)
                CHECK(s->workers[i]->healthy && s->workers[i]->kv_blocks_total == 16 &&
                      !strcmp(s->workers[i]->address, "tcp://127.0.0.1:7999"));
        CHECK_EQ_INT(s->requests_total, 2);
        CHECK_EQ_INT(s->requests_failed, 1);
        kvserve__envelope__free_unpacked(env, NULL);
    }
    prefill_done(h->pre, wid, 1, t0);
    CHECK(quiet(h, h->client, 10));
    CHECK_EQ_INT(pw->active, 0);
    token_event(h->dec, wid, 2, &t2, 1, KVSERVE__FINISH_REASON__FINISH_LENGTH, 2.0);
    rep = expect_reply(h, &env, "final");
    if (rep) {
        CHECK(rep->index == 2 && rep->n_tokens == 1 && rep->tokens[0] == t2);
        CHECK(rep->finish_reason == KVSERVE__FINISH_REASON__FINISH_LENGTH && !rep->error);
        CHECK(rep->timings && rep->timings->prompt_tokens == 5 && rep->timings->generated_tokens == 3);
        CHECK(rep->timings && rep->timings->prefill_ms == 1.5 && rep->timings->transfer_ms == 0.5 &&
              rep->timings->kv_bytes == 5120 && rep->timings->decode_ms == 2.0);
        CHECK(rep->timings && rep->timings->total_ms >= rep->timings->ttft_ms && rep->timings->ttft_ms > 0);
        strcat(text, rep->text);
        kvserve__envelope__free_unpacked(env, NULL);
    }
    /* The streamed pieces are exactly the continuation in the whole decoded text. */
    if (h->st.model.prompt.tok) {
        int32_t all[8] = {1, 403, 407, 261, 378, t0, t1, t2};
        char *full = NULL, *prefix = NULL;
        kv_err err;
        CHECK(kv_tokenizer_decode(h->st.model.prompt.tok, all, 8, &full, &err) == 0);
        CHECK(kv_tokenizer_decode(h->st.model.prompt.tok, all, 5, &prefix, &err) == 0);
        if (full && prefix)
            CHECK_MSG(!strcmp(full + strlen(prefix), text), "'%s' vs '%s'", full + strlen(prefix), text);
        free(full);
        free(prefix);
    }
    CHECK_EQ_INT(h->st.reqs.n, 0);
    CHECK_EQ_INT(dw->active, 0);
    CHECK_EQ_INT(dw->free_est, 16); /* the finish returned the block */
    free(wid);

    /* Not streamed; D finishes before P's PrefillDone: one reply, after PrefillDone. */
    generate(h->client, "r2", PROMPT, 5, 2, 0);
    wid = expect_reserve(h, 5, 2);
    reserve_reply(h->dec, wid, 1, blocks, 1);
    expect_task(h, wid, blocks, 1);
    const int32_t two[2] = {t0, t1};
    token_event(h->dec, wid, 0, &two[0], 1, KVSERVE__FINISH_REASON__FINISH_NONE, 0);
    token_event(h->dec, wid, 1, &two[1], 1, KVSERVE__FINISH_REASON__FINISH_LENGTH, 1.0);
    CHECK(quiet(h, h->client, 20));
    prefill_done(h->pre, wid, 1, t0);
    rep = expect_reply(h, &env, "non-streamed final");
    if (rep) {
        CHECK(rep->index == 0 && rep->n_tokens == 2 && rep->tokens[0] == t0 && rep->tokens[1] == t1);
        CHECK(rep->finish_reason == KVSERVE__FINISH_REASON__FINISH_LENGTH && rep->timings);
        kvserve__envelope__free_unpacked(env, NULL);
    }
    free(wid);

    /* Cancel: Abort to both workers, FINISH_CANCELLED to the client; late events get an error. */
    generate(h->client, "r3", PROMPT, 5, 8, 1);
    wid = expect_reserve(h, 5, 8);
    reserve_reply(h->dec, wid, 1, blocks, 1);
    expect_task(h, wid, blocks, 1);
    cancel(h->client, "r3");
    rep = expect_reply(h, &env, "cancelled");
    if (rep) {
        CHECK(rep->finish_reason == KVSERVE__FINISH_REASON__FINISH_CANCELLED && rep->timings);
        kvserve__envelope__free_unpacked(env, NULL);
    }
    expect_abort(h, h->dec, wid, KVSERVE__ERROR_CODE__CANCELLED, "abort to decode");
    expect_abort(h, h->pre, wid, KVSERVE__ERROR_CODE__CANCELLED, "abort to prefill");
    CHECK_EQ_INT(pw->active, 0);
    CHECK_EQ_INT(dw->active, 0);
    token_event(h->dec, wid, 0, &t0, 1, KVSERVE__FINISH_REASON__FINISH_NONE, 0);
    env = await_body(h, h->dec, KVSERVE__ENVELOPE__BODY_ERROR, "late token event");
    if (env) {
        CHECK(env->error->code == KVSERVE__ERROR_CODE__UNKNOWN_REQUEST && !strcmp(env->error->request_id, wid));
        kvserve__envelope__free_unpacked(env, NULL);
    }
    expect_abort(h, h->dec, wid, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST, "abort for an unknown request");
    /* A burst of late events (a worker cut off for a while) is answered at the 1st, 2nd, 4th...
     * one: the 2nd gets its error and Abort again, the 3rd nothing. */
    token_event(h->dec, wid, 1, &t0, 1, KVSERVE__FINISH_REASON__FINISH_NONE, 0);
    env = await_body(h, h->dec, KVSERVE__ENVELOPE__BODY_ERROR, "second late token event");
    if (env)
        kvserve__envelope__free_unpacked(env, NULL);
    expect_abort(h, h->dec, wid, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST, "abort again at the second");
    token_event(h->dec, wid, 2, &t0, 1, KVSERVE__FINISH_REASON__FINISH_NONE, 0);
    CHECK_MSG(quiet(h, h->dec, 20), "the third late token event was answered");
    cancel(h->client, "r3");
    env = await_body(h, h->client, KVSERVE__ENVELOPE__BODY_ERROR, "cancel unknown");
    if (env) {
        CHECK(env->error->code == KVSERVE__ERROR_CODE__UNKNOWN_REQUEST);
        kvserve__envelope__free_unpacked(env, NULL);
    }
    free(wid);

    /* A stop sequence spanning two events' text ends the request at the second: FINISH_STOP
     * with that event's tokens, Abort to D, counted "stop"; too many sequences are refused. */
    if (h->st.model.prompt.tok) {
        int32_t seq[7] = {1, 403, 407, 261, 378, t0, t1};
        char *p5 = NULL, *p6 = NULL, *p7 = NULL;
        kv_err err;
        CHECK(!kv_tokenizer_decode(h->st.model.prompt.tok, seq, 5, &p5, &err) &&
              !kv_tokenizer_decode(h->st.model.prompt.tok, seq, 6, &p6, &err) &&
              !kv_tokenizer_decode(h->st.model.prompt.tok, seq, 7, &p7, &err));
        size_t a = p5 ? strlen(p5) : 0, b = p6 ? strlen(p6) : 0;
        if (p7 && b > a && strlen(p7) > b) {
            char stop[3] = {p6[b - 1], p7[b], 0}, *stops[2] = {"never appears", stop};
            uint64_t stops_before = h->st.metrics.finished[ROUTER_END_STOP];
            generate_stop(h->client, "r5", PROMPT, 5, 8, 1, stops, 2);
            wid = expect_reserve(h, 5, 8);
            reserve_reply(h->dec, wid, 1, blocks, 1);
            expect_task(h, wid, blocks, 1);
            token_event(h->dec, wid, 0, &t0, 1, KVSERVE__FINISH_REASON__FINISH_NONE, 0);
            rep = expect_reply(h, &env, "before the stop");
            if (rep) {
                CHECK(rep->finish_reason == KVSERVE__FINISH_REASON__FINISH_NONE);
                kvserve__envelope__free_unpacked(env, NULL);
            }
            token_event(h->dec, wid, 1, &t1, 1, KVSERVE__FINISH_REASON__FINISH_NONE, 0);
            rep = expect_reply(h, &env, "stopped");
            if (rep) {
                CHECK(rep->finish_reason == KVSERVE__FINISH_REASON__FINISH_STOP && !rep->error);
                CHECK(rep->index == 1 && rep->n_tokens == 1 && rep->tokens[0] == t1);
                kvserve__envelope__free_unpacked(env, NULL);
            }
            expect_abort(h, h->dec, wid, KVSERVE__ERROR_CODE__CANCELLED, "stop: abort to decode");
            expect_abort(h, h->pre, wid, KVSERVE__ERROR_CODE__CANCELLED, "stop: abort to prefill (no PrefillDone)");
            CHECK_EQ_INT(h->st.metrics.finished[ROUTER_END_STOP], stops_before + 1);
            CHECK_EQ_INT(dw->active, 0);
            free(wid);
        } else {
            CHECK_MSG(0, "no text to build a stop sequence from");
        }
        free(p5), free(p6), free(p7);
    }
    char *many[17];
    for (int i = 0; i < 17; i++)
        many[i] = "x";
    generate_stop(h->client, "r6", PROMPT, 5, 8, 1, many, 17);
    expect_final_error(h, "r6", KVSERVE__ERROR_CODE__INVALID_ARGUMENT, "17 stop sequences");

    /* Duplicate id while in flight. */
    generate(h->client, "r4", PROMPT, 5, 8, 1);
    wid = expect_reserve(h, 5, 8);
    generate(h->client, "r4", PROMPT, 5, 8, 1);
    expect_final_error(h, "r4", KVSERVE__ERROR_CODE__DUPLICATE_REQUEST, "duplicate");
    /* The reservation reply never comes: reserve deadline, Abort to D. */
    router_tick(&h->st, kv_now_s() + h->st.dl.reserve_s + 0.1);
    expect_final_error(h, "r4", KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED, "reserve deadline");
    expect_abort(h, h->dec, wid, KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED, "abort after reserve deadline");
    CHECK_EQ_INT(dw->promised, 0);
    CHECK_EQ_INT(dw->active, 0);
    /* ...and its late reply is answered with an error and an Abort (blocks freed). */
    reserve_reply(h->dec, wid, 1, blocks, 1);
    env = await_body(h, h->dec, KVSERVE__ENVELOPE__BODY_ERROR, "late reserve reply");
    if (env)
        kvserve__envelope__free_unpacked(env, NULL);
    expect_abort(h, h->dec, wid, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST, "abort after late reserve reply");
    free(wid);
    heartbeat(h->dec, "dec-a", 16, 16);

    /* Prefill deadline: PrefillDone never comes. */
    generate(h->client, "r5", PROMPT, 5, 8, 1);
    wid = expect_reserve(h, 5, 8);
    reserve_reply(h->dec, wid, 1, blocks, 1);
    expect_task(h, wid, blocks, 1);
    router_tick(&h->st, kv_now_s() + h->st.dl.prefill_s + 0.1);
    expect_final_error(h, "r5", KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED, "prefill deadline");
    expect_abort(h, h->dec, wid, KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED, "abort D after prefill deadline");
    expect_abort(h, h->pre, wid, KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED, "abort P after prefill deadline");
    free(wid);

    /* PrefillDone{ok: false} (e.g. P's ack deadline): the error reaches the client, D is aborted. */
    generate(h->client, "r6", PROMPT, 5, 8, 1);
    wid = expect_reserve(h, 5, 8);
    reserve_reply(h->dec, wid, 1, blocks, 1);
    expect_task(h, wid, blocks, 1);
    prefill_error(h->pre, wid, KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED, "no KvAck");
    expect_final_error(h, "r6", KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED, "prefill failed");
    expect_abort(h, h->dec, wid, KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED, "abort D after failed prefill");
    CHECK(quiet(h, h->pre, 10));
    free(wid);
    heartbeat(h->dec, "dec-a", 16, 16);

    /* D reports a KV hand-off failure (KV_CORRUPT) before any token: it freed the blocks, P
     * is aborted, and the request runs again under a new wire id, the client none the
     * wiser; the fourth such failure in a row (three re-plans spent) reaches the client. */
    generate(h->client, "r7", PROMPT, 5, 8, 1);
    wid = expect_reserve(h, 5, 8);
    for (int attempt = 0; attempt < 4; attempt++) {
        reserve_reply(h->dec, wid, 1, blocks, 1);
        expect_task(h, wid, blocks, 1);
        decode_error(h->dec, wid, KVSERVE__ERROR_CODE__KV_CORRUPT, "checksum mismatch");
        expect_abort(h, h->pre, wid, KVSERVE__ERROR_CODE__KV_CORRUPT, "abort P after D's error");
        if (attempt == 3)
            break;
        CHECK(quiet(h, h->client, 10));
        char *again = expect_reserve(h, 5, 8);
        CHECK_MSG(strcmp(again, wid) != 0, "attempt %d: the re-planned request kept its wire id", attempt + 2);
        free(wid);
        wid = again;
    }
    expect_final_error(h, "r7", KVSERVE__ERROR_CODE__KV_CORRUPT, "kv corrupt, re-plans spent");
    CHECK(quiet(h, h->dec, 10));
    CHECK_EQ_INT(dw->free_est, 16);
    free(wid);

    /* P reports that the decode worker dropped its KV session: re-planned; the retry is
     * served, the client sees only its tokens. A non-transfer failure is not retried. */
    generate(h->client, "r8", PROMPT, 5, 2, 1);
    wid = expect_reserve(h, 5, 2);
    reserve_reply(h->dec, wid, 1, blocks, 1);
    expect_task(h, wid, blocks, 1);
    prefill_error(h->pre, wid, KVSERVE__ERROR_CODE__KV_SESSION_UNKNOWN, "the decode worker does not know our session");
    expect_abort(h, h->dec, wid, KVSERVE__ERROR_CODE__KV_SESSION_UNKNOWN, "abort D after P's transfer error");
    {
        char *again = expect_reserve(h, 5, 2);
        CHECK(strcmp(again, wid) != 0);
        free(wid);
        wid = again;
    }
    reserve_reply(h->dec, wid, 1, blocks, 1);
    expect_task(h, wid, blocks, 1);
    prefill_done(h->pre, wid, 1, 7);
    const int32_t r8_toks[2] = {7, 8};
    token_event(h->dec, wid, 0, r8_toks, 2, KVSERVE__FINISH_REASON__FINISH_LENGTH, 0);
    {
        Kvserve__Envelope *r8_env;
        Kvserve__GenerateReply *r8 = expect_reply(h, &r8_env, "r8 after the re-plan");
        if (r8) {
            CHECK(!strcmp(r8->request_id, "r8") && r8->finish_reason == KVSERVE__FINISH_REASON__FINISH_LENGTH);
            CHECK(r8->n_tokens == 2 && r8->tokens[0] == 7 && r8->tokens[1] == 8 && !r8->error);
            kvserve__envelope__free_unpacked(r8_env, NULL);
        }
    }
    free(wid);
    generate(h->client, "r9", PROMPT, 5, 8, 1);
    wid = expect_reserve(h, 5, 8);
    reserve_reply(h->dec, wid, 1, blocks, 1);
    expect_task(h, wid, blocks, 1);
    decode_error(h->dec, wid, KVSERVE__ERROR_CODE__INTERNAL, "the GPU copy faulted");
    expect_final_error(h, "r9", KVSERVE__ERROR_CODE__INTERNAL, "not a transfer failure: not retried");
    expect_abort(h, h->pre, wid, KVSERVE__ERROR_CODE__INTERNAL, "abort P after D's internal error");
    CHECK(quiet(h, h->dec, 10));
    CHECK_EQ_INT(dw->free_est, 16);
    free(wid);

    /* Too large for any decode pool (16 blocks = 256 tokens): NO_CAPACITY at once. */
    generate(h->client, "big", PROMPT, 5, 400, 1);
    expect_final_error(h, "big", KVSERVE__ERROR_CODE__NO_CAPACITY, "larger than any pool");
    CHECK(quiet(h, h->dec, 10));
}

/* The only prefill worker finds no KV transport in common with the only decode worker:
 * the pair is marked, the request re-planned, and with no pair left it fails at once with
 * NO_TRANSPORT (D aborted); the next request fails at once too, without a reservation. Once
 * the mark is gone (a new process of either would carry none) the pair serves again. */
static void test_no_transport(harness *h)
{
    const int32_t blocks[1] = {9};
    generate(h->client, "nt1", PROMPT, 5, 4, 1);
    char *wid = expect_reserve(h, 5, 4);
    reserve_reply(h->dec, wid, 1, blocks, 1);
    expect_task(h, wid, blocks, 1);
    prefill_error(h->pre, wid, KVSERVE__ERROR_CODE__NO_TRANSPORT, "nccl: needs two different GPUs");
    expect_abort(h, h->dec, wid, KVSERVE__ERROR_CODE__NO_TRANSPORT, "abort D after NO_TRANSPORT");
    expect_final_error(h, "nt1", KVSERVE__ERROR_CODE__NO_TRANSPORT, "no pair left");
    CHECK(quiet(h, h->dec, 10));
    free(wid);
    generate(h->client, "nt2", PROMPT, 5, 4, 1);
    expect_final_error(h, "nt2", KVSERVE__ERROR_CODE__NO_TRANSPORT, "no pair: at once");
    CHECK(quiet(h, h->dec, 10));
    router_worker *p = worker_named(h, "pre-a");
    CHECK(p && p->n_refused == 1);
    if (p)
        p->n_refused = 0;
    heartbeat(h->dec, "dec-a", 16, 16);
    generate(h->client, "nt3", PROMPT, 5, 1, 1);
    wid = expect_reserve(h, 5, 1);
    reserve_reply(h->dec, wid, 1, blocks, 1);
    expect_task(h, wid, blocks, 1);
    prefill_done(h->pre, wid, 1, 7);
    const int32_t one = 7;
    token_event(h->dec, wid, 0, &one, 1, KVSERVE__FINISH_REASON__FINISH_LENGTH, 0);
    Kvserve__Envelope *env;
    Kvserve__GenerateReply *rep = expect_reply(h, &env, "nt3 served by the pair again");
    if (rep) {
        CHECK(!strcmp(rep->request_id, "nt3") && rep->finish_reason == KVSERVE__FINISH_REASON__FINISH_LENGTH);
        kvserve__envelope__free_unpacked(env, NULL);
    }
    free(wid);
    heartbeat(h->dec, "dec-a", 16, 16);
}

static void test_capacity(harness *h)
{
    router_worker *dw = worker_named(h, "dec-a");
    CHECK(dw != NULL);
    if (!dw)
        return;
    /* 3 free blocks; each request needs ceil((5 + 20) / 16) = 2. */
    heartbeat(h->dec, "dec-a", 3, 16);
    CHECK(quiet(h, h->dec, 10));
    generate(h->client, "c1", PROMPT, 5, 20, 1);
    char *w1 = expect_reserve(h, 5, 20);
    generate(h->client, "c2", PROMPT, 5, 20, 1);
    CHECK(quiet(h, h->dec, 30)); /* 3 free - 2 promised = 1 < 2 */
    CHECK_EQ_INT(h->st.reqs.n_queued, 1);
    const int32_t blocks[2] = {3, 4};
    reserve_reply(h->dec, w1, 1, blocks, 2);
    expect_task(h, w1, blocks, 2);
    CHECK_EQ_INT(dw->free_est, 1);
    CHECK(quiet(h, h->dec, 20)); /* granted: 1 free left */
    const int32_t t = 5;
    token_event(h->dec, w1, 0, &t, 1, KVSERVE__FINISH_REASON__FINISH_EOS, 0.1);
    prefill_done(h->pre, w1, 1, t);
    Kvserve__Envelope *env;
    Kvserve__GenerateReply *rep = expect_reply(h, &env, "c1 token");
    if (rep)
        kvserve__envelope__free_unpacked(env, NULL);
    rep = expect_reply(h, &env, "c1 final");
    if (rep) {
        CHECK(rep->finish_reason == KVSERVE__FINISH_REASON__FINISH_EOS);
        kvserve__envelope__free_unpacked(env, NULL);
    }
    /* The finish returned 2 blocks: c2 goes out. D refuses (full after all): c2 re-queues. */
    char *w2 = expect_reserve(h, 5, 20);
    reserve_reply(h->dec, w2, 0, NULL, 0);
    CHECK(quiet(h, h->dec, 30));
    CHECK_EQ_INT(h->st.reqs.n_queued, 1);
    CHECK_EQ_INT(dw->free_est, 1);
    /* A heartbeat with room: retried with the same id. */
    heartbeat(h->dec, "dec-a", 10, 16);
    char *w2b = expect_reserve(h, 5, 20);
    CHECK(!strcmp(w2, w2b));
    reserve_reply(h->dec, w2, 1, blocks, 2);
    expect_task(h, w2, blocks, 2);
    cancel(h->client, "c2");
    rep = expect_reply(h, &env, "c2 cancelled");
    if (rep)
        kvserve__envelope__free_unpacked(env, NULL);
    expect_abort(h, h->dec, w2, KVSERVE__ERROR_CODE__CANCELLED, "c2 abort D");
    expect_abort(h, h->pre, w2, KVSERVE__ERROR_CODE__CANCELLED, "c2 abort P");
    free(w1);
    free(w2);
    free(w2b);
    heartbeat(h->dec, "dec-a", 16, 16);
    CHECK(quiet(h, h->dec, 10));
}

static void test_worker_death(harness *h)
{
    const int32_t blocks[1] = {9};
    const int32_t t = 5;
    /* P dies after D started decoding: the request goes on. */
    generate(h->client, "w1", PROMPT, 5, 4, 1);
    char *wid = expect_reserve(h, 5, 4);
    reserve_reply(h->dec, wid, 1, blocks, 1);
    expect_task(h, wid, blocks, 1);
    token_event(h->dec, wid, 0, &t, 1, KVSERVE__FINISH_REASON__FINISH_NONE, 0);
    Kvserve__Envelope *env;
    Kvserve__GenerateReply *rep = expect_reply(h, &env, "w1 token");
    if (rep)
        kvserve__envelope__free_unpacked(env, NULL);
    router_worker *pw = worker_named(h, "pre-a");
    if (pw)
        pw->last_heartbeat = kv_now_s() - h->st.opt.worker_timeout_ms * 1e-3 - 1;
    router_tick(&h->st, kv_now_s());
    CHECK(worker_named(h, "pre-a") == NULL);
    CHECK(quiet(h, h->client, 10));
    token_event(h->dec, wid, 1, &t, 1, KVSERVE__FINISH_REASON__FINISH_EOS, 0);
    rep = expect_reply(h, &env, "w1 final");
    if (rep) {
        CHECK(rep->finish_reason == KVSERVE__FINISH_REASON__FINISH_EOS);
        kvserve__envelope__free_unpacked(env, NULL);
    }
    free(wid);
    /* The forgotten prefill worker's heartbeat: "register first"; it registers again. */
    heartbeat(h->pre, "pre-a", 64, 64);
    env = await_body(h, h->pre, KVSERVE__ENVELOPE__BODY_ERROR, "register first");
    if (env) {
        CHECK(env->error->code == KVSERVE__ERROR_CODE__UNKNOWN_REQUEST &&
              strstr(env->error->message, "register") != NULL);
        kvserve__envelope__free_unpacked(env, NULL);
    }
    do_register(h, h->pre, "pre-a", KVSERVE__WORKER_ROLE__ROLE_PREFILL, 64);
    heartbeat(h->dec, "dec-a", 16, 16);

    /* D dies mid-stream after 1 delivered token: the request is re-planned, not failed. P gets
     * an Abort; the request waits in the queue (no decode worker left); late messages about
     * the old attempt find nothing; a new decode worker gets prompt + the delivered token,
     * the rest of the budget and the sampler offset; the client's stream goes on at index 1. */
    generate(h->client, "w2", PROMPT, 5, 4, 1);
    wid = expect_reserve(h, 5, 4);
    reserve_reply(h->dec, wid, 1, blocks, 1);
    expect_task(h, wid, blocks, 1);
    token_event(h->dec, wid, 0, &t, 1, KVSERVE__FINISH_REASON__FINISH_NONE, 0);
    rep = expect_reply(h, &env, "w2 token");
    if (rep)
        kvserve__envelope__free_unpacked(env, NULL);
    router_worker *dw = worker_named(h, "dec-a");
    if (dw)
        dw->last_heartbeat = kv_now_s() - h->st.opt.worker_timeout_ms * 1e-3 - 1;
    router_tick(&h->st, kv_now_s());
    expect_abort(h, h->pre, wid, KVSERVE__ERROR_CODE__WORKER_FAILED, "abort P after D died");
    CHECK(quiet(h, h->client, 10)); /* no error for the client: its stream is paused */
    CHECK(worker_named(h, "dec-a") == NULL);
    CHECK_EQ_INT(h->st.workers.n, 1);
    CHECK_EQ_INT(h->st.reqs.n, 1);
    if (h->st.reqs.head) {
        router_req *r = h->st.reqs.head;
        CHECK(r->state == RQ_QUEUED && r->index_base == 1 && r->n_prompt == 6 && r->max_tokens == 3 && r->replans == 1);
    }
    /* A message about a request from the dead (unregistered) worker: error + Abort. */
    token_event(h->dec, "zzz@1", 3, &t, 1, KVSERVE__FINISH_REASON__FINISH_NONE, 0);
    env = await_body(h, h->dec, KVSERVE__ENVELOPE__BODY_ERROR, "unregistered token event");
    if (env)
        kvserve__envelope__free_unpacked(env, NULL);
    expect_abort(h, h->dec, "zzz@1", KVSERVE__ERROR_CODE__UNKNOWN_REQUEST, "abort orphan");
    /* A decode worker comes (back): the re-planned attempt, under a new wire id. */
    do_register(h, h->dec, "dec-a", KVSERVE__WORKER_ROLE__ROLE_DECODE, 16);
    heartbeat(h->dec, "dec-a", 16, 16);
    env = await_body(h, h->dec, KVSERVE__ENVELOPE__BODY_RESERVE, "re-planned reserve");
    char *wid2 = NULL;
    if (env) {
        CHECK_EQ_INT(env->reserve->prompt_tokens, 6);
        CHECK_EQ_INT(env->reserve->max_tokens, 3);
        CHECK_EQ_INT(env->reserve->sampling_offset, 1);
        CHECK(strcmp(env->reserve->request_id, wid) != 0);
        wid2 = strdup(env->reserve->request_id);
        kvserve__envelope__free_unpacked(env, NULL);
    }
    if (wid2) {
        /* The old attempt's id is unknown now. */
        token_event(h->dec, wid, 1, &t, 1, KVSERVE__FINISH_REASON__FINISH_NONE, 0);
        env = await_body(h, h->dec, KVSERVE__ENVELOPE__BODY_ERROR, "late event of the old attempt");
        if (env)
            kvserve__envelope__free_unpacked(env, NULL);
        expect_abort(h, h->dec, wid, KVSERVE__ERROR_CODE__UNKNOWN_REQUEST, "abort the old attempt");
        reserve_reply(h->dec, wid2, 1, blocks, 1);
        Kvserve__Envelope *task = await_body(h, h->pre, KVSERVE__ENVELOPE__BODY_PREFILL, "re-planned task");
        if (task) {
            Kvserve__PrefillTask *pt = task->prefill;
            CHECK(!strcmp(pt->request_id, wid2) && pt->n_prompt_tokens == 6 && pt->sampling_offset == 1);
            CHECK(!memcmp(pt->prompt_tokens, PROMPT, 5 * sizeof(int32_t)) && pt->prompt_tokens[5] == t);
            kvserve__envelope__free_unpacked(task, NULL);
        }
        prefill_done(h->pre, wid2, 1, t);
        const int32_t three[3] = {t, t, t};
        token_event(h->dec, wid2, 0, three, 3, KVSERVE__FINISH_REASON__FINISH_LENGTH, 0);
        rep = expect_reply(h, &env, "w2 final after re-plan");
        if (rep) {
            CHECK(rep->index == 1 && rep->n_tokens == 3 && rep->finish_reason == KVSERVE__FINISH_REASON__FINISH_LENGTH);
            CHECK(rep->timings && rep->timings->generated_tokens == 4 && rep->timings->prompt_tokens == 5);
            kvserve__envelope__free_unpacked(env, NULL);
        }
        free(wid2);
    }
    CHECK_EQ_INT(h->st.reqs.n, 0);
    free(wid);
}

static void test_bad_register(harness *h)
{
    void *rogue = dealer(h, "rogue", h->st.control_ep);
    Kvserve__Envelope env;
    Kvserve__Register reg;
    Kvserve__KvLayout l;
    kv_wire_envelope_init(&env);
    fill_layout(&l, 16);
    fill_register(&reg, &l, "rogue", KVSERVE__WORKER_ROLE__ROLE_DECODE, "00000000", 16, "tcp://127.0.0.1:1");
    env.body_case = KVSERVE__ENVELOPE__BODY_REGISTER;
    env.register_ = &reg;
    send_env(rogue, &env);
    Kvserve__Envelope *ack = await_body(h, rogue, KVSERVE__ENVELOPE__BODY_REGISTER_ACK, "refused");
    if (ack) {
        CHECK(!ack->register_ack->accepted && ack->register_ack->error &&
              ack->register_ack->error->code == KVSERVE__ERROR_CODE__UNKNOWN_MODEL);
        kvserve__envelope__free_unpacked(ack, NULL);
    }
    /* A client body on the control endpoint. */
    Kvserve__GenerateRequest g;
    kvserve__generate_request__init(&g);
    env.body_case = KVSERVE__ENVELOPE__BODY_GENERATE;
    env.generate = &g;
    send_env(rogue, &env);
    ack = await_body(h, rogue, KVSERVE__ENVELOPE__BODY_ERROR, "unexpected body");
    if (ack) {
        CHECK(ack->error->code == KVSERVE__ERROR_CODE__BAD_MESSAGE);
        kvserve__envelope__free_unpacked(ack, NULL);
    }
    CHECK(worker_named(h, "rogue") == NULL);
    zmq_close(rogue);
}

/* The router's prefix index (heartbeat events, resets, slots) and the cache-aware picks:
 * the worker holding the longest prefix wins unless the balance guard says it is too busy. */
static void test_prefix_routing(void)
{
    router_prefix x;
    CHECK(router_prefix_init(&x) == 0);
    int s0 = router_prefix_slot_take(&x), s1 = router_prefix_slot_take(&x);
    CHECK(s0 == 0 && s1 == 1);
    int32_t tok[64];
    for (int i = 0; i < 64; i++)
        tok[i] = i + 3;
    kv_block_hash chain[4], other[4];
    kv_block_hash root = kv_prefix_root("0a1b2c3d", "f32/x/b16");
    CHECK(kv_prefix_chain(root, tok, 64, 16, chain, 4) == 4);
    tok[20] = 999; /* diverges in block 1 */
    CHECK(kv_prefix_chain(root, tok, 64, 16, other, 4) == 4);
    /* Worker 0 holds the whole chain, worker 1 its first block and the other chain. */
    CHECK(router_prefix_apply(&x, s0, 0, chain, 4, NULL, 0) == 0);
    CHECK(router_prefix_apply(&x, s1, 0, other, 4, NULL, 0) == 0);
    uint32_t hits[ROUTER_PREFIX_SLOTS];
    router_prefix_hits(&x, chain, 4, hits);
    CHECK(hits[0] == 4 && hits[1] == 1 && hits[2] == 0);
    /* Eviction of block 2 cuts worker 0's run there; a reset forgets everything it held. */
    CHECK(router_prefix_apply(&x, s0, 0, NULL, 0, &chain[2], 1) == 0);
    router_prefix_hits(&x, chain, 4, hits);
    CHECK(hits[0] == 2 && hits[1] == 1);
    CHECK(router_prefix_apply(&x, s0, 1, &chain[0], 1, NULL, 0) == 0);
    router_prefix_hits(&x, chain, 4, hits);
    CHECK(hits[0] == 1 && x.per_slot[0] == 1);
    /* Many hashes grow the table; releasing a slot drops its entries (shared ones stay). */
    kv_block_hash many[3000];
    int32_t big[3000 * 2];
    for (int i = 0; i < 6000; i++)
        big[i] = i;
    CHECK(kv_prefix_chain(root, big, 6000, 2, many, 3000) == 3000);
    CHECK(router_prefix_apply(&x, s0, 0, many, 3000, NULL, 0) == 0);
    CHECK(x.per_slot[0] == 3001 && x.n == 3000 + 4); /* block 0 is one entry of both slots */
    router_prefix_slot_release(&x, s0);
    CHECK(x.per_slot[0] == 0 && x.n == 4 && router_prefix_slot_take(&x) == 0);
    router_prefix_hits(&x, other, 4, hits);
    CHECK(hits[1] == 4);

    /* Picks: d-b holds 3 of the prompt's blocks, d-a none. */
    router_workers w;
    router_workers_init(&w);
    router_worker *da = add_worker(&w, "d-a", KVSERVE__WORKER_ROLE__ROLE_DECODE, 100, 0);
    router_worker *db = add_worker(&w, "d-b", KVSERVE__WORKER_ROLE__ROLE_DECODE, 100, 0);
    router_worker *pa = add_worker(&w, "p-a", KVSERVE__WORKER_ROLE__ROLE_PREFILL, 50, 0);
    router_worker *pb = add_worker(&w, "p-b", KVSERVE__WORKER_ROLE__ROLE_PREFILL, 50, 0);
    CHECK(da && db && pa && pb);
    da->prefix_slot = 0, db->prefix_slot = 1, pa->prefix_slot = 2, pb->prefix_slot = 3;
    uint32_t h[ROUTER_PREFIX_SLOTS] = {0, 3, 0, 2};
    router_pick_hint hint = {h, 64, 16, 8, 2};
    CHECK(router_pick_decode(&w, 5, 80) == da);                /* load policy: ties by id */
    CHECK(router_pick_decode_by(&w, 5, 80, &hint) == db);      /* 16 to ship vs 64 */
    CHECK(router_pick_prefill_by(&w, 4, NULL, &hint) == pb);   /* 32 to compute vs 64 */
    db->active = 2;                                            /* 16 + 2 x 8 = 32 < 64: still d-b */
    CHECK(router_pick_decode_by(&w, 5, 80, &hint) == db);
    db->active = 3;                                            /* 3 above the least busy: guarded */
    CHECK(router_pick_decode_by(&w, 5, 80, &hint) == da);
    h[1] = 4;                                                  /* a hit is capped below the last token */
    db->active = 0;
    hint.prompt_tokens = 64;
    CHECK(router_pick_decode_by(&w, 5, 80, &hint) == db);
    router_workers_free(&w);
    router_prefix_free(&x);
}

int main(void)
{
    test_map();
    test_register_checks();
    test_pick();
    test_prefix_routing();
    test_blocks_for();
    test_reorder();
    test_deadlines();

    const char *models = kv_test_models_dir();
    char dir[4096], tok_path[4200];
    kv_tokenizer *tok = NULL;
    if (models) {
        snprintf(dir, sizeof dir, "%s/stories260K", models);
        snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", dir);
        kv_err err;
        if (kv_tokenizer_load(tok_path, &tok, &err))
            fprintf(stderr, "tokenizer: %s\n", err.msg);
    }
    test_validate(tok);
    kv_tokenizer_free(tok);

    if (!models) {
        fprintf(stderr, "note: shared models absent: the in-process router tests did not run\n");
        int rc = kv_test_result();
        return rc ? rc : 77;
    }
    harness h;
    if (harness_init(&h, dir) == 0) {
        test_life_cycle(&h);
        test_no_transport(&h);
        test_capacity(&h);
        test_bad_register(&h);
        test_worker_death(&h);
        harness_free(&h);
    }
    return kv_test_result();
}
