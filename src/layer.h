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

/* What a layer is made of, as the loaders have it: the projections as stored (backend.h's
 * weight_src: borrowed from a mapped file, or copied), the small vectors in one float dtype, and
 * the numbers a Hugging Face model sets itself. */
typedef struct layer_src {
    weight_src qkv;            /* [qkv_dim][E]: q, k, v rows in dattn's order (row_map) */
    weight_src out;            /* [E][attn_dim] */
    dattn_dtype vec_dtype;     /* of the vectors below */
    const void *lambda_q1, *lambda_k1, *lambda_q2, *lambda_k2;   /* [d] each */
    const void *subln;         /* [2d]; NULL: a weightless sub-norm (ones) */
    const double *rope_inv_freq;   /* [d/2]; NULL: rope_theta^(-2i/d) */
    float sub_eps;             /* sub-layer RMSNorm epsilon: 1e-5 for dattn's own layers */
    int checked;               /* 1: the caller found every projection value finite (a model
                                * loader, whose message names the file's tensor) */
} layer_src;

/* dattn_layer_create from a layer_src: every projection value is checked finite, the vectors
 * and the RoPE table are copied. */
dattn_status layer_create_src(dattn_backend *be, const dattn_layer_shape *shape,
                              const layer_src *src, dattn_layer **out);
/* One chunk of n <= max_batch tokens at stream positions t0 .. t0+n-1 through the layer (arguments
 * already checked), x and y in host memory; sets the slot's n_past to t0 + n. A non-finite output
 * is DATTN_E_NONFINITE naming the layer. The model's forward pass calls this per layer with x and
 * y NULL: the normed rows in, the block output rows out, both resident in the cache's scratch
 * (backend.h's model pass; its residual add checks the output). */
dattn_status layer_run_chunk(dattn_layer *l, dattn_cache *c, int slot, int64_t t0, const float *x,
                             int n, float *y, int decode);

#endif
