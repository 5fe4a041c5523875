/* diffattn_prefill.cl: differential-attention prefill over the paged KV cache (DESIGN §1 steps 3-6,
 * §5 last paragraph): the n queries at stream indices t0 .. t0+n-1, whose keys and values
 * kv_append already wrote into the cache, each against every key visible to it, with two online
 * softmaxes (flash-attention style) over query tiles x key tiles, then the lambda-combine and the
 * sub-layer RMSNorm.
 *
 *   for query row t (stream index t0 + row) and query head h, KV head j = h / GROUP:
 *     s1 = qq[2h] . k1,  s2 = qq[2h+1] . k2  over the visible keys tk, where qq = q_sink for a sink
 *       key (tk < n_sink) and q otherwise (both pre-rotated and pre-scaled by 1/sqrt(d) on the host:
 *       q at t, q_sink at the StreamingLLM position min(t, n_sink + n_window - 1));
 *     o_c = sum softmax(s_c) v  (v: [2d], shared by both halves, c = 1, 2);
 *     y = o1 - lambda * o2,  out[row][h][i] = y[i] / sqrt(mean(y^2) + eps) * subln[i] * out_scale
 *   (out_scale = 1 - lambda_init).
 * Visible: tk <= t and (tk < n_sink or tk > t - n_window); physical slot of stream index s:
 *   s < n_sink ? s : n_sink + (s - n_sink) % n_ring. `full` policy: n_sink = 0,
 *   n_window = n_ring = n_ctx. sink+window needs n_ring >= n_window + min(n, QT) - 1 (kv.c
 *   gives n_window + max_batch - 1, with max_batch >= n), so the window keys of a whole query tile
 *   are still in the ring.
 *
 * Arguments: cache (the buffer holding head blocks (slot, j0 ..)), slot_off (cl_ulong, byte offset
 *   of head block (slot, j0) in it: slot * Hkv * head_bytes for a one-buffer cache, j0 = 0),
 *   n_pages, n_sink, n_window, n_ring (kv_geom), t0 (cl_long, stream index of the first query), n (queries, >= 1), q and q_sink [n][2H][d] f32, lambda,
 *   out_scale, subln [2d] f32, out [n][H][2d] f32, j0 (first KV head of the launch: a
 *   cache split over several buffers launches once per run of heads in one buffer), n_heads (H).
 * Cache bytes: as kv_append.cl (head block (slot, j) at slot_off + j*head_bytes; K pages of
 *   k1 [d][32], k2 [d][32] (+ q8 scales k1_scale[32], k2_scale[32] f32), then V rows [2d] per
 *   physical slot, then the q8 V scales [n_pages*32] f32).
 *
 * Work: one work-group of WG = PREFILL_QT * PREFILL_KT items per (query head
 *   h = j0*GROUP + group id 0, query tile = group id 1), global size (heads of the launch * WG, ceil(n / PREFILL_QT)), local size (WG, 1).
 *   Tiles run heaviest (latest) first: group id 1 = g takes rows of tile ceil(n/QT) - 1 - g.
 *   Why per query head and not per KV head: the work-group size, the private accumulators and the
 *   local memory are then the same for every GROUP (r = 1 .. 8 all fit 32 KiB at d = 128), and the
 *   GROUP heads of one KV head are adjacent in group id 0, so they stream the same key tiles at
 *   about the same time and the r-fold re-read is served by L2. Prefill is compute-bound (every
 *   key tile serves QT queries from local memory), unlike decode, where per-KV-head matters.
 *   Item (row i = lid / KT, key column c = lid % KT):
 *   keys are walked in two phases, sinks [0, min(n_sink, t_last+1)) with q_sink staged in local
 *     memory, then the window [max(n_sink, t_first - n_window + 1), t_last] with q staged; key
 *     tiles are KT consecutive stream indices starting at multiples of KT (inside one page while
 *     the ring has not wrapped; slots outside the phase's range are zeros and masked);
 *   per key tile: k1 then k2 are staged dequantized as [KT][d4 + 4] rows, key-major (loads:
 *     consecutive items read consecutive positions of one dimension row of a page: one
 *     contiguous run per page row);
 *     item (i, c) scores key c for row i over d with float4 local reads (the q row: a broadcast
 *     to the row's items; the key's row: rows 4 banks apart);
 *     the row max and sums come from the [2][QT][KT] score tile; then V is staged in two halves
 *     [KT][d4 + 4] (loads: consecutive items read consecutive elements of a V row: coalesced)
 *     and item (i, c) accumulates dims c, c + KT, ... of each half for both softmaxes (one dim
 *     at a time over the tile's keys: 3 local reads for 2 fmas; holding 4 dims' sums over the
 *     keys read a key's weights once for 8 fmas but ran 15-25% slower on PoCL at d = 32).
 *   Every k1, k2, v (and q8 scale) byte of a key tile is read once per work-group; a key is read
 *   by the GROUP heads of its KV head for each query tile that sees it. q / q_sink are read once.
 *   Private: 4 * ceil(d / KT) accumulators (32 floats at d = 128, KT = 16).
 * Local memory (d4 = d rounded up to a multiple of 4): 4 * (QT * (2 d4 + 4) [q rows]
 *   + (d4 + 4) * KT [k1 / k2 / V half] + 2 * QT * KT [scores] + 4 * KT [slots, q8 scales])
 *   bytes = 27,392 B at d = 128, QT = KT = 16 (15,104 B at d = 64);
 *   kept within the 32 KiB OpenCL 1.2 minimum by the #error below. */

#ifndef HEAD_DIM
#define HEAD_DIM 64          /* d: the dim of one softmax half; V rows have 2d */
#endif
#ifndef GROUP
#define GROUP 1              /* r = query heads per KV head */
#endif
#ifndef KV_TYPE
#define KV_TYPE 1            /* cache element: 0 f32, 1 f16, 2 q8 */
#endif
#ifndef PREFILL_QT
#define PREFILL_QT 16        /* query rows per work-group tile */
#endif
#ifndef PREFILL_KT
#define PREFILL_KT 16        /* keys per local-memory key tile (and items per query row) */
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
#if PREFILL_QT < 1 || PREFILL_KT < 1
#error "PREFILL_QT and PREFILL_KT must be positive"
#endif
#if PREFILL_QT * PREFILL_KT > 1024
#error "PREFILL_QT * PREFILL_KT (the work-group size) exceeds 1024"
#endif
#if 4 * (PREFILL_QT * (2 * ((HEAD_DIM + 3) / 4 * 4) + 4) + ((HEAD_DIM + 3) / 4 * 4 + 4) * PREFILL_KT + 2 * PREFILL_QT * PREFILL_KT + 4 * PREFILL_KT) > 32768
#error "local memory of diffattn_prefill exceeds 32 KiB: lower PREFILL_QT or PREFILL_KT"
#endif

#include "kv_layout.h"

#define QT PREFILL_QT
#define KT PREFILL_KT
#define WG (QT * KT)
#define D4 ((HEAD_DIM + 3) / 4 * 4)                /* HEAD_DIM rounded up to whole float4s */
#define QSTRIDE (2 * D4 + 4)                       /* q row: q1 | q2, 16-byte aligned; padded so
                                                    * rows i, i+1 fall in other banks */
#define KSTRIDE (D4 + 4)                           /* a key's (or V half's) staged row, likewise */
#define DPT ((HEAD_DIM + KT - 1) / KT)             /* dims of one V half per item */

/* Stage half `hf` (0: k1, 1: k2) of the key tile as [KT][KSTRIDE] f32 (key-major, so a score
 * reads its key's dims as float4s), dequantized. The loads walk the page's dimension-major rows:
 * adjacent items, adjacent slots. */
static void stage_k(__local float *kv, __global const uchar *head, __local const int *slot,
                    __local const float *ksc, int hf, int lid)
{
    for (int x = lid; x < HEAD_DIM * KT; x += WG) {
        const int e = x / KT, c = x % KT, ph = slot[c];
        float val = 0.0f;
        if (ph >= 0) {
            __global const uchar *pg = head + (ulong)(ph / KV_PAGE) * KPAGE_BYTES + hf * KHALF_BYTES;
            val = LOAD(pg, e * KV_PAGE + ph % KV_PAGE) * ksc[hf * KT + c];
        }
        kv[c * KSTRIDE + e] = val;
    }
}

/* Stage half `hv` (dims hv*d .. hv*d + d-1) of the tile's V rows as [KT][KSTRIDE] f32. */
static void stage_v(__local float *kv, __global const uchar *vrows, __local const int *slot,
                    __local const float *ksc, int hv, int lid)
{
    for (int x = lid; x < HEAD_DIM * KT; x += WG) {
        const int c = x / HEAD_DIM, e = x % HEAD_DIM, ph = slot[c];
        float val = 0.0f;
        if (ph >= 0)
            val = LOAD(vrows + (ulong)ph * VROW_BYTES, hv * HEAD_DIM + e) * ksc[2 * KT + c];
        kv[c * KSTRIDE + e] = val;
    }
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void diffattn_prefill(__global const uchar *cache, ulong slot_off, int n_pages, int n_sink,
                      int n_window, int n_ring, long t0, int n,
                      __global const float *q, __global const float *q_sink, float lambda,
                      float out_scale, __global const float *subln, __global float *out,
                      int j0, int n_heads EPS_PARAM)
{
    /* the tile's q (or q_sink) rows: q1 | q2 | pad */
    __local float qs[QT * QSTRIDE] __attribute__((aligned(16)));
    /* k1 or k2, or a V half: [KT][KSTRIDE] */
    __local float kv[KT * KSTRIDE] __attribute__((aligned(16)));
    __local float sp[2][QT][KT];                   /* scores, then weights; then RMS partials */
    __local int slot[KT];                          /* physical slot of each key, -1: none */
    __local float ksc[3 * KT];                     /* q8 scales of k1, k2, v (1 otherwise) */

    const int lid = (int)get_local_id(0);
    const int i = lid / KT, c = lid % KT;
    const int h = j0 * GROUP + (int)get_group_id(0), H = n_heads, j = h / GROUP;
    const int tile = (int)get_num_groups(1) - 1 - (int)get_group_id(1);
    const int r0 = tile * QT;                      /* first query row of the tile */
    const int n_rows = min(QT, n - r0);
    const long t_first = t0 + r0, t_last = t_first + n_rows - 1;
    const long t = t_first + i;                    /* this item's query */
    const int live = i < n_rows;

    const ulong v_off = (ulong)n_pages * KPAGE_BYTES;
    const ulong vscale_off = v_off + ROUND64((ulong)n_pages * KV_PAGE * VROW_BYTES);
    const ulong head_bytes = vscale_off + (KV_TYPE == 2 ? ROUND64((ulong)n_pages * KV_PAGE * 4) : 0);
    __global const uchar *head = cache + slot_off + (ulong)(j - j0) * head_bytes;

    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float acc[2][2][DPT];                          /* [softmax][V half][dim c + u*KT] */
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++)
            for (int u = 0; u < DPT; u++)
                acc[a][b][u] = 0.0f;

    for (int phase = 0; phase < 2; phase++) {      /* 0: sink keys, 1: window keys */
        const long lo = phase == 0 ? 0 : max((long)n_sink, t_first - n_window + 1);
        const long hi = phase == 0 ? min((long)n_sink, t_last + 1) : t_last + 1;
        if (lo >= hi)
            continue;                              /* uniform over the work-group */
        __global const float *src = phase == 0 ? q_sink : q;
        barrier(CLK_LOCAL_MEM_FENCE);              /* the last phase's readers of qs */
        for (int x = lid; x < QT * 2 * HEAD_DIM; x += WG) {
            const int row = x / (2 * HEAD_DIM), e = x % (2 * HEAD_DIM);
            qs[row * QSTRIDE + (e / HEAD_DIM) * D4 + e % HEAD_DIM] =
                row < n_rows ? src[((size_t)(r0 + row) * 2 * H + 2 * h) * HEAD_DIM + e] : 0.0f;
        }

        for (long kb = lo - lo % KT; kb < hi; kb += KT) {
            if (lid < KT) {
                const long s = kb + lid;
                int ph = -1;
                if (s >= lo && s < hi)
                    ph = s < n_sink ? (int)s : n_sink + (int)((s - n_sink) % n_ring);
                slot[lid] = ph;
#if KV_TYPE == 2
                float s1 = 1.0f, s2 = 1.0f, sv = 1.0f;
                if (ph >= 0) {
                    __global const float *sc = (__global const float *)
                        (head + (ulong)(ph / KV_PAGE) * KPAGE_BYTES + 2 * KHALF_BYTES);
                    s1 = sc[ph % KV_PAGE];
                    s2 = sc[KV_PAGE + ph % KV_PAGE];
                    sv = ((__global const float *)(head + vscale_off))[ph];
                }
                ksc[lid] = s1;
                ksc[KT + lid] = s2;
                ksc[2 * KT + lid] = sv;
#else
                ksc[lid] = ksc[KT + lid] = ksc[2 * KT + lid] = 1.0f;
#endif
            }
            barrier(CLK_LOCAL_MEM_FENCE);

            /* scores of key c for row i, both halves */
            float sc[2];
            for (int hf = 0; hf < 2; hf++) {
                stage_k(kv, head, slot, ksc, hf, lid);
                barrier(CLK_LOCAL_MEM_FENCE);
                __local const float *qr = qs + i * QSTRIDE + hf * D4, *kr = kv + c * KSTRIDE;
#if HEAD_DIM % 4 == 0
                /* float4 local reads of the q row (the row's items: one broadcast) and of the
                 * key's row: half the local-memory instructions of a dim at a time */
                float4 s4 = (float4)(0.0f);
#pragma unroll 4   /* all 32 (d = 128) in flight would take ~40 registers more */
                for (int e = 0; e < HEAD_DIM; e += 4)
                    s4 = fma(*(__local const float4 *)(qr + e), *(__local const float4 *)(kr + e), s4);
                sc[hf] = (s4.s0 + s4.s1) + (s4.s2 + s4.s3);
#else
                float s = 0.0f;
                for (int e = 0; e < HEAD_DIM; e++)
                    s = fma(qr[e], kr[e], s);
                sc[hf] = s;
#endif
                barrier(CLK_LOCAL_MEM_FENCE);      /* before kv is rewritten */
            }
            const long tk = kb + c;
            const int vis = live && slot[c] >= 0 && tk <= t && (phase == 0 || tk > t - n_window);
            for (int hf = 0; hf < 2; hf++)
                sp[hf][i][c] = vis ? sc[hf] : -INFINITY;
            barrier(CLK_LOCAL_MEM_FENCE);

            /* online softmax: new row max, rescale factor, this key's weight */
            float alpha[2], p[2];
            for (int hf = 0; hf < 2; hf++) {
                float mx = m[hf];
                for (int k = 0; k < KT; k++)
                    mx = fmax(mx, sp[hf][i][k]);
                alpha[hf] = m[hf] > -INFINITY ? exp(m[hf] - mx) : 0.0f;   /* no NaN from -inf */
                p[hf] = vis ? exp(sc[hf] - mx) : 0.0f;
                m[hf] = mx;
            }
            barrier(CLK_LOCAL_MEM_FENCE);          /* the maxima are read */
            for (int hf = 0; hf < 2; hf++)
                sp[hf][i][c] = p[hf];
            __global const uchar *vrows = head + v_off;
            stage_v(kv, vrows, slot, ksc, 0, lid);
            barrier(CLK_LOCAL_MEM_FENCE);

            for (int hf = 0; hf < 2; hf++) {
                float sum = 0.0f;
                for (int k = 0; k < KT; k++)
                    sum += sp[hf][i][k];
                l[hf] = fma(l[hf], alpha[hf], sum);
                for (int b = 0; b < 2; b++)
                    for (int u = 0; u < DPT; u++)
                        acc[hf][b][u] *= alpha[hf];
            }
            for (int hv = 0; hv < 2; hv++) {
                if (hv == 1) {
                    barrier(CLK_LOCAL_MEM_FENCE);  /* the first half is read */
                    stage_v(kv, vrows, slot, ksc, 1, lid);
                    barrier(CLK_LOCAL_MEM_FENCE);
                }
                for (int u = 0; u < DPT; u++) {
                    const int e = c + u * KT;
                    if (e < HEAD_DIM) {
                        float a1 = acc[0][hv][u], a2 = acc[1][hv][u];
                        for (int k = 0; k < KT; k++) {
                            const float x = kv[k * KSTRIDE + e];
                            a1 = fma(sp[0][i][k], x, a1);
                            a2 = fma(sp[1][i][k], x, a2);
                        }
                        acc[0][hv][u] = a1;
                        acc[1][hv][u] = a2;
                    }
                }
            }
            /* the next tile's first writes (slot, ksc) come after every load of this one; kv and
             * sp are rewritten only after its first barrier */
        }
    }

    /* o1/l1 - lambda * o2/l2, then the RMSNorm over the row's 2d values */
    const float inv1 = live ? 1.0f / l[0] : 0.0f, inv2 = live ? 1.0f / l[1] : 0.0f;
    float y[2][DPT], ss = 0.0f;
    for (int hv = 0; hv < 2; hv++)
        for (int u = 0; u < DPT; u++) {
            y[hv][u] = acc[0][hv][u] * inv1 - lambda * (acc[1][hv][u] * inv2);
            if (c + u * KT < HEAD_DIM)
                ss = fma(y[hv][u], y[hv][u], ss);
        }
    barrier(CLK_LOCAL_MEM_FENCE);                  /* the last tile's readers of sp */
    sp[0][i][c] = ss;
    barrier(CLK_LOCAL_MEM_FENCE);
    float tot = 0.0f;
    for (int k = 0; k < KT; k++)
        tot += sp[0][i][k];
    const float inv = 1.0f / sqrt(tot / (float)(2 * HEAD_DIM) + SUB_EPS) * out_scale;
    if (live) {
        __global float *o = out + ((size_t)(r0 + i) * H + h) * 2 * HEAD_DIM;
        for (int hv = 0; hv < 2; hv++)
            for (int u = 0; u < DPT; u++) {
                const int e = hv * HEAD_DIM + c + u * KT;
                if (c + u * KT < HEAD_DIM)
                    o[e] = y[hv][u] * inv * subln[e];
            }
    }
}
