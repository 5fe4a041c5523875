/* Differential-attention kernels of the CPU backend, compiled once per instruction set
 * (src/cpu/isa.h): flash-decoding phases 1 and 2 and the tiled prefill (DESIGN §1, §5).
 *
 * Keys are read a page at a time ([head_dim][KV_PAGE] per K half, so one broadcast-FMA per dim
 * scores the whole page with no horizontal sums), and decode serves all r query heads of a KV
 * head from each loaded row. f32 pages are read in place, f16 rows are widened in registers
 * inside the FMA loops, q8 pages are widened into a small f32 tile first. V rows are summed in
 * register blocks of VB floats so the accumulators stay in registers over the positions. Decode
 * prefetches a fixed distance ahead from inside its loops (PREFETCH_BYTES). */
#include <math.h>
#include <string.h>

#include "attn.h"
#include "gemm.h"
#include "half.h"
#include "isa.h"
#include "swiglu.h"
#include "vexp.h"

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define VB 64           /* V floats per register block: 4 zmm x 2 interleaved rows */
#define SU 4            /* independent partial sums in the score loop */
#elif defined(__AVX2__)
#define VB 32
#define SU 2
#else
#define VB 16
#define SU 2
#endif

#define CH KV_PAGE
#define CPU_STR_(x) #x
#define CPU_STR(x) CPU_STR_(x)

/* ---- element conversion ------------------------------------------------------------------ */

static inline void f16_row(float *restrict dst, const uint16_t *restrict src, int n)
{
    int i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#elif defined(__aarch64__)
    for (; i < n; i++) {
        __fp16 h;
        memcpy(&h, src + i, 2);
        dst[i] = (float)h;
    }
#endif
    for (; i < n; i++)
        dst[i] = f16_to_f32(src[i]);
}

static inline void q8_row(float *restrict dst, const int8_t *restrict src, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = (float)src[i];
}

/* How far ahead decode prefetches (into L2), rounded up to whole pages. Once the loops do real
 * work per byte, the hardware prefetchers alone leave the core waiting on DRAM. What works is one
 * software prefetch per row, issued inside the FMA loops, for the row about 256 KiB further on:
 * the prefetches then trickle out at the rate the loop consumes data. The same prefetches issued
 * as a burst per page gained little; spread, S2 f16 decode at 64K went from 15.6-17.3 ms to
 * 8.8-10.2 ms on the 2-core Zen 4. 128 and 512 KiB were not measurably different. */
#define PREFETCH_BYTES (256 << 10)

/* Addresses as integers: the prefetched span may lie past the arena's end, which a prefetch
 * tolerates but C pointer arithmetic does not. */
static inline void prefetch_span(uintptr_t at, size_t bytes)
{
    for (size_t o = 0; o < bytes; o += 64)
        __builtin_prefetch((const void *)(at + o), 0, 2);
}

/* Rows [0, rows) of `len` elements at `stride` from a page, as f32 at `ld` in tile; returns the
 * row pointer and stride to read (f32 pages are used in place). Prefetches the same rows
 * `ahead` bytes further on, spread over the rows. */
static const float *widen(const kv_geom *g, const uint8_t *base, int rows, int len, int stride,
                          float *tile, int ld, int *ld_out, size_t ahead)
{
    size_t e = g->elem_bytes, row_bytes = (size_t)len * e;
    uintptr_t next = (uintptr_t)base + ahead;
    if (g->type == DATTN_KV_F32) {
        *ld_out = stride;   /* used in place; the FMA loops prefetch as they go */
        return (const float *)base;
    }
    for (int i = 0; i < rows; i++) {
        if (g->type == DATTN_KV_F16)
            f16_row(tile + (size_t)i * ld, (const uint16_t *)base + (size_t)i * stride, len);
        else
            q8_row(tile + (size_t)i * ld, (const int8_t *)base + (size_t)i * stride, len);
        prefetch_span(next + (size_t)i * stride * e, row_bytes);
    }
    *ld_out = ld;
    return tile;
}

/* 1 when any of e[0..n) is NaN (bit tests: vectorizes, and never traps). */
static inline int any_nan(const float *e, int n)
{
    uint32_t any = 0;
    for (int p = 0; p < n; p++) {
        uint32_t u;
        memcpy(&u, &e[p], 4);
        any |= (uint32_t)((u & 0x7fffffffu) > 0x7f800000u);
    }
    return any != 0;
}

/* Max and sum of a piece's scores. A plain loop is a chain of dependent scalar ops (the compiler
 * may not reorder float sums), 32 long per head and half per page: a pairwise tree over CH lanes
 * vectorizes instead. Pieces shorter than a page (the cache's ends) take the plain loop. */
static inline float chunk_max(const float *e, int n)
{
    if (n == CH) {
        float t[CH / 2];
        for (int p = 0; p < CH / 2; p++)
            t[p] = e[p] > e[p + CH / 2] ? e[p] : e[p + CH / 2];
        for (int w = CH / 4; w >= 1; w /= 2)
            for (int p = 0; p < w; p++)
                t[p] = t[p] > t[p + w] ? t[p] : t[p + w];
        return t[0];
    }
    float m = -INFINITY;
    for (int p = 0; p < n; p++)
        m = e[p] > m ? e[p] : m;
    return m;
}

static inline float chunk_sum(const float *e, int n)
{
    if (n == CH) {
        float t[CH / 2];
        for (int p = 0; p < CH / 2; p++)
            t[p] = e[p] + e[p + CH / 2];
        for (int w = CH / 4; w >= 1; w /= 2)
            for (int p = 0; p < w; p++)
                t[p] += t[p + w];
        return t[0];
    }
    float l = 0.0f;
    for (int p = 0; p < n; p++)
        l += e[p];
    return l;
}

/* s[0..CH) = sum_i q[i] * rows[i][0..CH): SU partial sums keep the FMA pipes full. */
static inline void score_chunk(const float *restrict q, const float *restrict rows, int ld, int d,
                               float *restrict s)
{
    float acc[SU][CH];
    for (int u = 0; u < SU; u++)
        for (int p = 0; p < CH; p++)
            acc[u][p] = 0.0f;
    int i = 0;
    for (; i + SU <= d; i += SU)
        for (int u = 0; u < SU; u++) {
            const float *row = rows + (size_t)(i + u) * ld;
            float qi = q[i + u];
            for (int p = 0; p < CH; p++)
                acc[u][p] += qi * row[p];
        }
    for (; i < d; i++)
        for (int p = 0; p < CH; p++)
            acc[0][p] += q[i] * rows[(size_t)i * ld + p];
    for (int p = 0; p < CH; p++) {
        float v = acc[0][p];
        for (int u = 1; u < SU; u++)
            v += acc[u][p];
        s[p] = v;
    }
}

/* acc[0..dv) += sum_p w[p] * v[p][0..dv) with two row streams in flight per register block. */
static inline void accum_rows(float *restrict acc, const float *restrict v, int ldv,
                              const float *restrict w, int n, int dv, size_t ahead)
{
    int c = 0;
    for (; c + VB <= dv; c += VB) {
        float a0[VB], a1[VB];
        for (int k = 0; k < VB; k++) {
            a0[k] = acc[c + k];
            a1[k] = 0.0f;
        }
        int p = 0;
        for (; p + 2 <= n; p += 2) {
            const float *r0 = v + (size_t)p * ldv + c, *r1 = r0 + ldv;
            if (ahead) {
                prefetch_span((uintptr_t)r0 + ahead, sizeof(float) * VB);
                prefetch_span((uintptr_t)r1 + ahead, sizeof(float) * VB);
            }
            float w0 = w[p], w1 = w[p + 1];
            for (int k = 0; k < VB; k++) {
                a0[k] += w0 * r0[k];
                a1[k] += w1 * r1[k];
            }
        }
        if (p < n) {
            const float *r0 = v + (size_t)p * ldv + c;
            for (int k = 0; k < VB; k++)
                a0[k] += w[p] * r0[k];
        }
        for (int k = 0; k < VB; k++)
            acc[c + k] = a0[k] + a1[k];
    }
    for (; c < dv; c++)
        for (int p = 0; p < n; p++)
            acc[c] += w[p] * v[(size_t)p * ldv + c];
}

/* The score and V loops for R query heads of a KV-head group at once (decode): each K row or V
 * row is loaded once for all R heads, which cuts the loads per FMA at r >= 2 and gives enough
 * independent accumulators to hide the FMA latency. R is a constant so the accumulators live in
 * registers. ROW gives a row as f32: f32 pages are read in place; f16 rows are widened in
 * registers right where they are used, so the conversions (vcvtph2ps: about 3 cycles per 16
 * values on Zen 4, as slow as the FMAs they feed) overlap the FMAs instead of running as a
 * separate pass over a tile. Each loop prefetches its row `ahead` bytes further on. */
#define ROW_F32(buf, src, n) ((void)(buf), (src))
#define ROW_F16(buf, src, n) (f16_row((buf), (src), (n)), (const float *)(buf))
#define ONE_F32(x) (x)
#define ONE_F16(x) f16_to_f32(x)

/* Row ii of K into partial sum uu (the body of SCORE_GROUP's loops). */
#define SCORE_ROW(T, ROW, R, ii, uu)                                                             \
    do {                                                                                         \
        const T *src = rows + (size_t)(ii) * ld;                                                 \
        float buf[CH];                                                                           \
        const float *row = ROW(buf, src, CH);                                                    \
        if (ahead)                                                                               \
            prefetch_span((uintptr_t)src + ahead, sizeof(T) * CH);                               \
        for (int h = 0; h < R; h++) {                                                            \
            float qi = q[h][ii];                                                                 \
            for (int p = 0; p < CH; p++)                                                         \
                acc[uu][h][p] += qi * row[p];                                                    \
        }                                                                                        \
    } while (0)

#define SCORE_GROUP(NAME, T, ROW, R, U)                                                          \
    static void NAME(const float *const *q, const T *restrict rows, int ld, int d,              \
                     float *restrict s, size_t ahead)                                            \
    {                                                                                            \
        float acc[U][R][CH];                                                                     \
        for (int u = 0; u < U; u++)                                                              \
            for (int h = 0; h < R; h++)                                                          \
                for (int p = 0; p < CH; p++)                                                     \
                    acc[u][h][p] = 0.0f;                                                         \
        int i = 0;                                                                               \
        for (; i + U <= d; i += U)                                                               \
            for (int u = 0; u < U; u++)                                                          \
                SCORE_ROW(T, ROW, R, i + u, u);                                                  \
        for (; i < d; i++)                                                                       \
            SCORE_ROW(T, ROW, R, i, 0);                                                          \
        for (int h = 0; h < R; h++)                                                              \
            for (int p = 0; p < CH; p++) {                                                       \
                float v = acc[0][h][p];                                                          \
                for (int u = 1; u < U; u++)                                                      \
                    v += acc[u][h][p];                                                           \
                s[h * CH + p] = v;                                                               \
            }                                                                                    \
    }

#define VALUE_GROUP(NAME, T, ROW, ONE, R)                                                        \
    static void NAME(float *const *acc, const T *restrict v, int ldv, const float *restrict w,  \
                     int n, int dv, size_t ahead)                                                \
    {                                                                                            \
        int c = 0;                                                                               \
        for (; c + VB <= dv; c += VB) {                                                          \
            float a[R][VB];                                                                      \
            for (int h = 0; h < R; h++)                                                          \
                for (int k = 0; k < VB; k++)                                                     \
                    a[h][k] = acc[h][c + k];                                                     \
            for (int p = 0; p < n; p++) {                                                        \
                const T *src = v + (size_t)p * ldv + c;                                          \
                float buf[VB];                                                                   \
                const float *row = ROW(buf, src, VB);                                            \
                if (ahead)                                                                       \
                    prefetch_span((uintptr_t)src + ahead, sizeof(T) * VB);                       \
                for (int h = 0; h < R; h++) {                                                    \
                    float wp = w[h * CH + p];                                                    \
                    for (int k = 0; k < VB; k++)                                                 \
                        a[h][k] += wp * row[k];                                                  \
                }                                                                                \
            }                                                                                    \
            for (int h = 0; h < R; h++)                                                          \
                for (int k = 0; k < VB; k++)                                                     \
                    acc[h][c + k] = a[h][k];                                                     \
        }                                                                                        \
        for (; c < dv; c++)                                                                      \
            for (int h = 0; h < R; h++)                                                          \
                for (int p = 0; p < n; p++)                                                      \
                    acc[h][c] += w[h * CH + p] * ONE(v[(size_t)p * ldv + c]);                    \
    }

#define SU2 (SU / 2 > 0 ? SU / 2 : 1)
SCORE_GROUP(score_f32_1, float, ROW_F32, 1, SU)
SCORE_GROUP(score_f32_2, float, ROW_F32, 2, SU2)
SCORE_GROUP(score_f32_3, float, ROW_F32, 3, 1)
SCORE_GROUP(score_f32_4, float, ROW_F32, 4, 1)
SCORE_GROUP(score_f16_1, uint16_t, ROW_F16, 1, SU)
SCORE_GROUP(score_f16_2, uint16_t, ROW_F16, 2, SU2)
SCORE_GROUP(score_f16_3, uint16_t, ROW_F16, 3, 1)
SCORE_GROUP(score_f16_4, uint16_t, ROW_F16, 4, 1)

/* One head alone has too few accumulators per row for the FMA latency: two rows in flight. */
static void value_f32_1(float *const *acc, const float *v, int ldv, const float *w, int n, int dv,
                        size_t ahead)
{
    accum_rows(acc[0], v, ldv, w, n, dv, ahead);
}
VALUE_GROUP(value_f32_2, float, ROW_F32, ONE_F32, 2)
VALUE_GROUP(value_f32_3, float, ROW_F32, ONE_F32, 3)
VALUE_GROUP(value_f32_4, float, ROW_F32, ONE_F32, 4)
VALUE_GROUP(value_f16_1, uint16_t, ROW_F16, ONE_F16, 1)
VALUE_GROUP(value_f16_2, uint16_t, ROW_F16, ONE_F16, 2)
VALUE_GROUP(value_f16_3, uint16_t, ROW_F16, ONE_F16, 3)
VALUE_GROUP(value_f16_4, uint16_t, ROW_F16, ONE_F16, 4)

/* Any r: blocks of four query heads, then the rest. s is [r][CH]; w is [r][CH]. */
#define GROUP_DISPATCH(G, ...)                                                                   \
    do {                                                                                         \
        int h = 0;                                                                               \
        for (; h + 4 <= r; h += 4)                                                               \
            G##4(__VA_ARGS__);                                                                   \
        switch (r - h) {                                                                         \
        case 3: G##3(__VA_ARGS__); break;                                                        \
        case 2: G##2(__VA_ARGS__); break;                                                        \
        case 1: G##1(__VA_ARGS__); break;                                                        \
        default: break;                                                                          \
        }                                                                                        \
    } while (0)

static void score_heads_f32(const float *const *q, int r, const float *rows, int ld, int d,
                            float *s, size_t ahead)
{
    GROUP_DISPATCH(score_f32_, q + h, rows, ld, d, s + (size_t)h * CH, ahead);
}

static void score_heads_f16(const float *const *q, int r, const uint16_t *rows, int ld, int d,
                            float *s, size_t ahead)
{
    GROUP_DISPATCH(score_f16_, q + h, rows, ld, d, s + (size_t)h * CH, ahead);
}

static void value_heads_f32(float *const *acc, int r, const float *v, int ldv, const float *w,
                            int n, int dv, size_t ahead)
{
    GROUP_DISPATCH(value_f32_, acc + h, v, ldv, w + (size_t)h * CH, n, dv, ahead);
}

static void value_heads_f16(float *const *acc, int r, const uint16_t *v, int ldv, const float *w,
                            int n, int dv, size_t ahead)
{
    GROUP_DISPATCH(value_f16_, acc + h, v, ldv, w + (size_t)h * CH, n, dv, ahead);
}

/* Cache pointers of the page holding a piece. */
typedef struct chunk_view {
    const uint8_t *k[2];       /* K half rows of the page, stride KV_PAGE elements */
    const uint8_t *v;          /* the piece's first V row, stride 2d elements */
    const float *kscale[2];    /* q8 only, indexed by lane */
    const float *vscale;       /* q8 only, indexed from the piece's first row */
    int lane0;                 /* the piece's first lane in the page */
} chunk_view;

static chunk_view view_chunk(const attn_args *a, int j, const kv_piece *pc)
{
    const kv_geom *g = &a->cache->g;
    const uint8_t *page = kv_kpage(a->cache, a->slot, j, pc->phys / KV_PAGE);
    chunk_view cv;
    cv.k[0] = page;
    cv.k[1] = page + g->khalf_bytes;
    cv.v = kv_vrow(a->cache, a->slot, j, pc->phys);
    cv.kscale[0] = (const float *)(page + 2 * g->khalf_bytes);
    cv.kscale[1] = cv.kscale[0] + KV_PAGE;
    cv.vscale = kv_vscale(a->cache, a->slot, j) + pc->phys;
    cv.lane0 = pc->phys % KV_PAGE;
    return cv;
}

/* ---- flash decoding, phase 1 ------------------------------------------------------------- */

static void decode_scores(const attn_args *a, const decode_scratch *s, int n_pieces, int j, int p0,
                          int p1, float *tmp)
{
    const kv_geom *g = &a->cache->g;
    int d = a->head_dim, r = a->group;
    float *ktile = tmp;                 /* [d][CH] */
    float *sc = ktile + (size_t)d * CH; /* [r][CH] */
    const float **qp = (const float **)(sc + (size_t)r * CH);  /* [r] */
    for (int pi = p0; pi < p1; pi++) {
        const kv_piece *pc = &s->pieces[pi];
        chunk_view cv = view_chunk(a, j, pc);
        int len = pc->len;
        for (int half = 0; half < 2; half++) {
            for (int hh = 0; hh < r; hh++)
                qp[hh] = (pc->sink ? a->q_sink : a->q) + (size_t)(2 * (j * r + hh) + half) * d;
            size_t ahead = (PREFETCH_BYTES / g->kpage_bytes + 1) * g->kpage_bytes;
            if (g->type == DATTN_KV_F16) {
                score_heads_f16(qp, r, (const uint16_t *)cv.k[half], KV_PAGE, d, sc, ahead);
            } else {
                int ld;
                const float *rows = widen(g, cv.k[half], d, CH, KV_PAGE, ktile, CH, &ld, ahead);
                score_heads_f32(qp, r, rows, ld, d, sc, g->type == DATTN_KV_F32 ? ahead : 0);
            }
            for (int hh = 0; hh < r; hh++) {
                float *e = sc + (size_t)hh * CH + cv.lane0;
                if (g->type == DATTN_KV_Q8)
                    for (int p = 0; p < len; p++)
                        e[p] *= cv.kscale[half][cv.lane0 + p];
                float m = chunk_max(e, len);
                for (int p = 0; p < len; p++)
                    e[p] -= m;
                exp_chunk(e, len);
                float l = chunk_sum(e, len);
                size_t row = (size_t)(j * r + hh) * 2 + half;
                memcpy(s->scores + row * s->max_vis + pc->vis, e, sizeof(float) * (size_t)len);
                s->piece_max[row * s->max_pieces + pi] = m;
                s->piece_sum[row * s->max_pieces + pi] = l;
            }
        }
    }
    (void)n_pieces;
}

/* ---- flash decoding, phase 2 ------------------------------------------------------------- */

/* Global max and sum of one softmax from the per-piece stats (log-sum-exp merge). */
static void merge_stats(const float *pmax, const float *psum, int n, float *tmp, float *M, float *L)
{
    float m = -INFINITY;
    for (int i = 0; i < n; i++)
        m = pmax[i] > m ? pmax[i] : m;
    float l = 0.0f;
    for (int i0 = 0; i0 < n; i0 += CH) {
        int len = n - i0 < CH ? n - i0 : CH;
        for (int i = 0; i < len; i++)
            tmp[i] = pmax[i0 + i] - m;
        exp_chunk(tmp, len);
        for (int i = 0; i < len; i++)
            l += psum[i0 + i] * tmp[i];
    }
    *M = m;
    *L = l;
}

static void decode_values(const attn_args *a, const decode_scratch *s, int n_pieces, int j, int p0,
                          int p1, float *partial, float *tmp)
{
    const kv_geom *g = &a->cache->g;
    int d = a->head_dim, dv = 2 * d, r = a->group;
    float *vtile = tmp;                       /* [CH][2d] */
    float *w = vtile + (size_t)CH * dv;       /* [r][CH] */
    float *scratch = w + (size_t)r * CH;      /* [CH] */
    float *fac = scratch + CH;                /* [2][r]: per-piece factors */
    float *M = fac + 2 * r, *L = M + 2 * r;   /* [2][r]: global max and sum per softmax */
    float **acc = (float **)(L + 2 * r);      /* [r]: each head's partial vector */
    for (int hh = 0; hh < r; hh++) {
        size_t row = (size_t)(j * r + hh) * 2;
        for (int half = 0; half < 2; half++)
            merge_stats(s->piece_max + (row + half) * s->max_pieces,
                        s->piece_sum + (row + half) * s->max_pieces, n_pieces, scratch,
                        &M[half * r + hh], &L[half * r + hh]);
        acc[hh] = partial + (size_t)(j * r + hh) * dv;
        memset(acc[hh], 0, sizeof(float) * (size_t)dv);
    }
    for (int pi = p0; pi < p1; pi++) {
        const kv_piece *pc = &s->pieces[pi];
        chunk_view cv = view_chunk(a, j, pc);
        int len = pc->len, ld = dv;
        size_t vpage = KV_PAGE * g->v_row_bytes, ahead = (PREFETCH_BYTES / vpage + 1) * vpage;
        const float *vrows = NULL;
        if (g->type != DATTN_KV_F16)
            vrows = widen(g, cv.v, len, dv, dv, vtile, dv, &ld, ahead);
        for (int hh = 0; hh < r; hh++) {
            size_t row = (size_t)(j * r + hh) * 2;
            for (int half = 0; half < 2; half++)
                fac[half * r + hh] = s->piece_max[(row + half) * s->max_pieces + pi] -
                                     M[half * r + hh];
        }
        exp_chunk(fac, 2 * r);
        for (int hh = 0; hh < r; hh++) {
            size_t row = (size_t)(j * r + hh) * 2;
            float f1 = fac[hh] / L[hh], f2 = a->lambda * fac[r + hh] / L[r + hh];
            const float *e1 = s->scores + row * s->max_vis + pc->vis;
            const float *e2 = e1 + s->max_vis;
            float *wh = w + (size_t)hh * CH;
            for (int p = 0; p < len; p++)
                wh[p] = f1 * e1[p] - f2 * e2[p];
            if (g->type == DATTN_KV_Q8)
                for (int p = 0; p < len; p++)
                    wh[p] *= cv.vscale[p];
        }
        if (g->type == DATTN_KV_F16)
            value_heads_f16(acc, r, (const uint16_t *)cv.v, dv, w, len, dv, ahead);
        else
            value_heads_f32(acc, r, vrows, ld, w, len, dv, g->type == DATTN_KV_F32 ? ahead : 0);
    }
}

/* ---- prefill ----------------------------------------------------------------------------- */

/* O = o1/l1 - lambda o2/l2, then RMSNorm(eps, the layer's) * subln * (1 - lambda_init) (DESIGN §1). */
static void finish_row(const attn_args *a, const float *o1, float l1, const float *o2, float l2,
                       float *out)
{
    int dv = 2 * a->head_dim;
    /* l = 0: no visible key (the row is 0). A NaN l stays NaN in the output. */
    float i1 = l1 == 0.0f ? 0.0f : 1.0f / l1, i2 = l2 == 0.0f ? 0.0f : a->lambda / l2;
    float ss = 0.0f;
    for (int c = 0; c < dv; c++) {
        out[c] = o1[c] * i1 - o2[c] * i2;
        ss += out[c] * out[c];
    }
    float norm = a->out_scale / sqrtf(ss / (float)dv + a->eps);
    for (int c = 0; c < dv; c++)
        out[c] *= norm * a->subln[c];
}

static void prefill(const attn_args *a, int j, int r0, int r1, float *tmp)
{
    const kv_geom *g = &a->cache->g;
    int d = a->head_dim, dv = 2 * d, r = a->group, nq = r1 - r0;
    float *ktile = tmp;                              /* [2][d][CH] */
    float *vtile = ktile + (size_t)2 * d * CH;       /* [CH][2d] */
    float *sc = vtile + (size_t)CH * dv;             /* [2][CH] */
    float *stat = sc + 2 * CH;                       /* m1, l1, m2, l2: [4][PREFILL_QT] */
    float *o = stat + 4 * PREFILL_QT;                /* [2][PREFILL_QT][2d] */
    kv_piece *pieces = (kv_piece *)(o + (size_t)2 * PREFILL_QT * dv);
    int n_pieces = kv_pieces(g, a->t0 + r0, a->t0 + r1 - 1, pieces);

    for (int hh = 0; hh < r; hh++) {
        int h = j * r + hh;
        for (int i = 0; i < nq; i++) {
            stat[i] = stat[2 * PREFILL_QT + i] = -INFINITY;
            stat[PREFILL_QT + i] = stat[3 * PREFILL_QT + i] = 0.0f;
        }
        memset(o, 0, sizeof(float) * 2 * PREFILL_QT * (size_t)dv);
        for (int pi = 0; pi < n_pieces; pi++) {
            const kv_piece *pc = &pieces[pi];
            chunk_view cv = view_chunk(a, j, pc);
            int len = pc->len, ldk[2], ldv;
            const float *krows[2];
            for (int half = 0; half < 2; half++)
                krows[half] = widen(g, cv.k[half], d, CH, KV_PAGE, ktile + (size_t)half * d * CH,
                                    CH, &ldk[half], 0);
            const float *vrows = widen(g, cv.v, len, dv, dv, vtile, dv, &ldv, 0);
            for (int i = 0; i < nq; i++) {
                int64_t t = a->t0 + r0 + i;
                if (pc->stream > t)
                    continue;              /* the whole piece is in this query's future */
                const float *qrow = (pc->sink ? a->q_sink : a->q) + (size_t)(r0 + i) * a->ldq;
                for (int half = 0; half < 2; half++) {
                    float *s = sc + half * CH;
                    score_chunk(qrow + (size_t)(2 * h + half) * d, krows[half], ldk[half], d, s);
                    float *e = s + cv.lane0;
                    if (g->type == DATTN_KV_Q8)
                        for (int p = 0; p < len; p++)
                            e[p] *= cv.kscale[half][cv.lane0 + p];
                    for (int p = 0; p < len; p++)
                        if (!kv_visible(g, pc->stream + p, t))
                            e[p] = -INFINITY;
                    float *m = &stat[2 * half * PREFILL_QT + i];
                    float *l = &stat[(2 * half + 1) * PREFILL_QT + i];
                    float mx = *m;
                    for (int p = 0; p < len; p++)
                        mx = e[p] > mx ? e[p] : mx;
                    if (mx == -INFINITY) {
                        /* Every score masked: nothing to add. But no comparison picks a NaN, so
                         * scores that are all NaN look the same; those must reach the output. */
                        if (!any_nan(e, len))
                            continue;
                        mx = NAN;
                    }
                    for (int p = 0; p < len; p++)
                        e[p] -= mx;
                    exp_chunk(e, len);
                    float *oi = o + ((size_t)half * PREFILL_QT + i) * dv;
                    float corr = expf(*m - mx), sum = 0.0f;
                    if (corr != 1.0f)
                        for (int c = 0; c < dv; c++)
                            oi[c] *= corr;
                    for (int p = 0; p < len; p++)
                        sum += e[p];
                    if (g->type == DATTN_KV_Q8)
                        for (int p = 0; p < len; p++)
                            e[p] *= cv.vscale[p];
                    accum_rows(oi, vrows, ldv, e, len, dv, 0);
                    *l = *l * corr + sum;
                    *m = mx;
                }
            }
        }
        for (int i = 0; i < nq; i++)
            finish_row(a, o + (size_t)i * dv, stat[PREFILL_QT + i],
                       o + ((size_t)PREFILL_QT + i) * dv, stat[3 * PREFILL_QT + i],
                       a->out + (size_t)(r0 + i) * a->ldo + (size_t)h * dv);
    }
}

const cpu_kernels CPU_FN(cpu_kernels) = {
    .isa = CPU_STR(CPU_ISA),
    .decode_scores = decode_scores,
    .decode_values = decode_values,
    .prefill = prefill,
    .gemm_rows = CPU_FN(gemm_rows),
    .gemm_rows_x4 = CPU_FN(gemm_rows_x4),
    .xq8_quantize = CPU_FN(xq8_quantize),
    .gemv_xq8 = CPU_FN(gemv_xq8),
    .swiglu = CPU_FN(swiglu),
};
