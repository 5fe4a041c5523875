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
        long n = level_bytes(L, key->str, key->len, dst);
        bool mapped = n >= 0;
        if (!mapped) {
            memcpy(dst, key->str, key->len);
            n = (long)key->len;
        }
        b->tok_offset[id] = (uint32_t)L->pool_used;
        b->tok_len[id] = (uint32_t)n;
        b->tok_kind[id] = BPE_TOK_VOCAB;
        L->pool_used += (size_t)n;
        if (!mapped)
            continue;       /* no merge can make it; it is only decoded */
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

/* The vocab id of a byte-level token string, its bytes written to buf ([len] room), or -1. */
static int32_t level_id(const loader *L, const char *s, size_t len, char *buf, long *n)
{
    *n = level_bytes(L, s, len, buf);
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
    int unk = member(L, model, "unk_token");
    if (unk >= 0 && L->t[unk].type != JSON_NULL && L->t[unk].type != JSON_STRING)
        return fail(L, DATTN_E_FORMAT, "model.unk_token is %s, expected a string or null",
                    json_type_name(L->t[unk].type));
    bool flag;
    if ((st = opt_bool(L, model, "model", "fuse_unk", false, &flag)) != DATTN_OK ||
        (st = opt_bool(L, model, "model", "byte_fallback", false, &flag)) != DATTN_OK)
        return st;
    if (flag)
        return fail(L, DATTN_E_UNSUPPORTED, "model.byte_fallback is true (SentencePiece-style "
                    "BPE): not supported, this build knows byte-level BPE");
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
        if (a->normalized && b->nfc) {
            char *norm;
            size_t nl;
            if ((st = uni_nfc(content->str, content->len, &norm, &nl)) != DATTN_OK)
                return st;
            bool same = nl == content->len && !memcmp(norm, content->str, nl);
            dattn_free(norm);
            if (!same)
                return fail(L, DATTN_E_UNSUPPORTED, "%s: content '%.60s' is not in NFC and is "
                            "normalized: not supported", path, content->str);
        }
        for (int j = 0; j < i; j++)
            if (b->added[j].len == content->len &&
                !memcmp(b->pool + b->added[j].offset, content->str, content->len))
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
        a->offset = (uint32_t)L->pool_used;
        a->len = (uint32_t)content->len;
        memcpy(b->pool + L->pool_used, content->str, content->len);
        L->pool_used += content->len;
        b->tok_offset[tid] = a->offset;
        b->tok_len[tid] = a->len;
        b->tok_kind[tid] = BPE_TOK_ADDED;
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

static dattn_status load_normalizer(loader *L, int v)
{
    if (v < 0 || L->t[v].type == JSON_NULL)
        return DATTN_OK;
    dattn_status st = DATTN_OK;
    const char *type = type_of(L, v, "normalizer", &st);
    if (!type)
        return st;
    if (!strcmp(type, "NFC")) {
        L->b->nfc = true;
        return DATTN_OK;
    }
    if (strcmp(type, "Sequence"))
        return fail(L, DATTN_E_UNSUPPORTED, "normalizer type '%.40s' is not supported (this build "
                    "knows NFC and a Sequence of NFC)", type);
    int seq = need(L, v, "normalizer", "normalizers", JSON_ARRAY, &st);
    if (seq < 0)
        return st;
    for (int k = seq + 1, i = 0; i < L->t[seq].n; i++, k = L->t[k].end) {
        char path[48];
        snprintf(path, sizeof path, "normalizer.normalizers[%d]", i);
        if (!(type = type_of(L, k, path, &st)))
            return st;
        if (strcmp(type, "NFC"))
            return fail(L, DATTN_E_UNSUPPORTED, "%s: type '%.40s' is not supported (this build "
                        "knows NFC)", path, type);
        L->b->nfc = true;
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

static dattn_status load_pre_tokenizer(loader *L, int v)
{
    dattn_status st = DATTN_OK;
    if (v < 0 || L->t[v].type == JSON_NULL)
        return fail(L, DATTN_E_UNSUPPORTED, "pre_tokenizer is null: this build knows byte-level "
                    "BPE (ByteLevel, or Split then ByteLevel)");
    const char *type = type_of(L, v, "pre_tokenizer", &st);
    if (!type)
        return st;
    if (!strcmp(type, "ByteLevel"))
        return load_byte_level(L, v, "pre_tokenizer", false);
    if (strcmp(type, "Sequence"))
        return fail(L, DATTN_E_UNSUPPORTED, "pre_tokenizer type '%.40s' is not supported (this "
                    "build knows ByteLevel and Sequence [Split, ByteLevel])", type);
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

static dattn_status load_decoder(loader *L, int v)
{
    dattn_status st = DATTN_OK;
    if (v < 0 || L->t[v].type == JSON_NULL)
        return fail(L, DATTN_E_UNSUPPORTED, "decoder is null: this build knows ByteLevel");
    const char *type = type_of(L, v, "decoder", &st);
    if (!type)
        return st;
    if (strcmp(type, "ByteLevel"))
        return fail(L, DATTN_E_UNSUPPORTED, "decoder type '%.40s' is not supported (this build "
                    "knows ByteLevel)", type);
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

    /* Sizes first: ids are dense below the vocab plus the added tokens, and every token's
     * bytes fit in its JSON string (a byte-level character is one byte or more). */
    int n_vocab = t[vocab].n, n_added = added >= 0 ? t[added].n : 0;
    if (!n_vocab)
        return fail(L, DATTN_E_FORMAT, "model.vocab is empty");
    if ((long long)n_vocab + n_added > INT32_MAX / 2)
        return fail(L, DATTN_E_FORMAT, "model.vocab: %d tokens are too many", n_vocab);
    b->n_ids = n_vocab + n_added;
    b->n_added = n_added;
    size_t pool = 1;
    for (int k = vocab + 1, m = 0; m < n_vocab; m++, k = t[k + 1].end)
        pool += t[k].len;
    for (int k = added + 1, m = 0; m < n_added; m++, k = t[k].end)
        if (t[k].type == JSON_OBJECT) {
            int c = member(L, k, "content");
            if (c >= 0 && t[c].type == JSON_STRING)
                pool += t[c].len;
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

    /* The normalizer before the added tokens: normalized ones must already be in NFC. */
    if ((st = load_normalizer(L, member(L, 0, "normalizer"))) != DATTN_OK ||
        (st = load_vocab(L, vocab)) != DATTN_OK ||
        (added >= 0 && (st = load_added(L, added)) != DATTN_OK) ||
        (st = load_model(L, model)) != DATTN_OK ||
        (st = load_pre_tokenizer(L, member(L, 0, "pre_tokenizer"))) != DATTN_OK ||
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
    byte_map_init(&L);
    st = load_doc(&L);
    json_free(doc);
    if (st != DATTN_OK) {
        bpe_free(b);
        return st;
    }
    *out = b;
    return DATTN_OK;
}
