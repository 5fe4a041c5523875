/* Internal entry points of src/cache.c for sessions (src/session.c): a cache whose scratch also
 * holds the model's FFN and logits blocks, and which carries the model's fingerprint. */
#ifndef DATTN_CACHE_H
#define DATTN_CACHE_H

#include "kv.h"

typedef struct cache_extra {
    cache_scratch scratch;     /* the model's FFN and logits rows; zeros for a bare cache */
    uint64_t model_tag;        /* saved with the cache, checked on restore */
} cache_extra;

dattn_status cache_arena_bytes(const dattn_backend *be, const dattn_layer_shape *s,
                               const dattn_cache_params *p, const cache_extra *extra,
                               size_t *bytes);
dattn_status cache_create(dattn_backend *be, const dattn_layer_shape *s,
                          const dattn_cache_params *p, const cache_extra *extra, void *buf,
                          size_t buf_bytes, dattn_cache **out);

#endif
