/* The pre-tokenizer regexes of byte-level BPE (DESIGN §6) as hand-written scanners over Unicode
 * classes: the GPT-2 pattern (GPT-2, GPT-NeoX), the Llama-3 pattern and Qwen2's variant of it. Only these exact pattern
 * strings are recognized; anything else is refused by the loader, never approximated. */
#ifndef DATTN_PRETOK_H
#define DATTN_PRETOK_H

#include <stddef.h>

typedef enum pretok_kind {
    PRETOK_NONE,       /* the whole piece is one word */
    PRETOK_GPT2,
    PRETOK_LLAMA3,
    PRETOK_QWEN2,      /* Llama-3's with \p{N} one digit at a time */
} pretok_kind;

/* The regex source strings as tokenizer.json spells them. */
extern const char pretok_gpt2_pattern[];
extern const char pretok_llama3_pattern[];
extern const char pretok_qwen2_pattern[];

/* The end of the match that starts at s[pos] (pos < len): what the regex's leftmost-first
 * alternation matches there. Always > pos; the patterns match every character. */
size_t pretok_next(pretok_kind kind, const char *s, size_t len, size_t pos);

#endif
