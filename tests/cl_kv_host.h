/* The KV cache's byte layout on the host, for the OpenCL kernel tests: written from src/kv.h's
 * description (not from its code), so a kernel and the library agreeing on a wrong layout still
 * fails. Head block (slot, j) at (slot * n_kv_heads + j) * head_bytes; inside it K pages of
 * k1 [d][32], k2 [d][32] (+ q8: k1_scale[32], k2_scale[32] f32), 64-byte multiple each; V rows
 * [2d] per physical position; q8: v_scale per physical position. A byte map (optional: NULL)
 * records what each stored byte is, for the tests that compare q8 bytes loosely. */
#ifndef DATTN_TESTS_CL_KV_HOST_H
#define DATTN_TESTS_CL_KV_HOST_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cl_harness.h"   /* round_up */

enum { PAGE = 32 };
enum { KV_F32 = 0, KV_F16 = 1, KV_Q8 = 2 };
enum { MAP_EXACT = 0, MAP_Q8 = 1, MAP_SCALE = 2, MAP_SCALE_REST = 3 };

typedef struct layout {
    int type, d, n_kv_heads, n_slots, n_sink, n_window, n_ring, n_pages;
    size_t elem, khalf, kpage, vrow, v_off, vscale_off, head_bytes, total;
} layout;

static inline layout make_layout(int type, int d, int n_kv_heads, int n_slots, int n_sink, int n_window,
                          int n_ring)
{
    layout L = {type, d, n_kv_heads, n_slots, n_sink, n_window, n_ring, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    L.n_pages = (n_sink + n_ring + PAGE - 1) / PAGE;
    L.elem = type == KV_F32 ? 4 : type == KV_F16 ? 2 : 1;
    L.khalf = (size_t)d * PAGE * L.elem;
    L.kpage = round_up(2 * L.khalf + (type == KV_Q8 ? 2 * PAGE * 4 : 0), 64);
    L.vrow = 2 * (size_t)d * L.elem;
    L.v_off = (size_t)L.n_pages * L.kpage;
    L.vscale_off = L.v_off + round_up((size_t)L.n_pages * PAGE * L.vrow, 64);
    L.head_bytes = L.vscale_off + (type == KV_Q8 ? round_up((size_t)L.n_pages * PAGE * 4, 64) : 0);
    L.total = L.head_bytes * n_kv_heads * n_slots;
    return L;
}

/* IEEE half, round to nearest even (written from the format's definition) */
static inline uint16_t to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return sign | 0x7e00;
    if (ax >= 0x477ff000u)                                 /* >= 65520 rounds to inf */
        return sign | 0x7c00;
    if (ax < 0x38800000u) {                                /* subnormal half: units of 2^-24 */
        float a;
        memcpy(&a, &ax, 4);
        return (uint16_t)(sign | (uint16_t)nearbyint((double)a * 16777216.0));
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1);
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

static inline double from_half(uint16_t h)
{
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

/* One row of n values at byte offset off, element stride `stride`; dq gets the stored values.
 * Returns the q8 scale (1 otherwise). */
static inline float store_row(const layout *L, uint8_t *buf, uint8_t *map, size_t off, size_t stride,
                       const float *x, int n, double *dq)
{
    float scale = 1.0f;
    if (L->type == KV_Q8) {
        float amax = 0;
        for (int i = 0; i < n; i++)
            amax = fmaxf(amax, fabsf(x[i]));
        scale = amax > 0 ? amax / 127.0f : 1.0f;
    }
    float inv = 1.0f / scale;
    for (int i = 0; i < n; i++) {
        size_t o = off + (size_t)i * stride * L->elem;
        if (L->type == KV_F32) {
            memcpy(buf + o, &x[i], 4);
            dq[i] = x[i];
        } else if (L->type == KV_F16) {
            uint16_t h = to_half(x[i]);
            memcpy(buf + o, &h, 2);
            dq[i] = from_half(h);
        } else {
            int8_t qv = (int8_t)lrintf(x[i] * inv);
            memcpy(buf + o, &qv, 1);
            if (map)
                map[o] = MAP_Q8;
            dq[i] = qv * (double)scale;
        }
    }
    return scale;
}

static inline void store_scale(uint8_t *buf, uint8_t *map, size_t off, float s)
{
    memcpy(buf + off, &s, 4);
    if (map) {
        map[off] = MAP_SCALE;
        map[off + 1] = map[off + 2] = map[off + 3] = MAP_SCALE_REST;
    }
}

static inline int phys_of(const layout *L, long long t)
{
    return t < L->n_sink ? (int)t : L->n_sink + (int)((t - L->n_sink) % L->n_ring);
}

/* Token at stream index t of KV head j in slot `slot`: k1, k2 [d], v [2d]; dq [4d] gets the
 * stored (rounded) values in the order k1, k2, v. */
static inline void store_token(const layout *L, uint8_t *buf, uint8_t *map, int slot, int j, long long t,
                        const float *k1, const float *k2, const float *v, double *dq)
{
    int ph = phys_of(L, t), col = ph % PAGE, d = L->d;
    size_t head = ((size_t)slot * L->n_kv_heads + j) * L->head_bytes;
    size_t page = head + (size_t)(ph / PAGE) * L->kpage;
    float s1 = store_row(L, buf, map, page + col * L->elem, PAGE, k1, d, dq);
    float s2 = store_row(L, buf, map, page + L->khalf + col * L->elem, PAGE, k2, d, dq + d);
    float sv = store_row(L, buf, map, head + L->v_off + (size_t)ph * L->vrow, 1, v, 2 * d, dq + 2 * d);
    if (L->type == KV_Q8) {
        store_scale(buf, map, page + 2 * L->khalf + (size_t)col * 4, s1);
        store_scale(buf, map, page + 2 * L->khalf + (size_t)(PAGE + col) * 4, s2);
        store_scale(buf, map, head + L->vscale_off + (size_t)ph * 4, sv);
    }
}

#endif
