/* kv_layout.h: the byte layout of the paged KV cache (src/kv.h) for the kernels that read or
 * write it (diffattn_decode.cl, diffattn_prefill.cl, kv_append.cl), in one place. Needs KV_TYPE
 * (0 f32, 1 f16, 2 q8) and HEAD_DIM defined first. Included with #include "kv_layout.h": the
 * library's embedded sources have it inlined by tools/embed_cl.py; tests and the offline check
 * build with -I cl.
 *
 * Per (slot, KV head) head block: K pages of KV_PAGE positions, each k1 [d][KV_PAGE] then
 * k2 [d][KV_PAGE] elements (+ q8: k1, k2 scales [KV_PAGE] f32), KPAGE_BYTES each; then V rows
 * [2d] elements per physical position (VROW_BYTES); then (q8) one V scale per position. */
#ifndef DATTN_CL_KV_LAYOUT_H
#define DATTN_CL_KV_LAYOUT_H

#define KV_PAGE 32
#if KV_TYPE == 0
#define ELEM_BYTES 4
#define LOAD(p, i) (((__global const float *)(p))[i])
#elif KV_TYPE == 1
#define ELEM_BYTES 2
#define LOAD(p, i) vload_half((i), (__global const half *)(p))
#elif KV_TYPE == 2
#define ELEM_BYTES 1
#define LOAD(p, i) ((float)(((__global const char *)(p))[i]))
#else
#error "KV_TYPE must be 0 (f32), 1 (f16) or 2 (q8)"
#endif

#define ROUND64(n) (((n) + 63) / 64 * 64)
#define KHALF_BYTES (HEAD_DIM * KV_PAGE * ELEM_BYTES)
#if KV_TYPE == 2
#define KPAGE_BYTES ROUND64(2 * KHALF_BYTES + 2 * KV_PAGE * 4)
#else
#define KPAGE_BYTES ROUND64(2 * KHALF_BYTES)
#endif
#define VROW_BYTES (2 * HEAD_DIM * ELEM_BYTES)

#endif
