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

dattn_status layer_check_shape(const dattn_layer_shape *s);
/* One chunk of n <= max_batch tokens at stream positions t0 .. t0+n-1 through the layer (arguments
 * already checked), x and y in host memory; sets the slot's n_past to t0 + n. The model's forward
 * pass calls this per layer. */
dattn_status layer_run_chunk(dattn_layer *l, dattn_cache *c, int slot, int64_t t0, const float *x,
                             int n, float *y, int decode);

#endif
