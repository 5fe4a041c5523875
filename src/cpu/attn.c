/* Drivers of the CPU attention (DESIGN §5): cut a call into pool tasks and run the per-ISA
 * kernels. Decode is flash decoding in two passes over the cache: (KV head, split) tasks score
 * the keys (phase 1), then weight V once with the differential attention map (phase 2); a final
 * pass sums the splits' partial vectors and applies the sub-layer RMSNorm. A cache too short to
 * split runs the three phases of each KV head in one task: one pass of the pool, not three. */
#include "attn.h"

#include <math.h>
#include <string.h>

size_t attn_thread_floats(const kv_geom *g, int group)
{
    size_t d = (size_t)g->head_dim, dv = 2 * d, ch = KV_PAGE, r = (size_t)group;
    size_t ptrs = r * sizeof(void *) / sizeof(float) + 2;   /* pointer arrays, 8-aligned */
    size_t decode1 = d * ch + r * ch + ptrs;
    size_t decode2 = ch * dv + r * ch + ch + 6 * r + ptrs;
    size_t pieces = ((size_t)kv_max_pieces(g, PREFILL_QT) * sizeof(kv_piece) + 3) / 4;
    size_t prefill = 2 * d * ch + ch * dv + 2 * ch + 4 * PREFILL_QT + 2 * PREFILL_QT * dv + pieces;
    size_t n = decode1 > decode2 ? decode1 : decode2;
    n = n > prefill ? n : prefill;
    return (n + 15) / 16 * 16;   /* keep each thread's block 64-byte aligned */
}

static void split_range(const decode_job *job, int split, int *p0, int *p1)
{
    *p0 = (int)((long long)job->n_pieces * split / job->n_split);
    *p1 = (int)((long long)job->n_pieces * (split + 1) / job->n_split);
}

static void scores_task(void *ctx, int task, int thread)
{
    const decode_job *job = ctx;
    int j = task % job->n_kv_heads, split = task / job->n_kv_heads, p0, p1;
    split_range(job, split, &p0, &p1);
    job->k->decode_scores(job->a, job->s, job->n_pieces, j, p0, p1,
                          job->thread_tmp + (size_t)thread * job->thread_floats);
}

static void values_task(void *ctx, int task, int thread)
{
    const decode_job *job = ctx;
    const attn_args *a = job->a;
    int j = task % job->n_kv_heads, split = task / job->n_kv_heads, p0, p1;
    split_range(job, split, &p0, &p1);
    float *partial = job->s->partial + (size_t)split * a->n_heads * 2 * a->head_dim;
    job->k->decode_values(a, job->s, job->n_pieces, j, p0, p1, partial,
                          job->thread_tmp + (size_t)thread * job->thread_floats);
}

/* Sum of the splits' partial vectors of head h, then RMSNorm * subln * (1 - lambda_init). */
static void combine_task(void *ctx, int h, int thread)
{
    (void)thread;
    const decode_job *job = ctx;
    const attn_args *a = job->a;
    int dv = 2 * a->head_dim;
    size_t stride = (size_t)a->n_heads * dv;
    float *out = a->out + (size_t)h * dv;
    const float *first = job->s->partial + (size_t)h * dv;
    memcpy(out, first, sizeof(float) * (size_t)dv);
    for (int sp = 1; sp < job->n_split; sp++)
        for (int c = 0; c < dv; c++)
            out[c] += first[sp * stride + c];
    float ss = 0.0f;
    for (int c = 0; c < dv; c++)
        ss += out[c] * out[c];
    float norm = a->out_scale / sqrtf(ss / (float)dv + a->eps);
    for (int c = 0; c < dv; c++)
        out[c] *= norm * a->subln[c];
}

void attn_decode_head(const decode_job *job, int j, int thread)
{
    int r = job->a->n_heads / job->n_kv_heads;
    scores_task((void *)job, j, thread);
    values_task((void *)job, j, thread);
    for (int h = j * r; h < (j + 1) * r; h++)
        combine_task((void *)job, h, thread);
}

static void unsplit_task(void *ctx, int task, int thread)
{
    attn_decode_head(ctx, task, thread);
}

/* Splits per KV head: enough tasks to keep every thread busy with some slack for uneven
 * finishing (as flash-attention's heuristic aims for full waves), but never so many that a split
 * is shorter than a few pages, where the per-task overhead would show. */
static int choose_splits(int n_pieces, int n_kv_heads, int n_threads)
{
    int want = (4 * n_threads + n_kv_heads - 1) / n_kv_heads;
    int most = n_pieces / 8;
    int n = want < most ? want : most;
    if (n < 1)
        n = 1;
    return n > DECODE_MAX_SPLIT ? DECODE_MAX_SPLIT : n;
}

int attn_decode_plan(int n_threads, const cpu_kernels *k, const attn_args *a,
                     const decode_scratch *s, float *thread_tmp, size_t thread_floats,
                     decode_job *job)
{
    const kv_geom *g = &a->cache->g;
    *job = (decode_job){k, a, s, thread_tmp, thread_floats, 0, 1, g->n_kv_heads};
    job->n_pieces = kv_pieces(g, a->t0, a->t0, s->pieces);
    job->n_split = choose_splits(job->n_pieces, g->n_kv_heads, n_threads);
    return job->n_split == 1;
}

void attn_decode(pool *p, const cpu_kernels *k, const attn_args *a, const decode_scratch *s,
                 float *thread_tmp, size_t thread_floats)
{
    decode_job job;
    if (attn_decode_plan(pool_threads(p), k, a, s, thread_tmp, thread_floats, &job)) {
        /* a short context: no split waits for another, so one pass */
        pool_run(p, unsplit_task, &job, job.n_kv_heads);
        return;
    }
    int n_tasks = job.n_split * job.n_kv_heads;
    pool_run(p, scores_task, &job, n_tasks);
    pool_run(p, values_task, &job, n_tasks);
    pool_run(p, combine_task, &job, a->n_heads);
}

typedef struct prefill_job {
    const cpu_kernels *k;
    const attn_args *a;
    float *thread_tmp;
    size_t thread_floats;
    int n_tiles, n_kv_heads;
} prefill_job;

static void prefill_task(void *ctx, int task, int thread)
{
    const prefill_job *job = ctx;
    /* Last query tiles first: under the causal mask they have the most keys. Each thread runs
     * its range of the pass heaviest first, and one that runs out steals the lightest left in
     * another's, so the pass ends with short tasks. */
    int tile = job->n_tiles - 1 - task / job->n_kv_heads, j = task % job->n_kv_heads;
    int r0 = tile * PREFILL_QT, r1 = r0 + PREFILL_QT < job->a->n ? r0 + PREFILL_QT : job->a->n;
    job->k->prefill(job->a, j, r0, r1, job->thread_tmp + (size_t)thread * job->thread_floats);
}

void attn_prefill(pool *p, const cpu_kernels *k, const attn_args *a, float *thread_tmp,
                  size_t thread_floats)
{
    const kv_geom *g = &a->cache->g;
    prefill_job job = {k, a, thread_tmp, thread_floats, (a->n + PREFILL_QT - 1) / PREFILL_QT,
                       g->n_kv_heads};
    pool_run(p, prefill_task, &job, job.n_tiles * g->n_kv_heads);
}
