#!/usr/bin/env bash
# `kvctl up` end to end: a 1P1D stories260K cluster on ephemeral ports; `kvctl generate
# --router` prints exactly what `kvctl generate --local` prints (greedy and seeded
# sampling); `kvctl status` (table and --json) and `kvctl bench` work against it; a
# decode worker killed with SIGKILL is restarted and the cluster serves again; SIGTERM
# stops everything and exits 0.
# usage: test_kvctl_up.sh BIN_DIR MODELS_DIR
set -u
BIN=${1:?BIN_DIR}
MODELS=${KVSERVE_TEST_MODELS:-${2:?MODELS_DIR}}
KVCTL="$BIN/kvctl"
M=$MODELS/stories260K
[[ -f $M/config.json ]] || { echo "SKIP: $M not found" >&2; exit 77; }
# shellcheck source=kv_cluster.sh
source "$(dirname "$0")/kv_cluster.sh"
kv_need_bins "$BIN" kv-router kv-prefill kv-decode

tmp=$(mktemp -d /tmp/kvctl-up-test-XXXXXX)
trap kv_cleanup EXIT

check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    checks=$((checks + 1))
    "$@" || fail "$what"
}

kv_up_start "$KVCTL" "$tmp" --model "$M" --port 0 --threads 1 || exit 1
echo "cluster at $EP" >&2

same_as_local() { # ARGS... : router and local outputs are identical
    timeout 30 "$KVCTL" generate --router "$EP" "$@" >"$tmp/r.out" 2>"$tmp/r.err" || { cat "$tmp/r.err" >&2; return 1; }
    timeout 30 "$KVCTL" generate --local --model "$M" --threads 1 "$@" >"$tmp/l.out" 2>"$tmp/l.err" || { cat "$tmp/l.err" >&2; return 1; }
    if ! cmp -s "$tmp/r.out" "$tmp/l.out"; then
        echo "router: $(cat "$tmp/r.out")" >&2
        echo "local:  $(cat "$tmp/l.out")" >&2
        return 1
    fi
    grep -q "generated_tokens=" "$tmp/r.err" && grep -q "transfer_ms=" "$tmp/r.err"
}
check "generate --router == --local (greedy)" same_as_local --max-tokens 60 "Once upon a time"
check "generate --router == --local (sampled)" same_as_local --max-tokens 40 --temperature 0.9 --top-k 50 --top-p 0.95 --seed 42 "Lily went to the park"
checks=$((checks + 1))
timeout 30 "$KVCTL" generate --router "$EP" --model "$M" --max-tokens 4 "Hi" >/dev/null 2>&1 || fail "generate --router --model NAME"
checks=$((checks + 1))
if timeout 30 "$KVCTL" generate --router "$EP" --model /x/other-model --max-tokens 4 "Hi" >/dev/null 2>"$tmp/e.err"; then
    fail "generate with an unknown model succeeded"
elif ! grep -q "UNKNOWN_MODEL" "$tmp/e.err"; then
    fail "unknown model: $(cat "$tmp/e.err")"
fi

status_json=$(timeout 10 "$KVCTL" status --router "$EP" --json) || fail "status --json exit status $?"
checks=$((checks + 1))
if [[ $(grep -o '"healthy":true' <<<"$status_json" | wc -l) -ne 2 ]] || ! grep -q '"requests":\[\]' <<<"$status_json" ||
    ! grep -q '"worker_id":"decode-0"' <<<"$status_json"; then
    fail "status --json: $status_json"
fi
status_table=$(timeout 10 "$KVCTL" status --router "$EP") || fail "status exit status $?"
checks=$((checks + 1))
grep -qE "^prefill +prefill-0 " <<<"$status_table" && grep -qE "^decode +decode-0 " <<<"$status_table" ||
    fail "status table: $status_table"

bench=$(timeout 60 "$KVCTL" bench --router "$EP" --requests 16 --concurrency 4 --prompt-len 24 --max-tokens 12 --json 2>"$tmp/bench.err") ||
    fail "bench exit status $?"
checks=$((checks + 1))
grep -q '"ok":16,"failed":0' <<<"$bench" && grep -q '"output_tokens":192' <<<"$bench" || fail "bench: $bench $(cat "$tmp/bench.err")"
bench=$(timeout 60 "$KVCTL" bench --router "$EP" --requests 10 --rate 50 --prompt-len 8 --max-tokens 4 2>"$tmp/bench.err") ||
    fail "bench --rate exit status $?"
checks=$((checks + 1))
grep -q "10 ok, 0 failed" <<<"$bench" && grep -q "tpot_ms" <<<"$bench" || fail "bench --rate: $bench"

# Crash a decode worker: kvctl up restarts it and the cluster serves again.
DEC=$(pgrep -P "$UP_PID" -x kv-decode | head -1)
checks=$((checks + 1))
if [[ -z $DEC ]]; then
    fail "no kv-decode child of kvctl up"
else
    kill -KILL "$DEC"
    ok=
    for _ in $(seq 40); do
        sleep 0.5
        NEW=$(pgrep -P "$UP_PID" -x kv-decode | head -1)
        [[ -n $NEW && $NEW != "$DEC" ]] || continue
        if timeout 10 "$KVCTL" generate --router "$EP" --max-tokens 8 "Once upon a time" >/dev/null 2>&1; then
            ok=1
            break
        fi
    done
    [[ -n $ok ]] || fail "the cluster did not recover from a decode worker crash within 20 s"
    checks=$((checks + 1))
    grep -q "decode-0 killed by signal 9" "$tmp/up.err" && grep -q "restarting" "$tmp/up.err" || fail "no restart logged"
fi

# Stop: SIGTERM -> every child gone, exit 0.
CHILDREN=$(pgrep -P "$UP_PID")
kill -TERM "$UP_PID"
rc=
for _ in $(seq 100); do
    if ! kill -0 "$UP_PID" 2>/dev/null; then
        wait "$UP_PID"
        rc=$?
        break
    fi
    sleep 0.1
done
checks=$((checks + 1))
[[ $rc == 0 ]] || fail "kvctl up exit status '$rc' after SIGTERM (want 0 within 10 s)"
for c in $CHILDREN; do
    checks=$((checks + 1))
    if kill -0 "$c" 2>/dev/null; then fail "child $c still alive after kvctl up exited"; fi
done
UP_PID=

if [[ $fails -ne 0 ]]; then
    echo "---- kvctl up stderr ----" >&2
    tail -n 60 "$tmp/up.err" >&2
fi
echo "$checks checks, $fails failed" >&2
[[ $fails -eq 0 ]]
