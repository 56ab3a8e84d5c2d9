# Sourced by the shell tests that run a local cluster: starts `kvctl up` in the background and
# stops it (and any other process listed in KV_PIDS) when the test exits.
#   kv_up_start KVCTL TMPDIR [kvctl up flags...]   sets UP_PID, EP (the router's client
#                                                  endpoint) and URL (with --http); returns 1
#                                                  after printing the cluster's output when it
#                                                  did not come up within 60 s
#   kv_direct_start BIN TMPDIR MODEL DTYPE TAG     kv-router (--local-prefill-max 0, so every
#                                                  prompt's KV travels) + one kv-prefill and one
#                                                  kv-decode with --kv-dtype DTYPE, started
#                                                  directly (logs TMPDIR/{router,prefill,decode}-TAG.log);
#                                                  sets EP; returns 1 after printing why when
#                                                  they did not come up within 30 s each
#   kv_direct_stop                                 stops them (every process in KV_PIDS)
#   kv_cleanup                                     the EXIT trap: SIGTERM, then SIGKILL after 5 s
#   kv_need_bins DIR NAME...                       exits 77 naming the first DIR/NAME not built
#   fail MSG                                       counts a failure in fails (checks: the
#                                                  test's own count of what it checked)
UP_PID=
KV_PIDS=
EP=
URL=
fails=0
# shellcheck disable=SC2034 # counted by the sourcing test
checks=0

fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

kv_need_bins() {
    local dir=$1 b
    shift
    for b in "$@"; do
        [[ -x $dir/$b ]] || { echo "SKIP: $dir/$b not built" >&2; exit 77; }
    done
}

kv_stop_pid() {
    local p=$1
    kill -0 "$p" 2>/dev/null || return 0
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
}

kv_cleanup() {
    local p
    for p in $KV_PIDS $UP_PID; do kv_stop_pid "$p"; done
    [[ -n ${KEEP_TMP:-} || -z ${tmp:-} ]] || rm -rf "$tmp"
}

kv_up_start() {
    local kvctl=$1 dir=$2 http=
    shift 2
    [[ " $* " == *" --http "* ]] && http=1
    "$kvctl" up "$@" >"$dir/up.out" 2>"$dir/up.err" &
    UP_PID=$!
    EP= URL=
    for _ in $(seq 600); do
        EP=$(grep -o 'tcp://[0-9.]*:[0-9]*' "$dir/up.out" 2>/dev/null | head -1)
        URL=$(grep -o 'http://[0-9.]*:[0-9]*' "$dir/up.out" 2>/dev/null | head -1)
        [[ -n $EP && ( -z $http || -n $URL ) ]] && return 0
        kill -0 "$UP_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "FAIL: kvctl up $* did not report its endpoints within 60 s; its output:" >&2
    cat "$dir/up.out" "$dir/up.err" >&2
    return 1
}

kv_direct_start() {
    local bin=$1 dir=$2 m=$3 dt=$4 tag=$5 ready=$2/ready-$5 control role
    "$bin/kv-router" --model "$m" --listen tcp://127.0.0.1:0 --control tcp://127.0.0.1:0 --local-prefill-max 0 \
        --ready-file "$ready" >"$dir/router-$tag.log" 2>&1 &
    KV_PIDS="$KV_PIDS $!"
    for _ in $(seq 300); do [[ -s $ready ]] && grep -q '^control=' "$ready" && break; sleep 0.1; done
    control=$(sed -n 's/^control=//p' "$ready")
    EP=$(sed -n 's/^client=//p' "$ready")
    if [[ -z $control || -z $EP ]]; then
        echo "$tag: the router did not start: $(cat "$dir/router-$tag.log")" >&2
        return 1
    fi
    for role in prefill decode; do
        "$bin/kv-$role" --model "$m" --router "$control" --threads 1 --kv-dtype "$dt" >"$dir/$role-$tag.log" 2>&1 &
        KV_PIDS="$KV_PIDS $!"
    done
    for _ in $(seq 300); do
        [[ $("$bin/kvctl" status --router "$EP" --json 2>/dev/null | grep -o '"healthy":true' | wc -l) -ge 2 ]] && return 0
        sleep 0.1
    done
    echo "$tag: the workers did not register: $(cat "$dir/prefill-$tag.log" "$dir/decode-$tag.log")" >&2
    return 1
}

kv_direct_stop() {
    local p
    for p in $KV_PIDS; do kv_stop_pid "$p"; done
    KV_PIDS=
}
