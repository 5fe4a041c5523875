/* SwiGLU's gate (swiglu.h), once per instruction set. libm's expf is a call per element: on the
 * 125M model's FFN (2048 hidden units a layer) it took ~7 cycles an element, ~8% of the W1/W3
 * pass it ends. exp_chunk (vexp.h, relative error ~2e-7) runs vectorized over a chunk. */
#include "isa.h"
#include "swiglu.h"
#include "vexp.h"

enum { CHUNK = 64 };

void CPU_FN(swiglu)(float *g, const float *u, int n)
{
    for (int j0 = 0; j0 < n; j0 += CHUNK) {
        int len = n - j0 < CHUNK ? n - j0 : CHUNK;
        float e[CHUNK];
        for (int j = 0; j < len; j++)
            e[j] = -g[j0 + j];
        exp_chunk(e, len);
        /* g -> -inf: e^-g clamps at e^88 and the quotient is -inf; a NaN g stays NaN. */
        for (int j = 0; j < len; j++)
            g[j0 + j] = g[j0 + j] / (1.0f + e[j]) * u[j0 + j];
    }
}
