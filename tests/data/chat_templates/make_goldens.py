#!/usr/bin/env python3
"""Writes goldens.json: what Hugging Face transformers renders for each (template, message set,
add_generation_prompt) case, for tests/test_template_golden.c to compare byte for byte.

Rendering goes through transformers' own functions (apply_chat_template's message
normalization, then render_jinja_template, which compiles with transformers' jinja2 sandbox),
with strftime_now's clock fixed at FIXED_NOW. Run once with the venv that has transformers:

    /work/venv/bin/python tests/data/chat_templates/make_goldens.py [MODELS_DIR]

Templates: templates/*.jinja (ours; special tokens OWN_SPECIALS), the shared llama2 and llama3
tokenizer_config.json templates (read by the C test from the shared models at test time), and
SmolLM2's (read here from the shared GGUF; the C test reads it from a model directory given on
its command line); and the one-line templates of snippets.txt, each rendered with the multi_turn
messages (odd corners of the language, and errors). Only outputs, messages and our templates are committed."""
import datetime as _dt
import json
import os
import sys

from transformers.utils import chat_template_utils as ctu

HERE = os.path.dirname(os.path.abspath(__file__))
FIXED_NOW = 1721995200  # 2024-07-26 12:00:00 UTC
OWN_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


class _FixedDatetime(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return _dt.datetime.fromtimestamp(FIXED_NOW, _dt.timezone.utc).replace(tzinfo=None)


ctu.datetime = _FixedDatetime  # strftime_now reads the module's datetime.now()

ALL_SETS = ["system_user", "multi_turn", "unicode", "empty", "user_only", "tools", "parts", "alternation_broken"]
CHAT_SETS = ["system_user", "multi_turn", "unicode", "empty", "user_only", "alternation_broken"]
FEW_SETS = ["system_user", "tools"]

# our templates: which message sets each is rendered with
OWN = {
    "chatml": ALL_SETS,
    "gemma": CHAT_SETS,
    "mistral": CHAT_SETS,
    "llama31_tools": ALL_SETS,
    "qwen25_tools": ALL_SETS,
    "deepseek_ns": ALL_SETS,
    "phi3_selectattr": CHAT_SETS,
    "macros": FEW_SETS,
    "whitespace": FEW_SETS,
    "expressions": FEW_SETS,
    "filters": FEW_SETS,
    "methods": FEW_SETS,
    "loops": FEW_SETS,
    "tests": FEW_SETS,
    "content_parts": ALL_SETS,
    "generation": CHAT_SETS,
}


def special_tokens(config):
    out = {}
    for name in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        v = config.get(name)
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str):
            out[name] = v
    return out


def render(template, message_set, gen, specials):
    with open(os.path.join(HERE, "messages", message_set + ".json"), encoding="utf-8") as f:
        data = json.load(f)
    messages = ctu._normalize_chat_messages(data["messages"])
    try:
        out, _ = ctu.render_jinja_template(
            conversations=[messages], tools=data.get("tools"), chat_template=template, add_generation_prompt=gen,
            **specials)
        return {"output": out[0]}
    except Exception as e:  # the C side must fail too; raise_exception's message must match
        return {"error": type(e).__name__, "message": str(e)}


def read_snippets():
    """snippets.txt: one template a line; lines between <<< and >>> make one template."""
    out, block = [], None
    with open(os.path.join(HERE, "snippets.txt"), encoding="utf-8", newline="") as f:
        for line in f.read().split("\n"):
            if line == "<<<":
                block = []
            elif line == ">>>":
                out.append("\n".join(block))
                block = None
            elif block is not None:
                block.append(line)
            elif line:
                out.append(line)
    return out


def smollm2_template(models):
    import gguf
    path = os.path.join(models, "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
    r = gguf.GGUFReader(path)
    f = r.fields["tokenizer.chat_template"]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def main():
    models = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "..", "shared", "models")
    cases = []
    for name, sets in OWN.items():
        with open(os.path.join(HERE, "templates", name + ".jinja"), encoding="utf-8", newline="") as f:
            src = f.read()
        for s in sets:
            for gen in (False, True):
                cases.append({"template": "templates/%s.jinja" % name, "messages": s, "add_generation_prompt": gen,
                              **render(src, s, gen, OWN_SPECIALS)})
    for tok in ("llama2", "llama3"):
        with open(os.path.join(models, "tokenizers", tok, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        for s in CHAT_SETS:
            for gen in (False, True):
                cases.append({"template": "shared:tokenizers/" + tok, "messages": s, "add_generation_prompt": gen,
                              **render(config["chat_template"], s, gen, special_tokens(config))})
    smol = smollm2_template(models)
    for s in ALL_SETS:
        for gen in (False, True):
            cases.append({"template": "model:smollm2", "messages": s, "add_generation_prompt": gen,
                          **render(smol, s, gen, {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"})})
    # snippets: each with the multi_turn messages, no tools, no generation prompt
    snippets = [{"template": src, **render(src, "multi_turn", False, OWN_SPECIALS)} for src in read_snippets()]
    with open(os.path.join(HERE, "goldens.json"), "w", encoding="utf-8") as f:
        json.dump({"fixed_now": FIXED_NOW, "own_specials": OWN_SPECIALS, "cases": cases, "snippets": snippets}, f,
                  ensure_ascii=False, indent=1)
        f.write("\n")
    print("%d cases, %d errors; %d snippets, %d errors" % (len(cases), sum("error" in c for c in cases), len(snippets),
                                                          sum("error" in c for c in snippets)))


if __name__ == "__main__":
    main()
