#include "up_keys.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv_curve.h"
#include "kv_curve_find.h"

/* Removes the files of dir (one level: workers/ is emptied first), then dir. */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char p[PATH_MAX];
            if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p)
                continue;
            struct stat sb;
            if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode) && !strcmp(de->d_name, "workers"))
                remove_tree(p);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* up-<pid> directories whose kvctl is gone: their endpoint could name another cluster next. */
static void remove_stale(void)
{
    char run[PATH_MAX / 2];
    kv_err err;
    if (kv_curve_run_dir(run, sizeof run, &err))
        return;
    DIR *d = opendir(run);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        if (strncmp(de->d_name, "up-", 3))
            continue;
        long pid = strtol(de->d_name + 3, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", run, de->d_name) < (int)sizeof p)
            remove_tree(p);
    }
    closedir(d);
}

static int worker_key(up_keys *k, const char *id, kv_err *err)
{
    char workers[PATH_MAX];
    snprintf(workers, sizeof workers, "%s/workers", k->dir);
    kv_curve_key w;
    int rc = kv_curve_key_new(&w, err);
    if (!rc)
        rc = kv_curve_key_save(workers, id, &w, err);
    memset(&w, 0, sizeof w);
    return rc;
}

int up_keys_make(up_keys *k, int n_prefill, int n_decode, kv_err *err)
{
    memset(k, 0, sizeof *k);
    remove_stale();
    char name[32];
    snprintf(name, sizeof name, "up-%ld", (long)getpid());
    int rc = kv_curve_cluster_dir(name, k->dir, sizeof k->dir, err);
    if (rc)
        return rc;
    k->on = 1;
    char workers[PATH_MAX];
    snprintf(workers, sizeof workers, "%s/workers", k->dir);
    if (mkdir(workers, 0700) != 0 && errno != EEXIST)
        return kv_err_set(err, KV_EIO, "cannot create %s: %s", workers, strerror(errno));
    kv_curve_key router, client;
    if ((rc = kv_curve_key_new(&router, err)) || (rc = kv_curve_key_save(k->dir, "router", &router, err)) ||
        (rc = kv_curve_key_new(&client, err)))
        return rc;
    memcpy(client.server, router.pub, sizeof client.server);
    rc = kv_curve_key_save(k->dir, "client", &client, err);
    memset(&router, 0, sizeof router);
    memset(&client, 0, sizeof client);
    for (int i = 0; !rc && i < n_prefill + n_decode; i++) {
        char id[32];
        snprintf(id, sizeof id, "%s-%d", i < n_prefill ? "prefill" : "decode", i < n_prefill ? i : i - n_prefill);
        rc = worker_key(k, id, err);
    }
    return rc;
}

int up_keys_args(const up_keys *k, int router, const char *id, char (*args)[PATH_MAX + 32])
{
    if (!k->on)
        return 0;
    const size_t cap = PATH_MAX + 32;
    if (router) {
        snprintf(args[0], cap, "--key=%s/router.key", k->dir);
        snprintf(args[1], cap, "--worker-keys=%s/workers", k->dir);
        snprintf(args[2], cap, "--client-keys=%s/client.pub", k->dir);
    } else {
        snprintf(args[0], cap, "--key=%s/workers/%s.key", k->dir, id);
        snprintf(args[1], cap, "--router-key=%s/router.pub", k->dir);
        snprintf(args[2], cap, "--worker-keys=%s/workers", k->dir);
    }
    return 3;
}

int up_keys_endpoint(const up_keys *k, const char *endpoint, kv_err *err)
{
    if (!k->on)
        return KV_OK;
    char p[PATH_MAX], line[300];
    snprintf(p, sizeof p, "%s/endpoint", k->dir);
    snprintf(line, sizeof line, "%s\n", endpoint);
    FILE *f = fopen(p, "w");
    if (!f || fputs(line, f) < 0 || fclose(f) != 0)
        return kv_err_set(err, KV_EIO, "cannot write %s: %s", p, strerror(errno));
    return KV_OK;
}

void up_keys_remove(up_keys *k)
{
    if (k->on)
        remove_tree(k->dir);
    k->on = 0;
}
