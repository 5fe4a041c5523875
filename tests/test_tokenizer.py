#!/usr/bin/env python3
"""`dattn tokenize` / `detokenize` against tests/gen_bpe_cases.py's reference encoder on its own
trained GPT-2, Llama-3 and NeoX-style tokenizer.json files, the byte tokenizer of a dattn model,
and hostile tokenizer.json files that must each be refused (exit 2) naming the file and field.
Exit 77 (skipped) without python3-regex.

usage: test_tokenizer.py DATTN
"""
import copy
import json
import os
import subprocess
import sys
import tempfile

try:
    import regex  # noqa: F401
except ImportError:
    print('skipped: no python3-regex')
    sys.exit(77)

sys.dont_write_bytecode = True     # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_bpe_cases as g  # noqa: E402

DATTN = sys.argv[1]
failures = []


def run(args, **kw):
    return subprocess.run([DATTN] + args, capture_output=True, **kw)


def tokenize(path, text, raw):
    with tempfile.NamedTemporaryFile('wb', suffix='.txt', delete=False) as f:
        f.write(text if isinstance(text, bytes) else text.encode('utf-8'))
    try:
        r = run(['tokenize', '-m', path, '-f', f.name] + (['--raw'] if raw else []))
    finally:
        os.unlink(f.name)
    if r.returncode:
        raise RuntimeError('tokenize failed: %s' % r.stderr.decode(errors='replace'))
    out = r.stdout.decode()
    assert out.endswith('\n') and out.count('\n') == 1, repr(out)
    return [int(x) for x in out.split()]


def detokenize(path, ids):
    r = run(['detokenize', '-m', path, '--ids', ','.join(map(str, ids))])
    if r.returncode:
        raise RuntimeError('detokenize failed: %s' % r.stderr.decode(errors='replace'))
    return r.stdout


def check(cond, what):
    if not cond:
        failures.append(what)
        print('FAIL:', what)


def parity(tmp):
    n_cases = 0
    for kind in g.KINDS:
        path = os.path.join(tmp, kind + '.json')
        ref = g.Reference(json.load(open(path, encoding='utf-8')))
        for text in g.TEXTS + g.SPECIAL_TEXTS[kind]:
            for raw in (True, False):
                want = ref.encode(text, not raw)
                got = tokenize(path, text, raw)
                check(got == want, '%s %s %r: dattn %s, reference %s' % (
                    kind, 'raw' if raw else 'special', text[:40], got[:20], want[:20]))
                n_cases += 1
            ids = tokenize(path, text, True)
            back = detokenize(path, ids)
            want_bytes = ref.decode(ids)
            check(back == want_bytes, '%s %r: detokenize differs from the reference' % (kind,
                                                                                      text[:40]))
            # NFC changes decomposed text, add_prefix_space adds spaces, lstrip/rstrip tokens
            # take white space; elsewhere the round trip is exact.
            if ref.prefix_space or '<|lstrip|>' in text:
                pass
            elif ref.nfc:
                check(back.decode('utf-8') == g.unicodedata.normalize('NFC', text),
                      '%s %r: round trip gave %r' % (kind, text[:40], back[:60]))
            else:
                check(back == text.encode('utf-8'), '%s %r: round trip gave %r' % (
                    kind, text[:40], back[:60]))
        # Bytes that are not UTF-8 still round-trip (each is a byte-level token).
        junk = b'ok \xff\xfe\x80 \xc3( \xe2\x82 end'
        if not ref.prefix_space:
            check(detokenize(path, tokenize(path, junk, True)) == junk, kind + ': invalid UTF-8')
    # SentencePiece-style files against their own reference.
    for kind in g.SP_KINDS:
        path = os.path.join(tmp, kind + '.json')
        ref = g.ReferenceSP(json.load(open(path, encoding='utf-8')))
        for text in g.TEXTS + g.SP_TEXTS:
            for raw in (True, False):
                want = ref.encode(text, not raw)
                got = tokenize(path, text, raw)
                check(got == want, '%s %s %r: dattn %s, reference %s' % (
                    kind, 'raw' if raw else 'special', text[:40], got[:20], want[:20]))
                n_cases += 1
            ids = tokenize(path, text, True)
            back = detokenize(path, ids)
            check(back == ref.decode(ids), '%s %r: detokenize gave %r, the reference %r' % (
                kind, text[:40], back[:60], ref.decode(ids)[:60]))
            # Byte fallback keeps every character; <unk> and the Metaspace decoder (which drops
            # every U+2581 of the first token) do not always, nor does a piece after a special
            # token (it gets its own U+2581) or a U+2581 written in the text (a space back).
            if kind == 'sp_llama2' and not text.startswith(' ') and text in g.TEXTS:
                check(back == text.encode('utf-8'), '%s %r: round trip gave %r' % (
                    kind, text[:40], back[:60]))
    # A directory holding a tokenizer.json, and its config.json, are the same tokenizer.
    d = os.path.join(tmp, 'dir')
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'tokenizer.json'), 'w', encoding='utf-8') as f:
        f.write(open(os.path.join(tmp, 'llama3.json'), encoding='utf-8').read())
    with open(os.path.join(d, 'config.json'), 'w', encoding='utf-8') as f:
        f.write('{"model_type": "diffllama"}')
    a = tokenize(d, 'Hello world', False)
    b = tokenize(os.path.join(d, 'config.json'), 'Hello world', False)
    c = tokenize(os.path.join(tmp, 'llama3.json'), 'Hello world', False)
    check(a == b == c, 'directory / config.json / file give %s %s %s' % (a, b, c))
    # tokenizer_config.json beside it: add_bos_token / add_eos_token rebuild the template for a
    # Llama-family class (model_max_length as transformers writes it, past int64, is fine); a
    # wrong type is refused naming the file and the field.
    with open(os.path.join(d, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        f.write('{"tokenizer_class": "LlamaTokenizerFast", "add_bos_token": false, '
                '"add_eos_token": true, "eos_token": {"content": "<|end_of_text|>"}, '
                '"model_max_length": 1000000000000000019884624838656}')
    ref = g.Reference(json.load(open(os.path.join(tmp, 'llama3.json'), encoding='utf-8')))
    eos = json.load(open(os.path.join(tmp, 'llama3.json'), encoding='utf-8'))
    eos = [t['id'] for t in eos['added_tokens'] if t['content'] == '<|end_of_text|>'][0]
    got = tokenize(d, 'Hello world', False)
    check(got == ref.encode('Hello world', False) + [eos],
          'tokenizer_config add_bos_token false, add_eos_token true: %s' % got)
    with open(os.path.join(d, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        f.write('{"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": false}')
    check(tokenize(d, 'Hello world', False) == c,
          'tokenizer_config of another class leaves the template')
    with open(os.path.join(d, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        f.write('{"add_bos_token": "yes"}')
    r = run(['tokenize', '-m', d, '-p', 'x'])
    check(r.returncode == 2 and b'tokenizer_config.json' in r.stderr and
          b'add_bos_token' in r.stderr, 'tokenizer_config hostile: %r' % r.stderr)
    # A dattn model's byte tokenizer, read from its header alone.
    model = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools', 'models',
                         'fortunes-diff-3m.safetensors')
    if os.path.exists(model):
        check(tokenize(model, 'hi\xff', True) == [104, 105, 195, 191], 'byte tokenizer ids')
        check(detokenize(model, [104, 105]) == b'hi', 'byte tokenizer bytes')
    return n_cases


def mutations(tmp):
    """Cut and corrupted copies of a good file: each loads or is refused (exit 2), never a crash."""
    text = open(os.path.join(tmp, 'neox.json'), 'rb').read()
    rng = g.random.Random(int(os.environ.get('DATTN_TEST_SEED', '7')))
    path = os.path.join(tmp, 'mutant.json')
    for i in range(60):
        b = bytearray(text)
        if i % 3 == 0:
            b = b[:rng.randrange(len(b))]
        else:
            for _ in range(1 + i % 5):
                b[rng.randrange(len(b))] = rng.choice(b'{}[]",:0123456789 aZ\\\xff')
        with open(path, 'wb') as f:
            f.write(b)
        r = run(['tokenize', '-m', path, '-p', 'Hello wörld 123 <|endoftext|>'])
        check(r.returncode in (0, 2) and (r.returncode == 0 or path.encode() in r.stderr),
              'mutant %d (seed %s): rc %d %r' % (i, os.environ.get('DATTN_TEST_SEED', '7'),
                                                r.returncode, r.stderr[-200:]))
    return 60


def hostile(tmp):
    base = g.build('llama3')
    n = len(base['model']['vocab'])

    def edit(fn):
        t = copy.deepcopy(base)
        fn(t)
        return json.dumps(t, ensure_ascii=False)

    def set_pat(t, p):
        t['pre_tokenizer']['pretokenizers'][0]['pattern']['Regex'] = p

    text = json.dumps(base, ensure_ascii=False)
    cases = [
        ('truncated', text[:len(text) // 2], 'not valid JSON'),
        ('empty', '', 'not valid JSON'),
        ('top-level array', '[]', 'top level'),
        ('vocab wrong type', edit(lambda t: t['model'].__setitem__('vocab', [1, 2])),
         'model.vocab'),
        ('vocab empty', edit(lambda t: t['model'].__setitem__('vocab', {})), 'model.vocab'),
        ('vocab id a string', edit(lambda t: t['model']['vocab'].__setitem__('a', 'x')),
         "model.vocab['a']"),
        ('vocab id huge', edit(lambda t: t['model']['vocab'].__setitem__('a', 10 ** 15)),
         "model.vocab['a']"),
        ('vocab id past int64', edit(lambda t: t['model']['vocab'].__setitem__('a', 10 ** 30)),
         'does not fit in int64'),
        ('vocab id fraction', edit(lambda t: t['model']['vocab'].__setitem__('a', 1.5)),
         "model.vocab['a']"),
        ('vocab id out of range', edit(lambda t: t['model']['vocab'].__setitem__('a', 99999999)),
         "model.vocab['a']"),
        ('duplicate id', edit(lambda t: t['model']['vocab'].__setitem__('b', t['model']['vocab']['a'])),
         'model.vocab'),
        ('merge of unknown parts', edit(lambda t: t['model']['merges'].insert(3, ['zq', 'qz'])),
         'model.merges[3]'),
        ('merge result unknown', edit(lambda t: t['model']['merges'].insert(5, ['Q', 'X'])),
         'model.merges[5]'),
        ('merge not a pair', edit(lambda t: t['model']['merges'].insert(0, ['a'])),
         'model.merges[0]'),
        ('merge string without space', edit(lambda t: t['model']['merges'].insert(2, 'ab')),
         'model.merges[2]'),
        ('merge repeated', edit(lambda t: t['model']['merges'].append(t['model']['merges'][0])),
         'model.merges[%d]' % len(base['model']['merges'])),
        ('merges wrong type', edit(lambda t: t['model'].__setitem__('merges', {})),
         'model.merges'),
        ('added id out of range', edit(lambda t: t['added_tokens'][1].__setitem__('id', 10 ** 8)),
         'added_tokens[1].id'),
        ('added id negative', edit(lambda t: t['added_tokens'][0].__setitem__('id', -1)),
         'added_tokens[0].id'),
        ('added special wrong type', edit(lambda t: t['added_tokens'][2].__setitem__('special', 1)),
         'added_tokens[2].special'),
        ('added content missing', edit(lambda t: t['added_tokens'][3].pop('content')),
         'added_tokens[3]'),
        ('added single_word', edit(lambda t: t['added_tokens'][0].__setitem__('single_word', True)),
         'added_tokens[0].single_word'),
        ('unknown Split pattern', edit(lambda t: set_pat(t, r"\w+|\s+")), 'pattern.Regex'),
        ('Split String pattern', edit(lambda t: t['pre_tokenizer']['pretokenizers'][0].__setitem__(
            'pattern', {'String': ' '})), 'pre_tokenizer.pretokenizers[0].pattern'),
        ('Metaspace without replacement', edit(lambda t: t.__setitem__('pre_tokenizer',
                                                                       {'type': 'Metaspace'})),
         "pre_tokenizer has no 'replacement'"),
        ('Metaspace bad scheme', edit(lambda t: t.__setitem__('pre_tokenizer', {
            'type': 'Metaspace', 'replacement': '\u2581', 'prepend_scheme': 'sometimes'})),
         'pre_tokenizer.prepend_scheme'),
        ('Metaspace two characters', edit(lambda t: t.__setitem__('pre_tokenizer', {
            'type': 'Metaspace', 'replacement': 'ab'})), 'pre_tokenizer.replacement'),
        ('null pre_tokenizer, ByteLevel decoder', edit(lambda t: t.__setitem__('pre_tokenizer',
                                                                               None)),
         'pre_tokenizer'),
        ('NFKC', edit(lambda t: t.__setitem__('normalizer', {'type': 'NFKC'})),
         "normalizer: type 'NFKC'"),
        ('Replace with a Regex', edit(lambda t: t.__setitem__('normalizer', {
            'type': 'Replace', 'pattern': {'Regex': ' +'}, 'content': ' '})), 'normalizer.pattern'),
        ('Prepend not a string', edit(lambda t: t.__setitem__('normalizer', {
            'type': 'Prepend', 'prepend': 5})), 'normalizer.prepend'),
        ('WordPiece decoder', edit(lambda t: t.__setitem__('decoder', {'type': 'WordPiece'})),
         "decoder type 'WordPiece'"),
        ('Unigram model', edit(lambda t: t['model'].__setitem__('type', 'Unigram')),
         "model.type 'Unigram'"),
        ('byte_fallback', edit(lambda t: t['model'].__setitem__('byte_fallback', True)),
         'model.byte_fallback'),
        ('dropout', edit(lambda t: t['model'].__setitem__('dropout', 0.1)), 'model.dropout'),
        ('template unknown special', edit(lambda t: t['post_processor']['processors'][1]['single'][0]
                                          ['SpecialToken'].__setitem__('id', '<nope>')),
         'post_processor.processors[1].single[0]'),
        ('template id out of range', edit(lambda t: t['post_processor']['processors'][1]
                                          ['special_tokens']['<|begin_of_text|>'].__setitem__(
                                              'ids', [10 ** 9])),
         "special_tokens['<|begin_of_text|>'].ids[0]"),
        ('RobertaProcessing', edit(lambda t: t.__setitem__('post_processor',
                                                           {'type': 'RobertaProcessing'})),
         "post_processor type 'RobertaProcessing'"),
        ('truncation', edit(lambda t: t.__setitem__('truncation', {'max_length': 5})),
         'truncation'),
    ]
    # SentencePiece-style fields, on a copy of a good SentencePiece file.
    sp = g.build_sp('sp_llama2')

    def sp_edit(fn):
        t = json.loads(json.dumps(sp))
        fn(t)
        return json.dumps(t, ensure_ascii=False)

    def drop_bytes(t):
        for k in [k for k in t['model']['vocab'] if k.startswith('<0x')]:
            del t['model']['vocab'][k]

    cases += [
        ('unk_token not in the vocabulary', sp_edit(lambda t: t['model'].__setitem__(
            'unk_token', '<nope>')), 'model.unk_token'),
        ('byte_fallback without byte tokens', sp_edit(drop_bytes), 'model.byte_fallback'),
        ('Strip start a string', sp_edit(lambda t: t['decoder']['decoders'][3].__setitem__(
            'start', 'one')), 'decoder.decoders[3].start'),
        ('Strip start huge', sp_edit(lambda t: t['decoder']['decoders'][3].__setitem__(
            'start', 10 ** 12)), 'decoder.decoders[3]'),
        ('unknown decoder step', sp_edit(lambda t: t['decoder']['decoders'].append(
            {'type': 'CTC'})), "decoder.decoders[4]: type 'CTC'"),
        ('ByteLevel decoder with no pre-tokenizer', sp_edit(lambda t: t.__setitem__(
            'decoder', {'type': 'ByteLevel'})), 'pre_tokenizer'),
        ('merge of unknown characters', sp_edit(lambda t: t['model']['merges'].insert(
            0, 'q ✓')), 'model.merges[0]'),
        ('sp vocab id huge', sp_edit(lambda t: t['model']['vocab'].__setitem__('\u2581the', 2 ** 30)),
         "model.vocab['\u2581the']"),
    ]
    for name, body, field in cases:
        path = os.path.join(tmp, 'bad.json')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(body)
        r = run(['tokenize', '-m', path, '-p', 'hello'])
        err = r.stderr.decode(errors='replace')
        check(r.returncode == 2 and err.startswith('dattn: tokenize: ') and path in err and
              field in err, 'hostile %s: rc %d, stderr %r (wants %r)' % (name, r.returncode,
                                                                          err.strip(), field))
    # Ids outside the vocabulary, and a missing file.
    good = os.path.join(tmp, 'llama3.json')
    r = run(['detokenize', '-m', good, '--ids', '1,%d' % (10 ** 8)])
    check(r.returncode == 2 and b'outside the vocabulary' in r.stderr and not r.stdout,
          'detokenize out of range: %r' % r.stderr)
    r = run(['detokenize', '-m', good, '--ids', '1,x'])
    check(r.returncode == 2 and b'--ids' in r.stderr, 'detokenize bad list: %r' % r.stderr)
    r = run(['tokenize', '-m', os.path.join(tmp, 'missing.json'), '-p', 'x'])
    check(r.returncode == 2 and b'missing.json' in r.stderr, 'missing file: %r' % r.stderr)
    r = run(['tokenize', '-m', good])
    check(r.returncode == 2 and r.stderr.startswith(b'dattn: tokenize: '), 'no text: %r' % r.stderr)
    return len(cases) + 4


def main():
    with tempfile.TemporaryDirectory() as tmp:
        g.write_cases(tmp)
        n = parity(tmp)
        h = hostile(tmp) + mutations(tmp)
    if failures:
        print('%d of the checks failed' % len(failures))
        sys.exit(1)
    print('ok: %d encodings equal the reference, %d hostile inputs refused' % (n, h))


if __name__ == '__main__':
    main()
