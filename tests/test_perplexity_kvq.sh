#!/usr/bin/env bash
# kvctl perplexity with a quantized KV cache on stories260K (stories.txt, ctx 256) against an
# independent numpy model of the scheme (tests/data/perplexity/make_stories_kvq_golden.py:
# f16 scales and zero points, keys per channel or per token over 16-token blocks, values per
# token in groups, the query's own block or the last R blocks at full precision), for int8,
# int4, int4 with per-token keys, int2 and int2 with a 32-token residual window: within 0.5 %
# (the numpy model rounds K/V from float64, the engine computes them in f32, so a few codes
# land one step apart).
# usage: test_perplexity_kvq.sh BIN_DIR MODELS_DIR DATA_DIR
set -u
BIN=${1:?BIN_DIR}
MODELS=${KVSERVE_TEST_MODELS:-${2:?MODELS_DIR}}
DATA=${3:?DATA_DIR}/perplexity
KVCTL="$BIN/kvctl"
[[ -x $KVCTL ]] || { echo "SKIP: $KVCTL not built" >&2; exit 77; }
[[ -f $MODELS/stories260K/config.json ]] || { echo "SKIP: $MODELS/stories260K not found" >&2; exit 77; }
G=$DATA/stories_kvq_golden.json
fails=0
checks=0
# The golden's ppl of the run named NAME.
golden() { awk -v n="\"$1\"" '/"ppl":/ { p = $2; gsub(/,/, "", p) } index($0, "\"name\": " n ",") { print p; exit }' "$G"; }

for run in "int8:--kv-dtype int8" "int4:--kv-dtype int4" "int4-token-keys:--kv-dtype int4 --kv-keys token" \
           "int2:--kv-dtype int2" "int2-residual-32:--kv-dtype int2 --kv-residual 32"; do
    name=${run%%:*}
    flags=${run#*:}
    want=$(golden "$name")
    checks=$((checks + 1))
    # shellcheck disable=SC2086
    out=$("$KVCTL" perplexity --model "$MODELS/stories260K" --file "$DATA/stories.txt" --ctx 256 --threads 1 --json \
        $flags 2>&1) || { echo "FAIL: $name: kvctl perplexity $flags: $out" >&2; fails=$((fails + 1)); continue; }
    got=$(sed -n 's/.*"ppl": *\([-0-9.eE+]*\).*/\1/p' <<<"$out")
    if awk -v g="$got" -v w="$want" 'BEGIN { d = (g - w) / w; if (d < 0) d = -d; exit !(g != "" && w != "" && d <= 5e-3) }'; then
        echo "ok: $name: ppl $got, numpy $want"
    else
        echo "FAIL: $name: ppl $got, numpy model of the scheme $want (tolerance 0.5 %)" >&2
        fails=$((fails + 1))
    fi
done
echo "$checks checks, $fails failed" >&2
[[ $fails -eq 0 ]]
