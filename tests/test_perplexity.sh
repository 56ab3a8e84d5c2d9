#!/usr/bin/env bash
# kvctl perplexity against references made by independent implementations (tests/data/perplexity):
#   - stories260K on stories.txt, ctx 256 and 512: a float64 numpy forward pass scored as
#     llama.cpp scores (make_stories_golden.py; llama-perplexity on a GGUF of the same model
#     prints the same: 3.6888 +/- 0.19048 and 3.8108 +/- 0.20521), within 1e-4;
#   - SmolLM2-135M-Instruct (the shared GGUF, imported to f32) on GPL-3, ctx 512, the first 4
#     of its 14 chunks (the whole file takes minutes on 2 cores; KVSERVE_PPL_FULL=1 runs it,
#     against llama.cpp's 18.3001) against make_smollm2_golden.py, within 0.1 %. Release
#     builds only: under the sanitizers the engine is ~20x slower.
# usage: test_perplexity.sh BIN_DIR MODELS_DIR DATA_DIR WORK_DIR [quick]
set -u
BIN=${1:?BIN_DIR}
MODELS=${KVSERVE_TEST_MODELS:-${2:?MODELS_DIR}}
DATA=${3:?DATA_DIR}/perplexity
WORK=${4:?WORK_DIR}
QUICK=${5:-}
KVCTL="$BIN/kvctl"
[[ -x $KVCTL ]] || { echo "SKIP: $KVCTL not built" >&2; exit 77; }
[[ -f $MODELS/stories260K/config.json ]] || { echo "SKIP: $MODELS/stories260K not found (the shared models are absent)" >&2; exit 77; }
tmp=$(mktemp -d /tmp/perplexity-test-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

# A number from a JSON object on one line: field KEY.
field() { sed -n "s/.*\"$2\": *\([-0-9.eE+]*\).*/\1/p" <<<"$1"; }
# The golden's value of KEY in the object that follows the line matching ANCHOR.
golden() { awk -v a="$2" -v k="\"$3\":" 'index($0, a) { on = 1 } on && index($0, k) { gsub(/[ ,]/, "", $2); print $2; exit }' FS=': ' "$1"; }
# Relative difference of got vs want within tol.
close_to() { awk -v g="$1" -v w="$2" -v t="$3" 'BEGIN { d = (g - w) / w; if (d < 0) d = -d; exit !(g != "" && d <= t) }'; }

check_run() { # name, want_ppl, want_stderr, want_chunks, want_tokens, tol, kvctl args...
    local name=$1 ppl=$2 se=$3 chunks=$4 toks=$5 tol=$6
    shift 6
    local out
    if ! out=$("$KVCTL" perplexity "$@" --json 2>"$tmp/err"); then
        cat "$tmp/err" >&2
        fail "$name: kvctl perplexity $*"
        return
    fi
    close_to "$(field "$out" ppl)" "$ppl" "$tol" || fail "$name: ppl $(field "$out" ppl), expected $ppl (tolerance $tol)"
    close_to "$(field "$out" ppl_stderr)" "$se" "$tol" || fail "$name: stderr $(field "$out" ppl_stderr), expected $se"
    [[ $(field "$out" chunks) == "$chunks" ]] || fail "$name: $(field "$out" chunks) chunks, expected $chunks"
    [[ $(field "$out" tokens_scored) == "$toks" ]] || fail "$name: $(field "$out" tokens_scored) tokens scored, expected $toks"
    echo "ok: $name: $out"
}

S=$MODELS/stories260K
G=$DATA/stories_golden.json
TXT=$DATA/stories.txt
# One thread: the model is tiny, and spinning OpenMP threads on a busy 2-core runner only wait.
check_run "stories260K ctx 256" "$(golden "$G" '"ctx": 256' ppl)" "$(golden "$G" '"ctx": 256' ppl_stderr)" 8 1016 1e-4 \
    --model "$S" --file "$TXT" --ctx 256 --threads 1
check_run "stories260K ctx 512" "$(golden "$G" '"ctx": 512' ppl)" "$(golden "$G" '"ctx": 512' ppl_stderr)" 4 1020 1e-4 \
    --model "$S" --file "$TXT" --ctx 512 --threads 1 --batch 100
# --chunks 3: the running value after the third chunk.
want3=$(awk '/"ctx": 256/ { on = 1 } on && /running_ppl/ { n = 1; next } n { if (++i == 3) { gsub(/[ ,]/, ""); print; exit } }' "$G")
out=$("$KVCTL" perplexity --model "$S" --file "$TXT" --ctx 256 --chunks 3 --threads 1 --json 2>/dev/null)
close_to "$(field "$out" ppl)" "$want3" 1e-4 || fail "--chunks 3: ppl $(field "$out" ppl), expected $want3"
[[ $(field "$out" tokens_scored) == 381 ]] || fail "--chunks 3: $out"
# The llama.cpp-style text output: running values, then the final line.
"$KVCTL" perplexity --model "$S" --file "$TXT" --ctx 256 --threads 1 >"$tmp/out" 2>/dev/null || fail "text output run"
grep -q '^\[1\][0-9.]*,\[2\]' "$tmp/out" || fail "no running values: $(cat "$tmp/out")"
grep -q '^Final estimate: PPL = 3\.6888 +/- 0\.19048$' "$tmp/out" || fail "final line (llama.cpp prints 3.6888 +/- 0.19048): $(tail -1 "$tmp/out")"

# Refusals: exit 2 for usage, 1 with a reason for a text too short.
"$KVCTL" perplexity --model "$S" >/dev/null 2>&1; [[ $? == 2 ]] || fail "--file missing: not a usage error"
"$KVCTL" perplexity --model "$S" --file "$TXT" --ctx 1024 >/dev/null 2>"$tmp/err"; [[ $? == 2 ]] || fail "--ctx beyond the model's context accepted"
printf 'Once upon a time there was a cat.\n' >"$tmp/short.txt"
"$KVCTL" perplexity --model "$S" --file "$tmp/short.txt" --ctx 64 >/dev/null 2>"$tmp/err"; rc=$?
[[ $rc == 1 ]] && grep -q 'needs at least 128' "$tmp/err" || fail "short text: rc $rc, $(cat "$tmp/err")"
"$KVCTL" perplexity --model "$S" --file "$tmp/absent.txt" >/dev/null 2>&1; [[ $? == 1 ]] || fail "absent file"

GGUF=$MODELS/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
if [[ -n $QUICK ]]; then
    echo "skipped: SmolLM2 on GPL-3 (a sanitizer build: the engine runs ~20x slower there, minutes per chunk)"
elif [[ ! -f $GGUF || ! -f /usr/share/common-licenses/GPL-3 ]]; then
    echo "skipped: SmolLM2 on GPL-3 ($GGUF or /usr/share/common-licenses/GPL-3 absent)"
else
    # The import test_smollm2 makes, redone only when the GGUF or kvctl changed.
    M=$WORK/smollm2-135m-instruct
    stamp="$(stat -c '%s %Y' "$GGUF" "$KVCTL" | tr '\n' ' ')"
    if [[ "$(cat "$M/.imported-from" 2>/dev/null)" != "$stamp" ]]; then
        mkdir -p "$WORK"
        if ! "$KVCTL" model import "$GGUF" --out "$M" --force 2>"$tmp/err"; then
            cat "$tmp/err" >&2
            fail "kvctl model import"
        fi
        printf '%s\n' "$stamp" >"$M/.imported-from"
    fi
    SG=$DATA/smollm2_gpl3_golden.json
    if [[ -n ${KVSERVE_PPL_FULL:-} ]]; then
        check_run "SmolLM2 GPL-3 ctx 512 (all)" 18.3001 "$(golden "$SG" '"all"' ppl_stderr)" 14 3570 1e-3 \
            --model "$M" --file /usr/share/common-licenses/GPL-3 --ctx 512 --threads 2
    else
        check_run "SmolLM2 GPL-3 ctx 512, 4 chunks" "$(golden "$SG" '"ci"' ppl)" "$(golden "$SG" '"ci"' ppl_stderr)" 4 1020 1e-3 \
            --model "$M" --file /usr/share/common-licenses/GPL-3 --ctx 512 --chunks 4 --threads 2
    fi
fi
[[ $fails == 0 ]] || { echo "$fails failure(s)" >&2; exit 1; }
echo "all perplexity checks passed"
