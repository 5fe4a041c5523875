#!/usr/bin/python3
# `dattn run` on a Hugging Face diffllama directory with its own tokenizer.json (issue 11 items 2-3):
# the prompt gets the tokenizer's BOS, greedy generation matches the float64 forward of
# tests/gen_hf_cases.py token for token, and it stops at the model's end-of-text token (from
# generation_config.json, else config.json), printing the bytes of the tokens before it and one
# stderr line that names it; the REPL says so too and goes on with the next prompt. The expected
# tokens come from the PyTorch reference (greedy argmax over its logits), never from dattn.
#
# usage: /usr/bin/python3 tests/test_hf_run.py DATTN_BIN

import json
import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_bpe_cases as bpe  # noqa: E402
import gen_hf_cases as hf  # noqa: E402

# A byte-level tokenizer.json over the 256 bytes, with <s> / </s> as added special tokens and a
# template that puts <s> before the text (what Llama-style post-processors do).
BOS, EOS_UNUSED = 256, 257


def write_tokenizer(path):
    vocab = {bpe.BYTE_MAP[b]: b for b in range(256)}
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [
            {"id": BOS, "content": "<s>", "special": True, "normalized": False,
             "lstrip": False, "rstrip": False, "single_word": False},
            {"id": EOS_UNUSED, "content": "</s>", "special": True, "normalized": False,
             "lstrip": False, "rstrip": False, "single_word": False}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                          "use_regex": True},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS],
                                                      "tokens": ["<s>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "vocab": vocab, "merges": []},
    }
    with open(path, "w") as f:
        json.dump(tok, f)


def greedy(cfg, weights, ids, n):
    """n greedy tokens after ids, from the float64 reference (a full forward per step)."""
    out = list(ids)
    for _ in range(n):
        out.append(int(torch.argmax(hf.forward(cfg, weights, out)[-1])))
    return out[len(ids):]


def token_bytes(t):
    """What a token prints: its byte, a special token's content, nothing past the tokenizer's
    vocabulary (the model's is larger; tokenizers' decode skips such ids)."""
    return bytes([t]) if t < 256 else {BOS: b"<s>", EOS_UNUSED: b"</s>"}.get(t, b"")


failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def run(exe, args, stdin=None):
    return subprocess.run([exe] + args, input=stdin, capture_output=True, timeout=300)


def main():
    exe = sys.argv[1]
    # An f32 GQA case with an untied head over 300 tokens: ids 0..255 are bytes, 256/257 special.
    case = ("run_f32", torch.float32, 64, 8, 4, None, 96, 2, 300, False, "v4", "default", 0,
            1e-5, 10000.0)
    seed = int(os.environ.get("DATTN_TEST_SEED", 4242))
    print(f"seed {seed} (DATTN_TEST_SEED replays it)")
    with tempfile.TemporaryDirectory(prefix="dattn-hf-run-") as tmp:
        path, cfg, weights = hf.build_case(tmp, case, seed)
        write_tokenizer(os.path.join(path, "tokenizer.json"))
        prompt = "Hi"
        ids = [BOS] + list(prompt.encode())
        ref = greedy(cfg, weights, ids, 6)
        print(f"reference greedy tokens after {ids}: {ref}")

        # The prompt's ids: BOS from the template, then the bytes.
        r = run(exe, ["tokenize", "-m", path, "-p", prompt])
        check(r.returncode == 0 and r.stdout.decode().split() == [str(i) for i in ids],
              f"tokenize adds BOS: {r.stdout.decode().strip()} (want {ids})")

        def generate(eos_at, where):
            """run -p with the reference's token eos_at (index into ref) as the end of text."""
            eos = ref[eos_at]
            cfg_path = os.path.join(path, "config.json")
            gen_path = os.path.join(path, "generation_config.json")
            c = dict(cfg)
            if os.path.exists(gen_path):
                os.remove(gen_path)
            if where == "generation_config.json":
                c["eos_token_id"] = [EOS_UNUSED]   # what generate() reads instead
                with open(gen_path, "w") as f:
                    json.dump({"eos_token_id": [EOS_UNUSED, eos], "bos_token_id": BOS}, f)
            else:
                c["eos_token_id"] = [EOS_UNUSED, eos]
            with open(cfg_path, "w") as f:
                json.dump(c, f)
            r = run(exe, ["run", "-m", path, "-p", prompt, "-n", "6", "--temp", "0"])
            # The tokens before the first occurrence of the EOS token are printed.
            first = ref.index(eos)
            want = b"".join(token_bytes(t) for t in ref[:first])
            err = r.stderr.decode(errors="replace")
            check(r.returncode == 0, f"run exits 0 ({where}): {err.strip()[:200]}")
            check(r.stdout == want, f"greedy output before EOS {eos} ({where}): {r.stdout!r} "
                  f"(want {want!r})")
            check("end of text" in err and f"token {eos}" in err,
                  f"stderr names the end of text ({where}): {err.strip()[:200]}")
            check(f"generated {first + 1} tokens" in err, f"stats count {first + 1} tokens "
                  f"({where})")

        generate(2, "config.json")
        generate(0, "generation_config.json")
        generate(4, "generation_config.json")

        # No end of text among the first 6: all of them, and no end-of-text line.
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(dict(cfg, eos_token_id=[EOS_UNUSED] if EOS_UNUSED not in ref else []), f)
        os.remove(os.path.join(path, "generation_config.json"))
        r = run(exe, ["run", "-m", path, "-p", prompt, "-n", "6", "--temp", "0"])
        want = b"".join(token_bytes(t) for t in ref)
        check(r.returncode == 0 and r.stdout == want and b"end of text" not in r.stderr,
              f"without an end of text: all 6 tokens {r.stdout!r} (want {want!r})")

        # The REPL: the first answer stops at the end of text and says so, the next prompt runs.
        eos = ref[1]
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(dict(cfg, eos_token_id=eos), f)
        r = run(exe, ["run", "-m", path, "-n", "6", "--temp", "0"], stdin=b"Hi\nmore\n")
        err = r.stderr.decode(errors="replace")
        first = ref.index(eos)
        want = b"".join(token_bytes(t) for t in ref[:first]) + b"\n"
        check(r.returncode == 0, f"REPL exits 0: {err.strip()[:200]}")
        check(r.stdout.startswith(want), f"REPL's first answer stops at the end of text: "
              f"{r.stdout[:40]!r} (want {want!r} first)")
        check(err.count("end of text") >= 1, "REPL says end of text")
        check(len(r.stdout) > len(want), "REPL answers the second prompt too")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
