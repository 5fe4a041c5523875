/* `dattn tokenize` and `dattn detokenize`: a model's (or a tokenizer.json's) tokenizer on its own,
 * for scripts and for checking ids against other implementations.
 *   dattn tokenize -m PATH [--raw] (-p TEXT | -f FILE)   ids, space-separated, on one line
 *   dattn detokenize -m PATH --ids 1,2,3                 the exact bytes, to stdout */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static int usage_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "dattn: %s: %s\n", cmd, msg);
    if (!strcmp(cmd, "tokenize"))
        fprintf(stderr, "usage: dattn tokenize -m PATH [--raw] (-p TEXT | -f FILE)\n");
    else
        fprintf(stderr, "usage: dattn detokenize -m PATH --ids 1,2,3\n");
    return 2;
}

static int load(const char *cmd, const char *path, dattn_tokenizer **tok)
{
    dattn_status st = dattn_tokenizer_load(path, tok);
    if (st != DATTN_OK) {
        tool_report(cmd, st);
        return -1;
    }
    return 0;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *cmd = "tokenize", *model = NULL, *text = NULL, *file = NULL;
    int raw = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "--raw"))
            raw = 1;
        else if (!strcmp(a, "-m") && has_value)
            model = argv[++i];
        else if (!strcmp(a, "-p") && has_value)
            text = argv[++i];
        else if (!strcmp(a, "-f") && has_value)
            file = argv[++i];
        else
            return usage_error(cmd, !strcmp(a, "-m") || !strcmp(a, "-p") || !strcmp(a, "-f") ?
                               "an option is missing its value" : "unknown option");
    }
    if (!model)
        return usage_error(cmd, "-m PATH is required");
    if (!text == !file)
        return usage_error(cmd, "give exactly one of -p TEXT and -f FILE");

    size_t len;
    char *owned = NULL;
    if (file) {
        if (!(owned = tool_read_file(file, &len))) {
            fprintf(stderr, "dattn: %s: cannot read '%s': %s\n", cmd, file, strerror(errno));
            return 2;
        }
        text = owned;
    } else {
        len = strlen(text);
    }
    dattn_tokenizer *tok;
    if (load(cmd, model, &tok)) {
        free(owned);
        return 2;
    }
    /* A token is at least one byte, plus the template's few: one call almost always does. */
    int rc = 2, n = 0;
    size_t max = len + 64;
    int32_t *ids = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (max > (size_t)0x7fffffff) {
            fprintf(stderr, "dattn: %s: the text is too long\n", cmd);
            goto done;
        }
        free(ids);
        if (!(ids = malloc(max * sizeof *ids))) {
            fprintf(stderr, "dattn: %s: out of memory\n", cmd);
            goto done;
        }
        dattn_status st = dattn_tokenizer_encode(tok, text, len, !raw, ids, (int)max, &n);
        if (st == DATTN_OK)
            break;
        if (st != DATTN_E_INVALID_ARG || (size_t)n <= max || attempt) {
            tool_report(cmd, st);
            goto done;
        }
        max = (size_t)n;
    }
    for (int i = 0; i < n; i++)
        printf(i ? " %d" : "%d", (int)ids[i]);
    printf("\n");
    rc = fflush(stdout) ? 2 : 0;
done:
    free(ids);
    free(owned);
    dattn_tokenizer_free(tok);
    return rc;
}

int cmd_detokenize(int argc, char **argv)
{
    const char *cmd = "detokenize", *model = NULL, *list = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-m") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(a, "--ids") && i + 1 < argc)
            list = argv[++i];
        else
            return usage_error(cmd, !strcmp(a, "-m") || !strcmp(a, "--ids") ?
                               "an option is missing its value" : "unknown option");
    }
    if (!model || !list)
        return usage_error(cmd, "-m PATH and --ids are required");
    /* Check the whole list before writing a byte. */
    size_t n_ids = 0;
    if (strlen(list) / 2 + 1 > (size_t)INT32_MAX) {
        fprintf(stderr, "dattn: %s: --ids lists too many ids\n", cmd);
        return 2;
    }
    int32_t *ids = malloc((strlen(list) / 2 + 1) * sizeof *ids);
    if (!ids) {
        fprintf(stderr, "dattn: %s: out of memory\n", cmd);
        return 2;
    }
    for (const char *p = list; *p;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 0x7fffffff || (*end && *end != ',') ||
            (*end == ',' && !end[1])) {
            fprintf(stderr, "dattn: %s: --ids '%s' is not a comma-separated list of ids\n", cmd,
                    list);
            free(ids);
            return 2;
        }
        ids[n_ids++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    dattn_tokenizer *tok;
    if (load(cmd, model, &tok)) {
        free(ids);
        return 2;
    }
    /* The decoder's text of all the ids (a SentencePiece file drops the text's leading space),
     * in a buffer grown once to the length the first call reports. */
    int rc = 0;
    size_t cap = 1 << 16, total = 0;
    char *out = malloc(cap);
    dattn_status st = out ? dattn_tokenizer_decode(tok, ids, (int)n_ids, out, cap, &total)
                          : DATTN_E_NOMEM;
    if (st == DATTN_E_INVALID_ARG && out && total > cap) {
        char *more = realloc(out, total);
        if (!more) {
            free(out);
            out = NULL;
        } else {
            out = more;
            cap = total;
            st = dattn_tokenizer_decode(tok, ids, (int)n_ids, out, cap, &total);
        }
    }
    if (out && st != DATTN_OK) {
        tool_report(cmd, st);
        rc = 2;
    }
    if (!out || (!rc && total && fwrite(out, 1, total, stdout) != total) || fflush(stdout)) {
        if (!rc)
            fprintf(stderr, "dattn: %s: %s\n", cmd, out ? "writing stdout failed" :
                    "out of memory");
        rc = 2;
    }
    free(out);
    free(ids);
    dattn_tokenizer_free(tok);
    return rc;
}
