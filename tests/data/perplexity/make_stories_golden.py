#!/usr/bin/env python3
"""Golden perplexity of stories260K on stories.txt, by llama.cpp's method (tools/perplexity:
whole text tokenized with the tokenizer's specials, one trailing newline dropped as its -f
does; non-overlapping chunks of CTX tokens, BOS put at each chunk's first position when the
tokenizer adds one; the second half of each chunk scored: positions CTX/2 .. CTX-2 predict
the next token; PPL = exp(mean NLL), stderr = PPL * sqrt((E[nll^2] - E[nll]^2) / (N - 1))).

An independent reference: a float64 numpy Llama forward pass written from the HF modelling
code (RMSNorm, rotate-half RoPE, GQA, SwiGLU, tied embeddings), the safetensors read by hand,
HF `tokenizers` for the ids. Run once; its output (stories_golden.json) is committed.
usage: make_stories_golden.py MODEL_DIR [CTX ...] > stories_golden.json"""
import json
import os
import struct
import sys

import numpy as np
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32"
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(blob[a:b], dtype="<f4").reshape(t["shape"]).astype(np.float64)
    return out


class Llama:
    def __init__(self, model_dir):
        self.cfg = json.load(open(os.path.join(model_dir, "config.json")))
        self.w = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        c = self.cfg
        self.n_heads = c["num_attention_heads"]
        self.n_kv = c["num_key_value_heads"]
        self.hd = c["hidden_size"] // self.n_heads
        self.eps = c["rms_norm_eps"]
        self.inv_freq = 1.0 / (c["rope_theta"] ** (np.arange(0, self.hd, 2, dtype=np.float64) / self.hd))

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):  # x [T, H, hd], HF rotate_half
        ang = np.outer(pos, self.inv_freq)
        cos = np.concatenate([np.cos(ang)] * 2, axis=-1)[:, None, :]
        sin = np.concatenate([np.sin(ang)] * 2, axis=-1)[:, None, :]
        h = self.hd // 2
        rot = np.concatenate([-x[..., h:], x[..., :h]], axis=-1)
        return x * cos + rot * sin

    def logits(self, ids):
        w, T = self.w, len(ids)
        x = w["model.embed_tokens.weight"][ids]
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        g = self.n_heads // self.n_kv
        for l in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{l}."
            h = self.rms(x, w[p + "input_layernorm.weight"])
            q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, self.n_heads, self.hd)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, self.n_kv, self.hd)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, self.n_kv, self.hd)
            q, k = self.rope(q, pos), self.rope(k, pos)
            out = np.empty_like(q)
            for hh in range(self.n_heads):
                s = q[:, hh] @ k[:, hh // g].T / np.sqrt(self.hd) + mask
                s = np.exp(s - s.max(axis=-1, keepdims=True))
                s /= s.sum(axis=-1, keepdims=True)
                out[:, hh] = s @ v[:, hh // g]
            x = x + out.reshape(T, -1) @ w[p + "self_attn.o_proj.weight"].T
            h = self.rms(x, w[p + "post_attention_layernorm.weight"])
            gate = h @ w[p + "mlp.gate_proj.weight"].T
            up = h @ w[p + "mlp.up_proj.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
        x = self.rms(x, w["model.norm.weight"])
        head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
        return x @ head.T


def perplexity(model, tokens, ctx, bos):
    n_chunks = len(tokens) // ctx
    first = ctx // 2
    nll = nll2 = 0.0
    count = 0
    running = []
    for c in range(n_chunks):
        chunk = list(tokens[c * ctx:(c + 1) * ctx])
        if bos is not None:
            chunk[0] = bos
        lg = model.logits(np.array(chunk))
        for i in range(first, ctx - 1):
            row = lg[i]
            m = row.max()
            v = m + np.log(np.exp(row - m).sum()) - row[chunk[i + 1]]
            nll += v
            nll2 += v * v
            count += 1
        running.append(float(np.exp(nll / count)))
    mean = nll / count
    var = nll2 / count - mean * mean
    ppl = float(np.exp(mean))
    return {"ctx": ctx, "ppl": ppl, "ppl_stderr": float(np.sqrt(var / (count - 1)) * ppl), "chunks": n_chunks,
            "tokens_scored": count, "running_ppl": running}


def main():
    model_dir = sys.argv[1]
    ctxs = [int(a) for a in sys.argv[2:]] or [256]
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    text = open(os.path.join(HERE, "stories.txt"), encoding="utf-8").read()
    if text.endswith("\n"):
        text = text[:-1]
    ids = tok.encode(text).ids  # with the post-processor's BOS, as llama.cpp's common_tokenize(add_special)
    bos = ids[0] if tok.encode("a").ids[0] != tok.encode("a", add_special_tokens=False).ids[0] else None
    model = Llama(model_dir)
    out = {"model": "stories260K", "text": "stories.txt", "n_tokens": len(ids), "bos": bos,
           "runs": [perplexity(model, ids, c, bos) for c in ctxs]}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
