#!/usr/bin/env bash
# Cross-layer KV sharing (config.json "cla_share_factor", issue 14 item 4), on synthetic models
# `kvctl model synth --cla F` writes (no shared data needed):
#  1. greedy ids, prompt ids and each chosen token's logprob (within 2e-3) of
#     `kvctl generate --local` equal an independent numpy forward's (tests/data/cla/cla_golden.json,
#     made by make_cla_reference.py): F = 1 (the reference itself), F = 2, and F = 3 over 5 layers
#     (a short last group); also with --no-kv-cache and with 4-token blocks fed 5 tokens a chunk;
#     with int8 KV (F = 2) the same greedy ids;
#  2. `kvctl capacity --json`: kv_bytes_per_token and kv_bytes_per_block at F = 2 are half F = 1's,
#     for f32 and int4, and kv_layers counts owner layers;
#  3. a 1P1D cluster (router with --local-prefill-max 0, so every prompt's KV travels) serving
#     the F = 2 model: greedy output equals --local's with f32 and int8 KV, and a request ships
#     half the KV bytes the same prompt ships on the F = 1 model;
#  4. a checkpoint holding k_proj where the config says the layer shares is refused.
# usage: test_cla.sh BIN_DIR DATA_DIR
set -u
BIN=${1:?BIN_DIR}
DATA=${2:?DATA_DIR}
KVCTL="$BIN/kvctl"
GOLDEN=$DATA/cla/cla_golden.json
[[ -x $KVCTL ]] || { echo "SKIP: $KVCTL not built" >&2; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: no python3 to read JSON" >&2; exit 77; }

tmp=$(mktemp -d /tmp/kv-cla-XXXXXX)
# shellcheck source=kv_cluster.sh
source "$(dirname "$0")/kv_cluster.sh"
trap kv_cleanup EXIT

PROMPT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt"])' "$GOLDEN")
# case index -> "shape layers F seed"
CASES=$(python3 -c 'import json,sys
for c in json.load(open(sys.argv[1]))["cases"]: print(c["shape"], c["layers"], c["cla"], c["seed"])' "$GOLDEN")

synth() { # shape layers F seed -> prints the model dir
    local d=$tmp/$1-l$2-cla$3-s$4
    [[ -f $d/config.json ]] || "$KVCTL" model synth --shape "$1" --dtype f32 --out "$d" --layers "$2" --cla "$3" \
        --seed "$4" >/dev/null 2>"$tmp/synth.err" || { fail "synth $*: $(cat "$tmp/synth.err")"; return 1; }
    echo "$d"
}

# compare GENERATE_JSON CASE_INDEX WHAT [ids-only]: ids (and logprobs) against the golden case.
compare() {
    python3 - "$GOLDEN" "$2" "$3" "${4:-}" "$1" <<'PY'
import json, sys
golden, idx, what, ids_only, got = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
want = json.load(open(golden))["cases"][idx]
try:
    g = json.loads(got)
except ValueError:
    sys.exit(f"{what}: no JSON from kvctl generate: {got[:200]!r}")
if g["prompt_token_ids"] != want["prompt_ids"]:
    sys.exit(f"{what}: prompt ids {g['prompt_token_ids']}, reference {want['prompt_ids']}")
if g["token_ids"] != want["greedy_ids"]:
    sys.exit(f"{what}: greedy ids {g['token_ids']}, reference {want['greedy_ids']}")
if not ids_only:
    worst = max(abs(a - b) for a, b in zip(g["token_logprobs"], want["logprobs"]))
    if worst > 2e-3:
        sys.exit(f"{what}: a chosen token's logprob is {worst:.2e} off the reference's")
PY
}

gen_json() { # model [flags...]
    local m=$1
    shift
    "$KVCTL" generate --local --model "$m" --threads 1 --max-tokens 16 --ignore-eos --json --logprobs 1 "$@" \
        -- "$PROMPT" 2>"$tmp/gen.err" || echo "error: $(cat "$tmp/gen.err")"
}

# ---- 1. the engine against the reference
i=0
while read -r shape layers F seed; do
    m=$(synth "$shape" "$layers" "$F" "$seed") || { i=$((i + 1)); continue; }
    for flags in "" "--no-kv-cache" "--block-size 4 --prefill-chunk 5"; do
        checks=$((checks + 1))
        # shellcheck disable=SC2086
        msg=$(compare "$(gen_json "$m" $flags)" "$i" "F=$F layers=$layers ${flags:-default}" 2>&1) || fail "$msg"
    done
    if [[ $F == 2 ]]; then
        checks=$((checks + 1))
        msg=$(compare "$(gen_json "$m" --kv-dtype int8)" "$i" "F=$F int8 KV" ids) || fail "$msg"
        CLA2=$m
    fi
    [[ $F == 1 && $layers == 4 ]] && CLA1=$m
    i=$((i + 1))
done <<<"$CASES"
[[ -n ${CLA1:-} && -n ${CLA2:-} ]] || { echo "$checks checks, $fails failed (no F=1/F=2 models)" >&2; exit 1; }

# ---- 2. capacity counts owner layers only
cap() { # model dtype field
    "$KVCTL" capacity --model "$1" --tokens 1 --kv-dtype "$2" --json | sed -n "s/.*\"$3\": *\([0-9.]*\).*/\1/p"
}
for dt in f32 int4; do
    for field in kv_bytes_per_token kv_bytes_per_block; do
        checks=$((checks + 1))
        one=$(cap "$CLA1" "$dt" "$field")
        two=$(cap "$CLA2" "$dt" "$field")
        [[ -n $one && -n $two ]] && python3 -c "import sys; sys.exit(float(sys.argv[1]) != 2 * float(sys.argv[2]))" "$one" "$two" ||
            fail "capacity $dt: $field is $two at F=2, $one at F=1 (want half)"
    done
done
checks=$((checks + 1))
[[ $(cap "$CLA2" f32 kv_layers) == 2 ]] || fail "capacity: kv_layers $(cap "$CLA2" f32 kv_layers) at F=2 over 4 layers, want 2"

# ---- 4. k_proj where the config says the layer shares: refused, naming the tensor
checks=$((checks + 1))
bad=$tmp/bad
cp -r "$CLA1" "$bad"
sed -i 's/"num_hidden_layers": 4,/"num_hidden_layers": 4,\n  "cla_share_factor": 2,/' "$bad/config.json"
if "$KVCTL" generate --local --model "$bad" --max-tokens 1 -- hi >/dev/null 2>"$tmp/bad.err" ||
    ! grep -q 'layers.1.self_attn.k_proj.weight' "$tmp/bad.err"; then
    fail "a CLA config over a checkpoint with every layer's k_proj was not refused: $(cat "$tmp/bad.err")"
fi

# ---- 3. through a 1P1D cluster
have_cluster=1
for b in kv-router kv-prefill kv-decode; do [[ -x $BIN/$b ]] || have_cluster=0; done
if [[ $have_cluster == 0 ]]; then
    echo "note: kv-router/kv-prefill/kv-decode not built: cluster checks skipped" >&2
    echo "$checks checks, $fails failed" >&2
    [[ $fails -eq 0 ]]
    exit
fi

declare -A shipped
for run in "$CLA2 f32 cla2-f32" "$CLA2 int8 cla2-int8" "$CLA1 f32 cla1-f32"; do
    read -r m dt tag <<<"$run"
    kv_direct_start "$BIN" "$tmp" "$m" "$dt" "$tag" || { fail "$tag: the cluster did not start"; kv_direct_stop; continue; }
    checks=$((checks + 1))
    want=$("$KVCTL" generate --local --model "$m" --threads 1 --kv-dtype "$dt" --max-tokens 16 --ignore-eos \
        -- "$PROMPT" 2>"$tmp/local.err") || fail "$tag: generate --local: $(cat "$tmp/local.err")"
    got=$(timeout 60 "$KVCTL" generate --router "$EP" --max-tokens 16 --ignore-eos -- "$PROMPT" 2>"$tmp/cl.err") ||
        fail "$tag: generate through the cluster: $(cat "$tmp/cl.err")"
    [[ $got == "$want" ]] || fail "$tag: the cluster's output differs from --local's:
  local:   $want
  cluster: $got"
    shipped[$tag]=$(sed -n 's/.*kv_bytes=\([0-9]*\).*/\1/p' "$tmp/cl.err")
    kv_direct_stop
done
checks=$((checks + 1))
one=${shipped[cla1-f32]:-} two=${shipped[cla2-f32]:-}
[[ -n $one && -n $two && $two -gt 0 && $((2 * two)) -eq $one ]] ||
    fail "the F=2 model's request shipped ${two:-?} KV bytes, the F=1 model's ${one:-?} (want half)"
echo "KV bytes shipped for the prompt: F=1 f32 ${one:-?}, F=2 f32 ${two:-?}, F=2 int8 ${shipped[cla2-int8]:-?}" >&2

echo "$checks checks, $fails failed" >&2
[[ $fails -eq 0 ]]
