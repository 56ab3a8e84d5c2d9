#!/usr/bin/env bash
# Prefix-cache benchmark: a 1P1D SmolLM2-135M-Instruct cluster, three workloads (random ids:
# nothing to reuse; a shared system prompt; multi-turn conversations), each with the prefix
# cache on and off, then one table: TTFT p50/p99, TPOT p50, prefill tokens computed, KV
# bytes moved and saved, hit rates (prefill / decode side), and for multi-turn the KV bytes
# shipped per turn. A benchmark, not a test: it asserts nothing.
#
# usage: bench/run-prefix-bench.sh [MODEL]   (an imported model directory or a .gguf;
#        default build/models/smollm2-135m-instruct, imported from
#        $KVSERVE_TEST_MODELS/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf when absent)
# Env (small defaults: a few minutes on 2 cores):
#   KVSERVE_BIN   binaries (default build/bin)      THREADS  per worker (default 1)
#   CACHES        "on off"                          WORKLOADS "random shared-prefix multi-turn"
#   RANDOM_REQUESTS 8, RANDOM_PROMPT 128            SHARED_REQUESTS 6, SHARED_PREFIX 1000, SHARED_SUFFIX 10
#   CONVERSATIONS 2, TURNS 8, SYSTEM_PROMPT 100, MESSAGE 32
#   MAX_TOKENS 16, CONCURRENCY 1 (TTFT without queueing)
#   OUT           directory for the JSON reports and cluster logs (default a new /tmp dir, kept)
#   SWITCH        up | direct: how the cluster is started (default: up when it has --prefix-cache)
# The cache is switched by `kvctl up --prefix-cache on|off` when kvctl up has that flag, else
# by starting kv-router, kv-prefill and kv-decode here with --prefix-cache on|off (and, for
# off, the router's --route-policy load --local-prefill-max 0, as kvctl up does); binaries
# without the flag run as built (the table says "as built").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${KVSERVE_BIN:-$root/build/bin}"
models="${KVSERVE_TEST_MODELS:-$root/../shared/models}"
threads="${THREADS:-1}"
max_tokens="${MAX_TOKENS:-16}"
conc="${CONCURRENCY:-1}"
out="${OUT:-$(mktemp -d /tmp/kvserve-prefix-bench-XXXXXX)}"
mkdir -p "$out"
for b in kvctl kv-router kv-prefill kv-decode; do
  [[ -x $bin/$b ]] || { echo "run-prefix-bench: $bin/$b not built (ninja -C build kvctl kv-router kv-prefill kv-decode)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "run-prefix-bench: python3 is needed to read the reports" >&2; exit 1; }

model="${1:-$root/build/models/smollm2-135m-instruct}"
if [[ ! -e $model ]]; then
  gguf="$models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
  [[ -f $gguf ]] || { echo "run-prefix-bench: no model at $model and no $gguf to import" >&2; exit 1; }
  echo "== importing $gguf into $model" >&2
  mkdir -p "$(dirname "$model")"
  "$bin/kvctl" model import "$gguf" --out "$model" --force >&2
fi

# How the cache is switched in this build.
if [[ -n ${SWITCH:-} ]]; then
  switch=$SWITCH
elif "$bin/kvctl" up --help 2>&1 | grep -q -- '--prefix-cache'; then
  switch=up
elif "$bin/kv-prefill" --help 2>&1 | grep -q -- '--prefix-cache' &&
  "$bin/kv-decode" --help 2>&1 | grep -q -- '--prefix-cache'; then
  switch=direct
else
  switch=none
fi
router_help=$("$bin/kv-router" --help 2>&1 || true)

pids=()
stop_cluster() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_cluster EXIT

# start_cluster on|off: sets ep (the router's client endpoint) once both workers are healthy.
start_cluster() {
  local cache=$1 log="$out/cluster-$1.log" flag=()
  [[ $switch == none ]] || flag=(--prefix-cache "$cache")
  ep=
  if [[ $switch != direct ]]; then
    "$bin/kvctl" up --model "$model" --port 0 --threads "$threads" "${flag[@]}" >"$log.out" 2>"$log" &
    pids=($!)
    for _ in $(seq 1200); do
      ep=$(grep -o 'tcp://[0-9.]*:[0-9]*' "$log.out" 2>/dev/null | head -1 || true)
      [[ -n $ep ]] && return 0
      kill -0 "${pids[0]}" 2>/dev/null || break
      sleep 0.1
    done
  else
    # As kvctl up does: "off" is also no cache-aware routing and no local prefill.
    local ready="$out/router-$cache.ready" rflag=()
    [[ $router_help == *--prefix-cache* ]] && rflag=("${flag[@]}")
    if [[ $cache == off ]]; then
      [[ $router_help == *--route-policy* ]] && rflag+=(--route-policy load)
      [[ $router_help == *--local-prefill-max* ]] && rflag+=(--local-prefill-max 0)
    fi
    rm -f "$ready"
    "$bin/kv-router" --model "$model" --listen tcp://127.0.0.1:0 --control tcp://127.0.0.1:0 --ready-file "$ready" \
      "${rflag[@]}" >"$log" 2>&1 &
    pids=($!)
    for _ in $(seq 300); do [[ -s $ready ]] && grep -q '^control=' "$ready" && break; sleep 0.1; done
    local control
    control=$(sed -n 's/^control=//p' "$ready" 2>/dev/null | sed 's|tcp://\(0\.0\.0\.0\|\*\):|tcp://127.0.0.1:|')
    ep=$(sed -n 's/^client=//p' "$ready" 2>/dev/null | sed 's|tcp://\(0\.0\.0\.0\|\*\):|tcp://127.0.0.1:|')
    [[ -n $control && -n $ep ]] || { echo "run-prefix-bench: kv-router did not come up; $log:" >&2; cat "$log" >&2; exit 1; }
    "$bin/kv-prefill" --model "$model" --router "$control" --id prefill-0 --threads "$threads" "${flag[@]}" >>"$log" 2>&1 &
    pids+=($!)
    "$bin/kv-decode" --model "$model" --router "$control" --id decode-0 --threads "$threads" "${flag[@]}" >>"$log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1200); do
      [[ $("$bin/kvctl" status --router "$ep" --json 2>/dev/null | grep -o '"healthy":true' | wc -l) -ge 2 ]] && return 0
      sleep 0.1
    done
    ep=
  fi
  echo "run-prefix-bench: the cluster (prefix cache $cache) did not come up; $log:" >&2
  cat "$log" >&2
  exit 1
}

run_workload() { # run_workload WORKLOAD CACHE
  local w=$1 cache=$2 args seed
  case $w in
    random) seed=1 args=(--requests "${RANDOM_REQUESTS:-8}" --prompt-len "${RANDOM_PROMPT:-128}") ;;
    shared-prefix) seed=2 args=(--requests "${SHARED_REQUESTS:-6}" --prefix-len "${SHARED_PREFIX:-1000}"
                         --prompt-len "${SHARED_SUFFIX:-10}") ;;
    multi-turn) seed=3 args=(--conversations "${CONVERSATIONS:-2}" --turns "${TURNS:-8}" --prefix-len "${SYSTEM_PROMPT:-100}"
                      --prompt-len "${MESSAGE:-32}") ;;
    *) echo "run-prefix-bench: unknown workload $w" >&2; exit 2 ;;
  esac
  echo "== $w, prefix cache $cache" >&2
  # A seed per workload: the same prompts with the cache on and off, and no workload finds
  # another's (multi-turn's system prompt would otherwise be the start of shared-prefix's).
  "$bin/kvctl" bench --router "$ep" --workload "$w" "${args[@]}" --max-tokens "$max_tokens" --concurrency "$conc" \
    --seed "$seed" --status-after --json >"$out/$w-$cache.json" \
    2>"$out/$w-$cache.err" || echo "run-prefix-bench: $w ($cache) had failures: see $out/$w-$cache.json" >&2
}

caches="${CACHES:-on off}"
workloads="${WORKLOADS:-random shared-prefix multi-turn}"
[[ $switch == none ]] && { echo "run-prefix-bench: no --prefix-cache flag in these binaries: one run, as built" >&2; caches=on; }
for cache in $caches; do
  start_cluster "$cache"
  echo "== cluster up at $ep (prefix cache $cache, switched via: $switch)" >&2
  for w in $workloads; do run_workload "$w" "$cache"; done
  stop_cluster
done

# shellcheck disable=SC2086 # the lists are words
python3 - "$out" "$switch" $caches -- $workloads <<'EOF'
import json, os, sys
out, switch = sys.argv[1], sys.argv[2]
sep = sys.argv.index("--")
caches, workloads = sys.argv[3:sep], sys.argv[sep + 1:]
def load(w, c):
    p = os.path.join(out, f"{w}-{c}.json")
    try:
        return json.load(open(p))
    except (OSError, ValueError):
        return None
hdr = ("workload", "cache", "ok/req", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "prefill computed",
       "prompt tok", "KV bytes moved", "KV bytes saved", "hit P", "hit D", "router hit P/D")
rows = []
for w in workloads:
    for c in caches:
        r = load(w, c)
        if r is None:
            rows.append((w, c) + ("-",) * (len(hdr) - 2))
            continue
        cl = r.get("cluster", {})
        rp = f"{cl['prefix_hit_tokens_prefill'] / cl['prefix_query_tokens_prefill']:.1%}" if cl.get("prefix_query_tokens_prefill") else "-"
        rd = f"{cl['prefix_hit_tokens_decode'] / cl['prefix_query_tokens_decode']:.1%}" if cl.get("prefix_query_tokens_decode") else "-"
        rows.append((w, c if switch != "none" else "as built", f"{r['ok']}/{r['requests']}",
                     f"{r['ttft_ms']['p50']:.1f}", f"{r['ttft_ms']['p99']:.1f}", f"{r['tpot_ms']['p50']:.2f}",
                     str(r["tokens_computed"]), str(r["prompt_tokens"]), str(r["kv_bytes"]), str(r["kv_bytes_saved"]),
                     f"{r['prefill_hit_rate']:.1%}", f"{r['decode_hit_rate']:.1%}", f"{rp}/{rd}"))
width = [max(len(str(x[i])) for x in rows + [hdr]) for i in range(len(hdr))]
line = lambda x: "  ".join(str(v).rjust(width[i]) if i > 1 else str(v).ljust(width[i]) for i, v in enumerate(x))
print(line(hdr))
for x in rows:
    print(line(x))
for c in caches:
    r = load("multi-turn", c)
    if r and r.get("per_turn"):
        print(f"\nmulti-turn, cache {c}: per turn (mean over {r['conversations']} conversations)")
        print("  turn  prompt   new  computed  KV bytes moved  bytes/new token  KV bytes saved  TTFT p50 ms")
        for t in r["per_turn"]:
            print(f"  {t['turn']:4d}  {t['prompt_tokens_mean']:6.0f}  {t['new_tokens_mean']:4.0f}  "
                  f"{t['tokens_computed_mean']:8.1f}  {t['kv_bytes_mean']:14.0f}  {t['kv_bytes_per_new_token']:15.1f}  "
                  f"{t['kv_bytes_saved_mean']:14.0f}  {t['ttft_ms_p50']:11.1f}")
ttft = {c: load("shared-prefix", c) for c in caches}
if all(ttft.values()) and "on" in ttft and "off" in ttft and ttft["on"]["ttft_ms"]["p50"] > 0:
    print(f"\nshared-prefix TTFT p50: off / on = {ttft['off']['ttft_ms']['p50'] / ttft['on']['ttft_ms']['p50']:.1f}x")
print(f"\nreports: {out}")
EOF
