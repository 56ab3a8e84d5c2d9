/* Fuzz target of what kv-frontend parses from the network before anything else sees it:
 * the route of a method and URL, the Authorization header against the API keys, the
 * Content-Length header, and the JSON bodies of /v1/chat/completions, /v1/completions,
 * /tokenize and /detokenize, validated into structs; plus the stop-sequence scanner that
 * runs on the generated text. The first input byte picks which. Properties: a refusal is a
 * 400 (or a 500 for memory) with a message, rendering as valid JSON; what is accepted obeys
 * the struct's contract (bounds, NUL-free strings, the chat messages re-serialized as a JSON
 * array of {role, content} strings); a stop scan never sends past a stop sequence and never
 * cuts a match it missed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fe_http.h"
#include "fe_render.h"
#include "fe_request.h"
#include "fe_stop.h"
#include "json.h"
#include "kv_fuzz_target.h"

static void check_refusal(const fe_error *e)
{
    KV_FUZZ_REQUIRE(e->status == 400 || e->status == 500, "refused with status %d", e->status);
    KV_FUZZ_REQUIRE(e->message[0] && e->type[0], "a refusal without a message or type");
    kv_textbuf b;
    kv_textbuf_init(&b);
    fe_render_error(&b, e);
    kv_err err;
    json_doc *d = json_parse(b.data, b.len, &err);
    KV_FUZZ_REQUIRE(d && json_get(json_get(json_root(d), "error"), "message"), "the error renders as bad JSON: %s",
                    b.data);
    json_doc_free(d);
    kv_textbuf_free(&b);
}

static void check_generate(fe_kind kind, const char *body, size_t len)
{
    fe_gen_request r;
    fe_error e = {0};
    if (fe_parse_generate(kind, body, len, &r, &e)) {
        check_refusal(&e);
        return;
    }
    KV_FUZZ_REQUIRE(r.kind == kind, "kind %d", (int)r.kind);
    if (kind == FE_KIND_CHAT) {
        KV_FUZZ_REQUIRE(r.chat_messages && !r.prompt && !r.prompt_tokens, "chat without messages");
        kv_err err;
        json_doc *d = json_parse(r.chat_messages, strlen(r.chat_messages), &err);
        KV_FUZZ_REQUIRE(d, "messages re-serialized as bad JSON (%s): %s", err.msg, r.chat_messages);
        const json_value *a = json_root(d);
        KV_FUZZ_REQUIRE(a->type == JSON_ARRAY && a->u.arr.n >= 1 && a->u.arr.n <= FE_MAX_MESSAGES, "messages shape");
        for (size_t i = 0; i < a->u.arr.n; i++)
            KV_FUZZ_REQUIRE(json_get_string(&a->u.arr.items[i], "role") &&
                                json_get_string(&a->u.arr.items[i], "content"),
                            "message %zu lacks a role or content string", i);
        json_doc_free(d);
    } else {
        KV_FUZZ_REQUIRE(!r.prompt != !r.prompt_tokens, "completion needs exactly one of prompt and prompt_tokens");
        if (r.prompt)
            KV_FUZZ_REQUIRE(r.prompt[0], "an empty prompt was accepted");
        for (size_t i = 0; i < r.n_prompt_tokens; i++)
            KV_FUZZ_REQUIRE(r.prompt_tokens[i] >= 0, "token %zu is %d", i, r.prompt_tokens[i]);
        KV_FUZZ_REQUIRE(r.n_prompt_tokens <= FE_MAX_PROMPT_IDS, "%zu prompt ids", r.n_prompt_tokens);
    }
    KV_FUZZ_REQUIRE(r.temperature >= 0 && r.temperature <= 2, "temperature %g", r.temperature);
    KV_FUZZ_REQUIRE(r.top_p > 0 && r.top_p <= 1, "top_p %g", r.top_p);
    KV_FUZZ_REQUIRE(r.n_stop <= FE_MAX_STOP, "%zu stops", r.n_stop);
    for (size_t i = 0; i < r.n_stop; i++)
        KV_FUZZ_REQUIRE(strlen(r.stop[i]) >= 1 && strlen(r.stop[i]) <= FE_MAX_STOP_BYTES, "stop %zu", i);
    KV_FUZZ_REQUIRE(!r.include_usage || r.stream, "include_usage without stream");
    fe_gen_request_free(&r);
}

static void check_tokenize(const char *body, size_t len)
{
    fe_tokenize_request t;
    fe_detokenize_request d;
    fe_error e = {0};
    if (fe_parse_tokenize(body, len, &t, &e))
        check_refusal(&e);
    else {
        KV_FUZZ_REQUIRE(t.prompt && t.prompt[t.prompt_len] == '\0', "tokenize prompt");
        fe_tokenize_request_free(&t);
    }
    memset(&e, 0, sizeof e);
    if (fe_parse_detokenize(body, len, &d, &e))
        check_refusal(&e);
    else {
        for (size_t i = 0; i < d.n_tokens; i++)
            KV_FUZZ_REQUIRE(d.tokens[i] >= 0, "detokenize id %d", d.tokens[i]);
        fe_detokenize_request_free(&d);
    }
}

/* "METHOD URL\nAUTHORIZATION\nCONTENT-LENGTH\nKEYS" */
static void check_headers(const char *s, size_t len)
{
    char buf[4][512];
    memset(buf, 0, sizeof buf);
    for (size_t f = 0, i = 0; f < 4 && i <= len; f++) {
        size_t n = 0;
        while (i < len && s[i] != '\n') {
            if (n < sizeof buf[f] - 1)
                buf[f][n++] = s[i] ? s[i] : ' ';
            i++;
        }
        i++;
    }
    char *sp = strchr(buf[0], ' ');
    const char *method = buf[0], *url = sp ? sp + 1 : "";
    if (sp)
        *sp = '\0';
    fe_route_match m = fe_http_route(method, url);
    KV_FUZZ_REQUIRE(m.route == FE_ROUTE_NONE || (m.allow && m.allow[0]), "a route without its method");
    KV_FUZZ_REQUIRE(m.route != FE_ROUTE_NONE || !m.method_ok, "no route but the method is right");
    (void)fe_route_name(m.route);
    uint64_t v;
    if (!fe_http_content_length(buf[2], &v)) {
        char again[32];
        snprintf(again, sizeof again, "%llu", (unsigned long long)v);
        KV_FUZZ_REQUIRE(strstr(buf[2], again), "Content-Length %s read as %s", buf[2], again);
    }
    fe_keys k = {0};
    if (fe_keys_add_list(&k, buf[3]) == 0) {
        for (int i = 0; i < k.n; i++) {
            char auth[FE_MAX_API_KEY_BYTES + 16];
            snprintf(auth, sizeof auth, "Bearer %s", k.key[i]);
            KV_FUZZ_REQUIRE(k.len[i] == strlen(k.key[i]) && k.len[i] > 0, "key %d", i);
            KV_FUZZ_REQUIRE(fe_keys_check(&k, auth), "key %d is refused", i);
        }
    }
    if (!k.n)
        KV_FUZZ_REQUIRE(!fe_keys_check(&k, buf[1]), "no keys, yet '%s' passed", buf[1]);
}

/* "STOP1\x01STOP2\x01...\x02TEXT", scanned at every length of TEXT as it grows. */
static void check_stop(const char *s, size_t len)
{
    char *stops[FE_MAX_STOP] = {0};
    size_t n_stop = 0;
    const char *sep = memchr(s, 2, len);
    const char *text = sep ? sep + 1 : s;
    size_t text_len = sep ? len - (size_t)(sep + 1 - s) : len;
    for (const char *p = s; sep && p < sep && n_stop < FE_MAX_STOP;) {
        const char *e = memchr(p, 1, (size_t)(sep - p));
        size_t n = e ? (size_t)(e - p) : (size_t)(sep - p);
        if (n && !memchr(p, 0, n)) {
            stops[n_stop] = strndup(p, n);
            if (stops[n_stop])
                n_stop++;
        }
        p += n + 1;
    }
    /* Fed a byte at a time, the output ends at the first stop sequence to complete: the
     * earliest end E of any occurrence; of the occurrences complete by E, the earliest start
     * (a longer stop starting sooner but completing later never gets the chance).
     * first = text_len + 1: none. */
    size_t first_end = text_len + 1;
    for (size_t i = 0; i < n_stop; i++) {
        const char *hit = memmem(text, text_len, stops[i], strlen(stops[i]));
        if (hit && (size_t)(hit - text) + strlen(stops[i]) < first_end)
            first_end = (size_t)(hit - text) + strlen(stops[i]);
    }
    size_t first = text_len + 1;
    for (size_t i = 0; i < n_stop && first_end <= text_len; i++) {
        const char *hit = memmem(text, first_end, stops[i], strlen(stops[i]));
        if (hit && (size_t)(hit - text) < first)
            first = (size_t)(hit - text);
    }
    size_t sent = 0, matched_at = text_len + 1;
    for (size_t end = 0; end <= text_len; end++) {
        fe_stop_scan sc = fe_stop_scan_text(text, end, sent, stops, n_stop);
        KV_FUZZ_REQUIRE(sc.emit_end >= sent && sc.emit_end <= end, "emit_end %zu outside [%zu, %zu]", sc.emit_end, sent,
                        end);
        for (size_t i = 0; i < n_stop; i++) {
            size_t sl = strlen(stops[i]);
            const char *hit = end - sent >= sl ? memmem(text + sent, end - sent, stops[i], sl) : NULL;
            if (!sc.matched)
                KV_FUZZ_REQUIRE(!hit, "stop %zu at %zu missed", i, (size_t)(hit - text));
            else
                KV_FUZZ_REQUIRE(!hit || (size_t)(hit - text) >= sc.match_at, "stop %zu earlier than the match", i);
        }
        if (sc.matched) {
            KV_FUZZ_REQUIRE(sc.emit_end == sc.match_at, "emits past the match");
            matched_at = sc.match_at;
            break;
        }
        sent = sc.emit_end;
    }
    /* text that was sent never holds the start of a stop sequence completed later */
    KV_FUZZ_REQUIRE(matched_at == first, "the first stop sequence starts at %zu, the scan matched at %zu", first,
                    matched_at);
    for (size_t i = 0; i < n_stop; i++)
        free(stops[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    switch (data[0] % 5) {
    case 0: check_generate(FE_KIND_CHAT, s, n); break;
    case 1: check_generate(FE_KIND_COMPLETION, s, n); break;
    case 2: check_tokenize(s, n); break;
    case 3: check_headers(s, n); break;
    default: check_stop(s, n); break;
    }
    return 0;
}

/* ---- the generator ---------------------------------------------------------------------- */


static void gen_field(kv_fuzz_rng *r, kv_fuzz_out *o)
{
    static const char *const fields[] = {
        "\"max_tokens\":16", "\"max_tokens\":0", "\"max_tokens\":\"8\"", "\"max_tokens\":4294967296",
        "\"max_completion_tokens\":3", "\"temperature\":0", "\"temperature\":2.5", "\"temperature\":null",
        "\"top_p\":0.9", "\"top_p\":0", "\"top_k\":-1", "\"top_k\":40", "\"top_k\":1.5", "\"seed\":-9223372036854775808",
        "\"seed\":9223372036854775807", "\"seed\":1e300", "\"n\":1", "\"n\":3", "\"stream\":true", "\"stream\":false",
        "\"stream\":\"yes\"", "\"stream_options\":{\"include_usage\":true}", "\"stream_options\":[]",
        "\"stop\":\"\\n\"", "\"stop\":[\"a\",\"b\"]", "\"stop\":[]", "\"stop\":[\"\"]", "\"stop\":[1]",
        "\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]", "\"logprobs\":true", "\"logprobs\":2", "\"top_logprobs\":3",
        "\"echo\":true", "\"user\":\"u\"", "\"model\":\"stories260K\"", "\"model\":7", "\"ignore_eos\":true",
        "\"presence_penalty\":0", "\"frequency_penalty\":1", "\"logit_bias\":{}", "\"tools\":[]",
        "\"response_format\":{\"type\":\"json_object\"}", "\"add_special_tokens\":false", "\"tokens\":[1,2,3]",
        "\"tokens\":[-1]", "\"tokens\":[]", "\"prompt\":\"Once upon a time\"", "\"prompt\":\"\"", "\"prompt\":[1,2]",
        "\"prompt\":[[5,6]]", "\"prompt\":[\"a\",\"b\"]", "\"prompt\":[\"x\"]", "\"prompt\":\"a\\u0000b\"",
        "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]", "\"messages\":[]",
        "\"messages\":[{\"role\":\"system\",\"content\":null},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"}]}]",
        "\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]", "\"messages\":[{\"role\":\"user\",\"content\":{}}]",
        "\"messages\":[{\"role\":\"user\",\"content\":\"\\ud83e\\udd99\",\"name\":\"n\"}]", "\"messages\":[1]"};
    kv_fuzz_out_str(o, KV_FUZZ_PICK(r, fields));
}

size_t kv_fuzz_target_seed(kv_fuzz_rng *r, uint8_t *buf, size_t cap)
{
    kv_fuzz_out o = {buf, cap, 0};
    uint8_t mode = (uint8_t)kv_fuzz_below(r, 5);
    kv_fuzz_out_str(&o, (char[]){(char)(mode ? mode : 5), 0});
    if (mode == 3) {
        static const char *const methods[] = {"GET", "POST", "HEAD", "PUT", "DELETE", ""};
        static const char *const urls[] = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health",
                                           "/metrics", "/tokenize", "/detokenize", "/", "/v1/models/",
                                           "/health?x=1", "/v1//models", "/v1/completions#f"};
        static const char *const auth[] = {"Bearer k1", "bearer k2", "Bearer", "Basic abc", "", "Bearer  k1"};
        static const char *const lens[] = {"0", "12", " 7 ", "-1", "1e3", "18446744073709551615",
                                           "18446744073709551616", ""};
        static const char *const keys[] = {"k1", "k1,k2", " a , b ,", ",,,", "", "x,y,z,w,v,u,t,s,r,q,p,o,n,m,l,k,j"};
        kv_fuzz_out_str(&o, KV_FUZZ_PICK(r, methods));
        kv_fuzz_out_str(&o, " ");
        kv_fuzz_out_str(&o, KV_FUZZ_PICK(r, urls));
        kv_fuzz_out_str(&o, "\n");
        kv_fuzz_out_str(&o, KV_FUZZ_PICK(r, auth));
        kv_fuzz_out_str(&o, "\n");
        kv_fuzz_out_str(&o, KV_FUZZ_PICK(r, lens));
        kv_fuzz_out_str(&o, "\n");
        kv_fuzz_out_str(&o, KV_FUZZ_PICK(r, keys));
        return o.len;
    }
    if (mode == 4) {
        static const char *const stops[] = {"END", "\n\n", "a", "ab", "\xc3\xa9", "aa", "x\xc3"};
        static const char *const pieces[] = {"a", "b", "E", "N", "D", "\n", "\xc3\xa9", "\xc3", " ", "ab"};
        for (int i = (int)kv_fuzz_below(r, 4); i > 0; i--) {
            kv_fuzz_out_str(&o, KV_FUZZ_PICK(r, stops));
            kv_fuzz_out_str(&o, "\x01");
        }
        kv_fuzz_out_str(&o, "\x02");
        for (int i = (int)kv_fuzz_below(r, 30); i > 0; i--)
            kv_fuzz_out_str(&o, KV_FUZZ_PICK(r, pieces));
        return o.len;
    }
    kv_fuzz_out_str(&o, "{");
    for (int n = (int)kv_fuzz_below(r, 7), i = 0; i < n; i++) {
        if (i)
            kv_fuzz_out_str(&o, kv_fuzz_below(r, 40) ? "," : "");
        gen_field(r, &o);
    }
    kv_fuzz_out_str(&o, kv_fuzz_below(r, 30) ? "}" : "");
    return o.len;
}
