/* The byte tokenizer: each byte of the text is one token, id = byte value. A vocabulary above 256
 * is allowed (ids past 255 are special tokens without text). */
#include "tokenizer.h"

#include <string.h>

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
    if (cap < 1)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenizer: the buffer has no room for a byte");
    buf[0] = (char)(unsigned char)id;
    *n = 1;
    return DATTN_OK;
}

dattn_status tokenizer_init(tokenizer *t, const char *name, int vocab_size)
{
    if (!strcmp(name, "bytes")) {
        if (vocab_size < 256)
            return dattn_fail(DATTN_E_FORMAT, "tokenizer 'bytes' needs vocab_size >= 256, the "
                              "model has %d", vocab_size);
        *t = (tokenizer){"bytes", vocab_size, bytes_encode, bytes_token};
        return DATTN_OK;
    }
    return dattn_fail(DATTN_E_FORMAT, "tokenizer '%s' is not supported (this build knows: bytes)",
                      name);
}
