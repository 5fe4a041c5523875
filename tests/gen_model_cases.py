#!/usr/bin/python3
# Reference data for whole-model parity: random small Diff Transformers written as
# model files (DESIGN §6) with F32, F16 and BF16 weights, each with a random token sequence and its
# logits computed in float64 by tools/dtmodel.py from the weights as stored in the file (after the
# F16/BF16 rounding). Shares nothing with src/.
#
# usage: /usr/bin/python3 tests/gen_model_cases.py OUT_DIR [--seed N]
# writes OUT_DIR/NAME.safetensors (the model), OUT_DIR/NAME.ref.safetensors (tokens I32 [n],
# logits F64 [n, vocab]; __metadata__ seed, model) and OUT_DIR/cases.txt (one NAME a line).

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import dtmodel  # noqa: E402

DEFAULT_SEED = 20250105

# name, dim, n_layers, n_heads, n_kv_heads, vocab, ffn_dim, tied, weight dtype, n tokens,
# norm_eps, rope_theta.  d = dim / n_heads / 2. "bytes" needs vocab_size >= 256: 256 or 300.
CASES = [
    ("mha_l1_f32_untied_v300",      32, 1, 2, 2, 300,  40, False, "F32",   5, 1e-5, 10000.0),
    ("gqa2_l2_f32_tied",            64, 2, 4, 2, 256,  96, True,  "F32",  23, 1e-5, 10000.0),
    ("gqa3_l3_f16_untied_v300",     96, 3, 3, 1, 300, 128, False, "F16",  40, 1e-5, 10000.0),
    ("gqa4_l2_bf16_tied_theta500k", 64, 2, 4, 1, 256,  80, True,  "BF16", 17, 1e-6, 500000.0),
    ("mha_l3_bf16_untied_d16",      64, 3, 2, 2, 300,  72, False, "BF16", 31, 1e-5, 10000.0),
    ("gqa2_l1_f16_tied_h6",         96, 1, 6, 3, 256,  64, True,  "F16",  12, 1e-5, 10000.0),
    ("gqa4_l3_f32_untied_d16",     128, 3, 4, 1, 300, 160, False, "F32",  37, 1e-6, 10000.0),
]


def generate(outdir, seed):
    os.makedirs(outdir, exist_ok=True)
    t0, names = time.time(), []
    print(f"gen_model_cases: seed {seed}")
    for ci, (name, dim, L, H, Hkv, vocab, ffn, tied, wdtype, n, eps, theta) in enumerate(CASES):
        case_seed = seed * 1000 + ci
        gen = torch.Generator().manual_seed(case_seed)
        cfg = dtmodel.Config(dim=dim, n_layers=L, n_heads=H, n_kv_heads=Hkv, vocab_size=vocab,
                             ffn_dim=ffn, norm_eps=eps, rope_theta=theta, max_seq_len=64,
                             tie_embeddings=tied, tokenizer="bytes")
        model = dtmodel.DiffTransformer(cfg).to(torch.float64)
        dtmodel.randomize(model, gen)
        tokens = torch.randint(0, vocab, (n,), generator=gen)
        model_path = os.path.join(outdir, name + ".safetensors")
        dtmodel.export(model, model_path, wdtype)
        stored = dtmodel.load(model_path, torch.float64)   # exactly the weights in the file
        with torch.no_grad():
            logits = stored(tokens)
        scale = float(logits.abs().max())
        if not 1e-2 < scale < 1e3 or not torch.isfinite(logits).all():
            raise SystemExit(f"gen_model_cases: {name}: logits scale {scale} is not O(1)")
        dtmodel.write_safetensors(os.path.join(outdir, name + ".ref.safetensors"),
                                  [("tokens", tokens.to(torch.int32)), ("logits", logits)],
                                  {"seed": case_seed, "model": name + ".safetensors"})
        names.append(name)
        print(f"  {name:30s} E={dim:3d} L={L} H={H} Hkv={Hkv} d={cfg.head_dim:2d} vocab={vocab} "
              f"ffn={ffn} tied={str(tied).lower():5s} {wdtype:4s} n={n:2d} seed={case_seed} "
              f"max|logit|={scale:.2f}")
    with open(os.path.join(outdir, "cases.txt"), "w") as f:
        f.write("".join(n + "\n" for n in names))
    print(f"gen_model_cases: {len(names)} cases in {outdir}, {time.time() - t0:.2f} s")


def main():
    ap = argparse.ArgumentParser(description="Write whole-model parity cases (float64 references).")
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("DATTN_TEST_SEED", DEFAULT_SEED)))
    a = ap.parse_args()
    torch.set_num_threads(1)
    generate(a.outdir, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
