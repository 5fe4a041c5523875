/* Projection kernels of the CPU backend (DESIGN §2): y = x W^T for nn.Linear weights W [m][k].
 * Weights are packed once at load time into panels of 16 output columns; a blocked GEMM (prefill)
 * and a streaming GEMV (decode, n == 1) read that one format. gemm_pack.c is ISA-independent;
 * gemm.c is compiled once per instruction set (src/cpu/isa.h). */
#ifndef DATTN_CPU_GEMM_H
#define DATTN_CPU_GEMM_H

#include <stddef.h>

#define GEMM_PANEL 16   /* output columns per packed panel */

/* Floats of the packed form: ceil(m/16)*16*k. */
size_t gemm_packed_floats(int m, int k);
/* w [m][k] row-major -> packed [ceil(m/16)][k][16], zero past column m. */
void gemm_pack(const float *w, int m, int k, float *packed);

/* y[i][c] = sum_k x[i][k] * W[c][k] for rows i in [0,n) and columns c in panels [panel0, panel1)
 * (c in [16*panel0, min(16*panel1, m))); nothing else of y is written. x [n][ldx], y [n][ldy].
 * Overwrites y. Single-threaded, no allocation: callers split the panel range across threads. */
#define GEMM_DECLARE(isa)                                                                        \
    void gemm_packed_##isa(const float *x, int ldx, int n, int k, const float *packed, int m,    \
                           float *y, int ldy, int panel0, int panel1);                           \
    void gemv_packed_##isa(const float *x, int k, const float *packed, int m, float *y,          \
                           int panel0, int panel1);

GEMM_DECLARE(generic)
#if defined(__x86_64__)
GEMM_DECLARE(avx2)
GEMM_DECLARE(avx512)
#endif

#undef GEMM_DECLARE

#endif
