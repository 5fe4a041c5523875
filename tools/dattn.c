/* The dattn tool: subcommands over the library's public API. This file parses the command line
 * and dispatches; each command lives in its own file (cmd_*.c). The tools talk; the library
 * does not. */
#include <stdio.h>
#include <string.h>

#include "tool.h"
#include "version.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dattn COMMAND [OPTIONS]\n"
            "\n"
            "commands:\n"
            "  check-layer FILE.safetensors [--backend cpu|auto] [--kv f32|f16|q8] [--prefill N]\n"
            "              [--threads N] [--isa NAME] [--tol X] [--out OUT.safetensors]\n"
            "      run one differential-attention layer on the file's x and compare with its y\n"
            "  bench decode|prefill [--heads H] [--kv-heads K] [--head-dim D] [--ctx N]\n"
            "              [--kv f32|f16|q8] [--threads T] [--isa NAME] [--reps N] [--warm]\n"
            "      time flash decoding or prefill against the machine's measured ceiling\n"
            "  bench model -m MODEL [--backend B] [--threads N] [--kv K] [--weights W]\n"
            "              [--fills 0,512,2048] [--reps N] [--prompt N] [--warm]\n"
            "      a whole model's prefill and decode tokens/s next to the bandwidth floor\n"
            "  bench gemv --backend opencl [--rows M] [--cols K] [--weights f32|f16|bf16|q8_0|q4_0]\n"
            "              [--reps N]\n"
            "      the decode GEMV (cl/gemv.cl, default 16384 x 4096 f16) against the device's read ceiling\n"
            "  bench gemm --backend opencl [--tokens N] [--rows M] [--cols K] [--weights W] [--reps N]\n"
            "      the prefill GEMM (cl/gemm.cl, default 512 tokens x 16384 x 4096 f16) against the\n"
            "      device's fma ceiling\n"
            "  run -m MODEL [-p PROMPT] [-n N] [--backend cpu|opencl|auto] [--device SEL]\n"
            "              [--threads N] [--ctx N] [--kv f32|f16|q8] [--policy full|sink:S,window:W]\n"
            "              [--batch N] [--seed N] [--temp X] [--top-k K] [--top-p P]\n"
            "              [--repeat-penalty X] [--repeat-last-n N] [--weights W]\n"
            "      generate text: with -p, continue PROMPT and exit; without, a REPL (:help);\n"
            "      past the context it goes on under sink:4,window:CTX-4 unless --policy full\n"
            "  logits -m MODEL --tokens 1,2,3 -o OUT.safetensors [--backend B] [--kv K]\n"
            "              [--weights W]\n"
            "      write logits [n, vocab] f32 for every position (parity with PyTorch)\n"
            "  perplexity -m MODEL -f TEXT [--ctx N] [--weights W] [--kv K] [--chunks N]\n"
            "      how well the model predicts TEXT: nats per token and per byte, perplexity\n"
            "      (chunks of --ctx, default min(max_seq_len, 512); the second half of each scored)\n"
            "  quantize IN OUT --type q8_0|q4_0\n"
            "      write a model (a dattn file or a Hugging Face directory) as one file of packed\n"
            "      weights, config and tokenizer carried along: it loads with nothing converted\n"
            "  plan -m MODEL (--mem SIZE | --ctx N) [--kv K] [--policy P] [--backend B]\n"
            "              [--weights W]\n"
            "      exact arena bytes for a context, or the longest context that fits in SIZE\n"
            "  tokenize -m PATH [--raw] (-p TEXT | -f FILE)\n"
            "      the ids of a text, space-separated (--raw: no BOS/EOS); PATH is a model, a\n"
            "      tokenizer.json or a directory holding one\n"
            "  detokenize -m PATH --ids 1,2,3\n"
            "      the exact bytes of the ids, to stdout\n"
            "  devices\n"
            "      list every OpenCL platform and device with its memory, limits and tuning row\n"
            "  version (--version)\n"
            "      the git revision and what this build has (opencl, libedit)\n"
            "  help\n"
            "\n"
            "--weights f16|bf16|q8_0|q4_0|f32: hold the model's weights in that format (converted\n"
            "at load); default: as the file stores them\n"
            "\n"
            "exit status: 0 ok, 1 outside tolerance, 2 bad input or failure\n");
}

/* "features: opencl=yes libedit=no": what the tests and scripts ask of this build. */
static void print_version(void)
{
#ifdef DATTN_HAVE_OPENCL
    const char *opencl = "yes";
#else
    const char *opencl = "no";
#endif
#ifdef DATTN_HAVE_LIBEDIT
    const char *libedit = "yes";
#else
    const char *libedit = "no";
#endif
    printf("dattn %s\nfeatures: opencl=%s libedit=%s\n", DATTN_GIT_REV, opencl, libedit);
}

/* The library's warnings and errors (e.g. why `--backend auto` fell back to the CPU). */
static void print_log(dattn_log_level level, const char *msg, void *ud)
{
    (void)ud;
    if (level <= DATTN_LOG_WARN)
        fprintf(stderr, "dattn: %s: %s\n", level == DATTN_LOG_ERROR ? "error" : "warning", msg);
}

int main(int argc, char **argv)
{
    dattn_log_set(print_log, NULL);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "check-layer"))
        return cmd_check_layer(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 2, argv + 2);
    if (!strcmp(cmd, "logits"))
        return cmd_logits(argc - 2, argv + 2);
    if (!strcmp(cmd, "perplexity"))
        return cmd_perplexity(argc - 2, argv + 2);
    if (!strcmp(cmd, "quantize"))
        return cmd_quantize(argc - 2, argv + 2);
    if (!strcmp(cmd, "plan"))
        return cmd_plan(argc - 2, argv + 2);
    if (!strcmp(cmd, "tokenize"))
        return cmd_tokenize(argc - 2, argv + 2);
    if (!strcmp(cmd, "detokenize"))
        return cmd_detokenize(argc - 2, argv + 2);
    if (!strcmp(cmd, "devices"))
        return cmd_devices(argc - 2, argv + 2);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        print_version();
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "dattn: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
