/* A session: one model's forward pass (DESIGN §1) over its own KV cache, written once against
 * the backend's model-pass entries (backend.h). The residual stream, the normed rows and each
 * block's output stay in the cache's scratch on the backend (device memory on OpenCL); per chunk
 * the host hands over the embedding rows and gets back the logits and the first non-finite value
 * the pass met. Host staging is allocated at create; eval allocates nothing. */
#include <math.h>
#include <string.h>

#include "alloc.h"
#include "convert.h"
#include "cache.h"
#include "model.h"
#include "status.h"

struct dattn_session {
    dattn_model *m;
    dattn_cache *cache;
    float *emb;                /* [max_batch][E]: the chunk's embedding rows (host staging the
                                * backend may read until the chunk's end) */
};

static cache_extra model_extra(const dattn_model *m)
{
    cache_extra e = {{m->info.ffn_dim, m->info.vocab_size}, m->info.fingerprint};
    return e;
}

static dattn_status session_params(const dattn_model *m, const dattn_cache_params *p,
                                   dattn_cache_params *out)
{
    if (!m || !p)
        return dattn_fail(DATTN_E_INVALID_ARG, "session: NULL model or params");
    *out = *p;
    out->n_layers = m->info.n_layers;
    return DATTN_OK;
}

dattn_status dattn_session_arena_bytes(const dattn_model *m, const dattn_cache_params *p,
                                       size_t *bytes)
{
    dattn_cache_params cp;
    dattn_status st = session_params(m, p, &cp);
    if (st != DATTN_OK)
        return st;
    dattn_layer_shape shape = model_attn_shape(m);
    cache_extra extra = model_extra(m);
    return cache_arena_bytes(m->be, &shape, &cp, &extra, bytes);
}

void dattn_session_free(dattn_session *s)
{
    if (!s)
        return;
    dattn_cache_free(s->cache);
    dattn_free(s->emb);
    dattn_free(s);
}

dattn_status dattn_session_create(dattn_model *m, const dattn_cache_params *p, void *arena,
                                  size_t arena_bytes, dattn_session **out)
{
    if (!out)
        return dattn_fail(DATTN_E_INVALID_ARG, "session: out is NULL");
    *out = NULL;
    dattn_cache_params cp;
    dattn_status st = session_params(m, p, &cp);
    if (st != DATTN_OK)
        return st;
    dattn_session *s = dattn_alloc(sizeof *s, "session");
    if (!s)
        return DATTN_E_NOMEM;
    s->m = m;
    dattn_layer_shape shape = model_attn_shape(m);
    cache_extra extra = model_extra(m);
    st = cache_create(m->be, &shape, &cp, &extra, arena, arena_bytes, &s->cache);
    if (st != DATTN_OK) {
        dattn_free(s);
        return st;
    }
    size_t rows = (size_t)s->cache->g.max_batch * (size_t)m->info.dim;
    s->emb = dattn_alloc(sizeof(float) * rows, "session embedding rows");
    if (!s->emb) {
        dattn_session_free(s);
        return DATTN_E_NOMEM;
    }
    *out = s;
    return DATTN_OK;
}

/* The first non-finite value of the chunk's pass, in words (weights that overflow f32 show up
 * here first). */
static dattn_status report_fault(const pass_fault *f)
{
    const char *what = f->in_sum ? "residual" : f->block == BLOCK_ATTENTION ? "attention"
                                                                            : "feed-forward";
    return dattn_fail(DATTN_E_NONFINITE, "model: layer %d: the %s output of token %d of the chunk "
                      "is NaN or infinite (weights that overflow f32)", f->layer, what, f->token);
}

/* One chunk of n <= max_batch tokens at stream position t0. logits: NULL, or the rows to write
 * from row `first_logit` on. */
static dattn_status run_chunk(dattn_session *s, const int32_t *tokens, int n, int64_t t0,
                              float *logits, int first_logit)
{
    dattn_model *m = s->m;
    dattn_backend *be = m->be;
    dattn_cache *c = s->cache;
    const backend_ops *ops = be->ops;
    const dattn_model_info *in = &m->info;
    int E = in->dim, decode = n == 1, n_out = logits ? n - first_logit : 0;
    float eps = in->norm_eps;
    dattn_status st;
    for (int i = 0; i < n; i++)
        model_embed_row(m, tokens[i], s->emb + (size_t)i * E);
    if ((st = ops->pass_begin(be, c, s->emb, n, n_out)) != DATTN_OK)
        return st;
    /* each residual add also norms the stream for the block after it */
    if ((st = ops->norm(be, c, m->blocks[0].attn_norm, eps, 0, n)) != DATTN_OK)
        return st;
    for (int l = 0; l < in->n_layers; l++) {
        model_block *b = &m->blocks[l];
        const backend_vector *next = l + 1 < in->n_layers ? m->blocks[l + 1].attn_norm : NULL;
        if ((st = layer_run_chunk(b->attn, c, l, t0, NULL, n, NULL, decode)) != DATTN_OK ||
            (st = ops->residual_add(be, c, n, l, BLOCK_ATTENTION, b->ffn_norm, eps)) != DATTN_OK ||
            (st = ops->ffn(be, c, b->w13, b->w2, NULL, n, NULL)) != DATTN_OK ||
            (st = ops->residual_add(be, c, n, l, BLOCK_FFN, next, eps)) != DATTN_OK)
            return st;
    }
    if (n_out && (st = ops->norm(be, c, m->final_norm, eps, first_logit, n_out)) != DATTN_OK)
        return st;
    pass_fault fault;
    if ((st = ops->pass_end(be, c, m->w_logits, logits, &fault)) != DATTN_OK)
        return st;
    if (fault.layer >= 0)
        return report_fault(&fault);
    size_t n_logits = (size_t)n_out * in->vocab_size, bad = first_nonfinite(logits, n_logits);
    if (bad < n_logits)
        return dattn_fail(DATTN_E_NONFINITE, "model: the logits of token %zu of the chunk are NaN "
                          "or infinite (the output weights overflow f32)",
                          bad / (size_t)in->vocab_size);
    return DATTN_OK;
}

dattn_status dattn_session_eval(dattn_session *s, const int32_t *tokens, int n, float *logits,
                                int all_logits)
{
    if (!s || !tokens)
        return dattn_fail(DATTN_E_INVALID_ARG, "session: NULL session or tokens");
    if (n < 1)
        return dattn_fail(DATTN_E_INVALID_ARG, "session: n_tokens %d must be at least 1", n);
    const dattn_model_info *in = &s->m->info;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= in->vocab_size)
            return dattn_fail(DATTN_E_INVALID_ARG, "session: token %d (at %d) is outside the "
                              "vocabulary 0..%d", (int)tokens[i], i, in->vocab_size - 1);
    const kv_geom *g = &s->cache->g;
    int64_t pos = s->cache->n_past[0];
    if (g->policy == DATTN_POLICY_FULL && pos + n > g->n_ctx)
        return dattn_fail(DATTN_E_CACHE_FULL, "session: %d tokens do not fit: %lld of the n_ctx "
                          "= %d positions are used (reset, use a larger context, or the "
                          "sink+window policy)", n, (long long)pos, g->n_ctx);
    if (pos + n > INT32_MAX)
        return dattn_fail(DATTN_E_POSITION, "session: the stream would pass 2^31 tokens");

    int step = g->max_batch;
    size_t V = (size_t)in->vocab_size;
    for (int i = 0; i < n; i += step) {
        int len = n - i < step ? n - i : step;
        int last = i + len == n;
        float *out = !logits ? NULL : all_logits ? logits + (size_t)i * V : last ? logits : NULL;
        int first = all_logits ? 0 : len - 1;
        dattn_status st = run_chunk(s, tokens + i, len, pos + i, out, first);
        if (st != DATTN_OK) {
            /* A chunk that failed before pass_end's read may leave the device reading the
             * embedding rows (or writing the logits): wait before they are touched again. */
            if (s->m->be->ops->sync)
                s->m->be->ops->sync(s->m->be);
            /* A device failed or the numbers overflowed. Under `full` the tail is simply
             * dropped; a ring may have overwritten what the older position needs, so it starts
             * over. */
            int back = g->policy == DATTN_POLICY_FULL ? (int)pos : 0;
            kv_set_n_past(s->cache, -1, back);
            dattn_error_prefix("session (now at position %d): ", back);
            return st;
        }
    }
    return DATTN_OK;
}

int dattn_session_n_past(const dattn_session *s)
{
    return s ? s->cache->n_past[0] : 0;
}

const dattn_cache *dattn_session_cache(const dattn_session *s)
{
    return s ? s->cache : NULL;
}

size_t dattn_session_arena_size(const dattn_session *s)
{
    return s ? s->cache->arena_bytes : 0;
}

dattn_status dattn_session_reset(dattn_session *s)
{
    if (!s)
        return dattn_fail(DATTN_E_INVALID_ARG, "session: NULL session");
    return dattn_cache_reset(s->cache);
}

dattn_status dattn_session_save(const dattn_session *s, const char *path)
{
    if (!s)
        return dattn_fail(DATTN_E_INVALID_ARG, "session: NULL session");
    return dattn_cache_save(s->cache, path);
}

dattn_status dattn_session_load(dattn_session *s, const char *path)
{
    if (!s)
        return dattn_fail(DATTN_E_INVALID_ARG, "session: NULL session");
    return dattn_cache_restore(s->cache, path);
}
