/* What /metrics serves: the router's cluster-wide metrics (kv_status.metrics, kept by the
 * router: any number of kv-frontends serve the same numbers, and they survive a frontend's
 * restart) and its per-worker view, in the Prometheus text exposition format with vLLM's
 * metric names and meanings under the "kvserve:" prefix, so that vLLM dashboards work.
 * Every sample carries model_name; README.md ("HTTP API") lists the families and
 * PROTOCOL.md ("Metrics") their meanings. A frontend keeps no counters of its own. */
#ifndef FE_METRICS_H
#define FE_METRICS_H

#include "kv_client.h"
#include "kv_textbuf.h"

/* The exposition of st (NULL: the router did not answer lately; then only
 * kvserve:router_up 0). */
void fe_metrics_render(kv_textbuf *b, const char *model, const kv_status *st);

#endif
