/* Load-time packing of nn.Linear weights for the projection kernels (DESIGN §2, src/cpu/gemm.h):
 * W [m][k] -> [ceil(m/16)][k][16], so that a kernel streams one panel contiguously and reads the
 * 16 output columns of one k as one vector. ISA-independent; runs once per weight. */
#include "cpu/gemm.h"

size_t gemm_packed_floats(int m, int k)
{
    return (size_t)((m + GEMM_PANEL - 1) / GEMM_PANEL) * GEMM_PANEL * (size_t)k;
}

void gemm_pack(const float *w, int m, int k, float *packed)
{
    int n_panels = (m + GEMM_PANEL - 1) / GEMM_PANEL;
    for (int p = 0; p < n_panels; p++) {
        float *dst = packed + (size_t)p * k * GEMM_PANEL;   /* [k][16] */
        for (int j = 0; j < GEMM_PANEL; j++) {
            int c = p * GEMM_PANEL + j;
            const float *src = w + (size_t)c * k;
            /* Columns past m are zero so kernels can run full panels and drop the extra lanes. */
            for (int t = 0; t < k; t++)
                dst[(size_t)t * GEMM_PANEL + j] = c < m ? src[t] : 0.0f;
        }
    }
}
