/* A session: one model's forward pass (DESIGN §1) over its own KV cache. The residual stream is
 * host memory; each block (attention layer, SwiGLU, logits) is one backend call that reads and
 * writes host rows, so the pass is written once for every backend. Host scratch is allocated at
 * create; eval allocates nothing. */
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
    float *x, *xn, *y;         /* [max_batch][E]: residual stream, normed input, block output */
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
    dattn_free(s->x);
    dattn_free(s->xn);
    dattn_free(s->y);
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
    s->x = dattn_alloc(sizeof(float) * rows, "session residual stream");
    s->xn = dattn_alloc(sizeof(float) * rows, "session normed rows");
    s->y = dattn_alloc(sizeof(float) * rows, "session block output");
    if (!s->x || !s->xn || !s->y) {
        dattn_session_free(s);
        return DATTN_E_NOMEM;
    }
    *out = s;
    return DATTN_OK;
}

/* y = x / sqrt(mean(x^2) + eps) * w over each of n rows of E. */
static void rmsnorm(const float *x, const float *w, int n, int E, float eps, float *y)
{
    for (int i = 0; i < n; i++) {
        const float *xr = x + (size_t)i * E;
        float *yr = y + (size_t)i * E;
        double ss = 0.0;
        for (int k = 0; k < E; k++)
            ss += (double)xr[k] * xr[k];
        float inv = (float)(1.0 / sqrt(ss / E + eps));
        for (int k = 0; k < E; k++)
            yr[k] = xr[k] * inv * w[k];
    }
}

static void add_rows(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

/* A block's output rows must stay finite (weights that overflow f32 show up here first). */
static dattn_status check_stream(const float *x, size_t n, int E, int layer, const char *block)
{
    size_t bad = first_nonfinite(x, n);
    if (bad == n)
        return DATTN_OK;
    return dattn_fail(DATTN_E_NONFINITE, "model: layer %d: the %s output of token %zu of the chunk "
                      "is NaN or infinite (weights that overflow f32)", layer, block,
                      bad / (size_t)E);
}

/* One chunk of n <= max_batch tokens at stream position t0. logits: NULL, or the rows to write
 * from row `first_logit` on. */
static dattn_status run_chunk(dattn_session *s, const int32_t *tokens, int n, int64_t t0,
                              float *logits, int first_logit)
{
    dattn_model *m = s->m;
    const backend_ops *ops = m->be->ops;
    const dattn_model_info *in = &m->info;
    int E = in->dim, decode = n == 1;
    size_t rows = (size_t)n * E;
    dattn_status st;
    for (int i = 0; i < n; i++)
        model_embed_row(m, tokens[i], s->x + (size_t)i * E);
    for (int l = 0; l < in->n_layers; l++) {
        model_block *b = &m->blocks[l];
        rmsnorm(s->x, b->attn_norm, n, E, in->norm_eps, s->xn);
        if ((st = layer_run_chunk(b->attn, s->cache, l, t0, s->xn, n, s->y, decode)) != DATTN_OK)
            return st;
        add_rows(s->x, s->y, rows);
        rmsnorm(s->x, b->ffn_norm, n, E, in->norm_eps, s->xn);
        if ((st = ops->ffn(m->be, s->cache, b->w13, b->w2, s->xn, n, s->y)) != DATTN_OK ||
            (st = check_stream(s->y, rows, E, l, "feed-forward")) != DATTN_OK)
            return st;
        add_rows(s->x, s->y, rows);
        if ((st = check_stream(s->x, rows, E, l, "residual")) != DATTN_OK)
            return st;
    }
    if (!logits)
        return DATTN_OK;
    int n_out = n - first_logit;
    rmsnorm(s->x + (size_t)first_logit * E, m->final_norm, n_out, E, in->norm_eps, s->xn);
    if ((st = ops->linear(m->be, s->cache, m->w_logits, s->xn, n_out, logits)) != DATTN_OK)
        return st;
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
