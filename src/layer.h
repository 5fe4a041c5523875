/* One differential-attention layer (DESIGN §1): its shape and numbers, and the backend's own
 * object that holds its weights and constants (backend.h's layer_create). */
#ifndef DATTN_LAYER_H
#define DATTN_LAYER_H

#include "backend.h"

struct dattn_layer {
    dattn_backend *be;
    dattn_layer_shape shape;
    layer_desc desc;           /* d, r, lambda, ... as the ops get them */
    backend_layer *impl;       /* the backend's: packed/uploaded weights, subln, RoPE table */
};

dattn_status layer_check_shape(const dattn_layer_shape *s);
/* dattn_layer_create with two numbers a Hugging Face model sets itself: the RoPE table
 * rope_inv_freq [d/2] (NULL: rope_theta^(-2i/d)) and the sub-layer RMSNorm epsilon (dattn's own
 * layers: 1e-5). Both are copied. */
dattn_status layer_create_ex(dattn_backend *be, const dattn_layer_shape *shape,
                             const dattn_layer_weights *w, const double *rope_inv_freq,
                             float sub_eps, dattn_layer **out);
/* One chunk of n <= max_batch tokens at stream positions t0 .. t0+n-1 through the layer (arguments
 * already checked), x and y in host memory; sets the slot's n_past to t0 + n. A non-finite output
 * is DATTN_E_NONFINITE naming the layer. The model's forward pass calls this per layer. */
dattn_status layer_run_chunk(dattn_layer *l, dattn_cache *c, int slot, int64_t t0, const float *x,
                             int n, float *y, int decode);

#endif
