/* The OpenCL backend: the layer forward of src/layer.c on any OpenCL 1.2 device, with each
 * layer's weights and constants uploaded at load, and the KV cache and every activation in device
 * buffers made at cache creation. Programs are built
 * once per cache (they depend on the head dim, group and KV type) through the binary cache; the
 * token path only sets kernel arguments and enqueues: no buffer, program, kernel or host
 * allocation per token. Work-group sizes come from the platforms/ tuning row of the device.
 *
 * A model's cache also holds the model pass's rows (backend.h): the residual stream, the normed
 * rows and the block output stay on the device from the embedding to the logits; per chunk the
 * host writes the embedding rows (without waiting) and reads the logits and the fault record back
 * in one blocking read.
 *
 * Prefill GEMMs (n > 1 rows) go through CLBlast where the build has it (-Dclblast), with its temp
 * buffer made with the cache (a weight held in another format than f32 is widened a panel of
 * rows at a time into a buffer of at most 16 MiB first); else through gemm.cl. The KV region is as few buffers as
 * CL_DEVICE_MAX_MEM_ALLOC_SIZE allows, split on head-block boundaries; each launch reads the run of
 * KV heads of one slot that shares a buffer.
 *
 * Two overrides come in the backend params (the tools fill them from DATTN_CL_MAX_ALLOC and
 * DATTN_TUNING): max_buffer_bytes lowers the one-buffer cap (to exercise the split), tuning =
 * "field=value,..." overrides fields of the device's platforms/tuning.tsv row. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "backend.h"
#include "cl_common.h"
#include "cl_sources.h"
#ifdef DATTN_HAVE_CLBLAST
#include "clblast_gemm.h"
#endif
#include "program.h"
#include "quant.h"
#include "status.h"
#include "tuning.h"
#include "weight_layout.h"

enum { MAX_BUILT = 64 };
enum { FAULT_INTS = 2 };       /* the model pass's fault record (elementwise.cl residual_add) */

typedef struct cl_backend {
    cl_device_entry dev;
    dattn_device_info info;
    tuning_row tune;           /* the device's platforms/ row, the override applied */
    char tune_label[80];       /* its name, "+override" when overridden */
    uint64_t max_alloc;        /* one buffer's cap: CL_DEVICE_MAX_MEM_ALLOC_SIZE or lower */
    const char *max_alloc_from;   /* which of the two set it */
    size_t max_wg;             /* CL_DEVICE_MAX_WORK_GROUP_SIZE */
    cl_context ctx;
    cl_command_queue queue;
    /* Programs built so far, by source and options: caches of the same shape (the layers of a
     * model, or a cache made again) reuse them instead of building again. */
    struct built { char key[512]; cl_program prog; } built[MAX_BUILT];
    int n_built;
} cl_backend;

struct backend_weight {
    int m, k;
    int fmt;                   /* CLW_F32 .. CLW_Q4_0: which gemv / gemm kernel reads it */
    uint64_t bytes;            /* of buf */
    cl_mem buf;                /* [m][k] rows in order, held in their format (weight_layout.h) */
};

/* A layer on the device: everything its ops read, uploaded once by layer_create. */
struct backend_layer {
    layer_desc d;
    backend_weight *w_qkv, *w_out;
    cl_mem inv_freq;           /* [d/2] f32 RoPE table */
    cl_mem subln;              /* [2d] f32 */
};

struct backend_vector {
    int n;
    cl_mem buf;                /* [n] f32 */
};

enum { N_PROGRAMS = 8 };

/* Per-cache device state. */
typedef struct cl_cache {
    /* The KV region, kv.h's layout, in n_kv_bufs buffers of blocks_per_buf head blocks (the
     * last may hold fewer): head block b = slot * Hkv + j lies in kv[b / blocks_per_buf]. */
    cl_mem *kv;
    int n_kv_bufs, blocks_per_buf, n_blocks;
    size_t head_bytes;
    cl_mem x, qkv, q, q_sink, k, v, attn, y;   /* activations, max_batch rows */
    cl_mem hidden;             /* [max_batch][2F] FFN hidden rows (sessions only) */
    /* The model pass (sessions only): the residual stream and the block output, [max_batch][E];
     * the normed rows are x. y holds the logits [n_logits][V], then the fault record at
     * fault_at = n_logits * V (so one read brings back both). */
    cl_mem stream, block_out;
    float *stage;              /* [V + FAULT_INTS] host: the last logits row and the record */
    int pass_logits, fault_at;  /* of the chunk under way (pass_begin) */
    cl_mem partial;            /* [H][max_split + 1][part_floats] decode split states (+1: sinks) */
    cl_mem gemm_temp;          /* CLBlast's temp buffer (NULL: none needed, or no CLBlast) */
    size_t gemm_temp_bytes;
    cl_mem widen;              /* a panel of a non-f32 weight's rows as f32, for CLBlast (NULL:
                                * no CLBlast or max_batch 1) */
    size_t widen_bytes;
    int use_clblast;
    int x_cols, y_cols, ffn_dim;   /* scratch widths: inputs, outputs (floats per row) */
    cl_program prog[N_PROGRAMS];
    cl_kernel k_split, k_combine, k_append, k_rope, k_prefill, k_swiglu;
    cl_kernel k_split_short;   /* the split kernel of short contexts, one query head a
                                * work-group (tuning_decode_plan), or NULL: k_split serves all */
    cl_kernel k_gemv[CLW_FORMATS], k_gemm[CLW_FORMATS];   /* per weight format */
    cl_kernel k_widen[CLW_FORMATS];                        /* per format but f32 (CLBlast only) */
    cl_kernel k_norm, k_add;   /* the model pass's RMSNorm, and residual add + the next block's
                                * RMSNorm (sessions only) */
    size_t norm_wg;
    int wg_decode, decode_heads, combine_wg, append_wg, gemv_wg, gemv_rows, max_split;
    int decode_heads_short;    /* HEADS of k_split_short */
    size_t gemm_local[2], gemm_tile[2];   /* (LX, LY), (TILE_N, TILE_M) */
    size_t prefill_wg, prefill_qt;
    cl_int fail_err;           /* the first failing call of the current op, or CL_SUCCESS */
    const char *fail_what;
    dattn_status fail_st;      /* a failure already reported with its own message (CLBlast) */
} cl_cache;

/* ---- backend ------------------------------------------------------------------------------ */

static void cl_destroy(dattn_backend *be)
{
    cl_backend *cb = be->impl;
    for (int i = 0; i < cb->n_built; i++)
        clReleaseProgram(cb->built[i].prog);
    if (cb->queue)
        clReleaseCommandQueue(cb->queue);
    if (cb->ctx)
        clReleaseContext(cb->ctx);
    dattn_free(cb);
    dattn_free(be);
}

/* The weight in its own format (F32, F16, BF16 as stored; q8_0 / q4_0 split into planes of
 * quants and scales, weight_layout.h), rows in W's order (row_map applied), uploaded in one
 * buffer: its device memory is about its bytes in that format. */
static dattn_status cl_weight_create(dattn_backend *be, const weight_src *src,
                                     backend_weight **out)
{
    cl_backend *cb = be->impl;
    int m = src->row_map ? src->m : weight_src_rows(src), k = src->k;
    int fmt = clw_format(src->dtype);
    uint64_t bytes = fmt < 0 ? 0 : clw_bytes(fmt, m, k);
    if (bytes == 0)
        return dattn_fail(DATTN_E_UNSUPPORTED, "opencl: a %dx%d weight of dtype %d: the device "
                          "holds f32, f16, bf16, q8_0 and q4_0 weights (block formats with k a "
                          "multiple of 32)", m, k, (int)src->dtype);
    if (bytes > cb->max_alloc || bytes > SIZE_MAX)
        return dattn_fail(DATTN_E_ARENA, "opencl: a %dx%d %s weight is %llu bytes in one buffer; "
                          "'%s' allows at most %llu (%s)", m, k, clw_name(fmt),
                          (unsigned long long)bytes, cb->info.name,
                          (unsigned long long)cb->max_alloc, cb->max_alloc_from);
    backend_weight *bw = dattn_alloc(sizeof *bw, "weight");
    void *rows = dattn_alloc((size_t)bytes, "weight upload");
    if (!bw || !rows) {
        dattn_free(bw);
        dattn_free(rows);
        return DATTN_E_NOMEM;
    }
    clw_pack(src, m, rows);   /* finite: the loaders checked */
    cl_int err;
    bw->m = m;
    bw->k = k;
    bw->fmt = fmt;
    bw->bytes = bytes;
    bw->buf = clCreateBuffer(cb->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, (size_t)bytes, rows,
                             &err);
    dattn_free(rows);
    if (err != CL_SUCCESS) {
        dattn_free(bw);
        return dattn_fail(DATTN_E_OPENCL, "opencl: uploading a %dx%d %s weight (%llu bytes) to "
                          "'%s': clCreateBuffer: %s", m, k, clw_name(fmt),
                          (unsigned long long)bytes, cb->info.name, cl_error_name(err));
    }
    *out = bw;
    return DATTN_OK;
}

static uint64_t cl_weight_bytes(const backend_weight *w, int *borrowed)
{
    *borrowed = 0;
    return w->bytes;
}

static void cl_weight_free(dattn_backend *be, backend_weight *w)
{
    (void)be;
    if (!w)
        return;
    clReleaseMemObject(w->buf);
    dattn_free(w);
}

static void cl_layer_free(dattn_backend *be, backend_layer *l)
{
    if (!l)
        return;
    cl_weight_free(be, l->w_qkv);
    cl_weight_free(be, l->w_out);
    if (l->inv_freq)
        clReleaseMemObject(l->inv_freq);
    if (l->subln)
        clReleaseMemObject(l->subln);
    dattn_free(l);
}

/* A read-only buffer with a copy of n floats. */
static dattn_status upload(cl_backend *cb, const float *src, size_t n, const char *what, cl_mem *out)
{
    cl_int err;
    *out = clCreateBuffer(cb->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, sizeof(float) * n,
                          (void *)src, &err);
    if (err != CL_SUCCESS) {
        *out = NULL;
        return dattn_fail(DATTN_E_OPENCL, "opencl: uploading the %s (%zu floats) to '%s': "
                          "clCreateBuffer: %s", what, n, cb->info.name, cl_error_name(err));
    }
    return DATTN_OK;
}

static dattn_status cl_layer_create(dattn_backend *be, const layer_desc *d, const layer_tensors *t,
                                    backend_layer **out)
{
    cl_backend *cb = be->impl;
    backend_layer *l = dattn_alloc(sizeof *l, "layer");
    size_t half = (size_t)(d->head_dim / 2);
    float *inv_freq = dattn_alloc(sizeof(float) * half, "RoPE table");
    dattn_status st = DATTN_E_NOMEM;
    if (!l || !inv_freq)
        goto fail;
    l->d = *d;
    for (size_t i = 0; i < half; i++)
        inv_freq[i] = (float)t->inv_freq[i];
    if ((st = cl_weight_create(be, &t->w_qkv, &l->w_qkv)) != DATTN_OK ||
        (st = cl_weight_create(be, &t->w_out, &l->w_out)) != DATTN_OK ||
        (st = upload(cb, inv_freq, half, "RoPE table", &l->inv_freq)) != DATTN_OK ||
        (st = upload(cb, t->subln, 2 * (size_t)d->head_dim, "subln weight", &l->subln)) != DATTN_OK)
        goto fail;
    dattn_free(inv_freq);
    *out = l;
    return DATTN_OK;
fail:
    dattn_free(inv_freq);
    cl_layer_free(be, l);
    return st;
}

static uint64_t cl_layer_bytes(const backend_layer *l)
{
    int borrowed;
    return cl_weight_bytes(l->w_qkv, &borrowed) + cl_weight_bytes(l->w_out, &borrowed) +
           sizeof(float) * (2 * (uint64_t)l->d.head_dim + (uint64_t)(l->d.head_dim / 2));
}

/* ---- cache: buffers, programs, kernels ---------------------------------------------------- */

static int max_int(int a, int b) { return a > b ? a : b; }

/* Bytes of every device buffer a cache makes besides the KV region. */
typedef struct act_sizes {
    size_t x, qkv, q, kvd, attn, y, hidden, partial, temp, widen;
    size_t pass;               /* the stream or the block output rows (a model's cache) */
} act_sizes;

/* The CLBlast temp buffer that covers every GEMM this cache runs at max_batch rows: the layer's
 * projections and, for a session, the FFN and linear shapes. 0 without CLBlast, for max_batch 1
 * (decode never uses it), or when CLBlast cannot answer (the GEMMs then use gemm.cl). */
static size_t clblast_temp_bytes(const cl_backend *cb, const dattn_layer_shape *s, const kv_geom *g,
                                 const cache_scratch *scratch)
{
#ifdef DATTN_HAVE_CLBLAST
    int B = g->max_batch, E = s->model_dim, F = scratch->ffn_dim, V = scratch->n_vocab;
    int A = 2 * s->n_heads * g->head_dim, qkv = A + 2 * A / (s->n_heads / s->n_kv_heads);
    if (B < 2)
        return 0;
    /* {m, k, ldx, ldy} */
    int shapes[8][4] = {{qkv, E, E, qkv}, {E, A, A, E}};
    int n = 2;
    if (F > 0) {
        shapes[n][0] = 2 * F, shapes[n][1] = E, shapes[n][2] = E, shapes[n++][3] = 2 * F;
        shapes[n][0] = E, shapes[n][1] = F, shapes[n][2] = 2 * F, shapes[n++][3] = E;
        shapes[n][0] = E, shapes[n][1] = F, shapes[n][2] = F, shapes[n++][3] = E;
    }
    if (V > 0) {
        shapes[n][0] = V, shapes[n][1] = E, shapes[n][2] = E, shapes[n++][3] = V;
        if (F > 0)
            shapes[n][0] = V, shapes[n][1] = F, shapes[n][2] = F, shapes[n++][3] = V;
    }
    size_t most = 0;
    for (int i = 0; i < n; i++) {
        size_t b = 0;
        if (clb_temp_bytes(cb->queue, B, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3],
                           &b) != DATTN_OK)
            return 0;
        if (b > most)
            most = b;
    }
    return most;
#else
    (void)cb, (void)s, (void)g, (void)scratch;
    return 0;
#endif
}

/* The panel buffer for CLBlast prefill GEMMs of weights held in another format than f32
 * (CLBlast reads f32 only; OpenCL devices without cl_khr_fp16, NVIDIA's among them, have no
 * HGEMM): the largest weight as f32, at most WIDEN_CAP bytes, so a big weight runs as several
 * GEMMs of a panel of its rows each (16 MiB: 512 rows of k = 8192). 0 without CLBlast or for
 * max_batch 1 (decode reads every format directly). */
enum { WIDEN_CAP = 16 << 20 };

static size_t widen_bytes(const dattn_layer_shape *s, const kv_geom *g, const cache_scratch *scratch)
{
#ifdef DATTN_HAVE_CLBLAST
    size_t E = (size_t)s->model_dim, F = (size_t)scratch->ffn_dim, V = (size_t)scratch->n_vocab;
    size_t A = 2 * (size_t)s->n_heads * (size_t)g->head_dim;
    size_t qkv = A + 2 * A / (size_t)(s->n_heads / s->n_kv_heads);
    if (g->max_batch < 2)
        return 0;
    size_t most = qkv * E > E * A ? qkv * E : E * A;
    most = 2 * F * E > most ? 2 * F * E : most;   /* w13; w2 is E x F, half of it */
    most = V * E > most ? V * E : most;
    most *= sizeof(float);
    return most < WIDEN_CAP ? most : WIDEN_CAP;
#else
    (void)s, (void)g, (void)scratch;
    return 0;
#endif
}

/* Floats of one decode split state (diffattn_decode.cl's PART_FLOATS): two halves of m, l, two
 * unused and o [2d] padded to 16 bytes. */
static uint64_t part_floats(int d)
{
    return 2 * (4 + ((2 * (uint64_t)d + 3) / 4) * 4);
}

/* The decode split states a cache holds per head: the row's max_split and one for the sinks,
 * fewer if they would not fit one buffer under the one-buffer cap (at least 2). */
static int split_records(const cl_backend *cb, int n_heads, int d)
{
    uint64_t per_split = sizeof(float) * (uint64_t)n_heads * part_floats(d);
    uint64_t fit = cb->max_alloc / per_split;
    int want = cb->tune.max_split + 1;
    return fit < (uint64_t)want ? (fit > 2 ? (int)fit : 2) : want;
}

static act_sizes sizes_of(const cl_backend *cb, const dattn_layer_shape *s, const kv_geom *g,
                          const cache_scratch *scratch)
{
    size_t r = (size_t)(s->n_heads / s->n_kv_heads), B = (size_t)g->max_batch;
    size_t d = (size_t)g->head_dim, F = (size_t)scratch->ffn_dim, A = 2 * (size_t)s->n_heads * d;
    act_sizes a;
    a.x = sizeof(float) * B * (size_t)max_int(s->model_dim, scratch->ffn_dim);
    a.qkv = sizeof(float) * B * (A + 2 * A / r);
    a.q = sizeof(float) * B * A;
    a.kvd = sizeof(float) * B * (A / r);
    a.attn = sizeof(float) * B * A;
    a.y = sizeof(float) * B * (size_t)max_int(s->model_dim, scratch->n_vocab);
    a.pass = 0;
    if (scratch->n_vocab > 0) {   /* a model's cache: the pass's rows and its fault record */
        a.pass = sizeof(float) * B * (size_t)s->model_dim;
        a.y += sizeof(cl_int) * FAULT_INTS;
    }
    a.hidden = sizeof(float) * B * 2 * F;
    a.partial = sizeof(float) * (size_t)s->n_heads * (size_t)split_records(cb, s->n_heads, (int)d) *
                part_floats((int)d);
    a.temp = clblast_temp_bytes(cb, s, g, scratch);
    a.widen = widen_bytes(s, g, scratch);
    return a;
}

static size_t act_total(const act_sizes *a)
{
    return a->x + a->qkv + 2 * a->q + 2 * a->kvd + a->attn + a->y + a->hidden + a->partial +
           a->temp + a->widen + 2 * a->pass;
}

static size_t cl_cache_bytes(const dattn_backend *be, const dattn_layer_shape *s, const kv_geom *g,
                             const cache_scratch *scratch)
{
    const cl_backend *cb = be->impl;
    act_sizes a = sizes_of(cb, s, g, scratch);
    size_t n = kv_bytes(g), acts = act_total(&a);
    return n > SIZE_MAX - acts ? SIZE_MAX : n + acts;
}

static void release_cache(cl_cache *cc)
{
    for (int i = 0; cc->kv && i < cc->n_kv_bufs; i++)
        if (cc->kv[i])
            clReleaseMemObject(cc->kv[i]);
    dattn_free(cc->kv);
    cl_mem *mems[] = {&cc->x, &cc->qkv, &cc->q, &cc->q_sink, &cc->k, &cc->v, &cc->attn, &cc->y,
                      &cc->hidden, &cc->partial, &cc->gemm_temp, &cc->stream, &cc->block_out,
                      &cc->widen};
    for (size_t i = 0; i < sizeof mems / sizeof *mems; i++)
        if (*mems[i])
            clReleaseMemObject(*mems[i]);
    cl_kernel ks[] = {cc->k_split, cc->k_combine, cc->k_append, cc->k_rope, cc->k_prefill,
                      cc->k_swiglu, cc->k_norm, cc->k_add, cc->k_split_short};
    for (size_t i = 0; i < sizeof ks / sizeof *ks; i++)
        if (ks[i])
            clReleaseKernel(ks[i]);
    for (int f = 0; f < CLW_FORMATS; f++) {
        if (cc->k_gemv[f])
            clReleaseKernel(cc->k_gemv[f]);
        if (cc->k_gemm[f])
            clReleaseKernel(cc->k_gemm[f]);
        if (cc->k_widen[f])
            clReleaseKernel(cc->k_widen[f]);
    }
    for (int i = 0; i < N_PROGRAMS; i++)
        if (cc->prog[i])
            clReleaseProgram(cc->prog[i]);
    dattn_free(cc->stage);
    dattn_free(cc);
}

/* A buffer of `bytes`; none (NULL) for 0 bytes, which the cache then never touches. */
static dattn_status make_buffer(cl_backend *cb, size_t bytes, const char *what, cl_mem *out)
{
    cl_int err;
    *out = NULL;
    if (bytes == 0)
        return DATTN_OK;
    if (bytes > cb->max_alloc)
        return dattn_fail(DATTN_E_ARENA, "opencl: the %s needs one buffer of %zu bytes; '%s' allows "
                          "at most %llu (%s); lower max_batch", what, bytes, cb->info.name,
                          (unsigned long long)cb->max_alloc, cb->max_alloc_from);
    *out = clCreateBuffer(cb->ctx, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err != CL_SUCCESS)
        return dattn_fail(DATTN_E_OPENCL, "opencl: clCreateBuffer for the %s (%zu bytes) on '%s': "
                          "%s", what, bytes, cb->info.name, cl_error_name(err));
    return DATTN_OK;
}

/* The KV region as few buffers as the one-buffer cap allows, split evenly on head blocks, each
 * zeroed once (pages past the visible keys are never read, but a saved file should not carry
 * stale device memory). */
static dattn_status make_kv(cl_backend *cb, cl_cache *cc, const kv_geom *g)
{
    cc->head_bytes = g->head_bytes;
    cc->n_blocks = g->n_slots * g->n_kv_heads;
    if (g->head_bytes > cb->max_alloc)
        return dattn_fail(DATTN_E_ARENA, "opencl: one KV head block (the keys and values of one KV "
                          "head of one layer: n_ctx %d, head_dim %d) is %zu bytes; '%s' allows at "
                          "most %llu in one buffer (%s); lower n_ctx or use a smaller kv type",
                          g->n_ctx, g->head_dim, g->head_bytes, cb->info.name,
                          (unsigned long long)cb->max_alloc, cb->max_alloc_from);
    uint64_t fit = cb->max_alloc / g->head_bytes;
    int per = fit < (uint64_t)cc->n_blocks ? (int)fit : cc->n_blocks;
    cc->n_kv_bufs = (cc->n_blocks + per - 1) / per;
    cc->blocks_per_buf = (cc->n_blocks + cc->n_kv_bufs - 1) / cc->n_kv_bufs;
    cc->kv = dattn_alloc(sizeof(cl_mem) * (size_t)cc->n_kv_bufs, "KV buffer table");
    if (!cc->kv)
        return DATTN_E_NOMEM;
    for (int i = 0; i < cc->n_kv_bufs; i++) {
        int first = i * cc->blocks_per_buf;
        int blocks = cc->n_blocks - first < cc->blocks_per_buf ? cc->n_blocks - first
                                                               : cc->blocks_per_buf;
        size_t bytes = (size_t)blocks * g->head_bytes;
        dattn_status st = make_buffer(cb, bytes, "KV cache", &cc->kv[i]);
        if (st != DATTN_OK)
            return st;
        cl_float zero = 0.0f;
        cl_int err = clEnqueueFillBuffer(cb->queue, cc->kv[i], &zero, sizeof zero, 0, bytes, 0,
                                         NULL, NULL);
        if (err != CL_SUCCESS)
            return dattn_fail(DATTN_E_OPENCL, "opencl: clEnqueueFillBuffer of the KV cache: %s",
                              cl_error_name(err));
    }
    if (cc->n_kv_bufs > 1)
        dattn_log(DATTN_LOG_INFO, "opencl: the KV cache (%zu bytes) is %d buffers of up to %d head "
                  "blocks (%zu bytes each; one buffer may hold %llu, %s)", kv_bytes(g),
                  cc->n_kv_bufs, cc->blocks_per_buf, g->head_bytes,
                  (unsigned long long)cb->max_alloc, cb->max_alloc_from);
    return DATTN_OK;
}

/* The KV heads j0 .. j0+n-1 of a slot that lie in one buffer, from head j0 on: one launch. */
typedef struct kv_run {
    cl_mem buf;
    cl_ulong off;              /* byte offset of head block (slot, j0) in buf */
    int j0, n;
} kv_run;

static kv_run kv_run_at(const cl_cache *cc, int n_kv_heads, int slot, int j0)
{
    int b = slot * n_kv_heads + j0, i = b / cc->blocks_per_buf;
    int end = (i + 1) * cc->blocks_per_buf, slot_end = (slot + 1) * n_kv_heads;
    kv_run run;
    run.buf = cc->kv[i];
    run.off = (cl_ulong)(b - i * cc->blocks_per_buf) * cc->head_bytes;
    run.j0 = j0;
    run.n = (end < slot_end ? end : slot_end) - b;
    return run;
}

/* The program of `source` with `options`: built once per backend (and through the binary cache
 * on disk); each caller gets its own reference. */
static dattn_status build(cl_backend *cb, const char *source, const char *options, cl_program *out)
{
    char key[512];
    snprintf(key, sizeof key, "%s|%s", source, options);
    for (int i = 0; i < cb->n_built; i++)
        if (!strcmp(cb->built[i].key, key)) {
            clRetainProgram(cb->built[i].prog);
            *out = cb->built[i].prog;
            return DATTN_OK;
        }
    int cached;
    dattn_status st = cl_program_build(cb->ctx, cb->dev.device, source, cl_source_text(source),
                                       options, NULL, out, &cached);
    if (st == DATTN_OK && cb->n_built < MAX_BUILT) {
        snprintf(cb->built[cb->n_built].key, sizeof cb->built[cb->n_built].key, "%s", key);
        cb->built[cb->n_built++].prog = *out;
        clRetainProgram(*out);
    }
    return st;
}

static dattn_status make_kernel(cl_program prog, const char *name, cl_kernel *out)
{
    cl_int err;
    *out = clCreateKernel(prog, name, &err);
    if (err != CL_SUCCESS)
        return dattn_fail(DATTN_E_OPENCL, "opencl: clCreateKernel('%s'): %s", name,
                          cl_error_name(err));
    return DATTN_OK;
}

/* A kernel's needs against what the device grants it (CL_KERNEL_WORK_GROUP_SIZE takes the
 * kernel's registers into account, so it can be below the device's maximum). `knob` names the
 * tuning fields that set the work-group. */
static dattn_status check_kernel(const cl_backend *cb, cl_kernel k, const char *name, size_t wg,
                                 const char *knob)
{
    size_t kernel_wg = 0;
    cl_ulong local = 0;
    cl_int err = clGetKernelWorkGroupInfo(k, cb->dev.device, CL_KERNEL_WORK_GROUP_SIZE,
                                          sizeof kernel_wg, &kernel_wg, NULL);
    if (err == CL_SUCCESS)
        err = clGetKernelWorkGroupInfo(k, cb->dev.device, CL_KERNEL_LOCAL_MEM_SIZE, sizeof local,
                                       &local, NULL);
    if (err != CL_SUCCESS)
        return dattn_fail(DATTN_E_OPENCL, "opencl: clGetKernelWorkGroupInfo('%s'): %s", name,
                          cl_error_name(err));
    if (wg > kernel_wg)
        return dattn_fail(DATTN_E_UNSUPPORTED, "opencl: kernel %s needs work-groups of %zu items; "
                          "'%s' runs it with at most %zu (CL_KERNEL_WORK_GROUP_SIZE); lower %s in "
                          "platforms/tuning.tsv (row '%s') or the tuning override (DATTN_TUNING), or use --backend cpu",
                          name, wg, cb->info.name, kernel_wg, knob, cb->tune_label);
    if (local > cb->info.local_mem_bytes)
        return dattn_fail(DATTN_E_UNSUPPORTED, "opencl: kernel %s needs %llu bytes of local memory; "
                          "'%s' has %llu (CL_DEVICE_LOCAL_MEM_SIZE); lower %s in "
                          "platforms/tuning.tsv (row '%s') or the tuning override (DATTN_TUNING), or use --backend cpu",
                          name, (unsigned long long)local, cb->info.name,
                          (unsigned long long)cb->info.local_mem_bytes, knob, cb->tune_label);
    return DATTN_OK;
}

/* diffattn_prefill's work-group (QT * KT / 8 items) and local memory for the row's tiles (the
 * formula of diffattn_prefill.cl), checked before building: the kernel's own #error guards would
 * only leave a build log. */
static size_t prefill_items(int qt, int kt)
{
    return (size_t)qt * (size_t)kt / 8;
}

static size_t prefill_local_bytes(int d, int qt, int kt)
{
    size_t d4 = ((size_t)d + 3) / 4 * 4, ec = d4 < 32 ? d4 : 32, cs = ec + 4, vs = 2 * d4 + 4;
    size_t khalf = (size_t)kt * cs + (size_t)kt / 2, kc = 16 * vs <= 2 * khalf ? 16 : 8;
    size_t q = 2 * (size_t)qt * cs, q_min = (size_t)qt * kt / 2 + 2 * (size_t)qt;
    size_t k = 2 * khalf, v = kc * vs;
    return 4 * ((q > q_min ? q : q_min) + (k > v ? k : v) + 2 * (size_t)kt * qt);
}

static dattn_status check_prefill_tiles(const cl_backend *cb, int d, int qt, int kt)
{
    size_t wg = prefill_items(qt, kt);
    size_t local = prefill_local_bytes(d, qt, kt);
    size_t max_wg = cb->max_wg < 1024 ? cb->max_wg : 1024;
    size_t max_local = cb->info.local_mem_bytes < 32768 ? cb->info.local_mem_bytes : 32768;
    if (qt % 4 != 0 || kt % 16 != 0 || wg < 1 || wg > max_wg || local > max_local)
        return dattn_fail(DATTN_E_UNSUPPORTED, "opencl: kernel diffattn_prefill with PREFILL_QT=%d "
                          "PREFILL_KT=%d at head_dim %d needs work-groups of %zu items and %zu bytes "
                          "of local memory (QT a multiple of 4, KT of 16); '%s' allows %zu items and "
                          "%zu bytes (the kernel at most 1024 and 32 KiB); lower PREFILL_QT or "
                          "PREFILL_KT in platforms/tuning.tsv "
                          "(row '%s') or the tuning override (DATTN_TUNING), or use --backend cpu", qt, kt, d, wg, local,
                          cb->info.name, max_wg, max_local, cb->tune_label);
    return DATTN_OK;
}

/* The decode launch for n_used slots in use (tuning_decode_plan with this device's limits, and
 * at most max_split splits: the split states the cache's buffer holds, less the sinks'). */
static int decode_plan(const cl_backend *cb, const dattn_cache *c, int max_split, int64_t n_used,
                       tuning_decode *p)
{
    tuning_row row = cb->tune;
    row.max_split = max_split;
    return tuning_decode_plan(&row, (int)c->g.type, c->g.head_dim,
                              c->shape.n_heads / c->shape.n_kv_heads, c->shape.n_kv_heads, n_used,
                              (int)cb->info.compute_units, (size_t)cb->info.local_mem_bytes,
                              cb->max_wg, p);
}

/* The build options of diffattn_decode.cl for a head block of `heads` query heads. */
static void decode_options(char *opt, size_t n, const cl_cache *cc, int d, int group, int kv_type,
                           int heads, int acc_local)
{
    snprintf(opt, n, "-D HEAD_DIM=%d -D GROUP=%d -D HEADS=%d -D KV_TYPE=%d -D WG_DECODE=%d "
             "-D COMBINE_WG_SIZE=%d -D MAX_SPLIT=%d -D ACC_IN_LOCAL=%d -D EPS_ARG", d, group,
             heads, kv_type, cc->wg_decode, cc->combine_wg, cc->max_split + 1, acc_local);
}

static dattn_status cl_cache_init(dattn_backend *be, dattn_cache *c, void *caller_buf,
                                  size_t caller_bytes)
{
    (void)caller_bytes;
    cl_backend *cb = be->impl;
    if (caller_buf)
        return dattn_fail(DATTN_E_UNSUPPORTED, "opencl: the cache lives in device memory on '%s'; "
                          "pass no arena buffer (NULL) to dattn_cache_create", cb->info.name);
    dattn_status st;
    const kv_geom *g = &c->g;
    int r = c->shape.n_heads / c->shape.n_kv_heads, d = g->head_dim;
    act_sizes a = sizes_of(cb, &c->shape, g, &c->scratch);
    size_t total = cl_cache_bytes(be, &c->shape, g, &c->scratch);
    if (total > cb->info.global_mem_bytes)
        return dattn_fail(DATTN_E_ARENA, "opencl: this cache needs %zu bytes of device memory (KV "
                          "%zu + scratch %zu); '%s' has %llu (CL_DEVICE_GLOBAL_MEM_SIZE); lower "
                          "n_ctx, n_layers or max_batch, or use a smaller kv type", total,
                          kv_bytes(g), act_total(&a), cb->info.name,
                          (unsigned long long)cb->info.global_mem_bytes);
    if ((st = check_prefill_tiles(cb, d, cb->tune.prefill_qt, cb->tune.prefill_kt)) != DATTN_OK)
        return st;
    cl_cache *cc = dattn_alloc(sizeof *cc, "opencl cache state");
    if (!cc)
        return DATTN_E_NOMEM;
    cc->max_split = split_records(cb, c->shape.n_heads, d) - 1;   /* + 1 for the sinks */
    cc->x_cols = max_int(c->shape.model_dim, c->scratch.ffn_dim);
    cc->y_cols = max_int(c->shape.model_dim, c->scratch.n_vocab);
    cc->ffn_dim = c->scratch.ffn_dim;
    cc->gemm_temp_bytes = a.temp;
    cc->widen_bytes = a.widen;
#ifdef DATTN_HAVE_CLBLAST
    cc->use_clblast = 1;
#endif
    if ((st = make_kv(cb, cc, g)) != DATTN_OK ||
        (st = make_buffer(cb, a.x, "input rows", &cc->x)) != DATTN_OK ||
        (st = make_buffer(cb, a.qkv, "q/k/v rows", &cc->qkv)) != DATTN_OK ||
        (st = make_buffer(cb, a.q, "queries", &cc->q)) != DATTN_OK ||
        (st = make_buffer(cb, a.q, "sink queries", &cc->q_sink)) != DATTN_OK ||
        (st = make_buffer(cb, a.kvd, "keys", &cc->k)) != DATTN_OK ||
        (st = make_buffer(cb, a.kvd, "values", &cc->v)) != DATTN_OK ||
        (st = make_buffer(cb, a.attn, "attention output", &cc->attn)) != DATTN_OK ||
        (st = make_buffer(cb, a.y, "output rows", &cc->y)) != DATTN_OK ||
        (st = make_buffer(cb, a.hidden, "FFN hidden rows", &cc->hidden)) != DATTN_OK ||
        (st = make_buffer(cb, a.partial, "decode split states", &cc->partial)) != DATTN_OK ||
        (st = make_buffer(cb, a.temp, "CLBlast temp buffer", &cc->gemm_temp)) != DATTN_OK ||
        (st = make_buffer(cb, a.widen, "CLBlast weight panel", &cc->widen)) != DATTN_OK ||
        (st = make_buffer(cb, a.pass, "residual stream", &cc->stream)) != DATTN_OK ||
        (st = make_buffer(cb, a.pass, "block output rows", &cc->block_out)) != DATTN_OK)
        goto fail;
    if (a.pass) {
        cc->stage = dattn_alloc(sizeof(float) * ((size_t)c->scratch.n_vocab + FAULT_INTS),
                                "logits staging");
        if (!cc->stage) {
            st = DATTN_E_NOMEM;
            goto fail;
        }
    }

    /* The decode kernel as the longest context launches it, and, where a short one takes
     * another head block (tuning_decode_plan), that variant too: the choice flips once. */
    tuning_decode plan, plan_short;
    if (decode_plan(cb, c, cc->max_split, g->n_phys, &plan) != 0 ||
        decode_plan(cb, c, cc->max_split, 1, &plan_short) != 0) {
        st = dattn_fail(DATTN_E_UNSUPPORTED, "opencl: no work-group of the decode kernel (16 items "
                        "or more) fits '%s' at head_dim %d: %zu items and %llu bytes of local "
                        "memory; use --backend cpu", cb->info.name, d, cb->max_wg,
                        (unsigned long long)cb->info.local_mem_bytes);
        goto fail;
    }
    cc->wg_decode = plan.wg;
    cc->decode_heads = plan.heads;
    cc->decode_heads_short = plan_short.heads;
    cc->combine_wg = 2 * d >= 256 ? 256 : 2 * d >= 128 ? 128 : 64;
    cc->append_wg = 64;
    cc->gemv_wg = cb->tune.gemv_wg;
    cc->gemv_rows = cb->tune.gemv_rows;
    cc->gemm_local[0] = 16, cc->gemm_local[1] = 16;   /* gemm.cl defaults: 64x64 tiles, 4x4 */
    cc->gemm_tile[0] = 64, cc->gemm_tile[1] = 64;
    cc->prefill_qt = (size_t)cb->tune.prefill_qt;
    cc->prefill_wg = prefill_items(cb->tune.prefill_qt, cb->tune.prefill_kt);
    char opt[256];
    decode_options(opt, sizeof opt, cc, d, r, (int)g->type, cc->decode_heads, plan.acc_local);
    if ((st = build(cb, "diffattn_decode", opt, &cc->prog[0])) != DATTN_OK)
        goto fail;
    if (cc->decode_heads_short != cc->decode_heads) {
        decode_options(opt, sizeof opt, cc, d, r, (int)g->type, cc->decode_heads_short,
                       plan_short.acc_local);
        if ((st = build(cb, "diffattn_decode", opt, &cc->prog[7])) != DATTN_OK ||
            (st = make_kernel(cc->prog[7], "diffattn_decode_split", &cc->k_split_short)) != DATTN_OK ||
            (st = check_kernel(cb, cc->k_split_short, "diffattn_decode_split",
                               (size_t)cc->wg_decode, "wg_decode")) != DATTN_OK)
            goto fail;
    }
    snprintf(opt, sizeof opt, "-D HEAD_DIM=%d -D KV_TYPE=%d -D APPEND_WG=%d", d, (int)g->type,
             cc->append_wg);
    if ((st = build(cb, "kv_append", opt, &cc->prog[1])) != DATTN_OK)
        goto fail;
    snprintf(opt, sizeof opt, "-D HEAD_DIM=%d", d);
    if ((st = build(cb, "rope", opt, &cc->prog[2])) != DATTN_OK)
        goto fail;
    snprintf(opt, sizeof opt, "-D GEMV_WG=%d -D GEMV_ROWS=%d", cc->gemv_wg, cc->gemv_rows);
    if ((st = build(cb, "gemv", opt, &cc->prog[3])) != DATTN_OK)
        goto fail;
    snprintf(opt, sizeof opt, "-D HEAD_DIM=%d -D GROUP=%d -D KV_TYPE=%d -D PREFILL_QT=%d "
             "-D PREFILL_KT=%d -D EPS_ARG", d, r, (int)g->type, cb->tune.prefill_qt, cb->tune.prefill_kt);
    if ((st = build(cb, "diffattn_prefill", opt, &cc->prog[4])) != DATTN_OK)
        goto fail;
    if ((st = build(cb, "elementwise", "", &cc->prog[5])) != DATTN_OK)
        goto fail;
    /* The pass's norm: a power of two up to 256 items a row, as the device allows. */
    for (cc->norm_wg = 256; cc->norm_wg > cb->max_wg && cc->norm_wg > 1; cc->norm_wg /= 2)
        ;
    if (a.pass) {
        snprintf(opt, sizeof opt, "-D WG_SIZE=%zu", cc->norm_wg);
        if ((st = build(cb, "rmsnorm", opt, &cc->prog[6])) != DATTN_OK ||
            (st = make_kernel(cc->prog[6], "rmsnorm", &cc->k_norm)) != DATTN_OK ||
            (st = make_kernel(cc->prog[6], "residual_add_norm", &cc->k_add)) != DATTN_OK ||
            (st = check_kernel(cb, cc->k_norm, "rmsnorm", cc->norm_wg, "nothing")) != DATTN_OK ||
            (st = check_kernel(cb, cc->k_add, "residual_add_norm", cc->norm_wg, "nothing")) != DATTN_OK)
            goto fail;
    }
    if ((st = make_kernel(cc->prog[0], "diffattn_decode_split", &cc->k_split)) != DATTN_OK ||
        (st = make_kernel(cc->prog[0], "diffattn_decode_combine", &cc->k_combine)) != DATTN_OK ||
        (st = make_kernel(cc->prog[1], "kv_append", &cc->k_append)) != DATTN_OK ||
        (st = make_kernel(cc->prog[2], "rope", &cc->k_rope)) != DATTN_OK ||
        (st = make_kernel(cc->prog[4], "diffattn_prefill", &cc->k_prefill)) != DATTN_OK ||
        (st = make_kernel(cc->prog[5], "swiglu_rows", &cc->k_swiglu)) != DATTN_OK)
        goto fail;
    {
        /* gemv.cl and gemm.cl each build one program with a kernel per weight format */
        cl_program gemm_prog;
        if ((st = build(cb, "gemm", "", &gemm_prog)) != DATTN_OK)
            goto fail;
        for (int f = 0; f < CLW_FORMATS && st == DATTN_OK; f++) {
            char name[32];
            snprintf(name, sizeof name, "gemv_%s", clw_name(f));
            st = make_kernel(cc->prog[3], name, &cc->k_gemv[f]);
            if (st == DATTN_OK) {
                snprintf(name, sizeof name, "gemm_%s", clw_name(f));
                st = make_kernel(gemm_prog, name, &cc->k_gemm[f]);
            }
            if (st == DATTN_OK && cc->widen && f != CLW_F32) {
                snprintf(name, sizeof name, "widen_%s", clw_name(f));
                st = make_kernel(gemm_prog, name, &cc->k_widen[f]);
            }
            if (st == DATTN_OK)
                st = check_kernel(cb, cc->k_gemv[f], "gemv", (size_t)cc->gemv_wg, "gemv_wg");
            if (st == DATTN_OK)
                st = check_kernel(cb, cc->k_gemm[f], "gemm", cc->gemm_local[0] * cc->gemm_local[1],
                                  "nothing (gemm.cl's tiles are fixed); use --backend cpu");
        }
        clReleaseProgram(gemm_prog);   /* the kernels keep the program alive */
        if (st != DATTN_OK)
            goto fail;
    }
    if ((st = check_kernel(cb, cc->k_split, "diffattn_decode_split", (size_t)cc->wg_decode,
                           "wg_decode")) != DATTN_OK ||
        (st = check_kernel(cb, cc->k_combine, "diffattn_decode_combine", (size_t)cc->combine_wg,
                           "wg_decode")) != DATTN_OK ||
        (st = check_kernel(cb, cc->k_append, "kv_append", (size_t)cc->append_wg,
                           "wg_decode")) != DATTN_OK ||
        (st = check_kernel(cb, cc->k_rope, "rope", 64, "wg_decode")) != DATTN_OK ||
        (st = check_kernel(cb, cc->k_prefill, "diffattn_prefill", cc->prefill_wg,
                           "prefill_qt or prefill_kt")) != DATTN_OK ||
        (st = check_kernel(cb, cc->k_swiglu, "swiglu_rows", 64, "nothing")) != DATTN_OK)
        goto fail;
    c->pages = NULL;
    c->be_state = cc;
    return DATTN_OK;
fail:
    dattn_error_prefix("opencl cache on '%s': ", cb->info.name);
    release_cache(cc);
    return st;
}

static void cl_cache_release(dattn_backend *be, dattn_cache *c)
{
    (void)be;
    if (c->be_state)
        release_cache(c->be_state);
    c->be_state = NULL;
}

/* Moves n bytes at offset off of the KV region to or from host memory, buffer by buffer. */
static dattn_status kv_copy(cl_backend *cb, const cl_cache *cc, size_t off, void *host, size_t n,
                            int write)
{
    size_t buf_bytes = (size_t)cc->blocks_per_buf * cc->head_bytes;
    unsigned char *p = host;
    while (n > 0) {
        size_t i = off / buf_bytes, in = off - i * buf_bytes;
        size_t chunk = buf_bytes - in < n ? buf_bytes - in : n;
        if (i >= (size_t)cc->n_kv_bufs)
            return dattn_fail(DATTN_E_INVALID_ARG, "opencl: KV bytes %zu.. lie past the cache", off);
        cl_int err = write ? clEnqueueWriteBuffer(cb->queue, cc->kv[i], CL_TRUE, in, chunk, p, 0,
                                                  NULL, NULL)
                           : clEnqueueReadBuffer(cb->queue, cc->kv[i], CL_TRUE, in, chunk, p, 0,
                                                 NULL, NULL);
        if (err != CL_SUCCESS)
            return dattn_fail(DATTN_E_OPENCL, "opencl: %s of the KV cache: %s",
                              write ? "clEnqueueWriteBuffer" : "clEnqueueReadBuffer",
                              cl_error_name(err));
        off += chunk, p += chunk, n -= chunk;
    }
    return DATTN_OK;
}

static dattn_status cl_kv_read(dattn_backend *be, const dattn_cache *c, size_t off, void *dst,
                               size_t n)
{
    return kv_copy(be->impl, c->be_state, off, dst, n, 0);
}

static dattn_status cl_kv_write(dattn_backend *be, dattn_cache *c, size_t off, const void *src,
                                size_t n)
{
    return kv_copy(be->impl, c->be_state, off, (void *)src, n, 1);
}

/* ---- the forward ---------------------------------------------------------------------------
 * Each op enqueues several calls; the first that fails is kept (check) and the op reports it
 * (op_status). A device failing mid-layer cannot be undone: the message says so. */

#define SET(k, i, v) clSetKernelArg((k), (i), sizeof(v), &(v))

static void check(cl_cache *cc, cl_int err, const char *what)
{
    if (err != CL_SUCCESS && cc->fail_err == CL_SUCCESS && cc->fail_st == DATTN_OK) {
        cc->fail_err = err;
        cc->fail_what = what;
    }
}

static void op_begin(cl_cache *cc)
{
    cc->fail_err = CL_SUCCESS;
    cc->fail_st = DATTN_OK;
}

static dattn_status op_status(cl_cache *cc)
{
    if (cc->fail_st != DATTN_OK)
        return cc->fail_st;    /* its message is set */
    if (cc->fail_err == CL_SUCCESS)
        return DATTN_OK;
    return dattn_fail(DATTN_E_OPENCL, "opencl: %s: %s (the device failed during the call; this "
                      "cache slot may be half-written: reset it)", cc->fail_what,
                      cl_error_name(cc->fail_err));
}

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

#ifdef DATTN_HAVE_CLBLAST
/* 1 if CLBlast fits the GEMM of a weight of `rows` rows (k columns) at n rows of x: its temp
 * buffer is no larger than the one made with the cache. */
static int clblast_fits(cl_backend *cb, cl_cache *cc, int n, int rows, int k, int ldx, int ldy)
{
    size_t need = 0;
    return clb_temp_bytes(cb->queue, n, rows, k, ldx, ldy, &need) == DATTN_OK &&
           need <= cc->gemm_temp_bytes;
}

/* The prefill GEMM through CLBlast, 1 if it was enqueued: an f32 weight as it is, another
 * format a panel of rows at a time, widened into cc->widen and written as a column block of y.
 * 0 (gemm.cl then) for a shape whose temp buffer outgrows the cache's. */
static int clblast_matmul(cl_backend *cb, cl_cache *cc, const backend_weight *w, cl_mem x,
                          int ldx, int n, cl_mem y, int ldy)
{
    cl_mem temp = cc->gemm_temp_bytes ? cc->gemm_temp : NULL;
    dattn_status st = DATTN_OK;
    if (w->fmt == CLW_F32) {
        if (!clblast_fits(cb, cc, n, w->m, w->k, ldx, ldy))
            return 0;
        st = clb_sgemm(cb->queue, x, ldx, w->buf, w->m, w->k, n, y, 0, ldy, temp);
    } else {
        int panel = (int)(cc->widen_bytes / (sizeof(float) * (size_t)w->k));
        panel = panel < w->m ? panel : w->m;
        int chunk = w->fmt == CLW_Q4_0 ? 32 : w->fmt == CLW_Q8_0 ? 16 : 8;   /* widen_<fmt> */
        if (panel < 1 || !cc->k_widen[w->fmt] || w->k % chunk ||
            !clblast_fits(cb, cc, n, panel, w->k, ldx, ldy) ||
            (w->m % panel && !clblast_fits(cb, cc, n, w->m % panel, w->k, ldx, ldy)))
            return 0;
        cl_kernel kn = cc->k_widen[w->fmt];
        for (int r0 = 0; r0 < w->m && st == DATTN_OK; r0 += panel) {
            int rows = w->m - r0 < panel ? w->m - r0 : panel;
            cl_int err = CL_SUCCESS;
            err |= SET(kn, 0, w->buf), err |= SET(kn, 1, w->m), err |= SET(kn, 2, w->k);
            err |= SET(kn, 3, r0), err |= SET(kn, 4, rows), err |= SET(kn, 5, cc->widen);
            size_t local = 64, global = round_up((size_t)rows * (size_t)(w->k / chunk), local);
            if (err == CL_SUCCESS)
                err = clEnqueueNDRangeKernel(cb->queue, kn, 1, NULL, &global, &local, 0, NULL,
                                             NULL);
            check(cc, err, "widen");
            if (err != CL_SUCCESS)
                return 1;
            /* the in-order queue runs the next panel's widen after this GEMM has read it */
            st = clb_sgemm(cb->queue, x, ldx, cc->widen, rows, w->k, n, y, (size_t)r0, ldy, temp);
        }
    }
    if (st != DATTN_OK && cc->fail_st == DATTN_OK && cc->fail_err == CL_SUCCESS)
        cc->fail_st = st;
    return 1;
}
#endif

/* y [n][m] (row stride ldy floats) = x [n][k] (row stride ldx) W^T on the device: gemv.cl for
 * one row (decode); for more, CLBlast (any format: clblast_matmul) where it is built and fits,
 * else gemm.cl (every format, read as it is held). */
static void matmul(cl_backend *cb, cl_cache *cc, const backend_weight *w, cl_mem x, int ldx,
                   int n, cl_mem y, int ldy)
{
    cl_int err = CL_SUCCESS;
    if (n == 1) {
        cl_kernel kn = cc->k_gemv[w->fmt];
        err |= SET(kn, 0, w->buf), err |= SET(kn, 1, x), err |= SET(kn, 2, y);
        err |= SET(kn, 3, w->m), err |= SET(kn, 4, w->k);
        size_t local = (size_t)cc->gemv_wg;
        size_t global = (size_t)((w->m + cc->gemv_rows - 1) / cc->gemv_rows) * local;
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(cb->queue, kn, 1, NULL, &global, &local, 0, NULL, NULL);
        check(cc, err, "gemv");
        return;
    }
#ifdef DATTN_HAVE_CLBLAST
    if (cc->use_clblast && clblast_matmul(cb, cc, w, x, ldx, n, y, ldy))
        return;
#endif
    cl_kernel kn = cc->k_gemm[w->fmt];
    err |= SET(kn, 0, x), err |= SET(kn, 1, ldx), err |= SET(kn, 2, w->buf), err |= SET(kn, 3, y);
    err |= SET(kn, 4, ldy), err |= SET(kn, 5, n), err |= SET(kn, 6, w->m), err |= SET(kn, 7, w->k);
    size_t global[2] = {(size_t)(w->m + cc->gemm_tile[0] - 1) / cc->gemm_tile[0] * cc->gemm_local[0],
                        (size_t)(n + cc->gemm_tile[1] - 1) / cc->gemm_tile[1] * cc->gemm_local[1]};
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(cb->queue, kn, 2, NULL, global, cc->gemm_local, 0, NULL, NULL);
    check(cc, err, "gemm");
}
/* Columns [col, col+width) of the n rows of QKV into a contiguous [n][width] buffer. */
static void split_columns(cl_backend *cb, cl_cache *cc, const backend_layer *l, int n, int col,
                          int width, cl_mem dst)
{
    size_t src_origin[3] = {sizeof(float) * (size_t)col, 0, 0}, dst_origin[3] = {0, 0, 0};
    size_t region[3] = {sizeof(float) * (size_t)width, (size_t)n, 1};
    cl_int err = clEnqueueCopyBufferRect(cb->queue, cc->qkv, dst, src_origin, dst_origin, region,
                                         sizeof(float) * (size_t)l->d.qkv_dim, 0,
                                         sizeof(float) * (size_t)width, 0, 0, NULL, NULL);
    check(cc, err, "clEnqueueCopyBufferRect");
}

static dattn_status cl_project_in(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                  const float *x, int n)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    int E = l->d.model_dim, A = l->d.attn_dim, kv = l->d.kv_dim;
    op_begin(cc);
    if (x)   /* else the model pass's normed rows are in cc->x already */
        check(cc, clEnqueueWriteBuffer(cb->queue, cc->x, CL_FALSE, 0,
                                       sizeof(float) * (size_t)n * E, x, 0, NULL, NULL),
              "clEnqueueWriteBuffer(x)");
    matmul(cb, cc, l->w_qkv, cc->x, E, n, cc->qkv, l->d.qkv_dim);
    split_columns(cb, cc, l, n, 0, A, cc->q);
    split_columns(cb, cc, l, n, A, kv, cc->k);
    split_columns(cb, cc, l, n, A + kv, kv, cc->v);
    return op_status(cc);
}

/* The caller's rows may be gone once dattn_layer_attend returns, so the last write blocks; the
 * queue is in order, so q and k are on the device by then too (one wait a step, not three). */
static dattn_status cl_qkv_write(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                 const float *q, const float *k, const float *v, int n)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    size_t A = (size_t)l->d.attn_dim, kv = (size_t)l->d.kv_dim;
    op_begin(cc);
    if (q)
        check(cc, clEnqueueWriteBuffer(cb->queue, cc->q, CL_FALSE, 0, sizeof(float) * n * A, q, 0,
                                       NULL, NULL), "clEnqueueWriteBuffer(q)");
    check(cc, clEnqueueWriteBuffer(cb->queue, cc->k, CL_FALSE, 0, sizeof(float) * n * kv, k, 0,
                                   NULL, NULL), "clEnqueueWriteBuffer(k)");
    check(cc, clEnqueueWriteBuffer(cb->queue, cc->v, CL_TRUE, 0, sizeof(float) * n * kv, v, 0,
                                   NULL, NULL), "clEnqueueWriteBuffer(v)");
    if (cc->fail_err != CL_SUCCESS)
        clFinish(cb->queue);   /* v was refused: nothing may read q or k after the return */
    return op_status(cc);
}

static void rope(cl_backend *cb, cl_cache *cc, const backend_layer *l, cl_mem x, cl_mem y,
                 int n_vec, int rows, int pos0, int pos_cap, float scale)
{
    cl_kernel kn = cc->k_rope;
    cl_int err = CL_SUCCESS;
    err |= SET(kn, 0, x), err |= SET(kn, 1, y), err |= SET(kn, 2, n_vec), err |= SET(kn, 3, pos0);
    err |= SET(kn, 4, pos_cap), err |= SET(kn, 5, l->inv_freq), err |= SET(kn, 6, scale);
    size_t global[3] = {round_up((size_t)l->d.head_dim / 2, 16), round_up((size_t)n_vec, 4),
                        (size_t)rows};
    size_t local[3] = {16, 4, 1};
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(cb->queue, kn, 3, NULL, global, local, 0, NULL, NULL);
    check(cc, err, "rope");
}

static dattn_status cl_rope_append(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                   int slot, int64_t t0, int n)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    const kv_geom *g = &c->g;
    int H = l->d.n_heads, Hkv = l->d.n_kv_heads;
    float scale = 1.0f / sqrtf((float)l->d.head_dim);
    op_begin(cc);
    if (g->policy == DATTN_POLICY_SINK_WINDOW) {
        int cap = (int)kv_cache_pos(g, INT32_MAX);
        rope(cb, cc, l, cc->q, cc->q_sink, 2 * H, n, (int)t0, cap, scale);
    }
    rope(cb, cc, l, cc->q, cc->q, 2 * H, n, (int)t0, INT32_MAX, scale);
    rope(cb, cc, l, cc->k, cc->k, 2 * Hkv, n, (int)t0, INT32_MAX, 1.0f);

    cl_kernel kn = cc->k_append;
    cl_long t = t0;
    for (int j = 0; j < Hkv;) {
        kv_run run = kv_run_at(cc, Hkv, slot, j);
        cl_int err = CL_SUCCESS;
        err |= SET(kn, 0, run.buf), err |= SET(kn, 1, run.off), err |= SET(kn, 2, g->n_pages);
        err |= SET(kn, 3, g->n_sink), err |= SET(kn, 4, g->n_ring), err |= SET(kn, 5, t);
        err |= SET(kn, 6, cc->k), err |= SET(kn, 7, cc->v), err |= SET(kn, 8, run.j0);
        err |= SET(kn, 9, Hkv);
        size_t global[3] = {3 * (size_t)cc->append_wg, (size_t)run.n, (size_t)n};
        size_t local[3] = {(size_t)cc->append_wg, 1, 1};
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(cb->queue, kn, 3, NULL, global, local, 0, NULL, NULL);
        check(cc, err, "kv_append");
        j += run.n;
    }
    return op_status(cc);
}

static dattn_status cl_attention(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                 int slot, int64_t t0, int n, int decode)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    const kv_geom *g = &c->g;
    int H = l->d.n_heads, Hkv = l->d.n_kv_heads;
    cl_mem q_sink = g->policy == DATTN_POLICY_SINK_WINDOW ? cc->q_sink : cc->q;
    float lambda = l->d.lambda, out_scale = l->d.out_scale, eps = l->d.sub_eps;
    cl_long t = t0;
    cl_int err = CL_SUCCESS;
    op_begin(cc);
    if (!decode) {
        cl_kernel kn = cc->k_prefill;
        for (int j = 0; j < Hkv;) {
            kv_run run = kv_run_at(cc, Hkv, slot, j);
            err = CL_SUCCESS;
            err |= SET(kn, 0, run.buf), err |= SET(kn, 1, run.off), err |= SET(kn, 2, g->n_pages);
            err |= SET(kn, 3, g->n_sink), err |= SET(kn, 4, g->n_window);
            err |= SET(kn, 5, g->n_ring), err |= SET(kn, 6, t), err |= SET(kn, 7, n);
            err |= SET(kn, 8, cc->q), err |= SET(kn, 9, q_sink), err |= SET(kn, 10, lambda);
            err |= SET(kn, 11, out_scale), err |= SET(kn, 12, l->subln);
            err |= SET(kn, 13, cc->attn), err |= SET(kn, 14, run.j0), err |= SET(kn, 15, H);
            err |= SET(kn, 16, eps);
            size_t global[2] = {(size_t)run.n * (size_t)(H / Hkv) * cc->prefill_wg,
                                (size_t)(n + (int)cc->prefill_qt - 1) / cc->prefill_qt};
            size_t local[2] = {cc->prefill_wg, 1};
            if (err == CL_SUCCESS)
                err = clEnqueueNDRangeKernel(cb->queue, kn, 2, NULL, global, local, 0, NULL, NULL);
            check(cc, err, "diffattn_prefill");
            j += run.n;
        }
        return op_status(cc);
    }
    /* the slots in use, in whole pages per split (diffattn_decode.cl walks them physically) */
    int64_t n_used = t0 + 1 < g->n_phys ? t0 + 1 : g->n_phys;
    tuning_decode plan;
    decode_plan(cb, c, cc->max_split, n_used, &plan);   /* succeeded at cache creation */
    int split_pages = plan.split_pages;
    int n_split = plan.n_split + (g->n_sink > 0);        /* the sinks' split, the last */
    /* the variant this context length takes (built at cache creation) */
    int short_ctx = cc->k_split_short && plan.heads == cc->decode_heads_short;
    int blocks = (H / Hkv) / plan.heads;
    cl_kernel ks = short_ctx ? cc->k_split_short : cc->k_split;
    for (int j = 0; j < Hkv;) {
        kv_run run = kv_run_at(cc, Hkv, slot, j);
        err = CL_SUCCESS;
        err |= SET(ks, 0, run.buf), err |= SET(ks, 1, run.off), err |= SET(ks, 2, g->n_pages);
        err |= SET(ks, 3, g->n_sink), err |= SET(ks, 4, g->n_window), err |= SET(ks, 5, g->n_ring);
        err |= SET(ks, 6, t), err |= SET(ks, 7, split_pages), err |= SET(ks, 8, cc->q);
        err |= SET(ks, 9, q_sink), err |= SET(ks, 10, cc->partial), err |= SET(ks, 11, run.j0);
        size_t global[2] = {(size_t)n_split * cc->wg_decode, (size_t)run.n * (size_t)blocks};
        size_t local[2] = {(size_t)cc->wg_decode, 1};
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(cb->queue, ks, 2, NULL, global, local, 0, NULL, NULL);
        check(cc, err, "diffattn_decode_split");
        j += run.n;
    }
    cl_kernel kc = cc->k_combine;
    err = CL_SUCCESS;
    err |= SET(kc, 0, cc->partial), err |= SET(kc, 1, n_split), err |= SET(kc, 2, lambda);
    err |= SET(kc, 3, out_scale), err |= SET(kc, 4, l->subln), err |= SET(kc, 5, cc->attn);
    err |= SET(kc, 6, eps);
    size_t cglobal = (size_t)H * cc->combine_wg, clocal = (size_t)cc->combine_wg;
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(cb->queue, kc, 1, NULL, &cglobal, &clocal, 0, NULL, NULL);
    check(cc, err, "diffattn_decode_combine");
    return op_status(cc);
}

static dattn_status cl_project_out(dattn_backend *be, dattn_cache *c, const backend_layer *l,
                                   float *y, int n)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    int E = l->d.model_dim;
    op_begin(cc);
    matmul(cb, cc, l->w_out, cc->attn, l->d.attn_dim, n, y ? cc->y : cc->block_out, E);
    if (y)
        check(cc, clEnqueueReadBuffer(cb->queue, cc->y, CL_TRUE, 0, sizeof(float) * (size_t)n * E,
                                      y, 0, NULL, NULL), "clEnqueueReadBuffer(y)");
    return op_status(cc);
}

static dattn_status cl_attn_read(dattn_backend *be, dattn_cache *c, float *out, int n)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    op_begin(cc);
    check(cc, clEnqueueReadBuffer(cb->queue, cc->attn, CL_TRUE, 0,
                                  sizeof(float) * (size_t)n * 2 * (size_t)c->shape.n_heads *
                                      (size_t)c->g.head_dim, out, 0,
                                  NULL, NULL), "clEnqueueReadBuffer(attention output)");
    return op_status(cc);
}

/* The rows of the model's blocks must fit the scratch the cache was made with. */
static dattn_status check_rows(const cl_cache *cc, const dattn_cache *c, const char *op, int n,
                               int k, int m)
{
    if (n < 1 || n > c->g.max_batch || k > cc->x_cols || m > cc->y_cols)
        return dattn_fail(DATTN_E_INVALID_ARG, "opencl: %s of %d rows, %d inputs, %d outputs: this "
                          "cache holds 1..%d rows of up to %d inputs and %d outputs (the cache's "
                          "scratch sizes them)", op, n, k, m, c->g.max_batch,
                          cc->x_cols, cc->y_cols);
    return DATTN_OK;
}

static dattn_status cl_linear(dattn_backend *be, dattn_cache *c, const backend_weight *w,
                              const float *x, int n, float *y)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    dattn_status st = check_rows(cc, c, "linear", n, w->k, w->m);
    if (st != DATTN_OK)
        return st;
    op_begin(cc);
    check(cc, clEnqueueWriteBuffer(cb->queue, cc->x, CL_FALSE, 0, sizeof(float) * (size_t)n * w->k,
                                   x, 0, NULL, NULL), "clEnqueueWriteBuffer(x)");
    matmul(cb, cc, w, cc->x, w->k, n, cc->y, w->m);
    check(cc, clEnqueueReadBuffer(cb->queue, cc->y, CL_TRUE, 0, sizeof(float) * (size_t)n * w->m,
                                  y, 0, NULL, NULL), "clEnqueueReadBuffer(y)");
    return op_status(cc);
}

/* hidden [n][2F] = x W13^T; its first F columns become silu(x W1^T) * (x W3^T) in place
 * (swiglu_rows); y = those columns W2^T, read with row stride 2F. */
static dattn_status cl_ffn(dattn_backend *be, dattn_cache *c, const backend_weight *w13,
                           const backend_weight *w2, const float *x, int n, float *y)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    int E = w2->m, F = w2->k;
    if (w13->m != 2 * F || w13->k != E || F > cc->ffn_dim)
        return dattn_fail(DATTN_E_SHAPE, "opencl: ffn with w13 [%d][%d] and w2 [%d][%d]: needs w13 "
                          "[2F][E], w2 [E][F] with F <= this cache's ffn_dim %d", w13->m, w13->k,
                          w2->m, w2->k, cc->ffn_dim);
    dattn_status st = check_rows(cc, c, "ffn", n, E, E);
    if (st != DATTN_OK)
        return st;
    if ((!x || !y) && !cc->block_out)
        return dattn_fail(DATTN_E_INVALID_ARG, "opencl: ffn on the model pass's rows of a cache "
                          "made without them (no vocabulary in its scratch)");
    op_begin(cc);
    if (x)   /* else the model pass's normed rows are in cc->x already */
        check(cc, clEnqueueWriteBuffer(cb->queue, cc->x, CL_FALSE, 0,
                                       sizeof(float) * (size_t)n * E, x, 0, NULL, NULL),
              "clEnqueueWriteBuffer(x)");
    matmul(cb, cc, w13, cc->x, E, n, cc->hidden, 2 * F);
    cl_kernel kn = cc->k_swiglu;
    cl_int err = CL_SUCCESS;
    err |= SET(kn, 0, cc->hidden), err |= SET(kn, 1, F);
    size_t global[2] = {round_up((size_t)F, 64), (size_t)n}, local[2] = {64, 1};
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(cb->queue, kn, 2, NULL, global, local, 0, NULL, NULL);
    check(cc, err, "swiglu_rows");
    matmul(cb, cc, w2, cc->hidden, 2 * F, n, y ? cc->y : cc->block_out, E);
    if (y)
        check(cc, clEnqueueReadBuffer(cb->queue, cc->y, CL_TRUE, 0, sizeof(float) * (size_t)n * E,
                                      y, 0, NULL, NULL), "clEnqueueReadBuffer(y)");
    return op_status(cc);
}

/* ---- the model pass (backend.h): rows that stay on the device ------------------------------- */

static dattn_status cl_vector_create(dattn_backend *be, const float *v, int n, backend_vector **out)
{
    backend_vector *bv = dattn_alloc(sizeof *bv, "vector");
    if (!bv)
        return DATTN_E_NOMEM;
    bv->n = n;
    dattn_status st = upload(be->impl, v, (size_t)n, "norm weight", &bv->buf);
    if (st != DATTN_OK) {
        dattn_free(bv);
        return st;
    }
    *out = bv;
    return DATTN_OK;
}

static void cl_vector_free(dattn_backend *be, backend_vector *v)
{
    (void)be;
    if (!v)
        return;
    clReleaseMemObject(v->buf);
    dattn_free(v);
}

static dattn_status cl_pass_begin(dattn_backend *be, dattn_cache *c, const float *emb, int n,
                                  int n_logits)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    if (!cc->stream || n < 1 || n > c->g.max_batch || n_logits < 0 || n_logits > n)
        return dattn_fail(DATTN_E_INVALID_ARG, "opencl: a model pass of %d rows with %d of logits "
                          "on a cache of %d rows%s", n, n_logits, c->g.max_batch,
                          cc->stream ? "" : " made without the pass's rows");
    cc->pass_logits = n_logits;
    cc->fault_at = n_logits * c->scratch.n_vocab;
    op_begin(cc);
    /* Not waiting is safe: the caller leaves emb alone until pass_end, whose blocking read
     * comes after this write on the in-order queue. */
    check(cc, clEnqueueWriteBuffer(cb->queue, cc->stream, CL_FALSE, 0,
                                   sizeof(float) * (size_t)n * (size_t)c->shape.model_dim, emb, 0,
                                   NULL, NULL), "clEnqueueWriteBuffer(embedding rows)");
    cl_int clear = INT32_MAX;
    check(cc, clEnqueueFillBuffer(cb->queue, cc->y, &clear, sizeof clear,
                                  sizeof(cl_int) * (size_t)cc->fault_at,
                                  sizeof(cl_int) * FAULT_INTS, 0, NULL, NULL),
          "clEnqueueFillBuffer(fault record)");
    return op_status(cc);
}

static dattn_status cl_norm(dattn_backend *be, dattn_cache *c, const backend_vector *w, float eps,
                            int first, int n)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    cl_kernel kn = cc->k_norm;
    cl_int E = c->shape.model_dim, row0 = first, err = CL_SUCCESS;
    op_begin(cc);
    err |= SET(kn, 0, cc->stream), err |= SET(kn, 1, w->buf), err |= SET(kn, 2, cc->x);
    err |= SET(kn, 3, E), err |= SET(kn, 4, eps), err |= SET(kn, 5, row0);
    size_t global = (size_t)n * cc->norm_wg;
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(cb->queue, kn, 1, NULL, &global, &cc->norm_wg, 0, NULL, NULL);
    check(cc, err, "rmsnorm");
    return op_status(cc);
}

static dattn_status cl_residual_add(dattn_backend *be, dattn_cache *c, int n, int layer,
                                    pass_block block, const backend_vector *next_norm, float eps)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    cl_kernel kn = cc->k_add;
    cl_int E = c->shape.model_dim, at = cc->fault_at, index = 2 * layer + (int)block;
    cl_int has_norm = next_norm != NULL, err = CL_SUCCESS;
    /* without a norm, any valid buffer stands in for w (the kernel does not read it) */
    cl_mem w = next_norm ? next_norm->buf : cc->stream;
    op_begin(cc);
    err |= SET(kn, 0, cc->stream), err |= SET(kn, 1, cc->block_out), err |= SET(kn, 2, w);
    err |= SET(kn, 3, cc->x), err |= SET(kn, 4, E), err |= SET(kn, 5, eps);
    err |= SET(kn, 6, has_norm), err |= SET(kn, 7, cc->y), err |= SET(kn, 8, at);
    err |= SET(kn, 9, index);
    size_t global = (size_t)n * cc->norm_wg;
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(cb->queue, kn, 1, NULL, &global, &cc->norm_wg, 0, NULL, NULL);
    check(cc, err, "residual_add_norm");
    return op_status(cc);
}

/* The logits rows, and behind them the fault record, in y: all but the last row straight into
 * the caller's memory without waiting; the last row with the record into the staging, in the one
 * read that waits (the queue is in order, so the rows before it have arrived too). */
static dattn_status cl_pass_end(dattn_backend *be, dattn_cache *c, const backend_weight *w,
                                float *logits, pass_fault *fault)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    int n_out = cc->pass_logits, V = c->scratch.n_vocab;
    fault->layer = -1, fault->token = 0, fault->in_sum = 0, fault->block = BLOCK_ATTENTION;
    if (n_out && (w->m != V || w->k != c->shape.model_dim))
        return dattn_fail(DATTN_E_SHAPE, "opencl: logits weight [%d][%d], the cache's scratch "
                          "has [%d][%d]", w->m, w->k, V, c->shape.model_dim);
    size_t row = sizeof(float) * (size_t)V, tail = sizeof(cl_int) * FAULT_INTS;
    op_begin(cc);
    if (n_out) {
        matmul(cb, cc, w, cc->x, w->k, n_out, cc->y, V);
        if (n_out > 1)
            check(cc, clEnqueueReadBuffer(cb->queue, cc->y, CL_FALSE, 0, row * (size_t)(n_out - 1),
                                          logits, 0, NULL, NULL), "clEnqueueReadBuffer(logits)");
    }
    size_t from = n_out ? row * (size_t)(n_out - 1) : 0, bytes = (n_out ? row : 0) + tail;
    check(cc, clEnqueueReadBuffer(cb->queue, cc->y, CL_TRUE, from, bytes, cc->stage, 0, NULL,
                                  NULL), "clEnqueueReadBuffer(logits and fault record)");
    if (cc->fail_err != CL_SUCCESS) {
        clFinish(cb->queue);   /* nothing may still be writing the caller's rows */
        return op_status(cc);
    }
    if (n_out)
        memcpy(logits + (size_t)(n_out - 1) * V, cc->stage, row);
    cl_int rec[FAULT_INTS];
    memcpy(rec, (const char *)cc->stage + (n_out ? row : 0), sizeof rec);
    if (rec[0] != INT32_MAX) {
        fault->layer = rec[0] / 2;
        fault->block = (pass_block)(rec[0] % 2);
        fault->token = rec[1] / 2;
        fault->in_sum = rec[1] % 2;
    }
    return op_status(cc);
}

static void cl_sync(dattn_backend *be)
{
    cl_backend *cb = be->impl;
    cl_int err = clFinish(cb->queue);
    if (err != CL_SUCCESS)
        dattn_log(DATTN_LOG_ERROR, "opencl: clFinish: %s", cl_error_name(err));
}

static const backend_ops cl_ops = {
    .kind = "opencl",
    .destroy = cl_destroy,
    .weight_create = cl_weight_create,
    .weight_free = cl_weight_free,
    .weight_bytes = cl_weight_bytes,
    .layer_create = cl_layer_create,
    .layer_free = cl_layer_free,
    .layer_bytes = cl_layer_bytes,
    .cache_bytes = cl_cache_bytes,
    .cache_init = cl_cache_init,
    .cache_release = cl_cache_release,
    .kv_read = cl_kv_read,
    .kv_write = cl_kv_write,
    .project_in = cl_project_in,
    .qkv_write = cl_qkv_write,
    .rope_append = cl_rope_append,
    .attention = cl_attention,
    .project_out = cl_project_out,
    .attn_read = cl_attn_read,
    .linear = cl_linear,
    .ffn = cl_ffn,
    .vector_create = cl_vector_create,
    .vector_free = cl_vector_free,
    .pass_begin = cl_pass_begin,
    .norm = cl_norm,
    .residual_add = cl_residual_add,
    .pass_end = cl_pass_end,
    .sync = cl_sync,
};

/* The device's limits, its tuning row and the caller's overrides of both (backend params). */
static dattn_status read_knobs(cl_backend *cb, const dattn_backend_params *p)
{
    cb->tune = *tuning_lookup(cb->info.vendor, cb->info.name);
    snprintf(cb->tune_label, sizeof cb->tune_label, "%s", cb->tune.name);
    cb->max_alloc = cb->info.max_alloc_bytes;
    cb->max_alloc_from = "CL_DEVICE_MAX_MEM_ALLOC_SIZE";
    size_t max_wg = 0;
    if (clGetDeviceInfo(cb->dev.device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof max_wg, &max_wg,
                        NULL) != CL_SUCCESS || max_wg == 0)
        max_wg = 64;   /* the least a device may report is 1; 64 is what every GPU takes */
    cb->max_wg = max_wg;
    if (p->max_buffer_bytes && p->max_buffer_bytes < cb->max_alloc) {
        cb->max_alloc = p->max_buffer_bytes;
        cb->max_alloc_from = "max_buffer_bytes";
    }
    if (p->tuning && *p->tuning) {
        char why[256];
        if (tuning_override(&cb->tune, p->tuning, why, sizeof why) != 0)
            return dattn_fail(DATTN_E_INVALID_ARG, "opencl: tuning override: %s", why);
        snprintf(cb->tune_label, sizeof cb->tune_label, "%.40s+override", cb->tune.name);
        dattn_log(DATTN_LOG_INFO, "opencl: tuning row '%s' with '%s'", cb->tune.name, p->tuning);
    }
    return DATTN_OK;
}

dattn_status cl_backend_create(const dattn_backend_params *p, dattn_backend **out)
{
    dattn_status st;
    cl_int err;
    dattn_backend *be = dattn_alloc(sizeof *be, "backend");
    cl_backend *cb = dattn_alloc(sizeof *cb, "opencl backend");
    if (!be || !cb) {
        dattn_free(be);
        dattn_free(cb);
        return DATTN_E_NOMEM;
    }
    if ((st = cl_select(p->device, &cb->dev)) != DATTN_OK)
        goto fail;
    cl_describe(&cb->dev, &cb->info);
    if ((st = read_knobs(cb, p)) != DATTN_OK)
        goto fail;
    cb->ctx = clCreateContext(NULL, 1, &cb->dev.device, NULL, NULL, &err);
    if (err != CL_SUCCESS) {
        st = dattn_fail(DATTN_E_OPENCL, "opencl: clCreateContext on '%s': %s", cb->info.name,
                        cl_error_name(err));
        goto fail;
    }
    cb->queue = clCreateCommandQueue(cb->ctx, cb->dev.device, 0, &err);
    if (err != CL_SUCCESS) {
        st = dattn_fail(DATTN_E_OPENCL, "opencl: clCreateCommandQueue on '%s': %s", cb->info.name,
                        cl_error_name(err));
        goto fail;
    }
    be->ops = &cl_ops;
    be->impl = cb;
    /* Long device names are cut to fit the line. */
    snprintf(be->describe, sizeof be->describe, "opencl %d:%d %.60s (%.40s), tuning %.30s",
             cb->info.platform_index, cb->info.device_index, cb->info.name, cb->info.platform,
             cb->tune_label);
    dattn_log(DATTN_LOG_INFO, "backend: %s", be->describe);
    *out = be;
    return DATTN_OK;
fail:
    if (cb->queue)
        clReleaseCommandQueue(cb->queue);
    if (cb->ctx)
        clReleaseContext(cb->ctx);
    dattn_free(cb);
    dattn_free(be);
    return st;
}
