#!/usr/bin/python3
# Tiny random Hugging Face `diffllama` directories (config.json + model.safetensors, or shards and
# model.safetensors.index.json) and a float64 PyTorch forward written from transformers'
# src/transformers/models/diffllama/modeling_diffllama.py (DiffLlamaForCausalLM, eager attention)
# and modeling_rope_utils.py (_compute_default_rope_parameters, _compute_llama3_parameters); it
# shares nothing with dattn's re-layout. Used by tests/test_hf_parity.py.
#
# usage: /usr/bin/python3 tests/gen_hf_cases.py OUT_DIR     (writes every case, prints their names)

import json
import math
import os
import struct
import sys

import torch

ST_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}

# name, dtype, hidden, heads, kv heads, head_dim in config (None: left out), ffn, layers, vocab,
# tied, config style ("v4" / "v5"), rope ("default" / "llama3"), shards (0: one file), eps, theta.
# Two cases take a large rms_norm_eps, so that an epsilon of 1e-5 in the sub-norm would show.
CASES = [
    ("f32_gqa_tied_v4", torch.float32, 64, 8, 4, None, 96, 2, 300, True, "v4", "default", 0, 1e-5, 10000.0),
    ("f32_mha_untied_v4", torch.float32, 64, 4, 4, 16, 80, 3, 280, False, "v4", "default", 0, 0.05, 500000.0),
    ("f16_gqa_untied_v4", torch.float16, 64, 8, 2, None, 96, 2, 300, False, "v4", "default", 0, 1e-5, 10000.0),
    ("bf16_mha_tied_v5", torch.bfloat16, 48, 6, 6, 8, 64, 2, 260, True, "v5", "default", 0, 1e-2, 10000.0),
    ("f32_mqa_untied_v4", torch.float32, 64, 4, 1, None, 64, 2, 270, False, "v4", "default", 0, 1e-5, 10000.0),
    ("f32_kv3_tied_v5", torch.float32, 48, 6, 3, None, 64, 2, 260, True, "v5", "default", 0, 1e-5, 10000.0),
    ("f32_llama3_tied_v4", torch.float32, 64, 4, 2, 16, 96, 2, 300, True, "v4", "llama3", 0, 1e-5, 500000.0),
    ("f32_llama3_shards_v5", torch.float32, 64, 4, 2, 16, 96, 3, 300, False, "v5", "llama3", 3, 1e-5, 500000.0),
    ("bf16_gqa_shards_v4", torch.bfloat16, 64, 8, 4, None, 96, 2, 300, True, "v4", "default", 2, 1e-5, 10000.0),
    ("f16_llama3_shards_v5", torch.float16, 64, 8, 4, None, 96, 2, 300, False, "v5", "llama3", 2, 1e-6, 500000.0),
    # head_dim set apart from hidden / heads: the attention is wider or narrower than the model
    ("f32_wide_heads_v4", torch.float32, 48, 4, 2, 16, 64, 2, 260, True, "v4", "default", 0, 1e-5, 10000.0),
    ("bf16_wide_llama3_v5", torch.bfloat16, 64, 4, 2, 24, 96, 2, 300, False, "v5", "llama3", 2, 1e-5, 500000.0),
    ("f16_narrow_mqa_v4", torch.float16, 64, 6, 1, 6, 80, 2, 270, True, "v4", "default", 0, 1e-5, 10000.0),
]

LLAMA3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


# ---- files -------------------------------------------------------------------------------------

def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": ST_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def make_config(c):
    (name, dtype, hidden, heads, kv, head_dim, ffn, layers, vocab, tied, style, rope, shards,
     eps, theta) = c
    cfg = {"architectures": ["DiffLlamaForCausalLM"], "model_type": "diffllama",
           "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
           "num_attention_heads": heads, "num_key_value_heads": kv, "hidden_act": "silu",
           "max_position_embeddings": 2048, "rms_norm_eps": eps, "vocab_size": vocab,
           "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": [2, 3],
           "attention_bias": False, "attention_dropout": 0.0, "lambda_std_dev": 0.1,
           "initializer_range": 0.02, "torch_dtype": {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}[dtype],
           "transformers_version": "4.46.0" if style == "v4" else "5.0.0"}
    if head_dim is not None:
        cfg["head_dim"] = head_dim
    scaling = dict(LLAMA3, rope_type="llama3") if rope == "llama3" else None
    if style == "v4":
        cfg["rope_theta"] = theta
        cfg["rope_scaling"] = scaling
    else:
        cfg["rope_parameters"] = dict(scaling or {"rope_type": "default"}, rope_theta=theta)
    return cfg


def make_weights(cfg, dtype, gen):
    E, F, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    H, K = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or E // H

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    w = {"model.embed_tokens.weight": rnd(V, E)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = (1 + rnd(E, scale=0.1).double()).to(dtype)
        w[p + "self_attn.q_proj.weight"] = rnd(H * D, E, scale=E ** -0.5)
        w[p + "self_attn.k_proj.weight"] = rnd(K * D, E, scale=E ** -0.5)
        w[p + "self_attn.v_proj.weight"] = rnd(K * D, E, scale=E ** -0.5)
        w[p + "self_attn.o_proj.weight"] = rnd(E, H * D, scale=(H * D) ** -0.5)
        for lam in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            w[p + "self_attn." + lam] = rnd(D, scale=0.1)
        w[p + "post_attention_layernorm.weight"] = (1 + rnd(E, scale=0.1).double()).to(dtype)
        w[p + "mlp.gate_proj.weight"] = rnd(F, E, scale=E ** -0.5)
        w[p + "mlp.up_proj.weight"] = rnd(F, E, scale=E ** -0.5)
        w[p + "mlp.down_proj.weight"] = rnd(E, F, scale=F ** -0.5)
    w["model.norm.weight"] = (1 + rnd(E, scale=0.1).double()).to(dtype)
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = rnd(V, E, scale=E ** -0.5)
    return w


def write_model(path, cfg, weights, n_shards):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if not n_shards:
        write_safetensors(os.path.join(path, "model.safetensors"), weights)
        return
    names = list(weights)
    weight_map = {}
    for s in range(n_shards):
        fn = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {n: weights[n] for n in names[s::n_shards]}
        write_safetensors(os.path.join(path, fn), part)
        weight_map.update({n: fn for n in part})
    total = sum(t.numel() * t.element_size() for t in weights.values())
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


# ---- the reference: transformers' DiffLlama forward in float64 ------------------------------

def rope_inv_freq(cfg):
    """modeling_rope_utils: _compute_default_rope_parameters, then _compute_llama3_parameters."""
    if "rope_parameters" in cfg:
        rp = cfg["rope_parameters"]
        base, scaling = rp["rope_theta"], rp
    else:
        base, scaling = cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling")
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float64) / dim))
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "default":
        return inv_freq
    assert rope_type == "llama3"
    factor = scaling["factor"]
    low_freq_factor = scaling["low_freq_factor"]
    high_freq_factor = scaling["high_freq_factor"]
    old_context_len = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(h, n_rep):
    b, kv, slen, hd = h.shape
    if n_rep == 1:
        return h
    return h[:, :, None, :, :].expand(b, kv, n_rep, slen, hd).reshape(b, kv * n_rep, slen, hd)


def rms_norm(x, weight, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    x = x * torch.rsqrt(var + eps)
    return x if weight is None else weight * x


def forward(cfg, weights, ids):
    """logits [n, vocab] in float64 for token ids (one sequence, positions 0..n-1)."""
    w = {k: v.to(torch.float64) for k, v in weights.items()}
    E, H, K = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    D = cfg.get("head_dim") or E // H
    eps = cfg.get("rms_norm_eps", 1e-5)
    n = len(ids)
    x = w["model.embed_tokens.weight"][torch.tensor(ids)][None]          # [1, n, E]
    pos = torch.arange(n, dtype=torch.float64)
    freqs = pos[:, None] * rope_inv_freq(cfg)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    mask = torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        lambda_init = 0.8 - 0.6 * math.exp(-0.3 * l)
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(1, n, H, D).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(1, n, K, D).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(1, n, K, D).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = repeat_kv(k, H // K), repeat_kv(v, H // K)
        v = torch.cat(torch.chunk(v, 2, dim=1), dim=-1)
        v = v.repeat(1, 2, 1, 1)
        a = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(D) + mask
        a = torch.softmax(a, dim=-1)
        lam1 = torch.exp(torch.sum(w[p + "self_attn.lambda_q1"] * w[p + "self_attn.lambda_k1"]))
        lam2 = torch.exp(torch.sum(w[p + "self_attn.lambda_q2"] * w[p + "self_attn.lambda_k2"]))
        lam = lam1 - lam2 + lambda_init
        o = torch.matmul(a, v)
        o1, o2 = torch.chunk(o, 2, dim=1)
        o = o1 - lam * o2
        o = (1 - lambda_init) * rms_norm(o, None, eps)
        o = o.transpose(1, 2).reshape(1, n, -1) @ w[p + "self_attn.o_proj.weight"].T
        x = x + o
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return (x @ head.T)[0]


def build_case(out_dir, case, seed):
    """Writes case into out_dir/NAME; -> (path, config, weights)."""
    gen = torch.Generator().manual_seed(seed)
    cfg = make_config(case)
    weights = make_weights(cfg, case[1], gen)
    path = os.path.join(out_dir, case[0])
    write_model(path, cfg, weights, case[12])
    return path, cfg, weights


def main():
    if len(sys.argv) != 2:
        print("usage: gen_hf_cases.py OUT_DIR", file=sys.stderr)
        return 2
    for i, case in enumerate(CASES):
        path, _, _ = build_case(sys.argv[1], case, 1000 + i)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
