/* dattn run: generate text with a whole model. With -p, one prompt and exit; without, the REPL
 * of repl.c. This file holds what both share: options, the session and sampler, and a turn
 * (prefill the prompt, then sample, print and decode one token at a time). */
#define _POSIX_C_SOURCE 200809L   /* getline, sigaction, isatty */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ceiling.h"
#include "repl.h"

volatile sig_atomic_t run_stop;
static pthread_t main_thread;

static void on_sigint(int sig)
{
    run_stop = 1;
    /* The read at the prompt must see EINTR, and only the thread that takes the signal does:
     * the library's threads block SIGINT (see cmd_run), but pass it on from any that does not. */
    if (!pthread_equal(pthread_self(), main_thread))
        pthread_kill(main_thread, sig);
}

/* No SA_RESTART: a read waiting at the prompt returns EINTR, so Ctrl-C there drops the line. */
static void catch_sigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    main_thread = pthread_self();
    sigaction(SIGINT, &sa, NULL);
}

static int bad(const char *msg, const char *arg)
{
    fprintf(stderr, "dattn: run: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

int run_parse_sampling(const char *who, const char *key, const char *value,
                       dattn_sampler_params *sp, long *n_answer)
{
    double x;
    long i;
    const char *range = NULL;
    if (!strcmp(key, "temp")) {
        if (tool_parse_double(value, 0.0, 1e6, &x))
            range = "a number >= 0 (0: greedy)";
        else
            sp->temperature = (float)x;
    } else if (!strcmp(key, "top_k")) {
        if (tool_parse_int(value, 0, 1L << 30, &i))
            range = "a count >= 0 (0: all tokens)";
        else
            sp->top_k = (int)i;
    } else if (!strcmp(key, "top_p")) {
        if (tool_parse_double(value, 0.0, 1.0, &x) || x <= 0.0)
            range = "a number in (0, 1] (1: all)";
        else
            sp->top_p = (float)x;
    } else if (!strcmp(key, "repeat_penalty")) {
        if (tool_parse_double(value, 0.0, 1e6, &x) || x <= 0.0)
            range = "a number > 0 (1: off)";
        else
            sp->repeat_penalty = (float)x;
    } else if (!strcmp(key, "repeat_last_n")) {
        if (tool_parse_int(value, 0, 1L << 20, &i))
            range = "a count of tokens >= 0";
        else
            sp->repeat_last_n = (int)i;
    } else if (!strcmp(key, "seed")) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-')
            range = "a non-negative integer";
        else
            sp->seed = (uint64_t)s;
    } else if (!strcmp(key, "n")) {
        if (tool_parse_int(value, 0, 1L << 30, &i))
            range = "a count of tokens >= 0";
        else
            *n_answer = i;
    } else {
        return 0;
    }
    if (range) {
        fprintf(stderr, "dattn: %s%s takes %s, not '%s'\n", who, key, range, value);
        return -1;
    }
    return 1;
}

void run_describe_cache(const run_state *r, char *buf, size_t n)
{
    char pol[64], ab[32];
    tool_policy_name(&r->cp, pol, sizeof pol);
    tool_format_bytes(dattn_session_arena_size(r->session), ab, sizeof ab);
    snprintf(buf, n, "n_ctx=%d %s kv=%s arena %s", r->cp.n_ctx, pol, tool_kv_name(r->cp.kv_type),
             ab);
}

int run_new_session(run_state *r, const tool_model_opts *o)
{
    dattn_cache_params cp;
    if (tool_cache_params("run", o, &r->info, &cp))
        return -1;
    dattn_session *s = NULL;
    dattn_status st = dattn_session_create(r->model, &cp, NULL, 0, &s);
    if (st != DATTN_OK) {
        tool_report("run", st);
        return -1;
    }
    dattn_session_free(r->session);
    r->session = s;
    r->cp = cp;
    r->opts = *o;
    return 0;
}

/* Tokens of text into r->ids, growing it when the tokenizer asks for more; -1 on failure. */
static int tokenize(run_state *r, const char *text, size_t len, int *n)
{
    for (;;) {
        dattn_status st = dattn_tokenize(r->model, text, len, r->ids, r->ids_cap, n);
        if (st == DATTN_OK)
            return 0;
        if (*n <= r->ids_cap || st != DATTN_E_INVALID_ARG) {
            tool_report("run", st);
            return -1;
        }
        int32_t *grown = realloc(r->ids, sizeof(int32_t) * (size_t)*n);
        if (!grown) {
            fprintf(stderr, "dattn: run: out of memory for a prompt of %d tokens\n", *n);
            return -1;
        }
        r->ids = grown;
        r->ids_cap = *n;
    }
}

static void say_cache_full(const run_state *r)
{
    int W = r->cp.n_ctx > 4 ? r->cp.n_ctx - 4 : r->cp.n_ctx;
    fprintf(stderr, "dattn: the cache is full (%d of %d positions, full policy): :reset starts "
                    "over, or a sink policy streams without end (:set policy sink:4,window:%d, "
                    "or --policy)\n", dattn_session_n_past(r->session), r->cp.n_ctx, W);
}

int run_turn(run_state *r, const char *text, size_t len, long n_gen, int eval_last)
{
    int n = 0;
    r->prompt_tokens = r->gen_tokens = r->n_evals = 0;
    r->prefill_s = r->decode_s = 0.0;
    if (tokenize(r, text, len, &n))
        return -1;
    if (n == 0) {
        fprintf(stderr, "dattn: run: the prompt has no tokens\n");
        return -1;
    }
    double t0 = ceiling_now_seconds();
    dattn_status st = dattn_session_eval(r->session, r->ids, n, r->logits, 0);
    r->prefill_s = ceiling_now_seconds() - t0;
    if (st != DATTN_OK) {
        tool_report("run", st);
        if (st == DATTN_E_CACHE_FULL && dattn_session_n_past(r->session) >= r->cp.n_ctx)
            say_cache_full(r);
        return -1;
    }
    r->prompt_tokens = n;
    for (int i = 0; i < n; i++)
        dattn_sampler_accept(r->sampler, r->ids[i]);
    char bytes[256];
    for (long i = 0; i < n_gen; i++) {
        if (run_stop) {
            fflush(stdout);
            fprintf(stderr, "\ndattn: stopped (Ctrl-C)\n");
            return 1;
        }
        int32_t tok;
        double t1 = ceiling_now_seconds();
        st = dattn_sample(r->sampler, r->logits, &tok);
        size_t nb = 0;
        if (st == DATTN_OK)
            st = dattn_token_bytes(r->model, tok, bytes, sizeof bytes, &nb);
        r->decode_s += ceiling_now_seconds() - t1;
        if (st != DATTN_OK) {
            tool_report("run", st);
            return -1;
        }
        /* Raw bytes: a byte tokenizer may split a UTF-8 sequence over tokens. */
        fwrite(bytes, 1, nb, stdout);
        fflush(stdout);
        r->gen_tokens++;
        if (i == n_gen - 1 && !eval_last)
            break;
        t1 = ceiling_now_seconds();
        st = dattn_session_eval(r->session, &tok, 1, r->logits, 0);
        r->decode_s += ceiling_now_seconds() - t1;
        if (st == DATTN_E_CACHE_FULL) {
            fflush(stdout);
            fputc('\n', stderr);
            say_cache_full(r);
            return 1;
        }
        if (st != DATTN_OK) {
            fflush(stdout);
            fputc('\n', stderr);
            tool_report("run", st);
            return -1;
        }
        r->n_evals++;
    }
    return 0;
}

static void print_stats_line(const run_state *r)
{
    double pre = r->prefill_s > 0 ? r->prompt_tokens / r->prefill_s : 0.0;
    double dec = r->decode_s > 0 ? r->n_evals / r->decode_s : 0.0;
    char pol[64];
    tool_policy_name(&r->cp, pol, sizeof pol);
    fprintf(stderr, "dattn: prompt %d tokens %.1f tok/s, generated %d tokens, decode %.1f tok/s; "
                    "n_past=%d n_ctx=%d policy=%s kv=%s arena_bytes=%zu; %s\n",
            r->prompt_tokens, pre, r->gen_tokens, dec, dattn_session_n_past(r->session),
            r->cp.n_ctx, pol, tool_kv_name(r->cp.kv_type), dattn_session_arena_size(r->session),
            dattn_backend_describe(r->be));
}

static void usage_hint(void)
{
    fprintf(stderr, "usage: dattn run -m MODEL [-p PROMPT] [-n N] [--backend cpu|opencl|auto] "
                    "[--device SEL] [--threads N] [--ctx N] [--kv f32|f16|q8] "
                    "[--policy full|sink:S,window:W] [--batch N] [--seed N] [--temp X] "
                    "[--top-k K] [--top-p P] [--repeat-penalty X] [--repeat-last-n N]\n");
}

int cmd_run(int argc, char **argv)
{
    static const struct { const char *flag, *key; } sampling[] = {
        {"-n", "n"}, {"--seed", "seed"}, {"--temp", "temp"}, {"--top-k", "top_k"},
        {"--top-p", "top_p"}, {"--repeat-penalty", "repeat_penalty"},
        {"--repeat-last-n", "repeat_last_n"},
    };
    run_state r;
    memset(&r, 0, sizeof r);
    tool_model_opts_init(&r.opts, DATTN_KV_F16);
    r.sp = dattn_sampler_default_params();
    r.n_answer = 128;
    const char *prompt = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int taken = tool_model_opt("run", &r.opts, argc, argv, &i);
        if (taken < 0)
            return 2;
        if (taken)
            continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage_hint();
            return 0;
        }
        const char *key = NULL;
        for (size_t k = 0; k < sizeof sampling / sizeof *sampling; k++)
            if (!strcmp(a, sampling[k].flag))
                key = sampling[k].key;
        if (!key && strcmp(a, "-p") && strcmp(a, "--prompt"))
            return bad("unknown option", a);
        if (i + 1 >= argc)
            return bad("missing value after", a);
        const char *v = argv[++i];
        if (!key)
            prompt = v;
        else if (run_parse_sampling("run: ", key, v, &r.sp, &r.n_answer) < 0)
            return 2;
    }
    if (!r.opts.model_path) {
        usage_hint();
        return bad("no model (give -m MODEL.safetensors)", NULL);
    }

    int rc = 2;
    dattn_status st;
    /* Threads the library starts (the CPU backend's workers) inherit a mask without SIGINT, so
     * Ctrl-C reaches this thread, the one that reads and generates. */
    sigset_t sigint, old_mask;
    sigemptyset(&sigint);
    sigaddset(&sigint, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigint, &old_mask);
    if (tool_open_model("run", &r.opts, &r.be, &r.model))
        return 2;
    dattn_model_get_info(r.model, &r.info);
    if (run_new_session(&r, &r.opts))
        goto done;
    if ((st = dattn_sampler_create(&r.sp, r.info.vocab_size, &r.sampler)) != DATTN_OK) {
        tool_report("run", st);
        goto done;
    }
    r.logits = malloc(sizeof(float) * (size_t)r.info.vocab_size);
    r.ids_cap = 4096;
    r.ids = malloc(sizeof(int32_t) * (size_t)r.ids_cap);
    if (!r.logits || !r.ids) {
        fprintf(stderr, "dattn: run: out of memory\n");
        goto done;
    }
    catch_sigint();
    pthread_sigmask(SIG_SETMASK, &old_mask, NULL);
    if (prompt) {
        int t = run_turn(&r, prompt, strlen(prompt), r.n_answer, 0);
        if (isatty(STDOUT_FILENO) && t >= 0)
            fputc('\n', stdout);
        fflush(stdout);
        if (t >= 0)
            print_stats_line(&r);
        rc = t < 0 ? 2 : run_stop ? 130 : 0;
    } else {
        rc = repl_main(&r, isatty(STDIN_FILENO));
    }
done:
    free(r.logits);
    free(r.ids);
    dattn_sampler_free(r.sampler);
    dattn_session_free(r.session);
    dattn_model_free(r.model);
    dattn_backend_free(r.be);
    return rc;
}
