#!/usr/bin/env bash
# Quantized KV through a 1P1D stories260K cluster (kv-router, kv-prefill and kv-decode with
# --kv-dtype int8, then int2; the router with --local-prefill-max 0 so that every prompt's KV
# travels): greedy output equals `kvctl generate --local` with the same KV dtype, for prompts
# whose KV ends inside a block (the partial block travels quantized and both paths read it
# back from its codes: engine_kvq.h) and on a block boundary; a request's KV bytes are its
# blocks times the dtype's block bytes (`kvctl capacity --json`), not f32's; asked again, the
# same output from the workers' prefix caches, only the blocks the decode worker lacks shipped.
# usage: test_kv_quant_cluster.sh BIN_DIR MODELS_DIR
set -u
BIN=${1:?BIN_DIR}
MODELS=${KVSERVE_TEST_MODELS:-${2:?MODELS_DIR}}
KVCTL="$BIN/kvctl"
M=$MODELS/stories260K
[[ -f $M/config.json ]] || { echo "SKIP: $M not found" >&2; exit 77; }
# shellcheck source=kv_cluster.sh
source "$(dirname "$0")/kv_cluster.sh"
kv_need_bins "$BIN" kvctl kv-router kv-prefill kv-decode

tmp=$(mktemp -d /tmp/kv-quant-cluster-XXXXXX)
trap kv_cleanup EXIT

P1="Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high. Lily's mom said"
P2="The cat sat on the mat and looked at the dog. The dog was big and brown and it was very small. He wanted to see what was inside. He wanted to see what was inside. Hello little"
P3="Tim and Sam went to the shop to buy a cake for their mother. The shop was"
for dt in int8 int2; do
    block_bytes=$("$KVCTL" capacity --model "$M" --tokens 1 --kv-dtype "$dt" --json | sed -n 's/.*"kv_bytes_per_block": *\([0-9]*\).*/\1/p')
    kv_direct_start "$BIN" "$tmp" "$M" "$dt" "$dt" || { fail "$dt: the cluster did not start"; kv_direct_stop; continue; }
    for prompt in "$P1" "$P2" "$P3"; do
        checks=$((checks + 1))
        want=$("$KVCTL" generate --local --model "$M" --threads 1 --kv-dtype "$dt" --max-tokens 80 -- "$prompt" 2>"$tmp/local.err") ||
            { fail "$dt: generate --local: $(cat "$tmp/local.err")"; continue; }
        got=$(timeout 60 "$KVCTL" generate --router "$EP" --max-tokens 80 -- "$prompt" 2>"$tmp/cl.err") ||
            { fail "$dt: generate through the cluster: $(cat "$tmp/cl.err")"; continue; }
        [[ $got == "$want" ]] || fail "$dt: '${prompt:0:30}...': the cluster's output differs from --local's:
  local:   $want
  cluster: $got"
        n=$(sed -n 's/.*prompt_tokens=\([0-9]*\).*/\1/p' "$tmp/cl.err")
        bytes=$(sed -n 's/.*kv_bytes=\([0-9]*\).*/\1/p' "$tmp/cl.err")
        checks=$((checks + 1))
        [[ -n $n && -n $bytes && $bytes -eq $(((n + 15) / 16 * block_bytes)) ]] ||
            fail "$dt: $n prompt tokens shipped $bytes KV bytes, expected $(((n + 15) / 16)) blocks of $block_bytes"
        # Warm: the prompt's sealed blocks are now in both workers' prefix caches (as codes):
        # the same output, and only the blocks the decode worker lacks travel.
        checks=$((checks + 1))
        got=$(timeout 60 "$KVCTL" generate --router "$EP" --max-tokens 80 -- "$prompt" 2>"$tmp/cl.err") ||
            { fail "$dt: warm generate through the cluster: $(cat "$tmp/cl.err")"; continue; }
        [[ $got == "$want" ]] || fail "$dt: '${prompt:0:30}...': warm (prefix-cached) output differs from --local's:
  local:   $want
  cluster: $got"
        cached=$(sed -n 's/.*decode_cached_tokens=\([0-9]*\).*/\1/p' "$tmp/cl.err")
        bytes=$(sed -n 's/.*kv_bytes=\([0-9]*\).*/\1/p' "$tmp/cl.err")
        checks=$((checks + 1))
        [[ -n $cached && $cached -gt 0 && $bytes -eq $(((n + 15) / 16 * block_bytes - cached / 16 * block_bytes)) ]] ||
            fail "$dt: warm: $cached tokens cached on the decode worker, $bytes KV bytes shipped"
    done
    kv_direct_stop
done

echo "$checks checks, $fails failed" >&2
[[ $fails -eq 0 ]]
