/* A small, bounded JSON parser for safetensors headers (DESIGN §6), plus the string escaper the
 * writer uses. The parser makes no recursive calls and allocates one block: a flat array of
 * tokens in document order (a container's subtree follows it) and the decoded strings.
 * Strictly RFC 8259: UTF-8 checked, no trailing commas, no trailing garbage, depth <= 64. */
#ifndef DATTN_JSON_H
#define DATTN_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dattn.h"

#define JSON_MAX_DEPTH 64

typedef enum json_type {
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
} json_type;

/* An object of n members is followed by 2n subtrees: key (a string), value, key, value, ...
 * An array of n elements is followed by n subtrees. `end` jumps over a whole subtree. */
typedef struct json_tok {
    json_type type;
    int n;              /* array: elements; object: members */
    int end;            /* index of the token just past this value's subtree (its next sibling) */
    bool is_int;        /* number: written without fraction or exponent (it then fits int64) */
    int64_t ival;       /* number: the value, when is_int */
    size_t offset;      /* byte offset of the value in the text, for messages */
    size_t len;         /* string: decoded bytes (no NUL); number: bytes of its text */
    const char *str;    /* string: decoded UTF-8, NUL-terminated; number: its text (no NUL) */
} json_tok;

typedef struct json_doc {
    int n_toks;
    json_tok *toks;     /* [n_toks]; toks[0] is the top-level value */
} json_doc;

/* Where and why a parse failed: offset is a byte offset into the text. */
typedef struct json_error {
    size_t offset;
    const char *what;   /* a static string, e.g. "expected ':' after an object key" */
} json_error;

/* Parse text[0..len) (need not be NUL-terminated; the caller keeps it alive while the doc lives,
 * as numbers point into it). Returns DATTN_E_FORMAT with *err filled and a message set,
 * or DATTN_E_NOMEM. Strings holding \u0000 are rejected: they are handed out as C strings. */
dattn_status json_parse(const char *text, size_t len, json_doc **out, json_error *err);
/* The same; big_ints: an integer past int64 is a number with is_int false (kept as text) rather
 * than an error. For the files Python writes (config.json, tokenizer_config.json: transformers
 * writes model_max_length = 1e30 as an integer); safetensors headers keep the strict parse. */
dattn_status json_parse_ex(const char *text, size_t len, bool big_ints, json_doc **out,
                           json_error *err);
void json_free(json_doc *doc);

/* "an object", "a string", "null", ... for messages. */
const char *json_type_name(json_type t);

/* Write s as a quoted JSON string into dst (at most cap bytes, no NUL added) and return the
 * bytes it needs, so a NULL dst measures. Returns (size_t)-1 if s is not valid UTF-8. */
size_t json_escape(char *dst, size_t cap, const char *s);

#endif
