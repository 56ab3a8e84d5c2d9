#include "router_requests.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Client key: [route length][route bytes][request_id bytes]. */
static size_t client_key(const kv_wire_route *client, const char *id, unsigned char *key, size_t cap)
{
    size_t id_len = strlen(id);
    if (1 + client->len + id_len > cap)
        return 0;
    key[0] = (unsigned char)client->len;
    memcpy(key + 1, client->id, client->len);
    memcpy(key + 1 + client->len, id, id_len);
    return 1 + client->len + id_len;
}

#define CLIENT_KEY_CAP (1 + KV_WIRE_MAX_ROUTE + 1024)

void router_requests_init(router_requests *t)
{
    memset(t, 0, sizeof *t);
    router_map_init(&t->by_client);
    router_map_init(&t->by_wire);
    t->next_seq = 1;
}

static void req_free(router_req *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_pending; i++)
        free(r->pending[i].tokens), free(r->pending[i].lp);
    free(r->pending);
    free(r->id);
    free(r->wire_id);
    free(r->prompt);
    free(r->block_ids);
    free(r->out_tokens);
    free(r->out_lp);
    free(r->prompt_lp);
    free(r->out_text);
    free(r->gen);
    router_stop_free(&r->stop);
    free(r);
}

void router_requests_free(router_requests *t)
{
    router_req *r = t->head;
    while (r) {
        router_req *next = r->next;
        req_free(r);
        r = next;
    }
    router_map_free(&t->by_client);
    router_map_free(&t->by_wire);
    memset(t, 0, sizeof *t);
}

/* Appends r to the list of all requests (creation order). */
static router_req *link_last(router_requests *t, router_req *r)
{
    r->prev = t->tail;
    if (t->tail)
        t->tail->next = r;
    else
        t->head = r;
    t->tail = r;
    t->n++;
    return r;
}

router_req *router_requests_add(router_requests *t, const kv_wire_route *client, const char *id, int32_t *prompt,
                                uint32_t n_prompt, double now)
{
    unsigned char key[CLIENT_KEY_CAP];
    size_t klen = client_key(client, id, key, sizeof key);
    router_req *r = calloc(1, sizeof *r);
    if (!r || !klen) {
        free(r);
        free(prompt);
        return NULL;
    }
    r->prompt = prompt;
    r->n_prompt = n_prompt;
    r->n_prompt_orig = n_prompt;
    r->client = *client;
    r->seq = t->next_seq++;
    r->id = strdup(id);
    size_t wlen = strlen(id) + 32;
    r->wire_id = malloc(wlen);
    if (!r->id || !r->wire_id)
        goto fail;
    snprintf(r->wire_id, wlen, "%s@%" PRIu64, id, r->seq);
    if (router_map_put(&t->by_client, key, klen, r))
        goto fail;
    if (router_map_put(&t->by_wire, r->wire_id, strlen(r->wire_id), r)) {
        router_map_del(&t->by_client, key, klen);
        goto fail;
    }
    r->state = RQ_QUEUED;
    r->t_accept = now;
    return link_last(t, r);
fail:
    req_free(r);
    return NULL;
}

router_req *router_requests_add_orphan(router_requests *t, const char *wire_id, int32_t *prompt, uint32_t n_prompt,
                                       double now)
{
    const char *at = strrchr(wire_id, '@');
    router_req *r = at && at != wire_id ? calloc(1, sizeof *r) : NULL;
    if (!r) {
        free(prompt);
        return NULL;
    }
    r->prompt = prompt;
    r->n_prompt = r->n_prompt_orig = n_prompt;
    r->orphan = 1;
    r->id = strndup(wire_id, (size_t)(at - wire_id));
    r->wire_id = strdup(wire_id);
    if (!r->id || !r->wire_id || router_map_put(&t->by_wire, r->wire_id, strlen(r->wire_id), r)) {
        req_free(r);
        return NULL;
    }
    r->state = RQ_DECODING;
    r->t_accept = now;
    return link_last(t, r);
}

int router_requests_set_wire(router_requests *t, router_req *r, const char *wire_id)
{
    char *wire = strdup(wire_id);
    if (!wire || router_map_put(&t->by_wire, wire, strlen(wire), r)) {
        free(wire);
        return KV_ENOMEM;
    }
    router_map_del(&t->by_wire, r->wire_id, strlen(r->wire_id));
    free(r->wire_id);
    r->wire_id = wire;
    return KV_OK;
}

int router_req_resume(router_req *r, const int32_t *tokens, uint32_t n)
{
    if (!n)
        return KV_OK;
    if (n >= r->max_tokens || r->n_prompt > UINT32_MAX - n)
        return KV_EINVAL;
    int32_t *p = realloc(r->prompt, (size_t)(r->n_prompt + n) * sizeof *p);
    if (!p)
        return KV_ENOMEM;
    r->prompt = p;
    int32_t *g = malloc((size_t)n * sizeof *g);
    if (!g)
        return KV_ENOMEM;
    memcpy(p + r->n_prompt, tokens, (size_t)n * sizeof *p);
    memcpy(g, tokens, (size_t)n * sizeof *g);
    free(r->gen);
    r->gen = g;
    r->n_gen = r->cap_gen = n;
    r->n_prompt += n;
    r->max_tokens -= n;
    r->index_base = r->next_index = r->out_index = n;
    return KV_OK;
}

int router_requests_rewire(router_requests *t, router_req *r)
{
    uint64_t seq = t->next_seq++;
    size_t wlen = strlen(r->id) + 32;
    char *wire = malloc(wlen);
    if (!wire)
        return KV_ENOMEM;
    snprintf(wire, wlen, "%s@%" PRIu64, r->id, seq);
    if (router_map_put(&t->by_wire, wire, strlen(wire), r)) {
        free(wire);
        return KV_ENOMEM;
    }
    router_map_del(&t->by_wire, r->wire_id, strlen(r->wire_id));
    free(r->wire_id);
    r->wire_id = wire;
    r->seq = seq;
    return KV_OK;
}

int router_req_restart_after_delivered(router_req *r)
{
    uint32_t fresh = r->next_index - r->index_base;
    if (fresh) {
        int32_t *p = realloc(r->prompt, (size_t)(r->n_prompt + fresh) * sizeof *p);
        if (!p)
            return KV_ENOMEM;
        memcpy(p + r->n_prompt, r->gen + r->index_base, (size_t)fresh * sizeof *p);
        r->prompt = p;
        r->n_prompt += fresh;
        r->max_tokens -= fresh;
        r->index_base = r->next_index;
    }
    for (size_t i = 0; i < r->n_pending; i++)
        free(r->pending[i].tokens), free(r->pending[i].lp);
    r->n_pending = 0;
    free(r->block_ids);
    r->block_ids = NULL;
    r->n_block_ids = 0;
    r->blocks = 0;
    r->p_done = r->d_done = 0;
    r->dl_token = 0;
    return KV_OK;
}

router_req *router_requests_find_client(const router_requests *t, const kv_wire_route *client, const char *id)
{
    unsigned char key[CLIENT_KEY_CAP];
    size_t klen = client_key(client, id, key, sizeof key);
    return klen ? router_map_get(&t->by_client, key, klen) : NULL;
}

router_req *router_requests_find_wire(const router_requests *t, const char *wire_id)
{
    return router_map_get(&t->by_wire, wire_id, strlen(wire_id));
}

void router_requests_remove(router_requests *t, router_req *r)
{
    unsigned char key[CLIENT_KEY_CAP];
    size_t klen = client_key(&r->client, r->id, key, sizeof key);
    router_queue_remove(t, r);
    router_map_del(&t->by_client, key, klen);
    router_map_del(&t->by_wire, r->wire_id, strlen(r->wire_id));
    if (r->prev)
        r->prev->next = r->next;
    else
        t->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        t->tail = r->prev;
    t->n--;
    req_free(r);
}

void router_queue_push_back(router_requests *t, router_req *r)
{
    if (r->in_queue)
        return;
    r->qnext = NULL;
    r->qprev = t->qtail;
    if (t->qtail)
        t->qtail->qnext = r;
    else
        t->qhead = r;
    t->qtail = r;
    r->in_queue = 1;
    t->n_queued++;
}

void router_queue_push_front(router_requests *t, router_req *r)
{
    if (r->in_queue)
        return;
    r->qprev = NULL;
    r->qnext = t->qhead;
    if (t->qhead)
        t->qhead->qprev = r;
    else
        t->qtail = r;
    t->qhead = r;
    r->in_queue = 1;
    t->n_queued++;
}

void router_queue_remove(router_requests *t, router_req *r)
{
    if (!r->in_queue)
        return;
    if (r->qprev)
        r->qprev->qnext = r->qnext;
    else
        t->qhead = r->qnext;
    if (r->qnext)
        r->qnext->qprev = r->qprev;
    else
        t->qtail = r->qprev;
    r->qprev = r->qnext = NULL;
    r->in_queue = 0;
    t->n_queued--;
}

const char *router_req_state_name(router_req_state s)
{
    switch (s) {
    case RQ_QUEUED: return "queued";
    case RQ_RESERVING: return "reserving";
    case RQ_PREFILLING: return "prefilling";
    case RQ_TRANSFERRING: return "transferring";
    case RQ_DECODING: return "decoding";
    case RQ_DONE: return "done";
    }
    return "?";
}

/* ---- deadlines ---- */

void router_req_enter(router_req *r, router_req_state state, const router_deadlines *d, double now)
{
    r->state = state;
    switch (state) {
    case RQ_QUEUED:
        /* The queue deadline counts from acceptance, also after a refused reservation. */
        r->dl_stage = r->t_accept + d->queue_s;
        r->dl_token = 0;
        break;
    case RQ_RESERVING:
        r->dl_stage = now + d->reserve_s;
        break;
    case RQ_PREFILLING:
        r->t_prefill_start = now;
        r->dl_stage = now + d->prefill_s;
        break;
    case RQ_TRANSFERRING:
        /* KV delivered and acknowledged: the decode worker's first token is next. */
        r->dl_stage = 0;
        r->dl_token = now + d->token_s;
        break;
    case RQ_DECODING:
        /* dl_stage stays armed while PrefillDone is still due; tokens re-arm dl_token. */
        if (r->p_done)
            r->dl_stage = 0;
        break;
    case RQ_DONE:
        r->dl_stage = r->dl_token = r->dl_total = 0;
        break;
    }
}

double router_req_next_deadline(const router_req *r)
{
    double best = 0;
    const double dls[3] = {r->dl_stage, r->dl_token, r->dl_total};
    for (int i = 0; i < 3; i++)
        if (dls[i] > 0 && (best == 0 || dls[i] < best))
            best = dls[i];
    return best;
}

int router_req_expired(const router_req *r, double now, const router_deadlines *d, char *msg, size_t cap)
{
    /* The earliest of the passed deadlines names the failure. */
    int which = -1;
    double when = 0;
    const double dls[3] = {r->dl_stage, r->dl_token, r->dl_total};
    for (int i = 0; i < 3; i++)
        if (dls[i] > 0 && now >= dls[i] && (which < 0 || dls[i] < when)) {
            which = i;
            when = dls[i];
        }
    if (which < 0)
        return 0;
    const char *dname = r->decode ? r->decode->id : "?";
    const char *pname = r->prefill ? r->prefill->id : "?";
    if (which == 2) {
        snprintf(msg, cap, "request deadline of %.0f ms exceeded in state %s", (r->dl_total - r->t_accept) * 1e3,
                 router_req_state_name(r->state));
        return KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED;
    }
    if (which == 1) {
        snprintf(msg, cap, "decode worker %s sent no token within %.0f ms", dname, d->token_s * 1e3);
        return KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED;
    }
    switch (r->state) {
    case RQ_QUEUED:
        snprintf(msg, cap, "no worker had capacity within the queue deadline of %.0f ms", d->queue_s * 1e3);
        return KVSERVE__ERROR_CODE__NO_CAPACITY;
    case RQ_RESERVING:
        snprintf(msg, cap, "decode worker %s did not answer the reservation within %.0f ms", dname,
                 d->reserve_s * 1e3);
        return KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED;
    default:
        snprintf(msg, cap, "prefill worker %s did not report PrefillDone within %.0f ms", pname, d->prefill_s * 1e3);
        return KVSERVE__ERROR_CODE__DEADLINE_EXCEEDED;
    }
}

/* ---- token reassembly ---- */

/* Delivers the part of [index, index + n) at or after next_index. */
static int deliver(router_req *r, uint32_t index, const int32_t *tokens, const kc_logprobs *lp, size_t n, int finish,
                   double decode_ms, router_deliver_fn fn, void *ctx)
{
    uint64_t end = (uint64_t)index + n;
    if (end < r->next_index)
        return 0; /* entirely old: a duplicate */
    size_t skip = r->next_index - index;
    size_t fresh = n - skip;
    r->next_index += (uint32_t)fresh;
    if (!fresh && finish == KVSERVE__FINISH_REASON__FINISH_NONE)
        return 0;
    return fn(ctx, r, fresh ? tokens + skip : NULL, fresh && lp ? lp + skip : NULL, fresh, finish, decode_ms);
}

int router_req_accept_tokens(router_req *r, uint32_t index, const int32_t *tokens, const kc_logprobs *lp, size_t n,
                             int finish, double decode_ms, router_deliver_fn fn, void *ctx)
{
    if (r->d_done)
        return 0;
    if (n > UINT32_MAX - index)
        n = UINT32_MAX - index;
    if (index > r->next_index) {
        if (r->n_pending >= ROUTER_MAX_PENDING_EVENTS)
            return KV_EFULL;
        if (r->n_pending == r->cap_pending) {
            size_t cap = r->cap_pending ? r->cap_pending * 2 : 4;
            router_tok_event *p = realloc(r->pending, cap * sizeof *p);
            if (!p)
                return KV_ENOMEM;
            r->pending = p;
            r->cap_pending = cap;
        }
        router_tok_event *e = &r->pending[r->n_pending];
        *e = (router_tok_event){.index = index, .n = n, .finish = finish, .decode_ms = decode_ms};
        if (n) {
            e->tokens = malloc(n * sizeof *tokens);
            if (!e->tokens)
                return KV_ENOMEM;
            memcpy(e->tokens, tokens, n * sizeof *tokens);
            if (lp && !(e->lp = malloc(n * sizeof *lp))) {
                free(e->tokens);
                return KV_ENOMEM;
            }
            if (lp)
                memcpy(e->lp, lp, n * sizeof *lp);
        }
        r->n_pending++;
        return 0;
    }
    int rc = deliver(r, index, tokens, lp, n, finish, decode_ms, fn, ctx);
    /* Drain buffered events that are now in order, lowest index first. */
    while (!rc && !r->d_done && r->n_pending) {
        size_t best = 0;
        for (size_t i = 1; i < r->n_pending; i++)
            if (r->pending[i].index < r->pending[best].index)
                best = i;
        if (r->pending[best].index > r->next_index)
            break;
        router_tok_event e = r->pending[best];
        r->pending[best] = r->pending[--r->n_pending];
        rc = deliver(r, e.index, e.tokens, e.lp, e.n, e.finish, e.decode_ms, fn, ctx);
        free(e.tokens);
        free(e.lp);
    }
    return rc;
}

/* ---- output ---- */

static int text_reserve(router_req *r, size_t extra)
{
    if (r->text_len + extra + 1 <= r->text_cap)
        return 0;
    size_t cap = r->text_cap ? r->text_cap : 256;
    while (cap < r->text_len + extra + 1)
        cap *= 2;
    char *p = realloc(r->out_text, cap);
    if (!p)
        return KV_ENOMEM;
    r->out_text = p;
    r->text_cap = cap;
    return 0;
}

static int remember_generated(router_req *r, const int32_t *tokens, size_t n)
{
    if (r->n_gen + n > r->cap_gen) {
        size_t cap = r->cap_gen ? r->cap_gen : 64;
        while (cap < r->n_gen + n)
            cap *= 2;
        int32_t *p = realloc(r->gen, cap * sizeof *p);
        if (!p)
            return KV_ENOMEM;
        r->gen = p;
        r->cap_gen = (uint32_t)cap;
    }
    if (n)
        memcpy(r->gen + r->n_gen, tokens, n * sizeof *tokens);
    r->n_gen += (uint32_t)n;
    return KV_OK;
}

int router_req_append_output(router_req *r, const int32_t *tokens, const kc_logprobs *lp, size_t n)
{
    if (remember_generated(r, tokens, n))
        return KV_ENOMEM;
    if (r->n_out + n > r->cap_out) {
        size_t cap = r->cap_out ? r->cap_out : 16;
        while (cap < r->n_out + n)
            cap *= 2;
        int32_t *p = realloc(r->out_tokens, cap * sizeof *p);
        if (!p)
            return KV_ENOMEM;
        r->out_tokens = p;
        if (r->logprobs) {
            kc_logprobs *q = realloc(r->out_lp, cap * sizeof *q);
            if (!q)
                return KV_ENOMEM;
            r->out_lp = q;
        }
        r->cap_out = cap;
    }
    if (n)
        memcpy(r->out_tokens + r->n_out, tokens, n * sizeof *tokens);
    if (n && r->logprobs && lp)
        memcpy(r->out_lp + r->n_out, lp, n * sizeof *lp);
    r->n_out += n;
    if (!r->have_detok)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= kv_tokenizer_n_ids(r->detok.tok))
            continue; /* no text for an id the tokenizer does not know */
        for (size_t room = 64;; room *= 2) {
            if (text_reserve(r, room))
                return KV_ENOMEM;
            int k = kv_detok_push(&r->detok, tokens[i], r->out_text + r->text_len, r->text_cap - r->text_len, NULL);
            if (k >= 0) {
                r->text_len += (size_t)k;
                break;
            }
            if (room > (1u << 20))
                break; /* cannot happen for a real token; give up on its text */
        }
    }
    return 0;
}

int router_req_flush_text(router_req *r)
{
    if (!r->have_detok)
        return 0;
    if (text_reserve(r, 16))
        return KV_ENOMEM;
    int k = kv_detok_flush(&r->detok, r->out_text + r->text_len, r->text_cap - r->text_len);
    if (k > 0)
        r->text_len += (size_t)k;
    return 0;
}

void router_req_output_sent(router_req *r)
{
    r->out_index += (uint32_t)r->n_out;
    r->n_out = 0;
    r->text_len = 0;
    if (r->out_text)
        r->out_text[0] = '\0';
}

void router_req_timings(const router_req *r, double now, Kvserve__Timings *t)
{
    kvserve__timings__init(t);
    t->queue_ms = ((r->t_prefill_start > 0 ? r->t_prefill_start : now) - r->t_accept) * 1e3;
    t->prefill_ms = r->prefill_ms;
    t->transfer_ms = r->transfer_ms;
    t->ttft_ms = r->t_first_token > 0 ? (r->t_first_token - r->t_accept) * 1e3 : 0;
    if (r->decode_ms > 0)
        t->decode_ms = r->decode_ms;
    else if (r->t_first_token > 0)
        t->decode_ms = ((r->t_d_done > 0 ? r->t_d_done : now) - r->t_first_token) * 1e3;
    t->total_ms = (now - r->t_accept) * 1e3;
    t->kv_bytes = r->kv_bytes;
    t->kv_transport = (char *)r->kv_transport;
    t->prompt_tokens = r->n_prompt_orig;
    t->generated_tokens = r->next_index;
    t->prefill_cached_tokens = r->prefill_cached_tokens;
    t->decode_cached_tokens = r->decode_cached_tokens;
    t->kv_bytes_saved = r->kv_bytes_saved;
    t->local_prefill = r->local_prefill;
}
