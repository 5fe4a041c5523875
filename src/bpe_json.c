/* Loading a Hugging Face tokenizer.json into a byte-level BPE (DESIGN §6; see bpe.h). Every field
 * this build reads is type- and range-checked, and every message names the file and the field
 * ("tokenizer.json: model.merges[17]: ..."). What the file asks for and this build cannot do is
 * DATTN_E_UNSUPPORTED naming it: no part of a tokenizer is silently skipped or approximated. */
#include "bpe.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "json.h"
#include "status.h"
#include "unicode.h"

typedef struct loader {
    const char *name;          /* the file, for messages */
    const json_tok *t;
    bpe *b;
    size_t pool_used;
    size_t *pool_room;         /* [n_added]: each added token's normalized length */
    int16_t char_byte[324];    /* GPT-2 byte map, reversed: code point -> byte, -1 none */
} loader;

static dattn_status fail(const loader *L, dattn_status st, const char *fmt, ...)
    DATTN_PRINTF(3, 4);
static dattn_status fail(const loader *L, dattn_status st, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dattn_fail(st, "%s: %s", L->name, msg);
}

/* The value under key in the object at index obj, or -1. */
static int member(const loader *L, int obj, const char *key)
{
    const json_tok *t = L->t;
    for (int k = obj + 1, m = 0; m < t[obj].n; m++, k = t[k + 1].end)
        if (!strcmp(t[k].str, key))
            return k + 1;
    return -1;
}

/* The value of a required field of the given type; -1 with the message set otherwise. */
static int need(const loader *L, int obj, const char *path, const char *key, json_type type,
                dattn_status *st)
{
    int v = member(L, obj, key);
    if (v < 0) {
        *st = fail(L, DATTN_E_FORMAT, "%s has no '%s'", path, key);
        return -1;
    }
    if (L->t[v].type != type && !(type == JSON_TRUE && L->t[v].type == JSON_FALSE)) {
        *st = fail(L, DATTN_E_FORMAT, "%s.%s is %s, expected %s", path, key,
                   json_type_name(L->t[v].type), type == JSON_TRUE ? "a boolean" :
                   json_type_name(type));
        return -1;
    }
    return v;
}

/* An optional boolean (absent: fallback). */
static dattn_status opt_bool(const loader *L, int obj, const char *path, const char *key,
                             bool fallback, bool *out)
{
    int v = member(L, obj, key);
    *out = fallback;
    if (v < 0 || L->t[v].type == JSON_NULL)
        return DATTN_OK;
    if (L->t[v].type != JSON_TRUE && L->t[v].type != JSON_FALSE)
        return fail(L, DATTN_E_FORMAT, "%s.%s is %s, expected a boolean", path, key,
                    json_type_name(L->t[v].type));
    *out = L->t[v].type == JSON_TRUE;
    return DATTN_OK;
}

/* obj's "type" string, or NULL with the message set. */
static const char *type_of(const loader *L, int obj, const char *path, dattn_status *st)
{
    if (L->t[obj].type != JSON_OBJECT) {
        *st = fail(L, DATTN_E_FORMAT, "%s is %s, expected an object", path,
                   json_type_name(L->t[obj].type));
        return NULL;
    }
    int v = need(L, obj, path, "type", JSON_STRING, st);
    return v < 0 ? NULL : L->t[v].str;
}

/* ---- the GPT-2 byte <-> unicode map ------------------------------------------------------------ */

/* Printable Latin-1 bytes stand for themselves; the other 68 take U+0100.. in byte order. */
static void byte_map_init(loader *L)
{
    for (int i = 0; i < 324; i++)
        L->char_byte[i] = -1;
    int next = 256;
    for (int c = 0; c < 256; c++) {
        bool printable = (c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174);
        L->char_byte[printable ? c : next++] = (int16_t)c;
    }
}

/* The bytes a byte-level token string stands for, into dst (room for strlen(s)); -1 if some
 * character is outside the map (then the token is its UTF-8 itself, as the decoder does). */
static long level_bytes(const loader *L, const char *s, size_t len, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n;
        uint32_t cp = uni_decode(s + i, len - i, &n);
        if (cp >= 324 || L->char_byte[cp] < 0)
            return -1;
        dst[o++] = (char)L->char_byte[cp];
        i += n;
    }
    return (long)o;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

/* ---- model.vocab ---------------------------------------------------------------------------- */

static dattn_status load_vocab(loader *L, int vocab)
{
    bpe *b = L->b;
    const json_tok *t = L->t;
    for (int k = vocab + 1, m = 0; m < t[vocab].n; m++, k = t[k + 1].end) {
        const json_tok *key = &t[k], *val = &t[k + 1];
        if (val->type != JSON_NUMBER || !val->is_int)
            return fail(L, DATTN_E_FORMAT, "model.vocab['%.60s'] is %s, expected an integer id",
                        key->str, val->type == JSON_NUMBER ? "a fraction" :
                        json_type_name(val->type));
        if (val->ival < 0 || val->ival >= b->n_ids)
            return fail(L, DATTN_E_FORMAT, "model.vocab['%.60s']: id %lld is outside 0..%d "
                        "(the vocabulary and added tokens hold %d)", key->str,
                        (long long)val->ival, b->n_ids - 1, b->n_ids);
        int32_t id = (int32_t)val->ival;
        if (b->tok_kind[id] != BPE_TOK_NONE)
            return fail(L, DATTN_E_FORMAT, "model.vocab['%.60s']: id %d is also '%.*s'", key->str,
                        (int)id, (int)(b->tok_len[id] < 60 ? b->tok_len[id] : 60),
                        b->pool + b->tok_offset[id]);
        if (!key->len)
            return fail(L, DATTN_E_FORMAT, "model.vocab: id %d is the empty string", (int)id);
        char *dst = b->pool + L->pool_used;
        /* Byte-level: the bytes the characters stand for; SentencePiece: the string itself. */
        long n = b->sentencepiece ? -1 : level_bytes(L, key->str, key->len, dst);
        bool mapped = n >= 0 || b->sentencepiece;
        if (n < 0) {
            memcpy(dst, key->str, key->len);
            n = (long)key->len;
        }
        if (b->sentencepiece && n == 6 && !memcmp(dst, "<0x", 3) && dst[5] == '>') {
            /* "<0xXX>" as Hugging Face's byte fallback spells it (upper-case hex digits) */
            static const char hex[] = "0123456789ABCDEF";
            const char *h1 = memchr(hex, dst[3], 16), *h2 = memchr(hex, dst[4], 16);
            if (h1 && h2)
                b->byte_token[(h1 - hex) * 16 + (h2 - hex)] = id;
        }
        b->tok_offset[id] = (uint32_t)L->pool_used;
        b->tok_len[id] = (uint32_t)n;
        b->tok_kind[id] = BPE_TOK_VOCAB;
        L->pool_used += (size_t)n;
        if (!mapped)
            continue;       /* byte-level: no merge can make it; it is only decoded */
        size_t mask = b->vocab_cap - 1, i = bpe_hash_bytes(dst, (size_t)n) & mask;
        for (; b->vocab_hash[i] >= 0; i = (i + 1) & mask) {
            int32_t o = b->vocab_hash[i];
            if (b->tok_len[o] == (uint32_t)n && !memcmp(b->pool + b->tok_offset[o], dst, (size_t)n))
                return fail(L, DATTN_E_FORMAT, "model.vocab['%.60s'] (id %d) is listed twice "
                            "(also id %d)", key->str, (int)id, (int)o);
        }
        b->vocab_hash[i] = id;
    }
    for (int c = 0; c < 256; c++) {
        char ch = (char)c;
        b->byte_id[c] = bpe_vocab_find(b, &ch, 1);
    }
    return DATTN_OK;
}

/* ---- model.merges --------------------------------------------------------------------------- */

/* The vocab id of a token string as merges spell it, its bytes (byte-level) or the string
 * itself (SentencePiece) written to buf ([len] room), or -1. */
static int32_t level_id(const loader *L, const char *s, size_t len, char *buf, long *n)
{
    if (L->b->sentencepiece) {
        memcpy(buf, s, len);
        *n = (long)len;
    } else {
        *n = level_bytes(L, s, len, buf);
    }
    return *n > 0 ? bpe_vocab_find(L->b, buf, (size_t)*n) : -1;
}

static dattn_status load_merges(loader *L, int merges)
{
    bpe *b = L->b;
    const json_tok *t = L->t;
    size_t longest = 0;
    for (int k = merges + 1, i = 0; i < t[merges].n; i++, k = t[k].end)
        for (int j = t[k].type == JSON_STRING ? k : k + 1; j < t[k].end; j = t[j].end)
            if (t[j].type == JSON_STRING && t[j].len > longest)
                longest = t[j].len;
    char *buf = dattn_alloc(2 * longest + 2, "BPE merge scratch");
    if (!buf)
        return DATTN_E_NOMEM;
    dattn_status st = DATTN_OK;
    for (int k = merges + 1, i = 0; i < t[merges].n; i++, k = t[k].end) {
        const char *as, *bs;
        size_t al, bl;
        if (t[k].type == JSON_STRING) {
            const char *sp = memchr(t[k].str, ' ', t[k].len);
            if (!sp || sp == t[k].str || sp + 1 == t[k].str + t[k].len ||
                memchr(sp + 1, ' ', t[k].len - (size_t)(sp + 1 - t[k].str))) {
                st = fail(L, DATTN_E_FORMAT, "model.merges[%d]: '%.60s' is not two tokens "
                          "separated by one space", i, t[k].str);
                break;
            }
            as = t[k].str;
            al = (size_t)(sp - as);
            bs = sp + 1;
            bl = t[k].len - al - 1;
        } else if (t[k].type == JSON_ARRAY && t[k].n == 2 && t[k + 1].type == JSON_STRING &&
                   t[t[k + 1].end].type == JSON_STRING) {
            as = t[k + 1].str;
            al = t[k + 1].len;
            bs = t[t[k + 1].end].str;
            bl = t[t[k + 1].end].len;
        } else {
            st = fail(L, DATTN_E_FORMAT, "model.merges[%d] is %s, expected \"a b\" or [\"a\", "
                      "\"b\"]", i, t[k].type == JSON_ARRAY ? "an array that is not two strings" :
                      json_type_name(t[k].type));
            break;
        }
        int ap = (int)(al < 60 ? al : 60), bp = (int)(bl < 60 ? bl : 60);
        long an, bn;
        int32_t a = level_id(L, as, al, buf, &an);
        int32_t c = a < 0 ? -1 : level_id(L, bs, bl, buf + an, &bn);
        if (c < 0) {
            st = fail(L, DATTN_E_FORMAT, "model.merges[%d]: '%.*s' is not a token of model.vocab",
                      i, a < 0 ? ap : bp, a < 0 ? as : bs);
            break;
        }
        int32_t out = bpe_vocab_find(b, buf, (size_t)(an + bn));
        if (out < 0) {
            st = fail(L, DATTN_E_FORMAT, "model.merges[%d]: '%.*s%.*s', the merge of '%.*s' and "
                      "'%.*s', is not in model.vocab", i, ap, as, bp, bs, ap, as, bp, bs);
            break;
        }
        size_t mask = b->merge_cap - 1, h = bpe_hash_pair(a, c) & mask;
        for (; b->merge_hash[h].a >= 0; h = (h + 1) & mask)
            if (b->merge_hash[h].a == a && b->merge_hash[h].b == c)
                break;
        if (b->merge_hash[h].a >= 0) {
            st = fail(L, DATTN_E_FORMAT, "model.merges[%d]: '%.*s %.*s' repeats model.merges[%d]",
                      i, ap, as, bp, bs, (int)b->merge_hash[h].rank);
            break;
        }
        b->merge_hash[h] = (bpe_merge){a, c, i, out};
    }
    dattn_free(buf);
    b->n_merges = t[merges].n;
    return st;
}

static dattn_status load_model(loader *L, int model)
{
    dattn_status st = DATTN_OK;
    const char *type = type_of(L, model, "model", &st);
    if (!type)
        return st;
    if (strcmp(type, "BPE"))
        return fail(L, DATTN_E_UNSUPPORTED, "model.type '%.40s' is not supported (this build "
                    "knows BPE)", type);
    int d = member(L, model, "dropout");
    if (d >= 0 && L->t[d].type != JSON_NULL)
        return fail(L, DATTN_E_UNSUPPORTED, "model.dropout: BPE dropout is not supported");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        int v = member(L, model, affixes[i]);
        if (v >= 0 && L->t[v].type != JSON_NULL &&
            (L->t[v].type != JSON_STRING || L->t[v].len))
            return fail(L, DATTN_E_UNSUPPORTED, "model.%s is set: not supported in byte-level "
                        "BPE", affixes[i]);
    }
    bpe *b = L->b;
    int unk = member(L, model, "unk_token");
    if (unk >= 0 && L->t[unk].type != JSON_NULL && L->t[unk].type != JSON_STRING)
        return fail(L, DATTN_E_FORMAT, "model.unk_token is %s, expected a string or null",
                    json_type_name(L->t[unk].type));
    if (unk >= 0 && L->t[unk].type == JSON_STRING) {
        /* the model's vocabulary, or an added token with that content */
        b->unk_id = bpe_vocab_find(b, L->t[unk].str, L->t[unk].len);
        for (int i = 0; b->unk_id < 0 && i < b->n_added; i++)
            if (b->added[i].len == L->t[unk].len &&
                !memcmp(b->pool + b->added[i].offset, L->t[unk].str, L->t[unk].len))
                b->unk_id = b->added[i].id;
        if (b->unk_id < 0)
            return fail(L, DATTN_E_FORMAT, "model.unk_token '%.60s' is not a token of the "
                        "vocabulary", L->t[unk].str);
    }
    if ((st = opt_bool(L, model, "model", "fuse_unk", false, &b->fuse_unk)) != DATTN_OK ||
        (st = opt_bool(L, model, "model", "byte_fallback", false, &b->byte_fallback)) != DATTN_OK)
        return st;
    if (b->byte_fallback && !b->sentencepiece)
        return fail(L, DATTN_E_UNSUPPORTED, "model.byte_fallback is true with a ByteLevel "
                    "pre-tokenizer: not supported (byte fallback belongs to SentencePiece-style "
                    "files, Metaspace or no pre-tokenizer)");
    if (b->byte_fallback) {
        int missing = 0;
        for (int c = 0; c < 256; c++)
            missing += b->byte_token[c] < 0;
        if (missing == 256)
            return fail(L, DATTN_E_FORMAT, "model.byte_fallback is true but model.vocab has no "
                        "<0xXX> byte tokens");
    }
    if ((st = opt_bool(L, model, "model", "ignore_merges", false, &L->b->ignore_merges)) !=
        DATTN_OK)
        return st;
    int merges = need(L, model, "model", "merges", JSON_ARRAY, &st);
    if (merges < 0)
        return st;
    L->b->merge_cap = pow2_at_least(2 * (size_t)L->t[merges].n + 2);
    L->b->merge_hash = dattn_alloc(L->b->merge_cap * sizeof(bpe_merge), "BPE merges");
    if (!L->b->merge_hash)
        return DATTN_E_NOMEM;
    for (size_t i = 0; i < L->b->merge_cap; i++)
        L->b->merge_hash[i].a = -1;
    return load_merges(L, merges);
}

/* ---- added_tokens --------------------------------------------------------------------------- */

typedef struct order_key {
    unsigned char first;
    uint32_t len;
    int index;
} order_key;

static int order_cmp(const void *x, const void *y)
{
    const order_key *a = x, *b = y;
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

static dattn_status load_added(loader *L, int arr)
{
    bpe *b = L->b;
    const json_tok *t = L->t;
    dattn_status st = DATTN_OK;
    char path[48];
    for (int k = arr + 1, i = 0; i < t[arr].n; i++, k = t[k].end) {
        snprintf(path, sizeof path, "added_tokens[%d]", i);
        if (t[k].type != JSON_OBJECT)
            return fail(L, DATTN_E_FORMAT, "%s is %s, expected an object", path,
                        json_type_name(t[k].type));
        int idv = need(L, k, path, "id", JSON_NUMBER, &st);
        int cv = idv < 0 ? -1 : need(L, k, path, "content", JSON_STRING, &st);
        if (cv < 0)
            return st;
        bpe_added *a = &b->added[i];
        bool single_word;
        if ((st = opt_bool(L, k, path, "special", false, &a->special)) != DATTN_OK ||
            (st = opt_bool(L, k, path, "normalized", !a->special, &a->normalized)) != DATTN_OK ||
            (st = opt_bool(L, k, path, "lstrip", false, &a->lstrip)) != DATTN_OK ||
            (st = opt_bool(L, k, path, "rstrip", false, &a->rstrip)) != DATTN_OK ||
            (st = opt_bool(L, k, path, "single_word", false, &single_word)) != DATTN_OK)
            return st;
        const json_tok *id = &t[idv], *content = &t[cv];
        if (!id->is_int || id->ival < 0 || id->ival >= b->n_ids)
            return fail(L, DATTN_E_FORMAT, "%s.id: %.*s is outside 0..%d", path,
                        (int)(id->len < 40 ? id->len : 40), id->str, b->n_ids - 1);
        if (!content->len)
            return fail(L, DATTN_E_FORMAT, "%s.content is empty", path);
        if (single_word)
            return fail(L, DATTN_E_UNSUPPORTED, "%s.single_word is true: not supported", path);
        a->id = (int32_t)id->ival;
        for (int j = 0; j < i; j++)
            if (b->tok_len[b->added[j].id] == content->len &&
                !memcmp(b->pool + b->tok_offset[b->added[j].id], content->str, content->len))
                return fail(L, DATTN_E_FORMAT, "%s: content '%.60s' repeats added_tokens[%d]",
                            path, content->str, j);
        int32_t tid = a->id;
        if (b->tok_kind[tid] == BPE_TOK_ADDED)
            return fail(L, DATTN_E_FORMAT, "%s.id: %d is also an earlier added token", path,
                        (int)tid);
        if (b->tok_kind[tid] == BPE_TOK_VOCAB &&
            (b->tok_len[tid] != content->len ||
             memcmp(b->pool + b->tok_offset[tid], content->str, content->len)))
            return fail(L, DATTN_E_FORMAT, "%s.id: %d is '%.60s' here and another token in "
                        "model.vocab", path, (int)tid, content->str);
        /* The content as written (what the token decodes to); a normalized token matches the
         * normalized text, so it is matched by its content through the normalizer (Hugging
         * Face's added vocabulary does the same). */
        b->tok_offset[tid] = (uint32_t)L->pool_used;
        b->tok_len[tid] = (uint32_t)content->len;
        b->tok_kind[tid] = BPE_TOK_ADDED;
        memcpy(b->pool + L->pool_used, content->str, content->len);
        a->offset = (uint32_t)L->pool_used;
        a->len = (uint32_t)content->len;
        L->pool_used += content->len;
        if (a->normalized && b->n_norm) {
            char *norm;
            size_t nl;
            if ((st = bpe_normalize(b, content->str, content->len, &norm, &nl)) != DATTN_OK)
                return st;
            if (nl > L->pool_room[i] || !nl) {
                dattn_free(norm);
                return fail(L, DATTN_E_FORMAT, "%s: content '%.60s' normalizes to %zu bytes",
                            path, content->str, nl);
            }
            memcpy(b->pool + L->pool_used, norm, nl);
            a->offset = (uint32_t)L->pool_used;
            a->len = (uint32_t)nl;
            L->pool_used += nl;
            dattn_free(norm);
        }
    }
    order_key *keys = dattn_alloc(((size_t)b->n_added + 1) * sizeof *keys, "added-token order");
    if (!keys)
        return DATTN_E_NOMEM;
    for (int i = 0; i < b->n_added; i++)
        keys[i] = (order_key){(unsigned char)b->pool[b->added[i].offset], b->added[i].len, i};
    qsort(keys, (size_t)b->n_added, sizeof *keys, order_cmp);
    for (int c = 0, i = 0; c <= 256; c++) {
        while (i < b->n_added && keys[i].first < c)
            i++;
        b->added_first[c] = i;
    }
    for (int i = 0; i < b->n_added; i++)
        b->added_order[i] = keys[i].index;
    dattn_free(keys);
    return DATTN_OK;
}

/* ---- normalizer, pre-tokenizer, post-processor, decoder -------------------------------------- */

/* A string of the file kept with the steps: its offset and length in step_text. */
static dattn_status keep_string(loader *L, int v, const char *path, uint16_t *off, uint16_t *len)
{
    bpe *b = L->b;
    const json_tok *t = &L->t[v];
    if (t->type != JSON_STRING)
        return fail(L, DATTN_E_FORMAT, "%s is %s, expected a string", path,
                    json_type_name(t->type));
    if (t->len > 64 || b->step_text_used + t->len > BPE_STEP_TEXT)
        return fail(L, DATTN_E_UNSUPPORTED, "%s: '%.40s' is longer than this build keeps (64 "
                    "bytes)", path, t->str);
    memcpy(b->step_text + b->step_text_used, t->str, t->len);
    *off = (uint16_t)b->step_text_used;
    *len = (uint16_t)t->len;
    b->step_text_used += t->len;
    return DATTN_OK;
}

/* Replace {"pattern": {"String": ...}, "content": ...} into st (a normalizer or a decoder). */
static dattn_status load_replace(loader *L, int v, const char *path, bpe_step *st)
{
    dattn_status status = DATTN_OK;
    char sub[96];
    int pat = need(L, v, path, "pattern", JSON_OBJECT, &status);
    int content = pat < 0 ? -1 : need(L, v, path, "content", JSON_STRING, &status);
    if (content < 0)
        return status;
    int str = member(L, pat, "String");
    if (str < 0 || L->t[str].type != JSON_STRING)
        return fail(L, DATTN_E_UNSUPPORTED, "%s.pattern: only {\"String\": ...} patterns are "
                    "supported (a Regex is not)", path);
    if (!L->t[str].len)
        return fail(L, DATTN_E_FORMAT, "%s.pattern.String is empty", path);
    snprintf(sub, sizeof sub, "%s.pattern.String", path);
    if ((status = keep_string(L, str, sub, &st->a_off, &st->a_len)) != DATTN_OK)
        return status;
    snprintf(sub, sizeof sub, "%s.content", path);
    return keep_string(L, content, sub, &st->b_off, &st->b_len);
}

/* One normalizer: NFC, Prepend or Replace. */
static dattn_status load_norm_step(loader *L, int v, const char *path)
{
    bpe *b = L->b;
    dattn_status st = DATTN_OK;
    const char *type = type_of(L, v, path, &st);
    if (!type)
        return st;
    if (b->n_norm == BPE_MAX_STEPS)
        return fail(L, DATTN_E_UNSUPPORTED, "%s: more than %d normalizers", path, BPE_MAX_STEPS);
    bpe_step *n = &b->norm[b->n_norm];
    memset(n, 0, sizeof *n);
    char sub[96];
    if (!strcmp(type, "NFC")) {
        n->kind = NORM_NFC;
        b->nfc = true;
    } else if (!strcmp(type, "Prepend")) {
        n->kind = NORM_PREPEND;
        int p = need(L, v, path, "prepend", JSON_STRING, &st);
        snprintf(sub, sizeof sub, "%s.prepend", path);
        if (p < 0 || (st = keep_string(L, p, sub, &n->a_off, &n->a_len)) != DATTN_OK)
            return st;
    } else if (!strcmp(type, "Replace")) {
        n->kind = NORM_REPLACE;
        if ((st = load_replace(L, v, path, n)) != DATTN_OK)
            return st;
    } else {
        return fail(L, DATTN_E_UNSUPPORTED, "%s: type '%.40s' is not supported (this build knows "
                    "NFC, Prepend, Replace and a Sequence of them)", path, type);
    }
    b->n_norm++;
    return DATTN_OK;
}

static dattn_status load_normalizer(loader *L, int v)
{
    if (v < 0 || L->t[v].type == JSON_NULL)
        return DATTN_OK;
    dattn_status st = DATTN_OK;
    const char *type = type_of(L, v, "normalizer", &st);
    if (!type)
        return st;
    if (strcmp(type, "Sequence"))
        return load_norm_step(L, v, "normalizer");
    int seq = need(L, v, "normalizer", "normalizers", JSON_ARRAY, &st);
    if (seq < 0)
        return st;
    for (int k = seq + 1, i = 0; i < L->t[seq].n; i++, k = L->t[k].end) {
        char path[48];
        snprintf(path, sizeof path, "normalizer.normalizers[%d]", i);
        if ((st = load_norm_step(L, k, path)) != DATTN_OK)
            return st;
    }
    return DATTN_OK;
}

/* The one character of a Metaspace / Strip field, kept as UTF-8. */
static dattn_status load_char(loader *L, int v, const char *path, uint16_t *off, uint16_t *len)
{
    const json_tok *t = &L->t[v];
    size_t n = 0;
    if (t->type == JSON_STRING && t->len)
        uni_decode(t->str, t->len, &n);
    if (t->type != JSON_STRING || !t->len || n != t->len)
        return fail(L, DATTN_E_FORMAT, "%s is %s, expected one character", path,
                    t->type == JSON_STRING ? "not one character" : json_type_name(t->type));
    return keep_string(L, v, path, off, len);
}

/* Metaspace {"replacement", "prepend_scheme" (or the older "add_prefix_space"), "split"}. */
static dattn_status load_metaspace(loader *L, int v, const char *path, meta_scheme *scheme,
                                   uint16_t *off, uint16_t *len, bool *split)
{
    dattn_status st = DATTN_OK;
    char sub[96];
    int rep = need(L, v, path, "replacement", JSON_STRING, &st);
    snprintf(sub, sizeof sub, "%s.replacement", path);
    if (rep < 0 || (st = load_char(L, rep, sub, off, len)) != DATTN_OK)
        return st;
    if ((st = opt_bool(L, v, path, "split", true, split)) != DATTN_OK)
        return st;
    int ps = member(L, v, "prepend_scheme");
    if (ps >= 0 && L->t[ps].type != JSON_NULL) {
        if (L->t[ps].type != JSON_STRING)
            return fail(L, DATTN_E_FORMAT, "%s.prepend_scheme is %s, expected a string", path,
                        json_type_name(L->t[ps].type));
        const char *p = L->t[ps].str;
        *scheme = !strcmp(p, "always") ? META_ALWAYS : !strcmp(p, "first") ? META_FIRST :
                  !strcmp(p, "never") ? META_NEVER : META_NONE;
        if (*scheme == META_NONE)
            return fail(L, DATTN_E_FORMAT, "%s.prepend_scheme '%.20s' is not always, first or "
                        "never", path, p);
    } else {
        bool add = true;   /* older files: add_prefix_space */
        if ((st = opt_bool(L, v, path, "add_prefix_space", true, &add)) != DATTN_OK)
            return st;
        *scheme = add ? META_ALWAYS : META_NEVER;
    }
    return DATTN_OK;
}

/* A ByteLevel pre-tokenizer at v; in_sequence: after a Split, so it must not split again. */
static dattn_status load_byte_level(loader *L, int v, const char *path, bool in_sequence)
{
    bool use_regex, trim;
    dattn_status st;
    if ((st = opt_bool(L, v, path, "add_prefix_space", false, &L->b->add_prefix_space)) !=
            DATTN_OK ||
        (st = opt_bool(L, v, path, "trim_offsets", true, &trim)) != DATTN_OK ||
        (st = opt_bool(L, v, path, "use_regex", true, &use_regex)) != DATTN_OK)
        return st;
    if (in_sequence && use_regex)
        return fail(L, DATTN_E_UNSUPPORTED, "%s.use_regex is true after a Split: not supported",
                    path);
    if (in_sequence && L->b->add_prefix_space)
        return fail(L, DATTN_E_UNSUPPORTED, "%s.add_prefix_space is true after a Split: not "
                    "supported", path);
    if (!in_sequence)
        L->b->pretok = use_regex ? PRETOK_GPT2 : PRETOK_NONE;
    return DATTN_OK;
}

static dattn_status load_split(loader *L, int v, const char *path)
{
    dattn_status st = DATTN_OK;
    int pat = need(L, v, path, "pattern", JSON_OBJECT, &st);
    int beh = pat < 0 ? -1 : need(L, v, path, "behavior", JSON_STRING, &st);
    if (beh < 0)
        return st;
    bool invert;
    if ((st = opt_bool(L, v, path, "invert", false, &invert)) != DATTN_OK)
        return st;
    if (strcmp(L->t[beh].str, "Isolated"))
        return fail(L, DATTN_E_UNSUPPORTED, "%s.behavior '%.40s' is not supported (this build "
                    "knows Isolated)", path, L->t[beh].str);
    if (invert)
        return fail(L, DATTN_E_UNSUPPORTED, "%s.invert is true: not supported", path);
    int re = member(L, pat, "Regex");
    if (re < 0 || L->t[re].type != JSON_STRING)
        return fail(L, DATTN_E_UNSUPPORTED, "%s.pattern: only {\"Regex\": ...} patterns are "
                    "supported", path);
    const char *p = L->t[re].str;
    if (!strcmp(p, pretok_llama3_pattern))
        L->b->pretok = PRETOK_LLAMA3;
    else if (!strcmp(p, pretok_qwen2_pattern))
        L->b->pretok = PRETOK_QWEN2;
    else if (!strcmp(p, pretok_gpt2_pattern))
        L->b->pretok = PRETOK_GPT2;
    else
        return fail(L, DATTN_E_UNSUPPORTED, "%s.pattern.Regex '%.120s' is not a pattern this "
                    "build knows (GPT-2, Llama-3, Qwen2)", path, p);
    return DATTN_OK;
}

/* The pre-tokenizer also says the family: ByteLevel (alone or after a Split) is byte-level
 * BPE; none, or Metaspace, is SentencePiece-style BPE. */
static dattn_status load_pre_tokenizer(loader *L, int v)
{
    dattn_status st = DATTN_OK;
    bpe *b = L->b;
    if (v < 0 || L->t[v].type == JSON_NULL) {
        b->sentencepiece = true;   /* the whole normalized text is one word */
        return DATTN_OK;
    }
    const char *type = type_of(L, v, "pre_tokenizer", &st);
    if (!type)
        return st;
    if (!strcmp(type, "ByteLevel"))
        return load_byte_level(L, v, "pre_tokenizer", false);
    if (!strcmp(type, "Metaspace")) {
        uint16_t off, len;
        b->sentencepiece = true;
        if ((st = load_metaspace(L, v, "pre_tokenizer", &b->metaspace, &off, &len,
                                 &b->metaspace_split)) != DATTN_OK)
            return st;
        memcpy(b->meta_char, b->step_text + off, len);
        b->meta_len = len;
        return DATTN_OK;
    }
    if (strcmp(type, "Sequence"))
        return fail(L, DATTN_E_UNSUPPORTED, "pre_tokenizer type '%.40s' is not supported (this "
                    "build knows ByteLevel, Sequence [Split, ByteLevel], Metaspace and none)",
                    type);
    int seq = need(L, v, "pre_tokenizer", "pretokenizers", JSON_ARRAY, &st);
    if (seq < 0)
        return st;
    const json_tok *t = L->t;
    int first = seq + 1, second = t[seq].n == 2 ? t[first].end : -1;
    const char *t0 = NULL, *t1 = NULL;
    if (second >= 0) {
        t0 = type_of(L, first, "pre_tokenizer.pretokenizers[0]", &st);
        t1 = t0 ? type_of(L, second, "pre_tokenizer.pretokenizers[1]", &st) : NULL;
        if (!t1)
            return st;
    }
    if (!t0 || strcmp(t0, "Split") || strcmp(t1, "ByteLevel"))
        return fail(L, DATTN_E_UNSUPPORTED, "pre_tokenizer.pretokenizers: this build knows "
                    "[Split, ByteLevel], not %d entries starting with '%.40s'", t[seq].n,
                    t0 ? t0 : "?");
    if ((st = load_split(L, first, "pre_tokenizer.pretokenizers[0]")) != DATTN_OK)
        return st;
    return load_byte_level(L, second, "pre_tokenizer.pretokenizers[1]", true);
}

/* The ids of special token `name` in the template's special_tokens map, appended to ids. */
static dattn_status template_ids(loader *L, int specials, const char *path, const char *name,
                                 int32_t *ids, int *n)
{
    dattn_status st = DATTN_OK;
    int s = specials < 0 ? -1 : member(L, specials, name);
    if (s < 0 || L->t[s].type != JSON_OBJECT)
        return fail(L, DATTN_E_FORMAT, "%s: special token '%.60s' is not an object in "
                    "special_tokens", path, name);
    int arr = need(L, s, "post_processor.special_tokens entry", "ids", JSON_ARRAY, &st);
    if (arr < 0)
        return st;
    for (int k = arr + 1, i = 0; i < L->t[arr].n; i++, k = L->t[k].end) {
        const json_tok *id = &L->t[k];
        if (id->type != JSON_NUMBER || !id->is_int || id->ival < 0 || id->ival >= L->b->n_ids)
            return fail(L, DATTN_E_FORMAT, "post_processor.special_tokens['%.60s'].ids[%d] is "
                        "not an id in 0..%d", name, i, L->b->n_ids - 1);
        if (*n == BPE_MAX_TEMPLATE)
            return fail(L, DATTN_E_UNSUPPORTED, "%s: more than %d special tokens on one side",
                        path, BPE_MAX_TEMPLATE);
        ids[(*n)++] = (int32_t)id->ival;
    }
    return DATTN_OK;
}

static dattn_status load_template(loader *L, int v, const char *path)
{
    dattn_status st = DATTN_OK;
    char sub[96];
    snprintf(sub, sizeof sub, "%s", path);
    int single = need(L, v, sub, "single", JSON_ARRAY, &st);
    if (single < 0)
        return st;
    int specials = member(L, v, "special_tokens");
    if (specials >= 0 && L->t[specials].type != JSON_OBJECT)
        return fail(L, DATTN_E_FORMAT, "%s.special_tokens is %s, expected an object", path,
                    json_type_name(L->t[specials].type));
    bpe *b = L->b;
    bool seen_a = false;
    for (int k = single + 1, i = 0; i < L->t[single].n; i++, k = L->t[k].end) {
        snprintf(sub, sizeof sub, "%s.single[%d]", path, i);
        if (L->t[k].type != JSON_OBJECT || L->t[k].n != 1)
            return fail(L, DATTN_E_FORMAT, "%s is not an object of one key", sub);
        const char *kind = L->t[k + 1].str;
        int body = k + 2;
        if (L->t[body].type != JSON_OBJECT)
            return fail(L, DATTN_E_FORMAT, "%s.%s is not an object", sub, kind);
        int id = need(L, body, sub, "id", JSON_STRING, &st);
        if (id < 0)
            return st;
        if (!strcmp(kind, "Sequence")) {
            if (strcmp(L->t[id].str, "A") || seen_a)
                return fail(L, DATTN_E_UNSUPPORTED, "%s: sequence '%.10s' in a single template "
                            "(expected $A once)", sub, L->t[id].str);
            seen_a = true;
        } else if (!strcmp(kind, "SpecialToken")) {
            st = seen_a ? template_ids(L, specials, sub, L->t[id].str, b->suffix, &b->n_suffix)
                        : template_ids(L, specials, sub, L->t[id].str, b->prefix, &b->n_prefix);
            if (st != DATTN_OK)
                return st;
        } else {
            return fail(L, DATTN_E_FORMAT, "%s: '%.40s' is neither Sequence nor SpecialToken",
                        sub, kind);
        }
    }
    if (!seen_a)
        return fail(L, DATTN_E_FORMAT, "%s.single has no $A", path);
    return DATTN_OK;
}

static dattn_status load_post_processor(loader *L, int v)
{
    if (v < 0 || L->t[v].type == JSON_NULL)
        return DATTN_OK;
    dattn_status st = DATTN_OK;
    const char *type = type_of(L, v, "post_processor", &st);
    if (!type)
        return st;
    if (!strcmp(type, "ByteLevel"))
        return DATTN_OK;           /* it only trims offsets, which ids do not carry */
    if (!strcmp(type, "TemplateProcessing"))
        return load_template(L, v, "post_processor");
    if (strcmp(type, "Sequence"))
        return fail(L, DATTN_E_UNSUPPORTED, "post_processor type '%.40s' is not supported (this "
                    "build knows ByteLevel, TemplateProcessing and a Sequence of them)", type);
    int seq = need(L, v, "post_processor", "processors", JSON_ARRAY, &st);
    if (seq < 0)
        return st;
    bool templ = false;
    for (int k = seq + 1, i = 0; i < L->t[seq].n; i++, k = L->t[k].end) {
        char path[48];
        snprintf(path, sizeof path, "post_processor.processors[%d]", i);
        if (!(type = type_of(L, k, path, &st)))
            return st;
        if (!strcmp(type, "ByteLevel"))
            continue;
        if (strcmp(type, "TemplateProcessing") || templ)
            return fail(L, DATTN_E_UNSUPPORTED, "%s: type '%.40s' is not supported here (this "
                        "build knows ByteLevel and one TemplateProcessing)", path, type);
        templ = true;
        if ((st = load_template(L, k, path)) != DATTN_OK)
            return st;
    }
    return DATTN_OK;
}

/* One SentencePiece-style decoder: Replace, ByteFallback, Fuse, Strip or Metaspace. */
static dattn_status load_dec_step(loader *L, int v, const char *path)
{
    bpe *b = L->b;
    dattn_status st = DATTN_OK;
    const char *type = type_of(L, v, path, &st);
    if (!type)
        return st;
    if (b->n_dec == BPE_MAX_STEPS)
        return fail(L, DATTN_E_UNSUPPORTED, "%s: more than %d decoders", path, BPE_MAX_STEPS);
    bpe_step *d = &b->dec[b->n_dec];
    memset(d, 0, sizeof *d);
    char sub[96];
    if (!strcmp(type, "Replace")) {
        d->kind = DEC_REPLACE;
        st = load_replace(L, v, path, d);
    } else if (!strcmp(type, "ByteFallback")) {
        d->kind = DEC_BYTE_FALLBACK;
    } else if (!strcmp(type, "Fuse")) {
        d->kind = DEC_FUSE;
    } else if (!strcmp(type, "Strip")) {
        d->kind = DEC_STRIP;
        int c = need(L, v, path, "content", JSON_STRING, &st);
        int a = c < 0 ? -1 : need(L, v, path, "start", JSON_NUMBER, &st);
        int z = a < 0 ? -1 : need(L, v, path, "stop", JSON_NUMBER, &st);
        if (z < 0)
            return st;
        snprintf(sub, sizeof sub, "%s.content", path);
        if ((st = load_char(L, c, sub, &d->a_off, &d->a_len)) != DATTN_OK)
            return st;
        if (!L->t[a].is_int || !L->t[z].is_int || L->t[a].ival < 0 || L->t[z].ival < 0 ||
            L->t[a].ival > 1000 || L->t[z].ival > 1000)
            return fail(L, DATTN_E_FORMAT, "%s: start %.20s and stop %.20s must be counts in "
                        "0..1000", path, L->t[a].str, L->t[z].str);
        d->start = (int)L->t[a].ival;
        d->stop = (int)L->t[z].ival;
    } else if (!strcmp(type, "Metaspace")) {
        bool split;
        d->kind = DEC_METASPACE;
        st = load_metaspace(L, v, path, &d->scheme, &d->a_off, &d->a_len, &split);
    } else {
        return fail(L, DATTN_E_UNSUPPORTED, "%s: type '%.40s' is not supported (this build "
                    "knows Replace, ByteFallback, Fuse, Strip and Metaspace)", path, type);
    }
    if (st == DATTN_OK)
        b->n_dec++;
    return st;
}

static dattn_status load_decoder(loader *L, int v)
{
    dattn_status st = DATTN_OK;
    bpe *b = L->b;
    if (v < 0 || L->t[v].type == JSON_NULL)
        return fail(L, DATTN_E_UNSUPPORTED, "decoder is null: this build knows ByteLevel, and "
                    "Replace/ByteFallback/Fuse/Strip/Metaspace for SentencePiece-style files");
    const char *type = type_of(L, v, "decoder", &st);
    if (!type)
        return st;
    if (!b->sentencepiece) {
        if (strcmp(type, "ByteLevel"))
            return fail(L, DATTN_E_UNSUPPORTED, "decoder type '%.40s' is not supported with a "
                        "ByteLevel pre-tokenizer (this build knows ByteLevel)", type);
        return DATTN_OK;
    }
    if (!strcmp(type, "ByteLevel"))
        return fail(L, DATTN_E_UNSUPPORTED, "decoder type 'ByteLevel' with a pre_tokenizer that "
                    "is not ByteLevel (null or Metaspace: SentencePiece-style BPE): not "
                    "supported");
    if (strcmp(type, "Sequence"))
        return load_dec_step(L, v, "decoder");
    int seq = need(L, v, "decoder", "decoders", JSON_ARRAY, &st);
    if (seq < 0)
        return st;
    for (int k = seq + 1, i = 0; i < L->t[seq].n; i++, k = L->t[k].end) {
        char path[48];
        snprintf(path, sizeof path, "decoder.decoders[%d]", i);
        if ((st = load_dec_step(L, k, path)) != DATTN_OK)
            return st;
    }
    return DATTN_OK;
}

/* ---- the whole file --------------------------------------------------------------------------- */

void bpe_free(bpe *b)
{
    if (!b)
        return;
    dattn_free(b->pool);
    dattn_free(b->tok_offset);
    dattn_free(b->tok_len);
    dattn_free(b->tok_kind);
    dattn_free(b->vocab_hash);
    dattn_free(b->merge_hash);
    dattn_free(b->added);
    dattn_free(b->added_order);
    dattn_free(b->stream_pool);
    dattn_free(b->stream_offset);
    dattn_free(b);
}

static dattn_status load_doc(loader *L)
{
    const json_tok *t = L->t;
    bpe *b = L->b;
    dattn_status st = DATTN_OK;
    if (t[0].type != JSON_OBJECT)
        return fail(L, DATTN_E_FORMAT, "the top level is %s, expected an object",
                    json_type_name(t[0].type));
    int model = need(L, 0, "the top level", "model", JSON_OBJECT, &st);
    int vocab = model < 0 ? -1 : need(L, model, "model", "vocab", JSON_OBJECT, &st);
    if (vocab < 0)
        return st;
    int added = member(L, 0, "added_tokens");
    if (added >= 0 && t[added].type == JSON_NULL)
        added = -1;
    if (added >= 0 && t[added].type != JSON_ARRAY)
        return fail(L, DATTN_E_FORMAT, "added_tokens is %s, expected an array",
                    json_type_name(t[added].type));
    int trunc = member(L, 0, "truncation");
    if (trunc >= 0 && t[trunc].type != JSON_NULL)
        return fail(L, DATTN_E_UNSUPPORTED, "truncation is set: not supported (ids are never cut)");

    /* The pre-tokenizer says the family (how vocab strings read); the normalizer is applied to
     * normalized added tokens. Both before the vocabulary. */
    if ((st = load_pre_tokenizer(L, member(L, 0, "pre_tokenizer"))) != DATTN_OK ||
        (st = load_normalizer(L, member(L, 0, "normalizer"))) != DATTN_OK)
        return st;

    /* Sizes: ids run up to the largest in the file (a vocabulary may leave gaps), and every
     * token's bytes fit in its JSON string (a byte-level character is one byte or more); a
     * normalized added token also keeps its normalized content. */
    int n_vocab = t[vocab].n, n_added = added >= 0 ? t[added].n : 0;
    if (!n_vocab)
        return fail(L, DATTN_E_FORMAT, "model.vocab is empty");
    long long max_id = -1;
    for (int k = vocab + 1, m = 0; m < n_vocab; m++, k = t[k + 1].end) {
        if (t[k + 1].type != JSON_NUMBER || !t[k + 1].is_int)
            continue;   /* load_vocab says what is wrong with it */
        if (t[k + 1].ival >= BPE_MAX_IDS)
            return fail(L, DATTN_E_FORMAT, "model.vocab['%.60s']: id %lld is past the %d ids "
                        "this build takes", t[k].str, (long long)t[k + 1].ival, BPE_MAX_IDS);
        if (t[k + 1].ival > max_id)
            max_id = t[k + 1].ival;
    }
    for (int k = added + 1, m = 0; m < n_added; m++, k = t[k].end) {
        int id = t[k].type == JSON_OBJECT ? member(L, k, "id") : -1;
        if (id < 0 || t[id].type != JSON_NUMBER || !t[id].is_int)
            continue;
        if (t[id].ival >= BPE_MAX_IDS)
            return fail(L, DATTN_E_FORMAT, "added_tokens[%d].id: %lld is past the %d ids this "
                        "build takes", m, (long long)t[id].ival, BPE_MAX_IDS);
        if (t[id].ival > max_id)
            max_id = t[id].ival;
    }
    b->n_ids = (int)(max_id + 1 > n_vocab ? max_id + 1 : n_vocab);
    b->n_added = n_added;
    L->pool_room = dattn_alloc(sizeof(size_t) * ((size_t)n_added + 1), "added-token sizes");
    if (!L->pool_room)
        return DATTN_E_NOMEM;
    size_t pool = 1;
    for (int k = vocab + 1, m = 0; m < n_vocab; m++, k = t[k + 1].end)
        pool += t[k].len;
    for (int k = added + 1, m = 0; m < n_added; m++, k = t[k].end)
        if (t[k].type == JSON_OBJECT) {
            int c = member(L, k, "content");
            if (c < 0 || t[c].type != JSON_STRING)
                continue;
            pool += t[c].len;
            if (b->n_norm) {   /* room for the normalized content */
                char *norm;
                size_t nl;
                if ((st = bpe_normalize(b, t[c].str, t[c].len, &norm, &nl)) != DATTN_OK)
                    return st;
                dattn_free(norm);
                L->pool_room[m] = nl;
                pool += nl;
            }
        }
    if (pool > UINT32_MAX)
        return fail(L, DATTN_E_FORMAT, "model.vocab: %zu bytes of tokens are too many", pool);
    size_t n_ids = (size_t)b->n_ids + 1;
    b->vocab_cap = pow2_at_least(2 * (size_t)n_vocab + 2);
    b->pool = dattn_alloc(pool, "BPE token bytes");
    b->tok_offset = dattn_alloc(n_ids * sizeof(uint32_t), "BPE token offsets");
    b->tok_len = dattn_alloc(n_ids * sizeof(uint32_t), "BPE token lengths");
    b->tok_kind = dattn_alloc(n_ids, "BPE token kinds");
    b->vocab_hash = dattn_alloc(b->vocab_cap * sizeof(int32_t), "BPE vocab hash");
    b->added = dattn_alloc(((size_t)n_added + 1) * sizeof(bpe_added), "BPE added tokens");
    b->added_order = dattn_alloc(((size_t)n_added + 1) * sizeof(int), "BPE added order");
    if (!b->pool || !b->tok_offset || !b->tok_len || !b->tok_kind || !b->vocab_hash ||
        !b->added || !b->added_order)
        return DATTN_E_NOMEM;
    memset(b->vocab_hash, 0xFF, b->vocab_cap * sizeof(int32_t));

    if ((st = load_vocab(L, vocab)) != DATTN_OK ||
        (added >= 0 && (st = load_added(L, added)) != DATTN_OK) ||
        (st = load_model(L, model)) != DATTN_OK ||
        (st = load_post_processor(L, member(L, 0, "post_processor"))) != DATTN_OK ||
        (st = load_decoder(L, member(L, 0, "decoder"))) != DATTN_OK)
        return st;
    return DATTN_OK;
}

dattn_status bpe_load(const char *name, const char *text, size_t len, bpe **out)
{
    *out = NULL;
    json_doc *doc = NULL;
    json_error jerr;
    dattn_status st = json_parse(text, len, &doc, &jerr);
    if (st != DATTN_OK) {
        if (st == DATTN_E_FORMAT)
            return dattn_fail(st, "%s: not valid JSON: %s at byte %zu", name, jerr.what,
                              jerr.offset);
        return st;
    }
    bpe *b = dattn_alloc(sizeof *b, "BPE tokenizer");
    if (!b) {
        json_free(doc);
        return DATTN_E_NOMEM;
    }
    loader L = {.name = name, .t = doc->toks, .b = b};
    b->unk_id = -1;
    for (int c = 0; c < 256; c++)
        b->byte_token[c] = -1;
    byte_map_init(&L);
    st = load_doc(&L);
    if (st == DATTN_OK)
        st = bpe_stream_init(b);
    dattn_free(L.pool_room);
    json_free(doc);
    if (st != DATTN_OK) {
        bpe_free(b);
        return st;
    }
    *out = b;
    return DATTN_OK;
}
