/* SwiGLU's gate in the FFN (DESIGN §1): g[j] = silu(g[j]) * u[j] = g[j] / (1 + e^-g[j]) * u[j],
 * compiled once per instruction set (swiglu.c) so that the exp vectorizes. */
#ifndef DATTN_CPU_SWIGLU_H
#define DATTN_CPU_SWIGLU_H

#define SWIGLU_DECLARE(isa) void swiglu_##isa(float *g, const float *u, int n);

SWIGLU_DECLARE(generic)
#if defined(__x86_64__)
SWIGLU_DECLARE(avx2)
SWIGLU_DECLARE(avx512)
#endif

#undef SWIGLU_DECLARE

#endif
