#!/usr/bin/env python3
"""Writes the tokenizer test vectors: run once with /work/venv/bin/python; its output is committed.

For every tokenizer below, <dir>/vectors.jsonl holds a first line {"meta": ...} (BOS/EOS as the
C tokenizer must report them) and then one line per input text:
  {"text": ..., "ids": encode(text, add_special_tokens=False),
   "ids_special": what encode with special tokens gives, "decoded": decode(ids)}
computed with the HF `tokenizers` library. "ids_special" follows HF transformers: the
post_processor when tokenizer.json has one, else tokenizer_config.json's add_bos_token /
add_eos_token.

- synthetic/<name>/: small tokenizer.json files (vocabularies trained here on a few sentences)
  that exercise every normalizer, pre-tokenizer, post-processor and decoder the C tokenizer
  supports; committed with their vectors.
- llama2.vectors.jsonl, llama3.vectors.jsonl: the shared Llama tokenizers (read from the shared
  model dir at test time, never copied here).
- smollm2.vectors.jsonl: SmolLM2-135M-Instruct. Its HF tokenizer.json is not available offline,
  so a reference one is rebuilt from the GGUF's tokenizer.ggml.* metadata with the structure of
  the real file, and saved OUTSIDE the repository (REF_DIR, default /work/ref/smollm2-tok).
"""
import json
import os
import sys

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("KVSERVE_TEST_MODELS", os.path.join(HERE, "../../../../shared/models"))
REF_DIR = os.environ.get("REF_DIR", "/work/ref/smollm2-tok")
GGUF = os.path.join(SHARED, "smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")

# ---- inputs -------------------------------------------------------------------------------

TEXTS = [
    "",
    "Hello world",
    " Hello world",
    "Hello  world  ",
    "   ",
    " ",
    "\n\n\ttabs\tand\nnew\r\nlines\n\n",
    "trailing spaces and a tab \t",
    "12345678901234567890",
    "3.14159 and 2,718 and 1e-9 or 0x1F; 1,000,000.",
    "a1b22c333d4444 v2.0.1",
    "\u0663\u0664\u0665 \u00b2\u00bd \u216b \u2460\u2461",
    "caf\u00e9 na\u00efve \u00c5ngstr\u00f6m",
    "cafe\u0301 nai\u0308ve A\u030angstro\u0308m",
    "\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e",
    "\uff21\uff22\uff23\uff11\uff12\uff13\uff01 \uff48\uff45\uff4c\uff4c\uff4f",
    "\ufb01ne \ufb02ow \u2460 \u338f \u2126 \u212b x\u00b2",
    "\u0130stanbul \u0131i I\u0307 D\u0130YARBAKIR",
    "\u03a3\u0391\u03a3 \u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \u1f08\u03b8\u03ae\u03bd\u03b1",
    "Stra\u00dfe \u1e9e MA\u00dfE",
    "\U0001f999 llama \U0001f680\U0001f636\u200d\U0001f32b\ufe0f \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 \U0001f44d\U0001f3fd",
    "Hello, y'all! How are you? (fine) \u2014 \u00abquotes\u00bb \u00bfqu\u00e9? ...!!!",
    "don't I'm we'll they've she'd it's YOU'RE",
    "def f(x):\n    return x**2  # comment\n",
    "a,b;;c:d!e1234f  ,,;: !! x",
    "xxaxx 12x34 x",
    "$100 + 5% = <tag> | a_b ~ `code` @user #1 ^ {x} [y] \\z",
    "\u2581already\u2581has\u2581metaspace \u2581 x",
    "\u00a0non-breaking\u3000ideographic\u2003em\u200bzero-width",
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park with her 2 dogs and 13 cats.\n\nThe end.",
]

# Merges across what the splitters separate (runs of punctuation, digits, x, spaces), so that
# a piece boundary in the wrong place changes the ids.
CORPUS = TEXTS + [
    "the quick brown fox jumps over the lazy dog",
    "hello world hello there world wide web",
    "Once upon a time there was a little girl named Lily",
    "numbers 0123456789 and more numbers 42 1337",
] * 3 + ["...!!! ,,;; :: !? 1234 12 34 5678 2718 000 xxaxx xx12x34 y'all don't \u00e9\u00e9  \n\n\t\t   ,a;b:c!d"] * 30


def special_texts(specials):
    """Inputs holding the tokenizer's added tokens inside text."""
    if not specials:
        return []
    a, b = specials[0], specials[-1]
    return [a, a + a, f"hi{a} there{b}x", f"{a}Hello world{b}", f" {b} {a} ", f"x{a[:-1]}{b}"]


# ---- trained base vocabularies --------------------------------------------------------------

def trained(tok, trainer):
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    return model["vocab"], model["merges"]


def byte_level_base():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tr = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                             show_progress=False)
    return trained(tok, tr)


def spm_base():
    """Metaspace-style words, <unk> <s> </s> first, then the 256 byte tokens, then the rest."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tr = trainers.BpeTrainer(vocab_size=260, limit_alphabet=60, show_progress=False)
    vocab, merges = trained(tok, tr)
    out = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        out["<0x%02X>" % b] = len(out)
    for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        out.setdefault(t, len(out))
    return out, merges


def bert_base():
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tr = trainers.BpeTrainer(vocab_size=160, limit_alphabet=50,
                             special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False)
    return trained(tok, tr)


def added(specs, first_id):
    """specs: (content, special[, extra flags])."""
    out = []
    for i, spec in enumerate(specs):
        content, special = spec[0], spec[1]
        d = {"id": first_id + i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": not special, "special": special}
        if len(spec) > 2:
            d.update(spec[2])
        out.append(d)
    return out


def tokenizer_json(vocab, merges, added_tokens, normalizer=None, pre=None, post=None, decoder=None, **model):
    m = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
         "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
         "vocab": vocab, "merges": merges}
    m.update(model)
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens,
            "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": post, "decoder": decoder, "model": m}


def split(pattern, behavior, invert=False, regex=True):
    return {"type": "Split", "pattern": {"Regex" if regex else "String": pattern}, "behavior": behavior,
            "invert": invert}


BL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
BL_DEC = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
BL_POST = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
LLAMA3_RE = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
             "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
BEHAVIORS = ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"]


def template(single, specials):
    return {"type": "TemplateProcessing", "single": single, "pair": single + [{"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {t: {"id": t, "ids": [i], "tokens": [t]} for t, i in specials.items()}}


def tspecial(t):
    return {"SpecialToken": {"id": t, "type_id": 0}}


SEQ_A = {"Sequence": {"id": "A", "type_id": 0}}


def synthetic():
    """name -> (tokenizer.json dict, tokenizer_config.json dict or None)."""
    out = {}
    vocab, merges = byte_level_base()
    n = len(vocab)
    bl_added = added([("<|endoftext|>", True), ("<|begin_of_text|>", True), ("<|eot_id|>", True),
                      ("<x>", False, {"normalized": False}), ("HeLLo", False)], n)
    ids = {a["content"]: a["id"] for a in bl_added}

    def bl(name, normalizer=None, pre=None, post=None, cfg=None, **model):
        pre_list = (pre or []) + [BL]
        out[name] = (tokenizer_json(vocab, merges, bl_added, normalizer,
                                    {"type": "Sequence", "pretokenizers": pre_list}, post, BL_DEC, **model), cfg)

    out["gpt2"] = (tokenizer_json(vocab, merges, bl_added, None,
                                  {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                   "use_regex": True}, BL_POST, BL_DEC),
                   {"add_bos_token": False, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"})
    out["llama3"] = (tokenizer_json(vocab, merges, bl_added, None,
                                    {"type": "Sequence", "pretokenizers": [split(LLAMA3_RE, "Isolated"), BL]},
                                    {"type": "Sequence", "processors": [
                                        BL_POST, template([tspecial("<|begin_of_text|>"), SEQ_A],
                                                          {"<|begin_of_text|>": ids["<|begin_of_text|>"]})]},
                                    BL_DEC, ignore_merges=True),
                     {"bos_token": {"__type": "AddedToken", "content": "<|begin_of_text|>", "lstrip": False},
                      "eos_token": "<|eot_id|>", "add_bos_token": False})
    bl("digits-individual", pre=[{"type": "Digits", "individual_digits": True},
                                 {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                  "use_regex": True}])
    bl("digits-contiguous", pre=[{"type": "Digits", "individual_digits": False}])
    # Each behavior on its own character, so one file shows all five.
    bl("split-behaviors", pre=[split(",", "Removed", regex=False), split(";+", "Isolated"),
                               split(":", "MergedWithPrevious"), split("!", "MergedWithNext", regex=False),
                               split("\\d", "Contiguous")])
    for b in BEHAVIORS:
        bl("split-invert-" + b.lower(), pre=[split("[0-9]+|\\s", b, invert=True)])
        bl("split-empty-" + b.lower(), pre=[split("x*", b)])  # empty matches everywhere
        bl("punctuation-" + b.lower(), pre=[{"type": "Punctuation", "behavior": b}])
    bl("whitespace", pre=[{"type": "Whitespace"}])
    bl("whitespace-split", pre=[{"type": "WhitespaceSplit"}],
       post=template([tspecial("<|begin_of_text|>"), SEQ_A, tspecial("<|eot_id|>")],
                     {"<|begin_of_text|>": ids["<|begin_of_text|>"], "<|eot_id|>": ids["<|eot_id|>"]}))
    for form in ["NFC", "NFD", "NFKC", "NFKD"]:
        bl("norm-" + form.lower(), normalizer={"type": form})
    bl("norm-lowercase", normalizer={"type": "Lowercase"})
    bl("norm-strip-left", normalizer={"type": "Strip", "strip_left": True, "strip_right": False})
    bl("norm-strip-right", normalizer={"type": "Strip", "strip_left": False, "strip_right": True},
       cfg={"add_bos_token": True, "add_eos_token": True, "bos_token": "<|begin_of_text|>",
            "eos_token": {"__type": "AddedToken", "content": "<|eot_id|>", "special": True}})
    bl("norm-replace", normalizer={"type": "Sequence", "normalizers": [
        {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
        {"type": "Replace", "pattern": {"String": "ll"}, "content": "L"},
        {"type": "Replace", "pattern": {"Regex": "[0-9]{2,}"}, "content": "#"},
        {"type": "Prepend", "prepend": "^"}]})

    # SentencePiece-style vocabulary: byte fallback, "▁" words.
    svocab, smerges = spm_base()
    s_added = added([("<unk>", True), ("<s>", True), ("</s>", True)], 0)
    spm_model = {"unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True}
    llama2_dec = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    out["llama2"] = (tokenizer_json(svocab, smerges, s_added, {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        None, template([tspecial("<s>"), SEQ_A], {"<s>": 1}), llama2_dec, **spm_model),
        {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>"})

    def meta(scheme, split_, legacy=None):
        d = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": split_}
        if legacy is not None:
            d = {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": legacy}
        return d

    out["metaspace-always"] = (tokenizer_json(svocab, smerges, s_added, None, meta("always", True), None,
                                              {"type": "Sequence", "decoders": [meta("always", True),
                                                                                {"type": "ByteFallback"},
                                                                                {"type": "Fuse"}]}, **spm_model),
                               {"add_bos_token": True, "add_eos_token": True, "bos_token": "<s>", "eos_token": "</s>"})
    out["metaspace-first"] = (tokenizer_json(svocab, smerges, s_added, None, meta("first", True), None,
                                             {"type": "Sequence", "decoders": [{"type": "ByteFallback"},
                                                                               meta("first", True)]}, **spm_model),
                              {"bos_token": "<s>", "eos_token": "</s>"})
    out["metaspace-never-nosplit"] = (tokenizer_json(svocab, smerges, s_added, None, meta("never", False), None,
                                                     meta("never", False), **spm_model), None)
    out["metaspace-legacy"] = (tokenizer_json(svocab, smerges, s_added, {"type": "NFKC"}, meta(None, None, True),
                                              {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1],
                                               "trim_offsets": True, "add_prefix_space": True},
                                              meta(None, None, True), **spm_model), None)

    # BERT-ish: unknown token, no decoder (tokens joined with spaces).
    bvocab, bmerges = bert_base()
    b_added = added([("[PAD]", True), ("[UNK]", True), ("[CLS]", True), ("[SEP]", True), ("[MASK]", True)], 0)
    out["bertish"] = (tokenizer_json(bvocab, bmerges, b_added, {"type": "Sequence", "normalizers": [
        {"type": "NFD"}, {"type": "Lowercase"}, {"type": "Strip", "strip_left": True, "strip_right": True}]},
        {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, {"type": "Punctuation",
                                                                             "behavior": "Isolated"},
                                               {"type": "Digits", "individual_digits": True}]},
        {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}, None, unk_token="[UNK]"), None)
    return out


# ---- vectors ---------------------------------------------------------------------------------

def token_id(tj, content):
    for a in tj["added_tokens"]:
        if a["content"] == content:
            return a["id"]
    return tj["model"]["vocab"].get(content, -1)


def cfg_token(cfg, key):
    v = (cfg or {}).get(key)
    if isinstance(v, dict):
        v = v.get("content")
    return v


def expected_meta(tj, cfg, tok):
    """BOS/EOS by the rules of tokenizer.h, from the files (not from the C code)."""
    bos_tok, eos_tok = cfg_token(cfg, "bos_token"), cfg_token(cfg, "eos_token")
    probe = tok.encode("x", add_special_tokens=True).ids if tj.get("post_processor") else None
    if tj.get("post_processor"):
        plain = tok.encode("x", add_special_tokens=False).ids
        first = probe[0] if len(probe) > len(plain) and probe[:1] != plain[:1] else -1
    else:
        first = token_id(tj, bos_tok) if bos_tok and (cfg or {}).get("add_bos_token") else -1
    bos_id = token_id(tj, bos_tok) if bos_tok else first
    if not bos_tok and first >= 0:
        bos_tok = tok.id_to_token(first)
    return {"bos_id": bos_id, "bos_token": bos_tok, "adds_bos": bos_id >= 0 and first == bos_id,
            "eos_ids": [token_id(tj, eos_tok)] if eos_tok and token_id(tj, eos_tok) >= 0 else [],
            "eos_token": eos_tok, "n_ids": tok.get_vocab_size(with_added_tokens=True)}


def with_specials(tj, cfg, tok, text):
    if tj.get("post_processor"):
        return tok.encode(text, add_special_tokens=True).ids
    ids = tok.encode(text, add_special_tokens=False).ids
    cfg = cfg or {}
    bos, eos = cfg_token(cfg, "bos_token"), cfg_token(cfg, "eos_token")
    if cfg.get("add_bos_token") and bos and token_id(tj, bos) >= 0:
        ids = [token_id(tj, bos)] + ids
    if cfg.get("add_eos_token") and eos and token_id(tj, eos) >= 0:
        ids = ids + [token_id(tj, eos)]
    return ids


def vectors(tj, cfg, path, texts):
    tok = Tokenizer.from_str(json.dumps(tj))
    specials = [a["content"] for a in tj["added_tokens"]]
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": expected_meta(tj, cfg, tok)}, ensure_ascii=False) + "\n")
        for text in texts + special_texts(specials):
            ids = tok.encode(text, add_special_tokens=False).ids
            line = {"text": text, "ids": ids, "ids_special": with_specials(tj, cfg, tok, text),
                    "decoded": tok.decode(ids)}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return tok


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=0)
        f.write("\n")


def compare_with_transformers(name, d, vec_path, gguf_file=None):
    try:
        from transformers import AutoTokenizer
        t = AutoTokenizer.from_pretrained(d, gguf_file=gguf_file) if gguf_file else AutoTokenizer.from_pretrained(d)
    except Exception as e:  # noqa: BLE001 - report and go on
        print(f"  {name}: transformers could not load it ({str(e).splitlines()[0][:100]})")
        return
    diffs = 0
    lines = [json.loads(x) for x in open(vec_path, encoding="utf-8")]
    meta = lines[0]["meta"]
    tb = t.bos_token_id if t.bos_token_id is not None else -1
    if meta["bos_id"] != tb or meta["eos_ids"] != ([t.eos_token_id] if t.eos_token_id is not None else []):
        print(f"  {name}: transformers bos {tb} eos {t.eos_token_id}; vectors {meta['bos_id']} {meta['eos_ids']}")
    for v in lines[1:]:
        for key, flag in (("ids", False), ("ids_special", True)):
            got = t(v["text"], add_special_tokens=flag)["input_ids"]
            if got != v[key]:
                diffs += 1
                if diffs <= 3:
                    print(f"  {name}: transformers {key} differ for {v['text'][:40]!r}: {got[:12]} vs {v[key][:12]}")
    print(f"  {name}: transformers agrees on {2 * (len(lines) - 1) - diffs}/{2 * (len(lines) - 1)} encodings")


# ---- SmolLM2 reference from the GGUF --------------------------------------------------------

def smollm2_reference():
    import gguf
    r = gguf.GGUFReader(GGUF)
    f = r.fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    merges = f["tokenizer.ggml.merges"].contents()
    template_ = f["tokenizer.chat_template"].contents()
    vocab = {t: i for i, t in enumerate(tokens)}
    added_tokens = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                     "normalized": False, "special": True} for i, t in enumerate(tokens) if types[i] == 3]
    tj = tokenizer_json(vocab, merges, added_tokens, None,
                        {"type": "Sequence", "pretokenizers": [
                            {"type": "Digits", "individual_digits": True},
                            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
                        BL_POST, {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                  "use_regex": True})
    bos = tokens[int(f["tokenizer.ggml.bos_token_id"].contents())]
    eos = tokens[int(f["tokenizer.ggml.eos_token_id"].contents())]
    cfg = {"add_bos_token": bool(f["tokenizer.ggml.add_bos_token"].contents()), "add_prefix_space": False,
           "bos_token": bos, "eos_token": eos, "unk_token": "<|endoftext|>", "pad_token": eos,
           "chat_template": template_, "model_max_length": 8192, "tokenizer_class": "GPT2Tokenizer",
           "clean_up_tokenization_spaces": False}
    os.makedirs(REF_DIR, exist_ok=True)
    with open(os.path.join(REF_DIR, "tokenizer.json"), "w", encoding="utf-8") as out:
        json.dump(tj, out, ensure_ascii=False)
    write_json(os.path.join(REF_DIR, "tokenizer_config.json"), cfg)
    return tj, cfg


def main():
    syn = os.path.join(HERE, "synthetic")
    for name, (tj, cfg) in synthetic().items():
        d = os.path.join(syn, name)
        os.makedirs(d, exist_ok=True)
        Tokenizer.from_str(json.dumps(tj))  # HF must accept the file as written
        write_json(os.path.join(d, "tokenizer.json"), tj)
        cfg_path = os.path.join(d, "tokenizer_config.json")
        if cfg is not None:
            write_json(cfg_path, cfg)
        elif os.path.exists(cfg_path):
            os.remove(cfg_path)
        vectors(tj, cfg, os.path.join(d, "vectors.jsonl"), TEXTS)
        if cfg is not None:
            compare_with_transformers(name, d, os.path.join(d, "vectors.jsonl"))
    for name in ("llama2", "llama3"):
        d = os.path.join(SHARED, "tokenizers", name)
        tj = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
        cfg = json.load(open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8"))
        vec = os.path.join(HERE, name + ".vectors.jsonl")
        vectors(tj, cfg, vec, TEXTS)
        compare_with_transformers(name, d, vec)
    tj, cfg = smollm2_reference()
    vec = os.path.join(HERE, "smollm2.vectors.jsonl")
    vectors(tj, cfg, vec, TEXTS)
    compare_with_transformers("smollm2 (reference dir)", REF_DIR, vec)
    compare_with_transformers("smollm2 (transformers from the GGUF)", os.path.dirname(GGUF), vec,
                              gguf_file=os.path.basename(GGUF))


if __name__ == "__main__":
    sys.exit(main())
