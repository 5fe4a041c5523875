/* The backend interface (DESIGN §2): a small table of functions plus the backend's own context,
 * as ggml-backend does. The layer and model code (src/layer.c, src/session.c) is written once
 * against it; src/cpu/backend_cpu.c and src/opencl/backend_cl.c fill it. A backend owns what it
 * computes with: its weights, its layers (weights and constants in its own memory, made at load)
 * and each cache's KV pages and scratch. This header is all a backend needs. */
#ifndef DATTN_BACKEND_H
#define DATTN_BACKEND_H

#include <stdint.h>

#include "dattn.h"
#include "kv.h"

typedef struct backend_weight backend_weight;   /* an nn.Linear weight the backend holds */
typedef struct backend_layer backend_layer;     /* a layer's weights and constants */
typedef struct backend_vector backend_vector;   /* a small f32 vector (a norm weight) */

/* d of a layer shape: its head_dim, or model_dim / n_heads / 2 when that is 0. */
static inline int shape_head_dim(const dattn_layer_shape *s)
{
    if (s->head_dim)
        return s->head_dim;
    return s->n_heads > 0 ? s->model_dim / s->n_heads / 2 : 0;
}

/* The numbers of one differential-attention layer (DESIGN §1), plain data. */
typedef struct layer_desc {
    int model_dim, n_heads, n_kv_heads;   /* E, H, Hkv */
    int head_dim, group;                  /* d, r = H / Hkv */
    int attn_dim;                         /* A = 2 H d: q rows and the attention output; E
                                           * unless a model sets head_dim itself */
    int kv_dim, qkv_dim;                  /* A / r, A + 2A/r */
    float lambda;                         /* step 5 */
    float out_scale;                      /* 1 - lambda_init (step 6) */
    float sub_eps;                        /* sub-layer RMSNorm epsilon (step 6): 1e-5, or a
                                           * Hugging Face model's rms_norm_eps */
} layer_desc;

enum { WEIGHT_MAX_PARTS = 3 };

/* An nn.Linear weight W [m][k] as the model stores it: up to three row-major blocks of one dtype
 * (F32, F16, BF16), stacked (q_proj, k_proj, v_proj as one projection; gate and up). The rows a
 * backend computes are the stacked rows in order, or, with row_map, row i is stacked row
 * row_map[i] (a Hugging Face model's head order; rows may repeat). Every value is finite (the
 * loaders check). */
typedef struct weight_src {
    dattn_dtype dtype;
    int k;                     /* columns: the input width */
    int n_parts;
    struct {
        const void *data;      /* [rows][k]; borrowed data is aligned to its element size */
        int rows;
    } part[WEIGHT_MAX_PARTS];
    const int32_t *row_map;    /* [m] or NULL (then m is the stacked row count) */
    int m;                     /* rows of W */
    int borrow;                /* 1: the data outlives the weight (a mapped file) and may be
                                * used in place; 0: copy it */
    int in_place;              /* 1 (with borrow): other code reads these rows too (a tied
                                * embedding): use them as they are, no copy of another layout */
} weight_src;

/* The rows of all parts stacked. */
static inline int weight_src_rows(const weight_src *w)
{
    int n = 0;
    for (int i = 0; i < w->n_parts; i++)
        n += w->part[i].rows;
    return n;
}

/* A layer's tensors, handed to layer_create: the projections as stored (see weight_src; the
 * backend keeps or copies them), the small vectors as f32 (copied). */
typedef struct layer_tensors {
    weight_src w_qkv;          /* [qkv_dim][E]: q_proj, k_proj, v_proj */
    weight_src w_out;          /* [E][attn_dim] */
    const float *subln;        /* [2d]: sub-layer RMSNorm weight */
    const double *inv_freq;    /* [d/2]: RoPE theta^(-2i/d) */
} layer_tensors;

/* The blocks of the model pass whose residual add records a non-finite value (pass_fault). */
typedef enum pass_block { BLOCK_ATTENTION = 0, BLOCK_FFN = 1 } pass_block;

/* The first non-finite value the residual adds of a chunk met, in pass order (layer, then block,
 * then token). layer < 0: none. in_sum: the block's output was finite, the stream overflowed
 * adding it. */
typedef struct pass_fault {
    int layer, token, in_sum;
    pass_block block;
} pass_fault;

/* Each call of the layer forward is one entry; the layer code (src/layer.c) calls them in the
 * order of DESIGN §1 and never touches backend memory itself. The forward entries fail only when
 * a device does (DATTN_E_OPENCL): arguments are checked before the first of them runs. Rows of
 * the activations a call keeps between entries (q/k/v, the attention output) live in the cache's
 * scratch, max_batch rows. */
typedef struct backend_ops {
    const char *kind;                                   /* "cpu", "opencl" */
    int uses_host_rows;        /* 1: weight_create keeps borrowed host rows and computes with
                                * them in place (the CPU); 0: it copies or uploads them */
    /* 1 where weight_create copies rows of format dt into a layout of its own even when it may
     * borrow them (then holding a converted copy for it is wasted memory); NULL: never. */
    int (*weight_copies)(const dattn_backend *be, dattn_dtype dt);
    void (*destroy)(dattn_backend *be);
    /* open = 1 before a model's weights are made, 0 after (whether or not the load succeeded):
     * the copies weight_create makes in between may share one region of memory (alloc.h's
     * dattn_region). NULL: nothing to group. */
    void (*weights_group)(dattn_backend *be, int open);
    /* Holds (borrows, copies or uploads) an nn.Linear weight; unless w->borrow, the source may
     * be freed afterwards. */
    dattn_status (*weight_create)(dattn_backend *be, const weight_src *w, backend_weight **out);
    void (*weight_free)(dattn_backend *be, backend_weight *w);
    /* The bytes of the weight's rows as the backend holds them; *borrowed = 1 when they are the
     * caller's memory (a mapped file) rather than memory the backend made. */
    uint64_t (*weight_bytes)(const backend_weight *w, int *borrowed);
    /* A layer in the backend's memory: the numbers are copied, the tensors packed or uploaded. */
    dattn_status (*layer_create)(dattn_backend *be, const layer_desc *desc,
                                 const layer_tensors *t, backend_layer **out);
    void (*layer_free)(dattn_backend *be, backend_layer *l);
    /* The bytes a layer's weights and constants take (borrowed rows included). */
    uint64_t (*layer_bytes)(const backend_layer *l);

    /* Exact bytes of a cache's memory (KV pages + scratch) for this shape, geometry and the
     * model's blocks (scratch; zeros for a layer-only cache). */
    size_t (*cache_bytes)(const dattn_backend *be, const dattn_layer_shape *s, const kv_geom *g,
                          const cache_scratch *scratch);
    /* Sets up c's memory: in caller_buf (caller_bytes >= cache_bytes) if given, else reserved by
     * the backend. c->shape, c->g and c->scratch are set. The memory is zeroed. */
    dattn_status (*cache_init)(dattn_backend *be, dattn_cache *c, void *caller_buf,
                               size_t caller_bytes);
    void (*cache_release)(dattn_backend *be, dattn_cache *c);
    /* Bytes of the KV region (offsets from the first head block, kv.h's layout) to or from host
     * memory: save and restore. */
    dattn_status (*kv_read)(dattn_backend *be, const dattn_cache *c, size_t off, void *dst,
                            size_t n);
    dattn_status (*kv_write)(dattn_backend *be, dattn_cache *c, size_t off, const void *src,
                             size_t n);

    /* q/k/v rows of n tokens = x W_qkv^T, x [n][E] in host memory, or x NULL: the model pass's
     * normed rows (below). */
    dattn_status (*project_in)(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                               const float *x, int n);
    /* q/k/v rows from host memory instead (dattn_layer_attend): q [n][attn_dim] (NULL: keys and
     * values only), k [n][kv_dim], v [n][kv_dim], in the layouts of DESIGN §1 step 1. */
    dattn_status (*qkv_write)(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                              const float *q, const float *k, const float *v, int n);
    /* RoPE of q (and, for sink+window, of q at the cache position), times 1/sqrt(d); RoPE of k;
     * then k and v of stream positions t0 .. t0+n-1 into the slot's pages. */
    dattn_status (*rope_append)(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                int slot, int64_t t0, int n);
    /* The attention output rows of n queries = differential attention (DESIGN §1 steps 3-6);
     * decode (n == 1) takes the flash-decoding path. */
    dattn_status (*attention)(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                              int slot, int64_t t0, int n, int decode);
    /* Optional: project_in, rope_append and attention of one decoded token (n == 1, stream
     * position t0) in one go where the backend can (the CPU's, in one pool pass); *done = 1
     * then, or 0 with nothing done, and the caller runs the three. */
    dattn_status (*decode_attend)(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                  const float *x, int slot, int64_t t0, int *done);
    /* y [n][E] (host memory) = attention output [n][attn_dim] W_out^T; y NULL: into the model
     * pass's block output rows. */
    dattn_status (*project_out)(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                float *y, int n);
    /* The attention output rows themselves, [n][attn_dim], to host memory (dattn_layer_attend). */
    dattn_status (*attn_read)(dattn_backend *be, dattn_cache *c, float *out, int n);

    /* The model's other blocks, sized by the cache's scratch; a layer-only cache never calls
     * these. x and y are host memory, n <= max_batch rows. */
    /* y [n][m] = x [n][k] W^T for a weight of m rows and k columns, k in {E, ffn_dim},
     * m in {E, n_vocab} (a weight on its own; the model pass's logits come from pass_end). */
    dattn_status (*linear)(dattn_backend *be, dattn_cache *c, const backend_weight *w,
                           const float *x, int n, float *y);
    /* y [n][E] = (silu(x W1^T) * (x W3^T)) W2^T; w13 holds W1 then W3 stacked ([2F][E]),
     * w2 is [E][F] (SwiGLU, DESIGN §1). x NULL: the pass's normed rows; y NULL: into its block
     * output rows. */
    dattn_status (*ffn)(dattn_backend *be, dattn_cache *c, const backend_weight *w13,
                        const backend_weight *w2, const float *x, int n, float *y);

    /* The model pass (src/session.c) on rows that stay in the cache's scratch of a model's
     * cache (scratch.n_vocab > 0): the residual stream, the normed rows and the block output,
     * [max_batch][E] each. Per chunk: pass_begin, the first layer's norm, then per layer
     * attention (project_in / project_out with NULL rows), residual_add with the FFN's norm, ffn
     * (NULL rows), residual_add with the next layer's norm (none after the last); then the final
     * norm and pass_end, the one point where the host waits. */
    /* Holds a copy of n floats (a norm weight), made at load. */
    dattn_status (*vector_create)(dattn_backend *be, const float *v, int n, backend_vector **out);
    void (*vector_free)(dattn_backend *be, backend_vector *v);
    /* Starts a chunk of n tokens: the residual stream's rows 0..n-1 = emb [n][E], and no fault
     * recorded; pass_end will bring back n_logits rows of logits (0: none). emb is host memory
     * the caller leaves untouched until pass_end returns (a device may still be reading it). */
    dattn_status (*pass_begin)(dattn_backend *be, dattn_cache *c, const float *emb, int n,
                               int n_logits);
    /* Normed rows 0..n-1 = RMSNorm(stream rows first..first+n-1, eps) * w. */
    dattn_status (*norm)(dattn_backend *be, dattn_cache *c, const backend_vector *w, float eps,
                         int first, int n);
    /* Stream rows 0..n-1 += block output rows 0..n-1, recording the first non-finite value (of
     * the output, or of the sum) as a fault of (layer, block); then, unless next_norm is NULL,
     * normed rows 0..n-1 = RMSNorm(the new stream rows, eps) * next_norm: the next block's input,
     * in the same pass over the rows. */
    dattn_status (*residual_add)(dattn_backend *be, dattn_cache *c, int n, int layer,
                                 pass_block block, const backend_vector *next_norm, float eps);
    /* Ends the chunk: logits [n_logits][n_vocab] (host memory) = normed rows w^T when pass_begin
     * asked for logits, and the chunk's first fault. Returns when the device is done. */
    dattn_status (*pass_end)(dattn_backend *be, dattn_cache *c, const backend_weight *w,
                             float *logits, pass_fault *fault);
    /* Waits until the device has finished every call made so far (benchmarks). NULL for host
     * backends, whose calls return when done. */
    void (*sync)(dattn_backend *be);
    /* Thread-pool passes run so far (dattn_backend_pool_passes); NULL: the backend has none. */
    uint64_t (*pool_passes)(const dattn_backend *be);
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
