/* ab_decode: two builds of libdattn in one process, decoding the same model in turn, so that
 * both see the same minutes of a noisy machine.
 *
 * Why: on a shared 2-core VM separate runs of `dattn bench model` swing 20-100% from minute to
 * minute (the read ceiling itself moves between 30 and 80 GB/s), which hides any change worth
 * less than that. Alternating single tokens between two model copies, the order swapped every
 * token, gives paired per-token times whose medians an A/A run (the same library twice) puts
 * within ~3% of each other. Each library is opened with dlopen(RTLD_LOCAL) from its own path
 * (copy the .so to two folders), so each copy runs its own code; both must have the ABI of this
 * include/dattn.h.
 *
 * While one copy decodes, the other's idle pool workers spin (they sleep only after 5 ms), so a
 * change to how the pool waits is measured against that: --by-round lets each copy run a whole
 * round in turn instead (the idle workers fall asleep, and each round's first token pays their
 * wake-up).
 *
 * Usage: ab_decode LIB_A LIB_B -m MODEL [--backend cpu|opencl|auto] [--threads N]
 *                  [--weights f32|f16|bf16|q8_0|q4_0] [--tokens N] [--rounds R] [--flush]
 *                  [--by-round] [--seed S]
 * (--backend: cpu unless given).
 * Each round decodes --tokens random tokens (seeded) from an empty cache in both copies and
 * prints its medians; the last line is
 *   ab=decode threads=N weights=W tokens=N rounds=R a_ms=... b_ms=... b_over_a=...
 * (medians over every timed token). Two copies of a model bigger than half the last-level cache
 * stream from DRAM on their own; --flush flushes the caches before every token, as `dattn bench
 * model` does. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ceiling.h"
#include "dattn.h"
#include "tool.h"

/* The entry points the harness calls, resolved in one library. */
typedef struct lib_api {
    const char *path;
    void *handle;
    dattn_backend_params (*backend_default_params)(void);
    dattn_status (*backend_create)(const dattn_backend_params *, dattn_backend **);
    void (*backend_free)(dattn_backend *);
    dattn_status (*model_load_params)(dattn_backend *, const char *, const dattn_model_params *,
                                      dattn_model **);
    dattn_status (*model_get_info)(const dattn_model *, dattn_model_info *);
    void (*model_free)(dattn_model *);
    dattn_cache_params (*cache_default_params)(void);
    dattn_status (*session_create)(dattn_model *, const dattn_cache_params *, void *, size_t,
                                   dattn_session **);
    dattn_status (*session_eval)(dattn_session *, const int32_t *, int, float *, int);
    dattn_status (*session_reset)(dattn_session *);
    void (*session_free)(dattn_session *);
    const char *(*last_error)(void);
} lib_api;

/* One model copy: its library, backend, model and session. */
typedef struct copy {
    lib_api api;
    dattn_backend *be;
    dattn_model *model;
    dattn_session *session;
    float *logits;
} copy;

static int resolve(lib_api *a, const char *path)
{
    a->path = path;
    /* RTLD_LOCAL: the second library's calls bind to its own definitions, not the first's. */
    a->handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!a->handle) {
        fprintf(stderr, "ab_decode: %s\n", dlerror());
        return 0;
    }
    struct { void **slot; const char *name; } syms[] = {
        {(void **)&a->backend_default_params, "dattn_backend_default_params"},
        {(void **)&a->backend_create, "dattn_backend_create"},
        {(void **)&a->backend_free, "dattn_backend_free"},
        {(void **)&a->model_load_params, "dattn_model_load_params"},
        {(void **)&a->model_get_info, "dattn_model_get_info"},
        {(void **)&a->model_free, "dattn_model_free"},
        {(void **)&a->cache_default_params, "dattn_cache_default_params"},
        {(void **)&a->session_create, "dattn_session_create"},
        {(void **)&a->session_eval, "dattn_session_eval"},
        {(void **)&a->session_reset, "dattn_session_reset"},
        {(void **)&a->session_free, "dattn_session_free"},
        {(void **)&a->last_error, "dattn_last_error"},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        *syms[i].slot = dlsym(a->handle, syms[i].name);
        if (!*syms[i].slot) {
            fprintf(stderr, "ab_decode: %s has no %s\n", path, syms[i].name);
            return 0;
        }
    }
    return 1;
}

/* Loads the model into a fresh backend and session of the copy's own library, with room for
 * n_ctx tokens (at most the model's max_seq_len). */
static int open_copy(copy *c, const char *model, dattn_backend_type type, int threads,
                     const dattn_model_params *mp, int n_ctx, dattn_model_info *info)
{
    dattn_backend_params bp = c->api.backend_default_params();
    bp.type = type;
    bp.n_threads = threads;
    int ok = c->api.backend_create(&bp, &c->be) == DATTN_OK &&
             c->api.model_load_params(c->be, model, mp, &c->model) == DATTN_OK &&
             c->api.model_get_info(c->model, info) == DATTN_OK;
    if (ok) {
        dattn_cache_params cp = c->api.cache_default_params();
        cp.n_ctx = n_ctx < info->max_seq_len ? n_ctx : info->max_seq_len;
        cp.max_batch = 1;
        ok = c->api.session_create(c->model, &cp, NULL, 0, &c->session) == DATTN_OK;
    }
    if (!ok) {
        fprintf(stderr, "ab_decode: %s: %s\n", c->api.path, c->api.last_error());
        return 0;
    }
    c->logits = malloc(sizeof(float) * (size_t)info->vocab_size);
    if (!c->logits)
        fprintf(stderr, "ab_decode: no memory for %d logits\n", info->vocab_size);
    return c->logits != NULL;
}

static void close_copy(copy *c)
{
    if (c->api.handle) {
        if (c->session)
            c->api.session_free(c->session);
        if (c->model)
            c->api.model_free(c->model);
        if (c->be)
            c->api.backend_free(c->be);
    }
    free(c->logits);
    /* The library stays loaded until exit: LeakSanitizer's scan at exit crashes when an
     * instrumented library that ran threads has been unloaded (a sanitizer build's own test). */
}

/* An option's count in [lo, 2^20] into *out; says what is wrong and returns -1 otherwise. */
static int parse_count(const char *opt, const char *v, long lo, int *out)
{
    long n;
    if (tool_parse_int(v, lo, 1L << 20, &n)) {
        fprintf(stderr, "ab_decode: %s %s is not a whole number from %ld to %ld\n", opt, v, lo,
                1L << 20);
        return -1;
    }
    *out = (int)n;
    return 0;
}

/* Times one decode step of copy c (flushing the caches first when asked); < 0 on an error. */
static double step_ms(copy *c, int32_t token, int flush)
{
    if (flush)
        ceiling_flush_caches();
    double t0 = ceiling_now_seconds();
    if (c->api.session_eval(c->session, &token, 1, c->logits, 0) != DATTN_OK) {
        fprintf(stderr, "ab_decode: %s: %s\n", c->api.path, c->api.last_error());
        return -1.0;
    }
    return (ceiling_now_seconds() - t0) * 1e3;
}

static int usage(void)
{
    fprintf(stderr, "usage: ab_decode LIB_A LIB_B -m MODEL [--backend cpu|opencl|auto] "
                    "[--threads N] [--weights f32|f16|bf16|q8_0|q4_0] [--tokens N] [--rounds R] "
                    "[--flush] [--by-round] [--seed S]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return usage();
    const char *model = NULL, *weights = "stored", *backend = "cpu";
    dattn_backend_type type = DATTN_BACKEND_CPU;
    int threads = 0, tokens = 128, rounds = 10, flush = 0, by_round = 0;
    unsigned long seed = 1;
    dattn_model_params mp = {0};
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--flush")) {
            flush = 1;
            continue;
        }
        if (!strcmp(a, "--by-round")) {
            by_round = 1;
            continue;
        }
        if (!v)
            return usage();
        i++;
        if (!strcmp(a, "-m"))
            model = v;
        else if (!strcmp(a, "--backend")) {
            backend = v;
            if (tool_parse_backend(v, &type)) {
                fprintf(stderr, "ab_decode: --backend %s is not cpu, opencl or auto\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--threads")) {
            if (parse_count(a, v, 0, &threads))
                return 2;
        } else if (!strcmp(a, "--tokens")) {
            if (parse_count(a, v, 1, &tokens))
                return 2;
        } else if (!strcmp(a, "--rounds")) {
            if (parse_count(a, v, 1, &rounds))
                return 2;
        } else if (!strcmp(a, "--seed"))
            seed = strtoul(v, NULL, 10);
        else if (!strcmp(a, "--weights")) {
            if (tool_parse_weights(v, &mp.weights)) {
                fprintf(stderr, "ab_decode: --weights %s is not f32, f16, bf16, q8_0 or q4_0\n",
                        v);
                return 2;
            }
            mp.convert_weights = 1;
            weights = v;
        } else
            return usage();
    }
    if (!model)
        return usage();

    copy c[2];
    memset(c, 0, sizeof c);
    dattn_model_info info[2];
    int ok = resolve(&c[0].api, argv[1]) && resolve(&c[1].api, argv[2]);
    /* dlopen returns the loaded library again for the same file: then both copies run one code. */
    if (ok && c[0].api.session_eval == c[1].api.session_eval)
        printf("A and B are the same loaded library: this is an A/A run of one copy of the code\n");
    for (int k = 0; ok && k < 2; k++)
        ok = open_copy(&c[k], model, type, threads, &mp, tokens, &info[k]);
    if (ok && info[0].vocab_size != info[1].vocab_size) {
        fprintf(stderr, "ab_decode: the two libraries read different vocabularies (%d, %d)\n",
                info[0].vocab_size, info[1].vocab_size);
        ok = 0;
    }
    if (ok && tokens > info[0].max_seq_len)
        tokens = info[0].max_seq_len;
    if (ok && (size_t)tokens * (size_t)rounds > INT_MAX) {
        fprintf(stderr, "ab_decode: %d rounds of %d tokens are too many\n", rounds, tokens);
        ok = 0;
    }
    /* ms[k]: copy k's step times, round after round; sorted[]: a round's, sorted for its
     * median; ids[]: a round's tokens. */
    size_t n = ok ? (size_t)tokens * (size_t)rounds : 0;
    double *ms[2] = {NULL, NULL}, *sorted = NULL;
    int32_t *ids = NULL;
    if (ok) {
        ms[0] = malloc(sizeof(double) * n);
        ms[1] = malloc(sizeof(double) * n);
        sorted = malloc(sizeof(double) * (size_t)tokens);
        ids = malloc(sizeof(int32_t) * (size_t)tokens);
        if (!(ms[0] && ms[1] && sorted && ids)) {
            fprintf(stderr, "ab_decode: no memory for %zu step times\n", 2 * n);
            ok = 0;
        }
    }
    if (ok)
        printf("A = %s\nB = %s\nmodel %s, weights %s, backend %s, %d threads%s, %d tokens a "
               "round from an empty cache, seed %lu%s\n", argv[1], argv[2], model, weights, backend,
               threads,
               threads ? "" : " (one per core)", tokens, seed,
               flush ? ", caches flushed before every token" : "");
    if (ok)
        printf("A and B take turns every %s\n", by_round ? "round" : "token");

    /* Random token ids (a small LCG: the same ids for both copies, reproducible by seed). */
    uint64_t state = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (int r = 0; ok && r < rounds; r++) {
        for (int t = 0; t < tokens; t++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            ids[t] = (int32_t)((state >> 33) % (uint64_t)info[0].vocab_size);
        }
        ok = c[0].api.session_reset(c[0].session) == DATTN_OK &&
             c[1].api.session_reset(c[1].session) == DATTN_OK;
        double *round[2] = {ms[0] + (size_t)r * (size_t)tokens, ms[1] + (size_t)r * (size_t)tokens};
        /* Step s of the round: token t of copy `who`, who goes first alternating every token (or
         * every round with --by-round). */
        for (int s = 0; ok && s < 2 * tokens; s++) {
            int t = by_round ? s % tokens : s / 2, k = by_round ? s / tokens : s % 2;
            int first = by_round ? r % 2 : (r + t) % 2;
            int who = k ? 1 - first : first;
            round[who][t] = step_ms(&c[who], ids[t], flush);
            ok = round[who][t] >= 0;
        }
        if (!ok)
            break;
        double med[2];
        for (int k = 0; k < 2; k++) {
            memcpy(sorted, round[k], sizeof(double) * (size_t)tokens);
            med[k] = ceiling_median(sorted, tokens);
        }
        printf("round %d: A %.4f ms, B %.4f ms a token (medians), B/A %.3f\n", r + 1, med[0],
               med[1], med[1] / med[0]);
    }
    if (ok) {
        double a = ceiling_median(ms[0], (int)n), b = ceiling_median(ms[1], (int)n);
        printf("ab=decode threads=%d weights=%s tokens=%d rounds=%d a_ms=%.4f b_ms=%.4f "
               "b_over_a=%.3f\n", threads, weights, tokens, rounds, a, b, b / a);
    }
    free(sorted);
    free(ids);
    int rc = ok ? 0 : 1;
    for (int k = 0; k < 2; k++)
        close_copy(&c[k]);
    free(ms[0]);
    free(ms[1]);
    return rc;
}
