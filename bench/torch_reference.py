#!/usr/bin/env python3
"""PyTorch reference numbers for the kvserve CUDA benchmarks, on the same GPU.

  * torch.nn.functional.scaled_dot_product_attention for the attention shapes of
    kv-bench-cuda (32 query / 8 KV heads, head_dim 128, bf16): causal prefill of
    512 / 2k / 8k tokens, and one-token decode at batch 1 / 8 / 64 over 1k / 8k keys;
  * a plain Llama forward written with torch ops (random bf16 weights in the shape of
    Llama-3-8B, or TinyLlama-1.1B with --shape tinyllama-1.1b): prefill of 512 / 2k / 8k
    tokens and decode steps at batch 1 / 8 / 64 over a 1k context, eager and as a CUDA
    graph, the same rows as kv-bench-engine-cuda prints.

Floors measured in the same run as kv-bench-engine-cuda does: device copy bandwidth
(read + written bytes) and a bf16 8192^3 matmul. CUDA events, warm-up first, median of
repeats. Exits 77 (skipped) when torch or a GPU is missing.
"""
import argparse
import statistics
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch_reference: torch is not installed: skipped")
    sys.exit(77)

SHAPES = {  # hidden, intermediate, layers, heads, kv heads, vocab
    "llama3-8b": (4096, 14336, 32, 32, 8, 128256),
    "tinyllama-1.1b": (2048, 5632, 22, 32, 4, 32000),
}
BF16 = torch.bfloat16


def timed(fn, warmup=3, reps=10):
    """Median milliseconds of fn() over reps runs (CUDA events), after warmup runs."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def rand(*shape):
    return torch.randn(*shape, device="cuda", dtype=BF16)  # never time on zeros


def row(what, shape, ms, rate):
    print(f"| {what} | {shape} | {ms:.3f} ms | {rate} |", flush=True)


def floors():
    n = 1 << 28  # 512 MiB of f16 values per buffer
    src, dst = torch.randn(n, device="cuda", dtype=torch.float16), torch.empty(n, device="cuda", dtype=torch.float16)
    copy_gbs = 2 * src.numel() * 2 / (timed(lambda: dst.copy_(src)) * 1e-3) / 1e9
    x, w = rand(8192, 8192), rand(8192, 8192)
    gemm_tflops = 2 * 8192**3 / (timed(lambda: x @ w.T, reps=5) * 1e-3) / 1e12
    return copy_gbs, gemm_tflops


def sdpa_rows(copy_gbs):
    H, KV, D = 32, 8, 128
    for seq in (512, 2048, 8192):
        q, k, v = rand(1, H, seq, D), rand(1, KV, seq, D), rand(1, KV, seq, D)
        ms = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True))
        flops = 4.0 * D * H * seq * (seq + 1) / 2
        row("sdpa prefill bf16", f"seq={seq} h={H}/{KV} d={D}", ms, f"{flops / (ms * 1e-3) / 1e12:.1f} TFLOP/s")
    for ctx in (1024, 8192):
        for b in (1, 8, 64):
            # GQA decode: the query heads of a KV head as that head's "rows" (no K/V copy).
            q, k, v = rand(b, KV, H // KV, D), rand(b, KV, ctx, D), rand(b, KV, ctx, D)
            ms = timed(lambda: F.scaled_dot_product_attention(q, k, v), reps=50)
            gbs = b * ctx * KV * D * 2 * 2 / (ms * 1e-3) / 1e9
            row("sdpa decode bf16", f"batch={b} ctx={ctx}", ms, f"{gbs:.0f} GB/s ({100 * gbs / copy_gbs:.0f}% of copy)")


class Llama:
    """Llama forward from torch ops, the op order of kvserve's engine (HF semantics)."""

    def __init__(self, shape, max_pos):
        h, ff, n_layers, self.H, self.KV, vocab = SHAPES[shape]
        self.D, self.eps = h // self.H, 1e-5
        g = lambda *s: rand(*s) * 0.02
        one = lambda: torch.ones(h, device="cuda", dtype=BF16)
        kvd = self.KV * self.D
        self.layers = [dict(n1=one(), wq=g(h, h), wk=g(kvd, h), wv=g(kvd, h), wo=g(h, h), n2=one(),
                            wg=g(ff, h), wu=g(ff, h), wd=g(h, ff)) for _ in range(n_layers)]
        self.embed, self.head, self.norm = g(vocab, h), g(vocab, h), one()
        inv = 1.0 / (500000.0 ** (torch.arange(0, self.D, 2, device="cuda", dtype=torch.float32) / self.D))
        ang = torch.arange(max_pos, device="cuda", dtype=torch.float32)[:, None] * inv[None, :]
        self.cos, self.sin = ang.cos().to(BF16), ang.sin().to(BF16)
        self.positions = torch.arange(max_pos, device="cuda")
        self.params = sum(w.numel() for l in self.layers for w in l.values()) + self.head.numel()
        self.weight_bytes = 2 * self.params  # streamed per decode step (the embedding is gathered)

    def rms(self, x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(BF16) * w

    def rope(self, x, pos):  # x [B, heads, T, D]
        c, s, half = self.cos[pos], self.sin[pos], self.D // 2
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1)

    def cache(self, b, size):
        return [(rand(b, self.KV, size, self.D), rand(b, self.KV, size, self.D)) for _ in self.layers]

    def forward(self, tok, pos, cache, decode):
        """tok [B, T] at positions pos [T]; prefill attends causally to the T tokens (from 0),
        decode (T = 1) to cache positions <= pos (a mask: graph-capturable)."""
        B, T = tok.shape
        H, KV, D = self.H, self.KV, self.D
        x = self.embed[tok]
        mask = (self.positions[: cache[0][0].shape[2]] <= pos[-1]).view(1, 1, 1, -1) if decode else None
        for l, (kc, vc) in zip(self.layers, cache):
            hn = self.rms(x, l["n1"])
            q = self.rope((hn @ l["wq"].T).view(B, T, H, D).transpose(1, 2), pos)
            k = self.rope((hn @ l["wk"].T).view(B, T, KV, D).transpose(1, 2), pos)
            v = (hn @ l["wv"].T).view(B, T, KV, D).transpose(1, 2)
            kc.index_copy_(2, pos, k)
            vc.index_copy_(2, pos, v)
            if decode:  # the query heads of a KV head as its rows: no K/V expansion
                a = F.scaled_dot_product_attention(q.reshape(B, KV, H // KV, D), kc, vc, attn_mask=mask)
                a = a.reshape(B, 1, H * D)
            else:
                a = F.scaled_dot_product_attention(q, kc[:, :, :T], vc[:, :, :T], is_causal=True, enable_gqa=True)
                a = a.transpose(1, 2).reshape(B, T, H * D)
            x = x + a @ l["wo"].T
            hn = self.rms(x, l["n2"])
            x = x + (F.silu(hn @ l["wg"].T) * (hn @ l["wu"].T)) @ l["wd"].T
        return (self.rms(x[:, -1], self.norm) @ self.head.T).float()


def llama_rows(shape, copy_gbs, gemm_tflops, contexts, batches, steps):
    m = Llama(shape, max_pos=max(8192, max(contexts) + 64))
    layer_params = m.params - m.head.numel()
    for n in (512, 2048, 8192):
        tok = torch.randint(0, m.embed.shape[0], (1, n), device="cuda")
        cache = m.cache(1, n)
        with torch.no_grad():
            ms = timed(lambda: m.forward(tok, m.positions[:n], cache, False), warmup=2, reps=3)
        flops = 2.0 * layer_params * n + 2.0 * m.head.numel() + 4.0 * len(m.layers) * m.H * m.D * n * (n + 1) / 2
        tf = flops / (ms * 1e-3) / 1e12
        row(f"torch {shape} prefill", f"{n} tokens", ms, f"{n / (ms * 1e-3):.0f} tok/s, {tf:.1f} TFLOP/s, "
            f"{100 * tf / gemm_tflops:.0f}% of GEMM")
        del cache
    kv_tok = 2 * len(m.layers) * m.KV * m.D * 2
    for ctx in contexts:
        for b in batches:
            cache = m.cache(b, ctx + 1)  # the context's K/V (random) + the step's own slot
            tok = torch.randint(0, m.embed.shape[0], (b, 1), device="cuda")
            pos = torch.tensor([ctx], device="cuda")
            floor_ms = (m.weight_bytes + b * ctx * kv_tok) / (copy_gbs * 1e9) * 1e3
            with torch.no_grad():
                step = lambda: m.forward(tok, pos, cache, True)
                eager = timed(step, warmup=2, reps=steps)
                torch.cuda.synchronize()
                g = torch.cuda.CUDAGraph()
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    step()  # warm-up on the side stream before capture
                torch.cuda.current_stream().wait_stream(s)
                with torch.cuda.graph(g):
                    step()
                graph = timed(g.replay, warmup=2, reps=steps)
            for what, ms in (("eager", eager), ("cuda graph", graph)):
                row(f"torch {shape} decode ({what})", f"batch {b}, context {ctx}", ms,
                    f"{b / (ms * 1e-3):.0f} tok/s, floor {floor_ms:.3f} ms = {100 * floor_ms / ms:.0f}%")
            del cache, g


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="llama3-8b", choices=sorted(SHAPES))
    ap.add_argument("--contexts", default="1024")
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--skip-llama", action="store_true")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("torch_reference: no CUDA device visible to torch: skipped")
        return 77
    torch.manual_seed(0)
    copy_gbs, gemm_tflops = floors()
    print(f"torch_reference: torch {torch.__version__}, {torch.cuda.get_device_name(0)}; floors: copy "
          f"{copy_gbs:.0f} GB/s (read+write), bf16 GEMM 8192^3 {gemm_tflops:.1f} TFLOP/s\n")
    print("| what | shape | time | rate |\n|---|---|---|---|")
    sdpa_rows(copy_gbs)
    if not a.skip_llama:
        llama_rows(a.shape, copy_gbs, gemm_tflops, [int(c) for c in a.contexts.split(",")],
                   [int(b) for b in a.batches.split(",")], a.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
