#!/usr/bin/env bash
# kv-frontend end to end: `kvctl up --http 0` (router, 1 prefill, 1 decode, kv-frontend) on
# loopback with stories260K, a second kv-frontend with API keys and small limits, then
# test_frontend.py drives both with the official openai package (installed into a venv in
# the build directory, cached between runs). Skipped (77) without the model or without PyPI.
# usage: test_frontend.sh BIN_DIR MODELS_DIR BUILD_DIR
set -u
BIN=${1:?BIN_DIR}
MODELS=${KVSERVE_TEST_MODELS:-${2:?MODELS_DIR}}
BUILD=${3:?BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
M=$MODELS/stories260K
[[ -f $M/config.json ]] || { echo "SKIP: $M not found" >&2; exit 77; }
for b in kvctl kv-router kv-prefill kv-decode kv-frontend; do
    [[ -x $BIN/$b ]] || { echo "SKIP: $BIN/$b not built" >&2; exit 77; }
done

# shellcheck source=kv_pyenv.sh
source "$HERE/kv_pyenv.sh"

tmp=$(mktemp -d /tmp/kv-frontend-test-XXXXXX)
# shellcheck source=kv_cluster.sh
source "$(dirname "$0")/kv_cluster.sh"
trap kv_cleanup EXIT
kv_up_start "$BIN/kvctl" "$tmp" --model "$M" --port 0 --threads 1 --http 0 || exit 1
echo "cluster at $EP, HTTP at $URL" >&2

# A second frontend on the same router: keys, /metrics behind them, small limits.
KVSERVE_API_KEY="key-one, key-two" "$BIN/kv-frontend" --router "$EP" --model "$M" --port 0 --metrics-auth \
    --max-body-bytes 4096 --request-timeout-s 30 --ready-file "$tmp/auth.ready" 2>"$tmp/auth.err" &
FE_PID=$!
KV_PIDS="$KV_PIDS $FE_PID"
for _ in $(seq 100); do
    [[ -s $tmp/auth.ready ]] && break
    sleep 0.1
done
AUTH_URL=$(sed -n 's/^http=//p' "$tmp/auth.ready" 2>/dev/null)
if [[ -z $AUTH_URL ]]; then
    echo "FAIL: the second kv-frontend did not start:" >&2
    cat "$tmp/auth.err" >&2
    exit 1
fi

FE_URL=$URL FE_AUTH_URL=$AUTH_URL ROUTER_EP=$EP KVCTL=$BIN/kvctl MODEL_DIR=$M UP_ERR=$tmp/up.err \
    timeout 400 "$VENV/bin/python" "$HERE/test_frontend.py"
rc=$?

# Stop: SIGTERM -> kvctl up stops every child (the frontend too) and exits 0.
kill -TERM "$FE_PID"
wait "$FE_PID"
fe_rc=$?
FE_PID= KV_PIDS=
kill -TERM "$UP_PID"
up_rc=
for _ in $(seq 100); do
    if ! kill -0 "$UP_PID" 2>/dev/null; then
        wait "$UP_PID"
        up_rc=$?
        break
    fi
    sleep 0.1
done
UP_PID=
if [[ $fe_rc != 0 || $up_rc != 0 ]]; then
    echo "FAIL: exit status after SIGTERM: kv-frontend '$fe_rc', kvctl up '$up_rc' (want 0 and 0)" >&2
    rc=1
fi
if [[ $rc -ne 0 ]]; then
    echo "---- kvctl up stderr (tail) ----" >&2
    tail -n 40 "$tmp/up.err" >&2
fi
exit $rc
