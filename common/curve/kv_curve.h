/* CURVE keys for every ZeroMQ socket (DESIGN.md "Security").
 *
 * Files (written by `kvctl keys gen`):
 *   NAME.key  secret, mode 0600:  "public=<Z85>\nsecret=<Z85>\n" and, for a client,
 *             optionally "server=<Z85>\n" (the router's public key, so one file is enough)
 *   NAME.pub  the public key alone: one line of 40 Z85 characters
 * A secret key file readable or writable by group or others is refused (the error names
 * the file and its mode), as ssh refuses such a private key.
 * An allowlist is a file of public keys (one per line, '#' comments) or a directory whose
 * *.pub files are each one key. Everything read is validated: 40 Z85 characters per key,
 * at most KV_CURVE_ALLOW_MAX keys, files at most 1 MiB. */
#ifndef KV_CURVE_H
#define KV_CURVE_H

#include <stddef.h>

#include "kv_err.h"

#define KV_CURVE_Z85 41          /* 40 Z85 characters + NUL */
#define KV_CURVE_ALLOW_MAX 4096

typedef struct kv_curve_key {
    char pub[KV_CURVE_Z85];
    char sec[KV_CURVE_Z85];
    char server[KV_CURVE_Z85]; /* "" unless the file names the router's key */
} kv_curve_key;

typedef struct kv_curve_allow {
    char (*keys)[KV_CURVE_Z85];
    size_t n;
} kv_curve_allow;

/* 1 when s is exactly 40 Z85 characters that decode to a 32-byte key. */
int kv_curve_z85_valid(const char *s);

/* A fresh key pair (zmq_curve_keypair). */
int kv_curve_key_new(kv_curve_key *k, kv_err *err);
/* Writes dir/name.key (0600, never through a symlink) and dir/name.pub (0644); an existing
 * name.key is refused, not overwritten. k->server is written when set. */
int kv_curve_key_save(const char *dir, const char *name, const kv_curve_key *k, kv_err *err);
/* Loads a secret key file (mode checked first); the public line must match the secret. */
int kv_curve_key_load(const char *path, kv_curve_key *k, kv_err *err);
/* A public key from a .pub file, or the public line of a .key file. */
int kv_curve_pub_load(const char *path, char out[KV_CURVE_Z85], kv_err *err);

int kv_curve_allow_load(const char *path, kv_curve_allow *a, kv_err *err);
int kv_curve_allow_has(const kv_curve_allow *a, const char *z85);
void kv_curve_allow_free(kv_curve_allow *a);

/* Makes sock (before bind) a CURVE server with k's secret; ZAP requests for it carry domain. */
int kv_curve_apply_server(void *sock, const kv_curve_key *k, const char *domain, kv_err *err);
/* Makes sock (before connect) a CURVE client of the server with public key server_pub. */
int kv_curve_apply_client(void *sock, const kv_curve_key *k, const char *server_pub, kv_err *err);

#endif
