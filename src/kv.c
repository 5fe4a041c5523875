/* KV-cache geometry, position mapping, quantizing stores and save/restore (DESIGN §4).
 * See kv.h for the page layout and how the two policies share one ring. */
/* fseeko/ftello: a cache file can pass 2 GiB, where long (ftell) is 32 bits (armhf). */
#define _POSIX_C_SOURCE 200809L
#include "kv.h"

#include <sys/types.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "bytes.h"
#include "file_replace.h"
#include "half.h"
#include "backend.h"
#include "status.h"

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

dattn_status kv_geom_init(kv_geom *g, const dattn_layer_shape *s, const dattn_cache_params *p)
{
    memset(g, 0, sizeof *g);
    if (p->n_layers < 1 || p->n_layers > 4096)
        return dattn_fail(DATTN_E_INVALID_ARG, "kv: n_layers %d is out of range 1..4096", p->n_layers);
    if (p->n_ctx < 1)
        return dattn_fail(DATTN_E_INVALID_ARG, "kv: n_ctx %d must be at least 1", p->n_ctx);
    if (p->max_batch < 1)
        return dattn_fail(DATTN_E_INVALID_ARG, "kv: max_batch %d must be at least 1", p->max_batch);
    if (p->kv_type != DATTN_KV_F32 && p->kv_type != DATTN_KV_F16 && p->kv_type != DATTN_KV_Q8)
        return dattn_fail(DATTN_E_INVALID_ARG, "kv: unknown KV element type %d", (int)p->kv_type);
    g->n_slots = p->n_layers;
    g->n_kv_heads = s->n_kv_heads;
    g->head_dim = shape_head_dim(s);
    g->type = p->kv_type;
    g->policy = p->policy;
    g->n_ctx = p->n_ctx;
    g->max_batch = p->max_batch;
    if (p->policy == DATTN_POLICY_FULL) {
        g->n_sink = 0;
        g->n_window = g->n_ring = p->n_ctx;
    } else if (p->policy == DATTN_POLICY_SINK_WINDOW) {
        if (p->n_sink < 0 || p->n_sink >= p->n_ctx)
            return dattn_fail(DATTN_E_INVALID_ARG,
                              "kv: sink+window needs 0 <= n_sink < n_ctx, got n_sink %d, n_ctx %d",
                              p->n_sink, p->n_ctx);
        g->n_sink = p->n_sink;
        g->n_window = p->n_ctx - p->n_sink;
        if ((long long)g->n_window + p->max_batch - 1 > INT32_MAX / 2)
            return dattn_fail(DATTN_E_INVALID_ARG, "kv: window %d + max_batch %d is too large",
                              g->n_window, p->max_batch);
        g->n_ring = g->n_window + p->max_batch - 1;
    } else {
        return dattn_fail(DATTN_E_INVALID_ARG, "kv: unknown cache policy %d", (int)p->policy);
    }
    if ((long long)g->n_sink + g->n_ring > INT32_MAX / 2)
        return dattn_fail(DATTN_E_INVALID_ARG, "kv: n_ctx %d is too large", p->n_ctx);
    g->n_phys = g->n_sink + g->n_ring;
    g->n_pages = (g->n_phys + KV_PAGE - 1) / KV_PAGE;
    g->elem_bytes = p->kv_type == DATTN_KV_F32 ? 4 : p->kv_type == DATTN_KV_F16 ? 2 : 1;
    int q8 = p->kv_type == DATTN_KV_Q8;
    size_t rows = (size_t)g->n_pages * KV_PAGE;
    g->khalf_bytes = (size_t)g->head_dim * KV_PAGE * g->elem_bytes;
    g->kpage_bytes = round_up(2 * g->khalf_bytes + (q8 ? 2 * KV_PAGE * sizeof(float) : 0), 64);
    g->v_row_bytes = 2 * (size_t)g->head_dim * g->elem_bytes;
    g->v_off = (size_t)g->n_pages * g->kpage_bytes;
    g->vscale_off = g->v_off + round_up(rows * g->v_row_bytes, 64);
    g->head_bytes = g->vscale_off + (q8 ? round_up(rows * sizeof(float), 64) : 0);
    return DATTN_OK;
}

size_t kv_bytes(const kv_geom *g)
{
    size_t heads = (size_t)g->n_slots * g->n_kv_heads;
    if (g->head_bytes && heads > SIZE_MAX / g->head_bytes)
        return SIZE_MAX;
    return heads * g->head_bytes;
}

int kv_phys(const kv_geom *g, int64_t t)
{
    if (t < g->n_sink)
        return (int)t;
    return g->n_sink + (int)((t - g->n_sink) % g->n_ring);
}

int64_t kv_cache_pos(const kv_geom *g, int64_t t)
{
    int64_t last = (int64_t)g->n_sink + g->n_window - 1;
    return t < last ? t : last;
}

int kv_max_pieces(const kv_geom *g, int n_query)
{
    int64_t span = (int64_t)g->n_sink + g->n_window + n_query;
    if (span > g->n_phys)
        span = g->n_phys;
    return (int)(span / KV_PAGE) + 6;
}

int64_t kv_n_visible(const kv_geom *g, int64_t t)
{
    int64_t sinks = t + 1 < g->n_sink ? t + 1 : g->n_sink;
    int64_t w0 = t - g->n_window + 1 > g->n_sink ? t - g->n_window + 1 : g->n_sink;
    return sinks + (t >= w0 ? t - w0 + 1 : 0);
}

void kv_set_n_past(dattn_cache *c, int slot, int64_t n_past)
{
    for (int s = slot < 0 ? 0 : slot; s < (slot < 0 ? c->g.n_slots : slot + 1); s++)
        c->n_past[s] = (int)n_past;
}

/* Cut stream run [t0, t1) into pieces that stay inside one chunk and do not cross the ring's end. */
static int cut_run(const kv_geom *g, int64_t t0, int64_t t1, int sink, int vis, kv_piece *out)
{
    int n = 0;
    while (t0 < t1) {
        int phys = kv_phys(g, t0);
        int64_t len = KV_PAGE - phys % KV_PAGE;
        if (!sink) {
            int64_t to_ring_end = (int64_t)g->n_sink + g->n_ring - phys;
            if (len > to_ring_end)
                len = to_ring_end;
        }
        if (len > t1 - t0)
            len = t1 - t0;
        out[n++] = (kv_piece){phys, (int)t0, (int)len, vis, sink};
        vis += (int)len;
        t0 += len;
    }
    return n;
}

int kv_pieces(const kv_geom *g, int64_t t_first, int64_t t_last, kv_piece *out)
{
    int n = 0;
    int64_t sink_end = t_last + 1 < g->n_sink ? t_last + 1 : g->n_sink;
    n += cut_run(g, 0, sink_end, 1, 0, out + n);
    int64_t w0 = t_first - g->n_window + 1;
    if (w0 < g->n_sink)
        w0 = g->n_sink;
    n += cut_run(g, w0, t_last + 1, 0, (int)(sink_end > 0 ? sink_end : 0), out + n);
    return n;
}

/* One row of n values into the cache's element type at stride `stride` elements. Returns the q8
 * scale (1 for other types). */
static float store_row(const kv_geom *g, uint8_t *base, size_t stride, const float *x, int n)
{
    switch (g->type) {
    case DATTN_KV_F32:
        for (int i = 0; i < n; i++)
            ((float *)base)[(size_t)i * stride] = x[i];
        return 1.0f;
    case DATTN_KV_F16:
        for (int i = 0; i < n; i++)
            ((uint16_t *)base)[(size_t)i * stride] = f32_to_f16(x[i]);
        return 1.0f;
    case DATTN_KV_Q8: {
        float amax = 0.0f;
        for (int i = 0; i < n; i++)
            amax = fmaxf(amax, fabsf(x[i]));
        float scale = amax > 0.0f ? amax / 127.0f : 1.0f;
        float inv = 1.0f / scale;
        for (int i = 0; i < n; i++)
            ((int8_t *)base)[(size_t)i * stride] = (int8_t)lrintf(x[i] * inv);
        return scale;
    }
    }
    return 1.0f;
}

void kv_store(dattn_cache *c, int slot, int j, int64_t t, const float *k1, const float *k2,
              const float *v)
{
    const kv_geom *g = &c->g;
    int phys = kv_phys(g, t);
    int off = phys % KV_PAGE, d = g->head_dim;
    uint8_t *page = kv_kpage(c, slot, j, phys / KV_PAGE);
    size_t e = g->elem_bytes;
    float s1 = store_row(g, page + off * e, KV_PAGE, k1, d);
    float s2 = store_row(g, page + g->khalf_bytes + off * e, KV_PAGE, k2, d);
    float sv = store_row(g, kv_vrow(c, slot, j, phys), 1, v, 2 * d);
    if (g->type == DATTN_KV_Q8) {
        float *kscale = (float *)(page + 2 * g->khalf_bytes);
        kscale[off] = s1;
        kscale[KV_PAGE + off] = s2;
        kv_vscale(c, slot, j)[phys] = sv;
    }
}

/* ---- save / restore ------------------------------------------------------------------------
 * File: "DATTNKV\0", then little-endian u32 fields (version, the shape and params below, the
 * 64-bit model fingerprint of a session as two halves), the
 * n_past of every slot as i64, the used pages of every slot and head in order, and an FNV-1a
 * 64-bit checksum of everything before it. Restore checks the header against the cache, the file
 * size, and the checksum before it writes a byte into the cache. */

static const char kv_magic[8] = {'D', 'A', 'T', 'T', 'N', 'K', 'V', 0};
enum { KV_FILE_VERSION = 2, KV_HEADER_FIELDS = 14, KV_MODEL_FIELD = 12 };

static int host_is_little_endian(void)
{
    uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static void header_fields(const dattn_cache *c, uint32_t f[KV_HEADER_FIELDS])
{
    const kv_geom *g = &c->g;
    uint32_t v[KV_HEADER_FIELDS] = {
        KV_FILE_VERSION,          (uint32_t)c->shape.model_dim, (uint32_t)c->shape.n_heads,
        (uint32_t)g->n_kv_heads,  (uint32_t)g->head_dim,        (uint32_t)g->n_slots,
        (uint32_t)g->type,        (uint32_t)g->policy,          (uint32_t)g->n_ctx,
        (uint32_t)g->n_sink,      (uint32_t)g->max_batch,       KV_PAGE,
        (uint32_t)c->model_tag,   (uint32_t)(c->model_tag >> 32),
    };
    memcpy(f, v, sizeof v);
}

static const char *const field_names[KV_HEADER_FIELDS] = {
    "version", "model_dim", "n_heads", "n_kv_heads", "head_dim", "n_layers",
    "kv_type", "policy",    "n_ctx",   "n_sink",     "max_batch", "page_len",
    "model fingerprint", "model fingerprint",
};

static int used_pages(const kv_geom *g, int64_t n_past)
{
    int64_t phys = n_past <= g->n_sink ? n_past
                   : g->n_sink + (n_past - g->n_sink < g->n_ring ? n_past - g->n_sink : g->n_ring);
    return (int)((phys + KV_PAGE - 1) / KV_PAGE);
}

/* The parts of a head block that hold `pages` used pages, as offsets in the KV region: K pages,
 * V rows, V scales. */
static int head_runs(const dattn_cache *c, int slot, int j, int pages, size_t off[3], size_t len[3])
{
    const kv_geom *g = &c->g;
    size_t head = kv_head_offset(g, slot, j);
    off[0] = head;
    len[0] = (size_t)pages * g->kpage_bytes;
    off[1] = head + g->v_off;
    len[1] = (size_t)pages * KV_PAGE * g->v_row_bytes;
    off[2] = head + g->vscale_off;
    len[2] = g->type == DATTN_KV_Q8 ? (size_t)pages * KV_PAGE * sizeof(float) : 0;
    return 3;
}

static size_t file_bytes(const dattn_cache *c, const int64_t *n_past)
{
    size_t n = 8 + 4 * KV_HEADER_FIELDS + 8 * (size_t)c->g.n_slots + 8;
    for (int s = 0; s < c->g.n_slots; s++) {
        size_t off[3], len[3];
        head_runs(c, s, 0, used_pages(&c->g, n_past[s]), off, len);
        n += (len[0] + len[1] + len[2]) * c->g.n_kv_heads;
    }
    return n;
}

dattn_status kv_save(const dattn_cache *c, const char *path)
{
    if (!host_is_little_endian())
        return dattn_fail(DATTN_E_UNSUPPORTED, "kv: saving a cache needs a little-endian host");
    /* A temporary beside the target, renamed over it when whole: a failed save never costs
     * the file that was there. */
    file_replace fr;
    dattn_status st = file_replace_open(&fr, path);
    if (st != DATTN_OK)
        return st;
    FILE *f = fr.f;
    uint8_t buf[1 << 14];
    uint8_t head[8 + 4 * KV_HEADER_FIELDS];
    uint32_t fields[KV_HEADER_FIELDS];
    header_fields(c, fields);
    memcpy(head, kv_magic, 8);
    for (int i = 0; i < KV_HEADER_FIELDS; i++)
        le_put_u32(head + 8 + 4 * i, fields[i]);
    uint64_t h = FNV1A_INIT;
    int ok = fwrite(head, sizeof head, 1, f) == 1;
    h = fnv1a(h, head, sizeof head);
    for (int s = 0; ok && s < c->g.n_slots; s++) {
        uint8_t b[8];
        le_put_u64(b, (uint64_t)c->n_past[s]);
        ok = fwrite(b, 8, 1, f) == 1;
        h = fnv1a(h, b, 8);
    }
    for (int s = 0; ok && s < c->g.n_slots; s++) {
        int pages = used_pages(&c->g, c->n_past[s]);
        for (int j = 0; ok && j < c->g.n_kv_heads; j++) {
            size_t off[3], len[3];
            for (int r = 0, n_runs = head_runs(c, s, j, pages, off, len); ok && r < n_runs; r++)
                for (size_t done = 0; ok && done < len[r];) {
                    size_t k = len[r] - done < sizeof buf ? len[r] - done : sizeof buf;
                    st = c->backend->ops->kv_read(c->backend, c, off[r] + done, buf, k);
                    if (st != DATTN_OK) {
                        file_replace_abort(&fr);
                        return st;
                    }
                    ok = fwrite(buf, 1, k, f) == k;
                    h = fnv1a(h, buf, k);
                    done += k;
                }
        }
    }
    uint8_t tail[8];
    le_put_u64(tail, h);
    ok = ok && fwrite(tail, 8, 1, f) == 1;
    if (!ok) {
        int err = errno;
        file_replace_abort(&fr);
        return dattn_fail(DATTN_E_IO, "kv: writing '%s' failed: %s", path, strerror(err));
    }
    return file_replace_commit(&fr);
}

/* Reads the page runs of a checked file; with `into` 0 only hashes them. */
static int read_pages(dattn_cache *c, FILE *f, const int64_t *n_past, int into, uint64_t *h)
{
    uint8_t buf[1 << 14];
    for (int s = 0; s < c->g.n_slots; s++) {
        int pages = used_pages(&c->g, n_past[s]);
        for (int j = 0; j < c->g.n_kv_heads; j++) {
            size_t off[3], len[3];
            for (int r = 0, n_runs = head_runs(c, s, j, pages, off, len); r < n_runs; r++)
                for (size_t done = 0; done < len[r];) {
                    size_t k = len[r] - done < sizeof buf ? len[r] - done : sizeof buf;
                    if (fread(buf, 1, k, f) != k)
                        return 0;
                    *h = fnv1a(*h, buf, k);
                    if (into && c->backend->ops->kv_write(c->backend, c, off[r] + done, buf, k) !=
                                    DATTN_OK)
                        return 0;
                    done += k;
                }
        }
    }
    return 1;
}

dattn_status kv_restore(dattn_cache *c, const char *path)
{
    if (!host_is_little_endian())
        return dattn_fail(DATTN_E_UNSUPPORTED, "kv: restoring a cache needs a little-endian host");
    FILE *f = fopen(path, "rb");
    if (!f)
        return dattn_fail(DATTN_E_IO, "kv: cannot open '%s': %s", path, strerror(errno));
    dattn_status st = DATTN_OK;
    int64_t *n_past = NULL;
    uint8_t head[8 + 4 * KV_HEADER_FIELDS];
    if (fread(head, sizeof head, 1, f) != 1 || memcmp(head, kv_magic, 8) != 0) {
        st = dattn_fail(DATTN_E_FORMAT, "kv: '%s' is not a dattn cache file", path);
        goto fail;
    }
    uint32_t want[KV_HEADER_FIELDS];
    header_fields(c, want);
    for (int i = 0; i < KV_HEADER_FIELDS; i++) {
        uint32_t got = le_get_u32(head + 8 + 4 * i);
        if (i >= KV_MODEL_FIELD && got != want[i]) {
            uint64_t file_tag = le_get_u32(head + 8 + 4 * KV_MODEL_FIELD) |
                                (uint64_t)le_get_u32(head + 8 + 4 * (KV_MODEL_FIELD + 1)) << 32;
            st = dattn_fail(DATTN_E_FORMAT, "kv: '%s' was saved for another model (fingerprint "
                            "%016llx; this one is %016llx)", path, (unsigned long long)file_tag,
                            (unsigned long long)c->model_tag);
            goto fail;
        }
        if (got != want[i]) {
            st = dattn_fail(DATTN_E_FORMAT, "kv: '%s' has %s %u, this cache has %u", path,
                            field_names[i], got, want[i]);
            goto fail;
        }
    }
    uint64_t h = fnv1a(FNV1A_INIT, head, sizeof head);
    n_past = dattn_alloc(sizeof *n_past * (size_t)c->g.n_slots, "restored positions");
    if (!n_past) {
        st = DATTN_E_NOMEM;
        goto fail;
    }
    for (int s = 0; s < c->g.n_slots; s++) {
        uint8_t b[8];
        if (fread(b, 8, 1, f) != 1) {
            st = dattn_fail(DATTN_E_FORMAT, "kv: '%s' is truncated in its positions", path);
            goto fail;
        }
        h = fnv1a(h, b, 8);
        n_past[s] = (int64_t)le_get_u64(b);
        int64_t limit = c->g.policy == DATTN_POLICY_FULL ? c->g.n_ctx : INT32_MAX;
        if (n_past[s] < 0 || n_past[s] > limit) {
            st = dattn_fail(DATTN_E_FORMAT, "kv: '%s' gives layer %d an impossible n_past %lld",
                            path, s, (long long)n_past[s]);
            goto fail;
        }
        /* A session runs every layer at one position: its layers must agree. */
        if (c->model_tag && n_past[s] != n_past[0]) {
            st = dattn_fail(DATTN_E_FORMAT, "kv: '%s' is a session whose layer %d is at position "
                            "%lld and layer 0 at %lld; a session's layers move together", path, s,
                            (long long)n_past[s], (long long)n_past[0]);
            goto fail;
        }
    }
    off_t size = fseeko(f, 0, SEEK_END) == 0 ? ftello(f) : -1;
    if (size < 0 || (uint64_t)size != (uint64_t)file_bytes(c, n_past)) {
        st = dattn_fail(DATTN_E_FORMAT, "kv: '%s' is %lld bytes, its header says %zu", path,
                        (long long)size, file_bytes(c, n_past));
        goto fail;
    }
    /* Pass 1 proves the checksum without touching the cache; pass 2 copies. */
    long data_at = 8 + 4 * KV_HEADER_FIELDS + 8 * (long)c->g.n_slots;
    uint64_t h1 = h, h2 = h;
    uint8_t tail[8];
    if (fseek(f, data_at, SEEK_SET) != 0 || !read_pages(c, f, n_past, 0, &h1) ||
        fread(tail, 8, 1, f) != 1 || le_get_u64(tail) != h1) {
        st = dattn_fail(DATTN_E_FORMAT, "kv: '%s' fails its checksum (corrupt file)", path);
        goto fail;
    }
    if (fseek(f, data_at, SEEK_SET) != 0 || !read_pages(c, f, n_past, 1, &h2) || h2 != h1) {
        /* The file changed under us: the pages are now mixed, so empty the cache. */
        kv_set_n_past(c, -1, 0);
        st = dattn_fail(DATTN_E_IO, "kv: '%s' changed while it was read; the cache was emptied", path);
        goto fail;
    }
    for (int s = 0; s < c->g.n_slots; s++)
        kv_set_n_past(c, s, n_past[s]);
fail:
    dattn_free(n_past);
    fclose(f);
    return st;
}
