/* A turn of `dattn run` (run_turn.h): tokenize a prompt, prefill it, then sample, print and
 * decode one token at a time until n tokens or the model's end-of-text token; and the session
 * and sampling settings turns run under. */
#define _POSIX_C_SOURCE 200809L   /* isatty */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ceiling.h"
#include "run_turn.h"
#include "utf8_stream.h"

volatile sig_atomic_t run_stop;

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
        if (errno || end == value || *end || strchr(value, '-'))   /* strtoull takes " -5" */
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
    r->said_streaming = 0;
    return 0;
}

/* Tokens of text into r->ids, growing it when the tokenizer asks for more; with add_special the
 * model's beginning-of-text token(s) around it, as its tokenizer files say. -1 on failure. */
static int tokenize(run_state *r, const char *text, size_t len, int add_special, int *n)
{
    const dattn_tokenizer *tok = dattn_model_tokenizer(r->model);
    for (;;) {
        dattn_status st = dattn_tokenizer_encode(tok, text, len, add_special, r->ids, r->ids_cap,
                                                 n);
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

/* Once per session, when a sink+window stream first holds more tokens than its context: from
 * here on the oldest tokens past the sinks are dropped. */
static void say_streaming(run_state *r, int mid_line)
{
    if (r->said_streaming || r->cp.policy != DATTN_POLICY_SINK_WINDOW ||
        dattn_session_n_past(r->session) <= r->cp.n_ctx)
        return;
    r->said_streaming = 1;
    char pol[64];
    tool_policy_name(&r->cp, pol, sizeof pol);
    fflush(stdout);
    if (mid_line && isatty(STDOUT_FILENO))
        fputc('\n', stderr);
    fprintf(stderr, "dattn: the stream passed the context of %d tokens: policy %s goes on with "
                    "the first %d and the last %d (--policy full stops instead)\n",
            r->cp.n_ctx, pol, r->cp.n_sink, r->cp.n_ctx - r->cp.n_sink);
}

void run_say_end(const run_state *r)
{
    if (!r->ended)
        return;
    char name[64];
    size_t nb = 0;
    if (dattn_token_bytes(r->model, r->end_token, name, sizeof name - 1, &nb) != DATTN_OK)
        nb = 0;
    name[nb] = '\0';
    fflush(stdout);
    fprintf(stderr, "dattn: end of text: the model ended its answer with token %d%s%s%s\n",
            (int)r->end_token, nb ? " '" : "", name, nb ? "'" : "");
}

int run_turn(run_state *r, const char *text, size_t len, long n_gen, int eval_last)
{
    int n = 0;
    r->prompt_tokens = r->gen_tokens = r->n_evals = 0;
    r->prefill_s = r->decode_s = 0.0;
    r->ended = 0;
    /* A conversation starts with the model's beginning-of-text token(s), if it has any. */
    if (tokenize(r, text, len, dattn_session_n_past(r->session) == 0, &n))
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
    say_streaming(r, 0);
    for (int i = 0; i < n; i++)
        dattn_sampler_accept(r->sampler, r->ids[i]);
    char bytes[256];
    utf8_stream out;
    utf8_stream_init(&out, stdout);
    for (long i = 0; i < n_gen; i++) {
        if (run_stop) {
            utf8_stream_flush(&out);
            fflush(stdout);
            fprintf(stderr, "\ndattn: stopped (Ctrl-C)\n");
            return 1;
        }
        int32_t tok;
        double t1 = ceiling_now_seconds();
        st = dattn_sample(r->sampler, r->logits, &tok);
        size_t nb = 0;
        int eos = st == DATTN_OK && dattn_token_is_eos(r->model, tok);
        if (st == DATTN_OK && !eos)
            st = dattn_token_bytes(r->model, tok, bytes, sizeof bytes, &nb);
        r->decode_s += ceiling_now_seconds() - t1;
        if (st != DATTN_OK) {
            utf8_stream_flush(&out);
            tool_report("run", st);
            return -1;
        }
        r->gen_tokens++;
        if (eos) {
            utf8_stream_flush(&out);
            r->ended = 1;
            r->end_token = tok;
        } else {
            /* A token may end inside a UTF-8 character: that waits for the next one. */
            utf8_stream_put(&out, bytes, nb);
            if (out.n_held == 0)
                fflush(stdout);
        }
        if ((i == n_gen - 1 || eos) && !eval_last)
            break;
        t1 = ceiling_now_seconds();
        st = dattn_session_eval(r->session, &tok, 1, r->logits, 0);
        r->decode_s += ceiling_now_seconds() - t1;
        if (st == DATTN_E_CACHE_FULL) {
            utf8_stream_flush(&out);
            fflush(stdout);
            fputc('\n', stderr);
            say_cache_full(r);
            return 1;
        }
        if (st != DATTN_OK) {
            utf8_stream_flush(&out);
            fflush(stdout);
            fputc('\n', stderr);
            tool_report("run", st);
            return -1;
        }
        r->n_evals++;
        say_streaming(r, 1);
        if (eos)
            break;
    }
    utf8_stream_flush(&out);
    fflush(stdout);
    return 0;
}
