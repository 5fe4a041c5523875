/* A differential-attention layer: creation from memory or a safetensors file, and the forward
 * pass of DESIGN §1 written once against the backend interface (projection, RoPE, KV store,
 * attention with lambda and sub-layer norm, output projection). */
#include "layer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "convert.h"
#include "meta.h"
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
    if (s->model_dim <= 0 || s->n_heads <= 0 || s->n_kv_heads <= 0 || s->head_dim < 0)
        return dattn_fail(DATTN_E_SHAPE, "layer: model_dim %d, n_heads %d, n_kv_heads %d must be "
                          "positive (head_dim %d: 0 or positive)", s->model_dim, s->n_heads,
                          s->n_kv_heads, s->head_dim);
    if (s->model_dim > (1 << 20) || s->n_heads > (1 << 16) || s->head_dim > (1 << 12))
        return dattn_fail(DATTN_E_SHAPE, "layer: model_dim %d, n_heads %d or head_dim %d is "
                          "implausibly large", s->model_dim, s->n_heads, s->head_dim);
    if (!s->head_dim && s->model_dim % (2 * s->n_heads) != 0)
        return dattn_fail(DATTN_E_SHAPE, "layer: model_dim %d is not divisible by 2*n_heads = %d",
                          s->model_dim, 2 * s->n_heads);
    if (s->n_heads % s->n_kv_heads != 0)
        return dattn_fail(DATTN_E_SHAPE, "layer: n_heads %d is not a multiple of n_kv_heads %d",
                          s->n_heads, s->n_kv_heads);
    int d = shape_head_dim(s);
    if (d % 2 != 0)
        return dattn_fail(DATTN_E_SHAPE, "layer: head_dim %d%s is odd; RoPE needs pairs", d,
                          s->head_dim ? "" : " (model_dim / n_heads / 2)");
    if ((long)2 * s->n_heads * d > (1L << 20))
        return dattn_fail(DATTN_E_SHAPE, "layer: the attention width 2 * n_heads * head_dim = "
                          "%ld is implausibly large", (long)2 * s->n_heads * d);
    if (s->layer_index < 0)
        return dattn_fail(DATTN_E_SHAPE, "layer: layer_index %d is negative", s->layer_index);
    if (!(s->rope_theta > 0.0f) || !isfinite(s->rope_theta))
        return dattn_fail(DATTN_E_SHAPE, "layer: rope_theta %g must be a positive number",
                          (double)s->rope_theta);
    return DATTN_OK;
}

/* n values of vector `name` as f32; a NaN or inf is refused, naming it. */
static dattn_status vector_f32(dattn_dtype t, const void *src, size_t n, const char *name,
                               float *dst)
{
    size_t bad = convert_f32(t, src, n, dst);
    if (bad < n)
        return dattn_fail(DATTN_E_NONFINITE, "layer: weight %s holds a NaN or infinite value "
                          "(element %zu)", name, bad);
    return DATTN_OK;
}

/* Every part of a projection is finite (the kernels read them as they are). */
static dattn_status check_weight(const weight_src *w, const char *const names[])
{
    for (int i = 0; i < w->n_parts; i++) {
        size_t n = (size_t)w->part[i].rows * (size_t)w->k;
        size_t bad = convert_f32(w->dtype, w->part[i].data, n, NULL);
        if (bad < n)
            return dattn_fail(DATTN_E_NONFINITE, "layer: weight %s holds a NaN or infinite value "
                              "(element %zu)", names[i], bad);
    }
    return DATTN_OK;
}

void dattn_layer_free(dattn_layer *l)
{
    if (!l)
        return;
    if (l->impl)
        l->be->ops->layer_free(l->be, l->impl);
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
    int E = shape->model_dim, d = shape_head_dim(shape), r = shape->n_heads / shape->n_kv_heads;
    int A = 2 * shape->n_heads * d;
    layer_src src = {
        .qkv = {w->dtype, E, 3, {{w->q_proj, A}, {w->k_proj, A / r}, {w->v_proj, A / r}}, NULL,
                A + 2 * (A / r), 0},
        .out = {w->dtype, A, 1, {{w->out_proj, E}}, NULL, E, 0},
        .vec_dtype = w->dtype,
        .lambda_q1 = w->lambda_q1, .lambda_k1 = w->lambda_k1,
        .lambda_q2 = w->lambda_q2, .lambda_k2 = w->lambda_k2,
        .subln = w->subln,
        .sub_eps = 1e-5f,
    };
    return layer_create_src(be, shape, &src, out);
}

dattn_status layer_create_src(dattn_backend *be, const dattn_layer_shape *shape,
                              const layer_src *src, dattn_layer **out)
{
    *out = NULL;
    dattn_status st = layer_check_shape(shape);
    if (st != DATTN_OK)
        return st;
    int E = shape->model_dim, d = shape_head_dim(shape), r = shape->n_heads / shape->n_kv_heads;
    int A = 2 * shape->n_heads * d;
    if (!(src->sub_eps > 0.0f) || !isfinite(src->sub_eps))
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: sub-layer RMSNorm epsilon %g must be a "
                          "positive number", (double)src->sub_eps);
    layer_desc desc = {
        .model_dim = E, .n_heads = shape->n_heads, .n_kv_heads = shape->n_kv_heads,
        .head_dim = d, .group = r, .attn_dim = A, .kv_dim = A / r, .qkv_dim = A + 2 * (A / r),
        .sub_eps = src->sub_eps,
    };
    /* The loaders build these; a mismatch is a bug, said rather than run. */
    if (src->qkv.k != E || src->qkv.m != desc.qkv_dim || src->out.k != A || src->out.m != E ||
        (!src->qkv.row_map && weight_src_rows(&src->qkv) != desc.qkv_dim) ||
        weight_src_rows(&src->out) != E)
        return dattn_fail(DATTN_E_SHAPE, "layer: projections of %d x %d and %d x %d do not fit "
                          "the shape (E %d, attention width %d)", src->qkv.m, src->qkv.k,
                          src->out.m, src->out.k, E, A);
    static const char *const qkv_names[] = {"q_proj", "k_proj", "v_proj"};
    static const char *const out_names[] = {"out_proj"};
    if (!src->checked && ((st = check_weight(&src->qkv, qkv_names)) != DATTN_OK ||
                          (st = check_weight(&src->out, out_names)) != DATTN_OK))
        return st;
    /* The four lambda vectors, subln, then the RoPE table. */
    float *tmp = dattn_alloc(sizeof(float) * 6 * (size_t)d + sizeof(double) * (size_t)(d / 2),
                             "layer vectors");
    if (!tmp)
        return DATTN_E_NOMEM;
    float *lam = tmp, *subln = lam + 4 * d;
    double *inv_freq = (double *)(subln + 2 * d);   /* 8-aligned: 6d floats with d even */
    dattn_dtype vt = src->vec_dtype;
    if ((st = vector_f32(vt, src->lambda_q1, (size_t)d, "lambda_q1", lam)) != DATTN_OK ||
        (st = vector_f32(vt, src->lambda_k1, (size_t)d, "lambda_k1", lam + d)) != DATTN_OK ||
        (st = vector_f32(vt, src->lambda_q2, (size_t)d, "lambda_q2", lam + 2 * d)) != DATTN_OK ||
        (st = vector_f32(vt, src->lambda_k2, (size_t)d, "lambda_k2", lam + 3 * d)) != DATTN_OK ||
        (src->subln && (st = vector_f32(vt, src->subln, 2 * (size_t)d, "subln", subln)) != DATTN_OK))
        goto fail;
    if (!src->subln)
        for (int i = 0; i < 2 * d; i++)
            subln[i] = 1.0f;   /* a weightless RMSNorm (nn.RMSNorm, elementwise_affine=False) */

    /* lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init, in double (DESIGN §1 step 5). */
    double dot1 = 0.0, dot2 = 0.0;
    for (int i = 0; i < d; i++) {
        dot1 += (double)lam[i] * lam[d + i];
        dot2 += (double)lam[2 * d + i] * lam[3 * d + i];
    }
    double lambda_init = 0.8 - 0.6 * exp(-0.3 * shape->layer_index);
    double lambda = exp(dot1) - exp(dot2) + lambda_init;
    if (!isfinite(lambda) || !isfinite((float)lambda)) {
        st = dattn_fail(DATTN_E_NONFINITE, "layer: lambda is not finite (lambda_q1.lambda_k1 = %g, "
                        "lambda_q2.lambda_k2 = %g)", dot1, dot2);
        goto fail;
    }
    desc.lambda = (float)lambda;
    desc.out_scale = (float)(1.0 - lambda_init);
    for (int i = 0; i < d / 2; i++)
        inv_freq[i] = src->rope_inv_freq ? src->rope_inv_freq[i]
                                         : pow((double)shape->rope_theta, -2.0 * i / d);

    dattn_layer *l = dattn_alloc(sizeof *l, "layer");
    if (!l) {
        st = DATTN_E_NOMEM;
        goto fail;
    }
    l->be = be;
    l->shape = *shape;
    l->shape.head_dim = d;
    l->desc = desc;
    layer_tensors t = {src->qkv, src->out, subln, inv_freq};
    if ((st = be->ops->layer_create(be, &desc, &t, &l->impl)) != DATTN_OK) {
        dattn_free(l);
        goto fail;
    }
    dattn_free(tmp);
    *out = l;
    return DATTN_OK;
fail:
    dattn_free(tmp);
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
    long dim = 0, heads = 0, kv_heads = 0, depth = 0;
    double theta = 0;
    if ((st = meta_long(f, "embed_dim", 1, 1L << 20, 1, 0, &dim)) != DATTN_OK ||
        (st = meta_long(f, "num_heads", 1, 1L << 16, 1, 0, &heads)) != DATTN_OK ||
        (st = meta_long(f, "num_kv_heads", 1, 1L << 16, 0, heads, &kv_heads)) != DATTN_OK ||
        (st = meta_long(f, "depth", 0, 4095, 1, 0, &depth)) != DATTN_OK ||
        (st = meta_positive(f, "rope_theta", s.rope_theta, &theta)) != DATTN_OK)
        goto fail;
    s.model_dim = (int)dim;
    s.n_heads = (int)heads;
    s.n_kv_heads = (int)kv_heads;
    s.layer_index = (int)depth;
    s.rope_theta = (float)theta;
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

/* The output rows of a chunk must be finite: a NaN or inf there means weights or inputs that
 * overflow f32, which no later step can mend. */
static dattn_status check_rows(const dattn_layer *l, const float *y, int n, const char *what)
{
    size_t E = (size_t)l->shape.model_dim, bad = first_nonfinite(y, (size_t)n * E);
    if (bad == (size_t)n * E)
        return DATTN_OK;
    return dattn_fail(DATTN_E_NONFINITE, "layer %d: the %s of token %zu of the chunk is NaN or "
                      "infinite (weights or inputs that overflow f32)", l->shape.layer_index, what,
                      bad / E);
}

/* One chunk of at most max_batch tokens at stream positions t0 .. t0+n-1, DESIGN §1 in order. */
dattn_status layer_run_chunk(dattn_layer *l, dattn_cache *c, int slot, int64_t t0,
                             const float *x, int n, float *y, int decode)
{
    const backend_ops *ops = l->be->ops;
    dattn_status st;
    int done = 0;   /* steps 1-6 in one go */
    if (decode && n == 1 && ops->decode_attend &&
        (st = ops->decode_attend(l->be, c, l->impl, x, slot, t0, &done)) != DATTN_OK)
        return st;
    if ((!done &&
         ((st = ops->project_in(l->be, c, l->impl, x, n)) != DATTN_OK ||               /* 1 */
          (st = ops->rope_append(l->be, c, l->impl, slot, t0, n)) != DATTN_OK ||       /* 2 */
          (st = ops->attention(l->be, c, l->impl, slot, t0, n, decode)) != DATTN_OK)) || /* 3-6 */
        (st = ops->project_out(l->be, c, l->impl, y, n)) != DATTN_OK ||                /* 7 */
        (y && (st = check_rows(l, y, n, "attention output")) != DATTN_OK))
        return st;
    kv_set_n_past(c, slot, t0 + n);
    return DATTN_OK;
}

/* After a chunk failed at some point of a call that began at pos: under `full` the tail is
 * dropped (what pos had is intact); a ring may have overwritten what an older position needs,
 * so the slot starts over. */
static void undo(dattn_cache *c, int slot, int pos)
{
    int back = c->g.policy == DATTN_POLICY_FULL ? pos : 0;
    kv_set_n_past(c, slot, back);
    dattn_error_prefix("(cache slot %d now holds %d tokens) ", slot, back);
}

static dattn_status check_call(const dattn_layer *l, const dattn_cache *c, int slot, int pos,
                               int n)
{
    if (l->be != c->backend)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: the layer and the cache belong to different backends");
    if (l->shape.model_dim != c->shape.model_dim || l->shape.n_heads != c->shape.n_heads ||
        l->shape.n_kv_heads != c->shape.n_kv_heads ||
        shape_head_dim(&l->shape) != shape_head_dim(&c->shape))
        return dattn_fail(DATTN_E_SHAPE, "layer: shape E=%d H=%d Hkv=%d d=%d does not match the "
                          "cache's E=%d H=%d Hkv=%d d=%d", l->shape.model_dim, l->shape.n_heads,
                          l->shape.n_kv_heads, shape_head_dim(&l->shape), c->shape.model_dim,
                          c->shape.n_heads, c->shape.n_kv_heads, shape_head_dim(&c->shape));
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
    return DATTN_OK;
}

static dattn_status check_input(const float *x, size_t n, const char *what)
{
    size_t bad = first_nonfinite(x, n);
    if (bad < n)
        return dattn_fail(DATTN_E_NONFINITE, "layer: %s[%zu] is NaN or infinite", what, bad);
    return DATTN_OK;
}

static dattn_status forward(dattn_layer *l, dattn_cache *c, int slot, int pos, const float *x,
                            int n, float *y, int decode)
{
    if (!l || !c || !x || !y)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: NULL layer, cache, x or y");
    dattn_status st = check_call(l, c, slot, pos, n);
    if (st == DATTN_OK)
        st = check_input(x, (size_t)n * l->shape.model_dim, "x");
    if (st != DATTN_OK)
        return st;
    int step = decode ? 1 : c->g.max_batch;
    for (int i = 0; i < n; i += step) {
        int len = n - i < step ? n - i : step;
        st = layer_run_chunk(l, c, slot, (int64_t)pos + i, x + (size_t)i * l->shape.model_dim,
                             len, y + (size_t)i * l->shape.model_dim, decode);
        if (st != DATTN_OK) {
            undo(c, slot, pos);
            return st;
        }
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

/* One chunk of dattn_layer_attend: the caller's q/k/v instead of the projection. */
static dattn_status attend_chunk(dattn_layer *l, dattn_cache *c, int slot, int64_t t0,
                                 const float *q, const float *k, const float *v, int n, float *out)
{
    const backend_ops *ops = l->be->ops;
    dattn_status st;
    if ((st = ops->qkv_write(l->be, c, l->impl, q, k, v, n)) != DATTN_OK ||
        (st = ops->rope_append(l->be, c, l->impl, slot, t0, n)) != DATTN_OK)
        return st;
    if (q) {
        size_t A = (size_t)l->desc.attn_dim, m = (size_t)n * A, bad;
        if ((st = ops->attention(l->be, c, l->impl, slot, t0, n, n == 1)) != DATTN_OK ||
            (st = ops->attn_read(l->be, c, out, n)) != DATTN_OK)
            return st;
        if ((bad = first_nonfinite(out, m)) < m)
            return dattn_fail(DATTN_E_NONFINITE, "layer %d: the attention output of token %zu "
                              "is NaN or infinite", l->shape.layer_index, bad / A);
    }
    kv_set_n_past(c, slot, t0 + n);
    return DATTN_OK;
}

dattn_status dattn_layer_attend(dattn_layer *l, dattn_cache *c, int slot, int pos, const float *q,
                                const float *k, const float *v, int n, float *out)
{
    if (!l || !c || !k || !v || !q != !out)
        return dattn_fail(DATTN_E_INVALID_ARG, "layer: attend needs a layer, a cache, k and v, "
                          "and q with out or neither");
    dattn_status st = check_call(l, c, slot, pos, n);
    if (st != DATTN_OK)
        return st;
    const layer_desc *d = &l->desc;
    size_t A = (size_t)d->attn_dim, kv = (size_t)d->kv_dim;
    if ((q && (st = check_input(q, (size_t)n * A, "q")) != DATTN_OK) ||
        (st = check_input(k, (size_t)n * kv, "k")) != DATTN_OK ||
        (st = check_input(v, (size_t)n * kv, "v")) != DATTN_OK)
        return st;
    int step = n == 1 ? 1 : c->g.max_batch;
    for (int i = 0; i < n; i += step) {
        int len = n - i < step ? n - i : step;
        st = attend_chunk(l, c, slot, (int64_t)pos + i, q ? q + (size_t)i * A : NULL,
                          k + (size_t)i * kv, v + (size_t)i * kv, len,
                          out ? out + (size_t)i * A : NULL);
        if (st != DATTN_OK) {
            undo(c, slot, pos);
            return st;
        }
    }
    return DATTN_OK;
}
