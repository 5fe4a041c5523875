/* Byte-level BPE (DESIGN §6): the vocabulary as bytes, merges by rank in a hash keyed on the
 * pair, added tokens matched first, NFC, the GPT-2 / Llama-3 pre-tokenizers and the template's
 * special tokens. bpe_json.c fills one from a Hugging Face tokenizer.json; bpe.c encodes. */
#ifndef DATTN_BPE_H
#define DATTN_BPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dattn.h"
#include "pretok.h"

#define BPE_MAX_TEMPLATE 8     /* special tokens before or after $A in a template */

typedef struct bpe_added {
    int32_t id;
    uint32_t offset, len;      /* content in bpe.pool */
    bool special, normalized, lstrip, rstrip;
} bpe_added;

typedef struct bpe_merge {     /* one slot of the pair hash; a < 0: empty */
    int32_t a, b, rank, out;
} bpe_merge;

typedef struct bpe {
    int n_ids;                 /* ids are 0..n_ids-1; some may be unused */
    char *pool;                /* every token's bytes, and the added tokens' content */
    uint32_t *tok_offset;      /* [n_ids] into pool */
    uint32_t *tok_len;         /* [n_ids] */
    uint8_t *tok_kind;         /* [n_ids] BPE_TOK_* */
    int32_t byte_id[256];      /* the id of each single byte, -1 if the vocabulary lacks it */

    int32_t *vocab_hash;       /* [vocab_cap] ids of the model vocab by their bytes, -1 empty */
    size_t vocab_cap;          /* a power of two */
    bpe_merge *merge_hash;     /* [merge_cap] by (a, b) */
    size_t merge_cap;
    int n_merges;

    int n_added;
    bpe_added *added;          /* [n_added] */
    int *added_order;          /* [n_added] indices: by first byte, then longest first */
    int added_first[257];      /* added_order[added_first[c] .. added_first[c+1]) start with c */

    bool nfc;                  /* normalizer NFC */
    pretok_kind pretok;
    bool add_prefix_space;     /* ByteLevel: a space before each piece that lacks one */
    bool ignore_merges;        /* a word that is itself in the vocab is one token */

    int n_prefix, n_suffix;    /* the post-processor's single template around $A */
    int32_t prefix[BPE_MAX_TEMPLATE], suffix[BPE_MAX_TEMPLATE];
} bpe;

enum { BPE_TOK_NONE = 0, BPE_TOK_VOCAB = 1, BPE_TOK_ADDED = 2 };

/* Parse the tokenizer.json text[0..len); `name` (the file) leads every message:
 * "tokenizer.json: model.merges[17]: 'ab' is not in model.vocab". DATTN_E_FORMAT for a
 * malformed file, DATTN_E_UNSUPPORTED for a valid one that asks for what is not built. */
dattn_status bpe_load(const char *name, const char *text, size_t len, bpe **out);
void bpe_free(bpe *b);

/* Text -> ids, added tokens recognized; add_special puts the template's tokens around them.
 * *n is the count needed; at most max are written (DATTN_E_INVALID_ARG when more were). */
dattn_status bpe_encode(const bpe *b, const char *text, size_t len, bool add_special,
                        int32_t *ids, int max, int *n);

/* Internal to bpe.c / bpe_json.c: the vocab id of these bytes, or -1. */
int32_t bpe_vocab_find(const bpe *b, const char *bytes, size_t len);
uint64_t bpe_hash_bytes(const char *bytes, size_t len);
uint64_t bpe_hash_pair(int32_t a, int32_t b);

#endif
