#!/usr/bin/python3
"""`dattn perplexity` against a float64 reference (tools/dtmodel.py) computed here the way the
command is documented: the text's tokens in chunks of --ctx, each chunk a fresh context, the
tokens of each chunk's second half scored (the logits at positions ctx/2 .. ctx-2 predict the next
token), nats per token = the mean -log softmax, per byte likewise over the scored tokens' bytes.
Random models and random text (a seed printed), --weights f16 / q8_0 (the reference quantizes with
tests/test_weight_formats.py's converters), --chunks. Relative tolerance 1e-5 on nats per token.
Bad input (no file, a text shorter than one chunk, --policy) is refused by name.

With the bundled model and Debian's fortunes installed (the model's held-out text, written by
tools/train_model.py --write-held-out), the quality of the block formats is checked too: q8_0
within +0.5% of f16's nats per byte, q4_0 within +5%; once in chunks (prefill) and once with
--batch 1, one token a step, where the CPU backend's decode GEMV of the block formats also
quantizes each projection's input row to q8 blocks (src/cpu/gemm.h).

usage: /usr/bin/python3 tests/test_perplexity.py DATTN_BIN [BUNDLED_MODEL]
env:   DATTN_TEST_SEED replays the random cases
"""
import math
import os
import random
import re
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
sys.path.insert(0, HERE)
import dtmodel  # noqa: E402
from test_weight_formats import held_model  # noqa: E402

REL_TOL = 1e-5
LINE = re.compile(r"^perplexity weights=(\S+) kv=(\S+) ctx=(\d+) chunks=(\d+) tokens=(\d+) "
                  r"bytes=(\d+) nats_per_token=(\S+) nats_per_byte=(\S+) bits_per_byte=(\S+) "
                  r"ppl=(\S+)$", re.M)


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def dattn_ppl(exe, model, text, *more):
    p = run([exe, "perplexity", "-m", model, "-f", text] + list(more))
    m = LINE.search(p.stdout)
    if p.returncode != 0 or not m:
        return None, f"exit {p.returncode}: {p.stdout.strip()} {p.stderr.strip()}"
    return m, ""


def reference(model, ids, ctx, max_chunks=None):
    """(nats per token, tokens scored) in float64; the byte tokenizer: one byte a token."""
    n_chunks = len(ids) // ctx
    if max_chunks:
        n_chunks = min(n_chunks, max_chunks)
    total, count = 0.0, 0
    with torch.no_grad():
        for c in range(n_chunks):
            chunk = torch.tensor(ids[c * ctx:(c + 1) * ctx])
            logp = torch.log_softmax(model(chunk[:-1]), dim=-1)
            for pos in range(ctx // 2, ctx - 1):
                total -= float(logp[pos, chunk[pos + 1]])
                count += 1
    return total / count, count


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    exe = sys.argv[1]
    bundled = sys.argv[2] if len(sys.argv) == 3 else None
    seed = int(os.environ.get("DATTN_TEST_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (DATTN_TEST_SEED={seed} replays it)")
    torch.set_num_threads(1)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        gen = torch.Generator().manual_seed(seed)
        cfg = dtmodel.Config(dim=64, n_layers=2, n_heads=2, n_kv_heads=1, vocab_size=256,
                             ffn_dim=96, max_seq_len=64, tie_embeddings=False)
        model = dtmodel.DiffTransformer(cfg).to(torch.float64)
        dtmodel.randomize(model, gen)
        path = os.path.join(tmp, "model.safetensors")
        dtmodel.export(model, path, "F16")
        stored = dtmodel.load(path, torch.float32)
        rng = random.Random(seed)
        text = bytes(rng.choice(b"abcdefgh ijklmnop\n.,") for _ in range(700))
        text_path = os.path.join(tmp, "text.txt")
        with open(text_path, "wb") as f:
            f.write(text)
        ids = list(text)
        for fmt, ctx, chunks in (("f16", 32, None), ("q8_0", 64, None), ("q4_0", 48, 5)):
            want, count = reference(held_model(cfg, stored.state_dict(), fmt), ids, ctx, chunks)
            more = ["--weights", fmt, "--ctx", str(ctx), "--kv", "f32"]
            if chunks:
                more += ["--chunks", str(chunks)]
            m, msg = dattn_ppl(exe, path, text_path, *more)
            if m is None:
                print(f"FAIL --weights {fmt} --ctx {ctx}: {msg}")
                failures += 1
                continue
            got, n_tok, n_bytes = float(m.group(7)), int(m.group(5)), int(m.group(6))
            rel = abs(got - want) / want
            ok = (rel <= REL_TOL and n_tok == count and n_bytes == count
                  and abs(float(m.group(10)) - math.exp(got)) <= 1e-5 * math.exp(got))
            print(f"{'ok  ' if ok else 'FAIL'} --weights {fmt} --ctx {ctx}: nats/token {got:.6f}, "
                  f"reference {want:.6f} (rel {rel:.1e}, tol {REL_TOL:.0e}); {n_tok} tokens "
                  f"scored, reference {count}")
            failures += not ok

        # Refused by name.
        short = os.path.join(tmp, "short.txt")
        with open(short, "wb") as f:
            f.write(b"too short")
        for args, want in (
                (["-f", os.path.join(tmp, "absent.txt")], "cannot open"),
                (["-f", short, "--ctx", "32"], "a chunk of --ctx 32 needs"),
                (["-f", text_path, "--policy", "sink:4,window:28"], "--policy"),
                ([], "no text")):
            p = run([exe, "perplexity", "-m", path] + args)
            ok = p.returncode == 2 and want in p.stderr
            print(f"{'ok  ' if ok else 'FAIL'} refused ({want}): {p.stderr.strip()}")
            failures += not ok

        # The bundled model on its held-out text: what the block formats cost.
        fortunes = "/usr/share/games/fortunes"
        if bundled and os.path.isdir(fortunes):
            held_out = os.path.join(tmp, "held-out.txt")
            p = run([sys.executable, os.path.join(HERE, "..", "tools", "train_model.py"),
                     "--write-held-out", held_out])
            if p.returncode != 0:
                print(f"FAIL writing the held-out text: {p.stderr.strip()}")
                failures += 1
            else:
                for batch in ([], ["--batch", "1"]):
                    per_byte = {}
                    for fmt in ("f16", "q8_0", "q4_0"):
                        m, msg = dattn_ppl(exe, bundled, held_out, "--weights", fmt, "--chunks",
                                           "16", *batch)
                        if m is None:
                            print(f"FAIL bundled model --weights {fmt} {' '.join(batch)}: {msg}")
                            failures += 1
                        else:
                            per_byte[fmt] = float(m.group(8))
                    if len(per_byte) == 3:
                        for fmt, limit in (("q8_0", 0.005), ("q4_0", 0.05)):
                            up = per_byte[fmt] / per_byte["f16"] - 1
                            ok = up <= limit
                            print(f"{'ok  ' if ok else 'FAIL'} bundled model, held-out text"
                                  f"{', --batch 1' if batch else ''}: {fmt} {per_byte[fmt]:.5f} "
                                  f"nats/byte, f16 {per_byte['f16']:.5f} ({up * 100:+.3f}%, "
                                  f"limit +{limit * 100:.1f}%)")
                            failures += not ok
        else:
            print("(the bundled model's held-out check skipped: needs the model and Debian's "
                  "fortunes package)")
    print(f"test_perplexity: {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
