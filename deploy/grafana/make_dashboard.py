#!/usr/bin/env python3
"""Writes kvserve-dashboard.json (Grafana 10+, Prometheus data source) next to this script.

Every kv-frontend serves the same cluster-wide numbers (they live in the router), so a
Prometheus that scrapes several frontends holds identical series per instance: the queries
take max() across instances, never sum(). tests/test_metrics.c checks that every kvserve:
name below is one that /metrics exposes.

usage: python3 deploy/grafana/make_dashboard.py
"""
import json
import os

SEL = '{model_name=~"$model"}'
RI = "$__rate_interval"
DS = {"type": "prometheus", "uid": "${datasource}"}


def q(quantile, hist, by="le"):
    return f"histogram_quantile({quantile}, max by ({by}) (rate({hist}_bucket{SEL}[{RI}])))"


panels = []


def panel(title, targets, unit, x, y, w=12, h=8, kind="timeseries", desc=""):
    panels.append({
        "id": len(panels) + 1,
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": e, "legendFormat": l}
                    for i, (e, l) in enumerate(targets)],
    })


panel("Requests/s by finish reason",
      [(f"max by (finished_reason) (rate(kvserve:request_success_total{SEL}[{RI}]))", "{{finished_reason}}"),
       (f"max by (code) (rate(kvserve:request_failure_total{SEL}[{RI}]))", "failed: {{code}}")],
      "reqps", 0, 0, desc="Accepted requests that ended, by finished_reason; failures (refused ones too) by error code.")
panel("Running / waiting requests",
      [(f"max(kvserve:num_requests_running{SEL})", "running"),
       (f"max(kvserve:num_requests_waiting{SEL})", "waiting (router queue)")],
      "short", 12, 0)
panel("Time to first token",
      [(q(0.5, "kvserve:time_to_first_token_seconds"), "p50"), (q(0.99, "kvserve:time_to_first_token_seconds"), "p99")],
      "s", 0, 8, w=8)
panel("Inter-token latency",
      [(q(0.5, "kvserve:inter_token_latency_seconds"), "p50"), (q(0.99, "kvserve:inter_token_latency_seconds"), "p99")],
      "s", 8, 8, w=8)
panel("End-to-end request latency",
      [(q(0.5, "kvserve:e2e_request_latency_seconds"), "p50"), (q(0.99, "kvserve:e2e_request_latency_seconds"), "p99")],
      "s", 16, 8, w=8)
panel("Request phases (p50)",
      [(q(0.5, "kvserve:request_queue_time_seconds"), "queue"),
       (q(0.5, "kvserve:request_prefill_time_seconds"), "prefill (incl. KV hand-off)"),
       (q(0.5, "kvserve:request_decode_time_seconds"), "decode")],
      "s", 0, 16)
panel("Tokens/s",
      [(f"max(rate(kvserve:prompt_tokens_total{SEL}[{RI}]))", "prompt"),
       (f"max(rate(kvserve:generation_tokens_total{SEL}[{RI}]))", "generated")],
      "short", 12, 16)
panel("KV cache usage per worker",
      [(f"max by (worker, role) (kvserve:kv_cache_usage_perc{SEL})", "{{role}} {{worker}}")],
      "percentunit", 0, 24)
panel("Requests per worker (from heartbeats)",
      [(f"max by (worker, role) (kvserve:worker_num_requests_running{SEL})", "running {{role}} {{worker}}"),
       (f"max by (worker, role) (kvserve:worker_num_requests_waiting{SEL})", "queued {{role}} {{worker}}")],
      "short", 12, 24)
panel("KV transfer GB/s by transport",
      [(f"max by (transport) (rate(kvserve:kv_transfer_bytes_total{SEL}[{RI}])) / 1e9", "{{transport}}")],
      "decgbytes", 0, 32, desc="KV bytes moved prefill -> decode per second (zmq / cuda-ipc / nccl).")
panel("KV transfer latency by transport",
      [(q(0.5, "kvserve:kv_transfer_seconds", "le, transport"), "p50 {{transport}}"),
       (q(0.99, "kvserve:kv_transfer_seconds", "le, transport"), "p99 {{transport}}")],
      "s", 12, 32)
panel("Re-plans (requests run again after a worker or KV hand-off failed)",
      [(f"max(increase(kvserve:requests_replanned_total{SEL}[{RI}]))", "re-planned")],
      "short", 0, 40)
panel("Worker health",
      [(f"max by (worker, role) (kvserve:worker_healthy{SEL})", "{{role}} {{worker}}"),
       (f"max(kvserve:router_up{SEL})", "router")],
      "short", 12, 40, kind="stat", desc="1 = healthy (heartbeats on time); router: 1 when it answers the frontends.")

dashboard = {
    "title": "kvserve",
    "uid": "kvserve-overview",
    "description": "kvserve (disaggregated prefill/decode) metrics as kv-frontend's /metrics serves them.",
    "tags": ["kvserve", "llm"],
    "schemaVersion": 39,
    "version": 1,
    "editable": True,
    "time": {"from": "now-1h", "to": "now"},
    "refresh": "30s",
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
        {"name": "model", "type": "query", "datasource": DS, "label": "Model",
         "query": {"query": "label_values(kvserve:router_up, model_name)", "refId": "model"},
         "definition": "label_values(kvserve:router_up, model_name)",
         "includeAll": True, "multi": True, "refresh": 2, "current": {"text": "All", "value": "$__all"}},
    ]},
    "panels": panels,
}

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "kvserve-dashboard.json"), "w") as f:
    json.dump(dashboard, f, indent=2)
    f.write("\n")
