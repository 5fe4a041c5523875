#!/usr/bin/python3
# Hugging Face diffllama directories (DESIGN §1b, issue 11): `dattn logits -m DIR` against the
# float64 forward of tests/gen_hf_cases.py (written from transformers' modeling_diffllama.py), at
# every position: max over positions of ‖out − ref‖/‖ref‖ within 1e-4 (F32) or 1e-3 (F16/BF16
# weights). Each case runs as one prefill, in chunks of 3 (--batch 3: prefill of later chunks
# against the cache), and one token at a time (--batch 1: every position a decode step). Then
# hostile config.json files and indexes, each refused with a message that names the file and the
# field.
# Extra arguments for every dattn call come from DATTN_TEST_ARGS (e.g. "--backend opencl").
#
# usage: /usr/bin/python3 tests/test_hf_parity.py DATTN_BIN

import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
import gen_hf_cases as hf  # noqa: E402
import dtmodel  # noqa: E402

TOL = {torch.float32: 1e-4, torch.float16: 1e-3, torch.bfloat16: 1e-3}
N_TOKENS = 13


def extra_args():
    return shlex.split(os.environ.get("DATTN_TEST_ARGS", ""))


def run_logits(exe, model, tokens, out, more=()):
    if os.path.exists(out):
        os.remove(out)
    cmd = ([exe, "logits", "-m", model, "--tokens", ",".join(map(str, tokens)), "-o", out]
           + list(more) + extra_args())
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        return None, f"exit {p.returncode}: {' '.join(cmd)}\n{p.stderr.strip()}"
    t, _ = dtmodel.read_safetensors(out)
    return t["logits"].to(torch.float64), ""


def check_case(exe, tmp, i, case):
    seed = int(os.environ.get("DATTN_TEST_SEED", 1000 + i))
    path, cfg, weights = hf.build_case(tmp, case, seed)
    rng = random.Random(seed)
    tokens = [rng.randrange(cfg["vocab_size"]) for _ in range(N_TOKENS)]
    ref = hf.forward(cfg, weights, tokens)
    tol = TOL[case[1]]
    ok = True
    for label, model, more in (("one prefill", path, ()),
                               ("chunks of 3", os.path.join(path, "config.json"), ("--batch", "3")),
                               ("token by token", path, ("--batch", "1"))):
        got, msg = run_logits(exe, model, tokens, os.path.join(tmp, "logits.safetensors"), more)
        if got is None:
            print(f"FAIL {case[0]} ({label}, seed {seed}): {msg}")
            ok = False
            continue
        if list(got.shape) != list(ref.shape):
            print(f"FAIL {case[0]} ({label}): logits {list(got.shape)}, expected {list(ref.shape)}")
            ok = False
            continue
        rel = max(float((got[p] - ref[p]).norm() / ref[p].norm()) for p in range(len(tokens)))
        good = rel <= tol and bool(torch.isfinite(got).all())
        ok = ok and good
        print(f"{'ok  ' if good else 'FAIL'} {case[0]} ({label}, seed {seed}, n={len(tokens)}): "
              f"max rel err over positions {rel:.2e} (tol {tol:g})")
    return ok


# ---- hostile directories ---------------------------------------------------------------------

def hostile_cases(base_dir):
    """(name, edit(dir), words the message must hold); each edit spoils a copy of base_dir."""
    def cfg_edit(**changes):
        def edit(d):
            p = os.path.join(d, "config.json")
            with open(p) as f:
                cfg = json.load(f)
            for k, v in changes.items():
                if v is None:
                    cfg.pop(k, None)
                else:
                    cfg[k] = v
            with open(p, "w") as f:
                json.dump(cfg, f)
        return edit

    def raw_config(text):
        def edit(d):
            with open(os.path.join(d, "config.json"), "w") as f:
                f.write(text)
        return edit

    def index_edit(fn):
        def edit(d):
            p = os.path.join(d, "model.safetensors.index.json")
            with open(p) as f:
                idx = json.load(f)
            fn(idx, d)
            with open(p, "w") as f:
                json.dump(idx, f)
        return edit

    def drop_shard(idx, d):
        os.remove(os.path.join(d, sorted(set(idx["weight_map"].values()))[-1]))

    def wrong_shard(idx, d):
        names = sorted(set(idx["weight_map"].values()))
        k = next(k for k, v in idx["weight_map"].items() if v == names[0])
        idx["weight_map"][k] = names[1]

    def listed_twice(d):
        p = os.path.join(d, "model.safetensors.index.json")
        with open(p) as f:
            text = f.read()
        i = text.index('"weight_map": {') + len('"weight_map": {')
        with open(p, "w") as f:
            f.write(text[:i] + '"model.norm.weight": "model-00001-of-00002.safetensors", ' + text[i:])

    def path_escape(idx, d):
        k = next(iter(idx["weight_map"]))
        idx["weight_map"][k] = "../model-00001-of-00002.safetensors"

    def unlisted(idx, d):
        k = next(iter(idx["weight_map"]))
        del idx["weight_map"][k]

    return [
        ("kv heads a string", cfg_edit(num_key_value_heads="2"),
         ['config.json', 'num_key_value_heads is "2"', "expected an integer"]),
        ("hidden_size huge", cfg_edit(hidden_size=10 ** 15), ["config.json", "hidden_size", "outside"]),
        ("hidden_size past int64", raw_config('{"model_type": "diffllama", "hidden_size": 1' + "0" * 30 + "}"),
         ["config.json", "hidden_size", "outside"]),
        ("layers a float", cfg_edit(num_hidden_layers=2.5), ["config.json", "num_hidden_layers", "expected an integer"]),
        ("vocab missing", cfg_edit(vocab_size=None), ["config.json", "vocab_size", "missing"]),
        ("eps negative", cfg_edit(rms_norm_eps=-1e-5), ["config.json", "rms_norm_eps"]),
        ("tie a string", cfg_edit(tie_word_embeddings="yes"), ["config.json", "tie_word_embeddings", "true or false"]),
        ("model_type llama", cfg_edit(model_type="llama"), ["config.json", "model_type", '"llama"']),
        ("hidden_act gelu", cfg_edit(hidden_act="gelu"), ["config.json", "hidden_act", '"gelu"']),
        ("rope_type yarn", cfg_edit(rope_scaling={"rope_type": "yarn", "factor": 4.0}),
         ["config.json", "rope_scaling", "rope_type", '"yarn"']),
        ("v5 rope_type dynamic", cfg_edit(rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4}),
         ["config.json", "rope_parameters", "rope_type", '"dynamic"']),
        ("llama3 without factor", cfg_edit(rope_scaling={"rope_type": "llama3", "low_freq_factor": 1.0,
                                                         "high_freq_factor": 4.0,
                                                         "original_max_position_embeddings": 64}),
         ["config.json", "rope_scaling", "factor", "missing"]),
        ("eos a string", cfg_edit(eos_token_id="2"), ["config.json", "eos_token_id"]),
        ("eos out of range", cfg_edit(eos_token_id=[2, 100000]), ["config.json", "eos_token_id", "100000"]),
        ("odd heads", cfg_edit(num_attention_heads=5, num_key_value_heads=5, head_dim=None),
         ["config.json", "num_attention_heads"]),
        ("head_dim that the tensors do not have", cfg_edit(head_dim=32),
         ["q_proj.weight", "expected", "config.json"]),
        ("attention bias", cfg_edit(attention_bias=True), ["config.json", "attention_bias"]),
        ("config not JSON", raw_config('{"model_type": "diffllama",'), ["config.json"]),
        ("config an array", raw_config("[1, 2]"), ["config.json", "an object"]),
        ("shard missing", index_edit(drop_shard), ["model.safetensors.index.json", "model-00002-of-00002.safetensors"]),
        ("tensor in the wrong shard", index_edit(wrong_shard), ["model.safetensors.index.json", "shard"]),
        ("tensor listed twice", listed_twice, ["model.safetensors.index.json", "model.norm.weight", "twice"]),
        ("shard outside the directory", index_edit(path_escape), ["model.safetensors.index.json", "file name"]),
        ("tensor not in the map", index_edit(unlisted), ["model.safetensors.index.json", "does not list"]),
        ("index not JSON", lambda d: open(os.path.join(d, "model.safetensors.index.json"), "w").write("{"),
         ["model.safetensors.index.json"]),
        ("no config.json", lambda d: os.remove(os.path.join(d, "config.json")), ["config.json"]),
        ("ffn width differs from the tensors", cfg_edit(intermediate_size=50),
         ["mlp.gate_proj.weight", "[48,32]", "expected [50,32]"]),
        ("a layer more in the files", cfg_edit(num_hidden_layers=1),
         ["model.layers.1.", "num_hidden_layers = 1"]),
        ("untied without lm_head", cfg_edit(tie_word_embeddings=False),
         ["lm_head.weight", "tie_word_embeddings"]),
    ]


def check_hostile(exe, tmp):
    # A sharded, tied, GQA case to spoil.
    base_case = ("hostile", torch.float32, 32, 4, 2, None, 48, 2, 260, True, "v4", "default", 2, 1e-5, 1e4)
    base, _, _ = hf.build_case(tmp, base_case, 7)
    cases = hostile_cases(base)
    ok = True
    out = os.path.join(tmp, "hostile.safetensors")
    for name, edit, words in cases:
        d = os.path.join(tmp, "spoilt")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(base, d)
        edit(d)
        cmd = [exe, "logits", "-m", d, "--tokens", "1,2,3", "-o", out] + extra_args()
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        msg = p.stderr.strip()
        missing = [w for w in words if w not in msg]
        good = (p.returncode != 0 and p.returncode < 128 and not missing and "dattn" in msg
                and "Sanitizer" not in msg)
        ok = ok and good
        print(f"{'ok  ' if good else 'FAIL'} refused: {name}: exit {p.returncode}: {msg[:300]}"
              + (f"\n     (message lacks {missing})" if missing else ""))
    return ok


def main():
    if len(sys.argv) != 2:
        print("usage: test_hf_parity.py DATTN_BIN", file=sys.stderr)
        return 2
    exe = sys.argv[1]
    torch.set_num_threads(1)
    if "opencl" in os.environ.get("DATTN_TEST_ARGS", ""):
        print(f"extra dattn arguments: {os.environ['DATTN_TEST_ARGS']}")
        p = subprocess.run([exe, "devices"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if p.returncode == 0 and "no OpenCL devices" in p.stdout:
            print("test_hf_parity: no OpenCL device, skipped")
            return 77
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="dattn-hf-") as tmp:
        for i, case in enumerate(hf.CASES):
            if check_case(exe, tmp, i, case):
                passed += 1
            else:
                failed += 1
        if check_hostile(exe, tmp):
            passed += 1
        else:
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
