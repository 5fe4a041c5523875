#!/usr/bin/python3
# Reference data for one Differential-attention layer (DESIGN §1), computed in torch float64 from
# DESIGN §1 alone (shares nothing with src/). Writes one safetensors file per case (DESIGN §6, the
# format written by hand) plus OUTDIR/cases.txt. `--self-check` checks the vectorized layer against a
# naive per-head loop; `--dump-raw FILE` writes tiny cases as raw f64 for tests/ref_f64_check.c.
#
# usage: /usr/bin/python3 tests/gen_layer_cases.py OUTDIR [--seed N]
#        /usr/bin/python3 tests/gen_layer_cases.py --self-check
#        /usr/bin/python3 tests/gen_layer_cases.py --dump-raw FILE [--seed N]

import argparse
import json
import math
import os
import struct
import sys
import time

import torch

# The safetensors writer is the one of the model script (tools/dtmodel.py): one writer for every
# file the tests make; what is independent here is the math.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from dtmodel import write_safetensors  # noqa: E402

DEFAULT_SEED = 20241007
RMS_EPS = 1e-5

# name, H, Hkv, d, T, depth, rope_theta, weight dtype.  E = 2*H*d.
CASES = [
    ("mha_d32_T1_l0",             2, 2,  32,   1,  0, 10000.0,  "F32"),
    ("mha_d128_T2_l11",           1, 1, 128,   2, 11, 10000.0,  "F32"),
    ("mha_d64_T37_l5",            2, 2,  64,  37,  5, 10000.0,  "F32"),
    ("mha_d32_T300_l6",           4, 4,  32, 300,  6, 10000.0,  "F32"),
    ("gqa2_d32_T67_l11",          4, 2,  32,  67, 11, 10000.0,  "F32"),
    ("gqa2_d64_T3_l1",            2, 1,  64,   3,  1, 10000.0,  "F32"),
    ("gqa3_d32_T300_l3",          3, 1,  32, 300,  3, 10000.0,  "F32"),
    ("gqa3_d64_T5_l4",            3, 1,  64,   5,  4, 10000.0,  "F32"),
    ("gqa4_d32_T128_l1",          4, 1,  32, 128,  1, 10000.0,  "F32"),
    ("gqa4_d64_T45_l8_theta500k", 4, 1,  64,  45,  8, 500000.0, "F32"),
    ("gqa3_d128_T23_l2_f16",      3, 1, 128,  23,  2, 10000.0,  "F16"),
    ("mha_d64_T97_l10_f16",       2, 2,  64,  97, 10, 10000.0,  "F16"),
    ("gqa2_d128_T19_l5_bf16",     2, 1, 128,  19,  5, 10000.0,  "BF16"),
    ("gqa2_d64_T256_l0_bf16",     2, 1,  64, 256,  0, 10000.0,  "BF16"),
]

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
WEIGHT_NAMES = ["q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight",
                "lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2", "subln.weight"]


def lambda_init(depth):
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


def rope(x, pos, theta):
    """Interleaved (GPT-J) RoPE. x [n, heads, d], pos [n] (float64): pair (2i, 2i+1) by p*theta^(-2i/d)."""
    d = x.shape[-1]
    i = torch.arange(d // 2, dtype=torch.float64)
    ang = pos.to(torch.float64)[:, None] * theta ** (-2.0 * i / d)      # [n, d/2]
    c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]       # [n, 1, d/2]
    x0, x1 = x[..., 0::2], x[..., 1::2]                                 # [n, heads, d/2]
    out = torch.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def diff_lambda(w, depth):
    return (torch.exp(torch.dot(w["lambda_q1"], w["lambda_k1"]))
            - torch.exp(torch.dot(w["lambda_q2"], w["lambda_k2"])) + lambda_init(depth))


def diff_layer(x, w, H, Hkv, depth, theta):
    """One diff-attention layer, DESIGN §1, float64. x [T, E] -> [T, E], positions 0..T-1, causal."""
    T, E = x.shape
    d, r = E // H // 2, H // Hkv
    q = (x @ w["q_proj.weight"].T).view(T, 2 * H, d)                    # [T, 2H, d]
    k = (x @ w["k_proj.weight"].T).view(T, 2 * Hkv, d)                  # [T, 2Hkv, d]
    v = (x @ w["v_proj.weight"].T).view(T, Hkv, 2 * d)                  # [T, Hkv, 2d]
    pos = torch.arange(T, dtype=torch.float64)
    q = rope(q, pos, theta).view(T, H, 2, d)                            # [T, H, 2, d]
    k = rope(k, pos, theta).view(T, Hkv, 2, d)                          # [T, Hkv, 2, d]
    # diff head h uses KV head j = h // r
    k = k.repeat_interleave(r, dim=1)                                   # [T, H, 2, d]
    v = v.repeat_interleave(r, dim=1)                                   # [T, H, 2d]
    scores = torch.einsum("thcd,uhcd->hctu", q, k) / math.sqrt(d)       # [H, 2, T, T]
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(causal, float("-inf"))
    a = torch.softmax(scores, dim=-1)                                   # [H, 2, T, T]
    lam = diff_lambda(w, depth)
    adiff = a[:, 0] - lam * a[:, 1]                                     # [H, T, T]
    o = torch.einsum("htu,uhe->the", adiff, v)                          # [T, H, 2d]
    o = o / torch.sqrt((o * o).mean(dim=-1, keepdim=True) + RMS_EPS)
    o = o * w["subln.weight"] * (1.0 - lambda_init(depth))
    return o.reshape(T, E) @ w["out_proj.weight"].T                     # [T, E]


def diff_layer_sink_window(x, w, H, Hkv, depth, theta, n_sink, window):
    """StreamingLLM sink+window (DESIGN §4), rebuilt per token: token t sees tokens 0..min(n_sink,t+1)-1
    and max(n_sink, t-window+1)..t, rotated at positions within that cache (query at the last one)."""
    T, E = x.shape
    d, r = E // H // 2, H // Hkv
    y = torch.empty(T, E, dtype=torch.float64)
    for t in range(T):
        idx = list(range(min(n_sink, t + 1))) + list(range(max(n_sink, t - window + 1), t + 1))
        xs = x[idx]                                                     # [m, E]
        m = len(idx)
        q = (xs[-1:] @ w["q_proj.weight"].T).view(1, 2 * H, d)
        k = (xs @ w["k_proj.weight"].T).view(m, 2 * Hkv, d)
        v = (xs @ w["v_proj.weight"].T).view(m, Hkv, 2 * d)
        q = rope(q, torch.tensor([m - 1.0], dtype=torch.float64), theta).view(1, H, 2, d)
        k = rope(k, torch.arange(m, dtype=torch.float64), theta).view(m, Hkv, 2, d)
        k = k.repeat_interleave(r, dim=1)
        v = v.repeat_interleave(r, dim=1)
        a = torch.softmax(torch.einsum("hcd,uhcd->hcu", q[0], k) / math.sqrt(d), dim=-1)  # [H, 2, m]
        lam = diff_lambda(w, depth)
        o = torch.einsum("hu,uhe->he", a[:, 0] - lam * a[:, 1], v)      # [H, 2d]
        o = o / torch.sqrt((o * o).mean(dim=-1, keepdim=True) + RMS_EPS)
        o = o * w["subln.weight"] * (1.0 - lambda_init(depth))
        y[t] = o.reshape(E) @ w["out_proj.weight"].T
    return y


def naive_layer(x, w, H, Hkv, depth, theta, pair=None):
    """Same layer with explicit per-head, per-token loops and python-math RoPE (for --self-check).
    pair(h) -> KV head; DESIGN §1 is h // r (the default)."""
    T, E = x.shape
    d, r = E // H // 2, H // Hkv
    q = x @ w["q_proj.weight"].T                                        # [T, E]
    k = x @ w["k_proj.weight"].T                                        # [T, E/r]
    v = x @ w["v_proj.weight"].T                                        # [T, E/r]

    def rot(vec, p):
        out = vec.clone()
        for i in range(d // 2):
            a = p * math.pow(theta, -2.0 * i / d)
            c, s = math.cos(a), math.sin(a)
            out[2 * i] = vec[2 * i] * c - vec[2 * i + 1] * s
            out[2 * i + 1] = vec[2 * i] * s + vec[2 * i + 1] * c
        return out

    lq = math.exp(float(sum(w["lambda_q1"][i] * w["lambda_k1"][i] for i in range(d))))
    lk = math.exp(float(sum(w["lambda_q2"][i] * w["lambda_k2"][i] for i in range(d))))
    li = 0.8 - 0.6 * math.exp(-0.3 * depth)
    lam = lq - lk + li
    o = torch.zeros(T, E, dtype=torch.float64)
    for h in range(H):
        j = pair(h) if pair else h // r
        for t in range(T):
            q1 = rot(q[t, (2 * h) * d:(2 * h + 1) * d], t)
            q2 = rot(q[t, (2 * h + 1) * d:(2 * h + 2) * d], t)
            s1, s2 = [], []
            for u in range(t + 1):
                k1 = rot(k[u, (2 * j) * d:(2 * j + 1) * d], u)
                k2 = rot(k[u, (2 * j + 1) * d:(2 * j + 2) * d], u)
                s1.append(float(torch.dot(q1, k1)) / math.sqrt(d))
                s2.append(float(torch.dot(q2, k2)) / math.sqrt(d))
            m1, m2 = max(s1), max(s2)
            e1 = [math.exp(z - m1) for z in s1]
            e2 = [math.exp(z - m2) for z in s2]
            z1, z2 = sum(e1), sum(e2)
            acc = torch.zeros(2 * d, dtype=torch.float64)
            for u in range(t + 1):
                acc += (e1[u] / z1 - lam * e2[u] / z2) * v[u, j * 2 * d:(j + 1) * 2 * d]
            ms = float((acc * acc).sum()) / (2 * d)
            acc = acc / math.sqrt(ms + RMS_EPS) * w["subln.weight"] * (1.0 - li)
            o[t, h * 2 * d:(h + 1) * 2 * d] = acc
    return o @ w["out_proj.weight"].T


def make_case(gen, H, Hkv, d, T, wdtype):
    """Random weights (rounded to wdtype) and x (rounded to f32). Returns stored and f64 views."""
    E, r = 2 * H * d, H // Hkv
    bound = 1.0 / math.sqrt(E)

    def lin(out_f, in_f):
        return (torch.rand(out_f, in_f, generator=gen, dtype=torch.float64) * 2 - 1) * bound

    w = {
        "q_proj.weight": lin(E, E),
        "k_proj.weight": lin(E // r, E),
        "v_proj.weight": lin(E // r, E),
        "out_proj.weight": lin(E, E),
    }
    for n in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
        w[n] = torch.randn(d, generator=gen, dtype=torch.float64) * 0.1
    w["subln.weight"] = 1.0 + 0.1 * torch.randn(2 * d, generator=gen, dtype=torch.float64)
    stored = {n: t.to(DTYPES[wdtype]) for n, t in w.items()}
    used = {n: t.to(torch.float64) for n, t in stored.items()}
    x32 = torch.randn(T, E, generator=gen, dtype=torch.float64).to(torch.float32)
    return stored, used, x32


def fmt_theta(theta):
    return str(int(theta)) if float(theta).is_integer() else repr(theta)


def generate(outdir, seed):
    os.makedirs(outdir, exist_ok=True)
    t0, total, names = time.time(), 0, []
    print(f"gen_layer_cases: seed {seed}")
    for ci, (name, H, Hkv, d, T, depth, theta, wdtype) in enumerate(CASES):
        case_seed = seed * 1000 + ci
        gen = torch.Generator().manual_seed(case_seed)
        stored, used, x32 = make_case(gen, H, Hkv, d, T, wdtype)
        y = diff_layer(x32.to(torch.float64), used, H, Hkv, depth, theta).to(torch.float32)
        meta = {"embed_dim": 2 * H * d, "num_heads": H, "num_kv_heads": Hkv, "depth": depth,
                "rope_theta": fmt_theta(theta), "seed": case_seed}
        tensors = [(n, stored[n]) for n in WEIGHT_NAMES] + [("x", x32), ("y", y)]
        fname = name + ".safetensors"
        path = os.path.join(outdir, fname)
        write_safetensors(path, tensors, meta)
        total += os.path.getsize(path)
        names.append(fname)
        print(f"  {fname:42s} E={2*H*d:4d} H={H} Hkv={Hkv} d={d:3d} T={T:3d} l={depth:2d} "
              f"theta={fmt_theta(theta)} {wdtype:4s} seed={case_seed}")
    with open(os.path.join(outdir, "cases.txt"), "w") as f:
        f.write("".join(n + "\n" for n in names))
    print(f"gen_layer_cases: {len(names)} cases, {total} bytes, {time.time() - t0:.2f} s")


def self_check():
    worst = 0.0
    shapes = [(2, 2, 4, 5, 0, 10000.0), (4, 2, 8, 7, 5, 10000.0), (3, 1, 4, 6, 11, 500000.0),
              (4, 1, 6, 4, 2, 10000.0)]
    for ci, (H, Hkv, d, T, depth, theta) in enumerate(shapes):
        gen = torch.Generator().manual_seed(DEFAULT_SEED + ci)
        _, w, x32 = make_case(gen, H, Hkv, d, T, "F32")
        x = x32.to(torch.float64)
        # make the attention maps far from uniform so pairing/rope mistakes show
        for n in ("q_proj.weight", "k_proj.weight"):
            w[n] = w[n] * 8.0
        a = diff_layer(x, w, H, Hkv, depth, theta)
        b = naive_layer(x, w, H, Hkv, depth, theta)
        rel = float((a - b).norm() / b.norm())
        # sink+window with window >= T must equal the full causal layer
        c = diff_layer_sink_window(x, w, H, Hkv, depth, theta, 1, T)
        rel_sw = float((c - a).norm() / a.norm())
        print(f"self-check H={H} Hkv={Hkv} d={d} T={T} l={depth}: vectorized vs naive {rel:.2e}, "
              f"sink+window(W>=T) vs full {rel_sw:.2e}")
        worst = max(worst, rel, rel_sw)
    # the pairing really matters: multihead_diffattn.py's pairing (j = h % Hkv) must not agree
    gen = torch.Generator().manual_seed(DEFAULT_SEED + 99)
    _, w, x32 = make_case(gen, 4, 2, 4, 5, "F32")
    x = x32.to(torch.float64)
    a = diff_layer(x, w, 4, 2, 3, 10000.0)
    b = naive_layer(x, w, 4, 2, 3, 10000.0, pair=lambda h: h % 2)
    sens = float((a - b).norm() / a.norm())
    print(f"self-check sensitivity (pairing h % Hkv instead of h // r): {sens:.2e} (must be large)")
    ok = worst < 1e-12 and sens > 1e-3
    print("self-check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


# Raw dump for tests/ref_f64_check.c: all little-endian.
#   "DATTNRAW" | u64 n_cases | per case:
#   i64 E, H, Hkv, depth, T, n_sink, window | f64 theta |
#   f64 q_proj[E*E], k_proj[E/r*E], v_proj[E/r*E], out_proj[E*E], lq1[d], lk1[d], lq2[d], lk2[d],
#       subln[2d], x[T*E], y_full[T*E], y_sink[T*E]
RAW_CASES = [  # H, Hkv, d, T, depth, theta, n_sink, window
    (2, 2, 8, 9, 0, 10000.0, 2, 3),
    (6, 2, 4, 12, 5, 10000.0, 1, 4),
    (4, 1, 16, 17, 11, 500000.0, 4, 6),
    (4, 2, 32, 7, 3, 10000.0, 3, 1),
]


def dump_raw(path, seed):
    with open(path, "wb") as f:
        f.write(b"DATTNRAW")
        f.write(struct.pack("<Q", len(RAW_CASES)))
        for ci, (H, Hkv, d, T, depth, theta, ns, win) in enumerate(RAW_CASES):
            gen = torch.Generator().manual_seed(seed * 1000 + 500 + ci)
            _, w, x32 = make_case(gen, H, Hkv, d, T, "F32")
            for n in ("q_proj.weight", "k_proj.weight"):
                w[n] = w[n] * 4.0          # sharper attention maps
            x = x32.to(torch.float64)
            y = diff_layer(x, w, H, Hkv, depth, theta)
            ysw = diff_layer_sink_window(x, w, H, Hkv, depth, theta, ns, win)
            f.write(struct.pack("<7q", 2 * H * d, H, Hkv, depth, T, ns, win))
            f.write(struct.pack("<d", theta))
            for t in [w[n] for n in WEIGHT_NAMES] + [x, y, ysw]:
                f.write(t.contiguous().numpy().astype("<f8").tobytes())
    print(f"gen_layer_cases: wrote {len(RAW_CASES)} raw f64 cases to {path} (seed {seed})")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("outdir", nargs="?")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--self-check", action="store_true")
    ap.add_argument("--dump-raw", metavar="FILE")
    a = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if a.self_check:
        return self_check()
    if a.dump_raw:
        dump_raw(a.dump_raw, a.seed)
        return 0
    if not a.outdir:
        ap.error("OUTDIR is required (or --self-check / --dump-raw FILE)")
    generate(a.outdir, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
