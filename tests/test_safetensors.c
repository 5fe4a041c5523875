/* Tests for the safetensors reader/writer and its JSON parser (DESIGN §6, §8): round trips of
 * F32/F16/BF16 and metadata through a real file, every malformed-header case the reader must
 * refuse (with the word that locates the fault), truncations and random corruptions, and writes
 * that fail (a full device, a file that may not grow) without costing what was at the path.
 * Random data comes from a printed seed; DATTN_TEST_SEED=<n> replays it. */
#define _XOPEN_SOURCE 700   /* mknod (tests/file_util.h), mkdtemp, symlink */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "file_util.h"
#include "json.h"
#include "safetensors.h"
#include "status.h"

static uint64_t test_seed;
static uint64_t rng_state;

static uint64_t rng_next(void)   /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int reset_rng(void **state)
{
    (void)state;
    rng_state = test_seed;
    return 0;
}

/* Exact powers of two without libm. */
static double pow2(int e)
{
    double v = 1.0;
    for (; e > 0; e--) v *= 2.0;
    for (; e < 0; e++) v /= 2.0;
    return v;
}

/* Reference decoders written from the IEEE / bfloat16 definitions, sharing nothing with src/. */
static double ref_f16(uint16_t h)
{
    int exp = (h >> 10) & 31, man = h & 1023;
    double v = exp ? (1024 + man) * pow2(exp - 25) : man * pow2(-24);
    return (h & 0x8000) ? -v : v;
}

static double ref_bf16(uint16_t b)
{
    int exp = (b >> 7) & 255, man = b & 127;
    double v = exp ? (128 + man) * pow2(exp - 134) : man * pow2(-133);
    return (b & 0x8000) ? -v : v;
}

/* A random 16-bit pattern that is finite under the given exponent mask. */
static uint16_t rand_finite16(uint16_t exp_mask)
{
    for (;;) {
        uint16_t h = (uint16_t)rng_next();
        if ((h & exp_mask) != exp_mask)
            return h;
    }
}

static char *temp_path(void)
{
    const char *dir = getenv("TMPDIR");
    char *path = malloc(512);
    assert_non_null(path);
    snprintf(path, 512, "%s/test_st_XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    return path;
}

static unsigned char *read_whole(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

/* A file image: 8-byte length, the header text, data_bytes zero bytes. */
static unsigned char *make_file(const char *header, size_t data_bytes, size_t *len)
{
    size_t hlen = strlen(header);
    *len = 8 + hlen + data_bytes;
    unsigned char *buf = calloc(1, *len);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    return buf;
}

static void assert_msg_has(const char *word)
{
    const char *msg = dattn_last_error();
    if (!strstr(msg, word))
        fail_msg("message \"%s\" lacks \"%s\"", msg, word);
}

/* The header must be refused with DATTN_E_FORMAT and a message holding every word given. */
static void expect_bad(const char *header, size_t data_bytes, ...)
{
    size_t len;
    unsigned char *buf = make_file(header, data_bytes, &len);
    st_file *f = (st_file *)&f;
    dattn_clear_error();
    dattn_status st = st_open_memory(buf, len, &f);
    if (st != DATTN_E_FORMAT)
        fail_msg("header %s: got %s (%s)", header, dattn_status_name(st), dattn_last_error());
    assert_null(f);
    assert_msg_has("safetensors: ");
    va_list ap;
    va_start(ap, data_bytes);
    for (const char *w; (w = va_arg(ap, const char *));)
        assert_msg_has(w);
    va_end(ap);
    free(buf);
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static json_doc *parse_ok(const char *text)
{
    json_doc *doc = NULL;
    if (json_parse(text, strlen(text), &doc, NULL) != DATTN_OK)
        fail_msg("json %s: %s", text, dattn_last_error());
    return doc;
}

static void parse_bad(const char *text, const char *word)
{
    json_doc *doc = (json_doc *)&doc;
    json_error err = {0};
    if (json_parse(text, strlen(text), &doc, &err) != DATTN_E_FORMAT)
        fail_msg("json %s was accepted", text);
    assert_null(doc);
    assert_non_null(err.what);
    assert_msg_has(word);
}

static void test_json_structure(void **state)
{
    (void)state;
    json_doc *doc = parse_ok(" {\"a\" : [1, 2, {\"b\": null}, []], \"c\": \"d\", \"e\": {}} ");
    const json_tok *t = doc->toks;
    assert_int_equal(doc->n_toks, 13);
    assert_int_equal(t[0].type, JSON_OBJECT);
    assert_int_equal(t[0].n, 3);
    assert_int_equal(t[0].end, 13);
    assert_string_equal(t[1].str, "a");
    assert_int_equal(t[2].type, JSON_ARRAY);
    assert_int_equal(t[2].n, 4);
    assert_int_equal(t[2].end, 9);
    assert_int_equal(t[3].ival, 1);
    assert_int_equal(t[5].type, JSON_OBJECT);
    assert_int_equal(t[5].end, 8);
    assert_int_equal(t[7].type, JSON_NULL);
    assert_int_equal(t[8].type, JSON_ARRAY);
    assert_int_equal(t[8].n, 0);
    assert_string_equal(t[9].str, "c");
    assert_string_equal(t[10].str, "d");
    assert_int_equal(t[12].type, JSON_OBJECT);
    assert_int_equal(t[12].n, 0);
    assert_int_equal(t[12].end, 13);
    json_free(doc);

    doc = parse_ok("[true,false,null]");
    assert_int_equal(doc->toks[1].type, JSON_TRUE);
    assert_int_equal(doc->toks[2].type, JSON_FALSE);
    assert_int_equal(doc->toks[3].type, JSON_NULL);
    json_free(doc);
}

static void test_json_strings(void **state)
{
    (void)state;
    json_doc *doc = parse_ok("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\u20AC\\ud83d\\ude00 \xc3\xa9\"");
    const char want[] = "a\"b\\c/d\b\f\n\r\t\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 \xc3\xa9";
    assert_int_equal(doc->toks[0].len, sizeof want - 1);
    assert_memory_equal(doc->toks[0].str, want, sizeof want);
    json_free(doc);

    parse_bad("\"\\x\"", "invalid escape");
    parse_bad("\"\\u12\"", "4 hex digits");
    parse_bad("\"\\ud800\"", "surrogate");
    parse_bad("\"\\ud800\\u0041\"", "surrogate");
    parse_bad("\"\\udc00\"", "lone low surrogate");
    parse_bad("\"\\u0000\"", "\\u0000");
    parse_bad("\"a\nb\"", "control character");
    parse_bad("\"abc", "unterminated string");
    parse_bad("\"\xff\"", "UTF-8");
    parse_bad("\"\xc0\xaf\"", "UTF-8");            /* overlong '/' */
    parse_bad("\"\xed\xa0\x80\"", "UTF-8");        /* an encoded surrogate */
    parse_bad("\"\xf4\x90\x80\x80\"", "UTF-8");    /* past U+10FFFF */
    parse_bad("\"\xe2\x82\"", "UTF-8");            /* cut short */

    /* json_escape writes what the parser reads back. */
    const char *raw = "q\"b\\s\x01\x1f/\xc3\xa9";
    char buf[64];
    size_t n = json_escape(NULL, 0, raw);
    assert_true(n < sizeof buf);
    assert_int_equal(json_escape(buf, sizeof buf, raw), n);
    doc = NULL;
    assert_int_equal(json_parse(buf, n, &doc, NULL), DATTN_OK);
    assert_string_equal(doc->toks[0].str, raw);
    json_free(doc);
    assert_int_equal(json_escape(NULL, 0, "bad \xff"), (size_t)-1);
}

static void test_json_numbers(void **state)
{
    (void)state;
    json_doc *doc = parse_ok("[0, -0, 42, -9223372036854775808, 9223372036854775807, 1.5, 1e5, -2E-3]");
    const json_tok *t = doc->toks;
    assert_true(t[1].is_int && t[1].ival == 0);
    assert_true(t[2].is_int && t[2].ival == 0);
    assert_true(t[3].is_int && t[3].ival == 42);
    assert_true(t[4].is_int && t[4].ival == INT64_MIN);
    assert_true(t[5].is_int && t[5].ival == INT64_MAX);
    assert_false(t[6].is_int);
    assert_int_equal(t[6].len, 3);
    assert_false(t[7].is_int);
    assert_false(t[8].is_int);
    json_free(doc);

    parse_bad("9223372036854775808", "int64");
    parse_bad("-9223372036854775809", "int64");
    parse_bad("[012]", "leading zero");
    parse_bad("-", "digit");
    parse_bad("1.", "digit");
    parse_bad(".5", "unexpected character");
    parse_bad("1e", "exponent");
    parse_bad("+1", "unexpected character");
}

static void test_json_syntax(void **state)
{
    (void)state;
    parse_bad("", "end of input");
    parse_bad("   ", "end of input");
    parse_bad("{} x", "trailing");
    parse_bad("[1] [2]", "trailing");
    parse_bad("{\"a\":1,}", "string key");
    parse_bad("[1,]", "unexpected character");
    parse_bad("{\"a\" 1}", "':'");
    parse_bad("{1:2}", "string key");
    parse_bad("[1 2]", "',' or ']'");
    parse_bad("{\"a\":1 \"b\":2}", "',' or '}'");
    parse_bad("[tru]", "unexpected character");
    parse_bad("[1", "',' or ']'");
    parse_bad("{\"a\":[}", "unexpected character");

    /* Depth: 64 nested arrays parse, 65 do not, and a deep attack stops at the limit. */
    char text[2 * 1000 + 1];
    for (int depth = 64; depth <= 65; depth++) {
        memset(text, '[', (size_t)depth);
        memset(text + depth, ']', (size_t)depth);
        json_doc *doc = NULL;
        json_error err = {0};
        dattn_status st = json_parse(text, 2 * (size_t)depth, &doc, &err);
        if (depth == 64) {
            assert_int_equal(st, DATTN_OK);
            assert_int_equal(doc->n_toks, 64);
            assert_int_equal(doc->toks[0].end, 64);
            json_free(doc);
        } else {
            assert_int_equal(st, DATTN_E_FORMAT);
            assert_int_equal(err.offset, 64);
            assert_msg_has("nesting");
        }
    }
    memset(text, '[', 1000);
    json_doc *doc = NULL;
    assert_int_equal(json_parse(text, 1000, &doc, NULL), DATTN_E_FORMAT);
    assert_msg_has("nesting");
}

/* ---- reader: malformed files ---------------------------------------------------------------- */

#define W_F32_2 "\"dtype\":\"F32\",\"shape\":[2]"

static void test_bad_lengths(void **state)
{
    (void)state;
    unsigned char buf[32] = {0};
    st_file *f;
    for (size_t len = 0; len < 8; len++) {
        unsigned char *exact = malloc(len ? len : 1);   /* exact size: ASan sees any over-read */
        memcpy(exact, buf, len);
        assert_int_equal(st_open_memory(exact, len, &f), DATTN_E_FORMAT);
        assert_msg_has("shorter than the 8-byte header length");
        free(exact);
    }
    assert_int_equal(st_open_memory(NULL, 0, &f), DATTN_E_FORMAT);

    assert_int_equal(st_open_memory(buf, 16, &f), DATTN_E_FORMAT);   /* length field 0 */
    assert_msg_has("header length is 0");

    uint64_t huge = 200000000;                 /* 200 MB: over the limit, not read */
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(huge >> (8 * i));
    assert_int_equal(st_open_memory(buf, 16, &f), DATTN_E_FORMAT);
    assert_msg_has("limit");

    memset(buf, 0xff, 8);                      /* 2^64-1: no wrap-around in the checks */
    assert_int_equal(st_open_memory(buf, 16, &f), DATTN_E_FORMAT);
    assert_msg_has("limit");

    memset(buf, 0, 8);
    buf[0] = 100;                              /* 100 bytes of header in a 32-byte file */
    assert_int_equal(st_open_memory(buf, 32, &f), DATTN_E_FORMAT);
    assert_msg_has("past the end of the file");
}

static void test_bad_json_header(void **state)
{
    (void)state;
    expect_bad("{\"a\":}", 0, "not valid JSON", "header byte 5", "file byte 13", NULL);
    expect_bad("{} x", 0, "trailing", NULL);
    expect_bad("[]", 0, "header is an array, expected an object", NULL);
    expect_bad("\"w\"", 0, "expected an object", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}",
               8, "int64", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F\\x32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "escape",
               NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[02],\"data_offsets\":[0,8]}}", 8,
               "leading zero", NULL);
    char deep[300];
    snprintf(deep, sizeof deep, "{\"__metadata__\":%0*d", 200, 0);
    memset(deep + 16, '[', 200);
    expect_bad(deep, 0, "nesting", NULL);
}

static void test_bad_entries(void **state)
{
    (void)state;
    expect_bad("{\"w\":{" W_F32_2 ",\"data_offsets\":[0,8]},\"w\":{" W_F32_2
               ",\"data_offsets\":[8,16]}}", 16, "duplicate tensor name 'w'", NULL);
    expect_bad("{\"w\":[1,2]}", 0, "'w'", "expected an object", NULL);
    expect_bad("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'w'", "no 'dtype'", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "'w'", "no 'shape'", NULL);
    expect_bad("{\"w\":{" W_F32_2 "}}", 8, "'w'", "no 'data_offsets'", NULL);
    expect_bad("{\"w\":{" W_F32_2 ",\"data_offsets\":[0,8],\"foo\":1}}", 8, "'w'",
               "unknown key 'foo'", NULL);
    expect_bad("{\"w\":{" W_F32_2 ",\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "'w'",
               "'dtype' twice", NULL);
    expect_bad("{\"w\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'w'",
               "'dtype' is a number", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, "'w'",
               "unknown dtype 'F8_E4M3'", NULL);
    expect_bad("{\"w\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "'w'",
               "unknown dtype 'f32'", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8, "'w'",
               "'shape' is a string", NULL);
    expect_bad("{\"w\":{" W_F32_2 ",\"data_offsets\":{\"a\":0}}}", 8, "'w'", "data_offsets",
               NULL);
}

static void test_bad_shapes(void **state)
{
    (void)state;
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,0]}}", 0, "'w'",
               "shape[0] is -2, negative", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[3,2.5],\"data_offsets\":[0,0]}}", 0, "'w'",
               "shape[1] is 2.5, not an integer", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2e0],\"data_offsets\":[0,8]}}", 8, "'w'",
               "not an integer", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "'w'",
               "shape[0] is a string", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[[2]],\"data_offsets\":[0,8]}}", 8, "'w'",
               "shape[0] is an array", NULL);
    expect_bad("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
               "'w'", "9 dims", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
               "\"data_offsets\":[0,0]}}", 0, "'w'", "overflow", NULL);
    expect_bad("{\"w\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],"
               "\"data_offsets\":[0,0]}}", 0, "'w'", "overflow", NULL);
}

static void test_bad_offsets(void **state)
{
    (void)state;
    expect_bad("{\"w\":{" W_F32_2 ",\"data_offsets\":[0,8,8]}}", 8, "'w'",
               "'data_offsets' is not [begin, end]", NULL);
    expect_bad("{\"w\":{" W_F32_2 ",\"data_offsets\":[0]}}", 8, "'w'", "[begin, end]", NULL);
    expect_bad("{\"w\":{" W_F32_2 ",\"data_offsets\":[-8,0]}}", 8, "'w'", "non-negative", NULL);
    expect_bad("{\"w\":{" W_F32_2 ",\"data_offsets\":[0,8.0]}}", 8, "'w'", "non-negative", NULL);
    expect_bad("{\"w\":{" W_F32_2 ",\"data_offsets\":[16,8]}}", 16, "'w'", "begin after end",
               NULL);
    expect_bad("{\"w\":{" W_F32_2 ",\"data_offsets\":[0,8]}}", 4, "'w'",
               "end 8 is beyond the data section (4 bytes)", NULL);
    expect_bad("{\"w\":{" W_F32_2 ",\"data_offsets\":[0,9223372036854775807]}}", 4, "'w'",
               "beyond", NULL);
    expect_bad("{\"w\":{" W_F32_2 ",\"data_offsets\":[0,12]}}", 12, "'w'",
               "hold 12 bytes, but F32 [2] needs 8", NULL);
    expect_bad("{\"a\":{" W_F32_2 ",\"data_offsets\":[0,8]},\"b\":{" W_F32_2
               ",\"data_offsets\":[4,12]}}", 12, "'a' [0,8)", "'b' [4,12)", "overlap", NULL);
    /* Overlap is found whatever the header order; gaps and empty tensors are fine. */
    expect_bad("{\"b\":{" W_F32_2 ",\"data_offsets\":[16,24]},\"c\":{" W_F32_2
               ",\"data_offsets\":[0,8]},\"a\":{" W_F32_2 ",\"data_offsets\":[20,28]}}", 28,
               "overlap", NULL);
    size_t len;
    unsigned char *buf = make_file("{\"b\":{" W_F32_2 ",\"data_offsets\":[16,24]},\"z\":{\"dtype\":"
                                   "\"F16\",\"shape\":[0,3],\"data_offsets\":[18,18]},\"c\":{"
                                   W_F32_2 ",\"data_offsets\":[0,8]}}", 32, &len);
    st_file *f = NULL;
    assert_int_equal(st_open_memory(buf, len, &f), DATTN_OK);
    assert_int_equal(st_count(f), 3);
    assert_int_equal(st_find(f, "z")->n_elems, 0);
    assert_int_equal(st_find(f, "z")->nbytes, 0);
    st_close(f);
    free(buf);
}

static void test_bad_metadata(void **state)
{
    (void)state;
    expect_bad("{\"__metadata__\":\"x\"}", 0, "'__metadata__' is a string, expected an object", NULL);
    expect_bad("{\"__metadata__\":[]}", 0, "'__metadata__'", "object", NULL);
    expect_bad("{\"__metadata__\":{\"depth\":2}}", 0, "__metadata__ 'depth' is a number", NULL);
    expect_bad("{\"__metadata__\":{\"k\":\"1\",\"j\":\"0\",\"k\":\"2\"}}", 0, "key 'k' twice",
               NULL);
    expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "'__metadata__' appears twice",
               NULL);
}

/* ---- reader and writer together ------------------------------------------------------------ */

enum { N_F32 = 15, N_F16 = 7, N_BF16 = 24 };

typedef struct sample {
    float f32[N_F32];
    uint16_t f16[N_F16], bf16[N_BF16];
    float scalar;
    int32_t ints[3];
} sample;

static const char *const sample_meta[] = {
    "embed_dim", "512",
    "name", "quote\" back\\ nl\n tab\t ctl\x01 \xc3\xa9 \xf0\x9f\x98\x80",
    "empty", "",
};

static void fill_sample(sample *s)
{
    for (int i = 0; i < N_F32; i++) {
        uint32_t bits;
        do bits = (uint32_t)rng_next(); while ((bits & 0x7f800000u) == 0x7f800000u);
        memcpy(&s->f32[i], &bits, 4);
    }
    for (int i = 0; i < N_F16; i++)
        s->f16[i] = rand_finite16(0x7c00);
    s->f16[0] = 0x0001;                    /* smallest subnormal */
    s->f16[1] = 0x8000;                    /* -0 */
    for (int i = 0; i < N_BF16; i++)
        s->bf16[i] = rand_finite16(0x7f80);
    s->bf16[0] = 0x0001;
    s->scalar = -3.25f;
    s->ints[0] = 1; s->ints[1] = -2; s->ints[2] = 3;
}

/* The dtypes' bytes little-endian, whatever the host (the writer takes them as they are). */
static void store_le16(unsigned char *dst, const uint16_t *v, int n)
{
    for (int i = 0; i < n; i++) {
        dst[2 * i] = (unsigned char)v[i];
        dst[2 * i + 1] = (unsigned char)(v[i] >> 8);
    }
}

static char *write_sample(const sample *s)
{
    static unsigned char f16_le[2 * N_F16], bf16_le[2 * N_BF16];
    store_le16(f16_le, s->f16, N_F16);
    store_le16(bf16_le, s->bf16, N_BF16);
    const st_write_tensor tensors[] = {
        {"layers.0.attn.q_proj.weight", ST_F32, 2, {3, 5}, s->f32},
        {"f16", ST_F16, 1, {N_F16}, f16_le},
        {"bf16 \"quoted\" \xc3\xa9", ST_BF16, 3, {2, 3, 4}, bf16_le},
        {"scalar", ST_F32, 0, {0}, &s->scalar},
        {"empty", ST_F16, 2, {0, 4}, NULL},
        {"ints", ST_I32, 1, {3}, s->ints},
    };
    char *path = temp_path();
    dattn_status st = st_write(path, tensors, 6, sample_meta, 3);
    if (st != DATTN_OK)
        fail_msg("st_write: %s", dattn_last_error());
    return path;
}

static void check_sample(const st_file *f, const sample *s)
{
    assert_int_equal(st_count(f), 6);
    static const char *const order[] = {"layers.0.attn.q_proj.weight", "f16",
                                        "bf16 \"quoted\" \xc3\xa9", "scalar", "empty", "ints"};
    for (int i = 0; i < 6; i++) {
        assert_string_equal(st_at(f, i)->name, order[i]);
        assert_ptr_equal(st_find(f, order[i]), st_at(f, i));
    }
    assert_null(st_at(f, 6));
    assert_null(st_at(f, -1));
    assert_null(st_find(f, "missing"));

    float out[N_BF16];
    const st_tensor *t;
    const int64_t shape_q[] = {3, 5};
    assert_int_equal(st_expect(f, order[0], 2, shape_q, &t), DATTN_OK);
    assert_int_equal(t->dtype, ST_F32);
    assert_int_equal(t->n_elems, N_F32);
    assert_int_equal(t->nbytes, 4 * N_F32);
    assert_int_equal(st_to_f32(t, out), DATTN_OK);
    assert_memory_equal(out, s->f32, sizeof s->f32);

    t = st_find(f, "f16");
    assert_int_equal(t->dtype, ST_F16);
    assert_int_equal(st_to_f32(t, out), DATTN_OK);
    for (int i = 0; i < N_F16; i++)
        if ((double)out[i] != ref_f16(s->f16[i]))
            fail_msg("f16[%d] 0x%04x: got %.9g, want %.9g (seed %llu)", i, s->f16[i],
                     (double)out[i], ref_f16(s->f16[i]), (unsigned long long)test_seed);
    assert_true(out[1] == 0.0f && signbit(out[1]));

    t = st_find(f, order[2]);
    assert_int_equal(t->dtype, ST_BF16);
    assert_int_equal(t->n_dims, 3);
    assert_int_equal(t->shape[2], 4);
    assert_int_equal(st_to_f32(t, out), DATTN_OK);
    for (int i = 0; i < N_BF16; i++)
        if ((double)out[i] != ref_bf16(s->bf16[i]))
            fail_msg("bf16[%d] 0x%04x: got %.9g, want %.9g (seed %llu)", i, s->bf16[i],
                     (double)out[i], ref_bf16(s->bf16[i]), (unsigned long long)test_seed);

    assert_int_equal(st_expect(f, "scalar", 0, NULL, &t), DATTN_OK);
    assert_int_equal(t->n_elems, 1);
    assert_int_equal(st_to_f32(t, out), DATTN_OK);
    assert_true(out[0] == -3.25f);

    t = st_find(f, "empty");
    assert_int_equal(t->n_elems, 0);
    assert_int_equal(st_to_f32(t, NULL), DATTN_OK);

    t = st_find(f, "ints");
    assert_int_equal(t->dtype, ST_I32);
    assert_int_equal(st_to_f32(t, out), DATTN_E_FORMAT);
    assert_msg_has("'ints' is I32");

    for (int m = 0; m < 3; m++)
        assert_string_equal(st_meta(f, sample_meta[2 * m]), sample_meta[2 * m + 1]);
    assert_null(st_meta(f, "absent"));
}

static void test_roundtrip_file(void **state)
{
    (void)state;
    sample s;
    fill_sample(&s);
    char *path = write_sample(&s);
    st_file *f = NULL;
    if (st_open(path, &f) != DATTN_OK)
        fail_msg("st_open: %s", dattn_last_error());
    check_sample(f, &s);
    st_close(f);

    /* Layout: header length a multiple of 8 padded with spaces, each tensor 8-byte aligned. */
    size_t len;
    unsigned char *bytes = read_whole(path, &len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | bytes[i];
    assert_int_equal(hlen % 8, 0);
    assert_true(bytes[8 + hlen - 1] == '}' || bytes[8 + hlen - 1] == ' ');
    assert_int_equal(st_open_memory(bytes, len, &f), DATTN_OK);
    for (int i = 0; i < st_count(f); i++)
        assert_int_equal(((const unsigned char *)st_at(f, i)->data - bytes) % 8, 0);
    check_sample(f, &s);
    st_close(f);

    /* The same bytes at an odd address: the reader copes with unaligned data. */
    unsigned char *odd = malloc(len + 1);
    memcpy(odd + 1, bytes, len);
    assert_int_equal(st_open_memory(odd + 1, len, &f), DATTN_OK);
    check_sample(f, &s);
    st_close(f);
    free(odd);
    free(bytes);
    unlink(path);
    free(path);
}

static void test_roundtrip_no_meta(void **state)
{
    (void)state;
    float v[4] = {1, 2, 3, 4};
    const st_write_tensor t = {"v", ST_F32, 1, {4}, v};
    char *path = temp_path();
    assert_int_equal(st_write(path, &t, 1, NULL, 0), DATTN_OK);
    st_file *f = NULL;
    assert_int_equal(st_open(path, &f), DATTN_OK);
    assert_null(st_meta(f, "embed_dim"));
    float out[4];
    assert_int_equal(st_to_f32(st_find(f, "v"), out), DATTN_OK);
    assert_memory_equal(out, v, sizeof v);
    st_close(f);

    assert_int_equal(st_write(path, NULL, 0, NULL, 0), DATTN_OK);   /* no tensors at all */
    assert_int_equal(st_open(path, &f), DATTN_OK);
    assert_int_equal(st_count(f), 0);
    assert_null(st_find(f, "v"));
    st_close(f);
    unlink(path);
    free(path);
}

static void test_expect_messages(void **state)
{
    (void)state;
    size_t len;
    unsigned char *buf = make_file("{\"k_proj.weight\":{\"dtype\":\"F16\",\"shape\":[512,256],"
                                   "\"data_offsets\":[0,262144]}}", 262144, &len);
    st_file *f = NULL;
    assert_int_equal(st_open_memory(buf, len, &f), DATTN_OK);
    const st_tensor *t = (const st_tensor *)&t;
    const int64_t want[] = {256, 512}, have[] = {512, 256};
    assert_int_equal(st_expect(f, "k_proj.weight", 2, want, &t), DATTN_E_FORMAT);
    assert_null(t);
    assert_string_equal(dattn_last_error(),
                        "safetensors: 'k_proj.weight' is [512,256], expected [256,512]");
    assert_int_equal(st_expect(f, "k_proj.weight", 1, want, NULL), DATTN_E_FORMAT);
    assert_string_equal(dattn_last_error(),
                        "safetensors: 'k_proj.weight' is [512,256], expected [256]");
    assert_int_equal(st_expect(f, "subln.weight", 1, want, &t), DATTN_E_FORMAT);
    assert_string_equal(dattn_last_error(), "safetensors: tensor 'subln.weight' is missing");
    assert_int_equal(st_expect(f, "k_proj.weight", 2, have, &t), DATTN_OK);
    assert_ptr_equal(t, st_at(f, 0));
    assert_int_equal(st_expect(f, "k_proj.weight", 9, have, &t), DATTN_E_INVALID_ARG);
    st_close(f);
    free(buf);

    assert_string_equal(st_dtype_name(ST_BF16), "BF16");
    assert_string_equal(st_dtype_name(ST_BOOL), "BOOL");
    assert_int_equal(st_dtype_size(ST_F64), 8);
    assert_int_equal(st_dtype_size(ST_U8), 1);
}

static void test_io_errors(void **state)
{
    (void)state;
    st_file *f = (st_file *)&f;
    assert_int_equal(st_open("/nonexistent-dattn/x.safetensors", &f), DATTN_E_IO);
    assert_null(f);
    assert_msg_has("/nonexistent-dattn/x.safetensors");
    assert_msg_has("No such file");
    assert_int_equal(st_open("/", &f), DATTN_E_IO);
    assert_msg_has("not a regular file");

    char *path = temp_path();                  /* a 3-byte file: refused before mmap */
    FILE *fp = fopen(path, "wb");
    fwrite("abc", 1, 3, fp);
    fclose(fp);
    assert_int_equal(st_open(path, &f), DATTN_E_FORMAT);
    assert_msg_has(path);
    assert_msg_has("3 bytes, shorter");
    unlink(path);
    assert_int_equal(st_open(path, &f), DATTN_E_IO);   /* now empty and gone */
    free(path);

    float v = 1;
    const st_write_tensor t = {"v", ST_F32, 1, {1}, &v};
    assert_int_equal(st_write("/nonexistent-dattn/out.safetensors", &t, 1, NULL, 0), DATTN_E_IO);
    assert_msg_has("No such file");
}

static void test_write_rejects(void **state)
{
    (void)state;
    float v[2] = {0};
    const char *path = "/nonexistent-dattn/never-written";   /* refused before any open */
    st_write_tensor t[2] = {{"a", ST_F32, 1, {2}, v}, {"b", ST_F32, 1, {2}, v}};
    assert_int_equal(st_write(NULL, t, 1, NULL, 0), DATTN_E_INVALID_ARG);
    t[1].name = "a";
    assert_int_equal(st_write(path, t, 2, NULL, 0), DATTN_E_INVALID_ARG);
    assert_msg_has("'a' given twice");
    t[1].name = "__metadata__";
    assert_int_equal(st_write(path, t, 2, NULL, 0), DATTN_E_INVALID_ARG);
    t[1].name = "bad \xff";
    assert_int_equal(st_write(path, t, 2, NULL, 0), DATTN_E_INVALID_ARG);
    t[1].name = "b";
    t[1].n_dims = 9;
    assert_int_equal(st_write(path, t, 2, NULL, 0), DATTN_E_INVALID_ARG);
    t[1].n_dims = 1;
    t[1].shape[0] = -1;
    assert_int_equal(st_write(path, t, 2, NULL, 0), DATTN_E_INVALID_ARG);
    t[1].shape[0] = 2;
    t[1].data = NULL;
    assert_int_equal(st_write(path, t, 2, NULL, 0), DATTN_E_INVALID_ARG);
    assert_msg_has("'b' has no data");
    t[1].data = v;
    const char *dup_meta[] = {"k", "1", "k", "2"};
    assert_int_equal(st_write(path, t, 2, dup_meta, 2), DATTN_E_INVALID_ARG);
    const char *null_meta[] = {"k", NULL};
    assert_int_equal(st_write(path, t, 2, null_meta, 1), DATTN_E_INVALID_ARG);
}

/* ---- a failed write keeps what was at the path ------------------------------------------------ */

enum { BIG_FLOATS = 16384 };   /* 64 KiB of data: far past the 4 KiB the failing writes may use */

/* Random non-zero floats of the seeded stream. */
static void rand_floats(float *v, int n)
{
    for (int i = 0; i < n; i++) {
        v[i] = (float)((double)(rng_next() >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
        if (v[i] == 0.0f)
            v[i] = 0.25f;
    }
}

static int same_bytes(const char *path, const uint8_t *want, size_t n)
{
    size_t got_n = 0;
    uint8_t *got = fu_read(path, &got_n);
    int same = got && got_n == n && memcmp(got, want, n) == 0;
    free(got);
    return same;
}

typedef struct write_job {
    const char *path;
    const st_write_tensor *t;
    dattn_status st;
} write_job;

static int run_write(void *arg)
{
    write_job *j = arg;
    j->st = st_write(j->path, j->t, 1, NULL, 0);
    return 0;
}

/* Devices are written, never replaced or removed: as root, the old writer's remove() after the
 * failed write to /dev/full deleted the device node. */
static void test_write_to_devices(void **state)
{
    (void)state;
    static float big[BIG_FLOATS];
    rand_floats(big, BIG_FLOATS);
    const st_write_tensor t = {"big", ST_F32, 1, {BIG_FLOATS}, big};
    struct stat full, null;
    if (stat("/dev/full", &full) != 0 || !S_ISCHR(full.st_mode) || stat("/dev/null", &null) != 0 ||
        !S_ISCHR(null.st_mode)) {
        printf("  no /dev/full or /dev/null character device here: skipped\n");
        skip();
    }
    dattn_status st = st_write("/dev/full", &t, 1, NULL, 0);
    printf("  st_write /dev/full (euid %d) -> %s: %s\n", (int)geteuid(), dattn_status_name(st),
           dattn_last_error());
    int intact = fu_char_device_intact("/dev/full", full.st_rdev);
    assert_int_equal(st, DATTN_E_IO);
    assert_msg_has("/dev/full");
    if (!intact)
        fail_msg("a failed write to /dev/full removed or replaced it (put back)");
    /* the same through the public API */
    const dattn_tensor pt = {"big", DATTN_DTYPE_F32, 1, {BIG_FLOATS}, big};
    st = dattn_tensor_file_write("/dev/full", &pt, 1, NULL, 0);
    intact = fu_char_device_intact("/dev/full", full.st_rdev);
    assert_int_equal(st, DATTN_E_IO);
    if (!intact)
        fail_msg("dattn_tensor_file_write to /dev/full removed or replaced it (put back)");
    /* a write that succeeds on a device goes to the device: /dev/null stays /dev/null */
    st = st_write("/dev/null", &t, 1, NULL, 0);
    intact = fu_char_device_intact("/dev/null", null.st_rdev);
    if (st != DATTN_OK)
        fail_msg("st_write /dev/null: %s", dattn_last_error());
    if (!intact)
        fail_msg("writing /dev/null replaced it with a file (put back)");

    /* a directory as the target: refused, and nothing is left beside it */
    char dir[512], sub[600];
    assert_int_equal(fu_tmp_dir(dir, sizeof dir, "st_dirtarget"), 0);
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    assert_int_equal(st_write(sub, &t, 1, NULL, 0), DATTN_E_IO);
    assert_msg_has(sub);
    struct stat sb;
    assert_int_equal(stat(sub, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(fu_dir_entries(dir), 1);
    assert_int_equal(fu_dir_entries(sub), 0);
    rmdir(sub);
    fu_rm_dir(dir);
}

/* A write that fails part-way (here: the file may not grow past 4 KiB) leaves the existing file
 * byte for byte and no temporary beside it; one that succeeds replaces it whole, keeping its
 * mode. A symlink is followed: the file it names is replaced, the link stays a link. */
static void test_write_failure_keeps_file(void **state)
{
    (void)state;
    static float big[BIG_FLOATS], small[8];
    rand_floats(big, BIG_FLOATS);
    rand_floats(small, 8);
    const st_write_tensor t_big = {"big", ST_F32, 1, {BIG_FLOATS}, big};
    const st_write_tensor t_small = {"small", ST_F32, 1, {8}, small};
    char dir[512], path[600], fresh[600], link[600], dangling[600], dangling_to[600];
    assert_int_equal(fu_tmp_dir(dir, sizeof dir, "st_keep"), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(fresh, sizeof fresh, "%s/fresh.safetensors", dir);
    snprintf(link, sizeof link, "%s/link.safetensors", dir);
    snprintf(dangling, sizeof dangling, "%s/dangling.safetensors", dir);
    snprintf(dangling_to, sizeof dangling_to, "%s/made.safetensors", dir);

    assert_int_equal(st_write(path, &t_small, 1, NULL, 0), DATTN_OK);
    assert_int_equal(chmod(path, 0640), 0);
    size_t old_n = 0;
    uint8_t *old = fu_read(path, &old_n);
    assert_non_null(old);

    write_job job = {path, &t_big, DATTN_OK};
    assert_int_equal(fu_with_fsize_limit(run_write, &job, 4096), 0);
    printf("  write of 64 KiB over a file, 4 KiB allowed -> %s: %s\n", dattn_status_name(job.st),
           dattn_last_error());
    assert_int_equal(job.st, DATTN_E_IO);
    assert_msg_has(path);
    if (!same_bytes(path, old, old_n))
        fail_msg("the failed write changed or removed '%s'", path);
    if (fu_dir_entries(dir) != 1)
        fail_msg("the failed write left %d entries in %s (a temporary?)", fu_dir_entries(dir), dir);

    /* success replaces the file whole and keeps its mode */
    assert_int_equal(st_write(path, &t_big, 1, NULL, 0), DATTN_OK);
    st_file *f = NULL;
    assert_int_equal(st_open(path, &f), DATTN_OK);
    const st_tensor *got = st_find(f, "big");
    assert_non_null(got);
    assert_null(st_find(f, "small"));
    assert_memory_equal(got->data, big, sizeof big);
    st_close(f);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0640);
    assert_int_equal(fu_dir_entries(dir), 1);

    /* a new file gets 0666 less the umask, as fopen gives */
    mode_t old_mask = umask(027);
    dattn_status st = st_write(fresh, &t_small, 1, NULL, 0);
    umask(old_mask);
    assert_int_equal(st, DATTN_OK);
    assert_int_equal(stat(fresh, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0640);
    unlink(fresh);

    /* through a symlink: the file it names is replaced (or kept, on failure), the link stays */
    assert_int_equal(st_write(path, &t_small, 1, NULL, 0), DATTN_OK);
    assert_int_equal(symlink("model.safetensors", link), 0);
    job.path = link;
    assert_int_equal(fu_with_fsize_limit(run_write, &job, 4096), 0);
    assert_int_equal(job.st, DATTN_E_IO);
    if (!same_bytes(path, old, old_n))
        fail_msg("a failed write through a symlink changed or removed the file it names");
    assert_int_equal(lstat(link, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    assert_int_equal(fu_dir_entries(dir), 2);
    assert_int_equal(st_write(link, &t_big, 1, NULL, 0), DATTN_OK);
    assert_int_equal(lstat(link, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    assert_int_equal(st_open(path, &f), DATTN_OK);
    assert_non_null(st_find(f, "big"));
    st_close(f);
    assert_int_equal(fu_dir_entries(dir), 2);
    /* a dangling symlink is written through, as fopen would: the file it names appears */
    assert_int_equal(symlink("made.safetensors", dangling), 0);
    assert_int_equal(st_write(dangling, &t_small, 1, NULL, 0), DATTN_OK);
    assert_int_equal(lstat(dangling, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    assert_true(same_bytes(dangling_to, old, old_n));
    assert_int_equal(fu_dir_entries(dir), 4);
    free(old);
    fu_rm_dir(dir);
}

/* Every proper prefix of a valid file fails cleanly: exact-size copies, so ASan sees over-reads. */
static void test_truncations(void **state)
{
    (void)state;
    sample s;
    fill_sample(&s);
    char *path = write_sample(&s);
    size_t len;
    unsigned char *bytes = read_whole(path, &len);
    for (size_t n = 0; n < len; n++) {
        unsigned char *cut = malloc(n ? n : 1);
        memcpy(cut, bytes, n);
        st_file *f = (st_file *)&f;
        dattn_clear_error();
        dattn_status st = st_open_memory(cut, n, &f);
        if (st != DATTN_E_FORMAT)
            fail_msg("prefix of %zu/%zu bytes: %s", n, len, dattn_status_name(st));
        assert_null(f);
        assert_true(strlen(dattn_last_error()) > 12);
        free(cut);
    }
    free(bytes);
    unlink(path);
    free(path);
}

/* Random byte changes in a valid file: either refused, or every tensor reads within the file. */
static void test_random_corruption(void **state)
{
    (void)state;
    sample s;
    fill_sample(&s);
    char *path = write_sample(&s);
    size_t len;
    unsigned char *bytes = read_whole(path, &len);
    static const char alphabet[] = "{}[]\",:0123456789-.eE \\u\xff";
    int n_ok = 0;
    for (int iter = 0; iter < 3000; iter++) {
        unsigned char *copy = malloc(len);
        memcpy(copy, bytes, len);
        int n_changes = 1 + (int)(rng_next() % 4);
        for (int c = 0; c < n_changes; c++) {
            size_t at = (size_t)(rng_next() % len);
            copy[at] = rng_next() % 2 ? (unsigned char)rng_next()
                                      : (unsigned char)alphabet[rng_next() % (sizeof alphabet - 1)];
        }
        st_file *f = NULL;
        if (st_open_memory(copy, len, &f) == DATTN_OK) {
            n_ok++;
            for (int i = 0; i < st_count(f); i++) {
                const st_tensor *t = st_at(f, i);
                const unsigned char *p = t->data;
                assert_true(p >= copy && p + t->nbytes <= copy + len);
                if (t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16) {
                    float *dst = malloc(t->n_elems * sizeof(float) + 1);
                    /* corrupted data bytes may spell NaN or inf: refused, not converted */
                    dattn_status st = st_to_f32(t, dst);
                    assert_true(st == DATTN_OK || st == DATTN_E_NONFINITE);
                    free(dst);
                }
            }
            st_close(f);
        } else {
            assert_null(f);
        }
        free(copy);
    }
    assert_true(n_ok > 0);                      /* changes to tensor data keep the file valid */
    free(bytes);
    unlink(path);
    free(path);
}

int main(void)
{
    const char *env = getenv("DATTN_TEST_SEED");
    test_seed = env && *env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
    printf("test_safetensors: seed %llu (DATTN_TEST_SEED=%llu replays it)\n",
           (unsigned long long)test_seed, (unsigned long long)test_seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_structure),
        cmocka_unit_test(test_json_strings),
        cmocka_unit_test(test_json_numbers),
        cmocka_unit_test(test_json_syntax),
        cmocka_unit_test(test_bad_lengths),
        cmocka_unit_test(test_bad_json_header),
        cmocka_unit_test(test_bad_entries),
        cmocka_unit_test(test_bad_shapes),
        cmocka_unit_test(test_bad_offsets),
        cmocka_unit_test(test_bad_metadata),
        cmocka_unit_test_setup(test_roundtrip_file, reset_rng),
        cmocka_unit_test(test_roundtrip_no_meta),
        cmocka_unit_test(test_expect_messages),
        cmocka_unit_test(test_io_errors),
        cmocka_unit_test(test_write_rejects),
        cmocka_unit_test_setup(test_write_to_devices, reset_rng),
        cmocka_unit_test_setup(test_write_failure_keeps_file, reset_rng),
        cmocka_unit_test_setup(test_truncations, reset_rng),
        cmocka_unit_test_setup(test_random_corruption, reset_rng),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
