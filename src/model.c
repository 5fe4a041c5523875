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

static dattn_status check_tensor(const st_file *f, const want *w, const st_tensor **out)
{
    const st_tensor *t;
    dattn_status st = st_expect(f, w->name, w->n_dims, w->shape, &t);
    if (st != DATTN_OK)
        return st;
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return dattn_fail(DATTN_E_FORMAT, "model: tensor '%s' is %s, expected F32, F16 or BF16",
                          w->name, st_dtype_name(t->dtype));
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
static dattn_status check_tensors(const st_file *f, const dattn_model_info *in)
{
    want w[W_PER_LAYER];
    dattn_status st;
    want_set(&w[0], "tok_embeddings.weight", in->vocab_size, in->dim);
    if ((st = check_tensor(f, &w[0], NULL)) != DATTN_OK)
        return st;
    want_set(&w[0], "norm.weight", in->dim, 0);
    if ((st = check_tensor(f, &w[0], NULL)) != DATTN_OK)
        return st;
    if (!in->tie_embeddings) {
        want_set(&w[0], "output.weight", in->vocab_size, in->dim);
        if ((st = check_tensor(f, &w[0], NULL)) != DATTN_OK)
            return dattn_error_prefix("(tie_embeddings is false) "), st;
    } else if (st_find(f, "output.weight")) {
        return dattn_fail(DATTN_E_FORMAT, "model: tie_embeddings is true but the file has an "
                          "output.weight");
    }
    for (int l = 0; l < in->n_layers; l++) {
        layer_wants(in, l, w);
        for (int i = 0; i < W_PER_LAYER; i++)
            if ((st = check_tensor(f, &w[i], NULL)) != DATTN_OK)
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
static uint64_t fingerprint(const st_file *f, const dattn_model_info *in)
{
    uint64_t h = FNV1A_INIT;
    int fields[] = {in->dim, in->n_layers, in->n_heads, in->n_kv_heads, in->vocab_size,
                    in->ffn_dim, in->tie_embeddings};
    h = fnv1a(h, fields, sizeof fields);
    for (int i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_at(f, i);
        h = fnv1a(h, t->name, strlen(t->name));
        h = fnv1a(h, &t->dtype, sizeof t->dtype);
        h = fnv1a(h, t->shape, sizeof(int64_t) * (size_t)t->n_dims);
        const uint8_t *b = t->data;
        h = fnv1a(h, b, t->nbytes < 256 ? t->nbytes : 256);
        for (size_t off = 65536; off + 64 <= t->nbytes; off += 65536)
            h = fnv1a(h, b + off, 64);
    }
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

static dattn_status make_weight(dattn_model *m, const float *w, int rows, int cols,
                                backend_weight **out)
{
    m->info.weight_bytes += (uint64_t)rows * (uint64_t)cols * sizeof(float);
    return m->be->ops->weight_create(m->be, w, rows, cols, out);
}

static float *host_vector(dattn_model *m, const st_file *f, const char *name, int n,
                          dattn_status *st)
{
    float *v = dattn_alloc(sizeof(float) * (size_t)n, name);
    if (!v) {
        *st = DATTN_E_NOMEM;
        return NULL;
    }
    m->info.weight_bytes += sizeof(float) * (size_t)n;
    *st = to_f32(f, name, v);
    return v;
}

static dattn_status load_block(dattn_model *m, int l, float *tmp)
{
    const dattn_model_info *in = &m->info;
    const st_file *f = m->file;
    model_block *b = &m->blocks[l];
    want w[W_PER_LAYER];
    layer_wants(in, l, w);
    int E = in->dim, F = in->ffn_dim, d = E / in->n_heads / 2, kv = E / (in->n_heads / in->n_kv_heads);
    dattn_status st;

    /* The attention layer through the public layer constructor (it takes F32 weights here). */
    float *q = tmp, *k = q + (size_t)E * E, *v = k + (size_t)kv * E, *o = v + (size_t)kv * E;
    float *lam = o + (size_t)E * E, *subln = lam + 4 * (size_t)d;
    if ((st = to_f32(f, w[W_Q].name, q)) != DATTN_OK || (st = to_f32(f, w[W_K].name, k)) != DATTN_OK ||
        (st = to_f32(f, w[W_V].name, v)) != DATTN_OK || (st = to_f32(f, w[W_OUT].name, o)) != DATTN_OK ||
        (st = to_f32(f, w[W_LQ1].name, lam)) != DATTN_OK ||
        (st = to_f32(f, w[W_LK1].name, lam + d)) != DATTN_OK ||
        (st = to_f32(f, w[W_LQ2].name, lam + 2 * d)) != DATTN_OK ||
        (st = to_f32(f, w[W_LK2].name, lam + 3 * d)) != DATTN_OK ||
        (st = to_f32(f, w[W_SUBLN].name, subln)) != DATTN_OK)
        return st;
    dattn_layer_shape shape = model_attn_shape(m);
    shape.layer_index = l;
    dattn_layer_weights lw = {DATTN_DTYPE_F32, q, k, v, o, lam, lam + d, lam + 2 * d, lam + 3 * d,
                              subln};
    if ((st = dattn_layer_create(m->be, &shape, &lw, &b->attn)) != DATTN_OK)
        return dattn_error_prefix("layer %d: ", l), st;
    m->info.weight_bytes += sizeof(float) * ((size_t)2 * E * E + (size_t)2 * kv * E + 2 * (size_t)d);

    /* SwiGLU: w1 and w3 stacked into one weight so one GEMM serves both. */
    if ((st = to_f32(f, w[W_W1].name, tmp)) != DATTN_OK ||
        (st = to_f32(f, w[W_W3].name, tmp + (size_t)F * E)) != DATTN_OK ||
        (st = make_weight(m, tmp, 2 * F, E, &b->w13)) != DATTN_OK ||
        (st = to_f32(f, w[W_W2].name, tmp)) != DATTN_OK ||
        (st = make_weight(m, tmp, E, F, &b->w2)) != DATTN_OK)
        return st;
    b->attn_norm = host_vector(m, f, w[W_ATTN_NORM].name, E, &st);
    if (st != DATTN_OK)
        return st;
    b->ffn_norm = host_vector(m, f, w[W_FFN_NORM].name, E, &st);
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
        dattn_free(b->attn_norm);
        dattn_free(b->ffn_norm);
    }
    dattn_free(m->blocks);
    ops->weight_free(m->be, m->w_logits);
    dattn_free(m->final_norm);
    st_close(m->file);
    for (int s = 0; s < m->n_shards; s++)
        st_close(m->shards[s]);
    dattn_free(m->shards);
    tokenizer_free(&m->tok);
    dattn_free(m);
}

dattn_status dattn_model_load(dattn_backend *be, const char *path, dattn_model **out)
{
    if (!out)
        return dattn_fail(DATTN_E_INVALID_ARG, "model: out is NULL");
    *out = NULL;
    if (!be || !path)
        return dattn_fail(DATTN_E_INVALID_ARG, "model: NULL backend or path");
    if (!be->ops->linear || !be->ops->ffn)
        return dattn_fail(DATTN_E_UNSUPPORTED, "model: the %s backend cannot run a whole model",
                          be->ops->kind);
    dattn_model *m = dattn_alloc(sizeof *m, "model");
    if (!m)
        return DATTN_E_NOMEM;
    m->be = be;
    float *tmp = NULL;
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
    dattn_model_info *in = &m->info;
    if ((st = read_info(m->file, in)) != DATTN_OK)
        goto fail;
    dattn_layer_shape shape = model_attn_shape(m);
    if ((st = layer_check_shape(&shape)) != DATTN_OK) {
        dattn_error_prefix("model: ");
        goto fail;
    }
    if ((st = tokenizer_init(&m->tok, in->tokenizer, in->vocab_size)) != DATTN_OK ||
        (st = check_tensors(m->file, in)) != DATTN_OK)
        goto fail;
    m->embed = st_find(m->file, "tok_embeddings.weight");
    /* The embedding stays in the file and is read a row at a time: check all of it now. */
    size_t bad = convert_f32((dattn_dtype)m->embed->dtype, m->embed->data, m->embed->n_elems, NULL);
    if (bad < m->embed->n_elems) {
        st = dattn_fail(DATTN_E_NONFINITE, "model: tensor 'tok_embeddings.weight' holds a NaN or "
                        "infinite value (element %zu)", bad);
        goto fail;
    }
    in->dtype = m->embed->dtype == ST_F32 ? DATTN_DTYPE_F32
                : m->embed->dtype == ST_F16 ? DATTN_DTYPE_F16 : DATTN_DTYPE_BF16;
    for (int i = 0; i < st_count(m->file); i++)
        in->n_params += st_at(m->file, i)->n_elems;
    in->weight_bytes = m->embed->nbytes;   /* read from the mapped file */
    in->fingerprint = fingerprint(m->file, in);

    /* Scratch for one layer's weights as f32: the larger of attention and FFN, or the logits. */
    size_t E = (size_t)in->dim, F = (size_t)in->ffn_dim, V = (size_t)in->vocab_size;
    size_t attn_f = 2 * E * E + 4 * E * E + 4 * E, ffn_f = 2 * F * E, need = V * E;
    need = need > attn_f ? need : attn_f;
    need = need > ffn_f ? need : ffn_f;
    tmp = dattn_alloc(sizeof(float) * need, "weight conversion");
    m->blocks = dattn_alloc(sizeof *m->blocks * (size_t)in->n_layers, "model layers");
    if (!tmp || !m->blocks) {
        st = DATTN_E_NOMEM;
        goto fail;
    }
    for (int l = 0; l < in->n_layers; l++)
        if ((st = load_block(m, l, tmp)) != DATTN_OK)
            goto fail;
    m->final_norm = host_vector(m, m->file, "norm.weight", in->dim, &st);
    if (st != DATTN_OK)
        goto fail;
    if ((st = to_f32(m->file, in->tie_embeddings ? "tok_embeddings.weight" : "output.weight",
                     tmp)) != DATTN_OK ||
        (st = make_weight(m, tmp, in->vocab_size, in->dim, &m->w_logits)) != DATTN_OK)
        goto fail;
    dattn_free(tmp);
    *out = m;
    return DATTN_OK;
fail:
    dattn_error_prefix("%s: ", path);
    dattn_free(tmp);
    dattn_model_free(m);
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
    return s;
}

void model_embed_row(const dattn_model *m, int32_t id, float *dst)
{
    size_t E = (size_t)m->info.dim;
    const uint8_t *row = (const uint8_t *)m->embed->data + (size_t)id * E * st_dtype_size(m->embed->dtype);
    convert_f32((dattn_dtype)m->embed->dtype, row, E, dst);   /* checked finite at load */
}

/* ---- tokenizer ------------------------------------------------------------------------------ */

dattn_status dattn_tokenize(const dattn_model *m, const char *text, size_t len, int32_t *ids,
                            int max_ids, int *n_ids)
{
    if (!m || (!text && len) || (!ids && max_ids) || max_ids < 0 || !n_ids)
        return dattn_fail(DATTN_E_INVALID_ARG, "tokenize: NULL or negative argument");
    return m->tok.encode(&m->tok, text, len, ids, max_ids, n_ids);
}

dattn_status dattn_token_bytes(const dattn_model *m, int32_t id, char *buf, size_t cap, size_t *n)
{
    if (!m || (!buf && cap) || !n)
        return dattn_fail(DATTN_E_INVALID_ARG, "token_bytes: NULL argument");
    return m->tok.token_bytes(&m->tok, id, buf, cap, n);
}
