/* Option parsing and error reporting shared by the dattn tool's commands (the plain value parsers
 * are in tool_parse.c). */
#include "tool.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tool_report(const char *cmd, dattn_status st)
{
    fprintf(stderr, "dattn: %s: %s: %s\n", cmd, dattn_status_name(st), dattn_last_error());
}

int tool_parse_policy(const char *s, dattn_kv_policy *policy, long *n_sink, long *window)
{
    if (!strcmp(s, "full")) {
        *policy = DATTN_POLICY_FULL;
        *n_sink = 0;
        *window = 0;
        return 0;
    }
    if (strncmp(s, "sink:", 5))
        return -1;
    char *end;
    errno = 0;
    long sink = strtol(s + 5, &end, 10), win = 0;
    if (errno || end == s + 5 || sink < 0 || sink > (1L << 30))
        return -1;
    if (*end) {
        if (strncmp(end, ",window:", 8))
            return -1;
        const char *w = end + 8;
        win = strtol(w, &end, 10);
        /* Bounded apart and together: sink + window is then an int even where long is 32 bits. */
        if (errno || end == w || *end || win < 1 || win > (1L << 30) - sink)
            return -1;
    }
    *policy = DATTN_POLICY_SINK_WINDOW;
    *n_sink = sink;
    *window = win;
    return 0;
}

void tool_format_bytes(uint64_t bytes, char *buf, size_t n)
{
    static const char *names[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%llu B", (unsigned long long)bytes);
    else
        snprintf(buf, n, "%.2f %s", v, names[u]);
}

int tool_backend_threads(const dattn_backend *be)
{
    const char *desc = dattn_backend_describe(be);
    if (strncmp(desc, "cpu", 3))
        return 1;
    const char *comma = strchr(desc, ',');
    int n = comma ? atoi(comma + 1) : 1;
    return n > 0 ? n : 1;
}

void tool_backend_env(dattn_backend_params *bp)
{
    bp->device = getenv("DATTN_DEVICE");   /* "P:D" or part of a name; see `dattn devices` */
    bp->tuning = getenv("DATTN_TUNING");   /* "prefill_qt=8,..." over the platforms/ row */
    const char *cap = getenv("DATTN_CL_MAX_ALLOC");
    if (cap && *cap) {
        char *end;
        unsigned long long v = strtoull(cap, &end, 10);
        if (*end || v == 0)
            fprintf(stderr, "dattn: warning: DATTN_CL_MAX_ALLOC='%s' is not a number of bytes; "
                    "ignored\n", cap);
        else
            bp->max_buffer_bytes = v;
    }
}

void tool_model_opts_init(tool_model_opts *o, dattn_kv_type kv)
{
    memset(o, 0, sizeof *o);
    o->backend = DATTN_BACKEND_CPU;
    o->device = getenv("DATTN_DEVICE");   /* "P:D" or part of a name; see `dattn devices` */
    o->kv = kv;
    o->policy = DATTN_POLICY_FULL;
}

void tool_model_opts_stream(tool_model_opts *o)
{
    o->policy = DATTN_POLICY_SINK_WINDOW;
    o->n_sink = TOOL_STREAM_SINKS;
    o->window = 0;
    o->fit_sinks = 1;
}

static int opt_bad(const char *cmd, const char *what, const char *arg)
{
    fprintf(stderr, "dattn: %s: %s%s%s\n", cmd, what, arg ? " " : "", arg ? arg : "");
    return -1;
}

int tool_model_opt(const char *cmd, tool_model_opts *o, int argc, char **argv, int *i)
{
    static const char *const names[] = {"-m", "--model", "--backend", "--device", "--threads",
                                        "--ctx", "--batch", "--kv", "--policy", "--weights"};
    const char *a = argv[*i];
    int known = 0;
    for (size_t k = 0; k < sizeof names / sizeof *names; k++)
        known |= !strcmp(a, names[k]);
    if (!known)
        return 0;
    if (*i + 1 >= argc)
        return opt_bad(cmd, "missing value after", a);
    const char *v = argv[++*i];
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
        o->model_path = v;
    } else if (!strcmp(a, "--backend")) {
        if (tool_parse_backend(v, &o->backend))
            return opt_bad(cmd, "--backend takes cpu, opencl or auto, not", v);
    } else if (!strcmp(a, "--device")) {
        o->device = v;
        o->device_given = 1;
    } else if (!strcmp(a, "--threads")) {
        if (tool_parse_int(v, 0, 1024, &o->threads))
            return opt_bad(cmd, "--threads takes 0..1024, not", v);
    } else if (!strcmp(a, "--ctx")) {
        if (tool_parse_int(v, 1, 1L << 30, &o->ctx))
            return opt_bad(cmd, "--ctx takes a count of tokens >= 1, not", v);
    } else if (!strcmp(a, "--batch")) {
        if (tool_parse_int(v, 1, 1L << 20, &o->batch))
            return opt_bad(cmd, "--batch takes a count of tokens >= 1, not", v);
    } else if (!strcmp(a, "--kv")) {
        if (tool_parse_kv(v, &o->kv))
            return opt_bad(cmd, "--kv takes f32, f16 or q8, not", v);
    } else if (!strcmp(a, "--weights")) {
        if (tool_parse_weights(v, &o->load.weights))
            return opt_bad(cmd, "--weights takes f16, bf16, q8_0, q4_0 or f32, not", v);
        o->load.convert_weights = 1;
    } else {
        if (tool_parse_policy(v, &o->policy, &o->n_sink, &o->window))
            return opt_bad(cmd, "--policy takes full, sink:S or sink:S,window:W (S + W at most "
                                "2^30), not", v);
        o->fit_sinks = 0;
    }
    return 1;
}

int tool_open_model(const char *cmd, const tool_model_opts *o, dattn_backend **be,
                    dattn_model **model)
{
    *be = NULL;
    *model = NULL;
    if (!o->model_path) {
        fprintf(stderr, "dattn: %s: no model (give -m MODEL.safetensors)\n", cmd);
        return -1;
    }
    if (o->device_given && o->backend == DATTN_BACKEND_CPU) {
        fprintf(stderr, "dattn: %s: --device %s picks an OpenCL device, and the backend is cpu "
                        "(give --backend opencl or auto)\n", cmd, o->device);
        return -1;
    }
    if (o->threads && o->backend == DATTN_BACKEND_OPENCL)
        fprintf(stderr, "dattn: %s: warning: --threads %ld is for the cpu backend; the opencl "
                        "backend ignores it\n", cmd, o->threads);
    dattn_backend_params bp = dattn_backend_default_params();
    bp.type = o->backend;
    bp.n_threads = (int)o->threads;
    tool_backend_env(&bp);
    bp.device = o->device;
    dattn_status st = dattn_backend_create(&bp, be);
    if (st == DATTN_OK)
        st = dattn_model_load_params(*be, o->model_path, &o->load, model);
    if (st != DATTN_OK) {
        tool_report(cmd, st);
        dattn_backend_free(*be);
        *be = NULL;
        return -1;
    }
    return 0;
}

void tool_cache_params_at(const tool_model_opts *o, int n_ctx, dattn_cache_params *p)
{
    *p = dattn_cache_default_params();
    p->n_ctx = n_ctx;
    p->kv_type = o->kv;
    p->policy = o->policy;
    long n_sink = o->policy == DATTN_POLICY_SINK_WINDOW ? o->n_sink : 0;
    if (o->fit_sinks && n_sink > n_ctx / 2)
        n_sink = n_ctx / 2;
    p->n_sink = (int)n_sink;
    long batch = o->batch ? o->batch : 512;
    p->max_batch = (int)(batch < n_ctx ? batch : n_ctx);
}

int tool_cache_params(const char *cmd, const tool_model_opts *o, const dattn_model_info *info,
                      dattn_cache_params *out)
{
    long n_ctx = o->ctx ? o->ctx : info->max_seq_len;
    if (o->policy == DATTN_POLICY_SINK_WINDOW && o->window) {
        long from_policy = o->n_sink + o->window;
        if (o->ctx && o->ctx != from_policy) {
            fprintf(stderr, "dattn: %s: --ctx %ld disagrees with --policy sink:%ld,window:%ld "
                            "(the context is sinks + window = %ld); give one of them\n",
                    cmd, o->ctx, o->n_sink, o->window, from_policy);
            return -1;
        }
        n_ctx = from_policy;
    }
    if (n_ctx > (1L << 30)) {
        fprintf(stderr, "dattn: %s: a context of %ld tokens is too long\n", cmd, n_ctx);
        return -1;
    }
    tool_cache_params_at(o, (int)n_ctx, out);
    if (out->policy == DATTN_POLICY_SINK_WINDOW && out->n_sink >= n_ctx) {
        fprintf(stderr, "dattn: %s: %d sink tokens leave no window in a context of %ld\n", cmd,
                out->n_sink, n_ctx);
        return -1;
    }
    tool_warn_ctx(cmd, info, n_ctx);
    return 0;
}

void tool_warn_ctx(const char *cmd, const dattn_model_info *info, long n_ctx)
{
    if (n_ctx > info->max_seq_len)
        fprintf(stderr, "dattn: %s: warning: a context of %ld tokens is past the model's "
                        "max_seq_len of %d (positions it was not trained on)\n", cmd, n_ctx,
                info->max_seq_len);
}

void tool_policy_name(const dattn_cache_params *p, char *buf, size_t n)
{
    if (p->policy == DATTN_POLICY_FULL)
        snprintf(buf, n, "full");
    else
        snprintf(buf, n, "sink:%d,window:%d", p->n_sink, p->n_ctx - p->n_sink);
}

void tool_print_model(FILE *f, const dattn_model_info *m)
{
    char wb[32];
    tool_format_bytes(m->weight_bytes, wb, sizeof wb);
    fprintf(f, "dim=%d layers=%d heads=%d kv_heads=%d ffn=%d vocab=%d max_seq_len=%d "
               "tokenizer=%s weights=%s%s stored=%s params=%llu (%s held)\n",
            m->dim, m->n_layers, m->n_heads, m->n_kv_heads, m->ffn_dim, m->vocab_size,
            m->max_seq_len, m->tokenizer, tool_weights_name(m->weights),
            m->tie_embeddings ? " tied" : "", tool_weights_name(m->dtype),
            (unsigned long long)m->n_params, wb);
}

/* The whole of a file (or stdin for "-") in a malloc'd buffer. */
char *tool_read_file(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) {
            if (ferror(f)) {
                free(buf);
                buf = NULL;
            }
            break;
        }
        char *more = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
        if (!more) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = more;
        cap *= 2;
    }
    if (f != stdin)
        fclose(f);
    *len = n;
    return buf;
}
