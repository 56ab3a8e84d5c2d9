#!/usr/bin/env bash
# kvctl command-line behaviour without a cluster: bad flags exit 2 with a message on
# stderr (generate, status, bench, up, capacity, tokenize), an absent router is an
# error (exit 1) rather than a hang, and `kvctl capacity` for stories260K.
# usage: test_kvctl_cli.sh BIN_DIR MODELS_DIR
set -u
BIN=${1:?BIN_DIR}
MODELS=${KVSERVE_TEST_MODELS:-${2:?MODELS_DIR}}
KVCTL="$BIN/kvctl"
fails=0
checks=0
tmp=$(mktemp -d /tmp/kvctl-cli-test-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# expect_exit CODE PATTERN -- ARGS...: kvctl ARGS exits CODE and stderr matches PATTERN.
expect_exit() {
    local want=$1 pattern=$2
    shift 3
    checks=$((checks + 1))
    timeout 20 "$KVCTL" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    local rc=$?
    if [[ $rc -ne $want ]] || ! grep -qE -- "$pattern" "$tmp/err"; then
        echo "FAIL: kvctl $* -> exit $rc (want $want), stderr:" >&2
        sed 's/^/    /' "$tmp/err" >&2
        fails=$((fails + 1))
    fi
}

M=$MODELS/stories260K
# A port nothing listens on, for "router absent" checks.
NOPE=tcp://127.0.0.1:1

expect_exit 2 "usage: kvctl" -- 
expect_exit 2 "unknown command" -- frobnicate

# generate
expect_exit 2 "unknown or incomplete option" -- generate --bogus "hi"
expect_exit 2 "--max-tokens expects an integer" -- generate --max-tokens abc "hi"
expect_exit 2 "--temperature expects a number" -- generate --temperature -1 "hi"
expect_exit 2 "--top-p" -- generate --top-p 0 "hi"
expect_exit 2 "excludes --router" -- generate --local --router tcp://127.0.0.1:7100 --model "$M" "hi"
expect_exit 2 "applies only to --local" -- generate --router "$NOPE" --threads 2 "hi"
expect_exit 2 "PROMPT is required" -- generate --router "$NOPE"
expect_exit 2 "--model DIR is required" -- generate --local "hi"
expect_exit 2 "--deadline-ms expects" -- generate --deadline-ms 0 "hi"
expect_exit 2 "incomplete option" -- generate --router
expect_exit 1 "not reachable" -- generate --router "$NOPE" "hi"

# status
expect_exit 2 "unknown or incomplete option" -- status --bogus
expect_exit 2 "unexpected argument" -- status extra
expect_exit 2 "--timeout-ms expects" -- status --timeout-ms x
expect_exit 1 "no status reply|not reachable" -- status --router "$NOPE" --timeout-ms 300

# bench
expect_exit 2 "are required" -- bench --concurrency 2 --prompt-len 8 --max-tokens 8
expect_exit 2 "exactly one of" -- bench --requests 4 --prompt-len 8 --max-tokens 8
expect_exit 2 "exactly one of" -- bench --requests 4 --concurrency 2 --rate 5 --prompt-len 8 --max-tokens 8
expect_exit 2 "--requests expects" -- bench --requests 0 --concurrency 2 --prompt-len 8 --max-tokens 8
expect_exit 2 "--rate" -- bench --requests 4 --rate -3 --prompt-len 8 --max-tokens 8
expect_exit 2 "unknown or incomplete option" -- bench --bogus
expect_exit 1 "not reachable" -- bench --router "$NOPE" --requests 2 --concurrency 1 --prompt-len 4 --max-tokens 4

# up
expect_exit 2 "--model DIR is required" -- up
expect_exit 2 "--prefill expects" -- up --model "$M" --prefill -1
expect_exit 2 "--port expects" -- up --model "$M" --port 70000
expect_exit 2 "--threads expects" -- up --model "$M" --threads zero
expect_exit 2 "unknown or incomplete option" -- up --model "$M" --bogus
expect_exit 1 "neither a model directory nor a .gguf file" -- up --model "$tmp/no-such-model"

# capacity, tokenize
expect_exit 2 "--tokens expects" -- capacity --model "$M" --tokens x
expect_exit 2 "are required" -- capacity --tokens 10
expect_exit 2 "unknown or incomplete option" -- capacity --bogus
expect_exit 2 "unknown option" -- tokenize --bogus
expect_exit 2 "--tokenizer FILE is required" -- tokenize hello

# --help exits 0 for every service command.
for cmd in generate status bench up capacity tokenize; do
    checks=$((checks + 1))
    if ! "$KVCTL" $cmd --help >/dev/null 2>&1; then
        echo "FAIL: kvctl $cmd --help did not exit 0" >&2
        fails=$((fails + 1))
    fi
done

if [[ ! -f $M/config.json ]]; then
    echo "$checks checks, $fails failed; SKIP: $M not found" >&2
    [[ $fails -eq 0 ]] && exit 77
    exit 1
fi

# capacity of stories260K: 2 x 5 layers x 4 kv heads x 8 dims x 4 bytes (f32) = 1280 per token.
checks=$((checks + 1))
if ! out=$("$KVCTL" capacity --model "$M" --tokens 512 2>&1); then
    echo "FAIL: kvctl capacity exited non-zero: $out" >&2
    fails=$((fails + 1))
else
    for pat in "kv bytes/token: +1280 " "kv bytes/block: +20480 " "kv for 512 tokens: 655360 bytes" "5 layers, 4 kv heads x head_dim 8, context 512"; do
        checks=$((checks + 1))
        if ! grep -qE -- "$pat" <<<"$out"; then
            echo "FAIL: kvctl capacity output lacks /$pat/:" >&2
            echo "$out" | sed 's/^/    /' >&2
            fails=$((fails + 1))
        fi
    done
fi
checks=$((checks + 1))
if ! "$KVCTL" capacity --model "$M" --tokens 1 --kv-dtype int8 | grep -qE "kv dtype: +int8"; then
    echo "FAIL: kvctl capacity --kv-dtype int8" >&2
    fails=$((fails + 1))
fi

echo "$checks checks, $fails failed" >&2
[[ $fails -eq 0 ]]
