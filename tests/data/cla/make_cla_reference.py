#!/usr/bin/env python3
"""Greedy reference for cross-layer KV sharing (CLA): an independent numpy (float64) forward
of the synthetic Llama models `kvctl model synth --cla F` writes, read from their
safetensors and config.json (never from kvserve's code).

Layer i attends with the K/V that layer i - (i mod F) computed; only those owner layers have
k_proj/v_proj. Llama otherwise: RMSNorm, rotate-half RoPE, GQA, SwiGLU, untied LM head.

Run once (needs the venv: numpy, safetensors, tokenizers) and commit cla_golden.json:
    /work/venv/bin/python tests/data/cla/make_cla_reference.py build-x/bin/kvctl > tests/data/cla/cla_golden.json
The kvctl binary is used only to write the models (its synth is the format under test); the
prompt is tokenized with HF tokenizers, BOS prepended as the config says."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

PROMPT = "The quick brown fox jumps over the lazy dog"
N_NEW = 16
CASES = [  # (shape, layers, cla F, seed): F = 1 checks the reference itself against the engine
    ("tiny", 4, 1, 4),
    ("tiny", 4, 2, 4),
    ("tiny", 5, 3, 4),
]


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, pos, theta):
    """x [n_heads, head_dim] at position pos, HF rotate_half."""
    hd = x.shape[-1]
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = pos * inv
    cos = np.concatenate([np.cos(ang), np.cos(ang)])
    sin = np.concatenate([np.sin(ang), np.sin(ang)])
    rot = np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], axis=-1)
    return x * cos + rot * sin


class Model:
    def __init__(self, d):
        self.c = json.load(open(os.path.join(d, "config.json")))
        self.w = {k: v.astype(np.float64) for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
        c = self.c
        self.L, self.H, self.KV = c["num_hidden_layers"], c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = c["head_dim"]
        self.F = c.get("cla_share_factor", 1)
        for i in range(self.L):  # the checkpoint must hold K/V projections exactly for owners
            has = f"model.layers.{i}.self_attn.k_proj.weight" in self.w
            assert has == (i % self.F == 0), (d, i)
        self.cache = {}  # owner layer -> (K list, V list)

    def step(self, tok, pos):
        c, w = self.c, self.w
        eps, theta = c["rms_norm_eps"], c["rope_theta"]
        x = w["model.embed_tokens.weight"][tok].copy()
        for i in range(self.L):
            p = f"model.layers.{i}."
            h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
            q = rope((w[p + "self_attn.q_proj.weight"] @ h).reshape(self.H, self.hd), pos, theta)
            owner = i - i % self.F
            if owner == i:
                k = rope((w[p + "self_attn.k_proj.weight"] @ h).reshape(self.KV, self.hd), pos, theta)
                v = (w[p + "self_attn.v_proj.weight"] @ h).reshape(self.KV, self.hd)
                ks, vs = self.cache.setdefault(i, ([], []))
                ks.append(k)
                vs.append(v)
            K = np.stack(self.cache[owner][0])  # [t, KV, hd]
            V = np.stack(self.cache[owner][1])
            out = np.empty((self.H, self.hd))
            g = self.H // self.KV
            for hh in range(self.H):
                s = K[:, hh // g, :] @ q[hh] / np.sqrt(self.hd)
                a = np.exp(s - s.max())
                out[hh] = (a / a.sum()) @ V[:, hh // g, :]
            x = x + w[p + "self_attn.o_proj.weight"] @ out.reshape(-1)
            h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
            gate = w[p + "mlp.gate_proj.weight"] @ h
            up = w[p + "mlp.up_proj.weight"] @ h
            x = x + w[p + "mlp.down_proj.weight"] @ (gate / (1 + np.exp(-gate)) * up)
        logits = w["lm_head.weight"] @ rmsnorm(x, w["model.norm.weight"], eps)
        m = logits.max()
        return logits - (m + np.log(np.exp(logits - m).sum()))  # log-softmax


def run_case(kvctl, tmp, shape, layers, F, seed):
    d = os.path.join(tmp, f"{shape}-l{layers}-cla{F}-s{seed}")
    subprocess.run([kvctl, "model", "synth", "--shape", shape, "--dtype", "f32", "--out", d, "--layers",
                    str(layers), "--cla", str(F), "--seed", str(seed)], check=True, stderr=subprocess.DEVNULL)
    m = Model(d)
    ids = Tokenizer.from_file(os.path.join(d, "tokenizer.json")).encode(PROMPT).ids
    if m.c.get("bos_token_id") is not None:
        ids = [m.c["bos_token_id"]] + ids
    for pos, t in enumerate(ids):
        lp = m.step(t, pos)
    out, lps, margin = [], [], 1e9
    for n in range(N_NEW):
        top2 = np.argsort(-lp)[:2]
        margin = min(margin, float(lp[top2[0]] - lp[top2[1]]))
        t = int(top2[0])
        out.append(t)
        lps.append(round(float(lp[t]), 6))
        if n + 1 < N_NEW:
            lp = m.step(t, len(ids) + n)
    return {"shape": shape, "layers": layers, "cla": F, "seed": seed, "prompt_ids": ids, "greedy_ids": out,
            "logprobs": lps, "min_top2_margin": round(margin, 6)}


def main():
    kvctl = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        cases = [run_case(kvctl, tmp, *c) for c in CASES]
    json.dump({"prompt": PROMPT, "cases": cases}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
