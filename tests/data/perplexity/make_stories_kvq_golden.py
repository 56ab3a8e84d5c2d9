#!/usr/bin/env python3
"""Golden perplexity of stories260K on stories.txt with a quantized KV cache, the scheme of
issue 14 written again from its formula, apart from the C code (kernels/cpu/kv_quant.c,
common/engine/engine_kvq.c):

  per group of values x: S = f16((max - min) / (2^b - 1)), Z = f16(round(-min / S)) (a constant
  group: S = f16(|m|), Z = -sign(m)), q = clamp(round(x / S) + Z, 0, 2^b - 1), x' = (q - Z) * S,
  rounding to nearest even, in float32 as the engine computes its K/V;
  keys per channel (a group = one channel of one head over a block's 16 tokens) or per token
  (groups of G channels, as values); values per token in groups of G channels;
  a query at position p reads blocks 0 .. ws - 1 dequantized and positions ws*16 .. p at full
  precision, ws = max(0, p // 16 - R + 1), R = the residual window in blocks.

The forward pass is make_stories_golden.py's float64 numpy Llama (its K/V rounded to float32
before quantizing); scoring is llama.cpp's. Run once; its output (stories_kvq_golden.json) is
committed. usage: make_stories_kvq_golden.py MODEL_DIR > stories_kvq_golden.json"""
import json
import os
import sys

import numpy as np
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_stories_golden import HERE, Llama, perplexity  # noqa: E402

BS = 16


def quant_groups(x, bits):
    """x [..., n]: each last-axis run is a group; returns x' (float32)."""
    x = x.astype(np.float32)
    qmax = np.float32((1 << bits) - 1)
    mn, mx = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = ((mx - mn) / qmax).astype(np.float16).astype(np.float32)
        z = np.rint(-mn / s).astype(np.float16).astype(np.float32)
    const = mx == mn
    s_c = np.abs(mn).astype(np.float16).astype(np.float32)
    z_c = np.where(s_c == 0, 0, np.where(mn > 0, -1, 1)).astype(np.float32)
    s, z = np.where(const, s_c, s), np.where(const, z_c, z)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.rint(x / s) + z, 0, qmax)
    q = np.where(s == 0, z, q)  # an all-zero group: x' = 0
    return ((q - z) * s).astype(np.float32)


def quant_cache(kv, bits, per_channel, group):
    """kv [T, H, hd] -> the values its sealed blocks stand for (the last partial block as is)."""
    T, H, hd = kv.shape
    out = kv.astype(np.float32).copy()
    n_full = T // BS
    for b in range(n_full):
        blk = out[b * BS:(b + 1) * BS]  # [16, H, hd]
        if per_channel:  # groups over the block's tokens
            g = np.transpose(blk, (1, 2, 0))  # [H, hd, 16]
            blk[:] = np.transpose(quant_groups(g, bits), (2, 0, 1))
        else:
            g = blk.reshape(BS, H, hd // group, group)
            blk[:] = quant_groups(g, bits).reshape(BS, H, hd)
    return out


class QuantLlama(Llama):
    def __init__(self, model_dir, bits, per_channel_keys, residual_blocks, group=32):
        super().__init__(model_dir)
        self.bits, self.pck, self.rb = bits, per_channel_keys, residual_blocks
        self.group = min(group, self.hd)

    def attend(self, q, k, v, mask):
        T = q.shape[0]
        kq = quant_cache(k, self.bits, self.pck, self.group).astype(np.float64)
        vq = quant_cache(v, self.bits, False, self.group).astype(np.float64)
        k32, v32 = k.astype(np.float32).astype(np.float64), v.astype(np.float32).astype(np.float64)
        ws = np.maximum(0, np.arange(T) // BS - self.rb + 1) * BS
        use_q = np.arange(T)[None, :] < ws[:, None]  # [query, key]: read quantized
        g = self.n_heads // self.n_kv
        out = np.empty_like(q)
        for hh in range(self.n_heads):
            kv_h = hh // g
            s = np.where(use_q, q[:, hh] @ kq[:, kv_h].T, q[:, hh] @ k32[:, kv_h].T) / np.sqrt(self.hd) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            out[:, hh] = np.where(use_q, s, 0) @ vq[:, kv_h] + np.where(use_q, 0, s) @ v32[:, kv_h]
        return out

    def logits(self, ids):
        w, T = self.w, len(ids)
        x = w["model.embed_tokens.weight"][ids]
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for l in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{l}."
            h = self.rms(x, w[p + "input_layernorm.weight"])
            q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, self.n_heads, self.hd)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, self.n_kv, self.hd)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, self.n_kv, self.hd)
            q, k = self.rope(q, pos), self.rope(k, pos)
            out = self.attend(q, k, v, mask)
            x = x + out.reshape(T, -1) @ w[p + "self_attn.o_proj.weight"].T
            h = self.rms(x, w[p + "post_attention_layernorm.weight"])
            gate = h @ w[p + "mlp.gate_proj.weight"].T
            up = h @ w[p + "mlp.up_proj.weight"].T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
        x = self.rms(x, w["model.norm.weight"])
        head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
        return x @ head.T


CONFIGS = [  # name, bits, keys per channel, residual blocks
    ("int8", 8, True, 1), ("int4", 4, True, 1), ("int4-token-keys", 4, False, 1), ("int2", 2, True, 1),
    ("int2-residual-32", 2, True, 2),
]


def main():
    model_dir = sys.argv[1]
    ctx = 256
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    text = open(os.path.join(HERE, "stories.txt"), encoding="utf-8").read()
    if text.endswith("\n"):
        text = text[:-1]
    ids = tok.encode(text).ids
    bos = ids[0] if tok.encode("a").ids[0] != tok.encode("a", add_special_tokens=False).ids[0] else None
    runs = []
    for name, bits, pck, rb in CONFIGS:
        r = perplexity(QuantLlama(model_dir, bits, pck, rb), ids, ctx, bos)
        r.update({"name": name, "bits": bits, "keys": "channel" if pck else "token", "residual": rb * BS})
        del r["running_ppl"]
        runs.append(r)
    json.dump({"model": "stories260K", "text": "stories.txt", "ctx": ctx, "block_size": BS, "runs": runs}, sys.stdout,
              indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
