/* Stored float tensors (F32, F16, BF16; little-endian, any alignment) as f32: the one conversion
 * the loaders share, which also finds the NaN and inf values a weight must not hold. */
#ifndef DATTN_CONVERT_H
#define DATTN_CONVERT_H

#include <stddef.h>

#include "dattn.h"

/* n values of dtype t (F32, F16 or BF16) at src into dst (dst NULL: only look). Returns the index
 * of the first NaN or infinite value (dst past it is then not written), or n when every value is
 * finite. */
size_t convert_f32(dattn_dtype t, const void *src, size_t n, float *dst);

/* The index of the first NaN or infinite value of x [n], or n. */
size_t first_nonfinite(const float *x, size_t n);

/* 1 when the dtype is one convert_f32 reads. */
static inline int convert_is_float(dattn_dtype t)
{
    return t == DATTN_DTYPE_F32 || t == DATTN_DTYPE_F16 || t == DATTN_DTYPE_BF16;
}

#endif
