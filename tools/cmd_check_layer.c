/* dattn check-layer: the PyTorch parity check. Runs one layer from a safetensors file on its
 * input x at positions 0..T-1 (the first N tokens through prefill, the rest one at a time
 * through the KV cache and flash decoding) and compares with the file's y when it has one. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static int bad(const char *msg, const char *arg)
{
    fprintf(stderr, "dattn: check-layer: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

int cmd_check_layer(int argc, char **argv)
{
    const char *path = NULL, *out_path = NULL, *isa = NULL;
    dattn_kv_type kv = DATTN_KV_F32;
    dattn_backend_type backend = DATTN_BACKEND_CPU;
    long prefill = -1, threads = 0;
    double tol = -1.0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-') {
            if (path)
                return bad("more than one input file:", a);
            path = a;
            continue;
        }
        if (!v)
            return bad("missing value after", a);
        i++;
        if (!strcmp(a, "--backend")) {
            if (tool_parse_backend(v, &backend))
                return bad("--backend takes cpu, opencl or auto, not", v);
        } else if (!strcmp(a, "--kv")) {
            if (tool_parse_kv(v, &kv))
                return bad("--kv takes f32, f16 or q8, not", v);
        } else if (!strcmp(a, "--prefill")) {
            if (tool_parse_int(v, 0, 1L << 30, &prefill))
                return bad("--prefill takes a count of tokens, not", v);
        } else if (!strcmp(a, "--threads")) {
            if (tool_parse_int(v, 0, 1024, &threads))
                return bad("--threads takes 0..1024, not", v);
        } else if (!strcmp(a, "--isa")) {
            isa = v;
        } else if (!strcmp(a, "--tol")) {
            /* inf would pass anything (and nan nothing): a finite bound only. */
            if (tool_parse_double(v, 0.0, DBL_MAX, &tol))
                return bad("--tol takes a finite number >= 0, not", v);
        } else if (!strcmp(a, "--out")) {
            out_path = v;
        } else {
            return bad("unknown option", a);
        }
    }
    if (!path)
        return bad("no input file (usage: dattn check-layer FILE.safetensors ...)", NULL);
    if (tol < 0)
        tol = kv == DATTN_KV_F32 ? 1e-4 : kv == DATTN_KV_F16 ? 2e-3 : 2e-2;

    int rc = 2;
    dattn_backend *be = NULL;
    dattn_layer *layer = NULL;
    dattn_cache *cache = NULL;
    dattn_tensor_file *f = NULL;
    float *x = NULL, *y = NULL, *ref = NULL;
    dattn_status st;

    dattn_backend_params bp = dattn_backend_default_params();
    bp.type = backend;
    bp.n_threads = (int)threads;
    bp.cpu_isa = isa;
    tool_backend_env(&bp);
    if ((st = dattn_backend_create(&bp, &be)) != DATTN_OK) {
        tool_report("check-layer", st);
        goto done;
    }
    if ((st = dattn_layer_load(be, path, &layer)) != DATTN_OK) {
        tool_report("check-layer", st);
        goto done;
    }
    dattn_layer_shape shape;
    dattn_layer_get_shape(layer, &shape);
    if ((st = dattn_tensor_file_open(path, &f)) != DATTN_OK) {
        tool_report("check-layer", st);
        goto done;
    }
    dattn_tensor tx_, ty_, *tx = &tx_, *ty = &ty_;
    if (dattn_tensor_file_find(f, "x", tx) != DATTN_OK) {
        fprintf(stderr, "dattn: check-layer: %s has no input tensor 'x'\n", path);
        goto done;
    }
    if (tx->n_dims != 2 || tx->shape[1] != shape.model_dim || tx->shape[0] < 1 ||
        tx->shape[0] > (1 << 24)) {
        fprintf(stderr, "dattn: check-layer: %s: 'x' must be [T, %d] with T >= 1\n", path,
                shape.model_dim);
        goto done;
    }
    int T = (int)tx->shape[0], E = shape.model_dim;
    if (dattn_tensor_file_find(f, "y", ty) != DATTN_OK)
        ty = NULL;   /* no reference: run and report only */
    if (ty && (ty->n_dims != 2 || ty->shape[0] != T || ty->shape[1] != E)) {
        fprintf(stderr, "dattn: check-layer: %s: 'y' must be [%d, %d] like x\n", path, T, E);
        goto done;
    }
    if (prefill < 0)
        prefill = T;
    if (prefill > T) {
        fprintf(stderr, "dattn: check-layer: --prefill %ld is more than the file's %d tokens\n",
                prefill, T);
        goto done;
    }
    x = malloc(sizeof(float) * (size_t)T * E);
    y = malloc(sizeof(float) * (size_t)T * E);
    ref = ty ? malloc(sizeof(float) * (size_t)T * E) : NULL;
    if (!x || !y || (ty && !ref)) {
        fprintf(stderr, "dattn: check-layer: out of memory for %d tokens\n", T);
        goto done;
    }
    if ((st = dattn_tensor_to_f32(tx, x)) != DATTN_OK ||
        (ty && (st = dattn_tensor_to_f32(ty, ref)) != DATTN_OK)) {
        tool_report("check-layer", st);
        goto done;
    }

    dattn_cache_params cp = dattn_cache_default_params();
    cp.n_ctx = T;
    cp.kv_type = kv;
    cp.max_batch = prefill > 0 ? (int)(prefill < 512 ? prefill : 512) : 1;
    if ((st = dattn_cache_create(be, &shape, &cp, NULL, 0, &cache)) != DATTN_OK) {
        tool_report("check-layer", st);
        goto done;
    }
    if (prefill > 0 &&
        (st = dattn_layer_prefill(layer, cache, 0, 0, x, (int)prefill, y)) != DATTN_OK) {
        tool_report("check-layer", st);
        goto done;
    }
    for (int t = (int)prefill; t < T; t++)
        if ((st = dattn_layer_decode(layer, cache, 0, t, x + (size_t)t * E, y + (size_t)t * E)) !=
            DATTN_OK) {
            tool_report("check-layer", st);
            goto done;
        }

    printf("%s: E=%d H=%d Hkv=%d d=%d depth=%d T=%d prefill=%ld decode=%ld kv=%s backend=%s\n",
           path, E, shape.n_heads, shape.n_kv_heads, E / shape.n_heads / 2, shape.layer_index, T,
           prefill, T - prefill, tool_kv_name(kv), dattn_backend_describe(be));
    if (out_path) {
        dattn_tensor t = {"y", DATTN_DTYPE_F32, 2, {T, E}, y};
        if ((st = dattn_tensor_file_write(out_path, &t, 1, NULL, 0)) != DATTN_OK) {
            tool_report("check-layer", st);
            goto done;
        }
        printf("wrote %s\n", out_path);
    }
    if (!ref) {
        printf("no 'y' in the file: nothing to compare\n");
        rc = 0;
        goto done;
    }
    double num = 0.0, den = 0.0, max_abs = 0.0;
    int finite = 1;
    for (size_t i = 0; i < (size_t)T * E; i++) {
        double e = (double)y[i] - ref[i];
        finite &= isfinite(y[i]);
        num += e * e;
        den += (double)ref[i] * ref[i];
        max_abs = fabs(e) > max_abs ? fabs(e) : max_abs;
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    int pass = finite && rel <= tol;
    printf("rel_err=%.3e max_abs_err=%.3e tol=%.1e %s\n", rel, max_abs, tol, pass ? "PASS" : "FAIL");
    rc = pass ? 0 : 1;
done:
    free(x);
    free(y);
    free(ref);
    dattn_tensor_file_close(f);
    dattn_cache_free(cache);
    dattn_layer_free(layer);
    dattn_backend_free(be);
    return rc;
}
