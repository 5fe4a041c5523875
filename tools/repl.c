/* The REPL of `dattn run`: each line is a prompt appended to the conversation (the session keeps
 * the whole history) whose continuation streams as it is generated; lines that start with ':'
 * are commands. On a terminal lines come through libedit when the tool has it (editing, history
 * in ~/.dattn_history), else through plain reads after a "> " prompt; anything else is read line
 * by line, so the REPL can be scripted, and then a failed line makes the exit status 2. Ctrl-C
 * stops a generation (cmd_run.c's handler sets run_stop) or drops the line being typed. */
#define _POSIX_C_SOURCE 200809L   /* getline, sigaction, isatty */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include "repl.h"

#ifdef DATTN_HAVE_LIBEDIT
#include <histedit.h>
#endif

/* ---- reading lines ------------------------------------------------------------------------ */

typedef struct line_input {
    int terminal;
    char *buf;                 /* getline's buffer */
    size_t cap;
#ifdef DATTN_HAVE_LIBEDIT
    EditLine *el;
    History *hist;
    char hist_path[4096];      /* "" when $HOME is not set */
#endif
} line_input;

enum { LINE_EOF = 0, LINE_OK = 1, LINE_CANCELLED = 2 };

#ifdef DATTN_HAVE_LIBEDIT
static char *prompt_text(EditLine *el)
{
    (void)el;
    return "> ";
}
#endif

static void input_open(line_input *in, int terminal)
{
    memset(in, 0, sizeof *in);
    in->terminal = terminal;
#ifdef DATTN_HAVE_LIBEDIT
    if (!terminal)
        return;
    in->el = el_init("dattn", stdin, stdout, stderr);
    in->hist = history_init();
    if (!in->el || !in->hist) {   /* plain reads still work */
        if (in->el)
            el_end(in->el);
        if (in->hist)
            history_end(in->hist);
        in->el = NULL;
        in->hist = NULL;
        return;
    }
    HistEvent ev;
    history(in->hist, &ev, H_SETSIZE, 1000);
    history(in->hist, &ev, H_SETUNIQUE, 1);
    el_set(in->el, EL_PROMPT, prompt_text);
    el_set(in->el, EL_EDITOR, "emacs");
    el_set(in->el, EL_HIST, history, in->hist);
    /* No EL_SIGNAL: libedit's handlers would run on whichever thread takes the signal; ours
     * (cmd_run.c) only sets a flag, and the EINTR it causes drops the line being typed. */
    el_set(in->el, EL_SIGNAL, 0);
    el_source(in->el, NULL);        /* the user's ~/.editrc */
    const char *home = getenv("HOME");
    if (home && *home) {
        snprintf(in->hist_path, sizeof in->hist_path, "%s/.dattn_history", home);
        history(in->hist, &ev, H_LOAD, in->hist_path);
    }
#endif
}

static void input_close(line_input *in)
{
#ifdef DATTN_HAVE_LIBEDIT
    if (in->hist) {
        HistEvent ev;
        if (in->hist_path[0])
            history(in->hist, &ev, H_SAVE, in->hist_path);
        history_end(in->hist);
    }
    if (in->el)
        el_end(in->el);
#endif
    free(in->buf);
}

/* Waits until a line can be read from the terminal (canonical mode: a whole line) or Ctrl-C
 * came; 1 for Ctrl-C. SIGINT stays blocked except inside pselect, so one that arrives between the
 * prompt and the wait is not lost (a plain getline would then sit in read() until Enter). */
static int wait_terminal_line(void)
{
    sigset_t sigint, old;
    sigemptyset(&sigint);
    sigaddset(&sigint, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, &sigint, &old) != 0)
        return run_stop != 0;
    int stop = run_stop != 0;
    while (!stop) {
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(STDIN_FILENO, &fds);
        int r = pselect(STDIN_FILENO + 1, &fds, NULL, NULL, NULL, &old);
        stop = run_stop != 0;
        if (r > 0 || (r < 0 && errno != EINTR))
            break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return stop;
}

/* The next line without its line end in *line (valid until the next call). */
static int input_read(line_input *in, const char **line, size_t *len)
{
    const char *s = NULL;
    size_t n = 0;
#ifdef DATTN_HAVE_LIBEDIT
    if (in->el) {
        int count = 0;
        errno = 0;
        s = el_gets(in->el, &count);
        if (!s || count <= 0)   /* -1 and EINTR: Ctrl-C; 0: Ctrl-D on an empty line */
            return count < 0 && (errno == EINTR || run_stop) ? LINE_CANCELLED : LINE_EOF;
        n = (size_t)count;
    }
#endif
    if (!s) {
        if (in->terminal) {
            fputs("> ", stdout);
            fflush(stdout);
            if (wait_terminal_line())
                return LINE_CANCELLED;
        }
        errno = 0;
        ssize_t got = getline(&in->buf, &in->cap, stdin);
        if (got < 0) {
            if (errno == EINTR || run_stop) {
                clearerr(stdin);
                return LINE_CANCELLED;
            }
            return LINE_EOF;
        }
        s = in->buf;
        n = (size_t)got;
    }
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        n--;
#ifdef DATTN_HAVE_LIBEDIT
    if (in->hist && n > 0) {
        /* libedit's line ends in '\n' and is not NUL-terminated before it: enter a copy. */
        char *copy = malloc(n + 1);
        if (copy) {
            memcpy(copy, s, n);
            copy[n] = '\0';
            HistEvent ev;
            history(in->hist, &ev, H_ENTER, copy);
            free(copy);
        }
    }
#endif
    *line = s;
    *len = n;
    return LINE_OK;
}

/* ---- commands ----------------------------------------------------------------------------- */

static void print_help(void)
{
    printf("Type text: the model continues it (the session keeps the whole conversation).\n"
           "Ctrl-C stops a generation, Ctrl-D (end of input) quits. Commands:\n"
           "  :help                 this list\n"
           "  :reset                empty the cache: start a new conversation\n"
           "  :stats                speed of the last turn, cache fill, arena, backend, model\n"
           "  :set                  show the settings\n"
           "  :set KEY VALUE        temp, top_k, top_p, repeat_penalty, repeat_last_n, seed,\n"
           "                        n (tokens per answer); policy (full | sink:S,window:W),\n"
           "                        ctx, kv (f32|f16|q8): these three start a new session\n"
           "  :save FILE            save the session (cache and position) to FILE\n"
           "  :load FILE            load a session saved for this model and settings\n"
           "  :quit                 leave (also :q, :exit)\n"
           "  ::TEXT                a prompt that starts with ':'\n");
}

static void print_settings(const run_state *r)
{
    char pol[64];
    tool_policy_name(&r->cp, pol, sizeof pol);
    printf("temp=%g top_k=%d top_p=%g repeat_penalty=%g repeat_last_n=%d seed=%llu n=%ld "
           "policy=%s ctx=%d kv=%s\n",
           (double)r->sp.temperature, r->sp.top_k, (double)r->sp.top_p,
           (double)r->sp.repeat_penalty, r->sp.repeat_last_n, (unsigned long long)r->sp.seed,
           r->n_answer, pol, r->cp.n_ctx, tool_kv_name(r->cp.kv_type));
}

static void print_stats(const run_state *r)
{
    double pre = r->prefill_s > 0 ? r->prompt_tokens / r->prefill_s : 0.0;
    double dec = r->decode_s > 0 ? r->n_evals / r->decode_s : 0.0;
    printf("last turn: prefill %d tokens in %.1f ms (%.1f tok/s); generated %d tokens, decode "
           "%.1f tok/s (%d steps in %.1f ms)\n",
           r->prompt_tokens, r->prefill_s * 1e3, pre, r->gen_tokens, dec, r->n_evals,
           r->decode_s * 1e3);
    int n_past = dattn_session_n_past(r->session);
    int held = n_past < r->cp.n_ctx ? n_past : r->cp.n_ctx;
    char pol[64], ab[32];
    tool_policy_name(&r->cp, pol, sizeof pol);
    size_t arena = dattn_session_arena_size(r->session);
    tool_format_bytes(arena, ab, sizeof ab);
    printf("cache: %d/%d filled (n_past=%d), policy %s, kv %s; arena_bytes=%zu (%s)\n", held,
           r->cp.n_ctx, n_past, pol, tool_kv_name(r->cp.kv_type), arena, ab);
    printf("backend: %s; device: %s\n", dattn_backend_describe(r->be),
           r->opts.device ? r->opts.device : "default");
    printf("model: %s: ", r->opts.model_path);
    fflush(stdout);
    tool_print_model(stdout, &r->info);
    printf("sampling: ");
    print_settings(r);
}

/* :set policy|ctx|kv: a new session with the changed options (said first). 0 ok, -1 failed
 * (said). */
static int set_session_option(run_state *r, const char *key, const char *value)
{
    tool_model_opts o = r->opts;
    long ctx;
    if (!strcmp(key, "policy")) {
        if (tool_parse_policy(value, &o.policy, &o.n_sink, &o.window)) {
            fprintf(stderr, "dattn: policy takes full, sink:S or sink:S,window:W (S + W at most "
                            "2^30), not '%s'\n", value);
            return -1;
        }
        o.fit_sinks = 0;
        if (o.window)
            o.ctx = 0;   /* the window says the context */
    } else if (!strcmp(key, "ctx")) {
        if (tool_parse_int(value, 1, 1L << 30, &ctx)) {
            fprintf(stderr, "dattn: ctx takes a count of tokens >= 1, not '%s'\n", value);
            return -1;
        }
        o.ctx = ctx;
        if (o.policy == DATTN_POLICY_SINK_WINDOW && o.window) {
            if (ctx <= o.n_sink) {
                fprintf(stderr, "dattn: ctx %ld leaves no window after %ld sink tokens\n", ctx,
                        o.n_sink);
                return -1;
            }
            o.window = ctx - o.n_sink;
        }
    } else if (tool_parse_kv(value, &o.kv)) {
        fprintf(stderr, "dattn: kv takes f32, f16 or q8, not '%s'\n", value);
        return -1;
    }
    printf("%s %s needs a new session: starting one (the conversation so far is dropped)\n", key,
           value);
    fflush(stdout);
    if (run_new_session(r, &o))
        return -1;
    dattn_sampler_reset(r->sampler);
    char desc[160];
    run_describe_cache(r, desc, sizeof desc);
    printf("new session: %s\n", desc);
    return 0;
}

/* :set [KEY VALUE]: 0 ok, -1 failed (said). */
static int set_command(run_state *r, char *args)
{
    char *key = strtok(args, " \t"), *value = strtok(NULL, " \t"), *extra = strtok(NULL, " \t");
    if (!key) {
        print_settings(r);
        return 0;
    }
    if (!value || extra) {
        fprintf(stderr, "dattn: :set takes KEY VALUE (:help lists the keys)\n");
        return -1;
    }
    if (!strcmp(key, "policy") || !strcmp(key, "ctx") || !strcmp(key, "kv"))
        return set_session_option(r, key, value);
    dattn_sampler_params sp = r->sp;
    long n_answer = r->n_answer;
    int got = run_parse_sampling("", key, value, &sp, &n_answer);
    if (got == 0)
        fprintf(stderr, "dattn: unknown setting '%s' (:help lists them)\n", key);
    if (got <= 0)
        return -1;
    dattn_status st = dattn_sampler_set_params(r->sampler, &sp);
    if (st != DATTN_OK) {
        tool_report(":set", st);
        return -1;
    }
    r->sp = sp;
    r->n_answer = n_answer;
    printf("%s = %s\n", key, value);
    return 0;
}

/* The rest of a command line: its argument with the spaces around it trimmed. */
static char *argument(char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

enum { COMMAND_FAILED = -1, COMMAND_OK = 0, COMMAND_QUIT = 1 };

/* One ':' command (NUL-terminated, without the ':'); a failure is said. */
static int command(run_state *r, char *line)
{
    size_t name_len = strcspn(line, " \t");
    char *args = argument(line + name_len);
    line[name_len] = '\0';
    const char *name = line;
    dattn_status st = DATTN_OK;
    int rc = COMMAND_OK;
    if (!strcmp(name, "quit") || !strcmp(name, "q") || !strcmp(name, "exit"))
        return COMMAND_QUIT;
    if (!strcmp(name, "help") || !strcmp(name, "h") || !strcmp(name, "?")) {
        print_help();
    } else if (!strcmp(name, "reset")) {
        if ((st = dattn_session_reset(r->session)) != DATTN_OK) {
            tool_report(":reset", st);
        } else {
            dattn_sampler_reset(r->sampler);
            printf("session reset: the cache is empty\n");
        }
    } else if (!strcmp(name, "stats")) {
        print_stats(r);
    } else if (!strcmp(name, "set")) {
        rc = set_command(r, args);
    } else if (!strcmp(name, "save") || !strcmp(name, "load")) {
        if (!*args) {
            fprintf(stderr, "dattn: :%s takes a file name\n", name);
            rc = COMMAND_FAILED;
        } else if (name[0] == 's') {
            if ((st = dattn_session_save(r->session, args)) != DATTN_OK)
                tool_report(":save", st);
            else
                printf("saved %d tokens to %s\n", dattn_session_n_past(r->session), args);
        } else {
            if ((st = dattn_session_load(r->session, args)) != DATTN_OK)
                tool_report(":load", st);
            else
                printf("loaded %s: n_past=%d\n", args, dattn_session_n_past(r->session));
        }
    } else {
        fprintf(stderr, "dattn: unknown command ':%s' (:help lists the commands)\n", name);
        rc = COMMAND_FAILED;
    }
    fflush(stdout);
    return st != DATTN_OK ? COMMAND_FAILED : rc;
}

/* ---- the loop ----------------------------------------------------------------------------- */

int repl_main(run_state *r, int terminal)
{
    line_input in;
    input_open(&in, terminal);
    if (terminal) {
        char desc[160];
        run_describe_cache(r, desc, sizeof desc);
        fprintf(stderr, "dattn: %s on %s, %s\n", r->opts.model_path, dattn_backend_describe(r->be),
                desc);
        fprintf(stderr, "dattn: type text and the model continues it; :help for commands, "
                        "Ctrl-D to quit\n");
    }
    char *text = NULL;   /* a prompt with the separator before it */
    size_t text_cap = 0;
    int failed = 0;      /* a prompt or a command failed (or a full cache cut an answer short) */
    for (;;) {
        const char *line;
        size_t len;
        run_stop = 0;
        int got = input_read(&in, &line, &len);
        if (got == LINE_EOF) {
            if (terminal)   /* leave the shell's prompt a line of its own */
                fputc('\n', stdout);
            break;
        }
        if (got == LINE_CANCELLED) {
            fputc('\n', stdout);
            fflush(stdout);
            continue;
        }
        if (len == 0)
            continue;
        if (len + 2 > text_cap) {
            char *grown = realloc(text, len + 2);
            if (!grown) {
                fprintf(stderr, "dattn: out of memory for a line of %zu bytes\n", len);
                failed = 1;
                continue;
            }
            text = grown;
            text_cap = len + 2;
        }
        if (line[0] == ':' && (len < 2 || line[1] != ':')) {
            memcpy(text, line + 1, len - 1);
            text[len - 1] = '\0';
            int c = command(r, text);
            if (c == COMMAND_QUIT)
                break;
            failed |= c == COMMAND_FAILED;
            continue;
        }
        /* Turns after the first start on a new line of the conversation. */
        size_t skip = line[0] == ':', n = 0;
        if (dattn_session_n_past(r->session) > 0)
            text[n++] = '\n';
        memcpy(text + n, line + skip, len - skip);
        n += len - skip;
        int t = run_turn(r, text, n, r->n_answer, 1);
        if (t >= 0) {
            fputc('\n', stdout);
            fflush(stdout);
            run_say_end(r);
        }
        failed |= t < 0 || (t > 0 && !run_stop);   /* Ctrl-C is the user's choice, not a fault */
    }
    free(text);
    input_close(&in);
    /* At a terminal each failure was seen as it happened; a script learns of them here. */
    return failed && !terminal ? 2 : 0;
}
