/* e^x over a chunk of floats, written so that the loop vectorizes in every per-ISA build of the
 * CPU kernels (softmax in attn_kernels.c, SwiGLU in swiglu.c). */
#ifndef DATTN_CPU_VEXP_H
#define DATTN_CPU_VEXP_H

#include <stdint.h>
#include <string.h>

/* e^x on a chunk, written so the loop vectorizes: 2^k by exponent bits, e^r by a degree-6
 * polynomial on |r| <= ln2/2 (relative error ~2e-7). Inputs below -87 (-inf too) give 0, above 88
 * (+inf too) e^88; a NaN comes back as that NaN, so the layer's finiteness check sees it. The
 * range tests and selects work on the bit patterns with masks: under the default
 * -ftrapping-math GCC will not if-convert float compares, so a float ?: here leaves the loop
 * scalar. The clamped value is always inside [-87, 88], so the float-to-int conversion and the
 * exponent shift below are defined for every input. */
static inline void exp_chunk(float *restrict x, int n)
{
    for (int i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        uint32_t mag = u & 0x7fffffffu, neg = 0u - (u >> 31);
        uint32_t nan = 0u - (uint32_t)(mag > 0x7f800000u);
        uint32_t low = neg & (0u - (uint32_t)(mag > 0x42ae0000u)) & ~nan;    /* < -87 */
        uint32_t high = ~neg & (0u - (uint32_t)(mag > 0x42b00000u)) & ~nan;  /* > 88 */
        uint32_t vb = (u & ~(low | high | nan)) | ((low | nan) & 0xc2ae0000u) |
                      (high & 0x42b00000u);
        float v;
        memcpy(&v, &vb, 4);
        float kf = v * 1.44269504f + 12582912.0f;
        kf -= 12582912.0f;
        float r = v - kf * 0.693145751953125f;
        r -= kf * 1.428606765330187e-06f;
        float p = 1.0f / 720.0f;
        p = p * r + 1.0f / 120.0f;
        p = p * r + 1.0f / 24.0f;
        p = p * r + 1.0f / 6.0f;
        p = p * r + 0.5f;
        p = p * r + 1.0f;
        p = p * r + 1.0f;
        uint32_t bits = (uint32_t)((int32_t)kf + 127) << 23;   /* kf in [-126, 127] */
        float scale, e;
        memcpy(&scale, &bits, 4);
        e = p * scale;
        uint32_t eb;
        memcpy(&eb, &e, 4);
        eb = (eb & ~(nan | low)) | (u & nan);
        memcpy(&x[i], &eb, 4);
    }
}

#endif
