/* The bounded JSON parser behind safetensors headers (DESIGN §6; see json.h). It runs twice over
 * the text: once to count tokens and string bytes, then, after one allocation, to fill them in.
 * Nesting is tracked on a fixed stack of JSON_MAX_DEPTH, so hostile input cannot recurse. */
#include "json.h"

#include <limits.h>
#include <string.h>

#include "alloc.h"
#include "status.h"

typedef struct parser {
    const unsigned char *s;
    size_t len, pos;
    json_tok *toks;       /* NULL on the counting pass */
    int n_toks;
    char *strs;           /* decoded strings, NUL-terminated; NULL on the counting pass */
    bool big_ints;        /* integers past int64 are numbers without is_int, not an error */
    size_t str_bytes;
    json_error *err;
} parser;

/* The document and its tokens in one block, so json_free is one call. */
typedef struct doc_block {
    json_doc doc;
    json_tok toks[];
} doc_block;

static bool fail_at(parser *p, size_t offset, const char *what)
{
    p->err->offset = offset;
    p->err->what = what;
    return false;
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static bool add_tok(parser *p, json_type type, size_t offset, int *idx)
{
    if (p->n_toks == INT_MAX)
        return fail_at(p, offset, "too many values");
    *idx = p->n_toks++;
    if (p->toks) {
        json_tok *t = &p->toks[*idx];
        memset(t, 0, sizeof *t);
        t->type = type;
        t->offset = offset;
        t->end = *idx + 1;
    }
    return true;
}

static void put_byte(parser *p, unsigned char c)
{
    if (p->strs)
        p->strs[p->str_bytes] = (char)c;
    p->str_bytes++;
}

/* Bytes in the well-formed UTF-8 sequence at s (1-4), or 0: overlong forms, surrogates and code
 * points past U+10FFFF are rejected. Stops at the first bad byte, so a NUL ends it safely. */
static size_t utf8_seq_len(const unsigned char *s, size_t avail)
{
    unsigned c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) { n = 2; cp = c & 0x1f; }
    else if (c >= 0xe0 && c <= 0xef) { n = 3; cp = c & 0x0f; }
    else if (c >= 0xf0 && c <= 0xf4) { n = 4; cp = c & 0x07; }
    else return 0;
    if (avail < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

static void put_utf8(parser *p, uint32_t cp)
{
    if (cp < 0x80) {
        put_byte(p, (unsigned char)cp);
    } else if (cp < 0x800) {
        put_byte(p, (unsigned char)(0xc0 | (cp >> 6)));
        put_byte(p, (unsigned char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        put_byte(p, (unsigned char)(0xe0 | (cp >> 12)));
        put_byte(p, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
        put_byte(p, (unsigned char)(0x80 | (cp & 0x3f)));
    } else {
        put_byte(p, (unsigned char)(0xf0 | (cp >> 18)));
        put_byte(p, (unsigned char)(0x80 | ((cp >> 12) & 0x3f)));
        put_byte(p, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
        put_byte(p, (unsigned char)(0x80 | (cp & 0x3f)));
    }
}

/* The 4 hex digits of a \u escape at p->pos; advances past them. */
static bool read_hex4(parser *p, uint32_t *out)
{
    if (p->len - p->pos < 4)
        return fail_at(p, p->pos, "\\u escape needs 4 hex digits");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p->s[p->pos + (size_t)i];
        uint32_t d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return fail_at(p, p->pos + (size_t)i, "\\u escape needs 4 hex digits");
        v = (v << 4) | d;
    }
    p->pos += 4;
    *out = v;
    return true;
}

/* p->pos is just past the backslash. */
static bool parse_escape(parser *p)
{
    size_t at = p->pos - 1;
    if (p->pos >= p->len)
        return fail_at(p, at, "unterminated escape");
    unsigned char e = p->s[p->pos++];
    switch (e) {
    case '"': case '\\': case '/': put_byte(p, e); return true;
    case 'b': put_byte(p, '\b'); return true;
    case 'f': put_byte(p, '\f'); return true;
    case 'n': put_byte(p, '\n'); return true;
    case 'r': put_byte(p, '\r'); return true;
    case 't': put_byte(p, '\t'); return true;
    case 'u': break;
    default: return fail_at(p, at, "invalid escape");
    }
    uint32_t cp;
    if (!read_hex4(p, &cp))
        return false;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return fail_at(p, at, "\\u escape is a lone low surrogate");
    if (cp >= 0xd800 && cp <= 0xdbff) {          /* a high surrogate: its low half must follow */
        uint32_t lo;
        if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
            return fail_at(p, at, "\\u escape is a high surrogate without its low half");
        p->pos += 2;
        if (!read_hex4(p, &lo))
            return false;
        if (lo < 0xdc00 || lo > 0xdfff)
            return fail_at(p, at, "\\u escape is a high surrogate without its low half");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
    }
    if (cp == 0)
        return fail_at(p, at, "\\u0000 is not supported in strings");
    put_utf8(p, cp);
    return true;
}

/* p->pos is at the opening quote. */
static bool parse_string(parser *p)
{
    size_t start = p->pos, first_byte = p->str_bytes;
    int idx;
    if (!add_tok(p, JSON_STRING, start, &idx))
        return false;
    p->pos++;
    for (;;) {
        if (p->pos >= p->len)
            return fail_at(p, start, "unterminated string");
        unsigned char c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            break;
        }
        if (c < 0x20)
            return fail_at(p, p->pos, "unescaped control character in a string");
        if (c == '\\') {
            p->pos++;
            if (!parse_escape(p))
                return false;
            continue;
        }
        size_t n = utf8_seq_len(p->s + p->pos, p->len - p->pos);
        if (n == 0)
            return fail_at(p, p->pos, "invalid UTF-8 in a string");
        for (size_t i = 0; i < n; i++)
            put_byte(p, p->s[p->pos + i]);
        p->pos += n;
    }
    put_byte(p, 0);
    if (p->toks) {
        p->toks[idx].str = p->strs + first_byte;
        p->toks[idx].len = p->str_bytes - first_byte - 1;
    }
    return true;
}

static bool is_digit(parser *p)
{
    return p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9';
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?  Integers must fit int64; the value of other
 * numbers is not computed (safetensors needs none), only their text is kept. */
static bool parse_number(parser *p)
{
    size_t start = p->pos;
    bool neg = false, is_int = true, too_big = false;
    uint64_t mag = 0;
    if (p->s[p->pos] == '-') {
        neg = true;
        p->pos++;
    }
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    if (!is_digit(p))
        return fail_at(p, p->pos, "expected a digit");
    if (p->s[p->pos] == '0') {
        p->pos++;
        if (is_digit(p))
            return fail_at(p, start, "number with a leading zero");
    } else {
        while (is_digit(p)) {
            uint64_t d = (uint64_t)(p->s[p->pos++] - '0');
            if (mag > (limit - d) / 10)
                too_big = true;
            else
                mag = mag * 10 + d;
        }
    }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        p->pos++;
        if (!is_digit(p))
            return fail_at(p, p->pos, "expected a digit after '.'");
        while (is_digit(p))
            p->pos++;
        is_int = false;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (!is_digit(p))
            return fail_at(p, p->pos, "expected a digit in the exponent");
        while (is_digit(p))
            p->pos++;
        is_int = false;
    }
    if (is_int && too_big) {
        if (!p->big_ints)
            return fail_at(p, start, "integer does not fit in int64");
        is_int = false;   /* kept as text, like a fraction: a reader that needs an int refuses */
    }
    int idx;
    if (!add_tok(p, JSON_NUMBER, start, &idx))
        return false;
    if (p->toks) {
        json_tok *t = &p->toks[idx];
        t->is_int = is_int;
        if (is_int)
            t->ival = !neg ? (int64_t)mag : mag == limit ? INT64_MIN : -(int64_t)mag;
        t->str = (const char *)p->s + start;
        t->len = p->pos - start;
    }
    return true;
}

static bool parse_literal(parser *p)
{
    static const struct { const char *text; json_type type; } lits[] = {
        {"true", JSON_TRUE}, {"false", JSON_FALSE}, {"null", JSON_NULL},
    };
    for (size_t i = 0; i < sizeof lits / sizeof lits[0]; i++) {
        size_t n = strlen(lits[i].text);
        if (p->len - p->pos >= n && memcmp(p->s + p->pos, lits[i].text, n) == 0) {
            int idx;
            if (!add_tok(p, lits[i].type, p->pos, &idx))
                return false;
            p->pos += n;
            return true;
        }
    }
    return fail_at(p, p->pos, "unexpected character, expected a value");
}

/* An object key and its colon. */
static bool parse_key(parser *p)
{
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != '"')
        return fail_at(p, p->pos, "expected a string key");
    if (!parse_string(p))
        return false;
    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != ':')
        return fail_at(p, p->pos, "expected ':' after an object key");
    p->pos++;
    return true;
}

/* The whole text, iteratively: open containers live on a fixed stack. */
static bool parse_text(parser *p)
{
    int open_idx[JSON_MAX_DEPTH];        /* token index of each open container */
    int n_items[JSON_MAX_DEPTH];         /* its elements / members so far */
    unsigned char closer[JSON_MAX_DEPTH];/* '}' or ']' */
    int depth = 0;
    bool have_value = false;             /* a value just ended inside the top container */

    for (;;) {
        skip_ws(p);
        if (!have_value) {
            if (p->pos >= p->len)
                return fail_at(p, p->pos, "unexpected end of input, expected a value");
            unsigned char c = p->s[p->pos];
            if (c == '{' || c == '[') {
                if (depth == JSON_MAX_DEPTH)
                    return fail_at(p, p->pos, "nesting deeper than 64 levels");
                int idx;
                if (!add_tok(p, c == '{' ? JSON_OBJECT : JSON_ARRAY, p->pos, &idx))
                    return false;
                p->pos++;
                open_idx[depth] = idx;
                n_items[depth] = 0;
                closer[depth] = c == '{' ? '}' : ']';
                depth++;
                skip_ws(p);
                if (p->pos < p->len && p->s[p->pos] == closer[depth - 1]) {
                    p->pos++;                /* empty: it is a finished value of its parent */
                    depth--;
                    have_value = true;
                } else if (c == '{' && !parse_key(p)) {
                    return false;
                }
                continue;
            }
            bool ok = c == '"' ? parse_string(p)
                    : (c == '-' || (c >= '0' && c <= '9')) ? parse_number(p)
                    : parse_literal(p);
            if (!ok)
                return false;
            have_value = true;
            continue;
        }
        if (depth == 0) {
            if (p->pos != p->len)
                return fail_at(p, p->pos, "trailing characters after the JSON value");
            return true;
        }
        int top = depth - 1;
        n_items[top]++;
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            if (closer[top] == '}' && !parse_key(p))
                return false;
            have_value = false;
        } else if (p->pos < p->len && p->s[p->pos] == closer[top]) {
            p->pos++;
            if (p->toks) {
                p->toks[open_idx[top]].n = n_items[top];
                p->toks[open_idx[top]].end = p->n_toks;
            }
            depth--;                         /* the parent counts it on the next turn */
        } else {
            return fail_at(p, p->pos, closer[top] == '}' ? "expected ',' or '}' in an object"
                                                         : "expected ',' or ']' in an array");
        }
    }
}

dattn_status json_parse(const char *text, size_t len, json_doc **out, json_error *err)
{
    return json_parse_ex(text, len, false, out, err);
}

dattn_status json_parse_ex(const char *text, size_t len, bool big_ints, json_doc **out,
                           json_error *err)
{
    json_error spare;
    if (!err)
        err = &spare;
    *out = NULL;
    parser count = {.s = (const unsigned char *)text, .len = len, .err = err, .big_ints = big_ints};
    if (!parse_text(&count))
        return dattn_fail(DATTN_E_FORMAT, "json: %s at byte %zu", err->what, err->offset);

    size_t n = (size_t)count.n_toks;
    if (n > (SIZE_MAX - sizeof(doc_block) - count.str_bytes) / sizeof(json_tok))
        return dattn_fail(DATTN_E_NOMEM, "json: %zu tokens do not fit in memory", n);
    doc_block *b = dattn_alloc(sizeof(doc_block) + n * sizeof(json_tok) + count.str_bytes,
                               "JSON tokens");
    if (!b)
        return DATTN_E_NOMEM;
    parser fill = {.s = count.s, .len = len, .err = err, .toks = b->toks,
                   .strs = (char *)(b->toks + n), .big_ints = big_ints};
    if (!parse_text(&fill)) {                /* cannot happen: the same text parsed above */
        dattn_free(b);
        return dattn_fail(DATTN_E_FORMAT, "json: %s at byte %zu", err->what, err->offset);
    }
    b->doc.n_toks = count.n_toks;
    b->doc.toks = b->toks;
    *out = &b->doc;
    return DATTN_OK;
}

void json_free(json_doc *doc)
{
    dattn_free(doc);        /* the doc is the first member of its doc_block */
}

const char *json_type_name(json_type t)
{
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_FALSE: case JSON_TRUE: return "a boolean";
    case JSON_NUMBER: return "a number";
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "an array";
    case JSON_OBJECT: return "an object";
    }
    return "unknown";
}

size_t json_escape(char *dst, size_t cap, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    /* ch is evaluated only when it fits, so it must have no side effects. */
#define PUT(ch) do { if (n < cap) dst[n] = (char)(ch); n++; } while (0)
    PUT('"');
    for (const unsigned char *u = (const unsigned char *)s; *u;) {
        if (*u == '"' || *u == '\\') {
            PUT('\\');
            PUT(*u);
            u++;
        } else if (*u < 0x20) {
            PUT('\\'); PUT('u'); PUT('0'); PUT('0');
            PUT(hex[*u >> 4]);
            PUT(hex[*u & 15]);
            u++;
        } else {
            size_t k = utf8_seq_len(u, 4);   /* safe: it stops at the NUL, not a continuation */
            if (k == 0)
                return (size_t)-1;
            for (; k > 0; k--, u++)
                PUT(*u);
        }
    }
    PUT('"');
#undef PUT
    return n;
}
