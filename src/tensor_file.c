/* The public safetensors API of dattn.h (dattn_tensor_file_*): the reader and writer of
 * src/safetensors.c behind an opaque handle and a plain tensor struct, so tools and applications
 * read and write the format without the library's internal headers. */
#include <string.h>

#include "alloc.h"
#include "safetensors.h"
#include "status.h"

/* dattn_dtype and st_dtype list the same types in the same order. */
_Static_assert((int)DATTN_DTYPE_F32 == (int)ST_F32 && (int)DATTN_DTYPE_BF16 == (int)ST_BF16 &&
                   (int)DATTN_DTYPE_BOOL == (int)ST_BOOL,
               "dattn_dtype and st_dtype must agree");
_Static_assert(ST_MAX_DIMS == 8, "dattn_tensor holds 8 dims");

/* dattn_tensor_file is never defined: a handle is the st_file itself, cast at the boundary. */

dattn_status dattn_tensor_file_open(const char *path, dattn_tensor_file **out)
{
    if (!out || !path)
        return dattn_fail(DATTN_E_INVALID_ARG, "tensor file: NULL path or out");
    *out = NULL;
    st_file *f;
    dattn_status st = st_open(path, &f);
    if (st != DATTN_OK)
        return st;
    *out = (dattn_tensor_file *)f;
    return DATTN_OK;
}

void dattn_tensor_file_close(dattn_tensor_file *file) { st_close((st_file *)file); }

static void to_public(const st_tensor *t, dattn_tensor *out)
{
    memset(out, 0, sizeof *out);
    out->name = t->name;
    out->dtype = (dattn_dtype)t->dtype;
    out->n_dims = t->n_dims;
    memcpy(out->shape, t->shape, sizeof(int64_t) * (size_t)t->n_dims);
    out->data = t->data;
}

dattn_status dattn_tensor_file_find(const dattn_tensor_file *file, const char *name,
                                    dattn_tensor *out)
{
    if (!file || !name || !out)
        return dattn_fail(DATTN_E_INVALID_ARG, "tensor file: NULL file, name or out");
    const st_tensor *t = st_find((const st_file *)file, name);
    if (!t)
        return dattn_fail(DATTN_E_FORMAT, "safetensors: the file has no tensor '%.200s'", name);
    to_public(t, out);
    return DATTN_OK;
}

const char *dattn_tensor_file_meta(const dattn_tensor_file *file, const char *key)
{
    return st_meta((const st_file *)file, key);
}

/* A public tensor as the internal one (n_elems and nbytes from its shape). */
static dattn_status to_internal(const dattn_tensor *t, st_tensor *out)
{
    memset(out, 0, sizeof *out);
    if (t->n_dims < 0 || t->n_dims > ST_MAX_DIMS || st_dtype_size((st_dtype)t->dtype) == 0)
        return dattn_fail(DATTN_E_INVALID_ARG, "tensor '%.200s': dtype %d with %d dims",
                          t->name ? t->name : "?", (int)t->dtype, t->n_dims);
    size_t n = 1;
    for (int d = 0; d < t->n_dims; d++) {
        if (t->shape[d] < 0 || (t->shape[d] > 0 && n > SIZE_MAX / (size_t)t->shape[d]))
            return dattn_fail(DATTN_E_INVALID_ARG, "tensor '%.200s': impossible shape",
                              t->name ? t->name : "?");
        n *= (size_t)t->shape[d];
    }
    out->name = t->name;
    out->dtype = (st_dtype)t->dtype;
    out->n_dims = t->n_dims;
    memcpy(out->shape, t->shape, sizeof(int64_t) * (size_t)t->n_dims);
    out->n_elems = n;
    out->nbytes = n * st_dtype_size(out->dtype);
    out->data = t->data;
    return DATTN_OK;
}

dattn_status dattn_tensor_to_f32(const dattn_tensor *t, float *dst)
{
    if (!t)
        return dattn_fail(DATTN_E_INVALID_ARG, "tensor: NULL tensor");
    st_tensor it;
    dattn_status st = to_internal(t, &it);
    return st == DATTN_OK ? st_to_f32(&it, dst) : st;
}

dattn_status dattn_tensor_file_write(const char *path, const dattn_tensor *tensors, int n_tensors,
                                     const char *const *meta_kv, int n_meta)
{
    if (n_tensors < 0 || (n_tensors > 0 && !tensors) || n_tensors > 1 << 20)
        return dattn_fail(DATTN_E_INVALID_ARG, "tensor file: %d tensors", n_tensors);
    st_write_tensor *w = n_tensors ? dattn_alloc(sizeof *w * (size_t)n_tensors, "tensor list")
                                   : NULL;
    if (n_tensors && !w)
        return DATTN_E_NOMEM;
    dattn_status st = DATTN_OK;
    for (int i = 0; i < n_tensors && st == DATTN_OK; i++) {
        if (tensors[i].n_dims < 0 || tensors[i].n_dims > ST_MAX_DIMS) {
            st = dattn_fail(DATTN_E_INVALID_ARG, "tensor %d has %d dims", i, tensors[i].n_dims);
            break;
        }
        w[i].name = tensors[i].name;
        w[i].dtype = (st_dtype)tensors[i].dtype;
        w[i].n_dims = tensors[i].n_dims;
        memcpy(w[i].shape, tensors[i].shape, sizeof(int64_t) * (size_t)tensors[i].n_dims);
        w[i].data = tensors[i].data;
    }
    if (st == DATTN_OK)
        st = st_write(path, w, n_tensors, meta_kv, n_meta);
    dattn_free(w);
    return st;
}
