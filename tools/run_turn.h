/* `dattn run`'s state and its turns, shared by the one-prompt path (cmd_run.c) and the REPL
 * (repl.c): the model, a session and a sampler; a turn prefills a prompt, then samples, prints
 * and decodes token by token. */
#ifndef DATTN_TOOLS_RUN_TURN_H
#define DATTN_TOOLS_RUN_TURN_H

#include <signal.h>
#include <stdint.h>

#include "tool.h"

/* Set by SIGINT (Ctrl-C, cmd_run.c's handler); a turn checks it before each token and stops. */
extern volatile sig_atomic_t run_stop;

typedef struct run_state {
    tool_model_opts opts;
    dattn_backend *be;
    dattn_model *model;
    dattn_model_info info;
    dattn_session *session;
    dattn_cache_params cp;     /* the session's */
    int said_streaming;        /* the session passed its context and that was said */
    dattn_sampler *sampler;
    dattn_sampler_params sp;
    long n_answer;             /* tokens generated per prompt */
    float *logits;             /* [vocab]: after the last eval */
    int32_t *ids;              /* [ids_cap]: a prompt's tokens */
    int ids_cap;
    /* The last turn, for :stats and the stats line. */
    int prompt_tokens, gen_tokens, n_evals;
    int ended;                 /* the model ended the answer with an end-of-text token, */
    int32_t end_token;         /* this one */
    double prefill_s, decode_s;
} run_state;

/* The session's policy and arena, e.g. for messages. */
void run_describe_cache(const run_state *r, char *buf, size_t n);
/* A session for the options (n_ctx and policy); on success it replaces r's session and r->opts,
 * on failure (said) r is unchanged. */
int run_new_session(run_state *r, const tool_model_opts *o);
/* Feeds text (after the model's beginning-of-text token when the session is empty) and
 * generates up to n_gen tokens, streamed to stdout as they come, whole UTF-8 characters at a
 * time. An end-of-text token ends the answer (not printed; r->ended, see run_say_end).
 * eval_last: run the last sampled token through the model too, so the next turn continues after
 * it. The first time a sink+window session's stream passes its context, one line on stderr says
 * so. 0 ok, 1 generation stopped early (Ctrl-C: run_stop is set; or a full cache under the full
 * policy; said), -1 a failure (said). */
int run_turn(run_state *r, const char *text, size_t len, long n_gen, int eval_last);
/* When the last turn ended at an end-of-text token, one line on stderr says so (after the
 * caller ended the answer's line). */
void run_say_end(const run_state *r);
/* Parses a sampling setting (temp, top_k, top_p, repeat_penalty, repeat_last_n, seed, n) into
 * sp / n_answer: 1 done, 0 not a sampling key, -1 a bad value (said, prefixed by who). */
int run_parse_sampling(const char *who, const char *key, const char *value,
                       dattn_sampler_params *sp, long *n_answer);

#endif
