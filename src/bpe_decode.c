/* Decoding ids back to text (DESIGN §6; see bpe.h's bpe_decode). Byte-level BPE: each token's
 * bytes (added tokens' contents go through the GPT-2 byte map when all their characters are in
 * it, as Hugging Face's ByteLevel decoder does). SentencePiece-style BPE: the tokens' strings go
 * through the file's decoder steps in order, each step on the list of token strings, as
 * Hugging Face's decoders run them (decode_chain): Replace, ByteFallback (<0xXX> -> the byte),
 * Fuse (one string), Strip (characters cut per string) and Metaspace. */
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "bpe.h"
#include "status.h"
#include "unicode.h"

/* The token strings while the steps run: piece i is text[off[i] .. off[i] + len[i]). */
typedef struct pieces {
    int n;
    size_t *off, *len;
    char *text;
    size_t used;
} pieces;

static void pieces_free(pieces *p)
{
    dattn_free(p->off);
    dattn_free(p->text);
    p->off = p->len = NULL;
    p->text = NULL;
}

static dattn_status pieces_make(pieces *p, int n, size_t text_cap)
{
    p->n = n;
    p->used = 0;
    p->off = dattn_alloc(sizeof(size_t) * 2 * ((size_t)n + 1), "decoder pieces");
    p->text = dattn_alloc(text_cap + 1, "decoded text");
    if (!p->off || !p->text) {
        pieces_free(p);
        return DATTN_E_NOMEM;
    }
    p->len = p->off + n + 1;
    return DATTN_OK;
}

static void piece_put(pieces *p, int i, const char *s, size_t n)
{
    memcpy(p->text + p->used, s, n);
    p->off[i] = p->used;
    p->len[i] = n;
    p->used += n;
}

/* "<0xXX>" (hex digits, either case): the byte, else -1. */
static int byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
                c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* One step over every piece, into a new list. stream: the pieces continue a text. */
static dattn_status run_step(const bpe *b, const bpe_step *st, bool fused_before, bool stream,
                             const pieces *in, pieces *out)
{
    const char *a = b->step_text + st->a_off, *r = b->step_text + st->b_off;
    size_t cap = in->used;
    if (st->kind == DEC_REPLACE && st->b_len > st->a_len) {
        size_t grow = st->b_len - st->a_len;
        if (in->used > (SIZE_MAX / 2) / (grow + 1))
            return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: the decoded text is too long");
        cap = in->used + in->used * grow;
    }
    dattn_status status = pieces_make(out, st->kind == DEC_FUSE ? 1 : in->n, cap);
    if (status != DATTN_OK)
        return status;
    if (st->kind == DEC_FUSE) {
        out->off[0] = 0;
        for (int i = 0; i < in->n; i++) {
            memcpy(out->text + out->used, in->text + in->off[i], in->len[i]);
            out->used += in->len[i];
        }
        out->len[0] = out->used;
        return DATTN_OK;
    }
    for (int i = 0; i < in->n; i++) {
        const char *s = in->text + in->off[i];
        size_t n = in->len[i], w0 = out->used;
        out->off[i] = w0;
        if (st->kind == DEC_BYTE_FALLBACK) {
            int v = byte_token(s, n);
            if (v >= 0) {
                out->text[out->used++] = (char)v;
                out->len[i] = 1;
                continue;
            }
            piece_put(out, i, s, n);
        } else if (st->kind == DEC_REPLACE || st->kind == DEC_METASPACE) {
            /* Metaspace: its character becomes a space, and in the text's first token it goes. */
            bool drop = st->kind == DEC_METASPACE && i == 0 && !stream &&
                        st->scheme != META_NEVER;
            const char *with = st->kind == DEC_REPLACE ? r : " ";
            size_t with_len = st->kind == DEC_REPLACE ? st->b_len : 1;
            for (size_t k = 0; k < n;) {
                if (k + st->a_len <= n && !memcmp(s + k, a, st->a_len)) {
                    if (!drop) {
                        memcpy(out->text + out->used, with, with_len);
                        out->used += with_len;
                    }
                    k += st->a_len;
                } else {
                    out->text[out->used++] = s[k++];
                }
            }
            out->len[i] = out->used - w0;
        } else {   /* DEC_STRIP: whole characters equal to a, from the front and the back */
            size_t from = 0, to = n;
            /* After a Fuse the piece is the whole text; a stream's piece is neither its start
             * nor its end. */
            bool cut = !(fused_before && stream);
            for (int c = 0; cut && c < st->start && from + st->a_len <= to &&
                            !memcmp(s + from, a, st->a_len); c++)
                from += st->a_len;
            for (int c = 0; cut && c < st->stop && to >= from + st->a_len &&
                            !memcmp(s + to - st->a_len, a, st->a_len); c++)
                to -= st->a_len;
            piece_put(out, i, s + from, to - from);
        }
    }
    return DATTN_OK;
}

/* The GPT-2 byte map, reversed (code point -> byte), for added tokens' contents. */
static int char_to_byte(uint32_t cp)
{
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return (int)cp;
    if (cp < 256 || cp > 323)
        return -1;
    int k = 256;   /* the other 68 bytes take U+0100.. in byte order */
    for (int c = 0; c < 256; c++) {
        bool printable = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || c >= 174;
        if (!printable && k++ == (int)cp)
            return c;
    }
    return -1;
}

/* Byte-level: an added token's content through the byte map (raw when a character is not in
 * it); into dst (room for n), returns the length. */
static size_t level_decode(const char *s, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k;
        int v = char_to_byte(uni_decode(s + i, n - i, &k));
        if (v < 0) {
            memcpy(dst, s, n);
            return n;
        }
        dst[o++] = (char)v;
        i += k;
    }
    return o;
}

dattn_status bpe_check_id(const bpe *b, int32_t id)
{
    if (id < 0 || id >= b->n_ids)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: token id %d is outside the "
                          "vocabulary 0..%d", (int)id, b->n_ids - 1);
    if (b->tok_kind[id] == BPE_TOK_NONE)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: token id %d is not used by the "
                          "vocabulary", (int)id);
    return DATTN_OK;
}

dattn_status bpe_decode(const bpe *b, const int32_t *ids, int n_ids, bool stream, char *buf,
                        size_t cap, size_t *len)
{
    *len = 0;
    size_t total = 0;
    for (int i = 0; i < n_ids; i++) {
        dattn_status st = bpe_check_id(b, ids[i]);
        if (st != DATTN_OK)
            return st;
        total += b->tok_len[ids[i]];
    }
    pieces p = {0}, q = {0};
    dattn_status st = pieces_make(&p, n_ids, total);
    if (st != DATTN_OK)
        return st;
    for (int i = 0; i < n_ids; i++) {
        const char *s = b->pool + b->tok_offset[ids[i]];
        size_t n = b->tok_len[ids[i]];
        if (!b->sentencepiece && b->tok_kind[ids[i]] == BPE_TOK_ADDED) {
            p.off[i] = p.used;
            p.len[i] = level_decode(s, n, p.text + p.used);
            p.used += p.len[i];
        } else {
            piece_put(&p, i, s, n);
        }
    }
    bool fused = false;
    for (int k = 0; b->sentencepiece && k < b->n_dec && st == DATTN_OK; k++) {
        st = run_step(b, &b->dec[k], fused, stream, &p, &q);
        fused |= b->dec[k].kind == DEC_FUSE;
        pieces_free(&p);
        p = q;
        q = (pieces){0};
    }
    if (st == DATTN_OK) {
        size_t n = 0;
        for (int i = 0; i < p.n; i++)
            n += p.len[i];
        *len = n;
        if (n > cap) {
            st = dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: the text is %zu bytes, the buffer "
                            "holds %zu", n, cap);
        } else {
            size_t w = 0;
            for (int i = 0; i < p.n; i++) {
                memcpy(buf + w, p.text + p.off[i], p.len[i]);
                w += p.len[i];
            }
        }
    }
    pieces_free(&p);
    return st;
}

/* One token continuing a text (bpe_decode's stream case for a single id), in two small buffers
 * instead of the general lists: -1 when a step outgrows them (the caller then takes the general
 * path), else the length. */
enum { ONE_CAP = 1024 };

static long decode_one(const bpe *b, const char *s, size_t n, char out[ONE_CAP])
{
    char tmp[ONE_CAP];
    if (n > ONE_CAP)
        return -1;
    memcpy(out, s, n);
    bool fused = false;
    for (int k = 0; k < b->n_dec; k++) {
        const bpe_step *st = &b->dec[k];
        const char *a = b->step_text + st->a_off;
        size_t w = 0;
        if (st->kind == DEC_FUSE) {
            fused = true;
            continue;
        }
        if (st->kind == DEC_BYTE_FALLBACK) {
            int v = byte_token(out, n);
            if (v >= 0) {
                out[0] = (char)v;
                n = 1;
            }
            continue;
        }
        if (st->kind == DEC_STRIP) {
            if (fused)   /* cuts at the text's ends, which a stream's token is not */
                continue;
            size_t from = 0, to = n;
            for (int c = 0; c < st->start && from + st->a_len <= to &&
                            !memcmp(out + from, a, st->a_len); c++)
                from += st->a_len;
            for (int c = 0; c < st->stop && to >= from + st->a_len &&
                            !memcmp(out + to - st->a_len, a, st->a_len); c++)
                to -= st->a_len;
            memmove(out, out + from, to - from);
            n = to - from;
            continue;
        }
        /* Replace, or Metaspace (its character -> a space; not the text's first token) */
        const char *with = st->kind == DEC_REPLACE ? b->step_text + st->b_off : " ";
        size_t with_len = st->kind == DEC_REPLACE ? st->b_len : 1;
        for (size_t i = 0; i < n;) {
            if (i + st->a_len <= n && !memcmp(out + i, a, st->a_len)) {
                if (w + with_len > ONE_CAP)
                    return -1;
                memcpy(tmp + w, with, with_len);
                w += with_len;
                i += st->a_len;
            } else {
                if (w + 1 > ONE_CAP)
                    return -1;
                tmp[w++] = out[i++];
            }
        }
        memcpy(out, tmp, w);
        n = w;
    }
    return (long)n;
}

dattn_status bpe_stream_init(bpe *b)
{
    size_t total = 0;
    for (int id = 0; id < b->n_ids; id++)
        total += b->tok_len[id];
    /* No step makes a token longer, except a Replace by a longer string: then measure. */
    bool grows = false;
    for (int k = 0; k < b->n_dec; k++)
        grows |= b->dec[k].kind == DEC_REPLACE && b->dec[k].b_len > b->dec[k].a_len;
    b->stream_offset = dattn_alloc(sizeof(uint32_t) * ((size_t)b->n_ids + 1), "token stream bytes");
    if (!b->stream_offset)
        return DATTN_E_NOMEM;
    char one[ONE_CAP];
    if (grows) {
        total = 0;
        for (int id = 0; id < b->n_ids; id++) {
            size_t n = 0;
            if (b->tok_kind[id] == BPE_TOK_NONE)
                continue;
            long got = decode_one(b, b->pool + b->tok_offset[id], b->tok_len[id], one);
            if (got < 0) {
                int32_t one_id = id;
                dattn_status st = bpe_decode(b, &one_id, 1, true, NULL, 0, &n);
                if (st != DATTN_OK && st != DATTN_E_INVALID_ARG)
                    return st;
            }
            total += got >= 0 ? (size_t)got : n;
        }
    }
    if (total > UINT32_MAX - 1)
        return dattn_fail(DATTN_E_FORMAT, "tokenizer: the decoded tokens are too long");
    b->stream_pool = dattn_alloc(total + 1, "token stream bytes");
    if (!b->stream_pool)
        return DATTN_E_NOMEM;
    size_t at = 0;
    for (int id = 0; id < b->n_ids; id++) {
        b->stream_offset[id] = (uint32_t)at;
        if (b->tok_kind[id] == BPE_TOK_NONE)
            continue;
        const char *s = b->pool + b->tok_offset[id];
        size_t n = b->tok_len[id];
        if (!b->sentencepiece) {
            if (b->tok_kind[id] == BPE_TOK_ADDED) {
                at += level_decode(s, n, b->stream_pool + at);
            } else {
                memcpy(b->stream_pool + at, s, n);
                at += n;
            }
            continue;
        }
        long got = decode_one(b, s, n, one);
        if (got >= 0) {
            memcpy(b->stream_pool + at, one, (size_t)got);
            at += (size_t)got;
        } else {
            size_t len = 0;
            int32_t one_id = id;
            dattn_status st = bpe_decode(b, &one_id, 1, true, b->stream_pool + at, total - at,
                                         &len);
            if (st != DATTN_OK)
                return st;
            at += len;
        }
    }
    b->stream_offset[b->n_ids] = (uint32_t)at;
    return DATTN_OK;
}
