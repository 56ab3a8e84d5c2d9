# Sourced by the shell tests that run a local cluster: starts `kvctl up` in the background and
# stops it (and any other process listed in KV_PIDS) when the test exits.
#   kv_up_start KVCTL TMPDIR [kvctl up flags...]   sets UP_PID, EP (the router's client
#                                                  endpoint) and URL (with --http); returns 1
#                                                  after printing the cluster's output when it
#                                                  did not come up within 60 s
#   kv_cleanup                                     the EXIT trap: SIGTERM, then SIGKILL after 5 s
UP_PID=
KV_PIDS=
EP=
URL=

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
