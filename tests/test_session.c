/* Whole-model sessions (issue 5): loading checks, the forward pass run three ways (one prefill,
 * prefill in small chunks, token-by-token decode) agreeing, context limits, save/load across
 * models (a file whose layers disagree on the position is refused), extra or unknown tensors in a
 * model file, and the sampler against a float64 reference distribution and the exact window of
 * its repetition penalty. The logits themselves are
 * checked against PyTorch by tests/test_model_parity.py. DATTN_TEST_BACKEND=opencl runs the model
 * cases on the OpenCL device. */
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
#include "file_util.h"
#include "model_util.h"
#include "test_util.h"

static dattn_backend *g_be;

static int suite_setup(void **state)
{
    (void)state;
    return tu_backend(2, NULL, &g_be) == DATTN_OK ? 0 : -1;
}

static int suite_teardown(void **state)
{
    (void)state;
    dattn_backend_free(g_be);
    return 0;
}

static void tmp_path(char *buf, size_t n, const char *tag)
{
    const char *dir = getenv("TMPDIR");
    snprintf(buf, n, "%s/dattn_session_%ld_%s", dir && *dir ? dir : "/tmp", (long)getpid(), tag);
}

static const tm_config k_gqa = {32, 2, 2, 1, 260, 48, 0, DATTN_DTYPE_F16};   /* r = 2, d = 8 */

static dattn_model *load(const tm_config *c, const char *tag)
{
    char path[256];
    tmp_path(path, sizeof path, tag);
    assert_int_equal(tm_make(c, path), 0);
    dattn_model *m = NULL;
    TU_OK(dattn_model_load(g_be, path, &m), "load %s", path);
    remove(path);
    return m;
}

static dattn_session *session(dattn_model *m, int n_ctx, int max_batch, dattn_kv_policy policy)
{
    dattn_cache_params p = tu_cache_params(n_ctx, max_batch, DATTN_KV_F32, policy, 4);
    dattn_session *s = NULL;
    TU_OK(dattn_session_create(m, &p, NULL, 0, &s), "session n_ctx %d batch %d", n_ctx, max_batch);
    return s;
}

static void random_tokens(int32_t *t, int n, int vocab)
{
    for (int i = 0; i < n; i++)
        t[i] = tu_int(0, vocab - 1);
}

/* ---- the forward pass three ways ------------------------------------------------------------ */

static void test_prefill_chunks_decode_agree(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    const tm_config cfgs[] = {k_gqa, {48, 1, 3, 3, 256, 40, 1, DATTN_DTYPE_BF16}, {64, 3, 4, 1, 300, 96, 0, DATTN_DTYPE_F32}};
    for (size_t ci = 0; ci < sizeof cfgs / sizeof *cfgs; ci++) {
        const tm_config *c = &cfgs[ci];
        dattn_model *m = load(c, "agree");
        enum { N = 37 };
        int32_t tok[N];
        random_tokens(tok, N, c->vocab);
        size_t V = (size_t)c->vocab;
        float *one = malloc(sizeof(float) * N * V), *chunked = malloc(sizeof(float) * N * V),
              *stepped = malloc(sizeof(float) * N * V);
        dattn_session *a = session(m, 64, 64, DATTN_POLICY_FULL);
        dattn_session *b = session(m, 64, 5, DATTN_POLICY_FULL);
        dattn_session *d = session(m, 64, 8, DATTN_POLICY_FULL);
        TU_OK(dattn_session_eval(a, tok, N, one, 1), "one prefill");
        TU_OK(dattn_session_eval(b, tok, N, chunked, 1), "chunked prefill");
        for (int i = 0; i < N; i++)
            TU_OK(dattn_session_eval(d, tok + i, 1, stepped + (size_t)i * V, 0), "decode %d", i);
        assert_int_equal(dattn_session_n_past(a), N);
        assert_int_equal(dattn_session_n_past(d), N);
        double e1 = tu_rel_err_ff(chunked, one, N * V), e2 = tu_rel_err_ff(stepped, one, N * V);
        double norm = 0.0;
        for (size_t i = 0; i < N * V; i++)
            norm += (double)one[i] * one[i];
        if (e1 > 1e-5 || e2 > 1e-5 || !(norm > 0.0))
            fail_msg("config %zu: chunked %.3g, decode %.3g vs one prefill (seed %llu)", ci, e1, e2,
                     (unsigned long long)tu_case_seed);
        /* last-token logits equal the last row of all_logits */
        float *last = malloc(sizeof(float) * V);
        dattn_session_reset(a);
        TU_OK(dattn_session_eval(a, tok, N, last, 0), "prefill, last logits");
        assert_true(tu_rel_err_ff(last, one + (N - 1) * V, V) < 1e-6);
        free(last);
        dattn_session_free(a);
        dattn_session_free(b);
        dattn_session_free(d);
        free(one);
        free(chunked);
        free(stepped);
        dattn_model_free(m);
    }
}

/* ---- malformed models ----------------------------------------------------------------------- */

typedef struct bad_case {
    const char *what;
    void (*mutate)(tm_file *f);
    const char *expect;        /* in the message */
} bad_case;

static void drop_k(tm_file *f) { tm_drop(f, "layers.1.attn.k_proj.weight"); }
static void swap_w2(tm_file *f)
{
    dattn_tensor *t = tm_find(f, "layers.0.feed_forward.w2.weight");
    int64_t a = t->shape[0];
    t->shape[0] = t->shape[1];
    t->shape[1] = a;
}
static void more_layers(tm_file *f) { tm_set_meta(f, "n_layers", "3"); }
static void fewer_layers(tm_file *f) { tm_set_meta(f, "n_layers", "1"); }
static void bpe(tm_file *f) { tm_set_meta(f, "tokenizer", "bpe"); }
static void vocab(tm_file *f) { tm_set_meta(f, "vocab_size", "259"); }
static void dim_text(tm_file *f) { tm_set_meta(f, "dim", "32x"); }
static void tie_with_output(tm_file *f) { tm_set_meta(f, "tie_embeddings", "true"); }
static void untie_without_output(tm_file *f) { tm_drop(f, "output.weight"); }
static void int_lambda(tm_file *f) { tm_find(f, "layers.0.attn.lambda_q1")->dtype = DATTN_DTYPE_I16; }
static void odd_heads(tm_file *f) { tm_set_meta(f, "n_heads", "3"); }
static void small_vocab(tm_file *f) { tm_set_meta(f, "vocab_size", "100"); }
static void no_dim(tm_file *f) { f->meta[0] = "width"; }
static void bad_tie(tm_file *f) { tm_set_meta(f, "tie_embeddings", "maybe"); }

static void test_bad_models(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    const bad_case cases[] = {
        {"missing tensor", drop_k, "layers.1.attn.k_proj.weight"},
        {"transposed tensor", swap_w2, "layers.0.feed_forward.w2.weight"},
        {"n_layers above the file", more_layers, "layers.2."},
        {"n_layers below the file", fewer_layers, "layers.1."},
        {"unknown tokenizer", bpe, "tokenizer 'bpe'"},
        {"vocab_size disagrees", vocab, "tok_embeddings.weight"},
        {"dim not a number", dim_text, "'dim'"},
        {"tied but output.weight present", tie_with_output, "output.weight"},
        {"untied without output.weight", untie_without_output, "output.weight"},
        {"integer lambda", int_lambda, "layers.0.attn.lambda_q1"},
        {"heads do not divide dim", odd_heads, "n_heads"},
        {"byte tokenizer, vocab < 256", small_vocab, "vocab_size >= 256"},
        {"no dim", no_dim, "'dim'"},
        {"tie_embeddings not a bool", bad_tie, "tie_embeddings"},
    };
    char path[256];
    tmp_path(path, sizeof path, "bad");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tm_file *f = malloc(sizeof *f);
        tm_build(f, &k_gqa);
        cases[i].mutate(f);
        assert_int_equal(tm_write(f, path), 0);
        tm_free(f);
        free(f);
        dattn_model *m = (dattn_model *)&m;
        dattn_status st = dattn_model_load(g_be, path, &m);
        const char *msg = dattn_last_error();
        printf("  %-32s -> %s: %s\n", cases[i].what, dattn_status_name(st), msg);
        if (st == DATTN_OK || m != NULL || !strstr(msg, cases[i].expect) || !strstr(msg, path))
            fail_msg("%s: status %s, message '%s' should name '%s' and the file", cases[i].what,
                     dattn_status_name(st), msg, cases[i].expect);
    }
    /* truncated: every tensor check must not read past the end */
    assert_int_equal(tm_make(&k_gqa, path), 0);
    FILE *fp = fopen(path, "r+b");
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fclose(fp);
    assert_int_equal(truncate(path, len - 100), 0);
    dattn_model *m = NULL;
    assert_int_equal(dattn_model_load(g_be, path, &m), DATTN_E_FORMAT);
    assert_null(m);
    remove(path);
    assert_int_equal(dattn_model_load(g_be, path, &m), DATTN_E_IO);
}

/* Tensors the model does not have: a layer index outside 0..n_layers-1 (also spelled so that
 * strtol would read one inside), a name no layer or top-level tensor has. Each is refused with
 * DATTN_E_FORMAT and a message naming the tensor and the file. */
static void test_unknown_tensors(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    static const struct { const char *name; int64_t a, b; } extra[] = {
        {"layers.-1.attn.q_proj.weight", 32, 32},
        {"layers.-0.attn.q_proj.weight", 32, 32},
        {"layers.+1.attn.q_proj.weight", 32, 32},
        {"layers. 1.attn.q_proj.weight", 32, 32},
        {"layers.01.attn.q_proj.weight", 32, 32},
        {"layers.0x1.attn.q_proj.weight", 32, 32},
        {"layers.0.attn.q_proj.bias", 32, 0},
        {"layers.1.attn.q_proj.weight.extra", 32, 32},
        {"layers.1", 4, 0},
        {"layers.", 4, 0},
        {"foo", 4, 0},
        {"tok_embeddings.bias", 32, 0},
        {"norm.bias", 32, 0},
    };
    char path[256];
    tmp_path(path, sizeof path, "extra");
    int n_bad = 0;
    for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) {
        tm_file *f = malloc(sizeof *f);
        tm_build(f, &k_gqa);
        tm_add(f, extra[i].name, &k_gqa, extra[i].a, extra[i].b, 0.1, 0.0);
        assert_int_equal(tm_write(f, path), 0);
        tm_free(f);
        free(f);
        dattn_model *m = (dattn_model *)&m;
        dattn_status st = dattn_model_load(g_be, path, &m);
        const char *msg = dattn_last_error();
        printf("  extra '%s' -> %s: %s\n", extra[i].name, dattn_status_name(st), msg);
        if (st != DATTN_E_FORMAT || m != NULL || !strstr(msg, extra[i].name) || !strstr(msg, path)) {
            printf("    FAILS: should be DATTN_E_FORMAT naming the tensor and the file\n");
            if (st == DATTN_OK)
                dattn_model_free(m);
            n_bad++;
        }
    }
    remove(path);
    if (n_bad)
        fail_msg("%d of %zu files with a tensor the model does not have were not refused as they "
                 "should be", n_bad, sizeof extra / sizeof *extra);
}

/* ---- context limits and bad tokens ----------------------------------------------------------- */

static void test_context_full(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_model *m = load(&k_gqa, "full");
    enum { CTX = 24 };
    int32_t tok[CTX + 8];
    random_tokens(tok, CTX + 8, k_gqa.vocab);
    size_t V = (size_t)k_gqa.vocab;
    float *got = malloc(sizeof(float) * V), *want = malloc(sizeof(float) * V);
    dattn_session *s = session(m, CTX, 8, DATTN_POLICY_FULL);
    TU_OK(dattn_session_eval(s, tok, 20, NULL, 0), "20 tokens");
    assert_int_equal(dattn_session_eval(s, tok + 20, 8, got, 0), DATTN_E_CACHE_FULL);
    assert_non_null(strstr(dattn_last_error(), "n_ctx = 24"));
    assert_int_equal(dattn_session_n_past(s), 20);
    int32_t bad[2] = {tok[20], (int32_t)V};
    assert_int_equal(dattn_session_eval(s, bad, 2, got, 0), DATTN_E_INVALID_ARG);
    assert_int_equal(dattn_session_n_past(s), 20);
    TU_OK(dattn_session_eval(s, tok + 20, 4, got, 0), "the last 4 fit");
    dattn_session *fresh = session(m, CTX, 8, DATTN_POLICY_FULL);
    TU_OK(dattn_session_eval(fresh, tok, CTX, want, 0), "all 24 at once");
    assert_true(tu_rel_err_ff(got, want, V) < 1e-5);
    /* a sink+window session keeps going where full stops */
    dattn_session *ring = session(m, CTX, 8, DATTN_POLICY_SINK_WINDOW);
    for (int i = 0; i < 4; i++)
        TU_OK(dattn_session_eval(ring, tok, CTX, got, 0), "ring pass %d", i);
    assert_int_equal(dattn_session_n_past(ring), 4 * CTX);
    dattn_session_free(ring);
    dattn_session_free(fresh);
    dattn_session_free(s);
    free(got);
    free(want);
    dattn_model_free(m);
}

/* ---- save and load ----------------------------------------------------------------------------- */

static void test_save_load(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_model *m = load(&k_gqa, "save1");
    dattn_model *other = load(&k_gqa, "save2");   /* same shape, other weights */
    dattn_model_info mi, oi;
    dattn_model_get_info(m, &mi);
    dattn_model_get_info(other, &oi);
    assert_true(mi.fingerprint != oi.fingerprint);
    size_t V = (size_t)k_gqa.vocab;
    int32_t tok[31];
    random_tokens(tok, 31, k_gqa.vocab);
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V),
          *c = malloc(sizeof(float) * V);
    char path[256];
    tmp_path(path, sizeof path, "session.kv");

    dattn_session *s1 = session(m, 64, 16, DATTN_POLICY_FULL);
    dattn_session *s2 = session(m, 64, 16, DATTN_POLICY_FULL);
    dattn_session *s3 = session(other, 64, 16, DATTN_POLICY_FULL);
    TU_OK(dattn_session_eval(s1, tok, 30, NULL, 0), "prefill");
    TU_OK(dattn_session_save(s1, path), "save");
    TU_OK(dattn_session_load(s2, path), "load");
    assert_int_equal(dattn_session_n_past(s2), 30);
    TU_OK(dattn_session_eval(s1, tok + 30, 1, a, 0), "next on the original");
    TU_OK(dattn_session_eval(s2, tok + 30, 1, b, 0), "next on the loaded");
    assert_memory_equal(a, b, sizeof(float) * V);

    /* another model's session refuses the file and keeps what it had */
    TU_OK(dattn_session_eval(s3, tok, 5, NULL, 0), "other model prefill");
    assert_int_equal(dattn_session_load(s3, path), DATTN_E_FORMAT);
    assert_non_null(strstr(dattn_last_error(), "another model"));
    assert_int_equal(dattn_session_n_past(s3), 5);
    TU_OK(dattn_session_eval(s3, tok + 5, 1, c, 0), "other model goes on");
    dattn_session *s4 = session(other, 64, 16, DATTN_POLICY_FULL);
    TU_OK(dattn_session_eval(s4, tok, 6, a, 0), "other model fresh");
    assert_true(tu_rel_err_ff(c, a, V) < 1e-5);

    remove(path);
    dattn_session_free(s1);
    dattn_session_free(s2);
    dattn_session_free(s3);
    dattn_session_free(s4);
    free(a);
    free(b);
    free(c);
    dattn_model_free(m);
    dattn_model_free(other);
}

/* A session file whose layers carry different positions (one slot's n_past edited, checksum
 * recomputed, the page count unchanged so the size still fits) is refused with DATTN_E_FORMAT,
 * and the session keeps what it had: the next eval matches a twin's. */
static void test_load_layers_disagree(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_model *m = load(&k_gqa, "disagree");
    size_t V = (size_t)k_gqa.vocab;
    int32_t tok[40];
    random_tokens(tok, 40, k_gqa.vocab);
    char path[256], bad[256];
    tmp_path(path, sizeof path, "disagree.kv");
    tmp_path(bad, sizeof bad, "disagree_bad.kv");
    dattn_session *src = session(m, 64, 16, DATTN_POLICY_FULL);
    TU_OK(dattn_session_eval(src, tok, 30, NULL, 0), "prefill 30");
    TU_OK(dattn_session_save(src, path), "save");
    dattn_session_free(src);
    size_t n;
    uint8_t *file = fu_read(path, &n);
    assert_non_null(file);
    assert_true(fu_kv_sealed(file, n));
    assert_int_equal(fu_get_u32(file + fu_kv_field_at(FU_KV_N_LAYERS)), k_gqa.n_layers);
    for (int l = 0; l < k_gqa.n_layers; l++)
        assert_int_equal((int64_t)fu_get_u64(file + fu_kv_n_past_at(l)), 30);
    float *a = malloc(sizeof(float) * V), *b = malloc(sizeof(float) * V);
    const struct { int slot; int64_t n_past; } edits[] = {{1, 20}, {0, 20}, {1, 31}, {0, 1}};
    for (size_t e = 0; e < sizeof edits / sizeof *edits; e++) {
        uint8_t *copy = malloc(n);
        memcpy(copy, file, n);
        fu_put_u64(copy + fu_kv_n_past_at(edits[e].slot), (uint64_t)edits[e].n_past);
        fu_kv_reseal(copy, n);
        assert_int_equal(fu_write(bad, copy, n), 0);
        free(copy);
        dattn_session *s = session(m, 64, 16, DATTN_POLICY_FULL);
        dattn_session *twin = session(m, 64, 16, DATTN_POLICY_FULL);
        TU_OK(dattn_session_eval(s, tok + 30, 5, NULL, 0), "target prefill");
        TU_OK(dattn_session_eval(twin, tok + 30, 5, NULL, 0), "twin prefill");
        dattn_status st = dattn_session_load(s, bad);
        printf("  layer %d at %lld, the other at 30 -> %s: %s\n", edits[e].slot,
               (long long)edits[e].n_past, dattn_status_name(st), dattn_last_error());
        TU_CHECK_ST(st, DATTN_E_FORMAT, "session file with layer %d at n_past %lld, the other at "
                    "30", edits[e].slot, (long long)edits[e].n_past);
        assert_int_equal(dattn_session_n_past(s), 5);
        TU_OK(dattn_session_eval(s, tok + 35, 1, a, 0), "target goes on");
        TU_OK(dattn_session_eval(twin, tok + 35, 1, b, 0), "twin goes on");
        if (memcmp(a, b, sizeof(float) * V) != 0)
            fail_msg("the refused load changed the session");
        dattn_session_free(s);
        dattn_session_free(twin);
    }
    /* the control: the file as saved, rewritten and resealed, loads */
    fu_kv_reseal(file, n);
    assert_int_equal(fu_write(bad, file, n), 0);
    dattn_session *s = session(m, 64, 16, DATTN_POLICY_FULL);
    TU_OK(dattn_session_load(s, bad), "load of the unchanged file");
    assert_int_equal(dattn_session_n_past(s), 30);
    dattn_session_free(s);
    remove(path);
    remove(bad);
    free(file);
    free(a);
    free(b);
    dattn_model_free(m);
}

/* ---- tokenizer ----------------------------------------------------------------------------------- */

static void test_byte_tokenizer(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_model *m = load(&k_gqa, "tok");
    const char text[] = "h\xc3\xa9llo\n\x01\xff";
    int32_t ids[16];
    int n = 0;
    TU_OK(dattn_tokenize(m, text, sizeof text - 1, ids, 16, &n), "tokenize");
    assert_int_equal(n, (int)sizeof text - 1);
    for (int i = 0; i < n; i++) {
        assert_int_equal(ids[i], (unsigned char)text[i]);
        char c;
        size_t len;
        TU_OK(dattn_token_bytes(m, ids[i], &c, 1, &len), "bytes of %d", ids[i]);
        assert_int_equal(len, 1);
        assert_int_equal((unsigned char)c, (unsigned char)text[i]);
    }
    size_t len = 9;
    TU_OK(dattn_token_bytes(m, 259, NULL, 0, &len), "a special id has no text");
    assert_int_equal(len, 0);
    assert_int_equal(dattn_token_bytes(m, 260, NULL, 0, &len), DATTN_E_INVALID_ARG);
    assert_int_equal(dattn_tokenize(m, text, sizeof text - 1, ids, 4, &n), DATTN_E_INVALID_ARG);
    assert_int_equal(n, (int)sizeof text - 1);
    dattn_model_free(m);
}

/* ---- sampling -------------------------------------------------------------------------------------- */

static int argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

static const float *g_sort_v;
static int by_logit_desc(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (g_sort_v[i] != g_sort_v[j])
        return g_sort_v[i] > g_sort_v[j] ? -1 : 1;
    return i - j;
}

/* The distribution temperature + top-k + top-p should give, computed from the definitions. */
static void reference_probs(const float *v, int n, double t, int k, double p, double *prob)
{
    int idx[64];
    for (int i = 0; i < n; i++)
        idx[i] = i;
    g_sort_v = v;
    qsort(idx, (size_t)n, sizeof *idx, by_logit_desc);
    int keep = k > 0 && k < n ? k : n;
    double z = 0.0, w[64];
    for (int i = 0; i < keep; i++)
        z += w[i] = exp(((double)v[idx[i]] - v[idx[0]]) / t);
    double cum = 0.0;
    int cut = keep;
    for (int i = 0; i < keep; i++) {
        cum += w[i] / z;
        if (cum >= p) {
            cut = i + 1;
            break;
        }
    }
    double z2 = 0.0;
    for (int i = 0; i < cut; i++)
        z2 += w[i];
    for (int i = 0; i < n; i++)
        prob[i] = 0.0;
    for (int i = 0; i < cut; i++)
        prob[idx[i]] = w[i] / z2;
}

static void test_sampler(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    enum { V = 12 };
    float v[V];
    dattn_sampler_params p = dattn_sampler_default_params();
    dattn_sampler *s = NULL;

    /* greedy and top-k 1 are the argmax, with no penalty */
    p.temperature = 0.0f;
    p.repeat_penalty = 1.0f;
    TU_OK(dattn_sampler_create(&p, V, &s), "create");
    for (int trial = 0; trial < 200; trial++) {
        for (int i = 0; i < V; i++)
            v[i] = (float)(3.0 * tu_gauss());
        int32_t t;
        TU_OK(dattn_sample(s, v, &t), "greedy");
        assert_int_equal(t, argmax(v, V));
    }
    p.temperature = 1.5f;
    p.top_k = 1;
    TU_OK(dattn_sampler_set_params(s, &p), "top-k 1");
    for (int trial = 0; trial < 50; trial++) {
        for (int i = 0; i < V; i++)
            v[i] = (float)(3.0 * tu_gauss());
        int32_t t;
        TU_OK(dattn_sample(s, v, &t), "top-k 1");
        assert_int_equal(t, argmax(v, V));
    }

    /* frequencies against the float64 reference distribution, several settings */
    const struct { float t; int k; float p; } settings[] = {
        {1.0f, 0, 1.0f}, {0.7f, 6, 1.0f}, {0.7f, 0, 0.8f}, {1.3f, 8, 0.9f}, {0.5f, 3, 0.5f}};
    for (size_t si = 0; si < sizeof settings / sizeof *settings; si++) {
        for (int i = 0; i < V; i++)
            v[i] = (float)(1.5 * tu_gauss());
        p.temperature = settings[si].t;
        p.top_k = settings[si].k;
        p.top_p = settings[si].p;
        p.seed = tu_next();
        TU_OK(dattn_sampler_set_params(s, &p), "set");
        double prob[V];
        reference_probs(v, V, p.temperature, p.top_k, p.top_p, prob);
        enum { DRAWS = 60000 };
        long count[V] = {0};
        for (int d = 0; d < DRAWS; d++) {
            int32_t t;
            TU_OK(dattn_sample(s, v, &t), "draw");
            count[t]++;
        }
        for (int i = 0; i < V; i++) {
            double mean = prob[i] * DRAWS, sd = sqrt(DRAWS * prob[i] * (1.0 - prob[i]));
            if (prob[i] == 0.0 ? count[i] != 0 : fabs((double)count[i] - mean) > 5.0 * sd + 1.0)
                fail_msg("setting %zu token %d: drawn %ld times, expected %.1f +- %.1f (seed %llu)",
                         si, i, count[i], mean, sd, (unsigned long long)tu_case_seed);
        }
    }

    /* the same seed replays; the penalty pushes a seen token down */
    p = dattn_sampler_default_params();
    p.seed = 42;
    int32_t first[32], again[32];
    for (int i = 0; i < V; i++)
        v[i] = (float)tu_gauss();
    TU_OK(dattn_sampler_set_params(s, &p), "seeded");
    dattn_sampler_reset(s);
    for (int i = 0; i < 32; i++)
        dattn_sample(s, v, &first[i]);
    dattn_sampler_reset(s);
    for (int i = 0; i < 32; i++)
        dattn_sample(s, v, &again[i]);
    assert_memory_equal(first, again, sizeof first);

    p.temperature = 0.0f;
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 4;
    TU_OK(dattn_sampler_set_params(s, &p), "penalty");
    dattn_sampler_reset(s);
    for (int i = 0; i < V; i++)
        v[i] = -1.0f - 0.01f * (float)i;
    v[3] = 2.0f;
    v[5] = 1.5f;    /* 2.0 / 2 = 1.0 < 1.5 */
    v[7] = -0.4f;   /* a negative logit is multiplied: -0.8 */
    dattn_sampler_accept(s, 3);
    int32_t t;
    dattn_sample(s, v, &t);
    assert_int_equal(t, 5);
    /* Now 3, 5 (sampled, so recorded) and 7 are recent. Unpenalized, 7 would win at -0.4;
     * multiplied it is -0.8, below token 0 at -0.6. */
    dattn_sampler_accept(s, 7);
    v[5] = -0.5f;   /* penalized: -1.0 */
    v[3] = -0.9f;   /* penalized: -1.8 */
    v[0] = -0.6f;
    dattn_sample(s, v, &t);
    assert_int_equal(t, 0);
    for (int i = 0; i < 8; i++)   /* push 3, 5, 7 out of the window of 4 */
        dattn_sampler_accept(s, 11);
    dattn_sample(s, v, &t);
    assert_int_equal(t, 7);

    p.top_p = 1.5f;
    assert_int_equal(dattn_sampler_set_params(s, &p), DATTN_E_INVALID_ARG);
    p.top_p = 1.0f;
    p.temperature = -1.0f;
    assert_int_equal(dattn_sampler_set_params(s, &p), DATTN_E_INVALID_ARG);
    v[2] = NAN;
    assert_int_equal(dattn_sample(s, v, &t), DATTN_E_INVALID_ARG);
    dattn_sampler_free(s);
}

/* The repetition penalty's window is exactly the last repeat_last_n tokens: a token last seen
 * repeat_last_n tokens ago is penalized, one seen repeat_last_n + 1 ago is not. Each probe
 * replays a random history (with repeats) into a reset sampler and makes one candidate the
 * favourite by a margin the penalty undoes; the greedy pick is compared with an independent
 * reference (penalty applied once to each distinct token of the last N, then the argmax, lowest
 * id on a tie). */
static void test_repeat_window(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    enum { V = 96, HIST = 80 };
    static const int windows[] = {1, 2, 3, 5, 8, 17, 64, 79, 80, 81, 0};
    dattn_sampler_params p = dattn_sampler_default_params();
    p.temperature = 0.0f;
    dattn_sampler *s = NULL;
    TU_OK(dattn_sampler_create(&p, V, &s), "create");
    int32_t hist[HIST];
    for (int i = 0; i < HIST; i++)   /* repeats: draws from half the vocabulary */
        hist[i] = tu_int(0, V / 2 - 1);
    for (size_t wi = 0; wi < sizeof windows / sizeof *windows; wi++) {
        int N = windows[wi];
        for (int sign = 0; sign < 2; sign++) {
            p.repeat_last_n = N;
            p.repeat_penalty = (float)(1.5 + tu_unif());
            TU_OK(dattn_sampler_set_params(s, &p), "repeat_last_n %d", N);
            /* every token of the history (at each distance), and one never seen */
            for (int probe = 0; probe <= HIST; probe++) {
                int32_t cand = probe < HIST ? hist[HIST - 1 - probe] : V - 1;
                float v[V];
                for (int i = 0; i < V; i++)   /* distinct, all one sign */
                    v[i] = sign ? -1.0f - 0.001f * (float)i : 1.0f + 0.001f * (float)(V - i);
                /* the favourite by 10%: penalized (>= 1.5x) it falls below the rest */
                v[cand] = sign ? 0.9f * (-1.0f) : 1.1f * (1.0f + 0.001f * V);
                /* reference */
                double ref[V];
                int pen[V] = {0};
                for (int i = 0; i < N && i < HIST; i++)
                    pen[hist[HIST - 1 - i]] = 1;
                for (int i = 0; i < V; i++) {
                    ref[i] = v[i];
                    if (pen[i])
                        ref[i] = ref[i] > 0 ? ref[i] / p.repeat_penalty : ref[i] * p.repeat_penalty;
                }
                int want = 0;
                for (int i = 1; i < V; i++)
                    if (ref[i] > ref[want])
                        want = i;
                dattn_sampler_reset(s);
                for (int i = 0; i < HIST; i++)
                    dattn_sampler_accept(s, hist[i]);
                int32_t got = -1;
                TU_OK(dattn_sample(s, v, &got), "sample");
                if (got != want) {
                    int last_seen = -1;
                    for (int i = 0; i < HIST; i++)
                        if (hist[HIST - 1 - i] == cand) {
                            last_seen = i + 1;
                            break;
                        }
                    fail_msg("repeat_last_n %d, %s logits: candidate %d last seen %d tokens ago "
                             "(penalized: %s): sampled %d, reference %d (seed %llu)", N,
                             sign ? "negative" : "positive", cand, last_seen,
                             pen[cand] ? "yes" : "no", got, want,
                             (unsigned long long)tu_case_seed);
                }
            }
        }
    }
    dattn_sampler_free(s);
}

int main(void)
{
    tu_init_seed("test_session");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefill_chunks_decode_agree),
        cmocka_unit_test(test_bad_models),
        cmocka_unit_test(test_unknown_tensors),
        cmocka_unit_test(test_context_full),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_load_layers_disagree),
        cmocka_unit_test(test_byte_tokenizer),
        cmocka_unit_test(test_sampler),
        cmocka_unit_test(test_repeat_window),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
