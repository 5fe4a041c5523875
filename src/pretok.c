/* The GPT-2 and Llama-3 pre-tokenizer regexes as scanners (DESIGN §6; see pretok.h). Each
 * function tries the pattern's alternatives in order at one position, as a backtracking regex
 * engine would, and returns where the first one that matches ends. */
#include "pretok.h"

#include "unicode.h"

const char pretok_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const char pretok_llama3_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char pretok_qwen2_pattern[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef struct cursor {
    const char *s;
    size_t len;
} cursor;

/* The code point at pos (pos < len) and where the next one starts. */
static uint32_t at(const cursor *c, size_t pos, size_t *next)
{
    size_t n;
    uint32_t cp = uni_decode(c->s + pos, c->len - pos, &n);
    *next = pos + n;
    return cp;
}

static int class_at(const cursor *c, size_t pos)
{
    size_t next;
    return pos < c->len ? uni_class(at(c, pos, &next)) : -1;
}

/* The end of the run of characters of class cls from pos (pos itself if none). */
static size_t run_of(const cursor *c, size_t pos, int cls)
{
    while (pos < c->len) {
        size_t next;
        if (uni_class(at(c, pos, &next)) != cls)
            break;
        pos = next;
    }
    return pos;
}

/* 's 't 're 've 'm 'll 'd after the apostrophe at pos; 0 if none. icase: as (?i:...) does,
 * ASCII either case and U+017F LATIN SMALL LETTER LONG S (it folds to 's'). */
static size_t contraction(const cursor *c, size_t pos, int icase)
{
    static const char *const tails[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    if (pos >= c->len || c->s[pos] != '\'')
        return 0;
    for (int k = 0; k < 7; k++) {
        size_t p = pos + 1;
        const char *t = tails[k];
        for (; *t && p < c->len; t++) {
            unsigned char ch = (unsigned char)c->s[p];
            if (ch == (unsigned char)*t || (icase && (ch | 0x20) == (unsigned char)*t && ch >= 'A' &&
                                            ch <= 'Z'))
                p++;
            else if (icase && *t == 's' && ch == 0xC5 && p + 1 < c->len &&
                     (unsigned char)c->s[p + 1] == 0xBF)
                p += 2;
            else
                break;
        }
        if (!*t)
            return p;
    }
    return 0;
}

/* \s+(?!\S) then \s+, from the white space at pos: a run followed by more text gives back its
 * last character (it then leads the next word) unless it is a single character. */
static size_t spaces(const cursor *c, size_t pos)
{
    size_t end = run_of(c, pos, UNI_SPACE);
    if (end == c->len)
        return end;
    size_t last = pos, p = pos;
    while (p < end) {
        size_t next;
        at(c, p, &next);
        last = p;
        p = next;
    }
    return last > pos ? last : end;
}

/* ' ?X+' for X a class: the optional ASCII space, then a run of X; 0 if no X there. */
static size_t space_then_run(const cursor *c, size_t pos, int cls)
{
    size_t q = c->s[pos] == ' ' ? pos + 1 : pos;
    if (class_at(c, q) == cls)
        return run_of(c, q, cls);
    return 0;
}

static size_t next_gpt2(const cursor *c, size_t pos)
{
    size_t end;
    if ((end = contraction(c, pos, 0)) || (end = space_then_run(c, pos, UNI_LETTER)) ||
        (end = space_then_run(c, pos, UNI_NUMBER)) || (end = space_then_run(c, pos, UNI_OTHER)))
        return end;
    return spaces(c, pos);      /* what is left at pos is white space */
}

static int is_crlf(const cursor *c, size_t pos)
{
    return pos < c->len && (c->s[pos] == '\r' || c->s[pos] == '\n');
}

/* max_digits: \p{N}{1,3} for Llama-3, \p{N} for Qwen2. */
static size_t next_llama3(const cursor *c, size_t pos, int max_digits)
{
    size_t end, next;
    if ((end = contraction(c, pos, 1)))
        return end;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    int cls = uni_class(at(c, pos, &next));
    if (cls == UNI_LETTER)
        return run_of(c, pos, UNI_LETTER);
    if (cls != UNI_NUMBER && !is_crlf(c, pos) && class_at(c, next) == UNI_LETTER)
        return run_of(c, next, UNI_LETTER);
    /* \p{N}{1,3} */
    if (cls == UNI_NUMBER) {
        end = next;
        for (int k = 1; k < max_digits && class_at(c, end) == UNI_NUMBER; k++)
            at(c, end, &end);
        return end;
    }
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*' */
    if ((end = space_then_run(c, pos, UNI_OTHER))) {
        while (is_crlf(c, end))
            end++;
        return end;
    }
    /* \s*[\r\n]+: through the last \r or \n of the white-space run */
    size_t run_end = run_of(c, pos, UNI_SPACE), last_nl = 0;
    for (size_t p = pos; p < run_end; p = next) {
        at(c, p, &next);
        if (is_crlf(c, p))
            last_nl = next;
    }
    if (last_nl)
        return last_nl;
    return spaces(c, pos);
}

size_t pretok_next(pretok_kind kind, const char *s, size_t len, size_t pos)
{
    cursor c = {s, len};
    switch (kind) {
    case PRETOK_GPT2:
        return next_gpt2(&c, pos);
    case PRETOK_LLAMA3:
        return next_llama3(&c, pos, 3);
    case PRETOK_QWEN2:
        return next_llama3(&c, pos, 1);
    case PRETOK_NONE:
        break;
    }
    return len;
}
