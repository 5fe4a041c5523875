/* How the OpenCL backend holds an nn.Linear weight W [m][k] on the device: in the format the model
 * holds it in (DESIGN §6: memory held by weights ~ their bytes in that format), laid out so that
 * cl/gemv.cl reads every row in 16-byte loads. One buffer per weight, rows in W's order (a
 * weight_src's row_map applied at upload):
 *
 *   f32   float  [m][k]
 *   f16   ushort [m][k]  IEEE half bits
 *   bf16  ushort [m][k]  bfloat16 bits (the top half of an f32)
 *   q8_0  int8   q[m][k] at 0;  f16 scales d[m][k/32] at clw_scale_offset (16-byte aligned)
 *   q4_0  uint8 qs[m][k/2] at 0 (each block's 16 bytes as llama.cpp stores them: byte j holds
 *         weight j in its low nibble, weight j + 16 in its high one); f16 d[m][k/32] after
 *
 * The quantized blocks are split into planes at upload: a q8_0 row is k bytes and a q4_0 block 16,
 * so every row of quants starts 16-byte aligned (k % 32 == 0 for the block formats). cl/gemv.cl
 * and cl/gemm.cl compute the scale offset the same way from m and k. */
#ifndef DATTN_CL_WEIGHT_LAYOUT_H
#define DATTN_CL_WEIGHT_LAYOUT_H

#include <stdint.h>

#include "backend.h"

/* The kernels' WEIGHT_FORMAT values; the kernels are named gemv_<name> and gemm_<name>. */
enum { CLW_F32 = 0, CLW_F16 = 1, CLW_BF16 = 2, CLW_Q8_0 = 3, CLW_Q4_0 = 4, CLW_FORMATS = 5 };

/* The device format of dtype t; -1 when t is not a weight format. */
int clw_format(dattn_dtype t);
/* "f32", "f16", "bf16", "q8_0", "q4_0". */
const char *clw_name(int fmt);
/* Bytes of the device buffer of a [m][k] weight; 0 when k does not suit the format. */
uint64_t clw_bytes(int fmt, int m, int k);
/* Byte offset of the f16 scale plane (q8_0, q4_0); 0 for the other formats. */
uint64_t clw_scale_offset(int fmt, int m, int k);
/* Stacked row r of a weight source: its part and the row within it (NULL past the end). */
const void *clw_src_row(const weight_src *src, int r);
/* The m rows of W (row_map applied) in the device layout, into dst (clw_bytes; the padding
 * before the scale plane is zeroed). src->dtype must be a weight format. */
void clw_pack(const weight_src *src, int m, void *dst);

#endif
