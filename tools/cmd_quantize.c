/* dattn quantize IN OUT --type q8_0|q4_0: a model (a dattn file or a Hugging Face directory)
 * written again as one file of packed weights that loads without converting anything. Says what
 * it wrote: the sizes, and the model as it loads from the new file. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ceiling.h"
#include "tool.h"

static int usage(const char *msg, const char *arg)
{
    fprintf(stderr, "dattn: quantize: %s%s%s\nusage: dattn quantize IN OUT --type q8_0|q4_0\n",
            msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

/* Bytes of a file, or 0. */
static unsigned long long file_bytes(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (unsigned long long)sb.st_size : 0;
}

int cmd_quantize(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *type_arg = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--type")) {
            if (i + 1 >= argc)
                return usage("missing value after", "--type");
            type_arg = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return usage("unknown option", argv[i]);
        } else if (!in) {
            in = argv[i];
        } else if (!out) {
            out = argv[i];
        } else {
            return usage("one input and one output, not also", argv[i]);
        }
    }
    if (!in || !out)
        return usage("give the model to read and the file to write", NULL);
    if (!type_arg)
        return usage("give --type q8_0 or --type q4_0", NULL);
    dattn_dtype type;
    if (tool_parse_weights(type_arg, &type) ||
        (type != DATTN_DTYPE_Q8_0 && type != DATTN_DTYPE_Q4_0))
        return usage("--type takes q8_0 or q4_0, not", type_arg);
    double t0 = ceiling_now_seconds();
    dattn_status st = dattn_model_quantize(in, out, type);
    if (st != DATTN_OK) {
        tool_report("quantize", st);
        return 2;
    }
    double secs = ceiling_now_seconds() - t0;
    /* What a user will load: the new file, as stored. */
    dattn_backend_params bp = dattn_backend_default_params();
    bp.type = DATTN_BACKEND_CPU;
    bp.n_threads = 1;
    dattn_backend *be = NULL;
    dattn_model *m = NULL;
    if ((st = dattn_backend_create(&bp, &be)) != DATTN_OK ||
        (st = dattn_model_load(be, out, &m)) != DATTN_OK) {
        tool_report("quantize", st);
        dattn_backend_free(be);
        return 2;
    }
    dattn_model_info info;
    dattn_model_get_info(m, &info);
    char wb[32], ob[32];
    tool_format_bytes(info.weight_bytes, wb, sizeof wb);
    tool_format_bytes(file_bytes(out), ob, sizeof ob);
    printf("quantize: wrote %s (%s) in %.1f s: %s weights, %llu parameters, %s held\n", out, ob,
           secs, tool_weights_name(info.weights), (unsigned long long)info.n_params, wb);
    printf("model: %s: ", out);
    tool_print_model(stdout, &info);
    dattn_model_free(m);
    dattn_backend_free(be);
    return 0;
}
