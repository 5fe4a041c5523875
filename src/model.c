/* Loading a Differential-Transformer checkpoint: hyper-parameters from __metadata__, every tensor
 * checked against them before any is used, then the weights handed to the backend. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "bytes.h"
#include "convert.h"
#include "hf_model.h"
#include "meta.h"
#include "quant.h"
#include "status.h"

/* ---- metadata ---------------------------------------------------------------------------- */

static dattn_status meta_float(const st_file *f, const char *key, double fallback, float *out)
{
    double x;
    dattn_status st = meta_positive(f, key, fallback, &x);
    if (st == DATTN_OK && !isfinite((float)x))
        st = dattn_fail(DATTN_E_FORMAT, "__metadata__ '%s' is %g, past the range of f32", key, x);
    *out = (float)x;
    return st;
}

static dattn_status read_info(const st_file *f, dattn_model_info *in)
{
    memset(in, 0, sizeof *in);
    long dim = 0, layers = 0, heads = 0, kv_heads = 0, vocab = 0, ffn = 0, max_seq = 0;
    dattn_status st;
    if ((st = meta_long(f, "dim", 1, 1L << 20, 1, 0, &dim)) != DATTN_OK ||
        (st = meta_long(f, "n_layers", 1, 4096, 1, 0, &layers)) != DATTN_OK ||
        (st = meta_long(f, "n_heads", 1, 1L << 16, 1, 0, &heads)) != DATTN_OK ||
        (st = meta_long(f, "n_kv_heads", 1, 1L << 16, 0, heads, &kv_heads)) != DATTN_OK ||
        (st = meta_long(f, "vocab_size", 1, 1L << 24, 1, 0, &vocab)) != DATTN_OK ||
        (st = meta_long(f, "ffn_dim", 1, 1L << 24, 1, 0, &ffn)) != DATTN_OK ||
        (st = meta_long(f, "max_seq_len", 1, INT32_MAX, 0, 2048, &max_seq)) != DATTN_OK ||
        (st = meta_float(f, "norm_eps", 1e-5, &in->norm_eps)) != DATTN_OK ||
        (st = meta_float(f, "rope_theta", 10000.0, &in->rope_theta)) != DATTN_OK)
        return st;
    in->dim = (int)dim;
    in->n_layers = (int)layers;
    in->n_heads = (int)heads;
    in->n_kv_heads = (int)kv_heads;
    in->vocab_size = (int)vocab;
    in->ffn_dim = (int)ffn;
    in->max_seq_len = (int)max_seq;
    const char *tie = st_meta(f, "tie_embeddings");
    if (!tie || !strcmp(tie, "false") || !strcmp(tie, "False") || !strcmp(tie, "0"))
        in->tie_embeddings = 0;
    else if (!strcmp(tie, "true") || !strcmp(tie, "True") || !strcmp(tie, "1"))
        in->tie_embeddings = 1;
    else
        return dattn_fail(DATTN_E_FORMAT, "model: __metadata__ 'tie_embeddings' is \"%s\", "
                          "expected true or false", tie);
    const char *tok = st_meta(f, "tokenizer");
    if (!tok)
        tok = "bytes";
    if (strlen(tok) >= sizeof in->tokenizer)
        return dattn_fail(DATTN_E_FORMAT, "model: tokenizer '%.40s...' is not supported (this "
                          "build knows: bytes)", tok);
    strcpy(in->tokenizer, tok);
    return DATTN_OK;
}

/* ---- tensor checks ------------------------------------------------------------------------ */

typedef struct want {
    char name[96];
    int n_dims;
    int64_t shape[2];
} want;

static void want_set(want *w, const char *name, int64_t a, int64_t b)
{
    snprintf(w->name, sizeof w->name, "%s", name);
    w->n_dims = b ? 2 : 1;
    w->shape[0] = a;
    w->shape[1] = b;
}

/* Per layer, in this order; the loader relies on it. */
enum { W_ATTN_NORM, W_Q, W_K, W_V, W_OUT, W_LQ1, W_LK1, W_LQ2, W_LK2, W_SUBLN, W_FFN_NORM, W_W1,
       W_W2, W_W3, W_PER_LAYER };

static void layer_wants(const dattn_model_info *in, int l, want w[W_PER_LAYER])
{
    int64_t E = in->dim, kv = E / (in->n_heads / in->n_kv_heads), d = E / in->n_heads / 2,
            F = in->ffn_dim;
    static const char *const names[W_PER_LAYER] = {
        "attention_norm.weight", "attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight",
        "attn.out_proj.weight",  "attn.lambda_q1",     "attn.lambda_k1",     "attn.lambda_q2",
        "attn.lambda_k2",        "attn.subln.weight",  "ffn_norm.weight",    "feed_forward.w1.weight",
        "feed_forward.w2.weight", "feed_forward.w3.weight"};
    const int64_t shapes[W_PER_LAYER][2] = {{E, 0}, {E, E}, {kv, E}, {kv, E}, {E, E}, {d, 0},
                                            {d, 0}, {d, 0},  {d, 0}, {2 * d, 0}, {E, 0}, {F, E},
                                            {E, F}, {F, E}};
    for (int i = 0; i < W_PER_LAYER; i++) {
        char name[96];
        snprintf(name, sizeof name, "layers.%d.%s", l, names[i]);
        want_set(&w[i], name, shapes[i][0], shapes[i][1]);
    }
}

static dattn_status check_tensor(const dattn_model *m, const want *w, const st_tensor **out)
{
    const st_tensor *t;
    int64_t shape[2];
    int packed_u8;
    model_stored_shape(m, w->shape[0], w->n_dims == 2 ? w->shape[1] : 0, shape, &packed_u8);
    dattn_status st = st_expect(m->file, w->name, w->n_dims, shape, &t);
    if (st != DATTN_OK)
        return st;
    if (packed_u8 ? t->dtype != ST_U8
                  : t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return dattn_fail(DATTN_E_FORMAT, "model: tensor '%s' is %s, expected %s", w->name,
                          st_dtype_name(t->dtype), packed_u8 ? "U8 (packed rows)" :
                          "F32, F16 or BF16");
    if (out)
        *out = t;
    return DATTN_OK;
}

/* Is `name` one of the tensors the metadata asks for? Layer numbers are plain decimal (no sign,
 * no leading zero) below n_layers, so "layers.-1.x" and "layers.07.x" are strangers. */
static int expected_name(const dattn_model_info *in, const char *name)
{
    static const char *const top[] = {"tok_embeddings.weight", "norm.weight", "output.weight"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, top[i]))
            return i < 2 || !in->tie_embeddings;
    if (strncmp(name, "layers.", 7) != 0)
        return 0;
    const char *p = name + 7;
    long l = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 5; p++, digits++)
        l = l * 10 + (*p - '0');
    if (digits == 0 || (digits > 1 && name[7] == '0') || *p != '.' || l >= in->n_layers)
        return 0;
    want w[W_PER_LAYER];
    layer_wants(in, (int)l, w);
    for (int i = 0; i < W_PER_LAYER; i++)
        if (!strcmp(name, w[i].name))
            return 1;
    return 0;
}

/* Every tensor the metadata asks for, with its shape and dtype, before anything is loaded; and
 * no tensor besides them (metadata and file disagree, or a file of another layout). */
static dattn_status check_tensors(const dattn_model *m, const dattn_model_info *in)
{
    const st_file *f = m->file;
    want w[W_PER_LAYER];
    dattn_status st;
    want_set(&w[0], "tok_embeddings.weight", in->vocab_size, in->dim);
    if ((st = check_tensor(m, &w[0], NULL)) != DATTN_OK)
        return st;
    want_set(&w[0], "norm.weight", in->dim, 0);
    if ((st = check_tensor(m, &w[0], NULL)) != DATTN_OK)
        return st;
    if (!in->tie_embeddings) {
        want_set(&w[0], "output.weight", in->vocab_size, in->dim);
        if ((st = check_tensor(m, &w[0], NULL)) != DATTN_OK)
            return dattn_error_prefix("(tie_embeddings is false) "), st;
    } else if (st_find(f, "output.weight")) {
        return dattn_fail(DATTN_E_FORMAT, "model: tie_embeddings is true but the file has an "
                          "output.weight");
    }
    for (int l = 0; l < in->n_layers; l++) {
        layer_wants(in, l, w);
        for (int i = 0; i < W_PER_LAYER; i++)
            if ((st = check_tensor(m, &w[i], NULL)) != DATTN_OK)
                return st;
    }
    for (int i = 0; i < st_count(f); i++) {
        const char *name = st_at(f, i)->name;
        if (!expected_name(in, name))
            return dattn_fail(DATTN_E_FORMAT, "model: tensor '%.200s' is not part of this model "
                              "(n_layers = %d in __metadata__; names as in DESIGN §6)", name,
                              in->n_layers);
    }
    return DATTN_OK;
}

/* ---- loading ------------------------------------------------------------------------------ */

/* FNV-1a over the metadata, every tensor's name, dtype and shape, and a sample of its bytes (the
 * first 256 and then 64 every 64 KiB): two trainings of one shape differ, and a 10 GB file is
 * fingerprinted without reading it all. */
uint64_t model_hash_tensor(const dattn_model *m, uint64_t h, const st_tensor *t)
{
    h = fnv1a(h, t->name, strlen(t->name));
    h = fnv1a(h, &t->dtype, sizeof t->dtype);
    h = fnv1a(h, t->shape, sizeof(int64_t) * (size_t)t->n_dims);
    const uint8_t *b = t->data;
    h = fnv1a(h, b, t->nbytes < 256 ? t->nbytes : 256);
    for (size_t off = 65536; off + 64 <= t->nbytes; off += 65536)
        h = fnv1a(h, b + off, 64);
    if (model_converts(m))   /* the samples faulted in pages all over it */
        st_release_tensor(t);
    return h;
}

static uint64_t fingerprint(const dattn_model *m, const dattn_model_info *in)
{
    uint64_t h = FNV1A_INIT;
    int fields[] = {in->dim, in->n_layers, in->n_heads, in->n_kv_heads, in->vocab_size,
                    in->ffn_dim, in->tie_embeddings};
    h = fnv1a(h, fields, sizeof fields);
    for (int i = 0; i < st_count(m->file); i++)
        h = model_hash_tensor(m, h, st_at(m->file, i));
    return h ? h : 1;   /* 0 means "no model" in a cache file */
}

/* Tensor `name` (checked present, float) as f32; a NaN or inf is refused, naming the tensor. */
static dattn_status to_f32(const st_file *f, const char *name, float *dst)
{
    const st_tensor *t = st_find(f, name);
    size_t bad = convert_f32((dattn_dtype)t->dtype, t->data, t->n_elems, dst);
    if (bad < t->n_elems)
        return dattn_fail(DATTN_E_NONFINITE, "model: tensor '%s' holds a NaN or infinite value "
                          "(element %zu)", name, bad);
    return DATTN_OK;
}

dattn_dtype model_tensor_format(const dattn_model *m, const st_tensor *t)
{
    if (t->dtype == ST_U8 && quant_is_block(m->packed))
        return m->packed;
    return (dattn_dtype)t->dtype;
}

int64_t model_tensor_cols(const dattn_model *m, const st_tensor *t)
{
    int64_t b = t->n_dims == 2 ? t->shape[1] : 1;
    dattn_dtype f = model_tensor_format(m, t);
    if (quant_is_block(f))
        return b / (int64_t)quant_row_bytes(f, QUANT_BLOCK) * QUANT_BLOCK;
    return b;
}

uint64_t model_tensor_params(const dattn_model *m, const st_tensor *t)
{
    if (quant_is_block(model_tensor_format(m, t)))
        return (uint64_t)t->shape[0] * (uint64_t)model_tensor_cols(m, t);
    return t->n_elems;
}

void model_stored_shape(const dattn_model *m, int64_t a, int64_t b, int64_t shape[2],
                        int *packed_u8)
{
    shape[0] = a;
    shape[1] = b;
    *packed_u8 = b && quant_is_block(m->packed);
    if (*packed_u8)
        shape[1] = (int64_t)quant_row_bytes(m->packed, b);   /* 0 when b is not whole blocks */
}

/* Row r of a stored matrix as f32 (k columns, any format it may hold). */
static void stored_row_f32(const dattn_model *m, const st_tensor *t, int64_t r, int k, float *dst)
{
    dattn_dtype f = model_tensor_format(m, t);
    const uint8_t *row = (const uint8_t *)t->data + (size_t)r * quant_row_bytes(f, k);
    if (quant_is_block(f))
        quant_row_to_f32(f, row, k, dst);
    else
        convert_f32(f, row, (size_t)k, dst);
}

/* Tensors t[0..n) (checked 2-D with k columns, finite) stacked and converted to format `to`
 * in one allocation. The source pages are released as the rows are done, a few MiB at a time,
 * so that the file and its copy are never both resident. */
static dattn_status convert_rows(const dattn_model *m, const st_tensor *const *t, int n, int k,
                                 dattn_dtype to, void **copy)
{
    enum { RELEASE_BYTES = 4 << 20 };
    size_t rb = quant_row_bytes(to, k), rows = 0;
    if (rb == 0)
        return dattn_fail(DATTN_E_UNSUPPORTED, "model: tensor '%s' has %d columns; %s weights need "
                          "a multiple of %d", t[0]->name, k, quant_name(to), QUANT_BLOCK);
    for (int i = 0; i < n; i++)
        rows += (size_t)t[i]->shape[0];
    uint8_t *dst = dattn_alloc_aligned(rows * rb + 1, "weight conversion");
    float *row = dattn_alloc(sizeof(float) * (size_t)k + 1, "weight conversion row");
    if (!dst || !row) {
        dattn_free_aligned(dst);
        dattn_free(row);
        return DATTN_E_NOMEM;
    }
    *copy = dst;
    for (int i = 0; i < n; i++) {
        size_t src_rb = quant_row_bytes(model_tensor_format(m, t[i]), k), done = 0;
        for (int64_t r = 0; r < t[i]->shape[0]; r++, dst += rb) {
            stored_row_f32(m, t[i], r, k, row);
            quant_row_from_f32(to, row, k, dst);
            size_t end = (size_t)(r + 1) * src_rb;
            if (end - done >= RELEASE_BYTES || r + 1 == t[i]->shape[0]) {
                st_release_range(t[i], done, end - done);
                done = end;
            }
        }
    }
    dattn_free(row);
    return DATTN_OK;
}

/* Keeps a converted weight for the model's lifetime (the backend borrows it). */
static dattn_status hold(dattn_model *m, void *p)
{
    if (m->n_held == m->cap_held) {
        int cap = m->cap_held ? 2 * m->cap_held : 4 * m->info.n_layers + 4;
        void **grown = dattn_alloc(sizeof(void *) * (size_t)cap, "converted weights");
        if (!grown)
            return DATTN_E_NOMEM;
        if (m->n_held)
            memcpy(grown, m->held, sizeof(void *) * (size_t)m->n_held);
        dattn_free(m->held);
        m->held = grown;
        m->cap_held = cap;
    }
    m->held[m->n_held++] = p;
    return DATTN_OK;
}

dattn_status model_weight_src(dattn_model *m, const st_tensor *const *t, int n,
                              weight_src *out, void **copy)
{
    memset(out, 0, sizeof *out);
    *copy = NULL;
    int same = 1, rows = 0;
    dattn_dtype fmt = model_tensor_format(m, t[0]);
    for (int i = 0; i < n; i++) {
        size_t es = st_dtype_size(t[i]->dtype);
        same &= model_tensor_format(m, t[i]) == fmt && (uintptr_t)t[i]->data % es == 0;
        rows += (int)t[i]->shape[0];
    }
    out->k = (int)model_tensor_cols(m, t[0]);
    out->m = rows;
    /* As stored, the usual case: the mapped file is the weights. Mixed dtypes (or a file whose
     * data is not aligned to its elements) get one f32 copy. */
    dattn_dtype want = m->params.convert_weights ? m->params.weights
                       : same ? fmt : DATTN_DTYPE_F32;
    if (same && want == fmt) {
        out->dtype = want;
        out->n_parts = n;
        for (int i = 0; i < n; i++) {
            out->part[i].data = t[i]->data;
            out->part[i].rows = (int)t[i]->shape[0];
        }
        out->borrow = 1;
        return DATTN_OK;
    }
    dattn_status st = convert_rows(m, t, n, out->k, want, copy);
    if (st != DATTN_OK)
        return st;
    out->dtype = want;
    out->n_parts = 1;
    out->part[0].data = *copy;
    out->part[0].rows = rows;
    const backend_ops *ops = m->be->ops;
    if (ops->uses_host_rows && !(ops->weight_copies && ops->weight_copies(m->be, want))) {
        if ((st = hold(m, *copy)) != DATTN_OK) {
            dattn_free_aligned(*copy);
            *copy = NULL;
            return st;
        }
        *copy = NULL;
        out->borrow = 1;
    }
    return DATTN_OK;
}

void model_release_copied(const dattn_model *m, const weight_src *src, const st_tensor *const *t,
                          int n)
{
    const backend_ops *ops = m->be->ops;
    if (!src->borrow || src->in_place || !ops->weight_copies ||
        !ops->weight_copies(m->be, src->dtype))
        return;
    for (int i = 0; i < n; i++)
        st_release_tensor(t[i]);   /* a tensor that is not mapped is left alone */
}

void model_count_weight(dattn_model *m, const backend_weight *w, int shares_embedding)
{
    int borrowed = 0;
    uint64_t bytes = m->be->ops->weight_bytes(w, &borrowed);
    if (!(borrowed && shares_embedding))   /* the embedding's bytes are counted once */
        m->info.weight_bytes += bytes;
}

dattn_status model_check_finite(const dattn_model *m, const st_tensor *const *t, int n)
{
    for (int i = 0; i < n; i++) {
        dattn_dtype f = model_tensor_format(m, t[i]);
        size_t count = (size_t)model_tensor_params(m, t[i]);
        size_t bad = quant_is_block(f) ? quant_blocks_finite(f, t[i]->data, count)
                                       : convert_f32(f, t[i]->data, count, NULL);
        if (bad < count)
            return dattn_fail(DATTN_E_NONFINITE, "model: tensor '%s' holds a NaN or infinite "
                              "value (element %zu)", t[i]->name, bad);
    }
    return DATTN_OK;
}

dattn_status model_make_weight(dattn_model *m, const st_tensor *const *t, int n,
                               int shares_embedding, backend_weight **out)
{
    dattn_status st = model_check_finite(m, t, n);
    if (st != DATTN_OK)
        return st;
    weight_src src;
    void *copy;
    st = model_weight_src(m, t, n, &src, &copy);
    src.in_place = shares_embedding;
    if (st == DATTN_OK)
        st = m->be->ops->weight_create(m->be, &src, out);
    dattn_free_aligned(copy);
    if (st == DATTN_OK) {
        model_release_copied(m, &src, t, n);
        model_count_weight(m, *out, shares_embedding);
    }
    return st;
}

dattn_status model_make_embed_logits(dattn_model *m, const st_tensor *logits, int tied)
{
    const st_tensor *e = m->embed;
    dattn_status st;
    m->info.weights = m->params.convert_weights ? m->params.weights : m->info.dtype;
    if (!m->params.convert_weights || (m->params.weights == model_tensor_format(m, e) &&
                                       (uintptr_t)e->data % st_dtype_size(e->dtype) == 0)) {
        m->info.weight_bytes += e->nbytes;   /* read from the mapped file */
        m->info.embed_bytes = e->nbytes;
        return model_make_weight(m, &logits, 1, tied, &m->w_logits);
    }
    /* Checked finite when the loader opened it. */
    dattn_dtype to = m->params.weights;
    if ((st = convert_rows(m, &e, 1, (int)model_tensor_cols(m, e), to, &m->embed_rows)) !=
        DATTN_OK)
        return st;
    m->info.embed_bytes = quant_row_bytes(to, model_tensor_cols(m, e)) * (size_t)e->shape[0];
    m->info.weight_bytes += m->info.embed_bytes;
    if (tied) {   /* the backend borrows (CPU) or uploads the same rows */
        weight_src src = {.dtype = to, .k = (int)model_tensor_cols(m, e), .n_parts = 1,
                          .part = {{m->embed_rows, (int)e->shape[0]}}, .m = (int)e->shape[0],
                          .borrow = 1, .in_place = 1};
        if ((st = m->be->ops->weight_create(m->be, &src, &m->w_logits)) != DATTN_OK)
            return st;
        model_count_weight(m, m->w_logits, 1);
    } else if ((st = model_make_weight(m, &logits, 1, 0, &m->w_logits)) != DATTN_OK) {
        return st;
    }
    model_release_files(m);
    return DATTN_OK;
}

int model_converts(const dattn_model *m)
{
    return m->params.convert_weights && m->embed &&
           m->params.weights != model_tensor_format(m, m->embed);
}

void model_release_files(const dattn_model *m)
{
    if (!model_converts(m))
        return;
    st_release_pages(m->file);
    for (int i = 0; i < m->n_shards; i++)
        st_release_pages(m->shards[i]);
}

backend_vector *model_norm_vector(dattn_model *m, const st_tensor *t, dattn_status *st)
{
    float *v = dattn_alloc(sizeof(float) * t->n_elems, t->name);
    if (!v) {
        *st = DATTN_E_NOMEM;
        return NULL;
    }
    backend_vector *bv = NULL;
    size_t bad = convert_f32((dattn_dtype)t->dtype, t->data, t->n_elems, v);
    if (bad < t->n_elems)
        *st = dattn_fail(DATTN_E_NONFINITE, "model: tensor '%s' holds a NaN or infinite value "
                         "(element %zu)", t->name, bad);
    else
        *st = m->be->ops->vector_create(m->be, v, (int)t->n_elems, &bv);
    dattn_free(v);
    if (*st == DATTN_OK)
        m->info.weight_bytes += sizeof(float) * t->n_elems;
    return bv;
}

static dattn_status load_block(dattn_model *m, int l)
{
    const dattn_model_info *in = &m->info;
    const st_file *f = m->file;
    model_block *b = &m->blocks[l];
    want w[W_PER_LAYER];
    layer_wants(in, l, w);
    const st_tensor *t[W_PER_LAYER];
    for (int i = 0; i < W_PER_LAYER; i++)
        t[i] = st_find(f, w[i].name);   /* all checked present */
    int d = in->dim / in->n_heads / 2;
    dattn_status st;

    /* The attention layer: its projections from the mapped file, its vectors as f32. */
    float *vec = dattn_alloc(sizeof(float) * 6 * (size_t)d, "layer vectors");   /* lambdas, subln */
    if (!vec)
        return DATTN_E_NOMEM;
    if ((st = to_f32(f, w[W_LQ1].name, vec)) != DATTN_OK ||
        (st = to_f32(f, w[W_LK1].name, vec + d)) != DATTN_OK ||
        (st = to_f32(f, w[W_LQ2].name, vec + 2 * d)) != DATTN_OK ||
        (st = to_f32(f, w[W_LK2].name, vec + 3 * d)) != DATTN_OK ||
        (st = to_f32(f, w[W_SUBLN].name, vec + 4 * d)) != DATTN_OK) {
        dattn_free(vec);
        return st;
    }
    const st_tensor *qkv[3] = {t[W_Q], t[W_K], t[W_V]}, *o[1] = {t[W_OUT]};
    layer_src src = {.vec_dtype = DATTN_DTYPE_F32, .lambda_q1 = vec, .lambda_k1 = vec + d,
                     .lambda_q2 = vec + 2 * d, .lambda_k2 = vec + 3 * d, .subln = vec + 4 * d,
                     .sub_eps = 1e-5f, .checked = 1};
    void *copy_qkv = NULL, *copy_out = NULL;
    dattn_layer_shape shape = model_attn_shape(m);
    shape.layer_index = l;
    if ((st = model_check_finite(m, qkv, 3)) == DATTN_OK &&
        (st = model_check_finite(m, o, 1)) == DATTN_OK &&
        (st = model_weight_src(m, qkv, 3, &src.qkv, &copy_qkv)) == DATTN_OK &&
        (st = model_weight_src(m, o, 1, &src.out, &copy_out)) == DATTN_OK &&
        (st = layer_create_src(m->be, &shape, &src, &b->attn)) == DATTN_OK) {
        model_release_copied(m, &src.qkv, qkv, 3);
        model_release_copied(m, &src.out, o, 1);
    }
    dattn_free_aligned(copy_qkv);
    dattn_free_aligned(copy_out);
    dattn_free(vec);
    if (st != DATTN_OK)
        return dattn_error_prefix("layer %d: ", l), st;
    m->info.weight_bytes += m->be->ops->layer_bytes(b->attn->impl);

    /* SwiGLU: w1 and w3 stacked into one weight so one GEMM serves both. */
    const st_tensor *w13[2] = {t[W_W1], t[W_W3]}, *w2[1] = {t[W_W2]};
    if ((st = model_make_weight(m, w13, 2, 0, &b->w13)) != DATTN_OK ||
        (st = model_make_weight(m, w2, 1, 0, &b->w2)) != DATTN_OK)
        return st;
    b->attn_norm = model_norm_vector(m, t[W_ATTN_NORM], &st);
    if (st != DATTN_OK)
        return st;
    b->ffn_norm = model_norm_vector(m, t[W_FFN_NORM], &st);
    return st;
}

void dattn_model_free(dattn_model *m)
{
    if (!m)
        return;
    const backend_ops *ops = m->be->ops;
    for (int l = 0; m->blocks && l < m->info.n_layers; l++) {
        model_block *b = &m->blocks[l];
        dattn_layer_free(b->attn);
        ops->weight_free(m->be, b->w13);
        ops->weight_free(m->be, b->w2);
        ops->vector_free(m->be, b->attn_norm);
        ops->vector_free(m->be, b->ffn_norm);
    }
    dattn_free(m->blocks);
    ops->weight_free(m->be, m->w_logits);
    dattn_free_aligned(m->embed_rows);
    for (int i = 0; i < m->n_held; i++)
        dattn_free_aligned(m->held[i]);
    dattn_free(m->held);
    ops->vector_free(m->be, m->final_norm);
    st_close(m->file);
    for (int s = 0; s < m->n_shards; s++)
        st_close(m->shards[s]);
    dattn_free(m->shards);
    tokenizer_free(&m->tok.t);
    dattn_free(m);
}

dattn_status dattn_model_load(dattn_backend *be, const char *path, dattn_model **out)
{
    return dattn_model_load_params(be, path, NULL, out);
}

static dattn_status load_params(dattn_backend *be, const char *path,
                                const dattn_model_params *params, dattn_model **out)
{
    if (!out)
        return dattn_fail(DATTN_E_INVALID_ARG, "model: out is NULL");
    *out = NULL;
    if (!be || !path)
        return dattn_fail(DATTN_E_INVALID_ARG, "model: NULL backend or path");
    const backend_ops *ops = be->ops;   /* the entries the model pass (src/session.c) calls */
    if (!ops->ffn || !ops->vector_create || !ops->pass_begin || !ops->norm ||
        !ops->residual_add || !ops->pass_end)
        return dattn_fail(DATTN_E_UNSUPPORTED, "model: the %s backend cannot run a whole model",
                          be->ops->kind);
    dattn_model *m = dattn_alloc(sizeof *m, "model");
    if (!m)
        return DATTN_E_NOMEM;
    m->be = be;
    if (params && params->convert_weights) {
        if (!quant_is_weight_format(params->weights)) {
            dattn_free(m);
            return dattn_fail(DATTN_E_INVALID_ARG, "model: weights can be held as f32, f16, bf16, "
                              "q8_0 or q4_0, not dtype %d", (int)params->weights);
        }
        m->params = *params;
    }
    dattn_status st;
    if (hf_is_model_path(path)) {   /* a Hugging Face diffllama directory (DESIGN §1b) */
        if ((st = hf_model_load(m, path)) != DATTN_OK)
            goto fail;
        *out = m;
        return DATTN_OK;
    }
    st = st_open(path, &m->file);
    if (st != DATTN_OK) {
        dattn_free(m);
        return st;
    }
    /* A file `dattn quantize` wrote: its matrices packed, maybe a Hugging Face model inside. */
    const char *packed = st_meta(m->file, "dattn.weights");
    if (packed && (quant_from_name(packed, &m->packed) != 0 || !quant_is_block(m->packed))) {
        st = dattn_fail(DATTN_E_FORMAT, "model: __metadata__ dattn.weights is '%.40s'; this "
                        "build reads q8_0 and q4_0", packed);
        goto fail;
    }
    if (hf_is_packed(m->file)) {
        if ((st = hf_model_load_packed(m)) != DATTN_OK)
            goto fail;
        *out = m;
        return DATTN_OK;
    }
    dattn_model_info *in = &m->info;
    if ((st = read_info(m->file, in)) != DATTN_OK)
        goto fail;
    dattn_layer_shape shape = model_attn_shape(m);
    if ((st = layer_check_shape(&shape)) != DATTN_OK) {
        dattn_error_prefix("model: ");
        goto fail;
    }
    in->head_dim = in->dim / in->n_heads / 2;
    in->bos_id = -1;   /* the byte tokenizer has no special tokens */
    if ((st = tokenizer_init(&m->tok.t, in->tokenizer, in->vocab_size)) != DATTN_OK ||
        (st = check_tensors(m, in)) != DATTN_OK)
        goto fail;
    m->embed = st_find(m->file, "tok_embeddings.weight");
    /* The embedding stays in the file and is read a row at a time: check all of it now. */
    if ((st = model_check_finite(m, &m->embed, 1)) != DATTN_OK)
        goto fail;
    if (model_converts(m))
        st_release_tensor(m->embed);   /* converted at the end */
    in->dtype = model_tensor_format(m, m->embed);
    for (int i = 0; i < st_count(m->file); i++)
        in->n_params += model_tensor_params(m, st_at(m->file, i));
    in->fingerprint = fingerprint(m, in);
    model_release_files(m);   /* the checks above touched the file: converting, let it go */

    m->blocks = dattn_alloc(sizeof *m->blocks * (size_t)in->n_layers, "model layers");
    if (!m->blocks) {
        st = DATTN_E_NOMEM;
        goto fail;
    }
    memset(m->blocks, 0, sizeof *m->blocks * (size_t)in->n_layers);
    for (int l = 0; l < in->n_layers; l++)
        if ((st = load_block(m, l)) != DATTN_OK)
            goto fail;
    m->final_norm = model_norm_vector(m, st_find(m->file, "norm.weight"), &st);
    if (st != DATTN_OK)
        goto fail;
    const st_tensor *logits = in->tie_embeddings ? m->embed : st_find(m->file, "output.weight");
    if ((st = model_make_embed_logits(m, logits, in->tie_embeddings)) != DATTN_OK)
        goto fail;
    *out = m;
    return DATTN_OK;
fail:
    dattn_error_prefix("%s: ", path);
    dattn_model_free(m);
    return st;
}

dattn_status dattn_model_load_params(dattn_backend *be, const char *path,
                                     const dattn_model_params *params, dattn_model **out)
{
    /* The backend may put the weights it copies into one region (backend.h: weights_group). */
    int group = be && be->ops->weights_group;
    if (group)
        be->ops->weights_group(be, 1);
    dattn_status st = load_params(be, path, params, out);
    if (group)
        be->ops->weights_group(be, 0);
    return st;
}

dattn_status dattn_model_get_info(const dattn_model *m, dattn_model_info *out)
{
    if (!m || !out)
        return dattn_fail(DATTN_E_INVALID_ARG, "model: NULL argument to dattn_model_get_info");
    *out = m->info;
    return DATTN_OK;
}

dattn_layer_shape model_attn_shape(const dattn_model *m)
{
    dattn_layer_shape s = dattn_layer_default_shape();
    s.model_dim = m->info.dim;
    s.n_heads = m->info.n_heads;
    s.n_kv_heads = m->info.n_kv_heads;
    s.rope_theta = m->info.rope_theta;
    s.head_dim = m->info.head_dim;
    return s;
}

void model_embed_row(const dattn_model *m, int32_t id, float *dst)
{
    size_t E = (size_t)m->info.dim;
    if (m->embed_rows) {
        size_t rb = quant_row_bytes(m->params.weights, (int64_t)E);
        quant_row_to_f32(m->params.weights, (const uint8_t *)m->embed_rows + (size_t)id * rb,
                         (int)E, dst);
        return;
    }
    stored_row_f32(m, m->embed, id, (int)E, dst);   /* checked finite at load */
}

/* ---- tokenizer ------------------------------------------------------------------------------ */

dattn_status dattn_tokenize(const dattn_model *m, const char *text, size_t len, int32_t *ids,
                            int max_ids, int *n_ids)
{
    if (!m || (!text && len) || (!ids && max_ids) || max_ids < 0 || !n_ids)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenize: NULL or negative argument");
    return m->tok.t.encode(&m->tok.t, text, len, ids, max_ids, n_ids);
}

int dattn_token_is_eos(const dattn_model *m, int32_t id)
{
    if (!m)
        return 0;
    for (int i = 0; i < m->info.n_eos; i++)
        if (m->info.eos_ids[i] == id)
            return 1;
    return 0;
}

const dattn_tokenizer *dattn_model_tokenizer(const dattn_model *m)
{
    return m ? &m->tok : NULL;
}

dattn_status dattn_token_bytes(const dattn_model *m, int32_t id, char *buf, size_t cap, size_t *n)
{
    if (!m || (!buf && cap) || !n)
        return dattn_fail(DATTN_E_INVALID_ARG, "token_bytes: NULL argument");
    /* A model's vocabulary may be larger than its tokenizer's (padded to a round size): the ids
     * past the tokenizer's stand for no text, as transformers' decode skips them. */
    if (id >= m->tok.t.vocab_size && id < m->info.vocab_size) {
        *n = 0;
        return DATTN_OK;
    }
    return m->tok.t.token_bytes(&m->tok.t, id, buf, cap, n);
}
