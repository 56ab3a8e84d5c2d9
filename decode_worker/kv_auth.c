#include "kv_auth.h"

#include <stdio.h>
#include <string.h>

#define KV_ZAP_DOMAIN "kvserve-kv"

static int decide(void *ctx, const kv_zap_peer *p, char *why, size_t cap)
{
    const decode_kv_auth *a = ctx;
    if (strcmp(p->domain, KV_ZAP_DOMAIN)) {
        snprintf(why, cap, "unknown ZAP domain");
        return 0;
    }
    if (kv_curve_allow_has(&a->allow, p->key))
        return 1;
    snprintf(why, cap, "KV peer key not in --worker-keys");
    return 0;
}

int decode_kv_auth_open(decode_kv_auth *a, void *zctx, void *kv_sock, const worker_flags *f, kv_err *err)
{
    memset(a, 0, sizeof *a);
    if (!f->key_file)
        return KV_OK;
    kv_curve_key key;
    int rc;
    if ((rc = kv_curve_key_load(f->key_file, &key, err)) || (rc = kv_curve_allow_load(f->worker_keys, &a->allow, err)))
        goto out;
    if ((rc = kv_zap_open(&a->zap, zctx, decide, a, f->prog, err)))
        goto out;
    if ((rc = kv_zap_thread_start(&a->zap, err))) {
        kv_zap_close(&a->zap);
        goto out;
    }
    a->on = 1;
    rc = kv_curve_apply_server(kv_sock, &key, KV_ZAP_DOMAIN, err);
out:
    memset(&key, 0, sizeof key);
    if (rc && !a->on)
        kv_curve_allow_free(&a->allow);
    return rc;
}

void decode_kv_auth_close(decode_kv_auth *a)
{
    if (a->on)
        kv_zap_close(&a->zap);
    kv_curve_allow_free(&a->allow);
    a->on = 0;
}
