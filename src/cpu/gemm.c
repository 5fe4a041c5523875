/* Per-ISA projection kernels (DESIGN §2, §6; src/cpu/gemm.h): a streaming GEMV for decode and a
 * blocked GEMM for prefill, both reading row-major F32 / F16 / BF16 weights as stored and q8_0 /
 * q4_0 blocks (src/quant.h). GNU C
 * vectors for the register tiles, F16C / AVX-512 intrinsics for the f16 conversion; the build
 * compiles this file once per instruction set with -DCPU_ISA=<isa>, and CPU_FN names each
 * copy. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "half.h"

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#ifndef CPU_ISA
#error "compile with -DCPU_ISA=<isa> (generic, avx2, avx512)"
#endif

/* fmaf only where it is one instruction; otherwise (no FMA unit, e.g. the generic x86-64 build)
 * a call to libm would be slow, so use a separate multiply and add. */
#if defined(FP_FAST_FMAF)
#  define MADD(a, b, c) fmaf((a), (b), (c))
#else
#  define MADD(a, b, c) ((a) * (b) + (c))
#endif

/* ---- vectors ------------------------------------------------------------------------------ */

/* vf: one native vector of VW floats (GNU vector extensions: the same code is zmm, ymm, xmm or
 * NEON registers, and plain scalars where there is no vector unit). Written with vectors rather
 * than left to the auto-vectorizer, because gcc 12's SLP pass drops the register tiles below for
 * small changes of the source (measured: 3x slower). */
#if defined(__AVX512F__)
#  define VW 16
#elif defined(__AVX2__)
#  define VW 8
#else
#  define VW 4
#endif
typedef float vf __attribute__((vector_size(VW * 4)));
typedef uint16_t vh __attribute__((vector_size(VW * 2)));
typedef uint32_t vu __attribute__((vector_size(VW * 4)));

static inline vf load_f32(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store_f32(float *p, vf v)
{
    memcpy(p, &v, sizeof v);
}

/* VW weights of dtype dt from element t of row w, as f32: f16 through the conversion
 * instructions where the ISA has them (vcvtph2ps, fcvtl), bf16 as the high half of an f32. */
static inline vf load_w(dattn_dtype dt, const void *w, size_t t)
{
    if (dt == DATTN_DTYPE_F32)
        return load_f32((const float *)w + t);
    const uint16_t *h = (const uint16_t *)w + t;
    if (dt == DATTN_DTYPE_BF16) {
        vh b;
        memcpy(&b, h, sizeof b);
        vu u = __builtin_convertvector(b, vu) << 16;
        vf f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
#if defined(__AVX512F__)
    return (vf)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
#elif defined(__AVX2__) && defined(__F16C__)
    return (vf)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
#elif defined(__aarch64__)
    __fp16 a[VW];
    memcpy(a, h, sizeof a);
    vf f;
    for (int i = 0; i < VW; i++)
        f[i] = (float)a[i];
    return f;
#else
    /* Branch-free: the 15 bits below the sign, moved into an f32's exponent and mantissa and
     * scaled by 2^112, are the value for normal and subnormal halves alike; inf and NaN get
     * the all-ones exponent back. */
    vh b;
    memcpy(&b, h, sizeof b);
    vu u = __builtin_convertvector(b, vu), em = u & 0x7fff;
    vu bits = em << 13;
    vf f;
    memcpy(&f, &bits, sizeof f);
    f *= 0x1p112f;
    memcpy(&bits, &f, sizeof bits);
    bits |= (vu)(em >= 0x7c00) & 0x7f800000u;
    bits |= (u & 0x8000) << 16;
    memcpy(&f, &bits, sizeof f);
    return f;
#endif
}

/* ---- q8_0 / q4_0 blocks ----------------------------------------------------------------- */

enum { VB = QUANT_BLOCK / VW };   /* vectors of one block */
typedef uint8_t v16u8 __attribute__((vector_size(16)));

/* A block's scale d, in every lane: f16 broadcast then widened in one instruction where the ISA
 * converts f16 vectors. */
static inline vf scale_vf(const uint8_t *blk)
{
    uint16_t h;
    memcpy(&h, blk, 2);
#if defined(__AVX512F__)
    return (vf)_mm512_cvtph_ps(_mm256_set1_epi16((short)h));
#elif defined(__AVX2__) && defined(__F16C__)
    return (vf)_mm256_cvtph_ps(_mm_set1_epi16((short)h));
#elif defined(__aarch64__)
    __fp16 f;
    memcpy(&f, &h, 2);
    return (vf){0} + (float)f;
#else
    return (vf){0} + f16_to_f32(h);
#endif
}

/* 32 int8 values at q as VB vectors of f32: sign-extend and convert with the ISA's own
 * instructions (gcc 12 turns __builtin_convertvector from int8 into a scalar loop). */
static inline void widen_i8(const int8_t *q, vf v[VB])
{
#if defined(__AVX512F__)
    for (int j = 0; j < VB; j++)
        v[j] = (vf)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + 16 * j))));
#elif defined(__AVX2__)
    for (int j = 0; j < VB; j++)
        v[j] = (vf)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8 * j))));
#elif defined(__aarch64__)
    for (int j = 0; j < 2; j++) {
        int8x16_t b = vld1q_s8(q + 16 * j);
        int16x8_t lo = vmovl_s8(vget_low_s8(b)), hi = vmovl_high_s8(b);
        v[4 * j + 0] = (vf)vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo)));
        v[4 * j + 1] = (vf)vcvtq_f32_s32(vmovl_high_s16(lo));
        v[4 * j + 2] = (vf)vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi)));
        v[4 * j + 3] = (vf)vcvtq_f32_s32(vmovl_high_s16(hi));
    }
#else
    float f[QUANT_BLOCK];
    for (int j = 0; j < QUANT_BLOCK; j++)
        f[j] = (float)q[j];
    memcpy(v, f, sizeof f);
#endif
}

/* The 32 weights of a q8_0 or q4_0 block as VB vectors of f32 before the scale. A q4_0 byte's
 * low nibble is weight j, its high nibble weight j + 16; both are unpacked with 16-byte vector
 * operations first. */
static inline void load_block(dattn_dtype dt, const uint8_t *blk, vf v[VB])
{
    if (dt == DATTN_DTYPE_Q8_0) {
        widen_i8((const int8_t *)(blk + 2), v);
    } else {
        v16u8 b;
        memcpy(&b, blk + 2, sizeof b);
        v16u8 lo = (b & 15) - 8, hi = (b >> 4) - 8;
        int8_t q[QUANT_BLOCK];
        memcpy(q, &lo, 16);
        memcpy(q + 16, &hi, 16);
        widen_i8(q, v);
    }
}

static inline size_t block_bytes(dattn_dtype dt)
{
    return dt == DATTN_DTYPE_Q8_0 ? Q8_0_BLOCK_BYTES : Q4_0_BLOCK_BYTES;
}

static inline float hsum(vf v)
{
    float s[VW];
    memcpy(s, &v, sizeof s);
    for (int w = VW / 2; w > 0; w /= 2)   /* pairwise: a fixed order, a small error */
        for (int j = 0; j < w; j++)
            s[j] += s[j + w];
    return s[0];
}

/* Elements [t0, t0 + n) of weight row w as f32 (the GEMM's panel packing). A block format's
 * range starts at a block (t0 a multiple of 32: GEMM_KC is) and ends at one or at the row's
 * end. */
static inline void row_f32(dattn_dtype dt, const void *w, size_t t0, int n, float *restrict dst)
{
    int i = 0;
    if (quant_is_block(dt)) {
        const uint8_t *blk = (const uint8_t *)w + t0 / QUANT_BLOCK * block_bytes(dt);
        for (; i < n; i += QUANT_BLOCK, blk += block_bytes(dt)) {
            vf v[VB], d = scale_vf(blk);
            load_block(dt, blk, v);
            for (int j = 0; j < VB; j++)
                store_f32(dst + i + j * VW, v[j] * d);
        }
        return;
    }
    for (; i + VW <= n; i += VW)
        store_f32(dst + i, load_w(dt, w, t0 + (size_t)i));
    const uint8_t *b = w;
    for (; i < n; i++) {
        size_t t = t0 + (size_t)i;
        if (dt == DATTN_DTYPE_F32) {
            memcpy(dst + i, b + 4 * t, 4);
        } else {
            uint16_t h;
            memcpy(&h, b + 2 * t, 2);
            dst[i] = dt == DATTN_DTYPE_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
    }
}

/* ---- GEMV (decode) -------------------------------------------------------------------------- */

/* Four weight rows share each load of x; each row sums into two vectors (eight independent FMA
 * chains hide the latency), converted from the stored dtype in registers. No horizontal sum runs
 * until a row ends. The rows stream once from memory: the bandwidth-bound loop of decode. */
enum { GEMV_ROWS = 4 };
/* Software prefetch of each row GEMV_AHEAD elements ahead: with four rows streaming, the
 * hardware prefetchers alone left a 16-bit GEMV at 60% of the read bandwidth on Zen 4 (81-84%
 * with it; f32 gains less). */
#define GEMV_AHEAD 1024
#define GEMV_AHEAD_BYTES 2048   /* the same for block rows (a 16-bit row's distance) */

/* Inlined once per dtype (gemv below), so that no branch on the dtype stays in the loop. */
__attribute__((always_inline)) static inline void gemv_dt(const float *restrict x, int k,
                                                          dattn_dtype dt, const void *w, int rows,
                                                          float *restrict y)
{
    size_t row_bytes = quant_row_bytes(dt, k), es = row_bytes / (size_t)k;
    for (int r0 = 0; r0 < rows; r0 += GEMV_ROWS) {
        int nr = rows - r0 < GEMV_ROWS ? rows - r0 : GEMV_ROWS;
        /* A short last group repeats its first row in the unused slots and drops their sums. */
        const uint8_t *row[GEMV_ROWS];
        for (int i = 0; i < GEMV_ROWS; i++)
            row[i] = (const uint8_t *)w + (size_t)(r0 + (i < nr ? i : 0)) * row_bytes;
        vf a0[GEMV_ROWS] = {0}, a1[GEMV_ROWS] = {0};
        int t = 0;
        for (; t + 2 * VW <= k; t += 2 * VW) {
            vf x0 = load_f32(x + t), x1 = load_f32(x + t + VW);
#pragma GCC unroll 4
            for (int i = 0; i < GEMV_ROWS; i++) {
                __builtin_prefetch(row[i] + ((size_t)t + GEMV_AHEAD) * es, 0, 3);
                a0[i] += load_w(dt, row[i], (size_t)t) * x0;
                a1[i] += load_w(dt, row[i], (size_t)t + VW) * x1;
            }
        }
        float tail[GEMV_ROWS] = {0};
        if (t < k) {
            float wt[VW * 2];
            for (int i = 0; i < GEMV_ROWS; i++) {
                row_f32(dt, row[i], (size_t)t, k - t, wt);
                for (int j = 0; j < k - t; j++)
                    tail[i] = MADD(wt[j], x[t + j], tail[i]);
            }
        }
        for (int i = 0; i < nr; i++)
            y[r0 + i] = hsum(a0[i] + a1[i]) + tail[i];
    }
}

/* The same for q8_0 / q4_0 rows, block by block: per row and block the VB products with x sum
 * into one vector (FMAs), then one FMA with the block's scale into the row's accumulator. */
__attribute__((always_inline)) static inline void gemv_q(const float *restrict x, int k,
                                                         dattn_dtype dt, const void *w, int rows,
                                                         float *restrict y)
{
    size_t bb = block_bytes(dt), row_bytes = quant_row_bytes(dt, k);
    int nb = k / QUANT_BLOCK;
    for (int r0 = 0; r0 < rows; r0 += GEMV_ROWS) {
        int nr = rows - r0 < GEMV_ROWS ? rows - r0 : GEMV_ROWS;
        const uint8_t *row[GEMV_ROWS];
        for (int i = 0; i < GEMV_ROWS; i++)
            row[i] = (const uint8_t *)w + (size_t)(r0 + (i < nr ? i : 0)) * row_bytes;
        vf acc[GEMV_ROWS] = {0};
        for (int b = 0; b < nb; b++) {
            vf xv[VB];
            for (int j = 0; j < VB; j++)
                xv[j] = load_f32(x + (size_t)b * QUANT_BLOCK + (size_t)j * VW);
#pragma GCC unroll 4
            for (int i = 0; i < GEMV_ROWS; i++) {
                const uint8_t *blk = row[i] + (size_t)b * bb;
                __builtin_prefetch(blk + GEMV_AHEAD_BYTES, 0, 3);
                vf v[VB];
                load_block(dt, blk, v);
                vf t = v[0] * xv[0];
                for (int j = 1; j < VB; j++)
                    t += v[j] * xv[j];
                acc[i] += scale_vf(blk) * t;
            }
        }
        for (int i = 0; i < nr; i++)
            y[r0 + i] = hsum(acc[i]);
    }
}

static void gemv(const float *restrict x, int k, dattn_dtype dt, const void *w, int rows,
                 float *restrict y)
{
    switch (dt) {
    case DATTN_DTYPE_F16: gemv_dt(x, k, DATTN_DTYPE_F16, w, rows, y); break;
    case DATTN_DTYPE_BF16: gemv_dt(x, k, DATTN_DTYPE_BF16, w, rows, y); break;
    case DATTN_DTYPE_Q8_0: gemv_q(x, k, DATTN_DTYPE_Q8_0, w, rows, y); break;
    case DATTN_DTYPE_Q4_0: gemv_q(x, k, DATTN_DTYPE_Q4_0, w, rows, y); break;
    default: gemv_dt(x, k, DATTN_DTYPE_F32, w, rows, y); break;
    }
}

/* ---- GEMM (prefill) --------------------------------------------------------------------------- */

/* Micro-kernel: MR rows of x times one packed panel (16 weight rows): an MR x 16 accumulator tile
 * in vector registers over a k slice. Per k step it loads the 16 weights (16/VW vectors),
 * broadcasts MR packed x values and issues MR * 16/VW FMAs into the tile:
 *
 *            b[p][0..16)        16/VW vector loads
 *   x[p][0] | acc[0][0..16) |
 *   x[p][1] | acc[1][0..16) |   acc[i][:] += x[p][i] * b[p][:]  (broadcast x, FMA)
 *     ...   |      ...      |
 *
 * Tiles: avx512 12 x 16 (12 zmm of 32), avx2 4 x 16 (8 of 16 ymm), aarch64 6 x 16 (24 of 32
 * NEON registers), other generic 3 x 16 (12 of 16 xmm). Blocking: for each KC slice of k, x is
 * packed once for all n rows ([n/MR][kc][MR], in the caller's scratch); then for each panel of
 * the row range the weights of the slice are converted once into [kc][16] f32 (16 KiB, stays in
 * L1) and every MR row tile of x runs against it. Each weight is read and converted once per
 * GEMM. */
#ifndef GEMM_MR
#  if defined(__AVX512F__)
#    define GEMM_MR 12
#  elif defined(__AVX2__)
#    define GEMM_MR 4
#  elif defined(__aarch64__)
#    define GEMM_MR 6
#  else
#    define GEMM_MR 3
#  endif
#endif
#define NV (GEMM_PANEL / VW)   /* vectors per panel row */

/* acc[MR][16] = x * b, x: packed [kc][MR], b: [kc][16]. Then y = acc (first k slice) or
 * y += acc, for the first `rows` rows and `cols` columns. */
__attribute__((noinline)) static void micro(int kc, const float *restrict x,
                                            const float *restrict b, float *restrict y, int ldy,
                                            int rows, int cols, int accumulate)
{
    vf acc[GEMM_MR][NV];
    for (int i = 0; i < GEMM_MR; i++)
        for (int v = 0; v < NV; v++)
            acc[i][v] = (vf){0};
    for (int p = 0; p < kc; p++) {
        vf bv[NV];
        for (int v = 0; v < NV; v++)
            bv[v] = load_f32(b + (size_t)p * GEMM_PANEL + (size_t)v * VW);
#pragma GCC unroll 16
        for (int i = 0; i < GEMM_MR; i++) {
            float xi = x[(size_t)p * GEMM_MR + i];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                acc[i][v] += xi * bv[v];
        }
    }
    if (rows == GEMM_MR && cols == GEMM_PANEL) {
        for (int i = 0; i < GEMM_MR; i++)
            for (int v = 0; v < NV; v++) {
                float *yv = y + (size_t)i * ldy + (size_t)v * VW;
                store_f32(yv, accumulate ? load_f32(yv) + acc[i][v] : acc[i][v]);
            }
        return;
    }
    float out[GEMM_MR][GEMM_PANEL];
    memcpy(out, acc, sizeof out);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            y[(size_t)i * ldy + j] = accumulate ? y[(size_t)i * ldy + j] + out[i][j] : out[i][j];
}

/* x rows [0, n), columns [pc, pc + kc) -> [ceil(n/MR)][kc][MR], rows past n zero. */
static void pack_x(const float *x, int ldx, int n, int pc, int kc, float *restrict dst)
{
    for (int r0 = 0; r0 < n; r0 += GEMM_MR) {
        float *tile = dst + (size_t)r0 * kc;
        for (int i = 0; i < GEMM_MR; i++) {
            if (r0 + i < n) {
                const float *src = x + (size_t)(r0 + i) * ldx + pc;
                for (int t = 0; t < kc; t++)
                    tile[(size_t)t * GEMM_MR + i] = src[t];
            } else {
                for (int t = 0; t < kc; t++)
                    tile[(size_t)t * GEMM_MR + i] = 0.0f;
            }
        }
    }
}

/* Weight rows [r0, r0 + nr) (nr <= 16), columns [pc, pc + kc) -> f32 [kc][16], rows past nr
 * zero. tmp holds kc floats. */
static void pack_panel(dattn_dtype dt, const void *w, size_t row_bytes, int r0, int nr, int pc,
                       int kc, float *restrict dst, float *restrict tmp)
{
    for (int j = 0; j < GEMM_PANEL; j++) {
        if (j < nr) {
            row_f32(dt, (const uint8_t *)w + (size_t)(r0 + j) * row_bytes, (size_t)pc, kc, tmp);
            for (int t = 0; t < kc; t++)
                dst[(size_t)t * GEMM_PANEL + j] = tmp[t];
        } else {
            for (int t = 0; t < kc; t++)
                dst[(size_t)t * GEMM_PANEL + j] = 0.0f;
        }
    }
}

void CPU_FN(gemm_rows)(const float *x, int ldx, int n, int k, dattn_dtype dt, const void *w,
                       int rows, float *y, int ldy, float *scratch)
{
    if (n <= 0 || rows <= 0)
        return;
    if (k <= 0) {   /* an empty sum: the kernels would never store */
        for (int i = 0; i < n; i++)
            for (int r = 0; r < rows; r++)
                y[(size_t)i * ldy + r] = 0.0f;
        return;
    }
    if (n == 1) {
        gemv(x, k, dt, w, rows, y);
        return;
    }
    size_t row_bytes = quant_row_bytes(dt, k);
    int n_pad = (n + GEMM_MR - 1) / GEMM_MR * GEMM_MR;
    float *xpack = scratch;                               /* [n_pad][KC] */
    float *bpack = xpack + (size_t)n_pad * GEMM_KC;       /* [KC][16] */
    float *tmp = bpack + (size_t)GEMM_KC * GEMM_PANEL;    /* [KC] */
    for (int pc = 0; pc < k; pc += GEMM_KC) {
        int kc = k - pc < GEMM_KC ? k - pc : GEMM_KC;
        pack_x(x, ldx, n, pc, kc, xpack);
        for (int r0 = 0; r0 < rows; r0 += GEMM_PANEL) {
            int nr = rows - r0 < GEMM_PANEL ? rows - r0 : GEMM_PANEL;
            pack_panel(dt, w, row_bytes, r0, nr, pc, kc, bpack, tmp);
            for (int ir = 0; ir < n; ir += GEMM_MR) {
                int nx = n - ir < GEMM_MR ? n - ir : GEMM_MR;
                micro(kc, xpack + (size_t)ir * kc, bpack, y + (size_t)ir * ldy + r0, ldy, nx, nr,
                      pc > 0);
            }
        }
    }
}
