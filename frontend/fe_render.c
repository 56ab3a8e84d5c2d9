/* OpenAI-shaped JSON (fe_render.h). */
#include "fe_render.h"

#include <string.h>

static void str_or_null(kv_textbuf *b, const char *s)
{
    if (s && *s)
        kv_textbuf_json_string(b, s, strlen(s));
    else
        kv_textbuf_puts(b, "null");
}

void fe_render_error(kv_textbuf *b, const fe_error *e)
{
    kv_textbuf_puts(b, "{\"error\":{\"message\":");
    kv_textbuf_json_string(b, e->message, strlen(e->message));
    kv_textbuf_puts(b, ",\"type\":");
    kv_textbuf_json_string(b, e->type, strlen(e->type));
    kv_textbuf_puts(b, ",\"param\":");
    str_or_null(b, e->param);
    kv_textbuf_puts(b, ",\"code\":");
    str_or_null(b, e->code);
    kv_textbuf_puts(b, "}}");
}

void fe_render_sse_error(kv_textbuf *b, const fe_error *e)
{
    kv_textbuf_puts(b, "data: ");
    fe_render_error(b, e);
    kv_textbuf_puts(b, "\n\n");
    fe_render_done(b);
}

static void head(kv_textbuf *b, const fe_meta *m, int chunk)
{
    kv_textbuf_puts(b, "{\"id\":");
    kv_textbuf_json_string(b, m->id, strlen(m->id));
    kv_textbuf_puts(b, ",\"object\":");
    kv_textbuf_puts(b, m->kind == FE_KIND_CHAT ? (chunk ? "\"chat.completion.chunk\"" : "\"chat.completion\"")
                                               : "\"text_completion\"");
    kv_textbuf_printf(b, ",\"created\":%lld,\"model\":", m->created);
    kv_textbuf_json_string(b, m->model, strlen(m->model));
}

static void usage(kv_textbuf *b, const fe_usage *u)
{
    kv_textbuf_printf(b, "{\"prompt_tokens\":%u,\"completion_tokens\":%u,\"total_tokens\":%llu}", u->prompt_tokens,
                      u->completion_tokens, (unsigned long long)u->prompt_tokens + u->completion_tokens);
}

void fe_render_response(kv_textbuf *b, const fe_meta *m, const char *text, size_t len, const char *logprobs,
                        const char *finish, const fe_usage *u)
{
    head(b, m, 0);
    if (m->kind == FE_KIND_CHAT) {
        kv_textbuf_puts(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
        kv_textbuf_json_string(b, text, len);
        kv_textbuf_puts(b, "},\"logprobs\":");
        kv_textbuf_puts(b, logprobs ? logprobs : "null");
        kv_textbuf_puts(b, ",\"finish_reason\":");
    } else {
        kv_textbuf_puts(b, ",\"choices\":[{\"index\":0,\"text\":");
        kv_textbuf_json_string(b, text, len);
        kv_textbuf_puts(b, ",\"logprobs\":");
        kv_textbuf_puts(b, logprobs ? logprobs : "null");
        kv_textbuf_puts(b, ",\"finish_reason\":");
    }
    str_or_null(b, finish);
    kv_textbuf_puts(b, "}],\"usage\":");
    usage(b, u);
    kv_textbuf_puts(b, "}");
}

void fe_render_chunk(kv_textbuf *b, const fe_meta *m, int role, const char *text, size_t len, const char *logprobs,
                     const char *finish, int with_usage_null)
{
    kv_textbuf_puts(b, "data: ");
    head(b, m, 1);
    if (m->kind == FE_KIND_CHAT) {
        kv_textbuf_puts(b, ",\"choices\":[{\"index\":0,\"delta\":{");
        if (role)
            kv_textbuf_puts(b, "\"role\":\"assistant\",\"content\":\"\"");
        else if (text) {
            kv_textbuf_puts(b, "\"content\":");
            kv_textbuf_json_string(b, text, len);
        }
        kv_textbuf_puts(b, "},\"logprobs\":");
        kv_textbuf_puts(b, logprobs ? logprobs : "null");
        kv_textbuf_puts(b, ",\"finish_reason\":");
    } else {
        kv_textbuf_puts(b, ",\"choices\":[{\"index\":0,\"text\":");
        kv_textbuf_json_string(b, text ? text : "", text ? len : 0);
        kv_textbuf_puts(b, ",\"logprobs\":");
        kv_textbuf_puts(b, logprobs ? logprobs : "null");
        kv_textbuf_puts(b, ",\"finish_reason\":");
    }
    str_or_null(b, finish);
    kv_textbuf_puts(b, "}]");
    if (with_usage_null)
        kv_textbuf_puts(b, ",\"usage\":null");
    kv_textbuf_puts(b, "}\n\n");
}

void fe_render_usage_chunk(kv_textbuf *b, const fe_meta *m, const fe_usage *u)
{
    kv_textbuf_puts(b, "data: ");
    head(b, m, 1);
    kv_textbuf_puts(b, ",\"choices\":[],\"usage\":");
    usage(b, u);
    kv_textbuf_puts(b, "}\n\n");
}

void fe_render_done(kv_textbuf *b) { kv_textbuf_puts(b, "data: [DONE]\n\n"); }

void fe_render_keepalive(kv_textbuf *b) { kv_textbuf_puts(b, ": keep-alive\n\n"); }

void fe_render_models(kv_textbuf *b, const char *model, long long created, uint32_t max_model_len)
{
    kv_textbuf_puts(b, "{\"object\":\"list\",\"data\":[{\"id\":");
    kv_textbuf_json_string(b, model, strlen(model));
    kv_textbuf_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"kvserve\",\"root\":", created);
    kv_textbuf_json_string(b, model, strlen(model));
    kv_textbuf_printf(b, ",\"parent\":null,\"max_model_len\":%u}]}", max_model_len);
}

void fe_render_tokens(kv_textbuf *b, const int32_t *ids, size_t n, uint32_t max_model_len)
{
    kv_textbuf_printf(b, "{\"count\":%zu,\"max_model_len\":%u,\"tokens\":[", n, max_model_len);
    for (size_t i = 0; i < n; i++)
        kv_textbuf_printf(b, i ? ",%d" : "%d", ids[i]);
    kv_textbuf_puts(b, "],\"token_strs\":null}");
}

void fe_render_detokenized(kv_textbuf *b, const char *text, size_t len)
{
    kv_textbuf_puts(b, "{\"prompt\":");
    kv_textbuf_json_string(b, text, len);
    kv_textbuf_puts(b, "}");
}
