/* dattn perplexity: how well a model predicts a text, the measure of what a weight format or a KV
 * cache type costs in quality. As llama.cpp's perplexity tool does: the text's tokens are cut
 * into chunks of n_ctx (one fresh session each, the model's BOS first when it has one), and in
 * every chunk the tokens of its second half are scored, each with at least n_ctx / 2 tokens
 * before it. Prints the mean negative log-likelihood per token and per byte of the scored tokens
 * (in nats; bits per byte too) and the perplexity exp(nats per token). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static int bad(const char *msg, const char *arg)
{
    fprintf(stderr, "dattn: perplexity: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

/* -log softmax(logits)[target], in double. */
static double nll(const float *logits, int vocab, int32_t target)
{
    double mx = logits[0];
    for (int i = 1; i < vocab; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (int i = 0; i < vocab; i++)
        sum += exp((double)logits[i] - mx);
    return mx + log(sum) - (double)logits[target];
}

int cmd_perplexity(int argc, char **argv)
{
    tool_model_opts o;
    tool_model_opts_init(&o, DATTN_KV_F16);
    const char *text_path = NULL;
    long max_chunks = 0;
    for (int i = 0; i < argc; i++) {
        int taken = tool_model_opt("perplexity", &o, argc, argv, &i);
        if (taken < 0)
            return 2;
        if (taken)
            continue;
        const char *a = argv[i];
        if (strcmp(a, "-f") && strcmp(a, "--file") && strcmp(a, "--chunks"))
            return bad("unknown option", a);
        if (i + 1 >= argc)
            return bad("missing value after", a);
        if (!strcmp(a, "--chunks")) {
            if (tool_parse_int(argv[++i], 1, 1L << 30, &max_chunks))
                return bad("--chunks takes a count >= 1, not", argv[i]);
        } else {
            text_path = argv[++i];
        }
    }
    if (!o.model_path)
        return bad("no model (usage: dattn perplexity -m MODEL -f TEXT [--ctx N] [--weights W] "
                   "[--kv K] [--chunks N])", NULL);
    if (!text_path)
        return bad("no text (give -f TEXT: a file of text to score)", NULL);
    if (o.policy != DATTN_POLICY_FULL)
        return bad("--policy: every chunk is scored in a full context; give no --policy", NULL);

    int rc = 2;
    size_t len = 0;
    char *text = tool_read_file(text_path, &len);
    if (!text)
        fprintf(stderr, "dattn: perplexity: cannot open or read %s\n", text_path);
    dattn_backend *be = NULL;
    dattn_model *model = NULL;
    dattn_session *session = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    dattn_status st;
    if (!text || tool_open_model("perplexity", &o, &be, &model))
        goto done;
    dattn_model_info info;
    dattn_model_get_info(model, &info);

    /* The text's tokens (no BOS: each chunk gets its own). */
    int n_ids = 0;
    st = dattn_tokenize(model, text, len, NULL, 0, &n_ids);
    if (st != DATTN_OK && st != DATTN_E_INVALID_ARG) {
        tool_report("perplexity", st);
        goto done;
    }
    if (!(ids = malloc(sizeof(int32_t) * ((size_t)n_ids + 1)))) {
        bad("out of memory for the text's tokens", NULL);
        goto done;
    }
    if ((st = dattn_tokenize(model, text, len, ids, n_ids, &n_ids)) != DATTN_OK) {
        tool_report("perplexity", st);
        goto done;
    }
    int bos = info.bos_id >= 0;
    long n_ctx = o.ctx ? o.ctx : (info.max_seq_len < 512 ? info.max_seq_len : 512);
    if (n_ctx < 4) {
        bad("--ctx must leave a half to score: give at least 4", NULL);
        goto done;
    }
    int per_chunk = (int)n_ctx - bos;   /* text tokens a chunk holds */
    long n_chunks = n_ids / per_chunk;
    if (max_chunks && n_chunks > max_chunks)
        n_chunks = max_chunks;
    if (n_chunks < 1) {
        fprintf(stderr, "dattn: perplexity: %s has %d tokens; a chunk of --ctx %ld needs %d (give "
                        "a longer text or a smaller --ctx)\n", text_path, n_ids, n_ctx, per_chunk);
        goto done;
    }
    o.ctx = n_ctx;
    dattn_cache_params cp;
    if (tool_cache_params("perplexity", &o, &info, &cp))
        goto done;
    int batch = cp.max_batch;
    if (!(logits = malloc(sizeof(float) * (size_t)batch * (size_t)info.vocab_size))) {
        bad("out of memory for a batch of logits", NULL);
        goto done;
    }
    if ((st = dattn_session_create(model, &cp, NULL, 0, &session)) != DATTN_OK) {
        tool_report("perplexity", st);
        goto done;
    }
    int32_t *chunk = malloc(sizeof(int32_t) * (size_t)n_ctx);
    if (!chunk) {
        bad("out of memory for a chunk", NULL);
        goto done;
    }
    int first = (int)(n_ctx / 2);   /* the logits at positions first .. n_ctx-2 are scored */
    double sum_nll = 0;
    long n_scored = 0;
    uint64_t n_bytes = 0;
    char piece[256];
    int failed = 0;
    fprintf(stderr, "perplexity: %d tokens, %ld chunks of %ld (the second half of each scored)\n",
            n_ids, n_chunks, n_ctx);
    for (long c = 0; c < n_chunks && !failed; c++) {
        if (bos)
            chunk[0] = info.bos_id;
        memcpy(chunk + bos, ids + (size_t)c * per_chunk, sizeof(int32_t) * (size_t)per_chunk);
        if ((st = dattn_session_reset(session)) != DATTN_OK) {
            tool_report("perplexity", st);
            failed = 1;
        }
        for (int p0 = 0; !failed && p0 < n_ctx - 1; p0 += batch) {
            int nb = (int)(n_ctx - 1 - p0 < batch ? n_ctx - 1 - p0 : batch);
            if ((st = dattn_session_eval(session, chunk + p0, nb, logits, 1)) != DATTN_OK) {
                tool_report("perplexity", st);
                failed = 1;
            }
            for (int j = 0; !failed && j < nb; j++) {
                int pos = p0 + j;   /* the logits at pos predict chunk[pos + 1] */
                if (pos < first)
                    continue;
                double v = nll(logits + (size_t)j * info.vocab_size, info.vocab_size,
                               chunk[pos + 1]);
                if (!isfinite(v)) {
                    fprintf(stderr, "dattn: perplexity: the logits at position %d of chunk %ld are "
                                    "not finite\n", pos, c + 1);
                    failed = 1;
                }
                sum_nll += v;
                n_scored++;
                size_t nbytes = 0;
                dattn_token_bytes(model, chunk[pos + 1], piece, sizeof piece, &nbytes);
                n_bytes += nbytes;
            }
        }
        if (!failed)
            fprintf(stderr, "[%ld] %.4f%s", c + 1, exp(sum_nll / (double)n_scored),
                    c + 1 == n_chunks || (c + 1) % 8 == 0 ? "\n" : " ");
    }
    free(chunk);
    if (failed)
        goto done;
    double per_token = sum_nll / (double)n_scored;
    double per_byte = n_bytes ? sum_nll / (double)n_bytes : 0.0;
    printf("perplexity weights=%s kv=%s ctx=%ld chunks=%ld tokens=%ld bytes=%llu "
           "nats_per_token=%.6f nats_per_byte=%.6f bits_per_byte=%.6f ppl=%.6f\n",
           tool_weights_name(info.weights), tool_kv_name(cp.kv_type), n_ctx, n_chunks, n_scored,
           (unsigned long long)n_bytes, per_token, per_byte, per_byte / log(2.0), exp(per_token));
    rc = 0;
done:
    free(text);
    free(ids);
    free(logits);
    dattn_session_free(session);
    dattn_model_free(model);
    dattn_backend_free(be);
    return rc;
}
