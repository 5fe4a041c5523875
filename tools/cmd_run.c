/* dattn run: generate text with a whole model. With -p, one prompt and exit; without, the REPL
 * of repl.c. This file parses the options, sets up the model, session and sampler, and catches
 * Ctrl-C; the turns themselves are run_turn.c's. */
#define _POSIX_C_SOURCE 200809L   /* sigaction, pthread_sigmask, isatty */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "repl.h"
#include "run_turn.h"

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
                    "[--top-k K] [--top-p P] [--repeat-penalty X] [--repeat-last-n N] "
                    "[--weights f16|bf16|q8_0|q4_0|f32]\n"
                    "the policy is sink:%d,window:CTX-%d unless given: the stream goes on past "
                    "the context (--policy full stops there)\n", TOOL_STREAM_SINKS,
            TOOL_STREAM_SINKS);
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
    tool_model_opts_stream(&r.opts);
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
        if (t >= 0) {
            run_say_end(&r);
            print_stats_line(&r);
        }
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
