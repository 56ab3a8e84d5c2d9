#!/usr/bin/env python3
"""Golden blocks for kvserve's reference quantizers (common/model/weight_quant.c): gguf-py's
numpy quantizers (gguf.quants, written bit-exact to ggml's quantize_row_*_ref) on a fixed
pseudo-random input with the awkward cases in it (a zero block, ties at the largest magnitude,
a constant block, a negative extreme). Writes quant_golden.txt: one line per type,
"name hex-of-the-blocks", and the input as the first line ("input" and hex of f32 LE).
Run once: python3 make_quant_golden.py (needs the gguf package)."""
import numpy as np
from gguf import quants, GGMLQuantizationType as T

rng = np.random.default_rng(15)
x = (rng.standard_normal(32 * 64) * rng.uniform(0.01, 3.0, 32 * 64)).astype(np.float32)
x[32:64] = 0.0                      # a zero block
x[64:96] = 0.75                     # a constant block
x[96:128] = rng.standard_normal(32).astype(np.float32)
x[100], x[110] = 2.5, -2.5          # tie in magnitude: the first wins
x[160:192] = np.linspace(-7.0, 1.0, 32, dtype=np.float32)  # negative extreme
with open("quant_golden.txt", "w") as f:
    f.write("input " + x.tobytes().hex() + "\n")
    for name, t in [("f16", T.F16), ("bf16", T.BF16), ("q8_0", T.Q8_0), ("q4_0", T.Q4_0), ("q4_1", T.Q4_1),
                    ("q5_0", T.Q5_0), ("q5_1", T.Q5_1)]:
        q = quants.quantize(x.reshape(1, -1), t)
        f.write(name + " " + q.tobytes().hex() + "\n")
