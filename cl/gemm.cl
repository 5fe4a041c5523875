/* gemm.cl: the projections of a prefill chunk (DESIGN §1 steps 1 and 7 for n tokens at once),
 * the project's own GEMM for builds without CLBlast:
 *
 *   y[i][c] = sum_t x[i][t] * W[c][t],   i < n, c < m, t < k        (y = x · Wᵀ)
 *
 * In CLBlast's xgemm terms C = A · Bᵀ with
 *   A = x [n][k]  row-major, row stride ldx floats (>= k): A(i,t) = x[i*ldx + t]
 *   B = W [m][k]  the nn.Linear weight, row-major, in the device layout of its format
 *                 (weight_format.h): one kernel per format, gemm_f32, gemm_f16,
 *                 gemm_bf16, gemm_q8_0, gemm_q4_0 (WEIGHT_FORMAT 0..4; unset: all five in one
 *                 program). Each weight is widened to f32 as it is staged (f16 with vload_half,
 *                 core OpenCL 1.2, no cl_khr_fp16; bf16 as bits << 16; q8_0 / q4_0 as d * q):
 *                 the products are those of the f32 weights the formats stand for.
 *   C = y [n][m]  row-major, row stride ldy floats (>= m): C(i,c) = y[i*ldy + c]
 * The strides let the host read x from, and write q/k/v as column blocks of, a wider buffer.
 * Cells of y outside [n][m] and columns t >= k of x are never touched.
 *
 *   Tiles of work-group (gx, gy), row0 = gy*TILE_M, col0 = gx*TILE_N, one k-step at k0:
 *
 *   x (A) [n][k]   k0  k0+TILE_K            y (C) [n][m]   col0  col0+TILE_N
 *        +------------+----+-----+ k             +-----------+------+-----+ m
 *        |            :    :     |               |           :      :     |
 *  row0  |............+----+.....|         row0  |...........+------+.....|
 *  TILE_M|            | xs |     |  ---------->  TILE_M      | tile |     |
 *        |............+----+.....|               |...........+------+.....|
 *        +------------+----+-----+               +-----------+------+-----+
 *        n                                       n                 ^
 *   W (B) [m][k]   k0  k0+TILE_K                                   |
 *        +------------+----+-----+ k                               |
 *  col0  |............+----+.....|  -------------- transposed -----+
 *  TILE_N|            | ws |     |
 *        |............+----+.....|
 *        +------------+----+-----+
 *        m
 *
 *   Inside the tile, item (tx, ty) owns the WPT_M x WPT_N cells at rows ty + a*LY and columns
 *   tx + b*LX (strided, so a row of items covers adjacent columns):
 *
 *        col  0    1   ..  LX-1   LX  LX+1 ..
 *   row 0   (0,0)(1,0) .. (LX-1,0)(0,0)(1,0) ..
 *   row 1   (0,1)(1,1) ..          (0,1)(1,1) ..
 *   ...
 *   row LY  (0,0)(1,0) ..          (0,0)(1,0) ..
 *
 * Work: a work-group of LX x LY = (TILE_N/WPT_N) x (TILE_M/WPT_M) items computes a
 * TILE_M x TILE_N tile of y. It walks k in steps of TILE_K; each step stages the x tile
 * [TILE_M][TILE_K] and the W tile [TILE_N][TILE_K] in local memory (transposed, k-major, so
 * the inner loop reads a row of each), then every item accumulates its WPT_M x WPT_N register
 * block: rows ty + a*LY (a < WPT_M) and columns tx + b*LX (b < WPT_N) of the tile.
 *
 * Launch (2-D): local = (LX, LY) (reqd_work_group_size);
 *               global = (ceil(m / TILE_N) * LX, ceil(n / TILE_M) * LY).
 *
 * Access pattern: the staging loads walk each tile row along k, adjacent items on adjacent
 * 16-byte chunks (float4 of x; a uint4 of W converted in registers: 4 f32, 8 f16 / bf16,
 * 16 q8_0 or 32 q4_0 weights), coalesced runs of TILE_K elements, wherever every row starts
 * 16-byte aligned (x: ldx and k multiples of 4; W: k a multiple of the chunk's weights, always
 * so for q8_0 / q4_0); otherwise one element at a time. Each x byte is read ceil(m / TILE_N) times
 * and each W byte ceil(n / TILE_M) times from global memory (once per tile that needs it);
 * each staged local value is read LX (xs) or LY (ws) times. Items of a row of the work-group
 * read the same xs word (broadcast) and adjacent ws words; they write adjacent y cells
 * (coalesced). Out-of-range rows, columns and the k tail are staged as zeros (loads masked),
 * stores are masked: any n, m, k >= 1 works.
 *
 * Local memory: 4 * TILE_K * (TILE_M + TILE_N + 2 * LOCAL_PAD) bytes
 *               (defaults: 4 * 32 * (64 + 64 + 2) = 16,640 bytes). */

#ifndef TILE_M
#define TILE_M 64            /* rows of y (tokens) per work-group */
#endif
#ifndef TILE_N
#define TILE_N 64            /* columns of y (rows of W) per work-group */
#endif
#ifndef TILE_K
#define TILE_K 32            /* k-slice staged in local memory per step: whole 16-byte chunks of
                              * every format built (a q4_0 chunk is a 32-weight block) */
#endif
#ifndef WPT_M
#define WPT_M 4              /* rows of y per work-item (register block), divides TILE_M */
#endif
#ifndef WPT_N
#define WPT_N 4              /* columns of y per work-item (register block), divides TILE_N */
#endif
#ifndef LOCAL_PAD
#define LOCAL_PAD 1          /* floats added to each local row against bank conflicts */
#endif

#if TILE_M < 1 || TILE_N < 1 || TILE_K < 1 || WPT_M < 1 || WPT_N < 1 || LOCAL_PAD < 0
#error "TILE_M, TILE_N, TILE_K, WPT_M, WPT_N must be positive and LOCAL_PAD >= 0"
#endif
#if TILE_M % WPT_M != 0 || TILE_N % WPT_N != 0
#error "WPT_M must divide TILE_M and WPT_N must divide TILE_N"
#endif
#include "weight_format.h"
#if (HAS_FORMAT(4) && TILE_K % 32) || (HAS_FORMAT(3) && TILE_K % 16) || \
    ((HAS_FORMAT(1) || HAS_FORMAT(2)) && TILE_K % 8) || TILE_K % 4
#error "TILE_K must be a multiple of the weights in a 16-byte chunk of each format built (f32 4, f16 / bf16 8, q8_0 16, q4_0 32)"
#endif

/* derived sizes */
#define LX (TILE_N / WPT_N)                 /* work-items along m (dimension 0) */
#define LY (TILE_M / WPT_M)                 /* work-items along n (dimension 1) */
#define WG (LX * LY)                        /* work-items per work-group */
#define LOADS_X (TILE_M * TILE_K / WG)      /* x elements each item stages per k-step */
#define LOADS_W (TILE_N * TILE_K / WG)      /* W elements each item stages per k-step */

#if (TILE_M * TILE_K) % WG != 0 || (TILE_N * TILE_K) % WG != 0
#error "the work-group size (TILE_M/WPT_M)*(TILE_N/WPT_N) must divide TILE_M*TILE_K and TILE_N*TILE_K"
#endif

/* W(c, t) as f32, one weight at a time: the rows of f32 / f16 / bf16 weights whose k leaves them
 * unaligned to 16 bytes. */
static INLINE float load_w(const int fmt, __global const uchar *w, size_t soff, int c, int k, int t)
{
    const size_t i = (size_t)c * (size_t)k + (size_t)t;
    if (fmt == W_F32)
        return ((__global const float *)w)[i];
    if (fmt == W_F16)
        return vload_half(i, (__global const half *)w);
    if (fmt == W_BF16)
        return as_float((uint)((__global const ushort *)w)[i] << 16);
    const size_t blk = (size_t)c * (size_t)(k / 32) + (size_t)(t / 32);
    const float d = vload_half(blk, (__global const half *)(w + soff));
    if (fmt == W_Q8_0)
        return d * (float)((__global const char *)w)[i];
    const uchar b = w[16 * blk + (size_t)(t % 16)];
    return d * (float)((int)((t & 16) ? b >> 4 : b & 15) - 8);
}

/* The 16-byte chunk of row c that starts at weight t (a multiple of CHUNK_W(fmt)), widened to
 * f32 in registers: weights 0..15 of it in lo, 16..31 (q4_0 only) in hi. */
static INLINE void chunk_f32(const int fmt, __global const uchar *w, size_t soff, int c, int k,
                             int t, float16 *lo, float16 *hi)
{
    *hi = (float16)(0.0f);
    if (fmt == W_F32) {
        const float4 v = *(__global const float4 *)(w + 4 * ((size_t)c * (size_t)k + (size_t)t));
        *lo = (float16)(v, v, v, v);
        return;
    }
    if (fmt == W_F16 || fmt == W_BF16) {
        const uint4 raw = *(__global const uint4 *)(w + 2 * ((size_t)c * (size_t)k + (size_t)t));
        float8 v;
        if (fmt == W_F16) {
            v = vload_half8(0, (const __private half *)&raw);   /* from a private copy: one load */
        } else {
            const float4 even = as_float4(raw << 16), odd = as_float4(raw & (uint4)0xffff0000u);
            v = (float8)(even.s0, odd.s0, even.s1, odd.s1, even.s2, odd.s2, even.s3, odd.s3);
        }
        *lo = (float16)(v, v);
        return;
    }
    const size_t blk = (size_t)c * (size_t)(k / 32) + (size_t)(t / 32);
    const float d = vload_half(blk, (__global const half *)(w + soff));
    if (fmt == W_Q8_0) {
        const uint4 raw = *(__global const uint4 *)(w + (size_t)c * (size_t)k + (size_t)t);
        *lo = convert_float16(as_char16(raw)) * d;
        return;
    }
    /* q4_0: the chunk is the whole block, byte j holding weights j (low) and j + 16 (high) */
    const uchar16 b = as_uchar16(*(__global const uint4 *)(w + 16 * blk));
    *lo = (convert_float16(b & (uchar16)15) - 8.0f) * d;
    *hi = (convert_float16(b >> (uchar16)4) - 8.0f) * d;
}

/* That chunk stored down column col of the k-major W tile from tile row tt on. */
static INLINE void stage_chunk(const int fmt, __global const uchar *w, size_t soff, int c, int k,
                               int t, __local float (*ws)[TILE_N + LOCAL_PAD], int tt, int col)
{
    float16 lo, hi;
    chunk_f32(fmt, w, soff, c, k, t, &lo, &hi);
    for (int j = 0; j < CHUNK_W(fmt) && j < 16; j++)
        ws[tt + j][col] = lo[j];
    for (int j = 16; j < CHUNK_W(fmt); j++)
        ws[tt + j][col] = hi[j - 16];
}

static INLINE void gemm_body(const int fmt, __global const float *x, int ldx,
                             __global const uchar *w, __global float *y, int ldy, int n, int m,
                             int k, __local float (*xs)[TILE_M + LOCAL_PAD],
                             __local float (*ws)[TILE_N + LOCAL_PAD])
{
    const int tx = (int)get_local_id(0), ty = (int)get_local_id(1);
    const int lid = ty * LX + tx;
    const int row0 = (int)get_group_id(1) * TILE_M;  /* first row of y and x */
    const int col0 = (int)get_group_id(0) * TILE_N;  /* first column of y, row of W */
    const size_t soff = fmt >= W_Q8_0 ? scale_offset(fmt, m, k) : 0;
    /* 16-byte loads where every row starts 16-byte aligned (the same for the whole launch; the
     * q8_0 / q4_0 layouts always are): x as float4, W a chunk at a time */
    const int wide_x = ldx % 4 == 0 && k % 4 == 0;
    const int wide_w = k % CHUNK_W(fmt) == 0;
    const int cw = CHUNK_W(fmt), w_chunks = TILE_N * (TILE_K / CHUNK_W(fmt));

    float acc[WPT_M][WPT_N];
    for (int a = 0; a < WPT_M; a++)
        for (int b = 0; b < WPT_N; b++)
            acc[a][b] = 0.0f;

    for (int k0 = 0; k0 < k; k0 += TILE_K) {
        if (wide_x) {
            for (int e = lid; e < TILE_M * TILE_K / 4; e += WG) {
                const int i = e / (TILE_K / 4), t = 4 * (e % (TILE_K / 4));
                const int gi = row0 + i, gt = k0 + t;
                float4 v = (float4)(0.0f);
                if (gi < n && gt < k)   /* k % 4 == 0: the float4 is all in or all out */
                    v = *(__global const float4 *)(x + (size_t)gi * (size_t)ldx + (size_t)gt);
                xs[t][i] = v.s0, xs[t + 1][i] = v.s1, xs[t + 2][i] = v.s2, xs[t + 3][i] = v.s3;
            }
        } else {
#pragma unroll 1   /* odd shapes only: keep the code small */
            for (int r = 0; r < LOADS_X; r++) {
                const int e = lid + r * WG, i = e / TILE_K, t = e % TILE_K;
                const int gi = row0 + i, gt = k0 + t;
                float v = 0.0f;
                if (gi < n && gt < k)
                    v = x[(size_t)gi * (size_t)ldx + (size_t)gt];
                xs[t][i] = v;
            }
        }
        if (wide_w) {
            for (int e = lid; e < w_chunks; e += WG) {
                const int c = e / (TILE_K / cw), t = cw * (e % (TILE_K / cw));
                const int gc = col0 + c, gt = k0 + t;
                if (gc < m && gt < k) {   /* k % cw == 0: the chunk is all in or all out */
                    stage_chunk(fmt, w, soff, gc, k, gt, ws, t, c);
                } else {
                    for (int j = 0; j < cw; j++)
                        ws[t + j][c] = 0.0f;
                }
            }
        } else {
#pragma unroll 1
            for (int r = 0; r < LOADS_W; r++) {
                const int e = lid + r * WG, c = e / TILE_K, t = e % TILE_K;
                const int gc = col0 + c, gt = k0 + t;
                float v = 0.0f;
                if (gc < m && gt < k)
                    v = load_w(fmt, w, soff, gc, k, gt);
                ws[t][c] = v;
            }
        }
    barrier(CLK_LOCAL_MEM_FENCE);

        for (int t = 0; t < TILE_K; t++) {
            float av[WPT_M], bv[WPT_N];
            for (int a = 0; a < WPT_M; a++)
                av[a] = xs[t][ty + a * LY];
            for (int b = 0; b < WPT_N; b++)
                bv[b] = ws[t][tx + b * LX];
            for (int a = 0; a < WPT_M; a++)
                for (int b = 0; b < WPT_N; b++)
                    acc[a][b] = fma(av[a], bv[b], acc[a][b]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

    for (int a = 0; a < WPT_M; a++) {
        const int gi = row0 + ty + a * LY;
        if (gi >= n)
            break;
        for (int b = 0; b < WPT_N; b++) {
            const int gc = col0 + tx + b * LX;
            if (gc < m)
                y[(size_t)gi * (size_t)ldy + (size_t)gc] = acc[a][b];
        }
    }
}

#define GEMM_KERNEL(name, fmt)                                                                  \
    __kernel __attribute__((reqd_work_group_size(LX, LY, 1)))                                   \
    void name(__global const float *x, int ldx, __global const uchar *w, __global float *y,     \
              int ldy, int n, int m, int k)                                                     \
    {                                                                                           \
        __local float xs[TILE_K][TILE_M + LOCAL_PAD];   /* x tile, k-major */                   \
        __local float ws[TILE_K][TILE_N + LOCAL_PAD];   /* W tile, k-major */                   \
        gemm_body(fmt, x, ldx, w, y, ldy, n, m, k, xs, ws);                                     \
    }

/* widen_<fmt>: rows r0 .. r0 + rows - 1 of W as f32, out [rows][k], one 16-byte chunk of W per
 * item (global size rows * k / CHUNK_W, any work-group size; k a multiple of CHUNK_W, which the
 * host checks): where CLBlast runs the prefill GEMM, a weight held in another format is widened
 * a panel of rows at a time into one scratch buffer first. Adjacent items, adjacent chunks. */
#define WIDEN_KERNEL(name, fmt)                                                                 \
    __kernel void name(__global const uchar *w, int m, int k, int r0, int rows,                 \
                       __global float *out)                                                     \
    {                                                                                           \
        const int per_row = k / CHUNK_W(fmt);                                                   \
        const size_t e = get_global_id(0);                                                      \
        if (e >= (size_t)rows * (size_t)per_row)                                                \
            return;                                                                             \
        const int r = (int)(e / (size_t)per_row), t = (int)(e % (size_t)per_row) * CHUNK_W(fmt); \
        float16 lo, hi;                                                                         \
        chunk_f32(fmt, w, fmt >= W_Q8_0 ? scale_offset(fmt, m, k) : 0, r0 + r, k, t, &lo, &hi); \
        __global float *o = out + (size_t)r * (size_t)k + (size_t)t;                            \
        if (CHUNK_W(fmt) == 8)                                                                  \
            vstore8(lo.lo, 0, o);                                                               \
        else                                                                                    \
            vstore16(lo, 0, o);                                                                 \
        if (CHUNK_W(fmt) == 32)                                                                 \
            vstore16(hi, 0, o + 16);                                                            \
    }

#if HAS_FORMAT(W_F16)
WIDEN_KERNEL(widen_f16, W_F16)
#endif
#if HAS_FORMAT(W_BF16)
WIDEN_KERNEL(widen_bf16, W_BF16)
#endif
#if HAS_FORMAT(W_Q8_0)
WIDEN_KERNEL(widen_q8_0, W_Q8_0)
#endif
#if HAS_FORMAT(W_Q4_0)
WIDEN_KERNEL(widen_q4_0, W_Q4_0)
#endif

#if HAS_FORMAT(W_F32)
GEMM_KERNEL(gemm_f32, W_F32)
#endif
#if HAS_FORMAT(W_F16)
GEMM_KERNEL(gemm_f16, W_F16)
#endif
#if HAS_FORMAT(W_BF16)
GEMM_KERNEL(gemm_bf16, W_BF16)
#endif
#if HAS_FORMAT(W_Q8_0)
GEMM_KERNEL(gemm_q8_0, W_Q8_0)
#endif
#if HAS_FORMAT(W_Q4_0)
GEMM_KERNEL(gemm_q4_0, W_Q4_0)
#endif
