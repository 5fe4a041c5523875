/* Projection kernels of the CPU backend (DESIGN §2, §6): y = x W^T for nn.Linear weights W [m][k]
 * read in the format the model holds them, row-major F32, F16 or BF16 as stored (the mapped file
 * is the weights: no f32 copy, no packed copy) or q8_0 / q4_0 blocks (src/quant.h). A streaming
 * GEMV (decode, one row of x) converts four weight rows at a time to f32 in registers and dots
 * them with x; a blocked GEMM (prefill) converts one 16-row panel of a k slice at a time into the
 * [kc][16] layout its register-tile micro-kernel reads. The backend's decode GEMV of q8_0 / q4_0
 * rows is the integer-dot one below instead (x quantized once per call). gemm.c is compiled once
 * per instruction set (src/cpu/isa.h). */
#ifndef DATTN_CPU_GEMM_H
#define DATTN_CPU_GEMM_H

#include <stddef.h>

#include "dattn.h"
#include "quant.h"

#define GEMM_PANEL 16   /* weight rows (output columns) per packed panel */
#define GEMM_KC 256     /* k slice of the GEMM: a packed panel is GEMM_KC * 16 floats (16 KiB);
                         * whole q8_0 / q4_0 blocks */
_Static_assert(GEMM_KC % QUANT_BLOCK == 0, "a GEMM k slice holds whole weight blocks");

/* Floats of scratch gemm_rows needs for n rows of x: the packed x of one k slice, a packed
 * weight panel and a converted row. */
static inline size_t gemm_scratch_floats(int n)
{
    return n <= 1 ? 0 : ((size_t)n + 16) * GEMM_KC + (size_t)(GEMM_PANEL + 1) * GEMM_KC;
}

/* ---- decode GEMV with integer dot products (q8_0 / q4_0 weights) ----------------------------
 *
 * For one row of x against block-format weights the backend quantizes x once per call (before
 * the rows are split across threads) into q8 blocks of 32, then every weight block is dotted with
 * the matching x block in int8 x int8 -> int32 arithmetic (VNNI vpdpbusd, AVX2 vpmaddubsw +
 * vpmaddwd, NEON sdot / smull, or plain C), and only the block's int32 sum is scaled:
 *
 *   x block b (32 values x_j, all f32 arithmetic, round to nearest even):
 *     amax = max_j |x_j|,  d = amax / 127,  id = d != 0 ? 1 / d : 0,
 *     q_j  = rint(x_j * id)  (in [-127, 127]),  s = sum_j q_j
 *     d is NaN when the block holds a NaN or an infinity (then q_j is meaningless, but the
 *     products it scales are NaN, as they would be unquantized).
 *   y[r] = sum_b (dw_rb * d_b) * isum_rb,  isum_rb = sum_j wq_rbj * q_bj   (exact, int32)
 *     wq = the block's int8 (q8_0) or nibble - 8 (q4_0); dw_rb * d_b is one f32 product, the
 *     sum over blocks f32 in an order of the kernel's choosing.
 *
 * The quantized row lives in one buffer of xq8_bytes(k) bytes (64-byte aligned): int8 q[k], then
 * f32 d[k/32], then int32 s[k/32]. k must be a multiple of 32. */
static inline size_t xq8_bytes(int k)
{
    return (size_t)k + 8 * (size_t)(k / 32);
}

/* Byte offsets in a quantized row of k values of its block scales d and its block sums s. */
static inline size_t xq8_d_offset(int k)
{
    return (size_t)k;
}

static inline size_t xq8_s_offset(int k)
{
    return (size_t)k + 4 * (size_t)(k / 32);
}

/* y[i*ldy + r] = sum_t x[i*ldx + t] * W[r][t] for rows i in [0, n) and weight rows r in
 * [0, rows): w points at weight row 0 of the block ([rows][k] of dtype dt, aligned to its
 * element size). Nothing else of y is written. scratch holds gemm_scratch_floats(n) floats
 * (64-byte aligned; none for n == 1, the GEMV). Single-threaded, no allocation: callers split
 * the rows across threads (all three functions). */
#define GEMM_DECLARE(isa)                                                                        \
    void gemm_rows_##isa(const float *x, int ldx, int n, int k, dattn_dtype dt, const void *w,   \
                         int rows, float *y, int ldy, float *scratch);                           \
    /* The same for rows [r0, r1) of a q8_0 / q4_0 weight of w_rows rows held interleaved      \
     * (src/cpu/interleave.h), into y[i*ldy + (r - r0)]; the same bits as gemm_rows over those  \
     * rows stored as usual when n >= 2 (n == 1: a plain f32 dot, no scratch). */               \
    void gemm_rows_x4_##isa(const float *x, int ldx, int n, int k, dattn_dtype dt, const void *w, \
                            int w_rows, int r0, int r1, float *y, int ldy, float *scratch);       \
    /* x [k] -> the quantized row at xq (xq8_bytes(k) bytes). */                                  \
    void xq8_quantize_##isa(const float *x, int k, void *xq);                                    \
    /* y[r] = the integer-dot GEMV above, for weight rows [0, rows) of w (q8_0 or q4_0). */       \
    void gemv_xq8_##isa(const void *xq, int k, dattn_dtype dt, const void *w, int rows, float *y);

GEMM_DECLARE(generic)
#if defined(__x86_64__)
GEMM_DECLARE(avx2)
/* In the avx2 build, for CPUs with AVX-VNNI (the 256-bit VEX vpdpbusd); check cpu_has_avxvnni()
 * before calling. */
void gemv_xq8_avxvnni(const void *xq, int k, dattn_dtype dt, const void *w, int rows, float *y);
GEMM_DECLARE(avx512)
/* In the avx512 build, for CPUs with AVX512-VNNI (vpdpbusd); check avx512vnni before calling. */
void gemv_xq8_avx512vnni(const void *xq, int k, dattn_dtype dt, const void *w, int rows, float *y);
/* The same with AVX512-VBMI as well (vpermt2b): eight blocks at a time; check avx512vnni and
 * avx512vbmi before calling. */
void gemv_xq8_avx512vbmi(const void *xq, int k, dattn_dtype dt, const void *w, int rows, float *y);
/* The VBMI kernel over the interleaved layout (src/cpu/interleave.h): w holds all `rows` rows of
 * the weight, interleaved; y[r - r0] for rows r in [r0, r1) (any range), bit for bit what
 * gemv_xq8_avx512vbmi gives for those rows stored as usual. */
void gemv_xq8_x4_avx512vbmi(const void *xq, int k, dattn_dtype dt, const void *w, int rows,
                            int r0, int r1, float *y);
#endif

#undef GEMM_DECLARE

#if defined(__x86_64__)
#include <cpuid.h>
/* AVX-VNNI: CPUID leaf 7, sub-leaf 1, EAX bit 4 (not every compiler's __builtin_cpu_supports
 * knows the name), on a CPU whose AVX2 the OS enables. */
static inline int cpu_has_avxvnni(void)
{
    unsigned a, b, c, d;
    return __builtin_cpu_supports("avx2") && __get_cpuid_count(7, 1, &a, &b, &c, &d) &&
           (a >> 4 & 1u);
}
#endif

#endif
