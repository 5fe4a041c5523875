/* Weight rows to and from the formats of src/quant.h, in portable C: the load-time conversion of
 * --weights, the OpenCL upload of formats its kernels do not read, and the tests. */
#include <math.h>
#include <string.h>

#include "half.h"
#include "quant.h"

static const struct {
    dattn_dtype t;
    const char *name;
} names[] = {
    {DATTN_DTYPE_F32, "f32"},   {DATTN_DTYPE_F16, "f16"},   {DATTN_DTYPE_BF16, "bf16"},
    {DATTN_DTYPE_Q8_0, "q8_0"}, {DATTN_DTYPE_Q4_0, "q4_0"},
};

const char *quant_name(dattn_dtype t)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].t == t)
            return names[i].name;
    return "?";
}

int quant_from_name(const char *name, dattn_dtype *out)
{
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (name && strcmp(names[i].name, name) == 0) {
            *out = names[i].t;
            return 0;
        }
    return -1;
}

static void q8_0_block(const float *x, uint8_t *blk)
{
    float amax = 0.0f;
    for (int j = 0; j < QUANT_BLOCK; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t dh = f32_to_f16(d);
    memcpy(blk, &dh, 2);
    for (int j = 0; j < QUANT_BLOCK; j++)
        blk[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

static void q4_0_block(const float *x, uint8_t *blk)
{
    float amax = 0.0f, m = 0.0f;   /* the value of largest magnitude, with its sign */
    for (int j = 0; j < QUANT_BLOCK; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            m = x[j];
        }
    float d = m / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t dh = f32_to_f16(d);
    memcpy(blk, &dh, 2);
    for (int j = 0; j < QUANT_BLOCK / 2; j++) {
        /* Two statements, so that no compiler fuses them into one rounding (an FMA): the
         * rounding of x * id is part of the format's definition. */
        float a = x[j] * id, b = x[j + QUANT_BLOCK / 2] * id;
        a += 8.5f;
        b += 8.5f;
        int lo = (int)a, hi = (int)b;
        lo = lo > 15 ? 15 : lo;
        hi = hi > 15 ? 15 : hi;
        blk[2 + j] = (uint8_t)(lo | hi << 4);
    }
}

void quant_row_from_f32(dattn_dtype t, const float *x, int k, void *dst)
{
    uint8_t *o = dst;
    switch (t) {
    case DATTN_DTYPE_F32:
        memcpy(o, x, sizeof(float) * (size_t)k);
        break;
    case DATTN_DTYPE_F16:
    case DATTN_DTYPE_BF16:
        for (int j = 0; j < k; j++) {
            uint16_t h = t == DATTN_DTYPE_F16 ? f32_to_f16(x[j]) : f32_to_bf16(x[j]);
            memcpy(o + 2 * (size_t)j, &h, 2);
        }
        break;
    case DATTN_DTYPE_Q8_0:
        for (int b = 0; b < k / QUANT_BLOCK; b++)
            q8_0_block(x + (size_t)b * QUANT_BLOCK, o + (size_t)b * Q8_0_BLOCK_BYTES);
        break;
    case DATTN_DTYPE_Q4_0:
        for (int b = 0; b < k / QUANT_BLOCK; b++)
            q4_0_block(x + (size_t)b * QUANT_BLOCK, o + (size_t)b * Q4_0_BLOCK_BYTES);
        break;
    default:
        break;
    }
}

void quant_row_to_f32(dattn_dtype t, const void *src, int k, float *dst)
{
    const uint8_t *s = src;
    uint16_t h;
    switch (t) {
    case DATTN_DTYPE_F32:
        memcpy(dst, s, sizeof(float) * (size_t)k);
        break;
    case DATTN_DTYPE_F16:
    case DATTN_DTYPE_BF16:
        for (int j = 0; j < k; j++) {
            memcpy(&h, s + 2 * (size_t)j, 2);
            dst[j] = t == DATTN_DTYPE_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
        break;
    case DATTN_DTYPE_Q8_0:
        for (int b = 0; b < k / QUANT_BLOCK; b++, s += Q8_0_BLOCK_BYTES) {
            memcpy(&h, s, 2);
            float d = f16_to_f32(h);
            for (int j = 0; j < QUANT_BLOCK; j++)
                dst[b * QUANT_BLOCK + j] = d * (float)(int8_t)s[2 + j];
        }
        break;
    case DATTN_DTYPE_Q4_0:
        for (int b = 0; b < k / QUANT_BLOCK; b++, s += Q4_0_BLOCK_BYTES) {
            memcpy(&h, s, 2);
            float d = f16_to_f32(h);
            for (int j = 0; j < QUANT_BLOCK / 2; j++) {
                dst[b * QUANT_BLOCK + j] = d * (float)((s[2 + j] & 15) - 8);
                dst[b * QUANT_BLOCK + j + QUANT_BLOCK / 2] = d * (float)((s[2 + j] >> 4) - 8);
            }
        }
        break;
    default:
        break;
    }
}

size_t quant_blocks_finite(dattn_dtype t, const void *src, size_t n)
{
    size_t bb = t == DATTN_DTYPE_Q8_0 ? Q8_0_BLOCK_BYTES : Q4_0_BLOCK_BYTES;
    const uint8_t *s = src;
    for (size_t b = 0; b < n / QUANT_BLOCK; b++) {
        uint16_t h;
        memcpy(&h, s + b * bb, 2);
        if ((h & 0x7c00) == 0x7c00)   /* all-ones exponent: inf or NaN */
            return b * QUANT_BLOCK;
    }
    return n;
}
