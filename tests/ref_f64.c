// Float64 reference of one Differential-attention layer, DESIGN §1 step by step (projections, RoPE,
// GQA pairing j = h / r, two causal softmaxes, lambda, sub-layer RMSNorm, out_proj), and of the
// StreamingLLM sink+window policy of DESIGN §4, rebuilt per token. Independent of src/: written from
// DESIGN alone, plain loops, no caching, clarity over speed.
#include "ref_f64.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define REF_RMS_EPS 1e-5

void ref_linear(const double *x, int n, int in, const double *w, int out, double *y)
{
    for (int t = 0; t < n; t++)
        for (int o = 0; o < out; o++) {
            double acc = 0.0;
            for (int i = 0; i < in; i++) acc += x[(size_t)t * in + i] * w[(size_t)o * in + i];
            y[(size_t)t * out + o] = acc;
        }
}

void ref_rope(double *v, int n_vec, int dim, double pos, double theta)
{
    for (int i = 0; i < dim / 2; i++) {
        double ang = pos * pow(theta, -2.0 * i / dim);
        double c = cos(ang), s = sin(ang);
        for (int k = 0; k < n_vec; k++) {
            double *p = v + (size_t)k * dim + 2 * i;
            double a = p[0], b = p[1];
            p[0] = a * c - b * s;
            p[1] = a * s + b * c;
        }
    }
}

void ref_rmsnorm(const double *x, int n, const double *w, double eps, double scale, double *y)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) y[i] = x[i] * inv * (w ? w[i] : 1.0) * scale;
}

static int head_dim(const ref_shape *s)
{
    return s->head_dim ? s->head_dim : s->model_dim / s->n_heads / 2;
}

static int shape_ok(const ref_shape *s)
{
    if (!s || s->model_dim <= 0 || s->n_heads <= 0 || s->n_kv_heads <= 0 || s->head_dim < 0)
        return 0;
    if (s->n_heads % s->n_kv_heads != 0) return 0;
    if (!s->head_dim && s->model_dim % (2 * s->n_heads) != 0) return 0;
    int d = head_dim(s);
    return d > 0 && d % 2 == 0 && s->layer_index >= 0 && s->rope_theta > 0.0;
}

static int weights_ok(const ref_weights *w)
{
    return w && w->q_proj && w->k_proj && w->v_proj && w->out_proj && w->lambda_q1 &&
           w->lambda_k1 && w->lambda_q2 && w->lambda_k2 && w->subln;
}

static double lambda_init(int l) { return 0.8 - 0.6 * exp(-0.3 * l); }

double ref_lambda(const ref_shape *s, const ref_weights *w)
{
    if (!shape_ok(s) || !weights_ok(w)) return NAN;
    int d = head_dim(s);
    double d1 = 0.0, d2 = 0.0;
    for (int i = 0; i < d; i++) {
        d1 += w->lambda_q1[i] * w->lambda_k1[i];
        d2 += w->lambda_q2[i] * w->lambda_k2[i];
    }
    return exp(d1) - exp(d2) + lambda_init(s->layer_index);
}

// In-place softmax over a [n].
static void softmax(double *a, int n)
{
    double m = a[0], sum = 0.0;
    for (int i = 1; i < n; i++) m = a[i] > m ? a[i] : m;
    for (int i = 0; i < n; i++) sum += (a[i] = exp(a[i] - m));
    for (int i = 0; i < n; i++) a[i] /= sum;
}

// One diff head for one query against m keys (DESIGN §1 steps 4-6, already rotated):
// q1, q2 [d]; k [m][2*Hkv*d] (row stride kstride, this head's k1 at +2jd, k2 at +(2j+1)d);
// v [m][Hkv*2d] (stride vstride, V at +j*2d). o [2d] gets RMSNorm(O_h) * subln * (1 - lambda_init).
static void diff_head(const double *q1, const double *q2, const double *k, int kstride,
                      const double *v, int vstride, int m, int j, int d, double lam, double li,
                      const double *subln, double *a1, double *a2, double *o)
{
    double sc = 1.0 / sqrt((double)d);
    for (int u = 0; u < m; u++) {
        const double *k1 = k + (size_t)u * kstride + (size_t)(2 * j) * d;
        const double *k2 = k1 + d;
        double s1 = 0.0, s2 = 0.0;
        for (int i = 0; i < d; i++) {
            s1 += q1[i] * k1[i];
            s2 += q2[i] * k2[i];
        }
        a1[u] = s1 * sc;
        a2[u] = s2 * sc;
    }
    softmax(a1, m);
    softmax(a2, m);
    for (int e = 0; e < 2 * d; e++) o[e] = 0.0;
    for (int u = 0; u < m; u++) {
        double wgt = a1[u] - lam * a2[u];
        const double *vu = v + (size_t)u * vstride + (size_t)j * 2 * d;
        for (int e = 0; e < 2 * d; e++) o[e] += wgt * vu[e];
    }
    ref_rmsnorm(o, 2 * d, subln, REF_RMS_EPS, 1.0 - li, o);
}

int ref_layer(const ref_shape *s, const ref_weights *w, const double *x, int T, double *y)
{
    if (!shape_ok(s) || !weights_ok(w) || T < 0 || (T > 0 && (!x || !y))) return -1;
    if (T == 0) return 0;
    const int E = s->model_dim, H = s->n_heads, Hkv = s->n_kv_heads, r = H / Hkv;
    const int d = head_dim(s), A = 2 * H * d, Ekv = A / r;   // Ekv = 2*Hkv*d
    double *q = malloc(sizeof(double) * (size_t)T * A);       // [T][2H][d]
    double *k = malloc(sizeof(double) * (size_t)T * Ekv);     // [T][2Hkv][d]
    double *v = malloc(sizeof(double) * (size_t)T * Ekv);     // [T][Hkv][2d]
    double *o = malloc(sizeof(double) * (size_t)T * A);       // [T][H][2d]
    double *a1 = malloc(sizeof(double) * (size_t)T);          // [T] scores / probabilities
    double *a2 = malloc(sizeof(double) * (size_t)T);
    int rc = -1;
    if (!q || !k || !v || !o || !a1 || !a2) goto done;

    ref_linear(x, T, E, w->q_proj, A, q);
    ref_linear(x, T, E, w->k_proj, Ekv, k);
    ref_linear(x, T, E, w->v_proj, Ekv, v);
    for (int t = 0; t < T; t++) {                  // token t sits at position t
        ref_rope(q + (size_t)t * A, 2 * H, d, t, s->rope_theta);
        ref_rope(k + (size_t)t * Ekv, 2 * Hkv, d, t, s->rope_theta);
    }
    const double lam = ref_lambda(s, w), li = lambda_init(s->layer_index);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const double *q1 = q + (size_t)t * A + (size_t)(2 * h) * d;
            diff_head(q1, q1 + d, k, Ekv, v, Ekv, t + 1, h / r, d, lam, li, w->subln, a1, a2,
                      o + (size_t)t * A + (size_t)h * 2 * d);
        }
    ref_linear(o, T, A, w->out_proj, E, y);
    rc = 0;
done:
    free(q); free(k); free(v); free(o); free(a1); free(a2);
    return rc;
}

int ref_layer_sink_window(const ref_shape *s, const ref_weights *w, const double *x, int T,
                          int n_sink, int window, double *y)
{
    if (!shape_ok(s) || !weights_ok(w) || T < 0 || n_sink < 0 || window < 1) return -1;
    if (T > 0 && (!x || !y)) return -1;
    if (T == 0) return 0;
    const int E = s->model_dim, H = s->n_heads, Hkv = s->n_kv_heads, r = H / Hkv;
    const int d = head_dim(s), A = 2 * H * d, Ekv = A / r;
    const int cap = (n_sink < T ? n_sink : T) + (window < T ? window : T);  // most keys ever visible
    int *idx = malloc(sizeof(int) * (size_t)cap);               // [m] token index of cache slot c
    double *xs = malloc(sizeof(double) * (size_t)cap * E);      // [m][E] the visible tokens' inputs
    double *q = malloc(sizeof(double) * (size_t)A);             // [2H][d] query of token t
    double *k = malloc(sizeof(double) * (size_t)cap * Ekv);     // [m][2Hkv][d]
    double *v = malloc(sizeof(double) * (size_t)cap * Ekv);     // [m][Hkv][2d]
    double *o = malloc(sizeof(double) * (size_t)A);             // [H][2d]
    double *a1 = malloc(sizeof(double) * (size_t)cap);
    double *a2 = malloc(sizeof(double) * (size_t)cap);
    int rc = -1;
    if (!idx || !xs || !q || !k || !v || !o || !a1 || !a2) goto done;

    const double lam = ref_lambda(s, w), li = lambda_init(s->layer_index);
    for (int t = 0; t < T; t++) {
        // Rebuild the cache for token t from scratch: sinks, then the window (ends with t itself).
        int m = 0;
        for (int u = 0; u < n_sink && u <= t; u++) idx[m++] = u;
        int w0 = t - window + 1 > n_sink ? t - window + 1 : n_sink;
        for (int u = w0; u <= t; u++) idx[m++] = u;
        for (int c = 0; c < m; c++) memcpy(xs + (size_t)c * E, x + (size_t)idx[c] * E, sizeof(double) * E);

        ref_linear(xs + (size_t)(m - 1) * E, 1, E, w->q_proj, A, q);
        ref_linear(xs, m, E, w->k_proj, Ekv, k);
        ref_linear(xs, m, E, w->v_proj, Ekv, v);
        for (int c = 0; c < m; c++)                 // cache slot c sits at position c
            ref_rope(k + (size_t)c * Ekv, 2 * Hkv, d, c, s->rope_theta);
        ref_rope(q, 2 * H, d, m - 1, s->rope_theta);

        for (int h = 0; h < H; h++) {
            const double *q1 = q + (size_t)(2 * h) * d;
            diff_head(q1, q1 + d, k, Ekv, v, Ekv, m, h / r, d, lam, li, w->subln, a1, a2,
                      o + (size_t)h * 2 * d);
        }
        ref_linear(o, 1, A, w->out_proj, E, y + (size_t)t * E);
    }
    rc = 0;
done:
    free(idx); free(xs); free(q); free(k); free(v); free(o); free(a1); free(a2);
    return rc;
}
