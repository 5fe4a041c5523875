#!/usr/bin/env python3
# PyTorch parity (DESIGN §8): runs `dattn check-layer FILE` for every case listed in
# CASES_DIR/cases.txt (written by gen_layer_cases.py) in several modes: all prefill, prefill of a
# middle N then decode, all decode, f16 and q8 KV, one thread. One line per run; exit 1 if any
# run exits non-zero.
#
# usage: run_check_layer.py DATTN_EXE CASES_DIR [BACKEND]   (BACKEND: cpu, the default, or opencl)
import json
import os
import struct
import subprocess
import sys
import time


def n_tokens(path):
    """T from the shape of tensor 'x' in a safetensors file (None if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        return int(header["x"]["shape"][0])
    except (OSError, ValueError, KeyError, IndexError, struct.error):
        return None


def main():
    if len(sys.argv) not in (3, 4):
        print("usage: run_check_layer.py DATTN_EXE CASES_DIR [BACKEND]", file=sys.stderr)
        return 2
    exe, cases_dir = sys.argv[1], sys.argv[2]
    backend = sys.argv[3] if len(sys.argv) == 4 else "cpu"
    if backend == "opencl":
        p = subprocess.run([exe, "devices"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if p.returncode == 0 and "no OpenCL devices" in p.stdout:
            print("run_check_layer: no OpenCL device, skipped")
            return 77
    with open(os.path.join(cases_dir, "cases.txt")) as f:
        files = [line.strip() for line in f if line.strip()]
    if not files:
        print(f"run_check_layer: {cases_dir}/cases.txt lists no cases")
        return 1
    runs = fails = 0
    t0 = time.time()
    for name in files:
        path = os.path.join(cases_dir, name)
        T = n_tokens(path)
        modes = [[]]
        if T is not None and T >= 3:
            modes.append(["--prefill", str(T // 2)])
        modes += [["--prefill", "0"], ["--kv", "f16"], ["--kv", "q8"]]
        if backend == "cpu":   # thread counts mean nothing to an OpenCL device
            modes.append(["--threads", "1"])
        for extra in modes:
            cmd = [exe, "check-layer", path, "--backend", backend] + extra
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            runs += 1
            out = p.stdout.strip().splitlines()
            last = out[-1] if out else ""
            label = " ".join(extra) if extra else "(all prefill)"
            status = "ok  " if p.returncode == 0 else f"FAIL (exit {p.returncode})"
            print(f"{status} {name:42s} {label:14s} {last}")
            if p.returncode != 0:
                fails += 1
                for line in out[:-1]:
                    print(f"      {line}")
    print(f"run_check_layer ({backend}): {runs} runs, {fails} failed, {time.time() - t0:.1f} s")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
