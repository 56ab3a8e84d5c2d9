#!/usr/bin/env bash
# Issue 13 item 4, client liveness, with real processes (kv-router --client-timeout 800,
# prefill-0, decode-0; tests/test_liveness_client.c is the client). To hold a request in
# flight as long as the test needs, prefill-0 is stopped (SIGSTOP): the request then sits
# "prefilling" with its blocks reserved on decode-0 until prefill-0 continues.
#  1. a client killed with kill -9 while its request holds decode-0's blocks: the router
#     cancels the request within the timeout (event=client_timeout, metrics "abort") and
#     decode-0's blocks are all free again (kvctl status);
#  1b. mid-stream: the client stops decode-0 (SIGSTOP) on its first tokens and is killed
#     with -9; the router cancels the request (state decoding) within the timeout, and once
#     decode-0 continues it drops the request (Abort) instead of running it to max_tokens,
#     its blocks all free again;
#  2. a slow but alive client (sleeping between reads, heartbeating) is not cancelled
#     across three timeouts: its request completes with all its tokens;
#  3. the same client without heartbeats is cancelled (the test can fail);
#  4. the cluster still serves the reference text afterwards.
# usage: test_liveness.sh BUILD_BIN_DIR [MODELS_DIR]
set -uo pipefail
bin="$1"
# shellcheck source=kv_secure_cluster.sh
source "$(dirname "$0")/kv_secure_cluster.sh"
kv_need_stories "${2:-}"
command -v python3 >/dev/null || { echo "SKIP: no python3 to read kvctl status --json"; exit 77; }
# Short, so that prefill-0 is never stopped for 5 s: the router's ZMTP heartbeat would then
# drop its control connection and the PrefillTask with it.
timeout_ms=800
kv_test_tmp liveness
client="$bin/test_liveness_client"

# No keys: an insecure cluster.
kv_1p1d_start "$tmp" --client-timeout "$timeout_ms" --local-prefill-max 0 --worker-timeout-ms 60000 \
  --prefill-deadline-ms 60000 || { fail "workers did not register"; exit 1; }
gen() { timeout 30 "$bin/kvctl" generate --router "$cep" --max-tokens 24 "Once upon a time" 2>/dev/null; }
ref=$(gen)
[[ -n $ref ]] && pass "greedy request served" || fail "no text from the cluster"

# "<requests in flight> <decode-0's used blocks> <finished abort>" from kvctl status --json.
state() {
  "$bin/kvctl" status --router "$cep" --json --timeout-ms 1000 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
d = [w for w in s["workers"] if w["worker_id"] == "decode-0"]
print(len(s["requests"]), d[0]["kv_blocks_used"] if d else -1, s.get("metrics", {}).get("finished", {}).get("abort", -1))'
}
# Waits up to $2 tenths of a second for state() to print $1.
wait_state() {
  local got
  for _ in $(seq "$2"); do
    got=$(state)
    [[ $got == "$1" ]] && return 0
    sleep 0.1
  done
  echo "state: '$got', wanted '$1'" >&2
  return 1
}
aborts() { state | awk '{print $3}'; }
# Starts the client in the background (args: its flags) and waits for its "submitted".
start_client() {
  "$client" "$cep" "$@" >"$tmp/client.out" 2>"$tmp/client.err" &
  client_pid=$!
  for _ in $(seq 100); do grep -q submitted "$tmp/client.out" && return 0; sleep 0.05; done
  fail "client did not submit: $(cat "$tmp/client.err")"
  return 1
}
# Waits until the request holds blocks on decode-0 (its heartbeat shows them).
wait_held() {
  for _ in $(seq 60); do
    read -r n used _ <<<"$(state)"
    [[ $n == 1 && $used -gt 0 ]] && return 0
    sleep 0.1
  done
  return 1
}

# ---- 1. kill -9 of a client whose request holds blocks
a0=$(aborts)
kill -STOP "$p0_pid"
start_client --max-tokens 16 --heartbeat-ms 200 # well under the router's timeout, as 1000 is under 10000
wait_held && pass "request in flight, blocks held on decode-0" || fail "request never held blocks: $(state)"
kill -0 "$client_pid" 2>/dev/null || fail "client gone before the kill: $(cat "$tmp/client.out" "$tmp/client.err")"
kill -KILL "$client_pid"
wait "$client_pid" 2>/dev/null
t0=$(date +%s%N)
# Cancelled within the timeout (plus the status heartbeat's lag): no request, no block used.
if wait_state "0 0 $((a0 + 1))" $(((timeout_ms + 3000) / 100)); then
  pass "killed client's request cancelled in $((($(date +%s%N) - t0) / 1000000)) ms, blocks freed, counted abort"
else
  fail "killed client's request not cancelled and freed"
fi
grep -q 'event=client_timeout' "$tmp/router.log" && pass "client timeout logged" || fail "no event=client_timeout line"
kill -CONT "$p0_pid"
sleep 0.5 # prefill-0 takes its Abort and heartbeats before it is stopped again

# ---- 1b. kill -9 mid-stream (decode-0 stopped on the first tokens, never 5 s: see above)
a0=$(aborts)
start_client --max-tokens 400 --heartbeat-ms 200 --stop-on-first "$d0_pid"
for _ in $(seq 100); do grep -q first "$tmp/client.out" && break; sleep 0.02; done
grep -q first "$tmp/client.out" || fail "mid-stream client saw no tokens: $(cat "$tmp/client.out" "$tmp/client.err")"
kill -KILL "$client_pid"
wait "$client_pid" 2>/dev/null
for _ in $(seq $(((timeout_ms + 1500) / 100))); do read -r n _ ab <<<"$(state)"; [[ $n == 0 ]] && break; sleep 0.1; done
[[ $n == 0 && $ab == $((a0 + 1)) ]] && pass "mid-stream: killed client's request cancelled, counted abort" ||
  fail "mid-stream: request not cancelled ($n in flight, abort $ab)"
grep -q 'event=client_timeout' "$tmp/router.log" && grep -q 'event=request_done .*state=decoding .*finish=cancelled' \
  "$tmp/router.log" && pass "mid-stream: cancelled while decoding" || fail "mid-stream: no cancel in state decoding"
kill -CONT "$d0_pid"
wait_state "0 0 $((a0 + 1))" 50 && pass "mid-stream: decode-0's blocks all free" || fail "mid-stream: blocks not freed"
grep -q 'request dropped.*why="CANCELLED" state=running tokens=[1-9]' "$tmp/d0.log" &&
  ! grep -q 'request finished.*tokens=400' "$tmp/d0.log" && pass "mid-stream: decode-0 dropped it (not run to max_tokens)" ||
  fail "mid-stream: decode-0 did not drop the request: $(grep -E 'dropped|finished' "$tmp/d0.log" | tail -2)"

# ---- 2. a slow client that heartbeats lives through three timeouts
kill -STOP "$p0_pid"
start_client --max-tokens 16 --heartbeat-ms 300 --sleep-ms 200 --run-ms 30000
wait_held || fail "slow client's request never held blocks: $(state)"
sleep "$(awk "BEGIN {print 3 * $timeout_ms / 1000 + 0.2}")"
read -r n _ <<<"$(state)"
[[ $n == 1 ]] && kill -0 "$client_pid" 2>/dev/null && pass "slow heartbeating client not cancelled" ||
  fail "slow heartbeating client's request gone after $((3 * timeout_ms)) ms: $(cat "$tmp/client.out")"
kill -CONT "$p0_pid"
wait "$client_pid"
rc=$?
[[ $rc == 0 ]] && grep -q 'finish=length tokens=16' "$tmp/client.out" && pass "slow client's request completed" ||
  fail "slow client: exit $rc: $(cat "$tmp/client.out" "$tmp/client.err")"

# ---- 3. the same client without heartbeats is timed out
kill -STOP "$p0_pid"
start_client --max-tokens 16 --heartbeat-ms 0 --sleep-ms 200 --run-ms 20000
wait "$client_pid"
rc=$?
[[ $rc == 4 ]] && grep -q 'finish=cancelled' "$tmp/client.out" && pass "silent client cancelled" ||
  fail "silent client: exit $rc: $(cat "$tmp/client.out" "$tmp/client.err")"
kill -CONT "$p0_pid"
wait_state "0 0 $(aborts)" 50 || fail "blocks not free after the silent client"

# ---- 4. still serving
got=$(gen)
[[ $got == "$ref" ]] && pass "served identically afterwards" || fail "text changed: '$got' vs '$ref'"

kv_finish test_liveness
