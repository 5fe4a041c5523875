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
 * Work: one work-group of WG = QT * KT / 8 items (QT = PREFILL_QT query rows, a multiple of 4;
 *   KT = PREFILL_KT keys per key tile, a multiple of 16; default 16 x 64: 128 items) per (query
 *   head h = j0*GROUP + group id 0, query tile = group id 1); global size (heads of the launch *
 *   WG, ceil(n / QT)), local size (WG, 1). Tiles run heaviest (latest) first: group id 1 = g
 *   takes rows of tile ceil(n/QT) - 1 - g. Per query head, not per KV head: the work-group, the
 *   registers and the local memory are then the same for every GROUP, and the GROUP heads of one
 *   KV head are adjacent in group id 0, so they stream the same key tiles at about the same time
 *   and the r-fold re-read is served by L2.
 *   Register blocking, as a flash-attention-2 kernel without tensor cores: every item has two
 *   roles, each over 4 query rows:
 *   - score item (half sh, rows 4sr..4sr+3, keys sk + u*KT/4, u < 4): a 4 x 4 micro-tile of one
 *     half's scores; per float4 of dims it reads 4 k and 4 q float4s from local memory for 64
 *     fmas (8 fmas per ld.shared; the old one-score-per-item kernel did 2). It also keeps the
 *     running max m and its own partial sum l of its 4 rows (all KT/4 items of a row compute the
 *     same m; the l parts are added once at the end), and exps its own 16 scores;
 *   - P.V item (rows 4pr..4pr+3, V float4 groups pc + g*KT/2, g < GPI = ceil(D4 / KT)): both
 *     softmaxes' accumulators of 4 rows x 4*GPI dims (64 floats at d = 128, KT = 64); per key it
 *     reads the 4 rows' weights of each half (2 float4 broadcasts) and GPI V float4s (adjacent
 *     items, adjacent float4s) for 32*GPI fmas (16 per ld.shared at d = 128). The rescale by
 *     alpha is applied once per tile.
 *   Keys are walked in two phases, sinks [0, min(n_sink, t_last+1)) with q_sink, then the window
 *   [max(n_sink, t_first - n_window + 1), t_last] with q; window tiles start at the stream index
 *   whose physical slot is a multiple of 8, so 8-slot runs of a page row are 16-byte aligned
 *   until the ring wraps (a run that wraps or is partly outside the phase's range is loaded one
 *   slot at a time; with the full policy every run but the last tile's is whole). The physical
 *   slot of a tile's keys: one modulo per tile, then pa + offset, less n_ring past the ring's end
 *   (a tile's visible keys span at most n_ring stream indices).
 *   Per key tile (barriers: 2 per dim chunk, 2 for the softmax, 2 per V chunk: 18 per 64 keys at
 *   d = 128, against 36 for four 16-key tiles of the old kernel; every barrier sits outside any
 *   branch: PoCL replicates the code around a conditional one, and compiled 4x longer):
 *     for each chunk of EC = min(32, d4) dims: stage q1|q2 of the tile's rows [2][QT][EC+4]
 *       (float4 loads when d % 4 == 0) and k1|k2 [2][KT][EC+4] (per 8-slot run of a page row
 *       one 16-byte load for f16, two for f32, an 8-byte one for q8; adjacent items, adjacent
 *       runs; converted in registers, q8 scales applied; key k's row at k*(EC+4) + (k/8)*4, so
 *       the transposed stores of 8 runs and the score items' float4 reads are both free of bank
 *       conflicts); barrier; accumulate the micro-tiles; barrier;
 *     mask (row live, key in range, causal, window), row-max parts [2][QT][KT/4] to local
 *       memory; barrier; each score item reads its rows' KT/4 parts, takes the new max,
 *       alpha = exp(m_old - m_new) (0 from -inf), its weights p = exp(s - m), writes them as
 *       [2][KT][QT] (4 rows of a key: one float4) and alpha [2][QT]; V chunk 0 is staged;
 *       barrier;
 *     P.V over V chunks of KC keys ([KC][2 d4 + 4], 16-byte loads of 8 elements of a row when
 *       d % 4 == 0, dequantized; zeros outside the range: V slots may hold anything), each
 *       followed by a barrier, the next chunk's staging and a barrier.
 *   End: the l parts are summed per row, y = o1/l1 - lambda o2/l2, the sum of squares of a row
 *   from its KT/2 items through local memory, then the RMSNorm and the store.
 *   Every k1, k2, v (and q8 scale) byte of a key tile is read once per work-group; the tile's q
 *   chunks are re-read (from L1/L2) per key tile, which keeps the whole q block out of local
 *   memory: q at f32 for 16 rows is 16.6 KiB at d = 128, and the 32 KiB budget goes to 64-key
 *   tiles instead (fewer barriers, the 4 x 4 score micro-tile).
 * Registers (sm_90, libclc + ptxas, d = 128, GROUP 3, f16: tools/cl_offline_check.sh --emit):
 *   228 with no cap and 0 spills (ptxas uses what it is given); spill-free from a 168-register
 *   cap, 132 bytes of spills at 128. The persistent state is 64 accumulators + 8 (m, l), 16 scores
 *   in the score phase, the rest addresses and loop bounds (offsets from the tile's first key are
 *   ints: that and stores inside the branches of the staging loops took the need from ~208 to
 *   168). A 128-item group of up to 255 registers still leaves 2 groups per SM (3 at <= 168).
 *   gfx90a (same variant): 194 VGPRs, no scratch. Not measured on a GPU. On PoCL (CPU), fewer,
 *   fatter items win: the pocl-cpu row runs 16 x 16 (32 items, 4 rows x 32 V dims each at
 *   d = 128), 3-30% faster than 16 x 64 there, and both 1.6-2.2x faster than the old kernel.
 * Local memory (d4 = d rounded up to a multiple of 4, EC = min(32, d4), KH = KT*(EC+4) + KT/2,
 *   VS = 2 d4 + 4, KC = 16 if 16 VS <= 2 KH, else 8):
 *   4 * (max(2 QT (EC+4), QT KT/2 + 2 QT) + max(2 KH, KC VS) + 2 KT QT) bytes
 *   = 31,488 B at QT = 16, KT = 64 for every d from 32 to 256 (the k chunk dominates),
 *   25,088 B at QT = 8, KT = 64; kept within the 32 KiB OpenCL 1.2 minimum by the #error below. */

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
#define PREFILL_QT 16        /* query rows per work-group (a multiple of 4) */
#endif
#ifndef PREFILL_KT
#define PREFILL_KT 64        /* keys per key tile (a multiple of 16); work-group QT * KT / 8 */
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
#if PREFILL_QT < 4 || PREFILL_QT % 4 != 0 || PREFILL_KT < 16 || PREFILL_KT % 16 != 0
#error "PREFILL_QT must be a positive multiple of 4 and PREFILL_KT a positive multiple of 16"
#endif
#if PREFILL_QT * PREFILL_KT / 8 > 1024
#error "PREFILL_QT * PREFILL_KT / 8 (the work-group size) exceeds 1024"
#endif

#include "kv_layout.h"

#define QT PREFILL_QT
#define KT PREFILL_KT
#define WG (QT * KT / 8)
#define D4 ((HEAD_DIM + 3) / 4 * 4)          /* HEAD_DIM rounded up to whole float4s */
#define EC (D4 < 32 ? D4 : 32)               /* dims of one K chunk (per half) */
#define NE ((HEAD_DIM + EC - 1) / EC)        /* K chunks per key tile */
#define CS (EC + 4)                          /* staged q / k chunk row: padded by a float4 */
#define KOFF(k) ((k) * CS + ((k) >> 3) * 4)  /* staged key k's row: a float4 more every 8 keys */
#define KHALF KOFF(KT)                       /* floats of one staged K half chunk */
#define VS (2 * D4 + 4)                      /* staged V row: v1 | v2 | pad, whole float4s */
#define KC (16 * VS <= 2 * KHALF ? 16 : 8)   /* keys per staged V chunk: fits the K chunk's room */
#define NKG (KT / 4)                         /* score items per (half, row group) */
#define NCOL (KT / 2)                        /* P.V items per row group */
#define NG (D4 / 2)                          /* float4 groups of a staged V row (2 * D4 / 4) */
#define GPI ((NG + NCOL - 1) / NCOL)         /* float4 groups of V dims per P.V item */
#define MAXI(a, b) ((a) > (b) ? (a) : (b))
#define QREG MAXI(2 * QT * CS, QT * KT / 2 + 2 * QT)   /* q chunk; row maxima, alpha, l, ss */
#define KVREG MAXI(2 * KHALF, KC * VS)                 /* k1 | k2 chunk, or a V chunk */
#define PREG (2 * KT * QT)                             /* weights [2][KT][QT] */
#if 4 * (QREG + KVREG + PREG) > 32768
#error "local memory of diffattn_prefill exceeds 32 KiB: lower PREFILL_QT or PREFILL_KT"
#endif

/* 8 consecutive cache elements as floats, from 16-byte (f32, f16) or 8-byte (q8) aligned p: wide
 * loads, converted in registers (vload_half8 on global memory would be eight 2-byte loads) */
static inline float8 load8(__global const uchar *p)
{
#if KV_TYPE == 0
    return (float8)(*(__global const float4 *)p, *(__global const float4 *)(p + 16));
#elif KV_TYPE == 1
    const uint4 raw = *(__global const uint4 *)p;
    return vload_half8(0, (const __private half *)&raw);
#else
    return convert_float8(as_char8(*(__global const uint2 *)p));
#endif
}

/* Stage the tile's keys o0 .. o0 + KC-1 (offsets from the tile's first stream index) as V rows
 * [KC][VS] f32 (v1 at 0, v2 at D4, padding zero), dequantized; keys outside [ia, ib) are zeros
 * (their slots may hold anything). Physical slot of key o: pa + (o - ia), less n_ring from
 * pend = n_sink + n_ring on. */
static void stage_v(__local float *kv, __global const uchar *vrows, __global const uchar *vscale,
                    int o0, int ia, int ib, int pa, int pend, int n_ring, int lid)
{
#if KV_TYPE != 2
    (void)vscale;
#endif
#if HEAD_DIM % 4 == 0
    /* runs of 8 elements of a row (16 bytes for f16): adjacent items, adjacent runs */
#pragma unroll 1
    for (int x = lid; x < KC * (HEAD_DIM / 4); x += WG) {
        const int k = x / (HEAD_DIM / 4), e = x % (HEAD_DIM / 4) * 8;
        const int o = o0 + k;
        __local float *dst = kv + k * VS + e;
        if (o >= ia && o < ib) {
            int p = pa + (o - ia);
            p -= p >= pend ? n_ring : 0;
            float8 w = load8(vrows + (ulong)p * VROW_BYTES + (ulong)e * ELEM_BYTES);
#if KV_TYPE == 2
            w *= ((__global const float *)vscale)[p];
#endif
            *(__local float4 *)dst = w.lo;
            *(__local float4 *)(dst + 4) = w.hi;
        } else {
            *(__local float4 *)dst = (float4)(0.0f);
            *(__local float4 *)(dst + 4) = (float4)(0.0f);
        }
    }
#else
#pragma unroll 1
    for (int x = lid; x < KC * 2 * D4; x += WG) {
        const int k = x / (2 * D4), hv = x % (2 * D4) / D4, e = x % D4;
        const int o = o0 + k;
        float val = 0.0f;
        if (e < HEAD_DIM && o >= ia && o < ib) {
            int p = pa + (o - ia);
            p -= p >= pend ? n_ring : 0;
            val = LOAD(vrows + (ulong)p * VROW_BYTES, hv * HEAD_DIM + e);
#if KV_TYPE == 2
            val *= ((__global const float *)vscale)[p];
#endif
        }
        kv[k * VS + hv * D4 + e] = val;
    }
#endif
}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void diffattn_prefill(__global const uchar *cache, ulong slot_off, int n_pages, int n_sink,
                      int n_window, int n_ring, long t0, int n,
                      __global const float *q, __global const float *q_sink, float lambda,
                      float out_scale, __global const float *subln, __global float *out,
                      int j0, int n_heads EPS_PARAM)
{
    /* q chunk [2][QT][CS]; then row maxima [2][QT][NKG] and alpha [2][QT]; at the end l parts */
    __local float qs[QREG] __attribute__((aligned(16)));
    /* k1 | k2 chunk, [2][KHALF] (key k at KOFF(k)); or a V chunk [KC][VS] */
    __local float kv[KVREG] __attribute__((aligned(16)));
    /* scores' weights [2][KT][QT] (4 rows of a key: one float4); at the end ss parts [QT][NCOL] */
    __local float pw[PREG] __attribute__((aligned(16)));

    const int lid = (int)get_local_id(0);
    /* score role: half sh, rows 4 sr .. 4 sr + 3, keys sk + u * NKG (u < 4) */
    const int sh = lid / (WG / 2), sr = lid % (WG / 2) / NKG, sk = lid % NKG;
    /* P.V role: rows 4 pr .. 4 pr + 3, V float4 groups pc + g * NCOL (g < GPI) */
    const int pr = lid / NCOL, pc = lid % NCOL;
    const int h = j0 * GROUP + (int)get_group_id(0), H = n_heads, j = h / GROUP;
    const int tile = (int)get_num_groups(1) - 1 - (int)get_group_id(1);
    const int r0 = tile * QT;                      /* first query row of the tile */
    const int n_rows = min(QT, n - r0);
    const long t_first = t0 + r0, t_last = t_first + n_rows - 1;

    const ulong v_off = (ulong)n_pages * KPAGE_BYTES;
    const ulong vscale_off = v_off + ROUND64((ulong)n_pages * KV_PAGE * VROW_BYTES);
    const ulong head_bytes = vscale_off + (KV_TYPE == 2 ? ROUND64((ulong)n_pages * KV_PAGE * 4) : 0);
    __global const uchar *head = cache + slot_off + (ulong)(j - j0) * head_bytes;
    __global const uchar *vrows = head + v_off;

    float m[4], lp[4];                             /* score role: running max, partial sums */
    float4 acc[2][4][GPI];                         /* P.V role: [softmax][row][group] */
    for (int i = 0; i < 4; i++) {
        m[i] = -INFINITY, lp[i] = 0.0f;
        for (int g = 0; g < GPI; g++)
            acc[0][i][g] = acc[1][i][g] = (float4)(0.0f);
    }

    for (int phase = 0; phase < 2; phase++) {      /* 0: sink keys, 1: window keys */
        const long lo = phase == 0 ? 0 : max((long)n_sink, t_first - n_window + 1);
        const long hi = phase == 0 ? min((long)n_sink, t_last + 1) : t_last + 1;
        if (lo >= hi)
            continue;                              /* uniform over the work-group */
        __global const float *src = phase == 0 ? q_sink : q;
        /* window tiles start where the physical slot is a multiple of 8, so whole 8-slot runs
         * of a page row are 16-byte aligned (the sink slots are their stream indices) */
        const long lo_phys = lo < n_sink ? lo : n_sink + (lo - n_sink) % n_ring;
        for (long kb = lo - (lo_phys & 7); kb < hi; kb += KT) {
            /* the tile's visible range [sa, sb) holds at most n_ring keys, so its physical slots
             * run from pa = phys(sa) up, wrapping at most once */
            const long sa = max(kb, lo), sb = min(kb + KT, hi);
            const int pa = sa < n_sink ? (int)sa : n_sink + (int)((sa - n_sink) % n_ring);
            /* from here on keys are offsets o in [0, KT) from kb (ints: fewer registers than
             * stream indices); in range: o in [ia, ib) */
            const int ia = (int)(sa - kb), ib = (int)(sb - kb);
            const int pend = n_sink + n_ring;

            /* ---- scores: S_c = q_c . k_c over NE chunks of EC dims, both halves ---- */
            float s[4][4];
            for (int i = 0; i < 4; i++)
                for (int u = 0; u < 4; u++)
                    s[i][u] = 0.0f;
#pragma unroll 1   /* loops with barriers stay loops (PoCL compile time: 4x the code otherwise) */
            for (int ch = 0; ch < NE; ch++) {
                const int e0 = ch * EC;
                /* q chunk: [2][QT][CS] */
#if HEAD_DIM % 4 == 0
                for (int x = lid; x < 2 * QT * (EC / 4); x += WG) {
                    const int hf = x / (QT * (EC / 4)), row = x / (EC / 4) % QT, e = x % (EC / 4) * 4;
                    __local float4 *dst = (__local float4 *)(qs + (hf * QT + row) * CS + e);
                    if (row < n_rows && e0 + e < HEAD_DIM)
                        *dst = *(__global const float4 *)(src + ((size_t)(r0 + row) * 2 * H + 2 * h + hf) * HEAD_DIM + e0 + e);
                    else
                        *dst = (float4)(0.0f);
                }
#else
                for (int x = lid; x < 2 * QT * EC; x += WG) {
                    const int hf = x / (QT * EC), row = x / EC % QT, e = x % EC;
                    float val = 0.0f;
                    if (row < n_rows && e0 + e < HEAD_DIM)
                        val = src[((size_t)(r0 + row) * 2 * H + 2 * h + hf) * HEAD_DIM + e0 + e];
                    qs[(hf * QT + row) * CS + e] = val;
                }
#endif
                /* k chunk: runs of 8 slots of one page row (one 16-byte load for f16) to keys
                 * 8g .. 8g+7 of dim e; adjacent items take adjacent runs */
#pragma unroll 1   /* code size (PoCL compile time); the loads of one run are wide */
                for (int x = lid; x < 2 * EC * (KT / 8); x += WG) {
                    const int g = x % (KT / 8), e = x / (KT / 8) % EC, hf = x / (EC * (KT / 8));
                    __local float *dst = kv + hf * KHALF + KOFF(8 * g) + e;
                    const int o0 = 8 * g;
                    int p0 = pa + (o0 - ia);
                    p0 -= p0 >= pend ? n_ring : 0;
                    if (e0 + e < HEAD_DIM && o0 >= ia && o0 + 8 <= ib && (p0 & 7) == 0 && p0 + 8 <= pend) {
                        __global const uchar *pg = head + (ulong)(p0 / KV_PAGE) * KPAGE_BYTES;
                        float8 w = load8(pg + hf * KHALF_BYTES + (e0 + e) * KV_PAGE * ELEM_BYTES
                                         + p0 % KV_PAGE * ELEM_BYTES);
#if KV_TYPE == 2
                        __global const float *sc = (__global const float *)(pg + 2 * KHALF_BYTES)
                                                   + hf * KV_PAGE + p0 % KV_PAGE;
                        w *= (float8)(*(__global const float4 *)sc, *(__global const float4 *)(sc + 4));
#endif
                        dst[0] = w.s0, dst[CS] = w.s1, dst[2 * CS] = w.s2, dst[3 * CS] = w.s3;
                        dst[4 * CS] = w.s4, dst[5 * CS] = w.s5, dst[6 * CS] = w.s6, dst[7 * CS] = w.s7;
                    } else {
                        /* a run that wraps, is misaligned or partly outside [ia, ib): slot by
                         * slot (zeros outside: those slots may hold anything) */
#pragma unroll 1
                        for (int i = 0; i < 8; i++) {
                            const int o = o0 + i;
                            float val = 0.0f;
                            if (e0 + e < HEAD_DIM && o >= ia && o < ib) {
                                int p = pa + (o - ia);
                                p -= p >= pend ? n_ring : 0;
                                __global const uchar *pg = head + (ulong)(p / KV_PAGE) * KPAGE_BYTES;
                                val = LOAD(pg + hf * KHALF_BYTES, (e0 + e) * KV_PAGE + p % KV_PAGE);
#if KV_TYPE == 2
                                val *= ((__global const float *)(pg + 2 * KHALF_BYTES))[hf * KV_PAGE + p % KV_PAGE];
#endif
                            }
                            dst[i * CS] = val;
                        }
                    }
                }
                barrier(CLK_LOCAL_MEM_FENCE);

                /* the 4 x 4 micro-tile: per float4 of dims, 4 q and 4 k float4 reads, 64 fmas */
                __local const float *qr = qs + (sh * QT + 4 * sr) * CS;
                __local const float *kr = kv + sh * KHALF;
                const int ko0 = KOFF(sk), ko1 = KOFF(sk + NKG), ko2 = KOFF(sk + 2 * NKG),
                          ko3 = KOFF(sk + 3 * NKG);
#pragma unroll 1
                for (int e = 0; e < EC; e += 4) {
                    float4 kw[4];
                    kw[0] = *(__local const float4 *)(kr + ko0 + e);
                    kw[1] = *(__local const float4 *)(kr + ko1 + e);
                    kw[2] = *(__local const float4 *)(kr + ko2 + e);
                    kw[3] = *(__local const float4 *)(kr + ko3 + e);
                    for (int i = 0; i < 4; i++) {
                        const float4 qv = *(__local const float4 *)(qr + i * CS + e);
                        for (int u = 0; u < 4; u++) {
                            float a = s[i][u];
                            a = fma(qv.s0, kw[u].s0, a);
                            a = fma(qv.s1, kw[u].s1, a);
                            a = fma(qv.s2, kw[u].s2, a);
                            a = fma(qv.s3, kw[u].s3, a);
                            s[i][u] = a;
                        }
                    }
                }
                barrier(CLK_LOCAL_MEM_FENCE);      /* the chunk is read */
            }

            /* ---- online softmax: mask, row maxima through local memory, weights ---- */
            __local float *rmax = qs, *alph = qs + QT * KT / 2;
            for (int i = 0; i < 4; i++) {
                const int row = 4 * sr + i;
                /* key o is causal for row t if o <= t - kb, in the window if o > t - kb - n_window
                 * (both clamped to [-1, KT]: o is in [0, KT)) */
                const long dt = t_first + row - kb;
                const int oc = (int)clamp(dt, -1L, (long)KT);
                const int ow = phase == 0 ? -1 : (int)clamp(dt - n_window, -1L, (long)KT);
                float mx = -INFINITY;
                for (int u = 0; u < 4; u++) {
                    const int o = sk + u * NKG;
                    const int vis = row < n_rows && o >= ia && o < ib && o <= oc && o > ow;
                    s[i][u] = vis ? s[i][u] : -INFINITY;
                    mx = fmax(mx, s[i][u]);
                }
                rmax[(sh * QT + row) * NKG + sk] = mx;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            for (int i = 0; i < 4; i++) {
                const int row = 4 * sr + i;
                float mx = m[i];
                __local const float *rm = rmax + (sh * QT + row) * NKG;
                for (int k = 0; k < NKG; k += 4) {
                    const float4 r4 = *(__local const float4 *)(rm + k);
                    mx = fmax(mx, fmax(fmax(r4.s0, r4.s1), fmax(r4.s2, r4.s3)));
                }
                const float a = m[i] > -INFINITY ? exp(m[i] - mx) : 0.0f;   /* no NaN from -inf */
                float sum = 0.0f;
                for (int u = 0; u < 4; u++) {
                    const float p = s[i][u] > -INFINITY ? exp(s[i][u] - mx) : 0.0f;
                    s[i][u] = p;
                    sum += p;
                }
                lp[i] = fma(lp[i], a, sum);
                m[i] = mx;
                if (sk == 0)
                    alph[sh * QT + row] = a;
            }
            for (int u = 0; u < 4; u++)
                *(__local float4 *)(pw + (sh * KT + sk + u * NKG) * QT + 4 * sr) =
                    (float4)(s[0][u], s[1][u], s[2][u], s[3][u]);
            /* V chunk 0 goes in now, the scores dead: the k chunk's room is free since the
             * chunks' last barrier */
            stage_v(kv, vrows, head + vscale_off, 0, ia, ib, pa, pend, n_ring, lid);
            barrier(CLK_LOCAL_MEM_FENCE);

            /* ---- P.V: rescale once, then 4 rows x 4 GPI dims x 2 softmaxes per item ---- */
            {
                const float4 a1 = *(__local const float4 *)(alph + 4 * pr);
                const float4 a2 = *(__local const float4 *)(alph + QT + 4 * pr);
                const float a1s[4] = {a1.s0, a1.s1, a1.s2, a1.s3}, a2s[4] = {a2.s0, a2.s1, a2.s2, a2.s3};
                for (int i = 0; i < 4; i++)
                    for (int g = 0; g < GPI; g++) {
                        acc[0][i][g] *= a1s[i];
                        acc[1][i][g] *= a2s[i];
                    }
            }
#pragma unroll 1
            for (int kc = 0; kc < KT; kc += KC) {
                __local const float *p1 = pw + kc * QT + 4 * pr, *p2 = pw + (KT + kc) * QT + 4 * pr;
#pragma unroll 2
                for (int k = 0; k < KC; k++) {
                    const float4 w1 = *(__local const float4 *)(p1 + k * QT);
                    const float4 w2 = *(__local const float4 *)(p2 + k * QT);
                    const float w1s[4] = {w1.s0, w1.s1, w1.s2, w1.s3}, w2s[4] = {w2.s0, w2.s1, w2.s2, w2.s3};
                    for (int g = 0; g < GPI; g++) {
                        const int col = pc + g * NCOL;
                        if (NG % NCOL == 0 || col < NG) {
                            const float4 x = *(__local const float4 *)(kv + k * VS + 4 * col);
                            for (int i = 0; i < 4; i++) {
                                acc[0][i][g] = fma((float4)(w1s[i]), x, acc[0][i][g]);
                                acc[1][i][g] = fma((float4)(w2s[i]), x, acc[1][i][g]);
                            }
                        }
                    }
                }
                /* barriers outside ifs: PoCL replicates the code around a conditional one */
                barrier(CLK_LOCAL_MEM_FENCE);      /* the V chunk is read (the last: the tile) */
                if (kc + KC < KT)
                    stage_v(kv, vrows, head + vscale_off, kc + KC, ia, ib, pa, pend, n_ring, lid);
                barrier(CLK_LOCAL_MEM_FENCE);
            }
        }
    }

    /* o1/l1 - lambda * o2/l2, then the RMSNorm over the row's 2d values */
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int i = 0; i < 4; i++)
        qs[(sh * QT + 4 * sr + i) * NKG + sk] = lp[i];
    barrier(CLK_LOCAL_MEM_FENCE);
    float inv1[4], inv2[4], ss[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int row = 4 * pr + i;
        float l1 = 0.0f, l2 = 0.0f;
        for (int k = 0; k < NKG; k++) {
            l1 += qs[row * NKG + k];
            l2 += qs[(QT + row) * NKG + k];
        }
        inv1[i] = row < n_rows ? 1.0f / l1 : 0.0f;
        inv2[i] = row < n_rows ? 1.0f / l2 : 0.0f;
        ss[i] = 0.0f;
        for (int g = 0; g < GPI; g++) {
            const int col = pc + g * NCOL;
            /* the dims of group col: half col / (D4 / 4), e = 4 col % D4 + 0..3 */
            const float4 y = acc[0][i][g] * inv1[i] - lambda * (acc[1][i][g] * inv2[i]);
            acc[0][i][g] = y;
            if (col < NG) {
                const int e = 4 * col % D4;
                ss[i] = fma(y.s0, y.s0, ss[i]);
                if (e + 1 < HEAD_DIM) ss[i] = fma(y.s1, y.s1, ss[i]);
                if (e + 2 < HEAD_DIM) ss[i] = fma(y.s2, y.s2, ss[i]);
                if (e + 3 < HEAD_DIM) ss[i] = fma(y.s3, y.s3, ss[i]);
            }
        }
        pw[row * NCOL + pc] = ss[i];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float inv[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int row = 4 * pr + i;
        float tot = 0.0f;
        for (int c = 0; c < NCOL; c++)
            tot += pw[row * NCOL + c];
        inv[i] = 1.0f / sqrt(tot / (float)(2 * HEAD_DIM) + SUB_EPS) * out_scale;
    }
    for (int g = 0; g < GPI; g++) {
        const int col = pc + g * NCOL;
        if (col >= NG)
            continue;
        const int hv = 4 * col / D4, e = 4 * col % D4;   /* a group never straddles the halves */
#if HEAD_DIM % 4 == 0
        const float4 sub = *(__global const float4 *)(subln + hv * HEAD_DIM + e);
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (4 * pr + i < n_rows)
                *(__global float4 *)(out + ((size_t)(r0 + 4 * pr + i) * H + h) * 2 * HEAD_DIM
                                     + hv * HEAD_DIM + e) = acc[0][i][g] * inv[i] * sub;
#else
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float4 y = acc[0][i][g] * inv[i];
            const float ys[4] = {y.s0, y.s1, y.s2, y.s3};
            __global float *o = out + ((size_t)(r0 + 4 * pr + i) * H + h) * 2 * HEAD_DIM + hv * HEAD_DIM;
            for (int c = 0; c < 4; c++)
                if (4 * pr + i < n_rows && e + c < HEAD_DIM)
                    o[e + c] = ys[c] * subln[hv * HEAD_DIM + e + c];
        }
#endif
    }
}
