#!/usr/bin/env bash
# The demo: installs dependencies, builds, starts a local cluster (kv-router + 1 prefill +
# 1 decode worker, `kvctl up`), generates text through it with `kvctl generate`, shows
# `kvctl status`, then stops the cluster. Uses the shared stories260K model, or a synthetic
# tiny model when ../shared/models is absent. Env: PORT (default 7100), MAX_TOKENS.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KVSERVE_ROOT"
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVSERVE_CUDA="$KVSERVE_CUDA" >/dev/null
ninja -C build -j "$(nproc)" >/dev/null
model="$KVSERVE_TEST_MODELS/stories260K"
if [ ! -f "$model/config.json" ]; then
  model=build/models/tiny
  [ -f "$model/config.json" ] || build/bin/kvctl model synth --shape tiny --dtype f32 --out "$model"
fi
prompt="${1:-Once upon a time}"
port="${PORT:-7100}"
log=$(mktemp /tmp/kvserve-demo-XXXXXX.log)

build/bin/kvctl up --model "$model" --prefill 1 --decode 1 --port "$port" --threads 1 >"$log" 2>&1 &
up_pid=$!
trap 'kill -TERM $up_pid 2>/dev/null; wait $up_pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 300); do
  grep -q 'tcp://' "$log" && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
grep -q 'tcp://' "$log" || { echo "demo: the cluster did not come up; its log:" >&2; cat "$log" >&2; exit 1; }
router="tcp://127.0.0.1:$port"
echo "model: $model; cluster: $router" >&2
build/bin/kvctl status --router "$router" >&2
printf '%s' "$prompt"
build/bin/kvctl generate --router "$router" --max-tokens "${MAX_TOKENS:-200}" -- "$prompt"
echo
