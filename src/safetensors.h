/* Reading and writing safetensors files (DESIGN §6): an 8-byte little-endian header length, a
 * JSON header, then raw little-endian tensor data. The reader maps the file read-only and checks
 * every offset, size, shape and dtype before handing out a pointer; tensors are not copied. */
#ifndef DATTN_SAFETENSORS_H
#define DATTN_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dattn.h"

/* Every safetensors dtype the reader accepts; other dtype strings are a format error. */
typedef enum st_dtype { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL } st_dtype;

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER_BYTES 100000000   /* a header above this is refused, as upstream does */

typedef struct st_tensor {
    const char *name;          /* NUL-terminated, owned by the st_file */
    st_dtype dtype;
    int n_dims;                /* 0 for a scalar (one element) */
    int64_t shape[ST_MAX_DIMS];
    size_t n_elems;
    size_t nbytes;
    const void *data;          /* into the mapped/loaded file, valid until st_close; any alignment */
    int mapped;                /* 1: data lies in a file st_open mapped (st_release_tensor) */
} st_tensor;

typedef struct st_file st_file;

/* Map `path` read-only, parse and validate it. DATTN_E_IO if it cannot be opened or mapped,
 * DATTN_E_FORMAT (message names the tensor or key and the problem) if it is malformed. */
dattn_status st_open(const char *path, st_file **out);
/* The same checks on buf[0..len), which is not copied and must outlive the st_file. */
dattn_status st_open_memory(const void *buf, size_t len, st_file **out);
void st_close(st_file *f);
/* Hands the mapped file's pages back to the kernel (madvise MADV_DONTNEED): once the loader has
 * converted the weights, the copy it made is what stays resident. The mapping stays valid; a read
 * faults its page back in from the file. Nothing for st_open_memory. */
void st_release_pages(const st_file *f);
/* The same for the whole pages inside one tensor's data (a mapped one; nothing otherwise): the
 * loader's step after it converted that tensor, so that the file is never all resident at once. */
void st_release_tensor(const st_tensor *t);
/* The whole pages inside bytes [off, off + n) of a tensor's data. */
void st_release_range(const st_tensor *t, size_t off, size_t n);

/* Tensors in header order. */
int st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, int i);
const st_tensor *st_find(const st_file *f, const char *name);  /* NULL if absent */
const char *st_meta(const st_file *f, const char *key);         /* __metadata__ value or NULL */
int st_meta_count(const st_file *f);                            /* __metadata__ pairs, by key */
const char *st_meta_key(const st_file *f, int i);
const char *st_meta_value(const st_file *f, int i);

const char *st_dtype_name(st_dtype t);                          /* "F32", "BF16", ... */
size_t st_dtype_size(st_dtype t);                               /* 0 for an unknown value */

/* Check a tensor's presence and shape; DATTN_E_FORMAT with a message naming it otherwise:
 * "safetensors: 'k_proj.weight' is [512,256], expected [256,512]". out may be NULL. */
dattn_status st_expect(const st_file *f, const char *name, int n_dims, const int64_t *shape,
                       const st_tensor **out);

/* Convert an F32/F16/BF16 tensor to f32; dst holds n_elems floats. Other dtypes: DATTN_E_FORMAT. */
dattn_status st_to_f32(const st_tensor *t, float *dst);

/* Writer: tensors in the given order, each starting 8-byte aligned (zero padding between), the
 * header padded with spaces to a multiple of 8. meta_kv is key0, val0, key1, val1, ... (n_meta
 * pairs; NULL when n_meta is 0). Bad arguments: DATTN_E_INVALID_ARG; write failures: DATTN_E_IO
 * (a partly written file is removed). */
typedef struct st_write_tensor {
    const char *name;
    st_dtype dtype;
    int n_dims;
    int64_t shape[ST_MAX_DIMS];
    const void *data;          /* n_elems * dtype size bytes, little-endian */
} st_write_tensor;

dattn_status st_write(const char *path, const st_write_tensor *tensors, int n_tensors,
                      const char *const *meta_kv, int n_meta);

/* A tensor's bytes made as they are written instead of held in memory, `chunk` at a time (the
 * last piece may be shorter): produce(ctx, off, buf, n) fills bytes [off, off + n), called in
 * order; a status other than DATTN_OK stops the write (nothing replaces `path`) and is
 * returned. */
typedef struct st_producer {
    dattn_status (*produce)(void *ctx, size_t off, void *buf, size_t n);
    void *ctx;
    size_t chunk;
} st_producer;

/* st_write where tensors[i] with data NULL takes its bytes from producers[i]. */
dattn_status st_write_produced(const char *path, const st_write_tensor *tensors,
                               const st_producer *producers, int n_tensors,
                               const char *const *meta_kv, int n_meta);

#endif
