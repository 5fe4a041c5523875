/* The OpenCL backend (issue 4): the layer forward of src/layer.c on any OpenCL 1.2 device, with
 * the KV cache and every activation in device buffers made at cache creation. Programs are built
 * once per cache (they depend on the head dim, group and KV type) through the binary cache; the
 * token path only sets kernel arguments and enqueues: no buffer, program, kernel or host
 * allocation per token. Work-group sizes come from the platforms/ tuning row of the device.
 *
 * Not yet here (issue 4 continues): CLBlast for prefill GEMMs (the project's own GEMM kernel
 * serves), a KV cache split over several buffers when one would exceed
 * CL_DEVICE_MAX_MEM_ALLOC_SIZE (such a cache is refused with a message), and falling back from
 * `auto` to the CPU when a device fails at start-up. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "backend.h"
#include "cl_common.h"
#include "cl_sources.h"
#include "layer.h"
#include "program.h"
#include "status.h"
#include "tuning.h"

enum { MAX_BUILT = 64 };

typedef struct cl_backend {
    cl_device_entry dev;
    dattn_device_info info;
    const tuning_row *tune;
    cl_context ctx;
    cl_command_queue queue;
    /* Programs built so far, by source and options: caches of the same shape (the layers of a
     * model, or a cache made again) reuse them instead of building again. */
    struct built { char key[256]; cl_program prog; } built[MAX_BUILT];
    int n_built;
} cl_backend;

struct backend_weight {
    int m, k;
    cl_mem buf;                /* [m][k] f32, row-major (nn.Linear layout) */
};

enum { N_PROGRAMS = 5 };

/* Per-cache device state. */
typedef struct cl_cache {
    cl_mem kv;                 /* the KV region, kv.h's layout */
    cl_mem x, qkv, q, q_sink, k, v, attn, y;   /* activations, max_batch rows */
    cl_mem partial;            /* [H][max_split][4 + 4d] decode split states */
    cl_mem inv_freq, subln;    /* of the layer last used */
    const dattn_layer *layer;  /* whose inv_freq and subln are loaded */
    cl_program prog[N_PROGRAMS];
    cl_kernel k_split, k_combine, k_append, k_rope, k_gemv, k_gemm, k_prefill;
    int wg_decode, combine_wg, append_wg, gemv_wg, gemv_rows, max_split;
    size_t gemm_local[2], gemm_tile[2];   /* (LX, LY), (TILE_N, TILE_M) */
    size_t prefill_wg, prefill_qt;
    cl_int fail_err;           /* the first failing call of the current op, or CL_SUCCESS */
    const char *fail_what;
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

static dattn_status cl_weight_create(dattn_backend *be, const float *w, int m, int k,
                                     backend_weight **out)
{
    cl_backend *cb = be->impl;
    backend_weight *bw = dattn_alloc(sizeof *bw, "weight");
    if (!bw)
        return DATTN_E_NOMEM;
    cl_int err;
    bw->m = m;
    bw->k = k;
    bw->buf = clCreateBuffer(cb->ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                             sizeof(float) * (size_t)m * k, (void *)w, &err);
    if (err != CL_SUCCESS) {
        dattn_free(bw);
        return dattn_fail(DATTN_E_OPENCL, "opencl: uploading a %dx%d weight (%zu bytes) to '%s': "
                          "clCreateBuffer: %s", m, k, sizeof(float) * (size_t)m * k,
                          cb->info.name, cl_error_name(err));
    }
    *out = bw;
    return DATTN_OK;
}

static void cl_weight_free(dattn_backend *be, backend_weight *w)
{
    (void)be;
    if (!w)
        return;
    clReleaseMemObject(w->buf);
    dattn_free(w);
}

/* ---- cache: buffers, programs, kernels ---------------------------------------------------- */

typedef struct act_sizes {
    size_t x, qkv, q, kvd, attn, partial;   /* bytes */
} act_sizes;

static act_sizes sizes_of(const dattn_layer_shape *s, const kv_geom *g, int max_split)
{
    size_t E = (size_t)s->model_dim, r = (size_t)(s->n_heads / s->n_kv_heads), B = (size_t)g->max_batch;
    size_t d = (size_t)g->head_dim;
    act_sizes a;
    a.x = sizeof(float) * B * E;
    a.qkv = sizeof(float) * B * (E + 2 * E / r);
    a.q = sizeof(float) * B * E;
    a.kvd = sizeof(float) * B * (E / r);
    a.attn = sizeof(float) * B * E;
    a.partial = sizeof(float) * (size_t)s->n_heads * (size_t)max_split * (4 + 4 * d);
    return a;
}

static size_t cl_cache_bytes(const dattn_backend *be, const dattn_layer_shape *s, const kv_geom *g)
{
    const cl_backend *cb = be->impl;
    act_sizes a = sizes_of(s, g, cb->tune->max_split);
    size_t n = kv_bytes(g);
    size_t acts = a.x + a.qkv + 2 * a.q + 2 * a.kvd + 2 * a.attn + a.partial;
    return n > SIZE_MAX - acts ? SIZE_MAX : n + acts;
}

static void release_cache(cl_cache *cc)
{
    cl_mem *mems[] = {&cc->kv, &cc->x, &cc->qkv, &cc->q, &cc->q_sink, &cc->k, &cc->v, &cc->attn,
                      &cc->y, &cc->partial, &cc->inv_freq, &cc->subln};
    for (size_t i = 0; i < sizeof mems / sizeof *mems; i++)
        if (*mems[i])
            clReleaseMemObject(*mems[i]);
    cl_kernel ks[] = {cc->k_split, cc->k_combine, cc->k_append, cc->k_rope, cc->k_gemv,
                      cc->k_gemm, cc->k_prefill};
    for (size_t i = 0; i < sizeof ks / sizeof *ks; i++)
        if (ks[i])
            clReleaseKernel(ks[i]);
    for (int i = 0; i < N_PROGRAMS; i++)
        if (cc->prog[i])
            clReleaseProgram(cc->prog[i]);
    dattn_free(cc);
}

static dattn_status make_buffer(cl_backend *cb, size_t bytes, const char *what, cl_mem *out)
{
    cl_int err;
    if (bytes > cb->info.max_alloc_bytes)
        return dattn_fail(DATTN_E_ARENA, "opencl: the %s needs one buffer of %zu bytes; '%s' allows "
                          "at most %llu (CL_DEVICE_MAX_MEM_ALLOC_SIZE); lower n_ctx or max_batch",
                          what, bytes, cb->info.name, (unsigned long long)cb->info.max_alloc_bytes);
    *out = clCreateBuffer(cb->ctx, CL_MEM_READ_WRITE, bytes ? bytes : 4, NULL, &err);
    if (err != CL_SUCCESS)
        return dattn_fail(DATTN_E_OPENCL, "opencl: clCreateBuffer for the %s (%zu bytes) on '%s': "
                          "%s", what, bytes, cb->info.name, cl_error_name(err));
    return DATTN_OK;
}

/* The program of `source` with `options`: built once per backend (and through the binary cache
 * on disk); each caller gets its own reference. */
static dattn_status build(cl_backend *cb, const char *source, const char *options, cl_program *out)
{
    char key[256];
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

/* The decode split kernel's work-group: the tuning row's, halved until its local memory
 * (4 * (4*r*d + 4*r*WG + WG) bytes, see diffattn_decode.cl) fits the device and 32 KiB. */
static int decode_wg(const cl_backend *cb, int r, int d)
{
    size_t limit = cb->info.local_mem_bytes < 32768 ? cb->info.local_mem_bytes : 32768;
    int wg = cb->tune->wg_decode;
    while (wg > 1 && 4 * (4 * (size_t)r * d + 4 * (size_t)r * wg + (size_t)wg) > limit)
        wg /= 2;
    return wg;
}

static dattn_status cl_cache_init(dattn_backend *be, dattn_cache *c, void *caller_buf,
                                  size_t caller_bytes)
{
    (void)caller_bytes;
    cl_backend *cb = be->impl;
    if (caller_buf)
        return dattn_fail(DATTN_E_UNSUPPORTED, "opencl: the cache lives in device memory on '%s'; "
                          "pass no arena buffer (NULL) to dattn_cache_create", cb->info.name);
    cl_cache *cc = dattn_alloc(sizeof *cc, "opencl cache state");
    if (!cc)
        return DATTN_E_NOMEM;
    dattn_status st;
    const kv_geom *g = &c->g;
    int r = c->shape.n_heads / c->shape.n_kv_heads, d = g->head_dim;
    cc->max_split = cb->tune->max_split;
    act_sizes a = sizes_of(&c->shape, g, cc->max_split);
    if ((st = make_buffer(cb, kv_bytes(g), "KV cache", &cc->kv)) != DATTN_OK ||
        (st = make_buffer(cb, a.x, "input rows", &cc->x)) != DATTN_OK ||
        (st = make_buffer(cb, a.qkv, "q/k/v rows", &cc->qkv)) != DATTN_OK ||
        (st = make_buffer(cb, a.q, "queries", &cc->q)) != DATTN_OK ||
        (st = make_buffer(cb, a.q, "sink queries", &cc->q_sink)) != DATTN_OK ||
        (st = make_buffer(cb, a.kvd, "keys", &cc->k)) != DATTN_OK ||
        (st = make_buffer(cb, a.kvd, "values", &cc->v)) != DATTN_OK ||
        (st = make_buffer(cb, a.attn, "attention output", &cc->attn)) != DATTN_OK ||
        (st = make_buffer(cb, a.attn, "output rows", &cc->y)) != DATTN_OK ||
        (st = make_buffer(cb, a.partial, "decode split states", &cc->partial)) != DATTN_OK ||
        (st = make_buffer(cb, sizeof(float) * (size_t)(d / 2), "RoPE table", &cc->inv_freq)) != DATTN_OK ||
        (st = make_buffer(cb, sizeof(float) * 2 * (size_t)d, "subln weight", &cc->subln)) != DATTN_OK)
        goto fail;
    /* Zero the KV region once: pages past the visible keys are never read, but a saved file
     * should not carry stale device memory. */
    {
        cl_float zero = 0.0f;
        cl_int err = clEnqueueFillBuffer(cb->queue, cc->kv, &zero, sizeof zero, 0,
                                         kv_bytes(g) / 4 * 4, 0, NULL, NULL);
        if (err != CL_SUCCESS) {
            st = dattn_fail(DATTN_E_OPENCL, "opencl: clEnqueueFillBuffer: %s", cl_error_name(err));
            goto fail;
        }
    }

    cc->wg_decode = decode_wg(cb, r, d);
    cc->combine_wg = 64;
    cc->append_wg = 64;
    cc->gemv_wg = cb->tune->gemv_wg;
    cc->gemv_rows = cb->tune->gemv_rows;
    cc->gemm_local[0] = 16, cc->gemm_local[1] = 16;   /* gemm.cl defaults: 64x64 tiles, 4x4 */
    cc->gemm_tile[0] = 64, cc->gemm_tile[1] = 64;
    cc->prefill_qt = 16;                              /* diffattn_prefill.cl defaults */
    cc->prefill_wg = 16 * 16;
    char opt[256];
    snprintf(opt, sizeof opt, "-D HEAD_DIM=%d -D GROUP=%d -D KV_TYPE=%d -D WG_SIZE=%d "
             "-D COMBINE_WG_SIZE=%d", d, r, (int)g->type, cc->wg_decode, cc->combine_wg);
    if ((st = build(cb, "diffattn_decode", opt, &cc->prog[0])) != DATTN_OK)
        goto fail;
    snprintf(opt, sizeof opt, "-D HEAD_DIM=%d -D KV_TYPE=%d -D WG_SIZE=%d", d, (int)g->type,
             cc->append_wg);
    if ((st = build(cb, "kv_append", opt, &cc->prog[1])) != DATTN_OK)
        goto fail;
    snprintf(opt, sizeof opt, "-D HEAD_DIM=%d", d);
    if ((st = build(cb, "rope", opt, &cc->prog[2])) != DATTN_OK)
        goto fail;
    snprintf(opt, sizeof opt, "-D GEMV_WG=%d -D GEMV_ROWS=%d", cc->gemv_wg, cc->gemv_rows);
    if ((st = build(cb, "gemv", opt, &cc->prog[3])) != DATTN_OK)
        goto fail;
    snprintf(opt, sizeof opt, "-D HEAD_DIM=%d -D GROUP=%d -D KV_TYPE=%d", d, r, (int)g->type);
    if ((st = build(cb, "diffattn_prefill", opt, &cc->prog[4])) != DATTN_OK)
        goto fail;
    if ((st = make_kernel(cc->prog[0], "diffattn_decode_split", &cc->k_split)) != DATTN_OK ||
        (st = make_kernel(cc->prog[0], "diffattn_decode_combine", &cc->k_combine)) != DATTN_OK ||
        (st = make_kernel(cc->prog[1], "kv_append", &cc->k_append)) != DATTN_OK ||
        (st = make_kernel(cc->prog[2], "rope", &cc->k_rope)) != DATTN_OK ||
        (st = make_kernel(cc->prog[3], "gemv", &cc->k_gemv)) != DATTN_OK ||
        (st = make_kernel(cc->prog[4], "diffattn_prefill", &cc->k_prefill)) != DATTN_OK)
        goto fail;
    {
        cl_program gemm_prog;
        if ((st = build(cb, "gemm", "", &gemm_prog)) != DATTN_OK)
            goto fail;
        st = make_kernel(gemm_prog, "gemm", &cc->k_gemm);
        clReleaseProgram(gemm_prog);   /* the kernel keeps the program alive */
        if (st != DATTN_OK)
            goto fail;
    }
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

static dattn_status cl_kv_read(dattn_backend *be, const dattn_cache *c, size_t off, void *dst,
                               size_t n)
{
    cl_backend *cb = be->impl;
    const cl_cache *cc = c->be_state;
    cl_int err = clEnqueueReadBuffer(cb->queue, cc->kv, CL_TRUE, off, n, dst, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return dattn_fail(DATTN_E_OPENCL, "opencl: clEnqueueReadBuffer of the KV cache: %s",
                          cl_error_name(err));
    return DATTN_OK;
}

static dattn_status cl_kv_write(dattn_backend *be, dattn_cache *c, size_t off, const void *src,
                                size_t n)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    cl_int err = clEnqueueWriteBuffer(cb->queue, cc->kv, CL_TRUE, off, n, src, 0, NULL, NULL);
    if (err != CL_SUCCESS)
        return dattn_fail(DATTN_E_OPENCL, "opencl: clEnqueueWriteBuffer of the KV cache: %s",
                          cl_error_name(err));
    return DATTN_OK;
}

/* ---- the forward ---------------------------------------------------------------------------
 * Each op enqueues several calls; the first that fails is kept (check) and the op reports it
 * (op_status). A device failing mid-layer cannot be undone: the message says so. */

#define SET(k, i, v) clSetKernelArg((k), (i), sizeof(v), &(v))

static void check(cl_cache *cc, cl_int err, const char *what)
{
    if (err != CL_SUCCESS && cc->fail_err == CL_SUCCESS) {
        cc->fail_err = err;
        cc->fail_what = what;
    }
}

static void op_begin(cl_cache *cc) { cc->fail_err = CL_SUCCESS; }

static dattn_status op_status(cl_cache *cc)
{
    if (cc->fail_err == CL_SUCCESS)
        return DATTN_OK;
    return dattn_fail(DATTN_E_OPENCL, "opencl: %s: %s (the device failed during the call; this "
                      "cache slot may be half-written: reset it)", cc->fail_what,
                      cl_error_name(cc->fail_err));
}

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* y [n][m] (row stride ldy floats) = x [n][k] W^T on the device. */
static void matmul(cl_backend *cb, cl_cache *cc, const backend_weight *w, cl_mem x, int ldx,
                   int n, cl_mem y, int ldy)
{
    cl_int err = CL_SUCCESS;
    if (n == 1) {
        cl_kernel kn = cc->k_gemv;
        err |= SET(kn, 0, w->buf), err |= SET(kn, 1, x), err |= SET(kn, 2, y);
        err |= SET(kn, 3, w->m), err |= SET(kn, 4, w->k);
        size_t local = (size_t)cc->gemv_wg;
        size_t global = (size_t)((w->m + cc->gemv_rows - 1) / cc->gemv_rows) * local;
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(cb->queue, kn, 1, NULL, &global, &local, 0, NULL, NULL);
        check(cc, err, "gemv");
        return;
    }
    cl_kernel kn = cc->k_gemm;
    err |= SET(kn, 0, x), err |= SET(kn, 1, ldx), err |= SET(kn, 2, w->buf), err |= SET(kn, 3, y);
    err |= SET(kn, 4, ldy), err |= SET(kn, 5, n), err |= SET(kn, 6, w->m), err |= SET(kn, 7, w->k);
    size_t global[2] = {(size_t)(w->m + cc->gemm_tile[0] - 1) / cc->gemm_tile[0] * cc->gemm_local[0],
                        (size_t)(n + cc->gemm_tile[1] - 1) / cc->gemm_tile[1] * cc->gemm_local[1]};
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(cb->queue, kn, 2, NULL, global, cc->gemm_local, 0, NULL, NULL);
    check(cc, err, "gemm");
}

/* Columns [col, col+width) of the n rows of QKV into a contiguous [n][width] buffer. */
static void split_columns(cl_backend *cb, cl_cache *cc, const dattn_layer *l, int n, int col,
                          int width, cl_mem dst)
{
    size_t src_origin[3] = {sizeof(float) * (size_t)col, 0, 0}, dst_origin[3] = {0, 0, 0};
    size_t region[3] = {sizeof(float) * (size_t)width, (size_t)n, 1};
    cl_int err = clEnqueueCopyBufferRect(cb->queue, cc->qkv, dst, src_origin, dst_origin, region,
                                         sizeof(float) * (size_t)l->qkv_dim, 0,
                                         sizeof(float) * (size_t)width, 0, 0, NULL, NULL);
    check(cc, err, "clEnqueueCopyBufferRect");
}

static dattn_status cl_project_in(dattn_backend *be, dattn_cache *c, const dattn_layer *l, const float *x,
                          int n)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    int E = l->shape.model_dim;
    op_begin(cc);
    check(cc, clEnqueueWriteBuffer(cb->queue, cc->x, CL_FALSE, 0, sizeof(float) * (size_t)n * E,
                                   x, 0, NULL, NULL), "clEnqueueWriteBuffer(x)");
    matmul(cb, cc, l->w_qkv, cc->x, E, n, cc->qkv, l->qkv_dim);
    split_columns(cb, cc, l, n, 0, E, cc->q);
    split_columns(cb, cc, l, n, E, l->kv_dim, cc->k);
    split_columns(cb, cc, l, n, E + l->kv_dim, l->kv_dim, cc->v);
    return op_status(cc);
}

/* Loads the layer's RoPE table and subln weight when another layer used the cache last. */
static void load_layer(cl_backend *cb, cl_cache *cc, const dattn_layer *l)
{
    if (cc->layer == l)
        return;
    int d = l->head_dim;
    float inv_freq[512];
    for (int i = 0; i < d / 2 && i < 512; i++)
        inv_freq[i] = (float)l->inv_freq[i];
    check(cc, clEnqueueWriteBuffer(cb->queue, cc->inv_freq, CL_TRUE, 0,
                                   sizeof(float) * (size_t)(d / 2), inv_freq, 0, NULL, NULL),
          "clEnqueueWriteBuffer(inv_freq)");
    check(cc, clEnqueueWriteBuffer(cb->queue, cc->subln, CL_TRUE, 0, sizeof(float) * 2 * (size_t)d,
                                   l->subln, 0, NULL, NULL), "clEnqueueWriteBuffer(subln)");
    cc->layer = l;
}

static void rope(cl_backend *cb, cl_cache *cc, cl_mem x, cl_mem y, int n_vec, int rows, int pos0,
                 int pos_cap, float scale, int d)
{
    cl_kernel kn = cc->k_rope;
    cl_int err = CL_SUCCESS;
    err |= SET(kn, 0, x), err |= SET(kn, 1, y), err |= SET(kn, 2, n_vec), err |= SET(kn, 3, pos0);
    err |= SET(kn, 4, pos_cap), err |= SET(kn, 5, cc->inv_freq), err |= SET(kn, 6, scale);
    size_t global[3] = {round_up((size_t)d / 2, 16), round_up((size_t)n_vec, 4), (size_t)rows};
    size_t local[3] = {16, 4, 1};
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(cb->queue, kn, 3, NULL, global, local, 0, NULL, NULL);
    check(cc, err, "rope");
}

static dattn_status cl_rope_append(dattn_backend *be, dattn_cache *c, const dattn_layer *l, int slot,
                           int64_t t0, int n)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    const kv_geom *g = &c->g;
    int d = l->head_dim, H = l->shape.n_heads, Hkv = l->shape.n_kv_heads;
    float scale = 1.0f / sqrtf((float)d);
    op_begin(cc);
    load_layer(cb, cc, l);
    if (g->policy == DATTN_POLICY_SINK_WINDOW) {
        int cap = (int)kv_cache_pos(g, INT32_MAX);
        rope(cb, cc, cc->q, cc->q_sink, 2 * H, n, (int)t0, cap, scale, d);
    }
    rope(cb, cc, cc->q, cc->q, 2 * H, n, (int)t0, INT32_MAX, scale, d);
    rope(cb, cc, cc->k, cc->k, 2 * Hkv, n, (int)t0, INT32_MAX, 1.0f, d);

    cl_kernel kn = cc->k_append;
    cl_ulong slot_off = kv_head_offset(g, slot, 0);
    cl_long t = t0;
    cl_int err = CL_SUCCESS;
    err |= SET(kn, 0, cc->kv), err |= SET(kn, 1, slot_off), err |= SET(kn, 2, g->n_pages);
    err |= SET(kn, 3, g->n_sink), err |= SET(kn, 4, g->n_ring), err |= SET(kn, 5, t);
    err |= SET(kn, 6, cc->k), err |= SET(kn, 7, cc->v);
    size_t global[3] = {3 * (size_t)cc->append_wg, (size_t)Hkv, (size_t)n};
    size_t local[3] = {(size_t)cc->append_wg, 1, 1};
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(cb->queue, kn, 3, NULL, global, local, 0, NULL, NULL);
    check(cc, err, "kv_append");
    return op_status(cc);
}

/* Keys visible to the query at stream index t (DESIGN §4). */
static int64_t n_visible(const kv_geom *g, int64_t t)
{
    int64_t sinks = t + 1 < g->n_sink ? t + 1 : g->n_sink;
    int64_t w0 = t - g->n_window + 1 > g->n_sink ? t - g->n_window + 1 : g->n_sink;
    return sinks + (t >= w0 ? t - w0 + 1 : 0);
}

static dattn_status cl_attention(dattn_backend *be, dattn_cache *c, const dattn_layer *l, int slot,
                         int64_t t0, int n, int decode)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    const kv_geom *g = &c->g;
    int H = l->shape.n_heads, Hkv = l->shape.n_kv_heads;
    cl_ulong slot_off = kv_head_offset(g, slot, 0);
    cl_mem q_sink = g->policy == DATTN_POLICY_SINK_WINDOW ? cc->q_sink : cc->q;
    float lambda = l->lambda, out_scale = 1.0f - l->lambda_init;
    cl_long t = t0;
    cl_int err = CL_SUCCESS;
    op_begin(cc);
    load_layer(cb, cc, l);
    if (!decode) {
        cl_kernel kn = cc->k_prefill;
        err |= SET(kn, 0, cc->kv), err |= SET(kn, 1, slot_off), err |= SET(kn, 2, g->n_pages);
        err |= SET(kn, 3, g->n_sink), err |= SET(kn, 4, g->n_window), err |= SET(kn, 5, g->n_ring);
        err |= SET(kn, 6, t), err |= SET(kn, 7, n), err |= SET(kn, 8, cc->q);
        err |= SET(kn, 9, q_sink), err |= SET(kn, 10, lambda), err |= SET(kn, 11, out_scale);
        err |= SET(kn, 12, cc->subln), err |= SET(kn, 13, cc->attn);
        size_t global[2] = {(size_t)H * cc->prefill_wg,
                            (size_t)(n + (int)cc->prefill_qt - 1) / cc->prefill_qt};
        size_t local[2] = {cc->prefill_wg, 1};
        if (err == CL_SUCCESS)
            err = clEnqueueNDRangeKernel(cb->queue, kn, 2, NULL, global, local, 0, NULL, NULL);
        check(cc, err, "diffattn_prefill");
        return op_status(cc);
    }
    int64_t n_vis = n_visible(g, t0);
    int n_tiles = (int)((n_vis + cc->wg_decode - 1) / cc->wg_decode);
    int n_split = tuning_splits(cb->tune, Hkv, n_tiles, cb->info.compute_units);
    if (n_split > cc->max_split)
        n_split = cc->max_split;
    if (n_split < 1)
        n_split = 1;
    int split_len = (int)((n_vis + n_split - 1) / n_split);
    cl_kernel ks = cc->k_split;
    err |= SET(ks, 0, cc->kv), err |= SET(ks, 1, slot_off), err |= SET(ks, 2, g->n_pages);
    err |= SET(ks, 3, g->n_sink), err |= SET(ks, 4, g->n_window), err |= SET(ks, 5, g->n_ring);
    err |= SET(ks, 6, t), err |= SET(ks, 7, split_len), err |= SET(ks, 8, cc->q);
    err |= SET(ks, 9, q_sink), err |= SET(ks, 10, cc->partial);
    size_t global[2] = {(size_t)n_split * cc->wg_decode, (size_t)Hkv};
    size_t local[2] = {(size_t)cc->wg_decode, 1};
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(cb->queue, ks, 2, NULL, global, local, 0, NULL, NULL);
    check(cc, err, "diffattn_decode_split");
    cl_kernel kc = cc->k_combine;
    err = CL_SUCCESS;
    err |= SET(kc, 0, cc->partial), err |= SET(kc, 1, n_split), err |= SET(kc, 2, lambda);
    err |= SET(kc, 3, out_scale), err |= SET(kc, 4, cc->subln), err |= SET(kc, 5, cc->attn);
    size_t cglobal = (size_t)H * cc->combine_wg, clocal = (size_t)cc->combine_wg;
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(cb->queue, kc, 1, NULL, &cglobal, &clocal, 0, NULL, NULL);
    check(cc, err, "diffattn_decode_combine");
    return op_status(cc);
}

static dattn_status cl_project_out(dattn_backend *be, dattn_cache *c, const dattn_layer *l, float *y,
                           int n)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    int E = l->shape.model_dim;
    op_begin(cc);
    matmul(cb, cc, l->w_out, cc->attn, E, n, cc->y, E);
    check(cc, clEnqueueReadBuffer(cb->queue, cc->y, CL_TRUE, 0, sizeof(float) * (size_t)n * E, y,
                                  0, NULL, NULL), "clEnqueueReadBuffer(y)");
    return op_status(cc);
}

static void cl_act_write(dattn_backend *be, dattn_cache *c, act_buf which, const float *src,
                         size_t n_floats)
{
    cl_backend *cb = be->impl;
    cl_cache *cc = c->be_state;
    /* ACT_QKV's q part is what attention reads: the contiguous q buffer. */
    cl_mem dst = which == ACT_QKV ? cc->q : which == ACT_QSINK ? cc->q_sink : cc->attn;
    cl_int err = clEnqueueWriteBuffer(cb->queue, dst, CL_TRUE, 0, sizeof(float) * n_floats, src, 0,
                                      NULL, NULL);
    if (err != CL_SUCCESS)
        dattn_log(DATTN_LOG_ERROR, "opencl: clEnqueueWriteBuffer: %s", cl_error_name(err));
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
    .cache_bytes = cl_cache_bytes,
    .cache_init = cl_cache_init,
    .cache_release = cl_cache_release,
    .kv_read = cl_kv_read,
    .kv_write = cl_kv_write,
    .project_in = cl_project_in,
    .rope_append = cl_rope_append,
    .attention = cl_attention,
    .project_out = cl_project_out,
    .sync = cl_sync,
    .act_write = cl_act_write,
};

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
    cb->tune = tuning_lookup(cb->info.vendor, cb->info.name);
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
             cb->tune->name);
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
