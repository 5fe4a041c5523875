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

#endif
