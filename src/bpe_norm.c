/* The normalizer of a tokenizer.json (DESIGN §6; bpe.h's steps NFC, Prepend and Replace) on one
 * piece of text, in the file's order, as Hugging Face's normalizers run them: Prepend only when
 * the piece is not empty, Replace of every occurrence of a literal pattern, left to right. */
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "bpe.h"
#include "status.h"
#include "unicode.h"

static int is_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    return 1;
}

static char *copy(const char *s, size_t n)
{
    char *c = dattn_alloc(n + 1, "normalized text");
    if (c) {
        memcpy(c, s, n);
        c[n] = '\0';
    }
    return c;
}

/* s with every occurrence of pat (non-overlapping, from the left) replaced by rep. */
static dattn_status replace_all(const char *s, size_t n, const char *pat, size_t pl,
                                const char *rep, size_t rl, char **out, size_t *out_len)
{
    size_t count = 0;
    for (size_t i = 0; i + pl <= n;) {
        if (!memcmp(s + i, pat, pl)) {
            count++;
            i += pl;
        } else {
            i++;
        }
    }
    if (rl > pl && count > (SIZE_MAX / 2 - n) / (rl - pl))
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: a text of %zu bytes grows too much "
                          "in normalization", n);
    size_t len = n + count * rl - count * pl;
    char *o = dattn_alloc(len + 1, "normalized text");
    if (!o)
        return DATTN_E_NOMEM;
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        if (i + pl <= n && !memcmp(s + i, pat, pl)) {
            memcpy(o + w, rep, rl);
            w += rl;
            i += pl;
        } else {
            o[w++] = s[i++];
        }
    }
    o[w] = '\0';
    *out = o;
    *out_len = w;
    return DATTN_OK;
}

dattn_status bpe_normalize(const bpe *b, const char *s, size_t n, char **out, size_t *out_len)
{
    char *cur = copy(s, n);
    size_t len = n;
    if (!cur)
        return DATTN_E_NOMEM;
    for (int i = 0; i < b->n_norm; i++) {
        const bpe_step *st = &b->norm[i];
        const char *a = b->step_text + st->a_off, *r = b->step_text + st->b_off;
        char *next = NULL;
        size_t next_len = 0;
        dattn_status status = DATTN_OK;
        if (st->kind == NORM_NFC) {
            if (is_ascii(cur, len))    /* ASCII is its own NFC */
                continue;
            status = uni_nfc(cur, len, &next, &next_len);
        } else if (st->kind == NORM_PREPEND) {
            if (!len)
                continue;
            next_len = st->a_len + len;
            if (!(next = dattn_alloc(next_len + 1, "normalized text"))) {
                status = DATTN_E_NOMEM;
            } else {
                memcpy(next, a, st->a_len);
                memcpy(next + st->a_len, cur, len + 1);
            }
        } else {
            status = replace_all(cur, len, a, st->a_len, r, st->b_len, &next, &next_len);
        }
        dattn_free(cur);
        if (status != DATTN_OK)
            return status;
        cur = next;
        len = next_len;
    }
    *out = cur;
    *out_len = len;
    return DATTN_OK;
}
