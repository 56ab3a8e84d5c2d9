#!/usr/bin/env python3
"""Golden perplexity of SmolLM2-135M-Instruct (the shared Q4_1 GGUF, dequantized to float64)
on /usr/share/common-licenses/GPL-3 with a context of 512, by llama.cpp's method (see
make_stories_golden.py): the first CHUNKS chunks (what CI runs) and, with --all, the whole
file (14 chunks; llama-perplexity with F32 weights and F32 KV prints 18.3001).

Independent of kvserve's importer: the weights come straight from the GGUF through gguf-py's
reference dequantizers, and the forward pass uses llama.cpp's interleaved ("normal") RoPE on
the GGUF's permuted Q/K rows. The token ids come from HF `tokenizers` on the tokenizer.json
given (checked once equal to llama.cpp's `llama-tokenize` on this text: 7638 ids).
usage: make_smollm2_golden.py GGUF TOKENIZER_JSON [CHUNKS] [--all] > smollm2_gpl3_golden.json"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import Tokenizer

TEXT = "/usr/share/common-licenses/GPL-3"
CTX = 512


class Llama:
    def __init__(self, path):
        r = GGUFReader(path)
        f = {k: v.parts[v.data[0]] for k, v in r.fields.items() if v.data}
        self.n_layers = int(f["llama.block_count"][0])
        self.n_heads = int(f["llama.attention.head_count"][0])
        self.n_kv = int(f["llama.attention.head_count_kv"][0])
        self.dim = int(f["llama.embedding_length"][0])
        self.hd = self.dim // self.n_heads
        self.eps = float(f["llama.attention.layer_norm_rms_epsilon"][0])
        base = float(f["llama.rope.freq_base"][0])
        self.inv_freq = base ** (-np.arange(0, self.hd, 2, dtype=np.float64) / self.hd)
        self.w = {}
        for t in r.tensors:  # ggml shape [in, out] -> numpy [out, in]
            a = dequantize(t.data, t.tensor_type).astype(np.float64)
            self.w[t.name] = a.reshape([int(d) for d in reversed(t.shape)]) if a.ndim > 1 or len(t.shape) > 1 else a

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):  # ggml rope mode 0: pairs (2i, 2i+1)
        ang = np.outer(pos, self.inv_freq)[:, None, :]
        c, s = np.cos(ang), np.sin(ang)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def logits(self, ids):
        w, T, g = self.w, len(ids), self.n_heads // self.n_kv
        x = w["token_embd.weight"][ids]
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for l in range(self.n_layers):
            p = f"blk.{l}."
            h = self.rms(x, w[p + "attn_norm.weight"])
            q = self.rope((h @ w[p + "attn_q.weight"].T).reshape(T, self.n_heads, self.hd), pos)
            k = self.rope((h @ w[p + "attn_k.weight"].T).reshape(T, self.n_kv, self.hd), pos)
            v = (h @ w[p + "attn_v.weight"].T).reshape(T, self.n_kv, self.hd)
            out = np.empty_like(q)
            for hh in range(self.n_heads):
                s = q[:, hh] @ k[:, hh // g].T / np.sqrt(self.hd) + mask
                s = np.exp(s - s.max(axis=-1, keepdims=True))
                out[:, hh] = (s / s.sum(axis=-1, keepdims=True)) @ v[:, hh // g]
            x = x + out.reshape(T, -1) @ w[p + "attn_output.weight"].T
            h = self.rms(x, w[p + "ffn_norm.weight"])
            gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
        x = self.rms(x, w["output_norm.weight"])
        return x @ w.get("output.weight", w["token_embd.weight"]).T


def main():
    args = [a for a in sys.argv[1:] if a != "--all"]
    gguf_path, tok_path = args[0], args[1]
    n_ci = int(args[2]) if len(args) > 2 else 4
    text = open(TEXT, encoding="utf-8").read()
    if text.endswith("\n"):
        text = text[:-1]
    ids = Tokenizer.from_file(tok_path).encode(text).ids  # SmolLM2 adds no BOS
    model = Llama(gguf_path)
    n_chunks = len(ids) // CTX if "--all" in sys.argv else n_ci
    first = CTX // 2
    nll = nll2 = 0.0
    count = 0
    runs = {}
    for c in range(n_chunks):
        chunk = ids[c * CTX:(c + 1) * CTX]
        lg = model.logits(np.array(chunk))
        for i in range(first, CTX - 1):
            m = lg[i].max()
            v = m + np.log(np.exp(lg[i] - m).sum()) - lg[i][chunk[i + 1]]
            nll, nll2, count = nll + v, nll2 + v * v, count + 1
        mean = nll / count
        ppl = float(np.exp(mean))
        runs[c + 1] = {"chunks": c + 1, "tokens_scored": count, "ppl": ppl,
                       "ppl_stderr": float(np.sqrt((nll2 / count - mean * mean) / (count - 1)) * ppl)}
        print(f"[{c + 1}]{ppl:.4f}", file=sys.stderr, flush=True)
    out = {"model": "SmolLM2-135M-Instruct.Q4_1.gguf (dequantized)", "text": TEXT, "ctx": CTX, "n_tokens": len(ids),
           "ci": runs[n_ci], "all": runs[n_chunks] if n_chunks == len(ids) // CTX else None}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
