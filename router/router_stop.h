/* Stop sequences, matched by the router on the text it streams (GenerateRequest.stop).
 * Matching where the text is made ends the request at once with FINISH_STOP and counts it
 * as finished "stop" however fast the decode worker runs; a client that matched on its own
 * side could only cancel after the fact, racing the request's natural end. */
#ifndef ROUTER_STOP_H
#define ROUTER_STOP_H

#include <stddef.h>

#define ROUTER_STOP_MAX 16        /* sequences per request */
#define ROUTER_STOP_MAX_BYTES 256 /* bytes per sequence */

typedef struct router_stop {
    char **seq;      /* NUL-terminated copies */
    size_t n;
    size_t max_len;  /* the longest sequence */
    char *tail;      /* the last max_len - 1 bytes scanned: a match may span two pieces */
    size_t tail_len;
} router_stop;

/* Checks a request's sequences (count, lengths): 0 and the longest length, or KV_EINVAL with msg. */
int router_stop_check(char *const *seq, size_t n, size_t *max_len, char *msg, size_t cap);
/* Copies the sequences. 0; KV_EINVAL with msg (too many, empty or too long); KV_ENOMEM. */
int router_stop_init(router_stop *s, char *const *seq, size_t n, char *msg, size_t cap);
/* 1 when text (the next piece of the generated text) completes a sequence; 0 otherwise,
 * also when out of memory (the client's own scan still catches it). */
int router_stop_scan(router_stop *s, const char *text, size_t len);
void router_stop_free(router_stop *s);

#endif
