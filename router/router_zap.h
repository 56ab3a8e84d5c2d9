/* The router's side of DESIGN.md "Security": its CURVE key, the allowlists of worker and
 * client public keys (checked by a ZAP handler polled in the router's loop), and the
 * binding of each worker id to the key that first registered it. A bound id is never
 * handed over: the control socket has no ZMQ_ROUTER_HANDOVER (a second connection under an
 * id in use is dropped by ZeroMQ), and a Register of a bound id from another key is
 * refused. Bindings last as long as the router.
 * Off (no --key): every socket is plain TCP, and the router says so loudly. */
#ifndef ROUTER_ZAP_H
#define ROUTER_ZAP_H

#include <stddef.h>

#include "kv_curve.h"
#include "kv_err.h"
#include "kv_zap.h"

typedef struct router_binding {
    char *id;               /* worker id */
    char key[KV_CURVE_Z85]; /* its key */
} router_binding;

typedef struct router_security {
    int on;
    kv_curve_key key;
    kv_curve_allow workers, clients;
    kv_zap zap;
    router_binding *bind;
    size_t n_bind, cap_bind;
} router_security;

#define ROUTER_ZAP_DOMAIN_CLIENT "kvserve-client"
#define ROUTER_ZAP_DOMAIN_CONTROL "kvserve-control"

/* key_file NULL: security off. Otherwise both allowlists are required. Starts the ZAP
 * handler in zctx (before any socket binds). */
int router_security_open(router_security *s, void *zctx, const char *key_file, const char *worker_keys,
                         const char *client_keys, kv_err *err);
void router_security_close(router_security *s);
/* CURVE server options on a socket about to bind (nothing when off). */
int router_security_apply(router_security *s, void *sock, const char *domain, kv_err *err);
/* Register of worker id from a connection whose CURVE key is key (User-Id): 1 admitted
 * (binding the id on first use), 0 refused (msg says why). Always 1 when off. */
int router_security_register_ok(router_security *s, const char *id, const char *key, char *msg, size_t cap);

#endif
