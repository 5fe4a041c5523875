/* libFuzzer harness for loading a Hugging Face diffllama directory (DESIGN §1b): config.json,
 * model.safetensors.index.json and generation_config.json. Two small valid directories are made
 * once (one model.safetensors; the same split into two shards with an index); each input
 * replaces one of their JSON files (the first byte picks which) and the directory is loaded on
 * the CPU backend, which must refuse with a status and a message or load and run one token;
 * ASan/UBSan and LeakSanitizer watch. Build with meson -Dfuzz=true (CC=clang), run e.g.
 *   build-fuzz/tools/fuzz_hf_model -max_total_time=600 -max_len=4096 corpus/ */
#define _POSIX_C_SOURCE 200809L   /* mkdtemp */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dattn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { E = 8, HEADS = 2, D = 4, FFN = 12, VOCAB = 16 };

static char one_dir[64], shard_dir[64];
static dattn_backend *be;

static const char config_text[] =
    "{\"model_type\": \"diffllama\", \"hidden_size\": 8, \"intermediate_size\": 12, "
    "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 2, "
    "\"head_dim\": 4, \"vocab_size\": 16, \"rms_norm_eps\": 1e-5, \"tie_word_embeddings\": true, "
    "\"rope_theta\": 10000.0, \"bos_token_id\": 1, \"eos_token_id\": [2, 3]}";

static int write_text(const char *dir, const char *name, const void *text, size_t len)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(text, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* The tensors of the tiny model (values 0.01 * small integers), split at `cut` into two files
 * when shards is 1. */
static int write_model(const char *dir, int shards)
{
    static float buf[4096];
    static char names[16][64];
    dattn_tensor t[16];
    int n = 0;
    size_t used = 0;
#define ADD(nm, a, b)                                                                          \
    do {                                                                                       \
        snprintf(names[n], sizeof names[n], "%s", nm);                                         \
        t[n] = (dattn_tensor){names[n], DATTN_DTYPE_F32, (b) ? 2 : 1, {a, b}, buf + used};    \
        for (int i = 0; i < (a) * ((b) ? (b) : 1); i++)                                        \
            buf[used + i] = 0.01f * (float)((i * 7 + n) % 13 - 6);                             \
        used += (size_t)(a) * ((b) ? (b) : 1);                                                 \
        n++;                                                                                   \
    } while (0)
    ADD("model.embed_tokens.weight", VOCAB, E);
    ADD("model.norm.weight", E, 0);
    ADD("model.layers.0.input_layernorm.weight", E, 0);
    ADD("model.layers.0.self_attn.q_proj.weight", HEADS * D, E);
    ADD("model.layers.0.self_attn.k_proj.weight", HEADS * D, E);
    ADD("model.layers.0.self_attn.v_proj.weight", HEADS * D, E);
    ADD("model.layers.0.self_attn.o_proj.weight", E, HEADS * D);
    ADD("model.layers.0.self_attn.lambda_q1", D, 0);
    ADD("model.layers.0.self_attn.lambda_k1", D, 0);
    ADD("model.layers.0.self_attn.lambda_q2", D, 0);
    ADD("model.layers.0.self_attn.lambda_k2", D, 0);
    ADD("model.layers.0.post_attention_layernorm.weight", E, 0);
    ADD("model.layers.0.mlp.gate_proj.weight", FFN, E);
    ADD("model.layers.0.mlp.up_proj.weight", FFN, E);
    ADD("model.layers.0.mlp.down_proj.weight", E, FFN);
#undef ADD
    char path[160];
    if (!shards) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        return dattn_tensor_file_write(path, t, n, NULL, 0) == DATTN_OK ? 0 : -1;
    }
    int cut = 7;
    snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
    if (dattn_tensor_file_write(path, t, cut, NULL, 0) != DATTN_OK)
        return -1;
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    if (dattn_tensor_file_write(path, t + cut, n - cut, NULL, 0) != DATTN_OK)
        return -1;
    char index[4096];
    size_t len = (size_t)snprintf(index, sizeof index, "{\"weight_map\": {");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(index + len, sizeof index - len, "%s\"%s\": \"model-0000%d-of-00002."
                                "safetensors\"", i ? ", " : "", names[i], i < cut ? 1 : 2);
    len += (size_t)snprintf(index + len, sizeof index - len, "}}");
    return write_text(dir, "model.safetensors.index.json", index, len);
}

static void setup(void)
{
    snprintf(one_dir, sizeof one_dir, "/tmp/dattn-fuzz-hf-XXXXXX");
    snprintf(shard_dir, sizeof shard_dir, "/tmp/dattn-fuzz-hf-XXXXXX");
    dattn_backend_params p = dattn_backend_default_params();
    p.type = DATTN_BACKEND_CPU;
    p.n_threads = 1;
    if (!mkdtemp(one_dir) || !mkdtemp(shard_dir) || write_model(one_dir, 0) ||
        write_model(shard_dir, 1) || dattn_backend_create(&p, &be) != DATTN_OK) {
        fprintf(stderr, "fuzz_hf_model: cannot set up the model directories\n");
        abort();
    }
    fprintf(stderr, "fuzz_hf_model: directories %s and %s\n", one_dir, shard_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!be)
        setup();
    if (size < 1)
        return 0;
    int which = data[0] % 3;
    const char *dir = which == 1 ? shard_dir : one_dir;
    static const char *const files[3] = {"config.json", "model.safetensors.index.json",
                                         "generation_config.json"};
    /* Put back what the previous input changed, then change this input's file. */
    write_text(one_dir, "config.json", config_text, strlen(config_text));
    write_text(shard_dir, "config.json", config_text, strlen(config_text));
    write_text(one_dir, "generation_config.json", "{}", 2);
    write_model(shard_dir, 1);
    if (write_text(dir, files[which], data + 1, size - 1))
        abort();
    dattn_model *m = NULL;
    dattn_status st = dattn_model_load(be, dir, &m);
    if (st != DATTN_OK) {
        if (m || !dattn_last_error()[0])
            abort();   /* a refusal leaves nothing and says why */
        return 0;
    }
    dattn_cache_params cp = dattn_cache_default_params();
    cp.n_ctx = 8;
    cp.max_batch = 4;
    dattn_session *s = NULL;
    float logits[VOCAB];
    int32_t tok = 1;
    if (dattn_session_create(m, &cp, NULL, 0, &s) == DATTN_OK) {
        dattn_session_eval(s, &tok, 1, logits, 0);
        dattn_session_free(s);
    }
    dattn_model_free(m);
    return 0;
}
