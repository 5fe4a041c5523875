/* Tokenizers behind one small interface: the model names one in its metadata and the session
 * calls encode / token_bytes through it. Only the byte tokenizer exists today (ids 0-255 are the
 * bytes themselves); a BPE tokenizer fills the same two functions. */
#ifndef DATTN_TOKENIZER_H
#define DATTN_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "dattn.h"

typedef struct tokenizer {
    const char *name;
    int vocab_size;
    /* Text -> ids: *n is the count the text needs; at most max are written. */
    dattn_status (*encode)(const struct tokenizer *t, const char *text, size_t len, int32_t *ids,
                           int max, int *n);
    /* The bytes of one id (*n of them; ids without text give 0 bytes). */
    dattn_status (*token_bytes)(const struct tokenizer *t, int32_t id, char *buf, size_t cap,
                                size_t *n);
} tokenizer;

/* Sets t up for the tokenizer the metadata names; DATTN_E_FORMAT for an unknown name or a vocab
 * it cannot serve. */
dattn_status tokenizer_init(tokenizer *t, const char *name, int vocab_size);

#endif
