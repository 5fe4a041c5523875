/* The CPU backend's attention: the arguments one layer call passes, the per-ISA kernel table,
 * and the drivers that cut the work into pool tasks (DESIGN §5). */
#ifndef DATTN_CPU_ATTN_H
#define DATTN_CPU_ATTN_H

#include <stdint.h>

#include "backend.h"
#include "kv.h"
#include "pool.h"

enum { PREFILL_QT = 16,        /* query rows per prefill task */
       DECODE_MAX_SPLIT = 64 };


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
    float eps;                 /* sub-layer RMSNorm epsilon */
    const float *subln;        /* [2d] */
    float *out;                /* [n][ldo]: head h's normalized 2d values at h*2d */
    int ldo;
} attn_args;

/* Per-cache scratch the decode path uses, carved from the arena. */
typedef struct decode_scratch {
    int max_vis, max_pieces;
    kv_piece *pieces;          /* [max_pieces] */
    float *scores;             /* [H][2][max_vis]: exp(s - piece max) of each visible key */
    float *piece_max;          /* [H][2][max_pieces] */
    float *piece_sum;          /* [H][2][max_pieces] */
    float *partial;            /* [DECODE_MAX_SPLIT][H][2d] */
} decode_scratch;

/* Per-thread work memory, in floats, for either path. */
size_t attn_thread_floats(const kv_geom *g, int group);

/* Phase 1 of flash decoding for KV head j over pieces [p0, p1): scores of both softmaxes for the
 * group's query heads, each piece's max and sum. */
typedef void (*decode_scores_fn)(const attn_args *a, const decode_scratch *s, int n_pieces, int j,
                                 int p0, int p1, float *tmp);
/* Phase 2: one weighted V sum per query head with the differential weights
 * exp(s1 - M1)/L1 - lambda exp(s2 - M2)/L2, into partial (overwritten). */
typedef void (*decode_values_fn)(const attn_args *a, const decode_scratch *s, int n_pieces, int j,
                                 int p0, int p1, float *partial, float *tmp);
/* Prefill for KV head j and query rows [r0, r1) of the call: two online softmaxes over key
 * chunks, then the lambda combine and sub-layer RMSNorm into a->out. */
typedef void (*prefill_fn)(const attn_args *a, int j, int r0, int r1, float *tmp);

typedef struct cpu_kernels {
    const char *isa;
    decode_scores_fn decode_scores;
    decode_values_fn decode_values;
    prefill_fn prefill;
    /* src/cpu/gemm.h's gemm_rows: y = x W^T over a block of weight rows as stored. */
    void (*gemm_rows)(const float *x, int ldx, int n, int k, dattn_dtype dt, const void *w,
                      int rows, float *y, int ldy, float *scratch);
    /* The same over interleaved q8_0 / q4_0 rows (gemm_rows_x4). */
    void (*gemm_rows_x4)(const float *x, int ldx, int n, int k, dattn_dtype dt, const void *w,
                         int w_rows, int r0, int r1, float *y, int ldy, float *scratch);
    /* The decode GEMV of q8_0 / q4_0 weights with integer dot products (src/cpu/gemm.h): x
     * quantized once per call, then dotted block by block. */
    void (*xq8_quantize)(const float *x, int k, void *xq);
    void (*gemv_xq8)(const void *xq, int k, dattn_dtype dt, const void *w, int rows, float *y);
    /* src/cpu/swiglu.h: g = silu(g) * u over n values. */
    void (*swiglu)(float *g, const float *u, int n);
} cpu_kernels;

extern const cpu_kernels cpu_kernels_generic;
#if defined(__x86_64__)
extern const cpu_kernels cpu_kernels_avx2;
extern const cpu_kernels cpu_kernels_avx512;
#endif

/* A decode call (n == 1) cut into pool tasks: the cache's pieces, split n_split ways per KV
 * head. */
typedef struct decode_job {
    const cpu_kernels *k;
    const attn_args *a;
    const decode_scratch *s;
    float *thread_tmp;
    size_t thread_floats;
    int n_pieces, n_split, n_kv_heads;
} decode_job;

/* Plans a decode call on a pool of n_threads; returns whether it runs unsplit (a cache too
 * short to split: one task per KV head, attn_decode_head). */
int attn_decode_plan(int n_threads, const cpu_kernels *k, const attn_args *a,
                     const decode_scratch *s, float *thread_tmp, size_t thread_floats,
                     decode_job *job);
/* All of KV head j's decode in an unsplit plan: its scores, its values, then the sub-layer
 * norm of the query heads that read it. */
void attn_decode_head(const decode_job *job, int j, int thread);

/* Runs the attention of a call on the pool (decode: n == 1 through flash decoding). */
void attn_decode(pool *p, const cpu_kernels *k, const attn_args *a, const decode_scratch *s,
                 float *thread_tmp, size_t thread_floats);
void attn_prefill(pool *p, const cpu_kernels *k, const attn_args *a, float *thread_tmp,
                  size_t thread_floats);

#endif
