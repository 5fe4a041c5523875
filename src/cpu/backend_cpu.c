/* The pure-C CPU backend (DESIGN §2): a persistent thread pool, the kernel table of the best
 * instruction set this CPU runs (chosen once, at create time), packed weights and the per-cache
 * scratch carved from the arena. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "alloc.h"
#include "attn.h"
#include "backend.h"
#include "gemm.h"
#include "status.h"

typedef struct cpu_backend {
    pool *pool;
    const cpu_kernels *k;
} cpu_backend;

struct backend_weight {
    int m, k;
    float *packed;   /* [ceil(m/16)][k][16] */
};

/* Per-cache scratch: decode state and one work block per thread. */
typedef struct cpu_scratch {
    decode_scratch dec;
    float *thread_tmp;
    size_t thread_floats;
} cpu_scratch;

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

static dattn_status pick_kernels(const char *want, const cpu_kernels **out)
{
    static const char *const best_first[] = {"avx512", "avx2", "generic"};
    if (want) {
        const cpu_kernels *k = isa_table(want);
        if (!k)
            return dattn_fail(DATTN_E_INVALID_ARG,
                              "cpu: unknown instruction set '%s' (this build has %s)", want,
#if defined(__x86_64__)
                              "avx512, avx2, generic"
#else
                              "generic"
#endif
            );
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
    pool_destroy(cb->pool);
    dattn_free(cb);
    dattn_free(be);
}

static dattn_status cpu_weight_create(dattn_backend *be, const float *w, int m, int k,
                                      backend_weight **out)
{
    (void)be;
    backend_weight *bw = dattn_alloc(sizeof *bw, "weight");
    if (!bw)
        return DATTN_E_NOMEM;
    bw->m = m;
    bw->k = k;
    bw->packed = dattn_alloc_aligned(gemm_packed_floats(m, k) * sizeof(float), "packed weight");
    if (!bw->packed) {
        dattn_free(bw);
        return DATTN_E_NOMEM;
    }
    gemm_pack(w, m, k, bw->packed);
    *out = bw;
    return DATTN_OK;
}

static void cpu_weight_free(dattn_backend *be, backend_weight *w)
{
    (void)be;
    if (!w)
        return;
    dattn_free_aligned(w->packed);
    dattn_free(w);
}

static void *cpu_cache_scratch(const dattn_backend *be, const dattn_layer_shape *shape,
                               const kv_geom *g, arena *a)
{
    const cpu_backend *cb = be->impl;
    int n_threads = pool_threads(cb->pool);
    int group = shape->n_heads / shape->n_kv_heads;
    size_t dv = 2 * (size_t)g->head_dim, heads = (size_t)shape->n_heads;
    cpu_scratch *s = arena_carve(a, sizeof *s);
    cpu_scratch local;
    cpu_scratch *fill = s ? s : &local;
    decode_scratch *d = &fill->dec;
    /* A decode query sees at most n_sink + n_window keys. */
    d->max_vis = g->n_sink + g->n_window;
    d->max_pieces = kv_max_pieces(g, 1);
    d->pieces = arena_carve(a, sizeof(kv_piece) * (size_t)d->max_pieces);
    d->scores = arena_carve(a, sizeof(float) * heads * 2 * (size_t)d->max_vis);
    d->piece_max = arena_carve(a, sizeof(float) * heads * 2 * (size_t)d->max_pieces);
    d->piece_sum = arena_carve(a, sizeof(float) * heads * 2 * (size_t)d->max_pieces);
    d->partial = arena_carve(a, sizeof(float) * DECODE_MAX_SPLIT * heads * dv);
    fill->thread_floats = attn_thread_floats(g, group);
    fill->thread_tmp = arena_carve(a, sizeof(float) * fill->thread_floats * (size_t)n_threads);
    return s;
}

typedef struct matmul_job {
    const cpu_kernels *k;
    const backend_weight *w;
    const float *x;
    int ldx, n, ldy, panels_per_task, n_panels;
    float *y;
} matmul_job;

static void matmul_task(void *ctx, int task, int thread)
{
    (void)thread;
    const matmul_job *job = ctx;
    int p0 = task * job->panels_per_task;
    int p1 = p0 + job->panels_per_task < job->n_panels ? p0 + job->panels_per_task : job->n_panels;
    if (job->n == 1)
        job->k->gemv(job->x, job->w->k, job->w->packed, job->w->m, job->y, p0, p1);
    else
        job->k->gemm(job->x, job->ldx, job->n, job->w->k, job->w->packed, job->w->m, job->y,
                     job->ldy, p0, p1);
}

static void cpu_matmul(dattn_backend *be, const backend_weight *w, const float *x, int ldx, int n,
                       float *y, int ldy)
{
    cpu_backend *cb = be->impl;
    int n_panels = (w->m + GEMM_PANEL - 1) / GEMM_PANEL;
    int n_threads = pool_threads(cb->pool);
    /* A few tasks per thread balance well without cutting panels too thin. */
    int n_tasks = n_threads == 1 ? 1 : 4 * n_threads;
    if (n_tasks > n_panels)
        n_tasks = n_panels;
    matmul_job job = {cb->k, w, x, ldx, n, ldy, (n_panels + n_tasks - 1) / n_tasks, n_panels, y};
    int used = (n_panels + job.panels_per_task - 1) / job.panels_per_task;
    pool_run(cb->pool, matmul_task, &job, used);
}

static void cpu_attention(dattn_backend *be, void *scratch, const attn_args *a, int decode)
{
    cpu_backend *cb = be->impl;
    cpu_scratch *s = scratch;
    if (decode)
        attn_decode(cb->pool, cb->k, a, &s->dec, s->thread_tmp, s->thread_floats);
    else
        attn_prefill(cb->pool, cb->k, a, s->thread_tmp, s->thread_floats);
}

static const backend_ops cpu_ops = {
    .kind = "cpu",
    .destroy = cpu_destroy,
    .weight_create = cpu_weight_create,
    .weight_free = cpu_weight_free,
    .cache_scratch = cpu_cache_scratch,
    .matmul = cpu_matmul,
    .attention = cpu_attention,
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
    be->ops = &cpu_ops;
    be->impl = cb;
    snprintf(be->describe, sizeof be->describe, "cpu %s, %d thread%s", k->isa, n_threads,
             n_threads == 1 ? "" : "s");
    dattn_log(DATTN_LOG_INFO, "backend: %s", be->describe);
    *out = be;
    return DATTN_OK;
}
