/* diffattn_decode.cl: tiled flash decoding of differential attention for one new token
 * (DESIGN §1 steps 3-6, §5), reading the paged KV cache of src/kv.h in place, shaped for GPUs:
 * 16-byte loads of the pages, converted in registers, and few local-memory operations per byte.
 *
 * diffattn_decode_split: for KV head j, a block of HEADS of its GROUP query heads, and split s
 *   (a run of whole pages), over the split's visible keys, two online softmaxes per query head
 *   h = j*GROUP + hb*HEADS + g (g < HEADS):
 *     s1 = q[2h] . k1,  s2 = q[2h+1] . k2   (q pre-rotated and pre-scaled by 1/sqrt(d); sink keys
 *                                            use q_sink, rotated at the StreamingLLM position)
 *     m = max s,  l = sum exp(s - m),  o = sum exp(s - m) v   (v: [2d], shared by both halves)
 *   and writes partial[h][s] = { m1, l1, -, -, o1[2d], m2, l2, -, -, o2[2d] } (PART_FLOATS =
 *   8 + 4d floats, 2 more for an odd d: both halves 16-byte aligned for the combine's float4
 *   loads).
 * diffattn_decode_combine: for query head h, merges the splits by log-sum-exp (each split's scale
 *   factor computed once), forms
 *     o = o1/l1 - lambda * o2/l2,  out[h][i] = o[i] / sqrt(mean(o^2) + eps) * subln[i] * out_scale
 *   (out_scale = 1 - lambda_init), out [H][2d] f32.
 *
 * Keys are walked in physical order: softmax does not care about the order of its keys, so a
 * split owns whole pages and no slot table is needed. The slots in use are 0 .. n_used-1,
 * n_used = min(t + 1, n_sink + n_ring); slot ph is visible to the query at stream index t
 * (DESIGN §4, src/kv.h) when it is a sink (ph < n_sink), or when the stream index it holds,
 * t - age with age = ((t - n_sink) - (ph - n_sink)) mod n_ring, is inside the window
 * (age < n_window). `full` policy: n_sink = 0, n_window = n_ring = n_ctx. Split s owns pages
 * [s*split_pages, (s+1)*split_pages) of the ceil(n_used / KV_PAGE) in use; with sinks
 * (n_sink > 0) the launch has one split more, the last, which owns the sink slots and scores them
 * with q_sink, so no other work-group needs q_sink (an empty split writes m = -inf, l = 0, o = 0,
 * which the combine ignores).
 *
 * Arguments (split): cache (the buffer holding head blocks (slot, j0 ..)), slot_off (byte offset
 *   of head block (slot, j0) in it), n_pages (kv_geom.n_pages), n_sink, n_window, n_ring
 *   (kv_geom), t (stream index of the query, cl_long), split_pages (>= 1), q and q_sink [2H][d]
 *   f32, partial [H][n_split][PART_FLOATS], j0 (the first KV head of the launch; KV head
 *   j = j0 + group id 1 / (GROUP / HEADS), head block hb = group id 1 % (GROUP / HEADS)).
 * Arguments (combine): partial, n_split (<= MAX_SPLIT), lambda, out_scale, subln [2d] f32,
 *   out [H][2d] f32.
 *
 * Cache bytes: as kv_append.cl (head block (slot, j) at slot_off + j*head_bytes; K pages of
 * k1 [d][32], k2 [d][32] (+ q8 scales), then V rows [2d] per physical slot, then q8 V scales).
 *
 * Work (split): one work-group of WG_DECODE items per (split = group id 0, KV head x head block
 *   = group id 1). A tile is TILE = WG_DECODE * KPC / 2 consecutive slots (KPC keys per K chunk):
 *   keys:   item (half c = lid / (WG/2), page pt, chunk kc) owns the KPC keys of one K chunk
 *           (KCB bytes of a page row: 16 for f32/f16, 8 for q8) and walks the d dims: one chunk
 *           load per dim, HEADS*KPC scores in registers, the HEADS query values of a dim in one
 *           float4 local read. A warp's loads are whole 64-byte runs of page rows.
 *   softmax: one max reduction per tile (a fan-in-8 tree on float4s: 3 barriers at WG 256) and
 *           the weights p = exp(s - m) to local memory, HEADS float4 stores per item.
 *   values: item (key group kg, chunk vc) owns VCE dims of the V row (VCB = 16 bytes for f32/f16,
 *           8 for q8) and walks the tile's keys 4 at a time: 4 independent row loads, 2*HEADS
 *           float4 local reads of weights, 2*HEADS*VCE*4 FMAs; a warp reads whole V rows.
 *   Every k1, k2, v (and q8 scale) byte of a visible page is read once per head block.
 *   At the end of the split the key groups' accumulators are summed through local memory.
 * Work (combine): one work-group of COMBINE_WG_SIZE items per query head h; item l owns dims
 *   l, l + COMBINE_WG_SIZE, ...; the split scale factors are computed once into local memory.
 * Local memory (split): 16 * (2*(HEAD_DIM+1) [q] + WG*9/8 [reductions]) +
 *   4 * 2*HEADS*TILE [weights] bytes, e.g. 22,736 B at HEADS 3, d 128, f16, WG 256 (TILE 1024);
 *   the host checks it against the device. (combine): 4 * (4 * MAX_SPLIT + COMBINE_WG_SIZE). */

#ifndef HEAD_DIM
#define HEAD_DIM 64          /* d: the dim of one softmax half; V rows have 2d */
#endif
#ifndef GROUP
#define GROUP 1              /* r = query heads per KV head */
#endif
#ifndef HEADS
#define HEADS GROUP          /* query heads of one work-group: divides GROUP, at most 4 */
#endif
#ifndef KV_TYPE
#define KV_TYPE 1            /* cache element: 0 f32, 1 f16, 2 q8 */
#endif
#ifndef WG_DECODE
#define WG_DECODE 128        /* split work-group size (tuning.tsv wg_decode) */
#endif
#define WG WG_DECODE
#ifndef COMBINE_WG_SIZE
#define COMBINE_WG_SIZE 64   /* combine work-group size; a power of two */
#endif
#ifndef MAX_SPLIT
#define MAX_SPLIT 256        /* most splits the combine merges (tuning.tsv max_split) */
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
#if HEADS < 1 || HEADS > 4 || GROUP % HEADS != 0
#error "HEADS must divide GROUP and be at most 4"
#endif
#if WG < 16 || (WG & (WG - 1)) != 0
#error "WG_DECODE must be a power of two >= 16"
#endif
#if COMBINE_WG_SIZE < 1 || (COMBINE_WG_SIZE & (COMBINE_WG_SIZE - 1)) != 0
#error "COMBINE_WG_SIZE must be a power of two"
#endif

#include "kv_layout.h"

/* K and V chunks: the bytes one item loads at once, and the elements they hold */
#if KV_TYPE == 2
#define KCB 8
#define VCB 8
#else
#define KCB 16
#define VCB 16
#endif
#define KPC (KCB / ELEM_BYTES)                    /* keys per K chunk: 4 f32, 8 f16, 8 q8 */
#define CPR (KV_PAGE / KPC)                       /* K chunks per page row */
#define TILE (WG * KPC / 2)                       /* slots per tile: every item one K chunk */
/* V elements per chunk: a K chunk's (4 f32, 8 f16/q8) where it divides the row, else 4 or 2
 * (then loaded element by element: head dims that are not a multiple of 4 are rare) */
#if (2 * HEAD_DIM) % KPC == 0
#define VCE KPC
#elif (2 * HEAD_DIM) % 4 == 0
#define VCE 4
#else
#define VCE 2
#endif
#define VCH (2 * HEAD_DIM / VCE)                  /* V chunks per row */
#define KG (WG >= VCH ? WG / VCH : 1)             /* key groups of the value phase */
#define V_PER ((VCH + WG - 1) / WG)               /* V chunks per item (1 unless WG < VCH) */
#define NROW (2 * HEADS)                          /* softmax rows of a work-group */
#define HALF_FLOATS (4 + (2 * HEAD_DIM + 3) / 4 * 4)   /* m, l, 2 unused, o[2d], padded to 16 B */
#define PART_FLOATS (2 * HALF_FLOATS)
#define FAN 8                                     /* reduction tree fan-in */
#define CVEC ((2 * HEAD_DIM) % 4 == 0 && HEAD_DIM % 2 == 0 ? 4 : 1)   /* combine dims per load */
#define C_PER ((2 * HEAD_DIM / CVEC + COMBINE_WG_SIZE - 1) / COMBINE_WG_SIZE)
#ifndef KUNROLL
#define KUNROLL 4                                 /* K chunk loads in flight per item */
#endif
#ifndef VSTEP
#define VSTEP 2                                   /* V rows loaded together: 1, 2 or 4 */
#endif
/* Where the value sums live between tiles: 1, in local memory (each item its own, touched once a
 * tile), so the key phase keeps no accumulators in registers and more work-groups fit a compute
 * unit; 0, in registers (tuning.tsv acc_local; the backend always passes it). */
#ifndef ACC_IN_LOCAL
#define ACC_IN_LOCAL 0
#endif
#define WT_FLOATS (NROW * TILE > KG * 2 * HEAD_DIM ? NROW * TILE : KG * 2 * HEAD_DIM)
#define WT(r, k) wt[(r) * TILE + (k)]
#if TILE % KV_PAGE != 0
#error "WG_DECODE too small for whole pages per tile"
#endif

/* One K chunk (KPC elements of one page row) from global memory as floats: one wide load, the
 * conversion in registers (a vload_half on global memory would be KPC 2-byte loads). */
static inline void load_kchunk(__global const uchar *p, float *x)
{
#if KV_TYPE == 0
    const float4 v = *(__global const float4 *)p;
    x[0] = v.s0, x[1] = v.s1, x[2] = v.s2, x[3] = v.s3;
#elif KV_TYPE == 1
    const uint4 raw = *(__global const uint4 *)p;
    const float8 v = vload_half8(0, (const __private half *)&raw);
    x[0] = v.s0, x[1] = v.s1, x[2] = v.s2, x[3] = v.s3;
    x[4] = v.s4, x[5] = v.s5, x[6] = v.s6, x[7] = v.s7;
#else
    const float8 v = convert_float8(as_char8(*(__global const uint2 *)p));
    x[0] = v.s0, x[1] = v.s1, x[2] = v.s2, x[3] = v.s3;
    x[4] = v.s4, x[5] = v.s5, x[6] = v.s6, x[7] = v.s7;
#endif
}

/* One V chunk (VCE elements of a V row): as a K chunk when VCE = KPC. */
static inline void load_vchunk(__global const uchar *p, float *x)
{
#if VCE == KPC
    load_kchunk(p, x);
#else
    for (int i = 0; i < VCE; i++)
        x[i] = LOAD(p, i);
#endif
}

/* dot products of the HEADS query rows of half c (q4[e] = their values at dim e) with the KPC
 * keys of one chunk column */
static inline void chunk_scores(__global const uchar *kp, __local const float4 *q4,
                                float sc[HEADS][KPC])
{
    for (int g = 0; g < HEADS; g++)
        for (int i = 0; i < KPC; i++)
            sc[g][i] = 0.0f;
#pragma unroll KUNROLL
    for (int e = 0; e < HEAD_DIM; e++) {
        float x[KPC];
        load_kchunk(kp + (size_t)e * (KV_PAGE * ELEM_BYTES), x);
        const float4 qe = q4[e];
        const float qv[4] = {qe.x, qe.y, qe.z, qe.w};
        for (int g = 0; g < HEADS; g++)
            for (int i = 0; i < KPC; i++)
                sc[g][i] = fma(qv[g], x[i], sc[g][i]);
    }
}

/* Reduces red[0 .. WG) (two halves of WG/2 entries) by fan-in FAN until each half has fewer
 * than 2*FAN entries, ping-ponging with tmp; returns the buffer that holds the n entries left
 * (n/2 per half). Starts and ends with a barrier. */
#define TREE(OP, red, tmp, out_buf, out_n)                                                     \
    do {                                                                                       \
        __local float4 *src_ = (red), *dst_ = (tmp);                                           \
        int n_ = WG;                                                                           \
        barrier(CLK_LOCAL_MEM_FENCE);                                                          \
        while (n_ / 2 >= 2 * FAN) {                                                            \
            const int m_ = n_ / FAN;                                                           \
            if (lid < m_) {                                                                    \
                float4 v_ = src_[lid * FAN];                                                   \
                for (int i_ = 1; i_ < FAN; i_++)                                               \
                    v_ = OP(v_, src_[lid * FAN + i_]);                                         \
                dst_[lid] = v_;                                                                \
            }                                                                                  \
            barrier(CLK_LOCAL_MEM_FENCE);                                                      \
            __local float4 *sw_ = src_;                                                        \
            src_ = dst_, dst_ = sw_, n_ = m_;                                                  \
        }                                                                                      \
        (out_buf) = src_, (out_n) = n_;                                                        \
    } while (0)
#define ADD4(a, b) ((a) + (b))

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void diffattn_decode_split(__global const uchar *restrict cache, ulong slot_off, int n_pages,
                           int n_sink, int n_window, int n_ring, long t, int split_pages,
                           __global const float *restrict q, __global const float *restrict q_sink,
                           __global float *restrict partial, int j0)
{
    __local float4 qs[2][HEAD_DIM + 1];        /* [half][dim]: HEADS query values (+1: banks) */
    __local float4 red[WG], tmp[WG / FAN];     /* reductions */
    __local float wt[WT_FLOATS];               /* the tile's softmax weights [NROW][TILE], row
                                                * c*HEADS + g; at the end, the value sums */

    const int lid = (int)get_local_id(0);
    const int s = (int)get_group_id(0), n_split = (int)get_num_groups(0);
    const int n_blocks = GROUP / HEADS;
    const int j = j0 + (int)get_group_id(1) / n_blocks, hb = (int)get_group_id(1) % n_blocks;
    const int h0 = j * GROUP + hb * HEADS;     /* first query head of the work-group */

    const ulong v_off = (ulong)n_pages * KPAGE_BYTES;
    const ulong vscale_off = v_off + ROUND64((ulong)n_pages * KV_PAGE * VROW_BYTES);
    const ulong head_bytes = vscale_off + (KV_TYPE == 2 ? ROUND64((ulong)n_pages * KV_PAGE * 4) : 0);
    __global const uchar *head = cache + slot_off + (ulong)(j - j0) * head_bytes;

    /* the slots in use, the split's share, the ring index of the query; with sinks the last
     * split is theirs (slots 0 .. n_sink-1, scored with q_sink) and the others skip them */
    const int sink_split = n_sink > 0 && s == n_split - 1;
    const int n_real = n_split - (n_sink > 0);
    const int n_used = (int)min(t + 1, (long)n_sink + n_ring);
    const int pages_used = (n_used + KV_PAGE - 1) / KV_PAGE;
    const int slot0 = sink_split ? 0 : min(s * split_pages, pages_used) * KV_PAGE;
    const int slot1 = sink_split ? min(n_sink, n_used)
                                 : min(min(s + 1, n_real) * split_pages * KV_PAGE, n_used);
    const int rt = t >= n_sink ? (int)((t - n_sink) % n_ring) : 0;

    __global const float *q_src = sink_split ? q_sink : q;
    for (int i = lid; i < 2 * HEADS * HEAD_DIM; i += WG) {
        const int c = i / (HEADS * HEAD_DIM), g = i / HEAD_DIM % HEADS, e = i % HEAD_DIM;
        ((__local float *)&qs[c][e])[g] = q_src[(size_t)(2 * (h0 + g) + c) * HEAD_DIM + e];
    }

    /* the key phase's item: half c, page pt of the tile, chunk kc of the page row */
    const int c = lid / (WG / 2), pt = lid % (WG / 2) / CPR, kc = lid % CPR;
    /* the value phase's item: key group kg, V chunk vc */
    const int kg = lid / VCH < KG ? lid / VCH : KG, vc = lid % VCH;

    float m[NROW], l_part[HEADS];
    for (int r = 0; r < NROW; r++)
        m[r] = -INFINITY;
#if ACC_IN_LOCAL
    __local float acc_l[KG * NROW * 2 * HEAD_DIM];       /* [key group][row][2d] */
#define ACC_L(k, r, e) acc_l[((k) * NROW + (r)) * 2 * HEAD_DIM + (e)]
    if (lid / VCH < KG)
        for (int u = 0; u < V_PER; u++)
            if (vc + u * WG < VCH)
                for (int r = 0; r < NROW; r++)
                    for (int x = 0; x < VCE; x++)
                        ACC_L(kg, r, (vc + u * WG) * VCE + x) = 0.0f;
#else
    float acc[V_PER][NROW][VCE];
    for (int u = 0; u < V_PER; u++)
        for (int r = 0; r < NROW; r++)
            for (int x = 0; x < VCE; x++)
                acc[u][r][x] = 0.0f;
#endif
    for (int g = 0; g < HEADS; g++)
        l_part[g] = 0.0f;

    for (int base = slot0; base < slot1; base += TILE) {   /* uniform over the work-group */
        const int tile_n = min(TILE, slot1 - base);

        /* scores of this item's chunk; -inf for slots past the tile or out of the window */
        float sc[HEADS][KPC];
        const int k0 = base + pt * KV_PAGE + kc * KPC;      /* the chunk's first slot */
        if (k0 < base + tile_n) {
            __global const uchar *pg = head + (ulong)(k0 / KV_PAGE) * KPAGE_BYTES;
            __global const uchar *kp = pg + c * KHALF_BYTES + kc * KCB;
            chunk_scores(kp, qs[c], sc);
#if KV_TYPE == 2
            __global const float *ks = (__global const float *)(pg + 2 * KHALF_BYTES) +
                                       c * KV_PAGE + kc * KPC;
            const float4 ks_lo = vload4(0, ks), ks_hi = vload4(1, ks);
            const float ksc[8] = {ks_lo.x, ks_lo.y, ks_lo.z, ks_lo.w,
                                  ks_hi.x, ks_hi.y, ks_hi.z, ks_hi.w};
            for (int g = 0; g < HEADS; g++)
                for (int i = 0; i < KPC; i++)
                    sc[g][i] *= ksc[i];
#endif
            for (int i = 0; i < KPC; i++) {
                const int ph = k0 + i;
                const int age = ph < n_sink ? 0 : (rt - (ph - n_sink) + n_ring) % n_ring;
                const int visible = ph < base + tile_n &&
                                    (sink_split ? ph < n_sink : ph >= n_sink && age < n_window);
                for (int g = 0; g < HEADS; g++)
                    sc[g][i] = visible ? sc[g][i] : -INFINITY;
            }
        } else {
            for (int g = 0; g < HEADS; g++)
                for (int i = 0; i < KPC; i++)
                    sc[g][i] = -INFINITY;
        }

        /* the tile's max of each row: this item's, then the tree */
        float4 im = (float4)(-INFINITY);
        for (int i = 0; i < KPC; i++) {
            im.x = fmax(im.x, sc[0][i]);
#if HEADS > 1
            im.y = fmax(im.y, sc[1][i]);
#endif
#if HEADS > 2
            im.z = fmax(im.z, sc[2][i]);
#endif
#if HEADS > 3
            im.w = fmax(im.w, sc[3][i]);
#endif
        }
        red[lid] = im;
        __local float4 *left;
        int n_left;
        TREE(fmax, red, tmp, left, n_left);
        float4 tmax[2] = {(float4)(-INFINITY), (float4)(-INFINITY)};
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < n_left / 2; i++)
                tmax[h] = fmax(tmax[h], left[h * (n_left / 2) + i]);

        /* new running maxima, the rescale of the old sums, this item's weights */
        float alpha[NROW];
        for (int r = 0; r < NROW; r++) {
            const float4 tm4 = tmax[r / HEADS];
            const float tv[4] = {tm4.x, tm4.y, tm4.z, tm4.w};
            const float mn = fmax(m[r], tv[r % HEADS]);
            alpha[r] = mn == -INFINITY ? 1.0f : exp(m[r] - mn);
            m[r] = mn;
        }
        /* this item's half: its rows' maxima and rescale factors (selects, not an index by c,
         * which would put m and alpha in private memory) */
        float m_c[HEADS];
        for (int g = 0; g < HEADS; g++) {
            m_c[g] = c ? m[HEADS + g] : m[g];
            l_part[g] *= c ? alpha[HEADS + g] : alpha[g];
        }
        if (k0 < base + tile_n) {
#if KV_TYPE == 2
            __global const float *vs = (__global const float *)(head + vscale_off) + k0;
            const float4 vs_lo = vload4(0, vs), vs_hi = vload4(1, vs);
            const float vsc[8] = {vs_lo.x, vs_lo.y, vs_lo.z, vs_lo.w,
                                  vs_hi.x, vs_hi.y, vs_hi.z, vs_hi.w};
#endif
#pragma unroll
            for (int g = 0; g < HEADS; g++) {
                const int r = c * HEADS + g;
                float p[KPC], sum = 0.0f;
#pragma unroll
                for (int i = 0; i < KPC; i++) {
                    const int masked = sc[g][i] == -INFINITY;    /* m is then finite */
                    p[i] = masked ? 0.0f : exp(sc[g][i] - m_c[g]);
                    sum += p[i];
#if KV_TYPE == 2
                    p[i] = masked ? 0.0f : p[i] * vsc[i];        /* the V row's q8 scale; a
                                                                  * slot not in use may hold NaN */
#endif
                }
                l_part[g] += sum;
                __local float *w = &WT(r, k0 - base);
#if KPC == 4
                vstore4((float4)(p[0], p[1], p[2], p[3]), 0, w);
#else
                vstore4((float4)(p[0], p[1], p[2], p[3]), 0, w);
                vstore4((float4)(p[4], p[5], p[6], p[7]), 1, w);
#endif
            }
        }
#if !ACC_IN_LOCAL
        for (int r = 0; r < NROW; r++)
            for (int u = 0; u < V_PER; u++)
                for (int x = 0; x < VCE; x++)
                    acc[u][r][x] *= alpha[r];
#endif
        barrier(CLK_LOCAL_MEM_FENCE);

        /* values: VSTEP keys a step, their rows' chunks loaded together */
        if (lid / VCH < KG) {
#if ACC_IN_LOCAL
            float acc[V_PER][NROW][VCE];                     /* this tile's sums */
            for (int u = 0; u < V_PER; u++)
                for (int r = 0; r < NROW; r++)
                    for (int x = 0; x < VCE; x++)
                        acc[u][r][x] = 0.0f;
#endif
            for (int kk = VSTEP * kg; kk < tile_n; kk += VSTEP * KG) {
                float wv[NROW][VSTEP];                       /* keys past tile_n weigh 0 */
#pragma unroll
                for (int r = 0; r < NROW; r++) {
#if VSTEP == 4
                    const float4 w = vload4(0, &WT(r, kk));
                    wv[r][0] = w.x, wv[r][1] = w.y, wv[r][2] = w.z, wv[r][3] = w.w;
#elif VSTEP == 2
                    const float2 w = vload2(0, &WT(r, kk));
                    wv[r][0] = w.x, wv[r][1] = w.y;
#else
                    wv[r][0] = WT(r, kk);
#endif
                }
#pragma unroll
                for (int u = 0; u < V_PER; u++) {
                    const int ch = vc + u * WG;
                    if (ch < VCH) {
                        float x[VSTEP][VCE];
#pragma unroll
                        for (int i = 0; i < VSTEP; i++) {
                            if (kk + i < tile_n)
                                load_vchunk(head + v_off + (ulong)(base + kk + i) * VROW_BYTES +
                                            ch * VCE * ELEM_BYTES, x[i]);
                            else
                                for (int e = 0; e < VCE; e++)
                                    x[i][e] = 0.0f;
                        }
#pragma unroll
                        for (int r = 0; r < NROW; r++)
                            for (int i = 0; i < VSTEP; i++)
                                for (int e = 0; e < VCE; e++)
                                    acc[u][r][e] = fma(wv[r][i], x[i][e], acc[u][r][e]);
                    }
                }
            }
#if ACC_IN_LOCAL
            for (int u = 0; u < V_PER; u++)                  /* the item's own: no barrier */
                if (vc + u * WG < VCH)
                    for (int r = 0; r < NROW; r++)
                        for (int x = 0; x < VCE; x++) {
                            __local float *a = &ACC_L(kg, r, (vc + u * WG) * VCE + x);
                            *a = fma(*a, alpha[r], acc[u][r][x]);
                        }
#endif
        }
        barrier(CLK_LOCAL_MEM_FENCE);                      /* before wt and red are rewritten */
    }

    /* the sums: the items' shares of each row (l), then the key groups' accumulators (o) */
    red[lid] = (float4)(l_part[0], HEADS > 1 ? l_part[HEADS > 1 ? 1 : 0] : 0.0f,
                        HEADS > 2 ? l_part[HEADS > 2 ? 2 : 0] : 0.0f,
                        HEADS > 3 ? l_part[HEADS > 3 ? 3 : 0] : 0.0f);
    __local float4 *left;
    int n_left;
    TREE(ADD4, red, tmp, left, n_left);
    if (lid == 0)
        for (int hh = 0; hh < 2; hh++) {
            float4 sum4 = (float4)(0.0f);
            for (int i = 0; i < n_left / 2; i++)
                sum4 += left[hh * (n_left / 2) + i];
            const float sv[4] = {sum4.x, sum4.y, sum4.z, sum4.w};
            for (int g = 0; g < HEADS; g++) {
                __global float *o = partial + ((size_t)(h0 + g) * n_split + s) * PART_FLOATS +
                                    hh * HALF_FLOATS;
                o[0] = m[hh * HEADS + g];
                o[1] = sv[g];
            }
        }
#if ACC_IN_LOCAL
    /* the key groups' sums (the tree's barriers ordered them after every item's last tile) */
    for (int i = lid; i < NROW * 2 * HEAD_DIM; i += WG) {
        const int r = i / (2 * HEAD_DIM), e = i % (2 * HEAD_DIM);
        float v = 0.0f;
        for (int k = 0; k < KG; k++)
            v += ACC_L(k, r, e);
        const int hh = r / HEADS, g = r % HEADS;
        partial[((size_t)(h0 + g) * n_split + s) * PART_FLOATS + hh * HALF_FLOATS + 4 + e] = v;
    }
#else
    /* rows in rounds that fit wt: KG copies of RR rows of 2d floats */
#define RR_FIT (WT_FLOATS / (KG * 2 * HEAD_DIM))
#define RR (RR_FIT > NROW ? NROW : RR_FIT)
    __local float *buf = wt;
#pragma unroll
    for (int r0 = 0; r0 < NROW; r0 += RR) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid / VCH < KG)
            for (int rr = 0; rr < RR && r0 + rr < NROW; rr++)
                for (int u = 0; u < V_PER; u++) {
                    const int ch = vc + u * WG;
                    if (ch < VCH)
                        for (int e = 0; e < VCE; e++)
                            buf[((size_t)kg * RR + rr) * 2 * HEAD_DIM + ch * VCE + e] = acc[u][r0 + rr][e];
                }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int i = lid; i < RR * 2 * HEAD_DIM; i += WG) {
            const int rr = i / (2 * HEAD_DIM), e = i % (2 * HEAD_DIM), r = r0 + rr;
            if (r < NROW) {
                float v = 0.0f;
                for (int k = 0; k < KG; k++)
                    v += buf[((size_t)k * RR + rr) * 2 * HEAD_DIM + e];
                const int hh = r / HEADS, g = r % HEADS;
                partial[((size_t)(h0 + g) * n_split + s) * PART_FLOATS + hh * HALF_FLOATS + 4 + e] = v;
            }
        }
    }
#endif
}

__kernel __attribute__((reqd_work_group_size(COMBINE_WG_SIZE, 1, 1)))
void diffattn_decode_combine(__global const float *restrict partial, int n_split, float lambda,
                             float out_scale, __global const float *restrict subln,
                             __global float *restrict out EPS_PARAM)
{
    __local float ms[2][MAX_SPLIT], ls[2][MAX_SPLIT];      /* each split's m, l; then scales */
    __local float red[COMBINE_WG_SIZE];
    const int lid = (int)get_local_id(0);
    const size_t h = get_group_id(0);
    __global const float *p = partial + h * n_split * PART_FLOATS;

    for (int s = lid; s < n_split; s += COMBINE_WG_SIZE)
        for (int c = 0; c < 2; c++) {   /* {m, l, -, -}: 16-byte aligned (PART_FLOATS, HALF_FLOATS) */
            const float4 ml = *(__global const float4 *)(p + s * PART_FLOATS + c * HALF_FLOATS);
            ms[c][s] = ml.x;
            ls[c][s] = ml.y;
        }
    barrier(CLK_LOCAL_MEM_FENCE);
    float mx[2] = {-INFINITY, -INFINITY};
    for (int s = 0; s < n_split; s++)
        for (int c = 0; c < 2; c++)
            mx[c] = fmax(mx[c], ms[c][s]);
    float sum[2] = {0.0f, 0.0f};
    for (int s = 0; s < n_split; s++)
        for (int c = 0; c < 2; c++)
            sum[c] = fma(ls[c][s], exp(ms[c][s] - mx[c]), sum[c]);   /* empty split: 0 * 0 */
    barrier(CLK_LOCAL_MEM_FENCE);
    /* each split's scale exp(m - mx) / sum, once */
    for (int s = lid; s < n_split; s += COMBINE_WG_SIZE)
        for (int c = 0; c < 2; c++)
            ms[c][s] = exp(ms[c][s] - mx[c]) / sum[c];
    barrier(CLK_LOCAL_MEM_FENCE);

    /* item lid owns CVEC consecutive dims per step: float4 loads of the split states */
    float y[C_PER][CVEC], ss = 0.0f;
    for (int u = 0; u < C_PER; u++) {
        const int e = (lid + u * COMBINE_WG_SIZE) * CVEC;
        for (int x = 0; x < CVEC; x++)
            y[u][x] = 0.0f;
        if (e < 2 * HEAD_DIM) {
            float o[2][CVEC];
            for (int c = 0; c < 2; c++)
                for (int x = 0; x < CVEC; x++)
                    o[c][x] = 0.0f;
            for (int s = 0; s < n_split; s++)
                for (int c = 0; c < 2; c++) {
                    __global const float *ps = p + s * PART_FLOATS + c * HALF_FLOATS + 4 + e;
                    const float sc = ms[c][s];
#if CVEC == 4
                    const float4 v = *(__global const float4 *)ps;   /* 16-byte aligned: d even */
                    o[c][0] = fma(v.x, sc, o[c][0]), o[c][1] = fma(v.y, sc, o[c][1]);
                    o[c][2] = fma(v.z, sc, o[c][2]), o[c][3] = fma(v.w, sc, o[c][3]);
#else
                    o[c][0] = fma(ps[0], sc, o[c][0]);
#endif
                }
            for (int x = 0; x < CVEC; x++) {
                y[u][x] = o[0][x] - lambda * o[1][x];
                ss = fma(y[u][x], y[u][x], ss);
            }
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
        const int e = (lid + u * COMBINE_WG_SIZE) * CVEC;
        if (e < 2 * HEAD_DIM) {
#if CVEC == 4
            const float4 w = *(__global const float4 *)(subln + e);
            const float wv[4] = {w.x, w.y, w.z, w.w};
#else
            const float wv[1] = {subln[e]};
#endif
            for (int x = 0; x < CVEC; x++)
                out[h * 2 * HEAD_DIM + e + x] = y[u][x] * inv * wv[x];
        }
    }
}
