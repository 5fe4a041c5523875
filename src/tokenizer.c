/* The tokenizer interface (tokenizer.h): the byte tokenizer, where each byte of the text is one
 * token, id = byte value (a vocabulary above 256 is allowed: ids past 255 are special tokens
 * without text), and the hook that loads a byte-level BPE from a tokenizer.json (src/bpe.h). */
#include "tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "bpe.h"
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

static dattn_status bpe_token(const tokenizer *t, int32_t id, char *buf, size_t cap, size_t *n)
{
    const bpe *b = t->bpe;
    *n = 0;
    if (id < 0 || id >= b->n_ids)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: token id %d is outside the "
                          "vocabulary 0..%d", (int)id, b->n_ids - 1);
    if (b->tok_kind[id] == BPE_TOK_NONE)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: token id %d is not used by the "
                          "vocabulary", (int)id);
    size_t len = b->tok_len[id];
    *n = len;
    if (len > cap)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: token %d is %zu bytes, the buffer "
                          "holds %zu", (int)id, len, cap);
    memcpy(buf, b->pool + b->tok_offset[id], len);
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

dattn_status tokenizer_load_json(tokenizer *t, const char *path)
{
    *t = (tokenizer){0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return dattn_fail(DATTN_E_IO, "%s: cannot open: %s", path, strerror(errno));
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return dattn_fail(DATTN_E_IO, "%s: cannot find its size", path);
    }
    if (size > TOKENIZER_MAX_BYTES) {
        fclose(f);
        return dattn_fail(DATTN_E_FORMAT, "%s: %ld bytes is too large for a tokenizer.json",
                          path, size);
    }
    char *text = dattn_alloc((size_t)size + 1, "tokenizer.json text");
    if (!text) {
        fclose(f);
        return DATTN_E_NOMEM;
    }
    size_t got = fread(text, 1, (size_t)size, f);
    int bad = ferror(f);
    fclose(f);
    dattn_status st;
    if (got != (size_t)size || bad)
        st = dattn_fail(DATTN_E_IO, "%s: read %zu of %ld bytes", path, got, size);
    else
        st = tokenizer_load_json_text(t, path, text, got);
    dattn_free(text);
    return st;
}

dattn_status tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special,
                              int32_t *ids, int max, int *n)
{
    if (t->bpe)
        return bpe_encode(t->bpe, text, len, add_special, ids, max, n);
    return t->encode(t, text, len, ids, max, n);
}

void tokenizer_free(tokenizer *t)
{
    bpe_free(t->bpe);
    *t = (tokenizer){0};
}
