/* The paged KV cache (DESIGN §4): geometry, the stream-position → page mapping of the `full` and
 * `sink+window` policies, quantizing stores, and save/restore.
 *
 * Memory, per layer slot and KV head, one contiguous "head block":
 *     K pages [n_pages] of {
 *         k1 [head_dim][KV_PAGE]   dimension-major: one broadcast-FMA per dim scores a page
 *         k2 [head_dim][KV_PAGE]
 *         q8 only: k1_scale, k2_scale [KV_PAGE] f32 (one scale per position and half) }
 *     V rows [n_pages * KV_PAGE][2*head_dim]   position-major: weighted row sums along dims
 *     q8 only: v_scale [n_pages * KV_PAGE] f32
 * K and V lie apart so that each phase of flash decoding streams one contiguous run; a page is
 * one unit of attention work (KV_PAGE = 32 positions: a K row of a page is one cache line in f16).
 * Elements are f32, f16 (IEEE half bits) or int8.
 *
 * Positions. Both policies are one ring: n_sink sink slots, then a ring of n_ring slots holding
 * the most recent tokens; a query at stream index t sees the sinks and the last n_window tokens.
 * `full` is n_sink = 0, n_window = n_ring = n_ctx (and stops at n_ctx). `sink+window` keeps
 * n_ring = n_window + max_batch - 1 slots, so a prefill chunk's first query still finds the
 * window it needs after the chunk's own keys were written. Keys are stored rotated by their stream
 * index; a query is rotated by t for window keys and by its StreamingLLM position within the
 * cache, min(t, n_sink + n_window - 1), for sink keys: the score then depends on the same distance
 * StreamingLLM's re-rotated cache gives, and stored keys are never touched again. */
#ifndef DATTN_KV_H
#define DATTN_KV_H

#include <stddef.h>
#include <stdint.h>

#include "dattn.h"

enum { KV_PAGE = 32 };   /* positions per page: the unit of attention work */

typedef struct kv_geom {
    int n_slots, n_kv_heads, head_dim;
    dattn_kv_type type;
    dattn_kv_policy policy;
    int n_ctx;                 /* what the caller asked for */
    int n_sink, n_window, n_ring;
    int n_phys;                /* n_sink + n_ring */
    int n_pages;               /* per slot and head */
    int max_batch;
    size_t elem_bytes;         /* 4, 2, 1 */
    size_t khalf_bytes;        /* head_dim * KV_PAGE * elem_bytes */
    size_t kpage_bytes;        /* one K page with its q8 scales, 64-byte multiple */
    size_t v_row_bytes;        /* 2 * head_dim * elem_bytes */
    size_t v_off, vscale_off;  /* where V rows and V scales start in a head block */
    size_t head_bytes;         /* one head block, 64-byte multiple */
} kv_geom;

/* What a session's cache also makes room for: the model's FFN and logits rows (src/session.c).
 * Zeros for a layer-only cache. */
typedef struct cache_scratch {
    int ffn_dim, n_vocab;
} cache_scratch;

/* A run of cached keys that lies in one page: what attention streams. */
typedef struct kv_piece {
    int phys;                  /* first physical position */
    int stream;                /* its stream index */
    int len;                   /* 1 .. KV_PAGE, inside one page, not past the ring's end */
    int vis;                   /* offset of this piece among all visible keys of the range */
    int sink;                  /* 1: sink keys (use the query rotated at its cache position) */
} kv_piece;

struct dattn_cache {
    dattn_backend *backend;
    dattn_layer_shape shape;
    dattn_cache_params params;
    kv_geom g;
    cache_scratch scratch;
    int *n_past;               /* [n_slots] tokens seen so far; written by kv_set_n_past only */
    uint8_t *pages;            /* [n_slots][n_kv_heads] head blocks, where the backend keeps them
                                  in host memory (the CPU backend); NULL otherwise */
    void *be_state;            /* the backend's per-cache state (its scratch and buffers) */
    size_t arena_bytes;
    uint64_t model_tag;        /* the model fingerprint of a session's cache (0: a bare cache);
                                  saved files carry it and restore insists on it */
};

/* Byte offset of a head block from the start of the KV region. */
static inline size_t kv_head_offset(const kv_geom *g, int slot, int j)
{
    return ((size_t)slot * g->n_kv_heads + j) * g->head_bytes;
}

dattn_status kv_geom_init(kv_geom *g, const dattn_layer_shape *shape, const dattn_cache_params *p);
size_t kv_bytes(const kv_geom *g);

/* Host-memory accessors (backends that keep the pages in host memory, and kv_store). */
static inline uint8_t *kv_head(const dattn_cache *c, int slot, int j)
{
    return c->pages + kv_head_offset(&c->g, slot, j);
}
/* K page `page` of a head: k1 rows, k2 rows, then (q8) k1 and k2 scales. */
static inline uint8_t *kv_kpage(const dattn_cache *c, int slot, int j, int page)
{
    return kv_head(c, slot, j) + (size_t)page * c->g.kpage_bytes;
}
static inline uint8_t *kv_vrow(const dattn_cache *c, int slot, int j, int phys)
{
    return kv_head(c, slot, j) + c->g.v_off + (size_t)phys * c->g.v_row_bytes;
}
static inline float *kv_vscale(const dattn_cache *c, int slot, int j)
{
    return (float *)(kv_head(c, slot, j) + c->g.vscale_off);
}

int kv_phys(const kv_geom *g, int64_t t);
/* StreamingLLM position of the query at stream index t: where it sits in the rebuilt cache. */
int64_t kv_cache_pos(const kv_geom *g, int64_t t);
/* Bound on the pieces kv_pieces can return for one query range of up to n_query tokens. */
int kv_max_pieces(const kv_geom *g, int n_query);
/* The keys visible to at least one query in [t_first, t_last], in stream order, cut into pieces.
 * Returns the count. */
int kv_pieces(const kv_geom *g, int64_t t_first, int64_t t_last, kv_piece *out);
/* Is key at stream index tk visible to the query at t? */
static inline int kv_visible(const kv_geom *g, int64_t tk, int64_t t)
{
    return tk <= t && (tk < g->n_sink || tk > t - g->n_window);
}
/* How many keys the query at stream index t sees: the sinks it has passed and its window. */
int64_t kv_n_visible(const kv_geom *g, int64_t t);

/* Sets the tokens seen by `slot` (every slot when slot < 0): the one place positions change. */
void kv_set_n_past(dattn_cache *c, int slot, int64_t n_past);

/* Store one token's K halves ([head_dim] each, already rotated) and V ([2*head_dim]) of KV head j
 * at stream index t, converting to the cache's element type. */
void kv_store(dattn_cache *c, int slot, int j, int64_t t, const float *k1, const float *k2,
              const float *v);

dattn_status kv_save(const dattn_cache *c, const char *path);
dattn_status kv_restore(dattn_cache *c, const char *path);

#endif
