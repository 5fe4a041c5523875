/* dattn bench: flash decoding and prefill of one layer, timed against the machine's ceilings
 * measured in the same run (DESIGN §5, §8): decode as bytes of KV cache read per second against
 * streaming read bandwidth, prefill as GFLOP/s against the measured FMA peak. Caches are flushed
 * between timed steps. The last line is one machine-readable key=value summary. Public API only:
 * the cache is filled and the attention timed through dattn_layer_attend. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ceiling.h"
#ifdef DATTN_HAVE_OPENCL
#include "ceiling_cl.h"
#endif
#include "tool.h"
#include "version.h"

typedef struct bench_opts {
    int decode;
    int warm;          /* --warm: leave the cache in the CPU caches (compute rate, not DRAM) */
    dattn_backend_type backend;
    long heads, kv_heads, head_dim, ctx, threads, reps;
    dattn_kv_type kv;
    const char *isa;
} bench_opts;

static uint64_t rng_state;
static float frand(void)   /* uniform in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static int bad(const char *msg, const char *arg)
{
    fprintf(stderr, "dattn: bench: %s %s\n", msg, arg ? arg : "");
    return 2;
}

static dattn_layer *random_layer(dattn_backend *be, const dattn_layer_shape *s)
{
    int E = s->model_dim, kv = E / (s->n_heads / s->n_kv_heads), d = E / s->n_heads / 2;
    size_t n = (size_t)E * E * 2 + (size_t)kv * E * 2 + 6 * (size_t)d;
    float *w = malloc(sizeof(float) * n);
    if (!w)
        return NULL;
    float scale = 1.0f / sqrtf((float)E);
    for (size_t i = 0; i < n; i++)
        w[i] = frand() * scale;
    float *p = w;
    dattn_layer_weights lw = {.dtype = DATTN_DTYPE_F32};
    lw.q_proj = p, p += (size_t)E * E;
    lw.k_proj = p, p += (size_t)kv * E;
    lw.v_proj = p, p += (size_t)kv * E;
    lw.out_proj = p, p += (size_t)E * E;
    lw.lambda_q1 = p, p += d;
    lw.lambda_k1 = p, p += d;
    lw.lambda_q2 = p, p += d;
    lw.lambda_k2 = p, p += d;
    lw.subln = p;
    dattn_layer *l = NULL;
    dattn_status st = dattn_layer_create(be, s, &lw, &l);
    if (st != DATTN_OK)
        tool_report("bench", st);
    free(w);
    return l;
}

static void print_machine(const dattn_backend *be, int threads)
{
    printf("dattn %s  cpu: %s  llc: %.0f MiB  backend: %s  threads: %d\n", DATTN_GIT_REV,
           ceiling_cpu_name(), ceiling_llc_bytes() / 1048576.0, dattn_backend_describe(be), threads);
}

/* The ISA name from "cpu avx512, 2 threads". */
static void backend_isa(const dattn_backend *be, char *isa, size_t n)
{
    const char *d = dattn_backend_describe(be);
    snprintf(isa, n, "%s", !strncmp(d, "opencl", 6) ? "opencl" : strncmp(d, "cpu ", 4) ? "generic" : d + 4);
    char *comma = strchr(isa, ',');
    if (comma)
        *comma = '\0';
}

/* Read ceiling of what runs the bench: the CPU's, or the OpenCL device's. */
static double read_ceiling(const bench_opts *o, int threads)
{
    (void)o;   /* only the OpenCL build looks at the backend */
#ifdef DATTN_HAVE_OPENCL
    if (o->backend == DATTN_BACKEND_OPENCL) {
        char why[256];
        double g = ceiling_cl_read_gbps(getenv("DATTN_DEVICE"), why, sizeof why);
        if (g <= 0)
            fprintf(stderr, "dattn: bench: no device read ceiling: %s\n", why);
        return g;
    }
#endif
    return ceiling_read_gbps(threads);
}

/* Random keys and values for positions 0..N-1 of slot 0, appended without attention. */
static dattn_status fill_cache(dattn_layer *layer, dattn_cache *c, int N, int kv_dim, int chunk)
{
    float *k = malloc(sizeof(float) * (size_t)chunk * kv_dim);
    float *v = malloc(sizeof(float) * (size_t)chunk * kv_dim);
    dattn_status st = k && v ? DATTN_OK : DATTN_E_NOMEM;
    for (int t = 0; st == DATTN_OK && t < N; t += chunk) {
        int n = N - t < chunk ? N - t : chunk;
        for (size_t i = 0; i < (size_t)n * kv_dim; i++)
            k[i] = frand(), v[i] = frand();
        st = dattn_layer_attend(layer, c, 0, t, NULL, k, v, n, NULL);
    }
    free(k);
    free(v);
    return st;
}

static int bench_decode(const bench_opts *o, dattn_backend *be, dattn_layer *layer,
                        const dattn_layer_shape *s, int threads, const char *isa)
{
    int E = s->model_dim, H = s->n_heads, Hkv = s->n_kv_heads, d = (int)o->head_dim;
    int kv_dim = E / (H / Hkv), N = (int)o->ctx;
    dattn_cache_params cp = dattn_cache_default_params();
    cp.n_ctx = N;
    cp.kv_type = o->kv;
    cp.max_batch = N < 256 ? N : 256;   /* the fill's chunks; decode runs one token */
    dattn_cache *c = NULL;
    dattn_status st = dattn_cache_create(be, s, &cp, NULL, 0, &c);
    if (st != DATTN_OK) {
        tool_report("bench", st);
        return 2;
    }
    float *q = malloc(sizeof(float) * (size_t)E), *out = malloc(sizeof(float) * (size_t)E);
    float *k = malloc(sizeof(float) * (size_t)kv_dim), *v = malloc(sizeof(float) * (size_t)kv_dim);
    float *x = malloc(sizeof(float) * (size_t)E), *y = malloc(sizeof(float) * (size_t)E);
    if (!q || !out || !k || !v || !x || !y) {
        fprintf(stderr, "dattn: bench: out of memory\n");
        return 2;
    }
    if ((st = fill_cache(layer, c, N - 1, kv_dim, cp.max_batch)) != DATTN_OK) {
        tool_report("bench", st);
        return 2;
    }
    for (int i = 0; i < E; i++)
        q[i] = frand(), x[i] = frand();
    for (int i = 0; i < kv_dim; i++)
        k[i] = frand(), v[i] = frand();
    /* The timed step: the last token's RoPE and K/V append, then its attention against all N
     * positions (flash decoding); each step rewinds to N-1, so the cache length stays N. */
    int reps = o->reps > 0 ? (int)o->reps : N <= 16384 ? 50 : 20;
    double *ms = malloc(sizeof(double) * (size_t)reps), *ms_layer = malloc(sizeof(double) * (size_t)reps);
    st = dattn_layer_attend(layer, c, 0, N - 1, q, k, v, 1, out);   /* warm-up */
    if (st != DATTN_OK) {
        tool_report("bench", st);
        return 2;
    }
    /* This machine's bandwidth drifts with its neighbours: measure the ceiling before, between
     * and after the timed runs and take the median, so steps and ceiling see the same times. */
    double ceil_runs[3];
    ceil_runs[0] = read_ceiling(o, threads);
    for (int r = 0; r < reps && st == DATTN_OK; r++) {
        if (!o->warm)
            ceiling_flush_caches();
        double t0 = ceiling_now_seconds();
        st = dattn_layer_attend(layer, c, 0, N - 1, q, k, v, 1, out);   /* returns when done */
        ms[r] = (ceiling_now_seconds() - t0) * 1e3;
    }
    ceil_runs[1] = read_ceiling(o, threads);
    for (int r = 0; r < reps && st == DATTN_OK; r++) {
        ceiling_flush_caches();
        double t0 = ceiling_now_seconds();
        st = dattn_layer_decode(layer, c, 0, N - 1, x, y);
        ms_layer[r] = (ceiling_now_seconds() - t0) * 1e3;
    }
    if (st != DATTN_OK) {
        tool_report("bench", st);
        return 2;
    }
    double med = ceiling_median(ms, reps), med_layer = ceiling_median(ms_layer, reps);
    size_t elem = o->kv == DATTN_KV_F32 ? 4 : o->kv == DATTN_KV_F16 ? 2 : 1;
    size_t per_pos = 4 * (size_t)d * elem + (o->kv == DATTN_KV_Q8 ? 12 : 0);
    double cache_bytes = (double)N * Hkv * per_pos;
    double weight_bytes = 4.0 * ((double)(E + 2 * kv_dim) * E + (double)E * E);
    double gbps = cache_bytes / (med * 1e-3) / 1e9;
    double layer_gbps = (cache_bytes + weight_bytes) / (med_layer * 1e-3) / 1e9;
    ceil_runs[2] = read_ceiling(o, threads);
    double ceil_lo = fmin(ceil_runs[0], fmin(ceil_runs[1], ceil_runs[2]));
    double ceil_hi = fmax(ceil_runs[0], fmax(ceil_runs[1], ceil_runs[2]));
    double ceil_gbps = ceiling_median(ceil_runs, 3);
    double pct = 100.0 * gbps / ceil_gbps;
    char how[64];
    if (o->backend == DATTN_BACKEND_OPENCL)
        snprintf(how, sizeof how, "the device's streaming read");
    else
        snprintf(how, sizeof how, "streaming read, %d threads, buffer >> LLC", threads);
    printf("read ceiling: %.1f GB/s (median of 3 around the timed runs: %.1f-%.1f; %s)\n",
           ceil_gbps, ceil_lo, ceil_hi, how);
    printf("decode H=%d Hkv=%d d=%d ctx=%d kv=%s: attention %.3f ms (median of %d, %s), "
           "%.1f MB of cache, %.1f GB/s = %.1f%% of read bandwidth\n",
           H, Hkv, d, N, tool_kv_name(o->kv), med, reps,
           o->warm ? "warm: cache left in the CPU caches" : "caches flushed", cache_bytes / 1e6,
           gbps, pct);
    printf("  whole layer step (q/k/v/out GEMV + attention): %.3f ms, %.1f MB read, %.1f GB/s = %.1f%%\n",
           med_layer, (cache_bytes + weight_bytes) / 1e6, layer_gbps, 100.0 * layer_gbps / ceil_gbps);
    printf("bench=decode heads=%d kv_heads=%d head_dim=%d ctx=%d kv=%s threads=%d isa=%s%s ms=%.3f "
           "layer_ms=%.3f gbps=%.1f ceiling_gbps=%.1f pct=%.1f\n",
           H, Hkv, d, N, tool_kv_name(o->kv), threads, isa, o->warm ? " warm=1" : "", med,
           med_layer, gbps, ceil_gbps, pct);
    free(q);
    free(out);
    free(k);
    free(v);
    free(x);
    free(y);
    free(ms);
    free(ms_layer);
    dattn_cache_free(c);
    return 0;
}

static int bench_prefill(const bench_opts *o, dattn_backend *be, dattn_layer *layer,
                         const dattn_layer_shape *s, int threads, const char *isa)
{
    int E = s->model_dim, H = s->n_heads, d = (int)o->head_dim, T = (int)o->ctx;
    dattn_cache_params cp = dattn_cache_default_params();
    cp.n_ctx = T;
    cp.kv_type = o->kv;
    cp.max_batch = T < 2048 ? T : 2048;
    dattn_cache *c = NULL;
    dattn_status st = dattn_cache_create(be, s, &cp, NULL, 0, &c);
    if (st != DATTN_OK) {
        tool_report("bench", st);
        return 2;
    }
    float *x = malloc(sizeof(float) * (size_t)T * E), *y = malloc(sizeof(float) * (size_t)T * E);
    for (size_t i = 0; i < (size_t)T * E; i++)
        x[i] = frand();
    int reps = o->reps > 0 ? (int)o->reps : 3;
    double *ms = malloc(sizeof(double) * (size_t)reps);
    st = dattn_layer_prefill(layer, c, 0, 0, x, T, y);   /* warm-up */
    for (int r = 0; r < reps && st == DATTN_OK; r++) {
        ceiling_flush_caches();
        double t0 = ceiling_now_seconds();
        st = dattn_layer_prefill(layer, c, 0, 0, x, T, y);
        ms[r] = (ceiling_now_seconds() - t0) * 1e3;
    }
    if (st != DATTN_OK) {
        tool_report("bench", st);
        return 2;
    }
    double med = ceiling_median(ms, reps);
    double proj = 2.0 * T * E * (E + 2.0 * E / (H / s->n_kv_heads) + E);
    double attn = (double)T * (T + 1) / 2 * H * 12.0 * d;   /* 2 score halves + 2 V sums per pair */
    double gflops = (proj + attn) / (med * 1e-3) / 1e9;
    double peak = 0.0;
    char why[256] = "";
#ifdef DATTN_HAVE_OPENCL
    if (o->backend == DATTN_BACKEND_OPENCL)
        peak = ceiling_cl_fma_gflops(getenv("DATTN_DEVICE"), why, sizeof why);
    else
#endif
        peak = ceiling_fma_gflops(threads, isa);
    double pct = peak > 0 ? 100.0 * gflops / peak : 0.0;
    if (peak > 0 && o->backend == DATTN_BACKEND_OPENCL)
        printf("fma ceiling: %.1f GFLOP/s (device fma kernel)\n", peak);
    else if (peak > 0)
        printf("fma ceiling: %.1f GFLOP/s (%s, %d threads)\n", peak, isa, threads);
    else
        printf("fma ceiling: not measured (%s; pct=0)\n", why[0] ? why : "no FMA kernel here");
    printf("prefill H=%d Hkv=%d d=%d T=%d kv=%s: %.1f ms (median of %d), %.2f GFLOP "
           "(%.2f projections + %.2f attention), %.1f GFLOP/s = %.1f%% of FMA peak, %.0f tokens/s\n",
           H, s->n_kv_heads, d, T, tool_kv_name(o->kv), med, reps, (proj + attn) / 1e9, proj / 1e9,
           attn / 1e9, gflops, pct, T / (med * 1e-3));
    printf("bench=prefill heads=%d kv_heads=%d head_dim=%d ctx=%d kv=%s threads=%d isa=%s ms=%.1f "
           "gflops=%.1f ceiling_gflops=%.1f pct=%.1f\n",
           H, s->n_kv_heads, d, T, tool_kv_name(o->kv), threads, isa, med, gflops, peak, pct);
    free(x);
    free(y);
    free(ms);
    dattn_cache_free(c);
    return 0;
}

int cmd_bench(int argc, char **argv)
{
    bench_opts o = {0, 0, DATTN_BACKEND_CPU, 12, 4, 128, 4096, 0, 0, DATTN_KV_F16, NULL};
    if (argc >= 1 && !strcmp(argv[0], "model"))   /* a whole model: cmd_bench_model.c */
        return cmd_bench_model(argc - 1, argv + 1);
    if (argc >= 1 && (!strcmp(argv[0], "gemv") || !strcmp(argv[0], "gemm"))) {
        /* cl/gemv.cl or cl/gemm.cl alone: cmd_bench_gemv.c */
#ifdef DATTN_HAVE_OPENCL
        return cmd_bench_gemv(argc - 1, argv + 1, !strcmp(argv[0], "gemm"));
#else
        return bad("gemv and gemm run the OpenCL kernels; this build has no OpenCL", NULL);
#endif
    }
    if (argc < 1 || (strcmp(argv[0], "decode") && strcmp(argv[0], "prefill")))
        return bad("the first argument is 'decode', 'prefill', 'model', 'gemv' or 'gemm', not",
                   argc ? argv[0] : "nothing");
    o.decode = !strcmp(argv[0], "decode");
    struct { const char *name; long *v; long lo, hi; } ints[] = {
        {"--heads", &o.heads, 1, 4096},      {"--kv-heads", &o.kv_heads, 1, 4096},
        {"--head-dim", &o.head_dim, 2, 1024}, {"--ctx", &o.ctx, 1, 1L << 24},
        {"--threads", &o.threads, 0, 1024},   {"--reps", &o.reps, 1, 100000},
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--warm")) {
            o.warm = 1;
            continue;
        }
        if (!v)
            return bad("missing value after", a);
        i++;
        int done = 0;
        for (size_t k = 0; k < sizeof ints / sizeof *ints; k++)
            if (!strcmp(a, ints[k].name)) {
                if (tool_parse_int(v, ints[k].lo, ints[k].hi, ints[k].v))
                    return bad(a, "takes an integer in range");
                done = 1;
            }
        if (done)
            continue;
        if (!strcmp(a, "--kv")) {
            if (tool_parse_kv(v, &o.kv))
                return bad("--kv takes f32, f16 or q8, not", v);
        } else if (!strcmp(a, "--isa")) {
            o.isa = v;
        } else if (!strcmp(a, "--backend")) {
            if (tool_parse_backend(v, &o.backend))
                return bad("--backend takes cpu, opencl or auto, not", v);
        } else {
            return bad("unknown option", a);
        }
    }
    rng_state = 0x9e3779b97f4a7c15ull;
    dattn_backend_params bp = dattn_backend_default_params();
    bp.type = o.backend;
    tool_backend_env(&bp);
    bp.n_threads = (int)o.threads;
    bp.cpu_isa = o.isa;
    dattn_backend *be = NULL;
    dattn_status st = dattn_backend_create(&bp, &be);
    if (st != DATTN_OK) {
        tool_report("bench", st);
        return 2;
    }
    dattn_layer_shape s = dattn_layer_default_shape();
    s.model_dim = (int)(2 * o.heads * o.head_dim);
    s.n_heads = (int)o.heads;
    s.n_kv_heads = (int)o.kv_heads;
    dattn_layer *layer = random_layer(be, &s);
    if (!layer) {
        dattn_backend_free(be);
        return 2;
    }
    if (o.backend == DATTN_BACKEND_AUTO)   /* what auto took decides the ceiling */
        o.backend = strncmp(dattn_backend_describe(be), "opencl", 6) ? DATTN_BACKEND_CPU
                                                                     : DATTN_BACKEND_OPENCL;
    int threads = tool_backend_threads(be);
    char isa[32];
    backend_isa(be, isa, sizeof isa);
    print_machine(be, threads);
    int rc = o.decode ? bench_decode(&o, be, layer, &s, threads, isa)
                      : bench_prefill(&o, be, layer, &s, threads, isa);
    dattn_layer_free(layer);
    dattn_backend_free(be);
    return rc;
}
