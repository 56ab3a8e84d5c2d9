#!/usr/bin/env python3
"""Greedy reference outputs for SmolLM2-135M-Instruct (Q4_1 GGUF), written to greedy.json.

kvserve imports the GGUF (dequantized to f32) and must reproduce these token ids exactly.
Run once by hand with the reference venv; CI only reads greedy.json.

Two independent float64 forward passes over the same dequantized weights:
  * HF transformers (its own GGUF loader dequantizes and un-permutes Q/K), `.double()`,
    eager attention, greedy with a KV cache;
  * a small numpy forward written here over weights dequantized by the `gguf` package,
    with the llama.cpp Q/K row permutation undone by hand.
Both must produce the same ids for every case, or the script fails.

Tokenization uses HF `tokenizers` with a tokenizer.json built here from the GGUF
metadata in SmolLM2's own structure (Digits(individual) then ByteLevel pre-tokenizer;
no BOS). Chat prompts are rendered with the GGUF chat template the way transformers'
apply_chat_template renders it (sandboxed jinja2, trim_blocks, lstrip_blocks,
add_generation_prompt=True) and tokenized with add_special_tokens=False.

Every case has max_new_tokens generated ids: a case whose greedy decode reaches EOS
is continued past it ("ignore_eos": true, "eos_at" = index of the first EOS), keeping
the EOS id in the sequence and feeding it back, as `kvctl generate --ignore-eos` does.
min_top2_margin covers all generated steps.

Usage: make_reference.py [--model PATH.gguf] [--tok-dir DIR] [--out greedy.json]
                         [--skip-transformers] [--stock-too] [--stop-at-eos]
transformers' GGUF loader needs the `accelerate` package (it was run with
PYTHONPATH pointing at a `pip install --no-deps --target` copy of accelerate 1.16.0).
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_NEW = 64
EOS_ID = 2
NEAR_TIE = 1e-3

RAW_PROMPTS = [
    ("raw_capital_france", "The capital of France is"),
    ("raw_fibonacci", "def fibonacci(n):"),
    ("raw_apollo_digits", "In 1969, 3 astronauts flew 384400 km to"),
    ("raw_once_upon", "Once upon a time"),
]
# Tokenizer-only texts: digits after runs of whitespace are where SmolLM2's Digits step
# changes ids (transformers' GGUF converter, which drops that step, gets these wrong).
TOKENIZE_ONLY = [
    "x  3",
    "a   12 b",
    "value:  42\n   7",
    "\n\n1.",
    "x\t\t5",
    "Pi is 3.14159, and 2024-11-05 12:34",
    "  leading  spaces\n\n\ttabs 99 bottles",
    "h\u00e9llo w\u00f6rld \u65e5\u672c\u8a9e \U0001f642 123abc",
    "<|im_start|>user\nhi<|im_end|>\n",
]
CHAT_PROMPTS = [
    ("chat_capital_france", "What is the capital of France?"),
    ("chat_haiku_sea", "Write a haiku about the sea."),
    ("chat_primes", "List three prime numbers greater than 100."),
]


def default_model_path():
    base = os.environ.get("KVSERVE_TEST_MODELS") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "shared", "models")
    return os.path.join(base, "smollm2-135m-instruct", MODEL_NAME)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- tokenizer

def build_tokenizer(reader, tok_dir):
    """tokenizer.json in SmolLM2's structure from the GGUF vocab/merges; returns (Tokenizer, config)."""
    from tokenizers import Tokenizer

    f = reader.fields
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    merges = f["tokenizer.ggml.merges"].contents()
    assert f["tokenizer.ggml.model"].contents() == "gpt2"
    assert f["tokenizer.ggml.pre"].contents() == "smollm"
    assert f["tokenizer.ggml.add_bos_token"].contents() is False
    control = [i for i, t in enumerate(types) if t == 3]  # llama.cpp CONTROL = special added tokens
    tj = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True} for i in control],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": [m.split(" ") for m in merges]},
    }
    cfg = {
        "add_bos_token": False, "add_prefix_space": False,
        "bos_token": tokens[f["tokenizer.ggml.bos_token_id"].contents()],
        "eos_token": tokens[f["tokenizer.ggml.eos_token_id"].contents()],
        "unk_token": tokens[f["tokenizer.ggml.unknown_token_id"].contents()],
        "pad_token": tokens[f["tokenizer.ggml.padding_token_id"].contents()],
        "additional_special_tokens": [tokens[i] for i in control],
        "chat_template": f["tokenizer.chat_template"].contents(),
        "model_max_length": int(f["llama.context_length"].contents()),
        "clean_up_tokenization_spaces": False,
        "tokenizer_class": "GPT2Tokenizer",
    }
    os.makedirs(tok_dir, exist_ok=True)
    with open(os.path.join(tok_dir, "tokenizer.json"), "w", encoding="utf-8") as out:
        json.dump(tj, out, ensure_ascii=False)
    with open(os.path.join(tok_dir, "tokenizer_config.json"), "w", encoding="utf-8") as out:
        json.dump(cfg, out, ensure_ascii=False, indent=1)
    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    return tok, cfg


def render_chat(template, cfg, user_text):
    """Render as transformers' apply_chat_template(add_generation_prompt=True, tokenize=False) does."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: \
        json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    env.globals["raise_exception"] = raise_exception
    special = {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    return env.from_string(template).render(
        messages=[{"role": "user", "content": user_text}], add_generation_prompt=True, **special)


# ---------------------------------------------------------------- numpy forward

class NumpyLlama:
    """float64 llama forward over gguf-dequantized weights, Q/K un-permuted to HF's half-split RoPE."""

    def __init__(self, reader):
        f = reader.fields
        g = lambda k: f[k].contents()
        self.n_layer = int(g("llama.block_count"))
        self.dim = int(g("llama.embedding_length"))
        self.n_head = int(g("llama.attention.head_count"))
        self.n_kv = int(g("llama.attention.head_count_kv"))
        self.head_dim = self.dim // self.n_head
        self.theta = float(g("llama.rope.freq_base"))
        self.eps = float(g("llama.attention.layer_norm_rms_epsilon"))
        from gguf.quants import dequantize
        w = {}
        for t in reader.tensors:
            a = dequantize(t.data, t.tensor_type)
            w[t.name] = np.asarray(a, dtype=np.float64).reshape([int(x) for x in reversed(t.shape)])
        for i in range(self.n_layer):
            w[f"blk.{i}.attn_q.weight"] = self.unpermute(w[f"blk.{i}.attn_q.weight"], self.n_head)
            w[f"blk.{i}.attn_k.weight"] = self.unpermute(w[f"blk.{i}.attn_k.weight"], self.n_kv)
        assert "output.weight" not in w  # tied embeddings
        self.w = w
        inv = 1.0 / self.theta ** (np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim)
        self.inv_freq = inv

    @staticmethod
    def unpermute(w, n_head):
        # llama.cpp did w.reshape(n_head, 2, r//n_head//2, c).swapaxes(1, 2).reshape(r, c)
        r, c = w.shape
        return w.reshape(n_head, r // n_head // 2, 2, c).swapaxes(1, 2).reshape(r, c)

    def rope(self, x, pos):  # x: [T, H, D], half-split (rotate_half) convention
        ang = np.outer(pos.astype(np.float64), self.inv_freq)
        emb = np.concatenate([ang, ang], axis=-1)
        cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
        h = self.head_dim // 2
        rot = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
        return x * cos + rot * sin

    def rms(self, x, wt):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * wt

    def forward(self, ids, cache):
        """ids: new tokens; cache: list of (K, V) per layer, extended in place. Returns logits [T, V]."""
        w = self.w
        T = len(ids)
        start = cache[0][0].shape[0] if cache else 0
        pos = np.arange(start, start + T)
        x = w["token_embd.weight"][np.asarray(ids)]
        D, H, KV = self.head_dim, self.n_head, self.n_kv
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self.rms(x, w[p + "attn_norm.weight"])
            q = (h @ w[p + "attn_q.weight"].T).reshape(T, H, D)
            k = (h @ w[p + "attn_k.weight"].T).reshape(T, KV, D)
            v = (h @ w[p + "attn_v.weight"].T).reshape(T, KV, D)
            q, k = self.rope(q, pos), self.rope(k, pos)
            if len(cache) <= i:
                cache.append((np.zeros((0, KV, D)), np.zeros((0, KV, D))))
            K = np.concatenate([cache[i][0], k]); V = np.concatenate([cache[i][1], v])
            cache[i] = (K, V)
            S = K.shape[0]
            rep = H // KV
            Kh = np.repeat(K, rep, axis=1).transpose(1, 0, 2)  # [H, S, D]
            Vh = np.repeat(V, rep, axis=1).transpose(1, 0, 2)
            sc = np.einsum("thd,hsd->hts", q, Kh) / np.sqrt(D)
            mask = np.arange(S)[None, :] > (start + np.arange(T))[:, None]
            sc = np.where(mask[None], -np.inf, sc)
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc /= sc.sum(-1, keepdims=True)
            o = np.einsum("hts,hsd->thd", sc, Vh).reshape(T, H * D)
            x = x + o @ w[p + "attn_output.weight"].T
            h = self.rms(x, w[p + "ffn_norm.weight"])
            gt = h @ w[p + "ffn_gate.weight"].T
            up = h @ w[p + "ffn_up.weight"].T
            x = x + (gt / (1.0 + np.exp(-gt)) * up) @ w[p + "ffn_down.weight"].T
        x = self.rms(x, w["output_norm.weight"])
        return x @ w["token_embd.weight"].T


def greedy(step_fn, prompt_ids, ignore_eos):
    """step_fn(new_ids) -> float64 logits of the last position. Returns (ids, eos_at, margins, first_logits).

    eos_at is the index of the first EOS. With ignore_eos, EOS is no stop condition but
    still a token: it is kept in the output and fed back, as `kvctl generate --ignore-eos` does."""
    logits = step_fn(prompt_ids)
    first = logits.copy()
    out, margins, eos_at = [], [], None
    for n in range(N_NEW):
        top2 = np.argsort(logits)[-2:]
        nxt = int(np.argmax(logits))
        margins.append(float(logits[top2[1]] - logits[top2[0]]))
        out.append(nxt)
        if nxt == EOS_ID and eos_at is None:
            eos_at = n
        if nxt == EOS_ID and not ignore_eos:
            break
        if n + 1 < N_NEW:
            logits = step_fn([nxt])
    return out, eos_at, margins, first


def numpy_runner(model):
    def run(prompt_ids, ignore_eos):
        cache = []
        return greedy(lambda ids: model.forward(ids, cache)[-1], prompt_ids, ignore_eos)
    return run


def force_float64(m, mode):
    """Stock transformers keeps three float32 islands even after .double(): RMSNorm
    (.to(float32)), RoPE cos/sin (computed in float32) and eager softmax (dtype=float32).
    These patches make them float64 while mode["f64"] is true, and leave the stock code
    in charge otherwise, so one loaded model serves both runs."""
    import types
    import torch
    from transformers.models.llama import modeling_llama as ml

    for mod in m.modules():
        if isinstance(mod, ml.LlamaRMSNorm):
            stock = mod.forward

            def rms(self, x, stock=stock):
                if not mode["f64"]:
                    return stock(x)
                var = x.pow(2).mean(-1, keepdim=True)
                return self.weight * (x * torch.rsqrt(var + self.variance_epsilon))
            mod.forward = types.MethodType(rms, mod)
        elif isinstance(mod, ml.LlamaRotaryEmbedding):
            stock = mod.forward
            dim = m.config.head_dim if getattr(m.config, "head_dim", None) else \
                m.config.hidden_size // m.config.num_attention_heads
            base = m.config.rope_parameters["rope_theta"]
            inv64 = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
            assert mod.attention_scaling == 1.0

            def rope(self, x, position_ids, stock=stock, inv64=inv64):
                if not mode["f64"]:
                    return stock(x, position_ids)
                freqs = position_ids[..., None].to(torch.float64) * inv64
                emb = torch.cat((freqs, freqs), dim=-1)
                return emb.cos().to(x.dtype), emb.sin().to(x.dtype)
            mod.forward = types.MethodType(rope, mod)
    stock_attn = ml.eager_attention_forward

    def attn(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        if not mode["f64"]:
            return stock_attn(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        k = ml.repeat_kv(key, module.num_key_value_groups)
        v = ml.repeat_kv(value, module.num_key_value_groups)
        w = torch.matmul(query, k.transpose(2, 3)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        w = torch.softmax(w, dim=-1)
        return torch.matmul(w, v).transpose(1, 2).contiguous(), w
    ml.eager_attention_forward = attn


def transformers_runner(model_dir, model_file, mode):
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache
    m = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=model_file, dtype=torch.float32,
                                             attn_implementation="eager")
    m = m.double().eval()
    force_float64(m, mode)

    def run(prompt_ids, ignore_eos):
        cache = DynamicCache()
        pos = [0]

        def step(ids):
            t = torch.tensor([ids], dtype=torch.long)
            cp = torch.arange(pos[0], pos[0] + len(ids))
            with torch.no_grad():
                o = m(input_ids=t, past_key_values=cache, use_cache=True, cache_position=cp)
            assert o.logits.dtype == torch.float64
            pos[0] += len(ids)
            return o.logits[0, -1].numpy()
        return greedy(step, prompt_ids, ignore_eos)
    return m, run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model_path())
    ap.add_argument("--tok-dir", default="/work/ref/smollm2-tok")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "greedy.json"))
    ap.add_argument("--skip-transformers", action="store_true")
    ap.add_argument("--stock-too", action="store_true",
                    help="also decode with transformers' stock .double() (float32 norm/RoPE/softmax)")
    ap.add_argument("--stop-at-eos", action="store_true",
                    help="end a case at its first EOS (the old output) instead of continuing it "
                         "past EOS to max_new_tokens")
    args = ap.parse_args()
    import gguf
    import tokenizers

    t0 = time.time()
    reader = gguf.GGUFReader(args.model)
    tok, cfg = build_tokenizer(reader, args.tok_dir)
    template = cfg["chat_template"]

    cases = []
    for name, text in RAW_PROMPTS:
        cases.append({"name": name, "chat": False, "prompt": text, "rendered_prompt": text})
    for name, text in CHAT_PROMPTS:
        cases.append({"name": name, "chat": True, "prompt": text,
                      "rendered_prompt": render_chat(template, cfg, text)})
    for c in cases:
        c["prompt_ids"] = tok.encode(c["rendered_prompt"], add_special_tokens=False).ids

    timings = {}
    t = time.time()
    npm = NumpyLlama(reader)
    timings["numpy_load_s"] = time.time() - t
    np_run = numpy_runner(npm)

    ref_desc = None
    tf_run = None
    if not args.skip_transformers:
        import torch
        import transformers
        t = time.time()
        mode = {"f64": True}
        hf_model, tf_run = transformers_runner(os.path.dirname(os.path.abspath(args.model)),
                                               os.path.basename(args.model), mode)
        timings["transformers_load_s"] = time.time() - t
        # Same dequantized weights? (f32 both ways before .double())
        sd = hf_model.state_dict()
        wdiff = 0.0
        for i in range(npm.n_layer):
            for hf, gg in (("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
                           ("mlp.down_proj", "ffn_down")):
                a = sd[f"model.layers.{i}.{hf}.weight"].numpy()
                wdiff = max(wdiff, float(np.abs(a - npm.w[f"blk.{i}.{gg}.weight"]).max()))
        wdiff = max(wdiff, float(np.abs(sd["model.embed_tokens.weight"].numpy()
                                        - npm.w["token_embd.weight"]).max()))
        print(f"max |transformers weight - gguf dequant unpermuted| = {wdiff:g}")
        ref_desc = (f"transformers {transformers.__version__} + torch {torch.__version__} float64 "
                    f"(GGUF dequantized by transformers, .double(), eager attention, RMSNorm/RoPE/softmax "
                    f"patched to float64 since stock keeps them float32; greedy argmax with KV cache); cross-checked by an independent numpy {np.__version__} float64 forward "
                    f"over gguf.quants.dequantize weights (ids identical for every case); tokenizer: "
                    f"tokenizers {tokenizers.__version__} with SmolLM2's structure "
                    f"(Digits individual + ByteLevel), no BOS")
    else:
        ref_desc = (f"numpy {np.__version__} float64 forward over gguf.quants.dequantize weights "
                    f"(greedy argmax with KV cache); tokenizer: tokenizers {tokenizers.__version__} "
                    f"with SmolLM2's structure (Digits individual + ByteLevel), no BOS")

    logits_check = None
    for c in cases:
        # Every case gets max_new_tokens ids: one that reaches EOS is continued past it
        # (ignore_eos); one that never does is the same decode either way.
        t = time.time()
        ids_np, eos_np, marg_np, first_np = np_run(c["prompt_ids"], not args.stop_at_eos)
        timings[f"numpy_{c['name']}_s"] = time.time() - t
        ids, eos_at, margins, first = ids_np, eos_np, marg_np, first_np
        if tf_run is not None:
            t = time.time()
            mode["f64"] = True
            ids, eos_at, margins, first = tf_run(c["prompt_ids"], not args.stop_at_eos)
            timings[f"transformers_{c['name']}_s"] = time.time() - t
            c["_np_vs_tf_first_logits_maxabs"] = float(np.abs(first - first_np).max())
            if ids != ids_np:
                sys.exit(f"{c['name']}: transformers and numpy disagree:\n{ids}\n{ids_np}")
            if args.stock_too:
                mode["f64"] = False
                ids_st, _, marg_st, first_st = tf_run(c["prompt_ids"], not args.stop_at_eos)
                mode["f64"] = True
                c["_stock_first_logits_maxabs"] = float(np.abs(first_st - first_np).max())
                c["_stock_same_ids"] = ids_st == ids
                c["_stock_min_margin"] = min(marg_st)
        c["generated_ids"] = ids
        c["generated_text"] = tok.decode(ids, skip_special_tokens=False)
        c["eos_at"] = eos_at
        c["ignore_eos"] = eos_at is not None and not args.stop_at_eos
        if c["ignore_eos"]:
            c["_margin_to_eos"] = min(margins[:eos_at + 1])
        c["min_top2_margin"] = min(margins)
        c["_margin_step"] = int(np.argmin(margins))
        if logits_check is None:
            top = np.argsort(first)[::-1][:5]
            logits_check = {"case": c["name"], "position": len(c["prompt_ids"]) - 1,
                            "top5_ids": [int(i) for i in top],
                            "top5_logits": [float(first[i]) for i in top]}
        print(f"{c['name']}: {len(c['prompt_ids'])} prompt ids, {len(ids)} generated, eos_at={eos_at}, "
              f"ignore_eos={c['ignore_eos']}, min margin {c['min_top2_margin']:.6g} at step {c['_margin_step']}"
              f"{'' if '_margin_to_eos' not in c else ' (up to eos: %.6g)' % c['_margin_to_eos']}, "
              f"np/tf first-logit diff {c.get('_np_vs_tf_first_logits_maxabs')}", flush=True)
        if "_stock_same_ids" in c:
            print(f"  stock transformers .double(): same ids {c['_stock_same_ids']}, "
                  f"first-logit diff vs numpy {c['_stock_first_logits_maxabs']:.3g}, "
                  f"min margin {c['_stock_min_margin']:.6g}", flush=True)
        if c["min_top2_margin"] < NEAR_TIE:
            print(f"WARNING: {c['name']} has a near-tie (margin < {NEAR_TIE})", flush=True)

    doc = {
        "model": MODEL_NAME,
        "sha256": sha256_of(args.model),
        "reference": ref_desc,
        "add_bos": False,
        "eos_id": EOS_ID,
        "max_new_tokens": N_NEW,
        "cases": [{k: v for k, v in c.items() if not k.startswith("_")} for c in cases],
        "logits_check": logits_check,
        "tokenize_only": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids}
                          for t in TOKENIZE_ONLY],
    }
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(doc, out, ensure_ascii=False, indent=1)
        out.write("\n")
    timings["total_s"] = time.time() - t0
    print(json.dumps({k: round(v, 2) for k, v in timings.items()}))


if __name__ == "__main__":
    main()
