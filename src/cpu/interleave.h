/* The CPU backend's interleaved layout of q8_0 / q4_0 weight rows, made at load for the decode
 * GEMV that reads it (gemv_xq8_x4_avx512vbmi in src/cpu/gemm.h).
 *
 * The GEMV dots four rows at a time with x, eight blocks (a chunk: 256 weights) of each row per
 * step. Stored row after row, the four rows are four streams 1-4 KiB apart that the kernel reads
 * in turn; interleaved, it reads one stream front to back, and streams faster from DRAM (one
 * thread, 768 x 6144 and 2048 x 3072 q4_0: 18-22 -> 23-27 GB/s, the same kernel and results).
 *
 * Rows go in groups of INTERLEAVE_ROWS, the last group holding what is left (nr = 1..4 rows).
 * A group takes the same bytes as its rows stored one after another (nr row_bytes, starting at
 * row_bytes times its first row), laid out as:
 *   for each whole chunk c (k / 256 of them): chunk c of row 0, of row 1, ... of row nr - 1;
 *   then each row's remaining blocks (k % 256 / 32 of them), row 0 first.
 * Blocks themselves are unchanged (src/quant.h). */
#ifndef DATTN_CPU_INTERLEAVE_H
#define DATTN_CPU_INTERLEAVE_H

#include <stddef.h>
#include <stdint.h>

#include "dattn.h"
#include "quant.h"

#define INTERLEAVE_ROWS 4     /* rows a group interleaves */
#define INTERLEAVE_BLOCKS 8   /* blocks of a row a chunk holds */

/* Where row i (0 <= i < nr) of a group of nr rows finds its chunk c, and its blocks after the
 * last whole chunk, as byte offsets from the group's start. */
static inline size_t interleave_chunk_offset(dattn_dtype dt, int nr, int i, int c)
{
    size_t chunk = INTERLEAVE_BLOCKS * quant_row_bytes(dt, QUANT_BLOCK);
    return ((size_t)c * (size_t)nr + (size_t)i) * chunk;
}

static inline size_t interleave_tail_offset(dattn_dtype dt, int k, int nr, int i)
{
    int nb = k / QUANT_BLOCK, nc = nb / INTERLEAVE_BLOCKS;
    size_t bb = quant_row_bytes(dt, QUANT_BLOCK), chunk = INTERLEAVE_BLOCKS * bb;
    return (size_t)nc * (size_t)nr * chunk + (size_t)i * (size_t)(nb - nc * INTERLEAVE_BLOCKS) * bb;
}

/* Rows of a group: INTERLEAVE_ROWS, or what the last group of `rows` holds. */
static inline int interleave_group_rows(int rows, int g)
{
    int left = rows - g * INTERLEAVE_ROWS;
    return left < INTERLEAVE_ROWS ? left : INTERLEAVE_ROWS;
}

/* One group: nr rows (row[i] each quant_row_bytes(dt, k) bytes, stored as usual) into dst, the
 * group's nr * row_bytes bytes. dt is q8_0 or q4_0; k a multiple of 32. */
void interleave_group(dattn_dtype dt, int k, const uint8_t *const *row, int nr, uint8_t *dst);

/* All rows of a weight stored as usual at w ([rows][row_bytes]) into dst, interleaved. */
void interleave_rows(dattn_dtype dt, int k, const uint8_t *w, int rows, uint8_t *dst);

#endif
