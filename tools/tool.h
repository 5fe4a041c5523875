/* Shared pieces of the dattn tool's commands: option parsing and reporting helpers. */
#ifndef DATTN_TOOL_H
#define DATTN_TOOL_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "dattn.h"

int cmd_check_layer(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_bench_model(int argc, char **argv);
/* dattn bench gemv / bench gemm (gemm = 1) (OpenCL builds: tools/cmd_bench_gemv.c) */
int cmd_bench_gemv(int argc, char **argv, int gemm);
int cmd_devices(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);

/* Parses "f32" / "f16" / "q8"; returns 0 on success. */
int tool_parse_kv(const char *s, dattn_kv_type *out);
const char *tool_kv_name(dattn_kv_type t);
/* Parses a non-negative integer in [lo, hi]; returns 0 on success. */
int tool_parse_int(const char *s, long lo, long hi, long *out);
/* Parses a finite number in [lo, hi]; returns 0 on success. */
int tool_parse_double(const char *s, double lo, double hi, double *out);
/* "80G", "512M", "1.5GiB", "4096" (K, M, G, T: powers of 1024, with or without "iB"/"B");
 * returns 0 on success. */
int tool_parse_size(const char *s, uint64_t *bytes);
/* "full", "sink:S,window:W" or "sink:S" (the window is then the context less the sinks);
 * *window = 0 when not given. S + W is at most 2^30 (so their sum fits an int). Returns 0 on
 * success. */
int tool_parse_policy(const char *s, dattn_kv_policy *policy, long *n_sink, long *window);
/* Prints "dattn: CMD: STATUS_NAME: message" for a failed library call. */
void tool_report(const char *cmd, dattn_status st);
/* The environment's say in backend params: DATTN_DEVICE (device), DATTN_TUNING (a tuning
 * override) and DATTN_CL_MAX_ALLOC (one-buffer cap). The library reads no environment. */
void tool_backend_env(dattn_backend_params *bp);
/* The CPU threads a backend runs on, from its dattn_backend_describe() text: the pool's for
 * "cpu avx512, 2 threads", 1 (the host thread that enqueues) for "opencl ...". */
int tool_backend_threads(const dattn_backend *be);
/* "cpu" / "auto" / "opencl" into params; returns 0 on success. */
int tool_parse_backend(const char *s, dattn_backend_type *out);
/* "f32" / "f16" / "bf16" / "q8_0" / "q4_0" (the --weights names) into *out; 0 on success. */
int tool_parse_weights(const char *s, dattn_dtype *out);
/* The same names back; "?" for another dtype. */
const char *tool_weights_name(dattn_dtype t);
/* The whole of a file (or stdin for "-") in a malloc'd buffer, *len its bytes; NULL when it
 * cannot be opened or read (or memory runs out). */
char *tool_read_file(const char *path, size_t *len);
/* "1.50 GiB", "12.0 MiB", "512 B". */
void tool_format_bytes(uint64_t bytes, char *buf, size_t n);

/* ---- the options every whole-model command shares ---------------------------------------- */

typedef struct tool_model_opts {
    const char *model_path;    /* -m */
    dattn_backend_type backend;
    const char *device;        /* --device, else $DATTN_DEVICE */
    long threads;              /* 0: every online core */
    int device_given;          /* device came from --device (not the environment) */
    long ctx;                  /* 0: from the policy's window, else the model's max_seq_len */
    long batch;                /* most tokens per prefill chunk; 0: min(n_ctx, 512) */
    dattn_kv_type kv;
    dattn_kv_policy policy;
    long n_sink, window;       /* sink+window; window 0: n_ctx - n_sink */
    int fit_sinks;             /* the policy was not given: n_sink shrinks to n_ctx / 2 in a
                                  short context (see tool_model_opts_stream) */
    dattn_model_params load;   /* --weights: as stored unless given */
} tool_model_opts;

/* The full policy: a session stops when the context is full. */
void tool_model_opts_init(tool_model_opts *o, dattn_kv_type kv);
/* The sinks `run` keeps by default (StreamingLLM keeps 4). */
enum { TOOL_STREAM_SINKS = 4 };
/* `run`'s default policy until --policy says otherwise: sink+window over the whole context with
 * TOOL_STREAM_SINKS sinks, so a conversation goes on past the context instead of stopping. */
void tool_model_opts_stream(tool_model_opts *o);
/* Takes argv[*i] (and its value, advancing *i) when it is a shared option: 1 taken, 0 not one of
 * them, -1 a bad or missing value (said on stderr as "dattn: CMD: ..."). */
int tool_model_opt(const char *cmd, tool_model_opts *o, int argc, char **argv, int *i);
/* Backend, then model. 0 ok; otherwise the failure is said and nothing is left allocated.
 * --device with the cpu backend is refused (it names an OpenCL device); --threads with the
 * opencl backend is a warning (nothing runs on those threads). */
int tool_open_model(const char *cmd, const tool_model_opts *o, dattn_backend **be,
                    dattn_model **model);
/* Cache params for a session of `info` under the options, with n_ctx resolved (see ctx above).
 * 0 ok; -1 with the conflict said. Every command sizes sessions through this, so `plan` and
 * `run` agree on the arena. */
int tool_cache_params(const char *cmd, const tool_model_opts *o, const dattn_model_info *info,
                      dattn_cache_params *out);
/* One line on stderr when n_ctx is past the model's max_seq_len (positions it was never trained
 * on, and an arena to match). */
void tool_warn_ctx(const char *cmd, const dattn_model_info *info, long n_ctx);
/* The same params for another n_ctx (max_batch and, under fit_sinks, n_sink follow it). */
void tool_cache_params_at(const tool_model_opts *o, int n_ctx, dattn_cache_params *p);
/* "full" or "sink:4,window:508". */
void tool_policy_name(const dattn_cache_params *p, char *buf, size_t n);
/* One line about the model: dims, heads, vocab, params, weights. */
void tool_print_model(FILE *f, const dattn_model_info *info);

#endif
