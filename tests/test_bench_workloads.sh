#!/usr/bin/env bash
# `kvctl bench --workload random|shared-prefix|multi-turn` against a 1P1D stories260K
# cluster (`kvctl up`): every workload runs without failures; the JSON report keeps the old
# keys and has the new ones; prompt token counts are what the workload promises (shared
# prefix + suffix; a multi-turn turn's prompt = the previous turn's + its reply + a new
# message); cached + computed = prompt tokens; --status-after's router counters over the run
# (prompt tokens, KV bytes shipped and saved, prefix queries and hits per side, prefill tokens
# computed) equal the bench's own sums; bad flag combinations exit 2. Cache hits are printed,
# not asserted (the cache may be off or not wired yet).
# usage: test_bench_workloads.sh BIN_DIR MODELS_DIR
set -u
BIN=${1:?BIN_DIR}
MODELS=${KVSERVE_TEST_MODELS:-${2:?MODELS_DIR}}
KVCTL="$BIN/kvctl"
M=$MODELS/stories260K
[[ -f $M/config.json ]] || { echo "SKIP: $M not found" >&2; exit 77; }
# shellcheck source=kv_cluster.sh
source "$(dirname "$0")/kv_cluster.sh"
kv_need_bins "$BIN" kv-router kv-prefill kv-decode
command -v python3 >/dev/null || { echo "SKIP: python3 (to read the JSON reports) not found" >&2; exit 77; }

tmp=$(mktemp -d /tmp/bench-workloads-test-XXXXXX)
trap kv_cleanup EXIT

kv_up_start "$KVCTL" "$tmp" --model "$M" --port 0 --threads 1 || exit 1
echo "cluster at $EP" >&2

# bench NAME ARGS...: runs kvctl bench --json into $tmp/NAME.json; fails the check on a
# nonzero exit.
bench() {
    local name=$1
    shift
    checks=$((checks + 1))
    if ! timeout 120 "$KVCTL" bench --router "$EP" --json "$@" >"$tmp/$name.json" 2>"$tmp/$name.err"; then
        fail "$name: kvctl bench $* exited $?: $(cat "$tmp/$name.json" "$tmp/$name.err")"
        return 1
    fi
}

# check_json NAME PYTHON: runs the Python checks on the report r (a dict); each failed
# assert is a failure. Also prints what the cache saved.
check_json() {
    local name=$1 code=$2
    checks=$((checks + 1))
    python3 - "$tmp/$name.json" "$name" <<EOF || fail "$name: report checks (see above)"
import json, sys
r = json.load(open(sys.argv[1]))
name = sys.argv[2]
old_keys = ["requests", "ok", "failed", "concurrency", "rate", "prompt_len", "max_tokens", "duration_s",
            "ttft_ms", "tpot_ms", "e2e_ms", "output_tokens", "output_tok_s", "requests_per_s", "kv_bytes",
            "kv_transfer_ms_total", "kv_transfer_ms_mean", "kv_gb_s", "errors"]
new_keys = ["workload", "prefix_len", "conversations", "turns", "skipped", "prompt_tokens",
            "prefill_cached_tokens", "decode_cached_tokens", "cached_tokens", "tokens_computed",
            "local_prefills", "prefill_query_tokens", "kv_bytes_saved", "prefill_hit_rate", "decode_hit_rate"]
keys = list(r.keys())
assert keys[:len(old_keys)] == old_keys, f"old keys changed or moved: {keys}"
for k in new_keys:
    assert k in r, f"missing key {k}"
for k in ("ttft_ms", "tpot_ms"):
    assert set(r[k]) == {"p50", "p90", "p99", "mean"}, r[k]
assert r["failed"] == 0 and r["ok"] == r["requests"], f"ok {r['ok']} failed {r['failed']} errors {r['errors']}"
assert r["output_tokens"] == r["requests"] * r["max_tokens"], r["output_tokens"]
assert r["tokens_computed"] + r["cached_tokens"] == r["prompt_tokens"], \
    f"computed {r['tokens_computed']} + cached {r['cached_tokens']} != prompt {r['prompt_tokens']}"
assert r["cached_tokens"] <= r["prompt_tokens"]
assert 0 <= r["prefill_hit_rate"] <= 1 and 0 <= r["decode_hit_rate"] <= 1
if "cluster" in r:  # the router's counters over the run: the bench was the only traffic
    c = r["cluster"]
    pairs = [("prompt_tokens", "prompt_tokens"), ("kv_bytes", "kv_bytes"),
             ("prefix_query_tokens_prefill", "prefill_query_tokens"),
             ("prefix_hit_tokens_prefill", "prefill_cached_tokens"),
             ("prefix_query_tokens_decode", "prompt_tokens"),
             ("prefix_hit_tokens_decode", "decode_cached_tokens"),
             ("prefill_tokens_computed", "tokens_computed"), ("kv_bytes_saved", "kv_bytes_saved")]
    for ck, rk in pairs:
        assert c[ck] == r[rk], f"router {ck} {c[ck]} != bench {rk} {r[rk]}"
print(f"{name}: prompt {r['prompt_tokens']} computed {r['tokens_computed']} cached {r['cached_tokens']} "
      f"(prefill hits {r['prefill_cached_tokens']}, decode hits {r['decode_cached_tokens']}, "
      f"{r['local_prefills']} local prefills), kv_bytes {r['kv_bytes']} saved {r['kv_bytes_saved']}, "
      f"ttft p50 {r['ttft_ms']['p50']:.2f} ms", file=sys.stderr)
$code
EOF
}

L=8 MAXT=6 P=20 N=12 C=3 T=4

bench random --requests $N --concurrency 4 --prompt-len $L --max-tokens $MAXT --status-after &&
    check_json random "
assert r['workload'] == 'random' and r['prefix_len'] == 0 and r['turns'] == 1
assert r['prompt_tokens'] == $N * $L, r['prompt_tokens']
assert 'cluster' in r
"

bench shared --workload shared-prefix --prefix-len $P --requests $N --concurrency 4 --prompt-len $L \
    --max-tokens $MAXT --status-after &&
    check_json shared "
assert r['workload'] == 'shared-prefix' and r['prefix_len'] == $P
assert r['prompt_tokens'] == $N * ($P + $L), r['prompt_tokens']
assert 'cluster' in r
"

# Closed loop with fewer slots than conversations, and open loop.
for mode in "--concurrency 2" "--rate 20"; do
    name=multi_${mode%% *}
    name=${name//-/}
    # shellcheck disable=SC2086
    bench "$name" --workload multi-turn --prefix-len $P --conversations $C --turns $T $mode --prompt-len $L \
        --max-tokens $MAXT --status-after &&
        check_json "$name" "
assert r['workload'] == 'multi-turn' and r['conversations'] == $C and r['turns'] == $T
assert r['requests'] == $C * $T and r['skipped'] == 0
turns = r['per_turn']
assert [t['turn'] for t in turns] == list(range($T)), turns
for k, t in enumerate(turns):
    want = $P + (k + 1) * $L + k * $MAXT   # system prompt + k replies + k + 1 messages
    assert t['requests'] == $C, t
    assert t['prompt_tokens_mean'] == want, f'turn {k}: prompt {t[\"prompt_tokens_mean\"]}, want {want}'
    assert t['new_tokens_mean'] == ($P + $L if k == 0 else $L + $MAXT), t
    assert t['tokens_computed_mean'] <= t['prompt_tokens_mean'], t
    print(f'  turn {k}: prompt {t[\"prompt_tokens_mean\"]:.0f} new {t[\"new_tokens_mean\"]:.0f} '
          f'computed {t[\"tokens_computed_mean\"]:.1f} kv_bytes {t[\"kv_bytes_mean\"]:.0f} '
          f'saved {t[\"kv_bytes_saved_mean\"]:.0f}', file=sys.stderr)
assert r['prompt_tokens'] == sum(t['prompt_tokens_mean'] for t in turns) * $C
assert 'cluster' in r
"
done

# The text report of multi-turn has its per-turn table and the router's counters.
checks=$((checks + 1))
if timeout 120 "$KVCTL" bench --router "$EP" --workload multi-turn --conversations 2 --turns 3 --concurrency 2 \
    --prompt-len 4 --max-tokens 4 --status-after >"$tmp/text.out" 2>"$tmp/text.err"; then
    if ! grep -q "^per turn" "$tmp/text.out" || ! grep -q "^prefix cache:" "$tmp/text.out" ||
        ! grep -q "^router counters" "$tmp/text.out" || ! grep -q "2 conversations x 3 turns" "$tmp/text.out"; then
        fail "multi-turn text report: $(cat "$tmp/text.out")"
    fi
else
    fail "multi-turn text report exit status: $(cat "$tmp/text.out" "$tmp/text.err")"
fi

# Flags that do not fit the workload: usage errors (2), nothing sent.
bad_flags() {
    checks=$((checks + 1))
    timeout 10 "$KVCTL" bench --router "$EP" "$@" >/dev/null 2>"$tmp/bad.err"
    local rc=$?
    [[ $rc == 2 ]] || fail "kvctl bench $* exited $rc, want 2: $(cat "$tmp/bad.err")"
}
bad_flags --workload multi-turn --requests 4 --concurrency 1 --prompt-len 4 --max-tokens 4
bad_flags --workload multi-turn --conversations 2 --concurrency 1 --prompt-len 4 --max-tokens 4
bad_flags --workload shared-prefix --requests 4 --concurrency 1 --prompt-len 4 --max-tokens 4
bad_flags --workload random --prefix-len 4 --requests 4 --concurrency 1 --prompt-len 4 --max-tokens 4
bad_flags --workload random --turns 2 --requests 4 --concurrency 1 --prompt-len 4 --max-tokens 4
bad_flags --workload nonsense --requests 4 --concurrency 1 --prompt-len 4 --max-tokens 4
bad_flags --workload multi-turn --conversations 2 --turns 10000 --concurrency 1 --prompt-len 16777216 --max-tokens 4

if [[ $fails -ne 0 ]]; then
    echo "---- kvctl up stderr ----" >&2
    tail -n 40 "$tmp/up.err" >&2
fi
echo "$checks checks, $fails failed" >&2
[[ $fails -eq 0 ]]
