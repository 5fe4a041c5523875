/* Sampling the next token: repetition penalty, then greedy or temperature with top-k and top-p,
 * drawn from a seeded generator so a run can be replayed. Every buffer is allocated at create:
 * picking a token allocates nothing (libc's qsort may, so the sort here is a heapsort). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "alloc.h"
#include "dattn.h"
#include "status.h"

enum { SAMPLER_MAX_RECENT = 4096 };   /* the longest repeat_last_n */

struct dattn_sampler {
    dattn_sampler_params p;
    int vocab;
    uint64_t rng;
    float *logits;             /* [vocab] working copy */
    int32_t *order;            /* [vocab] candidate ids, best first after sorting */
    uint32_t *seen;            /* [vocab] stamp of the last penalty pass that saw the id */
    uint32_t stamp;
    int32_t recent[SAMPLER_MAX_RECENT];   /* ring of the last tokens */
    int n_recent, recent_head;
};

dattn_sampler_params dattn_sampler_default_params(void)
{
    dattn_sampler_params p = {0};
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.repeat_penalty = 1.1f;
    p.repeat_last_n = 64;
    p.seed = 1;
    return p;
}

static dattn_status check_params(const dattn_sampler_params *p)
{
    if (!p)
        return dattn_fail(DATTN_E_INVALID_ARG, "sampler: params is NULL");
    if (!(p->temperature >= 0.0f) || !isfinite(p->temperature))
        return dattn_fail(DATTN_E_INVALID_ARG, "sampler: temperature %g must be >= 0 (0: greedy)",
                          (double)p->temperature);
    if (p->top_k < 0)
        return dattn_fail(DATTN_E_INVALID_ARG, "sampler: top_k %d must be >= 0 (0: off)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return dattn_fail(DATTN_E_INVALID_ARG, "sampler: top_p %g must be in (0, 1]",
                          (double)p->top_p);
    if (!(p->repeat_penalty > 0.0f) || !isfinite(p->repeat_penalty))
        return dattn_fail(DATTN_E_INVALID_ARG, "sampler: repeat_penalty %g must be > 0 (1: off)",
                          (double)p->repeat_penalty);
    if (p->repeat_last_n < 0 || p->repeat_last_n > SAMPLER_MAX_RECENT)
        return dattn_fail(DATTN_E_INVALID_ARG, "sampler: repeat_last_n %d must be in 0..%d",
                          p->repeat_last_n, SAMPLER_MAX_RECENT);
    return DATTN_OK;
}

/* splitmix64: a full-period 64-bit generator, good enough for sampling and tiny to carry. */
static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double next_unit(uint64_t *s)
{
    return (double)(next_u64(s) >> 11) * 0x1.0p-53;   /* [0, 1) */
}

dattn_status dattn_sampler_create(const dattn_sampler_params *p, int vocab, dattn_sampler **out)
{
    if (!out)
        return dattn_fail(DATTN_E_INVALID_ARG, "sampler: out is NULL");
    *out = NULL;
    dattn_status st = check_params(p);
    if (st != DATTN_OK)
        return st;
    if (vocab < 1)
        return dattn_fail(DATTN_E_INVALID_ARG, "sampler: vocab_size %d must be positive", vocab);
    dattn_sampler *s = dattn_alloc(sizeof *s, "sampler");
    if (!s)
        return DATTN_E_NOMEM;
    s->logits = dattn_alloc(sizeof(float) * (size_t)vocab, "sampler logits");
    s->order = dattn_alloc(sizeof(int32_t) * (size_t)vocab, "sampler order");
    s->seen = dattn_alloc(sizeof(uint32_t) * (size_t)vocab, "sampler marks");
    if (!s->logits || !s->order || !s->seen) {
        dattn_sampler_free(s);
        return DATTN_E_NOMEM;
    }
    s->vocab = vocab;
    s->p = *p;
    dattn_sampler_reset(s);
    *out = s;
    return DATTN_OK;
}

void dattn_sampler_free(dattn_sampler *s)
{
    if (!s)
        return;
    dattn_free(s->logits);
    dattn_free(s->order);
    dattn_free(s->seen);
    dattn_free(s);
}

dattn_status dattn_sampler_set_params(dattn_sampler *s, const dattn_sampler_params *p)
{
    if (!s)
        return dattn_fail(DATTN_E_INVALID_ARG, "sampler: NULL sampler");
    dattn_status st = check_params(p);
    if (st != DATTN_OK)
        return st;
    s->p = *p;
    s->rng = p->seed;
    return DATTN_OK;
}

dattn_status dattn_sampler_get_params(const dattn_sampler *s, dattn_sampler_params *out)
{
    if (!s || !out)
        return dattn_fail(DATTN_E_INVALID_ARG, "sampler: NULL argument");
    *out = s->p;
    return DATTN_OK;
}

void dattn_sampler_reset(dattn_sampler *s)
{
    if (!s)
        return;
    s->rng = s->p.seed;
    s->n_recent = s->recent_head = 0;
}

void dattn_sampler_accept(dattn_sampler *s, int32_t token)
{
    if (!s)
        return;
    s->recent[s->recent_head] = token;
    s->recent_head = (s->recent_head + 1) % SAMPLER_MAX_RECENT;
    if (s->n_recent < SAMPLER_MAX_RECENT)
        s->n_recent++;
}

/* a before b: higher logit first, the lower id on a tie (so the order is fully determined). */
static int before(const float *v, int32_t a, int32_t b)
{
    return v[a] > v[b] || (v[a] == v[b] && a < b);
}

/* Heapsort of ids[0..n) so the best comes first: a min-heap on `before` leaves the best at the
 * front after the sort-down. */
static void sift(const float *v, int32_t *ids, int root, int n)
{
    for (;;) {
        int child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && before(v, ids[child + 1], ids[child]))
            child++;
        if (!before(v, ids[child], ids[root]))
            return;
        int32_t t = ids[root];
        ids[root] = ids[child];
        ids[child] = t;
        root = child;
    }
}

static void sort_best_first(const float *v, int32_t *ids, int n)
{
    for (int i = n / 2 - 1; i >= 0; i--)
        sift(v, ids, i, n);
    for (int end = n - 1; end > 0; end--) {
        int32_t t = ids[0];
        ids[0] = ids[end];
        ids[end] = t;
        sift(v, ids, 0, end);
    }
    for (int i = 0, j = n - 1; i < j; i++, j--) {   /* the sort-down leaves worst first */
        int32_t t = ids[i];
        ids[i] = ids[j];
        ids[j] = t;
    }
}

/* The k best ids of ids[0..n) moved to the front (unordered), by repeated partitioning. */
static void select_top(const float *v, int32_t *ids, int n, int k)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int32_t pivot = ids[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (before(v, ids[i], pivot))
                i++;
            while (before(v, pivot, ids[j]))
                j--;
            if (i <= j) {
                int32_t t = ids[i];
                ids[i++] = ids[j];
                ids[j--] = t;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            return;
    }
}

dattn_status dattn_sample(dattn_sampler *s, const float *logits, int32_t *token)
{
    if (!s || !logits || !token)
        return dattn_fail(DATTN_E_INVALID_ARG, "sampler: NULL argument to dattn_sample");
    int V = s->vocab;
    float *v = s->logits;
    memcpy(v, logits, sizeof(float) * (size_t)V);

    /* Repetition penalty, once per distinct recent token (as CTRL and llama.cpp do: positive
     * logits are divided, negative ones multiplied, so both move down). */
    int n_last = s->p.repeat_last_n < s->n_recent ? s->p.repeat_last_n : s->n_recent;
    if (s->p.repeat_penalty != 1.0f && n_last > 0) {
        if (++s->stamp == 0) {
            memset(s->seen, 0, sizeof(uint32_t) * (size_t)V);
            s->stamp = 1;
        }
        for (int i = 0; i < n_last; i++) {
            int32_t t = s->recent[(s->recent_head - 1 - i + SAMPLER_MAX_RECENT) % SAMPLER_MAX_RECENT];
            if (t < 0 || t >= V || s->seen[t] == s->stamp)
                continue;
            s->seen[t] = s->stamp;
            v[t] = v[t] > 0 ? v[t] / s->p.repeat_penalty : v[t] * s->p.repeat_penalty;
        }
    }
    for (int i = 0; i < V; i++)
        if (isnan(v[i]) || v[i] == INFINITY)
            return dattn_fail(DATTN_E_INVALID_ARG, "sampler: logit %d is %g", i, (double)v[i]);

    int32_t pick = 0;
    if (s->p.temperature == 0.0f) {
        for (int i = 1; i < V; i++)
            if (v[i] > v[pick])
                pick = i;
    } else {
        int n = V;
        for (int i = 0; i < V; i++)
            s->order[i] = i;
        if (s->p.top_k > 0 && s->p.top_k < V) {
            select_top(v, s->order, V, s->p.top_k);
            n = s->p.top_k;
        }
        sort_best_first(v, s->order, n);
        /* Softmax of the candidates at this temperature, in double, from the best down. */
        double inv_t = 1.0 / s->p.temperature, top = v[s->order[0]], sum = 0.0;
        for (int i = 0; i < n; i++)
            sum += exp(((double)v[s->order[i]] - top) * inv_t);
        /* Top-p: the shortest best-first prefix whose mass reaches top_p. */
        double mass = 0.0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            mass += exp(((double)v[s->order[i]] - top) * inv_t) / sum;
            if (mass >= s->p.top_p) {
                keep = i + 1;
                break;
            }
        }
        double kept = 0.0;
        for (int i = 0; i < keep; i++)
            kept += exp(((double)v[s->order[i]] - top) * inv_t);
        double u = next_unit(&s->rng) * kept, acc = 0.0;
        pick = s->order[keep - 1];
        for (int i = 0; i < keep; i++) {
            acc += exp(((double)v[s->order[i]] - top) * inv_t);
            if (u < acc) {
                pick = s->order[i];
                break;
            }
        }
    }
    dattn_sampler_accept(s, pick);
    *token = pick;
    return DATTN_OK;
}
