/* The dattn tool: subcommands over the library's public API. This file parses the command line
 * and dispatches; each command lives in its own file (cmd_*.c). The tools talk; the library
 * does not. */
#include <stdio.h>
#include <string.h>

#include "tool.h"

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
            "  devices\n"
            "      list every OpenCL platform and device with its memory, limits and tuning row\n"
            "  help\n"
            "\n"
            "exit status: 0 ok, 1 outside tolerance, 2 bad input or failure\n");
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
    if (!strcmp(cmd, "devices"))
        return cmd_devices(argc - 2, argv + 2);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "dattn: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
