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
#include "cpu/interleave.h"
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

/* The block-format GEMV on f32 activations (gemv_q; the backend's decode uses the integer-dot one
 * further below): four rows share each block of x, each prefetched in software this many bytes
 * ahead (pf_walk), which gained on Zen 4 with four rows streaming. */
enum { GEMV_ROWS = 4 };
#define GEMV_AHEAD_BYTES 2048
/* The integer-dot GEMV's distance (q8_0 / q4_0, src/cpu/gemm.h), in blocks of each row: it
 * consumes a row's bytes two to three times faster than the f32 one. Single thread, 768 x 6144
 * streamed from DRAM, VNNI, two runs each, per-row distances with the carry into the next group
 * (pf_walk): q8_0 at 1024 / 2048 / 4096 / 8192 bytes 20-22 / 28-29 / 30-31 / 25-30 GB/s, q4_0
 * 18-23 / 25-27 / 23-26 / 21-23; both best near 112 blocks (before the carry, the same kernels
 * with 8192 bytes read 24-28 and 18-26). */
#ifndef XQ_AHEAD_BLOCKS
#define XQ_AHEAD_BLOCKS 112
#endif

/* Where a row group's loop prefetches: `ahead` bytes further along each of its rows, carried on
 * into the same row of the following groups when the row ends (a group's rows are contiguous, so
 * row i of the next group lies `group` bytes after row i of this one). Without the carry, a row
 * shorter than the distance leaves most of the next group unprefetched: at k = 768 a q8_0 row is
 * 816 bytes against 112 blocks (3,808 bytes) ahead. (It was measured on the 16-bit GEMV when that
 * streamed four rows: f16 22.0-22.5 -> 24.2-25.0 GB/s.) The prefetch addresses of the last group
 * may lie past the weights: a prefetch never faults. */
typedef struct pf_walk {
    size_t col;                /* bytes into the row, < row */
    size_t base;               /* bytes from this group's rows */
    size_t row, group;
} pf_walk;

static inline pf_walk pf_start(size_t row_bytes, int n_rows, size_t ahead)
{
    pf_walk p = {ahead, 0, row_bytes, row_bytes * (size_t)n_rows};
    while (p.col >= p.row && p.row > 0) {
        p.col -= p.row;
        p.base += p.group;
    }
    return p;
}

/* Moves on by the bytes of a row one loop step consumes (at most a row's). */
static inline void pf_step(pf_walk *p, size_t bytes)
{
    p->col += bytes;
    if (p->col >= p->row) {
        p->col -= p->row;
        p->base += p->group;
    }
}

static inline void pf_row(const pf_walk *p, const uint8_t *row)
{
    __builtin_prefetch(row + p->base + p->col, 0, 3);
}

/* The n row pointers of a group of rows r0 .. r0 + nr - 1 of w (row_bytes apart): a short last
 * group (nr < n) repeats its first row in the unused slots, whose sums are dropped. */
static inline void group_rows(const void *w, size_t row_bytes, int r0, int nr, int n,
                              const uint8_t **row)
{
    for (int i = 0; i < n; i++)
        row[i] = (const uint8_t *)w + (size_t)(r0 + (i < nr ? i : 0)) * row_bytes;
}

/* The 16- and 32-bit GEMV reads one row at a time, front to back: the weights stream through
 * memory as one sequential read, which the hardware prefetchers follow best. Each row sums into
 * four vectors (independent FMA chains hide the latency), converted from the stored dtype in
 * registers; x comes from L1. The kernel before this one shared each load of x among four rows
 * and prefetched each row in software: four interleaved streams, fewer lines in flight. At
 * k = 768, 256 MB of f16 from DRAM on a Zen 5 VM, in the same minutes as the read loop of
 * tools/ceiling.c: one thread 22.3-27.4 -> 28.6-29.9 GB/s (read 30-34), two threads 38.1-45.5 ->
 * 57.7-60.4 GB/s (read 64.6-70.6). From L2 both kernels run at ~70 GB/s on one thread. Software
 * prefetch on top of the single stream lost 2-5 GB/s.
 * Inlined once per dtype (gemv below), so that no branch on the dtype stays in the loop. */
__attribute__((always_inline)) static inline void gemv_dt(const float *restrict x, int k,
                                                          dattn_dtype dt, const void *w, int rows,
                                                          float *restrict y)
{
    size_t row_bytes = quant_row_bytes(dt, k);
    for (int r = 0; r < rows; r++) {
        const void *row = (const uint8_t *)w + (size_t)r * row_bytes;
        vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        int t = 0;
        for (; t + 4 * VW <= k; t += 4 * VW) {
            a0 += load_w(dt, row, (size_t)t) * load_f32(x + t);
            a1 += load_w(dt, row, (size_t)t + VW) * load_f32(x + t + VW);
            a2 += load_w(dt, row, (size_t)t + 2 * VW) * load_f32(x + t + 2 * VW);
            a3 += load_w(dt, row, (size_t)t + 3 * VW) * load_f32(x + t + 3 * VW);
        }
        for (; t + VW <= k; t += VW)
            a0 += load_w(dt, row, (size_t)t) * load_f32(x + t);
        float tail = 0.0f;
        if (t < k) {
            float wt[VW];
            row_f32(dt, row, (size_t)t, k - t, wt);
            for (int j = 0; j < k - t; j++)
                tail = MADD(wt[j], x[t + j], tail);
        }
        y[r] = hsum((a0 + a1) + (a2 + a3)) + tail;
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
        group_rows(w, row_bytes, r0, nr, GEMV_ROWS, row);
        vf acc[GEMV_ROWS] = {0};
        pf_walk pf = pf_start(row_bytes, GEMV_ROWS, GEMV_AHEAD_BYTES);
        for (int b = 0; b < nb; b++) {
            vf xv[VB];
            for (int j = 0; j < VB; j++)
                xv[j] = load_f32(x + (size_t)b * QUANT_BLOCK + (size_t)j * VW);
#pragma GCC unroll 4
            for (int i = 0; i < GEMV_ROWS; i++) {
                const uint8_t *blk = row[i] + (size_t)b * bb;
                pf_row(&pf, row[i]);
                vf v[VB];
                load_block(dt, blk, v);
                vf t = v[0] * xv[0];
                for (int j = 1; j < VB; j++)
                    t += v[j] * xv[j];
                acc[i] += scale_vf(blk) * t;
            }
            pf_step(&pf, bb);
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

/* ---- GEMV with integer dot products (decode, q8_0 / q4_0; src/cpu/gemm.h) -------------------- */


/* A weight block's f16 scale as one f32. */
static inline float scale_f32(const uint8_t *blk)
{
    uint16_t h;
    memcpy(&h, blk, 2);
#if defined(__F16C__)
    return _cvtsh_ss(h);
#elif defined(__aarch64__)
    __fp16 f;
    memcpy(&f, &h, 2);
    return (float)f;
#else
    return f16_to_f32(h);
#endif
}

static inline const float *xq_d(const void *xq, int k)
{
    return (const float *)((const uint8_t *)xq + xq8_d_offset(k));
}

static inline const int32_t *xq_s(const void *xq, int k)
{
    return (const int32_t *)((const uint8_t *)xq + xq8_s_offset(k));
}

void CPU_FN(xq8_quantize)(const float *x, int k, void *xq)
{
    int8_t *q = xq;
    float *dst_d = (float *)((uint8_t *)xq + xq8_d_offset(k));
    int32_t *dst_s = (int32_t *)((uint8_t *)xq + xq8_s_offset(k));
    for (int b = 0; b < k / QUANT_BLOCK; b++) {
        const float *xb = x + (size_t)b * QUANT_BLOCK;
        int8_t *qb = q + (size_t)b * QUANT_BLOCK;
#if defined(__AVX512F__)
        __m512 v0 = _mm512_loadu_ps(xb), v1 = _mm512_loadu_ps(xb + 16), zero = _mm512_setzero_ps();
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        /* 0 * x is NaN for a NaN or an infinity (max drops NaNs): it makes d NaN. */
        float z = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_mul_ps(v0, zero), _mm512_mul_ps(v1, zero)));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        __m512 idv = _mm512_set1_ps(id);
        /* Round to nearest even; the clamp only matters for a NaN (converted to INT_MIN): q
         * and s stay what the generic code stores, s the sum of q. */
        __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
        __m512i i0 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v0, idv)), lo), hi);
        __m512i i1 = _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v1, idv)), lo), hi);
        _mm_storeu_si128((__m128i *)qb, _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(qb + 16), _mm512_cvtsepi32_epi8(i1));
        dst_s[b] = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        dst_d[b] = d + z;
#elif defined(__AVX2__)
        __m256 v[4], zero = _mm256_setzero_ps(), sign = _mm256_set1_ps(-0.0f);
        __m256 m = zero, zs = zero;
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(xb + 8 * j);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
            zs = _mm256_add_ps(zs, _mm256_mul_ps(v[j], zero));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        __m128 z4 = _mm_add_ps(_mm256_castps256_ps128(zs), _mm256_extractf128_ps(zs, 1));
        z4 = _mm_add_ps(z4, _mm_movehl_ps(z4, z4));
        z4 = _mm_add_ss(z4, _mm_movehdup_ps(z4));
        float amax = _mm_cvtss_f32(m4), z = _mm_cvtss_f32(z4);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        __m256 idv = _mm256_set1_ps(id);
        __m256i i[4];
        for (int j = 0; j < 4; j++)   /* nearest even, clamped (only a NaN needs it) */
            i[j] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(v[j], idv)),
                                                     _mm256_set1_epi32(-127)),
                                    _mm256_set1_epi32(127));
        /* packs work per 128-bit lane: the permute puts the 32 bytes back in order. */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)qb, p);
        __m256i s8 = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        dst_s[b] = _mm_cvtsi128_si32(s4);
        dst_d[b] = d + z;
#else
        float amax = 0.0f, z = 0.0f;
        for (int j = 0; j < QUANT_BLOCK; j++) {
            amax = fmaxf(amax, fabsf(xb[j]));
            z += xb[j] * 0.0f;
        }
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int32_t s = 0;
        for (int j = 0; j < QUANT_BLOCK; j++) {
            /* rintf of the rounded product (nothing to fuse it with); the clamp only matters for
             * a NaN, which must not reach the conversion to int. */
            float v = rintf(xb[j] * id);
            v = fminf(fmaxf(v, -127.0f), 127.0f);
            qb[j] = (int8_t)(int)v;
            s += qb[j];
        }
        dst_s[b] = s;
        dst_d[b] = d + z;
#endif
    }
}

enum { XQ_ROWS = 4 };   /* weight rows sharing each x block */

#if defined(__AVX2__)
/* x86: one block of one row is a 256-bit vector of 8 int32 partial sums; converted to f32 and
 * scaled into the row's accumulator (the horizontal sum waits for the row's end). */
static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* A q4_0 block's 32 nibbles as unsigned bytes 0..15, in weight order. */
static inline __m256i nibbles(const uint8_t *blk)
{
    __m128i b = _mm_loadu_si128((const __m128i *)(blk + 2));
    __m256i u = _mm256_inserti128_si256(_mm256_castsi128_si256(b), _mm_srli_epi16(b, 4), 1);
    return _mm256_and_si256(u, _mm256_set1_epi8(15));
}

/* sum over the 8 lanes = sum_j w_j x_j, signed w and x: |w| (unsigned) times x with w's sign
 * (x is in [-127, 127], so the negation is exact); pairs of products fit int16 (2 * 128 * 127). */
static inline __m256i dot_q8_madd(__m256i w, __m256i x)
{
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* sum over the 8 lanes = sum_j (u_j - 8) x_j: the unsigned nibbles times x, less 8 * s spread as
 * -s in each lane (neg_s). */
static inline __m256i dot_q4_madd(__m256i u, __m256i x, __m256i neg_s)
{
    __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
    return _mm256_add_epi32(p, neg_s);
}

/* The row-group loop, once per weight format and dot instruction (a macro rather than an inline
 * function so that the AVX-VNNI copy can carry its own target attribute). */
#define XQ_GEMV_X86(IS_Q8, DOT_Q8, DOT_Q4)                                                        \
    do {                                                                                          \
        const int8_t *xqq = xq;                                                                   \
        const float *xd = xq_d(xq, k);                                                            \
        const int32_t *xs = xq_s(xq, k);                                                          \
        size_t bb = (IS_Q8) ? Q8_0_BLOCK_BYTES : Q4_0_BLOCK_BYTES, rb = quant_row_bytes(dt, k);  \
        int nb = k / QUANT_BLOCK;                                                                 \
        for (int r0 = 0; r0 < rows; r0 += XQ_ROWS) {                                              \
            int nr = rows - r0 < XQ_ROWS ? rows - r0 : XQ_ROWS;                                   \
            const uint8_t *row[XQ_ROWS];                                                          \
            group_rows(w, rb, r0, nr, XQ_ROWS, row);                                              \
            __m256 acc[XQ_ROWS];                                                                  \
            for (int i = 0; i < XQ_ROWS; i++)                                                     \
                acc[i] = _mm256_setzero_ps();                                                     \
            pf_walk pf = pf_start(rb, XQ_ROWS, XQ_AHEAD_BLOCKS * bb);                             \
            for (int b = 0; b < nb; b++, pf_step(&pf, bb)) {                                      \
                __m256i xv = _mm256_loadu_si256((const __m256i *)(xqq + (size_t)b * QUANT_BLOCK)); \
                float dx = xd[b];                                                                 \
                __m256i neg_s = _mm256_set1_epi32(-xs[b]);                                        \
                (void)neg_s;                                                                      \
                for (int i = 0; i < XQ_ROWS; i++) {                                               \
                    const uint8_t *blk = row[i] + (size_t)b * bb;                                 \
                    pf_row(&pf, row[i]);                                                          \
                    __m256i p = (IS_Q8)                                                           \
                        ? DOT_Q8(_mm256_loadu_si256((const __m256i *)(blk + 2)), xv)              \
                        : DOT_Q4(nibbles(blk), xv, neg_s);                                        \
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),                               \
                                             _mm256_set1_ps(scale_f32(blk) * dx), acc[i]);        \
                }                                                                                 \
            }                                                                                     \
            for (int i = 0; i < nr; i++)                                                          \
                y[r0 + i] = hsum256(acc[i]);                                                      \
        }                                                                                         \
    } while (0)

#if defined(__AVX512F__)
/* The avx512 kernels take two blocks of a row per 512-bit vector (half the dot, convert and FMA
 * instructions of the 256-bit loop above, which only runs the last block of an odd count).
 * q8_0: the two blocks' 32 bytes side by side, in the order of x; int32 lanes 0-7 are block b,
 * 8-15 block b + 1. q4_0: the two blocks' 16 bytes of nibbles, low nibbles then high ones
 * ([lo b | lo b+1 | hi b | hi b+1] in 128-bit quarters), against x reordered the same way once
 * per block pair; lanes 0-3 and 8-11 are block b. */
static const int32_t lanes_q8[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
static const int32_t lanes_q4[16] = {0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1};

static inline __m512i nibbles2(const uint8_t *blk0, const uint8_t *blk1)
{
    __m256i b = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(blk0 + 2))),
        _mm_loadu_si128((const __m128i *)(blk1 + 2)), 1);
    __m512i u = _mm512_inserti64x4(_mm512_castsi256_si512(b), _mm256_srli_epi16(b, 4), 1);
    return _mm512_and_si512(u, _mm512_set1_epi8(15));
}

static inline __m512i bytes2(const uint8_t *blk0, const uint8_t *blk1)
{
    return _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(blk0 + 2))),
        _mm256_loadu_si256((const __m256i *)(blk1 + 2)), 1);
}

/* f32(dw * dx) of two blocks spread over the lanes of each (idx: lanes_q8 or lanes_q4). */
static inline __m512 scales2(const uint8_t *blk0, const uint8_t *blk1, __m128 dx2, __m512i idx)
{
    uint16_t h0, h1;
    memcpy(&h0, blk0, 2);
    memcpy(&h1, blk1, 2);
    __m128 d = _mm_mul_ps(_mm_cvtph_ps(_mm_cvtsi32_si128((int)((uint32_t)h0 | (uint32_t)h1 << 16))), dx2);
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(d));
}

/* |w| times x with w's sign, as dot_q8_madd (no 512-bit vpsignb: a masked negation). */
static inline __m512i sign_x(__m512i w, __m512i x)
{
    return _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
}

static inline __m512i dot2_q8_madd(__m512i w, __m512i x)
{
    __m512i p = _mm512_maddubs_epi16(_mm512_abs_epi8(w), sign_x(w, x));
    return _mm512_madd_epi16(p, _mm512_set1_epi16(1));
}

static inline __m512i dot2_q4_madd(__m512i u, __m512i x, __m512i neg_s)
{
    __m512i p = _mm512_madd_epi16(_mm512_maddubs_epi16(u, x), _mm512_set1_epi16(1));
    return _mm512_add_epi32(p, neg_s);
}

#define XQ_GEMV_X512(IS_Q8, DOT2_Q8, DOT2_Q4, DOT_Q8, DOT_Q4)                                     \
    do {                                                                                          \
        const int8_t *xqq = xq;                                                                   \
        const float *xd = xq_d(xq, k);                                                            \
        const int32_t *xs = xq_s(xq, k);                                                          \
        size_t bb = (IS_Q8) ? Q8_0_BLOCK_BYTES : Q4_0_BLOCK_BYTES, rb = quant_row_bytes(dt, k);  \
        int nb = k / QUANT_BLOCK;                                                                 \
        __m512i idx = _mm512_loadu_si512((IS_Q8) ? lanes_q8 : lanes_q4);                          \
        for (int r0 = 0; r0 < rows; r0 += XQ_ROWS) {                                              \
            int nr = rows - r0 < XQ_ROWS ? rows - r0 : XQ_ROWS;                                   \
            const uint8_t *row[XQ_ROWS];                                                          \
            group_rows(w, rb, r0, nr, XQ_ROWS, row);                                              \
            __m512 acc[XQ_ROWS];                                                                  \
            __m256 acc1[XQ_ROWS];                                                                 \
            for (int i = 0; i < XQ_ROWS; i++) {                                                   \
                acc[i] = _mm512_setzero_ps();                                                     \
                acc1[i] = _mm256_setzero_ps();                                                    \
            }                                                                                     \
            int b = 0;                                                                            \
            pf_walk pf = pf_start(rb, XQ_ROWS, XQ_AHEAD_BLOCKS * bb);                             \
            for (; b + 2 <= nb; b += 2, pf_step(&pf, 2 * bb)) {                                   \
                __m512i xv = _mm512_loadu_si512(xqq + (size_t)b * QUANT_BLOCK);                   \
                if (!(IS_Q8))                                                                     \
                    xv = _mm512_shuffle_i64x2(xv, xv, _MM_SHUFFLE(3, 1, 2, 0));                   \
                __m128 dx2 = _mm_castpd_ps(_mm_load_sd((const double *)(xd + b)));                \
                __m512i neg_s = _mm512_permutexvar_epi32(                                         \
                    idx, _mm512_castsi128_si512(_mm_setr_epi32(-xs[b], -xs[b + 1], 0, 0)));       \
                (void)neg_s;                                                                      \
                for (int i = 0; i < XQ_ROWS; i++) {                                               \
                    const uint8_t *blk = row[i] + (size_t)b * bb;                                 \
                    pf_row(&pf, row[i]);                                                          \
                    pf_row(&pf, row[i] + bb);                                                     \
                    __m512i p = (IS_Q8) ? DOT2_Q8(bytes2(blk, blk + bb), xv)                      \
                                        : DOT2_Q4(nibbles2(blk, blk + bb), xv, neg_s);            \
                    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p),                               \
                                             scales2(blk, blk + bb, dx2, idx), acc[i]);           \
                }                                                                                 \
            }                                                                                     \
            if (b < nb) {                                                                         \
                __m256i xv = _mm256_loadu_si256((const __m256i *)(xqq + (size_t)b * QUANT_BLOCK)); \
                __m256i neg_s = _mm256_set1_epi32(-xs[b]);                                        \
                (void)neg_s;                                                                      \
                for (int i = 0; i < XQ_ROWS; i++) {                                               \
                    const uint8_t *blk = row[i] + (size_t)b * bb;                                 \
                    __m256i p = (IS_Q8)                                                           \
                        ? DOT_Q8(_mm256_loadu_si256((const __m256i *)(blk + 2)), xv)              \
                        : DOT_Q4(nibbles(blk), xv, neg_s);                                        \
                    acc1[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),                              \
                                              _mm256_set1_ps(scale_f32(blk) * xd[b]), acc1[i]);   \
                }                                                                                 \
            }                                                                                     \
            for (int i = 0; i < nr; i++)                                                          \
                y[r0 + i] = _mm512_reduce_add_ps(acc[i]) + hsum256(acc1[i]);                      \
        }                                                                                         \
    } while (0)

void CPU_FN(gemv_xq8)(const void *xq, int k, dattn_dtype dt, const void *w, int rows, float *y)
{
    if (dt == DATTN_DTYPE_Q8_0)
        XQ_GEMV_X512(1, dot2_q8_madd, dot2_q4_madd, dot_q8_madd, dot_q4_madd);
    else
        XQ_GEMV_X512(0, dot2_q8_madd, dot2_q4_madd, dot_q8_madd, dot_q4_madd);
}

/* vpdpbusd (AVX512-VNNI): unsigned x signed bytes, four products into each int32 lane in one
 * instruction, no int16 step. */
#define VNNI __attribute__((target("avx512vnni"))) static inline
VNNI __m256i dot_q8_vnni(__m256i w, __m256i x)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

VNNI __m256i dot_q4_vnni(__m256i u, __m256i x, __m256i neg_s)
{
    return _mm256_dpbusd_epi32(neg_s, u, x);
}

VNNI __m512i dot2_q8_vnni(__m512i w, __m512i x)
{
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_abs_epi8(w), sign_x(w, x));
}

VNNI __m512i dot2_q4_vnni(__m512i u, __m512i x, __m512i neg_s)
{
    return _mm512_dpbusd_epi32(neg_s, u, x);
}

__attribute__((target("avx512vnni"))) void gemv_xq8_avx512vnni(const void *xq, int k,
                                                                dattn_dtype dt, const void *w,
                                                                int rows, float *y)
{
    if (dt == DATTN_DTYPE_Q8_0)
        XQ_GEMV_X512(1, dot2_q8_vnni, dot2_q4_vnni, dot_q8_vnni, dot_q4_vnni);
    else
        XQ_GEMV_X512(0, dot2_q8_vnni, dot2_q4_vnni, dot_q8_vnni, dot_q4_vnni);
}

/* q8_0 / q4_0 with AVX512-VBMI (and VNNI): eight blocks of a row (a chunk) at a time, each
 * block's dot summed exactly in int32 before it meets its scale. The kernel above spends about half
 * its instructions per block pair on the two f16 scales (two scalar loads, combine, convert,
 * multiply, permute) and on a convert + FMA of the pair's partials; here those run once per chunk:
 * one vpermt2b puts the chunk's 8 f16 scales in the lanes that hold their blocks' sums (zeros in
 * the others), then one convert, one multiply by x's scales and one FMA into the row's 16 lanes.
 * The products and scales are exactly those of the reference (f32(dw * dx) times an exact integer
 * dot); only the f32 summation order differs. A k that is not a multiple of 256 runs its last
 * blocks one at a time. Every load stays inside the chunk (the last chunk of the last row ends the
 * weights).
 *
 * q4_0: the chunk is 144 bytes, loaded at offsets 0, 64, 72 and 80.
 *   - vpermt2b picks out of (0, 64) the 64 nibble bytes of blocks 0-3, one block per 128-bit
 *     quarter, and out of (72, 80) those of blocks 4-7. Low nibbles are weights 0-15 of a block,
 *     high ones 16-31, so x is regrouped the same way once per chunk for the whole row group.
 *   - vpdpbusd leaves four int32 partials of block q in quarter q (blocks 0-3 in a, 4-7 in b);
 *     -8 * s of each block starts one lane (the q4_0 offset, as in dot2_q4_vnni).
 *   - One unpack/add/shuffle round turns a and b into [A B A B] per quarter q: the exact sums of
 *     blocks q and 4 + q in lanes 4q and 4q + 1 (4q + 2 and 4q + 3 repeat them, scale 0).
 * q8_0: the chunk is 272 bytes; each pair's 64 weight bytes are loaded as by bytes2.
 *   - vpdpbusd multiplies unsigned by signed bytes, so the weights go in as w + 128 (one xor) and
 *     each block's dot starts at -128 * s (the kernel above takes |w| and moves w's sign onto x:
 *     three instructions).
 *   - Pair m leaves block 2m in lanes 0-7 and 2m + 1 in lanes 8-15; two unpack/add rounds and a
 *     swap of quarters give the sum of block 2m in lane m of quarters 0 and 1, of block 2m + 1 in
 *     lane m of quarters 2 and 3; the scales go to quarters 0 and 2 (from loads at 0, 64, 136 and
 *     200). */
#define VBMI __attribute__((target("avx512vnni,avx512vbmi")))
#define PICK_ID(o) (o)
#define PICK_B(o) ((o) <= 135 ? (o) - 72 : (o) - 16)   /* from the loads at 72 (0-63) and 80 (64-127) */
#define PICK16(F, o)                                                                              \
    F(o), F(o + 1), F(o + 2), F(o + 3), F(o + 4), F(o + 5), F(o + 6), F(o + 7), F(o + 8),         \
        F(o + 9), F(o + 10), F(o + 11), F(o + 12), F(o + 13), F(o + 14), F(o + 15)
static const uint8_t q4_pick_a[64] = {PICK16(PICK_ID, 2), PICK16(PICK_ID, 20), PICK16(PICK_ID, 38),
                                      PICK16(PICK_ID, 56)};
static const uint8_t q4_pick_b[64] = {PICK16(PICK_B, 74), PICK16(PICK_B, 92), PICK16(PICK_B, 110),
                                      PICK16(PICK_B, 128)};
/* Scale bytes of blocks q and 4 + q into f16 lanes 4q and 4q + 1; the mask zeroes the rest. */
static const uint8_t q4_pick_scale[64] = {0, 1, 72, 73, 0, 0, 0, 0, 18, 19, 90, 91, 0, 0, 0, 0,
                                          36, 37, 108, 109, 0, 0, 0, 0, 54, 55, 126, 127};
#define Q4_SCALE_BYTES 0x0F0F0F0Full
static const int32_t q4_lanes_dx[16] = {0, 4, 0, 4, 1, 5, 1, 5, 2, 6, 2, 6, 3, 7, 3, 7};
static const int32_t q4_lanes_s[2][16] = {{0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0},
                                          {4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0}};
#undef PICK16
#undef PICK_B
#undef PICK_ID
/* f16 lanes 0-3: blocks 0, 2, 4, 6; lanes 8-11: blocks 1, 3, 5, 7. Blocks 0-3 lie at the same
 * offsets from the loads at 0 and 64 as blocks 4-7 from those at 136 and 200. */
static const uint8_t q8_pick_scale[64] = {0, 1, 68, 69, 0, 1, 68, 69, 0, 0, 0, 0, 0, 0, 0, 0,
                                          34, 35, 102, 103, 34, 35, 102, 103};
#define Q8_SCALE_BYTES_A 0x000F000Full   /* blocks 0-3 */
#define Q8_SCALE_BYTES_B 0x00F000F0ull   /* blocks 4-7 */
static const int32_t q8_lanes_dx[16] = {0, 2, 4, 6, 0, 2, 4, 6, 1, 3, 5, 7, 1, 3, 5, 7};

/* What a chunk of x gives each row of a group: x laid out as the row's bytes are, the dots'
 * starting values (the offsets -8 s or -128 s), x's scales in the lanes of the block sums. */
typedef struct x_chunk {
    __m512i x[4], init[4];
    __m512 dx;
} x_chunk;

/* Per 128-bit quarter: [a0 + a2, b0 + b2, a1 + a3, b1 + b3]. */
VBMI static inline __m512i add_pairs32(__m512i a, __m512i b)
{
    return _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
}

/* -(s << shift) of the chunk's 8 blocks in lanes 0-7. */
VBMI static inline __m512i chunk_offsets(const int32_t *xs, int shift)
{
    __m256i s8 = _mm256_loadu_si256((const __m256i *)xs);
    return _mm512_castsi256_si512(
        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_sll_epi32(s8, _mm_cvtsi32_si128(shift))));
}

VBMI static inline x_chunk x_chunk_q4(const int8_t *xc, const int32_t *xs, const float *xd)
{
    x_chunk c;
    __m512i neg = chunk_offsets(xs, 3);
    for (int h = 0; h < 2; h++) {   /* blocks 0-3, then 4-7 */
        __m512i x0 = _mm512_loadu_si512(xc + 128 * h), x1 = _mm512_loadu_si512(xc + 128 * h + 64);
        c.x[2 * h] = _mm512_shuffle_i64x2(x0, x1, _MM_SHUFFLE(2, 0, 2, 0));       /* weights 0-15 */
        c.x[2 * h + 1] = _mm512_shuffle_i64x2(x0, x1, _MM_SHUFFLE(3, 1, 3, 1));   /* 16-31 */
        c.init[h] = _mm512_maskz_permutexvar_epi32(0x1111, _mm512_loadu_si512(q4_lanes_s[h]), neg);
    }
    c.dx = _mm512_permutexvar_ps(_mm512_loadu_si512(q4_lanes_dx),
                                 _mm512_castps256_ps512(_mm256_loadu_ps(xd)));
    return c;
}

VBMI static inline x_chunk x_chunk_q8(const int8_t *xc, const int32_t *xs, const float *xd)
{
    x_chunk c;
    __m512i neg = chunk_offsets(xs, 7);
    for (int m = 0; m < 4; m++) {   /* block pairs */
        c.x[m] = _mm512_loadu_si512(xc + 64 * m);
        __m512i lanes = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 2 * m + 1,
                                         0, 0, 0, 0, 0, 0, 0, 2 * m);
        c.init[m] = _mm512_maskz_permutexvar_epi32(0x0101, lanes, neg);
    }
    c.dx = _mm512_permutexvar_ps(_mm512_loadu_si512(q8_lanes_dx),
                                 _mm512_castps256_ps512(_mm256_loadu_ps(xd)));
    return c;
}

/* acc + the chunk at p (one row's 8 blocks) times x's chunk, in the lanes described above. */
VBMI static inline __m512 chunk_q4(const uint8_t *p, const x_chunk *c, __m512 acc)
{
    const __m512i low4 = _mm512_set1_epi8(15);
    __m512i l0 = _mm512_loadu_si512(p), l1 = _mm512_loadu_si512(p + 64);
    __m512i nib[2] = {_mm512_permutex2var_epi8(l0, _mm512_loadu_si512(q4_pick_a), l1),
                      _mm512_permutex2var_epi8(_mm512_loadu_si512(p + 72),
                                               _mm512_loadu_si512(q4_pick_b),
                                               _mm512_loadu_si512(p + 80))};
    __m512i d[2];
    for (int h = 0; h < 2; h++) {
        d[h] = _mm512_dpbusd_epi32(c->init[h], _mm512_and_si512(nib[h], low4), c->x[2 * h]);
        d[h] = _mm512_dpbusd_epi32(d[h], _mm512_and_si512(_mm512_srli_epi16(nib[h], 4), low4),
                                   c->x[2 * h + 1]);
    }
    __m512i t = add_pairs32(d[0], d[1]);
    t = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_BADC));
    __m512i sh = _mm512_maskz_permutex2var_epi8(Q4_SCALE_BYTES, l0,
                                                _mm512_loadu_si512(q4_pick_scale), l1);
    __m512 sc = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(sh)), c->dx);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), sc, acc);
}

VBMI static inline __m512 chunk_q8(const uint8_t *p, const x_chunk *c, __m512 acc)
{
    const size_t bb = Q8_0_BLOCK_BYTES;
    __m512i d[4];
    for (int m = 0; m < 4; m++) {
        const uint8_t *pair = p + 2 * (size_t)m * bb;
        __m512i wb = _mm512_xor_si512(bytes2(pair, pair + bb), _mm512_set1_epi8(-128));
        d[m] = _mm512_dpbusd_epi32(c->init[m], wb, c->x[m]);
    }
    __m512i u01 = add_pairs32(d[0], d[1]), u23 = add_pairs32(d[2], d[3]);
    __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi64(u01, u23), _mm512_unpackhi_epi64(u01, u23));
    t = _mm512_add_epi32(t, _mm512_shuffle_i64x2(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
    const __m512i pick = _mm512_loadu_si512(q8_pick_scale);
    __m512i sa = _mm512_permutex2var_epi8(_mm512_loadu_si512(p), pick, _mm512_loadu_si512(p + 64));
    __m512i sb = _mm512_permutex2var_epi8(_mm512_loadu_si512(p + 136), pick,
                                          _mm512_loadu_si512(p + 200));
    __m512i sh = _mm512_mask_mov_epi8(_mm512_maskz_mov_epi8(Q8_SCALE_BYTES_A, sa),
                                      Q8_SCALE_BYTES_B, sb);
    __m512 sc = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(sh)), c->dx);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), sc, acc);
}

/* The row-group loop, inlined once per format. */
VBMI __attribute__((always_inline)) static inline void gemv_chunks(int is_q8, const void *xq, int k,
                                                                  const void *w, int rows, float *y)
{
    const int8_t *xqq = xq;
    const float *xd = xq_d(xq, k);
    const int32_t *xs = xq_s(xq, k);
    dattn_dtype dt = is_q8 ? DATTN_DTYPE_Q8_0 : DATTN_DTYPE_Q4_0;
    const size_t bb = is_q8 ? Q8_0_BLOCK_BYTES : Q4_0_BLOCK_BYTES, rb = quant_row_bytes(dt, k);
    const int nb = k / QUANT_BLOCK, nc = nb / 8;
    for (int r0 = 0; r0 < rows; r0 += XQ_ROWS) {
        int nr = rows - r0 < XQ_ROWS ? rows - r0 : XQ_ROWS;
        const uint8_t *row[XQ_ROWS];
        group_rows(w, rb, r0, nr, XQ_ROWS, row);
        __m512 acc[XQ_ROWS];
        __m256 acc1[XQ_ROWS];
        for (int i = 0; i < XQ_ROWS; i++) {
            acc[i] = _mm512_setzero_ps();
            acc1[i] = _mm256_setzero_ps();
        }
        pf_walk pf = pf_start(rb, XQ_ROWS, XQ_AHEAD_BLOCKS * bb);
        for (int c = 0; c < nc; c++, pf_step(&pf, 8 * bb)) {
            size_t b = (size_t)c * 8;
            x_chunk xc = is_q8 ? x_chunk_q8(xqq + b * QUANT_BLOCK, xs + b, xd + b)
                               : x_chunk_q4(xqq + b * QUANT_BLOCK, xs + b, xd + b);
            for (int i = 0; i < XQ_ROWS; i++) {
                for (size_t o = 0; o < 8 * bb; o += 64)
                    pf_row(&pf, row[i] + o);
                const uint8_t *p = row[i] + b * bb;
                acc[i] = is_q8 ? chunk_q8(p, &xc, acc[i]) : chunk_q4(p, &xc, acc[i]);
            }
        }
        for (int b = nc * 8; b < nb; b++) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(xqq + (size_t)b * QUANT_BLOCK));
            __m256i neg_s = _mm256_set1_epi32(-xs[b]);
            for (int i = 0; i < XQ_ROWS; i++) {
                const uint8_t *blk = row[i] + (size_t)b * bb;
                __m256i p = is_q8 ? dot_q8_vnni(_mm256_loadu_si256((const __m256i *)(blk + 2)), xv)
                                  : dot_q4_vnni(nibbles(blk), xv, neg_s);
                acc1[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                          _mm256_set1_ps(scale_f32(blk) * xd[b]), acc1[i]);
            }
        }
        for (int i = 0; i < nr; i++)
            y[r0 + i] = _mm512_reduce_add_ps(acc[i]) + hsum256(acc1[i]);
    }
}

VBMI void gemv_xq8_avx512vbmi(const void *xq, int k, dattn_dtype dt, const void *w, int rows,
                              float *y)
{
    if (dt == DATTN_DTYPE_Q8_0)
        gemv_chunks(1, xq, k, w, rows, y);
    else
        gemv_chunks(0, xq, k, w, rows, y);
}

/* The same sums over the interleaved layout (src/cpu/interleave.h): one group of nr rows at g
 * into y[0 .. nr). The chunks of the group's rows lie one after another, so the kernel reads one
 * stream front to back and prefetches it at one distance (the bytes gemv_chunks runs ahead in
 * its four rows together). Each row's sum takes the steps it takes in gemv_chunks (chunk by
 * chunk, then the blocks after the last whole chunk, then the same reduction): both layouts give
 * the same bits. */
_Static_assert(INTERLEAVE_ROWS == XQ_ROWS && INTERLEAVE_BLOCKS == 8,
               "the interleaved layout is the VBMI kernel's row group and chunk");
VBMI __attribute__((always_inline)) static inline void x4_group(int is_q8, const void *xq, int k,
                                                               const uint8_t *g, int nr, float *y)
{
    const int8_t *xqq = xq;
    const float *xd = xq_d(xq, k);
    const int32_t *xs = xq_s(xq, k);
    dattn_dtype dt = is_q8 ? DATTN_DTYPE_Q8_0 : DATTN_DTYPE_Q4_0;
    const size_t bb = is_q8 ? Q8_0_BLOCK_BYTES : Q4_0_BLOCK_BYTES, cb = 8 * bb;
    const size_t ahead = (size_t)XQ_AHEAD_BLOCKS * bb * XQ_ROWS;
    const int nb = k / QUANT_BLOCK, nc = nb / 8;
    __m512 acc[XQ_ROWS];
    __m256 acc1[XQ_ROWS];
    for (int i = 0; i < XQ_ROWS; i++) {
        acc[i] = _mm512_setzero_ps();
        acc1[i] = _mm256_setzero_ps();
    }
    const uint8_t *p = g;
    for (int c = 0; c < nc; c++) {
        size_t b = (size_t)c * 8;
        x_chunk xc = is_q8 ? x_chunk_q8(xqq + b * QUANT_BLOCK, xs + b, xd + b)
                           : x_chunk_q4(xqq + b * QUANT_BLOCK, xs + b, xd + b);
        for (size_t o = 0; o < (size_t)nr * cb; o += 64)
            __builtin_prefetch(p + ahead + o, 0, 3);
        for (int i = 0; i < nr; i++, p += cb)
            acc[i] = is_q8 ? chunk_q8(p, &xc, acc[i]) : chunk_q4(p, &xc, acc[i]);
    }
    for (int b = nc * 8; b < nb; b++) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)(xqq + (size_t)b * QUANT_BLOCK));
        __m256i neg_s = _mm256_set1_epi32(-xs[b]);
        for (int i = 0; i < nr; i++) {
            const uint8_t *blk =
                g + interleave_tail_offset(dt, k, nr, i) + (size_t)(b - nc * 8) * bb;
            __m256i d = is_q8 ? dot_q8_vnni(_mm256_loadu_si256((const __m256i *)(blk + 2)), xv)
                              : dot_q4_vnni(nibbles(blk), xv, neg_s);
            acc1[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d),
                                      _mm256_set1_ps(scale_f32(blk) * xd[b]), acc1[i]);
        }
    }
    for (int i = 0; i < nr; i++)
        y[i] = _mm512_reduce_add_ps(acc[i]) + hsum256(acc1[i]);
}

VBMI void gemv_xq8_x4_avx512vbmi(const void *xq, int k, dattn_dtype dt, const void *w, int rows,
                                 int r0, int r1, float *y)
{
    const int is_q8 = dt == DATTN_DTYPE_Q8_0;
    const size_t rb = quant_row_bytes(dt, k);
    for (int g = r0 / XQ_ROWS; g * XQ_ROWS < r1; g++) {
        int first = g * XQ_ROWS, nr = interleave_group_rows(rows, g);
        const uint8_t *gp = (const uint8_t *)w + (size_t)first * rb;
        if (nr == XQ_ROWS && first >= r0 && first + XQ_ROWS <= r1) {   /* a whole group */
            if (is_q8)
                x4_group(1, xq, k, gp, XQ_ROWS, y + (first - r0));
            else
                x4_group(0, xq, k, gp, XQ_ROWS, y + (first - r0));
            continue;
        }
        float y4[XQ_ROWS];   /* the group the range starts or ends in: all its rows, some kept */
        if (is_q8)
            x4_group(1, xq, k, gp, nr, y4);
        else
            x4_group(0, xq, k, gp, nr, y4);
        for (int i = 0; i < nr; i++)
            if (first + i >= r0 && first + i < r1)
                y[first + i - r0] = y4[i];
    }
}
#undef Q8_SCALE_BYTES_A
#undef Q8_SCALE_BYTES_B
#undef Q4_SCALE_BYTES
#undef VBMI
#undef VNNI
#else
void CPU_FN(gemv_xq8)(const void *xq, int k, dattn_dtype dt, const void *w, int rows, float *y)
{
    if (dt == DATTN_DTYPE_Q8_0)
        XQ_GEMV_X86(1, dot_q8_madd, dot_q4_madd);
    else
        XQ_GEMV_X86(0, dot_q8_madd, dot_q4_madd);
}

/* AVX-VNNI, the VEX form of vpdpbusd on 256-bit vectors (Intel cores from Alder Lake on,
 * including the E-cores of N100-class parts, and AMD Zen 5): four unsigned x signed byte
 * products into each int32 lane in one instruction, where AVX2 takes vpmaddubsw + vpmaddwd.
 * q4_0: the nibbles are the unsigned side, the block's dot starts at -8 s. q8_0: |w| times x
 * with w's sign, as dot_q8_madd, so each lane holds its exact partial dot. (Taking w + 128
 * against a -128 s start saves an instruction, but the lanes, converted to f32 one by one, would
 * then carry 128 times their share of x, cancelling only in the final sum: an f32 error ~100
 * times the block's.) */
#define AVXVNNI __attribute__((target("avxvnni"))) static inline
AVXVNNI __m256i dot_q8_avxvnni(__m256i w, __m256i x)
{
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w),
                                   _mm256_sign_epi8(x, w));
}

AVXVNNI __m256i dot_q4_avxvnni(__m256i u, __m256i x, __m256i neg_s)
{
    return _mm256_dpbusd_avx_epi32(neg_s, u, x);
}

__attribute__((target("avxvnni"))) void gemv_xq8_avxvnni(const void *xq, int k, dattn_dtype dt,
                                                          const void *w, int rows, float *y)
{
    if (dt == DATTN_DTYPE_Q8_0)
        XQ_GEMV_X86(1, dot_q8_avxvnni, dot_q4_avxvnni);
    else
        XQ_GEMV_X86(0, dot_q8_avxvnni, dot_q4_avxvnni);
}
#undef AVXVNNI
#endif

#else   /* not x86 AVX2: NEON on aarch64, plain C elsewhere */

/* The 32 int8 weights of a block (q4_0: nibble - 8) into q. */
static inline void block_i8(int is_q8, const uint8_t *blk, int8_t *q)
{
    if (is_q8) {
        memcpy(q, blk + 2, QUANT_BLOCK);
        return;
    }
    for (int j = 0; j < QUANT_BLOCK / 2; j++) {
        q[j] = (int8_t)((blk[2 + j] & 15) - 8);
        q[j + QUANT_BLOCK / 2] = (int8_t)((blk[2 + j] >> 4) - 8);
    }
}

#if defined(__aarch64__)
typedef float32x4_t xacc;
static inline xacc xacc_zero(void) { return vdupq_n_f32(0.0f); }
static inline float xacc_sum(xacc a) { return vaddvq_f32(a); }

/* One block: int32x4 partial sums of w * x (sdot with the dot-product extension; otherwise smull
 * / smlal pairs into int16, which fit: |w x| <= 128 * 127), scaled into acc. */
static inline xacc xq_block(int is_q8, const uint8_t *blk, const int8_t *x, float dx, xacc acc)
{
    int8x16_t w0, w1;
    if (is_q8) {
        w0 = vld1q_s8((const int8_t *)blk + 2);
        w1 = vld1q_s8((const int8_t *)blk + 18);
    } else {
        uint8x16_t b = vld1q_u8(blk + 2), m = vdupq_n_u8(15);
        w0 = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(b, m)), vdupq_n_s8(8));
        w1 = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(b, 4)), vdupq_n_s8(8));
    }
    int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
#if defined(__ARM_FEATURE_DOTPROD)
    int32x4_t p = vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, x0), w1, x1);
#else
    int16x8_t a = vmlal_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)), vget_low_s8(w1),
                           vget_low_s8(x1));
    int16x8_t c = vmlal_high_s8(vmull_high_s8(w0, x0), w1, x1);
    int32x4_t p = vpadalq_s16(vpaddlq_s16(a), c);
#endif
    return vfmaq_n_f32(acc, vcvtq_f32_s32(p), scale_f32(blk) * dx);
}
#else
typedef float xacc;
static inline xacc xacc_zero(void) { return 0.0f; }
static inline float xacc_sum(xacc a) { return a; }

static inline xacc xq_block(int is_q8, const uint8_t *blk, const int8_t *x, float dx, xacc acc)
{
    int8_t q[QUANT_BLOCK];
    block_i8(is_q8, blk, q);
    int32_t s = 0;
    for (int j = 0; j < QUANT_BLOCK; j++)
        s += (int32_t)q[j] * x[j];
    return acc + (scale_f32(blk) * dx) * (float)s;
}
#endif

__attribute__((always_inline)) static inline void gemv_xq8_c(int is_q8, const void *xq, int k,
                                                              dattn_dtype dt, const void *w,
                                                              int rows, float *y)
{
    const int8_t *xqq = xq;
    const float *xd = xq_d(xq, k);
    size_t bb = block_bytes(dt), rb = quant_row_bytes(dt, k);
    int nb = k / QUANT_BLOCK;
    for (int r0 = 0; r0 < rows; r0 += XQ_ROWS) {
        int nr = rows - r0 < XQ_ROWS ? rows - r0 : XQ_ROWS;
        const uint8_t *row[XQ_ROWS];
        group_rows(w, rb, r0, nr, XQ_ROWS, row);
        xacc acc[XQ_ROWS];
        for (int i = 0; i < XQ_ROWS; i++)
            acc[i] = xacc_zero();
        pf_walk pf = pf_start(rb, XQ_ROWS, XQ_AHEAD_BLOCKS * bb);
        for (int b = 0; b < nb; b++, pf_step(&pf, bb))
            for (int i = 0; i < XQ_ROWS; i++) {
                const uint8_t *blk = row[i] + (size_t)b * bb;
                pf_row(&pf, row[i]);
                acc[i] = xq_block(is_q8, blk, xqq + (size_t)b * QUANT_BLOCK, xd[b], acc[i]);
            }
        for (int i = 0; i < nr; i++)
            y[r0 + i] = xacc_sum(acc[i]);
    }
}

void CPU_FN(gemv_xq8)(const void *xq, int k, dattn_dtype dt, const void *w, int rows, float *y)
{
    if (dt == DATTN_DTYPE_Q8_0)
        gemv_xq8_c(1, xq, k, dt, w, rows, y);
    else
        gemv_xq8_c(0, xq, k, dt, w, rows, y);
}
#endif

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

/* Where the k slice from block b on (b a multiple of 8: GEMM_KC apart) of row r of an
 * interleaved weight of x4_rows rows (src/cpu/interleave.h) starts: a k slice is one chunk of
 * the row, or its blocks after the last whole chunk, and lies in one piece either way. */
_Static_assert(GEMM_KC == INTERLEAVE_BLOCKS * QUANT_BLOCK, "a GEMM k slice is one interleaved chunk");
static inline const uint8_t *x4_slice(dattn_dtype dt, int k, const void *w, size_t row_bytes,
                                      int x4_rows, int r, int b)
{
    int g = r / INTERLEAVE_ROWS, i = r % INTERLEAVE_ROWS, nr = interleave_group_rows(x4_rows, g);
    int c = b / INTERLEAVE_BLOCKS;
    const uint8_t *group = (const uint8_t *)w + (size_t)g * INTERLEAVE_ROWS * row_bytes;
    if (c < k / QUANT_BLOCK / INTERLEAVE_BLOCKS)
        return group + interleave_chunk_offset(dt, nr, i, c);
    return group + interleave_tail_offset(dt, k, nr, i);
}

/* Weight rows [r0, r0 + nr) (nr <= 16), columns [pc, pc + kc) -> f32 [kc][16], rows past nr
 * zero. tmp holds kc floats. x4_rows: 0, rows stored one after another; else the rows of the
 * interleaved weight w (x4_slice). */
static void pack_panel(dattn_dtype dt, int k, const void *w, size_t row_bytes, int x4_rows, int r0,
                       int nr, int pc, int kc, float *restrict dst, float *restrict tmp)
{
    for (int j = 0; j < GEMM_PANEL; j++) {
        if (j < nr) {
            if (x4_rows)
                row_f32(dt, x4_slice(dt, k, w, row_bytes, x4_rows, r0 + j, pc / QUANT_BLOCK), 0,
                        kc, tmp);
            else
                row_f32(dt, (const uint8_t *)w + (size_t)(r0 + j) * row_bytes, (size_t)pc, kc,
                        tmp);
            for (int t = 0; t < kc; t++)
                dst[(size_t)t * GEMM_PANEL + j] = tmp[t];
        } else {
            for (int t = 0; t < kc; t++)
                dst[(size_t)t * GEMM_PANEL + j] = 0.0f;
        }
    }
}

/* y = x W^T for weight rows [r_first, r_first + rows) of w (n >= 2): x packed once per k slice,
 * each 16-row panel of W converted to f32 once per slice and swept by the micro-kernel. */
static void gemm_blocked(const float *x, int ldx, int n, int k, dattn_dtype dt, const void *w,
                         int x4_rows, int r_first, int rows, float *y, int ldy, float *scratch)
{
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
            pack_panel(dt, k, w, row_bytes, x4_rows, r_first + r0, nr, pc, kc, bpack, tmp);
            for (int ir = 0; ir < n; ir += GEMM_MR) {
                int nx = n - ir < GEMM_MR ? n - ir : GEMM_MR;
                micro(kc, xpack + (size_t)ir * kc, bpack, y + (size_t)ir * ldy + r0, ldy, nx, nr,
                      pc > 0);
            }
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
    gemm_blocked(x, ldx, n, k, dt, w, 0, 0, rows, y, ldy, scratch);
}

void CPU_FN(gemm_rows_x4)(const float *x, int ldx, int n, int k, dattn_dtype dt, const void *w,
                          int w_rows, int r0, int r1, float *y, int ldy, float *scratch)
{
    if (n <= 0 || r1 <= r0)
        return;
    if (k <= 0) {   /* an empty sum */
        for (int i = 0; i < n; i++)
            for (int r = r0; r < r1; r++)
                y[(size_t)i * ldy + (r - r0)] = 0.0f;
        return;
    }
    if (n > 1) {
        gemm_blocked(x, ldx, n, k, dt, w, w_rows, r0, r1 - r0, y, ldy, scratch);
        return;
    }
    /* One row of x (no scratch): each row's slices converted and dotted in turn. */
    size_t row_bytes = quant_row_bytes(dt, k);
    float tmp[GEMM_KC];
    for (int r = r0; r < r1; r++) {
        float acc = 0.0f;
        for (int pc = 0; pc < k; pc += GEMM_KC) {
            int kc = k - pc < GEMM_KC ? k - pc : GEMM_KC;
            row_f32(dt, x4_slice(dt, k, w, row_bytes, w_rows, r, pc / QUANT_BLOCK), 0, kc, tmp);
            for (int t = 0; t < kc; t++)
                acc += x[pc + t] * tmp[t];
        }
        y[r - r0] = acc;
    }
}
