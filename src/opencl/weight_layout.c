/* The device layout of the OpenCL backend's weights (see weight_layout.h). */
#include "weight_layout.h"

#include <string.h>

#include "quant.h"

int clw_format(dattn_dtype t)
{
    switch (t) {
    case DATTN_DTYPE_F32: return CLW_F32;
    case DATTN_DTYPE_F16: return CLW_F16;
    case DATTN_DTYPE_BF16: return CLW_BF16;
    case DATTN_DTYPE_Q8_0: return CLW_Q8_0;
    case DATTN_DTYPE_Q4_0: return CLW_Q4_0;
    default: return -1;
    }
}

const char *clw_name(int fmt)
{
    static const char *const names[CLW_FORMATS] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
    return fmt >= 0 && fmt < CLW_FORMATS ? names[fmt] : "?";
}

uint64_t clw_scale_offset(int fmt, int m, int k)
{
    uint64_t q;
    if (fmt == CLW_Q8_0)
        q = (uint64_t)m * (uint64_t)k;
    else if (fmt == CLW_Q4_0)
        q = (uint64_t)m * (uint64_t)(k / 2);
    else
        return 0;
    return (q + 15) & ~(uint64_t)15;
}

uint64_t clw_bytes(int fmt, int m, int k)
{
    if (m < 0 || k < 0)
        return 0;
    switch (fmt) {
    case CLW_F32: return 4 * (uint64_t)m * (uint64_t)k;
    case CLW_F16:
    case CLW_BF16: return 2 * (uint64_t)m * (uint64_t)k;
    case CLW_Q8_0:
    case CLW_Q4_0:
        if (k % QUANT_BLOCK)
            return 0;
        return clw_scale_offset(fmt, m, k) + 2 * (uint64_t)m * (uint64_t)(k / QUANT_BLOCK);
    default: return 0;
    }
}

const void *clw_src_row(const weight_src *src, int r)
{
    size_t row_bytes = quant_row_bytes(src->dtype, src->k);
    for (int i = 0; i < src->n_parts; i++) {
        if (r < src->part[i].rows)
            return (const uint8_t *)src->part[i].data + (size_t)r * row_bytes;
        r -= src->part[i].rows;
    }
    return NULL;
}

void clw_pack(const weight_src *src, int m, void *dst)
{
    int fmt = clw_format(src->dtype), k = src->k, nb = k / QUANT_BLOCK;
    uint8_t *out = dst;
    size_t row_bytes = quant_row_bytes(src->dtype, k);
    uint64_t soff = clw_scale_offset(fmt, m, k);
    if (fmt == CLW_Q8_0 || fmt == CLW_Q4_0)   /* the gap before the scales */
        memset(out + (fmt == CLW_Q8_0 ? (size_t)m * k : (size_t)m * (k / 2)), 0,
               (size_t)soff - (fmt == CLW_Q8_0 ? (size_t)m * k : (size_t)m * (k / 2)));
    for (int r = 0; r < m; r++) {
        const uint8_t *s = clw_src_row(src, src->row_map ? src->row_map[r] : r);
        switch (fmt) {
        case CLW_F32:
        case CLW_F16:
        case CLW_BF16:
            memcpy(out + (size_t)r * row_bytes, s, row_bytes);
            break;
        case CLW_Q8_0:
            for (int b = 0; b < nb; b++, s += Q8_0_BLOCK_BYTES) {
                memcpy(out + soff + 2 * ((size_t)r * nb + b), s, 2);
                memcpy(out + (size_t)r * k + (size_t)b * QUANT_BLOCK, s + 2, QUANT_BLOCK);
            }
            break;
        case CLW_Q4_0:
            for (int b = 0; b < nb; b++, s += Q4_0_BLOCK_BYTES) {
                memcpy(out + soff + 2 * ((size_t)r * nb + b), s, 2);
                memcpy(out + (size_t)r * (k / 2) + (size_t)b * (QUANT_BLOCK / 2), s + 2,
                       QUANT_BLOCK / 2);
            }
            break;
        default:
            break;
        }
    }
}
