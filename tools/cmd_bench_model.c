/* dattn bench model: a whole model's prefill tokens/s, and its decode tokens/s at several cache
 * fills next to the floor a decode step cannot beat: the bytes it must read (the weights, and the
 * KV cache up to that fill) over the read bandwidth measured in the same run (DESIGN §5, §8).
 * Tokens are random ids; the CPU caches are flushed between timed decode steps unless --warm.
 * With --rounds R each fill is timed R times, each round between two samples of the ceiling (see
 * the decode loops). One machine-readable line per result. */
#define _POSIX_C_SOURCE 200809L   /* nanosleep */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ceiling.h"
#ifdef DATTN_HAVE_OPENCL
#include "ceiling_cl.h"
#endif
#include "tool.h"
#include "version.h"

enum { MAX_FILLS = 32 };

static int bad(const char *msg, const char *arg)
{
    fprintf(stderr, "dattn: bench model: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

/* "0,512,2048" into fills (ascending as given); returns the count, -1 when malformed. */
static int parse_fills(const char *s, long *fills)
{
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > (1L << 28) || n == MAX_FILLS || (n && v <= fills[n - 1]))
            return -1;
        fills[n++] = v;
        if (!*end)
            return n;
        if (*end != ',')
            return -1;
        p = end + 1;
    }
}

/* Read bandwidth of what runs the model, GB/s (0 when it could not be measured). */
static double read_ceiling(int opencl, const char *device, int threads)
{
#ifdef DATTN_HAVE_OPENCL
    if (opencl) {
        char why[256];
        double g = ceiling_cl_read_gbps(device, why, sizeof why);
        if (g <= 0)
            fprintf(stderr, "dattn: bench model: no device read ceiling: %s\n", why);
        return g;
    }
#else
    (void)opencl;
    (void)device;
#endif
    return ceiling_read_gbps(threads);
}

/* One fill's timed decode steps. gbps: the read ceiling they are held against. */
typedef struct decode_result {
    long fill;
    double ms, bytes, passes, gbps;
} decode_result;

static double pct_of_floor(const decode_result *r)
{
    return r->gbps > 0 ? 100.0 * r->bytes / (r->gbps * 1e9) * 1e3 / r->ms : 0.0;
}

/* reps single-token steps from where the session stands, ms[i] each; the caches flushed before
 * every step unless warm. */
static dattn_status decode_steps(dattn_session *s, const int32_t *tokens, long reps, int warm,
                                 float *logits, double *ms)
{
    for (long r = 0; r < reps; r++) {
        if (!warm)
            ceiling_flush_caches();
        int32_t tok = tokens[r];
        double t0 = ceiling_now_seconds();
        dattn_status st = dattn_session_eval(s, &tok, 1, logits, 0);
        ms[r] = (ceiling_now_seconds() - t0) * 1e3;
        if (st != DATTN_OK)
            return st;
    }
    return DATTN_OK;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static int32_t random_token(int vocab)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (int32_t)((rng_state >> 33) % (uint64_t)vocab);
}

int cmd_bench_model(int argc, char **argv)
{
    tool_model_opts o;
    tool_model_opts_init(&o, DATTN_KV_F16);
    long fills[MAX_FILLS], reps = 0, prompt = 512, rounds = 1;
    int n_fills = 0, warm = 0;
    for (int i = 0; i < argc; i++) {
        int taken = tool_model_opt("bench model", &o, argc, argv, &i);
        if (taken < 0)
            return 2;
        if (taken)
            continue;
        const char *a = argv[i];
        if (!strcmp(a, "--warm")) {
            warm = 1;
            continue;
        }
        if (strcmp(a, "--fills") && strcmp(a, "--reps") && strcmp(a, "--prompt") &&
            strcmp(a, "--rounds"))
            return bad("unknown option", a);
        if (i + 1 >= argc)
            return bad("missing value after", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--fills")) {
            if ((n_fills = parse_fills(v, fills)) < 0)
                return bad("--fills takes ascending token counts like 0,512,2048, not", v);
        } else if (!strcmp(a, "--reps")) {
            if (tool_parse_int(v, 1, 100000, &reps))
                return bad("--reps takes a count >= 1, not", v);
        } else if (!strcmp(a, "--rounds")) {
            if (tool_parse_int(v, 1, 1000, &rounds))
                return bad("--rounds takes a count in 1..1000, not", v);
        } else if (tool_parse_int(v, 1, 1L << 24, &prompt)) {
            return bad("--prompt takes a count of tokens >= 1, not", v);
        }
    }
    if (!o.model_path)
        return bad("no model (usage: dattn bench model -m MODEL [--fills 0,512,2048])", NULL);
    if (o.policy != DATTN_POLICY_FULL || o.ctx)
        return bad("the cache is sized from --fills and --prompt under the full policy; leave "
                   "out --policy and --ctx", NULL);
    if (!reps)
        reps = 20;

    dattn_backend *be = NULL;
    dattn_model *model = NULL;
    dattn_session *session = NULL;
    int32_t *tokens = NULL;
    float *logits = NULL;
    double *ms = NULL;
    decode_result *round = NULL;
    int rc = 2;
    dattn_status st;
    if (tool_open_model("bench model", &o, &be, &model))
        return 2;
    dattn_model_info info;
    dattn_model_get_info(model, &info);
    if (!n_fills) {   /* 0 and every 4x from 128 up to the model's trained length */
        fills[n_fills++] = 0;
        for (long f = 128; f + reps < info.max_seq_len && n_fills < MAX_FILLS; f *= 4)
            fills[n_fills++] = f;
    }
    /* Each fill's steps add reps tokens, so a fill closer than reps to the one before starts
     * where those steps left the cache. */
    long end = 0;
    for (int f = 0; f < n_fills; f++)
        end = (fills[f] > end ? fills[f] : end) + reps;
    long n_ctx = end > prompt ? end : prompt, n_tokens = n_ctx;
    if (n_ctx > (1L << 30)) {
        bad("the fills and steps need too long a context", NULL);
        goto done;
    }
    tool_warn_ctx("bench model", &info, n_ctx);
    dattn_cache_params cp;
    tool_cache_params_at(&o, (int)n_ctx, &cp);
    tokens = malloc(sizeof(int32_t) * (size_t)n_tokens);
    logits = malloc(sizeof(float) * (size_t)info.vocab_size);
    ms = malloc(sizeof(double) * (size_t)reps);
    round = malloc(sizeof(decode_result) * (size_t)rounds);
    if (!tokens || !logits || !ms || !round) {
        fprintf(stderr, "dattn: bench model: out of memory\n");
        goto done;
    }
    for (long i = 0; i < n_tokens; i++)
        tokens[i] = random_token(info.vocab_size);
    if ((st = dattn_session_create(model, &cp, NULL, 0, &session)) != DATTN_OK) {
        tool_report("bench model", st);
        goto done;
    }

    const char *desc = dattn_backend_describe(be);
    int opencl = !strncmp(desc, "opencl", 6);
    int threads = tool_backend_threads(be);
    printf("dattn %s  cpu: %s  backend: %s\n", DATTN_GIT_REV, ceiling_cpu_name(), desc);
    printf("model: %s: ", o.model_path);
    fflush(stdout);
    tool_print_model(stdout, &info);
    double ceil_runs[3];
    ceil_runs[0] = read_ceiling(opencl, o.device, threads);

    /* Prefill: one prompt of random tokens into an empty cache, median of a few. */
    int prefill_reps = reps < 5 ? (int)reps : 5;
    if ((st = dattn_session_eval(session, tokens, (int)prompt, logits, 0)) != DATTN_OK) {
        tool_report("bench model", st);   /* the warm-up */
        goto done;
    }
    for (int r = 0; r < prefill_reps; r++) {
        dattn_session_reset(session);
        double t0 = ceiling_now_seconds();
        st = dattn_session_eval(session, tokens, (int)prompt, logits, 0);
        ms[r] = (ceiling_now_seconds() - t0) * 1e3;
        if (st != DATTN_OK) {
            tool_report("bench model", st);
            goto done;
        }
    }
    double prefill_ms = ceiling_median(ms, prefill_reps);
    ceil_runs[1] = read_ceiling(opencl, o.device, threads);

    /* Decode: fill the cache to each fill in turn, then time reps single-token steps. */
    /* A step reads every weight except the embedding rows of other tokens (when not tied: the
     * logits read the whole table otherwise), each in the format it is held in. */
    double weights_read = (double)info.weight_bytes;
    if (!info.tie_embeddings)
        weights_read -= (double)info.embed_bytes * (info.vocab_size - 1) / info.vocab_size;
    int d = info.head_dim;
    size_t elem = cp.kv_type == DATTN_KV_F32 ? 4 : cp.kv_type == DATTN_KV_F16 ? 2 : 1;
    /* k1, k2 (d each) and v (2d) per position and KV head, plus q8's three f32 scales. */
    double kv_per_pos = (double)info.n_layers * info.n_kv_heads *
                        (4.0 * d * elem + (cp.kv_type == DATTN_KV_Q8 ? 12.0 : 0.0));
    decode_result res[MAX_FILLS];
    dattn_session_reset(session);
    for (int f = 0; f < n_fills && rounds == 1; f++) {
        long have = dattn_session_n_past(session);
        if (fills[f] > have &&
            (st = dattn_session_eval(session, tokens + have, (int)(fills[f] - have), logits, 0)) !=
                DATTN_OK) {
            tool_report("bench model", st);
            goto done;
        }
        res[f].fill = dattn_session_n_past(session);
        uint64_t passes0 = dattn_backend_pool_passes(be);
        if ((st = decode_steps(session, tokens + res[f].fill, reps, warm, logits, ms)) !=
            DATTN_OK) {
            tool_report("bench model", st);
            goto done;
        }
        res[f].passes = (double)(dattn_backend_pool_passes(be) - passes0) / (double)reps;
        res[f].ms = ceiling_median(ms, (int)reps);
        res[f].bytes = weights_read + kv_per_pos * (res[f].fill + 0.5 * reps);
    }
    /* --rounds R > 1: each fill R times from a fresh cache, each round between two samples of
     * the ceiling, both taken after a pause that lets the pool's threads go to sleep (they spin
     * 5 ms, and a spinning thread would share a core with the sample's). On a shared machine the
     * memory the host leaves a guest moves from minute to minute, so a round is held against
     * the bandwidth of its own minute, and the round with the median % of floor is reported. */
    const struct timespec nap = {0, 20 * 1000 * 1000};
    for (int f = 0; f < n_fills && rounds > 1; f++) {
        for (int r = 0; r < rounds; r++) {
            dattn_session_reset(session);
            if (fills[f] > 0 &&
                (st = dattn_session_eval(session, tokens, (int)fills[f], logits, 0)) != DATTN_OK) {
                tool_report("bench model", st);
                goto done;
            }
            decode_result *rr = &round[r];
            rr->fill = fills[f];
            nanosleep(&nap, NULL);
            double before = read_ceiling(opencl, o.device, threads);
            if (warm) {   /* the sample evicted the weights: the round starts with them warm */
                dattn_session_reset(session);
                if ((st = dattn_session_eval(session, tokens, fills[f] > 0 ? (int)fills[f] : 1,
                                             logits, 0)) != DATTN_OK) {
                    tool_report("bench model", st);
                    goto done;
                }
                if (fills[f] == 0)
                    dattn_session_reset(session);
            }
            uint64_t passes0 = dattn_backend_pool_passes(be);
            if ((st = decode_steps(session, tokens + rr->fill, reps, warm, logits, ms)) !=
                DATTN_OK) {
                tool_report("bench model", st);
                goto done;
            }
            rr->passes = (double)(dattn_backend_pool_passes(be) - passes0) / (double)reps;
            rr->ms = ceiling_median(ms, (int)reps);
            rr->bytes = weights_read + kv_per_pos * (rr->fill + 0.5 * reps);
            nanosleep(&nap, NULL);
            double after = read_ceiling(opencl, o.device, threads);
            rr->gbps = 0.5 * (before + after);
            printf("fill %ld round %d: ceiling %.1f / %.1f GB/s, %.4f ms/token, %.1f%% of floor\n",
                   rr->fill, r + 1, before, after, rr->ms, pct_of_floor(rr));
        }
        /* The round ranked (R + 1) / 2 by % of floor (the lower of two middles). */
        int pick = 0;
        for (int r = 0; r < rounds; r++) {
            int below = 0, same_before = 0;
            for (int q = 0; q < rounds; q++) {
                below += pct_of_floor(&round[q]) < pct_of_floor(&round[r]);
                same_before += q < r && pct_of_floor(&round[q]) == pct_of_floor(&round[r]);
            }
            if (below + same_before == (int)(rounds - 1) / 2)
                pick = r;
        }
        res[f] = round[pick];
    }
    ceil_runs[2] = read_ceiling(opencl, o.device, threads);
    double gbps = ceiling_median(ceil_runs, 3);
    for (int f = 0; f < n_fills && rounds == 1; f++)
        res[f].gbps = gbps;

    if (opencl)
        printf("read ceiling: %.1f GB/s (median of 3 around the timed runs; the device's "
               "streaming read)\n", gbps);
    else
        printf("read ceiling: %.1f GB/s (median of 3 around the timed runs; streaming read, %d "
               "threads)\n", gbps, threads);
    printf("prefill %ld tokens: %.1f ms (median of %d), %.0f tokens/s\n", prompt, prefill_ms,
           prefill_reps, prompt / (prefill_ms * 1e-3));
    printf("decode (kv %s, median of %ld steps, %s%s):\n", tool_kv_name(cp.kv_type), reps,
           warm ? "warm caches" : "caches flushed",
           rounds > 1 ? "; of the rounds above, the one with the median % of floor, against "
                        "its own ceiling" : "");
    printf("%10s %10s %10s %12s %10s %10s %12s\n", "fill", "ms/token", "tok/s", "MB read",
           "floor ms", "% of floor", "pool passes");
    for (int f = 0; f < n_fills; f++) {
        double floor_ms = res[f].gbps > 0 ? res[f].bytes / (res[f].gbps * 1e9) * 1e3 : 0.0;
        printf("%10ld %10.3f %10.1f %12.2f %10.3f %9.1f%% %12.1f\n", res[f].fill, res[f].ms,
               1e3 / res[f].ms, res[f].bytes / 1e6, floor_ms, 100.0 * floor_ms / res[f].ms,
               res[f].passes);
    }
    printf("bench=model_prefill tokens=%ld kv=%s ms=%.2f tok_s=%.1f\n", prompt,
           tool_kv_name(cp.kv_type), prefill_ms, prompt / (prefill_ms * 1e-3));
    for (int f = 0; f < n_fills; f++) {
        double floor_ms = res[f].gbps > 0 ? res[f].bytes / (res[f].gbps * 1e9) * 1e3 : 0.0;
        printf("bench=model_decode fill=%ld kv=%s weights=%s ms=%.4f tok_s=%.1f bytes=%.0f "
               "floor_ms=%.4f ceiling_gbps=%.1f pct=%.1f pool_passes=%.1f\n", res[f].fill,
               tool_kv_name(cp.kv_type), tool_weights_name(info.weights), res[f].ms,
               1e3 / res[f].ms, res[f].bytes, floor_ms, res[f].gbps, 100.0 * floor_ms / res[f].ms,
               res[f].passes);
    }
    rc = 0;
done:
    free(tokens);
    free(logits);
    free(ms);
    free(round);
    dattn_session_free(session);
    dattn_model_free(model);
    dattn_backend_free(be);
    return rc;
}
