/* Random Differential-Transformer checkpoints for the session tests: every tensor DESIGN §6
 * names, drawn from the seeded RNG of test_util.h (never zeros) and written with the library's
 * safetensors writer in F32, F16 or BF16. A `mutate` hook lets a test break one thing (a shape,
 * a name, a metadata value) to check the loader's message. Header-only. */
#ifndef DATTN_TESTS_MODEL_UTIL_H
#define DATTN_TESTS_MODEL_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dattn.h"
#include "test_util.h"

typedef struct tm_config {
    int dim, n_layers, n_heads, n_kv_heads, vocab, ffn, tie;
    dattn_dtype dtype;
} tm_config;

enum { TM_MAX_TENSORS = 256, TM_MAX_META = 16 };

typedef struct tm_file {
    dattn_tensor t[TM_MAX_TENSORS];
    char names[TM_MAX_TENSORS][64];
    void *data[TM_MAX_TENSORS];
    int n;
    const char *meta[2 * TM_MAX_META];
    char meta_vals[TM_MAX_META][32];
    int n_meta;
} tm_file;

static inline void tm_add(tm_file *f, const char *name, const tm_config *c, int64_t a, int64_t b,
                          double scale, double offset)
{
    int i = f->n++;
    snprintf(f->names[i], sizeof f->names[i], "%s", name);
    dattn_tensor *t = &f->t[i];
    t->name = f->names[i];
    t->dtype = c->dtype;
    t->n_dims = b ? 2 : 1;
    t->shape[0] = a;
    t->shape[1] = b;
    size_t n = (size_t)a * (size_t)(b ? b : 1);
    size_t es = c->dtype == DATTN_DTYPE_F32 ? 4 : 2;
    uint8_t *d = malloc(n * es);
    for (size_t k = 0; k < n; k++) {
        float v = (float)(offset + scale * tu_gauss());
        if (c->dtype == DATTN_DTYPE_F32) {
            memcpy(d + 4 * k, &v, 4);
        } else {
            uint16_t h = c->dtype == DATTN_DTYPE_F16 ? tu_double_to_f16(v) : tu_float_to_bf16(v);
            memcpy(d + 2 * k, &h, 2);
        }
    }
    f->data[i] = d;
    t->data = d;
}

static inline void tm_meta(tm_file *f, const char *key, long v)
{
    int i = f->n_meta++;
    snprintf(f->meta_vals[i], sizeof f->meta_vals[i], "%ld", v);
    f->meta[2 * i] = key;
    f->meta[2 * i + 1] = f->meta_vals[i];
}

static inline void tm_meta_str(tm_file *f, const char *key, const char *value)
{
    int i = f->n_meta++;
    f->meta[2 * i] = key;
    f->meta[2 * i + 1] = value;
}

/* All tensors and metadata of a model of config c, in memory. */
static inline void tm_build(tm_file *f, const tm_config *c)
{
    memset(f, 0, sizeof *f);
    int E = c->dim, r = c->n_heads / c->n_kv_heads, d = E / c->n_heads / 2;
    double ws = 1.0 / sqrt((double)E);
    tm_meta(f, "dim", E);
    tm_meta(f, "n_layers", c->n_layers);
    tm_meta(f, "n_heads", c->n_heads);
    tm_meta(f, "n_kv_heads", c->n_kv_heads);
    tm_meta(f, "vocab_size", c->vocab);
    tm_meta(f, "ffn_dim", c->ffn);
    tm_meta(f, "max_seq_len", 4096);
    tm_meta_str(f, "tie_embeddings", c->tie ? "true" : "false");
    tm_meta_str(f, "norm_eps", "1e-5");
    tm_meta_str(f, "tokenizer", "bytes");
    tm_add(f, "tok_embeddings.weight", c, c->vocab, E, 1.0, 0.0);
    for (int l = 0; l < c->n_layers; l++) {
        char name[64];
#define TM_LAYER(suffix, a, b, scale, off)                                                         \
    snprintf(name, sizeof name, "layers.%d.%s", l, suffix);                                        \
    tm_add(f, name, c, a, b, scale, off)
        TM_LAYER("attention_norm.weight", E, 0, 0.1, 1.0);
        TM_LAYER("attn.q_proj.weight", E, E, ws, 0.0);
        TM_LAYER("attn.k_proj.weight", E / r, E, ws, 0.0);
        TM_LAYER("attn.v_proj.weight", E / r, E, ws, 0.0);
        TM_LAYER("attn.out_proj.weight", E, E, ws, 0.0);
        TM_LAYER("attn.lambda_q1", d, 0, 0.1, 0.0);
        TM_LAYER("attn.lambda_k1", d, 0, 0.1, 0.0);
        TM_LAYER("attn.lambda_q2", d, 0, 0.1, 0.0);
        TM_LAYER("attn.lambda_k2", d, 0, 0.1, 0.0);
        TM_LAYER("attn.subln.weight", 2 * d, 0, 0.1, 1.0);
        TM_LAYER("ffn_norm.weight", E, 0, 0.1, 1.0);
        TM_LAYER("feed_forward.w1.weight", c->ffn, E, ws, 0.0);
        TM_LAYER("feed_forward.w2.weight", E, c->ffn, 1.0 / sqrt((double)c->ffn), 0.0);
        TM_LAYER("feed_forward.w3.weight", c->ffn, E, ws, 0.0);
#undef TM_LAYER
    }
    tm_add(f, "norm.weight", c, E, 0, 0.1, 1.0);
    if (!c->tie)
        tm_add(f, "output.weight", c, c->vocab, E, ws, 0.0);
}

static inline dattn_tensor *tm_find(tm_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name))
            return &f->t[i];
    return NULL;
}

static inline void tm_set_meta(tm_file *f, const char *key, const char *value)
{
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta[2 * i], key))
            f->meta[2 * i + 1] = value;
}

static inline void tm_drop(tm_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name)) {
            free(f->data[i]);
            for (int k = i; k + 1 < f->n; k++) {
                f->t[k] = f->t[k + 1];
                memcpy(f->names[k], f->names[k + 1], sizeof f->names[k]);
                f->t[k].name = f->names[k];
                f->data[k] = f->data[k + 1];
            }
            f->n--;
            return;
        }
}

static inline int tm_write(const tm_file *f, const char *path)
{
    return dattn_tensor_file_write(path, f->t, f->n, f->meta, f->n_meta) == DATTN_OK ? 0 : -1;
}

static inline void tm_free(tm_file *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->data[i]);
    f->n = 0;
}

/* Writes a random model of config c to path; 0 on success. */
static inline int tm_make(const tm_config *c, const char *path)
{
    tm_file *f = malloc(sizeof *f);
    tm_build(f, c);
    int rc = tm_write(f, path);
    tm_free(f);
    free(f);
    return rc;
}

#endif
