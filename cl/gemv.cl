/* gemv.cl: the projections of one decode step (DESIGN §1 steps 1 and 7 for a single token):
 *
 *   y[c] = sum_t W[c][t] * x[t],   c < m, t < k
 *
 * for an nn.Linear weight W [m][k] held in its own format, one kernel per format (gemv_f32,
 * gemv_f16, gemv_bf16, gemv_q8_0, gemv_q4_0): the layouts and WEIGHT_FORMAT are in
 * weight_format.h.
 *
 * Work: one work-group of GEMV_WG items computes GEMV_ROWS consecutive rows (global size =
 * ceil(m / GEMV_ROWS) * GEMV_WG). Each row gets LANES = GEMV_WG / GEMV_ROWS items that stride
 * over the row in 16-byte chunks (4 f32, 8 f16 / bf16, 16 q8_0, 32 q4_0 weights), adjacent items
 * on adjacent chunks, two chunks in flight per item (uint4 / float4 loads; x read as float4): the
 * loads are coalesced and every weight byte is read exactly once per call, which is what a
 * memory-bound decode step costs. The block formats also read one 2-byte scale per chunk
 * (adjacent items, adjacent scales). Rows of f32 / f16 / bf16 whose k leaves them unaligned (k not
 * a multiple of 4 / 8) are read one weight at a time. Accumulation is f32. The sums of a row's
 * items meet in local memory (GEMV_WG * 4 bytes) in two barriers: RED_PARTS items add LANES /
 * RED_PARTS partials each, then one adds those. */

#ifndef GEMV_WG
#define GEMV_WG 256          /* work-items per work-group; a power of two */
#endif
#ifndef GEMV_ROWS
#define GEMV_ROWS 4          /* rows per work-group; a power of two dividing GEMV_WG */
#endif
#if GEMV_WG < 1 || (GEMV_WG & (GEMV_WG - 1)) != 0
#error "GEMV_WG must be a power of two"
#endif
#if GEMV_ROWS < 1 || (GEMV_ROWS & (GEMV_ROWS - 1)) != 0 || GEMV_ROWS > GEMV_WG
#error "GEMV_ROWS must be a power of two no larger than GEMV_WG"
#endif
#include "weight_format.h"

#define LANES (GEMV_WG / GEMV_ROWS)
#define RED_PARTS (LANES >= 256 ? 16 : LANES >= 64 ? 8 : LANES >= 16 ? 4 : 1)

static INLINE float4 x4(__global const float *x, int t)   /* t a multiple of 4 */
{
    return *(__global const float4 *)(x + t);
}

/* Chunk c of row r (row-major, CHUNK_W(fmt) weights from t = c * CHUNK_W(fmt)) dotted with x:
 * one 16-byte load of weights, converted in registers. */
static INLINE float dot_chunk(const int fmt, __global const uchar *w, size_t soff,
                              __global const float *x, int r, int k, int c)
{
    const int t = c * CHUNK_W(fmt);
    if (fmt == W_F32) {
        const float4 wv = *(__global const float4 *)(w + 4 * ((size_t)r * (size_t)k + (size_t)t));
        return dot(wv, x4(x, t));
    }
    if (fmt == W_F16) {
        /* a vload_half8 straight from global memory would be eight 2-byte loads */
        const uint4 raw = *(__global const uint4 *)(w + 2 * ((size_t)r * (size_t)k + (size_t)t));
        const float8 wv = vload_half8(0, (const __private half *)&raw);
        return dot(wv.lo, x4(x, t)) + dot(wv.hi, x4(x, t + 4));
    }
    if (fmt == W_BF16) {
        const uint4 raw = *(__global const uint4 *)(w + 2 * ((size_t)r * (size_t)k + (size_t)t));
        const float4 even = as_float4(raw << 16), odd = as_float4(raw & (uint4)0xffff0000u);
        const float4 x0 = x4(x, t), x1 = x4(x, t + 4);
        return dot(even, (float4)(x0.even, x1.even)) + dot(odd, (float4)(x0.odd, x1.odd));
    }
    if (fmt == W_Q8_0) {
        const uint4 raw = *(__global const uint4 *)(w + (size_t)r * (size_t)k + (size_t)t);
        const float d = vload_half((size_t)r * (size_t)(k / 32) + (size_t)(t / 32),
                                   (__global const half *)(w + soff));
        const float16 q = convert_float16(as_char16(raw));
        return d * (dot(q.s0123, x4(x, t)) + dot(q.s4567, x4(x, t + 4)) +
                    dot(q.s89ab, x4(x, t + 8)) + dot(q.scdef, x4(x, t + 12)));
    }
    /* W_Q4_0: the chunk is block c */
    const uint4 raw = *(__global const uint4 *)(w + 16 * ((size_t)r * (size_t)(k / 32) + (size_t)c));
    const float d = vload_half((size_t)r * (size_t)(k / 32) + (size_t)c,
                               (__global const half *)(w + soff));
    const uchar16 b = as_uchar16(raw);
    const float16 lo = convert_float16(b & (uchar16)15) - 8.0f;
    const float16 hi = convert_float16(b >> (uchar16)4) - 8.0f;
    return d * (dot(lo.s0123, x4(x, t)) + dot(lo.s4567, x4(x, t + 4)) +
                dot(lo.s89ab, x4(x, t + 8)) + dot(lo.scdef, x4(x, t + 12)) +
                dot(hi.s0123, x4(x, t + 16)) + dot(hi.s4567, x4(x, t + 20)) +
                dot(hi.s89ab, x4(x, t + 24)) + dot(hi.scdef, x4(x, t + 28)));
}

/* Weight (r, t) alone: the rows of f32 / f16 / bf16 that are not 16-byte aligned. */
static INLINE float load_one(const int fmt, __global const uchar *w, int r, int k, int t)
{
    const size_t i = (size_t)r * (size_t)k + (size_t)t;
    if (fmt == W_F32)
        return ((__global const float *)w)[i];
    if (fmt == W_F16)
        return vload_half(i, (__global const half *)w);
    return as_float((uint)((__global const ushort *)w)[i] << 16);
}

static INLINE void gemv_body(const int fmt, __global const uchar *restrict w,
                             __global const float *restrict x, __global float *restrict y, int m,
                             int k, __local float *red)
{
    const int lid = (int)get_local_id(0);
    const int lane = lid % LANES;
    const int row = (int)get_group_id(0) * GEMV_ROWS + lid / LANES;

    float acc = 0.0f, acc2 = 0.0f;
    if (row < m) {
        if (k % CHUNK_W(fmt) == 0) {
            /* every row starts 16-byte aligned: lanes take adjacent chunks (a work-group's
             * loads are whole runs of a row), two chunks in flight per item */
            const size_t soff = fmt >= W_Q8_0 ? scale_offset(fmt, m, k) : 0;
            const int n_chunks = k / CHUNK_W(fmt);
            int c = lane;
            for (; c + LANES < n_chunks; c += 2 * LANES) {
                acc += dot_chunk(fmt, w, soff, x, row, k, c);
                acc2 += dot_chunk(fmt, w, soff, x, row, k, c + LANES);
            }
            if (c < n_chunks)
                acc += dot_chunk(fmt, w, soff, x, row, k, c);
        } else if (fmt <= W_BF16) {   /* the block formats have k % 32 == 0 */
            for (int t = lane; t < k; t += LANES)
                acc = fma(load_one(fmt, w, row, k, t), x[t], acc);
        }
    }
    red[lid] = acc + acc2;
    barrier(CLK_LOCAL_MEM_FENCE);
    const int base = lid - lane;
#if RED_PARTS > 1
    if (lane < RED_PARTS) {
        float s = red[lid];
        for (int j = lane + RED_PARTS; j < LANES; j += RED_PARTS)
            s += red[base + j];
        red[lid] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
#endif
    if (lane == 0 && row < m) {
        float s = red[base];
        for (int j = 1; j < RED_PARTS; j++)
            s += red[base + j];
#if RED_PARTS == 1
        for (int j = 1; j < LANES; j++)
            s += red[base + j];
#endif
        y[row] = s;
    }
}

#define GEMV_KERNEL(name, fmt)                                                                  \
    __kernel __attribute__((reqd_work_group_size(GEMV_WG, 1, 1)))                               \
    void name(__global const uchar *restrict w, __global const float *restrict x,               \
              __global float *restrict y, int m, int k)                                         \
    {                                                                                           \
        __local float red[GEMV_WG];                                                             \
        gemv_body(fmt, w, x, y, m, k, red);                                                     \
    }

#if HAS_FORMAT(W_F32)
GEMV_KERNEL(gemv_f32, W_F32)
#endif
#if HAS_FORMAT(W_F16)
GEMV_KERNEL(gemv_f16, W_F16)
#endif
#if HAS_FORMAT(W_BF16)
GEMV_KERNEL(gemv_bf16, W_BF16)
#endif
#if HAS_FORMAT(W_Q8_0)
GEMV_KERNEL(gemv_q8_0, W_Q8_0)
#endif
#if HAS_FORMAT(W_Q4_0)
GEMV_KERNEL(gemv_q4_0, W_Q4_0)
#endif
