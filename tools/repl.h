/* `dattn run`'s state and its two halves: cmd_run.c sets up the model, a session and a sampler
 * and runs turns (prefill a prompt, then sample and decode token by token); repl.c reads lines
 * (libedit on a terminal, plain reads otherwise) and runs prompts and `:` commands. */
#ifndef DATTN_TOOLS_REPL_H
#define DATTN_TOOLS_REPL_H

#include <signal.h>
#include <stdint.h>

#include "tool.h"

/* Set by SIGINT (Ctrl-C); a turn checks it before each token and stops. */
extern volatile sig_atomic_t run_stop;

typedef struct run_state {
    tool_model_opts opts;
    dattn_backend *be;
    dattn_model *model;
    dattn_model_info info;
    dattn_session *session;
    dattn_cache_params cp;     /* the session's */
    dattn_sampler *sampler;
    dattn_sampler_params sp;
    long n_answer;             /* tokens generated per prompt */
    float *logits;             /* [vocab]: after the last eval */
    int32_t *ids;              /* [ids_cap]: a prompt's tokens */
    int ids_cap;
    /* The last turn, for :stats and the stats line. */
    int prompt_tokens, gen_tokens, n_evals;
    double prefill_s, decode_s;
} run_state;

/* The session's policy and arena, e.g. for messages. */
void run_describe_cache(const run_state *r, char *buf, size_t n);
/* A session for the options (n_ctx and policy); on success it replaces r's session and r->opts,
 * on failure (said) r is unchanged. */
int run_new_session(run_state *r, const tool_model_opts *o);
/* Feeds text and generates n_gen tokens, streamed to stdout as they come. eval_last: run the
 * last sampled token through the model too, so the next turn continues after it. 0 ok,
 * 1 generation stopped early (Ctrl-C or a full cache; said), -1 a failure (said). */
int run_turn(run_state *r, const char *text, size_t len, long n_gen, int eval_last);
/* Parses a sampling setting (temp, top_k, top_p, repeat_penalty, repeat_last_n, seed, n) into
 * sp / n_answer: 1 done, 0 not a sampling key, -1 a bad value (said, prefixed by who). */
int run_parse_sampling(const char *who, const char *key, const char *value,
                       dattn_sampler_params *sp, long *n_answer);

/* The interactive loop (terminal) or the scripted one (anything else) over stdin. Returns the
 * exit status. */
int repl_main(run_state *r, int terminal);

#endif
