#include "kv_curve.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define KEY_FILE_MAX (64 << 10)  /* a key file is a few lines */
#define ALLOW_FILE_MAX (1 << 20)

int kv_curve_z85_valid(const char *s)
{
    uint8_t bin[32];
    return s && strlen(s) == 40 && zmq_z85_decode(bin, s) != NULL;
}

int kv_curve_key_new(kv_curve_key *k, kv_err *err)
{
    memset(k, 0, sizeof *k);
    if (zmq_curve_keypair(k->pub, k->sec) != 0)
        return kv_err_set(err, KV_EUNSUPPORTED, "zmq_curve_keypair: %s (is ZeroMQ built with CURVE?)",
                          zmq_strerror(zmq_errno()));
    return KV_OK;
}

/* Reads at most cap bytes of an open file into a NUL-terminated malloc'd buffer. */
static int read_fd(int fd, const char *path, size_t cap, char **out, kv_err *err)
{
    char *buf = malloc(cap + 1);
    if (!buf)
        return kv_err_set(err, KV_ENOMEM, "out of memory reading %s", path);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, cap + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            return kv_err_set(err, KV_EIO, "cannot read %s: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > cap) {
            free(buf);
            return kv_err_set(err, KV_EFORMAT, "%s: larger than %zu bytes", path, cap);
        }
    }
    buf[n] = '\0';
    *out = buf;
    return KV_OK;
}

static int read_file(const char *path, int secret, size_t cap, char **out, kv_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kv_err_set(err, errno == ENOENT ? KV_ENOTFOUND : KV_EIO, "cannot open key file %s: %s", path,
                          strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return kv_err_set(err, KV_EINVAL, "%s: not a regular file", path);
    }
    /* Checked on the open file, so a swap between check and read changes nothing. */
    if (secret && (sb.st_mode & 077)) {
        close(fd);
        return kv_err_set(err, KV_EINVAL,
                          "secret key file %s has mode %04o: it must not be accessible by group or others "
                          "(chmod 600 %s)",
                          path, (unsigned)(sb.st_mode & 07777), path);
    }
    int rc = read_fd(fd, path, cap, out, err);
    close(fd);
    return rc;
}

/* The value of "name=" on a line of text, into out (40 Z85 chars): 1 found, 0 absent, -1 bad. */
static int key_line(const char *text, const char *name, char out[KV_CURVE_Z85])
{
    size_t nl = strlen(name);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, name, nl) || p[nl] != '=')
            continue;
        const char *v = p + nl + 1;
        size_t len = strcspn(v, "\r\n");
        if (len != 40)
            return -1;
        memcpy(out, v, 40);
        out[40] = '\0';
        return kv_curve_z85_valid(out) ? 1 : -1;
    }
    return 0;
}

int kv_curve_key_load(const char *path, kv_curve_key *k, kv_err *err)
{
    memset(k, 0, sizeof *k);
    char *text;
    int rc = read_file(path, 1, KEY_FILE_MAX, &text, err);
    if (rc)
        return rc;
    int has_pub = key_line(text, "public", k->pub), has_sec = key_line(text, "secret", k->sec);
    int has_srv = key_line(text, "server", k->server);
    free(text);
    if (has_sec != 1 || has_pub != 1 || has_srv < 0) {
        memset(k, 0, sizeof *k);
        return kv_err_set(err, KV_EFORMAT, "%s: not a kvserve key file (public=, secret= lines of 40 Z85 chars)", path);
    }
    char derived[KV_CURVE_Z85];
    if (zmq_curve_public(derived, k->sec) != 0 || strcmp(derived, k->pub)) {
        memset(k, 0, sizeof *k);
        return kv_err_set(err, KV_EFORMAT, "%s: the public key does not belong to the secret key", path);
    }
    return KV_OK;
}

int kv_curve_pub_load(const char *path, char out[KV_CURVE_Z85], kv_err *err)
{
    char *text;
    int rc = read_file(path, 0, KEY_FILE_MAX, &text, err);
    if (rc)
        return rc;
    int found = key_line(text, "public", out);
    if (found == 0) {
        size_t len = strcspn(text, "\r\n");
        if (len == 40) {
            memcpy(out, text, 40);
            out[40] = '\0';
            found = kv_curve_z85_valid(out) ? 1 : -1;
        }
    }
    free(text);
    if (found != 1)
        return kv_err_set(err, KV_EFORMAT, "%s: no public key (a line of 40 Z85 characters)", path);
    return KV_OK;
}

static int write_file(const char *path, const char *text, mode_t mode, int excl, kv_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (excl ? O_EXCL : O_TRUNC), mode);
    if (fd < 0)
        return kv_err_set(err, KV_EIO, "cannot create %s: %s", path, strerror(errno));
    size_t len = strlen(text);
    /* The mode asked for, whatever the umask or an older file said. */
    int bad = fchmod(fd, mode) != 0 || write(fd, text, len) != (ssize_t)len;
    int e = errno;
    bad |= close(fd) != 0;
    if (bad) {
        unlink(path);
        return kv_err_set(err, KV_EIO, "cannot write %s: %s", path, strerror(e));
    }
    return KV_OK;
}

int kv_curve_key_save(const char *dir, const char *name, const kv_curve_key *k, kv_err *err)
{
    if (!*name || strchr(name, '/') || strlen(name) > 128 || name[0] == '.')
        return kv_err_set(err, KV_EINVAL, "key name '%s': 1..128 characters, no '/', not starting with '.'", name);
    char key_path[4096], pub_path[4096], text[256];
    if (snprintf(key_path, sizeof key_path, "%s/%s.key", dir, name) >= (int)sizeof key_path ||
        snprintf(pub_path, sizeof pub_path, "%s/%s.pub", dir, name) >= (int)sizeof pub_path)
        return kv_err_set(err, KV_EINVAL, "key directory path too long");
    snprintf(text, sizeof text, "# kvserve CURVE key pair: keep this file secret\npublic=%s\nsecret=%s\n", k->pub,
             k->sec);
    if (k->server[0])
        snprintf(text + strlen(text), sizeof text - strlen(text), "server=%s\n", k->server);
    int rc = write_file(key_path, text, 0600, 1, err);
    if (rc)
        return rc;
    snprintf(text, sizeof text, "%s\n", k->pub);
    return write_file(pub_path, text, 0644, 0, err);
}

static int allow_add(kv_curve_allow *a, const char *z85, const char *path, kv_err *err)
{
    if (kv_curve_allow_has(a, z85))
        return KV_OK;
    if (a->n >= KV_CURVE_ALLOW_MAX)
        return kv_err_set(err, KV_ERANGE, "%s: more than %d keys", path, KV_CURVE_ALLOW_MAX);
    if ((a->n & (a->n - 1)) == 0) { /* grows at powers of two */
        size_t cap = a->n ? a->n * 2 : 1;
        char(*k)[KV_CURVE_Z85] = realloc(a->keys, cap * sizeof *k);
        if (!k)
            return kv_err_set(err, KV_ENOMEM, "out of memory");
        a->keys = k;
    }
    memcpy(a->keys[a->n++], z85, KV_CURVE_Z85);
    return KV_OK;
}

/* A list file: one key per line, blank lines and '#' comments ignored. */
static int allow_file(kv_curve_allow *a, const char *path, kv_err *err)
{
    char *text;
    int rc = read_file(path, 0, ALLOW_FILE_MAX, &text, err);
    if (rc)
        return rc;
    int line = 0;
    for (char *p = text; *p && !rc;) {
        line++;
        size_t len = strcspn(p, "\n");
        char *next = p[len] ? p + len + 1 : p + len;
        p[len] = '\0';
        while (len && (p[len - 1] == '\r' || p[len - 1] == ' ' || p[len - 1] == '\t'))
            p[--len] = '\0';
        while (*p == ' ' || *p == '\t')
            p++;
        if (!strncmp(p, "public=", 7))
            p += 7;
        /* '#' is a Z85 digit (84), but never a key's first: 2^32 / 85^4 < 83. */
        if (*p && *p != '#') {
            if (!kv_curve_z85_valid(p))
                rc = kv_err_set(err, KV_EFORMAT, "%s:%d: not a public key (40 Z85 characters)", path, line);
            else
                rc = allow_add(a, p, path, err);
        }
        p = next;
    }
    free(text);
    return rc;
}

int kv_curve_allow_load(const char *path, kv_curve_allow *a, kv_err *err)
{
    memset(a, 0, sizeof *a);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return kv_err_set(err, KV_ENOTFOUND, "key allowlist %s: %s", path, strerror(errno));
    int rc = KV_OK;
    if (!S_ISDIR(sb.st_mode)) {
        rc = allow_file(a, path, err);
    } else {
        DIR *d = opendir(path);
        if (!d)
            return kv_err_set(err, KV_EIO, "key allowlist %s: %s", path, strerror(errno));
        struct dirent *de;
        while (!rc && (de = readdir(d))) {
            size_t len = strlen(de->d_name);
            if (len < 5 || strcmp(de->d_name + len - 4, ".pub") || de->d_name[0] == '.')
                continue;
            char p[4096], z85[KV_CURVE_Z85];
            if (snprintf(p, sizeof p, "%s/%s", path, de->d_name) >= (int)sizeof p)
                rc = kv_err_set(err, KV_EINVAL, "key allowlist path too long");
            else if (!(rc = kv_curve_pub_load(p, z85, err)))
                rc = allow_add(a, z85, path, err);
        }
        closedir(d);
    }
    if (!rc && a->n == 0)
        rc = kv_err_set(err, KV_EFORMAT, "key allowlist %s holds no public key", path);
    if (rc)
        kv_curve_allow_free(a);
    return rc;
}

int kv_curve_allow_has(const kv_curve_allow *a, const char *z85)
{
    for (size_t i = 0; a && i < a->n; i++)
        if (!strcmp(a->keys[i], z85))
            return 1;
    return 0;
}

void kv_curve_allow_free(kv_curve_allow *a)
{
    free(a->keys);
    memset(a, 0, sizeof *a);
}

int kv_curve_apply_server(void *sock, const kv_curve_key *k, const char *domain, kv_err *err)
{
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k->sec, 40) ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, domain, strlen(domain)))
        return kv_err_set(err, KV_EIO, "CURVE server options: %s", zmq_strerror(zmq_errno()));
    return KV_OK;
}

int kv_curve_apply_client(void *sock, const kv_curve_key *k, const char *server_pub, kv_err *err)
{
    if (!kv_curve_z85_valid(server_pub))
        return kv_err_set(err, KV_EINVAL, "no valid server public key for CURVE");
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_pub, 40) ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, k->pub, 40) ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, k->sec, 40))
        return kv_err_set(err, KV_EIO, "CURVE client options: %s", zmq_strerror(zmq_errno()));
    return KV_OK;
}
