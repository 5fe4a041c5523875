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

/* The activations a layer call keeps in the cache's memory (DESIGN §3: carved with the KV cache,
 * never allocated per token). Rows are max_batch long. */
typedef enum act_buf {
    ACT_QKV = 0,   /* [n][E + 2E/r]: q (2H vectors of d), then k (2Hkv of d), then v (Hkv of 2d) */
    ACT_QSINK,     /* rows like ACT_QKV, q part only: q rotated at the StreamingLLM cache
                      position (sink+window only) */
    ACT_ATTN,      /* [n][E]: the normalized output of every head, before out_proj */
} act_buf;

/* Each call of the layer forward is one entry; the layer code (src/layer.c) calls them in the
 * order of DESIGN §1 and never touches backend memory itself. The forward entries fail only when
 * a device does (DATTN_E_OPENCL): arguments are checked before the first of them runs. A backend keeps a cache's KV pages
 * and activations wherever it computes (host memory, device buffers). */
typedef struct backend_ops {
    const char *kind;                                   /* "cpu", "opencl" */
    void (*destroy)(dattn_backend *be);
    /* Packs (or uploads) an nn.Linear weight w [m][k]; w may be freed afterwards. */
    dattn_status (*weight_create)(dattn_backend *be, const float *w, int m, int k,
                                  backend_weight **out);
    void (*weight_free)(dattn_backend *be, backend_weight *w);

    /* Exact bytes of a cache's memory (KV pages + scratch) for this shape and geometry. */
    size_t (*cache_bytes)(const dattn_backend *be, const dattn_layer_shape *s, const kv_geom *g);
    /* Sets up c's memory: in caller_buf (caller_bytes >= cache_bytes) if given, else reserved by
     * the backend. c->shape and c->g are set. The memory is zeroed. */
    dattn_status (*cache_init)(dattn_backend *be, dattn_cache *c, void *caller_buf,
                               size_t caller_bytes);
    void (*cache_release)(dattn_backend *be, dattn_cache *c);
    /* Bytes of the KV region (offsets from the first head block, kv.h's layout) to or from host
     * memory: save and restore. */
    dattn_status (*kv_read)(dattn_backend *be, const dattn_cache *c, size_t off, void *dst,
                            size_t n);
    dattn_status (*kv_write)(dattn_backend *be, dattn_cache *c, size_t off, const void *src,
                             size_t n);

    /* ACT_QKV[0..n) = x W_qkv^T, x [n][E] in host memory. */
    dattn_status (*project_in)(dattn_backend *be, dattn_cache *c, const dattn_layer *l, const float *x,
                       int n);
    /* RoPE of q (and, for sink+window, q at the cache position into ACT_QSINK), times 1/sqrt(d);
     * RoPE of k; then k and v of stream positions t0 .. t0+n-1 into the slot's pages. */
    dattn_status (*rope_append)(dattn_backend *be, dattn_cache *c, const dattn_layer *l, int slot,
                        int64_t t0, int n);
    /* ACT_ATTN[0..n) = differential attention of the n queries (DESIGN §1 steps 3-6); decode
     * (n == 1) takes the flash-decoding path. */
    dattn_status (*attention)(dattn_backend *be, dattn_cache *c, const dattn_layer *l, int slot,
                      int64_t t0, int n, int decode);
    /* y [n][E] (host memory) = ACT_ATTN[0..n) W_out^T. */
    dattn_status (*project_out)(dattn_backend *be, dattn_cache *c, const dattn_layer *l, float *y, int n);
    /* The model's other blocks (src/model.c). Sessions size their scratch through g.ffn_dim and
     * g.n_vocab; a layer-only cache has both 0 and never calls these. x and y are host memory,
     * n <= max_batch rows. */
    /* y [n][m] = x [n][k] W^T for a weight of m rows and k columns, k in {E, ffn_dim},
     * m in {E, n_vocab}. */
    dattn_status (*linear)(dattn_backend *be, dattn_cache *c, const backend_weight *w,
                           const float *x, int n, float *y);
    /* y [n][E] = (silu(x W1^T) * (x W3^T)) W2^T; w13 holds W1 then W3 stacked ([2F][E]),
     * w2 is [E][F] (SwiGLU, DESIGN §1). */
    dattn_status (*ffn)(dattn_backend *be, dattn_cache *c, const backend_weight *w13,
                        const backend_weight *w2, const float *x, int n, float *y);
    /* Waits until the device has finished every call made so far (benchmarks). NULL for host
     * backends, whose calls return when done. */
    void (*sync)(dattn_backend *be);
    /* Fills an activation buffer from host memory (benchmarks and tests). */
    void (*act_write)(dattn_backend *be, dattn_cache *c, act_buf which, const float *src,
                      size_t n_floats);
} backend_ops;

struct dattn_backend {
    const backend_ops *ops;
    char describe[160];
    void *impl;
};

dattn_status cpu_backend_create(const dattn_backend_params *p, dattn_backend **out);
/* Builds with OpenCL only (src/opencl/backend_cl.c). */
dattn_status cl_backend_create(const dattn_backend_params *p, dattn_backend **out);
/* 1 if an OpenCL GPU is present (builds with OpenCL only). */
int cl_has_gpu(void);

#endif
