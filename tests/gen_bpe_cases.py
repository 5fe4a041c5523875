#!/usr/bin/env python3
"""Small BPE tokenizers and reference encoders for tests/test_tokenizer.py.

It trains its own vocabularies (standard library + python3-regex), writes Hugging Face
tokenizer.json files of several kinds (GPT-2 ByteLevel, with and without add_prefix_space; Llama-3
Split + TemplateProcessing with special tokens, and Qwen2's one-digit variant of the pattern;
GPT-NeoX-style with NFC and a suffix template; SentencePiece-style with byte fallback as Llama-2
writes it, with a Metaspace pre-tokenizer, and with a fused <unk>), and encodes text the way
Hugging Face tokenizers does, written from its documented semantics (AddedVocabulary split
leftmost-longest before and after normalization, the pre-tokenizer regex, the GPT-2 byte map,
lowest-rank merge first), sharing nothing with src/.

usage: gen_bpe_cases.py OUTDIR            write the cases
       gen_bpe_cases.py --big OUT.json N  a synthetic tokenizer.json of about N tokens
"""
import collections
import json
import os
import random
import sys
import unicodedata

import regex

GPT2_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")


def bytes_to_unicode():
    """GPT-2's map: printable Latin-1 bytes stand for themselves, the rest take U+0100..."""
    bs = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + \
        list(range(ord('®'), ord('ÿ') + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_MAP = bytes_to_unicode()
CHAR_BYTE = {c: b for b, c in BYTE_MAP.items()}


def level(s):
    return ''.join(BYTE_MAP[b] for b in s.encode('utf-8'))


# ---- texts ------------------------------------------------------------------------------------

TEXTS = [
    "Hello, world! This is a test.",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure you're right, he'll come; it's late. WE'RE HERE, THEY'VE GONE, I'D GO.",
    "don't 'tis 'S 'ſ 'ſtuff o'clock rock'n'roll ''s",
    "Grüße aus München: Ärger über Öl, Straße.",
    "café naïve résumé coöperate",
    "cafe\u0301 nai\u0308ve re\u0301sume\u0301",         # decomposed: NFC composes them
    "Ω Å K ﬁ ①",                                          # singletons and compatibility ones
    "a\u0301\u0328 q\u0307\u0323 \u1e0b\u0323 e\u0302\u0323\u0301 \u0301x \u0f73 \u0344",  # reordering
    "Привет, мир! Как дела?",
    "Καλημέρα κόσμε",
    "你好，世界！今天天气很好。",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 텍스트 \u1112\u1161\u11ab\u1100\u1173\u11af",  # composed and conjoining jamo
    "مرحبا بالعالم ١٢٣٤",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇩🇪🇫🇷 ❤️",
    "   leading spaces and trailing   ",
    "a  b   c    d\t\te\n\nf\r\ng \n \n  h",
    "\n\n\n",
    " ",
    "",
    "tabs\tand\u00a0nbsp\u3000ideographic\u2003em space",
    "sep\x1cx\x85y\u200bz\u2028w \ufeffv\u000b\u000cu",    # White_Space or not
    "numbers 1 12 123 1234 12345 1234567890 3.14159 1,000,000 -42 ²³ ½",
    "code: def f(x):\n    return x**2  # square\n\nif (a && b) { c++; }\n",
    "    indented\n        more\n",
    "<html><body class=\"x\">&amp;</body></html>",
    "path/to/file.txt C:\\Windows\\System32 https://example.com/a?b=c&d=e",
    "!!!???...,,,;;;:::---___",
    "MiXeD CaSe WoRdS and ALLCAPS",
    "x" * 300,
    "ab " * 50,
]

# Texts with the special tokens of each kind written in them.
SPECIAL_TEXTS = {
    'gpt2': ["<|endoftext|>", "Hello<|endoftext|>world", "a <|endoftext|> b<|endoftext|><|endoftext|>",
             "<|endoftext", "x<|endoftext|>"],
    'gpt2_prefix': ["<|endoftext|>Hello", "Hello <|endoftext|>world", "<|endoftext|><|endoftext|>"],
    'llama3': ["<|begin_of_text|>Hello", "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
               "<|eot_id|><|eot_id|>", "<|begin_of_text|> ", "<tool> call <tool>x", "<|eot_id",
               "text<|end_of_text|>", "hello zzyzx zzyzx!"],
    'qwen2': ["<|begin_of_text|>12345 67", "<|eot_id|>x1y22z333"],
    'neox': ["<|endoftext|>", "def f():\n    pass\n        x", "a    b", "<|padding|>x<|endoftext|>",
             "  <|lstrip|>  y", "<|lstrip|>z"],
}

CORPUS = '\n'.join(TEXTS) + '\n' + '''
Byte pair encoding iteratively merges the most frequent pair of adjacent symbols. The merges
are applied by rank at encoding time. Tokenizers split text into words first, then each word
into subwords. Numbers like 2024, 100, 42 and 7 appear; so do words such as the, and, of, to.
Der schnelle braune Fuchs springt über den faulen Hund. Le renard brun rapide saute.
Быстрая коричневая лиса прыгает через ленивую собаку. 敏捷的棕色狐狸跳过了懒狗。
for i in range(10):\n    print(i)\nwhile True:\n    break\n
''' * 3


# ---- training -----------------------------------------------------------------------------------

def train(pattern, n_merges):
    """(merges as (a, b) level strings): most frequent adjacent pair first, ties by the pair."""
    words = collections.Counter(level(w) for w in regex.findall(pattern, CORPUS))
    splits = {w: list(w) for w in words}
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, f in words.items():
            s = splits[w]
            for i in range(len(s) - 1):
                pairs[(s[i], s[i + 1])] += f
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w in words:
            s = splits[w]
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            splits[w] = out
    return merges


def added_token(id_, content, special=True, normalized=None, lstrip=False, rstrip=False):
    return {"id": id_, "content": content, "single_word": False, "lstrip": lstrip,
            "rstrip": rstrip, "normalized": (not special) if normalized is None else normalized,
            "special": special}


def byte_level(add_prefix_space=False, use_regex=True):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True,
            "use_regex": use_regex}


def template(single, specials):
    items = [{"Sequence": {"id": "A", "type_id": 0}} if s == '$A' else
             {"SpecialToken": {"id": s, "type_id": 0}} for s in single]
    return {"type": "TemplateProcessing", "single": items,
            "pair": items + [{"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {name: {"id": name, "ids": [i], "tokens": [name]}
                               for name, i in specials.items()}}


def build(kind):
    pattern = {'llama3': LLAMA3_PATTERN, 'qwen2': QWEN2_PATTERN}.get(kind, GPT2_PATTERN)
    merges = train(pattern, 400 if kind != 'neox' else 300)
    if kind == 'qwen2':
        # Digit merges that one-digit words never use: a scanner taking three digits would.
        merges += [('1', '2'), ('2', '2'), ('3', '3')]
    vocab = {}
    first = 2 if kind == 'neox' else 0         # NeoX puts its two specials first
    for b in range(256):
        vocab[BYTE_MAP[b]] = first + len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = first + len(vocab)
    if kind in ('llama3', 'qwen2'):
        # A word in the vocab that no merge makes: ignore_merges gives it as one token.
        vocab[level(' zzyzx')] = first + len(vocab)
    n = first + len(vocab)
    tj = {"version": "1.0", "truncation": None, "padding": None, "normalizer": None,
          "decoder": byte_level(), "post_processor": byte_level()}
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
             "vocab": vocab, "merges": [a + ' ' + b for a, b in merges]}
    if kind in ('gpt2', 'gpt2_prefix'):
        vocab["<|endoftext|>"] = n            # GPT-2 has it in the vocab and as an added token
        tj["added_tokens"] = [added_token(n, "<|endoftext|>")]
        tj["pre_tokenizer"] = byte_level(add_prefix_space=kind == 'gpt2_prefix')
    elif kind in ('llama3', 'qwen2'):
        names = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                 "<|end_header_id|>", "<|eot_id|>"]
        tj["added_tokens"] = [added_token(n + i, s) for i, s in enumerate(names)] + \
            [added_token(n + len(names), "<tool>", special=False)]
        model["ignore_merges"] = True
        model["merges"] = [[a, b] for a, b in merges]
        tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
             "invert": False},
            byte_level(use_regex=False)]}
        tj["post_processor"] = {"type": "Sequence", "processors": [
            byte_level(), template(["<|begin_of_text|>", "$A"], {"<|begin_of_text|>": n})]}
    else:
        tj["added_tokens"] = [added_token(0, "<|endoftext|>"), added_token(1, "<|padding|>"),
                              added_token(n, "    ", special=False),
                              added_token(n + 1, "        ", special=False),
                              added_token(n + 2, "<|lstrip|>", lstrip=True, rstrip=True)]
        tj["normalizer"] = {"type": "NFC"}
        tj["pre_tokenizer"] = byte_level()
        tj["post_processor"] = template(["$A", "<|endoftext|>"], {"<|endoftext|>": 0})
    tj["model"] = model
    return tj


# ---- SentencePiece-style BPE (Llama-2, Gemma, Mistral) ----------------------------------------

META = '\u2581'          # what a space becomes in SentencePiece vocabularies
# Characters left out of the SentencePiece vocabularies so that byte fallback (or unk) runs.
SP_RARE = set('ﬁ①½²³Ω\u3000\u2003\u0f73')


def train_sp(n_merges):
    """Merges over the characters of U+2581-prefixed words: most frequent pair first."""
    words = collections.Counter(META + w for w in CORPUS.replace('\n', ' ').split(' ') if w)
    splits = {w: list(w) for w in words}
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, f in words.items():
            sp = splits[w]
            for i in range(len(sp) - 1):
                pairs[(sp[i], sp[i + 1])] += f
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w in words:
            sp, i, out = splits[w], 0, []
            while i < len(sp):
                if i + 1 < len(sp) and (sp[i], sp[i + 1]) == best:
                    out.append(sp[i] + sp[i + 1])
                    i += 2
                else:
                    out.append(sp[i])
                    i += 1
            splits[w] = out
    return merges


def build_sp(kind):
    """'sp_llama2': Prepend + Replace normalizer, no pre-tokenizer, byte fallback, the Llama-2
    decoder chain; 'sp_meta': a Metaspace pre-tokenizer and decoder (prepend_scheme first, split);
    'sp_unk': no byte fallback, unknown characters as one fused <unk>."""
    merges = train_sp(300)
    vocab = {'<unk>': 0, '<s>': 1, '</s>': 2}
    if kind != 'sp_unk':
        for b in range(256):
            vocab['<0x%02X>' % b] = len(vocab)
    for ch in sorted(set(CORPUS.replace('\n', ' ').replace(' ', META)) - SP_RARE):
        vocab.setdefault(ch, len(vocab))
    vocab.setdefault(META, len(vocab))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tj = {"version": "1.0", "truncation": None, "padding": None,
          "added_tokens": [added_token(0, '<unk>'), added_token(1, '<s>'), added_token(2, '</s>')],
          "post_processor": template(['<s>', '$A'], {'<s>': 1}),
          "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                    "continuing_subword_prefix": None, "end_of_word_suffix": None,
                    "fuse_unk": True, "byte_fallback": kind != 'sp_unk', "vocab": vocab,
                    "merges": [a + ' ' + b for a, b in merges]}}
    if kind == 'sp_meta':
        meta = {"type": "Metaspace", "replacement": META, "prepend_scheme": "first", "split": True}
        tj["normalizer"], tj["pre_tokenizer"], tj["decoder"] = None, meta, dict(meta)
    else:
        tj["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": META},
            {"type": "Replace", "pattern": {"String": " "}, "content": META}]}
        tj["pre_tokenizer"] = None
        tj["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": META}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return tj


class ReferenceSP:
    """Hugging Face's SentencePiece-style BPE from its documented semantics: added tokens split
    first, each other piece normalized (Prepend when not empty, Replace) or, with Metaspace,
    spaces replaced and the prepend scheme applied (first: a piece at the start of the text),
    characters to tokens (bytes as <0xXX> with byte_fallback, else <unk>, fused), merges by
    rank; decoding through the decoder's steps."""

    def __init__(self, tj):
        m = tj['model']
        self.vocab = m['vocab']
        self.by_id = {i: t for t, i in self.vocab.items()}
        self.ranks = {tuple(mg.split(' ')): i for i, mg in enumerate(m['merges'])}
        self.byte_fallback, self.unk = m['byte_fallback'], self.vocab[m['unk_token']]
        self.added = tj['added_tokens']
        self.meta = tj['pre_tokenizer']
        self.norm = tj['normalizer']

    def chars(self, word):
        out, last_unk = [], False
        for ch in word:
            if ch in self.vocab:
                out.append(ch)
                last_unk = False
            elif self.byte_fallback:
                out.extend('<0x%02X>' % b for b in ch.encode('utf-8'))
                last_unk = False
            else:
                if not last_unk:
                    out.append('<unk>')
                last_unk = True
        return out

    def merge(self, syms):
        while len(syms) > 1:
            best, at = None, -1
            for i in range(len(syms) - 1):
                r = self.ranks.get((syms[i], syms[i + 1]))
                if r is not None and (best is None or r < best):
                    best, at = r, i
            if best is None:
                break
            syms[at:at + 2] = [syms[at] + syms[at + 1]]
        return [self.vocab[s] for s in syms]

    def encode(self, text, add_special):
        ids, offset = [], 0
        for piece, tid in split_added(text, self.added):
            at_start, offset = offset == 0, offset + len(piece)
            if tid is not None:
                ids.append(tid)
                continue
            if self.meta:
                s = piece.replace(' ', META)
                if self.meta['prepend_scheme'] == 'first' and at_start and not s.startswith(META):
                    s = META + s
                words, cur = [], ''
                for ch in s:
                    if ch == META and cur:
                        words.append(cur)
                        cur = ''
                    cur += ch
                words.append(cur)
            else:
                words = [(META + piece if piece else piece).replace(' ', META)]
            for w in words:
                ids.extend(self.merge(self.chars(w)))
        return ([1] + ids) if add_special else ids

    def decode(self, ids):
        toks = [self.by_id[i] for i in ids]
        if self.meta:
            return ''.join(t.replace(META, '' if k == 0 else ' ') for k, t in enumerate(toks)) \
                .encode('utf-8')
        out = b''
        for t in toks:
            t = t.replace(META, ' ')
            out += bytes([int(t[3:5], 16)]) if len(t) == 6 and t.startswith('<0x') and \
                t.endswith('>') else t.encode('utf-8')
        return out[1:] if out.startswith(b' ') else out


SP_KINDS = ['sp_llama2', 'sp_meta', 'sp_unk']
SP_TEXTS = ["<s>hello", "a <s> b", "<s> <s>", "</s>x", "  two  spaces ", "ﬁ①½ rare chars",
            "mixed ½ and ² and ³", "\u3000ideographic\u3000", "<unk> literal", "▁already"]


# ---- the reference encoder --------------------------------------------------------------------

def is_ws(ch):
    return regex.match(r'\s', ch) is not None


def split_added(text, tokens):
    """[(piece, id or None)] by leftmost-longest match, lstrip/rstrip taking white space."""
    out, pos, start = [], 0, 0
    while pos < len(text):
        best = None
        for t in tokens:
            if text.startswith(t['content'], pos) and (best is None or
                                                       len(t['content']) > len(best['content'])):
                best = t
        if best is None:
            pos += 1
            continue
        s, e = pos, pos + len(best['content'])
        if best['lstrip']:
            while s > start and is_ws(text[s - 1]):
                s -= 1
        if best['rstrip']:
            while e < len(text) and is_ws(text[e]):
                e += 1
        if s > start:
            out.append((text[start:s], None))
        out.append((text[s:e], best['id']))
        start = pos = e
    if start < len(text):
        out.append((text[start:], None))
    return out


def bpe_word(word, ranks, vocab, ignore_merges):
    if ignore_merges and word in vocab:
        return [vocab[word]]
    syms = list(word)
    while len(syms) > 1:
        best, at = None, -1
        for i in range(len(syms) - 1):
            r = ranks.get((syms[i], syms[i + 1]))
            if r is not None and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        syms[at:at + 2] = [syms[at] + syms[at + 1]]
    return [vocab[s] for s in syms]


class Reference:
    def __init__(self, tj):
        self.tj = tj
        m = tj['model']
        self.vocab = m['vocab']
        self.ranks = {}
        for i, mg in enumerate(m['merges']):
            a, b = mg.split(' ') if isinstance(mg, str) else mg
            self.ranks[(a, b)] = i
        self.ignore = m.get('ignore_merges', False)
        added = tj.get('added_tokens') or []
        self.raw_tokens = [t for t in added if not t['normalized']]
        self.norm_tokens = [t for t in added if t['normalized']]
        self.nfc = tj['normalizer'] is not None
        pt = tj['pre_tokenizer']
        if pt['type'] == 'ByteLevel':
            self.pattern = GPT2_PATTERN if pt['use_regex'] else None
            self.prefix_space = pt['add_prefix_space']
        else:
            self.pattern = pt['pretokenizers'][0]['pattern']['Regex']
            self.prefix_space = False
        self.prefix, self.suffix = [], []
        pp = tj['post_processor']
        procs = pp['processors'] if pp and pp['type'] == 'Sequence' else [pp] if pp else []
        for p in procs:
            if p['type'] == 'TemplateProcessing':
                seen = False
                for item in p['single']:
                    if 'Sequence' in item:
                        seen = True
                    else:
                        ids = p['special_tokens'][item['SpecialToken']['id']]['ids']
                        (self.suffix if seen else self.prefix).extend(ids)

    def encode(self, text, add_special):
        ids = []
        for piece, tid in split_added(text, self.raw_tokens):
            if tid is not None:
                ids.append(tid)
                continue
            if self.nfc:
                piece = unicodedata.normalize('NFC', piece)
            for sub, tid2 in split_added(piece, self.norm_tokens):
                if tid2 is not None:
                    ids.append(tid2)
                    continue
                if self.prefix_space and not sub.startswith(' '):
                    sub = ' ' + sub
                words = [sub]
                if self.pattern:
                    words = regex.findall(self.pattern, sub)
                    assert ''.join(words) == sub
                for w in words:
                    ids.extend(bpe_word(level(w), self.ranks, self.vocab, self.ignore))
        return (self.prefix + ids + self.suffix) if add_special else ids

    def decode(self, ids):
        by_id = {i: s for s, i in self.vocab.items()}
        added = {t['id']: t['content'] for t in self.tj.get('added_tokens') or []}
        out = b''
        for i in ids:
            if i in added:
                out += added[i].encode('utf-8')
            else:
                out += bytes(CHAR_BYTE[c] for c in by_id[i])
        return out


KINDS = ['gpt2', 'gpt2_prefix', 'llama3', 'qwen2', 'neox']


def write_cases(outdir):
    os.makedirs(outdir, exist_ok=True)
    for kind in KINDS + SP_KINDS:
        with open(os.path.join(outdir, kind + '.json'), 'w', encoding='utf-8') as f:
            json.dump(build_sp(kind) if kind in SP_KINDS else build(kind), f, ensure_ascii=False)


def write_big(path, n_tokens, seed=1):
    """A synthetic tokenizer.json of about n_tokens tokens, merges valid by construction."""
    rng = random.Random(seed)
    toks = [BYTE_MAP[b] for b in range(256)]
    vocab = {t: i for i, t in enumerate(toks)}
    merges = []
    while len(toks) < n_tokens:
        a, b = rng.choice(toks), rng.choice(toks[:4096])
        if len(a) + len(b) > 16 or a + b in vocab:
            continue
        vocab[a + b] = len(toks)
        toks.append(a + b)
        merges.append(a + ' ' + b)
    tj = build('gpt2')
    tj['model']['vocab'] = vocab
    tj['model']['merges'] = merges
    tj['added_tokens'] = [added_token(len(toks), "<|endoftext|>")]
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(tj, f, ensure_ascii=False)


if __name__ == '__main__':
    if len(sys.argv) == 4 and sys.argv[1] == '--big':
        write_big(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 2:
        write_cases(sys.argv[1])
    else:
        sys.exit(__doc__)
