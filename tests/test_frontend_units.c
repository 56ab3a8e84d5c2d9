/* kv-frontend's pure parts: routes, API keys, Content-Length, request bodies (types, limits,
 * defaults, the messages re-serialized for the router), stop sequences (matches and what is
 * held back), the JSON and SSE it writes (the metrics exposition: test_metrics.c). */
#include <string.h>

#include "fe_error.h"
#include "fe_http.h"
#include "fe_logprobs.h"
#include "fe_render.h"
#include "fe_request.h"
#include "fe_stop.h"
#include "json.h"
#include "kv_client.h"
#include "kv_test.h"

static void test_routes(void)
{
    fe_route_match m = fe_http_route("POST", "/v1/chat/completions");
    CHECK(m.route == FE_ROUTE_CHAT && m.method_ok && m.has_body);
    m = fe_http_route("POST", "/v1/completions/?x=1");
    CHECK(m.route == FE_ROUTE_COMPLETIONS && m.method_ok);
    m = fe_http_route("GET", "/v1/completions");
    CHECK(m.route == FE_ROUTE_COMPLETIONS && !m.method_ok && !strcmp(m.allow, "POST"));
    m = fe_http_route("HEAD", "/health");
    CHECK(m.route == FE_ROUTE_HEALTH && m.method_ok);
    CHECK(fe_http_route("GET", "/v1/completionsX").route == FE_ROUTE_NONE);
    CHECK(fe_http_route("GET", "/v1/model").route == FE_ROUTE_NONE);
    CHECK(fe_http_route("GET", "").route == FE_ROUTE_NONE);
    CHECK(fe_http_route(NULL, "/health").route == FE_ROUTE_NONE);
    CHECK(!fe_route_needs_auth(FE_ROUTE_HEALTH, 1));
    CHECK(!fe_route_needs_auth(FE_ROUTE_METRICS, 0) && fe_route_needs_auth(FE_ROUTE_METRICS, 1));
    CHECK(fe_route_needs_auth(FE_ROUTE_CHAT, 0) && fe_route_needs_auth(FE_ROUTE_MODELS, 0));
}

static void test_keys(void)
{
    fe_keys k = {0};
    CHECK_EQ_INT(fe_keys_add_list(&k, "alpha, beta,,gamma "), 0);
    CHECK_EQ_INT(k.n, 3);
    CHECK(!strcmp(k.key[1], "beta") && !strcmp(k.key[2], "gamma"));
    CHECK(fe_keys_check(&k, "Bearer beta"));
    CHECK(fe_keys_check(&k, "bearer gamma"));
    CHECK(!fe_keys_check(&k, "Bearer bet"));
    CHECK(!fe_keys_check(&k, "Bearer betaa"));
    CHECK(!fe_keys_check(&k, "Bearer "));
    CHECK(!fe_keys_check(&k, "beta"));
    CHECK(!fe_keys_check(&k, NULL));
    CHECK(fe_ct_equal("abc", 3, "abc", 3) && !fe_ct_equal("abd", 3, "abc", 3) && !fe_ct_equal("ab", 2, "abc", 3));
    char longkey[FE_MAX_API_KEY_BYTES + 2];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    CHECK_EQ_INT(fe_keys_add_list(&k, longkey), -1);
    uint64_t v;
    CHECK(!fe_http_content_length("123", &v) && v == 123);
    CHECK(fe_http_content_length("", &v) && fe_http_content_length("12a", &v) && fe_http_content_length("-1", &v));
    CHECK(fe_http_content_length("99999999999999999999999", &v));
}

#define PARSE(kind, body, r, e) fe_parse_generate(kind, body, strlen(body), r, e)

static void test_generate_bodies(void)
{
    fe_gen_request r;
    fe_error e;
    CHECK_EQ_INT(PARSE(FE_KIND_COMPLETION, "{\"prompt\":\"hi\"}", &r, &e), 0);
    CHECK(!strcmp(r.prompt, "hi") && r.temperature == 1.0f && r.top_p == 1.0f && !r.max_tokens && !r.stream);
    fe_gen_request_free(&r);
    CHECK_EQ_INT(PARSE(FE_KIND_COMPLETION,
                       "{\"prompt\":[[1,2,3]],\"max_tokens\":7,\"temperature\":0,\"top_k\":-1,\"seed\":-1,"
                       "\"stop\":\"\\n\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"user\":\"u\"}",
                       &r, &e),
                 0);
    CHECK(r.n_prompt_tokens == 3 && r.prompt_tokens[2] == 3 && r.max_tokens == 7 && r.temperature == 0);
    CHECK(r.top_k == 0 && r.has_seed && r.seed == UINT64_MAX && r.n_stop == 1 && !strcmp(r.stop[0], "\n"));
    CHECK(r.stream && r.include_usage);
    fe_gen_request_free(&r);
    CHECK_EQ_INT(PARSE(FE_KIND_CHAT,
                       "{\"messages\":[{\"role\":\"system\",\"content\":\"be \\\"brief\\\"\"},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}]},"
                       "{\"role\":\"assistant\",\"content\":null}],\"max_completion_tokens\":3}",
                       &r, &e),
                 0);
    CHECK_MSG(r.chat_messages && !strcmp(r.chat_messages, "[{\"role\":\"system\",\"content\":\"be \\\"brief\\\"\"},"
                                                          "{\"role\":\"user\",\"content\":\"a\\nb\"},"
                                                          "{\"role\":\"assistant\",\"content\":\"\"}]"),
              "got %s", r.chat_messages ? r.chat_messages : "(null)");
    CHECK(r.max_tokens == 3);
    fe_gen_request_free(&r);

    /* each refusal: 400 naming the field */
    static const struct {
        fe_kind kind;
        const char *body, *param;
    } bad[] = {
        {FE_KIND_COMPLETION, "[1]", ""},
        {FE_KIND_COMPLETION, "{\"prompt\":", ""},
        {FE_KIND_COMPLETION, "{}", "prompt"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"\"}", "prompt"},
        {FE_KIND_COMPLETION, "{\"prompt\":[\"a\",\"b\"]}", "prompt"},
        {FE_KIND_COMPLETION, "{\"prompt\":[1,-2]}", "prompt"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\\u0000b\"}", "prompt"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":\"5\"}", "max_tokens"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":0}", "max_tokens"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":1.5}", "max_tokens"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"temperature\":3}", "temperature"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"top_p\":0}", "top_p"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"n\":2}", "n"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"stream\":1}", "stream"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"stream_options\":{\"include_usage\":true}}", "stream_options"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"stop\":[1]}", "stop"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"stop\":\"\"}", "stop"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":21}", "logprobs"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":true}", "logprobs"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"echo\":1}", "echo"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"presence_penalty\":0.5}", "presence_penalty"},
        {FE_KIND_COMPLETION, "{\"prompt\":\"a\",\"model\":5}", "model"},
        {FE_KIND_CHAT, "{\"messages\":[]}", "messages"},
        {FE_KIND_CHAT, "{\"messages\":{}}", "messages"},
        {FE_KIND_CHAT, "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", "messages"},
        {FE_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages"},
        {FE_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", "messages"},
        {FE_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":5}", "logprobs"},
        {FE_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", "top_logprobs"},
        {FE_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":-1}",
         "top_logprobs"},
        {FE_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":21}", "top_logprobs"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&e, 0, sizeof e);
        int rc = PARSE(bad[i].kind, bad[i].body, &r, &e);
        CHECK_MSG(rc == -1 && e.status == 400 && !strcmp(e.param, bad[i].param) && e.message[0],
                  "%s: rc %d status %d param '%s'", bad[i].body, rc, e.status, e.param);
    }
}

static void test_tokenize_bodies(void)
{
    fe_tokenize_request t;
    fe_detokenize_request d;
    fe_error e;
    const char *b = "{\"prompt\":\"hi\",\"add_special_tokens\":false}";
    CHECK(!fe_parse_tokenize(b, strlen(b), &t, &e) && !strcmp(t.prompt, "hi") && !t.add_special_tokens);
    fe_tokenize_request_free(&t);
    b = "{\"prompt\":3}";
    CHECK(fe_parse_tokenize(b, strlen(b), &t, &e) && e.status == 400);
    b = "{\"tokens\":[1,2]}";
    CHECK(!fe_parse_detokenize(b, strlen(b), &d, &e) && d.n_tokens == 2 && d.tokens[1] == 2);
    fe_detokenize_request_free(&d);
    b = "{\"tokens\":[1,\"2\"]}";
    CHECK(fe_parse_detokenize(b, strlen(b), &d, &e) && e.status == 400);
}

static void test_stop(void)
{
    char *stops[] = {"END", "\n\n"};
    const char *t = "abc EN";
    fe_stop_scan s = fe_stop_scan_text(t, strlen(t), 0, stops, 2);
    CHECK(!s.matched && s.emit_end == 4); /* "EN" may grow into END */
    t = "abc ENDxyz";
    s = fe_stop_scan_text(t, strlen(t), 4, stops, 2);
    CHECK(s.matched && s.match_at == 4 && s.emit_end == 4);
    t = "a\n\nb END";
    s = fe_stop_scan_text(t, strlen(t), 0, stops, 2);
    CHECK(s.matched && s.match_at == 1); /* the earliest of several */
    t = "ab\n";
    s = fe_stop_scan_text(t, strlen(t), 0, stops, 2);
    CHECK(!s.matched && s.emit_end == 2);
    char *utf[] = {"\xc3\xa9\xc3\xa9"}; /* "éé" */
    t = "x\xc3\xa9";                    /* ends in the stop's first character */
    s = fe_stop_scan_text(t, strlen(t), 0, utf, 1);
    CHECK(!s.matched && s.emit_end == 1);
    s = fe_stop_scan_text("abc", 3, 0, NULL, 0);
    CHECK(!s.matched && s.emit_end == 3);
}

static json_doc *parse_sse(const char *event, const char *what)
{
    size_t n = strlen(event);
    CHECK_MSG(n > 8 && !strncmp(event, "data: ", 6) && !strcmp(event + n - 2, "\n\n"), "%s framing: %s", what, event);
    kv_err err;
    json_doc *d = json_parse(event + 6, n - 8, &err);
    CHECK_MSG(d != NULL, "%s: %s", what, d ? "" : err.msg);
    return d;
}

static void test_render(void)
{
    fe_meta m = {FE_KIND_CHAT, "chatcmpl-1", 1700000000, "m"};
    kv_textbuf b;
    kv_textbuf_init(&b);
    fe_render_chunk(&b, &m, 1, NULL, 0, NULL, NULL, 0);
    CHECK(!strcmp(b.data, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                          "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
                          "\"logprobs\":null,\"finish_reason\":null}]}\n\n"));
    b.len = 0;
    fe_render_chunk(&b, &m, 0, "a\"\n", 3, NULL, "stop", 1);
    json_doc *d = parse_sse(b.data, "chunk");
    if (d) {
        const json_value *c = &json_get(json_root(d), "choices")->u.arr.items[0];
        CHECK(!strcmp(json_get_string(json_get(c, "delta"), "content"), "a\"\n"));
        CHECK(!strcmp(json_get_string(c, "finish_reason"), "stop"));
        CHECK(json_get(json_root(d), "usage")->type == JSON_NULL);
    }
    json_doc_free(d);
    b.len = 0;
    fe_usage u = {5, 7};
    fe_render_usage_chunk(&b, &m, &u);
    d = parse_sse(b.data, "usage chunk");
    if (d) {
        int64_t total;
        CHECK(json_get(json_root(d), "choices")->u.arr.n == 0);
        CHECK(json_get_int(json_get(json_root(d), "usage"), "total_tokens", &total) && total == 12);
    }
    json_doc_free(d);
    b.len = 0;
    fe_render_done(&b);
    CHECK(!strcmp(b.data, "data: [DONE]\n\n"));
    b.len = 0;
    m.kind = FE_KIND_COMPLETION;
    m.id = "cmpl-2";
    fe_render_response(&b, &m, "xy", 2, NULL, "length", &u);
    CHECK(!strcmp(b.data, "{\"id\":\"cmpl-2\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"m\","
                          "\"choices\":[{\"index\":0,\"text\":\"xy\",\"logprobs\":null,\"finish_reason\":\"length\"}],"
                          "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}"));
    b.len = 0;
    fe_error e;
    fe_fail(&e, 400, "invalid_request_error", "n", "", "bad \"n\"");
    fe_render_sse_error(&b, &e);
    CHECK(!strcmp(b.data, "data: {\"error\":{\"message\":\"bad \\\"n\\\"\",\"type\":\"invalid_request_error\","
                          "\"param\":\"n\",\"code\":null}}\n\ndata: [DONE]\n\n"));
    kv_textbuf_free(&b);
}

static void test_router_errors(void)
{
    static const struct {
        int code, status;
        const char *err_code;
    } map[] = {
        {KVC_ERR_INVALID_ARGUMENT, 400, "INVALID_ARGUMENT"},
        {KVC_ERR_PROMPT_TOO_LONG, 400, "context_length_exceeded"},
        {KVC_ERR_UNKNOWN_MODEL, 404, "model_not_found"},
        {KVC_ERR_NO_CAPACITY, 429, "NO_CAPACITY"},
        {KVC_ERR_WORKER_FAILED, 503, "WORKER_FAILED"},
        {KVC_ERR_DISCONNECTED, 503, "DISCONNECTED"},
        {KVC_ERR_DEADLINE_EXCEEDED, 504, "DEADLINE_EXCEEDED"},
        {KVC_ERR_INTERNAL, 500, "INTERNAL"},
        {999, 500, "UNKNOWN_ERROR"},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
        fe_error e;
        fe_error_from_router(&e, map[i].code, i ? "why" : "");
        CHECK_MSG(e.status == map[i].status && !strcmp(e.code, map[i].err_code) && e.message[0],
                  "router error %d: status %d code %s", map[i].code, e.status, e.code);
    }
}

/* A stand-in tokenizer: id i reads "t<i>", id 9 "é" (two bytes, one character). */
static int fake_text(void *ctx, int32_t id, char *out, size_t cap)
{
    (void)ctx;
    return id == 9 ? snprintf(out, cap, "\xc3\xa9") : snprintf(out, cap, "t%d", id);
}

static void test_logprobs(void)
{
    fe_gen_request r;
    fe_error e;
    const char *b = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,\"top_logprobs\":20}";
    CHECK(!PARSE(FE_KIND_CHAT, b, &r, &e) && r.logprobs == 21 && !r.echo);
    fe_gen_request_free(&r);
    b = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":false}";
    CHECK(!PARSE(FE_KIND_CHAT, b, &r, &e) && r.logprobs == 0);
    fe_gen_request_free(&r);
    b = "{\"prompt\":\"a\",\"logprobs\":0,\"echo\":true}";
    CHECK(!PARSE(FE_KIND_COMPLETION, b, &r, &e) && r.logprobs == 1 && r.echo);
    fe_gen_request_free(&r);
    b = "{\"prompt\":\"a\",\"logprobs\":null}";
    CHECK(!PARSE(FE_KIND_COMPLETION, b, &r, &e) && r.logprobs == 0);
    fe_gen_request_free(&r);

    fe_token_texts tt = {fake_text, NULL};
    kv_client_logprobs lp[2] = {{.logprob = -0.5f, .n_top = 2, .top_ids = {7, 9}, .top_logprobs = {-0.5f, -1.25f}},
                                {.logprob = -INFINITY, .n_top = 0}};
    int32_t ids[2] = {7, 9};
    kv_textbuf t;
    kv_textbuf_init(&t);
    fe_render_chat_logprobs(&t, ids, lp, 2, &tt);
    CHECK_MSG(!strcmp(t.data, "{\"content\":[{\"token\":\"t7\",\"logprob\":-0.5,\"bytes\":[116,55],\"top_logprobs\":["
                              "{\"token\":\"t7\",\"logprob\":-0.5,\"bytes\":[116,55]},{\"token\":\"\xc3\xa9\",\"logprob\":-1.25,"
                              "\"bytes\":[195,169]}]},{\"token\":\"\xc3\xa9\",\"logprob\":-9999,\"bytes\":[195,169],"
                              "\"top_logprobs\":[]}]}"),
              "chat logprobs: %s", t.data);
    kv_textbuf_free(&t);
    /* Completions with echo: the prompt first (its first position null), offsets in characters,
     * the token itself added to a top dict that lacks it. */
    int32_t pids[2] = {9, 3};
    kv_client_logprobs plp[1] = {{.logprob = -2.0f, .n_top = 1, .top_ids = {4}, .top_logprobs = {-0.1f}}};
    size_t off = 0;
    kv_textbuf_init(&t);
    fe_render_completion_logprobs(&t, pids, plp, 2, ids, lp, 1, &off, &tt);
    CHECK_MSG(!strcmp(t.data, "{\"tokens\":[\"\xc3\xa9\",\"t3\",\"t7\"],\"token_logprobs\":[null,-2,-0.5],"
                              "\"top_logprobs\":[null,{\"t4\":-0.100000001,\"t3\":-2},{\"t7\":-0.5,\"\xc3\xa9\":-1.25}],"
                              "\"text_offset\":[0,1,3]}"),
              "completion logprobs: %s", t.data);
    CHECK_EQ_INT(off, 5);
    kv_textbuf_free(&t);
}

int main(void)
{
    test_logprobs();
    test_routes();
    test_keys();
    test_generate_bodies();
    test_tokenize_bodies();
    test_stop();
    test_render();
    test_router_errors();
    return kv_test_result();
}
