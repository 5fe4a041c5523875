#!/usr/bin/env python3
# A tiny random Differential-Transformer checkpoint in the model format (DESIGN §6), written with
# the standard library alone (no torch), for the CLI and REPL tests: they check the tool's
# behaviour (commands, messages, files), not the model's numbers, so random weights do.
#
# usage: tiny_model.py OUT.safetensors [--max-seq-len N]      (or import and call write())
import json
import random
import struct
import sys


def write(path, dim=64, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=128, vocab=256,
          max_seq_len=128, seed=1, tokenizer="bytes", tie=False, edit=None):
    """Writes the model; edit(header) may change the JSON header first (malformed files).
    Untied by default: random tied embeddings make the model echo its last token."""
    rng = random.Random(seed)
    d = dim // n_heads // 2
    kv_dim = dim // (n_heads // n_kv_heads)

    def mat(rows, cols, scale=1.0):
        b = scale / cols ** 0.5
        return [rows, cols], [rng.uniform(-b, b) for _ in range(rows * cols)]

    def vec(n, base, spread):
        return [n], [base + rng.uniform(-spread, spread) for _ in range(n)]

    tensors = [("tok_embeddings.weight", mat(vocab, dim, dim ** 0.5))]
    for l in range(n_layers):
        p = f"layers.{l}."
        tensors += [
            (p + "attention_norm.weight", vec(dim, 1.0, 0.2)),
            (p + "attn.q_proj.weight", mat(dim, dim, 3.0)),
            (p + "attn.k_proj.weight", mat(kv_dim, dim, 3.0)),
            (p + "attn.v_proj.weight", mat(kv_dim, dim)),
            (p + "attn.out_proj.weight", mat(dim, dim)),
            (p + "attn.lambda_q1", vec(d, 0.0, 0.3)),
            (p + "attn.lambda_k1", vec(d, 0.0, 0.3)),
            (p + "attn.lambda_q2", vec(d, 0.0, 0.3)),
            (p + "attn.lambda_k2", vec(d, 0.0, 0.3)),
            (p + "attn.subln.weight", vec(2 * d, 1.0, 0.2)),
            (p + "ffn_norm.weight", vec(dim, 1.0, 0.2)),
            (p + "feed_forward.w1.weight", mat(ffn_dim, dim)),
            (p + "feed_forward.w2.weight", mat(dim, ffn_dim)),
            (p + "feed_forward.w3.weight", mat(ffn_dim, dim)),
        ]
    tensors.append(("norm.weight", vec(dim, 1.0, 0.2)))
    if not tie:
        tensors.append(("output.weight", mat(vocab, dim, 2.0)))
    header = {"__metadata__": {
        "dim": str(dim), "n_layers": str(n_layers), "n_heads": str(n_heads),
        "n_kv_heads": str(n_kv_heads), "vocab_size": str(vocab), "ffn_dim": str(ffn_dim),
        "norm_eps": "1e-05", "rope_theta": "10000", "max_seq_len": str(max_seq_len),
        "tie_embeddings": "true" if tie else "false", "tokenizer": tokenizer}}
    data = b""
    for name, (shape, values) in tensors:
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if edit:
        edit(header)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob + data)
    return path


if __name__ == "__main__":
    n = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--max-seq-len" else 128
    write(sys.argv[1], max_seq_len=n)
