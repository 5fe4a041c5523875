/* kv_append.cl: store one token's keys and values into the paged KV cache (DESIGN §4), converting
 * to the cache element type KV_TYPE (0 f32, 1 f16 through vstore_half_rte, 2 q8).
 *
 *   for every KV head j < Hkv, at physical slot ph of stream index t
 *   (ph = t < n_sink ? t : n_sink + (t - n_sink) % n_ring):
 *     k1 = k[2j][0..d), k2 = k[2j+1][0..d)  ->  K page ph/32, column ph%32 of its k1 / k2 rows
 *     v  = v[j][0..2d)                      ->  V row ph
 *   q8: scale = absmax(row)/127 (1 for an all-zero row), element = rint(x * (1/scale)) as int8;
 *       the scale goes to k1_scale[ph%32] / k2_scale[ph%32] of the page, or v_scale[ph].
 *
 * Byte layout (same as src/kv.h / kv.c, KV_PAGE = 32, elem = 4/2/1, q8 = KV_TYPE == 2):
 *   head block of (slot, j) at slot_off + j * head_bytes; inside it
 *     K page pg at pg * KPAGE_BYTES: k1 [d][32], k2 [d][32], q8: k1_scale[32], k2_scale[32] f32
 *       KPAGE_BYTES = round_up(2*d*32*elem + (q8 ? 256 : 0), 64)
 *     V rows at v_off = n_pages * KPAGE_BYTES, [2d] elements per physical position
 *     q8: v_scale [n_pages*32] f32 at vscale_off = v_off + round_up(n_pages*32*2d*elem, 64)
 *     head_bytes = vscale_off + (q8 ? round_up(n_pages*32*4, 64) : 0)
 *   slot_off is the byte offset of head block (slot, j0) in the buffer (64-byte aligned):
 *   slot * Hkv * head_bytes for a one-buffer cache and j0 = 0. A cache split over several
 *   buffers is written with one launch per run of heads that share a buffer.
 *
 * Arguments: cache, slot_off (cl_ulong), n_pages, n_sink, n_ring (kv_geom), t0 (cl_long stream
 *   index of the first token), k [n][2*Hkv][d] f32 (token i's k1 of head j = row 2j of block i,
 *   k2 = row 2j+1), v [n][Hkv][2d] f32, j0 (first KV head of the launch), n_kv_heads (Hkv).
 *
 * Work: one work-group of APPEND_WG items per (row r = group id 0 in {0: k1, 1: k2, 2: v}, KV head
 * j = j0 + group id 1, token i = group id 2, at stream index t0 + i): global size
 * (3 * APPEND_WG, heads of the launch, n).
 * The n tokens land in distinct slots (n <= max_batch <= the ring). Item l converts elements l,
 * l + APPEND_WG, ...
 * Access: the source rows are read coalesced (twice for q8: absmax, then store); V stores are
 * coalesced; K stores are dimension-major, 32 elements apart (one token only: d scattered writes).
 * Local memory: APPEND_WG * 4 bytes (q8 absmax reduction; unused otherwise).
 * Rounding: 1/scale is an OpenCL division (<= 2.5 ulp on some devices): a q8 element can differ by
 * one step from the CPU store where x/scale is within an ulp of a half-integer. */

#ifndef HEAD_DIM
#define HEAD_DIM 64          /* d: the dim of one softmax half; V rows have 2d */
#endif
#ifndef KV_TYPE
#define KV_TYPE 1            /* cache element: 0 f32, 1 f16, 2 q8 */
#endif
#ifndef APPEND_WG
#define APPEND_WG 64           /* work-items per row; a power of two */
#endif
#if HEAD_DIM < 1
#error "HEAD_DIM must be positive"
#endif
#if APPEND_WG < 1 || (APPEND_WG & (APPEND_WG - 1)) != 0
#error "APPEND_WG must be a power of two"
#endif

#include "kv_layout.h"

static ulong head_bytes(int n_pages)
{
    const ulong v_off = (ulong)n_pages * KPAGE_BYTES;
    const ulong vscale_off = v_off + ROUND64((ulong)n_pages * KV_PAGE * VROW_BYTES);
    return vscale_off + (KV_TYPE == 2 ? ROUND64((ulong)n_pages * KV_PAGE * 4) : 0);
}

__kernel __attribute__((reqd_work_group_size(APPEND_WG, 1, 1)))
void kv_append(__global uchar *cache, ulong slot_off, int n_pages, int n_sink, int n_ring, long t0,
               __global const float *k, __global const float *v, int j0, int n_kv_heads)
{
    const int lid = (int)get_local_id(0);
    const int row = (int)get_group_id(0);                 /* 0: k1, 1: k2, 2: v */
    const int j = j0 + (int)get_group_id(1);
    const int tok = (int)get_group_id(2);                 /* token t0 + tok of the call */
    const long t = t0 + tok;
    k += (size_t)tok * 2 * n_kv_heads * HEAD_DIM;         /* k [n][2Hkv][d], v [n][Hkv][2d] */
    v += (size_t)tok * n_kv_heads * 2 * HEAD_DIM;
    const int ph = t < n_sink ? (int)t : n_sink + (int)((t - n_sink) % n_ring);
    const ulong head = slot_off + (ulong)(j - j0) * head_bytes(n_pages);
    const ulong v_off = (ulong)n_pages * KPAGE_BYTES;

    __global const float *src;
    ulong dst;                                             /* byte offset of element 0 */
    int n, stride;                                         /* elements, element stride */
    if (row < 2) {
        src = k + (size_t)(2 * j + row) * HEAD_DIM;
        dst = head + (ulong)(ph / KV_PAGE) * KPAGE_BYTES + (ulong)row * KHALF_BYTES
              + (ulong)(ph % KV_PAGE) * ELEM_BYTES;
        n = HEAD_DIM;
        stride = KV_PAGE;
    } else {
        src = v + (size_t)j * 2 * HEAD_DIM;
        dst = head + v_off + (ulong)ph * VROW_BYTES;
        n = 2 * HEAD_DIM;
        stride = 1;
    }

#if KV_TYPE == 0
    for (int i = lid; i < n; i += APPEND_WG)
        ((__global float *)(cache + dst))[(size_t)i * stride] = src[i];
#elif KV_TYPE == 1
    for (int i = lid; i < n; i += APPEND_WG)
        vstore_half_rte(src[i], (size_t)i * stride, (__global half *)(cache + dst));
#else
    __local float red[APPEND_WG];
    float amax = 0.0f;
    for (int i = lid; i < n; i += APPEND_WG)
        amax = fmax(amax, fabs(src[i]));
    red[lid] = amax;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = APPEND_WG / 2; s > 0; s >>= 1) {
        if (lid < s)
            red[lid] = fmax(red[lid], red[lid + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    amax = red[0];
    const float scale = amax > 0.0f ? amax / 127.0f : 1.0f;
    const float inv = 1.0f / scale;
    for (int i = lid; i < n; i += APPEND_WG)
        ((__global char *)(cache + dst))[(size_t)i * stride] = convert_char_sat_rte(src[i] * inv);
    if (lid == 0) {
        ulong so = row < 2
            ? head + (ulong)(ph / KV_PAGE) * KPAGE_BYTES + 2 * KHALF_BYTES
              + (ulong)(row * KV_PAGE + ph % KV_PAGE) * 4
            : head + v_off + ROUND64((ulong)n_pages * KV_PAGE * VROW_BYTES) + (ulong)ph * 4;
        *(__global float *)(cache + so) = scale;
    }
#endif
}
