// Hugging Face's tokenizers (the Rust library, through its Node binding) as the reference for
// tests/test_tokenizer_hf.py. Reads JSON lines from stdin, writes one JSON line per query:
//   {"text": "...", "special": true|false}  ->  {"ids": [...]}
//   {"decode": [ids]}                        ->  {"text": "..."}  (skip_special_tokens = false)
// usage: node hf_tokenizers.js BINDING_DIR TOKENIZER_JSON
'use strict';
const { Tokenizer } = require(process.argv[2]);
const readline = require('readline');

const tok = Tokenizer.fromFile(process.argv[3]);
const lines = [];
readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
  .on('line', (l) => lines.push(l))
  .on('close', async () => {
    const out = [];
    for (const l of lines) {
      const q = JSON.parse(l);
      if (q.decode) {
        out.push(JSON.stringify({ text: await tok.decode(q.decode, false) }));
      } else {
        const e = await tok.encode(q.text, null, { addSpecialTokens: q.special });
        out.push(JSON.stringify({ ids: Array.from(e.getIds()) }));
      }
    }
    process.stdout.write(out.join('\n') + '\n');
  });
