/* See utf8_stream.h. */
#include "utf8_stream.h"

#include <string.h>

void utf8_stream_init(utf8_stream *s, FILE *out)
{
    s->out = out;
    s->n_held = 0;
}

/* The length a lead byte announces (2..4), or 0 for ASCII, a continuation byte or a byte that
 * never starts a character (0xC0, 0xC1, 0xF5..0xFF). */
static size_t lead_length(unsigned char c)
{
    if (c >= 0xC2 && c <= 0xDF)
        return 2;
    if (c >= 0xE0 && c <= 0xEF)
        return 3;
    if (c >= 0xF0 && c <= 0xF4)
        return 4;
    return 0;
}

size_t utf8_unfinished_tail(const unsigned char *b, size_t n)
{
    /* Back over at most three continuation bytes to the byte that starts the last character. */
    for (size_t k = 1; k <= 4 && k <= n; k++) {
        unsigned char c = b[n - k];
        if ((c & 0xC0) == 0x80)
            continue;
        size_t want = lead_length(c);
        return want > k ? k : 0;
    }
    return 0;
}

void utf8_stream_put(utf8_stream *s, const char *bytes, size_t n)
{
    const unsigned char *b = (const unsigned char *)bytes;
    /* Finish the held character first, from the front of the new bytes. */
    while (s->n_held && n) {
        if ((*b & 0xC0) != 0x80) {   /* it will never finish: out as it is */
            utf8_stream_flush(s);
            break;
        }
        s->held[s->n_held++] = *b++;
        n--;
        if (s->n_held == lead_length(s->held[0]))
            utf8_stream_flush(s);
    }
    if (!n)
        return;
    size_t tail = utf8_unfinished_tail(b, n);
    fwrite(b, 1, n - tail, s->out);
    memcpy(s->held, b + n - tail, tail);
    s->n_held = tail;
}

void utf8_stream_flush(utf8_stream *s)
{
    if (s->n_held)
        fwrite(s->held, 1, s->n_held, s->out);
    s->n_held = 0;
}
