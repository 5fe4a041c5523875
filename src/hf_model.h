/* Hugging Face `diffllama` checkpoints (DESIGN §1b): a directory with config.json and
 * model.safetensors, or the shards of model.safetensors.index.json. */
#ifndef DATTN_HF_MODEL_H
#define DATTN_HF_MODEL_H

#include "model.h"

/* 1 if path names a Hugging Face model: a directory, or a file whose name is config.json. */
int hf_is_model_path(const char *path);
/* Fills m (m->be set, the rest zero) from the directory of path: config.json checked field by
 * field, every tensor of every shard checked (name, shape, dtype, shard) before any is used, then
 * re-laid out into dattn's layers. On failure m holds what was made so far (dattn_model_free). */
dattn_status hf_model_load(dattn_model *m, const char *path);
/* 1 if f is a file `dattn quantize` made of a Hugging Face directory (its metadata carries
 * config.json and the tokenizer files as "dattn.config.json", ...). */
int hf_is_packed(const st_file *f);
/* The same model from such a file, m->file (which becomes its one shard). */
dattn_status hf_model_load_packed(dattn_model *m);

/* A Hugging Face directory's files, for `dattn quantize`: every shard opened (the index checked
 * as the loader checks it) and its JSON files read whole. */
enum { HF_N_TEXTS = 4 };
extern const char *const hf_text_names[HF_N_TEXTS];   /* config.json, generation_config.json,
                                                        * tokenizer.json, tokenizer_config.json */
typedef struct hf_files {
    st_file **shards;
    int n_shards;
    char *text[HF_N_TEXTS];    /* NULL when the directory has no such file */
} hf_files;

dattn_status hf_files_open(const char *path, hf_files *out);
void hf_files_close(hf_files *f);

#endif
