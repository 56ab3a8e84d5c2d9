#!/usr/bin/env python3
"""Converts a `kvctl model synth` directory into a llama GGUF that both llama.cpp and kvserve
load, so the two can be benchmarked on the same weights at the shapes of real models
(stories15m, stories110m, tinyllama-1.1b, ...), where no real checkpoint is at hand.

A dev tool, not run in CI; needs the `gguf` and `numpy` packages (the /work/venv python):

    build/bin/kvctl model synth --shape stories110m --dtype f32 --out /tmp/stories110m
    /work/venv/bin/python bench/synth_to_gguf.py /tmp/stories110m \\
        build/bench-models/shapes/stories110m.F32.gguf
    KVSERVE_GGUF=build/bench-models/shapes/stories110m.F32.gguf \\
        KVSERVE_BENCH_DIR=build/bench-models/shapes bench/vs-llamacpp.sh 3 2 "f32 q8_0 q4_0 q4_1"

End the output name in .F32.gguf (or .F16.gguf): vs-llamacpp.sh reads the source's format
from that suffix and makes the other formats from it with llama-quantize.

What it writes is what llama.cpp's convert_hf_to_gguf.py writes for a LlamaForCausalLM:
general.architecture "llama", the llama.* hyper-parameters from config.json, the tensors under
llama.cpp's names (token_embd, output_norm, output unless the embeddings are tied,
blk.N.{attn_norm,attn_q,attn_k,attn_v,attn_output,ffn_norm,ffn_gate,ffn_up,ffn_down}), with the
rows of attn_q / attn_k permuted as LlamaModel.permute does (each head's two rotary halves
interleaved; kvserve's GGUF loader undoes it, gguf_source_row). The synth tokenizer (byte-level
BPE, Llama-3 pre-tokenizer) becomes tokenizer.ggml.model "gpt2" with pre "llama-bpe", BOS the
config's bos_token_id and add_bos_token true, so a prompt is the same ids in kvserve's
directory and GGUF loaders and in llama.cpp. Only the layout is checked (names, shapes); the
values are copied as they are.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("synth_to_gguf: needs the gguf package (pip install gguf, or the /work/venv python)")

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def read_safetensors(path):
    """{name: numpy array (memory-mapped, f32 / f16, bf16 widened to f32)} of one file."""
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        if hlen > 100 << 20:
            raise ValueError(f"{path}: header of {hlen} bytes")
        header = json.loads(f.read(hlen))
    base = 8 + hlen
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dt = ST_DTYPES.get(t["dtype"])
        if dt is None:
            raise ValueError(f"{path}: {name} has dtype {t['dtype']} (F32, F16, BF16 only)")
        begin, end = t["data_offsets"]
        count = int(np.prod(t["shape"], dtype=np.int64))
        if end - begin != count * np.dtype(dt).itemsize:
            raise ValueError(f"{path}: {name} spans {end - begin} bytes for shape {t['shape']}")
        a = np.memmap(path, dtype=dt, mode="r", offset=base + begin, shape=tuple(t["shape"]))
        if t["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a
    return out


def read_weights(model_dir):
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if not os.path.exists(index):
        return read_safetensors(os.path.join(model_dir, "model.safetensors"))
    with open(index) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    out = {}
    for name in files:
        out.update(read_safetensors(os.path.join(model_dir, name)))
    return out


def permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute (n_head already the K heads for attn_k)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tokenizer_fields(model_dir, vocab_size):
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    model = tok["model"]
    if model.get("type") != "BPE":
        raise ValueError("tokenizer.json: not a BPE model")
    tokens = [None] * vocab_size
    types = [gguf.TokenType.NORMAL] * vocab_size
    for text, i in model["vocab"].items():
        if 0 <= i < vocab_size:
            tokens[i] = text
    for added in tok.get("added_tokens", []):
        i = added["id"]
        if 0 <= i < vocab_size:
            tokens[i] = added["content"]
            types[i] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    for i, t in enumerate(tokens):
        if t is None:  # as convert_hf_to_gguf.py pads a short vocabulary
            tokens[i] = f"[PAD{i}]"
            types[i] = gguf.TokenType.UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, types, merges


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", help="a kvctl model synth directory (config.json, tokenizer.json, weights)")
    ap.add_argument("out", help="the GGUF to write, e.g. stories110m.F32.gguf")
    ap.add_argument("--outtype", choices=["f32", "f16"], default="f32",
                    help="matrices' type (norms stay f32, as convert_hf_to_gguf.py keeps them)")
    args = ap.parse_args()

    with open(os.path.join(args.model_dir, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "llama":
        sys.exit(f"synth_to_gguf: model_type {cfg.get('model_type')!r} is not llama")
    if cfg.get("rope_scaling"):
        sys.exit("synth_to_gguf: rope_scaling is not supported (llama2/tinyllama/stories shapes have none)")
    hidden, inter = cfg["hidden_size"], cfg["intermediate_size"]
    layers, heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim", hidden // heads)
    vocab = cfg["vocab_size"]
    tied = cfg.get("tie_word_embeddings", False)

    w = read_weights(args.model_dir)
    mat_type = np.float32 if args.outtype == "f32" else np.float16
    tensors = []  # (gguf name, array, expected shape)

    def take(hf, name, shape, heads_to_permute=0, matrix=True):
        a = w.pop(hf, None)
        if a is None:
            sys.exit(f"synth_to_gguf: {args.model_dir}: missing tensor {hf}")
        if tuple(a.shape) != shape:
            sys.exit(f"synth_to_gguf: {hf} has shape {tuple(a.shape)}, expected {shape}")
        if heads_to_permute:
            a = permute(np.asarray(a), heads_to_permute)
        tensors.append((name, a, mat_type if matrix else np.float32))

    take("model.embed_tokens.weight", "token_embd.weight", (vocab, hidden))
    for i in range(layers):
        p = f"model.layers.{i}."
        b = f"blk.{i}."
        take(p + "input_layernorm.weight", b + "attn_norm.weight", (hidden,), matrix=False)
        take(p + "self_attn.q_proj.weight", b + "attn_q.weight", (heads * head_dim, hidden), heads)
        take(p + "self_attn.k_proj.weight", b + "attn_k.weight", (kv_heads * head_dim, hidden), kv_heads)
        take(p + "self_attn.v_proj.weight", b + "attn_v.weight", (kv_heads * head_dim, hidden))
        take(p + "self_attn.o_proj.weight", b + "attn_output.weight", (hidden, heads * head_dim))
        take(p + "post_attention_layernorm.weight", b + "ffn_norm.weight", (hidden,), matrix=False)
        take(p + "mlp.gate_proj.weight", b + "ffn_gate.weight", (inter, hidden))
        take(p + "mlp.up_proj.weight", b + "ffn_up.weight", (inter, hidden))
        take(p + "mlp.down_proj.weight", b + "ffn_down.weight", (hidden, inter))
    take("model.norm.weight", "output_norm.weight", (hidden,), matrix=False)
    if not tied:
        take("lm_head.weight", "output.weight", (vocab, hidden))
    else:
        w.pop("lm_head.weight", None)
    if w:
        sys.exit(f"synth_to_gguf: tensors not converted (cross-layer KV sharing?): {sorted(w)[:5]}")

    out_tmp = args.out + ".tmp"
    writer = gguf.GGUFWriter(out_tmp, "llama")
    writer.add_name(os.path.basename(os.path.normpath(args.model_dir)))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if args.outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(cfg.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(cfg.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    writer.add_vocab_size(vocab)

    tokens, types, merges = tokenizer_fields(args.model_dir, vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")  # the Llama-3 regex the synth tokenizer uses
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    # The directory's ids (config.json), so kvserve stops at the same token from both files.
    for key, add in (("bos_token_id", writer.add_bos_token_id), ("eos_token_id", writer.add_eos_token_id)):
        if isinstance(cfg.get(key), int) and 0 <= cfg[key] < vocab:
            add(cfg[key])
    # kvserve prepends config.json's BOS to a directory's prompts that has no tokenizer_config.json
    # (the synth one): the same from this file, in both programs.
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    for name, a, dt in tensors:
        writer.add_tensor(name, a if a.dtype == dt else a.astype(dt))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    os.replace(out_tmp, args.out)
    print(f"wrote {args.out}: {len(tensors)} tensors, {os.path.getsize(args.out) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
