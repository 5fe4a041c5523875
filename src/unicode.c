/* UTF-8, character classes and NFC for the BPE tokenizer (DESIGN §6; see unicode.h). NFC is the
 * textbook algorithm (UAX #15): full canonical decomposition, canonical ordering by combining
 * class, then canonical composition; Hangul syllables are computed, not tabled. */
#include "unicode.h"

#include <string.h>

#include "alloc.h"
#include "status.h"

uint32_t uni_decode(const char *str, size_t len, size_t *n)
{
    const unsigned char *s = (const unsigned char *)str;
    unsigned char c = s[0];
    *n = 1;
    if (c < 0x80)
        return c;
    size_t need;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF)
        need = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        need = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        need = 4, cp = c & 0x07, min = 0x10000;
    else
        return UNI_RAW + c;
    if (len < need)
        return UNI_RAW + c;
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return UNI_RAW + c;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return UNI_RAW + c;
    *n = need;
    return cp;
}

size_t uni_encode(uint32_t cp, char *buf)
{
    unsigned char *b = (unsigned char *)buf;
    if (cp >= UNI_RAW) {
        b[0] = (unsigned char)(cp - UNI_RAW);
        return 1;
    }
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | cp >> 6);
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | cp >> 12);
        b[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (unsigned char)(0xF0 | cp >> 18);
    b[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    b[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    b[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

static int range_lookup(const uni_range *r, int n, uint32_t cp)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (cp < r[mid].lo)
            hi = mid - 1;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return r[mid].value;
    }
    return 0;
}

int uni_class(uint32_t cp)
{
    if (cp < 0x80) {            /* the common case without a search */
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
            return UNI_LETTER;
        if (cp >= '0' && cp <= '9')
            return UNI_NUMBER;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D))
            return UNI_SPACE;
        return UNI_OTHER;
    }
    if (cp >= UNI_RAW)
        return UNI_OTHER;
    return range_lookup(uni_class_ranges, uni_n_class_ranges, cp);
}

int uni_ccc(uint32_t cp)
{
    if (cp < 0x300 || cp >= UNI_RAW)
        return 0;
    return range_lookup(uni_ccc_ranges, uni_n_ccc_ranges, cp);
}

/* ---- NFC ---------------------------------------------------------------------------------- */

enum { S_BASE = 0xAC00, L_BASE = 0x1100, V_BASE = 0x1161, T_BASE = 0x11A7,
       L_COUNT = 19, V_COUNT = 21, T_COUNT = 28, N_COUNT = V_COUNT * T_COUNT,
       S_COUNT = L_COUNT * N_COUNT };

static const uni_decomp *find_decomp(uint32_t cp)
{
    int lo = 0, hi = uni_n_decomps - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (cp < uni_decomps[mid].cp)
            hi = mid - 1;
        else if (cp > uni_decomps[mid].cp)
            lo = mid + 1;
        else
            return &uni_decomps[mid];
    }
    return NULL;
}

/* Full canonical decomposition of cp appended at out[*n]; out has room for 32 more (no canonical
 * decomposition in Unicode is longer than 4, and depth is bounded by the tables). */
static void decompose(uint32_t cp, uint32_t *out, size_t *n, int depth)
{
    if (cp >= S_BASE && cp < S_BASE + S_COUNT) {
        uint32_t s = cp - S_BASE;
        out[(*n)++] = L_BASE + s / N_COUNT;
        out[(*n)++] = V_BASE + s % N_COUNT / T_COUNT;
        if (s % T_COUNT)
            out[(*n)++] = T_BASE + s % T_COUNT;
        return;
    }
    const uni_decomp *d = cp >= 0xC0 && cp < UNI_RAW && depth < 8 ? find_decomp(cp) : NULL;
    if (!d) {
        out[(*n)++] = cp;
        return;
    }
    for (int i = 0; i < d->len; i++)
        decompose(uni_decomp_pool[d->offset + i], out, n, depth + 1);
}

/* The primary composite of a + b, or 0. */
static uint32_t compose(uint32_t a, uint32_t b)
{
    if (a >= L_BASE && a < L_BASE + L_COUNT && b >= V_BASE && b < V_BASE + V_COUNT)
        return S_BASE + ((a - L_BASE) * V_COUNT + (b - V_BASE)) * T_COUNT;
    if (a >= S_BASE && a < S_BASE + S_COUNT && (a - S_BASE) % T_COUNT == 0 && b > T_BASE &&
        b < T_BASE + T_COUNT)
        return a + (b - T_BASE);
    int lo = 0, hi = uni_n_comps - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const uni_comp *c = &uni_comps[mid];
        if (a < c->a || (a == c->a && b < c->b))
            hi = mid - 1;
        else if (a > c->a || b > c->b)
            lo = mid + 1;
        else
            return c->c;
    }
    return 0;
}

dattn_status uni_nfc(const char *text, size_t len, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (len > (SIZE_MAX / sizeof(uint32_t) - 64) / 4)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: a text of %zu bytes is too long", len);
    /* A code point decomposes into at most 4 (checked by the generator's data: 18 is the
     * longest in Unicode for compatibility ones, 4 for canonical); 4 per input byte is safe. */
    size_t cap = 4 * len + 64;
    uint32_t *cps = dattn_alloc(cap * sizeof *cps, "NFC code points");
    char *dst = cps ? dattn_alloc(4 * len + 1, "NFC text") : NULL;
    if (!dst) {
        dattn_free(cps);
        return DATTN_E_NOMEM;
    }
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        size_t k;
        uint32_t cp = uni_decode(text + i, len - i, &k);
        i += k;
        if (n + 32 > cap)
            break;     /* cannot happen: cap covers 4 per byte, +64 */
        decompose(cp, cps, &n, 0);
    }
    /* Canonical ordering: a stable insertion sort of each run of non-starters by class. */
    for (size_t i = 1; i < n; i++) {
        int c = uni_ccc(cps[i]);
        if (!c)
            continue;
        uint32_t x = cps[i];
        size_t j = i;
        while (j > 0 && uni_ccc(cps[j - 1]) > c) {
            cps[j] = cps[j - 1];
            j--;
        }
        cps[j] = x;
    }
    /* Canonical composition: each character joins the last starter unless blocked by a
     * character between them of class 0 or of a class >= its own. */
    size_t w = 0, starter = (size_t)-1;
    int last_ccc = -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = cps[i];
        int c = uni_ccc(cp);
        if (starter != (size_t)-1 && (last_ccc < c || last_ccc == 0)) {
            uint32_t comp = compose(cps[starter], cp);
            if (comp) {
                cps[starter] = comp;
                continue;
            }
        }
        if (c == 0) {
            starter = w;
            last_ccc = 0;
        } else {
            last_ccc = c;
        }
        cps[w++] = cp;
    }
    size_t o = 0;
    for (size_t i = 0; i < w; i++)
        o += uni_encode(cps[i], dst + o);
    dst[o] = 0;
    dattn_free(cps);
    *out = dst;
    *out_len = o;
    return DATTN_OK;
}
