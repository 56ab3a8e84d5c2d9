#!/usr/bin/env python3
"""Writes quant_vectors.gguf: for each GGML type kvserve dequantizes, a tensor of valid blocks
(odd row count, several blocks a row) and `<name>.expected`, its F32 dequantization by the
`gguf` Python package (gguf.quants.dequantize), the reference tests/test_gguf.c compares with.

Types gguf.quants can quantize are quantized from random floats; for the k-quants (Q4_K, Q5_K,
Q6_K: no quantizer there) the blocks are random bytes with finite fp16 scale fields. Ran once;
its output is committed.  usage: make_gguf_vectors.py [OUT.gguf]
"""
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

rng = np.random.default_rng(20240610)
ROWS = 3


def random_scale(n):
    """n finite fp16 scales, both signs, magnitudes 1e-4 .. 1e-1 (as real files have)."""
    mag = 10.0 ** rng.uniform(-4, -1, n)
    return (mag * rng.choice([-1.0, 1.0], n)).astype(np.float16)


def kquant_blocks(qtype, n_blocks):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    b = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    if qtype in (Q.Q4_K, Q.Q5_K):  # d, dmin first
        b[:, 0:2] = random_scale(n_blocks).view(np.uint8).reshape(n_blocks, 2)
        b[:, 2:4] = np.abs(random_scale(n_blocks)).view(np.uint8).reshape(n_blocks, 2)
    elif qtype == Q.Q6_K:  # d last
        b[:, -2:] = random_scale(n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return b


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("quant_vectors.gguf")
    w = gguf.GGUFWriter(str(out), "kvserve-test")
    w.add_string("kvserve.note", "dequantization vectors; see make_gguf_vectors.py")

    # F32 / F16 / BF16: values across the range, subnormals and zeros of both signs included.
    f = (rng.standard_normal((ROWS, 40)) * 10.0 ** rng.integers(-8, 4, (ROWS, 40))).astype(np.float32)
    f[0, :4] = [0.0, -0.0, 6e-8, -3e-5]  # f16 subnormals
    w.add_tensor("f32", f)
    w.add_tensor("f32.expected", dequantize(f.view(np.uint8), Q.F32).reshape(f.shape).astype(np.float32))
    h = f.astype(np.float16)
    h[np.isinf(h)] = 65504
    w.add_tensor("f16", h)
    w.add_tensor("f16.expected", dequantize(h.view(np.uint8), Q.F16).reshape(h.shape).astype(np.float32))
    bf = quantize(f, Q.BF16)
    w.add_tensor("bf16", bf, raw_dtype=Q.BF16)
    w.add_tensor("bf16.expected", dequantize(bf, Q.BF16).reshape(f.shape))

    for qtype, cols in [(Q.Q8_0, 96), (Q.Q4_0, 64), (Q.Q4_1, 96), (Q.Q5_0, 64), (Q.Q5_1, 96)]:
        x = (rng.standard_normal((ROWS, cols)) * rng.uniform(0.01, 2.0, (ROWS, 1))).astype(np.float32)
        x[1, 5] += 3.0  # an outlier, so blocks differ in scale
        q = quantize(x, qtype)
        name = qtype.name.lower()
        w.add_tensor(name, q, raw_dtype=qtype)
        w.add_tensor(name + ".expected", dequantize(q, qtype).reshape(x.shape).astype(np.float32))

    for qtype, cols in [(Q.Q4_K, 512), (Q.Q5_K, 256), (Q.Q6_K, 512)]:
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        nb = cols // block_elems
        q = kquant_blocks(qtype, ROWS * nb).reshape(ROWS, nb * block_bytes)
        name = qtype.name.lower()
        w.add_tensor(name, q, raw_dtype=qtype)
        w.add_tensor(name + ".expected", dequantize(q, qtype).reshape(ROWS, cols).astype(np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
