/* Library-internal glue between kv_client.c and kv_client_status.c (not installed). */
#ifndef KV_CLIENT_INTERNAL_H
#define KV_CLIENT_INTERNAL_H

#include "kv_client.h"
#include "kv_err.h"
#include "kvserve.pb-c.h"

/* Deep-copies a StatusReply into a malloc'd kv_status: KVC_OK or KVC_ENOMEM. */
/* CURVE client options on sock for endpoint (kv_client_connect_key's key_file rules):
 * 0, or -1 with the reason in errbuf. kv_client_curve.c */
int kvc_curve_apply(void *sock, const char *endpoint, const char *key_file, char *errbuf, size_t errcap);
int kvc_status_from_proto(const Kvserve__StatusReply *p, kv_status **out);

/* kv_client_resume.c: the streams kv_client_set_resume can resume. Per request in flight, its
 * GenerateRequest as first sent (packed) and the generated tokens received, index 0 on. */
typedef struct kvc_resume_entry {
    char id[KV_CLIENT_ID_MAX + 1];
    uint8_t *req;
    size_t req_len;
    int32_t *got;
    uint32_t n_got, cap_got;
} kvc_resume_entry;

typedef struct kvc_resume {
    kvc_resume_entry *e;
    size_t n, cap;
} kvc_resume;

/* Remembers request id as sent: KVC_OK, KVC_ENOMEM, KVC_EINVAL (id already there). */
int kvc_resume_add(kvc_resume *t, const char *id, const Kvserve__GenerateRequest *g);
int kvc_resume_has(const kvc_resume *t, const char *id);
void kvc_resume_forget(kvc_resume *t, const char *id);
/* A reply as received: records its tokens that extend the held run. Returns 1 when it only
 * repeats tokens already held (a streamed chunk a resumed router sent again: drop it). */
int kvc_resume_note(kvc_resume *t, const Kvserve__GenerateReply *r);
/* Sends the request again with resume_tokens = the tokens held (kv_wire_send's codes). */
int kvc_resume_send(const kvc_resume_entry *e, void *sock, int timeout_ms, kv_err *err);
void kvc_resume_free(kvc_resume *t);

#endif
