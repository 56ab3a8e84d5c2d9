/* A program that knows libkvclient only through kv_client.h and libkvclient.so: no
 * protobuf, ZeroMQ or kvserve-internal headers. Checks that the exported API links and
 * behaves without a router (timeouts, JSON of a hand-made status). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_client.h"

static int failures;
#define EXPECT(c)                                                        \
    do {                                                                 \
        if (!(c)) {                                                      \
            fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #c); \
            failures++;                                                  \
        }                                                                \
    } while (0)

int main(void)
{
    kv_client *c = NULL;
    char err[256];
    EXPECT(kv_client_connect("tcp://127.0.0.1:1", &c, err, sizeof err) == KVC_OK);
    if (c) {
        kv_client_request r;
        kv_client_request_init(&r);
        r.prompt = "Once upon a time";
        r.max_tokens = 4;
        kv_client_result res;
        EXPECT(kv_client_generate(c, &r, NULL, NULL, &res, 100) == KVC_ETIMEOUT);
        EXPECT(res.finish_reason == KVC_FINISH_ERROR && res.error_code == KVC_ERR_TIMEOUT);
        kv_client_result_free(&res);
        kv_client_event ev;
        EXPECT(kv_client_next_event(c, 10, &ev) == KVC_ETIMEOUT);
        kv_client_close(c);
    }
    kv_status_worker w = {"decode-0", KVC_ROLE_DECODE, "tcp://127.0.0.1:9", "cpu", 1, 5.0, 0, 0, 0, 8, 8, "zmq",
                          "q4_1+f32", 3, 40, 32};
    kv_status s = {"m", &w, 1, NULL, 0, 1, 0, 2.0, 3, {.present = 1, .generation_tokens = 7}};
    char *js = kv_status_to_json(&s);
    EXPECT(js && strstr(js, "\"role\":\"decode\"") && strstr(js, "\"requests\":[]") &&
           strstr(js, "\"kv_transports\":\"zmq\",\"weights\":\"q4_1+f32\"") && strstr(js, "\"requests_replanned\":3") &&
           strstr(js, "\"generation_tokens\":7") &&
           strstr(js, "\"kv_blocks_cached\":3,\"prefix_query_tokens\":40,\"prefix_hit_tokens\":32") &&
           strstr(js, "\"prefix_cache\":{\"prefill\":{\"query_tokens\":0"));
    EXPECT(kv_status_histogram_quantile(&s.metrics.ttft, 0.5) != kv_status_histogram_quantile(&s.metrics.ttft, 0.5));
    free(js);
    EXPECT(!strcmp(kv_client_strerror(KVC_ETIMEOUT), "timed out"));
    printf("%d failures\n", failures);
    return failures ? 1 : 0;
}
