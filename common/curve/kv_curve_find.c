#include "kv_curve_find.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int kv_curve_run_dir(char *out, size_t cap, kv_err *err)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n = xdg && xdg[0] == '/' ? snprintf(out, cap, "%s/kvserve", xdg)
                                 : snprintf(out, cap, "/tmp/kvserve-%ld", (long)getuid());
    if (n < 0 || (size_t)n >= cap)
        return kv_err_set(err, KV_EINVAL, "run directory path too long");
    return KV_OK;
}

/* A directory of ours, 0700: made if absent, refused if someone else's or open to others. */
static int private_dir(const char *path, kv_err *err)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return kv_err_set(err, KV_EIO, "cannot create %s: %s", path, strerror(errno));
    struct stat sb;
    if (lstat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return kv_err_set(err, KV_EIO, "%s is not a directory", path);
    if (sb.st_uid != getuid())
        return kv_err_set(err, KV_EINVAL, "%s belongs to uid %ld, not to us", path, (long)sb.st_uid);
    if (sb.st_mode & 077)
        return kv_err_set(err, KV_EINVAL, "%s has mode %04o: it must be 0700", path, (unsigned)(sb.st_mode & 07777));
    return KV_OK;
}

int kv_curve_cluster_dir(const char *cluster, char *out, size_t cap, kv_err *err)
{
    char run[3072];
    int rc = kv_curve_run_dir(run, sizeof run, err);
    if (rc || (rc = private_dir(run, err)))
        return rc;
    if (!*cluster || strchr(cluster, '/') || cluster[0] == '.')
        return kv_err_set(err, KV_EINVAL, "cluster name '%s' is not a plain name", cluster);
    if (snprintf(out, cap, "%s/%s", run, cluster) >= (int)cap)
        return kv_err_set(err, KV_EINVAL, "cluster directory path too long");
    return private_dir(out, err);
}

/* localhost, 0.0.0.0, the wildcard and 127.0.0.1 name one local endpoint. */
static void canonical(const char *ep, char *out, size_t cap)
{
    static const char *local[] = {"tcp://localhost:", "tcp://0.0.0.0:", "tcp://*:"};
    for (size_t i = 0; i < sizeof local / sizeof *local; i++)
        if (!strncmp(ep, local[i], strlen(local[i]))) {
            snprintf(out, cap, "tcp://127.0.0.1:%s", ep + strlen(local[i]));
            return;
        }
    snprintf(out, cap, "%s", ep);
}

static int endpoint_matches(const char *dir, const char *want)
{
    char path[4096], buf[512];
    if (snprintf(path, sizeof path, "%s/endpoint", dir) >= (int)sizeof path)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    char have[512];
    canonical(buf, have, sizeof have);
    return !strcmp(have, want);
}

int kv_curve_client_key_path(const char *endpoint, char *out, size_t cap, kv_err *err)
{
    const char *env = getenv("KVSERVE_CLIENT_KEY");
    if (env && *env) {
        if (snprintf(out, cap, "%s", env) >= (int)cap)
            return kv_err_set(err, KV_EINVAL, "KVSERVE_CLIENT_KEY is too long");
        return KV_OK;
    }
    char run[3072], want[512];
    int rc = kv_curve_run_dir(run, sizeof run, err);
    if (rc)
        return rc;
    canonical(endpoint, want, sizeof want);
    struct stat sb;
    if (lstat(run, &sb) != 0 || !S_ISDIR(sb.st_mode) || sb.st_uid != getuid() || (sb.st_mode & 077))
        return kv_err_set(err, KV_ENOTFOUND, "no run directory %s", run);
    DIR *d = opendir(run);
    if (!d)
        return kv_err_set(err, KV_ENOTFOUND, "no run directory %s", run);
    rc = kv_err_set(err, KV_ENOTFOUND, "no cluster in %s serves %s", run, endpoint);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char dir[4096];
        if (snprintf(dir, sizeof dir, "%s/%s", run, de->d_name) >= (int)sizeof dir)
            continue;
        if (lstat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode) || sb.st_uid != getuid() || (sb.st_mode & 077))
            continue;
        if (endpoint_matches(dir, want) && snprintf(out, cap, "%s/client.key", dir) < (int)cap) {
            rc = KV_OK;
            break;
        }
    }
    closedir(d);
    return rc;
}

int kv_curve_client_key_load(const char *path, kv_curve_key *k, kv_err *err)
{
    int rc = kv_curve_key_load(path, k, err);
    if (rc || k->server[0])
        return rc;
    char dir[4096], pub[4096 + 16];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    snprintf(pub, sizeof pub, "%s/router.pub", slash ? dir : ".");
    if (kv_curve_pub_load(pub, k->server, err) != KV_OK)
        return kv_err_set(err, KV_EFORMAT, "%s has no server= line (the router's public key) and %s is unusable", path,
                          pub);
    return KV_OK;
}
