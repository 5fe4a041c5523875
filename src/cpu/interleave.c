/* The interleaved layout of q8_0 / q4_0 rows (src/cpu/interleave.h), made once at load. */
#include "cpu/interleave.h"

#include <string.h>

void interleave_group(dattn_dtype dt, int k, const uint8_t *const *row, int nr, uint8_t *dst)
{
    int nb = k / QUANT_BLOCK, nc = nb / INTERLEAVE_BLOCKS;
    size_t bb = quant_row_bytes(dt, QUANT_BLOCK), chunk = INTERLEAVE_BLOCKS * bb;
    size_t tail = (size_t)(nb - nc * INTERLEAVE_BLOCKS) * bb;
    for (int i = 0; i < nr; i++) {
        for (int c = 0; c < nc; c++)
            memcpy(dst + interleave_chunk_offset(dt, nr, i, c), row[i] + (size_t)c * chunk,
                   chunk);
        if (tail)
            memcpy(dst + interleave_tail_offset(dt, k, nr, i), row[i] + (size_t)nc * chunk, tail);
    }
}

void interleave_rows(dattn_dtype dt, int k, const uint8_t *w, int rows, uint8_t *dst)
{
    size_t row_bytes = quant_row_bytes(dt, k);
    for (int g = 0; g * INTERLEAVE_ROWS < rows; g++) {
        const uint8_t *row[INTERLEAVE_ROWS];
        int nr = interleave_group_rows(rows, g);
        for (int i = 0; i < nr; i++)
            row[i] = w + (size_t)(g * INTERLEAVE_ROWS + i) * row_bytes;
        interleave_group(dt, k, row, nr, dst + (size_t)g * INTERLEAVE_ROWS * row_bytes);
    }
}
