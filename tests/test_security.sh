#!/usr/bin/env bash
# Issue 13, CURVE on every socket, with real processes (a router, prefill-0 and decode-0
# under keys from `kvctl keys gen`; tests/test_security_probe.c is the impostor):
#  1. key files: kvctl keys gen writes NAME.key 0600 + NAME.pub, never overwrites; a secret
#     key readable by group/others is refused by kv-router, kv-decode and a client, with
#     the file and its mode in the error.
#  2. each socket refuses a plain (unauthenticated) peer and an unknown key, and admits a
#     listed one: the router's client endpoint, its control endpoint, decode-0's KV socket
#     (the refusals logged with the key's first characters).
#  3. the issue's repros: the impostor on the KV port under id prefill-0 and a second
#     kv-decode --id decode-0 (no key, and with another worker's valid key) stall and evict
#     nothing: greedy text identical before and after, decode-0 healthy, served.
#  4. a stolen id: a Register of decode-0 from another listed key is refused (bound to
#     decode-0's key); after decode-0 is killed, kv-decode --id decode-0 with another key is
#     refused and exits 1; the real decode-0 restarted with its key registers again.
# usage: test_security.sh BUILD_BIN_DIR [MODELS_DIR]
set -uo pipefail
bin="$1"
# shellcheck source=kv_secure_cluster.sh
source "$(dirname "$0")/kv_secure_cluster.sh"
kv_need_stories "${2:-}"
kv_test_tmp security
probe="$bin/test_security_probe"

# ---- 1. key files
kv_keys_gen
"$bin/kvctl" keys gen --out "$k" --name rogue >/dev/null || fail "keys gen rogue"
[[ $(stat -c %a "$k/router.key") == 600 && $(stat -c %a "$k/router.pub") == 644 ]] && pass "key modes 600/644" ||
  fail "key file modes $(stat -c %a "$k/router.key") $(stat -c %a "$k/router.pub")"
[[ $(wc -c <"$k/router.pub") == 41 ]] || fail "router.pub is not one Z85 line"
before=$(cat "$k/router.key")
if "$bin/kvctl" keys gen --out "$k" --name router >/dev/null 2>&1 || [[ $(cat "$k/router.key") != "$before" ]]; then
  fail "keys gen overwrote an existing key"
else pass "keys gen refuses to overwrite"; fi
cp "$k/router.key" "$tmp/open.key" && chmod 644 "$tmp/open.key"
out=$("$bin/kv-router" --model "$model" --listen tcp://127.0.0.1:0 --control tcp://127.0.0.1:0 --key "$tmp/open.key" \
      --worker-keys "$k/workers" --client-keys "$k/clients" 2>&1)
[[ $? != 0 && $out == *"$tmp/open.key"*"mode 0644"* ]] && pass "router refuses a 0644 key" || fail "router took a 0644 key: $out"
cp "$k/workers/decode-0.key" "$tmp/open-d.key" && chmod 640 "$tmp/open-d.key"
out=$(timeout 20 "$bin/kv-decode" --model "$model" --router tcp://127.0.0.1:1 --threads 1 --key "$tmp/open-d.key" \
      --router-key "$k/router.pub" --worker-keys "$k/workers" 2>&1)
[[ $? == 1 && $out == *"mode 0640"* ]] && pass "kv-decode refuses a 0640 key" || fail "kv-decode took a 0640 key: $out"
cp "$k/clients/client.key" "$tmp/open-c.key" && chmod 604 "$tmp/open-c.key"
out=$(KVSERVE_CLIENT_KEY="$tmp/open-c.key" "$bin/kvctl" status --router tcp://127.0.0.1:1 --timeout-ms 500 2>&1)
[[ $? != 0 && $out == *"open-c.key"*"mode 0604"* ]] && pass "client refuses a 0604 key" || fail "client took a 0604 key: $out"

# ---- the cluster
kv_curve=1
kv_1p1d_start "$tmp" || { fail "router, prefill-0, decode-0 did not come up under CURVE"; exit 1; }
export KVSERVE_CLIENT_KEY="$k/clients/client.key"
pass "router, prefill-0, decode-0 up under CURVE"
gen() { timeout 30 "$bin/kvctl" generate --router "$cep" --max-tokens 24 --deadline-ms 20000 "Once upon a time" 2>/dev/null; }
ref=$(gen)
[[ -n $ref ]] && pass "greedy request served (KV over CURVE)" || fail "no text from the secured cluster"

# ---- 2. every socket: plain and unknown keys refused, a listed key admitted
expect() { # want(0|3) what probe-args...
  local want=$1 what=$2
  shift 2
  "$probe" "$@" --wait-ms 1500 >/dev/null 2>&1
  local rc=$?
  [[ $rc == "$want" ]] && pass "$what" || fail "$what: probe exit $rc, wanted $want"
}
expect 3 "client endpoint: plain client refused" "$cep" --msg status
expect 3 "client endpoint: unknown key refused" "$cep" --msg status --key "$k/rogue.key" --server-key "$k/router.pub"
expect 3 "client endpoint: a worker's key is not a client's" "$cep" --msg status --key "$k/workers/prefill-0.key" \
  --server-key "$k/router.pub"
expect 0 "client endpoint: listed client admitted" "$cep" --msg status --key "$k/clients/client.key" \
  --server-key "$k/router.pub"
expect 3 "control endpoint: plain worker refused" "$kep" --msg register --id probe-w
expect 3 "control endpoint: unknown key refused" "$kep" --msg register --id probe-w --key "$k/rogue.key" \
  --server-key "$k/router.pub"
grep -q 'event=auth_refused domain=kvserve-client .*key=' "$tmp/router.log" && pass "client refusal logged with key prefix" ||
  fail "no auth_refused line for the client endpoint"
grep -q 'event=auth_refused domain=kvserve-control .*reason="worker key not in --worker-keys"' "$tmp/router.log" &&
  pass "worker refusal logged" || fail "no auth_refused line for the control endpoint"
kv=$("$bin/kvctl" status --router "$cep" | awk '$1 == "decode" && $2 == "decode-0" {print $3}')
[[ $kv == tcp://* ]] || fail "no KV endpoint for decode-0 in the status ($kv)"
# The issue's first repro: a DEALER under prefill-0's id on the KV port, plain and with an unknown key.
expect 3 "KV socket: plain impostor as prefill-0 refused" "$kv" --msg kvchunk --id prefill-0
expect 3 "KV socket: unknown key refused" "$kv" --msg kvchunk --id prefill-0 --key "$k/rogue.key" \
  --server-key "$k/workers/decode-0.pub"
expect 0 "KV socket: listed worker key admitted (answered)" "$kv" --msg kvchunk --id probe-kv \
  --key "$k/workers/prefill-0.key" --server-key "$k/workers/decode-0.pub"
grep -q 'event=auth_refused domain=kvserve-kv' "$tmp/d0.log" && pass "KV refusal logged" || fail "no KV auth_refused line"

# ---- 3. the second repro: another kv-decode --id decode-0, plain and with prefill-0's valid key
timeout 4 "$bin/kv-decode" --model "$model" --router "$kep" --id decode-0 --threads 1 >"$tmp/imp-plain.log" 2>&1
timeout 4 "$bin/kv-decode" --model "$model" --router "$kep" --id decode-0 --threads 1 --key "$k/workers/prefill-0.key" \
  --router-key "$k/router.pub" --worker-keys "$k/workers" >"$tmp/imp-key.log" 2>&1
grep -q 'worker registered' "$tmp/imp-plain.log" "$tmp/imp-key.log" && fail "an impostor decode-0 registered"
kv_healthy decode-0 && pass "decode-0 still registered and healthy after the impostors" || fail "decode-0 evicted"
got=$(gen)
[[ $got == "$ref" ]] && pass "served identically after the impostors" || fail "text changed: '$got' vs '$ref'"

# ---- 4. a stolen id
# Under decode-0's own routing id ZeroMQ drops the connection (the id is in use, no handover).
expect 3 "control endpoint: a listed key under decode-0's routing id gets nothing" "$kep" --msg register \
  --id decode-0 --key "$k/workers/prefill-0.key" --server-key "$k/router.pub"
# Under another routing id, a Register naming decode-0: refused by the key binding.
expect 0 "control endpoint: Register of decode-0 from another key answered" "$kep" --msg register --id probe-r \
  --claim decode-0 --key "$k/workers/prefill-0.key" --server-key "$k/router.pub"
grep -q 'event=worker_refused worker=decode-0 key=.*bound to another key' "$tmp/router.log" &&
  pass "Register of a bound id from another key refused and logged" || fail "no worker_refused line"
kv_healthy decode-0 || fail "decode-0 lost after a refused Register"
kill -KILL "$d0_pid"
wait "$d0_pid" 2>/dev/null
for _ in $(seq 100); do kv_healthy decode-0 || break; sleep 0.1; done
out=$(timeout 30 "$bin/kv-decode" --model "$model" --router "$kep" --id decode-0 --threads 1 \
      --key "$k/workers/prefill-0.key" --router-key "$k/router.pub" --worker-keys "$k/workers" 2>&1)
rc=$?
[[ $rc == 1 && $out == *"bound to another key"* ]] && pass "stolen id decode-0 with another key refused" ||
  fail "stolen id: exit $rc: $(echo "$out" | tail -2)"
kv_worker_start decode decode-0 "$tmp/d0.log"
kv_wait_healthy decode-0 && pass "the real decode-0 re-registers with its key" || fail "decode-0 did not come back"
got=$(gen)
[[ $got == "$ref" ]] && pass "served identically by the restarted decode-0" || fail "text changed after restart"

kv_finish test_security
