#!/usr/bin/env python3
# The dattn tool's contract on bad input (DESIGN §7): every case exits with status 2 and one line
# on stderr that names the problem, never a crash; a result outside tolerance exits 1. Malformed
# files are made here from a valid case written by gen_layer_cases.py.
#
# usage: test_cli.py DATTN_EXE CASES_DIR
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_model  # noqa: E402


def run(exe, *args, env=None):
    full_env = dict(os.environ, **(env or {}))
    p = subprocess.run([exe, *args], capture_output=True, timeout=120, env=full_env)
    # `dattn run` writes raw token bytes: decode without failing on them.
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def field(text, key):
    """The integer after 'key=' in text (None when absent)."""
    m = re.search(rf"\b{key}=(\d+)", text)
    return int(m.group(1)) if m else None


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
    # A bound that passes everything (inf, or 1e999 which reads as inf) or nothing (nan) is no
    # bound: refused like a negative one.
    for tol in ("inf", "1e999", "nan", "-1e-3", "-0x1p3"):
        expect(2, ["--tol"], "check-layer", good, "--tol", tol)
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
    # refused before any device is opened (or: this build has no OpenCL); both name gemm
    expect(2, ["gemm"], "bench", "gemm", "--backend", "opencl", "--tokens", "0")
    expect(2, ["gemm"], "bench", "gemm", "--backend", "opencl", "--cols", "70", "--weights", "q8_0")
    expect(2, ["gemv"], "bench", "gemv", "--backend", "opencl", "--rows", "x")
    failures += model_cases(exe, tmp, expect)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_cli: {failures} failed")
    return 1 if failures else 0


def model_cases(exe, tmp, expect):
    """run, logits, plan and bench model on a tiny random model and malformed copies of it.
    Returns the failures of the checks made here (expect() counts its own)."""
    failures = 0

    def check(ok, what, detail=""):
        nonlocal failures
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            print(f"     {detail.strip()}")
            failures += 1

    model = tiny_model.write(os.path.join(tmp, "tiny.safetensors"))
    missing = os.path.join(tmp, "missing.safetensors")
    expect(2, ["no model"], "run")
    expect(2, ["cannot open", "missing.safetensors"], "run", "-m", missing, "-p", "x")
    expect(2, ["unknown option"], "run", "-m", model, "--frob", "1")
    expect(2, ["missing value", "-p"], "run", "-m", model, "-p")
    expect(2, ["--kv"], "run", "-m", model, "--kv", "f8", "-p", "x")
    expect(2, ["--backend"], "run", "-m", model, "--backend", "tpu", "-p", "x")
    expect(2, ["--policy"], "run", "-m", model, "--policy", "sink:x", "-p", "x")
    expect(2, ["--policy"], "run", "-m", model, "--policy", "sink:4,window:0", "-p", "x")
    expect(2, ["disagrees"], "run", "-m", model, "--policy", "sink:4,window:8", "--ctx", "100",
           "-p", "x")
    expect(2, ["no window"], "run", "-m", model, "--policy", "sink:40", "--ctx", "16", "-p", "x")
    expect(2, ["--ctx"], "run", "-m", model, "--ctx", "0", "-p", "x")
    expect(2, ["temp"], "run", "-m", model, "--temp", "-1", "-p", "x")
    expect(2, ["top_p"], "run", "-m", model, "--top-p", "0", "-p", "x")
    expect(2, ["seed"], "run", "-m", model, "--seed", "-5", "-p", "x")
    expect(2, ["n takes"], "run", "-m", model, "-n", "-3", "-p", "x")
    # A prompt longer than the context under the full policy: refused, said why, nothing runs.
    expect(2, ["cache_full", "n_ctx = 8"], "run", "-m", model, "--ctx", "8", "--policy", "full",
           "-p", "a prompt longer than eight bytes")
    # Without --policy, run streams past the context (sink+window) and says so once.
    rc, out, err = run(exe, "run", "-m", model, "--ctx", "8", "-p", "a prompt longer than eight "
                       "bytes", "-n", "20")
    check(rc == 0 and err.count("passed the context of 8 tokens") == 1
          and "sink:4,window:4" in err,
          f"run without --policy streams past --ctx 8 under sink:4,window:4 (exit {rc})", err)
    rc, out, err = run(exe, "run", "-m", model, "--ctx", "3", "-p", "abcdef", "-n", "2")
    check(rc == 0 and "sink:1,window:2" in err,
          f"run's default sinks shrink to fit --ctx 3 (exit {rc})", err)
    expect(2, ["no tokens"], "run", "-m", model, "-p", "")
    expect(2, ["seed"], "run", "-m", model, "--seed", " -5", "-p", "x")
    rc, out, err = run(exe, "run", "-m", model, "-p", "Hi", "-n", "5", "--seed", "7")
    check(rc == 0 and "arena_bytes=" in err and "n_past=6" in err,
          f"run -p: exit {rc}, a stats line with n_past and arena_bytes", err)

    # Options past what they can mean: each an error, or one line of warning.
    # sink + window past 2^30 (their sum overflowed an int before the limit check): refused
    # while parsing, before anything is printed or sized.
    for cmd in (["plan", "-m", model], ["run", "-m", model, "-p", "x"]):
        rc, out, err = run(exe, *cmd, "--policy", "sink:1073741824,window:1073741824")
        check(rc == 2 and out == "" and "--policy" in err and len(err.splitlines()) == 1
              and "runtime error" not in err,
              f"{cmd[0]} --policy sink:2^30,window:2^30: exit {rc}, one line, nothing printed",
              out + err)
    expect(2, ["--policy"], "plan", "-m", model, "--policy", "sink:1,window:1073741824")
    # A context far past the model's max_seq_len (128): one warning line naming both numbers.
    for args, n in ((["run", "-m", model, "-p", "x", "-n", "1", "--ctx", "100000"], "100000"),
                    (["run", "-m", model, "-p", "x", "-n", "1", "--policy", "sink:4,window:5000"],
                     "5004"),
                    (["plan", "-m", model, "--ctx", "100000"], "100000"),
                    (["logits", "-m", model, "--tokens", "1,2", "--ctx", "4096", "-o",
                      os.path.join(tmp, "long.safetensors")], "4096")):
        rc, out, err = run(exe, *args)
        warn = [l for l in err.splitlines() if "warning" in l and n in l and "128" in l]
        check(rc == 0 and len(warn) == 1,
              f"{args[0]} with a context of {n}: exit {rc}, one warning with {n} and max_seq_len "
              f"128", err)
    rc, out, err = run(exe, "run", "-m", model, "-p", "x", "-n", "1", "--ctx", "128")
    check(rc == 0 and "warning" not in err, "run --ctx max_seq_len: no warning", err)
    # --device names an OpenCL device: with the cpu backend (the default) it is refused;
    # $DATTN_DEVICE, set for every command, is not.
    expect(2, ["--device", "cpu"], "run", "-m", model, "--backend", "cpu", "--device", "0:0",
           "-p", "x")
    expect(2, ["--device", "cpu"], "run", "-m", model, "--device", "0:0", "-p", "x")
    expect(2, ["--device", "cpu"], "plan", "-m", model, "--device", "gpu", "--ctx", "16")
    expect(0, [], "run", "-m", model, "-p", "x", "-n", "1", env={"DATTN_DEVICE": "0:0"})
    expect(2, ["--reps"], "bench", "model", "-m", model, "--reps", "0")

    # Malformed models: each error names what is wrong and where.
    def bad_model(name, **kw):
        return tiny_model.write(os.path.join(tmp, name), **kw)

    def drop(key):
        return lambda h: h.pop(key)

    def reshape(key, shape):
        return lambda h: h[key].update(shape=shape)

    def meta(key, value):
        return lambda h: h["__metadata__"].update({key: value})

    expect(2, ["tokenizer", "bpe"], "run", "-p", "x", "-m", bad_model("bpe.safetensors", tokenizer="bpe"))
    expect(2, ["layers.1.ffn_norm.weight", "missing"], "run", "-p", "x", "-m",
           bad_model("nonorm.safetensors", edit=drop("layers.1.ffn_norm.weight")))
    expect(2, ["output.weight"], "run", "-p", "x", "-m",
           bad_model("noout.safetensors", edit=drop("output.weight")))
    expect(2, ["layers.0.attn.k_proj.weight"], "run", "-p", "x", "-m",
           bad_model("kshape.safetensors", edit=reshape("layers.0.attn.k_proj.weight", [32, 128])))
    expect(2, ["tok_embeddings.weight"], "run", "-p", "x", "-m",
           bad_model("dim.safetensors", edit=meta("dim", "96")))
    expect(2, ["layers.2."], "run", "-p", "x", "-m",
           bad_model("layers.safetensors", edit=meta("n_layers", "3")))
    expect(2, ["n_heads"], "run", "-p", "x", "-m",
           bad_model("nometa.safetensors", edit=lambda h: h["__metadata__"].pop("n_heads")))

    # logits: the token list is checked before anything runs.
    out_path = os.path.join(tmp, "logits.safetensors")
    expect(2, ["no model"], "logits", "--tokens", "1,2", "-o", out_path)
    expect(2, ["no tokens"], "logits", "-m", model, "--tokens", "", "-o", out_path)
    expect(2, ["256", "vocabulary"], "logits", "-m", model, "--tokens", "1,256", "-o", out_path)
    expect(2, ["-1", "vocabulary"], "logits", "-m", model, "--tokens", "-1", "-o", out_path)
    expect(2, ["--tokens"], "logits", "-m", model, "--tokens", "1,,2", "-o", out_path)
    expect(2, ["--tokens"], "logits", "-m", model, "--tokens", "1,x", "-o", out_path)
    expect(2, ["no output"], "logits", "-m", model, "--tokens", "1,2")
    expect(2, ["shorter"], "logits", "-m", model, "--tokens", "1,2,3", "--ctx", "2", "-o", out_path)
    expect(2, ["cannot"], "logits", "-m", model, "--tokens", "1,2", "-o",
           os.path.join(tmp, "no-such-dir", "x.safetensors"))
    tokens = [72, 105, 32, 116, 104, 101, 114, 101]
    expect(0, ["wrote"], "logits", "-m", model, "--tokens", ",".join(map(str, tokens)), "-o", out_path)
    rows = read_logits(out_path)
    check(rows is not None and len(rows) == len(tokens) and all(len(r) == 256 for r in rows)
          and all(math.isfinite(v) for r in rows for v in r),
          f"logits file holds [{len(tokens)}, 256] finite F32", str(rows)[:200])
    # Causality: a prefix of the sequence gives the same logits at its positions.
    expect(0, ["wrote"], "logits", "-m", model, "--tokens", ",".join(map(str, tokens[:3])), "-o",
           out_path + ".3")
    pre = read_logits(out_path + ".3")
    if rows and pre:
        num = sum((a - b) ** 2 for ra, rb in zip(rows[:3], pre) for a, b in zip(ra, rb))
        den = sum(b * b for rb in pre for b in rb)
        check(math.sqrt(num / den) < 1e-5, "logits of a prefix equal the first rows (causal)",
              f"rel {math.sqrt(num / den):.3e}")

    # plan: its arena bytes are the ones `run` really reserves (no policy: run's default).
    expect(2, ["--mem", "--ctx"], "plan", "-m", model)
    expect(2, ["--mem"], "plan", "-m", model, "--mem", "12X")
    expect(2, ["--mem"], "plan", "-m", model, "--mem", "-1G")
    expect(2, ["not both"], "plan", "-m", model, "--mem", "1G", "--ctx", "5")
    expect(0, ["none fits"], "plan", "-m", model, "--mem", "1000")
    for policy, ctx in (("full", "100"), ("sink:4,window:60", None), ("sink:4", "48"),
                        (None, "100")):
        extra = (["--policy", policy] if policy else []) + (["--ctx", ctx] if ctx else [])
        rc, out, err = run(exe, "plan", "-m", model, *extra)
        for kv in ("f32", "f16", "q8"):
            line = next((l for l in out.splitlines() if l.startswith(f"plan kv={kv} ")), "")
            rc2, out2, err2 = run(exe, "run", "-m", model, "-p", "x", "-n", "2", "--kv", kv, *extra)
            want, got = field(line, "arena_bytes"), field(err2, "arena_bytes")
            check(rc == 0 and rc2 == 0 and want is not None and want == got,
                  f"plan {policy} ctx={ctx} kv={kv}: arena_bytes {want} == run's {got}",
                  err + err2)
    budget = 2 * 1024 * 1024
    rc, out, err = run(exe, "plan", "-m", model, "--mem", "2M")
    for kv in ("f32", "f16", "q8"):
        line = next((l for l in out.splitlines() if l.startswith(f"plan kv={kv} ")), "")
        n_ctx, total = field(line, "n_ctx"), field(line, "total_bytes")
        ok = rc == 0 and n_ctx and total is not None and total <= budget
        if ok:
            _, out2, _ = run(exe, "plan", "-m", model, "--kv", kv, "--ctx", str(n_ctx + 1))
            over = field(next((l for l in out2.splitlines() if l.startswith("plan ")), ""),
                         "total_bytes")
            ok = over is not None and over > budget
        check(ok, f"plan --mem 2M kv={kv}: n_ctx={n_ctx} fits and n_ctx+1 does not", out + err)

    expect(2, ["--fills"], "bench", "model", "-m", model, "--fills", "5,3")
    expect(2, ["--rounds"], "bench", "model", "-m", model, "--rounds", "0")
    # --rounds: every round printed with its own ceiling; each fill's result line is the round
    # ranked (R + 1) / 2 by % of floor, its figures consistent with each other.
    rc, out, err = run(exe, "bench", "model", "-m", model, "--rounds", "3", "--reps", "2",
                       "--fills", "0,3", "--prompt", "4")
    rounds = {}
    for m in re.finditer(r"^fill (\d+) round (\d+): ceiling ([\d.]+) / ([\d.]+) GB/s, "
                         r"([\d.]+) ms/token, ([\d.]+)% of floor$", out, re.M):
        rounds.setdefault(int(m.group(1)), []).append(
            (float(m.group(5)), float(m.group(6)), (float(m.group(3)) + float(m.group(4))) / 2))
    lines = [l for l in out.splitlines() if l.startswith("bench=model_decode ")]

    def slack(value, *printed):
        """What rounding to the printed digits can move value by: (half a unit, figure) each."""
        return 1e-6 + 1.01 * abs(value) * sum(unit / abs(fig) for unit, fig in printed if fig)

    ok = rc == 0 and sorted(rounds) == [0, 3] and all(len(v) == 3 for v in rounds.values()) \
        and len(lines) == 2
    for l in lines if ok else []:
        kv = dict(x.split("=", 1) for x in l.split()[1:])
        fill, ms, pct = int(kv["fill"]), float(kv["ms"]), float(kv["pct"])
        floor, gbps, nbytes = float(kv["floor_ms"]), float(kv["ceiling_gbps"]), float(kv["bytes"])
        # The median as printed; rounds that print the same % (a tie in 0.1) may be either.
        middle = sorted(r[1] for r in rounds[fill])[1]
        ok &= any(abs(ms - r[0]) < 1e-4 and abs(gbps - r[2]) < 0.11
                  for r in rounds[fill] if r[1] == middle) and abs(pct - middle) < 0.051 \
            and abs(floor - nbytes / (gbps * 1e9) * 1e3) <= \
            slack(floor, (5e-5, floor), (0.05, gbps)) \
            and abs(pct - 100 * floor / ms) <= 0.05 + slack(pct, (5e-5, floor), (5e-5, ms))
    check(ok, "bench model --rounds 3: each fill reports its median round", out + err)
    expect(2, ["no model"], "bench", "model")
    expect(2, ["--policy"], "bench", "model", "-m", model, "--policy", "sink:4,window:8")
    return failures


def read_logits(path):
    """Rows of the 'logits' F32 [n, vocab] tensor of a safetensors file; None if not that."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            data = f.read()
        t = header["logits"]
        rows, cols = t["shape"]
        lo, hi = t["data_offsets"]
        if t["dtype"] != "F32" or hi - lo != rows * cols * 4:
            return None
        flat = struct.unpack(f"<{rows * cols}f", data[lo:hi])
        return [list(flat[r * cols:(r + 1) * cols]) for r in range(rows)]
    except (OSError, KeyError, ValueError, struct.error):
        return None


if __name__ == "__main__":
    sys.exit(main())
