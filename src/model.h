/* A loaded Differential-Transformer model (DESIGN §1, §6): per layer the attention layer, the two
 * RMSNorm weights and the SwiGLU weights; the embedding stays in the mapped file and is read a row
 * at a time; the logits weight lives on the backend. */
#ifndef DATTN_MODEL_H
#define DATTN_MODEL_H

#include "backend.h"
#include "layer.h"
#include "safetensors.h"
#include "tokenizer.h"

enum { MODEL_MAX_SPECIAL = DATTN_MAX_EOS };   /* bos/eos ids kept from a config */

typedef struct model_block {
    dattn_layer *attn;
    backend_vector *attn_norm, *ffn_norm;   /* [E] */
    backend_weight *w13;           /* [2F][E]: w1 then w3 */
    backend_weight *w2;            /* [E][F] */
} model_block;

struct dattn_model {
    dattn_backend *be;
    dattn_model_info info;
    st_file *file;                 /* kept mapped: the embedding rows are read from it */
    const st_tensor *embed;        /* tok_embeddings.weight [vocab][E] */
    dattn_tokenizer tok;           /* tok.t: the model's tokenizer (dattn_model_tokenizer) */
    dattn_model_params params;     /* how the weights are held (dattn_model_load_params) */
    dattn_dtype packed;            /* a file dattn quantize wrote: its matrices are U8 rows of
                                    * this block format ("dattn.weights"); else F32 (none) */
    void *embed_rows;              /* the embedding converted to params.weights ([vocab] rows),
                                    * or NULL: its rows are read from the mapped file */
    void **held;                   /* [n_held] converted weights the backend computes with in
                                    * place (uses_host_rows), freed with the model */
    int n_held, cap_held;
    model_block *blocks;           /* [n_layers] */
    backend_vector *final_norm;    /* [E] */
    backend_weight *w_logits;      /* output.weight, or the embedding when tied */
    /* Hugging Face models (src/hf_model.c): every shard, kept mapped (file is NULL then), and the
     * config's special tokens for the tokenizer and the end-of-stream check. */
    st_file **shards;              /* [n_shards] */
    int n_shards;
    int n_bos, n_eos;
    int32_t bos_ids[MODEL_MAX_SPECIAL], eos_ids[MODEL_MAX_SPECIAL];
};

/* A projection from tensors of the mapped checkpoint (checked present, 2-D, float), stacked, in
 * the format the model's params ask for: borrowed in place when they are already in it (as
 * stored: when they share a dtype) and aligned to it; otherwise converted into one copy. A
 * backend that computes with host rows in place borrows that copy too (the model keeps it: one
 * copy in memory); for another, or where the backend copies rows of that format into a layout of
 * its own (backend_ops.weight_copies), *copy is it, which the caller frees once the weight is
 * made (dattn_free_aligned; NULL when borrowed). */
dattn_status model_weight_src(dattn_model *m, const st_tensor *const *t, int n,
                              weight_src *out, void **copy);
/* After the backend made a weight of src, borrowed from the tensors t of the mapped file: when
 * it copied the rows into a layout of its own, their pages go back to the kernel (nothing reads
 * them again; a tied embedding's rows, read for lookups, are in_place and never copied). */
void model_release_copied(const dattn_model *m, const weight_src *src, const st_tensor *const *t,
                          int n);
/* Every value of the tensors is finite; else DATTN_E_NONFINITE naming the tensor and element. */
dattn_status model_check_finite(const dattn_model *m, const st_tensor *const *t, int n);
/* The format a stored tensor holds: its dtype (F32, F16, BF16), or the packed block format of a
 * U8 matrix in a file dattn quantize wrote. */
dattn_dtype model_tensor_format(const dattn_model *m, const st_tensor *t);
/* Columns of a stored matrix (of its rows, in weights) and its parameter count. */
int64_t model_tensor_cols(const dattn_model *m, const st_tensor *t);
uint64_t model_tensor_params(const dattn_model *m, const st_tensor *t);
/* A stored matrix [a][b] or vector [a] (b = 0) in a packed file: matrices are U8 [a][row bytes].
 * The shape a loader checks for, and the dtype: sets *packed_u8 when the tensor must be U8. */
void model_stored_shape(const dattn_model *m, int64_t a, int64_t b, int64_t shape[2],
                        int *packed_u8);
/* The same made into a backend weight after a finiteness check naming the tensor; its bytes are
 * added to the model's weight_bytes (not when it borrows the embedding's rows, counted once). */
dattn_status model_make_weight(dattn_model *m, const st_tensor *const *t, int n,
                               int shares_embedding, backend_weight **out);
/* Adds a weight's bytes to the model's weight_bytes (see model_make_weight). */
void model_count_weight(dattn_model *m, const backend_weight *w, int shares_embedding);
/* The embedding's lookup rows and the logits weight (the embedding itself when tied: one copy),
 * both in the model's weight format, and their bytes counted; then, when the weights were
 * converted, the mapped files' pages are handed back to the kernel (nothing reads them now but
 * the tokenizer and the header, which fault back in). The loaders' last step. */
dattn_status model_make_embed_logits(dattn_model *m, const st_tensor *logits, int tied);
/* Adds a tensor's name, dtype, shape and sampled bytes to a model fingerprint (FNV-1a); when
 * the weights are converted (model_converts) its pages are released afterwards. */
uint64_t model_hash_tensor(const dattn_model *m, uint64_t h, const st_tensor *t);
/* 1 when the model's params convert the weights away from the file's dtype (the embedding's):
 * then the file's pages are handed back once read, as nothing computes with them in place. */
int model_converts(const dattn_model *m);
/* When the weights are converted, hands the mapped files' pages back (st_release_pages): after
 * the loader's checks have read them, and once it is done. Nothing when used as stored. */
void model_release_files(const dattn_model *m);
/* A norm weight (1-D float tensor) as a backend vector, counted in weight_bytes as f32; NULL
 * with *st set on failure, including a NaN or inf. */
backend_vector *model_norm_vector(dattn_model *m, const st_tensor *t, dattn_status *st);

/* The attention shape every layer shares (layer_index 0). */
dattn_layer_shape model_attn_shape(const dattn_model *m);
/* Row `id` of the embedding as f32. */
void model_embed_row(const dattn_model *m, int32_t id, float *dst);

#endif
