/* Safetensors reader and writer (DESIGN §6, errors per §7; API in safetensors.h). The reader
 * trusts nothing in the file: the header length, JSON, dtypes, shapes and offsets are checked,
 * and tensors must lie inside the data section without overlapping, before a pointer is given out.
 * Every failure names the tensor or key and the problem. */
#define _DEFAULT_SOURCE   /* madvise */
#define _POSIX_C_SOURCE 200809L
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "alloc.h"
#include "bytes.h"
#include "convert.h"
#include "file_replace.h"
#include "json.h"
#include "status.h"

typedef struct meta_pair {
    const char *key, *value;
} meta_pair;

struct st_file {
    void *map;                  /* the mmapped file; NULL for st_open_memory */
    size_t map_bytes;
    json_doc *doc;              /* holds the tensor names and metadata strings */
    int n_tensors;
    st_tensor *tensors;         /* [n_tensors] in header order */
    const st_tensor **by_name;  /* [n_tensors] sorted by name, for st_find */
    int n_meta;
    meta_pair *meta;              /* [n_meta] sorted by key */
};

/* Where a tensor's bytes lie in the data section, for the overlap check. */
typedef struct extent {
    size_t begin, end;
    const char *name;
} extent;

static const struct { const char *name; size_t size; } dtype_info[] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}, [ST_F64] = {"F64", 8},
    [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4}, [ST_I16] = {"I16", 2}, [ST_I8] = {"I8", 1},
    [ST_U8] = {"U8", 1},   [ST_BOOL] = {"BOOL", 1},
};
#define N_DTYPES ((int)(sizeof dtype_info / sizeof dtype_info[0]))

static bool dtype_valid(st_dtype t) { return (int)t >= 0 && (int)t < N_DTYPES; }

const char *st_dtype_name(st_dtype t) { return dtype_valid(t) ? dtype_info[t].name : "unknown"; }

size_t st_dtype_size(st_dtype t) { return dtype_valid(t) ? dtype_info[t].size : 0; }

/* A format error: "safetensors: <src>: <problem>"; src (the path) is NULL for memory buffers.
 * Names from the file are printed with %.200s so the problem always fits in the message. */
static dattn_status DATTN_PRINTF(2, 3) bad(const char *src, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (src)
        return dattn_fail(DATTN_E_FORMAT, "safetensors: '%.200s': %s", src, msg);
    return dattn_fail(DATTN_E_FORMAT, "safetensors: %s", msg);
}

/* "[512,256]" into buf (192 bytes hold 8 dims of 20 digits). */
static const char *shape_str(char buf[192], int n_dims, const int64_t *shape)
{
    size_t at = 0;
    buf[at++] = '[';
    for (int d = 0; d < n_dims; d++)
        at += (size_t)snprintf(buf + at, 192 - at, d ? ",%" PRId64 : "%" PRId64, shape[d]);
    snprintf(buf + at, 192 - at, "]");
    return buf;
}

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

static int cmp_meta_key(const void *a, const void *b)
{
    return strcmp(((const meta_pair *)a)->key, ((const meta_pair *)b)->key);
}

static int cmp_extent(const void *a, const void *b)
{
    const extent *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* A shape dimension or data offset: a JSON integer >= 0. */
static bool is_count(const json_tok *t) { return t->type == JSON_NUMBER && t->is_int && t->ival >= 0; }

/* One header entry toks[name_i] : {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}. */
static dattn_status parse_tensor(const json_tok *toks, int name_i, const unsigned char *data,
                                 size_t data_bytes, const char *src, st_tensor *t, extent *ext)
{
    const char *name = toks[name_i].str;
    const json_tok *entry = &toks[name_i + 1];
    t->name = name;
    if (entry->type != JSON_OBJECT)
        return bad(src, "tensor '%.200s' is %s, expected an object", name,
                   json_type_name(entry->type));

    int dtype_i = -1, shape_i = -1, offsets_i = -1;
    for (int k = name_i + 2, m = 0; m < entry->n; m++, k = toks[k + 1].end) {
        const char *key = toks[k].str;
        int *slot = !strcmp(key, "dtype") ? &dtype_i
                  : !strcmp(key, "shape") ? &shape_i
                  : !strcmp(key, "data_offsets") ? &offsets_i : NULL;
        if (!slot)
            return bad(src, "tensor '%.200s' has an unknown key '%.40s'", name, key);
        if (*slot >= 0)
            return bad(src, "tensor '%.200s' has '%s' twice", name, key);
        *slot = k + 1;
    }
    static const char *const need[] = {"dtype", "shape", "data_offsets"};
    const int found[] = {dtype_i, shape_i, offsets_i};
    for (int i = 0; i < 3; i++)
        if (found[i] < 0)
            return bad(src, "tensor '%.200s' has no '%s'", name, need[i]);

    const json_tok *dtype = &toks[dtype_i];
    if (dtype->type != JSON_STRING)
        return bad(src, "tensor '%.200s': 'dtype' is %s, expected a string", name,
                   json_type_name(dtype->type));
    int dt = 0;
    while (dt < N_DTYPES && strcmp(dtype->str, dtype_info[dt].name) != 0)
        dt++;
    if (dt == N_DTYPES)
        return bad(src, "tensor '%.200s' has unknown dtype '%.40s'", name, dtype->str);
    t->dtype = (st_dtype)dt;

    const json_tok *shape = &toks[shape_i];
    if (shape->type != JSON_ARRAY)
        return bad(src, "tensor '%.200s': 'shape' is %s, expected an array", name,
                   json_type_name(shape->type));
    if (shape->n > ST_MAX_DIMS)
        return bad(src, "tensor '%.200s' has %d dims, at most %d are supported", name, shape->n,
                   ST_MAX_DIMS);
    t->n_dims = shape->n;
    bool has_zero = false;
    for (int d = 0, k = shape_i + 1; d < shape->n; d++, k = toks[k].end) {
        const json_tok *dim = &toks[k];
        if (dim->type == JSON_NUMBER && dim->is_int && dim->ival < 0)
            return bad(src, "tensor '%.200s': shape[%d] is %" PRId64 ", negative", name, d, dim->ival);
        if (dim->type == JSON_NUMBER && !dim->is_int)
            return bad(src, "tensor '%.200s': shape[%d] is %.*s, not an integer", name, d,
                       (int)(dim->len < 40 ? dim->len : 40), dim->str);
        if (!is_count(dim))
            return bad(src, "tensor '%.200s': shape[%d] is %s, not an integer", name, d,
                       json_type_name(dim->type));
        t->shape[d] = dim->ival;
        has_zero |= dim->ival == 0;
    }
    /* n_elems * dtype size must fit size_t (a zero dim anywhere makes it 0). */
    size_t elem_bytes = dtype_info[dt].size, n_elems = has_zero ? 0 : 1;
    char shape_buf[192];
    for (int d = 0; d < t->n_dims && !has_zero; d++) {
        uint64_t dim = (uint64_t)t->shape[d];
        if (dim > SIZE_MAX || n_elems > SIZE_MAX / elem_bytes / (size_t)dim)
            return bad(src, "tensor '%.200s': shape %s overflows the element count", name,
                       shape_str(shape_buf, t->n_dims, t->shape));
        n_elems *= (size_t)dim;
    }
    t->n_elems = n_elems;
    t->nbytes = n_elems * elem_bytes;

    const json_tok *offsets = &toks[offsets_i];
    if (offsets->type != JSON_ARRAY || offsets->n != 2)
        return bad(src, "tensor '%.200s': 'data_offsets' is not [begin, end]", name);
    const json_tok *begin_tok = &toks[offsets_i + 1], *end_tok = &toks[begin_tok->end];
    if (!is_count(begin_tok) || !is_count(end_tok))
        return bad(src, "tensor '%.200s': 'data_offsets' is not two non-negative integers", name);
    uint64_t begin = (uint64_t)begin_tok->ival, end = (uint64_t)end_tok->ival;
    if (begin > end)
        return bad(src, "tensor '%.200s': data_offsets [%" PRIu64 ",%" PRIu64 "] begin after end",
                   name, begin, end);
    if (end > data_bytes)
        return bad(src, "tensor '%.200s': data_offsets end %" PRIu64 " is beyond the data section "
                   "(%zu bytes)", name, end, data_bytes);
    if (end - begin != t->nbytes)
        return bad(src, "tensor '%.200s': data_offsets [%" PRIu64 ",%" PRIu64 "] hold %" PRIu64
                   " bytes, but %s %s needs %zu", name, begin, end, end - begin,
                   dtype_info[dt].name, shape_str(shape_buf, t->n_dims, t->shape), t->nbytes);
    t->data = data + begin;
    ext->begin = (size_t)begin;
    ext->end = (size_t)end;
    ext->name = name;
    return DATTN_OK;
}

/* "__metadata__": {"key": "value", ...}, sorted by key into f->meta. */
static dattn_status parse_meta(st_file *f, const json_tok *toks, int meta_i, const char *src)
{
    const json_tok *obj = &toks[meta_i];
    if (obj->type != JSON_OBJECT)
        return bad(src, "'__metadata__' is %s, expected an object of strings",
                   json_type_name(obj->type));
    f->meta = dattn_alloc((size_t)obj->n * sizeof *f->meta, "safetensors metadata");
    if (!f->meta)
        return DATTN_E_NOMEM;
    f->n_meta = obj->n;
    for (int k = meta_i + 1, m = 0; m < obj->n; m++, k = toks[k + 1].end) {
        if (toks[k + 1].type != JSON_STRING)
            return bad(src, "__metadata__ '%.200s' is %s, expected a string", toks[k].str,
                       json_type_name(toks[k + 1].type));
        f->meta[m].key = toks[k].str;
        f->meta[m].value = toks[k + 1].str;
    }
    qsort(f->meta, (size_t)f->n_meta, sizeof *f->meta, cmp_meta_key);
    for (int m = 1; m < f->n_meta; m++)
        if (!strcmp(f->meta[m - 1].key, f->meta[m].key))
            return bad(src, "__metadata__ has key '%.200s' twice", f->meta[m].key);
    return DATTN_OK;
}

static dattn_status parse(st_file *f, const unsigned char *base, size_t len, const char *src)
{
    if (len < 8)
        return bad(src, "file is %zu bytes, shorter than the 8-byte header length", len);
    uint64_t header_bytes = le_get_u64(base);
    if (header_bytes == 0)
        return bad(src, "header length is 0");
    if (header_bytes > ST_MAX_HEADER_BYTES)
        return bad(src, "header length %" PRIu64 " is over the limit of %d bytes", header_bytes,
                   ST_MAX_HEADER_BYTES);
    if (header_bytes > len - 8)
        return bad(src, "header length %" PRIu64 " runs past the end of the file (%zu bytes)",
                   header_bytes, len);
    json_error jerr;
    dattn_status st = json_parse((const char *)base + 8, (size_t)header_bytes, &f->doc, &jerr);
    if (st == DATTN_E_FORMAT)
        return bad(src, "header is not valid JSON: %s at header byte %zu (file byte %zu)",
                   jerr.what, jerr.offset, jerr.offset + 8);
    if (st != DATTN_OK)
        return st;
    const json_tok *toks = f->doc->toks;
    if (toks[0].type != JSON_OBJECT)
        return bad(src, "header is %s, expected an object", json_type_name(toks[0].type));
    const unsigned char *data = base + 8 + header_bytes;
    size_t data_bytes = len - 8 - (size_t)header_bytes;

    /* Members are "__metadata__" (at most once) and tensors. */
    int meta_i = -1, n_tensors = 0;
    for (int k = 1, m = 0; m < toks[0].n; m++, k = toks[k + 1].end) {
        if (strcmp(toks[k].str, "__metadata__") != 0)
            n_tensors++;
        else if (meta_i >= 0)
            return bad(src, "'__metadata__' appears twice");
        else
            meta_i = k + 1;
    }
    if (meta_i >= 0 && (st = parse_meta(f, toks, meta_i, src)) != DATTN_OK)
        return st;

    f->tensors = dattn_alloc((size_t)n_tensors * sizeof *f->tensors, "safetensors tensors");
    f->by_name = dattn_alloc((size_t)n_tensors * sizeof *f->by_name, "safetensors index");
    extent *ext = dattn_alloc((size_t)n_tensors * sizeof *ext, "safetensors extents");
    if (!f->tensors || !f->by_name || !ext) {
        st = DATTN_E_NOMEM;
        goto fail;
    }
    f->n_tensors = n_tensors;
    for (int k = 1, m = 0, i = 0; m < toks[0].n; m++, k = toks[k + 1].end) {
        if (k + 1 == meta_i)
            continue;
        st = parse_tensor(toks, k, data, data_bytes, src, &f->tensors[i], &ext[i]);
        if (st != DATTN_OK)
            goto fail;
        f->by_name[i] = &f->tensors[i];
        i++;
    }

    qsort(f->by_name, (size_t)n_tensors, sizeof *f->by_name, cmp_tensor_name);
    for (int i = 1; i < n_tensors; i++) {
        if (!strcmp(f->by_name[i - 1]->name, f->by_name[i]->name)) {
            st = bad(src, "duplicate tensor name '%.200s'", f->by_name[i]->name);
            goto fail;
        }
    }
    /* Sorted by offset, each non-empty tensor must start at or after the previous one's end. */
    qsort(ext, (size_t)n_tensors, sizeof *ext, cmp_extent);
    const extent *prev = NULL;
    for (int i = 0; i < n_tensors; i++) {
        if (ext[i].begin == ext[i].end)
            continue;                   /* empty: occupies no bytes */
        if (prev && prev->end > ext[i].begin) {
            st = bad(src, "tensors '%.200s' [%zu,%zu) and '%.200s' [%zu,%zu) overlap", prev->name,
                     prev->begin, prev->end, ext[i].name, ext[i].begin, ext[i].end);
            goto fail;
        }
        prev = &ext[i];
    }
    st = DATTN_OK;
fail:
    dattn_free(ext);
    return st;
}

/* Takes over `map` (munmapped on failure). */
static dattn_status open_common(const unsigned char *base, size_t len, void *map, const char *src,
                                st_file **out)
{
    st_file *f = dattn_alloc(sizeof *f, "safetensors file");
    if (!f) {
        if (map)
            munmap(map, len);
        return DATTN_E_NOMEM;
    }
    f->map = map;
    f->map_bytes = len;
    dattn_status st = parse(f, base, len, src);
    if (st != DATTN_OK) {
        st_close(f);
        return st;
    }
    for (int i = 0; map && i < f->n_tensors; i++)
        f->tensors[i].mapped = 1;
    *out = f;
    return DATTN_OK;
}

dattn_status st_open_memory(const void *buf, size_t len, st_file **out)
{
    if (!out || (!buf && len))
        return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: st_open_memory needs a buffer and out");
    *out = NULL;
    static const unsigned char empty[8];
    return open_common(buf ? buf : empty, len, NULL, NULL, out);
}

dattn_status st_open(const char *path, st_file **out)
{
    if (!path || !out)
        return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: st_open needs a path and out");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return dattn_fail(DATTN_E_IO, "safetensors: cannot open '%.200s': %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return dattn_fail(DATTN_E_IO, "safetensors: cannot stat '%.200s': %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return dattn_fail(DATTN_E_IO, "safetensors: '%.200s' is not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return dattn_fail(DATTN_E_IO, "safetensors: '%.200s' is too large to map", path);
    }
    size_t len = (size_t)sb.st_size;
    if (len < 8) {                      /* mmap refuses 0 bytes; parse() reports the size */
        close(fd);
        static const unsigned char empty[8];
        return open_common(empty, len, NULL, path, out);
    }
    /* Read-only and private: the file is never written. Note that a file truncated by someone
     * else while mapped raises SIGBUS on access; nothing in user space can check for that. */
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd);
    if (map == MAP_FAILED)
        return dattn_fail(DATTN_E_IO, "safetensors: cannot map '%.200s': %s", path, strerror(err));
    return open_common(map, len, map, path, out);
}

void st_release_pages(const st_file *f)
{
    if (f && f->map)
        madvise(f->map, f->map_bytes, MADV_DONTNEED);   /* advice: a failure changes nothing */
}

int st_meta_count(const st_file *f) { return f->n_meta; }
const char *st_meta_key(const st_file *f, int i) { return f->meta[i].key; }
const char *st_meta_value(const st_file *f, int i) { return f->meta[i].value; }

void st_release_range(const st_tensor *t, size_t off, size_t n)
{
    if (!t || !t->mapped || off > t->nbytes || n > t->nbytes - off)
        return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)t->data + off + page - 1) / page * page;
    uintptr_t b = ((uintptr_t)t->data + off + n) / page * page;   /* whole pages inside */
    if (b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);   /* advice: a failure changes nothing */
}

void st_release_tensor(const st_tensor *t)
{
    if (t)
        st_release_range(t, 0, t->nbytes);
}

void st_close(st_file *f)
{
    if (!f)
        return;
    json_free(f->doc);
    dattn_free(f->tensors);
    dattn_free(f->by_name);
    dattn_free(f->meta);
    if (f->map)
        munmap(f->map, f->map_bytes);
    dattn_free(f);
}

int st_count(const st_file *f) { return f ? f->n_tensors : 0; }

const st_tensor *st_at(const st_file *f, int i)
{
    return f && i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    if (!f || !name || f->n_tensors == 0)
        return NULL;
    st_tensor key = {.name = name};
    const st_tensor *key_ptr = &key;
    const st_tensor *const *hit = bsearch(&key_ptr, f->by_name, (size_t)f->n_tensors,
                                          sizeof *f->by_name, cmp_tensor_name);
    return hit ? *hit : NULL;
}

const char *st_meta(const st_file *f, const char *key)
{
    if (!f || !key || f->n_meta == 0)
        return NULL;
    meta_pair probe = {.key = key};
    const meta_pair *hit = bsearch(&probe, f->meta, (size_t)f->n_meta, sizeof *f->meta, cmp_meta_key);
    return hit ? hit->value : NULL;
}

dattn_status st_expect(const st_file *f, const char *name, int n_dims, const int64_t *shape,
                       const st_tensor **out)
{
    if (out)
        *out = NULL;
    if (!f || !name || n_dims < 0 || n_dims > ST_MAX_DIMS || (n_dims > 0 && !shape))
        return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: st_expect: bad arguments");
    const st_tensor *t = st_find(f, name);
    if (!t)
        return dattn_fail(DATTN_E_FORMAT, "safetensors: tensor '%.200s' is missing", name);
    bool same = t->n_dims == n_dims;
    for (int d = 0; same && d < n_dims; d++)
        same = t->shape[d] == shape[d];
    if (!same) {
        char have[192], want[192];
        return dattn_fail(DATTN_E_FORMAT, "safetensors: '%.200s' is %s, expected %s", name,
                          shape_str(have, t->n_dims, t->shape), shape_str(want, n_dims, shape));
    }
    if (out)
        *out = t;
    return DATTN_OK;
}

dattn_status st_to_f32(const st_tensor *t, float *dst)
{
    if (!t || (!dst && t->n_elems > 0))
        return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: st_to_f32 needs a tensor and dst");
    if (!convert_is_float((dattn_dtype)t->dtype))
        return dattn_fail(DATTN_E_FORMAT, "safetensors: tensor '%.200s' is %s; only F32, F16 and "
                          "BF16 convert to f32", t->name ? t->name : "?", st_dtype_name(t->dtype));
    size_t bad = convert_f32((dattn_dtype)t->dtype, t->data, t->n_elems, dst);
    if (bad < t->n_elems)
        return dattn_fail(DATTN_E_NONFINITE, "safetensors: tensor '%.200s' holds a NaN or infinite "
                          "value (element %zu)", t->name ? t->name : "?", bad);
    return DATTN_OK;
}

/* ---- writer ----------------------------------------------------------------------------- */

/* Header text; with p NULL it only counts, so the header is built by measuring, then filling. */
typedef struct text_buf {
    char *p;
    size_t cap, len;
} text_buf;

static void tb_put(text_buf *b, const char *s, size_t n)
{
    if (b->p && b->len + n <= b->cap)
        memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void tb_str(text_buf *b, const char *s)   /* s checked by json_escape beforehand */
{
    bool fits = b->p && b->len <= b->cap;
    b->len += json_escape(fits ? b->p + b->len : NULL, fits ? b->cap - b->len : 0, s);
}

static void DATTN_PRINTF(2, 3) tb_fmt(text_buf *b, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    tb_put(b, tmp, n < 0 ? 0 : (size_t)n);
}

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

static size_t write_nbytes(const st_write_tensor *t)
{
    size_t n = st_dtype_size(t->dtype);
    for (int d = 0; d < t->n_dims; d++)
        n *= (size_t)t->shape[d];
    return n;
}

static void build_header(text_buf *b, const st_write_tensor *tensors, int n_tensors,
                         const char *const *meta_kv, int n_meta)
{
    tb_put(b, "{", 1);
    if (n_meta > 0) {
        tb_put(b, "\"__metadata__\":{", 16);
        for (int m = 0; m < n_meta; m++) {
            if (m)
                tb_put(b, ",", 1);
            tb_str(b, meta_kv[2 * m]);
            tb_put(b, ":", 1);
            tb_str(b, meta_kv[2 * m + 1]);
        }
        tb_put(b, "}", 1);
    }
    size_t offset = 0;
    for (int i = 0; i < n_tensors; i++) {
        const st_write_tensor *t = &tensors[i];
        size_t begin = align8(offset), end = begin + write_nbytes(t);
        if (i || n_meta > 0)
            tb_put(b, ",", 1);
        tb_str(b, t->name);
        tb_fmt(b, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->dtype));
        for (int d = 0; d < t->n_dims; d++)
            tb_fmt(b, d ? ",%" PRId64 : "%" PRId64, t->shape[d]);
        tb_fmt(b, "],\"data_offsets\":[%zu,%zu]}", begin, end);
        offset = end;
    }
    tb_put(b, "}", 1);
}

/* Everything the reader would refuse is refused here, before a byte is written. */
static dattn_status check_write_args(const char *path, const st_write_tensor *tensors,
                                     const st_producer *producers, int n_tensors,
                                     const char *const *meta_kv, int n_meta)
{
    if (!path || n_tensors < 0 || (n_tensors > 0 && !tensors) || n_meta < 0 ||
        (n_meta > 0 && !meta_kv))
        return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: st_write: bad arguments");
    for (int m = 0; m < 2 * n_meta; m++)
        if (!meta_kv[m] || json_escape(NULL, 0, meta_kv[m]) == (size_t)-1)
            return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: metadata %s %d is NULL or not "
                              "UTF-8", m % 2 ? "value" : "key", m / 2);
    for (int m = 0; m < n_meta; m++)
        for (int o = 0; o < m; o++)
            if (!strcmp(meta_kv[2 * m], meta_kv[2 * o]))
                return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: metadata key '%.200s' "
                                  "given twice", meta_kv[2 * m]);
    size_t offset = 0;
    for (int i = 0; i < n_tensors; i++) {
        const st_write_tensor *t = &tensors[i];
        if (!t->name || json_escape(NULL, 0, t->name) == (size_t)-1)
            return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: tensor %d's name is NULL or not "
                              "UTF-8", i);
        if (!strcmp(t->name, "__metadata__"))
            return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: a tensor cannot be named "
                              "'__metadata__'");
        for (int o = 0; o < i; o++)
            if (!strcmp(t->name, tensors[o].name))
                return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: tensor '%.200s' given twice",
                                  t->name);
        if (!dtype_valid(t->dtype) || t->n_dims < 0 || t->n_dims > ST_MAX_DIMS)
            return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: tensor '%.200s' has dtype %d, "
                              "%d dims", t->name, (int)t->dtype, t->n_dims);
        size_t nbytes = st_dtype_size(t->dtype);
        bool has_zero = false;
        for (int d = 0; d < t->n_dims; d++) {
            if (t->shape[d] < 0)
                return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: tensor '%.200s': shape[%d] "
                                  "is negative", t->name, d);
            has_zero |= t->shape[d] == 0;
        }
        for (int d = 0; d < t->n_dims && !has_zero; d++) {
            if ((uint64_t)t->shape[d] > SIZE_MAX || nbytes > SIZE_MAX / (size_t)t->shape[d])
                return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: tensor '%.200s' is too "
                                  "large", t->name);
            nbytes *= (size_t)t->shape[d];
        }
        if (has_zero)
            nbytes = 0;
        if (nbytes > 0 && !t->data &&
            !(producers && producers[i].produce && producers[i].chunk > 0))
            return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: tensor '%.200s' has no data",
                              t->name);
        if (align8(offset) < offset || SIZE_MAX - align8(offset) < nbytes)
            return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: the tensors are too large");
        offset = align8(offset) + nbytes;
    }
    return DATTN_OK;
}

dattn_status st_write(const char *path, const st_write_tensor *tensors, int n_tensors,
                      const char *const *meta_kv, int n_meta)
{
    return st_write_produced(path, tensors, NULL, n_tensors, meta_kv, n_meta);
}

dattn_status st_write_produced(const char *path, const st_write_tensor *tensors,
                               const st_producer *producers, int n_tensors,
                               const char *const *meta_kv, int n_meta)
{
    dattn_status st = check_write_args(path, tensors, producers, n_tensors, meta_kv, n_meta);
    if (st != DATTN_OK)
        return st;
    void *buf = NULL;   /* the producers' chunk */
    text_buf measure = {0};
    build_header(&measure, tensors, n_tensors, meta_kv, n_meta);
    size_t header_bytes = align8(measure.len);   /* so the data section starts 8-aligned */
    if (header_bytes > ST_MAX_HEADER_BYTES)
        return dattn_fail(DATTN_E_INVALID_ARG, "safetensors: header would be %zu bytes, over "
                          "the limit of %d", header_bytes, ST_MAX_HEADER_BYTES);
    char *header = dattn_alloc(8 + header_bytes, "safetensors header");
    if (!header)
        return DATTN_E_NOMEM;
    for (int i = 0; i < 8; i++)
        header[i] = (char)(((uint64_t)header_bytes >> (8 * i)) & 0xff);
    text_buf fill = {.p = header + 8, .cap = header_bytes};
    build_header(&fill, tensors, n_tensors, meta_kv, n_meta);
    memset(header + 8 + fill.len, ' ', header_bytes - fill.len);

    /* Into a temporary beside the target, renamed over it only when all of it is written: a
     * failure leaves what was at `path` (and never removes a device such as /dev/full). */
    static const char zeros[8];
    file_replace fr;
    st = file_replace_open(&fr, path);
    if (st != DATTN_OK) {
        dattn_error_prefix("safetensors: ");
        goto done;
    }
    bool ok = fwrite(header, 1, 8 + header_bytes, fr.f) == 8 + header_bytes;
    dattn_status made = DATTN_OK;
    size_t offset = 0, buf_bytes = 0;
    for (int i = 0; ok && made == DATTN_OK && i < n_tensors; i++) {
        const st_write_tensor *t = &tensors[i];
        size_t pad = align8(offset) - offset, nbytes = write_nbytes(t);
        ok = fwrite(zeros, 1, pad, fr.f) == pad;
        if (t->data || nbytes == 0) {
            ok = ok && (nbytes == 0 || fwrite(t->data, 1, nbytes, fr.f) == nbytes);
        } else {
            const st_producer *pr = &producers[i];
            if (buf_bytes < pr->chunk) {
                dattn_free(buf);
                buf_bytes = 0;
                if (!(buf = dattn_alloc(pr->chunk, "safetensors write buffer"))) {
                    file_replace_abort(&fr);
                    st = DATTN_E_NOMEM;
                    goto done;
                }
                buf_bytes = pr->chunk;
            }
            for (size_t at = 0; ok && made == DATTN_OK && at < nbytes; at += pr->chunk) {
                size_t n = nbytes - at < pr->chunk ? nbytes - at : pr->chunk;
                made = pr->produce(pr->ctx, at, buf, n);
                ok = made != DATTN_OK || fwrite(buf, 1, n, fr.f) == n;
            }
        }
        offset += pad + nbytes;
    }
    if (made != DATTN_OK) {   /* the producer said why */
        st = made;
        file_replace_abort(&fr);
        goto done;
    }
    if (!ok) {
        int err = errno;
        file_replace_abort(&fr);
        st = dattn_fail(DATTN_E_IO, "safetensors: cannot write '%.200s': %s", path,
                        strerror(err ? err : EIO));
        goto done;
    }
    st = file_replace_commit(&fr);
    if (st != DATTN_OK)
        dattn_error_prefix("safetensors: ");
done:
    dattn_free(buf);
    dattn_free(header);
    return st;
}
