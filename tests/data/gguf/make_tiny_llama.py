#!/usr/bin/env python3
"""Writes two tiny synthetic llama GGUFs for tests/test_gguf.c (random weights; ran once, output
committed):

tiny_llama_bpe.gguf  2 layers, hidden 64, 4 heads, 2 KV heads, untied output, a mix of tensor
                     types; a byte-level BPE vocabulary (model gpt2, pre llama-bpe) trained on a
                     few sentences, BOS added, a chat template, and test keys of every value type.
tiny_llama_spm.gguf  1 layer, hidden 32, tied embeddings, head_dim given; a SentencePiece
                     vocabulary (model llama) with scores and no merges.
tiny_llama_spm.merges.json  the merges HF transformers derives from that vocabulary
                     (tokenization_utils_base.generate_merges), the importer's reference.

Q and K are stored permuted as llama.cpp's convert_hf_to_gguf.py stores them (the test undoes
nothing itself: it re-applies the permutation to the imported HF tensor and compares).
"""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, GGUFValueType as V
from gguf.quants import quantize
from transformers.tokenization_utils_base import generate_merges
from transformers.convert_slow_tokenizer import bytes_to_unicode

HERE = Path(__file__).parent
rng = np.random.default_rng(7)


def permute(w, n_head, n_head_kv):  # convert_hf_to_gguf.py LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def add(w, name, x, qtype):
    x = x.astype(np.float32)
    if qtype == Q.F32:
        w.add_tensor(name, x)
    elif qtype == Q.F16:
        w.add_tensor(name, x.astype(np.float16))
    else:
        w.add_tensor(name, quantize(x, qtype), raw_dtype=qtype)


def weights(w, hidden, heads, kv_heads, head_dim, ff, layers, vocab, tied, types):
    k = 0
    def next_type():
        nonlocal k
        k += 1
        return types[k % len(types)]
    add(w, "token_embd.weight", rng.standard_normal((vocab, hidden)) * 0.5, Q.Q8_0)
    for i in range(layers):
        q = rng.standard_normal((heads * head_dim, hidden)) * 0.3
        kk = rng.standard_normal((kv_heads * head_dim, hidden)) * 0.3
        add(w, f"blk.{i}.attn_norm.weight", 1 + 0.1 * rng.standard_normal(hidden), Q.F32)
        add(w, f"blk.{i}.attn_q.weight", permute(q, heads, heads), next_type())
        add(w, f"blk.{i}.attn_k.weight", permute(kk, heads, kv_heads), next_type())
        add(w, f"blk.{i}.attn_v.weight", rng.standard_normal((kv_heads * head_dim, hidden)) * 0.3, next_type())
        add(w, f"blk.{i}.attn_output.weight", rng.standard_normal((hidden, heads * head_dim)) * 0.3, next_type())
        add(w, f"blk.{i}.ffn_norm.weight", 1 + 0.1 * rng.standard_normal(hidden), Q.F32)
        add(w, f"blk.{i}.ffn_gate.weight", rng.standard_normal((ff, hidden)) * 0.3, next_type())
        add(w, f"blk.{i}.ffn_up.weight", rng.standard_normal((ff, hidden)) * 0.3, next_type())
        add(w, f"blk.{i}.ffn_down.weight", rng.standard_normal((hidden, ff)) * 0.3, next_type())
    add(w, "output_norm.weight", 1 + 0.1 * rng.standard_normal(hidden), Q.F32)
    if not tied:
        add(w, "output.weight", rng.standard_normal((vocab, hidden)) * 0.3, Q.Q4_1)


CORPUS = ("the quick brown fox jumps over the lazy dog. the dog sleeps; the fox runs "
          "there and then. they think that the weather is nice in the north. 1234 5678")


def train_bpe(n_merges):
    b2u = bytes_to_unicode()
    words = Counter()
    for word in CORPUS.replace(" ", " \x00").split("\x00"):
        words[tuple(b2u[b] for b in word.encode())] += 1
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for word, c in words.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = pairs.most_common(1)[0]
        merges.append((a, b))
        new = Counter()
        for word, c in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    return [b2u[i] for i in range(256)], merges


def tiny_bpe():
    hidden, heads, kv_heads, ff, layers = 64, 4, 2, 96, 2
    byte_tokens, merges = train_bpe(40)
    tokens = byte_tokens + [a + b for a, b in merges] + ["<|begin_of_text|>", "<|end_of_text|>", "<think>"]
    types = [1] * (len(tokens) - 3) + [3, 3, 4]
    w = gguf.GGUFWriter(str(HERE / "tiny_llama_bpe.gguf"), "llama")
    w.add_name("tiny-llama-bpe")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_bos_token_id(len(tokens) - 3)
    w.add_eos_token_id(len(tokens) - 2)
    w.add_add_bos_token(True)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    # one key of each value type, for the reader's getters
    w.add_key_value("test.u8", 200, V.UINT8)
    w.add_key_value("test.i8", -100, V.INT8)
    w.add_key_value("test.u16", 60000, V.UINT16)
    w.add_key_value("test.i16", -30000, V.INT16)
    w.add_key_value("test.i32", -5, V.INT32)
    w.add_key_value("test.u64", 1 << 40, V.UINT64)
    w.add_key_value("test.i64", -(1 << 40), V.INT64)
    w.add_key_value("test.f64", 0.25, V.FLOAT64)
    w.add_key_value("test.bool", True, V.BOOL)
    w.add_key_value("test.ints", [1, -2, 3], V.ARRAY, sub_type=V.INT16)
    w.add_key_value("test.floats", [0.5, -1.5], V.ARRAY, sub_type=V.FLOAT64)
    w.add_key_value("test.strings", ["a", "", "\u00e9t\u00e9"], V.ARRAY, sub_type=V.STRING)
    weights(w, hidden, heads, kv_heads, hidden // heads, ff, layers, len(tokens), False,
            [Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_0, Q.Q8_0, Q.F16, Q.BF16, Q.F32])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def spm_vocab():
    pieces = ["\u2581", "e", "t", "h", "a", "o", "n", "s", "i", "r", "\u2581t", "he", "\u2581the", "\u2581a",
              "an", "on", "\u2581an", "in", "er", "\u2581he", "the", "\u2581s", "\u2581i", "\u2581in", "at",
              "\u2581o", "\u2581on", "en", "es", "st", "\u2581st", "ent", "\u00e9", "t\u00e9", "\u2581\u00e9t\u00e9",
              "\u00e9t\u00e9", "\u00e9t", "\u2581\u00e9"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    # ties on purpose (groups of three share a score): the order then comes from lengths and position
    scores = [0.0, 0.0, 0.0] + [0.0] * 256 + [-float(i // 3) for i in range(len(pieces))]
    return tokens, types, scores


def tiny_spm():
    hidden, heads, kv_heads, head_dim, ff, layers = 32, 2, 1, 16, 64, 1
    tokens, types, scores = spm_vocab()
    w = gguf.GGUFWriter(str(HERE / "tiny_llama_spm.gguf"), "llama")
    w.add_block_count(layers)
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(2.0)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    weights(w, hidden, heads, kv_heads, head_dim, ff, layers, len(tokens), True, [Q.Q8_0, Q.Q4_0, Q.F16])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = generate_merges(vocab, dict(zip(tokens, scores)))
    (HERE / "tiny_llama_spm.merges.json").write_text(json.dumps([list(m) for m in merges], ensure_ascii=False) + "\n")


if __name__ == "__main__":
    tiny_bpe()
    tiny_spm()
    for f in sorted(HERE.glob("tiny_llama_*")):
        print(f.name, f.stat().st_size)
