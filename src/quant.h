/* Weight rows in the formats a model may be held in (DESIGN §6): F32, F16, BF16 as stored, and the
 * block formats q8_0 and q4_0 (llama.cpp's layouts: blocks of 32 weights along a row, each with one
 * f16 scale d). A weight row of k columns is k / 32 blocks; k must be a multiple of 32.
 *
 *   q8_0 block (34 bytes): d, int8 q[32]          weight j = d * q[j]
 *   q4_0 block (18 bytes): d, uint8 qs[16]        weight j      = d * ((qs[j] & 15) - 8)
 *                                                 weight j + 16 = d * ((qs[j] >> 4) - 8), j < 16
 *
 * Conversion to and from f32 here is portable C (load time, tests); the kernels that read the
 * blocks are per ISA (src/cpu/gemm.c). */
#ifndef DATTN_QUANT_H
#define DATTN_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "dattn.h"

enum { QUANT_BLOCK = 32, Q8_0_BLOCK_BYTES = 34, Q4_0_BLOCK_BYTES = 18 };

static inline int quant_is_block(dattn_dtype t)
{
    return t == DATTN_DTYPE_Q8_0 || t == DATTN_DTYPE_Q4_0;
}

/* 1 when t is a format weights can be held in (F32, F16, BF16, Q8_0, Q4_0). */
static inline int quant_is_weight_format(dattn_dtype t)
{
    return t == DATTN_DTYPE_F32 || t == DATTN_DTYPE_F16 || t == DATTN_DTYPE_BF16 ||
           quant_is_block(t);
}

/* Bytes of one row of k weights in format t; 0 when k does not fit it (not a multiple of 32 for
 * a block format, or t is not a weight format). */
static inline size_t quant_row_bytes(dattn_dtype t, int64_t k)
{
    if (k < 0)
        return 0;
    switch (t) {
    case DATTN_DTYPE_F32: return (size_t)k * 4;
    case DATTN_DTYPE_F16:
    case DATTN_DTYPE_BF16: return (size_t)k * 2;
    case DATTN_DTYPE_Q8_0:
        return k % QUANT_BLOCK ? 0 : (size_t)(k / QUANT_BLOCK) * Q8_0_BLOCK_BYTES;
    case DATTN_DTYPE_Q4_0:
        return k % QUANT_BLOCK ? 0 : (size_t)(k / QUANT_BLOCK) * Q4_0_BLOCK_BYTES;
    default: return 0;
    }
}

/* "f32", "f16", "bf16", "q8_0", "q4_0" (the --weights names); "?" for other dtypes. */
const char *quant_name(dattn_dtype t);
/* The format called `name` (as quant_name writes it); -1 when there is none. */
int quant_from_name(const char *name, dattn_dtype *out);

/* One row of k finite f32 values into format t at dst (quant_row_bytes(t, k) bytes): F16 and BF16
 * round to nearest even; q8_0: d = max|x| / 127, q = round(x / d) (half away from zero); q4_0:
 * d = m / -8 for the m of largest magnitude, q = min(15, trunc(x / d + 8.5)). */
void quant_row_from_f32(dattn_dtype t, const float *x, int k, void *dst);
/* Of n weights (n a multiple of 32) in block format t at src, the index of the first whose block
 * scale is NaN or infinite (a value d * q is finite iff d is), or n when all are finite. */
size_t quant_blocks_finite(dattn_dtype t, const void *src, size_t n);
/* One row of format t back to f32. */
void quant_row_to_f32(dattn_dtype t, const void *src, int k, float *dst);

#endif
