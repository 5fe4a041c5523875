#!/usr/bin/python3
# The whole Differential-Transformer model of DESIGN §1 in plain PyTorch (Debian's python3-torch),
# plus its safetensors file format (DESIGN §6, written and read by hand: no numpy, no safetensors
# module), a byte tokenizer and greedy generation. The trainer (tools/train_model.py) and the
# parity tests (tests/gen_model_cases.py, tests/test_model_parity.py) import it; it shares nothing
# with src/. Works in float32 (training) and float64 (references).
#
# usage: /usr/bin/python3 tools/dtmodel.py --self-test
#        /usr/bin/python3 tools/dtmodel.py MODEL.safetensors [-p PROMPT] [-n N]   (greedy sample)

import argparse
import json
import math
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

SUBLN_EPS = 1e-5          # the sub-layer norm of every diff head keeps 1e-5 (DESIGN §1 step 6)

if sys.byteorder != "little":
    raise SystemExit("dtmodel: the safetensors code here assumes a little-endian host")


# ---- configuration -------------------------------------------------------------------------

class Config:
    """Hyper-parameters; exactly the keys of the safetensors __metadata__ (all strings there)."""

    KEYS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "ffn_dim", "norm_eps",
            "rope_theta", "max_seq_len", "tie_embeddings", "tokenizer")

    def __init__(self, dim=256, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=256, ffn_dim=704,
                 norm_eps=1e-5, rope_theta=10000.0, max_seq_len=256, tie_embeddings=True,
                 tokenizer="bytes"):
        self.dim, self.n_layers, self.n_heads, self.n_kv_heads = dim, n_layers, n_heads, n_kv_heads
        self.vocab_size, self.ffn_dim, self.norm_eps = vocab_size, ffn_dim, norm_eps
        self.rope_theta, self.max_seq_len = rope_theta, max_seq_len
        self.tie_embeddings, self.tokenizer = tie_embeddings, tokenizer
        if n_heads % n_kv_heads or dim % (2 * n_heads) or (dim // n_heads // 2) % 2:
            raise ValueError(f"dtmodel: dim {dim}, n_heads {n_heads}, n_kv_heads {n_kv_heads}: "
                             "need n_heads % n_kv_heads == 0 and an even d = dim / n_heads / 2")

    @property
    def head_dim(self):          # d: the dim of one softmax half
        return self.dim // self.n_heads // 2

    @property
    def group(self):             # r = H / Hkv
        return self.n_heads // self.n_kv_heads

    def metadata(self):
        def num(v):
            return str(int(v)) if float(v).is_integer() and abs(v) >= 1 else repr(float(v))
        m = {k: str(getattr(self, k)) for k in ("dim", "n_layers", "n_heads", "n_kv_heads",
                                                 "vocab_size", "ffn_dim", "max_seq_len")}
        m["norm_eps"] = repr(float(self.norm_eps))
        m["rope_theta"] = num(self.rope_theta)
        m["tie_embeddings"] = "true" if self.tie_embeddings else "false"
        m["tokenizer"] = self.tokenizer
        return m

    @classmethod
    def from_metadata(cls, m):
        missing = [k for k in cls.KEYS if k not in m]
        if missing:
            raise ValueError(f"dtmodel: __metadata__ lacks {', '.join(missing)}")
        if m["tie_embeddings"] not in ("true", "false"):
            raise ValueError(f"dtmodel: tie_embeddings is '{m['tie_embeddings']}', not true/false")
        return cls(dim=int(m["dim"]), n_layers=int(m["n_layers"]), n_heads=int(m["n_heads"]),
                   n_kv_heads=int(m["n_kv_heads"]), vocab_size=int(m["vocab_size"]),
                   ffn_dim=int(m["ffn_dim"]), norm_eps=float(m["norm_eps"]),
                   rope_theta=float(m["rope_theta"]), max_seq_len=int(m["max_seq_len"]),
                   tie_embeddings=m["tie_embeddings"] == "true", tokenizer=m["tokenizer"])

    def __repr__(self):
        return "Config(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.KEYS) + ")"


def lambda_init(layer):
    """λinit of layer l (counted from 0), DESIGN §1 step 5."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer)


# ---- the model -------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) ⊙ weight over the last dim."""

    def __init__(self, n, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, theta):
    """Interleaved (GPT-J) RoPE over the last dim d of x [..., T, heads, d] at positions 0..T-1:
    pair (x[2i], x[2i+1]) turns by p·θ^(-2i/d). Angles in float64, then cast to x's dtype."""
    T, d = x.shape[-3], x.shape[-1]
    i = torch.arange(d // 2, dtype=torch.float64)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * theta ** (-2.0 * i / d)   # [T, d/2]
    c = torch.cos(ang).to(x.dtype)[:, None, :]                                       # [T, 1, d/2]
    s = torch.sin(ang).to(x.dtype)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)


class DiffAttention(nn.Module):
    """Differential attention, DESIGN §1 steps 1–7 (GQA: diff head h uses KV head h // r)."""

    def __init__(self, cfg, layer):
        super().__init__()
        E, d, r = cfg.dim, cfg.head_dim, cfg.group
        self.H, self.Hkv, self.d, self.r, self.theta = cfg.n_heads, cfg.n_kv_heads, d, r, cfg.rope_theta
        self.lambda_init = lambda_init(layer)
        self.q_proj = nn.Linear(E, E, bias=False)
        self.k_proj = nn.Linear(E, E // r, bias=False)
        self.v_proj = nn.Linear(E, E // r, bias=False)
        self.out_proj = nn.Linear(E, E, bias=False)
        self.lambda_q1 = nn.Parameter(torch.zeros(d))
        self.lambda_k1 = nn.Parameter(torch.zeros(d))
        self.lambda_q2 = nn.Parameter(torch.zeros(d))
        self.lambda_k2 = nn.Parameter(torch.zeros(d))
        self.subln = RMSNorm(2 * d, SUBLN_EPS)

    def lam(self):
        return (torch.exp(torch.dot(self.lambda_q1, self.lambda_k1))
                - torch.exp(torch.dot(self.lambda_q2, self.lambda_k2)) + self.lambda_init)

    def forward(self, x):                                                   # x [B, T, E]
        B, T, E = x.shape
        H, Hkv, d, r = self.H, self.Hkv, self.d, self.r
        q = rope(self.q_proj(x).view(B, T, 2 * H, d), self.theta)          # [B, T, 2H, d]
        k = rope(self.k_proj(x).view(B, T, 2 * Hkv, d), self.theta)        # [B, T, 2Hkv, d]
        v = self.v_proj(x).view(B, T, Hkv, 2 * d)                           # [B, T, Hkv, 2d]
        # q index 2h+c pairs with k index 2j+c, j = h // r: repeat each KV head r times
        k = k.view(B, T, Hkv, 2, d).repeat_interleave(r, dim=2).reshape(B, T, 2 * H, d)
        v = v.repeat_interleave(r, dim=2)                                   # [B, T, H, 2d]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)   # heads first
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d)                   # [B, 2H, T, T]
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        a = torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1)
        a = a.view(B, H, 2, T, T)
        o = (a[:, :, 0] - self.lam() * a[:, :, 1]) @ v                      # [B, H, T, 2d]
        o = self.subln(o) * (1.0 - self.lambda_init)
        return self.out_proj(o.transpose(1, 2).reshape(B, T, E))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) ⊙ w3 x)."""

    def __init__(self, cfg):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = DiffAttention(cfg, layer)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x):
        x = x + self.attn(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class DiffTransformer(nn.Module):
    """Parameter names are the safetensors tensor names (state_dict() == the file's tensors)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg, l) for l in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = None if cfg.tie_embeddings else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    def init_weights(self, gen):
        """GPT-2-like init from a torch.Generator: N(0, 0.02), residual outputs / sqrt(2L);
        λ vectors N(0, 0.1) as in the paper; norms 1."""
        L = self.cfg.n_layers
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("norm.weight") or name.endswith("subln.weight"):
                    p.fill_(1.0)
                elif ".lambda_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
                else:
                    std = 0.02
                    if name.endswith("out_proj.weight") or name.endswith("w2.weight"):
                        std /= math.sqrt(2 * L)
                    p.copy_(torch.randn(p.shape, generator=gen) * std)

    def forward(self, tokens):                          # tokens [B, T] or [T] (int64) -> logits
        squeeze = tokens.dim() == 1
        if squeeze:
            tokens = tokens[None]
        x = self.tok_embeddings(tokens)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        w = self.tok_embeddings.weight if self.output is None else self.output.weight
        logits = x @ w.t()                                                   # [B, T, vocab]
        return logits[0] if squeeze else logits


# ---- safetensors, by hand --------------------------------------------------------------------

ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
             "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32}
ST_NAMES = {v: k for k, v in ST_DTYPES.items()}


def tensor_bytes(t):
    """Raw little-endian bytes of t: reinterpreted as uint8, through numpy when torch has it
    (fast), else through a list."""
    t = t.detach().contiguous().cpu()
    if not t.numel():
        return b""
    raw = t.view(-1).view(torch.uint8)
    try:
        return raw.numpy().tobytes()
    except (RuntimeError, TypeError):
        return bytes(raw.tolist())


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, torch tensor) in file order. Data blocks start 8-byte aligned."""
    header = {}
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    blobs, off = [], 0
    for name, t in tensors:
        if t.dtype not in ST_NAMES:
            raise ValueError(f"write_safetensors: '{name}' has dtype {t.dtype}")
        b = tensor_bytes(t)
        header[name] = {"dtype": ST_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        pad = (-len(b)) % 8
        blobs.append(b + b"\0" * pad)
        off += len(b) + pad
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((-(8 + len(h))) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """-> (dict name -> tensor in the stored dtype, metadata dict). Checks offsets and sizes."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} runs past the end ({len(data)} bytes)")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        dt = ST_DTYPES.get(info["dtype"])
        if dt is None:
            raise ValueError(f"{path}: '{name}' has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = list(info["shape"])
        numel = math.prod(shape)
        esize = torch.empty((), dtype=dt).element_size()
        if not 0 <= begin <= end <= len(body) or end - begin != numel * esize:
            raise ValueError(f"{path}: '{name}' data_offsets {begin}..{end} do not fit shape "
                             f"{shape} {info['dtype']} in {len(body)} bytes")
        raw = bytearray(body[begin:end])
        t = torch.frombuffer(raw, dtype=dt) if numel else torch.empty(0, dtype=dt)
        out[name] = t.reshape(shape).clone()
    return out, meta


EXPORT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def export(model, path, dtype="F16"):
    """Writes model as DESIGN §6 safetensors with weights in dtype (F32, F16 or BF16)."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"export: dtype {dtype} is not one of {', '.join(EXPORT_DTYPES)}")
    tensors = [(name, p.detach().to(EXPORT_DTYPES[dtype])) for name, p in model.state_dict().items()]
    write_safetensors(path, tensors, model.cfg.metadata())


def load(path, dtype=torch.float32):
    """Reads a model file written by export (or any file in that format); F16/BF16 weights are
    converted to dtype exactly (both widen losslessly into float32 and float64)."""
    tensors, meta = read_safetensors(path)
    cfg = Config.from_metadata(meta)
    model = DiffTransformer(cfg).to(dtype)
    want = model.state_dict()
    missing = [n for n in want if n not in tensors]
    extra = [n for n in tensors if n not in want]
    if missing or extra:
        raise ValueError(f"{path}: missing tensors {missing}, unexpected tensors {extra}")
    for n, t in want.items():
        if list(tensors[n].shape) != list(t.shape):
            raise ValueError(f"{path}: '{n}' is {list(tensors[n].shape)}, expected {list(t.shape)}")
    model.load_state_dict({n: tensors[n].to(dtype) for n in want})
    model.eval()
    return model


# ---- tokenizer and generation ------------------------------------------------------------------

def encode(text):
    """Byte tokenizer: ids 0..255 are the UTF-8 bytes of text."""
    return list(text.encode("utf-8"))


def decode(ids):
    return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


@torch.no_grad()
def generate(model, prompt_ids, n):
    """Greedy: n new ids after prompt_ids, recomputing the whole (last max_seq_len) sequence each
    step. Ties go to the lowest id (torch.argmax)."""
    ids = list(prompt_ids)
    for _ in range(n):
        window = ids[-model.cfg.max_seq_len:]
        logits = model(torch.tensor(window, dtype=torch.long))
        ids.append(int(torch.argmax(logits[-1])))
    return ids[len(prompt_ids):]


# ---- self-test: the vectorized model against a naive loop version ------------------------------

def naive_forward(model, tokens, pair=None):
    """The same model with per-token, per-head python loops and scalar RoPE (float64).
    pair(h) -> the KV head of diff head h; DESIGN §1 says h // r (the default)."""
    cfg = model.cfg
    sd = {n: t.to(torch.float64) for n, t in model.state_dict().items()}
    T, E, H, d, r = len(tokens), cfg.dim, cfg.n_heads, cfg.head_dim, cfg.group

    def rms(x, w, eps):
        return x / math.sqrt(float((x * x).sum()) / x.numel() + eps) * w

    def rot(vec, p):
        out = vec.clone()
        for i in range(d // 2):
            a = p * math.pow(cfg.rope_theta, -2.0 * i / d)
            out[2 * i] = vec[2 * i] * math.cos(a) - vec[2 * i + 1] * math.sin(a)
            out[2 * i + 1] = vec[2 * i] * math.sin(a) + vec[2 * i + 1] * math.cos(a)
        return out

    x = torch.stack([sd["tok_embeddings.weight"][t] for t in tokens])       # [T, E]
    for l in range(cfg.n_layers):
        p = f"layers.{l}."
        li = 0.8 - 0.6 * math.exp(-0.3 * l)
        lam = (math.exp(float(sum(sd[p + "attn.lambda_q1"] * sd[p + "attn.lambda_k1"])))
               - math.exp(float(sum(sd[p + "attn.lambda_q2"] * sd[p + "attn.lambda_k2"]))) + li)
        xn = torch.stack([rms(x[t], sd[p + "attention_norm.weight"], cfg.norm_eps) for t in range(T)])
        q = xn @ sd[p + "attn.q_proj.weight"].T
        k = xn @ sd[p + "attn.k_proj.weight"].T
        v = xn @ sd[p + "attn.v_proj.weight"].T
        o = torch.zeros(T, E, dtype=torch.float64)
        for h in range(H):
            j = pair(h) if pair else h // r
            for t in range(T):
                q1, q2 = rot(q[t, 2 * h * d:(2 * h + 1) * d], t), rot(q[t, (2 * h + 1) * d:(2 * h + 2) * d], t)
                s1, s2 = [], []
                for u in range(t + 1):
                    k1 = rot(k[u, 2 * j * d:(2 * j + 1) * d], u)
                    k2 = rot(k[u, (2 * j + 1) * d:(2 * j + 2) * d], u)
                    s1.append(float(q1 @ k1) / math.sqrt(d))
                    s2.append(float(q2 @ k2) / math.sqrt(d))
                e1 = [math.exp(z - max(s1)) for z in s1]
                e2 = [math.exp(z - max(s2)) for z in s2]
                acc = torch.zeros(2 * d, dtype=torch.float64)
                for u in range(t + 1):
                    acc += (e1[u] / sum(e1) - lam * e2[u] / sum(e2)) * v[u, j * 2 * d:(j + 1) * 2 * d]
                o[t, h * 2 * d:(h + 1) * 2 * d] = rms(acc, sd[p + "attn.subln.weight"], SUBLN_EPS) * (1 - li)
        x = x + o @ sd[p + "attn.out_proj.weight"].T
        for t in range(T):
            xn = rms(x[t], sd[p + "ffn_norm.weight"], cfg.norm_eps)
            a = xn @ sd[p + "feed_forward.w1.weight"].T
            g = a / (1 + torch.exp(-a)) * (xn @ sd[p + "feed_forward.w3.weight"].T)
            x[t] = x[t] + g @ sd[p + "feed_forward.w2.weight"].T
    w = sd["tok_embeddings.weight"] if cfg.tie_embeddings else sd["output.weight"]
    return torch.stack([rms(x[t], sd["norm.weight"], cfg.norm_eps) for t in range(T)]) @ w.T


def randomize(model, gen):
    """O(1) activations for tests: uniform ±1/sqrt(fan_in) matrices (×3 on q and k for sharp
    maps), embeddings N(0,1), norms 1 ± 0.2, λ vectors N(0, 0.3) (never zero)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("subln.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif ".lambda_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
            elif name == "tok_embeddings.weight":
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                scale = 3.0 if ("q_proj" in name or "k_proj" in name) else 1.0
                u = torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1
                p.copy_(u * scale / math.sqrt(p.shape[1]))


def self_test():
    import os
    import tempfile
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    configs = [  # dim, L, H, Hkv, vocab, ffn, tie, theta
        Config(16, 2, 2, 2, 11, 24, norm_eps=1e-6, tie_embeddings=True, tokenizer="bytes"),
        Config(32, 3, 4, 2, 13, 40, rope_theta=500000.0, tie_embeddings=False),
        Config(24, 1, 3, 1, 7, 20, norm_eps=1e-5, tie_embeddings=False),
    ]
    worst, ok = 0.0, True
    for ci, cfg in enumerate(configs):
        seed = 4242 + ci
        gen = torch.Generator().manual_seed(seed)
        model = DiffTransformer(cfg).to(torch.float64)
        randomize(model, gen)
        tokens = torch.randint(0, cfg.vocab_size, (9,), generator=gen).tolist()
        a = model(torch.tensor(tokens))
        b = naive_forward(model, tokens)
        rel = float((a - b).norm() / b.norm())
        worst = max(worst, rel)
        # batched rows must equal single sequences (the trainer relies on it)
        batch = torch.tensor([tokens, tokens[::-1]])
        ab = model(batch)
        rel_b = float((ab[1] - model(batch[1])).norm() / ab[1].norm())
        worst = max(worst, rel_b)
        # export/load round trip per dtype: F32 exact; F16/BF16 equal to rounding the weights
        for dt in ("F32", "F16", "BF16"):
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "m.safetensors")
                export(model, path, dt)
                back = load(path, torch.float64)
                for n, t in model.state_dict().items():
                    want = t.to(EXPORT_DTYPES[dt]).to(torch.float64)
                    if not torch.equal(back.state_dict()[n], want):
                        print(f"self-test: {dt} round trip changed '{n}'")
                        ok = False
                if back.cfg.metadata() != cfg.metadata():
                    print(f"self-test: metadata round trip {back.cfg.metadata()} != {cfg.metadata()}")
                    ok = False
        print(f"self-test config {ci} (seed {seed}) {cfg}: vectorized vs naive {rel:.2e}, "
              f"batched vs single {rel_b:.2e}")
    # sensitivity: the pairing h % Hkv (multihead_diffattn.py's) must not agree with h // r
    cfg = Config(32, 1, 4, 2, 11, 16)
    gen = torch.Generator().manual_seed(99)
    model = DiffTransformer(cfg).to(torch.float64)
    randomize(model, gen)
    tokens = torch.randint(0, 11, (6,), generator=gen).tolist()
    a = model(torch.tensor(tokens))
    b = naive_forward(model, tokens, pair=lambda h: h % cfg.n_kv_heads)
    sens = float((b - a).norm() / a.norm())
    print(f"self-test sensitivity (pairing h % Hkv instead of h // r): {sens:.2e} (must be large)")
    ok = ok and worst < 1e-12 and sens > 1e-3
    print("self-test:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description="Diff Transformer reference model (DESIGN §1).")
    ap.add_argument("model", nargs="?", help="a .safetensors model to sample from")
    ap.add_argument("-p", "--prompt", default="The ")
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        return self_test()
    if not a.model:
        ap.error("MODEL is required (or --self-test)")
    torch.set_num_threads(2)
    model = load(a.model)
    print(model.cfg)
    print(a.prompt + decode(generate(model, encode(a.prompt), a.n)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
