/* Loading a Hugging Face diffllama directory (src/hf_model.c, DESIGN §1b) while each host
 * allocation in turn fails (src/alloc.c's alloc_fail_at): every failure must be DATTN_E_NOMEM with a
 * message and a NULL model, nothing may leak (LeakSanitizer in the sanitizer builds), and the
 * walk ends with a load that works. One-file and sharded checkpoints, a tied BF16 one with llama3
 * RoPE scaling and an odd KV head count (the duplicated-head re-layout). */
#define _POSIX_C_SOURCE 200809L   /* mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "alloc.h"
#include "dattn.h"
#include "safetensors.h"

enum { E = 32, HQ = 4, D = 8, F = 40, L = 2, V = 260 };

static char g_dir[2][64];
static dattn_backend *g_be;

static void *fill(size_t n, st_dtype t, unsigned *seed)
{
    size_t es = t == ST_F32 ? 4 : 2;
    uint8_t *p = malloc(n * es);
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1103515245u + 12345u;
        float x = ((float)((*seed >> 8) & 0xffff) / 65536.0f - 0.5f) * 0.5f;
        uint32_t b;
        memcpy(&b, &x, 4);
        if (t == ST_F32)
            memcpy(p + 4 * i, &x, 4);
        else {
            uint16_t h = (uint16_t)(b >> 16);   /* bf16: the top half */
            memcpy(p + 2 * i, &h, 2);
        }
    }
    return p;
}

/* A directory with config.json and either model.safetensors (n_shards 0) or two shards + index. */
static void write_dir(const char *dir, int kv_heads, int tied, st_dtype t, int n_shards,
                      const char *rope)
{
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"model_type\": \"diffllama\", \"hidden_size\": %d, \"intermediate_size\": %d, "
               "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
               "\"vocab_size\": %d, \"rms_norm_eps\": 1e-6, \"tie_word_embeddings\": %s, "
               "\"bos_token_id\": 1, \"eos_token_id\": [2, 3], %s}",
            E, F, L, HQ, kv_heads, V, tied ? "true" : "false", rope);
    fclose(f);
    st_write_tensor ts[64];
    void *bufs[64];
    int n = 0;
    unsigned seed = 7;
    char names[64][64];
    const int64_t KV = (int64_t)kv_heads * D;
#define ADD(nm, a, b)                                                                            \
    do {                                                                                         \
        snprintf(names[n], sizeof names[n], "%s", nm);                                           \
        bufs[n] = fill((size_t)(a) * (size_t)((b) ? (b) : 1), t, &seed);                         \
        ts[n] = (st_write_tensor){names[n], t, (b) ? 2 : 1, {(a), (b)}, bufs[n]};                \
        n++;                                                                                     \
    } while (0)
    ADD("model.embed_tokens.weight", V, E);
    ADD("model.norm.weight", E, 0);
    if (!tied)
        ADD("lm_head.weight", V, E);
    static const char *const lnames[] = {
        "input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
        "self_attn.v_proj.weight", "self_attn.o_proj.weight", "self_attn.lambda_q1",
        "self_attn.lambda_k1", "self_attn.lambda_q2", "self_attn.lambda_k2",
        "post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
        "mlp.down_proj.weight"};
    const int64_t shapes[13][2] = {{E, 0}, {HQ * D, E}, {KV, E}, {KV, E}, {E, HQ * D}, {D, 0},
                                   {D, 0}, {D, 0}, {D, 0}, {E, 0}, {F, E}, {F, E}, {E, F}};
    for (int l = 0; l < L; l++)
        for (int i = 0; i < 13; i++) {
            char nm[64];
            snprintf(nm, sizeof nm, "model.layers.%d.%s", l, lnames[i]);
            ADD(nm, shapes[i][0], shapes[i][1]);
        }
#undef ADD
    if (!n_shards) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        assert_int_equal(st_write(path, ts, n, NULL, 0), DATTN_OK);
    } else {
        int half = n / 2;
        snprintf(path, sizeof path, "%s/a.safetensors", dir);
        assert_int_equal(st_write(path, ts, half, NULL, 0), DATTN_OK);
        snprintf(path, sizeof path, "%s/b.safetensors", dir);
        assert_int_equal(st_write(path, ts + half, n - half, NULL, 0), DATTN_OK);
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "{\"metadata\": {}, \"weight_map\": {");
        for (int i = 0; i < n; i++)
            fprintf(f, "%s\"%s\": \"%s\"", i ? ", " : "", ts[i].name,
                    i < half ? "a.safetensors" : "b.safetensors");
        fprintf(f, "}}");
        fclose(f);
    }
    for (int i = 0; i < n; i++)
        free(bufs[i]);
}

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++) {
        snprintf(g_dir[i], sizeof g_dir[i], "/tmp/dattn-hf-alloc-XXXXXX");
        if (!mkdtemp(g_dir[i]))
            return -1;
    }
    write_dir(g_dir[0], 2, 0, ST_F32, 0, "\"rope_theta\": 10000.0");
    write_dir(g_dir[1], 1, 1, ST_BF16, 2,
              "\"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, "
              "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
              "\"original_max_position_embeddings\": 64}");
    dattn_backend_params p = dattn_backend_default_params();
    p.n_threads = 2;
    return dattn_backend_create(&p, &g_be) == DATTN_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    static const char *const files[] = {"config.json", "model.safetensors", "a.safetensors",
                                        "b.safetensors", "model.safetensors.index.json"};
    for (int i = 0; i < 2; i++) {
        char path[256];
        for (int k = 0; k < 5; k++) {
            snprintf(path, sizeof path, "%s/%s", g_dir[i], files[k]);
            remove(path);
        }
        rmdir(g_dir[i]);
    }
    dattn_backend_free(g_be);
    return 0;
}

static void walk(const char *dir)
{
    long n = 1;
    for (;; n++) {
        dattn_model *m = (dattn_model *)&n;   /* must come back NULL on failure */
        alloc_fail_at(n);
        dattn_status st = dattn_model_load(g_be, dir, &m);
        alloc_fail_at(0);
        if (st == DATTN_OK) {
            dattn_model_info in;
            assert_int_equal(dattn_model_get_info(m, &in), DATTN_OK);
            assert_int_equal(in.dim, E);
            assert_int_equal(in.n_heads, HQ / 2);
            dattn_model_free(m);
            break;
        }
        if (st != DATTN_E_NOMEM || m != NULL || !*dattn_last_error())
            fail_msg("%s: allocation %ld failed: status %s, model %p, message '%s'", dir, n,
                     dattn_status_name(st), (void *)m, dattn_last_error());
    }
    print_message("%s: %ld allocations, each failed once\n", dir, n - 1);
    assert_true(n > 5);
}

static void test_one_file(void **state)
{
    (void)state;
    walk(g_dir[0]);
}

static void test_shards_llama3_mqa(void **state)
{
    (void)state;
    walk(g_dir[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_file),
        cmocka_unit_test(test_shards_llama3_mqa),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
