/* The static arena (DESIGN §3): one block sized up front by a pure function of the params, carved
 * by a bump pointer at create time. The same code runs twice: once with base == NULL to measure
 * (arena_bytes) and once to carve, so the measured size is exactly what carving takes. */
#ifndef DATTN_ARENA_H
#define DATTN_ARENA_H

#include <stddef.h>
#include <stdint.h>

enum { ARENA_ALIGN = 64 };

typedef struct arena {
    uint8_t *base;   /* NULL while measuring */
    size_t used;
    size_t cap;      /* SIZE_MAX while measuring */
} arena;

static inline arena arena_measure(void) { return (arena){NULL, 0, SIZE_MAX}; }

/* Carves n bytes, 64-byte aligned. Returns NULL while measuring, or when the arena is too small
 * (the caller checks arena_fits once after carving everything). */
static inline void *arena_carve(arena *a, size_t n)
{
    size_t start = (a->used + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    size_t end = start + ((n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1));
    if (end < start || end > a->cap) {
        a->used = SIZE_MAX;
        return NULL;
    }
    a->used = end;
    return a->base ? a->base + start : NULL;
}

static inline int arena_fits(const arena *a) { return a->used != SIZE_MAX; }

#endif
