#!/usr/bin/env python3
"""dattn's tokenizer against Hugging Face's own on real vocabularies (issue 11): for every
tokenizer.json in the cache folder that tests/fetch_hf_tokenizers.sh fills (GPT-2, Llama-3,
Llama-2, Gemma, Qwen2.5; any other folder holding a tokenizer.json is compared too, e.g. a
GPT-NeoX-20B one copied in by hand), the ids of a corpus of multilingual text, emoji, whitespace
runs, numbers, code and special tokens written in the text, plus seeded random strings, without
and with special tokens, and the decoded text of Hugging Face's ids. The reference is the
tokenizers library itself (Rust, through its Node binding); nothing expected is computed by dattn.
Skips (77) when the cache folder has no binding or no vocabulary, or there is no node.

usage: test_tokenizer_hf.py TOKENIZER_BATCH    (tests/tokenizer_batch.c)
env:   DATTN_HF_TOKENIZERS (the cache folder), DATTN_TEST_SEED (replays the random strings)
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))

FIXED = [
    "Hello world", " Hello  world  ", "The quick brown fox jumps over the lazy dog.",
    "I'm can't won't you'll they've she'd I'M YOU'LL Ｉ'ｍ", "  leading and trailing  ",
    "\n\n\t\ttabs\nand\r\nCRLF\r\n", "naïve café résumé coöperate", "e\u0301 vs é (NFC)",
    "Ångström Å Å", "ﬁ ligature ①② ㎏", "Привет, мир! Как дела?", "你好，世界。今天天气很好。",
    "こんにちは世界、カタカナ", "안녕하세요 세계", "مرحبا بالعالم", "שלום עולם", "नमस्ते दुनिया",
    "สวัสดีชาวโลก", "Γειά σου Κόσμε", "emoji 😀😃😄 👩‍👩‍👧‍👦 🇫🇷🇩🇪 ❤️ 👍🏽",
    "numbers 1 12 123 1234 12345 3.14159 1,000,000 2024-12-03 ٣٤٥ ４５６",
    "code: def f(x):\n    return x**2 + 1  # comment\n",
    "for (int i = 0; i < n; i++) { a[i] += b[i]; }\n\n\n    }\n",
    "<|endoftext|>special<|endoftext|> tokens", "<s> hello </s> <unk> <pad>",
    "<|begin_of_text|>Hi<|end_of_text|><|eot_id|>", "<start_of_turn>user\nhi<end_of_turn>",
    "<|im_start|>user\nhi<|im_end|>", "     ", " ", "a", "\u00a0nbsp\u00a0", "zero\u200bwidth",
    "\ufeffbom", "mixed中文English123数字", "URL https://example.com/path?q=1&r=2#x",
    "email someone@example.org", "`~!@#$%^&*()_+-=[]{}|;':\",./<>?", "ALLCAPS lowercase MiXeD",
    "   \n   \n", "a\u0300\u0301\u0302", "▁already▁meta▁spaces ▁", "<0x41> <0xFF> bytes",
    "tab\tsep\tvalues\t\t", "trailing spaces   ", "\u3000ideographic\u3000space",
]

POOLS = ["abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " \t\n\r ",
         ".,;:!?'\"()[]{}<>-_=+*/\\|@#$%^&~`", "éèêëàâäôöûüçñßÅ", "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
         "的一是不了人我在有他这为之大来以个中上们", "😀😃😄😁😆😅🤣😂🙂🙃👍🏽❤️", "\u0300\u0301\u0302\u0303\u0308",
         "ﬁﬂ①②ＡＢＣ", "ぁあぃいぅうぇえぉおかがきぎく", "ابتثجحخدذرزسشصضطظعغفقكلمنهوي", "▁", "\u200d"]


def random_texts(seed, n):
    r = random.Random(seed)
    return ["".join(r.choice(r.choice(POOLS)) for _ in range(r.randint(1, 40))) for _ in range(n)]


def cache_dir():
    return os.environ.get("DATTN_HF_TOKENIZERS") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "dattn-tests", "hf-tokenizers")


def run(cmd, data):
    p = subprocess.run(cmd, input=data, capture_output=True, timeout=900)
    if p.returncode:
        raise RuntimeError(f"{cmd[0]} failed: {p.stderr.decode(errors='replace')[:500]}")
    return p.stdout


def hf(binding, tj, queries):
    out = run(["node", os.path.join(HERE, "hf_tokenizers.js"), binding, tj],
              ("\n".join(json.dumps(q) for q in queries) + "\n").encode())
    return [json.loads(line) for line in out.decode().splitlines()]


def dattn_encode(batch, tj, texts):
    lines = run([batch, tj, "encode"], b"\0".join(t.encode() for t in texts)).decode().split("\n")
    return [[int(x) for x in lines[i].split()] for i in range(2 * len(texts))]


def dattn_decode(batch, tj, id_lists):
    out = run([batch, tj, "decode"], "".join(",".join(map(str, ids)) + "\n"
                                            for ids in id_lists).encode())
    texts, at = [], 0
    for _ in id_lists:
        nl = out.index(b"\n", at)
        n = int(out[at:nl])
        texts.append(out[nl + 1:nl + 1 + n])
        at = nl + 1 + n
    return texts


def main():
    batch = sys.argv[1]
    root = cache_dir()
    binding = os.path.join(root, "node_modules", "@anush008", "tokenizers")
    vocabs = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "tokenizer.json"))) \
        if os.path.isdir(root) else []
    if not shutil.which("node") or not os.path.isdir(binding) or not vocabs:
        print(f"skipped: no Hugging Face tokenizers in {root} (run tests/fetch_hf_tokenizers.sh) "
              "or no node")
        return 77
    seed = int(os.environ.get("DATTN_TEST_SEED", int(time.time()) % 100000))
    print(f"seed {seed} (DATTN_TEST_SEED={seed} replays it); reference: {binding}")
    n_random = int(os.environ.get("DATTN_HF_RANDOM", 300))
    texts = FIXED + random_texts(seed, n_random) + [" ".join(FIXED) * 20]
    paths = {v: os.path.join(root, v, "tokenizer.json") for v in vocabs}
    with tempfile.TemporaryDirectory(prefix="dattn-hf-tok-") as tmp:
        if "llama2" in paths:
            paths.update(metaspace_variants(paths["llama2"], tmp))
        return compare_all(batch, binding, paths, texts)


def metaspace_variants(llama2, tmp):
    """Llama-2's vocabulary with the Metaspace pre-tokenizer and decoder instead of its
    normalizer (what transformers writes for legacy=False and newer Mistral-style files), for
    each prepend_scheme, with and without split."""
    base = json.load(open(llama2, encoding="utf-8"))
    out = {}
    for scheme in ("first", "always", "never"):
        for split in (False, True):
            d = dict(base, normalizer=None)
            meta = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme,
                    "split": split}
            d["pre_tokenizer"], d["decoder"] = meta, dict(meta)
            name = f"llama2-metaspace-{scheme}{'-split' if split else ''}"
            path = os.path.join(tmp, name + ".json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(d, f)
            out[name] = path
    return out


def compare_all(batch, binding, paths, texts):
    failed = 0
    for v, tj in sorted(paths.items()):
        queries = [{"text": t, "special": sp} for t in texts for sp in (False, True)]
        want = [r["ids"] for r in hf(binding, tj, queries)]
        got = dattn_encode(batch, tj, texts)
        bad = [i for i in range(len(queries)) if got[i] != want[i]]
        for i in bad[:5]:
            print(f"  {v}: {queries[i]!r:.80}\n    hf    {want[i][:24]}\n    dattn {got[i][:24]}")
        want_text = [r["text"].encode() for r in hf(binding, tj, [{"decode": ids} for ids in want])]
        got_text = dattn_decode(batch, tj, want)
        bad_dec = [i for i in range(len(want)) if got_text[i] != want_text[i]]
        for i in bad_dec[:5]:
            print(f"  {v}: decode {want[i][:12]}...\n    hf    {want_text[i][:60]!r}\n"
                  f"    dattn {got_text[i][:60]!r}")
        ok = not bad and not bad_dec
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {v}: {len(queries) - len(bad)}/{len(queries)} encodings "
              f"and {len(want) - len(bad_dec)}/{len(want)} decodings equal to Hugging Face's")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
