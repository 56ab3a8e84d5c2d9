#!/usr/bin/env bash
# kvctl chat-template: the prompt on stdout byte for byte as transformers rendered it (a golden
# of tests/data/chat_templates), --no-generation-prompt and --tools, a template's
# raise_exception message on stderr with exit 1, usage errors with exit 2.
# usage: test_template_cli.sh BIN_DIR DATA_DIR
set -u
KVCTL="${1:?BIN_DIR}/kvctl"
DATA=${2:?DATA_DIR}
fails=0
checks=0
tmp=$(mktemp -d /tmp/kvctl-chat-template-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

check() { # check NAME CONDITION...
    local name=$1
    shift
    checks=$((checks + 1))
    if ! "$@"; then
        echo "FAIL: $name" >&2
        fails=$((fails + 1))
    fi
}

# model_dir NAME TEMPLATE: a model directory whose tokenizer_config.json holds the template
model_dir() {
    mkdir -p "$tmp/$1"
    python3 - "$2" "$tmp/$1/tokenizer_config.json" <<'PY'
import json, sys
json.dump({"chat_template": open(sys.argv[1], encoding="utf-8").read(), "bos_token": "<s>", "eos_token": "</s>",
           "unk_token": "<unk>", "pad_token": {"content": "<pad>", "lstrip": False}}, open(sys.argv[2], "w"))
PY
}

# golden TEMPLATE SET GEN: transformers' output for a case of goldens.json, into $tmp/want
golden() {
    python3 - "$DATA/goldens.json" "$1" "$2" "$3" "$tmp/want" <<'PY'
import json, sys
g = json.load(open(sys.argv[1], encoding="utf-8"))
c = [c for c in g["cases"] if c["template"] == sys.argv[2] and c["messages"] == sys.argv[3]
     and c["add_generation_prompt"] == (sys.argv[4] == "1")][0]
open(sys.argv[5], "w", encoding="utf-8", newline="").write(c["output"])
PY
}

model_dir qwen "$DATA/templates/qwen25_tools.jinja"
model_dir gemma "$DATA/templates/gemma.jinja"

"$KVCTL" chat-template --model "$tmp/qwen" --messages "$DATA/messages/tools.json" >"$tmp/out" 2>"$tmp/err"
check "tools case exits 0" test $? -eq 0
golden templates/qwen25_tools.jinja tools 1
check "tools case equals transformers' output" cmp -s "$tmp/out" "$tmp/want"

"$KVCTL" chat-template --model "$tmp/qwen" --messages "$DATA/messages/multi_turn.json" --no-generation-prompt >"$tmp/out"
golden templates/qwen25_tools.jinja multi_turn 0
check "--no-generation-prompt equals transformers' output" cmp -s "$tmp/out" "$tmp/want"

# --tools FILE: the tools of tools.json given apart, over messages given as a bare array
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); json.dump(d['tools'], open(sys.argv[2],'w')); json.dump(d['messages'], open(sys.argv[3],'w'))" \
    "$DATA/messages/tools.json" "$tmp/tools.json" "$tmp/messages.json"
"$KVCTL" chat-template --model "$tmp/qwen" --messages "$tmp/messages.json" --tools "$tmp/tools.json" >"$tmp/out"
golden templates/qwen25_tools.jinja tools 1
check "--tools FILE equals transformers' output" cmp -s "$tmp/out" "$tmp/want"

"$KVCTL" chat-template --model "$tmp/gemma" --messages "$DATA/messages/system_user.json" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "a raising template exits 1" test $rc -eq 1
check "its message is on stderr with line:col" grep -q "chat_template:1:[0-9]*: System role not supported" "$tmp/err"
check "nothing on stdout" test ! -s "$tmp/out"

"$KVCTL" chat-template --model "$tmp/gemma" >/dev/null 2>"$tmp/err"
check "a missing --messages exits 2" test $? -eq 2
"$KVCTL" chat-template --model "$tmp/nowhere" --messages "$DATA/messages/user_only.json" >/dev/null 2>"$tmp/err"
check "a model directory without a config exits 1" test $? -eq 1

echo "$checks checks, $fails failed"
[[ $fails -eq 0 ]]
