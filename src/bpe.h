/* BPE from a Hugging Face tokenizer.json (DESIGN §6), two families: byte-level (GPT-2, GPT-NeoX,
 * Llama-3, Qwen2: the vocabulary as bytes through the GPT-2 byte map, a pre-tokenizer regex) and
 * SentencePiece-style (Llama-2, Mistral, Gemma: tokens are strings of characters with U+2581 for
 * a space, merges over characters, bytes of unknown characters as <0xXX> tokens). Merges by rank
 * in a hash keyed on the pair, added tokens matched first, the normalizer's steps, the template's
 * special tokens. bpe_json.c fills one from a tokenizer.json; bpe.c encodes and decodes. */
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

enum { BPE_MAX_STEPS = 8, BPE_STEP_TEXT = 512 };

/* The Metaspace pre-tokenizer's (and decoder's) prepend_scheme. */
typedef enum { META_NONE = 0, META_ALWAYS, META_FIRST, META_NEVER } meta_scheme;

/* One step of the normalizer or of the decoder, in the file's order. Strings live in step_text. */
typedef struct bpe_step {
    enum {
        NORM_NFC, NORM_PREPEND, NORM_REPLACE,                     /* normalizers */
        DEC_REPLACE, DEC_BYTE_FALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE   /* decoders */
    } kind;
    uint16_t a_off, a_len;     /* Prepend: the text; Replace: the pattern; Strip, Metaspace: the
                                  character */
    uint16_t b_off, b_len;     /* Replace: what the pattern becomes */
    int start, stop;           /* Strip: characters cut from the front and the back */
    meta_scheme scheme;        /* Metaspace */
} bpe_step;

typedef struct bpe {
    bool sentencepiece;        /* the family: SentencePiece-style (else byte-level) */
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

    int n_norm, n_dec;         /* the normalizer's steps; the decoder's (SentencePiece-style) */
    bpe_step norm[BPE_MAX_STEPS], dec[BPE_MAX_STEPS];
    char step_text[BPE_STEP_TEXT];
    size_t step_text_used;
    bool nfc;                  /* some step is NFC */
    pretok_kind pretok;
    bool add_prefix_space;     /* ByteLevel: a space before each piece that lacks one */
    bool ignore_merges;        /* a word that is itself in the vocab is one token */

    int n_prefix, n_suffix;    /* the post-processor's single template around $A */
    int32_t prefix[BPE_MAX_TEMPLATE], suffix[BPE_MAX_TEMPLATE];

    /* SentencePiece-style only. */
    meta_scheme metaspace;     /* a Metaspace pre-tokenizer (META_NONE: none): ' ' -> its
                                  character, prepended by the scheme */
    char meta_char[4];         /* that character's UTF-8 */
    size_t meta_len;
    bool metaspace_split;      /* ... and words split before each such character */
    bool byte_fallback;        /* unknown characters as their bytes' <0xXX> tokens */
    bool fuse_unk;             /* a run of unknown characters is one unk token */
    int32_t unk_id;            /* -1: none (an unknown character is then an error) */
    int32_t byte_token[256];   /* the id of "<0xXX>", -1 where the vocabulary lacks it */

    /* What each token prints in a stream (bpe_decode of it alone, continuing a text), made at
     * load so the token path neither allocates nor runs the decoder. */
    char *stream_pool;
    uint32_t *stream_offset;   /* [n_ids + 1]: token id's bytes are [offset[id], offset[id+1]) */
} bpe;

enum { BPE_MAX_IDS = 1 << 24 };

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

/* The text of ids[0..n_ids) through the decoder (byte-level: each token's bytes; SentencePiece:
 * the file's chain of Replace, ByteFallback, Fuse, Strip and Metaspace steps, as Hugging Face's
 * decode(ids, skip_special_tokens=False) runs it, except that bytes which form no UTF-8 stay
 * bytes instead of becoming U+FFFD). stream: the ids continue a text (the decoder's first-token
 * rules, e.g. dropping the leading space, do not apply): what a stream prints per token. *len is
 * the length needed even when cap is short (then DATTN_E_INVALID_ARG). */
dattn_status bpe_decode(const bpe *b, const int32_t *ids, int n_ids, bool stream, char *buf,
                        size_t cap, size_t *len);
/* DATTN_E_INVALID_ARG naming the id when it is outside 0..n_ids-1 or unused. */
dattn_status bpe_check_id(const bpe *b, int32_t id);
/* Fills stream_pool at load (bpe_decode.c). */
dattn_status bpe_stream_init(bpe *b);
/* The bytes token id prints in a stream (id checked by the caller). */
static inline const char *bpe_stream_bytes(const bpe *b, int32_t id, size_t *n)
{
    *n = b->stream_offset[id + 1] - b->stream_offset[id];
    return b->stream_pool + b->stream_offset[id];
}
/* s[0..n) through the normalizer's steps, into a new buffer (dattn_free it), NUL-terminated. */
dattn_status bpe_normalize(const bpe *b, const char *s, size_t n, char **out, size_t *out_len);

/* Internal to bpe.c / bpe_json.c: the vocab id of these bytes, or -1. */
int32_t bpe_vocab_find(const bpe *b, const char *bytes, size_t len);
uint64_t bpe_hash_bytes(const char *bytes, size_t len);
uint64_t bpe_hash_pair(int32_t a, int32_t b);

#endif
