/* The pure-C CPU backend (DESIGN §2): a persistent thread pool, the kernel table of the best
 * instruction set this CPU runs (chosen once, at create time), packed weights and the per-cache
 * scratch carved from the arena. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "alloc.h"
#include "arena.h"
#include "attn.h"
#include "backend.h"
#include "convert.h"
#include "gemm.h"
#include "interleave.h"
#include "status.h"

typedef struct cpu_backend {
    pool *pool;
    const cpu_kernels *k;
    /* k->gemv_xq8, or its VNNI form where the avx512 kernels run on a CPU that has it. */
    void (*gemv_xq8)(const void *xq, int k, dattn_dtype dt, const void *w, int rows, float *y);
    /* The GEMV over interleaved q8_0 / q4_0 rows (src/cpu/interleave.h), where this CPU runs
     * one (AVX512-VBMI); then weight_create interleaves every block-format weight it may copy.
     * NULL: rows stay as stored. */
    void (*gemv_x4)(const void *xq, int k, dattn_dtype dt, const void *w, int rows, int r0,
                    int r1, float *y);
    /* A model's weights are being made (weights_group). The region opens at the first copy,
     * not here: a load that copies nothing (no VBMI, f16 weights) then reserves no address
     * space, which under qemu-user costs seconds a load. */
    int grouping;
    dattn_region *region;      /* their copies' region, once the first is made */
} cpu_backend;

/* A projection as the model stores it: rows borrowed from the mapped file (or copied once, in
 * their dtype), computed part by part; row_map reorders the results (src/backend.h). */
struct backend_weight {
    dattn_dtype dtype;
    int k;                     /* columns */
    int m_src;                 /* stacked rows the kernels compute */
    int m;                     /* rows of W: m_src, or the length of row_map */
    int n_parts;
    const uint8_t *part[WEIGHT_MAX_PARTS];   /* [part_rows][k] */
    int part_rows[WEIGHT_MAX_PARTS];
    int32_t *row_map;          /* [m] or NULL */
    void *own;                 /* the copy, when the rows were not borrowed */
    dattn_region *region;      /* where own lies, or NULL: its own allocation */
    int interleaved;           /* own holds the rows interleaved (src/cpu/interleave.h) */
    uint64_t bytes;            /* of the rows, borrowed or copied */
};

struct backend_layer {
    layer_desc d;
    backend_weight *w_qkv;     /* [qkv_dim][E] */
    backend_weight *w_out;     /* [E][A] */
    float *subln;              /* [2d] */
    double *inv_freq;          /* [d/2] */
    /* With a row map (a Hugging Face model's head order), each head half of d rows of W_qkv
     * reads one block of d stacked rows in another order: half i's first stacked row, so that a
     * decode task computes just its heads (cpu_decode_attend). NULL: no row map, or one of
     * another shape. */
    int32_t *half_base;        /* [qkv_dim / d] */
};

struct backend_vector {
    int n;
    float *v;                  /* [n] */
};

/* cos and sin of RoPE's angles at one stream position, as floats before the scale, with the
 * frequencies they were made from. Every layer and head of a decoded token ropes at the same
 * position, and a cos/sin pair in double costs ~100 cycles: recomputed per call (256 pairs a
 * token on the bundled model's one-pass path), an attend task's RoPE and cache append took
 * 4.5-5.7k cycles instead of 1.7-2.4k. */
typedef struct rope_angles {
    int64_t pos;
    double *inv_freq;          /* [d/2]: a copy (layers may hold equal arrays at other places) */
    float *cs;                 /* [d/2][2]: cos, sin */
    int valid;
} rope_angles;

/* Per-cache state: everything a layer call needs, carved from the cache's arena at create. */
typedef struct cpu_cache {
    void *own_arena;           /* what we reserved when the caller gave no buffer */
    float *qkv;                /* [max_batch][A + 2A/r] */
    float *q_sink;             /* [max_batch][A + 2A/r], sink+window only */
    float *attn;               /* [max_batch][A] */
    float *ffn_hidden;         /* [max_batch][2F]: W1 x then W3 x (model sessions only) */
    /* The model pass (model sessions only, backend.h): [max_batch][E] each. */
    float *stream, *normed, *block_out;
    int pass_logits;           /* rows of logits pass_end computes */
    pass_fault fault;          /* the chunk's first non-finite value */
    decode_scratch dec;
    float *thread_tmp;         /* [n_threads][thread_floats]: attention and GEMM work memory */
    size_t thread_floats;
    void *xq;                  /* x of a q8_0 / q4_0 GEMV quantized (gemm.h), for k <= xq_k */
    int xq_k;
    void *hq;                  /* the FFN's hidden row quantized for W2 (xq8_bytes(F)), written
                                * by the W1/W3 pass while it still reads xq; NULL: F % 32 != 0 */
    /* The angles of the last two positions roped: a token's own and, under sink+window, its
     * position in the cache (rope_table). rope_last: the entry used last. */
    rope_angles rope[2];
    int rope_last;
} cpu_cache;

static const cpu_kernels *isa_table(const char *name)
{
#if defined(__x86_64__)
    if (!strcasecmp(name, "avx512"))
        return &cpu_kernels_avx512;
    if (!strcasecmp(name, "avx2"))
        return &cpu_kernels_avx2;
#endif
    if (!strcasecmp(name, "generic"))
        return &cpu_kernels_generic;
    return NULL;
}

static int isa_runs_here(const char *name)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!strcasecmp(name, "avx512"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!strcasecmp(name, "avx2"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return !strcasecmp(name, "generic");
}

/* Every instruction set dattn has kernels for, on any architecture, best first. */
static const char *const best_first[] = {"avx512", "avx2", "generic"};

#if defined(__x86_64__)
#define BUILD_ISAS "avx512, avx2, generic"
#else
#define BUILD_ISAS "generic"
#endif

static dattn_status pick_kernels(const char *want, const cpu_kernels **out)
{
    if (want) {
        const cpu_kernels *k = isa_table(want);
        /* An x86 name on an ARM or RISC-V build is a CPU that cannot run it, not a typo. */
        for (size_t i = 0; !k && i < sizeof best_first / sizeof *best_first; i++)
            if (!strcasecmp(want, best_first[i]))
                return dattn_fail(DATTN_E_UNSUPPORTED,
                                  "cpu: the '%s' kernels are x86-64 only (this build has %s)", want,
                                  BUILD_ISAS);
        if (!k)
            return dattn_fail(DATTN_E_INVALID_ARG,
                              "cpu: unknown instruction set '%s' (this build has %s)", want,
                              BUILD_ISAS);
        if (!isa_runs_here(want))
            return dattn_fail(DATTN_E_UNSUPPORTED, "cpu: this CPU cannot run the '%s' kernels", want);
        *out = k;
        return DATTN_OK;
    }
    for (size_t i = 0; i < sizeof best_first / sizeof *best_first; i++) {
        const cpu_kernels *k = isa_table(best_first[i]);
        if (k && isa_runs_here(best_first[i])) {
            *out = k;
            return DATTN_OK;
        }
    }
    *out = &cpu_kernels_generic;
    return DATTN_OK;
}

static void cpu_destroy(dattn_backend *be)
{
    cpu_backend *cb = be->impl;
    dattn_region_close(cb->region);
    pool_destroy(cb->pool);
    dattn_free(cb);
    dattn_free(be);
}

static void cpu_weight_free(dattn_backend *be, backend_weight *w)
{
    (void)be;
    if (!w)
        return;
    dattn_free(w->row_map);
    if (w->region)
        dattn_region_release(w->region);
    else
        dattn_free_aligned(w->own);
    dattn_free(w);
}

/* A model's copies in one region (alloc.h), opened at its first copy: a decode step streams
 * them in huge pages. Layers made outside a model load copy into allocations of their own. */
static void cpu_weights_group(dattn_backend *be, int open)
{
    cpu_backend *cb = be->impl;
    dattn_region_close(cb->region);
    cb->region = NULL;
    cb->grouping = open;
}

/* A 64-byte aligned block for a weight's copy: from the model's region where there is one. */
static void *copy_memory(cpu_backend *cb, backend_weight *w, size_t bytes)
{
    if (cb->grouping && !cb->region)
        cb->region = dattn_region_open();   /* NULL: none to be had here */
    if (cb->region && dattn_region_fits(cb->region, bytes)) {
        void *p = dattn_region_alloc(cb->region, bytes, "weight");
        w->region = p ? cb->region : NULL;
        return p;
    }
    return dattn_alloc_aligned(bytes, "weight");
}

/* 1 when weight_create keeps rows of this format in a layout of its own (a copy) rather than
 * borrowing them: q8_0 / q4_0 where the interleaved GEMV runs. */
static int cpu_weight_copies(const dattn_backend *be, dattn_dtype dt)
{
    const cpu_backend *cb = be->impl;
    return cb->gemv_x4 && quant_is_block(dt);
}

/* The stacked rows of src, interleaved group by group into dst (a group may span two parts). */
static void interleave_src(const weight_src *src, int rows, uint8_t *dst)
{
    size_t row_bytes = quant_row_bytes(src->dtype, src->k);
    int p = 0, in_part = 0;
    for (int g = 0; g * INTERLEAVE_ROWS < rows; g++) {
        const uint8_t *row[INTERLEAVE_ROWS];
        int nr = interleave_group_rows(rows, g);
        for (int i = 0; i < nr; i++, in_part++) {
            while (in_part == src->part[p].rows) {
                p++;
                in_part = 0;
            }
            row[i] = (const uint8_t *)src->part[p].data + (size_t)in_part * row_bytes;
        }
        interleave_group(src->dtype, src->k, row, nr,
                         dst + (size_t)g * INTERLEAVE_ROWS * row_bytes);
    }
}

static dattn_status cpu_weight_create(dattn_backend *be, const weight_src *src,
                                      backend_weight **out)
{
    backend_weight *w = dattn_alloc(sizeof *w, "weight");
    if (!w)
        return DATTN_E_NOMEM;
    memset(w, 0, sizeof *w);
    size_t row_bytes = quant_row_bytes(src->dtype, src->k);
    if (row_bytes == 0 && src->k > 0) {
        cpu_weight_free(be, w);
        return dattn_fail(DATTN_E_UNSUPPORTED, "cpu: a %s weight needs a multiple of %d columns, "
                          "not %d", quant_name(src->dtype), QUANT_BLOCK, src->k);
    }
    w->dtype = src->dtype;
    w->k = src->k;
    w->m_src = weight_src_rows(src);
    w->m = src->row_map ? src->m : w->m_src;
    if (w->m < w->m_src) {   /* the rows are reordered in place, in rows of at least m_src */
        cpu_weight_free(be, w);
        return dattn_fail(DATTN_E_SHAPE, "cpu: a weight of %d rows maps onto only %d", w->m_src,
                          w->m);
    }
    w->bytes = (uint64_t)w->m_src * row_bytes;
    w->interleaved = cpu_weight_copies(be, src->dtype) && !src->in_place;
    if (src->borrow && !w->interleaved) {
        w->n_parts = src->n_parts;
        for (int i = 0; i < src->n_parts; i++) {
            w->part[i] = src->part[i].data;
            w->part_rows[i] = src->part[i].rows;
        }
    } else {
        /* One copy of the stacked rows, in their own dtype (interleaved or as stored). */
        w->own = copy_memory(be->impl, w, w->bytes ? (size_t)w->bytes : 1);
        if (!w->own) {
            cpu_weight_free(be, w);
            return DATTN_E_NOMEM;
        }
        uint8_t *dst = w->own;
        if (w->interleaved)
            interleave_src(src, w->m_src, dst);
        else
            for (int i = 0; i < src->n_parts; i++) {
                size_t n = (size_t)src->part[i].rows * row_bytes;
                memcpy(dst, src->part[i].data, n);
                dst += n;
            }
        w->n_parts = 1;
        w->part[0] = w->own;
        w->part_rows[0] = w->m_src;
    }
    if (src->row_map) {
        w->row_map = dattn_alloc(sizeof(int32_t) * (size_t)w->m, "weight row map");
        if (!w->row_map) {
            cpu_weight_free(be, w);
            return DATTN_E_NOMEM;
        }
        memcpy(w->row_map, src->row_map, sizeof(int32_t) * (size_t)w->m);
    }
    *out = w;
    return DATTN_OK;
}

static uint64_t cpu_weight_bytes(const backend_weight *w, int *borrowed)
{
    *borrowed = w->own == NULL;
    return w->bytes;
}

static void cpu_layer_free(dattn_backend *be, backend_layer *l)
{
    if (!l)
        return;
    cpu_weight_free(be, l->w_qkv);
    cpu_weight_free(be, l->w_out);
    dattn_free(l->half_base);
    dattn_free(l->subln);
    dattn_free(l->inv_freq);
    dattn_free(l);
}

/* half_base from W_qkv's row map, when every head half's d rows map into one block of d
 * stacked rows; otherwise left NULL. */
static dattn_status find_half_blocks(backend_layer *l)
{
    const backend_weight *w = l->w_qkv;
    int d = l->d.head_dim, n_halves = w->m / d;
    if (w->m % d != 0)
        return DATTN_OK;
    int32_t *base = dattn_alloc(sizeof(int32_t) * (size_t)n_halves, "row map blocks");
    if (!base)
        return DATTN_E_NOMEM;
    for (int i = 0; i < n_halves; i++) {
        int32_t lo = w->row_map[i * d];
        for (int c = i * d; c < (i + 1) * d; c++)
            lo = w->row_map[c] < lo ? w->row_map[c] : lo;
        base[i] = lo;
        for (int c = i * d; c < (i + 1) * d; c++)
            if (w->row_map[c] >= lo + d || lo + d > w->m_src) {
                dattn_free(base);
                return DATTN_OK;
            }
    }
    l->half_base = base;
    return DATTN_OK;
}

static dattn_status cpu_layer_create(dattn_backend *be, const layer_desc *d, const layer_tensors *t,
                                     backend_layer **out)
{
    backend_layer *l = dattn_alloc(sizeof *l, "layer");
    if (!l)
        return DATTN_E_NOMEM;
    memset(l, 0, sizeof *l);
    l->d = *d;
    l->subln = dattn_alloc(sizeof(float) * 2 * (size_t)d->head_dim, "subln weight");
    l->inv_freq = dattn_alloc(sizeof(double) * (size_t)(d->head_dim / 2), "RoPE table");
    dattn_status st = DATTN_E_NOMEM;
    if (!l->subln || !l->inv_freq ||
        (st = cpu_weight_create(be, &t->w_qkv, &l->w_qkv)) != DATTN_OK ||
        (st = cpu_weight_create(be, &t->w_out, &l->w_out)) != DATTN_OK) {
        cpu_layer_free(be, l);
        return st;
    }
    memcpy(l->subln, t->subln, sizeof(float) * 2 * (size_t)d->head_dim);
    memcpy(l->inv_freq, t->inv_freq, sizeof(double) * (size_t)(d->head_dim / 2));
    if (l->w_qkv->row_map && (st = find_half_blocks(l)) != DATTN_OK) {
        cpu_layer_free(be, l);
        return st;
    }
    *out = l;
    return DATTN_OK;
}

static uint64_t cpu_layer_bytes(const backend_layer *l)
{
    return l->w_qkv->bytes + l->w_out->bytes + sizeof(float) * 2 * (uint64_t)l->d.head_dim +
           sizeof(double) * (uint64_t)(l->d.head_dim / 2) +
           (l->half_base ? sizeof(int32_t) * (uint64_t)(l->w_qkv->m / l->d.head_dim) : 0);
}

/* The arena's layout: KV pages first (the long streams, 64-byte aligned), then the activations
 * and the decode and per-thread scratch. Run with a measuring arena it only counts. */
static void carve(const dattn_backend *be, const dattn_layer_shape *shape, const kv_geom *g,
                  const cache_scratch *scratch, arena *a, uint8_t **pages, cpu_cache *cc)
{
    const cpu_backend *cb = be->impl;
    int n_threads = pool_threads(cb->pool);
    int group = shape->n_heads / shape->n_kv_heads;
    size_t A = 2 * (size_t)shape->n_heads * (size_t)g->head_dim, qkv = A + 2 * A / (size_t)group;
    size_t B = (size_t)g->max_batch, dv = 2 * (size_t)g->head_dim, heads = (size_t)shape->n_heads;
    *pages = arena_carve(a, kv_bytes(g));
    cc->qkv = arena_carve(a, sizeof(float) * B * qkv);
    cc->q_sink = g->policy == DATTN_POLICY_SINK_WINDOW ? arena_carve(a, sizeof(float) * B * qkv)
                                                       : NULL;
    cc->attn = arena_carve(a, sizeof(float) * B * A);
    cc->ffn_hidden = scratch->ffn_dim ? arena_carve(a, sizeof(float) * B * 2 * (size_t)scratch->ffn_dim)
                                      : NULL;
    size_t pass = scratch->n_vocab > 0 ? sizeof(float) * B * (size_t)shape->model_dim : 0;
    cc->stream = pass ? arena_carve(a, pass) : NULL;
    cc->normed = pass ? arena_carve(a, pass) : NULL;
    cc->block_out = pass ? arena_carve(a, pass) : NULL;
    decode_scratch *d = &cc->dec;
    d->max_vis = g->n_sink + g->n_window;   /* a decode query sees at most this many keys */
    d->max_pieces = kv_max_pieces(g, 1);
    d->pieces = arena_carve(a, sizeof(kv_piece) * (size_t)d->max_pieces);
    d->scores = arena_carve(a, sizeof(float) * heads * 2 * (size_t)d->max_vis);
    d->piece_max = arena_carve(a, sizeof(float) * heads * 2 * (size_t)d->max_pieces);
    d->piece_sum = arena_carve(a, sizeof(float) * heads * 2 * (size_t)d->max_pieces);
    d->partial = arena_carve(a, sizeof(float) * DECODE_MAX_SPLIT * heads * dv);
    /* Each thread's work memory serves the attention kernels, the GEMM's packed tiles of a
     * prefill chunk and (thread 0) the reordering of a projection's rows. */
    size_t tf = attn_thread_floats(g, group), gemm = gemm_scratch_floats(g->max_batch);
    tf = tf > gemm ? tf : gemm;
    tf = tf > qkv ? tf : qkv;
    cc->thread_floats = (tf + 15) / 16 * 16;   /* keeps each thread's block 64-byte aligned */
    cc->thread_tmp = arena_carve(a, sizeof(float) * cc->thread_floats * (size_t)n_threads);
    /* The longest row a decode GEMV quantizes: the model dim (q/k/v, W1/W3, logits), the
     * attention width (out) or the FFN's hidden dim (W2). */
    int xk = shape->model_dim > (int)A ? shape->model_dim : (int)A;
    xk = xk > scratch->ffn_dim ? xk : scratch->ffn_dim;
    cc->xq_k = xk;
    cc->xq = arena_carve(a, xq8_bytes(xk));
    cc->hq = scratch->ffn_dim > 0 && scratch->ffn_dim % QUANT_BLOCK == 0
                 ? arena_carve(a, xq8_bytes(scratch->ffn_dim)) : NULL;
    for (int e = 0; e < 2; e++) {
        cc->rope[e].inv_freq = arena_carve(a, sizeof(double) * (size_t)(g->head_dim / 2));
        cc->rope[e].cs = arena_carve(a, sizeof(float) * (size_t)g->head_dim);
    }
}

static size_t cpu_cache_bytes(const dattn_backend *be, const dattn_layer_shape *s, const kv_geom *g,
                              const cache_scratch *scratch)
{
    arena a = arena_measure();
    uint8_t *pages;
    cpu_cache cc;
    carve(be, s, g, scratch, &a, &pages, &cc);
    return arena_fits(&a) ? a.used + ARENA_ALIGN - 1 : SIZE_MAX;   /* room to align a buffer */
}

static dattn_status cpu_cache_init(dattn_backend *be, dattn_cache *c, void *buf, size_t bytes)
{
    cpu_cache *cc = dattn_alloc(sizeof *cc, "cpu cache state");
    if (!cc)
        return DATTN_E_NOMEM;
    if (!buf) {
        buf = cc->own_arena = dattn_alloc_arena(bytes, "KV cache arena");
        if (!buf) {
            dattn_free(cc);
            return DATTN_E_NOMEM;
        }
    }
    uintptr_t start = ((uintptr_t)buf + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1);
    size_t usable = bytes - (size_t)(start - (uintptr_t)buf);
    size_t need = c->arena_bytes - (ARENA_ALIGN - 1);
    arena a = {(uint8_t *)start, 0, usable < need ? usable : need};
    memset(a.base, 0, a.cap);   /* touch every page now, not on the token path */
    carve(be, &c->shape, &c->g, &c->scratch, &a, &c->pages, cc);
    c->be_state = cc;
    return DATTN_OK;
}

static void cpu_cache_release(dattn_backend *be, dattn_cache *c)
{
    (void)be;
    cpu_cache *cc = c->be_state;
    if (!cc)
        return;
    dattn_free_aligned(cc->own_arena);
    dattn_free(cc);
    c->be_state = NULL;
}

static dattn_status cpu_kv_read(dattn_backend *be, const dattn_cache *c, size_t off, void *dst,
                                size_t n)
{
    (void)be;
    memcpy(dst, c->pages + off, n);
    return DATTN_OK;
}

static dattn_status cpu_kv_write(dattn_backend *be, dattn_cache *c, size_t off, const void *src,
                                 size_t n)
{
    (void)be;
    memcpy(c->pages + off, src, n);
    return DATTN_OK;
}

typedef struct matmul_job {
    const cpu_kernels *k;
    const backend_weight *w;
    const float *x;
    const void *xq;            /* x quantized: the integer-dot GEMV; NULL: gemm_rows */
    void (*gemv_xq8)(const void *xq, int k, dattn_dtype dt, const void *w, int rows, float *y);
    void (*gemv_x4)(const void *xq, int k, dattn_dtype dt, const void *w, int rows, int r0,
                    int r1, float *y);
    int ldx, n, ldy, rows_per_task;
    float *y;
    float *thread_tmp;
    size_t thread_floats;
} matmul_job;

/* Stacked rows [r0, r1) of the weight into y0 + (r - r0) (row r of every x row, at stride
 * ldy), part by part. */
static void matmul_rows(const matmul_job *job, int r0, int r1, float *y0, int thread)
{
    const backend_weight *w = job->w;
    float *scratch = job->thread_tmp + (size_t)thread * job->thread_floats;
    size_t row_bytes = quant_row_bytes(w->dtype, w->k);
    for (int p = 0, start = 0; p < w->n_parts && start < r1; start += w->part_rows[p++]) {
        int a = r0 > start ? r0 : start;
        int b = r1 < start + w->part_rows[p] ? r1 : start + w->part_rows[p];
        if (a < b && w->interleaved && job->xq)
            job->gemv_x4(job->xq, w->k, w->dtype, w->part[p], w->part_rows[p], a - start,
                         b - start, y0 + (a - r0));
        else if (a < b && w->interleaved)
            job->k->gemm_rows_x4(job->x, job->ldx, job->n, w->k, w->dtype, w->part[p],
                                 w->part_rows[p], a - start, b - start, y0 + (a - r0), job->ldy,
                                 scratch);
        else if (a < b && job->xq)
            job->gemv_xq8(job->xq, w->k, w->dtype, w->part[p] + (size_t)(a - start) * row_bytes,
                          b - a, y0 + (a - r0));
        else if (a < b)
            job->k->gemm_rows(job->x, job->ldx, job->n, w->k, w->dtype,
                              w->part[p] + (size_t)(a - start) * row_bytes, b - a,
                              y0 + (a - r0), job->ldy, scratch);
    }
}

/* Stacked rows [task * rows_per_task, +rows_per_task) of the weight. */
static void matmul_task(void *ctx, int task, int thread)
{
    const matmul_job *job = ctx;
    int r0 = task * job->rows_per_task;
    int r1 = r0 + job->rows_per_task < job->w->m_src ? r0 + job->rows_per_task : job->w->m_src;
    matmul_rows(job, r0, r1, job->y + r0, thread);
}

/* The tasks of a pass over m rows: a few per thread balance well without cutting panels too
 * thin; rows_per_task a multiple of `align` (a multiple of GEMM_PANEL). */
static int split_rows(int m, int n_threads, int align, int *rows_per_task)
{
    int n_blocks = (m + align - 1) / align;
    int n_tasks = n_threads == 1 ? 1 : 4 * n_threads;
    if (n_tasks > n_blocks)
        n_tasks = n_blocks > 0 ? n_blocks : 1;
    *rows_per_task = (n_blocks + n_tasks - 1) / n_tasks * align;
    int used = (m + *rows_per_task - 1) / *rows_per_task;
    return used > 0 ? used : 1;
}

/* Decode against q8_0 / q4_0 rows: x quantized into the cache's xq, once, for every task of the
 * pass; NULL where the pass runs gemm_rows (n > 1, other formats). */
static const void *quantize_x(const cpu_backend *cb, cpu_cache *cc, const backend_weight *w,
                              const float *x, int n)
{
    if (n != 1 || !quant_is_block(w->dtype) || w->k <= 0 || w->k > cc->xq_k)
        return NULL;
    cb->k->xq8_quantize(x, w->k, cc->xq);
    return cc->xq;
}

/* y [n][ldy] = x [n][ldx] W^T over the pool, then W's row order (row_map) applied in place, with
 * thread 0's work memory as the row buffer. xq: x already quantized for the integer-dot GEMV
 * (n == 1, block weights), or NULL. */
static void cpu_matmul_xq(dattn_backend *be, cpu_cache *cc, const backend_weight *w,
                          const float *x, const void *xq, int ldx, int n, float *y, int ldy)
{
    cpu_backend *cb = be->impl;
    int per_task, n_tasks = split_rows(w->m_src, pool_threads(cb->pool), GEMM_PANEL, &per_task);
    if (!xq)
        xq = quantize_x(cb, cc, w, x, n);
    matmul_job job = {cb->k, w, x, xq, cb->gemv_xq8, cb->gemv_x4, ldx, n, ldy, per_task, y,
                      cc->thread_tmp, cc->thread_floats};
    pool_run(cb->pool, matmul_task, &job, n_tasks);
    if (!w->row_map)
        return;
    float *row = cc->thread_tmp;
    for (int i = 0; i < n; i++) {
        float *yi = y + (size_t)i * ldy;
        memcpy(row, yi, sizeof(float) * (size_t)w->m_src);
        for (int c = 0; c < w->m; c++)
            yi[c] = row[w->row_map[c]];
    }
}

static void cpu_matmul(dattn_backend *be, cpu_cache *cc, const backend_weight *w, const float *x,
                       int ldx, int n, float *y, int ldy)
{
    cpu_matmul_xq(be, cc, w, x, NULL, ldx, n, y, ldy);
}

static dattn_status cpu_project_in(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                   const float *x, int n)
{
    cpu_cache *cc = c->be_state;
    cpu_matmul(be, cc, l->w_qkv, x ? x : cc->normed, l->d.model_dim, n, cc->qkv, l->d.qkv_dim);
    return DATTN_OK;
}

static dattn_status cpu_qkv_write(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                  const float *q, const float *k, const float *v, int n)
{
    (void)be;
    cpu_cache *cc = c->be_state;
    size_t A = (size_t)l->d.attn_dim, kv = (size_t)l->d.kv_dim;
    for (int i = 0; i < n; i++) {
        float *row = cc->qkv + (size_t)i * l->d.qkv_dim;
        if (q)
            memcpy(row, q + i * A, sizeof(float) * A);
        memcpy(row + A, k + i * kv, sizeof(float) * kv);
        memcpy(row + A + kv, v + i * kv, sizeof(float) * kv);
    }
    return DATTN_OK;
}

static dattn_status cpu_project_out(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                    float *y, int n)
{
    cpu_cache *cc = c->be_state;
    cpu_matmul(be, cc, l->w_out, cc->attn, l->d.attn_dim, n, y ? y : cc->block_out,
               l->d.model_dim);
    return DATTN_OK;
}

static dattn_status cpu_attn_read(dattn_backend *be, dattn_cache *c, float *out, int n)
{
    (void)be;
    cpu_cache *cc = c->be_state;
    size_t A = 2 * (size_t)c->shape.n_heads * (size_t)c->g.head_dim;
    memcpy(out, cc->attn, sizeof(float) * (size_t)n * A);
    return DATTN_OK;
}

static dattn_status cpu_linear(dattn_backend *be, dattn_cache *c, const backend_weight *w,
                               const float *x, int n, float *y)
{
    cpu_matmul(be, c->be_state, w, x, w->k, n, y, w->m);
    return DATTN_OK;
}

/* The W1/W3 pass of the FFN with SwiGLU fused in: a task computes hidden units [j0, j1) of W1 x
 * and W3 x for every row, then silu(W1 x) * (W3 x) over them in place of W1 x, and, when W2
 * takes the integer-dot GEMV, quantizes its blocks of that row for W2, so no one-thread work
 * is left between the two passes. */
typedef struct ffn_job {
    matmul_job mm;             /* w13 stacked [W1; W3] into h [n][2F] */
    int F;
    void *hq;                  /* h quantized for W2 (n == 1), or NULL */
} ffn_job;

static void ffn_task(void *ctx, int task, int thread)
{
    const ffn_job *job = ctx;
    int F = job->F, n = job->mm.n, j0 = task * job->mm.rows_per_task;
    int j1 = j0 + job->mm.rows_per_task < F ? j0 + job->mm.rows_per_task : F;
    matmul_rows(&job->mm, j0, j1, job->mm.y + j0, thread);
    matmul_rows(&job->mm, F + j0, F + j1, job->mm.y + F + j0, thread);
    for (int i = 0; i < n; i++) {
        float *h1 = job->mm.y + (size_t)i * 2 * F, *h3 = h1 + F;
        job->mm.k->swiglu(h1 + j0, h3 + j0, j1 - j0);
    }
    if (!job->hq)
        return;
    /* j0 and j1 are whole blocks: the pieces of the quantized row (gemm.h) these blocks own,
     * through a small aligned buffer, CHUNK blocks at a time. */
    enum { CHUNK = 8 };
    _Alignas(64) uint8_t tmp[CHUNK * QUANT_BLOCK + 8 * CHUNK];
    uint8_t *q = job->hq;
    float *d = (float *)(q + xq8_d_offset(F));
    int32_t *s = (int32_t *)(q + xq8_s_offset(F));
    for (int b = j0 / QUANT_BLOCK; b < j1 / QUANT_BLOCK; b += CHUNK) {
        int nb = j1 / QUANT_BLOCK - b < CHUNK ? j1 / QUANT_BLOCK - b : CHUNK;
        job->mm.k->xq8_quantize(job->mm.y + (size_t)b * QUANT_BLOCK, nb * QUANT_BLOCK, tmp);
        memcpy(q + (size_t)b * QUANT_BLOCK, tmp, (size_t)nb * QUANT_BLOCK);
        memcpy(d + b, tmp + xq8_d_offset(nb * QUANT_BLOCK), sizeof(float) * (size_t)nb);
        memcpy(s + b, tmp + xq8_s_offset(nb * QUANT_BLOCK), sizeof(int32_t) * (size_t)nb);
    }
}

static dattn_status cpu_ffn(dattn_backend *be, dattn_cache *c, const backend_weight *w13,
                            const backend_weight *w2, const float *x, int n, float *y)
{
    cpu_backend *cb = be->impl;
    cpu_cache *cc = c->be_state;
    int F = w13->m / 2;
    float *h = cc->ffn_hidden;
    x = x ? x : cc->normed;
    y = y ? y : cc->block_out;
    if (w13->row_map || w13->m_src != 2 * F)
        return dattn_fail(DATTN_E_SHAPE, "cpu: an FFN weight of %d rows%s is not W1 and W3 "
                          "stacked", w13->m_src, w13->row_map ? " in another order" : "");
    /* Tasks own whole q8 blocks of the hidden row (a multiple of GEMM_PANEL too). */
    int per_task, n_tasks = split_rows(F, pool_threads(cb->pool), QUANT_BLOCK, &per_task);
    const void *xq = quantize_x(cb, cc, w13, x, n);
    ffn_job job = {{cb->k, w13, x, xq, cb->gemv_xq8, cb->gemv_x4, w13->k, n, 2 * F, per_task, h,
                    cc->thread_tmp, cc->thread_floats}, F, NULL};
    if (n == 1 && quant_is_block(w2->dtype) && cc->hq && w2->k == F)
        job.hq = cc->hq;
    pool_run(cb->pool, ffn_task, &job, n_tasks);
    /* W2 reads the SwiGLU rows with stride 2F. */
    cpu_matmul_xq(be, cc, w2, h, job.hq, 2 * F, n, y, w2->m);
    return DATTN_OK;
}

/* ---- the model pass (backend.h) on rows in the cache's scratch --------------------------------- */

static dattn_status cpu_vector_create(dattn_backend *be, const float *v, int n,
                                      backend_vector **out)
{
    (void)be;
    backend_vector *bv = dattn_alloc(sizeof *bv, "vector");
    float *copy = dattn_alloc(sizeof(float) * (size_t)(n > 0 ? n : 1), "vector");
    if (!bv || !copy) {
        dattn_free(bv);
        dattn_free(copy);
        return DATTN_E_NOMEM;
    }
    memcpy(copy, v, sizeof(float) * (size_t)n);
    bv->n = n;
    bv->v = copy;
    *out = bv;
    return DATTN_OK;
}

static void cpu_vector_free(dattn_backend *be, backend_vector *v)
{
    (void)be;
    if (!v)
        return;
    dattn_free(v->v);
    dattn_free(v);
}

static dattn_status cpu_pass_begin(dattn_backend *be, dattn_cache *c, const float *emb, int n,
                                   int n_logits)
{
    (void)be;
    cpu_cache *cc = c->be_state;
    if (!cc->stream || n < 1 || n > c->g.max_batch || n_logits < 0 || n_logits > n)
        return dattn_fail(DATTN_E_INVALID_ARG, "cpu: a model pass of %d rows with %d of logits "
                          "on a cache of %d rows%s", n, n_logits, c->g.max_batch,
                          cc->stream ? "" : " made without the pass's rows");
    memcpy(cc->stream, emb, sizeof(float) * (size_t)n * (size_t)c->shape.model_dim);
    cc->pass_logits = n_logits;
    cc->fault = (pass_fault){.layer = -1};
    return DATTN_OK;
}

/* y = RMSNorm(x, eps) * w over one row of E. Sums in double, in NORM_LANES independent sums:
 * a single running sum is a chain of dependent adds that the compiler may not reorder, and the
 * norms run on the caller's thread between two passes of the pool, the other threads waiting. */
enum { NORM_LANES = 8 };
static void norm_row(const float *x, const float *w, int E, float eps, float *y)
{
    double part[NORM_LANES] = {0};
    int k = 0;
    for (; k + NORM_LANES <= E; k += NORM_LANES)
        for (int j = 0; j < NORM_LANES; j++)
            part[j] += (double)x[k + j] * x[k + j];
    double ss = 0.0;
    for (; k < E; k++)
        ss += (double)x[k] * x[k];
    for (int j = 0; j < NORM_LANES; j++)
        ss += part[j];
    float inv = (float)(1.0 / sqrt(ss / E + eps));
    for (k = 0; k < E; k++)
        y[k] = x[k] * inv * w[k];
}

/* One thread: a few E-wide rows cost less than waking the pool. */
static dattn_status cpu_norm(dattn_backend *be, dattn_cache *c, const backend_vector *w, float eps,
                             int first, int n)
{
    (void)be;
    cpu_cache *cc = c->be_state;
    int E = c->shape.model_dim;
    for (int i = 0; i < n; i++)
        norm_row(cc->stream + (size_t)(first + i) * E, w->v, E, eps, cc->normed + (size_t)i * E);
    return DATTN_OK;
}

static dattn_status cpu_residual_add(dattn_backend *be, dattn_cache *c, int n, int layer,
                                     pass_block block, const backend_vector *next_norm, float eps)
{
    (void)be;
    cpu_cache *cc = c->be_state;
    size_t E = (size_t)c->shape.model_dim;
    for (size_t r = 0; r < (size_t)n; r++) {
        float *x = cc->stream + r * E;
        const float *y = cc->block_out + r * E;
        /* Plain adds, then vectorized scans for the first bad value (a branch per value kept
         * the loop scalar; it runs on one thread between two passes). A non-finite y makes a
         * non-finite sum, so the sums' first is the first bad value. */
        for (size_t i = 0; i < E; i++)
            x[i] += y[i];
        size_t bad_sum;
        if (cc->fault.layer < 0 && (bad_sum = first_nonfinite(x, E)) < E) {
            cc->fault.layer = layer;
            cc->fault.block = block;
            cc->fault.token = (int)r;
            cc->fault.in_sum = first_nonfinite(y, E) != bad_sum;
        }
        if (next_norm)   /* while the row is in cache */
            norm_row(x, next_norm->v, (int)E, eps, cc->normed + r * E);
    }
    return DATTN_OK;
}

static dattn_status cpu_pass_end(dattn_backend *be, dattn_cache *c, const backend_weight *w,
                                 float *logits, pass_fault *fault)
{
    cpu_cache *cc = c->be_state;
    if (cc->pass_logits)
        cpu_matmul(be, cc, w, cc->normed, w->k, cc->pass_logits, logits, w->m);
    *fault = cc->fault;
    return DATTN_OK;
}

/* The cos/sin table of layer l's RoPE at stream position pos: one of the two kept, or made
 * now in place of the one not used last (so a token's two positions both stay valid until it
 * asks for a third). Angles in double: positions of a long sink+window stream reach 2^31. */
static const float *rope_table(cpu_cache *cc, const backend_layer *l, int64_t pos)
{
    int half = l->d.head_dim / 2;
    size_t freq_bytes = sizeof(double) * (size_t)half;
    for (int e = 0; e < 2; e++) {
        rope_angles *r = &cc->rope[e];
        if (r->valid && r->pos == pos && !memcmp(r->inv_freq, l->inv_freq, freq_bytes)) {
            cc->rope_last = e;
            return r->cs;
        }
    }
    cc->rope_last ^= 1;
    rope_angles *r = &cc->rope[cc->rope_last];
    for (int i = 0; i < half; i++) {
        double angle = (double)pos * l->inv_freq[i];
        r->cs[2 * i] = (float)cos(angle);
        r->cs[2 * i + 1] = (float)sin(angle);
    }
    memcpy(r->inv_freq, l->inv_freq, freq_bytes);
    r->pos = pos;
    r->valid = 1;
    return r->cs;
}

/* Interleaved (GPT-J) RoPE of n_vec vectors of d values with the angles cs (rope_table), then
 * * scale. */
static void rope(const float *cs, int d, float *v, int n_vec, float scale)
{
    for (int i = 0; i < d / 2; i++) {
        float c = cs[2 * i] * scale, s = cs[2 * i + 1] * scale;
        for (int k = 0; k < n_vec; k++) {
            float *p = v + (size_t)k * d + 2 * i;
            float x0 = p[0], x1 = p[1];
            p[0] = x0 * c - x1 * s;
            p[1] = x0 * s + x1 * c;
        }
    }
}

/* Where KV head j's parts lie in a token's q/k/v row: its r query heads' rows [q0, q0 + qd),
 * its key [k0, k0 + 2d) and its value [v0, v0 + 2d). */
typedef struct head_span {
    int q0, qd, k0, v0;
} head_span;

static head_span head_span_of(const backend_layer *l, int j)
{
    int d = l->d.head_dim, qd = 2 * d * l->d.group;
    return (head_span){j * qd, qd, l->d.attn_dim + 2 * d * j,
                       l->d.attn_dim + l->d.kv_dim + 2 * d * j};
}

/* Step 2 of one token for KV head j: RoPE of its r query heads' rows (and, under sink+window,
 * of their copy in the sink row, at the cache position) and of its key, then the key and value
 * into the cache. row: the token's q/k/v row; sink_row: its q_sink row, or NULL. */
static void rope_append_head(dattn_cache *c, const backend_layer *l, int slot, int64_t t, int j,
                             float *row, float *sink_row, const float *cs, const float *cs_sink)
{
    int d = l->d.head_dim;
    head_span hs = head_span_of(l, j);
    float *q = row + hs.q0, *k = row + hs.k0;
    const float *v = row + hs.v0;
    float scale = 1.0f / sqrtf((float)d);
    if (sink_row) {
        float *qs = sink_row + hs.q0;
        memcpy(qs, q, sizeof(float) * (size_t)hs.qd);
        rope(cs_sink, d, qs, 2 * l->d.group, scale);
    }
    rope(cs, d, q, 2 * l->d.group, scale);
    rope(cs, d, k, 2, 1.0f);
    kv_store(c, slot, j, t, k, k + d, v);
}

static dattn_status cpu_rope_append(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                    int slot, int64_t t0, int n)
{
    (void)be;
    cpu_cache *cc = c->be_state;
    for (int i = 0; i < n; i++) {
        int64_t t = t0 + i;
        float *row = cc->qkv + (size_t)i * l->d.qkv_dim;
        float *sink_row = cc->q_sink ? cc->q_sink + (size_t)i * l->d.qkv_dim : NULL;
        const float *cs_sink = sink_row ? rope_table(cc, l, kv_cache_pos(&c->g, t)) : NULL;
        const float *cs = rope_table(cc, l, t);
        for (int j = 0; j < l->d.n_kv_heads; j++)
            rope_append_head(c, l, slot, t, j, row, sink_row, cs, cs_sink);
    }
    return DATTN_OK;
}

/* The attention call of n queries at t0 on the rows in the cache's scratch. */
static attn_args layer_attn_args(const backend_layer *l, const dattn_cache *c, int slot,
                                 int64_t t0, int n)
{
    const cpu_cache *cc = c->be_state;
    return (attn_args){
        .cache = c, .slot = slot, .n_heads = l->d.n_heads, .group = l->d.group,
        .head_dim = l->d.head_dim, .t0 = t0, .n = n, .q = cc->qkv,
        .q_sink = cc->q_sink ? cc->q_sink : cc->qkv, .ldq = l->d.qkv_dim, .lambda = l->d.lambda,
        .out_scale = l->d.out_scale, .eps = l->d.sub_eps, .subln = l->subln, .out = cc->attn,
        .ldo = l->d.attn_dim,
    };
}

static dattn_status cpu_attention(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                  int slot, int64_t t0, int n, int decode)
{
    cpu_backend *cb = be->impl;
    cpu_cache *cc = c->be_state;
    attn_args a = layer_attn_args(l, c, slot, t0, n);
    if (decode)
        attn_decode(cb->pool, cb->k, &a, &cc->dec, cc->thread_tmp, cc->thread_floats);
    else
        attn_prefill(cb->pool, cb->k, &a, cc->thread_tmp, cc->thread_floats);
    return DATTN_OK;
}

/* ---- a decoded token's steps 1-6 in one pass ----------------------------------------------- */

/* One KV head's share of a decode step: a task per KV head j computes its rows of q (the r
 * query heads that read it), k and v, which are three contiguous row ranges of W_qkv, then
 * their RoPE, its append to the cache and its attention. The heads touch disjoint rows of the
 * scratch and disjoint pages of the cache, so nothing waits between the steps: one pass of the
 * pool where the separate steps take two (or, after a one-thread RoPE, two and a gap). */
typedef struct attend_job {
    matmul_job mm;             /* W_qkv into the scratch's q/k/v row */
    const backend_layer *l;
    dattn_cache *c;
    int slot;
    int64_t t;
    const float *cs, *cs_sink; /* RoPE's angles at t and (sink+window) at t's cache position */
    decode_job attn;
} attend_job;

/* Rows [r0, r1) of W_qkv (whole head halves) into the scratch's q/k/v row: as stacked, or,
 * through a row map, each half's block of d stacked rows (half_base) computed into the thread's
 * work memory (attention has not started on it yet) and put in the map's order. */
static void project_rows(const attend_job *job, int r0, int r1, int thread)
{
    const backend_weight *w = job->mm.w;
    float *y = job->mm.y;
    if (!w->row_map) {
        matmul_rows(&job->mm, r0, r1, y + r0, thread);
        return;
    }
    int d = job->l->d.head_dim;
    /* the end of the thread's work memory, clear of any GEMM scratch (none at n = 1) */
    float *block = job->mm.thread_tmp + (size_t)(thread + 1) * job->mm.thread_floats - d;
    for (int c0 = r0; c0 < r1; c0 += d) {
        int base = job->l->half_base[c0 / d];
        matmul_rows(&job->mm, base, base + d, block, thread);
        for (int c = c0; c < c0 + d; c++)
            y[c] = block[w->row_map[c] - base];
    }
}

static void attend_task(void *ctx, int j, int thread)
{
    const attend_job *job = ctx;
    const backend_layer *l = job->l;
    cpu_cache *cc = job->c->be_state;
    int d = l->d.head_dim;
    head_span hs = head_span_of(l, j);
    project_rows(job, hs.q0, hs.q0 + hs.qd, thread);
    project_rows(job, hs.k0, hs.k0 + 2 * d, thread);
    project_rows(job, hs.v0, hs.v0 + 2 * d, thread);
    rope_append_head(job->c, l, job->slot, job->t, j, cc->qkv, cc->q_sink, job->cs, job->cs_sink);
    attn_decode_head(&job->attn, j, thread);
}

/* Steps 1-6 of one token in one pass, when there are passes to save (more than one thread:
 * one thread gains nothing and would run W_qkv as 3 short GEMVs per KV head, each starting its
 * prefetch cold), W_qkv's rows are stacked in order or mapped head half by head half
 * (half_base), the cache is short enough that attention runs unsplit, and the KV heads share out
 * evenly over the threads (a task is a whole KV head: 4 heads on 8 threads would leave half of
 * them idle, where the separate projection takes 32 tasks); otherwise nothing (*done = 0). */
static dattn_status cpu_decode_attend(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                      const float *x, int slot, int64_t t0, int *done)
{
    cpu_backend *cb = be->impl;
    cpu_cache *cc = c->be_state;
    const backend_weight *w = l->w_qkv;
    *done = 0;
    int n_threads = pool_threads(cb->pool);
    if (n_threads == 1 || (w->row_map && !l->half_base) || l->d.n_kv_heads % n_threads != 0)
        return DATTN_OK;
    attn_args a = layer_attn_args(l, c, slot, t0, 1);
    attend_job job = {.l = l, .c = c, .slot = slot, .t = t0};
    if (!attn_decode_plan(n_threads, cb->k, &a, &cc->dec, cc->thread_tmp, cc->thread_floats,
                          &job.attn))
        return DATTN_OK;
    /* Both tables before the pass: the tasks only read them. */
    job.cs_sink = cc->q_sink ? rope_table(cc, l, kv_cache_pos(&c->g, t0)) : NULL;
    job.cs = rope_table(cc, l, t0);
    x = x ? x : cc->normed;
    job.mm = (matmul_job){cb->k, w, x, quantize_x(cb, cc, w, x, 1), cb->gemv_xq8,
                          cb->gemv_x4, l->d.model_dim, 1, l->d.qkv_dim, 0, cc->qkv, cc->thread_tmp,
                          cc->thread_floats};
    pool_run(cb->pool, attend_task, &job, job.attn.n_kv_heads);
    *done = 1;
    return DATTN_OK;
}

static uint64_t cpu_pool_passes(const dattn_backend *be)
{
    return pool_passes(((const cpu_backend *)be->impl)->pool);
}

static const backend_ops cpu_ops = {
    .kind = "cpu",
    .uses_host_rows = 1,
    .weight_copies = cpu_weight_copies,
    .pool_passes = cpu_pool_passes,
    .destroy = cpu_destroy,
    .weights_group = cpu_weights_group,
    .weight_create = cpu_weight_create,
    .weight_free = cpu_weight_free,
    .weight_bytes = cpu_weight_bytes,
    .layer_create = cpu_layer_create,
    .layer_free = cpu_layer_free,
    .layer_bytes = cpu_layer_bytes,
    .cache_bytes = cpu_cache_bytes,
    .cache_init = cpu_cache_init,
    .cache_release = cpu_cache_release,
    .kv_read = cpu_kv_read,
    .kv_write = cpu_kv_write,
    .project_in = cpu_project_in,
    .qkv_write = cpu_qkv_write,
    .rope_append = cpu_rope_append,
    .attention = cpu_attention,
    .decode_attend = cpu_decode_attend,
    .project_out = cpu_project_out,
    .attn_read = cpu_attn_read,
    .linear = cpu_linear,
    .ffn = cpu_ffn,
    .vector_create = cpu_vector_create,
    .vector_free = cpu_vector_free,
    .pass_begin = cpu_pass_begin,
    .norm = cpu_norm,
    .residual_add = cpu_residual_add,
    .pass_end = cpu_pass_end,
};

dattn_status cpu_backend_create(const dattn_backend_params *p, dattn_backend **out)
{
    const cpu_kernels *k = NULL;
    dattn_status st = pick_kernels(p->cpu_isa, &k);
    if (st != DATTN_OK)
        return st;
    int n_threads = p->n_threads;
    if (n_threads < 0)
        return dattn_fail(DATTN_E_INVALID_ARG, "cpu: n_threads %d is negative", n_threads);
    if (n_threads == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = online > 0 ? (int)(online < 256 ? online : 256) : 1;
    }
    dattn_backend *be = dattn_alloc(sizeof *be, "backend");
    cpu_backend *cb = dattn_alloc(sizeof *cb, "cpu backend");
    if (!be || !cb) {
        dattn_free(be);
        dattn_free(cb);
        return DATTN_E_NOMEM;
    }
    st = pool_create(n_threads, &cb->pool);
    if (st != DATTN_OK) {
        dattn_free(be);
        dattn_free(cb);
        return st;
    }
    cb->k = k;
    cb->gemv_xq8 = k->gemv_xq8;
    cb->gemv_x4 = NULL;
#if defined(__x86_64__)
    if (k == &cpu_kernels_avx512 && __builtin_cpu_supports("avx512vnni"))
        cb->gemv_xq8 = __builtin_cpu_supports("avx512vbmi") ? gemv_xq8_avx512vbmi
                                                            : gemv_xq8_avx512vnni;
    if (cb->gemv_xq8 == gemv_xq8_avx512vbmi)
        cb->gemv_x4 = gemv_xq8_x4_avx512vbmi;
    if (k == &cpu_kernels_avx2 && cpu_has_avxvnni())
        cb->gemv_xq8 = gemv_xq8_avxvnni;
#endif
    be->ops = &cpu_ops;
    be->impl = cb;
    snprintf(be->describe, sizeof be->describe, "cpu %s, %d thread%s", k->isa, n_threads,
             n_threads == 1 ? "" : "s");
    dattn_log(DATTN_LOG_INFO, "backend: %s", be->describe);
    *out = be;
    return DATTN_OK;
}
