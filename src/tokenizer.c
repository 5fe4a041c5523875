/* The tokenizer interface (tokenizer.h): the byte tokenizer, where each byte of the text is one
 * token, id = byte value (a vocabulary above 256 is allowed: ids past 255 are special tokens
 * without text), and the hook that loads a byte-level BPE from a tokenizer.json (src/bpe.h). */
#include "tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "bpe.h"
#include "json.h"
#include "status.h"

static dattn_status bytes_encode(const tokenizer *t, const char *text, size_t len, int32_t *ids,
                                 int max, int *n)
{
    (void)t;
    if (len > (size_t)INT32_MAX)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: a text of %zu bytes is too long", len);
    *n = (int)len;
    size_t k = len < (size_t)max ? len : (size_t)max;
    for (size_t i = 0; i < k; i++)
        ids[i] = (unsigned char)text[i];
    if (len > (size_t)max)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: the text is %zu tokens, the buffer "
                          "holds %d", len, max);
    return DATTN_OK;
}

static dattn_status bytes_token(const tokenizer *t, int32_t id, char *buf, size_t cap, size_t *n)
{
    if (id < 0 || id >= t->vocab_size)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: token id %d is outside the "
                          "vocabulary 0..%d", (int)id, t->vocab_size - 1);
    *n = 0;
    if (id > 255)
        return DATTN_OK;
    *n = 1;
    if (cap < 1)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: the buffer has no room for a byte");
    buf[0] = (char)(unsigned char)id;
    return DATTN_OK;
}

/* A model directory without tokenizer.json: token ids work (logits --tokens), text does not,
 * rather than being read as bytes by a model that never saw them. */
static dattn_status none_encode(const tokenizer *t, const char *text, size_t len, int32_t *ids,
                                int max, int *n)
{
    (void)t, (void)text, (void)len, (void)ids, (void)max;
    *n = 0;
    return dattn_fail(DATTN_E_UNSUPPORTED, "tokenizer: the model has no tokenizer.json; give "
                      "token ids instead of text");
}

static dattn_status none_token(const tokenizer *t, int32_t id, char *buf, size_t cap, size_t *n)
{
    (void)t, (void)id, (void)buf, (void)cap;
    *n = 0;
    return dattn_fail(DATTN_E_UNSUPPORTED, "tokenizer: the model has no tokenizer.json; its "
                      "tokens have no text");
}

dattn_status tokenizer_init(tokenizer *t, const char *name, int vocab_size)
{
    if (!strcmp(name, "bytes")) {
        if (vocab_size < 256)
            return dattn_fail(DATTN_E_FORMAT, "tokenizer 'bytes' needs vocab_size >= 256, the "
                              "model has %d", vocab_size);
        *t = (tokenizer){"bytes", vocab_size, bytes_encode, bytes_token, -1, -1, NULL};
        return DATTN_OK;
    }
    if (!strcmp(name, "none")) {
        *t = (tokenizer){"none", vocab_size, none_encode, none_token, -1, -1, NULL};
        return DATTN_OK;
    }
    return dattn_fail(DATTN_E_FORMAT, "tokenizer '%s' is not supported (this build knows: bytes)",
                      name);
}

/* ---- byte-level BPE ------------------------------------------------------------------------- */

static dattn_status bpe_raw_encode(const tokenizer *t, const char *text, size_t len, int32_t *ids,
                                   int max, int *n)
{
    return bpe_encode(t->bpe, text, len, false, ids, max, n);
}

/* What the token prints in a stream (the decoder's per-token result, made at load). */
static dattn_status bpe_token(const tokenizer *t, int32_t id, char *buf, size_t cap, size_t *n)
{
    const bpe *b = t->bpe;
    *n = 0;
    dattn_status st = bpe_check_id(b, id);
    if (st != DATTN_OK)
        return st;
    size_t len;
    const char *s = bpe_stream_bytes(b, id, &len);
    *n = len;
    if (len > cap)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: token %d is %zu bytes, the buffer "
                          "holds %zu", (int)id, len, cap);
    memcpy(buf, s, len);
    return DATTN_OK;
}

dattn_status tokenizer_load_json_text(tokenizer *t, const char *name, const char *text,
                                      size_t len)
{
    *t = (tokenizer){0};
    bpe *b;
    dattn_status st = bpe_load(name, text, len, &b);
    if (st != DATTN_OK)
        return st;
    *t = (tokenizer){"bpe", b->n_ids, bpe_raw_encode, bpe_token, -1, -1, b};
    if (b->n_prefix)
        t->bos_id = b->prefix[0];
    if (b->n_suffix)
        t->eos_id = b->suffix[b->n_suffix - 1];
    return DATTN_OK;
}

/* A tokenizer.json above this is refused before it is read (Llama-3's is 9 MB). */
#define TOKENIZER_MAX_BYTES ((long)1 << 30)

/* The whole of an open file (at most TOKENIZER_MAX_BYTES) into *text. */
static dattn_status read_small(FILE *f, const char *path, char **text, size_t *len)
{
    *text = NULL;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0)
        return dattn_fail(DATTN_E_IO, "%s: cannot find its size", path);
    if (size > TOKENIZER_MAX_BYTES)
        return dattn_fail(DATTN_E_FORMAT, "%s: %ld bytes is too large for a tokenizer file",
                          path, size);
    if (!(*text = dattn_alloc((size_t)size + 1, "tokenizer file text")))
        return DATTN_E_NOMEM;
    size_t got = fread(*text, 1, (size_t)size, f);
    if (got != (size_t)size || ferror(f)) {
        dattn_free(*text);
        *text = NULL;
        return dattn_fail(DATTN_E_IO, "%s: read %zu of %ld bytes", path, got, size);
    }
    *len = got;
    return DATTN_OK;
}

dattn_status tokenizer_load_json(tokenizer *t, const char *path)
{
    *t = (tokenizer){0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return dattn_fail(DATTN_E_IO, "%s: cannot open: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0;
    dattn_status st = read_small(f, path, &text, &len);
    fclose(f);
    if (st == DATTN_OK)
        st = tokenizer_load_json_text(t, path, text, len);
    dattn_free(text);
    return st;
}

/* ---- tokenizer_config.json -------------------------------------------------------------- */

/* The id of a special token's content: an added token, or a vocabulary token; -1 if none. */
static int32_t special_id(const bpe *b, const char *s, size_t n)
{
    for (int i = 0; i < b->n_added; i++)
        if (b->tok_len[b->added[i].id] == n && !memcmp(b->pool + b->tok_offset[b->added[i].id], s, n))
            return b->added[i].id;
    return bpe_vocab_find(b, s, n);
}

/* The member `key` of the top-level object, or NULL. */
static const json_tok *top_member(const json_doc *doc, const char *key)
{
    const json_tok *t = doc->toks;
    for (int k = 1, m = 0; m < t[0].n; m++, k = t[k + 1].end)
        if (!strcmp(t[k].str, key))
            return &t[k + 1];
    return NULL;
}

/* add_bos_token / add_eos_token of tokenizer_config.json, as transformers' Llama-family fast
 * tokenizers apply them (LlamaTokenizerFast.update_post_processor): the template becomes
 * [bos_token] $A [eos_token] with the ones asked for. Other tokenizer classes leave the
 * tokenizer.json's post-processor as it is, and so does a file without these keys. */
static dattn_status apply_config(tokenizer *t, const char *path, const json_doc *doc)
{
    bpe *b = t->bpe;
    if (doc->toks[0].type != JSON_OBJECT)
        return dattn_fail(DATTN_E_FORMAT, "%s: the top level is %s, expected an object", path,
                          json_type_name(doc->toks[0].type));
    const json_tok *cls = top_member(doc, "tokenizer_class");
    if (cls && cls->type != JSON_NULL && cls->type != JSON_STRING)
        return dattn_fail(DATTN_E_FORMAT, "%s: tokenizer_class is %s, expected a string", path,
                          json_type_name(cls->type));
    static const char *const llama_family[] = {"LlamaTokenizer", "LlamaTokenizerFast",
                                               "CodeLlamaTokenizer", "CodeLlamaTokenizerFast",
                                               "GemmaTokenizer", "GemmaTokenizerFast"};
    bool applies = !cls || cls->type == JSON_NULL;
    for (size_t i = 0; !applies && i < sizeof llama_family / sizeof *llama_family; i++)
        applies = !strcmp(cls->str, llama_family[i]);
    if (!applies)
        return DATTN_OK;
    static const char *const flags[2] = {"add_bos_token", "add_eos_token"};
    static const char *const names[2] = {"bos_token", "eos_token"};
    int want[2] = {-1, -1};   /* -1: not said */
    int32_t id[2] = {-1, -1};
    for (int k = 0; k < 2; k++) {
        const json_tok *f = top_member(doc, flags[k]);
        if (!f || f->type == JSON_NULL)
            continue;
        if (f->type != JSON_TRUE && f->type != JSON_FALSE)
            return dattn_fail(DATTN_E_FORMAT, "%s: %s is %s, expected true or false", path,
                              flags[k], json_type_name(f->type));
        want[k] = f->type == JSON_TRUE;
        if (!want[k])
            continue;
        const json_tok *tok = top_member(doc, names[k]);
        if (tok && tok->type == JSON_OBJECT) {   /* an AddedToken: {"content": ...} */
            const json_tok *c = NULL;
            for (int j = 1, m = 0; m < tok->n; m++, j = tok[j + 1].end)
                if (!strcmp(tok[j].str, "content"))
                    c = &tok[j + 1];
            tok = c;
        }
        if (!tok || tok->type != JSON_STRING)
            return dattn_fail(DATTN_E_FORMAT, "%s: %s is true but %s is not a token (a string "
                              "or an object with a content)", path, flags[k], names[k]);
        if ((id[k] = special_id(b, tok->str, tok->len)) < 0)
            return dattn_fail(DATTN_E_FORMAT, "%s: %s '%.60s' is not a token of tokenizer.json",
                              path, names[k], tok->str);
    }
    if (want[0] < 0 && want[1] < 0)
        return DATTN_OK;
    /* The class's defaults fill what the file leaves out: a BOS, no EOS. */
    if (want[0] < 0 && (want[0] = t->bos_id >= 0 || b->n_prefix > 0))
        id[0] = b->n_prefix ? b->prefix[0] : t->bos_id;
    b->n_prefix = b->n_suffix = 0;
    if (want[0] > 0)
        b->prefix[b->n_prefix++] = id[0];
    if (want[1] > 0)
        b->suffix[b->n_suffix++] = id[1];
    t->bos_id = b->n_prefix ? b->prefix[0] : -1;
    t->eos_id = b->n_suffix ? b->suffix[0] : -1;
    return DATTN_OK;
}

dattn_status tokenizer_load_texts(tokenizer *t, const char *name, const char *text, size_t len,
                                  const char *cfg_name, const char *cfg, size_t cfg_len)
{
    dattn_status st = tokenizer_load_json_text(t, name, text, len);
    if (st != DATTN_OK || !cfg)
        return st;
    json_doc *doc = NULL;
    json_error je;
    if ((st = json_parse_ex(cfg, cfg_len, true, &doc, &je)) != DATTN_OK)
        dattn_error_prefix("%s: ", cfg_name);
    else
        st = apply_config(t, cfg_name, doc);
    json_free(doc);
    if (st != DATTN_OK)
        tokenizer_free(t);
    return st;
}

dattn_status tokenizer_load_dir(tokenizer *t, const char *dir)
{
    *t = (tokenizer){0};
    size_t n = strlen(dir) + 32;
    char *path = dattn_alloc(n, "tokenizer path"), *cfg_path = dattn_alloc(n, "tokenizer path");
    char *text = NULL, *cfg = NULL;
    size_t len = 0, cfg_len = 0;
    dattn_status st = DATTN_E_NOMEM;
    if (!path || !cfg_path)
        goto done;
    snprintf(path, n, "%s/tokenizer.json", dir);
    snprintf(cfg_path, n, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        st = dattn_fail(DATTN_E_IO, "%s: cannot open: %s", path, strerror(errno));
        goto done;
    }
    st = read_small(f, path, &text, &len);
    fclose(f);
    if (st != DATTN_OK)
        goto done;
    if ((f = fopen(cfg_path, "rb"))) {   /* optional: without it tokenizer.json says everything */
        st = read_small(f, cfg_path, &cfg, &cfg_len);
        fclose(f);
    } else if (errno != ENOENT) {
        st = dattn_fail(DATTN_E_IO, "%s: cannot open: %s", cfg_path, strerror(errno));
    }
    if (st == DATTN_OK)
        st = tokenizer_load_texts(t, path, text, len, cfg_path, cfg, cfg_len);
done:
    dattn_free(text);
    dattn_free(cfg);
    dattn_free(path);
    dattn_free(cfg_path);
    return st;
}

dattn_status tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special,
                              int32_t *ids, int max, int *n)
{
    if (t->bpe)
        return bpe_encode(t->bpe, text, len, add_special, ids, max, n);
    return t->encode(t, text, len, ids, max, n);
}

dattn_status tokenizer_decode(const tokenizer *t, const int32_t *ids, int n_ids, char *buf,
                              size_t cap, size_t *len)
{
    if (t->bpe)
        return bpe_decode(t->bpe, ids, n_ids, false, buf, cap, len);
    /* The byte tokenizer (and none, which refuses): each token's bytes in turn. */
    size_t at = 0;
    dattn_status st = DATTN_OK;
    for (int i = 0; i < n_ids; i++) {
        char one[8];
        size_t n = 0;
        if ((st = t->token_bytes(t, ids[i], one, sizeof one, &n)) != DATTN_OK)
            break;
        if (at + n <= cap)
            memcpy(buf + at, one, n);
        at += n;
    }
    *len = at;
    if (st == DATTN_OK && at > cap)
        st = dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: the text is %zu bytes, the buffer "
                        "holds %zu", at, cap);
    return st;
}

void tokenizer_free(tokenizer *t)
{
    bpe_free(t->bpe);
    *t = (tokenizer){0};
}
