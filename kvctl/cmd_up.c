/* kvctl up: a local cluster in the foreground — kv-router plus N prefill and M decode
 * workers (and, with --http, a kv-frontend serving the OpenAI API), all found next to
 * this kvctl binary. Waits until every worker is registered
 * and healthy, prints one line with the client endpoint, restarts children that die (at
 * most 5 restarts per child per minute, else the cluster is stopped), and on
 * SIGINT/SIGTERM stops everything (SIGTERM, up to 5 s, then SIGKILL) and exits 0.
 *
 * Children run in their own process group (a terminal's Ctrl-C reaches only kvctl, which
 * stops them in order) and get SIGTERM if kvctl itself dies (PR_SET_PDEATHSIG). */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "engine_kv_flags.h"
#include "kv_client.h"
#include "kv_time.h"
#include "kv_transport.h"
#include "kvctl_args.h"
#include "kvctl_cmds.h"
#include "up_keys.h"

#define MAX_CHILDREN 130
#define MAX_ARGS 24
#define RESTARTS_PER_MINUTE 5
#define READY_TIMEOUT_S 30.0
#define STOP_GRACE_S 5.0

typedef struct up_cfg {
    const char *model;
    long n_prefill, n_decode, port, threads, kv_blocks;
    const char *bind;
    const char *devices;      /* --devices: comma-separated, dealt to the workers in turn */
    const char *kv_transport; /* --kv-transport, given to every worker */
    const char *prefix_cache; /* --prefix-cache on|off (NULL = the processes' default, on) */
    const char *kv_flags[4];  /* --kv-dtype, --kv-residual, --kv-group, --kv-keys: given to every worker */
    long http_port;           /* --http: a kv-frontend on this port (0 = any free one)... */
    int http;                 /* ...when set */
    int insecure;             /* --insecure: no CURVE keys (up_keys.h) */
} up_cfg;

typedef struct child {
    char name[64];      /* "router", "prefill-0", ... */
    char exe[PATH_MAX];
    char args[MAX_ARGS][PATH_MAX + 32];
    int n_args;
    pid_t pid;          /* 0 = not running */
    double restarts[RESTARTS_PER_MINUTE]; /* ring of the last restart times */
    int n_restarts;
} child;

typedef struct cluster {
    child *ch; /* ch[0] = router */
    int n;
    char tmpdir[64];
    char ready_file[128];
    char client_ep[256], control_ep[256];
    int has_frontend;         /* the last child is a kv-frontend (--http) */
    char frontend_ready_file[128];
    char http_url[320];
} cluster;

static volatile sig_atomic_t up_stop;

static void on_stop(int sig)
{
    (void)sig;
    up_stop = 1;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: kvctl up --model DIR [--prefill N] [--decode M] [--port P] [--threads T] [--kv-blocks B]\n"
            "Runs a local cluster in the foreground until SIGINT/SIGTERM: kv-router on port P (client)\n"
            "and P+1 (control), N kv-prefill and M kv-decode workers (binaries next to kvctl).\n"
            "  --model DIR      HuggingFace Llama directory, or a llama GGUF file, served by every process\n"
            "  --prefill N      prefill workers (default 1)\n"
            "  --decode M       decode workers (default 1)\n"
            "  --port P         router client port (default 7100; 0 = any free ports)\n"
            "  --bind ADDR      address the router binds (default 127.0.0.1)\n"
            "  --threads T      CPU threads per worker (default: cores / workers)\n"
            "  --kv-blocks B    KV pool blocks per worker (default: the workers' own)\n"
            "  --devices LIST   devices dealt to the workers in turn, prefill workers first\n"
            "                   (e.g. cuda:0,cuda:1; default cpu)\n"
            "  --kv-transport T auto | zmq | cuda-ipc | nccl for every worker (default auto)\n"
            "  --prefix-cache on|off  the workers' prefix caches and the router's cache-aware\n"
            "                   routing and local prefill (default on)\n"
            "  --kv-dtype T, --kv-residual N, --kv-group G, --kv-keys channel|token: every worker's KV cache\n"
            "  --http PORT      also run kv-frontend, the OpenAI-compatible HTTP API, on PORT\n"
            "                   (0 = any free port; its URL is printed on a second line)\n"
            "  --insecure       no CURVE: every socket unauthenticated (debugging only). By default\n"
            "                   each process gets an ephemeral key pair in a per-user run directory\n"
            "                   ($XDG_RUNTIME_DIR/kvserve/up-PID or /tmp/kvserve-UID/up-PID), where\n"
            "                   kvctl, kv-frontend and libkvclient find the client key by themselves\n");
}

/* Device names, comma-separated (the workers check that the devices exist). */
static int device_list_ok(const char *s)
{
    while (*s) {
        char name[16];
        size_t n = strcspn(s, ",");
        if (n >= sizeof name)
            return 0;
        memcpy(name, s, n);
        name[n] = '\0';
        if (!kv_engine_device_name_valid(name))
            return 0;
        s += n;
        if (*s == ',' && !*++s)
            return 0;
    }
    return 1;
}

/* The n-th entry (cycling) of a --devices list into out. */
static void device_of(const char *list, int n, char *out, size_t cap)
{
    int count = 1;
    for (const char *p = list; *p; p++)
        count += *p == ',';
    const char *s = list;
    for (int k = n % count; k > 0; k--)
        s = strchr(s, ',') + 1;
    snprintf(out, cap, "%.*s", (int)strcspn(s, ","), s);
}

static int parse(int argc, char **argv, up_cfg *u)
{
    enum { O_MODEL = 256, O_PREFILL, O_DECODE, O_PORT, O_THREADS, O_BLOCKS, O_BIND, O_DEVICES, O_TRANSPORT, O_HTTP,
           O_HELP, O_KV, O_INSECURE, O_PREFIX };
    static const struct option opts[] = {
        {"kv-dtype", required_argument, 0, O_KV}, {"kv-residual", required_argument, 0, O_KV},
        {"kv-group", required_argument, 0, O_KV}, {"kv-keys", required_argument, 0, O_KV},
        {"model", required_argument, 0, O_MODEL}, {"prefill", required_argument, 0, O_PREFILL},
        {"decode", required_argument, 0, O_DECODE}, {"port", required_argument, 0, O_PORT},
        {"threads", required_argument, 0, O_THREADS}, {"kv-blocks", required_argument, 0, O_BLOCKS},
        {"bind", required_argument, 0, O_BIND}, {"devices", required_argument, 0, O_DEVICES},
        {"kv-transport", required_argument, 0, O_TRANSPORT}, {"http", required_argument, 0, O_HTTP},
        {"insecure", no_argument, 0, O_INSECURE},
        {"prefix-cache", required_argument, 0, O_PREFIX},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0},
    };
    memset(u, 0, sizeof *u);
    u->n_prefill = u->n_decode = 1;
    u->port = 7100;
    u->bind = "127.0.0.1";
    optind = 1;
    opterr = 0;
    int c, which = 0;
    while ((c = getopt_long(argc, argv, "+h", opts, &which)) != -1) {
        int bad = 0;
        switch (c) {
        case O_KV: { /* checked here, so a typo stops kvctl up rather than every worker */
            kv_engine_options o;
            kv_engine_options_default(&o);
            kv_err err;
            if ((bad = kv_engine_kv_flag(&o, opts[which].name, optarg, &err) != 0))
                fprintf(stderr, "kvctl up: %s\n", err.msg);
            u->kv_flags[which] = optarg; /* the first four options are the --kv-* flags, in order */
            break;
        }
        case O_MODEL: u->model = optarg; break;
        case O_PREFILL: bad = kvctl_parse_int("--prefill", optarg, 1, 64, &u->n_prefill); break;
        case O_DECODE: bad = kvctl_parse_int("--decode", optarg, 1, 64, &u->n_decode); break;
        case O_PORT: bad = kvctl_parse_int("--port", optarg, 0, 65534, &u->port); break;
        case O_THREADS: bad = kvctl_parse_int("--threads", optarg, 1, 1024, &u->threads); break;
        case O_BLOCKS: bad = kvctl_parse_int("--kv-blocks", optarg, 1, 1L << 30, &u->kv_blocks); break;
        case O_HTTP:
            u->http = 1;
            bad = kvctl_parse_int("--http", optarg, 0, 65535, &u->http_port);
            break;
        case O_BIND:
            u->bind = optarg;
            if (!*optarg || strlen(optarg) > 200) {
                fprintf(stderr, "kvctl: --bind expects an address, got '%s'\n", optarg);
                bad = 1;
            }
            break;
        case O_DEVICES:
            u->devices = optarg;
            if (!device_list_ok(optarg)) {
                fprintf(stderr, "kvctl up: --devices expects cpu, auto or cuda:N, comma-separated, got '%s'\n", optarg);
                bad = 1;
            }
            break;
        case O_TRANSPORT: {
            int t;
            kv_err err;
            u->kv_transport = optarg;
            if (kv_transport_parse(optarg, &t, &err)) {
                fprintf(stderr, "kvctl up: %s\n", err.msg);
                bad = 1;
            }
            break;
        }
        case O_INSECURE: u->insecure = 1; break;
        case O_PREFIX:
            u->prefix_cache = optarg;
            if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
                fprintf(stderr, "kvctl up: --prefix-cache expects on or off, got '%s'\n", optarg);
                bad = 1;
            }
            break;
        case O_HELP: case 'h': usage(stdout); return -1;
        default:
            fprintf(stderr, "kvctl up: unknown or incomplete option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (bad)
            return 2;
    }
    if (optind != argc) {
        fprintf(stderr, "kvctl up: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!u->model) {
        fprintf(stderr, "kvctl up: --model DIR is required\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

static void child_arg(child *c, const char *fmt, const char *val)
{
    char tmp[sizeof c->args[0]];
    if (c->n_args < MAX_ARGS - 1) {
        snprintf(tmp, sizeof tmp, fmt, val);
        memcpy(c->args[c->n_args++], tmp, sizeof tmp);
    }
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL); /* a signal cuts it short: fine */
}

static int child_start(child *c)
{
    char *argv[MAX_ARGS + 1];
    argv[0] = c->exe;
    for (int i = 0; i < c->n_args; i++)
        argv[i + 1] = c->args[i];
    argv[c->n_args + 1] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "kvctl up: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        execv(c->exe, argv);
        fprintf(stderr, "kvctl up: cannot run %s: %s\n", c->exe, strerror(errno));
        _exit(127);
    }
    c->pid = pid;
    return 0;
}

static void describe_exit(int wstatus, char *buf, size_t cap)
{
    if (WIFEXITED(wstatus))
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(wstatus));
    else if (WIFSIGNALED(wstatus))
        snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(wstatus), strsignal(WTERMSIG(wstatus)));
    else
        snprintf(buf, cap, "stopped (status 0x%x)", wstatus);
}

/* Reaps exited children: returns the index of one that exited (its pid cleared, its
 * status in *wstatus), or -1 when none did. */
static int reap_one(cluster *cl, int *wstatus)
{
    for (;;) {
        pid_t pid = waitpid(-1, wstatus, WNOHANG);
        if (pid <= 0)
            return -1;
        for (int i = 0; i < cl->n; i++)
            if (cl->ch[i].pid == pid) {
                cl->ch[i].pid = 0;
                return i;
            }
    }
}

static void stop_all(cluster *cl)
{
    /* Workers first (they then see no router to reconnect to), then the router. */
    for (int i = cl->n - 1; i >= 0; i--)
        if (cl->ch[i].pid > 0)
            kill(cl->ch[i].pid, SIGTERM);
    double deadline = kv_now_s() + STOP_GRACE_S;
    for (;;) {
        int alive = 0, ws;
        while (reap_one(cl, &ws) >= 0) {
        }
        for (int i = 0; i < cl->n; i++)
            alive += cl->ch[i].pid > 0;
        if (!alive)
            break;
        if (kv_now_s() > deadline) {
            for (int i = 0; i < cl->n; i++)
                if (cl->ch[i].pid > 0) {
                    fprintf(stderr, "kvctl up: %s (pid %d) did not stop within %.0f s; killing it\n",
                            cl->ch[i].name, (int)cl->ch[i].pid, STOP_GRACE_S);
                    kill(cl->ch[i].pid, SIGKILL);
                    waitpid(cl->ch[i].pid, NULL, 0);
                    cl->ch[i].pid = 0;
                }
            break;
        }
        sleep_ms(20);
    }
}

/* Reads "client=EP\ncontrol=EP\n" written by the router once it is bound. */
static int read_ready(cluster *cl)
{
    FILE *f = fopen(cl->ready_file, "r");
    if (!f)
        return -1;
    char line[512];
    int got = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        if (!strncmp(line, "client=", 7) && strlen(line + 7) < sizeof cl->client_ep) {
            snprintf(cl->client_ep, sizeof cl->client_ep, "%s", line + 7);
            got |= 1;
        } else if (!strncmp(line, "control=", 8) && strlen(line + 8) < sizeof cl->control_ep) {
            snprintf(cl->control_ep, sizeof cl->control_ep, "%s", line + 8);
            got |= 2;
        }
    }
    fclose(f);
    return got == 3 ? 0 : -1;
}

/* A wildcard bind address (0.0.0.0 or the ZeroMQ star) -> 127.0.0.1: where to connect. */
static void connectable(char *ep, size_t cap)
{
    static const char *any[] = {"tcp://0.0.0.0:", "tcp://*:"};
    for (size_t i = 0; i < 2; i++) {
        size_t n = strlen(any[i]);
        if (!strncmp(ep, any[i], n)) {
            char port[16];
            size_t len = strnlen(ep + n, sizeof port - 1);
            memcpy(port, ep + n, len);
            port[len] = '\0';
            snprintf(ep, cap, "tcp://127.0.0.1:%s", port);
        }
    }
}

/* Every worker registered and healthy? */
static int cluster_healthy(kv_client *c, const cluster *cl)
{
    kv_status *st;
    if (kv_client_status(c, 500, &st))
        return 0;
    int n_ok = 0, n_workers = cl->n - 1 - cl->has_frontend;
    for (int i = 1; i <= n_workers; i++)
        for (size_t k = 0; k < st->n_workers; k++)
            if (!strcmp(st->workers[k].worker_id, cl->ch[i].name) && st->workers[k].healthy) {
                n_ok++;
                break;
            }
    kv_status_free(st);
    return n_ok == n_workers;
}

/* Restarts child i after an unexpected exit; -1 when it restarts too often. */
static int restart(cluster *cl, int i, int wstatus)
{
    child *c = &cl->ch[i];
    char why[128];
    describe_exit(wstatus, why, sizeof why);
    double now = kv_now_s();
    int recent = 0;
    for (int k = 0; k < RESTARTS_PER_MINUTE && k < c->n_restarts; k++)
        recent += now - c->restarts[k] < 60.0;
    if (recent >= RESTARTS_PER_MINUTE) {
        fprintf(stderr, "kvctl up: %s %s; it was restarted %d times in the last minute: giving up\n", c->name, why,
                recent);
        return -1;
    }
    fprintf(stderr, "kvctl up: %s %s; restarting it (%d restarts in the last minute)\n", c->name, why, recent + 1);
    c->restarts[c->n_restarts++ % RESTARTS_PER_MINUTE] = now;
    if (i == 0)
        unlink(cl->ready_file);
    return child_start(c);
}

/* Starts the kv-frontend child (the last one) and waits for its ready file: 0, or -1 with
 * the reason printed. A restart comes back on the same port. */
static int start_frontend(cluster *cl, const up_cfg *u, const char *bindir, double deadline)
{
    child *f = &cl->ch[cl->n - 1];
    char port[32];
    snprintf(f->name, sizeof f->name, "frontend");
    snprintf(f->exe, sizeof f->exe, "%s/kv-frontend", bindir);
    snprintf(cl->frontend_ready_file, sizeof cl->frontend_ready_file, "%s/frontend.ready", cl->tmpdir);
    snprintf(port, sizeof port, "%ld", u->http_port);
    child_arg(f, "--router=%s", cl->client_ep);
    child_arg(f, "--model=%s", u->model);
    child_arg(f, "--host=%s", u->bind);
    child_arg(f, "--port=%s", port);
    child_arg(f, "--ready-file=%s", cl->frontend_ready_file);
    if (child_start(f))
        return -1;
    for (;;) {
        FILE *rf = fopen(cl->frontend_ready_file, "r");
        char line[320] = "";
        if (rf) {
            if (!fgets(line, sizeof line, rf))
                line[0] = '\0';
            fclose(rf);
        }
        line[strcspn(line, "\r\n")] = '\0';
        const char *colon = strrchr(line, ':');
        if (!strncmp(line, "http=", 5) && colon) {
            snprintf(cl->http_url, sizeof cl->http_url, "%s", line + 5);
            snprintf(f->args[3], sizeof f->args[3], "--port=%s", colon + 1);
            return 0;
        }
        int ws, dead = reap_one(cl, &ws);
        if (dead >= 0 || up_stop || kv_now_s() > deadline) {
            char why[128] = "did not come up in time";
            if (dead >= 0)
                describe_exit(ws, why, sizeof why);
            fprintf(stderr, "kvctl up: %s %s\n", dead >= 0 ? cl->ch[dead].name : "kv-frontend",
                    up_stop ? "start interrupted" : why);
            return -1;
        }
        sleep_ms(20);
    }
}

int kvctl_cmd_up(int argc, char **argv)
{
    up_cfg u;
    int rc = parse(argc, argv, &u);
    if (rc)
        return rc < 0 ? 0 : rc;
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "kvctl up: cannot find this program's directory: %s\n", strerror(errno));
        return 1;
    }
    self[n] = '\0';
    const char *bindir = dirname(self);
    const char *exes[4] = {"kv-router", "kv-prefill", "kv-decode", "kv-frontend"};
    for (int i = 0; i < 3 + u.http; i++) {
        char p[PATH_MAX + 16];
        snprintf(p, sizeof p, "%s/%s", bindir, exes[i]);
        if (access(p, X_OK)) {
            fprintf(stderr, "kvctl up: %s not found next to kvctl (%s)\n", exes[i], p);
            return 1;
        }
    }
    struct stat sb;
    if (stat(u.model, &sb) || !(S_ISDIR(sb.st_mode) || (S_ISREG(sb.st_mode) && kv_model_path_is_gguf(u.model)))) {
        fprintf(stderr, "kvctl up: --model %s is neither a model directory nor a .gguf file\n", u.model);
        return 1;
    }
    if (!u.threads) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        u.threads = cores / (u.n_prefill + u.n_decode);
        if (u.threads < 1)
            u.threads = 1;
    }
    cluster cl = {0};
    cl.has_frontend = u.http;
    cl.n = (int)(1 + u.n_prefill + u.n_decode) + cl.has_frontend;
    cl.ch = calloc((size_t)cl.n, sizeof *cl.ch);
    if (!cl.ch) {
        fprintf(stderr, "kvctl up: out of memory\n");
        return 1;
    }
    snprintf(cl.tmpdir, sizeof cl.tmpdir, "/tmp/kvctl-up-XXXXXX");
    if (!mkdtemp(cl.tmpdir)) {
        fprintf(stderr, "kvctl up: mkdtemp: %s\n", strerror(errno));
        free(cl.ch);
        return 1;
    }
    snprintf(cl.ready_file, sizeof cl.ready_file, "%s/router.ready", cl.tmpdir);
    char listen_ep[256], control_ep[256], threads[32], blocks[32];
    snprintf(listen_ep, sizeof listen_ep, "tcp://%s:%ld", u.bind, u.port);
    snprintf(control_ep, sizeof control_ep, "tcp://%s:%ld", u.bind, u.port ? u.port + 1 : 0);
    snprintf(threads, sizeof threads, "%ld", u.threads);
    snprintf(blocks, sizeof blocks, "%ld", u.kv_blocks);

    struct sigaction sa = {0};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int status = 1;
    kv_client *client = NULL;
    up_keys keys = {0};
    kv_err kerr;
    if (u.insecure) {
        fprintf(stderr, "kvctl up: WARNING: --insecure: CURVE is OFF, every socket of this cluster is "
                        "unauthenticated: any local process can act as a client, a worker or a KV peer\n");
    } else if (up_keys_make(&keys, (int)u.n_prefill, (int)u.n_decode, &kerr)) {
        fprintf(stderr, "kvctl up: keys: %s\n", kerr.msg);
        goto out;
    }
    child *r = &cl.ch[0];
    snprintf(r->name, sizeof r->name, "router");
    snprintf(r->exe, sizeof r->exe, "%s/kv-router", bindir);
    child_arg(r, "--model=%s", u.model);
    child_arg(r, "--listen=%s", listen_ep);
    child_arg(r, "--control=%s", control_ep);
    child_arg(r, "--ready-file=%s", cl.ready_file);
    if (u.prefix_cache && !strcmp(u.prefix_cache, "off")) {
        child_arg(r, "--route-policy=%s", "load");
        child_arg(r, "--local-prefill-max=%s", "0");
    }
    if (r->n_args + 3 < MAX_ARGS)
        r->n_args += up_keys_args(&keys, 1, NULL, r->args + r->n_args);
    if (child_start(r))
        goto out;
    double deadline = kv_now_s() + READY_TIMEOUT_S;
    int ws;
    while (read_ready(&cl)) {
        int dead = reap_one(&cl, &ws);
        if (dead >= 0 || up_stop || kv_now_s() > deadline) {
            char why[128] = "did not come up within 30 s";
            if (dead >= 0)
                describe_exit(ws, why, sizeof why);
            fprintf(stderr, "kvctl up: kv-router %s\n", up_stop ? "start interrupted" : why);
            goto out;
        }
        sleep_ms(20);
    }
    connectable(cl.client_ep, sizeof cl.client_ep);
    connectable(cl.control_ep, sizeof cl.control_ep);
    if (up_keys_endpoint(&keys, cl.client_ep, &kerr)) {
        fprintf(stderr, "kvctl up: keys: %s\n", kerr.msg);
        goto out;
    }
    /* A restarted router must come back on the same ports. */
    snprintf(r->args[1], sizeof r->args[1], "--listen=%s", cl.client_ep);
    snprintf(r->args[2], sizeof r->args[2], "--control=%s", cl.control_ep);
    for (int i = 1; i < cl.n - cl.has_frontend; i++) {
        child *w = &cl.ch[i];
        int prefill = i <= u.n_prefill;
        snprintf(w->name, sizeof w->name, "%s-%d", prefill ? "prefill" : "decode",
                 prefill ? i - 1 : i - 1 - (int)u.n_prefill);
        snprintf(w->exe, sizeof w->exe, "%s/%s", bindir, prefill ? "kv-prefill" : "kv-decode");
        child_arg(w, "--model=%s", u.model);
        child_arg(w, "--router=%s", cl.control_ep);
        child_arg(w, "--id=%s", w->name);
        child_arg(w, "--threads=%s", threads);
        if (u.kv_blocks)
            child_arg(w, "--kv-blocks=%s", blocks);
        if (u.devices) {
            char dev[16];
            device_of(u.devices, i - 1, dev, sizeof dev);
            child_arg(w, "--device=%s", dev);
        }
        if (u.kv_transport)
            child_arg(w, "--kv-transport=%s", u.kv_transport);
        if (u.prefix_cache)
            child_arg(w, "--prefix-cache=%s", u.prefix_cache);
        static const char *const kv_fmts[4] = {"--kv-dtype=%s", "--kv-residual=%s", "--kv-group=%s", "--kv-keys=%s"};
        for (int k = 0; k < 4; k++)
            if (u.kv_flags[k])
                child_arg(w, kv_fmts[k], u.kv_flags[k]);
        if (w->n_args + 3 < MAX_ARGS)
            w->n_args += up_keys_args(&keys, 0, w->name, w->args + w->n_args);
        if (child_start(w))
            goto out;
    }
    char errbuf[512];
    if (kv_client_connect(cl.client_ep, &client, errbuf, sizeof errbuf)) {
        fprintf(stderr, "kvctl up: %s\n", errbuf);
        goto out;
    }
    while (!cluster_healthy(client, &cl)) {
        int dead = reap_one(&cl, &ws);
        if (dead >= 0 || up_stop || kv_now_s() > deadline) {
            char why[128] = "";
            if (dead >= 0)
                describe_exit(ws, why, sizeof why);
            if (up_stop)
                fprintf(stderr, "kvctl up: start interrupted\n");
            else if (dead >= 0)
                fprintf(stderr, "kvctl up: %s %s during start-up\n", cl.ch[dead].name, why);
            else
                fprintf(stderr, "kvctl up: workers not all registered and healthy within %.0f s\n", READY_TIMEOUT_S);
            goto out;
        }
        sleep_ms(100);
    }
    kv_client_close(client);
    client = NULL;
    if (cl.has_frontend && start_frontend(&cl, &u, bindir, kv_now_s() + READY_TIMEOUT_S))
        goto out;
    printf("kvserve up: %s (control %s; %ld prefill + %ld decode; model %s)\n", cl.client_ep, cl.control_ep,
           u.n_prefill, u.n_decode, u.model);
    if (cl.has_frontend)
        printf("kvserve http: %s/v1 (kv-frontend)\n", cl.http_url);
    fflush(stdout);

    while (!up_stop) {
        int dead;
        while (!up_stop && (dead = reap_one(&cl, &ws)) >= 0)
            if (restart(&cl, dead, ws))
                goto out;
        sleep_ms(100);
    }
    fprintf(stderr, "kvctl up: stopping\n");
    status = 0;
out:
    kv_client_close(client);
    stop_all(&cl);
    unlink(cl.ready_file);
    if (cl.has_frontend)
        unlink(cl.frontend_ready_file);
    rmdir(cl.tmpdir);
    up_keys_remove(&keys);
    free(cl.ch);
    return status;
}
