/* A loaded Differential-Transformer model (DESIGN §1, §6): per layer the attention layer, the two
 * RMSNorm weights and the SwiGLU weights; the embedding stays in the mapped file and is read a row
 * at a time; the logits weight lives on the backend. */
#ifndef DATTN_MODEL_H
#define DATTN_MODEL_H

#include "backend.h"
#include "layer.h"
#include "safetensors.h"
#include "tokenizer.h"

enum { MODEL_MAX_SPECIAL = 8 };   /* bos/eos ids kept from a config */

typedef struct model_block {
    dattn_layer *attn;
    float *attn_norm, *ffn_norm;   /* [E] */
    backend_weight *w13;           /* [2F][E]: w1 then w3 */
    backend_weight *w2;            /* [E][F] */
} model_block;

struct dattn_model {
    dattn_backend *be;
    dattn_model_info info;
    st_file *file;                 /* kept mapped: the embedding rows are read from it */
    const st_tensor *embed;        /* tok_embeddings.weight [vocab][E] */
    tokenizer tok;
    model_block *blocks;           /* [n_layers] */
    float *final_norm;             /* [E] */
    backend_weight *w_logits;      /* output.weight, or the embedding when tied */
    /* Hugging Face models (src/hf_model.c): every shard, kept mapped (file is NULL then), and the
     * config's special tokens for the tokenizer and the end-of-stream check. */
    st_file **shards;              /* [n_shards] */
    int n_shards;
    int n_bos, n_eos;
    int32_t bos_ids[MODEL_MAX_SPECIAL], eos_ids[MODEL_MAX_SPECIAL];
};

/* The attention shape every layer shares (layer_index 0). */
dattn_layer_shape model_attn_shape(const dattn_model *m);
/* Row `id` of the embedding as f32. */
void model_embed_row(const dattn_model *m, int32_t id, float *dst);

#endif
