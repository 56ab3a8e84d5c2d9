#include "fe_logprobs.h"

#include <math.h>
#include <string.h>

#define TOKEN_TEXT_MAX 256

static void text_of(const fe_token_texts *tt, int32_t id, char *out, size_t cap)
{
    if (!tt || !tt->fn || tt->fn(tt->ctx, id, out, cap) < 0)
        out[0] = '\0';
}

static void num(kv_textbuf *b, float v)
{
    kv_textbuf_printf(b, "%.9g", isfinite(v) ? (double)v : -9999.0);
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* {"token": .., "logprob": .., "bytes": [..]} without the closing brace. */
static void chat_entry(kv_textbuf *b, const fe_token_texts *tt, int32_t id, float logprob)
{
    char t[TOKEN_TEXT_MAX];
    text_of(tt, id, t, sizeof t);
    kv_textbuf_puts(b, "{\"token\":");
    kv_textbuf_json_string(b, t, strlen(t));
    kv_textbuf_puts(b, ",\"logprob\":");
    num(b, logprob);
    kv_textbuf_puts(b, ",\"bytes\":[");
    for (size_t i = 0; t[i]; i++)
        kv_textbuf_printf(b, i ? ",%u" : "%u", (unsigned)(unsigned char)t[i]);
    kv_textbuf_puts(b, "]");
}

void fe_render_chat_logprobs(kv_textbuf *b, const int32_t *ids, const kv_client_logprobs *lp, size_t n,
                             const fe_token_texts *tt)
{
    kv_textbuf_puts(b, "{\"content\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            kv_textbuf_puts(b, ",");
        chat_entry(b, tt, ids[i], lp[i].logprob);
        kv_textbuf_puts(b, ",\"top_logprobs\":[");
        for (uint32_t k = 0; k < lp[i].n_top && k < KV_CLIENT_LOGPROBS_TOP_MAX; k++) {
            if (k)
                kv_textbuf_puts(b, ",");
            chat_entry(b, tt, lp[i].top_ids[k], lp[i].top_logprobs[k]);
            kv_textbuf_puts(b, "}");
        }
        kv_textbuf_puts(b, "]}");
    }
    kv_textbuf_puts(b, "]}");
}

/* One position of the completions shape, into the four arrays' buffers. */
typedef struct cmpl_cols {
    kv_textbuf tokens, values, tops, offsets;
    size_t n;
} cmpl_cols;

static void cmpl_add(cmpl_cols *c, const fe_token_texts *tt, int32_t id, const kv_client_logprobs *lp,
                     size_t *offset)
{
    char t[TOKEN_TEXT_MAX];
    text_of(tt, id, t, sizeof t);
    const char *sep = c->n ? "," : "";
    kv_textbuf_puts(&c->tokens, sep);
    kv_textbuf_json_string(&c->tokens, t, strlen(t));
    kv_textbuf_printf(&c->offsets, "%s%zu", sep, *offset);
    *offset += utf8_chars(t);
    kv_textbuf_puts(&c->values, sep);
    kv_textbuf_puts(&c->tops, sep);
    if (!lp) {
        kv_textbuf_puts(&c->values, "null");
        kv_textbuf_puts(&c->tops, "null");
    } else {
        num(&c->values, lp->logprob);
        kv_textbuf_puts(&c->tops, "{");
        int has_self = 0;
        for (uint32_t k = 0; k < lp->n_top && k < KV_CLIENT_LOGPROBS_TOP_MAX; k++) {
            char a[TOKEN_TEXT_MAX];
            text_of(tt, lp->top_ids[k], a, sizeof a);
            kv_textbuf_puts(&c->tops, k ? "," : "");
            kv_textbuf_json_string(&c->tops, a, strlen(a));
            kv_textbuf_puts(&c->tops, ":");
            num(&c->tops, lp->top_logprobs[k]);
            has_self |= lp->top_ids[k] == id;
        }
        if (!has_self) { /* the token itself, as vLLM adds it */
            kv_textbuf_puts(&c->tops, lp->n_top ? "," : "");
            kv_textbuf_json_string(&c->tops, t, strlen(t));
            kv_textbuf_puts(&c->tops, ":");
            num(&c->tops, lp->logprob);
        }
        kv_textbuf_puts(&c->tops, "}");
    }
    c->n++;
}

void fe_render_completion_logprobs(kv_textbuf *b, const int32_t *prompt_ids, const kv_client_logprobs *prompt_lp,
                                   size_t n_prompt, const int32_t *ids, const kv_client_logprobs *lp, size_t n,
                                   size_t *offset, const fe_token_texts *tt)
{
    cmpl_cols c;
    memset(&c, 0, sizeof c);
    kv_textbuf_init(&c.tokens);
    kv_textbuf_init(&c.values);
    kv_textbuf_init(&c.tops);
    kv_textbuf_init(&c.offsets);
    for (size_t i = 0; prompt_lp && i < n_prompt; i++)
        cmpl_add(&c, tt, prompt_ids[i], i ? &prompt_lp[i - 1] : NULL, offset);
    for (size_t i = 0; i < n; i++)
        cmpl_add(&c, tt, ids[i], &lp[i], offset);
    kv_textbuf *cols[4] = {&c.tokens, &c.values, &c.tops, &c.offsets};
    static const char *const names[4] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
    for (int k = 0; k < 4; k++) {
        kv_textbuf_printf(b, "%s\"%s\":[", k ? "," : "{", names[k]);
        if (kv_textbuf_failed(cols[k]))
            b->failed = 1; /* never silently short */
        else if (cols[k]->len)
            kv_textbuf_append(b, cols[k]->data, cols[k]->len);
        kv_textbuf_puts(b, "]");
        kv_textbuf_free(cols[k]);
    }
    kv_textbuf_puts(b, "}");
}
