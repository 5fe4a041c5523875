/* dattn plan: the memory question asked before a long context ("does 64K fit in 80 GB?").
 * --ctx N: the exact arena bytes a session of N tokens reserves, per KV type, under the policy
 * (`run`'s default, sink+window, unless --policy says otherwise);
 * --mem SIZE: the longest context whose arena and the weights fit in SIZE. The figures are
 * dattn_session_arena_bytes(), what dattn_session_create really reserves (a test holds `run`'s
 * arena_bytes to them); the weights are counted apart. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static int bad(const char *msg, const char *arg)
{
    fprintf(stderr, "dattn: plan: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

/* Arena bytes of a session of n_ctx tokens; 0 when the library refuses the size (too big). */
static size_t arena_at(const dattn_model *m, const tool_model_opts *o, int n_ctx,
                       dattn_status *st)
{
    dattn_cache_params p;
    tool_cache_params_at(o, n_ctx, &p);
    size_t bytes = 0;
    *st = dattn_session_arena_bytes(m, &p, &bytes);
    return *st == DATTN_OK ? bytes : 0;
}

/* The longest n_ctx whose arena plus the weights fits in mem (0: none), by bisection: arena
 * bytes grow with n_ctx. */
static int longest_ctx(const dattn_model *m, const tool_model_opts *o, uint64_t weights,
                       uint64_t mem, size_t *arena, int *failed)
{
    const int max_ctx = 1 << 30;
    int lo = o->policy == DATTN_POLICY_SINK_WINDOW && !o->fit_sinks ? (int)o->n_sink + 1 : 1;
    dattn_status st;
    size_t a = arena_at(m, o, lo, &st);
    *failed = 0;
    if (st != DATTN_OK) {
        tool_report("plan", st);
        *failed = 1;
        return 0;
    }
    if (weights + a > mem)
        return 0;
    *arena = a;
    /* lo fits; grow hi until it does not. */
    long hi = lo;
    for (;;) {
        hi = hi * 2 > max_ctx ? max_ctx : hi * 2;
        a = arena_at(m, o, (int)hi, &st);
        if (st != DATTN_OK || weights + a > mem)
            break;
        lo = (int)hi;
        *arena = a;
        if (hi == max_ctx)
            return lo;
    }
    while (hi - lo > 1) {
        int mid = (int)(lo + (hi - lo) / 2);
        a = arena_at(m, o, mid, &st);
        if (st == DATTN_OK && weights + a <= mem) {
            lo = mid;
            *arena = a;
        } else {
            hi = mid;
        }
    }
    return lo;
}

int cmd_plan(int argc, char **argv)
{
    tool_model_opts o;
    const dattn_kv_type any_kv = (dattn_kv_type)-1;
    tool_model_opts_init(&o, any_kv);
    tool_model_opts_stream(&o);   /* the policy `run` takes when none is given */
    const char *mem_arg = NULL;
    uint64_t mem = 0;
    for (int i = 0; i < argc; i++) {
        int taken = tool_model_opt("plan", &o, argc, argv, &i);
        if (taken < 0)
            return 2;
        if (taken)
            continue;
        if (strcmp(argv[i], "--mem"))
            return bad("unknown option", argv[i]);
        if (i + 1 >= argc)
            return bad("missing value after", argv[i]);
        mem_arg = argv[++i];
        if (tool_parse_size(mem_arg, &mem) || mem == 0)
            return bad("--mem takes a size like 80G, 512M, 1.5GiB or a count of bytes, not",
                       mem_arg);
    }
    if (!o.model_path)
        return bad("no model (usage: dattn plan -m MODEL (--mem SIZE | --ctx N))", NULL);
    int by_ctx = o.ctx || (o.policy == DATTN_POLICY_SINK_WINDOW && o.window);
    if (mem_arg && by_ctx)
        return bad("give --mem SIZE or a context (--ctx N, or a window), not both", NULL);
    if (!mem_arg && !by_ctx)
        return bad("give --mem SIZE (the longest context that fits) or --ctx N (its bytes)",
                   NULL);

    dattn_backend *be = NULL;
    dattn_model *model = NULL;
    if (tool_open_model("plan", &o, &be, &model))
        return 2;
    dattn_model_info info;
    dattn_model_get_info(model, &info);
    /* The context asked for, checked (and a warning past max_seq_len) before anything prints. */
    dattn_cache_params shown;
    tool_model_opts o_kv = o;
    o_kv.kv = o.kv == any_kv ? DATTN_KV_F16 : o.kv;
    if (by_ctx && tool_cache_params("plan", &o_kv, &info, &shown)) {
        dattn_model_free(model);
        dattn_backend_free(be);
        return 2;
    }
    if (!by_ctx)
        tool_cache_params_at(&o_kv, info.max_seq_len, &shown);
    int rc = 0;
    const dattn_kv_type kvs[] = {DATTN_KV_F32, DATTN_KV_F16, DATTN_KV_Q8};
    char wb[32], memb[32], pol[64];
    tool_format_bytes(info.weight_bytes, wb, sizeof wb);
    printf("model: %s: ", o.model_path);
    fflush(stdout);
    tool_print_model(stdout, &info);
    tool_policy_name(&shown, pol, sizeof pol);
    if (mem_arg) {
        tool_format_bytes(mem, memb, sizeof memb);
        printf("backend: %s; weights %llu bytes (%s); budget %llu bytes (%s); policy %s\n",
               dattn_backend_describe(be), (unsigned long long)info.weight_bytes, wb,
               (unsigned long long)mem, memb,
               o.policy == DATTN_POLICY_FULL ? "full" : "sink+window");
        printf("%-4s %12s %16s %12s %16s\n", "kv", "longest ctx", "arena bytes", "arena",
               "total");
    } else {
        printf("backend: %s; weights %llu bytes (%s); policy %s\n", dattn_backend_describe(be),
               (unsigned long long)info.weight_bytes, wb, pol);
        printf("%-4s %12s %16s %12s %16s\n", "kv", "n_ctx", "arena bytes", "arena", "total");
    }
    struct { dattn_kv_type kv; int n_ctx; size_t arena; dattn_cache_params p; } rows[3];
    int n_rows = 0;
    for (size_t k = 0; k < sizeof kvs / sizeof *kvs && rc == 0; k++) {
        if (o.kv != any_kv && o.kv != kvs[k])
            continue;
        tool_model_opts ok = o;
        ok.kv = kvs[k];
        int n_ctx = 0;
        size_t arena = 0;
        if (mem_arg) {
            int failed;
            n_ctx = longest_ctx(model, &ok, info.weight_bytes, mem, &arena, &failed);
            rc = failed ? 2 : 0;
        } else {
            dattn_status st;
            n_ctx = shown.n_ctx;
            if ((arena = arena_at(model, &ok, n_ctx, &st)) == 0) {
                tool_report("plan", st);
                rc = 2;
            }
        }
        rows[n_rows].kv = kvs[k];
        rows[n_rows].n_ctx = n_ctx;
        rows[n_rows].arena = arena;
        tool_cache_params_at(&ok, n_ctx > 0 ? n_ctx : 1, &rows[n_rows].p);
        n_rows++;
    }
    for (int k = 0; k < n_rows && rc == 0; k++) {
        char ab[32], tb[32];
        tool_format_bytes(rows[k].arena, ab, sizeof ab);
        tool_format_bytes(info.weight_bytes + rows[k].arena, tb, sizeof tb);
        if (rows[k].n_ctx == 0)
            printf("%-4s %12s %16s %12s %16s\n", tool_kv_name(rows[k].kv), "none fits", "-", "-",
                   "-");
        else
            printf("%-4s %12d %16zu %12s %16s\n", tool_kv_name(rows[k].kv), rows[k].n_ctx,
                   rows[k].arena, ab, tb);
    }
    /* One machine-readable line per KV type, for scripts and the tests. */
    for (int k = 0; k < n_rows && rc == 0; k++) {
        tool_policy_name(&rows[k].p, pol, sizeof pol);
        printf("plan kv=%s n_ctx=%d policy=%s max_batch=%d arena_bytes=%zu weight_bytes=%llu "
               "total_bytes=%llu%s\n", tool_kv_name(rows[k].kv), rows[k].n_ctx, pol,
               rows[k].p.max_batch, rows[k].arena, (unsigned long long)info.weight_bytes,
               (unsigned long long)(info.weight_bytes + rows[k].arena),
               rows[k].n_ctx ? "" : " fits=0");
    }
    dattn_model_free(model);
    dattn_backend_free(be);
    return rc;
}
