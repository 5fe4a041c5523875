/* Per-ISA projection kernels (DESIGN §2): blocked GEMM for prefill and streaming GEMV for decode
 * over weights packed by gemm_pack (src/cpu/gemm.h). Plain C for the auto-vectorizer; the build
 * compiles this file once per instruction set with -DCPU_ISA=<isa>, and CPU_FN names each copy. */
#include <math.h>
#include <stddef.h>

#include "cpu/gemm.h"
#include "cpu/isa.h"

#ifndef CPU_ISA
#error "compile with -DCPU_ISA=<isa> (generic, avx2, avx512)"
#endif

/* Micro-kernel: MR rows of x times NP packed panels (NR = 16*NP columns): an MR x NR accumulator
 * tile in vector registers over a KC-long slice of k. Per k step it loads NR weights (NR/width
 * vectors), broadcasts MR packed x values and issues MR*NR/width FMAs into the tile:
 *
 *            b[p][0..NR)        one or two vector loads
 *   x[p][0] | acc[0][0..NR) |
 *   x[p][1] | acc[1][0..NR) |   acc[i][:] += x[p][i] * b[p][:]  (broadcast x, FMA)
 *     ...   |      ...      |
 *
 * Shapes (measured on Zen 4 with bench_gemm, n=2048 k=m=1024): avx512 12 x 16 (12 zmm of 32),
 * avx2 4 x 16 (8 of 16 ymm; 6 x 16 spills in gcc 12), generic 3 x 16 (12 of 16 xmm). Wider
 * tiles (NP = 2) measured slower. Blocking, BLIS order: for each KC slice of k, for each MC block
 * of rows (packed into a stack buffer, MC*KC*4 = 48 KiB, stays in L2), for each panel (KC*64 =
 * 16 KiB of weights, stays in L1 while the MC/MR row tiles reuse it), run the micro-kernel. */
#ifndef GEMM_MR
#  if defined(__AVX512F__)
#    define GEMM_MR 12
#    define GEMM_NP 1
#  elif defined(__AVX2__)
#    define GEMM_MR 4
#    define GEMM_NP 1
#  else
#    define GEMM_MR 3
#    define GEMM_NP 1
#  endif
#endif
#ifndef GEMM_KC
#  define GEMM_KC 256    /* k slice */
#endif
#ifndef GEMM_MC
#  define GEMM_MC 48     /* rows per packed x block; a multiple of every MR above */
#endif
#define GEMM_NR (GEMM_NP * GEMM_PANEL)

#if GEMM_MC % GEMM_MR != 0
#  error "GEMM_MC must be a multiple of GEMM_MR"
#endif
#if GEMM_NP != 1 && GEMM_NP != 2
#  error "GEMM_NP must be 1 or 2"
#endif

/* fmaf only where it is one instruction; otherwise (no FMA unit, e.g. the generic x86-64 build)
 * a call to libm would not vectorize, so use a separate multiply and add. */
#if defined(FP_FAST_FMAF)
#  define MADD(a, b, c) fmaf((a), (b), (c))
#else
#  define MADD(a, b, c) ((a) * (b) + (c))
#endif

/* acc[MR][NR] = x * b, x: packed [kc][MR], b: NP panels of [kc][16], panel q at b + q*pstride. Then
 * y = acc (first k slice) or y += acc, for the first `rows` rows and `cols` columns. */
/* noinline: inlined into the blocking loops, gcc 12 no longer keeps acc in registers. Loop
 * vectorization off: on the base ISA (mul + add) it vectorizes the k loop through memory, 5x
 * slower; the SLP vectorizer alone builds the register tile. */
#if defined(__GNUC__) && !defined(__clang__)
#  define MICRO_ATTR __attribute__((noinline, optimize("no-tree-loop-vectorize")))
#else
#  define MICRO_ATTR __attribute__((noinline))
#endif
MICRO_ATTR static void micro(int kc, const float *restrict x, const float *restrict b,
                         size_t pstride, float *restrict y, int ldy, int rows, int cols,
                         int accumulate)
{
    /* The unroll pragmas make every acc index a constant, so gcc scalarizes acc and the SLP
     * vectorizer keeps it in registers; without them acc lives on the stack (check gcc -S). */
    float acc[GEMM_MR][GEMM_NR] = {{0}};
    for (int p = 0; p < kc; p++) {
        const float *bp = b + (size_t)p * GEMM_PANEL;
#pragma GCC unroll 16
        for (int i = 0; i < GEMM_MR; i++) {
            float xi = x[(size_t)p * GEMM_MR + i];
#pragma GCC unroll 64
            for (int j = 0; j < GEMM_NR; j++)
                acc[i][j] = MADD(xi, bp[(j / GEMM_PANEL) * pstride + j % GEMM_PANEL], acc[i][j]);
        }
    }
    if (rows == GEMM_MR && cols == GEMM_NR) {
        for (int i = 0; i < GEMM_MR; i++)
            for (int j = 0; j < GEMM_NR; j++)
                y[(size_t)i * ldy + j] = accumulate ? y[(size_t)i * ldy + j] + acc[i][j] : acc[i][j];
        return;
    }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            y[(size_t)i * ldy + j] = accumulate ? y[(size_t)i * ldy + j] + acc[i][j] : acc[i][j];
}

/* out[0..16) = sum_t x[t] * b[t][0..16): one packed panel [k][16]. Four k-interleaved
 * accumulator sets give independent FMA chains (latency hidden); each lane is one output column,
 * so no horizontal sums. Unrolled like micro() so acc stays in registers. */
__attribute__((noinline)) static void panel_dot(int k, const float *restrict x,
                                                const float *restrict b, float *restrict out)
{
    float acc[4][GEMM_PANEL] = {{0}};
    int k4 = k / 4;
    for (int t = 0; t < k4; t++) {   /* a unit-step loop: with t += 4, gcc 12 fails to SLP acc */
        const float *xt = x + (size_t)t * 4, *bt = b + (size_t)t * 4 * GEMM_PANEL;
#pragma GCC unroll 4
        for (int u = 0; u < 4; u++) {
            float xu = xt[u];
#pragma GCC unroll 16
            for (int j = 0; j < GEMM_PANEL; j++)
                acc[u][j] = MADD(xu, bt[u * GEMM_PANEL + j], acc[u][j]);
        }
    }
    float tail[GEMM_PANEL] = {0};
    for (int t = 4 * k4; t < k; t++)
        for (int j = 0; j < GEMM_PANEL; j++)
            tail[j] = MADD(x[t], b[(size_t)t * GEMM_PANEL + j], tail[j]);
#pragma GCC unroll 16
    for (int j = 0; j < GEMM_PANEL; j++)
        out[j] = ((acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j])) + tail[j];
}

void CPU_FN(gemv_packed)(const float *x, int k, const float *packed, int m, float *y,
                         int panel0, int panel1)
{
    for (int pn = panel0; pn < panel1; pn++) {
        int c0 = pn * GEMM_PANEL;
        if (m - c0 >= GEMM_PANEL) {
            panel_dot(k, x, packed + (size_t)pn * k * GEMM_PANEL, y + c0);
        } else {   /* last, partial panel: never write y past column m */
            float out[GEMM_PANEL];
            panel_dot(k, x, packed + (size_t)pn * k * GEMM_PANEL, out);
            for (int j = 0; j < m - c0; j++)
                y[c0 + j] = out[j];
        }
    }
}

void CPU_FN(gemm_packed)(const float *x, int ldx, int n, int k, const float *packed, int m,
                         float *y, int ldy, int panel0, int panel1)
{
    if (n <= 0 || panel1 <= panel0)
        return;
    if (n == 1) {
        CPU_FN(gemv_packed)(x, k, packed, m, y, panel0, panel1);
        return;
    }
    if (k <= 0) {   /* empty sum: the micro-kernel would never store */
        for (int i = 0; i < n; i++)
            for (int c = panel0 * GEMM_PANEL; c < m && c < panel1 * GEMM_PANEL; c++)
                y[(size_t)i * ldy + c] = 0.0f;
        return;
    }
    size_t pstride = (size_t)k * GEMM_PANEL;   /* floats from one panel to the next */
    /* An MC x KC block of x, packed as [MC/MR][kc][MR] so the micro-kernel reads its MR values
     * of one k from one pointer; rows past n are zero (MC*KC*4 bytes of stack). */
    float xpack[GEMM_MC * GEMM_KC];

    for (int pc = 0; pc < k; pc += GEMM_KC) {
        int kc = k - pc < GEMM_KC ? k - pc : GEMM_KC;
        for (int ic = 0; ic < n; ic += GEMM_MC) {
            int mc = n - ic < GEMM_MC ? n - ic : GEMM_MC;
            for (int r0 = 0; r0 < mc; r0 += GEMM_MR) {
                float *dst = xpack + (size_t)r0 * kc;
                for (int i = 0; i < GEMM_MR; i++) {
                    const float *src = x + (size_t)(ic + r0 + i) * ldx + pc;
                    if (r0 + i < mc)
                        for (int t = 0; t < kc; t++)
                            dst[t * GEMM_MR + i] = src[t];
                    else
                        for (int t = 0; t < kc; t++)
                            dst[t * GEMM_MR + i] = 0.0f;
                }
            }
            for (int pn = panel0; pn < panel1; pn += GEMM_NP) {
                int np = panel1 - pn < GEMM_NP ? panel1 - pn : GEMM_NP;
                int c0 = pn * GEMM_PANEL;
                int cols = m - c0 < np * GEMM_PANEL ? m - c0 : np * GEMM_PANEL;
                const float *b = packed + (size_t)pn * pstride + (size_t)pc * GEMM_PANEL;
                /* A single panel left over at the end of the range (NP = 2): run the second
                 * lane set on the same panel and drop it (cols <= 16), keeping one kernel. */
                size_t ps = np == GEMM_NP ? pstride : 0;
                for (int ir = 0; ir < mc; ir += GEMM_MR) {
                    int rows = mc - ir < GEMM_MR ? mc - ir : GEMM_MR;
                    micro(kc, xpack + (size_t)ir * kc, b, ps, y + (size_t)(ic + ir) * ldy + c0,
                          ldy, rows, cols, pc > 0);
                }
            }
        }
    }
}
