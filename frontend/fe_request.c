/* Request bodies -> validated structs (fe_request.h). */
#include "fe_request.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "kv_textbuf.h"

#define BAD(e, param, ...) fe_fail(e, 400, "invalid_request_error", param, "", __VA_ARGS__)

/* A member; JSON null counts as absent (OpenAI clients send null for "not given"). */
static const json_value *field(const json_value *obj, const char *name)
{
    const json_value *v = json_get(obj, name);
    return v && v->type != JSON_NULL ? v : NULL;
}

static char *dup_str(const json_value *v)
{
    char *s = malloc(v->u.str.len + 1);
    if (s) {
        memcpy(s, v->u.str.s, v->u.str.len);
        s[v->u.str.len] = '\0';
    }
    return s;
}

/* A string field without NUL bytes (the router takes C strings): 1 present (*out malloc'd),
 * 0 absent, -1 error. */
static int str_field(const json_value *obj, const char *name, char **out, fe_error *e)
{
    const json_value *v = field(obj, name);
    if (!v)
        return 0;
    if (v->type != JSON_STRING)
        return BAD(e, name, "'%s' must be a string, got %s", name, json_type_name(v->type));
    if (memchr(v->u.str.s, '\0', v->u.str.len))
        return BAD(e, name, "'%s' must not contain U+0000", name);
    *out = dup_str(v);
    if (!*out)
        return fe_fail(e, 500, "internal_server_error", "", "", "out of memory");
    return 1;
}

static int num_field(const json_value *obj, const char *name, double lo, double hi, double *out, fe_error *e)
{
    const json_value *v = field(obj, name);
    if (!v)
        return 0;
    if (v->type != JSON_NUMBER)
        return BAD(e, name, "'%s' must be a number, got %s", name, json_type_name(v->type));
    if (!(v->u.number >= lo && v->u.number <= hi))
        return BAD(e, name, "'%s' must be in [%g, %g], got %g", name, lo, hi, v->u.number);
    *out = v->u.number;
    return 1;
}

static int int_field(const json_value *obj, const char *name, double lo, double hi, int64_t *out, fe_error *e)
{
    const json_value *v = field(obj, name);
    if (!v)
        return 0;
    if (v->type != JSON_NUMBER || v->u.number != floor(v->u.number))
        return BAD(e, name, "'%s' must be an integer, got %s", name,
                   v->type == JSON_NUMBER ? "a fraction" : json_type_name(v->type));
    if (!(v->u.number >= lo && v->u.number <= hi))
        return BAD(e, name, "'%s' must be in [%.0f, %.0f], got %.17g", name, lo, hi, v->u.number);
    *out = (int64_t)v->u.number;
    return 1;
}

static int bool_field(const json_value *obj, const char *name, int *out, fe_error *e)
{
    const json_value *v = field(obj, name);
    if (!v)
        return 0;
    if (v->type != JSON_BOOL)
        return BAD(e, name, "'%s' must be a boolean, got %s", name, json_type_name(v->type));
    *out = v->u.boolean;
    return 1;
}

static json_doc *parse_object(const char *body, size_t len, fe_error *e)
{
    kv_err err = {0};
    json_doc *d = json_parse(body, len, &err);
    if (!d) {
        if (err.code == KV_ENOMEM)
            fe_fail(e, 500, "internal_server_error", "", "", "out of memory");
        else
            BAD(e, "", "the body is not valid JSON: %s", err.msg);
        return NULL;
    }
    if (json_root(d)->type != JSON_OBJECT) {
        BAD(e, "", "the body must be a JSON object, got %s", json_type_name(json_root(d)->type));
        json_doc_free(d);
        return NULL;
    }
    return d;
}

/* ---- chat messages ----------------------------------------------------------------- */

static int role_ok(const char *r)
{
    static const char *const roles[] = {"system", "user", "assistant", "tool", "developer"};
    for (size_t i = 0; i < sizeof roles / sizeof *roles; i++)
        if (!strcmp(r, roles[i]))
            return 1;
    return 0;
}

/* One message's content as text: a string, null (""), or text parts joined by "\n" (as
 * vLLM joins them). */
static int write_content(kv_textbuf *b, const json_value *c, size_t i, fe_error *e)
{
    if (!c) {
        kv_textbuf_json_string(b, "", 0);
        return 0;
    }
    if (c->type == JSON_STRING) {
        kv_textbuf_json_string(b, c->u.str.s, c->u.str.len);
        return 0;
    }
    if (c->type != JSON_ARRAY)
        return BAD(e, "messages", "messages[%zu].content must be a string or an array of parts, got %s", i,
                   json_type_name(c->type));
    kv_textbuf text;
    kv_textbuf_init(&text);
    for (size_t k = 0; k < c->u.arr.n; k++) {
        const json_value *p = &c->u.arr.items[k];
        const char *type = json_get_string(p, "type");
        const json_value *t = json_get(p, "text");
        if (p->type != JSON_OBJECT || !type || strcmp(type, "text") || !t || t->type != JSON_STRING) {
            kv_textbuf_free(&text);
            return BAD(e, "messages", "messages[%zu].content[%zu]: only {\"type\": \"text\", \"text\": str} parts are supported", i, k);
        }
        if (k)
            kv_textbuf_append(&text, "\n", 1);
        kv_textbuf_append(&text, t->u.str.s, t->u.str.len);
    }
    kv_textbuf_json_string(b, text.data ? text.data : "", text.len);
    kv_textbuf_free(&text);
    return 0;
}

static int parse_messages(const json_value *root, fe_gen_request *r, fe_error *e)
{
    const json_value *m = field(root, "messages");
    if (!m)
        return BAD(e, "messages", "'messages' is required");
    if (m->type != JSON_ARRAY)
        return BAD(e, "messages", "'messages' must be an array, got %s", json_type_name(m->type));
    if (m->u.arr.n == 0 || m->u.arr.n > FE_MAX_MESSAGES)
        return BAD(e, "messages", "'messages' must hold 1 to %d messages, got %zu", FE_MAX_MESSAGES, m->u.arr.n);
    kv_textbuf b;
    kv_textbuf_init(&b);
    kv_textbuf_puts(&b, "[");
    for (size_t i = 0; i < m->u.arr.n; i++) {
        const json_value *msg = &m->u.arr.items[i];
        if (msg->type != JSON_OBJECT) {
            kv_textbuf_free(&b);
            return BAD(e, "messages", "messages[%zu] must be an object, got %s", i, json_type_name(msg->type));
        }
        const json_value *role = json_get(msg, "role");
        if (!role || role->type != JSON_STRING || !role_ok(role->u.str.s) || strlen(role->u.str.s) != role->u.str.len) {
            kv_textbuf_free(&b);
            return BAD(e, "messages", "messages[%zu].role must be one of system, user, assistant, tool, developer", i);
        }
        kv_textbuf_puts(&b, i ? ",{\"role\":" : "{\"role\":");
        kv_textbuf_json_string(&b, role->u.str.s, role->u.str.len);
        kv_textbuf_puts(&b, ",\"content\":");
        if (write_content(&b, field(msg, "content"), i, e)) {
            kv_textbuf_free(&b);
            return -1;
        }
        const json_value *name = field(msg, "name");
        if (name) {
            if (name->type != JSON_STRING) {
                kv_textbuf_free(&b);
                return BAD(e, "messages", "messages[%zu].name must be a string", i);
            }
            kv_textbuf_puts(&b, ",\"name\":");
            kv_textbuf_json_string(&b, name->u.str.s, name->u.str.len);
        }
        kv_textbuf_puts(&b, "}");
    }
    kv_textbuf_puts(&b, "]");
    if (kv_textbuf_failed(&b)) {
        kv_textbuf_free(&b);
        return fe_fail(e, 500, "internal_server_error", "", "", "out of memory");
    }
    r->chat_messages = b.data;
    return 0;
}

/* ---- completion prompt --------------------------------------------------------------- */

static int parse_ids(const json_value *a, const char *param, int32_t **out, size_t *n_out, fe_error *e)
{
    if (a->u.arr.n == 0)
        return BAD(e, param, "'%s' must not be empty", param);
    if (a->u.arr.n > FE_MAX_PROMPT_IDS)
        return BAD(e, param, "'%s' has more than %d token ids", param, FE_MAX_PROMPT_IDS);
    int32_t *ids = malloc(a->u.arr.n * sizeof *ids);
    if (!ids)
        return fe_fail(e, 500, "internal_server_error", "", "", "out of memory");
    for (size_t i = 0; i < a->u.arr.n; i++) {
        const json_value *v = &a->u.arr.items[i];
        if (v->type != JSON_NUMBER || v->u.number != floor(v->u.number) || v->u.number < 0 || v->u.number > INT32_MAX) {
            free(ids);
            return BAD(e, param, "'%s' must be a string or a list of token ids (integers >= 0); item %zu is not", param, i);
        }
        ids[i] = (int32_t)v->u.number;
    }
    *out = ids;
    *n_out = a->u.arr.n;
    return 0;
}

static int parse_prompt(const json_value *root, fe_gen_request *r, fe_error *e)
{
    const json_value *p = field(root, "prompt");
    if (!p)
        return BAD(e, "prompt", "'prompt' is required");
    if (p->type == JSON_ARRAY && p->u.arr.n == 1 &&
        (p->u.arr.items[0].type == JSON_STRING || p->u.arr.items[0].type == JSON_ARRAY))
        p = &p->u.arr.items[0]; /* a batch of one */
    else if (p->type == JSON_ARRAY && p->u.arr.n > 1 &&
             (p->u.arr.items[0].type == JSON_STRING || p->u.arr.items[0].type == JSON_ARRAY))
        return BAD(e, "prompt", "a batch of %zu prompts is not supported: send one prompt per request", p->u.arr.n);
    if (p->type == JSON_STRING) {
        if (p->u.str.len == 0)
            return BAD(e, "prompt", "'prompt' must not be empty");
        if (memchr(p->u.str.s, '\0', p->u.str.len))
            return BAD(e, "prompt", "'prompt' must not contain U+0000");
        r->prompt = dup_str(p);
        return r->prompt ? 0 : fe_fail(e, 500, "internal_server_error", "", "", "out of memory");
    }
    if (p->type == JSON_ARRAY)
        return parse_ids(p, "prompt", &r->prompt_tokens, &r->n_prompt_tokens, e);
    return BAD(e, "prompt", "'prompt' must be a string or a list of token ids, got %s", json_type_name(p->type));
}

/* ---- sampling and the rest ------------------------------------------------------------- */

static int parse_stop(const json_value *root, fe_gen_request *r, fe_error *e)
{
    const json_value *s = field(root, "stop");
    if (!s)
        return 0;
    const json_value *items = s;
    size_t n = 1;
    if (s->type == JSON_ARRAY) {
        items = s->u.arr.items;
        n = s->u.arr.n;
    }
    if (n > FE_MAX_STOP)
        return BAD(e, "stop", "'stop' holds at most %d sequences, got %zu", FE_MAX_STOP, n);
    for (size_t i = 0; i < n; i++) {
        const json_value *v = &items[i];
        if (v->type != JSON_STRING)
            return BAD(e, "stop", "'stop' must be a string or a list of strings");
        if (v->u.str.len == 0 || v->u.str.len > FE_MAX_STOP_BYTES || memchr(v->u.str.s, '\0', v->u.str.len))
            return BAD(e, "stop", "each stop sequence must be 1 to %d bytes without U+0000", FE_MAX_STOP_BYTES);
        r->stop[r->n_stop] = dup_str(v);
        if (!r->stop[r->n_stop])
            return fe_fail(e, 500, "internal_server_error", "", "", "out of memory");
        r->n_stop++;
    }
    return 0;
}

/* Chat: logprobs (bool) and top_logprobs (0..20, only with logprobs); completions:
 * logprobs (0..20: vLLM's limit, OpenAI's is 5) and echo. */
static int parse_logprobs(const json_value *root, fe_gen_request *r, fe_error *e)
{
    int b = 0, rc;
    int64_t i = 0;
    r->logprobs = 0;
    if (r->kind == FE_KIND_CHAT) {
        if ((rc = bool_field(root, "logprobs", &b, e)) < 0)
            return -1;
        if ((rc = int_field(root, "top_logprobs", 0, FE_MAX_TOP_LOGPROBS, &i, e)) < 0)
            return -1;
        if (rc && !b)
            return BAD(e, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        if (b)
            r->logprobs = (int)i + 1;
        return 0;
    }
    if ((rc = int_field(root, "logprobs", 0, FE_MAX_TOP_LOGPROBS, &i, e)) < 0)
        return -1;
    if (rc)
        r->logprobs = (int)i + 1;
    if (bool_field(root, "echo", &r->echo, e) < 0)
        return -1;
    return 0;
}

/* Fields OpenAI defines that this server does not implement yet: refused, not ignored. */
static int refuse_unsupported(const json_value *root, fe_kind kind, fe_error *e)
{
    int b = 0;
    int64_t i = 0;
    double d = 0;
    (void)b;
    if (kind == FE_KIND_COMPLETION) {
        const json_value *suffix = field(root, "suffix");
        if (suffix)
            return BAD(e, "suffix", "'suffix' is not supported");
        if (int_field(root, "best_of", 1, 1, &i, e) < 0)
            return -1;
    }
    static const char *const penalties[] = {"presence_penalty", "frequency_penalty"};
    for (size_t k = 0; k < 2; k++) {
        int rc = num_field(root, penalties[k], -2, 2, &d, e);
        if (rc < 0)
            return -1;
        if (rc && d != 0)
            return BAD(e, penalties[k], "'%s' is not supported yet (only 0)", penalties[k]);
    }
    const json_value *lb = field(root, "logit_bias");
    if (lb && (lb->type != JSON_OBJECT || lb->u.obj.n))
        return BAD(e, "logit_bias", "'logit_bias' is not supported yet");
    const json_value *tools = field(root, "tools");
    if (tools && (tools->type != JSON_ARRAY || tools->u.arr.n))
        return BAD(e, "tools", "'tools' is not supported yet");
    const json_value *rf = field(root, "response_format");
    if (rf) {
        const char *t = json_get_string(rf, "type");
        if (rf->type != JSON_OBJECT || !t || strcmp(t, "text"))
            return BAD(e, "response_format", "only {\"type\": \"text\"} is supported as 'response_format'");
    }
    return 0;
}

static int parse_common(const json_value *root, fe_gen_request *r, fe_error *e)
{
    int rc;
    if (str_field(root, "model", &r->model, e) < 0)
        return -1;
    int64_t i;
    double d;
    if ((rc = int_field(root, "n", 1, 1e9, &i, e)) < 0)
        return -1;
    if (rc && i != 1)
        return BAD(e, "n", "'n' must be 1 (several choices per request are not supported), got %lld", (long long)i);
    /* max_completion_tokens is the newer name for chat; either may come. */
    const char *mt = r->kind == FE_KIND_CHAT && field(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    if ((rc = int_field(root, mt, 1, UINT32_MAX, &i, e)) < 0)
        return -1;
    if (rc)
        r->max_tokens = (uint32_t)i;
    r->temperature = 1.0f;
    if ((rc = num_field(root, "temperature", 0, 2, &d, e)) < 0)
        return -1;
    if (rc)
        r->temperature = (float)d;
    r->top_p = 1.0f;
    if ((rc = num_field(root, "top_p", 0, 1, &d, e)) < 0)
        return -1;
    if (rc) {
        if (d <= 0)
            return BAD(e, "top_p", "'top_p' must be in (0, 1], got %g", d);
        r->top_p = (float)d;
    }
    if ((rc = int_field(root, "top_k", -1, INT32_MAX, &i, e)) < 0)
        return -1;
    if (rc)
        r->top_k = i < 0 ? 0 : (uint32_t)i;
    /* OpenAI's seed is any int64; the sampler's is 64 bits. */
    if ((rc = int_field(root, "seed", -9223372036854775808.0, 9223372036854774784.0, &i, e)) < 0)
        return -1;
    if (rc) {
        r->seed = (uint64_t)i;
        r->has_seed = 1;
    }
    if (bool_field(root, "stream", &r->stream, e) < 0 || bool_field(root, "ignore_eos", &r->ignore_eos, e) < 0)
        return -1;
    const json_value *so = field(root, "stream_options");
    if (so) {
        if (so->type != JSON_OBJECT)
            return BAD(e, "stream_options", "'stream_options' must be an object");
        if (!r->stream)
            return BAD(e, "stream_options", "'stream_options' is only allowed when 'stream' is true");
        if (bool_field(so, "include_usage", &r->include_usage, e) < 0)
            return -1;
    }
    if (parse_stop(root, r, e))
        return -1;
    if (parse_logprobs(root, r, e))
        return -1;
    return refuse_unsupported(root, r->kind, e);
}

int fe_parse_generate(fe_kind kind, const char *body, size_t len, fe_gen_request *out, fe_error *e)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    json_doc *d = parse_object(body, len, e);
    if (!d)
        return -1;
    const json_value *root = json_root(d);
    int rc = kind == FE_KIND_CHAT ? parse_messages(root, out, e) : parse_prompt(root, out, e);
    if (!rc)
        rc = parse_common(root, out, e);
    json_doc_free(d);
    if (rc) {
        fe_gen_request_free(out);
        return -1;
    }
    return 0;
}

void fe_gen_request_free(fe_gen_request *r)
{
    free(r->model);
    free(r->chat_messages);
    free(r->prompt);
    free(r->prompt_tokens);
    for (size_t i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    memset(r, 0, sizeof *r);
}

/* ---- /tokenize, /detokenize ---------------------------------------------------------------- */

int fe_parse_tokenize(const char *body, size_t len, fe_tokenize_request *out, fe_error *e)
{
    memset(out, 0, sizeof *out);
    out->add_special_tokens = 1;
    json_doc *d = parse_object(body, len, e);
    if (!d)
        return -1;
    const json_value *root = json_root(d);
    int rc = -1;
    const json_value *p = field(root, "prompt");
    if (str_field(root, "model", &out->model, e) < 0 || bool_field(root, "add_special_tokens", &out->add_special_tokens, e) < 0)
        goto done;
    if (field(root, "messages")) {
        BAD(e, "messages", "/tokenize with 'messages' is not supported yet: send 'prompt'");
        goto done;
    }
    if (!p || p->type != JSON_STRING) {
        BAD(e, "prompt", "'prompt' (a string) is required");
        goto done;
    }
    out->prompt = dup_str(p);
    out->prompt_len = p->u.str.len;
    rc = out->prompt ? 0 : fe_fail(e, 500, "internal_server_error", "", "", "out of memory");
done:
    json_doc_free(d);
    if (rc)
        fe_tokenize_request_free(out);
    return rc;
}

void fe_tokenize_request_free(fe_tokenize_request *r)
{
    free(r->model);
    free(r->prompt);
    memset(r, 0, sizeof *r);
}

int fe_parse_detokenize(const char *body, size_t len, fe_detokenize_request *out, fe_error *e)
{
    memset(out, 0, sizeof *out);
    json_doc *d = parse_object(body, len, e);
    if (!d)
        return -1;
    const json_value *root = json_root(d);
    int rc = -1;
    const json_value *t = field(root, "tokens");
    if (str_field(root, "model", &out->model, e) < 0)
        goto done;
    if (!t || t->type != JSON_ARRAY) {
        BAD(e, "tokens", "'tokens' (a list of token ids) is required");
        goto done;
    }
    if (t->u.arr.n == 0) {
        out->tokens = NULL;
        out->n_tokens = 0;
        rc = 0;
        goto done;
    }
    rc = parse_ids(t, "tokens", &out->tokens, &out->n_tokens, e);
done:
    json_doc_free(d);
    if (rc)
        fe_detokenize_request_free(out);
    return rc;
}

void fe_detokenize_request_free(fe_detokenize_request *r)
{
    free(r->model);
    free(r->tokens);
    memset(r, 0, sizeof *r);
}
