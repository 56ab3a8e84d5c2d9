#!/usr/bin/env bash
# Service benchmark: brings up a local cluster with `kvctl up` (N prefill, M decode
# workers), runs `kvctl bench` against it, stops it. A benchmark, not a test.
# usage: bench/run-service-bench.sh MODEL_DIR PREFILL DECODE [kvctl bench flags...]
# e.g.   bench/run-service-bench.sh ../shared/models/stories260K 1 2 --requests 200 --concurrency 16 \
#            --prompt-len 64 --max-tokens 64
set -euo pipefail
bin="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/build/bin"
bin="${KVSERVE_BIN:-$bin}"
model=$1 prefill=$2 decode=$3
shift 3
log=$(mktemp /tmp/kvserve-bench-XXXXXX.log)
"$bin/kvctl" up --model "$model" --prefill "$prefill" --decode "$decode" --port 0 --threads "${THREADS:-1}" >"$log" 2>&1 &
up=$!
trap 'kill -TERM $up 2>/dev/null; wait $up 2>/dev/null; rm -f "$log"' EXIT
ep=
for _ in $(seq 600); do
  ep=$(grep -o 'tcp://[0-9.]*:[0-9]*' "$log" | head -1 || true)
  [ -n "$ep" ] && break
  kill -0 "$up" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$ep" ] || { echo "cluster did not come up" >&2; cat "$log" >&2; exit 1; }
echo "== $(basename "$model"): ${prefill}P${decode}D at $ep" >&2
"$bin/kvctl" bench --router "$ep" "$@"
