#!/usr/bin/env bash
# SmolLM2-135M-Instruct end to end, against references made by independent implementations
# (tests/data: HF tokenizers, jinja2 as transformers renders, transformers float64 greedy):
#   - `kvctl model import` of the shared GGUF (once per build directory);
#   - its tokenizer.json encodes the committed vectors exactly;
#   - its chat template renders the committed goldens byte for byte;
#   - greedy ids of every reference case, through `kvctl generate --local --json` and
#     through a 1P1D cluster (`kvctl up`), cold and then warm (prompts reused from the
#     workers' prefix caches), are the reference's ids exactly.
# usage: test_smollm2.sh BIN_DIR MODELS_DIR DATA_DIR WORK_DIR [quick]
# quick (sanitizer builds, where the engine is ~20x slower): the greedy check runs the first
# case's first 16 tokens only.
set -u
BIN=${1:?BIN_DIR}
MODELS=${KVSERVE_TEST_MODELS:-${2:?MODELS_DIR}}
DATA=${3:?DATA_DIR}
WORK=${4:?WORK_DIR}
QUICK=${5:-}
KVCTL="$BIN/kvctl"
GGUF=$MODELS/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
[[ -f $GGUF ]] || { echo "SKIP: $GGUF not found (the shared models are absent)" >&2; exit 77; }
# shellcheck source=kv_cluster.sh
source "$(dirname "$0")/kv_cluster.sh"
kv_need_bins "$BIN" kvctl kv-router kv-prefill kv-decode
command -v python3 >/dev/null || { echo "SKIP: python3 (used to compare JSON) not found" >&2; exit 77; }

M=$WORK/smollm2-135m-instruct
tmp=$(mktemp -d /tmp/smollm2-test-XXXXXX)
trap kv_cleanup EXIT

# The import is the slow part: redo it only when the GGUF or kvctl changed.
stamp="$(stat -c '%s %Y' "$GGUF" "$KVCTL" | tr '\n' ' ')"
if [[ "$(cat "$M/.imported-from" 2>/dev/null)" != "$stamp" ]]; then
    mkdir -p "$WORK"
    checks=$((checks + 1))
    if ! "$KVCTL" model import "$GGUF" --out "$M" --force 2>"$tmp/import.err"; then
        cat "$tmp/import.err" >&2
        echo "FAIL: kvctl model import" >&2
        exit 1
    fi
    printf '%s\n' "$stamp" >"$M/.imported-from"
fi

# Tokenizer vectors (HF tokenizers on the reference tokenizer.json).
if [[ -x $BIN/test_tokenizer_vectors ]]; then
    checks=$((checks + 1))
    "$BIN/test_tokenizer_vectors" "$M/tokenizer.json" "$DATA/tokenizer/smollm2.vectors.jsonl" >"$tmp/vec.out" 2>&1 ||
        { cat "$tmp/vec.out" >&2; fail "tokenizer vectors"; }
else
    fail "$BIN/test_tokenizer_vectors not built"
fi

# Chat-template goldens (transformers' own render_jinja_template) through the imported
# tokenizer_config.json, and the CLI on the reference's chat prompts.
if [[ -x $BIN/test_template_golden ]]; then
    checks=$((checks + 1))
    "$BIN/test_template_golden" --data "$DATA/chat_templates" --model "$M" --only smollm2 >"$tmp/tpl.out" 2>&1 ||
        { cat "$tmp/tpl.out" >&2; fail "chat-template goldens"; }
    grep -q " 0 skipped" "$tmp/tpl.out" || fail "chat-template goldens skipped cases: $(tail -n 2 "$tmp/tpl.out")"
else
    fail "$BIN/test_template_golden not built"
fi
# The reference's chat cases (messages, rendered prompt) and tokenize-only texts, as files.
python3 - "$DATA/smollm2/greedy.json" "$tmp" <<'EOF'
import json, sys
ref = json.load(open(sys.argv[1]))
n = 0
for c in ref["cases"]:
    if not c["chat"]:
        continue
    json.dump([{"role": "user", "content": c["prompt"]}], open("%s/chat%d.json" % (sys.argv[2], n), "w"))
    open("%s/chat%d.txt" % (sys.argv[2], n), "w", encoding="utf-8", newline="").write(c["rendered_prompt"])
    n += 1
for i, t in enumerate(ref.get("tokenize_only", [])):
    open("%s/tok%d.txt" % (sys.argv[2], i), "w", encoding="utf-8", newline="").write(t["text"])
    open("%s/tok%d.ids" % (sys.argv[2], i), "w").write(" ".join(map(str, t["ids"])) + "\n")
EOF
for msgs in "$tmp"/chat*.json; do
    [[ -f $msgs ]] || { fail "no chat cases in greedy.json"; break; }
    checks=$((checks + 1))
    "$KVCTL" chat-template --model "$M" --messages "$msgs" >"$tmp/rendered.txt" 2>"$tmp/ct.err" &&
        cmp -s "$tmp/rendered.txt" "${msgs%.json}.txt" || fail "kvctl chat-template on $(basename "$msgs"): $(cat "$tmp/ct.err")"
done
# Texts where a tokenizer without SmolLM2's Digits step would differ (the reference's list).
for text in "$tmp"/tok*.txt; do
    [[ -f $text ]] || break
    checks=$((checks + 1))
    t=$(cat "$text"; printf x) # the x keeps trailing newlines
    got=$("$KVCTL" tokenize --tokenizer "$M/tokenizer.json" -- "${t%x}" 2>&1)
    [[ $got == "$(cat "${text%.txt}.ids")" ]] || fail "tokenize $(basename "$text"): got '$got', want '$(cat "${text%.txt}.ids")'"
done

# Greedy ids against the reference, one case at a time: compare.py CASE_INDEX OUTPUT_JSON
cat >"$tmp/compare.py" <<'EOF'
import json, sys
ref = json.load(open(sys.argv[1]))["cases"][int(sys.argv[2])]
out = json.load(open(sys.argv[3]))
got = out["token_ids"]
want = ref["generated_ids"][:len(got)] if len(sys.argv) > 4 else ref["generated_ids"]
if out["prompt_token_ids"] != ref["prompt_ids"]:
    sys.exit("prompt ids differ:\n  got  %s\n  want %s" % (out["prompt_token_ids"], ref["prompt_ids"]))
if got != want:
    i = next((k for k in range(min(len(got), len(want))) if got[k] != want[k]), min(len(got), len(want)))
    sys.exit("generated ids differ at %d:\n  got  %s\n  want %s" % (i, got, want))
EOF
cases=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["cases"]))' "$DATA/smollm2/greedy.json") ||
    { echo "FAIL: cannot read $DATA/smollm2/greedy.json" >&2; exit 1; }
[[ -z $QUICK ]] || cases=1
case_args() { # case_args INDEX: prints the generate flags and prompt, NUL-separated
    python3 - "$DATA/smollm2/greedy.json" "$1" "$QUICK" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))["cases"][int(sys.argv[2])]
n = len(c["generated_ids"])
args = ["--max-tokens", str(min(n, 16) if sys.argv[3] else n)]
if c.get("ignore_eos"):
    args.append("--ignore-eos")  # the reference went on past its EOS
if c["chat"]:
    args.append("--chat")
args += ["--", c["prompt"]]
sys.stdout.write("\0".join(args))
EOF
}
run_cases() { # run_cases LABEL GENERATE_ARGS...
    local label=$1
    shift
    for ((i = 0; i < cases; i++)); do
        mapfile -d '' args < <(case_args "$i")
        checks=$((checks + 1))
        if ! timeout 300 "$KVCTL" generate "$@" --json "${args[@]}" >"$tmp/out.json" 2>"$tmp/gen.err"; then
            fail "$label case $i: $(cat "$tmp/gen.err")"
            continue
        fi
        python3 "$tmp/compare.py" "$DATA/smollm2/greedy.json" "$i" "$tmp/out.json" $QUICK 2>"$tmp/cmp.err" ||
            fail "$label case $i ($(printf '%q ' "${args[@]}")): $(cat "$tmp/cmp.err")"
    done
}
run_cases local --local --model "$M" --threads 2

if kv_up_start "$KVCTL" "$tmp" --model "$M" --port 0 --threads 1 --http 0; then
    run_cases cluster --router "$EP"
    # Again, warm: every case's prompt (and its generated tokens) is now in the decode
    # worker's prefix cache, so prompts are reused there (and prefilled there when the tail
    # is short) or on the prefill worker: the ids must not change.
    hits=0 reusable=0
    for ((i = 0; i < cases; i++)); do
        mapfile -d '' args < <(case_args "$i")
        checks=$((checks + 1))
        if ! timeout 300 "$KVCTL" generate --router "$EP" --json "${args[@]}" >"$tmp/out.json" 2>"$tmp/gen.err"; then
            fail "cluster, cached case $i: $(cat "$tmp/gen.err")"
            continue
        fi
        python3 "$tmp/compare.py" "$DATA/smollm2/greedy.json" "$i" "$tmp/out.json" $QUICK 2>"$tmp/cmp.err" ||
            fail "cluster, cached case $i ($(printf '%q ' "${args[@]}")): $(cat "$tmp/cmp.err")"
        # A prompt of more than one block (16 tokens) has a sealed block to reuse.
        read -r h long < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); t=d["timings"]
print(t["decode_cached_tokens"] + t["prefill_cached_tokens"], int(d["usage"]["prompt_tokens"] > 16))' "$tmp/out.json") ||
            h=0 long=0
        hits=$((hits + h)) reusable=$((reusable + long))
    done
    if [[ $reusable -gt 0 ]]; then
        checks=$((checks + 1))
        [[ $hits -gt 0 ]] || fail "cluster, cached: no prompt token came from a prefix cache"
    fi
    echo "NOTE: warm pass: $hits prompt tokens from prefix caches ($reusable prompts over one block)" >&2
    # Chat through kv-frontend with the official openai client (skipped without PyPI).
    if [[ -z $QUICK ]]; then
        checks=$((checks + 1))
        BUILD=$(dirname "$BIN")
        rc=0
        ( source "$(dirname "$0")/kv_pyenv.sh" &&
          FE_URL=$URL ROUTER_EP=$EP KVCTL=$KVCTL MODEL_DIR=$M REFERENCE=$DATA/smollm2/greedy.json \
              timeout 600 "$VENV/bin/python" "$(dirname "$0")/test_frontend_chat.py" ) || rc=$?
        if [[ $rc == 77 ]]; then
            echo "NOTE: the openai client could not be installed: kv-frontend chat not checked" >&2
        elif [[ $rc != 0 ]]; then
            fail "kv-frontend chat (test_frontend_chat.py)"
        fi
    fi
else
    fail "kvctl up"
fi

echo "$checks checks, $fails failed" >&2
[[ $fails == 0 ]]
