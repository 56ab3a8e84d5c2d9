# Sourced by the shell tests that run kv-router, prefill-0 and decode-0 on stories260K as
# separate processes, under CURVE keys from `kvctl keys gen` or without (tests/kv_cluster.sh
# runs `kvctl up` instead). The test sets bin (the build's bin directory) first.
#   fail MSG, pass MSG               count a failure in fails / print an ok line
#   kv_need_stories [MODELS_DIR]     sets model (MODELS_DIR, else $KVSERVE_TEST_MODELS, then
#                                    stories260K); exits 77 with the reason when it is absent
#   kv_test_tmp NAME                 sets tmp (/tmp/kv-NAME-test-XXXXXX, kept when KEEP_TMP is
#                                    set) and the EXIT trap that stops every pid in pids; runs
#                                    the test in a private XDG_RUNTIME_DIR, no KVSERVE_CLIENT_KEY
#   kv_keys_gen                      sets k ($tmp/keys): router, workers/prefill-0,
#                                    workers/decode-0, clients/client (server key router.pub)
#   kv_router_start DIR [flags...]   kv-router on ephemeral ports, its log DIR/router.log; sets
#                                    router_pid, cep (client) and kep (control endpoint);
#                                    returns 1 after printing the log when not up within 10 s
#   kv_worker_start ROLE ID LOG [flags...]  kv-ROLE --id ID on kep, appending to LOG; sets
#                                    last_pid
#   kv_healthy ID [kvctl flags...]   whether the router reports worker ID healthy
#   kv_wait_healthy ID [kvctl flags...]  waits up to 15 s for that
#   kv_1p1d_start DIR [router flags...]  the router, prefill-0 (DIR/p0.log, p0_pid) and decode-0
#                                    (DIR/d0.log, d0_pid), both healthy; returns 1 after
#                                    printing the logs when they did not come up
#   kv_finish NAME                   the test's last line: "NAME: all passed", or exit 1
#                                    keeping tmp when a check failed
# With kv_curve=1 the router and each worker run under their keys from k (the wait in
# kv_1p1d_start uses clients/client.key); with 0 they run unauthenticated.
# The sourcing test reads the variables set here and sets bin:
# shellcheck shell=bash disable=SC2034,SC2154
fails=0
pids=()
kv_curve=0
k=
cep=
kep=

fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
pass() { echo "ok: $*"; }

kv_need_stories() {
    local models=${1:-${KVSERVE_TEST_MODELS:-}}
    model="$models/stories260K"
    if [[ -z $models || ! -f $model/config.json ]]; then
        echo "SKIP: the stories260K model is not there (set KVSERVE_TEST_MODELS)"
        exit 77
    fi
}

# SIGCONT first: a test may leave a worker stopped, and a stopped process ignores SIGTERM.
kv_secure_cleanup() {
    local p
    for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null; kill -TERM "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    [[ -n ${KEEP_TMP:-} || -z ${tmp:-} ]] || rm -rf "$tmp"
}

kv_test_tmp() {
    tmp="$(mktemp -d "/tmp/kv-$1-test-XXXXXX")"
    trap kv_secure_cleanup EXIT
    # No discovery from the user's real run directory: only what the test sets.
    export XDG_RUNTIME_DIR="$tmp/run"
    mkdir -m 700 "$XDG_RUNTIME_DIR"
    unset KVSERVE_CLIENT_KEY
}

kv_keys_gen() {
    local n
    k="$tmp/keys"
    mkdir -p "$k/workers" "$k/clients"
    "$bin/kvctl" keys gen --out "$k" --name router >/dev/null || fail "keys gen router"
    for n in prefill-0 decode-0; do
        "$bin/kvctl" keys gen --out "$k/workers" --name "$n" >/dev/null || fail "keys gen $n"
    done
    "$bin/kvctl" keys gen --out "$k/clients" --name client --server-key "$k/router.pub" >/dev/null ||
        fail "keys gen client"
}

kv_router_start() {
    local dir=$1 keys=()
    shift
    [[ $kv_curve == 1 ]] && keys=(--key "$k/router.key" --worker-keys "$k/workers" --client-keys "$k/clients")
    "$bin/kv-router" --model "$model" --listen tcp://127.0.0.1:0 --control tcp://127.0.0.1:0 \
        --ready-file "$dir/ready" "${keys[@]}" "$@" >"$dir/router.log" 2>&1 &
    router_pid=$!
    pids+=("$router_pid")
    for _ in $(seq 100); do [[ -s $dir/ready ]] && break; sleep 0.1; done
    cep=$(sed -n 's/^client=//p' "$dir/ready" 2>/dev/null)
    kep=$(sed -n 's/^control=//p' "$dir/ready" 2>/dev/null)
    [[ -n $cep && -n $kep ]] && return 0
    echo "kv-router did not report its endpoints within 10 s; its log:" >&2
    cat "$dir/router.log" >&2
    return 1
}

kv_worker_start() {
    local role=$1 id=$2 log=$3 keys=()
    shift 3
    [[ $kv_curve == 1 ]] && keys=(--key "$k/workers/$id.key" --router-key "$k/router.pub" --worker-keys "$k/workers")
    "$bin/kv-$role" --model "$model" --router "$kep" --id "$id" --threads 1 "${keys[@]}" "$@" >>"$log" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
}

kv_healthy() {
    "$bin/kvctl" status --router "$cep" --worker "$1" --timeout-ms 1000 "${@:2}" >/dev/null 2>&1
}

kv_wait_healthy() {
    for _ in $(seq 150); do kv_healthy "$@" && return 0; sleep 0.1; done
    return 1
}

kv_1p1d_start() {
    local dir=$1 key=()
    shift
    kv_router_start "$dir" "$@" || return 1
    kv_worker_start prefill prefill-0 "$dir/p0.log"
    p0_pid=$last_pid
    kv_worker_start decode decode-0 "$dir/d0.log"
    d0_pid=$last_pid
    [[ $kv_curve == 1 ]] && key=(--key "$k/clients/client.key")
    kv_wait_healthy prefill-0 "${key[@]}" && kv_wait_healthy decode-0 "${key[@]}" && return 0
    echo "prefill-0 and decode-0 did not both register within 15 s; the logs:" >&2
    tail "$dir"/*.log >&2
    return 1
}

kv_finish() {
    if ((fails)); then
        echo "$1: $fails failure(s); logs in $tmp" >&2
        KEEP_TMP=1
        exit 1
    fi
    echo "$1: all passed"
}
