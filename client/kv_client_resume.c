/* libkvclient's resume table (kv_client_set_resume): per request in flight, its
 * GenerateRequest as first sent and the generated tokens received so far, so that a stream
 * whose router went away can be asked again, from where it stopped, of the router that
 * comes back (GenerateRequest.resume_tokens). */
#include <stdlib.h>
#include <string.h>

#include "kv_client_internal.h"
#include "kv_wire.h"

static kvc_resume_entry *find(const kvc_resume *t, const char *id)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->e[i].id, id))
            return &t->e[i];
    return NULL;
}

int kvc_resume_add(kvc_resume *t, const char *id, const Kvserve__GenerateRequest *g)
{
    if (strlen(id) > KV_CLIENT_ID_MAX || find(t, id))
        return KVC_EINVAL;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        kvc_resume_entry *e = realloc(t->e, cap * sizeof *e);
        if (!e)
            return KVC_ENOMEM;
        t->e = e;
        t->cap = cap;
    }
    kvc_resume_entry *e = &t->e[t->n];
    memset(e, 0, sizeof *e);
    e->req_len = kvserve__generate_request__get_packed_size(g);
    e->req = malloc(e->req_len ? e->req_len : 1);
    if (!e->req)
        return KVC_ENOMEM;
    kvserve__generate_request__pack(g, e->req);
    memcpy(e->id, id, strlen(id) + 1);
    t->n++;
    return KVC_OK;
}

int kvc_resume_has(const kvc_resume *t, const char *id) { return find(t, id) != NULL; }

void kvc_resume_forget(kvc_resume *t, const char *id)
{
    kvc_resume_entry *e = find(t, id);
    if (!e)
        return;
    free(e->req);
    free(e->got);
    *e = t->e[--t->n];
}

int kvc_resume_note(kvc_resume *t, const Kvserve__GenerateReply *r)
{
    kvc_resume_entry *e = r->request_id ? find(t, r->request_id) : NULL;
    if (!e || r->index > e->n_got)
        return 0; /* not resumable, or a gap (never sent so): nothing safe to record */
    size_t skip = e->n_got - r->index;
    if (skip >= r->n_tokens)
        return skip > 0 && r->n_tokens > 0 && r->finish_reason == KVSERVE__FINISH_REASON__FINISH_NONE;
    size_t add = r->n_tokens - skip;
    if (add > UINT32_MAX - e->n_got)
        return 0;
    if (e->n_got + add > e->cap_got) {
        size_t cap = e->cap_got ? e->cap_got : 64;
        while (cap < e->n_got + add)
            cap *= 2;
        int32_t *g = realloc(e->got, cap * sizeof *g);
        if (!g)
            return 0; /* a resume then asks from the last index recorded: repeats get dropped */
        e->got = g;
        e->cap_got = (uint32_t)cap;
    }
    memcpy(e->got + e->n_got, r->tokens + skip, add * sizeof *e->got);
    e->n_got += (uint32_t)add;
    return 0;
}

int kvc_resume_send(const kvc_resume_entry *e, void *sock, int timeout_ms, kv_err *err)
{
    Kvserve__GenerateRequest *g = kvserve__generate_request__unpack(NULL, e->req_len, e->req);
    if (!g)
        return kv_err_set(err, KV_ENOMEM, "cannot unpack the saved request");
    g->resume = 1;
    g->n_resume_tokens = e->n_got;
    g->resume_tokens = e->got;
    Kvserve__Envelope env;
    kv_wire_envelope_init(&env);
    env.body_case = KVSERVE__ENVELOPE__BODY_GENERATE;
    env.generate = g;
    int rc = kv_wire_send(sock, NULL, &env, NULL, 0, timeout_ms, err);
    g->n_resume_tokens = 0; /* ours, not the unpacker's */
    g->resume_tokens = NULL;
    kvserve__generate_request__free_unpacked(g, NULL);
    return rc;
}

void kvc_resume_free(kvc_resume *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->e[i].req);
        free(t->e[i].got);
    }
    free(t->e);
    memset(t, 0, sizeof *t);
}
