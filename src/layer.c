/* A differential-attention layer: creation from memory or a safetensors file, and the forward
 * pass of DESIGN §1 written once against the backend interface (projection, RoPE, KV store,
 * attention with lambda and sub-layer norm, output projection). */
#include "layer.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "half.h"
#include "safetensors.h"
#include "status.h"

dattn_layer_shape dattn_layer_default_shape(void)
{
    dattn_layer_shape s = {0};
    s.rope_theta = 10000.0f;
    return s;
}

dattn_status layer_check_shape(const dattn_layer_shape *s)
{
    if (!s)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: shape is NULL");
    if (s->model_dim <= 0 || s->n_heads <= 0 || s->n_kv_heads <= 0)
        return dattn_fail(DATTN_E_SHAPE, "layer: model_dim %d, n_heads %d, n_kv_heads %d must be positive",
                          s->model_dim, s->n_heads, s->n_kv_heads);
    if (s->model_dim > (1 << 20) || s->n_heads > (1 << 16))
        return dattn_fail(DATTN_E_SHAPE, "layer: model_dim %d or n_heads %d is implausibly large",
                          s->model_dim, s->n_heads);
    if (s->model_dim % (2 * s->n_heads) != 0)
        return dattn_fail(DATTN_E_SHAPE, "layer: model_dim %d is not divisible by 2*n_heads = %d",
                          s->model_dim, 2 * s->n_heads);
    if (s->n_heads % s->n_kv_heads != 0)
        return dattn_fail(DATTN_E_SHAPE, "layer: n_heads %d is not a multiple of n_kv_heads %d",
                          s->n_heads, s->n_kv_heads);
    int d = s->model_dim / s->n_heads / 2;
    if (d % 2 != 0)
        return dattn_fail(DATTN_E_SHAPE,
                          "layer: head_dim %d (model_dim / n_heads / 2) is odd; RoPE needs pairs", d);
    if (s->layer_index < 0)
        return dattn_fail(DATTN_E_SHAPE, "layer: layer_index %d is negative", s->layer_index);
    if (!(s->rope_theta > 0.0f) || !isfinite(s->rope_theta))
        return dattn_fail(DATTN_E_SHAPE, "layer: rope_theta %g must be a positive number",
                          (double)s->rope_theta);
    return DATTN_OK;
}

/* n values of a weight in dtype -> f32. */
static void to_f32(dattn_dtype t, const void *src, size_t n, float *dst)
{
    const uint8_t *b = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        switch (t) {
        case DATTN_DTYPE_F32:
            memcpy(&dst[i], b + 4 * i, 4);
            break;
        case DATTN_DTYPE_F16:
            memcpy(&h, b + 2 * i, 2);
            dst[i] = f16_to_f32(h);
            break;
        case DATTN_DTYPE_BF16:
            memcpy(&h, b + 2 * i, 2);
            dst[i] = bf16_to_f32(h);
            break;
        default:   /* dattn_layer_create takes float dtypes only */
            dst[i] = 0.0f;
            break;
        }
    }
}

void dattn_layer_free(dattn_layer *l)
{
    if (!l)
        return;
    if (l->be) {
        l->be->ops->weight_free(l->be, l->w_qkv);
        l->be->ops->weight_free(l->be, l->w_out);
    }
    dattn_free(l->subln);
    dattn_free(l->inv_freq);
    dattn_free(l);
}

dattn_status dattn_layer_create(dattn_backend *be, const dattn_layer_shape *shape,
                                const dattn_layer_weights *w, dattn_layer **out)
{
    if (!out)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: out is NULL");
    *out = NULL;
    if (!be || !w)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: backend or weights is NULL");
    dattn_status st = layer_check_shape(shape);
    if (st != DATTN_OK)
        return st;
    if (w->dtype != DATTN_DTYPE_F32 && w->dtype != DATTN_DTYPE_F16 && w->dtype != DATTN_DTYPE_BF16)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: unknown weight dtype %d", (int)w->dtype);
    const void *need[] = {w->q_proj,    w->k_proj,    w->v_proj,    w->out_proj, w->lambda_q1,
                          w->lambda_k1, w->lambda_q2, w->lambda_k2, w->subln};
    static const char *const names[] = {"q_proj", "k_proj", "v_proj", "out_proj", "lambda_q1",
                                        "lambda_k1", "lambda_q2", "lambda_k2", "subln"};
    for (int i = 0; i < 9; i++)
        if (!need[i])
            return dattn_fail(DATTN_E_INVALID_ARG, "layer: weight %s is NULL", names[i]);

    dattn_layer *l = dattn_alloc(sizeof *l, "layer");
    if (!l)
        return DATTN_E_NOMEM;
    int E = shape->model_dim, d = E / shape->n_heads / 2;
    l->be = be;
    l->shape = *shape;
    l->head_dim = d;
    l->group = shape->n_heads / shape->n_kv_heads;
    l->kv_dim = E / l->group;
    l->qkv_dim = E + 2 * l->kv_dim;
    size_t qkv_n = (size_t)l->qkv_dim * E;
    float *tmp = dattn_alloc(sizeof(float) * (qkv_n > (size_t)E * E ? qkv_n : (size_t)E * E) +
                                 sizeof(float) * 4 * (size_t)d,
                             "weight conversion");
    l->subln = dattn_alloc(sizeof(float) * 2 * (size_t)d, "subln weight");
    l->inv_freq = dattn_alloc(sizeof(double) * (size_t)(d / 2), "RoPE table");
    if (!tmp || !l->subln || !l->inv_freq) {
        st = DATTN_E_NOMEM;
        goto fail;
    }
    to_f32(w->dtype, w->q_proj, (size_t)E * E, tmp);
    to_f32(w->dtype, w->k_proj, (size_t)l->kv_dim * E, tmp + (size_t)E * E);
    to_f32(w->dtype, w->v_proj, (size_t)l->kv_dim * E, tmp + (size_t)(E + l->kv_dim) * E);
    st = be->ops->weight_create(be, tmp, l->qkv_dim, E, &l->w_qkv);
    if (st != DATTN_OK)
        goto fail;
    to_f32(w->dtype, w->out_proj, (size_t)E * E, tmp);
    st = be->ops->weight_create(be, tmp, E, E, &l->w_out);
    if (st != DATTN_OK)
        goto fail;

    /* lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init, in double (DESIGN §1 step 5). */
    float *lam = tmp;
    to_f32(w->dtype, w->lambda_q1, (size_t)d, lam);
    to_f32(w->dtype, w->lambda_k1, (size_t)d, lam + d);
    to_f32(w->dtype, w->lambda_q2, (size_t)d, lam + 2 * d);
    to_f32(w->dtype, w->lambda_k2, (size_t)d, lam + 3 * d);
    double dot1 = 0.0, dot2 = 0.0;
    for (int i = 0; i < d; i++) {
        dot1 += (double)lam[i] * lam[d + i];
        dot2 += (double)lam[2 * d + i] * lam[3 * d + i];
    }
    double lambda_init = 0.8 - 0.6 * exp(-0.3 * shape->layer_index);
    double lambda = exp(dot1) - exp(dot2) + lambda_init;
    if (!isfinite(lambda)) {
        st = dattn_fail(DATTN_E_FORMAT, "layer: lambda is not finite (lambda_q1.lambda_k1 = %g, "
                        "lambda_q2.lambda_k2 = %g)", dot1, dot2);
        goto fail;
    }
    l->lambda = (float)lambda;
    l->lambda_init = (float)lambda_init;
    to_f32(w->dtype, w->subln, 2 * (size_t)d, l->subln);
    for (int i = 0; i < d / 2; i++)
        l->inv_freq[i] = pow((double)shape->rope_theta, -2.0 * i / d);
    dattn_free(tmp);
    *out = l;
    return DATTN_OK;
fail:
    dattn_free(tmp);
    dattn_layer_free(l);
    return st;
}

dattn_status dattn_layer_get_shape(const dattn_layer *l, dattn_layer_shape *out)
{
    if (!l || !out)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: NULL argument to dattn_layer_get_shape");
    *out = l->shape;
    return DATTN_OK;
}

/* ---- loading one layer from a safetensors file ------------------------------------------- */

static dattn_status meta_int(const st_file *f, const char *key, int required, int fallback, int *out)
{
    const char *v = st_meta(f, key);
    if (!v) {
        if (required)
            return dattn_fail(DATTN_E_FORMAT, "__metadata__ has no '%s'", key);
        *out = fallback;
        return DATTN_OK;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < 0 || n > (1L << 24))
        return dattn_fail(DATTN_E_FORMAT, "__metadata__ '%s' is \"%s\", expected an integer", key, v);
    *out = (int)n;
    return DATTN_OK;
}

dattn_status dattn_layer_load(dattn_backend *be, const char *path, dattn_layer **out)
{
    if (!out || !path || !be)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: NULL argument to dattn_layer_load");
    *out = NULL;
    st_file *f = NULL;
    float *buf = NULL;
    dattn_status st = st_open(path, &f);
    if (st != DATTN_OK)
        return st;
    dattn_layer_shape s = dattn_layer_default_shape();
    if ((st = meta_int(f, "embed_dim", 1, 0, &s.model_dim)) != DATTN_OK ||
        (st = meta_int(f, "num_heads", 1, 0, &s.n_heads)) != DATTN_OK ||
        (st = meta_int(f, "num_kv_heads", 0, s.n_heads, &s.n_kv_heads)) != DATTN_OK ||
        (st = meta_int(f, "depth", 1, 0, &s.layer_index)) != DATTN_OK)
        goto fail;
    const char *theta = st_meta(f, "rope_theta");
    if (theta) {
        char *end;
        double v = strtod(theta, &end);
        if (end == theta || *end || !(v > 0) || !isfinite(v)) {
            st = dattn_fail(DATTN_E_FORMAT, "__metadata__ 'rope_theta' is \"%s\", expected a "
                            "positive number", theta);
            goto fail;
        }
        s.rope_theta = (float)v;
    }
    if ((st = layer_check_shape(&s)) != DATTN_OK)
        goto fail;
    int64_t E = s.model_dim, kv = E / (s.n_heads / s.n_kv_heads), d = E / s.n_heads / 2;
    struct { const char *name; int n_dims; int64_t shape[2]; } want[9] = {
        {"q_proj.weight", 2, {E, E}},  {"k_proj.weight", 2, {kv, E}}, {"v_proj.weight", 2, {kv, E}},
        {"out_proj.weight", 2, {E, E}}, {"lambda_q1", 1, {d}},         {"lambda_k1", 1, {d}},
        {"lambda_q2", 1, {d}},          {"lambda_k2", 1, {d}},         {"subln.weight", 1, {2 * d}},
    };
    size_t offs[10] = {0};
    for (int i = 0; i < 9; i++) {
        const st_tensor *t;
        if ((st = st_expect(f, want[i].name, want[i].n_dims, want[i].shape, &t)) != DATTN_OK)
            goto fail;
        offs[i + 1] = offs[i] + t->n_elems;
    }
    buf = dattn_alloc(sizeof(float) * offs[9], "layer weights");
    if (!buf) {
        st = DATTN_E_NOMEM;
        goto fail;
    }
    for (int i = 0; i < 9; i++)
        if ((st = st_to_f32(st_find(f, want[i].name), buf + offs[i])) != DATTN_OK)
            goto fail;
    dattn_layer_weights w = {DATTN_DTYPE_F32, buf + offs[0], buf + offs[1], buf + offs[2],
                             buf + offs[3], buf + offs[4], buf + offs[5], buf + offs[6],
                             buf + offs[7], buf + offs[8]};
    st = dattn_layer_create(be, &s, &w, out);
fail:
    if (st != DATTN_OK)
        dattn_error_prefix("%s: ", path);
    dattn_free(buf);
    st_close(f);
    return st;
}

/* ---- the forward pass -------------------------------------------------------------------- */

/* One chunk of at most max_batch tokens at stream positions t0 .. t0+n-1, DESIGN §1 in order. */
dattn_status layer_run_chunk(dattn_layer *l, dattn_cache *c, int slot, int64_t t0,
                             const float *x, int n, float *y, int decode)
{
    const backend_ops *ops = l->be->ops;
    dattn_status st;
    if ((st = ops->project_in(l->be, c, l, x, n)) != DATTN_OK ||               /* step 1 */
        (st = ops->rope_append(l->be, c, l, slot, t0, n)) != DATTN_OK ||       /* step 2, cache */
        (st = ops->attention(l->be, c, l, slot, t0, n, decode)) != DATTN_OK || /* steps 3-6 */
        (st = ops->project_out(l->be, c, l, y, n)) != DATTN_OK)                /* step 7 */
        return st;
    c->n_past[slot] = (int)(t0 + n);
    return DATTN_OK;
}

static dattn_status forward(dattn_layer *l, dattn_cache *c, int slot, int pos, const float *x,
                            int n, float *y, int decode)
{
    if (!l || !c || !x || !y)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: NULL layer, cache, x or y");
    if (l->be != c->backend)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: the layer and the cache belong to different backends");
    if (l->shape.model_dim != c->shape.model_dim || l->shape.n_heads != c->shape.n_heads ||
        l->shape.n_kv_heads != c->shape.n_kv_heads)
        return dattn_fail(DATTN_E_SHAPE, "layer: shape E=%d H=%d Hkv=%d does not match the cache's "
                          "E=%d H=%d Hkv=%d", l->shape.model_dim, l->shape.n_heads,
                          l->shape.n_kv_heads, c->shape.model_dim, c->shape.n_heads,
                          c->shape.n_kv_heads);
    if (slot < 0 || slot >= c->g.n_slots)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: cache slot %d is out of range 0..%d", slot,
                          c->g.n_slots - 1);
    if (n < 1)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: n_tokens %d must be at least 1", n);
    int n_past = c->n_past[slot];
    if (c->g.policy == DATTN_POLICY_FULL) {
        if (pos < 0 || pos > n_past)
            return dattn_fail(DATTN_E_POSITION, "layer: position %d does not follow the %d cached "
                              "tokens of slot %d", pos, n_past, slot);
        if ((int64_t)pos + n > c->g.n_ctx)
            return dattn_fail(DATTN_E_CACHE_FULL, "layer: %d tokens at position %d need %lld "
                              "positions, the cache holds n_ctx = %d", n, pos,
                              (long long)pos + n, c->g.n_ctx);
    } else {
        if (pos != n_past)
            return dattn_fail(DATTN_E_POSITION, "layer: position %d is not the next position %d of "
                              "slot %d (a sink+window cache cannot rewind)", pos, n_past, slot);
        if ((int64_t)pos + n > INT32_MAX)
            return dattn_fail(DATTN_E_POSITION, "layer: the stream passed 2^31 tokens");
    }
    int step = decode ? 1 : c->g.max_batch;
    for (int i = 0; i < n; i += step) {
        int len = n - i < step ? n - i : step;
        dattn_status st = layer_run_chunk(l, c, slot, (int64_t)pos + i,
                                    x + (size_t)i * l->shape.model_dim, len,
                                    y + (size_t)i * l->shape.model_dim, decode);
        if (st != DATTN_OK)
            return st;
    }
    return DATTN_OK;
}

dattn_status dattn_layer_prefill(dattn_layer *l, dattn_cache *c, int slot, int pos, const float *x,
                                 int n_tokens, float *y)
{
    return forward(l, c, slot, pos, x, n_tokens, y, 0);
}

dattn_status dattn_layer_decode(dattn_layer *l, dattn_cache *c, int slot, int pos, const float *x,
                                float *y)
{
    return forward(l, c, slot, pos, x, 1, y, 1);
}
