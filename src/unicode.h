/* Unicode for the BPE tokenizer (DESIGN §6): lenient UTF-8 decoding, the classes the
 * pre-tokenizer regexes test (\p{L}, \p{N}, \s) and NFC, from tables generated at build time
 * (tools/gen_unicode.py -> unicode_tables.c). */
#ifndef DATTN_UNICODE_H
#define DATTN_UNICODE_H

#include <stddef.h>
#include <stdint.h>

#include "dattn.h"

/* A byte that starts no valid UTF-8 sequence decodes as UNI_RAW + byte: outside Unicode, of
 * class "other", never normalized, and encoded back as the byte itself. So any text survives. */
#define UNI_RAW 0x110000u

enum { UNI_OTHER = 0, UNI_LETTER = 1, UNI_NUMBER = 2, UNI_SPACE = 3 };

typedef struct uni_range {
    uint32_t lo, hi;
    uint8_t value;
} uni_range;

typedef struct uni_decomp {
    uint32_t cp;
    uint16_t offset, len;      /* into uni_decomp_pool */
} uni_decomp;

typedef struct uni_comp {
    uint32_t a, b, c;          /* a + b compose to c */
} uni_comp;

extern const char uni_version[];
extern const uni_range uni_class_ranges[];
extern const int uni_n_class_ranges;
extern const uni_range uni_ccc_ranges[];
extern const int uni_n_ccc_ranges;
extern const uni_decomp uni_decomps[];
extern const int uni_n_decomps;
extern const uint32_t uni_decomp_pool[];
extern const uni_comp uni_comps[];
extern const int uni_n_comps;

/* The code point at s[0..len) (len >= 1) and its byte length in *n; an invalid or truncated
 * sequence gives UNI_RAW + s[0] with *n = 1. */
uint32_t uni_decode(const char *s, size_t len, size_t *n);
/* UTF-8 bytes of cp into buf (4 bytes room); returns how many. */
size_t uni_encode(uint32_t cp, char *buf);
int uni_class(uint32_t cp);
int uni_ccc(uint32_t cp);

/* NFC of text[0..len) into a new buffer (dattn_alloc; the caller frees it with dattn_free),
 * *out_len bytes, NUL-terminated. Invalid bytes pass through unchanged. */
dattn_status uni_nfc(const char *text, size_t len, char **out, size_t *out_len);

#endif
