/* weight_format.h: the device layout of an nn.Linear weight W [m][k] that gemv.cl and gemm.cl
 * read, one kernel per format (WEIGHT_FORMAT; src/opencl/weight_layout.h packs it on the host):
 *
 *   0 f32   float  [m][k]
 *   1 f16   ushort [m][k] IEEE half bits (converted in registers: core OpenCL 1.2, no
 *           cl_khr_fp16, no half arithmetic)
 *   2 bf16  ushort [m][k] bfloat16 bits, widened as as_float(bits << 16)
 *   3 q8_0  int8 q [m][k], then f16 scales d [m][k/32] at a 16-byte aligned offset
 *   4 q4_0  16-byte blocks of nibbles [m][k/32][16] (byte j: weight j low, j + 16 high; value
 *           (nibble - 8) * d), then d [m][k/32]
 *
 * WEIGHT_FORMAT unset builds every format's kernel into one program (the backend's build); set,
 * only that one (WEIGHT_F16 = 0 / 1 is taken as WEIGHT_FORMAT 0 / 1). Included with
 * #include "weight_format.h" (tools/embed_cl.py inlines it). */
#ifndef DATTN_CL_WEIGHT_FORMAT_H
#define DATTN_CL_WEIGHT_FORMAT_H

#if !defined(WEIGHT_FORMAT) && defined(WEIGHT_F16)
#define WEIGHT_FORMAT WEIGHT_F16
#endif
#ifdef WEIGHT_FORMAT
#if WEIGHT_FORMAT < 0 || WEIGHT_FORMAT > 4
#error "WEIGHT_FORMAT must be 0 (f32), 1 (f16), 2 (bf16), 3 (q8_0) or 4 (q4_0)"
#endif
#define HAS_FORMAT(f) (WEIGHT_FORMAT == (f))
#else
#define HAS_FORMAT(f) 1
#endif

#define W_F32 0
#define W_F16 1
#define W_BF16 2
#define W_Q8_0 3
#define W_Q4_0 4
/* weights per 16-byte chunk of a row */
#define CHUNK_W(f) ((f) == W_F32 ? 4 : (f) <= W_BF16 ? 8 : (f) == W_Q8_0 ? 16 : 32)

#define INLINE inline __attribute__((always_inline))

/* Byte offset of the scale plane of a q8_0 / q4_0 weight. */
static INLINE size_t scale_offset(const int fmt, int m, int k)
{
    size_t q = fmt == W_Q8_0 ? (size_t)m * (size_t)k : (size_t)m * (size_t)(k / 2);
    return (q + 15) & ~(size_t)15;
}

#endif
