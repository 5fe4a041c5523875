/* libFuzzer harness for the tokenizer (DESIGN §6): the first byte of the input picks the mode.
 *   0: the rest is a tokenizer.json; when it loads, a piece of it is encoded, with and without
 *      special tokens, and the ids decoded (whole and token by token);
 *   1, 2: the rest is text for a small valid byte-level (1) or SentencePiece-style (2)
 *      tokenizer: encoded, decoded, and the decoded text encoded again.
 * Every failure must be a status with a message; ASan/UBSan watch the rest. Build with
 * meson -Dfuzz=true (CC=clang); run e.g. build-fuzz/tools/fuzz_tokenizer -max_total_time=600. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "status.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char byte_level_json[] =
    "{\"added_tokens\": [{\"id\": 9, \"content\": \"<s>\", \"special\": true},"
    "                  {\"id\": 10, \"content\": \" x \", \"special\": false, \"normalized\": true,"
    "                   \"lstrip\": true, \"rstrip\": true}],"
    " \"normalizer\": {\"type\": \"NFC\"},"
    " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\","
    "   \"pattern\": {\"Regex\": \"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|"
    "\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
    "   \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\", \"use_regex\": false}]},"
    " \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": ["
    "   {\"SpecialToken\": {\"id\": \"<s>\"}}, {\"Sequence\": {\"id\": \"A\"}}],"
    "   \"special_tokens\": {\"<s>\": {\"ids\": [9]}}},"
    " \"decoder\": {\"type\": \"ByteLevel\"},"
    " \"model\": {\"type\": \"BPE\", \"ignore_merges\": true,"
    "   \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"\\u0120\": 3, \"\\u0120ab\": 4, \"1\": 5,"
    "             \"11\": 6, \"\\u00c3\": 7, \"\\u00a1\": 8},"
    "   \"merges\": [\"a b\", \"\\u0120 ab\", \"1 1\"]}}";

static const char sentencepiece_json[] =
    "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true},"
    "                  {\"id\": 1, \"content\": \"<s>\", \"special\": true}],"
    " \"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\","
    "   \"prepend_scheme\": \"first\", \"split\": true},"
    " \"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\","
    "   \"prepend_scheme\": \"first\"},"
    " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
    "   \"byte_fallback\": true,"
    "   \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"<0xC3>\": 2, \"<0xA1>\": 3, \"\\u2581\": 4,"
    "             \"a\": 5, \"b\": 6, \"\\u2581a\": 7, \"ab\": 8},"
    "   \"merges\": [\"\\u2581 a\", \"a b\"]}}";

static tokenizer fixed[2];

static void exercise(const tokenizer *t, const char *text, size_t len)
{
    static int32_t ids[1 << 16];
    static char out[1 << 20];
    for (int special = 0; special < 2; special++) {
        int n = 0;
        dattn_status st = tokenizer_encode(t, text, len, special, ids, 1 << 16, &n);
        if (st != DATTN_OK) {
            if (!dattn_last_error()[0])
                abort();
            continue;
        }
        size_t got = 0;
        if (tokenizer_decode(t, ids, n, out, sizeof out, &got) != DATTN_OK &&
            got <= sizeof out)
            abort();   /* ids it made itself always decode */
        for (int i = 0; i < n; i++)
            if (t->token_bytes(t, ids[i], out, sizeof out, &got) != DATTN_OK)
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fixed[0].bpe) {
        if (tokenizer_load_json_text(&fixed[0], "byte_level.json", byte_level_json,
                                     strlen(byte_level_json)) != DATTN_OK ||
            tokenizer_load_json_text(&fixed[1], "sentencepiece.json", sentencepiece_json,
                                     strlen(sentencepiece_json)) != DATTN_OK)
            abort();
    }
    if (size < 1)
        return 0;
    const char *rest = (const char *)data + 1;
    size_t n = size - 1;
    if (data[0] % 3 == 0) {
        tokenizer t;
        if (tokenizer_load_json_text(&t, "fuzz.json", rest, n) != DATTN_OK) {
            if (!dattn_last_error()[0])
                abort();
            return 0;
        }
        exercise(&t, rest, n < 256 ? n : 256);
        tokenizer_free(&t);
        return 0;
    }
    exercise(&fixed[data[0] % 3 - 1], rest, n);
    return 0;
}
