#!/usr/bin/env bash
# kvctl model import: usage errors exit 2; every corrupted GGUF (test_gguf --write-bad) and a
# non-llama GGUF exit 1 with a message naming the fault and leave neither the output
# directory nor a temporary one behind; a good import gives the four files, a second one needs
# --force.
# usage: test_model_import.sh BIN_DIR DATA_DIR (tests/data/gguf)
set -u
BIN=${1:?BIN_DIR}
DATA=${2:?DATA_DIR}
KVCTL="$BIN/kvctl"
fails=0
checks=0
tmp=$(mktemp -d /tmp/kvctl-import-test-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "FAIL: $*" >&2
    sed 's/^/    /' "$tmp/err" >&2
    fails=$((fails + 1))
}

# expect_exit CODE PATTERN -- ARGS...: kvctl ARGS exits CODE and stderr matches PATTERN.
expect_exit() {
    local want=$1 pattern=$2
    shift 3
    checks=$((checks + 1))
    timeout 60 "$KVCTL" "$@" >"$tmp/stdout" 2>"$tmp/err" </dev/null
    local rc=$?
    if [[ $rc -ne $want ]] || ! grep -qE -- "$pattern" "$tmp/err"; then
        fail "kvctl $* -> exit $rc (want $want, stderr matching '$pattern')"
    fi
}

# nothing_left NAME: no DIR and no temporary sibling of it in $tmp/out.
nothing_left() {
    checks=$((checks + 1))
    if [[ -e "$tmp/out/$1" ]] || compgen -G "$tmp/out/.$1.*" >/dev/null; then
        fail "output left behind for $1: $(ls -a "$tmp/out")"
    fi
}

GOOD="$DATA/tiny_llama_bpe.gguf"
mkdir -p "$tmp/out" "$tmp/bad"

expect_exit 2 "usage: kvctl model import" -- model import
expect_exit 2 "are required" -- model import "$GOOD"
expect_exit 2 "are required" -- model import --out "$tmp/out/x"
expect_exit 2 "--dtype must be" -- model import "$GOOD" --out "$tmp/out/x" --dtype q4
expect_exit 2 "unknown or incomplete option" -- model import "$GOOD" --out "$tmp/out/x" --bogus
checks=$((checks + 1))
"$KVCTL" model import --help 2>"$tmp/err" | grep -q "usage: kvctl model import" || fail "model import --help"
expect_exit 2 "unknown subcommand" -- model frobnicate
nothing_left x

# corrupted files
if ! "$BIN/test_gguf" --write-bad "$tmp/bad"; then
    echo "FAIL: test_gguf --write-bad" >&2
    exit 1
fi
n_bad=0
while IFS=$'\t' read -r name pattern; do
    n_bad=$((n_bad + 1))
    expect_exit 1 "$name.gguf.*($pattern)" -- model import "$tmp/bad/$name.gguf" --out "$tmp/out/$name"
    nothing_left "$name"
done <"$tmp/bad/expected.txt"
checks=$((checks + 1))
[[ $n_bad -ge 15 ]] || { echo "FAIL: only $n_bad corrupted files" >&2; fails=$((fails + 1)); }

# a valid GGUF of another architecture; a missing file; a missing parent directory
expect_exit 1 "architecture 'kvserve-test' is not supported" -- model import "$DATA/quant_vectors.gguf" --out "$tmp/out/arch"
nothing_left arch
expect_exit 1 "No such file" -- model import "$tmp/none.gguf" --out "$tmp/out/none"
nothing_left none
expect_exit 1 "cannot create a temporary directory" -- model import "$GOOD" --out "$tmp/out/no/such"
nothing_left no

# a good one, then the non-empty directory rules
expect_exit 0 "imported .* 21 tensors, bfloat16" -- model import "$GOOD" --out "$tmp/out/good" --dtype bf16
checks=$((checks + 1))
for f in config.json model.safetensors tokenizer.json tokenizer_config.json; do
    [[ -s "$tmp/out/good/$f" ]] || fail "good import lacks $f"
done
expect_exit 1 "not empty; pass --force" -- model import "$GOOD" --out "$tmp/out/good"
expect_exit 0 "imported .*float32" -- model import "$GOOD" --out "$tmp/out/good/" --force
checks=$((checks + 1))
[[ $(ls -A "$tmp/out" | tr '\n' ' ') == "good " ]] || fail "leftovers in the output parent: $(ls -A "$tmp/out")"

echo "$checks checks, $fails failed"
[[ $fails -eq 0 ]]
