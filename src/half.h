/* Scalar conversions between f32 and the 16-bit floats dattn reads and stores (f16 IEEE half,
 * bf16). Portable bit manipulation: no compiler or ISA support needed. Hot loops convert whole
 * rows with the per-ISA routines in src/cpu/. */
#ifndef DATTN_HALF_H
#define DATTN_HALF_H

#include <stdint.h>
#include <string.h>

static inline float half_bits_to_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t half_f32_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static inline float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f)                                  /* inf / nan */
        return half_bits_to_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {                                   /* zero / subnormal: man * 2^-24 */
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    return half_bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

/* Round to nearest even, overflow to inf, underflow through subnormals. */
static inline uint16_t f32_to_f16(float f)
{
    uint32_t x = half_f32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)                            /* inf / nan */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u)                            /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) {                           /* below 2^-14: subnormal half */
        float v = half_bits_to_f32(ax) * 16777216.0f; /* in units of 2^-24 */
        uint32_t m = (uint32_t)v;
        float rest = v - (float)m;
        if (rest > 0.5f || (rest == 0.5f && (m & 1)))
            m++;
        return (uint16_t)(sign | m);
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1);      /* round the 13 dropped bits */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

static inline float bf16_to_f32(uint16_t b) { return half_bits_to_f32((uint32_t)b << 16); }

static inline uint16_t f32_to_bf16(float f)
{
    uint32_t x = half_f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

#endif
