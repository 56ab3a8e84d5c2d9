/* Which key a client connects with (kv_client_connect_key), and CURVE on its socket. */
#include <stdio.h>
#include <string.h>

#include "kv_client_internal.h"
#include "kv_curve_find.h"

int kvc_curve_apply(void *sock, const char *endpoint, const char *key_file, char *errbuf, size_t errcap)
{
    char path[4096];
    kv_err err;
    if (!key_file) {
        int rc = kv_curve_client_key_path(endpoint, path, sizeof path, &err);
        if (rc == KV_ENOTFOUND)
            return 0; /* nothing applies: plain TCP, for a router run with --insecure */
        if (rc)
            goto fail;
        key_file = path;
    }
    kv_curve_key k;
    int rc = kv_curve_client_key_load(key_file, &k, &err) || kv_curve_apply_client(sock, &k, k.server, &err);
    memset(&k, 0, sizeof k);
    if (!rc)
        return 0;
fail:
    if (errbuf && errcap)
        snprintf(errbuf, errcap, "client key: %s", err.msg);
    return -1;
}
