/* F32 / F16 / BF16 element runs to f32 with a finiteness check (see convert.h). Blocks of 256 keep
 * the converted values in L1 for the check and let the compiler vectorize both loops. */
#include "convert.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "half.h"

enum { BLOCK = 256 };

static float load(dattn_dtype t, const uint8_t *p, size_t i)
{
    uint32_t u;
    switch (t) {
    case DATTN_DTYPE_F16:
        return f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    case DATTN_DTYPE_BF16:
        return bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    default:
        u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
            (uint32_t)p[4 * i + 3] << 24;
        return half_bits_to_f32(u);
    }
}

size_t convert_f32(dattn_dtype t, const void *src, size_t n, float *dst)
{
    const uint8_t *p = src;
    float block[BLOCK];
    for (size_t i0 = 0; i0 < n; i0 += BLOCK) {
        size_t len = n - i0 < BLOCK ? n - i0 : BLOCK;
        float *out = dst ? dst + i0 : block;
        for (size_t i = 0; i < len; i++)
            out[i] = load(t, p, i0 + i);
        int bad = 0;
        for (size_t i = 0; i < len; i++)
            bad |= !isfinite(out[i]);
        if (bad)
            for (size_t i = 0; i < len; i++)
                if (!isfinite(out[i]))
                    return i0 + i;
    }
    return n;
}

size_t first_nonfinite(const float *x, size_t n)
{
    for (size_t i0 = 0; i0 < n; i0 += BLOCK) {
        size_t len = n - i0 < BLOCK ? n - i0 : BLOCK;
        int bad = 0;
        for (size_t i = 0; i < len; i++)
            bad |= !isfinite(x[i0 + i]);
        if (bad)
            for (size_t i = 0; i < len; i++)
                if (!isfinite(x[i0 + i]))
                    return i0 + i;
    }
    return n;
}
