/* Tokenizers behind one small interface: the model names one in its metadata (or brings a
 * Hugging Face tokenizer.json) and the session calls encode / token_bytes through it. Two kinds:
 * the byte tokenizer (ids 0-255 are the bytes themselves) and byte-level BPE (src/bpe.h). */
#ifndef DATTN_TOKENIZER_H
#define DATTN_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dattn.h"

struct bpe;

typedef struct tokenizer {
    const char *name;          /* "bytes" or "bpe" */
    int vocab_size;            /* ids are 0..vocab_size-1 */
    /* Text -> ids: *n is the count the text needs; at most max are written. No BOS/EOS are
     * added (tokenizer_encode adds them); special tokens written in the text are recognized. */
    dattn_status (*encode)(const struct tokenizer *t, const char *text, size_t len, int32_t *ids,
                           int max, int *n);
    /* The bytes of one id (*n of them; ids without text give 0 bytes). */
    dattn_status (*token_bytes)(const struct tokenizer *t, int32_t id, char *buf, size_t cap,
                                size_t *n);
    int32_t bos_id, eos_id;    /* -1 when none: the first token the post-processor's template
                                  puts before the text and the last it puts after it */
    struct bpe *bpe;           /* the BPE tables; NULL for the byte tokenizer */
} tokenizer;

/* The public handle (dattn.h): one wraps the tokenizer a model holds, dattn_tokenizer_load makes
 * others. */
struct dattn_tokenizer {
    tokenizer t;
};

/* Sets t up for the tokenizer the metadata names; DATTN_E_FORMAT for an unknown name or a vocab
 * it cannot serve. */
dattn_status tokenizer_init(tokenizer *t, const char *name, int vocab_size);

/* Sets t up from a Hugging Face tokenizer.json at `path` (byte-level BPE: GPT-2, GPT-NeoX,
 * Llama-3 and files built like them). DATTN_E_IO when it cannot be read, DATTN_E_FORMAT with a
 * message naming the file and the field for a malformed one, DATTN_E_UNSUPPORTED naming what it
 * asks for that this build cannot do. t is left empty on failure; release with tokenizer_free.
 * A 7.5 MB file of 128k tokens loads in about 0.1 s, 18 MB of 300k tokens in 0.3 s. */
dattn_status tokenizer_load_json(tokenizer *t, const char *path);
/* DIR/tokenizer.json, then DIR/tokenizer_config.json when there is one: its add_bos_token /
 * add_eos_token (with bos_token / eos_token) set the special tokens around a text, as
 * transformers' Llama-family tokenizers do. A malformed config is DATTN_E_FORMAT naming it. */
dattn_status tokenizer_load_dir(tokenizer *t, const char *dir);
/* tokenizer.json's and tokenizer_config.json's texts (cfg NULL: none), in memory, not kept; the
 * names lead the messages. tokenizer_load_dir reads the files and calls this. */
dattn_status tokenizer_load_texts(tokenizer *t, const char *name, const char *text, size_t len,
                                  const char *cfg_name, const char *cfg, size_t cfg_len);
/* The same from text[0..len) in memory (not kept); `name` leads the messages. */
dattn_status tokenizer_load_json_text(tokenizer *t, const char *name, const char *text,
                                      size_t len);

/* encode, with the post-processor's special tokens (e.g. Llama-3's <|begin_of_text|>) around
 * the text when add_special; the byte tokenizer has none. */
dattn_status tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special,
                              int32_t *ids, int max, int *n);

/* The text of ids through the tokenizer's decoder (bpe_decode; the byte tokenizer: the bytes).
 * *len is the length needed even when cap is short (then DATTN_E_INVALID_ARG). */
dattn_status tokenizer_decode(const tokenizer *t, const int32_t *ids, int n_ids, char *buf,
                              size_t cap, size_t *len);

/* Releases what tokenizer_load_json allocated (nothing for the byte tokenizer); t is then
 * empty, and freeing it again is harmless. */
void tokenizer_free(tokenizer *t);

#endif
