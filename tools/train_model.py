#!/usr/bin/python3
# Trains the bundled Diff Transformer: a byte-level model of tools/dtmodel.py on
# the fortune cookies that Debian's `fortunes` and `fortunes-min` packages ship, for a bounded time
# on 2 cores, and exports it as F16 safetensors (DESIGN §6) next to its training log.
#
# usage: /usr/bin/python3 tools/train_model.py [--minutes 25] [--seed 1] [--name fortunes-diff-3m]
#        /usr/bin/python3 tools/train_model.py --steps N ...   (replays a run: the log names N)
#
# Determinism: with --steps N the run is a function of (N, --seed, batch shape, thread counts):
# one torch.Generator for init and batches, deterministic algorithms, a cosine over steps. With
# --minutes (the default) the cosine follows the clock instead, so the run ends on time on a busy
# machine with the learning rate at its floor; such a run is not bit-replayable.

import argparse
import math
import os
import sys
import time

# Threads: the matrix products run in OpenBLAS's own pool (Debian's libopenblas0-pthread behind
# libblas.so.3; with only the reference libblas3 a step is ~10x slower) with 2 threads; torch's
# OpenMP intra-op pool (element-wise ops) gets 1, because on a 2-core machine shared with other
# jobs 2 OpenMP threads spin against each other (element-wise ops measured ~30x slower).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dtmodel  # noqa: E402

FORTUNE_DIR = "/usr/share/games/fortunes"
HELD_OUT_EVERY = 20          # every 20th fortune (index % 20 == 19) is held out
SEPARATOR = b"%\n"           # as in the fortune files: the model learns where a fortune ends


def read_fortunes(directory):
    """Fortunes of every strfile text in directory (skipping .dat indexes and .u8 duplicates),
    files in sorted order, each fortune as bytes ending in a newline."""
    if not os.path.isdir(directory):
        raise SystemExit(f"train_model: {directory} does not exist; install Debian's 'fortunes' "
                         "package (and 'fortunes-min'): apt-get install fortunes fortunes-min")
    names = sorted(n for n in os.listdir(directory)
                   if not n.endswith((".dat", ".u8")) and os.path.isfile(os.path.join(directory, n)))
    fortunes = []
    for n in names:
        with open(os.path.join(directory, n), "rb") as f:
            text = f.read()
        for chunk in text.split(b"\n%\n"):
            chunk = chunk.strip(b"\n%")
            if chunk.strip():
                fortunes.append(chunk + b"\n")
    if len(names) < 2 or len(fortunes) < 1000:
        raise SystemExit(f"train_model: only {len(names)} files / {len(fortunes)} fortunes in "
                         f"{directory}; install Debian's 'fortunes' and 'fortunes-min' packages")
    return names, fortunes


def split(fortunes):
    train = [f for i, f in enumerate(fortunes) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    held = [f for i, f in enumerate(fortunes) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    return (torch.tensor(list(SEPARATOR.join(train) + SEPARATOR), dtype=torch.long),
            torch.tensor(list(SEPARATOR.join(held) + SEPARATOR), dtype=torch.long))


def batch(data, n, T, gen):
    """n random windows of T+1 bytes -> (inputs [n, T], targets [n, T])."""
    starts = torch.randint(0, len(data) - T - 1, (n,), generator=gen)
    rows = torch.stack([data[s:s + T + 1] for s in starts.tolist()])
    return rows[:, :-1], rows[:, 1:]


@torch.no_grad()
def held_out_loss(model, data, T, max_windows=None, batch_size=16):
    """Mean cross-entropy (nats per byte) over consecutive non-overlapping windows of T+1 bytes
    (each scored from a fresh context), the first max_windows of them or all."""
    model.eval()
    n_win = (len(data) - 1) // T
    if max_windows:
        n_win = min(n_win, max_windows)
    total, count = 0.0, 0
    for b0 in range(0, n_win, batch_size):
        rows = torch.stack([data[w * T:w * T + T + 1] for w in range(b0, min(n_win, b0 + batch_size))])
        logits = model(rows[:, :-1])
        total += float(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1), reduction="sum"))
        count += rows[:, 1:].numel()
    model.train()
    return total / count


def lr_at(step, progress, peak, warmup, floor):
    """Linear warm-up over the first steps, then a cosine from peak to floor over progress 0..1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def main():
    ap = argparse.ArgumentParser(description="Train the bundled byte-level Diff Transformer.")
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-time budget for training")
    ap.add_argument("--steps", type=int, help="fixed step count (overrides --minutes)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--name", default="fortunes-diff-3m")
    ap.add_argument("--outdir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "models"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256, help="training window (<= max_seq_len)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op (OpenMP) threads")
    ap.add_argument("--final-windows", type=int, help="held-out windows in the final score "
                    "(default: all of them)")
    ap.add_argument("--write-held-out", metavar="PATH", help="write the held-out text (every "
                    f"{HELD_OUT_EVERY}th fortune, as the model never saw it) to PATH and exit: "
                    "the text `dattn perplexity` scores")
    a = ap.parse_args()
    if a.write_held_out:
        _, held = split(read_fortunes(FORTUNE_DIR)[1])
        with open(a.write_held_out, "wb") as f:
            f.write(bytes(held.tolist()))
        print(f"train_model: wrote {len(held)} held-out bytes to {a.write_held_out}")
        return 0

    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)

    cfg = dtmodel.Config(dim=256, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=256, ffn_dim=704,
                         norm_eps=1e-5, rope_theta=10000.0, max_seq_len=256, tie_embeddings=True,
                         tokenizer="bytes")
    if a.seq > cfg.max_seq_len:
        ap.error(f"--seq {a.seq} is longer than max_seq_len {cfg.max_seq_len}")
    names, fortunes = read_fortunes(FORTUNE_DIR)
    train, held = split(fortunes)

    os.makedirs(a.outdir, exist_ok=True)
    log_path = os.path.join(a.outdir, a.name + ".log")
    model_path = os.path.join(a.outdir, a.name + ".safetensors")
    log_file = open(log_path, "w")

    def log(line):
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    model = dtmodel.DiffTransformer(cfg)
    model.init_weights(gen)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)

    log(f"# train_model.py: byte-level Diff Transformer on Debian fortunes ({FORTUNE_DIR}, "
        f"{len(names)} files: {' '.join(names)})")
    log(f"# {cfg}")
    log(f"# parameters {n_params}; fortunes {len(fortunes)}: train {len(train)} bytes, held-out "
        f"{len(held)} bytes (every {HELD_OUT_EVERY}th fortune)")
    log(f"# seed {a.seed}, batch {a.batch} x seq {a.seq}, AdamW lr {a.lr} betas (0.9, 0.95) "
        f"wd 0.1 on matrices, clip 1.0, warmup + cosine to lr/10, torch threads {a.threads}, "
        f"OpenBLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')}, torch "
        f"{torch.__version__}")
    log("# columns: step train_loss(nats/byte) lr elapsed_s | eval: held_out_loss held_out_bpb")

    warmup = 100
    budget_s = a.minutes * 60.0
    t0 = time.time()
    step, loss_avg = 0, None
    eval_windows = 16
    if a.steps:
        log(f"# schedule: {a.steps} steps, cosine over steps (deterministic)")
    else:
        log(f"# schedule: {a.minutes} min, cosine over wall time after {warmup} warm-up steps")
    while True:
        if a.steps:
            if step >= a.steps:
                break
            progress = (step - warmup) / max(1, a.steps - warmup)
        else:
            elapsed = time.time() - t0
            if elapsed >= budget_s and step > warmup:
                break
            if step == warmup:
                t_warm = elapsed
            progress = 0.0 if step < warmup else (elapsed - t_warm) / max(1e-9, budget_s - t_warm)
        lr = lr_at(step, progress, a.lr, warmup, a.lr / 10)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch(train, a.batch, a.seq, gen)
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lv = float(loss)
        loss_avg = lv if loss_avg is None else 0.95 * loss_avg + 0.05 * lv
        step += 1
        if step % 10 == 0 or step == 1:
            log(f"{step} {lv:.4f} {lr:.3e} {time.time() - t0:.0f}")
        if step % a.eval_every == 0:
            hl = held_out_loss(model, held, cfg.max_seq_len, eval_windows)
            log(f"eval {step} held_out_loss {hl:.4f} held_out_bpb {hl / math.log(2):.4f} "
                f"(first {eval_windows} windows of {cfg.max_seq_len}) train_loss_avg {loss_avg:.4f}")

    train_s = time.time() - t0
    log(f"# trained {step} steps in {train_s:.0f} s ({step * a.batch * a.seq} tokens)")
    dtmodel.export(model, model_path, "F16")
    size = os.path.getsize(model_path)
    log(f"# exported {model_path}: {size} bytes, F16")
    if size > 16 * 1024 * 1024:
        raise SystemExit(f"train_model: {model_path} is {size} bytes, over the 16 MB limit")

    shipped = dtmodel.load(model_path)                 # the F16 weights as the runtime sees them
    hl32 = held_out_loss(model, held, cfg.max_seq_len, a.final_windows)
    hl16 = held_out_loss(shipped, held, cfg.max_seq_len, a.final_windows)
    n_win = min((len(held) - 1) // cfg.max_seq_len, a.final_windows or 10 ** 9)
    log(f"final held-out ({n_win} windows of {cfg.max_seq_len}): "
        f"f32 loss {hl32:.4f} bpb {hl32 / math.log(2):.4f}; exported F16 loss {hl16:.4f} "
        f"bpb {hl16 / math.log(2):.4f}")
    for prompt in ("The ", "Q: What"):
        text = dtmodel.decode(dtmodel.generate(shipped, dtmodel.encode(prompt), 200))
        log(f"# sample (greedy, F16 weights) from {prompt!r}:")
        for line in (prompt + text).split("\n"):
            log("#   " + line)
    log_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
