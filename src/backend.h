/* The backend interface (DESIGN §2): a small table of functions plus the backend's own context,
 * as ggml-backend does. The layer code (src/layer.c) is written once against it; the CPU backend
 * fills it in src/cpu/backend_cpu.c and the OpenCL backend will fill the same table. */
#ifndef DATTN_BACKEND_H
#define DATTN_BACKEND_H

#include <stdint.h>

#include "arena.h"
#include "dattn.h"
#include "kv.h"

typedef struct backend_weight backend_weight;   /* a packed / uploaded nn.Linear weight */

/* One attention call: queries t0 .. t0+n-1 of one layer slot against the cache. */
typedef struct attn_args {
    const dattn_cache *cache;
    int slot;
    int n_heads, group;        /* H; r = H / Hkv query heads per KV head */
    int head_dim;              /* d */
    int64_t t0;
    int n;
    const float *q;            /* [n][ldq]: head h half k at (2h+k)*d, rotated at t, times 1/sqrt(d) */
    const float *q_sink;       /* same, rotated at the StreamingLLM cache position (may equal q) */
    int ldq;
    float lambda;              /* DESIGN §1 step 5 */
    float out_scale;           /* 1 - lambda_init */
    const float *subln;        /* [2d] */
    float *out;                /* [n][ldo]: head h's normalized 2d values at h*2d */
    int ldo;
} attn_args;

typedef struct backend_ops {
    const char *kind;                                   /* "cpu", "opencl" */
    void (*destroy)(dattn_backend *be);
    /* Packs (or uploads) an nn.Linear weight w [m][k]; w may be freed afterwards. */
    dattn_status (*weight_create)(dattn_backend *be, const float *w, int m, int k,
                                  backend_weight **out);
    void (*weight_free)(dattn_backend *be, backend_weight *w);
    /* Carves the backend's per-cache scratch from `a`; measures only while a->base is NULL. */
    void *(*cache_scratch)(const dattn_backend *be, const dattn_layer_shape *shape,
                           const kv_geom *g, arena *a);
    /* y[n][m] = x[n][k] W^T; x rows at stride ldx, y rows at ldy. */
    void (*matmul)(dattn_backend *be, const backend_weight *w, const float *x, int ldx, int n,
                   float *y, int ldy);
    /* Differential attention of a call; decode != 0 (n == 1) takes the flash-decoding path. */
    void (*attention)(dattn_backend *be, void *scratch, const attn_args *a, int decode);
} backend_ops;

struct dattn_backend {
    const backend_ops *ops;
    char describe[160];
    void *impl;
};

dattn_status cpu_backend_create(const dattn_backend_params *p, dattn_backend **out);

#endif
