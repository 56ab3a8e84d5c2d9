#!/usr/bin/env bash
# Issue 13 item 2, no stall by a bad peer, with real processes: raw TCP clients (bash's
# /dev/tcp) connect to decode-0's KV port and
#   idle:     send nothing;
#   garbage:  send 64 KiB of random bytes;
#   half:     send half a ZMTP greeting (the 10-byte signature) and nothing more;
#   huge:     a whole ZMTP 3.0 greeting (NULL mechanism), READY as a DEALER, then a frame
#             header announcing 1 TiB;
# five of each at once, while greedy requests flow. Run without CURVE and with it. Checks:
#  - every request completes with the reference text (the router's KvAck deadline is cut to
#    3 s, so a stalled transfer would fail its request, not just slow it down);
#  - every bad connection is closed by decode-0 (idle and half ones by the KV socket's
#    handshake timeout), none held until the test's 25 s limit;
#  - decode-0 stays registered and healthy and serves identically afterwards.
# usage: test_kv_badpeer.sh BUILD_BIN_DIR [MODELS_DIR]
set -uo pipefail
bin="$1"
# shellcheck source=kv_secure_cluster.sh
source "$(dirname "$0")/kv_secure_cluster.sh"
kv_need_stories "${2:-}"
if [[ $( (exec 3<>/dev/tcp/127.0.0.1/1) 2>&1) != *refused* ]]; then
  echo "SKIP: this bash has no /dev/tcp"
  exit 77
fi
kv_test_tmp badpeer
kv_keys_gen

# One bad peer: connects to 127.0.0.1:$1, behaves as $2, then reads until decode-0 closes
# the connection; writes cat's exit status (124: still open after 25 s) to $3.
bad_peer() {
  local port=$1 kind=$2 out=$3
  trap '' PIPE
  exec 3<>"/dev/tcp/127.0.0.1/$port" || { echo connect-failed >"$out"; return; }
  case $kind in
  idle) ;;
  garbage) head -c 65536 /dev/urandom >&3 2>/dev/null ;;
  half) printf '\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f' >&3 ;;
  huge)
    # signature, version 3.0, mechanism "NULL" (20 bytes), as-server 0, filler (31 bytes)
    { printf '\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x03\x00NULL'
      head -c 16 /dev/zero; printf '\x00'; head -c 31 /dev/zero
      # READY command: Socket-Type = DEALER
      printf '\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER'
      # a long message frame of 2^40 bytes, and its first bytes
      printf '\x02\x00\x00\x01\x00\x00\x00\x00\x00'; head -c 4096 /dev/zero; } >&3 2>/dev/null ;;
  esac
  timeout 25 cat <&3 >/dev/null 2>&1
  echo $? >"$out"
}

run_cluster() { # secure(0|1)
  local tag
  kv_curve=$1
  tag=$([[ $kv_curve == 1 ]] && echo curve || echo plain)
  local d="$tmp/$tag"
  mkdir -p "$d"
  if [[ $kv_curve == 1 ]]; then
    export KVSERVE_CLIENT_KEY="$k/clients/client.key"
  else
    unset KVSERVE_CLIENT_KEY
  fi
  kv_1p1d_start "$d" --ack-deadline-ms 3000 || { fail "$tag: router or workers did not come up"; return; }
  gen() { timeout 30 "$bin/kvctl" generate --router "$cep" --max-tokens 24 --deadline-ms 20000 "$1" 2>>"$d/gen.err"; }
  local prompts=("Once upon a time" "The little dog" "One day, Lily" "Tom and Sue")
  local refs=() p
  for p in "${prompts[@]}"; do refs+=("$(gen "$p")"); done
  [[ -n ${refs[0]} ]] && pass "$tag: reference texts" || { fail "$tag: no reference text"; return; }
  local kv port
  kv=$("$bin/kvctl" status --router "$cep" | awk '$1 == "decode" && $2 == "decode-0" {print $3}')
  port=${kv##*:}
  [[ $kv == tcp://127.0.0.1:* && -n $port ]] || { fail "$tag: no KV endpoint for decode-0 ($kv)"; return; }

  local kind i peers=()
  for kind in idle garbage half huge; do
    for i in 1 2 3 4 5; do
      bad_peer "$port" "$kind" "$d/peer.$kind.$i" &
      peers+=($!)
    done
  done
  # Requests flow while the bad peers are connected (and after the idle ones time out).
  local round bad=0
  for round in 1 2 3; do
    for i in "${!prompts[@]}"; do
      got=$(gen "${prompts[$i]}")
      [[ $got == "${refs[$i]}" ]] || { bad=$((bad + 1)); echo "$tag round $round '${prompts[$i]}': '$got'" >&2; }
    done
    sleep 2
  done
  ((bad == 0)) && pass "$tag: 12 requests identical while 20 bad peers were connected" ||
    fail "$tag: $bad of 12 requests failed or differed ($(tail -3 "$d/gen.err" | tr '\n' ' '))"
  for p in "${peers[@]}"; do wait "$p"; done
  local open=0 f
  for f in "$d"/peer.*; do
    [[ $(cat "$f") == 124 ]] && { open=$((open + 1)); echo "$tag: $(basename "$f") still open after 25 s" >&2; }
    [[ $(cat "$f") == connect-failed ]] && fail "$tag: $(basename "$f") could not connect"
  done
  ((open == 0)) && pass "$tag: decode-0 closed all 20 bad connections" || fail "$tag: $open bad connection(s) held open"
  kv_healthy decode-0 && pass "$tag: decode-0 healthy" || fail "$tag: decode-0 not healthy after the bad peers"
  for i in "${!prompts[@]}"; do
    got=$(gen "${prompts[$i]}")
    [[ $got == "${refs[$i]}" ]] || fail "$tag: '${prompts[$i]}' differs afterwards"
  done
  pass "$tag: served identically afterwards"
  kill -TERM "$p0_pid" "$d0_pid" "$router_pid" 2>/dev/null
  wait "$p0_pid" "$d0_pid" "$router_pid" 2>/dev/null
}

run_cluster 0
run_cluster 1

kv_finish test_kv_badpeer
