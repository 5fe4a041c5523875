// Standalone cross-check of the C float64 reference (tests/ref_f64.c) against the PyTorch one
// (tests/gen_layer_cases.py --dump-raw FILE): DESIGN §1 layer and DESIGN §4 sink+window on the same
// f64 inputs, plus sink+window with window >= T against the full layer. Prints max errors; exit 1
// if any relative error exceeds 1e-12.
//   /usr/bin/python3 tests/gen_layer_cases.py --dump-raw /tmp/ref.raw
//   gcc -std=c11 -O2 tests/ref_f64_check.c tests/ref_f64.c -lm -o /tmp/ref_check && /tmp/ref_check /tmp/ref.raw
#include "ref_f64.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-12

static int read_u64(FILE *f, uint64_t *v)
{
    unsigned char b[8];
    if (fread(b, 1, 8, f) != 8) return -1;
    *v = 0;
    for (int i = 7; i >= 0; i--) *v = (*v << 8) | b[i];
    return 0;
}

// n little-endian f64 into a fresh array (NULL on short read).
static double *read_f64s(FILE *f, size_t n)
{
    double *a = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; a && i < n; i++) {
        uint64_t u;
        if (read_u64(f, &u)) { free(a); return NULL; }
        memcpy(&a[i], &u, sizeof u);
    }
    return a;
}

// ||a - b|| / ||b|| and max |a - b| over n.
static double rel_err(const double *a, const double *b, size_t n, double *max_abs)
{
    double num = 0.0, den = 0.0, mx = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = a[i] - b[i];
        num += e * e;
        den += b[i] * b[i];
        if (fabs(e) > mx) mx = fabs(e);
    }
    *max_abs = mx;
    return sqrt(num) / (den > 0 ? sqrt(den) : 1.0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE   (FILE from gen_layer_cases.py --dump-raw FILE)\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    char magic[8];
    uint64_t n_cases;
    if (!f || fread(magic, 1, 8, f) != 8 || memcmp(magic, "DATTNRAW", 8) || read_u64(f, &n_cases)) {
        fprintf(stderr, "%s: not a DATTNRAW file\n", argv[1]);
        return 2;
    }
    int fails = 0;
    double worst = 0.0;
    for (uint64_t c = 0; c < n_cases; c++) {
        int64_t h[7];   // E, H, Hkv, depth, T, n_sink, window
        uint64_t u;
        for (int i = 0; i < 7; i++) {
            if (read_u64(f, &u)) { fprintf(stderr, "short file\n"); return 2; }
            h[i] = (int64_t)u;
        }
        if (read_u64(f, &u)) { fprintf(stderr, "short file\n"); return 2; }
        double theta;
        memcpy(&theta, &u, sizeof theta);
        ref_shape s = { (int)h[0], (int)h[1], (int)h[2], (int)h[3], theta, 0 };
        const int E = s.model_dim, r = s.n_heads / s.n_kv_heads, d = E / s.n_heads / 2;
        const int T = (int)h[4], n_sink = (int)h[5], window = (int)h[6];
        const size_t sizes[12] = { (size_t)E * E, (size_t)E / r * E, (size_t)E / r * E, (size_t)E * E,
                                   d, d, d, d, 2 * (size_t)d, (size_t)T * E, (size_t)T * E, (size_t)T * E };
        double *a[12];  // q k v o lq1 lk1 lq2 lk2 subln x y_full y_sink
        for (int i = 0; i < 12; i++)
            if (!(a[i] = read_f64s(f, sizes[i]))) { fprintf(stderr, "short file\n"); return 2; }
        ref_weights w = { a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8] };
        double *y = malloc(sizeof(double) * (size_t)T * E);    // [T][E]
        double *y2 = malloc(sizeof(double) * (size_t)T * E);   // [T][E]
        double ma1, ma2, ma3;
        int rc1 = ref_layer(&s, &w, a[9], T, y);
        double e1 = rel_err(y, a[10], (size_t)T * E, &ma1);
        int rc2 = ref_layer_sink_window(&s, &w, a[9], T, n_sink, window, y2);
        double e2 = rel_err(y2, a[11], (size_t)T * E, &ma2);
        int rc3 = ref_layer_sink_window(&s, &w, a[9], T, n_sink, T, y2);
        double e3 = rel_err(y2, y, (size_t)T * E, &ma3);
        // the truncated window must actually differ from full attention (else the test is void)
        double sep = rel_err(a[11], a[10], (size_t)T * E, &(double){0});
        printf("case %d: E=%d H=%d Hkv=%d d=%d T=%d l=%d theta=%g sink=%d window=%d\n", (int)c, E,
               s.n_heads, s.n_kv_heads, d, T, s.layer_index, theta, n_sink, window);
        printf("  C vs torch, full layer:         rel %.2e  max abs %.2e\n", e1, ma1);
        printf("  C vs torch, sink+window:        rel %.2e  max abs %.2e  (differs from full by %.2e)\n",
               e2, ma2, sep);
        printf("  C sink+window(W=T) vs C full:   rel %.2e  max abs %.2e\n", e3, ma3);
        if (rc1 || rc2 || rc3 || !(e1 < TOL) || !(e2 < TOL) || !(e3 < TOL) || !(sep > 1e-3)) fails++;
        worst = fmax(worst, fmax(e1, fmax(e2, e3)));
        for (int i = 0; i < 12; i++) free(a[i]);
        free(y); free(y2);
    }
    fclose(f);

    // Bad shapes are refused.
    double one = 1.0;
    ref_weights wz = { &one, &one, &one, &one, &one, &one, &one, &one, &one };
    ref_shape bad[3] = { { 24, 4, 3, 0, 1e4, 0 }, { 12, 2, 1, 0, 1e4, 0 }, { 16, 2, 2, 0, 0.0, 0 } };
    for (int i = 0; i < 3; i++)
        if (ref_layer(&bad[i], &wz, &one, 1, &one) != -1) { printf("bad shape %d accepted\n", i); fails++; }

    printf("ref_f64_check: %d cases, worst rel %.2e: %s\n", (int)n_cases, worst, fails ? "FAIL" : "PASS");
    return fails ? 1 : 0;
}
