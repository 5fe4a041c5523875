/* One differential-attention layer (DESIGN §1): weights on the backend, lambda, RoPE table. */
#ifndef DATTN_LAYER_H
#define DATTN_LAYER_H

#include "backend.h"

struct dattn_layer {
    dattn_backend *be;
    dattn_layer_shape shape;
    int head_dim, group, kv_dim, qkv_dim;   /* d, r, E/r, E + 2E/r */
    backend_weight *w_qkv;                  /* [E + 2E/r][E]: q_proj, k_proj, v_proj stacked */
    backend_weight *w_out;                  /* [E][E] */
    float lambda, lambda_init;
    float *subln;                           /* [2d] */
    double *inv_freq;                       /* [d/2]: theta^(-2i/d) */
};

/* Activations of one chunk, carved from the cache's arena next to the backend's scratch. */
typedef struct layer_scratch {
    float *qkv;        /* [max_batch][E + 2E/r] */
    float *q_sink;     /* [max_batch][E + 2E/r], sink+window only */
    float *attn;       /* [max_batch][E] */
    void *backend;
} layer_scratch;

dattn_status layer_check_shape(const dattn_layer_shape *s);
/* Carves a cache's layer_scratch (and the backend's inside it) from `a`; measures while
 * a->base is NULL. */
void *layer_carve_scratch(const dattn_backend *be, const dattn_layer_shape *s, const kv_geom *g,
                          arena *a);

#endif
