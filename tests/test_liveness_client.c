/* Helper of test_liveness.sh: a libkvclient program that submits one greedy request and
 * reads its events slowly, sleeping --sleep-ms between calls (a slow but alive client),
 * with heartbeats every --heartbeat-ms (0 = none: a client the router should time out).
 * Prints "submitted" once the request is sent (the script kills it with -9 from then on),
 * then the finish on stdout: "finish=<name> tokens=<n>". --stop-on-first PID: on the first
 * tokens, SIGSTOP process PID (the decode worker: the request then stays mid-stream for as
 * long as the script wants) and print "first".
 * Exit 0: finished by EOS or length; 4: cancelled; 1: any other end; 2: usage. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_client.h"

static int usage(void)
{
    fprintf(stderr, "usage: test_liveness_client EP [--heartbeat-ms N] [--sleep-ms N] [--max-tokens N] "
                    "[--run-ms N] [--stop-on-first PID]\n");
    return 2;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    long heartbeat_ms = KV_CLIENT_HEARTBEAT_MS, sleep_between = 0, max_tokens = 16, run_ms = 60000, stop_pid = 0;
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc)
            return usage();
        long v = strtol(argv[i + 1], NULL, 10);
        if (!strcmp(argv[i], "--heartbeat-ms"))
            heartbeat_ms = v;
        else if (!strcmp(argv[i], "--sleep-ms"))
            sleep_between = v;
        else if (!strcmp(argv[i], "--max-tokens"))
            max_tokens = v;
        else if (!strcmp(argv[i], "--run-ms"))
            run_ms = v;
        else if (!strcmp(argv[i], "--stop-on-first"))
            stop_pid = v;
        else
            return usage();
        i++;
    }
    char err[256];
    kv_client *c;
    if (kv_client_connect(argv[1], &c, err, sizeof err)) {
        fprintf(stderr, "test_liveness_client: %s\n", err);
        return 1;
    }
    if (kv_client_set_heartbeat(c, (int)heartbeat_ms)) {
        fprintf(stderr, "test_liveness_client: %s\n", kv_client_last_error(c));
        kv_client_close(c);
        return 2;
    }
    kv_client_request r;
    kv_client_request_init(&r);
    r.prompt = "Once upon a time";
    r.max_tokens = (uint32_t)max_tokens;
    r.ignore_eos = 1;
    if (kv_client_submit(c, &r, NULL, 5000)) {
        fprintf(stderr, "test_liveness_client: submit: %s\n", kv_client_last_error(c));
        kv_client_close(c);
        return 1;
    }
    printf("submitted\n");
    fflush(stdout);
    int rc = 1;
    size_t tokens = 0;
    for (long waited = 0; waited < run_ms; waited += sleep_between + 1) {
        kv_client_event ev;
        if (kv_client_next_event(c, 1, &ev) == KVC_OK && ev.kind == KVC_EVENT_REPLY) {
            if (stop_pid > 0 && ev.n_tokens && tokens == 0) {
                kill((pid_t)stop_pid, SIGSTOP);
                printf("first\n");
                fflush(stdout);
            }
            tokens += ev.n_tokens;
            if (ev.finished) {
                printf("finish=%s tokens=%zu error=%s\n", kv_client_finish_name(ev.finish_reason), tokens,
                       kv_client_error_name(ev.error_code));
                rc = ev.finish_reason == KVC_FINISH_EOS || ev.finish_reason == KVC_FINISH_LENGTH ? 0
                     : ev.finish_reason == KVC_FINISH_CANCELLED                                  ? 4
                                                                                                 : 1;
                break;
            }
        }
        if (sleep_between)
            sleep_ms(sleep_between);
    }
    if (rc == 1 && kv_client_in_flight(c))
        printf("finish=none tokens=%zu (no final reply within %ld ms)\n", tokens, run_ms);
    kv_client_close(c);
    return rc;
}
