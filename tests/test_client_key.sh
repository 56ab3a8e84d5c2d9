#!/usr/bin/env bash
# Issue 13: `--key FILE` on kvctl generate|status|bench and kv-frontend overrides the key a
# client would otherwise use ($KVSERVE_CLIENT_KEY, then the client.key of the `kvctl up`
# cluster serving the endpoint). A CURVE cluster (router, prefill-0, decode-0) admits only
# clients/client.key; the overridden sources point at rogue.key, a well-formed client key
# the router does not list:
#  1. KVSERVE_CLIENT_KEY=rogue: status, generate, bench and kv-frontend's /health fail
#     without --key and work with --key clients/client.key (generate: the reference text);
#  2. no env, a kvctl-up-style run directory whose cluster serves the endpoint with rogue's
#     key: status fails without --key, works with it;
#  3. --key naming a missing file fails with the file's name (no silent fallback).
# usage: test_client_key.sh BUILD_BIN_DIR [MODELS_DIR]
set -uo pipefail
bin="$1"
# shellcheck source=kv_secure_cluster.sh
source "$(dirname "$0")/kv_secure_cluster.sh"
kv_need_stories "${2:-}"
kv_test_tmp client-key
kv_keys_gen
"$bin/kvctl" keys gen --out "$k" --name rogue --server-key "$k/router.pub" >/dev/null || fail "keys gen rogue"
good="$k/clients/client.key"
rogue="$k/rogue.key"

kv_curve=1
kv_1p1d_start "$tmp" || { fail "cluster did not come up under CURVE"; exit 1; }
status() { "$bin/kvctl" status --router "$cep" --timeout-ms 1500 "$@" >/dev/null 2>&1; }
gen() { timeout 30 "$bin/kvctl" generate --router "$cep" --max-tokens 16 --deadline-ms 10000 "$@" "Once upon a time" 2>/dev/null; }
ref=$(KVSERVE_CLIENT_KEY="$good" gen)
[[ -n $ref ]] && pass "KVSERVE_CLIENT_KEY=client.key served" || fail "no text with the listed key in the env"

# ---- 1. --key overrides KVSERVE_CLIENT_KEY
export KVSERVE_CLIENT_KEY="$rogue"
status && fail "status with the rogue key from the env got in" || pass "status: env rogue key refused"
status --key "$good" && pass "status: --key overrides the env" || fail "status --key failed"
got=$(timeout 10 "$bin/kvctl" generate --router "$cep" --max-tokens 16 --deadline-ms 3000 "Once upon a time" 2>/dev/null)
[[ -z $got ]] && pass "generate: env rogue key refused" || fail "generate with the rogue key produced text"
got=$(gen --key "$good")
[[ $got == "$ref" ]] && pass "generate: --key overrides the env (reference text)" || fail "generate --key: '$got'"
bench() { timeout 60 "$bin/kvctl" bench --router "$cep" --requests 2 --concurrency 1 --prompt-len 4 --max-tokens 4 "$@" \
  >"$tmp/bench.out" 2>&1; }
bench --key "$good" && pass "bench: --key overrides the env" || fail "bench --key: $(tail -3 "$tmp/bench.out")"
bench && fail "bench with the rogue key from the env succeeded" || pass "bench: env rogue key refused"
if command -v curl >/dev/null; then
  health() { # extra kv-frontend flags...; prints /health's HTTP status after the front end had time to ask
    rm -f "$tmp/fe.ready"
    "$bin/kv-frontend" --router "$cep" --model "$model" --port 0 --ready-file "$tmp/fe.ready" "$@" >>"$tmp/fe.log" 2>&1 &
    local fe=$! url code=000
    for _ in $(seq 100); do [[ -s $tmp/fe.ready ]] && break; sleep 0.1; done
    url=$(sed -n 's/^http=//p' "$tmp/fe.ready")
    for _ in $(seq 30); do
      code=$(curl -s -o /dev/null -w '%{http_code}' "$url/health")
      [[ $code == 200 ]] && break
      sleep 0.2
    done
    kill -TERM "$fe"
    wait "$fe" 2>/dev/null
    echo "$code"
  }
  code=$(health --key "$good")
  [[ $code == 200 ]] && pass "kv-frontend: --key overrides the env (/health 200)" || fail "kv-frontend --key: /health $code"
  code=$(health)
  [[ $code != 200 ]] && pass "kv-frontend: env rogue key refused (/health $code)" || fail "kv-frontend got in with the rogue key"
else
  echo "skip: no curl for kv-frontend's /health"
fi

# ---- 2. --key overrides the key of a kvctl up cluster serving the endpoint
unset KVSERVE_CLIENT_KEY
cl="$XDG_RUNTIME_DIR/kvserve/fake-cluster"
mkdir -p -m 700 "$XDG_RUNTIME_DIR/kvserve" "$cl"
cp "$rogue" "$cl/client.key"
chmod 600 "$cl/client.key"
echo "$cep" >"$cl/endpoint"
status && fail "status with the run directory's rogue key got in" || pass "status: run-directory rogue key refused"
status --key "$good" && pass "status: --key overrides the run directory" || fail "status --key with a run directory failed"

# ---- 3. a missing --key file is an error naming it
out=$("$bin/kvctl" status --router "$cep" --timeout-ms 500 --key "$tmp/nope.key" 2>&1)
[[ $? != 0 && $out == *nope.key* ]] && pass "missing --key file named in the error" || fail "missing --key: $out"

kv_finish test_client_key
