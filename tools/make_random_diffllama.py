#!/usr/bin/python3
"""A Hugging Face `diffllama` directory with random weights, for measuring dattn at the scale of
real checkpoints without downloading one: config.json (v4 style), model.safetensors or shards with
model.safetensors.index.json, and optionally a tokenizer.json (and tokenizer_config.json) copied
in. The default shape is the public 0.3B-named DiffLlama's config (hidden 2048, 16 layers, 32
heads, 8 KV heads, head_dim 64, intermediate 8192, vocab 128256, rope_theta 500000 with llama3
scaling, tied embeddings: 1.24B parameters, 2.5 GB in BF16). Weights are N(0, 0.02) like
transformers' init, lambdas N(0, 0.1), norms 1; tensors are written one at a time, so memory
stays near the largest tensor.

usage: make_random_diffllama.py OUT_DIR [--dtype bf16|f16|f32] [--shards N] [--seed S]
       [--tokenizer tokenizer.json] [--hidden E --layers L --heads H --kv-heads K --head-dim D
        --ffn F --vocab V --untied --no-llama3]
"""
import argparse
import json
import os
import shutil
import struct
import sys

import torch

DTYPES = {"bf16": (torch.bfloat16, "BF16"), "f16": (torch.float16, "F16"),
          "f32": (torch.float32, "F32")}


def tensor_list(a):
    """(name, shape, kind) in file order; kind: 'w' matrix, 'lam' lambda, 'norm'."""
    E, D, F, V = a.hidden, a.head_dim, a.ffn, a.vocab
    Q, KV = a.heads * D, a.kv_heads * D
    out = [("model.embed_tokens.weight", (V, E), "w")]
    for l in range(a.layers):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", (E,), "norm"),
                (p + "self_attn.q_proj.weight", (Q, E), "w"),
                (p + "self_attn.k_proj.weight", (KV, E), "w"),
                (p + "self_attn.v_proj.weight", (KV, E), "w"),
                (p + "self_attn.o_proj.weight", (E, Q), "w")]
        out += [(p + "self_attn." + n, (D,), "lam")
                for n in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2")]
        out += [(p + "post_attention_layernorm.weight", (E,), "norm"),
                (p + "mlp.gate_proj.weight", (F, E), "w"),
                (p + "mlp.up_proj.weight", (F, E), "w"),
                (p + "mlp.down_proj.weight", (E, F), "w")]
    out.append(("model.norm.weight", (E,), "norm"))
    if a.untied:
        out.append(("lm_head.weight", (V, E), "w"))
    return out


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def write_shard(path, items, dtype, st_name, gen):
    """One safetensors file: the header first (sizes are known), then each tensor in turn."""
    es = torch.tensor([], dtype=dtype).element_size()
    header, off = {}, 0
    for name, shape, _ in items:
        n = numel(shape) * es
        header[name] = {"dtype": st_name, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape, kind in items:
            if kind == "norm":
                t = torch.ones(shape, dtype=torch.float32)
            else:
                t = torch.randn(shape, generator=gen, dtype=torch.float32)
                t *= 0.1 if kind == "lam" else 0.02
            t = t.to(dtype)
            raw = t.view(torch.int16) if dtype == torch.bfloat16 else t
            f.write(raw.numpy().tobytes())
    os.replace(tmp, path)
    return off


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tokenizer", help="a tokenizer.json to copy in (its tokenizer_config.json "
                    "too, when one sits beside it)")
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--ffn", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--no-llama3", action="store_true", help="plain RoPE (theta 10000)")
    a = ap.parse_args()
    dtype, st_name = DTYPES[a.dtype]
    os.makedirs(a.out, exist_ok=True)
    cfg = {"architectures": ["DiffLlamaForCausalLM"], "model_type": "diffllama",
           "hidden_size": a.hidden, "intermediate_size": a.ffn, "num_hidden_layers": a.layers,
           "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads,
           "head_dim": a.head_dim, "hidden_act": "silu", "max_position_embeddings": 131072,
           "rms_norm_eps": 1e-5, "vocab_size": a.vocab, "tie_word_embeddings": not a.untied,
           "bos_token_id": 128000 if a.vocab > 128001 else 0,
           "eos_token_id": 128001 if a.vocab > 128001 else 0,
           "attention_bias": False, "attention_dropout": 0.0, "lambda_std_dev": 0.1,
           "torch_dtype": {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[a.dtype],
           "transformers_version": "4.46.0"}
    if a.no_llama3:
        cfg["rope_theta"] = 10000.0
    else:
        cfg["rope_theta"] = 500000.0
        cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    gen = torch.Generator().manual_seed(a.seed)
    items = tensor_list(a)
    total = sum(numel(s) for _, s, _ in items)
    if a.shards <= 1:
        write_shard(os.path.join(a.out, "model.safetensors"), items, dtype, st_name, gen)
    else:
        # Contiguous runs of tensors of about equal bytes, as save_pretrained cuts them.
        per = (total + a.shards - 1) // a.shards
        shards, cur, size = [], [], 0
        for it in items:
            cur.append(it)
            size += numel(it[1])
            if size >= per and len(shards) < a.shards - 1:
                shards.append(cur)
                cur, size = [], 0
        shards.append(cur)
        weight_map, nbytes = {}, 0
        for i, part in enumerate(shards):
            fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            nbytes += write_shard(os.path.join(a.out, fn), part, dtype, st_name, gen)
            weight_map.update({name: fn for name, _, _ in part})
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": nbytes}, "weight_map": weight_map}, f, indent=2)
    if a.tokenizer:
        shutil.copyfile(a.tokenizer, os.path.join(a.out, "tokenizer.json"))
        tc = os.path.join(os.path.dirname(os.path.abspath(a.tokenizer)), "tokenizer_config.json")
        if os.path.exists(tc):
            shutil.copyfile(tc, os.path.join(a.out, "tokenizer_config.json"))
    print(f"{a.out}: {total / 1e9:.2f}B parameters, {a.dtype}, "
          f"{max(1, a.shards)} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
