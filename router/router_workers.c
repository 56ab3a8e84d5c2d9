#include "router_workers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_transport.h"

void router_workers_init(router_workers *w)
{
    memset(w, 0, sizeof *w);
    router_map_init(&w->by_route);
}

static void worker_free(router_worker *wk)
{
    if (!wk)
        return;
    free(wk->id);
    free(wk->kv_endpoint);
    free(wk->address);
    free(wk->device);
    free(wk->weights);
    free(wk->kv_transports);
    free(wk->refused);
    free(wk);
}

void router_workers_free(router_workers *w)
{
    for (size_t i = 0; i < w->n; i++)
        worker_free(w->list[i]);
    free(w->list);
    router_map_free(&w->by_route);
    memset(w, 0, sizeof *w);
}

router_worker *router_workers_find(const router_workers *w, const kv_wire_route *route)
{
    return router_map_get(&w->by_route, route->id, route->len);
}

const char *router_role_name(int role)
{
    switch (role) {
    case KVSERVE__WORKER_ROLE__ROLE_PREFILL: return "prefill";
    case KVSERVE__WORKER_ROLE__ROLE_DECODE: return "decode";
    default: return "unspecified";
    }
}

static int layout_equal(const router_layout *a, const Kvserve__KvLayout *b)
{
    return a->n_layers == b->n_layers && a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim &&
           a->block_size == b->block_size && !strcmp(a->dtype, b->dtype ? b->dtype : "") &&
           a->block_bytes == b->block_bytes;
}

int router_workers_check_register(const router_workers *w, const router_model_shape *model,
                                  const Kvserve__Register *reg, char *msg, size_t msg_cap)
{
    const Kvserve__KvLayout *l = reg->layout;
    if (!reg->worker_id || !reg->worker_id[0] || strlen(reg->worker_id) > 255) {
        snprintf(msg, msg_cap, "worker_id must be 1..255 bytes");
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    if (reg->role != KVSERVE__WORKER_ROLE__ROLE_PREFILL && reg->role != KVSERVE__WORKER_ROLE__ROLE_DECODE) {
        snprintf(msg, msg_cap, "role must be prefill or decode, got %d", (int)reg->role);
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    if (!reg->model_fingerprint || strcmp(reg->model_fingerprint, model->fingerprint)) {
        snprintf(msg, msg_cap, "model fingerprint %s (model '%s') differs from the router's %s",
                 reg->model_fingerprint && reg->model_fingerprint[0] ? reg->model_fingerprint : "(none)",
                 reg->model ? reg->model : "", model->fingerprint);
        return KVSERVE__ERROR_CODE__UNKNOWN_MODEL;
    }
    if (!l) {
        snprintf(msg, msg_cap, "Register without a KV layout");
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    if (l->n_layers != model->n_layers || l->n_kv_heads != model->n_kv_heads || l->head_dim != model->head_dim) {
        snprintf(msg, msg_cap,
                 "KV layout %u layers x %u kv heads x %u head dim does not match the model's %u x %u x %u",
                 l->n_layers, l->n_kv_heads, l->head_dim, model->n_layers, model->n_kv_heads, model->head_dim);
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    if (l->block_size == 0 || l->block_bytes == 0 || !l->dtype || !l->dtype[0] ||
        strlen(l->dtype) >= sizeof w->layout.dtype) {
        snprintf(msg, msg_cap, "KV layout needs block_size > 0, block_bytes > 0 and a dtype");
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    if (w->have_layout && !layout_equal(&w->layout, l)) {
        snprintf(msg, msg_cap,
                 "KV layout (block_size %u, dtype %s, block_bytes %llu) differs from the cluster's "
                 "(block_size %u, dtype %s, block_bytes %llu)",
                 l->block_size, l->dtype, (unsigned long long)l->block_bytes, w->layout.block_size, w->layout.dtype,
                 (unsigned long long)w->layout.block_bytes);
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    if (reg->role == KVSERVE__WORKER_ROLE__ROLE_DECODE && (!reg->kv_endpoint || !reg->kv_endpoint[0])) {
        snprintf(msg, msg_cap, "a decode worker must announce its KV endpoint");
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    if (reg->kv_blocks_total == 0) {
        snprintf(msg, msg_cap, "kv_blocks_total must be > 0");
        return KVSERVE__ERROR_CODE__INVALID_ARGUMENT;
    }
    msg[0] = '\0';
    return KVSERVE__ERROR_CODE__ERROR_NONE;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

router_worker *router_workers_add(router_workers *w, const kv_wire_route *route, const Kvserve__Register *reg,
                                  double now)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 8;
        router_worker **list = realloc(w->list, cap * sizeof *list);
        if (!list)
            return NULL;
        w->list = list;
        w->cap = cap;
    }
    router_worker *wk = calloc(1, sizeof *wk);
    if (!wk)
        return NULL;
    wk->route = *route;
    wk->id = dup_or_empty(reg->worker_id);
    wk->kv_endpoint = dup_or_empty(reg->kv_endpoint);
    wk->device = dup_or_empty(reg->device);
    wk->weights = dup_or_empty(reg->weights);
    kv_transport_list tl = {.n = 0};
    for (size_t i = 0; i < reg->n_kv_transports && tl.n < KV_TRANSPORT_COUNT; i++)
        if ((unsigned)reg->kv_transports[i] < KV_TRANSPORT_COUNT)
            tl.t[tl.n++] = (kv_transport)reg->kv_transports[i];
    char names[64] = "zmq"; /* a worker that names none predates the GPU transports */
    if (tl.n)
        kv_transport_list_format(&tl, names, sizeof names);
    wk->kv_transports = strdup(names);
    /* Decode workers are reached at their KV endpoint; a prefill worker only connects out,
     * so the address shown is where its control connection comes from. */
    char addr[160];
    if (reg->kv_endpoint && reg->kv_endpoint[0])
        snprintf(addr, sizeof addr, "%s", reg->kv_endpoint);
    else
        snprintf(addr, sizeof addr, "%s pid %u", route->peer[0] ? route->peer : "local", reg->pid);
    wk->address = strdup(addr);
    if (!wk->id || !wk->kv_endpoint || !wk->device || !wk->weights || !wk->kv_transports || !wk->address || router_map_put(&w->by_route, route->id, route->len, wk)) {
        worker_free(wk);
        return NULL;
    }
    wk->role = reg->role;
    wk->pid = reg->pid;
    wk->kv_blocks_total = reg->kv_blocks_total;
    wk->max_context = reg->max_context;
    wk->registered_at = now;
    wk->serial = ++w->next_serial;
    wk->prefix_slot = -1; /* the caller gives it one */
    wk->last_heartbeat = now;
    /* Until the first heartbeat: the whole pool is free. */
    wk->hb_total = reg->kv_blocks_total;
    wk->hb_free = reg->kv_blocks_total;
    wk->free_est = reg->kv_blocks_total;
    w->list[w->n++] = wk;
    if (!w->have_layout) {
        const Kvserve__KvLayout *l = reg->layout;
        w->have_layout = 1;
        w->layout = (router_layout){.n_layers = l->n_layers, .n_kv_heads = l->n_kv_heads, .head_dim = l->head_dim,
                                    .block_size = l->block_size, .block_bytes = l->block_bytes};
        snprintf(w->layout.dtype, sizeof w->layout.dtype, "%s", l->dtype);
    }
    return wk;
}

void router_workers_remove(router_workers *w, router_worker *wk)
{
    router_map_del(&w->by_route, wk->route.id, wk->route.len);
    for (size_t i = 0; i < w->n; i++)
        if (w->list[i] == wk) {
            memmove(&w->list[i], &w->list[i + 1], (w->n - i - 1) * sizeof *w->list);
            w->n--;
            break;
        }
    worker_free(wk);
    if (w->n == 0)
        w->have_layout = 0; /* an empty cluster takes the next worker's layout */
}

void router_workers_heartbeat(router_worker *wk, const Kvserve__Heartbeat *hb, double now)
{
    wk->last_heartbeat = now;
    wk->hb_running = hb->running;
    wk->hb_queued = hb->queued;
    wk->hb_free = hb->kv_blocks_free;
    if (hb->kv_blocks_total)
        wk->kv_blocks_total = hb->kv_blocks_total;
    wk->hb_total = wk->kv_blocks_total;
    wk->free_est = hb->kv_blocks_free;
    wk->hb_cached = hb->kv_blocks_cached;
    wk->hb_query_tokens = hb->prefix_query_tokens;
    wk->hb_hit_tokens = hb->prefix_hit_tokens;
}

int64_t router_worker_available(const router_worker *wk)
{
    return wk->free_est - (int64_t)wk->promised;
}

int router_pair_refused(const router_worker *p, const router_worker *d)
{
    for (size_t i = 0; i < p->n_refused; i++)
        if (p->refused[i] == d->serial)
            return 1;
    return 0;
}

int router_pair_refuse(router_worker *p, const router_worker *d)
{
    if (router_pair_refused(p, d))
        return KV_OK;
    uint64_t *r = realloc(p->refused, (p->n_refused + 1) * sizeof *r);
    if (!r)
        return KV_ENOMEM;
    p->refused = r;
    p->refused[p->n_refused++] = d->serial;
    return KV_OK;
}

size_t router_workers_expired(const router_workers *w, double now, double timeout_s, router_worker **out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < w->n && n < cap; i++)
        if (now - w->list[i]->last_heartbeat > timeout_s)
            out[n++] = w->list[i];
    return n;
}
