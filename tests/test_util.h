/* Shared helpers of the layer, cache and allocation suites (DESIGN §8): a seeded RNG whose seed
 * is printed (DATTN_TEST_SEED=<n> replays it), the relative-norm error ||a - b|| / ||b||, and random
 * layer weights stored in F32, F16 or BF16 together with float64 copies of the stored (rounded)
 * values for tests/ref_f64.h. Header-only; written against include/dattn.h, sharing nothing with
 * src/ (the 16-bit conversions below are written from the IEEE / bfloat16 definitions). */
#ifndef DATTN_TESTS_TEST_UTIL_H
#define DATTN_TESTS_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dattn.h"
#include "ref_f64.h"

/* ---- seeded RNG --------------------------------------------------------------------------- */

static uint64_t tu_seed;          /* the suite's seed, printed at start and on every failure */
static uint64_t tu_case_seed;     /* the current case's seed (derived from tu_seed and its name) */
static uint64_t tu_rng_state;

static inline uint64_t tu_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The suite seed: DATTN_TEST_SEED if set, else from the clock. Printed. */
static inline void tu_init_seed(const char *suite)
{
    const char *env = getenv("DATTN_TEST_SEED");
    if (env && *env) {
        tu_seed = strtoull(env, NULL, 0);
    } else {
        struct timespec ts;
        timespec_get(&ts, TIME_UTC);
        uint64_t s = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
        tu_seed = tu_splitmix(&s) & 0xffffffffull;
    }
    printf("%s: seed %llu (DATTN_TEST_SEED=%llu replays it)\n", suite, (unsigned long long)tu_seed,
           (unsigned long long)tu_seed);
    fflush(stdout);
}

/* Every case starts its own stream from (suite seed, case name), so one case replays alone. */
static inline void tu_seed_case(const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    tu_case_seed = tu_seed ^ h;
    tu_rng_state = tu_case_seed;
}

static inline uint64_t tu_next(void) { return tu_splitmix(&tu_rng_state); }
/* Uniform in [0, 1). */
static inline double tu_unif(void) { return (double)(tu_next() >> 11) * (1.0 / 9007199254740992.0); }
/* Uniform integer in [lo, hi]. */
static inline int tu_int(int lo, int hi) { return lo + (int)(tu_next() % (uint64_t)(hi - lo + 1)); }
/* Standard normal (Box-Muller). */
static inline double tu_gauss(void)
{
    double u1 = tu_unif(), u2 = tu_unif();
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ---- errors -------------------------------------------------------------------------------- */

/* ||a - b|| / ||b||, a from dattn (f32), b the reference (f64). */
static inline double tu_rel_err(const float *a, const double *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)a[i] - b[i];
        num += e * e;
        den += b[i] * b[i];
    }
    if (num != num)
        return INFINITY;
    return sqrt(num) / (den > 0.0 ? sqrt(den) : 1.0);
}

/* ||a - b|| / ||b|| of two f32 arrays. */
static inline double tu_rel_err_ff(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)a[i] - (double)b[i];
        num += e * e;
        den += (double)b[i] * b[i];
    }
    if (num != num)
        return INFINITY;
    return sqrt(num) / (den > 0.0 ? sqrt(den) : 1.0);
}

/* Fails the current cmocka test with the seeds when err is not below tol. `what` names the case. */
#define TU_CHECK_ERR(err, tol, ...)                                                               \
    do {                                                                                          \
        double tu_e_ = (err), tu_t_ = (tol);                                                      \
        if (!(tu_e_ <= tu_t_)) {                                                                  \
            char tu_m_[512];                                                                      \
            snprintf(tu_m_, sizeof tu_m_, __VA_ARGS__);                                           \
            fail_msg("%s: rel err %.3e > tol %.1e (suite seed %llu, case seed %llu)", tu_m_,     \
                     tu_e_, tu_t_, (unsigned long long)tu_seed,                                   \
                     (unsigned long long)tu_case_seed);                                           \
        }                                                                                         \
    } while (0)

/* Fails with the status, dattn_last_error() and the seeds when st != want. */
#define TU_CHECK_ST(st, want, ...)                                                                \
    do {                                                                                          \
        dattn_status tu_s_ = (st), tu_w_ = (want);                                                \
        if (tu_s_ != tu_w_) {                                                                     \
            char tu_m_[512];                                                                      \
            snprintf(tu_m_, sizeof tu_m_, __VA_ARGS__);                                           \
            fail_msg("%s: got %s, want %s (last error: '%s'; suite seed %llu, case seed %llu)",  \
                     tu_m_, dattn_status_name(tu_s_), dattn_status_name(tu_w_),                   \
                     dattn_last_error(), (unsigned long long)tu_seed,                             \
                     (unsigned long long)tu_case_seed);                                           \
        }                                                                                         \
    } while (0)

#define TU_OK(st, ...) TU_CHECK_ST((st), DATTN_OK, __VA_ARGS__)

/* ---- 16-bit floats (independent of src/half.h) ------------------------------------------- */

static inline double tu_f16_to_double(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e ? ldexp(1024.0 + m, e - 25) : ldexp((double)m, -24);
    return (h & 0x8000) ? -v : v;
}

/* Nearest f16 (ties to even) of a finite |x| < 65504. */
static inline uint16_t tu_double_to_f16(double x)
{
    uint16_t sign = x < 0 ? 0x8000 : 0;
    double a = fabs(x);
    if (a < ldexp(1.0, -14)) {                       /* subnormal: units of 2^-24 */
        double u = nearbyint(a * 16777216.0);        /* default rounding: ties to even */
        return (uint16_t)(sign | (uint16_t)u);
    }
    int e;
    frexp(a, &e);                                    /* a in [2^(e-1), 2^e) */
    double q = ldexp(a, 11 - e);                     /* mantissa with 11 significant bits */
    double r = nearbyint(q);
    if (r >= 2048.0) {
        r /= 2.0;
        e++;
    }
    int be = e - 1 + 15;                             /* biased exponent */
    return (uint16_t)(sign | (uint16_t)(be << 10) | ((uint16_t)r & 1023));
}

static inline double tu_bf16_to_double(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Nearest bf16 (ties to even) of a finite float. */
static inline uint16_t tu_float_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t low = u & 0xffff, hi = u >> 16;
    if (low > 0x8000 || (low == 0x8000 && (hi & 1)))
        hi++;
    return (uint16_t)hi;
}

/* ---- random layers --------------------------------------------------------------------------- */

enum { TU_N_WEIGHTS = 9 };   /* q k v o lq1 lk1 lq2 lk2 subln */

typedef struct tu_layer {
    dattn_layer_shape shape;
    ref_shape rs;
    dattn_dtype dtype;
    int E, H, Hkv, d, kv_dim;
    int A;                           /* attention width 2 H d (E unless the shape sets head_dim) */
    void *stored[TU_N_WEIGHTS];      /* as given to dattn, in dtype */
    double *ref[TU_N_WEIGHTS];       /* the stored values, exactly, in f64 */
    dattn_layer_weights w;
    ref_weights rw;
} tu_layer;

static inline size_t tu_weight_elems(const tu_layer *t, int i)
{
    switch (i) {
    case 0: case 3: return (size_t)t->A * t->E;
    case 1: case 2: return (size_t)t->kv_dim * t->E;
    case 8: return 2 * (size_t)t->d;
    default: return (size_t)t->d;
    }
}

/* Random weights for a shape of model dim E and attention width A = 2*H*d (E = 0: E = A, and the
 * shape leaves head_dim 0; else head_dim is set). Projections are uniform in +-qk_gain/sqrt(E)
 * (q, k; a gain above 1 sharpens the attention maps so position or pairing mistakes show) and
 * +-1/sqrt(E) (v, o); lambdas N(0, 0.1^2) (one could draw exactly zero: never, Gaussian); subln
 * 1 + N(0, 0.1^2). Returns 0, or -1 when out of memory. */
static inline int tu_layer_init_e(tu_layer *t, int E, int H, int Hkv, int d, int layer_index,
                                  float theta, dattn_dtype dtype, double qk_gain)
{
    memset(t, 0, sizeof *t);
    t->H = H;
    t->Hkv = Hkv;
    t->d = d;
    t->A = 2 * H * d;
    t->E = E ? E : t->A;
    t->kv_dim = t->A / (H / Hkv);
    t->dtype = dtype;
    t->shape = dattn_layer_default_shape();
    t->shape.model_dim = t->E;
    t->shape.n_heads = H;
    t->shape.n_kv_heads = Hkv;
    t->shape.layer_index = layer_index;
    t->shape.rope_theta = theta;
    t->shape.head_dim = E ? d : 0;
    t->rs = (ref_shape){t->E, H, Hkv, layer_index, (double)theta, E ? d : 0};
    double bound = 1.0 / sqrt((double)t->E);
    for (int i = 0; i < TU_N_WEIGHTS; i++) {
        size_t n = tu_weight_elems(t, i);
        size_t eb = dtype == DATTN_DTYPE_F32 ? 4 : 2;
        t->stored[i] = malloc(n * eb);
        t->ref[i] = malloc(n * sizeof(double));
        if (!t->stored[i] || !t->ref[i])
            return -1;
        for (size_t k = 0; k < n; k++) {
            double v;
            if (i < 4)
                v = (2.0 * tu_unif() - 1.0) * bound * (i < 2 ? qk_gain : 1.0);
            else if (i < 8)
                v = 0.1 * tu_gauss();
            else
                v = 1.0 + 0.1 * tu_gauss();
            float f = (float)v;
            if (dtype == DATTN_DTYPE_F32) {
                ((float *)t->stored[i])[k] = f;
                t->ref[i][k] = f;
            } else if (dtype == DATTN_DTYPE_F16) {
                uint16_t h = tu_double_to_f16(v);
                ((uint16_t *)t->stored[i])[k] = h;
                t->ref[i][k] = tu_f16_to_double(h);
            } else {
                uint16_t b = tu_float_to_bf16(f);
                ((uint16_t *)t->stored[i])[k] = b;
                t->ref[i][k] = tu_bf16_to_double(b);
            }
        }
    }
    t->w = (dattn_layer_weights){dtype, t->stored[0], t->stored[1], t->stored[2], t->stored[3],
                                 t->stored[4], t->stored[5], t->stored[6], t->stored[7], t->stored[8]};
    t->rw = (ref_weights){t->ref[0], t->ref[1], t->ref[2], t->ref[3], t->ref[4],
                          t->ref[5], t->ref[6], t->ref[7], t->ref[8]};
    return 0;
}

/* The usual shape: E = 2*H*d, head_dim left 0. */
static inline int tu_layer_init(tu_layer *t, int H, int Hkv, int d, int layer_index, float theta,
                                dattn_dtype dtype, double qk_gain)
{
    return tu_layer_init_e(t, 0, H, Hkv, d, layer_index, theta, dtype, qk_gain);
}

static inline void tu_layer_free(tu_layer *t)
{
    for (int i = 0; i < TU_N_WEIGHTS; i++) {
        free(t->stored[i]);
        free(t->ref[i]);
    }
    memset(t, 0, sizeof *t);
}

/* n random inputs N(0, 1) as f32 (never zero), and their f64 copy when xd is not NULL. */
static inline void tu_rand_x(float *x, double *xd, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = (float)tu_gauss();
        if (v == 0.0f)
            v = 0.5f;
        x[i] = v;
        if (xd)
            xd[i] = v;
    }
}

static inline const char *tu_dtype_name(dattn_dtype t)
{
    return t == DATTN_DTYPE_F32 ? "F32" : t == DATTN_DTYPE_F16 ? "F16" : "BF16";
}

static inline const char *tu_kv_name(dattn_kv_type t)
{
    return t == DATTN_KV_F32 ? "f32" : t == DATTN_KV_F16 ? "f16" : "q8";
}

/* The DESIGN §8 tolerance of a KV element type. */
static inline double tu_kv_tol(dattn_kv_type t)
{
    return t == DATTN_KV_F32 ? 1e-4 : t == DATTN_KV_F16 ? 2e-3 : 2e-2;
}

/* The backend under test: the CPU (n_threads, isa), or the OpenCL device when the environment
 * says DATTN_TEST_BACKEND=opencl and no ISA is forced (meson runs the suites both ways). */
static inline int tu_on_opencl(void)
{
    const char *b = getenv("DATTN_TEST_BACKEND");
    return b && !strcmp(b, "opencl");
}

static inline dattn_status tu_backend(int n_threads, const char *isa, dattn_backend **out)
{
    dattn_backend_params p = dattn_backend_default_params();
    if (tu_on_opencl() && !isa) {
        /* No device at all (a build machine without an ICD, a cross build under qemu): the suite
         * has nothing to run, which meson counts as a skip (77), not a failure. */
        int n_devices = 0;
        if (dattn_devices(NULL, 0, &n_devices) == DATTN_OK && n_devices == 0) {
            printf("no OpenCL device: the OpenCL suite is skipped\n");
            exit(77);
        }
        p.type = DATTN_BACKEND_OPENCL;
        return dattn_backend_create(&p, out);
    }
    p.type = DATTN_BACKEND_CPU;
    p.n_threads = n_threads;
    p.cpu_isa = isa;
    return dattn_backend_create(&p, out);
}

/* Cache params with the library's defaults, then these fields. */
static inline dattn_cache_params tu_cache_params(int n_ctx, int max_batch, dattn_kv_type kv,
                                                 dattn_kv_policy policy, int n_sink)
{
    dattn_cache_params p = dattn_cache_default_params();
    p.n_layers = 1;
    p.n_ctx = n_ctx;
    p.max_batch = max_batch;
    p.kv_type = kv;
    p.policy = policy;
    p.n_sink = n_sink;
    return p;
}

#endif
