#!/usr/bin/python3
"""`dattn quantize IN OUT --type q8_0|q4_0`: the file it writes loads as the same model with its
weight matrices in that format. For random dattn models and Hugging Face directories (shards,
llama3 RoPE, tied and untied, with a tokenizer.json and generation_config.json): `dattn logits` on
OUT against a float64 forward (tools/dtmodel.py, tests/gen_hf_cases.py) of weights quantized by
tests/test_weight_formats.py's own converters, 1e-4 relative; the same logits bit for bit as
`--weights TYPE` on the source; the same token ids from OUT's carried tokenizer; `run` on it.
Refused by name, leaving an existing OUT as it was: a row not whole blocks, a type other than
q8_0 / q4_0, a file quantize already wrote, a missing input. A spoilt packed file (an unknown
format, packed rows of the wrong width, a NaN block scale) is refused by name when loaded.

usage: /usr/bin/python3 tests/test_quantize.py DATTN_BIN
env:   DATTN_TEST_SEED replays the models
"""
import json
import os
import random
import struct
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
sys.path.insert(0, HERE)
import dtmodel  # noqa: E402
import gen_hf_cases as hf  # noqa: E402
from test_hf_run import write_tokenizer  # noqa: E402
from test_weight_formats import held, held_model  # noqa: E402

REL_TOL = 1e-4
failures = 0


def check(ok, what):
    global failures
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
    failures += not ok


def run(args):
    p = subprocess.run(args, capture_output=True, timeout=300)
    p.stdout = p.stdout.decode(errors="replace")
    p.stderr = p.stderr.decode(errors="replace")
    return p


def logits(exe, model, tokens, out, *more):
    if os.path.exists(out):
        os.remove(out)
    p = run([exe, "logits", "-m", model, "--tokens", ",".join(map(str, tokens)), "-o", out]
            + list(more))
    if p.returncode != 0:
        return None, p.stderr.strip()
    return dtmodel.read_safetensors(out)[0]["logits"].to(torch.float64), ""


def compare(exe, src, packed, fmt, tokens, want, tmp, name):
    out = os.path.join(tmp, "logits.safetensors")
    got, msg = logits(exe, packed, tokens, out)
    if got is None:
        check(False, f"{name}: logits of the {fmt} file: {msg}")
        return
    rel = float((got - want).norm() / want.norm())
    check(rel <= REL_TOL, f"{name} {fmt}: logits of the quantized file against the float64 "
                          f"reference: rel err {rel:.2e} (tol {REL_TOL:.0e})")
    at_load, msg = logits(exe, src, tokens, out, "--weights", fmt)
    same = at_load is not None and torch.equal(at_load, got)
    check(same, f"{name} {fmt}: the same logits as --weights {fmt} on the source "
                f"{'' if at_load is not None else msg}")


def rewrite(src, dst, spoil):
    """Copies a safetensors file, letting spoil(header, data) change its header dict and its
    data (a bytearray) first."""
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    spoil(header, data)
    h = json.dumps(header).encode()
    h += b" " * ((-(8 + len(h))) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + bytes(data))


def first_packed(header):
    return next(v for k, v in header.items() if k != "__metadata__" and v["dtype"] == "U8")


def reshape_first_packed(header, data):
    t = first_packed(header)
    t["shape"] = [t["shape"][0] * 2, t["shape"][1] // 2]


def nan_first_scale(header, data):
    at = first_packed(header)["data_offsets"][0]
    data[at:at + 2] = b"\x00\x7e"   # f16 NaN, little-endian


def quantize(exe, src, out, fmt):
    p = run([exe, "quantize", src, out, "--type", fmt])
    return p.returncode == 0, (p.stdout + p.stderr).strip()


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    exe = sys.argv[1]
    seed = int(os.environ.get("DATTN_TEST_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (DATTN_TEST_SEED={seed} replays it)")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        # dattn's own files.
        for ci, (dim, L, H, Hkv, ffn, tied, fdt) in enumerate(
                [(64, 2, 2, 1, 96, True, "F32"), (96, 2, 3, 3, 128, False, "BF16")]):
            cfg = dtmodel.Config(dim=dim, n_layers=L, n_heads=H, n_kv_heads=Hkv, vocab_size=300,
                                 ffn_dim=ffn, max_seq_len=64, tie_embeddings=tied)
            model = dtmodel.DiffTransformer(cfg).to(torch.float64)
            gen = torch.Generator().manual_seed(seed * 10 + ci)
            dtmodel.randomize(model, gen)
            src = os.path.join(tmp, f"native{ci}.safetensors")
            dtmodel.export(model, src, fdt)
            sd = dtmodel.load(src, torch.float32).state_dict()
            tokens = torch.randint(0, 300, (13,), generator=gen).tolist()
            for fmt in ("q8_0", "q4_0"):
                packed = os.path.join(tmp, f"native{ci}-{fmt}.safetensors")
                ok, msg = quantize(exe, src, packed, fmt)
                check(ok and f"{fmt} weights" in msg, f"quantize native{ci} ({fdt}) {fmt}: "
                      f"{msg.splitlines()[0] if msg else ''}")
                if not ok:
                    continue
                with torch.no_grad():
                    want = held_model(cfg, sd, fmt)(torch.tensor(tokens))
                compare(exe, src, packed, fmt, tokens, want, tmp, f"native{ci}")

        # Hugging Face directories, with a tokenizer and a generation config to carry along.
        for ci, case in enumerate([hf.CASES[7], hf.CASES[8]]):   # f32 llama3 shards, bf16 tied
            path, cfg, weights = hf.build_case(tmp, case, seed + ci)
            write_tokenizer(os.path.join(path, "tokenizer.json"))
            with open(os.path.join(path, "generation_config.json"), "w") as f:
                json.dump({"bos_token_id": 256, "eos_token_id": 17}, f)
            tokens = [256] + torch.randint(0, 256, (9,),
                                           generator=torch.Generator().manual_seed(seed)).tolist()
            for fmt in ("q8_0", "q4_0"):
                packed = os.path.join(tmp, f"{case[0]}-{fmt}.safetensors")
                ok, msg = quantize(exe, path, packed, fmt)
                check(ok, f"quantize {case[0]} {fmt}: {msg.splitlines()[0] if msg else ''}")
                if not ok:
                    continue
                w = {k: held(v.to(torch.float32), fmt) if v.dim() == 2 else v
                     for k, v in weights.items()}
                compare(exe, path, packed, fmt, tokens, hf.forward(cfg, w, tokens), tmp,
                        case[0])
                a = run([exe, "tokenize", "-m", path, "-p", "Hi there"])
                b = run([exe, "tokenize", "-m", packed, "-p", "Hi there"])
                check(a.returncode == 0 and a.stdout == b.stdout and b.stdout.startswith("256 "),
                      f"{case[0]} {fmt}: the carried tokenizer gives {b.stdout.strip()!r} "
                      f"(the directory's: {a.stdout.strip()!r})")
                r = run([exe, "run", "-m", packed, "-p", "Hi", "-n", "4", "--temp", "0"])
                check(r.returncode == 0, f"{case[0]} {fmt}: run -p on the file "
                      f"({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''})")

        # Refusals: named, and an existing OUT kept.
        keep = os.path.join(tmp, "keep.safetensors")
        cfg = dtmodel.Config(dim=48, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=256,
                             ffn_dim=64, max_seq_len=16)
        model = dtmodel.DiffTransformer(cfg).to(torch.float64)
        dtmodel.randomize(model, torch.Generator().manual_seed(seed))
        d48 = os.path.join(tmp, "dim48.safetensors")
        dtmodel.export(model, d48, "F32")
        packed = os.path.join(tmp, "native0-q8_0.safetensors")
        for args, want in (([d48, keep, "--type", "q8_0"], "multiple of 32"),
                           ([os.path.join(tmp, "native0.safetensors"), keep, "--type", "f16"],
                            "--type takes q8_0 or q4_0"),
                           ([packed, keep, "--type", "q4_0"], "already holds q8_0"),
                           ([os.path.join(tmp, "absent"), keep, "--type", "q8_0"], "absent"),
                           ([os.path.join(tmp, "native0.safetensors"), keep], "--type")):
            with open(keep, "w") as f:
                f.write("the user's file")
            p = run([exe, "quantize"] + args)
            with open(keep) as f:
                kept = f.read() == "the user's file"
            check(p.returncode == 2 and want in p.stderr and kept,
                  f"refused ({want}), {keep} kept: {p.stderr.strip().splitlines()[0]}")
        # Spoilt packed files: the loader names the problem.
        for name, spoil, want in (
                ("unknown format", lambda h, d: h["__metadata__"].update({"dattn.weights": "q5_1"}),
                 "dattn.weights is 'q5_1'"),
                ("rows of the wrong width", reshape_first_packed, "expected ["),
                ("a NaN block scale", nan_first_scale, "NaN or infinite")):
            bad = os.path.join(tmp, "spoilt.safetensors")
            rewrite(packed, bad, spoil)
            p = run([exe, "logits", "-m", bad, "--tokens", "1,2", "-o",
                     os.path.join(tmp, "l.safetensors")])
            check(p.returncode == 2 and want in p.stderr,
                  f"spoilt packed file ({name}) refused: {p.stderr.strip()}")
    print(f"test_quantize: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
