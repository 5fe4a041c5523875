/* NaN and infinity through the public API (DESIGN §7): weights that are NaN or infinite are
 * refused at dattn_layer_create and dattn_model_load naming the tensor; finite weights that
 * overflow (1e30 in q and k: the scores are inf, inf - inf is NaN) make dattn_layer_prefill,
 * dattn_layer_decode and dattn_session_eval report DATTN_E_NONFINITE instead of writing NaN,
 * and the kernels meet those NaNs without undefined behaviour (the ASan/UBSan build runs this
 * suite: UBSan stops it on a NaN converted to int or a negative value shifted). Every CPU
 * instruction set this machine runs is tried. Random data comes from a printed seed;
 * DATTN_TEST_SEED=<n> replays it. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "dattn.h"
#include "model_util.h"
#include "test_util.h"

static const char *const k_isas[] = {"generic", "avx2", "avx512"};
enum { N_ISAS = 3 };
static const char *const k_weight_names[TU_N_WEIGHTS] = {
    "q_proj", "k_proj", "v_proj", "out_proj", "lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2",
    "subln",
};

/* A CPU backend of instruction set isa, or NULL where this machine does not run it. */
static dattn_backend *cpu_backend(const char *isa)
{
    dattn_backend *be = NULL;
    dattn_backend_params p = dattn_backend_default_params();
    p.type = DATTN_BACKEND_CPU;
    p.n_threads = 2;
    p.cpu_isa = isa;
    if (dattn_backend_create(&p, &be) != DATTN_OK)
        return NULL;
    return be;
}

/* The backends to try: the OpenCL device when DATTN_TEST_BACKEND=opencl, else every ISA here. */
static int test_backends(dattn_backend *be[N_ISAS], const char *name[N_ISAS])
{
    int n = 0;
    if (tu_on_opencl()) {
        if (tu_backend(2, NULL, &be[0]) != DATTN_OK)
            return 0;
        name[0] = "opencl";
        return 1;
    }
    for (int i = 0; i < N_ISAS; i++)
        if ((be[n] = cpu_backend(k_isas[i])) != NULL)
            name[n++] = k_isas[i];
    return n;
}

/* ---- non-finite weights ------------------------------------------------------------------------ */

/* One element of weight wi of t set to NaN, +inf or -inf in its dtype. */
static void poke(tu_layer *t, int wi, size_t at, int kind)
{
    static const float f32[3] = {NAN, INFINITY, -INFINITY};
    static const uint16_t f16[3] = {0x7e00, 0x7c00, 0xfc00}, bf16[3] = {0x7fc0, 0x7f80, 0xff80};
    if (t->dtype == DATTN_DTYPE_F32)
        ((float *)t->stored[wi])[at] = f32[kind];
    else if (t->dtype == DATTN_DTYPE_F16)
        ((uint16_t *)t->stored[wi])[at] = f16[kind];
    else
        ((uint16_t *)t->stored[wi])[at] = bf16[kind];
}

static size_t elem_bytes(dattn_dtype t) { return t == DATTN_DTYPE_F32 ? 4 : 2; }

static void test_layer_weights(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    static const char *const kinds[3] = {"NaN", "+inf", "-inf"};
    dattn_backend *be = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    int n_bad = 0;
    for (int dt = DATTN_DTYPE_F32; dt <= DATTN_DTYPE_BF16; dt++) {
        tu_layer t;
        assert_int_equal(tu_layer_init(&t, 4, 2, 8, 1, 10000.0f, (dattn_dtype)dt, 1.5), 0);
        dattn_layer *l = NULL;
        TU_OK(dattn_layer_create(be, &t.shape, &t.w, &l), "the finite layer (%s)",
              tu_dtype_name((dattn_dtype)dt));
        dattn_layer_free(l);
        for (int wi = 0; wi < TU_N_WEIGHTS; wi++)
            for (int kind = 0; kind < 3; kind++) {
                size_t n = tu_weight_elems(&t, wi), at = (size_t)tu_int(0, (int)n - 1);
                size_t eb = elem_bytes(t.dtype);
                uint8_t keep[4];
                memcpy(keep, (uint8_t *)t.stored[wi] + at * eb, eb);
                poke(&t, wi, at, kind);
                l = (dattn_layer *)&l;
                dattn_status st = dattn_layer_create(be, &t.shape, &t.w, &l);
                const char *msg = dattn_last_error();
                if (st != DATTN_E_NONFINITE || l != NULL || !strstr(msg, k_weight_names[wi])) {
                    printf("  FAILS: %s %s at %s[%zu] -> %s: %s (want DATTN_E_NONFINITE naming "
                           "'%s')\n", tu_dtype_name(t.dtype), kinds[kind], k_weight_names[wi], at,
                           dattn_status_name(st), msg, k_weight_names[wi]);
                    if (st == DATTN_OK)
                        dattn_layer_free(l);
                    n_bad++;
                } else if (wi == 0 && kind == 0) {
                    printf("  %s NaN in q_proj -> %s: %s\n", tu_dtype_name(t.dtype),
                           dattn_status_name(st), msg);
                }
                memcpy((uint8_t *)t.stored[wi] + at * eb, keep, eb);
            }
        tu_layer_free(&t);
    }
    dattn_backend_free(be);
    if (n_bad)
        fail_msg("%d of %d layers with a non-finite weight were not refused as they should be "
                 "(seed %llu)", n_bad, 3 * TU_N_WEIGHTS * 3, (unsigned long long)tu_case_seed);
}

/* ---- finite weights that overflow --------------------------------------------------------------- */

static void test_layer_overflow(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_backend *be[N_ISAS];
    const char *name[N_ISAS];
    int n_be = test_backends(be, name);
    assert_true(n_be > 0);
    enum { T = 12 };
    int n_bad = 0, n_runs = 0;
    /* q and k entries up to 1e30: q, k ~ 1e31 are finite, their dot products are not (scores
     * +-inf, NaN after the max is taken); up to 3e38: q and k themselves overflow, so every
     * score of a row is NaN (which no max comparison picks up) */
    static const double magnitude[2] = {1e30, 3e38};
    for (int b = 0; b < n_be; b++)
    for (int mi = 0; mi < 2; mi++) {
        tu_layer t;
        int E = 2 * 4 * 8;
        assert_int_equal(tu_layer_init(&t, 4, 2, 8, 1, 10000.0f, DATTN_DTYPE_F32,
                                       magnitude[mi] * sqrt((double)E)), 0);
        dattn_layer *l = NULL;
        TU_OK(dattn_layer_create(be[b], &t.shape, &t.w, &l), "a layer of finite %g weights "
              "is a valid layer (%s)", magnitude[mi], name[b]);
        float *x = malloc(sizeof(float) * T * E), *y = malloc(sizeof(float) * T * E);
        tu_rand_x(x, NULL, (size_t)T * E);
        for (int kv = DATTN_KV_F32; kv <= DATTN_KV_Q8; kv++)
            for (int pol = 0; pol < 2; pol++) {
                dattn_cache_params p = tu_cache_params(pol ? 8 : 64, 16, (dattn_kv_type)kv,
                                                       (dattn_kv_policy)pol, 2);
                for (int path = 0; path < 2; path++) {
                    dattn_cache *c = NULL;
                    TU_OK(dattn_cache_create(be[b], &t.shape, &p, NULL, 0, &c), "cache");
                    dattn_status st = path ? dattn_layer_decode(l, c, 0, 0, x, y)
                                           : dattn_layer_prefill(l, c, 0, 0, x, T, y);
                    n_runs++;
                    if (st != DATTN_E_NONFINITE) {
                        int n_nan = 0;
                        for (int i = 0; i < (path ? 1 : T) * E; i++)
                            n_nan += !isfinite(y[i]);
                        printf("  FAILS: %g %s %s %s %s -> %s (%d of %d outputs not finite): "
                               "%s\n", magnitude[mi], name[b], tu_kv_name((dattn_kv_type)kv),
                               pol ? "sink+window" : "full",
                               path ? "decode" : "prefill", dattn_status_name(st), n_nan,
                               (path ? 1 : T) * E, st == DATTN_OK ? "" : dattn_last_error());
                        n_bad++;
                    } else if (kv == DATTN_KV_F32 && pol == 0) {
                        printf("  %g %s %s -> %s: %s\n", magnitude[mi], name[b],
                               path ? "decode" : "prefill", dattn_status_name(st),
                               dattn_last_error());
                    }
                    dattn_cache_free(c);
                }
            }
        free(x);
        free(y);
        dattn_layer_free(l);
        tu_layer_free(&t);
    }
    for (int b = 0; b < n_be; b++)
        dattn_backend_free(be[b]);
    if (n_bad)
        fail_msg("%d of %d runs of an overflowing layer did not report DATTN_E_NONFINITE", n_bad,
                 n_runs);
}

/* ---- whole models ----------------------------------------------------------------------------- */

static void tmp_path(char *buf, size_t n, const char *tag)
{
    const char *dir = getenv("TMPDIR");
    snprintf(buf, n, "%s/dattn_nonfinite_%ld_%s", dir && *dir ? dir : "/tmp", (long)getpid(), tag);
}

static int tensor_index(const tm_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->names[i], name))
            return i;
    return -1;
}

/* A NaN or an infinity in any tensor of a model file is refused at load, naming the tensor. */
static void test_model_weights(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_backend *be = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    static const char *const tensors[] = {
        "tok_embeddings.weight", "layers.0.attention_norm.weight", "layers.1.attn.q_proj.weight",
        "layers.0.attn.lambda_k2", "layers.1.attn.subln.weight", "layers.1.feed_forward.w2.weight",
        "norm.weight", "output.weight",
    };
    enum { N_T = sizeof tensors / sizeof *tensors };
    char path[256];
    tmp_path(path, sizeof path, "model");
    int n_bad = 0, n_cases = 0;
    for (int dt = DATTN_DTYPE_F32; dt <= DATTN_DTYPE_BF16; dt++) {
        tm_config c = {32, 2, 2, 1, 260, 48, 0, (dattn_dtype)dt};
        for (int ti = 0; ti < N_T; ti++) {
            tm_file *f = malloc(sizeof *f);
            tm_build(f, &c);
            int i = tensor_index(f, tensors[ti]);
            assert_true(i >= 0);
            size_t n = (size_t)f->t[i].shape[0] * (size_t)(f->t[i].n_dims > 1 ? f->t[i].shape[1] : 1);
            size_t at = (size_t)tu_int(0, (int)n - 1);
            int kind = tu_int(0, 2);
            static const float f32[3] = {NAN, INFINITY, -INFINITY};
            static const uint16_t f16[3] = {0x7e00, 0x7c00, 0xfc00}, bf16[3] = {0x7fc0, 0x7f80, 0xff80};
            uint8_t *d = f->data[i];
            if (dt == DATTN_DTYPE_F32)
                memcpy(d + 4 * at, &f32[kind], 4);
            else
                memcpy(d + 2 * at, dt == DATTN_DTYPE_F16 ? &f16[kind] : &bf16[kind], 2);
            assert_int_equal(tm_write(f, path), 0);
            tm_free(f);
            free(f);
            dattn_model *m = (dattn_model *)&m;
            dattn_status st = dattn_model_load(be, path, &m);
            const char *msg = dattn_last_error();
            n_cases++;
            if (st != DATTN_E_NONFINITE || m != NULL || !strstr(msg, tensors[ti])) {
                printf("  FAILS: %s %s at %s[%zu] -> %s: %s\n", tu_dtype_name((dattn_dtype)dt),
                       kind == 0 ? "NaN" : kind == 1 ? "+inf" : "-inf", tensors[ti], at,
                       dattn_status_name(st), st == DATTN_OK ? "" : msg);
                if (st == DATTN_OK)
                    dattn_model_free(m);
                n_bad++;
            }
        }
    }
    remove(path);
    dattn_backend_free(be);
    if (n_bad)
        fail_msg("%d of %d model files with a non-finite weight were not refused with "
                 "DATTN_E_NONFINITE naming the tensor", n_bad, n_cases);
}

/* A model whose layer 1 overflows (q and k scaled by 1e30, finite in F32) loads, and eval then
 * reports DATTN_E_NONFINITE naming the layer instead of returning NaN logits. */
static void test_model_overflow(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_backend *be = NULL;
    TU_OK(tu_backend(2, NULL, &be), "backend");
    tm_config c = {32, 2, 2, 1, 260, 48, 0, DATTN_DTYPE_F32};
    tm_file *f = malloc(sizeof *f);
    tm_build(f, &c);
    static const char *const scaled[2] = {"layers.1.attn.q_proj.weight", "layers.1.attn.k_proj.weight"};
    for (int s = 0; s < 2; s++) {
        int i = tensor_index(f, scaled[s]);
        assert_true(i >= 0);
        float *w = f->data[i];
        size_t n = (size_t)f->t[i].shape[0] * (size_t)f->t[i].shape[1];
        for (size_t k = 0; k < n; k++)
            w[k] *= 1e30f;
    }
    char path[256];
    tmp_path(path, sizeof path, "overflow");
    assert_int_equal(tm_write(f, path), 0);
    tm_free(f);
    free(f);
    dattn_model *m = NULL;
    TU_OK(dattn_model_load(be, path, &m), "a model of finite weights loads");
    remove(path);
    dattn_cache_params p = tu_cache_params(64, 16, DATTN_KV_F32, DATTN_POLICY_FULL, 0);
    dattn_session *s = NULL;
    TU_OK(dattn_session_create(m, &p, NULL, 0, &s), "session");
    int32_t tok[9];
    for (int i = 0; i < 9; i++)
        tok[i] = tu_int(0, c.vocab - 1);
    float *logits = malloc(sizeof(float) * (size_t)c.vocab * 9);
    int n_bad = 0;
    for (int step = 0; step < 2; step++) {   /* a prefill of 8, then one decode */
        dattn_session_reset(s);
        dattn_status st = step ? dattn_session_eval(s, tok, 1, logits, 0)
                               : dattn_session_eval(s, tok, 8, logits, 1);
        const char *msg = dattn_last_error();
        printf("  %s -> %s: %s\n", step ? "decode" : "prefill", dattn_status_name(st),
               st == DATTN_OK ? "" : msg);
        /* The attention output is the first bad value (its scores overflow); the residual sum
         * after it must not be named instead. */
        if (st != DATTN_E_NONFINITE || !(strstr(msg, "layer 1") || strstr(msg, "layers.1")) ||
            !strstr(msg, "attention output")) {
            int n_nan = 0;
            for (int i = 0; i < c.vocab * (step ? 1 : 8); i++)
                n_nan += !isfinite(logits[i]);
            printf("  FAILS: want DATTN_E_NONFINITE naming layer 1's attention output "
                   "(%d logits not finite)\n", n_nan);
            n_bad++;
        }
    }
    free(logits);
    dattn_session_free(s);
    dattn_model_free(m);
    dattn_backend_free(be);
    if (n_bad)
        fail_msg("eval of an overflowing model did not report DATTN_E_NONFINITE naming the layer "
                 "and its attention output");
}

int main(void)
{
    tu_init_seed("test_nonfinite");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer_weights),
        cmocka_unit_test(test_layer_overflow),
        cmocka_unit_test(test_model_weights),
        cmocka_unit_test(test_model_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
