/* The public cache API: the arena is measured by the same code that carves it (DESIGN §3), so
 * dattn_cache_arena_bytes is exactly what dattn_cache_create takes. */
#include <string.h>

#include "alloc.h"
#include "backend.h"
#include "cache.h"
#include "kv.h"
#include "layer.h"
#include "status.h"

dattn_cache_params dattn_cache_default_params(void)
{
    dattn_cache_params p;
    memset(&p, 0, sizeof p);
    p.n_layers = 1;
    p.n_ctx = 4096;
    p.n_sink = 4;
    p.max_batch = 512;
    p.kv_type = DATTN_KV_F16;
    p.policy = DATTN_POLICY_FULL;
    return p;
}

static dattn_status measure(const dattn_backend *be, const dattn_layer_shape *s,
                            const dattn_cache_params *p, const cache_extra *extra, kv_geom *g,
                            size_t *bytes)
{
    if (!be || !s || !p)
        return dattn_fail(DATTN_E_INVALID_ARG, "cache: NULL backend, shape or params");
    dattn_status st = layer_check_shape(s);
    if (st == DATTN_OK)
        st = kv_geom_init(g, s, p);
    if (st != DATTN_OK)
        return st;
    size_t n = kv_bytes(g) == SIZE_MAX ? SIZE_MAX : be->ops->cache_bytes(be, s, g, &extra->scratch);
    if (n == SIZE_MAX)
        return dattn_fail(DATTN_E_ARENA, "cache: n_ctx %d with %d layers does not fit in memory",
                          p->n_ctx, p->n_layers);
    *bytes = n;
    return DATTN_OK;
}

dattn_status cache_arena_bytes(const dattn_backend *be, const dattn_layer_shape *s,
                               const dattn_cache_params *p, const cache_extra *extra,
                               size_t *bytes)
{
    if (!bytes)
        return dattn_fail(DATTN_E_INVALID_ARG, "cache: bytes is NULL");
    kv_geom g;
    return measure(be, s, p, extra, &g, bytes);
}

dattn_status dattn_cache_arena_bytes(const dattn_backend *be, const dattn_layer_shape *s,
                                     const dattn_cache_params *p, size_t *bytes)
{
    const cache_extra none = {0};
    return cache_arena_bytes(be, s, p, &none, bytes);
}

dattn_status dattn_cache_create(dattn_backend *be, const dattn_layer_shape *s,
                                const dattn_cache_params *p, void *buf, size_t buf_bytes,
                                dattn_cache **out)
{
    const cache_extra none = {0};
    return cache_create(be, s, p, &none, buf, buf_bytes, out);
}

dattn_status cache_create(dattn_backend *be, const dattn_layer_shape *s,
                          const dattn_cache_params *p, const cache_extra *extra, void *buf,
                          size_t buf_bytes, dattn_cache **out)
{
    if (!out)
        return dattn_fail(DATTN_E_INVALID_ARG, "cache: out is NULL");
    *out = NULL;
    kv_geom g;
    size_t need = 0;
    dattn_status st = measure(be, s, p, extra, &g, &need);
    if (st != DATTN_OK)
        return st;
    if (buf && buf_bytes < need)
        return dattn_fail(DATTN_E_ARENA, "cache: the arena holds %zu bytes, this cache needs %zu "
                          "(n_ctx %d, %d layers, %s)", buf_bytes, need, p->n_ctx, p->n_layers,
                          p->kv_type == DATTN_KV_F32 ? "f32" : p->kv_type == DATTN_KV_F16 ? "f16" : "q8");
    dattn_cache *c = dattn_alloc(sizeof *c, "cache");
    if (!c)
        return DATTN_E_NOMEM;
    c->n_past = dattn_alloc(sizeof(int) * (size_t)g.n_slots, "cache positions");
    if (!c->n_past) {
        dattn_free(c);
        return DATTN_E_NOMEM;
    }
    c->backend = be;
    c->shape = *s;
    c->shape.head_dim = shape_head_dim(s);
    c->params = *p;
    c->g = g;
    c->scratch = extra->scratch;
    c->arena_bytes = need;
    c->model_tag = extra->model_tag;
    st = be->ops->cache_init(be, c, buf, buf ? buf_bytes : need);
    if (st != DATTN_OK) {
        dattn_free(c->n_past);
        dattn_free(c);
        return st;
    }
    *out = c;
    return DATTN_OK;
}

void dattn_cache_free(dattn_cache *c)
{
    if (!c)
        return;
    c->backend->ops->cache_release(c->backend, c);
    dattn_free(c->n_past);
    dattn_free(c);
}

dattn_status dattn_cache_n_past(const dattn_cache *c, int slot, int *n_past)
{
    if (!c || !n_past)
        return dattn_fail(DATTN_E_INVALID_ARG, "cache: NULL argument to dattn_cache_n_past");
    if (slot < 0 || slot >= c->g.n_slots)
        return dattn_fail(DATTN_E_INVALID_ARG, "cache: slot %d is out of range 0..%d", slot,
                          c->g.n_slots - 1);
    *n_past = c->n_past[slot];
    return DATTN_OK;
}

dattn_status dattn_cache_get_params(const dattn_cache *c, dattn_cache_params *out)
{
    if (!c || !out)
        return dattn_fail(DATTN_E_INVALID_ARG, "cache: NULL argument to dattn_cache_get_params");
    *out = c->params;
    return DATTN_OK;
}

dattn_status dattn_cache_reset(dattn_cache *c)
{
    if (!c)
        return dattn_fail(DATTN_E_INVALID_ARG, "cache: NULL cache");
    kv_set_n_past(c, -1, 0);
    return DATTN_OK;
}

dattn_status dattn_cache_save(const dattn_cache *c, const char *path)
{
    if (!c || !path)
        return dattn_fail(DATTN_E_INVALID_ARG, "cache: NULL cache or path");
    return kv_save(c, path);
}

dattn_status dattn_cache_restore(dattn_cache *c, const char *path)
{
    if (!c || !path)
        return dattn_fail(DATTN_E_INVALID_ARG, "cache: NULL cache or path");
    return kv_restore(c, path);
}
