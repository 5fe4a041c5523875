/* Projection kernels of the CPU backend (DESIGN §2, §6): y = x W^T for nn.Linear weights W [m][k]
 * read in the format the model holds them, row-major F32, F16 or BF16 as stored (the mapped file
 * is the weights: no f32 copy, no packed copy) or q8_0 / q4_0 blocks (src/quant.h). A streaming
 * GEMV (decode, one row of x) converts four weight rows at a time to f32 in registers and dots
 * them with x; a blocked GEMM (prefill) converts one 16-row panel of a k slice at a time into the
 * [kc][16] layout its register-tile micro-kernel reads. gemm.c is compiled once per instruction
 * set (src/cpu/isa.h). */
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

/* y[i*ldy + r] = sum_t x[i*ldx + t] * W[r][t] for rows i in [0, n) and weight rows r in
 * [0, rows): w points at weight row 0 of the block ([rows][k] of dtype dt, aligned to its
 * element size). Nothing else of y is written. scratch holds gemm_scratch_floats(n) floats
 * (64-byte aligned; none for n == 1, the GEMV). Single-threaded, no allocation: callers split
 * the rows across threads. */
#define GEMM_DECLARE(isa)                                                                        \
    void gemm_rows_##isa(const float *x, int ldx, int n, int k, dattn_dtype dt, const void *w,   \
                         int rows, float *y, int ldy, float *scratch);

GEMM_DECLARE(generic)
#if defined(__x86_64__)
GEMM_DECLARE(avx2)
GEMM_DECLARE(avx512)
#endif

#undef GEMM_DECLARE

#endif
