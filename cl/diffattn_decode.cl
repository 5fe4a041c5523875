/* diffattn_decode.cl: tiled flash decoding of differential attention for one new token
 * (DESIGN §1 steps 3-6, §5), reading the paged KV cache of src/kv.h in place.
 *
 * diffattn_decode_split: for KV head j and split s, over the split's visible keys, two online
 *   softmaxes per query head h = j*GROUP + g (g < GROUP):
 *     s1 = q[2h] . k1,  s2 = q[2h+1] . k2   (q pre-rotated and pre-scaled by 1/sqrt(d); sink keys
 *                                            use q_sink, rotated at the StreamingLLM position)
 *     m = max s,  l = sum exp(s - m),  o = sum exp(s - m) v   (v: [2d], shared by both halves)
 *   and writes partial[h][s] = { m1, l1, o1[2d], m2, l2, o2[2d] }  (PART_FLOATS = 4 + 4d floats).
 * diffattn_decode_combine: for query head h, merges the splits by log-sum-exp, forms
 *     o = o1/l1 - lambda * o2/l2,  out[h][i] = o[i] / sqrt(mean(o^2) + eps) * subln[i] * out_scale
 *   (out_scale = 1 - lambda_init), out [H][2d] f32.
 *
 * Visible keys of the query at stream index t (DESIGN §4, src/kv.h): the sinks 0 .. min(n_sink,
 * t+1)-1, then stream indices max(n_sink, t-n_window+1) .. t, numbered 0 .. n_vis-1 in that order;
 * physical slot of stream index u >= n_sink: n_sink + (u - n_sink) % n_ring. Split s owns visible
 * numbers [s*split_len, min((s+1)*split_len, n_vis)) (may be empty: it then writes m = -inf,
 * l = 0, o = 0, which the combine ignores). `full` policy: n_sink = 0, n_window = n_ring = n_ctx.
 *
 * Arguments (split): cache (the buffer holding head blocks (slot, j0 ..)), slot_off (byte offset
 *   of head block (slot, j0) in it: slot * Hkv * head_bytes for a one-buffer cache, j0 = 0),
 *   n_pages (kv_geom.n_pages), n_sink, n_window, n_ring (kv_geom), t
 *   (stream index of the query, cl_long), split_len (>= 1, with n_split * split_len >= n_vis: the
 *   host takes ceil(n_vis / n_split)), q and q_sink [2H][d] f32, partial [H][n_split][PART_FLOATS],
 *   j0 (the first KV head of the launch: a cache split over several buffers launches once per
 *   run of heads in one buffer; KV head j = j0 + group id 1).
 * Arguments (combine): partial, n_split, lambda, out_scale, subln [2d] f32, out [H][2d] f32.
 *
 * Cache bytes: as kv_append.cl (head block (slot, j) at slot_off + j*head_bytes; K pages of
 * k1 [d][32], k2 [d][32] (+ q8 scales), then V rows [2d] per physical slot, then q8 V scales).
 *
 * Work (split): one work-group of WG_DECODE (= WG_SIZE) items per (split s = group id 0, KV head
 *   j = j0 + group id 1), global size (n_split * WG_DECODE, heads of the launch). A tile is
 *   WG_SIZE consecutive visible keys:
 *   scores: item l takes key l of the tile and loops over the d dims: at each dim the work-group
 *     reads one k1 and one k2 element of each key; keys that share a page are adjacent in memory
 *     (dimension-major pages), so the loads of a page's keys are one contiguous run; 2*GROUP dot
 *     products per key against the queries held in local memory (broadcast reads).
 *   values: item l owns dims l, l + WG_SIZE, ... of the 2d-wide V row and walks the tile's keys:
 *     adjacent items read adjacent elements of a V row (coalesced); 2*GROUP accumulators per dim.
 *   Every k1, k2, v (and q8 scale) byte of a visible key is read exactly once, by one work-group,
 *   for all GROUP query heads; invisible slots are never read.
 * Work (combine): one work-group of COMBINE_WG_SIZE items per query head h, global size
 *   (H * COMBINE_WG_SIZE); item l owns dims l, l + COMBINE_WG_SIZE, ...; partial is read once.
 * Local memory (split): 4 * (2*2*GROUP*HEAD_DIM [q, q_sink] + 2*2*GROUP*WG_SIZE [reduction,
 *   weights] + WG_SIZE [slots]) bytes, e.g. 9,472 B at GROUP 3, d 128, WG_SIZE 64; must fit the
 *   32 KiB OpenCL 1.2 minimum. (combine): 4 * COMBINE_WG_SIZE bytes. */

#ifndef HEAD_DIM
#define HEAD_DIM 64          /* d: the dim of one softmax half; V rows have 2d */
#endif
#ifndef GROUP
#define GROUP 1              /* r = query heads per KV head */
#endif
#ifndef KV_TYPE
#define KV_TYPE 1            /* cache element: 0 f32, 1 f16, 2 q8 */
#endif
#ifndef WG_DECODE
#define WG_DECODE 64         /* split work-group size = keys per tile (tuning.tsv wg_decode) */
#endif
#define WG_SIZE WG_DECODE    /* the name used below */
#ifndef COMBINE_WG_SIZE
#define COMBINE_WG_SIZE 64   /* combine work-group size; a power of two */
#endif
#ifndef RMS_EPS
#define RMS_EPS 1e-5f        /* sub-layer RMSNorm epsilon (DESIGN §1 step 6) */
#endif
/* With EPS_ARG (the backend defines it) the epsilon is the kernel's last argument instead, the
 * layer's own (a Hugging Face model's rms_norm_eps); without it, the constant RMS_EPS. */
#ifdef EPS_ARG
#define EPS_PARAM , float rms_eps
#define SUB_EPS rms_eps
#else
#define EPS_PARAM
#define SUB_EPS RMS_EPS
#endif

#if HEAD_DIM < 1 || GROUP < 1
#error "HEAD_DIM and GROUP must be positive"
#endif
#if WG_SIZE < 1 || (WG_SIZE & (WG_SIZE - 1)) != 0
#error "WG_SIZE must be a power of two"
#endif
#if COMBINE_WG_SIZE < 1 || (COMBINE_WG_SIZE & (COMBINE_WG_SIZE - 1)) != 0
#error "COMBINE_WG_SIZE must be a power of two"
#endif
#if 4 * (4 * GROUP * HEAD_DIM + 4 * GROUP * WG_SIZE + WG_SIZE) > 32768
#error "local memory of diffattn_decode_split exceeds 32 KiB: lower WG_SIZE"
#endif

#include "kv_layout.h"
#define NROW (2 * GROUP)                                  /* softmax rows per KV head */
#define V_PER ((2 * HEAD_DIM + WG_SIZE - 1) / WG_SIZE)    /* V dims per split item */
#define C_PER ((2 * HEAD_DIM + COMBINE_WG_SIZE - 1) / COMBINE_WG_SIZE)
#define HALF_FLOATS (2 + 2 * HEAD_DIM)                    /* m, l, o[2d] */
#define PART_FLOATS (2 * HALF_FLOATS)

__kernel __attribute__((reqd_work_group_size(WG_SIZE, 1, 1)))
void diffattn_decode_split(__global const uchar *cache, ulong slot_off, int n_pages, int n_sink,
                           int n_window, int n_ring, long t, int split_len,
                           __global const float *q, __global const float *q_sink,
                           __global float *partial, int j0)
{
    __local float qs[2][NROW][HEAD_DIM];                   /* [0] q, [1] q_sink of this group */
    __local float red[NROW][WG_SIZE];                      /* reductions */
    __local float wt[NROW][WG_SIZE];                       /* the tile's softmax weights */
    __local int slot[WG_SIZE];                             /* the tile's physical slots */

    const int lid = (int)get_local_id(0);
    const int s = (int)get_group_id(0), n_split = (int)get_num_groups(0);
    const int j = j0 + (int)get_group_id(1);

    const ulong v_off = (ulong)n_pages * KPAGE_BYTES;
    const ulong vscale_off = v_off + ROUND64((ulong)n_pages * KV_PAGE * VROW_BYTES);
    const ulong head_bytes = vscale_off + (KV_TYPE == 2 ? ROUND64((ulong)n_pages * KV_PAGE * 4) : 0);
    __global const uchar *head = cache + slot_off + (ulong)(j - j0) * head_bytes;

    /* the visible keys: n_sv sinks, then the window from stream index w0 (ring offset ring0) */
    const int n_sv = (int)min((long)n_sink, t + 1);
    const long w0 = max((long)n_sink, t - n_window + 1);
    const int n_vis = n_sv + (int)max(0L, t + 1 - w0);
    const int ring0 = (int)((w0 - n_sink) % n_ring);
    const int v0 = (int)min((long)s * split_len, (long)n_vis);
    const int v1 = (int)min((long)v0 + split_len, (long)n_vis);

    for (int i = lid; i < NROW * HEAD_DIM; i += WG_SIZE) {
        const size_t o = (size_t)j * NROW * HEAD_DIM + i;
        qs[0][i / HEAD_DIM][i % HEAD_DIM] = q[o];
        qs[1][i / HEAD_DIM][i % HEAD_DIM] = q_sink[o];
    }

    float m[NROW], l[NROW], acc[NROW][V_PER];
    for (int r = 0; r < NROW; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        for (int u = 0; u < V_PER; u++)
            acc[r][u] = 0.0f;
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    for (int base = v0; base < v1; base += WG_SIZE) {      /* uniform over the work-group */
        const int vis = base + lid;
        float sc[NROW];
        int ph = 0;
        if (vis < v1) {
            const int sink = vis < n_sv;
            ph = sink ? vis : n_sink + (ring0 + (vis - n_sv)) % n_ring;
            __global const uchar *pg = head + (ulong)(ph / KV_PAGE) * KPAGE_BYTES;
            const int col = ph % KV_PAGE;
            for (int r = 0; r < NROW; r++)
                sc[r] = 0.0f;
            for (int e = 0; e < HEAD_DIM; e++) {
                const float k1 = LOAD(pg, e * KV_PAGE + col);
                const float k2 = LOAD(pg + KHALF_BYTES, e * KV_PAGE + col);
                for (int g = 0; g < GROUP; g++) {
                    sc[2 * g] = fma(qs[sink][2 * g][e], k1, sc[2 * g]);
                    sc[2 * g + 1] = fma(qs[sink][2 * g + 1][e], k2, sc[2 * g + 1]);
                }
            }
#if KV_TYPE == 2
            const float ks1 = ((__global const float *)(pg + 2 * KHALF_BYTES))[col];
            const float ks2 = ((__global const float *)(pg + 2 * KHALF_BYTES))[KV_PAGE + col];
            for (int g = 0; g < GROUP; g++) {
                sc[2 * g] *= ks1;
                sc[2 * g + 1] *= ks2;
            }
#endif
        } else {
            for (int r = 0; r < NROW; r++)
                sc[r] = -INFINITY;
        }

        /* the tile's max of each row */
        for (int r = 0; r < NROW; r++)
            red[r][lid] = sc[r];
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int w = WG_SIZE / 2; w > 0; w >>= 1) {
            if (lid < w)
                for (int r = 0; r < NROW; r++)
                    red[r][lid] = fmax(red[r][lid], red[r][lid + w]);
            barrier(CLK_LOCAL_MEM_FENCE);
        }
#if KV_TYPE == 2
        const float vsc = vis < v1 ? ((__global const float *)(head + vscale_off))[ph] : 0.0f;
#endif
        float alpha[NROW];
        for (int r = 0; r < NROW; r++) {
            const float mn = fmax(m[r], red[r][0]);        /* finite: the tile has a key */
            alpha[r] = exp(m[r] - mn);
            m[r] = mn;
            const float p = exp(sc[r] - mn);               /* 0 past the split's end */
            l[r] = fma(l[r], alpha[r], p);                 /* this item's share of the sum */
#if KV_TYPE == 2
            wt[r][lid] = p * vsc;
#else
            wt[r][lid] = p;
#endif
        }
        slot[lid] = ph;
        barrier(CLK_LOCAL_MEM_FENCE);

        for (int r = 0; r < NROW; r++)
            for (int u = 0; u < V_PER; u++)
                acc[r][u] *= alpha[r];
        const int n = min(WG_SIZE, v1 - base);
        for (int kk = 0; kk < n; kk++) {
            __global const uchar *vr = head + v_off + (ulong)slot[kk] * VROW_BYTES;
            for (int u = 0; u < V_PER; u++) {
                const int e = lid + u * WG_SIZE;
                if (e < 2 * HEAD_DIM) {
                    const float x = LOAD(vr, e);
                    for (int r = 0; r < NROW; r++)
                        acc[r][u] = fma(wt[r][kk], x, acc[r][u]);
                }
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);                      /* before red, wt, slot are rewritten */
    }

    /* the sums of the items' shares */
    for (int r = 0; r < NROW; r++)
        red[r][lid] = l[r];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int w = WG_SIZE / 2; w > 0; w >>= 1) {
        if (lid < w)
            for (int r = 0; r < NROW; r++)
                red[r][lid] += red[r][lid + w];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int g = 0; g < GROUP; g++) {
        __global float *out = partial + ((size_t)(j * GROUP + g) * n_split + s) * PART_FLOATS;
        for (int c = 0; c < 2; c++) {
            const int r = 2 * g + c;
            __global float *o = out + c * HALF_FLOATS;
            if (lid == 0) {
                o[0] = m[r];
                o[1] = red[r][0];
            }
            for (int u = 0; u < V_PER; u++) {
                const int e = lid + u * WG_SIZE;
                if (e < 2 * HEAD_DIM)
                    o[2 + e] = acc[r][u];
            }
        }
    }
}

__kernel __attribute__((reqd_work_group_size(COMBINE_WG_SIZE, 1, 1)))
void diffattn_decode_combine(__global const float *partial, int n_split, float lambda,
                             float out_scale, __global const float *subln, __global float *out
                             EPS_PARAM)
{
    __local float red[COMBINE_WG_SIZE];
    const int lid = (int)get_local_id(0);
    const size_t h = get_group_id(0);
    __global const float *p = partial + h * n_split * PART_FLOATS;

    float mx[2] = {-INFINITY, -INFINITY}, sum[2] = {0.0f, 0.0f};
    for (int s = 0; s < n_split; s++)
        for (int c = 0; c < 2; c++)
            mx[c] = fmax(mx[c], p[s * PART_FLOATS + c * HALF_FLOATS]);
    for (int s = 0; s < n_split; s++)
        for (int c = 0; c < 2; c++) {
            __global const float *ps = p + s * PART_FLOATS + c * HALF_FLOATS;
            sum[c] = fma(ps[1], exp(ps[0] - mx[c]), sum[c]);   /* empty split: 0 * 0 */
        }

    float y[C_PER], ss = 0.0f;
    for (int u = 0; u < C_PER; u++) {
        const int e = lid + u * COMBINE_WG_SIZE;
        y[u] = 0.0f;
        if (e < 2 * HEAD_DIM) {
            float o[2] = {0.0f, 0.0f};
            for (int s = 0; s < n_split; s++)
                for (int c = 0; c < 2; c++) {
                    __global const float *ps = p + s * PART_FLOATS + c * HALF_FLOATS;
                    o[c] = fma(ps[2 + e], exp(ps[0] - mx[c]), o[c]);
                }
            y[u] = o[0] / sum[0] - lambda * (o[1] / sum[1]);
            ss = fma(y[u], y[u], ss);
        }
    }
    red[lid] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int w = COMBINE_WG_SIZE / 2; w > 0; w >>= 1) {
        if (lid < w)
            red[lid] += red[lid + w];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const float inv = 1.0f / sqrt(red[0] / (float)(2 * HEAD_DIM) + SUB_EPS) * out_scale;
    for (int u = 0; u < C_PER; u++) {
        const int e = lid + u * COMBINE_WG_SIZE;
        if (e < 2 * HEAD_DIM)
            out[h * 2 * HEAD_DIM + e] = y[u] * inv * subln[e];
    }
}
