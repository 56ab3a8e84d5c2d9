/* CURVE key files, allowlists and client key discovery (common/curve): what a key file
 * must look like and whose mode is refused, what an allowlist accepts (comments, blank
 * lines, public= lines; a malformed line is an error naming it), and which client.key
 * a client finds for an endpoint ($KVSERVE_CLIENT_KEY first; a cluster directory open to
 * others is skipped). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv_curve.h"
#include "kv_curve_find.h"
#include "kv_test.h"

static char tmp[64];

static void write_text(const char *name, const char *text, mode_t mode)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", tmp, name);
    FILE *f = fopen(p, "w");
    CHECK(f != NULL);
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
    chmod(p, mode);
}

static void test_key_files(void)
{
    kv_curve_key k, back;
    kv_err err;
    CHECK_EQ_INT(kv_curve_key_new(&k, &err), KV_OK);
    CHECK(kv_curve_z85_valid(k.pub) && kv_curve_z85_valid(k.sec));
    CHECK_EQ_INT(kv_curve_key_save(tmp, "a", &k, &err), KV_OK);
    char p[256];
    snprintf(p, sizeof p, "%s/a.key", tmp);
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0600);
    CHECK_EQ_INT(kv_curve_key_load(p, &back, &err), KV_OK);
    CHECK(!strcmp(back.pub, k.pub) && !strcmp(back.sec, k.sec) && back.server[0] == '\0');
    CHECK_EQ_INT(kv_curve_key_save(tmp, "a", &k, &err), KV_EIO); /* never overwritten */
    CHECK_EQ_INT(kv_curve_key_save(tmp, "../x", &k, &err), KV_EINVAL);
    /* Open to the group or others: refused, naming the file and its mode. */
    const mode_t bad[] = {0640, 0604, 0660, 0644, 0700 | 0004};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        chmod(p, bad[i]);
        CHECK_EQ_INT(kv_curve_key_load(p, &back, &err), KV_EINVAL);
        char mode[16];
        snprintf(mode, sizeof mode, "mode %04o", (unsigned)bad[i]);
        CHECK_MSG(strstr(err.msg, mode) && strstr(err.msg, p), "error '%s' lacks '%s' or the path", err.msg, mode);
    }
    chmod(p, 0400);
    CHECK_EQ_INT(kv_curve_key_load(p, &back, &err), KV_OK);
    /* The public line must belong to the secret. */
    kv_curve_key other;
    kv_curve_key_new(&other, &err);
    char text[256];
    snprintf(text, sizeof text, "public=%s\nsecret=%s\n", other.pub, k.sec);
    write_text("mismatch.key", text, 0600);
    snprintf(p, sizeof p, "%s/mismatch.key", tmp);
    CHECK_EQ_INT(kv_curve_key_load(p, &back, &err), KV_EFORMAT);
    write_text("short.key", "public=abc\nsecret=def\n", 0600);
    snprintf(p, sizeof p, "%s/short.key", tmp);
    CHECK_EQ_INT(kv_curve_key_load(p, &back, &err), KV_EFORMAT);
    /* A .pub file, and a .key file's public line, both give the public key. */
    char pub[KV_CURVE_Z85];
    snprintf(p, sizeof p, "%s/a.pub", tmp);
    CHECK(kv_curve_pub_load(p, pub, &err) == KV_OK && !strcmp(pub, k.pub));
    snprintf(p, sizeof p, "%s/a.key", tmp);
    CHECK(kv_curve_pub_load(p, pub, &err) == KV_OK && !strcmp(pub, k.pub));
}

static void test_allowlists(void)
{
    kv_curve_key a, b;
    kv_err err;
    kv_curve_key_new(&a, &err);
    kv_curve_key_new(&b, &err);
    char text[512], p[256];
    snprintf(text, sizeof text, "# the workers\n%s\n\n  public=%s  \n%s\n", a.pub, b.pub, a.pub);
    write_text("allow.txt", text, 0644);
    snprintf(p, sizeof p, "%s/allow.txt", tmp);
    kv_curve_allow al;
    CHECK_EQ_INT(kv_curve_allow_load(p, &al, &err), KV_OK);
    CHECK_EQ_INT((int)al.n, 2); /* a duplicate counts once */
    CHECK(kv_curve_allow_has(&al, a.pub) && kv_curve_allow_has(&al, b.pub));
    CHECK(!kv_curve_allow_has(&al, a.sec));
    kv_curve_allow_free(&al);
    write_text("bad.txt", "# fine\nnot-a-key\n", 0644);
    snprintf(p, sizeof p, "%s/bad.txt", tmp);
    CHECK_EQ_INT(kv_curve_allow_load(p, &al, &err), KV_EFORMAT);
    CHECK_MSG(strstr(err.msg, "bad.txt:2"), "error '%s' does not name the line", err.msg);
    write_text("empty.txt", "# nothing\n", 0644);
    snprintf(p, sizeof p, "%s/empty.txt", tmp);
    CHECK_EQ_INT(kv_curve_allow_load(p, &al, &err), KV_EFORMAT);
    /* A directory: its *.pub files (a.pub from test_key_files; other files ignored). */
    CHECK_EQ_INT(kv_curve_allow_load(tmp, &al, &err), KV_OK);
    CHECK_EQ_INT((int)al.n, 1);
    kv_curve_allow_free(&al);
}

static void test_discovery(void)
{
    char run[256], dir[256], path[512], want[512];
    kv_err err;
    snprintf(run, sizeof run, "%s/run", tmp);
    mkdir(run, 0700);
    setenv("XDG_RUNTIME_DIR", run, 1);
    unsetenv("KVSERVE_CLIENT_KEY");
    CHECK_EQ_INT(kv_curve_client_key_path("tcp://127.0.0.1:7100", path, sizeof path, &err), KV_ENOTFOUND);
    CHECK_EQ_INT(kv_curve_cluster_dir("c1", dir, sizeof dir, &err), KV_OK);
    struct stat sb;
    CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0700);
    char ep[300];
    snprintf(ep, sizeof ep, "%s/endpoint", dir);
    FILE *f = fopen(ep, "w");
    CHECK(f != NULL);
    if (f) {
        fputs("tcp://127.0.0.1:7100\n", f);
        fclose(f);
    }
    snprintf(want, sizeof want, "%s/client.key", dir);
    CHECK(kv_curve_client_key_path("tcp://localhost:7100", path, sizeof path, &err) == KV_OK && !strcmp(path, want));
    CHECK_EQ_INT(kv_curve_client_key_path("tcp://127.0.0.1:7101", path, sizeof path, &err), KV_ENOTFOUND);
    setenv("KVSERVE_CLIENT_KEY", "/elsewhere/c.key", 1);
    CHECK(kv_curve_client_key_path("tcp://127.0.0.1:7100", path, sizeof path, &err) == KV_OK &&
          !strcmp(path, "/elsewhere/c.key"));
    unsetenv("KVSERVE_CLIENT_KEY");
    /* Open to others: not trusted, not used; and a cluster dir is never made that way. */
    chmod(dir, 0755);
    CHECK_EQ_INT(kv_curve_client_key_path("tcp://127.0.0.1:7100", path, sizeof path, &err), KV_ENOTFOUND);
    CHECK_EQ_INT(kv_curve_cluster_dir("c1", dir, sizeof dir, &err), KV_EINVAL);
    CHECK_EQ_INT(kv_curve_cluster_dir("../x", dir, sizeof dir, &err), KV_EINVAL);
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/kv-keys-test-XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_key_files();
    test_allowlists();
    test_discovery();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    return kv_test_result();
}
