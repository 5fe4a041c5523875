/* White-box checks of the BPE tokenizer (src/bpe*.c, src/unicode.c, src/pretok.c): NFC on
 * strings whose answers come from Python's unicodedata, the pre-tokenizer scanners on pieces the
 * regexes split known ways, a tiny hand-written tokenizer.json, and every host allocation of
 * loading and encoding made to fail once (run it under ASan/LSan: no leak on any path). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "alloc.h"
#include "pretok.h"
#include "tokenizer.h"
#include "unicode.h"

static void nfc_is(const char *in, const char *want)
{
    char *out;
    size_t n;
    assert_int_equal(uni_nfc(in, strlen(in), &out, &n), DATTN_OK);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(out, want, n);
    dattn_free(out);
}

static void test_nfc(void **state)
{
    (void)state;
    nfc_is("cafe\xcc\x81", "caf\xc3\xa9");                          /* e + acute -> é */
    nfc_is("\xe2\x84\xa6", "\xce\xa9");                              /* OHM SIGN -> OMEGA */
    nfc_is("a\xcc\x81\xcc\xa8", "\xc4\x85\xcc\x81");                 /* acute, ogonek reorder */
    nfc_is("\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab", "\xed\x95\x9c");  /* jamo -> 한 */
    nfc_is("\xcc\x81x", "\xcc\x81x");                                /* leading combining mark */
    nfc_is("\xef\xac\x81", "\xef\xac\x81");                          /* ﬁ: compatibility only */
    nfc_is("ok \xff\xfe", "ok \xff\xfe");                            /* invalid bytes kept */
}

/* The pieces a pattern cuts `s` into, joined by '|'. */
static void pieces_are(pretok_kind k, const char *s, const char *want)
{
    char got[256] = "";
    size_t len = strlen(s), o = 0;
    for (size_t pos = 0; pos < len;) {
        size_t end = pretok_next(k, s, len, pos);
        assert_true(end > pos && end <= len);
        if (pos)
            got[o++] = '|';
        memcpy(got + o, s + pos, end - pos);
        o += end - pos;
        pos = end;
    }
    got[o] = 0;
    assert_string_equal(got, want);
}

static void test_pretok(void **state)
{
    (void)state;
    pieces_are(PRETOK_GPT2, "I'm  here 12345!!", "I|'m| | here| 12345|!!");
    pieces_are(PRETOK_GPT2, "a \n\n b  ", "a| \n\n| b|  ");
    pieces_are(PRETOK_LLAMA3, "I'M  here 12345!!\n\nx", "I|'M| | here| |123|45|!!\n\n|x");
    pieces_are(PRETOK_LLAMA3, "\tword  \n  end", "\tword|  \n| | end");
}

static const char tiny_json[] =
    "{\"version\": \"1.0\", \"truncation\": null, \"padding\": null,"
    " \"added_tokens\": [{\"id\": 5, \"content\": \"<s>\", \"special\": true, \"normalized\": false}],"
    " \"normalizer\": {\"type\": \"NFC\"},"
    " \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": true},"
    " \"post_processor\": {\"type\": \"TemplateProcessing\","
    "   \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
    "              {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],"
    "   \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [5], \"tokens\": [\"<s>\"]}}},"
    " \"decoder\": {\"type\": \"ByteLevel\"},"
    " \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null,"
    "   \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"\\u0120\": 3, \"\\u0120ab\": 4},"
    "   \"merges\": [\"a b\", [\"\\u0120\", \"ab\"]]}}";

static void test_tiny(void **state)
{
    (void)state;
    tokenizer t;
    assert_int_equal(tokenizer_load_json_text(&t, "tiny.json", tiny_json, strlen(tiny_json)),
                     DATTN_OK);
    assert_int_equal(t.vocab_size, 6);
    assert_int_equal(t.bos_id, 5);
    assert_int_equal(t.eos_id, -1);
    int32_t ids[16];
    int n;
    assert_int_equal(tokenizer_encode(&t, "ab ab<s>ba", 10, true, ids, 16, &n), DATTN_OK);
    const int32_t want[] = {5, 2, 4, 5, 1, 0};
    assert_int_equal(n, 6);
    assert_memory_equal(ids, want, sizeof want);
    /* A short buffer: the count is still given. */
    assert_int_equal(tokenizer_encode(&t, "ab ab", 5, false, ids, 1, &n), DATTN_E_INVALID_ARG);
    assert_int_equal(n, 2);
    char buf[8];
    size_t len;
    assert_int_equal(t.token_bytes(&t, 4, buf, sizeof buf, &len), DATTN_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, " ab", 3);
    assert_int_equal(t.token_bytes(&t, 6, buf, sizeof buf, &len), DATTN_E_INVALID_ARG);
    /* 'c' has no byte token in this vocabulary: an error, not a dropped byte. */
    assert_int_equal(tokenizer_encode(&t, "c", 1, false, ids, 16, &n), DATTN_E_INVALID_ARG);
    tokenizer_free(&t);
    tokenizer_free(&t);
}

/* SentencePiece-style, as Llama-2 writes it: Prepend + Replace, merges over characters, byte
 * fallback for what the vocabulary lacks, the Replace/ByteFallback/Fuse/Strip decoder. */
static const char tiny_sp_json[] =
    "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true},"
    "                  {\"id\": 1, \"content\": \"<s>\", \"special\": true}],"
    " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": ["
    "   {\"type\": \"Prepend\", \"prepend\": \"\u2581\"},"
    "   {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\u2581\"}]},"
    " \"pre_tokenizer\": null,"
    " \"post_processor\": {\"type\": \"TemplateProcessing\","
    "   \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
    "              {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],"
    "   \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1], \"tokens\": [\"<s>\"]}}},"
    " \"decoder\": {\"type\": \"Sequence\", \"decoders\": ["
    "   {\"type\": \"Replace\", \"pattern\": {\"String\": \"\u2581\"}, \"content\": \" \"},"
    "   {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"},"
    "   {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},"
    " \"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
    "   \"byte_fallback\": true,"
    "   \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"<0xC3>\": 2, \"<0xA1>\": 3, \"\u2581\": 4,"
    "             \"a\": 5, \"b\": 6, \"\u2581a\": 7, \"ab\": 8},"
    "   \"merges\": [\"\u2581 a\", \"a b\"]}}";

static void test_tiny_sentencepiece(void **state)
{
    (void)state;
    tokenizer t;
    assert_int_equal(tokenizer_load_json_text(&t, "tiny_sp.json", tiny_sp_json,
                                              strlen(tiny_sp_json)), DATTN_OK);
    int32_t ids[16];
    int n;
    /* "a ab á" -> "▁a▁ab▁á": ▁a ▁a b ▁ and the two bytes of á (not in the vocabulary) */
    assert_int_equal(tokenizer_encode(&t, "a ab \xc3\xa1", 7, true, ids, 16, &n), DATTN_OK);
    const int32_t want[] = {1, 7, 7, 6, 4, 2, 3};
    assert_int_equal(n, 7);
    assert_memory_equal(ids, want, sizeof want);
    char buf[32];
    size_t len;
    assert_int_equal(tokenizer_decode(&t, ids + 1, 6, buf, sizeof buf, &len), DATTN_OK);
    assert_int_equal(len, 7);
    assert_memory_equal(buf, "a ab \xc3\xa1", 7);   /* the leading space stripped */
    assert_int_equal(t.token_bytes(&t, 7, buf, sizeof buf, &len), DATTN_OK);
    assert_int_equal(len, 2);
    assert_memory_equal(buf, " a", 2);                 /* a stream keeps it */
    assert_int_equal(t.token_bytes(&t, 2, buf, sizeof buf, &len), DATTN_OK);
    assert_int_equal(len, 1);
    assert_int_equal((unsigned char)buf[0], 0xC3);
    assert_int_equal(tokenizer_decode(&t, ids, 7, buf, 3, &len), DATTN_E_INVALID_ARG);
    assert_int_equal(len, 11);   /* "<s> a ab á": the text starts with <s>, so nothing is stripped */
    tokenizer_free(&t);
}

/* Each allocation of load + encode fails once; each failure is NOMEM and leaks nothing. */
static void test_alloc_failures(void **state)
{
    (void)state;
    int failures = 0;
    for (long k = 1; k < 200; k++) {
        tokenizer t;
        alloc_fail_at(k);
        dattn_status st = tokenizer_load_json_text(&t, "tiny.json", tiny_json, strlen(tiny_json));
        if (st == DATTN_OK) {
            int32_t ids[16];
            int n;
            st = tokenizer_encode(&t, "ab ab\xc3\xa1", 7, true, ids, 16, &n);
            tokenizer_free(&t);
        }
        alloc_fail_at(0);
        if (st == DATTN_E_NOMEM) {
            failures++;
            continue;
        }
        /* past the last allocation: á has no byte tokens here, so encode refuses it */
        assert_int_equal(st, DATTN_E_INVALID_ARG);
        break;
    }
    assert_true(failures >= 8);
    /* The same for the SentencePiece-style file, decoding too. */
    failures = 0;
    for (long k = 1; k < 200; k++) {
        tokenizer t;
        alloc_fail_at(k);
        dattn_status st = tokenizer_load_json_text(&t, "tiny_sp.json", tiny_sp_json,
                                                   strlen(tiny_sp_json));
        if (st == DATTN_OK) {
            int32_t ids[16];
            int n = 0;
            char buf[32];
            size_t len;
            st = tokenizer_encode(&t, "a ab \xc3\xa1", 7, true, ids, 16, &n);
            if (st == DATTN_OK)
                st = tokenizer_decode(&t, ids, n, buf, sizeof buf, &len);
            tokenizer_free(&t);
        }
        alloc_fail_at(0);
        if (st == DATTN_E_NOMEM) {
            failures++;
            continue;
        }
        assert_int_equal(st, DATTN_OK);
        break;
    }
    assert_true(failures >= 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nfc),
        cmocka_unit_test(test_pretok),
        cmocka_unit_test(test_tiny),
        cmocka_unit_test(test_tiny_sentencepiece),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
