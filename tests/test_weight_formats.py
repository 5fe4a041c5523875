#!/usr/bin/python3
"""Weights held in another format (`--weights f32|f16|bf16|q8_0|q4_0`, DESIGN §6): `dattn logits`
against a float64 forward (tools/dtmodel.py) of the same model whose weight matrices (projections,
embedding, logits) went through this file's own converters: f16 / bf16 round to nearest even;
q8_0 and q4_0 blocks of 32 along a row, each with an f16 scale, written here from the format's
definition (src/quant.h), nothing shared with src/. The only difference left is f32 rounding:
1e-4 relative over the [n, vocab] logits, on random models (F32, F16 and BF16 files; tied and
untied; GQA and MHA), a seed printed. The block formats run once more with --batch 1, one token
a step: there the CPU backend's decode GEMV quantizes each projection's input row to q8 blocks
(src/cpu/gemm.h), and the reference does the same (quantize_x, written here from that
definition) before every matrix product, with the same 1e-4 per token, up to the first token
where some x * (1/d) of the reference lies within 2e-4 of a rounding boundary (k + 0.5): float64
and dattn's float32 activations may round that one the other way, a step of d, and through the
KV cache the difference reaches every later token (and moves more values across boundaries);
those tokens are held to 3e-2 of the unquantized reference (x quantization moves the logits by
about 1e-2). Other backends are held to the unquantized reference. Also, on the CPU backend:
`plan`'s weight bytes per format differ from f32's by exactly the matrices' bytes in each format
(the OpenCL backend pads a block format's scale plane to 16 bytes, so there only the logits are
compared; tests/test_cl_ops.c checks its bytes); and a model whose rows are not whole blocks is
refused by name.

usage: /usr/bin/python3 tests/test_weight_formats.py DATTN_BIN
env:   DATTN_TEST_SEED replays the models; DATTN_TEST_ARGS adds arguments (e.g. --backend opencl)
"""
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import dtmodel  # noqa: E402

REL_TOL = 1e-4
FORMATS = ["f32", "f16", "bf16", "q8_0", "q4_0"]
BLOCK = 32
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}
ELEM_BYTES = {"f32": 4, "f16": 2, "bf16": 2}

# name, dim, n_layers, n_heads, n_kv_heads, vocab, ffn_dim, tied, file dtype, n tokens
CASES = [
    ("gqa2_f32_tied",     64, 2, 2, 1, 256,  96, True,  "F32",  19),
    ("mha_f16_untied",    96, 2, 3, 3, 302, 128, False, "F16",  23),   # 302: a last group of two rows
    ("gqa2_bf16_untied", 128, 1, 4, 2, 256, 160, False, "BF16", 11),
]


def round_half_away(v):
    """C's roundf on float32 values, in float64 (exact at these magnitudes)."""
    v = v.to(torch.float64)
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


def q8_0(w):
    """Rows of float32 weights -> the values a q8_0 copy holds (float64)."""
    rows, k = w.shape
    b = w.reshape(rows, k // BLOCK, BLOCK)
    d = b.abs().amax(dim=-1, keepdim=True) / torch.tensor(127.0, dtype=torch.float32)
    inv = torch.where(d != 0, 1.0 / torch.where(d != 0, d, torch.ones_like(d)), torch.zeros_like(d))
    q = round_half_away(b * inv)
    return (d.to(torch.float16).to(torch.float64) * q).reshape(rows, k)


def q4_0(w):
    """The same for q4_0: d = (value of largest magnitude, first one) / -8, q = min(15, trunc(x/d
    + 8.5)) with each step rounded to float32; weight = d * (q - 8)."""
    rows, k = w.shape
    b = w.reshape(rows, k // BLOCK, BLOCK)
    idx = b.abs().argmax(dim=-1, keepdim=True)
    m = torch.gather(b, -1, idx)
    d = m / torch.tensor(-8.0, dtype=torch.float32)
    inv = torch.where(d != 0, 1.0 / torch.where(d != 0, d, torch.ones_like(d)), torch.zeros_like(d))
    t = (b * inv) + torch.tensor(8.5, dtype=torch.float32)          # two float32 roundings
    q = torch.clamp(torch.floor(t.to(torch.float64)), max=15.0)     # t >= 0.5: trunc = floor
    return (d.to(torch.float16).to(torch.float64) * (q - 8.0)).reshape(rows, k)


# x * (1/d) this close to k + 0.5 may round either way: the reference's float64 activations and
# dattn's float32 ones differ by about 1e-7 relative (|x * (1/d)| <= 127: 1e-5 absolute).
NEAR_TIE = 2e-4


def quantize_x(x, near=None):
    """An activation row as the CPU backend's decode GEMV of q8_0 / q4_0 weights uses it
    (src/cpu/gemm.h), in float64: the f32 row in blocks of 32, d = f32(amax / 127),
    q = nearest-even integer of f32(x * f32(1 / d)) (0 when d is 0), value d * q. near: a list
    that gets, per call, a bool per row (token) of x: whether any value was a near tie."""
    x32 = x.to(torch.float32)
    shape = x32.shape
    b = x32.reshape(*shape[:-1], shape[-1] // BLOCK, BLOCK)
    d = b.abs().amax(dim=-1, keepdim=True) / torch.tensor(127.0, dtype=torch.float32)
    inv = torch.where(d != 0, 1.0 / torch.where(d != 0, d, torch.ones_like(d)), torch.zeros_like(d))
    v = b * inv                                 # float32 product
    q = torch.round(v)                          # round() ties to even
    if near is not None:
        tie = ((v.to(torch.float64) - torch.floor(v.to(torch.float64)) - 0.5).abs() < NEAR_TIE)
        near.append(tie.reshape(*shape[:-1], -1).any(dim=-1).reshape(-1, shape[-2]).any(dim=0))
    return (d.to(torch.float64) * q.to(torch.float64)).reshape(shape)


def held(w32, fmt):
    if fmt == "f32":
        return w32.to(torch.float64)
    if fmt == "f16":
        return w32.to(torch.float16).to(torch.float64)
    if fmt == "bf16":
        return w32.to(torch.bfloat16).to(torch.float64)
    return q8_0(w32) if fmt == "q8_0" else q4_0(w32)


def held_model(cfg, sd32, fmt, decode=False, near=None):
    """A float64 dtmodel of config cfg whose matrices are sd32's (float32 state dict) as format
    fmt holds them, its vectors as they are. decode (block formats): every matrix product's input
    row goes through quantize_x first, as in the CPU backend's one-token steps (the projections'
    inputs, and the final norm's output, which only the logits product reads); near collects
    quantize_x's near ties."""
    m = dtmodel.DiffTransformer(cfg).to(torch.float64)
    m.load_state_dict({k: held(v, fmt) if v.dim() == 2 else v.to(torch.float64)
                       for k, v in sd32.items()})
    m.eval()
    if decode and fmt in BLOCK_BYTES:
        for mod in m.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.register_forward_pre_hook(lambda _m, args: (quantize_x(args[0], near),))
        m.norm.register_forward_hook(lambda _m, _args, out: quantize_x(out, near))
    return m


def matrix_bytes(sd, fmt):
    total = 0
    for t in sd.values():
        if t.dim() == 2:
            rows, k = t.shape
            total += rows * (k // BLOCK * BLOCK_BYTES[fmt] if fmt in BLOCK_BYTES else k * ELEM_BYTES[fmt])
    return total


def extra_args():
    return shlex.split(os.environ.get("DATTN_TEST_ARGS", ""))


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def dattn_logits(exe, path, tokens, fmt, out, more=()):
    if os.path.exists(out):
        os.remove(out)
    p = run([exe, "logits", "-m", path, "--tokens", ",".join(map(str, tokens)), "-o", out,
             "--weights", fmt] + list(more) + extra_args())
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {p.stderr.strip()}"
    tensors, _ = dtmodel.read_safetensors(out)
    return tensors["logits"].to(torch.float64), ""


def plan_bytes(exe, path, fmt):
    p = run([exe, "plan", "-m", path, "--ctx", "16", "--weights", fmt] + extra_args())
    m = re.search(r"weight_bytes=(\d+)", p.stdout)
    if p.returncode != 0 or not m:
        return None, f"exit {p.returncode}: {p.stdout.strip()} {p.stderr.strip()}"
    return int(m.group(1)), ""


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    exe = sys.argv[1]
    seed = int(os.environ.get("DATTN_TEST_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (DATTN_TEST_SEED={seed} replays it); {' '.join(extra_args()) or 'cpu'}")
    torch.set_num_threads(1)
    failures = 0
    cpu = "opencl" not in extra_args() and "auto" not in extra_args()
    if "opencl" in extra_args():
        p = subprocess.run([exe, "devices"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if p.returncode == 0 and "no OpenCL devices" in p.stdout:
            print("test_weight_formats: no OpenCL device, skipped")
            return 77
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.safetensors")
        for ci, (name, dim, L, H, Hkv, vocab, ffn, tied, fdt, n) in enumerate(CASES):
            gen = torch.Generator().manual_seed(seed * 100 + ci)
            cfg = dtmodel.Config(dim=dim, n_layers=L, n_heads=H, n_kv_heads=Hkv, vocab_size=vocab,
                                 ffn_dim=ffn, max_seq_len=64, tie_embeddings=tied)
            model = dtmodel.DiffTransformer(cfg).to(torch.float64)
            dtmodel.randomize(model, gen)
            path = os.path.join(tmp, name + ".safetensors")
            dtmodel.export(model, path, fdt)
            stored = dtmodel.load(path, torch.float32)      # the file's values, as f32
            sd32 = stored.state_dict()
            tokens = torch.randint(0, vocab, (n,), generator=gen).tolist()
            f32_bytes, msg = plan_bytes(exe, path, "f32") if cpu else (None, "")
            if cpu and f32_bytes is None:
                print(f"FAIL {name}: plan --weights f32: {msg}")
                failures += 1
            for fmt in FORMATS:
                with torch.no_grad():
                    want = held_model(cfg, sd32, fmt)(torch.tensor(tokens))
                got, msg = dattn_logits(exe, path, tokens, fmt, out)
                if got is None:
                    print(f"FAIL {name} --weights {fmt}: {msg}")
                    failures += 1
                    continue
                rel = float((got - want).norm() / want.norm())
                ok = rel <= REL_TOL
                # How far the format moved the logits from the file's own weights (not a check).
                with torch.no_grad():
                    moved = float((want - stored.to(torch.float64)(torch.tensor(tokens))).norm()
                                  / want.norm())
                line = (f"{'ok  ' if ok else 'FAIL'} {name} ({fdt} file) --weights {fmt}: "
                        f"rel err {rel:.2e} (tol {REL_TOL:.0e}); the format moves the logits by "
                        f"{moved:.2e}")
                failures += not ok
                if f32_bytes is not None:
                    nbytes, msg = plan_bytes(exe, path, fmt)
                    want_diff = matrix_bytes(sd32, "f32") - matrix_bytes(sd32, fmt)
                    if nbytes is None or f32_bytes - nbytes != want_diff:
                        line += (f"\nFAIL {name}: plan --weights {fmt}: weight_bytes={nbytes} "
                                 f"{msg}; f32 holds {f32_bytes}, the matrices differ by "
                                 f"{want_diff} bytes")
                        failures += 1
                    else:
                        line += f"; weight_bytes={nbytes}"
                print(line)
                if fmt not in BLOCK_BYTES or not (cpu or "opencl" in extra_args()):
                    continue
                # One token a step: the decode GEMV.
                near = []
                with torch.no_grad():
                    want_dec = held_model(cfg, sd32, fmt, decode=cpu, near=near)(
                        torch.tensor(tokens))
                got, msg = dattn_logits(exe, path, tokens, fmt, out, ["--batch", "1"])
                if got is None:
                    print(f"FAIL {name} --weights {fmt} --batch 1: {msg}")
                    failures += 1
                    continue
                # Tokens [0, exact) are held to the quantized-x reference, the rest to 3e-2 of
                # the unquantized one.
                exact = n
                if near:
                    ties = torch.stack(near).any(dim=0).nonzero()
                    exact = int(ties[0]) if len(ties) else n
                rel = (float((got[:exact] - want_dec[:exact]).norm() / want_dec[:exact].norm())
                       if exact else 0.0)
                rel_rest = (float((got[exact:] - want[exact:]).norm() / want[exact:].norm())
                            if exact < n else 0.0)
                ok = rel <= REL_TOL and rel_rest <= 3e-2
                moved = float((want_dec - want).norm() / want.norm())
                print(f"{'ok  ' if ok else 'FAIL'} {name} ({fdt} file) --weights {fmt} --batch 1: "
                      f"tokens [0, {exact}) rel err {rel:.2e} (tol {REL_TOL:.0e}) against the "
                      f"reference{' with x quantized' if cpu else ''}, tokens [{exact}, {n}) "
                      f"{rel_rest:.2e} (tol 3e-02) against the unquantized one; quantizing x "
                      f"moves the logits by {moved:.2e}")
                failures += not ok

        # Rows that are not whole blocks: refused, naming the tensor.
        cfg = dtmodel.Config(dim=48, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=256,
                             ffn_dim=64, max_seq_len=16)
        model = dtmodel.DiffTransformer(cfg).to(torch.float64)
        dtmodel.randomize(model, torch.Generator().manual_seed(seed))
        path = os.path.join(tmp, "dim48.safetensors")
        dtmodel.export(model, path, "F32")
        for fmt in ("q8_0", "q4_0"):
            p = run([exe, "logits", "-m", path, "--tokens", "1,2", "-o", out, "--weights", fmt]
                    + extra_args())
            ok = p.returncode == 2 and "multiple of 32" in p.stderr and "weight" in p.stderr
            print(f"{'ok  ' if ok else 'FAIL'} dim 48 --weights {fmt} refused: "
                  f"{p.stderr.strip()}")
            failures += not ok
        p = run([exe, "logits", "-m", path, "--tokens", "1", "-o", out, "--weights", "q5_1"])
        ok = p.returncode == 2 and "--weights" in p.stderr and "q5_1" in p.stderr
        print(f"{'ok  ' if ok else 'FAIL'} --weights q5_1 refused: {p.stderr.strip()}")
        failures += not ok
    print(f"test_weight_formats: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
