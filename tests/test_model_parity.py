#!/usr/bin/python3
# Whole-model parity (DESIGN §8): `dattn logits` against tools/dtmodel.py.
#  1. every case of CASE_DIR/cases.txt (written by tests/gen_model_cases.py): logits of the case's
#     token sequence within 1e-4 relative (‖out − ref‖/‖ref‖ over the whole [n, vocab] matrix) of
#     the float64 reference;
#  2. with BUNDLED_MODEL: 64 greedy tokens in PyTorch (float32) after the prompt "The "; dattn's
#     logits over prompt + those tokens must pick the same next token at every position (a top-2
#     tie within 1e-5 is reported, not failed).
# Extra arguments for every dattn call come from DATTN_TEST_ARGS (e.g. "--backend opencl").
#
# usage: /usr/bin/python3 tests/test_model_parity.py DATTN_BIN CASE_DIR [BUNDLED_MODEL]

import os
import shlex
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import dtmodel  # noqa: E402

REL_TOL = 1e-4
TIE = 1e-5              # a top-2 logit gap at or below this is a tie, not a failure
NEAR_TIE = 1e-3         # gaps below this are reported
PROMPT = "The "
N_GREEDY = 64


def dattn_logits(exe, model, tokens, tmp):
    """Runs `dattn logits`; -> (logits tensor [n, vocab] float64 or None, message)."""
    out = os.path.join(tmp, "logits.safetensors")
    if os.path.exists(out):
        os.remove(out)
    cmd = ([exe, "logits", "-m", model, "--tokens", ",".join(str(int(t)) for t in tokens), "-o", out]
           + shlex.split(os.environ.get("DATTN_TEST_ARGS", "")))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None, "timed out after 300 s: " + " ".join(cmd)
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {' '.join(cmd)}\n{p.stderr.strip()}"
    try:
        tensors, _ = dtmodel.read_safetensors(out)
    except (OSError, ValueError, KeyError) as e:
        return None, f"cannot read {out}: {e}"
    if "logits" not in tensors:
        return None, f"{out} has no tensor 'logits' (has {', '.join(tensors)})"
    t = tensors["logits"]
    if t.dtype != torch.float32:
        return None, f"'logits' is {t.dtype}, expected F32"
    return t.to(torch.float64), ""


def check_case(exe, case_dir, name, tmp):
    ref, meta = dtmodel.read_safetensors(os.path.join(case_dir, name + ".ref.safetensors"))
    model = os.path.join(case_dir, meta.get("model", name + ".safetensors"))
    tokens, want = ref["tokens"].tolist(), ref["logits"].to(torch.float64)
    seed = meta.get("seed", "?")
    got, msg = dattn_logits(exe, model, tokens, tmp)
    if got is None:
        print(f"FAIL {name} (seed {seed}): {msg}")
        return False
    if list(got.shape) != list(want.shape):
        print(f"FAIL {name} (seed {seed}): logits shape {list(got.shape)}, expected {list(want.shape)}")
        return False
    rel = float((got - want).norm() / want.norm())
    ok = rel <= REL_TOL and bool(torch.isfinite(got).all())
    print(f"{'ok  ' if ok else 'FAIL'} {name} (seed {seed}, n={len(tokens)}, vocab={want.shape[1]}): "
          f"rel err {rel:.2e} (tol {REL_TOL:g})")
    return ok


def check_greedy(exe, model_path, tmp):
    """Token-identical greedy generation against PyTorch float32, position by position."""
    torch.set_num_threads(1)
    model = dtmodel.load(model_path, torch.float32)
    prompt = dtmodel.encode(PROMPT)
    new = dtmodel.generate(model, prompt, N_GREEDY)
    seq = prompt + new
    print(f"greedy (PyTorch f32, {model_path}): {PROMPT!r} -> {dtmodel.decode(new)!r}")
    got, msg = dattn_logits(exe, model_path, seq, tmp)
    if got is None:
        print(f"FAIL greedy-{N_GREEDY}: {msg}")
        return False
    if list(got.shape) != [len(seq), model.cfg.vocab_size]:
        print(f"FAIL greedy-{N_GREEDY}: logits shape {list(got.shape)}, expected "
              f"{[len(seq), model.cfg.vocab_size]}")
        return False
    with torch.no_grad():
        ref = dtmodel.load(model_path, torch.float64)(torch.tensor(seq))   # margins, in float64
    ok, ties = True, 0
    for i in range(len(prompt) - 1, len(seq) - 1):
        want, pick = seq[i + 1], int(torch.argmax(got[i]))
        top2 = torch.topk(ref[i], 2).values
        gap = float(top2[0] - top2[1])
        if pick != want:
            tie_gap = abs(float(ref[i, want] - ref[i, pick]))
            if tie_gap <= TIE:
                ties += 1
                print(f"  position {i}: tie, dattn picks {pick}, torch {want} (gap {tie_gap:.1e})")
            else:
                ok = False
                print(f"  position {i}: dattn picks {pick} ({dtmodel.decode([pick])!r}), torch "
                      f"{want} ({dtmodel.decode([want])!r}); float64 logits differ by {tie_gap:.2e}")
        elif gap < NEAR_TIE:
            print(f"  position {i}: near tie, top-2 gap {gap:.2e} (both pick {want})")
    rel = float((got[:len(seq)] - ref).norm() / ref.norm())
    print(f"{'ok  ' if ok else 'FAIL'} greedy-{N_GREEDY} on {os.path.basename(model_path)}: "
          f"{N_GREEDY} positions, {ties} ties; logits rel err vs float64 {rel:.2e}")
    return ok


def main():
    if len(sys.argv) not in (3, 4):
        print("usage: test_model_parity.py DATTN_BIN CASE_DIR [BUNDLED_MODEL]", file=sys.stderr)
        return 2
    exe, case_dir = sys.argv[1], sys.argv[2]
    bundled = sys.argv[3] if len(sys.argv) == 4 else None
    with open(os.path.join(case_dir, "cases.txt")) as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        print(f"test_model_parity: {case_dir}/cases.txt lists no cases")
        return 1
    if os.environ.get("DATTN_TEST_ARGS"):
        print(f"extra dattn arguments: {os.environ['DATTN_TEST_ARGS']}")
        if "opencl" in os.environ["DATTN_TEST_ARGS"]:
            p = subprocess.run([exe, "devices"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
            if p.returncode == 0 and "no OpenCL devices" in p.stdout:
                print("test_model_parity: no OpenCL device, skipped")
                return 77
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="dattn-parity-") as tmp:
        for name in names:
            if check_case(exe, case_dir, name, tmp):
                passed += 1
            else:
                failed += 1
        if bundled:
            if check_greedy(exe, bundled, tmp):
                passed += 1
            else:
                failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
