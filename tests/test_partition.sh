#!/usr/bin/env bash
# shellcheck disable=SC2154 # model: set by kv_need_stories (kv_secure_cluster.sh)
# Issue 13 acceptance, "partitions, not just crashes": the router (r), prefill workers (p, p2)
# and decode workers (d1, d2) run as separate hosts, each in its own network namespace,
# joined by veth pairs to two bridges in a switch namespace: the control net 10.77.0.0/24
# (router <-> workers) and the KV net 10.77.1.0/24 (prefill -> decode), so a KV link can be
# shaped without touching control traffic. A link is cut by setting the switch side of a
# host's veths down (packets vanish, no connection is reset) and healed by setting it up.
# The client (test_partition_client) runs beside the router in r and checks every stream's
# token indices (none twice, none skipped). Each scenario starts a fresh cluster, runs a
# reference of its prompts without faults first, and ends with every worker registered,
# every block free and nothing in flight (kvctl status --json). Every wait has a timeout.
#  1. d1's links cut while 8 greedy streams run over d1 and d2 (the decode workers are slowed
#     by a SIGSTOP/SIGCONT duty cycle so that 200 tokens take seconds): d1 is declared dead,
#     its requests re-planned onto d2, the streams identical to the reference; d1's links
#     healed: it re-registers, what it still ran is aborted, its blocks all free, each
#     request done once (router log) and no late token reaches the client.
#  2. p's links cut while it ships long prompts' KV over a slowed KV link, p2 beside it:
#     every request re-planned (identical) or failed with a named error, none hung; p
#     rejoins when healed, its blocks and d1's all free.
#  3. the KV links of p: delay and loss (netem delay 50ms loss 5%; where the kernel has no
#     sch_netem, a tbf rate limit with a short queue: queueing delay and tail drops): all
#     identical; then a delay beyond the router's --ack-deadline-ms: deadlines fire, each
#     request ends identical or with DEADLINE_EXCEEDED, nothing hangs, blocks free, and the
#     cluster serves identically once the link is clean.
# Prints what it measured ("measured: ...": re-plan and rejoin times).
# Skips (77) without the rights to make namespaces (CAP_SYS_ADMIN + CAP_NET_ADMIN), without
# veth or bridge support, or without the stories260K model. The namespaces (kvpt<pid>-*)
# are deleted on exit; ones left by a run killed with -9 are deleted by the next run.
# usage: test_partition.sh BUILD_BIN_DIR [MODELS_DIR]
set -uo pipefail
bin="$1"
# shellcheck source=kv_secure_cluster.sh
source "$(dirname "$0")/kv_secure_cluster.sh"
kv_need_stories "${2:-}"
skip() { echo "SKIP: $*"; exit 77; }
command -v ip >/dev/null || skip "no ip command (iproute2)"
command -v tc >/dev/null || skip "no tc command (iproute2)"
command -v python3 >/dev/null || skip "no python3 to read kvctl status --json"

pfx="kvpt$$"
hosts=(r p p2 d1 d2)
declare -A addr=([r]=1 [p]=2 [d1]=3 [d2]=4 [p2]=5)
declare -A wpid=()
throttle_pid=
client_pid=

# Foreground only: started in the background, a function is a subshell, so $! would not be
# the process's pid; background starts call ip netns exec (which execs) directly.
in_ns() { local h=$1; shift; ip netns exec "$pfx-$h" "$@"; }
now_ms() { date +%s%3N; }

# Processes first (a namespace outlives its name while a process runs in it), then names.
net_delete() {
  local n p
  for n in "$@"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$n" 2>/dev/null
  done
}

# Namespaces of earlier runs whose test process is gone (killed with -9).
net_delete_stale() {
  local n p
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^kvpt[0-9]+-'); do
    p=${n#kvpt}
    p=${p%%-*}
    kill -0 "$p" 2>/dev/null || net_delete "$n"
  done
}

stop_pid() {
  local p=$1
  kill -CONT "$p" 2>/dev/null
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null; return 0; }; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null
}

# The EXIT trap. A second signal (timeout and ctest send more than one) must not cut it
# short; every process of the test but the throttle runs in a namespace and dies with it.
cleanup() {
  trap '' INT TERM HUP
  [[ -n $throttle_pid ]] && stop_pid "$throttle_pid"
  net_delete "$pfx-sw" "${hosts[@]/#/$pfx-}"
  [[ -n ${KEEP_TMP:-} || -z ${tmp:-} ]] || rm -rf "$tmp"
}

net_delete_stale
ip netns add "$pfx-sw" 2>/dev/null || skip "cannot create network namespaces (needs CAP_SYS_ADMIN and CAP_NET_ADMIN)"
kv_test_tmp partition
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

sw="ip -n $pfx-sw"
if ! err=$($sw link add brc type bridge 2>&1 && $sw link add brk type bridge 2>&1 &&
  $sw link add vprobe type veth peer name vprobe2 2>&1 && $sw link del vprobe 2>&1); then
  skip "no bridge or veth links here: $err"
fi

# Host h joins net (c: control, k: KV) as 10.77.{0,1}.addr[h] on its interface ctl0 / kv0.
net_join() {
  local h=$1 net=$2 subnet=0 ifname=ctl0
  [[ $net == k ]] && subnet=1 ifname=kv0
  $sw link add "$net-$h" type veth peer name "$ifname" netns "$pfx-$h" &&
    $sw link set "$net-$h" master "br$net" up &&
    ip -n "$pfx-$h" addr add "10.77.$subnet.${addr[$h]}/24" dev "$ifname" &&
    ip -n "$pfx-$h" link set "$ifname" up
}

net_build() {
  local h
  $sw link set lo up && $sw link set brc up && $sw link set brk up || return 1
  for h in "${hosts[@]}"; do
    ip netns add "$pfx-$h" && ip -n "$pfx-$h" link set lo up && net_join "$h" c || return 1
    [[ $h == r ]] || net_join "$h" k || return 1
  done
}
net_build || { fail "could not build the test network"; kv_finish test_partition; }

link_cut() { $sw link set "c-$1" down && $sw link set "k-$1" down; }
link_heal() { $sw link set "c-$1" up && $sw link set "k-$1" up; }

# netem where the kernel has it; otherwise tbf stands in (see the header).
netem=0
in_ns r tc qdisc add dev lo root netem delay 1ms 2>/dev/null && netem=1
in_ns r tc qdisc del dev lo root 2>/dev/null
[[ $netem == 1 ]] || echo "note: no sch_netem in this kernel: tbf (rate limit, short queue) stands in for delay and loss"
shape_lossy() {
  if [[ $netem == 1 ]]; then
    in_ns "$1" tc qdisc add dev kv0 root netem delay 50ms loss 5%
  else
    in_ns "$1" tc qdisc add dev kv0 root tbf rate 8mbit burst 4kb limit 12kb
  fi
}
shape_slow() { # host, or host + rate: a KV link that takes seconds per prompt
  if [[ $netem == 1 && -z ${2:-} ]]; then
    in_ns "$1" tc qdisc add dev kv0 root netem delay 3s limit 100000
  else
    in_ns "$1" tc qdisc add dev kv0 root tbf rate "${2:-64kbit}" burst 4kb latency 60s
  fi
}
unshape() { in_ns "$1" tc qdisc del dev kv0 root 2>/dev/null; }
drops() { in_ns "$1" tc -s qdisc show dev kv0 | grep -o 'dropped [0-9]*' | head -1 | awk '{print $2}'; }

cep="tcp://10.77.0.1:7100"
kep="tcp://10.77.0.1:7101"
gen_flags=(--heartbeat-ms 200 --worker-timeout-ms 1500 --local-prefill-max 0 --route-policy load)

# A fresh cluster for a scenario in dir $1: the router with flags $3..., then the workers
# named in $2 (e.g. "p d1 d2"), all registered within 15 s.
cluster_start() {
  local dir=$1 h role
  read -ra ws <<<"$2"
  shift 2
  mkdir -p "$dir"
  ip netns exec "$pfx-r" "$bin/kv-router" --model "$model" --listen "$cep" --control "$kep" "${gen_flags[@]}" "$@" \
    >"$dir/router.log" 2>&1 &
  wpid[r]=$!
  for h in "${ws[@]}"; do
    role=decode
    [[ $h == p* ]] && role=prefill
    local kvl=()
    # Room for all 8 streams of scenario 1 on one decode worker.
    [[ $role == decode ]] && kvl=(--kv-listen "tcp://10.77.1.${addr[$h]}:7200" --kv-blocks 256)
    ip netns exec "$pfx-$h" "$bin/kv-$role" --model "$model" --router "$kep" --id "$h" --threads 1 --prefix-cache off \
      "${kvl[@]}" >"$dir/$h.log" 2>&1 &
    wpid[$h]=$!
  done
  for h in "${ws[@]}"; do
    wait_healthy "$h" 150 || { fail "$h did not register: $(tail -3 "$dir/$h.log")"; return 1; }
  done
}

cluster_stop() {
  local h
  for h in "${!wpid[@]}"; do stop_pid "${wpid[$h]}"; done
  wpid=()
}

healthy() { in_ns r "$bin/kvctl" status --router "$cep" --worker "$1" --timeout-ms 1000 >/dev/null 2>&1; }
wait_healthy() { # id, tenths of a second
  for _ in $(seq "$2"); do healthy "$1" && return 0; sleep 0.1; done
  return 1
}

# "ok" when the workers named in $1 are all registered and healthy, no other worker is, every
# block is free, nothing runs or waits; else what differs.
books() {
  in_ns r "$bin/kvctl" status --router "$cep" --json --timeout-ms 1000 2>/dev/null | python3 -c '
import json, sys
want = set(sys.argv[1].split())
try:
    s = json.load(sys.stdin)
except ValueError:
    print("no status"); sys.exit()
bad = []
ws = {w["worker_id"]: w for w in s["workers"]}
if set(ws) != want:
    bad.append("workers %s" % sorted(ws))
for i, w in sorted(ws.items()):
    if not w["healthy"] or w["kv_blocks_used"] or w["running"] or w["queued"]:
        bad.append("%s healthy=%s used=%d running=%d queued=%d" % (i, w["healthy"], w["kv_blocks_used"], w["running"], w["queued"]))
if s["requests"]:
    bad.append("requests %s" % [(r["request_id"], r["state"]) for r in s["requests"]])
print("; ".join(bad) or "ok")' "$1"
}
wait_books() { # workers, tenths of a second
  local got
  for _ in $(seq "$2"); do
    got=$(books "$1")
    [[ $got == ok ]] && return 0
    sleep 0.1
  done
  echo "$got"
  return 1
}

# The decode worker each request of a tag runs on now: "ID WORKER" lines.
owners() {
  in_ns r "$bin/kvctl" status --router "$cep" --json --timeout-ms 1000 2>/dev/null | python3 -c '
import json, sys
for r in json.load(sys.stdin)["requests"]:
    print(r["request_id"], r["decode_worker"] or "-")'
}

# Runs the client in r (args: its flags) in the background; its output in $dir/$tag.out.
client_start() { # dir tag flags...
  local dir=$1 tag=$2
  shift 2
  ip netns exec "$pfx-r" "$bin/test_partition_client" "$cep" --tag "$tag" --events "$dir/$tag.events" "$@" \
    >"$dir/$tag.out" 2>"$dir/$tag.err" &
  client_pid=$!
}
client_wait() { # seconds: the client's exit status (124: killed at the limit)
  for _ in $(seq $(($1 * 10))); do
    kill -0 "$client_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$client_pid" 2>/dev/null; then
    stop_pid "$client_pid"
    client_pid=
    return 124
  fi
  wait "$client_pid"
  local rc=$?
  client_pid=
  return $rc
}
# "N TOKEN-IDS" per stream that ended by length, from a client's output.
streams() { sed -n 's/^done id=[a-z0-9]*-\([0-9]*\) finish=length .* ids=/\1 /p' "$1" | sort -n; }
# Streams that ended otherwise: "N FINISH ERROR".
failed() { sed -n 's/^done id=[a-z0-9]*-\([0-9]*\) finish=\([a-z_]*\) error=\([A-Z_]*\).*/\1 \2 \3/p' "$1" | grep -v ' length ' ; }
# Waits up to $1 tenths of a second for an extended regex in file $2.
wait_line() {
  for _ in $(seq "$1"); do grep -qE "$3" "$2" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}
# Milliseconds since the epoch of the first log line matching $2 in file $1.
log_ms() {
  local ts
  ts=$(grep -m1 -E "$2" "$1" | sed -n 's/^ts=\([^ ]*\).*/\1/p')
  [[ -n $ts ]] && date -d "$ts" +%s%3N
}
# Slows the processes given ($2...) about $1 times (1: not at all): stopped, run a few ms,
# stopped again (a heartbeat goes out every 200 ms or so, well within the 1500 ms worker
# timeout), so that a few hundred tokens take seconds and a link can be cut mid-stream.
throttle_start() {
  local stop_ms=$((5 * ($1 - 1)))
  shift
  ((stop_ms > 0)) || return 0
  ((stop_ms < 100)) || stop_ms=100
  (
    trap 'kill -CONT "$@" 2>/dev/null; exit 0' TERM
    while kill -STOP "$@" 2>/dev/null; do
      sleep "0.$(printf %03d "$stop_ms")"
      kill -CONT "$@" 2>/dev/null
      sleep 0.003
    done
  ) &
  throttle_pid=$!
}
throttle_stop() {
  [[ -n $throttle_pid ]] && stop_pid "$throttle_pid"
  throttle_pid=
}

# ---- 1. a decode worker cut off mid-stream, then healed
s1() {
  local d="$tmp/s1" t_cut t_dead t_heal t_back on_d1 id n rc
  cluster_start "$d" "p d1 d2" || return
  local t0 slow
  t0=$(now_ms)
  client_start "$d" ref --streams 8 --max-tokens 250
  client_wait 30 || { fail "1: reference run: $(cat "$d/ref.out" "$d/ref.err")"; return; }
  # The streams should take about 3 s: a release build needs slowing, a sanitized one not.
  slow=$((3000 / ($(now_ms) - t0 + 1)))
  throttle_start "$slow" "${wpid[d1]}" "${wpid[d2]}"
  # --hold-file: the client keeps reading after its streams end, until the test is done
  # with d1's rejoin, so that any late token d1 sends then would reach it.
  client_start "$d" cut --streams 8 --max-tokens 250 --mark 20 --run-ms 40000 --hold-file "$d/hold"
  wait_line 300 "$d/cut.out" '^midstream' || fail "1: the streams never got going: $(cat "$d/cut.err")"
  on_d1=$(owners | awk '$2 == "d1" {print $1}')
  [[ -n $on_d1 ]] || fail "1: no request on d1 when it was cut: $(owners | tr '\n' ' ')"
  t_cut=$(now_ms)
  link_cut d1
  wait_line 200 "$d/router.log" 'event=worker_dead worker=d1' || fail "1: d1 never declared dead"
  t_dead=$(log_ms "$d/router.log" 'event=worker_dead worker=d1')
  for id in $on_d1; do
    grep -q "event=request_replanned id=$id " "$d/router.log" || fail "1: $id (on d1) not re-planned"
  done
  t_heal=$(now_ms)
  link_heal d1
  # Re-registered: its register line comes after the dead one.
  for _ in $(seq 100); do
    [[ $(grep -cE 'event=worker_register worker=d1 ' "$d/router.log") -ge 2 ]] && break
    sleep 0.05
  done
  t_back=$(sed -n '/event=worker_dead worker=d1/,$p' "$d/router.log" | grep -m1 'event=worker_register worker=d1 ' |
    sed -n 's/^ts=\([^ ]*\).*/\1/p')
  if [[ -n $t_back ]]; then
    echo "measured: 1: d1 healed at +0 ms: re-registered +$(($(date -d "$t_back" +%s%3N) - t_heal)) ms"
  else
    fail "1: d1 did not re-register within 5 s of the heal: $(tail -3 "$d/d1.log")"
  fi
  for _ in $(seq 400); do kill -0 "$client_pid" 2>/dev/null || break; grep -c '^done' "$d/cut.out" | grep -q '^8$' && break; sleep 0.1; done
  throttle_stop
  local b
  b=$(wait_books "p d1 d2" 100) && pass "1: after the heal: p, d1, d2 registered, every block free, nothing in flight" ||
    fail "1: after the heal: $b"
  sleep 0.5 # anything late from d1 reaches the client now
  touch "$d/hold"
  client_wait 10
  rc=$?
  # Resumed: the first token of each of d1's requests after it was declared dead (the
  # client's events file is complete once it exited).
  local resumed
  resumed=$(awk -v t="$t_dead" -v c="$t_cut" -v ids=" ${on_d1//$'\n'/ } " '$1 > t && index(ids, " " $2 " ") && !seen[$2]++ {
      if ($1 > m) m = $1 } END {print m ? m - c : "(none)"}' "$d/cut.events")
  echo "measured: 1: d1 cut at +0 ms: declared dead +$((t_dead - t_cut)) ms, its $(wc -w <<<"$on_d1") requests all streaming again by +$resumed ms (heartbeat 200 ms, worker timeout 1500 ms)"
  [[ $rc == 0 ]] && pass "1: 8 streams ended by length, each token index once" ||
    fail "1: client exit $rc: $(grep -v '^done' "$d/cut.out" | head -5) $(head -5 "$d/cut.err")"
  if diff <(streams "$d/ref.out") <(streams "$d/cut.out") >/dev/null && [[ $(streams "$d/ref.out" | wc -l) == 8 ]]; then
    pass "1: streams identical to the reference"
  else
    fail "1: streams differ from the reference: $(diff <(streams "$d/ref.out" | cut -c1-60) <(streams "$d/cut.out" | cut -c1-60) | head -6)"
  fi
  for n in $(seq 0 7); do
    [[ $(grep -c "event=request_done id=cut-$n " "$d/router.log") == 1 ]] || fail "1: cut-$n done $(grep -c "event=request_done id=cut-$n " "$d/router.log") times"
  done
  grep -q '^late' "$d/cut.out" && fail "1: tokens reached the client after their stream ended: $(grep '^late' "$d/cut.out" | head -3)"
  # What d1 did with the requests it lost: finished them alone during the cut, or dropped them.
  local fin drop
  fin=$(grep -c 'request finished.*request=cut-' "$d/d1.log")
  drop=$(grep -c 'request dropped.*request=cut-' "$d/d1.log")
  echo "note: 1: d1 alone: $fin of its cut-off requests finished during the cut, $drop dropped after the heal; router: $(grep -c 'event=request_replanned' "$d/router.log") re-plans, $(grep -c 'event=unknown_request' "$d/router.log") unknown-request messages, $(grep -c 'event=held_refused' "$d/router.log") held refused"
  cluster_stop
}

# Checks a client's streams against its reference ($1 ref output, $2 run output, $3 label,
# $4 the error codes a stream may end with instead, e.g. "DEADLINE_EXCEEDED"): every stream
# ended, those by length identical to the reference, the others only with those codes.
# Prints "<identical> <failed>".
compare() {
  local ref=$1 out=$2 what=$3 allowed=" ${4:-} " n fin code ok=0 bad=0
  grep -q '^unfinished' "$out" && fail "$what: streams never ended: $(grep '^unfinished' "$out" | tr '\n' ' ')"
  grep -q '^late' "$out" && fail "$what: late tokens: $(grep '^late' "$out" | head -3 | tr '\n' ' ')"
  grep -qE 'repeats=[1-9]|gaps=[1-9]' "$out" && fail "$what: a stream repeated or skipped an index"
  while read -r n fin code; do
    [[ $allowed == *" $code "* ]] || fail "$what: stream $n ended $fin $code"
    bad=$((bad + 1))
  done < <(failed "$out")
  ok=$(join <(streams "$ref") <(streams "$out") | awk '{if ($2 == $3) n++} END {print n + 0}')
  [[ $ok == $(streams "$out" | wc -l) ]] || fail "$what: $(($(streams "$out" | wc -l) - ok)) streams differ from the reference"
  echo "$ok $bad"
}

# ---- 2. a prefill worker cut off while its KV crosses a slow link; p2 beside it
s2() {
  local d="$tmp/s2" t_cut t_dead t_heal t_back r b
  cluster_start "$d" "p p2 d1" --ack-deadline-ms 6000 --prefill-deadline-ms 10000 || return
  client_start "$d" ref --streams 4 --prompt-len 400 --max-tokens 32
  client_wait 30 || { fail "2: reference run: $(cat "$d/ref.out" "$d/ref.err")"; return; }
  # 400 prompt tokens are 500 KiB of KV: 2 s on a 2 Mbit/s link.
  shape_slow p 2mbit || { fail "2: tc refused the shaping"; return; }
  client_start "$d" cut --streams 4 --prompt-len 400 --max-tokens 32 --run-ms 40000
  wait_line 200 "$d/p.log" 'task start.*request=cut-' || fail "2: p got no task"
  sleep 0.3 # its first chunk is on the wire now
  t_cut=$(now_ms)
  link_cut p
  wait_line 200 "$d/router.log" 'event=worker_dead worker=p ' || fail "2: p never declared dead"
  t_dead=$(log_ms "$d/router.log" 'event=worker_dead worker=p ')
  t_heal=$(now_ms)
  link_heal p
  client_wait 30
  r=$(compare "$d/ref.out" "$d/cut.out" 2 "DEADLINE_EXCEEDED WORKER_FAILED")
  read -r ok nfail <<<"$r"
  pass "2: p cut mid-transfer: $ok streams identical, $nfail failed with a named error, none hung"
  echo "measured: 2: p cut at +0 ms: declared dead +$((t_dead - t_cut)) ms; $(grep -c 'event=request_replanned.*worker p ' "$d/router.log") requests re-planned; last stream ended +$(($(sed -n 's/.*last_ms=\([0-9]*\).*/\1/p' "$d/cut.out" | sort -n | tail -1) - t_cut)) ms"
  for _ in $(seq 100); do [[ $(grep -c 'event=worker_register worker=p ' "$d/router.log") -ge 2 ]] && break; sleep 0.05; done
  t_back=$(sed -n '/event=worker_dead worker=p /,$p' "$d/router.log" | grep -m1 'event=worker_register worker=p ' | sed -n 's/^ts=\([^ ]*\).*/\1/p')
  [[ -n $t_back ]] && echo "measured: 2: p healed at +0 ms: re-registered +$(($(date -d "$t_back" +%s%3N) - t_heal)) ms" ||
    fail "2: p did not re-register within 5 s of the heal"
  # p's own end of the cut-off transfer: its blocks are free only once that task ended (by
  # the Abort the router sends a worker it declared gone, or by the KvAck deadline); its
  # first heartbeat after re-registering may not show them yet.
  wait_line 200 "$d/p.log" 'msg="task (failed|aborted|done)".*request=cut-' ||
    fail "2: p never ended the task it was cut off in: $(grep 'cut-' "$d/p.log" | tail -2)"
  b=$(wait_books "p p2 d1" 150) && pass "2: after the heal: p, p2, d1 registered, every block free, nothing in flight" ||
    fail "2: after the heal: $b"
  echo "note: 2: p's tasks after the heal: $(grep -oE 'msg="task (done|failed|aborted)"' "$d/p.log" | sort | uniq -c | tr '\n' ' ')(ref + cut runs); d1: $(grep -c 'request dropped' "$d/d1.log") dropped"
  unshape p
  cluster_stop
}

# ---- 3. delay and loss on the KV link, then a delay past the KvAck deadline
s3() {
  local d="$tmp/s3" r b ok nfail
  cluster_start "$d" "p d1 d2" --ack-deadline-ms 2500 --prefill-deadline-ms 6000 || return
  client_start "$d" ref --streams 8 --prompt-len 64 --max-tokens 48
  client_wait 30 || { fail "3: reference run: $(cat "$d/ref.out" "$d/ref.err")"; return; }
  shape_lossy p || { fail "3: tc refused the shaping"; return; }
  client_start "$d" lossy --streams 8 --prompt-len 64 --max-tokens 48 --run-ms 40000
  client_wait 45
  r=$(compare "$d/ref.out" "$d/lossy.out" 3a "")
  read -r ok nfail <<<"$r"
  [[ $ok == 8 ]] && pass "3a: KV link delayed and lossy: 8 streams identical" || fail "3a: $ok of 8 streams identical"
  echo "measured: 3a: $(drops p) packets dropped on p's KV link"
  unshape p
  # 64 prompt tokens are 80 KiB of KV: with netem 3 s late; with tbf at 64 kbit/s, 10 s.
  shape_slow p
  client_start "$d" slow --streams 2 --prompt-len 64 --max-tokens 48 --run-ms 30000
  client_wait 35
  r=$(compare "$d/ref.out" "$d/slow.out" 3b "DEADLINE_EXCEEDED")
  read -r ok nfail <<<"$r"
  [[ $nfail -ge 1 ]] && pass "3b: KV link too slow for the 2.5 s KvAck deadline: $nfail of 2 requests DEADLINE_EXCEEDED, $ok identical, none hung" ||
    fail "3b: no deadline fired ($ok identical)"
  grep -q 'DEADLINE_EXCEEDED' "$d/router.log" || fail "3b: no DEADLINE_EXCEEDED in the router's log"
  unshape p
  b=$(wait_books "p d1 d2" 150) && pass "3b: every block free, nothing in flight" || fail "3b: $b"
  client_start "$d" again --streams 8 --prompt-len 64 --max-tokens 48
  client_wait 30
  r=$(compare "$d/ref.out" "$d/again.out" 3c "")
  read -r ok nfail <<<"$r"
  [[ $ok == 8 ]] && pass "3c: link clean again: 8 streams identical" || fail "3c: $ok of 8 streams identical"
  cluster_stop
}

[[ ${KV_PARTITION_ONLY:-1} == 1 ]] && s1
[[ ${KV_PARTITION_ONLY:-2} == 2 ]] && s2
[[ ${KV_PARTITION_ONLY:-3} == 3 ]] && s3
kv_finish test_partition
