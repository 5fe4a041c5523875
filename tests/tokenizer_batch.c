/* Many texts through one tokenizer in one process, for tests/test_tokenizer_hf.py (loading a
 * 17 MB tokenizer.json per text would take minutes). Public API only (dattn.h).
 *
 *   tokenizer_batch PATH encode < texts   texts separated by NUL bytes; per text two lines: the
 *                                         ids without and with special tokens, space-separated
 *   tokenizer_batch PATH decode < lists   one line of comma-separated ids per text; per text
 *                                         the byte count of the decoded text on a line, then
 *                                         those bytes
 * Exit 0, or 2 with the library's message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dattn.h"

static char *read_stdin(size_t *len)
{
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, stdin);
        if (n < cap)
            break;
        char *more = realloc(buf, cap * 2);
        if (!more)
            free(buf);
        buf = more;
        cap *= 2;
    }
    if (buf)
        buf[n] = '\0';   /* the loop stops with n < cap: room for it */
    *len = n;
    return buf;
}

static int fail(const char *what, dattn_status st)
{
    fprintf(stderr, "tokenizer_batch: %s: %s: %s\n", what, dattn_status_name(st),
            dattn_last_error());
    return 2;
}

static int encode(const dattn_tokenizer *tok, const char *text, size_t len)
{
    static int32_t *ids;
    static int cap;
    for (int special = 0; special < 2; special++) {
        int n = 0;
        dattn_status st = dattn_tokenizer_encode(tok, text, len, special, ids, cap, &n);
        if (st == DATTN_E_INVALID_ARG && n > cap) {
            free(ids);
            cap = n;
            if (!(ids = malloc(sizeof *ids * (size_t)cap)))
                return fail("encode", DATTN_E_NOMEM);
            st = dattn_tokenizer_encode(tok, text, len, special, ids, cap, &n);
        }
        if (st != DATTN_OK)
            return fail("encode", st);
        for (int i = 0; i < n; i++)
            printf(i ? " %d" : "%d", (int)ids[i]);
        printf("\n");
    }
    return 0;
}

static int decode(const dattn_tokenizer *tok, char *line)
{
    static int32_t ids[1 << 16];
    static char out[1 << 22];
    int n = 0;
    for (char *p = strtok(line, ","); p && n < (int)(sizeof ids / sizeof *ids);
         p = strtok(NULL, ","))
        ids[n++] = (int32_t)strtol(p, NULL, 10);
    size_t len = 0;
    dattn_status st = dattn_tokenizer_decode(tok, ids, n, out, sizeof out, &len);
    if (st != DATTN_OK)
        return fail("decode", st);
    printf("%zu\n", len);
    fwrite(out, 1, len, stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[2], "encode") && strcmp(argv[2], "decode"))) {
        fprintf(stderr, "usage: tokenizer_batch PATH encode|decode < input\n");
        return 2;
    }
    dattn_tokenizer *tok = NULL;
    dattn_status st = dattn_tokenizer_load(argv[1], &tok);
    if (st != DATTN_OK)
        return fail(argv[1], st);
    size_t len = 0;
    char *in = read_stdin(&len);
    int rc = in ? 0 : fail("stdin", DATTN_E_NOMEM);
    if (!strcmp(argv[2], "encode")) {
        for (size_t at = 0; !rc && at < len;) {
            const char *end = memchr(in + at, '\0', len - at);
            size_t n = end ? (size_t)(end - (in + at)) : len - at;
            rc = encode(tok, in + at, n);
            at += n + 1;
        }
    } else {
        for (size_t at = 0; !rc && at < len;) {
            char *end = memchr(in + at, '\n', len - at);
            if (end)
                *end = '\0';   /* (a last line without one ends at in[len], a NUL) */
            size_t n = end ? (size_t)(end - (in + at)) : len - at;
            rc = decode(tok, in + at);
            at += n + 1;
        }
    }
    free(in);
    dattn_tokenizer_free(tok);
    if (fflush(stdout))
        rc = 2;
    return rc;
}
