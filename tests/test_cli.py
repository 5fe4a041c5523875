#!/usr/bin/env python3
# The dattn tool's contract on bad input (DESIGN §7): every case exits with status 2 and one line
# on stderr that names the problem, never a crash; a result outside tolerance exits 1. Malformed
# files are made here from a valid case written by gen_layer_cases.py.
#
# usage: test_cli.py DATTN_EXE CASES_DIR
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile


def run(exe, *args, env=None):
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, env=full_env)
    return p.returncode, p.stdout, p.stderr


def rewrite_header(src, dst, edit):
    """Copy a safetensors file with its JSON header changed by edit(header)."""
    with open(src, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    edit(header)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + data)


def main():
    exe, cases = sys.argv[1], sys.argv[2]
    names = open(os.path.join(cases, "cases.txt")).read().split()
    good = os.path.join(cases, next(n for n in names if "gqa" in n and "f16" not in n and "bf16" not in n))
    tmp = tempfile.mkdtemp(prefix="dattn_cli_")
    blob = open(good, "rb").read()
    failures = 0

    def expect(rc_want, words, *args, env=None):
        nonlocal failures
        rc, out, err = run(exe, *args, env=env)
        text = (out + err).lower()
        ok = rc == rc_want and all(w.lower() in text for w in words)
        print(f"{'ok  ' if ok else 'FAIL'} exit {rc} (want {rc_want}) dattn {' '.join(os.path.basename(a) for a in args)}")
        if not ok:
            print(f"     stderr: {err.strip()}\n     wanted words: {words}")
            failures += 1

    def write(name, data):
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    expect(0, ["pass"], "check-layer", good)
    expect(1, ["fail"], "check-layer", good, "--tol", "0")
    expect(2, ["unknown command"], "frobnicate")
    expect(2, ["unknown option"], "check-layer", good, "--bogus", "1")
    expect(2, ["--kv"], "check-layer", good, "--kv", "f8")
    expect(2, ["--prefill"], "check-layer", good, "--prefill", "-3")
    expect(2, ["more than"], "check-layer", good, "--prefill", "100000")
    expect(2, ["no input file"], "check-layer")
    expect(2, ["cannot open", "missing.safetensors"], "check-layer", os.path.join(tmp, "missing.safetensors"))
    # An OpenCL device that does not exist (or a build without OpenCL): exit 2, said so.
    expect(2, ["opencl"], "check-layer", good, "--backend", "opencl",
           env={"DATTN_DEVICE": "no-such-device-xyz"})
    expect(2, ["instruction set"], "check-layer", good, "--isa", "sse9")
    expect(2, ["header"], "check-layer", write("short.safetensors", blob[:5]))
    expect(2, [], "check-layer", write("trunc.safetensors", blob[: len(blob) // 2]))
    expect(2, ["json"], "check-layer", write("notjson.safetensors", struct.pack("<Q", 8) + b"not json" + blob[8:]))
    expect(2, ["header"], "check-layer", write("hugelen.safetensors", struct.pack("<Q", len(blob) * 4) + blob[8:]))

    def shape_edit(h):
        h["k_proj.weight"]["shape"] = list(reversed(h["k_proj.weight"]["shape"]))
    p = os.path.join(tmp, "shape.safetensors")
    rewrite_header(good, p, shape_edit)
    expect(2, ["k_proj.weight"], "check-layer", p)

    def dtype_edit(h):
        h["q_proj.weight"]["dtype"] = "F8_E4M3"
    p = os.path.join(tmp, "dtype.safetensors")
    rewrite_header(good, p, dtype_edit)
    expect(2, ["q_proj.weight"], "check-layer", p)

    def offsets_edit(h):
        h["x"]["data_offsets"][1] += 1 << 30
    p = os.path.join(tmp, "offsets.safetensors")
    rewrite_header(good, p, offsets_edit)
    expect(2, ["x"], "check-layer", p)

    def overlap_edit(h):
        h["v_proj.weight"]["data_offsets"] = list(h["k_proj.weight"]["data_offsets"])
    p = os.path.join(tmp, "overlap.safetensors")
    rewrite_header(good, p, overlap_edit)
    expect(2, ["overlap"], "check-layer", p)

    def heads_edit(h):
        h["__metadata__"]["num_heads"] = "7"
    p = os.path.join(tmp, "heads.safetensors")
    rewrite_header(good, p, heads_edit)
    expect(2, ["n_heads"], "check-layer", p)

    def nometa_edit(h):
        del h["__metadata__"]["embed_dim"]
    p = os.path.join(tmp, "nometa.safetensors")
    rewrite_header(good, p, nometa_edit)
    expect(2, ["embed_dim"], "check-layer", p)

    expect(2, ["decode"], "bench", "sideways")
    expect(2, ["--ctx"], "bench", "decode", "--ctx", "0")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_cli: {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
