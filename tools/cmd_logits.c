/* dattn logits: the parity hook for people who bring a PyTorch checkpoint. Runs a token sequence
 * through the model in one session (one prefill call, every position's logits kept) and writes
 * logits [n, vocab] F32 to a safetensors file. The KV cache defaults to f32, as a comparison
 * wants. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static int bad(const char *msg, const char *arg)
{
    fprintf(stderr, "dattn: logits: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

/* "1,2,3" into a new array; *n its length. Ids are checked against the vocabulary later. */
static int parse_tokens(const char *s, int32_t **out, int *n)
{
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    if (!ids)
        return bad("out of memory for the token list", NULL);
    int count = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < INT32_MIN || v > INT32_MAX) {
            free(ids);
            return bad("--tokens takes comma-separated token ids (e.g. 1,2,3), not", s);
        }
        ids[count++] = (int32_t)v;
        if (*end == '\0')
            break;
        if (*end != ',') {
            free(ids);
            return bad("--tokens takes comma-separated token ids (e.g. 1,2,3), not", s);
        }
        p = end + 1;
    }
    *out = ids;
    *n = count;
    return 0;
}

int cmd_logits(int argc, char **argv)
{
    tool_model_opts o;
    tool_model_opts_init(&o, DATTN_KV_F32);
    const char *tokens_arg = NULL, *out_path = NULL;
    for (int i = 0; i < argc; i++) {
        int taken = tool_model_opt("logits", &o, argc, argv, &i);
        if (taken < 0)
            return 2;
        if (taken)
            continue;
        const char *a = argv[i];
        if (strcmp(a, "--tokens") && strcmp(a, "-o") && strcmp(a, "--out"))
            return bad("unknown option", a);
        if (i + 1 >= argc)
            return bad("missing value after", a);
        if (!strcmp(a, "--tokens"))
            tokens_arg = argv[++i];
        else
            out_path = argv[++i];
    }
    if (!o.model_path)
        return bad("no model (usage: dattn logits -m MODEL --tokens 1,2,3 -o OUT.safetensors)",
                   NULL);
    if (!tokens_arg || !*tokens_arg)
        return bad("no tokens (give --tokens 1,2,3: at least one token id)", NULL);
    if (!out_path)
        return bad("no output file (give -o OUT.safetensors)", NULL);
    int32_t *ids = NULL;
    int n = 0;
    if (parse_tokens(tokens_arg, &ids, &n))
        return 2;

    int rc = 2;
    dattn_backend *be = NULL;
    dattn_model *model = NULL;
    dattn_session *session = NULL;
    float *logits = NULL;
    dattn_status st;
    if (tool_open_model("logits", &o, &be, &model))
        goto done;
    dattn_model_info info;
    dattn_model_get_info(model, &info);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= info.vocab_size) {
            fprintf(stderr, "dattn: logits: token %d (position %d of --tokens) is not in the "
                            "vocabulary 0..%d\n", ids[i], i, info.vocab_size - 1);
            goto done;
        }
    /* Every position fits: the context is the sequence unless asked for more. */
    if (!o.ctx && !o.window)
        o.ctx = n;
    dattn_cache_params cp;
    if (tool_cache_params("logits", &o, &info, &cp))
        goto done;
    if (cp.policy == DATTN_POLICY_FULL && cp.n_ctx < n) {
        fprintf(stderr, "dattn: logits: --ctx %d is shorter than the %d tokens\n", cp.n_ctx, n);
        goto done;
    }
    logits = malloc(sizeof(float) * (size_t)n * (size_t)info.vocab_size);
    if (!logits) {
        fprintf(stderr, "dattn: logits: out of memory for %d x %d logits\n", n, info.vocab_size);
        goto done;
    }
    if ((st = dattn_session_create(model, &cp, NULL, 0, &session)) != DATTN_OK ||
        (st = dattn_session_eval(session, ids, n, logits, 1)) != DATTN_OK) {
        tool_report("logits", st);
        goto done;
    }
    dattn_tensor t = {"logits", DATTN_DTYPE_F32, 2, {n, info.vocab_size}, logits};
    char n_str[32];
    snprintf(n_str, sizeof n_str, "%d", n);
    const char *const meta[] = {"n_tokens", n_str, "kv", tool_kv_name(cp.kv_type),
                                "backend", dattn_backend_describe(be)};
    if ((st = dattn_tensor_file_write(out_path, &t, 1, meta, 3)) != DATTN_OK) {
        tool_report("logits", st);
        goto done;
    }
    printf("wrote %s: logits [%d, %d] f32 (kv %s, %s)\n", out_path, n, info.vocab_size,
           tool_kv_name(cp.kv_type), dattn_backend_describe(be));
    rc = 0;
done:
    free(ids);
    free(logits);
    dattn_session_free(session);
    dattn_model_free(model);
    dattn_backend_free(be);
    return rc;
}
