/* Each OpenCL kernel of cl/ on its own (DESIGN §8): built from its .cl text
 * (directory DATTN_CL_DIR, default "cl") with -D values, run on the first OpenCL device through the
 * ICD loader, and compared with float64 references written here from DESIGN §1/§4/§5 alone; the
 * KV cache is laid out on the host from the byte layout of src/kv.h (written independently here).
 * Exit 77 (skip) when no OpenCL platform or device exists. Seeds: DATTN_TEST_SEED replays. */
#define HARNESS_NAME "test_cl_kernels"
#include "cl_harness.h"
#include "cl_kv_host.h"

/* ---- element-wise: SwiGLU and residual add ------------------------------------------------ */

static void test_elementwise(void **state)
{
    (void)state;
    seed_case("elementwise");
    cl_program prog = build("elementwise.cl", "");
    cl_kernel ksw = kernel(prog, "swiglu"), kadd = kernel(prog, "add");
    const int n = 1000 + (int)urand(0, 100);
    float *a = xcalloc(n, 4), *b = xcalloc(n, 4), *y = xcalloc(n, 4);
    double *ref = xcalloc(n, 8);
    fill(a, n, -6, 6);
    fill(b, n, -2, 2);
    cl_mem da = buffer(n * 4, a), db = buffer(n * 4, b), dy = buffer(n * 4, NULL);
    size_t g = round_up(n, 64), l = 64;

    ARG(ksw, 0, cl_mem, da);
    ARG(ksw, 1, cl_mem, db);
    ARG(ksw, 2, cl_mem, dy);
    ARG(ksw, 3, cl_int, n);
    launch(ksw, 1, &g, &l);
    download(dy, y, n * 4);
    for (int i = 0; i < n; i++)
        ref[i] = a[i] / (1.0 + exp(-(double)a[i])) * b[i];
    CHECK_ERR("swiglu n=1000+", rel_err(ref, y, n), 1e-5);

    /* add: y (= swiglu output) += a */
    ARG(kadd, 0, cl_mem, dy);
    ARG(kadd, 1, cl_mem, da);
    ARG(kadd, 2, cl_int, n);
    launch(kadd, 1, &g, &l);
    float *y2 = xcalloc(n, 4);
    download(dy, y2, n * 4);
    for (int i = 0; i < n; i++)
        ref[i] = (double)y[i] + a[i];
    CHECK_ERR("add", rel_err(ref, y2, n), 1e-6);

    clReleaseMemObject(da);
    clReleaseMemObject(db);
    clReleaseMemObject(dy);
    clReleaseKernel(ksw);
    clReleaseKernel(kadd);
    clReleaseProgram(prog);
    free(a); free(b); free(y); free(y2); free(ref);
}

/* ---- RMSNorm ------------------------------------------------------------------------------ */

static void rmsnorm_case(int n, int rows, int wg)
{
    char defs[64];
    snprintf(defs, sizeof defs, "-DWG_SIZE=%d", wg);
    cl_program prog = build("rmsnorm.cl", defs);
    cl_kernel k = kernel(prog, "rmsnorm");
    size_t total = (size_t)n * rows;
    float *x = xcalloc(total, 4), *w = xcalloc(n, 4), *y = xcalloc(total, 4);
    double *ref = xcalloc(total, 8);
    fill(x, total, -2, 2);
    fill(w, n, 0.5, 1.5);
    const float eps = 1e-5f;
    cl_mem dx = buffer(total * 4, x), dw = buffer(n * 4, w), dy = buffer(total * 4, NULL);
    ARG(k, 0, cl_mem, dx);
    ARG(k, 1, cl_mem, dw);
    ARG(k, 2, cl_mem, dy);
    ARG(k, 3, cl_int, n);
    ARG(k, 4, cl_float, eps);
    const cl_int row0 = 0;
    ARG(k, 5, cl_int, row0);
    size_t g = (size_t)rows * wg, l = wg;
    launch(k, 1, &g, &l);
    download(dy, y, total * 4);
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < n; i++)
            ss += (double)x[r * n + i] * x[r * n + i];
        double inv = 1.0 / sqrt(ss / n + eps);
        for (int i = 0; i < n; i++)
            ref[r * n + i] = x[r * n + i] * inv * w[i];
    }
    char what[96];
    snprintf(what, sizeof what, "rmsnorm n=%d rows=%d WG_SIZE=%d", n, rows, wg);
    CHECK_ERR(what, rel_err(ref, y, total), 1e-5);
    clReleaseMemObject(dx);
    clReleaseMemObject(dw);
    clReleaseMemObject(dy);
    clReleaseKernel(k);
    clReleaseProgram(prog);
    free(x); free(w); free(y); free(ref);
}

static void test_rmsnorm(void **state)
{
    (void)state;
    seed_case("rmsnorm");
    rmsnorm_case(1000, 7, 256);
    rmsnorm_case(512 + (int)urand(1, 200), 3, 64);
    rmsnorm_case(33, 2, 64);                               /* fewer elements than work-items */
}

/* residual_add_norm: x += y and, with has_norm, xn = RMSNorm(x) * w, against float64; the fault
 * record from a NaN in y (row bad_out) and from a sum that overflows (row bad_sum), or none
 * (-1). The record arrives as an earlier add of the pass left it (prior_index: INT_MAX = none). */
static void add_norm_case(int n, int rows, int wg, int has_norm, int bad_out, int bad_sum,
                          int prior_index)
{
    char defs[64];
    snprintf(defs, sizeof defs, "-DWG_SIZE=%d", wg);
    cl_program prog = build("rmsnorm.cl", defs);
    cl_kernel k = kernel(prog, "residual_add_norm");
    size_t total = (size_t)n * rows;
    float *x = xcalloc(total, 4), *y = xcalloc(total, 4), *w = xcalloc(n, 4);
    float *x2 = xcalloc(total, 4), *xn = xcalloc(total, 4);
    double *ref = xcalloc(total, 8);
    fill(x, total, -2, 2);
    fill(y, total, -2, 2);
    fill(w, n, 0.5, 1.5);
    int col = (int)urand(0, n - 1);
    if (bad_out >= 0)
        y[(size_t)bad_out * n + col] = NAN;
    if (bad_sum >= 0)
        x[(size_t)bad_sum * n + col] = 3e38f, y[(size_t)bad_sum * n + col] = 3e38f;
    for (size_t i = 0; i < total; i++)
        xn[i] = -7.0f;                                  /* must survive without has_norm */
    const int at = 5, index = 9;                        /* the record sits at fault[at] */
    cl_int fault[8];
    for (int i = 0; i < 8; i++)
        fault[i] = INT32_MAX;
    fault[at] = prior_index;
    const float eps = 1e-5f;
    cl_mem dx = buffer(total * 4, x), dy = buffer(total * 4, y), dw = buffer(n * 4, w);
    cl_mem dxn = buffer(total * 4, xn), df = buffer(sizeof fault, fault);
    ARG(k, 0, cl_mem, dx);
    ARG(k, 1, cl_mem, dy);
    ARG(k, 2, cl_mem, dw);
    ARG(k, 3, cl_mem, dxn);
    ARG(k, 4, cl_int, n);
    ARG(k, 5, cl_float, eps);
    ARG(k, 6, cl_int, has_norm);
    ARG(k, 7, cl_mem, df);
    ARG(k, 8, cl_int, at);
    ARG(k, 9, cl_int, index);
    size_t g = (size_t)rows * wg, l = wg;
    launch(k, 1, &g, &l);
    download(dx, x2, total * 4);
    download(dxn, xn, total * 4);
    download(df, fault, sizeof fault);
    char what[128];
    snprintf(what, sizeof what, "residual_add_norm n=%d rows=%d WG_SIZE=%d norm=%d bad=%d,%d",
             n, rows, wg, has_norm, bad_out, bad_sum);
    for (size_t i = 0; i < total; i++) {                /* the f32 sum, exactly */
        float want = x[i] + y[i];
        if (memcmp(&want, &x2[i], 4) != 0 && !(isnan(want) && isnan(x2[i])))
            fail_msg("%s: x[%zu] = %g, want %g", what, i, (double)x2[i], (double)want);
    }
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < n; i++)
            ss += (double)x2[r * n + i] * x2[r * n + i];
        double inv = 1.0 / sqrt(ss / n + eps);
        for (int i = 0; i < n; i++)
            ref[r * n + i] = r == bad_out || r == bad_sum ? 0.0 : x2[r * n + i] * inv * w[i];
    }
    if (has_norm) {
        for (int r = 0; r < rows; r++)                  /* rows with a fault are not compared */
            if (r == bad_out || r == bad_sum)
                for (int i = 0; i < n; i++)
                    xn[r * n + i] = 0.0f;
        CHECK_ERR(what, rel_err(ref, xn, total), 1e-5);
    } else {
        for (size_t i = 0; i < total; i++)
            if (xn[i] != -7.0f)
                fail_msg("%s: xn[%zu] written without has_norm", what, i);
    }
    int first = bad_out < 0 ? bad_sum : bad_sum < 0 ? bad_out : bad_out < bad_sum ? bad_out : bad_sum;
    int want_index = prior_index < index || first < 0 ? prior_index : index;
    int want_code = prior_index < index || first < 0 ? INT32_MAX : 2 * first + (first == bad_sum);
    if (fault[at] != want_index || fault[at + 1] != want_code)
        fail_msg("%s: fault record (%d, %d), want (%d, %d)", what, fault[at], fault[at + 1],
                 want_index, want_code);
    for (int i = 0; i < 8; i++)
        if (i != at && i != at + 1 && fault[i] != INT32_MAX)
            fail_msg("%s: fault[%d] written", what, i);
    clReleaseMemObject(dx);
    clReleaseMemObject(dy);
    clReleaseMemObject(dw);
    clReleaseMemObject(dxn);
    clReleaseMemObject(df);
    clReleaseKernel(k);
    clReleaseProgram(prog);
    free(x); free(y); free(w); free(x2); free(xn); free(ref);
}

static void test_residual_add_norm(void **state)
{
    (void)state;
    seed_case("residual_add_norm");
    add_norm_case(1000, 5, 256, 1, -1, -1, INT32_MAX);
    add_norm_case(300 + (int)urand(1, 100), 3, 64, 0, -1, -1, INT32_MAX);
    add_norm_case(33, 4, 64, 1, 2, -1, INT32_MAX);       /* a NaN in the block's output */
    add_norm_case(200, 4, 64, 1, 3, 1, INT32_MAX);       /* an overflowing sum comes first */
    add_norm_case(200, 4, 64, 1, 1, -1, 4);              /* an earlier add's record stays */
}

/* ---- RoPE --------------------------------------------------------------------------------- */

static void rope_case(int d, double theta, int pos, float scale)
{
    char defs[64];
    snprintf(defs, sizeof defs, "-DHEAD_DIM=%d", d);
    cl_program prog = build("rope.cl", defs);
    cl_kernel k = kernel(prog, "rope");
    const int n_vec = 5;
    size_t total = (size_t)n_vec * d;
    float *x = xcalloc(total, 4), *y = xcalloc(total, 4), *inv_freq = xcalloc(d / 2, 4);
    double *ref = xcalloc(total, 8);
    fill(x, total, -1, 1);
    for (int i = 0; i < d / 2; i++)
        inv_freq[i] = (float)pow(theta, -2.0 * i / d);
    cl_mem dx = buffer(total * 4, x), dy = buffer(total * 4, NULL), df = buffer(d / 2 * 4, inv_freq);
    ARG(k, 0, cl_mem, dx);
    ARG(k, 1, cl_mem, dy);
    ARG(k, 2, cl_int, n_vec);
    ARG(k, 3, cl_int, pos);
    ARG(k, 4, cl_int, 0x7fffffff);
    ARG(k, 5, cl_mem, df);
    ARG(k, 6, cl_float, scale);
    size_t g[3] = {round_up(d / 2, 16), (size_t)n_vec, 1}, l[3] = {16, 1, 1};
    launch(k, 3, g, l);
    download(dy, y, total * 4);
    /* reference: pos * inv_freq is exact in long double (31 + 24 bits) */
    for (int v = 0; v < n_vec; v++)
        for (int i = 0; i < d / 2; i++) {
            long double a = (long double)pos * (long double)inv_freq[i];
            double c = (double)cosl(a), s = (double)sinl(a);
            double x0 = x[v * d + 2 * i], x1 = x[v * d + 2 * i + 1];
            ref[v * d + 2 * i] = scale * (x0 * c - x1 * s);
            ref[v * d + 2 * i + 1] = scale * (x0 * s + x1 * c);
        }
    char what[96];
    snprintf(what, sizeof what, "rope d=%d theta=%g pos=%d scale=%g", d, theta, pos, scale);
    CHECK_ERR(what, rel_err(ref, y, total), 1e-5);
    clReleaseMemObject(dx);
    clReleaseMemObject(dy);
    clReleaseMemObject(df);
    clReleaseKernel(k);
    clReleaseProgram(prog);
    free(x); free(y); free(inv_freq); free(ref);
}

static void test_rope(void **state)
{
    (void)state;
    seed_case("rope");
    const int pos[] = {0, 1, 37, 4097, 65536 + 3, 123456789, (int)urand(0, 2147483647.0),
                       1 << 30, 2147483647};
    for (size_t p = 0; p < sizeof pos / sizeof pos[0]; p++) {
        rope_case(64, 10000.0, pos[p], 1.0f);
        rope_case(128, 500000.0, pos[p], (float)(1.0 / sqrt(128.0)));
    }
}

/* ---- kv_append ---------------------------------------------------------------------------- */

static void kv_append_case(int type, int d, int n_kv_heads, int n_sink, int n_ring, int wg, int n_tok)
{
    const int slot = 1;
    layout L = make_layout(type, d, n_kv_heads, 2, n_sink, n_ring, n_ring);
    uint8_t *ref = xcalloc(L.total, 1), *got = xcalloc(L.total, 1), *map = xcalloc(L.total, 1);
    for (size_t i = 0; i < L.total; i++)
        ref[i] = (uint8_t)splitmix(&g_rng);                /* garbage that must survive */
    char defs[96];
    snprintf(defs, sizeof defs, "-DKV_TYPE=%d -DHEAD_DIM=%d -DAPPEND_WG=%d", type, d, wg);
    cl_program prog = build("kv_append.cl", defs);
    cl_kernel k = kernel(prog, "kv_append");
    cl_mem dcache = buffer(L.total, ref);
    size_t kn = (size_t)2 * n_kv_heads * d, vn = (size_t)n_kv_heads * 2 * d;
    float *kk = xcalloc(kn, 4), *vv = xcalloc(vn, 4);
    double *dq = xcalloc(4 * (size_t)d, 8);
    cl_mem dk = buffer(kn * 4, NULL), dv = buffer(vn * 4, NULL);
    for (long long t = 0; t < n_tok; t++) {
        fill(kk, kn, -3, 3);
        fill(vv, vn, -3, 3);
        if (t == 5)
            for (int i = 0; i < d; i++)
                kk[i] = 0.0f;                              /* an all-zero row: q8 scale 1 */
        for (int j = 0; j < n_kv_heads; j++)
            store_token(&L, ref, map, slot, j, t, kk + (size_t)2 * j * d,
                        kk + (size_t)(2 * j + 1) * d, vv + (size_t)j * 2 * d, dq);
        upload(dk, kk, kn * 4);
        upload(dv, vv, vn * 4);
        ARG(k, 0, cl_mem, dcache);
        ARG(k, 1, cl_ulong, (cl_ulong)slot * n_kv_heads * L.head_bytes);
        ARG(k, 2, cl_int, L.n_pages);
        ARG(k, 3, cl_int, n_sink);
        ARG(k, 4, cl_int, n_ring);
        ARG(k, 5, cl_long, t);
        ARG(k, 6, cl_mem, dk);
        ARG(k, 7, cl_mem, dv);
        ARG(k, 8, cl_int, 0);     /* j0: every head in one launch */
        ARG(k, 9, cl_int, n_kv_heads);
        size_t g[3] = {3 * (size_t)wg, (size_t)n_kv_heads, 1}, l[3] = {(size_t)wg, 1, 1};
        launch(k, 3, g, l);
    }
    download(dcache, got, L.total);

    size_t bad = 0, off_by_one = 0, n_q8 = 0;
    for (size_t i = 0; i < L.total; i++) {
        if (map[i] == MAP_Q8) {
            int a = (int8_t)got[i], b = (int8_t)ref[i];
            n_q8++;
            if (a != b)
                off_by_one++;
            if (abs(a - b) > 1)
                bad++;
        } else if (map[i] == MAP_SCALE) {
            float a, b;
            memcpy(&a, got + i, 4);
            memcpy(&b, ref + i, 4);
            if (!(fabsf(a - b) <= 1e-6f * fabsf(b)))
                bad++;
            i += 3;
        } else if (got[i] != ref[i]) {
            if (bad < 5)
                printf("  byte %zu: got 0x%02x, want 0x%02x\n", i, got[i], ref[i]);
            bad++;
        }
    }
    printf("  kv_append type=%d d=%d Hkv=%d sink=%d ring=%d APPEND_WG=%d tokens=%d: %zu bad bytes, "
           "%zu of %zu q8 elements one step off\n",
           type, d, n_kv_heads, n_sink, n_ring, wg, n_tok, bad, off_by_one, n_q8);
    if (bad || off_by_one * 100 > n_q8 + 100)
        fail_msg("kv_append type %d: %zu bytes differ from the layout of src/kv.h (seed %llu)",
                 type, bad, (unsigned long long)g_seed);
    clReleaseMemObject(dcache);
    clReleaseMemObject(dk);
    clReleaseMemObject(dv);
    clReleaseKernel(k);
    clReleaseProgram(prog);
    free(ref); free(got); free(map); free(kk); free(vv); free(dq);
}

static void test_kv_append(void **state)
{
    (void)state;
    seed_case("kv_append");
    for (int type = 0; type < 3; type++) {
        kv_append_case(type, 64, 2, 3, 37, 32, 90);        /* sinks + a ring that wraps twice */
        kv_append_case(type, 128, 3, 0, 70, 64, 75);       /* full policy, d = 128 */
    }
}

/* ---- diff-attention decode: split + combine ----------------------------------------------- */

typedef struct dcase {
    const char *name;
    int d, n_kv_heads, group, n_sink, n_window, n_ring, wg, cwg, n_split;
    long long t;
    int heads;   /* query heads a work-group; 0: the largest divisor of group up to 4 */
} dcase;

static void decode_case(const dcase *c, int type, int acc_in_local)
{
    const int d = c->d, hkv = c->n_kv_heads, r = c->group, H = hkv * r, slot = 1;
    const long long t = c->t;
    layout L = make_layout(type, d, hkv, 2, c->n_sink, c->n_window, c->n_ring);
    uint8_t *cache = xcalloc(L.total, 1), *map = xcalloc(L.total, 1);
    memset(cache, 0xff, L.total);                          /* NaN / -1 in every unwritten slot */

    /* tokens 0..t: exact values and what the cache holds, per stream index */
    size_t per = (size_t)hkv * 4 * d;
    double *ex = xcalloc((size_t)(t + 1) * per, 8), *dq = xcalloc((size_t)(t + 1) * per, 8);
    float *row = xcalloc(4 * (size_t)d, 4);
    for (long long u = 0; u <= t; u++)
        for (int j = 0; j < hkv; j++) {
            fill(row, 4 * (size_t)d, -1, 1);
            size_t o = (size_t)u * per + (size_t)j * 4 * d;
            for (int i = 0; i < 4 * d; i++)
                ex[o + i] = row[i];
            store_token(&L, cache, map, slot, j, u, row, row + d, row + 2 * d, dq + o);
        }

    size_t qn = (size_t)2 * H * d;
    float *q = xcalloc(qn, 4), *q_sink = xcalloc(qn, 4), *subln = xcalloc(2 * (size_t)d, 4);
    fill(q, qn, -3 / sqrt(d), 3 / sqrt(d));
    fill(q_sink, qn, -3 / sqrt(d), 3 / sqrt(d));
    fill(subln, 2 * (size_t)d, 0.5, 1.5);
    const float lambda = (float)urand(0.2, 0.7), out_scale = (float)urand(0.2, 0.6);

    /* the visible keys, from the definition; the splits own whole pages of the slots in use */
    int n_vis = 0;
    for (long long u = 0; u <= t; u++)
        n_vis += u < c->n_sink || u > t - c->n_window;
    const long long n_used = t + 1 < c->n_sink + c->n_ring ? t + 1 : c->n_sink + c->n_ring;
    const int pages_used = (int)((n_used + 31) / 32);
    const int split_pages = (pages_used + c->n_split - 1) / c->n_split;
    const int heads = c->heads ? c->heads : r <= 4 ? r : r % 4 == 0 ? 4 : r % 3 == 0 ? 3 : r % 2 == 0 ? 2 : 1;

    /* float64 reference, from the exact values and from the stored ones */
    size_t on = (size_t)H * 2 * d;
    double *ref_ex = xcalloc(on, 8), *ref_dq = xcalloc(on, 8);
    double *sc = xcalloc((size_t)2 * (t + 1), 8), *o = xcalloc(2 * (size_t)d, 8);
    for (int pass = 0; pass < 2; pass++) {
        const double *kv = pass ? dq : ex;
        double *ref = pass ? ref_dq : ref_ex;
        for (int h = 0; h < H; h++) {
            int j = h / r;
            double mx[2] = {-INFINITY, -INFINITY}, sum[2] = {0, 0};
            for (long long u = 0; u <= t; u++) {
                if (!(u < c->n_sink || u > t - c->n_window))
                    continue;
                const float *qq = u < c->n_sink ? q_sink : q;
                for (int h2 = 0; h2 < 2; h2++) {
                    const double *k = kv + (size_t)u * per + (size_t)j * 4 * d + (size_t)h2 * d;
                    double s = 0;
                    for (int e = 0; e < d; e++)
                        s += (double)qq[(size_t)(2 * h + h2) * d + e] * k[e];
                    sc[2 * u + h2] = s;
                    mx[h2] = fmax(mx[h2], s);
                }
            }
            for (long long u = 0; u <= t; u++)
                if (u < c->n_sink || u > t - c->n_window)
                    for (int h2 = 0; h2 < 2; h2++)
                        sum[h2] += exp(sc[2 * u + h2] - mx[h2]);
            memset(o, 0, 2 * (size_t)d * 8);
            for (long long u = 0; u <= t; u++) {
                if (!(u < c->n_sink || u > t - c->n_window))
                    continue;
                double a = exp(sc[2 * u] - mx[0]) / sum[0] - lambda * exp(sc[2 * u + 1] - mx[1]) / sum[1];
                const double *v = kv + (size_t)u * per + (size_t)j * 4 * d + 2 * (size_t)d;
                for (int e = 0; e < 2 * d; e++)
                    o[e] += a * v[e];
            }
            double ss = 0;
            for (int e = 0; e < 2 * d; e++)
                ss += o[e] * o[e];
            double inv = 1.0 / sqrt(ss / (2 * d) + 1e-5);
            for (int e = 0; e < 2 * d; e++)
                ref[(size_t)h * 2 * d + e] = o[e] * inv * subln[e] * out_scale;
        }
    }

    char defs[160];
    snprintf(defs, sizeof defs, "-DKV_TYPE=%d -DHEAD_DIM=%d -DGROUP=%d -DHEADS=%d -DWG_DECODE=%d "
             "-DCOMBINE_WG_SIZE=%d -DACC_IN_LOCAL=%d", type, d, r, heads, c->wg, c->cwg, acc_in_local);
    cl_program prog = build("diffattn_decode.cl", defs);
    cl_kernel ks = kernel(prog, "diffattn_decode_split"), kc = kernel(prog, "diffattn_decode_combine");
    const int n_launch = c->n_split + (c->n_sink > 0);   /* + the sinks' split */
    size_t part = (size_t)H * n_launch * 2 * (4 + (2 * (size_t)d + 3) / 4 * 4);   /* PART_FLOATS */
    cl_mem dcache = buffer(L.total, cache), dq_ = buffer(qn * 4, q), dqs = buffer(qn * 4, q_sink);
    cl_mem dpart = buffer(part * 4, NULL), dsub = buffer(2 * (size_t)d * 4, subln);
    cl_mem dout = buffer(on * 4, NULL);

    ARG(ks, 0, cl_mem, dcache);
    ARG(ks, 1, cl_ulong, (cl_ulong)slot * hkv * L.head_bytes);
    ARG(ks, 2, cl_int, L.n_pages);
    ARG(ks, 3, cl_int, c->n_sink);
    ARG(ks, 4, cl_int, c->n_window);
    ARG(ks, 5, cl_int, c->n_ring);
    ARG(ks, 6, cl_long, t);
    ARG(ks, 7, cl_int, split_pages);
    ARG(ks, 8, cl_mem, dq_);
    ARG(ks, 9, cl_mem, dqs);
    ARG(ks, 10, cl_mem, dpart);
    ARG(ks, 11, cl_int, 0);       /* j0: every head in one launch */
    size_t g[2] = {(size_t)n_launch * c->wg, (size_t)hkv * (r / heads)}, l[2] = {(size_t)c->wg, 1};
    launch(ks, 2, g, l);

    ARG(kc, 0, cl_mem, dpart);
    ARG(kc, 1, cl_int, n_launch);
    ARG(kc, 2, cl_float, lambda);
    ARG(kc, 3, cl_float, out_scale);
    ARG(kc, 4, cl_mem, dsub);
    ARG(kc, 5, cl_mem, dout);
    size_t gc = (size_t)H * c->cwg, lc = (size_t)c->cwg;
    launch(kc, 1, &gc, &lc);
    float *out = xcalloc(on, 4);
    download(dout, out, on * 4);

    static const char *const tname[] = {"f32", "f16", "q8"};
    static const double tol[] = {1e-4, 2e-3, 2e-2};
    char what[160];
    snprintf(what, sizeof what, "decode %s %s vs stored values (n_vis %d, %d pages a split, %d heads "
             "a work-group, sums in %s)", c->name, tname[type], n_vis, split_pages, heads,
             acc_in_local ? "local memory" : "registers");
    CHECK_ERR(what, rel_err(ref_dq, out, on), 1e-4);
    snprintf(what, sizeof what, "decode %s %s vs exact values", c->name, tname[type]);
    CHECK_ERR(what, rel_err(ref_ex, out, on), tol[type]);

    clReleaseMemObject(dcache);
    clReleaseMemObject(dq_);
    clReleaseMemObject(dqs);
    clReleaseMemObject(dpart);
    clReleaseMemObject(dsub);
    clReleaseMemObject(dout);
    clReleaseKernel(ks);
    clReleaseKernel(kc);
    clReleaseProgram(prog);
    free(cache); free(map); free(ex); free(dq); free(row); free(q); free(q_sink); free(subln);
    free(ref_ex); free(ref_dq); free(sc); free(o); free(out);
}

static const dcase decode_cases[] = {
    /* name                  d  Hkv r sink win  ring  wg cwg split  t  heads */
    {"full r=1 d=64",       64, 2, 1, 0, 160, 160, 64, 64, 3, 100, 0},
    {"sink+window wrapped", 64, 2, 2, 4, 45, 48, 32, 32, 4, 300, 0},
    {"sink+window t<sinks", 64, 1, 2, 4, 20, 23, 64, 64, 4, 2, 0},
    {"full r=3 d=128",     128, 2, 3, 0, 1024, 1024, 64, 128, 5, 700, 0},
    {"full one split",      32, 3, 1, 0, 64, 64, 128, 16, 1, 63, 0},
    {"sink+window r=6 wg=256", 128, 2, 6, 4, 300, 310, 256, 256, 3, 1000, 0},
    {"full r=8 d=64 many splits", 64, 1, 8, 0, 2048, 2048, 128, 128, 40, 1500, 0},
    {"sink+window r=4 1 head a group", 32, 2, 4, 3, 100, 131, 16, 32, 2, 500, 1},
    {"full r=3 partial tile",  128, 1, 3, 0, 4096, 4096, 256, 256, 2, 1234, 0},
    {"full r=2 d=8",            8, 3, 2, 0, 50, 50, 64, 64, 3, 40, 0},
    {"sink+window r=2 d=6",     6, 1, 2, 2, 30, 33, 16, 64, 2, 70, 0},
    {"full r=1 d=5",            5, 2, 1, 0, 40, 40, 32, 64, 2, 39, 0},
};

static void test_decode(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof decode_cases / sizeof decode_cases[0]; i++)
        for (int type = 0; type < 3; type++)
            for (int acc = 1; acc >= 0; acc--) {   /* registers: every other case */
                if (!acc && (i + (size_t)type) % 2)
                    continue;
                char name[96];
                snprintf(name, sizeof name, "decode %s %d %d", decode_cases[i].name, type, acc);
                seed_case(name);
                decode_case(&decode_cases[i], type, acc);
            }
}

/* ---- main: pick the first device, or skip ------------------------------------------------- */

int main(void)
{
    int open_rc = harness_open();
    if (open_rc != 0)
        return open_rc;
    init_seed();

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_residual_add_norm),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_kv_append),
        cmocka_unit_test(test_decode),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    harness_close();
    return rc;
}
