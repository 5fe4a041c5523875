/* dattn_model_quantize: a model written again as one safetensors file whose weight matrices are
 * q8_0 or q4_0 rows (DESIGN §6), which then loads in one mmap with nothing converted. Every 2-D
 * float tensor of the source (the projections, the embedding, the logits weight: the only 2-D
 * tensors these models have) becomes U8 [rows][row bytes] of the block format; the vectors are
 * copied as they are. The metadata says the format ("dattn.weights") and carries the rest of the
 * model: a dattn file's own metadata, or a Hugging Face directory's config.json,
 * generation_config.json, tokenizer.json and tokenizer_config.json as "dattn.<file name>". The
 * rows are made as they are written (a few MiB at a time), and the source's pages released
 * behind them, so a model larger than memory quantizes. The source is loaded (and so checked
 * whole) first. */
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "backend.h"
#include "convert.h"
#include "hf_model.h"
#include "quant.h"
#include "safetensors.h"
#include "status.h"

enum { CHUNK_BYTES = 1 << 20 };   /* output bytes a producer call makes, whole rows */

typedef struct packed_tensor {
    const st_tensor *src;
    dattn_dtype to;
    int k;
    size_t row_bytes, src_row_bytes;
    float *row;                /* [k] */
} packed_tensor;

/* Rows [off / row_bytes, ...) of the packed tensor into buf. */
static dattn_status produce_rows(void *ctx, size_t off, void *buf, size_t n)
{
    packed_tensor *p = ctx;
    const st_tensor *t = p->src;
    size_t r0 = off / p->row_bytes, rows = n / p->row_bytes;
    const uint8_t *src = (const uint8_t *)t->data + r0 * p->src_row_bytes;
    for (size_t r = 0; r < rows; r++, src += p->src_row_bytes) {
        size_t bad = convert_f32((dattn_dtype)t->dtype, src, (size_t)p->k, p->row);
        if (bad < (size_t)p->k)
            return dattn_fail(DATTN_E_NONFINITE, "quantize: tensor '%s' holds a NaN or infinite "
                              "value (element %zu)", t->name, (r0 + r) * (size_t)p->k + bad);
        quant_row_from_f32(p->to, p->row, p->k, (uint8_t *)buf + r * p->row_bytes);
    }
    st_release_range(t, r0 * p->src_row_bytes, rows * p->src_row_bytes);
    return DATTN_OK;
}

/* What the output holds: the tensors of every source file, in order, matrices packed. */
typedef struct plan {
    st_write_tensor *w;
    st_producer *pr;
    packed_tensor *pk;
    int n;
    const char **meta;         /* key, value pairs */
    int n_meta;
} plan;

static dattn_status plan_tensors(plan *p, st_file *const *files, int n_files, dattn_dtype to)
{
    int n = 0;
    for (int f = 0; f < n_files; f++)
        n += st_count(files[f]);
    p->w = dattn_alloc(sizeof *p->w * (size_t)n + 1, "quantize tensor list");
    p->pr = dattn_alloc(sizeof *p->pr * (size_t)n + 1, "quantize producers");
    p->pk = dattn_alloc(sizeof *p->pk * (size_t)n + 1, "quantize tensors");
    if (!p->w || !p->pr || !p->pk)
        return DATTN_E_NOMEM;
    memset(p->pr, 0, sizeof *p->pr * (size_t)n);
    memset(p->pk, 0, sizeof *p->pk * (size_t)n);
    for (int f = 0; f < n_files; f++)
        for (int i = 0; i < st_count(files[f]); i++) {
            const st_tensor *t = st_at(files[f], i);
            st_write_tensor *w = &p->w[p->n];
            w->name = t->name;
            w->dtype = t->dtype;
            w->n_dims = t->n_dims;
            memcpy(w->shape, t->shape, sizeof w->shape);
            w->data = t->data;
            int matrix = t->n_dims == 2 && (t->dtype == ST_F32 || t->dtype == ST_F16 ||
                                            t->dtype == ST_BF16);
            if (matrix && t->shape[0] > 0) {
                packed_tensor *pk = &p->pk[p->n];
                pk->src = t;
                pk->to = to;
                pk->k = (int)t->shape[1];
                pk->row_bytes = quant_row_bytes(to, t->shape[1]);
                pk->src_row_bytes = (size_t)t->shape[1] * st_dtype_size(t->dtype);
                if (pk->row_bytes == 0)
                    return dattn_fail(DATTN_E_UNSUPPORTED, "quantize: tensor '%s' has %lld "
                                      "columns; %s rows need a multiple of %d", t->name,
                                      (long long)t->shape[1], quant_name(to), QUANT_BLOCK);
                if (!(pk->row = dattn_alloc(sizeof(float) * (size_t)pk->k, "quantize row")))
                    return DATTN_E_NOMEM;
                size_t rows = CHUNK_BYTES / pk->row_bytes ? CHUNK_BYTES / pk->row_bytes : 1;
                p->pr[p->n] = (st_producer){produce_rows, pk, rows * pk->row_bytes};
                w->dtype = ST_U8;
                w->shape[1] = (int64_t)pk->row_bytes;
                w->data = NULL;
            }
            p->n++;
        }
    return DATTN_OK;
}

static void plan_free(plan *p)
{
    for (int i = 0; p->pk && i < p->n; i++)
        dattn_free(p->pk[i].row);
    dattn_free(p->w);
    dattn_free(p->pr);
    dattn_free(p->pk);
    dattn_free(p->meta);
}

/* The source loads as a model (every tensor, the config and the tokenizer checked): what is
 * written is then a model too. */
static dattn_status check_source(const char *in)
{
    dattn_backend_params bp = dattn_backend_default_params();
    bp.type = DATTN_BACKEND_CPU;
    bp.n_threads = 1;
    dattn_backend *be = NULL;
    dattn_model *m = NULL;
    dattn_status st = dattn_backend_create(&bp, &be);
    if (st == DATTN_OK)
        st = dattn_model_load(be, in, &m);
    dattn_model_free(m);
    dattn_backend_free(be);
    return st;
}

dattn_status dattn_model_quantize(const char *in, const char *out, dattn_dtype type)
{
    if (!in || !out)
        return dattn_fail(DATTN_E_INVALID_ARG, "quantize: NULL path");
    if (!quant_is_block(type))
        return dattn_fail(DATTN_E_INVALID_ARG, "quantize: the type is q8_0 or q4_0, not dtype "
                          "%d", (int)type);
    dattn_status st = check_source(in);
    if (st != DATTN_OK)
        return st;
    hf_files hf;
    memset(&hf, 0, sizeof hf);
    st_file *one = NULL;
    plan p;
    memset(&p, 0, sizeof p);
    int hf_dir = hf_is_model_path(in);
    if (hf_dir)
        st = hf_files_open(in, &hf);
    else
        st = st_open(in, &one);
    if (st != DATTN_OK)
        goto done;
    if (one && st_meta(one, "dattn.weights")) {
        st = dattn_fail(DATTN_E_INVALID_ARG, "quantize: the file already holds %s weights; "
                        "quantize the model it was made from", st_meta(one, "dattn.weights"));
        goto done;
    }
    if ((st = plan_tensors(&p, hf_dir ? hf.shards : &one, hf_dir ? hf.n_shards : 1, type)) !=
        DATTN_OK)
        goto done;
    /* Metadata: the format, then what the model needs besides its tensors. */
    int cap = 1 + (one ? st_meta_count(one) : HF_N_TEXTS);
    if (!(p.meta = dattn_alloc(sizeof *p.meta * 2 * (size_t)cap, "quantize metadata"))) {
        st = DATTN_E_NOMEM;
        goto done;
    }
    char keys[HF_N_TEXTS][64];
    p.meta[0] = "dattn.weights";
    p.meta[1] = quant_name(type);
    p.n_meta = 1;
    for (int i = 0; one && i < st_meta_count(one); i++) {
        p.meta[2 * p.n_meta] = st_meta_key(one, i);
        p.meta[2 * p.n_meta++ + 1] = st_meta_value(one, i);
    }
    for (int i = 0; hf_dir && i < HF_N_TEXTS; i++)
        if (hf.text[i]) {
            snprintf(keys[i], sizeof keys[i], "dattn.%s", hf_text_names[i]);
            p.meta[2 * p.n_meta] = keys[i];
            p.meta[2 * p.n_meta++ + 1] = hf.text[i];
        }
    st = st_write_produced(out, p.w, p.pr, p.n, p.meta, p.n_meta);
done:
    if (st != DATTN_OK)
        dattn_error_prefix("%s: ", in);
    plan_free(&p);
    st_close(one);
    hf_files_close(&hf);
    return st;
}
