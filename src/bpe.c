/* BPE encoding (DESIGN §6; see bpe.h), in Hugging Face's order: added tokens are split out of
 * the raw text (those with normalized=false), the rest is normalized (the file's steps) and split
 * on the normalized added tokens, each remaining piece is pre-tokenized into words (a regex for
 * byte-level BPE; Metaspace or none for SentencePiece-style), and each word's symbols (bytes, or
 * characters with byte fallback) are merged pair by pair, lowest rank first (leftmost on ties),
 * as tokenizers' Word does. */
#include "bpe.h"

#include <limits.h>
#include <string.h>

#include "alloc.h"
#include "status.h"
#include "unicode.h"

uint64_t bpe_hash_bytes(const char *bytes, size_t len)
{
    uint64_t h = 0xcbf29ce484222325u;      /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)bytes[i]) * 0x100000001b3u;
    return h ^ h >> 29;
}

uint64_t bpe_hash_pair(int32_t a, int32_t b)
{
    /* splitmix64's finalizer: the low bits (the slot) depend on both halves */
    uint64_t h = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    h = (h ^ h >> 30) * 0xbf58476d1ce4e5b9u;
    h = (h ^ h >> 27) * 0x94d049bb133111ebu;
    return h ^ h >> 31;
}

int32_t bpe_vocab_find(const bpe *b, const char *bytes, size_t len)
{
    size_t mask = b->vocab_cap - 1;
    for (size_t i = bpe_hash_bytes(bytes, len) & mask;; i = (i + 1) & mask) {
        int32_t id = b->vocab_hash[i];
        if (id < 0)
            return -1;
        if (b->tok_len[id] == len && !memcmp(b->pool + b->tok_offset[id], bytes, len))
            return id;
    }
}

static const bpe_merge *find_merge(const bpe *b, int32_t x, int32_t y)
{
    size_t mask = b->merge_cap - 1;
    for (size_t i = bpe_hash_pair(x, y) & mask;; i = (i + 1) & mask) {
        const bpe_merge *m = &b->merge_hash[i];
        if (m->a < 0)
            return NULL;
        if (m->a == x && m->b == y)
            return m;
    }
}

/* ---- the output and the per-word scratch ---------------------------------------------------- */

typedef struct heap_item {
    int32_t rank, pos, out;
} heap_item;

typedef struct encoder {
    const bpe *b;
    int32_t *ids;
    int max;
    size_t n;                  /* ids the text needs so far */
    size_t cap;                /* symbols the scratch holds */
    int32_t *sym, *prev, *next;
    heap_item *heap;           /* [3 * cap]: n-1 first pairs, at most 2 more per merge */
    size_t n_heap;
} encoder;

static void emit(encoder *e, int32_t id)
{
    if (e->n < (size_t)e->max)
        e->ids[e->n] = id;
    e->n++;
}

static dattn_status grow(encoder *e, size_t n)
{
    if (n <= e->cap)
        return DATTN_OK;
    size_t cap = n < 256 ? 256 : n;
    if (cap > SIZE_MAX / (3 * sizeof(int32_t) + 3 * sizeof(heap_item)))
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: a word of %zu bytes is too long", n);
    dattn_free(e->sym);
    e->sym = dattn_alloc(cap * (3 * sizeof(int32_t) + 3 * sizeof(heap_item)), "BPE word scratch");
    e->cap = e->sym ? cap : 0;
    if (!e->sym)
        return DATTN_E_NOMEM;
    e->heap = (heap_item *)(e->sym + 3 * cap);    /* int32 x 3cap keeps 4-byte alignment */
    e->prev = e->sym + cap;
    e->next = e->sym + 2 * cap;
    return DATTN_OK;
}

static int item_less(const heap_item *x, const heap_item *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(encoder *e, const bpe_merge *m, int32_t pos)
{
    size_t i = e->n_heap++;
    heap_item it = {m->rank, pos, m->out};
    while (i > 0 && item_less(&it, &e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = it;
}

static heap_item heap_pop(encoder *e)
{
    heap_item top = e->heap[0], last = e->heap[--e->n_heap];
    size_t i = 0, n = e->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && item_less(&e->heap[c + 1], &e->heap[c]))
            c++;
        if (!item_less(&e->heap[c], &last))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n)
        e->heap[i] = last;
    return top;
}

/* Merges e->sym[0..n) pair by pair, lowest rank first (leftmost on ties), as tokenizers' Word
 * does, then emits the symbols left. */
static void merge_and_emit(encoder *e, size_t n)
{
    const bpe *b = e->b;
    for (size_t i = 0; i < n; i++) {
        e->prev[i] = (int32_t)i - 1;
        e->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    e->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const bpe_merge *m = find_merge(b, e->sym[i], e->sym[i + 1]);
        if (m)
            heap_push(e, m, (int32_t)i);
    }
    while (e->n_heap) {
        heap_item it = heap_pop(e);
        int32_t p = it.pos, q = e->next[p];
        if (e->sym[p] < 0 || q < 0)
            continue;
        /* Stale entries (a side was merged since) no longer name this pair's result. */
        const bpe_merge *m = find_merge(b, e->sym[p], e->sym[q]);
        if (!m || m->out != it.out)
            continue;
        e->sym[p] = m->out;
        e->sym[q] = -1;
        e->next[p] = e->next[q];
        if (e->next[q] >= 0)
            e->prev[e->next[q]] = p;
        if (e->prev[p] >= 0 && (m = find_merge(b, e->sym[e->prev[p]], e->sym[p])))
            heap_push(e, m, e->prev[p]);
        if (e->next[p] >= 0 && (m = find_merge(b, e->sym[p], e->sym[e->next[p]])))
            heap_push(e, m, p);
    }
    if (n)
        for (int32_t p = 0; p >= 0; p = e->next[p])
            emit(e, e->sym[p]);
}

/* A word the vocabulary holds whole is one token (ignore_merges; a single byte): 1 if emitted. */
static int emit_whole(encoder *e, const char *s, size_t n, bool whole)
{
    int32_t id = whole ? bpe_vocab_find(e->b, s, n) : -1;
    if (id >= 0)
        emit(e, id);
    return id >= 0;
}

/* Byte-level: a word's bytes, each its own token first. */
static dattn_status encode_word(encoder *e, const char *s, size_t n)
{
    const bpe *b = e->b;
    if (emit_whole(e, s, n, b->ignore_merges || n == 1))
        return DATTN_OK;
    dattn_status st = grow(e, n);
    if (st != DATTN_OK)
        return st;
    for (size_t i = 0; i < n; i++) {
        int32_t id = b->byte_id[(unsigned char)s[i]];
        if (id < 0)
            return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: byte 0x%02x has no token in the "
                              "vocabulary", (unsigned char)s[i]);
        e->sym[i] = id;
    }
    merge_and_emit(e, n);
    return DATTN_OK;
}

/* SentencePiece-style: a word's characters, each its vocabulary token, or the <0xXX> tokens of
 * its bytes (byte_fallback), or the unknown token (one for a run of them with fuse_unk). */
static dattn_status encode_chars(encoder *e, const char *s, size_t n)
{
    const bpe *b = e->b;
    if (emit_whole(e, s, n, b->ignore_merges))
        return DATTN_OK;
    dattn_status st = grow(e, n);
    if (st != DATTN_OK)
        return st;
    size_t k = 0;
    bool last_unk = false;
    for (size_t i = 0; i < n;) {
        size_t cl;
        uint32_t cp = uni_decode(s + i, n - i, &cl);
        int32_t id = bpe_vocab_find(b, s + i, cl);
        bool known = id >= 0;
        if (known) {
            e->sym[k++] = id;
        } else if (b->byte_fallback) {
            known = true;
            for (size_t j = 0; j < cl; j++)
                known &= b->byte_token[(unsigned char)s[i + j]] >= 0;
            for (size_t j = 0; known && j < cl; j++)
                e->sym[k++] = b->byte_token[(unsigned char)s[i + j]];
        }
        if (!known) {
            if (b->unk_id < 0)
                return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: the character U+%04X is not "
                                  "in the vocabulary, which has no unk_token", (unsigned)cp);
            if (!(b->fuse_unk && last_unk))
                e->sym[k++] = b->unk_id;
        }
        last_unk = !known;
        i += cl;
    }
    merge_and_emit(e, k);
    return DATTN_OK;
}

/* Metaspace: ' ' becomes the character, which is put before the piece by the prepend scheme
 * (first: only for a piece at the start of the text), and with split each word starts at one. */
static dattn_status encode_metaspace(encoder *e, const char *s, size_t n, bool at_start)
{
    const bpe *b = e->b;
    size_t m = b->meta_len, spaces = 0;
    for (size_t i = 0; i < n; i++)
        spaces += s[i] == ' ';
    if (n > (SIZE_MAX / 2) / (m + 1))
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: a text of %zu bytes is too long", n);
    char *t = dattn_alloc(n + spaces * m + m + 1, "Metaspace text");
    if (!t)
        return DATTN_E_NOMEM;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(t + w, b->meta_char, m);
            w += m;
        } else {
            t[w++] = s[i];
        }
    }
    bool starts = w >= m && !memcmp(t, b->meta_char, m);
    if (!starts && (b->metaspace == META_ALWAYS || (b->metaspace == META_FIRST && at_start))) {
        memmove(t + m, t, w);
        memcpy(t, b->meta_char, m);
        w += m;
    }
    dattn_status st = DATTN_OK;
    size_t from = 0;
    for (size_t i = 1; b->metaspace_split && i + m <= w && st == DATTN_OK; i++)
        if (!memcmp(t + i, b->meta_char, m)) {
            st = encode_chars(e, t + from, i - from);
            from = i;
            i += m - 1;
        }
    if (st == DATTN_OK && from < w)
        st = encode_chars(e, t + from, w - from);
    dattn_free(t);
    return st;
}

/* One piece between added tokens: the pre-tokenizer's words, each through BPE. at_start: the
 * piece begins the text (Metaspace's "first" scheme). */
static dattn_status encode_piece(encoder *e, const char *s, size_t n, bool at_start)
{
    const bpe *b = e->b;
    if (!n)
        return DATTN_OK;
    if (b->sentencepiece)
        return b->metaspace != META_NONE ? encode_metaspace(e, s, n, at_start)
                                         : encode_chars(e, s, n);
    char *spaced = NULL;
    if (b->add_prefix_space && s[0] != ' ') {
        if (!(spaced = dattn_alloc(n + 1, "BPE prefix space")))
            return DATTN_E_NOMEM;
        spaced[0] = ' ';
        memcpy(spaced + 1, s, n);
        s = spaced;
        n++;
    }
    dattn_status st = DATTN_OK;
    for (size_t pos = 0; pos < n && st == DATTN_OK;) {
        size_t end = pretok_next(b->pretok, s, n, pos);
        st = encode_word(e, s + pos, end - pos);
        pos = end;
    }
    dattn_free(spaced);
    return st;
}

static int is_space_at(const char *s, size_t len, size_t pos, size_t *n)
{
    return uni_class(uni_decode(s + pos, len - pos, n)) == UNI_SPACE;
}

/* The leftmost-longest added token with this `normalized` flag in s[from..len): its index and
 * span [*ms, *me), widened over white space by lstrip / rstrip. 0 if there is none. */
static int find_added(const bpe *b, const char *s, size_t from, size_t len, bool normalized,
                      size_t *ms, size_t *me)
{
    for (size_t p = from; p < len; p++) {
        unsigned char c = (unsigned char)s[p];
        for (int k = b->added_first[c]; k < b->added_first[c + 1]; k++) {
            const bpe_added *a = &b->added[b->added_order[k]];
            if (a->normalized != normalized || a->len > len - p ||
                memcmp(s + p, b->pool + a->offset, a->len))
                continue;
            size_t start = p, end = p + a->len, n;
            if (a->lstrip) {
                /* back over the white space just before (a UTF-8 step back at a time) */
                while (start > from) {
                    size_t q = start - 1;
                    while (q > from && ((unsigned char)s[q] & 0xC0) == 0x80)
                        q--;
                    if (!is_space_at(s, len, q, &n) || q + n != start)
                        break;
                    start = q;
                }
            }
            if (a->rstrip)
                while (end < len && is_space_at(s, len, end, &n))
                    end += n;
            *ms = start;
            *me = end;
            return b->added_order[k] + 1;
        }
    }
    return 0;
}

/* Text between raw-matched added tokens: normalize, split on the normalized ones. at_start: the
 * gap begins the text. */
static dattn_status encode_gap(encoder *e, const char *s, size_t n, bool at_start)
{
    const bpe *b = e->b;
    if (!n)
        return DATTN_OK;
    char *norm = NULL;
    if (b->n_norm) {
        dattn_status st = bpe_normalize(b, s, n, &norm, &n);
        if (st != DATTN_OK)
            return st;
        s = norm;
    }
    dattn_status st = DATTN_OK;
    size_t pos = 0, ms, me;
    int k;
    while (st == DATTN_OK && (k = find_added(b, s, pos, n, true, &ms, &me))) {
        if ((st = encode_piece(e, s + pos, ms - pos, at_start && pos == 0)) == DATTN_OK)
            emit(e, b->added[k - 1].id);
        pos = me;
    }
    if (st == DATTN_OK)
        st = encode_piece(e, s + pos, n - pos, at_start && pos == 0);
    dattn_free(norm);
    return st;
}

dattn_status bpe_encode(const bpe *b, const char *text, size_t len, bool add_special,
                        int32_t *ids, int max, int *n)
{
    encoder e = {.b = b, .ids = ids, .max = max};
    *n = 0;
    if (add_special)
        for (int i = 0; i < b->n_prefix; i++)
            emit(&e, b->prefix[i]);
    dattn_status st = DATTN_OK;
    size_t pos = 0, ms, me;
    int k;
    while (st == DATTN_OK && (k = find_added(b, text, pos, len, false, &ms, &me))) {
        if ((st = encode_gap(&e, text + pos, ms - pos, pos == 0)) == DATTN_OK)
            emit(&e, b->added[k - 1].id);
        pos = me;
    }
    if (st == DATTN_OK)
        st = encode_gap(&e, text + pos, len - pos, pos == 0);
    if (st == DATTN_OK && add_special)
        for (int i = 0; i < b->n_suffix; i++)
            emit(&e, b->suffix[i]);
    dattn_free(e.sym);
    if (st != DATTN_OK)
        return st;
    if (e.n > INT_MAX)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: the text is %zu tokens, more than an "
                          "int counts", e.n);
    *n = (int)e.n;
    if (e.n > (size_t)max)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: the text is %zu tokens, the buffer "
                          "holds %d", e.n, max);
    return DATTN_OK;
}
