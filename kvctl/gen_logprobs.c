#include "gen_logprobs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(KV_CLIENT_LOGPROBS_TOP_MAX == KC_LOGPROBS_TOP_MAX, "one top-list size");

void gen_logprobs_free(gen_logprobs *g)
{
    free(g->tok);
    free(g->prompt);
    memset(g, 0, sizeof *g);
}

static void from_engine(const kc_logprobs *in, kv_client_logprobs *out)
{
    memset(out, 0, sizeof *out);
    out->logprob = in->logprob;
    out->n_top = in->n_top > 0 ? (uint32_t)in->n_top : 0;
    memcpy(out->top_ids, in->top_ids, out->n_top * sizeof *out->top_ids);
    memcpy(out->top_logprobs, in->top_logprobs, out->n_top * sizeof *out->top_logprobs);
}

static kv_client_logprobs *room(gen_logprobs *g, size_t n)
{
    if (g->n_tok + n > g->cap_tok) {
        size_t cap = g->cap_tok ? g->cap_tok : 64;
        while (cap < g->n_tok + n)
            cap *= 2;
        kv_client_logprobs *p = realloc(g->tok, cap * sizeof *p);
        if (!p) {
            g->failed = 1;
            return NULL;
        }
        g->tok = p;
        g->cap_tok = cap;
    }
    return g->tok + g->n_tok;
}

void gen_logprobs_add(gen_logprobs *g, const kv_client_logprobs *lp, size_t n)
{
    kv_client_logprobs *p = room(g, n);
    if (!p)
        return;
    if (n)
        memcpy(p, lp, n * sizeof *p);
    g->n_tok += n;
}

void gen_logprobs_add_engine(gen_logprobs *g, const kc_logprobs *lp, size_t n)
{
    kv_client_logprobs *p = room(g, n);
    if (!p)
        return;
    for (size_t i = 0; i < n; i++)
        from_engine(&lp[i], &p[i]);
    g->n_tok += n;
}

void gen_logprobs_set_prompt(gen_logprobs *g, const kv_client_logprobs *lp, size_t n)
{
    free(g->prompt);
    g->prompt = n ? malloc(n * sizeof *g->prompt) : NULL;
    g->have_prompt = 1;
    g->n_prompt = g->prompt ? n : 0;
    if (n && !g->prompt)
        g->failed = 1;
    else if (n)
        memcpy(g->prompt, lp, n * sizeof *lp);
}

void gen_logprobs_set_prompt_engine(gen_logprobs *g, const kc_logprobs *lp, size_t n)
{
    gen_logprobs_set_prompt(g, NULL, 0);
    if (n && !(g->prompt = malloc(n * sizeof *g->prompt))) {
        g->failed = 1;
        return;
    }
    for (size_t i = 0; i < n; i++)
        from_engine(&lp[i], &g->prompt[i]);
    g->n_prompt = n;
}

static void num(kv_textbuf *b, float v)
{
    if (isfinite(v))
        kv_textbuf_printf(b, "%.9g", (double)v);
    else
        kv_textbuf_puts(b, "null");
}

static void top_list(kv_textbuf *b, const kv_client_logprobs *lp)
{
    kv_textbuf_puts(b, "[");
    for (uint32_t k = 0; k < lp->n_top; k++) {
        kv_textbuf_printf(b, "%s{\"id\": %d, \"logprob\": ", k ? ", " : "", lp->top_ids[k]);
        num(b, lp->top_logprobs[k]);
        kv_textbuf_puts(b, "}");
    }
    kv_textbuf_puts(b, "]");
}

/* "key": [values] and "key_top": [lists] of n entries, with a leading null when lead. */
static void member_pair(kv_textbuf *b, const char *key, const char *top_key, const kv_client_logprobs *lp, size_t n,
                        int lead)
{
    kv_textbuf_printf(b, ", \"%s\": [%s", key, lead ? "null" : "");
    for (size_t i = 0; i < n; i++) {
        kv_textbuf_puts(b, i || lead ? ", " : "");
        num(b, lp[i].logprob);
    }
    kv_textbuf_printf(b, "], \"%s\": [%s", top_key, lead ? "null" : "");
    for (size_t i = 0; i < n; i++) {
        kv_textbuf_puts(b, i || lead ? ", " : "");
        top_list(b, &lp[i]);
    }
    kv_textbuf_puts(b, "]");
}

void gen_logprobs_json(const gen_logprobs *g, kv_textbuf *b)
{
    member_pair(b, "token_logprobs", "top_logprobs", g->tok, g->n_tok, 0);
    if (g->have_prompt)
        member_pair(b, "prompt_logprobs", "prompt_top_logprobs", g->prompt, g->n_prompt, 1);
}
