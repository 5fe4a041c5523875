/* The OpenCL backend's ops table beyond the layer: `linear` and `ffn` (the model's other
 * blocks) against a float64 host reference on random data; a KV cache split over several device
 * buffers (max_buffer_bytes forces a small one-buffer cap) against the one-buffer run and the
 * CPU backend; and the messages of a cache or tuning that cannot fit the device. Goes through the
 * backend's ops table as src/model.c does, on the first OpenCL device (PoCL in CI). Random
 * inputs; the seed is printed and DATTN_TEST_SEED replays it. Skips (77) without a device. */
#define _DEFAULT_SOURCE
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend.h"
#include "kv.h"
#include "quant.h"
#include "test_util.h"
#include "tuning.h"

/* The overrides the next opencl_backend() passes in its params. */
static const char *g_tuning;
static uint64_t g_max_buffer;

static dattn_backend *opencl_backend(void)
{
    dattn_backend_params p = dattn_backend_default_params();
    p.type = DATTN_BACKEND_OPENCL;
    p.tuning = g_tuning;
    p.max_buffer_bytes = g_max_buffer;
    dattn_backend *be = NULL;
    TU_OK(dattn_backend_create(&p, &be), "opencl backend");
    return be;
}

/* A cache as a model session makes it: geometry, then the model's widths, then the backend. */
static dattn_cache *session_cache(dattn_backend *be, const dattn_layer_shape *s, int max_batch,
                                  int ffn_dim, int n_vocab)
{
    dattn_cache *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->params = tu_cache_params(64, max_batch, DATTN_KV_F32, DATTN_POLICY_FULL, 0);
    TU_OK(kv_geom_init(&c->g, s, &c->params), "kv_geom_init");
    c->scratch.ffn_dim = ffn_dim;
    c->scratch.n_vocab = n_vocab;
    c->backend = be;
    c->shape = *s;
    c->arena_bytes = be->ops->cache_bytes(be, s, &c->g, &c->scratch);
    TU_OK(be->ops->cache_init(be, c, NULL, c->arena_bytes), "cache_init");
    return c;
}

static void session_cache_free(dattn_cache *c)
{
    c->backend->ops->cache_release(c->backend, c);
    free(c);
}

/* The formats the backend holds weights in; the block ones need k % 32 == 0. */
static const dattn_dtype formats[] = {DATTN_DTYPE_F32, DATTN_DTYPE_F16, DATTN_DTYPE_BF16,
                                      DATTN_DTYPE_Q8_0, DATTN_DTYPE_Q4_0};
#define N_FORMATS (sizeof formats / sizeof *formats)

/* A random [m][k] weight, uniform in +-1/sqrt(k), held in format dt, with its f64 copy (the
 * dequantized values: what the device must compute with). */
static backend_weight *rand_weight_as(dattn_backend *be, dattn_dtype dt, int m, int k,
                                      double **ref)
{
    size_t n = (size_t)m * k, rb = quant_row_bytes(dt, k);
    float *w = malloc(sizeof(float) * n);
    unsigned char *held = malloc(rb * (size_t)m);
    *ref = malloc(sizeof(double) * n);
    assert_true(w && held && *ref);
    double bound = 1.0 / sqrt((double)k);
    for (size_t i = 0; i < n; i++)
        w[i] = (float)((2.0 * tu_unif() - 1.0) * bound);
    for (int r = 0; r < m; r++) {
        quant_row_from_f32(dt, w + (size_t)r * k, k, held + rb * (size_t)r);
        quant_row_to_f32(dt, held + rb * (size_t)r, k, w + (size_t)r * k);
    }
    for (size_t i = 0; i < n; i++)
        (*ref)[i] = w[i];
    backend_weight *bw = NULL;
    weight_src src = {.dtype = dt, .k = k, .n_parts = 1, .m = m};
    src.part[0].data = held;
    src.part[0].rows = m;
    TU_OK(be->ops->weight_create(be, &src, &bw), "weight_create %dx%d %s", m, k, quant_name(dt));
    int borrowed = 1;
    uint64_t bytes = be->ops->weight_bytes(bw, &borrowed);
    /* held in its own format: its bytes, and at most the 15 that align a block format's scales */
    if (borrowed || bytes < rb * (size_t)m || bytes > rb * (size_t)m + 15)
        fail_msg("weight %dx%d %s: weight_bytes %llu (borrowed %d), the format's bytes %zu", m, k,
                 quant_name(dt), (unsigned long long)bytes, borrowed, rb * (size_t)m);
    free(w);
    free(held);
    return bw;
}

static backend_weight *rand_weight(dattn_backend *be, int m, int k, double **ref)
{
    return rand_weight_as(be, DATTN_DTYPE_F32, m, k, ref);
}

/* y [n][m] = x [n][k] W^T in f64. */
static void ref_matmul(const double *x, const double *w, int n, int m, int k, double *y)
{
    for (int i = 0; i < n; i++)
        for (int c = 0; c < m; c++) {
            double s = 0.0;
            for (int t = 0; t < k; t++)
                s += x[(size_t)i * k + t] * w[(size_t)c * k + t];
            y[(size_t)i * m + c] = s;
        }
}

static dattn_layer_shape shape_of(int E, int H, int Hkv)
{
    dattn_layer_shape s = dattn_layer_default_shape();
    s.model_dim = E;
    s.n_heads = H;
    s.n_kv_heads = Hkv;
    return s;
}

static void test_linear(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    enum { E = 64, F = 176, V = 301, B = 9 };   /* k = F: a block format's rows do not fit */
    dattn_backend *be = opencl_backend();
    dattn_layer_shape s = shape_of(E, 2, 1);
    dattn_cache *c = session_cache(be, &s, B, F, V);
    const int shapes[][2] = {{E, E}, {V, E}, {E, F}, {V, F}};   /* m, k */
    const int rows[] = {1, 2, 7, B};
    float *x = malloc(sizeof(float) * B * F), *y = malloc(sizeof(float) * B * V);
    double *xd = malloc(sizeof(double) * B * F), *yd = malloc(sizeof(double) * B * V);
    assert_true(x && y && xd && yd);
    for (size_t f = 0; f < N_FORMATS; f++)
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
            int m = shapes[i][0], k = shapes[i][1];
            const char *fn = quant_name(formats[f]);
            if (quant_is_block(formats[f]) && k % QUANT_BLOCK)
                continue;
            double *wd;
            backend_weight *w = rand_weight_as(be, formats[f], m, k, &wd);
            for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
                int n = rows[r];
                tu_rand_x(x, xd, (size_t)n * k);
                TU_OK(be->ops->linear(be, c, w, x, n, y), "linear %s n=%d m=%d k=%d", fn, n, m, k);
                ref_matmul(xd, wd, n, m, k, yd);
                double e = tu_rel_err(y, yd, (size_t)n * m);
                printf("  linear %s n=%d m=%d k=%d: rel err %.2e\n", fn, n, m, k, e);
                TU_CHECK_ERR(e, 1e-5, "linear %s n=%d m=%d k=%d", fn, n, m, k);
            }
            be->ops->weight_free(be, w);
            free(wd);
        }
    /* Rows or widths past the scratch are refused, not written past it. */
    double *wd;
    backend_weight *wide = rand_weight(be, V + 1, E, &wd);
    TU_CHECK_ST(be->ops->linear(be, c, wide, x, 1, y), DATTN_E_INVALID_ARG, "linear m > n_vocab");
    be->ops->weight_free(be, wide);
    free(wd);
    backend_weight *w = rand_weight(be, E, E, &wd);
    TU_CHECK_ST(be->ops->linear(be, c, w, x, B + 1, y), DATTN_E_INVALID_ARG, "linear n > max_batch");
    be->ops->weight_free(be, w);
    free(wd);
    free(x), free(y), free(xd), free(yd);
    session_cache_free(c);
    dattn_backend_free(be);
}

static void test_ffn(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    enum { E = 96, F = 200, B = 11 };
    dattn_backend *be = opencl_backend();
    dattn_layer_shape s = shape_of(E, 3, 3);
    dattn_cache *c = session_cache(be, &s, B, F, 0);
    float *x = malloc(sizeof(float) * B * E), *y = malloc(sizeof(float) * B * E);
    double *xd = malloc(sizeof(double) * B * E), *yd = malloc(sizeof(double) * B * E);
    double *h = malloc(sizeof(double) * B * 2 * F), *a = malloc(sizeof(double) * B * F);
    assert_true(x && y && xd && yd && h && a);
    const int rows[] = {1, 3, B};
    double *w13d, *w2d;
    backend_weight *w13, *w2;
    for (size_t f = 0; f < N_FORMATS; f++) {
        /* the block formats: F = 192 (whole blocks), within the cache's ffn_dim */
        int Ff = quant_is_block(formats[f]) ? 192 : F;
        w13 = rand_weight_as(be, formats[f], 2 * Ff, E, &w13d);
        w2 = rand_weight_as(be, formats[f], E, Ff, &w2d);
        for (size_t r = 0; r < sizeof rows / sizeof *rows; r++) {
            int n = rows[r];
            /* Gain 3: the pre-activations reach the curved part of silu. */
            tu_rand_x(x, xd, (size_t)n * E);
            for (size_t i = 0; i < (size_t)n * E; i++)
                x[i] *= 3.0f, xd[i] = x[i];
            TU_OK(be->ops->ffn(be, c, w13, w2, x, n, y), "ffn n=%d", n);
            ref_matmul(xd, w13d, n, 2 * Ff, E, h);
            for (int i = 0; i < n; i++)
                for (int j = 0; j < Ff; j++) {
                    double g = h[(size_t)i * 2 * Ff + j], u = h[(size_t)i * 2 * Ff + Ff + j];
                    a[(size_t)i * Ff + j] = g / (1.0 + exp(-g)) * u;
                }
            ref_matmul(a, w2d, n, E, Ff, yd);
            double e = tu_rel_err(y, yd, (size_t)n * E);
            printf("  ffn %s n=%d E=%d F=%d: rel err %.2e\n", quant_name(formats[f]), n, E, Ff, e);
            TU_CHECK_ERR(e, 1e-5, "ffn %s n=%d", quant_name(formats[f]), n);
        }
        if (f + 1 < N_FORMATS) {
            be->ops->weight_free(be, w13);
            be->ops->weight_free(be, w2);
            free(w13d), free(w2d);
        }
    }
    TU_CHECK_ST(be->ops->ffn(be, c, w2, w13, x, 1, y), DATTN_E_SHAPE, "ffn with swapped weights");
    be->ops->weight_free(be, w13);
    be->ops->weight_free(be, w2);
    free(w13d), free(w2d), free(x), free(y), free(xd), free(yd), free(h), free(a);
    session_cache_free(c);
    dattn_backend_free(be);
}

/* ---- a KV cache over several buffers ------------------------------------------------------ */

static int n_split_logs;

static void count_split_log(dattn_log_level level, const char *msg, void *ud)
{
    (void)level, (void)ud;
    int bufs = 0;
    const char *p = strstr(msg, " buffers of up to ");
    if (p) {
        while (p > msg && p[-1] >= '0' && p[-1] <= '9')
            p--;
        bufs = atoi(p);
    }
    if (bufs > n_split_logs)
        n_split_logs = bufs;
}

/* A context long enough that two head blocks outweigh the layer's largest weight (the cap
 * applies to every buffer). */
enum { SPLIT_SLOTS = 3, SPLIT_CTX = 1024, SPLIT_PROMPT = 40, SPLIT_STEPS = 24 };

/* Runs every slot of a 3-slot cache (prefill, then decode steps) on `be`; y gets the outputs of
 * all calls, kv the whole KV region at the end (NULL: not read). */
static void run_slots(dattn_backend *be, tu_layer *t, dattn_kv_type kv, float *y, uint8_t *kv_out)
{
    int E = t->E;
    dattn_layer *l = NULL;
    TU_OK(dattn_layer_create(be, &t->shape, &t->w, &l), "layer");
    dattn_cache_params cp = tu_cache_params(SPLIT_CTX, 16, kv, DATTN_POLICY_FULL, 0);
    cp.n_layers = SPLIT_SLOTS;
    dattn_cache *c = NULL;
    TU_OK(dattn_cache_create(be, &t->shape, &cp, NULL, 0, &c), "cache");
    float *x = malloc(sizeof(float) * SPLIT_PROMPT * E);
    assert_non_null(x);
    uint64_t keep = tu_rng_state;
    for (int slot = 0; slot < SPLIT_SLOTS; slot++) {
        tu_rand_x(x, NULL, (size_t)SPLIT_PROMPT * E);
        TU_OK(dattn_layer_prefill(l, c, slot, 0, x, SPLIT_PROMPT, y), "prefill slot %d", slot);
        y += (size_t)SPLIT_PROMPT * E;
        for (int i = 0; i < SPLIT_STEPS; i++) {
            TU_OK(dattn_layer_decode(l, c, slot, SPLIT_PROMPT + i, x + (size_t)i * E, y),
                  "decode slot %d", slot);
            y += E;
        }
    }
    tu_rng_state = keep;   /* the next backend sees the same inputs */
    if (kv_out)
        TU_OK(be->ops->kv_read(be, c, 0, kv_out, kv_bytes(&c->g)), "kv_read");
    free(x);
    dattn_cache_free(c);
    dattn_layer_free(l);
}

static void test_kv_split(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    const dattn_kv_type types[] = {DATTN_KV_F32, DATTN_KV_Q8};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        dattn_kv_type kv = types[ti];
        tu_layer t;
        assert_int_equal(tu_layer_init(&t, 6, 3, 8, 1, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
        size_t n_out = (size_t)SPLIT_SLOTS * (SPLIT_PROMPT + SPLIT_STEPS) * t.E;
        float *y_one = malloc(sizeof(float) * n_out), *y_split = malloc(sizeof(float) * n_out);
        float *y_cpu = malloc(sizeof(float) * n_out);
        assert_true(y_one && y_split && y_cpu);

        /* One head block's bytes, from the same geometry the cache will have. */
        kv_geom g;
        dattn_cache_params cp = tu_cache_params(SPLIT_CTX, 16, kv, DATTN_POLICY_FULL, 0);
        cp.n_layers = SPLIT_SLOTS;
        TU_OK(kv_geom_init(&g, &t.shape, &cp), "kv_geom_init");
        size_t total = kv_bytes(&g);
        uint8_t *kv_one = malloc(total), *kv_split = malloc(total);
        assert_true(kv_one && kv_split);

        dattn_backend *be = opencl_backend();
        run_slots(be, &t, kv, y_one, kv_one);
        dattn_backend_free(be);

        /* A cap of two head blocks and a bit: the 9 blocks (3 slots x 3 KV heads) in 5 buffers
         * of 2, so each slot's heads are two launches: {0,1}{2}, {3}{4,5}, {6,7}{8}. */
        g_max_buffer = 2 * g.head_bytes + 100;
        n_split_logs = 0;
        dattn_log_set(count_split_log, NULL);
        be = opencl_backend();
        run_slots(be, &t, kv, y_split, kv_split);
        dattn_backend_free(be);
        dattn_log_set(NULL, NULL);
        printf("  kv %s: %d head blocks of %zu bytes, cap %llu: %d buffers\n", tu_kv_name(kv),
               SPLIT_SLOTS * t.Hkv, g.head_bytes, (unsigned long long)g_max_buffer, n_split_logs);
        g_max_buffer = 0;
        assert_true(n_split_logs >= 3);

        dattn_backend_params cpu = dattn_backend_default_params();
        cpu.type = DATTN_BACKEND_CPU;
        TU_OK(dattn_backend_create(&cpu, &be), "cpu backend");
        run_slots(be, &t, kv, y_cpu, NULL);
        dattn_backend_free(be);

        double e_one = tu_rel_err_ff(y_split, y_one, n_out);
        double e_cpu = tu_rel_err_ff(y_split, y_cpu, n_out);
        printf("  kv %s split vs one buffer: rel err %.2e; vs cpu: %.2e\n", tu_kv_name(kv), e_one,
               e_cpu);
        TU_CHECK_ERR(e_one, 1e-6, "split vs one buffer, kv %s", tu_kv_name(kv));
        TU_CHECK_ERR(e_cpu, tu_kv_tol(kv), "split vs cpu, kv %s", tu_kv_name(kv));
        if (kv == DATTN_KV_F32)   /* q8 rounding may differ by a step on ties: compare outputs */
            assert_memory_equal(kv_one, kv_split, total);
        free(kv_one), free(kv_split), free(y_one), free(y_split), free(y_cpu);
        tu_layer_free(&t);
    }
}

/* ---- decode head blocks: one query head a work-group below a context length ------------------ */

/* With 4 resident work-groups a compute unit (tuning override), a short context on this device
 * is too few tiles for 2 KV heads x 1 head block of GROUP 3 (tuning_decode_plan), so the cache
 * builds a second variant of the split kernel (HEADS = 1) and decode switches to the GROUP-wide
 * one as the context grows past the point the plan names. Every step's output against the CPU
 * backend, f32 and q8 caches, on both sides of the switch. */
enum { HB_CTX = 1024, HB_BATCH = 64, HB_STEPS = 12 };

static void run_across(dattn_backend *be, tu_layer *t, dattn_kv_type kv, int prompt, float *y)
{
    dattn_layer *l = NULL;
    TU_OK(dattn_layer_create(be, &t->shape, &t->w, &l), "layer");
    dattn_cache_params cp = tu_cache_params(HB_CTX, HB_BATCH, kv, DATTN_POLICY_FULL, 0);
    dattn_cache *c = NULL;
    TU_OK(dattn_cache_create(be, &t->shape, &cp, NULL, 0, &c), "cache");
    uint64_t keep = tu_rng_state;
    float *x = malloc(sizeof(float) * HB_BATCH * t->E);
    float *y_prefix = malloc(sizeof(float) * HB_BATCH * t->E);   /* not kept */
    assert_true(x && y_prefix);
    for (int p0 = 0; p0 < prompt; p0 += HB_BATCH) {
        int n = prompt - p0 < HB_BATCH ? prompt - p0 : HB_BATCH;
        tu_rand_x(x, NULL, (size_t)n * t->E);
        TU_OK(dattn_layer_prefill(l, c, 0, p0, x, n, y_prefix), "prefill at %d", p0);
    }
    free(y_prefix);
    for (int i = 0; i < HB_STEPS; i++) {
        tu_rand_x(x, NULL, (size_t)t->E);
        TU_OK(dattn_layer_decode(l, c, 0, prompt + i, x, y + (size_t)i * t->E), "decode %d", i);
    }
    tu_rng_state = keep;   /* the next backend sees the same inputs */
    free(x);
    dattn_cache_free(c);
    dattn_layer_free(l);
}

static void test_decode_head_blocks(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    g_tuning = "wg_per_cu=4";
    dattn_device_info info;
    int n_dev = 0;
    TU_OK(dattn_devices(&info, 1, &n_dev), "devices");
    tuning_row row = *tuning_lookup(info.vendor, info.name);
    char why[128];
    assert_int_equal(tuning_override(&row, g_tuning, why, sizeof why), 0);
    const dattn_kv_type types[] = {DATTN_KV_F32, DATTN_KV_Q8};
    for (size_t ti = 0; ti < sizeof types / sizeof *types; ti++) {
        dattn_kv_type kv = types[ti];
        int kvt = kv == DATTN_KV_F32 ? 0 : kv == DATTN_KV_F16 ? 1 : 2;
        /* the longest context that still takes one head a work-group, from the plan itself */
        int last_short = 0;
        for (int n_used = 1; n_used <= HB_CTX; n_used++) {
            tuning_decode p;
            assert_int_equal(tuning_decode_plan(&row, kvt, 8, 3, 2, n_used, info.compute_units,
                                                (size_t)info.local_mem_bytes, 1024, &p), 0);
            if (p.heads == 1)
                last_short = n_used;
            else
                assert_int_equal(p.heads, 3);
        }
        printf("  kv %s: one query head a work-group up to %d slots in use, then 3 (of %d)\n",
               tu_kv_name(kv), last_short, HB_CTX);
        if (last_short < 2 || last_short > HB_CTX - HB_STEPS) {
            printf("  this device's plan does not switch inside the test's context; skipped\n");
            continue;
        }
        tu_layer t;
        assert_int_equal(tu_layer_init(&t, 6, 2, 8, 1, 10000.0f, DATTN_DTYPE_F32, 1.5), 0);
        /* decode steps at n_used = prompt + 1 .. prompt + HB_STEPS straddle last_short */
        int prompt = last_short - HB_STEPS / 2;
        float *y_cl = malloc(sizeof(float) * HB_STEPS * t.E);
        float *y_cpu = malloc(sizeof(float) * HB_STEPS * t.E);
        assert_true(y_cl && y_cpu);
        dattn_backend *be = opencl_backend();
        run_across(be, &t, kv, prompt, y_cl);
        dattn_backend_free(be);
        dattn_backend_params cpu = dattn_backend_default_params();
        cpu.type = DATTN_BACKEND_CPU;
        TU_OK(dattn_backend_create(&cpu, &be), "cpu backend");
        run_across(be, &t, kv, prompt, y_cpu);
        dattn_backend_free(be);
        double e = tu_rel_err_ff(y_cl, y_cpu, (size_t)HB_STEPS * t.E);
        printf("  kv %s: %d decode steps from position %d: rel err vs cpu %.2e\n", tu_kv_name(kv),
               HB_STEPS, prompt, e);
        TU_CHECK_ERR(e, tu_kv_tol(kv), "head blocks vs cpu, kv %s", tu_kv_name(kv));
        free(y_cl), free(y_cpu);
        tu_layer_free(&t);
    }
    g_tuning = NULL;
}

/* ---- what does not fit ---------------------------------------------------------------------- */

static void expect_message(const char *what, const char *piece)
{
    const char *msg = dattn_last_error();
    printf("  %s: %s\n", what, msg);
    if (!strstr(msg, piece))
        fail_msg("%s: the message '%s' does not name '%s'", what, msg, piece);
}

static void test_does_not_fit(void **state)
{
    (void)state;
    tu_seed_case(__func__);
    dattn_layer_shape s = shape_of(256, 2, 1);   /* d = 64 */
    dattn_cache_params cp = tu_cache_params(4096, 16, DATTN_KV_F16, DATTN_POLICY_FULL, 0);
    dattn_cache *c = NULL;

    /* One head block above the one-buffer cap. */
    g_max_buffer = 100000;
    dattn_backend *be = opencl_backend();
    TU_CHECK_ST(dattn_cache_create(be, &s, &cp, NULL, 0, &c), DATTN_E_ARENA, "head block > cap");
    expect_message("head block above the cap", "head block");
    dattn_backend_free(be);
    g_max_buffer = 0;

    /* More than the device's memory. */
    be = opencl_backend();
    dattn_cache_params huge = cp;
    huge.n_ctx = 1 << 28;
    huge.n_layers = 4000;
    TU_CHECK_ST(dattn_cache_create(be, &s, &huge, NULL, 0, &c), DATTN_E_ARENA, "cache > memory");
    expect_message("cache above the device memory", "CL_DEVICE_GLOBAL_MEM_SIZE");
    dattn_backend_free(be);

    /* A tuning whose prefill tile cannot run: 64 x 64 needs 70 KiB of local memory. */
    g_tuning = "prefill_qt=64,prefill_kt=64";
    be = opencl_backend();
    TU_CHECK_ST(dattn_cache_create(be, &s, &cp, NULL, 0, &c), DATTN_E_UNSUPPORTED,
                "oversize prefill tile");
    expect_message("oversize prefill tile", "lower PREFILL_QT");
    dattn_backend_free(be);

    /* A tuning the device takes: the same layer runs. */
    g_tuning = "prefill_qt=8,prefill_kt=32,wg_decode=32";
    be = opencl_backend();
    TU_OK(dattn_cache_create(be, &s, &cp, NULL, 0, &c), "smaller tiles");
    dattn_cache_free(c);
    dattn_backend_free(be);

    /* A malformed override is refused at creation. */
    g_tuning = "prefill_qt=lots";
    dattn_backend_params p = dattn_backend_default_params();
    p.type = DATTN_BACKEND_OPENCL;
    p.tuning = g_tuning;
    TU_CHECK_ST(dattn_backend_create(&p, &be), DATTN_E_INVALID_ARG, "bad tuning override");
    expect_message("bad tuning override", "prefill_qt");
    g_tuning = NULL;
}

int main(void)
{
    int n = 0;
    dattn_device_info info;
    if (dattn_devices(&info, 1, &n) != DATTN_OK || n == 0) {
        printf("test_cl_ops: no OpenCL device here; skipped\n");
        return 77;
    }
    g_max_buffer = 0;
    g_tuning = NULL;
    tu_init_seed("test_cl_ops");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_decode_head_blocks),
        cmocka_unit_test(test_ffn),
        cmocka_unit_test(test_kv_split),
        cmocka_unit_test(test_does_not_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
