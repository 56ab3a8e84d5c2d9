#!/usr/bin/env python3
"""A GGUF of stories260K for llama.cpp's llama-perplexity (the cross-check quoted in
test_perplexity.sh; not used by CI). llama.cpp's convert_hf_to_gguf.py reads the HF directory,
but with only a tokenizer.json it gives every piece the score -1000, and llama.cpp's SPM
tokenizer, which merges by score, then splits words differently from HF (2235 ids instead of
2215 on stories.txt). Here each piece's score is minus the rank of the merge that makes it,
so llama.cpp merges in HF's order (checked: llama-tokenize ids == HF ids on stories.txt).
sentencepiece is not needed (no tokenizer.model): a stub stands in for its import.
usage: make_stories_gguf.py LLAMA_CPP_DIR STORIES260K_DIR OUT.gguf
then:  llama-perplexity -m OUT.gguf -f stories.txt -c 256 -ctk f32 -ctv f32
       -> 3.6888 +/- 0.19048 (c392e50); -c 512 -> 3.8108 +/- 0.20521"""
import json
import os
import runpy
import sys
import tempfile

llama_dir, src, out = sys.argv[1:4]
stub = tempfile.mkdtemp()
with open(os.path.join(stub, "sentencepiece.py"), "w") as f:
    f.write("class SentencePieceProcessor:\n    def __init__(self, *a, **k):\n        raise RuntimeError('stub')\n")
sys.path[:0] = [os.path.join(llama_dir, "gguf-py"), stub]
import gguf.vocab as V  # noqa: E402

tj = json.load(open(os.path.join(src, "tokenizer.json")))
vocab = tj["model"]["vocab"]
rank = {}
for r, m in enumerate(tj["model"]["merges"]):
    a, b = m.split(" ", 1) if isinstance(m, str) else m
    rank.setdefault(vocab[a + b], r)
V.LlamaHfVocab.get_token_score = lambda self, tid: -float(rank[tid]) if tid in rank else 0.0
sys.argv = ["convert_hf_to_gguf.py", src, "--outtype", "f32", "--outfile", out]
runpy.run_path(os.path.join(llama_dir, "convert_hf_to_gguf.py"), run_name="__main__")
